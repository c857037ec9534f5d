/* bert-cli check / fill / forward: the model-facing subcommands. */
#include "bert.h"
#include "cli.h"
#include "objectives.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_ERRLEN 512

/* Parses "--model DIR [--top-k K]"; returns 0 on a bad flag. */
static int cli_parse_model_args(int argc, char **argv, const char **model, int *top_k) {
    *model = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            *model = argv[++i];
        } else if (top_k && strcmp(argv[i], "--top-k") == 0 && i + 1 < argc) {
            *top_k = atoi(argv[++i]);
            if (*top_k < 1) return 0;
        } else {
            fprintf(stderr, "bert-cli: unexpected argument '%s'\n", argv[i]);
            return 0;
        }
    }
    if (!*model) fprintf(stderr, "bert-cli: --model DIR is required\n");
    return *model != NULL;
}

/* BERT_COMPUTE=int8 loads the model quantized, as the server's
 * model.compute does (default fp32). */
static bert_model *cli_load(const char *dir) {
    char err[CLI_ERRLEN];
    bert_model *m = NULL;
    bert_load_options lo = {.compute = BERT_COMPUTE_FP32};
    if (!cli_compute_env(&lo.compute)) return NULL;
    if (bert_model_load_opts(dir, &lo, &m, err, sizeof(err)) != BERT_OK) {
        fprintf(stderr, "bert-cli: %s\n", err);
        return NULL;
    }
    return m;
}

int cli_check(int argc, char **argv) {
    const char *dir;
    if (!cli_parse_model_args(argc, argv, &dir, NULL)) return 2;
    bert_model *m = cli_load(dir);
    if (!m) return 1;
    const bert_config *c = bert_model_config(m);
    json_t *o = json_pack(
        "{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:b, s:b, s:I}", "name",
        bert_model_name(m), "dtype", bert_model_dtype(m), "vocab_size", c->vocab_size,
        "hidden_size", c->hidden_size, "num_hidden_layers", c->num_hidden_layers,
        "num_attention_heads", c->num_attention_heads, "intermediate_size", c->intermediate_size,
        "max_position_embeddings", c->max_position_embeddings, "type_vocab_size",
        c->type_vocab_size, "hidden_act", c->hidden_act_name, "mlm", bert_model_has_mlm(m), "nsp",
        bert_model_has_nsp(m), "parameters", (json_int_t)bert_model_param_count(m));
    /* Which layout was read: the tests (and a user) see the choice made. */
    json_object_set_new(o, "weights", json_string(bert_model_weights_path(m)));
    json_object_set_new(o, "weights_format", json_string(bert_model_weights_format(m)));
    json_object_set_new(o, "weight_files", json_integer(bert_model_weights_files(m)));
    json_object_set_new(o, "compute", json_string(bert_compute_name(bert_model_compute(m))));
    json_object_set_new(o, "kernel", json_string(bert_model_kernel(m)));
    json_object_set_new(o, "weight_bytes", json_integer((json_int_t)bert_model_weight_bytes(m)));
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
    bert_model_free(m);
    return 0;
}

/* JSON array of ints -> malloc'd int32 array; NULL (and *n = -1) on a non-int. */
static int32_t *cli_int_array(const json_t *a, int *n) {
    *n = -1;
    if (!json_is_array(a)) return NULL;
    size_t len = json_array_size(a);
    int32_t *out = malloc((len ? len : 1) * sizeof(*out));
    if (!out) return NULL;
    for (size_t i = 0; i < len; i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_integer(v)) {
            free(out);
            return NULL;
        }
        out[i] = (int32_t)json_integer_value(v);
    }
    *n = (int)len;
    return out;
}

typedef struct cli_item {
    int32_t *ids, *types, *positions, *labels, *row_labels;
    int n_ids, n_types, n_positions, n_labels;
    int nsp_label; /* -1: none */
} cli_item;

