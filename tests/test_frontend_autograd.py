"""The autograd tape: arithmetic with broadcasting against hand-written derivatives,
accumulation, clearing, graph cutting, retain_graph, no_grad and the documented errors."""
import numpy as np
import pytest

from conv3dt.autograd import Parameter, Variable, no_grad, is_grad_enabled
from conv3dt.dygraph import to_variable


def leaf(array):
    return Variable(np.array(array, dtype=np.float64), stop_gradient=False)


@pytest.fixture
def abc(rng):
    a = rng.uniform(0.5, 2.0, (2, 3))
    b = rng.uniform(0.5, 2.0, (3,))
    c = rng.uniform(0.5, 2.0, (2, 1))
    return a, b, c


def test_binary_ops_broadcast_hand_derivatives(abc, rng):
    a, b, c = abc
    u = rng.standard_normal((2, 3))  # upstream weights make every element matter
    A, B, C = leaf(a), leaf(b), leaf(c)
    out = A * B + A / C - B ** 2 + C - A * 3.0
    (out * Variable(u)).sum().backward()
    # f = a b + a / c - b^2 + c - 3a (b broadcast over rows, c over columns)
    ga = u * (b + 1 / c - 3.0)
    gb = (u * (a - 2 * b)).sum(axis=0)
    gc = (u * (-a / c ** 2 + 1)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(A.gradient(), ga, rtol=1e-13)
    np.testing.assert_allclose(B.gradient(), gb, rtol=1e-13)
    np.testing.assert_allclose(C.gradient(), gc, rtol=1e-13)
    assert B.gradient().shape == (3,) and C.gradient().shape == (2, 1)


def test_reflected_ops_and_neg(abc):
    a, b, _ = abc
    A = leaf(a)
    out = 2.0 - A + 3.0 / A + 2.0 ** A + (-A) * 4 + 1 + A ** 3
    np.testing.assert_allclose(out.numpy(), 2 - a + 3 / a + 2 ** a - 4 * a + 1 + a ** 3)
    out.sum().backward()
    np.testing.assert_allclose(A.gradient(), -1 - 3 / a ** 2 + np.log(2) * 2 ** a - 4 + 3 * a ** 2,
                               rtol=1e-13)


def test_variable_exponent(abc):
    a, b, _ = abc
    A, B = leaf(a), leaf(b)
    (A ** B).sum().backward()
    np.testing.assert_allclose(A.gradient(), b * a ** (b - 1), rtol=1e-13)
    np.testing.assert_allclose(B.gradient(), (a ** b * np.log(a)).sum(axis=0), rtol=1e-13)


def test_ndarray_left_operand_dispatches_to_variable(abc):
    a, b, _ = abc
    A = leaf(a)
    out = b * A  # ndarray * Variable must not become an object array
    assert isinstance(out, Variable)
    out.sum().backward()
    np.testing.assert_allclose(A.gradient(), np.broadcast_to(b, a.shape))


def test_sum_mean_reshape_astype(rng):
    x = rng.standard_normal((2, 3, 4))
    X = leaf(x)
    u = rng.standard_normal((2, 4))
    y = X.sum(axis=1) * Variable(u) + X.mean(axis=(0, 2), keepdim=True).reshape(1, 3, 1).sum() \
        + X.reshape((6, 4)).astype("float32").astype("float64").mean()
    assert y.shape == (2, 4)
    y.sum().backward()
    # d/dx of sum_{i,k} u[i,k] sum_j x[i,j,k]  = u[i,k];  sum over j of mean over (0,2) of x
    # contributes 8 * 1/8 per element (the sum is broadcast to 8 outputs); the last mean 8/24.
    expected = np.broadcast_to(u[:, None, :], x.shape) + 8 * (1 / 8) + 8 / 24
    np.testing.assert_allclose(X.gradient(), expected, rtol=1e-6)
    assert X.sum().shape == () and X.mean(axis=0).shape == (3, 4)


def test_cast_keeps_gradient_dtype():
    X = Variable(np.ones(3, np.float32), stop_gradient=False)
    (X.astype("float64") * 2.0).sum().backward()
    assert X.gradient().dtype == np.float32
    np.testing.assert_array_equal(X.gradient(), [2, 2, 2])


def test_scalar_ops_keep_float32():
    X = to_variable(np.ones(3, np.float32))
    assert (X * 2.5 + 1).dtype == np.float32
    assert (1.5 / X).dtype == np.float32


def test_shared_subexpression_accumulates_within_one_backward():
    X = leaf([3.0])
    y = X * X          # used twice below: d/dx (y + y*y) = 2x + 4x^3
    (y + y * y).backward()
    np.testing.assert_allclose(X.gradient(), [2 * 3 + 4 * 27])


def test_gradients_accumulate_until_cleared():
    W = Parameter(np.array([1.0, 2.0]))
    for _ in range(3):
        (W * W).sum().backward()
    np.testing.assert_allclose(W.gradient(), 3 * 2 * np.array([1.0, 2.0]))
    W.clear_gradient()
    np.testing.assert_array_equal(W.gradient(), [0.0, 0.0])  # Paddle: zeroed, not dropped
    (W * 5.0).sum().backward()
    np.testing.assert_allclose(W.gradient(), [5.0, 5.0])
    W.clear_gradient(set_to_zero=False)
    with pytest.raises(ValueError, match="has no gradient"):
        W.gradient()


def test_data_gets_no_gradient_and_only_needed_grads_are_computed():
    calls = []

    from conv3dt.autograd import Function

    class Spy(Function):
        def forward(self, a, b):
            return a * b

        def backward(self, g, needs):
            calls.append(needs)
            return (g if needs[0] else None, g if needs[1] else None)

    data = to_variable(np.ones(2))
    assert data.stop_gradient
    W = Parameter(np.ones(2))
    Spy.apply(data, W).sum().backward()
    assert calls == [(False, True)]
    with pytest.raises(ValueError, match="generated_var.*stop_gradient=True"):
        data.gradient()


def test_stop_gradient_on_intermediate_cuts_graph():
    W = Parameter(np.array([2.0]))
    V = Parameter(np.array([3.0]))
    h = W * 4.0
    h.stop_gradient = True
    (h * V).backward()
    np.testing.assert_allclose(V.gradient(), [8.0])
    with pytest.raises(ValueError):
        W.gradient()


def test_detach():
    W = Parameter(np.array([2.0]))
    d = (W * 3.0).detach()
    assert d.stop_gradient and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [6.0])
    with pytest.raises(RuntimeError, match="stop_gradient=True"):
        (d * 2.0).backward()


