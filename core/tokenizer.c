/* tokenizer: BERT WordPiece, matching Hugging Face tokenizers' BertNormalizer,
 * BertPreTokenizer, WordPiece model and added-token splitter (tokenizers 0.23).
 *
 * Pipeline for one text: validate UTF-8; cut the raw text at written special
 * tokens ("[MASK]" ...), which are kept whole; normalize each piece between
 * them into a code point array in which every code point remembers the byte
 * span of the original character it came from; split into words on
 * whitespace and punctuation; WordPiece each word against the vocab hash. */
#include "tokenizer.h"

#include "file_io.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

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

static int tok_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int tok_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- Unicode: the fast tokenizer's view ----
 *
 * tokenizers classifies characters with the `unicode_categories` crate, whose
 * tables are Unicode 8.0, and decomposes with `unicode-normalization-alignments`,
 * whose tables are Unicode 9.0; lowercasing and White_Space come from Rust's
 * std (current Unicode). utf8proc is Unicode 15. A character assigned after
 * 8.0 is therefore unassigned (Cn) to the fast tokenizer's category tests, and
 * Cn is never dropped by clean_text (its "control" test is Cc/Cf/Co only:
 * measured over all 1.1M code points). That makes newer Cf characters kept,
 * newer punctuation not split off, newer Mn marks not stripped, and, for
 * characters after 9.0, no decomposition and combining class 0 in NFD.
 *
 * Rather than ship old Unicode tables we take utf8proc's answer and correct
 * it with the list below: the ranges of characters assigned after Unicode 8.0
 * (with the version that assigned them) whose utf8proc category is Cf, Mn or
 * P*, or that have a nonzero combining class or a canonical decomposition;
 * ranges may span code points still unassigned in Unicode 15. Generated from
 * perl's Unicode::UCD Age property and utf8proc, and verified by sweeping every
 * code point through tokenizers 0.23.3 (tests/test_tokenizer.py repeats the
 * sweep against this code). */
typedef struct {
    int32_t lo, hi;
    int32_t version; /* the Unicode major version that assigned them */
} tok_age_range;

