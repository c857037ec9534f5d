/* tokenizer: BERT WordPiece, matching Hugging Face tokenizers' BertNormalizer,
 * BertPreTokenizer, WordPiece model and added-token splitter (tokenizers 0.23).
 *
 * Pipeline for one text: validate UTF-8; cut the raw text at written special
 * tokens ("[MASK]" ...), which are kept whole; normalize each piece between
 * them into a code point array in which every code point remembers the byte
 * span of the original character it came from; split into words on
 * whitespace and punctuation; WordPiece each word against the vocab hash. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

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
