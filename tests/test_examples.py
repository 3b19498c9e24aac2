"""The scripts in examples/ run and do what they say, at small sizes (a few seconds each).

Each runs in a subprocess, as a user runs it, with the conv3dt this test session imports.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name, *args, cwd, threads=None):
    import conv3dt

    env = dict(os.environ)
    if threads:
        env["CONV3DT_NUM_THREADS"] = str(threads)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH"))
                                        if p)
    res = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{name} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_every_example_is_tested():
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert scripts == ["gradient_check.py", "infer_volume.py", "train_decoder.py",
                       "typed_usage.py"]


def test_infer_volume_demo(tmp_path):
    out = run_example("infer_volume.py", "--size", "12", "--output", "up.npy",
                      cwd=tmp_path)
    y = np.load(tmp_path / "up.npy")
    assert y.shape == (1, 2, 24, 24, 24) and y.dtype == np.float32
    assert "[1, 4, 12, 12, 12] -> [1, 2, 24, 24, 24]" in out


def test_infer_volume_with_given_weights_matches_functional(tmp_path):
    from conv3dt import dygraph
    from conv3dt.functional import conv3d_transpose

    rng = np.random.default_rng(0)
    with dygraph.guard():
        layer = dygraph.Conv3DTranspose(3, 5, filter_size=(2, 3, 3))
        layer.bias.set_value(rng.standard_normal(5).astype(np.float32))
        dygraph.save_dygraph(layer.state_dict(), str(tmp_path / "mine"))
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "vol.npy", x)
    run_example("infer_volume.py", "--input", "vol.npy", "--weights", "mine.pdparams.npz",
                "--stride", "3", "--padding", "0", "--output", "out.npy", cwd=tmp_path)
    expected = conv3d_transpose(x, layer.weight.numpy(), layer.bias.numpy(), stride=3)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-6, atol=1e-6)


def test_gradient_check_script(tmp_path):
    # Tiny problems: one thread each is fastest (and what a test suite of many would use).
    out = run_example("gradient_check.py", cwd=tmp_path, threads=1)
    assert "all gradient checks passed" in out
    assert out.count(": passed") == 3


def test_gradient_check_file_under_pytest(tmp_path):
    import conv3dt

    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    env["CONV3DT_NUM_THREADS"] = "1"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(EXAMPLES, "gradient_check.py")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 passed" in res.stdout


@pytest.mark.parametrize("size", ["8", "16"])
def test_train_decoder_fits(tmp_path, size):
    steps = "40" if size == "8" else "120"
    out = run_example("train_decoder.py", "--size", size, "--steps", steps, "--threads", "1",
                      cwd=tmp_path)
    assert "predictions identical" in out
    first, final = (float(v) for v in out.split("loss ")[-1].split(" (")[0].split(" -> "))
    assert final < 0.1 * first


def test_typed_usage_runs(tmp_path):
    # Its types are checked in tests/test_typing.py; here it runs, and its checks hold.
    out = run_example("typed_usage.py", cwd=tmp_path, threads=1)
    assert out.count("\n") == 4 and out.endswith("typed usage ok\n"), out
