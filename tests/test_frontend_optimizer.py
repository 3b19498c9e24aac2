"""SGD and Adam: single steps against hand-written update rules, learning-rate multipliers,
trainable, regularizers (parameter-level overriding optimizer-level), errors, and end-to-end
training of a Conv3DTranspose to fit a fixed random layer."""
import math

import numpy as np
import pytest

import conv3dt.initializer as I
import conv3dt.layers as L
from conv3dt.autograd import Parameter
from conv3dt.dygraph import Conv3DTranspose, to_variable
from conv3dt.optimizer import SGD, Adam, AdamOptimizer, SGDOptimizer
from conv3dt.param_attr import ParamAttr
from conv3dt.regularizer import L1Decay, L2Decay


def quadratic_step(opt, params, coeffs):
    """loss = sum_i sum(c_i * p_i^2): gradient 2 c_i p_i."""
    loss = None
    for p, c in zip(params, coeffs):
        term = (p * p * c).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    opt.minimize(loss)
    opt.clear_gradients()


def test_sgd_step_by_hand():
    p = Parameter(np.array([1.0, -2.0]))
    q = Parameter(np.array([3.0]), learning_rate=0.5)     # ParamAttr.learning_rate
    opt = SGD(learning_rate=0.1, parameter_list=[p, q])
    quadratic_step(opt, [p, q], [1.0, 2.0])
    np.testing.assert_allclose(p.numpy(), [1 - 0.1 * 2, -2 + 0.1 * 4])
    np.testing.assert_allclose(q.numpy(), [3 - 0.05 * 12])
    assert not p.gradient().any()          # clear_gradients zeroed them


def test_minimize_returns_params_grads_and_needs_backward():
    p = Parameter(np.array([2.0]))
    opt = SGD(0.1, parameter_list=[p])
    _, params_grads = opt.minimize((p * p).sum())   # no backward: Paddle does nothing
    assert params_grads == [] and p.numpy()[0] == 2.0
    loss = (p * p).sum()
    loss.backward()
    _, params_grads = opt.minimize(loss)
    assert params_grads[0][0] is p
    np.testing.assert_allclose(params_grads[0][1], [4.0])


def test_trainable_false_is_not_updated():
    frozen = Parameter(np.array([1.0]), trainable=False)
    live = Parameter(np.array([1.0]))
    opt = SGD(0.1, parameter_list=[frozen, live])
    loss = (frozen * live).sum()
    loss.backward()
    opt.minimize(loss)
    assert frozen.numpy()[0] == 1.0 and live.numpy()[0] == pytest.approx(0.9)


