/* infer: batched forward passes and answer formatting. See infer.h. */
#include "infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "objectives.h"

/* MLM rows turned into vocabulary logits at once: 64 x 30522 floats = 7.8 MB
 * per worker for bert-base, however many positions a batch labels. */
#define INFER_MLM_BLOCK 64

typedef struct infer_worker {
    int idx;
    bert_workspace *ws;
    float *probs;     /* (vocab) */
    int32_t *ids;     /* (max_len) decode scratch */
    int32_t *row_lab; /* (max_len) labels of one input's MLM rows */
    int *top_idx;     /* (max_top_k) */
    float *top_val;   /* (max_top_k) */
    bert_seq_input *seqs;
    int seqs_cap;
} infer_worker;

int64_t infer_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void worker_fini(void *state, void *user) {
    (void)user;
    infer_worker *w = state;
    if (!w) return;
    bert_workspace_free(w->ws);
    free(w->probs);
    free(w->ids);
    free(w->row_lab);
    free(w->top_idx);
    free(w->top_val);
    free(w->seqs);
    free(w);
}

static void *worker_init(int idx, void *user, char *err, size_t errlen) {
    infer_ctx *ctx = user;
    const api_ctx *api = ctx->api;
    infer_worker *w = calloc(1, sizeof(*w));
    if (!w) goto oom;
    w->idx = idx;
    w->ws = bert_workspace_new_threads(ctx->threads > 0 ? ctx->threads : 1);
    w->probs = malloc((size_t)api->vocab_size * sizeof(float));
    w->ids = malloc((size_t)api->max_len * sizeof(int32_t));
    w->row_lab = malloc((size_t)api->max_len * sizeof(int32_t));
    w->top_idx = malloc((size_t)api->cfg->max_top_k * sizeof(int));
    w->top_val = malloc((size_t)api->cfg->max_top_k * sizeof(float));
    if (!w->ws || !w->probs || !w->ids || !w->row_lab || !w->top_idx || !w->top_val) goto oom;
    return w;
oom:
    worker_fini(w, user);
    snprintf(err, errlen, "out of memory for worker scratch");
    return NULL;
}

/* k largest of vals[cand[i]] (or vals[i] when cand is NULL), descending; ties
 * keep the lower candidate index first. Writes candidate indices. */
