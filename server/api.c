/* api: request validation and tokenization for the /v1 routes. See api.h. */
#include "api.h"

#include "answer.h"
#include "objectives.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A request may name at most this many targets: each is a vocabulary lookup
 * or a tokenization on the worker parsing the request. */
#define API_MAX_TARGETS 4096

static int fail(api_error *e, errcode err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(api_error *e, errcode err, const char *fmt, ...) {
    e->err = err;
    e->status = errcode_status(err);
    e->code = errcode_name(err);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -1;
}

int api_ctx_init(api_ctx *ctx, const bert_model *model, const char *dir, const cfg *c, char *err,
                 size_t errlen) {
    memset(ctx, 0, sizeof(*ctx));
    ctx->model = model;
    ctx->tok = bert_model_tokenizer(model);
    ctx->cfg = c;
    const bert_config *bc = bert_model_config(model);
    ctx->max_len = c->max_sequence_length;
    if (bc->max_position_embeddings < ctx->max_len) ctx->max_len = bc->max_position_embeddings;
    ctx->vocab_size = bc->vocab_size;
    /* tokenizer_config.json's clean_up_tokenization_spaces decides how
     * decode() joins punctuation; the tokenizer read it with the file. */
    ctx->cleanup_spaces = tok_get_options(ctx->tok)->cleanup_spaces;
    snprintf(ctx->kernel, sizeof(ctx->kernel), "%s", bert_model_kernel(model));
    (void)dir;
    (void)err;
    (void)errlen;
    return 0;
}

void api_ctx_set_reference(api_ctx *ctx, const bert_model *reference) {
    ctx->reference = reference;
    snprintf(ctx->kernel, sizeof(ctx->kernel), "%s; rechecks: %s", bert_model_kernel(ctx->model),
             bert_model_kernel(reference));
}

size_t api_weight_bytes(const api_ctx *ctx) {
    return bert_model_weight_bytes(ctx->model) +
           (ctx->reference ? bert_model_weight_bytes(ctx->reference) : 0);
}

void api_job_free(api_job *job) {
    if (!job) return;
    for (int i = 0; i < job->n_inputs; i++) {
        tok_sequence_free(&job->inputs[i].seq);
        free(job->inputs[i].labels);
        free(job->inputs[i].mlm_pos);
        free(job->inputs[i].mask_rows);
        free(job->inputs[i].top_ids);
        free(job->inputs[i].top_scores);
        free(job->inputs[i].text);
        free(job->inputs[i].logprob);
    }
    free(job->inputs);
    free(job->targets);
    free(job->body);
    json_decref(job->req);
    free(job);
}

/* ---- shared field checks ---- */

/* An integer as JSON Schema sees it: 2.0 is the integer 2 (openapi.yaml's
 * "type: integer" admits it, so clients and generators may send it). */
static int json_as_int(json_t *v, json_int_t *out) {
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 1;
    }
    if (!json_is_real(v)) return 0;
    double d = json_real_value(v);
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(json_int_t)d) return 0;
    *out = (json_int_t)d;
    return 1;
}

static int check_keys(json_t *obj, const char *where, const char *const *allowed, api_error *e) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(key, *a) == 0) ok = 1;
        if (!ok) {
            char list[256] = "";
            for (const char *const *a = allowed; *a; a++) {
                strncat(list, *a, sizeof(list) - strlen(list) - 1);
                if (a[1]) strncat(list, ", ", sizeof(list) - strlen(list) - 1);
            }
            return fail(e, ERR_INVALID_REQUEST, "%s: unknown field '%.64s' (allowed: %s)", where,
                        key, list);
        }
    }
    return 0;
}

typedef struct trunc_params {
    int truncate;
    tok_side side;
} trunc_params;

/* parameters.truncate / parameters.truncation_direction (text-embeddings-
 * inference's names). */
static int parse_trunc(json_t *params, trunc_params *t, api_error *e) {
    t->truncate = 0;
    t->side = TOK_SIDE_RIGHT;
    if (!params) return 0;
    json_t *v = json_object_get(params, "truncate");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return fail(e, ERR_INVALID_REQUEST, "parameters.truncate must be true or false");
        t->truncate = json_is_true(v);
    }
    v = json_object_get(params, "truncation_direction");
    if (v && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (!s || strlen(s) != json_string_length(v) ||
            (strcmp(s, "right") != 0 && strcmp(s, "left") != 0 && strcmp(s, "Right") != 0 &&
             strcmp(s, "Left") != 0))
            return fail(e, ERR_INVALID_REQUEST,
                        "parameters.truncation_direction must be \"right\" or \"left\"");
        t->side = (s[0] == 'l' || s[0] == 'L') ? TOK_SIDE_LEFT : TOK_SIDE_RIGHT;
    }
    return 0;
}

