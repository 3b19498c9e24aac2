"""``Conv3DTranspose`` with Paddle 2.x/3.x's signature (``paddle.nn.Conv3DTranspose``)."""
import numbers

from .. import _tensor
from ..dygraph.layers import Layer
from ..dygraph.nn import _as_triple
from . import functional as F

__all__ = ["Conv3DTranspose"]


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"Conv3DTranspose: {name} must be a positive int, "
                         f"but received {value!r}")
    return int(value)


class Conv3DTranspose(Layer):
    """3D transposed convolution layer, as ``paddle.nn.Conv3DTranspose`` (Paddle 2.x/3.x):
    ``out = conv3d_transpose(x, weight) + bias``.

    - ``in_channels``, ``out_channels``: C_in and C_out (both divisible by ``groups``).
    - ``kernel_size``, ``stride``, ``dilation``: int or 3 ints.
    - ``padding``: int, 3 ints, 6 ints ``[d_lo, d_hi, h_lo, h_hi, w_lo, w_hi]``, 5 pairs,
      ``'SAME'``/``'VALID'`` (Paddle's rules).
    - ``output_padding``: int or 3 ints, used when ``forward`` gets no ``output_size``.
    - ``weight_attr``, ``bias_attr``: ``ParamAttr`` (or an initializer, or a name);
      ``bias_attr=False``: no bias. ``weight_attr=False`` is refused, as in Paddle.
    - ``data_format``: ``'NCDHW'`` or ``'NDHWC'``.

    Parameters: ``weight`` ``[C_in, C_out/groups, kD, kH, kW]`` and ``bias`` ``[C_out]``,
    of the default dtype (``conv3dt.get_default_dtype()``, float32).

    Default initialization, as in Paddle 3.x: ``paddle.nn.layer.conv._ConvNd`` passes a
    default initializer ``Normal(0, std)``, ``std = (2 / (prod(kernel_size) *
    in_channels)) ** 0.5``, only to the *non*-transposed convolutions; for the
    transposed ones (``transposed=True``) it passes None, so ``create_parameter`` falls
    back to ``ParamAttr._set_default_param_initializer``, which is ``Xavier()``
    (uniform). So the weight is drawn from ``U(-limit, limit)``, ``limit = sqrt(6 /
    (fan_in + fan_out))`` with Paddle's fans of the weight's shape: ``fan_in =
    C_out/groups * kD*kH*kW``, ``fan_out = C_in * kD*kH*kW``; the bias is 0. (The same
    as the 1.x layer's.)

    ``forward(x, output_size=None)``: ``output_size`` (int or 3 ints) picks the output
    size in ``[D', D' + stride)`` instead of ``output_padding``.

    >>> import numpy as np, conv3dt as paddle
    >>> conv = paddle.nn.Conv3DTranspose(4, 6, (3, 3, 3))
    >>> y = conv(paddle.to_tensor(np.ones((2, 4, 8, 8, 8), "float32")))
    >>> y.shape, conv.weight.shape
    ((2, 6, 10, 10, 10), (4, 6, 3, 3, 3))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, groups=1, weight_attr=None, bias_attr=None,
                 data_format="NCDHW"):
        super().__init__(dtype=_tensor.get_default_dtype())
        in_channels = _positive_int(in_channels, "in_channels")
        out_channels = _positive_int(out_channels, "out_channels")
        groups = _positive_int(groups, "groups")
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(f"Conv3DTranspose: {label} ({value}) must be divisible by "
                                 f"groups ({groups})")
        if weight_attr is False:
            raise ValueError("Conv3DTranspose: weight_attr should not be False in Conv "
                             "(a convolution needs its weight)")
        if data_format not in ("NCDHW", "NDHWC"):
            raise ValueError(f"Conv3DTranspose: data_format must be 'NCDHW' or 'NDHWC', "
                             f"but received {data_format!r}")
        self._in_channels, self._out_channels = in_channels, out_channels
        self._kernel_size = _as_triple(kernel_size, "kernel_size")
        self._groups = groups
        self._data_format = data_format
        self.output_padding = output_padding
        # Passed through untouched: the core validates them (with their names).
        self._stride, self._padding, self._dilation = stride, padding, dilation
        # No default_initializer: Layer.create_parameter's fallback is Paddle's, Xavier()
        # for a weight and Constant(0) for a bias (see the class docstring).
        self.weight = self.create_parameter(
            [in_channels, out_channels // groups, *self._kernel_size], attr=weight_attr)
        self.bias = self.create_parameter([out_channels], attr=bias_attr, is_bias=True)

    def forward(self, x, output_size=None):
        output_padding = self.output_padding if output_size is None else 0
        conv = dict(stride=self._stride, padding=self._padding, output_padding=output_padding,
                    groups=self._groups, dilation=self._dilation, output_size=output_size,
                    data_format=self._data_format)
        if type(x).__module__.startswith("dask.array"):
            # inference on a dask array, block by block (conv3dt.dask; no_grad only)
            from .. import dask as conv3dt_dask

            return conv3dt_dask.layer_forward(x, self.weight, self.bias, conv=conv,
                                              layer="Conv3DTranspose")
        return F.conv3d_transpose(x, self.weight, bias=self.bias, **conv)

    def extra_repr(self):
        return (f"{self._in_channels}, {self._out_channels}, "
                f"kernel_size={list(self._kernel_size)}, stride={self._stride}, "
                f"padding={self._padding}, output_padding={self.output_padding}, "
                f"dilation={self._dilation}, groups={self._groups}, "
                f"data_format={self._data_format}")

    def __repr__(self):
        return f"Conv3DTranspose({self.extra_repr()})"
