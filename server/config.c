/* config: defaults, YAML file, environment, flags. See config.h. */
#include "config.h"

#include "auth.h"
#include "file_io.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include <yaml.h>

/* K_AUTO: an integer, or the word auto (stored as 0) for "let the server choose".
 * K_FILE: a path that may be empty (off); K_PATH: a path that may not. */
/* K_COMPUTE: fp32, int8 or int8-checked (cfg_compute). K_FLOAT: a double in [min, max]. */
typedef enum {
    K_INT,
    K_LONG,
    K_AUTO,
    K_STR,
    K_ADDR,
    K_PATH,
    K_FILE,
    K_LEVEL,
    K_COMPUTE,
    K_FLOAT
} key_kind;

/* One setting. env_alias / flag_alias: the older short names, kept because
 * deployments and scripts use them; the full names are BERT_SECTION_KEY and
 * --section.key, derived from section and name. */
typedef struct key_def {
    const char *section;
    const char *name;
    key_kind kind;
    size_t off;
    long min, max;
    const char *env_alias;
    const char *flag_alias; /* without the leading "--" */
} key_def;

#define F(field) offsetof(cfg, field)

static const key_def KEYS[] = {
    {"server", "listen", K_ADDR, F(listen), 0, 0, "BERT_LISTEN", "listen"},
    {"server", "port", K_INT, F(port), 0, 65535, "BERT_PORT", "port"},
    {"server", "max_body_bytes", K_LONG, F(max_body_bytes), 64, 1L << 30, "BERT_MAX_BODY_BYTES",
     NULL},
    {"server", "max_inflight_body_bytes", K_LONG, F(max_inflight_body_bytes), 0, 1L << 40, NULL,
     NULL},
    {"server", "max_connections", K_INT, F(max_connections), 1, 65536, NULL, NULL},
    {"server", "connection_timeout_s", K_INT, F(connection_timeout_s), 1, 86400, NULL, NULL},
    {"server", "http_threads", K_INT, F(http_threads), 1, 64, NULL, NULL},
    {"server", "auth_token", K_STR, F(auth_token), 0, 0, "BERT_AUTH_TOKEN", NULL},
    {"server", "auth_token_file", K_FILE, F(auth_token_file), 0, 0, NULL, "auth-token-file"},
    {"server", "cors_allow_origin", K_STR, F(cors_allow_origin), 0, 0, NULL, NULL},
    {"server", "tls_cert_file", K_FILE, F(tls_cert_file), 0, 0, NULL, NULL},
    {"server", "tls_key_file", K_FILE, F(tls_key_file), 0, 0, NULL, NULL},
    {"workers", "count", K_INT, F(workers), 1, 256, "BERT_WORKERS", "workers"},
    {"workers", "threads", K_AUTO, F(threads), 1, 1024, "BERT_THREADS", "threads"},
    {"workers", "queue_depth", K_INT, F(queue_depth), 1, 1000000, "BERT_QUEUE_DEPTH", NULL},
    {"workers", "request_timeout_ms", K_INT, F(request_timeout_ms), 1, 86400000, NULL, NULL},
    {"workers", "batch_max_tokens", K_INT, F(batch_max_tokens), 1, 1 << 24, NULL, NULL},
    {"workers", "batch_wait_us", K_INT, F(batch_wait_us), 0, 10000000, NULL, NULL},
    {"model", "dir", K_PATH, F(model_dir), 0, 0, NULL, "model"},
    {"model", "max_sequence_length", K_INT, F(max_sequence_length), 2, 1 << 20, NULL, NULL},
    {"model", "compute", K_COMPUTE, F(compute), 0, 0, "BERT_COMPUTE", "compute"},
    {"model", "recheck_logit_gap", K_FLOAT, F(recheck_logit_gap), 0, 1000, NULL, NULL},
    {"limits", "max_inputs_per_request", K_INT, F(max_inputs_per_request), 1, 65536, NULL, NULL},
    {"limits", "default_top_k", K_INT, F(default_top_k), 1, 1 << 20, NULL, NULL},
    {"limits", "max_top_k", K_INT, F(max_top_k), 1, 1 << 20, NULL, NULL},
    {"limits", "max_masks_per_input", K_INT, F(max_masks_per_input), 1, 1 << 20, NULL, NULL},
    {"limits", "max_predictions_per_request", K_INT, F(max_predictions_per_request), 1, 1 << 24,
     NULL, NULL},
    {"limits", "max_answer_bytes", K_LONG, F(max_answer_bytes), 4096, 1L << 32, NULL, NULL},
    {"limits", "max_tokenize_tokens", K_INT, F(max_tokenize_tokens), 1, 1 << 24, NULL, NULL},
    {"limits", "max_decode_ids", K_INT, F(max_decode_ids), 1, 1 << 24, NULL, NULL},
    {"limits", "max_score_tokens", K_INT, F(max_score_tokens), 1, 4096, NULL, NULL},
    {"shutdown", "grace_period_s", K_INT, F(grace_period_s), 0, 86400, NULL, NULL},
    {"logging", "level", K_LEVEL, F(log_level), 0, 0, "BERT_LOG_LEVEL", "log-level"},
};
#define N_KEYS (sizeof(KEYS) / sizeof(KEYS[0]))
_Static_assert(N_KEYS <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");

static size_t key_index(const key_def *k) {
    return (size_t)(k - KEYS);
}

/* Records where k's value came from (see cfg.origin). */
__attribute__((format(printf, 3, 4))) static void set_origin(cfg *c, const key_def *k,
                                                             const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->origin[key_index(k)], CFG_ORIGIN_MAX, fmt, ap);
    va_end(ap);
}

