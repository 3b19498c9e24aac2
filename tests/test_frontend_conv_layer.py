"""dygraph.nn.Conv3DTranspose: Paddle's doc example, forward against a naive loop reference
written here, gradients by gradcheck for every option, float32 against float64, lazy
shapes, and every documented error."""
import math

import numpy as np
import pytest

import conv3dt.functional as F
from conv3dt import _activations
from conv3dt.dygraph import Conv3DTranspose, guard, to_variable
from conv3dt.dygraph import nn
from conv3dt.gradcheck import gradcheck
from conv3dt.initializer import Uniform
from conv3dt.param_attr import ParamAttr


# ------------------------------------------------------------------ independent reference

def naive_conv3d_transpose(x, w, b, stride, pads, dilation, groups, output_padding=(0, 0, 0)):
    """Straight from the definition: input i reaches output o = i*s + t*d - pad_lo through
    tap t. ``pads`` is ((lo, hi),) * 3. NCDHW, float64."""
    n, c_in = x.shape[:2]
    c_in_g, c_out_g = c_in // groups, w.shape[1]
    k = w.shape[2:]
    out = [(i - 1) * s - lo - hi + d * (kk - 1) + 1 + op
           for i, s, (lo, hi), d, kk, op in zip(x.shape[2:], stride, pads, dilation, k, output_padding)]
    y = np.zeros((n, c_out_g * groups, *out))
    for ci in range(c_in):
        g = ci // c_in_g
        for idx in np.ndindex(*x.shape[2:]):
            for tap in np.ndindex(*k):
                o = [i * s + t * d - lo for i, t, s, d, (lo, _) in zip(idx, tap, stride, dilation, pads)]
                if all(0 <= oo < size for oo, size in zip(o, out)):
                    y[(slice(None), slice(g * c_out_g, (g + 1) * c_out_g), *o)] += \
                        x[(slice(None), ci, *idx)][:, None] * w[(ci, slice(None), *tap)][None, :]
    if b is not None:
        y += b.reshape(1, -1, 1, 1, 1)
    return y


def act_reference(name, y):
    """NumPy formulas with Paddle's defaults, written independently of conv3dt."""
    from scipy.special import erf
    return {
        None: lambda v: v,
        "relu": lambda v: np.maximum(v, 0),
        "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "leaky_relu": lambda v: np.where(v > 0, v, 0.02 * v),
        "gelu": lambda v: 0.5 * v * (1 + erf(v / math.sqrt(2))),
    }[name](y)


def make_layer(c_in, c_out, k, dtype="float64", seed=0, **kw):
    rng = np.random.default_rng(seed)
    layer = Conv3DTranspose(c_in, c_out, filter_size=k, dtype=dtype, **kw)
    layer.weight.set_value(rng.uniform(-1, 1, layer.weight.shape).astype(dtype))
    if layer.bias is not None:
        layer.bias.set_value(rng.uniform(-1, 1, layer.bias.shape).astype(dtype))
    return layer


# ------------------------------------------------------------------ Paddle's example

def test_paddle_doc_example_runs_unchanged():
    import numpy
    import conv3dt as fluid
    import conv3dt.dygraph  # noqa: F401  (conv3dt/__init__ may not import it yet)
    with fluid.dygraph.guard():
        data = numpy.random.random((5, 3, 12, 32, 32)).astype('float32')
        conv3dTranspose = fluid.dygraph.nn.Conv3DTranspose(
            'Conv3DTranspose', num_filters=12, filter_size=12, use_cudnn=False)
        ret = conv3dTranspose(fluid.dygraph.base.to_variable(data))
    assert ret.shape == (5, 12, 23, 43, 43) and ret.dtype == np.float32
    assert conv3dTranspose.weight.shape == (3, 12, 12, 12, 12)
    expected = F.conv3d_transpose(data, conv3dTranspose.weight.numpy(),
                                  conv3dTranspose.bias.numpy())
    np.testing.assert_array_equal(ret.numpy(), expected)


# ------------------------------------------------------------------ forward vs reference

EXPLICIT = [
    # (kwargs, pads, output_padding)
    (dict(padding=0), ((0, 0),) * 3, (0, 0, 0)),
    (dict(padding=1, stride=2), ((1, 1),) * 3, (0, 0, 0)),
    (dict(padding=[1, 0, 2], stride=[2, 1, 3]), ((1, 1), (0, 0), (2, 2)), (0, 0, 0)),
    (dict(padding=[1, 0, 0, 2, 2, 1], dilation=2), ((1, 0), (0, 2), (2, 1)), (0, 0, 0)),
    (dict(padding=[[0, 0], [0, 0], [1, 2], [0, 1], [2, 0]], stride=2),
     ((1, 2), (0, 1), (2, 0)), (0, 0, 0)),
    (dict(stride=2, output_padding=1), ((0, 0),) * 3, (1, 1, 1)),
    (dict(stride=3, dilation=2, output_padding=[0, 1, 2]), ((0, 0),) * 3, (0, 1, 2)),
]


