# Declarations shared by the CPU kernels of conv3dt (_kernels.pyx and its include files).
#
# A pass is described by a few structs, filled once per call by its `def` entry point and
# handed down by const pointer: the pass itself (geometry, tables and tiling, the same for
# every work item), the per-thread workspace, and what one function works on (a work item,
# the block of channels in the window, a tile). The arrays themselves (float or double)
# travel as typed pointers beside them, so that each cdef function is specialised per
# dtype once, at its `def` entry point.

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
        double (*fma_probe_f)(Py_ssize_t n, float* sink) noexcept nogil
        double (*fma_probe_d)(Py_ssize_t n, double* sink) noexcept nogil
    int conv3dt_isa_count()
    const conv3dt_isa* conv3dt_isa_get(int index)
    int conv3dt_isa_supported(int index)


# ------------------------------------------------------------------- small records

# Element strides of a 5-D view [N, C, D, H, W] past the batch axis: a kernel applies the
# batch stride itself and walks channels and space with these.
cdef struct Strides4:
    Py_ssize_t c
    Py_ssize_t d
    Py_ssize_t h
    Py_ssize_t w

# One phase combination of the forward pass (one phase per spatial dimension): its output
# grid in each dimension is q = q0 + j, j < count, at output positions o0 + j * stride,
# and it reads through ntaps taps whose rows (t, m) start at taps.
cdef struct Phase3:
    Py_ssize_t q0[3]
    Py_ssize_t count[3]
    Py_ssize_t o0[3]
    Py_ssize_t ntaps[3]
    const Py_ssize_t* taps[3]

# A run of consecutive tile positions along the last grid axis: grid coordinates of its
# first position, its length, and its offset among the tile's columns.
cdef struct Segment:
    Py_ssize_t j[3]
    Py_ssize_t length
    Py_ssize_t offset

# The direct path's tile: grid positions split into runs along the last grid axis
# (_kernels._segments), `cols` positions in all.
cdef struct SegmentList:
    const Segment* seg
    Py_ssize_t n
    Py_ssize_t cols

# The padded copy of x (forward) or of grad_output's residue grids (gradients) that a
# work item reads in place (see _kernels._copy_window): planes of hp rows of wp elements
# (the data's rows and columns, then zero gaps), `lead` zero elements before each
# channel's planes, channels cs elements apart, `channels` channels at once; `elements`
# in all, with slack for the last vector (_cpu.Window).
cdef struct Window:
    Py_ssize_t hp
    Py_ssize_t wp
    Py_ssize_t lead
    Py_ssize_t cs
    Py_ssize_t channels
    Py_ssize_t elements

# What the window holds now: channels [c0, c0 + n) (input channels of the group in the
# forward pass, output channels in the gradients) of depths [d_lo, d_hi) (input depths;
# residue-grid depths in the gradients).
cdef struct WindowBlock:
    Py_ssize_t c0
    Py_ssize_t n
    Py_ssize_t d_lo
    Py_ssize_t d_hi

# A tile of a grid (a phase combination's output grid, or the input positions of the
# gradients): rows [row, row + n_rows) of planes [plane, plane + n_planes), computed by
# the products as nv vectors (_kernels._tile_vectors).
cdef struct Tile:
    Py_ssize_t plane
    Py_ssize_t n_planes
    Py_ssize_t row
    Py_ssize_t n_rows
    Py_ssize_t nv

# The rows (channel, tap) of a tile's product, walked channel by channel (_take_rows): the
# next channel and its next kept tap (index into tap), up to channel end; the weight's row
# is channel * taps_per_channel + tap[j], and its left operand starts at
# (channel - c0) * channel_stride + tap_off[j] in the window. Only the n_taps taps that
# read inside the data for this tile are kept.
cdef struct RowCursor:
    Py_ssize_t channel
    Py_ssize_t j
    Py_ssize_t c0
    Py_ssize_t end
    Py_ssize_t taps_per_channel
    Py_ssize_t channel_stride
    Py_ssize_t n_taps
    const Py_ssize_t* tap
    const Py_ssize_t* tap_off


# ------------------------------------------------------------------- forward pass

# One forward pass, the same for every work item (filled by _kernels.forward).
cdef struct ForwardPass:
    const conv3dt_isa* isa
    Py_ssize_t lanes            # elements per vector of the variant, for this dtype
    # shapes and strides of x [N, C_in, D, H, W] and y [N, C_out, oD, oH, oW] (views)
    Py_ssize_t n_batch
    Py_ssize_t groups
    Py_ssize_t cig              # input channels per group
    Py_ssize_t cog              # output channels per group
    Py_ssize_t in_size[3]
    Py_ssize_t out_size[3]
    Strides4 xs
    Strides4 ys
    Py_ssize_t x_batch          # elements between samples
    Py_ssize_t y_batch
    Py_ssize_t stride[3]
    # phase tables (_cpu.ForwardSchedule), C-contiguous
    const Py_ssize_t* phases    # (3, phase_rows, 5): o0, q0, count, first tap, taps
    Py_ssize_t phase_rows
    const Py_ssize_t* taps      # (3, tap_rows, 2): kernel tap, m
    Py_ssize_t tap_rows
    const Py_ssize_t* combos    # (n_combos, 4): phase per dimension, weight offset
    Py_ssize_t n_combos
    # work items: output depths [s * slab, (s + 1) * slab), which read input depths
    # slab_depths[s] (n_slabs, 2)
    Py_ssize_t slab
    Py_ssize_t n_slabs
    const Py_ssize_t* slab_depths
    bint fill                   # some outputs get no tap: fill the slab first
    # tiles
    bint direct                 # few output channels: products straight from x
    bint compact                # tiles of kept columns only
    Py_ssize_t ncol             # columns per tile
    Py_ssize_t planes_per_tile
    Py_ssize_t kblock           # rows of W per product call
    Py_ssize_t n_pw             # combinations tiled together (w-phases)
    Py_ssize_t cols             # a tile's columns, its last vector included
    Py_ssize_t tile_size        # elements of one tile of Y: cog * cols
    Window win
    bint interruptible          # work items stop once Ctrl-C was seen (_interrupted)

