# Declarations shared by the CPU kernels of conv3dt (see _kernels.pyx).

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

# The padded copy of x that the forward pass reads in place (see _kernels._copy_window):
# planes of hp rows of wp elements (x's rows and columns, then zero gaps), `lead` zero
# elements before each channel's planes, channels cs elements apart, cib channels at once.
cdef struct Window:
    Py_ssize_t hp
    Py_ssize_t wp
    Py_ssize_t lead
    Py_ssize_t cs
    Py_ssize_t cib
