/* Checkpoint directory -> bert_model: config.json, the weights (any layout
 * checkpoint.c resolves) and the tokenizer files, every tensor checked
 * against the config before use. */
#include "bert_internal.h"
#include "file_io.h"
#include "ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* config.json: a regular file of at most FIO_MAX_CONFIG_BYTES. */
static char *load_read_file(const char *path, size_t *len, char *err, size_t errlen) {
    char *buf = NULL;
    fio_read_all(path, FIO_MAX_CONFIG_BYTES, &buf, len, err, errlen);
    return buf;
}

/* Float32 tensors up to this size are copied out of the mapped file rather
 * than read in place. Why: the page cache holds the file in large folios, and
 * a read fault maps a whole folio, so reading a layer's 3 KB bias in place
 * brought back megabytes of the quantized weight beside it that the int8 path
 * had released (measured: +38 MB of VmRSS on bert-base after 40 requests).
 * Copies leave the mapping read only for the big tensors used in place. */
#define LOAD_COPY_MAX ((size_t)1 << 20)

/* Drops the pages that lie wholly inside [p, p + bytes) of the mapped file;
 * the file stays mapped, so they would come back only if read. */
static void load_drop_pages(const void *p, size_t bytes) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) / page * page;
    const uintptr_t hi = ((uintptr_t)p + bytes) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Keeps a heap copy alive for the model's lifetime. */
static int load_own(bert_model *m, float *p, size_t nfloats) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        float **grown = realloc(m->owned, (size_t)cap * sizeof(*grown));
        if (!grown) return 0;
        m->owned = grown;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    m->resident_bytes += nfloats * sizeof(float);
    return 1;
}

/* Finds tensor prefix+name, checks its shape is (d0) or (d0,d1) and returns
 * float32 data: in place when the file holds aligned F32, else a converted
 * copy. Missing tensors are an error unless optional, then *out = NULL. */
static int load_tensor(bert_model *m, const char *prefix, const char *name, int64_t d0, int64_t d1,
                       int optional, const float **out, char *err, size_t errlen) {
    char full[256];
    snprintf(full, sizeof(full), "%s%s", prefix, name);
    const char *file = NULL;
    const st_tensor *t = ckpt_find(m->ck, full, &file);
    *out = NULL;
    if (!t) {
        /* Checkpoints converted from TensorFlow name LayerNorm params gamma/beta;
         * transformers renames them on load, so do we. */
        char alt[256];
        size_t n = strlen(full);
        if (n > 7 && strcmp(full + n - 7, ".weight") == 0) {
            snprintf(alt, sizeof(alt), "%.*s.gamma", (int)(n - 7), full);
            t = strstr(full, "LayerNorm") ? ckpt_find(m->ck, alt, &file) : NULL;
        } else if (n > 5 && strcmp(full + n - 5, ".bias") == 0) {
            snprintf(alt, sizeof(alt), "%.*s.beta", (int)(n - 5), full);
            t = strstr(full, "LayerNorm") ? ckpt_find(m->ck, alt, &file) : NULL;
        }
    }
    if (!t) {
        if (optional) return BERT_OK;
        snprintf(err, errlen, "%s: missing tensor '%s'", ckpt_path(m->ck), full);
        return BERT_ERR_FORMAT;
    }
    int want_ndim = d1 > 0 ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != d0 || (want_ndim == 2 && t->shape[1] != d1)) {
        char got[96] = "";
        size_t used = 0;
        for (int i = 0; i < t->ndim && used < sizeof(got) - 24; i++)
            used += (size_t)snprintf(got + used, sizeof(got) - used, "%s%lld", i ? ", " : "",
                                     (long long)t->shape[i]);
        if (want_ndim == 2)
            snprintf(err, errlen,
                     "%s: tensor '%s' has shape [%s], config.json implies [%lld, %lld]", file,
                     t->name, got, (long long)d0, (long long)d1);
        else
            snprintf(err, errlen, "%s: tensor '%s' has shape [%s], config.json implies [%lld]",
                     file, t->name, got, (long long)d0);
        return BERT_ERR_FORMAT;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
        snprintf(err, errlen, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                 file, t->name, st_dtype_name(t->dtype));
        return BERT_ERR_FORMAT;
    }
    m->param_count += (size_t)t->numel;
    const size_t bytes = (size_t)t->numel * sizeof(float);
    const int mapped_f32 = t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
    if (mapped_f32 && bytes > LOAD_COPY_MAX) {
        *out = t->data; /* shared, read-only, paged in on demand */
        return BERT_OK;
    }
    float *copy = malloc(bytes);
    if (!copy || !load_own(m, copy, (size_t)t->numel)) {
        free(copy);
        snprintf(err, errlen, "%s: out of memory converting tensor '%s'", file, t->name);
        return BERT_ERR_NOMEM;
    }
    st_to_f32(t, copy);
    if (mapped_f32) load_drop_pages(t->data, bytes);
    *out = copy;
    return BERT_OK;
}

