/* ops: the numerical kernels of the forward pass, plain functions over
 * row-major float arrays. Shapes are in each comment; (N,C) means N rows of C.
 * Matrix products go to OpenBLAS, except products of a few rows, which stream
 * their weight through a loop of ours; the rest are single passes over memory.
 * No allocation happens here: every buffer belongs to the caller. */
#ifndef BERT_OPS_H
#define BERT_OPS_H

#include "bert.h"

#include <stddef.h>
#include <stdint.h>

/* Elementwise loops are cloned for AVX-512 and AVX2 and the best clone picked at
 * load time, so one binary built for baseline x86-64 still runs them wide.
 * Not under ASan (its interceptors and ifuncs do not mix). */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(OPS_NO_CLONES)
#define OPS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OPS_VECTOR_CLONES
#endif

/* inp (N,IC), weight (OC,IC) as stored by PyTorch's nn.Linear, bias (OC) or NULL
 * -> out (N,OC) with row stride ldo = inp @ weight^T + bias. ldo > OC writes a
 * column slice of a wider output (one thread's share of a split product).
 * OpenBLAS for one row (sgemv) and for many; for 2..8 rows a loop of ours that
 * streams the weight once, where sgemm would spend most of its time packing it
 * (the vocabulary decoder of a few [MASK]s). */
void ops_linear(float *out, int ldo, const float *inp, const float *weight, const float *bias,
                int N, int IC, int OC);

/* x (n) float32 -> out (n) bfloat16 (the float's top 16 bits), rounded to
 * nearest even; NaN stays NaN. */
void ops_to_bf16(const float *x, uint16_t *out, size_t n);
/* x (n) bfloat16 -> out (n) float32, exactly. */
void ops_from_bf16(const uint16_t *x, float *out, size_t n);

/* ops_linear with a bfloat16 weight (OC,IC) widened to float32 on the fly:
 * half the bytes of a float32 weight, for products that only stream their
 * weight once (the int8 path's vocabulary decoder). Sums in float32. */
void ops_linear_bf16(float *out, int ldo, const float *inp, const uint16_t *weight,
                     const float *bias, int N, int IC, int OC);

/* x (N,C) -> x normalised per row, times weight (C) plus bias (C); in place.
 * residual (N,C) or NULL is added to x first (post-LN BERT: LN(x + sublayer)). */
void ops_layernorm(float *x, const float *residual, const float *weight, const float *bias, int N,
                   int C, float eps);

/* x (n) -> act(x) in place, for BERT's hidden_act choices. */
void ops_activation(float *x, size_t n, bert_activation act);

/* x (n) -> tanh(x) in place (the pooler). */
void ops_tanh(float *x, size_t n);

/* row (n) -> softmax(row) in place; max-subtracted, so any finite logits. */
void ops_softmax(float *row, int n);

/* Self-attention of one head of one sequence.
 * q, k, v (L, D) with row stride ld (head h of a (L, C) matrix: pass the
 * pointers offset by h*D), scores scratch (L, L) -> ctx (L, D), stride ld.
 * ctx = softmax(q k^T / sqrt(D)) v. Heads are independent: the forward pass
 * runs them on different threads. */
void ops_attention_head(float *ctx, const float *q, const float *k, const float *v, float *scores,
                        int L, int D, int ld);

#endif