static int get_params(json_t *req, const char *const *allowed, json_t **out, api_error *e) {
    json_t *p = json_object_get(req, "parameters");
    *out = NULL;
    if (!p || json_is_null(p)) return 0;
    if (!json_is_object(p)) return fail(e, ERR_INVALID_REQUEST, "parameters must be an object");
    if (check_keys(p, "parameters", allowed, e)) return -1;
    *out = p;
    return 0;
}

/* Tokenizes one input under the model's length limit. what names the input in
 * messages, e.g. "inputs[2]". */
static int encode_input(const api_ctx *ctx, const char *what, json_t *a, json_t *b,
                        const trunc_params *t, int enforce_limit, tok_sequence *seq, api_error *e) {
    char err[256];
    const char *as = json_string_value(a), *bs = b ? json_string_value(b) : NULL;
    size_t alen = json_string_length(a), blen = b ? json_string_length(b) : 0;
    int max_len = 0;
    tok_truncation mode = TOK_TRUNC_NONE;
    if (t->truncate && enforce_limit) {
        max_len = ctx->max_len;
        mode = TOK_TRUNC_LONGEST_FIRST;
    }
    int rc =
        tok_encode(ctx->tok, as, alen, bs, blen, max_len, mode, t->side, seq, err, sizeof(err));
    if (rc == TOK_ERR_UTF8) return fail(e, ERR_INVALID_UTF8, "%s is not valid UTF-8", what);
    if (rc == TOK_ERR_TOO_LONG)
        return fail(e, ERR_INPUT_TOO_LONG,
                    "%s cannot be truncated to %d tokens (the pair is too short to hold the "
                    "special tokens)",
                    what, ctx->max_len);
    if (rc == TOK_ERR_NOMEM) return fail(e, ERR_INTERNAL, "out of memory");
    if (rc != TOK_OK) return fail(e, ERR_INVALID_INPUT, "%s cannot be tokenized", what);
    if (enforce_limit && seq->len > ctx->max_len)
        return fail(e, ERR_INPUT_TOO_LONG,
                    "%s has %d tokens including [CLS]/[SEP]; this model accepts at most %d. "
                    "Shorten it or set parameters.truncate to true",
                    what, seq->len, ctx->max_len);
    return 0;
}

static api_job *job_new(api_kind kind, int n_inputs) {
    api_job *job = calloc(1, sizeof(*job));
    if (!job) return NULL;
    job->kind = kind;
    job->inputs = calloc((size_t)n_inputs, sizeof(*job->inputs));
    if (!job->inputs) {
        free(job);
        return NULL;
    }
    job->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++)
        job->inputs[i].nsp_label = -1;
    return job;
}

/* inputs as one item or a non-empty list of items; sets *n and *batched. */
typedef enum { SINGLE_STRING, SINGLE_OBJECT, SINGLE_ANY } single_shape;

static int inputs_shape(const api_ctx *ctx, json_t *inputs, single_shape single, int *n,
                        int *batched, api_error *e) {
    if (!inputs) return fail(e, ERR_INVALID_REQUEST, "missing field 'inputs'");
    if (json_is_array(inputs)) {
        *batched = 1;
        *n = (int)json_array_size(inputs);
        if (*n == 0) return fail(e, ERR_NO_INPUTS, "inputs is an empty list");
        if (*n > ctx->cfg->max_inputs_per_request)
            return fail(e, ERR_TOO_MANY_INPUTS,
                        "inputs has %d items; at most %d are accepted per request", *n,
                        ctx->cfg->max_inputs_per_request);
        return 0;
    }
    *batched = 0;
    *n = 1;
    if (single == SINGLE_OBJECT && !json_is_object(inputs))
        return fail(e, ERR_INVALID_REQUEST,
                    "inputs must be an object {\"text\", \"text_pair\"} or a list of such objects");
    if (single == SINGLE_STRING && !json_is_string(inputs))
        return fail(e, ERR_INVALID_REQUEST, "inputs must be a string or a list of strings");
    return 0;
}

/* What every /v1 POST body shares: a JSON object with only the route's keys,
 * "inputs" as one item or a bounded list, and optional truncation parameters. */
static int parse_envelope(const api_ctx *ctx, json_t *req, const char *const *top_keys,
                          const char *const *param_keys, single_shape single, json_t **inputs,
                          int *n, int *batched, json_t **params, trunc_params *tp, api_error *e) {
    if (!json_is_object(req))
        return fail(e, ERR_INVALID_REQUEST, "the request body must be a JSON object");
    if (check_keys(req, "request", top_keys, e)) return -1;
    *inputs = json_object_get(req, "inputs");
    if (inputs_shape(ctx, *inputs, single, n, batched, e)) return -1;
    if (get_params(req, param_keys, params, e)) return -1;
    return parse_trunc(*params, tp, e);
}