/* Reads the most common dtype among the file's tensors, for reporting. */
static void load_note_dtype(bert_model *m) {
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < ckpt_n_tensors(m->ck); i++) {
        st_dtype d = ckpt_tensor_at(m->ck, i)->dtype;
        counts[d == ST_F32 ? 0 : d == ST_F16 ? 1 : d == ST_BF16 ? 2 : 0]++;
    }
    const char *names[3] = {"F32", "F16", "BF16"};
    int best = counts[1] > counts[0] ? 1 : 0;
    best = counts[2] > counts[best] ? 2 : best;
    snprintf(m->dtype, sizeof(m->dtype), "%s", names[best]);
}

static int load_layer(bert_model *m, const char *prefix, int i, bert_layer *L, char *err,
                      size_t errlen) {
    const bert_config *c = &m->cfg;
    const int64_t C = c->hidden_size, I = c->intermediate_size;
    char p[160];
    snprintf(p, sizeof(p), "%sencoder.layer.%d.", prefix, i);
    const struct {
        const char *name;
        int64_t d0, d1;
        const float **dst;
    } specs[] = {
        {"attention.self.query.weight", C, C, &L->q_w},
        {"attention.self.query.bias", C, 0, &L->q_b},
        {"attention.self.key.weight", C, C, &L->k_w},
        {"attention.self.key.bias", C, 0, &L->k_b},
        {"attention.self.value.weight", C, C, &L->v_w},
        {"attention.self.value.bias", C, 0, &L->v_b},
        {"attention.output.dense.weight", C, C, &L->attn_out_w},
        {"attention.output.dense.bias", C, 0, &L->attn_out_b},
        {"attention.output.LayerNorm.weight", C, 0, &L->attn_ln_w},
        {"attention.output.LayerNorm.bias", C, 0, &L->attn_ln_b},
        {"intermediate.dense.weight", I, C, &L->inter_w},
        {"intermediate.dense.bias", I, 0, &L->inter_b},
        {"output.dense.weight", C, I, &L->out_w},
        {"output.dense.bias", C, 0, &L->out_b},
        {"output.LayerNorm.weight", C, 0, &L->out_ln_w},
        {"output.LayerNorm.bias", C, 0, &L->out_ln_b},
    };
    for (size_t s = 0; s < sizeof(specs) / sizeof(specs[0]); s++) {
        int rc = load_tensor(m, p, specs[s].name, specs[s].d0, specs[s].d1, 0, specs[s].dst, err,
                             errlen);
        if (rc) return rc;
    }
    return BERT_OK;
}

/* Pooler + NSP head: all four tensors, or the head is absent. */
static int load_nsp(bert_model *m, const char *prefix, char *err, size_t errlen) {
    const int64_t C = m->cfg.hidden_size;
    int rc;
    if ((rc = load_tensor(m, prefix, "pooler.dense.weight", C, C, 1, &m->pool_w, err, errlen)) ||
        (rc = load_tensor(m, prefix, "pooler.dense.bias", C, 0, 1, &m->pool_b, err, errlen)) ||
        (rc = load_tensor(m, "", "cls.seq_relationship.weight", 2, C, 1, &m->nsp_w, err, errlen)) ||
        (rc = load_tensor(m, "", "cls.seq_relationship.bias", 2, 0, 1, &m->nsp_b, err, errlen)))
        return rc;
    m->has_pooler = m->pool_w && m->pool_b;
    m->has_nsp = m->has_pooler && m->nsp_w && m->nsp_b;
    if (m->nsp_w && !m->nsp_b) {
        snprintf(err, errlen, "%s: missing tensor 'cls.seq_relationship.bias'", ckpt_path(m->ck));
        return BERT_ERR_FORMAT;
    }
    return BERT_OK;
}

/* MLM head: present when its transform is; the decoder may be tied to the
 * word embeddings, exactly as transformers ties it. */
