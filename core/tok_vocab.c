/* tok_vocab: the vocabulary and the checkpoint files that describe it
 * (vocab.txt, tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json), special and added tokens, and the accessors.
 * See tok_internal.h. */
#include "tok_internal.h"

#include "file_io.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

int tok_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- vocabulary ---- */

static uint32_t tok_hash(const char *prefix, size_t plen, const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < plen; i++)
        h = (h ^ (uint8_t)prefix[i]) * 16777619u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Id of prefix+s, or -1. The prefix ("##" for continuations) saves building
 * the joined string for every WordPiece probe. */
int32_t tok_lookup(const tok_tokenizer *tok, const char *prefix, size_t plen, const char *s,
                   size_t len) {
    if (plen + len > tok->max_len) return -1;
    uint32_t i = tok_hash(prefix, plen, s, len) & tok->mask;
    for (;; i = (i + 1) & tok->mask) {
        int32_t id = tok->slots[i];
        if (id < 0) return -1;
        const char *t = tok->pool + tok->tok_off[id];
        if (tok->tok_len[id] == plen + len && memcmp(t, prefix, plen) == 0 &&
            memcmp(t + plen, s, len) == 0)
            return id;
    }
}

/* Byte length of s once trailing White_Space is removed (Rust's trim_end,
 * which tokenizers applies to each vocab line). s is valid UTF-8. */
static size_t tok_trim_end(const char *s, size_t len) {
    size_t keep = 0, i = 0;
    while (i < len) {
        int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
        i += (size_t)k;
        if (!tok_is_whitespace(c)) keep = i;
    }
    return keep;
}

void tok_options_default(tok_options *opt) {
    opt->lowercase = 1;
    opt->strip_accents = -1;
    opt->tokenize_chinese = 1;
    opt->max_input_chars = 100;
    opt->cleanup_spaces = 0;
}

static int tok_added_cmp(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? 1 : -1) : strcmp(x->text, y->text);
}

/* Appends one added token (no-op for a text already there). */
static int tok_add_added(tok_tokenizer *tok, const char *text, int32_t id, int special) {
    for (int i = 0; i < tok->n_added; i++) {
        if (strcmp(tok->added[i].text, text) == 0) {
            tok->added[i].special |= special;
            return 0;
        }
    }
    tok_added *grown = realloc(tok->added, (size_t)(tok->n_added + 1) * sizeof(*grown));
    if (!grown) return -1;
    tok->added = grown;
    tok_added *a = &tok->added[tok->n_added];
    if (!(a->text = strdup(text))) return -1;
    a->len = strlen(text);
    a->id = id;
    a->special = special;
    tok->n_added++;
    return 0;
}

/* Special token ids from their strings, then the added tokens, each checked
 * against the vocab it must be part of. */
