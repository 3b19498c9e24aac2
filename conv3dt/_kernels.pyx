# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU kernels of the 3D transposed convolution (float32 and float64, OpenMP).

All arrays are NCDHW typed memoryviews with arbitrary strides (an NDHWC array is passed
as its transposed view; nothing is copied). Kernels never validate: conv3dt.functional
resolves and checks every argument first. They return 0, or -1 when a per-thread
workspace could not be allocated (the caller raises MemoryError).

Forward pass (phase decomposition, see conv3dt._geometry): a work item is a slab of output
depths of one (sample, group). It copies the input depths the slab reads into a per-thread
window of x with zero gaps after every row and plane (_copy_window); every tap of every
phase combination is then a shifted view of that window, read in place. Per tile of a
combination's output grid (whole planes, or rows of one plane)
    Y [C_out_g x tile] = W_phase [C_out_g x C_in_g * taps] @ B,   B[(ci, tap), j] = window
is written (+ bias) to its strided output positions. Rows of B that read only zeros for the
whole tile are left out. Phases partition the output, so threads never write the same
element.

Gradients: tap t reads grad_output at (i + a_t) * s + r_t, a shifted view of residue grid
r_t; a work item (input depths of one sample and group) copies those grids into a padded
window (_copy_gy_window) and, per tile of input positions,
    grad_x tile  [C_in_g x tile]         = W_g [C_in_g x C_out_g * K] @ B
    grad_w_g^T   [C_out_g * K x C_in_g] += B @ X_tile^T [tile x C_in_g]
with B read in place from the window. grad_w is accumulated transposed (input channels
contiguous, so a register block adds whole vectors) per chunk of work items (a fixed number
of chunks that does not depend on the thread count); the chunks are summed in order and
transposed back, so results are bitwise identical for any number of threads.

Products: register-blocked kernels of our own (_simd.h): the left operand read in place
through per-row offsets, the weight packed in panels. A BLAS would need B as a strided
matrix, which the shifted views are not, and would copy it. Thin products (few channels)
use vector loops.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

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


