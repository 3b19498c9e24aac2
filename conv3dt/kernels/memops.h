/* The memory operations of conv3dt's CPU kernels: the packing loops' copies and zero
 * padding, and the write-out of tiles to their (strided) output positions. They move data
 * and add at most a bias, so one baseline version (16-byte vectors, which every x86-64 and
 * aarch64 CPU has) serves every instruction-set variant; the products are the variants'
 * (kernels/isa.h). */
#ifndef CONV3DT_MEMOPS_H
#define CONV3DT_MEMOPS_H

#include <stddef.h>

/* dst[u] = src[u * step], u < n: the inner copy of the packing loops. Runs are often
 * short (a row of a small volume), so the contiguous case copies whole vectors inline
 * instead of calling memcpy for each run, and step 2 (a residue grid of a stride-2
 * output) takes every other element of two 16-byte vectors (H elements each) at once,
 * never reading past src[(n - 1) * step]. */
#define CONV3DT_COPY(name, T, W, H, V, I, EVEN)                                  \
    typedef T V __attribute__((vector_size(16)));                                \
    static inline void name(T *restrict dst, const T *restrict src,              \
                            ptrdiff_t step, ptrdiff_t n) {                       \
        ptrdiff_t u = 0;                                                          \
        if (step == 1) {                                                          \
            for (; u + W <= n; u += W) __builtin_memcpy(dst + u, src + u, W * sizeof(T)); \
            for (; u < n; u++) dst[u] = src[u];                                   \
        } else {                                                                  \
            if (step == 2) {                                                      \
                for (; u + H < n; u += H) {                                       \
                    V a, b, r;                                                    \
                    __builtin_memcpy(&a, src + 2 * u, sizeof(V));                 \
                    __builtin_memcpy(&b, src + 2 * u + H, sizeof(V));             \
                    r = __builtin_shuffle(a, b, EVEN);                            \
                    __builtin_memcpy(dst + u, &r, sizeof(V));                     \
                }                                                                 \
            }                                                                     \
            for (; u < n; u++) dst[u] = src[u * step];                            \
        }                                                                         \
    }

typedef int conv3dt_v4i __attribute__((vector_size(16)));
typedef long long conv3dt_v2l __attribute__((vector_size(16)));
CONV3DT_COPY(conv3dt_copy_f, float, 8, 4, conv3dt_v4f_c, conv3dt_v4i,
             ((conv3dt_v4i){0, 2, 4, 6}))
CONV3DT_COPY(conv3dt_copy_d, double, 4, 2, conv3dt_v2d_c, conv3dt_v2l, ((conv3dt_v2l){0, 2}))

/* dst[u] = 0, u < n: the zero padding of the packing loops, short runs written inline. */
#define CONV3DT_ZERO(name, T, W)                                                 \
    static inline void name(T *restrict dst, ptrdiff_t n) {                      \
        static const T zeros[W];                                                  \
        ptrdiff_t u = 0;                                                          \
        for (; u + W <= n; u += W) __builtin_memcpy(dst + u, zeros, W * sizeof(T)); \
        for (; u < n; u++) dst[u] = 0;                                            \
    }

CONV3DT_ZERO(conv3dt_zero_f, float, 8)
CONV3DT_ZERO(conv3dt_zero_d, double, 4)


#if defined(__x86_64__)
#include <emmintrin.h>
/* Streaming (non-temporal) stores of a 32-byte vector v to p (16-byte aligned), as two
 * SSE2 halves, which every x86-64 CPU has. */
#define CONV3DT_NT 1
#define CONV3DT_STREAM(T, p, v)                                                   \
    do {                                                                          \
        if (sizeof(T) == 4) {                                                     \
            __m128 h[2];                                                          \
            __builtin_memcpy(h, &(v), 32);                                        \
            _mm_stream_ps((float *)(p), h[0]);                                    \
            _mm_stream_ps((float *)(p) + 4, h[1]);                                \
        } else {                                                                  \
            __m128d h[2];                                                         \
            __builtin_memcpy(h, &(v), 32);                                        \
            _mm_stream_pd((double *)(p), h[0]);                                   \
            _mm_stream_pd((double *)(p) + 2, h[1]);                               \
        }                                                                         \
    } while (0)
/* Orders the streaming stores of a work item before others read the output. */
static inline void conv3dt_store_fence(void) { _mm_sfence(); }
#else
#define CONV3DT_NT 0
#define CONV3DT_STREAM(T, p, v) __builtin_memcpy((p), &(v), 32)
static inline void conv3dt_store_fence(void) {}
#endif

