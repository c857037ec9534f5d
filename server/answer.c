/* answer: JSON bodies rendered from typed results. See answer.h. */
#include "answer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objectives.h"

/* Answer bytes a prediction adds besides its two strings: the keys, the score
 * and the token id of {"score":..,"token":..,"token_str":"","sequence":""}. */
#define ANSWER_PRED_OVERHEAD 80

/* Why building an answer stopped. */
typedef enum { ANS_OK = 0, ANS_NOMEM = 1, ANS_TOO_LARGE = 2, ANS_GONE = 3 } ans_status;

char *answer_dump(json_t *v, size_t *len) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (s && len) *len = strlen(s);
    return s;
}

char *answer_error_body(const char *code, const char *message, size_t *len) {
    json_t *root = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    if (!root) /* message was not UTF-8: never expected, but stay well-formed */
        root = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", "request rejected");
    char *s = answer_dump(root, len);
    json_decref(root);
    return s;
}

void answer_fail(api_job *job, errcode err, const char *message) {
    free(job->body);
    job->status = errcode_status(err);
    job->err_code = errcode_name(err);
    job->body = answer_error_body(job->err_code, message, &job->body_len);
}

void answer_fail_too_large(const api_ctx *api, api_job *job) {
    char msg[300];
    snprintf(msg, sizeof(msg),
             "the answer would be larger than %ld bytes (limits.max_answer_bytes); ask for fewer "
             "predictions per request (fewer inputs or [MASK] tokens, a smaller "
             "parameters.top_k) or shorter inputs",
             api->cfg->max_answer_bytes);
    answer_fail(job, ERR_ANSWER_TOO_LARGE, msg);
}

void answer_fail_gone(api_job *job) {
    answer_fail(job, ERR_CLIENT_CLOSED,
                "the client closed the connection before the answer was ready");
}

