"""Argument validation and geometry: the one place that turns user arguments into a plan.

Everything the kernels need to know about shapes is resolved here, once, from the raw
arguments a user passes: strides, dilations, the low/high padding of each spatial
dimension, the output size, and the *phase tables* of the transposed convolution.

Per spatial dimension, with input size ``I``, kernel ``k``, stride ``s``, dilation ``d``
and low padding ``lo``, output position ``o`` receives input ``i`` through tap ``t`` when

    i * s + t * d = o + lo.

Splitting the outputs into ``s`` phases ``r = (o + lo) mod s`` turns each phase into a dense
stride-1 correlation: in phase ``r`` only the taps with ``(t * d) mod s == r`` contribute,
and output ``o = q * s + r - lo`` reads input ``i = q - m_t`` with ``m_t = (t * d - r) // s``.
:func:`phase_tables` lists, per dimension, the phases that have taps and outputs.

Nothing here allocates volumes or touches data; every function is pure and cheap, and
:func:`resolve` is cached so that repeated calls with one geometry cost a dict lookup.
"""

import functools
import numbers
import operator
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["Plan", "resolve", "kernel_size_from_output_size", "phase_tables", "PhaseTable"]

DATA_FORMATS = ("NCDHW", "NDHWC")
PADDING_ALGORITHMS = ("SAME", "VALID", "SAME_UPPER", "SAME_LOWER")
# Largest extent of one BLAS operand dimension (BLAS takes 32-bit ints).
_BLAS_INT_MAX = 2**31 - 1
# Largest stride, dilation, padding, output_padding or output_size per dimension (Paddle's
# attributes are 32-bit ints). It keeps every index the kernels compute, such as
# i * stride + t * dilation - pad_lo, far inside the 64-bit range.
ARG_MAX = 2**31 - 1


