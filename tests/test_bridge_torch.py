"""conv3dt.torch against PyTorch itself: forward and gradients equal to
torch.nn.functional.conv_transpose3d, torch.autograd.gradcheck, a small model trained with
torch's optimizer equal to the same model with torch's own nn.ConvTranspose3d, memory
shared with the tensors, and clear errors (graph capture included)."""
import os
import sys

import numpy as np
import pytest

if os.environ.get("CONV3DT_REQUIRE_BRIDGES"):
    import torch  # noqa: F401  (CI's bridge step: a missing torch is a failure, not a skip)
torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

import conv3dt  # noqa: E402
from spies import record_calls  # noqa: E402
from child import run_python  # noqa: E402
import conv3dt.functional  # noqa: E402
import conv3dt.torch as ct  # noqa: E402

TF = torch.nn.functional

# (N or None for unbatched, C_in, C_out, spatial, kernel, stride, padding, output_padding,
#  dilation, groups, bias)
CONFIGS = [
    (2, 3, 4, (4, 3, 5), 3, 1, 0, 0, 1, 1, True),
    (1, 4, 6, (3, 4, 3), 3, 2, 1, 1, 1, 2, True),
    (2, 2, 3, (3, 3, 4), (2, 3, 2), (2, 1, 3), (0, 1, 1), (1, 0, 2), 1, 1, False),
    (1, 4, 4, (3, 3, 3), 2, 1, 1, (1, 0, 1), 2, 4, True),
    (None, 3, 2, (4, 3, 3), (3, 2, 2), (1, 2, 2), (1, 0, 1), 0, (2, 1, 1), 1, True),
    (None, 6, 3, (2, 3, 2), 2, 3, 0, 2, 1, 3, False),
    (3, 2, 4, (2, 2, 2), (1, 2, 3), 2, 0, 1, (1, 2, 2), 2, True),
]


def _triple(v):
    return (v,) * 3 if isinstance(v, int) else tuple(v)


def make(config, dtype, seed=0, requires_grad=True):
    n, cin, cout, spatial, k, s, p, op, d, g, has_bias = config
    gen = torch.Generator().manual_seed(seed)
    shape = ((n,) if n else ()) + (cin,) + spatial
    x = torch.randn(shape, dtype=dtype, generator=gen)
    w = torch.randn((cin, cout // g) + _triple(k), dtype=dtype, generator=gen)
    b = torch.randn(cout, dtype=dtype, generator=gen) if has_bias else None
    for t in (x, w, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    return x, w, b, dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)


def grads(y, inputs, gy):
    inputs = [t for t in inputs if t is not None]
    return torch.autograd.grad(y, inputs, gy)


@pytest.mark.parametrize("config", CONFIGS, ids=[f"c{i}" for i in range(len(CONFIGS))])
@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-11, 1e-11),
                                             (torch.float32, 1e-5, 1e-5)])
def test_forward_and_gradients_match_torch(config, dtype, rtol, atol):
    x, w, b, geom = make(config, dtype)
    y_ref = TF.conv_transpose3d(x, w, b, **geom)
    y = ct.conv_transpose3d(x, w, b, **geom)
    assert y.shape == y_ref.shape and y.dtype == dtype
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    gy = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for got, expected in zip(grads(y, (x, w, b), gy), grads(y_ref, (x, w, b), gy)):
        assert got.shape == expected.shape and got.dtype == dtype
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol * 10)


# Tiny problems for the full Jacobians (one backward call per output element).
SMALL_CONFIGS = [
    (1, 2, 2, (2, 3, 2), 2, 2, 0, 1, 1, 1, True),
    (2, 2, 4, (2, 2, 2), (2, 1, 2), (1, 2, 1), (1, 0, 0), (0, 1, 0), (2, 1, 1), 2, True),
    (1, 3, 1, (3, 2, 2), (3, 2, 1), 1, (1, 1, 0), 0, 1, 1, False),
    (None, 2, 2, (2, 2, 3), 2, (2, 1, 2), (0, 0, 1), (1, 0, 1), (1, 2, 1), 2, True),
    (None, 4, 2, (1, 2, 2), 3, 2, 1, 0, 1, 2, False),
]


