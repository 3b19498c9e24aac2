# The forward pass (included by _kernels.pyx): forward() fills a ForwardPass and runs
# the work items (_forward_slab) in parallel, each on its thread's ForwardWorkspace.
# Per slab: copy a block of channels of x into the window (_copy_window), then per phase
# combination and tile the products (_window_tile, or _direct_phase for few output
# channels) and the write-out (_write_rows, _write_phase).


def forward(const floating[:, :, :, :, :] x,        # IN  [N, C_in, D, H, W]
            const floating[::1] wpacked,             # IN  pack_forward_weight's output
            const floating[::1] bias,                # IN  [C_out], or None: no bias
            floating[:, :, :, :, :] y,               # OUT [N, C_out, oD, oH, oW]
            ForwardTables tables not None,           # IN  the schedule's tables
            Py_ssize_t groups,
            Py_ssize_t stride_d, Py_ssize_t stride_h, Py_ssize_t stride_w,
            bint fill,                               # some outputs get no tap: fill first
            Py_ssize_t slab,                         # output depths per work item
            bint direct, Py_ssize_t ncol, Py_ssize_t planes_per_tile,
            bint compact,                            # tiles of kept columns only
            Py_ssize_t n_pw,                         # combinations per (d, h) phase pair
            Py_ssize_t kblock, int isa_index, int n_threads):
    """y = conv3d_transpose(x, w) (+ bias). Returns 0, INTERRUPTED (Ctrl-C came: y is
    unfinished), or the bytes of the per-thread workspace when allocating it failed.

    The tables (ForwardTables): phases (3, P, 5) and taps (3, T, 2), the phase and tap
    tables per dimension, padded; combos (C, 4), the phase combinations and their weight
    offsets; slab_depths (n_slabs, 2), the input depths each slab reads; the window.
    wpacked: the weight in panels, or row-major with `direct`.
    Work item it = (n * groups + g) * n_slabs + s: output depths [s * slab, (s + 1) * slab)
    of sample n, group g, which read input depths slab_depths[s]. Per thread
    (_forward_workspace): the padded window of x (`window`, see _copy_window; not with
    `direct`), n_pw tiles Y [C_out_g x cols] (combos lists the w-phases innermost: at most
    n_pw consecutive combinations share their depth and height phases),
    cols = max(ncol, wp) + one vector: a tile's columns, its last vector included; ncol
    runs (`direct`), two row lists of kblock entries, the tile's vectors and runs
    (cols / lanes + 1 and cols entries) and its taps (2 x T^3, T = taps.shape[1]).
    """
    cdef ForwardPass fp
    memset(&fp, 0, sizeof(fp))
    fp.isa = conv3dt_isa_get(isa_index)
    fp.lanes = _lanes(fp.isa, sizeof(floating))
    fp.n_batch = x.shape[0]
    fp.groups = groups
    fp.cig = x.shape[1] // groups
    fp.cog = y.shape[1] // groups
    fp.in_size[0], fp.in_size[1], fp.in_size[2] = x.shape[2], x.shape[3], x.shape[4]
    fp.out_size[0], fp.out_size[1], fp.out_size[2] = y.shape[2], y.shape[3], y.shape[4]
    fp.xs = _strides(x.strides, sizeof(floating))
    fp.ys = _strides(y.strides, sizeof(floating))
    fp.x_batch = x.strides[0] // sizeof(floating)
    fp.y_batch = y.strides[0] // sizeof(floating)
    fp.stride[0], fp.stride[1], fp.stride[2] = stride_d, stride_h, stride_w
    fp.phases = &tables.phases[0, 0, 0]
    fp.phase_rows = tables.phases.shape[1]
    fp.taps = &tables.taps[0, 0, 0]
    fp.tap_rows = tables.taps.shape[1]
    fp.combos = &tables.combos[0, 0] if tables.combos.shape[0] > 0 else NULL
    fp.n_combos = tables.combos.shape[0]
    fp.slab = slab
    fp.n_slabs = (y.shape[2] + slab - 1) // slab
    fp.slab_depths = &tables.slab_depths[0, 0] if tables.slab_depths.shape[0] > 0 else NULL
    fp.fill = fill
    fp.direct = direct
    fp.compact = compact
    fp.ncol = ncol
    fp.planes_per_tile = planes_per_tile
    fp.kblock = kblock
    fp.n_pw = n_pw
    fp.win = tables.win
    fp.cols = max(ncol, fp.win.wp) + fp.lanes
    fp.tile_size = fp.cog * fp.cols

    cdef Py_ssize_t n_items = fp.n_batch * groups * fp.n_slabs
    cdef const floating* x0 = &x[0, 0, 0, 0, 0]
    cdef floating* y0 = &y[0, 0, 0, 0, 0]
    cdef const floating* w0 = &wpacked[0]
    cdef const floating* b0 = &bias[0] if bias is not None and bias.shape[0] > 0 else NULL
    cdef Py_ssize_t it
    cdef Py_ssize_t failed = 0          # the workspace's bytes, where it could not be had
    cdef Py_ssize_t* failed_ptr = &failed
    cdef ForwardWorkspace ws
    cdef ForwardItem item

    fp.interruptible = _catch_sigint()
    with nogil, parallel(num_threads=n_threads):
        ws = _forward_workspace(&fp, sizeof(floating))
        if not ws.ok:
            failed_ptr[0] = ws.nbytes
        for it in prange(n_items, schedule='dynamic'):
            if not ws.ok or _interrupted(fp.interruptible):
                continue
            item = _forward_item(&fp, it)
            _forward_slab(&fp, &item, x0, w0, b0, y0, &ws)
            _store_fence()
        _forward_workspace_free(&ws)
    if _release_sigint(fp.interruptible):
        return INTERRUPTED
    return failed


