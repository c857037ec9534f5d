#include "ops.h"
#include "vec.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Rows up to which ops_linear streams the weight with its own loop. */
#define OPS_STREAM_ROWS_MAX 8

OPS_VECTOR_CLONES
static void ops_linear_stream_loop(float *restrict out, int ldo, const float *restrict inp,
                                   const float *restrict weight, const float *restrict bias, int N,
                                   int IC, int OC);

void ops_linear(float *out, int ldo, const float *inp, const float *weight, const float *bias,
                int N, int IC, int OC) {
    /* A few rows: our own loop streams the weight once; sgemm would first pack
     * all of it into its panels, which made it 1.0-3.8x slower at 2..8 rows at
     * every layer and vocabulary shape, on OpenBLAS's AVX2 and AVX-512
     * kernels alike (from 12 rows on sgemm is faster). */
    if (N >= 2 && N <= OPS_STREAM_ROWS_MAX) {
        ops_linear_stream_loop(out, ldo, inp, weight, bias, N, IC, OC);
        return;
    }
    if (bias) {
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * ldo, bias, (size_t)OC * sizeof(float));
    }
    /* One row (a single [MASK]'s vocabulary logits, the pooler of one sequence):
     * sgemv streams the weight once, and while the weight is in cache beats
     * our loop. */
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, IC, 1.0f, weight, IC, inp, 1,
                    bias ? 1.0f : 0.0f, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC,
                    bias ? 1.0f : 0.0f, out, ldo);
}

/* Sum of x (n) and of (x - mean)^2, in double: the parity budget is 1e-4 on
 * logits after a dozen layers, and one-pass variance in float loses digits
 * for large means. Eight double lanes side by side (vec.h), then the tail. */
static inline double ops_sum_f64(const float *x, int n) {
    vec_d8 acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        vec_f8 v;
        VEC_LOAD(v, x + i);
        acc += __builtin_convertvector(v, vec_d8);
    }
    double s = 0.0;
    for (int j = 0; j < 8; j++)
        s += acc[j];
    for (; i < n; i++)
        s += x[i];
    return s;
}

static inline double ops_sq_dev_f64(const float *x, int n, double mean) {
    vec_d8 acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        vec_f8 v;
        VEC_LOAD(v, x + i);
        vec_d8 d = __builtin_convertvector(v, vec_d8) - mean;
        acc += d * d;
    }
    double s = 0.0;
    for (int j = 0; j < 8; j++)
        s += acc[j];
    for (; i < n; i++) {
        double d = x[i] - mean;
        s += d * d;
    }
    return s;
}

OPS_VECTOR_CLONES
static void ops_layernorm_loop(float *restrict x, const float *restrict residual,
                               const float *restrict weight, const float *restrict bias, int N,
                               int C, float eps) {
    for (int n = 0; n < N; n++) {
        float *row = x + (size_t)n * C;
        if (residual) {
            const float *r = residual + (size_t)n * C;
            for (int c = 0; c < C; c++)
                row[c] += r[c];
        }
        const double mean = ops_sum_f64(row, C) / C;
        const double var = ops_sq_dev_f64(row, C, mean) / C;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        for (int c = 0; c < C; c++)
            row[c] = (row[c] - m) * rstd * weight[c] + bias[c];
    }
}

/* bfloat16: the top 16 bits of a float32 (8 exponent bits, 7 stored mantissa
 * bits). Widening is a shift; narrowing rounds to nearest, ties to even. */
void ops_to_bf16(const float *x, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof(b));
        if ((b & 0x7f800000u) == 0x7f800000u) /* inf and NaN keep their class */
            out[i] = (uint16_t)(b >> 16 | ((b & 0xffffu) ? 0x40u : 0u));
        else
            out[i] = (uint16_t)((b + 0x7fffu + (b >> 16 & 1u)) >> 16);
    }
}

void ops_from_bf16(const uint16_t *x, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint32_t b = (uint32_t)x[i] << 16;
        memcpy(&out[i], &b, sizeof(b));
    }
}

/* Sum of a vec_f16's lanes as a tree: halves added as vectors, so a dot
 * product's final reduction is three vector adds, not sixteen scalar ones. */