@pytest.mark.parametrize("kwargs,pads,output_padding", EXPLICIT)
@pytest.mark.parametrize("groups", [1, 2])
def test_forward_matches_naive_reference(kwargs, pads, output_padding, groups, rng):
    stride = nn._as_triple(kwargs.get("stride", 1), "stride")
    dilation = nn._as_triple(kwargs.get("dilation", 1), "dilation")
    layer = make_layer(4, 2, (3, 2, 3), groups=groups, **kwargs)
    x = rng.standard_normal((2, 4, 3, 4, 2))
    y = layer(to_variable(x))
    ref = naive_conv3d_transpose(x, layer.weight.numpy(), layer.bias.numpy(), stride, pads,
                                 dilation, groups, output_padding)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", [None, "relu", "tanh", "sigmoid", "leaky_relu", "gelu"])
def test_bias_then_activation(act, rng):
    layer = make_layer(2, 3, 2, act=act, stride=2)
    x = rng.standard_normal((1, 2, 2, 3, 2))
    pre = naive_conv3d_transpose(x, layer.weight.numpy(), layer.bias.numpy(), (2, 2, 2),
                                 ((0, 0),) * 3, (1, 1, 1), 1)
    np.testing.assert_allclose(layer(to_variable(x)).numpy(), act_reference(act, pre),
                               rtol=1e-12, atol=1e-12)


def test_bias_is_added_and_bias_attr_false_means_none(rng):
    x = rng.standard_normal((1, 2, 2, 2, 2))
    with_bias = make_layer(2, 3, 2)
    no_bias = make_layer(2, 3, 2, bias_attr=False)
    no_bias.weight.set_value(with_bias.weight.numpy())
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    diff = with_bias(to_variable(x)).numpy() - no_bias(to_variable(x)).numpy()
    np.testing.assert_allclose(diff, np.broadcast_to(with_bias.bias.numpy().reshape(1, 3, 1, 1, 1),
                                                     diff.shape), rtol=1e-12)


