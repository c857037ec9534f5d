/* metrics: lock-free counters rendered as Prometheus text. */
#include "metrics.h"

#include <cblas.h>
#include <dirent.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"

static const char *ROUTE_PATHS[ROUTE_COUNT] = {
    "/v1/fill-mask", "/v1/next-sentence", "/v1/tokenize",  "/v1/decode", "/v1/score",
    "/v1/models",    "/healthz",          "/readyz",       "/metrics",   "/",
    "/docs",         "/openapi.json",     "/openapi.yaml", "other",
};

static const int STATUSES[] = {200, 204, 400, 401, 404, 405, 413, 415, 422, 500, 501, 503, 504};
#define N_STATUS     ((int)(sizeof(STATUSES) / sizeof(STATUSES[0])))
#define STATUS_OTHER N_STATUS

/* Request latency buckets (seconds): sub-millisecond health checks up to
 * long batched inference. */
static const double LAT_BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
#define N_LAT ((int)(sizeof(LAT_BUCKETS) / sizeof(LAT_BUCKETS[0])))

static const int BATCH_BUCKETS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define N_BATCH ((int)(sizeof(BATCH_BUCKETS) / sizeof(BATCH_BUCKETS[0])))

/* Tokens in one inference request (all its inputs): one word up to
 * max_inputs_per_request inputs of max_sequence_length tokens. */
static const int TOKEN_BUCKETS[] = {4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
#define N_TOKEN_B ((int)(sizeof(TOKEN_BUCKETS) / sizeof(TOKEN_BUCKETS[0])))

static struct {
    atomic_uint_fast64_t requests[ROUTE_COUNT][N_STATUS + 1];
    atomic_uint_fast64_t tok_bucket[ROUTE_COUNT][N_TOKEN_B + 1];
    atomic_uint_fast64_t tok_sum[ROUTE_COUNT];
    atomic_uint_fast64_t undelivered[ROUTE_COUNT];
    atomic_uint_fast64_t lat_bucket[ROUTE_COUNT][N_LAT + 1];
    atomic_uint_fast64_t lat_sum_ns[ROUTE_COUNT];
    atomic_uint_fast64_t stage_bucket[STAGE_COUNT][N_LAT + 1];
    atomic_uint_fast64_t stage_sum_ns[STAGE_COUNT];
    atomic_uint_fast64_t batch_bucket[N_BATCH + 1];
    atomic_uint_fast64_t batch_sum, batch_count;
    atomic_uint_fast64_t tokens;
    atomic_uint_fast64_t checked, rechecked;
    atomic_int inflight;
} M;

const char *metrics_route_path(metrics_route r) {
    return (r >= 0 && r < ROUTE_COUNT) ? ROUTE_PATHS[r] : "other";
}

void metrics_init(void) {
    memset(&M, 0, sizeof(M));
}

void metrics_observe_request(metrics_route r, int status, double seconds, int delivered) {
    if (r < 0 || r >= ROUTE_COUNT) r = ROUTE_OTHER;
    if (!delivered) {
        atomic_fetch_add(&M.undelivered[r], 1);
        return;
    }
    int si = STATUS_OTHER;
    for (int i = 0; i < N_STATUS; i++)
        if (STATUSES[i] == status) si = i;
    atomic_fetch_add(&M.requests[r][si], 1);
    int b = 0;
    while (b < N_LAT && seconds > LAT_BUCKETS[b])
        b++;
    atomic_fetch_add(&M.lat_bucket[r][b], 1);
    atomic_fetch_add(&M.lat_sum_ns[r], (uint_fast64_t)(seconds * 1e9));
}

void metrics_observe_batch(int sequences, long tokens) {
    int b = 0;
    while (b < N_BATCH && sequences > BATCH_BUCKETS[b])
        b++;
    atomic_fetch_add(&M.batch_bucket[b], 1);
    atomic_fetch_add(&M.batch_sum, (uint_fast64_t)sequences);
    atomic_fetch_add(&M.batch_count, 1);
    atomic_fetch_add(&M.tokens, (uint_fast64_t)tokens);
}

void metrics_observe_checked(int inputs, int rechecked) {
    atomic_fetch_add(&M.checked, (uint_fast64_t)inputs);
    atomic_fetch_add(&M.rechecked, (uint_fast64_t)rechecked);
}

static int route_has_tokens(int r);

void metrics_observe_request_tokens(metrics_route r, long tokens) {
    if (!route_has_tokens(r) || tokens < 0) return;
    int b = 0;
    while (b < N_TOKEN_B && tokens > TOKEN_BUCKETS[b])
        b++;
    atomic_fetch_add(&M.tok_bucket[r][b], 1);
    atomic_fetch_add(&M.tok_sum[r], (uint_fast64_t)tokens);
}

static const char *const STAGE_NAMES[STAGE_COUNT] = {"queue", "tokenization", "inference",
                                                     "serialization"};

void metrics_observe_stage(metrics_stage st, double seconds) {
    if (st < 0 || st >= STAGE_COUNT || !(seconds >= 0)) return;
    int b = 0;
    while (b < N_LAT && seconds > LAT_BUCKETS[b])
        b++;
    atomic_fetch_add(&M.stage_bucket[st][b], 1);
    atomic_fetch_add(&M.stage_sum_ns[st], (uint_fast64_t)(seconds * 1e9));
}

void metrics_add_inflight(int delta) {
    atomic_fetch_add(&M.inflight, delta);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* Label values are file/directory names: escape as the exposition format asks. */
static void sb_label(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *s);
    }
}

