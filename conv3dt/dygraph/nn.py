"""``Conv3DTranspose``, the layer of ``paddle.fluid.dygraph.nn``, on conv3dt's kernels."""
from __future__ import annotations

import numbers
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, List, Literal, Optional, Tuple, Union,
                    overload)

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _activations, functional
from .._geometry import kernel_size_from_output_size
from .._typing import DataFormat, IntTriple, PaddingArg, SizeArg
from ..autograd import Activation, Function, Parameter, Variable
from .base import to_variable
from .layers import Layer, ParamAttrArg, WeightAttrArg

if TYPE_CHECKING:
    import dask.array

# The activations a layer applies after its bias (conv3dt._activations).
ActivationName = Literal["relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid",
                         "hard_sigmoid", "swish", "hard_swish", "tanh", "softplus",
                         "softsign"]

__all__ = ["Conv3DTranspose"]


class Conv3DTransposeFunction(Function):
    """Autograd node of ``functional.conv3d_transpose``; inputs (x, weight[, bias]).

    attrs: ``conv`` (the keyword arguments shared by forward and backward).
    """

    conv: Dict[str, Any]  # attr

    def forward(self, x: Any, weight: Any, bias: Any = None) -> Any:
        self.save(x, weight)
        self.has_bias = bias is not None
        return functional.conv3d_transpose(x, weight, bias, **self.conv)

    def backward(self, grad: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        x, weight = self.saved
        want = (needs[0], needs[1], self.has_bias and needs[2])
        gx, gw, gb = functional.conv3d_transpose_backward(grad, x, weight, needs=want, **self.conv)
        return (gx, gw, gb) if self.has_bias else (gx, gw)


def _as_triple(value: Any, name: str) -> Tuple[int, int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        values: Tuple[Any, ...] = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or 3 ints, but received {value!r}") from None
    if len(values) != 3 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                   and int(v) > 0 for v in values):
        raise ValueError(f"{name} must be a positive int or 3 positive ints, "
                         f"but received {values!r}")
    return int(values[0]), int(values[1]), int(values[2])


def _is_dask_array(value: Any) -> bool:
    """Whether value is a dask array (told without importing dask)."""
    return type(value).__module__.startswith("dask.array")


class Conv3DTranspose(Layer):
    """3D transposed convolution ("deconvolution") layer, as Paddle's dygraph
    ``Conv3DTranspose``: ``out = act(conv3d_transpose(x, weight) + bias)``.

    Shapes (NCDHW; NDHWC with ``data_format="NDHWC"``): input ``[N, C_in, D, H, W]``,
    weight ``[C_in, C_out/groups, kD, kH, kW]``, bias ``[C_out]``, output
    ``[N, C_out, D_out, H_out, W_out]`` with, per spatial dim,

        D_out = (D - 1) * stride - pad_lo - pad_hi + dilation * (kD - 1) + 1 (+ output_padding)

    Parameters
    ----------
    num_channels : int or str
        C_in. A str instead is Paddle 1.5's ``name_scope`` form: C_in is then read from
        the first input, and the parameters are created at that first call.
    num_filters : int
        C_out.
    filter_size : int or sequence of 3 ints, optional
        The kernel size. None requires ``output_size``: the kernel is then
        ``k = (out - (in-1)*stride + pad_lo + pad_hi - 1) // dilation + 1`` from the first
        input (parameters are created at the first call).
    output_size : int or sequence of 3 ints, optional
        With ``filter_size`` it picks an output size in ``[D_out, D_out + stride)``
        (checked at each call; ValueError naming the range).
    padding : int, sequence of ints or str, default 0
        An int, 3 ints, 6 ints ``[d_lo, d_hi, h_lo, h_hi, w_lo, w_hi]``, 5 pairs,
        ``'SAME'``/``'VALID'`` (Paddle's), ``'SAME_UPPER'``/``'SAME_LOWER'`` (ONNX's).
    stride, dilation : int or sequence of 3 ints, default 1
    groups : int, optional
        None means 1.
    param_attr : ParamAttr, optional
        The weight's name, initializer, learning rate and regularizer. Default init:
        Xavier-uniform with ``limit = sqrt(6 / (fan_in + fan_out))``,
        ``fan_in = C_out/groups * kD*kH*kW``, ``fan_out = C_in * kD*kH*kW``.
    bias_attr : ParamAttr or False, optional
        The bias's (default init 0); False: no bias.
    use_cudnn : bool, default True
        Ignored (there is no cuDNN here); must be a bool.
    act : str, optional
        None or one of relu, relu6, leaky_relu, elu, selu, gelu, sigmoid, hard_sigmoid,
        swish, hard_swish, tanh, softplus, softsign, with Paddle's default attributes
        (e.g. leaky_relu alpha 0.02); applied after the bias, with its gradient.
    name : str, optional
        The layer's name scope.
    dtype : {'float32', 'float64'}, default 'float32'
        Of the parameters; inputs must have it.
    output_padding : int or sequence of 3 ints, default 0
        Keyword only (an extra of Paddle 2.x's), as in :func:`conv3dt.conv3d_transpose`.
    data_format : {'NCDHW', 'NDHWC'}, default 'NCDHW'
        Keyword only (an extra of Paddle 2.x's).

    Attributes
    ----------
    weight : Parameter
        ``[C_in, C_out/groups, kD, kH, kW]`` (None until the first call for a layer that
        infers its shape from its first input).
    bias : Parameter or None
        ``[C_out]``; None with ``bias_attr=False``.

    Raises
    ------
    TypeError
        A Paddle 2.x keyword (``in_channels``, ``kernel_size``...: use
        :class:`conv3dt.nn.Conv3DTranspose`), a ``use_cudnn`` that is not a bool, or a
        dtype other than float32/float64.
    ValueError
        A channel count or group count that is not a positive int, channels not
        divisible by ``groups``, or neither ``filter_size`` nor ``output_size``.

    Notes
    -----
    Difference from Paddle 1.8: its dygraph Conv3DTranspose silently skipped the bias
    although its docs say one is added; here a bias (``bias_attr`` None or a ParamAttr) is
    added, as the docs say. Use ``bias_attr=False`` for Paddle 1.8's numbers.

    Examples
    --------
    Paddle's own, with only the import changed:

        >>> import numpy
        >>> import conv3dt as fluid
        >>> import conv3dt.dygraph
        >>> with fluid.dygraph.guard():
        ...     data = numpy.random.random((5, 3, 12, 32, 32)).astype('float32')
        ...     conv3dTranspose = fluid.dygraph.nn.Conv3DTranspose(
        ...         'Conv3DTranspose', num_filters=12, filter_size=12, use_cudnn=False)
        ...     ret = conv3dTranspose(fluid.dygraph.base.to_variable(data))
        >>> ret.shape
        (5, 12, 23, 43, 43)
    """

    # Keywords that only Paddle 2.x's paddle.nn.Conv3DTranspose has. (output_padding and
    # data_format are accepted here too, as keyword-only extras with the same meaning.)
    _PADDLE2_ONLY: ClassVar[Dict[str, str]] = {
        "in_channels": "num_channels", "out_channels": "num_filters",
        "kernel_size": "filter_size", "weight_attr": "param_attr"}

    def __new__(cls, *args: Any, **kwargs: Any) -> Conv3DTranspose:
        # Checked before __init__ binds its arguments, so that a 2.x call gets this
        # message rather than "missing 2 required positional arguments".
        found = [k for k in kwargs if k in cls._PADDLE2_ONLY]
        if found:
            renames = ", ".join(f"{k}= (1.x: {cls._PADDLE2_ONLY[k]}=)" for k in found)
            raise TypeError(
                f"{cls.__name__}() got Paddle 2.x keyword argument(s) {renames}: "
                "conv3dt.dygraph.Conv3DTranspose has Paddle 1.x's signature "
                "(num_channels, num_filters, filter_size, output_size, padding, stride, "
                "...). For the 2.x signature (in_channels, out_channels, kernel_size, "
                "stride, padding, output_padding, ...) use conv3dt.nn.Conv3DTranspose")
        return super().__new__(cls)

    # The parameters (attributes registered by the Layer): ``weight`` is None until the
    # first call only for a layer that infers its shape from its first input.
    weight: Parameter
    bias: Optional[Parameter]

    def __init__(self, num_channels: Union[int, str], num_filters: int,
                 filter_size: Optional[IntTriple] = None, output_size: SizeArg = None,
                 padding: PaddingArg = 0, stride: IntTriple = 1, dilation: IntTriple = 1,
                 groups: Optional[int] = None, param_attr: WeightAttrArg = None,
                 bias_attr: ParamAttrArg = None, use_cudnn: bool = True,
                 act: Optional[ActivationName] = None, name: Optional[str] = None,
                 dtype: DTypeLike = "float32", *,
                 output_padding: IntTriple = 0, data_format: DataFormat = "NCDHW") -> None:
        name_scope = num_channels if isinstance(num_channels, str) else None
        super().__init__(name_scope=name or name_scope, dtype=dtype)
        if not isinstance(use_cudnn, bool):
            raise TypeError("use_cudnn should be True or False")
        try:
            self._dtype = np.dtype(dtype)
        except TypeError:
            self._dtype = None
        if self._dtype not in (np.float32, np.float64):
            raise TypeError(f"Conv3DTranspose: dtype must be 'float32' or 'float64', "
                            f"but received {dtype!r}")
        groups = 1 if groups is None else groups
        for label, value in (("num_filters", num_filters), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"Conv3DTranspose: {label} must be a positive int, "
                                 f"but received {value!r}")
        if name_scope is None:
            if (isinstance(num_channels, bool) or not isinstance(num_channels, numbers.Integral)
                    or num_channels <= 0):
                raise ValueError("Conv3DTranspose: num_channels must be a positive int (or a "
                                 f"name-scope str), but received {num_channels!r}")
            if num_channels % groups:
                raise ValueError(f"Conv3DTranspose: num_channels ({num_channels}) must be "
                                 f"divisible by groups ({groups})")
        if num_filters % groups:
            raise ValueError(f"Conv3DTranspose: num_filters ({num_filters}) must be divisible "
                             f"by groups ({groups})")
        if filter_size is None and output_size is None:
            raise ValueError("Conv3DTranspose: filter_size and output_size cannot both be None; "
                             "give the kernel size, or the output size to derive it from")
        self._num_channels: Optional[int] = (None if name_scope is not None
                                             else int(num_channels))
        self._num_filters = int(num_filters)
        self._filter_size: Optional[Tuple[int, int, int]] = (
            None if filter_size is None else _as_triple(filter_size, "filter_size"))
        self._groups = int(groups)
        self._act = _activations.check_name(act)
        self._param_attr = param_attr
        self._bias_attr = bias_attr
        self._use_cudnn = use_cudnn
        # Everything the core needs, passed through untouched: the core validates it.
        self._conv = dict(stride=stride, padding=padding, output_padding=output_padding,
                          groups=self._groups, dilation=dilation, output_size=output_size,
                          data_format=data_format)
        # When filter_size is given, output_size only selects among valid sizes; when it is
        # not, output_size defines the kernel and is then implied by it.
        self.add_parameter("weight", None)  # slots, filled now or at the first call
        self.add_parameter("bias", None)
        if self._num_channels is not None and self._filter_size is not None:
            self._create_parameters(self._num_channels, self._filter_size)

    def _create_parameters(self, num_channels: int, filter_size: Tuple[int, int, int]) -> None:
        if num_channels % self._groups:
            raise ValueError(f"Conv3DTranspose: input channels ({num_channels}) must be "
                             f"divisible by groups ({self._groups})")
        self._num_channels, self._filter_size = num_channels, filter_size
        shape = [num_channels, self._num_filters // self._groups, *filter_size]
        self.weight = self.create_parameter(shape, attr=self._param_attr, dtype=self._dtype)
        self.bias = self.create_parameter([self._num_filters], attr=self._bias_attr,
                                          dtype=self._dtype, is_bias=True)

    def _deferred_parameters(self) -> List[str]:
        if self.weight is not None:
            return []
        return ["weight"] + (["bias"] if self._bias_attr is not False else [])

    if TYPE_CHECKING:
        # ``layer(x)`` is ``layer.forward(x)`` (Layer.__call__), typed as forward is.
        @overload
        def __call__(self, input: Union[Variable, ArrayLike]) -> Variable: ...
        @overload
        def __call__(self, input: dask.array.Array) -> dask.array.Array: ...
        def __call__(self, input: Any) -> Any: ...

    @overload
    def forward(self, input: Union[Variable, ArrayLike]) -> Variable: ...
    @overload
    def forward(self, input: dask.array.Array) -> dask.array.Array: ...
    def forward(self, input: Any) -> Any:
        """The layer on ``input``: ``act(conv3d_transpose(input, weight) + bias)``.

        Parameters
        ----------
        input : Variable, array_like or dask.array.Array
            5-D, in ``data_format``, of the layer's dtype; an array is wrapped with
            :func:`~conv3dt.dygraph.to_variable`. A Dask array is computed block by block
            (inference only, see :mod:`conv3dt.dask`).

        Returns
        -------
        Variable or dask.array.Array
            A Variable with the gradient recorded (a Dask array for a Dask input).

        Raises
        ------
        ValueError
            ``input`` is not 5-D or has another channel count than the layer.
        TypeError
            ``input`` has another dtype than the layer.
        """
        lazy = _is_dask_array(input)  # inference on a dask array, block by block
        if lazy:
            from .. import dask as conv3dt_dask

            conv3dt_dask.check_no_grad("Conv3DTranspose")
        x = input if isinstance(input, Variable) or lazy else to_variable(input)
        if x.ndim != 5:
            raise ValueError(f"Conv3DTranspose: input must be 5-D ({self._conv['data_format']}), "
                             f"but has shape {x.shape}")
        if x.dtype != self._dtype:
            raise TypeError(f"Conv3DTranspose: input dtype {x.dtype} does not match the "
                            f"layer dtype {self._dtype}; cast with astype('{self._dtype}')")
        channels_last = str(self._conv["data_format"]).upper() == "NDHWC"
        channels = x.shape[-1] if channels_last else x.shape[1]
        if self.weight is None:  # first call of a layer that infers its shapes
            filter_size = self._filter_size
            if filter_size is None:
                spatial = x.shape[1:4] if channels_last else x.shape[2:]
                c = self._conv
                filter_size = tuple(kernel_size_from_output_size(
                    spatial, c["output_size"], c["stride"], c["padding"], c["dilation"],
                    c["data_format"]))
            self._create_parameters(channels, filter_size)
        elif channels != self._num_channels:
            raise ValueError(f"Conv3DTranspose: input has {channels} channels, the layer "
                             f"expects num_channels={self._num_channels}")
        if lazy:
            return conv3dt_dask.layer_forward(x, self.weight, self.bias, self._act,
                                              conv=self._conv, layer="Conv3DTranspose")
        inputs = (x, self.weight) if self.bias is None else (x, self.weight, self.bias)
        out = Conv3DTransposeFunction.apply(*inputs, conv=self._conv)
        if self._act is None:
            return out
        return Activation.apply(out, act=self._act, params=_activations.attrs_for(self._act))

    def __repr__(self) -> str:
        # As torch prints its layers: the channels, then only what differs from the
        # defaults, sizes as triples (filter_size=(3, 3, 3), stride=(2, 2, 2)).
        def shown(value: Any) -> Any:
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                return (int(value),) * 3
            if isinstance(value, (list, tuple)):
                return tuple(shown(v) if isinstance(v, (list, tuple)) else v for v in value)
            return value

        def is_zero(value: Any) -> bool:
            flat = value if isinstance(value, tuple) else (value,)
            return all(is_zero(v) if isinstance(v, tuple) else
                       isinstance(v, numbers.Integral) and v == 0 for v in flat)

        c = self._conv
        padding = shown(c["padding"])
        fields = [  # (name, value shown, its default)
            ("filter_size", self._filter_size, None),
            ("output_size", shown(c["output_size"]), None),
            ("padding", padding, padding if is_zero(padding) else (0, 0, 0)),
            ("stride", shown(c["stride"]), (1, 1, 1)),
            ("dilation", shown(c["dilation"]), (1, 1, 1)),
            ("groups", self._groups, 1),
            ("param_attr", self._param_attr, None),
            ("bias_attr", self._bias_attr, None),
            ("use_cudnn", self._use_cudnn, True),
            ("act", self._act, None),
            ("dtype", str(self._dtype), "float32"),
            ("output_padding", shown(c["output_padding"]), (0, 0, 0)),
            ("data_format", c["data_format"], "NCDHW"),
        ]
        # C_in, or the name scope while C_in is known only from the first input.
        channels = self._num_channels if self._num_channels is not None else self.full_name()
        args = [repr(channels), repr(self._num_filters)] + [
            f"{name}={value!r}" for name, value, default in fields
            # (type first: False == 0 and True == 1, yet bias_attr=False is no default)
            if not (type(value) is type(default) and value == default)]
        return f"Conv3DTranspose({', '.join(args)})"
