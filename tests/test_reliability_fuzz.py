"""Bad input never crashes the process: hypothesis fuzzing of the functional API and the layer.

Each drawn call must either return a correct result (checked against the float64 reference
when it is small) or raise ValueError, TypeError or MemoryError whose message names the
offending argument. The fuzzing runs in a child process (this file run as a script), so a
segfault or an abort is a failed test that reports the example it died on, not a dead
pytest. The CI-sized run draws FUZZ_EXAMPLES examples per target; ``pytest -m fuzz_large``
runs FUZZ_LARGE_EXAMPLES.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ_EXAMPLES = 300
FUZZ_LARGE_EXAMPLES = 5000
TARGETS = ("functional", "backward", "layer")

ALLOWED = (ValueError, TypeError, MemoryError)
# Words that name an argument (or the size that could not be allocated).
ARG_NAMES = ("x", "weight", "bias", "stride", "padding", "output_padding", "groups",
             "dilation", "output_size", "data_format", "grad_output", "needs", "input",
             "num_channels", "num_filters", "filter_size", "dtype", "bytes", "channels",
             "output size", "act")
_NAMED = re.compile(r"\b(" + "|".join(re.escape(n) for n in ARG_NAMES) + r")\b")
# Outputs larger than this raise MemoryError in the fuzzing child (keeps each example fast).
_CHILD_MEMORY_LIMIT = 32 * 1024 * 1024


# ------------------------------------------------------------------------- strategies

def _strategies():
    from hypothesis import strategies as st

    huge = st.sampled_from([2**20, 2**31 - 1, 2**31, 2**40, 2**63, 10**30])
    small_int = st.integers(-2, 4)
    bad_scalar = st.sampled_from([None, 1.5, float("nan"), "2", True, np.int64(2), np.float32(1),
                                  complex(1, 1), b"1", object()])
    int_arg = st.one_of(small_int, huge)
    triple = st.one_of(int_arg, st.lists(int_arg, min_size=3, max_size=3),
                       st.tuples(int_arg, int_arg, int_arg), st.lists(small_int, max_size=7),
                       bad_scalar, st.lists(bad_scalar, min_size=3, max_size=3))
    padding = st.one_of(
        triple,
        st.sampled_from(["SAME", "valid", "Same_Upper", "SAME_LOWER", "FULL", ""]),
        st.lists(int_arg, min_size=6, max_size=6),
        st.lists(st.lists(small_int, min_size=2, max_size=2), min_size=5, max_size=5),
        st.lists(st.lists(int_arg, min_size=1, max_size=3), min_size=5, max_size=5),
    )
    dtypes = st.sampled_from(["float32", "float64", "float16", "int32", "int64", "bool",
                              "complex64", "complex128", "object", ">f4", "<f8", "uint8"])
    special = st.sampled_from([None, 0.0, np.nan, np.inf, -np.inf, 1e38, -1e308, 5e-324])
    return st, dict(triple=triple, padding=padding, dtypes=dtypes, special=special,
                    int_arg=int_arg, small_int=small_int, bad_scalar=bad_scalar)


def _array(draw, st, s, shape, base_dtype):
    """An array-like of about ``shape``: usually the dtype asked for, sometimes anything."""
    kind = draw(st.sampled_from(["plain"] * 16 + ["dtype", "noncontig", "readonly", "fortran",
                                                 "list", "scalar", "rank", "zero", "junk",
                                                 "unaligned"]))
    if kind == "rank":
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=7)))
    if kind == "zero":
        shape = tuple(0 if draw(st.booleans()) else d for d in shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(s["dtypes"]) if kind == "dtype" else base_dtype
    size = int(np.prod(shape)) if shape else 1
    if size > 100_000:
        shape, size = (1,) * len(shape), 1
    if kind == "scalar":
        return draw(st.sampled_from([np.float32(1), 1.0, 0, np.array(2.0)]))
    if kind == "junk":
        return draw(st.sampled_from([None, "x", b"x", object(), [[1.0], [1.0, 2.0]], {}, [[]]]))
    values = rng.uniform(-2, 2, shape)
    if size and draw(st.booleans()):
        special = draw(s["special"])
        if special is not None:
            values.flat[rng.integers(0, size)] = special
    with np.errstate(all="ignore"):
        arr = np.asarray(values).astype(dtype)
    if kind == "noncontig" and arr.ndim:
        big = np.zeros(tuple(2 * d for d in arr.shape), dtype=arr.dtype)
        big[tuple(slice(None, None, 2) for _ in arr.shape)] = arr
        arr = big[tuple(slice(None, None, 2) for _ in arr.shape)]
        if draw(st.booleans()):
            arr = arr[tuple(slice(None, None, -1) for _ in arr.shape)].copy()[
                tuple(slice(None, None, -1) for _ in arr.shape)]
    if kind == "readonly":
        arr.setflags(write=False)
    if kind == "fortran":
        arr = np.asfortranarray(arr)
    if kind == "unaligned" and arr.dtype.itemsize > 1:
        buf = np.zeros(arr.nbytes + 1, np.uint8)[1:]
        un = buf.view(arr.dtype).reshape(arr.shape) if arr.ndim else buf.view(arr.dtype)[:1]
        un[...] = arr
        arr = un
    if kind == "list":
        return arr.tolist()
    return arr


def _conv_args(draw, st, s):
    """x, weight, bias and keyword arguments: mostly valid sizes, then perturbed."""
    fmt = draw(st.sampled_from(["NCDHW", "NCDHW", "NDHWC"]))
    groups = draw(st.sampled_from([1, 1, 2]))
    n = draw(st.integers(0, 2))
    cin = groups * draw(st.integers(1, 2))
    cout_g = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=3, max_size=3)))
    base_dtype = draw(st.sampled_from(["float32", "float64"]))
    xshape = (n, cin) + spatial if fmt == "NCDHW" else (n,) + spatial + (cin,)
    x = _array(draw, st, s, xshape, base_dtype)
    w = _array(draw, st, s, (cin + draw(st.sampled_from([0, 0, 0, 1])), cout_g) + kernel,
               base_dtype)
    bias = None if draw(st.booleans()) else _array(draw, st, s, (groups * cout_g,), base_dtype)
    kw = {}

    def pick(valid, bad):
        # Valid 4 times in 5, so that whole calls are often valid.
        return draw(bad) if draw(st.integers(0, 4)) == 0 else draw(valid)

    valid = st.sampled_from([1, 1, 2, 3])
    if draw(st.booleans()):
        kw["stride"] = pick(valid, s["triple"])
    if draw(st.booleans()):
        kw["padding"] = pick(st.sampled_from([0, 1, [1, 0, 2], "SAME", "valid"]), s["padding"])
    if draw(st.booleans()):
        kw["dilation"] = pick(valid, s["triple"])
    if draw(st.integers(0, 3)) == 0:
        kw["output_padding"] = pick(st.sampled_from([0, 1]), s["triple"])
    if draw(st.integers(0, 3)) == 0:
        kw["output_size"] = pick(st.integers(1, 12), s["triple"])
    kw["groups"] = pick(st.just(groups), st.one_of(st.integers(-1, 4), s["bad_scalar"],
                                                   s["int_arg"]))
    kw["data_format"] = pick(st.just(fmt), st.sampled_from(["ncdhw", "NHWC", None, 5]))
    return x, w, bias, kw


# ----------------------------------------------------------------------------- checks

def _check_error(exc, call):
    assert isinstance(exc, ALLOWED), f"{call}: {type(exc).__name__}: {exc}"
    message = str(exc)
    assert _NAMED.search(message), f"{call}: message names no argument: {message!r}"


def _reference_forward(x, w, b, kw):
    sys.path.insert(0, HERE)
    from reference import from_ncdhw, ref_conv3d_transpose, to_ncdhw
    from conv3dt._geometry import resolve

    fmt = kw.get("data_format", "NCDHW")
    plan = resolve(np.shape(x), np.shape(w), **{k: v for k, v in kw.items()})
    xn = to_ncdhw(np.asarray(x, np.float64), fmt)
    y = ref_conv3d_transpose(xn, np.asarray(w, np.float64),
                             None if b is None else np.asarray(b, np.float64), plan.stride,
                             plan.pad_lo, plan.pad_hi, plan.dilation, plan.groups, plan.out_size)
    return from_ncdhw(y, fmt)


def _compare(actual, expected, dtype, call):
    assert actual.shape == expected.shape, call
    with np.errstate(all="ignore"):
        same_pattern = (np.isnan(actual) == np.isnan(expected)).all() and (
            np.isinf(actual) == np.isinf(expected)).all()
    # float32 may overflow where float64 does not: only compare when the reference is tame.
    if np.abs(expected[np.isfinite(expected)]).max(initial=0) < 1e30:
        assert same_pattern, f"{call}: NaN/Inf pattern differs from the reference"
        fin = np.isfinite(expected)
        tol = 1e-4 if dtype == np.float32 else 1e-9
        np.testing.assert_allclose(actual[fin], expected[fin], rtol=tol,
                                   atol=tol * max(1.0, float(np.abs(expected[fin]).max(initial=0))),
                                   err_msg=call)


def check_functional(x, w, bias, kw):
    import conv3dt.functional as F

    call = f"conv3d_transpose(x={_describe(x)}, weight={_describe(w)}, bias={_describe(bias)}, {kw})"
    try:
        y = F.conv3d_transpose(x, w, bias, **kw)
    except Exception as exc:  # noqa: BLE001 - the type is what is checked
        _check_error(exc, call)
        return "error"
    assert isinstance(y, np.ndarray) and y.dtype in (np.float32, np.float64), call
    xa = np.asarray(x)
    assert y.dtype == xa.dtype.newbyteorder("="), call
    if y.size <= 20_000 and xa.size * np.asarray(w).size <= 2_000_000:
        _compare(y, _reference_forward(x, w, bias, kw), y.dtype, call)
    return "ok"


def check_backward(x, w, bias, kw, gy_kind):
    import conv3dt.functional as F

    call = f"conv3d_transpose_backward(x={_describe(x)}, weight={_describe(w)}, {kw}, gy={gy_kind})"
    try:
        y = F.conv3d_transpose(x, w, None, **kw)
    except Exception as exc:  # noqa: BLE001
        _check_error(exc, call)
        return "error"
    gy = np.ones_like(y)
    if gy_kind == "wrong_shape":
        gy = np.ones(y.shape[:-1] + (y.shape[-1] + 1,), y.dtype)
    elif gy_kind == "other_dtype":
        gy = gy.astype(np.float64 if y.dtype == np.float32 else np.float32)
    elif gy_kind == "nan" and gy.size:
        gy.flat[0] = np.nan
    try:
        gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, **kw)
    except Exception as exc:  # noqa: BLE001
        _check_error(exc, call)
        assert gy_kind in ("wrong_shape", "other_dtype"), call
        return "error"
    assert gy_kind not in ("wrong_shape", "other_dtype"), call
    assert gx.shape == np.shape(x) and gw.shape == np.shape(w), call
    if np.shape(x)[0] == 0:
        assert not gw.any() and not gb.any(), f"{call}: empty batch, nonzero gradients"
    return "ok"


def check_layer(args):
    from conv3dt.dygraph import Conv3DTranspose, guard

    ctor, x = args
    call = f"Conv3DTranspose(**{ctor})(x={_describe(x)})"
    try:
        with guard():
            layer = Conv3DTranspose(**ctor)
            y = layer(x)
            y.backward()
            assert layer.weight.gradient().shape == tuple(layer.weight.shape), call
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, ALLOWED), f"{call}: {type(exc).__name__}: {exc}"
        assert str(exc), call
        return "error"
    return "ok"


def _describe(a):
    if isinstance(a, np.ndarray):
        return (f"ndarray{a.shape} {a.dtype} strides={a.strides} "
                f"writeable={a.flags.writeable} finite={bool(np.isfinite(a).all()) if a.dtype.kind == 'f' else '-'}")
    text = repr(a)
    return text if len(text) < 80 else text[:77] + "..."


# ----------------------------------------------------------------- the fuzzing child

def _run_child(target, examples, progress_path):
    """Fuzz ``target`` with hypothesis in this process; write each example before running it."""
    from hypothesis import given, settings, HealthCheck

    import conv3dt.functional as F

    F._MEMORY_LIMIT = _CHILD_MEMORY_LIMIT
    st, s = _strategies()
    counts = {}

    def note(call_repr):
        with open(progress_path, "w") as f:
            f.write(call_repr)

    @st.composite
    def functional_case(draw):
        return _conv_args(draw, st, s)

    @st.composite
    def backward_case(draw):
        return _conv_args(draw, st, s) + (draw(st.sampled_from(
            ["ok", "ok", "nan", "wrong_shape", "other_dtype"])),)

    @st.composite
    def layer_case(draw):
        def pick(valid, bad):
            # Each argument is valid 5 times in 6, so that whole calls are often valid.
            return draw(bad) if draw(st.integers(0, 5)) == 0 else draw(valid)

        fmt = pick(st.sampled_from(["NCDHW", "NDHWC"]), st.sampled_from(["bad", None]))
        ctor = dict(num_channels=pick(st.integers(1, 4), st.one_of(st.integers(-1, 0),
                                                                    s["bad_scalar"])),
                    num_filters=pick(st.integers(1, 4), st.one_of(st.integers(-1, 0),
                                                                  s["bad_scalar"])),
                    filter_size=pick(st.integers(1, 3), st.sampled_from(
                        [0, None, 2**40, [2, 2], "3", 2.0])),
                    stride=pick(st.integers(1, 2), s["triple"]),
                    padding=pick(st.integers(0, 1), s["padding"]),
                    dilation=pick(st.integers(1, 2), s["triple"]),
                    groups=pick(st.sampled_from([None, 1]), st.one_of(st.integers(-1, 2),
                                                                     s["bad_scalar"])),
                    dtype=pick(st.sampled_from(["float32", "float64"]),
                               st.sampled_from(["float16", "int32", None])),
                    act=pick(st.sampled_from([None, "relu", "sigmoid"]), st.just("nope")),
                    data_format=fmt)
        if draw(st.integers(0, 3)) == 0:
            ctor["output_size"] = draw(st.one_of(st.integers(1, 8), s["triple"]))
        c = ctor["num_channels"]
        c = int(c) if type(c) is int and c > 0 else 2
        spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
        shape = (draw(st.integers(0, 2)),) + ((c,) + spatial if fmt != "NDHWC" else spatial + (c,))
        dtype = ctor["dtype"] if ctor["dtype"] in ("float32", "float64") else "float32"
        return ctor, _array(draw, st, s, shape, dtype)

    strategies = dict(functional=functional_case(), backward=backward_case(), layer=layer_case())

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(strategies[target])
    def fuzz(case):
        note(f"{target}: {case!r}"[:4000])
        if target == "functional":
            outcome = check_functional(*case)
        elif target == "backward":
            outcome = check_backward(*case)
        else:
            outcome = check_layer(case)
        counts[outcome] = counts.get(outcome, 0) + 1

    import warnings
    warnings.simplefilter("ignore")
    fuzz()
    print(json.dumps({"target": target, "counts": counts}))


def _fuzz_in_child(target, examples, tmp_path):
    import conv3dt

    progress = tmp_path / f"{target}.last"
    # The directory holding the conv3dt under test (a checkout or site-packages), ahead of
    # the script's own directory, so that the child imports the same package.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root, HERE] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), target,
         str(examples), str(progress)], capture_output=True, text=True, env=env,
        cwd=str(tmp_path), timeout=1200)
    last = progress.read_text() if progress.exists() else "(none)"
    assert proc.returncode == 0, (
        f"fuzzing {target} ended with exit status {proc.returncode} "
        f"({'killed by a signal: a crash' if proc.returncode < 0 else 'a failure'})\n"
        f"last example: {last}\nstdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    counts = result["counts"]
    # Both outcomes must be exercised, or the strategies have drifted.
    assert counts.get("ok", 0) >= examples // 50 and counts.get("error", 0) >= examples // 50, counts
    return counts


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target, tmp_path):
    _fuzz_in_child(target, FUZZ_EXAMPLES, tmp_path)


@pytest.mark.fuzz_large
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_large(target, tmp_path, request):
    if "fuzz_large" not in (request.config.getoption("markexpr", "") or ""):
        pytest.skip("large fuzzing run: select it with -m fuzz_large")
    _fuzz_in_child(target, FUZZ_LARGE_EXAMPLES, tmp_path)


def test_child_reports_a_crash_as_a_failure(tmp_path):
    """The harness itself: a child killed by SIGSEGV is a failure naming the last example."""
    progress = tmp_path / "last"
    progress.write_text("the example")
    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), "
                           "signal.SIGSEGV)"], capture_output=True)
    assert proc.returncode < 0


if __name__ == "__main__":
    _run_child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
