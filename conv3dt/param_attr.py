"""``ParamAttr``: how a layer creates one of its parameters (Paddle's ``fluid.ParamAttr``).

Example::

    >>> import conv3dt.initializer as I
    >>> from conv3dt.param_attr import ParamAttr
    >>> from conv3dt.regularizer import L2Decay
    >>> attr = ParamAttr(name="w", initializer=I.Constant(0.5), learning_rate=0.1,
    ...                  regularizer=L2Decay(1e-4), trainable=True)
    >>> attr.learning_rate
    0.1
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, Union

from .initializer import Initializer

if TYPE_CHECKING:
    from .regularizer import WeightDecayRegularizer

__all__ = ["ParamAttr"]

# What a layer's ``param_attr``/``weight_attr``/``bias_attr`` accepts (False: no parameter).
ParamAttrLike = Union["ParamAttr", Initializer, str, None, Literal[False]]


class ParamAttr:
    """Name, initializer, learning-rate multiplier, regularizer and trainability of a parameter.

    Parameters
    ----------
    name : str, optional
        The parameter's name. Default: generated, like ``conv3d_transpose_0.w_0``.
    initializer : conv3dt.initializer.Initializer, optional
        How the values are drawn. Default: the layer's choice (Xavier for a weight,
        ``Constant(0)`` for a bias).
    learning_rate : float, default 1.0
        The optimizer's learning rate is multiplied by it for this parameter.
    regularizer : conv3dt.regularizer.WeightDecayRegularizer, optional
        E.g. ``L2Decay(coeff)``; overrides the optimizer's ``regularization`` for this
        parameter.
    trainable : bool, default True
        False gives ``stop_gradient=True``; optimizers then leave the parameter alone.

    Raises
    ------
    TypeError
        If ``name`` is not a str, ``initializer`` not an initializer, or
        ``learning_rate`` not a number.
    """

    def __init__(self, name: Optional[str] = None, initializer: Optional[Initializer] = None,
                 learning_rate: float = 1.0,
                 regularizer: Optional[WeightDecayRegularizer] = None,
                 trainable: bool = True) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"ParamAttr: name must be a str, but received {type(name).__name__}")
        if initializer is not None and not isinstance(initializer, Initializer):
            raise TypeError("ParamAttr: initializer must be a conv3dt.initializer object, "
                            f"but received {type(initializer).__name__}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
            raise TypeError("ParamAttr: learning_rate must be a number, "
                            f"but received {type(learning_rate).__name__}")
        self.name = name
        self.initializer = initializer
        self.learning_rate = float(learning_rate)
        self.regularizer = regularizer
        self.trainable = bool(trainable)

    @staticmethod
    def _to_attr(arg: ParamAttrLike) -> Union[ParamAttr, Literal[False]]:
        """Paddle's coercion: None -> defaults, str -> name, Initializer -> initializer,
        False -> False (no parameter), ParamAttr -> itself."""
        if arg is None:
            return ParamAttr()
        if arg is False:
            return False
        if isinstance(arg, ParamAttr):
            return arg
        if isinstance(arg, str):
            return ParamAttr(name=arg)
        if isinstance(arg, Initializer):
            return ParamAttr(initializer=arg)
        raise TypeError("param_attr/bias_attr must be None, False, a str, an initializer or a "
                        f"ParamAttr, but received {type(arg).__name__}")

    def __repr__(self) -> str:
        return (f"ParamAttr(name={self.name!r}, initializer={self.initializer!r}, "
                f"learning_rate={self.learning_rate}, regularizer={self.regularizer!r}, "
                f"trainable={self.trainable})")
