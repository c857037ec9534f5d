/* Checkpoint layouts: one weights file or an index of shards, safetensors
 * or PyTorch zip, resolved as transformers resolves them. See checkpoint.h. */
#include "checkpoint.h"

#include "file_io.h"

#include "torch_zip.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Index files list one line per tensor; the largest public models' are a
 * few hundred kilobytes. */
#define CKPT_MAX_INDEX_BYTES (16u << 20)

typedef struct ckpt_ref {
    const char *name; /* the tensor's own name */
    const st_tensor *t;
    const char *file; /* the st_file path it lives in */
} ckpt_ref;

struct ckpt {
    char *path;
    int pytorch;
    st_file **files;
    int n_files;
    ckpt_ref *refs; /* sorted by name */
    int n_refs;
};

static int ckpt_ref_cmp(const void *a, const void *b) {
    return strcmp(((const ckpt_ref *)a)->name, ((const ckpt_ref *)b)->name);
}

void ckpt_close(ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n_files; i++)
        st_close(c->files[i]);
    free(c->files);
    free(c->refs);
    free(c->path);
    free(c);
}

static int ckpt_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int ckpt_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Opens one weights file by its format and appends it to c->files. */
static int ckpt_add_file(ckpt *c, const char *path, st_file **out, char *err, size_t errlen) {
    st_file **grown = realloc(c->files, (size_t)(c->n_files + 1) * sizeof(*grown));
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return ST_ERR_NOMEM;
    }
    c->files = grown;
    int rc = c->pytorch ? tz_open(path, out, err, errlen) : st_open(path, out, err, errlen);
    if (rc != ST_OK) return rc;
    c->files[c->n_files++] = *out;
    return ST_OK;
}

static int ckpt_sort_refs(ckpt *c, char *err, size_t errlen) {
    qsort(c->refs, (size_t)c->n_refs, sizeof(*c->refs), ckpt_ref_cmp);
    for (int i = 1; i < c->n_refs; i++) {
        if (strcmp(c->refs[i - 1].name, c->refs[i].name) == 0) {
            snprintf(err, errlen, "%s: tensor '%s' appears twice", c->path, c->refs[i].name);
            return ST_ERR_FORMAT;
        }
    }
    return ST_OK;
}

static int ckpt_open_single(const char *path, int pytorch, ckpt **out, char *err, size_t errlen) {
    ckpt *c = calloc(1, sizeof(*c));
    st_file *f = NULL;
    int rc = ST_ERR_NOMEM;
    if (!c || !(c->path = strdup(path))) goto nomem;
    c->pytorch = pytorch;
    if ((rc = ckpt_add_file(c, path, &f, err, errlen)) != ST_OK) goto fail;
    c->refs = calloc(f->n_tensors ? (size_t)f->n_tensors : 1, sizeof(*c->refs));
    if (!c->refs) goto nomem;
    for (int i = 0; i < f->n_tensors; i++)
        c->refs[c->n_refs++] = (ckpt_ref){f->tensors[i].name, &f->tensors[i], f->path};
    if ((rc = ckpt_sort_refs(c, err, errlen)) != ST_OK) goto fail;
    *out = c;
    return ST_OK;
nomem:
    snprintf(err, errlen, "%s: out of memory", path);
    rc = ST_ERR_NOMEM;
fail:
    ckpt_close(c);
    return rc;
}

/* A shard name from a weight_map: a plain file name next to the index, never
 * a path that could reach outside the checkpoint directory. */