cdef inline Py_ssize_t _rows_per_tile(Py_ssize_t rows, Py_ssize_t wp,
                                      Py_ssize_t ncol) noexcept nogil:
    """Rows of wp columns per tile: at most ncol columns, the rows split evenly (32 rows
    in tiles of at most 31 go as 16 + 16, not 31 + 1)."""
    cdef Py_ssize_t n_tiles = (rows + max(1, ncol // wp) - 1) // max(1, ncol // wp)
    return (rows + n_tiles - 1) // n_tiles if n_tiles > 0 else 1


cdef Py_ssize_t _plane_tile(Py_ssize_t j, Py_ssize_t j_hi, Py_ssize_t in_lo, Py_ssize_t in_hi,
                            Py_ssize_t max_planes) noexcept nogil:
    """Planes of the tile that starts at plane j (< j_hi): one, where some tap reads
    outside the data (j outside [in_lo, in_hi)), so that its tiles leave out the taps that
    read only zeros; else as many of the inner planes from j as max_planes allows, the
    inner ones split evenly."""
    cdef Py_ssize_t end = _min(j_hi, in_hi)
    if j < in_lo or j >= end:
        return 1
    return _rows_per_tile(end - j, 1, max_planes)


cdef inline Py_ssize_t _row_pitch(bint compact, Py_ssize_t count_w, Py_ssize_t lanes,
                                  Py_ssize_t wp) noexcept nogil:
    """Columns per row of a panel-product tile (see _tile_vectors): the count_w kept ones in
    whole vectors of `lanes`, or the window's wp."""
    return (count_w + lanes - 1) // lanes * lanes if compact else wp


cdef inline bint _split_rows(bint compact, Py_ssize_t npl, Py_ssize_t count_w,
                             Py_ssize_t lanes, Py_ssize_t mv) noexcept nogil:
    """Whether a panel-product tile of npl planes tiles its boundary rows one by one
    (_rows_end): where a row of the tile fills a register block of mv vectors (the
    variant's panel_mv), and a tile of several planes is compact (else it computes the gap
    rows between planes)."""
    return ((compact or npl == 1)
            and npl * ((count_w + lanes - 1) // lanes) >= mv)


cdef Py_ssize_t _rows_end(Py_ssize_t jh, bint split, Py_ssize_t count, Py_ssize_t in_lo,
                          Py_ssize_t in_hi) noexcept nogil:
    """The end of the range of rows from jh (< count) that a plane tile tiles on its own:
    with `split`, each row outside [in_lo, in_hi) (where some tap reads outside the data,
    so that its tiles leave out the taps that read only zeros there) and the rows inside
    as one range; else all rows."""
    if not split:
        return count
    if jh < in_lo or jh >= in_hi:
        return jh + 1
    return _min(in_hi, count)


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


cdef extern from "kernels/memops.h" nogil:
    void _zero_f "conv3dt_zero_f"(float* dst, Py_ssize_t n)
    void _zero_d "conv3dt_zero_d"(double* dst, Py_ssize_t n)
    void _copy_f "conv3dt_copy_f"(float* dst, const float* src, Py_ssize_t step, Py_ssize_t n)
    void _copy_d "conv3dt_copy_d"(double* dst, const double* src, Py_ssize_t step,
                                  Py_ssize_t n)
    void _store_f "conv3dt_store_f"(float* dst, Py_ssize_t step, const float* src, float b,
                                    Py_ssize_t n, int accumulate)
    void _store_d "conv3dt_store_d"(double* dst, Py_ssize_t step, const double* src,
                                    double b, Py_ssize_t n, int accumulate)
    void _store_fence "conv3dt_store_fence"()


cdef extern from "kernels/isa.h" nogil:
    ctypedef struct conv3dt_isa:
        const char* name
        int vector_bytes
        int panel_mv
        int panel_nr
        int wgrad_mv
        int wgrad_nr
        int dot_nb
        int direct_cout
        void (*panel_gemm_f)(Py_ssize_t nv, Py_ssize_t n, Py_ssize_t k, const float* a,
                             const Py_ssize_t* aoff, const Py_ssize_t* voff, const float* wp,
                             Py_ssize_t wps, const Py_ssize_t* rows, float beta, float* c,
                             Py_ssize_t ldc) noexcept nogil
        void (*panel_gemm_d)(Py_ssize_t nv, Py_ssize_t n, Py_ssize_t k, const double* a,
                             const Py_ssize_t* aoff, const Py_ssize_t* voff, const double* wp,
                             Py_ssize_t wps, const Py_ssize_t* rows, double beta, double* c,
                             Py_ssize_t ldc) noexcept nogil
        void (*wgrad_gemm_f)(Py_ssize_t m, Py_ssize_t n, Py_ssize_t nrow, Py_ssize_t len,
                             const Py_ssize_t* roff, const float* xt, Py_ssize_t ldx,
                             const float* a, const Py_ssize_t* aoff, const Py_ssize_t* cols,
                             float* c, Py_ssize_t ldc) noexcept nogil
        void (*wgrad_gemm_d)(Py_ssize_t m, Py_ssize_t n, Py_ssize_t nrow, Py_ssize_t len,
                             const Py_ssize_t* roff, const double* xt, Py_ssize_t ldx,
                             const double* a, const Py_ssize_t* aoff, const Py_ssize_t* cols,
                             double* c, Py_ssize_t ldc) noexcept nogil
        void (*dot_blocks_f)(const float* X, Py_ssize_t ldi, Py_ssize_t cig, const float* a,
                             const Py_ssize_t* aoff, const Py_ssize_t* rows, Py_ssize_t kb,
                             const Py_ssize_t* roff, Py_ssize_t nrow, Py_ssize_t len,
                             float* acc) noexcept nogil
        void (*dot_blocks_d)(const double* X, Py_ssize_t ldi, Py_ssize_t cig, const double* a,
                             const Py_ssize_t* aoff, const Py_ssize_t* rows, Py_ssize_t kb,
                             const Py_ssize_t* roff, Py_ssize_t nrow, Py_ssize_t len,
                             double* acc) noexcept nogil
        void (*axpy_f)(float* y, const float* x, float a, Py_ssize_t n) noexcept nogil
        void (*axpy_d)(double* y, const double* x, double a, Py_ssize_t n) noexcept nogil
        Py_ssize_t (*nonfinite_f)(const float* x, Py_ssize_t n) noexcept nogil
        Py_ssize_t (*nonfinite_d)(const double* x, Py_ssize_t n) noexcept nogil
        void (*store2_f)(float* dst, const float* a, const float* c, float b, Py_ssize_t n,
                         int accumulate) noexcept nogil
        void (*store2_d)(double* dst, const double* a, const double* c, double b,
                         Py_ssize_t n, int accumulate) noexcept nogil
    int conv3dt_isa_count()
    const conv3dt_isa* conv3dt_isa_get(int index)
    int conv3dt_isa_supported(int index)


def isa_variants():
    """The instruction-set variants this build has, best first (generic last), each a
    dict of its facts and whether this CPU runs it."""
    cdef int i
    cdef const conv3dt_isa* isa
    out = []
    for i in range(conv3dt_isa_count()):
        isa = conv3dt_isa_get(i)
        out.append(dict(index=i, name=isa.name.decode(), supported=bool(conv3dt_isa_supported(i)),
                        vector_bytes=isa.vector_bytes, panel_mv=isa.panel_mv,
                        panel_nr=isa.panel_nr, wgrad_mv=isa.wgrad_mv, wgrad_nr=isa.wgrad_nr,
                        dot_nb=isa.dot_nb, direct_cout=isa.direct_cout))
    return out


cdef inline Py_ssize_t _lanes(const conv3dt_isa* isa, Py_ssize_t itemsize) noexcept nogil:
    """Elements per vector of the variant."""
    return isa.vector_bytes // itemsize


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline void _panel_product(const conv3dt_isa* isa, Py_ssize_t nv, Py_ssize_t n,
                                Py_ssize_t k, const floating* a, const Py_ssize_t* aoff,
                                const Py_ssize_t* voff, const floating* wp, Py_ssize_t wps,
                                const Py_ssize_t* rows, floating beta,
                                floating* c) noexcept nogil:
    """C [n x nv vectors] (+)= W[:, rows] @ A (row-major, see the panel product in
    kernels/microkernels.h), rows increasing. Consecutive rows (none left out) go without
    the row list, so the kernel runs its unrolled loop."""
    cdef Py_ssize_t ldc = nv * _lanes(isa, sizeof(floating))
    if k > 0 and rows[k - 1] - rows[0] == k - 1:
        wp = wp + rows[0] * isa.panel_nr
        rows = NULL
    if floating is float:
        isa.panel_gemm_f(nv, n, k, a, aoff, voff, wp, wps, rows, beta, c, ldc)
    else:
        isa.panel_gemm_d(nv, n, k, a, aoff, voff, wp, wps, rows, beta, c, ldc)


cdef inline void _axpy(const conv3dt_isa* isa, floating* y, const floating* x, floating a,
                       Py_ssize_t n) noexcept nogil:
    """y[u] += a * x[u], u < n."""
    if floating is float:
        isa.axpy_f(y, x, a, n)
    else:
        isa.axpy_d(y, x, a, n)


cdef inline void _weight_grad_product(const conv3dt_isa* isa, const floating* X,
                                      Py_ssize_t ldx, Py_ssize_t cig, int small_n,
                                      const floating* a, const Py_ssize_t* aoff,
                                      const Py_ssize_t* rows, Py_ssize_t kb,
                                      const Py_ssize_t* roff, Py_ssize_t nrun, Py_ssize_t in_w,
                                      floating* acc) noexcept nogil:
    """acc [kc x cig][rows, :] += B @ X_tile^T: the few-channel dot blocks where
    cig <= small_n (X not transposed), else the register-blocked product (X transposed,
    rows ldx apart)."""
    if cig <= small_n:
        if floating is float:
            isa.dot_blocks_f(X, nrun * in_w, cig, a, aoff, rows, kb, roff, nrun, in_w, acc)
        else:
            isa.dot_blocks_d(X, nrun * in_w, cig, a, aoff, rows, kb, roff, nrun, in_w, acc)
    elif floating is float:
        isa.wgrad_gemm_f(cig, kb, nrun, in_w, roff, X, ldx, a, aoff, rows, acc, cig)
    else:
        isa.wgrad_gemm_d(cig, kb, nrun, in_w, roff, X, ldx, a, aoff, rows, acc, cig)


cdef Py_ssize_t _take_rows(Py_ssize_t* ch, Py_ssize_t* j, Py_ssize_t ch0, Py_ssize_t ch_end,
                           Py_ssize_t nt, Py_ssize_t ch_stride, Py_ssize_t ntap,
                           const Py_ssize_t* tap, const Py_ssize_t* tap_off,
                           Py_ssize_t kblock, Py_ssize_t* rows,
                           Py_ssize_t* aoff) noexcept nogil:
    """The next (up to kblock) rows of a tile's product: row ch * nt + tap[j] of the
    weight for channel ch (from ch[0], below ch_end) and each of the ntap taps that read
    inside the data for this tile (from j[0]), increasing; its left operand starts at
    aoff = (ch - ch0) * ch_stride + tap_off[j] in the window. Advances ch[0] and j[0];
    returns the number of rows."""
    cdef Py_ssize_t kb = 0, c = ch[0], t = j[0]
    if ntap == 0:
        ch[0] = ch_end
        return 0
    while c < ch_end and kb < kblock:
        rows[kb] = c * nt + tap[t]
        aoff[kb] = (c - ch0) * ch_stride + tap_off[t]
        kb += 1
        t += 1
        if t == ntap:
            t = 0
            c += 1
    ch[0] = c
    j[0] = t
    return kb


cdef Py_ssize_t _tile_vectors(const Window* win, bint compact, Py_ssize_t npl,
                              Py_ssize_t nrow, Py_ssize_t count_w, Py_ssize_t lanes,
                              Py_ssize_t* voff, Py_ssize_t* coff) noexcept nogil:
    """The vectors of `lanes` columns that the products compute for a tile of nrow rows of
    npl planes (run k = p * nrow + q: row q of plane p, count_w columns kept): voff[v], the
    vector's offset in the window from the tile's first row, and coff[k], where run k
    starts in the product's output C. Returns the number of vectors.

    compact: each run in whole vectors of its own, side by side in C (no gap column or row
    is computed; the last vector of a run may end past count_w). Else the columns from the
    first run's start to the last one's end, contiguous as in the window, gaps included.
    """
    cdef Py_ssize_t k, c, nv = 0, ncr = (count_w + lanes - 1) // lanes
    cdef Py_ssize_t nrun = npl * nrow
    for k in range(nrun):
        coff[k] = ((k // nrow) * win.hp + k % nrow) * win.wp
        if compact:
            for c in range(ncr):
                voff[nv + c] = coff[k] + c * lanes
            nv += ncr
            coff[k] = k * ncr * lanes
    if not compact:
        nv = (coff[nrun - 1] + count_w + lanes - 1) // lanes
        for c in range(nv):
            voff[c] = c * lanes
    return nv


cdef inline void _zero(floating* dst, Py_ssize_t n) noexcept nogil:
    if floating is float:
        _zero_f(dst, n)
    else:
        _zero_d(dst, n)


cdef inline void _copy_strided(floating* dst, const floating* src, Py_ssize_t step,
                               Py_ssize_t n) noexcept nogil:
    """dst[u] = src[u * step] for u < n."""
    if floating is float:
        _copy_f(dst, src, step, n)
    else:
        _copy_d(dst, src, step, n)


cdef inline void _store(floating* dst, Py_ssize_t step, const floating* src, floating b,
                        Py_ssize_t n, bint accumulate) noexcept nogil:
    """dst[u * step] = src[u] + b (or += src[u] when accumulate), u < n."""
    if floating is float:
        _store_f(dst, step, src, b, n, accumulate)
    else:
        _store_d(dst, step, src, b, n, accumulate)


cdef inline void _store2(const conv3dt_isa* isa, floating* dst, const floating* a,
                         const floating* c, floating b, Py_ssize_t n,
                         bint accumulate) noexcept nogil:
    """dst[2u] = a[u] + b, dst[2u + 1] = c[u] + b (or +=), u < n: two w-phases of stride 2
    interleaved in one contiguous row (the variant's shuffles)."""
    if floating is float:
        isa.store2_f(dst, a, c, b, n, accumulate)
    else:
        isa.store2_d(dst, a, c, b, n, accumulate)


cdef Py_ssize_t _segments(Py_ssize_t count_h, Py_ssize_t count_w, Py_ssize_t j0,
                          Py_ssize_t nc, Segment* segs) noexcept nogil:
    """Split the flat positions [j0, j0 + nc) of a (., count_h, count_w) grid into runs
    along its last axis. Computed once per tile and shared by all rows of the tile.

    OUT segs: (grid coordinates of the run's start, length, offset in the tile).
    Returns the number of runs (at most nc).
    """
    cdef Py_ssize_t jd = j0 // (count_h * count_w)
    cdef Py_ssize_t jh = (j0 // count_w) % count_h
    cdef Py_ssize_t jw = j0 % count_w
    cdef Py_ssize_t done = 0, n = 0, length
    while done < nc:
        length = _min(count_w - jw, nc - done)
        segs[n].j[0] = jd
        segs[n].j[1] = jh
        segs[n].j[2] = jw
        segs[n].length = length
        segs[n].offset = done
        n += 1
        done += length
        jw = 0
        jh += 1
        if jh == count_h:
            jh = 0
            jd += 1
    return n


# ------------------------------------------------------------------------ forward pass

cdef void _write_phase(const conv3dt_isa* isa, const floating* Y, Py_ssize_t y_size,
                       Py_ssize_t n_dir,
                       floating* yg, Strides4 ys, Py_ssize_t cog, const floating* bias,
                       const Phase3* ph, Py_ssize_t stride_d, Py_ssize_t stride_h,
                       Py_ssize_t stride_w, const Segment* segs, Py_ssize_t nseg,
                       Py_ssize_t nc) noexcept nogil:
    """y[co, o(j)] = Y[co, j] (+ bias[co]) for the output positions o(j) of the n_dir
    phase combinations ph (tile v at Y + v * y_size, [cog x nc] row-major each, over the
    same grid positions); two are the w-phases of stride 2 side by side in a contiguous
    row, interleaved in whole vectors (_store2). bias: NULL or the group's first entry;
    yg: y at (sample, first channel of the group).
    """
    cdef Py_ssize_t co, k, step = stride_w * ys.w
    cdef Py_ssize_t first = 0 if n_dir == 1 or ph[0].o0[2] < ph[1].o0[2] else 1
    cdef const floating* src
    cdef floating* dst
    cdef floating b
    for co in range(cog):
        b = bias[co] if bias != NULL else 0
        for k in range(nseg):
            src = Y + co * nc + segs[k].offset
            dst = (yg + co * ys.c + (ph[0].o0[0] + segs[k].j[0] * stride_d) * ys.d
                   + (ph[0].o0[1] + segs[k].j[1] * stride_h) * ys.h
                   + (ph[first].o0[2] + segs[k].j[2] * stride_w) * ys.w)
            if n_dir == 2:
                _store2(isa, dst, src + first * y_size, src + (1 - first) * y_size, b,
                        segs[k].length, False)
            else:
                _store(dst, step, src, b, segs[k].length, False)


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


def pack_forward_weight(const floating[:, :, :, :, ::1] w,   # IN  [C_in, C_out_g, kD, kH, kW]
                        floating[::1] wpack,                  # OUT row-major blocks (or unused)
                        floating[::1] wpanel,                 # OUT in panels (or unused)
                        Py_ssize_t groups,
                        const Py_ssize_t[:, ::1] tap_dest,    # IN  (K, 4) see below
                        bint panels,                          # write wpanel, else wpack
                        int isa_index, int n_threads):
    """Gather each phase combination's weight W_c [C_out_g x C_in_g * nt] per group, in
    panels for the window products or row-major for the direct path.

    Kernel tap t is tap number i of the nt taps of one combination c:
    tap_dest[t] = (row-major offset of c, panel offset of c, nt, i); -1 first for taps
    that reach no output. Row r = ci * nt + i of W_c, column co:
      wpack  [off + ((g * cog + co) * cig + ci) * nt + i]                 (row-major)
      wpanel [poff + g * cogp * kc + (co // NR) * kc * NR + r * NR + co % NR]  (panels)
    with kc = cig * nt and cogp = cog rounded up to a multiple of NR, the variant's panel_nr
    (columns co >= cog are zeros).
    """
    cdef const conv3dt_isa* isa = conv3dt_isa_get(isa_index)
    cdef Py_ssize_t cig = w.shape[0] // groups, cog = w.shape[1]
    cdef Py_ssize_t kk = w.shape[2] * w.shape[3] * w.shape[4]
    cdef const floating* w0 = &w[0, 0, 0, 0, 0]
    cdef Py_ssize_t c_in
    with nogil:
        for c_in in prange(w.shape[0], num_threads=n_threads, schedule='static'):
            _pack_weight_channel(w0 + c_in * cog * kk, &wpack[0], &wpanel[0], panels, kk,
                                 c_in, cig, cog, &tap_dest[0, 0], isa.panel_nr)


cdef void _pack_weight_channel(const floating* src, floating* wpack, floating* wpanel,
                               bint panels, Py_ssize_t kk, Py_ssize_t c_in, Py_ssize_t cig,
                               Py_ssize_t cog, const Py_ssize_t* tap_dest,
                               Py_ssize_t nr) noexcept nogil:
    """The rows of input channel c_in (src = w[c_in], [cog][kk], which stays in the L1
    cache) in every combination's weight, tap by tap (see pack_forward_weight)."""
    cdef Py_ssize_t t, nt, kc, co, base, g = c_in // cig, ci = c_in - g * cig
    cdef Py_ssize_t cogp = _round_up(cog, nr)
    for t in range(kk):
        if tap_dest[4 * t] < 0:
            continue
        nt = tap_dest[4 * t + 2]
        kc = cig * nt
        if panels:
            base = tap_dest[4 * t + 1] + g * cogp * kc + (ci * nt + tap_dest[4 * t + 3]) * nr
            for co in range(cogp):
                wpanel[base + (co // nr) * kc * nr + co % nr] = src[co * kk + t] if co < cog else 0
        else:
            base = tap_dest[4 * t] + (g * cog * cig + ci) * nt + tap_dest[4 * t + 3]
            for co in range(cog):
                wpack[base + co * cig * nt] = src[co * kk + t]


def pack_backward_weight(const floating[:, :, :, :, ::1] w,  # IN  [C_in, C_out_g, kD, kH, kW]
                         floating[::1] wpanel,                # OUT panels
                         Py_ssize_t groups, int isa_index, int n_threads):
    """W_g [C_in_g x C_out_g * K] of each group in panels of NR rows (the variant's
    panel_nr), for grad_x's product: element (ci, r) at [g][ci // NR][r][ci % NR], cig
    rounded up to a multiple of NR (rows ci >= cig are zeros)."""
    cdef Py_ssize_t nr = conv3dt_isa_get(isa_index).panel_nr
    cdef Py_ssize_t cig = w.shape[0] // groups
    cdef Py_ssize_t kc = w.shape[1] * w.shape[2] * w.shape[3] * w.shape[4]
    cdef Py_ssize_t cigp = _round_up(cig, nr)
    cdef const floating* w0 = &w[0, 0, 0, 0, 0]
    cdef floating* dst
    cdef Py_ssize_t i, g, ci, r
    with nogil:
        for i in prange(groups * cigp, num_threads=n_threads, schedule='static'):
            g = i // cigp
            ci = i - g * cigp
            dst = &wpanel[(g * cigp + ci // nr * nr) * kc + ci % nr]
            for r in range(kc):
                dst[r * nr] = w0[(g * cig + ci) * kc + r] if ci < cig else 0


cdef void _direct_phase(const conv3dt_isa* isa, const floating* xg, Strides4 xs, Py_ssize_t in_d, Py_ssize_t in_h,
                        Py_ssize_t in_w, const Phase3* ph, const floating* wg, Py_ssize_t kc,
                        Py_ssize_t cog, const Segment* segs, Py_ssize_t nseg, Py_ssize_t nc,
                        floating* Y) noexcept nogil:
    """Y [cog x nc] = W_phase @ B without materialising B (few output channels).

    The product of a window tile (_window_tile), computed as one axpy per
    (row of B, run, output channel) straight from x, whose rows must be contiguous
    (xs.w == 1). For a thin W_phase this saves writing and re-reading B.
    """
    cdef Py_ssize_t nth = ph.ntaps[1], ntw = ph.ntaps[2]
    cdef Py_ssize_t nt = ph.ntaps[0] * nth * ntw
    cdef Py_ssize_t r, ci, tap, md, mh, mw, k, co, length, i_d, i_h, iw0, lo_u, hi_u
    cdef const floating* src
    _zero(Y, cog * nc)
    for r in range(kc):
        ci = r // nt
        tap = r - ci * nt
        md = ph.q0[0] - ph.taps[0][2 * (tap // (nth * ntw)) + 1]
        mh = ph.q0[1] - ph.taps[1][2 * ((tap // ntw) % nth) + 1]
        mw = ph.q0[2] - ph.taps[2][2 * (tap % ntw) + 1]
        for k in range(nseg):
            i_d = segs[k].j[0] + md
            i_h = segs[k].j[1] + mh
            if not (0 <= i_d < in_d and 0 <= i_h < in_h):
                continue
            length = segs[k].length
            iw0 = segs[k].j[2] + mw
            lo_u = _clamp(-iw0, 0, length)
            hi_u = _clamp(in_w - iw0, lo_u, length)
            if hi_u == lo_u:
                continue
            src = xg + ci * xs.c + i_d * xs.d + i_h * xs.h + iw0 + lo_u
            for co in range(cog):
                _axpy(isa, Y + co * nc + segs[k].offset + lo_u, src, wg[co * kc + r],
                      hi_u - lo_u)


cdef void _copy_window(const floating* xc, Strides4 xs, Py_ssize_t d_lo, Py_ssize_t d_hi,
                       Py_ssize_t in_d, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t nci,
                       const Window* win, floating* xp) noexcept nogil:
    """Copy input depths [d_lo, d_hi) of nci channels into the padded window xp (depths
    outside x, which a tile spanning several planes may read, are zero planes).

    Channel ci, depth d_lo + p, row h, column w lands at
    xp[ci * cs + lead + (p * hp + h) * wp + w]; columns [in_w, wp) and rows [in_h, hp) of
    every plane are zero, and so are the `lead` elements before each channel's planes
    (zeroed when the window was allocated, never written). A read q - m that leaves x by
    at most the gaps therefore finds a zero: left of a row, the previous row's gap; above a
    plane, the previous plane's bottom rows or the channel's lead.
    """
    cdef Py_ssize_t ci, p, h, plane = win.hp * win.wp
    cdef const floating* src
    cdef floating* dst
    for ci in range(nci):
        for p in range(d_hi - d_lo):
            dst = xp + ci * win.cs + win.lead + p * plane
            if not 0 <= d_lo + p < in_d:
                _zero(dst, plane)
                continue
            src = xc + ci * xs.c + (d_lo + p) * xs.d
            for h in range(in_h):
                _copy_strided(dst + h * win.wp, src + h * xs.h, xs.w, in_w)
                _zero(dst + h * win.wp + in_w, win.wp - in_w)
            _zero(dst + in_h * win.wp, (win.hp - in_h) * win.wp)


cdef void _window_tile(const conv3dt_isa* isa, const floating* xp, const Window* win, Py_ssize_t d_lo,
                       Py_ssize_t in_d, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t c0,
                       Py_ssize_t nci, const floating* wpg, Py_ssize_t wps, Py_ssize_t cog,
                       const Phase3* ph, Py_ssize_t jd, Py_ssize_t npl, Py_ssize_t jh0,
                       Py_ssize_t nrow, Py_ssize_t nv, const Py_ssize_t* voff,
                       Py_ssize_t kblock, bint accumulate, floating* Y, Py_ssize_t* rows,
                       Py_ssize_t* aoff, Py_ssize_t* tap, Py_ssize_t* tap_off) noexcept nogil:
    """Grid rows jh0 .. jh0 + nrow - 1 of grid depths jd .. jd + npl - 1 of one phase
    combination, computed in the nv vectors of _tile_vectors.

    Window column J = (p * hp + jh - jh0) * wp + jw for depth jd + p. Row r = ci * nt + tap
    of the combination's W reads x[ci, q - m] at grid q = (jd, jh0, 0) + J, which is the
    window shifted by the tap: xp + lead + jh0 * wp + aoff[i],
    aoff[i] = ci * cs + ((jd + md - d_lo) * hp + mh) * wp + mw with m* = q0 - m the tap's
    offsets. Taps whose reads all leave x for this tile are left out (tap, tap_off: room
    for the combination's taps).
    OUT Y [cog x nv vectors] = W[:, rows] @ B (row-major), for _write_rows; with
    `accumulate`, Y (+)= instead: its terms added to Y's values one by one (_read_rows
    put the sums of the earlier blocks of channels there), so that the order of the
    additions does not depend on the blocks.
    """
    cdef Py_ssize_t nth = ph.ntaps[1], ntw = ph.ntaps[2]
    cdef Py_ssize_t nt = ph.ntaps[0] * nth * ntw
    cdef Py_ssize_t kb, md, mh, mw, ntap = 0, itd, ith, itw
    cdef Py_ssize_t wp = win.wp
    cdef const floating* a = xp + win.lead + jh0 * wp
    cdef floating beta = 1 if accumulate else 0
    cdef bint first = True
    cdef Py_ssize_t ci = c0, j = 0
    for itd in range(ph.ntaps[0]):
        md = jd + ph.q0[0] - ph.taps[0][2 * itd + 1]
        for ith in range(nth):
            mh = ph.q0[1] - ph.taps[1][2 * ith + 1]
            for itw in range(ntw):
                mw = ph.q0[2] - ph.taps[2][2 * itw + 1]
                if (md + npl - 1 >= 0 and md < in_d and jh0 + nrow - 1 + mh >= 0
                        and jh0 + mh < in_h
                        and ph.count[2] - 1 + mw >= 0 and mw < in_w):
                    tap[ntap] = (itd * nth + ith) * ntw + itw
                    tap_off[ntap] = ((md - d_lo) * win.hp + mh) * wp + mw
                    ntap += 1
    while ci < c0 + nci or first:
        kb = _take_rows(&ci, &j, c0, c0 + nci, nt, win.cs, ntap, tap, tap_off, kblock, rows,
                        aoff)
        # Y [cog x nv vectors] (+)= W_phase[:, rows] @ B  (row-major)
        _panel_product(isa, nv, cog, kb, a, aoff, voff, wpg, wps, rows, beta, Y)
        beta = 1
        first = False


cdef void _read_rows(floating* Y, Py_ssize_t y_size, Py_ssize_t ldy,
                     const Py_ssize_t* coff, const Phase3* ph, Py_ssize_t n_pw,
                     const floating* yg, Strides4 ys, Py_ssize_t cog, Py_ssize_t stride_d,
                     Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t jd, Py_ssize_t npl,
                     Py_ssize_t jh0, Py_ssize_t nrow) noexcept nogil:
    """The inverse of _write_rows (no bias): Y = y at the tile's output positions, the sums
    of the earlier blocks of input channels, which the next block's products continue."""
    cdef Py_ssize_t co, p, q, v, u, od, oh
    cdef const floating* row
    cdef floating* dst
    for co in range(cog):
        for p in range(npl):
            od = ph[0].o0[0] + (jd + p) * stride_d
            for q in range(nrow):
                oh = ph[0].o0[1] + (jh0 + q) * stride_h
                row = yg + co * ys.c + od * ys.d + oh * ys.h
                for v in range(n_pw):
                    dst = Y + v * y_size + co * ldy + coff[p * nrow + q]
                    for u in range(ph[v].count[2]):
                        dst[u] = row[(ph[v].o0[2] + u * stride_w) * ys.w]


cdef void _write_rows(const conv3dt_isa* isa, const floating* Y, Py_ssize_t y_size,
                      Py_ssize_t ldy,
                      const Py_ssize_t* coff, const Phase3* ph, Py_ssize_t n_pw,
                      floating* yg, Strides4 ys, Py_ssize_t cog, const floating* bias,
                      bint accumulate, Py_ssize_t stride_d, Py_ssize_t stride_h,
                      Py_ssize_t stride_w, Py_ssize_t jd, Py_ssize_t npl, Py_ssize_t jh0,
                      Py_ssize_t nrow) noexcept nogil:
    """Write the tiles of n_pw phase combinations that differ only in their w-phase
    (ph[0 .. n_pw - 1], tile v at Y + v * y_size, rows of ldy elements, run k = p * nrow +
    q starting at column coff[k], see _window_tile) to y: y[co, o] = Y (+ bias[co]), or
    y[co, o] += Y when `accumulate` (a later block of input channels).

    Output row by output row, all w-phases at once: the phases interleave their elements
    within a row, and a row finished in one go is fetched into the cache once. Two phases
    of stride 2 side by side in a contiguous row are interleaved in whole vectors.
    """
    cdef Py_ssize_t co, p, q, v, od, oh, n_pair = 0, first = 0
    cdef const floating* src
    cdef floating* row
    cdef floating b
    if (n_pw == 2 and stride_w == 2 and ys.w == 1 and ph[1].count[2] == ph[0].count[2]
            and (ph[1].o0[2] - ph[0].o0[2]) * (ph[1].o0[2] - ph[0].o0[2]) == 1):
        n_pair = ph[0].count[2]
        first = 0 if ph[0].o0[2] < ph[1].o0[2] else 1  # the phase at the even offset
    for co in range(cog):
        b = bias[co] if bias != NULL else 0
        for p in range(npl):
            od = ph[0].o0[0] + (jd + p) * stride_d
            for q in range(nrow):
                oh = ph[0].o0[1] + (jh0 + q) * stride_h
                row = yg + co * ys.c + od * ys.d + oh * ys.h
                src = Y + co * ldy + coff[p * nrow + q]
                if n_pair > 0:
                    _store2(isa, row + ph[first].o0[2], src + first * y_size,
                            src + (1 - first) * y_size, b, n_pair, accumulate)
                    continue
                for v in range(n_pw):
                    _store(row + ph[v].o0[2] * ys.w, stride_w * ys.w, src + v * y_size, b,
                           ph[v].count[2], accumulate)


cdef void _forward_slab(const conv3dt_isa* isa, const floating* xg, Strides4 xs, Py_ssize_t in_d, Py_ssize_t in_h,
                        Py_ssize_t in_w, const floating* wpack, const floating* wpanel,
                        Py_ssize_t g, floating* yg, Strides4 ys, Py_ssize_t out_h,
                        Py_ssize_t out_w, Py_ssize_t cig, Py_ssize_t cog, const floating* bias,
                        const Py_ssize_t[:, :, ::1] phases, const Py_ssize_t[:, :, ::1] taps,
                        const Py_ssize_t[:, ::1] combos, Py_ssize_t od_lo, Py_ssize_t od_hi,
                        Py_ssize_t d_lo, Py_ssize_t d_hi, bint fill, Py_ssize_t stride_d,
                        Py_ssize_t stride_h, Py_ssize_t stride_w, const Window* win,
                        bint direct, Py_ssize_t ncol, Py_ssize_t planes_per_tile,
                        bint compact, Py_ssize_t kblock, floating* xp, floating* Y,
                        Py_ssize_t y_size, Phase3* phw, Segment* segs, Py_ssize_t* rows,
                        Py_ssize_t* aoff, Py_ssize_t* voff, Py_ssize_t* coff, Py_ssize_t* tap,
                        Py_ssize_t* tap_off) noexcept nogil:
    """Output depths [od_lo, od_hi) of one (sample, group), every phase combination.

    The slab reads input depths [d_lo, d_hi) of x, copied block of channels by block into
    the padded window xp, which every tap of every combination then reads in place. With
    `direct` (few output channels) the products accumulate straight from x instead.
    Combinations that differ only in their w-phase (consecutive in combos) are tiled
    together, in the same vectors (_tile_vectors, `compact` or not, voff and coff), and
    their tiles written out row by row (_write_rows; phw: one Phase3 per w-phase, their
    tiles y_size elements apart in Y). Working slab by slab keeps the
    output lines that the phases interleave in cache, and gives each thread its own
    output rows.
    """
    cdef Phase3 ph
    cdef Py_ssize_t c, co, jd, jd_lo, jd_hi, jh0, kc, nt, c0, nci, nrow, j0, j_end, npl
    cdef Py_ssize_t c_end, v, count_w, nv, n_dir, nc, nseg
    cdef Py_ssize_t nr = isa.panel_nr, cogp = _round_up(cog, nr)
    cdef Py_ssize_t rows_per_tile, lanes = _lanes(isa, sizeof(floating)), pitch
    cdef Py_ssize_t d_in_lo, d_in_hi, h_in_lo, h_in_hi, md, mh, t, h0, h1
    cdef bint split
    if fill:
        for co in range(cog):
            _fill_rows(yg + co * ys.c + od_lo * ys.d, ys, od_hi - od_lo, out_h, out_w,
                       bias[co] if bias != NULL else 0)
    c0 = 0
    while c0 < cig:
        nci = _min(win.cib, cig - c0) if not direct else cig
        if not direct:
            _copy_window(xg + c0 * xs.c, xs, d_lo, d_hi, in_d, in_h, in_w, nci, win, xp)
        c = 0
        while c < combos.shape[0]:
            _load_phase(&ph, phases, taps, combos, c)
            # Grid rows jd whose output depth o0 + jd * stride lies in the slab.
            jd_lo = _clamp(-_floordiv(ph.o0[0] - od_lo, stride_d), 0, ph.count[0])
            jd_hi = _clamp(-_floordiv(ph.o0[0] - od_hi, stride_d), jd_lo, ph.count[0])
            if direct:
                # Grid positions [j0, j0 + ncol) at a time, by _direct_phase; the next
                # combination too where it is the other w-phase of stride 2 with rows of
                # the same length, so that their rows are written together.
                phw[0] = ph
                n_dir = 1
                if (stride_w == 2 and ys.w == 1 and c + 1 < combos.shape[0]
                        and combos[c + 1, 0] == combos[c, 0]
                        and combos[c + 1, 1] == combos[c, 1]):
                    _load_phase(&phw[1], phases, taps, combos, c + 1)
                    if (phw[1].count[2] == ph.count[2]
                            and (phw[1].o0[2] - ph.o0[2]) * (phw[1].o0[2] - ph.o0[2]) == 1):
                        n_dir = 2
                j0 = jd_lo * ph.count[1] * ph.count[2]
                j_end = jd_hi * ph.count[1] * ph.count[2]
                while j0 < j_end:
                    nc = _min(ncol, j_end - j0)
                    nseg = _segments(ph.count[1], ph.count[2], j0, nc, segs)
                    for v in range(n_dir):
                        kc = cig * phw[v].ntaps[0] * phw[v].ntaps[1] * phw[v].ntaps[2]
                        _direct_phase(isa, xg, xs, in_d, in_h, in_w, &phw[v],
                                      wpack + combos[c + v, 3] + g * cog * kc, kc, cog, segs,
                                      nseg, nc, Y + v * y_size)
                    _write_phase(isa, Y, y_size, n_dir, yg, ys, cog, bias, phw, stride_d, stride_h,
                                 stride_w, segs, nseg, nc)
                    j0 += ncol
                c += n_dir
                continue
            # The combinations c .. c_end - 1 share their depth and height phases.
            c_end = c + 1
            while (c_end < combos.shape[0] and combos[c_end, 0] == combos[c, 0]
                   and combos[c_end, 1] == combos[c, 1]):
                c_end += 1
            count_w = 0
            for v in range(c_end - c):
                _load_phase(&phw[v], phases, taps, combos, c + v)
                count_w = max(count_w, phw[v].count[2])
            pitch = _row_pitch(compact, count_w, lanes, win.wp)
            # The grid depths and rows where every tap of this (d, h) phase pair reads
            # inside x: 0 <= j + q0 - m < size.
            d_in_lo, d_in_hi, h_in_lo, h_in_hi = 0, in_d, 0, in_h
            for t in range(ph.ntaps[0]):
                md = ph.q0[0] - ph.taps[0][2 * t + 1]
                d_in_lo = max(d_in_lo, -md)
                d_in_hi = _min(d_in_hi, in_d - md)
            for t in range(ph.ntaps[1]):
                mh = ph.q0[1] - ph.taps[1][2 * t + 1]
                h_in_lo = max(h_in_lo, -mh)
                h_in_hi = _min(h_in_hi, in_h - mh)
            jd = jd_lo
            while jd < jd_hi:
                # Tiles of whole planes, or of rows of one plane (see _plane_tile), the
                # boundary rows apart where that fills register blocks (_split_rows).
                npl = _plane_tile(jd, jd_hi, d_in_lo, d_in_hi, planes_per_tile)
                split = _split_rows(compact, npl, count_w, lanes, isa.panel_mv)
                h0 = 0
                while h0 < ph.count[1]:
                    h1 = _rows_end(h0, split, ph.count[1], h_in_lo, h_in_hi)
                    rows_per_tile = _rows_per_tile(h1 - h0, npl * pitch, ncol)
                    jh0 = h0
                    h0 = h1
                    while jh0 < h1:
                        nrow = _min(rows_per_tile, h1 - jh0)
                        nv = _tile_vectors(win, compact, npl, nrow, count_w, lanes, voff, coff)
                        if c0 > 0:
                            _read_rows(Y, y_size, nv * lanes, coff, phw, c_end - c, yg, ys,
                                       cog, stride_d, stride_h, stride_w, jd, npl, jh0, nrow)
                        for v in range(c_end - c):
                            kc = cig * phw[v].ntaps[0] * phw[v].ntaps[1] * phw[v].ntaps[2]
                            _window_tile(isa, xp, win, d_lo, in_d, in_h, in_w, c0, nci,
                                         wpanel + combos[c + v, 3] // cog * cogp
                                         + g * cogp * kc, kc * nr, cog, &phw[v], jd,
                                         npl, jh0, nrow, nv, voff, kblock, c0 > 0,
                                         Y + v * y_size, rows, aoff, tap, tap_off)
                        # The bias goes after the last block of channels, so that it is
                        # added to the whole sum however the channels are blocked.
                        _write_rows(isa, Y, y_size, nv * lanes, coff, phw, c_end - c, yg, ys, cog,
                                    bias if c0 + nci >= cig else NULL, False, stride_d,
                                    stride_h, stride_w, jd, npl, jh0, nrow)
                        jh0 += nrow
                jd += npl
            c = c_end
        c0 += nci


cdef void _fill_rows(floating* yc, Strides4 ys, Py_ssize_t od, Py_ssize_t oh,
                     Py_ssize_t ow, floating value) noexcept nogil:
    cdef Py_ssize_t a, b, e
    for a in range(od):
        for b in range(oh):
            for e in range(ow):
                yc[a * ys.d + b * ys.h + e * ys.w] = value


def forward(const floating[:, :, :, :, :] x,        # IN  [N, C_in, D, H, W]
            const floating[::1] wpack,               # IN  pack_forward_weight's outputs
            const floating[::1] wpanel,
            const floating[::1] bias,                # IN  [C_out], or empty: no bias
            floating[:, :, :, :, :] y,               # OUT [N, C_out, oD, oH, oW]
            Py_ssize_t groups,
            const Py_ssize_t[:, :, ::1] phases,      # IN  (3, P, 5) phase tables
            const Py_ssize_t[:, :, ::1] taps,        # IN  (3, T, 2) tap tables
            const Py_ssize_t[:, ::1] combos,         # IN  (C, 4) phases + weight offset
            Py_ssize_t stride_d, Py_ssize_t stride_h, Py_ssize_t stride_w,
            bint fill,                               # some outputs get no tap: fill first
            Py_ssize_t slab,                         # output depths per work item
            const Py_ssize_t[:, ::1] slab_depths,    # IN  (n_slabs, 2) input depths read
            const Py_ssize_t[::1] window,            # IN  hp, wp, lead, cs, cib, elements
            bint direct, Py_ssize_t ncol, Py_ssize_t planes_per_tile,
            bint compact,                            # tiles of kept columns only
            Py_ssize_t n_pw,                         # combinations per (d, h) phase pair
            Py_ssize_t kblock, int isa_index, int n_threads):
    """y = conv3d_transpose(x, w) (+ bias). Returns 0, or the bytes of the per-thread
    workspace when allocating it failed.

    Work item it = (n * groups + g) * n_slabs + s: output depths [s * slab, (s + 1) * slab)
    of sample n, group g, which read input depths slab_depths[s]. Per thread: the padded
    window of x (`window`, see _copy_window; not with `direct`), n_pw tiles Y [C_out_g x
    cols] (combos lists the w-phases innermost: at most n_pw consecutive combinations share
    their depth and height phases), cols = max(ncol, wp) + one vector: a tile's columns,
    its last vector included; ncol runs (`direct`), two row lists of kblock entries, the
    tile's vectors and runs (cols / lanes + 1 and cols entries) and its taps (2 x T^3,
    T = taps.shape[1]).
    """
    cdef const conv3dt_isa* isa = conv3dt_isa_get(isa_index)
    cdef Py_ssize_t n_batch = x.shape[0], cig = x.shape[1] // groups
    cdef Py_ssize_t c_out = y.shape[1], cog = c_out // groups
    cdef Py_ssize_t n_slabs = (y.shape[2] + slab - 1) // slab
    cdef Py_ssize_t n_items = n_batch * groups * n_slabs
    cdef Strides4 xs = _strides(x.strides, sizeof(floating))
    cdef Strides4 ys = _strides(y.strides, sizeof(floating))
    cdef Py_ssize_t sx_n = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t sy_n = y.strides[0] // sizeof(floating)
    cdef const floating* x0 = &x[0, 0, 0, 0, 0]
    cdef floating* y0 = &y[0, 0, 0, 0, 0]
    cdef const floating* w0 = &wpack[0]
    cdef const floating* wp0 = &wpanel[0]
    cdef const floating* b0 = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Window win
    win.hp = window[0]
    win.wp = window[1]
    win.lead = window[2]
    win.cs = window[3]
    win.cib = window[4]
    cdef Py_ssize_t xp_size = 1 if direct else window[5]
    cdef Py_ssize_t lanes = _lanes(isa, sizeof(floating))
    cdef Py_ssize_t cols = max(ncol, win.wp) + lanes
    cdef Py_ssize_t y_size = cog * cols
    cdef Py_ssize_t it, n, g, sl
    cdef int failed = 0
    cdef int* failed_ptr = &failed
    cdef floating* xp
    cdef floating* Y
    cdef Phase3* phw
    cdef Segment* segs
    cdef Py_ssize_t* rows
    cdef Py_ssize_t* aoff
    cdef Py_ssize_t* voff
    cdef Py_ssize_t* coff
    cdef Py_ssize_t* tap
    cdef Py_ssize_t ntap_max = taps.shape[1] * taps.shape[1] * taps.shape[1]
    cdef Py_ssize_t workspace = (
        (xp_size + n_pw * y_size) * sizeof(floating) + n_pw * sizeof(Phase3)
        + ncol * sizeof(Segment)
        + (2 * ntap_max + 2 * kblock + cols // lanes + 1 + cols) * sizeof(Py_ssize_t))

    with nogil, parallel(num_threads=n_threads):
        xp = <floating*>calloc(xp_size, sizeof(floating))
        tap = <Py_ssize_t*>malloc(2 * ntap_max * sizeof(Py_ssize_t))
        Y = <floating*>malloc(n_pw * y_size * sizeof(floating))
        phw = <Phase3*>malloc(n_pw * sizeof(Phase3))
        segs = <Segment*>malloc(ncol * sizeof(Segment))
        rows = <Py_ssize_t*>malloc(kblock * sizeof(Py_ssize_t))
        aoff = <Py_ssize_t*>malloc(kblock * sizeof(Py_ssize_t))
        voff = <Py_ssize_t*>malloc((cols // lanes + 1) * sizeof(Py_ssize_t))
        coff = <Py_ssize_t*>malloc(cols * sizeof(Py_ssize_t))
        if (xp == NULL or Y == NULL or phw == NULL or segs == NULL or rows == NULL
                or aoff == NULL or voff == NULL or coff == NULL or tap == NULL):
            failed_ptr[0] = 1
        for it in prange(n_items, schedule='dynamic'):
            if (xp == NULL or Y == NULL or phw == NULL or segs == NULL or rows == NULL
                    or aoff == NULL or voff == NULL or coff == NULL or tap == NULL):
                continue
            sl = it % n_slabs
            g = (it // n_slabs) % groups
            n = it // (n_slabs * groups)
            _forward_slab(isa, x0 + n * sx_n + g * cig * xs.c, xs, x.shape[2], x.shape[3],
                          x.shape[4], w0, wp0, g, y0 + n * sy_n + g * cog * ys.c, ys,
                          y.shape[3], y.shape[4], cig, cog,
                          b0 + g * cog if b0 != NULL else NULL, phases, taps, combos,
                          sl * slab, _min(y.shape[2], (sl + 1) * slab), slab_depths[sl, 0],
                          slab_depths[sl, 1], fill, stride_d, stride_h, stride_w, &win,
                          direct, ncol, planes_per_tile, compact, kblock, xp, Y, y_size, phw,
                          segs, rows, aoff, voff, coff, tap, tap + ntap_max)
            _store_fence()
        free(tap)
        free(voff)
        free(coff)
        free(xp)
        free(Y)
        free(phw)
        free(segs)
        free(rows)
        free(aoff)
    return workspace if failed else 0


# -------------------------------------------------------------------------- gradients

cdef void _copy_gy_window(const floating* gyc, Strides4 gs, Py_ssize_t nco,
                          const Py_ssize_t[:, ::1] res, Py_ssize_t a_lo, Py_ssize_t a_hi,
                          Py_ssize_t s_d, Py_ssize_t s_h, Py_ssize_t s_w, const Window* win,
                          floating* buf) noexcept nogil:
    """Copy the residue grids of nco channels of grad_output into the padded window.

    Residue rho = (r_d, r_h, r_w) of channel co is the subsampled grid
    gy[co, a * s_d + r_d, b * s_h + r_h, c * s_w + r_w] (cnt_d x cnt_h x cnt_w, res[rho]);
    its depths [a_lo, a_hi) land at
    buf[(co * n_res + rho) * cs + lead + ((a - a_lo) * hp + b) * wp + c], with zero gaps
    after each row and plane as in _copy_window (and zero planes outside the grid).
    """
    cdef Py_ssize_t co, rho, a, b, n_res = res.shape[0], plane = win.hp * win.wp
    cdef Py_ssize_t cnt_h, cnt_w
    cdef const floating* src
    cdef floating* dst
    for co in range(nco):
        for rho in range(n_res):
            cnt_h = res[rho, 4]
            cnt_w = res[rho, 5]
            for a in range(a_lo, a_hi):
                dst = buf + (co * n_res + rho) * win.cs + win.lead + (a - a_lo) * plane
                if not 0 <= a < res[rho, 3]:
                    _zero(dst, plane)
                    continue
                src = (gyc + co * gs.c + (a * s_d + res[rho, 0]) * gs.d + res[rho, 1] * gs.h
                       + res[rho, 2] * gs.w)
                for b in range(cnt_h):
                    _copy_strided(dst + b * win.wp, src + b * s_h * gs.h, s_w * gs.w, cnt_w)
                    _zero(dst + b * win.wp + cnt_w, win.wp - cnt_w)
                _zero(dst + cnt_h * win.wp, (win.hp - cnt_h) * win.wp)


cdef void _pack_x_tile(const floating* xg, Strides4 xs, Py_ssize_t cig, Py_ssize_t id,
                       Py_ssize_t npl, Py_ssize_t jh0, Py_ssize_t nrow, Py_ssize_t in_w,
                       bint transposed, Py_ssize_t ldx, floating* X) noexcept nogil:
    """x[ci, id + p, jh0 + q, u] of a tile (p < npl, q < nrow, u < in_w) at tile position
    v = k * in_w + u of run k = p * nrow + q: X[v * ldx + ci] when `transposed` (for
    _wgrad_gemm, 8 channels at a time: each line of X is written in one go), else
    X[ci * npl * nrow * in_w + v]."""
    cdef Py_ssize_t ci, c, nc, k, u, nv = npl * nrow * in_w
    cdef const floating* src
    cdef floating* dst
    if transposed:
        for ci in range(0, cig, 8):
            nc = _min(8, cig - ci)
            for k in range(npl * nrow):
                src = xg + ci * xs.c + (id + k // nrow) * xs.d + (jh0 + k % nrow) * xs.h
                for u in range(in_w):
                    dst = X + (k * in_w + u) * ldx + ci
                    for c in range(nc):
                        dst[c] = src[c * xs.c + u * xs.w]
        return
    for ci in range(cig):
        for k in range(npl * nrow):
            src = xg + ci * xs.c + (id + k // nrow) * xs.d + (jh0 + k % nrow) * xs.h
            _copy_strided(X + ci * nv + k * in_w, src, xs.w, in_w)


cdef void _grad_tile(const conv3dt_isa* isa, const floating* buf, const Window* win, Py_ssize_t n_res,
                     const Py_ssize_t[:, ::1] res, const Py_ssize_t[:, ::1] tap_table,
                     Py_ssize_t id, Py_ssize_t npl, Py_ssize_t a_lo, Py_ssize_t jh0,
                     Py_ssize_t nrow, Py_ssize_t in_w, Py_ssize_t co0, Py_ssize_t nco,
                     Py_ssize_t cig, Py_ssize_t kc, const floating* wpg, floating* T,
                     floating* gxg, Strides4 gxs, const floating* X, Py_ssize_t ldx,
                     floating* acc, int small_n, Py_ssize_t kblock, bint compact,
                     Py_ssize_t* rows, Py_ssize_t* aoff, Py_ssize_t* roff, Py_ssize_t* voff,
                     Py_ssize_t* coff, Py_ssize_t* tap, Py_ssize_t* tap_off) noexcept nogil:
    """Input rows jh0 .. jh0 + nrow - 1 of input depths id .. id + npl - 1: grad_x or
    grad_w.

    Window column J = (p * hp + q) * wp + u for depth id + p, row jh0 + q: grad_x computes
    the vectors of _tile_vectors (`compact` or not) and drops the columns u >= in_w;
    grad_w's sums run over the npl * nrow runs roff of in_w columns. Row r = co * K + t of
    the gathered grad_output reads residue tap_table[t, 0] at (id, jh0, 0) + J +
    tap_table[t, 1:]: the window shifted, buf + lead + jh0 * wp + aoff[i]. Taps whose
    reads all leave grad_output for this tile are left out (tap, tap_off: K entries each).
        grad_x tile [cig x nv vectors] (+)= W_g[:, rows] @ B      (T; written to gxg)
        acc [kc x cig][rows, :] += B @ X_tile^T                    (valid columns only)
    """
    cdef Py_ssize_t K = tap_table.shape[0]
    cdef Py_ssize_t wp = win.wp, lanes = _lanes(isa, sizeof(floating)), nv = 0
    cdef Py_ssize_t nrun = npl * nrow
    cdef Py_ssize_t kb, co = co0, j = 0, t, rho, ad, ah, aw, ci, k, ntap = 0
    cdef const floating* a = buf + win.lead + jh0 * wp
    cdef const floating* src
    cdef floating beta = 0
    cdef bint first = True
    cdef Py_ssize_t u
    for k in range(nrun):
        roff[k] = ((k // nrow) * win.hp + k % nrow) * wp
    if gxg != NULL:
        nv = _tile_vectors(win, compact, npl, nrow, in_w, lanes, voff, coff)
        if co0 > 0:
            # The sums of the earlier blocks of output channels, which this block's
            # products continue term by term (the order of the additions does not depend
            # on the blocks).
            for ci in range(cig):
                for k in range(nrun):
                    src = (gxg + ci * gxs.c + (id + k // nrow) * gxs.d
                           + (jh0 + k % nrow) * gxs.h)
                    for u in range(in_w):
                        T[ci * nv * lanes + coff[k] + u] = src[u * gxs.w]
            beta = 1
    for t in range(K):
        rho = tap_table[t, 0]
        ad = id + tap_table[t, 1]
        ah = tap_table[t, 2]
        aw = tap_table[t, 3]
        if (ad + npl - 1 >= 0 and ad < res[rho, 3] and jh0 + nrow - 1 + ah >= 0
                and jh0 + ah < res[rho, 4]
                and in_w - 1 + aw >= 0 and aw < res[rho, 5]):
            tap[ntap] = t
            tap_off[ntap] = rho * win.cs + ((ad - a_lo) * win.hp + ah) * wp + aw
            ntap += 1
    while co < co0 + nco or first:
        # rows co * K + t
        kb = _take_rows(&co, &j, co0, co0 + nco, K, n_res * win.cs, ntap, tap, tap_off,
                        kblock, rows, aoff)
        if gxg != NULL:
            # T [cig x nc] (+)= W_g[:, rows] @ B  (row-major), W_g in panels
            _panel_product(isa, nv, cig, kb, a, aoff, voff, wpg, kc * isa.panel_nr, rows,
                           beta, T)
        if acc != NULL:
            _weight_grad_product(isa, X, ldx, cig, small_n, a, aoff, rows, kb, roff, nrun,
                                 in_w, acc)
        beta = 1
        first = False
    if gxg != NULL:
        for ci in range(cig):
            for k in range(nrun):
                _store(gxg + ci * gxs.c + (id + k // nrow) * gxs.d + (jh0 + k % nrow) * gxs.h,
                       gxs.w, T + ci * nv * lanes + coff[k], 0, in_w, False)


cdef void _grad_item(const conv3dt_isa* isa, const floating* gyg, Strides4 gs, const floating* xg, Strides4 xs,
                     Py_ssize_t in_h, Py_ssize_t in_w, const floating* wpg, floating* gxg,
                     Strides4 gxs, floating* acc, const Window* win,
                     const Py_ssize_t[:, ::1] res, const Py_ssize_t[:, ::1] tap_table,
                     const Py_ssize_t* stride, const Py_ssize_t* inner, Py_ssize_t id,
                     Py_ssize_t npl, Py_ssize_t a_lo, Py_ssize_t a_hi, Py_ssize_t cig,
                     Py_ssize_t cog,
                     Py_ssize_t ncol, Py_ssize_t gx_planes, bint compact, Py_ssize_t kblock,
                     int small_n, floating* buf, floating* T, floating* X, Py_ssize_t ldx,
                     Py_ssize_t* rows, Py_ssize_t* aoff, Py_ssize_t* roff, Py_ssize_t* voff,
                     Py_ssize_t* coff, Py_ssize_t* tap, Py_ssize_t* tap_off) noexcept nogil:
    """Input depths [id, id + npl) of one (sample, group): grad_x and/or grad_w (acc,
    [kc x cig], transposed), from one window of grad_output per block of its channels.

    grad_w takes the npl planes as few tiles as it can (a single plane: tiles of rows), so
    that each register block of its product sums over many columns; grad_x up to gx_planes
    planes per tile, `compact` or not (_cpu._tile_layout). Both tile the planes and rows
    outside inner = (depths [d_lo, d_hi), rows [h_lo, h_hi)) apart."""
    cdef Py_ssize_t K = tap_table.shape[0], kc = cog * K
    cdef Py_ssize_t co0 = 0, nco, p, tile_planes, part, h0, h1
    cdef Py_ssize_t lanes = _lanes(isa, sizeof(floating))
    cdef bint split
    while co0 < cog:
        nco = _min(win.cib, cog - co0)
        _copy_gy_window(gyg + co0 * gs.c, gs, nco, res, a_lo, a_hi, stride[0], stride[1],
                        stride[2], win, buf)
        # The planes and rows where some tap reads outside grad_output (outside `inner`)
        # are tiled apart from the others (_plane_tile, _rows_end), so that their tiles
        # leave out the taps that read only zeros there; grad_x's rows only where a row
        # of the tile fills a register block.
        for part in range(2):
            if (acc if part == 0 else gxg) == NULL:
                continue
            p = id
            while p < id + npl:
                tile_planes = _plane_tile(p, id + npl, inner[0], inner[1],
                                          npl if part == 0 else gx_planes)
                split = part == 0 or _split_rows(compact, tile_planes, in_w, lanes,
                                                 isa.panel_mv)
                h0 = 0
                while h0 < in_h:
                    h1 = _rows_end(h0, split, in_h, inner[2], inner[3])
                    _grad_tiles(isa, buf, win, res, tap_table, xg, xs, p, tile_planes, a_lo, h0,
                                h1, in_w, co0, nco, cig, kc, wpg, T,
                                NULL if part == 0 else gxg, gxs, X, ldx,
                                acc if part == 0 else NULL, small_n, ncol,
                                part == 1 and compact, kblock, rows, aoff, roff, voff, coff,
                                tap, tap_off)
                    h0 = h1
                p += tile_planes
        co0 += nco


cdef void _grad_tiles(const conv3dt_isa* isa, const floating* buf, const Window* win, const Py_ssize_t[:, ::1] res,
                      const Py_ssize_t[:, ::1] tap_table, const floating* xg, Strides4 xs,
                      Py_ssize_t id, Py_ssize_t npl, Py_ssize_t a_lo, Py_ssize_t jh_lo,
                      Py_ssize_t jh_hi, Py_ssize_t in_w, Py_ssize_t co0, Py_ssize_t nco,
                      Py_ssize_t cig, Py_ssize_t kc, const floating* wpg, floating* T,
                      floating* gxg, Strides4 gxs, floating* X, Py_ssize_t ldx, floating* acc,
                      int small_n, Py_ssize_t ncol, bint compact, Py_ssize_t kblock,
                      Py_ssize_t* rows, Py_ssize_t* aoff, Py_ssize_t* roff, Py_ssize_t* voff,
                      Py_ssize_t* coff, Py_ssize_t* tap, Py_ssize_t* tap_off) noexcept nogil:
    """Rows [jh_lo, jh_hi) of input depths [id, id + npl), in tiles of all npl planes and
    as many rows as fit ncol columns (split evenly): grad_x (gxg, tiles `compact` or not)
    or grad_w (acc), by _grad_tile."""
    cdef Py_ssize_t lanes = _lanes(isa, sizeof(floating))
    cdef Py_ssize_t rows_per_tile = _rows_per_tile(
        jh_hi - jh_lo, npl * _row_pitch(compact, in_w, lanes, win.wp), ncol)
    cdef Py_ssize_t jh0 = jh_lo, nrow
    while jh0 < jh_hi:
        nrow = _min(rows_per_tile, jh_hi - jh0)
        if acc != NULL:
            _pack_x_tile(xg, xs, cig, id, npl, jh0, nrow, in_w, cig > small_n, ldx, X)
        _grad_tile(isa, buf, win, res.shape[0], res, tap_table, id, npl, a_lo, jh0, nrow, in_w,
                   co0, nco, cig, kc, wpg, T, gxg, gxs, X, ldx, acc, small_n, kblock, compact,
                   rows, aoff, roff, voff, coff, tap, tap_off)
        jh0 += nrow


def backward(const floating[:, :, :, :, :] gy,        # IN  [N, C_out, oD, oH, oW]
             const floating[:, :, :, :, :] x,         # IN  [N, C_in, D, H, W]
             const floating[::1] wpanel,              # IN  W_g in panels (pack_backward_weight)
             floating[:, :, :, :, :] gx,              # OUT [N, C_in, D, H, W] (if need_gx)
             floating[:, ::1] gw_chunks,              # OUT (n_chunks, w.size) (if need_gw)
                                                      #     [G][C_out_g * K][C_in_g] each
             bint need_gx, bint need_gw, Py_ssize_t groups,
             const Py_ssize_t[::1] stride,            # IN  stride (d, h, w)
             const Py_ssize_t[:, ::1] res,            # IN  (n_res, 6) r_d, r_h, r_w, cnt_d, cnt_h, cnt_w
             const Py_ssize_t[:, ::1] tap_table,      # IN  (K, 4) residue, offsets d, h, w
             Py_ssize_t slab,                         # input depths per work item
             const Py_ssize_t[:, ::1] depths,         # IN  (n_slabs, 2) residue depths [lo, hi)
             const Py_ssize_t[::1] window,            # IN  hp, wp, lead, cs, cob, elements
             const Py_ssize_t[::1] inner,             # IN  depths [d_lo, d_hi) and rows
                                                      #     [h_lo, h_hi) where all taps read
                                                      #     inside grad_output
             Py_ssize_t ncol, Py_ssize_t gx_planes,
             bint compact,                            # grad_x's tiles: kept columns only
             Py_ssize_t kblock, Py_ssize_t n_chunks, int small_n, int isa_index,
             int n_threads):
    """grad_x and the per-chunk partial sums of grad_w. Returns 0, or the bytes of the
    per-thread workspace when allocating it failed.

    Kernel tap t reads grad_output at i * s + t * dil - lo = (i + a_t) * s + r_t per
    dimension: residue grid r_t at offset a_t (tap_table), so each tap is a shifted view of
    a padded window of residue grids (_copy_gy_window), read in place.
    Work item it = (g * N + n) * n_slabs + sl: input depths [sl * slab, (sl + 1) * slab)
    of sample n, group g, which read residue depths depths[sl]. Chunk c owns
    the items [c * n_items // n_chunks, (c + 1) * n_items // n_chunks) and accumulates them
    in order into gw_chunks[c]; :func:`sum_chunks` adds the chunks in order.
    """
    cdef const conv3dt_isa* isa = conv3dt_isa_get(isa_index)
    cdef Py_ssize_t n_batch = x.shape[0], cig = x.shape[1] // groups
    cdef Py_ssize_t cog = gy.shape[1] // groups, in_d = x.shape[2]
    cdef Py_ssize_t K = tap_table.shape[0], kc = cog * K
    cdef Py_ssize_t n_slabs = (in_d + slab - 1) // slab
    cdef Py_ssize_t n_items = groups * n_batch * n_slabs
    cdef Strides4 gs = _strides(gy.strides, sizeof(floating))
    cdef Strides4 xs = _strides(x.strides, sizeof(floating))
    cdef Strides4 gxs
    cdef Py_ssize_t sgy_n = gy.strides[0] // sizeof(floating)
    cdef Py_ssize_t sx_n = x.strides[0] // sizeof(floating)
    cdef Py_ssize_t sgx_n = 0
    cdef const floating* gy0 = &gy[0, 0, 0, 0, 0]
    cdef const floating* x0 = &x[0, 0, 0, 0, 0]
    cdef const floating* wp0 = &wpanel[0]
    cdef Py_ssize_t cigp = _round_up(cig, isa.panel_nr)
    cdef floating* gx0 = NULL
    cdef floating* acc0 = NULL
    cdef Py_ssize_t acc_stride = 0
    cdef Window win
    win.hp = window[0]
    win.wp = window[1]
    win.lead = window[2]
    win.cs = window[3]
    win.cib = window[4]
    cdef Py_ssize_t buf_size = window[5]
    # A tile's columns, the last vector of grad_x's included.
    cdef Py_ssize_t lanes = _lanes(isa, sizeof(floating))
    cdef Py_ssize_t cols = max(ncol, win.wp) + lanes
    # Transposed x tiles are padded to whole register blocks (wgrad_mv vectors) of channels.
    cdef Py_ssize_t ldx = _round_up(cig, isa.wgrad_mv * lanes)
    cdef Py_ssize_t workspace = (
        (buf_size + cig * cols + ldx * cols) * sizeof(floating)
        + (2 * K + 2 * kblock + 3 * cols + cols // lanes + 1) * sizeof(Py_ssize_t))
    if need_gx:
        gxs = _strides(gx.strides, sizeof(floating))
        sgx_n = gx.strides[0] // sizeof(floating)
        gx0 = &gx[0, 0, 0, 0, 0]
    if need_gw:
        acc0 = &gw_chunks[0, 0]
        acc_stride = gw_chunks.shape[1]
    cdef Py_ssize_t ch, it, g, n, sl, rem
    cdef int failed = 0
    cdef int* failed_ptr = &failed
    cdef floating* buf
    cdef floating* T
    cdef floating* X
    cdef Py_ssize_t* rows
    cdef Py_ssize_t* aoff
    cdef Py_ssize_t* roff
    cdef Py_ssize_t* voff
    cdef Py_ssize_t* coff
    cdef Py_ssize_t* tap

    with nogil, parallel(num_threads=n_threads):
        buf = <floating*>calloc(buf_size, sizeof(floating))
        tap = <Py_ssize_t*>malloc(2 * K * sizeof(Py_ssize_t))
        T = <floating*>malloc(cig * cols * sizeof(floating))
        X = <floating*>calloc(ldx * cols, sizeof(floating))
        rows = <Py_ssize_t*>malloc(kblock * sizeof(Py_ssize_t))
        aoff = <Py_ssize_t*>malloc(kblock * sizeof(Py_ssize_t))
        roff = <Py_ssize_t*>malloc(cols * sizeof(Py_ssize_t))
        voff = <Py_ssize_t*>malloc((cols // lanes + 1) * sizeof(Py_ssize_t))
        coff = <Py_ssize_t*>malloc(cols * sizeof(Py_ssize_t))
        if (buf == NULL or T == NULL or X == NULL or rows == NULL or aoff == NULL
                or roff == NULL or voff == NULL or coff == NULL or tap == NULL):
            failed_ptr[0] = 1
        for ch in prange(n_chunks, schedule='dynamic'):
            if (buf == NULL or T == NULL or X == NULL or rows == NULL or aoff == NULL
                    or roff == NULL or voff == NULL or coff == NULL or tap == NULL):
                continue
            if acc0 != NULL:
                memset(acc0 + ch * acc_stride, 0, acc_stride * sizeof(floating))
            for it in range(ch * n_items // n_chunks, (ch + 1) * n_items // n_chunks):
                g = it // (n_batch * n_slabs)
                rem = it - g * n_batch * n_slabs
                n = rem // n_slabs
                sl = rem - n * n_slabs
                _grad_item(isa, gy0 + n * sgy_n + g * cog * gs.c, gs,
                           x0 + n * sx_n + g * cig * xs.c, xs, x.shape[3], x.shape[4],
                           wp0 + g * cigp * kc,
                           gx0 + n * sgx_n + g * cig * gxs.c if gx0 != NULL else NULL, gxs,
                           acc0 + ch * acc_stride + g * cig * kc if acc0 != NULL else NULL,
                           &win, res, tap_table, &stride[0], &inner[0], sl * slab,
                           _min(slab, in_d - sl * slab), depths[sl, 0], depths[sl, 1], cig, cog,
                           ncol, gx_planes, compact, kblock, small_n, buf, T, X, ldx, rows,
                           aoff, roff, voff, coff, tap, tap + K)
            _store_fence()
        free(tap)
        free(voff)
        free(coff)
        free(roff)
        free(buf)
        free(T)
        free(X)
        free(rows)
        free(aoff)
    return workspace if failed else 0


cdef enum:
    # Rows of a chunk summed at once by sum_chunks (a few KiB of partial sums)
    _SUM_ROWS = 16


def sum_chunks(const floating[:, ::1] chunks,  # IN  (n_chunks, size) partial sums, each
                                                #     [G][kc][cig] (grad_w transposed)
               floating[::1] out,              # OUT (size,) [G][cig][kc]: their sum
               Py_ssize_t cig, Py_ssize_t kc, int n_threads):
    """out[(g * cig + ci) * kc + r] = sum over chunks, in order, of
    chunks[:, (g * kc + r) * cig + ci].

    _SUM_ROWS rows gr = g * kc + r at a time: the chunks' blocks are added in order into
    a small buffer (each read front to back), which is then written out transposed."""
    cdef Py_ssize_t nrows = chunks.shape[1] // cig, n_chunks = chunks.shape[0]
    cdef Py_ssize_t blk, ch, gr, gr0, nr, e, ci
    cdef const floating* src
    cdef floating* acc
    cdef floating* o = &out[0]
    cdef int failed = 0
    cdef int* failed_ptr = &failed
    with nogil, parallel(num_threads=n_threads):
        acc = <floating*>malloc(_SUM_ROWS * cig * sizeof(floating))
        if acc == NULL:
            failed_ptr[0] = 1
        for blk in prange((nrows + _SUM_ROWS - 1) // _SUM_ROWS, schedule='static'):
            if acc == NULL:
                continue
            gr0 = blk * _SUM_ROWS
            nr = _min(_SUM_ROWS, nrows - gr0)
            for e in range(nr * cig):
                acc[e] = chunks[0, gr0 * cig + e]
            for ch in range(1, n_chunks):
                src = &chunks[ch, gr0 * cig]
                for e in range(nr * cig):
                    acc[e] = acc[e] + src[e]
            # channel by channel, so that each output line is written in one go
            for ci in range(cig):
                for gr in range(gr0, gr0 + nr):
                    o[((gr // kc) * cig + ci) * kc + gr % kc] = acc[(gr - gr0) * cig + ci]
        free(acc)
    if failed:
        raise MemoryError("could not allocate the buffer of grad_weight's chunk sums")


# Bias gradients are summed in double within blocks of this many elements, and the block
# sums added in double: for float32 a sum within a few ulps of the exact one, however many
# terms cancel (a float32 accumulator loses up to n * eps of the sum of magnitudes).
cdef enum:
    _SUM_BLOCK = 4096


cdef enum:
    # Elements per block of all_finite's parallel loop
    _FINITE_BLOCK = 65536


def all_finite(const floating[::1] a, int isa_index, int n_threads):
    """Whether no element of a is NaN or infinite (one pass, in parallel)."""
    cdef const conv3dt_isa* isa = conv3dt_isa_get(isa_index)
    cdef Py_ssize_t blk, n = a.shape[0], bad = 0
    cdef const floating* a0 = &a[0] if n > 0 else NULL
    with nogil:
        for blk in prange((n + _FINITE_BLOCK - 1) // _FINITE_BLOCK, num_threads=n_threads,
                          schedule='static'):
            if floating is float:
                bad += isa.nonfinite_f(a0 + blk * _FINITE_BLOCK,
                                    _min(_FINITE_BLOCK, n - blk * _FINITE_BLOCK))
            else:
                bad += isa.nonfinite_d(a0 + blk * _FINITE_BLOCK,
                                    _min(_FINITE_BLOCK, n - blk * _FINITE_BLOCK))
    return bad == 0


cdef void _sum_channels4(const floating* gc, Py_ssize_t nch, Py_ssize_t n_batch,
                         Py_ssize_t sn, Strides4 s, Py_ssize_t od, Py_ssize_t oh,
                         Py_ssize_t ow, floating* out) noexcept nogil:
    """out[c] = sum of channel c of the nch <= 4 channels from gc over batch and space,
    sequentially in double within blocks of _SUM_BLOCK elements, the block sums added in
    double, rounded once to the array's precision. The channels side by side, as four
    independent chains of additions (missing ones repeat the last channel and are
    dropped)."""
    cdef double t0 = 0, t1 = 0, t2 = 0, t3 = 0
    cdef double p0 = 0, p1 = 0, p2 = 0, p3 = 0
    cdef Py_ssize_t n, a, b, e, count = 0
    cdef Py_ssize_t o1 = _min(1, nch - 1) * s.c, o2 = _min(2, nch - 1) * s.c
    cdef Py_ssize_t o3 = _min(3, nch - 1) * s.c
    cdef const floating* g
    for n in range(n_batch):
        for a in range(od):
            for b in range(oh):
                g = gc + n * sn + a * s.d + b * s.h
                for e in range(ow):
                    p0 = p0 + g[e * s.w]
                    p1 = p1 + g[o1 + e * s.w]
                    p2 = p2 + g[o2 + e * s.w]
                    p3 = p3 + g[o3 + e * s.w]
                    count = count + 1
                    if count == _SUM_BLOCK:
                        t0 = t0 + p0
                        t1 = t1 + p1
                        t2 = t2 + p2
                        t3 = t3 + p3
                        p0 = 0
                        p1 = 0
                        p2 = 0
                        p3 = 0
                        count = 0
    out[0] = <floating>(t0 + p0)
    if nch > 1:
        out[1] = <floating>(t1 + p1)
    if nch > 2:
        out[2] = <floating>(t2 + p2)
    if nch > 3:
        out[3] = <floating>(t3 + p3)


def bias_grad(const floating[:, :, :, :, :] gy,   # IN  [N, C_out, oD, oH, oW]
              floating[::1] gb,                     # OUT [C_out]
              int n_threads):
    """gb[co] = sum of gy[:, co] over batch and space (blocked sum, see _sum_channels4),
    four channels at a time."""
    cdef Strides4 s = _strides(gy.strides, sizeof(floating))
    cdef Py_ssize_t sn = gy.strides[0] // sizeof(floating)
    cdef const floating* g0 = &gy[0, 0, 0, 0, 0]
    cdef Py_ssize_t c4
    with nogil:
        for c4 in prange((gy.shape[1] + 3) // 4, num_threads=n_threads, schedule='static'):
            _sum_channels4(g0 + 4 * c4 * s.c, _min(4, gy.shape[1] - 4 * c4), gy.shape[0],
                           sn, s, gy.shape[2], gy.shape[3], gy.shape[4], &gb[4 * c4])


# ------------------------------------------------- microkernels, called one by one

# Thin entries that run one microkernel of one variant on NumPy arrays, so that tests can
# check every variant against an independent formula (tests/test_isa.py). The kernels
# above never go through them.

def microkernel_panel_gemm(int isa_index, Py_ssize_t nv, Py_ssize_t n, Py_ssize_t k,
                           const floating[::1] a, const Py_ssize_t[::1] aoff,
                           const Py_ssize_t[::1] voff, const floating[::1] wp, Py_ssize_t wps,
                           const Py_ssize_t[::1] rows, bint use_rows, floating beta,
                           floating[::1] c):
    """C [n x nv vectors] (+)= W[:, rows] @ A, as _panel_product's kernel."""
    cdef const conv3dt_isa* isa = conv3dt_isa_get(isa_index)
    cdef const Py_ssize_t* r = &rows[0] if use_rows else NULL
    cdef Py_ssize_t ldc = nv * _lanes(isa, sizeof(floating))
    if floating is float:
        isa.panel_gemm_f(nv, n, k, &a[0], &aoff[0], &voff[0], &wp[0], wps, r, beta, &c[0], ldc)
    else:
        isa.panel_gemm_d(nv, n, k, &a[0], &aoff[0], &voff[0], &wp[0], wps, r, beta, &c[0], ldc)


def microkernel_weight_grad(int isa_index, const floating[::1] X, Py_ssize_t ldx,
                            Py_ssize_t cig, int small_n, const floating[::1] a,
                            const Py_ssize_t[::1] aoff, const Py_ssize_t[::1] rows,
                            Py_ssize_t kb, const Py_ssize_t[::1] roff, Py_ssize_t nrun,
                            Py_ssize_t in_w, floating[::1] acc):
    """acc [., cig][rows, :] += B @ X^T, as _weight_grad_product."""
    _weight_grad_product(conv3dt_isa_get(isa_index), &X[0], ldx, cig, small_n, &a[0],
                         &aoff[0], &rows[0], kb, &roff[0], nrun, in_w, &acc[0])


def microkernel_axpy(int isa_index, floating[::1] y, const floating[::1] x, floating a):
    """y += a * x."""
    _axpy(conv3dt_isa_get(isa_index), &y[0], &x[0], a, y.shape[0])
