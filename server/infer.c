/* infer: deadlines, batching, cancellation and the forward pass. See infer.h. */
#include "infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "answer.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "objectives.h"
#include "score.h"

/* MLM rows turned into vocabulary logits at once: 64 x 30522 floats = 7.8 MB
 * per worker for bert-base, however many positions a batch labels. */
#define INFER_MLM_BLOCK 64

/* The sequences of one forward pass, and the input and job each comes from. */
typedef struct infer_batch {
    bert_seq_input *seqs;
    api_input **in;
    api_job **job;
} infer_batch;

typedef struct infer_worker {
    int idx;
    bert_workspace *ws;
    float *probs; /* (vocab) */
    int *top_idx; /* (max_top_k) */
    int seqs_cap; /* entries of each array below */
    infer_batch batch;
    /* Per sequence of the pass at hand (mlm_numbers): its next [MASK], the
     * sum of its label losses and its closest decision (the gap between its
     * two best logits). */
    int *next_mask;
    double *loss_sum;
    float *gap;
    /* model.compute int8-checked (api->reference set): the near-ties answered
     * again in float32, and the jobs that wait for that second pass. */
    infer_batch recheck;
    api_job **held;
} infer_worker;

static void batch_free(infer_batch *b) {
    free(b->seqs);
    free(b->in);
    free(b->job);
}

int64_t infer_now_ns(void) {
    return clock_now_ns();
}

static void worker_fini(void *state, void *user) {
    (void)user;
    infer_worker *w = state;
    if (!w) return;
    bert_workspace_free(w->ws);
    free(w->probs);
    free(w->top_idx);
    batch_free(&w->batch);
    batch_free(&w->recheck);
    free(w->next_mask);
    free(w->loss_sum);
    free(w->gap);
    free(w->held);
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
    w->top_idx = malloc((size_t)api->cfg->max_top_k * sizeof(int));
    if (!w->ws || !w->probs || !w->top_idx) goto oom;
    return w;
oom:
    worker_fini(w, user);
    snprintf(err, errlen, "out of memory for worker scratch");
    return NULL;
}

/* One [MASK] row's candidates: softmax over the vocabulary, then the top_k of
 * the targets (or of the whole vocabulary) into ids/scores. Returns how close
 * the decision was: the best candidate's logit minus the second's (INFINITY
 * when there is one candidate), what int8-checked compares with
 * model.recheck_logit_gap; with top_k 1 that takes a second scan, made only
 * under int8-checked (INFINITY otherwise). */
static float mask_top_k(infer_worker *w, const api_ctx *api, const api_job *job,
                        const float *logits, int32_t *ids, float *scores) {
    int V = api->vocab_size, n_cand = job->targets ? job->n_targets : V;
    memcpy(w->probs, logits, (size_t)V * sizeof(float));
    obj_softmax_row(w->probs, V);
    int n = obj_top_k(w->probs, job->targets, n_cand, job->top_k, w->top_idx, scores);
    /* n == top_k: the parse caps top_k at the vocabulary and at the targets. */
    for (int c = 0; c < n; c++)
        ids[c] = job->targets ? job->targets[w->top_idx[c]] : w->top_idx[c];
    if (n >= 2) return logits[ids[0]] - logits[ids[1]];
    if (!api->reference) return INFINITY; /* only int8-checked reads the gap */
    int two[2];
    float p[2];
    if (obj_top_k(w->probs, job->targets, n_cand, 2, two, p) < 2) return INFINITY;
    return job->targets ? logits[job->targets[two[0]]] - logits[job->targets[two[1]]]
                        : logits[two[0]] - logits[two[1]];
}

/* One next-sentence input's numbers; returns how close the decision was
 * (|is next - random| in logits, as mask_top_k). */
static float nsp_input(api_input *in, const float *logits) {
    in->nsp_logits[0] = logits[0];
    in->nsp_logits[1] = logits[1];
    in->loss = NAN;
    if (in->nsp_label >= 0) {
        int32_t lab = in->nsp_label;
        int used;
        in->loss = obj_cross_entropy_mean(logits, &lab, 1, 2, &used);
    }
    return fabsf(logits[0] - logits[1]);
}