static int ckpt_shard_name_ok(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n < 256 && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int ckpt_open_index(const char *index_path, ckpt **out, char *err, size_t errlen) {
    *out = NULL;
    ckpt *c = calloc(1, sizeof(*c));
    json_t *root = NULL;
    char *dir = NULL;
    int rc = ST_ERR_NOMEM;
    if (!c || !(c->path = strdup(index_path)) || !(dir = strdup(index_path))) goto nomem;
    c->pytorch = ckpt_ends_with(index_path, ".bin.index.json");
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        dir[0] = '\0';

    char *text = NULL;
    size_t text_len = 0;
    int frc = fio_read_all(index_path, CKPT_MAX_INDEX_BYTES, &text, &text_len, err, errlen);
    if (frc != FIO_OK) {
        rc = frc == FIO_ERR_TOO_BIG ? ST_ERR_FORMAT : ST_ERR_IO;
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    rc = ST_ERR_FORMAT;
    if (!root) {
        snprintf(err, errlen, "%s: invalid JSON at line %d: %s", index_path, jerr.line, jerr.text);
        goto fail;
    }
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        snprintf(err, errlen, "%s: needs an object 'weight_map' (tensor name -> shard file)",
                 index_path);
        goto fail;
    }
    size_t n = json_object_size(wm);
    if (n == 0) {
        snprintf(err, errlen, "%s: 'weight_map' is empty", index_path);
        goto fail;
    }
    c->refs = calloc(n, sizeof(*c->refs));
    if (!c->refs) goto nomem;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const char *shard = json_string_value(val);
        if (!shard || !ckpt_shard_name_ok(shard)) {
            snprintf(err, errlen,
                     "%s: weight_map['%.200s'] must be a file name in the same directory",
                     index_path, key);
            goto fail;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s%s", dir, shard);
        st_file *f = NULL;
        for (int i = 0; i < c->n_files && !f; i++)
            if (strcmp(c->files[i]->path, path) == 0) f = c->files[i];
        if (!f && (rc = ckpt_add_file(c, path, &f, err, errlen)) != ST_OK) goto fail;
        rc = ST_ERR_FORMAT;
        const st_tensor *t = st_find(f, key);
        if (!t) {
            snprintf(err, errlen,
                     "%s: weight_map puts tensor '%.200s' in %s, which has no such "
                     "tensor",
                     index_path, key, shard);
            goto fail;
        }
        c->refs[c->n_refs++] = (ckpt_ref){t->name, t, f->path};
    }
    if ((rc = ckpt_sort_refs(c, err, errlen)) != ST_OK) goto fail;
    *out = c;
    c = NULL;
    rc = ST_OK;
    goto cleanup;
nomem:
    snprintf(err, errlen, "%s: out of memory", index_path);
    rc = ST_ERR_NOMEM;
fail:
cleanup:
    json_decref(root);
    free(dir);
    ckpt_close(c);
    return rc;
}

int ckpt_open(const char *dir, ckpt **out, char *err, size_t errlen) {
    static const struct {
        const char *file;
        int pytorch, index;
    } layouts[] = {
        {"model.safetensors", 0, 0},
        {"model.safetensors.index.json", 0, 1},
        {"pytorch_model.bin", 1, 0},
        {"pytorch_model.bin.index.json", 1, 1},
    };
    char path[4096];
    *out = NULL;
    for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, layouts[i].file);
        if (!ckpt_exists(path)) continue;
        return layouts[i].index ? ckpt_open_index(path, out, err, errlen)
                                : ckpt_open_single(path, layouts[i].pytorch, out, err, errlen);
    }
    static const char *unsupported[] = {"tf_model.h5", "flax_model.msgpack", "model.ckpt.index",
                                        "model.onnx", "onnx/model.onnx"};
    const char *found = NULL;
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]) && !found; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, unsupported[i]);
        if (ckpt_exists(path)) found = unsupported[i];
    }
    snprintf(err, errlen,
             "%s: no weights: cannot open model.safetensors, model.safetensors.index.json, "
             "pytorch_model.bin or pytorch_model.bin.index.json%s%s%s",
             dir, found ? "; found " : "", found ? found : "",
             found ? ", which is not read (convert it with transformers' save_pretrained)" : "");
    return ST_ERR_IO;
}

const st_tensor *ckpt_find(const ckpt *c, const char *name, const char **file) {
    ckpt_ref key = {.name = name};
    const ckpt_ref *r = bsearch(&key, c->refs, (size_t)c->n_refs, sizeof(*r), ckpt_ref_cmp);
    if (file) *file = r ? r->file : c->path;
    return r ? r->t : NULL;
}

const char *ckpt_path(const ckpt *c) {
    return c->path;
}
const char *ckpt_format(const ckpt *c) {
    return c->pytorch ? "pytorch" : "safetensors";
}
int ckpt_n_files(const ckpt *c) {
    return c->n_files;
}
int ckpt_n_tensors(const ckpt *c) {
    return c->n_refs;
}
const st_tensor *ckpt_tensor_at(const ckpt *c, int i) {
    return i >= 0 && i < c->n_refs ? c->refs[i].t : NULL;
}
