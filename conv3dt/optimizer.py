"""``SGD`` and ``Adam``, as ``paddle.fluid.optimizer`` in dygraph mode.

As in Paddle, ``minimize(loss)`` does not run backward: call ``loss.backward()`` first;
``minimize`` then updates every trainable parameter that has a gradient. Per parameter:

- gradient ``g``, plus the regularizer term (the parameter's ``ParamAttr.regularizer``
  if it has one, else the optimizer's ``regularization``): L2Decay adds ``coeff * p``;
- learning rate ``lr * ParamAttr.learning_rate``;
- SGD:  ``p -= lr * g``
- Adam (Paddle's adam op; ``b1p``/``b2p`` start at beta1/beta2 and are multiplied by them
  after each step)::

      m1 = beta1 m1 + (1 - beta1) g
      m2 = beta2 m2 + (1 - beta2) g^2
      lr_t = lr sqrt(1 - b2p) / (1 - b1p)
      p -= lr_t m1 / (sqrt(m2) + epsilon sqrt(1 - b2p))

``parameter_list=None`` (allowed here, unlike Paddle 1.8 dygraph) means the trainable
parameters reached from ``loss``'s graph: handy for layers that create their parameters
at the first call.

Paddle 2.x/3.x style (``paddle.optimizer``) works with the same classes: the keywords
``parameters`` (for ``parameter_list``) and ``weight_decay`` (for ``regularization``; a
float means ``L2Decay(weight_decay)``, as in Paddle), and the methods ``step()`` (the
update from the gradients of the last ``backward()``; needs ``parameters``) and
``clear_grad()``::

    opt = conv3dt.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    loss.backward(); opt.step(); opt.clear_grad()

Example::

    >>> import numpy as np
    >>> from conv3dt.autograd import Parameter
    >>> from conv3dt.optimizer import SGD
    >>> p = Parameter(np.array([1.0, 2.0]))
    >>> opt = SGD(learning_rate=0.5, parameter_list=[p])
    >>> loss = (p * p).sum(); loss.backward(); _ = opt.minimize(loss)
    >>> p.numpy()          # p - 0.5 * 2p
    array([0., 0.])
"""
from __future__ import annotations

import math
import numbers
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple, TypeVar,
                    Union)

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .autograd import Parameter, Variable, array_module
from .regularizer import L2Decay, WeightDecayRegularizer

__all__ = ["SGD", "Adam", "SGDOptimizer", "AdamOptimizer"]

_T = TypeVar("_T")


def _merge(label_1x: str, value_1x: _T, label_2x: str, value_2x: _T) -> _T:
    """One of the 1.x and 2.x spellings of an argument (giving both is an error)."""
    if value_1x is not None and value_2x is not None:
        raise TypeError(f"give either {label_1x} (Paddle 1.x) or {label_2x} (Paddle 2.x), "
                        "not both")
    return value_2x if value_2x is not None else value_1x


