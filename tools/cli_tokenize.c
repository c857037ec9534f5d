/* bert-cli tokenize: core/tokenizer over JSON lines, so the tests can hold
 * it against the fast tokenizer on a large corpus in one process.
 *
 * Options beyond cli.h's usage: --side left|right (truncation side);
 * --raw (each stdin line, minus its newline, is the text itself: the only
 * way to hand the tokenizer bytes that are not valid UTF-8, which JSON
 * cannot carry); --decode (stdin: {"ids": [..], "skip_special": bool,
 * "cleanup": bool}, stdout: {"text": "..."}, i.e. tok_decode). */
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
    "                         [--side right|left] [--raw | --decode]\n";

static json_t *tokenize_error(const char *msg) {
    return json_pack("{s:s}", "error", msg);
}

static json_t *tokenize_result(const tok_tokenizer *tok, const tok_sequence *seq) {
    json_t *ids = json_array(), *types = json_array(), *offs = json_array(), *tokens = json_array();
    for (int i = 0; i < seq->len; i++) {
        json_array_append_new(ids, json_integer(seq->ids[i]));
        json_array_append_new(types, json_integer(seq->type_ids[i]));
        json_array_append_new(offs, json_pack("[i,i]", seq->start[i], seq->end[i]));
        const char *t = tok_id_to_token(tok, seq->ids[i]);
        json_array_append_new(tokens, t ? json_string(t) : json_null());
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "ids", ids, "type_ids", types, "offsets", offs, "tokens",
                     tokens);
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

static json_t *tokenize_line(const tok_tokenizer *tok, const char *line, size_t len, int raw,
                             int max_len, tok_truncation trunc, tok_side side, tok_sequence *seq) {
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
    else
        res = tokenize_result(tok, seq);
cleanup:
    json_decref(req);
    return res;
}

int cli_tokenize(int argc, char **argv) {
    const char *model = NULL, *vocab = NULL;
    tok_options opt;
    tok_options_default(&opt);
    int max_len = 0, raw = 0, decode = 0, rc = 1;
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
    if (!model == !vocab || (raw && decode)) goto usage;

    char err[512];
    tok_tokenizer *tok = NULL;
    int lrc = model ? tok_load_dir(model, &tok, err, sizeof(err))
                    : tok_load_vocab(vocab, &opt, &tok, err, sizeof(err));
    if (lrc != TOK_OK) {
        fprintf(stderr, "bert-cli tokenize: %s\n", err);
        return 1;
    }
    tok_sequence seq = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') len--;
        json_t *res = decode
                          ? decode_line(tok, line, (size_t)len)
                          : tokenize_line(tok, line, (size_t)len, raw, max_len, trunc, side, &seq);
        if (!res) {
            fprintf(stderr, "bert-cli tokenize: out of memory\n");
            goto cleanup;
        }
        json_dumpf(res, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(res);
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
cleanup:
    free(line);
    tok_sequence_free(&seq);
    tok_free(tok);
    return rc;
usage:
    fputs(tokenize_usage, stderr);
    return 2;
}
