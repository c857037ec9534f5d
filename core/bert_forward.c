/* The forward pass: packed variable-length batch -> encoder -> heads.
 *
 * Sequences are packed back to back, (N = sum of lengths, C), with no
 * padding: every dense layer runs over all N tokens in one GEMM, and only
 * attention looks at sequence boundaries. This is exactly what transformers
 * computes with a padding mask (masked keys get zero weight), minus the work
 * on pad tokens. */
#include "bert_internal.h"
#include "ops.h"
#include "team.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scratch buffers of one worker, grown on demand and reused across calls so
 * the steady state allocates nothing. */
enum {
    WS_X,          /* (N, C) hidden states */
    WS_Q,          /* (N, C) */
    WS_K,          /* (N, C) */
    WS_V,          /* (N, C) */
    WS_CTX,        /* (N, C) attention output before projection */
    WS_TMP,        /* (max(N, M, B), C) sublayer outputs, head transforms */
    WS_INTER,      /* (N, I) feed-forward activations */
    WS_SCORES,     /* (threads, Lmax, Lmax) one head's attention matrix per thread */
    WS_MLM_ROWS,   /* (M, C) MLM positions after the head's transform */
    WS_MLM_LOGITS, /* (n, V) the rows asked of bert_mlm_logits */
    WS_POOLED,     /* (B, C) */
    WS_NSP_LOGITS, /* (B, 2) */
    WS_NBUF
};

/* One context per thread for one oneDNN engine. A workspace keeps those of
 * two engines, so that a worker that alternates between an int8 and a float32
 * model (the server's model.compute: int8-checked) does not remake them on
 * every forward. */
#define WS_ENGINES 2
typedef struct ws_engine {
    dl_ctx **ctx; /* (team size) */
    const dl_engine *e;
    uint64_t id; /* dl_engine_id of e: addresses are reused */
} ws_engine;

struct bert_workspace {
    float *buf[WS_NBUF];
    size_t cap[WS_NBUF]; /* floats */
    size_t bytes;
    int mlm_rows;   /* rows in WS_MLM_ROWS from the last forward */
    team *team;     /* NULL: everything on the calling thread */
    size_t *starts; /* (B) first row of each sequence in the packed batch */
    int starts_cap;
    int (*cancel)(void *arg); /* checked before each layer: nonzero stops the pass */
    void *cancel_arg;
    int hidden_rows; /* rows of WS_X from the last forward */
    /* A model with products on oneDNN (dnnl_linear.h): contexts made on the
     * first forward with that model's engine (the last WS_ENGINES engines are
     * kept), and for int8 the quantized input of the product at hand: (rows
     * rounded up to whole tiles, max(C, I)). */
    ws_engine eng[WS_ENGINES];
    ws_engine *cur; /* the engine of the forward at hand */
    uint8_t *qx;
    size_t qx_cap; /* bytes */
    float *qscale; /* per row of qx */
    int32_t *qzp;
    size_t qscale_cap, qzp_cap; /* rows */
};

bert_workspace *bert_workspace_new(void) {
    return bert_workspace_new_threads(1);
}

bert_workspace *bert_workspace_new_threads(int n_threads) {
    bert_workspace *ws = calloc(1, sizeof(bert_workspace));
    if (!ws) return NULL;
    if (n_threads > 1 && !(ws->team = team_new(n_threads))) {
        free(ws);
        return NULL;
    }
    return ws;
}

static void ws_engine_free(const bert_workspace *ws, ws_engine *se) {
    for (int i = 0; se->ctx && i < team_size(ws->team); i++)
        dl_ctx_free(se->ctx[i]);
    free(se->ctx);
    *se = (ws_engine){0};
}

void bert_workspace_free(bert_workspace *ws) {
    if (!ws) return;
    for (int i = 0; i < WS_ENGINES; i++)
        ws_engine_free(ws, &ws->eng[i]);
    free(ws->qx);
    free(ws->qscale);
    free(ws->qzp);
    team_free(ws->team);
    for (int i = 0; i < WS_NBUF; i++)
        free(ws->buf[i]);
    free(ws->starts);
    free(ws);
}

int bert_workspace_threads(const bert_workspace *ws) {
    return team_size(ws->team);
}

size_t bert_workspace_bytes(const bert_workspace *ws) {
    return ws->bytes;
}