static const char *LEVEL_NAMES[] = {"debug", "info", "warn", "error"};
static const char *COMPUTE_NAMES[] = {"fp32", "int8", "int8-checked"};
#define N_COMPUTE (sizeof(COMPUTE_NAMES) / sizeof(COMPUTE_NAMES[0]))

const char *cfg_compute_name(cfg_compute m) {
    return (size_t)m < N_COMPUTE ? COMPUTE_NAMES[m] : "fp32";
}

const char *cfg_log_level_name(cfg_log_level l) {
    return (l >= LOG_DEBUG && l <= LOG_ERROR) ? LEVEL_NAMES[l] : "info";
}

void cfg_defaults(cfg *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->listen, sizeof(c->listen), "127.0.0.1");
    c->port = 8080;
    c->max_body_bytes = 1048576;
    c->max_connections = 512;
    c->connection_timeout_s = 30;
    c->http_threads = 2;
    c->workers = 1;
    c->threads = 0; /* auto */
    c->queue_depth = 64;
    c->request_timeout_ms = 30000;
    c->batch_max_tokens = 1024;
    c->batch_wait_us = 0;
    snprintf(c->model_dir, sizeof(c->model_dir), "models/default");
    c->max_sequence_length = 512;
    /* bench/README.md, "int8-checked": on models/default 0.25 rechecked 21% of
     * the held-out fill-mask inputs and 5% of the NSP pairs, and left 1 of 320
     * fill-mask answers disagreeing with fp32. */
    c->recheck_logit_gap = 0.25;
    c->max_inputs_per_request = 32;
    c->default_top_k = 5;
    c->max_top_k = 100;
    c->max_masks_per_input = 32;
    c->max_predictions_per_request = 4096;
    c->max_answer_bytes = 16L << 20;
    c->max_tokenize_tokens = 16384;
    c->max_decode_ids = 16384;
    c->max_score_tokens = 128;
    c->grace_period_s = 20;
    c->log_level = LOG_INFO;
}

