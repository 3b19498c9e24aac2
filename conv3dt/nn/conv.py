"""``Conv3DTranspose`` with Paddle 2.x/3.x's signature (``paddle.nn.Conv3DTranspose``)."""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, overload

from .. import _tensor
from .._typing import DataFormat, IntTriple, PaddingArg
from ..autograd import Parameter, Variable
from ..dygraph.layers import Layer
from ..dygraph.nn import _as_triple
from . import functional as F

if TYPE_CHECKING:
    import dask.array

    from ..param_attr import ParamAttrLike
    from .functional import TensorLike

__all__ = ["Conv3DTranspose"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"Conv3DTranspose: {name} must be a positive int, "
                         f"but received {value!r}")
    return int(value)


class Conv3DTranspose(Layer):
    """3D transposed convolution layer, as ``paddle.nn.Conv3DTranspose`` (Paddle 2.x/3.x):
    ``out = conv3d_transpose(x, weight) + bias``.

    Per spatial dimension the output has ``(in - 1) * stride - pad_lo - pad_hi +
    dilation * (k - 1) + 1 + output_padding`` elements, or the ``output_size`` given to
    :meth:`forward`.

    Parameters
    ----------
    in_channels, out_channels : int
        C_in and C_out, both divisible by ``groups``.
    kernel_size : int or sequence of 3 ints
        The kernel's size ``(kD, kH, kW)``.
    stride : int or sequence of 3 ints, default 1
        The stride of the transposed convolution (the input's upsampling factor).
    padding : int, sequence of ints, sequence of pairs or str, default 0
        An int, 3 ints, 6 ints ``[d_lo, d_hi, h_lo, h_hi, w_lo, w_hi]``, 5 pairs (the
        batch and channel pairs ``[0, 0]``), or ``'SAME'``/``'VALID'`` (Paddle's rules,
        case-insensitive).
    output_padding : int or sequence of 3 ints, default 0
        Elements added at the high end of each dimension; used when :meth:`forward` gets
        no ``output_size``. ``0 <= output_padding < max(stride, dilation)``.
    dilation : int or sequence of 3 ints, default 1
        The spacing of the kernel's taps.
    groups : int, default 1
        Channel groups: group ``g`` maps input channels ``g*C_in/groups...`` to output
        channels ``g*C_out/groups...``.
    weight_attr : ParamAttr, initializer or str, optional
        How the weight is created (a :class:`conv3dt.param_attr.ParamAttr`, an
        initializer, or a name). ``False`` is refused, as in Paddle.
    bias_attr : ParamAttr, initializer, str or False, optional
        How the bias is created; ``False``: no bias.
    data_format : {'NCDHW', 'NDHWC'}, default 'NCDHW'
        The layout of the input and of the output.

    Attributes
    ----------
    weight : conv3dt.autograd.Parameter
        ``[C_in, C_out/groups, kD, kH, kW]``, of the default dtype
        (``conv3dt.get_default_dtype()``, float32).
    bias : conv3dt.autograd.Parameter or None
        ``[C_out]``; None with ``bias_attr=False``.

    Raises
    ------
    ValueError
        If a channel count or ``groups`` is not a positive int, a channel count is not
        divisible by ``groups``, ``weight_attr`` is False, ``data_format`` is neither
        layout, or ``kernel_size`` is not 1 or 3 positive ints. The other geometry
        arguments are checked at the first call, with the same messages as
        :func:`conv3dt.functional.conv3d_transpose`'s.

    Notes
    -----
    Default initialization, as in Paddle 3.x: ``paddle.nn.layer.conv._ConvNd`` passes a
    default initializer ``Normal(0, std)``, ``std = (2 / (prod(kernel_size) *
    in_channels)) ** 0.5``, only to the *non*-transposed convolutions; for the
    transposed ones (``transposed=True``) it passes None, so ``create_parameter`` falls
    back to ``ParamAttr._set_default_param_initializer``, which is ``Xavier()``
    (uniform). So the weight is drawn from ``U(-limit, limit)``, ``limit = sqrt(6 /
    (fan_in + fan_out))`` with Paddle's fans of the weight's shape: ``fan_in =
    C_out/groups * kD*kH*kW``, ``fan_out = C_in * kD*kH*kW``; the bias is 0. (The same
    as the 1.x layer's.)

    Examples
    --------
    >>> import numpy as np, conv3dt as paddle
    >>> conv = paddle.nn.Conv3DTranspose(4, 6, (3, 3, 3))
    >>> y = conv(paddle.to_tensor(np.ones((2, 4, 8, 8, 8), "float32")))
    >>> y.shape, conv.weight.shape
    ((2, 6, 10, 10, 10), (4, 6, 3, 3, 3))
    """

    weight: Parameter
    bias: Optional[Parameter]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntTriple,
                 stride: IntTriple = 1, padding: PaddingArg = 0,
                 output_padding: IntTriple = 0, dilation: IntTriple = 1, groups: int = 1,
                 weight_attr: ParamAttrLike = None, bias_attr: ParamAttrLike = None,
                 data_format: DataFormat = "NCDHW") -> None:
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
        self._kernel_size: Tuple[int, ...] = _as_triple(kernel_size, "kernel_size")
        self._groups = groups
        self._data_format = data_format
        self.output_padding = output_padding
        # Passed through untouched: the core validates them (with their names).
        self._stride, self._padding, self._dilation = stride, padding, dilation
        # No default_initializer: Layer.create_parameter's fallback is Paddle's, Xavier()
        # for a weight and Constant(0) for a bias (see the class docstring).
        weight = self.create_parameter(
            [in_channels, out_channels // groups, *self._kernel_size], attr=weight_attr)
        assert weight is not None  # weight_attr=False is refused above
        self.weight = weight
        self.bias = self.create_parameter([out_channels], attr=bias_attr, is_bias=True)

    @overload
    def forward(self, x: TensorLike, output_size: Optional[IntTriple] = None) -> Variable: ...
    @overload
    def forward(self, x: dask.array.Array,
                output_size: Optional[IntTriple] = None) -> dask.array.Array: ...

    def forward(self, x: Any, output_size: Optional[IntTriple] = None) -> Any:
        """The layer's output for ``x``; called by ``layer(x)``.

        Parameters
        ----------
        x : conv3dt.autograd.Variable, numpy.ndarray or dask.array.Array
            ``[N, C_in, D, H, W]`` (``[N, D, H, W, C_in]`` for ``'NDHWC'``) of the
            parameters' dtype. A NumPy (or CuPy) array is a constant; a dask array is
            computed lazily, block by block, by :func:`conv3dt.dask.layer_forward`
            (inference only: inside ``conv3dt.no_grad()``).
        output_size : int or sequence of 3 ints, optional
            The output's spatial size, in ``[D', D' + stride)`` per dimension (``D'`` the
            size without ``output_padding``); it replaces ``output_padding``.

        Returns
        -------
        conv3dt.autograd.Variable or dask.array.Array
            ``[N, C_out, D_out, H_out, W_out]`` (or NDHWC), recorded for ``backward()``
            when the parameters or ``x`` need gradients; a lazy dask array for a dask
            input.

        Raises
        ------
        ValueError
            For shapes or a geometry that do not fit (the message names the argument).
        TypeError
            For an input that is neither a Tensor nor an array, or of another dtype.
        RuntimeError
            For a dask input while gradients are recorded.
        """
        output_padding = self.output_padding if output_size is None else 0
        conv: Dict[str, Any] = dict(
            stride=self._stride, padding=self._padding, output_padding=output_padding,
            groups=self._groups, dilation=self._dilation, output_size=output_size,
            data_format=self._data_format)
        if type(x).__module__.startswith("dask.array"):
            # inference on a dask array, block by block (conv3dt.dask; no_grad only)
            from .. import dask as conv3dt_dask

            return conv3dt_dask.layer_forward(x, self.weight, self.bias, conv=conv,
                                              layer="Conv3DTranspose")
        return F.conv3d_transpose(x, self.weight, bias=self.bias, **conv)

    if TYPE_CHECKING:
        # Layer.__call__ runs forward(); these tell type checkers what it returns.
        @overload
        def __call__(self, x: TensorLike,
                     output_size: Optional[IntTriple] = None) -> Variable: ...
        @overload
        def __call__(self, x: dask.array.Array,
                     output_size: Optional[IntTriple] = None) -> dask.array.Array: ...
        def __call__(self, x: Any, output_size: Optional[IntTriple] = None) -> Any: ...

    def extra_repr(self) -> str:
        return (f"{self._in_channels}, {self._out_channels}, "
                f"kernel_size={list(self._kernel_size)}, stride={self._stride}, "
                f"padding={self._padding}, output_padding={self.output_padding}, "
                f"dilation={self._dilation}, groups={self._groups}, "
                f"data_format={self._data_format}")

    def __repr__(self) -> str:
        return f"Conv3DTranspose({self.extra_repr()})"
