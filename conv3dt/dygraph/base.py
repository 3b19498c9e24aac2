"""``guard``, ``enabled``, ``no_grad`` and ``to_variable``, as in ``paddle.fluid.dygraph.base``.

conv3dt always runs eagerly, so ``guard()`` is not needed for anything to work; it exists
so that Paddle code runs unchanged, and it does what matters here:

- ``enabled()`` is True inside a guard, False outside (Paddle's ``in_dygraph_mode``);
- its ``place`` (``CPUPlace()`` / ``CUDAPlace(i)``) decides where new parameters and
  ``to_variable`` results live; ``place=None`` keeps the enclosing guard's place (none at
  the top: arrays stay where they are, parameters are made on the CPU);
- names restart inside each guard (``conv3d_transpose_0`` ...), as in Paddle.

Guards nest; leaving one, normally or by an exception, restores the previous state.

Example::

    >>> import numpy as np
    >>> from conv3dt import dygraph
    >>> with dygraph.guard():
    ...     x = dygraph.to_variable(np.ones((2, 3), "float32"))
    ...     inside = dygraph.enabled()
    >>> inside, dygraph.enabled(), x.shape, x.stop_gradient
    (True, False, (2, 3), True)
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _place
from .._place import Place
from ..autograd import Variable, fresh_names, no_grad

__all__ = ["guard", "enabled", "no_grad", "to_variable", "current_place"]

# The guard stack: one entry (place) per active guard, innermost last.
_guards: List[Optional[Place]] = []


def enabled() -> bool:
    """Whether a :func:`guard` is active (Paddle's ``in_dygraph_mode``).

    Returns
    -------
    bool
        True inside ``dygraph.guard()``, False outside.
    """
    return bool(_guards)


def current_place() -> Optional[Place]:
    """Where new parameters and variables are made.

    Returns
    -------
    CPUPlace or CUDAPlace or None
        The place of the innermost guard that named one; None outside such guards
        (arrays stay where they are).
    """
    for place in reversed(_guards):
        if place is not None:
            return place
    return None


@contextlib.contextmanager
def guard(place: Optional[Place] = None) -> Iterator[None]:
    """Enter dygraph mode, with new parameters and variables living on ``place``.

    Parameters
    ----------
    place : CPUPlace or CUDAPlace, optional
        None keeps the enclosing guard's place.

    Raises
    ------
    TypeError
        ``place`` is not a place.
    RuntimeError
        ``place`` is a ``CUDAPlace`` and CuPy is not installed.
    """
    _place._check_place(place)
    if isinstance(place, _place.CUDAPlace):
        _place._import_cupy()  # fail at the guard, not at the first parameter
    _guards.append(place)
    try:
        with fresh_names():
            yield
    finally:
        _guards.pop()


def to_variable(value: Union[Variable, ArrayLike], name: Optional[str] = None,
                zero_copy: Optional[bool] = None, dtype: Optional[DTypeLike] = None) -> Variable:
    """Wrap data in a Variable with ``stop_gradient=True``.

    Parameters
    ----------
    value : numpy.ndarray, list, tuple, CuPy array or Variable
        The data (copied); a Variable is returned as it is.
    name : str, optional
        The variable's name.
    zero_copy : bool, optional
        True shares a NumPy array's memory instead of copying it, when no place or dtype
        change forces a copy.
    dtype : str or numpy dtype, optional
        Cast to it (e.g. ``'float32'``).

    Returns
    -------
    Variable
        On the current guard's place (:func:`current_place`).

    Raises
    ------
    TypeError
        ``value`` is of another type, or a list that forms no numeric array.

    Examples
    --------

    >>> import numpy as np
    >>> from conv3dt.dygraph import to_variable
    >>> float(to_variable([[1, 2], [3, 4]], dtype="float64").numpy().sum())
    10.0
    """
    if isinstance(value, Variable):
        return value
    array: Any
    on_gpu = hasattr(value, "__cuda_array_interface__")
    if not (isinstance(value, (np.ndarray, list, tuple)) or on_gpu):
        raise TypeError("The type of 'value' in fluid.dygraph.to_variable must be np.ndarray, "
                        f"list, tuple, or Variable, but received {type(value)}")
    if on_gpu:
        gpu_array: Any = value
        array = gpu_array.copy() if not zero_copy else gpu_array
    elif isinstance(value, np.ndarray):
        array = value if zero_copy else np.array(value, copy=True)
    else:
        try:
            array = np.array(value)
        except ValueError:  # ragged nesting: NumPy refuses it
            array = np.empty(0, dtype=object)
        if array.dtype == object:
            raise TypeError("to_variable: the list/tuple does not form a numeric array "
                            "(ragged or non-numeric elements)")
    if dtype is not None:
        array = array.astype(np.dtype(dtype), copy=False)
    array = _place.to_place(array, current_place())
    return Variable(array, name=name, stop_gradient=True)
