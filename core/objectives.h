/* objectives: BERT's two pretraining objectives as transformers computes them.
 *
 * Owns nothing: plain functions over caller buffers. Losses follow
 * torch.nn.CrossEntropyLoss (mean over non-ignored rows, label -100 ignored),
 * BertForPreTraining's total loss is mlm + nsp. The masking routine
 * implements the 15% / 80-10-10 rule with a seeded, reproducible RNG. */
#ifndef BERT_OBJECTIVES_H
#define BERT_OBJECTIVES_H

#include <stdint.h>

#define OBJ_IGNORE_INDEX (-100)

/* logits (n, C), labels (n) -> mean cross-entropy over rows whose label is not
 * OBJ_IGNORE_INDEX; *n_used receives that count (loss is NaN when 0, as torch). */
double obj_cross_entropy_mean(const float *logits, const int32_t *labels, int n, int C,
                              int *n_used);

/* log_softmax(row)[idx] of one row (C), accumulated in double. */
double obj_log_softmax_at(const float *row, int C, int idx);

/* Numerically stable softmax of one row in place. */
void obj_softmax_row(float *row, int C);

/* The k largest of vals[cand[i]] (or of vals[i] when cand is NULL), i in
 * [0, n), descending; ties keep the lower i first (the fill-mask pipeline's
 * torch.topk order). Writes the chosen i to idx and their values to val
 * (k entries each) and returns how many were written: min(k, n). */
int obj_top_k(const float *vals, const int32_t *cand, int n, int k, int *idx, float *val);

/* xoshiro256** seeded with splitmix64: same seed, same masks on any machine. */
typedef struct obj_rng {
    uint64_t s[4];
} obj_rng;
void obj_rng_seed(obj_rng *rng, uint64_t seed);
uint64_t obj_rng_next(obj_rng *rng);
double obj_rng_uniform(obj_rng *rng); /* [0, 1) */

/* BERT masking over ids (len). Positions with is_special[i] != 0 are never
 * chosen. Each other position is selected with probability mlm_prob; a
 * selected token becomes mask_id (80%), a random id in [0, vocab) (10%) or
 * stays (10%). labels[i] = original id where selected, else OBJ_IGNORE_INDEX.
 * Returns the number of selected positions. */
int obj_mask_tokens(int32_t *ids, int32_t *labels, const uint8_t *is_special, int len,
                    double mlm_prob, int32_t mask_id, int vocab_size, obj_rng *rng);

#endif
