"""The Paddle 2.x ``nn`` API, the Dask backend, the weights files, the initializers and
gradcheck have types a checker sees: the types mypy infers for their results are the
right ones (not ``Any``), and it refuses a misspelt option.

One mypy run over a small script of ``reveal_type`` lines (a few seconds to a minute on a
cold cache). The Dask lines are checked only where dask is installed: without it a type
checker sees dask's arrays as ``Any``.
"""
import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DASK = importlib.util.find_spec("dask") is not None

VARIABLE = r"conv3dt\.autograd\.Variable"
PARAMETER = r"conv3dt\.autograd\.Parameter"
DASK_ARRAY = r"dask\.array\.core\.Array"
NDARRAY = r"numpy\.ndarray\[.*, numpy\.dtype\[Any\]\]"


def optional(pattern):
    return rf"(Union\[{pattern}, None\]|{pattern} \| None)"


# (expression, the regular expression its whole revealed type must match)
REVEALS = [
    ("layer(x)", VARIABLE),
    ("layer(x, output_size=7)", VARIABLE),
    ("layer.forward(x)", VARIABLE),
    ("layer.weight", PARAMETER),
    ("layer.bias", optional(PARAMETER)),
    ("F.conv3d_transpose(x, w, stride=2, padding='SAME')", VARIABLE),
    ("F.conv3d_transpose(xn, w)", VARIABLE),
    ("conv3dt.nn.initializer.calculate_gain('leaky_relu', 0.2)", "float"),
    ("conv3dt.initializer.compute_fans((4, 2, 3, 3, 3))", r"tuple\[int, int\]"),
    ("gradcheck(lambda v: v * v, [x])", "bool"),
    ("conv3dt._weights.load_state('model.pdparams')", rf"dict\[str, {NDARRAY}\]"),
    ("conv3dt._weights.format_of('model.pt')",
     r"Literal\['paddle', 'torch', 'safetensors', 'npz'\]"
     r"|Literal\['paddle'\] \| Literal\['torch'\] \| Literal\['safetensors'\] \| Literal\['npz'\]"),
    ("conv3dt.dask.output_chunks(plan, x_chunks)", r"tuple\[tuple\[int, \.\.\.\], \.\.\.\]"),
]
DASK_REVEALS = [
    ("conv3dt.dask.conv3d_transpose(xd, wn, stride=2, chunks=4)", DASK_ARRAY),
    ("conv3dt.dask.conv3d_transpose_backward(yd, xd, wn, stride=2)[1]",
     optional(DASK_ARRAY)),
    ("conv3dt.dask.as_dask_array(xn)", DASK_ARRAY),
    ("layer(xd)", DASK_ARRAY),
]

HEADER = textwrap.dedent('''\
    import numpy as np
    import conv3dt
    import conv3dt.dask
    import conv3dt.initializer
    import conv3dt._weights
    import conv3dt.nn.functional as F
    from conv3dt._geometry import resolve
    from conv3dt.gradcheck import gradcheck

    xn = np.ones((1, 2, 3, 3, 3), np.float32)
    wn = np.ones((2, 4, 2, 2, 2), np.float32)
    x = conv3dt.autograd.Variable(xn)
    w = conv3dt.autograd.Variable(wn)
    layer = conv3dt.nn.Conv3DTranspose(2, 4, kernel_size=2, stride=2)
    plan = resolve((1, 2, 3, 3, 3), (2, 4, 2, 2, 2), 2)
    x_chunks = ((1,), (2,), (3,), (3,), (3,))
    ''')
DASK_HEADER = textwrap.dedent('''\
    import dask.array as da
    xd: da.Array = da.ones((1, 2, 8, 8, 8), chunks=4, dtype=np.float32)
    yd: da.Array = da.ones((1, 4, 16, 16, 16), chunks=8, dtype=np.float32)
    ''')
# Lines mypy must refuse, with the error code it gives.
REFUSED = [
    ('conv3dt.nn.Conv3DTranspose(2, 4, 2, data_format="NCHWD")', "arg-type"),
    ('F.conv3d_transpose(x, w, padding="SAME_MIDDLE")', "arg-type"),
    ("conv3dt.nn.Conv3DTranspose(2, 4, 2, weight_attr=1.5)", "arg-type"),
]


def test_revealed_types_are_the_api_s(tmp_path):
    reveals = REVEALS + (DASK_REVEALS if HAVE_DASK else [])
    script = (HEADER + (DASK_HEADER if HAVE_DASK else "")
              + "".join(f"reveal_type({expr})\n" for expr, _ in reveals)
              + "".join(f"{line}\n" for line, _ in REFUSED))
    path = tmp_path / "reveals_nn.py"
    path.write_text(script)
    first_refused = script.count("\n") - len(REFUSED) + 1
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--ignore-missing-imports", "--config-file", os.path.join(ROOT, "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy-cache"), "--no-error-summary",
         "--hide-error-context", "--no-pretty", "--show-error-codes", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    revealed = {}
    errors = {}
    for line in out.splitlines():
        m = re.match(r".*reveals_nn\.py:(\d+): note: Revealed type is \"(.*)\"$", line)
        if m:
            revealed[int(m.group(1))] = m.group(2).replace("builtins.", "")
            continue
        m = re.match(r".*reveals_nn\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            errors.setdefault(int(m.group(1)), []).append(m.group(2))
    first_reveal = first_refused - len(reveals)
    for k, (expr, pattern) in enumerate(reveals):
        got = revealed.get(first_reveal + k)
        assert got is not None, f"no type revealed for {expr}:\n{out}"
        assert got != "Any" and re.fullmatch(pattern, got), (
            f"reveal_type({expr}) is {got!r}, expected {pattern!r}:\n{out}")
    for k, (line, code) in enumerate(REFUSED):
        assert code in errors.get(first_refused + k, []), (
            f"mypy accepted {line!r} (expected a [{code}] error):\n{out}")
    unexpected = {n: codes for n, codes in errors.items() if n < first_refused}
    assert not unexpected, f"mypy refused lines of the script that are right:\n{out}"
