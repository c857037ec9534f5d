/* fuzz_common: what the harnesses share.
 *
 * Owns: the invariant check that turns a broken contract into a crash the
 * fuzzer records (FUZZ_CHECK aborts with a message), locating the files a
 * harness needs (vocab, tiny model) from an environment variable or relative
 * to the harness executable, and a strict UTF-8 validator used as the oracle
 * for the tokenizer's TOK_ERR_UTF8 contract. Nothing here allocates except
 * fuzz_locate, whose result the caller frees. */
#ifndef BERT_FUZZ_COMMON_H
#define BERT_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "safetensors.h"

/* libFuzzer treats abort() as a crash and saves the input; the message says
 * which contract broke, since the stack alone would only show the harness. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Path of a needed file: $env if set, else each of rel[] (NULL-terminated)
 * tried relative to the directory of the running executable, then to the
 * current directory. Returns a malloc'd path to an existing file or
 * directory, or NULL (after printing what was tried). */
char *fuzz_locate(const char *env, const char *const *rel);

/* Creates /tmp/<prefix>.<pid> for a harness's files and returns its path in
 * dir (cap bytes). libFuzzer ends a run with _Exit, so atexit cleanup never
 * runs; instead each call first removes the directories (and the files in
 * them) that earlier, no longer running processes left behind. */
int fuzz_tmpdir(const char *prefix, char *dir, size_t cap);

/* Writes data (len bytes) to dir/name, aborting (a harness defect, not a
 * finding) when it cannot; removes dir/name, ignoring a missing file. */
void fuzz_write_file(const char *dir, const char *name, const void *data, size_t len);
void fuzz_remove_file(const char *dir, const char *name);

/* The st_file contract for one tensor of a file parsed from data (size
 * bytes): a name, a known dtype, shape product = numel, numel x dtype size =
 * nbytes without wrap-around, bytes inside the input, and st_to_f32 accepting
 * exactly the float dtypes (every value converted and read). */
void fuzz_check_tensor(const st_tensor *t, const uint8_t *data, size_t size);

/* 1 when s[0..len) is UTF-8 as RFC 3629 defines it (no overlongs, no
 * surrogates, nothing above U+10FFFF); NUL bytes are valid characters. */
int fuzz_utf8_valid(const uint8_t *s, size_t len);

/* 1 when off falls on a character boundary of the valid UTF-8 text s. */
int fuzz_utf8_boundary(const uint8_t *s, size_t len, size_t off);

/* 1 when s has a NUL within its first cap bytes. */
int fuzz_terminated(const char *s, size_t cap);

#endif
