/* gate: first-request head checks in front of libmicrohttpd. See gate.h. */
#include "gate.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "answer.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"

/* ---- head checks (pure) ---- */

static int is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int refuse(gate_verdict *v, errcode err, const char *message) {
    v->err = err;
    v->message = message;
    return -1;
}

static void trim_ows(const char **p, size_t *n) {
    while (*n && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

int gate_check_framing(int n_length, const char *length, size_t length_len, int n_encoding,
                       const char *encoding, size_t encoding_len, gate_verdict *v) {
    if (n_encoding && n_length) {
        refuse(v, ERR_BAD_FRAMING,
               "Content-Length and Transfer-Encoding together are ambiguous; send one");
        return 0;
    }
    if (n_encoding) {
        trim_ows(&encoding, &encoding_len);
        if (n_encoding > 1 || encoding_len != 7 || strncasecmp(encoding, "chunked", 7) != 0) {
            refuse(v, ERR_UNSUPPORTED_TRANSFER_ENCODING,
                   "the only Transfer-Encoding accepted is 'chunked'");
            return 0;
        }
        return 1;
    }
    if (n_length) {
        trim_ows(&length, &length_len);
        int ok = n_length == 1 && length_len > 0 && length_len <= 18;
        for (size_t i = 0; ok && i < length_len; i++)
            ok = length[i] >= '0' && length[i] <= '9';
        if (!ok) {
            refuse(v, ERR_BAD_FRAMING,
                   "send exactly one Content-Length header holding a decimal number");
            return 0;
        }
    }
    return 1;
}

/* End of the line starting at p (the '\n'), or NULL. */
static const char *line_end(const char *p, const char *end) {
    return memchr(p, '\n', (size_t)(end - p));
}

int gate_check_head(const char *buf, size_t n, size_t head_max, size_t target_max,
                    gate_verdict *v) {
    const char *p = buf, *end = buf + n;
    /* RFC 9112 section 2.2: empty lines before the request line are ignored. */
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    const char *eol = line_end(p, end);
    if (!eol) {
        if (n < head_max) return 0;
        return refuse(v, ERR_URI_TOO_LONG, "the request line is too long");
    }
    /* the request line: method SP target SP version */
    const char *le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
    const char *sp1 = memchr(p, ' ', (size_t)(le - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(le - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1)
        return refuse(v, ERR_BAD_REQUEST, "the request line must be 'METHOD TARGET HTTP/1.1'");
    for (const char *c = p; c < sp1; c++)
        if (!is_tchar((unsigned char)*c))
            return refuse(v, ERR_BAD_REQUEST, "the method holds a character it may not");
    for (const char *c = sp1 + 1; c < sp2; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
            return refuse(v, ERR_BAD_REQUEST,
                          "the request target holds a space or a control character");
    if ((size_t)(sp2 - sp1 - 1) > target_max)
        return refuse(v, ERR_URI_TOO_LONG, "the request target is too long");
    const char *ver = sp2 + 1;
    size_t vlen = (size_t)(le - ver);
    int well_formed = vlen == 8 && memcmp(ver, "HTTP/", 5) == 0 && ver[5] >= '0' && ver[5] <= '9' &&
                      ver[6] == '.' && ver[7] >= '0' && ver[7] <= '9';
    if (!well_formed)
        return refuse(v, ERR_BAD_REQUEST, "the request line must be 'METHOD TARGET HTTP/1.1'");
    if (memcmp(ver, "HTTP/1.1", 8) != 0 && memcmp(ver, "HTTP/1.0", 8) != 0)
        return refuse(v, ERR_HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and HTTP/1.1 are served");

    /* header lines up to the empty one */
    int n_length = 0, n_encoding = 0;
    const char *length = NULL, *encoding = NULL;
    size_t length_len = 0, encoding_len = 0;
    for (p = eol + 1;; p = eol + 1) {
        eol = line_end(p, end);
        if (!eol) {
            if (n < head_max) return 0;
            return refuse(v, ERR_HEADER_TOO_LARGE, "the request headers are too large");
        }
        if ((size_t)(eol + 1 - buf) > head_max)
            return refuse(v, ERR_HEADER_TOO_LARGE, "the request headers are too large");
        le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (le == p) break; /* end of the head */
        if (*p == ' ' || *p == '\t')
            return refuse(v, ERR_BAD_REQUEST, "folded header lines are not accepted");
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon || colon == p)
            return refuse(v, ERR_BAD_REQUEST, "a header line must be 'Name: value'");
        for (const char *c = p; c < colon; c++)
            if (!is_tchar((unsigned char)*c))
                return refuse(v, ERR_BAD_REQUEST, "a header name holds a character it may not");
        for (const char *c = colon + 1; c < le; c++)
            if (((unsigned char)*c < 0x20 && *c != '\t') || (unsigned char)*c == 0x7f)
                return refuse(v, ERR_BAD_REQUEST, "a header value holds a control character");
        size_t name_len = (size_t)(colon - p);
        if (name_len == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            n_length++;
            length = colon + 1;
            length_len = (size_t)(le - colon - 1);
        } else if (name_len == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
            n_encoding++;
            encoding = colon + 1;
            encoding_len = (size_t)(le - colon - 1);
        }
    }
    if (!gate_check_framing(n_length, length, length_len, n_encoding, encoding, encoding_len, v))
        return -1;
    return 1;
}

/* ---- the gate thread ---- */

typedef struct pending {
    int fd; /* -1: free slot */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t deadline_ns;
    size_t seen; /* bytes of head seen so far */
} pending;

struct gate {
    gate_opts o;
    int ep, wake;
    pthread_t thread;
    pending *slots; /* o.cap of them; epoll data points at one */
    int n_pending;
    int listening;
    int64_t accept_resume_ns; /* > 0: accept paused (EMFILE) until then */
    atomic_int quiesce, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quiesced;     /* guarded by mu */
    char *buf;        /* head_max + 1 bytes, peek buffer */
    uint64_t refused; /* heads answered here, for their request ids */
};

static const char *reason(int status) {
    switch (status) {
    case 400:
        return "Bad Request";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

static void release(gate *g, pending *p) {
    epoll_ctl(g->ep, EPOLL_CTL_DEL, p->fd, NULL);
    p->fd = -1;
    g->n_pending--;
}

/* Answers a refused head in the documented JSON shape and closes. The head
 * bytes are read first, and the write side shut before closing, so that the
 * close does not turn into a reset that could destroy the answer. */
static void answer_and_close(gate *g, pending *p, const gate_verdict *v, size_t head_len) {
    int64_t t0 = clock_now_ns();
    size_t blen = 0;
    char *body = answer_error_body(errcode_name(v->err), v->message, &blen);
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      errcode_status(v->err), reason(errcode_status(v->err)), body ? blen : 0);
    int fd = p->fd;
    release(g, p);
    for (size_t left = head_len; left > 0;) {
        ssize_t r = recv(fd, g->buf, left < g->o.head_max ? left : g->o.head_max, MSG_DONTWAIT);
        if (r <= 0) break;
        left -= (size_t)r;
    }
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL | MSG_DONTWAIT) == hl && body)
        (void)!send(fd, body, blen, MSG_NOSIGNAL | MSG_DONTWAIT);
    free(body);
    shutdown(fd, SHUT_WR);
    close(fd);
    double secs = (double)(clock_now_ns() - t0) / 1e9;
    metrics_observe_request(ROUTE_OTHER, errcode_status(v->err), secs, 1);
    /* the same fields as http.c's request lines; the head was not parsed, so
     * method and path are unknown */
    char id[32];
    snprintf(id, sizeof(id), "gate-%llu", (unsigned long long)++g->refused);
    log_json(LOG_INFO, "request",
             json_pack("{s:s,s:s,s:s,s:i,s:f,s:i,s:s}", "request_id", id, "method", "?", "path",
                       "?", "status", errcode_status(v->err), "latency_ms", secs * 1e3, "tokens", 0,
                       "error", errcode_name(v->err)));
}

static void examine(gate *g, pending *p, uint32_t events) {
    ssize_t n = recv(p->fd, g->buf, g->o.head_max + 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close(p->fd); /* gone before sending a request */
        release(g, p);
        return;
    }
    if (n < 0) return;
    gate_verdict v = {0};
    int r = gate_check_head(g->buf, (size_t)n, g->o.head_max, g->o.target_max, &v);
    if (r == 0) {
        /* The peeked bytes hide the end of the stream: a client that has
         * closed with its head incomplete shows only as RDHUP/HUP. */
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            close(p->fd);
            release(g, p);
            return;
        }
        if ((size_t)n > p->seen) { /* idle timeout, as libmicrohttpd's */
            p->seen = (size_t)n;
            p->deadline_ns = clock_now_ns() + (int64_t)g->o.timeout_s * 1000000000LL;
        }
        return;
    }
    if (r < 0) {
        answer_and_close(g, p, &v, (size_t)n);
        return;
    }
    int fd = p->fd;
    struct sockaddr_storage addr = p->addr;
    socklen_t addrlen = p->addrlen;
    release(g, p);
    g->o.admit(g->o.user, fd, (struct sockaddr *)&addr, addrlen);
}

static void accept_all(gate *g) {
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t addrlen = sizeof(addr);
        int fd = accept4(g->o.listen_fd, (struct sockaddr *)&addr, &addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: stop polling the listener for a moment
                 * instead of spinning on it */
                epoll_ctl(g->ep, EPOLL_CTL_DEL, g->o.listen_fd, NULL);
                g->accept_resume_ns = clock_now_ns() + 100000000LL;
            }
            return;
        }
        if (g->n_pending + g->o.served(g->o.user) >= g->o.cap) {
            close(fd); /* over the cap: closed at once (docs/RELIABILITY.md, 3) */
            continue;
        }
        pending *p = NULL;
        for (int i = 0; i < g->o.cap && !p; i++)
            if (g->slots[i].fd < 0) p = &g->slots[i];
        if (!p) {
            close(fd);
            continue;
        }
        p->fd = fd;
        p->addr = addr;
        p->addrlen = addrlen;
        p->seen = 0;
        p->deadline_ns = clock_now_ns() + (int64_t)g->o.timeout_s * 1000000000LL;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p};
        if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            p->fd = -1;
            continue;
        }
        g->n_pending++;
    }
}

