"""The Paddle 2.x/3.x front end: conv3dt.nn.Conv3DTranspose and nn.functional against the
float64 NumPy reference (tests/reference.py), the default init, to_tensor / Tensor.grad /
mean / sum, the 2.x optimizers against Paddle's Adam formula written here in NumPy, the
1.x layer refusing 2.x keywords, and NumPy / DLPack interop."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import conv3dt
import conv3dt as paddle  # the point: a 2.x script ports by its import
import conv3dt.nn.functional as F
from conv3dt import dygraph

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import ref_backward, ref_conv3d_transpose, rel_err, resolve  # noqa: E402


@pytest.fixture
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(20)


# (layer kwargs, input shape NCDHW)
LAYERS = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1,
          groups=2), (2, 4, 3, 4, 2)),
    (dict(in_channels=3, out_channels=2, kernel_size=(2, 3, 1), stride=(1, 2, 3), dilation=2,
          padding=[1, 0, 0, 2, 1, 1]), (1, 3, 4, 3, 3)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding="SAME"), (1, 2, 3, 3, 4)),
    (dict(in_channels=2, out_channels=4, kernel_size=2, stride=2, data_format="NDHWC",
          bias_attr=False), (2, 2, 3, 2, 3)),
]


def _reference_forward_backward(x, w, b, gy, kw, output_size=None):
    fmt = kw.get("data_format", "NCDHW")
    x_nc = x if fmt == "NCDHW" else x.transpose(0, 4, 1, 2, 3)
    s, lo, hi, d, out = resolve(x_nc.shape[2:], w.shape[2:], kw.get("stride", 1),
                                kw.get("padding", 0),
                                0 if output_size is not None else kw.get("output_padding", 0),
                                kw.get("dilation", 1), output_size)
    g = kw.get("groups", 1)
    y = ref_conv3d_transpose(x_nc, w, b, s, lo, hi, d, g, out)
    gy_nc = gy if fmt == "NCDHW" else gy.transpose(0, 4, 1, 2, 3)
    gx, gw, gb = ref_backward(gy_nc, x_nc, w, s, lo, hi, d, g, out)
    if fmt == "NDHWC":
        y, gx = y.transpose(0, 2, 3, 4, 1), gx.transpose(0, 2, 3, 4, 1)
    return y, gx, gw, gb


@pytest.mark.parametrize("kw, shape", LAYERS)
def test_layer_forward_and_gradients_match_reference(kw, shape, rng, float64):
    conv = paddle.nn.Conv3DTranspose(**kw)
    fmt = kw.get("data_format", "NCDHW")
    x_np = rng.standard_normal(shape)
    if fmt == "NDHWC":
        x_np = x_np.transpose(0, 2, 3, 4, 1).copy()
    conv.bias is None or conv.bias.set_value(rng.standard_normal(conv.bias.shape))
    x = paddle.to_tensor(x_np, stop_gradient=False)
    y = conv(x)
    gy = rng.standard_normal(y.shape)
    paddle.sum(y * paddle.to_tensor(gy)).backward()
    b = None if conv.bias is None else conv.bias.numpy()
    ry, rgx, rgw, rgb = _reference_forward_backward(x_np, conv.weight.numpy(), b, gy, kw)
    assert y.shape == ry.shape
    assert rel_err(y.numpy(), ry) < 1e-12
    assert rel_err(x.grad.numpy(), rgx) < 1e-12
    assert rel_err(conv.weight.grad.numpy(), rgw) < 1e-12
    if conv.bias is not None:
        assert rel_err(conv.bias.grad.numpy(), rgb) < 1e-12
    assert conv.weight.shape == (kw["in_channels"], kw["out_channels"] // kw.get("groups", 1),
                                 *((kw["kernel_size"],) * 3 if isinstance(kw["kernel_size"], int)
                                   else kw["kernel_size"]))


def test_forward_output_size_replaces_output_padding(rng, float64):
    kw = dict(in_channels=2, out_channels=3, kernel_size=3, stride=3, padding=1,
              output_padding=2)
    conv = paddle.nn.Conv3DTranspose(**kw)
    x_np = rng.standard_normal((1, 2, 2, 3, 2))
    assert conv(paddle.to_tensor(x_np)).shape == (1, 3, 6, 9, 6)       # with output_padding
    y = conv(paddle.to_tensor(x_np), output_size=[5, 8, 4])            # output_padding unused
    gy = np.ones(y.shape)
    ry, *_ = _reference_forward_backward(x_np, conv.weight.numpy(), conv.bias.numpy(), gy, kw,
                                         output_size=(5, 8, 4))
    assert y.shape == (1, 3, 5, 8, 4) and rel_err(y.numpy(), ry) < 1e-12
    with pytest.raises(ValueError, match="output_size"):
        conv(paddle.to_tensor(x_np), output_size=[9, 8, 4])             # not in [D', D' + s)


def test_functional_on_tensors_matches_reference(rng):
    x_np = rng.standard_normal((2, 4, 3, 2, 3))
    w_np = rng.standard_normal((4, 3, 2, 3, 2))
    b_np = rng.standard_normal(6)
    kw = dict(stride=2, padding=[0, 1, 1, 0, 1, 1], dilation=(1, 2, 1), groups=2,
              output_padding=1)
    x = paddle.to_tensor(x_np)                      # data: no gradient for it
    w = paddle.to_tensor(w_np, stop_gradient=False)
    b = paddle.to_tensor(b_np, stop_gradient=False)
    y = F.conv3d_transpose(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    paddle.sum(y * paddle.to_tensor(gy)).backward()
    ry, _, rgw, rgb = _reference_forward_backward(x_np, w_np, b_np, gy, kw)
    assert rel_err(y.numpy(), ry) < 1e-12
    assert rel_err(w.grad.numpy(), rgw) < 1e-12 and rel_err(b.grad.numpy(), rgb) < 1e-12
    assert x.grad is None


def test_functional_errors():
    w = paddle.to_tensor(np.ones((2, 2, 2, 2, 2), "float32"))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        F.conv3d_transpose([[1.0]], w)
    x = paddle.to_tensor(np.ones((1, 2, 2, 2, 2), "float32"))
    with pytest.raises(ValueError, match="output_padding"):
        F.conv3d_transpose(x, w, stride=2, output_padding=1, output_size=[4, 4, 4])
    with pytest.raises(TypeError, match="dtype"):
        F.conv3d_transpose(x.astype("float64"), w)


def test_default_init_is_paddles_xavier_uniform():
    # in_channels 16, out 24 / groups 2 = 12, kernel 3x3x3: 16*12*27 = 5184 draws
    paddle.seed(3)
    conv = paddle.nn.Conv3DTranspose(16, 24, 3, groups=2)
    w = conv.weight.numpy()
    assert w.dtype == np.float32 and w.shape == (16, 12, 3, 3, 3)
    fan_in, fan_out = 12 * 27, 16 * 27
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert abs(w.std() / (limit / np.sqrt(3.0)) - 1) < 0.03            # the uniform's std
    # not the Normal(0, sqrt(2 / (27 * 16))) that Paddle gives non-transposed convs
    assert abs(w.std() / np.sqrt(2.0 / (27 * 16)) - 1) > 0.15
    assert not conv.bias.numpy().any()
    paddle.seed(3)
    again = paddle.nn.Conv3DTranspose(16, 24, 3, groups=2)
    np.testing.assert_array_equal(again.weight.numpy(), w)


def test_weight_attr_bias_attr_and_errors():
    attr = paddle.ParamAttr(name="up.w", initializer=paddle.nn.initializer.Constant(0.25),
                            learning_rate=0.5)
    conv = paddle.nn.Conv3DTranspose(2, 3, 2, weight_attr=attr, bias_attr=False)
    assert conv.bias is None and conv.weight.name == "up.w"
    assert (conv.weight.numpy() == 0.25).all()
    assert conv.weight.optimize_attr["learning_rate"] == 0.5
    assert sorted(conv.state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="weight_attr should not be False"):
        paddle.nn.Conv3DTranspose(2, 3, 2, weight_attr=False)
    with pytest.raises(ValueError, match="out_channels .3. must be divisible by groups .2."):
        paddle.nn.Conv3DTranspose(2, 3, 2, groups=2)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        paddle.nn.Conv3DTranspose(0, 3, 2)
    with pytest.raises(ValueError, match="kernel_size"):
        paddle.nn.Conv3DTranspose(2, 3, (2, 2))
    with pytest.raises(ValueError, match="data_format"):
        paddle.nn.Conv3DTranspose(2, 3, 2, data_format="NCHW")


def test_2x_initializers_follow_their_formulas():
    init = paddle.nn.initializer
    paddle.seed(0)
    shape = (8, 16, 3, 3, 3)   # fan_in = 16 * 27, fan_out = 8 * 27
    fan_in, fan_out = 16 * 27, 8 * 27

    def draw(initializer):
        conv = paddle.nn.Conv3DTranspose(8, 16, 3, weight_attr=paddle.ParamAttr(
            initializer=initializer), bias_attr=False)
        return conv.weight.numpy().astype(np.float64)

    w = draw(init.KaimingNormal())
    assert abs(w.std() / np.sqrt(2.0 / fan_in) - 1) < 0.03
    w = draw(init.KaimingUniform(nonlinearity="tanh"))
    assert np.abs(w).max() <= 5 / 3 * np.sqrt(3.0 / fan_in)
    w = draw(init.XavierNormal())
    assert abs(w.std() / np.sqrt(2.0 / (fan_in + fan_out)) - 1) < 0.03
    w = draw(init.Normal(mean=1.0, std=0.5))
    assert abs(w.mean() - 1.0) < 0.02 and abs(w.std() - 0.5) < 0.02
    w = draw(init.TruncatedNormal(std=0.1))
    assert np.abs(w).max() <= 0.2 + 1e-7
    value = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    np.testing.assert_array_equal(draw(init.Assign(value)), value)


def test_layer_2x_methods():
    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.up = paddle.nn.Conv3DTranspose(2, 2, 2, stride=2)
            self.old = dygraph.Conv3DTranspose(2, 3, filter_size=1)   # 1.x layers nest too

        def forward(self, x):
            return self.old(self.up(x))

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["up.weight", "up.bias", "old.weight",
                                                      "old.bias"]
    assert len(net.parameters()) == 4
    assert net.eval() is net and not net.up.training
    assert net.train().up.training
    state = {k: v.numpy() + 1 for k, v in net.state_dict().items()}
    missing, unexpected = net.set_state_dict(dict(state, extra=np.zeros(1)))
    assert missing == [] and unexpected == ["extra"]
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k])
    by_name = {p.name: np.zeros(p.shape, p.dtype) for p in net.parameters()}
    assert net.set_state_dict(by_name, use_structured_name=False) == ([], [])
    assert not any(p.numpy().any() for p in net.parameters())
    with pytest.raises(ValueError, match="'up.bias' is missing"):
        net.set_state_dict({"up.weight": state["up.weight"]})
    assert net(paddle.to_tensor(np.ones((1, 2, 2, 2, 2), "float32"))).shape == (1, 3, 4, 4, 4)


def test_to_tensor_dtypes_copies_and_errors():
    assert paddle.to_tensor(1.5).dtype == np.float32 and paddle.to_tensor(1.5).shape == ()
    assert paddle.to_tensor([1, 2]).dtype == np.int64
    assert paddle.to_tensor([True]).dtype == np.bool_
    assert paddle.to_tensor(np.ones(2)).dtype == np.float64       # an array keeps its dtype
    assert paddle.to_tensor([1, 2], dtype="float64").dtype == np.float64
    a = np.zeros(3)
    t = paddle.to_tensor(a, place="cpu")
    a[0] = 1
    assert t.numpy()[0] == 0                                       # a copy
    t2 = paddle.to_tensor(t)
    assert t2 is not t and t2.stop_gradient
    assert paddle.to_tensor(a, stop_gradient=False).stop_gradient is False
    assert isinstance(t, paddle.Tensor) and paddle.Tensor is conv3dt.Variable
    with pytest.raises(TypeError, match="numeric"):
        paddle.to_tensor(["a"])
    with pytest.raises(TypeError, match="numeric"):
        paddle.to_tensor([[1, 2], [3]])
    with pytest.raises(TypeError, match="received dict"):
        paddle.to_tensor({"a": 1})
    with pytest.raises(ValueError, match="place must be"):
        paddle.to_tensor(1.0, place="tpu")
    with pytest.raises(TypeError, match="only floating-point"):
        paddle.to_tensor([1, 2], stop_gradient=False)
    with pytest.raises(TypeError, match="'float32' or 'float64'"):
        paddle.set_default_dtype("int32")
    assert paddle.get_default_dtype() == "float32"


def test_grad_clear_grad_mean_sum():
    x_np = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    x = paddle.to_tensor(x_np, stop_gradient=False)
    assert x.grad is None
    loss = paddle.mean(x * x) + paddle.sum(x, axis=1).sum() * 2
    assert loss.shape == ()                                        # 0-D, as Paddle 2.5+
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x_np / 6 + 2)
    assert isinstance(x.grad, paddle.Tensor) and x.grad.stop_gradient
    x.clear_grad()
    assert x.grad is not None and not x.grad.numpy().any()          # zeroed, as Paddle
    x.grad = None
    assert x.grad is None
    with pytest.raises(ValueError, match="only be set to None"):
        x.grad = np.zeros(3)
    np.testing.assert_allclose(paddle.mean(x, axis=[0, 1]).numpy(), x_np.mean())
    np.testing.assert_allclose(paddle.mean(x, axis=0, keepdim=True).numpy(),
                               x_np.mean(axis=0, keepdims=True))
    np.testing.assert_allclose(paddle.sum(x, axis=-1).numpy(), x_np.sum(axis=-1))
    assert paddle.sum(x, dtype="float32").dtype == np.float32
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        paddle.mean(x, axis=2)
    with pytest.raises(TypeError, match="x must be a Tensor"):
        paddle.sum(x_np)


def paddle_adam_reference(p, grads, lr, beta1, beta2, eps, coeff=0.0):
    """Paddle's adam kernel, in float64: beta pows start at beta1 / beta2; per step
    g += coeff * p (L2Decay); m1, m2 moving averages; lr_t = lr sqrt(1 - b2p) / (1 - b1p);
    p -= lr_t m1 / (sqrt(m2) + eps sqrt(1 - b2p)); then b1p *= beta1, b2p *= beta2."""
    p = np.array(p, dtype=np.float64)
    m1 = np.zeros_like(p)
    m2 = np.zeros_like(p)
    b1p, b2p = beta1, beta2
    for g in grads:
        g = g(p) + coeff * p
        m1 = beta1 * m1 + (1 - beta1) * g
        m2 = beta2 * m2 + (1 - beta2) * g * g
        lr_t = lr * np.sqrt(1 - b2p) / (1 - b1p)
        p = p - lr_t * m1 / (np.sqrt(m2) + eps * np.sqrt(1 - b2p))
        b1p, b2p = b1p * beta1, b2p * beta2
    return p


def test_adam_2x_step_matches_paddles_formula():
    start = np.array([[0.5, -1.5, 2.0], [1e-3, -3.0, 0.25]])
    w = paddle.to_tensor(start)
    p = conv3dt.autograd.Parameter(w.numpy(), name="p")
    opt = paddle.optimizer.Adam(learning_rate=0.05, beta1=0.8, beta2=0.95, epsilon=1e-6,
                                parameters=[p], weight_decay=0.01)
    c = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    for _ in range(4):
        loss = paddle.sum(p * p * paddle.to_tensor(c))      # gradient 2 c p
        loss.backward()
        opt.step()
        opt.clear_grad()
    expected = paddle_adam_reference(start, [lambda q: 2 * c * q] * 4, 0.05, 0.8, 0.95, 1e-6,
                                     coeff=0.01)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert not p.grad.numpy().any()
    assert opt.get_lr() == 0.05


def test_sgd_2x_and_optimizer_errors():
    p = conv3dt.autograd.Parameter(np.array([1.0, -2.0]))
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=[p],
                               weight_decay=paddle.regularizer.L2Decay(0.5))
    paddle.sum(p * p).backward()
    opt.step()
    np.testing.assert_allclose(p.numpy(), [1 - 0.1 * (2 + 0.5), -2 - 0.1 * (-4 - 1.0)])
    opt.clear_grad(set_to_zero=False)
    assert p.grad is None
    opt.step()                                    # no gradient: nothing changes
    np.testing.assert_allclose(p.numpy(), [0.75, -1.5])
    with pytest.raises(ValueError, match="parameters=model.parameters"):
        paddle.optimizer.Adam().step()
    with pytest.raises(TypeError, match="either parameter_list .* or parameters"):
        paddle.optimizer.SGD(0.1, parameter_list=[p], parameters=[p])
    with pytest.raises(ValueError, match="grad_clip"):
        paddle.optimizer.Adam(parameters=[p], grad_clip=object())
    # the 1.x style keeps working beside it
    opt1 = paddle.optimizer.SGD(0.1, parameter_list=[p])
    loss = paddle.sum(p * p)
    loss.backward()
    opt1.minimize(loss)
    np.testing.assert_allclose(p.numpy(), [0.75 - 0.15, -1.5 + 0.3])


def test_adam_loads_paddle_style_state_names():
    p = conv3dt.autograd.Parameter(np.ones(3), name="linear_0.w_0")
    opt = paddle.optimizer.Adam(learning_rate=0.1, parameters=[p])
    state = {"linear_0.w_0_moment1_0": np.full(3, 0.5), "linear_0.w_0_moment2_0": np.full(3, 0.25),
             "linear_0.w_0_beta1_pow_acc_0": np.array([0.9 ** 3]),
             "linear_0.w_0_beta2_pow_acc_0": np.array([0.999 ** 3])}
    opt.set_state_dict(state)
    p._grad = np.full(3, 2.0)
    opt.step()
    expected_m1, expected_m2 = 0.9 * 0.5 + 0.1 * 2, 0.999 * 0.25 + 0.001 * 4
    lr_t = 0.1 * np.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3)
    expected = 1 - lr_t * expected_m1 / (np.sqrt(expected_m2) + 1e-8 * np.sqrt(1 - 0.999 ** 3))
    np.testing.assert_allclose(p.numpy(), np.full(3, expected), rtol=1e-12)


@pytest.mark.parametrize("keyword, value", [("in_channels", 2), ("out_channels", 3),
                                            ("kernel_size", 2), ("weight_attr", None)])
def test_1x_layer_refuses_2x_keywords(keyword, value):
    with pytest.raises(TypeError, match=rf"{keyword}=.*conv3dt\.nn\.Conv3DTranspose"):
        dygraph.Conv3DTranspose(**{keyword: value})
    with pytest.raises(TypeError, match="conv3dt.nn.Conv3DTranspose"):
        dygraph.Conv3DTranspose(2, 3, 2, **{keyword: value})


def test_1x_layer_keeps_its_signature():
    conv = dygraph.Conv3DTranspose(2, 3, 2, None, 0, 2, output_padding=1, data_format="NCDHW")
    x = dygraph.to_variable(np.ones((1, 2, 2, 2, 2), "float32"))
    assert conv(x).shape == (1, 3, 5, 5, 5)


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="NumPy 2's copy= keyword")
def test_numpy_interop_copy_semantics():
    x = paddle.to_tensor(np.arange(6.0).reshape(2, 3))
    view = np.asarray(x)
    assert np.shares_memory(view, x._data)                       # copy=None: no copy needed
    assert np.shares_memory(np.asarray(x, copy=False), x._data)
    copied = np.array(x)
    assert not np.shares_memory(copied, x._data)
    np.testing.assert_array_equal(copied, np.arange(6.0).reshape(2, 3))
    assert np.asarray(x, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="copy cannot be avoided"):
        np.asarray(x, dtype=np.float32, copy=False)


def test_numpy_functions_work_without_gradients_and_refuse_with_them():
    data = paddle.to_tensor([[1.0, 2.0], [3.0, 4.0]])
    assert np.sum(data) == 10.0 and np.mean(data, axis=0).tolist() == [2.0, 3.0]
    np.testing.assert_array_equal(np.concatenate([data, data]), np.tile([[1, 2], [3, 4]], (2, 1)))
    w = paddle.to_tensor([1.0, 2.0], stop_gradient=False)
    with pytest.raises(TypeError,
                       match=r"numpy\.sum\(\) on Variable .*stop_gradient=False.*x\.sum\(\)"):
        np.sum(w)
    assert np.sum(w.detach()) == 3.0
    # functions whose results carry no gradient are fine on it
    assert np.allclose(w, [1.0, 2.0]) and np.argmax(w) == 1 and np.shape(w) == (2,)
    with pytest.raises(TypeError):      # ufuncs are not taken over: NumPy says so itself
        np.exp(w)


def test_dlpack_export():
    x = paddle.to_tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert x.__dlpack_device__() == (1, 0)                        # kDLCPU, device 0
    y = np.from_dlpack(x)
    assert np.shares_memory(y, x._data) and y.shape == (2, 3, 4)
    torch = pytest.importorskip("torch")
    t = torch.from_dlpack(x)
    np.testing.assert_array_equal(t.numpy(), x.numpy())


PORTED_SCRIPT = r'''
import numpy as np
import {module} as paddle

init = np.load("init.npz")
data = np.load("data.npz")
conv = paddle.nn.Conv3DTranspose(2, 3, kernel_size=3, stride=2, padding=1, output_padding=1)
conv.set_state_dict({{"weight": init["weight"], "bias": init["bias"]}})
opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=conv.parameters(), weight_decay=0.001)
for step in range(3):
    y = conv(paddle.to_tensor(data["x"]))
    loss = paddle.mean((y - paddle.to_tensor(data["target"])) ** 2)
    loss.backward()
    opt.step()
    opt.clear_grad()
np.savez("out.npz", weight=conv.weight.numpy(), bias=conv.bias.numpy(), loss=float(loss))
'''


def _run_script(module, folder):
    code = PORTED_SCRIPT.format(module=module)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(np.load(os.path.join(folder, "out.npz")))


def test_a_2x_training_script_ports_by_its_import(tmp_path, rng):
    np.savez(tmp_path / "init.npz", weight=(0.2 * rng.standard_normal((2, 3, 3, 3, 3))
                                            ).astype("float32"),
             bias=(0.1 * rng.standard_normal(3)).astype("float32"))
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((2, 2, 3, 3, 3)).astype("float32"),
             target=rng.standard_normal((2, 3, 6, 6, 6)).astype("float32"))
    ours = _run_script("conv3dt", tmp_path)
    assert np.isfinite(ours["loss"])
    if importlib.util.find_spec("paddle") is None:   # not imported here: a subprocess runs it
        pytest.skip("PaddlePaddle is not installed: the script ran on conv3dt only")
    theirs = _run_script("paddle", tmp_path)
    for key in ("weight", "bias"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-4)


def test_paddles_own_default_init_is_the_same_distribution(tmp_path):
    if importlib.util.find_spec("paddle") is None:   # run in a child: never imported here
        pytest.skip("PaddlePaddle is not installed")
    code = ("import numpy as np, paddle\n"
            "paddle.seed(5)\n"
            "conv = paddle.nn.Conv3DTranspose(16, 24, 3, groups=2)\n"
            "np.savez('init.npz', w=conv.weight.numpy(), b=conv.bias.numpy())\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = np.load(tmp_path / "init.npz")
    paddle.seed(5)
    ours = paddle.nn.Conv3DTranspose(16, 24, 3, groups=2).weight.numpy()
    limit = np.sqrt(6.0 / (12 * 27 + 16 * 27))
    for w in (theirs["w"], ours):
        assert w.shape == (16, 12, 3, 3, 3) and w.dtype == np.float32
        assert 0.99 * limit < np.abs(w).max() <= limit
        assert abs(w.std() / (limit / np.sqrt(3.0)) - 1) < 0.03
    assert not theirs["b"].any()
