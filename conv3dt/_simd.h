/* The register-blocked products and vector loops of conv3dt's CPU kernels.
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

/* y[u] += a * x[u], u < n */
#define CONV3DT_AXPY(name, T)                                                   \
    CONV3DT_CLONES static void name(T *restrict y, const T *restrict x, T a,    \
                                    ptrdiff_t n) {                              \
        for (ptrdiff_t u = 0; u < n; u++) y[u] += a * x[u];                     \
    }

/* grad_weight's product for few input channels: a register block of MI channels x NB rows
 * of B, each a vector of partial sums along the runs,
 *     C[cols[c] * ldc + i] += sum_{k < nrow, u < len} X[i * ldi + k * len + u] * B_c[roff[k] + u],
 *     i < MI, c < nb <= NB, B_c = A + aoff[c]
 * (missing rows c >= nb are computed on a copy of the last one and dropped). The lanes are
 * added in a fixed order at the end. The last len % W elements of each run are added as
 * scalars: no element of B outside a run is read, where a non-finite grad_output would
 * meet a zero of x. */
#define CONV3DT_DOT_BLOCK(name, T, V, W, MI, NB)                                  \
    CONV3DT_CLONES static void name(const T *restrict X, ptrdiff_t ldi,           \
                                    const T *restrict A,                          \
                                    const ptrdiff_t *restrict aoff,               \
                                    const ptrdiff_t *restrict cols, ptrdiff_t nb, \
                                    const ptrdiff_t *restrict roff, ptrdiff_t nrow, \
                                    ptrdiff_t len, T *restrict C, ptrdiff_t ldc) { \
        const T *b[NB];                                                           \
        V acc[MI][NB];                                                            \
        T tail[MI][NB];                                                           \
        ptrdiff_t lv = len - len % W;                                             \
        _Pragma("GCC unroll 16")                                                  \
        for (int c = 0; c < NB; c++) {                                            \
            b[c] = A + aoff[c < nb ? c : nb - 1];                                 \
            _Pragma("GCC unroll 16")                                              \
            for (int i = 0; i < MI; i++) {                                        \
                acc[i][c] = (V){0};                                               \
                tail[i][c] = 0;                                                   \
            }                                                                     \
        }                                                                         \
        for (ptrdiff_t k = 0; k < nrow; k++) {                                    \
            const T *x = X + k * len;                                             \
            ptrdiff_t off = roff[k];                                              \
            for (ptrdiff_t u = 0; u < lv; u += W) {                               \
                V xv[MI];                                                         \
                _Pragma("GCC unroll 16")                                          \
                for (int i = 0; i < MI; i++)                                      \
                    __builtin_memcpy(&xv[i], x + i * ldi + u, sizeof(V));         \
                _Pragma("GCC unroll 16")                                          \
                for (int c = 0; c < NB; c++) {                                    \
                    V bv;                                                         \
                    __builtin_memcpy(&bv, b[c] + off + u, sizeof(V));             \
                    _Pragma("GCC unroll 16")                                      \
                    for (int i = 0; i < MI; i++) acc[i][c] += xv[i] * bv;         \
                }                                                                 \
            }                                                                     \
            for (ptrdiff_t u = lv; u < len; u++)                                  \
                for (int c = 0; c < NB; c++)                                      \
                    for (int i = 0; i < MI; i++)                                  \
                        tail[i][c] += x[i * ldi + u] * b[c][off + u];             \
        }                                                                         \
        for (int c = 0; c < nb; c++)                                              \
            for (int i = 0; i < MI; i++) {                                        \
                T s[W];                                                           \
                __builtin_memcpy(s, &acc[i][c], sizeof(V));                       \
                for (int w = W / 2; w > 0; w /= 2)                                \
                    for (int v = 0; v < w; v++) s[v] += s[v + w];                 \
                C[cols[c] * ldc + i] += s[0] + tail[i][c];                        \
            }                                                                     \
    }

