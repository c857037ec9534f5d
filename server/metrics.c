/* metrics: lock-free counters rendered as Prometheus text. */
#include "metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ROUTE_PATHS[ROUTE_COUNT] = {
    "/v1/fill-mask", "/v1/next-sentence", "/v1/tokenize",  "/v1/models",
    "/healthz",      "/readyz",           "/metrics",      "/",
    "/docs",         "/openapi.json",     "/openapi.yaml", "other",
};

static const int STATUSES[] = {200, 400, 401, 404, 405, 413, 415, 422, 500, 501, 503, 504};
#define N_STATUS     ((int)(sizeof(STATUSES) / sizeof(STATUSES[0])))
#define STATUS_OTHER N_STATUS

/* Request latency buckets (seconds): sub-millisecond health checks up to
 * long batched inference. */
static const double LAT_BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
#define N_LAT ((int)(sizeof(LAT_BUCKETS) / sizeof(LAT_BUCKETS[0])))

static const int BATCH_BUCKETS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define N_BATCH ((int)(sizeof(BATCH_BUCKETS) / sizeof(BATCH_BUCKETS[0])))

static struct {
    atomic_uint_fast64_t requests[ROUTE_COUNT][N_STATUS + 1];
    atomic_uint_fast64_t undelivered[ROUTE_COUNT];
    atomic_uint_fast64_t lat_bucket[ROUTE_COUNT][N_LAT + 1];
    atomic_uint_fast64_t lat_sum_ns[ROUTE_COUNT];
    atomic_uint_fast64_t batch_bucket[N_BATCH + 1];
    atomic_uint_fast64_t batch_sum, batch_count;
    atomic_uint_fast64_t tokens;
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
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