static int load_mlm(bert_model *m, char *err, size_t errlen) {
    const int64_t C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    const char *p = "cls.predictions.";
    int rc;
    if ((rc = load_tensor(m, p, "transform.dense.weight", C, C, 1, &m->mlm_dense_w, err, errlen)))
        return rc;
    if (!m->mlm_dense_w) return BERT_OK; /* no MLM head in this checkpoint */
    if ((rc = load_tensor(m, p, "transform.dense.bias", C, 0, 0, &m->mlm_dense_b, err, errlen)) ||
        (rc =
             load_tensor(m, p, "transform.LayerNorm.weight", C, 0, 0, &m->mlm_ln_w, err, errlen)) ||
        (rc = load_tensor(m, p, "transform.LayerNorm.bias", C, 0, 0, &m->mlm_ln_b, err, errlen)))
        return rc;
    /* transformers ties decoder.weight to the word embeddings and decoder.bias
     * to cls.predictions.bias only when tie_word_embeddings is set; untied, the
     * decoder's own tensors are used (older writers saved no decoder.bias, and
     * then the two biases were the same parameter). */
    const char *first_bias = m->cfg.tie_word_embeddings ? "bias" : "decoder.bias";
    const char *second_bias = m->cfg.tie_word_embeddings ? "decoder.bias" : "bias";
    if ((rc = load_tensor(m, p, first_bias, V, 0, 1, &m->mlm_bias, err, errlen))) return rc;
    if (!m->mlm_bias && (rc = load_tensor(m, p, second_bias, V, 0, 0, &m->mlm_bias, err, errlen)))
        return rc;
    if (m->cfg.tie_word_embeddings) {
        m->mlm_dec_w = m->word_emb;
    } else if ((rc = load_tensor(m, p, "decoder.weight", V, C, 0, &m->mlm_dec_w, err, errlen))) {
        return rc;
    }
    m->has_mlm = 1;
    return BERT_OK;
}

static const char *load_basename(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t start = n;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    static __thread char buf[256];
    snprintf(buf, sizeof(buf), "%.*s", (int)(n - start), dir + start);
    return buf;
}

int bert_compute_parse(const char *name) {
    return strcmp(name, "fp32") == 0   ? BERT_COMPUTE_FP32
           : strcmp(name, "int8") == 0 ? BERT_COMPUTE_INT8
                                       : -1;
}

const char *bert_compute_name(bert_compute c) {
    return c == BERT_COMPUTE_INT8 ? "int8" : "fp32";
}

/* The index in m->owned of the heap copy p, or -1 when p lies in the mapped file. */
static int load_owned_index(const bert_model *m, const float *p) {
    for (int i = 0; i < m->n_owned; i++)
        if (m->owned[i] == p) return i;
    return -1;
}

/* Gives back the memory of float weights a quantized layer no longer reads:
 * a converted copy is freed; a tensor mapped from the file loses its pages
 * (the file stays mapped, so the pages would only come back if read). */
static void load_release(bert_model *m, const float *p, size_t nfloats) {
    const int i = load_owned_index(m, p);
    if (i < 0) {
        load_drop_pages(p, nfloats * sizeof(float));
        return;
    }
    free(m->owned[i]);
    m->owned[i] = NULL;
    m->resident_bytes -= nfloats * sizeof(float);
}

/* int8 only: the MLM decoder (V,C) as bfloat16. Each [MASK] streams the whole
 * decoder once (94 MB in float32 for bert-base), so halving its bytes halves
 * that pass; bf16 keeps 8 bits of mantissa, far finer than int8 would, since
 * the vocabulary logits decide the answer. Its float32 copy is dropped; when
 * the decoder is tied to the word embeddings, the embedding lookup reads the
 * bf16 rows too (a 2^-9 relative change, far below the int8 products' error),
 * so the int8 model holds the vocabulary matrix once, at half its size. */
