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

from typing import Any

__all__ = ["L2Decay", "L2DecayRegularizer", "L1Decay", "L1DecayRegularizer"]


class WeightDecayRegularizer:
    """Base class of the regularizers: a coefficient and the term it adds to a gradient.

    Parameters
    ----------
    regularization_coeff : float, default 0.0
        The coefficient ``coeff`` of the decay term.

    Raises
    ------
    TypeError
        If ``regularization_coeff`` is not an int or a float (a bool is refused).
    """

    def __init__(self, regularization_coeff: float = 0.0) -> None:
        if isinstance(regularization_coeff, bool) or not isinstance(regularization_coeff, (int, float)):
            raise TypeError(f"{type(self).__name__}: regularization_coeff must be a number, "
                            f"but received {type(regularization_coeff).__name__}")
        self._regularization_coeff = float(regularization_coeff)

    @property
    def coeff(self) -> float:
        """The coefficient, a float."""
        return self._regularization_coeff

    def grad_term(self, xp: Any, param: Any) -> Any:
        """The term added to the gradient of ``param``.

        Parameters
        ----------
        xp : module
            The array module of ``param``: :mod:`numpy`, or ``cupy`` for a GPU array.
        param : numpy.ndarray or cupy.ndarray
            The parameter's value.

        Returns
        -------
        numpy.ndarray or cupy.ndarray
            An array of ``param``'s shape, on its device.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(regularization_coeff={self._regularization_coeff})"


class L2Decay(WeightDecayRegularizer):
    """L2 weight decay: ``grad += coeff * param``, the gradient of
    ``coeff / 2 * ||param||^2``.

    Parameters
    ----------
    regularization_coeff : float, default 0.0
        The coefficient ``coeff``.
    """

    def grad_term(self, xp: Any, param: Any) -> Any:
        return self._regularization_coeff * param


class L1Decay(WeightDecayRegularizer):
    """L1 weight decay: ``grad += coeff * sign(param)``, the (sub)gradient of
    ``coeff * ||param||_1``.

    Parameters
    ----------
    regularization_coeff : float, default 0.0
        The coefficient ``coeff``.
    """

    def grad_term(self, xp: Any, param: Any) -> Any:
        return self._regularization_coeff * xp.sign(param)


L2DecayRegularizer = L2Decay
L1DecayRegularizer = L1Decay
