"""Weight-decay regularizers, as in ``paddle.fluid.regularizer``.

The optimizer adds the regularizer's term to a parameter's gradient before the update:

- ``L2Decay(coeff)``: ``grad += coeff * param``   (the gradient of coeff/2 * ||param||^2)
- ``L1Decay(coeff)``: ``grad += coeff * sign(param)``

A regularizer given in a parameter's ``ParamAttr`` overrides the optimizer's
``regularization`` for that parameter.

Example::

    >>> import numpy as np
    >>> from conv3dt.regularizer import L2Decay
    >>> L2Decay(0.1).grad_term(np, np.array([1.0, -2.0]))
    array([ 0.1, -0.2])
"""

__all__ = ["L2Decay", "L2DecayRegularizer", "L1Decay", "L1DecayRegularizer"]


class WeightDecayRegularizer:
    def __init__(self, regularization_coeff=0.0):
        if isinstance(regularization_coeff, bool) or not isinstance(regularization_coeff, (int, float)):
            raise TypeError(f"{type(self).__name__}: regularization_coeff must be a number, "
                            f"but received {type(regularization_coeff).__name__}")
        self._regularization_coeff = float(regularization_coeff)

    @property
    def coeff(self):
        return self._regularization_coeff

    def grad_term(self, xp, param):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(regularization_coeff={self._regularization_coeff})"


class L2Decay(WeightDecayRegularizer):
    """``grad += coeff * param``."""

    def grad_term(self, xp, param):
        return self._regularization_coeff * param


class L1Decay(WeightDecayRegularizer):
    """``grad += coeff * sign(param)``."""

    def grad_term(self, xp, param):
        return self._regularization_coeff * xp.sign(param)


L2DecayRegularizer = L2Decay
L1DecayRegularizer = L1Decay