def test_backward_twice_needs_retain_graph():
    W = Parameter(np.array([2.0]))
    loss = (W * W).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(W.gradient(), [8.0])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_no_grad_context_and_decorators():
    W = Parameter(np.ones(2))
    with no_grad():
        assert not is_grad_enabled()
        y = W * 2.0
    assert is_grad_enabled() and y.stop_gradient and y.is_leaf

    @no_grad
    def f(v):
        return v * 2.0

    @no_grad()
    def g(v):
        return v * 2.0

    assert f(W).stop_gradient and g(W).stop_gradient
    assert not (W * 2.0).stop_gradient

    class M:
        @no_grad
        def method(self, v):
            return v * 1.0

    assert M().method(W).stop_gradient


def test_no_grad_restores_on_exception():
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError
    assert is_grad_enabled()


def test_gradient_error_names_variable_and_non_leaf():
    W = Parameter(np.ones(2), name="my_weight")
    with pytest.raises(ValueError, match="my_weight"):
        W.gradient()
    h = W * 2.0
    h.sum().backward()
    with pytest.raises(ValueError, match="not a leaf"):
        h.gradient()


def test_dtype_mismatch_and_bad_operand_are_type_errors():
    a = to_variable(np.ones(2, np.float32))
    b = to_variable(np.ones(2, np.float64))
    with pytest.raises(TypeError, match="dtype mismatch"):
        a + b
    with pytest.raises(TypeError, match="unsupported operand"):
        a * "text"


def test_variable_conversions():
    v = to_variable(np.arange(6.0).reshape(2, 3), name="v")
    assert v.name == "v" and v.shape == (2, 3) and v.dtype == np.float64 and len(v) == 2
    np.testing.assert_array_equal(np.asarray(v), np.arange(6.0).reshape(2, 3))
    assert np.asarray(v, dtype=np.float32).dtype == np.float32
    copy = v.numpy()
    copy[0, 0] = 99
    assert v.numpy()[0, 0] == 0  # numpy() returns a copy
    assert float(v.sum()) == 15.0
    with pytest.raises(TypeError, match="one-element"):
        float(v)
    assert "shape=(2, 3)" in repr(v)


def test_set_value_checks():
    v = to_variable(np.zeros(3))
    v.set_value(np.ones(3))
    np.testing.assert_array_equal(v.numpy(), np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        v.set_value(np.ones(4))
    with pytest.raises(ValueError, match="dtype"):
        v.set_value(np.ones(3, np.float32))


def test_deep_graph_does_not_hit_recursion_limit():
    W = Parameter(np.array([1.0]))
    y = W
    for _ in range(5000):
        y = y + 1.0
    y.backward()
    np.testing.assert_array_equal(W.gradient(), [1.0])


def test_getitem_gradient_scatters_and_repeats_add(rng):
    a = rng.standard_normal((3, 4))
    X = leaf(a)
    y = X[[0, 0, 2], 1:3]          # row 0 taken twice
    np.testing.assert_array_equal(y.numpy(), a[[0, 0, 2], 1:3])
    (y * 2.0).sum().backward()
    expected = np.zeros_like(a)
    expected[0, 1:3] = 4.0
    expected[2, 1:3] = 2.0
    np.testing.assert_array_equal(X.gradient(), expected)
    X.clear_gradient()
    X[to_variable(np.array([1]))].sum().backward()
    np.testing.assert_array_equal(X.gradient()[1], np.ones(4))


def test_no_grad_decorator_misuse():
    with pytest.raises(TypeError, match="exactly one function"):
        no_grad()(1, 2)