static void cli_item_free(cli_item *it) {
    free(it->ids), free(it->types), free(it->positions), free(it->labels), free(it->row_labels);
}

/* One input object -> item. With "labels" (one per token, -100 ignored) the
 * MLM positions are the labelled ones, as transformers' loss sees them. */
static const char *cli_parse_item(const json_t *in, cli_item *it) {
    memset(it, 0, sizeof(*it));
    it->nsp_label = -1;
    if (!json_is_object(in)) return "each input must be an object";
    it->ids = cli_int_array(json_object_get(in, "ids"), &it->n_ids);
    if (!it->ids) return "'ids' must be an array of integers";
    const json_t *t = json_object_get(in, "type_ids");
    if (t && (!(it->types = cli_int_array(t, &it->n_types)) || it->n_types != it->n_ids))
        return "'type_ids' must be integers, one per id";
    const json_t *l = json_object_get(in, "labels");
    if (l) {
        if (!(it->labels = cli_int_array(l, &it->n_labels)) || it->n_labels != it->n_ids)
            return "'labels' must be integers, one per id";
        it->positions = malloc(((size_t)it->n_ids + 1) * sizeof(int32_t));
        it->row_labels = malloc(((size_t)it->n_ids + 1) * sizeof(int32_t));
        if (!it->positions || !it->row_labels) return "out of memory";
        for (int i = 0; i < it->n_ids; i++) {
            if (it->labels[i] == OBJ_IGNORE_INDEX) continue;
            it->row_labels[it->n_positions] = it->labels[i];
            it->positions[it->n_positions++] = i;
        }
    } else if (json_object_get(in, "mlm_positions")) {
        it->positions = cli_int_array(json_object_get(in, "mlm_positions"), &it->n_positions);
        if (!it->positions) return "'mlm_positions' must be an array of integers";
    }
    const json_t *nl = json_object_get(in, "next_sentence_label");
    if (nl) {
        if (!json_is_integer(nl) || json_integer_value(nl) < 0 || json_integer_value(nl) > 1)
            return "'next_sentence_label' must be 0 or 1";
        it->nsp_label = (int)json_integer_value(nl);
    }
    return NULL;
}

static json_t *cli_float_rows(const float *data, int rows, int cols) {
    json_t *a = json_array();
    for (int r = 0; r < rows; r++) {
        json_t *row = json_array();
        for (int c = 0; c < cols; c++)
            json_array_append_new(row, json_real(data[(size_t)r * cols + c]));
        json_array_append_new(a, row);
    }
    return a;
}