static void close_listener_and_pending(gate *g) {
    if (g->listening) {
        epoll_ctl(g->ep, EPOLL_CTL_DEL, g->o.listen_fd, NULL);
        close(g->o.listen_fd);
        g->listening = 0;
    }
    for (int i = 0; i < g->o.cap; i++)
        if (g->slots[i].fd >= 0) {
            close(g->slots[i].fd);
            release(g, &g->slots[i]);
        }
}

static void *gate_main(void *arg) {
    gate *g = arg;
    struct epoll_event evs[64];
    while (!atomic_load(&g->stop)) {
        int64_t now = clock_now_ns(), next = -1;
        if (g->listening && g->accept_resume_ns && now >= g->accept_resume_ns) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
            epoll_ctl(g->ep, EPOLL_CTL_ADD, g->o.listen_fd, &ev);
            g->accept_resume_ns = 0;
        }
        if (g->accept_resume_ns) next = g->accept_resume_ns;
        for (int i = 0; g->n_pending && i < g->o.cap; i++) {
            pending *p = &g->slots[i];
            if (p->fd < 0) continue;
            if (p->deadline_ns <= now) { /* idle too long: closed, as libmicrohttpd does */
                close(p->fd);
                release(g, p);
            } else if (next < 0 || p->deadline_ns < next) {
                next = p->deadline_ns;
            }
        }
        int timeout_ms = next < 0 ? -1 : (int)((next - now + 999999) / 1000000);
        int n = epoll_wait(g->ep, evs, 64, timeout_ms);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                if (g->listening) accept_all(g);
            } else if (evs[i].data.ptr == (void *)g) {
                uint64_t v;
                (void)!read(g->wake, &v, sizeof(v));
            } else {
                pending *p = evs[i].data.ptr;
                if (p->fd >= 0) examine(g, p, evs[i].events);
            }
        }
        if (atomic_load(&g->quiesce)) {
            close_listener_and_pending(g);
            pthread_mutex_lock(&g->mu);
            g->quiesced = 1;
            pthread_cond_broadcast(&g->cv);
            pthread_mutex_unlock(&g->mu);
        }
    }
    return NULL;
}

