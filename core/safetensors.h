/* safetensors: a validated, read-only view of a .safetensors file.
 *
 * Owns: the file mapping (or nothing, for st_parse over a caller buffer) and
 * the parsed header. Every tensor's data pointer points into that mapping, so
 * tensors live exactly as long as the st_file.
 *
 * Contract: after st_open/st_parse succeed, every tensor has a known dtype, a
 * shape whose element count times the dtype size equals its byte length, and
 * a byte range inside the data section that overlaps no other tensor. Any
 * file that breaks this is refused with a message naming the file and the
 * tensor; nothing outside the file is ever read. */
#ifndef BERT_SAFETENSORS_H
#define BERT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
/* Headers are JSON metadata; real ones are kilobytes. Anything over this is a
 * corrupt length field, and we refuse it rather than allocate it. */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef enum {
    ST_OK = 0,
    ST_ERR_IO = 1,
    ST_ERR_FORMAT = 2,
    ST_ERR_NOMEM = 3,
} st_status;

typedef enum {
    ST_BOOL,
    ST_U8,
    ST_I8,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_F64,
    ST_I64,
    ST_U64,
    ST_F8_E4M3,
    ST_F8_E5M2,
} st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data; /* inside the file's data section; not necessarily aligned */
} st_tensor;

typedef struct st_file {
    char *path; /* for messages */
    void *map;  /* NULL when parsed over a caller buffer */
    size_t map_len;
    st_tensor *tensors;
    int n_tensors;
} st_file;

/* Maps path read-only and validates it. */
int st_open(const char *path, st_file **out, char *err, size_t errlen);

/* A parser of a whole weights file in memory (st_parse, tz_parse). */
typedef int (*st_parse_fn)(const void *data, size_t len, const char *name, st_file **out, char *err,
                           size_t errlen);
/* Opens path (a regular file of at least min_len bytes), maps it read-only
 * and parses it with parse; on success the st_file owns the mapping. The one
 * way st_open and tz_open open their files. */
int st_map_file(const char *path, size_t min_len, st_parse_fn parse, st_file **out, char *err,
                size_t errlen);
/* Validates an in-memory image (not copied: data must outlive the result).
 * name is used in messages. */
int st_parse(const void *data, size_t len, const char *name, st_file **out, char *err,
             size_t errlen);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype d);
size_t st_dtype_size(st_dtype d);

/* Converts n elements of an F32, F16 or BF16 tensor to float (dst may not
 * alias src). Returns ST_ERR_FORMAT for other dtypes. */
int st_to_f32(const st_tensor *t, float *dst);
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);

#endif
