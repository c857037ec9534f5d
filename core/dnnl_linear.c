/* Linear layers on oneDNN: reordered weight parts, tiles, int8 quantization.
 * See dnnl_linear.h for the arithmetic and the reasons. */
#include "dnnl_linear.h"
#include "ops.h"
#include "vec.h"

#include <oneapi/dnnl/dnnl.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Distinct (K, part width) pairs one engine serves: a BERT model has two
 * values of K (hidden, intermediate) and at most two part widths per output
 * width (full parts and the last one). */
#define DL_MAX_PRIMS 32

typedef struct dl_prim {
    int R, K, W;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, wei_md, dst_md;
} dl_prim;

struct dl_engine {
    uint64_t id;
    dnnl_engine_t eng;
    dl_mode mode;
    dnnl_data_type_t src_dt, wei_dt, dst_dt;
    int row_tile;
    int tall_tile; /* 0, or taller tiles' rows (float32 brgemm): see dl_probe */
    int qmax;
    char kernel[96];
    dl_prim prims[DL_MAX_PRIMS];
    int n_prims;
    size_t scratch_bytes; /* the largest scratchpad of any primitive */
    int max_width, max_k;
    pthread_mutex_t lock; /* prims: dl_weight_new may run on several threads */
};

typedef struct dl_part {
    int o0, o1, prim;
    int prim_tall;     /* the tall tiles' primitive, or -1 */
    dnnl_memory_t wei; /* reordered by oneDNN, owned */
} dl_part;

struct dl_weight {
    int OC, IC, n_parts;
    int tall; /* the tall tile's rows if every part has its primitive, else 0 */
    dl_part *parts;
    float *scale;   /* int8: (OC) */
    float *zp_coef; /* int8: (OC) scale[n] * sum over k of the int8 weights */
    float *bias;    /* (OC), zeros when the layer has none */
    size_t bytes;
};

struct dl_ctx {
    const dl_engine *e;
    dnnl_stream_t stream;
    dnnl_memory_t scratch;
    dnnl_memory_t src[DL_MAX_PRIMS], dst[DL_MAX_PRIMS]; /* created on first use */
    void *acc;  /* (max rows, max_width) int32 or float: a tile's products */
    float *pad; /* f32: (max rows, max_k), the last tile's rows, zero-padded */
};

/* oneDNN runs its parallel regions on OpenMP threads: every thread that calls
 * it here must ask for one, or each of our threads would start a team of its
 * own on top of the forward pass's split. Looked up at run time so that
 * nothing links against one OpenMP runtime by name. */
static void dl_single_threaded(void) {
    static _Thread_local int done;
    if (done) return;
    void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set) set(1);
    done = 1;
}

#define DL_CHECK(call, what)                                                                       \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            snprintf(err, errlen, "oneDNN: %s failed (status %d)", what, (int)st_);                \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* The matmul of one tile, (rows, K) x (K, W), in e's types: the weights in the
 * layout the kernel chooses, and our own scratchpad per thread, so that one
 * primitive may run on several threads at once. */
static dnnl_status_t dl_tile_pd(const dl_engine *e, int rows, int K, int W,
                                dnnl_memory_desc_t *src_md, dnnl_memory_desc_t *dst_md,
                                dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t wany;
    dnnl_dims_t sd = {rows, K}, wd = {K, W}, dd = {rows, W};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t st;
    *pd = NULL;
    if ((st = dnnl_memory_desc_init_by_tag(src_md, 2, sd, e->src_dt, dnnl_ab)) ||
        (st = dnnl_memory_desc_init_by_tag(&wany, 2, wd, e->wei_dt, dnnl_format_tag_any)) ||
        (st = dnnl_memory_desc_init_by_tag(dst_md, 2, dd, e->dst_dt, dnnl_ab)) ||
        (st = dnnl_matmul_desc_init(&md, src_md, &wany, NULL, dst_md)) ||
        (st = dnnl_primitive_attr_create(&attr)) ||
        (st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)))
        goto cleanup;
    st = dnnl_primitive_desc_create(pd, &md, attr, e->eng, NULL);
