/* http: libmicrohttpd front end. See http.h. */
#include "http.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "answer.h"
#include "clock.h"
#include "assets.h"
#include "auth.h"
#include "gate.h"
#include "log.h"
#include "tls.h"

/* A streaming body past max_body_bytes is read and dropped (so the client
 * can receive its 413) up to this much, then the connection is cut. */
#define HTTP_DISCARD_LIMIT (64L << 20)

/* What the gate (gate.h) lets through in a first request head; below
 * libmicrohttpd's 32 KiB connection buffer, so it never overflows on one. */
#define HTTP_HEAD_MAX   (16L << 10)
#define HTTP_TARGET_MAX (8L << 10)

/* server.max_inflight_body_bytes 0: this many max_body_bytes bodies at once. */
#define HTTP_BODY_BUDGET_FACTOR 32L

struct http_server {
    const cfg *cfg;
    struct MHD_Daemon *daemon;
    gate *gate; /* owns the listening socket once started */
    int listen_fd;
    int port;
    /* Set once by http_set_ready; read by polling threads after `ready`. */
    const api_ctx *api;
    pool *pool;
    const metrics_model_info *model_info;
    atomic_int ready;
    atomic_int draining;
    atomic_int accepted;
    /* Connection cap, enforced by the gate (on_accept is a backstop; see
     * http_start for why not libmicrohttpd's own limit); open_conns counts
     * libmicrohttpd's connections (on_connection). */
    int conn_cap;
    atomic_int open_conns;
    /* Bytes of request bodies held or announced (Content-Length) across all
     * connections, against body_budget (server.max_inflight_body_bytes). */
    long body_budget;
    atomic_long body_bytes;
    /* Orders MHD_suspend_connection before MHD_resume_connection for one job. */
    pthread_mutex_t resume_mu;
    uint64_t id_seed;
    atomic_uint_fast64_t id_counter;
    tls_material tls; /* server.tls_*: no gate then (tls.h) */
};

typedef struct route route; /* the ROUTES table, below its handlers */

/* Where a request is. Each libmicrohttpd call for it (head, body chunks, end
 * of body, resume) is dispatched on this alone (on_request). */
typedef enum {
    REQ_HEAD = 0, /* head read, no body: the checks run on the next call, once
                   * the request is complete, so keep-alive works */
    REQ_BODY,     /* accepted POST: the body arrives (or is dropped: discarded,
                   * over_budget) and is handled at its end */
    REQ_DRAIN,    /* draining: the body is read and dropped, then 503 */
    REQ_WAITING,  /* a job is in the pool; the connection is suspended until a
                   * worker completes it */
    REQ_ANSWERED, /* a response is queued; whatever else arrives is dropped */
} req_state;

typedef struct req_ctx {
    http_server *srv;
    struct MHD_Connection *conn;
    const route *route; /* NULL: unknown path */
    req_state state;
    char request_id[80];
    char method[16];
    char path[256];
    int64_t t0;
    char *body;
    size_t len, cap;
    long discarded;  /* > 0: body over the limit, being dropped */
    long reserved;   /* bytes of srv->body_bytes this request holds */
    int over_budget; /* body dropped: srv->body_budget was spent */
    int counted;     /* counted in srv->accepted */
    int status;
    const char *err_code;
    long tokens;
    api_job *job;
    int job_done, suspended; /* guarded by srv->resume_mu */
    int fd;                  /* the connection's socket, for job_client_gone */
} req_ctx;

/* ---- responses ---- */

static enum MHD_Result send_buf(req_ctx *r, int status, char *buf, size_t len,
                                const char *content_type, const char *const *headers) {
    struct MHD_Response *resp =
        buf ? MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE)
            : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->srv->cfg->cors_allow_origin[0]) { /* opt-in CORS (server.cors_allow_origin) */
        MHD_add_response_header(resp, "Access-Control-Allow-Origin",
                                r->srv->cfg->cors_allow_origin);
        /* so a page can quote the id in a bug report, and back off as told */
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "X-Request-Id, Retry-After, X-Queue-Time, X-Tokenization-Time, "
                                "X-Inference-Time, X-Serialization-Time, X-Compute-Time, "
                                "X-Total-Time, X-Rechecked-Inputs");
    }
    for (const char *const *h = headers; h && h[0]; h += 2)
        MHD_add_response_header(resp, h[0], h[1]);
    r->status = status;
    r->state = REQ_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(req_ctx *r, int status, char *body, size_t len,
                                 const char *const *headers) {
    return send_buf(r, status, body, len, "application/json", headers);
}

static enum MHD_Result send_error(req_ctx *r, errcode err, const char *message,
                                  const char *const *headers) {
    size_t len = 0;
    const char *code = errcode_name(err);
    char *body = answer_error_body(code, message, &len);
    r->err_code = code;
    return send_json(r, errcode_status(err), body, len, headers);
}

