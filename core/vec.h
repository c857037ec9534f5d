/* vec: 16-lane float and 8-lane double vectors for the reductions of the
 * elementwise passes (softmax's max and sum, layer norm's mean and variance,
 * int8 quantization's min and max).
 *
 * Why: a reduction written as one running value does not vectorise without
 * -ffast-math (float addition is not associative, and min/max order matters
 * for NaN), so gcc and clang compile it one element at a time; in profiles
 * that scalar chain was most of softmax's time. GCC's vector extensions, which
 * clang also implements, say "16 independent lanes" outright; inside a
 * target_clones function each clone lowers them to its own ISA (one zmm, two
 * ymm, four xmm), so the code stays portable.
 *
 * Macros rather than functions: a function taking or returning a 64-byte
 * vector changes ABI with the ISA (gcc's -Wpsabi), and these are only ever
 * expanded inside a clone's body. Loads and stores go through memcpy, which
 * compiles to one unaligned move. */
#ifndef BERT_VEC_H
#define BERT_VEC_H

#include <stdint.h>
#include <string.h>

typedef float vec_f16 __attribute__((vector_size(64)));
typedef int32_t vec_i16 __attribute__((vector_size(64)));
typedef float vec_f8 __attribute__((vector_size(32)));
typedef double vec_d8 __attribute__((vector_size(64)));
typedef uint8_t vec_u8x16 __attribute__((vector_size(16)));

#define VEC_LOAD(v, p)  memcpy(&(v), (p), sizeof(v))
#define VEC_STORE(p, v) memcpy((p), &(v), sizeof(v))
/* lane-wise mask ? a : b, with mask lanes all ones or all zeros (a comparison) */
#define VEC_SELECT(mask, a, b) ((vec_f16)(((vec_i16)(a) & (mask)) | ((vec_i16)(b) & ~(mask))))
/* lane-wise a > b ? a : b and a < b ? a : b, as the scalar comparisons */
#define VEC_MAX(a, b) VEC_SELECT((a) > (b), (a), (b))
#define VEC_MIN(a, b) VEC_SELECT((a) < (b), (a), (b))

#endif
