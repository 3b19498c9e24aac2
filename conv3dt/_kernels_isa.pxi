# The instruction-set variants (included by _kernels.pyx): their facts, for conv3dt._isa,
# and thin entries that run one microkernel of one variant on NumPy arrays, so that tests
# can check every variant against an independent formula (tests/test_isa.py). The
# kernels never go through these entries.


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


def fma_probe(int isa_index, bint double, Py_ssize_t steps, int n_threads):
    """Run variant isa_index's FMA probe (float, or double) for `steps` steps on each of
    n_threads threads at once (time the call for the rate). Returns (the flop done in all,
    the sum of the threads' results: n_threads x lanes x sum over the chains i of
    i * m**steps + a * (1 - m**steps) / (1 - m), m = 0.999, a = 0.001). Not a microkernel
    of the passes: the benchmark's measure of the machine's peak."""
    cdef const conv3dt_isa* isa = conv3dt_isa_get(isa_index)
    cdef double flop = 0, total = 0
    cdef int t
    if steps < 0 or n_threads < 1:
        raise ValueError(f"steps must be >= 0 and n_threads >= 1, got {steps}, {n_threads}")
    # one result per thread, a cache line apart
    cdef double* sink = <double*>calloc(8 * n_threads, sizeof(double))
    if sink == NULL:
        raise MemoryError
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule='static', chunksize=1):
            if double:
                flop += isa.fma_probe_d(steps, sink + 8 * t)
            else:
                flop += isa.fma_probe_f(steps, <float*>(sink + 8 * t))
    for t in range(n_threads):
        total += sink[8 * t] if double else (<float*>(sink + 8 * t))[0]
    free(sink)
    return flop, total


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
