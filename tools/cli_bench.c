/* bert-cli bench: times bert_forward in-process, with the FLOP count, so the
 * core's speed can be read without HTTP or JSON in the way. */
#include "bert.h"
#include "cli.h"
#include "clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double bench_now(void) {
    return (double)clock_now_ns() * 1e-9;
}

static int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* FLOPs of one forward over B sequences of T tokens, one MLM row each, and NSP. */
double bench_flops(const bert_config *c, int B, int T) {
    double C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    double per_layer = B * T * (8.0 * C * C + 4.0 * C * I) + B * 4.0 * T * T * C;
    double heads = B * (2.0 * C * C + 2.0 * C * V) + B * (2.0 * C * C + 4.0 * C);
    return c->num_hidden_layers * per_layer + heads;
}

int cli_bench(int argc, char **argv) {
    const char *dir = NULL;
    int T = 128, B = 1, iters = 20, threads = 1;
    bert_load_options lo = {.compute = BERT_COMPUTE_FP32};
    if (!cli_compute_env(&lo.compute)) return 2;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--model") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--tokens") == 0)
            T = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            B = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--iters") == 0)
            iters = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--compute") == 0) {
            int mode = bert_compute_parse(argv[i + 1]);
            if (mode < 0) {
                fprintf(stderr, "bert-cli bench: --compute must be fp32 or int8\n");
                return 2;
            }
            lo.compute = (bert_compute)mode;
        } else {
            fprintf(stderr, "bert-cli bench: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir || T < 2 || B < 1 || iters < 1 || threads < 1) {
        fprintf(stderr,
                "usage: bert-cli bench --model DIR [--tokens T] [--batch B] [--iters N] "
                "[--threads N] [--compute fp32|int8]\n"
                "  --threads N: the forward pass's own threads (bert_workspace_new_threads);\n"
                "  OpenBLAS's come from OPENBLAS_NUM_THREADS, best 1 when N > 1\n");
        return 2;
    }
    char err[512];
    bert_model *m = NULL;
    double t0 = bench_now();
    if (bert_model_load_opts(dir, &lo, &m, err, sizeof(err)) != BERT_OK) {
        fprintf(stderr, "bert-cli: %s\n", err);
        return 1;
    }
    double load_s = bench_now() - t0;
    const bert_config *c = bert_model_config(m);
    if (T > c->max_position_embeddings) T = c->max_position_embeddings;
    int32_t *ids = malloc((size_t)T * sizeof(int32_t));
    int32_t pos = T / 2;
    bert_seq_input *seqs = malloc((size_t)B * sizeof(*seqs));
    double *ms = malloc((size_t)iters * sizeof(double));
    for (int t = 0; t < T; t++)
        ids[t] = 1000 + (t * 7919) % (c->vocab_size - 1000);
    for (int b = 0; b < B; b++)
        seqs[b] = (bert_seq_input){ids, NULL, T, &pos, 1};
    bert_workspace *ws = bert_workspace_new_threads(threads);
    if (!ws) {
        fprintf(stderr, "bert-cli: cannot start %d threads\n", threads);
        free(ids), free(seqs), free(ms);
        bert_model_free(m);
        return 1;
    }
    bert_forward_out out;
    int rc = 0;
    for (int i = -2; i < iters; i++) { /* two warm-up runs page the weights in */
        double s = bench_now();
        if (bert_forward(m, ws, seqs, B, bert_model_has_nsp(m), &out, err, sizeof(err)) ||
            (out.n_mlm_rows && !bert_mlm_logits(m, ws, 0, out.n_mlm_rows))) {
            fprintf(stderr, "bert-cli: %s\n", err);
            rc = 1;
            break;
        }
        if (i >= 0) ms[i] = (bench_now() - s) * 1e3;
    }
    if (rc == 0) {
        qsort(ms, (size_t)iters, sizeof(double), bench_cmp);
        double p50 = ms[iters / 2], p99 = ms[(int)((iters - 1) * 0.99)];
        double gflops = bench_flops(c, B, T) / (p50 * 1e-3) / 1e9;
        printf("{\"tokens\":%d,\"batch\":%d,\"iters\":%d,\"load_s\":%.4f,\"p50_ms\":%.3f,"
               "\"p99_ms\":%.3f,\"min_ms\":%.3f,\"gflops_at_p50\":%.2f,\"workspace_bytes\":%zu,"
               "\"threads\":%d,\"compute\":\"%s\",\"kernel\":\"%s\",\"weight_bytes\":%zu}\n",
               T, B, iters, load_s, p50, p99, ms[0], gflops, bert_workspace_bytes(ws), threads,
               bert_compute_name(bert_model_compute(m)), bert_model_kernel(m),
               bert_model_weight_bytes(m));
    }
    bert_workspace_free(ws);
    free(ids), free(seqs), free(ms);
    bert_model_free(m);
    return rc;
}
