/* bert-cli tokenize: core/tokenizer over JSON lines, so the tests can hold
 * it against the fast tokenizer on a large corpus in one process.
 *
 * Options beyond cli.h's usage: --side left|right (truncation side);
 * --raw (each stdin line, minus its newline, is the text itself: the only
 * way to hand the tokenizer bytes that are not valid UTF-8, which JSON
 * cannot carry); --decode (stdin: {"ids": [..], "skip_special": bool,
 * "cleanup": bool}, stdout: {"text": "..."}, i.e. tok_decode); --normalize
 * (stdout: {"normalized": "..."}, i.e. tok_normalize_text). */
#include "cli.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static const char *const tokenize_usage =
    "usage: bert-cli tokenize (--model DIR | --vocab FILE [--no-lower] [--strip-accents 0|1]\n"
    "                         [--no-chinese]) [--max-len N --truncate "
    "longest_first|only_first|only_second]\n"
    "                         [--side right|left] [--raw | --decode | --normalize]\n";

static json_t *tokenize_error(const char *msg) {
    return json_pack("{s:s}", "error", msg);
}

/* Output is written by hand: building a jansson tree for every token cost
 * more than the tokenization itself. */
typedef struct {
    char *buf;
    size_t len, cap;
} tokenize_out;

static int out_reserve(tokenize_out *o, size_t extra) {
    if (o->len + extra <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + extra)
        cap *= 2;
    char *b = realloc(o->buf, cap);
    if (!b) return -1;
    o->buf = b;
    o->cap = cap;
    return 0;
}

static int out_str(tokenize_out *o, const char *s) {
    size_t n = strlen(s);
    if (out_reserve(o, n)) return -1;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

static int out_int(tokenize_out *o, long v) {
    if (out_reserve(o, 24)) return -1;
    char tmp[24];
    int n = 0;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) o->buf[o->len++] = '-';
    while (n)
        o->buf[o->len++] = tmp[--n];
    return 0;
}

/* A JSON string from valid UTF-8 (vocab tokens are checked at load). */
static int out_json_string(tokenize_out *o, const char *s) {
    size_t n = strlen(s);
    if (out_reserve(o, 6 * n + 2)) return -1;
    char *d = o->buf + o->len;
    *d++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *d++ = '\\';
            *d++ = (char)*p;
        } else if (*p < 0x20) {
            d += sprintf(d, "\\u%04x", *p);
        } else {
            *d++ = (char)*p;
        }
    }
    *d++ = '"';
    o->len = (size_t)(d - o->buf);
    return 0;
}

static int tokenize_result(const tok_tokenizer *tok, const tok_sequence *seq, tokenize_out *o) {
    int rc = out_str(o, "{\"ids\":[");
    for (int i = 0; i < seq->len && !rc; i++)
        rc = (i && out_str(o, ",")) || out_int(o, seq->ids[i]);
    rc = rc || out_str(o, "],\"type_ids\":[");
    for (int i = 0; i < seq->len && !rc; i++)
        rc = (i && out_str(o, ",")) || out_int(o, seq->type_ids[i]);
    rc = rc || out_str(o, "],\"offsets\":[");
    for (int i = 0; i < seq->len && !rc; i++)
        rc = out_str(o, i ? ",[" : "[") || out_int(o, seq->start[i]) || out_str(o, ",") ||
             out_int(o, seq->end[i]) || out_str(o, "]");
    rc = rc || out_str(o, "],\"tokens\":[");
    for (int i = 0; i < seq->len && !rc; i++) {
        const char *t = tok_id_to_token(tok, seq->ids[i]);
        rc = (i && out_str(o, ",")) || (t ? out_json_string(o, t) : out_str(o, "null"));
    }
    return rc || out_str(o, "]}");
}

static json_t *decode_line(const tok_tokenizer *tok, const char *line, size_t len) {
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr), *res = NULL;
    int32_t *ids = NULL;
    if (!req) {
        char err[256];
        snprintf(err, sizeof(err), "invalid JSON: %s", jerr.text);
        return tokenize_error(err);
    }
    json_t *arr = json_object_get(req, "ids");
    if (!json_is_array(arr)) {
        res = tokenize_error("\"ids\" must be an array of integers");
        goto cleanup;
    }
    size_t n = json_array_size(arr);
    ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (!ids) goto cleanup;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN ||
            json_integer_value(v) > INT32_MAX) {
            res = tokenize_error("\"ids\" must be an array of 32-bit integers");
            goto cleanup;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = tok_decode(tok, ids, (int)n, json_is_true(json_object_get(req, "skip_special")),
                            json_is_true(json_object_get(req, "cleanup")));
    if (text) res = json_pack("{s:s}", "text", text);
    free(text);
cleanup:
    free(ids);
    json_decref(req);
    return res;
}

static json_t *normalize_line(const tok_tokenizer *tok, const char *line, size_t len) {
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_ALLOW_NUL, &jerr), *res = NULL;
    char err[512];
    if (!req) {
        snprintf(err, sizeof(err), "invalid JSON: %s", jerr.text);
        return tokenize_error(err);
    }
    json_t *text = json_object_get(req, "text");
    if (!json_is_string(text)) {
        res = tokenize_error("\"text\" must be a string");
    } else {
        size_t n = 0;
        char *norm = tok_normalize_text(tok, json_string_value(text), json_string_length(text), &n,
                                        err, sizeof(err));
        res = norm ? json_pack("{s:s%}", "normalized", norm, n) : tokenize_error(err);
        free(norm);
    }
    json_decref(req);
    return res;
}

