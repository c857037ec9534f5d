#include "ops.h"

#include <cblas.h>
#include <math.h>

void ops_linear(float *out, const float *inp, const float *weight, const float *bias, int N, int IC,
                int OC) {
    if (bias) {
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] = bias[o];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC,
                bias ? 1.0f : 0.0f, out, OC);
}

void ops_layernorm(float *x, const float *residual, const float *weight, const float *bias, int N,
                   int C, float eps) {
    for (int n = 0; n < N; n++) {
        float *row = x + (size_t)n * C;
        if (residual) {
            const float *r = residual + (size_t)n * C;
            for (int c = 0; c < C; c++) row[c] += r[c];
        }
        /* Two passes in double: the parity budget is 1e-4 on logits after a dozen
         * layers, and one-pass variance in float loses digits for large means. */
        double mean = 0.0;
        for (int c = 0; c < C; c++) mean += row[c];
        mean /= C;
        double var = 0.0;
        for (int c = 0; c < C; c++) {
            double d = row[c] - mean;
            var += d * d;
        }
        var /= C;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        for (int c = 0; c < C; c++) row[c] = (row[c] - m) * rstd * weight[c] + bias[c];
    }
}

void ops_activation(float *x, size_t n, bert_activation act) {
    switch (act) {
    case BERT_ACT_GELU:
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        break;
    case BERT_ACT_GELU_TANH: {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
        }
        break;
    }
    case BERT_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case BERT_ACT_SILU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
        break;
    case BERT_ACT_QUICK_GELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
        break;
    }
}

void ops_tanh(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
}

/* row (n) -> softmax(row) in place */
static void ops_softmax_row(float *row, int n) {
    float max = row[0];
    for (int i = 1; i < n; i++) max = row[i] > max ? row[i] : max;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        row[i] = expf(row[i] - max);
        sum += row[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) row[i] *= inv;
}

void ops_attention(float *ctx, const float *q, const float *k, const float *v, float *scores,
                   int L, int H, int D, int ld) {
    const float scale = 1.0f / sqrtf((float)D);
    for (int h = 0; h < H; h++) {
        const size_t off = (size_t)h * D;
        // scores (L,L) = scale * q_h (L,D) @ k_h (L,D)^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, scale, q + off, ld, k + off,
                    ld, 0.0f, scores, L);
        for (int i = 0; i < L; i++) ops_softmax_row(scores + (size_t)i * L, L);
        // ctx_h (L,D) = scores (L,L) @ v_h (L,D)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, D, L, 1.0f, scores, L, v + off, ld,
                    0.0f, ctx + off, ld);
    }
}
