"""``Layer``: the base class of models, as ``paddle.fluid.dygraph.Layer``.

Assigning a ``Parameter`` or a ``Layer`` to an attribute registers it, so ``parameters()``,
``state_dict()`` and ``set_dict()`` find it; ``layer(x)`` calls ``forward(x)``.

Example::

    >>> import numpy as np
    >>> from conv3dt.dygraph import Layer, Conv3DTranspose, to_variable
    >>> class Net(Layer):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.up = Conv3DTranspose(2, 2, filter_size=2, stride=2)
    ...     def forward(self, x):
    ...         return self.up(x) * 2
    >>> net = Net()
    >>> sorted(net.state_dict())
    ['up.bias', 'up.weight']
    >>> net(to_variable(np.ones((1, 2, 3, 3, 3), "float32"))).shape
    (1, 2, 6, 6, 6)
"""
from __future__ import annotations

import collections
import re
from typing import (TYPE_CHECKING, Any, Dict, Iterator, List, Literal, Mapping, Optional,
                    Sequence, Tuple, TypeVar, Union, overload)

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _place
from ..autograd import Parameter, Variable, unique_name
from ..functional import _empty
from ..initializer import Constant, Xavier
from ..param_attr import ParamAttr
from . import base

if TYPE_CHECKING:
    from ..initializer import Initializer

__all__ = ["Layer"]

_LayerT = TypeVar("_LayerT", bound="Layer")
# What param_attr/bias_attr take: a ParamAttr, a name, an initializer, None (defaults) or
# False (no parameter).
ParamAttrArg = Union[ParamAttr, str, "Initializer", None, Literal[False]]
# The same without False, for parameters a layer cannot do without (its weight).
WeightAttrArg = Union[ParamAttr, str, "Initializer", None]


def _snake_case(name: str) -> str:
    # Conv3DTranspose -> conv3d_transpose, as Paddle names its layers.
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