/* How messages name one item: "inputs" alone, "inputs[3]" in a batch. */
static void item_name(char *buf, size_t len, const char *field, int i, int batched) {
    if (batched)
        snprintf(buf, len, "%s[%d]", field, i);
    else
        snprintf(buf, len, "%s", field);
}

/* ---- /v1/fill-mask ---- */

static int parse_targets(const api_ctx *ctx, json_t *v, api_job *job, api_error *e) {
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_array(v) && !json_is_string(v))
        return fail(e, ERR_INVALID_REQUEST,
                    "parameters.targets must be a string or a list of strings");
    if (n == 0)
        return fail(e, ERR_UNKNOWN_TARGET, "parameters.targets is empty; give at least one");
    if (n > API_MAX_TARGETS)
        return fail(e, ERR_TOO_MANY_TARGETS, "parameters.targets has %zu items; at most %d", n,
                    API_MAX_TARGETS);
    job->targets = malloc(n * sizeof(int32_t));
    if (!job->targets) return fail(e, ERR_INTERNAL, "out of memory");
    tok_sequence pieces = {0};
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(t)) {
            rc = fail(e, ERR_INVALID_REQUEST, "parameters.targets[%zu] must be a string", i);
            goto cleanup;
        }
        const char *s = json_string_value(t);
        size_t len = json_string_length(t);
        /* As the pipeline: an exact vocabulary entry first, else the first
         * word piece of its tokenization. */
        int32_t id = tok_token_to_id(ctx->tok, s, len);
        if (id < 0) {
            char err[256];
            pieces.len = 0;
            if (tok_encode_plain(ctx->tok, s, len, &pieces, err, sizeof(err)) != TOK_OK ||
                pieces.len == 0) {
                rc = fail(e, ERR_UNKNOWN_TARGET,
                          "parameters.targets[%zu] (\"%.64s\") yields no token in this "
                          "model's vocabulary",
                          i, s);
                goto cleanup;
            }
            id = pieces.ids[0];
        }
        int dup = 0;
        for (int j = 0; j < job->n_targets; j++)
            if (job->targets[j] == id) dup = 1;
        if (!dup) job->targets[job->n_targets++] = id;
    }
cleanup:
    tok_sequence_free(&pieces);
    return rc;
}

/* labels for one input: a list of ints, -100 or a vocabulary id. */
static int parse_labels(const api_ctx *ctx, json_t *v, const char *what, api_input *in,
                        api_error *e) {
    if (!json_is_array(v))
        return fail(e, ERR_INVALID_REQUEST, "%s must be a list of integers", what);
    size_t n = json_array_size(v);
    if ((long)n != in->seq.len)
        return fail(e, ERR_INVALID_LABELS,
                    "%s has %zu entries but the input has %d tokens including [CLS] and [SEP] "
                    "(see /v1/tokenize); give one label per token, -100 to ignore it",
                    what, n, in->seq.len);
    in->labels = malloc((n ? n : 1) * sizeof(int32_t));
    if (!in->labels) return fail(e, ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        json_int_t l;
        if (!json_as_int(x, &l))
            return fail(e, ERR_INVALID_REQUEST, "%s[%zu] must be an integer", what, i);
        if (l != -100 && (l < 0 || l >= ctx->vocab_size))
            return fail(e, ERR_INVALID_LABELS,
                        "%s[%zu] is %lld; labels must be -100 (ignored) or a token id in "
                        "[0, %d)",
                        what, i, (long long)l, ctx->vocab_size);
        in->labels[i] = (int32_t)l;
    }
    return 0;
}

/* Rows the worker needs: every [MASK] and every labelled position; which of
 * them are [MASK]s is recorded here, once, for the worker and the answer. */
static int plan_mlm_rows(const api_ctx *ctx, api_input *in, api_error *e) {
    int32_t mask = tok_specials(ctx->tok)->mask;
    size_t cap = (size_t)(in->seq.len ? in->seq.len : 1);
    in->mlm_pos = malloc(cap * sizeof(int32_t));
    in->mask_rows = malloc(cap * sizeof(int));
    if (!in->mlm_pos || !in->mask_rows) return fail(e, ERR_INTERNAL, "out of memory");
    in->n_mlm = 0;
    in->n_masks = 0;
    for (int p = 0; p < in->seq.len; p++) {
        int is_mask = in->seq.ids[p] == mask;
        if (is_mask) in->mask_rows[in->n_masks++] = in->n_mlm;
        if (is_mask || (in->labels && in->labels[p] != OBJ_IGNORE_INDEX))
            in->mlm_pos[in->n_mlm++] = p;
    }
    return 0;
}

/* parameters.top_k and parameters.targets into job (top_k defaults to
 * limits.default_top_k). */
