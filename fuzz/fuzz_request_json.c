/* fuzz_request_json: the /v1 request bodies, from bytes to validated work
 * items, without a running server.
 *
 * Input layout: byte 0 picks the route ('f' or anything else with low bits
 * 0: /v1/fill-mask, 1: /v1/next-sentence, 2: /v1/tokenize), the rest is the
 * body, parsed as http.c parses it (json_loadb, duplicate keys refused) and
 * handed to api_parse_fill_mask / api_parse_next_sentence / api_parse_tokenize
 * (whose job answer_render answers).
 * A tiny BertForPreTraining written by transformers (fuzz/Makefile's model
 * rule) supplies the tokenizer and heads; it is loaded once.
 *
 * Accepted jobs then go through the worker exactly as the pool would run
 * them (infer.c's run callback on this thread, batch of one): forward pass,
 * top-k, decoding, losses, answer JSON. The server runs as model.compute
 * int8-checked, with the model loaded a second time as the reference, and
 * the input's length picks model.recheck_logit_gap: 0 (never recheck), 0.05
 * (the tiny random model's near-ties) or 1000 (every input), so the float32
 * second pass is fuzzed too.
 *
 * Oracles: a refusal is a 400/422/500 with a code and a message that
 * api_error_body turns into valid JSON; an accepted job respects the limits
 * in cfg (inputs, masks, top_k, length) and every position and id it hands
 * the worker is inside its sequence and the vocabulary; the worker completes
 * it exactly once with a 200 whose body is JSON in which every prediction
 * has a score in [0, 1], a token in the vocabulary and string token_str and
 * sequence (a decode that is not UTF-8 would drop them), and that says it was
 * checked, with between 0 and n_inputs inputs rechecked (0 and n_inputs at
 * the extreme gaps, but none when a single target leaves nothing to decide). */
#include "answer.h"
#include "api.h"
#include "fuzz_common.h"
#include "infer.h"
#include "log.h"

#include <string.h>

static bert_model *g_model;
static bert_model *g_reference; /* the same checkpoint again: int8-checked's float32 model */
static cfg g_cfg;
static api_ctx g_ctx;
static infer_ctx g_ictx;
static pool_callbacks g_cb;
static void *g_worker;
static int g_completed;
static int g_verbose; /* $FUZZ_VERBOSE: one line per input, to check seeds reach their paths */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    static const char *const rel[] = {"model", "out/model", "fuzz/out/model", NULL};
    char *dir = fuzz_locate("BERT_FUZZ_MODEL", rel);
    if (!dir) abort();
    char err[1024];
    if (bert_model_load(dir, &g_model, err, sizeof(err)) != BERT_OK ||
        bert_model_load(dir, &g_reference, err, sizeof(err)) != BERT_OK) {
        fprintf(stderr, "fuzz_request_json: cannot load %s: %s\n", dir, err);
        abort();
    }
    g_verbose = getenv("FUZZ_VERBOSE") != NULL;
    cfg_defaults(&g_cfg);
    /* Small limits so the fuzzer reaches every "too many" branch. */
    g_cfg.max_inputs_per_request = 4;
    g_cfg.max_masks_per_input = 3;
    g_cfg.max_top_k = 10;
    g_cfg.default_top_k = 5;
    g_cfg.max_sequence_length = 48;
    g_cfg.max_predictions_per_request = 60; /* < 4 inputs x 3 masks x top_k 10 */
    g_cfg.max_answer_bytes = 8192;
    g_cfg.max_tokenize_tokens = 200;
    g_cfg.compute = CFG_COMPUTE_INT8_CHECKED;
    if (api_ctx_init(&g_ctx, g_model, dir, &g_cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_request_json: api_ctx_init: %s\n", err);
        abort();
    }
    api_ctx_set_reference(&g_ctx, g_reference);
    free(dir);
    log_set_level(LOG_ERROR); /* the worker's debug lines would flood the fuzzer's output */
    g_ictx.api = &g_ctx;
    atomic_init(&g_ictx.aborting, 0);
    g_cb = infer_pool_callbacks(&g_ictx);
    g_worker = g_cb.init(0, g_cb.user, err, sizeof(err));
    if (!g_worker) {
        fprintf(stderr, "fuzz_request_json: worker init: %s\n", err);
        abort();
    }
    return 0;
}

static void on_complete(api_job *job) {
    (void)job;
    g_completed++;
}

