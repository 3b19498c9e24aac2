"""Weights files: conv3dt.save / conv3dt.load, the restricted unpickler for Paddle's
pickles (hostile files never run code), PyTorch and safetensors files, load_dygraph by
extension, atomic writes (a failed write leaves the old file intact), and real
PaddlePaddle / PyTorch files where those are installed."""
import collections
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import conv3dt
from conv3dt import _weights
from conv3dt._weights import WeightsFileError
from child import run_python
from conv3dt.dygraph import Conv3DTranspose, load_dygraph, save_dygraph


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _state(rng):
    return {"weight": rng.standard_normal((3, 2, 2, 2, 2)).astype(np.float32),
            "bias": rng.standard_normal(2).astype(np.float32)}


# --- conv3dt.save / conv3dt.load ---------------------------------------------------------

def test_save_load_round_trip_of_a_layer(tmp_path):
    conv = conv3dt.nn.Conv3DTranspose(3, 4, 2)
    path = tmp_path / "deep" / "conv.pdparams"          # folders are created
    conv3dt.save(conv.state_dict(), str(path))
    # The file is Paddle's format: a plain pickle of NumPy arrays plus the name table.
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert set(raw) == {"weight", "bias", "StructuredToParameterName@@"}
    assert raw["StructuredToParameterName@@"] == {"weight": conv.weight.name,
                                                   "bias": conv.bias.name}
    assert isinstance(raw["weight"], np.ndarray)
    state = conv3dt.load(str(path))
    assert sorted(state) == ["bias", "weight"]
    assert isinstance(state["weight"], conv3dt.Tensor) and state["weight"].name == conv.weight.name
    np.testing.assert_array_equal(state["weight"].numpy(), conv.weight.numpy())
    arrays = conv3dt.load(str(path), return_numpy=True)
    assert isinstance(arrays["bias"], np.ndarray)
    kept = conv3dt.load(str(path), keep_name_table=True)
    assert "StructuredToParameterName@@" in kept
    other = conv3dt.nn.Conv3DTranspose(3, 4, 2)
    assert other.set_state_dict(state) == ([], [])
    np.testing.assert_array_equal(other.weight.numpy(), conv.weight.numpy())
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_load_nested_objects_and_errors(tmp_path, rng):
    obj = {"layers": [conv3dt.to_tensor(np.ones(2)), {"step": 3, "lr": 0.5}],
           "name": "run-1", "none": None}
    conv3dt.save(obj, str(tmp_path / "obj.pkl"))
    back = conv3dt.load(str(tmp_path / "obj.pkl"), return_numpy=True)
    np.testing.assert_array_equal(back["layers"][0], np.ones(2))
    assert back["layers"][1] == {"step": 3, "lr": 0.5} and back["name"] == "run-1"
    assert back["none"] is None
    with pytest.raises(TypeError, match="entry 'x' is a object"):
        conv3dt.save({"x": object()}, str(tmp_path / "bad.pdparams"))
    with pytest.raises(TypeError, match="non-numeric dtype"):
        conv3dt.save({"x": np.array(["a"])}, str(tmp_path / "bad.pdparams"))
    with pytest.raises(ValueError, match="protocol must be 2, 3 or 4"):
        conv3dt.save({"x": np.ones(1)}, str(tmp_path / "bad.pdparams"), protocol=5)
    with pytest.raises(ValueError, match="file name is empty"):
        conv3dt.save({"x": np.ones(1)}, str(tmp_path) + os.sep)
    with pytest.raises(ValueError, match="does not write PyTorch"):
        conv3dt.save({"x": np.ones(1)}, str(tmp_path / "bad.pt"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        conv3dt.load(str(tmp_path / "obj.pkl"), bogus=1)
    assert sorted(os.listdir(tmp_path)) == ["obj.pkl"]              # nothing half-written
    with pytest.raises(FileNotFoundError, match="nope.pdparams"):
        conv3dt.load(str(tmp_path / "nope.pdparams"))


def test_npz_round_trip_and_load_state_flattening(tmp_path, rng):
    state = _state(rng)
    conv3dt.save(state, str(tmp_path / "w.npz"))
    back = _weights.load_state(str(tmp_path / "w.npz"))
    assert set(back) == set(state) and all(np.array_equal(back[k], state[k]) for k in state)
    checkpoint = {"model": state, "epoch": 4, "tag": "best", "hist": [np.ones(1), 2.5]}
    conv3dt.save(checkpoint, str(tmp_path / "ckpt.pdparams"))
    flat = _weights.load_state(str(tmp_path / "ckpt.pdparams"))
    assert sorted(flat) == ["epoch", "hist.0", "hist.1", "model.bias", "model.weight"]
    assert flat["epoch"].shape == () and flat["epoch"] == 4 and flat["hist.1"] == 2.5
    with open(tmp_path / "list.pdparams", "wb") as f:
        pickle.dump([np.ones(2)], f)
    with pytest.raises(WeightsFileError, match="holds a list, not a state dict"):
        _weights.load_state(str(tmp_path / "list.pdparams"))
    shared = [np.ones(1)]
    with open(tmp_path / "shared.pdparams", "wb") as f:
        pickle.dump({"a": shared, "b": shared}, f)
    with pytest.raises(WeightsFileError, match="appears twice"):
        _weights.load_state(str(tmp_path / "shared.pdparams"))


def test_paddle_style_pickles_load(tmp_path, rng):
    """Files laid out as paddle.save / fluid.save_dygraph write them, made here by hand:
    protocol 2 and 4, OrderedDict, the name table, big arrays split into slices."""
    state = _state(rng)
    for protocol in (2, 4):
        data = collections.OrderedDict(state)
        data["StructuredToParameterName@@"] = {"weight": "conv3d_transpose_0.w_0",
                                               "bias": "conv3d_transpose_0.b_0"}
        path = tmp_path / f"p{protocol}.pdparams"
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
        back = _weights.load_state(str(path))
        assert list(back) == ["weight", "bias"]
        np.testing.assert_array_equal(back["weight"], state["weight"])
        tensors = conv3dt.load(str(path))
        assert tensors["weight"].name == "conv3d_transpose_0.w_0"
    big = rng.standard_normal((4, 6))
    flat = big.reshape(-1)
    split = {"w@@.0": flat[:10], "w@@.1": flat[10:],
             "UnpackBigParamInfor@@": {"w": {"OriginShape": (4, 6), "slices": ["w@@.0", "w@@.1"]}}}
    with open(tmp_path / "big.pdparams", "wb") as f:
        pickle.dump(split, f, protocol=2)
    back = _weights.load_state(str(tmp_path / "big.pdparams"))
    assert list(back) == ["w"]
    np.testing.assert_array_equal(back["w"], big)
    # a Tensor inside a nested object: paddle.save writes the tuple (name, array)
    with open(tmp_path / "nested.pdparams", "wb") as f:
        pickle.dump({"a": [("linear_0.w_0", flat), 1]}, f, protocol=4)
    loaded = conv3dt.load(str(tmp_path / "nested.pdparams"), return_numpy=True)
    np.testing.assert_array_equal(loaded["a"][0], flat)


# --- hostile and broken files ------------------------------------------------------------

class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(marker):
    import builtins
    return {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "subprocess": _Evil(subprocess.call, ["touch", str(marker)]),
        "exec": _Evil(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "open": _Evil(builtins.open, str(marker), "w"),
        "getattr": _Evil(getattr, str, "format"),
    }


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", ["os.system", "subprocess", "exec", "eval", "open", "getattr"])
def test_hostile_pickle_never_runs_code(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    payload = _hostile_payloads(marker)[kind]
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"weight": np.ones(2), "x": payload}, f, protocol=protocol)
    for loader in (conv3dt.load, _weights.load_state,
                   lambda p: load_dygraph(p[: -len(".pdparams")])):
        with pytest.raises(WeightsFileError) as info:
            loader(str(path))
        message = str(info.value)
        assert "evil.pdparams" in message and "refusing to load" in message
        assert "could run arbitrary code" in message
        assert not marker.exists()
    # names what it asked for (protocol 2 spells some modules the Python 2 way)
    assert f".{payload.func.__name__}," in message
    if kind != "getattr":  # the payload is real: an ordinary unpickler runs it
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_pickle_tricks_are_refused(tmp_path):
    cases = {}
    reconstruct = np.ndarray.__reduce__(np.ones(1))[0]          # numpy's _reconstruct
    cases["huge"] = _Evil(reconstruct, np.ndarray, (10 ** 12,), b"b")
    cases["objects"] = np.array([{"a": 1}, None], dtype=object)

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "pid" if isinstance(obj, str) and obj == "ref" else None

    for name, value in cases.items():
        path = tmp_path / f"{name}.pdparams"
        with open(path, "wb") as f:
            pickle.dump({"w": value}, f, protocol=4)
        with pytest.raises(WeightsFileError, match=f"{name}.pdparams"):
            _weights.load_state(str(path))
    # a crafted stream: BUILD (set attributes) on numpy's _reconstruct itself
    (tmp_path / "build.pdparams").write_bytes(
        b"\x80\x02cnumpy._core.multiarray\n_reconstruct\n}X\x03\x00\x00\x00fooK\x01sb.")
    with pytest.raises(WeightsFileError, match="build.pdparams.*sets attributes"):
        _weights.load_state(str(tmp_path / "build.pdparams"))
    # allowed classes are data builders, not data: a pickle returning one is refused
    with open(tmp_path / "cls.pdparams", "wb") as f:
        pickle.dump({"w": np.ndarray, "d": collections.OrderedDict}, f, protocol=4)
    with pytest.raises(WeightsFileError, match="holds a type object, not data"):
        conv3dt.load(str(tmp_path / "cls.pdparams"))
    buffer = io.BytesIO()
    WithPid(buffer, protocol=4).dump({"w": "ref"})
    (tmp_path / "pid.pdparams").write_bytes(buffer.getvalue())
    with pytest.raises(WeightsFileError, match="persistent ids"):
        _weights.load_state(str(tmp_path / "pid.pdparams"))


def test_truncated_corrupt_and_unknown_files(tmp_path, rng):
    conv3dt.save(_state(rng), str(tmp_path / "good.pdparams"))
    data = (tmp_path / "good.pdparams").read_bytes()
    for cut in range(0, len(data) - 1, max(1, len(data) // 25)):
        (tmp_path / "cut.pdparams").write_bytes(data[:cut])
        with pytest.raises(WeightsFileError, match=r"'.*cut\.pdparams' as a Paddle pickle"):
            _weights.load_state(str(tmp_path / "cut.pdparams"))
    (tmp_path / "junk.pdparams").write_bytes(b"\x80\x04garbage that is no pickle")
    with pytest.raises(WeightsFileError, match="junk.pdparams.*Paddle pickle"):
        conv3dt.load(str(tmp_path / "junk.pdparams"))
    (tmp_path / "extra.pdparams").write_bytes(data + b"tail")
    with pytest.raises(WeightsFileError, match="data after the end"):
        conv3dt.load(str(tmp_path / "extra.pdparams"))
    (tmp_path / "weights.xyz").write_bytes(b"nothing recognisable")
    with pytest.raises(WeightsFileError, match="cannot tell the format of .*weights.xyz"):
        _weights.load_state(str(tmp_path / "weights.xyz"))
    # an unknown extension with a known content is recognised by its first bytes
    (tmp_path / "renamed.weights").write_bytes(data)
    assert sorted(_weights.load_state(str(tmp_path / "renamed.weights"))) == ["bias", "weight"]
    conv3dt.save(_state(rng), str(tmp_path / "a.npz"))
    os.rename(tmp_path / "a.npz", tmp_path / "a.data")
    assert sorted(_weights.load_state(str(tmp_path / "a.data"))) == ["bias", "weight"]
    with pytest.raises(ValueError, match="format must be one of"):
        _weights.load_state(str(tmp_path / "a.data"), format="onnx")
    assert issubclass(WeightsFileError, ValueError)


# --- atomic writes -----------------------------------------------------------------------

_FSIZE_CHILD = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    import conv3dt
    from conv3dt.dygraph import save_dygraph
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # get EFBIG instead of being killed
    limit = 64 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    state = {"weight": np.ones((512, 1024), np.float32)}   # 2 MiB: beyond the limit
    try:
        if sys.argv[2] == "save":
            conv3dt.save(state, sys.argv[1])
        else:
            p = conv3dt.autograd.Parameter(state["weight"], name="w")
            save_dygraph({"weight": p}, sys.argv[1])
    except OSError as exc:
        print("write failed:", exc)
        sys.exit(3)
    sys.exit(0)
""")


@pytest.mark.parametrize("how, name, written", [("save", "m.pdparams", "m.pdparams"),
                                                ("dygraph", "m", "m.pdparams.npz")])
def test_a_write_cut_by_a_file_size_limit_leaves_the_old_file(tmp_path, how, name, written):
    old = {"weight": np.full((4, 4), 7.0, np.float32)}
    if how == "save":
        conv3dt.save(old, str(tmp_path / name))
    else:
        save_dygraph({"weight": conv3dt.autograd.Parameter(old["weight"])}, str(tmp_path / name))
    before = (tmp_path / written).read_bytes()
    res = run_python(_FSIZE_CHILD, str(tmp_path / name), how)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "write failed" in res.stdout
    assert (tmp_path / written).read_bytes() == before
    assert os.listdir(tmp_path) == [written]                      # no temporary file left


def test_a_writer_that_raises_midway_leaves_the_old_file(tmp_path, monkeypatch, rng):
    save_dygraph({"weight": conv3dt.autograd.Parameter(np.ones(3))}, str(tmp_path / "m"))
    conv3dt.save({"w": np.ones(3)}, str(tmp_path / "s.pdparams"))
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_dygraph({"weight": conv3dt.autograd.Parameter(np.zeros(3))}, str(tmp_path / "m"))

    def broken_dump(obj, f, protocol=4):
        f.write(b"\x80\x04 half a pickle")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_weights, "_write_paddle", broken_dump)
    with pytest.raises(OSError, match="No space left"):
        conv3dt.save({"w": np.zeros(3)}, str(tmp_path / "s.pdparams"))
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before
    monkeypatch.undo()
    params, _ = load_dygraph(str(tmp_path / "m"))
    np.testing.assert_array_equal(params["weight"], np.ones(3))


# --- load_dygraph by extension -----------------------------------------------------------

def test_load_dygraph_reads_paddle_pickles_beside_npz(tmp_path, rng):
    state = _state(rng)
    with open(tmp_path / "model.pdparams", "wb") as f:
        pickle.dump(state, f, protocol=2)
    with open(tmp_path / "model.pdopt", "wb") as f:
        pickle.dump({"w_moment1_0": np.zeros(3), "LR_Scheduler": {"last_epoch": 2}}, f)
    params, opt = load_dygraph(str(tmp_path / "model"))
    np.testing.assert_array_equal(params["weight"], state["weight"])
    assert sorted(opt) == ["LR_Scheduler.last_epoch", "w_moment1_0"]
    params, opt = load_dygraph(str(tmp_path / "model.pdparams"))
    assert sorted(params) == ["bias", "weight"]
    conv = Conv3DTranspose(3, 2, filter_size=2)
    conv.set_dict(params)
    np.testing.assert_array_equal(conv.weight.numpy(), state["weight"])
    with pytest.raises(FileNotFoundError, match="model2.pdparams"):
        load_dygraph(str(tmp_path / "model2"))


# --- safetensors -------------------------------------------------------------------------

def test_safetensors_in_and_out(tmp_path, rng):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file, save_file
    conv = conv3dt.nn.Conv3DTranspose(3, 2, 2)
    conv3dt.save(conv.state_dict(), str(tmp_path / "c.safetensors"))
    theirs = load_file(str(tmp_path / "c.safetensors"))          # the package reads ours
    np.testing.assert_array_equal(theirs["weight"], conv.weight.numpy())
    state = _state(rng)
    save_file(state, str(tmp_path / "t.safetensors"))             # and we read its files
    back = _weights.load_state(str(tmp_path / "t.safetensors"))
    assert all(np.array_equal(back[k], state[k]) for k in state)
    params, opt = load_dygraph(str(tmp_path / "t.safetensors"))
    assert opt is None and sorted(params) == ["bias", "weight"]
    assert isinstance(conv3dt.load(str(tmp_path / "t.safetensors"))["bias"], conv3dt.Tensor)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(WeightsFileError, match="bad.safetensors' as a safetensors file"):
        _weights.load_state(str(tmp_path / "bad.safetensors"))
    with pytest.raises(TypeError, match="entry 'a' is a dict; a safetensors file holds arrays"):
        conv3dt.save({"a": {"b": np.ones(1)}}, str(tmp_path / "n.safetensors"))
    with pytest.raises(TypeError, match="flat dict"):
        conv3dt.save([np.ones(1)], str(tmp_path / "n.safetensors"))


def test_missing_optional_packages_say_what_to_install(tmp_path, monkeypatch, rng):
    (tmp_path / "w.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (tmp_path / "w.pt").write_bytes(b"PK\x03\x04")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(WeightsFileError, match="pip install safetensors"):
        _weights.load_state(str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsFileError, match="pip install safetensors"):
        conv3dt.save(_state(rng), str(tmp_path / "out.safetensors"))
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(WeightsFileError, match=r"w\.pt' as a PyTorch file.*pip install torch"):
        _weights.load_state(str(tmp_path / "w.pt"))


# --- PyTorch -----------------------------------------------------------------------------

def test_pytorch_state_dicts_load(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose3d(3, 4, 2, stride=2)
    torch.save(layer.state_dict(), str(tmp_path / "layer.pt"))
    state = _weights.load_state(str(tmp_path / "layer.pt"))
    np.testing.assert_array_equal(state["weight"], layer.weight.detach().numpy())
    # torch's ConvTranspose3d weight layout is ours: the layer reproduces torch's output
    conv = conv3dt.nn.Conv3DTranspose(3, 4, 2, stride=2)
    conv.set_state_dict(state)
    x = torch.randn(1, 3, 2, 3, 2)
    np.testing.assert_allclose(conv(conv3dt.to_tensor(x.numpy())).numpy(),
                               layer(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    torch.save({"model": layer.state_dict(), "epoch": 5, "half": torch.ones(2).bfloat16()},
               str(tmp_path / "ckpt.pth"))
    flat = _weights.load_state(str(tmp_path / "ckpt.pth"))
    assert sorted(flat) == ["epoch", "half", "model.bias", "model.weight"]
    assert flat["half"].dtype == np.float32 and flat["half"].tolist() == [1.0, 1.0]
    params, opt = load_dygraph(str(tmp_path / "layer.pt"))
    assert opt is None and sorted(params) == ["bias", "weight"]


def test_hostile_pytorch_file_never_runs_code(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.ones(2), "x": _Evil(os.system, f"touch {marker}")},
               str(tmp_path / "evil.pt"))
    with pytest.raises(WeightsFileError, match=r"evil\.pt' as a PyTorch file"):
        _weights.load_state(str(tmp_path / "evil.pt"))
    assert not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"no zip, no pickle")
    with pytest.raises(WeightsFileError, match=r"junk\.pth' as a PyTorch file"):
        _weights.load_state(str(tmp_path / "junk.pth"))


# --- real PaddlePaddle -------------------------------------------------------------------

_PADDLE_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import paddle
    folder = sys.argv[1]
    # ours -> Paddle: paddle.load reads conv3dt.save's file into its own layer
    ours = paddle.load(folder + "/ours.pdparams")
    conv = paddle.nn.Conv3DTranspose(3, 4, 2, stride=2)
    conv.set_state_dict(ours)
    x = paddle.to_tensor(np.load(folder + "/x.npy"))
    np.save(folder + "/paddle_y.npy", conv(x).numpy())
    # Paddle -> ours: paddle.save of a layer, an optimizer, protocol 2
    paddle.seed(1)
    conv = paddle.nn.Conv3DTranspose(2, 3, 2)
    opt = paddle.optimizer.Adam(parameters=conv.parameters())
    conv(paddle.rand([1, 2, 2, 2, 2])).mean().backward()
    opt.step()
    paddle.save(conv.state_dict(), folder + "/theirs.pdparams")
    paddle.save(conv.state_dict(), folder + "/theirs2.pdparams", protocol=2)
    paddle.save(opt.state_dict(), folder + "/theirs.pdopt")
    np.savez(folder + "/reference.npz",
             **{"p." + k: v.numpy() for k, v in conv.state_dict().items()},
             **{"o." + k: np.asarray(v) for k, v in opt.state_dict().items()
                if hasattr(v, "numpy")})
""")


def test_real_paddle_files_both_ways(tmp_path, rng):
    if importlib.util.find_spec("paddle") is None:   # run in a child: never imported here
        pytest.skip("PaddlePaddle is not installed")
    conv = conv3dt.nn.Conv3DTranspose(3, 4, 2, stride=2)
    conv.bias.set_value(rng.standard_normal(4).astype(np.float32))
    conv3dt.save(conv.state_dict(), str(tmp_path / "ours.pdparams"))
    x = rng.standard_normal((1, 3, 2, 3, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run_python(_PADDLE_CHILD, str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "paddle_y.npy"),
                               conv(conv3dt.to_tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
    ref = dict(np.load(tmp_path / "reference.npz"))
    for name in ("theirs.pdparams", "theirs2.pdparams"):
        state = conv3dt.load(str(tmp_path / name))
        assert sorted(state) == ["bias", "weight"]
        assert state["weight"].name.endswith(".w_0")               # Paddle's parameter name
        for k, v in state.items():
            np.testing.assert_array_equal(v.numpy(), ref["p." + k])
        mine = conv3dt.nn.Conv3DTranspose(2, 3, 2)
        assert mine.set_state_dict(state) == ([], [])
    params, opt = load_dygraph(str(tmp_path / "theirs"))
    assert sorted(params) == ["bias", "weight"]
    moments = {k[2:]: v for k, v in ref.items() if k.startswith("o.")}
    assert moments and all(np.array_equal(opt[k], v) for k, v in moments.items())
    # Paddle's Adam accumulators restore into conv3dt's Adam (its parameter names match)
    mine = conv3dt.nn.Conv3DTranspose(2, 3, 2)
    mine.weight.name, mine.bias.name = state["weight"].name, state["bias"].name
    adam = conv3dt.optimizer.Adam(parameters=mine.parameters())
    adam.set_state_dict(opt)
    assert set(adam.state_dict()) == {f"{p.name}.{s}" for p in mine.parameters()
                                      for s in ("moment1", "moment2", "beta1_pow", "beta2_pow")}
