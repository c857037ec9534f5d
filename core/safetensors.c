#include "safetensors.h"

#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    st_dtype dtype;
    size_t size;
} st_dtypes[] = {
    {"BOOL", ST_BOOL, 1}, {"U8", ST_U8, 1},           {"I8", ST_I8, 1},
    {"I16", ST_I16, 2},   {"U16", ST_U16, 2},         {"F16", ST_F16, 2},
    {"BF16", ST_BF16, 2}, {"I32", ST_I32, 4},         {"U32", ST_U32, 4},
    {"F32", ST_F32, 4},   {"F64", ST_F64, 8},         {"I64", ST_I64, 8},
    {"U64", ST_U64, 8},   {"F8_E4M3", ST_F8_E4M3, 1}, {"F8_E5M2", ST_F8_E5M2, 1},
};
#define ST_N_DTYPES (sizeof(st_dtypes) / sizeof(st_dtypes[0]))

const char *st_dtype_name(st_dtype d) {
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dtype == d) return st_dtypes[i].name;
    return "?";
}

size_t st_dtype_size(st_dtype d) {
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dtype == d) return st_dtypes[i].size;
    return 0;
}

static int st_dtype_lookup(const char *name, st_dtype *out) {
    for (size_t i = 0; i < ST_N_DTYPES; i++) {
        if (strcmp(st_dtypes[i].name, name) == 0) {
            *out = st_dtypes[i].dtype;
            return 1;
        }
    }
    return 0;
}

void st_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* Reads one JSON integer >= 0 that fits in int64. */
static int st_json_uint(const json_t *v, int64_t *out) {
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0) return 0;
    *out = (int64_t)x;
    return 1;
}

/* One header entry -> tensor; data section is [base, base + data_len). */
static int st_parse_entry(const char *fname, const char *key, const json_t *entry,
                          const uint8_t *base, size_t data_len, st_tensor *t, int64_t range[2],
                          char *err, size_t errlen) {
    if (!json_is_object(entry)) {
        snprintf(err, errlen, "%s: tensor '%s': header entry is not an object", fname, key);
        return ST_ERR_FORMAT;
    }
    const json_t *jd = json_object_get(entry, "dtype");
    const json_t *js = json_object_get(entry, "shape");
    const json_t *jo = json_object_get(entry, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo)) {
        snprintf(err, errlen,
                 "%s: tensor '%s': needs string 'dtype', arrays 'shape' and "
                 "'data_offsets'",
                 fname, key);
        return ST_ERR_FORMAT;
    }
    if (!st_dtype_lookup(json_string_value(jd), &t->dtype)) {
        snprintf(err, errlen, "%s: tensor '%s': unknown dtype '%.32s'", fname, key,
                 json_string_value(jd));
        return ST_ERR_FORMAT;
    }
    size_t ndim = json_array_size(js);
    if (ndim > ST_MAX_DIMS) {
        snprintf(err, errlen, "%s: tensor '%s': %zu dimensions (at most %d)", fname, key, ndim,
                 ST_MAX_DIMS);
        return ST_ERR_FORMAT;
    }
    t->ndim = (int)ndim;
    int64_t numel = 1;
    for (size_t d = 0; d < ndim; d++) {
        int64_t dim;
        if (!st_json_uint(json_array_get(js, d), &dim)) {
            snprintf(err, errlen, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                     fname, key, d);
            return ST_ERR_FORMAT;
        }
        t->shape[d] = dim;
        /* Any real tensor fits in the file, so a product over 2^62 is a lie. */
        if (dim != 0 && numel > (INT64_C(1) << 62) / dim) {
            snprintf(err, errlen, "%s: tensor '%s': shape is absurdly large", fname, key);
            return ST_ERR_FORMAT;
        }
        numel *= dim;
    }
    t->numel = numel;
    int64_t begin, end;
    if (json_array_size(jo) != 2 || !st_json_uint(json_array_get(jo, 0), &begin) ||
        !st_json_uint(json_array_get(jo, 1), &end) || begin > end) {
        snprintf(err, errlen,
                 "%s: tensor '%s': data_offsets must be [begin, end] with "
                 "0 <= begin <= end",
                 fname, key);
        return ST_ERR_FORMAT;
    }
    if ((uint64_t)end > data_len) {
        snprintf(err, errlen,
                 "%s: tensor '%s': data_offsets [%lld, %lld] run past the end of "
                 "the data (%zu bytes; file truncated?)",
                 fname, key, (long long)begin, (long long)end, data_len);
        return ST_ERR_FORMAT;
    }
    size_t esize = st_dtype_size(t->dtype);
    /* Divide rather than multiply: numel may be up to 2^62 and numel * esize
     * would wrap to a small byte count (a forged shape passing as 0 bytes). */
    uint64_t span = (uint64_t)(end - begin);
    if (span % esize != 0 || span / esize != (uint64_t)numel) {
        snprintf(err, errlen,
                 "%s: tensor '%s': %lld bytes in data_offsets but shape x %s "
                 "needs %lld x %zu bytes",
                 fname, key, (long long)(end - begin), st_dtype_name(t->dtype), (long long)numel,
                 esize);
        return ST_ERR_FORMAT;
    }
    t->nbytes = (size_t)(end - begin);
    t->data = base + begin;
    range[0] = begin;
    range[1] = end;
    return ST_OK;
}

