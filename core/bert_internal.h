/* bert_internal: the layout of a loaded model, shared by the loader
 * (bert_load.c) and the forward pass (bert_forward.c). Not for other modules:
 * they use the opaque bert_model through bert.h. */
#ifndef BERT_INTERNAL_H
#define BERT_INTERNAL_H

#include "bert.h"
#include "checkpoint.h"
#include "dnnl_linear.h"
#include "safetensors.h"

/* One encoder layer. Matrices are PyTorch nn.Linear layout: (out, in). */
typedef struct bert_layer {
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* (C,C), (C) */
    const float *attn_out_w, *attn_out_b;           /* (C,C), (C) */
    const float *attn_ln_w, *attn_ln_b;             /* (C) */
    const float *inter_w, *inter_b;                 /* (I,C), (I) */
    const float *out_w, *out_b;                     /* (C,I), (C) */
    const float *out_ln_w, *out_ln_b;               /* (C) */
    /* The six products above on oneDNN (dnnl_linear.h), when the model has a
     * dl engine: their float weights are then NULL. Indexed by bert_qprod. */
    dl_weight *qw[6];
} bert_layer;

typedef enum { QP_Q, QP_K, QP_V, QP_ATTN_OUT, QP_INTER, QP_OUT, QP_N } bert_qprod;

struct bert_model {
    bert_config cfg;
    char name[256];
    char dtype[8];
    ckpt *ck;      /* the weight files F32 weights point into */
    float **owned; /* converted or realigned copies, freed with the model */
    int n_owned, cap_owned;
    size_t resident_bytes; /* bytes of owned copies */
    size_t param_count;
    bert_compute compute;
    dl_engine *dl;    /* the encoder's products on oneDNN; NULL: OpenBLAS */
    size_t qbytes;    /* bytes of those products' reordered weights */
    size_t qparams;   /* parameters those layers had */
    char kernel[112]; /* bert_model_kernel */
    tok_tokenizer *tok;

    const float *word_emb, *pos_emb, *type_emb; /* (V,C), (P,C), (TV,C) */
    const uint16_t *word_emb_bf16;    /* (V,C) instead of word_emb: int8, tied (= mlm_dec_bf16) */
    const float *emb_ln_w, *emb_ln_b; /* (C) */
    bert_layer *layers;               /* (num_hidden_layers) */

    int has_pooler;
    const float *pool_w, *pool_b; /* (C,C), (C) */

    int has_mlm;
    const float *mlm_dense_w, *mlm_dense_b; /* (C,C), (C) */
    const float *mlm_ln_w, *mlm_ln_b;       /* (C) */
    const float *mlm_dec_w;                 /* (V,C), the word embeddings when tied */
    uint16_t *mlm_dec_bf16; /* (V,C) bf16, owned; int8 compute (then no mlm_dec_w) */
    const float *mlm_bias;  /* (V) */

    int has_nsp;
    const float *nsp_w, *nsp_b; /* (2,C), (2) */
};

#endif
