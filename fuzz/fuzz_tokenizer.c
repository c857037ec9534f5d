/* fuzz_tokenizer: tok_encode / tok_encode_plain / tok_decode over arbitrary
 * bytes, with the real bert-base-uncased vocab loaded once.
 *
 * Input layout: byte 0 picks the call (bit 0: pair, bits 1-2: truncation
 * mode, bit 3: truncation side, bits 4-7: index into a table
 * of max_len values, 0 = unlimited), byte 1
 * where a pair is split (as a fraction of the rest), the rest is the text.
 * Inputs shorter than two bytes are a single text with no options.
 *
 * Oracles: TOK_ERR_UTF8 exactly when the text is not valid UTF-8 (our own
 * validator); on success ids in the vocab, [CLS] first and [SEP] closing each
 * segment, offsets inside their source text on character boundaries, the
 * length limit respected, decode returning a string. */
#include "fuzz_common.h"
#include "tokenizer.h"

#include <string.h>

static tok_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    static const char *const rel[] = {
        "../../../shared/vocab/bert-base-uncased/vocab.txt", /* from fuzz/out/ */
        "../../shared/vocab/bert-base-uncased/vocab.txt",    /* from fuzz/ */
        "../shared/vocab/bert-base-uncased/vocab.txt",       /* from the repo root */
        NULL};
    char *path = fuzz_locate("BERT_VOCAB", rel);
    if (!path) abort();
    tok_options opt;
    tok_options_default(&opt);
    char err[512];
    if (tok_load_vocab(path, &opt, &g_tok, err, sizeof(err)) != TOK_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, err);
        abort();
    }
    free(path);
    return 0;
}