/* Walks an answer: every object with a "score" is one prediction. */
static void check_answer(json_t *v, int *n_preds) {
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) check_answer(x, n_preds);
        return;
    }
    if (!json_is_object(v)) return;
    json_t *score = json_object_get(v, "score");
    if (score) {
        (*n_preds)++;
        double sc = json_number_value(score);
        FUZZ_CHECK(json_is_number(score) && sc >= 0 && sc <= 1, "score %g", sc);
        json_t *tok = json_object_get(v, "token");
        FUZZ_CHECK(json_is_integer(tok) && json_integer_value(tok) >= 0 &&
                       json_integer_value(tok) < g_ctx.vocab_size,
                   "prediction token");
        FUZZ_CHECK(json_is_string(json_object_get(v, "token_str")), "token_str missing");
        FUZZ_CHECK(json_is_string(json_object_get(v, "sequence")), "sequence missing");
        return;
    }
    json_t *p = json_object_get(v, "is_next_probability");
    if (p) {
        double q = json_number_value(json_object_get(v, "not_next_probability"));
        FUZZ_CHECK(json_number_value(p) >= 0 && json_number_value(p) <= 1 && q >= 0 && q <= 1,
                   "NSP probabilities %g %g", json_number_value(p), q);
        json_int_t l = json_integer_value(json_object_get(v, "label_id"));
        FUZZ_CHECK(l == 0 || l == 1, "label_id %lld", (long long)l);
        return;
    }
    json_t *preds = json_object_get(v, "predictions");
    if (preds) check_answer(preds, n_preds);
}

/* What a pool worker does with a batch of this one job: admit() (deadline,
 * client, parse and tokenization when still due; the actual cost, at most the
 * queued one, or -1 when admit answered the job), then run() if admitted. */
static void worker_turn(api_job *job) {
    const long queued_cost = job->item.cost;
    long cost = g_cb.admit(g_worker, &job->item, g_cb.user);
    FUZZ_CHECK(cost == -1 || (cost >= 0 && cost <= queued_cost), "admit cost %ld (queued %ld)",
               cost, queued_cost);
    if (cost < 0) return;
    pool_item *items[1] = {&job->item};
    g_cb.run(g_worker, items, 1, g_cb.user);
}

static void run_job(api_job *job) {
    job->deadline_ns = infer_now_ns() + 600 * 1000000000LL;
    job->complete = on_complete;
    g_completed = 0;
    worker_turn(job);
    FUZZ_CHECK(g_completed == 1, "job completed %d times", g_completed);
    if (job->status == 413) {
        FUZZ_CHECK(job->err_code && strcmp(job->err_code, "answer_too_large") == 0, "413 %s",
                   job->err_code ? job->err_code : "(null)");
        return;
    }
    FUZZ_CHECK(job->status == 200, "worker answered %d: %.*s", job->status, (int)job->body_len,
               job->body ? job->body : "");
    json_error_t je;
    json_t *v = json_loadb(job->body, job->body_len, 0, &je);
    FUZZ_CHECK(v != NULL, "answer is not JSON: %s", je.text);
    int n_preds = 0;
    check_answer(v, &n_preds);
    FUZZ_CHECK(job->checked && job->rechecked >= 0 && job->rechecked <= job->n_inputs,
               "checked %d, %d of %d inputs rechecked", job->checked, job->rechecked,
               job->n_inputs);
    if (g_cfg.recheck_logit_gap == 0)
        FUZZ_CHECK(job->rechecked == 0, "%d rechecked with gap 0", job->rechecked);
    /* one target is no decision: nothing to recheck */
    if (g_cfg.recheck_logit_gap > 100 && !(job->targets && job->n_targets == 1))
        FUZZ_CHECK(job->rechecked == job->n_inputs, "%d of %d rechecked with gap %g",
                   job->rechecked, job->n_inputs, g_cfg.recheck_logit_gap);
    if (job->kind == API_FILL_MASK) {
        int masks = 0;
        for (int i = 0; i < job->n_inputs; i++)
            masks += job->inputs[i].n_masks;
        FUZZ_CHECK(n_preds == masks * job->top_k, "%d predictions for %d masks x top_k %d", n_preds,
                   masks, job->top_k);
    }
    json_decref(v);
}