# One thread's workspace of the forward pass (_forward_workspace).
cdef struct ForwardWorkspace:
    void* window                # the padded window of x (not with `direct`), zeroed
    void* tiles                 # n_pw tiles Y of tile_size elements
    Phase3* phw                 # the combinations tiled together
    Segment* segs               # the direct path's runs (ncol)
    Py_ssize_t* rows            # a product call's rows of W and ...
    Py_ssize_t* aoff            # ... where their left operands start (kblock each)
    Py_ssize_t* voff            # a tile's vectors and ...
    Py_ssize_t* coff            # ... where its runs start in the product's output
    Py_ssize_t* tap             # a tile's kept taps and ...
    Py_ssize_t* tap_off         # ... their shifts in the window
    Py_ssize_t nbytes           # the bytes of all of it (_workspace_buffer counts them)
    bint ok                     # every allocation succeeded

# One work item of the forward pass: output depths [od_lo, od_hi) of sample n, group g,
# which read input depths [d_lo, d_hi).
cdef struct ForwardItem:
    Py_ssize_t n
    Py_ssize_t g
    Py_ssize_t od_lo
    Py_ssize_t od_hi
    Py_ssize_t d_lo
    Py_ssize_t d_hi


# ---------------------------------------------------------------------- gradients

# One backward pass (grad_x and/or grad_w), the same for every work item (filled by
# _kernels.backward).
cdef struct BackwardPass:
    const conv3dt_isa* isa
    Py_ssize_t lanes
    # shapes and strides of grad_output, x and grad_x (views)
    Py_ssize_t n_batch
    Py_ssize_t groups
    Py_ssize_t cig
    Py_ssize_t cog
    Py_ssize_t in_size[3]
    Strides4 gys
    Strides4 xs
    Strides4 gxs
    Py_ssize_t gy_batch
    Py_ssize_t x_batch
    Py_ssize_t gx_batch
    Py_ssize_t stride[3]
    bint need_gx
    bint need_gw
    # residue grids and taps (_cpu.BackwardSchedule), C-contiguous
    const Py_ssize_t* res       # (n_res, 6): r_d, r_h, r_w, cnt_d, cnt_h, cnt_w
    Py_ssize_t n_res
    const Py_ssize_t* tap_table  # (n_taps, 4): residue combination, offsets a_d, a_h, a_w
    Py_ssize_t n_taps           # K, the kernel's taps
    Py_ssize_t kc               # rows of the gathered grad_output: cog * n_taps
    Py_ssize_t inner[4]         # input depths and rows [lo, hi) where every tap reads
                                # inside grad_output
    # work items: input depths [s * slab, (s + 1) * slab), which read residue depths
    # depths[s] (n_slabs, 2); chunk c of n_chunks sums its items' grad_w in order
    Py_ssize_t slab
    Py_ssize_t n_slabs
    const Py_ssize_t* depths
    Py_ssize_t n_items
    Py_ssize_t n_chunks
    Py_ssize_t chunk_size       # elements of one chunk's grad_w
    # tiles
    bint compact                # grad_x's tiles: kept columns only
    Py_ssize_t ncol
    Py_ssize_t gx_planes        # grad_x's planes per tile
    Py_ssize_t kblock
    int small_n                 # grad_w's dot blocks up to this many input channels
    Py_ssize_t ldx              # a transposed x tile's row: cig rounded up to blocks
    Py_ssize_t cigp             # cig rounded up to the weight's panels
    Py_ssize_t cols             # a tile's columns, its last vector included
    Window win
    bint interruptible

# One thread's workspace of the backward pass (_backward_workspace).
cdef struct BackwardWorkspace:
    void* window                # the padded window of grad_output's residue grids
    void* gx_tile               # grad_x's tile [cig x cols]
    void* x_tile                # the tile of x for grad_w [ldx x cols], zeroed
    Py_ssize_t* rows
    Py_ssize_t* aoff
    Py_ssize_t* roff            # where each run of a tile starts in the window
    Py_ssize_t* voff
    Py_ssize_t* coff
    Py_ssize_t* tap
    Py_ssize_t* tap_off
    Py_ssize_t nbytes
    bint ok

# One work item of the gradients: input depths [d0, d0 + depths) of sample n, group g,
# which read residue depths [a_lo, a_hi).
cdef struct BackwardItem:
    Py_ssize_t n
    Py_ssize_t g
    Py_ssize_t d0
    Py_ssize_t depths
    Py_ssize_t a_lo
    Py_ssize_t a_hi