static int tok_set_specials(tok_tokenizer *tok, const char *name, const tok_extra *extra, char *err,
                            size_t errlen) {
    static const char *defaults[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    static const char *roles[5] = {"pad_token", "unk_token", "cls_token", "sep_token",
                                   "mask_token"};
    int32_t *ids[5] = {&tok->sp.pad, &tok->sp.unk, &tok->sp.cls, &tok->sp.sep, &tok->sp.mask};
    for (int i = 0; i < 5; i++) {
        const char *nm = extra && extra->names[i] ? extra->names[i] : defaults[i];
        *ids[i] = tok_lookup(tok, "", 0, nm, strlen(nm));
        if (*ids[i] < 0) {
            if (extra && extra->names[i])
                return tok_fail(err, errlen, TOK_ERR_FORMAT,
                                "%s: special token '%.100s' (%s in %s) is not in the vocab", name,
                                nm, roles[i], extra->names_from[i]);
            return tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: special token %s is not in the vocab",
                            name, nm);
        }
        if (tok_add_added(tok, nm, *ids[i], 1))
            return tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", name);
    }
    for (int i = 0; extra && i < extra->n_added; i++) {
        const tok_added *a = &extra->added[i];
        if (a->id < 0 || a->id >= tok->n || tok->tok_len[a->id] != a->len ||
            memcmp(tok->pool + tok->tok_off[a->id], a->text, a->len) != 0)
            return tok_fail(
                err, errlen, TOK_ERR_FORMAT, "%s: added token '%.100s' has id %d, which is %s",
                extra->added_from, a->text, (int)a->id,
                a->id < 0 || a->id >= tok->n ? "outside the vocab" : "another token in the vocab");
        if (tok_add_added(tok, a->text, a->id, a->special))
            return tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", name);
    }
    /* The splitter matches the longest added token at each position. */
    qsort(tok->added, (size_t)tok->n_added, sizeof(*tok->added), tok_added_cmp);
    tok->only_first = tok->n_added ? (uint8_t)tok->added[0].text[0] : -1;
    for (int i = 0; i < tok->n_added; i++) {
        tok->first_byte[(uint8_t)tok->added[i].text[0]] = 1;
        if ((uint8_t)tok->added[i].text[0] != tok->only_first) tok->only_first = -1;
    }
    return TOK_OK;
}

static int tok_build_vocab(const char *data, size_t len, const char *name, const tok_options *opt,
                           const tok_extra *extra, tok_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    if (!opt) return tok_fail(err, errlen, TOK_ERR_ARG, "%s: no tokenizer options", name);
    if (len == 0) return tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: vocabulary is empty", name);
    int rc = TOK_ERR_NOMEM;
    tok_tokenizer *tok = calloc(1, sizeof(*tok));
    if (!tok) goto fail_nomem;
    tok->opt = *opt;
    tok->strip = opt->strip_accents < 0 ? opt->lowercase != 0 : opt->strip_accents != 0;

    /* Lines as Rust's BufRead::lines sees them: split at \n, no empty line
     * after a final \n (a \r before the \n goes with the trailing
     * whitespace trimmed below). */
    size_t nlines = 0;
    for (size_t i = 0; i < len; i++)
        nlines += data[i] == '\n';
    if (data[len - 1] != '\n') nlines++;
    if (nlines > ((size_t)1 << 28) || len > UINT32_MAX - nlines) {
        rc = tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: vocabulary too large", name);
        goto fail;
    }
    tok->pool = malloc(len + nlines);
    tok->tok_off = malloc(nlines * sizeof(uint32_t));
    tok->tok_len = malloc(nlines * sizeof(uint32_t));
    tok->shadowed = calloc(nlines, 1);
    uint32_t cap = 16;
    while (cap < 2 * nlines)
        cap *= 2;
    tok->slots = malloc(cap * sizeof(int32_t));
    if (!tok->pool || !tok->tok_off || !tok->tok_len || !tok->shadowed || !tok->slots)
        goto fail_nomem;
    memset(tok->slots, 0xff, cap * sizeof(int32_t));
    tok->mask = cap - 1;

    size_t used = 0, pos = 0;
    for (size_t line = 0; line < nlines; line++) {
        const char *s = data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - s) : len - pos;
        pos += l + (nl != NULL);
        for (size_t i = 0; i < l;) {
            int32_t c;
            utf8proc_ssize_t k =
                utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(l - i), &c);
            if (k < 0) {
                rc = tok_fail(err, errlen, TOK_ERR_FORMAT,
                              "%s: line %zu is not valid UTF-8 (byte %zu of the line)", name,
                              line + 1, i);
                goto fail;
            }
            i += (size_t)k;
        }
        l = tok_trim_end(s, l);
        memcpy(tok->pool + used, s, l);
        tok->pool[used + l] = 0;
        tok->tok_off[line] = (uint32_t)used;
        tok->tok_len[line] = (uint32_t)l;
        used += l + 1;
        if (l > tok->max_len) tok->max_len = (uint32_t)l;
        /* A duplicate line takes the token over, as in tokenizers' vocab map:
         * the text maps to the later id and the earlier id decodes to nothing. */
        uint32_t h = tok_hash("", 0, s, l) & tok->mask;
        for (;; h = (h + 1) & tok->mask) {
            int32_t id = tok->slots[h];
            if (id < 0) break;
            if (tok->tok_len[id] == l && memcmp(tok->pool + tok->tok_off[id], s, l) == 0) {
                tok->shadowed[id] = 1;
                break;
            }
        }
        tok->slots[h] = (int32_t)line;
    }
    tok->n = (int32_t)nlines;

    if ((rc = tok_set_specials(tok, name, extra, err, errlen)) != TOK_OK) goto fail;
    *out = tok;
    return TOK_OK;