static int load_decoder_bf16(bert_model *m, char *err, size_t errlen) {
    const size_t V = (size_t)m->cfg.vocab_size, C = (size_t)m->cfg.hidden_size;
    uint16_t *d = malloc(V * C * sizeof(uint16_t));
    if (!d) {
        snprintf(err, errlen, "model.compute int8: out of memory for the bf16 decoder (%zu, %zu)",
                 V, C);
        return BERT_ERR_NOMEM;
    }
    /* A decoder mapped from the file is converted and released a slice at a
     * time, so its float32 pages and the bf16 copy are never resident whole
     * together (that peak was the int8 server's VmHWM); a converted copy can
     * only be freed whole, after. */
    const size_t slice = (size_t)1 << 20; /* floats: 4 MiB */
    const int mapped = load_owned_index(m, m->mlm_dec_w) < 0;
    for (size_t i = 0; i < V * C; i += slice) {
        const size_t n = V * C - i < slice ? V * C - i : slice;
        ops_to_bf16(m->mlm_dec_w + i, d + i, n);
        if (mapped) load_release(m, m->mlm_dec_w + i, n);
    }
    if (!mapped) load_release(m, m->mlm_dec_w, V * C);
    m->mlm_dec_bf16 = d;
    m->qbytes += V * C * sizeof(uint16_t);
    m->qparams += V * C;
    if (m->mlm_dec_w == m->word_emb) {
        m->word_emb_bf16 = d;
        m->word_emb = NULL;
    }
    m->mlm_dec_w = NULL;
    return BERT_OK;
}

/* Moves the six products of every encoder layer onto oneDNN: always for
 * int8; for fp32 where oneDNN has brgemm kernels for this CPU (else the
 * forward pass keeps OpenBLAS). */
static int load_dnnl_linear(bert_model *m, char *err, size_t errlen) {
    const bert_config *c = &m->cfg;
    const int C = c->hidden_size, I = c->intermediate_size;
    const int int8 = m->compute == BERT_COMPUTE_INT8;
    char msg[256];
    int rc = dl_engine_new(int8 ? DL_INT8 : DL_F32, &m->dl, msg, sizeof(msg));
    if (rc == DL_UNSUPPORTED) return BERT_OK;
    if (rc) {
        snprintf(err, errlen, "model.compute %s: %s", bert_compute_name(m->compute), msg);
        return BERT_ERR_NOMEM;
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        bert_layer *L = &m->layers[l];
        struct {
            const float **w, *b;
            int OC, IC;
        } prods[QP_N] = {
            [QP_Q] = {&L->q_w, L->q_b, C, C},
            [QP_K] = {&L->k_w, L->k_b, C, C},
            [QP_V] = {&L->v_w, L->v_b, C, C},
            [QP_ATTN_OUT] = {&L->attn_out_w, L->attn_out_b, C, C},
            [QP_INTER] = {&L->inter_w, L->inter_b, I, C},
            [QP_OUT] = {&L->out_w, L->out_b, C, I},
        };
        for (int p = 0; p < QP_N; p++) {
            if (dl_weight_new(m->dl, *prods[p].w, prods[p].b, prods[p].OC, prods[p].IC, &L->qw[p],
                              msg, sizeof(msg))) {
                snprintf(err, errlen, "model.compute %s: layer %d: %s",
                         bert_compute_name(m->compute), l, msg);
                return BERT_ERR_NOMEM;
            }
            m->qbytes += dl_weight_bytes(L->qw[p]);
            m->qparams += (size_t)prods[p].OC * prods[p].IC + (size_t)prods[p].OC;
            load_release(m, *prods[p].w, (size_t)prods[p].OC * prods[p].IC);
            *prods[p].w = NULL;
        }
    }
    if (int8 && m->has_mlm && (rc = load_decoder_bf16(m, err, errlen))) return rc;
    snprintf(m->kernel, sizeof(m->kernel), "onednn %s", dl_engine_kernel(m->dl));
    return BERT_OK;
}

int bert_model_load(const char *dir, bert_model **out, char *err, size_t errlen) {
    return bert_model_load_opts(dir, NULL, out, err, errlen);
}