void bert_workspace_set_cancel(bert_workspace *ws, int (*fn)(void *arg), void *arg) {
    ws->cancel = fn;
    ws->cancel_arg = arg;
}

/* Room for n elements of elem bytes in a buffer holding *cap: sets *out to
 * the buffer to use (old itself when it is large enough; a new one replaces
 * it otherwise, its contents not kept) and counts the growth in *bytes.
 * Returns 0 when memory runs out; old and *cap are then unchanged. */
static int ws_grow(size_t *bytes, size_t *cap, size_t n, size_t elem, void *old, void **out) {
    *out = old;
    if (n <= *cap) return 1;
    void *p = malloc(n * elem);
    if (!p) return 0;
    free(old);
    *bytes += (n - *cap) * elem;
    *cap = n;
    *out = p;
    return 1;
}

/* Makes buffer i hold at least n floats (contents not kept). */
static int ws_reserve(bert_workspace *ws, int i, size_t n) {
    void *p;
    if (!ws_grow(&ws->bytes, &ws->cap[i], n, sizeof(float), ws->buf[i], &p)) return 0;
    ws->buf[i] = p;
    return 1;
}

/* Products on oneDNN: a context per thread for engine e, and for int8 room for
 * the quantized input of any product of a batch of N rows. */
static int ws_reserve_dnnl(bert_workspace *ws, const dl_engine *e, size_t N, size_t K) {
    const int n = team_size(ws->team);
    ws_engine *se = NULL;
    for (int i = 0; i < WS_ENGINES && !se; i++)
        if (ws->eng[i].ctx && ws->eng[i].id == dl_engine_id(e)) se = &ws->eng[i];
    if (!se) {
        /* the slot least recently used: not the current one */
        se = ws->cur == &ws->eng[0] ? &ws->eng[1] : &ws->eng[0];
        ws->cur = NULL;
        const int reused = se->ctx != NULL; /* its pointer array is counted already */
        ws_engine_free(ws, se);
        if (!(se->ctx = calloc((size_t)n, sizeof(*se->ctx)))) return 0;
        for (int i = 0; i < n; i++)
            if (!(se->ctx[i] = dl_ctx_new(e))) {
                ws_engine_free(ws, se);
                return 0;
            }
        if (!reused) ws->bytes += (size_t)n * sizeof(*se->ctx);
        se->e = e;
        se->id = dl_engine_id(e);
    }
    ws->cur = se;
    if (dl_engine_mode(e) != DL_INT8) return 1;
    const size_t R = (size_t)dl_engine_row_tile(e), rows = (N + R - 1) / R * R;
    void *p;
    if (!ws_grow(&ws->bytes, &ws->qx_cap, rows * K, 1, ws->qx, &p)) return 0;
    ws->qx = p;
    if (!ws_grow(&ws->bytes, &ws->qscale_cap, rows, sizeof(float), ws->qscale, &p)) return 0;
    ws->qscale = p;
    if (!ws_grow(&ws->bytes, &ws->qzp_cap, rows, sizeof(int32_t), ws->qzp, &p)) return 0;
    ws->qzp = p;
    return 1;
}

static int forward_check_inputs(const bert_model *m, const bert_seq_input *seqs, int B,
                                int want_nsp, size_t *N, size_t *M, int *Lmax, char *err,
                                size_t errlen) {
    const bert_config *c = &m->cfg;
    *N = 0, *M = 0, *Lmax = 0;
    if (B <= 0) {
        snprintf(err, errlen, "empty batch");
        return BERT_ERR_INPUT;
    }
    if (want_nsp && !m->has_nsp) {
        snprintf(err, errlen,
                 "next-sentence prediction is not available in this model "
                 "(checkpoint has no pooler/cls.seq_relationship weights)");
        return BERT_ERR_NO_HEAD;
    }
    for (int b = 0; b < B; b++) {
        const bert_seq_input *s = &seqs[b];
        if (s->len <= 0 || s->len > c->max_position_embeddings) {
            snprintf(err, errlen, "sequence %d has %d tokens; this model accepts 1 to %d", b,
                     s->len, c->max_position_embeddings);
            return BERT_ERR_INPUT;
        }
        for (int t = 0; t < s->len; t++) {
            if (s->ids[t] < 0 || s->ids[t] >= c->vocab_size ||
                (s->type_ids && (s->type_ids[t] < 0 || s->type_ids[t] >= c->type_vocab_size))) {
                snprintf(err, errlen,
                         "sequence %d position %d: token or token type id out of "
                         "range",
                         b, t);
                return BERT_ERR_INPUT;
            }
        }
        if (s->n_mlm > 0 && !m->has_mlm) {
            snprintf(err, errlen,
                     "masked language modelling is not available in this model "
                     "(checkpoint has no cls.predictions weights)");
            return BERT_ERR_NO_HEAD;
        }
        for (int i = 0; i < s->n_mlm; i++) {
            if (s->mlm_positions[i] < 0 || s->mlm_positions[i] >= s->len) {
                snprintf(err, errlen, "sequence %d: MLM position %d outside the sequence", b,
                         s->mlm_positions[i]);
                return BERT_ERR_INPUT;
            }
        }
        *N += (size_t)s->len;
        *M += (size_t)(s->n_mlm > 0 ? s->n_mlm : 0);
        *Lmax = s->len > *Lmax ? s->len : *Lmax;
    }
    return BERT_OK;
}

