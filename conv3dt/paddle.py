"""conv3dt inside PaddlePaddle models: a ``paddle.autograd.PyLayer``, a functional form
and a ``paddle.nn.Layer`` with the signatures and semantics of Paddle's own.

``conv3d_transpose`` has ``paddle.nn.functional.conv3d_transpose``'s signature and
``Conv3DTranspose`` has ``paddle.nn.Conv3DTranspose``'s constructor, parameters (Paddle
parameters, created by Paddle with its default initialisers and ``ParamAttr`` handling),
``forward(x, output_size=None)`` and state dict; the weight layout is
``[C_in, C_out / groups, kD, kH, kW]``. Every padding form Paddle accepts (an int, 3 or 6
ints, 5 pairs, ``'SAME'``/``'VALID'``), ``output_size``, ``NCDHW``/``NDHWC``, groups and
dilation mean what they mean in Paddle: conv3dt computes exactly Paddle's operation. The
backward pass asks conv3dt only for the gradients of the tensors that take part in
autograd (``stop_gradient=False``).

Tensors in, tensors out: CPU tensors of float32 or float64 are read in place through
DLPack (contiguous or strided) and the results are returned as tensors over conv3dt's
arrays, without a copy. GPU tensors go to conv3dt's CuPy backend through DLPack where CuPy
is installed.

PaddlePaddle is an optional dependency (``pip install "conv3dt[paddle]"``): ``import
conv3dt`` never imports it, ``import conv3dt.paddle`` does. In static-graph mode (and
under ``paddle.jit.to_static``) a PyLayer that leaves Paddle for NumPy cannot be part of
the program: use it in dynamic mode (Paddle's default).

>>> import paddle
>>> from conv3dt.paddle import Conv3DTranspose
>>> up = Conv3DTranspose(4, 2, kernel_size=2, stride=2)
>>> list(up(paddle.ones([1, 4, 3, 3, 3])).shape)
[1, 2, 6, 6, 6]
"""

import numbers
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Sequence, Union

import numpy as np

try:
    import paddle
except ImportError as exc:  # pragma: no cover - exercised only without PaddlePaddle
    raise ImportError(
        "conv3dt.paddle needs PaddlePaddle, which is not installed: install it with "
        "`pip install \"conv3dt[paddle]\"` (or `pip install paddlepaddle`)"
    ) from exc

from . import _backend
from . import functional as _functional

__all__ = ["conv3d_transpose", "Conv3DTranspose", "Conv3DTransposeFunction"]

_DTYPES = ("float32", "float64")

# The geometry arguments' types (an int, or one per dimension; a size may also be an
# integer Tensor, as in Paddle).
_IntArg = Union[int, Sequence[int], "paddle.Tensor"]
_PaddingArg = Union[int, Sequence[int], Sequence[Sequence[int]],
                    Literal["SAME", "VALID", "same", "valid"]]
# What a Paddle layer's weight_attr/bias_attr takes (a paddle.ParamAttr, an initializer, a
# name; False: no parameter).
_AttrArg = Any


def _cupy() -> Any:
    """CuPy, or a RuntimeError saying what to install to compute GPU tensors."""
    return _backend.cupy_module("a GPU tensor")


def _dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).replace("paddle.", "")


def _check_tensor(value: Any, name: str) -> None:
    if not isinstance(value, paddle.Tensor):
        raise TypeError(f"{name} must be a paddle.Tensor, got {type(value).__name__}")
    if _dtype_name(value) not in _DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got {value.dtype} (shape "
            f"{list(value.shape)}): conv3dt computes in float32 and float64 only; convert "
            f"with .astype('float32') or .astype('float64')"
        )
    place = value.place
    if not (place.is_cpu_place() or place.is_gpu_place()):
        raise TypeError(f"{name} is on {place}: conv3dt computes CPU and GPU tensors only")


def _as_array(tensor: paddle.Tensor) -> Any:
    """The tensor's data as a NumPy (CPU) or CuPy (GPU) array sharing its memory (DLPack)."""
    tensor = tensor.detach()   # (Paddle exports no tensor that requires gradients)
    if tensor.place.is_cpu_place():
        if not hasattr(tensor, "__dlpack__"):  # Paddle < 3.0: one copy
            return tensor.numpy()
        return np.from_dlpack(tensor)
    return _cupy().from_dlpack(tensor)


