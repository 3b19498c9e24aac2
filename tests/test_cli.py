"""The ``conv3dt`` command line: every subcommand, --help, exit codes, ``run`` round trips.

A few tests run ``python -m conv3dt`` in a subprocess, as a user does; the rest call
``conv3dt._cli.main(argv)`` in-process, which returns the exit code.
"""
import json
import os

import numpy as np
import pytest

from child import run_cli, run_main
import conv3dt
from conv3dt import _activations, _cli, _selfcheck, dygraph
from conv3dt.functional import conv3d_transpose

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("demo", "bench", "check", "info", "run")


def cli(*args, cwd=None, threads=None):
    """``python -m conv3dt ARGS`` with the conv3dt this test session imports (run outside
    the source tree, which must not shadow an installed package)."""
    env = dict(os.environ)
    if threads:
        env["CONV3DT_NUM_THREADS"] = str(threads)
    return run_cli(*args, env=env, cwd=cwd)


# ------------------------------------------------------------------------ entry points


def test_console_script_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    assert '[project.scripts]\nconv3dt = "conv3dt.__main__:main"' in text
    import conv3dt.__main__ as entry

    assert entry.main is _cli.main


def test_golden_file_ships_with_the_package():
    assert os.path.exists(_selfcheck.golden_path())
    cases, arrays = _selfcheck.load_golden()
    assert len(cases) == 60 and set(arrays) == {c["id"] for c in cases}
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert '"data/*.npz"' in f.read()


def test_python_m_help_lists_every_command():
    res = cli("--help")
    assert res.returncode == 0, res.stderr
    for command in COMMANDS:
        assert command in res.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(capsys, command):
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: conv3dt {command}")


def test_version(capsys):
    import conv3dt

    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"conv3dt {conv3dt.__version__}"


# ------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["--no-such-option"],
    ["demo", "--batch", "0"],
    ["demo", "--batch", "many"],
    ["check", "--gpu", "maybe"],
    ["info", "extra"],
    ["run"],
    ["run", "--input", "x.npy"],
    ["run", "--input", "x.npy", "--weights", "w.npz", "--stride", "1,2"],
    ["run", "--input", "x.npy", "--weights", "w.npz", "--padding", "SAMEISH"],
    ["run", "--input", "x.npy", "--weights", "w.npz", "--padding", "1,2,3,4"],
    ["run", "--input", "x.npy", "--weights", "w.npz", "--act", "nope"],
    ["run", "--input", "x.npy", "--weights", "w.npz", "--data-format", "NCHW"],
    ["bench", "--shapes", "no_such_shape"],
    ["bench", "--compare", "tensorflow"],
    ["bench", "--threads", "two"],
])
def test_wrong_arguments_exit_2_with_usage(capsys, args):
    code, out, err = run_main(capsys, *args)
    assert code == 2, (args, out, err)
    assert "usage: conv3dt" in err and "error:" in err
    assert "Traceback" not in err


def test_wrong_arguments_exit_2_in_a_subprocess():
    res = cli("run", "--stride", "2")
    assert res.returncode == 2
    assert "usage: conv3dt run" in res.stderr
    assert "the following arguments are required: --input, --weights" in res.stderr
    assert "Traceback" not in res.stderr


# ------------------------------------------------------------------------ info, demo, check, bench


def test_info(capsys):
    import conv3dt

    code, out, _ = run_main(capsys, "info")
    assert code == 0
    assert f"conv3dt   {conv3dt.__version__}" in out
    assert "OpenMP    on" in out or "OpenMP    off" in out
    assert f"threads   {conv3dt.get_num_threads()} " in out
    assert "BLAS" in out and "CuPy" in out


def test_info_json(capsys):
    import conv3dt
    from conv3dt._kernels import OPENMP

    code, out, _ = run_main(capsys, "info", "--json")
    assert code == 0
    facts = json.loads(out)
    assert facts["conv3dt"] == conv3dt.__version__
    assert facts["openmp"] is bool(OPENMP)
    assert facts["threads"] == conv3dt.get_num_threads()
    assert isinstance(facts["blas"], list) and facts["blas"], facts["blas"]
    assert {"internal_api", "version", "num_threads"} <= set(facts["blas"][0])
    assert "cupy" in facts and isinstance(facts["gpus"], list)