fail_nomem:
    rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", name);
fail:
    tok_free(tok);
    return rc;
}

static int tok_added_id_cmp(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* The vocab (vocab.txt lines) plus the added tokens whose ids lie past it,
 * which tokenizers numbers on from the vocab's end: they become lines
 * n, n+1, ... (each must have exactly the next id). */
static int tok_build(const char *data, size_t len, const char *name, const tok_options *opt,
                     const tok_extra *extra, tok_tokenizer **out, char *err, size_t errlen) {
    size_t base = 0;
    for (size_t i = 0; i < len; i++)
        base += data[i] == '\n';
    if (len && data[len - 1] != '\n') base++;
    size_t n_tail = 0, tail_bytes = 0;
    for (int i = 0; extra && i < extra->n_added; i++) {
        if (extra->added[i].id >= 0 && (size_t)extra->added[i].id >= base) {
            n_tail++;
            tail_bytes += extra->added[i].len + 1;
        }
    }
    /* An empty vocab is reported as such, not as added tokens out of place. */
    if (n_tail == 0 || len == 0)
        return tok_build_vocab(data, len, name, opt, extra, out, err, errlen);
    *out = NULL;
    tok_added *tail = malloc(n_tail * sizeof(*tail));
    char *buf = malloc(len + 1 + tail_bytes);
    int rc = TOK_ERR_NOMEM;
    if (!tail || !buf) {
        rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", name);
        goto cleanup;
    }
    n_tail = 0;
    for (int i = 0; i < extra->n_added; i++)
        if (extra->added[i].id >= 0 && (size_t)extra->added[i].id >= base)
            tail[n_tail++] = extra->added[i];
    qsort(tail, n_tail, sizeof(*tail), tok_added_id_cmp);
    memcpy(buf, data, len);
    size_t used = len;
    if (len && data[len - 1] != '\n') buf[used++] = '\n';
    for (size_t i = 0; i < n_tail; i++) {
        if ((size_t)tail[i].id != base + i || memchr(tail[i].text, '\n', tail[i].len)) {
            rc = tok_fail(err, errlen, TOK_ERR_FORMAT,
                          "%s: added token '%.100s' has id %d, but %s has %zu tokens: added "
                          "tokens past its end must number on from %zu without gaps",
                          extra->added_from, tail[i].text, (int)tail[i].id, name, base, base + i);
            goto cleanup;
        }
        memcpy(buf + used, tail[i].text, tail[i].len);
        used += tail[i].len;
        buf[used++] = '\n';
    }
    rc = tok_build_vocab(buf, used, name, opt, extra, out, err, errlen);
cleanup:
    free(tail);
    free(buf);
    return rc;
}

int tok_load_vocab_buffer(const char *data, size_t len, const tok_options *opt, tok_tokenizer **out,
                          char *err, size_t errlen) {
    if (!out || (!data && len)) return tok_fail(err, errlen, TOK_ERR_ARG, "vocab: no buffer");
    return tok_build(data, len, "vocab", opt, NULL, out, err, errlen);
}

/* Maps a file_io status onto the tokenizer's. */
static int tok_fio_status(int frc) {
    return frc == FIO_ERR_NOMEM                          ? TOK_ERR_NOMEM
           : frc == FIO_ERR_MISSING || frc == FIO_ERR_IO ? TOK_ERR_IO
                                                         : TOK_ERR_FORMAT;
}

/* vocab.txt under a byte cap: max_tokens lines (0: no count known) of at most
 * TOK_VOCAB_LINE_BYTES bytes on average. */
static int tok_load_vocab_ex(const char *vocab_path, int max_tokens, const tok_options *opt,
                             const tok_extra *extra, tok_tokenizer **out, char *err,
                             size_t errlen) {
    if (!out || !vocab_path) return tok_fail(err, errlen, TOK_ERR_ARG, "vocab: no path");
    *out = NULL;
    size_t cap = max_tokens > 0 ? (size_t)max_tokens * TOK_VOCAB_LINE_BYTES + ((size_t)1 << 20)
                                : TOK_MAX_VOCAB_BYTES;
    if (cap > TOK_MAX_VOCAB_BYTES) cap = TOK_MAX_VOCAB_BYTES;
    char *data = NULL;
    size_t len = 0;
    int frc = fio_read_all(vocab_path, cap, &data, &len, err, errlen);
    if (frc != FIO_OK) {
        if (frc == FIO_ERR_TOO_BIG && max_tokens > 0) {
            size_t n = strlen(err);
            snprintf(err + n, errlen > n ? errlen - n : 0,
                     " (config.json 'vocab_size' %d allows %zu bytes)", max_tokens, cap);
        }
        return tok_fio_status(frc);
    }
    int rc = tok_build(data, len, vocab_path, opt, extra, out, err, errlen);
    free(data);
    return rc;
}

int tok_load_vocab(const char *vocab_path, const tok_options *opt, tok_tokenizer **out, char *err,
                   size_t errlen) {
    return tok_load_vocab_ex(vocab_path, 0, opt, NULL, out, err, errlen);
}

/* Reads a boolean (or, where nullable, null -> -1) key of a config object.
 * Returns 1 if found, 0 if absent, negative status on a wrong type. */
static int tok_config_flag(json_t *obj, const char *key, int nullable, const char *path, int *out,
                           char *err, size_t errlen) {
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 1;
    }
    if (nullable && json_is_null(v)) {
        *out = -1;
        return 1;
    }
    return -tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: \"%s\" must be %s", path, key,
                     nullable ? "true, false or null" : "true or false");
}

