#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

void ops_linear(float *out, int ldo, const float *inp, const float *weight, const float *bias,
                int N, int IC, int OC) {
    if (bias) {
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * ldo, bias, (size_t)OC * sizeof(float));
    }
    /* One row (a single [MASK]'s vocabulary logits, the pooler of one sequence):
     * sgemv streams the weight once; sgemm would first pack all of it. */
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, IC, 1.0f, weight, IC, inp, 1,
                    bias ? 1.0f : 0.0f, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC,
                    bias ? 1.0f : 0.0f, out, ldo);
}

void ops_layernorm(float *x, const float *residual, const float *weight, const float *bias, int N,
                   int C, float eps) {
    for (int n = 0; n < N; n++) {
        float *row = x + (size_t)n * C;
        if (residual) {
            const float *r = residual + (size_t)n * C;
            for (int c = 0; c < C; c++)
                row[c] += r[c];
        }
        /* Two passes in double: the parity budget is 1e-4 on logits after a dozen
         * layers, and one-pass variance in float loses digits for large means. */
        double mean = 0.0;
        for (int c = 0; c < C; c++)
            mean += row[c];
        mean /= C;
        double var = 0.0;
        for (int c = 0; c < C; c++) {
            double d = row[c] - mean;
            var += d * d;
        }
        var /= C;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        for (int c = 0; c < C; c++)
            row[c] = (row[c] - m) * rstd * weight[c] + bias[c];
    }
}

/* Elementwise loops below are written so the compiler vectorises them (no
 * libm calls, no branches): erff/expf/tanhf from libm are scalar calls and cost
 * more than the GEMMs around them at short sequence lengths. Each loop is
 * cloned for AVX-512 and AVX2 and picked at load time, so one binary runs on
 * any x86-64. Accuracy: |error| <= 5e-7 absolute against double precision,
 * the same as glibc's erff-based GELU in float. */

/* exp(a): a = n*ln2 + r with |r| <= ln2/2 (ln2 split in two for precision),
 * e^r by its Taylor polynomial to degree 6, 2^n put into the exponent bits. */
static inline float ops_expf(float a) {
    a = a < -87.0f ? -87.0f : a;
    a = a > 88.0f ? 88.0f : a;
    float n = __builtin_roundf(a * 1.44269504088896341f);
    n = n == n ? n : 0.0f; /* NaN in, NaN out (through r), without UB in the int cast */
    float r = a - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p =
        1.0f +
        r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r / 720.0f)))));
    int32_t bits = (int32_t)(n + 127.0f) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

/* erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7). */
static inline float ops_erff(float x) {
    float z = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * z);
    float poly =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float e = 1.0f - poly * ops_expf(-z * z);
    return x < 0.0f ? -e : e;
}

static inline float ops_tanhf(float x) {
    float e = ops_expf(-2.0f * fabsf(x));
    float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}

OPS_VECTOR_CLONES
static void ops_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + ops_erff(x[i] * (float)M_SQRT1_2));
}

OPS_VECTOR_CLONES
static void ops_gelu_tanh(float *x, size_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + ops_tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

/* x * sigmoid(alpha * x): SiLU with alpha 1, "quick GELU" with alpha 1.702 */
OPS_VECTOR_CLONES
static void ops_x_sigmoid(float *x, size_t n, float alpha) {
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + ops_expf(-alpha * x[i]));
}

void ops_activation(float *x, size_t n, bert_activation act) {
    switch (act) {
    case BERT_ACT_GELU:
        ops_gelu(x, n);
        break;
    case BERT_ACT_GELU_TANH:
        ops_gelu_tanh(x, n);
        break;
    case BERT_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case BERT_ACT_SILU:
        ops_x_sigmoid(x, n, 1.0f);
        break;
    case BERT_ACT_QUICK_GELU:
        ops_x_sigmoid(x, n, 1.702f);
        break;
    }
}

/* Clones stay static: clang 14 emits no callable symbol for a cloned function
 * referenced from another object file. */
OPS_VECTOR_CLONES
static void ops_tanh_loop(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = ops_tanhf(x[i]);
}

void ops_tanh(float *x, size_t n) {
    ops_tanh_loop(x, n);
}

/* row (n) -> softmax(row) in place */
OPS_VECTOR_CLONES
static void ops_softmax_loop(float *row, int n) {
    float max = row[0];
    for (int i = 1; i < n; i++)
        max = row[i] > max ? row[i] : max;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        row[i] = ops_expf(row[i] - max);
        sum += row[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        row[i] *= inv;
}

void ops_softmax(float *row, int n) {
    ops_softmax_loop(row, n);
}

void ops_attention_head(float *ctx, const float *q, const float *k, const float *v, float *scores,
                        int L, int D, int ld) {
    const float scale = 1.0f / sqrtf((float)D);
    // scores (L,L) = scale * q_h (L,D) @ k_h (L,D)^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, scale, q, ld, k, ld, 0.0f, scores,
                L);
    for (int i = 0; i < L; i++)
        ops_softmax_loop(scores + (size_t)i * L, L);
    // ctx_h (L,D) = scores (L,L) @ v_h (L,D)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, D, L, 1.0f, scores, L, v, ld, 0.0f,
                ctx, ld);
}
