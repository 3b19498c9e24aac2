/* The microkernel interface of conv3dt's CPU kernels.
 *
 * Each instruction-set variant (generic.c, avx2.c, avx512.c) compiles the same
 * microkernels (microkernels.h) for its own vector width and register blocks and
 * publishes them as one conv3dt_isa record: the facts the planner and the packing need
 * (vector width, block sizes) and a function pointer per microkernel and dtype. The
 * registry (registry.c) lists the variants, best first, and tells which ones this CPU
 * runs. Everything outside the microkernels reads these facts from the record, never
 * from literals of its own.
 */
#ifndef CONV3DT_ISA_H
#define CONV3DT_ISA_H

#include <stddef.h>

/* Per dtype (T = float or double). See microkernels.h for what each computes. */
#define CONV3DT_ISA_KERNELS(T, S)                                                   \
    /* C [n x nv vectors] (+)= W[:, rows] @ A: the forward pass's and grad_x's product */ \
    void (*panel_gemm_##S)(ptrdiff_t nv, ptrdiff_t n, ptrdiff_t k, const T *A,        \
                           const ptrdiff_t *aoff, const ptrdiff_t *voff, const T *Wp,      \
                           ptrdiff_t wps, const ptrdiff_t *rows, T beta, T *C,             \
                           ptrdiff_t ldc);                                                 \
    /* grad_weight's product, a reduction along a tile */                                \
    void (*wgrad_gemm_##S)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t nrow, ptrdiff_t len,        \
                           const ptrdiff_t *roff, const T *Xt, ptrdiff_t ldx, const T *A,  \
                           const ptrdiff_t *aoff, const ptrdiff_t *cols, T *C,             \
                           ptrdiff_t ldc);                                                 \
    /* grad_weight's product for few input channels */                                   \
    void (*dot_blocks_##S)(const T *X, ptrdiff_t ldi, ptrdiff_t cig, const T *A,           \
                           const ptrdiff_t *aoff, const ptrdiff_t *rows, ptrdiff_t kb,     \
                           const ptrdiff_t *roff, ptrdiff_t nrow, ptrdiff_t len, T *acc);  \
    /* y[u] += a * x[u]: the forward pass's direct path (few output channels) */          \
    void (*axpy_##S)(T *y, const T *x, T a, ptrdiff_t n);                                  \
    /* the number of NaN or infinite elements of x[0 .. n) */                            \
    ptrdiff_t (*nonfinite_##S)(const T *x, ptrdiff_t n);                                   \
    /* dst[2u] = a[u] + b, dst[2u + 1] = c[u] + b (or +=): two w-phases of stride 2 */    \
    void (*store2_##S)(T *dst, const T *a, const T *c, T b, ptrdiff_t n, int accumulate); \
    /* n steps of independent multiply-adds (the benchmark's FMA peak); returns the flop */ \
    double (*fma_probe_##S)(ptrdiff_t n, T *sink);

typedef struct conv3dt_isa {
    const char *name;     /* "generic", "avx2", "avx512" */
    int vector_bytes;     /* bytes of one vector register: lanes = vector_bytes / sizeof(T) */
    int panel_mv;         /* panel product's register block: vectors of tile columns ... */
    int panel_nr;         /* ... x columns of the packed weight (its panel width) */
    int wgrad_mv;         /* grad_weight product's block: vectors of input channels ... */
    int wgrad_nr;         /* ... x rows of the gathered grad_output */
    int dot_nb;           /* few-channel grad_weight block: channels x rows <= dot_nb */
    int direct_cout;      /* the forward pass accumulates straight from x (axpy) when
                           * C_out / groups <= direct_cout (a measured crossover) */
    CONV3DT_ISA_KERNELS(float, f)
    CONV3DT_ISA_KERNELS(double, d)
} conv3dt_isa;

/* The registry (registry.c). Variants are numbered 0 .. conv3dt_isa_count() - 1, best
 * first; the last is always "generic". */
int conv3dt_isa_count(void);
const conv3dt_isa *conv3dt_isa_get(int index);
/* Whether this CPU (and its operating system) runs variant `index`. */
int conv3dt_isa_supported(int index);

#endif