static int job_gone(api_job *job) {
    return job->gone && job->gone(job);
}

/* answer_render, timed as the job's serialization. */
static void render_timed(const api_ctx *api, api_job *job) {
    int64_t t0 = clock_now_ns();
    answer_render(api, job);
    job->serialize_ns = clock_now_ns() - t0;
}

/* Room for the numbers of a fill-mask input: top_k per [MASK] (a second pass
 * overwrites the first's in place), no losses yet. Returns 0, or -1 when
 * memory runs out. */
static int fill_mask_reset(api_input *in, int top_k, int *next_mask, double *loss_sum) {
    const size_t n = (size_t)in->n_masks * (size_t)top_k;
    if (!in->top_ids) in->top_ids = malloc(n * sizeof(int32_t));
    if (!in->top_scores) in->top_scores = malloc(n * sizeof(float));
    in->loss = NAN;
    in->n_labelled = 0;
    *next_mask = 0;
    *loss_sum = 0.0;
    return in->top_ids && in->top_scores ? 0 : -1;
}

/* Row `local` of fill-mask input in: its [MASK]'s top-k (when it is the next
 * one) and its label's loss. */
static void mlm_row_numbers(infer_worker *w, const api_ctx *api, const api_job *job, api_input *in,
                            int local, const float *logits, int *next_mask, double *loss_sum,
                            float *gap) {
    const int k = job->top_k;
    if (*next_mask < in->n_masks && in->mask_rows[*next_mask] == local) {
        float g = mask_top_k(w, api, job, logits, in->top_ids + (size_t)*next_mask * k,
                             in->top_scores + (size_t)*next_mask * k);
        *gap = g < *gap ? g : *gap;
        (*next_mask)++;
    }
    if (in->labels) {
        int32_t lab = in->labels[in->mlm_pos[local]];
        int used = 0;
        double loss = obj_cross_entropy_mean(logits, &lab, 1, api->vocab_size, &used);
        if (used) {
            *loss_sum += loss;
            in->n_labelled++;
        }
    }
}

/* The fill-mask numbers of the B sequences of batch, the last forward of
 * model on w->ws (other kinds than fill-mask have no MLM rows and are passed
 * over): top-k per [MASK], the mean loss over labels, and
 * gap[b], the smallest of its [MASK]s' (mask_top_k; INFINITY without one).
 * Logits are computed INFER_MLM_BLOCK rows at a time across inputs, so the
 * decoder (vocab x hidden, the largest matrix) is read once per block, not
 * once per input, and a worker never holds more than that many
 * vocabulary-sized rows. A job whose client has gone (checked at each of its
 * inputs) or for which memory runs out is answered with that error here and
 * its other rows are passed over. */
static void mlm_numbers(infer_worker *w, const api_ctx *api, const bert_model *model,
                        const infer_batch *batch, int B, float *gap) {
    api_input *const *ins = batch->in;
    api_job *const *jobs = batch->job;
    const int V = api->vocab_size;
    int n_rows = 0;
    for (int b = 0; b < B; b++) {
        gap[b] = INFINITY;
        if (jobs[b]->kind != API_FILL_MASK) continue;
        n_rows += ins[b]->n_mlm;
        if (!jobs[b]->err_code &&
            fill_mask_reset(ins[b], jobs[b]->top_k, &w->next_mask[b], &w->loss_sum[b]))
            answer_fail(jobs[b], ERR_INTERNAL, "out of memory computing the MLM logits");
    }
    int b = 0, local = 0; /* row r of the batch is row `local` of sequence b */
    for (int r0 = 0; r0 < n_rows; r0 += INFER_MLM_BLOCK) {
        const int n = n_rows - r0 < INFER_MLM_BLOCK ? n_rows - r0 : INFER_MLM_BLOCK;
        const float *logits = bert_mlm_logits(model, w->ws, r0, n);
        for (int r = r0; r < r0 + n; r++, local++) {
            while (jobs[b]->kind != API_FILL_MASK || local == ins[b]->n_mlm)
                b++, local = 0;
            api_job *job = jobs[b];
            if (job->err_code) continue;
            /* Stop between inputs when nobody waits for the answer any more. */
            if (local == 0 && job_gone(job))
                answer_fail_gone(job);
            else if (!logits)
                answer_fail(job, ERR_INTERNAL, "out of memory computing the MLM logits");
            else
                mlm_row_numbers(w, api, job, ins[b], local, logits + (size_t)(r - r0) * V,
                                &w->next_mask[b], &w->loss_sum[b], &gap[b]);
        }
    }
    for (b = 0; b < B; b++)
        if (jobs[b]->kind == API_FILL_MASK && !jobs[b]->err_code && ins[b]->n_labelled > 0)
            ins[b]->loss = w->loss_sum[b] / ins[b]->n_labelled;
}

