/* dnnl_linear: the encoder's linear layers on oneDNN, in float32 or int8.
 *
 * Why oneDNN and not OpenBLAS for these products: OpenBLAS packs the weight
 * on every call (at 16 tokens that packing is most of the work) and picks its
 * kernels from a CPU model list that older releases lack. oneDNN's brgemm
 * kernels take the weight reordered once, at load, into the layout they
 * stream, and dispatch on the CPU's features (AVX2, AVX-512, VNNI, AMX) at
 * run time. oneDNN is Intel's library under PyTorch's and ONNX Runtime's CPU
 * paths, packaged in Debian as libdnnl.
 *
 * float32 (DL_F32): the same products, float32 throughout; parity with
 * transformers is the OpenBLAS path's (1e-4). Used only where oneDNN has a
 * brgemm kernel for this CPU (AVX-512); elsewhere the engine says
 * DL_UNSUPPORTED and the forward pass stays on OpenBLAS.
 *
 * int8 (DL_INT8, the opt-in `model.compute: int8`): dynamic quantization in
 * the manner of ONNX Runtime's quantize_dynamic, one step finer on the
 * activations:
 *   - weights: symmetric int8 per output channel, scale = max|w[n,:]| / qmax,
 *     qmax = 127, or 63 on CPUs without VNNI, whose u8 x s8 instructions add
 *     pairs of products in int16 and could saturate (ORT's reduce_range);
 *   - activations: asymmetric uint8 per row (token), from that row's own
 *     min/max at run time, so a request's answer never depends on what else
 *     shares its batch.
 * With acc[m,n] = sum_k xq[m,k] * wq[n,k], exact in int32:
 *   out[m,n] = xs[m] * ws[n] * (acc[m,n] - zp[m] * colsum_n(wq)) + bias[n].
 * (computed as xs[m] * ws[n] * acc[m,n] + (bias[n] - xs[m] * zp[m] * ws[n] * colsum_n)).
 *
 * The work of one product is tiles of dl_engine_row_tile() rows (or, for
 * float32 products with many rows, of dl_weight_tall_tile() rows, then the
 * rest in short tiles) x one column part (at most DL_PART_COLS columns) of
 * the weight. Every row's result is the same whatever tile it falls in. Tiles are independent and
 * fixed by the shapes alone, so the forward pass hands them to its threads,
 * each thread calls oneDNN single-threaded through its own dl_ctx, and results
 * do not depend on the thread count or on the other rows of a batch.
 *
 * Owns: the engine owns the oneDNN engine and one primitive per distinct
 * (K, part width); a dl_weight owns its reordered parts, scales, sums and bias;
 * a dl_ctx owns one thread's stream, scratchpad and tile buffers. Engine and
 * weights are read-only once built and shared by every thread. */
#ifndef BERT_DNNL_LINEAR_H
#define BERT_DNNL_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#define DL_PART_COLS 384

typedef enum { DL_F32 = 0, DL_INT8 = 1 } dl_mode;

enum { DL_OK = 0, DL_ERROR = 1, DL_UNSUPPORTED = 2 };

typedef struct dl_engine dl_engine;
typedef struct dl_weight dl_weight;
typedef struct dl_ctx dl_ctx;

/* Starts oneDNN on the CPU for products in mode. DL_UNSUPPORTED (DL_F32 only):
 * this CPU has no brgemm kernel for them, use OpenBLAS. */
int dl_engine_new(dl_mode mode, dl_engine **out, char *err, size_t errlen);
/* Frees the primitives; every dl_weight and dl_ctx of e must be gone. */
void dl_engine_free(dl_engine *e);
dl_mode dl_engine_mode(const dl_engine *e);
/* oneDNN's name for the kernel in use, e.g. "brg:avx512_core_amx_int8". */
const char *dl_engine_kernel(const dl_engine *e);
/* Rows per tile; quantized inputs hold a whole number of tiles. */
int dl_engine_row_tile(const dl_engine *e);
/* int8 weights' qmax: 127, or 63 without VNNI. */
int dl_engine_qmax(const dl_engine *e);
/* A number no other engine of this process has had: a dl_ctx belongs to one
 * engine, and a new engine may reuse a freed one's address. */
uint64_t dl_engine_id(const dl_engine *e);

/* w (OC, IC) as PyTorch's nn.Linear stores it, bias (OC) or NULL -> a copy in
 * the kernel's layout (w is not kept). DL_OK, else a message in err. */
int dl_weight_new(dl_engine *e, const float *w, const float *bias, int OC, int IC, dl_weight **out,
                  char *err, size_t errlen);
void dl_weight_free(dl_weight *w);
size_t dl_weight_bytes(const dl_weight *w); /* reordered parts + scales, sums, bias */
int dl_weight_parts(const dl_weight *w);
/* Rows per tall tile w can run, or 0 (no tall tiles for w). */
int dl_weight_tall_tile(const dl_weight *w);
/* Columns [*o0, *o1) of the output that part p writes. */
void dl_weight_part_cols(const dl_weight *w, int p, int *o0, int *o1);

/* One thread's oneDNN state, for e once all its weights exist. NULL when
 * memory runs out. */
dl_ctx *dl_ctx_new(const dl_engine *e);
void dl_ctx_free(dl_ctx *c);

// rows [r0, r1) of x (N, K) -> q (N, K) uint8, scale (N), zp (N), same rows
void dl_quantize_rows(const float *x, int K, int r0, int r1, uint8_t *q, float *scale, int32_t *zp);

/* The input of a product: float32 rows (DL_F32) or their quantization
 * (DL_INT8: q holds a whole number of tiles, rows past N any bytes). */
typedef struct dl_input {
    const float *x; /* (N, K) */
    const uint8_t *q;
    const float *scale;
    const int32_t *zp;
} dl_input;

/* One tile: rows [r0, r0 + R) of the input, R the row tile or w's tall tile,
 * times part `part` of w -> out (N, ldo), the part's columns of the rows below
 * N. int8: q holds those R rows. DL_OK, or DL_ERROR if oneDNN failed (not
 * expected once built) or R is neither tile. */
int dl_run_tile(dl_ctx *c, const dl_weight *w, int r0, int R, int part, const dl_input *in, int N,
                float *out, int ldo);

#endif