static enum MHD_Result send_overloaded(req_ctx *r) {
    static const char *const h[] = {"Retry-After", "1", NULL};
    return send_error(r, ERR_OVERLOADED,
                      "all workers are busy and the queue is full; retry after a second", h);
}

static enum MHD_Result send_draining(req_ctx *r) {
    static const char *const h[] = {"Retry-After", "5", "Connection", "close", NULL};
    return send_error(r, ERR_DRAINING,
                      "the server is shutting down and accepts no new work; retry on another "
                      "instance",
                      h);
}

/* An embedded file (assets.h), served from read-only memory without a copy.
 * The pages run only their own inline code and may talk only to this origin. */
static enum MHD_Result send_asset(req_ctx *r, asset_id id) {
    static const char csp[] = "default-src 'none'; script-src 'unsafe-inline'; "
                              "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
                              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    asset a = assets_get(id);
    if (!a.body) return send_error(r, ERR_INTERNAL, "asset not available", NULL);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(a.len, (void *)a.body, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a.content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    if (strncmp(a.content_type, "text/html", 9) == 0) {
        MHD_add_response_header(resp, "Content-Security-Policy", csp);
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    }
    r->status = 200;
    r->state = REQ_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- request context ---- */

static int id_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':';
}

static void set_request_id(http_server *s, req_ctx *r) {
    const char *in = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (in) {
        size_t n = strlen(in);
        int ok = n > 0 && n < 72;
        for (size_t i = 0; ok && i < n; i++)
            ok = id_char_ok(in[i]);
        if (ok) {
            memcpy(r->request_id, in, n + 1);
            return;
        }
    }
    uint64_t c = atomic_fetch_add(&s->id_counter, 1);
    snprintf(r->request_id, sizeof(r->request_id), "%016llx%08llx", (unsigned long long)s->id_seed,
             (unsigned long long)(c & 0xffffffffULL));
}

/* Log-safe copy: printable ASCII only (URLs may carry any bytes). */
static void copy_printable(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++)
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[i] = 0;
}

static int authorized(http_server *s, req_ctx *r) {
    (void)s;
    if (!auth_enabled()) return 1; /* auth.h: the token set, reloaded on SIGHUP */
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    return auth_check(h, n);
}

static int content_type_is_json(struct MHD_Connection *conn) {
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0) return 0;
    const char *rest = ct + sizeof(want) - 1;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == 0 || *rest == ';';
}

/* ---- framing (RFC 9112 section 6.3) ---- */

typedef struct framing {
    int n_length, n_encoding;
    const char *length, *encoding;
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    (void)kind;
    framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        f->n_length++;
        f->length = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->n_encoding++;
        f->encoding = value;
    }
    return MHD_YES;
}

/* libmicrohttpd 0.9.75 takes the first Content-Length and, when a
 * Transfer-Encoding is present, reads the body by that alone, so two lengths
 * or a length beside an encoding let a client hide a second request in what
 * a proxy in front took for the body (request smuggling). A coding other than
 * chunked makes it read until the client closes. Such requests are answered
 * here, before any body is read, and the connection is closed: after a
 * framing error nothing that follows on it can be trusted. Returns 1 when
 * the request may proceed; *has_body tells whether a body follows. */
static int framing_ok(req_ctx *r, int *has_body, enum MHD_Result *ret) {
    static const char *const close_h[] = {"Connection", "close", NULL};
    framing f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_framing, &f);
    gate_verdict v;
    if (!gate_check_framing(f.n_length, f.length, f.length ? strlen(f.length) : 0, f.n_encoding,
                            f.encoding, f.encoding ? strlen(f.encoding) : 0, &v)) {
        *has_body = 0;
        *ret = send_error(r, v.err, v.message, close_h);
        return 0;
    }
    *has_body = f.n_encoding || (f.n_length && strspn(f.length, "0 \t") != strlen(f.length));
    return 1;
}

/* libmicrohttpd's own unescaping turns %00 into a NUL, and the path it hands
 * on_request then ends there ("/healthz%00x" is routed as "/healthz"). This
 * one decodes every other %XX in place and leaves %00 (and malformed escapes)
 * as they are, so the path never holds a NUL and matches no route. */
static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t unescape_keep_nul(void *cls, struct MHD_Connection *conn, char *s) {
    (void)cls;
    (void)conn;
    char *out = s;
    for (const char *in = s; *in; in++) {
        int hi = in[0] == '%' ? hex_value(in[1]) : -1;
        int lo = hi >= 0 ? hex_value(in[2]) : -1;
        if (lo >= 0 && (hi | lo) != 0) {
            *out++ = (char)(hi * 16 + lo);
            in += 2;
        } else {
            *out++ = *in;
        }
    }
    *out = 0;
    return (size_t)(out - s);
}

/* ---- request-body budget ---- */