/* Routes whose requests carry tokens (metrics_observe_request_tokens). */
static int route_has_tokens(int r) {
    return r == ROUTE_FILL_MASK || r == ROUTE_NEXT_SENTENCE || r == ROUTE_TOKENIZE ||
           r == ROUTE_DECODE || r == ROUTE_SCORE;
}

static void render_request_tokens(sbuf *b) {
    sb_printf(b, "# HELP bert_request_tokens Tokens in one answered inference request, all its "
                 "inputs together (special tokens included), by route.\n"
                 "# TYPE bert_request_tokens histogram\n");
    for (int r = 0; r < ROUTE_COUNT; r++) {
        if (!route_has_tokens(r)) continue;
        uint64_t cum = 0;
        for (int i = 0; i <= N_TOKEN_B; i++) {
            cum += atomic_load(&M.tok_bucket[r][i]);
            if (i < N_TOKEN_B)
                sb_printf(b, "bert_request_tokens_bucket{route=\"%s\",le=\"%d\"} %llu\n",
                          ROUTE_PATHS[r], TOKEN_BUCKETS[i], (unsigned long long)cum);
            else
                sb_printf(b, "bert_request_tokens_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                          ROUTE_PATHS[r], (unsigned long long)cum);
        }
        sb_printf(b, "bert_request_tokens_sum{route=\"%s\"} %llu\n", ROUTE_PATHS[r],
                  (unsigned long long)atomic_load(&M.tok_sum[r]));
        sb_printf(b, "bert_request_tokens_count{route=\"%s\"} %llu\n", ROUTE_PATHS[r],
                  (unsigned long long)cum);
    }
}

#ifndef __VERSION__
#define __VERSION__ "unknown"
#endif
#if defined(__clang__)
#define METRICS_COMPILER "clang"
#elif defined(__GNUC__)
#define METRICS_COMPILER "gcc"
#else
#define METRICS_COMPILER "cc"
#endif

static void render_build_info(sbuf *b) {
    sb_printf(b, "# HELP bert_build_info The running binary and the libraries it uses; the value "
                 "is always 1.\n"
                 "# TYPE bert_build_info gauge\n"
                 "bert_build_info{version=\"");
    sb_label(b, BERT_SERVE_VERSION);
    sb_printf(b, "\",compiler=\"%s ", METRICS_COMPILER);
    sb_label(b, __VERSION__);
    sb_printf(b, "\",libmicrohttpd=\"");
    sb_label(b, MHD_get_version());
    sb_printf(b, "\",openblas=\"");
    sb_label(b, openblas_get_config());
    sb_printf(b, "\"} 1\n");
}

/* /proc/self/stat fields after the command (which may hold spaces and ')'). */
typedef struct proc_stat {
    unsigned long long utime, stime, starttime, vsize;
    long threads, rss_pages;
} proc_stat;

static int read_proc_stat(proc_stat *ps) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) cutime cstime priority nice num_threads(20) itrealvalue
     * starttime(22) vsize(23) rss(24). */
    int got =
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %ld "
               "%*d %llu %llu %ld",
               &ps->utime, &ps->stime, &ps->threads, &ps->starttime, &ps->vsize, &ps->rss_pages);
    return got == 6 ? 0 : -1;
}

static long long boot_time_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[256];
    long long bt = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %lld", &bt) == 1) break;
    fclose(f);
    return bt;
}

static long open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own */
}

/* The process collector's names and meanings as Prometheus' client libraries
 * export them (process_threads is this server's own: those have none). */