/* Loads path (a regular file of at most max_bytes) as a JSON object into
 * *root; *root stays NULL (TOK_OK) when the file does not exist. */
static int tok_load_json(const char *path, size_t max_bytes, json_t **root, char *err,
                         size_t errlen) {
    char *data = NULL;
    size_t len = 0;
    *root = NULL;
    int frc = fio_read_all(path, max_bytes, &data, &len, err, errlen);
    if (frc == FIO_ERR_MISSING) return TOK_OK;
    if (frc != FIO_OK) return tok_fio_status(frc);
    json_error_t je;
    /* Hub files carry "model_max_length": 1e30 written as an integer, beyond
     * json_int_t; integers may become reals (read with tok_json_int). */
    *root = json_loadb(data, len, JSON_DECODE_INT_AS_REAL, &je);
    free(data);
    if (!*root)
        return tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: not a JSON object", path);
    }
    return TOK_OK;
}

/* A JSON number that is a whole number in [lo, hi] (integers may have been
 * decoded as reals). */
static int tok_json_int(const json_t *v, double lo, double hi, int64_t *out) {
    if (!json_is_number(v)) return 0;
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

/* A token string: "..." or an AddedToken object {"content": "..."}. Returns
 * 1 found, 0 absent or null, negative status on a wrong value. */
static int tok_token_string(json_t *obj, const char *key, const char *path, const char **out,
                            char *err, size_t errlen) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return -tok_fail(err, errlen, TOK_ERR_FORMAT,
                         "%s: \"%s\" must be a token string or {\"content\": string}", path, key);
    *out = json_string_value(v);
    return 1;
}