static void check_error(const api_error *e) {
    FUZZ_CHECK(e->status == 400 || e->status == 413 || e->status == 422 || e->status == 500,
               "status %d", e->status);
    FUZZ_CHECK(e->code != NULL && e->code[0] != 0, "no error code");
    FUZZ_CHECK(fuzz_terminated(e->message, sizeof(e->message)) && e->message[0] != 0,
               "empty or unterminated message");
    size_t len = 0;
    char *body = answer_error_body(e->code, e->message, &len);
    FUZZ_CHECK(body != NULL, "api_error_body returned NULL");
    json_error_t je;
    json_t *v = json_loadb(body, len, 0, &je);
    FUZZ_CHECK(json_is_object(v), "error body is not a JSON object: %s", body);
    json_decref(v);
    free(body);
}

static void check_job(const api_job *job, api_kind kind) {
    int vocab = g_ctx.vocab_size;
    FUZZ_CHECK(job->kind == kind, "kind %d", (int)job->kind);
    FUZZ_CHECK(job->n_inputs >= 1 && job->n_inputs <= g_cfg.max_inputs_per_request, "n_inputs %d",
               job->n_inputs);
    long tokens = 0;
    for (int i = 0; i < job->n_inputs; i++) {
        const api_input *in = &job->inputs[i];
        const tok_sequence *s = &in->seq;
        FUZZ_CHECK(s->len >= 2 && s->len <= g_ctx.max_len, "input %d: %d tokens (max %d)", i,
                   s->len, g_ctx.max_len);
        tokens += s->len;
        for (int p = 0; p < s->len; p++)
            FUZZ_CHECK(s->ids[p] >= 0 && s->ids[p] < vocab, "input %d: id %d", i, s->ids[p]);
        if (kind == API_FILL_MASK) {
            FUZZ_CHECK(in->n_masks >= 1 && in->n_masks <= g_cfg.max_masks_per_input,
                       "input %d: %d masks", i, in->n_masks);
            FUZZ_CHECK(in->n_mlm >= in->n_masks && in->n_mlm <= s->len, "input %d: n_mlm %d", i,
                       in->n_mlm);
            for (int k = 0; k < in->n_mlm; k++) {
                FUZZ_CHECK(in->mlm_pos[k] >= 0 && in->mlm_pos[k] < s->len,
                           "input %d: mlm position %d", i, in->mlm_pos[k]);
                FUZZ_CHECK(k == 0 || in->mlm_pos[k] > in->mlm_pos[k - 1],
                           "input %d: mlm positions not ascending", i);
            }
            if (in->labels)
                for (int p = 0; p < s->len; p++)
                    FUZZ_CHECK(in->labels[p] == -100 ||
                                   (in->labels[p] >= 0 && in->labels[p] < vocab),
                               "input %d: label %d", i, in->labels[p]);
        } else {
            FUZZ_CHECK(in->nsp_label >= -1 && in->nsp_label <= 1, "nsp label %d", in->nsp_label);
        }
    }
    FUZZ_CHECK(tokens == job->tokens, "tokens %ld, inputs hold %ld", job->tokens, tokens);
    if (kind == API_FILL_MASK) {
        FUZZ_CHECK(job->predictions <= g_cfg.max_predictions_per_request, "%ld predictions",
                   job->predictions);
        int max_k = g_cfg.max_top_k < vocab ? g_cfg.max_top_k : vocab;
        FUZZ_CHECK(job->top_k >= 1 && job->top_k <= max_k, "top_k %d", job->top_k);
        if (job->targets) {
            FUZZ_CHECK(job->n_targets >= 1 && job->top_k <= job->n_targets, "%d targets, top_k %d",
                       job->n_targets, job->top_k);
            for (int t = 0; t < job->n_targets; t++)
                FUZZ_CHECK(job->targets[t] >= 0 && job->targets[t] < vocab, "target id %d",
                           job->targets[t]);
        }
    }
}

/* The server's own path for the same request: api_defer on the HTTP thread,
 * admit (parse or tokenize) and run on a worker. Must answer exactly as the direct
 * calls did: status and body. */
