#include "objectives.h"
#include "ops.h"

#include <math.h>
#include <stddef.h>

void obj_softmax_row(float *row, int C) {
    ops_softmax(row, C);
}

int obj_top_k(const float *vals, const int32_t *cand, int n, int k, int *idx, float *val) {
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

// row (C) -> row[idx] - logsumexp(row), accumulated in double
double obj_log_softmax_at(const float *row, int C, int idx) {
    float max = row[0];
    for (int i = 1; i < C; i++)
        max = row[i] > max ? row[i] : max;
    double sum = 0.0;
    for (int i = 0; i < C; i++)
        sum += exp((double)row[i] - max);
    return (double)row[idx] - max - log(sum);
}

// logits (n,C), labels (n) -> mean over used rows of logsumexp(row) - row[label]
double obj_cross_entropy_mean(const float *logits, const int32_t *labels, int n, int C,
                              int *n_used) {
    double total = 0.0;
    int used = 0;
    for (int r = 0; r < n; r++) {
        if (labels[r] == OBJ_IGNORE_INDEX || labels[r] < 0 || labels[r] >= C) continue;
        total -= obj_log_softmax_at(logits + (size_t)r * C, C, labels[r]);
        used++;
    }
    if (n_used) *n_used = used;
    return used ? total / used : NAN;
}

static uint64_t obj_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void obj_rng_seed(obj_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        rng->s[i] = obj_splitmix64(&seed);
}

static uint64_t obj_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t obj_rng_next(obj_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = obj_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = obj_rotl(s[3], 45);
    return result;
}

double obj_rng_uniform(obj_rng *rng) {
    return (double)(obj_rng_next(rng) >> 11) * 0x1.0p-53;
}

int obj_mask_tokens(int32_t *ids, int32_t *labels, const uint8_t *is_special, int len,
                    double mlm_prob, int32_t mask_id, int vocab_size, obj_rng *rng) {
    int selected = 0;
    for (int i = 0; i < len; i++) {
        labels[i] = OBJ_IGNORE_INDEX;
        if (is_special && is_special[i]) continue;
        if (obj_rng_uniform(rng) >= mlm_prob) continue;
        labels[i] = ids[i];
        selected++;
        double r = obj_rng_uniform(rng);
        if (r < 0.8)
            ids[i] = mask_id;
        else if (r < 0.9)
            ids[i] = (int32_t)(obj_rng_next(rng) % (uint64_t)vocab_size);
        /* else: the remaining 10% keep the original token */
    }
    return selected;
}