/* Runs one batch line; returns the JSON answer (an {"error"} object on failure). */
static json_t *cli_forward_line(const bert_model *m, bert_workspace *ws, const json_t *req) {
    char err[CLI_ERRLEN];
    const json_t *inputs = json_object_get(req, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0)
        return json_pack("{s:s}", "error", "'inputs' must be a non-empty array");
    int B = (int)json_array_size(inputs);
    int want_nsp = json_is_true(json_object_get(req, "nsp"));
    cli_item *items = calloc((size_t)B, sizeof(*items));
    bert_seq_input *seqs = calloc((size_t)B, sizeof(*seqs));
    int32_t *mlm_labels = NULL, *nsp_labels = NULL;
    json_t *res = NULL;
    int have_mlm_labels = 0, have_nsp_labels = 0, total_rows = 0;
    if (!items || !seqs) {
        res = json_pack("{s:s}", "error", "out of memory");
        goto cleanup;
    }
    for (int b = 0; b < B; b++) {
        const char *msg = cli_parse_item(json_array_get(inputs, (size_t)b), &items[b]);
        if (msg) {
            res = json_pack("{s:s, s:i}", "error", msg, "input", b);
            goto cleanup;
        }
        seqs[b] = (bert_seq_input){items[b].ids, items[b].types, items[b].n_ids, items[b].positions,
                                   items[b].n_positions};
        have_mlm_labels |= items[b].labels != NULL;
        have_nsp_labels |= items[b].nsp_label >= 0;
        total_rows += items[b].n_positions;
    }
    want_nsp |= have_nsp_labels;
    bert_forward_out out;
    if (bert_forward(m, ws, seqs, B, want_nsp, &out, err, sizeof(err)) != BERT_OK) {
        res = json_pack("{s:s}", "error", err);
        goto cleanup;
    }
    /* "hidden": true adds the encoder's last hidden states, one array of
     * rows per input (what the int8 accuracy benchmark compares). */
    json_t *hidden = NULL;
    if (json_is_true(json_object_get(req, "hidden"))) {
        int rows;
        const float *h = bert_hidden_states(ws, &rows);
        const int C = bert_model_config(m)->hidden_size;
        hidden = json_array();
        for (int b = 0, r = 0; b < B; r += seqs[b].len, b++)
            json_array_append_new(hidden, cli_float_rows(h + (size_t)r * C, seqs[b].len, C));
    }
    const int V = bert_model_config(m)->vocab_size;
    /* The CLI is for tests and scripts: one block of every row is fine here. */
    const float *logits = out.n_mlm_rows ? bert_mlm_logits(m, ws, 0, out.n_mlm_rows) : NULL;
    if (out.n_mlm_rows && !logits) {
        res = json_pack("{s:s}", "error", "out of memory for the MLM logits");
        goto cleanup;
    }
    res = json_object();
    if (hidden) json_object_set_new(res, "hidden_states", hidden);
    json_object_set_new(res, "mlm_logits", cli_float_rows(logits, out.n_mlm_rows, V));
    if (want_nsp) json_object_set_new(res, "nsp_logits", cli_float_rows(out.nsp_logits, B, 2));
    double mlm_loss = 0.0, nsp_loss = 0.0;
    if (have_mlm_labels) {
        mlm_labels = malloc(((size_t)total_rows + 1) * sizeof(int32_t));
        int r = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < items[b].n_positions; i++)
                mlm_labels[r++] = items[b].row_labels ? items[b].row_labels[i] : OBJ_IGNORE_INDEX;
        mlm_loss = obj_cross_entropy_mean(logits, mlm_labels, total_rows, V, NULL);
        json_object_set_new(res, "mlm_loss", json_real(mlm_loss));
    }
    if (have_nsp_labels) {
        nsp_labels = malloc((size_t)B * sizeof(int32_t));
        for (int b = 0; b < B; b++)
            nsp_labels[b] = items[b].nsp_label >= 0 ? items[b].nsp_label : OBJ_IGNORE_INDEX;
        nsp_loss = obj_cross_entropy_mean(out.nsp_logits, nsp_labels, B, 2, NULL);
        json_object_set_new(res, "nsp_loss", json_real(nsp_loss));
    }
    /* BertForPreTraining reports a total only when both label kinds are given. */
    if (have_mlm_labels && have_nsp_labels)
        json_object_set_new(res, "loss", json_real(mlm_loss + nsp_loss));
cleanup:
    for (int b = 0; items && b < B; b++)
        cli_item_free(&items[b]);
    free(items), free(seqs), free(mlm_labels), free(nsp_labels);
    return res;
}

/* Reads stdin line by line (any length). Returns NULL at EOF. */
static char *cli_getline(size_t *len) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    *len = (size_t)n;
    return line;
}

/* BERT_THREADS=N splits each forward pass across N threads, as the server's
 * workers.threads does (default 1); the parity tests run both. */
static bert_workspace *cli_workspace(void) {
    const char *env = getenv("BERT_THREADS");
    int n = env ? atoi(env) : 1;
    bert_workspace *ws = bert_workspace_new_threads(n > 0 ? n : 1);
    if (!ws) fprintf(stderr, "bert-cli: cannot start %d threads\n", n);
    return ws;
}

