/* torch_zip: a validated, read-only view of a PyTorch checkpoint
 * (pytorch_model.bin) in the zip format torch.save has written since 1.6.
 *
 * Owns: the file mapping (or nothing, for tz_parse over a caller buffer).
 * The result is an st_file (safetensors.h) so that the loader reads both
 * formats the same way: each tensor's data points at its bytes inside the
 * archive, which torch stores uncompressed and aligned, so float32 weights
 * are used in place exactly as from a .safetensors file.
 *
 * The archive's data.pkl is read by a strict pickle reader that never
 * imports, calls or executes anything: it knows the handful of opcodes
 * torch.save emits (protocol 2) and accepts only the globals a state dict
 * needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter and _rebuild_parameter_with_state, the
 * torch.*Storage types) and storage
 * persistent ids. Anything else is refused with a message naming the file
 * and the global or opcode. Tensors must be contiguous views of their
 * storage and lie inside it; the top level must be a dict of name -> tensor.
 *
 * Contract: after tz_open/tz_parse succeed, the st_file contract holds
 * (known dtype, numel x dtype size == nbytes, bytes inside the input), except
 * that tensors may share bytes: torch.save stores tied weights once. */
#ifndef BERT_TORCH_ZIP_H
#define BERT_TORCH_ZIP_H

#include <stddef.h>

#include "safetensors.h"

/* Maps path read-only and reads it as a PyTorch zip checkpoint. Returns
 * ST_OK, ST_ERR_IO (cannot open/map), ST_ERR_FORMAT or ST_ERR_NOMEM. A
 * pre-1.6 (non-zip) torch.save file is ST_ERR_FORMAT with a message that
 * says how to convert it. */
int tz_open(const char *path, st_file **out, char *err, size_t errlen);
/* Same over an in-memory image (not copied: data must outlive the result);
 * name is used in messages. */
int tz_parse(const void *data, size_t len, const char *name, st_file **out, char *err,
             size_t errlen);

#endif