/* The special token strings a config file names. */
static int tok_special_names(json_t *obj, const char *path, tok_extra *x, char *err,
                             size_t errlen) {
    static const char *keys[5] = {"pad_token", "unk_token", "cls_token", "sep_token", "mask_token"};
    for (int i = 0; i < 5; i++) {
        int r = tok_token_string(obj, keys[i], path, &x->names[i], err, errlen);
        if (r < 0) return -r;
        if (r > 0) x->names_from[i] = path;
    }
    return TOK_OK;
}

/* One added token (tokenizer.json "added_tokens" entry or
 * tokenizer_config.json "added_tokens_decoder" value). Only what the splitter
 * here does is accepted: matched on the raw text, no stripping. */
static int tok_parse_added(json_t *e, int64_t id, const char *path, tok_added *a, char *err,
                           size_t errlen) {
    json_t *c = json_is_object(e) ? json_object_get(e, "content") : NULL;
    if (!json_is_string(c) || json_string_length(c) == 0 ||
        strlen(json_string_value(c)) != json_string_length(c))
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: added token %lld needs a non-empty string \"content\"", path,
                        (long long)id);
    a->text = (char *)json_string_value(c); /* borrowed from the JSON */
    a->len = json_string_length(c);
    a->id = (int32_t)id;
    json_t *sp = json_object_get(e, "special");
    if (sp && !json_is_boolean(sp))
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: added token '%.100s': \"special\" must be true or false", path,
                        a->text);
    a->special = sp ? json_is_true(sp) : 0;
    static const char *flags[4] = {"lstrip", "rstrip", "single_word", "normalized"};
    for (int k = 0; k < 4; k++) {
        json_t *f = json_object_get(e, flags[k]);
        /* tokenizers' default for "normalized" is !special. */
        int on = f ? json_is_true(f) : (k == 3 && !a->special);
        if (f && !json_is_boolean(f))
            return tok_fail(err, errlen, TOK_ERR_FORMAT,
                            "%s: added token '%.100s': \"%s\" must be true or false", path, a->text,
                            flags[k]);
        if (on)
            return tok_fail(err, errlen, TOK_ERR_FORMAT,
                            "%s: added token '%.100s' sets \"%s\"; only added tokens matched "
                            "exactly on the raw text (lstrip, rstrip, single_word and normalized "
                            "false) are supported",
                            path, a->text, flags[k]);
    }
    return TOK_OK;
}

static int tok_added_list(json_t *tj, json_t *cfg, const char *tj_path, const char *cfg_path,
                          tok_extra *x, tok_added **owned, char *err, size_t errlen) {
    json_t *list = tj ? json_object_get(tj, "added_tokens") : NULL;
    json_t *dec = !list && cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    const char *path = list ? tj_path : cfg_path;
    size_t n = list ? json_array_size(list) : dec ? json_object_size(dec) : 0;
    if (list && !json_is_array(list))
        return tok_fail(err, errlen, TOK_ERR_FORMAT, "%s: \"added_tokens\" must be a list", path);
    if (dec && !json_is_object(dec))
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: \"added_tokens_decoder\" must be an object", path);
    if (n == 0) return TOK_OK;
    tok_added *a = calloc(n, sizeof(*a));
    if (!a) return tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", path);
    *owned = a;
    x->added = a;
    x->added_from = path;
    size_t i = 0;
    if (list) {
        json_t *e;
        json_array_foreach(list, i, e) {
            int64_t id;
            if (!json_is_object(e) || !tok_json_int(json_object_get(e, "id"), 0, INT32_MAX, &id))
                return tok_fail(err, errlen, TOK_ERR_FORMAT,
                                "%s: added_tokens[%zu] needs an integer \"id\" >= 0", path, i);
            int rc = tok_parse_added(e, id, path, &a[x->n_added], err, errlen);
            if (rc != TOK_OK) return rc;
            x->n_added++;
        }
    } else {
        const char *key;
        json_t *e;
        json_object_foreach(dec, key, e) {
            char *end = NULL;
            errno = 0;
            long long id = strtoll(key, &end, 10);
            if (!*key || *end || errno || id < 0 || id > INT32_MAX)
                return tok_fail(err, errlen, TOK_ERR_FORMAT,
                                "%s: added_tokens_decoder key '%.40s' is not a token id", path,
                                key);
            int rc = tok_parse_added(e, id, path, &a[x->n_added], err, errlen);
            if (rc != TOK_OK) return rc;
            x->n_added++;
        }
    }
    return TOK_OK;
}