static const tok_age_range tok_post_unicode8[] = {
    {0x061D, 0x061D, 14},   {0x07FD, 0x07FD, 11},   {0x0890, 0x089F, 14},   {0x08CA, 0x08D2, 14},
    {0x08D3, 0x08D3, 11},   {0x08D4, 0x08E2, 9},    {0x09FD, 0x09FD, 10},   {0x09FE, 0x09FE, 11},
    {0x0A76, 0x0A76, 11},   {0x0AFA, 0x0AFF, 10},   {0x0B55, 0x0B55, 13},   {0x0C04, 0x0C04, 11},
    {0x0C3C, 0x0C3C, 14},   {0x0C77, 0x0C77, 12},   {0x0C84, 0x0C84, 11},   {0x0D00, 0x0D00, 10},
    {0x0D3B, 0x0D3C, 10},   {0x0D81, 0x0D81, 13},   {0x0EBA, 0x0EBA, 12},   {0x0ECE, 0x0ECE, 15},
    {0x1715, 0x1715, 14},   {0x180F, 0x180F, 14},   {0x1ABF, 0x1AC0, 13},   {0x1AC1, 0x1ACE, 14},
    {0x1B7D, 0x1B7E, 14},   {0x1DF6, 0x1DF9, 10},   {0x1DFA, 0x1DFA, 14},   {0x1DFB, 0x1DFB, 9},
    {0x2E43, 0x2E44, 9},    {0x2E45, 0x2E49, 10},   {0x2E4A, 0x2E4E, 11},   {0x2E4F, 0x2E4F, 12},
    {0x2E52, 0x2E52, 13},   {0x2E53, 0x2E5D, 14},   {0xA82C, 0xA82C, 13},   {0xA8C5, 0xA8C5, 9},
    {0xA8FF, 0xA8FF, 11},   {0x10D24, 0x10D27, 11}, {0x10EAB, 0x10EAD, 13}, {0x10EFD, 0x10EFF, 15},
    {0x10F46, 0x10F50, 11}, {0x10F55, 0x10F59, 11}, {0x10F82, 0x10F89, 14}, {0x11070, 0x11070, 14},
    {0x11073, 0x11074, 14}, {0x110C2, 0x110C2, 14}, {0x110CD, 0x110CD, 11}, {0x111CF, 0x111CF, 13},
    {0x1123E, 0x1123E, 9},  {0x11241, 0x11241, 15}, {0x1133B, 0x1133B, 11}, {0x11438, 0x1143F, 9},
    {0x11442, 0x11444, 9},  {0x11446, 0x11446, 9},  {0x1144B, 0x1144F, 9},  {0x1145A, 0x1145A, 13},
    {0x1145B, 0x1145D, 9},  {0x1145E, 0x1145E, 11}, {0x11660, 0x1166C, 9},  {0x116B9, 0x116B9, 14},
    {0x1182F, 0x11837, 11}, {0x11839, 0x1183B, 11}, {0x11938, 0x1193E, 13}, {0x11943, 0x11946, 13},
    {0x119D4, 0x119DB, 12}, {0x119E0, 0x119E0, 12}, {0x119E2, 0x119E2, 12}, {0x11A01, 0x11A0A, 10},
    {0x11A33, 0x11A38, 10}, {0x11A3B, 0x11A47, 10}, {0x11A51, 0x11A56, 10}, {0x11A59, 0x11A5B, 10},
    {0x11A8A, 0x11A96, 10}, {0x11A98, 0x11A9C, 10}, {0x11A9E, 0x11AA2, 10}, {0x11B00, 0x11B09, 15},
    {0x11C30, 0x11C3D, 9},  {0x11C3F, 0x11C3F, 9},  {0x11C41, 0x11C45, 9},  {0x11C70, 0x11C71, 9},
    {0x11C92, 0x11CA7, 9},  {0x11CAA, 0x11CB0, 9},  {0x11CB2, 0x11CB3, 9},  {0x11CB5, 0x11CB6, 9},
    {0x11D31, 0x11D45, 10}, {0x11D47, 0x11D47, 10}, {0x11D90, 0x11D91, 11}, {0x11D95, 0x11D95, 11},
    {0x11D97, 0x11D97, 11}, {0x11EF3, 0x11EF4, 11}, {0x11EF7, 0x11EF8, 11}, {0x11F00, 0x11F01, 15},
    {0x11F36, 0x11F3A, 15}, {0x11F40, 0x11F4F, 15}, {0x11FFF, 0x11FFF, 12}, {0x12FF1, 0x12FF2, 14},
    {0x13430, 0x13438, 12}, {0x13439, 0x13440, 15}, {0x13447, 0x13455, 15}, {0x16E97, 0x16E9A, 11},
    {0x16F4F, 0x16F4F, 12}, {0x16FE2, 0x16FE2, 12}, {0x16FE4, 0x16FF1, 13}, {0x1CF00, 0x1CF46, 14},
    {0x1E000, 0x1E02A, 9},  {0x1E08F, 0x1E08F, 15}, {0x1E130, 0x1E136, 12}, {0x1E2AE, 0x1E2AE, 14},
    {0x1E2EC, 0x1E2EF, 12}, {0x1E4EC, 0x1E4EF, 15}, {0x1E944, 0x1E94A, 9},  {0x1E95E, 0x1E95F, 9},
};

/* 1 if c is in the list above and was assigned after Unicode `version`. */
static int tok_assigned_after(int32_t c, int version) {
    size_t lo = 0, hi = sizeof(tok_post_unicode8) / sizeof(tok_post_unicode8[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < tok_post_unicode8[mid].lo)
            hi = mid;
        else if (c > tok_post_unicode8[mid].hi)
            lo = mid + 1;
        else
            return tok_post_unicode8[mid].version > version;
    }
    return 0;
}

/* General category as the fast tokenizer's Unicode 8.0 tables have it. */
static int tok_category(int32_t c) {
    /* Characters whose category changed between 8.0 and 15.0. */
    switch (c) {
    case 0x111C9: /* SHARADA SANDHI MARK: Po in 8.0, Mn since 11.0 */
    case 0x166D:  /* CANADIAN SYLLABICS CHI SIGN: Po in 8.0, So since 12.0 */
        return UTF8PROC_CATEGORY_PO;
    case 0x1734: /* HANUNOO SIGN PAMUDPOD: Mn in 8.0, Mc since 14.0 */
        return UTF8PROC_CATEGORY_MN;
    case 0x1885: /* MONGOLIAN LETTER ALI GALI BALUDA: Lo in 8.0, Mn since 9.0 */
    case 0x1886:
        return UTF8PROC_CATEGORY_LO;
    case 0xA9BD: /* JAVANESE CONSONANT SIGN KERET: Mc in 8.0, Mn since 12.0 */
        return UTF8PROC_CATEGORY_MC;
    default:
        break;
    }
    int cat = (int)utf8proc_category(c);
    if ((cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_CF ||
         (cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO)) &&
        tok_assigned_after(c, 8))
        return UTF8PROC_CATEGORY_CN;
    return cat;
}

