/* score: how natural a text is to the masked-LM head, as its pseudo-log-
 * likelihood (PLL; Salazar et al., 2020, "Masked Language Model Scoring").
 *
 * Each scored position is masked in turn and the log-probability the MLM head
 * gives the original token there is read; the PLL is their sum. All masked
 * copies of a sequence run through one batched bert_forward (split into
 * sub-batches of at most max_batch_tokens tokens, so the workspace stays
 * bounded however long the text), which is why a text of n word pieces costs
 * about n forward passes' worth of tokens: callers bound n.
 *
 * Owns nothing: plain functions over the caller's model, workspace and
 * buffers. Knows nothing about HTTP or JSON. */
#ifndef BERT_SCORE_H
#define BERT_SCORE_H

#include <stdint.h>

#include "bert.h"

/* ids/type_ids (len) is one encoded sequence (special tokens included).
 * scored (len): non-zero where the token is scored (word pieces; not
 * [CLS]/[SEP]). mask_id: the tokenizer's [MASK] id. logprob (len) receives
 * log P(ids[i] | the rest, ids[i] masked) at scored positions and 0 elsewhere;
 * *total their sum. Returns BERT_OK or a bert_status with err set (no MLM
 * head, bad input, out of memory, or a cancelled workspace). */
int score_pll(const bert_model *m, bert_workspace *ws, const int32_t *ids, const int32_t *type_ids,
              int len, const uint8_t *scored, int32_t mask_id, int max_batch_tokens,
              double *logprob, double *total, char *err, size_t errlen);

#endif
