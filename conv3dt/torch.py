"""conv3dt inside PyTorch models: a ``torch.autograd.Function``, a functional form and an
``nn.Module`` with the signatures and semantics of PyTorch's own.

``conv_transpose3d`` has ``torch.nn.functional.conv_transpose3d``'s signature and
``ConvTranspose3d`` has ``torch.nn.ConvTranspose3d``'s constructor, parameters, default
initialisation and ``forward(input, output_size=None)``; a state dict of PyTorch's layer
loads into conv3dt's as it is (the weight layout ``[C_in, C_out / groups, kD, kH, kW]`` is
the same). The forward pass and the gradients are computed by conv3dt's kernels
(:func:`conv3dt.functional.conv3d_transpose` and
:func:`conv3dt.functional.conv3d_transpose_backward`); the backward pass computes only the
gradients autograd asks for.

Tensors in, tensors out: contiguous or strided CPU tensors of float32 or float64 are read
in place (through ``Tensor.numpy()``, which shares memory) and the results are returned as
tensors over conv3dt's arrays (``torch.from_numpy``, no copy). CUDA tensors are handed to
conv3dt's CuPy backend through DLPack, without a copy either, where CuPy is installed.

PyTorch is an optional dependency (``pip install "conv3dt[torch]"``): ``import conv3dt``
never imports it, ``import conv3dt.torch`` does.

``torch.compile``/``torch.export``, ``torch.jit.trace``, ``torch.jit.script`` and
``torch.fx`` cannot see into conv3dt's kernels: each is refused with an error that says so,
never a silent fallback or a wrong graph (docs/pytorch.rst, "What it does not do").

>>> import torch
>>> from conv3dt.torch import ConvTranspose3d
>>> up = ConvTranspose3d(4, 2, kernel_size=2, stride=2)
>>> up(torch.ones(1, 4, 3, 3, 3)).shape
torch.Size([1, 2, 6, 6, 6])
"""

import math
import numbers
from typing import (TYPE_CHECKING, Any, Dict, List, Literal, Optional, Sequence, Tuple, Union,
                    cast)

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without PyTorch
    raise ImportError(
        "conv3dt.torch needs PyTorch, which is not installed: install it with "
        "`pip install \"conv3dt[torch]\"` (or `pip install torch`)"
    ) from exc

from torch.autograd.function import once_differentiable

from . import _backend
from . import functional as _functional

__all__ = ["conv_transpose3d", "ConvTranspose3d", "ConvTranspose3dFunction"]

_DTYPES = (torch.float32, torch.float64)
# torch.jit.script's types of the geometry arguments (an int, or 1 or 3 of them).
_IntArg = Union[int, List[int], Tuple[int, int, int]]
_Triple = Tuple[int, int, int]


def _unsupported(tool: str, verb: str) -> str:
    return (f"conv3dt.torch computes with conv3dt's own kernels, which {tool} cannot "
            f"{verb}: run this layer eagerly (outside {tool}), or use "
            f"torch.nn.ConvTranspose3d in a model you {verb} with {tool}")


_COMPILE_MESSAGE = (
    "conv3dt.torch computes with conv3dt's own kernels, which torch.compile and "
    "torch.export cannot compile: run this layer eagerly (outside torch.compile), or use "
    "torch.nn.ConvTranspose3d in a model you compile or export")


