/* fuzz_tokenizer_json: a tokenizer given without vocab.txt, as tok_load_dir
 * reads it: the WordPiece vocab, normalizer, unk token and added tokens of
 * tokenizer.json, special token names from special_tokens_map.json and
 * tokenizer_config.json.
 *
 * Input layout: byte 0 picks which of special_tokens_map.json (bit 0) and
 * tokenizer_config.json (bit 1) exist, bytes 1 and 2 where the rest is split
 * (as fractions: tokenizer.json, then the two others), the rest their
 * contents. tokenizer.json always exists; there is never a vocab.txt.
 *
 * Oracles: refusals are TOK_ERR_FORMAT/NOMEM with a message naming one of the
 * three files; an accepted tokenizer has its special ids inside the vocab and
 * marked special, encodes a fixed text and a pair to ids inside the vocab
 * with [CLS]/[SEP] where they belong, and decodes them. */
#include "fuzz_common.h"
#include "tokenizer.h"

#include <string.h>
#include <unistd.h>

static const char TEXT[] = "Héllo [MASK] wörld! 中文 <mask> CAFÉ [ENT]x";
static char g_dir[64];

static void remove_dir(void) {
    fuzz_remove_file(g_dir, "tokenizer.json");
    fuzz_remove_file(g_dir, "special_tokens_map.json");
    fuzz_remove_file(g_dir, "tokenizer_config.json");
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (fuzz_tmpdir("bert-fuzz-tokjson", g_dir, sizeof(g_dir)) != 0) abort();
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t ctrl = 0, s1 = 255, s2 = 255;
    if (size >= 3) {
        ctrl = data[0];
        s1 = data[1];
        s2 = data[2];
        data += 3;
        size -= 3;
    }
    size_t a = size * s1 / 255, b = a + (size - a) * s2 / 255;
    fuzz_remove_file(g_dir, "special_tokens_map.json");
    fuzz_remove_file(g_dir, "tokenizer_config.json");
    fuzz_write_file(g_dir, "tokenizer.json", data, a);
    if (ctrl & 1) fuzz_write_file(g_dir, "special_tokens_map.json", data + a, b - a);
    if (ctrl & 2) fuzz_write_file(g_dir, "tokenizer_config.json", data + b, size - b);

    tok_tokenizer *tok = NULL;
    char err[1024];
    err[0] = 0;
    int rc = tok_load_dir(g_dir, &tok, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "message not terminated");
    if (rc != TOK_OK) {
        FUZZ_CHECK(tok == NULL, "failed load returned a tokenizer");
        FUZZ_CHECK(rc == TOK_ERR_FORMAT || rc == TOK_ERR_NOMEM, "status %d: %s", rc, err);
        FUZZ_CHECK(strstr(err, "tokenizer.json") || strstr(err, "special_tokens_map.json") ||
                       strstr(err, "tokenizer_config.json"),
                   "message names no file: %s", err);
        return 0;
    }
    const int n = tok_vocab_size(tok);
    FUZZ_CHECK(n > 0, "vocab size %d", n);
    const tok_special_ids *sp = tok_specials(tok);
    const int32_t ids[5] = {sp->pad, sp->unk, sp->cls, sp->sep, sp->mask};
    for (int i = 0; i < 5; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n, "special %d has id %d of %d", i, ids[i], n);
        FUZZ_CHECK(tok_is_special(tok, ids[i]), "special id %d not special", ids[i]);
        FUZZ_CHECK(tok_id_to_token(tok, ids[i]) != NULL, "special id %d has no text", ids[i]);
    }
    tok_sequence seq = {0};
    rc = tok_encode(tok, TEXT, sizeof(TEXT) - 1, TEXT, 6, 0, TOK_TRUNC_NONE, TOK_SIDE_RIGHT, &seq,
                    err, sizeof(err));
    FUZZ_CHECK(rc == TOK_OK, "fixed text refused: %s", err);
    FUZZ_CHECK(seq.len >= 3 && seq.ids[0] == sp->cls && seq.ids[seq.len - 1] == sp->sep,
               "[CLS] ... [SEP] missing");
    for (int i = 0; i < seq.len; i++)
        FUZZ_CHECK(seq.ids[i] >= 0 && seq.ids[i] < n, "id %d of %d", seq.ids[i], n);
    char *text = tok_decode(tok, seq.ids, seq.len, 1, 1);
    FUZZ_CHECK(text != NULL, "decode failed");
    free(text);
    tok_sequence_free(&seq);
    tok_free(tok);
    return 0;
}