__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t errlen, const char *fmt,
                                                       ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int parse_long(const char *s, long *out) {
    if (!*s) return -1;
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* Sets one key from text. plain_scalar is 0 for quoted YAML scalars, which
 * are strings and therefore wrong for numeric keys. On failure writes the
 * reason (without location) into why. */
static int set_value(cfg *c, const key_def *k, const char *text, int plain_scalar, int is_null,
                     char *why, size_t whylen) {
    char *base = (char *)c;
    switch (k->kind) {
    case K_AUTO:
        if (plain_scalar && !is_null && strcmp(text, "auto") == 0) {
            *(int *)(base + k->off) = 0;
            return 0;
        }
        long a;
        if (!plain_scalar || is_null || parse_long(text, &a) || a < k->min || a > k->max) {
            errf(why, whylen, "must be auto or an integer in [%ld, %ld], got '%s'", k->min, k->max,
                 text);
            return -1;
        }
        *(int *)(base + k->off) = (int)a;
        return 0;
    case K_INT:
    case K_LONG: {
        long v;
        if (!plain_scalar || is_null || parse_long(text, &v) || v < k->min || v > k->max) {
            errf(why, whylen, "must be an integer in [%ld, %ld], got '%s'", k->min, k->max, text);
            return -1;
        }
        if (k->kind == K_INT)
            *(int *)(base + k->off) = (int)v;
        else
            *(long *)(base + k->off) = v;
        return 0;
    }
    case K_STR: {
        const char *v = is_null ? "" : text;
        if (strlen(v) >= CFG_STR_MAX) {
            errf(why, whylen, "must be at most %d bytes", CFG_STR_MAX - 1);
            return -1;
        }
        snprintf(base + k->off, CFG_STR_MAX, "%s", v);
        return 0;
    }
    case K_ADDR: {
        unsigned char buf[16];
        if (is_null || (strcmp(text, "localhost") != 0 && inet_pton(AF_INET, text, buf) != 1 &&
                        inet_pton(AF_INET6, text, buf) != 1)) {
            errf(why, whylen,
                 "must be an IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::, got '%s'",
                 text);
            return -1;
        }
        snprintf(base + k->off, CFG_STR_MAX, "%s", text);
        return 0;
    }
    case K_PATH:
        if (is_null || !*text) {
            errf(why, whylen, "must be a non-empty directory path");
            return -1;
        }
        if (strlen(text) >= CFG_PATH_MAX) {
            errf(why, whylen, "must be at most %d bytes", CFG_PATH_MAX - 1);
            return -1;
        }
        snprintf(base + k->off, CFG_PATH_MAX, "%s", text);
        return 0;
    case K_FILE: {
        const char *v = is_null ? "" : text;
        if (strlen(v) >= CFG_PATH_MAX) {
            errf(why, whylen, "must be at most %d bytes", CFG_PATH_MAX - 1);
            return -1;
        }
        snprintf(base + k->off, CFG_PATH_MAX, "%s", v);
        return 0;
    }
    case K_LEVEL:
        for (int i = 0; i < 4; i++) {
            if (!is_null && strcasecmp(text, LEVEL_NAMES[i]) == 0) {
                *(cfg_log_level *)(base + k->off) = (cfg_log_level)i;
                return 0;
            }
        }
        errf(why, whylen, "must be one of debug, info, warn, error, got '%s'", text);
        return -1;
    case K_COMPUTE:
        for (size_t i = 0; i < N_COMPUTE; i++) {
            if (plain_scalar && !is_null && strcmp(text, COMPUTE_NAMES[i]) == 0) {
                *(cfg_compute *)(base + k->off) = (cfg_compute)i;
                return 0;
            }
        }
        errf(why, whylen, "must be fp32, int8 or int8-checked, got '%s'", text);
        return -1;
    case K_FLOAT: {
        char *end = NULL;
        errno = 0;
        double v = plain_scalar && !is_null && *text ? strtod(text, &end) : NAN;
        /* !(v >= min) also refuses NaN; strtod's inf is above any max */
        if (errno || !end || *end || !(v >= (double)k->min) || v > (double)k->max) {
            errf(why, whylen, "must be a number in [%ld, %ld], got '%s'", k->min, k->max, text);
            return -1;
        }
        *(double *)(base + k->off) = v;
        return 0;
    }
    }
    return -1;
}

static const key_def *find_key(const char *section, const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].name, name) == 0)
            return &KEYS[i];
    return NULL;
}

static int section_known(const char *section) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0) return 1;
    return 0;
}

