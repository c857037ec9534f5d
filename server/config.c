/* config: defaults, YAML file, environment, flags. See config.h. */
#include "config.h"

#include "file_io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* K_AUTO: an integer, or the word auto (stored as 0) for "let the server choose". */
typedef enum { K_INT, K_LONG, K_AUTO, K_STR, K_ADDR, K_PATH, K_LEVEL } key_kind;

typedef struct key_def {
    const char *section;
    const char *name;
    key_kind kind;
    size_t off;
    long min, max;
} key_def;

#define F(field) offsetof(cfg, field)

static const key_def KEYS[] = {
    {"server", "listen", K_ADDR, F(listen), 0, 0},
    {"server", "port", K_INT, F(port), 0, 65535},
    {"server", "max_body_bytes", K_LONG, F(max_body_bytes), 64, 1L << 30},
    {"server", "max_inflight_body_bytes", K_LONG, F(max_inflight_body_bytes), 0, 1L << 40},
    {"server", "max_connections", K_INT, F(max_connections), 1, 65536},
    {"server", "connection_timeout_s", K_INT, F(connection_timeout_s), 1, 86400},
    {"server", "http_threads", K_INT, F(http_threads), 1, 64},
    {"server", "auth_token", K_STR, F(auth_token), 0, 0},
    {"workers", "count", K_INT, F(workers), 1, 256},
    {"workers", "threads", K_AUTO, F(threads), 1, 1024},
    {"workers", "queue_depth", K_INT, F(queue_depth), 1, 1000000},
    {"workers", "request_timeout_ms", K_INT, F(request_timeout_ms), 1, 86400000},
    {"workers", "batch_max_tokens", K_INT, F(batch_max_tokens), 1, 1 << 24},
    {"workers", "batch_wait_us", K_INT, F(batch_wait_us), 0, 10000000},
    {"model", "dir", K_PATH, F(model_dir), 0, 0},
    {"model", "max_sequence_length", K_INT, F(max_sequence_length), 2, 1 << 20},
    {"limits", "max_inputs_per_request", K_INT, F(max_inputs_per_request), 1, 65536},
    {"limits", "default_top_k", K_INT, F(default_top_k), 1, 1 << 20},
    {"limits", "max_top_k", K_INT, F(max_top_k), 1, 1 << 20},
    {"limits", "max_masks_per_input", K_INT, F(max_masks_per_input), 1, 1 << 20},
    {"limits", "max_predictions_per_request", K_INT, F(max_predictions_per_request), 1, 1 << 24},
    {"limits", "max_answer_bytes", K_LONG, F(max_answer_bytes), 4096, 1L << 32},
    {"limits", "max_tokenize_tokens", K_INT, F(max_tokenize_tokens), 1, 1 << 24},
    {"shutdown", "grace_period_s", K_INT, F(grace_period_s), 0, 86400},
    {"logging", "level", K_LEVEL, F(log_level), 0, 0},
};
#define N_KEYS (sizeof(KEYS) / sizeof(KEYS[0]))

static const char *LEVEL_NAMES[] = {"debug", "info", "warn", "error"};

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
    c->max_inputs_per_request = 32;
    c->default_top_k = 5;
    c->max_top_k = 100;
    c->max_masks_per_input = 32;
    c->max_predictions_per_request = 4096;
    c->max_answer_bytes = 16L << 20;
    c->max_tokenize_tokens = 16384;
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
    case K_LEVEL:
        for (int i = 0; i < 4; i++) {
            if (!is_null && strcasecmp(text, LEVEL_NAMES[i]) == 0) {
                *(cfg_log_level *)(base + k->off) = (cfg_log_level)i;
                return 0;
            }
        }
        errf(why, whylen, "must be one of debug, info, warn, error, got '%s'", text);
        return -1;
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

static const struct {
    const char *env;
    const char *section, *name;
} ENV_KEYS[] = {
    {"BERT_LISTEN", "server", "listen"},
    {"BERT_PORT", "server", "port"},
    {"BERT_MODEL_DIR", "model", "dir"},
    {"BERT_WORKERS", "workers", "count"},
    {"BERT_THREADS", "workers", "threads"},
    {"BERT_QUEUE_DEPTH", "workers", "queue_depth"},
    {"BERT_AUTH_TOKEN", "server", "auth_token"},
    {"BERT_LOG_LEVEL", "logging", "level"},
    {"BERT_MAX_BODY_BYTES", "server", "max_body_bytes"},
};

int cfg_apply_env(cfg *c, char *err, size_t errlen) {
    for (size_t i = 0; i < sizeof(ENV_KEYS) / sizeof(ENV_KEYS[0]); i++) {
        const char *v = getenv(ENV_KEYS[i].env);
        if (!v) continue;
        /* The Deployment fills BERT_AUTH_TOKEN from an optional Secret: a
         * missing Secret gives an empty value, which must not switch off the
         * token the config file sets. Empty means unset here; auth is turned
         * off only by the file (server.auth_token: ""). main logs it. */
        if (!*v && strcmp(ENV_KEYS[i].env, "BERT_AUTH_TOKEN") == 0) continue;
        const key_def *k = find_key(ENV_KEYS[i].section, ENV_KEYS[i].name);
        char why[512];
        if (set_value(c, k, v, 1, 0, why, sizeof(why))) {
            errf(err, errlen, "%s: key '%s.%s': %s", ENV_KEYS[i].env, k->section, k->name, why);
            return CFG_ERR_VALUE;
        }
    }
    return CFG_OK;
}

