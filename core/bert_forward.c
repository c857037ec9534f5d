/* The forward pass: packed variable-length batch -> encoder -> heads.
 *
 * Sequences are packed back to back, (N = sum of lengths, C), with no
 * padding: every dense layer runs over all N tokens in one GEMM, and only
 * attention looks at sequence boundaries. This is exactly what transformers
 * computes with a padding mask (masked keys get zero weight), minus the work
 * on pad tokens. */
#include "bert_internal.h"
#include "ops.h"

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
    WS_SCORES,     /* (Lmax, Lmax) one head's attention matrix */
    WS_MLM_ROWS,   /* (M, C) MLM positions after the head's transform */
    WS_MLM_LOGITS, /* (n, V) the rows asked of bert_mlm_logits */
    WS_POOLED,     /* (B, C) */
    WS_NSP_LOGITS, /* (B, 2) */
    WS_NBUF
};

struct bert_workspace {
    float *buf[WS_NBUF];
    size_t cap[WS_NBUF]; /* floats */
    size_t bytes;
    int mlm_rows; /* rows in WS_MLM_ROWS from the last forward */
    int (*cancel)(void *arg);
    void *cancel_arg;
};

bert_workspace *bert_workspace_new(void) {
    return calloc(1, sizeof(bert_workspace));
}

void bert_workspace_free(bert_workspace *ws) {
    if (!ws) return;
    for (int i = 0; i < WS_NBUF; i++)
        free(ws->buf[i]);
    free(ws);
}

size_t bert_workspace_bytes(const bert_workspace *ws) {
    return ws->bytes;
}

void bert_workspace_set_cancel(bert_workspace *ws, int (*fn)(void *arg), void *arg) {
    ws->cancel = fn;
    ws->cancel_arg = arg;
}

/* Makes buffer i hold at least n floats (contents not kept). */
static int ws_reserve(bert_workspace *ws, int i, size_t n) {
    if (n <= ws->cap[i]) return 1;
    float *p = malloc(n * sizeof(float));
    if (!p) return 0;
    free(ws->buf[i]);
    ws->bytes += (n - ws->cap[i]) * sizeof(float);
    ws->buf[i] = p;
    ws->cap[i] = n;
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

// ids, type_ids of each sequence -> x (N,C) = LN(word + position + type embeddings)
static void forward_embeddings(const bert_model *m, const bert_seq_input *seqs, int B, float *x) {
    const int C = m->cfg.hidden_size;
    float *row = x;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < seqs[b].len; t++, row += C) {
            const float *w = m->word_emb + (size_t)seqs[b].ids[t] * C;
            const float *p = m->pos_emb + (size_t)t * C;
            const int type = seqs[b].type_ids ? seqs[b].type_ids[t] : 0;
            const float *ty = m->type_emb + (size_t)type * C;
            for (int c = 0; c < C; c++)
                row[c] = w[c] + p[c] + ty[c];
        }
    }
}

// x (N,C) -> x (N,C) after one post-LN transformer layer
static void forward_layer(const bert_model *m, const bert_layer *L, bert_workspace *ws,
                          const bert_seq_input *seqs, int B, int N) {
    const bert_config *c = &m->cfg;
    const int C = c->hidden_size, I = c->intermediate_size, H = c->num_attention_heads;
    ops_linear(ws->buf[WS_Q], ws->buf[WS_X], L->q_w, L->q_b, N, C, C);
    ops_linear(ws->buf[WS_K], ws->buf[WS_X], L->k_w, L->k_b, N, C, C);
    ops_linear(ws->buf[WS_V], ws->buf[WS_X], L->v_w, L->v_b, N, C, C);
    size_t off = 0;
    for (int b = 0; b < B; b++) {
        ops_attention(ws->buf[WS_CTX] + off, ws->buf[WS_Q] + off, ws->buf[WS_K] + off,
                      ws->buf[WS_V] + off, ws->buf[WS_SCORES], seqs[b].len, H, C / H, C);
        off += (size_t)seqs[b].len * C;
    }
    ops_linear(ws->buf[WS_TMP], ws->buf[WS_CTX], L->attn_out_w, L->attn_out_b, N, C, C);
    ops_layernorm(ws->buf[WS_X], ws->buf[WS_TMP], L->attn_ln_w, L->attn_ln_b, N, C,
                  c->layer_norm_eps);
    ops_linear(ws->buf[WS_INTER], ws->buf[WS_X], L->inter_w, L->inter_b, N, C, I);
    ops_activation(ws->buf[WS_INTER], (size_t)N * I, c->hidden_act);
    ops_linear(ws->buf[WS_TMP], ws->buf[WS_INTER], L->out_w, L->out_b, N, I, C);
    ops_layernorm(ws->buf[WS_X], ws->buf[WS_TMP], L->out_ln_w, L->out_ln_b, N, C,
                  c->layer_norm_eps);
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
    ops_linear(ws->buf[WS_MLM_ROWS], ws->buf[WS_TMP], m->mlm_dense_w, m->mlm_dense_b, M, C, C);
    ops_activation(ws->buf[WS_MLM_ROWS], (size_t)M * C, c->hidden_act);
    ops_layernorm(ws->buf[WS_MLM_ROWS], NULL, m->mlm_ln_w, m->mlm_ln_b, M, C, c->layer_norm_eps);
}

// mlm_rows[first .. first+n) (n,C) -> logits (n,V) = rows @ decoder^T + bias
const float *bert_mlm_logits(const bert_model *m, bert_workspace *ws, int first, int n) {
    const int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (first < 0 || n <= 0 || first > ws->mlm_rows - n) return NULL;
    if (!ws_reserve(ws, WS_MLM_LOGITS, (size_t)n * V)) return NULL;
    ops_linear(ws->buf[WS_MLM_LOGITS], ws->buf[WS_MLM_ROWS] + (size_t)first * C, m->mlm_dec_w,
               m->mlm_bias, n, C, V);
    return ws->buf[WS_MLM_LOGITS];
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
    ops_linear(ws->buf[WS_POOLED], ws->buf[WS_TMP], m->pool_w, m->pool_b, B, C, C);
    ops_tanh(ws->buf[WS_POOLED], (size_t)B * C);
    ops_linear(ws->buf[WS_NSP_LOGITS], ws->buf[WS_POOLED], m->nsp_w, m->nsp_b, B, C, 2);
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
        [WS_SCORES] = (size_t)Lmax * Lmax,
        [WS_MLM_ROWS] = M * C,
        [WS_MLM_LOGITS] = 0,
        [WS_POOLED] = (size_t)B * C,
        [WS_NSP_LOGITS] = (size_t)B * 2,
    };
    for (int i = 0; i < WS_NBUF; i++)
        if (!ws_reserve(ws, i, need[i])) goto nomem;

    forward_embeddings(m, seqs, B, ws->buf[WS_X]);
    ops_layernorm(ws->buf[WS_X], NULL, m->emb_ln_w, m->emb_ln_b, (int)N, (int)C, c->layer_norm_eps);
    ws->mlm_rows = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (ws->cancel && ws->cancel(ws->cancel_arg)) {
            snprintf(err, errlen, "cancelled before layer %d of %d", l, c->num_hidden_layers);
            return BERT_ERR_CANCELLED;
        }
        forward_layer(m, &m->layers[l], ws, seqs, B, (int)N);
    }
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
