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
import numpy as np

from ..autograd import Variable
from ..dygraph.nn import Conv3DTransposeFunction

__all__ = ["conv3d_transpose"]


def _as_tensor(value, name):
    if isinstance(value, Variable):
        return value
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        return Variable(value, stop_gradient=True)  # a constant: no gradient for it
    raise TypeError(f"conv3d_transpose: {name} must be a Tensor (see conv3dt.to_tensor), "
                    f"but received {type(value).__name__}")


def conv3d_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, output_size=None, data_format="NCDHW", name=None):
    """3D transposed convolution of Tensors, as ``paddle.nn.functional.conv3d_transpose``.

    ``x`` ``[N, C_in, D, H, W]`` (``NDHWC`` with ``data_format``), ``weight``
    ``[C_in, C_out/groups, kD, kH, kW]``, ``bias`` ``[C_out]`` or None. Per spatial dim
    the output size is ``(in - 1) * stride - pad_lo - pad_hi + dilation * (k - 1) + 1 +
    output_padding``, or ``output_size`` (in ``[that, that + stride)``, and then
    ``output_padding`` must be 0). ``padding``: int, 3 ints, 6 ints, 5 pairs, ``'SAME'``,
    ``'VALID'``. Gradients reach every argument with ``stop_gradient=False``. NumPy (or
    CuPy) arrays are accepted as constants. ``name`` is ignored.
    """
    inputs = [_as_tensor(x, "x"), _as_tensor(weight, "weight")]
    if bias is not None:
        inputs.append(_as_tensor(bias, "bias"))
    conv = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                dilation=dilation, output_size=output_size, data_format=data_format)
    return Conv3DTransposeFunction.apply(*inputs, conv=conv)
