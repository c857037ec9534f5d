/* gate: reads the head of the first request on every new connection before
 * libmicrohttpd does, and answers malformed ones itself in the documented
 * JSON error shape.
 *
 * Why: libmicrohttpd 0.9.75 answers a malformed Content-Length, an HTTP
 * version it does not speak, an over-long request line or header block, and
 * a few more, from inside its parser, before any application callback runs,
 * with HTML bodies (and, for a bad Content-Length, with its status line and
 * headers sent twice). It has no hook for those responses. The gate owns the
 * listening socket: it accepts, peeks (MSG_PEEK) at the bytes until the head
 * is complete, and either hands the connection to libmicrohttpd
 * (MHD_add_connection, which then reads the same bytes) or answers and closes
 * it. Later requests on a kept-alive connection are parsed by libmicrohttpd
 * alone; http.c repeats the framing checks for them.
 *
 * Owns: one thread, its epoll set, the listening socket after gate_start, and
 * every connection until it is admitted. Also enforces the connection cap:
 * heads being read plus the connections served (opts.served) never exceed
 * opts.cap; beyond it a connection is closed at once. */
#ifndef BERT_SERVER_GATE_H
#define BERT_SERVER_GATE_H

#include <stddef.h>
#include <sys/socket.h>

#include "errcode.h"

typedef struct gate gate;

typedef struct gate_verdict {
    errcode err;         /* the refusal's code (and so its status) */
    const char *message; /* static text */
} gate_verdict;

typedef struct gate_opts {
    int listen_fd;     /* listening, non-blocking; the gate closes it */
    int timeout_s;     /* idle time allowed while a head arrives */
    int cap;           /* connections at most, heads being read included */
    size_t head_max;   /* request line + headers, bytes */
    size_t target_max; /* request target, bytes */
    /* Connections served now (libmicrohttpd's). */
    int (*served)(void *user);
    /* Takes ownership of fd: the head passed the checks. */
    void (*admit)(void *user, int fd, const struct sockaddr *addr, socklen_t addrlen);
    void *user;
} gate_opts;

/* Starts the gate thread. On failure writes a message to err. */
int gate_start(const gate_opts *o, gate **out, char *err, size_t errlen);
/* Closes the listening socket and every connection whose head has not
 * arrived yet; returns once the gate thread has done so. */
void gate_quiesce(gate *g);
/* Quiesces, stops the thread and frees g (NULL: nothing). */
void gate_stop(gate *g);

/* Checks one request head in buf[0..n): returns 0 while it is incomplete
 * (and within head_max), 1 when complete and acceptable, -1 when it must be
 * refused (*v says how). Pure; used by the gate and by the tests' fuzzing. */
int gate_check_head(const char *buf, size_t n, size_t head_max, size_t target_max, gate_verdict *v);

/* The message-framing rules of RFC 9112 section 6.3 on the Content-Length
 * and Transfer-Encoding headers of one request (n_* headers seen; the value
 * pointers are the last one's, length-delimited). Returns 1 when framing is
 * unambiguous and supported, 0 otherwise (*v says how to refuse). */
int gate_check_framing(int n_length, const char *length, size_t length_len, int n_encoding,
                       const char *encoding, size_t encoding_len, gate_verdict *v);

#endif