#define VEC_SUM16(v, out)                                                                          \
    do {                                                                                           \
        typedef float vec_f4_ __attribute__((vector_size(16)));                                    \
        vec_f8 lo8_, hi8_;                                                                         \
        memcpy(&lo8_, &(v), sizeof(lo8_));                                                         \
        memcpy(&hi8_, (const char *)&(v) + sizeof(lo8_), sizeof(hi8_));                            \
        vec_f8 s8_ = lo8_ + hi8_;                                                                  \
        vec_f4_ lo4_, hi4_;                                                                        \
        memcpy(&lo4_, &s8_, sizeof(lo4_));                                                         \
        memcpy(&hi4_, (const char *)&s8_ + sizeof(lo4_), sizeof(hi4_));                            \
        vec_f4_ s4_ = lo4_ + hi4_;                                                                 \
        (out) = (s4_[0] + s4_[2]) + (s4_[1] + s4_[3]);                                             \
    } while (0)

/* One 16-lane slice of a bf16 weight row widened to float. */
#define BF16_WIDEN16(wv, src)                                                                      \
    do {                                                                                           \
        uint16_t __attribute__((vector_size(32))) h_;                                              \
        VEC_LOAD(h_, (src));                                                                       \
        (wv) = (vec_f16)(__builtin_convertvector(h_, vec_i16) << 16);                              \
    } while (0)

/* One 16-lane slice of a weight row as float: bf16 widened, or float32 as is. */
#define WEIGHT_LOAD16(wv, w, k, bf16)                                                              \
    do {                                                                                           \
        if (bf16)                                                                                  \
            BF16_WIDEN16(wv, (const uint16_t *)(w) + (k));                                         \
        else                                                                                       \
            VEC_LOAD(wv, (const float *)(w) + (k));                                                \
    } while (0)

static inline float weight_at(const void *w, int k, int bf16) {
    if (!bf16) return ((const float *)w)[k];
    float wf;
    ops_from_bf16((const uint16_t *)w + k, &wf, 1);
    return wf;
}

/* out[o] of one input row from its lanes' tree sum: the tail, the bias. */
static inline float rows_finish(float sum, const float *x, const void *w, int K16, int IC,
                                const float *bias, int o, int bf16) {
    for (int k = K16; k < IC; k++)
        sum += x[k] * weight_at(w, k, bf16);
    return sum + (bias ? bias[o] : 0.0f);
}

/* One output: input row x (IC) . weight row o, plus the bias. */
static inline __attribute__((always_inline)) float rows_dot(const float *restrict x,
                                                            const void *restrict weight, int o,
                                                            size_t wrow, int K16, int IC,
                                                            const float *restrict bias, int bf16) {
    const void *w = (const char *)weight + (size_t)o * wrow;
    vec_f16 a = {0}, wv, xv;
    float sum;
    for (int k = 0; k < K16; k += 16) {
        WEIGHT_LOAD16(wv, w, k, bf16);
        VEC_LOAD(xv, x + k);
        a += xv * wv;
    }
    VEC_SUM16(a, sum);
    return rows_finish(sum, x, w, K16, IC, bias, o, bf16);
}

/* out (N,ldo) = inp (N,IC) . weight (OC,IC)^T + bias, streaming the weight
 * once, row by row, with no packing: for products with few input rows, where
 * a GEMM would spend longer copying the weight into its panels than
 * multiplying (the vocabulary decoder of a few [MASK]s: 94 MB of bert-base's
 * float32 weight, or 47 MB as the int8 path's bf16). Input rows go four at a
 * time (each weight slice multiplied into four accumulators that stay in
 * registers, also on AVX2 where a vec_f16 is two), the rest one at a time.
 * Every output is summed in the same order (16 lanes along k, the tree sum,
 * the tail) either way, so a row's result does not depend on the rest of the
 * batch. bf16 is a constant at each call: the compiler makes one loop each. */