/* A job's answer from its numbers, unless it was answered with an error
 * already, then its completion. inference_ns: its forward passes and its
 * numbers. */
static void answer_job(const api_ctx *api, api_job *job, int64_t inference_ns) {
    if (!job->err_code) render_timed(api, job);
    job->inference_ns = inference_ns - job->serialize_ns;
    job->complete(job);
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

static void fail_all(api_job **jobs, int n, errcode err, const char *message) {
    for (int j = 0; j < n; j++) {
        answer_fail(jobs[j], err, message);
        jobs[j]->complete(jobs[j]);
    }
}

/* /v1/score: each input's pseudo-log-likelihood (core/score.c), one input at
 * a time on this worker's workspace, in sub-batches of at most
 * workers.batch_max_tokens tokens. It stops when the client goes or the
 * server aborts, as a batch does; then answers the job. */
static void score_job(infer_worker *w, infer_ctx *ctx, api_job *job) {
    const api_ctx *api = ctx->api;
    int32_t mask_id = tok_specials(api->tok)->mask;
    batch_watch watch = {ctx, &job, 1};
    uint8_t *scored = NULL;
    char err[512] = "";
    int rc = BERT_OK;
    long copies = 0, tokens = 0;
    bert_workspace_set_cancel(w->ws, batch_abandoned, &watch);
    for (int i = 0; i < job->n_inputs && rc == BERT_OK; i++) {
        api_input *in = &job->inputs[i];
        const tok_sequence *s = &in->seq;
        free(scored);
        scored = malloc((size_t)s->len);
        in->logprob = malloc(sizeof(double) * (size_t)s->len);
        if (!scored || !in->logprob) {
            rc = BERT_ERR_NOMEM;
            break;
        }
        int n = 0;
        for (int p = 0; p < s->len; p++) {
            scored[p] = s->source[p] >= 0; /* word pieces, not [CLS]/[SEP] */
            n += scored[p];
        }
        rc = score_pll(api->model, w->ws, s->ids, s->type_ids, s->len, scored, mask_id,
                       api->cfg->batch_max_tokens, in->logprob, &in->pll, err, sizeof(err));
        copies += n;
        tokens += (long)n * s->len;
    }
    bert_workspace_set_cancel(w->ws, NULL, NULL);
    free(scored);
    if (rc == BERT_ERR_CANCELLED) {
        log_json(LOG_INFO, "batch cancelled",
                 json_pack("{s:s,s:s,s:i,s:I}", "reason",
                           atomic_load(&ctx->aborting) ? "shutting down" : "every client has gone",
                           "route", "/v1/score", "worker", w->idx, "word_pieces",
                           (json_int_t)copies));
        if (atomic_load(&ctx->aborting))
            answer_fail(job, ERR_SHUTTING_DOWN,
                        "the server is shutting down; retry on another instance");
        else
            answer_fail_gone(job);
        return;
    }
    if (rc == BERT_ERR_NO_HEAD) {
        answer_fail(job, ERR_HEAD_UNAVAILABLE,
                    "this model has no masked-LM head (cls.predictions); score is not available");
        return;
    }
    if (rc != BERT_OK) {
        log_json(LOG_ERROR, "scoring failed",
                 json_pack("{s:s,s:i}", "error", err[0] ? err : "out of memory", "worker", w->idx));
        answer_fail(job, ERR_INTERNAL, "the model failed on this request");
        return;
    }
    metrics_observe_batch((int)copies, tokens);
    render_timed(api, job);
}

/* api_prepare (validate + tokenize), timed as the job's tokenization. */
static int api_prepare_timed(const api_ctx *api, api_job *job) {
    int64_t t0 = clock_now_ns();
    int rc = api_prepare(api, job);
    job->tokenize_ns = clock_now_ns() - t0;
    return rc;
}

/* pool admit(): a taken job is answered now when the server is shutting
 * down, its client has gone, its deadline has passed or the parse refuses it
 * (-1); otherwise it is tokenized and its actual cost returned: its tokens
 * for a forward pass, its queued bound for the kinds that run on their own. */
static long worker_admit(void *state, pool_item *item, void *user) {
    (void)state;
    infer_ctx *ctx = user;
    api_job *job = (api_job *)item; /* pool_item is the first member */
    job->started_ns = infer_now_ns();
    if (atomic_load(&ctx->aborting)) {
        answer_fail(job, ERR_SHUTTING_DOWN,
                    "the server is shutting down; retry on another instance");
    } else if (job_gone(job)) {
        answer_fail_gone(job); /* queued work of a client that has gone: not done */
    } else if (job->started_ns > job->deadline_ns) {
        answer_fail(job, ERR_TIMEOUT,
                    "the request waited longer than the server's request timeout before a "
                    "worker was free; retry later or send smaller batches");
    } else if (api_prepare_timed(ctx->api, job)) {
        /* refused by the parse */
    } else {
        int forward = job->kind == API_FILL_MASK || job->kind == API_NEXT_SENTENCE;
        return forward && job->tokens < item->cost ? job->tokens : item->cost;
    }
    job->complete(job);
    return -1;
}

/* The admitted jobs that need a forward pass, moved to the front of jobs[];
 * the others are answered here: /v1/tokenize and /v1/decode need no forward
 * pass, /v1/score runs its own (n masked copies per input). */
static int answer_solo_jobs(infer_worker *w, infer_ctx *ctx, api_job **jobs, int live) {
    const api_ctx *api = ctx->api;
    int fwd = 0;
    for (int j = 0; j < live; j++) {
        if (jobs[j]->kind == API_TOKENIZE || jobs[j]->kind == API_DECODE) {
            render_timed(api, jobs[j]);
            jobs[j]->complete(jobs[j]);
        } else if (jobs[j]->kind == API_SCORE) {
            int64_t t0 = clock_now_ns();
            score_job(w, ctx, jobs[j]);
            jobs[j]->inference_ns = clock_now_ns() - t0 - jobs[j]->serialize_ns;
            jobs[j]->complete(jobs[j]);
        } else {
            jobs[fwd++] = jobs[j];
        }
    }
    return fwd;
}

/* Room for B sequences in each of the worker's batch arrays. Returns 0, or
 * -1 when memory runs out (the arrays that grew keep their new size). */
static int worker_reserve(infer_worker *w, int B) {
    if (B <= w->seqs_cap) return 0;
    struct {
        void **p;
        size_t elem;
    } arrays[] = {
        {(void **)&w->batch.seqs, sizeof(bert_seq_input)},
        {(void **)&w->batch.in, sizeof(api_input *)},
        {(void **)&w->batch.job, sizeof(api_job *)},
        {(void **)&w->recheck.seqs, sizeof(bert_seq_input)},
        {(void **)&w->recheck.in, sizeof(api_input *)},
        {(void **)&w->recheck.job, sizeof(api_job *)},
        {(void **)&w->next_mask, sizeof(int)},
        {(void **)&w->loss_sum, sizeof(double)},
        {(void **)&w->gap, sizeof(float)},
        {(void **)&w->held, sizeof(api_job *)},
    };
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        void *np = realloc(*arrays[i].p, (size_t)B * arrays[i].elem);
        if (!np) return -1;
        *arrays[i].p = np;
    }
    w->seqs_cap = B;
    return 0;
}