/* Rust's char::is_whitespace (White_Space): Zs, Zl, Zp and the C0/C1 spaces. */
static int tok_is_whitespace(int32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    if (c == 0x85) return 1;
    int cat = (int)utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
           cat == UTF8PROC_CATEGORY_ZP;
}

/* clean_text's removal test: NUL, U+FFFD and "other" (Cc, Cf, Co; Cn is kept),
 * tab/newline/CR excepted since they become spaces. */
static int tok_is_dropped(int32_t c) {
    if (c < 0x80) return c == 0x7F || (c < 0x20 && c != '\t' && c != '\n' && c != '\r');
    if (c == 0xFFFD) return 1;
    int cat = tok_category(c);
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
           cat == UTF8PROC_CATEGORY_CO;
}

/* BERT's "Chinese character" blocks, exactly as tokenizers lists them
 * (including its 0x2B920 lower bound for Extension E). */
static int tok_is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* BertPreTokenizer's punctuation: all ASCII symbols plus Unicode P*. */
static int tok_is_punct(int32_t c) {
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    int cat = tok_category(c);
    return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

static int tok_is_mark_nonspacing(int32_t c) {
    return c >= 0x80 && tok_category(c) == UTF8PROC_CATEGORY_MN;
}

/* Canonical combining class in the 9.0 normalization tables. */
static int tok_ccc(int32_t c) {
    if (c < 0x300) return 0;
    int ccc = utf8proc_get_property(c)->combining_class;
    return ccc && tok_assigned_after(c, 9) ? 0 : ccc;
}

/* Lowercase mappings Rust's std has and utf8proc 2.8 (Unicode 15) lacks:
 * characters added in Unicode 16 and 17, found by the code point sweep. */
typedef struct {
    int32_t lo, hi, delta;
} tok_case_range;

static const tok_case_range tok_newer_lower[] = {
    {0x1C89, 0x1C89, 1},      {0xA7CB, 0xA7CB, 0x0264 - 0xA7CB},
    {0xA7CC, 0xA7CC, 1},      {0xA7CE, 0xA7CE, 1},
    {0xA7D2, 0xA7D2, 1},      {0xA7D4, 0xA7D4, 1},
    {0xA7DA, 0xA7DA, 1},      {0xA7DC, 0xA7DC, 0x019B - 0xA7DC},
    {0x10D50, 0x10D65, 0x20}, {0x16EA0, 0x16EB8, 0x1B},
};

/* Rust's char::to_lowercase: the simple mapping, except U+0130 whose full
 * (unconditional SpecialCasing) lowercase is two characters. Returns the
 * count written to out (1 or 2). */
static int tok_lower(int32_t c, int32_t out[2]) {
    if (c < 0x80) {
        out[0] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        return 1;
    }
    if (c == 0x130) {
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    int32_t l = utf8proc_tolower(c);
    if (l == c) {
        for (size_t i = 0; i < sizeof(tok_newer_lower) / sizeof(tok_newer_lower[0]); i++)
            if (c >= tok_newer_lower[i].lo && c <= tok_newer_lower[i].hi) {
                l = c + tok_newer_lower[i].delta;
                break;
            }
    }
    out[0] = l;
    return 1;
}

/* Canonical decomposition (NFD of one character) as the 9.0 tables have it. */
static int tok_decompose(int32_t c, int32_t *dst, int cap) {
    if (c < 0xC0 || tok_assigned_after(c, 9)) {
        dst[0] = c;
        return 1;
    }
    int boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(c, dst, cap, UTF8PROC_DECOMPOSE, &boundclass);
    if (n <= 0 || n > cap) {
        dst[0] = c;
        return 1;
    }
    return (int)n;
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
static int32_t tok_lookup(const tok_tokenizer *tok, const char *prefix, size_t plen, const char *s,
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

/* ---- encoding ---- */

/* Scratch for one text: the normalized code points, each with the byte span
 * [os, oe) of the original character it came from, and their UTF-8 form. */
typedef struct {
    int32_t *cp, *os, *oe;
    uint8_t *head; /* 1: first code point of its character's decomposition */
    size_t n, cap;
    /* Room to sort one run of combining marks (cap entries each). */
    int32_t *t_cp, *t_os, *t_oe;
    uint8_t *t_head, *t_ccc;
    char *utf8;
    size_t *boff; /* n + 1: byte offset of each code point in utf8 */
    size_t ucap, bcap;
} tok_work;

static void tok_work_free(tok_work *w) {
    free(w->cp);
    free(w->os);
    free(w->oe);
    free(w->head);
    free(w->t_cp);
    free(w->t_os);
    free(w->t_oe);
    free(w->t_head);
    free(w->t_ccc);
    free(w->utf8);
    free(w->boff);
}

static int tok_grow(void **p, size_t n, size_t size) {
    void *q = realloc(*p, n * size);
    if (!q) return -1;
    *p = q;
    return 0;
}

static int tok_work_reserve(tok_work *w, size_t extra) {
    if (w->n + extra <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < w->n + extra)
        cap *= 2;
    if (tok_grow((void **)&w->cp, cap, sizeof(int32_t)) ||
        tok_grow((void **)&w->os, cap, sizeof(int32_t)) ||
        tok_grow((void **)&w->oe, cap, sizeof(int32_t)) || tok_grow((void **)&w->head, cap, 1) ||
        tok_grow((void **)&w->t_cp, cap, sizeof(int32_t)) ||
        tok_grow((void **)&w->t_os, cap, sizeof(int32_t)) ||
        tok_grow((void **)&w->t_oe, cap, sizeof(int32_t)) ||
        tok_grow((void **)&w->t_head, cap, 1) || tok_grow((void **)&w->t_ccc, cap, 1))
        return -1;
    w->cap = cap;
    return 0;
}

static void tok_work_push(tok_work *w, int32_t c, int32_t s, int32_t e, int head) {
    w->cp[w->n] = c;
    w->os[w->n] = s;
    w->oe[w->n] = e;
    w->head[w->n] = (uint8_t)head;
    w->n++;
}

/* Canonical ordering of the run w[i, j) of nonzero-class marks: a stable sort
 * by class (counting sort, so a long run of marks stays linear). The spans
 * are then dealt out as tokenizers' alignment does it: its NFD yields each
 * code point with a flag saying whether it starts a character's
 * decomposition, the flags travel with the code points through the sort, and
 * the result is aligned in order: every starting code point takes the next
 * original character's span, every other one the span before it. */
static void tok_reorder_run(tok_work *w, size_t i, size_t j) {
    size_t nh = 0;
    for (size_t a = i; a < j; a++) {
        w->t_ccc[a] = (uint8_t)tok_ccc(w->cp[a]);
        if (w->head[a]) {
            w->t_os[nh] = w->os[a];
            w->t_oe[nh] = w->oe[a];
            nh++;
        }
    }
    if (j - i <= 16) {
        /* Short runs (the usual one or two marks per letter) skip the counts. */
        for (size_t a = i; a < j; a++) {
            uint8_t key = w->t_ccc[a], hd = w->head[a];
            int32_t c = w->cp[a];
            size_t b = a;
            for (; b > i && w->t_ccc[b - 1] > key; b--) {
                w->t_ccc[b] = w->t_ccc[b - 1];
                w->t_cp[b] = w->t_cp[b - 1];
                w->t_head[b] = w->t_head[b - 1];
            }
            w->t_ccc[b] = key;
            w->t_cp[b] = c;
            w->t_head[b] = hd;
        }
    } else {
        size_t count[257] = {0};
        for (size_t a = i; a < j; a++)
            count[w->t_ccc[a] + 1]++;
        for (int k = 1; k < 257; k++)
            count[k] += count[k - 1];
        for (size_t a = i; a < j; a++) {
            size_t to = i + count[w->t_ccc[a]]++;
            w->t_cp[to] = w->cp[a];
            w->t_head[to] = w->head[a];
        }
    }
    size_t h = 0;
    for (size_t a = i; a < j; a++) {
        w->cp[a] = w->t_cp[a];
        w->head[a] = w->t_head[a];
        if (w->head[a]) {
            w->os[a] = w->t_os[h];
            w->oe[a] = w->t_oe[h];
            h++;
        } else {
            w->os[a] = a > 0 ? w->os[a - 1] : 0;
            w->oe[a] = a > 0 ? w->oe[a - 1] : 0;
        }
    }
}

static int tok_seq_reserve(tok_sequence *seq, int extra) {
    if (seq->len + extra <= seq->cap) return 0;
    int cap = seq->cap ? seq->cap : 32;
    while (cap < seq->len + extra)
        cap *= 2;
    int32_t *ids = realloc(seq->ids, (size_t)cap * sizeof(int32_t));
    if (ids) seq->ids = ids;
    int32_t *ty = realloc(seq->type_ids, (size_t)cap * sizeof(int32_t));
    if (ty) seq->type_ids = ty;
    int32_t *st = realloc(seq->start, (size_t)cap * sizeof(int32_t));
    if (st) seq->start = st;
    int32_t *en = realloc(seq->end, (size_t)cap * sizeof(int32_t));
    if (en) seq->end = en;
    int8_t *so = realloc(seq->source, (size_t)cap);
    if (so) seq->source = so;
    if (!ids || !ty || !st || !en || !so) return -1;
    seq->cap = cap;
    return 0;
}

static int tok_seq_push(tok_sequence *seq, int32_t id, int32_t type, int32_t s, int32_t e,
                        int8_t source) {
    if (tok_seq_reserve(seq, 1)) return -1;
    int i = seq->len++;
    seq->ids[i] = id;
    seq->type_ids[i] = type;
    seq->start[i] = s;
    seq->end[i] = e;
    seq->source[i] = source;
    return 0;
}

void tok_sequence_free(tok_sequence *seq) {
    if (!seq) return;
    free(seq->ids);
    free(seq->type_ids);
    free(seq->start);
    free(seq->end);
    free(seq->source);
    memset(seq, 0, sizeof(*seq));
}

/* BertNormalizer over text[lo, hi) into w (which it empties first). */
static int tok_normalize(const tok_tokenizer *tok, const char *text, size_t lo, size_t hi,
                         tok_work *w) {
    const int lower = tok->opt.lowercase, strip = tok->strip, chinese = tok->opt.tokenize_chinese;
    w->n = 0;
    int32_t dec[32];
    for (size_t p = lo; p < hi;) {
        int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)text + p, (utf8proc_ssize_t)(hi - p), &c);
        int32_t s = (int32_t)p, e = (int32_t)(p + (size_t)k);
        p += (size_t)k;
        if (tok_is_dropped(c)) continue;
        if (tok_is_whitespace(c)) c = ' ';
        if (tok_work_reserve(w, 34)) return -1;
        /* The padding spaces only separate words; their spans never reach a
         * token. The ideograph itself goes on through NFD (compatibility
         * ideographs decompose) and lowercasing like any character. */
        int pad = chinese && c >= 0x3400 && tok_is_chinese(c);
        if (pad) tok_work_push(w, ' ', s, e, 1);
        if (strip) {
            /* Decomposed now, reordered, filtered and lowercased below. */
            int m = tok_decompose(c, dec, 32);
            for (int i = 0; i < m; i++)
                tok_work_push(w, dec[i], s, e, i == 0);
        } else if (lower) {
            int32_t l[2];
            int m = tok_lower(c, l);
            for (int i = 0; i < m; i++)
                tok_work_push(w, l[i], s, e, i == 0);
        } else {
            tok_work_push(w, c, s, e, 1);
        }
        if (pad) tok_work_push(w, ' ', s, e, 1);
    }
    if (!strip) return 0;

    for (size_t i = 0; i < w->n;) {
        if (w->cp[i] < 0x300 || tok_ccc(w->cp[i]) == 0) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < w->n && w->cp[j] >= 0x300 && tok_ccc(w->cp[j]) != 0)
            j++;
        if (j - i > 1) tok_reorder_run(w, i, j);
        i = j;
    }
    /* Drop nonspacing marks, then lowercase (no mark can come out of a
     * lowercase mapping here: U+0130 was decomposed). */
    size_t o = 0;
    for (size_t i = 0; i < w->n; i++) {
        int32_t c = w->cp[i];
        if (tok_is_mark_nonspacing(c)) continue;
        if (lower) {
            int32_t l[2];
            tok_lower(c, l);
            c = l[0];
        }
        w->cp[o] = c;
        w->os[o] = w->os[i];
        w->oe[o] = w->oe[i];
        o++;
    }
    w->n = o;
    return 0;
}

/* The UTF-8 form of w's code points, for vocab lookups. */
static int tok_work_encode(tok_work *w) {
    if (w->n * 4 + 1 > w->ucap) {
        char *u = realloc(w->utf8, w->n * 4 + 1);
        if (!u) return -1;
        w->utf8 = u;
        w->ucap = w->n * 4 + 1;
    }
    if (w->n + 1 > w->bcap) {
        size_t *b = realloc(w->boff, (w->n + 1) * sizeof(size_t));
        if (!b) return -1;
        w->boff = b;
        w->bcap = w->n + 1;
    }
    size_t at = 0;
    for (size_t i = 0; i < w->n; i++) {
        w->boff[i] = at;
        at += (size_t)utf8proc_encode_char(w->cp[i], (utf8proc_uint8_t *)w->utf8 + at);
    }
    w->boff[w->n] = at;
    return 0;
}

/* WordPiece over the word w[wa, wb) (code point indices). */
static int tok_wordpiece(const tok_tokenizer *tok, const tok_work *w, size_t wa, size_t wb,
                         tok_sequence *out, int8_t source) {
    int first = out->len;
    if (tok->opt.max_input_chars > 0 && wb - wa > (size_t)tok->opt.max_input_chars) goto unknown;
    for (size_t start = wa; start < wb;) {
        size_t end = wb;
        const char *base = w->utf8 + w->boff[start];
        size_t plen = start > wa ? 2 : 0;
        int32_t id = -1;
        /* Skip ends whose piece is longer than any token without probing. */
        while (end > start && w->boff[end] - w->boff[start] + plen > tok->max_len)
            end--;
        for (; end > start; end--) {
            id = tok_lookup(tok, "##", plen, base, w->boff[end] - w->boff[start]);
            if (id >= 0) break;
        }
        if (id < 0) goto unknown;
        if (tok_seq_push(out, id, 0, w->os[start], w->oe[end - 1], source)) return -1;
        start = end;
    }
    return 0;
unknown:
    out->len = first;
    return tok_seq_push(out, tok->sp.unk, 0, w->os[wa], w->oe[wb - 1], source);
}

/* BertPreTokenizer + WordPiece over the normalized text in w. */
static int tok_words(const tok_tokenizer *tok, tok_work *w, tok_sequence *out, int8_t source) {
    if (w->n == 0) return 0;
    if (tok_work_encode(w)) return -1;
    size_t wa = 0;
    for (size_t i = 0; i < w->n; i++) {
        int32_t c = w->cp[i];
        int ws = tok_is_whitespace(c), punct = !ws && tok_is_punct(c);
        if (!ws && !punct) continue;
        if (i > wa && tok_wordpiece(tok, w, wa, i, out, source)) return -1;
        if (punct && tok_wordpiece(tok, w, i, i + 1, out, source)) return -1;
        wa = i + 1;
    }
    if (w->n > wa && tok_wordpiece(tok, w, wa, w->n, out, source)) return -1;
    return 0;
}

static int tok_check_utf8(const char *text, size_t len, const char *what, char *err,
                          size_t errlen) {
    if (len > INT32_MAX) return tok_fail(err, errlen, TOK_ERR_ARG, "%s is longer than 2 GiB", what);
    for (size_t p = 0; p < len;) {
        int32_t c;
        /* Plain ASCII needs no decoding. */
        if ((unsigned char)text[p] < 0x80) {
            p++;
            continue;
        }
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)text + p, (utf8proc_ssize_t)(len - p), &c);
        if (k < 0)
            return tok_fail(err, errlen, TOK_ERR_UTF8, "%s is not valid UTF-8 at byte %zu", what,
                            p);
        p += (size_t)k;
    }
    return TOK_OK;
}