static void render_process(sbuf *b) {
    proc_stat ps;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (read_proc_stat(&ps) == 0 && tick > 0 && page > 0) {
        sb_printf(b,
                  "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                  "seconds.\n"
                  "# TYPE process_cpu_seconds_total counter\n"
                  "process_cpu_seconds_total %.2f\n"
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %lld\n"
                  "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                  "# TYPE process_virtual_memory_bytes gauge\n"
                  "process_virtual_memory_bytes %llu\n"
                  "# HELP process_threads Threads in the process (workers, their compute "
                  "threads, HTTP polling threads, the gate).\n"
                  "# TYPE process_threads gauge\n"
                  "process_threads %ld\n",
                  (double)(ps.utime + ps.stime) / (double)tick, (long long)ps.rss_pages * page,
                  ps.vsize, ps.threads);
        long long bt = boot_time_s();
        if (bt >= 0)
            sb_printf(b,
                      "# HELP process_start_time_seconds Start time of the process since unix "
                      "epoch in seconds.\n"
                      "# TYPE process_start_time_seconds gauge\n"
                      "process_start_time_seconds %.2f\n",
                      (double)bt + (double)ps.starttime / (double)tick);
    }
    long fds = open_fds();
    struct rlimit rl;
    if (fds >= 0)
        sb_printf(b,
                  "# HELP process_open_fds Number of open file descriptors.\n"
                  "# TYPE process_open_fds gauge\n"
                  "process_open_fds %ld\n",
                  fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        sb_printf(b,
                  "# HELP process_max_fds Maximum number of open file descriptors.\n"
                  "# TYPE process_max_fds gauge\n"
                  "process_max_fds %llu\n",
                  (unsigned long long)rl.rlim_cur);
}

char *metrics_render(const metrics_gauges *g, size_t *len) {
    sbuf b = {malloc(16384), 0, 16384, 0};
    if (!b.p) return NULL;
    b.p[0] = 0;

    sb_printf(&b, "# HELP bert_requests_total HTTP requests answered, by route and status.\n"
                  "# TYPE bert_requests_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int s = 0; s <= N_STATUS; s++) {
            uint64_t v = atomic_load(&M.requests[r][s]);
            /* Always print 200 so every route's series exists from start-up. */
            if (v == 0 && !(s < N_STATUS && STATUSES[s] == 200)) continue;
            if (s < N_STATUS)
                sb_printf(&b, "bert_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          ROUTE_PATHS[r], STATUSES[s], (unsigned long long)v);
            else
                sb_printf(&b, "bert_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                          ROUTE_PATHS[r], (unsigned long long)v);
        }

    sb_printf(&b, "# HELP bert_requests_undelivered_total Requests whose answer did not reach the "
                  "client in full (it closed the connection first, or shutdown cut it), by route.\n"
                  "# TYPE bert_requests_undelivered_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++)
        sb_printf(&b, "bert_requests_undelivered_total{route=\"%s\"} %llu\n", ROUTE_PATHS[r],
                  (unsigned long long)atomic_load(&M.undelivered[r]));

    sb_printf(&b, "# HELP bert_request_stage_seconds Where a request's time went once accepted: "
                  "queue, tokenization, inference (its forward pass, top-k and losses), "
                  "serialization.\n"
                  "# TYPE bert_request_stage_seconds histogram\n");
    for (int st = 0; st < STAGE_COUNT; st++) {
        uint64_t cum = 0;
        for (int i = 0; i <= N_LAT; i++) {
            cum += atomic_load(&M.stage_bucket[st][i]);
            if (i < N_LAT)
                sb_printf(&b, "bert_request_stage_seconds_bucket{stage=\"%s\",le=\"%g\"} %llu\n",
                          STAGE_NAMES[st], LAT_BUCKETS[i], (unsigned long long)cum);
            else
                sb_printf(&b, "bert_request_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n",
                          STAGE_NAMES[st], (unsigned long long)cum);
        }
        sb_printf(&b, "bert_request_stage_seconds_sum{stage=\"%s\"} %.9f\n", STAGE_NAMES[st],
                  (double)atomic_load(&M.stage_sum_ns[st]) / 1e9);
        sb_printf(&b, "bert_request_stage_seconds_count{stage=\"%s\"} %llu\n", STAGE_NAMES[st],
                  (unsigned long long)cum);
    }

    sb_printf(&b, "# HELP bert_request_duration_seconds Time from request start to response, "
                  "by route.\n"
                  "# TYPE bert_request_duration_seconds histogram\n");
    for (int r = 0; r < ROUTE_COUNT; r++) {
        uint64_t cum = 0;
        for (int i = 0; i <= N_LAT; i++) {
            cum += atomic_load(&M.lat_bucket[r][i]);
            if (i < N_LAT)
                sb_printf(&b, "bert_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                          ROUTE_PATHS[r], LAT_BUCKETS[i], (unsigned long long)cum);
            else
                sb_printf(&b,
                          "bert_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                          ROUTE_PATHS[r], (unsigned long long)cum);
        }
        sb_printf(&b, "bert_request_duration_seconds_sum{route=\"%s\"} %.9f\n", ROUTE_PATHS[r],
                  (double)atomic_load(&M.lat_sum_ns[r]) / 1e9);
        sb_printf(&b, "bert_request_duration_seconds_count{route=\"%s\"} %llu\n", ROUTE_PATHS[r],
                  (unsigned long long)cum);
    }

    sb_printf(&b, "# HELP bert_batch_size Sequences per forward pass.\n"
                  "# TYPE bert_batch_size histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i <= N_BATCH; i++) {
        cum += atomic_load(&M.batch_bucket[i]);
        if (i < N_BATCH)
            sb_printf(&b, "bert_batch_size_bucket{le=\"%d\"} %llu\n", BATCH_BUCKETS[i],
                      (unsigned long long)cum);
        else
            sb_printf(&b, "bert_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(&b, "bert_batch_size_sum %llu\nbert_batch_size_count %llu\n",
              (unsigned long long)atomic_load(&M.batch_sum),
              (unsigned long long)atomic_load(&M.batch_count));

    sb_printf(&b,
              "# HELP bert_tokens_processed_total Tokens run through the model.\n"
              "# TYPE bert_tokens_processed_total counter\n"
              "bert_tokens_processed_total %llu\n",
              (unsigned long long)atomic_load(&M.tokens));
    sb_printf(&b,
              "# HELP bert_checked_inputs_total Inputs whose int8 answer was checked "
              "(model.compute int8-checked).\n"
              "# TYPE bert_checked_inputs_total counter\n"
              "bert_checked_inputs_total %llu\n"
              "# HELP bert_rechecked_inputs_total Checked inputs whose int8 answer was a near-tie "
              "(model.recheck_logit_gap), answered again in float32.\n"
              "# TYPE bert_rechecked_inputs_total counter\n"
              "bert_rechecked_inputs_total %llu\n",
              (unsigned long long)atomic_load(&M.checked),
              (unsigned long long)atomic_load(&M.rechecked));
    sb_printf(&b,
              "# HELP bert_queue_depth Requests waiting for a worker.\n"
              "# TYPE bert_queue_depth gauge\n"
              "bert_queue_depth %d\n"
              "# HELP bert_queue_capacity Queue slots (workers.queue_depth).\n"
              "# TYPE bert_queue_capacity gauge\n"
              "bert_queue_capacity %d\n"
              "# HELP bert_workers Worker threads.\n"
              "# TYPE bert_workers gauge\n"
              "bert_workers %d\n"
              "# HELP bert_workers_busy Requests being run by workers right now.\n"
              "# TYPE bert_workers_busy gauge\n"
              "bert_workers_busy %d\n"
              "# HELP bert_requests_in_flight Inference requests accepted and not yet answered.\n"
              "# TYPE bert_requests_in_flight gauge\n"
              "bert_requests_in_flight %d\n"
              "# HELP bert_ready 1 when the model is loaded and requests are accepted.\n"
              "# TYPE bert_ready gauge\n"
              "bert_ready %d\n"
              "# HELP bert_draining 1 after SIGTERM/SIGINT, while in-flight work finishes.\n"
              "# TYPE bert_draining gauge\n"
              "bert_draining %d\n",
              g->queue_depth, g->queue_capacity, g->workers, g->busy, atomic_load(&M.inflight),
              g->ready, g->draining);

    if (g->model) {
        const metrics_model_info *m = g->model;
        sb_printf(&b, "# HELP bert_model_info The loaded checkpoint; the value is always 1.\n"
                      "# TYPE bert_model_info gauge\n"
                      "bert_model_info{name=\"");
        sb_label(&b, m->name);
        sb_printf(&b, "\",dtype=\"");
        sb_label(&b, m->dtype);
        sb_printf(&b, "\",hidden_act=\"");
        sb_label(&b, m->hidden_act);
        sb_printf(&b, "\",compute=\"");
        sb_label(&b, m->compute ? m->compute : "fp32");
        sb_printf(&b, "\",kernel=\"");
        sb_label(&b, m->kernel ? m->kernel : "");
        sb_printf(&b,
                  "\",vocab_size=\"%d\",hidden_size=\"%d\",num_hidden_layers=\"%d\","
                  "num_attention_heads=\"%d\",max_sequence_length=\"%d\",mlm_head=\"%s\","
                  "nsp_head=\"%s\"} 1\n",
                  m->vocab_size, m->hidden_size, m->layers, m->heads, m->max_sequence_length,
                  m->has_mlm ? "true" : "false", m->has_nsp ? "true" : "false");
        sb_printf(&b,
                  "# HELP bert_model_parameters Parameters in the loaded checkpoint.\n"
                  "# TYPE bert_model_parameters gauge\n"
                  "bert_model_parameters %zu\n"
                  "# HELP bert_model_weight_bytes Bytes of weights resident, shared by all "
                  "workers.\n"
                  "# TYPE bert_model_weight_bytes gauge\n"
                  "bert_model_weight_bytes %zu\n",
                  m->params, m->weight_bytes);
    }
    render_request_tokens(&b);
    render_build_info(&b);
    render_process(&b);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
