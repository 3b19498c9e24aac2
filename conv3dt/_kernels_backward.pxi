# The gradients grad_x and grad_w (included by _kernels.pyx): backward() fills a
# BackwardPass and runs the chunks of work items in parallel, each item (_grad_item) on
# its thread's BackwardWorkspace. Per item: copy a block of output channels of
# grad_output's residue grids into the window (_copy_gy_window), then tile the item's
# input positions (_grad_tiles) for grad_w and for grad_x, and per tile run the products
# (_grad_tile).


def backward(const floating[:, :, :, :, :] gy,        # IN  [N, C_out, oD, oH, oW]
             const floating[:, :, :, :, :] x,         # IN  [N, C_in, D, H, W]
             const floating[::1] wpanel,              # IN  W_g in panels (pack_backward_weight)
             floating[:, :, :, :, :] gx,              # OUT [N, C_in, D, H, W] (if need_gx)
             floating[:, ::1] gw_chunks,              # OUT (n_chunks, w.size) (if need_gw)
                                                      #     [G][C_out_g * K][C_in_g] each
             bint need_gx, bint need_gw, Py_ssize_t groups,
             BackwardTables tables not None,          # IN  the schedule's tables
             Py_ssize_t slab,                         # input depths per work item
             Py_ssize_t ncol, Py_ssize_t gx_planes,
             bint compact,                            # grad_x's tiles: kept columns only
             Py_ssize_t kblock, Py_ssize_t n_chunks, int small_n, int isa_index,
             int n_threads):
    """grad_x and the per-chunk partial sums of grad_w. Returns 0, INTERRUPTED (Ctrl-C
    came: the outputs are unfinished), or the bytes of the per-thread workspace when
    allocating it failed.

    The tables (BackwardTables): stride (d, h, w); res (n_res, 6), the residue
    combinations (r_d, r_h, r_w, cnt_d, cnt_h, cnt_w); tap_table (K, 4), per tap its
    residue combination and offsets a_d, a_h, a_w; depths (n_slabs, 2), the residue depths
    [lo, hi) each slab reads; the window; inner, the input depths [d_lo, d_hi) and rows
    [h_lo, h_hi) where every tap reads inside grad_output.
    Kernel tap t reads grad_output at i * s + t * dil - lo = (i + a_t) * s + r_t per
    dimension: residue grid r_t at offset a_t (tap_table), so each tap is a shifted view of
    a padded window of residue grids (_copy_gy_window), read in place.
    Work item it = (g * N + n) * n_slabs + sl: input depths [sl * slab, (sl + 1) * slab)
    of sample n, group g, which read residue depths depths[sl]. Chunk c owns
    the items [c * n_items // n_chunks, (c + 1) * n_items // n_chunks) and accumulates them
    in order into gw_chunks[c]; :func:`sum_chunks` adds the chunks in order.
    """
    cdef BackwardPass bp
    memset(&bp, 0, sizeof(bp))
    bp.isa = conv3dt_isa_get(isa_index)
    bp.lanes = _lanes(bp.isa, sizeof(floating))
    bp.n_batch = x.shape[0]
    bp.groups = groups
    bp.cig = x.shape[1] // groups
    bp.cog = gy.shape[1] // groups
    bp.in_size[0], bp.in_size[1], bp.in_size[2] = x.shape[2], x.shape[3], x.shape[4]
    bp.gys = _strides(gy.strides, sizeof(floating))
    bp.xs = _strides(x.strides, sizeof(floating))
    bp.gy_batch = gy.strides[0] // sizeof(floating)
    bp.x_batch = x.strides[0] // sizeof(floating)
    bp.stride[0], bp.stride[1], bp.stride[2] = \
        tables.stride[0], tables.stride[1], tables.stride[2]
    bp.need_gx = need_gx
    bp.need_gw = need_gw
    bp.res = &tables.res[0, 0] if tables.res.shape[0] > 0 else NULL
    bp.n_res = tables.res.shape[0]
    bp.tap_table = &tables.tap_table[0, 0]
    bp.n_taps = tables.tap_table.shape[0]
    bp.kc = bp.cog * bp.n_taps
    bp.inner = tables.inner
    bp.slab = slab
    bp.n_slabs = (bp.in_size[0] + slab - 1) // slab
    bp.depths = &tables.depths[0, 0] if tables.depths.shape[0] > 0 else NULL
    bp.n_items = groups * bp.n_batch * bp.n_slabs
    bp.n_chunks = n_chunks
    bp.compact = compact
    bp.ncol = ncol
    bp.gx_planes = gx_planes
    bp.kblock = kblock
    bp.small_n = small_n
    bp.win = tables.win
    # A tile's columns, the last vector of grad_x's included.
    bp.cols = max(ncol, bp.win.wp) + bp.lanes
    # Transposed x tiles are padded to whole register blocks (wgrad_mv vectors) of channels.
    bp.ldx = _round_up(bp.cig, bp.isa.wgrad_mv * bp.lanes)
    bp.cigp = _round_up(bp.cig, bp.isa.panel_nr)

    cdef const floating* gy0 = &gy[0, 0, 0, 0, 0]
    cdef const floating* x0 = &x[0, 0, 0, 0, 0]
    cdef const floating* wp0 = &wpanel[0]
    cdef floating* gx0 = NULL
    cdef floating* acc0 = NULL
    if need_gx:
        bp.gxs = _strides(gx.strides, sizeof(floating))
        bp.gx_batch = gx.strides[0] // sizeof(floating)
        gx0 = &gx[0, 0, 0, 0, 0]
    if need_gw:
        acc0 = &gw_chunks[0, 0]
        bp.chunk_size = gw_chunks.shape[1]
    cdef Py_ssize_t ch, it
    cdef Py_ssize_t failed = 0          # the workspace's bytes, where it could not be had
    cdef Py_ssize_t* failed_ptr = &failed
    cdef floating* acc
    cdef BackwardWorkspace ws
    cdef BackwardItem item

    bp.interruptible = _catch_sigint()
    with nogil, parallel(num_threads=n_threads):
        ws = _backward_workspace(&bp, sizeof(floating))
        if not ws.ok:
            failed_ptr[0] = ws.nbytes
        for ch in prange(n_chunks, schedule='dynamic'):
            if not ws.ok or _interrupted(bp.interruptible):
                continue
            acc = acc0 + ch * bp.chunk_size if acc0 != NULL else NULL
            if acc != NULL:
                memset(acc, 0, bp.chunk_size * sizeof(floating))
            for it in range(ch * bp.n_items // n_chunks, (ch + 1) * bp.n_items // n_chunks):
                if _interrupted(bp.interruptible):
                    break
                item = _backward_item(&bp, it)
                _grad_item(&bp, &item, gy0, x0, wp0, gx0, acc, &ws)
            _store_fence()
        _backward_workspace_free(&ws)
    if _release_sigint(bp.interruptible):
        return INTERRUPTED
    return failed


cdef BackwardItem _backward_item(const BackwardPass* bp, Py_ssize_t it) noexcept nogil:
    """Work item it = (g * N + n) * n_slabs + sl (see backward)."""
    cdef BackwardItem item
    cdef Py_ssize_t rem, sl
    item.g = it // (bp.n_batch * bp.n_slabs)
    rem = it - item.g * bp.n_batch * bp.n_slabs
    item.n = rem // bp.n_slabs
    sl = rem - item.n * bp.n_slabs
    item.d0 = sl * bp.slab
    item.depths = _min(bp.slab, bp.in_size[0] - sl * bp.slab)
    item.a_lo = bp.depths[2 * sl]
    item.a_hi = bp.depths[2 * sl + 1]
    return item


cdef BackwardWorkspace _backward_workspace(const BackwardPass* bp,
                                           Py_ssize_t itemsize) noexcept nogil:
    """One thread's workspace (ws.ok cleared where an allocation failed; ws.nbytes its
    size): the window, grad_x's tile [cig x cols], the tile of x [ldx x cols], two row
    lists of kblock entries, the runs, vectors and columns of a tile, its taps (2 x K);
    _backward_workspace_free frees it."""
    cdef BackwardWorkspace ws
    cdef Py_ssize_t* n = &ws.nbytes
    cdef bint* ok = &ws.ok
    cdef Py_ssize_t idx = sizeof(Py_ssize_t)
    ws.nbytes = 0
    ws.ok = True
    ws.window = _workspace_buffer(n, ok, bp.win.elements * itemsize, True)
    ws.tap = <Py_ssize_t*>_workspace_buffer(n, ok, 2 * bp.n_taps * idx, False)
    ws.tap_off = ws.tap + bp.n_taps if ws.tap != NULL else NULL
    ws.gx_tile = _workspace_buffer(n, ok, bp.cig * bp.cols * itemsize, False)
    ws.x_tile = _workspace_buffer(n, ok, bp.ldx * bp.cols * itemsize, True)
    ws.rows = <Py_ssize_t*>_workspace_buffer(n, ok, bp.kblock * idx, False)
    ws.aoff = <Py_ssize_t*>_workspace_buffer(n, ok, bp.kblock * idx, False)
    ws.roff = <Py_ssize_t*>_workspace_buffer(n, ok, bp.cols * idx, False)
    ws.voff = <Py_ssize_t*>_workspace_buffer(n, ok, (bp.cols // bp.lanes + 1) * idx, False)
    ws.coff = <Py_ssize_t*>_workspace_buffer(n, ok, bp.cols * idx, False)
    return ws


cdef void _backward_workspace_free(BackwardWorkspace* ws) noexcept nogil:
    free(ws.tap)
    free(ws.voff)
    free(ws.coff)
    free(ws.roff)
    free(ws.window)
    free(ws.gx_tile)
    free(ws.x_tile)
    free(ws.rows)
    free(ws.aoff)


cdef void _grad_item(const BackwardPass* bp, const BackwardItem* item, const floating* gy,
                     const floating* x, const floating* w, floating* gx, floating* acc,
                     BackwardWorkspace* ws) noexcept nogil:
    """Input depths [d0, d0 + depths) of one (sample, group): grad_x and/or grad_w, from
    one window of grad_output per block of its channels.

    gy, x, gx: the whole arrays (gx NULL: no grad_x); w: the weight in panels
    (pack_backward_weight); acc: the chunk's partial sum of grad_w, [G][kc][cig]
    (transposed), or NULL. grad_w takes the item's planes as few tiles as it can (a single
    plane: tiles of rows), so that each register block of its product sums over many
    columns; grad_x up to gx_planes planes per tile, `compact` or not (_cpu._tile_layout).
    Both tile the planes and rows outside inner = (depths [d_lo, d_hi), rows [h_lo, h_hi))
    apart."""
    cdef const conv3dt_isa* isa = bp.isa
    cdef Py_ssize_t cig = bp.cig, cog = bp.cog, g = item.g, kc = bp.kc
    cdef Py_ssize_t in_h = bp.in_size[1], in_w = bp.in_size[2]
    cdef Py_ssize_t id = item.d0, npl = item.depths, gx_planes = bp.gx_planes
    cdef Py_ssize_t lanes = bp.lanes
    cdef Py_ssize_t d_in_lo = bp.inner[0], d_in_hi = bp.inner[1]
    cdef Py_ssize_t h_in_lo = bp.inner[2], h_in_hi = bp.inner[3]
    cdef bint compact = bp.compact
    cdef const floating* gyg = gy + item.n * bp.gy_batch + g * cog * bp.gys.c
    cdef const floating* xg = x + item.n * bp.x_batch + g * cig * bp.xs.c
    cdef const floating* wg = w + g * bp.cigp * kc
    cdef floating* gxg = gx + item.n * bp.gx_batch + g * cig * bp.gxs.c if gx != NULL else NULL
    cdef floating* accg = acc + g * cig * kc if acc != NULL else NULL
    cdef floating* buf = <floating*>ws.window
    cdef WindowBlock blk
    cdef Tile region
    cdef Py_ssize_t p, tile_planes, part, h0, h1
    cdef bint split
    blk.c0 = 0
    blk.d_lo = item.a_lo
    blk.d_hi = item.a_hi
    while blk.c0 < cog:
        blk.n = _min(bp.win.channels, cog - blk.c0)
        _copy_gy_window(bp, &blk, gyg + blk.c0 * bp.gys.c, buf)
        # The planes and rows where some tap reads outside grad_output (outside `inner`)
        # are tiled apart from the others (_plane_tile, _rows_end), so that their tiles
        # leave out the taps that read only zeros there; grad_x's rows only where a row
        # of the tile fills a register block.
        for part in range(2):
            if (accg if part == 0 else gxg) == NULL:
                continue
            p = id
            while p < id + npl:
                tile_planes = _plane_tile(p, id + npl, d_in_lo, d_in_hi,
                                          npl if part == 0 else gx_planes)
                split = part == 0 or _split_rows(compact, tile_planes, in_w, lanes,
                                                 isa.panel_mv)
                region.plane = p
                region.n_planes = tile_planes
                h0 = 0
                while h0 < in_h:
                    h1 = _rows_end(h0, split, in_h, h_in_lo, h_in_hi)
                    region.row = h0
                    region.n_rows = h1 - h0
                    _grad_tiles(bp, &blk, &region, xg, wg, NULL if part == 0 else gxg,
                                accg if part == 0 else NULL, ws)
                    h0 = h1
                p += tile_planes
        blk.c0 += blk.n


cdef void _copy_gy_window(const BackwardPass* bp, const WindowBlock* blk,
                          const floating* gyc, floating* buf) noexcept nogil:
    """Copy the residue grids of the block's channels of grad_output (gyc: at its first
    channel) into the padded window.

    Residue rho = (r_d, r_h, r_w) of channel co is the subsampled grid
    gy[co, a * s_d + r_d, b * s_h + r_h, c * s_w + r_w] (cnt_d x cnt_h x cnt_w, res[rho]);
    its depths [d_lo, d_hi) land at
    buf[(co * n_res + rho) * cs + lead + ((a - d_lo) * hp + b) * wp + c], with zero gaps
    after each row and plane as in _copy_window (and zero planes outside the grid).
    """
    cdef Strides4 gs = bp.gys
    cdef const Py_ssize_t* res = bp.res
    cdef Py_ssize_t n_res = bp.n_res, s_d = bp.stride[0], s_h = bp.stride[1]
    cdef Py_ssize_t s_w = bp.stride[2]
    cdef Py_ssize_t hp = bp.win.hp, wp = bp.win.wp, lead = bp.win.lead, cs = bp.win.cs
    cdef Py_ssize_t nco = blk.n, a_lo = blk.d_lo, a_hi = blk.d_hi
    cdef Py_ssize_t co, rho, a, b, plane = hp * wp
    cdef Py_ssize_t cnt_h, cnt_w
    cdef const Py_ssize_t* r
    cdef const floating* src
    cdef floating* dst
    for co in range(nco):
        for rho in range(n_res):
            r = res + 6 * rho
            cnt_h = r[4]
            cnt_w = r[5]
            for a in range(a_lo, a_hi):
                dst = buf + (co * n_res + rho) * cs + lead + (a - a_lo) * plane
                if not 0 <= a < r[3]:
                    _zero(dst, plane)
                    continue
                src = gyc + co * gs.c + (a * s_d + r[0]) * gs.d + r[1] * gs.h + r[2] * gs.w
                for b in range(cnt_h):
                    _copy_strided(dst + b * wp, src + b * s_h * gs.h, s_w * gs.w, cnt_w)
                    _zero(dst + b * wp + cnt_w, wp - cnt_w)
                _zero(dst + cnt_h * wp, (hp - cnt_h) * wp)


cdef void _grad_tiles(const BackwardPass* bp, const WindowBlock* blk, const Tile* region,
                      const floating* xg, const floating* wg, floating* gxg,
                      floating* acc, BackwardWorkspace* ws) noexcept nogil:
    """The region's rows of its planes, in tiles of all its planes and as many rows as fit
    ncol columns (split evenly): grad_x (gxg, the group's grad_x; tiles `compact` or not)
    or grad_w (acc, the group's partial sum), by _grad_tile."""
    cdef bint compact = gxg != NULL and bp.compact
    cdef Py_ssize_t npl = region.n_planes
    cdef Py_ssize_t jh_lo = region.row, jh_hi = region.row + region.n_rows
    cdef Py_ssize_t rows_per_tile = _rows_per_tile(
        jh_hi - jh_lo, npl * _row_pitch(compact, bp.in_size[2], bp.lanes, bp.win.wp),
        bp.ncol)
    cdef Py_ssize_t jh0 = jh_lo
    cdef Tile tile
    tile.plane = region.plane
    tile.n_planes = npl
    while jh0 < jh_hi:
        tile.row = jh0
        tile.n_rows = _min(rows_per_tile, jh_hi - jh0)
        if acc != NULL:
            _pack_x_tile(bp, &tile, xg, <floating*>ws.x_tile)
        _grad_tile(bp, blk, &tile, wg, gxg, acc, ws)
        jh0 += tile.n_rows


cdef void _pack_x_tile(const BackwardPass* bp, const Tile* tile, const floating* xg,
                       floating* X) noexcept nogil:
    """x[ci, plane + p, row + q, u] of a tile (p < n_planes, q < n_rows, u < in_w) at tile
    position v = k * in_w + u of run k = p * n_rows + q: X[v * ldx + ci] where
    cig > small_n (transposed, for the register-blocked product, 8 channels at a time:
    each line of X is written in one go), else X[ci * n_planes * n_rows * in_w + v]."""
    cdef Strides4 xs = bp.xs
    cdef Py_ssize_t cig = bp.cig, in_w = bp.in_size[2], ldx = bp.ldx
    cdef Py_ssize_t id = tile.plane, jh0 = tile.row, nrow = tile.n_rows
    cdef Py_ssize_t nrun = tile.n_planes * tile.n_rows
    cdef Py_ssize_t ci, c, nc, k, u, nv = nrun * in_w
    cdef const floating* src
    cdef floating* dst
    if cig > bp.small_n:
        for ci in range(0, cig, 8):
            nc = _min(8, cig - ci)
            for k in range(nrun):
                src = xg + ci * xs.c + (id + k // nrow) * xs.d + (jh0 + k % nrow) * xs.h
                for u in range(in_w):
                    dst = X + (k * in_w + u) * ldx + ci
                    for c in range(nc):
                        dst[c] = src[c * xs.c + u * xs.w]
        return
    for ci in range(cig):
        for k in range(nrun):
            src = xg + ci * xs.c + (id + k // nrow) * xs.d + (jh0 + k % nrow) * xs.h
            _copy_strided(X + ci * nv + k * in_w, src, xs.w, in_w)


cdef void _grad_tile(const BackwardPass* bp, const WindowBlock* blk, const Tile* tile,
                     const floating* wg, floating* gxg, floating* acc,
                     BackwardWorkspace* ws) noexcept nogil:
    """One tile of input positions (rows row .. row + n_rows - 1 of input depths
    plane .. plane + n_planes - 1), from the block of output channels in the window:
    grad_x (gxg) or grad_w (acc).

    Window column J = (p * hp + q) * wp + u for depth plane + p, row row + q: grad_x
    computes the vectors of _tile_vectors (`compact` or not) and drops the columns
    u >= in_w; grad_w's sums run over the n_planes * n_rows runs roff of in_w columns. Row
    r = co * K + t of the gathered grad_output reads residue tap_table[t, 0] at
    (plane, row, 0) + J + tap_table[t, 1:]: the window shifted,
    window + lead + row * wp + aoff[i]. Taps whose reads all leave grad_output for this
    tile are left out.
        grad_x tile [cig x nv vectors] (+)= W_g[:, rows] @ B      (gx_tile; written to gxg)
        acc [kc x cig][rows, :] += B @ X_tile^T                    (valid columns only)
    """
    cdef const conv3dt_isa* isa = bp.isa
    cdef const Window* win = &bp.win
    cdef const Py_ssize_t* res = bp.res
    cdef const Py_ssize_t* tap_table = bp.tap_table
    cdef Strides4 gxs = bp.gxs
    cdef Py_ssize_t K = bp.n_taps, kc = bp.kc, cig = bp.cig, in_w = bp.in_size[2]
    cdef Py_ssize_t ldx = bp.ldx, kblock = bp.kblock
    cdef int small_n = bp.small_n
    cdef bint compact = gxg != NULL and bp.compact
    cdef Py_ssize_t id = tile.plane, npl = tile.n_planes, jh0 = tile.row
    cdef Py_ssize_t nrow = tile.n_rows, a_lo = blk.d_lo
    cdef Py_ssize_t wp = win.wp, lanes = bp.lanes, nv = 0
    cdef Py_ssize_t nrun = npl * nrow
    cdef Py_ssize_t kb, t, rho, ad, ah, aw, ci, k, ntap = 0
    cdef const floating* a = <const floating*>ws.window + win.lead + jh0 * wp
    cdef floating* T = <floating*>ws.gx_tile
    cdef const floating* X = <const floating*>ws.x_tile
    cdef Py_ssize_t* roff = ws.roff
    cdef Py_ssize_t* tap = ws.tap
    cdef Py_ssize_t* tap_off = ws.tap_off
    cdef const Py_ssize_t* coff = ws.coff
    cdef const floating* src
    cdef floating beta = 0
    cdef bint first = True
    cdef Py_ssize_t u
    cdef RowCursor cur
    for k in range(nrun):
        roff[k] = ((k // nrow) * win.hp + k % nrow) * wp
    if gxg != NULL:
        nv = _tile_vectors(win, compact, tile, in_w, lanes, ws.voff, ws.coff)
        if blk.c0 > 0:
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
        rho = tap_table[4 * t]
        ad = id + tap_table[4 * t + 1]
        ah = tap_table[4 * t + 2]
        aw = tap_table[4 * t + 3]
        if (ad + npl - 1 >= 0 and ad < res[6 * rho + 3] and jh0 + nrow - 1 + ah >= 0
                and jh0 + ah < res[6 * rho + 4]
                and in_w - 1 + aw >= 0 and aw < res[6 * rho + 5]):
            tap[ntap] = t
            tap_off[ntap] = rho * win.cs + ((ad - a_lo) * win.hp + ah) * wp + aw
            ntap += 1
    # rows co * K + t
    cur.channel = blk.c0
    cur.j = 0
    cur.c0 = blk.c0
    cur.end = blk.c0 + blk.n
    cur.taps_per_channel = K
    cur.channel_stride = bp.n_res * win.cs
    cur.n_taps = ntap
    cur.tap = tap
    cur.tap_off = tap_off
    while cur.channel < cur.end or first:
        kb = _take_rows(&cur, kblock, ws.rows, ws.aoff)
        if gxg != NULL:
            # T [cig x nc] (+)= W_g[:, rows] @ B  (row-major), W_g in panels
            _panel_product(isa, nv, cig, kb, a, ws.aoff, ws.voff, wg, kc * isa.panel_nr,
                           ws.rows, beta, T)
        if acc != NULL:
            _weight_grad_product(isa, X, ldx, cig, small_n, a, ws.aoff, ws.rows, kb, roff,
                                 nrun, in_w, acc)
        beta = 1
        first = False
    if gxg != NULL:
        for ci in range(cig):
            for k in range(nrun):
                _store(gxg + ci * gxs.c + (id + k // nrow) * gxs.d + (jh0 + k % nrow) * gxs.h,
                       gxs.w, T + ci * nv * lanes + coff[k], 0, in_w, False)
