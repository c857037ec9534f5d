/* api: the JSON contract of the /v1 routes, minus HTTP.
 *
 * Owns: request validation (JSON shape and types -> 400, content the model
 * cannot serve -> 422), tokenization of request inputs into api_job work
 * items (each [MASK] found once here and carried in the job) and /v1/models.
 * The answers and error bodies are rendered by answer.h.
 *
 * An api_job is created by api_defer on the HTTP thread (holding the parsed
 * JSON), owned by the HTTP connection that created it, validated and
 * tokenized by a worker (api_prepare), run there (infer.c: the numbers, then
 * answer.c: status and body), which calls complete(), and released with
 * api_job_free. Messages
 * never contain server paths: they name the request field at fault.
 *
 * Bounds per request, besides the shape limits: inputs x [MASK]s x top_k
 * (limits.max_predictions_per_request, 422 too_many_predictions), the answer
 * (limits.max_answer_bytes, 413 answer_too_large) and /v1/tokenize's tokens
 * (limits.max_tokenize_tokens, 422 too_many_tokens), /v1/decode's ids
 * (limits.max_decode_ids, 422 too_many_tokens) and /v1/score's word pieces
 * per input (limits.max_score_tokens, 422 input_too_long). */
#ifndef BERT_SERVER_API_H
#define BERT_SERVER_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "bert.h"
#include "config.h"
#include "errcode.h"
#include "pool.h"
#include "tokenizer.h"

typedef struct api_ctx {
    const bert_model *model;
    /* model.compute int8-checked: the same checkpoint in float32, which
     * answers again the inputs whose int8 answer was a near-tie (infer.c);
     * NULL otherwise. Set with api_ctx_set_reference. */
    const bert_model *reference;
    char kernel[256]; /* what runs the products: bert_model_kernel of each */
    const tok_tokenizer *tok;
    const cfg *cfg;
    int max_len;        /* min(model.max_sequence_length, max_position_embeddings) */
    int cleanup_spaces; /* tokenizer_config.json clean_up_tokenization_spaces */
    int vocab_size;
} api_ctx;

/* Reads what the API needs from a loaded model (its tokenizer has read
 * tokenizer_config.json). dir, err and errlen are no longer used (kept for
 * main.c's call); returns 0. */
int api_ctx_init(api_ctx *ctx, const bert_model *model, const char *dir, const cfg *c, char *err,
                 size_t errlen);
/* Adds the float32 model of model.compute int8-checked (see api_ctx.reference). */
void api_ctx_set_reference(api_ctx *ctx, const bert_model *reference);
/* Bytes of weights resident: the model's, and the reference's when set. */
size_t api_weight_bytes(const api_ctx *ctx);

typedef struct api_error {
    errcode err;
    int status;       /* errcode_status(err) */
    const char *code; /* errcode_name(err) */
    char message[512];
} api_error;

typedef enum {
    API_FILL_MASK = 0,
    API_NEXT_SENTENCE = 1,
    API_TOKENIZE = 2,
    API_DECODE = 3, /* ids -> text: no forward pass, decoded by the parse */
    API_SCORE = 4   /* pseudo-log-likelihood: its own forward passes (infer.c) */
} api_kind;

/* One input of a job: what the parse found (api.c), then the numbers the
 * worker computed for it (infer.c), which answer.c renders. */
typedef struct api_input {
    tok_sequence seq;
    int n_masks;
    int32_t *labels;  /* seq.len entries or NULL */
    int32_t *mlm_pos; /* ascending positions whose MLM logits are needed */
    int n_mlm;
    int *mask_rows; /* n_masks indices into mlm_pos: the [MASK] rows, ascending */
    int nsp_label;  /* -1: none */
    /* results, set by the worker */
    int32_t *top_ids;  /* n_masks x job->top_k candidates, best first per mask */
    float *top_scores; /* their softmax probabilities */
    double loss;       /* mean cross-entropy over the labelled tokens; NAN: none */
    int n_labelled;    /* MLM tokens labelled (not -100) */
    float nsp_logits[2];
    char *text;      /* /v1/decode: the decoded string */
    double *logprob; /* /v1/score: seq.len entries, 0 at [CLS]/[SEP] */
    double pll;      /* /v1/score: their sum */
} api_input;

