/* fuzz_model_config: bert_config_parse over arbitrary bytes.
 *
 * Every size in config.json later sizes an allocation or a loop, so a config
 * that parses must have values the loader can trust: positive dimensions,
 * hidden_size a multiple of the head count, a known activation, a finite
 * layer_norm_eps in [0, 1]. A parse that succeeds with anything else aborts. */
#include "bert.h"
#include "fuzz_common.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bert_config c;
    char err[512];
    err[0] = 0;
    /* Not NUL-terminated on purpose: the parser must respect len. */
    int rc = bert_config_parse((const char *)data, size, "fuzz/config.json", &c, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (rc != BERT_OK) {
        FUZZ_CHECK(rc == BERT_ERR_FORMAT || rc == BERT_ERR_NOMEM, "unexpected status %d", rc);
        FUZZ_CHECK(err[0] != 0, "failed (%d) without a message", rc);
        return 0;
    }
    FUZZ_CHECK(c.vocab_size > 0, "vocab_size %d", c.vocab_size);
    FUZZ_CHECK(c.hidden_size > 0, "hidden_size %d", c.hidden_size);
    FUZZ_CHECK(c.num_hidden_layers > 0, "num_hidden_layers %d", c.num_hidden_layers);
    FUZZ_CHECK(c.num_attention_heads > 0, "num_attention_heads %d", c.num_attention_heads);
    FUZZ_CHECK(c.hidden_size % c.num_attention_heads == 0, "hidden %d heads %d", c.hidden_size,
               c.num_attention_heads);
    FUZZ_CHECK(c.intermediate_size > 0, "intermediate_size %d", c.intermediate_size);
    FUZZ_CHECK(c.max_position_embeddings > 0, "max_position_embeddings %d",
               c.max_position_embeddings);
    FUZZ_CHECK(c.type_vocab_size > 0, "type_vocab_size %d", c.type_vocab_size);
    FUZZ_CHECK(isfinite(c.layer_norm_eps) && c.layer_norm_eps >= 0 && c.layer_norm_eps <= 1,
               "layer_norm_eps %g", (double)c.layer_norm_eps);
    FUZZ_CHECK(c.hidden_act >= BERT_ACT_GELU && c.hidden_act <= BERT_ACT_QUICK_GELU,
               "hidden_act %d", (int)c.hidden_act);
    FUZZ_CHECK(fuzz_terminated(c.hidden_act_name, sizeof(c.hidden_act_name)),
               "hidden_act_name not terminated");
    FUZZ_CHECK(c.tie_word_embeddings == 0 || c.tie_word_embeddings == 1, "tie %d",
               c.tie_word_embeddings);
    /* The products the loader allocates from must not overflow size_t. */
    size_t words;
    FUZZ_CHECK(!__builtin_mul_overflow((size_t)c.vocab_size, (size_t)c.hidden_size, &words),
               "vocab x hidden overflows");
    return 0;
}
