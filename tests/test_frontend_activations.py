"""Activations (values against NumPy formulas written here, gradients by central differences
computed here) and the loss-building functions of conv3dt.layers."""
import math

import numpy as np
import pytest
from scipy.special import erf

import conv3dt.layers as L
from conv3dt import _activations
from conv3dt.autograd import Variable
from conv3dt.dygraph import to_variable

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

# Paddle fluid's formulas and default attributes, spelled out independently.
REFERENCE = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.02 * x),
    "elu": lambda x: np.where(x > 0, x, 1.0 * (np.exp(x) - 1)),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "swish": lambda x: x / (1 + np.exp(-1.0 * x)),
    "hard_swish": lambda x: x * np.minimum(np.maximum(x + 3.0, 0), 6.0) / 6.0,
    "tanh": np.tanh,
    "softplus": lambda x: np.log(1 + np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
}

# Points away from every kink (0, +-3 for hard_swish, +-2.5 for hard_sigmoid, 6 for relu6)
# so that central differences are exact up to O(h^2).
POINTS = np.array([-7.3, -4.1, -2.9, -2.2, -1.3, -0.6, -0.05, 0.04, 0.7, 1.6, 2.4, 2.8,
                   3.3, 5.2, 6.8, 9.1])


def test_table_covers_exactly_the_documented_names():
    assert set(_activations.ACTIVATIONS) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_value(name, dtype):
    x = POINTS.astype(dtype)
    y = getattr(L, name)(to_variable(x))
    assert y.dtype == np.dtype(dtype)
    tol = 1e-13 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(y.numpy(), REFERENCE[name](POINTS), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_gradient_by_central_differences(name):
    x = Variable(POINTS.copy(), stop_gradient=False)
    getattr(L, name)(x).sum().backward()
    h = 1e-6
    numeric = (REFERENCE[name](POINTS + h) - REFERENCE[name](POINTS - h)) / (2 * h)
    np.testing.assert_allclose(x.gradient(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "elu", "selu", "swish", "tanh"])
def test_no_overflow_in_float32(name):
    x = to_variable(np.array([-1e4, -100.0, 100.0, 1e4], np.float32))
    x.stop_gradient = False
    with np.errstate(over="raise", invalid="raise"):
        y = getattr(L, name)(x)
        y.sum().backward()
    assert np.isfinite(y.numpy()).all() and np.isfinite(x.gradient()).all()


def test_non_default_attributes():
    x = POINTS
    v = to_variable(x)
    np.testing.assert_allclose(L.leaky_relu(v, alpha=0.3).numpy(), np.where(x > 0, x, 0.3 * x))
    np.testing.assert_allclose(L.relu6(v, threshold=2.0).numpy(), np.clip(x, 0, 2.0))
    np.testing.assert_allclose(L.elu(v, alpha=0.5).numpy(), np.where(x > 0, x, 0.5 * np.expm1(x)))
    np.testing.assert_allclose(L.hard_sigmoid(v, slope=0.1, offset=0.3).numpy(),
                               np.clip(0.1 * x + 0.3, 0, 1))
    np.testing.assert_allclose(L.swish(v, beta=2.0).numpy(), x / (1 + np.exp(-2 * x)))
    np.testing.assert_allclose(L.hard_swish(v, threshold=4.0, scale=5.0, offset=1.0).numpy(),
                               x * np.clip(x + 1, 0, 4) / 5)
    np.testing.assert_allclose(L.selu(v, scale=2.0, alpha=0.5).numpy(),
                               2 * np.where(x > 0, x, 0.5 * np.expm1(x)))
    c = math.sqrt(2 / math.pi)
    np.testing.assert_allclose(L.gelu(v, approximate=True).numpy(),
                               0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3))))


def test_gelu_approximate_gradient():
    x = Variable(POINTS.copy(), stop_gradient=False)
    L.gelu(x, approximate=True).sum().backward()
    c = math.sqrt(2 / math.pi)
    f = lambda t: 0.5 * t * (1 + np.tanh(c * (t + 0.044715 * t ** 3)))  # noqa: E731
    h = 1e-6
    np.testing.assert_allclose(x.gradient(), (f(POINTS + h) - f(POINTS - h)) / (2 * h), rtol=1e-6)


def test_unknown_activation_name():
    with pytest.raises(ValueError, match="supported: None, 'relu'"):
        _activations.check_name("mish")
    with pytest.raises(ValueError, match="unsupported activation"):
        L.elementwise_add(to_variable(np.ones(2)), to_variable(np.ones(2)), act="bogus")


# ------------------------------------------------------------------ conv3dt.layers

def leaf(a):
    return Variable(np.array(a, dtype=np.float64), stop_gradient=False)


def test_reduce_sum_and_mean(rng):
    a = rng.standard_normal((2, 3, 4))
    X = leaf(a)
    assert L.reduce_sum(X).shape == (1,)  # Paddle 1.8: a full reduction has shape [1]
    np.testing.assert_allclose(L.reduce_sum(X).numpy(), [a.sum()])
    np.testing.assert_allclose(L.reduce_mean(X, dim=[0, 2]).numpy(), a.mean(axis=(0, 2)))
    np.testing.assert_allclose(L.reduce_sum(X, dim=-1, keep_dim=True).numpy(),
                               a.sum(axis=-1, keepdims=True))
    assert L.reduce_mean(X, keep_dim=True).shape == (1, 1, 1)
    u = rng.standard_normal(3)
    (L.reduce_mean(X, dim=[0, 2]) * Variable(u)).sum().backward()
    np.testing.assert_allclose(X.gradient(), np.broadcast_to(u[None, :, None] / 8, a.shape))
    with pytest.raises(ValueError, match="dim 3 is out of range"):
        L.reduce_sum(X, dim=3)
    with pytest.raises(TypeError, match="must be a Variable"):
        L.reduce_sum(a)


def test_square_and_elementwise(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal(3)
    X, Y = leaf(a), leaf(b)
    out = L.elementwise_mul(L.square(X), Y, axis=1)   # y aligned with x's dim 1
    np.testing.assert_allclose(out.numpy(), a ** 2 * b[None, :, None])
    out.sum().backward()
    np.testing.assert_allclose(X.gradient(), 2 * a * b[None, :, None])
    np.testing.assert_allclose(Y.gradient(), (a ** 2).sum(axis=(0, 2)))
    np.testing.assert_allclose(L.elementwise_add(X, leaf(a[0, 0])).numpy(), a + a[0, 0])
    np.testing.assert_allclose(L.elementwise_sub(X, Y, axis=1, act="relu").numpy(),
                               np.maximum(a - b[None, :, None], 0))
    with pytest.raises(ValueError, match="axis 2"):
        L.elementwise_add(X, Y, axis=2)


def test_mse_loss(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    X = leaf(a)
    loss = L.mse_loss(X, to_variable(b))
    assert loss.shape == (1,)
    np.testing.assert_allclose(loss.numpy(), [np.mean((a - b) ** 2)])
    loss.backward()
    np.testing.assert_allclose(X.gradient(), 2 * (a - b) / a.size)