static inline __attribute__((always_inline)) void
rows_stream(float *restrict out, int ldo, const float *restrict inp, const void *restrict weight,
            const float *restrict bias, int N, int IC, int OC, int bf16) {
    const int K16 = IC / 16 * 16;
    const size_t S = (size_t)IC;
    const size_t wrow = (size_t)IC * (bf16 ? sizeof(uint16_t) : sizeof(float));
    for (int o = 0; o < OC; o++) {
        const void *w = (const char *)weight + (size_t)o * wrow;
        int n = 0;
        for (; n + 4 <= N; n += 4) {
            const float *x = inp + (size_t)n * S;
            vec_f16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, wv, xv;
            float sum;
            for (int k = 0; k < K16; k += 16) {
                WEIGHT_LOAD16(wv, w, k, bf16);
                VEC_LOAD(xv, x + k);
                a0 += xv * wv;
                VEC_LOAD(xv, x + S + k);
                a1 += xv * wv;
                VEC_LOAD(xv, x + 2 * S + k);
                a2 += xv * wv;
                VEC_LOAD(xv, x + 3 * S + k);
                a3 += xv * wv;
            }
            VEC_SUM16(a0, sum);
            out[(size_t)n * ldo + o] = rows_finish(sum, x, w, K16, IC, bias, o, bf16);
            VEC_SUM16(a1, sum);
            out[(size_t)(n + 1) * ldo + o] = rows_finish(sum, x + S, w, K16, IC, bias, o, bf16);
            VEC_SUM16(a2, sum);
            out[(size_t)(n + 2) * ldo + o] = rows_finish(sum, x + 2 * S, w, K16, IC, bias, o, bf16);
            VEC_SUM16(a3, sum);
            out[(size_t)(n + 3) * ldo + o] = rows_finish(sum, x + 3 * S, w, K16, IC, bias, o, bf16);
        }
        for (; n < N; n++)
            out[(size_t)n * ldo + o] =
                rows_dot(inp + (size_t)n * S, weight, o, wrow, K16, IC, bias, bf16);
    }
}

OPS_VECTOR_CLONES
static void ops_linear_bf16_loop(float *restrict out, int ldo, const float *restrict inp,
                                 const uint16_t *restrict weight, const float *restrict bias, int N,
                                 int IC, int OC) {
    rows_stream(out, ldo, inp, weight, bias, N, IC, OC, 1);
}

OPS_VECTOR_CLONES
static void ops_linear_stream_loop(float *restrict out, int ldo, const float *restrict inp,
                                   const float *restrict weight, const float *restrict bias, int N,
                                   int IC, int OC) {
    rows_stream(out, ldo, inp, weight, bias, N, IC, OC, 0);
}

void ops_linear_bf16(float *out, int ldo, const float *inp, const uint16_t *weight,
                     const float *bias, int N, int IC, int OC) {
    ops_linear_bf16_loop(out, ldo, inp, weight, bias, N, IC, OC);
}

void ops_layernorm(float *x, const float *residual, const float *weight, const float *bias, int N,
                   int C, float eps) {
    ops_layernorm_loop(x, residual, weight, bias, N, C, eps);
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

/* row (n) -> softmax(row) in place. The max and the sum run in 16 lanes
 * (vec.h); the exponentials are a plain loop the compiler vectorises. */
OPS_VECTOR_CLONES
static void ops_softmax_loop(float *row, int n) {
    float max = row[0];
    int i = 0;
    if (n >= 16) {
        vec_f16 m, v;
        VEC_LOAD(m, row);
        for (i = 16; i + 16 <= n; i += 16) {
            VEC_LOAD(v, row + i);
            m = VEC_MAX(v, m);
        }
        for (int j = 0; j < 16; j++)
            max = m[j] > max ? m[j] : max;
    }
    for (; i < n; i++)
        max = row[i] > max ? row[i] : max;
    for (i = 0; i < n; i++)
        row[i] = ops_expf(row[i] - max);
    vec_f16 acc = {0}, v;
    for (i = 0; i + 16 <= n; i += 16) {
        VEC_LOAD(v, row + i);
        acc += v;
    }
    float sum = 0.0f;
    for (int j = 0; j < 16; j++)
        sum += acc[j];
    for (; i < n; i++)
        sum += row[i];
    float inv = 1.0f / sum;
    for (i = 0; i < n; i++)
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
