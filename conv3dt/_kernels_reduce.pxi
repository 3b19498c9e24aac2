# The reductions (included by _kernels.pyx): grad_w's partial sums of the chunks added in
# order and transposed back, grad_bias as blocked sums in double, and the finiteness
# check of an array. Short passes over memory, not interruptible.


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