@pytest.fixture
def one_thread():
    # Tiny problems run fastest on one thread (and a gradcheck makes hundreds of calls).
    before = conv3dt.get_num_threads()
    conv3dt.set_num_threads(1)
    yield
    conv3dt.set_num_threads(before)


def _gradcheck(config, fast_mode):
    x, w, b, geom = make(config, torch.float64, seed=3)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def f(*args):
        return ct.conv_transpose3d(args[0], args[1], args[2] if len(args) > 2 else None,
                                   **geom)

    return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=fast_mode)


@pytest.mark.parametrize("config", SMALL_CONFIGS, ids=[f"s{i}" for i in range(5)])
def test_gradcheck_float64(config, one_thread):
    assert _gradcheck(config, fast_mode=False)


@pytest.mark.parametrize("config", CONFIGS, ids=[f"c{i}" for i in range(len(CONFIGS))])
def test_gradcheck_float64_fast_mode(config, one_thread):
    # random projections of the Jacobians, on the larger configurations
    assert _gradcheck(config, fast_mode=True)


def test_non_contiguous_inputs_and_gradients():
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(2, 7, 6, 5, 8, dtype=torch.float64, generator=gen)
    x = base[:, 1:7:2, :, ::2].permute(0, 1, 2, 4, 3)   # strided, permuted: [2, 3, 6, 8, 3]
    assert not x.is_contiguous()
    w = torch.randn(2, 3, 4, 3, 3, 3, dtype=torch.float64, generator=gen)[1]   # a slice
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = ct.conv_transpose3d(x, w, stride=2, padding=1)
    y_ref = TF.conv_transpose3d(x, w, stride=2, padding=1)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    # sum() hands backward an expanded (stride 0) gradient
    gx, gw = torch.autograd.grad(y.sum(), (x, w))
    gx_ref, gw_ref = torch.autograd.grad(y_ref.sum(), (x, w))
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False),
                                    (False, False, True), (False, True, True),
                                    (True, True, True)])
def test_backward_computes_only_what_autograd_needs(monkeypatch, wanted):
    calls = record_calls(monkeypatch, conv3dt.functional, "conv3d_transpose_backward")
    x, w, b, geom = make(CONFIGS[1], torch.float64, requires_grad=False)
    for t, need in zip((x, w, b), wanted):
        t.requires_grad_(need)
    y = ct.conv_transpose3d(x, w, b, **geom)
    y.backward(torch.ones_like(y))
    assert len(calls) == 1
    args, kwargs, result = calls[0]
    assert kwargs["needs"] == wanted
    assert [r is not None for r in result] == list(wanted)
    refs = [t.detach().clone().requires_grad_(need) for t, need in zip((x, w, b), wanted)]
    y_ref = TF.conv_transpose3d(*refs, **geom)
    y_ref.backward(torch.ones_like(y_ref))
    for t, ref, need in zip((x, w, b), refs, wanted):
        assert (t.grad is not None) == need
        if need:
            torch.testing.assert_close(t.grad, ref.grad, rtol=1e-11, atol=1e-11)


def test_empty_batch_like_torch():
    x = torch.zeros(0, 2, 3, 3, 3, requires_grad=True)
    w = torch.randn(2, 3, 2, 2, 2, requires_grad=True)
    y = ct.conv_transpose3d(x, w, stride=2)
    assert y.shape == TF.conv_transpose3d(x, w, stride=2).shape == (0, 3, 6, 6, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


def test_no_backward_call_without_grad(monkeypatch):
    calls = record_calls(monkeypatch, conv3dt.functional, "conv3d_transpose_backward")
    x, w, b, geom = make(CONFIGS[0], torch.float32, requires_grad=False)
    y = ct.conv_transpose3d(x, w, b, **geom)
    assert not y.requires_grad and y.grad_fn is None
    with torch.no_grad():
        w.requires_grad_(True)
        assert not ct.conv_transpose3d(x, w, b, **geom).requires_grad
    assert calls == []


# --- the module ------------------------------------------------------------------------

MODULE_ARGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 3, 1), stride=(2, 1, 3),
         padding=(1, 0, 0), output_padding=(1, 0, 2), groups=2, bias=False),
    dict(in_channels=3, out_channels=3, kernel_size=2, stride=1, padding=1,
         output_padding=1, dilation=2, groups=3),
]