/* Takes n more bytes of the process-wide body budget for r; 0 when that
 * would exceed it (nothing is taken then). */
static int budget_take(http_server *s, req_ctx *r, long n) {
    long now = atomic_fetch_add(&s->body_bytes, n) + n;
    if (now > s->body_budget) {
        atomic_fetch_sub(&s->body_bytes, n);
        return 0;
    }
    r->reserved += n;
    return 1;
}

static void budget_release(http_server *s, req_ctx *r) {
    if (r->reserved) atomic_fetch_sub(&s->body_bytes, r->reserved);
    r->reserved = 0;
}

static void drop_body(http_server *s, req_ctx *r) {
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    budget_release(s, r);
}

static enum MHD_Result send_body_budget_spent(req_ctx *r) {
    static const char *const h[] = {"Retry-After", "1", "Connection", "close", NULL};
    return send_error(r, ERR_OVERLOADED,
                      "too many request bodies are being received at once; retry after a second",
                      h);
}

/* ---- GET routes ---- */

static enum MHD_Result get_healthz(http_server *s, req_ctx *r) {
    (void)s;
    char *body = strdup("{\"status\":\"ok\"}");
    return send_json(r, 200, body, body ? strlen(body) : 0, NULL);
}

static enum MHD_Result get_readyz(http_server *s, req_ctx *r) {
    const char *state = atomic_load(&s->draining) ? "draining"
                        : atomic_load(&s->ready)  ? "ready"
                                                  : "loading";
    int status = strcmp(state, "ready") == 0 ? 200 : 503;
    char buf[64];
    snprintf(buf, sizeof(buf), "{\"status\":\"%s\"}", state);
    char *body = strdup(buf);
    return send_json(r, status, body, body ? strlen(body) : 0, NULL);
}

static enum MHD_Result get_metrics(http_server *s, req_ctx *r) {
    metrics_gauges g = {0};
    g.queue_capacity = s->cfg->queue_depth;
    g.workers = s->cfg->workers;
    g.draining = atomic_load(&s->draining);
    if (atomic_load(&s->ready)) {
        g.ready = !g.draining;
        g.queue_depth = pool_depth(s->pool);
        g.busy = pool_active(s->pool);
        g.model = s->model_info;
    }
    size_t len = 0;
    char *body = metrics_render(&g, &len);
    if (!body) return send_error(r, ERR_INTERNAL, "out of memory", NULL);
    return send_buf(r, 200, body, len, "text/plain; version=0.0.4; charset=utf-8", NULL);
}

static enum MHD_Result get_models(http_server *s, req_ctx *r) {
    if (!atomic_load(&s->ready)) {
        static const char *const h[] = {"Retry-After", "1", NULL};
        return send_error(r, ERR_LOADING, "the model is still loading; retry shortly", h);
    }
    size_t len = 0;
    char *body = api_models(s->api, &len);
    if (!body) return send_error(r, ERR_INTERNAL, "out of memory", NULL);
    return send_json(r, 200, body, len, NULL);
}

static enum MHD_Result get_page(http_server *s, req_ctx *r) {
    (void)s;
    return send_asset(r, ASSET_PAGE_PLAYGROUND);
}

static enum MHD_Result get_docs(http_server *s, req_ctx *r) {
    (void)s;
    return send_asset(r, ASSET_PAGE_DOCS);
}

static enum MHD_Result get_openapi_json(http_server *s, req_ctx *r) {
    (void)s;
    return send_asset(r, ASSET_OPENAPI_JSON);
}

static enum MHD_Result get_openapi_yaml(http_server *s, req_ctx *r) {
    (void)s;
    return send_asset(r, ASSET_OPENAPI_YAML);
}

/* ---- jobs ---- */

static void job_complete(api_job *job) {
    req_ctx *r = job->owner;
    http_server *s = r->srv;
    pthread_mutex_lock(&s->resume_mu);
    r->job_done = 1;
    if (r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&s->resume_mu);
}

/* Worker thread, job not yet completed (so r and its socket are alive: the
 * connection is suspended, and MHD neither polls nor closes it). A
 * disconnect shows only here: EOF or an error on the socket. The bytes of a
 * pipelined next request are not one; a client that half-closes after its
 * request counts as gone. */
