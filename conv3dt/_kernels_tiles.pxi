# Tiles, shared by the forward pass and the gradients (included by _kernels.pyx): how
# many planes and rows a tile takes, and the lists that drive a tile's products (its
# vectors, its rows of the weight, its runs of grid positions).


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


cdef Py_ssize_t _take_rows(RowCursor* cur, Py_ssize_t kblock, Py_ssize_t* rows,
                           Py_ssize_t* aoff) noexcept nogil:
    """The next (up to kblock) rows of a tile's product (see RowCursor), increasing: row
    rows[i] of the weight, its left operand at aoff[i] in the window. Advances the
    cursor; returns the number of rows."""
    cdef Py_ssize_t kb = 0, c = cur.channel, t = cur.j
    cdef Py_ssize_t c0 = cur.c0, end = cur.end, nt = cur.taps_per_channel
    cdef Py_ssize_t channel_stride = cur.channel_stride, ntap = cur.n_taps
    cdef const Py_ssize_t* tap = cur.tap
    cdef const Py_ssize_t* tap_off = cur.tap_off
    if ntap == 0:
        cur.channel = end
        return 0
    while c < end and kb < kblock:
        rows[kb] = c * nt + tap[t]
        aoff[kb] = (c - c0) * channel_stride + tap_off[t]
        kb += 1
        t += 1
        if t == ntap:
            t = 0
            c += 1
    cur.channel = c
    cur.j = t
    return kb


cdef Py_ssize_t _tile_vectors(const Window* win, bint compact, const Tile* tile,
                              Py_ssize_t count_w, Py_ssize_t lanes, Py_ssize_t* voff,
                              Py_ssize_t* coff) noexcept nogil:
    """The vectors of `lanes` columns that the products compute for a tile (run
    k = p * n_rows + q: row q of its plane p, count_w columns kept): voff[v], the vector's
    offset in the window from the tile's first row, and coff[k], where run k starts in the
    product's output C. Returns the number of vectors (the tile's nv).

    compact: each run in whole vectors of its own, side by side in C (no gap column or row
    is computed; the last vector of a run may end past count_w). Else the columns from the
    first run's start to the last one's end, contiguous as in the window, gaps included.
    """
    cdef Py_ssize_t k, c, nv = 0, ncr = (count_w + lanes - 1) // lanes
    cdef Py_ssize_t nrow = tile.n_rows, nrun = tile.n_planes * tile.n_rows
    cdef Py_ssize_t hp = win.hp, wp = win.wp
    for k in range(nrun):
        coff[k] = ((k // nrow) * hp + k % nrow) * wp
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
