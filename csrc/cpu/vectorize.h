// Options that let GCC vectorise the CPU element loops. Include this header FIRST in a
// CPU kernel file (before any other include).
//
// The element kernels are written branch-free (selects, not branches); two options for
// the whole file let GCC vectorise them: FP comparisons do not trap (so selects may be
// if-converted) and no jump threading (which would turn repeated selects on one mask
// back into branches). Neither changes any result. (Set for the whole file, before any
// include, so that every inline function of notmiwae_fast/math.h gets the same options
// and can be inlined into the kernels.) Kernels marked NOTMIWAE_VECTOR_CLONES are also
// compiled for AVX-512 and AVX2 + FMA (x86-64-v4 / v3) next to the baseline, the best
// one picked at load time (GCC function multi-versioning).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#pragma GCC optimize("no-thread-jumps")
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NOTMIWAE_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NOTMIWAE_VECTOR_CLONES
#endif
// A kernel whose per-element work is one large inline function (too large for GCC to
// inline by itself): everything it calls is inlined, so each clone compiles it for its
// own instruction set.
#if defined(__GNUC__)
#define NOTMIWAE_FLATTEN __attribute__((flatten))
#else
#define NOTMIWAE_FLATTEN
#endif
