/* tls: opt-in HTTPS through libmicrohttpd's GnuTLS support
 * (server.tls_cert_file, server.tls_key_file: PEM files).
 *
 * With TLS on, libmicrohttpd owns the listening socket and runs the
 * handshake itself: the gate (gate.h), which peeks at plaintext request
 * heads, cannot read encrypted bytes and is not started. The heads are then
 * parsed by libmicrohttpd alone (its own refusals for malformed ones), and
 * the connection cap is libmicrohttpd's limit; docs/DEPLOY.md says so. For the
 * gate's protections behind TLS, terminate TLS in front of the server.
 *
 * Owns: the PEM texts read at start (libmicrohttpd keeps pointers to them
 * for the daemon's life) and the option array handed to MHD_start_daemon. */
#ifndef BERT_SERVER_TLS_H
#define BERT_SERVER_TLS_H

#include <microhttpd.h>
#include <stddef.h>

#include "config.h"

typedef struct tls_material {
    char *cert, *key; /* NULL: TLS off */
    struct MHD_OptionItem opts[4];
} tls_material;

/* Settings check, for cfg_validate and --check-config: both files or
 * neither; readable regular PEM files; and libmicrohttpd built with TLS
 * (MHD_is_feature_supported(MHD_FEATURE_TLS)). Writes "key '...': why". */
int tls_check_config(const cfg *c, char *err, size_t errlen);

/* Reads the PEM files named by c (nothing when TLS is off) into t. */
int tls_load(const cfg *c, tls_material *t, char *err, size_t errlen);

/* 1 when t holds a certificate and key. */
int tls_enabled(const tls_material *t);

/* Options for MHD_start_daemon's MHD_OPTION_ARRAY: when enabled, the
 * certificate, the key and listen_fd as libmicrohttpd's own listening socket
 * (it then owns it); else none. Valid while t is. */
const struct MHD_OptionItem *tls_mhd_options(tls_material *t, int listen_fd);

/* Frees what tls_load read (t may be zeroed or NULL). */
void tls_free(tls_material *t);

#endif
