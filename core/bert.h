/* bert: a loaded BERT checkpoint (BertForPreTraining) and its forward pass.
 *
 * Owns: the configuration, the weights (memory-mapped safetensors or
 * PyTorch zip files, or one converted copy for float16/bfloat16 and unaligned
 * tensors), the tokenizer of the
 * checkpoint directory. A bert_model is immutable after bert_model_load and
 * may be used by any number of threads at once.
 *
 * Scratch memory is not the model's: each thread owns a bert_workspace and
 * passes it to bert_forward. Outputs point into that workspace and stay valid
 * until the next call with the same workspace. One workspace may serve
 * several models in turn (the server's int8-checked runs an int8 and a
 * float32 model on it); it keeps the oneDNN contexts of the last two.
 *
 * Knows nothing about HTTP or JSON requests. */
#ifndef BERT_BERT_H
#define BERT_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef enum {
    BERT_OK = 0,
    BERT_ERR_IO = 1,      /* file missing/unreadable */
    BERT_ERR_FORMAT = 2,  /* malformed file, bad tensor, bad config value */
    BERT_ERR_NO_HEAD = 3, /* MLM or NSP head not in this checkpoint */
    BERT_ERR_INPUT = 4,   /* bad ids, too long, etc. */
    BERT_ERR_NOMEM = 5,
    BERT_ERR_CANCELLED = 6, /* the workspace's cancel check said stop */
} bert_status;

typedef enum {
    BERT_ACT_GELU = 0,      /* exact erf GELU ("gelu") */
    BERT_ACT_GELU_TANH = 1, /* "gelu_new", "gelu_pytorch_tanh", "gelu_fast" */
    BERT_ACT_RELU = 2,
    BERT_ACT_SILU = 3, /* "silu", "swish" */
    BERT_ACT_QUICK_GELU = 4,
} bert_activation;

typedef struct bert_config {
    int vocab_size;
    int hidden_size;
    int num_hidden_layers;
    int num_attention_heads;
    int intermediate_size;
    int max_position_embeddings;
    int type_vocab_size;
    int pad_token_id;
    float layer_norm_eps;
    bert_activation hidden_act;
    char hidden_act_name[32];
    int tie_word_embeddings; /* MLM decoder shares the word embeddings (default true) */
} bert_config;

/* Parses config.json text. path is only used in error messages. */
int bert_config_parse(const char *json, size_t len, const char *path, bert_config *cfg, char *err,
                      size_t errlen);

typedef struct bert_model bert_model;

/* How the encoder's linear layers compute. FP32: OpenBLAS sgemm, the same
 * numbers as transformers (1e-4). INT8: dynamic quantization on oneDNN
 * (dnnl_linear.h), opt-in, faster, approximately the same answers
 * (bench/README.md has the agreement figures). Embeddings, attention, layer
 * norms, the pooler and the heads stay float32 either way. */
typedef enum { BERT_COMPUTE_FP32 = 0, BERT_COMPUTE_INT8 = 1 } bert_compute;

/* "fp32" / "int8" <-> bert_compute; parse returns -1 for anything else. */
int bert_compute_parse(const char *name);
const char *bert_compute_name(bert_compute c);

typedef struct bert_load_options {
    bert_compute compute;
} bert_load_options;

/* Loads <dir>/config.json, the weights in any layout checkpoint.h resolves
 * (model.safetensors, pytorch_model.bin, or either sharded with an index) and
 * the tokenizer files (tok_load_dir). Every failure names the file and the
 * key or tensor at fault. Same as bert_model_load_opts with fp32. */
int bert_model_load(const char *dir, bert_model **out, char *err, size_t errlen);
/* The same with options (NULL: the defaults). With INT8 the encoder's
 * float32 weights are quantized at load and then dropped from memory. */
int bert_model_load_opts(const char *dir, const bert_load_options *opts, bert_model **out,
                         char *err, size_t errlen);
void bert_model_free(bert_model *m);

