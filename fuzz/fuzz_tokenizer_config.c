/* fuzz_tokenizer_config: the checkpoint's tokenizer settings files,
 * tokenizer_config.json and tokenizer.json, as tok_load_dir reads them.
 *
 * Input layout: byte 0 picks which files exist (bit 0: tokenizer_config.json,
 * bit 1: tokenizer.json), byte 1 where the rest is split between them (as a
 * fraction), the rest their contents. A fixed small vocab.txt sits next to
 * them. tok_load_dir reads the directory (normalizer options, falling back to
 * tokenizer.json's BertNormalizer, and clean_up_tokenization_spaces, read
 * there once for the server); api_ctx_init then runs with a tiny model loaded
 * once.
 *
 * Oracles: refusals carry a message naming the file; accepted options are in
 * their documented ranges and the tokenizer encodes a fixed text. */
#include "api.h"
#include "fuzz_common.h"
#include "tokenizer.h"

#include <string.h>
#include <unistd.h>

static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##lo\nwor\n##ld\n!\n"
                            "\xc3\xa9\n\xe4\xb8\xad\n";
static const char TEXT[] = "Héllo [MASK] wörld! 中文 CAFÉ";

static char g_dir[64];
static bert_model *g_model;
static cfg g_cfg;

static void remove_dir(void) {
    fuzz_remove_file(g_dir, "vocab.txt");
    fuzz_remove_file(g_dir, "tokenizer_config.json");
    fuzz_remove_file(g_dir, "tokenizer.json");
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (fuzz_tmpdir("bert-fuzz-tokcfg", g_dir, sizeof(g_dir)) != 0) abort();
    atexit(remove_dir);
    fuzz_write_file(g_dir, "vocab.txt", VOCAB, sizeof(VOCAB) - 1);
    static const char *const rel[] = {"model", "out/model", "fuzz/out/model", NULL};
    char *dir = fuzz_locate("BERT_FUZZ_MODEL", rel);
    char err[1024];
    if (!dir || bert_model_load(dir, &g_model, err, sizeof(err)) != BERT_OK) {
        fprintf(stderr, "fuzz_tokenizer_config: cannot load the model: %s\n", dir ? err : "");
        abort();
    }
    free(dir);
    cfg_defaults(&g_cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t ctrl = 1, splitb = 255;
    if (size >= 2) {
        ctrl = data[0];
        splitb = data[1];
        data += 2;
        size -= 2;
    }
    size_t alen = size * splitb / 255;
    fuzz_remove_file(g_dir, "tokenizer_config.json");
    fuzz_remove_file(g_dir, "tokenizer.json");
    if (ctrl & 1) fuzz_write_file(g_dir, "tokenizer_config.json", data, alen);
    if (ctrl & 2) fuzz_write_file(g_dir, "tokenizer.json", data + alen, size - alen);

    tok_tokenizer *tok = NULL;
    char err[1024];
    err[0] = 0;
    int rc = tok_load_dir(g_dir, &tok, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "message not terminated");
    if (rc != TOK_OK) {
        FUZZ_CHECK(tok == NULL, "failed load returned a tokenizer");
        FUZZ_CHECK(rc == TOK_ERR_FORMAT || rc == TOK_ERR_NOMEM, "status %d: %s", rc, err);
        FUZZ_CHECK(strstr(err, "tokenizer") != NULL, "message names no file: %s", err);
    } else {
        const tok_options *o = tok_get_options(tok);
        FUZZ_CHECK(o->lowercase == 0 || o->lowercase == 1, "lowercase %d", o->lowercase);
        FUZZ_CHECK(o->strip_accents >= -1 && o->strip_accents <= 1, "strip_accents %d",
                   o->strip_accents);
        FUZZ_CHECK(o->tokenize_chinese == 0 || o->tokenize_chinese == 1, "tokenize_chinese %d",
                   o->tokenize_chinese);
        FUZZ_CHECK(o->cleanup_spaces == 0 || o->cleanup_spaces == 1, "cleanup_spaces %d",
                   o->cleanup_spaces);
        /* tokenizer.json's added tokens may number on past vocab.txt's 12. */
        const int n = tok_vocab_size(tok);
        FUZZ_CHECK(n >= 12, "vocab size %d", n);
        tok_sequence seq = {0};
        rc = tok_encode(tok, TEXT, sizeof(TEXT) - 1, NULL, 0, 0, TOK_TRUNC_NONE, TOK_SIDE_RIGHT,
                        &seq, err, sizeof(err));
        FUZZ_CHECK(rc == TOK_OK, "fixed text refused: %s", err);
        for (int i = 0; i < seq.len; i++)
            FUZZ_CHECK(seq.ids[i] >= 0 && seq.ids[i] < n, "id %d", seq.ids[i]);
        tok_sequence_free(&seq);
        tok_free(tok);
    }

    api_ctx ctx;
    err[0] = 0;
    rc = api_ctx_init(&ctx, g_model, g_dir, &g_cfg, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "message not terminated");
    if (rc != 0)
        FUZZ_CHECK(strstr(err, "tokenizer_config.json") != NULL, "message names no file: %s", err);
    else
        FUZZ_CHECK(ctx.cleanup_spaces == 0 || ctx.cleanup_spaces == 1, "cleanup_spaces %d",
                   ctx.cleanup_spaces);
    return 0;
}