int cli_forward(int argc, char **argv) {
    const char *dir;
    if (!cli_parse_model_args(argc, argv, &dir, NULL)) return 2;
    bert_model *m = cli_load(dir);
    if (!m) return 1;
    bert_workspace *ws = cli_workspace();
    if (!ws) {
        bert_model_free(m);
        return 1;
    }
    char *line;
    size_t len;
    while ((line = cli_getline(&len))) {
        json_error_t jerr;
        json_t *req = json_loadb(line, len, 0, &jerr);
        json_t *res = req ? cli_forward_line(m, ws, req) : json_pack("{s:s}", "error", jerr.text);
        json_dumpf(res, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fputc('\n', stdout);
        fflush(stdout);
        json_decref(res);
        json_decref(req);
        free(line);
    }
    bert_workspace_free(ws);
    bert_model_free(m);
    return 0;
}

/* Prints the top_k fills of every [MASK] in one text. */
static void cli_fill_line(const bert_model *m, bert_workspace *ws, tok_sequence *seq,
                          const char *text, size_t len, int top_k) {
    char err[CLI_ERRLEN];
    const tok_tokenizer *tok = bert_model_tokenizer(m);
    const int V = bert_model_config(m)->vocab_size;
    int max_len = bert_model_config(m)->max_position_embeddings;
    if (tok_encode(tok, text, len, NULL, 0, max_len, TOK_TRUNC_NONE, TOK_SIDE_RIGHT, seq, err,
                   sizeof(err)) != TOK_OK) {
        printf("error: %s\n", err);
        return;
    }
    int k = top_k < V ? top_k : V;
    int32_t *pos = malloc((size_t)seq->len * sizeof(int32_t));
    int *top_idx = malloc((size_t)k * sizeof(int));
    float *top_val = malloc((size_t)k * sizeof(float));
    if (!pos || !top_idx || !top_val) {
        printf("error: out of memory\n");
        goto cleanup;
    }
    int n = 0;
    for (int i = 0; i < seq->len; i++)
        if (seq->ids[i] == tok_specials(tok)->mask) pos[n++] = i;
    bert_seq_input in = {seq->ids, seq->type_ids, seq->len, pos, n};
    bert_forward_out out;
    if (n == 0) {
        printf("error: no [MASK] token in the input\n");
    } else if (bert_forward(m, ws, &in, 1, 0, &out, err, sizeof(err)) != BERT_OK) {
        printf("error: %s\n", err);
    } else {
        for (int r = 0; r < n; r++) {
            float *row = (float *)bert_mlm_logits(m, ws, r, 1); /* ws-owned scratch */
            if (!row) {
                printf("error: out of memory\n");
                break;
            }
            obj_softmax_row(row, V);
            int got = obj_top_k(row, NULL, V, k, top_idx, top_val); /* the server's top-k */
            printf("mask %d:", r + 1);
            for (int c = 0; c < got; c++)
                printf(" %s (%.4f)", tok_id_to_token(tok, top_idx[c]), top_val[c]);
            printf("\n");
        }
    }
cleanup:
    free(pos);
    free(top_idx);
    free(top_val);
}

int cli_fill(int argc, char **argv) {
    const char *dir;
    int top_k = 5;
    if (!cli_parse_model_args(argc, argv, &dir, &top_k)) return 2;
    bert_model *m = cli_load(dir);
    if (!m) return 1;
    bert_workspace *ws = cli_workspace();
    if (!ws) {
        bert_model_free(m);
        return 1;
    }
    tok_sequence seq = {0};
    char *line;
    size_t len;
    while ((line = cli_getline(&len))) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        cli_fill_line(m, ws, &seq, line, len, top_k);
        fflush(stdout);
        free(line);
    }
    tok_sequence_free(&seq);
    bert_workspace_free(ws);
    bert_model_free(m);
    return 0;
}