static int fill_mask_params(const api_ctx *ctx, json_t *params, api_job *job, api_error *e) {
    job->top_k = ctx->cfg->default_top_k;
    json_t *v = params ? json_object_get(params, "top_k") : NULL;
    if (v && !json_is_null(v)) {
        json_int_t k;
        if (!json_as_int(v, &k))
            return fail(e, ERR_INVALID_REQUEST, "parameters.top_k must be an integer");
        int max_k = ctx->cfg->max_top_k < ctx->vocab_size ? ctx->cfg->max_top_k : ctx->vocab_size;
        if (k < 1 || k > max_k)
            return fail(e, ERR_INVALID_TOP_K, "parameters.top_k is %lld; it must be in [1, %d]",
                        (long long)k, max_k);
        job->top_k = (int)k;
    }
    v = params ? json_object_get(params, "targets") : NULL;
    if (v && !json_is_null(v) && parse_targets(ctx, v, job, e)) return -1;
    return 0;
}

/* The request's "labels": NULL when absent, else one list of integers (one
 * list per input when batched). Only the shape and count are checked here;
 * each list is read with its input (parse_labels). */
static int fill_mask_labels(json_t *req, int n, int batched, json_t **out, api_error *e) {
    json_t *labels = json_object_get(req, "labels");
    *out = NULL;
    if (!labels || json_is_null(labels)) return 0;
    int shape_ok = !batched || json_is_array(labels);
    for (size_t i = 0; shape_ok && batched && i < json_array_size(labels); i++)
        shape_ok = json_is_array(json_array_get(labels, i));
    if (!shape_ok)
        return fail(e, ERR_INVALID_REQUEST,
                    "labels must be a list with one list of integers per item of inputs");
    /* The shape is right (the schema says so much); the count is a rule
     * about this request's inputs, like each list's length. */
    if (batched && (int)json_array_size(labels) != n)
        return fail(e, ERR_INVALID_LABELS, "labels has %zu lists but inputs has %d items",
                    json_array_size(labels), n);
    *out = labels;
    return 0;
}

/* Input i: its text tokenized, its labels read, its [MASK]s found and
 * bounded. */
static int fill_mask_input(const api_ctx *ctx, json_t *inputs, json_t *labels, int i, int batched,
                           const trunc_params *tp, api_input *in, api_error *e) {
    json_t *text = batched ? json_array_get(inputs, (size_t)i) : inputs;
    char what[48];
    item_name(what, sizeof(what), "inputs", i, batched);
    if (!json_is_string(text)) return fail(e, ERR_INVALID_REQUEST, "%s must be a string", what);
    if (encode_input(ctx, what, text, NULL, tp, 1, &in->seq, e)) return -1;
    if (labels) {
        char lwhat[48];
        item_name(lwhat, sizeof(lwhat), "labels", i, batched);
        json_t *l = batched ? json_array_get(labels, (size_t)i) : labels;
        if (parse_labels(ctx, l, lwhat, in, e)) return -1;
    }
    if (plan_mlm_rows(ctx, in, e)) return -1;
    if (in->n_masks == 0)
        return fail(e, ERR_NO_MASK,
                    "%s contains no [MASK] token%s; put [MASK] where a word should be predicted",
                    what, tp->truncate ? " (after truncation)" : "");
    if (in->n_masks > ctx->cfg->max_masks_per_input)
        return fail(e, ERR_TOO_MANY_MASKS, "%s has %d [MASK] tokens; at most %d are accepted", what,
                    in->n_masks, ctx->cfg->max_masks_per_input);
    return 0;
}

/* Each prediction costs a softmax row share, a decode of the whole input and
 * ~100 bytes plus the sequence in the answer: 32 inputs x 32 masks x top_k
 * 100 was an 80 MB answer and 12-28 s of one worker. */
static int fill_mask_bound(const api_ctx *ctx, api_job *job, api_error *e) {
    int n = job->n_inputs;
    long masks = 0;
    for (int i = 0; i < n; i++)
        masks += job->inputs[i].n_masks;
    job->predictions = masks * job->top_k;
    if (job->predictions > ctx->cfg->max_predictions_per_request)
        return fail(e, ERR_TOO_MANY_PREDICTIONS,
                    "this request asks for %ld predictions (%ld [MASK] tokens over %d input%s x "
                    "top_k %d); at most %d per request (limits.max_predictions_per_request): send "
                    "fewer inputs or masks, or a smaller parameters.top_k",
                    job->predictions, masks, n, n == 1 ? "" : "s", job->top_k,
                    ctx->cfg->max_predictions_per_request);
    return 0;
}