cdef ForwardItem _forward_item(const ForwardPass* fp, Py_ssize_t it) noexcept nogil:
    """Work item it = (n * groups + g) * n_slabs + s (see forward)."""
    cdef ForwardItem item
    cdef Py_ssize_t s = it % fp.n_slabs
    item.g = (it // fp.n_slabs) % fp.groups
    item.n = it // (fp.n_slabs * fp.groups)
    item.od_lo = s * fp.slab
    item.od_hi = _min(fp.out_size[0], (s + 1) * fp.slab)
    item.d_lo = fp.slab_depths[2 * s]
    item.d_hi = fp.slab_depths[2 * s + 1]
    return item


cdef ForwardWorkspace _forward_workspace(const ForwardPass* fp,
                                         Py_ssize_t itemsize) noexcept nogil:
    """One thread's workspace (ws.ok cleared where an allocation failed; ws.nbytes its
    size); _forward_workspace_free frees it."""
    cdef ForwardWorkspace ws
    cdef Py_ssize_t ntap_max = fp.tap_rows * fp.tap_rows * fp.tap_rows
    cdef Py_ssize_t* n = &ws.nbytes
    cdef bint* ok = &ws.ok
    cdef Py_ssize_t idx = sizeof(Py_ssize_t)
    ws.nbytes = 0
    ws.ok = True
    ws.window = _workspace_buffer(n, ok, (1 if fp.direct else fp.win.elements) * itemsize, True)
    ws.tap = <Py_ssize_t*>_workspace_buffer(n, ok, 2 * ntap_max * idx, False)
    ws.tap_off = ws.tap + ntap_max if ws.tap != NULL else NULL
    ws.tiles = _workspace_buffer(n, ok, fp.n_pw * fp.tile_size * itemsize, False)
    ws.phw = <Phase3*>_workspace_buffer(n, ok, fp.n_pw * sizeof(Phase3), False)
    ws.segs = <Segment*>_workspace_buffer(n, ok, fp.ncol * sizeof(Segment), False)
    ws.rows = <Py_ssize_t*>_workspace_buffer(n, ok, fp.kblock * idx, False)
    ws.aoff = <Py_ssize_t*>_workspace_buffer(n, ok, fp.kblock * idx, False)
    ws.voff = <Py_ssize_t*>_workspace_buffer(n, ok, (fp.cols // fp.lanes + 1) * idx, False)
    ws.coff = <Py_ssize_t*>_workspace_buffer(n, ok, fp.cols * idx, False)
    return ws


cdef void _forward_workspace_free(ForwardWorkspace* ws) noexcept nogil:
    free(ws.tap)
    free(ws.voff)
    free(ws.coff)
    free(ws.window)
    free(ws.tiles)
    free(ws.phw)
    free(ws.segs)
    free(ws.rows)
    free(ws.aoff)


cdef inline void _load_phase(const ForwardPass* fp, Py_ssize_t c, Phase3* ph) noexcept nogil:
    """ph = phase combination c (fp.combos[c]) from the phase tables."""
    cdef Py_ssize_t a
    cdef const Py_ssize_t* row
    for a in range(3):
        row = fp.phases + (a * fp.phase_rows + fp.combos[4 * c + a]) * 5
        ph.o0[a] = row[0]
        ph.q0[a] = row[1]
        ph.count[a] = row[2]
        ph.ntaps[a] = row[4]
        ph.taps[a] = fp.taps + (a * fp.tap_rows + row[3]) * 2


cdef void _forward_slab(const ForwardPass* fp, const ForwardItem* item, const floating* x,
                        const floating* w, const floating* bias, floating* y,
                        ForwardWorkspace* ws) noexcept nogil:
    """Output depths [od_lo, od_hi) of one (sample, group), every phase combination.

    x, y, bias: the whole arrays (bias NULL: none); w: the packed weight the path reads
    (wpanel, or wpack with `direct`). The slab reads input depths [d_lo, d_hi) of x,
    copied block of channels by block into the padded window, which every tap of every
    combination then reads in place. With `direct` (few output channels) the products
    accumulate straight from x instead. Combinations that differ only in their w-phase
    (consecutive in combos) are tiled together, in the same vectors (_tile_vectors,
    `compact` or not, voff and coff), and their tiles written out row by row (_write_rows;
    phw: one Phase3 per w-phase, their tiles tile_size elements apart in Y). Working slab
    by slab keeps the output lines that the phases interleave in cache, and gives each
    thread its own output rows.
    """
    cdef const conv3dt_isa* isa = fp.isa
    cdef const Window* win = &fp.win
    cdef Strides4 xs = fp.xs, ys = fp.ys
    cdef Py_ssize_t cig = fp.cig, cog = fp.cog, g = item.g
    cdef Py_ssize_t in_d = fp.in_size[0], in_h = fp.in_size[1]
    cdef Py_ssize_t out_h = fp.out_size[1], out_w = fp.out_size[2]
    cdef Py_ssize_t stride_d = fp.stride[0], stride_w = fp.stride[2]
    cdef Py_ssize_t od_lo = item.od_lo, od_hi = item.od_hi
    cdef Py_ssize_t n_combos = fp.n_combos, ncol = fp.ncol
    cdef Py_ssize_t planes_per_tile = fp.planes_per_tile, y_size = fp.tile_size
    cdef const Py_ssize_t* combos = fp.combos
    cdef bint direct = fp.direct, compact = fp.compact
    cdef const floating* xg = x + item.n * fp.x_batch + g * cig * xs.c
    cdef floating* yg = y + item.n * fp.y_batch + g * cog * ys.c
    cdef const floating* bg = bias + g * cog if bias != NULL else NULL
    cdef floating* xp = <floating*>ws.window
    cdef floating* Y = <floating*>ws.tiles
    cdef Phase3* phw = ws.phw
    cdef Py_ssize_t* voff = ws.voff
    cdef Py_ssize_t* coff = ws.coff
    cdef Phase3 ph
    cdef WindowBlock blk
    cdef Tile tile
    cdef SegmentList segl
    cdef Py_ssize_t c, co, jd, jd_lo, jd_hi, jh0, kc, j0, j_end, npl
    cdef Py_ssize_t c_end, v, count_w, n_dir
    cdef Py_ssize_t nr = isa.panel_nr, cogp = _round_up(cog, nr)
    cdef Py_ssize_t rows_per_tile, lanes = fp.lanes, pitch
    cdef Py_ssize_t d_in_lo, d_in_hi, h_in_lo, h_in_hi, md, mh, t, h0, h1
    cdef bint split
    segl.seg = ws.segs
    if fp.fill:
        for co in range(cog):
            _fill_rows(yg + co * ys.c + od_lo * ys.d, ys, od_hi - od_lo, out_h, out_w,
                       bg[co] if bg != NULL else 0)
    blk.c0 = 0
    blk.d_lo = item.d_lo
    blk.d_hi = item.d_hi
    while blk.c0 < cig:
        blk.n = _min(win.channels, cig - blk.c0) if not direct else cig
        if not direct:
            _copy_window(fp, &blk, xg + blk.c0 * xs.c, xp)
        c = 0
        while c < n_combos:
            _load_phase(fp, c, &ph)
            # Grid rows jd whose output depth o0 + jd * stride lies in the slab.
            jd_lo = _clamp(-_floordiv(ph.o0[0] - od_lo, stride_d), 0, ph.count[0])
            jd_hi = _clamp(-_floordiv(ph.o0[0] - od_hi, stride_d), jd_lo, ph.count[0])
            if direct:
                # Grid positions [j0, j0 + ncol) at a time, by _direct_phase; the next
                # combination too where it is the other w-phase of stride 2 with rows of
                # the same length, so that their rows are written together.
                phw[0] = ph
                n_dir = 1
                if (stride_w == 2 and ys.w == 1 and c + 1 < n_combos
                        and combos[4 * (c + 1)] == combos[4 * c]
                        and combos[4 * (c + 1) + 1] == combos[4 * c + 1]):
                    _load_phase(fp, c + 1, &phw[1])
                    if (phw[1].count[2] == ph.count[2]
                            and (phw[1].o0[2] - ph.o0[2]) * (phw[1].o0[2] - ph.o0[2]) == 1):
                        n_dir = 2
                j0 = jd_lo * ph.count[1] * ph.count[2]
                j_end = jd_hi * ph.count[1] * ph.count[2]
                while j0 < j_end:
                    segl.cols = _min(ncol, j_end - j0)
                    segl.n = _segments(ph.count[1], ph.count[2], j0, segl.cols, ws.segs)
                    for v in range(n_dir):
                        kc = cig * phw[v].ntaps[0] * phw[v].ntaps[1] * phw[v].ntaps[2]
                        _direct_phase(fp, &phw[v], &segl, xg,
                                      w + combos[4 * (c + v) + 3] + g * cog * kc,
                                      Y + v * y_size)
                    _write_phase(fp, phw, n_dir, &segl, Y, bg, yg)
                    j0 += ncol
                c += n_dir
                continue
            # The combinations c .. c_end - 1 share their depth and height phases.
            c_end = c + 1
            while (c_end < n_combos and combos[4 * c_end] == combos[4 * c]
                   and combos[4 * c_end + 1] == combos[4 * c + 1]):
                c_end += 1
            count_w = 0
            for v in range(c_end - c):
                _load_phase(fp, c + v, &phw[v])
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
                tile.plane = jd
                tile.n_planes = npl
                h0 = 0
                while h0 < ph.count[1]:
                    h1 = _rows_end(h0, split, ph.count[1], h_in_lo, h_in_hi)
                    rows_per_tile = _rows_per_tile(h1 - h0, npl * pitch, ncol)
                    jh0 = h0
                    h0 = h1
                    while jh0 < h1:
                        tile.row = jh0
                        tile.n_rows = _min(rows_per_tile, h1 - jh0)
                        tile.nv = _tile_vectors(win, compact, &tile, count_w, lanes, voff,
                                                coff)
                        if blk.c0 > 0:
                            _read_rows(fp, phw, c_end - c, &tile, coff, yg, Y)
                        for v in range(c_end - c):
                            kc = cig * phw[v].ntaps[0] * phw[v].ntaps[1] * phw[v].ntaps[2]
                            _window_tile(fp, &blk, &phw[v], &tile, xp,
                                         w + combos[4 * (c + v) + 3] // cog * cogp
                                         + g * cogp * kc, Y + v * y_size, ws)
                        # The bias goes after the last block of channels, so that it is
                        # added to the whole sum however the channels are blocked.
                        _write_rows(fp, phw, c_end - c, &tile, coff, Y,
                                    bg if blk.c0 + blk.n >= cig else NULL, yg)
                        jh0 += tile.n_rows
                jd += npl
            c = c_end
        blk.c0 += blk.n


cdef void _fill_rows(floating* yc, Strides4 ys, Py_ssize_t od, Py_ssize_t oh,
                     Py_ssize_t ow, floating value) noexcept nogil:
    """yc[a, b, e] = value over od x oh x ow positions (ys apart)."""
    cdef Py_ssize_t a, b, e
    for a in range(od):
        for b in range(oh):
            for e in range(ow):
                yc[a * ys.d + b * ys.h + e * ys.w] = value


cdef void _copy_window(const ForwardPass* fp, const WindowBlock* blk, const floating* xc,
                       floating* xp) noexcept nogil:
    """Copy input depths [d_lo, d_hi) of the block's channels (xc: x at its first channel)
    into the padded window xp (depths outside x, which a tile spanning several planes may
    read, are zero planes).

    Channel ci, depth d_lo + p, row h, column w lands at
    xp[ci * cs + lead + (p * hp + h) * wp + w]; columns [in_w, wp) and rows [in_h, hp) of
    every plane are zero, and so are the `lead` elements before each channel's planes
    (zeroed when the window was allocated, never written). A read q - m that leaves x by
    at most the gaps therefore finds a zero: left of a row, the previous row's gap; above a
    plane, the previous plane's bottom rows or the channel's lead.
    """
    cdef Strides4 xs = fp.xs
    cdef Py_ssize_t in_d = fp.in_size[0], in_h = fp.in_size[1], in_w = fp.in_size[2]
    cdef Py_ssize_t hp = fp.win.hp, wp = fp.win.wp, lead = fp.win.lead, cs = fp.win.cs
    cdef Py_ssize_t d_lo = blk.d_lo, d_hi = blk.d_hi, nci = blk.n
    cdef Py_ssize_t ci, p, h, plane = hp * wp
    cdef const floating* src
    cdef floating* dst
    for ci in range(nci):
        for p in range(d_hi - d_lo):
            dst = xp + ci * cs + lead + p * plane
            if not 0 <= d_lo + p < in_d:
                _zero(dst, plane)
                continue
            src = xc + ci * xs.c + (d_lo + p) * xs.d
            for h in range(in_h):
                _copy_strided(dst + h * wp, src + h * xs.h, xs.w, in_w)
                _zero(dst + h * wp + in_w, wp - in_w)
            _zero(dst + in_h * wp, (hp - in_h) * wp)


cdef void _direct_phase(const ForwardPass* fp, const Phase3* ph, const SegmentList* tile,
                        const floating* xg, const floating* wg,
                        floating* Y) noexcept nogil:
    """Y [cog x cols] = W_phase @ B without materialising B (few output channels).

    The product of a window tile (_window_tile), computed as one axpy per
    (row of B, run, output channel) straight from x (xg: the group's first channel), whose
    rows must be contiguous (xs.w == 1); wg: the combination's weight for the group,
    row-major [cog x kc]. For a thin W_phase this saves writing and re-reading B.
    """
    cdef const conv3dt_isa* isa = fp.isa
    cdef Strides4 xs = fp.xs
    cdef Py_ssize_t in_d = fp.in_size[0], in_h = fp.in_size[1], in_w = fp.in_size[2]
    cdef Py_ssize_t cog = fp.cog
    cdef const Segment* segs = tile.seg
    cdef Py_ssize_t nseg = tile.n, nc = tile.cols
    cdef Py_ssize_t nth = ph.ntaps[1], ntw = ph.ntaps[2]
    cdef Py_ssize_t nt = ph.ntaps[0] * nth * ntw, kc = fp.cig * nt
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


cdef void _write_phase(const ForwardPass* fp, const Phase3* ph, Py_ssize_t n_dir,
                       const SegmentList* tile, const floating* Y, const floating* bias,
                       floating* yg) noexcept nogil:
    """y[co, o(j)] = Y[co, j] (+ bias[co]) for the output positions o(j) of the n_dir
    phase combinations ph (tile v at Y + v * tile_size, [cog x cols] row-major each, over
    the same grid positions); two are the w-phases of stride 2 side by side in a contiguous
    row, interleaved in whole vectors (_store2). bias: NULL or the group's first entry;
    yg: y at (sample, first channel of the group).
    """
    cdef const conv3dt_isa* isa = fp.isa
    cdef Strides4 ys = fp.ys
    cdef Py_ssize_t stride_d = fp.stride[0], stride_h = fp.stride[1], stride_w = fp.stride[2]
    cdef Py_ssize_t y_size = fp.tile_size, cog = fp.cog
    cdef const Segment* segs = tile.seg
    cdef Py_ssize_t nseg = tile.n, nc = tile.cols
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


cdef void _window_tile(const ForwardPass* fp, const WindowBlock* blk, const Phase3* ph,
                       const Tile* tile, const floating* xp, const floating* wpg,
                       floating* Y, ForwardWorkspace* ws) noexcept nogil:
    """One phase combination's tile (grid rows row .. row + n_rows - 1 of grid depths
    plane .. plane + n_planes - 1), computed in the tile's nv vectors (_tile_vectors) from
    the block of channels in the window xp; wpg: the combination's weight for the group,
    in panels.

    Window column J = (p * hp + jh - row) * wp + jw for depth plane + p. Row
    r = ci * nt + tap of the combination's W reads x[ci, q - m] at grid
    q = (plane, row, 0) + J, which is the window shifted by the tap:
    xp + lead + row * wp + aoff[i],
    aoff[i] = ci * cs + ((plane + md - d_lo) * hp + mh) * wp + mw with m* = q0 - m the
    tap's offsets. Taps whose reads all leave x for this tile are left out.
    OUT Y [cog x nv vectors] = W[:, rows] @ B (row-major), for _write_rows; for a later
    block of channels (c0 > 0), Y (+)= instead: its terms added to Y's values one by one
    (_read_rows put the sums of the earlier blocks there), so that the order of the
    additions does not depend on the blocks.
    """
    cdef const conv3dt_isa* isa = fp.isa
    cdef Py_ssize_t in_d = fp.in_size[0], in_h = fp.in_size[1], in_w = fp.in_size[2]
    cdef Py_ssize_t cog = fp.cog, kblock = fp.kblock
    cdef Py_ssize_t hp = fp.win.hp, wp = fp.win.wp
    cdef Py_ssize_t d_lo = blk.d_lo
    cdef Py_ssize_t jd = tile.plane, npl = tile.n_planes, jh0 = tile.row
    cdef Py_ssize_t nrow = tile.n_rows, nv = tile.nv
    cdef Py_ssize_t* tap = ws.tap
    cdef Py_ssize_t* tap_off = ws.tap_off
    cdef Py_ssize_t nth = ph.ntaps[1], ntw = ph.ntaps[2]
    cdef Py_ssize_t nt = ph.ntaps[0] * nth * ntw
    cdef Py_ssize_t wps = fp.cig * nt * isa.panel_nr
    cdef Py_ssize_t kb, md, mh, mw, ntap = 0, itd, ith, itw
    cdef const floating* a = xp + fp.win.lead + jh0 * wp
    cdef floating beta = 1 if blk.c0 > 0 else 0
    cdef bint first = True
    cdef RowCursor cur
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
                    tap_off[ntap] = ((md - d_lo) * hp + mh) * wp + mw
                    ntap += 1
    cur.channel = blk.c0
    cur.j = 0
    cur.c0 = blk.c0
    cur.end = blk.c0 + blk.n
    cur.taps_per_channel = nt
    cur.channel_stride = fp.win.cs
    cur.n_taps = ntap
    cur.tap = tap
    cur.tap_off = tap_off
    while cur.channel < cur.end or first:
        kb = _take_rows(&cur, kblock, ws.rows, ws.aoff)
        # Y [cog x nv vectors] (+)= W_phase[:, rows] @ B  (row-major)
        _panel_product(isa, nv, cog, kb, a, ws.aoff, ws.voff, wpg, wps, ws.rows, beta, Y)
        beta = 1
        first = False


cdef void _read_rows(const ForwardPass* fp, const Phase3* ph, Py_ssize_t n_pw,
                     const Tile* tile, const Py_ssize_t* coff, const floating* yg,
                     floating* Y) noexcept nogil:
    """The inverse of _write_rows (no bias): Y = y at the tile's output positions, the sums
    of the earlier blocks of input channels, which the next block's products continue."""
    cdef Strides4 ys = fp.ys
    cdef Py_ssize_t stride_d = fp.stride[0], stride_h = fp.stride[1], stride_w = fp.stride[2]
    cdef Py_ssize_t y_size = fp.tile_size, cog = fp.cog, ldy = tile.nv * fp.lanes
    cdef Py_ssize_t jd = tile.plane, npl = tile.n_planes, jh0 = tile.row
    cdef Py_ssize_t nrow = tile.n_rows
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


cdef void _write_rows(const ForwardPass* fp, const Phase3* ph, Py_ssize_t n_pw,
                      const Tile* tile, const Py_ssize_t* coff, const floating* Y,
                      const floating* bias, floating* yg) noexcept nogil:
    """Write the tiles of n_pw phase combinations that differ only in their w-phase
    (ph[0 .. n_pw - 1], tile v at Y + v * tile_size, rows of nv * lanes elements, run
    k = p * n_rows + q starting at column coff[k], see _window_tile) to y:
    y[co, o] = Y (+ bias[co]; bias NULL: none).

    Output row by output row, all w-phases at once: the phases interleave their elements
    within a row, and a row finished in one go is fetched into the cache once. Two phases
    of stride 2 side by side in a contiguous row are interleaved in whole vectors.
    """
    cdef const conv3dt_isa* isa = fp.isa
    cdef Strides4 ys = fp.ys
    cdef Py_ssize_t stride_d = fp.stride[0], stride_h = fp.stride[1], stride_w = fp.stride[2]
    cdef Py_ssize_t y_size = fp.tile_size, cog = fp.cog, ldy = tile.nv * fp.lanes
    cdef Py_ssize_t jd = tile.plane, npl = tile.n_planes, jh0 = tile.row
    cdef Py_ssize_t nrow = tile.n_rows
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
                            src + (1 - first) * y_size, b, n_pair, False)
                    continue
                for v in range(n_pw):
                    _store(row + ph[v].o0[2] * ys.w, stride_w * ys.w, src + v * y_size, b,
                           ph[v].count[2], False)