typedef float conv3dt_v8f_b __attribute__((vector_size(32)));
typedef double conv3dt_v4d_b __attribute__((vector_size(32)));
CONV3DT_DOT_BLOCK(conv3dt_dot_block1_f, float, conv3dt_v8f_b, 8, 1, 12)
CONV3DT_DOT_BLOCK(conv3dt_dot_block2_f, float, conv3dt_v8f_b, 8, 2, 6)
CONV3DT_DOT_BLOCK(conv3dt_dot_block3_f, float, conv3dt_v8f_b, 8, 3, 4)
CONV3DT_DOT_BLOCK(conv3dt_dot_block1_d, double, conv3dt_v4d_b, 4, 1, 12)
CONV3DT_DOT_BLOCK(conv3dt_dot_block2_d, double, conv3dt_v4d_b, 4, 2, 6)
CONV3DT_DOT_BLOCK(conv3dt_dot_block3_d, double, conv3dt_v4d_b, 4, 3, 4)

/* acc[rows[i] * cig + ci] += sum over the runs of X[ci * ldi + run] * (A + aoff[i])[run],
 * i < kb, ci < cig: grad_weight (transposed) for few input channels, in dot blocks of up to
 * 3 channels x 12 / 3 rows. Cloned like the blocks, so that each clone calls its own. */
#define CONV3DT_DOT_BLOCKS(name, T, B1, B2, B3)                                   \
    CONV3DT_CLONES static void name(const T *X, ptrdiff_t ldi, ptrdiff_t cig,     \
                                    const T *A, const ptrdiff_t *aoff,            \
                                    const ptrdiff_t *rows, ptrdiff_t kb,          \
                                    const ptrdiff_t *roff, ptrdiff_t nrow,        \
                                    ptrdiff_t len, T *acc) {                      \
        for (ptrdiff_t ci0 = 0; ci0 < cig;) {                                     \
            ptrdiff_t mi = cig - ci0 < 3 ? cig - ci0 : 3, nb = 12 / mi;           \
            for (ptrdiff_t i = 0; i < kb; i += nb) {                              \
                ptrdiff_t n = kb - i < nb ? kb - i : nb;                          \
                const T *x = X + ci0 * ldi;                                       \
                if (mi == 1)                                                      \
                    B1(x, ldi, A, aoff + i, rows + i, n, roff, nrow, len, acc + ci0, cig); \
                else if (mi == 2)                                                 \
                    B2(x, ldi, A, aoff + i, rows + i, n, roff, nrow, len, acc + ci0, cig); \
                else                                                              \
                    B3(x, ldi, A, aoff + i, rows + i, n, roff, nrow, len, acc + ci0, cig); \
            }                                                                     \
            ci0 += mi;                                                            \
        }                                                                         \
    }

CONV3DT_DOT_BLOCKS(conv3dt_dot_blocks_f, float, conv3dt_dot_block1_f, conv3dt_dot_block2_f,
                   conv3dt_dot_block3_f)
CONV3DT_DOT_BLOCKS(conv3dt_dot_blocks_d, double, conv3dt_dot_block1_d, conv3dt_dot_block2_d,
                   conv3dt_dot_block3_d)

/* Register block of the panel product: up to CONV3DT_MV vectors of A x CONV3DT_NR columns
 * of W (12 accumulators of the 16 vector registers). NR = 4 divides the usual channel
 * counts, so panels of W carry no zero padding. */
#define CONV3DT_MV 3
#define CONV3DT_NR 4
_Static_assert(CONV3DT_MV == 3, "the panel product has blocks of 3, 2 and 1 vectors");

/* The product of the forward pass and of grad_x, over vectors of W elements:
 *     C[v * W + j + col * ldc] = beta * C[...] + sum_r A[aoff[r] + voff[v] + j] * W(rows[r], col),
 *     v < nv, j < W, col < n, r < k
 * Row r of the left operand starts at A + aoff[r] (shifted windows of one padded copy of
 * the input, read in place, so that no second copy is made as a BLAS would), and each of
 * its vectors at its own offset voff[v]: a tile's vectors cover only the columns it
 * keeps, and C holds them compactly. W is packed in panels of CONV3DT_NR columns,
 * W(r, q * NR + c) at Wp[q * wps + r * NR + c], zero-padded past n, so its broadcasts are
 * read front to back; rows, when not NULL, picks the rows of W (the caller left out rows
 * of A that are all zero), else rows[r] = r. A register block of MV vectors x NR
 * accumulators (fewer vectors for the last nv % MV) runs over all of k: one load per
 * vector of A, one broadcast per element of W. beta is 0 or 1. */