/* ---- splitting the work across the workspace's team ----
 * Products are split by output columns: each chunk multiplies the whole input
 * by its own rows of the weight, so every weight byte is read from memory
 * once, by one core, and the (small) input is packed once per chunk. Chunks
 * are multiples of 16 columns (one 64-byte line of a row), PAR_CHUNKS per
 * thread, handed out by a counter: on a shared machine a thread that loses
 * its core for a while takes fewer chunks instead of holding up the others. */
#define PAR_COL_ALIGN 16
#define PAR_CHUNKS    2
/* Below this many multiply-adds a product runs on the caller alone: waking
 * the team costs more than it saves (the NSP head's (B,C)x(2,C)). */
#define PAR_MIN_MACS (1L << 16)

/* Up to three products over the same input (Q, K, V), optionally followed by
 * the activation on each chunk while it is still in cache. */
typedef struct par_linear_job {
    int n_prod;
    float *out[3];
    const float *w[3], *b[3];
    const uint16_t *w_bf16; /* instead of w[0] (one product): a bfloat16 weight */
    const float *inp;
    int N, IC, OC;
    int act;   /* bert_activation, or -1 */
    int width; /* columns per chunk */
    int per_prod, n_chunks;
    atomic_int next;
} par_linear_job;

static void par_linear_chunk(par_linear_job *j, int c) {
    const int p = c / j->per_prod;
    const int o0 = (c % j->per_prod) * j->width;
    const int o1 = o0 + j->width < j->OC ? o0 + j->width : j->OC;
    float *out = j->out[p] + o0;
    const float *b = j->b[p] ? j->b[p] + o0 : NULL;
    if (j->w_bf16)
        ops_linear_bf16(out, j->OC, j->inp, j->w_bf16 + (size_t)o0 * j->IC, b, j->N, j->IC,
                        o1 - o0);
    else
        ops_linear(out, j->OC, j->inp, j->w[p] + (size_t)o0 * j->IC, b, j->N, j->IC, o1 - o0);
    if (j->act >= 0)
        for (int r = 0; r < j->N; r++)
            ops_activation(out + (size_t)r * j->OC, (size_t)(o1 - o0), (bert_activation)j->act);
}

static void par_linear_part(void *arg, int idx, int n) {
    (void)idx, (void)n;
    par_linear_job *j = arg;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) < j->n_chunks;)
        par_linear_chunk(j, c);
}

static void par_linear_run(team *t, par_linear_job *j) {
    int n = team_size(t);
    if ((long)j->N * j->IC * j->OC * j->n_prod < PAR_MIN_MACS) n = 1;
    int width = n > 1 ? (j->OC + n * PAR_CHUNKS - 1) / (n * PAR_CHUNKS) : j->OC;
    width = n > 1 ? (width + PAR_COL_ALIGN - 1) / PAR_COL_ALIGN * PAR_COL_ALIGN : width;
    j->width = width;
    j->per_prod = (j->OC + width - 1) / width;
    j->n_chunks = j->per_prod * j->n_prod;
    atomic_init(&j->next, 0);
    if (n == 1)
        for (int c = 0; c < j->n_chunks; c++)
            par_linear_chunk(j, c);
    else
        team_run(t, par_linear_part, j);
}

