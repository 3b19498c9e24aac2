/* Vector loops of conv3dt's CPU kernels for products too thin for BLAS.
 *
 * They are compiled twice with GCC (function multi-versioning): once for x86-64-v3
 * (AVX2 + FMA) and once for the baseline, and the loader picks the clone the CPU supports,
 * so the default build needs no -march flag. Other compilers get the baseline version.
 * Loops use fixed-width partial sums so the result does not depend on the thread count.
 */
#ifndef CONV3DT_SIMD_H
#define CONV3DT_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) \
    && defined(__linux__) && !defined(CONV3DT_NO_CLONES)
#define CONV3DT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CONV3DT_CLONES
#endif

#define CONV3DT_LANES 16

/* y[u] += a * x[u], u < n */
#define CONV3DT_AXPY(name, T)                                                   \
    CONV3DT_CLONES static void name(T *restrict y, const T *restrict x, T a,    \
                                    ptrdiff_t n) {                              \
        for (ptrdiff_t u = 0; u < n; u++) y[u] += a * x[u];                     \
    }

/* sum_u x[u] * y[u], u < n, in CONV3DT_LANES partial sums added in a fixed order */
#define CONV3DT_DOT(name, T)                                                    \
    CONV3DT_CLONES static T name(const T *restrict x, const T *restrict y,      \
                                 ptrdiff_t n) {                                 \
        T s[CONV3DT_LANES] = {0};                                               \
        ptrdiff_t u = 0;                                                        \
        for (; u + CONV3DT_LANES <= n; u += CONV3DT_LANES)                      \
            for (int v = 0; v < CONV3DT_LANES; v++) s[v] += x[u + v] * y[u + v]; \
        for (int v = 0; u < n; u++, v++) s[v] += x[u] * y[u];                   \
        for (int w = CONV3DT_LANES / 2; w > 0; w /= 2)                          \
            for (int v = 0; v < w; v++) s[v] += s[v + w];                       \
        return s[0];                                                            \
    }

CONV3DT_AXPY(conv3dt_axpy_f, float)
CONV3DT_AXPY(conv3dt_axpy_d, double)
CONV3DT_DOT(conv3dt_dot_f, float)
CONV3DT_DOT(conv3dt_dot_d, double)

#endif