/* One step of a block of NVB vectors: acc[c][v] (+)= A(r, vector v) * W(r, c), OP = or +=. */
#define CONV3DT_PANEL_STEP(T, V, NVB, off, wr, OP)                                \
    do {                                                                          \
        V a[NVB];                                                                 \
        _Pragma("GCC unroll 4")                                                   \
        for (int v = 0; v < NVB; v++) __builtin_memcpy(&a[v], p[v] + (off), sizeof(V)); \
        _Pragma("GCC unroll 4")                                                   \
        for (int c = 0; c < CONV3DT_NR; c++) {                                    \
            T b = (wr)[c];                                                        \
            _Pragma("GCC unroll 4")                                               \
            for (int v = 0; v < NVB; v++) acc[c][v] OP a[v] * b;                  \
        }                                                                         \
    } while (0)

/* The register block of vectors vb .. vb + NVB - 1 and panel cb / NR, written to C. */
#define CONV3DT_PANEL_BLOCK(T, V, W, NVB)                                         \
    do {                                                                          \
        const T *p[NVB];                                                          \
        V acc[CONV3DT_NR][NVB];                                                   \
        _Pragma("GCC unroll 4")                                                   \
        for (int v = 0; v < NVB; v++) p[v] = A + voff[vb + v];                    \
        /* The first step sets the accumulators: zeros held in a register for them \
         * would leave too few for the loop. */                                   \
        if (k == 0) {                                                             \
            _Pragma("GCC unroll 4")                                               \
            for (int c = 0; c < CONV3DT_NR; c++) {                                \
                _Pragma("GCC unroll 4")                                           \
                for (int v = 0; v < NVB; v++) acc[c][v] = (V){0};                 \
            }                                                                     \
        } else if (rows) {                                                        \
            CONV3DT_PANEL_STEP(T, V, NVB, aoff[0], w + rows[0] * CONV3DT_NR, =);  \
            for (ptrdiff_t r = 1; r < k; r++)                                     \
                CONV3DT_PANEL_STEP(T, V, NVB, aoff[r], w + rows[r] * CONV3DT_NR, +=); \
        } else {                                                                  \
            CONV3DT_PANEL_STEP(T, V, NVB, aoff[0], w, =);                         \
            _Pragma("GCC unroll 4")                                               \
            for (ptrdiff_t r = 1; r < k; r++)                                     \
                CONV3DT_PANEL_STEP(T, V, NVB, aoff[r], w + r * CONV3DT_NR, +=);   \
        }                                                                         \
        for (int c = 0; c < nr; c++) {                                            \
            _Pragma("GCC unroll 4")                                               \
            for (int v = 0; v < NVB; v++) {                                       \
                T *dst = C + (cb + c) * ldc + (vb + v) * W;                       \
                if (beta != 0) {                                                  \
                    V old;                                                        \
                    __builtin_memcpy(&old, dst, sizeof(V));                       \
                    acc[c][v] += old;                                             \
                }                                                                 \
                __builtin_memcpy(dst, &acc[c][v], sizeof(V));                     \
            }                                                                     \
        }                                                                         \
    } while (0)