static const char *scalar_text(yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

static int scalar_is_null(yaml_node_t *n) {
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = scalar_text(n);
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static int load_section(cfg *c, yaml_document_t *doc, const char *name, const char *section,
                        yaml_node_t *map, char *err, size_t errlen) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        if (!kn || kn->type != YAML_SCALAR_NODE) {
            errf(err, errlen, "%s:%lu: section '%s': keys must be plain names", name,
                 kn ? (unsigned long)kn->start_mark.line + 1 : 0UL, section);
            return CFG_ERR_VALUE;
        }
        const char *key = scalar_text(kn);
        unsigned long kline = (unsigned long)kn->start_mark.line + 1;
        const key_def *k = find_key(section, key);
        if (!k) {
            errf(err, errlen, "%s:%lu: key '%s.%s': unknown key", name, kline, section, key);
            return CFG_ERR_VALUE;
        }
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *other = yaml_document_get_node(doc, q->key);
            if (other && other->type == YAML_SCALAR_NODE && strcmp(scalar_text(other), key) == 0) {
                errf(err, errlen, "%s:%lu: key '%s.%s': duplicate key (first at line %lu)", name,
                     kline, section, key, (unsigned long)other->start_mark.line + 1);
                return CFG_ERR_VALUE;
            }
        }
        unsigned long vline = vn ? (unsigned long)vn->start_mark.line + 1 : kline;
        if (!vn || vn->type != YAML_SCALAR_NODE) {
            errf(err, errlen, "%s:%lu: key '%s.%s': must be a single value, not a list or mapping",
                 name, vline, section, key);
            return CFG_ERR_VALUE;
        }
        char why[512];
        if (set_value(c, k, scalar_text(vn), vn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE,
                      scalar_is_null(vn), why, sizeof(why))) {
            errf(err, errlen, "%s:%lu: key '%s.%s': %s", name, vline, section, key, why);
            return CFG_ERR_VALUE;
        }
        set_origin(c, k, "file %s:%lu", name, vline);
    }
    return CFG_OK;
}

int cfg_load_buffer(cfg *c, const char *yaml, size_t len, const char *name, char *err,
                    size_t errlen) {
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_doc = 0, rc = CFG_OK;
    if (!yaml_parser_initialize(&parser)) {
        errf(err, errlen, "%s: out of memory", name);
        return CFG_ERR_VALUE;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        errf(err, errlen, "%s:%lu: YAML syntax error: %s", name,
             (unsigned long)parser.problem_mark.line + 1,
             parser.problem ? parser.problem : "unknown");
        rc = CFG_ERR_VALUE;
        goto cleanup;
    }
    have_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) goto cleanup; /* empty file: defaults stand */
    if (root->type != YAML_MAPPING_NODE) {
        errf(err, errlen,
             "%s:%lu: the top level must be a mapping of sections (server, workers, "
             "model, limits, shutdown, logging)",
             name, (unsigned long)root->start_mark.line + 1);
        rc = CFG_ERR_VALUE;
        goto cleanup;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(&doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(&doc, p->value);
        unsigned long kline = kn ? (unsigned long)kn->start_mark.line + 1 : 0;
        if (!kn || kn->type != YAML_SCALAR_NODE || !section_known(scalar_text(kn))) {
            errf(err, errlen,
                 "%s:%lu: key '%s': unknown section (expected server, workers, model, limits, "
                 "shutdown or logging)",
                 name, kline, kn && kn->type == YAML_SCALAR_NODE ? scalar_text(kn) : "?");
            rc = CFG_ERR_VALUE;
            goto cleanup;
        }
        const char *section = scalar_text(kn);
        /* libyaml keeps repeated keys; the later block would silently win. */
        for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *other = yaml_document_get_node(&doc, q->key);
            if (other && other->type == YAML_SCALAR_NODE &&
                strcmp(scalar_text(other), section) == 0) {
                errf(err, errlen, "%s:%lu: key '%s': duplicate section (first at line %lu)", name,
                     kline, section, (unsigned long)other->start_mark.line + 1);
                rc = CFG_ERR_VALUE;
                goto cleanup;
            }
        }
        if (vn && vn->type == YAML_SCALAR_NODE && scalar_is_null(vn)) continue; /* empty section */
        if (!vn || vn->type != YAML_MAPPING_NODE) {
            errf(err, errlen, "%s:%lu: key '%s': must be a mapping of settings", name,
                 vn ? (unsigned long)vn->start_mark.line + 1 : kline, section);
            rc = CFG_ERR_VALUE;
            goto cleanup;
        }
        rc = load_section(c, &doc, name, section, vn, err, errlen);
        if (rc) goto cleanup;
    }
cleanup:
    if (have_doc) yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int cfg_load_file(cfg *c, const char *path, char *err, size_t errlen) {
    /* The model's files' reader: a regular file only (a FIFO would block
     * start-up), at most 16 MiB. */
    char *buf = NULL;
    size_t len = 0;
    int frc = fio_read_all(path, (size_t)1 << 24, &buf, &len, err, errlen);
    if (frc != FIO_OK) return frc == FIO_ERR_TOO_BIG ? CFG_ERR_VALUE : CFG_ERR_IO;
    int rc = cfg_load_buffer(c, buf, len, path, err, errlen);
    free(buf);
    return rc;
}