def _as_tensor(array: Any) -> paddle.Tensor:
    """A Paddle tensor over a NumPy or CuPy array's memory (DLPack, no copy)."""
    if hasattr(paddle, "from_dlpack"):
        return paddle.from_dlpack(array)
    return paddle.utils.dlpack.from_dlpack(array.__dlpack__())  # Paddle < 3.0


class _on_device:
    """The CuPy device of a GPU tensor made current (nothing for CPU tensors)."""

    def __init__(self, tensor: paddle.Tensor) -> None:
        self.place = tensor.place
        self._ctx: Any = None

    def __enter__(self) -> "_on_device":
        if self.place.is_gpu_place():
            self._ctx = _cupy().cuda.Device(self.place.gpu_device_id())
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


# (paddle is Any to a type checker where Paddle is not installed: hence the ignores)
class Conv3DTransposeFunction(paddle.autograd.PyLayer):  # type: ignore[misc, unused-ignore]
    """``y = conv3d_transpose(x, weight, bias)`` by conv3dt, as a Paddle PyLayer.

    ``apply(x, weight, bias, geometry)``: ``bias`` a tensor or None, ``geometry`` a dict
    of :func:`conv3dt.functional.conv3d_transpose`'s keyword arguments (stride, padding,
    output_padding, groups, dilation, output_size, data_format) in Paddle's forms. The
    backward pass returns one gradient per tensor given (None for those with
    ``stop_gradient=True``, which conv3dt does not compute).
    """

    @staticmethod
    def forward(ctx: Any, x: paddle.Tensor, weight: paddle.Tensor,
                bias: Optional[paddle.Tensor], geometry: Dict[str, Any]) -> paddle.Tensor:
        with _on_device(x):
            out = _functional.conv3d_transpose(
                _as_array(x), _as_array(weight),
                None if bias is None else _as_array(bias), **geometry)
            result = _as_tensor(out)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient,
                     bias is not None and not bias.stop_gradient)
        ctx.save_for_backward(x, weight)
        return result

    @staticmethod
    def backward(ctx: Any, *grad_outputs: paddle.Tensor) -> Any:
        # (PyLayer's signature: one gradient per output, here one; the result holds None
        # where Paddle's stub says tensors only.)
        (grad_output,) = grad_outputs
        x, weight = ctx.saved_tensor()
        grads: List[Optional[paddle.Tensor]] = [None, None, None]
        if any(ctx.needs):
            _check_tensor(grad_output, "grad_output")
            with _on_device(x):
                arrays = _functional.conv3d_transpose_backward(
                    _as_array(grad_output), _as_array(x), _as_array(weight),
                    needs=ctx.needs, **ctx.geometry)
                grads = [None if a is None else _as_tensor(a) for a in arrays]
        return tuple(grads) if ctx.has_bias else tuple(grads[:2])

    if TYPE_CHECKING:
        # What PyLayer.apply returns here (Paddle leaves it untyped).
        @classmethod
        def apply(cls, *args: Any, **kwargs: Any) -> paddle.Tensor: ...


