/* PyTorch zip checkpoints (torch.save since 1.6): the zip's central
 * directory, then data.pkl through a strict pickle reader that builds tensor
 * views of the stored storages and never runs anything. See torch_zip.h. */
#include "torch_zip.h"

#include "file_io.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_LEGACY_HINT                                                                             \
    "re-save it with torch>=1.6 (torch.save(torch.load(path), path)) or convert it to "            \
    "model.safetensors"

/* ---- zip --------------------------------------------------------------- */

typedef struct tz_entry {
    const char *name; /* inside the input, not NUL-terminated */
    size_t name_len;
    const uint8_t *data;
    uint64_t size;
    int stored; /* method 0, not encrypted: data is the file's bytes */
} tz_entry;

static uint16_t tz_rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t tz_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t tz_rd64(const uint8_t *p) {
    return (uint64_t)tz_rd32(p) | ((uint64_t)tz_rd32(p + 4) << 32);
}

static int tz_entry_cmp(const void *a, const void *b) {
    const tz_entry *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return x->name_len < y->name_len ? -1 : (x->name_len > y->name_len);
}

static const tz_entry *tz_entry_find(const tz_entry *e, size_t n, const char *name, size_t len) {
    tz_entry key = {.name = name, .name_len = len};
    return bsearch(&key, e, n, sizeof(*e), tz_entry_cmp);
}

/* Zip64 extra field (id 1): 64-bit values for the 32-bit fields that hold
 * 0xFFFFFFFF, in the order uncompressed size, compressed size, offset. */
static int tz_zip64_extra(const uint8_t *x, size_t xlen, uint64_t *usize, uint64_t *csize,
                          uint64_t *off) {
    size_t p = 0;
    while (p + 4 <= xlen) {
        uint16_t id = tz_rd16(x + p), sz = tz_rd16(x + p + 2);
        if (p + 4 + sz > xlen) return 0;
        if (id == 1) {
            size_t q = p + 4, end = p + 4 + sz;
            uint64_t *fields[3] = {usize, csize, off};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xFFFFFFFFu) continue;
                if (q + 8 > end) return 0;
                *fields[i] = tz_rd64(x + q);
                q += 8;
            }
            return 1;
        }
        p += 4 + (size_t)sz;
    }
    return 1;
}

