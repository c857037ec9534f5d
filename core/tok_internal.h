/* tok_internal: what the tokenizer's own files share (tokenizer.h is the
 * public face). Not for use outside core/tok_*.c and core/tokenizer.c.
 *
 *   tok_unicode.c  the fast tokenizer's view of Unicode (categories, case,
 *                  decomposition as tokenizers 0.23 sees them)
 *   tok_vocab.c    the vocabulary: vocab.txt / tokenizer.json / config files,
 *                  the token hash, special and added tokens, accessors
 *   tokenizer.c    normalize -> words -> WordPiece -> truncate, and decode */
#ifndef BERT_CORE_TOK_INTERNAL_H
#define BERT_CORE_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* A token the added-token splitter keeps whole when written in the raw text
 * (the five special tokens and tokenizer.json's other added tokens). */
typedef struct tok_added {
    char *text;
    size_t len;
    int32_t id;
    int special; /* skipped by decode(skip_special) */
} tok_added;

/* What the checkpoint's files say beyond the vocab: special token strings
 * (NULL: BERT's defaults) and added tokens (borrowed). */
typedef struct tok_extra {
    const char *names[5]; /* pad, unk, cls, sep, mask */
    const char *names_from[5];
    const tok_added *added;
    int n_added;
    const char *added_from;
} tok_extra;

struct tok_tokenizer {
    tok_options opt;
    int strip; /* opt.strip_accents resolved against opt.lowercase */
    tok_special_ids sp;
    int32_t n;         /* ids are 0 .. n-1: one per vocab.txt line */
    char *pool;        /* every token, NUL-terminated, back to back */
    uint32_t *tok_off; /* n: where token id starts in pool */
    uint32_t *tok_len; /* n: its length in bytes */
    uint8_t *shadowed; /* n: a later duplicate line took this token's text */
    int32_t *slots;    /* open-addressing hash of ids keyed by token text; -1 empty */
    uint32_t mask;     /* slots has mask + 1 entries, a power of two */
    uint32_t max_len;  /* longest token in bytes: bounds the WordPiece search */
    tok_added *added;  /* matched whole in raw text, longest first */
    int n_added;
    uint8_t first_byte[256]; /* 1: some added token starts with this byte */
    int only_first;          /* the one byte they all start with (memchr), or -1 */
};

/* Writes the printf-style message into err (when given) and returns code. */
int tok_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- tok_unicode.c ---- */
int tok_is_whitespace(int32_t c);
int tok_is_dropped(int32_t c);
int tok_is_chinese(int32_t c);
int tok_is_punct(int32_t c);
int tok_is_mark_nonspacing(int32_t c);
int tok_ccc(int32_t c);
int tok_lower(int32_t c, int32_t out[2]);
int tok_decompose(int32_t c, int32_t *dst, int cap);

/* ---- tok_vocab.c ---- */
/* The id of prefix + s (e.g. "##" + piece), or -1. */
int32_t tok_lookup(const tok_tokenizer *tok, const char *prefix, size_t plen, const char *s,
                   size_t len);

#endif