/* Written added token at text[p], as the added-token splitter matches them
 * on the raw text (longest first): its id and length, or -1. */
static int32_t tok_special_at(const tok_tokenizer *tok, const char *text, size_t len, size_t p,
                              size_t *slen) {
    for (int i = 0; i < tok->n_added; i++) {
        const tok_added *a = &tok->added[i];
        if (len - p >= a->len && memcmp(text + p, a->text, a->len) == 0) {
            *slen = a->len;
            return a->id;
        }
    }
    return -1;
}

static int tok_encode_text(const tok_tokenizer *tok, const char *text, size_t len,
                           tok_sequence *out, int8_t source, tok_work *w) {
    size_t seg = 0;
    for (size_t p = 0; p < len;) {
        if (tok->only_first >= 0) { /* usually '[': memchr is far faster */
            const char *hit = memchr(text + p, tok->only_first, len - p);
            p = hit ? (size_t)(hit - text) : len;
        } else {
            while (p < len && !tok->first_byte[(uint8_t)text[p]])
                p++;
        }
        if (p == len) break;
        size_t slen;
        int32_t id = tok_special_at(tok, text, len, p, &slen);
        if (id < 0) {
            p++;
            continue;
        }
        if (p > seg) {
            if (tok_normalize(tok, text, seg, p, w) || tok_words(tok, w, out, source)) return -1;
        }
        if (tok_seq_push(out, id, 0, (int32_t)p, (int32_t)(p + slen), source)) return -1;
        p += slen;
        seg = p;
    }
    if (len > seg) {
        if (tok_normalize(tok, text, seg, len, w) || tok_words(tok, w, out, source)) return -1;
    }
    return 0;
}