/* BERT_SECTION_KEY for k into buf. */
static void env_name(const key_def *k, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "BERT_%s_%s", k->section, k->name);
    for (size_t i = 0; i < n && i < cap; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] = (char)(buf[i] - 'a' + 'A');
}

static int apply_env_var(cfg *c, const key_def *k, const char *env, char *err, size_t errlen) {
    const char *v = getenv(env);
    if (!v) return CFG_OK;
    /* The Deployment fills BERT_AUTH_TOKEN from an optional Secret: a
     * missing Secret gives an empty value, which must not switch off the
     * token the config file sets. Empty means unset here; auth is turned
     * off only by the file (server.auth_token: ""). main logs it. */
    if (!*v && k->off == F(auth_token)) return CFG_OK;
    char why[512];
    if (set_value(c, k, v, 1, 0, why, sizeof(why))) {
        errf(err, errlen, "%s: key '%s.%s': %s", env, k->section, k->name, why);
        return CFG_ERR_VALUE;
    }
    set_origin(c, k, "env %s", env);
    return CFG_OK;
}

int cfg_apply_env(cfg *c, char *err, size_t errlen) {
    for (size_t i = 0; i < N_KEYS; i++) {
        char full[96];
        env_name(&KEYS[i], full, sizeof(full));
        int rc;
        if (KEYS[i].env_alias && (rc = apply_env_var(c, &KEYS[i], KEYS[i].env_alias, err, errlen)))
            return rc;
        if ((rc = apply_env_var(c, &KEYS[i], full, err, errlen))) return rc;
    }
    return CFG_OK;
}

static void print_help(const char *argv0) {
    printf("usage: %s [--config FILE] [--SECTION.KEY VALUE ...] [--print-config]\n"
           "          [--check-config] [--help] [--version]\n"
           "       short forms: --listen ADDR --port N --model DIR --workers N\n"
           "          --threads N|auto --log-level debug|info|warn|error --auth-token-file FILE\n"
           "\n"
           "Serves a BERT checkpoint's masked-LM and next-sentence heads over HTTP.\n"
           "Settings come from built-in defaults, then --config FILE (YAML), then the\n"
           "environment, then flags. Every YAML key SECTION.KEY (config/default.yaml)\n"
           "is also the variable BERT_SECTION_KEY and the flag --SECTION.KEY, e.g.\n"
           "BERT_WORKERS_COUNT=2 or --workers.count=2. Older short variables stay:\n"
           "BERT_LISTEN, BERT_PORT, BERT_MODEL_DIR, BERT_WORKERS, BERT_THREADS,\n"
           "BERT_QUEUE_DEPTH, BERT_AUTH_TOKEN, BERT_LOG_LEVEL, BERT_MAX_BODY_BYTES (the\n"
           "full name wins when both are set). A relative model directory is resolved\n"
           "against the current working directory. An empty BERT_AUTH_TOKEN counts as unset.\n"
           "\n"
           "--print-config  print every setting's effective value and where it came from\n"
           "                (default, file, env, flag) as YAML, then exit 0 (2: bad setting)\n"
           "--check-config  validate the settings, the token file and the model directory,\n"
           "                then exit 0 (all well) or 2 (the first problem on stderr)\n"
           "\n"
           "SIGTERM/SIGINT: drain, exit within shutdown.grace_period_s (during loading: at\n"
           "once). SIGHUP: re-read server.auth_token_file (a bad file keeps the old tokens).\n"
           "SIGUSR1, SIGUSR2, SIGALRM: logged and ignored.\n"
           "Exit status: 0 after a clean shutdown, 1 when the model cannot be loaded or the\n"
           "port cannot be bound, 2 for a bad setting, 3 when the grace period ended with\n"
           "accepted requests unanswered.\n",
           argv0);
}

/* getopt_long's table: every key as "section.key" and its alias, plus the
 * actions. val: OPT_KEY_BASE + 2 * key index (+1 for the alias). */
enum {
    OPT_HELP = 'h',
    OPT_CONFIG = 1000,
    OPT_VERSION,
    OPT_PRINT,
    OPT_CHECK,
    OPT_KEY_BASE = 1100,
};

typedef struct opt_table {
    struct option opts[2 * CFG_MAX_KEYS + 8];
    char names[CFG_MAX_KEYS][64];
} opt_table;