/* dst[u * step] = src[u] + b, or dst[u * step] += src[u] when accumulate; u < n: the
 * write-out of a tile to its (strided) output positions. A contiguous row that is not
 * accumulated is streamed past the caches (from a 16-byte aligned start), as it is not
 * read again. */
#define CONV3DT_STORE(name, T, V, W)                                              \
    typedef T V __attribute__((vector_size(32)));                                \
    static inline void name(T *restrict dst, ptrdiff_t step,                      \
                            const T *restrict src, T b, ptrdiff_t n,              \
                            int accumulate) {                                     \
        if (accumulate) {                                                         \
            for (ptrdiff_t u = 0; u < n; u++) dst[u * step] += src[u];            \
        } else if (step == 1) {                                                   \
            ptrdiff_t u = 0;                                                      \
            if (CONV3DT_NT && ((size_t)dst % 16) == 0) {                          \
                V bv = (V){0} + b;                                                \
                for (; u + W <= n; u += W) {                                      \
                    V v;                                                          \
                    __builtin_memcpy(&v, src + u, sizeof(V));                     \
                    v += bv;                                                      \
                    CONV3DT_STREAM(T, dst + u, v);                                \
                }                                                                 \
            }                                                                     \
            for (; u < n; u++) dst[u] = src[u] + b;                               \
        } else {                                                                  \
            for (ptrdiff_t u = 0; u < n; u++) dst[u * step] = src[u] + b;         \
        }                                                                         \
    }

CONV3DT_STORE(conv3dt_store_f, float, conv3dt_v8f_t, 8)
CONV3DT_STORE(conv3dt_store_d, double, conv3dt_v4d_t, 4)

/* dst[2u] = a[u] + b, dst[2u + 1] = c[u] + b, u < n (or += a[u], += c[u] when accumulate):
 * the two w-phases of a stride-2 output row written together, interleaved in registers so
 * that the row is stored in whole vectors. */
#define CONV3DT_STORE2(SC, name, T, V, I, W, LO, HI)                              \
    typedef T V __attribute__((vector_size(W * sizeof(T))));                     \
    SC void name(T *restrict dst, const T *restrict a,                           \
                                    const T *restrict c, T b, ptrdiff_t n,        \
                                    int accumulate) {                             \
        const I lo = LO, hi = HI;                                                 \
        V bv = (V){0} + b;                                                        \
        ptrdiff_t u = 0;                                                          \
        if (CONV3DT_NT && !accumulate && ((size_t)dst % 16) == 0) {               \
            /* the output is not read again: stream it past the caches */         \
            for (; u + W <= n; u += W) {                                          \
                V va, vc;                                                         \
                __builtin_memcpy(&va, a + u, sizeof(V));                          \
                __builtin_memcpy(&vc, c + u, sizeof(V));                          \
                V r0 = __builtin_shuffle(va, vc, lo) + bv;                        \
                V r1 = __builtin_shuffle(va, vc, hi) + bv;                        \
                CONV3DT_STREAM(T, dst + 2 * u, r0);                               \
                CONV3DT_STREAM(T, dst + 2 * u + W, r1);                           \
            }                                                                     \
        }                                                                         \
        for (; u + W <= n; u += W) {                                              \
            V va, vc, o0, o1;                                                     \
            __builtin_memcpy(&va, a + u, sizeof(V));                              \
            __builtin_memcpy(&vc, c + u, sizeof(V));                              \
            V r0 = __builtin_shuffle(va, vc, lo), r1 = __builtin_shuffle(va, vc, hi); \
            if (accumulate) {                                                     \
                __builtin_memcpy(&o0, dst + 2 * u, sizeof(V));                    \
                __builtin_memcpy(&o1, dst + 2 * u + W, sizeof(V));                \
                r0 += o0;                                                         \
                r1 += o1;                                                         \
            } else {                                                              \
                r0 += bv;                                                         \
                r1 += bv;                                                         \
            }                                                                     \
            __builtin_memcpy(dst + 2 * u, &r0, sizeof(V));                        \
            __builtin_memcpy(dst + 2 * u + W, &r1, sizeof(V));                    \
        }                                                                         \
        for (; u < n; u++) {                                                      \
            dst[2 * u] = accumulate ? dst[2 * u] + a[u] : a[u] + b;               \
            dst[2 * u + 1] = accumulate ? dst[2 * u + 1] + c[u] : c[u] + b;       \
        }                                                                         \
    }


/* CONV3DT_STORE2 is instantiated by each instruction-set variant (microkernels.h), so that
 * its shuffles use the variant's instructions. */

#endif