static void check_deferred(api_kind kind, json_t *req, int status, const char *body, size_t len) {
    api_job *job = NULL;
    api_error e;
    memset(&e, 0, sizeof(e));
    FUZZ_CHECK(api_defer(&g_ctx, kind, req, 0, &job, &e) == 0 && job != NULL, "api_defer: %s",
               e.message);
    FUZZ_CHECK(job->item.cost >= 1, "cost %ld", job->item.cost);
    job->deadline_ns = infer_now_ns() + 600 * 1000000000LL;
    job->complete = on_complete;
    g_completed = 0;
    worker_turn(job);
    FUZZ_CHECK(g_completed == 1, "deferred job completed %d times", g_completed);
    FUZZ_CHECK(job->status == status, "deferred %d, direct %d", job->status, status);
    if (kind != API_TOKENIZE && job->status == 200)
        FUZZ_CHECK(job->tokens <= job->item.cost, "%ld tokens over the cost bound %ld", job->tokens,
                   job->item.cost);
    FUZZ_CHECK(job->body && job->body_len == len && memcmp(job->body, body, len) == 0,
               "deferred body differs");
    api_job_free(job);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int route = data[0] == 'f' ? 0 : data[0] == 'n' ? 1 : data[0] == 't' ? 2 : data[0] % 3;
    static const double gaps[3] = {0, 0.05, 1000};
    g_cfg.recheck_logit_gap = gaps[size % 3];
    /* Exact-size body, as libmicrohttpd hands it over: not NUL-terminated. */
    size_t blen = size - 1;
    char *body = malloc(blen ? blen : 1);
    if (!body) return 0;
    memcpy(body, data + 1, blen);
    json_error_t je;
    json_t *req = json_loadb(
        body, blen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
    free(body);
    if (!req) { /* http.c answers 400 before any api_* call */
        if (g_verbose) fprintf(stderr, "not JSON: %s\n", je.text);
        return 0;
    }

    api_error e;
    memset(&e, 0, sizeof(e));
    if (route == 2) {
        size_t len = 0;
        long tokens = -1;
        api_job *tj = NULL;
        char *out = NULL;
        if (api_parse_tokenize(&g_ctx, req, &tj, &tokens, &e) == 0) {
            answer_render(&g_ctx, tj);
            if (tj->status == 200) {
                out = tj->body;
                len = tj->body_len;
                tj->body = NULL;
            } else {
                e.status = tj->status;
                e.code = tj->err_code;
                json_t *eb = json_loads(tj->body, 0, NULL);
                snprintf(
                    e.message, sizeof(e.message), "%s",
                    json_string_value(json_object_get(json_object_get(eb, "error"), "message")));
                json_decref(eb);
            }
            api_job_free(tj);
        }
        if (g_verbose) fprintf(stderr, "tokenize: %s\n", out ? "ok" : e.code);
        if (!out) {
            check_error(&e);
            char *eb = answer_error_body(e.code, e.message, &len);
            check_deferred(API_TOKENIZE, req, e.status, eb, len);
            free(eb);
        } else {
            FUZZ_CHECK(tokens >= 0 && tokens <= g_cfg.max_tokenize_tokens, "tokens %ld", tokens);
            FUZZ_CHECK(len <= (size_t)g_cfg.max_answer_bytes, "answer of %zu bytes", len);
            json_t *v = json_loadb(out, len, 0, &je);
            FUZZ_CHECK(v != NULL, "tokenize answer is not JSON: %s", je.text);
            json_decref(v);
            check_deferred(API_TOKENIZE, req, 200, out, len);
            free(out);
        }
    } else {
        api_job *job = NULL;
        api_kind kind = route == 0 ? API_FILL_MASK : API_NEXT_SENTENCE;
        int rc = kind == API_FILL_MASK ? api_parse_fill_mask(&g_ctx, req, &job, &e)
                                       : api_parse_next_sentence(&g_ctx, req, &job, &e);
        if (g_verbose)
            fprintf(stderr, "%s: %s\n", kind == API_FILL_MASK ? "fill-mask" : "next-sentence",
                    rc ? e.code : "ok");
        if (rc != 0) {
            FUZZ_CHECK(job == NULL, "refused request returned a job");
            check_error(&e);
            size_t len = 0;
            char *eb = answer_error_body(e.code, e.message, &len);
            check_deferred(kind, req, e.status, eb, len);
            free(eb);
        } else {
            FUZZ_CHECK(job != NULL, "accepted request without a job");
            check_job(job, kind);
            run_job(job);
            check_deferred(kind, req, job->status, job->body, job->body_len);
            api_job_free(job);
        }
    }
    json_decref(req);
    return 0;
}
