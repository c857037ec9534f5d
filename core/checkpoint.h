/* checkpoint: the weights of a Hugging Face checkpoint directory, in any of
 * the layouts save_pretrained writes, as one set of named tensors.
 *
 * Owns: every weight file it opened (model.safetensors, pytorch_model.bin, or
 * the shards an index names) and the name -> tensor table over them. Tensors
 * live exactly as long as the ckpt.
 *
 * Layout, in transformers' order of preference: model.safetensors,
 * model.safetensors.index.json, pytorch_model.bin,
 * pytorch_model.bin.index.json. An index's weight_map names plain files in
 * the same directory; each tensor must be in the shard the map names. */
#ifndef BERT_CHECKPOINT_H
#define BERT_CHECKPOINT_H

#include <stddef.h>

#include "safetensors.h"

typedef struct ckpt ckpt;

/* Opens the weights of checkpoint directory dir. Returns an st_status; the
 * message names the file and the tensor or key at fault. */
int ckpt_open(const char *dir, ckpt **out, char *err, size_t errlen);
/* Opens one index file (model.safetensors.index.json or
 * pytorch_model.bin.index.json) whose shards sit next to it. */
int ckpt_open_index(const char *index_path, ckpt **out, char *err, size_t errlen);
void ckpt_close(ckpt *c);

/* The tensor called name, or NULL; *file (may be NULL) is the file it is in. */
const st_tensor *ckpt_find(const ckpt *c, const char *name, const char **file);
/* The file that describes the checkpoint: the weights file or the index. */
const char *ckpt_path(const ckpt *c);
/* "safetensors" or "pytorch", and how many files hold the tensors. */
const char *ckpt_format(const ckpt *c);
int ckpt_n_files(const ckpt *c);
int ckpt_n_tensors(const ckpt *c);
const st_tensor *ckpt_tensor_at(const ckpt *c, int i);

#endif
