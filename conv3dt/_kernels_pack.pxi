# The weight, packed for the products (included by _kernels.pyx): each phase
# combination's weight for the forward pass, row-major (the direct path) or in panels of
# the variant's panel_nr columns (the window products), and each group's weight in panels
# for grad_x.


def pack_forward_weight(const floating[:, :, :, :, ::1] w,   # IN  [C_in, C_out_g, kD, kH, kW]
                        floating[::1] dst,                    # OUT wpanel, or wpack
                        Py_ssize_t groups,
                        ForwardTables tables not None,        # IN  its tap_dest (K, 4)
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
    cdef floating* d0 = &dst[0]
    cdef const Py_ssize_t* tap_dest = &tables.tap_dest[0, 0]
    cdef Py_ssize_t c_in
    with nogil:
        for c_in in prange(w.shape[0], num_threads=n_threads, schedule='static'):
            _pack_weight_channel(w0 + c_in * cog * kk, d0, panels, c_in, cig, cog, kk,
                                 tap_dest, isa.panel_nr)


cdef void _pack_weight_channel(const floating* src, floating* dst, bint panels,
                               Py_ssize_t c_in, Py_ssize_t cig, Py_ssize_t cog,
                               Py_ssize_t kk, const Py_ssize_t* tap_dest,
                               Py_ssize_t nr) noexcept nogil:
    """The rows of input channel c_in (src = w[c_in], [cog][kk], which stays in the L1
    cache) in every combination's weight, tap by tap, into dst: wpanel (`panels`) or
    wpack (see pack_forward_weight)."""
    cdef Py_ssize_t t, nt, kc, co, q, lane, base, g = c_in // cig, ci = c_in - g * cig
    cdef Py_ssize_t cogp = _round_up(cog, nr)
    cdef floating* d
    for t in range(kk):
        if tap_dest[4 * t] < 0:
            continue
        nt = tap_dest[4 * t + 2]
        kc = cig * nt
        if panels:
            # panel by panel, nr columns at a time: no division per element
            d = dst + tap_dest[4 * t + 1] + g * cogp * kc + (ci * nt + tap_dest[4 * t + 3]) * nr
            for q in range(cogp // nr):
                for lane in range(nr):
                    co = q * nr + lane
                    d[lane] = src[co * kk + t] if co < cog else 0
                d += kc * nr
        else:
            base = tap_dest[4 * t] + (g * cog * cig + ci) * nt + tap_dest[4 * t + 3]
            for co in range(cog):
                dst[base + co * cig * nt] = src[co * kk + t]


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
