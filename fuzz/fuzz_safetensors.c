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
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(st_find(f, t->name) != NULL, "st_find misses '%s'", t->name);
        fuzz_check_tensor(t, data, size);
    }
    st_close(f);
    return 0;
}