/* Reads the central directory into a sorted array of entries. */
static int tz_zip_read(const uint8_t *b, size_t len, const char *name, tz_entry **out, size_t *nout,
                       char *err, size_t errlen) {
    *out = NULL;
    *nout = 0;
    if (len < 4 || memcmp(b, "PK\x03\x04", 4) != 0) {
        if (len >= 2 && b[0] == 0x80 && b[1] <= 5)
            snprintf(err, errlen,
                     "%s: a pre-1.6 (legacy, non-zip) torch.save file, which is not supported: "
                     "%s",
                     name, TZ_LEGACY_HINT);
        else if (len >= 262 && memcmp(b + 257, "ustar", 5) == 0)
            snprintf(err, errlen,
                     "%s: a tar-format (torch<0.4) torch.save file, which is not supported: %s",
                     name, TZ_LEGACY_HINT);
        else
            snprintf(err, errlen, "%s: not a PyTorch checkpoint (no zip signature)", name);
        return ST_ERR_FORMAT;
    }
    size_t eocd = SIZE_MAX;
    if (len >= 22) {
        size_t lo = len - 22 > 65535 ? len - 22 - 65535 : 0;
        for (size_t p = len - 22 + 1; p-- > lo;) {
            if (tz_rd32(b + p) == 0x06054b50u) {
                eocd = p;
                break;
            }
        }
    }
    if (eocd == SIZE_MAX) {
        snprintf(err, errlen, "%s: zip end-of-central-directory record not found (truncated?)",
                 name);
        return ST_ERR_FORMAT;
    }
    uint64_t count = tz_rd16(b + eocd + 10);
    uint64_t cd_size = tz_rd32(b + eocd + 12);
    uint64_t cd_off = tz_rd32(b + eocd + 16);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (eocd < 20 || tz_rd32(b + eocd - 20) != 0x07064b50u) {
            snprintf(err, errlen, "%s: zip64 end-of-central-directory locator missing", name);
            return ST_ERR_FORMAT;
        }
        uint64_t e64 = tz_rd64(b + eocd - 20 + 8);
        if (e64 > len || len - e64 < 56 || tz_rd32(b + e64) != 0x06064b50u) {
            snprintf(err, errlen, "%s: zip64 end-of-central-directory record is corrupt", name);
            return ST_ERR_FORMAT;
        }
        count = tz_rd64(b + e64 + 32);
        cd_size = tz_rd64(b + e64 + 40);
        cd_off = tz_rd64(b + e64 + 48);
    }
    if (cd_off > len || cd_size > len - cd_off || count > cd_size / 46) {
        snprintf(err, errlen,
                 "%s: zip central directory (%llu entries, %llu bytes at %llu) does not fit the "
                 "%zu-byte file",
                 name, (unsigned long long)count, (unsigned long long)cd_size,
                 (unsigned long long)cd_off, len);
        return ST_ERR_FORMAT;
    }
    tz_entry *e = calloc(count ? (size_t)count : 1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "%s: out of memory reading the zip directory", name);
        return ST_ERR_NOMEM;
    }
    const uint8_t *cd = b + cd_off;
    size_t pos = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (cd_size - pos < 46 || tz_rd32(cd + pos) != 0x02014b50u) goto corrupt;
        const uint8_t *h = cd + pos;
        uint16_t flags = tz_rd16(h + 8), method = tz_rd16(h + 10);
        uint64_t csize = tz_rd32(h + 20), usize = tz_rd32(h + 24);
        size_t nlen = tz_rd16(h + 28), xlen = tz_rd16(h + 30), clen = tz_rd16(h + 32);
        uint64_t loff = tz_rd32(h + 42);
        if (cd_size - pos - 46 < nlen + xlen + clen) goto corrupt;
        if (!tz_zip64_extra(h + 46 + nlen, xlen, &usize, &csize, &loff)) goto corrupt;
        e[i].name = (const char *)h + 46;
        e[i].name_len = nlen;
        if (loff > len || len - loff < 30 || tz_rd32(b + loff) != 0x04034b50u) goto corrupt;
        uint64_t data_off = loff + 30 + tz_rd16(b + loff + 26) + tz_rd16(b + loff + 28);
        if (data_off > len || csize > len - data_off) {
            snprintf(err, errlen, "%s: zip entry '%.*s' runs past the end of the file (truncated?)",
                     name, (int)(nlen > 200 ? 200 : nlen), e[i].name);
            free(e);
            return ST_ERR_FORMAT;
        }
        e[i].data = b + data_off;
        e[i].size = csize;
        e[i].stored = method == 0 && !(flags & 1) && csize == usize;
        pos += 46 + nlen + xlen + clen;
    }
    qsort(e, (size_t)count, sizeof(*e), tz_entry_cmp);
    for (uint64_t i = 1; i < count; i++) {
        if (tz_entry_cmp(&e[i - 1], &e[i]) == 0) {
            snprintf(err, errlen, "%s: zip entry '%.*s' appears twice", name,
                     (int)(e[i].name_len > 200 ? 200 : e[i].name_len), e[i].name);
            free(e);
            return ST_ERR_FORMAT;
        }
    }
    *out = e;
    *nout = (size_t)count;
    return ST_OK;
corrupt:
    snprintf(err, errlen, "%s: zip central directory entry %zu is corrupt", name, (size_t)pos);
    free(e);
    return ST_ERR_FORMAT;
}

/* ---- strict pickle reader --------------------------------------------- */

typedef enum {
    PV_MARK,
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_STR,
    PV_TUPLE,
    PV_LIST,
    PV_DICT, /* items hold key, value, key, value, ... */
    PV_GLOBAL,
    PV_STORAGE,
    PV_TENSOR,
} pv_kind;

typedef enum {
    PG_ORDERED_DICT,
    PG_REBUILD_TENSOR,
    PG_REBUILD_PARAMETER,
    PG_REBUILD_PARAMETER_STATE, /* a Parameter with Python attributes, which are ignored */
    PG_STORAGE,
} pv_global;

typedef struct pv {
    pv_kind kind;
    int64_t i;      /* BOOL, INT; GLOBAL: its pv_global */
    st_dtype dtype; /* GLOBAL PG_STORAGE, STORAGE, TENSOR */
    char *s;        /* STR, NUL-terminated */
    struct pv **items;
    size_t n, cap;
    /* TENSOR: a view of storage, checked against the archive once its name
     * (the state dict key) is known. STORAGE: i = numel, s = key. */
    struct pv *storage;
    int64_t offset;
    int ndim;
    int64_t shape[ST_MAX_DIMS], stride[ST_MAX_DIMS];
} pv;