cleanup:
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Finds or creates the primitive for tiles (R, K) x (K, W). */
static int dl_prim_get(dl_engine *e, int R, int K, int W, char *err, size_t errlen) {
    int found = -1;
    dnnl_primitive_desc_t pd = NULL;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_prims; i++)
        if (e->prims[i].R == R && e->prims[i].K == K && e->prims[i].W == W) found = i;
    if (found >= 0) goto cleanup;
    if (e->n_prims == DL_MAX_PRIMS) {
        snprintf(err, errlen, "more than %d distinct layer shapes", DL_MAX_PRIMS);
        goto cleanup;
    }
    dl_prim *p = &e->prims[e->n_prims];
    DL_CHECK(dl_tile_pd(e, R, K, W, &p->src_md, &p->dst_md, &pd), "matmul");
    p->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    size_t scratch =
        dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (e->n_prims == 0 && impl) snprintf(e->kernel, sizeof(e->kernel), "%s", impl);
    DL_CHECK(dnnl_primitive_create(&p->prim, pd), "matmul primitive");
    p->R = R, p->K = K, p->W = W;
    e->scratch_bytes = scratch > e->scratch_bytes ? scratch : e->scratch_bytes;
    e->max_width = W > e->max_width ? W : e->max_width;
    e->max_k = K > e->max_k ? K : e->max_k;
    found = e->n_prims++;
cleanup:
    pthread_mutex_unlock(&e->lock);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return found;
}

/* The kernel oneDNN picks for a typical tile (16 rows, K 768, one part):
 * brgemm kernels (AMX, VNNI, AVX-512) run fastest on 16-row tiles here
 * (bench/README.md). Without one, int8 falls back to oneDNN's jit gemm, which
 * packs the weights on every call, so its tiles are four times as tall; float32
 * returns DL_UNSUPPORTED (OpenBLAS does as well as that gemm). */
static int dl_probe(dl_engine *e) {
    dnnl_memory_desc_t src_md, dst_md;
    dnnl_primitive_desc_t pd = NULL;
    int brgemm = 0;
    e->row_tile = 64;
    if (dl_tile_pd(e, 16, 768, DL_PART_COLS, &src_md, &dst_md, &pd))
        return e->mode == DL_INT8 ? DL_OK : DL_UNSUPPORTED;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    brgemm = impl && strncmp(impl, "brg", 3) == 0;
    dnnl_primitive_desc_destroy(pd);
    e->row_tile = brgemm ? 16 : 64;
    /* float32 brgemm: 64-row tiles read each weight part a quarter as often,
     * which is what counts once a product has many rows (measured at 128
     * tokens: 140-160 ms against 164-191 ms with 16-row tiles only). int8 on
     * AMX was slower with them (49 against 44 ms), so it keeps 16. */
    e->tall_tile = brgemm && e->mode == DL_F32 ? 64 : 0;
    return brgemm || e->mode == DL_INT8 ? DL_OK : DL_UNSUPPORTED;
}

int dl_engine_new(dl_mode mode, dl_engine **out, char *err, size_t errlen) {
    dl_single_threaded();
    dl_engine *e = calloc(1, sizeof(*e));
    int rc = DL_ERROR;
    *out = NULL;
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return DL_ERROR;
    }
    static atomic_uint_fast64_t next_id = 1;
    pthread_mutex_init(&e->lock, NULL);
    e->id = atomic_fetch_add(&next_id, 1);
    e->mode = mode;
    e->src_dt = mode == DL_INT8 ? dnnl_u8 : dnnl_f32;
    e->wei_dt = mode == DL_INT8 ? dnnl_s8 : dnnl_f32;
    e->dst_dt = mode == DL_INT8 ? dnnl_s32 : dnnl_f32;
    DL_CHECK(dnnl_engine_create(&e->eng, dnnl_cpu, 0), "CPU engine");
    /* We keep every primitive we make; oneDNN's own cache would only hold
     * second references. */
    dnnl_set_primitive_cache_capacity(0);
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const int vnni = (isa & dnnl_cpu_isa_avx512_core_vnni & ~dnnl_cpu_isa_avx512_core) ||
                     (isa & dnnl_cpu_isa_avx2_vnni & ~dnnl_cpu_isa_avx2);
    e->qmax = vnni ? 127 : 63;
    if ((rc = dl_probe(e)) != DL_OK) {
        snprintf(err, errlen, "oneDNN has no brgemm kernel for float32 on this CPU");
        goto cleanup;
    }
    snprintf(e->kernel, sizeof(e->kernel), "unknown");
    *out = e;
    return DL_OK;