def test_ndhwc_equals_transposed_ncdhw(rng):
    a = make_layer(2, 3, (2, 3, 2), stride=2, padding=1)
    b = make_layer(2, 3, (2, 3, 2), stride=2, padding=1, data_format="NDHWC")
    x = rng.standard_normal((2, 2, 3, 2, 4))
    ya = a(to_variable(x)).numpy()
    yb = b(to_variable(np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)))).numpy()
    np.testing.assert_allclose(yb, ya.transpose(0, 2, 3, 4, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["SAME", "VALID", "same", "SAME_UPPER", "SAME_LOWER"])
def test_string_paddings_match_functional(padding, rng):
    layer = make_layer(2, 2, 3, stride=2, padding=padding)
    x = rng.standard_normal((1, 2, 3, 4, 3))
    expected = F.conv3d_transpose(x, layer.weight.numpy(), layer.bias.numpy(), stride=2,
                                  padding=padding)
    np.testing.assert_array_equal(layer(to_variable(x)).numpy(), expected)


def test_paddle_same_padding_by_formula(rng):
    # Paddle's SAME for the transposed op: dilation forced to 1,
    # pad_sum = max((ceil(in/s)-1)*s + k - in, 0), lo = pad_sum // 2.
    layer = make_layer(2, 2, 3, stride=2, padding="SAME", dilation=2)
    x = rng.standard_normal((1, 2, 3, 4, 5))
    pads = []
    for n in x.shape[2:]:
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        pads.append((total // 2, total - total // 2))
    ref = naive_conv3d_transpose(x, layer.weight.numpy(), layer.bias.numpy(), (2, 2, 2), pads,
                                 (1, 1, 1), 1)
    np.testing.assert_allclose(layer(to_variable(x)).numpy(), ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ gradients

GRAD_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(groups=2),
    dict(dilation=[2, 1, 2]),
    dict(padding=[1, 0, 1], stride=2),
    dict(padding=[1, 0, 0, 1, 1, 0], stride=2),
    dict(padding=[[0, 0], [0, 0], [1, 0], [0, 1], [1, 1]], stride=2),
    dict(padding="SAME", stride=2),
    dict(padding="VALID", stride=2),
    dict(padding="SAME_UPPER", stride=2),
    dict(padding="SAME_LOWER", stride=2),
    dict(stride=2, output_padding=1),
    dict(stride=2, output_size=[5, 7, 4]),
    dict(stride=2, data_format="NDHWC"),
    dict(bias_attr=False),
    dict(act="tanh", stride=2),
    dict(act="relu", bias_attr=False, padding=1),
]


@pytest.mark.parametrize("kwargs", GRAD_CASES, ids=lambda kw: ",".join(map(str, kw.items())) or "plain")
def test_layer_gradcheck(kwargs, rng):
    # Tiny on purpose: gradcheck perturbs every element of x, weight and bias.
    c_in = 4 if kwargs.get("groups") == 2 else 2
    layer = make_layer(c_in, 2, 2, **kwargs)
    shape = (1, 2, 3, 2, c_in) if kwargs.get("data_format") == "NDHWC" else (1, c_in, 2, 3, 2)
    x = to_variable(rng.standard_normal(shape))
    x.stop_gradient = False
    inputs = [x] + layer.parameters()
    assert len(inputs) == (2 if kwargs.get("bias_attr") is False else 3)
    assert gradcheck(lambda *args: layer(args[0]), inputs)


@pytest.mark.parametrize("act", sorted(_activations.ACTIVATIONS))
def test_layer_gradcheck_each_activation(act, rng):
    layer = make_layer(2, 2, 2, act=act, stride=2)
    x = to_variable(rng.standard_normal((1, 2, 2, 2, 2)))
    x.stop_gradient = False
    assert gradcheck(lambda *args: layer(args[0]), [x, layer.weight, layer.bias])


def test_filter_size_from_output_size_gradcheck(rng):
    layer = Conv3DTranspose(2, 2, output_size=[5, 6, 4], stride=2, dtype="float64")
    x = to_variable(rng.standard_normal((1, 2, 2, 3, 2)))
    x.stop_gradient = False
    y = layer(x)
    # k = (out - (in-1)*s + lo + hi - 1) // d + 1
    assert layer.weight.shape == (2, 2, 5 - 2 + 0, 6 - 4, 4 - 2)
    assert y.shape == (1, 2, 5, 6, 4)
    assert gradcheck(lambda *args: layer(args[0]), [x, layer.weight, layer.bias])


def test_float32_matches_float64(rng):
    l64 = make_layer(4, 4, 3, stride=2, padding=1, groups=2, act="swish")
    l32 = Conv3DTranspose(4, 4, filter_size=3, stride=2, padding=1, groups=2, act="swish",
                          dtype="float32")
    l32.set_dict({k: v.numpy().astype("float32") for k, v in l64.state_dict().items()})
    x = rng.standard_normal((2, 4, 3, 3, 3))
    outs, grads = [], []
    for layer, dtype in ((l64, "float64"), (l32, "float32")):
        v = to_variable(x.astype(dtype))
        v.stop_gradient = False
        y = layer(v)
        assert y.dtype == np.dtype(dtype)
        (y * y).sum().backward()
        outs.append(y.numpy())
        grads.append([v.gradient(), layer.weight.gradient(), layer.bias.gradient()])
        assert all(g.dtype == np.dtype(dtype) for g in grads[-1])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for g32, g64 in zip(grads[1], grads[0]):
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-3 * np.abs(g64).max())


# ------------------------------------------------------------------ lazy shapes

def test_name_scope_form_infers_channels_at_first_call(rng):
    layer = Conv3DTranspose("up", num_filters=4, filter_size=2, stride=2, dtype="float64")
    assert layer.weight is None and layer.parameters() == []
    y = layer(to_variable(rng.standard_normal((1, 3, 2, 2, 2))))
    assert layer.weight.shape == (3, 4, 2, 2, 2) and y.shape == (1, 4, 4, 4, 4)
    assert layer.full_name().startswith("up_")
    with pytest.raises(ValueError, match="3 channels|num_channels=3"):
        layer(to_variable(rng.standard_normal((1, 5, 2, 2, 2))))


def test_numpy_input_is_accepted(rng):
    layer = make_layer(2, 2, 2)
    x = rng.standard_normal((1, 2, 2, 2, 2))
    np.testing.assert_array_equal(layer(x).numpy(), layer(to_variable(x)).numpy())


def test_init_uses_param_attr(rng):
    layer = Conv3DTranspose(2, 2, filter_size=2, param_attr=ParamAttr(initializer=Uniform(3, 4)),
                            bias_attr=ParamAttr(name="my_bias", learning_rate=0.5))
    w = layer.weight.numpy()
    assert w.min() >= 3 and w.max() <= 4
    assert layer.bias.name == "my_bias" and layer.bias.optimize_attr["learning_rate"] == 0.5


# ------------------------------------------------------------------ errors

def test_error_filter_size_and_output_size_both_none():
    with pytest.raises(ValueError, match="filter_size and output_size cannot both be None"):
        Conv3DTranspose(2, 2)


@pytest.mark.parametrize("bad", [1, "True", None])
def test_error_use_cudnn_not_bool(bad):
    with pytest.raises(TypeError, match="use_cudnn should be True or False"):
        Conv3DTranspose(2, 2, filter_size=2, use_cudnn=bad)


@pytest.mark.parametrize("bad", ["float16", "int32", "nonsense", np.int64])
def test_error_dtype(bad):
    with pytest.raises(TypeError, match="float32.*float64"):
        Conv3DTranspose(2, 2, filter_size=2, dtype=bad)


def test_dtype_accepts_numpy_types():
    assert Conv3DTranspose(2, 2, filter_size=2, dtype=np.float64).weight.dtype == np.float64


def test_error_unknown_activation_lists_supported():
    with pytest.raises(ValueError) as info:
        Conv3DTranspose(2, 2, filter_size=2, act="mish")
    for name in _activations.ACTIVATIONS:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_channels=3, num_filters=4, groups=2), "num_channels.*divisible"),
    (dict(num_channels=4, num_filters=3, groups=2), "num_filters.*divisible"),
    (dict(num_channels=0, num_filters=3), "num_channels"),
    (dict(num_channels=2, num_filters=0), "num_filters"),
    (dict(num_channels=2, num_filters=2, groups=0), "groups"),
])
def test_error_channel_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv3DTranspose(filter_size=2, **kwargs)