class Optimizer:
    """The base class of :class:`SGD` and :class:`Adam` (their common methods)."""

    def __init__(self, learning_rate: float, parameter_list: Optional[Iterable[Parameter]] = None,
                 regularization: Optional[WeightDecayRegularizer] = None,
                 name: Optional[str] = None, *,
                 parameters: Optional[Iterable[Parameter]] = None,
                 weight_decay: Union[float, WeightDecayRegularizer, None] = None,
                 grad_clip: None = None, multi_precision: bool = False) -> None:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise TypeError("learning rate should be float, "
                            f"but received {type(learning_rate).__name__}")
        parameter_list = _merge("parameter_list", parameter_list, "parameters", parameters)
        if isinstance(weight_decay, numbers.Real) and not isinstance(weight_decay, bool):
            weight_decay = L2Decay(float(weight_decay))  # Paddle 2.x: a float is L2Decay
        regularization = _merge("regularization", regularization, "weight_decay", weight_decay)
        if grad_clip is not None:
            raise ValueError("grad_clip is not supported by conv3dt's optimizers; clip the "
                             "gradients yourself before step()")
        if not isinstance(multi_precision, bool):
            raise TypeError(f"multi_precision must be a bool, but received {multi_precision!r}")
        # multi_precision keeps float32 master copies of float16 parameters in Paddle;
        # parameters here are float32 or float64, so there is nothing to keep.
        if regularization is not None and not isinstance(regularization, WeightDecayRegularizer):
            raise TypeError("regularization must be a conv3dt.regularizer object (e.g. "
                            f"L2Decay), but received {type(regularization).__name__}")
        self._learning_rate: float = float(learning_rate)
        self._parameter_list: Optional[List[Parameter]] = (
            None if parameter_list is None else list(parameter_list))
        for p in self._parameter_list or []:
            if not isinstance(p, Parameter):
                raise TypeError("parameter_list must hold Parameters, "
                                f"but received {type(p).__name__}")
        self.regularization: Optional[WeightDecayRegularizer] = regularization
        self._name = name
        # parameters found in the last loss graph (parameter_list=None)
        self._seen: List[Parameter] = []

    def current_step_lr(self) -> float:
        """The learning rate (Paddle 1.x's name)."""
        return self._learning_rate

    def set_lr(self, value: float) -> None:
        """Use the learning rate ``value`` from the next update on."""
        self._learning_rate = float(value)

    def _parameters(self, loss: Optional[Variable]) -> List[Parameter]:
        if self._parameter_list is not None:
            return self._parameter_list
        # Walk the graph kept on the loss (the nodes' inputs survive backward()).
        params: List[Parameter] = []
        seen: Set[int] = set()
        stack: List[Any] = [loss]
        while stack:
            var = stack.pop()
            if id(var) in seen:
                continue
            seen.add(id(var))
            if isinstance(var, Parameter):
                params.append(var)
            if var._node is not None:
                stack.extend(var._node.inputs)
        self._seen = params
        return params

    def minimize(self, loss: Optional[Variable], startup_program: None = None,
                 parameter_list: Optional[Iterable[Parameter]] = None,
                 no_grad_set: Optional[Iterable[Variable]] = None,
                 ) -> Tuple[List[Any], List[Tuple[Parameter, Any]]]:
        """Apply one update from the gradients already accumulated by ``loss.backward()``.

        Parameters
        ----------
        loss : Variable or None
            The loss whose graph holds the parameters, when the optimizer was made
            without a parameter list (else unused).
        startup_program : None
            Paddle's static graph; ignored.
        parameter_list : iterable of Parameter, optional
            Update these instead of the optimizer's parameters.
        no_grad_set : iterable of Variable, optional
            Parameters to leave alone.

        Returns
        -------
        optimize_ops : list
            Empty (Paddle's static-graph operations).
        params_grads : list of (Parameter, array)
            The parameters updated and the gradients used (regularization included);
            parameters without a gradient, or not trainable, are left out.
        """
        params = list(parameter_list) if parameter_list is not None else self._parameters(loss)
        skip = {id(p) for p in no_grad_set or ()}
        params_grads: List[Tuple[Parameter, Any]] = []
        for p in params:
            if not p.trainable or p._grad is None or id(p) in skip:
                continue
            xp = array_module(p._data)
            g = p._grad
            regularizer = p.regularizer if p.regularizer is not None else self.regularization
            if regularizer is not None:
                g = g + regularizer.grad_term(xp, p._data).astype(g.dtype, copy=False)
            lr = self._learning_rate * p.optimize_attr["learning_rate"]
            # Replace the array instead of writing into it: a graph kept with
            # retain_graph=True may still hold the old value for its backward.
            p._data = self._update(p, g, lr, xp).astype(p.dtype, copy=False)
            params_grads.append((p, g))
        return [], params_grads

    def clear_gradients(self) -> None:
        """Zero the gradients of the optimizer's parameters (those found in the last loss's
        graph when it has no parameter list)."""
        for p in self._parameter_list if self._parameter_list is not None else self._seen:
            p.clear_gradient()

    def step(self) -> None:
        """Update every parameter from the gradient that ``backward()`` accumulated
        (Paddle 2.x); parameters without one are left alone.

        Raises
        ------
        ValueError
            The optimizer was made without ``parameters``.
        """
        if self._parameter_list is None:
            raise ValueError(f"{type(self).__name__}.step() needs the parameters to update: "
                             "create the optimizer with parameters=model.parameters() (or "
                             "call minimize(loss), which finds them in loss's graph)")
        self.minimize(None)

    def clear_grad(self, set_to_zero: bool = True) -> None:
        """Zero or drop the gradients of the parameters (Paddle 2.x).

        Parameters
        ----------
        set_to_zero : bool, default True
            False drops them (``gradient()`` then raises until the next backward).
        """
        for p in self._parameter_list if self._parameter_list is not None else self._seen:
            p.clear_gradient(set_to_zero)

    def get_lr(self) -> float:
        """The learning rate (Paddle 2.x's name of ``current_step_lr``)."""
        return self._learning_rate

    def _update(self, p: Parameter, g: Any, lr: float, xp: Any) -> Any:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, NDArray[Any]]:
        """The optimizer's state by name (SGD has none: ``{}``)."""
        return {}

    def set_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Restore a state from :meth:`state_dict` (SGD has none to restore)."""

    set_state_dict = set_dict


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * g``.

    Paddle 1.x's signature ``SGD(learning_rate, parameter_list=None, regularization=None,
    name=None)`` and 2.x's ``SGD(learning_rate=0.001, parameters=None, weight_decay=None,
    grad_clip=None, multi_precision=False, name=None)`` (``parameters`` and later by
    keyword).

    Parameters
    ----------
    learning_rate : float, default 0.001
        The step size (times each parameter's ``ParamAttr.learning_rate``).
    parameter_list, parameters : iterable of Parameter, optional
        The parameters to update (1.x and 2.x names; give one). None: those reached from
        the loss given to :meth:`minimize`.
    regularization, weight_decay : L2Decay, L1Decay or float, optional
        Added to every gradient (a parameter's own ``regularizer`` wins); a float is
        ``L2Decay(float)``, as in Paddle (1.x and 2.x names; give one).
    name : str, optional
        Paddle's; ignored.
    grad_clip : None
        Gradient clipping is not supported (ValueError for anything but None).
    multi_precision : bool, default False
        Accepted (parameters are float32 or float64: nothing to keep in float32).

    Raises
    ------
    TypeError
        The learning rate is not a number, a parameter is not a Parameter, the
        regularization is not a regularizer, or both spellings of an argument are given.

    Examples
    --------
    >>> import numpy as np
    >>> from conv3dt.autograd import Parameter
    >>> p = Parameter(np.array([1.0, 2.0]))
    >>> opt = SGD(learning_rate=0.5, parameters=[p])
    >>> (p * p).sum().backward(); opt.step(); p.numpy()
    array([0., 0.])
    """

    def __init__(self, learning_rate: float = 0.001,
                 parameter_list: Optional[Iterable[Parameter]] = None,
                 regularization: Optional[WeightDecayRegularizer] = None,
                 name: Optional[str] = None, *,
                 parameters: Optional[Iterable[Parameter]] = None,
                 weight_decay: Union[float, WeightDecayRegularizer, None] = None,
                 grad_clip: None = None, multi_precision: bool = False) -> None:
        super().__init__(learning_rate, parameter_list, regularization, name,
                         parameters=parameters, weight_decay=weight_decay,
                         grad_clip=grad_clip, multi_precision=multi_precision)

    def _update(self, p: Parameter, g: Any, lr: float, xp: Any) -> Any:
        return p._data - lr * g


