"""Finite-difference gradient check for functions of Variables.

``gradcheck(func, inputs)`` compares the autograd gradient of

    L(inputs) = sum(func(*inputs) * u),   u a fixed random upstream gradient,

with central differences ``(L(x + eps e) - L(x - eps e)) / (2 eps)`` for every input with
``stop_gradient=False``: along every coordinate ``e`` for inputs of at most
``max_elementwise`` elements, along ``n_directions`` random unit directions for larger
ones. An entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.

Work in float64: with float32 the differences are dominated by rounding, so float32
inputs are refused (TypeError). Inputs are perturbed in place (on a private copy that is
swapped back afterwards), so ``func`` may close over the Variables, e.g. a layer's
parameters. Gradients the inputs had before the call are restored.

Example::

    >>> import numpy as np
    >>> from conv3dt.autograd import Variable
    >>> from conv3dt.gradcheck import gradcheck
    >>> x = Variable(np.random.rand(3, 4), stop_gradient=False)
    >>> gradcheck(lambda x: x * x / (x + 1.0), [x])
    True
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .autograd import Variable, array_module, no_grad

__all__ = ["gradcheck", "GradcheckError"]

# Where a probe looks: an element's index, or "direction N".
_Probe = Union[Tuple[int, ...], str]


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree.

    Parameters
    ----------
    message : str
        What disagrees, and by how much.
    worst : tuple
        ``(input index, element index or 'direction N', analytic, numeric)`` of the
        worst mismatch; kept as the ``worst`` attribute.
    """

    def __init__(self, message: str, worst: Tuple[int, _Probe, float, float]) -> None:
        super().__init__(message)
        self.worst = worst


def gradcheck(func: Callable[..., Variable], inputs: Union[Variable, Sequence[Variable]],
              eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, *,
              max_elementwise: int = 4096, n_directions: int = 8, seed: int = 0) -> bool:
    """Compare the autograd gradients of ``func`` with central finite differences.

    Parameters
    ----------
    func : callable
        ``func(*inputs)`` returns a Variable that depends on the inputs with
        ``stop_gradient=False``. It may close over other Variables (a layer's
        parameters, say): inputs are perturbed in place, on a private copy.
    inputs : conv3dt.autograd.Variable or sequence of Variable
        The arguments of ``func``; those with ``stop_gradient=False`` (float64) are
        checked.
    eps : float, default 1e-6
        The finite-difference step.
    atol, rtol : float, default 1e-5 and 1e-3
        An entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    max_elementwise : int, default 4096
        Inputs of at most this many elements are probed along every coordinate, larger
        ones along ``n_directions`` random unit directions.
    n_directions : int, default 8
        The number of random directions for large inputs.
    seed : int, default 0
        The seed of the upstream gradient ``u`` and of the directions.

    Returns
    -------
    bool
        True: every entry passes.

    Raises
    ------
    GradcheckError
        (an :class:`AssertionError`) naming the worst mismatch: the input, the index
        or direction, the analytic and the numeric value.
    TypeError
        If an input is not a Variable, an input to check is not float64, or ``func``
        returns no Variable.
    ValueError
        If no input has ``stop_gradient=False``, or ``func``'s result does not depend on
        any of them.

    Notes
    -----
    The loss is ``L = sum(func(*inputs) * u)``, ``u`` a fixed random upstream gradient;
    the numeric derivative along ``e`` is ``(L(x + eps e) - L(x - eps e)) / (2 eps)``.
    Gradients the inputs had before the call are restored.

    Examples
    --------
    >>> import numpy as np
    >>> from conv3dt.autograd import Variable
    >>> from conv3dt.gradcheck import gradcheck
    >>> x = Variable(np.random.rand(3, 4), stop_gradient=False)
    >>> gradcheck(lambda x: x * x / (x + 1.0), [x])
    True
    """
    inputs = [inputs] if isinstance(inputs, Variable) else list(inputs)
    for i, v in enumerate(inputs):
        if not isinstance(v, Variable):
            raise TypeError(f"gradcheck: inputs[{i}] must be a Variable, "
                            f"but received {type(v).__name__}")
    wrt = [i for i, v in enumerate(inputs) if not v.stop_gradient]
    if not wrt:
        raise ValueError("gradcheck: no input has stop_gradient=False, nothing to check")
    for i in wrt:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: inputs[{i}] ('{inputs[i].name}') is "
                            f"{inputs[i].dtype}; finite differences need float64")
    previous_grads = [inputs[i]._grad for i in wrt]
    originals = [inputs[i]._data for i in wrt]
    try:
        for i in wrt:
            inputs[i]._grad = None
        out = func(*inputs)
        if not isinstance(out, Variable):
            raise TypeError(f"gradcheck: func must return a Variable, "
                            f"but returned {type(out).__name__}")
        if out.stop_gradient:
            raise ValueError("gradcheck: func's output does not depend on any input that "
                             "needs a gradient (it has stop_gradient=True)")
        xp = array_module(out._data)
        rng = np.random.default_rng(seed)
        upstream = xp.asarray(rng.standard_normal(out.shape), dtype=out.dtype)
        (out * Variable(upstream)).sum().backward()
        analytic = [inputs[i]._grad for i in wrt]

        def loss() -> float:
            with no_grad():
                return float((func(*inputs)._data * upstream).sum())

        # (excess over tolerance, input index, index, analytic, numeric)
        worst: Optional[Tuple[float, int, _Probe, float, float]] = None
        for k, i in enumerate(wrt):
            var = inputs[i]
            var._data = originals[k].copy()  # perturb a private copy, never shared memory
            flat = var._data.reshape(-1)    # a view of the contiguous copy
            grad = (xp.zeros_like(var._data) if analytic[k] is None else analytic[k]).reshape(-1)
            grad = grad.get() if hasattr(grad, "__cuda_array_interface__") else np.asarray(grad)
            base = flat.copy()
            probes: List[Tuple[_Probe, Any]]
            if var.size <= max_elementwise:
                probes = [(tuple(int(n) for n in np.unravel_index(j, var.shape)), j)
                          for j in range(var.size)]
            else:
                probes = []
                for n in range(n_directions):
                    d = rng.standard_normal(var.size)
                    probes.append((f"direction {n}", d / np.linalg.norm(d)))
            for label, probe in probes:
                if isinstance(probe, (int, np.integer)):
                    step = xp.zeros_like(base)
                    step[probe] = eps
                    a = float(grad[probe])
                else:
                    step = xp.asarray(probe * eps)
                    a = float(grad @ probe)
                flat[...] = base + step
                plus = loss()
                flat[...] = base - step
                minus = loss()
                flat[...] = base
                numeric = (plus - minus) / (2 * eps)
                excess = abs(a - numeric) - (atol + rtol * abs(numeric))
                if worst is None or excess > worst[0]:
                    worst = (excess, i, label, a, numeric)
    finally:
        for k, i in enumerate(wrt):
            inputs[i]._data = originals[k]
            inputs[i]._grad = previous_grads[k]
    if worst is not None and worst[0] > 0:  # (None: only empty inputs, nothing to compare)
        _, i, label, a, numeric = worst
        raise GradcheckError(
            f"gradcheck failed: worst mismatch at input {i} ('{inputs[i].name}'), index "
            f"{label}: analytic {a!r}, numeric {numeric!r} (|diff| {abs(a - numeric):.3g} > "
            f"atol {atol} + rtol {rtol} * |numeric|)", worst[1:])
    return True
