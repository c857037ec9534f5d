/* auth: the bearer tokens the /v1 routes accept, and their reload on SIGHUP.
 *
 * The tokens come from server.auth_token_file when it is set (one token a
 * line; blank lines and lines starting with '#' are skipped; surrounding
 * spaces are trimmed), else from server.auth_token (one token), else there
 * are none and authentication is off. Keys are rotated without downtime by
 * editing the file and sending SIGHUP: auth_reload swaps the whole set at
 * once, so a request sees either the old set or the new one. A file that
 * cannot be read or holds no valid token keeps the old set.
 *
 * Owns: the current token set (process-wide, behind a read-write lock;
 * checks take the read side). Safe from any thread. */
#ifndef BERT_SERVER_AUTH_H
#define BERT_SERVER_AUTH_H

#include <stddef.h>

#include "config.h"

/* Most tokens one file may hold. */
#define AUTH_MAX_TOKENS 1024

typedef enum {
    AUTH_OK = 0,
    AUTH_ERR_FILE = 1,    /* unreadable, too big, or a line that is no token */
    AUTH_ERR_NO_FILE = 2, /* auth_reload without server.auth_token_file */
} auth_status;

/* Parses the token file at path without installing it: AUTH_OK, or
 * AUTH_ERR_FILE with "PATH:LINE: why" in err. For --check-config and start-up. */
int auth_check_file(const char *path, char *err, size_t errlen);

/* Installs the tokens c names (see above). On failure the previous set (none
 * at start) stays and err says why. */
int auth_init(const cfg *c, char *err, size_t errlen);

/* 1 when the /v1 routes need a token. */
int auth_enabled(void);

/* 1 when given[0..len) equals one of the tokens (or authentication is off).
 * Constant-time in the tokens' content: every token is compared over its
 * whole length, with no early exit on a match or a mismatch. */
int auth_check(const char *given, size_t len);

/* Re-reads server.auth_token_file; on success *count receives the number of
 * tokens now accepted. AUTH_ERR_NO_FILE when no file is configured. */
int auth_reload(int *count, char *err, size_t errlen);

/* Tokens accepted now (0: authentication off). */
int auth_count(void);

/* Frees the set (at exit, for leak checkers). */
void auth_free(void);

#endif
