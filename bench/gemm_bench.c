/* gemm_bench: the machine's OpenBLAS sgemm rate at the shapes a BERT forward
 * multiplies, so every model timing can be read as a fraction of what the GEMM
 * library itself reaches on this CPU. Same call as core/ops.c ops_linear:
 * row-major, activations (M,K) times a PyTorch-layout weight (N,K) transposed.
 *
 * Weights are cold, as in a forward pass that streams ~340 MB of bert-base weights
 * through a 32 MiB L3: each call reads the next of enough copies of the weight to fill
 * --pool-mib (default 256). Activations and attention operands stay warm, as they are.
 * --warm uses one copy of everything (the rate a cache-resident weight would get).
 *
 * usage: gemm_bench [--hidden C] [--inter I] [--heads H] [--min-ms MS] [--pool-mib M]
 *                   [--warm] T...
 * stdout: one JSON line per shape: {"name","M","N","K","batch","threads","cold","reps",
 *         "median_ms","best_ms","gflops","gflops_best"}: gflops at the median call,
 *         gflops_best at the fastest.
 * Threads come from OPENBLAS_NUM_THREADS, as they do for bert-server. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEMMB_MAX_REPS 4096

typedef struct gemmb_shape {
    const char *name;
    int M, N, K;
    int trans_b; /* 1: B is (N,K) and used transposed, as nn.Linear weights are */
    int batch;   /* independent products per timed call (attention: one per head) */
    int weight;  /* B is a weight: cold (rotated through copies) unless --warm */
} gemmb_shape;

static double gemmb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int gemmb_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void gemmb_fill(float *x, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = ((float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f) * 0.1f;
    }
}

static void gemmb_call(const gemmb_shape *s, const float *a, const float *b, float *c) {
    for (int h = 0; h < s->batch; h++) {
        size_t aoff = (size_t)h * s->M * s->K, boff = (size_t)h * s->N * s->K;
        size_t coff = (size_t)h * s->M * s->N;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans, s->M, s->N,
                    s->K, 1.0f, a + aoff, s->K, b + boff, s->trans_b ? s->K : s->N, 0.0f, c + coff,
                    s->N);
    }
}

/* Times one shape: two warm-up calls, then calls until min_ms has passed
 * (at least 5). pool_bytes > 0 rotates B through copies filling that many bytes.
 * Returns 0, or -1 with err filled. */
static int gemmb_run(const gemmb_shape *s, double min_ms, size_t pool_bytes, int threads, char *err,
                     size_t errlen) {
    int rc = -1;
    size_t na = (size_t)s->batch * s->M * s->K, nb = (size_t)s->batch * s->N * s->K;
    size_t nc = (size_t)s->batch * s->M * s->N;
    size_t copies = pool_bytes ? (pool_bytes + nb * sizeof(float) - 1) / (nb * sizeof(float)) : 1;
    float *a = malloc(na * sizeof(float)), *b = malloc(copies * nb * sizeof(float));
    float *c = malloc(nc * sizeof(float));
    double *ms = malloc(GEMMB_MAX_REPS * sizeof(double));
    if (!a || !b || !c || !ms) {
        snprintf(err, errlen, "%s: out of memory", s->name);
        goto cleanup;
    }
    gemmb_fill(a, na, 1u);
    gemmb_fill(b, nb, 2u);
    for (size_t i = 1; i < copies; i++)
        memcpy(b + i * nb, b, nb * sizeof(float));
    gemmb_call(s, a, b, c);
    gemmb_call(s, a, b + (copies > 1) * nb, c);
    int reps = 0;
    double total = 0.0;
    while (reps < GEMMB_MAX_REPS && (reps < 5 || total < min_ms)) {
        const float *bw = b + ((size_t)(reps + 2) % copies) * nb;
        double t0 = gemmb_now();
        gemmb_call(s, a, bw, c);
        ms[reps] = (gemmb_now() - t0) * 1e3;
        total += ms[reps++];
    }
    qsort(ms, (size_t)reps, sizeof(double), gemmb_cmp);
    double flops = 2.0 * s->batch * (double)s->M * s->N * s->K;
    double med = ms[reps / 2];
    printf("{\"name\":\"%s\",\"M\":%d,\"N\":%d,\"K\":%d,\"batch\":%d,\"threads\":%d,"
           "\"cold\":%s,\"reps\":%d,"
           "\"median_ms\":%.4f,\"best_ms\":%.4f,\"gflops\":%.2f,\"gflops_best\":%.2f}\n",
           s->name, s->M, s->N, s->K, s->batch, threads, copies > 1 ? "true" : "false", reps, med,
           ms[0], flops / (med * 1e-3) / 1e9, flops / (ms[0] * 1e-3) / 1e9);
    fflush(stdout);
    rc = 0;
cleanup:
    free(a), free(b), free(c), free(ms);
    return rc;
}

int main(int argc, char **argv) {
    int hidden = 768, inter = 3072, heads = 12, n_tokens = 0;
    double min_ms = 300.0, pool_mib = 256.0;
    int warm = 0;
    int *tokens = malloc((size_t)(argc > 1 ? argc : 1) * sizeof(int));
    if (!tokens) return 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--hidden") == 0)
            hidden = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--inter") == 0)
            inter = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--heads") == 0)
            heads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--min-ms") == 0)
            min_ms = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--pool-mib") == 0)
            pool_mib = atof(argv[++i]);
        else if (strcmp(argv[i], "--warm") == 0)
            warm = 1;
        else if (atoi(argv[i]) > 0)
            tokens[n_tokens++] = atoi(argv[i]);
        else {
            fprintf(stderr, "gemm_bench: unknown argument '%s'\n", argv[i]);
            free(tokens);
            return 2;
        }
    }
    if (n_tokens == 0 || hidden < 1 || inter < 1 || heads < 1 || hidden % heads != 0 ||
        pool_mib < 0) {
        fprintf(stderr, "usage: gemm_bench [--hidden C] [--inter I] [--heads H] [--min-ms MS] "
                        "[--pool-mib M] [--warm] T...\n");
        free(tokens);
        return 2;
    }
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    int threads = env ? atoi(env) : 0; /* 0: OpenBLAS's default (all cores) */
    char err[256];
    int rc = 0;
    for (int t = 0; t < n_tokens && rc == 0; t++) {
        int T = tokens[t], D = hidden / heads;
        /* The three nn.Linear shapes of a layer, then for comparison: a fused QKV projection,
         * the per-head attention products, and two layer shapes with the weight stored
         * pre-transposed as (in,out), which OpenBLAS packs by a different routine. */
        const gemmb_shape shapes[] = {
            {"proj_CxC", T, hidden, hidden, 1, 1, 1},
            {"ffn_up_CxI", T, inter, hidden, 1, 1, 1},
            {"ffn_down_IxC", T, hidden, inter, 1, 1, 1},
            {"qkv_fused_Cx3C", T, 3 * hidden, hidden, 1, 1, 1},
            {"attn_scores", T, T, D, 1, heads, 0},
            {"attn_ctx", T, D, T, 0, heads, 0},
            {"proj_CxC_wT", T, hidden, hidden, 0, 1, 1},
            {"ffn_up_CxI_wT", T, inter, hidden, 0, 1, 1},
        };
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]) && rc == 0; s++)
            if (gemmb_run(&shapes[s], min_ms,
                          shapes[s].weight && !warm ? (size_t)(pool_mib * 1048576.0) : 0, threads,
                          err, sizeof(err))) {
                fprintf(stderr, "gemm_bench: %s\n", err);
                rc = 1;
            }
    }
    free(tokens);
    return rc;
}