int gate_start(const gate_opts *o, gate **out, char *err, size_t errlen) {
    *out = NULL;
    gate *g = calloc(1, sizeof(*g));
    if (!g) goto oom;
    g->o = *o;
    g->ep = g->wake = -1;
    g->slots = calloc((size_t)o->cap, sizeof(*g->slots));
    g->buf = malloc(o->head_max + 1);
    if (!g->slots || !g->buf) goto oom;
    for (int i = 0; i < o->cap; i++)
        g->slots[i].fd = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->ep = epoll_create1(EPOLL_CLOEXEC);
    g->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = g};
    if (g->ep < 0 || g->wake < 0 || epoll_ctl(g->ep, EPOLL_CTL_ADD, o->listen_fd, &lev) != 0 ||
        epoll_ctl(g->ep, EPOLL_CTL_ADD, g->wake, &wev) != 0) {
        snprintf(err, errlen, "cannot set up the connection gate: %s", strerror(errno));
        goto fail;
    }
    g->listening = 1;
    if (pthread_create(&g->thread, NULL, gate_main, g) != 0) {
        snprintf(err, errlen, "cannot start the connection gate thread");
        goto fail;
    }
    *out = g;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (g) {
        if (g->ep >= 0) close(g->ep);
        if (g->wake >= 0) close(g->wake);
        free(g->slots);
        free(g->buf);
        free(g);
    }
    return -1;
}

static void wake(gate *g) {
    uint64_t one = 1;
    (void)!write(g->wake, &one, sizeof(one));
}

void gate_quiesce(gate *g) {
    if (!g) return;
    atomic_store(&g->quiesce, 1);
    wake(g);
    pthread_mutex_lock(&g->mu);
    while (!g->quiesced)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void gate_stop(gate *g) {
    if (!g) return;
    gate_quiesce(g);
    atomic_store(&g->stop, 1);
    wake(g);
    pthread_join(g->thread, NULL);
    close(g->ep);
    close(g->wake);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->slots);
    free(g->buf);
    free(g);
}