static json_t *json_real_or_null(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

/* ---- /v1/fill-mask ---- */

/* One [MASK]'s candidates as the pipeline lists them. ids is decode scratch
 * of in->seq.len entries. *budget is what the answer may still grow by (an
 * estimate, before JSON escaping; finish() checks the real size): building
 * stops with ANS_TOO_LARGE once it is spent, so a request never holds much
 * more than limits.max_answer_bytes. */
static json_t *mask_predictions(const api_ctx *api, const api_job *job, const api_input *in, int m,
                                int single_mask, int32_t *ids, long *budget, ans_status *st) {
    int pos = in->mlm_pos[in->mask_rows[m]];
    const int32_t *cand = in->top_ids + (size_t)m * job->top_k;
    const float *score = in->top_scores + (size_t)m * job->top_k;
    int32_t pad = tok_specials(api->tok)->pad;
    json_t *list = json_array();
    if (!list) {
        *st = ANS_NOMEM;
        return NULL;
    }
    for (int c = 0; c < job->top_k; c++) {
        int32_t id = cand[c];
        /* The pipeline decodes the input with this candidate in place and any
         * [PAD] dropped; the other masks stay visible when there are several.
         * transformers repeats that sequence for every candidate, single mask
         * or not, so the answer does too: limits.max_predictions_per_request
         * and the answer budget bound the repetition. */
        int n = 0;
        for (int p = 0; p < in->seq.len; p++) {
            int32_t t = p == pos ? id : in->seq.ids[p];
            if (t != pad) ids[n++] = t;
        }
        char *sequence = tok_decode(api->tok, ids, n, single_mask, api->cleanup_spaces);
        char *token_str = tok_decode(api->tok, &id, 1, 0, api->cleanup_spaces);
        *budget -= (long)(ANSWER_PRED_OVERHEAD + (sequence ? strlen(sequence) : 0) +
                          (token_str ? strlen(token_str) : 0));
        json_t *o = json_object();
        if (o) {
            json_object_set_new(o, "score", json_real((double)score[c]));
            json_object_set_new(o, "token", json_integer(id));
            json_object_set_new(o, "token_str", json_string(token_str ? token_str : ""));
            json_object_set_new(o, "sequence", json_string(sequence ? sequence : ""));
        }
        free(sequence);
        free(token_str);
        if (!o || json_array_append_new(list, o) != 0 || *budget < 0) {
            *st = !o ? ANS_NOMEM : *budget < 0 ? ANS_TOO_LARGE : ANS_NOMEM;
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* One input: a single mask's candidate list, or one list per mask. */
static json_t *fill_mask_input(const api_ctx *api, const api_job *job, const api_input *in,
                               long *budget, ans_status *st) {
    int single = in->n_masks == 1;
    int32_t *ids = malloc((size_t)(in->seq.len ? in->seq.len : 1) * sizeof(int32_t));
    json_t *per_mask = single ? NULL : json_array();
    if (!ids || (!single && !per_mask)) {
        free(ids);
        json_decref(per_mask);
        *st = ANS_NOMEM;
        return NULL;
    }
    for (int m = 0; m < in->n_masks; m++) {
        json_t *preds = mask_predictions(api, job, in, m, single, ids, budget, st);
        if (!preds) {
            json_decref(per_mask);
            per_mask = NULL;
            break;
        }
        if (single)
            per_mask = preds;
        else
            json_array_append_new(per_mask, preds);
    }
    free(ids);
    return per_mask;
}

static json_t *fill_mask_answer(const api_ctx *api, api_job *job, ans_status *st) {
    long budget = api->cfg->max_answer_bytes;
    double loss_sum = 0;
    int labelled = 0;
    json_t *answer = job->batched ? json_array() : NULL;
    json_t *losses = json_array();
    for (int i = 0; i < job->n_inputs; i++) {
        const api_input *in = &job->inputs[i];
        /* An input's predictions are the expensive part of a large answer:
         * stop between inputs when nobody waits for it any more. */
        json_t *o = NULL;
        if (job->gone && job->gone(job))
            *st = ANS_GONE;
        else
            o = fill_mask_input(api, job, in, &budget, st);
        if (!o) {
            json_decref(losses);
            json_decref(answer);
            return NULL;
        }
        if (in->n_labelled > 0) {
            loss_sum += in->loss * in->n_labelled;
            labelled += in->n_labelled;
        }
        json_array_append_new(losses, json_real_or_null(in->loss));
        if (job->batched)
            json_array_append_new(answer, o);
        else
            answer = o;
    }
    if (!job->has_labels) {
        json_decref(losses);
        return answer;
    }
    /* Mean over every labelled token of the request: what transformers
     * returns for the same inputs padded into one batch. */
    double total = labelled ? loss_sum / labelled : NAN;
    return json_pack("{s:o,s:o,s:o,s:i}", "predictions", answer, "loss", json_real_or_null(total),
                     "losses", losses, "labelled_tokens", labelled);
}

/* ---- /v1/next-sentence ---- */

static json_t *nsp_input(const api_input *in) {
    const float *logits = in->nsp_logits;
    float p[2] = {logits[0], logits[1]};
    obj_softmax_row(p, 2);
    int label = logits[1] > logits[0] ? 1 : 0;
    json_t *o = json_object();
    json_object_set_new(o, "is_next_probability", json_real(p[0]));
    json_object_set_new(o, "not_next_probability", json_real(p[1]));
    json_object_set_new(o, "logits", json_pack("[f,f]", (double)logits[0], (double)logits[1]));
    json_object_set_new(o, "label", json_string(label == 0 ? "is_next" : "not_next"));
    json_object_set_new(o, "label_id", json_integer(label));
    if (in->nsp_label >= 0) json_object_set_new(o, "loss", json_real_or_null(in->loss));
    return o;
}

static json_t *nsp_answer(api_job *job) {
    json_t *answer = job->batched ? json_array() : NULL;
    for (int i = 0; i < job->n_inputs; i++) {
        json_t *o = nsp_input(&job->inputs[i]);
        if (job->batched)
            json_array_append_new(answer, o);
        else
            answer = o;
    }
    return answer;
}

/* ---- /v1/tokenize ---- */

static json_t *encoding_json(const api_ctx *api, const tok_sequence *s) {
    json_t *tokens = json_array(), *ids = json_array(), *types = json_array(),
           *offsets = json_array(), *seq_ids = json_array();
    for (int i = 0; i < s->len; i++) {
        const char *t = tok_id_to_token(api->tok, s->ids[i]);
        json_array_append_new(tokens, json_string(t ? t : ""));
        json_array_append_new(ids, json_integer(s->ids[i]));
        json_array_append_new(types, json_integer(s->type_ids[i]));
        json_array_append_new(offsets, json_pack("[i,i]", s->start[i], s->end[i]));
        json_array_append_new(seq_ids, s->source[i] < 0 ? json_null() : json_integer(s->source[i]));
    }
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "tokens", tokens, "ids", ids, "token_type_ids", types,
                     "offsets", offsets, "sequence_ids", seq_ids);
}

static json_t *tokenize_answer(const api_ctx *api, api_job *job, ans_status *st) {
    json_t *answer = job->batched ? json_array() : NULL;
    for (int i = 0; i < job->n_inputs; i++) {
        json_t *enc = encoding_json(api, &job->inputs[i].seq);
        if (!enc) {
            json_decref(answer);
            *st = ANS_NOMEM;
            return NULL;
        }
        if (job->batched)
            json_array_append_new(answer, enc);
        else
            answer = enc;
    }
    return answer;
}

/* ---- /v1/decode ---- */

static json_t *decode_answer(api_job *job, ans_status *st) {
    json_t *answer = job->batched ? json_array() : NULL;
    for (int i = 0; i < job->n_inputs; i++) {
        /* tok_decode's output is UTF-8: it joins vocabulary strings. */
        json_t *t = json_string(job->inputs[i].text ? job->inputs[i].text : "");
        if (!t) {
            json_decref(answer);
            *st = ANS_NOMEM;
            return NULL;
        }
        if (job->batched)
            json_array_append_new(answer, t);
        else
            answer = t;
    }
    return answer;
}

/* ---- /v1/score ---- */

static json_t *score_input(const api_ctx *api, const api_input *in) {
    json_t *tokens = json_array();
    int n = 0;
    for (int p = 0; p < in->seq.len; p++) {
        if (in->seq.source[p] < 0) continue; /* [CLS]/[SEP]: not scored */
        const char *t = tok_id_to_token(api->tok, in->seq.ids[p]);
        json_array_append_new(tokens, json_pack("{s:s,s:i,s:f}", "token", t ? t : "", "id",
                                                in->seq.ids[p], "logprob", in->logprob[p]));
        n++;
    }
    return json_pack("{s:f,s:o,s:f}", "score", in->pll, "tokens", tokens, "mean_logprob",
                     n > 0 ? in->pll / n : 0.0);
}

static json_t *score_answer(const api_ctx *api, api_job *job, ans_status *st) {
    json_t *answer = job->batched ? json_array() : NULL;
    for (int i = 0; i < job->n_inputs; i++) {
        json_t *o = score_input(api, &job->inputs[i]);
        if (!o) {
            json_decref(answer);
            *st = ANS_NOMEM;
            return NULL;
        }
        if (job->batched)
            json_array_append_new(answer, o);
        else
            answer = o;
    }
    return answer;
}

/* ---- all routes ---- */

static void finish(const api_ctx *api, api_job *job, json_t *answer) {
    size_t len = 0;
    char *body = answer_dump(answer, &len);
    json_decref(answer);
    if (!body) {
        answer_fail(job, ERR_INTERNAL,
                    job->kind == API_FILL_MASK ? "could not encode the answer" : "out of memory");
    } else if (len > (size_t)api->cfg->max_answer_bytes) {
        free(body);
        if (job->kind != API_FILL_MASK && job->kind != API_NEXT_SENTENCE) {
            /* This route's own message: no predictions to ask fewer of. */
            char msg[300];
            snprintf(msg, sizeof(msg),
                     "the answer would be %zu bytes; at most %ld are sent "
                     "(limits.max_answer_bytes): send less text per request",
                     len, api->cfg->max_answer_bytes);
            answer_fail(job, ERR_ANSWER_TOO_LARGE, msg);
        } else {
            answer_fail_too_large(api, job);
        }
    } else {
        free(job->body);
        job->body = body;
        job->body_len = len;
        job->status = 200;
        job->err_code = NULL;
    }
}

void answer_render(const api_ctx *api, api_job *job) {
    ans_status st = ANS_OK;
    json_t *answer = NULL;
    switch (job->kind) {
    case API_FILL_MASK:
        answer = fill_mask_answer(api, job, &st);
        break;
    case API_NEXT_SENTENCE:
        answer = nsp_answer(job);
        break;
    case API_TOKENIZE:
        answer = tokenize_answer(api, job, &st);
        break;
    case API_DECODE:
        answer = decode_answer(job, &st);
        break;
    case API_SCORE:
        answer = score_answer(api, job, &st);
        break;
    }
    if (answer || st == ANS_OK)
        finish(api, job, answer);
    else if (st == ANS_TOO_LARGE)
        answer_fail_too_large(api, job);
    else if (st == ANS_GONE)
        answer_fail_gone(job);
    else
        answer_fail(job, ERR_INTERNAL,
                    job->kind == API_FILL_MASK ? "out of memory computing the MLM logits"
                                               : "out of memory");
}