#define CONV3DT_PANEL_GEMM(name, T, V, W)                                         \
    typedef T V __attribute__((vector_size(W * sizeof(T))));                     \
    CONV3DT_CLONES static void name(ptrdiff_t nv, ptrdiff_t n, ptrdiff_t k,       \
                                    const T *restrict A,                          \
                                    const ptrdiff_t *restrict aoff,              \
                                    const ptrdiff_t *restrict voff,              \
                                    const T *restrict Wp, ptrdiff_t wps,         \
                                    const ptrdiff_t *restrict rows, T beta,      \
                                    T *restrict C, ptrdiff_t ldc) {              \
        for (ptrdiff_t vb = 0; vb < nv; vb += CONV3DT_MV) {                       \
            ptrdiff_t nvb = nv - vb < CONV3DT_MV ? nv - vb : CONV3DT_MV;          \
            for (ptrdiff_t cb = 0; cb < n; cb += CONV3DT_NR) {                    \
                const T *w = Wp + (cb / CONV3DT_NR) * wps;                        \
                ptrdiff_t nr = n - cb < CONV3DT_NR ? n - cb : CONV3DT_NR;         \
                if (nvb == 3)                                                     \
                    CONV3DT_PANEL_BLOCK(T, V, W, 3);                              \
                else if (nvb == 2)                                                \
                    CONV3DT_PANEL_BLOCK(T, V, W, 2);                              \
                else                                                              \
                    CONV3DT_PANEL_BLOCK(T, V, W, 1);                              \
            }                                                                     \
        }                                                                         \
    }

CONV3DT_PANEL_GEMM(conv3dt_panel_gemm_f, float, conv3dt_v8f, 8)
CONV3DT_PANEL_GEMM(conv3dt_panel_gemm_d, double, conv3dt_v4d, 4)

/* Register block of grad_weight's product: 2 vectors of input channels x CONV3DT_WNR rows. */
#define CONV3DT_WNR 6

/* grad_weight's product, a reduction along the tile:
 *     C[cols[c] * ldc + i] += sum_{k < nrow, u < len} Xt[(k * len + u) * ldx + i] * B_c[roff[k] + u],
 *     i < m, c < n, with B_c = A + aoff[c]
 * Xt is the input tile transposed (channels contiguous, zero-padded to whole register
 * blocks: ldx >= m rounded up to 2 vectors); the rows B_c are read in place, nrow runs of
 * len elements starting at roff[k]. A register block of 2 vectors of i x WNR rows of B runs over
 * the whole reduction in a fixed order: one load per vector of Xt, one broadcast per
 * element of B. C holds grad_weight transposed (input channels contiguous), so a block adds
 * whole vectors to NR rows of C. */
#define CONV3DT_WGRAD_GEMM(name, T, V, W)                                         \
    typedef T V __attribute__((vector_size(W * sizeof(T))));                     \
    CONV3DT_CLONES static void name(ptrdiff_t m, ptrdiff_t n, ptrdiff_t nrow,      \
                                    ptrdiff_t len,                                \
                                    const ptrdiff_t *restrict roff,               \
                                    const T *restrict Xt, ptrdiff_t ldx,          \
                                    const T *restrict A,                          \
                                    const ptrdiff_t *restrict aoff,               \
                                    const ptrdiff_t *restrict cols,               \
                                    T *restrict C, ptrdiff_t ldc) {               \
        for (ptrdiff_t cb = 0; cb < n; cb += CONV3DT_WNR) {                        \
            ptrdiff_t nr = n - cb < CONV3DT_WNR ? n - cb : CONV3DT_WNR;             \
            const T *b[CONV3DT_WNR];                                               \
            for (int c = 0; c < CONV3DT_WNR; c++)                                  \
                b[c] = A + aoff[cb + (c < nr ? c : nr - 1)];                      \
            for (ptrdiff_t ib = 0; ib < m; ib += 2 * W) {                         \
                V acc[CONV3DT_WNR][2];                                             \
                for (int c = 0; c < CONV3DT_WNR; c++) {                            \
                    acc[c][0] = (V){0};                                           \
                    acc[c][1] = (V){0};                                           \
                }                                                                 \
                for (ptrdiff_t k = 0; k < nrow; k++) {                            \
                    const T *x = Xt + k * len * ldx + ib;                         \
                    ptrdiff_t off = roff[k];                                      \
                    for (ptrdiff_t u = 0; u < len; u++) {                         \
                        V a0, a1;                                                 \
                        __builtin_memcpy(&a0, x + u * ldx, sizeof(V));            \
                        __builtin_memcpy(&a1, x + u * ldx + W, sizeof(V));        \
                        for (int c = 0; c < CONV3DT_WNR; c++) {                    \
                            T bb = b[c][off + u];                                 \
                            acc[c][0] += a0 * bb;                                 \
                            acc[c][1] += a1 * bb;                                 \
                        }                                                         \
                    }                                                             \
                }                                                                 \
                ptrdiff_t mr = m - ib < 2 * W ? m - ib : 2 * W;                   \
                for (int c = 0; c < nr; c++) {                                    \
                    T *dst = C + cols[cb + c] * ldc + ib;                         \
                    if (mr == 2 * W) {                                            \
                        V old0, old1;                                             \
                        __builtin_memcpy(&old0, dst, sizeof(V));                  \
                        __builtin_memcpy(&old1, dst + W, sizeof(V));              \
                        old0 += acc[c][0];                                        \
                        old1 += acc[c][1];                                        \
                        __builtin_memcpy(dst, &old0, sizeof(V));                  \
                        __builtin_memcpy(dst + W, &old1, sizeof(V));              \
                    } else {                                                      \
                        T tmp[2 * W];                                             \
                        __builtin_memcpy(tmp, &acc[c][0], sizeof(V));             \
                        __builtin_memcpy(tmp + W, &acc[c][1], sizeof(V));         \
                        for (ptrdiff_t i = 0; i < mr; i++) dst[i] += tmp[i];      \
                    }                                                             \
                }                                                                 \
            }                                                                     \
        }                                                                         \
    }

