/* http: libmicrohttpd front end. See http.h. */
#include "http.h"

#include <arpa/inet.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include "infer.h"
#include "log.h"

/* A streaming body past max_body_bytes is read and dropped (so the client
 * can receive its 413) up to this much, then the connection is cut. */
#define HTTP_DISCARD_LIMIT (64L << 20)

struct http_server {
    const cfg *cfg;
    struct MHD_Daemon *daemon;
    int listen_fd;
    int port;
    /* Set once by http_set_ready; read by polling threads after `ready`. */
    const api_ctx *api;
    pool *pool;
    const metrics_model_info *model_info;
    atomic_int ready;
    atomic_int draining;
    atomic_int accepted;
    /* Orders MHD_suspend_connection before MHD_resume_connection for one job. */
    pthread_mutex_t resume_mu;
    uint64_t id_seed;
    atomic_uint_fast64_t id_counter;
};

typedef enum { R_POST_JOB, R_POST_TOKENIZE, R_GET } route_kind;

typedef struct route {
    const char *path;
    metrics_route metric;
    route_kind kind;
    int needs_auth;
} route;

static const route ROUTES[] = {
    {"/v1/fill-mask", ROUTE_FILL_MASK, R_POST_JOB, 1},
    {"/v1/next-sentence", ROUTE_NEXT_SENTENCE, R_POST_JOB, 1},
    {"/v1/tokenize", ROUTE_TOKENIZE, R_POST_TOKENIZE, 1},
    {"/v1/models", ROUTE_MODELS, R_GET, 1},
    {"/healthz", ROUTE_HEALTHZ, R_GET, 0},
    {"/readyz", ROUTE_READYZ, R_GET, 0},
    {"/metrics", ROUTE_METRICS, R_GET, 0},
};
#define N_ROUTES (sizeof(ROUTES) / sizeof(ROUTES[0]))

