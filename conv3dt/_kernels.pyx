# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU kernels of the 3D transposed convolution (float32 and float64, OpenMP).

All arrays are NCDHW typed memoryviews with arbitrary strides (an NDHWC array is passed
as its transposed view; nothing is copied). Kernels never validate: conv3dt.functional
resolves and checks every argument first. The passes return 0, INTERRUPTED when Ctrl-C
stopped them (the outputs are then unfinished), or the bytes of the per-thread workspace
when it could not be allocated; conv3dt._cpu raises KeyboardInterrupt or MemoryError.

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

Products: the register-blocked microkernels of the instruction-set variant in use
(kernels/isa.h, kernels/microkernels.h), called through its record: the left operand read
in place through per-row offsets, the weight packed in panels. A BLAS would need B as a
strided matrix, which the shifted views are not, and would copy it. Thin products (few
channels) use vector loops.

The module is one extension built from several files, one per job:
    _kernels.pxd             the structs that describe a pass, its workspace and its work
    _kernels.pyx             this file: helpers and the dtype dispatch of the primitives
    _kernels_tiles.pxi       tile sizes and the lists that drive the products
    _kernels_interrupt.pxi   Ctrl-C during a pass
    _kernels_pack.pxi        the weight in panels
    _kernels_forward.pxi     the forward pass
    _kernels_backward.pxi    grad_x and grad_w
    _kernels_reduce.pxi      grad_w's chunk sums, grad_bias, the finiteness check
    _kernels_isa.pxi         the variants' facts, and their microkernels one by one (tests)
Every `def` fills the structs of _kernels.pxd once and hands them down by const pointer;
the cdef functions read the fields they loop over into locals first.
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

#: What forward and backward return when Ctrl-C stopped them (their outputs are unfinished).
INTERRUPTED = -2


# ---------------------------------------------------------------------------- helpers

cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline Py_ssize_t _floordiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # b > 0; C division truncates towards zero.
    return a // b if a >= 0 else -((-a + b - 1) // b)


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline Strides4 _strides(Py_ssize_t* byte_strides, Py_ssize_t itemsize) noexcept nogil:
    cdef Strides4 s
    s.c = byte_strides[1] // itemsize
    s.d = byte_strides[2] // itemsize
    s.h = byte_strides[3] // itemsize
    s.w = byte_strides[4] // itemsize
    return s


cdef inline Window _window(const Py_ssize_t[::1] window) noexcept:
    """The Window of the planner's array (hp, wp, lead, cs, channels, elements)."""
    cdef Window win
    win.hp = window[0]
    win.wp = window[1]
    win.lead = window[2]
    win.cs = window[3]
    win.channels = window[4]
    win.elements = window[5]
    return win


cdef class ForwardTables:
    """The forward pass's tables of one schedule (conv3dt._cpu.ForwardSchedule), read once
    into typed memoryviews, so that a call hands them over as one object instead of
    acquiring a buffer per array (each costs about half a microsecond, a visible share of a
    tiny pass). See forward and pack_forward_weight for what each holds."""
    cdef const Py_ssize_t[:, :, ::1] phases
    cdef const Py_ssize_t[:, :, ::1] taps
    cdef const Py_ssize_t[:, ::1] combos
    cdef const Py_ssize_t[:, ::1] slab_depths
    cdef const Py_ssize_t[:, ::1] tap_dest
    cdef Window win

    def __init__(self, const Py_ssize_t[:, :, ::1] phases not None,
                 const Py_ssize_t[:, :, ::1] taps not None,
                 const Py_ssize_t[:, ::1] combos not None,
                 const Py_ssize_t[:, ::1] slab_depths not None,
                 const Py_ssize_t[:, ::1] tap_dest not None,
                 const Py_ssize_t[::1] window not None):
        if phases.shape[0] != 3 or taps.shape[0] != 3 or phases.shape[2] != 5 or \
                taps.shape[2] != 2 or combos.shape[1] != 4 or slab_depths.shape[1] != 2 or \
                tap_dest.shape[1] != 4 or window.shape[0] != 6:
            raise ValueError("ForwardTables: the arrays' shapes do not match a schedule")
        self.phases, self.taps, self.combos = phases, taps, combos
        self.slab_depths, self.tap_dest = slab_depths, tap_dest
        self.win = _window(window)


cdef class BackwardTables:
    """The gradients' tables of one schedule (conv3dt._cpu.BackwardSchedule), read once
    into typed memoryviews (see ForwardTables; backward says what each holds)."""
    cdef Py_ssize_t stride[3]
    cdef const Py_ssize_t[:, ::1] res
    cdef const Py_ssize_t[:, ::1] tap_table
    cdef const Py_ssize_t[:, ::1] depths
    cdef Py_ssize_t inner[4]
    cdef Window win

    def __init__(self, const Py_ssize_t[::1] stride not None,
                 const Py_ssize_t[:, ::1] res not None,
                 const Py_ssize_t[:, ::1] tap_table not None,
                 const Py_ssize_t[:, ::1] depths not None,
                 const Py_ssize_t[::1] window not None,
                 const Py_ssize_t[::1] inner not None):
        if stride.shape[0] != 3 or res.shape[1] != 6 or tap_table.shape[0] < 1 or \
                tap_table.shape[1] != 4 or depths.shape[1] != 2 or window.shape[0] != 6 or \
                inner.shape[0] != 4:
            raise ValueError("BackwardTables: the arrays' shapes do not match a schedule")
        cdef int a
        for a in range(3):
            self.stride[a] = stride[a]
        for a in range(4):
            self.inner[a] = inner[a]
        self.res, self.tap_table, self.depths = res, tap_table, depths
        self.win = _window(window)


cdef inline void* _workspace_buffer(Py_ssize_t* nbytes, bint* ok, Py_ssize_t size,
                                    bint zeroed) noexcept nogil:
    """One buffer of a per-thread workspace: size bytes (zeroed or not), added to *nbytes
    (what a kernel reports when the workspace could not be allocated); *ok cleared when the
    allocation failed."""
    cdef void* p = calloc(size, 1) if zeroed else malloc(size)
    nbytes[0] += size
    if p == NULL:
        ok[0] = False
    return p


cdef inline Py_ssize_t _lanes(const conv3dt_isa* isa, Py_ssize_t itemsize) noexcept nogil:
    """Elements per vector of the variant."""
    return isa.vector_bytes // itemsize


# ------------------------------------------- the primitives, float or double

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


# ------------------------------------------------------------------------- the jobs

include "_kernels_tiles.pxi"
include "_kernels_interrupt.pxi"
include "_kernels_pack.pxi"
include "_kernels_forward.pxi"
include "_kernels_backward.pxi"
include "_kernels_reduce.pxi"
include "_kernels_isa.pxi"