int tok_encode_plain(const tok_tokenizer *tok, const char *text, size_t len, tok_sequence *out,
                     char *err, size_t errlen) {
    if (!tok || !out || (!text && len)) return tok_fail(err, errlen, TOK_ERR_ARG, "no text");
    int rc = tok_check_utf8(text, len, "text", err, errlen);
    if (rc) return rc;
    tok_work w = {0};
    if (tok_encode_text(tok, text, len, out, 0, &w))
        rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "out of memory");
    tok_work_free(&w);
    return rc;
}

char *tok_normalize_text(const tok_tokenizer *tok, const char *text, size_t len, size_t *out_len,
                         char *err, size_t errlen) {
    if (!tok || !out_len || (!text && len)) {
        tok_fail(err, errlen, TOK_ERR_ARG, "no text");
        return NULL;
    }
    if (tok_check_utf8(text, len, "text", err, errlen)) return NULL;
    tok_work w = {0};
    char *res = NULL;
    if (tok_normalize(tok, text, 0, len, &w) || tok_work_encode(&w) ||
        !(res = malloc(w.boff[w.n] + 1))) {
        tok_fail(err, errlen, TOK_ERR_NOMEM, "out of memory");
    } else {
        memcpy(res, w.utf8, w.boff[w.n]);
        res[w.boff[w.n]] = 0;
        *out_len = w.boff[w.n];
    }
    tok_work_free(&w);
    return res;
}