// out (N,OC) = act(inp (N,IC) @ w^T + b) on every thread of ws
static void par_linear(bert_workspace *ws, float *out, const float *inp, const float *w,
                       const float *b, int N, int IC, int OC, int act) {
    par_linear_job j = {.n_prod = 1,
                        .out = {out},
                        .w = {w},
                        .b = {b},
                        .inp = inp,
                        .N = N,
                        .IC = IC,
                        .OC = OC,
                        .act = act};
    par_linear_run(ws->team, &j);
}

/* The same products on oneDNN. For int8 the input is first quantized once
 * per product (by rows, on every thread). Tasks are (product, column part,
 * row tile) triples, consecutive tasks sharing a part so that its weights stay
 * in the cache. */
typedef struct par_dnnl_job {
    bert_workspace *ws;
    int n_prod;
    float *out[3];
    const dl_weight *w[3];
    const float *inp;
    int N, IC, OC;
    int act; /* bert_activation, or -1 */
    int tiles, parts, n_tasks;
    int tall, n_tall; /* rows per tall tile, and how many lead (the rest are short) */
    int rows;         /* per quantization chunk */
    atomic_int next;
    atomic_int failed;
} par_dnnl_job;

static void par_quantize_part(void *arg, int idx, int n) {
    (void)idx, (void)n;
    par_dnnl_job *j = arg;
    bert_workspace *ws = j->ws;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) * j->rows < j->N;) {
        const int r0 = c * j->rows, r1 = r0 + j->rows < j->N ? r0 + j->rows : j->N;
        dl_quantize_rows(j->inp, j->IC, r0, r1, ws->qx, ws->qscale, ws->qzp);
    }
}

static void par_dnnl_part(void *arg, int idx, int n) {
    (void)n;
    par_dnnl_job *j = arg;
    bert_workspace *ws = j->ws;
    const int per_prod = j->parts * j->tiles;
    const int Rs = dl_engine_row_tile(ws->cur->e);
    const dl_input in = {j->inp, ws->qx, ws->qscale, ws->qzp};
    for (int t; (t = atomic_fetch_add(&j->next, 1)) < j->n_tasks;) {
        const int p = t / per_prod, part = t % per_prod / j->tiles, tile = t % j->tiles;
        const int R = tile < j->n_tall ? j->tall : Rs;
        const int r0 =
            tile < j->n_tall ? tile * j->tall : j->n_tall * j->tall + (tile - j->n_tall) * Rs;
        if (dl_run_tile(ws->cur->ctx[idx], j->w[p], r0, R, part, &in, j->N, j->out[p], j->OC)) {
            atomic_store(&j->failed, 1);
            continue;
        }
        if (j->act < 0) continue;
        int o0, o1;
        dl_weight_part_cols(j->w[p], part, &o0, &o1);
        const int r1 = r0 + R < j->N ? r0 + R : j->N;
        for (int r = r0; r < r1; r++)
            ops_activation(j->out[p] + (size_t)r * j->OC + o0, (size_t)(o1 - o0),
                           (bert_activation)j->act);
    }
}

// out[p] (N,OC) = act(inp (N,IC) @ w[p]^T + b) for each of n_prod products (int8: w dequantized)
static int par_dnnl(bert_workspace *ws, int n_prod, float *const *out, dl_weight *const *w,
                    const float *inp, int N, int IC, int OC, int act) {
    const int R = dl_engine_row_tile(ws->cur->e), n = team_size(ws->team);
    par_dnnl_job j = {
        .ws = ws, .n_prod = n_prod, .inp = inp, .N = N, .IC = IC, .OC = OC, .act = act};
    for (int p = 0; p < n_prod; p++)
        j.out[p] = out[p], j.w[p] = w[p];
    j.parts = dl_weight_parts(w[0]);
    /* Tall tiles where they leave every thread at least two tasks. */
    int tall = dl_weight_tall_tile(w[0]);
    for (int p = 1; p < n_prod; p++)
        tall = dl_weight_tall_tile(w[p]) == tall ? tall : 0;
    if (tall && (N / tall) * j.parts * n_prod >= 2 * n) j.tall = tall, j.n_tall = N / tall;
    j.tiles = j.n_tall + (N - j.n_tall * j.tall + R - 1) / R;
    j.n_tasks = n_prod * j.parts * j.tiles;
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    if (dl_engine_mode(ws->cur->e) == DL_INT8) {
        /* Rows past N in the last tile: zeros, so oneDNN never reads stale bytes. */
        memset(ws->qx + (size_t)N * IC, 0, ((size_t)(N + R - 1) / R * R - (size_t)N) * IC);
        j.rows = n > 1 && N >= 8 ? (N + n * PAR_CHUNKS - 1) / (n * PAR_CHUNKS) : N;
        team_run(n > 1 && N >= 8 ? ws->team : NULL, par_quantize_part, &j);
        atomic_store(&j.next, 0);
    }
    team_run(j.n_tasks > 1 ? ws->team : NULL, par_dnnl_part, &j);
    return atomic_load(&j.failed) ? BERT_ERR_NOMEM : BERT_OK;
}

