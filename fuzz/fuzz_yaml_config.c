/* fuzz_yaml_config: the server's YAML config parser (cfg_load_buffer) over
 * arbitrary bytes.
 *
 * Checks beyond "no crash": a failure always explains itself, a success
 * leaves every field inside the range config.h documents and every string
 * terminated inside its array, and loading the same text a second time over
 * the result changes nothing (only keys present in the file are applied, so
 * the load must be idempotent). */
#include "config.h"
#include "fuzz_common.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cfg c;
    char err[1024];
    err[0] = 0;
    cfg_defaults(&c);
    int rc = cfg_load_buffer(&c, (const char *)data, size, "fuzz.yaml", err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (rc != CFG_OK) {
        FUZZ_CHECK(rc == CFG_ERR_VALUE || rc == CFG_ERR_IO, "unexpected status %d", rc);
        FUZZ_CHECK(strncmp(err, "fuzz.yaml", 9) == 0, "message does not name the file: '%s'", err);
        return 0;
    }
    FUZZ_CHECK(fuzz_terminated(c.listen, sizeof(c.listen)), "listen not terminated");
    FUZZ_CHECK(fuzz_terminated(c.auth_token, sizeof(c.auth_token)), "auth_token not terminated");
    FUZZ_CHECK(fuzz_terminated(c.model_dir, sizeof(c.model_dir)), "model_dir not terminated");
    FUZZ_CHECK(c.model_dir[0] != 0, "empty model_dir accepted");
    FUZZ_CHECK(c.port >= 0 && c.port <= 65535, "port %d", c.port);
    FUZZ_CHECK(c.max_body_bytes >= 64 && c.max_body_bytes <= (1L << 30), "max_body_bytes %ld",
               c.max_body_bytes);
    FUZZ_CHECK(c.max_connections >= 1, "max_connections %d", c.max_connections);
    FUZZ_CHECK(c.connection_timeout_s >= 1, "connection_timeout_s %d", c.connection_timeout_s);
    FUZZ_CHECK(c.http_threads >= 1 && c.http_threads <= 64, "http_threads %d", c.http_threads);
    FUZZ_CHECK(c.workers >= 1 && c.workers <= 256, "workers %d", c.workers);
    FUZZ_CHECK(c.queue_depth >= 1, "queue_depth %d", c.queue_depth);
    FUZZ_CHECK(c.request_timeout_ms >= 1, "request_timeout_ms %d", c.request_timeout_ms);
    FUZZ_CHECK(c.batch_max_tokens >= 1, "batch_max_tokens %d", c.batch_max_tokens);
    FUZZ_CHECK(c.batch_wait_us >= 0, "batch_wait_us %d", c.batch_wait_us);
    FUZZ_CHECK(c.max_sequence_length >= 2, "max_sequence_length %d", c.max_sequence_length);
    FUZZ_CHECK(c.max_inputs_per_request >= 1, "max_inputs_per_request %d",
               c.max_inputs_per_request);
    FUZZ_CHECK(c.default_top_k >= 1 && c.max_top_k >= 1, "top_k %d/%d", c.default_top_k,
               c.max_top_k);
    FUZZ_CHECK(c.max_masks_per_input >= 1, "max_masks_per_input %d", c.max_masks_per_input);
    FUZZ_CHECK(c.grace_period_s >= 0, "grace_period_s %d", c.grace_period_s);
    FUZZ_CHECK(c.log_level >= LOG_DEBUG && c.log_level <= LOG_ERROR, "log_level %d",
               (int)c.log_level);

    cfg again;
    memcpy(&again, &c, sizeof(again));
    rc = cfg_load_buffer(&again, (const char *)data, size, "fuzz.yaml", err, sizeof(err));
    FUZZ_CHECK(rc == CFG_OK, "second load of the same text failed: %s", err);
    FUZZ_CHECK(memcmp(&again, &c, sizeof(c)) == 0, "second load of the same text changed cfg");

    err[0] = 0;
    rc = cfg_validate(&c, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "validate message not terminated");
    FUZZ_CHECK(rc == CFG_OK || err[0] != 0, "cfg_validate failed (%d) without a message", rc);
    return 0;
}