class Adam(Optimizer):
    """Adam with Paddle's update rule.

    Per step: ``m1 = beta1 m1 + (1 - beta1) g``, ``m2 = beta2 m2 + (1 - beta2) g^2``,
    ``lr_t = lr sqrt(1 - beta2_pow) / (1 - beta1_pow)``,
    ``p -= lr_t m1 / (sqrt(m2) + epsilon sqrt(1 - beta2_pow))`` (Paddle 2.x/3.x's adam
    kernel computes the same). Paddle 1.x's signature ``Adam(learning_rate=0.001,
    beta1=0.9, beta2=0.999, epsilon=1e-8, parameter_list=None, regularization=None,
    name=None, lazy_mode=False)`` and 2.x's (``parameters``, ``weight_decay``,
    ``grad_clip``, ``multi_precision`` by keyword) both work.

    Parameters
    ----------
    learning_rate : float, default 0.001
        The step size (times each parameter's ``ParamAttr.learning_rate``).
    beta1, beta2 : float, default 0.9, 0.999
        The moments' decay rates, in ``[0, 1)``.
    epsilon : float, default 1e-8
        Positive.
    parameter_list, parameters, regularization, weight_decay, name, grad_clip, multi_precision
        As for :class:`SGD`.
    lazy_mode : bool, default False
        Only matters for sparse gradients, which do not occur here.

    Raises
    ------
    TypeError
        As for :class:`SGD`.
    ValueError
        A beta outside ``[0, 1)`` or a non-positive epsilon.
    """

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, parameter_list: Optional[Iterable[Parameter]] = None,
                 regularization: Optional[WeightDecayRegularizer] = None,
                 name: Optional[str] = None, lazy_mode: bool = False, *,
                 parameters: Optional[Iterable[Parameter]] = None,
                 weight_decay: Union[float, WeightDecayRegularizer, None] = None,
                 grad_clip: None = None, multi_precision: bool = False) -> None:
        super().__init__(learning_rate, parameter_list, regularization, name,
                         parameters=parameters, weight_decay=weight_decay,
                         grad_clip=grad_clip, multi_precision=multi_precision)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"Adam: {label} must be in [0, 1), but received {beta}")
        if epsilon <= 0:
            raise ValueError(f"Adam: epsilon must be positive, but received {epsilon}")
        self._beta1, self._beta2, self._epsilon = float(beta1), float(beta2), float(epsilon)
        # parameter -> [moment1, moment2, beta1_pow, beta2_pow]
        self._state: Dict[Parameter, List[Any]] = {}

    def _update(self, p: Parameter, g: Any, lr: float, xp: Any) -> Any:
        if p not in self._state:
            self._state[p] = [xp.zeros_like(p._data), xp.zeros_like(p._data),
                              self._beta1, self._beta2]
        state = self._state[p]
        m1, m2, b1p, b2p = state
        b1, b2 = self._beta1, self._beta2
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2p) / (1 - b1p)  # Python floats keep float32 float32
        new = p._data - lr_t * m1 / (xp.sqrt(m2) + self._epsilon * math.sqrt(1 - b2p))
        state[:] = [m1, m2, b1p * b1, b2p * b2]
        return new

    def state_dict(self) -> Dict[str, NDArray[Any]]:
        """The moments of every parameter updated so far.

        Returns
        -------
        dict of str to numpy.ndarray
            ``'<param name>.moment1'``, ``'.moment2'``, ``'.beta1_pow'`` and
            ``'.beta2_pow'`` for each parameter.
        """
        out: Dict[str, NDArray[Any]] = {}
        for p, (m1, m2, b1p, b2p) in self._state.items():
            to_np = (lambda a: a.get()) if hasattr(m1, "__cuda_array_interface__") else np.asarray
            out[p.name + ".moment1"] = to_np(m1)
            out[p.name + ".moment2"] = to_np(m2)
            out[p.name + ".beta1_pow"] = np.array([b1p])
            out[p.name + ".beta2_pow"] = np.array([b2p])
        return out

    # Paddle 2.x/3.x's optimizer.state_dict() names the same four accumulators so.
    _PADDLE_SUFFIXES = ("_moment1_0", "_moment2_0", "_beta1_pow_acc_0", "_beta2_pow_acc_0")

    def set_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Restore moments saved by :meth:`state_dict` for the optimizer's parameters.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Keys are this class's (``'<param name>.moment1'``, ...) or Paddle 2.x/3.x's
            (``'<param name>_moment1_0'``, ``_moment2_0``, ``_beta1_pow_acc_0``,
            ``_beta2_pow_acc_0``), so a ``.pdopt`` written by ``paddle.save`` loads too.
            Parameters without entries are left alone.

        Raises
        ------
        ValueError
            The optimizer has no parameter list, or moments have the wrong shape.
        """
        if self._parameter_list is None:
            raise ValueError("Adam.set_dict needs the optimizer's parameter_list")
        for p in self._parameter_list:
            keys = [p.name + s for s in (".moment1", ".moment2", ".beta1_pow", ".beta2_pow")]
            if not all(k in state_dict for k in keys):
                keys = [p.name + s for s in self._PADDLE_SUFFIXES]
            if not all(k in state_dict for k in keys):
                continue
            xp = array_module(p._data)
            m1, m2 = (xp.asarray(np.asarray(state_dict[k]), dtype=p.dtype) for k in keys[:2])
            if m1.shape != p._data.shape or m2.shape != p._data.shape:
                raise ValueError(f"Adam.set_dict: moments of '{p.name}' have shape {m1.shape}, "
                                 f"the parameter has {p.shape}")
            self._state[p] = [m1, m2, float(np.asarray(state_dict[keys[2]]).reshape(-1)[0]),
                              float(np.asarray(state_dict[keys[3]]).reshape(-1)[0])]

    load_dict = set_dict
    set_state_dict = set_dict


SGDOptimizer = SGD
AdamOptimizer = Adam
