"""``conv3dt run``: errors in one line, the output written under the name given, the
output's rank as the help says, and Zarr / chunked runs through Dask (bit for bit equal
to the functional API's whole call)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conv3dt import dygraph
from conv3dt.functional import conv3d_transpose
from child import run_cli, run_main


def cli(*args, cwd):
    """``python -m conv3dt ARGS`` in a subprocess, with the conv3dt under test."""
    return run_cli(*args, cwd=cwd)


def _layer(path, c_in, c_out, kernel, seed=0):
    rng = np.random.default_rng(seed)
    with dygraph.guard():
        layer = dygraph.Conv3DTranspose(c_in, c_out, filter_size=kernel)
        layer.bias.set_value(rng.standard_normal(c_out).astype("float32"))
        dygraph.save_dygraph(layer.state_dict(), str(path))
    return layer.weight.numpy(), layer.bias.numpy()


def bitwise(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.fixture
def files(tmp_path):
    weight, bias = _layer(tmp_path / "up", 2, 3, 3)
    x = np.random.default_rng(1).standard_normal((1, 2, 9, 8, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return tmp_path, x, weight, bias


# --------------------------------------------------------------------------- findings


@pytest.mark.parametrize("extra", [[], ["--memory", "64MiB", "--output", "y.npy"],
                                   ["--memory", "1MiB"]])
def test_huge_stride_is_a_one_line_error(capsys, files, extra, monkeypatch):
    if extra:
        pytest.importorskip("dask")
    tmp, _, _, _ = files
    monkeypatch.chdir(tmp)
    code, out, err = run_main(capsys, "run", "--input", str(tmp / "x.npy"),
                              "--weights", str(tmp / "up.pdparams.npz"), "--stride", "1000",
                              *extra)
    assert code in (1, 2), (out, err)
    assert err.startswith("conv3dt run: error: "), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "bytes" in err or "chunks" in err
    assert not (tmp / "y.npy").exists()


def test_huge_stride_in_a_subprocess(files):
    tmp, _, _, _ = files
    res = cli("run", "--input", "x.npy", "--weights", "up.pdparams.npz", "--stride", "1000",
              cwd=tmp)
    assert res.returncode in (1, 2)
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_output_is_written_under_the_name_given(capsys, files):
    tmp, x, weight, bias = files
    code, out, err = run_main(capsys, "run", "--input", str(tmp / "x.npy"),
                              "--weights", str(tmp / "up.pdparams.npz"),
                              "--output", str(tmp / "outfile"))
    assert code == 0, err
    assert f"saved to {tmp / 'outfile'}" in out
    assert (tmp / "outfile").exists() and not (tmp / "outfile.npy").exists()
    assert bitwise(np.load(tmp / "outfile"), conv3d_transpose(x, weight, bias))


def test_help_states_the_output_rank_and_the_ranks_are_so(capsys, tmp_path):
    code, out, _ = run_main(capsys, "run", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "the output has the same rank" not in text
    assert "the output is 5-D for a 5-D input, without N for a 4-D one" in text
    assert "when the layer has one output channel, without C" in text
    volume = np.random.default_rng(2).standard_normal((4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "v3.npy", volume)
    np.save(tmp_path / "v4.npy", volume[None])
    for c_out, name, want_rank in ((3, "many", 4), (1, "one", 3)):
        _layer(tmp_path / name, 1, c_out, 2)
        for src, rank in (("v3.npy", want_rank), ("v4.npy", 4)):
            code, out, err = run_main(capsys, "run", "--input", str(tmp_path / src),
                                      "--weights", str(tmp_path / f"{name}.pdparams.npz"),
                                      "--output", str(tmp_path / "o.npy"))
            assert code == 0, err
            assert np.load(tmp_path / "o.npy").ndim == rank, (c_out, src)


# --------------------------------------------------------------------------- chunked runs


def test_zarr_in_zarr_out_bitwise(capsys, files):
    zarr = pytest.importorskip("zarr")
    cd = pytest.importorskip("conv3dt.dask")
    tmp, x, weight, bias = files
    src = cd.create_zarr(tmp / "x.zarr", x.shape, (1, 2, 4, 8, 7), x.dtype)
    src[...] = x
    code, out, err = run_main(capsys, "run", "--input", str(tmp / "x.zarr"),
                              "--weights", str(tmp / "up.pdparams.npz"), "--stride", "2",
                              "--padding", "1", "--act", "relu", "--output",
                              str(tmp / "y.zarr"), "--memory", "40KiB", "--stats")
    assert code == 0, err
    want = np.maximum(conv3d_transpose(x, weight, bias, stride=2, padding=1), 0)
    got = zarr.open_array(str(tmp / "y.zarr"), mode="r")
    assert bitwise(np.asarray(got[...]), want)
    assert f"saved to {tmp / 'y.zarr'}" in out and "threads scheduler" in out
    assert int(out.split(" chunks")[0].rsplit("(", 1)[1]) > 1  # really in chunks
    assert f"max {float(want.max()):.6g}" in out


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_npy_streamed_through_dask(capsys, files, scheduler):
    pytest.importorskip("dask")
    tmp, x, weight, bias = files
    code, out, err = run_main(capsys, "run", "--input", str(tmp / "x.npy"),
                              "--weights", str(tmp / "up.pdparams.npz"), "--stride", "1,2,3",
                              "--output", str(tmp / "y.npy"), "--memory", "32KiB",
                              "--scheduler", scheduler)
    assert code == 0, err
    assert bitwise(np.load(tmp / "y.npy"), conv3d_transpose(x, weight, bias, stride=(1, 2, 3)))
    assert f"{scheduler} scheduler" in out


def test_progress_bar_on_a_terminal(capsys, files, monkeypatch):
    pytest.importorskip("dask")
    tmp, _, _, _ = files
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, out, err = run_main(capsys, "run", "--input", str(tmp / "x.npy"),
                              "--weights", str(tmp / "up.pdparams.npz"), "--memory", "1MiB")
    assert code == 0, err
    assert "100% Completed" in err


@pytest.mark.parametrize("option, value, message", [
    ("--memory", "lots", "must be a size such as 512MiB"),
    ("--memory", "0", "must be a size such as 512MiB"),
    ("--scheduler", "fast", "must be threads, processes, synchronous or a scheduler address"),
])
def test_chunked_option_errors(capsys, files, option, value, message):
    tmp, _, _, _ = files
    code, _, err = run_main(capsys, "run", "--input", str(tmp / "x.npy"),
                            "--weights", str(tmp / "up.pdparams.npz"), option, value)
    assert code == 2 and message in err


def test_unwritable_zarr_output_is_a_one_line_error(capsys, files):
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    tmp, _, _, _ = files
    (tmp / "blocker").write_text("a file where a folder should be")
    code, _, err = run_main(capsys, "run", "--input", str(tmp / "x.npy"),
                            "--weights", str(tmp / "up.pdparams.npz"),
                            "--output", str(tmp / "blocker" / "y.zarr"))
    assert code == 2 and err.startswith("conv3dt run: error: --output: cannot write"), err
    assert len(err.strip().splitlines()) == 1


def test_larger_than_the_memory_budget_in_a_subprocess(tmp_path):
    """A 262 MB output written by a process whose peak memory stays far below it."""
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    _layer(tmp_path / "up", 4, 16, 2)
    x = np.random.default_rng(3).standard_normal((1, 4, 80, 80, 80)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # the child reports its own peak (resident set high-water mark)
    # (VmHWM: getrusage's ru_maxrss would include the parent's memory at the fork)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    code = ("import sys; from conv3dt._cli import main; rc = main(sys.argv[1:]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print('peak', int(hwm.split()[1]) * 1024); sys.exit(rc)")
    import conv3dt

    env = dict(os.environ)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "-c", code, "run", "--input", "x.npy", "--weights",
                          "up.pdparams.npz", "--stride", "2", "--output", "y.zarr", "--memory",
                          "16MiB", "--threads", "1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    peak = int(res.stdout.split("peak ")[1])
    out_bytes = 16 * 160 ** 3 * 4
    assert peak < 0.75 * out_bytes, (peak / 2**20, out_bytes / 2**20)
    import zarr

    y = zarr.open_array(str(tmp_path / "y.zarr"), mode="r")
    assert y.shape == (1, 16, 160, 160, 160)
    weight = np.load(tmp_path / "up.pdparams.npz")
    w = weight[[k for k in weight.files if k.endswith("weight")][0]]
    b = weight[[k for k in weight.files if k.endswith("bias")][0]]
    assert bitwise(np.asarray(y[:, :, 64:80]), conv3d_transpose(x[:, :, 32:40], w, b, stride=2))


def test_run_reads_weights_of_other_tools(capsys, tmp_path):
    """--weights takes Paddle's .pdparams (conv3dt.save writes that format) and a PyTorch
    ConvTranspose3d state dict (.pt), not only .npz."""
    import conv3dt

    rng = np.random.default_rng(3)
    volume = rng.standard_normal((1, 2, 3, 4, 3)).astype(np.float32)
    weight = rng.standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    np.save(tmp_path / "in.npy", volume)
    expected = conv3d_transpose(volume, weight, bias, stride=2)
    conv3dt.save({"conv.weight": weight, "conv.bias": bias}, str(tmp_path / "m.pdparams"))
    files = ["m.pdparams"]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.save({"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)},
                   str(tmp_path / "m.pt"))
        files.append("m.pt")
    for name in files:
        out = tmp_path / f"out-{name}.npy"
        code, _, err = run_main(capsys, "run", "--input", str(tmp_path / "in.npy"),
                                "--weights", str(tmp_path / name), "--stride", "2",
                                "--output", str(out))
        assert code == 0, err
        np.testing.assert_allclose(np.load(out), expected, rtol=1e-6, atol=1e-6)