static int top_k(const float *vals, const int32_t *cand, int n, int k, int *idx, float *val) {
    int have = 0;
    for (int i = 0; i < n; i++) {
        float v = vals[cand ? cand[i] : i];
        if (have == k && !(v > val[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && v > val[j - 1]) {
            val[j] = val[j - 1];
            idx[j] = idx[j - 1];
            j--;
        }
        val[j] = v;
        idx[j] = i;
    }
    return have;
}

static json_t *json_real_or_null(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

/* Why building an answer stopped. */
typedef enum { FMT_OK = 0, FMT_NOMEM = 1, FMT_TOO_LARGE = 2, FMT_GONE = 3 } fmt_status;

/* Answer bytes a prediction adds besides its two strings: the keys, the score
 * and the token id of {"score":..,"token":..,"token_str":"","sequence":""}. */
#define INFER_PRED_OVERHEAD 80

/* One [MASK]'s candidates as the pipeline lists them. *budget is what the
 * answer may still grow by (an estimate, before JSON escaping; finish() checks
 * the real size): building stops with FMT_TOO_LARGE once it is spent, so a
 * request never holds much more than limits.max_answer_bytes. */
static json_t *mask_predictions(infer_worker *w, const api_ctx *api, const api_job *job,
                                const api_input *in, const float *logits, int pos, int single_mask,
                                long *budget, fmt_status *st) {
    int V = api->vocab_size;
    memcpy(w->probs, logits, (size_t)V * sizeof(float));
    obj_softmax_row(w->probs, V);
    int n = top_k(w->probs, job->targets, job->targets ? job->n_targets : V, job->top_k, w->top_idx,
                  w->top_val);
    int32_t pad = tok_specials(api->tok)->pad;
    json_t *list = json_array();
    if (!list) {
        *st = FMT_NOMEM;
        return NULL;
    }
    for (int c = 0; c < n; c++) {
        int32_t id = job->targets ? job->targets[w->top_idx[c]] : w->top_idx[c];
        /* The pipeline decodes the input with this candidate in place and any
         * [PAD] dropped; the other masks stay visible when there are several.
         * transformers repeats that sequence for every candidate, single mask
         * or not, so the answer does too: limits.max_predictions_per_request
         * and the answer budget bound the repetition. */
        int m = 0;
        for (int p = 0; p < in->seq.len; p++) {
            int32_t t = p == pos ? id : in->seq.ids[p];
            if (t != pad) w->ids[m++] = t;
        }
        char *sequence = tok_decode(api->tok, w->ids, m, single_mask, api->cleanup_spaces);
        char *token_str = tok_decode(api->tok, &id, 1, 0, api->cleanup_spaces);
        *budget -= (long)(INFER_PRED_OVERHEAD + (sequence ? strlen(sequence) : 0) +
                          (token_str ? strlen(token_str) : 0));
        json_t *o = json_object();
        if (o) {
            json_object_set_new(o, "score", json_real((double)w->top_val[c]));
            json_object_set_new(o, "token", json_integer(id));
            json_object_set_new(o, "token_str", json_string(token_str ? token_str : ""));
            json_object_set_new(o, "sequence", json_string(sequence ? sequence : ""));
        }
        free(sequence);
        free(token_str);
        if (!o || json_array_append_new(list, o) != 0 || *budget < 0) {
            *st = !o ? FMT_NOMEM : *budget < 0 ? FMT_TOO_LARGE : FMT_NOMEM;
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* first_row: this input's first MLM row of the batch; its n_mlm rows are in
 * mlm_pos order. Logits are computed INFER_MLM_BLOCK rows at a time, so a
 * worker never holds more than that many vocabulary-sized rows. */
static json_t *fill_mask_answer(infer_worker *w, const api_ctx *api, const api_job *job,
                                const api_input *in, int first_row, double *loss, int *n_labelled,
                                long *budget, fmt_status *st) {
    int V = api->vocab_size;
    int32_t mask = tok_specials(api->tok)->mask;
    int single = in->n_masks == 1;
    json_t *per_mask = json_array();
    double loss_sum = 0.0;
    *loss = NAN;
    *n_labelled = 0;
    for (int r0 = 0; r0 < in->n_mlm; r0 += INFER_MLM_BLOCK) {
        int n = in->n_mlm - r0 < INFER_MLM_BLOCK ? in->n_mlm - r0 : INFER_MLM_BLOCK;
        const float *rows = bert_mlm_logits(api->model, w->ws, first_row + r0, n);
        if (!rows) {
            json_decref(per_mask);
            *st = FMT_NOMEM;
            return NULL;
        }
        for (int r = r0; r < r0 + n; r++) {
            int pos = in->mlm_pos[r];
            if (in->seq.ids[pos] != mask) continue;
            json_t *preds = mask_predictions(w, api, job, in, rows + (size_t)(r - r0) * V, pos,
                                             single, budget, st);
            if (!preds) {
                json_decref(per_mask);
                return NULL;
            }
            if (single) {
                json_decref(per_mask);
                per_mask = preds;
            } else {
                json_array_append_new(per_mask, preds);
            }
        }
        if (in->labels) {
            int used = 0;
            for (int r = r0; r < r0 + n; r++)
                w->row_lab[r - r0] = in->labels[in->mlm_pos[r]];
            double block = obj_cross_entropy_mean(rows, w->row_lab, n, V, &used);
            if (used > 0) loss_sum += block * used;
            *n_labelled += used;
        }
    }
    if (in->labels && *n_labelled > 0) *loss = loss_sum / *n_labelled;
    return per_mask;
}

static json_t *nsp_answer(const api_input *in, const float *logits) {
    float p[2] = {logits[0], logits[1]};
    obj_softmax_row(p, 2);
    int label = logits[1] > logits[0] ? 1 : 0;
    json_t *o = json_object();
    json_object_set_new(o, "is_next_probability", json_real(p[0]));
    json_object_set_new(o, "not_next_probability", json_real(p[1]));
    json_object_set_new(o, "logits", json_pack("[f,f]", (double)logits[0], (double)logits[1]));
    json_object_set_new(o, "label", json_string(label == 0 ? "is_next" : "not_next"));
    json_object_set_new(o, "label_id", json_integer(label));
    if (in->nsp_label >= 0) {
        int32_t lab = in->nsp_label;
        int used;
        json_object_set_new(o, "loss",
                            json_real_or_null(obj_cross_entropy_mean(logits, &lab, 1, 2, &used)));
    }
    return o;
}

static void fail_too_large(const api_ctx *api, api_job *job) {
    char msg[300];
    snprintf(msg, sizeof(msg),
             "the answer would be larger than %ld bytes (limits.max_answer_bytes); ask for fewer "
             "predictions per request (fewer inputs or [MASK] tokens, a smaller "
             "parameters.top_k) or shorter inputs",
             api->cfg->max_answer_bytes);
    api_job_fail(job, 413, "answer_too_large", msg);
}

static void fail_gone(api_job *job) {
    /* Nobody reads this: it is for the access log and the metrics. */
    api_job_fail(job, 499, "client_closed",
                 "the client closed the connection before the answer was ready");
}

static int job_gone(api_job *job) {
    return job->gone && job->gone(job);
}

static void finish(const api_ctx *api, api_job *job, json_t *answer) {
    job->body = api_dump(answer, &job->body_len);
    json_decref(answer);
    if (job->body && job->body_len > (size_t)api->cfg->max_answer_bytes) {
        fail_too_large(api, job);
    } else if (job->body) {
        job->status = 200;
        job->err_code = NULL;
    } else {
        api_job_fail(job, 500, "internal", "could not encode the answer");
    }
}

static void format_job(infer_worker *w, const api_ctx *api, api_job *job, int *mlm_row,
                       const float **nsp_rows) {
    json_t *answer = job->batched ? json_array() : NULL;
    if (job->kind == API_NEXT_SENTENCE) {
        for (int i = 0; i < job->n_inputs; i++) {
            json_t *o = nsp_answer(&job->inputs[i], *nsp_rows);
            *nsp_rows += 2;
            if (job->batched)
                json_array_append_new(answer, o);
            else
                answer = o;
        }
        finish(api, job, answer);
        return;
    }
    long budget = api->cfg->max_answer_bytes;
    double loss_sum = 0;
    int labelled = 0;
    json_t *losses = json_array();
    for (int i = 0; i < job->n_inputs; i++) {
        const api_input *in = &job->inputs[i];
        double loss;
        int n_lab;
        fmt_status st = FMT_OK;
        /* An input's predictions are the expensive part of a large answer:
         * stop between inputs when nobody waits for it any more. */
        json_t *o = NULL;
        if (job_gone(job))
            st = FMT_GONE;
        else
            o = fill_mask_answer(w, api, job, in, *mlm_row, &loss, &n_lab, &budget, &st);
        *mlm_row += in->n_mlm;
        if (!o) {
            json_decref(losses);
            json_decref(answer);
            if (st == FMT_TOO_LARGE)
                fail_too_large(api, job);
            else if (st == FMT_GONE)
                fail_gone(job);
            else
                api_job_fail(job, 500, "internal", "out of memory computing the MLM logits");
            return;
        }
        if (n_lab > 0) {
            loss_sum += loss * n_lab;
            labelled += n_lab;
        }
        json_array_append_new(losses, json_real_or_null(loss));
        if (job->batched)
            json_array_append_new(answer, o);
        else
            answer = o;
    }
    if (job->has_labels) {
        /* Mean over every labelled token of the request: what transformers
         * returns for the same inputs padded into one batch. */
        double total = labelled ? loss_sum / labelled : NAN;
        answer = json_pack("{s:o,s:o,s:o,s:i}", "predictions", answer, "loss",
                           json_real_or_null(total), "losses", losses, "labelled_tokens", labelled);
    } else {
        json_decref(losses);
    }
    finish(api, job, answer);
}

typedef struct batch_watch {
    infer_ctx *ctx;
    api_job **jobs;
    int n;
} batch_watch;

/* bert_forward's cancel check: stop when the grace period is over or when
 * every client of the batch has gone (one that still waits keeps it going). */
static int batch_abandoned(void *arg) {
    batch_watch *b = arg;
    if (atomic_load(&b->ctx->aborting)) return 1;
    for (int j = 0; j < b->n; j++)
        if (!job_gone(b->jobs[j])) return 0;
    return 1;
}

static void worker_run(void *state, pool_item **items, int n, void *user) {
    infer_worker *w = state;
    infer_ctx *ctx = user;
    const api_ctx *api = ctx->api;
    int64_t now = infer_now_ns();
    int aborting = atomic_load(&ctx->aborting);
    int live = 0, B = 0, want_nsp = 0;
    long tokens = 0;
    api_job **jobs = (api_job **)items; /* pool_item is the first member */

    for (int j = 0; j < n; j++) {
        api_job *job = jobs[j];
        if (aborting) {
            api_job_fail(job, 503, "shutting_down",
                         "the server is shutting down; retry on another instance");
        } else if (job_gone(job)) {
            fail_gone(job); /* queued work of a client that has gone: not done */
        } else if (now > job->deadline_ns) {
            api_job_fail(job, 504, "timeout",
                         "the request waited longer than the server's request timeout before a "
                         "worker was free; retry later or send smaller batches");
        } else if (api_prepare(api, job)) {
            /* answered (/v1/tokenize) or refused by the parse */
        } else {
            jobs[live++] = job;
            continue;
        }
        job->complete(job);
    }
    for (int j = 0; j < live; j++) {
        B += jobs[j]->n_inputs;
        want_nsp |= jobs[j]->kind == API_NEXT_SENTENCE;
    }
    if (live == 0) return;
    if (B > w->seqs_cap) {
        bert_seq_input *ns = realloc(w->seqs, (size_t)B * sizeof(*ns));
        if (!ns) {
            for (int j = 0; j < live; j++) {
                api_job_fail(jobs[j], 500, "internal", "out of memory");
                jobs[j]->complete(jobs[j]);
            }
            return;
        }
        w->seqs = ns;
        w->seqs_cap = B;
    }
    int b = 0;
    for (int j = 0; j < live; j++)
        for (int i = 0; i < jobs[j]->n_inputs; i++) {
            const api_input *in = &jobs[j]->inputs[i];
            bert_seq_input *s = &w->seqs[b++];
            s->ids = in->seq.ids;
            s->type_ids = in->seq.type_ids;
            s->len = in->seq.len;
            s->mlm_positions = jobs[j]->kind == API_FILL_MASK ? in->mlm_pos : NULL;
            s->n_mlm = jobs[j]->kind == API_FILL_MASK ? in->n_mlm : 0;
            tokens += in->seq.len;
        }

    bert_forward_out out = {0};
    char err[512] = "";
    batch_watch watch = {ctx, jobs, live};
    bert_workspace_set_cancel(w->ws, batch_abandoned, &watch);
    int rc = bert_forward(api->model, w->ws, w->seqs, B, want_nsp, &out, err, sizeof(err));
    bert_workspace_set_cancel(w->ws, NULL, NULL);
    if (rc == BERT_ERR_CANCELLED) {
        int aborting_now = atomic_load(&ctx->aborting);
        log_json(LOG_INFO, "batch cancelled",
                 json_pack("{s:s,s:i,s:i,s:i}", "reason",
                           aborting_now ? "shutting down" : "every client has gone", "worker",
                           w->idx, "requests", live, "sequences", B));
        for (int j = 0; j < live; j++) {
            if (aborting_now)
                api_job_fail(jobs[j], 503, "shutting_down",
                             "the server is shutting down; retry on another instance");
            else
                fail_gone(jobs[j]);
            jobs[j]->complete(jobs[j]);
        }
        return;
    }
    if (rc != BERT_OK) {
        log_json(LOG_ERROR, "forward pass failed",
                 json_pack("{s:s,s:i,s:i}", "error", err, "worker", w->idx, "sequences", B));
        for (int j = 0; j < live; j++) {
            api_job_fail(jobs[j], 500, "internal", "the model failed on this batch");
            jobs[j]->complete(jobs[j]);
        }
        return;
    }
    metrics_observe_batch(B, tokens);
    if (live > 1 || B > 1)
        log_json(LOG_DEBUG, "batch",
                 json_pack("{s:i,s:i,s:i,s:I}", "worker", w->idx, "requests", live, "sequences", B,
                           "tokens", (json_int_t)tokens));

    /* Rows are in batch order: MLM rows only for fill-mask inputs, NSP rows (when
     * computed) for every input. A completed job may be freed at once by the
     * HTTP thread, so nothing below looks back at earlier jobs. */
    int mlm_row = 0;
    int seq_base = 0;
    for (int j = 0; j < live; j++) {
        api_job *job = jobs[j];
        const float *nsp_rows = out.nsp_logits ? out.nsp_logits + (size_t)seq_base * 2 : NULL;
        seq_base += job->n_inputs;
        format_job(w, api, job, &mlm_row, &nsp_rows);
        job->complete(job);
    }
}

pool_callbacks infer_pool_callbacks(infer_ctx *ctx) {
    pool_callbacks cb = {worker_init, worker_run, worker_fini, ctx};
    return cb;
}
