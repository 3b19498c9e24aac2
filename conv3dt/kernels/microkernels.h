/* The microkernels of conv3dt's CPU kernels, a template compiled once per
 * instruction-set variant (generic.c, avx2.c, avx512.c; see isa.h).
 *
 * The including file defines, before including this one:
 *   CONV3DT_FN            storage class and target attributes of every function here
 *   CONV3DT_VECTOR_BYTES  bytes per vector (16, 32, 64)
 *   CONV3DT_PANEL_MV      panel product's register block: vectors of tile columns (<= 8)
 *   CONV3DT_PANEL_NR      ... x columns of the packed weight
 *   CONV3DT_THIN_MV       the one-column product's block: vectors (4, 8, 12, 16 or 24)
 *   CONV3DT_WGRAD_NR      grad_weight product's block: 2 vectors of channels x this many rows
 *   CONV3DT_DOT_NB        few-channel grad_weight blocks: 1, 2 or 3 channels x DOT_NB / that
 *   CONV3DT_DIRECT_COUT   the direct path's crossover (isa.h)
 *   CONV3DT_RECORD        the name of the conv3dt_isa record to define
 *   CONV3DT_NAME          its name string
 * and may define CONV3DT_MASKED_TAILS with the intrinsics of masked loads and stores
 * (see avx512.c) for the element tails of the axpy and finiteness loops.
 *
 * Every loop adds its terms in a fixed order that depends only on its arguments' extents
 * along the reduction (never on the thread count); the panel product's order does not
 * depend on how a caller splits its rows into calls either (see panel_gemm).
 */
#include "isa.h"
#include "memops.h"

#define CONV3DT_WGRAD_MV 2
/* The few-channel grad_weight blocks may use narrower vectors than the variant's: their
 * lanes are added at the end of each block, which costs more with wider vectors. */
#ifndef CONV3DT_DOT_VECTOR_BYTES
#define CONV3DT_DOT_VECTOR_BYTES CONV3DT_VECTOR_BYTES
#endif

/* ----------------------------------------------------------------------- axpy */

/* y[u] += a * x[u], u < n */
#define CONV3DT_AXPY(T, S)                                                        \
    CONV3DT_FN void axpy_##S(T *restrict y, const T *restrict x, T a, ptrdiff_t n) { \
        for (ptrdiff_t u = 0; u < n; u++) y[u] += a * x[u];                       \
    }

/* ------------------------------------------------------- few-channel grad_weight */

/* grad_weight's product for few input channels: a register block of MI channels x NB rows
 * of B, each a vector of partial sums along the runs,
 *     C[cols[c] * ldc + i] += sum_{k < nrow, u < len} X[i * ldi + k * len + u] * B_c[roff[k] + u],
 *     i < MI, c < nb <= NB, B_c = A + aoff[c]
 * (missing rows c >= nb are computed on a copy of the last one and dropped). The lanes are
 * added in a fixed order at the end. The last len % W elements of each run are added as
 * scalars: no element of B outside a run is read, where a non-finite grad_output would
 * meet a zero of x. */