int api_parse_fill_mask(const api_ctx *ctx, json_t *req, api_job **out, api_error *e) {
    static const char *const top_keys[] = {"inputs", "parameters", "labels", "options", NULL};
    static const char *const param_keys[] = {"top_k", "targets", "truncate", "truncation_direction",
                                             NULL};
    api_job *job = NULL;
    json_t *params = NULL, *inputs = NULL, *labels = NULL;
    int n, batched;
    trunc_params tp;
    *out = NULL;
    if (parse_envelope(ctx, req, top_keys, param_keys, SINGLE_STRING, &inputs, &n, &batched,
                       &params, &tp, e))
        return -1;
    if (!bert_model_has_mlm(ctx->model))
        return fail(e, ERR_HEAD_UNAVAILABLE,
                    "this model has no masked-LM head (cls.predictions); fill-mask is not "
                    "available");
    job = job_new(API_FILL_MASK, n);
    if (!job) return fail(e, ERR_INTERNAL, "out of memory");
    job->batched = batched;
    if (fill_mask_params(ctx, params, job, e)) goto error;
    if (fill_mask_labels(req, n, batched, &labels, e)) goto error;
    job->has_labels = labels != NULL;
    for (int i = 0; i < n; i++) {
        if (fill_mask_input(ctx, inputs, labels, i, batched, &tp, &job->inputs[i], e)) goto error;
        job->tokens += job->inputs[i].seq.len;
    }
    if (job->targets && job->top_k > job->n_targets) job->top_k = job->n_targets;
    if (fill_mask_bound(ctx, job, e)) goto error;
    job->item.cost = job->tokens;
    *out = job;
    return 0;
error:
    api_job_free(job);
    return -1;
}

/* ---- /v1/next-sentence ---- */

int api_parse_next_sentence(const api_ctx *ctx, json_t *req, api_job **out, api_error *e) {
    static const char *const top_keys[] = {"inputs", "parameters", "options", NULL};
    static const char *const param_keys[] = {"truncate", "truncation_direction", NULL};
    static const char *const pair_keys[] = {"text", "text_pair", "label", NULL};
    api_job *job = NULL;
    json_t *params = NULL, *inputs = NULL;
    int n, batched;
    trunc_params tp;
    *out = NULL;
    if (parse_envelope(ctx, req, top_keys, param_keys, SINGLE_OBJECT, &inputs, &n, &batched,
                       &params, &tp, e))
        return -1;
    if (!bert_model_has_nsp(ctx->model))
        return fail(e, ERR_HEAD_UNAVAILABLE,
                    "this model has no next-sentence head (cls.seq_relationship); "
                    "next-sentence is not available");
    job = job_new(API_NEXT_SENTENCE, n);
    if (!job) return fail(e, ERR_INTERNAL, "out of memory");
    job->batched = batched;
    for (int i = 0; i < n; i++) {
        api_input *in = &job->inputs[i];
        json_t *pair = batched ? json_array_get(inputs, (size_t)i) : inputs;
        char what[48];
        item_name(what, sizeof(what), "inputs", i, batched);
        if (!json_is_object(pair)) {
            fail(e, ERR_INVALID_REQUEST, "%s must be an object {\"text\", \"text_pair\"}", what);
            goto error;
        }
        if (check_keys(pair, what, pair_keys, e)) goto error;
        json_t *a = json_object_get(pair, "text"), *b = json_object_get(pair, "text_pair");
        if (!json_is_string(a) || !json_is_string(b)) {
            fail(e, ERR_INVALID_REQUEST, "%s needs string fields \"text\" and \"text_pair\"", what);
            goto error;
        }
        json_t *l = json_object_get(pair, "label");
        if (l && !json_is_null(l)) {
            json_int_t lv;
            if (!json_as_int(l, &lv) || (lv != 0 && lv != 1)) {
                fail(e, ERR_INVALID_LABELS,
                     "%s.label must be 0 (text_pair follows text) or 1 (random sentence)", what);
                goto error;
            }
            in->nsp_label = (int)lv;
        }
        if (encode_input(ctx, what, a, b, &tp, 1, &in->seq, e)) goto error;
        job->tokens += in->seq.len;
    }
    job->item.cost = job->tokens;
    *out = job;
    return 0;
error:
    api_job_free(job);
    return -1;
}

/* ---- /v1/tokenize ---- */