static void build_opts(opt_table *t) {
    size_t n = 0;
    struct option fixed[] = {
        {"help", no_argument, NULL, OPT_HELP},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"version", no_argument, NULL, OPT_VERSION},
        {"print-config", no_argument, NULL, OPT_PRINT},
        {"check-config", no_argument, NULL, OPT_CHECK},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        t->opts[n++] = fixed[i];
    for (size_t i = 0; i < N_KEYS; i++) {
        snprintf(t->names[i], sizeof(t->names[i]), "%s.%s", KEYS[i].section, KEYS[i].name);
        t->opts[n++] =
            (struct option){t->names[i], required_argument, NULL, OPT_KEY_BASE + 2 * (int)i};
        if (KEYS[i].flag_alias)
            t->opts[n++] = (struct option){KEYS[i].flag_alias, required_argument, NULL,
                                           OPT_KEY_BASE + 2 * (int)i + 1};
    }
    t->opts[n] = (struct option){NULL, 0, NULL, 0};
}

/* "--name" as the user typed it (argv[at], up to any '='), into buf. */
static const char *typed_flag(char **argv, int at, char *buf, size_t cap) {
    const char *a = argv[at];
    size_t n = strcspn(a, "=");
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), a);
    return buf;
}

/* getopt_long also takes unambiguous abbreviations (--work for --workers);
 * settings are spelled out in scripts and manifests, so only the whole name
 * counts: a typo must not set a neighbouring key. */
static int spelled_out(const char *typed, const char *name) {
    return strncmp(typed, "--", 2) == 0 && strcmp(typed + 2, name) == 0;
}

/* One pass over argv. apply 0: only --help/--version/--config/actions are
 * taken (and every flag checked for shape); apply 1: key flags are set. */
static int scan_args(cfg *c, int argc, char **argv, int apply, const char **config_path,
                     int *action, char *err, size_t errlen) {
    opt_table t;
    build_opts(&t);
    optind = 0; /* glibc: a full re-initialisation, for the second pass */
    opterr = 0;
    for (;;) {
        int at = optind ? optind : 1;
        int li = -1;
        int o = getopt_long(argc, argv, "+:h", t.opts, &li);
        if (o == -1) break;
        char typed[80];
        typed_flag(argv, at, typed, sizeof(typed));
        if (o == '?') {
            errf(err, errlen, "%s: unknown argument (see --help)", typed);
            return CFG_ERR_VALUE;
        }
        if (o == ':') {
            errf(err, errlen, "%s: needs a value", typed);
            return CFG_ERR_VALUE;
        }
        if (li >= 0 && !spelled_out(typed, t.opts[li].name)) {
            errf(err, errlen, "%s: unknown argument (did you mean --%s?)", typed, t.opts[li].name);
            return CFG_ERR_VALUE;
        }
        switch (o) {
        case OPT_HELP:
            if (!apply) {
                print_help(argv[0]);
                return CFG_HELP;
            }
            continue;
        case OPT_VERSION:
            if (!apply) {
                printf("bert-server %s\n", BERT_SERVE_VERSION);
                return CFG_HELP;
            }
            continue;
        case OPT_CONFIG:
            *config_path = optarg;
            continue;
        case OPT_PRINT:
        case OPT_CHECK:
            *action = o;
            continue;
        default:
            break;
        }
        if (!apply) continue;
        const key_def *k = &KEYS[(o - OPT_KEY_BASE) / 2];
        char why[512];
        if (set_value(c, k, optarg, 1, 0, why, sizeof(why))) {
            errf(err, errlen, "%s: key '%s.%s': %s", typed, k->section, k->name, why);
            return CFG_ERR_VALUE;
        }
        set_origin(c, k, "flag %s", typed);
    }
    if (optind < argc) {
        errf(err, errlen, "%s: unknown argument (see --help)", argv[optind]);
        return CFG_ERR_VALUE;
    }
    return CFG_OK;
}