/* tokenizer.json's WordPiece model -> vocab.txt text (ids 0..n-1 in order),
 * its unk token and max_input_chars_per_word. */
static int tok_vocab_from_json(json_t *tj, const char *path, char **buf, size_t *len,
                               tok_options *opt, tok_extra *x, char *err, size_t errlen) {
    json_t *model = json_object_get(tj, "model");
    json_t *type = json_is_object(model) ? json_object_get(model, "type") : NULL;
    if (!json_is_object(model))
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: no \"model\" object, and no vocab.txt next to it: a WordPiece vocab "
                        "is needed",
                        path);
    if (!json_is_string(type) || strcmp(json_string_value(type), "WordPiece") != 0)
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: \"model\" is %s%.40s; only a WordPiece (BERT) model is supported",
                        path, json_is_string(type) ? "of type " : "not a model",
                        json_is_string(type) ? json_string_value(type) : "");
    json_t *prefix = json_object_get(model, "continuing_subword_prefix");
    if (prefix && !json_is_null(prefix) &&
        (!json_is_string(prefix) || strcmp(json_string_value(prefix), "##") != 0))
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: \"continuing_subword_prefix\" must be \"##\"", path);
    json_t *mic = json_object_get(model, "max_input_chars_per_word");
    if (mic && !json_is_null(mic)) {
        int64_t v;
        if (!tok_json_int(mic, 1, 1 << 20, &v))
            return tok_fail(err, errlen, TOK_ERR_FORMAT,
                            "%s: \"max_input_chars_per_word\" must be an integer in [1, 1048576]",
                            path);
        opt->max_input_chars = (int)v;
    }
    if (!x->names[1]) {
        int r = tok_token_string(model, "unk_token", path, &x->names[1], err, errlen);
        if (r < 0) return -r;
        if (r > 0) x->names_from[1] = path;
    }
    json_t *vocab = json_object_get(model, "vocab");
    size_t n = json_is_object(vocab) ? json_object_size(vocab) : 0;
    if (n == 0 || n > ((size_t)1 << 24))
        return tok_fail(err, errlen, TOK_ERR_FORMAT,
                        "%s: \"model\".\"vocab\" must be a non-empty object of token -> id", path);
    const char **by_id = calloc(n, sizeof(*by_id));
    if (!by_id) return tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", path);
    size_t total = 0;
    int rc = TOK_ERR_FORMAT;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        int64_t id;
        size_t kl = strlen(key);
        if (!tok_json_int(v, 0, (double)n - 1, &id)) {
            rc = tok_fail(err, errlen, TOK_ERR_FORMAT,
                          "%s: vocab token '%.100s' has id outside 0..%zu (ids must be dense)",
                          path, key, n - 1);
            goto fail;
        }
        if (by_id[id]) {
            rc = tok_fail(err, errlen, TOK_ERR_FORMAT,
                          "%s: vocab tokens '%.100s' and '%.100s' share id %lld", path, by_id[id],
                          key, (long long)id);
            goto fail;
        }
        if (memchr(key, '\n', kl) || tok_trim_end(key, kl) != kl) {
            rc = tok_fail(err, errlen, TOK_ERR_FORMAT,
                          "%s: vocab token %lld contains a newline or ends in whitespace", path,
                          (long long)id);
            goto fail;
        }
        by_id[id] = key;
        total += kl + 1;
    }
    if (!(*buf = malloc(total))) {
        rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(by_id[i]);
        memcpy(*buf + *len, by_id[i], kl);
        *len += kl;
        (*buf)[(*len)++] = '\n';
    }
    rc = TOK_OK;