cleanup:
    dl_engine_free(e);
    return rc == DL_OK ? DL_ERROR : rc;
}

void dl_engine_free(dl_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_prims; i++)
        dnnl_primitive_destroy(e->prims[i].prim);
    if (e->eng) dnnl_engine_destroy(e->eng);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

uint64_t dl_engine_id(const dl_engine *e) {
    return e->id;
}
dl_mode dl_engine_mode(const dl_engine *e) {
    return e->mode;
}
const char *dl_engine_kernel(const dl_engine *e) {
    return e->kernel;
}
int dl_engine_row_tile(const dl_engine *e) {
    return e->row_tile;
}
int dl_engine_qmax(const dl_engine *e) {
    return e->qmax;
}

// w rows [o0, o1) (W, IC) -> q (W, IC) int8, scale (W), zp_coef (W) = scale * row sum of q
static void dl_quantize_weight_rows(const float *w, int IC, int o0, int o1, int qmax, int8_t *q,
                                    float *scale, float *zp_coef) {
    for (int n = o0; n < o1; n++) {
        const float *row = w + (size_t)n * IC;
        float amax = 0.0f;
        for (int k = 0; k < IC; k++)
            amax = fmaxf(amax, fabsf(row[k]));
        const float s = amax > 0.0f ? amax / (float)qmax : 1.0f;
        int32_t sum = 0;
        int8_t *qrow = q + (size_t)(n - o0) * IC;
        for (int k = 0; k < IC; k++) {
            long v = lrintf(row[k] / s);
            v = v > qmax ? qmax : v < -qmax ? -qmax : v;
            qrow[k] = (int8_t)v;
            sum += (int32_t)v;
        }
        scale[n] = s;
        zp_coef[n] = s * (float)sum; /* |sum| <= 127 * IC: exact in float */
    }
}

/* Part p of w (quantized first for int8) reordered into the primitive's layout. */
static int dl_part_build(dl_engine *e, dl_weight *qw, const float *w, int p, char *err,
                         size_t errlen) {
    dl_part *part = &qw->parts[p];
    const int W = part->o1 - part->o0, IC = qw->IC;
    int rc = DL_ERROR;
    int8_t *q = NULL;
    dnnl_memory_t plain = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_stream_t stream = NULL;
    /* The rows are PyTorch's (N, K) layout: as oneDNN's (K, N) weights that
     * is format "ba"; for float32 the part's rows are used where they are. */
    const void *rows = w + (size_t)part->o0 * IC;
    if (e->mode == DL_INT8) {
        if (!(q = malloc((size_t)W * IC))) {
            snprintf(err, errlen, "out of memory quantizing a (%d, %d) weight", qw->OC, IC);
            goto cleanup;
        }
        dl_quantize_weight_rows(w, IC, part->o0, part->o1, e->qmax, q, qw->scale, qw->zp_coef);
        rows = q;
    }
    if ((part->prim = dl_prim_get(e, e->row_tile, IC, W, err, errlen)) < 0) goto cleanup;
    part->prim_tall = -1;
    if (e->tall_tile && (part->prim_tall = dl_prim_get(e, e->tall_tile, IC, W, err, errlen)) < 0)
        goto cleanup;
    const dl_prim *prim = &e->prims[part->prim];
    /* Tall tiles share the part's weights only if they read the same layout. */
    if (part->prim_tall >= 0 &&
        !dnnl_memory_desc_equal(&prim->wei_md, &e->prims[part->prim_tall].wei_md))
        part->prim_tall = -1;
    dnnl_memory_desc_t plain_md;
    dnnl_dims_t dims = {IC, W};
    DL_CHECK(dnnl_memory_desc_init_by_tag(&plain_md, 2, dims, e->wei_dt, dnnl_ba), "weights desc");
    DL_CHECK(dnnl_memory_create(&plain, &plain_md, e->eng, (void *)rows), "weights memory");
    DL_CHECK(dnnl_memory_create(&part->wei, &prim->wei_md, e->eng, DNNL_MEMORY_ALLOCATE),
             "reordered weights");
    DL_CHECK(
        dnnl_reorder_primitive_desc_create(&rpd, &plain_md, e->eng, &prim->wei_md, e->eng, NULL),
        "weights reorder");
    DL_CHECK(dnnl_primitive_create(&reorder, rpd), "weights reorder primitive");
    DL_CHECK(dnnl_stream_create(&stream, e->eng, dnnl_stream_default_flags), "stream");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, part->wei}};
    DL_CHECK(dnnl_primitive_execute(reorder, stream, 2, args), "weights reorder");
    DL_CHECK(dnnl_stream_wait(stream), "weights reorder");
    qw->bytes += dnnl_memory_desc_get_size(&prim->wei_md);
    rc = DL_OK;