def _compile_guard() -> Any:
    """An operator whose shape function (the only part torch.compile runs) raises.

    torch.compile runs the model's Python code on fake tensors to build its graph, and
    an exception raised there in Python only makes it give up on the frame and run it
    eagerly, silently. An error from an operator's fake implementation instead stops the
    compilation with that error, with or without ``fullgraph=True``.
    """
    if not hasattr(torch.library, "custom_op"):  # PyTorch < 2.4
        return None
    try:
        return torch.ops.conv3dt.refuse_graph_capture  # this module imported before
    except (AttributeError, RuntimeError):
        pass

    # (untyped decorators to a type checker where PyTorch is not installed)
    @torch.library.custom_op(  # type: ignore[untyped-decorator, misc, unused-ignore]
        "conv3dt::refuse_graph_capture", mutates_args=())
    def refuse_graph_capture(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(_COMPILE_MESSAGE)

    @refuse_graph_capture.register_fake  # type: ignore[untyped-decorator, misc, unused-ignore]
    def _(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(_COMPILE_MESSAGE)

    return refuse_graph_capture


_REFUSE_COMPILE = _compile_guard()


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())  # PyTorch < 2.3


def _refuse_graph_capture(tensor: Any) -> None:
    """A clear error under torch.jit.trace, torch.compile (and torch.export) and
    torch.fx.symbolic_trace, which cannot see into conv3dt's kernels.

    A trace would record conv3dt's results as constants, a graph that is silently wrong
    for any other input, so tracing is refused rather than warned about.
    """
    if isinstance(tensor, torch.fx.Proxy):
        raise RuntimeError(_unsupported("torch.fx.symbolic_trace", "trace"))
    # (the ignores here and below: PyTorch's own annotations leave these names untyped or
    # not re-exported)
    if torch.jit.is_tracing():  # type: ignore[attr-defined, no-untyped-call, unused-ignore]
        raise RuntimeError(_unsupported("torch.jit.trace", "trace"))
    if _is_compiling():
        if _REFUSE_COMPILE is not None and isinstance(tensor, torch.Tensor):
            _REFUSE_COMPILE(tensor)
        raise RuntimeError(_COMPILE_MESSAGE)


def _cupy() -> Any:
    """CuPy, or a RuntimeError saying what to install to compute CUDA tensors."""
    return _backend.cupy_module("a CUDA tensor")


def _check_tensor(value: Any, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {value.layout}")
    if value.dtype not in _DTYPES:
        raise TypeError(
            f"{name} must be torch.float32 or torch.float64, got {value.dtype} (shape "
            f"{tuple(value.shape)}): conv3dt computes in float32 and float64 only; convert "
            f"with .float() or .double()"
        )
    if value.device.type not in ("cpu", "cuda"):
        raise TypeError(f"{name} is on device {value.device}: conv3dt computes CPU and CUDA "
                        f"tensors only")


def _as_array(tensor: torch.Tensor) -> Any:
    """The tensor's data as a NumPy array (CPU) or CuPy array (CUDA), sharing its memory.

    ``Tensor.numpy()`` views the tensor's storage with its strides, so a non-contiguous
    tensor is read in place as well (conv3dt's kernels take strided input).
    """
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.device.type == "cpu":
        return tensor.numpy()
    return _cupy().from_dlpack(tensor)


def _as_tensor(array: Any, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return torch.from_numpy(array)
    return torch.from_dlpack(array)  # type: ignore[attr-defined, unused-ignore]


class _on_device:
    """The CuPy device of a CUDA tensor made current (nothing for CPU tensors)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._ctx: Any = None

    def __enter__(self) -> "_on_device":
        if self.device.type == "cuda":
            index = self.device.index
            self._ctx = _cupy().cuda.Device(torch.cuda.current_device() if index is None
                                            else index)
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


def _int_tuple(value: Any, name: str, minimum: int) -> _Triple:
    """An int or 1 or 3 ints (torch's forms) as a tuple of 3 ints >= minimum."""
    values: Tuple[int, ...]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = (int(value),) * 3
    else:
        given: Optional[Tuple[Any, ...]]
        try:
            given = tuple(value)
        except TypeError:
            given = None
        if (given is None or len(given) not in (1, 3)
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                           for v in given)):
            raise TypeError(f"{name} must be an int or a tuple of 1 or 3 ints, got {value!r}")
        values = tuple(int(v) for v in given) * (3 if len(given) == 1 else 1)
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return cast(_Triple, values)  # 3 ints: made so above


def _groups(value: Any) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"groups must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"groups must be a positive int, got {value!r}")
    return int(value)


# (torch is Any to a type checker where PyTorch is not installed: hence the ignores)
class ConvTranspose3dFunction(torch.autograd.Function):  # type: ignore[misc, unused-ignore]
    """``y = conv3d_transpose(input, weight, bias)`` on 5-D NCDHW tensors, by conv3dt.

    ``apply(input, weight, bias, stride, padding, output_padding, groups, dilation)`` with
    the geometry as tuples of 3 ints (``groups`` an int) and ``bias`` a tensor or None.
    The backward pass asks conv3dt for the gradients that ``ctx.needs_input_grad`` names
    and no others (``needs=`` of :func:`conv3dt.functional.conv3d_transpose_backward`). It
    is once differentiable: a second derivative raises a RuntimeError.
    """

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor], stride: _Triple, padding: _Triple,
                output_padding: _Triple, groups: int, dilation: _Triple) -> torch.Tensor:
        _refuse_graph_capture(input)
        geometry: Dict[str, Any] = dict(stride=stride, padding=padding,
                                        output_padding=output_padding, groups=groups,
                                        dilation=dilation)
        with _on_device(input.device):
            out = _functional.conv3d_transpose(
                _as_array(input), _as_array(weight),
                None if bias is None else _as_array(bias), **geometry)
            result = _as_tensor(out, input.device)
        ctx.geometry = geometry
        ctx.save_for_backward(input, weight)
        return result

    @staticmethod
    @once_differentiable  # type: ignore[untyped-decorator, misc, unused-ignore]
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        input, weight = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:3])
        grads: List[Optional[torch.Tensor]] = [None, None, None]
        if any(needs):
            _check_tensor(grad_output, "grad_output")
            if grad_output.dtype != input.dtype:
                grad_output = grad_output.to(input.dtype)
            with _on_device(input.device):
                arrays = _functional.conv3d_transpose_backward(
                    _as_array(grad_output), _as_array(input), _as_array(weight),
                    needs=needs, **ctx.geometry)
                grads = [None if a is None else _as_tensor(a, input.device) for a in arrays]
        return (*grads, None, None, None, None, None)

    if TYPE_CHECKING:
        # What torch.autograd.Function.apply returns here (PyTorch leaves it untyped).
        @classmethod
        def apply(cls, *args: Any, **kwargs: Any) -> torch.Tensor: ...


