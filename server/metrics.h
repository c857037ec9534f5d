/* metrics: Prometheus counters and histograms for the service.
 *
 * Owns: process-wide atomic counters (no locks on the request path). Routes
 * and status codes are small fixed enumerations so every series exists from
 * start-up. metrics_render returns a malloc'd text exposition (format 0.0.4)
 * the caller frees. Gauges that belong to other modules (queue depth, model
 * info) are passed in at render time; the process_* figures are read from
 * /proc/self at render time. */
#ifndef BERT_SERVER_METRICS_H
#define BERT_SERVER_METRICS_H

#include <stddef.h>

typedef enum {
    ROUTE_FILL_MASK = 0,
    ROUTE_NEXT_SENTENCE,
    ROUTE_TOKENIZE,
    ROUTE_DECODE,
    ROUTE_SCORE,
    ROUTE_MODELS,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_PAGE,         /* GET / */
    ROUTE_DOCS,         /* GET /docs */
    ROUTE_OPENAPI_JSON, /* GET /openapi.json */
    ROUTE_OPENAPI_YAML, /* GET /openapi.yaml */
    ROUTE_OTHER,
    ROUTE_COUNT
} metrics_route;

const char *metrics_route_path(metrics_route r);

void metrics_init(void);
/* delivered: 0 when the client never got the whole answer (it left, or the
 * connection was cut); counted in bert_requests_undelivered_total then, not
 * under the status in bert_requests_total. */
void metrics_observe_request(metrics_route r, int status, double seconds, int delivered);
void metrics_observe_batch(int sequences, long tokens);
/* model.compute int8-checked: inputs whose int8 answer was checked, and of
 * those the near-ties answered again in float32 (bert_checked_inputs_total,
 * bert_rechecked_inputs_total). */
void metrics_observe_checked(int inputs, int rechecked);
/* An answered inference request (fill-mask, next-sentence, tokenize,
 * decode, score) and its
 * tokens over all inputs: bert_request_tokens. Other routes are ignored. */
void metrics_observe_request_tokens(metrics_route r, long tokens);
/* Where one request's time went, in seconds, for requests a worker took:
 * bert_request_stage_seconds{stage} (queue: submitted -> a worker took it;
 * tokenization: validation and tokenization; inference: the forward pass it
 * was part of plus its top-k / losses; serialization: rendering the JSON). */
typedef enum {
    STAGE_QUEUE = 0,
    STAGE_TOKENIZATION,
    STAGE_INFERENCE,
    STAGE_SERIALIZATION,
    STAGE_COUNT
} metrics_stage;
void metrics_observe_stage(metrics_stage st, double seconds);
void metrics_add_inflight(int delta);

typedef struct metrics_model_info {
    const char *name, *dtype, *hidden_act;
    const char *compute, *kernel; /* model.compute and what runs its products */
    int vocab_size, hidden_size, layers, heads, max_sequence_length;
    int has_mlm, has_nsp;
    size_t params, weight_bytes;
} metrics_model_info;

typedef struct metrics_gauges {
    int queue_depth, queue_capacity, workers, busy, ready, draining;
    const metrics_model_info *model; /* NULL while loading */
} metrics_gauges;

char *metrics_render(const metrics_gauges *g, size_t *len);

#endif