@pytest.mark.parametrize("kwargs", MODULE_ARGS, ids=["plain", "groups-nobias", "dilated"])
def test_module_init_repr_and_state_dict_match_torch(kwargs):
    torch.manual_seed(7)
    theirs = torch.nn.ConvTranspose3d(**kwargs)
    torch.manual_seed(7)
    mine = ct.ConvTranspose3d(**kwargs)
    assert repr(mine) == repr(theirs)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
        assert p.shape == q.shape, name
        assert torch.equal(p, q), name          # same calls, same random stream
    fresh = ct.ConvTranspose3d(**kwargs)
    assert not torch.equal(fresh.weight, theirs.weight)
    fresh.load_state_dict(theirs.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 3, 4, 3)
    torch.testing.assert_close(fresh(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert set(theirs.state_dict()) == set(mine.state_dict())
    theirs.load_state_dict(mine.state_dict())   # and the other way


def test_reset_parameters_bounds():
    layer = ct.ConvTranspose3d(8, 6, (2, 3, 4), groups=2)
    fan_in = (6 // 2) * 2 * 3 * 4
    bound = 1 / np.sqrt(fan_in)   # kaiming_uniform(a=sqrt(5)): sqrt(6 / ((1 + 5) fan_in))
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert layer.bias.abs().max() <= bound


def test_module_device_and_dtype_arguments():
    layer = ct.ConvTranspose3d(2, 2, 3, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == torch.float64 and layer.bias.device.type == "cpu"
    y = layer(torch.randn(1, 2, 3, 3, 3, dtype=torch.float64))
    assert y.dtype == torch.float64


@pytest.mark.parametrize("output_size", [[9, 10, 11], (10, 9, 12), torch.Size([2, 6, 10, 9, 11]),
                                         [10, 10, 12]])
def test_output_size_like_torch(output_size):
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, groups=2).double()
    mine = ct.ConvTranspose3d(4, 6, 3, stride=2, padding=1, groups=2).double()
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 5, 5, 6, dtype=torch.float64, requires_grad=True)
    y_ref = theirs(x, output_size=output_size)
    y = mine(x, output_size=output_size)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(y)
    for got, expected in zip(grads(y, (x, mine.weight, mine.bias), gy),
                             grads(y_ref, (x, theirs.weight, theirs.bias), gy)):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)


def test_output_size_unbatched_and_errors_like_torch():
    theirs = torch.nn.ConvTranspose3d(2, 3, 3, stride=3)
    mine = ct.ConvTranspose3d(2, 3, 3, stride=3)
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 3, 3)
    for size in ([11, 10, 9], [3, 11, 11, 11]):
        torch.testing.assert_close(mine(x, output_size=size), theirs(x, output_size=size),
                                   rtol=1e-5, atol=1e-5)
    for size in ([12, 9, 9], [8, 9, 9], [9, 9], [1, 3, 9, 9, 9]):
        with pytest.raises(ValueError) as theirs_err:
            theirs(x, output_size=size)
        with pytest.raises(ValueError) as mine_err:
            mine(x, output_size=size)
        # (PyTorch describes an unbatched input by its last two sizes: that part differs)
        assert (str(mine_err.value).split(" (for an input")[0]
                == str(theirs_err.value).split(" (for an input")[0])


def test_unbatched_module_and_bias_false():
    mine = ct.ConvTranspose3d(3, 2, 2, stride=2, bias=False)
    theirs = torch.nn.ConvTranspose3d(3, 2, 2, stride=2, bias=False)
    theirs.load_state_dict(mine.state_dict())
    x = torch.randn(3, 2, 3, 4)
    y = mine(x)
    assert y.shape == (2, 4, 6, 8)
    torch.testing.assert_close(y, theirs(x), rtol=1e-5, atol=1e-5)


# --- a model trained with torch's optimizer -----------------------------------------------

