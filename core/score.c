/* score: pseudo-log-likelihood under the MLM head. See score.h. */
#include "score.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objectives.h"

/* Runs copies [first, first + n) of the masked copies: copy j masks
 * positions[j]. copies holds n * len ids; seqs n inputs. */
static int score_chunk(const bert_model *m, bert_workspace *ws, const int32_t *ids,
                       const int32_t *type_ids, int len, const int *positions, int n,
                       int32_t mask_id, int32_t *copies, int32_t *mlm_pos, bert_seq_input *seqs,
                       double *logprob, char *err, size_t errlen) {
    const int V = bert_model_config(m)->vocab_size;
    for (int j = 0; j < n; j++) {
        int32_t *c = copies + (size_t)j * len;
        memcpy(c, ids, sizeof(int32_t) * (size_t)len);
        c[positions[j]] = mask_id;
        mlm_pos[j] = positions[j];
        seqs[j] = (bert_seq_input){c, type_ids, len, &mlm_pos[j], 1};
    }
    bert_forward_out out;
    int rc = bert_forward(m, ws, seqs, n, 0, &out, err, errlen);
    if (rc) return rc;
    /* A few rows at a time: (rows x vocab) logits are never all held. */
    enum { ROWS = 16 };
    for (int j0 = 0; j0 < n; j0 += ROWS) {
        int k = n - j0 < ROWS ? n - j0 : ROWS;
        const float *logits = bert_mlm_logits(m, ws, j0, k);
        if (!logits) {
            snprintf(err, errlen, "out of memory for MLM logits");
            return BERT_ERR_NOMEM;
        }
        for (int r = 0; r < k; r++) {
            int pos = positions[j0 + r];
            logprob[pos] = obj_log_softmax_at(logits + (size_t)r * V, V, ids[pos]);
        }
    }
    return BERT_OK;
}

int score_pll(const bert_model *m, bert_workspace *ws, const int32_t *ids, const int32_t *type_ids,
              int len, const uint8_t *scored, int32_t mask_id, int max_batch_tokens,
              double *logprob, double *total, char *err, size_t errlen) {
    int rc = BERT_OK;
    int *positions = NULL;
    int32_t *copies = NULL, *mlm_pos = NULL;
    bert_seq_input *seqs = NULL;

    *total = 0.0;
    if (!bert_model_has_mlm(m)) {
        snprintf(err, errlen, "this model has no masked-LM head");
        return BERT_ERR_NO_HEAD;
    }
    if (len <= 0) {
        snprintf(err, errlen, "empty sequence");
        return BERT_ERR_INPUT;
    }
    int n = 0;
    positions = malloc(sizeof(int) * (size_t)len);
    if (!positions) goto nomem;
    for (int i = 0; i < len; i++) {
        logprob[i] = 0.0;
        if (scored[i]) positions[n++] = i;
    }
    if (n == 0) goto cleanup;

    /* Copies per forward: as many whole sequences as max_batch_tokens holds, at least one. */
    int per = max_batch_tokens > len ? max_batch_tokens / len : 1;
    if (per > n) per = n;
    copies = malloc(sizeof(int32_t) * (size_t)per * (size_t)len);
    mlm_pos = malloc(sizeof(int32_t) * (size_t)per);
    seqs = malloc(sizeof(bert_seq_input) * (size_t)per);
    if (!copies || !mlm_pos || !seqs) goto nomem;

    for (int first = 0; first < n; first += per) {
        int k = n - first < per ? n - first : per;
        rc = score_chunk(m, ws, ids, type_ids, len, positions + first, k, mask_id, copies, mlm_pos,
                         seqs, logprob, err, errlen);
        if (rc) goto cleanup;
    }
    for (int j = 0; j < n; j++)
        *total += logprob[positions[j]];
    goto cleanup;

nomem:
    snprintf(err, errlen, "out of memory");
    rc = BERT_ERR_NOMEM;
cleanup:
    free(positions);
    free(mlm_pos);
    free(copies);
    free(seqs);
    return rc;
}
