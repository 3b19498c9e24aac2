"""conv3dt.gradcheck: passes on correct gradients, catches wrong ones (reporting the worst
mismatch), handles large inputs by random directions, restores state, and its errors."""
import numpy as np
import pytest

from conv3dt.autograd import Function, Parameter, Variable
from conv3dt.gradcheck import GradcheckError, gradcheck


def leaf(a):
    return Variable(np.array(a, dtype=np.float64), stop_gradient=False)


class WrongSquare(Function):
    """y = x^2 with a deliberately wrong gradient at one element."""

    def forward(self, x):
        self.save(x)
        return x * x

    def backward(self, g, needs):
        (x,) = self.saved
        grad = 2 * x * g
        grad.reshape(-1)[self.bad_index] *= 1.01
        return (grad,)


def test_passes_on_correct_gradients(rng):
    a, b = leaf(rng.uniform(0.5, 2, (3, 4))), leaf(rng.uniform(0.5, 2, (4,)))
    assert gradcheck(lambda a, b: a * b / (a + b) - b ** 2, [a, b]) is True


def test_reports_worst_mismatch(rng):
    x = leaf(rng.uniform(1, 2, (2, 3)))
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda v: WrongSquare.apply(v, bad_index=4), [x])
    err = info.value
    assert isinstance(err, AssertionError)
    i, index, analytic, numeric = err.worst
    assert i == 0 and index == (1, 1)
    assert analytic == pytest.approx(1.01 * numeric, rel=1e-6)
    assert "index (1, 1)" in str(err) and "analytic" in str(err) and "numeric" in str(err)


def test_large_input_uses_random_directions(rng):
    x = leaf(rng.uniform(1, 2, 5000))
    assert gradcheck(lambda v: v * v, [x], max_elementwise=100)
    with pytest.raises(GradcheckError, match="direction"):
        gradcheck(lambda v: WrongSquare.apply(v, bad_index=slice(None)), [x],
                  max_elementwise=100)


def test_skips_stop_gradient_inputs_and_restores_state(rng):
    data = Variable(rng.standard_normal(3))          # stop_gradient=True: not checked
    w = Parameter(rng.standard_normal(3))
    (w * 3.0).sum().backward()
    grad_before, value_before = w.gradient(), w.numpy()
    assert gradcheck(lambda d, p: d * p, [data, w])
    np.testing.assert_array_equal(w.gradient(), grad_before)
    np.testing.assert_array_equal(w.numpy(), value_before)
    with pytest.raises(ValueError):
        data.gradient()


def test_input_the_output_ignores_has_zero_gradient(rng):
    a, unused = leaf(rng.standard_normal(3)), leaf(rng.standard_normal(2))
    assert gradcheck(lambda a, u: a * 2.0, [a, unused])


def test_single_variable_input(rng):
    assert gradcheck(lambda v: v.sum(), leaf(rng.standard_normal(4)))


def test_errors(rng):
    x = leaf(rng.standard_normal(3))
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda v: v, [Variable(np.ones(3, np.float32), stop_gradient=False)])
    with pytest.raises(ValueError, match="no input has stop_gradient=False"):
        gradcheck(lambda v: v, [Variable(np.ones(3))])
    with pytest.raises(TypeError, match="must be a Variable"):
        gradcheck(lambda v: v, [np.ones(3)])
    with pytest.raises(TypeError, match="must return a Variable"):
        gradcheck(lambda v: v.numpy(), [x])
    with pytest.raises(ValueError, match="does not depend"):
        gradcheck(lambda v: v.detach(), [x])
