/* OpenBLAS kernel choice: see blas_cpu.h. */
#include "blas_cpu.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>
#include <unistd.h>

/* Set in the environment of the re-executed program: what OpenBLAS had
 * detected, and that the correction was made (so it is made at most once). */
#define BLAS_CPU_MARK "BERT_OPENBLAS_DETECTED"

static int blas_core_in(const char *core, const char *const *set) {
    for (; *set; set++)
        if (strcasecmp(core, *set) == 0) return 1;
    return 0;
}

/* The kernels this CPU should get, or NULL when OpenBLAS's own choice is as
 * good as any: cores of 0.3.21's DYNAMIC_ARCH list that use AVX-512 or AVX2. */
static const char *blas_cpu_wanted(const char *detected) {
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    static const char *const avx2[] = {"Haswell",        "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids", NULL};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return blas_core_in(detected, avx512) ? NULL : "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return blas_core_in(detected, avx2) ? NULL : "Haswell";
    return NULL;
}

void blas_cpu_fix(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv(BLAS_CPU_MARK)) return;
    /* Under valgrind the program must not exec itself: valgrind would let the
     * new image run natively, unchecked. */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) return;
    const char *detected = openblas_get_corename();
    const char *want = detected ? blas_cpu_wanted(detected) : NULL;
    const char *self = (const char *)getauxval(AT_EXECFN);
    if (!want || !self) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv(BLAS_CPU_MARK, detected, 1);
    execv(self, argv);
    /* exec failed: carry on with the detected kernels */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(BLAS_CPU_MARK);
}

const char *blas_cpu_core(const char **how, const char **was) {
    const char *mark = getenv(BLAS_CPU_MARK);
    *was = mark ? mark : "";
    *how = mark ? "corrected" : getenv("OPENBLAS_CORETYPE") ? "OPENBLAS_CORETYPE" : "detected";
    return openblas_get_corename();
}