fail:
    free(by_id);
    return rc;
}

int tok_load_dir(const char *dir, tok_tokenizer **out, char *err, size_t errlen) {
    return tok_load_dir_capped(dir, 0, out, err, errlen);
}

int tok_load_dir_capped(const char *dir, int max_tokens, tok_tokenizer **out, char *err,
                        size_t errlen) {
    if (!out || !dir) return tok_fail(err, errlen, TOK_ERR_ARG, "tokenizer: no directory");
    *out = NULL;
    int rc = TOK_OK;
    json_t *cfg = NULL, *tj = NULL, *stm = NULL;
    tok_added *added = NULL;
    char *vocab_buf = NULL;
    size_t plen = strlen(dir) + sizeof("/special_tokens_map.json");
    char *cfg_path = malloc(plen), *tj_path = malloc(plen), *stm_path = malloc(plen),
         *vocab_path = malloc(plen);
    if (!cfg_path || !tj_path || !stm_path || !vocab_path) {
        rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "tokenizer: out of memory");
        goto cleanup;
    }
    snprintf(cfg_path, plen, "%s/tokenizer_config.json", dir);
    snprintf(tj_path, plen, "%s/tokenizer.json", dir);
    snprintf(stm_path, plen, "%s/special_tokens_map.json", dir);
    snprintf(vocab_path, plen, "%s/vocab.txt", dir);
    tok_options opt;
    tok_options_default(&opt);
    tok_extra extra;
    memset(&extra, 0, sizeof(extra));
    int have_lower = 0, have_strip = 0, have_chinese = 0;

    if ((rc = tok_load_json(cfg_path, FIO_MAX_CONFIG_BYTES, &cfg, err, errlen)) != TOK_OK)
        goto cleanup;
    if (cfg) {
        struct {
            const char *key;
            int nullable, *dst, *have;
        } keys[3] = {{"do_lower_case", 0, &opt.lowercase, &have_lower},
                     {"strip_accents", 1, &opt.strip_accents, &have_strip},
                     {"tokenize_chinese_chars", 0, &opt.tokenize_chinese, &have_chinese}};
        for (int i = 0; i < 3; i++) {
            int r = tok_config_flag(cfg, keys[i].key, keys[i].nullable, cfg_path, keys[i].dst, err,
                                    errlen);
            if (r < 0) {
                rc = -r;
                goto cleanup;
            }
            *keys[i].have = r;
        }
        if ((rc = tok_special_names(cfg, cfg_path, &extra, err, errlen)) != TOK_OK) goto cleanup;
        /* Read here so that the file is read once: the server's decode
         * follows it (api_ctx_init). */
        int r = tok_config_flag(cfg, "clean_up_tokenization_spaces", 1, cfg_path,
                                &opt.cleanup_spaces, err, errlen);
        if (r < 0) {
            rc = -r;
            goto cleanup;
        }
        if (opt.cleanup_spaces < 0) opt.cleanup_spaces = 0;
    }
    /* transformers applies special_tokens_map.json over tokenizer_config.json. */
    if ((rc = tok_load_json(stm_path, FIO_MAX_CONFIG_BYTES, &stm, err, errlen)) != TOK_OK)
        goto cleanup;
    if (stm && (rc = tok_special_names(stm, stm_path, &extra, err, errlen)) != TOK_OK) goto cleanup;

    /* Settings tokenizer_config.json leaves out come from the BertNormalizer
     * in tokenizer.json, when there is one. */
    if ((rc = tok_load_json(tj_path, TOK_MAX_TOKENIZER_JSON_BYTES, &tj, err, errlen)) != TOK_OK)
        goto cleanup;
    if (tj && (!have_lower || !have_strip || !have_chinese)) {
        json_t *norm = json_object_get(tj, "normalizer");
        json_t *type = norm ? json_object_get(norm, "type") : NULL;
        if (type && json_is_string(type) &&
            strcmp(json_string_value(type), "BertNormalizer") == 0) {
            struct {
                const char *key;
                int nullable, *dst, have;
            } keys[3] = {{"lowercase", 0, &opt.lowercase, have_lower},
                         {"strip_accents", 1, &opt.strip_accents, have_strip},
                         {"handle_chinese_chars", 0, &opt.tokenize_chinese, have_chinese}};
            for (int i = 0; i < 3; i++) {
                if (keys[i].have) continue;
                int r = tok_config_flag(norm, keys[i].key, keys[i].nullable, tj_path, keys[i].dst,
                                        err, errlen);
                if (r < 0) {
                    rc = -r;
                    goto cleanup;
                }
            }
        } else if (norm && !json_is_null(norm)) {
            rc = tok_fail(err, errlen, TOK_ERR_FORMAT,
                          "%s: \"normalizer\" is not a BertNormalizer; only BERT's is supported",
                          tj_path);
            goto cleanup;
        }
    }
    if ((rc = tok_added_list(tj, cfg, tj_path, cfg_path, &extra, &added, err, errlen)) != TOK_OK)
        goto cleanup;

    /* vocab.txt when there is one (what the slow and fast tokenizers share),
     * else the WordPiece vocab inside tokenizer.json. stat, not open: a FIFO
     * must be refused by file_io, not waited on here. */
    struct stat vst;
    int vocab_missing = stat(vocab_path, &vst) != 0 && errno == ENOENT;
    if (!vocab_missing || !tj) {
        rc = tok_load_vocab_ex(vocab_path, max_tokens, &opt, &extra, out, err, errlen);
        if (rc == TOK_ERR_IO && vocab_missing)
            tok_fail(err, errlen, TOK_ERR_IO,
                     "%s: No such file or directory, and no tokenizer.json with a WordPiece vocab",
                     vocab_path);
        goto cleanup;
    }
    size_t vocab_len = 0;
    if ((rc = tok_vocab_from_json(tj, tj_path, &vocab_buf, &vocab_len, &opt, &extra, err,
                                  errlen)) != TOK_OK)
        goto cleanup;
    rc = tok_build(vocab_buf, vocab_len, tj_path, &opt, &extra, out, err, errlen);
