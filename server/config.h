/* config: the server's settings, from built-in defaults, a YAML file
 * (config/default.yaml), BERT_* environment variables and command-line flags,
 * applied in that order (later wins). Every YAML key section.key is also the
 * environment variable BERT_SECTION_KEY and the flag --section.key; a few
 * older short names (BERT_PORT, --port, ...) stay as aliases. Each value
 * remembers where it came from (--print-config shows it).
 *
 * Owns: the cfg struct (plain values, fixed-size strings; no heap). Every
 * rejected value produces one message of the form
 *   FILE:LINE: key 'workers.count': must be an integer in [1, 256]
 * (or "BERT_WORKERS: ..." / "--workers: ...") in the caller's buffer; the
 * caller exits with status 2 on any cfg_* error. */
#ifndef BERT_SERVER_CONFIG_H
#define BERT_SERVER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define BERT_SERVE_VERSION "0.1.0"

#define CFG_STR_MAX  256
#define CFG_PATH_MAX 4096
/* Settings at most (the KEYS table in config.c; a static assert checks it). */
#define CFG_MAX_KEYS   48
#define CFG_ORIGIN_MAX 96

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } cfg_log_level;
/* model.compute. FP32 and INT8 are bert_compute's (bert.h); INT8_CHECKED
 * loads both and answers near-ties in float32 (server/infer.c). */
typedef enum {
    CFG_COMPUTE_FP32 = 0,
    CFG_COMPUTE_INT8 = 1,
    CFG_COMPUTE_INT8_CHECKED = 2,
} cfg_compute;

typedef struct cfg {
    /* server */
    char listen[CFG_STR_MAX];
    int port; /* 0: the kernel picks one; the ready line says which */
    long max_body_bytes;
    long max_inflight_body_bytes; /* all connections' bodies; 0: 32 x max_body_bytes */
    int max_connections;
    int connection_timeout_s;
    int http_threads;
    char auth_token[CFG_STR_MAX]; /* empty: no authentication */
    /* Non-empty: the bearer tokens, one a line, replacing auth_token;
     * re-read on SIGHUP (auth.h). */
    char auth_token_file[CFG_PATH_MAX];
    char cors_allow_origin[CFG_STR_MAX]; /* empty: no CORS headers */
    char tls_cert_file[CFG_PATH_MAX];    /* both set: HTTPS (tls.h) */
    char tls_key_file[CFG_PATH_MAX];
    /* workers */
    int workers; /* inference loops, each with its own threads */
    int threads; /* compute threads per worker; 0: auto (CPU budget / workers) */
    int queue_depth;
    int request_timeout_ms;
    int batch_max_tokens;
    int batch_wait_us;
    /* model */
    char model_dir[CFG_PATH_MAX];
    int max_sequence_length;
    cfg_compute compute; /* fp32 (default, transformers' numbers), int8 or int8-checked */
    /* int8-checked: an input whose two best int8 logits (the top two fill-mask
     * tokens, or is-next against random) are closer than this is answered again
     * in float32. 0: never; larger: more often, closer to fp32's answers. */
    double recheck_logit_gap;
    /* limits */
    int max_inputs_per_request;
    int default_top_k;
    int max_top_k;
    int max_masks_per_input;
    int max_predictions_per_request; /* fill-mask: inputs x masks x top_k */
    long max_answer_bytes;           /* any /v1 answer body */
    int max_tokenize_tokens;         /* /v1/tokenize: tokens over all inputs */
    int max_decode_ids;              /* /v1/decode: ids over all lists */
    int max_score_tokens;            /* /v1/score: word pieces per input */
    /* shutdown */
    int grace_period_s;
    /* logging */
    cfg_log_level log_level;
    /* Where each key's value came from, by KEYS index: "" for the default,
     * "file PATH:LINE", "env NAME" or "flag --NAME". */
    char origin[CFG_MAX_KEYS][CFG_ORIGIN_MAX];
} cfg;

typedef enum {
    CFG_OK = 0,
    CFG_ERR_IO = 1,    /* file missing or unreadable */
    CFG_ERR_VALUE = 2, /* syntax, unknown key, wrong type, out of range */
    CFG_HELP = 3,      /* --help, --version, --print-config or a passing --check-config
                        * was handled; exit 0 */
} cfg_status;

void cfg_defaults(cfg *c);

/* Parses a YAML file over c: only keys present in the file change. */
int cfg_load_file(cfg *c, const char *path, char *err, size_t errlen);
/* Same from memory; name is used in messages. */
int cfg_load_buffer(cfg *c, const char *yaml, size_t len, const char *name, char *err,
                    size_t errlen);

/* BERT_SECTION_KEY for every key, after the older aliases (BERT_LISTEN,
 * BERT_PORT, BERT_WORKERS, BERT_THREADS, BERT_QUEUE_DEPTH, BERT_AUTH_TOKEN,
 * BERT_LOG_LEVEL, BERT_MAX_BODY_BYTES), so the full name wins over an alias. */
int cfg_apply_env(cfg *c, char *err, size_t errlen);

/* Full start-up sequence: defaults, --config FILE (if given), environment,
 * then the other flags (getopt_long; --name=VALUE or --name VALUE, later
 * wins, no abbreviations). Prints --help / --version text to stdout and
 * returns CFG_HELP for them. --print-config prints every key's effective
 * value and origin as YAML (loadable with --config) and returns CFG_HELP;
 * --check-config also checks the model directory and returns CFG_HELP when
 * all is well. */
int cfg_from_args(cfg *c, int argc, char **argv, char *err, size_t errlen);

/* Cross-field checks (default_top_k <= max_top_k, ...). */
int cfg_validate(const cfg *c, char *err, size_t errlen);

const char *cfg_log_level_name(cfg_log_level l);
const char *cfg_compute_name(cfg_compute m);

/* Writes every key as YAML ("section:" blocks, "  key: value  # origin")
 * to f; the auth token is shown as "<redacted>" when set. */
void cfg_print(const cfg *c, FILE *f);

#endif