static int job_client_gone(api_job *job) {
    req_ctx *r = job->owner;
    if (r->fd < 0) return 0;
    struct pollfd p = {.fd = r->fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return 1;
    char c;
    ssize_t n = recv(r->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Milliseconds of ns, as the x-*-time headers carry them. */
static void fmt_ms(char *buf, size_t cap, int64_t ns) {
    snprintf(buf, cap, "%.3f", (double)(ns > 0 ? ns : 0) / 1e6);
}

/* Where the job's time went: bert_request_stage_seconds, and the same as
 * response headers in text-embeddings-inference's style (milliseconds). h
 * receives name/value pairs, NULL-terminated; bufs holds the values. Under
 * int8-checked also X-Rechecked-Inputs: how many inputs float32 answered. */
static void job_timing(const api_job *job, const char **h, char bufs[7][24]) {
    int n = 0;
    if (job->started_ns > 0) {
        int64_t queue = job->started_ns - job->queued_ns;
        int64_t compute = job->tokenize_ns + job->inference_ns + job->serialize_ns;
        metrics_observe_stage(STAGE_QUEUE, (double)queue / 1e9);
        metrics_observe_stage(STAGE_TOKENIZATION, (double)job->tokenize_ns / 1e9);
        metrics_observe_stage(STAGE_INFERENCE, (double)job->inference_ns / 1e9);
        metrics_observe_stage(STAGE_SERIALIZATION, (double)job->serialize_ns / 1e9);
        static const char *const names[6] = {"X-Queue-Time",     "X-Tokenization-Time",
                                             "X-Inference-Time", "X-Serialization-Time",
                                             "X-Compute-Time",   "X-Total-Time"};
        int64_t vals[6] = {queue,
                           job->tokenize_ns,
                           job->inference_ns,
                           job->serialize_ns,
                           compute,
                           clock_now_ns() - job->queued_ns};
        for (int i = 0; i < 6; i++) {
            fmt_ms(bufs[i], sizeof(bufs[i]), vals[i]);
            h[n++] = names[i];
            h[n++] = bufs[i];
        }
    }
    if (job->checked && job->status == 200) {
        snprintf(bufs[6], sizeof(bufs[6]), "%d", job->rechecked);
        h[n++] = "X-Rechecked-Inputs";
        h[n++] = bufs[6];
    }
    if (job->status == 503) {
        h[n++] = "Retry-After";
        h[n++] = "1";
    }
    h[n] = NULL;
}

static enum MHD_Result send_job_result(req_ctx *r) {
    api_job *job = r->job;
    r->tokens = job->tokens; /* counted by the worker, which tokenizes */
    char *body = job->body;
    size_t len = job->body_len;
    job->body = NULL; /* the response owns it now */
    r->err_code = job->err_code;
    if (!body) return send_error(r, ERR_INTERNAL, "no answer was produced", NULL);
    const char *h[17];
    char bufs[7][24];
    job_timing(job, h, bufs);
    return send_json(r, job->status, body, len, h);
}

static enum MHD_Result submit_job(http_server *s, req_ctx *r, api_job *job) {
    r->job = job;
    job->owner = r;
    job->complete = job_complete;
    job->gone = job_client_gone;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    job->queued_ns = clock_now_ns();
    job->deadline_ns = job->queued_ns + (int64_t)s->cfg->request_timeout_ms * 1000000LL;
    int rc = pool_submit(s->pool, &job->item);
    if (rc == POOL_FULL) return send_overloaded(r);
    if (rc != POOL_OK) return send_draining(r);
    pthread_mutex_lock(&s->resume_mu);
    int done = r->job_done;
    if (!done) {
        MHD_suspend_connection(r->conn);
        r->suspended = 1;
        r->state = REQ_WAITING;
    }
    pthread_mutex_unlock(&s->resume_mu);
    return done ? send_job_result(r) : MHD_YES;
}

/* A POST route's body, read in full: JSON syntax here, the rest on a worker. */
static enum MHD_Result post_job(http_server *s, req_ctx *r, api_kind kind) {
    json_error_t je;
    /* \u0000 is valid JSON; the tokenizer drops NUL as clean_text does, and
     * every string is read with its length. */
    json_t *req =
        json_loadb(r->body ? r->body : "", r->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!req && json_error_code(&je) == json_error_numeric_overflow)
        /* An integer beyond 64 bits is valid JSON (the ignored "options" may hold
         * any): read integers as reals then; the fields the API reads check
         * their own range (json_as_int). */
        req = json_loadb(r->body ? r->body : "", r->len,
                         JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
    drop_body(s, r); /* req holds its own copies; the budget is free for others */
    if (!req) {
        char msg[300];
        if (json_error_code(&je) == json_error_invalid_utf8) {
            snprintf(msg, sizeof(msg), "the body is not valid UTF-8 (byte %d)", je.position);
            return send_error(r, ERR_INVALID_UTF8, msg, NULL);
        }
        snprintf(msg, sizeof(msg), "the body is not valid JSON: %s at line %d, column %d", je.text,
                 je.line, je.column);
        return send_error(r, ERR_INVALID_JSON, msg, NULL);
    }
    api_error e = {0};
    api_job *job = NULL;
    /* Parsed (tokenized) on a worker: on this polling thread a 1 MB body held
     * up the /healthz probes it also answers. */
    int rc = api_defer(s->api, kind, req, r->len, &job, &e);
    json_decref(req);
    if (rc) return send_error(r, e.err, e.message, NULL);
    return submit_job(s, r, job);
}

/* ---- POST routes ---- */

static enum MHD_Result post_fill_mask(http_server *s, req_ctx *r) {
    return post_job(s, r, API_FILL_MASK);
}

static enum MHD_Result post_next_sentence(http_server *s, req_ctx *r) {
    return post_job(s, r, API_NEXT_SENTENCE);
}

static enum MHD_Result post_tokenize(http_server *s, req_ctx *r) {
    return post_job(s, r, API_TOKENIZE);
}

static enum MHD_Result post_decode(http_server *s, req_ctx *r) {
    return post_job(s, r, API_DECODE);
}

static enum MHD_Result post_score(http_server *s, req_ctx *r) {
    return post_job(s, r, API_SCORE);
}

/* ---- routing ---- */

struct route {
    const char *path;
    metrics_route metric;
    int is_post; /* POST with a JSON body, handled once it is read; else GET/HEAD */
    int needs_auth;
    enum MHD_Result (*handle)(http_server *s, req_ctx *r);
};

/* A route is a handler above and a line here (and its metrics_route). */
static const route ROUTES[] = {
    {"/v1/fill-mask", ROUTE_FILL_MASK, 1, 1, post_fill_mask},
    {"/v1/next-sentence", ROUTE_NEXT_SENTENCE, 1, 1, post_next_sentence},
    {"/v1/tokenize", ROUTE_TOKENIZE, 1, 1, post_tokenize},
    {"/v1/decode", ROUTE_DECODE, 1, 1, post_decode},
    {"/v1/score", ROUTE_SCORE, 1, 1, post_score},
    {"/v1/models", ROUTE_MODELS, 0, 1, get_models},
    {"/healthz", ROUTE_HEALTHZ, 0, 0, get_healthz},
    {"/readyz", ROUTE_READYZ, 0, 0, get_readyz},
    {"/metrics", ROUTE_METRICS, 0, 0, get_metrics},
    /* The pages and the contract are public; the API calls they make carry the token. */
    {"/", ROUTE_PAGE, 0, 0, get_page},
    {"/docs", ROUTE_DOCS, 0, 0, get_docs},
    {"/openapi.json", ROUTE_OPENAPI_JSON, 0, 0, get_openapi_json},
    {"/openapi.yaml", ROUTE_OPENAPI_YAML, 0, 0, get_openapi_yaml},
};
#define N_ROUTES (sizeof(ROUTES) / sizeof(ROUTES[0]))

static const route *find_route(const char *url) {
    for (size_t i = 0; i < N_ROUTES; i++)
        if (strcmp(url, ROUTES[i].path) == 0) return &ROUTES[i];
    return NULL;
}

/* ---- MHD callbacks ---- */

static enum MHD_Result first_call(http_server *s, req_ctx *r, const char *method) {
    if (!r->route)
        return send_error(
            r, ERR_NOT_FOUND,
            "no such route; the routes are POST /v1/fill-mask, /v1/next-sentence, "
            "/v1/tokenize, /v1/decode, /v1/score and GET /v1/models, /healthz, /readyz, /metrics, "
            "/openapi.json, /docs, /",
            NULL);
    if (strcmp(method, "OPTIONS") == 0 && s->cfg->cors_allow_origin[0] &&
        strncmp(r->route->path, "/v1/", 4) == 0) {
        /* A CORS preflight: browsers send it without credentials. */
        static const char *const h[] = {"Access-Control-Allow-Methods",
                                        "GET, POST, OPTIONS",
                                        "Access-Control-Allow-Headers",
                                        "Authorization, Content-Type, X-Request-Id",
                                        "Access-Control-Max-Age",
                                        "86400",
                                        NULL};
        return send_buf(r, 204, NULL, 0, "text/plain", h);
    }
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    if (!r->route->is_post && !is_get) {
        static const char *const h[] = {"Allow", "GET, HEAD", NULL};
        return send_error(r, ERR_METHOD_NOT_ALLOWED, "this route accepts GET", h);
    }
    if (r->route->is_post && !is_post) {
        static const char *const h[] = {"Allow", "POST", NULL};
        return send_error(r, ERR_METHOD_NOT_ALLOWED, "this route accepts POST", h);
    }
    if (r->route->needs_auth && !authorized(s, r)) {
        static const char *const h[] = {"WWW-Authenticate", "Bearer realm=\"bert-serve\"", NULL};
        return send_error(r, ERR_UNAUTHORIZED,
                          "send the API token as 'Authorization: Bearer <token>'", h);
    }
    if (!r->route->is_post) return r->route->handle(s, r);

    if (atomic_load(&s->draining)) {
        /* Answered after the body is read: closing a socket with unread data
         * sends a reset, which can destroy the 503 before the client reads it. */
        const char *len = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
        if (!len || strtoull(len, NULL, 10) > (unsigned long long)s->cfg->max_body_bytes)
            return send_draining(r);
        r->state = REQ_DRAIN;
        return MHD_YES;
    }
    if (!atomic_load(&s->ready)) {
        static const char *const h[] = {"Retry-After", "1", NULL};
        return send_error(r, ERR_LOADING, "the model is still loading; retry shortly", h);
    }
    if (!content_type_is_json(r->conn))
        return send_error(r, ERR_UNSUPPORTED_MEDIA_TYPE,
                          "send the body as JSON with 'Content-Type: application/json'", NULL);
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == ERANGE || n > (unsigned long long)s->cfg->max_body_bytes) {
            char msg[160];
            snprintf(msg, sizeof(msg), "the body may be at most %ld bytes", s->cfg->max_body_bytes);
            return send_error(r, ERR_PAYLOAD_TOO_LARGE, msg, NULL);
        }
        /* The announced length is taken whole now, so that many clients that
         * announce big bodies and never finish cannot hold more than the
         * budget between them; chunked bodies take it as they grow. */
        if (n > 0 && !budget_take(s, r, (long)n)) return send_body_budget_spent(r);
    }
    r->counted = 1;
    atomic_fetch_add(&s->accepted, 1);
    metrics_add_inflight(1);
    r->state = REQ_BODY;
    return MHD_YES;
}

/* REQ_BODY, a chunk of the body: kept, or dropped past max_body_bytes or the
 * process-wide body budget (answered at the end of the body). */
static enum MHD_Result body_chunk(http_server *s, req_ctx *r, const char *data, size_t n) {
    if (r->discarded || r->over_budget || r->len + n > (size_t)s->cfg->max_body_bytes) {
        r->discarded += (long)n;
        drop_body(s, r);
        return r->discarded > HTTP_DISCARD_LIMIT ? MHD_NO : MHD_YES;
    }
    if (r->len + n > r->cap) {
        size_t ncap = r->cap ? r->cap : 4096;
        while (ncap < r->len + n)
            ncap *= 2;
        if (ncap > (size_t)s->cfg->max_body_bytes) ncap = (size_t)s->cfg->max_body_bytes;
        /* Content-Length taken at the headers: one buffer of that size. */
        if (r->reserved >= (long)(r->len + n)) ncap = (size_t)r->reserved;
        if ((long)ncap > r->reserved && !budget_take(s, r, (long)ncap - r->reserved)) {
            /* Read on and drop the rest: the 503 can only be sent once
             * the body is over. */
            r->over_budget = 1;
            r->discarded += (long)n;
            drop_body(s, r);
            return MHD_YES;
        }
        char *nb = realloc(r->body, ncap);
        if (!nb) return MHD_NO;
        r->body = nb;
        r->cap = ncap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* REQ_BODY, the end of the body: its refusal, or the route's handler. */
static enum MHD_Result body_end(http_server *s, req_ctx *r) {
    if (r->over_budget) return send_body_budget_spent(r);
    if (r->discarded) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the body may be at most %ld bytes", s->cfg->max_body_bytes);
        return send_error(r, ERR_PAYLOAD_TOO_LARGE, msg, NULL);
    }
    return r->route->handle(s, r);
}

static req_ctx *req_new(http_server *s, struct MHD_Connection *conn, const char *url,
                        const char *method) {
    req_ctx *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->srv = s;
    r->conn = conn;
    r->t0 = clock_now_ns();
    r->route = find_route(url);
    copy_printable(r->method, sizeof(r->method), method);
    copy_printable(r->path, sizeof(r->path), url);
    set_request_id(s, r);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    http_server *s = cls;
    req_ctx *r = *con_cls;
    if (!r) {
        r = req_new(s, conn, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        int has_body = 0;
        enum MHD_Result ret = MHD_YES;
        if (!framing_ok(r, &has_body, &ret)) return ret;
        /* A response queued before libmicrohttpd has finished the request
         * makes it close the connection. Requests with a body that are
         * refused early want that (the body is not read); those without one
         * are answered on the next call (REQ_HEAD), when the request is
         * complete, so keep-alive and pipelining work for them. */
        return has_body ? first_call(s, r, method) : MHD_YES;
    }
    if (r->state == REQ_HEAD) {
        enum MHD_Result ret = first_call(s, r, method);
        if (ret != MHD_YES || r->state == REQ_ANSWERED) return ret;
        /* accepted POST with an empty body (REQ_BODY or REQ_DRAIN): below */
    }
    switch (r->state) {
    case REQ_DRAIN:
        if (!*upload_data_size) return send_draining(r);
        *upload_data_size = 0;
        return MHD_YES;
    case REQ_BODY: {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return n ? body_chunk(s, r, upload_data, n) : body_end(s, r);
    }
    case REQ_WAITING: {
        pthread_mutex_lock(&s->resume_mu);
        int done = r->job_done;
        pthread_mutex_unlock(&s->resume_mu);
        return done ? send_job_result(r) : MHD_YES;
    }
    case REQ_HEAD:     /* first_call leaves it: never here */
    case REQ_ANSWERED: /* answered early: drop any body */
    default:
        *upload_data_size = 0;
        return MHD_YES;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    http_server *s = cls;
    req_ctx *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (!r->status && r->job && r->job_done && r->job->status == 499) {
        /* Work dropped because the client had gone (infer.c): MHD saw the
         * closed socket on resume and queued no answer; log it as what it was. */
        r->status = 499;
        r->err_code = r->job->err_code;
    }
    double secs = (double)(clock_now_ns() - r->t0) / 1e9;
    /* Only an answer sent in full counts under its status; one whose client
     * left (or was cut at shutdown) counts as undelivered. */
    metrics_observe_request(r->route ? r->route->metric : ROUTE_OTHER, r->status, secs,
                            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    if (r->route && r->status == 200 && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        metrics_observe_request_tokens(r->route->metric, r->tokens);
    json_t *f = json_pack("{s:s,s:s,s:s,s:i,s:f,s:I}", "request_id", r->request_id, "method",
                          r->method, "path", r->path, "status", r->status, "latency_ms", secs * 1e3,
                          "tokens", (json_int_t)r->tokens);
    if (f && r->err_code) json_object_set_new(f, "error", json_string(r->err_code));
    if (f && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        json_object_set_new(f, "terminated",
                            json_string("connection closed before the "
                                        "response was sent"));
    log_json(LOG_INFO, "request", f);
    if (r->counted) {
        atomic_fetch_sub(&s->accepted, 1);
        metrics_add_inflight(-1);
    }
    api_job_free(r->job);
    drop_body(s, r);
    free(r);
}

/* The gate enforces the cap before a connection reaches libmicrohttpd; this
 * stays as a backstop. Connections beyond the cap are closed at once (the
 * client sees the close and can go elsewhere) rather than left in the
 * kernel's backlog, where they would wait unanswered for a free slot. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addr;
    (void)addrlen;
    http_server *s = cls;
    return atomic_load(&s->open_conns) < s->conn_cap ? MHD_YES : MHD_NO;
}

static int gate_served(void *user) {
    http_server *s = user;
    return atomic_load(&s->open_conns);
}

static void gate_admit(void *user, int fd, const struct sockaddr *addr, socklen_t addrlen) {
    http_server *s = user;
    MHD_add_connection(s->daemon, fd, addr, addrlen); /* closes fd itself on failure */
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe) {
    (void)conn;
    (void)socket_ctx;
    http_server *s = cls;
    atomic_fetch_add(&s->open_conns, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
}

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    log_json(LOG_DEBUG, "libmicrohttpd", json_pack("{s:s}", "detail", buf));
}

/* ---- lifecycle ---- */

static int open_listener(const cfg *c, int *fd_out, int *port_out, int *ipv6, char *err,
                         size_t errlen) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    const char *addr = strcmp(c->listen, "localhost") == 0 ? "127.0.0.1" : c->listen;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)c->port);
        sl = sizeof(*a4);
        *ipv6 = 0;
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)c->port);
        sl = sizeof(*a6);
        *ipv6 = 1;
    } else {
        snprintf(err, errlen, "server.listen: '%s' is not an IP address", c->listen);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s port %d: %s", c->listen, c->port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    *fd_out = fd;
    return 0;
}

/* File descriptors kept free of connections: per polling thread its epoll
 * set, its inter-thread pipe and the socket of a connection being refused,
 * plus the signal pipe, the log and files start-up opens. */
#define HTTP_FD_RESERVE(threads) (16 + 4 * (threads))

static int count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own */
}

/* Every connection is a file descriptor. With RLIMIT_NOFILE below what
 * max_connections needs, accept(2) fails with EMFILE, libmicrohttpd stops
 * listening until some connection ends, and a flood of connections leaves
 * the server unreachable long after it ended. The soft limit is raised as
 * far as the hard one allows and the cap lowered to what remains (logged). */
static int connection_cap(const cfg *c) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return c->max_connections;
    long in_use = count_open_fds() + HTTP_FD_RESERVE(c->http_threads);
    rlim_t want = (rlim_t)(in_use + c->max_connections);
    if (want > rl.rlim_cur && rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = rl;
        raised.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    }
    long room = (long)rl.rlim_cur - in_use;
    int cap = room < c->max_connections ? (int)(room > 1 ? room : 1) : c->max_connections;
    if (cap < c->max_connections)
        log_json_always(LOG_WARN, "server.max_connections lowered to fit the file descriptor limit",
                        json_pack("{s:i,s:i,s:I,s:I}", "configured", c->max_connections, "using",
                                  cap, "rlimit_nofile", (json_int_t)rl.rlim_cur, "rlimit_hard",
                                  (json_int_t)rl.rlim_max));
    return cap;
}