int bert_model_load_opts(const char *dir, const bert_load_options *opts, bert_model **out,
                         char *err, size_t errlen) {
    char path[4096];
    char *json = NULL;
    size_t json_len = 0;
    int rc = BERT_ERR_NOMEM;
    *out = NULL;
    bert_model *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return BERT_ERR_NOMEM;
    }
    snprintf(m->name, sizeof(m->name), "%s", load_basename(dir));
    m->compute = opts ? opts->compute : BERT_COMPUTE_FP32;
    snprintf(m->kernel, sizeof(m->kernel), "openblas sgemm");

    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (!(json = load_read_file(path, &json_len, err, errlen))) {
        rc = BERT_ERR_IO;
        goto cleanup;
    }
    if ((rc = bert_config_parse(json, json_len, path, &m->cfg, err, errlen))) goto cleanup;

    rc = ckpt_open(dir, &m->ck, err, errlen);
    if (rc != ST_OK) {
        rc = rc == ST_ERR_IO ? BERT_ERR_IO : rc == ST_ERR_NOMEM ? BERT_ERR_NOMEM : BERT_ERR_FORMAT;
        goto cleanup;
    }
    load_note_dtype(m);

    /* BertForPreTraining/BertForMaskedLM save the encoder under "bert.",
     * a bare BertModel saves it at the top level. */
    const char *prefix =
        ckpt_find(m->ck, "bert.embeddings.word_embeddings.weight", NULL) ? "bert." : "";
    const bert_config *c = &m->cfg;
    const int64_t C = c->hidden_size;
    char p[64];
    snprintf(p, sizeof(p), "%sembeddings.", prefix);
    if ((rc = load_tensor(m, p, "word_embeddings.weight", c->vocab_size, C, 0, &m->word_emb, err,
                          errlen)) ||
        (rc = load_tensor(m, p, "position_embeddings.weight", c->max_position_embeddings, C, 0,
                          &m->pos_emb, err, errlen)) ||
        (rc = load_tensor(m, p, "token_type_embeddings.weight", c->type_vocab_size, C, 0,
                          &m->type_emb, err, errlen)) ||
        (rc = load_tensor(m, p, "LayerNorm.weight", C, 0, 0, &m->emb_ln_w, err, errlen)) ||
        (rc = load_tensor(m, p, "LayerNorm.bias", C, 0, 0, &m->emb_ln_b, err, errlen)))
        goto cleanup;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof(*m->layers));
    if (!m->layers) {
        rc = BERT_ERR_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < c->num_hidden_layers; i++)
        if ((rc = load_layer(m, prefix, i, &m->layers[i], err, errlen))) goto cleanup;
    if ((rc = load_nsp(m, prefix, err, errlen)) || (rc = load_mlm(m, err, errlen))) goto cleanup;
    if ((rc = load_dnnl_linear(m, err, errlen))) goto cleanup;

    if ((rc = tok_load_dir_capped(dir, c->vocab_size, &m->tok, err, errlen)) != TOK_OK) {
        rc = rc == TOK_ERR_IO ? BERT_ERR_IO : BERT_ERR_FORMAT;
        goto cleanup;
    }
    if (tok_vocab_size(m->tok) > c->vocab_size) {
        snprintf(err, errlen,
                 "%s: the tokenizer has %d tokens (vocab.txt or tokenizer.json, with added "
                 "tokens) but config.json 'vocab_size' is %d",
                 dir, tok_vocab_size(m->tok), c->vocab_size);
        rc = BERT_ERR_FORMAT;
        goto cleanup;
    }
    *out = m;
    m = NULL;
    rc = BERT_OK;
cleanup:
    free(json);
    bert_model_free(m);
    return rc;
}

void bert_model_free(bert_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    for (int l = 0; m->layers && l < m->cfg.num_hidden_layers; l++)
        for (int p = 0; p < QP_N; p++)
            dl_weight_free(m->layers[l].qw[p]);
    dl_engine_free(m->dl);
    free(m->mlm_dec_bf16);
    free(m->layers);
    ckpt_close(m->ck);
    tok_free(m->tok);
    free(m);
}

const bert_config *bert_model_config(const bert_model *m) {
    return &m->cfg;
}
const tok_tokenizer *bert_model_tokenizer(const bert_model *m) {
    return m->tok;
}
int bert_model_has_mlm(const bert_model *m) {
    return m->has_mlm;
}
int bert_model_has_nsp(const bert_model *m) {
    return m->has_nsp;
}
const char *bert_model_dtype(const bert_model *m) {
    return m->dtype;
}
size_t bert_model_param_count(const bert_model *m) {
    return m->param_count;
}
const char *bert_model_name(const bert_model *m) {
    return m->name;
}

const char *bert_model_weights_path(const bert_model *m) {
    return ckpt_path(m->ck);
}
const char *bert_model_weights_format(const bert_model *m) {
    return ckpt_format(m->ck);
}
int bert_model_weights_files(const bert_model *m) {
    return ckpt_n_files(m->ck);
}

size_t bert_model_weight_bytes(const bert_model *m) {
    return (m->param_count - m->qparams) * sizeof(float) + m->qbytes;
}

bert_compute bert_model_compute(const bert_model *m) {
    return m->compute;
}

const char *bert_model_kernel(const bert_model *m) {
    return m->kernel;
}
