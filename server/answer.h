/* answer: the JSON bodies of the /v1 routes, rendered from typed results.
 *
 * Owns: every answer and error body the API sends. The worker (infer.c)
 * computes numbers only into each api_input (top-k ids and scores per
 * [MASK], loss and labelled count, NSP logits) and the parse (api.c) leaves
 * /v1/tokenize's sequences there; this module turns them into the shapes of
 * transformers' fill-mask pipeline, BertForPreTraining's outputs and
 * tokenizers' Encoding, and checks limits.max_answer_bytes. It runs on the
 * worker thread: decoding a candidate's sequence is the expensive part of a
 * large answer, so it stops between inputs once job->gone() says the client
 * has gone (499 client_closed). */
#ifndef BERT_SERVER_ANSWER_H
#define BERT_SERVER_ANSWER_H

#include <jansson.h>
#include <stddef.h>

#include "api.h"

/* Sets job->status/body from its results: 200 and the answer, 413
 * answer_too_large past limits.max_answer_bytes, 499 when the client has
 * gone, 500 when memory runs out. */
void answer_render(const api_ctx *api, api_job *job);

/* Sets status/body to an error answer (frees a previous body). */
void answer_fail(api_job *job, errcode err, const char *message);
/* 413 answer_too_large naming limits.max_answer_bytes. */
void answer_fail_too_large(const api_ctx *api, api_job *job);
/* 499 client_closed: nobody reads it; it is for the access log and metrics. */
void answer_fail_gone(api_job *job);

/* {"error": {"code": ..., "message": ...}} as a malloc'd string. */
char *answer_error_body(const char *code, const char *message, size_t *len);

/* Compact JSON text of v, malloc'd; floats keep float32 round-trip precision. */
char *answer_dump(json_t *v, size_t *len);

#endif