def test_error_groups_vs_inferred_channels(rng):
    layer = Conv3DTranspose("g", num_filters=2, filter_size=2, groups=2, dtype="float64")
    with pytest.raises(ValueError, match="divisible by groups"):
        layer(to_variable(rng.standard_normal((1, 3, 2, 2, 2))))


@pytest.mark.parametrize("bad", [0, [2, 2], [2, -1, 2], 2.5])
def test_error_filter_size(bad):
    with pytest.raises((ValueError, TypeError), match="filter_size"):
        Conv3DTranspose(2, 2, filter_size=bad)


def test_error_output_size_out_of_range(rng):
    # D' = (3-1)*2 + 2 - 1 + 1 = 6, so output_size must lie in [6, 8)
    layer = make_layer(2, 2, 2, stride=2, output_size=8)
    with pytest.raises(ValueError, match=r"\[6, 8\)"):
        layer(to_variable(rng.standard_normal((1, 2, 3, 3, 3))))
    ok = make_layer(2, 2, 2, stride=2, output_size=7)
    assert ok(to_variable(rng.standard_normal((1, 2, 3, 3, 3)))).shape == (1, 2, 7, 7, 7)


def test_error_filter_size_none_with_same_padding(rng):
    layer = Conv3DTranspose(2, 2, output_size=6, padding="SAME", stride=2, dtype="float64")
    with pytest.raises(ValueError, match="padding"):
        layer(to_variable(rng.standard_normal((1, 2, 3, 3, 3))))


def test_error_input_dtype_and_rank(rng):
    layer = make_layer(2, 2, 2, dtype="float32")
    with pytest.raises(TypeError, match="dtype float64 does not match"):
        layer(to_variable(rng.standard_normal((1, 2, 2, 2, 2))))
    with pytest.raises(ValueError, match="5-D"):
        layer(to_variable(rng.standard_normal((2, 2, 2, 2)).astype("float32")))


def test_error_channel_mismatch(rng):
    layer = make_layer(2, 2, 2)
    with pytest.raises(ValueError, match="num_channels=2"):
        layer(to_variable(rng.standard_normal((1, 3, 2, 2, 2))))


def test_error_bad_padding_is_passed_to_core(rng):
    layer = make_layer(2, 2, 2, padding=[1, 2])
    with pytest.raises(ValueError, match="padding"):
        layer(to_variable(rng.standard_normal((1, 2, 2, 2, 2))))


def test_guard_place_cpu_keeps_numpy(rng):
    from conv3dt._place import CPUPlace
    with guard(CPUPlace()):
        layer = Conv3DTranspose(2, 2, filter_size=2)
    assert isinstance(layer.weight._data, np.ndarray)