def _model(up_cls, dtype):
    return torch.nn.Sequential(
        torch.nn.Conv3d(2, 4, 3, stride=2, padding=1),
        up_cls(4, 3, 3, stride=2, padding=1, output_padding=1, groups=1),
        torch.nn.ReLU(),
    ).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_training_steps_equal_torch_model(dtype, tol):
    torch.manual_seed(11)
    theirs = _model(torch.nn.ConvTranspose3d, dtype)
    mine = _model(ct.ConvTranspose3d, dtype)
    mine.load_state_dict(theirs.state_dict())
    assert isinstance(mine[1], ct.ConvTranspose3d)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (theirs, mine)]
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 2, 6, 6, 6, dtype=dtype, generator=gen)
    target = torch.rand(2, 3, 6, 6, 6, dtype=dtype, generator=gen)
    losses = {0: [], 1: []}
    for _ in range(4):
        for i, (model, opt) in enumerate(zip((theirs, mine), opts)):
            opt.zero_grad()
            loss = TF.mse_loss(model(x), target)
            loss.backward()
            opt.step()
            losses[i].append(loss.item())
    np.testing.assert_allclose(losses[1], losses[0], rtol=tol, atol=0)
    assert losses[0][-1] < losses[0][0]
    for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p, q, rtol=tol * 10, atol=tol * 10, msg=name)


# --- memory --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensors_shared_not_copied(monkeypatch, dtype):
    calls = record_calls(monkeypatch, conv3dt.functional, "conv3d_transpose")
    bcalls = record_calls(monkeypatch, conv3dt.functional, "conv3d_transpose_backward")
    x = torch.randn(1, 2, 3, 3, 3, dtype=dtype, requires_grad=True)
    w = torch.randn(2, 3, 2, 2, 2, dtype=dtype, requires_grad=True)
    b = torch.randn(3, dtype=dtype, requires_grad=True)
    y = ct.conv_transpose3d(x, w, b, stride=2)
    (xa, wa, ba), _, out = calls[0]
    for tensor, array in ((x, xa), (w, wa), (b, ba)):
        assert isinstance(array, np.ndarray)
        assert array.ctypes.data == tensor.data_ptr()
        assert np.shares_memory(array, tensor.detach().numpy())
    assert y.data_ptr() == out.ctypes.data and np.shares_memory(y.detach().numpy(), out)
    gy = torch.randn_like(y)
    y.backward(gy)
    (gya, xa2, wa2), _, result = bcalls[0]
    assert gya.ctypes.data == gy.data_ptr() and xa2.ctypes.data == x.data_ptr()
    assert x.grad.data_ptr() == result[0].ctypes.data
    assert w.grad.data_ptr() == result[1].ctypes.data


def test_strided_input_is_read_in_place(monkeypatch):
    calls = record_calls(monkeypatch, conv3dt.functional, "conv3d_transpose")
    base = torch.randn(2, 4, 6, 6, 6)
    x = base[:, ::2, 1:, :, ::2]
    ct.conv_transpose3d(x, torch.randn(2, 3, 2, 2, 2))
    xa = calls[0][0][0]
    assert np.shares_memory(xa, base.numpy()) and xa.shape == tuple(x.shape)