cleanup:
    if (stream) dnnl_stream_destroy(stream);
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (plain) dnnl_memory_destroy(plain);
    free(q);
    return rc;
}

int dl_weight_new(dl_engine *e, const float *w, const float *bias, int OC, int IC, dl_weight **out,
                  char *err, size_t errlen) {
    dl_single_threaded();
    *out = NULL;
    dl_weight *qw = calloc(1, sizeof(*qw));
    const int n_parts = (OC + DL_PART_COLS - 1) / DL_PART_COLS;
    const int int8 = e->mode == DL_INT8;
    if (!qw || !(qw->parts = calloc((size_t)n_parts, sizeof(dl_part))) ||
        (int8 && !(qw->scale = malloc((size_t)OC * sizeof(float)))) ||
        (int8 && !(qw->zp_coef = malloc((size_t)OC * sizeof(float)))) ||
        !(qw->bias = calloc((size_t)OC, sizeof(float)))) {
        snprintf(err, errlen, "out of memory quantizing a (%d, %d) weight", OC, IC);
        dl_weight_free(qw);
        return DL_ERROR;
    }
    qw->OC = OC, qw->IC = IC, qw->n_parts = n_parts;
    if (bias) memcpy(qw->bias, bias, (size_t)OC * sizeof(float));
    /* Equal parts, 16-column aligned, so a 768-wide layer is 2 x 384 and a
     * 1024-wide one 3 x 352 (the last 320). */
    int width = (OC + n_parts - 1) / n_parts;
    width = (width + 15) / 16 * 16;
    for (int p = 0; p < n_parts; p++) {
        qw->parts[p].o0 = p * width;
        qw->parts[p].o1 = (p + 1) * width < OC ? (p + 1) * width : OC;
        if (dl_part_build(e, qw, w, p, err, errlen)) {
            dl_weight_free(qw);
            return DL_ERROR;
        }
    }
    qw->tall = e->tall_tile;
    for (int p = 0; p < n_parts; p++)
        if (qw->parts[p].prim_tall < 0) qw->tall = 0;
    qw->bytes += (size_t)OC * (int8 ? 3 : 1) * sizeof(float); /* bias; int8: scale, zp_coef */
    *out = qw;
    return DL_OK;
}

void dl_weight_free(dl_weight *w) {
    if (!w) return;
    for (int p = 0; w->parts && p < w->n_parts; p++)
        if (w->parts[p].wei) dnnl_memory_destroy(w->parts[p].wei);
    free(w->parts);
    free(w->scale);
    free(w->zp_coef);
    free(w->bias);
    free(w);
}

size_t dl_weight_bytes(const dl_weight *w) {
    return w->bytes;
}
int dl_weight_tall_tile(const dl_weight *w) {
    return w->tall;
}
int dl_weight_parts(const dl_weight *w) {
    return w->n_parts;
}
void dl_weight_part_cols(const dl_weight *w, int p, int *o0, int *o1) {
    *o0 = w->parts[p].o0;
    *o1 = w->parts[p].o1;
}