CONV3DT_WGRAD_GEMM(conv3dt_wgrad_gemm_f, float, conv3dt_v8f_w, 8)
CONV3DT_WGRAD_GEMM(conv3dt_wgrad_gemm_d, double, conv3dt_v4d_w, 4)

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
#define CONV3DT_STORE2(name, T, V, I, W, LO, HI)                                  \
    typedef T V __attribute__((vector_size(W * sizeof(T))));                     \
    CONV3DT_CLONES static void name(T *restrict dst, const T *restrict a,         \
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


typedef int conv3dt_v8i __attribute__((vector_size(32)));
typedef long long conv3dt_v4l __attribute__((vector_size(32)));
CONV3DT_STORE2(conv3dt_store2_f, float, conv3dt_v8f_s, conv3dt_v8i, 8,
               ((conv3dt_v8i){0, 8, 1, 9, 2, 10, 3, 11}),
               ((conv3dt_v8i){4, 12, 5, 13, 6, 14, 7, 15}))
CONV3DT_STORE2(conv3dt_store2_d, double, conv3dt_v4d_s, conv3dt_v4l, 4,
               ((conv3dt_v4l){0, 4, 1, 5}), ((conv3dt_v4l){2, 6, 3, 7}))
CONV3DT_AXPY(conv3dt_axpy_f, float)
CONV3DT_AXPY(conv3dt_axpy_d, double)

/* The number of NaN or infinite elements among x[u], u < n: those whose exponent bits are
 * all set (an integer test, which vectorises, where a floating-point one would not). */
#define CONV3DT_NONFINITE(name, T, U, MASK)                                       \
    CONV3DT_CLONES static ptrdiff_t name(const T *restrict x, ptrdiff_t n) {      \
        ptrdiff_t bad = 0;                                                        \
        for (ptrdiff_t u = 0; u < n; u++) {                                       \
            U b;                                                                  \
            __builtin_memcpy(&b, x + u, sizeof(U));                               \
            bad += (b & MASK) == MASK;                                            \
        }                                                                         \
        return bad;                                                               \
    }

CONV3DT_NONFINITE(conv3dt_nonfinite_f, float, unsigned int, 0x7f800000u)
CONV3DT_NONFINITE(conv3dt_nonfinite_d, double, unsigned long long, 0x7ff0000000000000ull)

#endif