/* Input in of job as sequence b of batch. */
static void batch_set(infer_batch *batch, int b, api_job *job, api_input *in) {
    const int fill = job->kind == API_FILL_MASK;
    batch->seqs[b] = (bert_seq_input){.ids = in->seq.ids,
                                      .type_ids = in->seq.type_ids,
                                      .len = in->seq.len,
                                      .mlm_positions = fill ? in->mlm_pos : NULL,
                                      .n_mlm = fill ? in->n_mlm : 0};
    batch->in[b] = in;
    batch->job[b] = job;
}

/* The live jobs' inputs as one batch in w->batch, in job order; returns the
 * sequence count, or -1 when memory runs out. */
static int gather_batch(infer_worker *w, api_job **jobs, int live) {
    int B = 0;
    for (int j = 0; j < live; j++)
        B += jobs[j]->n_inputs;
    if (worker_reserve(w, B)) return -1;
    int b = 0;
    for (int j = 0; j < live; j++)
        for (int i = 0; i < jobs[j]->n_inputs; i++)
            batch_set(&w->batch, b++, jobs[j], &jobs[j]->inputs[i]);
    return B;
}

/* A forward pass over seqs for jobs, with the cancel check of batch_abandoned.
 * On failure every job is answered (client_closed, shutting_down or internal)
 * and completed, and nonzero returned. */