#define CONV3DT_DOT_BLOCK(S, T, V, W, MI, NB)                                     \
    CONV3DT_FN void dot_block##MI##_##S(const T *restrict X, ptrdiff_t ldi,       \
                                        const T *restrict A,                      \
                                        const ptrdiff_t *restrict aoff,           \
                                        const ptrdiff_t *restrict cols, ptrdiff_t nb, \
                                        const ptrdiff_t *restrict roff, ptrdiff_t nrow, \
                                        ptrdiff_t len, T *restrict C, ptrdiff_t ldc) { \
        const T *b[NB];                                                           \
        V acc[MI][NB];                                                            \
        T tail[MI][NB];                                                           \
        ptrdiff_t lv = len - len % W;                                             \
        _Pragma("GCC unroll 32")                                                  \
        for (int c = 0; c < NB; c++) {                                            \
            b[c] = A + aoff[c < nb ? c : nb - 1];                                 \
            _Pragma("GCC unroll 4")                                               \
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
                _Pragma("GCC unroll 4")                                           \
                for (int i = 0; i < MI; i++)                                      \
                    __builtin_memcpy(&xv[i], x + i * ldi + u, sizeof(V));         \
                _Pragma("GCC unroll 32")                                          \
                for (int c = 0; c < NB; c++) {                                    \
                    V bv;                                                         \
                    __builtin_memcpy(&bv, b[c] + off + u, sizeof(V));             \
                    _Pragma("GCC unroll 4")                                       \
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

/* acc[rows[i] * cig + ci] += sum over the runs of X[ci * ldi + run] * (A + aoff[i])[run],
 * i < kb, ci < cig: grad_weight (transposed) for few input channels, in dot blocks of up to
 * 3 channels x DOT_NB / 3 rows. */
#define CONV3DT_DOT_BLOCKS(S, T)                                                  \
    CONV3DT_FN void dot_blocks_##S(const T *X, ptrdiff_t ldi, ptrdiff_t cig,      \
                                   const T *A, const ptrdiff_t *aoff,             \
                                   const ptrdiff_t *rows, ptrdiff_t kb,           \
                                   const ptrdiff_t *roff, ptrdiff_t nrow,         \
                                   ptrdiff_t len, T *acc) {                       \
        for (ptrdiff_t ci0 = 0; ci0 < cig;) {                                     \
            ptrdiff_t mi = cig - ci0 < 3 ? cig - ci0 : 3, nb = CONV3DT_DOT_NB / mi; \
            for (ptrdiff_t i = 0; i < kb; i += nb) {                              \
                ptrdiff_t n = kb - i < nb ? kb - i : nb;                          \
                const T *x = X + ci0 * ldi;                                       \
                if (mi == 1)                                                      \
                    dot_block1_##S(x, ldi, A, aoff + i, rows + i, n, roff, nrow, len, \
                                   acc + ci0, cig);                               \
                else if (mi == 2)                                                 \
                    dot_block2_##S(x, ldi, A, aoff + i, rows + i, n, roff, nrow, len, \
                                   acc + ci0, cig);                               \
                else                                                              \
                    dot_block3_##S(x, ldi, A, aoff + i, rows + i, n, roff, nrow, len, \
                                   acc + ci0, cig);                               \
            }                                                                     \
            ci0 += mi;                                                            \
        }                                                                         \
    }

/* ------------------------------------------------------------- panel product */

/* The product of the forward pass and of grad_x, over vectors of W elements:
 *     C[v * W + j + col * ldc] = beta * C[...] + sum_r A[aoff[r] + voff[v] + j] * W(rows[r], col),
 *     v < nv, j < W, col < n, r < k
 * Row r of the left operand starts at A + aoff[r] (shifted windows of one padded copy of
 * the input, read in place, so that no second copy is made as a BLAS would), and each of
 * its vectors at its own offset voff[v]: a tile's vectors cover only the columns it
 * keeps, and C holds them compactly. W is packed in panels of PANEL_NR columns,
 * W(r, q * NR + c) at Wp[q * wps + r * NR + c], zero-padded past n, so its broadcasts are
 * read front to back; rows, when not NULL, picks the rows of W (the caller left out rows
 * of A that are all zero), else rows[r] = r. A register block of MV vectors x NR
 * accumulators (fewer vectors for the last nv % MV) runs over all of k: one load per
 * vector of A, one broadcast per element of W. beta is 0 or 1; with 1 the accumulators
 * start from C and the terms are added to it one by one in the order of r, so the result
 * does not depend on how a caller splits the rows into calls. */
#define CONV3DT_NR CONV3DT_PANEL_NR

