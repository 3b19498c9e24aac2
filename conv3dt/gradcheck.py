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
import numpy as np

from .autograd import Variable, array_module, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree; ``worst`` holds
    ``(input index, element index or direction, analytic, numeric)``."""

    def __init__(self, message, worst):
        super().__init__(message)
        self.worst = worst


def gradcheck(func, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, *, max_elementwise=4096,
              n_directions=8, seed=0):
    """True when the gradients match; GradcheckError (an AssertionError) reporting the worst
    mismatch (input, index, analytic, numeric) otherwise."""
    single = isinstance(inputs, Variable)
    inputs = [inputs] if single else list(inputs)
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

        def loss():
            with no_grad():
                return float((func(*inputs)._data * upstream).sum())

        worst = None  # (excess over tolerance, input index, index, analytic, numeric)
        for k, i in enumerate(wrt):
            var = inputs[i]
            var._data = originals[k].copy()  # perturb a private copy, never shared memory
            flat = var._data.reshape(-1)    # a view of the contiguous copy
            grad = (xp.zeros_like(var._data) if analytic[k] is None else analytic[k]).reshape(-1)
            grad = grad.get() if hasattr(grad, "__cuda_array_interface__") else np.asarray(grad)
            base = flat.copy()
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
    if worst[0] > 0:
        _, i, label, a, numeric = worst
        raise GradcheckError(
            f"gradcheck failed: worst mismatch at input {i} ('{inputs[i].name}'), index "
            f"{label}: analytic {a!r}, numeric {numeric!r} (|diff| {abs(a - numeric):.3g} > "
            f"atol {atol} + rtol {rtol} * |numeric|)", worst[1:])
    return True