static int forward_jobs(infer_worker *w, infer_ctx *ctx, const bert_model *model, api_job **jobs,
                        int n_jobs, const bert_seq_input *seqs, int B, bert_forward_out *out,
                        int64_t *forward_ns) {
    int want_nsp = 0;
    for (int j = 0; j < n_jobs; j++)
        want_nsp |= jobs[j]->kind == API_NEXT_SENTENCE;
    char err[512] = "";
    batch_watch watch = {ctx, jobs, n_jobs};
    bert_workspace_set_cancel(w->ws, batch_abandoned, &watch);
    int64_t t_fwd = clock_now_ns();
    int rc = bert_forward(model, w->ws, seqs, B, want_nsp, out, err, sizeof(err));
    *forward_ns = clock_now_ns() - t_fwd;
    bert_workspace_set_cancel(w->ws, NULL, NULL);
    if (rc == BERT_ERR_CANCELLED) {
        int aborting_now = atomic_load(&ctx->aborting);
        log_json(LOG_INFO, "batch cancelled",
                 json_pack("{s:s,s:i,s:i,s:i}", "reason",
                           aborting_now ? "shutting down" : "every client has gone", "worker",
                           w->idx, "requests", n_jobs, "sequences", B));
        if (aborting_now)
            fail_all(jobs, n_jobs, ERR_SHUTTING_DOWN,
                     "the server is shutting down; retry on another instance");
        else
            for (int j = 0; j < n_jobs; j++) {
                answer_fail_gone(jobs[j]);
                jobs[j]->complete(jobs[j]);
            }
        return rc;
    }
    if (rc != BERT_OK) {
        log_json(LOG_ERROR, "forward pass failed",
                 json_pack("{s:s,s:i,s:i}", "error", err, "worker", w->idx, "sequences", B));
        fail_all(jobs, n_jobs, ERR_INTERNAL, "the model failed on this batch");
    }
    return rc;
}

/* model.compute int8-checked: appends job's inputs whose gap is below
 * model.recheck_logit_gap to w->recheck (from sequence *R);
 * returns how many it added. */
static int collect_near_ties(infer_worker *w, const api_ctx *api, api_job *job, const float *gap,
                             int *R) {
    int added = 0;
    for (int i = 0; i < job->n_inputs; i++) {
        if (!(gap[i] < api->cfg->recheck_logit_gap)) continue;
        batch_set(&w->recheck, (*R)++, job, &job->inputs[i]);
        added++;
    }
    return added;
}