int api_parse_tokenize(const api_ctx *ctx, json_t *req, api_job **out, long *tokens, api_error *e) {
    static const char *const top_keys[] = {"inputs", "parameters", "options", NULL};
    static const char *const param_keys[] = {"truncate", "truncation_direction", NULL};
    static const char *const pair_keys[] = {"text", "text_pair", NULL};
    json_t *params = NULL, *inputs = NULL;
    api_job *job = NULL;
    int n, batched;
    trunc_params tp;
    *out = NULL;
    *tokens = 0;
    if (parse_envelope(ctx, req, top_keys, param_keys, SINGLE_ANY, &inputs, &n, &batched, &params,
                       &tp, e))
        return -1;
    job = job_new(API_TOKENIZE, n);
    if (!job) return fail(e, ERR_INTERNAL, "out of memory");
    job->batched = batched;
    for (int i = 0; i < n; i++) {
        json_t *item = batched ? json_array_get(inputs, (size_t)i) : inputs;
        char what[48];
        item_name(what, sizeof(what), "inputs", i, batched);
        json_t *a = item, *b = NULL;
        if (json_is_object(item)) {
            if (check_keys(item, what, pair_keys, e)) goto error;
            a = json_object_get(item, "text");
            b = json_object_get(item, "text_pair");
            if (b && json_is_null(b)) b = NULL;
            if (!json_is_string(a) || (b && !json_is_string(b))) {
                fail(e, ERR_INVALID_REQUEST,
                     "%s needs a string \"text\" and optionally a string \"text_pair\"", what);
                goto error;
            }
        } else if (!json_is_string(item)) {
            fail(e, ERR_INVALID_REQUEST,
                 "%s must be a string or an object {\"text\", \"text_pair\"}", what);
            goto error;
        }
        /* Without truncation the length is reported, not enforced: callers use
         * this route to find out how long their inputs are. */
        tok_sequence *seq = &job->inputs[i].seq;
        if (encode_input(ctx, what, a, b, &tp, tp.truncate, seq, e)) goto error;
        *tokens += seq->len;
        if (*tokens > ctx->cfg->max_tokenize_tokens) {
            fail(e, ERR_TOO_MANY_TOKENS,
                 "%s brings the request to %ld tokens; /v1/tokenize returns at most %d per "
                 "request (limits.max_tokenize_tokens): send less text or set "
                 "parameters.truncate to true",
                 what, *tokens, ctx->cfg->max_tokenize_tokens);
            goto error;
        }
    }
    job->tokens = *tokens;
    *out = job;
    return 0;
error:
    api_job_free(job);
    return -1;
}

/* ---- /v1/decode ---- */

/* One list of ids into in->text. what names the list, e.g. "ids[1]". */
static int decode_list(const api_ctx *ctx, json_t *list, const char *what, int skip, api_input *in,
                       long *count, api_error *e) {
    size_t n = json_array_size(list);
    int32_t *ids = NULL;
    int rc = -1;
    *count += (long)n;
    if (*count > ctx->cfg->max_decode_ids)
        return fail(e, ERR_TOO_MANY_TOKENS,
                    "%s brings the request to %ld ids; /v1/decode takes at most %d per request "
                    "(limits.max_decode_ids): send fewer ids per request",
                    what, *count, ctx->cfg->max_decode_ids);
    ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!ids) return fail(e, ERR_INTERNAL, "out of memory");
    for (size_t k = 0; k < n; k++) {
        json_t *v = json_array_get(list, k);
        json_int_t id;
        if (!json_as_int(v, &id)) {
            /* An integer past 64 bits reaches here as a real (post_job): a
             * valid integer, just not a token id. */
            double d = json_is_real(v) ? json_real_value(v) : 0.5;
            if (d == floor(d)) {
                fail(e, ERR_INVALID_INPUT,
                     "%s[%zu] is %.0f, not a token id of this tokenizer (ids are 0 .. %d)", what, k,
                     d, tok_vocab_size(ctx->tok) - 1);
                goto cleanup;
            }
            fail(e, ERR_INVALID_REQUEST, "%s[%zu] must be an integer token id", what, k);
            goto cleanup;
        }
        if (id < 0 || id > INT32_MAX || !tok_id_to_token(ctx->tok, (int32_t)id)) {
            fail(e, ERR_INVALID_INPUT,
                 "%s[%zu] is %lld, not a token id of this tokenizer (ids are 0 .. %d)", what, k,
                 (long long)id, tok_vocab_size(ctx->tok) - 1);
            goto cleanup;
        }
        ids[k] = (int32_t)id;
    }
    in->text = tok_decode(ctx->tok, ids, (int)n, skip, ctx->cleanup_spaces);
    if (!in->text) {
        fail(e, ERR_INTERNAL, "out of memory");
        goto cleanup;
    }
    rc = 0;
cleanup:
    free(ids);
    return rc;
}

