"""Initializers, ParamAttr, regularizer objects: statistics, bounds, reproducibility, errors."""
import math

import numpy as np
import pytest

import conv3dt.initializer as I
from conv3dt.autograd import Variable
from conv3dt.dygraph import Conv3DTranspose
from conv3dt.param_attr import ParamAttr
from conv3dt.regularizer import L1Decay, L2Decay, L2DecayRegularizer


def fill(init, shape, dtype="float64"):
    v = Variable(np.zeros(shape, dtype))
    init(v)
    return v.numpy()


def test_default_conv_init_xavier_bound_and_zero_bias():
    I.seed(0)
    c_in, c_out, groups, k = 8, 12, 2, (3, 4, 5)
    layer = Conv3DTranspose(c_in, c_out, filter_size=k, groups=groups)
    w = layer.weight.numpy()
    assert w.shape == (c_in, c_out // groups, *k) and w.dtype == np.float32
    receptive = 3 * 4 * 5
    limit = math.sqrt(6 / ((c_out // groups) * receptive + c_in * receptive))
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.98 * limit            # really uses the whole range
    assert abs(w.mean()) < 0.05 * limit
    assert abs(w.var() - limit ** 2 / 3) < 0.05 * limit ** 2 / 3  # var of U(-l, l)
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(c_out, np.float32))
    assert not layer.weight.stop_gradient and not layer.bias.stop_gradient


def test_seed_reproducibility():
    I.seed(123)
    a = Conv3DTranspose(3, 4, filter_size=3).weight.numpy()
    b = Conv3DTranspose(3, 4, filter_size=3).weight.numpy()
    I.seed(123)
    c = Conv3DTranspose(3, 4, filter_size=3).weight.numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_per_initializer_seed_repeats():
    u = I.Uniform(-2, 2, seed=9)
    np.testing.assert_array_equal(fill(u, (50,)), fill(u, (50,)))
    I.seed(1)
    g1 = fill(I.Uniform(-2, 2), (50,))
    g2 = fill(I.Uniform(-2, 2), (50,))
    assert not np.array_equal(g1, g2)


def test_constant_uniform_normal_statistics():
    I.seed(5)
    np.testing.assert_array_equal(fill(I.Constant(2.5), (3, 4)), np.full((3, 4), 2.5))
    u = fill(I.Uniform(-3, 1), (20000,))
    assert u.min() >= -3 and u.max() <= 1 and abs(u.mean() + 1) < 0.05
    n = fill(I.Normal(1.0, 2.0), (20000,))
    assert abs(n.mean() - 1) < 0.05 and abs(n.std() - 2) < 0.05


def test_truncated_normal_within_two_std():
    I.seed(5)
    t = fill(I.TruncatedNormal(1.0, 0.5), (20000,))
    assert t.min() >= 0.0 and t.max() <= 2.0
    # std of a N(0,1) truncated to [-2, 2] is 0.8796
    assert abs(t.std() - 0.5 * 0.8796) < 0.01


def test_xavier_and_msra_fans():
    I.seed(5)
    shape = (6, 10)  # 2-D: fan_in = 6, fan_out = 10
    x = fill(I.Xavier(), shape)
    assert np.abs(x).max() <= math.sqrt(6 / 16)
    xn = fill(I.Xavier(uniform=False, fan_in=100, fan_out=100), (20000,))
    assert abs(xn.std() - math.sqrt(2 / 200)) < 0.003
    m = fill(I.MSRA(), (4, 3, 2, 2, 2))   # fan_in = 3 * 8
    assert np.abs(m).max() <= math.sqrt(6 / 24) and np.abs(m).max() > 0.9 * math.sqrt(6 / 24)
    mn = fill(I.MSRA(uniform=False, fan_in=50), (20000,))
    assert abs(mn.std() - math.sqrt(2 / 50)) < 0.003
    assert I.compute_fans((5,)) == (5, 5) and I.compute_fans((2, 3, 4, 5)) == (60, 40)


def test_numpy_array_initializer():
    value = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(fill(I.NumpyArrayInitializer(value), (2, 3), "float32"), value)
    with pytest.raises(ValueError, match=r"does not match the parameter shape \(3, 2\)"):
        fill(I.NumpyArrayInitializer(value), (3, 2))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        I.NumpyArrayInitializer([1, 2])


def test_paddle_aliases():
    assert I.XavierInitializer is I.Xavier and I.MSRAInitializer is I.MSRA
    assert I.ConstantInitializer is I.Constant and I.UniformInitializer is I.Uniform
    assert I.NormalInitializer is I.Normal and I.TruncatedNormalInitializer is I.TruncatedNormal
    assert L2DecayRegularizer is L2Decay


def test_uniform_low_above_high():
    with pytest.raises(ValueError, match="low"):
        I.Uniform(2, 1)


def test_param_attr_coercion_and_errors():
    assert ParamAttr._to_attr(None).learning_rate == 1.0
    assert ParamAttr._to_attr("w").name == "w"
    assert isinstance(ParamAttr._to_attr(I.Constant(1)).initializer, I.Constant)
    assert ParamAttr._to_attr(False) is False
    with pytest.raises(TypeError, match="param_attr/bias_attr"):
        ParamAttr._to_attr(3)
    with pytest.raises(TypeError, match="initializer"):
        ParamAttr(initializer="xavier")
    with pytest.raises(TypeError, match="learning_rate"):
        ParamAttr(learning_rate="fast")
    with pytest.raises(TypeError, match="name"):
        ParamAttr(name=3)


def test_param_attr_trainable_false_gives_stop_gradient():
    layer = Conv3DTranspose(2, 2, filter_size=2, param_attr=ParamAttr(trainable=False))
    assert layer.weight.stop_gradient and not layer.weight.trainable
    assert not layer.bias.stop_gradient


def test_regularizer_terms_and_errors():
    p = np.array([1.5, -2.0, 0.0])
    np.testing.assert_allclose(L2Decay(0.1).grad_term(np, p), [0.15, -0.2, 0.0])
    np.testing.assert_allclose(L1Decay(0.1).grad_term(np, p), [0.1, -0.1, 0.0])
    with pytest.raises(TypeError, match="regularization_coeff"):
        L2Decay("0.1")
