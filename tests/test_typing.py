"""The public API has types a checker sees: mypy --strict accepts examples/typed_usage.py,
the types it infers for the main results are the right ones (not ``Any``), and it refuses
a misspelt option.

One mypy run over the example and a small script of ``reveal_type`` lines (a few seconds
to a minute on a cold cache), with the project's configuration.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "typed_usage.py")

# Types as mypy prints them, for any mypy >= 1.8 and NumPy >= 1.22 ("builtins." prefixes
# removed: newer mypy versions leave them out).
NDARRAY = r"numpy\.ndarray\[.*, numpy\.dtype\[{}\]\]"
F32 = NDARRAY.format(r"(numpy\.float32|numpy\.floating\[[\w.]*_32Bit\])")
F64 = NDARRAY.format(r"(numpy\.float64|numpy\.floating\[[\w.]*_64Bit\])")

# (expression, the regular expression its whole revealed type must match)
REVEALS = [
    ("conv3dt.conv3d_transpose(x32, w32, stride=2)", F32),
    ("conv3dt.conv3d_transpose(x64, w64)", F64),
    ("conv3dt.functional.conv3d_transpose([[[[[1.0]]]]], [[[[[1.0]]]]])",
     NDARRAY.format(r"numpy\.floating\[Any\]")),
    ("conv3dt.conv3d_transpose_backward(gy32, x32, w32, stride=2)[1]", F32),
    ("conv3dt.conv3d_transpose_backward(gy32, x32, w32, stride=2, needs=(True, False, False))[0]",
     rf"(Union\[{F32}, None\]|{F32} \| None)"),
    ("layer(v)", r"conv3dt\.autograd\.Variable"),
    ("layer.weight", r"conv3dt\.autograd\.Parameter"),
    ("layer.weight.gradient()", NDARRAY.format("Any")),
    ("layer.parameters()", r"list\[conv3dt\.autograd\.Parameter\]"),
    ("conv3dt.mean(layer(v) * 2.0)", r"conv3dt\.autograd\.Variable"),
    ("v.grad", r"(Union\[conv3dt\.autograd\.Variable, None\]|conv3dt\.autograd\.Variable \| None)"),
    ("v.shape", r"tuple\[int, \.\.\.\]"),
    ("conv3dt.to_tensor([1.0, 2.0])", r"conv3dt\.autograd\.Variable"),
    ("conv3dt.optimizer.Adam(parameters=layer.parameters()).get_lr()", "float"),
    ("conv3dt.get_num_threads()", "int"),
    ("conv3dt.available_isas()", r"list\[str\]"),
    ("conv3dt.cache_info()['idle_bytes']", "int"),
    ("conv3dt.in_dygraph_mode()", "bool"),
]

SCRIPT = textwrap.dedent('''\
    import numpy as np
    import conv3dt
    from conv3dt import dygraph

    x32 = np.ones((1, 2, 3, 3, 3), np.float32)
    w32 = np.ones((2, 4, 2, 2, 2), np.float32)
    gy32 = np.ones((1, 4, 6, 6, 6), np.float32)
    x64 = x32.astype(np.float64)
    w64 = w32.astype(np.float64)
    layer = dygraph.Conv3DTranspose(2, 4, filter_size=2, stride=2)
    v = dygraph.to_variable(x32)
    ''') + "".join(f"reveal_type({expr})\n" for expr, _ in REVEALS) + textwrap.dedent('''\
    conv3dt.conv3d_transpose(x32, w32, data_format="NCHWD")  # E: not a data format
    layer.weight.gradient().no_such_attribute  # E: an ndarray has no such attribute
    ''')


def test_mypy_strict_example_and_revealed_types(tmp_path):
    script = tmp_path / "reveals.py"
    script.write_text(SCRIPT)
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--config-file", os.path.join(ROOT, "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy-cache"), "--no-error-summary",
         "--hide-error-context", "--no-pretty", EXAMPLE, str(script)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    lines = out.splitlines()

    revealed = {}
    for ln in lines:
        m = re.match(r".*reveals\.py:(\d+): note: Revealed type is \"(.*)\"$", ln)
        if m:
            revealed[int(m.group(1))] = m.group(2).replace("builtins.", "")
    first = SCRIPT.splitlines().index(f"reveal_type({REVEALS[0][0]})") + 1
    for i, (expr, expected) in enumerate(REVEALS):
        got = revealed.get(first + i)
        assert got is not None, f"no type revealed for {expr}:\n{out}"
        assert got != "Any", f"{expr} is Any to mypy"
        assert re.fullmatch(expected, got), f"{expr}: revealed {got!r}, expected {expected!r}"

    # The two deliberate mistakes are caught, and nothing else in the script is an error.
    errors = [ln for ln in lines if "reveals.py" in ln and ": error:" in ln]
    bad = [i + 1 for i, ln in enumerate(SCRIPT.splitlines()) if "# E:" in ln]
    assert sorted(int(re.search(r"reveals\.py:(\d+):", ln).group(1)) for ln in errors) == bad, out
    assert any('"conv3d_transpose"' in ln for ln in errors), out  # no overload takes "NCHWD"
    assert any("no_such_attribute" in ln for ln in errors), out

    example_errors = [ln for ln in lines if "typed_usage.py" in ln and ": error:" in ln]
    assert not example_errors, "mypy --strict rejects examples/typed_usage.py:\n" + out