/* --check-config: what start-up would find wrong before loading weights. */
static int check_model_dir(const cfg *c, char *err, size_t errlen) {
    struct stat st;
    if (stat(c->model_dir, &st) != 0) {
        errf(err, errlen, "key 'model.dir': %s: %s", c->model_dir, strerror(errno));
        return CFG_ERR_VALUE;
    }
    if (!S_ISDIR(st.st_mode)) {
        errf(err, errlen, "key 'model.dir': %s is not a directory", c->model_dir);
        return CFG_ERR_VALUE;
    }
    char path[CFG_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/config.json", c->model_dir);
    if (access(path, R_OK) != 0) {
        errf(err, errlen, "key 'model.dir': %s has no readable config.json: %s", c->model_dir,
             strerror(errno));
        return CFG_ERR_VALUE;
    }
    return CFG_OK;
}

int cfg_from_args(cfg *c, int argc, char **argv, char *err, size_t errlen) {
    const char *config_path = NULL;
    int action = 0;
    cfg_defaults(c);
    int rc = scan_args(c, argc, argv, 0, &config_path, &action, err, errlen);
    if (rc) return rc;
    if (config_path && (rc = cfg_load_file(c, config_path, err, errlen))) return rc;
    if ((rc = cfg_apply_env(c, err, errlen))) return rc;
    if ((rc = scan_args(c, argc, argv, 1, &config_path, &action, err, errlen))) return rc;
    if ((rc = cfg_validate(c, err, errlen))) return rc;
    if (action == OPT_PRINT) {
        cfg_print(c, stdout);
        return CFG_HELP;
    }
    if (action == OPT_CHECK) {
        if ((rc = check_model_dir(c, err, errlen))) return rc;
        printf("configuration OK (%zu settings; model directory %s)\n", N_KEYS, c->model_dir);
        return CFG_HELP;
    }
    return CFG_OK;
}

static void print_string(FILE *f, const char *s) {
    /* A JSON string is a YAML double-quoted scalar. */
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(q ? q : "\"\"", f);
    free(q);
    json_decref(j);
}

void cfg_print(const cfg *c, FILE *f) {
    const char *base = (const char *)c;
    const char *section = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(f, "%s:\n", k->section);
            section = k->section;
        }
        fprintf(f, "  %s: ", k->name);
        const char *p = base + k->off;
        switch (k->kind) {
        case K_INT:
            fprintf(f, "%d", *(const int *)p);
            break;
        case K_LONG:
            fprintf(f, "%ld", *(const long *)p);
            break;
        case K_AUTO:
            if (*(const int *)p == 0)
                fputs("auto", f);
            else
                fprintf(f, "%d", *(const int *)p);
            break;
        case K_LEVEL:
            fputs(cfg_log_level_name(*(const cfg_log_level *)p), f);
            break;
        case K_COMPUTE:
            fputs(cfg_compute_name(*(const cfg_compute *)p), f);
            break;
        case K_FLOAT:
            fprintf(f, "%g", *(const double *)p);
            break;
        case K_STR:
            print_string(f, k->off == F(auth_token) && *p ? "<redacted>" : p);
            break;
        case K_ADDR:
        case K_PATH:
        case K_FILE:
            print_string(f, p);
            break;
        }
        fprintf(f, "  # %s\n", c->origin[i][0] ? c->origin[i] : "default");
    }
}

int cfg_validate(const cfg *c, char *err, size_t errlen) {
    if (c->max_inflight_body_bytes && c->max_inflight_body_bytes < c->max_body_bytes) {
        errf(err, errlen,
             "key 'server.max_inflight_body_bytes': %ld is below server.max_body_bytes (%ld); "
             "0 means 32 x max_body_bytes",
             c->max_inflight_body_bytes, c->max_body_bytes);
        return CFG_ERR_VALUE;
    }
    if (c->default_top_k > c->max_top_k) {
        errf(err, errlen, "key 'limits.default_top_k': %d exceeds limits.max_top_k (%d)",
             c->default_top_k, c->max_top_k);
        return CFG_ERR_VALUE;
    }
    /* The value goes into a response header as it is. */
    for (const char *p = c->cors_allow_origin; *p; p++) {
        if (*p < 0x21 || *p > 0x7e) {
            errf(err, errlen,
                 "key 'server.cors_allow_origin': must be an origin such as "
                 "https://app.example.com or *, without spaces or control characters");
            return CFG_ERR_VALUE;
        }
    }
    if (tls_check_config(c, err, errlen)) return CFG_ERR_VALUE;
    if (c->auth_token_file[0]) {
        const key_def *k = find_key("server", "auth_token_file");
        const char *o = c->origin[key_index(k)];
        char why[1024];
        if (auth_check_file(c->auth_token_file, why, sizeof(why))) {
            errf(err, errlen, "%s: key 'server.auth_token_file': %s",
                 strncmp(o, "flag ", 5) == 0 ? o + 5 : o, why);
            return CFG_ERR_VALUE;
        }
    }
    return CFG_OK;
}