typedef struct par_ln_job {
    float *x;
    const float *residual, *w, *b;
    int N, C;
    float eps;
    int rows; /* per chunk */
    atomic_int next;
} par_ln_job;

static void par_ln_part(void *arg, int idx, int n) {
    (void)idx, (void)n;
    par_ln_job *j = arg;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) * j->rows < j->N;) {
        const int r0 = c * j->rows, r1 = r0 + j->rows < j->N ? r0 + j->rows : j->N;
        ops_layernorm(j->x + (size_t)r0 * j->C,
                      j->residual ? j->residual + (size_t)r0 * j->C : NULL, j->w, j->b, r1 - r0,
                      j->C, j->eps);
    }
}

// x (N,C) = LN(x + residual) by rows on every thread of ws
static void par_layernorm(bert_workspace *ws, float *x, const float *residual, const float *w,
                          const float *b, int N, int C, float eps) {
    const int n = team_size(ws->team);
    par_ln_job j = {x, residual, w, b, N, C, eps, N, 0};
    if (N < 4 || n == 1) {
        par_ln_part(&j, 0, 1);
        return;
    }
    j.rows = (N + n * PAR_CHUNKS - 1) / (n * PAR_CHUNKS);
    team_run(ws->team, par_ln_part, &j);
}

/* Attention tasks are (sequence, head) pairs handed out by a counter, so
 * sequences of different lengths in one batch still balance. */
typedef struct par_attn_job {
    bert_workspace *ws;
    const bert_seq_input *seqs;
    int H, D, C, Lmax;
    int n_tasks;
    atomic_int next;
} par_attn_job;

static void par_attn_part(void *arg, int idx, int n) {
    (void)n;
    par_attn_job *j = arg;
    bert_workspace *ws = j->ws;
    float *scores = ws->buf[WS_SCORES] + (size_t)idx * j->Lmax * j->Lmax;
    for (int task; (task = atomic_fetch_add(&j->next, 1)) < j->n_tasks;) {
        const int b = task / j->H, h = task % j->H;
        const size_t off = ws->starts[b] * (size_t)j->C + (size_t)h * j->D;
        ops_attention_head(ws->buf[WS_CTX] + off, ws->buf[WS_Q] + off, ws->buf[WS_K] + off,
                           ws->buf[WS_V] + off, scores, j->seqs[b].len, j->D, j->C);
    }
}

// ids, type_ids of each sequence -> x (N,C) = LN(word + position + type embeddings)
static void forward_embeddings(const bert_model *m, const bert_seq_input *seqs, int B, float *x) {
    const int C = m->cfg.hidden_size;
    float *row = x;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < seqs[b].len; t++, row += C) {
            const size_t id = (size_t)seqs[b].ids[t];
            const float *p = m->pos_emb + (size_t)t * C;
            const int type = seqs[b].type_ids ? seqs[b].type_ids[t] : 0;
            const float *ty = m->type_emb + (size_t)type * C;
            if (m->word_emb_bf16) {
                ops_from_bf16(m->word_emb_bf16 + id * C, row, (size_t)C);
                for (int c = 0; c < C; c++)
                    row[c] += p[c] + ty[c];
            } else {
                const float *w = m->word_emb + id * C;
                for (int c = 0; c < C; c++)
                    row[c] = w[c] + p[c] + ty[c];
            }
        }
    }
}

/* out[p] (N,OC) = act(inp (N,IC) @ W^T + b) for the layer's products first ..
 * first + n_prod - 1 (bert_qprod order): on oneDNN when the model put them
 * there, else on OpenBLAS. Nonzero only if oneDNN failed. */