typedef struct api_job {
    pool_item item; /* first member: the pool links jobs through it */
    api_kind kind;
    int batched; /* inputs was a JSON list: answer with a list */
    int n_inputs;
    api_input *inputs;
    int top_k;
    int32_t *targets; /* NULL: whole vocabulary */
    int n_targets;
    int has_labels;
    long tokens;         /* sum of the inputs' seq.len, counted once by the parse */
    long predictions;    /* fill-mask: sum over inputs of [MASK]s x top_k */
    json_t *req;         /* API_TOKENIZE: the request, tokenized by the worker */
    int64_t deadline_ns; /* CLOCK_MONOTONIC */
    /* Where the request's time went (CLOCK_MONOTONIC ns; durations in ns), for
     * bert_request_stage_seconds and the x-*-time response headers: set by
     * http.c (queued_ns) and by the worker (the rest; started_ns 0 when no
     * worker took the job). */
    int64_t queued_ns, started_ns;
    int64_t tokenize_ns, inference_ns, serialize_ns;
    /* model.compute int8-checked: set when int8's answer was checked (a
     * fill-mask or next-sentence job), and how many of its inputs were then
     * answered again in float32 (the X-Rechecked-Inputs header). */
    int checked, rechecked;
    /* filled by the worker */
    int status;
    char *body;
    size_t body_len;
    const char *err_code; /* NULL on success */
    /* called by the worker once status/body are set */
    void (*complete)(struct api_job *job);
    /* NULL, or nonzero once the client that waits for this job has gone: the
     * worker then drops the job (queued) or stops its batch (running). Called
     * on the worker thread while the job is not yet completed. */
    int (*gone)(struct api_job *job);
    void *owner;
} api_job;

void api_job_free(api_job *job);

/* Each returns 0 and a job, or -1 with e filled. */
int api_parse_fill_mask(const api_ctx *ctx, json_t *req, api_job **out, api_error *e);
int api_parse_next_sentence(const api_ctx *ctx, json_t *req, api_job **out, api_error *e);

/* /v1/tokenize: a job whose inputs hold the sequences (answer_render turns
 * them into the answer); *tokens receives the token count for logs, also on
 * a refusal. More than limits.max_tokenize_tokens tokens over all inputs is
 * 422 too_many_tokens. */
int api_parse_tokenize(const api_ctx *ctx, json_t *req, api_job **out, long *tokens, api_error *e);
/* /v1/decode: {"ids": [int...] | [[int...]...], "skip_special_tokens": bool}.
 * Each list is decoded here (tok_decode) into its input's text. More than
 * limits.max_decode_ids ids over all lists is 422 too_many_tokens; an id
 * outside the vocabulary is 422 invalid_input. *tokens: ids counted. */
int api_parse_decode(const api_ctx *ctx, json_t *req, api_job **out, long *tokens, api_error *e);
/* /v1/score: each input tokenized as one sequence; more than
 * limits.max_score_tokens word pieces in one input is 422 input_too_long, an
 * input with none 422 invalid_input, a model without an MLM head 422
 * head_unavailable. The worker (infer.c) computes the scores. */
int api_parse_score(const api_ctx *ctx, json_t *req, api_job **out, api_error *e);
/* The three POST routes as jobs for the worker pool, parsed there: on an
 * HTTP polling thread, which also answers /healthz, tokenizing a 1 MB body
 * held every probe of that thread up for as long. The job keeps a reference
 * to req. Its batching cost is an upper bound of the tokens parsing can give
 * (per input min(max_len, text bytes + 3); /v1/tokenize, which runs no
 * forward pass, and /v1/decode: body_bytes / 4; /v1/score: the square of
 * that bound per input, as it runs one masked copy per word piece), so
 * batches stay within batch_max_cost. */
int api_defer(const api_ctx *ctx, api_kind kind, json_t *req, size_t body_bytes, api_job **out,
              api_error *e);
/* Worker thread: parses a deferred job (req set) in place. Returns 1 when the
 * job now has its refusal (status, body), 0 when it is parsed: ready for the
 * forward pass, or for answer_render (API_TOKENIZE). A job with no req
 * (parsed already) is ready. */
int api_prepare(const api_ctx *ctx, api_job *job);

/* /v1/models body. */
char *api_models(const api_ctx *ctx, size_t *len);

#endif