def conv3d_transpose(x: paddle.Tensor, weight: paddle.Tensor,
                     bias: Optional[paddle.Tensor] = None, stride: _IntArg = 1,
                     padding: _PaddingArg = 0, output_padding: _IntArg = 0,
                     groups: int = 1, dilation: _IntArg = 1,
                     output_size: Optional[_IntArg] = None,
                     data_format: Literal["NCDHW", "NDHWC"] = "NCDHW",
                     name: Optional[str] = None) -> paddle.Tensor:
    """``paddle.nn.functional.conv3d_transpose``, computed by conv3dt (differentiable).

    The arguments, their order and their meaning are Paddle's (see
    :func:`conv3dt.functional.conv3d_transpose` for the output size and the padding
    forms).

    Parameters
    ----------
    x : paddle.Tensor
        ``[N, C_in, D, H, W]`` (``[N, D, H, W, C_in]`` for ``data_format='NDHWC'``).
    weight : paddle.Tensor
        ``[C_in, C_out / groups, kD, kH, kW]``.
    bias : paddle.Tensor, optional
        ``[C_out]``.
    stride, output_padding, dilation : int or sequence of 3 ints
        Defaults 1, 0 and 1; a size may be an integer Tensor, as in Paddle.
    padding : int, sequence of ints, sequence of pairs or str, default 0
        An int, 3 or 6 ints, 5 pairs, ``'SAME'`` or ``'VALID'``.
    groups : int, default 1
        Channel groups.
    output_size : int or sequence of 3 ints, optional
        The output's spatial size; mutually exclusive with a non-zero
        ``output_padding``.
    data_format : {'NCDHW', 'NDHWC'}, default 'NCDHW'
        The layout of ``x`` and of the result.
    name : str, optional
        Accepted for Paddle's signature and not used.

    Returns
    -------
    paddle.Tensor
        The output, on ``x``'s device, recorded for autograd.

    Raises
    ------
    TypeError
        For tensors that are not float32/float64 CPU or GPU tensors.
    ValueError
        For shapes or a geometry that do not fit, or tensors on different devices.
    RuntimeError
        In static-graph mode (``paddle.enable_static()`` or ``paddle.jit.to_static``'s
        AST mode).

    Notes
    -----
    All tensors are float32 or all float64, on one device.

    Examples
    --------
    >>> import paddle
    >>> y = conv3d_transpose(paddle.ones([1, 2, 3, 3, 3]), paddle.ones([2, 4, 2, 2, 2]),
    ...                      stride=2)
    >>> list(y.shape)
    [1, 4, 6, 6, 6]
    """
    if not paddle.in_dynamic_mode():
        raise RuntimeError(
            "conv3dt.paddle computes with conv3dt's own kernels, which a static Paddle "
            "program (paddle.enable_static() or paddle.jit.to_static) cannot contain: run "
            "it in dynamic mode, or use paddle.nn.functional.conv3d_transpose in a static "
            "program")
    _check_tensor(x, "x")
    _check_tensor(weight, "weight")
    if bias is not None:
        _check_tensor(bias, "bias")
    for arg, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and str(tensor.place) != str(x.place):
            raise ValueError(f"x and {arg} must be on the same device, got x on {x.place} "
                             f"and {arg} on {tensor.place}")
    if len(x.shape) != 5:
        raise ValueError(f"x must be a 5-D tensor ([N, C, D, H, W] or [N, D, H, W, C]), "
                         f"got shape {list(x.shape)}")
    if len(weight.shape) != 5:
        raise ValueError(f"weight must be a 5-D tensor [C_in, C_out/groups, kD, kH, kW], "
                         f"got shape {list(weight.shape)}")
    if output_size is not None and not _is_zero(output_padding):
        raise ValueError(f"output_padding option is mutually exclusive with output_size, "
                         f"got output_padding={output_padding!r} and "
                         f"output_size={output_size!r}")
    geometry = dict(stride=_plain(stride), padding=_plain(padding),
                    output_padding=_plain(output_padding), groups=_plain(groups),
                    dilation=_plain(dilation), output_size=_plain(output_size),
                    data_format=data_format)
    return Conv3DTransposeFunction.apply(x, weight, bias, geometry)


def _is_zero(value: Any) -> bool:
    if isinstance(value, numbers.Integral):
        return int(value) == 0
    try:
        return all(_is_zero(v) for v in value)
    except TypeError:
        return False