/* Keeps n tokens of seq: the first n, or the last n when truncating left. */
static void tok_keep(tok_sequence *seq, int n, tok_side side) {
    if (n >= seq->len) return;
    if (side == TOK_SIDE_LEFT) {
        int drop = seq->len - n;
        memmove(seq->ids, seq->ids + drop, (size_t)n * sizeof(int32_t));
        memmove(seq->type_ids, seq->type_ids + drop, (size_t)n * sizeof(int32_t));
        memmove(seq->start, seq->start + drop, (size_t)n * sizeof(int32_t));
        memmove(seq->end, seq->end + drop, (size_t)n * sizeof(int32_t));
        memmove(seq->source, seq->source + drop, (size_t)n);
    }
    seq->len = n;
}

/* tokenizers' truncate_encodings, max_len counting the special tokens. */
static int tok_truncate(tok_sequence *a, tok_sequence *b, int max_len, tok_truncation trunc,
                        tok_side side, char *err, size_t errlen) {
    int added = b ? 3 : 2;
    int n1 = a->len, n2 = b ? b->len : 0;
    if (max_len <= 0 || n1 + n2 + added <= max_len) return TOK_OK;
    if (trunc == TOK_TRUNC_NONE)
        return tok_fail(err, errlen, TOK_ERR_TOO_LONG,
                        "input is %d tokens long, over the limit of %d", n1 + n2 + added, max_len);
    if (max_len < added)
        return tok_fail(err, errlen, TOK_ERR_ARG,
                        "max_len %d leaves no room for the %d special tokens", max_len, added);
    int room = max_len - added, to_remove = n1 + n2 - room;
    switch (trunc) {
    case TOK_TRUNC_LONGEST_FIRST:
        if (!b) {
            tok_keep(a, room, side);
        } else {
            /* Shorten the longer one down to the shorter; if both must give,
             * split the room evenly, the odd token going to the longer one. */
            int swap = n1 > n2;
            int s1 = swap ? n2 : n1, s2;
            s2 = s1 > room ? s1 : (s1 > room - s1 ? s1 : room - s1);
            if (s1 + s2 > room) {
                s1 = room / 2;
                s2 = s1 + room % 2;
            }
            tok_keep(a, swap ? s2 : s1, side);
            tok_keep(b, swap ? s1 : s2, side);
        }
        return TOK_OK;
    case TOK_TRUNC_ONLY_FIRST:
    case TOK_TRUNC_ONLY_SECOND: {
        tok_sequence *t = trunc == TOK_TRUNC_ONLY_FIRST ? a : b;
        if (!t)
            return tok_fail(err, errlen, TOK_ERR_ARG,
                            "input is over max_len %d and only_second truncation has no text "
                            "pair to shorten",
                            max_len);
        if (t->len <= to_remove)
            return tok_fail(err, errlen, TOK_ERR_TOO_LONG,
                            "the %s text is too short (%d tokens) to remove the %d tokens over "
                            "max_len %d",
                            t == a ? "first" : "second", t->len, to_remove, max_len);
        tok_keep(t, t->len - to_remove, side);
        return TOK_OK;
    }
    default:
        return tok_fail(err, errlen, TOK_ERR_ARG, "unknown truncation strategy %d", (int)trunc);
    }
}