/* One step of a block of NVB vectors: acc[c][v] (+)= A(r, vector v) * W(r, c), OP = or +=. */
#define CONV3DT_PANEL_STEP(T, V, NVB, off, wr, OP)                                \
    do {                                                                          \
        V a[NVB];                                                                 \
        _Pragma("GCC unroll 8")                                                   \
        for (int v = 0; v < NVB; v++) __builtin_memcpy(&a[v], p[v] + (off), sizeof(V)); \
        _Pragma("GCC unroll 8")                                                   \
        for (int c = 0; c < CONV3DT_NR; c++) {                                    \
            T b = (wr)[c];                                                        \
            _Pragma("GCC unroll 8")                                               \
            for (int v = 0; v < NVB; v++) acc[c][v] OP a[v] * b;                  \
        }                                                                         \
    } while (0)

/* The register block of vectors vb .. vb + NVB - 1 and panel cb / NR, written to C. */
#define CONV3DT_PANEL_BLOCK(T, V, W, NVB)                                         \
    do {                                                                          \
        const T *p[NVB];                                                          \
        V acc[CONV3DT_NR][NVB];                                                   \
        _Pragma("GCC unroll 8")                                                   \
        for (int v = 0; v < NVB; v++) p[v] = A + voff[vb + v];                    \
        /* With beta, the accumulators start from C, so that a sum split into     \
         * several calls adds its terms in the same order as one call. Else the    \
         * first step sets them: zeros held in a register for them would leave    \
         * too few for the loop. */                                               \
        if (beta != 0 || k == 0) {                                                \
            _Pragma("GCC unroll 8")                                               \
            for (int c = 0; c < CONV3DT_NR; c++) {                                \
                _Pragma("GCC unroll 8")                                           \
                for (int v = 0; v < NVB; v++) {                                   \
                    if (beta != 0 && c < nr)                                      \
                        __builtin_memcpy(&acc[c][v], C + (cb + c) * ldc + (vb + v) * W, \
                                         sizeof(V));                              \
                    else                                                          \
                        acc[c][v] = (V){0};                                       \
                }                                                                 \
            }                                                                     \
            if (rows) {                                                           \
                for (ptrdiff_t r = 0; r < k; r++)                                 \
                    CONV3DT_PANEL_STEP(T, V, NVB, aoff[r], w + rows[r] * CONV3DT_NR, +=); \
            } else {                                                              \
                _Pragma("GCC unroll 4")                                           \
                for (ptrdiff_t r = 0; r < k; r++)                                 \
                    CONV3DT_PANEL_STEP(T, V, NVB, aoff[r], w + r * CONV3DT_NR, +=); \
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
            _Pragma("GCC unroll 8")                                               \
            for (int v = 0; v < NVB; v++)                                         \
                __builtin_memcpy(C + (cb + c) * ldc + (vb + v) * W, &acc[c][v], sizeof(V)); \
        }                                                                         \
    } while (0)

#define CONV3DT_PANEL_CASE(T, V, W, NVB)                                          \
    case NVB:                                                                     \
        CONV3DT_PANEL_BLOCK(T, V, W, NVB);                                        \
        break;

/* One weight column (n == 1: one output channel per group in the forward pass): a block
 * of NVB vectors x 1 accumulators, where the panel block would spend NR - 1 of its NR
 * columns on the panel's zero padding. THIN_MV vectors at once (more than PANEL_MV x NR
 * would not fit the registers with NR broadcasts, but one broadcast leaves room for
 * them). Its terms are added in the same order as the panel block's, so the results are
 * bitwise the same as that block's column 0. PTR(v) is where vector v starts:
 * CONV3DT_THIN_SPREAD, a pointer per vector (NVB of them, most on the stack, which costs
 * a load per vector and step), or CONV3DT_THIN_RUN where the block's vectors follow one
 * another (a tile of whole rows of the window: one pointer and constant displacements,
 * one load per FMA). */
#define CONV3DT_THIN_SPREAD(v, W) p[v]
#define CONV3DT_THIN_RUN(v, W) (p[0] + (v) * (W))
#define CONV3DT_THIN_STEP(T, V, W, NVB, PTR, off, wr, OP)                         \
    do {                                                                          \
        T b = *(wr);                                                              \
        _Pragma("GCC unroll 24")                                                  \
        for (int v = 0; v < NVB; v++) {                                           \
            V a;                                                                  \
            __builtin_memcpy(&a, PTR(v, W) + (off), sizeof(V));                   \
            acc[v] OP a * b;                                                      \
        }                                                                         \
    } while (0)

#define CONV3DT_THIN_BLOCK(T, V, W, NVB, PTR)                                     \
    do {                                                                          \
        const T *p[NVB];                                                          \
        V acc[NVB];                                                               \
        _Pragma("GCC unroll 24")                                                  \
        for (int v = 0; v < NVB; v++) p[v] = A + voff[vb + v];                    \
        if (beta != 0 || k == 0) {                                                \
            _Pragma("GCC unroll 24")                                              \
            for (int v = 0; v < NVB; v++) {                                       \
                if (beta != 0)                                                    \
                    __builtin_memcpy(&acc[v], C + (vb + v) * W, sizeof(V));       \
                else                                                              \
                    acc[v] = (V){0};                                              \
            }                                                                     \
            if (rows) {                                                           \
                for (ptrdiff_t r = 0; r < k; r++)                                 \
                    CONV3DT_THIN_STEP(T, V, W, NVB, PTR, aoff[r], Wp + rows[r] * CONV3DT_NR, +=); \
            } else {                                                              \
                for (ptrdiff_t r = 0; r < k; r++)                                 \
                    CONV3DT_THIN_STEP(T, V, W, NVB, PTR, aoff[r], Wp + r * CONV3DT_NR, +=); \
            }                                                                     \
        } else if (rows) {                                                        \
            CONV3DT_THIN_STEP(T, V, W, NVB, PTR, aoff[0], Wp + rows[0] * CONV3DT_NR, =); \
            for (ptrdiff_t r = 1; r < k; r++)                                     \
                CONV3DT_THIN_STEP(T, V, W, NVB, PTR, aoff[r], Wp + rows[r] * CONV3DT_NR, +=); \
        } else {                                                                  \
            CONV3DT_THIN_STEP(T, V, W, NVB, PTR, aoff[0], Wp, =);                 \
            for (ptrdiff_t r = 1; r < k; r++)                                     \
                CONV3DT_THIN_STEP(T, V, W, NVB, PTR, aoff[r], Wp + r * CONV3DT_NR, +=); \
        }                                                                         \
        _Pragma("GCC unroll 24")                                                  \
        for (int v = 0; v < NVB; v++)                                             \
            __builtin_memcpy(C + (vb + v) * W, &acc[v], sizeof(V));               \
    } while (0)

#define CONV3DT_THIN_CASE(T, V, W, NVB, PTR)                                      \
    case NVB:                                                                     \
        CONV3DT_THIN_BLOCK(T, V, W, NVB, PTR);                                    \
        break;

#define CONV3DT_PANEL_GEMM(S, T, V, W)                                            \
    CONV3DT_FN void panel_gemm_##S(ptrdiff_t nv, ptrdiff_t n, ptrdiff_t k,        \
                                   const T *restrict A,                           \
                                   const ptrdiff_t *restrict aoff,                \
                                   const ptrdiff_t *restrict voff,                \
                                   const T *restrict Wp, ptrdiff_t wps,           \
                                   const ptrdiff_t *restrict rows, T beta,        \
                                   T *restrict C, ptrdiff_t ldc) {                \
        if (n == 1) {                                                             \
            for (ptrdiff_t vb = 0; vb < nv; vb += CONV3DT_THIN_MV) {              \
                ptrdiff_t nvb = nv - vb < CONV3DT_THIN_MV ? nv - vb : CONV3DT_THIN_MV; \
                int run = 1;                                                      \
                for (ptrdiff_t v = 1; v < nvb; v++)                               \
                    run &= voff[vb + v] == voff[vb] + v * W;                      \
                if (run) {                                                        \
                    switch (nvb) {                                                \
                        CONV3DT_THIN_CASES(T, V, W, CONV3DT_THIN_RUN)             \
                        default:                                                  \
                            CONV3DT_THIN_BLOCK(T, V, W, 1, CONV3DT_THIN_RUN);     \
                    }                                                             \
                } else {                                                          \
                    switch (nvb) {                                                \
                        CONV3DT_THIN_CASES(T, V, W, CONV3DT_THIN_SPREAD)          \
                        default:                                                  \
                            CONV3DT_THIN_BLOCK(T, V, W, 1, CONV3DT_THIN_SPREAD);  \
                    }                                                             \
                }                                                                 \
            }                                                                     \
            return;                                                               \
        }                                                                         \
        for (ptrdiff_t vb = 0; vb < nv; vb += CONV3DT_PANEL_MV) {                 \
            ptrdiff_t nvb = nv - vb < CONV3DT_PANEL_MV ? nv - vb : CONV3DT_PANEL_MV; \
            for (ptrdiff_t cb = 0; cb < n; cb += CONV3DT_NR) {                    \
                const T *w = Wp + (cb / CONV3DT_NR) * wps;                        \
                ptrdiff_t nr = n - cb < CONV3DT_NR ? n - cb : CONV3DT_NR;         \
                switch (nvb) {                                                    \
                    CONV3DT_PANEL_CASES(T, V, W)                                  \
                    default:                                                      \
                        CONV3DT_PANEL_BLOCK(T, V, W, 1);                          \
                }                                                                 \
            }                                                                     \
        }                                                                         \
    }