def _plain(value: Any) -> Any:
    """Paddle arguments as Python values (a size may be a 0-D or 1-D integer tensor)."""
    if isinstance(value, paddle.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


class Conv3DTranspose(paddle.nn.Layer):  # type: ignore[misc, unused-ignore]
    """``paddle.nn.Conv3DTranspose``, computed by conv3dt.

    The constructor, the parameters, their default initialisation (Paddle's:
    Xavier-uniform weight, zero bias, or what ``weight_attr``/``bias_attr`` say),
    ``forward(x, output_size=None)`` and the state dict keys are Paddle's, so
    ``set_state_dict`` takes a ``paddle.nn.Conv3DTranspose``'s state dict as it is.

    Parameters
    ----------
    in_channels, out_channels : int
        C_in and C_out, both divisible by ``groups``.
    kernel_size : int or sequence of 3 ints
        The kernel's size.
    stride, padding, output_padding, dilation, groups, data_format
        As for :func:`conv3d_transpose`.
    weight_attr : paddle.ParamAttr, optional
        How Paddle creates the weight; False is refused.
    bias_attr : paddle.ParamAttr or False, optional
        How Paddle creates the bias; False: no bias.

    Attributes
    ----------
    weight : paddle.Tensor
        ``[in_channels, out_channels / groups, *kernel_size]``, a Paddle parameter.
    bias : paddle.Tensor or None
        ``[out_channels]``; None with ``bias_attr=False``.

    Raises
    ------
    ValueError
        For channel counts or ``groups`` that are not positive ints or do not divide,
        ``weight_attr=False``, another ``data_format``, or sizes that are not 1 or 3 ints.

    Examples
    --------
    >>> import paddle
    >>> theirs = paddle.nn.Conv3DTranspose(4, 6, 3, stride=2, padding=1, groups=2)
    >>> mine = Conv3DTranspose(4, 6, 3, stride=2, padding=1, groups=2)
    >>> missing, unexpected = mine.set_state_dict(theirs.state_dict())
    >>> x = paddle.randn([1, 4, 5, 5, 5])
    >>> bool(paddle.allclose(mine(x, output_size=10), theirs(x, output_size=10), atol=1e-5))
    True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntArg,
                 stride: _IntArg = 1, padding: _PaddingArg = 0, output_padding: _IntArg = 0,
                 dilation: _IntArg = 1, groups: int = 1, weight_attr: _AttrArg = None,
                 bias_attr: _AttrArg = None,
                 data_format: Literal["NCDHW", "NDHWC"] = "NCDHW") -> None:
        super().__init__()
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups, got out_channels="
                             f"{out_channels}, groups={groups}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups, got in_channels="
                             f"{in_channels}, groups={groups}")
        if weight_attr is False:
            raise ValueError("weight_attr must not be False: a Conv3DTranspose has a weight")
        if data_format not in ("NCDHW", "NDHWC"):
            raise ValueError(f"data_format must be 'NCDHW' or 'NDHWC', got {data_format!r}")
        self._in_channels = int(in_channels)
        self._out_channels = int(out_channels)
        self._kernel_size = _three(kernel_size, "kernel_size")
        self._stride = _three(stride, "stride")
        self._dilation = _three(dilation, "dilation")
        self._padding = padding
        self._padding_mode = "zeros"
        self.output_padding = output_padding
        self._groups = int(groups)
        self._data_format = data_format
        self._param_attr = weight_attr
        self._bias_attr = bias_attr
        # Paddle's calls in Paddle's order: the same default initialisers and ParamAttr
        # handling, and one seed gives this layer and Paddle's the same parameters.
        self.weight = self.create_parameter(
            shape=[self._in_channels, self._out_channels // self._groups,
                   *self._kernel_size],
            attr=weight_attr, default_initializer=None)
        self.bias = self.create_parameter(attr=bias_attr, shape=[self._out_channels],
                                          is_bias=True)

    def extra_repr(self) -> str:
        s = "{_in_channels}, {_out_channels}, kernel_size={_kernel_size}"
        if self._stride != [1] * 3:
            s += ", stride={_stride}"
        if self._padding != 0:
            s += ", padding={_padding}"
        if self.output_padding != 0:
            s += ", output_padding={output_padding}"
        if self._dilation != [1] * 3:
            s += ", dilation={_dilation}"
        if self._groups != 1:
            s += ", groups={_groups}"
        s += ", data_format={_data_format}"
        return s.format(**self.__dict__)

    def forward(self, x: paddle.Tensor,
                output_size: Optional[_IntArg] = None) -> paddle.Tensor:
        output_padding = self.output_padding if output_size is None else 0
        return conv3d_transpose(x, self.weight, bias=self.bias, stride=self._stride,
                                padding=self._padding, output_padding=output_padding,
                                groups=self._groups, dilation=self._dilation,
                                output_size=output_size, data_format=self._data_format)


def _three(value: Any, name: str) -> List[int]:
    """An int or 3 ints as a list of 3 ints (Paddle's convert_to_list)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [int(value)] * 3
    try:
        values = list(value)
    except TypeError:
        values = None
    if (values is None or len(values) != 3
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in values)):
        raise ValueError(f"{name} must be an int or a list of 3 ints, got {value!r}")
    return [int(v) for v in values]


def _run_eagerly_under_to_static() -> None:
    """paddle.jit.to_static's default (SOT) translator runs these eagerly: a graph break,
    the rest of the model is still converted. (Its AST mode, ``full_graph=True``, hands
    static variables to conv3d_transpose, which refuses them with a RuntimeError.)"""
    try:
        from paddle.jit.marker import force_dynamic
    except ImportError:  # Paddle releases without it
        return
    force_dynamic(conv3d_transpose)
    force_dynamic(Conv3DTranspose)


_run_eagerly_under_to_static()
