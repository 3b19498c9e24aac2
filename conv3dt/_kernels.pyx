# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU kernels of the 3D transposed convolution (float32 and float64, OpenMP, BLAS).

All arrays are NCDHW typed memoryviews with arbitrary strides (an NDHWC array is passed
as its transposed view; nothing is copied). Kernels never validate: conv3dt.functional
resolves and checks every argument first. They return 0, or -1 when a per-thread
workspace could not be allocated (the caller raises MemoryError).

Forward pass (phase decomposition, see conv3dt._geometry): per (sample, group, phase
combination, tile of the phase's output grid), pack the shifted input columns the phase's
taps read into B [C_in_g * taps x tile] and compute
    Y [C_out_g x tile] = W_phase [C_out_g x C_in_g * taps] @ B
then write Y (+ bias) to its strided output positions. Phases partition the output, so
threads never write the same element. The rows of B are processed in blocks of `kblock`
so that the workspace is bounded whatever the channel count and kernel size.

Gradients (a strided gather of grad_output): per (group, sample, tile of input positions),
pack B = cols(grad_out) [C_out_g * K x tile]; then
    grad_x tile  [C_in_g x tile]         = W_g [C_in_g x C_out_g * K] @ B
    grad_w_g     [C_in_g x C_out_g * K] += X_tile [C_in_g x tile] @ B^T
sharing B. grad_w is accumulated per chunk of work items (a fixed number of chunks that
does not depend on the thread count) and the chunks are summed in order, so results are
bitwise identical for any number of threads.

GEMMs are row-major products computed by column-major BLAS on transposed operands.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CONV3DT_HAVE_OPENMP 1
    #else
    #define CONV3DT_HAVE_OPENMP 0
    #endif
    """
    int CONV3DT_HAVE_OPENMP

#: Whether this build runs its kernels in parallel with OpenMP.
OPENMP = bool(CONV3DT_HAVE_OPENMP)


# ---------------------------------------------------------------------------- helpers

cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline Py_ssize_t _floordiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # b > 0; C division truncates towards zero.
    return a // b if a >= 0 else -((-a + b - 1) // b)


cdef inline Strides4 _strides(Py_ssize_t* byte_strides, Py_ssize_t itemsize) noexcept nogil:
    cdef Strides4 s
    s.c = byte_strides[1] // itemsize
    s.d = byte_strides[2] // itemsize
    s.h = byte_strides[3] // itemsize
    s.w = byte_strides[4] // itemsize
    return s


cdef inline void _gemm(char transa, int m, int n, int k, const floating* a, int lda,
                       const floating* b, int ldb, floating beta, floating* c,
                       int ldc) noexcept nogil:
    """Column-major C[m x n] = op(A) @ B + beta * C, op(A) = A or A^T (transa 'N'/'T')."""
    cdef char no = c'N'
    cdef floating one = 1
    if floating is float:
        sgemm(&transa, &no, &m, &n, &k, &one, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &no, &m, &n, &k, &one, <double*>a, &lda, <double*>b, &ldb, &beta, c,
              &ldc)


cdef inline void _copy_strided(floating* dst, const floating* src, Py_ssize_t step,
                               Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t u
    if step == 1:
        for u in range(n):
            dst[u] = src[u]
    else:
        for u in range(n):
            dst[u] = src[u * step]


# ------------------------------------------------------------------------ forward pass

cdef void _pack_phase(const floating* xg, Strides4 xs, Py_ssize_t in_d, Py_ssize_t in_h,
                      Py_ssize_t in_w, const Phase3* ph, Py_ssize_t r0, Py_ssize_t nrows,
                      Py_ssize_t j0, Py_ssize_t nc, floating* B) noexcept nogil:
    """B[r - r0, j - j0] = x[ci, q(j) - m(tap)] (zero outside the input), row r = (ci, tap).

    IN  xg: x at (sample, first channel of the group); ph: the phase combination.
    OUT B: [nrows x nc], row-major.
    """
    cdef Py_ssize_t nth = ph.ntaps[1], ntw = ph.ntaps[2]
    cdef Py_ssize_t nt = ph.ntaps[0] * nth * ntw
    cdef Py_ssize_t cnt_h = ph.count[1], cnt_w = ph.count[2]
    cdef Py_ssize_t r, ci, tap, md, mh, mw, jd, jh, jw, done, seg, i_d, i_h, iw0, lo_u, hi_u
    cdef floating* dst
    for r in range(r0, r0 + nrows):
        ci = r // nt
        tap = r - ci * nt
        md = ph.taps[0][2 * (tap // (nth * ntw)) + 1]
        mh = ph.taps[1][2 * ((tap // ntw) % nth) + 1]
        mw = ph.taps[2][2 * (tap % ntw) + 1]
        dst = B + (r - r0) * nc
        jd = j0 // (cnt_h * cnt_w)
        jh = (j0 // cnt_w) % cnt_h
        jw = j0 % cnt_w
        done = 0
        while done < nc:
            seg = _min(cnt_w - jw, nc - done)
            i_d = ph.q0[0] + jd - md
            i_h = ph.q0[1] + jh - mh
            if 0 <= i_d < in_d and 0 <= i_h < in_h:
                iw0 = ph.q0[2] + jw - mw
                lo_u = _clamp(-iw0, 0, seg)
                hi_u = _clamp(in_w - iw0, lo_u, seg)
                memset(dst + done, 0, lo_u * sizeof(floating))
                _copy_strided(dst + done + lo_u,
                              xg + ci * xs.c + i_d * xs.d + i_h * xs.h + (iw0 + lo_u) * xs.w,
                              xs.w, hi_u - lo_u)
                memset(dst + done + hi_u, 0, (seg - hi_u) * sizeof(floating))
            else:
                memset(dst + done, 0, seg * sizeof(floating))
            done += seg
            jw = 0
            jh += 1
            if jh == cnt_h:
                jh = 0
                jd += 1


cdef void _write_phase(const floating* Y, floating* yg, Strides4 ys, Py_ssize_t cog,
                       const floating* bias, const Phase3* ph, Py_ssize_t stride_d,
                       Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t j0,
                       Py_ssize_t nc) noexcept nogil:
    """y[co, o(j)] = Y[co, j - j0] (+ bias[co]) for the phase's output positions o(j).

    IN  Y: [cog x nc] row-major; bias: NULL or the group's first bias entry.
    OUT yg: y at (sample, first channel of the group).
    """
    cdef Py_ssize_t cnt_h = ph.count[1], cnt_w = ph.count[2]
    cdef Py_ssize_t co, jd, jh, jw, done, seg, u, step = stride_w * ys.w
    cdef const floating* src
    cdef floating* dst
    cdef floating b
    for co in range(cog):
        b = bias[co] if bias != NULL else 0
        jd = j0 // (cnt_h * cnt_w)
        jh = (j0 // cnt_w) % cnt_h
        jw = j0 % cnt_w
        done = 0
        while done < nc:
            seg = _min(cnt_w - jw, nc - done)
            src = Y + co * nc + done
            dst = (yg + co * ys.c + (ph.o0[0] + jd * stride_d) * ys.d
                   + (ph.o0[1] + jh * stride_h) * ys.h + (ph.o0[2] + jw * stride_w) * ys.w)
            if bias != NULL:
                for u in range(seg):
                    dst[u * step] = src[u] + b
            else:
                for u in range(seg):
                    dst[u * step] = src[u]
            done += seg
            jw = 0
            jh += 1
            if jh == cnt_h:
                jh = 0
                jd += 1


cdef inline void _load_phase(Phase3* ph, const Py_ssize_t[:, :, ::1] phases,
                             const Py_ssize_t[:, :, ::1] taps,
                             const Py_ssize_t[:, ::1] combos, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t a, p
    for a in range(3):
        p = combos[c, a]
        ph.o0[a] = phases[a, p, 0]
        ph.q0[a] = phases[a, p, 1]
        ph.count[a] = phases[a, p, 2]
        ph.ntaps[a] = phases[a, p, 4]
        ph.taps[a] = &taps[a, phases[a, p, 3], 0]


cdef void _pack_weight_combo(const floating[:, :, :, :, ::1] w, floating* wc,
                             Py_ssize_t groups, const Phase3* ph) noexcept nogil:
    """wc[g][co][ci * nt + tap] = w[g * cig + ci, co, t_d, t_h, t_w] for one combination."""
    cdef Py_ssize_t cig = w.shape[0] // groups, cog = w.shape[1]
    cdef Py_ssize_t ntd = ph.ntaps[0], nth = ph.ntaps[1], ntw = ph.ntaps[2]
    cdef Py_ssize_t nt = ntd * nth * ntw, kc = cig * nt
    cdef Py_ssize_t g, co, ci, a, b, e
    for g in range(groups):
        for co in range(cog):
            for ci in range(cig):
                for a in range(ntd):
                    for b in range(nth):
                        for e in range(ntw):
                            wc[(g * cog + co) * kc + ci * nt + (a * nth + b) * ntw + e] = w[
                                g * cig + ci, co, ph.taps[0][2 * a], ph.taps[1][2 * b],
                                ph.taps[2][2 * e]]


def pack_forward_weight(const floating[:, :, :, :, ::1] w,   # IN  [C_in, C_out_g, kD, kH, kW]
                        floating[::1] wpack,                  # OUT weights per combination
                        Py_ssize_t groups,
                        const Py_ssize_t[:, :, ::1] phases,   # IN  (3, P, 5) phase tables
                        const Py_ssize_t[:, :, ::1] taps,     # IN  (3, T, 2) tap tables
                        const Py_ssize_t[:, ::1] combos):     # IN  (C, 4) phases + offset
    """Gather the weight of each phase combination into a dense [C_out_g x C_in_g*taps]."""
    cdef Phase3 ph
    cdef Py_ssize_t c
    with nogil:
        for c in range(combos.shape[0]):
            _load_phase(&ph, phases, taps, combos, c)
            _pack_weight_combo(w, &wpack[combos[c, 3]], groups, &ph)


cdef void _forward_item(const floating* xg, Strides4 xs, Py_ssize_t in_d, Py_ssize_t in_h,
                        Py_ssize_t in_w, const floating* wpack, Py_ssize_t g, floating* yg,
                        Strides4 ys, Py_ssize_t cig, Py_ssize_t cog, const floating* bias,
                        const Py_ssize_t[:, :, ::1] phases, const Py_ssize_t[:, :, ::1] taps,
                        const Py_ssize_t[:, ::1] combos, Py_ssize_t c, Py_ssize_t stride_d,
                        Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t j0,
                        Py_ssize_t ncol, Py_ssize_t kblock, floating* B,
                        floating* Y) noexcept nogil:
    """One tile [j0, j0 + ncol) of phase combination c of one (sample, group)."""
    cdef Phase3 ph
    _load_phase(&ph, phases, taps, combos, c)
    cdef Py_ssize_t nc = _min(ncol, ph.count[0] * ph.count[1] * ph.count[2] - j0)
    cdef Py_ssize_t kc = cig * ph.ntaps[0] * ph.ntaps[1] * ph.ntaps[2]
    cdef const floating* wg = wpack + combos[c, 3] + g * cog * kc
    cdef Py_ssize_t kb0 = 0, kb
    cdef floating beta = 0
    while kb0 < kc:
        kb = _min(kblock, kc - kb0)
        _pack_phase(xg, xs, in_d, in_h, in_w, &ph, kb0, kb, j0, nc, B)
        # Y [cog x nc] (+)= W_phase[:, kb0:kb0+kb] @ B  (row-major)
        _gemm(c'N', <int>nc, <int>cog, <int>kb, B, <int>nc, wg + kb0, <int>kc, beta, Y,
              <int>nc)
        beta = 1
        kb0 += kb
    _write_phase(Y, yg, ys, cog, bias, &ph, stride_d, stride_h, stride_w, j0, nc)


cdef void _fill_channel(floating* yc, Strides4 ys, Py_ssize_t od, Py_ssize_t oh,
                        Py_ssize_t ow, floating value) noexcept nogil:
    cdef Py_ssize_t a, b, e
    for a in range(od):
        for b in range(oh):
            for e in range(ow):
                yc[a * ys.d + b * ys.h + e * ys.w] = value


def forward(const floating[:, :, :, :, :] x,        # IN  [N, C_in, D, H, W]
            const floating[::1] wpack,               # IN  pack_forward_weight's output
            const floating[::1] bias,                # IN  [C_out], or empty: no bias
            floating[:, :, :, :, :] y,               # OUT [N, C_out, oD, oH, oW]
            Py_ssize_t groups,
            const Py_ssize_t[:, :, ::1] phases,      # IN  (3, P, 5) phase tables
            const Py_ssize_t[:, :, ::1] taps,        # IN  (3, T, 2) tap tables
            const Py_ssize_t[:, ::1] combos,         # IN  (C, 4) phases + weight offset
            const Py_ssize_t[:, ::1] tiles,          # IN  (M, 2) rows (combination, j0)
            Py_ssize_t stride_d, Py_ssize_t stride_h, Py_ssize_t stride_w,
            bint fill,                               # some outputs get no tap: fill first
            Py_ssize_t ncol, Py_ssize_t kblock, int n_threads):
    """y = conv3d_transpose(x, w) (+ bias). Returns 0, or -1 if a workspace malloc failed."""
    cdef Py_ssize_t n_batch = x.shape[0], cig = x.shape[1] // groups
    cdef Py_ssize_t c_out = y.shape[1], cog = c_out // groups
    cdef Py_ssize_t n_tiles = tiles.shape[0]
    cdef Py_ssize_t n_items = n_batch * groups * n_tiles
    cdef Strides4 xs = _strides(x.strides, sizeof(floating))
    cdef Strides4 ys = _strides(y.strides, sizeof(floating))
    cdef Py_ssize_t sx_n = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t sy_n = y.strides[0] // sizeof(floating)
    cdef const floating* x0 = &x[0, 0, 0, 0, 0]
    cdef floating* y0 = &y[0, 0, 0, 0, 0]
    cdef const floating* w0 = &wpack[0]
    cdef const floating* b0 = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t it, n, g, t
    cdef int failed = 0
    cdef int* failed_ptr = &failed
    cdef floating* B
    cdef floating* Y

    if fill:
        with nogil:
            for it in prange(n_batch * c_out, num_threads=n_threads, schedule='static'):
                _fill_channel(y0 + (it // c_out) * sy_n + (it % c_out) * ys.c, ys,
                              y.shape[2], y.shape[3], y.shape[4],
                              b0[it % c_out] if b0 != NULL else 0)

    with nogil, parallel(num_threads=n_threads):
        B = <floating*>malloc(kblock * ncol * sizeof(floating))
        Y = <floating*>malloc(cog * ncol * sizeof(floating))
        if B == NULL or Y == NULL:
            failed_ptr[0] = 1
        for it in prange(n_items, schedule='dynamic'):
            if B == NULL or Y == NULL:
                continue
            t = it % n_tiles
            g = (it // n_tiles) % groups
            n = it // (n_tiles * groups)
            _forward_item(x0 + n * sx_n + g * cig * xs.c, xs, x.shape[2], x.shape[3],
                          x.shape[4], w0, g, y0 + n * sy_n + g * cog * ys.c, ys, cig, cog,
                          b0 + g * cog if b0 != NULL else NULL, phases, taps, combos,
                          tiles[t, 0], stride_d, stride_h, stride_w, tiles[t, 1], ncol,
                          kblock, B, Y)
        free(B)
        free(Y)
    return -1 if failed else 0


# -------------------------------------------------------------------------- gradients

cdef struct Gather:
    # Geometry of the gather from grad_output (per dimension d, h, w).
    Py_ssize_t in_[3]
    Py_ssize_t out[3]
    Py_ssize_t k[3]
    Py_ssize_t s[3]
    Py_ssize_t dil[3]
    Py_ssize_t lo[3]


cdef void _pack_gather(const floating* gyg, Strides4 gs, const Gather* G, Py_ssize_t r0,
                       Py_ssize_t nrows, Py_ssize_t j0, Py_ssize_t nc,
                       floating* B) noexcept nogil:
    """B[r - r0, j - j0] = grad_y[co, i(j) * s + t * d - lo] (zero outside), r = (co, t).

    IN  gyg: grad_output at (sample, first channel of the group).
    OUT B: [nrows x nc], row-major; columns are flat input positions (D, H, W).
    """
    cdef Py_ssize_t kk = G.k[0] * G.k[1] * G.k[2]
    cdef Py_ssize_t r, co, t, td, th, tw, jd, jh, jw, done, seg, od, oh, off_w
    cdef Py_ssize_t first, last, lo_u, hi_u
    cdef floating* dst
    for r in range(r0, r0 + nrows):
        co = r // kk
        t = r - co * kk
        td = t // (G.k[1] * G.k[2])
        th = (t // G.k[2]) % G.k[1]
        tw = t % G.k[2]
        off_w = tw * G.dil[2] - G.lo[2]
        # Input columns iw whose output ow = iw * s + off_w lies in [0, out_w).
        first = -_floordiv(off_w, G.s[2])
        last = _floordiv(G.out[2] - 1 - off_w, G.s[2])
        dst = B + (r - r0) * nc
        jd = j0 // (G.in_[1] * G.in_[2])
        jh = (j0 // G.in_[2]) % G.in_[1]
        jw = j0 % G.in_[2]
        done = 0
        while done < nc:
            seg = _min(G.in_[2] - jw, nc - done)
            od = jd * G.s[0] + td * G.dil[0] - G.lo[0]
            oh = jh * G.s[1] + th * G.dil[1] - G.lo[1]
            if 0 <= od < G.out[0] and 0 <= oh < G.out[1]:
                lo_u = _clamp(first - jw, 0, seg)
                hi_u = _clamp(last + 1 - jw, lo_u, seg)
                memset(dst + done, 0, lo_u * sizeof(floating))
                _copy_strided(dst + done + lo_u,
                              gyg + co * gs.c + od * gs.d + oh * gs.h
                              + ((jw + lo_u) * G.s[2] + off_w) * gs.w,
                              G.s[2] * gs.w, hi_u - lo_u)
                memset(dst + done + hi_u, 0, (seg - hi_u) * sizeof(floating))
            else:
                memset(dst + done, 0, seg * sizeof(floating))
            done += seg
            jw = 0
            jh += 1
            if jh == G.in_[1]:
                jh = 0
                jd += 1


cdef void _tile_io(floating* tile, floating* vol, Strides4 vs, Py_ssize_t nch,
                   Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t j0, Py_ssize_t nc,
                   bint to_tile) noexcept nogil:
    """Copy flat positions [j0, j0 + nc) of nch channels between a volume and a tile.

    to_tile: tile[ch, j - j0] = vol[ch, j]; otherwise vol[ch, j] = tile[ch, j - j0].
    """
    cdef Py_ssize_t ch, jd, jh, jw, done, seg, u
    cdef floating* v
    for ch in range(nch):
        jd = j0 // (in_h * in_w)
        jh = (j0 // in_w) % in_h
        jw = j0 % in_w
        done = 0
        while done < nc:
            seg = _min(in_w - jw, nc - done)
            v = vol + ch * vs.c + jd * vs.d + jh * vs.h + jw * vs.w
            if to_tile:
                _copy_strided(tile + ch * nc + done, v, vs.w, seg)
            else:
                for u in range(seg):
                    v[u * vs.w] = tile[ch * nc + done + u]
            done += seg
            jw = 0
            jh += 1
            if jh == in_h:
                jh = 0
                jd += 1


cdef void _grad_item(const floating* gyg, Strides4 gs, const floating* xg, Strides4 xs,
                     const floating* wg, floating* gxg, Strides4 gxs, floating* acc,
                     const Gather* G, Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t j0,
                     Py_ssize_t nc, Py_ssize_t kblock, floating* B, floating* T,
                     floating* X) noexcept nogil:
    """One tile of input positions of one (sample, group): grad_x and/or grad_w."""
    cdef Py_ssize_t kc = cog * G.k[0] * G.k[1] * G.k[2]
    cdef Py_ssize_t kb0 = 0, kb
    cdef floating beta = 0, one = 1
    if acc != NULL:
        _tile_io(X, <floating*>xg, xs, cig, G.in_[1], G.in_[2], j0, nc, True)
    while kb0 < kc:
        kb = _min(kblock, kc - kb0)
        _pack_gather(gyg, gs, G, kb0, kb, j0, nc, B)
        if gxg != NULL:
            # T [cig x nc] (+)= W_g[:, kb0:kb0+kb] @ B  (row-major)
            _gemm(c'N', <int>nc, <int>cig, <int>kb, B, <int>nc, wg + kb0, <int>kc, beta, T,
                  <int>nc)
        if acc != NULL:
            # acc[:, kb0:kb0+kb] += X [cig x nc] @ B^T  (row-major)
            _gemm(c'T', <int>kb, <int>cig, <int>nc, B, <int>nc, X, <int>nc, one, acc + kb0,
                  <int>kc)
        beta = 1
        kb0 += kb
    if gxg != NULL:
        _tile_io(T, gxg, gxs, cig, G.in_[1], G.in_[2], j0, nc, False)


def backward(const floating[:, :, :, :, :] gy,        # IN  [N, C_out, oD, oH, oW]
             const floating[:, :, :, :, :] x,         # IN  [N, C_in, D, H, W]
             const floating[:, :, :, :, ::1] w,       # IN  [C_in, C_out_g, kD, kH, kW]
             floating[:, :, :, :, :] gx,              # OUT [N, C_in, D, H, W] (if need_gx)
             floating[:, ::1] gw_chunks,              # OUT (n_chunks, w.size), zeroed (if need_gw)
             bint need_gx, bint need_gw, Py_ssize_t groups,
             const Py_ssize_t[::1] geometry,          # IN  stride[3], dilation[3], pad_lo[3]
             Py_ssize_t ncol, Py_ssize_t kblock, Py_ssize_t n_chunks, int n_threads):
    """grad_x and the per-chunk partial sums of grad_w. Returns 0, or -1 on malloc failure.

    Work item it = (g * N + n) * n_tiles + tile; chunk c owns the items
    [c * n_items // n_chunks, (c + 1) * n_items // n_chunks) and accumulates them in order
    into gw_chunks[c]; :func:`sum_chunks` adds the chunks in order.
    """
    cdef Py_ssize_t n_batch = x.shape[0], cig = x.shape[1] // groups
    cdef Py_ssize_t cog = gy.shape[1] // groups
    cdef Gather G
    cdef Py_ssize_t a
    for a in range(3):
        G.in_[a] = x.shape[2 + a]
        G.out[a] = gy.shape[2 + a]
        G.k[a] = w.shape[2 + a]
        G.s[a] = geometry[a]
        G.dil[a] = geometry[3 + a]
        G.lo[a] = geometry[6 + a]
    cdef Py_ssize_t kc = cog * G.k[0] * G.k[1] * G.k[2]
    cdef Py_ssize_t volume = G.in_[0] * G.in_[1] * G.in_[2]
    cdef Py_ssize_t n_tiles = (volume + ncol - 1) // ncol
    cdef Py_ssize_t n_items = groups * n_batch * n_tiles
    cdef Strides4 gs = _strides(gy.strides, sizeof(floating))
    cdef Strides4 xs = _strides(x.strides, sizeof(floating))
    cdef Strides4 gxs
    cdef Py_ssize_t sgy_n = gy.strides[0] // sizeof(floating)
    cdef Py_ssize_t sx_n = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t sgx_n = 0
    cdef const floating* gy0 = &gy[0, 0, 0, 0, 0]
    cdef const floating* x0 = &x[0, 0, 0, 0, 0]
    cdef const floating* w0 = &w[0, 0, 0, 0, 0]
    cdef floating* gx0 = NULL
    cdef floating* acc0 = NULL
    cdef Py_ssize_t acc_stride = 0
    if need_gx:
        gxs = _strides(gx.strides, sizeof(floating))
        sgx_n = gx.strides[0] // sizeof(floating)
        gx0 = &gx[0, 0, 0, 0, 0]
    if need_gw:
        acc0 = &gw_chunks[0, 0]
        acc_stride = gw_chunks.shape[1]
    cdef Py_ssize_t ch, it, g, n, j0, rem
    cdef int failed = 0
    cdef int* failed_ptr = &failed
    cdef floating* B
    cdef floating* T
    cdef floating* X

    with nogil, parallel(num_threads=n_threads):
        B = <floating*>malloc(kblock * ncol * sizeof(floating))
        T = <floating*>malloc(cig * ncol * sizeof(floating))
        X = <floating*>malloc(cig * ncol * sizeof(floating))
        if B == NULL or T == NULL or X == NULL:
            failed_ptr[0] = 1
        for ch in prange(n_chunks, schedule='dynamic'):
            if B == NULL or T == NULL or X == NULL:
                continue
            for it in range(ch * n_items // n_chunks, (ch + 1) * n_items // n_chunks):
                g = it // (n_batch * n_tiles)
                rem = it - g * n_batch * n_tiles
                n = rem // n_tiles
                j0 = (rem - n * n_tiles) * ncol
                _grad_item(gy0 + n * sgy_n + g * cog * gs.c, gs,
                           x0 + n * sx_n + g * cig * xs.c, xs,
                           w0 + g * cig * kc,
                           gx0 + n * sgx_n + g * cig * gxs.c if gx0 != NULL else NULL, gxs,
                           acc0 + ch * acc_stride + g * cig * kc if acc0 != NULL else NULL,
                           &G, cig, cog, j0, _min(ncol, volume - j0), kblock, B, T, X)
        free(B)
        free(T)
        free(X)
    return -1 if failed else 0


cdef inline floating _sum_column(const floating* a, Py_ssize_t rows,
                                 Py_ssize_t ld) noexcept nogil:
    cdef floating s = 0
    cdef Py_ssize_t r
    for r in range(rows):
        s = s + a[r * ld]
    return s


def sum_chunks(const floating[:, ::1] chunks,  # IN  (n_chunks, size) partial sums
               floating[::1] out,              # OUT (size,) their sum, chunk by chunk in order
               int n_threads):
    cdef Py_ssize_t e, rows = chunks.shape[0], ld = chunks.shape[1]
    cdef const floating* base = &chunks[0, 0]
    with nogil:
        for e in prange(ld, num_threads=n_threads, schedule='static'):
            out[e] = _sum_column(base + e, rows, ld)


# Bias gradients are summed sequentially in the array's precision within blocks of this
# many elements (the order and rounding of PaddlePaddle's own kernel, which a reference
# comparison in float32 needs), and the block sums are added in double so that the error
# stays bounded on large volumes.
cdef enum:
    _SUM_BLOCK = 4096


cdef double _sum_channel(const floating* gc, Py_ssize_t n_batch, Py_ssize_t sn,
                         Strides4 s, Py_ssize_t od, Py_ssize_t oh,
                         Py_ssize_t ow) noexcept nogil:
    cdef double total = 0
    cdef floating partial = 0
    cdef Py_ssize_t n, a, b, e, count = 0
    for n in range(n_batch):
        for a in range(od):
            for b in range(oh):
                for e in range(ow):
                    partial = partial + gc[n * sn + a * s.d + b * s.h + e * s.w]
                    count = count + 1
                    if count == _SUM_BLOCK:
                        total = total + partial
                        partial = 0
                        count = 0
    return total + partial


def bias_grad(const floating[:, :, :, :, :] gy,   # IN  [N, C_out, oD, oH, oW]
              floating[::1] gb,                     # OUT [C_out]
              int n_threads):
    """gb[co] = sum of gy[:, co] over batch and space (blocked sum, see _SUM_BLOCK)."""
    cdef Strides4 s = _strides(gy.strides, sizeof(floating))
    cdef Py_ssize_t sn = gy.strides[0] // sizeof(floating)
    cdef const floating* g0 = &gy[0, 0, 0, 0, 0]
    cdef Py_ssize_t co
    with nogil:
        for co in prange(gy.shape[1], num_threads=n_threads, schedule='static'):
            gb[co] = <floating>_sum_channel(g0 + co * s.c, gy.shape[0], sn, s, gy.shape[2],
                                            gy.shape[3], gy.shape[4])