const bert_config *bert_model_config(const bert_model *m);
const tok_tokenizer *bert_model_tokenizer(const bert_model *m);
int bert_model_has_mlm(const bert_model *m);
int bert_model_has_nsp(const bert_model *m);
const char *bert_model_dtype(const bert_model *m); /* dtype in the file: "F32", "F16", "BF16" */
size_t bert_model_param_count(const bert_model *m);
/* Bytes of weights as computed with: float32, or int8 parts for the
 * quantized layers. */
size_t bert_model_weight_bytes(const bert_model *m);
bert_compute bert_model_compute(const bert_model *m);
/* What runs the encoder's products: "openblas sgemm" or oneDNN's int8 kernel
 * name (e.g. "onednn brg:avx512_core_amx_int8"). */
const char *bert_model_kernel(const bert_model *m);
const char *bert_model_name(const bert_model *m); /* directory basename */
/* The weights file or index the model was read from, its format
 * ("safetensors" or "pytorch") and how many files hold the tensors. */
const char *bert_model_weights_path(const bert_model *m);
const char *bert_model_weights_format(const bert_model *m);
int bert_model_weights_files(const bert_model *m);

/* One sequence of a batch. mlm_positions: indices into ids whose MLM logits
 * are wanted (may be NULL when n_mlm == 0). */
typedef struct bert_seq_input {
    const int32_t *ids;
    const int32_t *type_ids; /* may be NULL: all zeros */
    int len;
    const int32_t *mlm_positions;
    int n_mlm;
} bert_seq_input;

typedef struct bert_forward_out {
    int n_mlm_rows;    /* sum of n_mlm over the batch: rows for bert_mlm_logits */
    float *nsp_logits; /* (B, 2): index 0 = is next, 1 = random; NULL unless asked */
} bert_forward_out;

typedef struct bert_workspace bert_workspace;
/* Same as bert_workspace_new_threads(1). */
bert_workspace *bert_workspace_new(void);
/* A workspace whose forward passes are split across n_threads threads (the
 * caller of bert_forward plus n_threads - 1 it owns): products by output
 * columns, attention by (sequence, head), layer norms by rows. Each slice
 * calls OpenBLAS, so OpenBLAS itself should run single-threaded
 * (openblas_set_num_threads(1)) or the cores are oversubscribed. Results are
 * bitwise the same for any n_threads. NULL when memory or threads run out. */
bert_workspace *bert_workspace_new_threads(int n_threads);
int bert_workspace_threads(const bert_workspace *ws);
void bert_workspace_free(bert_workspace *ws);
size_t bert_workspace_bytes(const bert_workspace *ws);
/* A check bert_forward polls before each encoder layer: when fn(arg) returns
 * nonzero the pass stops with BERT_ERR_CANCELLED (a server drops work whose
 * client has gone). fn NULL: never cancelled. Runs on the calling thread. */
void bert_workspace_set_cancel(bert_workspace *ws, int (*fn)(void *arg), void *arg);

/* Runs B sequences of different lengths through the encoder, the MLM head's
 * transform at the requested positions and, when want_nsp, the pooler and NSP
 * head. MLM logits are then read with bert_mlm_logits. */
int bert_forward(const bert_model *m, bert_workspace *ws, const bert_seq_input *seqs, int B,
                 int want_nsp, bert_forward_out *out, char *err, size_t errlen);

/* MLM logits (n, vocab_size) of rows [first, first + n) of the last
 * bert_forward on ws, rows in batch order. Valid until the next call with ws.
 * Computed on demand so that a batch with thousands of labelled positions never
 * holds (rows x vocab) floats at once: callers take a few rows at a time.
 * NULL when the range is outside the last forward or memory runs out. */
const float *bert_mlm_logits(const bert_model *m, bert_workspace *ws, int first, int n);

/* The encoder's last hidden states (rows, hidden_size) of the last
 * bert_forward on ws, sequences packed back to back in batch order; *rows is
 * their number. Valid until the next call with ws. */
const float *bert_hidden_states(const bert_workspace *ws, int *rows);

#endif