class Layer:
    """Base class for layers and models.

    Parameters
    ----------
    name_scope : str, optional
        Prefix of the layer's parameter names (default: the class name in snake case);
        :meth:`full_name` is it made unique, e.g. ``conv3d_transpose_0``.
    dtype : str or numpy dtype, default 'float32'
        The default dtype of :meth:`create_parameter`.
    """

    def __init__(self, name_scope: Optional[str] = None, dtype: DTypeLike = "float32") -> None:
        # Set through object.__setattr__: our __setattr__ looks these dicts up.
        object.__setattr__(self, "_parameters", collections.OrderedDict())
        object.__setattr__(self, "_sub_layers", collections.OrderedDict())
        self.training = True
        self._full_name = unique_name(name_scope or _snake_case(type(self).__name__))
        self._dtype: Any = dtype
        self._param_counter: Dict[str, int] = {"w": 0, "b": 0}

    def full_name(self) -> str:
        """The layer's unique name, e.g. ``conv3d_transpose_0`` (its parameters' prefix)."""
        return self._full_name

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """The layer's computation; subclasses implement it (``layer(x)`` calls it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        """``self.forward(*inputs, **kwargs)``."""
        return self.forward(*inputs, **kwargs)

    # --- parameters -------------------------------------------------------------------
    @overload
    def create_parameter(self, shape: Sequence[int], attr: Literal[False],
                         dtype: Optional[DTypeLike] = ..., is_bias: bool = ...,
                         default_initializer: Optional[Initializer] = ...) -> None: ...
    @overload
    def create_parameter(self, shape: Sequence[int], attr: WeightAttrArg = ...,
                         dtype: Optional[DTypeLike] = ..., is_bias: bool = ...,
                         default_initializer: Optional[Initializer] = ...) -> Parameter: ...
    @overload
    def create_parameter(self, shape: Sequence[int], attr: ParamAttrArg = ...,
                         dtype: Optional[DTypeLike] = ..., is_bias: bool = ...,
                         default_initializer: Optional[Initializer] = ...,
                         ) -> Optional[Parameter]: ...
    def create_parameter(self, shape: Sequence[int], attr: ParamAttrArg = None,
                         dtype: Optional[DTypeLike] = None, is_bias: bool = False,
                         default_initializer: Optional[Initializer] = None,
                         ) -> Optional[Parameter]:
        """A new Parameter of ``shape`` on the current place.

        Parameters
        ----------
        shape : sequence of ints
            The parameter's shape.
        attr : ParamAttr, str, Initializer, None or False, optional
            Its name, initializer, learning rate, regularizer and trainability (a str is
            a name, an initializer an initializer; None: defaults); False: no parameter.
        dtype : str or numpy dtype, optional
            Default: the layer's dtype.
        is_bias : bool, default False
            The default initializer is ``Constant(0)`` for a bias, ``Xavier()``
            (uniform) for a weight, as in Paddle.
        default_initializer : Initializer, optional
            Used when ``attr`` names no initializer.

        Returns
        -------
        Parameter or None
            None when ``attr`` is False.

        Raises
        ------
        MemoryError
            The parameter cannot be allocated (the message states its size).
        """
        param_attr = ParamAttr._to_attr(attr)
        if param_attr is False:
            return None
        dtype = np.dtype(dtype or self._dtype)
        init = (param_attr.initializer or default_initializer
                or (Constant(0.0) if is_bias else Xavier()))
        kind = "b" if is_bias else "w"
        name = param_attr.name or f"{self._full_name}.{kind}_{self._param_counter[kind]}"
        self._param_counter[kind] += 1
        # Sized with Python ints first: an impossible shape is a MemoryError stating it.
        data = _empty(np, tuple(shape), dtype, f"parameter {name!r}")
        data[...] = 0
        param = Parameter(data, name=name, trainable=param_attr.trainable,
                          learning_rate=param_attr.learning_rate,
                          regularizer=param_attr.regularizer)
        init(param)
        param._data = _place.to_place(param._data, base.current_place())
        return param

    def add_parameter(self, name: str, parameter: Optional[Parameter]) -> Optional[Parameter]:
        """Register ``parameter`` as the attribute ``name`` (None: a slot filled later);
        returns it. TypeError for anything but a Parameter or None."""
        if parameter is not None and not isinstance(parameter, Parameter):
            raise TypeError(f"add_parameter('{name}'): expected a Parameter, "
                            f"but received {type(parameter).__name__}")
        self._sub_layers.pop(name, None)
        self.__dict__.pop(name, None)
        self._parameters[name] = parameter
        return parameter

    def add_sublayer(self, name: str, sublayer: _LayerT) -> _LayerT:
        """Register ``sublayer`` as the attribute ``name``; returns it. TypeError for
        anything but a Layer."""
        if not isinstance(sublayer, Layer):
            raise TypeError(f"add_sublayer('{name}'): expected a Layer, "
                            f"but received {type(sublayer).__name__}")
        self._parameters.pop(name, None)
        self.__dict__.pop(name, None)
        self._sub_layers[name] = sublayer
        return sublayer

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call "
                               "super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            self.add_parameter(name, value)
        elif isinstance(value, Layer):
            self.add_sublayer(name, value)
        elif value is None and name in self._parameters:
            self._parameters[name] = None  # a parameter slot not created yet
        else:
            self._parameters.pop(name, None)
            self._sub_layers.pop(name, None)
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered parameters/sublayers.
        for table in ("_parameters", "_sub_layers"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._sub_layers:
            del self._sub_layers[name]
        else:
            object.__delattr__(self, name)

    def named_sublayers(self, prefix: str = "",
                        include_sublayers: bool = True) -> Iterator[Tuple[str, Layer]]:
        """``(dotted name, layer)`` for every sublayer, depth first.

        Parameters
        ----------
        prefix : str, default ''
            Put before every name (with a dot).
        include_sublayers : bool, default True
            False: only the direct sublayers.
        """
        for name, layer in self._sub_layers.items():
            full = f"{prefix}.{name}" if prefix else name
            yield full, layer
            if include_sublayers:
                yield from layer.named_sublayers(full, True)

    def sublayers(self, include_sublayers: bool = True) -> List[Layer]:
        """The sublayers, depth first (only the direct ones unless ``include_sublayers``)."""
        return [layer for _, layer in self.named_sublayers(include_sublayers=include_sublayers)]

    def named_parameters(self, prefix: str = "",
                         include_sublayers: bool = True) -> Iterator[Tuple[str, Parameter]]:
        """``(dotted name, parameter)`` for this layer's parameters, then its sublayers'.

        Parameters
        ----------
        prefix : str, default ''
            Put before every name (with a dot).
        include_sublayers : bool, default True
            False: only this layer's own parameters.
        """
        for name, param in self._parameters.items():
            if param is not None:
                yield (f"{prefix}.{name}" if prefix else name), param
        if include_sublayers:
            for name, layer in self._sub_layers.items():
                yield from layer.named_parameters(f"{prefix}.{name}" if prefix else name, True)

    def parameters(self, include_sublayers: bool = True) -> List[Parameter]:
        """The parameters, as :meth:`named_parameters` orders them (what an optimizer's
        ``parameter_list`` / ``parameters`` takes)."""
        return [p for _, p in self.named_parameters(include_sublayers=include_sublayers)]

    def _deferred_parameters(self) -> List[str]:
        """Names of parameters created at the first call (layers that infer shapes)."""
        return []

    # --- modes and gradients ----------------------------------------------------------
    def train(self: _LayerT) -> _LayerT:
        """Training mode (``self.training = True``) for this layer and its sublayers."""
        for layer in [self] + self.sublayers():
            layer.training = True
        return self

    def eval(self: _LayerT) -> _LayerT:
        """Evaluation mode (``self.training = False``); Conv3DTranspose behaves the same in both."""
        for layer in [self] + self.sublayers():
            layer.training = False
        return self

    def clear_gradients(self) -> None:
        """Zero the gradients of every parameter (sublayers' too)."""
        for param in self.parameters():
            param.clear_gradient()

    # --- state ------------------------------------------------------------------------
    def state_dict(self, destination: Optional[Dict[str, Parameter]] = None,
                   include_sublayers: bool = True) -> Dict[str, Parameter]:
        """The parameters by dotted attribute name (``'weight'``, ``'sub.bias'``).

        Parameters
        ----------
        destination : dict, optional
            Filled and returned instead of a new ``OrderedDict``.
        include_sublayers : bool, default True
            False: only this layer's own parameters.

        Returns
        -------
        dict of str to Parameter
            An ``OrderedDict`` (the Parameters themselves, not copies).
        """
        destination = collections.OrderedDict() if destination is None else destination
        destination.update(self.named_parameters(include_sublayers=include_sublayers))
        return destination

    def set_dict(self, stat_dict: Mapping[str, Union[Variable, ArrayLike]],
                 include_sublayers: bool = True) -> None:
        """Copy values into the parameters.

        Parameters
        ----------
        stat_dict : mapping of str to array_like or Variable
            Names as in :meth:`state_dict`; extra entries are ignored, as in Paddle.
        include_sublayers : bool, default True
            False: only this layer's own parameters.

        Raises
        ------
        ValueError
            A parameter is missing or has another shape or dtype (the message names it;
            nothing is changed), or a layer that makes its parameters at its first call
            has not been called yet.
        """
        pending = [(prefix, layer) for prefix, layer in
                   [("", self)] + (list(self.named_sublayers()) if include_sublayers else [])
                   if layer._deferred_parameters()]
        if pending:
            prefix, layer = pending[0]
            raise ValueError(f"set_dict: layer '{prefix or type(layer).__name__}' creates its "
                             f"parameters {layer._deferred_parameters()} at its first call; call "
                             "it once on an input (or give num_channels and filter_size) first")
        values = []
        for name, param in self.named_parameters(include_sublayers=include_sublayers):
            if name not in stat_dict:
                raise ValueError(f"set_dict: parameter '{name}' is missing from the state dict "
                                 f"(it has {sorted(stat_dict)})")
            value: Any = stat_dict[name]
            value = value.numpy() if isinstance(value, Variable) else value
            if not hasattr(value, "__cuda_array_interface__"):
                value = np.asarray(value)
            if tuple(value.shape) != param.shape:
                raise ValueError(f"set_dict: parameter '{name}' has shape {param.shape}, "
                                 f"the state dict has {tuple(value.shape)}")
            if value.dtype != param.dtype:
                raise ValueError(f"set_dict: parameter '{name}' has dtype {param.dtype}, "
                                 f"the state dict has {value.dtype}")
            values.append((param, value))
        for param, value in values:  # all checked first: a failed load changes nothing
            param.set_value(value)

    load_dict = set_dict

    def set_state_dict(self, state_dict: Mapping[str, Union[Variable, ArrayLike]],
                       use_structured_name: bool = True) -> Tuple[List[str], List[str]]:
        """Paddle 2.x's ``set_state_dict``: :meth:`set_dict`, with Paddle 3.x's result.

        Parameters
        ----------
        state_dict : mapping of str to array_like or Variable
            As for :meth:`set_dict`.
        use_structured_name : bool, default True
            False matches entries by parameter name (``conv3d_transpose_0.w_0``) instead
            of attribute path (``weight``).

        Returns
        -------
        missing_keys : list of str
            Always empty: a missing parameter is an error here rather than Paddle's
            warning.
        unexpected_keys : list of str
            The entries that match no parameter.

        Raises
        ------
        ValueError
            As for :meth:`set_dict`; nothing is changed.
        """
        if use_structured_name:
            names = {name for name, _ in self.named_parameters()}
            self.set_dict(state_dict)
        else:
            by_param = {param.name: name for name, param in self.named_parameters()}
            names = set(by_param)
            self.set_dict({by_param[k]: v for k, v in state_dict.items() if k in by_param})
        return [], [k for k in state_dict if k not in names]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self._full_name})"]
        for name, layer in self._sub_layers.items():
            lines.append(f"  ({name}): " + repr(layer).replace("\n", "\n  "))
        return "\n".join(lines)
