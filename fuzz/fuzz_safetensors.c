/* fuzz_safetensors: st_parse over arbitrary bytes, then st_to_f32 on every
 * tensor that parsed.
 *
 * The header's offsets, shapes and dtypes are attacker-controlled; the
 * contract in safetensors.h promises that a file which parses has tensors
 * whose bytes lie inside the data section and whose shape times dtype size is
 * exactly their byte length. This harness checks those promises directly (a
 * lie aborts) and then converts each float tensor into a buffer sized from
 * numel, so an undersized nbytes shows up as an ASan report. */
#include "fuzz_common.h"
#include "safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    char err[512];
    err[0] = 0;
    int rc = st_parse(data, size, "fuzz.safetensors", &f, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (rc != ST_OK) {
        FUZZ_CHECK(f == NULL, "st_parse failed (%d) but returned a file", rc);
        FUZZ_CHECK(rc == ST_ERR_FORMAT || rc == ST_ERR_NOMEM, "unexpected status %d", rc);
        FUZZ_CHECK(err[0] != 0, "st_parse failed (%d) without a message", rc);
        return 0;
    }
    FUZZ_CHECK(f != NULL, "st_parse succeeded without a file");
    FUZZ_CHECK(f->n_tensors >= 0, "negative tensor count");
    const uint8_t *end = data + size;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(t->name != NULL, "tensor %d has no name", i);
        FUZZ_CHECK(st_find(f, t->name) != NULL, "st_find misses '%s'", t->name);
        size_t esize = st_dtype_size(t->dtype);
        FUZZ_CHECK(esize > 0, "tensor '%s': dtype %d has no size", t->name, (int)t->dtype);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "tensor '%s': ndim %d", t->name,
                   t->ndim);
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
                       "tensor '%s': st_to_f32 accepted dtype %s", t->name,
                       st_dtype_name(t->dtype));
            continue;
        }
        /* numel floats is at most 2x the input size once the checks above
         * hold, so this allocation is bounded by the input. */
        float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
        if (!dst) continue;
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
    st_close(f);
    return 0;
}