static int layer_products(bert_workspace *ws, const bert_layer *L, int first, int n_prod,
                          float *const *out, const float *inp, int N, int IC, int OC, int act) {
    if (L->qw[first]) return par_dnnl(ws, n_prod, out, &L->qw[first], inp, N, IC, OC, act);
    const float *w[QP_N] = {L->q_w, L->k_w, L->v_w, L->attn_out_w, L->inter_w, L->out_w};
    const float *b[QP_N] = {L->q_b, L->k_b, L->v_b, L->attn_out_b, L->inter_b, L->out_b};
    par_linear_job j = {.n_prod = n_prod, .inp = inp, .N = N, .IC = IC, .OC = OC, .act = act};
    for (int p = 0; p < n_prod; p++)
        j.out[p] = out[p], j.w[p] = w[first + p], j.b[p] = b[first + p];
    par_linear_run(ws->team, &j);
    return BERT_OK;
}

// x (N,C) -> x (N,C) after one post-LN transformer layer; nonzero if oneDNN failed
static int forward_layer(const bert_model *m, const bert_layer *L, bert_workspace *ws,
                         const bert_seq_input *seqs, int B, int N, int Lmax) {
    const bert_config *c = &m->cfg;
    const int C = c->hidden_size, I = c->intermediate_size, H = c->num_attention_heads;
    float *qkv_out[3] = {ws->buf[WS_Q], ws->buf[WS_K], ws->buf[WS_V]};
    int rc = layer_products(ws, L, QP_Q, 3, qkv_out, ws->buf[WS_X], N, C, C, -1);
    if (rc) return rc;
    par_attn_job attn = {ws, seqs, H, C / H, C, Lmax, B * H, 0};
    team_run(ws->team, par_attn_part, &attn);
    if ((rc =
             layer_products(ws, L, QP_ATTN_OUT, 1, &ws->buf[WS_TMP], ws->buf[WS_CTX], N, C, C, -1)))
        return rc;
    par_layernorm(ws, ws->buf[WS_X], ws->buf[WS_TMP], L->attn_ln_w, L->attn_ln_b, N, C,
                  c->layer_norm_eps);
    if ((rc = layer_products(ws, L, QP_INTER, 1, &ws->buf[WS_INTER], ws->buf[WS_X], N, C, I,
                             (int)c->hidden_act)) ||
        (rc = layer_products(ws, L, QP_OUT, 1, &ws->buf[WS_TMP], ws->buf[WS_INTER], N, I, C, -1)))
        return rc;
    par_layernorm(ws, ws->buf[WS_X], ws->buf[WS_TMP], L->out_ln_w, L->out_ln_b, N, C,
                  c->layer_norm_eps);
    return BERT_OK;
}

// x (N,C) at the requested positions -> mlm_rows (M,C) = LN(act(x W^T + b))
static void forward_mlm_transform(const bert_model *m, bert_workspace *ws,
                                  const bert_seq_input *seqs, int B, int M) {
    const bert_config *c = &m->cfg;
    const int C = c->hidden_size;
    size_t base = 0, r = 0;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < seqs[b].n_mlm; i++, r++)
            memcpy(ws->buf[WS_TMP] + r * C,
                   ws->buf[WS_X] + (base + (size_t)seqs[b].mlm_positions[i]) * C,
                   (size_t)C * sizeof(float));
        base += (size_t)seqs[b].len;
    }
    par_linear(ws, ws->buf[WS_MLM_ROWS], ws->buf[WS_TMP], m->mlm_dense_w, m->mlm_dense_b, M, C, C,
               (int)c->hidden_act);
    par_layernorm(ws, ws->buf[WS_MLM_ROWS], NULL, m->mlm_ln_w, m->mlm_ln_b, M, C,
                  c->layer_norm_eps);
}

// mlm_rows[first .. first+n) (n,C) -> logits (n,V) = rows @ decoder^T + bias
const float *bert_mlm_logits(const bert_model *m, bert_workspace *ws, int first, int n) {
    const int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (first < 0 || n <= 0 || first > ws->mlm_rows - n) return NULL;
    if (!ws_reserve(ws, WS_MLM_LOGITS, (size_t)n * V)) return NULL;
    par_linear_job j = {.n_prod = 1,
                        .out = {ws->buf[WS_MLM_LOGITS]},
                        .w = {m->mlm_dec_w},
                        .w_bf16 = m->mlm_dec_bf16,
                        .b = {m->mlm_bias},
                        .inp = ws->buf[WS_MLM_ROWS] + (size_t)first * C,
                        .N = n,
                        .IC = C,
                        .OC = V,
                        .act = -1};
    par_linear_run(ws->team, &j);
    return ws->buf[WS_MLM_LOGITS];
}

