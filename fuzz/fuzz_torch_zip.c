/* fuzz_torch_zip: tz_parse (a pytorch_model.bin: zip directory, then the
 * strict pickle reader over data.pkl) over arbitrary bytes, then st_to_f32
 * on every float tensor that parsed.
 *
 * The zip's offsets and sizes, the pickle's opcodes, memo slots, storage
 * keys, sizes, strides and offsets are all attacker-controlled. torch_zip.h
 * promises that an accepted file gives tensors with a known dtype, numel x
 * dtype size == nbytes (no wrap-around), bytes inside the input, sorted
 * unique names; a refusal carries a message naming the file. This harness
 * checks each promise (a lie aborts) and converts each float tensor into a
 * buffer sized from numel, so an undersized nbytes shows up under ASan.
 * Seeds are real torch.save files (make_seeds.py). */
#include "fuzz_common.h"
#include "torch_zip.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    char err[512];
    err[0] = 0;
    int rc = tz_parse(data, size, "fuzz.bin", &f, err, sizeof(err));
    FUZZ_CHECK(fuzz_terminated(err, sizeof(err)), "error message not terminated");
    if (rc != ST_OK) {
        FUZZ_CHECK(f == NULL, "tz_parse failed (%d) but returned a file", rc);
        FUZZ_CHECK(rc == ST_ERR_FORMAT || rc == ST_ERR_NOMEM, "unexpected status %d", rc);
        FUZZ_CHECK(strncmp(err, "fuzz.bin: ", 10) == 0, "message does not name the file: %s", err);
        return 0;
    }
    FUZZ_CHECK(f != NULL && f->n_tensors >= 0, "tz_parse succeeded without a file");
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(t->name != NULL, "tensor %d has no name", i);
        FUZZ_CHECK(i == 0 || strcmp(f->tensors[i - 1].name, t->name) < 0,
                   "tensor names not sorted and unique at '%s'", t->name);
        fuzz_check_tensor(t, data, size);
    }
    st_close(f);
    return 0;
}
