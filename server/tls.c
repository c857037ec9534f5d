/* tls: certificate and key for libmicrohttpd. See tls.h. */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_io.h"

/* A certificate chain plus key; real ones are a few KiB. */
#define TLS_PEM_MAX_BYTES ((size_t)1 << 20)

static int read_pem(const char *key, const char *path, char **out, char *err, size_t errlen) {
    char why[CFG_PATH_MAX + 256];
    size_t len = 0;
    *out = NULL;
    if (fio_read_all(path, TLS_PEM_MAX_BYTES, out, &len, why, sizeof(why)) != FIO_OK) {
        snprintf(err, errlen, "key '%s': %s", key, why);
        return -1;
    }
    if (!strstr(*out, "-----BEGIN ")) {
        snprintf(err, errlen, "key '%s': %s is not a PEM file (no -----BEGIN line)", key, path);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int tls_check_config(const cfg *c, char *err, size_t errlen) {
    int have_cert = c->tls_cert_file[0] != 0, have_key = c->tls_key_file[0] != 0;
    if (!have_cert && !have_key) return 0;
    if (have_cert != have_key) {
        snprintf(err, errlen,
                 "key '%s': TLS needs both server.tls_cert_file and "
                 "server.tls_key_file",
                 have_cert ? "server.tls_key_file" : "server.tls_cert_file");
        return -1;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, errlen,
                 "key 'server.tls_cert_file': this libmicrohttpd was built without "
                 "TLS support (GnuTLS); unset the TLS keys or terminate TLS in a "
                 "proxy in front of the server");
        return -1;
    }
    tls_material t = {0};
    int rc = tls_load(c, &t, err, errlen);
    tls_free(&t);
    return rc;
}

int tls_load(const cfg *c, tls_material *t, char *err, size_t errlen) {
    memset(t, 0, sizeof(*t));
    t->opts[0] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    if (!c->tls_cert_file[0]) return 0;
    if (read_pem("server.tls_cert_file", c->tls_cert_file, &t->cert, err, errlen) ||
        read_pem("server.tls_key_file", c->tls_key_file, &t->key, err, errlen)) {
        tls_free(t);
        return -1;
    }
    return 0;
}

int tls_enabled(const tls_material *t) {
    return t && t->cert && t->key;
}

const struct MHD_OptionItem *tls_mhd_options(tls_material *t, int listen_fd) {
    if (!tls_enabled(t)) {
        t->opts[0] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
        return t->opts;
    }
    t->opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, t->cert};
    t->opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, t->key};
    t->opts[2] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL};
    t->opts[3] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return t->opts;
}

void tls_free(tls_material *t) {
    if (!t) return;
    free(t->cert);
    /* The key is a secret: do not leave it in freed heap memory. */
    if (t->key) explicit_bzero(t->key, strlen(t->key));
    free(t->key);
    t->cert = t->key = NULL;
    t->opts[0] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
}