/* The block sizes this variant's panel product has: PANEL_MV down to 1 vectors. */
#if CONV3DT_PANEL_MV == 8
#define CONV3DT_PANEL_CASES(T, V, W) CONV3DT_PANEL_CASE(T, V, W, 8) CONV3DT_PANEL_CASE(T, V, W, 7) \
    CONV3DT_PANEL_CASE(T, V, W, 6) CONV3DT_PANEL_CASE(T, V, W, 5) CONV3DT_PANEL_CASE(T, V, W, 4) \
    CONV3DT_PANEL_CASE(T, V, W, 3) CONV3DT_PANEL_CASE(T, V, W, 2)
#elif CONV3DT_PANEL_MV == 6
#define CONV3DT_PANEL_CASES(T, V, W) CONV3DT_PANEL_CASE(T, V, W, 6) CONV3DT_PANEL_CASE(T, V, W, 5) \
    CONV3DT_PANEL_CASE(T, V, W, 4) CONV3DT_PANEL_CASE(T, V, W, 3) CONV3DT_PANEL_CASE(T, V, W, 2)
#elif CONV3DT_PANEL_MV == 4
#define CONV3DT_PANEL_CASES(T, V, W) CONV3DT_PANEL_CASE(T, V, W, 4) CONV3DT_PANEL_CASE(T, V, W, 3) \
    CONV3DT_PANEL_CASE(T, V, W, 2)
