/* blas_cpu: makes OpenBLAS run the kernels this CPU is best at.
 *
 * OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernels once, when the
 * library loads, from the CPU model. A release older than the CPU does not
 * know the model and falls back to a generic core: Debian 12's 0.3.21 reads a
 * Sapphire Rapids Xeon as "Prescott" (SSE3), and its sgemm then runs at 14
 * GFLOP/s on a core where the AVX-512 ("SkylakeX") kernels reach 115
 * (bench/README.md). OPENBLAS_CORETYPE chooses the kernels instead, but only
 * before the library loads; so when the detected core is weaker than what the
 * CPU's feature flags allow, blas_cpu_fix sets it and executes the program
 * again, once. An OPENBLAS_CORETYPE set by the user is always kept.
 *
 * Owns nothing. Call at the very start of main, before any thread starts. */
#ifndef BERT_BLAS_CPU_H
#define BERT_BLAS_CPU_H

/* Re-executes the program (same argv, same pid) with OPENBLAS_CORETYPE set
 * when OpenBLAS chose a core the CPU outclasses; returns when nothing needs
 * doing or the exec failed (the program then runs on the detected kernels). */
void blas_cpu_fix(char **argv);

/* The kernels in use ("SkylakeX", "Haswell", ...) and how they were chosen:
 * "detected", "OPENBLAS_CORETYPE" (the user's) or "corrected" (by blas_cpu_fix,
 * which then also names the detected core in *was). */
const char *blas_cpu_core(const char **how, const char **was);

#endif