/* Tokenizes one input line; a result goes into o, an error comes back as a
 * JSON object (NULL with o filled on success). */
static json_t *tokenize_line(const tok_tokenizer *tok, const char *line, size_t len, int raw,
                             int max_len, tok_truncation trunc, tok_side side, tok_sequence *seq,
                             tokenize_out *o, int *oom) {
    char err[512];
    const char *a = line, *b = NULL;
    size_t alen = len, blen = 0;
    json_t *req = NULL, *res = NULL;
    if (!raw) {
        json_error_t jerr;
        req = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
        if (!req) {
            snprintf(err, sizeof(err), "invalid JSON: %s", jerr.text);
            return tokenize_error(err);
        }
        json_t *text = json_object_get(req, "text"), *pair = json_object_get(req, "text_pair");
        if (!json_is_string(text) || (pair && !json_is_null(pair) && !json_is_string(pair))) {
            res = tokenize_error("\"text\" must be a string and \"text_pair\" a string or null");
            goto cleanup;
        }
        a = json_string_value(text);
        alen = json_string_length(text);
        if (json_is_string(pair)) {
            b = json_string_value(pair);
            blen = json_string_length(pair);
        }
    }
    if (tok_encode(tok, a, alen, b, blen, max_len, trunc, side, seq, err, sizeof(err)) != TOK_OK)
        res = tokenize_error(err);
    else if (tokenize_result(tok, seq, o))
        *oom = 1;
cleanup:
    json_decref(req);
    return res;
}

int cli_tokenize(int argc, char **argv) {
    const char *model = NULL, *vocab = NULL;
    tok_options opt;
    tok_options_default(&opt);
    int max_len = 0, raw = 0, decode = 0, normalize = 0, rc = 1;
    tok_truncation trunc = TOK_TRUNC_NONE;
    tok_side side = TOK_SIDE_RIGHT;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--no-lower") == 0) {
            opt.lowercase = 0;
        } else if (strcmp(arg, "--no-chinese") == 0) {
            opt.tokenize_chinese = 0;
        } else if (strcmp(arg, "--raw") == 0) {
            raw = 1;
        } else if (strcmp(arg, "--decode") == 0) {
            decode = 1;
        } else if (strcmp(arg, "--normalize") == 0) {
            normalize = 1;
        } else if (val && strcmp(arg, "--model") == 0) {
            model = val, i++;
        } else if (val && strcmp(arg, "--vocab") == 0) {
            vocab = val, i++;
        } else if (val && strcmp(arg, "--strip-accents") == 0 &&
                   (strcmp(val, "0") == 0 || strcmp(val, "1") == 0)) {
            opt.strip_accents = val[0] - '0', i++;
        } else if (val && strcmp(arg, "--max-len") == 0 && atoi(val) > 0) {
            max_len = atoi(val), i++;
        } else if (val && strcmp(arg, "--truncate") == 0) {
            if (strcmp(val, "longest_first") == 0)
                trunc = TOK_TRUNC_LONGEST_FIRST;
            else if (strcmp(val, "only_first") == 0)
                trunc = TOK_TRUNC_ONLY_FIRST;
            else if (strcmp(val, "only_second") == 0)
                trunc = TOK_TRUNC_ONLY_SECOND;
            else
                goto usage;
            i++;
        } else if (val && strcmp(arg, "--side") == 0 &&
                   (strcmp(val, "left") == 0 || strcmp(val, "right") == 0)) {
            side = val[0] == 'l' ? TOK_SIDE_LEFT : TOK_SIDE_RIGHT, i++;
        } else {
            fprintf(stderr, "bert-cli tokenize: bad option '%s'\n", arg);
            goto usage;
        }
    }
    if (!model == !vocab || raw + decode + normalize > 1) goto usage;

    char err[512];
    tok_tokenizer *tok = NULL;
    int lrc = model ? tok_load_dir(model, &tok, err, sizeof(err))
                    : tok_load_vocab(vocab, &opt, &tok, err, sizeof(err));
    if (lrc != TOK_OK) {
        fprintf(stderr, "bert-cli tokenize: %s\n", err);
        return 1;
    }
    tok_sequence seq = {0};
    tokenize_out out = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') len--;
        int oom = 0;
        out.len = 0;
        json_t *res = decode      ? decode_line(tok, line, (size_t)len)
                      : normalize ? normalize_line(tok, line, (size_t)len)
                                  : tokenize_line(tok, line, (size_t)len, raw, max_len, trunc, side,
                                                  &seq, &out, &oom);
        if (oom || (!res && !out.len)) {
            fprintf(stderr, "bert-cli tokenize: out of memory\n");
            json_decref(res);
            goto cleanup;
        }
        if (res) {
            json_dumpf(res, stdout, JSON_COMPACT);
            json_decref(res);
        } else {
            fwrite(out.buf, 1, out.len, stdout);
        }
        fputc('\n', stdout);
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
cleanup:
    free(line);
    free(out.buf);
    tok_sequence_free(&seq);
    tok_free(tok);
    return rc;
usage:
    fputs(tokenize_usage, stderr);
    return 2;
}