def conv_transpose3d(input: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor] = None, stride: _IntArg = 1,
                     padding: _IntArg = 0, output_padding: _IntArg = 0, groups: int = 1,
                     dilation: _IntArg = 1) -> torch.Tensor:
    """``torch.nn.functional.conv_transpose3d``, computed by conv3dt (differentiable).

    Per spatial dimension the output has ``(in - 1) * stride - 2 * padding + dilation *
    (k - 1) + output_padding + 1`` elements.

    Parameters
    ----------
    input : torch.Tensor
        ``[N, C_in, D, H, W]`` or unbatched ``[C_in, D, H, W]``.
    weight : torch.Tensor
        ``[C_in, C_out / groups, kD, kH, kW]``.
    bias : torch.Tensor, optional
        ``[C_out]``.
    stride : int or tuple of 3 ints, default 1
        The stride of the transposed convolution.
    padding : int or tuple of 3 ints, default 0
        Symmetric: removed from both ends of each dimension.
    output_padding : int or tuple of 3 ints, default 0
        Elements added at the high end of each dimension.
    groups : int, default 1
        Channel groups.
    dilation : int or tuple of 3 ints, default 1
        The spacing of the kernel's taps.

    Returns
    -------
    torch.Tensor
        ``[N, C_out, D_out, H_out, W_out]`` (unbatched for an unbatched input), on
        ``input``'s device, recorded for autograd.

    Raises
    ------
    TypeError
        For tensors that are not dense float32/float64 CPU or CUDA tensors, or
        geometry arguments that are not ints.
    ValueError
        For shapes or a geometry that do not fit, or tensors on different devices.
    RuntimeError
        Under ``torch.jit.script``, ``torch.jit.trace``, ``torch.compile``/``torch.export``
        and ``torch.fx``, which cannot see into conv3dt's kernels.

    Notes
    -----
    All tensors are float32 or all float64, on one device (CPU, or CUDA with CuPy).

    Examples
    --------
    >>> import torch
    >>> y = conv_transpose3d(torch.ones(1, 2, 3, 3, 3), torch.ones(2, 4, 2, 2, 2), stride=2)
    >>> y.shape
    torch.Size([1, 4, 6, 6, 6])
    """
    if torch.jit.is_scripting():
        # What a scripted caller compiles (and raises when run): TorchScript cannot call
        # conv3dt's kernels.
        raise RuntimeError("conv3dt.torch.conv_transpose3d cannot run under "
                           "torch.jit.script: conv3dt's kernels are not TorchScript; use "
                           "torch.nn.functional.conv_transpose3d in scripted code")
    _refuse_graph_capture(input)
    _check_tensor(input, "input")
    _check_tensor(weight, "weight")
    if bias is not None:
        _check_tensor(bias, "bias")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.device != input.device:
            raise ValueError(f"input and {name} must be on the same device, got input on "
                             f"{input.device} and {name} on {tensor.device}")
    if input.dim() not in (4, 5):
        raise ValueError(f"input must be 4-D (unbatched [C_in, D, H, W]) or 5-D "
                         f"([N, C_in, D, H, W]), got shape {tuple(input.shape)}")
    if weight.dim() != 5:
        raise ValueError(f"weight must be 5-D [C_in, C_out/groups, kD, kH, kW], got shape "
                         f"{tuple(weight.shape)}")
    stride = _int_tuple(stride, "stride", 1)
    padding = _int_tuple(padding, "padding", 0)
    output_padding = _int_tuple(output_padding, "output_padding", 0)
    dilation = _int_tuple(dilation, "dilation", 1)
    groups = _groups(groups)
    unbatched = input.dim() == 4
    if unbatched:
        input = input.unsqueeze(0)
    out = ConvTranspose3dFunction.apply(input, weight, bias, stride, padding,
                                        output_padding, groups, dilation)
    return out.squeeze(0) if unbatched else out