static int read_token_file(cfg *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        errf(err, errlen, "--auth-token-file: cannot open %s: %s", path, strerror(errno));
        return CFG_ERR_IO;
    }
    char buf[CFG_STR_MAX + 2];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = 0;
    if (n == 0 || n >= CFG_STR_MAX || strlen(buf) != n) {
        errf(err, errlen,
             "--auth-token-file: %s must hold one token of 1 to %d bytes on a single line", path,
             CFG_STR_MAX - 1);
        return CFG_ERR_VALUE;
    }
    memcpy(c->auth_token, buf, n + 1);
    return CFG_OK;
}

static void print_help(const char *argv0) {
    printf("usage: %s [--config FILE] [--listen ADDR] [--port N] [--model DIR] [--workers N]\n"
           "          [--threads N|auto] [--log-level debug|info|warn|error]\n"
           "          [--auth-token-file FILE]\n"
           "          [--help] [--version]\n"
           "\n"
           "Serves a BERT checkpoint's masked-LM and next-sentence heads over HTTP.\n"
           "Settings come from built-in defaults, then --config FILE (YAML), then the\n"
           "environment (BERT_LISTEN, BERT_PORT, BERT_MODEL_DIR, BERT_WORKERS, BERT_THREADS,\n"
           "BERT_QUEUE_DEPTH, BERT_AUTH_TOKEN, BERT_LOG_LEVEL, BERT_MAX_BODY_BYTES),\n"
           "then these flags. A relative model directory is resolved against the current\n"
           "working directory. An empty BERT_AUTH_TOKEN counts as unset.\n"
           "\n"
           "SIGTERM/SIGINT: drain, exit within shutdown.grace_period_s (during loading: at\n"
           "once). SIGHUP, SIGUSR1, SIGUSR2, SIGALRM: logged and ignored.\n"
           "Exit status: 0 after a clean shutdown, 1 when the model cannot be loaded or the\n"
           "port cannot be bound, 2 for a bad setting, 3 when the grace period ended with\n"
           "accepted requests unanswered.\n",
           argv0);
}

/* --name VALUE or --name=VALUE. */
static int flag_value(int argc, char **argv, int *i, const char *name, const char **val) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) {
        *val = NULL;
        return 1;
    }
    *val = argv[++*i];
    return 1;
}

int cfg_from_args(cfg *c, int argc, char **argv, char *err, size_t errlen) {
    static const struct {
        const char *flag, *section, *name;
    } FLAG_KEYS[] = {
        {"--listen", "server", "listen"},    {"--port", "server", "port"},
        {"--model", "model", "dir"},         {"--workers", "workers", "count"},
        {"--threads", "workers", "threads"}, {"--log-level", "logging", "level"},
    };
    const char *config_path = NULL;
    cfg_defaults(c);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(argv[0]);
            return CFG_HELP;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("bert-server %s\n", BERT_SERVE_VERSION);
            return CFG_HELP;
        }
        const char *v;
        if (flag_value(argc, argv, &i, "--config", &v)) {
            if (!v) {
                errf(err, errlen, "--config: needs a file name");
                return CFG_ERR_VALUE;
            }
            config_path = v;
        }
    }
    int rc;
    if (config_path && (rc = cfg_load_file(c, config_path, err, errlen))) return rc;
    if ((rc = cfg_apply_env(c, err, errlen))) return rc;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (flag_value(argc, argv, &i, "--config", &v)) continue;
        if (flag_value(argc, argv, &i, "--auth-token-file", &v)) {
            if (!v) {
                errf(err, errlen, "--auth-token-file: needs a file name");
                return CFG_ERR_VALUE;
            }
            if ((rc = read_token_file(c, v, err, errlen))) return CFG_ERR_VALUE;
            continue;
        }
        size_t j, nflags = sizeof(FLAG_KEYS) / sizeof(FLAG_KEYS[0]);
        for (j = 0; j < nflags; j++) {
            if (!flag_value(argc, argv, &i, FLAG_KEYS[j].flag, &v)) continue;
            if (!v) {
                errf(err, errlen, "%s: needs a value", FLAG_KEYS[j].flag);
                return CFG_ERR_VALUE;
            }
            const key_def *k = find_key(FLAG_KEYS[j].section, FLAG_KEYS[j].name);
            char why[512];
            if (set_value(c, k, v, 1, 0, why, sizeof(why))) {
                errf(err, errlen, "%s: key '%s.%s': %s", FLAG_KEYS[j].flag, k->section, k->name,
                     why);
                return CFG_ERR_VALUE;
            }
            break;
        }
        if (j == nflags) {
            errf(err, errlen, "%s: unknown argument (see --help)", argv[i]);
            return CFG_ERR_VALUE;
        }
    }
    return cfg_validate(c, err, errlen);
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
    return CFG_OK;
}
