/* http: the libmicrohttpd front end.
 *
 * Owns: the gate (gate.h: the listening socket, first request heads, the
 * connection cap), the MHD daemon and its polling threads, one
 * request context per HTTP request (body buffer, request id, timing), routing,
 * the checks that need no model (method, auth, content type, body size,
 * JSON syntax), per-request log lines and request metrics.
 *
 * The polling threads never run the model: inference requests become api_jobs
 * pushed into the pool; the connection is suspended until a worker completes
 * the job and resumes it. Everything model-dependent is answered 503 until
 * http_set_ready; after http_begin_drain new work is answered 503 while
 * accepted work finishes. */
#ifndef BERT_SERVER_HTTP_H
#define BERT_SERVER_HTTP_H

#include <stddef.h>

#include "api.h"
#include "config.h"
#include "metrics.h"
#include "pool.h"

typedef struct http_server http_server;

/* Binds c->listen:c->port and starts serving (health routes work at once). */
int http_start(const cfg *c, http_server **out, char *err, size_t errlen);
int http_port(const http_server *s); /* the bound port (useful with port 0) */

/* Model loaded and workers running: /v1 routes open. The pointers must stay
 * valid until http_stop. */
void http_set_ready(http_server *s, const api_ctx *api, pool *p, const metrics_model_info *mi);
/* /readyz and new /v1 work answer 503 from now on. */
void http_begin_drain(http_server *s);
/* /v1 requests accepted for processing whose response is not yet sent. */
int http_accepted(http_server *s);
/* Stops accepting connections (new ones are refused) while the open ones
 * carry on, so that answers already queued (a 503 draining, say) reach their
 * clients before http_stop closes what is left. */
void http_quiesce(http_server *s);
/* Open client connections (after http_quiesce: the ones still finishing). */
int http_open_connections(http_server *s);
/* Stops the daemon (every suspended connection must have been resumed) and
 * frees s. */
void http_stop(http_server *s);

#endif
