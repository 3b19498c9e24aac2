/* The AVX-512 variant (F, BW, VL, DQ + FMA; x86-64-v4): 64-byte vectors and 32 registers.
 * Panel blocks of 6 vectors x 4 columns (24 accumulators, 6 loads, 1 broadcast: 31
 * registers), grad_weight blocks of 2 vectors x 12 rows (24 accumulators), few-channel
 * grad_weight blocks of 24 accumulators of 32 bytes; the element tails of the axpy and
 * finiteness loops run as masked vector operations instead of scalar loops. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#if defined(__clang__)
#define CONV3DT_FN static __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#else
#define CONV3DT_FN static __attribute__((target( \
    "avx512f,avx512bw,avx512vl,avx512dq,fma,prefer-vector-width=512")))
#endif
#define CONV3DT_VECTOR_BYTES 64
#define CONV3DT_PANEL_MV 6
#define CONV3DT_PANEL_NR 4
#define CONV3DT_THIN_MV 24
#define CONV3DT_WGRAD_NR 12
/* the panel product beats the direct path even for one output channel (dw_k3s2_g64
 * forward 11.6 against 15.8 ms, C_in 32 -> C_out 1 at 32^3 2.0 against 5.5 ms, one
 * thread) */
#define CONV3DT_DIRECT_COUT 0
#define CONV3DT_DOT_NB 24
/* few-channel grad_weight blocks in 32-byte vectors (of the 32 registers): adding the
 * lanes of 24 accumulators at the end of each block costs half as much as with 64 bytes */
#define CONV3DT_DOT_VECTOR_BYTES 32
#define CONV3DT_RECORD conv3dt_isa_avx512
#define CONV3DT_NAME "avx512"

/* y[u] += a * x[u], u < n: whole vectors, then one masked vector for the tail. */
#define CONV3DT_HAVE_AXPY
CONV3DT_FN void axpy_f(float *restrict y, const float *restrict x, float a, ptrdiff_t n) {
    __m512 av = _mm512_set1_ps(a);
    ptrdiff_t u = 0;
    for (; u + 16 <= n; u += 16)
        _mm512_storeu_ps(y + u, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + u),
                                                _mm512_loadu_ps(y + u)));
    if (u < n) {
        __mmask16 m = (__mmask16)((1u << (n - u)) - 1);
        __m512 r = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + u),
                                   _mm512_maskz_loadu_ps(m, y + u));
        _mm512_mask_storeu_ps(y + u, m, r);
    }
}
CONV3DT_FN void axpy_d(double *restrict y, const double *restrict x, double a, ptrdiff_t n) {
    __m512d av = _mm512_set1_pd(a);
    ptrdiff_t u = 0;
    for (; u + 8 <= n; u += 8)
        _mm512_storeu_pd(y + u, _mm512_fmadd_pd(av, _mm512_loadu_pd(x + u),
                                                _mm512_loadu_pd(y + u)));
    if (u < n) {
        __mmask8 m = (__mmask8)((1u << (n - u)) - 1);
        __m512d r = _mm512_fmadd_pd(av, _mm512_maskz_loadu_pd(m, x + u),
                                    _mm512_maskz_loadu_pd(m, y + u));
        _mm512_mask_storeu_pd(y + u, m, r);
    }
}

/* NaN or infinity: all exponent bits set, counted from compare masks (masked tail). */
#define CONV3DT_HAVE_NONFINITE
CONV3DT_FN ptrdiff_t nonfinite_f(const float *restrict x, ptrdiff_t n) {
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    ptrdiff_t bad = 0, u = 0;
    for (; u + 16 <= n; u += 16) {
        __m512i b = _mm512_and_si512(_mm512_loadu_si512((const void *)(x + u)), e);
        bad += __builtin_popcount((unsigned)_mm512_cmpeq_epi32_mask(b, e));
    }
    if (u < n) {
        __mmask16 m = (__mmask16)((1u << (n - u)) - 1);
        __m512i b = _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + u), e);
        bad += __builtin_popcount((unsigned)_mm512_mask_cmpeq_epi32_mask(m, b, e));
    }
    return bad;
}
CONV3DT_FN ptrdiff_t nonfinite_d(const double *restrict x, ptrdiff_t n) {
    const __m512i e = _mm512_set1_epi64(0x7ff0000000000000ll);
    ptrdiff_t bad = 0, u = 0;
    for (; u + 8 <= n; u += 8) {
        __m512i b = _mm512_and_si512(_mm512_loadu_si512((const void *)(x + u)), e);
        bad += __builtin_popcount((unsigned)_mm512_cmpeq_epi64_mask(b, e));
    }
    if (u < n) {
        __mmask8 m = (__mmask8)((1u << (n - u)) - 1);
        __m512i b = _mm512_and_si512(_mm512_maskz_loadu_epi64(m, x + u), e);
        bad += __builtin_popcount((unsigned)_mm512_mask_cmpeq_epi64_mask(m, b, e));
    }
    return bad;
}

#include "microkernels.h"
#endif