int tok_encode(const tok_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen,
               int max_len, tok_truncation trunc, tok_side side, tok_sequence *out, char *err,
               size_t errlen) {
    if (!tok || !out || (!a && alen) || (!b && blen))
        return tok_fail(err, errlen, TOK_ERR_ARG, "tok_encode: missing argument");
    out->len = 0;
    int rc = tok_check_utf8(a, alen, "text", err, errlen);
    if (!rc && b) rc = tok_check_utf8(b, blen, "text_pair", err, errlen);
    if (rc) return rc;
    tok_work w = {0};
    tok_sequence sa = {0}, sb = {0};
    if (tok_encode_text(tok, a, alen, &sa, 0, &w) ||
        (b && tok_encode_text(tok, b, blen, &sb, 1, &w))) {
        rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    rc = tok_truncate(&sa, b ? &sb : NULL, max_len, trunc, side, err, errlen);
    if (rc) goto cleanup;
    if (tok_seq_reserve(out, sa.len + sb.len + 3)) {
        rc = tok_fail(err, errlen, TOK_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    tok_seq_push(out, tok->sp.cls, 0, 0, 0, -1);
    for (int i = 0; i < sa.len; i++)
        tok_seq_push(out, sa.ids[i], 0, sa.start[i], sa.end[i], 0);
    tok_seq_push(out, tok->sp.sep, 0, 0, 0, -1);
    if (b) {
        for (int i = 0; i < sb.len; i++)
            tok_seq_push(out, sb.ids[i], 1, sb.start[i], sb.end[i], 1);
        tok_seq_push(out, tok->sp.sep, 1, 0, 0, -1);
    }
cleanup:
    tok_work_free(&w);
    tok_sequence_free(&sa);
    tok_sequence_free(&sb);
    return rc;
}

/* ---- decoding ---- */

/* Replaces every pat in s[0, *len) by the no-longer rep, left to right, in
 * place (str::replace / str.replace semantics). */
static void tok_replace_all(char *s, size_t *len, const char *pat, const char *rep) {
    size_t pl = strlen(pat), rl = strlen(rep), o = 0;
    for (size_t i = 0; i < *len;) {
        if (*len - i >= pl && memcmp(s + i, pat, pl) == 0) {
            memmove(s + o, rep, rl);
            o += rl;
            i += pl;
        } else {
            s[o++] = s[i++];
        }
    }
    *len = o;
    s[o] = 0;
}

char *tok_decode(const tok_tokenizer *tok, const int32_t *ids, int n, int skip_special,
                 int cleanup_spaces) {
    /* Every piece is at most its token plus a space. */
    size_t cap = 1;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < tok->n) cap += tok->tok_len[ids[i]] + 1;
    char *outs = malloc(cap);
    if (!outs) return NULL;
    size_t len = 0;
    int count = 0;
    char *piece = malloc(tok->max_len + 2);
    if (!piece) {
        free(outs);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        /* An id with no token (out of range, or a duplicate line's earlier
         * id) decodes to nothing, as in tokenizers. */
        if (id < 0 || id >= tok->n || tok->shadowed[id]) continue;
        if (skip_special && tok_is_special(tok, id)) continue;
        const char *t = tok->pool + tok->tok_off[id];
        size_t tl = tok->tok_len[id], pl = 0;
        /* The WordPiece decoder: "##" glues to the previous token, anything
         * else after the first gets a space; then its per-token cleanup. */
        if (count > 0 && tl >= 2 && t[0] == '#' && t[1] == '#') {
            t += 2;
            tl -= 2;
        } else if (count > 0) {
            piece[pl++] = ' ';
        }
        memcpy(piece + pl, t, tl);
        pl += tl;
        piece[pl] = 0;
        static const char *rules[11][2] = {{" .", "."},     {" ?", "?"},           {" !", "!"},
                                           {" ,", ","},     {" ' ", "'"},          {" n't", "n't"},
                                           {" 'm", "'m"},   {" do not", " don't"}, {" 's", "'s"},
                                           {" 've", "'ve"}, {" 're", "'re"}};
        for (int r = 0; r < 11; r++)
            tok_replace_all(piece, &pl, rules[r][0], rules[r][1]);
        memcpy(outs + len, piece, pl);
        len += pl;
        count++;
    }
    outs[len] = 0;
    free(piece);
    if (cleanup_spaces) {
        /* transformers' clean_up_tokenization over the joined text. */
        static const char *rules[10][2] = {
            {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
            {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
        for (int r = 0; r < 10; r++)
            tok_replace_all(outs, &len, rules[r][0], rules[r][1]);
    }
    return outs;
}
