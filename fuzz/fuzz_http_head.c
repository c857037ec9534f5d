/* fuzz_http_head: gate_check_head over arbitrary bytes.
 *
 * The gate (server/gate.c) reads the first request head of every connection
 * before libmicrohttpd does, so it is the first parser any client's bytes
 * reach. Its contract: it never reads past n; it answers 0 (incomplete) only
 * while the bytes are shorter than head_max; a refusal names an error code
 * with an HTTP status of 4xx/5xx and a message; and the verdict does not
 * depend on bytes after the head: a complete head stays complete (with the
 * same verdict) when more bytes follow it. The first input byte picks the
 * limits so that both the size refusals and the normal path are explored. */
#include "errcode.h"
#include "fuzz_common.h"
#include "gate.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t head_max = 64 + (size_t)(data[0] & 0x3f) * 64; /* 64 .. 4096 */
    size_t target_max = 16 + (size_t)(data[0] >> 6) * 32;
    const char *buf = (const char *)data + 1;
    size_t n = size - 1;
    /* An exact-size copy, so ASan sees any read past n. */
    char *copy = malloc(n ? n : 1);
    if (!copy) return 0;
    memcpy(copy, buf, n);
    gate_verdict v = {0};
    int rc = gate_check_head(copy, n, head_max, target_max, &v);
    FUZZ_CHECK(rc == -1 || rc == 0 || rc == 1, "gate_check_head returned %d", rc);
    if (rc == 0)
        FUZZ_CHECK(n < head_max, "incomplete at %zu bytes, over head_max %zu", n, head_max);
    if (rc == -1) {
        int status = errcode_status(v.err);
        FUZZ_CHECK(status >= 400 && status <= 599, "refusal with status %d", status);
        FUZZ_CHECK(v.message && v.message[0], "refusal without a message");
        FUZZ_CHECK(errcode_name(v.err) != NULL, "refusal with an unnamed code");
    }
    if (rc == 1) {
        /* Bytes after a complete head (a body, a pipelined request) change nothing. */
        char *more = malloc(n + 7);
        if (more) {
            memcpy(more, buf, n);
            memcpy(more + n, "GET / X", 7);
            gate_verdict v2 = {0};
            int rc2 = gate_check_head(more, n + 7, head_max, target_max, &v2);
            FUZZ_CHECK(rc2 == 1, "a complete head became %d with bytes after it", rc2);
            free(more);
        }
    }
    free(copy);
    return 0;
}
