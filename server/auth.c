/* auth: bearer token sets. See auth.h. */
#include "auth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_io.h"

/* A tokens file: a token a line, so this is generous. */
#define AUTH_FILE_MAX_BYTES ((size_t)1 << 20)

typedef struct token_set {
    int n;
    char **tok;
    size_t *len;
} token_set;

static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static token_set *g_set;          /* NULL: authentication off */
static char g_path[CFG_PATH_MAX]; /* "" : tokens not from a file */

static void set_free(token_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++)
        free(s->tok[i]);
    free(s->tok);
    free(s->len);
    free(s);
}

static int set_add(token_set *s, const char *t, size_t n) {
    char *copy = malloc(n + 1);
    if (!copy) return -1;
    memcpy(copy, t, n);
    copy[n] = 0;
    s->tok[s->n] = copy;
    s->len[s->n] = n;
    s->n++;
    return 0;
}

static token_set *set_new(void) {
    token_set *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->tok = calloc(AUTH_MAX_TOKENS, sizeof(*s->tok));
    s->len = calloc(AUTH_MAX_TOKENS, sizeof(*s->len));
    if (!s->tok || !s->len) {
        set_free(s);
        return NULL;
    }
    return s;
}

/* Reads path into a new set (*out, the caller's) or fills err. */
static int parse_file(const char *path, token_set **out, char *err, size_t errlen) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    token_set *s = NULL;
    int rc = AUTH_ERR_FILE;
    if (fio_read_all(path, AUTH_FILE_MAX_BYTES, &buf, &len, err, errlen) != FIO_OK) goto cleanup;
    if (!(s = set_new())) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto cleanup;
    }
    unsigned long line = 0;
    for (size_t at = 0; at < len;) {
        line++;
        const char *p = buf + at;
        const char *nl = memchr(p, '\n', len - at);
        size_t n = nl ? (size_t)(nl - p) : len - at;
        at += n + (nl ? 1 : 0);
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        if (n == 0 || *p == '#') continue;
        /* RFC 6750 token68 characters are a subset of visible ASCII; a space
         * or control byte inside means the file is not what it seems. */
        for (size_t i = 0; i < n; i++) {
            if (p[i] < 0x21 || p[i] > 0x7e) {
                snprintf(err, errlen,
                         "%s:%lu: a token may hold only visible ASCII characters (no spaces)", path,
                         line);
                goto cleanup;
            }
        }
        if (n >= CFG_STR_MAX) {
            snprintf(err, errlen, "%s:%lu: a token may be at most %d bytes", path, line,
                     CFG_STR_MAX - 1);
            goto cleanup;
        }
        if (s->n == AUTH_MAX_TOKENS) {
            snprintf(err, errlen, "%s: more than %d tokens", path, AUTH_MAX_TOKENS);
            goto cleanup;
        }
        if (set_add(s, p, n)) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto cleanup;
        }
    }
    if (s->n == 0) {
        /* An empty file must neither switch authentication off nor lock
         * every client out by accident. */
        snprintf(err, errlen, "%s holds no token (every line is blank or a comment)", path);
        goto cleanup;
    }
    *out = s;
    s = NULL;
    rc = AUTH_OK;
cleanup:
    set_free(s);
    free(buf);
    return rc;
}

int auth_check_file(const char *path, char *err, size_t errlen) {
    token_set *s = NULL;
    int rc = parse_file(path, &s, err, errlen);
    set_free(s);
    return rc;
}

static void install(token_set *s) {
    pthread_rwlock_wrlock(&g_lock);
    token_set *old = g_set;
    g_set = s;
    pthread_rwlock_unlock(&g_lock);
    set_free(old); /* no reader holds it: they hold the lock while reading */
}

int auth_init(const cfg *c, char *err, size_t errlen) {
    token_set *s = NULL;
    if (c->auth_token_file[0]) {
        int rc = parse_file(c->auth_token_file, &s, err, errlen);
        if (rc) return rc;
        snprintf(g_path, sizeof(g_path), "%s", c->auth_token_file);
    } else if (c->auth_token[0]) {
        if (!(s = set_new()) || set_add(s, c->auth_token, strlen(c->auth_token))) {
            set_free(s);
            snprintf(err, errlen, "out of memory");
            return AUTH_ERR_FILE;
        }
    }
    install(s);
    return AUTH_OK;
}

int auth_enabled(void) {
    pthread_rwlock_rdlock(&g_lock);
    int on = g_set != NULL;
    pthread_rwlock_unlock(&g_lock);
    return on;
}

/* Constant-time in the token's content: the loop always covers the longer
 * of the two and folds the length difference into the result. */
static int token_matches(const char *given, size_t glen, const char *want, size_t wlen) {
    size_t n = glen > wlen ? glen : wlen;
    volatile unsigned char diff = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < n; i++) {
        unsigned char a = i < glen ? (unsigned char)given[i] : 0;
        unsigned char b = i < wlen ? (unsigned char)want[i] : 0;
        diff |= a ^ b;
    }
    return diff == 0;
}

int auth_check(const char *given, size_t len) {
    pthread_rwlock_rdlock(&g_lock);
    int ok = g_set == NULL;
    if (g_set) {
        /* Every token is compared, whichever matches: which one (if any)
         * did must not show in the time taken. */
        volatile int any = 0;
        for (int i = 0; i < g_set->n; i++)
            any |= token_matches(given, len, g_set->tok[i], g_set->len[i]);
        ok = any;
    }
    pthread_rwlock_unlock(&g_lock);
    return ok;
}

int auth_reload(int *count, char *err, size_t errlen) {
    *count = auth_count();
    if (!g_path[0]) {
        snprintf(err, errlen, "server.auth_token_file is not set: nothing to reload");
        return AUTH_ERR_NO_FILE;
    }
    token_set *s = NULL;
    int rc = parse_file(g_path, &s, err, errlen);
    if (rc) return rc;
    *count = s->n;
    install(s);
    return AUTH_OK;
}

int auth_count(void) {
    pthread_rwlock_rdlock(&g_lock);
    int n = g_set ? g_set->n : 0;
    pthread_rwlock_unlock(&g_lock);
    return n;
}

void auth_free(void) {
    install(NULL);
    g_path[0] = 0;
}
