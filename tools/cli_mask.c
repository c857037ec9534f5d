/* bert-cli mask: the MLM masking routine, exposed so its statistics and its
 * reproducibility can be checked from outside. */
#include "cli.h"
#include "objectives.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *mask_line(const json_t *req, obj_rng *rng, double prob, int32_t mask_id, int V) {
    const json_t *ids = json_object_get(req, "ids");
    const json_t *special = json_object_get(req, "special");
    if (!json_is_array(ids)) return json_pack("{s:s}", "error", "'ids' must be an array");
    size_t n = json_array_size(ids);
    if (special && (!json_is_array(special) || json_array_size(special) != n))
        return json_pack("{s:s}", "error", "'special' must be an array as long as 'ids'");
    int32_t *buf = malloc((n + 1) * sizeof(int32_t));
    int32_t *labels = malloc((n + 1) * sizeof(int32_t));
    uint8_t *is_special = calloc(n + 1, 1);
    json_t *res = NULL;
    if (!buf || !labels || !is_special) {
        res = json_pack("{s:s}", "error", "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        buf[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        is_special[i] = special ? json_is_true(json_array_get(special, i)) ||
                                      json_integer_value(json_array_get(special, i)) != 0
                                : 0;
    }
    obj_mask_tokens(buf, labels, is_special, (int)n, prob, mask_id, V, rng);
    json_t *out_ids = json_array(), *out_labels = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(out_ids, json_integer(buf[i]));
        json_array_append_new(out_labels, json_integer(labels[i]));
    }
    res = json_pack("{s:o, s:o}", "ids", out_ids, "labels", out_labels);
cleanup:
    free(buf), free(labels), free(is_special);
    return res;
}

int cli_mask(int argc, char **argv) {
    unsigned long long seed = 0;
    int vocab = 0, mask_id = 103;
    double prob = 0.15;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--vocab-size") == 0)
            vocab = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--mask-id") == 0)
            mask_id = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--prob") == 0)
            prob = atof(argv[i + 1]);
        else {
            fprintf(stderr, "bert-cli mask: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (vocab <= 0 || argc % 2) {
        fprintf(stderr, "usage: bert-cli mask --seed S --vocab-size V [--mask-id ID] [--prob P]\n");
        return 2;
    }
    obj_rng rng;
    obj_rng_seed(&rng, seed);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        json_error_t jerr;
        json_t *req = json_loadb(line, (size_t)len, 0, &jerr);
        json_t *res = req ? mask_line(req, &rng, prob, mask_id, vocab)
                          : json_pack("{s:s}", "error", jerr.text);
        json_dumpf(res, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(res);
        json_decref(req);
    }
    free(line);
    return 0;
}