dl_ctx *dl_ctx_new(const dl_engine *e) {
    dl_ctx *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    const int rows = e->tall_tile > e->row_tile ? e->tall_tile : e->row_tile;
    c->e = e;
    dnnl_memory_desc_t sp;
    dnnl_dims_t spd = {(dnnl_dim_t)(e->scratch_bytes > 0 ? e->scratch_bytes : 1)};
    if (dnnl_stream_create(&c->stream, e->eng, dnnl_stream_default_flags) ||
        dnnl_memory_desc_init_by_tag(&sp, 1, spd, dnnl_u8, dnnl_a) ||
        dnnl_memory_create(&c->scratch, &sp, e->eng, DNNL_MEMORY_ALLOCATE) ||
        !(c->acc = malloc((size_t)rows * (size_t)e->max_width * sizeof(int32_t))) ||
        (e->mode == DL_F32 &&
         !(c->pad = malloc((size_t)rows * (size_t)e->max_k * sizeof(float))))) {
        dl_ctx_free(c);
        return NULL;
    }
    return c;
}

void dl_ctx_free(dl_ctx *c) {
    if (!c) return;
    for (int i = 0; i < DL_MAX_PRIMS; i++) {
        if (c->src[i]) dnnl_memory_destroy(c->src[i]);
        if (c->dst[i]) dnnl_memory_destroy(c->dst[i]);
    }
    if (c->scratch) dnnl_memory_destroy(c->scratch);
    if (c->stream) dnnl_stream_destroy(c->stream);
    free(c->acc);
    free(c->pad);
    free(c);
}

// rows [r0, r1) of x (N, K) -> q (N, K) uint8 with per-row scale and zero point
/* Cloned functions stay static behind a plain wrapper: clang resolves a
 * clone only where the caller sees the attribute. */
OPS_VECTOR_CLONES static void dl_quantize_rows_loop(const float *restrict x, int K, int r0, int r1,
                                                    uint8_t *restrict q, float *restrict scale,
                                                    int32_t *restrict zp) {
    for (int r = r0; r < r1; r++) {
        const float *row = x + (size_t)r * K;
        /* The range always holds 0, so that zero (padding, ReLU) is exact. Plain
         * comparisons, not fminf/fmaxf, so that both loops vectorise. */
        float lo = 0.0f, hi = 0.0f;
        int k = 0;
        /* 16 lanes side by side (vec.h): a min/max written as one running value
         * does not vectorise (NaN order). */
        vec_f16 lo16 = {0}, hi16 = {0}, x16;
        for (; k + 16 <= K; k += 16) {
            VEC_LOAD(x16, row + k);
            lo16 = VEC_MIN(x16, lo16);
            hi16 = VEC_MAX(x16, hi16);
        }
        for (int j = 0; j < 16; j++) {
            lo = lo16[j] < lo ? lo16[j] : lo;
            hi = hi16[j] > hi ? hi16[j] : hi;
        }
        for (; k < K; k++) {
            lo = row[k] < lo ? row[k] : lo;
            hi = row[k] > hi ? row[k] : hi;
        }
        const float s = hi > lo ? (hi - lo) / 255.0f : 1.0f;
        const float inv = 1.0f / s;
        /* -lo * inv is in [0, 255]; + 0.5 then truncation rounds half up */
        const float zf = (float)(int)(-lo * inv + 0.5f);
        uint8_t *qrow = q + (size_t)r * K;
        for (k = 0; k + 16 <= K; k += 16) {
            VEC_LOAD(x16, row + k);
            x16 = x16 * inv + (zf + 0.5f);
            x16 = VEC_MAX(x16, (vec_f16){0});
            x16 = VEC_MIN(x16, (vec_f16){0} + 255.0f);
            vec_u8x16 b = __builtin_convertvector(__builtin_convertvector(x16, vec_i16), vec_u8x16);
            VEC_STORE(qrow + k, b);
        }
        for (; k < K; k++) {
            float v = row[k] * inv + zf + 0.5f;
            v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
            qrow[k] = (uint8_t)(int)v;
        }
        scale[r] = s;
        zp[r] = (int32_t)zf;
    }
}

