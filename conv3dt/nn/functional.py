"""``conv3dt.nn.functional``: operations on Tensors with gradients, as ``paddle.nn.functional``.

``conv3d_transpose`` here takes and returns Tensors and is recorded for ``backward()``;
it is the same autograd node as the layers use, around the array function
``conv3dt.functional.conv3d_transpose`` (which takes and returns plain arrays).

Example::

    >>> import numpy as np, conv3dt
    >>> import conv3dt.nn.functional as F
    >>> x = conv3dt.to_tensor(np.ones((1, 2, 3, 3, 3), "float32"))
    >>> w = conv3dt.to_tensor(np.ones((2, 4, 2, 2, 2), "float32"), stop_gradient=False)
    >>> y = F.conv3d_transpose(x, w, stride=2)
    >>> y.shape
    (1, 4, 6, 6, 6)
    >>> conv3dt.sum(y).backward()
    >>> float(w.grad.numpy()[0, 0, 0, 0, 0])    # every tap sees all 27 ones
    27.0
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
from numpy.typing import NDArray

from .._typing import DataFormat, IntTriple, PaddingArg
from ..autograd import Variable
from ..dygraph.nn import Conv3DTransposeFunction

__all__ = ["conv3d_transpose"]

# What the functions of Tensors take: a Tensor, or a NumPy array (a constant). CuPy arrays
# are taken too at run time; their type is left out, since where CuPy is not installed a
# type checker would see it as Any, and then anything, a dask array too, as a Tensor.
TensorLike = Union[Variable, "NDArray[Any]"]


def _as_tensor(value: Any, name: str) -> Variable:
    if isinstance(value, Variable):
        return value
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        return Variable(value, stop_gradient=True)  # a constant: no gradient for it
    raise TypeError(f"conv3d_transpose: {name} must be a Tensor (see conv3dt.to_tensor), "
                    f"but received {type(value).__name__}")


def conv3d_transpose(x: TensorLike, weight: TensorLike, bias: Optional[TensorLike] = None,
                     stride: IntTriple = 1, padding: PaddingArg = 0,
                     output_padding: IntTriple = 0, groups: int = 1, dilation: IntTriple = 1,
                     output_size: Optional[IntTriple] = None,
                     data_format: DataFormat = "NCDHW", name: Optional[str] = None) -> Variable:
    """3D transposed convolution of Tensors, as ``paddle.nn.functional.conv3d_transpose``.

    Per spatial dimension the output has ``(in - 1) * stride - pad_lo - pad_hi +
    dilation * (k - 1) + 1 + output_padding`` elements, or ``output_size``. Gradients
    reach every argument with ``stop_gradient=False``.

    Parameters
    ----------
    x : conv3dt.autograd.Variable
        ``[N, C_in, D, H, W]`` (``[N, D, H, W, C_in]`` for ``data_format='NDHWC'``),
        float32 or float64.
    weight : conv3dt.autograd.Variable
        ``[C_in, C_out/groups, kD, kH, kW]``, of ``x``'s dtype.
    bias : conv3dt.autograd.Variable, optional
        ``[C_out]``, added to every output position of its channel.
    stride : int or sequence of 3 ints, default 1
        The stride of the transposed convolution.
    padding : int, sequence of ints, sequence of pairs or str, default 0
        An int, 3 ints, 6 ints ``[d_lo, d_hi, h_lo, h_hi, w_lo, w_hi]``, 5 pairs,
        ``'SAME'``/``'VALID'`` (Paddle's) or ``'SAME_UPPER'``/``'SAME_LOWER'`` (ONNX's).
    output_padding : int or sequence of 3 ints, default 0
        Elements added at the high end of each dimension; must be 0 with ``output_size``.
    groups : int, default 1
        Channel groups.
    dilation : int or sequence of 3 ints, default 1
        The spacing of the kernel's taps.
    output_size : int or sequence of 3 ints, optional
        The output's spatial size, in ``[D', D' + stride)`` per dimension (``D'`` the
        size without ``output_padding``).
    data_format : {'NCDHW', 'NDHWC'}, default 'NCDHW'
        The layout of ``x`` and of the result.
    name : str, optional
        Accepted for Paddle's signature and ignored.

    Returns
    -------
    conv3dt.autograd.Variable
        ``[N, C_out, D_out, H_out, W_out]`` (or NDHWC), of ``x``'s dtype, on its place.

    Raises
    ------
    TypeError
        If ``x``, ``weight`` or ``bias`` is neither a Tensor nor an array, or dtypes
        differ.
    ValueError
        For shapes or a geometry that do not fit (the message names the argument).

    Notes
    -----
    NumPy (or CuPy) arrays are accepted as constants (``stop_gradient=True``). The
    arrays are computed by :func:`conv3dt.functional.conv3d_transpose`; ``backward()``
    calls :func:`conv3dt.functional.conv3d_transpose_backward` for the gradients that are
    needed only.
    """
    inputs = [_as_tensor(x, "x"), _as_tensor(weight, "weight")]
    if bias is not None:
        inputs.append(_as_tensor(bias, "bias"))
    conv = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                dilation=dilation, output_size=output_size, data_format=data_format)
    return Conv3DTransposeFunction.apply(*inputs, conv=conv)