int http_start(const cfg *c, http_server **out, char *err, size_t errlen) {
    *out = NULL;
    http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = c;
    s->listen_fd = -1;
    pthread_mutex_init(&s->resume_mu, NULL);
    if (getrandom(&s->id_seed, sizeof(s->id_seed), 0) != sizeof(s->id_seed))
        s->id_seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)clock_now_ns();
    int ipv6 = 0;
    if (open_listener(c, &s->listen_fd, &s->port, &ipv6, err, errlen)) goto error;
    /* The gate owns the listening socket and hands connections over with
     * MHD_add_connection, which needs ITC to wake the polling threads. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    if (ipv6) flags |= MHD_USE_IPv6;
    if (tls_load(c, &s->tls, err, errlen)) goto error;
    int tls = tls_enabled(&s->tls);
    if (tls) flags = (flags & ~(unsigned int)MHD_USE_NO_LISTEN_SOCKET) | MHD_USE_TLS;
    s->conn_cap = connection_cap(c);
    s->body_budget = c->max_inflight_body_bytes ? c->max_inflight_body_bytes
                                                : HTTP_BODY_BUDGET_FACTOR * c->max_body_bytes;
    /* libmicrohttpd's own limit is split evenly between the polling threads
     * and, once reached, would refuse connections the gate has admitted; it
     * is set where no thread reaches it, and the gate enforces conn_cap. */
    unsigned int mhd_limit = (unsigned int)s->conn_cap * (unsigned int)c->http_threads;
    if (tls) mhd_limit = (unsigned int)s->conn_cap; /* no gate: libmicrohttpd's limit is the cap */
    s->daemon = MHD_start_daemon(
        flags, 0, on_accept, s, on_request, s, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)c->http_threads, MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)c->connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_UNESCAPE_CALLBACK, unescape_keep_nul, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        s, MHD_OPTION_ARRAY, tls_mhd_options(&s->tls, s->listen_fd), MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen,
                 tls ? "cannot start the HTTPS server on %s port %d: libmicrohttpd refused "
                       "server.tls_cert_file / server.tls_key_file (a PEM certificate and its "
                       "private key, unencrypted?)"
                     : "cannot start the HTTP server on %s port %d",
                 c->listen, s->port);
        goto error;
    }
    if (tls) { /* libmicrohttpd listens and handshakes itself (tls.h) */
        s->listen_fd = -1;
        *out = s;
        return 0;
    }
    gate_opts go = {
        .listen_fd = s->listen_fd,
        .timeout_s = c->connection_timeout_s,
        .cap = s->conn_cap,
        .head_max = (size_t)HTTP_HEAD_MAX,
        .target_max = (size_t)HTTP_TARGET_MAX,
        .served = gate_served,
        .admit = gate_admit,
        .user = s,
    };
    if (gate_start(&go, &s->gate, err, errlen)) {
        MHD_stop_daemon(s->daemon);
        goto error;
    }
    s->listen_fd = -1; /* the gate's now */
    *out = s;
    return 0;