/* The float32 pass of int8-checked: the R near-ties in w->recheck through
 * api->reference, their numbers replacing int8's, then the answers of the
 * n_held jobs in w->held they belong to (each job's inference_ns holds its
 * int8 pass). */
static void recheck_near_ties(infer_worker *w, infer_ctx *ctx, int n_held, int R) {
    const api_ctx *api = ctx->api;
    bert_forward_out out = {0};
    int64_t forward_ns;
    const infer_batch *re = &w->recheck;
    if (forward_jobs(w, ctx, api->reference, w->held, n_held, re->seqs, R, &out, &forward_ns))
        return;
    long tokens = 0;
    for (int r = 0; r < R; r++)
        tokens += re->seqs[r].len;
    metrics_observe_batch(R, tokens);
    int64_t t0 = clock_now_ns();
    mlm_numbers(w, api, api->reference, re, R, w->gap);
    for (int r = 0; r < R; r++)
        if (re->job[r]->kind == API_NEXT_SENTENCE)
            nsp_input(re->in[r], out.nsp_logits + (size_t)r * 2);
    const int64_t numbers_ns = clock_now_ns() - t0;
    for (int j = 0; j < n_held; j++)
        answer_job(api, w->held[j], w->held[j]->inference_ns + forward_ns + numbers_ns);
}

static void worker_run(void *state, pool_item **items, int n, void *user) {
    infer_worker *w = state;
    infer_ctx *ctx = user;
    const api_ctx *api = ctx->api;
    api_job **jobs = (api_job **)items; /* pool_item is the first member */
    int live = answer_solo_jobs(w, ctx, jobs, n);
    if (live == 0) return;
    long tokens = 0;
    for (int j = 0; j < live; j++)
        tokens += jobs[j]->tokens;
    int B = gather_batch(w, jobs, live);
    if (B < 0) {
        fail_all(jobs, live, ERR_INTERNAL, "out of memory");
        return;
    }
    bert_forward_out out = {0};
    int64_t forward_ns;
    if (forward_jobs(w, ctx, api->model, jobs, live, w->batch.seqs, B, &out, &forward_ns)) return;
    metrics_observe_batch(B, tokens);
    if (live > 1 || B > 1)
        log_json(LOG_DEBUG, "batch",
                 json_pack("{s:i,s:i,s:i,s:I}", "worker", w->idx, "requests", live, "sequences", B,
                           "tokens", (json_int_t)tokens));

    /* Every job's numbers, then its answer. The batch's forward pass and its
     * MLM numbers count whole for each job (each waited for all of it). A
     * completed job may be freed at once by the HTTP thread, so nothing below
     * looks back at earlier jobs but the held ones, which are not completed. */
    int64_t t0 = clock_now_ns();
    mlm_numbers(w, api, api->model, &w->batch, B, w->gap);
    for (int b = 0; b < B; b++) /* NSP rows (when computed) are there for every input */
        if (w->batch.job[b]->kind == API_NEXT_SENTENCE)
            w->gap[b] = nsp_input(w->batch.in[b], out.nsp_logits + (size_t)b * 2);
    const int64_t job_ns = forward_ns + (clock_now_ns() - t0);
    int seq_base = 0, n_held = 0, R = 0;
    for (int j = 0; j < live; j++) {
        api_job *job = jobs[j];
        const float *gap = w->gap + seq_base;
        seq_base += job->n_inputs;
        if (!job->err_code && api->reference) {
            job->checked = 1;
            job->rechecked = collect_near_ties(w, api, job, gap, &R);
            metrics_observe_checked(job->n_inputs, job->rechecked);
            if (job->rechecked > 0) {
                job->inference_ns = job_ns; /* so far: recheck_near_ties adds its own */
                w->held[n_held++] = job;
                continue;
            }
        }
        answer_job(api, job, job_ns);
    }
    if (n_held > 0) recheck_near_ties(w, ctx, n_held, R);
}

pool_callbacks infer_pool_callbacks(infer_ctx *ctx) {
    pool_callbacks cb = {worker_init, worker_run, worker_fini, worker_admit, ctx};
    return cb;
}