typedef struct {
    int64_t begin, end;
    int idx;
} st_range;

static int st_range_cmp(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

int st_parse(const void *data, size_t len, const char *name, st_file **out, char *err,
             size_t errlen) {
    const uint8_t *bytes = data;
    st_file *f = NULL;
    json_t *root = NULL;
    st_range *ranges = NULL;
    int rc = ST_ERR_FORMAT;
    *out = NULL;

    if (len < 8) {
        snprintf(err, errlen, "%s: %zu bytes is too short for a safetensors file", name, len);
        goto cleanup;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | bytes[i];
    if (hlen > ST_MAX_HEADER_BYTES || hlen > len - 8) {
        snprintf(err, errlen,
                 "%s: header length %llu is impossible for a %zu-byte file "
                 "(corrupt or not safetensors)",
                 name, (unsigned long long)hlen, len);
        goto cleanup;
    }
    json_error_t jerr;
    root = json_loadb((const char *)bytes + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        snprintf(err, errlen, "%s: header is not a JSON object: %s", name,
                 root ? "wrong type" : jerr.text);
        goto cleanup;
    }
    f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(name))) goto nomem;
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof(*f->tensors));
    ranges = calloc(n ? n : 1, sizeof(*ranges));
    if (!f->tensors || !ranges) goto nomem;

    const uint8_t *base = bytes + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    const char *key;
    json_t *entry;
    json_object_foreach(root, key, entry) {
        if (strcmp(key, "__metadata__") == 0) continue;
        st_tensor *t = &f->tensors[f->n_tensors];
        int64_t range[2];
        rc = st_parse_entry(name, key, entry, base, data_len, t, range, err, errlen);
        if (rc != ST_OK) goto cleanup;
        if (!(t->name = strdup(key))) goto nomem;
        ranges[f->n_tensors] = (st_range){range[0], range[1], f->n_tensors};
        f->n_tensors++;
    }
    /* Overlapping tensors mean a forged or corrupt header: writers lay tensors
     * out back to back. Empty tensors occupy nothing and may share offsets. */
    qsort(ranges, (size_t)f->n_tensors, sizeof(*ranges), st_range_cmp);
    int64_t prev_end = 0;
    int prev_idx = -1;
    for (int i = 0; i < f->n_tensors; i++) {
        if (ranges[i].begin == ranges[i].end) continue;
        if (prev_idx >= 0 && ranges[i].begin < prev_end) {
            snprintf(err, errlen, "%s: tensor '%s' overlaps tensor '%s' in the data section", name,
                     f->tensors[ranges[i].idx].name, f->tensors[prev_idx].name);
            rc = ST_ERR_FORMAT;
            goto cleanup;
        }
        prev_end = ranges[i].end;
        prev_idx = ranges[i].idx;
    }
    rc = ST_OK;
    *out = f;
    f = NULL;
    goto cleanup;
nomem:
    snprintf(err, errlen, "%s: out of memory reading the header", name);
    rc = ST_ERR_NOMEM;
cleanup:
    free(ranges);
    json_decref(root);
    st_close(f);
    return rc;
}

int st_map_file(const char *path, size_t min_len, st_parse_fn parse, st_file **out, char *err,
                size_t errlen) {
    *out = NULL;
    int fd = -1;
    size_t len = 0;
    /* Never blocks on a FIFO; refuses devices and directories by name. */
    if (fio_open_regular(path, &fd, &len, err, errlen) != FIO_OK) return ST_ERR_IO;
    if (len < min_len || len == 0) {
        snprintf(err, errlen, "%s: %zu bytes is too short for a weights file", path, len);
        close(fd);
        return ST_ERR_FORMAT;
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
        return ST_ERR_IO;
    }
    /* Start reading the weights in now, in the background: otherwise the first
     * request after /readyz pays for faulting in the whole file. */
    (void)madvise(map, len, MADV_WILLNEED);
    int rc = parse(map, len, path, out, err, errlen);
    if (rc != ST_OK) {
        munmap(map, len);
        return rc;
    }
    (*out)->map = map;
    (*out)->map_len = len;
    return ST_OK;
}

int st_open(const char *path, st_file **out, char *err, size_t errlen) {
    return st_map_file(path, 8, st_parse, out, err, errlen);
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise into a float exponent */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

float st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

int st_to_f32(const st_tensor *t, float *dst) {
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, src, t->nbytes);
        return ST_OK;
    case ST_F16:
    case ST_BF16:
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t v = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)); /* little endian */
            dst[i] = t->dtype == ST_F16 ? st_f16_to_f32(v) : st_bf16_to_f32(v);
        }
        return ST_OK;
    default:
        return ST_ERR_FORMAT;
    }
}