error:
    if (s->listen_fd >= 0) close(s->listen_fd);
    tls_free(&s->tls);
    pthread_mutex_destroy(&s->resume_mu);
    free(s);
    return -1;
}

int http_port(const http_server *s) {
    return s->port;
}

void http_set_ready(http_server *s, const api_ctx *api, pool *p, const metrics_model_info *mi) {
    s->api = api;
    s->pool = p;
    s->model_info = mi;
    atomic_store(&s->ready, 1); /* seq_cst: the stores above are visible first */
}

void http_begin_drain(http_server *s) {
    atomic_store(&s->draining, 1);
}

int http_accepted(http_server *s) {
    return atomic_load(&s->accepted);
}

void http_quiesce(http_server *s) {
    if (s) gate_quiesce(s->gate);
    if (s && !s->gate && s->daemon && s->listen_fd == -1) {
        /* TLS: libmicrohttpd's own listening socket (tls.h) */
        MHD_socket fd = MHD_quiesce_daemon(s->daemon);
        if (fd != MHD_INVALID_SOCKET) close(fd);
        s->listen_fd = -2; /* quiesced */
    }
}

int http_open_connections(http_server *s) {
    const union MHD_DaemonInfo *i =
        s && s->daemon ? MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS) : NULL;
    return i ? (int)i->num_connections : 0;
}

void http_stop(http_server *s) {
    if (!s) return;
    gate_stop(s->gate); /* closes the listening socket */
    if (s->daemon) MHD_stop_daemon(s->daemon);
    tls_free(&s->tls);
    pthread_mutex_destroy(&s->resume_mu);
    free(s);
}
