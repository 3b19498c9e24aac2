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
import math
import numbers

import numpy as np

from .autograd import Parameter, array_module
from .regularizer import WeightDecayRegularizer

__all__ = ["SGD", "Adam", "SGDOptimizer", "AdamOptimizer"]


class Optimizer:
    def __init__(self, learning_rate, parameter_list=None, regularization=None, name=None):
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise TypeError("learning rate should be float, "
                            f"but received {type(learning_rate).__name__}")
        if regularization is not None and not isinstance(regularization, WeightDecayRegularizer):
            raise TypeError("regularization must be a conv3dt.regularizer object (e.g. "
                            f"L2Decay), but received {type(regularization).__name__}")
        self._learning_rate = float(learning_rate)
        self._parameter_list = None if parameter_list is None else list(parameter_list)
        for p in self._parameter_list or []:
            if not isinstance(p, Parameter):
                raise TypeError("parameter_list must hold Parameters, "
                                f"but received {type(p).__name__}")
        self.regularization = regularization
        self._name = name
        self._seen = []  # parameters found in the last loss graph (parameter_list=None)

    def current_step_lr(self):
        return self._learning_rate

    def set_lr(self, value):
        self._learning_rate = float(value)

    def _parameters(self, loss):
        if self._parameter_list is not None:
            return self._parameter_list
        # Walk the graph kept on the loss (the nodes' inputs survive backward()).
        params, seen, stack = [], set(), [loss]
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

    def minimize(self, loss, startup_program=None, parameter_list=None, no_grad_set=None):
        """Apply one update from the gradients already accumulated by ``loss.backward()``.

        Returns ``([], params_grads)`` with ``params_grads`` the list of
        ``(parameter, gradient array)`` actually used (regularization included)."""
        params = list(parameter_list) if parameter_list is not None else self._parameters(loss)
        skip = {id(p) for p in no_grad_set or ()}
        params_grads = []
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

    def clear_gradients(self):
        """Zero the gradients of the optimizer's parameters."""
        for p in self._parameter_list if self._parameter_list is not None else self._seen:
            p.clear_gradient()

    def _update(self, p, g, lr, xp):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def set_dict(self, state_dict):
        pass


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * g``."""

    def __init__(self, learning_rate, parameter_list=None, regularization=None, name=None):
        super().__init__(learning_rate, parameter_list, regularization, name)

    def _update(self, p, g, lr, xp):
        return p._data - lr * g


class Adam(Optimizer):
    """Adam with Paddle's update rule (see the module docstring)."""

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 parameter_list=None, regularization=None, name=None, lazy_mode=False):
        super().__init__(learning_rate, parameter_list, regularization, name)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"Adam: {label} must be in [0, 1), but received {beta}")
        if epsilon <= 0:
            raise ValueError(f"Adam: epsilon must be positive, but received {epsilon}")
        self._beta1, self._beta2, self._epsilon = float(beta1), float(beta2), float(epsilon)
        self._state = {}  # parameter -> [moment1, moment2, beta1_pow, beta2_pow]

    def _update(self, p, g, lr, xp):
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

    def state_dict(self):
        """``{'<param name>.moment1': array, '.moment2', '.beta1_pow', '.beta2_pow'}``."""
        out = {}
        for p, (m1, m2, b1p, b2p) in self._state.items():
            to_np = (lambda a: a.get()) if hasattr(m1, "__cuda_array_interface__") else np.asarray
            out[p.name + ".moment1"] = to_np(m1)
            out[p.name + ".moment2"] = to_np(m2)
            out[p.name + ".beta1_pow"] = np.array([b1p])
            out[p.name + ".beta2_pow"] = np.array([b2p])
        return out

    def set_dict(self, state_dict):
        """Restore moments saved by ``state_dict`` for the parameters in ``parameter_list``."""
        if self._parameter_list is None:
            raise ValueError("Adam.set_dict needs the optimizer's parameter_list")
        for p in self._parameter_list:
            keys = [p.name + s for s in (".moment1", ".moment2", ".beta1_pow", ".beta2_pow")]
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


SGDOptimizer = SGD
AdamOptimizer = Adam