const float *bert_hidden_states(const bert_workspace *ws, int *rows) {
    *rows = ws->hidden_rows;
    return ws->buf[WS_X];
}

// x (N,C) at each sequence's [CLS] -> nsp_logits (B,2)
static void forward_nsp(const bert_model *m, bert_workspace *ws, const bert_seq_input *seqs,
                        int B) {
    const int C = m->cfg.hidden_size;
    size_t base = 0;
    for (int b = 0; b < B; b++) {
        memcpy(ws->buf[WS_TMP] + (size_t)b * C, ws->buf[WS_X] + base * C,
               (size_t)C * sizeof(float));
        base += (size_t)seqs[b].len;
    }
    par_linear(ws, ws->buf[WS_POOLED], ws->buf[WS_TMP], m->pool_w, m->pool_b, B, C, C, -1);
    ops_tanh(ws->buf[WS_POOLED], (size_t)B * C);
    ops_linear(ws->buf[WS_NSP_LOGITS], 2, ws->buf[WS_POOLED], m->nsp_w, m->nsp_b, B, C, 2);
}

int bert_forward(const bert_model *m, bert_workspace *ws, const bert_seq_input *seqs, int B,
                 int want_nsp, bert_forward_out *out, char *err, size_t errlen) {
    const bert_config *c = &m->cfg;
    size_t N, M;
    int Lmax;
    memset(out, 0, sizeof(*out));
    int rc = forward_check_inputs(m, seqs, B, want_nsp, &N, &M, &Lmax, err, errlen);
    if (rc) return rc;

    const size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t rows_tmp = N > M ? N : M;
    rows_tmp = rows_tmp > (size_t)B ? rows_tmp : (size_t)B;
    const size_t need[WS_NBUF] = {
        [WS_X] = N * C,
        [WS_Q] = N * C,
        [WS_K] = N * C,
        [WS_V] = N * C,
        [WS_CTX] = N * C,
        [WS_TMP] = rows_tmp * C,
        [WS_INTER] = N * I,
        [WS_SCORES] = (size_t)team_size(ws->team) * Lmax * Lmax,
        [WS_MLM_ROWS] = M * C,
        [WS_MLM_LOGITS] = 0,
        [WS_POOLED] = (size_t)B * C,
        [WS_NSP_LOGITS] = (size_t)B * 2,
    };
    for (int i = 0; i < WS_NBUF; i++)
        if (!ws_reserve(ws, i, need[i])) goto nomem;
    if (B > ws->starts_cap) {
        size_t *ns = realloc(ws->starts, (size_t)B * sizeof(*ns));
        if (!ns) goto nomem;
        ws->bytes += (size_t)(B - ws->starts_cap) * sizeof(*ns);
        ws->starts = ns;
        ws->starts_cap = B;
    }
    for (int b = 0, row = 0; b < B; row += seqs[b].len, b++)
        ws->starts[b] = (size_t)row;
    if (m->dl && !ws_reserve_dnnl(ws, m->dl, N, C > I ? C : I)) goto nomem;

    forward_embeddings(m, seqs, B, ws->buf[WS_X]);
    par_layernorm(ws, ws->buf[WS_X], NULL, m->emb_ln_w, m->emb_ln_b, (int)N, (int)C,
                  c->layer_norm_eps);
    ws->mlm_rows = 0;
    ws->hidden_rows = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (ws->cancel && ws->cancel(ws->cancel_arg)) {
            snprintf(err, errlen, "cancelled before layer %d of %d", l, c->num_hidden_layers);
            return BERT_ERR_CANCELLED;
        }
        if (forward_layer(m, &m->layers[l], ws, seqs, B, (int)N, Lmax)) {
            snprintf(err, errlen, "the oneDNN kernel failed in layer %d", l);
            return BERT_ERR_NOMEM;
        }
    }
    ws->hidden_rows = (int)N;
    if (M > 0) {
        forward_mlm_transform(m, ws, seqs, B, (int)M);
        ws->mlm_rows = (int)M;
        out->n_mlm_rows = (int)M;
    }
    if (want_nsp) {
        forward_nsp(m, ws, seqs, B);
        out->nsp_logits = ws->buf[WS_NSP_LOGITS];
    }
    return BERT_OK;
nomem:
    snprintf(err, errlen, "out of memory for a batch of %zu tokens", N);
    return BERT_ERR_NOMEM;
}