typedef struct req_ctx {
    http_server *srv;
    struct MHD_Connection *conn;
    const route *route; /* NULL: unknown path */
    char request_id[80];
    char method[16];
    char path[256];
    int64_t t0;
    char *body;
    size_t len, cap;
    long discarded; /* > 0: body over the limit, being dropped */
    int counted;    /* counted in srv->accepted */
    int status;
    const char *err_code;
    long tokens;
    api_job *job;
    int job_done, suspended; /* guarded by srv->resume_mu */
    int fd;                  /* the connection's socket, for job_client_gone */
    int drain_after_body;    /* answer 503 draining once the body is read */
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
    for (const char *const *h = headers; h && h[0]; h += 2)
        MHD_add_response_header(resp, h[0], h[1]);
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(req_ctx *r, int status, char *body, size_t len,
                                 const char *const *headers) {
    return send_buf(r, status, body, len, "application/json", headers);
}

static enum MHD_Result send_error(req_ctx *r, int status, const char *code, const char *message,
                                  const char *const *headers) {
    size_t len = 0;
    char *body = api_error_body(code, message, &len);
    r->err_code = code;
    return send_json(r, status, body, len, headers);
}

static enum MHD_Result send_overloaded(req_ctx *r) {
    static const char *const h[] = {"Retry-After", "1", NULL};
    return send_error(r, 503, "overloaded",
                      "all workers are busy and the queue is full; retry after a second", h);
}

static enum MHD_Result send_draining(req_ctx *r) {
    static const char *const h[] = {"Retry-After", "5", "Connection", "close", NULL};
    return send_error(r, 503, "draining",
                      "the server is shutting down and accepts no new work; retry on another "
                      "instance",
                      h);
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

static const route *find_route(const char *url) {
    for (size_t i = 0; i < N_ROUTES; i++)
        if (strcmp(url, ROUTES[i].path) == 0) return &ROUTES[i];
    return NULL;
}

/* Constant-time in the token's content: the loop always covers the longer
 * of the two and folds the length difference into the result. */
static int token_matches(const char *given, size_t glen, const char *want) {
    size_t wlen = strlen(want);
    size_t n = glen > wlen ? glen : wlen;
    volatile unsigned char diff = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < n; i++) {
        unsigned char a = i < glen ? (unsigned char)given[i] : 0;
        unsigned char b = i < wlen ? (unsigned char)want[i] : 0;
        diff |= a ^ b;
    }
    return diff == 0;
}

static int authorized(http_server *s, req_ctx *r) {
    if (!s->cfg->auth_token[0]) return 1;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    return token_matches(h, n, s->cfg->auth_token);
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

/* ---- GET routes ---- */

static enum MHD_Result handle_get(http_server *s, req_ctx *r) {
    char *body = NULL;
    size_t len = 0;
    switch (r->route->metric) {
    case ROUTE_HEALTHZ:
        body = strdup("{\"status\":\"ok\"}");
        return send_json(r, 200, body, body ? strlen(body) : 0, NULL);
    case ROUTE_READYZ: {
        const char *state = atomic_load(&s->draining) ? "draining"
                            : atomic_load(&s->ready)  ? "ready"
                                                      : "loading";
        int status = strcmp(state, "ready") == 0 ? 200 : 503;
        char buf[64];
        snprintf(buf, sizeof(buf), "{\"status\":\"%s\"}", state);
        body = strdup(buf);
        return send_json(r, status, body, body ? strlen(body) : 0, NULL);
    }
    case ROUTE_METRICS: {
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
        body = metrics_render(&g, &len);
        if (!body) return send_error(r, 500, "internal", "out of memory", NULL);
        return send_buf(r, 200, body, len, "text/plain; version=0.0.4; charset=utf-8", NULL);
    }
    case ROUTE_MODELS:
        if (!atomic_load(&s->ready)) {
            static const char *const h[] = {"Retry-After", "1", NULL};
            return send_error(r, 503, "loading", "the model is still loading; retry shortly", h);
        }
        body = api_models(s->api, &len);
        if (!body) return send_error(r, 500, "internal", "out of memory", NULL);
        return send_json(r, 200, body, len, NULL);
    default:
        return send_error(r, 404, "not_found", "no such route", NULL);
    }
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

static enum MHD_Result send_job_result(req_ctx *r) {
    api_job *job = r->job;
    r->tokens = job->tokens; /* counted by the worker, which tokenizes */
    static const char *const retry[] = {"Retry-After", "1", NULL};
    char *body = job->body;
    size_t len = job->body_len;
    job->body = NULL; /* the response owns it now */
    r->err_code = job->err_code;
    if (!body) return send_error(r, 500, "internal", "no answer was produced", NULL);
    return send_json(r, job->status, body, len, job->status == 503 ? retry : NULL);
}

static enum MHD_Result submit_job(http_server *s, req_ctx *r, api_job *job) {
    r->job = job;
    r->tokens = job->tokens;
    job->owner = r;
    job->complete = job_complete;
    job->gone = job_client_gone;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    job->deadline_ns = infer_now_ns() + (int64_t)s->cfg->request_timeout_ms * 1000000LL;
    int rc = pool_submit(s->pool, &job->item);
    if (rc == POOL_FULL) return send_overloaded(r);
    if (rc != POOL_OK) return send_draining(r);
    pthread_mutex_lock(&s->resume_mu);
    int done = r->job_done;
    if (!done) {
        MHD_suspend_connection(r->conn);
        r->suspended = 1;
    }
    pthread_mutex_unlock(&s->resume_mu);
    return done ? send_job_result(r) : MHD_YES;
}

static enum MHD_Result handle_body(http_server *s, req_ctx *r) {
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
    if (!req) {
        char msg[300];
        if (json_error_code(&je) == json_error_invalid_utf8) {
            snprintf(msg, sizeof(msg), "the body is not valid UTF-8 (byte %d)", je.position);
            return send_error(r, 400, "invalid_utf8", msg, NULL);
        }
        snprintf(msg, sizeof(msg), "the body is not valid JSON: %s at line %d, column %d", je.text,
                 je.line, je.column);
        return send_error(r, 400, "invalid_json", msg, NULL);
    }
    api_error e = {0};
    api_job *job = NULL;
    /* Parsed (tokenized) on a worker: on this polling thread a 1 MB body held
     * up the /healthz probes it also answers. */
    int rc = api_defer(s->api,
                       r->route->kind == R_POST_TOKENIZE     ? API_TOKENIZE
                       : r->route->metric == ROUTE_FILL_MASK ? API_FILL_MASK
                                                             : API_NEXT_SENTENCE,
                       req, r->len, &job, &e);
    json_decref(req);
    free(r->body); /* the job holds the parsed request now */
    r->body = NULL;
    r->len = r->cap = 0;
    if (rc) return send_error(r, e.status, e.code, e.message, NULL);
    return submit_job(s, r, job);
}

/* ---- MHD callbacks ---- */

static enum MHD_Result first_call(http_server *s, req_ctx *r, const char *method) {
    if (!r->route)
        return send_error(r, 404, "not_found",
                          "no such route; the routes are POST /v1/fill-mask, /v1/next-sentence, "
                          "/v1/tokenize and GET /v1/models, /healthz, /readyz, /metrics",
                          NULL);
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    if (r->route->kind == R_GET && !is_get) {
        static const char *const h[] = {"Allow", "GET, HEAD", NULL};
        return send_error(r, 405, "method_not_allowed", "this route accepts GET", h);
    }
    if (r->route->kind != R_GET && !is_post) {
        static const char *const h[] = {"Allow", "POST", NULL};
        return send_error(r, 405, "method_not_allowed", "this route accepts POST", h);
    }
    if (r->route->needs_auth && !authorized(s, r)) {
        static const char *const h[] = {"WWW-Authenticate", "Bearer realm=\"bert-serve\"", NULL};
        return send_error(r, 401, "unauthorized",
                          "send the API token as 'Authorization: Bearer <token>'", h);
    }
    if (r->route->kind == R_GET) return handle_get(s, r);

    if (atomic_load(&s->draining)) {
        /* Answered after the body is read: closing a socket with unread data
         * sends a reset, which can destroy the 503 before the client reads it. */
        const char *len = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
        if (!len || strtoull(len, NULL, 10) > (unsigned long long)s->cfg->max_body_bytes)
            return send_draining(r);
        r->drain_after_body = 1;
        return MHD_YES;
    }
    if (!atomic_load(&s->ready)) {
        static const char *const h[] = {"Retry-After", "1", NULL};
        return send_error(r, 503, "loading", "the model is still loading; retry shortly", h);
    }
    if (!content_type_is_json(r->conn))
        return send_error(r, 415, "unsupported_media_type",
                          "send the body as JSON with 'Content-Type: application/json'", NULL);
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == ERANGE || n > (unsigned long long)s->cfg->max_body_bytes) {
            char msg[160];
            snprintf(msg, sizeof(msg), "the body may be at most %ld bytes", s->cfg->max_body_bytes);
            return send_error(r, 413, "payload_too_large", msg, NULL);
        }
    }
    r->counted = 1;
    atomic_fetch_add(&s->accepted, 1);
    metrics_add_inflight(1);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    http_server *s = cls;
    req_ctx *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) return MHD_NO;
        *con_cls = r;
        r->srv = s;
        r->conn = conn;
        r->t0 = infer_now_ns();
        r->route = find_route(url);
        copy_printable(r->method, sizeof(r->method), method);
        copy_printable(r->path, sizeof(r->path), url);
        set_request_id(s, r);
        enum MHD_Result ret = first_call(s, r, method);
        return ret;
    }
    if (r->status) { /* answered early: drop any body */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->drain_after_body) {
        if (!*upload_data_size) return send_draining(r);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->job) {
        pthread_mutex_lock(&s->resume_mu);
        int done = r->job_done;
        pthread_mutex_unlock(&s->resume_mu);
        if (!done) return MHD_YES;
        return send_job_result(r);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->discarded || r->len + n > (size_t)s->cfg->max_body_bytes) {
            r->discarded += (long)n;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return r->discarded > HTTP_DISCARD_LIMIT ? MHD_NO : MHD_YES;
        }
        if (r->len + n > r->cap) {
            size_t ncap = r->cap ? r->cap : 4096;
            while (ncap < r->len + n)
                ncap *= 2;
            if (ncap > (size_t)s->cfg->max_body_bytes) ncap = (size_t)s->cfg->max_body_bytes;
            char *nb = realloc(r->body, ncap);
            if (!nb) return MHD_NO;
            r->body = nb;
            r->cap = ncap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        return MHD_YES;
    }
    if (r->discarded) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the body may be at most %ld bytes", s->cfg->max_body_bytes);
        return send_error(r, 413, "payload_too_large", msg, NULL);
    }
    return handle_body(s, r);
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
    double secs = (double)(infer_now_ns() - r->t0) / 1e9;
    metrics_observe_request(r->route ? r->route->metric : ROUTE_OTHER, r->status, secs);
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
    free(r->body);
    free(r);
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
        s->id_seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)infer_now_ns();
    int ipv6 = 0;
    if (open_listener(c, &s->listen_fd, &s->port, &ipv6, err, errlen)) goto error;
    /* ITC: MHD_quiesce_daemon needs it with internal polling threads. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ipv6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->port, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)c->http_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)c->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)c->connection_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot start the HTTP server on %s port %d", c->listen, s->port);
        goto error;
    }
    *out = s;
    return 0;
error:
    if (s->listen_fd >= 0) close(s->listen_fd);
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
    if (!s || !s->daemon || s->listen_fd < 0) return;
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) { /* no longer MHD's: the daemon will not close it */
        close(fd);
        s->listen_fd = -1;
    }
}

int http_open_connections(http_server *s) {
    const union MHD_DaemonInfo *i =
        s && s->daemon ? MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS) : NULL;
    return i ? (int)i->num_connections : 0;
}

void http_stop(http_server *s) {
    if (!s) return;
    if (s->daemon) MHD_stop_daemon(s->daemon); /* also closes listen_fd */
    pthread_mutex_destroy(&s->resume_mu);
    free(s);
}