static void check_sequence(const tok_sequence *s, const uint8_t *a, size_t alen, const uint8_t *b,
                           size_t blen, int pair, int max_len, tok_truncation trunc) {
    const tok_special_ids *sp = tok_specials(g_tok);
    int vocab = tok_vocab_size(g_tok);
    FUZZ_CHECK(s->len >= (pair ? 3 : 2), "only %d tokens", s->len);
    FUZZ_CHECK(s->len <= s->cap, "len %d > cap %d", s->len, s->cap);
    if (max_len > 0)
        FUZZ_CHECK(s->len <= max_len, "len %d over max_len %d (truncation %d)", s->len, max_len,
                   (int)trunc);
    FUZZ_CHECK(s->ids[0] == sp->cls, "first id %d is not [CLS]", s->ids[0]);
    FUZZ_CHECK(s->ids[s->len - 1] == sp->sep, "last id %d is not [SEP]", s->ids[s->len - 1]);
    int seps = 0;
    for (int i = 0; i < s->len; i++) {
        FUZZ_CHECK(s->ids[i] >= 0 && s->ids[i] < vocab, "id %d out of vocab", s->ids[i]);
        FUZZ_CHECK(tok_id_to_token(g_tok, s->ids[i]) != NULL, "id %d has no token", s->ids[i]);
        FUZZ_CHECK(s->source[i] >= -1 && s->source[i] <= (pair ? 1 : 0), "source %d", s->source[i]);
        FUZZ_CHECK(s->type_ids[i] == 0 || (pair && s->type_ids[i] == 1), "type id %d",
                   s->type_ids[i]);
        if (s->source[i] < 0) {
            if (s->ids[i] == sp->sep) seps++;
            continue;
        }
        const uint8_t *src = s->source[i] == 0 ? a : b;
        size_t n = s->source[i] == 0 ? alen : blen;
        FUZZ_CHECK(s->type_ids[i] == s->source[i], "token %d: type %d but source %d", i,
                   s->type_ids[i], s->source[i]);
        FUZZ_CHECK(s->start[i] >= 0 && s->start[i] <= s->end[i] && (size_t)s->end[i] <= n,
                   "token %d offsets [%d, %d) outside a %zu-byte text", i, s->start[i], s->end[i],
                   n);
        FUZZ_CHECK(fuzz_utf8_boundary(src, n, (size_t)s->start[i]) &&
                       fuzz_utf8_boundary(src, n, (size_t)s->end[i]),
                   "token %d offsets [%d, %d) split a character", i, s->start[i], s->end[i]);
    }
    FUZZ_CHECK(seps >= (pair ? 2 : 1), "%d [SEP] for %s", seps, pair ? "a pair" : "one text");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t ctrl = 0, splitb = 0;
    if (size >= 2) {
        ctrl = data[0];
        splitb = data[1];
        data += 2;
        size -= 2;
    }
    int pair = ctrl & 1;
    tok_truncation trunc = (tok_truncation)((ctrl >> 1) & 3);
    tok_side side = (ctrl >> 3) & 1 ? TOK_SIDE_LEFT : TOK_SIDE_RIGHT;
    /* Small limits reach the cases where the special tokens barely fit. */
    static const int limits[16] = {0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64};
    int max_len = limits[ctrl >> 4];
    size_t alen = pair ? size * splitb / 255 : size;
    /* Separate exact-size copies: a read past either text's end is an ASan
     * report, not a silent read of the other half. */
    uint8_t *a = malloc(alen ? alen : 1);
    uint8_t *b = pair ? malloc(size - alen ? size - alen : 1) : NULL;
    size_t blen = pair ? size - alen : 0;
    if (!a || (pair && !b)) goto cleanup;
    memcpy(a, data, alen);
    if (pair) memcpy(b, data + alen, blen);

    int valid = fuzz_utf8_valid(a, alen) && (!pair || fuzz_utf8_valid(b, blen));
    tok_sequence seq = {0};
    char err[512];
    err[0] = 0;
    int rc = tok_encode(g_tok, (const char *)a, alen, (const char *)b, blen, max_len, trunc, side,
                        &seq, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (!valid) {
        FUZZ_CHECK(rc == TOK_ERR_UTF8, "invalid UTF-8 gave status %d, not TOK_ERR_UTF8", rc);
    } else {
        FUZZ_CHECK(rc != TOK_ERR_UTF8, "valid UTF-8 refused: %s", err);
        if (rc != TOK_OK) {
            /* Refusals are allowed only when the text really is over the
             * limit (checked below) and: truncation is off (TOO_LONG); the
             * limit cannot hold the special tokens, or only_second is asked
             * of a single text (TOO_LONG or ARG); only_first/only_second run
             * out of tokens (TOO_LONG). Longest-first otherwise always fits. */
            int added = pair ? 3 : 2;
            int degenerate = max_len < added || (trunc == TOK_TRUNC_ONLY_SECOND && !pair);
            FUZZ_CHECK(max_len > 0, "status %d without a limit: %s", rc, err);
            FUZZ_CHECK(rc == TOK_ERR_TOO_LONG || rc == TOK_ERR_ARG, "status %d: %s", rc, err);
            if (trunc == TOK_TRUNC_NONE)
                FUZZ_CHECK(rc == TOK_ERR_TOO_LONG, "status %d without truncation: %s", rc, err);
            else if (trunc == TOK_TRUNC_LONGEST_FIRST)
                FUZZ_CHECK(degenerate, "longest-first refused: %s", err);
            else
                FUZZ_CHECK(rc == TOK_ERR_TOO_LONG || degenerate, "status %d: %s", rc, err);
            tok_sequence full = {0};
            int frc = tok_encode(g_tok, (const char *)a, alen, (const char *)b, blen, 0,
                                 TOK_TRUNC_NONE, side, &full, err, sizeof(err));
            FUZZ_CHECK(frc == TOK_OK, "unlimited encode failed: %d", frc);
            FUZZ_CHECK(full.len > max_len, "refused (%d) %d tokens under max_len %d", rc, full.len,
                       max_len);
            tok_sequence_free(&full);
        }
        if (rc == TOK_OK) {
            check_sequence(&seq, a, alen, b, blen, pair, max_len, trunc);
            if (!pair && max_len > 0) {
                /* A truncated single text keeps a prefix (right) or suffix
                 * (left) of its untruncated pieces, offsets included. */
                tok_sequence full = {0};
                int frc = tok_encode(g_tok, (const char *)a, alen, NULL, 0, 0, TOK_TRUNC_NONE, side,
                                     &full, err, sizeof(err));
                FUZZ_CHECK(frc == TOK_OK, "unlimited encode failed: %d", frc);
                int kept = seq.len - 2, skip = side == TOK_SIDE_LEFT ? full.len - seq.len : 0;
                FUZZ_CHECK(kept <= full.len - 2, "truncation added tokens");
                for (int i = 0; i < kept; i++)
                    FUZZ_CHECK(seq.ids[1 + i] == full.ids[1 + skip + i] &&
                                   seq.start[1 + i] == full.start[1 + skip + i],
                               "truncated piece %d differs from the untruncated one", i);
                tok_sequence_free(&full);
            }
            for (int skip = 0; skip < 2; skip++) {
                char *text = tok_decode(g_tok, seq.ids, seq.len, skip, skip);
                FUZZ_CHECK(text != NULL, "tok_decode returned NULL");
                free(text);
            }
        }
    }

    /* The same text as plain word pieces (targets use this path). */
    tok_sequence plain = {0};
    rc = tok_encode_plain(g_tok, (const char *)a, alen, &plain, err, sizeof(err));
    int a_valid = fuzz_utf8_valid(a, alen);
    FUZZ_CHECK(a_valid ? rc == TOK_OK : rc == TOK_ERR_UTF8, "encode_plain status %d (valid %d)", rc,
               a_valid);
    if (rc == TOK_OK) {
        for (int i = 0; i < plain.len; i++)
            FUZZ_CHECK(plain.ids[i] >= 0 && plain.ids[i] < tok_vocab_size(g_tok), "plain id %d",
                       plain.ids[i]);
        char *text = tok_decode(g_tok, plain.ids, plain.len, 0, 1);
        FUZZ_CHECK(text != NULL, "tok_decode returned NULL");
        free(text);
    }
    tok_sequence_free(&plain);
    tok_sequence_free(&seq);
cleanup:
    free(a);
    free(b);
    return 0;
}