int api_parse_decode(const api_ctx *ctx, json_t *req, api_job **out, long *tokens, api_error *e) {
    static const char *const top_keys[] = {"ids", "skip_special_tokens", NULL};
    api_job *job = NULL;
    *out = NULL;
    *tokens = 0;
    if (!json_is_object(req))
        return fail(e, ERR_INVALID_REQUEST, "the request body must be a JSON object");
    if (check_keys(req, "request", top_keys, e)) return -1;
    json_t *ids = json_object_get(req, "ids");
    if (!ids) return fail(e, ERR_INVALID_REQUEST, "missing field 'ids'");
    if (!json_is_array(ids))
        return fail(e, ERR_INVALID_REQUEST,
                    "ids must be a list of token ids or a list of such lists");
    int skip = 1; /* text-embeddings-inference's default */
    json_t *sk = json_object_get(req, "skip_special_tokens");
    if (sk && !json_is_null(sk)) {
        if (!json_is_boolean(sk))
            return fail(e, ERR_INVALID_REQUEST, "skip_special_tokens must be true or false");
        skip = json_is_true(sk);
    }
    /* A list of lists is a batch; [] and a flat list are one sequence. */
    int batched = json_array_size(ids) > 0 && json_is_array(json_array_get(ids, 0));
    size_t n = batched ? json_array_size(ids) : 1;
    if (n > (size_t)ctx->cfg->max_inputs_per_request)
        return fail(e, ERR_TOO_MANY_INPUTS,
                    "ids has %zu lists; at most %d are accepted per request", n,
                    ctx->cfg->max_inputs_per_request);
    job = job_new(API_DECODE, (int)n);
    if (!job) return fail(e, ERR_INTERNAL, "out of memory");
    job->batched = batched;
    for (size_t i = 0; i < n; i++) {
        json_t *list = batched ? json_array_get(ids, i) : ids;
        char what[48];
        item_name(what, sizeof(what), "ids", (int)i, batched);
        if (!json_is_array(list)) {
            fail(e, ERR_INVALID_REQUEST,
                 "%s must be a list of token ids (ids is a list of lists: every item must be one)",
                 what);
            goto error;
        }
        if (decode_list(ctx, list, what, skip, &job->inputs[i], tokens, e)) goto error;
    }
    job->tokens = *tokens;
    *out = job;
    return 0;
error:
    api_job_free(job);
    return -1;
}

/* ---- /v1/score ---- */

int api_parse_score(const api_ctx *ctx, json_t *req, api_job **out, api_error *e) {
    static const char *const top_keys[] = {"inputs", "options", NULL};
    static const char *const param_keys[] = {NULL};
    json_t *params = NULL, *inputs = NULL;
    api_job *job = NULL;
    int n, batched;
    trunc_params tp;
    *out = NULL;
    if (parse_envelope(ctx, req, top_keys, param_keys, SINGLE_STRING, &inputs, &n, &batched,
                       &params, &tp, e))
        return -1;
    if (!bert_model_has_mlm(ctx->model))
        return fail(e, ERR_HEAD_UNAVAILABLE,
                    "this model has no masked-LM head (cls.predictions); score is not available");
    job = job_new(API_SCORE, n);
    if (!job) return fail(e, ERR_INTERNAL, "out of memory");
    job->batched = batched;
    for (int i = 0; i < n; i++) {
        json_t *item = batched ? json_array_get(inputs, (size_t)i) : inputs;
        char what[48];
        item_name(what, sizeof(what), "inputs", i, batched);
        if (!json_is_string(item)) {
            fail(e, ERR_INVALID_REQUEST, "%s must be a string", what);
            goto error;
        }
        /* Not truncated (a score of part of the text would mislead): too
         * long is refused, naming this route's own bound first. */
        tok_sequence *seq = &job->inputs[i].seq;
        if (encode_input(ctx, what, item, NULL, &tp, 0, seq, e)) goto error;
        int pieces = seq->len - 2; /* less [CLS] and [SEP] */
        if (pieces > ctx->cfg->max_score_tokens) {
            fail(e, ERR_INPUT_TOO_LONG,
                 "%s has %d word pieces; /v1/score scores at most %d per input "
                 "(limits.max_score_tokens: each one is masked in turn, so the cost grows as "
                 "the square of the length). Shorten it",
                 what, pieces, ctx->cfg->max_score_tokens);
            goto error;
        }
        if (seq->len > ctx->max_len) {
            fail(e, ERR_INPUT_TOO_LONG,
                 "%s has %d tokens including [CLS]/[SEP]; this model accepts at most %d. "
                 "Shorten it",
                 what, seq->len, ctx->max_len);
            goto error;
        }
        if (pieces <= 0) {
            fail(e, ERR_INVALID_INPUT, "%s has no word pieces to score", what);
            goto error;
        }
        job->tokens += seq->len;
    }
    *out = job;
    return 0;
error:
    api_job_free(job);
    return -1;
}

/* ---- deferred parsing ---- */

/* Text bytes of one input (a string, or an object's "text" and "text_pair"). */
static size_t input_bytes(json_t *v) {
    if (json_is_string(v)) return json_string_length(v);
    if (!json_is_object(v)) return 0;
    json_t *a = json_object_get(v, "text"), *b = json_object_get(v, "text_pair");
    return (json_is_string(a) ? json_string_length(a) : 0) +
           (json_is_string(b) ? json_string_length(b) : 0);
}

/* An upper bound of the tokens the parse can give: no input is longer than
 * max_len (longer ones are truncated or refused), and the tokenizer makes at
 * most one token per byte of text plus [CLS] and two [SEP]. */