cleanup:
    json_decref(cfg);
    json_decref(tj);
    json_decref(stm);
    free(added);
    free(vocab_buf);
    free(cfg_path);
    free(tj_path);
    free(stm_path);
    free(vocab_path);
    return rc;
}

void tok_free(tok_tokenizer *tok) {
    if (!tok) return;
    free(tok->pool);
    free(tok->tok_off);
    free(tok->tok_len);
    free(tok->shadowed);
    free(tok->slots);
    for (int i = 0; i < tok->n_added; i++)
        free(tok->added[i].text);
    free(tok->added);
    free(tok);
}

int tok_vocab_size(const tok_tokenizer *tok) {
    return tok->n;
}
const tok_options *tok_get_options(const tok_tokenizer *tok) {
    return &tok->opt;
}
const tok_special_ids *tok_specials(const tok_tokenizer *tok) {
    return &tok->sp;
}

const char *tok_id_to_token(const tok_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n) return NULL;
    return tok->pool + tok->tok_off[id];
}

int32_t tok_token_to_id(const tok_tokenizer *tok, const char *s, size_t len) {
    return tok_lookup(tok, "", 0, s, len);
}

int tok_is_special(const tok_tokenizer *tok, int32_t id) {
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].id == id && tok->added[i].special) return 1;
    return 0;
}