#elif CONV3DT_PANEL_MV == 3
#define CONV3DT_PANEL_CASES(T, V, W) CONV3DT_PANEL_CASE(T, V, W, 3) CONV3DT_PANEL_CASE(T, V, W, 2)
#else
#error "CONV3DT_PANEL_MV must be 3, 4, 6 or 8"
#endif

/* The block sizes of the one-column product: THIN_MV down to 1 vectors. */
#define CONV3DT_THIN_CASES_4(T, V, W, PTR)                                        \
    CONV3DT_THIN_CASE(T, V, W, 4, PTR) CONV3DT_THIN_CASE(T, V, W, 3, PTR)         \
    CONV3DT_THIN_CASE(T, V, W, 2, PTR)
#define CONV3DT_THIN_CASES_8(T, V, W, PTR)                                        \
    CONV3DT_THIN_CASE(T, V, W, 8, PTR) CONV3DT_THIN_CASE(T, V, W, 7, PTR)         \
    CONV3DT_THIN_CASE(T, V, W, 6, PTR) CONV3DT_THIN_CASE(T, V, W, 5, PTR)         \
    CONV3DT_THIN_CASES_4(T, V, W, PTR)
#define CONV3DT_THIN_CASES_12(T, V, W, PTR)                                       \
    CONV3DT_THIN_CASE(T, V, W, 12, PTR) CONV3DT_THIN_CASE(T, V, W, 11, PTR)       \
    CONV3DT_THIN_CASE(T, V, W, 10, PTR) CONV3DT_THIN_CASE(T, V, W, 9, PTR)        \
    CONV3DT_THIN_CASES_8(T, V, W, PTR)