void dl_quantize_rows(const float *x, int K, int r0, int r1, uint8_t *q, float *scale,
                      int32_t *zp) {
    dl_quantize_rows_loop(x, K, r0, r1, q, scale, zp);
}

// acc (rows, W) int32 -> out (rows, W), row stride ldo: the formula of dnnl_linear.h
OPS_VECTOR_CLONES static void
dl_dequantize_tile(const int32_t *restrict acc, int rows, int W, const int32_t *restrict zp,
                   const float *restrict xs, const float *restrict zp_coef,
                   const float *restrict ws, const float *restrict bias, float *restrict out,
                   int ldo) {
    /* xs * ws * (acc - zp * colsum) + bias, as xs * ws * acc + (bias - xs * zp *
     * ws * colsum): no int32 multiply per element, and the second term is one
     * multiply-add with a per-row scalar. */
    for (int r = 0; r < rows; r++) {
        const int32_t *a = acc + (size_t)r * W;
        float *o = out + (size_t)r * ldo;
        const float xsr = xs[r], zxs = (float)zp[r] * xs[r];
        for (int n = 0; n < W; n++)
            o[n] = (float)a[n] * (xsr * ws[n]) + (bias[n] - zxs * zp_coef[n]);
    }
}

// acc (rows, W) -> out (rows, W), row stride ldo: acc + bias
OPS_VECTOR_CLONES static void dl_bias_tile(const float *restrict acc, int rows, int W,
                                           const float *restrict bias, float *restrict out,
                                           int ldo) {
    for (int r = 0; r < rows; r++) {
        const float *a = acc + (size_t)r * W;
        float *o = out + (size_t)r * ldo;
        for (int n = 0; n < W; n++)
            o[n] = a[n] + bias[n];
    }
}

int dl_run_tile(dl_ctx *c, const dl_weight *w, int r0, int R, int part, const dl_input *in, int N,
                float *out, int ldo) {
    dl_single_threaded();
    const dl_engine *e = c->e;
    const dl_part *pt = &w->parts[part];
    const int pi = R == e->row_tile ? pt->prim : pt->prim_tall;
    if (pi < 0 || e->prims[pi].R != R) return DL_ERROR;
    const dl_prim *p = &e->prims[pi];
    const int W = pt->o1 - pt->o0, K = w->IC;
    const int rows = N - r0 < R ? N - r0 : R;
    if (!c->src[pi] && (dnnl_memory_create(&c->src[pi], &p->src_md, e->eng, DNNL_MEMORY_NONE) ||
                        dnnl_memory_create(&c->dst[pi], &p->dst_md, e->eng, c->acc)))
        return DL_ERROR;
    const void *src;
    if (e->mode == DL_INT8) {
        src = in->q + (size_t)r0 * K;
    } else if (rows == R) {
        src = in->x + (size_t)r0 * K;
    } else { /* the kernel reads R rows: the last tile's are copied and padded */
        memcpy(c->pad, in->x + (size_t)r0 * K, (size_t)rows * K * sizeof(float));
        memset(c->pad + (size_t)rows * K, 0, (size_t)(R - rows) * K * sizeof(float));
        src = c->pad;
    }
    if (dnnl_memory_set_data_handle(c->src[pi], (void *)src)) return DL_ERROR;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, c->src[pi]},
                               {DNNL_ARG_WEIGHTS, pt->wei},
                               {DNNL_ARG_DST, c->dst[pi]},
                               {DNNL_ARG_SCRATCHPAD, c->scratch}};
    if (dnnl_primitive_execute(p->prim, c->stream, 4, args)) return DL_ERROR;
    float *o = out + (size_t)r0 * ldo + pt->o0;
    if (e->mode == DL_INT8)
        dl_dequantize_tile(c->acc, rows, W, in->zp + r0, in->scale + r0, w->zp_coef + pt->o0,
                           w->scale + pt->o0, w->bias + pt->o0, o, ldo);
    else
        dl_bias_tile(c->acc, rows, W, w->bias + pt->o0, o, ldo);
    return DL_OK;
}