def test_l2_regularization_and_param_level_override():
    p = Parameter(np.array([2.0]))                               # uses the optimizer's
    q = Parameter(np.array([2.0]), regularizer=L2Decay(0.5))     # overrides it
    r = Parameter(np.array([2.0]), regularizer=L1Decay(0.25))
    opt = SGD(0.1, parameter_list=[p, q, r], regularization=L2Decay(0.1))
    quadratic_step(opt, [p, q, r], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(p.numpy(), [2 - 0.1 * (4 + 0.1 * 2)])
    np.testing.assert_allclose(q.numpy(), [2 - 0.1 * (4 + 0.5 * 2)])
    np.testing.assert_allclose(r.numpy(), [2 - 0.1 * (4 + 0.25)])


def test_regularizer_from_param_attr_reaches_optimizer():
    layer = Conv3DTranspose(1, 1, filter_size=1, bias_attr=False,
                            param_attr=ParamAttr(initializer=I.Constant(1.0),
                                                 regularizer=L2Decay(1.0), learning_rate=2.0))
    opt = SGD(0.1, parameter_list=layer.parameters())
    x = to_variable(np.zeros((1, 1, 1, 1, 1), "float32"))
    loss = L.reduce_sum(layer(x))          # gradient 0: only the decay moves the weight
    loss.backward()
    opt.minimize(loss)
    np.testing.assert_allclose(layer.weight.numpy().ravel(), [1 - 0.1 * 2.0 * 1.0], rtol=1e-6)


def test_adam_steps_by_hand():
    start = np.array([1.0, -2.0, 0.5])
    p = Parameter(start.copy())
    opt = Adam(learning_rate=0.1, parameter_list=[p])
    # Paddle's adam op on loss = sum(p^2), written out: beta pows start at beta1, beta2.
    expected = []
    value = start
    m1 = m2 = 0
    b1p, b2p = 0.9, 0.999
    for _ in range(3):
        g = 2 * value
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        lr_t = 0.1 * math.sqrt(1 - b2p) / (1 - b1p)
        value = value - lr_t * m1 / (np.sqrt(m2) + 1e-8 * math.sqrt(1 - b2p))
        b1p, b2p = b1p * 0.9, b2p * 0.999
        expected.append(value)
    for step in range(3):
        quadratic_step(opt, [p], [1.0])
        np.testing.assert_allclose(p.numpy(), expected[step], rtol=1e-12)


def test_adam_keeps_float32():
    p = Parameter(np.ones(3, np.float32))
    opt = Adam(0.1, parameter_list=[p])
    quadratic_step(opt, [p], [1.0])
    assert p.dtype == np.float32


def test_adam_state_dict_round_trip():
    p1, p2 = Parameter(np.array([1.0, 2.0]), name="w"), Parameter(np.array([1.0, 2.0]), name="w")
    o1 = Adam(0.1, parameter_list=[p1])
    quadratic_step(o1, [p1], [1.0])
    p2.set_value(p1.numpy())
    o2 = Adam(0.1, parameter_list=[p2])
    o2.set_dict(o1.state_dict())
    assert sorted(o1.state_dict()) == ["w.beta1_pow", "w.beta2_pow", "w.moment1", "w.moment2"]
    quadratic_step(o1, [p1], [1.0])
    quadratic_step(o2, [p2], [1.0])
    np.testing.assert_array_equal(p1.numpy(), p2.numpy())


def test_parameter_list_none_uses_the_loss_graph(rng):
    layer = Conv3DTranspose("lazy", num_filters=2, filter_size=2, dtype="float64")
    opt = SGD(0.1)
    x = to_variable(rng.standard_normal((1, 3, 2, 2, 2)))
    loss = L.reduce_mean(L.square(layer(x)))
    loss.backward()
    before = layer.weight.numpy()
    _, params_grads = opt.minimize(loss)
    assert {id(p) for p, _ in params_grads} == {id(layer.weight), id(layer.bias)}
    assert not np.array_equal(before, layer.weight.numpy())
    opt.clear_gradients()
    assert not layer.weight.gradient().any()


def test_aliases():
    assert SGDOptimizer is SGD and AdamOptimizer is Adam


@pytest.mark.parametrize("make,exc,match", [
    (lambda: SGD("0.1", parameter_list=[]), TypeError, "learning rate should be float"),
    (lambda: SGD(0.1, parameter_list=[np.ones(2)]), TypeError, "Parameters"),
    (lambda: SGD(0.1, parameter_list=[], regularization=0.1), TypeError, "regularization"),
    (lambda: Adam(0.1, beta1=1.0, parameter_list=[]), ValueError, "beta1"),
    (lambda: Adam(0.1, beta2=-0.1, parameter_list=[]), ValueError, "beta2"),
    (lambda: Adam(0.1, epsilon=0, parameter_list=[]), ValueError, "epsilon"),
    (lambda: Adam(0.1).set_dict({}), ValueError, "parameter_list"),
])
def test_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# ------------------------------------------------------------------ end to end

@pytest.mark.parametrize("opt_cls,lr", [(SGD, 0.5), (Adam, 0.05)])
def test_training_fits_a_fixed_random_layer(opt_cls, lr):
    I.seed(0)
    rng = np.random.default_rng(0)
    teacher = Conv3DTranspose(2, 2, filter_size=3, stride=2, padding=1)
    teacher.weight.set_value(rng.uniform(-1, 1, teacher.weight.shape).astype("float32"))
    teacher.bias.set_value(rng.uniform(-1, 1, 2).astype("float32"))
    student = Conv3DTranspose(2, 2, filter_size=3, stride=2, padding=1)
    x = to_variable(rng.standard_normal((4, 2, 3, 3, 3)).astype("float32"))
    target = teacher(x).detach()
    opt = opt_cls(learning_rate=lr, parameter_list=student.parameters())
    losses = []
    for _ in range(100):
        loss = L.mse_loss(student(x), target)
        loss.backward()
        opt.minimize(loss)
        opt.clear_gradients()
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])
    np.testing.assert_allclose(student.bias.numpy(), teacher.bias.numpy(), atol=0.05)
