/* tok_unicode: Unicode as the fast tokenizer sees it. See tok_internal.h. */
#include "tok_internal.h"

#include <utf8proc.h>

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
int tok_is_whitespace(int32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    if (c == 0x85) return 1;
    int cat = (int)utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
           cat == UTF8PROC_CATEGORY_ZP;
}

/* clean_text's removal test: NUL, U+FFFD and "other" (Cc, Cf, Co; Cn is kept),
 * tab/newline/CR excepted since they become spaces. */
int tok_is_dropped(int32_t c) {
    if (c < 0x80) return c == 0x7F || (c < 0x20 && c != '\t' && c != '\n' && c != '\r');
    if (c == 0xFFFD) return 1;
    int cat = tok_category(c);
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
           cat == UTF8PROC_CATEGORY_CO;
}

/* BERT's "Chinese character" blocks, exactly as tokenizers lists them
 * (including its 0x2B920 lower bound for Extension E). */
int tok_is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* BertPreTokenizer's punctuation: all ASCII symbols plus Unicode P*. */
int tok_is_punct(int32_t c) {
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    int cat = tok_category(c);
    return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

int tok_is_mark_nonspacing(int32_t c) {
    return c >= 0x80 && tok_category(c) == UTF8PROC_CATEGORY_MN;
}

/* Canonical combining class in the 9.0 normalization tables. */
int tok_ccc(int32_t c) {
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
int tok_lower(int32_t c, int32_t out[2]) {
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
int tok_decompose(int32_t c, int32_t *dst, int cap) {
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