#define CONV3DT_THIN_CASES_16(T, V, W, PTR)                                       \
    CONV3DT_THIN_CASE(T, V, W, 16, PTR) CONV3DT_THIN_CASE(T, V, W, 15, PTR)       \
    CONV3DT_THIN_CASE(T, V, W, 14, PTR) CONV3DT_THIN_CASE(T, V, W, 13, PTR)       \
    CONV3DT_THIN_CASES_12(T, V, W, PTR)
#define CONV3DT_THIN_CASES_24(T, V, W, PTR)                                       \
    CONV3DT_THIN_CASE(T, V, W, 24, PTR) CONV3DT_THIN_CASE(T, V, W, 23, PTR)       \
    CONV3DT_THIN_CASE(T, V, W, 22, PTR) CONV3DT_THIN_CASE(T, V, W, 21, PTR)       \
    CONV3DT_THIN_CASE(T, V, W, 20, PTR) CONV3DT_THIN_CASE(T, V, W, 19, PTR)       \
    CONV3DT_THIN_CASE(T, V, W, 18, PTR) CONV3DT_THIN_CASE(T, V, W, 17, PTR)       \
    CONV3DT_THIN_CASES_16(T, V, W, PTR)
#define CONV3DT_THIN_CASES_(N) CONV3DT_THIN_CASES_##N
#define CONV3DT_THIN_CASES_N(N) CONV3DT_THIN_CASES_(N)
#define CONV3DT_THIN_CASES(T, V, W, PTR) CONV3DT_THIN_CASES_N(CONV3DT_THIN_MV)(T, V, W, PTR)

/* ------------------------------------------------------- grad_weight product */

/* grad_weight's product, a reduction along the tile:
 *     C[cols[c] * ldc + i] += sum_{k < nrow, u < len} Xt[(k * len + u) * ldx + i] * B_c[roff[k] + u],
 *     i < m, c < n, with B_c = A + aoff[c]
 * Xt is the input tile transposed (channels contiguous, zero-padded to whole register
 * blocks: ldx >= m rounded up to WGRAD_MV vectors); the rows B_c are read in place, nrow
 * runs of len elements starting at roff[k]. A register block of 2 vectors of i x WGRAD_NR
 * rows of B runs over the whole reduction in a fixed order: one load per vector of Xt,
 * one broadcast per element of B. C holds grad_weight transposed (input channels
 * contiguous), so a block adds whole vectors to NR rows of C. */
