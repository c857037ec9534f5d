/* fuzz_checkpoint: a whole checkpoint load (bert_model_load) with a fuzzed
 * model.safetensors next to a fixed tiny config.json and vocab.txt, then one
 * forward pass through whatever loaded.
 *
 * fuzz_safetensors covers the container; this covers what the loader does
 * with a container that parses: tensor lookup (including TensorFlow
 * gamma/beta names and the bare BertModel prefix), shape checks against the
 * config, F16/BF16 conversion and realignment of unaligned F32, optional
 * heads. Whatever loads must survive a forward pass (NaN and Inf weights
 * included) without a sanitizer report. Seeds are real save_pretrained files
 * for the same config (make_seeds.py). */
#include "bert.h"
#include "fuzz_common.h"

#include <string.h>
#include <unistd.h>

/* Must match make_seeds.py's checkpoint seeds. */
static const char CONFIG[] = "{\"model_type\": \"bert\", \"vocab_size\": 8, \"hidden_size\": 4, "
                             "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                             "\"intermediate_size\": 8, \"max_position_embeddings\": 8, "
                             "\"type_vocab_size\": 2, \"hidden_act\": \"gelu\"}";
static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\nc\n";

static char g_dir[64];
static char g_weights[128];
static bert_workspace *g_ws;

void openblas_set_num_threads(int n); /* cblas.h's; one thread per fuzz process */

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "fuzz_checkpoint: cannot write %s\n", path);
        abort();
    }
}

static void remove_dir(void) {
    char p[160];
    static const char *const names[] = {"config.json", "vocab.txt", "model.safetensors"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", g_dir, names[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    openblas_set_num_threads(1);
    if (fuzz_tmpdir("bert-fuzz-checkpoint", g_dir, sizeof(g_dir)) != 0) abort();
    atexit(remove_dir);
    char p[160];
    snprintf(p, sizeof(p), "%s/config.json", g_dir);
    write_file(p, CONFIG, sizeof(CONFIG) - 1);
    snprintf(p, sizeof(p), "%s/vocab.txt", g_dir);
    write_file(p, VOCAB, sizeof(VOCAB) - 1);
    snprintf(g_weights, sizeof(g_weights), "%s/model.safetensors", g_dir);
    g_ws = bert_workspace_new();
    if (!g_ws) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(g_weights, data, size);
    bert_model *m = NULL;
    char err[1024];
    err[0] = 0;
    int rc = bert_model_load(g_dir, &m, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (rc != BERT_OK) {
        FUZZ_CHECK(m == NULL, "failed load returned a model");
        FUZZ_CHECK(err[0] != 0, "failed load (%d) without a message", rc);
        FUZZ_CHECK(rc == BERT_ERR_FORMAT || rc == BERT_ERR_NOMEM || rc == BERT_ERR_IO,
                   "status %d: %s", rc, err);
        return 0;
    }
    const bert_config *c = bert_model_config(m);
    FUZZ_CHECK(c->vocab_size == 8 && c->hidden_size == 4, "config changed");
    /* [CLS] a [MASK] [SEP] b [SEP] as a pair, and a lone [CLS] [SEP]. */
    static const int32_t ids0[] = {2, 5, 4, 3, 6, 3}, types0[] = {0, 0, 0, 0, 1, 1};
    static const int32_t ids1[] = {2, 3};
    static const int32_t pos0[] = {2, 4};
    int mlm = bert_model_has_mlm(m);
    bert_seq_input seqs[2] = {
        {ids0, types0, 6, mlm ? pos0 : NULL, mlm ? 2 : 0},
        {ids1, NULL, 2, NULL, 0},
    };
    bert_forward_out out;
    rc = bert_forward(m, g_ws, seqs, 2, bert_model_has_nsp(m), &out, err, sizeof(err));
    FUZZ_CHECK(rc == BERT_OK, "forward failed on a loaded model: %s", err);
    FUZZ_CHECK(out.n_mlm_rows == (mlm ? 2 : 0), "n_mlm_rows %d", out.n_mlm_rows);
    volatile float sink = 0;
    const float *logits = out.n_mlm_rows ? bert_mlm_logits(m, g_ws, 0, out.n_mlm_rows) : NULL;
    FUZZ_CHECK(!out.n_mlm_rows || logits, "no MLM logits for %d rows", out.n_mlm_rows);
    for (int i = 0; i < out.n_mlm_rows * c->vocab_size; i++)
        sink += logits[i];
    if (bert_model_has_nsp(m)) {
        FUZZ_CHECK(out.nsp_logits != NULL, "no NSP logits");
        for (int i = 0; i < 4; i++)
            sink += out.nsp_logits[i];
    }
    (void)sink;
    bert_model_free(m);
    return 0;
}