def test_demo():
    res = cli("demo", "--batch", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "input [1, 3, 12, 32, 32] float32, filter_size 12 -> output [1, 12, 23, 43, 43]" in out
    assert "weight [3, 12, 12, 12, 12], bias [12]" in out
    assert "input [1, 16, 24, 24, 24] -> output [1, 8, 48, 48, 48]" in out
    assert "central differences: passed" in out
    assert " ms" in out


def test_check_passes():
    res = cli("check", "--gpu", "no", "-v")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "reference cases (CPU): 60/60 passed" in out
    assert "gradient checks" in out and f"{len(_selfcheck.GRADCHECK_LAYERS)}/" in out
    assert "bit-identical" in out
    assert "OK: all" in out
    others = [isa for isa in conv3dt.available_isas() if isa != conv3dt.get_isa()]
    for isa in others:  # the reference cases once more with every other variant
        assert f"reference cases (CPU, {isa} kernels): 60/60 passed" in out
    assert out.count("  ok   case") == 60 * (1 + len(others))


def test_check_reports_a_wrong_result_with_exit_1(capsys, monkeypatch):
    cases, arrays = _selfcheck.load_golden()
    cases = cases[:2]
    arrays = {c["id"]: dict(arrays[c["id"]]) for c in cases}
    arrays[cases[1]["id"]]["y"] = arrays[cases[1]["id"]]["y"] + 1.0  # a wrong reference
    monkeypatch.setattr(_selfcheck, "load_golden", lambda path=None: (cases, arrays))
    monkeypatch.setattr(_selfcheck, "GRADCHECK_LAYERS", _selfcheck.GRADCHECK_LAYERS[:1])
    code, out, _ = run_main(capsys, "check", "--gpu", "no")
    assert code == 1
    assert "reference cases (CPU): 1/2 passed" in out
    assert f"FAIL case {cases[1]['id']}" in out and "y: " in out
    # the wrong case fails once per instruction-set variant the CPU runs
    assert f"FAILED: {len(conv3dt.available_isas())} of" in out


def test_check_gpu_required_without_gpu(capsys, monkeypatch):
    monkeypatch.setattr(_selfcheck, "_gpu_status", lambda: (None, "no GPU found"))
    monkeypatch.setattr(_selfcheck, "load_golden",
                        lambda path=None: ([], {}))
    monkeypatch.setattr(_selfcheck, "GRADCHECK_LAYERS", [])
    code, out, _ = run_main(capsys, "check", "--gpu", "yes")
    assert code == 1 and "GPU: FAIL: no GPU found" in out


def test_bench(tmp_path):
    res = cli("bench", "--shapes", "gan_k4s2", "--repeat", "1", "--json", "out.json",
              cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "gan_k4s2" in res.stdout and "GFLOP/s" in res.stdout
    assert "1/1" in res.stderr  # the progress bar
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert rows[0]["shape"] == "gan_k4s2" and rows[0]["conv3dt_fwd_ms"] > 0


def test_bench_scaling_and_float64_columns(tmp_path):
    res = cli("bench", "--shapes", "dil2_k3", "--repeat", "1", "--scaling", "--float64",
              "--json", "out.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 thread" in res.stdout and "speedup" in res.stdout and "f64/f32" in res.stdout
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["t1_fwd_ms"] > 0 and row["f64_fwd_ms"] > 0 and row["f64_fwdbwd_ms"] > 0
    bad = cli("bench", "--float64", "--dtype", "float64", cwd=tmp_path)
    assert bad.returncode == 2 and "--float64" in bad.stderr


@pytest.mark.parametrize("option", ["--repeat", "--rounds", "--threads"])
def test_bench_counts_below_one_are_usage_errors(tmp_path, option):
    res = cli("bench", option, "0", cwd=tmp_path)
    assert res.returncode == 2 and f"{option} must be at least 1, got 0" in res.stderr


# ------------------------------------------------------------------------ run


def _save_layer(path, c_in, c_out, kernel, groups=1, bias=True, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    with dygraph.guard():
        layer = dygraph.Conv3DTranspose(c_in, c_out, filter_size=kernel, groups=groups,
                                        bias_attr=None if bias else False, dtype=dtype)
        if bias:
            layer.bias.set_value(rng.standard_normal(c_out).astype(dtype))
        dygraph.save_dygraph(layer.state_dict(), str(path))
    weight = layer.weight.numpy()
    return weight, (layer.bias.numpy() if bias else None)


RUN_CASES = [
    # (input shape, layer (c_in, c_out, kernel, groups), CLI options, functional kwargs)
    ((2, 3, 4, 5, 6), (3, 4, 3, 1), ["--stride", "2", "--padding", "1",
                                     "--output-padding", "1"],
     dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 3, 4, 3), (4, 2, (2, 3, 2), 2), ["--stride", "1,2,3", "--groups", "2",
                                              "--dilation", "2", "--act", "leaky_relu"],
     dict(stride=(1, 2, 3), groups=2, dilation=2, act="leaky_relu")),
    ((1, 2, 4, 4, 4), (2, 3, 3, 1), ["--padding", "0,1,1,0,2,1", "--stride", "2",
                                     "--output-size", "8,9,7"],
     dict(padding=[0, 1, 1, 0, 2, 1], stride=2, output_size=(8, 9, 7))),
    ((1, 5, 5, 3, 2), (2, 3, 3, 1), ["--data-format", "NDHWC", "--padding", "same",
                                     "--stride", "2", "--act", "tanh"],
     dict(data_format="NDHWC", padding="SAME", stride=2, act="tanh")),
    ((1, 2, 3, 3, 3), (2, 2, 2, 1), ["--padding", "SAME_LOWER", "--stride", "3"],
     dict(padding="SAME_LOWER", stride=3)),
]


@pytest.mark.parametrize("case", range(len(RUN_CASES)))
def test_run_round_trip_matches_functional(capsys, tmp_path, case):
    x_shape, (c_in, c_out, kernel, groups), options, kwargs = RUN_CASES[case]
    weight, bias = _save_layer(tmp_path / "layer", c_in, c_out, kernel,
                               groups)
    x = np.random.default_rng(case).standard_normal(x_shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_main(capsys, "run", "--input", str(tmp_path / "x.npy"),
                              "--weights", str(tmp_path / "layer.pdparams.npz"),
                              "--output", str(tmp_path / "y.npy"), *options)
    assert code == 0, err
    act = kwargs.pop("act", None)
    expected = conv3d_transpose(x, weight, bias, **kwargs)
    if act:
        expected = _activations.apply(act, np, expected)
    got = np.load(tmp_path / "y.npy")
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert f"-> output {list(expected.shape)} float32" in out


def test_run_in_a_subprocess_and_without_output(tmp_path):
    weight, bias = _save_layer(tmp_path / "up", 2, 3, 2)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3, 3)).astype(np.float32)
    np.save(tmp_path / "vol.npy", x)
    res = cli("run", "--input", "vol.npy", "--weights", "up.pdparams.npz", "--stride", "2",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    y = conv3d_transpose(x, weight, bias, stride=2)
    assert "output [1, 3, 6, 6, 6] float32" in res.stdout and "not saved" in res.stdout
    assert f"max {float(y.max()):.6g}" in res.stdout
    res = cli("run", "--input", "vol.npy", "--weights", "up.pdparams.npz", "--stride", "2",
              "--output", "out.npy", "--threads", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), y, rtol=1e-6)


def test_run_volume_ranks_weight_files_and_options(capsys, tmp_path):
    weight, bias = _save_layer(tmp_path / "one", 1, 2, 3)
    volume = np.random.default_rng(1).standard_normal((4, 5, 6))  # float64, one channel
    np.save(tmp_path / "v3.npy", volume)
    np.save(tmp_path / "v4.npy", volume[None].astype(np.float32))

    def run(*args):
        code, out, err = run_main(capsys, "run", *args)
        assert code == 0, err
        return out

    # 4-D [C, D, H, W]: the batch dimension is added and taken off again
    run("--input", str(tmp_path / "v4.npy"), "--weights", str(tmp_path / "one"),
        "--output", str(tmp_path / "o4.npy"), "--stride", "2")
    expected = conv3d_transpose(volume[None, None].astype(np.float32), weight, bias, stride=2)
    np.testing.assert_allclose(np.load(tmp_path / "o4.npy"), expected[0], rtol=1e-5,
                               atol=1e-6)
    # 3-D float64 volume with --dtype float32; --bias none drops the bias
    run("--input", str(tmp_path / "v3.npy"), "--weights", str(tmp_path / "one.pdparams.npz"),
        "--output", str(tmp_path / "o3.npy"), "--dtype", "float32", "--bias", "none")
    expected = conv3d_transpose(volume[None, None].astype(np.float32), weight)
    got = np.load(tmp_path / "o3.npy")
    assert got.shape == (2, 6, 7, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6)
    # a plain numpy.savez file, and a model's state dict with one '<prefix>.weight'
    np.savez(tmp_path / "plain.npz", weight=weight)
    np.savez(tmp_path / "model.npz", **{"decoder.up.weight": weight, "decoder.up.bias": bias})
    for name, b in (("plain.npz", None), ("model.npz", bias)):
        run("--input", str(tmp_path / "v4.npy"), "--weights", str(tmp_path / name),
            "--output", str(tmp_path / "o.npy"))
        expected = conv3d_transpose(volume[None, None].astype(np.float32), weight, b)
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected[0], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("problem, message", [
    ("missing input", "--input: no such file"),
    ("missing weights", "--weights: no such file"),
    ("input not npy", "cannot read"),
    ("weights not npz", "cannot tell the format of"),
    ("no weight entry", "has no 'weight' entry"),
    ("weight not 5-D", "'weight' must be 5-D"),
    ("channels", "shape mismatch: the input has 3 channels"),
    ("dtype", "dtype mismatch: the input is float64 but the weights are float32"),
    ("int input", "must be float32 or float64, got int64"),
    ("2-D input", "expected a 5-D [N, C, D, H, W] volume"),
    ("bias length", "shape mismatch: bias has 5 entries but the layer has C_out = 4"),
    ("geometry", "output_padding must be smaller than max(stride, dilation)"),
    ("output size", "output_size=(9, 9, 9) is out of range"),
    ("bias required", "has no 'bias' entry"),
    ("output dir", "--output: cannot write"),
])
def test_run_errors_exit_2_with_a_message(capsys, tmp_path, problem, message):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 4, 2, 2, 2)).astype(np.float32)
    np.savez(tmp_path / "w.npz", weight=w, bias=np.zeros(4, np.float32))
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 2, 3, 3, 3)).astype(np.float32))
    args = {"--input": str(tmp_path / "x.npy"), "--weights": str(tmp_path / "w.npz")}
    extra = []
    if problem == "missing input":
        args["--input"] = str(tmp_path / "nope.npy")
    elif problem == "missing weights":
        args["--weights"] = str(tmp_path / "nope.npz")
    elif problem == "input not npy":
        (tmp_path / "bad.npy").write_text("not an array")
        args["--input"] = str(tmp_path / "bad.npy")
    elif problem == "weights not npz":
        np.save(tmp_path / "w.npy", w)
        args["--weights"] = str(tmp_path / "w.npy")
    elif problem == "no weight entry":
        np.savez(tmp_path / "w.npz", kernel=w)
    elif problem == "weight not 5-D":
        np.savez(tmp_path / "w.npz", weight=w[0])
    elif problem == "channels":
        np.save(tmp_path / "x.npy", np.zeros((1, 3, 3, 3, 3), np.float32))
    elif problem == "dtype":
        np.save(tmp_path / "x.npy", np.zeros((1, 2, 3, 3, 3)))
    elif problem == "int input":
        np.save(tmp_path / "x.npy", np.zeros((1, 2, 3, 3, 3), np.int64))
    elif problem == "2-D input":
        np.save(tmp_path / "x.npy", np.zeros((3, 3), np.float32))
    elif problem == "bias length":
        np.savez(tmp_path / "w.npz", weight=w, bias=np.zeros(5, np.float32))
    elif problem == "geometry":
        extra = ["--stride", "2", "--output-padding", "2"]
    elif problem == "output size":
        extra = ["--output-size", "9"]
    elif problem == "bias required":
        np.savez(tmp_path / "w.npz", weight=w)
        extra = ["--bias", "required"]
    elif problem == "output dir":
        extra = ["--output", str(tmp_path / "no" / "such" / "dir" / "y.npy")]
    argv = ["run"] + [v for kv in args.items() for v in kv] + extra
    code, out, err = run_main(capsys, *argv)
    assert code == 2, (problem, out, err)
    assert err.startswith("conv3dt run: error: "), err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_run_error_in_a_subprocess_has_no_traceback(tmp_path):
    np.savez(tmp_path / "w.npz", weight=np.zeros((2, 4, 2, 2, 2), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 3, 3, 3), np.float32))
    res = cli("run", "--input", "x.npy", "--weights", "w.npz", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("conv3dt run: error: shape mismatch")
    assert "Traceback" not in res.stderr