def test_import_conv3dt_imports_neither_torch_nor_paddle():
    code = ("import sys, conv3dt, conv3dt.functional, conv3dt.dygraph\n"
            "bad = [m for m in ('torch', 'paddle', 'conv3dt.torch', 'conv3dt.paddle') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    res = run_python(code)
    assert res.returncode == 0, res.stderr


# --- errors --------------------------------------------------------------------------------

def test_unsupported_dtypes_are_type_errors():
    w = torch.randn(2, 2, 2, 2, 2)
    for dtype in (torch.float16, torch.bfloat16, torch.int64):
        with pytest.raises(TypeError, match=rf"input must be torch.float32 or "
                                            rf"torch.float64, got {dtype}"):
            ct.conv_transpose3d(torch.ones(1, 2, 2, 2, 2, dtype=dtype), w)
    with pytest.raises(TypeError, match="weight must be torch.float32"):
        ct.ConvTranspose3d(2, 2, 2, dtype=torch.float16)(torch.ones(1, 2, 2, 2, 2))
    with pytest.raises(TypeError, match="same dtype"):
        ct.conv_transpose3d(torch.ones(1, 2, 2, 2, 2, dtype=torch.float64), w)
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got ndarray"):
        ct.conv_transpose3d(np.ones((1, 2, 2, 2, 2), np.float32), w)


def test_argument_errors():
    x, w = torch.ones(1, 2, 3, 3, 3), torch.ones(2, 2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"input must be 4-D .* got shape \(2, 3, 3\)"):
        ct.conv_transpose3d(torch.ones(2, 3, 3), w)
    with pytest.raises(ValueError, match="weight must be 5-D"):
        ct.conv_transpose3d(x, torch.ones(2, 2, 2, 2))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        ct.conv_transpose3d(x, w, padding=-1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ct.conv_transpose3d(x, w, stride=(1, 0, 1))
    with pytest.raises(TypeError, match="dilation must be an int or a tuple of 1 or 3"):
        ct.conv_transpose3d(x, w, dilation=(1, 2))
    with pytest.raises(ValueError, match="output_padding"):
        ct.conv_transpose3d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="groups"):
        ct.conv_transpose3d(x, w, groups=0)
    with pytest.raises(ValueError):
        ct.conv_transpose3d(torch.ones(1, 3, 3, 3, 3), w)     # C_in 3 vs weight's 2
    with pytest.raises(ValueError, match="bias"):
        ct.conv_transpose3d(x, w, torch.ones(3))
    with pytest.raises(ValueError, match='Only "zeros" padding mode'):
        ct.ConvTranspose3d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        ct.ConvTranspose3d(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        ct.ConvTranspose3d(2, 3, 3, groups=2)
    with pytest.raises(ValueError, match="padding must be an int or a tuple of 3 ints"):
        ct.ConvTranspose3d(2, 2, 3, padding="same")


def test_unsupported_devices():
    with pytest.raises(TypeError, match="input is on device meta: conv3dt computes CPU "
                                        "and CUDA tensors only"):
        ct.conv_transpose3d(torch.ones(1, 2, 2, 2, 2, device="meta"),
                            torch.ones(2, 2, 2, 2, 2, device="meta"))
    with pytest.raises(TypeError, match="weight is on device meta"):
        ct.conv_transpose3d(torch.ones(1, 2, 2, 2, 2),
                            torch.ones(2, 2, 2, 2, 2, device="meta"))


def test_cuda_without_cupy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)     # import cupy -> ImportError
    with pytest.raises(RuntimeError, match=r"CUDA tensor .* CuPy, which is not installed.*"
                                           r"conv3dt\[gpu\]"):
        ct._cupy()


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_graph_capture_is_refused():
    layer = ct.ConvTranspose3d(2, 2, 2)
    x = torch.randn(1, 2, 3, 3, 3)
    with pytest.raises(RuntimeError, match="torch.jit.trace cannot trace"):
        torch.jit.trace(layer, x)
    with pytest.raises(RuntimeError, match="torch.jit.script cannot script"):
        torch.jit.script(torch.nn.Sequential(torch.nn.ReLU(), layer))
    with pytest.raises(RuntimeError, match="torch.fx.symbolic_trace cannot trace"):
        torch.fx.symbolic_trace(layer)

    def scripted(z, weight):
        return ct.conv_transpose3d(z, weight, None, 2, 1)

    fn = torch.jit.script(scripted)            # compiles to a call that raises
    with pytest.raises(torch.jit.Error, match="cannot run under torch.jit.script"):
        fn(x, layer.weight)


@pytest.mark.parametrize("fullgraph", [False, True])
def test_torch_compile_fails_clearly(fullgraph):
    torch._dynamo.reset()
    model = torch.nn.Sequential(ct.ConvTranspose3d(2, 2, 2), torch.nn.ReLU())
    compiled = torch.compile(model, fullgraph=fullgraph)
    with pytest.raises(RuntimeError, match="torch.compile and torch.export cannot compile"):
        compiled(torch.randn(1, 2, 3, 3, 3))
    torch._dynamo.reset()


def test_double_backward_is_refused():
    x = torch.randn(1, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    y = ct.conv_transpose3d(x, w)
    gy = torch.randn_like(y, requires_grad=True)
    (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()