class Plan(NamedTuple):
    """A validated, fully resolved convolution geometry (all sizes are Python ints).

    ``out_size[a] = (in_size[a] - 1) * stride[a] - pad_lo[a] - pad_hi[a]
    + dilation[a] * (kernel[a] - 1) + 1``. ``pad_hi`` is the *effective* high padding:
    ``output_padding`` or ``output_size`` have already been taken off it (so it may be
    negative). ``dilation`` is the effective one (Paddle's 'SAME' forces it to 1).
    """

    n: int
    c_in: int
    c_out: int
    groups: int
    in_size: Tuple[int, int, int]
    kernel: Tuple[int, int, int]
    stride: Tuple[int, int, int]
    dilation: Tuple[int, int, int]
    pad_lo: Tuple[int, int, int]
    pad_hi: Tuple[int, int, int]
    out_size: Tuple[int, int, int]
    data_format: str

    @property
    def x_shape(self) -> Tuple[int, ...]:
        return _shape_in_format(self.n, self.c_in, self.in_size, self.data_format)

    @property
    def y_shape(self) -> Tuple[int, ...]:
        return _shape_in_format(self.n, self.c_out, self.out_size, self.data_format)

    @property
    def w_shape(self) -> Tuple[int, ...]:
        return (self.c_in, self.c_out // self.groups) + self.kernel


def _shape_in_format(n, c, spatial, data_format):
    if data_format == "NCDHW":
        return (n, c) + tuple(spatial)
    return (n,) + tuple(spatial) + (c,)


# --------------------------------------------------------------------------- validation


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _int(value, name):
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return operator.index(value)


def _triple(value, name, minimum):
    """An int or a sequence of 3 ints, each >= minimum, as a tuple of 3 Python ints."""
    if _is_int(value):
        values = (operator.index(value),) * 3
    elif isinstance(value, (list, tuple, np.ndarray)) and len(value) == 3 and all(
        _is_int(v) for v in value
    ):
        values = tuple(operator.index(v) for v in value)
    else:
        raise ValueError(f"{name} must be an int or a sequence of 3 ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    if any(v > ARG_MAX for v in values):
        raise ValueError(f"{name} must be <= {ARG_MAX} in every dimension, got {value!r}")
    return values


def check_data_format(data_format: Any) -> str:
    if not isinstance(data_format, str) or data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be one of {DATA_FORMATS}, got {data_format!r}"
        )
    return data_format


def _explicit_padding(padding, data_format):
    """(lo, hi) per spatial dim from an int, 3 ints, 6 ints or 5 pairs; None for a string."""
    if isinstance(padding, str):
        return None
    if _is_int(padding):
        lo = hi = (operator.index(padding),) * 3
    elif isinstance(padding, (list, tuple, np.ndarray)):
        items = list(padding)
        if len(items) == 5 and all(isinstance(p, (list, tuple, np.ndarray)) for p in items):
            pairs = [tuple(p) for p in items]
            if any(len(p) != 2 or not all(_is_int(v) for v in p) for p in pairs):
                raise ValueError(f"padding given as 5 pairs must hold pairs of ints, got {padding!r}")
            outer = (0, 1) if data_format == "NCDHW" else (0, 4)
            if any(pairs[i] != (0, 0) for i in outer):
                raise ValueError(
                    "padding given as 5 pairs must have [0, 0] for the batch and channel "
                    f"dimensions ({data_format}), got {padding!r}"
                )
            spatial = [p for i, p in enumerate(pairs) if i not in outer]
            lo = tuple(operator.index(p[0]) for p in spatial)
            hi = tuple(operator.index(p[1]) for p in spatial)
        elif len(items) == 3 and all(_is_int(v) for v in items):
            lo = hi = tuple(operator.index(v) for v in items)
        elif len(items) == 6 and all(_is_int(v) for v in items):
            values = [operator.index(v) for v in items]
            lo, hi = tuple(values[0::2]), tuple(values[1::2])
        else:
            raise ValueError(
                "padding must be an int, 3 ints, 6 ints, 5 pairs or one of "
                f"{PADDING_ALGORITHMS}, got {padding!r}"
            )
    else:
        raise ValueError(
            "padding must be an int, 3 ints, 6 ints, 5 pairs or one of "
            f"{PADDING_ALGORITHMS}, got {padding!r}"
        )
    if min(lo + hi) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    if max(lo + hi) > ARG_MAX:
        raise ValueError(f"padding must be <= {ARG_MAX} in every dimension, got {padding!r}")
    return lo, hi


def _padding_algorithm(padding):
    name = padding.upper()
    if name not in PADDING_ALGORITHMS:
        raise ValueError(
            f"padding must be an int, 3 ints, 6 ints, 5 pairs or one of {PADDING_ALGORITHMS} "
            f"(case-insensitive), got {padding!r}"
        )
    return name


def _check_output_size(output_size):
    if output_size is None:
        return None
    return _triple(output_size, "output_size", 1)


def _spatial(shape, data_format):
    return tuple(shape[2:]) if data_format == "NCDHW" else tuple(shape[1:4])


def _channels(shape, data_format):
    return shape[1] if data_format == "NCDHW" else shape[4]


# ------------------------------------------------------------------------------ resolve


class _Unfrozen(Exception):
    pass


_PLAIN_TYPES = (int, str, type(None))


def _freeze(value):
    """A hashable cache key for a plain argument; raises _Unfrozen for anything else.

    Only exact ints, strings, None and (nested) lists/tuples of them are keyed: a bool or a
    NumPy scalar compares equal to an int and must not share that int's cached plan.
    """
    if type(value) in _PLAIN_TYPES:
        return value
    if type(value) is tuple or type(value) is list:
        return tuple(map(_freeze, value))
    raise _Unfrozen


def arguments_key(*args: Any) -> Optional[Tuple[Any, ...]]:
    """A hashable key that equals another exactly when the plain arguments ``args`` (the
    geometry arguments of :func:`resolve`) are the same; None when some argument is not
    plain (a NumPy int, a bool, a float...), whose plan must not be cached."""
    try:
        return tuple(map(_freeze, args))
    except _Unfrozen:
        return None


@functools.lru_cache(maxsize=256)
def _resolve_cached(*key):
    return _resolve(*key)


def resolve(x_shape: Any, w_shape: Any, stride: Any = 1, padding: Any = 0,
            output_padding: Any = 0, groups: Any = 1, dilation: Any = 1,
            output_size: Any = None, data_format: Any = "NCDHW") -> Plan:
    """Validate the arguments of a 3D transposed convolution and return its :class:`Plan`.

    ``x_shape`` is ``[N, C_in, D, H, W]`` (``[N, D, H, W, C_in]`` for NDHWC) and
    ``w_shape`` is ``[C_in, C_out / groups, kD, kH, kW]``. Raises ``ValueError`` or
    ``TypeError`` naming the offending argument and its value. Plans of plain Python
    arguments are cached, so a repeated geometry costs one dictionary lookup.

    >>> resolve((1, 4, 8, 8, 8), (4, 2, 3, 3, 3), stride=2, padding=1, output_padding=1).out_size
    (16, 16, 16)
    """
    args = (x_shape, w_shape, stride, padding, output_padding, groups, dilation, output_size,
            data_format)
    key = arguments_key(*args)
    if key is None:
        return _resolve(*args)
    return _resolve_cached(*key)


def _resolve(x_shape, w_shape, stride, padding, output_padding, groups, dilation, output_size,
             data_format):
    data_format = check_data_format(data_format)
    x_shape = _shape_tuple(x_shape, "x")
    w_shape = _shape_tuple(w_shape, "weight")
    if len(x_shape) != 5:
        raise ValueError(
            f"x must be a 5-D array ({data_format}), got shape {x_shape}"
        )
    if len(w_shape) != 5:
        raise ValueError(
            f"weight must be a 5-D array [C_in, C_out/groups, kD, kH, kW], got shape {w_shape}"
        )
    groups = _int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    n = x_shape[0]
    c_in = _channels(x_shape, data_format)
    in_size = _spatial(x_shape, data_format)
    if c_in < 1 or min(in_size) < 1:
        raise ValueError(
            f"x must have at least one channel and a non-empty volume, got shape {x_shape} "
            f"({data_format})"
        )
    if w_shape[0] != c_in:
        raise ValueError(
            f"weight has {w_shape[0]} input channels (shape {w_shape}) but x has {c_in} "
            f"(shape {x_shape}, {data_format})"
        )
    if min(w_shape[1:]) < 1:
        raise ValueError(f"weight must have no empty dimension, got shape {w_shape}")
    if c_in % groups:
        raise ValueError(
            f"groups={groups} must divide the number of input channels {c_in}"
        )
    kernel = tuple(w_shape[2:])
    c_out = w_shape[1] * groups
    stride = _triple(stride, "stride", 1)
    dilation = _triple(dilation, "dilation", 1)
    output_padding = _triple(output_padding, "output_padding", 0)
    output_size = _check_output_size(output_size)
    if output_size is not None and any(output_padding):
        raise ValueError(
            f"output_padding={output_padding} and output_size={output_size} are mutually "
            "exclusive: give one of them"
        )
    explicit = _explicit_padding(padding, data_format)
    onnx_same = False
    if explicit is None:
        algorithm = _padding_algorithm(padding)
        if algorithm == "SAME":
            # Paddle's rule for the transposed op: dilation is ignored (forced to 1) and the
            # padding is the one a forward 'SAME' convolution of this kernel would use.
            dilation = (1, 1, 1)
            lo, hi = [], []
            for i, k, s in zip(in_size, kernel, stride):
                pad_sum = max((-(-i // s) - 1) * s + k - i, 0)
                lo.append(pad_sum // 2)
                hi.append(pad_sum - pad_sum // 2)
            lo, hi = tuple(lo), tuple(hi)
        elif algorithm == "VALID":
            lo = hi = (0, 0, 0)
        else:
            onnx_same = True
            lo, hi = [], []
            for i, k, s, d, op in zip(in_size, kernel, stride, dilation, output_padding):
                total = max(s * (i - 1) + op + (k - 1) * d + 1 - i * s, 0)
                small = total // 2
                lo.append(small if algorithm == "SAME_UPPER" else total - small)
                hi.append(total - lo[-1])
            lo, hi = tuple(lo), tuple(hi)
    else:
        lo, hi = explicit
    for a in range(3):
        if output_padding[a] >= max(stride[a], dilation[a]):
            raise ValueError(
                f"output_padding must be smaller than max(stride, dilation) in every "
                f"dimension, got output_padding={output_padding} with stride={stride} "
                f"and dilation={dilation}"
            )
    base = tuple(
        (i - 1) * s - l - h + d * (k - 1) + 1
        for i, s, l, h, d, k in zip(in_size, stride, lo, hi, dilation, kernel)
    )
    if onnx_same:
        # ONNX: the output is in * stride; a kernel too small to reach it is extended on the
        # high side, like output_padding.
        base = tuple(i * s for i, s in zip(in_size, stride))
        out_size = base
    else:
        out_size = tuple(b + op for b, op in zip(base, output_padding))
    if output_size is not None:
        for a in range(3):
            if not base[a] <= output_size[a] < base[a] + stride[a]:
                ranges = ", ".join(f"[{b}, {b + s})" for b, s in zip(base, stride))
                raise ValueError(
                    f"output_size={output_size} is out of range: each dimension must lie in "
                    f"[D', D' + stride), here {ranges}"
                )
        out_size = output_size
    if min(out_size) < 1:
        raise ValueError(
            f"the output size {out_size} must be >= 1 in every dimension (input size "
            f"{in_size}, kernel {kernel}, stride {stride}, padding lo={lo} hi={hi}, "
            f"dilation {dilation})"
        )
    pad_hi = tuple(
        (i - 1) * s - l + d * (k - 1) + 1 - o
        for i, s, l, d, k, o in zip(in_size, stride, lo, dilation, kernel, out_size)
    )
    cig, cog = c_in // groups, w_shape[1]
    if cog * int(np.prod(kernel)) > _BLAS_INT_MAX or cig * int(np.prod(kernel)) > _BLAS_INT_MAX:
        raise ValueError(f"weight shape {w_shape} is too large for one group's matrix")
    return Plan(n, c_in, c_out, groups, in_size, kernel, stride, dilation, lo, pad_hi,
                out_size, data_format)


def _shape_tuple(shape, name):
    try:
        return tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} shape must be a sequence of ints, got {shape!r}") from None


def kernel_size_from_output_size(in_size: Any, output_size: Any, stride: Any = 1,
                                 padding: Any = 0, dilation: Any = 1,
                                 data_format: Any = "NCDHW") -> Tuple[int, int, int]:
    """The kernel size that makes a transposed convolution produce ``output_size``.

    Per dimension ``k = (out - (in - 1) * s + lo + hi - 1) // d + 1`` (Paddle's rule for
    ``filter_size=None``). ``in_size`` holds the three spatial input sizes.

    >>> kernel_size_from_output_size((12, 32, 32), (23, 43, 43))
    (12, 12, 12)
    """
    check_data_format(data_format)
    in_size = _triple(tuple(in_size), "in_size", 1)
    output_size = _triple(output_size, "output_size", 1)
    stride = _triple(stride, "stride", 1)
    dilation = _triple(dilation, "dilation", 1)
    explicit = _explicit_padding(padding, data_format)
    if explicit is None:
        if _padding_algorithm(padding) != "VALID":
            raise ValueError(
                f"padding={padding!r} depends on the kernel size, so the kernel size cannot "
                "be derived from output_size; give filter_size or an explicit padding"
            )
        explicit = ((0, 0, 0), (0, 0, 0))
    lo, hi = explicit
    kernel = tuple(
        (o - (i - 1) * s + l + h - 1) // d + 1
        for o, i, s, l, h, d in zip(output_size, in_size, stride, lo, hi, dilation)
    )
    if min(kernel) < 1:
        raise ValueError(
            f"output_size={output_size} is too small for input size {in_size} with stride "
            f"{stride} and padding {padding!r}: the derived kernel size {kernel} is < 1"
        )
    return kernel


# ------------------------------------------------------------------------- phase tables


class PhaseTable(NamedTuple):
    """The phases of one spatial dimension that have both taps and outputs.

    ``phases[p] = (o0, q0, count, tap_start, tap_count)``: phase ``p`` owns the outputs
    ``o0, o0 + s, ..., o0 + (count - 1) * s``, whose grid index is ``q = q0 + j``; its
    taps are ``taps[tap_start : tap_start + tap_count]``, rows ``(t, m_t)`` meaning
    output grid index ``q`` reads input ``q - m_t`` through kernel tap ``t``.
    ``covers_all`` is False when some outputs receive no tap (they hold only the bias).
    """

    phases: np.ndarray
    taps: np.ndarray
    covers_all: bool


@functools.lru_cache(maxsize=1024)
def _phase_table_1d(in_size, out_size, kernel, stride, dilation, pad_lo):
    by_phase = {}
    # Iterate over taps, not phases: a huge stride has few taps but many empty phases.
    for t in range(kernel):
        by_phase.setdefault((t * dilation) % stride, []).append(t)
    phases, taps = [], []
    for r in sorted(by_phase):
        q0 = -((r - pad_lo) // stride)  # ceil((pad_lo - r) / stride): first q with o >= 0
        o0 = q0 * stride + r - pad_lo
        if o0 >= out_size:
            continue
        count = (out_size - 1 - o0) // stride + 1
        phases.append((o0, q0, count, len(taps), len(by_phase[r])))
        taps.extend((t, (t * dilation - r) // stride) for t in by_phase[r])
    covered = sum(p[2] for p in phases)
    phases = np.array(phases, dtype=np.intp).reshape(-1, 5)
    taps = np.array(taps, dtype=np.intp).reshape(-1, 2)
    phases.setflags(write=False)
    taps.setflags(write=False)
    return PhaseTable(phases, taps, covered == out_size)


def phase_tables(plan):
    """One :class:`PhaseTable` per spatial dimension (D, H, W) of ``plan``."""
    return tuple(
        _phase_table_1d(plan.in_size[a], plan.out_size[a], plan.kernel[a], plan.stride[a],
                        plan.dilation[a], plan.pad_lo[a])
        for a in range(3)
    )


# ------------------------------------------------------------------ ranges of chunks


def chunk_input_range(in_size: int, kernel: int, stride: int, dilation: int, pad_lo: int,
                      o0: int, o1: int) -> Tuple[int, int, int, int]:
    """The inputs ``[i0, i1)`` that the outputs ``[o0, o1)`` of one spatial dimension read,
    and the padding ``(lo_c, hi_c)`` of the call on ``x[i0:i1]`` whose output is exactly
    those outputs.

    Output ``o`` reads input ``i`` when ``i * s + t * d = o + lo`` for a tap ``t``, so with
    the extent ``E = (k - 1) * d``::

        i0   = max(0, min(ceil((o0 + lo - E) / s), floor((o0 + lo) / s)))
        i1   = min(I, floor((o1 - 1 + lo) / s) + 1)
        lo_c = o0 + lo - i0 * s
        hi_c = (i1 - 1) * s - lo + E + 1 - o1

    ``hi_c`` may be negative: the call then takes ``output_padding = -hi_c`` (always below
    the stride). ``i1 <= i0`` means that no input reaches these outputs (they hold only
    the bias); ``lo_c`` and ``hi_c`` mean nothing then. ``pad_lo`` is the plan's
    effective low padding, ``dilation`` its effective dilation.

    >>> chunk_input_range(8, 3, 2, 1, 1, 4, 8)   # outputs 4..7 of a 8 -> 16 upsampling
    (2, 5, 1, 2)
    """
    extent = (kernel - 1) * dilation
    s = stride
    i0 = max(0, min(-(-(o0 + pad_lo - extent) // s), (o0 + pad_lo) // s))
    i1 = min(in_size, (o1 - 1 + pad_lo) // s + 1)
    lo_c = o0 + pad_lo - i0 * s
    hi_c = (i1 - 1) * s - pad_lo + extent + 1 - o1
    return i0, i1, lo_c, hi_c


def grad_input_output_range(out_size: int, kernel: int, stride: int, dilation: int,
                            pad_lo: int, i0: int, i1: int) -> Tuple[int, int]:
    """The outputs ``[o0, o1)`` (one spatial dimension) that the gradient of inputs
    ``[i0, i1)`` reads, ``o0`` rounded down to a multiple of the stride; ``o1 <= o0`` when
    those inputs reach no output (their gradient is zero).

    Input ``i`` reaches outputs ``i * s - lo + [0, E]``; on the output range
    ``[o0, o1)``, :func:`chunk_input_range` gives the inputs a call covers, a range that
    holds every input of ``[i0, i1)`` reaching some output. With ``o0`` a multiple of
    the stride the call's low padding is congruent to ``lo`` modulo the stride: its tap
    phases are those of the whole call.

    >>> grad_input_output_range(16, 3, 2, 1, 1, 2, 5)
    (2, 10)
    """
    extent = (kernel - 1) * dilation
    o0 = max(0, i0 * stride - pad_lo) // stride * stride
    o1 = min(out_size, (i1 - 1) * stride - pad_lo + extent + 1)
    return o0, o1