static long cost_bound(const api_ctx *ctx, json_t *req, int squared) {
    json_t *inputs = json_is_object(req) ? json_object_get(req, "inputs") : NULL;
    size_t n = json_is_array(inputs) ? json_array_size(inputs) : 1;
    if (n > (size_t)ctx->cfg->max_inputs_per_request) return 1; /* refused by the parse */
    long cost = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = input_bytes(json_is_array(inputs) ? json_array_get(inputs, i) : inputs) + 3;
        long t = b < (size_t)ctx->max_len ? (long)b : ctx->max_len;
        if (squared) {
            /* /v1/score: one masked copy of the sequence per word piece. */
            long cap = (long)ctx->cfg->max_score_tokens + 2;
            if (t > cap) t = cap;
            t *= t;
        }
        cost += t;
    }
    return cost > 0 ? cost : 1;
}

int api_defer(const api_ctx *ctx, api_kind kind, json_t *req, size_t body_bytes, api_job **out,
              api_error *e) {
    api_job *job = calloc(1, sizeof(*job));
    *out = NULL;
    if (!job) return fail(e, ERR_INTERNAL, "out of memory");
    job->kind = kind;
    job->req = json_incref(req);
    /* /v1/tokenize and /v1/decode share no forward pass: their cost only
     * decides whether they share a worker turn with one. */
    job->item.cost = kind == API_TOKENIZE || kind == API_DECODE
                         ? (long)(body_bytes / 4) + 1
                         : cost_bound(ctx, req, kind == API_SCORE);
    *out = job;
    return 0;
}

/* Moves what the parse produced into the queued job, whose pool link, owner,
 * callbacks and deadline stay as they are. */
static void job_adopt(api_job *dst, api_job *src) {
    dst->batched = src->batched;
    dst->n_inputs = src->n_inputs;
    dst->inputs = src->inputs;
    dst->top_k = src->top_k;
    dst->targets = src->targets;
    dst->n_targets = src->n_targets;
    dst->has_labels = src->has_labels;
    dst->tokens = src->tokens;
    dst->predictions = src->predictions;
    src->inputs = NULL;
    src->n_inputs = 0;
    src->targets = NULL;
    api_job_free(src);
}

int api_prepare(const api_ctx *ctx, api_job *job) {
    if (!job->req) return 0;
    api_error e = {0};
    json_t *req = job->req;
    job->req = NULL; /* its strings may be most of the memory this job holds */
    api_job *parsed = NULL;
    long tokens = 0;
    int rc;
    switch (job->kind) {
    case API_FILL_MASK:
        rc = api_parse_fill_mask(ctx, req, &parsed, &e);
        break;
    case API_NEXT_SENTENCE:
        rc = api_parse_next_sentence(ctx, req, &parsed, &e);
        break;
    case API_TOKENIZE:
        rc = api_parse_tokenize(ctx, req, &parsed, &tokens, &e);
        break;
    case API_DECODE:
        rc = api_parse_decode(ctx, req, &parsed, &tokens, &e);
        break;
    default:
        rc = api_parse_score(ctx, req, &parsed, &e);
        break;
    }
    if (rc) {
        job->tokens = tokens; /* /v1/tokenize, /v1/decode log what they counted */
        answer_fail(job, e.err, e.message);
    } else {
        job_adopt(job, parsed);
    }
    json_decref(req);
    return rc ? 1 : 0;
}

/* ---- /v1/models ---- */

char *api_models(const api_ctx *ctx, size_t *len) {
    const bert_config *c = bert_model_config(ctx->model);
    json_t *m = json_pack(
        "{s:s,s:s,s:s,s:{s:b,s:b},s:s,s:I,s:I,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:b}",
        "id", bert_model_name(ctx->model), "object", "model", "architecture", "BertForPreTraining",
        "heads", "masked_lm", bert_model_has_mlm(ctx->model), "next_sentence",
        bert_model_has_nsp(ctx->model), "dtype", bert_model_dtype(ctx->model), "parameters",
        (json_int_t)bert_model_param_count(ctx->model), "weight_bytes",
        (json_int_t)api_weight_bytes(ctx), "compute", cfg_compute_name(ctx->cfg->compute), "kernel",
        ctx->kernel, "max_sequence_length", ctx->max_len, "max_position_embeddings",
        c->max_position_embeddings, "vocab_size", c->vocab_size, "hidden_size", c->hidden_size,
        "num_hidden_layers", c->num_hidden_layers, "num_attention_heads", c->num_attention_heads,
        "intermediate_size", c->intermediate_size, "type_vocab_size", c->type_vocab_size,
        "hidden_act", c->hidden_act_name, "do_lower_case", tok_get_options(ctx->tok)->lowercase);
    if (ctx->reference)
        json_object_set_new(m, "recheck_logit_gap", json_real(ctx->cfg->recheck_logit_gap));
    json_t *root = json_pack("{s:s,s:[o]}", "object", "list", "data", m);
    char *s = answer_dump(root, len);
    json_decref(root);
    return s;
}
