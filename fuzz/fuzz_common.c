/* fuzz_common: see fuzz_common.h. */
#include "fuzz_common.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fuzz_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

char *fuzz_locate(const char *env, const char *const *rel) {
    const char *v = env ? getenv(env) : NULL;
    if (v && *v) {
        if (fuzz_exists(v)) return strdup(v);
        fprintf(stderr, "fuzz: $%s=%s does not exist\n", env, v);
        return NULL;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0) n = 0;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    const char *bases[] = {exe, "."};
    for (size_t b = 0; b < 2; b++) {
        if (!*bases[b]) continue;
        for (const char *const *r = rel; *r; r++) {
            size_t len = strlen(bases[b]) + strlen(*r) + 2;
            char *p = malloc(len);
            if (!p) return NULL;
            snprintf(p, len, "%s/%s", bases[b], *r);
            if (fuzz_exists(p)) return p;
            free(p);
        }
    }
    fprintf(stderr, "fuzz: cannot find %s; set $%s (tried relative to %s and .)\n", rel[0],
            env ? env : "?", exe);
    return NULL;
}

static void fuzz_rmtree_flat(const char *path) {
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(path);
}

int fuzz_tmpdir(const char *prefix, char *dir, size_t cap) {
    size_t plen = strlen(prefix);
    DIR *t = opendir("/tmp");
    if (t) {
        struct dirent *e;
        while ((e = readdir(t))) {
            if (strncmp(e->d_name, prefix, plen) != 0 || e->d_name[plen] != '.') continue;
            char *end = NULL;
            long pid = strtol(e->d_name + plen + 1, &end, 10);
            if (!end || *end || pid <= 0) continue;
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* still running */
            char p[PATH_MAX];
            snprintf(p, sizeof(p), "/tmp/%s", e->d_name);
            fuzz_rmtree_flat(p);
        }
        closedir(t);
    }
    snprintf(dir, cap, "/tmp/%s.%ld", prefix, (long)getpid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s\n", dir);
        return -1;
    }
    return 0;
}

int fuzz_utf8_valid(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < n) return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += n + 1;
    }
    return 1;
}

int fuzz_utf8_boundary(const uint8_t *s, size_t len, size_t off) {
    if (off > len) return 0;
    return off == len || (s[off] & 0xc0) != 0x80;
}

int fuzz_terminated(const char *s, size_t cap) {
    return memchr(s, 0, cap) != NULL;
}

void fuzz_write_file(const char *dir, const char *name, const void *data, size_t len) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", p);
        abort();
    }
}

void fuzz_remove_file(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    unlink(p);
}

void fuzz_check_tensor(const st_tensor *t, const uint8_t *data, size_t size) {
    const uint8_t *end = data + size;
    FUZZ_CHECK(t->name != NULL, "a tensor has no name");
    size_t esize = st_dtype_size(t->dtype);
    FUZZ_CHECK(esize > 0, "tensor '%s': dtype %d has no size", t->name, (int)t->dtype);
    FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "tensor '%s': ndim %d", t->name, t->ndim);
    int64_t prod = 1;
    for (int d = 0; d < t->ndim; d++) {
        FUZZ_CHECK(t->shape[d] >= 0, "tensor '%s': shape[%d] < 0", t->name, d);
        FUZZ_CHECK(!__builtin_mul_overflow(prod, t->shape[d], &prod),
                   "tensor '%s': shape product overflows", t->name);
    }
    FUZZ_CHECK(prod == t->numel, "tensor '%s': numel %lld but shape product %lld", t->name,
               (long long)t->numel, (long long)prod);
    /* The contract the loader relies on: numel elements of the dtype are
     * exactly nbytes, computed without wrap-around. */
    uint64_t need;
    FUZZ_CHECK(!__builtin_mul_overflow((uint64_t)t->numel, (uint64_t)esize, &need),
               "tensor '%s': numel %lld x %zu-byte %s overflows 64 bits but was accepted "
               "with nbytes %zu",
               t->name, (long long)t->numel, esize, st_dtype_name(t->dtype), t->nbytes);
    FUZZ_CHECK(need == t->nbytes, "tensor '%s': numel x dtype size = %llu but nbytes = %zu",
               t->name, (unsigned long long)need, t->nbytes);
    const uint8_t *p = t->data;
    FUZZ_CHECK(t->nbytes == 0 || (p >= data && p <= end && t->nbytes <= (size_t)(end - p)),
               "tensor '%s': bytes outside the input", t->name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
        float dummy;
        FUZZ_CHECK(st_to_f32(t, &dummy) == ST_ERR_FORMAT,
                   "tensor '%s': st_to_f32 accepted dtype %s", t->name, st_dtype_name(t->dtype));
        return;
    }
    /* numel floats is at most 2x the input size once the checks above
     * hold, so this allocation is bounded by the input. */
    float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
    if (!dst) return;
    FUZZ_CHECK(st_to_f32(t, dst) == ST_OK, "tensor '%s': st_to_f32 refused %s", t->name,
               st_dtype_name(t->dtype));
    /* Touch every value so MSan-style uninitialised reads would show and
     * the conversion cannot be optimised away. */
    volatile float sink = 0;
    for (int64_t k = 0; k < t->numel; k++)
        sink += dst[k];
    (void)sink;
    free(dst);
}