typedef struct pk_vm {
    const char *name; /* the checkpoint file, for messages */
    const uint8_t *p; /* data.pkl */
    size_t len, pos;
    pv **all; /* every value made, freed together */
    size_t n_all, cap_all;
    pv **stack;
    size_t sp, cap_stack;
    pv **memo;
    size_t n_memo, cap_memo;
    const tz_entry *entries;
    size_t n_entries;
    const char *prefix; /* the archive's top folder, e.g. "pytorch_model" */
    size_t prefix_len;
    char *err;
    size_t errlen;
} pk_vm;

static pv pk_mark_value = {.kind = PV_MARK};

static int pk_grow(void *pp, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*(void **)pp, c * size);
    if (!q) return 0;
    *(void **)pp = q;
    *cap = c;
    return 1;
}

__attribute__((format(printf, 2, 3))) static int pk_fail(pk_vm *vm, const char *fmt, ...);

static int pk_fail(pk_vm *vm, const char *fmt, ...) {
    int n = snprintf(vm->err, vm->errlen, "%s: data.pkl: ", vm->name);
    if (n >= 0 && (size_t)n < vm->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(vm->err + n, vm->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return ST_ERR_FORMAT;
}

static int pk_nomem(pk_vm *vm) {
    snprintf(vm->err, vm->errlen, "%s: out of memory reading data.pkl", vm->name);
    return ST_ERR_NOMEM;
}

static pv *pk_new(pk_vm *vm, pv_kind kind) {
    if (!pk_grow(&vm->all, &vm->cap_all, vm->n_all + 1, sizeof(pv *))) return NULL;
    pv *v = calloc(1, sizeof(*v));
    if (!v) return NULL;
    v->kind = kind;
    vm->all[vm->n_all++] = v;
    return v;
}

static int pk_push(pk_vm *vm, pv *v) {
    if (!v || !pk_grow(&vm->stack, &vm->cap_stack, vm->sp + 1, sizeof(pv *))) return pk_nomem(vm);
    vm->stack[vm->sp++] = v;
    return ST_OK;
}

/* Pops one value; NULL on an empty stack or a mark (the caller reports). */
static pv *pk_pop(pk_vm *vm) {
    if (vm->sp == 0 || vm->stack[vm->sp - 1]->kind == PV_MARK) return NULL;
    return vm->stack[--vm->sp];
}

static pv *pk_top(pk_vm *vm) {
    if (vm->sp == 0 || vm->stack[vm->sp - 1]->kind == PV_MARK) return NULL;
    return vm->stack[vm->sp - 1];
}

/* Index of the topmost mark, or SIZE_MAX. */
static size_t pk_find_mark(pk_vm *vm) {
    for (size_t i = vm->sp; i-- > 0;)
        if (vm->stack[i]->kind == PV_MARK) return i;
    return SIZE_MAX;
}

static int pk_append(pk_vm *vm, pv *c, pv *item) {
    if (!pk_grow(&c->items, &c->cap, c->n + 1, sizeof(pv *))) return pk_nomem(vm);
    c->items[c->n++] = item;
    return ST_OK;
}

/* Builds a tuple of stack[from..sp) and replaces them (and the mark just
 * below when with_mark) with it. */
static int pk_make_tuple(pk_vm *vm, size_t from, int with_mark) {
    pv *t = pk_new(vm, PV_TUPLE);
    if (!t) return pk_nomem(vm);
    size_t n = vm->sp - from;
    if (n && !pk_grow(&t->items, &t->cap, n, sizeof(pv *))) return pk_nomem(vm);
    if (n) memcpy(t->items, vm->stack + from, n * sizeof(pv *));
    t->n = n;
    vm->sp = with_mark ? from - 1 : from;
    return pk_push(vm, t);
}

static const struct {
    const char *name;
    st_dtype dtype;
} pk_storages[] = {
    {"FloatStorage", ST_F32},  {"HalfStorage", ST_F16}, {"BFloat16Storage", ST_BF16},
    {"DoubleStorage", ST_F64}, {"LongStorage", ST_I64}, {"IntStorage", ST_I32},
    {"ShortStorage", ST_I16},  {"CharStorage", ST_I8},  {"ByteStorage", ST_U8},
    {"BoolStorage", ST_BOOL},
};

static int pk_ident_ok(const char *s, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* GLOBAL "module\nname\n": only the names a state dict is made of. */
static int pk_global(pk_vm *vm) {
    const char *s = (const char *)vm->p + vm->pos;
    size_t left = vm->len - vm->pos;
    const char *nl1 = memchr(s, '\n', left);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', left - (size_t)(nl1 + 1 - s)) : NULL;
    if (!nl2) return pk_fail(vm, "GLOBAL at byte %zu is truncated", vm->pos - 1);
    size_t mlen = (size_t)(nl1 - s), nlen = (size_t)(nl2 - nl1 - 1);
    const char *mod = s, *nm = nl1 + 1;
    vm->pos += mlen + nlen + 2;
    if (!pk_ident_ok(mod, mlen) || !pk_ident_ok(nm, nlen))
        return pk_fail(vm, "GLOBAL at byte %zu is not a module and a name",
                       (size_t)(s - (const char *)vm->p) - 1);
    pv *g = pk_new(vm, PV_GLOBAL);
    if (!g) return pk_nomem(vm);
#define PK_IS(m, n)                                                                                \
    (mlen == strlen(m) && memcmp(mod, m, mlen) == 0 && nlen == strlen(n) &&                        \
     memcmp(nm, n, nlen) == 0)
    if (PK_IS("collections", "OrderedDict")) {
        g->i = PG_ORDERED_DICT;
    } else if (PK_IS("torch._utils", "_rebuild_tensor_v2")) {
        g->i = PG_REBUILD_TENSOR;
    } else if (PK_IS("torch._utils", "_rebuild_parameter")) {
        g->i = PG_REBUILD_PARAMETER;
    } else if (PK_IS("torch._utils", "_rebuild_parameter_with_state")) {
        g->i = PG_REBUILD_PARAMETER_STATE;
    } else {
        size_t k = 0, ns = sizeof(pk_storages) / sizeof(pk_storages[0]);
        for (; k < ns; k++)
            if (PK_IS("torch", pk_storages[k].name)) break;
        if (k == ns)
            return pk_fail(vm,
                           "refusing the global '%.*s.%.*s': a state dict needs only "
                           "collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
                           "torch._utils._rebuild_parameter(_with_state) and torch.*Storage, and "
                           "nothing in the file is ever executed",
                           (int)mlen, mod, (int)nlen, nm);
        g->i = PG_STORAGE;
        g->dtype = pk_storages[k].dtype;
    }
#undef PK_IS
    return pk_push(vm, g);
}

/* BINPERSID: ('storage', torch.XStorage, key, location, numel). The
 * archive entry it names is looked up when a tensor uses it. */
static int pk_persid(pk_vm *vm) {
    pv *id = pk_pop(vm);
    if (!id) return pk_fail(vm, "BINPERSID with nothing on the stack");
    if (id->kind != PV_TUPLE || id->n != 5 || id->items[0]->kind != PV_STR ||
        strcmp(id->items[0]->s, "storage") != 0 || id->items[1]->kind != PV_GLOBAL ||
        id->items[1]->i != PG_STORAGE || id->items[2]->kind != PV_STR ||
        id->items[3]->kind != PV_STR || id->items[4]->kind != PV_INT || id->items[4]->i < 0)
        return pk_fail(vm, "persistent id is not ('storage', torch.<T>Storage, key, location, "
                           "numel)");
    pv *s = pk_new(vm, PV_STORAGE);
    if (!s || !(s->s = strdup(id->items[2]->s))) return pk_nomem(vm);
    s->dtype = id->items[1]->dtype;
    s->i = id->items[4]->i;
    return pk_push(vm, s);
}

static int pk_int_tuple(const pv *t, int64_t *dst, int *n) {
    if (t->kind != PV_TUPLE || t->n > ST_MAX_DIMS) return 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i]->kind != PV_INT) return 0;
        dst[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return 1;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks
 * [, metadata]): recorded as a view, checked by tz_check_tensor. */
static int pk_rebuild_tensor(pk_vm *vm, const pv *a) {
    int nstride = -1;
    pv *t = pk_new(vm, PV_TENSOR);
    if (!t) return pk_nomem(vm);
    if ((a->n != 6 && a->n != 7) || a->items[0]->kind != PV_STORAGE ||
        a->items[1]->kind != PV_INT || !pk_int_tuple(a->items[2], t->shape, &t->ndim) ||
        !pk_int_tuple(a->items[3], t->stride, &nstride) || nstride != t->ndim ||
        a->items[4]->kind != PV_BOOL || a->items[5]->kind != PV_DICT ||
        (a->n == 7 && a->items[6]->kind != PV_DICT))
        return pk_fail(vm,
                       "_rebuild_tensor_v2 called with arguments other than (storage, "
                       "offset, size, stride, requires_grad, hooks[, metadata]) "
                       "(at most %d dimensions)",
                       ST_MAX_DIMS);
    if (a->items[5]->n != 0) return pk_fail(vm, "a tensor with backward hooks is not a weight");
    t->storage = a->items[0];
    t->offset = a->items[1]->i;
    return pk_push(vm, t);
}

static int pk_reduce(pk_vm *vm) {
    pv *args = pk_pop(vm), *fn = pk_pop(vm);
    if (!args || !fn) return pk_fail(vm, "REDUCE with too few values on the stack");
    if (fn->kind != PV_GLOBAL || args->kind != PV_TUPLE)
        return pk_fail(vm, "REDUCE of something other than an accepted global");
    switch ((pv_global)fn->i) {
    case PG_ORDERED_DICT: {
        if (args->n != 0) return pk_fail(vm, "OrderedDict called with arguments");
        pv *d = pk_new(vm, PV_DICT);
        if (!d) return pk_nomem(vm);
        return pk_push(vm, d);
    }
    case PG_REBUILD_TENSOR:
        return pk_rebuild_tensor(vm, args);
    case PG_REBUILD_PARAMETER:
        if (args->n != 3 || args->items[0]->kind != PV_TENSOR || args->items[1]->kind != PV_BOOL ||
            args->items[2]->kind != PV_DICT)
            return pk_fail(vm, "_rebuild_parameter called with arguments other than (tensor, "
                               "requires_grad, hooks)");
        return pk_push(vm, args->items[0]);
    case PG_REBUILD_PARAMETER_STATE:
        /* The state is the Parameter's __dict__; its values went through this
         * same reader, so it holds nothing but accepted values. */
        if (args->n != 4 || args->items[0]->kind != PV_TENSOR || args->items[1]->kind != PV_BOOL ||
            args->items[2]->kind != PV_DICT || args->items[3]->kind != PV_DICT)
            return pk_fail(vm, "_rebuild_parameter_with_state called with arguments other than "
                               "(tensor, requires_grad, hooks, state)");
        return pk_push(vm, args->items[0]);
    case PG_STORAGE:
    default:
        return pk_fail(vm, "a storage type may only appear in a storage id, not be called");
    }
}

/* Runs data.pkl to STOP; *result is the value it returns. */
static int pk_run(pk_vm *vm, pv **result) {
    *result = NULL;
    while (vm->pos < vm->len) {
        size_t at = vm->pos;
        uint8_t op = vm->p[vm->pos++];
        size_t left = vm->len - vm->pos;
        const uint8_t *arg = vm->p + vm->pos;
        int rc = ST_OK;
        pv *v = NULL;
        switch (op) {
        case 0x80: /* PROTO */
            if (left < 1) goto truncated;
            if (at != 0 || arg[0] != 2)
                return pk_fail(vm,
                               "pickle protocol %u at byte %zu; torch.save writes protocol 2 "
                               "(its default), which is the only one read",
                               arg[0], at);
            vm->pos += 1;
            break;
        case '}': /* EMPTY_DICT */
        case ']': /* EMPTY_LIST */
        case ')': /* EMPTY_TUPLE */
            v = pk_new(vm, op == '}' ? PV_DICT : op == ']' ? PV_LIST : PV_TUPLE);
            if (!v) return pk_nomem(vm);
            rc = pk_push(vm, v);
            break;
        case 'N':
            if (!(v = pk_new(vm, PV_NONE))) return pk_nomem(vm);
            rc = pk_push(vm, v);
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (!(v = pk_new(vm, PV_BOOL))) return pk_nomem(vm);
            v->i = op == 0x88;
            rc = pk_push(vm, v);
            break;
        case '(': /* MARK */
            rc = pk_push(vm, &pk_mark_value);
            break;
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */
        case 'J': /* BININT */
        {
            size_t w = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if (left < w) goto truncated;
            if (!(v = pk_new(vm, PV_INT))) return pk_nomem(vm);
            v->i = w == 1 ? arg[0] : w == 2 ? tz_rd16(arg) : (int64_t)(int32_t)tz_rd32(arg);
            vm->pos += w;
            rc = pk_push(vm, v);
            break;
        }
        case 0x8a: /* LONG1: n-byte two's complement, little endian */
        {
            if (left < 1 || left - 1 < arg[0]) goto truncated;
            size_t n = arg[0];
            if (n > 8) return pk_fail(vm, "integer of %zu bytes at byte %zu", n, at);
            uint64_t u = 0;
            for (size_t k = 0; k < n; k++)
                u |= (uint64_t)arg[1 + k] << (8 * k);
            if (n > 0 && n < 8 && (arg[n] & 0x80)) u |= ~UINT64_C(0) << (8 * n);
            if (!(v = pk_new(vm, PV_INT))) return pk_nomem(vm);
            memcpy(&v->i, &u, sizeof(u));
            vm->pos += 1 + n;
            rc = pk_push(vm, v);
            break;
        }
        case 'X': /* BINUNICODE */
        {
            if (left < 4) goto truncated;
            uint32_t n = tz_rd32(arg);
            if (left - 4 < n) goto truncated;
            if (memchr(arg + 4, 0, n)) return pk_fail(vm, "string with a NUL at byte %zu", at);
            if (!(v = pk_new(vm, PV_STR)) || !(v->s = malloc((size_t)n + 1))) return pk_nomem(vm);
            memcpy(v->s, arg + 4, n);
            v->s[n] = '\0';
            vm->pos += 4 + (size_t)n;
            rc = pk_push(vm, v);
            break;
        }
        case 'c':
            rc = pk_global(vm);
            break;
        case 'q': /* BINPUT */
        case 'r': /* LONG_BINPUT */
        {
            size_t w = op == 'q' ? 1 : 4;
            if (left < w) goto truncated;
            size_t idx = w == 1 ? arg[0] : tz_rd32(arg);
            vm->pos += w;
            pv *top = pk_top(vm);
            if (!top) return pk_fail(vm, "memo store of nothing at byte %zu", at);
            /* pickle numbers memo slots 0, 1, 2, ...: anything else is not
             * from a pickler, and bounding it bounds the memo. */
            if (idx > vm->n_memo)
                return pk_fail(vm, "memo slot %zu out of sequence at byte %zu", idx, at);
            if (idx == vm->n_memo) {
                if (!pk_grow(&vm->memo, &vm->cap_memo, vm->n_memo + 1, sizeof(pv *)))
                    return pk_nomem(vm);
                vm->n_memo++;
            }
            vm->memo[idx] = top;
            break;
        }
        case 'h': /* BINGET */
        case 'j': /* LONG_BINGET */
        {
            size_t w = op == 'h' ? 1 : 4;
            if (left < w) goto truncated;
            size_t idx = w == 1 ? arg[0] : tz_rd32(arg);
            vm->pos += w;
            if (idx >= vm->n_memo)
                return pk_fail(vm, "memo slot %zu read before it is set, at byte %zu", idx, at);
            rc = pk_push(vm, vm->memo[idx]);
            break;
        }
        case 't': /* TUPLE */
        {
            size_t m = pk_find_mark(vm);
            if (m == SIZE_MAX) return pk_fail(vm, "TUPLE without a mark at byte %zu", at);
            rc = pk_make_tuple(vm, m + 1, 1);
            break;
        }
        case 0x85: /* TUPLE1..3 */
        case 0x86:
        case 0x87: {
            size_t n = (size_t)(op - 0x84);
            for (size_t k = 0; k < n; k++)
                if (vm->sp < n || vm->stack[vm->sp - 1 - k]->kind == PV_MARK)
                    return pk_fail(vm, "TUPLE%zu with too few values at byte %zu", n, at);
            rc = pk_make_tuple(vm, vm->sp - n, 0);
            break;
        }
        case 'Q':
            rc = pk_persid(vm);
            break;
        case 'R':
            rc = pk_reduce(vm);
            break;
        case 'b': /* BUILD: the state dict's _metadata attribute; ignored */
        {
            pv *state = pk_pop(vm), *obj = pk_top(vm);
            if (!state || !obj) return pk_fail(vm, "BUILD with too few values at byte %zu", at);
            if (obj->kind != PV_DICT)
                return pk_fail(vm, "BUILD on something other than an OrderedDict at byte %zu", at);
            break;
        }
        case 's': /* SETITEM */
        {
            pv *val = pk_pop(vm), *key = pk_pop(vm), *d = pk_top(vm);
            if (!val || !key || !d || d->kind != PV_DICT)
                return pk_fail(vm, "SETITEM without a dict at byte %zu", at);
            if ((rc = pk_append(vm, d, key)) || (rc = pk_append(vm, d, val))) return rc;
            break;
        }
        case 'u': /* SETITEMS */
        case 'e': /* APPENDS */
        {
            size_t m = pk_find_mark(vm);
            if (m == SIZE_MAX || m == 0 ||
                vm->stack[m - 1]->kind != (op == 'u' ? PV_DICT : PV_LIST))
                return pk_fail(vm, "%s without a %s below its mark at byte %zu",
                               op == 'u' ? "SETITEMS" : "APPENDS", op == 'u' ? "dict" : "list", at);
            if (op == 'u' && (vm->sp - m - 1) % 2 != 0)
                return pk_fail(vm, "SETITEMS with an odd number of values at byte %zu", at);
            pv *c = vm->stack[m - 1];
            for (size_t k = m + 1; k < vm->sp; k++)
                if ((rc = pk_append(vm, c, vm->stack[k]))) return rc;
            vm->sp = m;
            break;
        }
        case 'a': /* APPEND */
        {
            pv *val = pk_pop(vm), *l = pk_top(vm);
            if (!val || !l || l->kind != PV_LIST)
                return pk_fail(vm, "APPEND without a list at byte %zu", at);
            rc = pk_append(vm, l, val);
            break;
        }
        case '0': /* POP */
            if (!pk_pop(vm)) return pk_fail(vm, "POP of nothing at byte %zu", at);
            break;
        case '.': /* STOP */
            *result = pk_pop(vm);
            if (!*result) return pk_fail(vm, "STOP with nothing on the stack");
            return ST_OK;
        default:
            return pk_fail(vm,
                           "opcode 0x%02x at byte %zu is not one torch.save writes (protocol "
                           "2); refusing it",
                           op, at);
        }
        if (rc != ST_OK) return rc;
    }
    return pk_fail(vm, "ends without STOP (truncated?)");
truncated:
    return pk_fail(vm, "truncated at byte %zu", vm->pos - 1);
}

static void pk_free(pk_vm *vm) {
    for (size_t i = 0; i < vm->n_all; i++) {
        free(vm->all[i]->s);
        free(vm->all[i]->items);
        free(vm->all[i]);
    }
    free(vm->all);
    free(vm->stack);
    free(vm->memo);
}

#define TZ_NAME_MAX 200

/* A tensor view -> its bytes in the archive: the storage's entry exists, is
 * stored, holds the storage's elements; the view is contiguous and inside
 * it. Messages name the tensor. */
static int tz_check_tensor(pk_vm *vm, const char *key, const pv *v, st_tensor *t) {
    const pv *s = v->storage;
    char ename[320];
    int n = snprintf(ename, sizeof(ename), "%.*s/data/%s", (int)vm->prefix_len, vm->prefix, s->s);
    if (n < 0 || (size_t)n >= sizeof(ename))
        return pk_fail(vm, "tensor '%.*s': storage key is too long", TZ_NAME_MAX, key);
    const tz_entry *e = tz_entry_find(vm->entries, vm->n_entries, ename, (size_t)n);
    if (!e)
        return pk_fail(vm, "tensor '%.*s': its storage has no entry '%s' in the archive",
                       TZ_NAME_MAX, key, ename);
    if (!e->stored)
        return pk_fail(vm,
                       "tensor '%.*s': storage entry '%s' is compressed or encrypted; "
                       "torch.save stores storages uncompressed (re-save the checkpoint with "
                       "torch.save)",
                       TZ_NAME_MAX, key, ename);
    uint64_t snumel = (uint64_t)s->i;
    size_t es = st_dtype_size(s->dtype);
    if (snumel > e->size / es)
        return pk_fail(vm,
                       "tensor '%.*s': its storage claims %llu %s elements but '%s' has %llu "
                       "bytes (truncated?)",
                       TZ_NAME_MAX, key, (unsigned long long)snumel, st_dtype_name(s->dtype), ename,
                       (unsigned long long)e->size);
    int64_t numel = 1;
    for (int d = 0; d < v->ndim; d++) {
        if (v->shape[d] < 0)
            return pk_fail(vm, "tensor '%.*s' has a negative size", TZ_NAME_MAX, key);
        if (v->shape[d] != 0 && numel > (INT64_C(1) << 62) / v->shape[d])
            return pk_fail(vm, "tensor '%.*s': size is absurdly large", TZ_NAME_MAX, key);
        numel *= v->shape[d];
    }
    if (numel > 0) {
        int64_t want = 1;
        for (int d = v->ndim - 1; d >= 0; d--) {
            if (v->shape[d] != 1 && v->stride[d] != want)
                return pk_fail(vm,
                               "tensor '%.*s' is not contiguous (stride %lld in dimension %d, "
                               "contiguous is %lld); save it with .contiguous() or as "
                               "safetensors",
                               TZ_NAME_MAX, key, (long long)v->stride[d], d, (long long)want);
            want *= v->shape[d];
        }
    }
    if (v->offset < 0 || (uint64_t)v->offset > snumel ||
        (uint64_t)numel > snumel - (uint64_t)v->offset)
        return pk_fail(vm,
                       "tensor '%.*s' (offset %lld, %lld elements) runs past its storage (%llu "
                       "elements)",
                       TZ_NAME_MAX, key, (long long)v->offset, (long long)numel,
                       (unsigned long long)snumel);
    t->dtype = s->dtype;
    t->ndim = v->ndim;
    memcpy(t->shape, v->shape, sizeof(t->shape));
    t->numel = numel;
    t->nbytes = (size_t)numel * es;
    t->data = e->data + (uint64_t)v->offset * es;
    return ST_OK;
}

static int tz_name_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* The pickle's result -> st_file tensors: a dict of str -> tensor. */
static int tz_collect(pk_vm *vm, const pv *root, st_file *f) {
    if (root->kind != PV_DICT)
        return pk_fail(vm, "the top level is not a state dict (a dict of name -> tensor)");
    size_t n = root->n / 2;
    f->tensors = calloc(n ? n : 1, sizeof(*f->tensors));
    if (!f->tensors) return pk_nomem(vm);
    for (size_t i = 0; i < n; i++) {
        const pv *k = root->items[2 * i], *v = root->items[2 * i + 1];
        if (k->kind != PV_STR) return pk_fail(vm, "state dict key %zu is not a string", i);
        if (v->kind != PV_TENSOR)
            return pk_fail(vm, "state dict entry '%.*s' is not a tensor", TZ_NAME_MAX, k->s);
        st_tensor *t = &f->tensors[f->n_tensors];
        int rc = tz_check_tensor(vm, k->s, v, t);
        if (rc != ST_OK) return rc;
        if (!(t->name = strdup(k->s))) return pk_nomem(vm);
        f->n_tensors++;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof(*f->tensors), tz_name_cmp);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return pk_fail(vm, "tensor '%.*s' appears twice", TZ_NAME_MAX, f->tensors[i].name);
    return ST_OK;
}

int tz_parse(const void *data, size_t len, const char *name, st_file **out, char *err,
             size_t errlen) {
    const uint8_t *b = data;
    tz_entry *entries = NULL;
    size_t n_entries = 0;
    st_file *f = NULL;
    pk_vm vm = {.name = name, .err = err, .errlen = errlen};
    *out = NULL;
    int rc = tz_zip_read(b, len, name, &entries, &n_entries, err, errlen);
    if (rc != ST_OK) return rc;
    rc = ST_ERR_FORMAT;
    /* torch.save names every entry <folder>/...; data.pkl sits right in it. */
    const tz_entry *pkl = NULL;
    for (size_t i = 0; i < n_entries; i++) {
        const tz_entry *e = &entries[i];
        const char *slash = memchr(e->name, '/', e->name_len);
        if (!slash || slash == e->name) continue;
        size_t rest = e->name_len - (size_t)(slash - e->name) - 1;
        if (rest != 8 || memcmp(slash + 1, "data.pkl", 8) != 0) continue;
        if (pkl) {
            snprintf(err, errlen, "%s: more than one data.pkl in the archive", name);
            goto cleanup;
        }
        pkl = e;
        vm.prefix = e->name;
        vm.prefix_len = (size_t)(slash - e->name);
    }
    if (!pkl) {
        snprintf(err, errlen, "%s: zip archive without <folder>/data.pkl: not a torch.save file",
                 name);
        goto cleanup;
    }
    if (!pkl->stored) {
        snprintf(err, errlen, "%s: data.pkl is compressed; torch.save stores it uncompressed",
                 name);
        goto cleanup;
    }
    char bo[300];
    snprintf(bo, sizeof(bo), "%.*s/byteorder", (int)vm.prefix_len, vm.prefix);
    const tz_entry *order = tz_entry_find(entries, n_entries, bo, strlen(bo));
    if (order && !(order->stored && order->size == 6 && memcmp(order->data, "little", 6) == 0)) {
        snprintf(err, errlen,
                 "%s: byteorder is not 'little'; only little-endian checkpoints are read", name);
        goto cleanup;
    }
    vm.p = pkl->data;
    vm.len = (size_t)pkl->size;
    vm.entries = entries;
    vm.n_entries = n_entries;
    pv *root = NULL;
    if ((rc = pk_run(&vm, &root)) != ST_OK) goto cleanup;
    f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(name))) {
        rc = pk_nomem(&vm);
        goto cleanup;
    }
    if ((rc = tz_collect(&vm, root, f)) != ST_OK) goto cleanup;
    *out = f;
    f = NULL;
cleanup:
    pk_free(&vm);
    free(entries);
    st_close(f);
    return rc;
}

int tz_open(const char *path, st_file **out, char *err, size_t errlen) {
    return st_map_file(path, 1, tz_parse, out, err, errlen);
}