class ConvTranspose3d(torch.nn.Module):  # type: ignore[misc, unused-ignore]
    """``torch.nn.ConvTranspose3d``, computed by conv3dt.

    The constructor, the parameters, their default initialisation
    (:meth:`reset_parameters`), ``forward(input, output_size=None)`` and the ``repr`` are
    PyTorch's; ``load_state_dict`` takes the state dict of a ``torch.nn.ConvTranspose3d``
    as it is.

    Parameters
    ----------
    in_channels, out_channels : int
        C_in and C_out, both divisible by ``groups``.
    kernel_size : int or tuple of 3 ints
        The kernel's size.
    stride, padding, output_padding, dilation : int or tuple of 3 ints
        As for :func:`conv_transpose3d` (defaults 1, 0, 0 and 1).
    groups : int, default 1
        Channel groups.
    bias : bool, default True
        False: no bias.
    padding_mode : str, default 'zeros'
        Must be ``'zeros'`` (as in PyTorch).
    device, dtype : optional
        Where and of which dtype the parameters are created (``torch.empty``'s).

    Attributes
    ----------
    weight : torch.nn.Parameter
        ``[in_channels, out_channels / groups, *kernel_size]``.
    bias : torch.nn.Parameter or None
        ``[out_channels]``.

    Raises
    ------
    ValueError
        For channel counts or ``groups`` that are not positive ints or do not divide,
        a str ``padding`` or another ``padding_mode``.

    Examples
    --------
    >>> import torch
    >>> theirs = torch.nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, groups=2)
    >>> mine = ConvTranspose3d(4, 6, 3, stride=2, padding=1, groups=2)
    >>> mine.load_state_dict(theirs.state_dict())
    <All keys matched successfully>
    >>> x = torch.randn(1, 4, 5, 5, 5)
    >>> torch.allclose(mine(x, output_size=[10, 10, 10]), theirs(x, output_size=[10, 10, 10]),
    ...                atol=1e-5)
    True
    """

    __constants__ = ["stride", "padding", "dilation", "groups", "padding_mode",
                     "output_padding", "in_channels", "out_channels", "kernel_size"]

    weight: torch.nn.Parameter
    bias: Optional[torch.nn.Parameter]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntArg,
                 stride: _IntArg = 1, padding: _IntArg = 0, output_padding: _IntArg = 0,
                 groups: int = 1, bias: bool = True, dilation: _IntArg = 1,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        groups = _groups(groups)
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups, got in_channels="
                             f"{in_channels}, groups={groups}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups, got out_channels="
                             f"{out_channels}, groups={groups}")
        if isinstance(padding, str):
            raise ValueError(f"padding must be an int or a tuple of 3 ints for "
                             f"ConvTranspose3d (as in PyTorch), got {padding!r}")
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for ConvTranspose3d '
                             f"(as in PyTorch), got padding_mode={padding_mode!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _int_tuple(kernel_size, "kernel_size", 1)
        self.stride = _int_tuple(stride, "stride", 1)
        self.padding = _int_tuple(padding, "padding", 0)
        self.dilation = _int_tuple(dilation, "dilation", 1)
        self.output_padding = _int_tuple(output_padding, "output_padding", 0)
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = True
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(
            (self.in_channels, self.out_channels // groups, *self.kernel_size), **factory))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of convolutions (``_ConvNd.reset_parameters``).

        ``weight``: Kaiming-uniform with ``a = sqrt(5)``, i.e. uniform in ``[-b, b]`` with
        ``b = 1 / sqrt(fan_in)`` and ``fan_in = weight.size(1) * kD * kH * kW``; ``bias``:
        uniform in ``[-1 / sqrt(fan_in), 1 / sqrt(fan_in)]``. The same calls as PyTorch's
        in the same order, so one seed gives both layers the same parameters.
        """
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                torch.nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * 3:
            s += ", padding={padding}"
        if self.dilation != (1,) * 3:
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * 3:
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)

    def _output_padding(self, input: torch.Tensor,
                        output_size: Optional[Sequence[int]]) -> _Triple:
        """PyTorch's rule: ``output_size`` (3 spatial sizes, or with the leading batch and
        channel sizes) picks the output padding ``output_size - smallest size``; each size
        must lie in ``[smallest, smallest + stride - 1]``."""
        if output_size is None:
            return self.output_padding
        try:
            sizes = [int(s) for s in output_size]
        except (TypeError, ValueError):
            raise TypeError(f"output_size must be a sequence of ints, got "
                            f"{output_size!r}") from None
        leading = 2 if input.dim() == 5 else 1
        if len(sizes) == leading + 3:
            sizes = sizes[leading:]
        if len(sizes) != 3:
            raise ValueError(f"ConvTranspose3D: for {input.dim()}D input, output_size must "
                             f"have 3 or {leading + 3} elements (got {len(output_size)})")
        smallest = [(input.shape[leading + a] - 1) * self.stride[a] - 2 * self.padding[a]
                    + self.dilation[a] * (self.kernel_size[a] - 1) + 1 for a in range(3)]
        largest = [smallest[a] + self.stride[a] - 1 for a in range(3)]
        for a in range(3):
            if not smallest[a] <= sizes[a] <= largest[a]:
                raise ValueError(f"requested an output size of {sizes}, but valid sizes "
                                 f"range from {smallest} to {largest} (for an input of "
                                 f"{list(input.shape)[leading:]})")
        return (sizes[0] - smallest[0], sizes[1] - smallest[1], sizes[2] - smallest[2])

    def __prepare_scriptable__(self) -> "ConvTranspose3d":
        # torch.jit.script calls this on every module it is about to compile.
        raise RuntimeError(_unsupported("torch.jit.script", "script"))

    def forward(self, input: torch.Tensor,
                output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        _refuse_graph_capture(input)
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (4, 5):
            raise ValueError(f"input must be 4-D (unbatched [C_in, D, H, W]) or 5-D "
                             f"([N, C_in, D, H, W]), got shape {tuple(input.shape)}")
        output_padding = self._output_padding(input, output_size)
        return conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)
