/* config.json -> bert_config, with every value checked before anything is
 * sized from it. */
#include "bert.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* Sizes above these are not BERTs we could hold in memory; refusing them here
 * turns a forged config into a message instead of an allocation failure. */
#define CFG_MAX_DIM    (1 << 20)
#define CFG_MAX_LAYERS 1024

static int cfg_int(const json_t *root, const char *path, const char *key, int def, int min, int max,
                   int *out, char *err, size_t errlen) {
    const json_t *v = json_object_get(root, key);
    if (!v) {
        if (def < min) {
            snprintf(err, errlen, "%s: missing required key '%s'", path, key);
            return BERT_ERR_FORMAT;
        }
        *out = def;
        return BERT_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(err, errlen, "%s: key '%s' must be an integer in [%d, %d]", path, key, min, max);
        return BERT_ERR_FORMAT;
    }
    *out = (int)json_integer_value(v);
    return BERT_OK;
}

static const struct {
    const char *name;
    bert_activation act;
} cfg_acts[] = {
    {"gelu", BERT_ACT_GELU},
    {"gelu_python", BERT_ACT_GELU},
    {"gelu_new", BERT_ACT_GELU_TANH},
    {"gelu_pytorch_tanh", BERT_ACT_GELU_TANH},
    {"gelu_fast", BERT_ACT_GELU_TANH},
    {"relu", BERT_ACT_RELU},
    {"silu", BERT_ACT_SILU},
    {"swish", BERT_ACT_SILU},
    {"quick_gelu", BERT_ACT_QUICK_GELU},
};

int bert_config_parse(const char *json, size_t len, const char *path, bert_config *cfg, char *err,
                      size_t errlen) {
    json_error_t jerr;
    int rc = BERT_ERR_FORMAT;
    json_t *root = json_loadb(json, len, 0, &jerr);
    memset(cfg, 0, sizeof(*cfg));
    if (!root) {
        snprintf(err, errlen, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
        return BERT_ERR_FORMAT;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "%s: top level is not a JSON object", path);
        goto cleanup;
    }
    const json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "bert") != 0)) {
        snprintf(err, errlen,
                 "%s: key 'model_type' is '%.40s', only 'bert' is supported (BERT checkpoints: "
                 "BertForPreTraining, BertForMaskedLM, BertModel and other Bert* heads; RoBERTa, "
                 "DistilBERT, ALBERT, ELECTRA and the like are different models)",
                 path, json_is_string(mt) ? json_string_value(mt) : "(not a string)");
        goto cleanup;
    }
    /* architectures names the class that wrote the checkpoint; a BERT encoder
     * under another class (BertForSequenceClassification, ...) still loads,
     * its own head is ignored. */
    const json_t *arch = json_object_get(root, "architectures");
    if (arch && !json_is_null(arch)) {
        if (!json_is_array(arch)) {
            snprintf(err, errlen, "%s: key 'architectures' must be a list of class names", path);
            goto cleanup;
        }
        size_t ai;
        const json_t *an;
        json_array_foreach(arch, ai, an) {
            const char *a = json_string_value(an);
            if (!a || strncmp(a, "Bert", 4) != 0 || strncmp(a, "BertGeneration", 14) == 0) {
                snprintf(err, errlen,
                         "%s: key 'architectures' names '%.60s', which is not a BERT; supported: "
                         "BertForPreTraining, BertForMaskedLM, BertModel and other Bert* classes",
                         path, a ? a : "(not a string)");
                goto cleanup;
            }
        }
    }
    const json_t *pe = json_object_get(root, "position_embedding_type");
    if (pe && !json_is_null(pe) &&
        (!json_is_string(pe) || strcmp(json_string_value(pe), "absolute") != 0)) {
        snprintf(err, errlen, "%s: key 'position_embedding_type': only 'absolute' is supported",
                 path);
        goto cleanup;
    }
    if ((rc = cfg_int(root, path, "vocab_size", -1, 1, CFG_MAX_DIM * 4, &cfg->vocab_size, err,
                      errlen)) ||
        (rc = cfg_int(root, path, "hidden_size", -1, 1, CFG_MAX_DIM, &cfg->hidden_size, err,
                      errlen)) ||
        (rc = cfg_int(root, path, "num_hidden_layers", -1, 1, CFG_MAX_LAYERS,
                      &cfg->num_hidden_layers, err, errlen)) ||
        (rc = cfg_int(root, path, "num_attention_heads", -1, 1, CFG_MAX_DIM,
                      &cfg->num_attention_heads, err, errlen)) ||
        (rc = cfg_int(root, path, "intermediate_size", -1, 1, CFG_MAX_DIM * 4,
                      &cfg->intermediate_size, err, errlen)) ||
        (rc = cfg_int(root, path, "max_position_embeddings", 512, 1, CFG_MAX_DIM,
                      &cfg->max_position_embeddings, err, errlen)) ||
        (rc = cfg_int(root, path, "type_vocab_size", 2, 1, CFG_MAX_DIM, &cfg->type_vocab_size, err,
                      errlen)))
        goto cleanup;
    rc = BERT_ERR_FORMAT;
    const json_t *pad = json_object_get(root, "pad_token_id");
    cfg->pad_token_id = json_is_integer(pad) ? (int)json_integer_value(pad) : 0;
    if (cfg->hidden_size % cfg->num_attention_heads != 0) {
        snprintf(err, errlen,
                 "%s: key 'hidden_size' (%d) is not a multiple of "
                 "'num_attention_heads' (%d)",
                 path, cfg->hidden_size, cfg->num_attention_heads);
        goto cleanup;
    }
    const json_t *eps = json_object_get(root, "layer_norm_eps");
    cfg->layer_norm_eps = 1e-12f;
    if (eps) {
        if (!json_is_number(eps) || json_number_value(eps) < 0 || json_number_value(eps) > 1) {
            snprintf(err, errlen, "%s: key 'layer_norm_eps' must be a number in [0, 1]", path);
            goto cleanup;
        }
        cfg->layer_norm_eps = (float)json_number_value(eps);
    }
    const json_t *act = json_object_get(root, "hidden_act");
    const char *act_name = act ? json_string_value(act) : "gelu";
    if (!act_name) {
        snprintf(err, errlen, "%s: key 'hidden_act' must be a string", path);
        goto cleanup;
    }
    size_t i;
    for (i = 0; i < sizeof(cfg_acts) / sizeof(cfg_acts[0]); i++) {
        if (strcmp(cfg_acts[i].name, act_name) == 0) break;
    }
    if (i == sizeof(cfg_acts) / sizeof(cfg_acts[0])) {
        snprintf(err, errlen,
                 "%s: key 'hidden_act': unsupported activation '%.40s' (supported: "
                 "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish, quick_gelu)",
                 path, act_name);
        goto cleanup;
    }
    cfg->hidden_act = cfg_acts[i].act;
    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie)) {
        snprintf(err, errlen, "%s: key 'tie_word_embeddings' must be true or false", path);
        goto cleanup;
    }
    cfg->tie_word_embeddings = tie ? json_is_true(tie) : 1;
    snprintf(cfg->hidden_act_name, sizeof(cfg->hidden_act_name), "%s", act_name);
    rc = BERT_OK;
cleanup:
    json_decref(root);
    return rc;
}