#define CONV3DT_WGRAD_GEMM(S, T, V, W)                                            \
    CONV3DT_FN void wgrad_gemm_##S(ptrdiff_t m, ptrdiff_t n, ptrdiff_t nrow,       \
                                   ptrdiff_t len,                                 \
                                   const ptrdiff_t *restrict roff,                \
                                   const T *restrict Xt, ptrdiff_t ldx,           \
                                   const T *restrict A,                           \
                                   const ptrdiff_t *restrict aoff,                \
                                   const ptrdiff_t *restrict cols,                \
                                   T *restrict C, ptrdiff_t ldc) {                \
        for (ptrdiff_t cb = 0; cb < n; cb += CONV3DT_WGRAD_NR) {                  \
            ptrdiff_t nr = n - cb < CONV3DT_WGRAD_NR ? n - cb : CONV3DT_WGRAD_NR; \
            const T *b[CONV3DT_WGRAD_NR];                                         \
            for (int c = 0; c < CONV3DT_WGRAD_NR; c++)                            \
                b[c] = A + aoff[cb + (c < nr ? c : nr - 1)];                      \
            for (ptrdiff_t ib = 0; ib < m; ib += 2 * W) {                         \
                V acc[CONV3DT_WGRAD_NR][2];                                       \
                for (int c = 0; c < CONV3DT_WGRAD_NR; c++) {                      \
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
                        _Pragma("GCC unroll 16")                                  \
                        for (int c = 0; c < CONV3DT_WGRAD_NR; c++) {              \
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

/* ------------------------------------------------------------ finiteness check */

/* The number of NaN or infinite elements among x[u], u < n: those whose exponent bits are
 * all set (an integer test, which vectorises, where a floating-point one would not). */
#define CONV3DT_NONFINITE(S, T, U, MASK)                                          \
    CONV3DT_FN ptrdiff_t nonfinite_##S(const T *restrict x, ptrdiff_t n) {        \
        ptrdiff_t bad = 0;                                                        \
        for (ptrdiff_t u = 0; u < n; u++) {                                       \
            U b;                                                                  \
            __builtin_memcpy(&b, x + u, sizeof(U));                               \
            bad += (b & MASK) == MASK;                                            \
        }                                                                         \
        return bad;                                                               \
    }

/* ------------------------------------------------------------ the variant's record */

typedef float conv3dt_vf __attribute__((vector_size(CONV3DT_VECTOR_BYTES)));
typedef double conv3dt_vd __attribute__((vector_size(CONV3DT_VECTOR_BYTES)));
typedef float conv3dt_dot_vf __attribute__((vector_size(CONV3DT_DOT_VECTOR_BYTES)));
typedef double conv3dt_dot_vd __attribute__((vector_size(CONV3DT_DOT_VECTOR_BYTES)));
#define CONV3DT_LANES_F (CONV3DT_VECTOR_BYTES / 4)
#define CONV3DT_LANES_D (CONV3DT_VECTOR_BYTES / 8)
#define CONV3DT_DOT_LANES_F (CONV3DT_DOT_VECTOR_BYTES / 4)
#define CONV3DT_DOT_LANES_D (CONV3DT_DOT_VECTOR_BYTES / 8)

/* ---------------------------------------------------------------- FMA probe */

/* The machine's multiply-add peak for this variant, measured rather than assumed (the
 * benchmark times it on every thread at once): n steps of CONV3DT_THIN_MV independent
 * vector chains acc = acc * m + a (fused where the variant has FMA), as many chains as
 * the one-column block has accumulators, more than an FMA's latency times the FMA units
 * of today's x86 cores (4 x 2). m and a keep the values finite. *sink receives a sum of
 * the results, so that no step can be left out; returns the flop done. */
#define CONV3DT_FMA_PROBE(S, T, V, W)                                             \
    CONV3DT_FN double fma_probe_##S(ptrdiff_t n, T *sink) {                       \
        V acc[CONV3DT_THIN_MV];                                                   \
        V m = (V){0} + (T)0.999, a = (V){0} + (T)0.001;                           \
        _Pragma("GCC unroll 24")                                                  \
        for (int i = 0; i < CONV3DT_THIN_MV; i++) acc[i] = (V){0} + (T)i;         \
        for (ptrdiff_t s = 0; s < n; s++) {                                       \
            _Pragma("GCC unroll 24")                                              \
            for (int i = 0; i < CONV3DT_THIN_MV; i++) acc[i] = acc[i] * m + a;    \
        }                                                                         \
        T sum = 0;                                                                \
        for (int i = 0; i < CONV3DT_THIN_MV; i++)                                 \
            for (int j = 0; j < W; j++) sum += acc[i][j];                         \
        *sink = sum;                                                              \
        return 2.0 * W * CONV3DT_THIN_MV * (double)n;                             \
    }

/* The write-out of two w-phases of stride 2 interleaved in one row (memops.h), in 32-byte
 * vectors shuffled with this variant's instructions. */
typedef int conv3dt_v8i __attribute__((vector_size(32)));
typedef long long conv3dt_v4l __attribute__((vector_size(32)));
CONV3DT_STORE2(CONV3DT_FN, store2_f, float, conv3dt_v8f_s, conv3dt_v8i, 8,
               ((conv3dt_v8i){0, 8, 1, 9, 2, 10, 3, 11}),
               ((conv3dt_v8i){4, 12, 5, 13, 6, 14, 7, 15}))
CONV3DT_STORE2(CONV3DT_FN, store2_d, double, conv3dt_v4d_s, conv3dt_v4l, 4,
               ((conv3dt_v4l){0, 4, 1, 5}), ((conv3dt_v4l){2, 6, 3, 7}))

#ifndef CONV3DT_HAVE_AXPY
CONV3DT_AXPY(float, f)
CONV3DT_AXPY(double, d)
#endif
CONV3DT_DOT_BLOCK(f, float, conv3dt_dot_vf, CONV3DT_DOT_LANES_F, 1, CONV3DT_DOT_NB)
CONV3DT_DOT_BLOCK(f, float, conv3dt_dot_vf, CONV3DT_DOT_LANES_F, 2, CONV3DT_DOT_NB / 2)
CONV3DT_DOT_BLOCK(f, float, conv3dt_dot_vf, CONV3DT_DOT_LANES_F, 3, CONV3DT_DOT_NB / 3)
CONV3DT_DOT_BLOCK(d, double, conv3dt_dot_vd, CONV3DT_DOT_LANES_D, 1, CONV3DT_DOT_NB)
CONV3DT_DOT_BLOCK(d, double, conv3dt_dot_vd, CONV3DT_DOT_LANES_D, 2, CONV3DT_DOT_NB / 2)
CONV3DT_DOT_BLOCK(d, double, conv3dt_dot_vd, CONV3DT_DOT_LANES_D, 3, CONV3DT_DOT_NB / 3)
CONV3DT_DOT_BLOCKS(f, float)
CONV3DT_DOT_BLOCKS(d, double)
CONV3DT_PANEL_GEMM(f, float, conv3dt_vf, CONV3DT_LANES_F)
CONV3DT_PANEL_GEMM(d, double, conv3dt_vd, CONV3DT_LANES_D)
CONV3DT_WGRAD_GEMM(f, float, conv3dt_vf, CONV3DT_LANES_F)
CONV3DT_WGRAD_GEMM(d, double, conv3dt_vd, CONV3DT_LANES_D)
CONV3DT_FMA_PROBE(f, float, conv3dt_vf, CONV3DT_LANES_F)
CONV3DT_FMA_PROBE(d, double, conv3dt_vd, CONV3DT_LANES_D)
#ifndef CONV3DT_HAVE_NONFINITE
CONV3DT_NONFINITE(f, float, unsigned int, 0x7f800000u)
CONV3DT_NONFINITE(d, double, unsigned long long, 0x7ff0000000000000ull)
#endif

const conv3dt_isa CONV3DT_RECORD = {
    .name = CONV3DT_NAME,
    .vector_bytes = CONV3DT_VECTOR_BYTES,
    .panel_mv = CONV3DT_PANEL_MV,
    .panel_nr = CONV3DT_PANEL_NR,
    .wgrad_mv = CONV3DT_WGRAD_MV,
    .wgrad_nr = CONV3DT_WGRAD_NR,
    .dot_nb = CONV3DT_DOT_NB,
    .direct_cout = CONV3DT_DIRECT_COUT,
    .panel_gemm_f = panel_gemm_f, .wgrad_gemm_f = wgrad_gemm_f, .dot_blocks_f = dot_blocks_f,
    .axpy_f = axpy_f, .nonfinite_f = nonfinite_f, .store2_f = store2_f,
    .fma_probe_f = fma_probe_f,
    .panel_gemm_d = panel_gemm_d, .wgrad_gemm_d = wgrad_gemm_d, .dot_blocks_d = dot_blocks_d,
    .axpy_d = axpy_d, .nonfinite_d = nonfinite_d, .store2_d = store2_d,
    .fma_probe_d = fma_probe_d,
};
