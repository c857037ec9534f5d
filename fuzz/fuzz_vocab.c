/* fuzz_vocab: tok_load_vocab_buffer over arbitrary bytes, then a fixed text
 * (and pair) encoded and decoded with whatever vocabulary loaded.
 *
 * A vocab.txt is outside input (it ships with each checkpoint). A loaded
 * tokenizer must be usable whatever the file held: missing special tokens,
 * duplicate lines, CRLF, empty lines, huge lines. The fixed text mixes
 * cases, accents, CJK, punctuation and written special tokens so that every
 * normalizer and WordPiece path meets the fuzzed vocabulary. */
#include "fuzz_common.h"
#include "tokenizer.h"

#include <string.h>

static const char TEXT_A[] = "Hello [MASK] wörld!! naïve 中文字 don't ##x [SEP] a\tb "
                             "\xf0\x9f\xa4\x97";
static const char TEXT_B[] = "unaffable supercalifragilistic [UNK] 42.5% ÉCOLE";

static void use(const tok_tokenizer *tok, int max_len, tok_truncation trunc, int pair) {
    tok_sequence seq = {0};
    char err[512];
    int rc = tok_encode(tok, TEXT_A, sizeof(TEXT_A) - 1, pair ? TEXT_B : NULL,
                        pair ? sizeof(TEXT_B) - 1 : 0, max_len, trunc, TOK_SIDE_RIGHT, &seq, err,
                        sizeof(err));
    FUZZ_CHECK(rc != TOK_ERR_UTF8, "fixed valid text refused as UTF-8: %s", err);
    if (rc == TOK_OK) {
        int n = tok_vocab_size(tok);
        FUZZ_CHECK(seq.len <= seq.cap, "len %d > cap %d", seq.len, seq.cap);
        if (max_len > 0) FUZZ_CHECK(seq.len <= max_len, "len %d over %d", seq.len, max_len);
        for (int i = 0; i < seq.len; i++) {
            /* A vocab without [UNK] or [CLS] may have to encode with ids it
             * does not hold; what must never happen is an id that maps to
             * memory outside the vocab. */
            if (seq.ids[i] >= 0 && seq.ids[i] < n)
                FUZZ_CHECK(tok_id_to_token(tok, seq.ids[i]) != NULL, "id %d has no token",
                           seq.ids[i]);
            else
                FUZZ_CHECK(tok_id_to_token(tok, seq.ids[i]) == NULL,
                           "id %d outside [0, %d) has a token", seq.ids[i], n);
        }
        for (int skip = 0; skip < 2; skip++) {
            char *text = tok_decode(tok, seq.ids, seq.len, skip, !skip);
            FUZZ_CHECK(text != NULL, "tok_decode returned NULL");
            free(text);
        }
    }
    tok_sequence_free(&seq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Exact-size, unterminated copy: the loader must respect len. */
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    tok_options opt;
    tok_options_default(&opt);
    /* The last byte also varies the options, so cased and accent-keeping
     * normalizers meet odd vocabularies too. */
    if (size > 0) {
        uint8_t o = data[size - 1];
        opt.lowercase = o & 1;
        opt.strip_accents = (int)((o >> 1) % 3) - 1;
        opt.tokenize_chinese = (o >> 3) & 1;
    }
    tok_tokenizer *tok = NULL;
    char err[512];
    err[0] = 0;
    int rc = tok_load_vocab_buffer(buf, size, &opt, &tok, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (rc != TOK_OK) {
        FUZZ_CHECK(tok == NULL, "failed load returned a tokenizer");
        FUZZ_CHECK(err[0] != 0, "failed load (%d) without a message", rc);
        free(buf);
        return 0;
    }
    /* The tokenizer must not keep pointers into the caller's buffer. */
    memset(buf, 0xa5, size);
    free(buf);
    int n = tok_vocab_size(tok);
    FUZZ_CHECK(n >= 0, "vocab size %d", n);
    for (int i = 0; i < n; i++) {
        const char *t = tok_id_to_token(tok, i);
        FUZZ_CHECK(t != NULL, "id %d of %d has no token", i, n);
        int32_t back = tok_token_to_id(tok, t, strlen(t));
        /* Duplicate lines map a token to one of its ids; it must be one that
         * holds the same text. (A miss is not checked: a line holding a NUL
         * byte reads back shorter through this const char * API.) */
        if (back >= 0)
            FUZZ_CHECK(back < n && strcmp(tok_id_to_token(tok, back), t) == 0,
                       "token %d ('%.40s') looks up as %d", i, t, back);
    }
    FUZZ_CHECK(tok_id_to_token(tok, -1) == NULL && tok_id_to_token(tok, n) == NULL,
               "out-of-range ids have tokens");
    use(tok, 0, TOK_TRUNC_NONE, 0);
    use(tok, 0, TOK_TRUNC_NONE, 1);
    use(tok, 7, TOK_TRUNC_LONGEST_FIRST, 1);
    tok_free(tok);
    return 0;
}
