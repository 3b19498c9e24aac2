"""``conv3dt bench`` and the command line's error handling, ``demo`` and ``info``.

The benchmark's checks of its output paths and of matplotlib must fail before anything is
timed (``_bench.run`` is replaced by a function that fails the test); the only real
timing runs are on the ``tiny`` shape with one call per library.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import conv3dt
from conv3dt import _bench, _cli, _kernels, _memory, _threads

from reference import ref_conv3d_transpose, resolve
from child import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=None, env=None, pythonpath=()):
    """``python -m conv3dt ARGS`` with the conv3dt this test session imports."""
    if cwd is None:
        cwd = tempfile.mkdtemp()
    environ = dict(os.environ)
    environ.pop("CONV3DT_DEBUG_CLI", None)
    environ.update(env or {})
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in pythonpath] + [package_parent]
        + ([environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-m", "conv3dt", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def one_line_error(err, prefix):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


@pytest.fixture
def no_timing(monkeypatch):
    """Fail the test if the benchmark starts timing."""
    def run(*args, **kwargs):
        raise AssertionError("the benchmark started timing")

    monkeypatch.setattr(_bench, "run", run)


# ------------------------------------------------------------------------ bench options


def test_every_bench_option_has_help():
    parser = _bench.build_parser()
    options = [a for a in parser._actions if a.option_strings]
    assert len(options) >= 12
    for action in options:
        assert action.help and len(action.help) > 10, action.option_strings
    text = parser.format_help()
    for peer in _bench.PEERS:
        assert peer in text
    for shape in ("head_cout1", "big_batch", "tiny"):
        assert shape in text


@pytest.mark.parametrize("problem", ["missing folder", "parent is a file", "a folder",
                                     "read-only place"])
@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_unwritable_output_paths_fail_before_timing(capsys, tmp_path, no_timing, problem,
                                                    option):
    (tmp_path / "file.txt").write_text("x")
    path = {"missing folder": tmp_path / "no" / "such" / "out.json",
            "parent is a file": tmp_path / "file.txt" / "out.json",
            "a folder": tmp_path,
            "read-only place": "/proc/conv3dt-bench-out.json"}[problem]
    if problem == "read-only place" and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux's /proc, where nobody may create files")
    code, out, err = run_main(capsys, "bench", "--shapes", "tiny", option, str(path))
    assert code == 2
    line = one_line_error(err, f"conv3dt bench: error: {option}: ")
    expected = {"missing folder": "does not exist", "parent is a file": "is not a folder",
                "a folder": "is a folder", "read-only place": "cannot write"}[problem]
    assert expected in line and out == ""


def test_path_checks_leave_no_file_and_keep_existing_ones(capsys, tmp_path, no_timing):
    existing = tmp_path / "old.json"
    existing.write_text("keep me")
    # --json is fine, --plot is not: nothing is timed, nothing is left behind or truncated
    code, _, err = run_main(capsys, "bench", "--json", str(tmp_path / "new.json"),
                            "--plot", str(tmp_path / "no" / "plot.png"))
    assert code == 2 and "--plot" in err
    code, _, err = run_main(capsys, "bench", "--json", str(existing),
                            "--plot", str(tmp_path / "no" / "plot.png"))
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    assert existing.read_text() == "keep me"


def test_plot_without_matplotlib_fails_before_timing(capsys, tmp_path, monkeypatch,
                                                     no_timing):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    code, out, err = run_main(capsys, "bench", "--plot", str(tmp_path / "p.png"))
    assert code == 2
    line = one_line_error(err, "conv3dt bench: error: --plot needs matplotlib")
    assert "pip install matplotlib" in line
    assert not (tmp_path / "p.png").exists()


def test_plot_without_matplotlib_in_a_subprocess_is_quick(tmp_path):
    # A stand-in package that fails to import, as a missing matplotlib does.
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    res = cli("bench", "--plot", "p.png", "--json", "r.json", cwd=tmp_path,
              pythonpath=[tmp_path / "fake"])
    assert res.returncode == 2, res.stdout + res.stderr
    one_line_error(res.stderr, "conv3dt bench: error: --plot needs matplotlib")
    assert res.stdout == ""  # no table: nothing was timed
    assert not (tmp_path / "r.json").exists()


def test_plot_format_checked_before_timing(capsys, tmp_path, no_timing):
    pytest.importorskip("matplotlib")
    code, _, err = run_main(capsys, "bench", "--plot", str(tmp_path / "plot.xyz"))
    assert code == 2
    line = one_line_error(err, "conv3dt bench: error: --plot: matplotlib cannot write .xyz")
    assert ".png" in line


@pytest.mark.parametrize("value, message", [
    ("avx9", "--isa must be one of the variants of this build, avx512, avx2, generic; got "
             "'avx9'"),
    ("generic,GENERIC", "--isa: each variant once; generic is given twice"),
    ("all,generic", "--isa: 'all' names every variant this CPU runs, alone; got all,generic"),
    ("unsupported", "this CPU does not run the"),
])
def test_isa_option_errors_before_timing(capsys, no_timing, value, message):
    if value == "unsupported":
        missing = [v["name"] for v in _kernels.isa_variants() if not v["supported"]]
        if not missing:
            pytest.skip("this CPU runs every variant of the build")
        value = missing[0]
    code, out, err = run_main(capsys, "bench", "--shapes", "tiny", "--isa", value)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("conv3dt bench: error: --isa")
    assert message in err, err


def test_check_isas():
    assert _bench.check_isas(None) == _bench.check_isas([]) == [conv3dt.get_isa()]
    assert _bench.check_isas("all") == _bench.check_isas([" ALL"]) == conv3dt.available_isas()
    assert _bench.check_isas([" Generic "]) == ["generic"]
    with pytest.raises(ValueError, match="given twice"):
        _bench.check_isas(["generic", "generic"])


def _fake_variant_rows():
    """_fake_rows with a second variant, "generic", twice as slow (1.5x forward +
    backward) with its own FMA probe."""
    rows = _fake_rows()
    for r in rows:
        r["isas"] = ["avx2", "generic"]
        r["conv3dt_generic_fwd_ms"] = 2 * r["conv3dt_fwd_ms"]
        r["conv3dt_generic_fwdbwd_ms"] = 1.5 * r["conv3dt_fwdbwd_ms"]
        r["conv3dt_generic_cpu_per_wall"] = 1.7
        r["fma_generic_gflops"] = 50.0
        r["workspace_mib"], r["t1_fwd_ms"] = 3.0, 2 * r["conv3dt_fwd_ms"]
    return rows


def test_variant_rows_and_tables():
    rows = _fake_variant_rows()
    assert _bench.variant_rows(rows, "avx2") is rows
    gen = _bench.variant_rows(rows, "generic")
    assert [r["conv3dt_fwd_ms"] for r in gen] == [20.0, 22.0, 24.0]
    assert [r["vs_fwd_ms"] for r in gen] == [10.0, 11.0, 12.0]
    assert all(r["fma_gflops"] == 50.0 and r["isas"] == ["generic"] for r in gen)
    # --memory and --scaling measured the first variant only
    assert not any("workspace_mib" in r or "t1_fwd_ms" in r for r in gen)
    assert gen[0]["torch_fwd_ms"] == rows[0]["torch_fwd_ms"]  # the same peers' times
    with pytest.raises(ValueError, match="not 'avx512'"):
        _bench.variant_rows(rows, "avx512")
    meta = _bench.metadata(rows, 2, "float32", [], 1, 1)
    assert meta["isas"] == ["avx2", "generic"] and meta["conv3dt_isa"] == "avx2"
    assert meta["fma_peaks"]["generic"]["gflops"] == 50.0
    assert meta["fma_peak"] is meta["fma_peaks"]["avx2"]
    assert meta["fma_peak"]["gflops"] == 220.0  # the median of the first variant's probes
    first = _bench.table(rows, meta, width=200)
    later = _bench.table(rows, meta, width=200, isa="generic")
    assert "avx2/this" not in first and "generic below" in " ".join(first.split())
    lines = later.splitlines()
    assert "avx2/this" in lines[0]
    cells = lines[3].split()
    # torch forward: 20 ms against generic's 20 ms; avx2 over generic: 0.50x and 0.67x
    assert cells[0] == "unet_up_k2s2" and cells[1] == "20.00" and "1.00x" in cells
    assert cells[-2:] == ["0.50x", "0.67x"]
    notes = " ".join(later.split())
    assert "the generic kernels' probe" in notes and "50.0 GFLOP/s" in notes
    assert "widest vector ISA" not in notes and "BLAS rate (measured)" not in notes
    assert "geometric mean torch/conv3dt: forward 1.00x" in notes


def test_plot_has_a_bar_per_variant():
    pytest.importorskip("matplotlib")
    rows = _fake_variant_rows()
    fwd, fwdbwd = _bench.figure(rows).axes
    assert len(fwd.patches) == 5 * len(rows)   # two variants and three peers
    labels = [t.get_text() for t in fwd.get_legend().get_texts()]
    assert labels[:2] == ["conv3dt (avx2)", "conv3dt (generic)"]
    heights = [p.get_height() for p in fwd.patches[len(rows):2 * len(rows)]]
    np.testing.assert_allclose(heights, [r["gflop"] / r["conv3dt_generic_fwd_ms"] * 1e3
                                         for r in rows])


def test_every_variant_is_timed_with_its_own_kernels(monkeypatch):
    isas = conv3dt.available_isas()
    if len(isas) < 2:
        pytest.skip("this CPU runs one variant")
    real, seen = _bench._conv3dt_fns, []

    def spy(*args, **kwargs):
        made_with = conv3dt.get_isa()
        fwd, fwd_bwd, threads = real(*args, **kwargs)

        def forward():
            seen.append((made_with, conv3dt.get_isa()))
            return fwd()

        return forward, fwd_bwd, threads

    monkeypatch.setattr(_bench, "_conv3dt_fns", spy)
    monkeypatch.setitem(_bench._FNS, "conv3dt", spy)
    before = conv3dt.get_isa()
    order = isas[::-1]  # the first variant need not be the best
    row, = _bench.run(["tiny"], repeat=1, rounds=1, threads=1, isas=order)
    assert conv3dt.get_isa() == before
    assert row["isas"] == order
    assert {made for made, _ in seen} == set(order)
    assert all(made == during for made, during in seen), seen
    for v in order[1:]:
        assert row[f"conv3dt_{v}_fwd_ms"] > 0 and row[f"conv3dt_{v}_fwdbwd_ms"] > 0
        assert row[f"conv3dt_{v}_max_rel_err"] < 1e-5  # the same function
        assert row[f"fma_{v}_gflops"] > 0
    assert row["fma_gflops"] > 0 and f"fma_{order[0]}_gflops" not in row


# ------------------------------------------------------------------------ one-line errors


@pytest.mark.parametrize("command", [["info"], ["demo", "--batch", "1"], ["check"],
                                     ["bench", "--shapes", "tiny"]])
def test_bad_environment_is_one_line_exit_2(command):
    res = cli(*command, env={"CONV3DT_NUM_THREADS": "lots"})
    assert res.returncode == 2, res.stdout + res.stderr
    line = one_line_error(res.stderr, f"conv3dt {command[0]}: error: ")
    assert "CONV3DT_NUM_THREADS must be a positive integer, got 'lots'" in line


@pytest.mark.parametrize("exc, code, message", [
    (ValueError("bad\nvalue"), 2, "conv3dt info: error: bad value"),
    (TypeError("wrong type"), 2, "conv3dt info: error: wrong type"),
    (FileNotFoundError(2, "No such file or directory", "x.npy"), 2,
     "conv3dt info: error: [Errno 2] No such file or directory: 'x.npy'"),
    (MemoryError("Unable to allocate 8.00 TiB"), 1,
     "conv3dt info: error: out of memory: Unable to allocate 8.00 TiB"),
    (KeyboardInterrupt(), 130, "conv3dt info: error: interrupted"),
    (RuntimeError("a bug"), 1, "conv3dt info: error: internal error, RuntimeError: a bug"),
])
def test_errors_are_one_line_with_an_exit_code(capsys, monkeypatch, exc, code, message):
    def info():
        raise exc

    monkeypatch.delenv("CONV3DT_DEBUG_CLI", raising=False)
    monkeypatch.setattr(_cli, "info", info)
    got, out, err = run_main(capsys, "info")
    assert got == code
    line = one_line_error(err, message)
    if isinstance(exc, RuntimeError):
        assert "CONV3DT_DEBUG_CLI=1" in line


def test_debug_variable_shows_the_traceback(capsys, monkeypatch):
    def info():
        raise RuntimeError("a bug")

    monkeypatch.setattr(_cli, "info", info)
    monkeypatch.setenv("CONV3DT_DEBUG_CLI", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        _cli.main(["info"])
    # wrong arguments stay one line
    code, _, err = run_main(capsys, "demo", "--batch", "0")
    assert code == 2 and "Traceback" not in err


def test_bench_errors_go_through_the_same_handler(capsys, monkeypatch):
    def run(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.delenv("CONV3DT_DEBUG_CLI", raising=False)
    monkeypatch.setattr(_bench, "run", run)
    code, _, err = run_main(capsys, "bench", "--shapes", "tiny")
    assert code == 130
    one_line_error(err, "conv3dt bench: error: interrupted")


# ------------------------------------------------------------------------ demo


def _numbers(stdout):
    """The demo's lines without its timings."""
    import re

    return [re.sub(r"[0-9.]+ ms", "<t> ms", line) for line in stdout.splitlines()
            if not line.startswith("conv3dt ")]


def test_demo_is_deterministic():
    first = cli("demo", "--batch", "1")
    again = cli("demo", "--batch", "1", "--threads", "1")
    other = cli("demo", "--batch", "1", "--seed", "1")
    for res in (first, again, other):
        assert res.returncode == 0, res.stdout + res.stderr
    assert "seed 0" in first.stdout and "seed 1" in other.stdout
    # the same numbers on another run (and thread count: results are bit-identical) ...
    assert _numbers(first.stdout) == _numbers(again.stdout)
    assert "loss = mean(y^2) = " in first.stdout and "output mean " in first.stdout
    # ... and other numbers with another seed: the seed reaches data and weights
    changed = [a for a, b in zip(_numbers(first.stdout), _numbers(other.stdout)) if a != b]
    assert any("loss = mean(y^2)" in line for line in changed), changed
    assert any("output mean" in line for line in changed), changed


# ------------------------------------------------------------------------ info


@pytest.fixture
def fresh_settings(monkeypatch):
    """No set_num_threads / set_cache_limit in effect, no thread or cache variables."""
    for name in ("CONV3DT_NUM_THREADS", "OMP_NUM_THREADS", "CONV3DT_CACHE_MIB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_threads, "_num_threads", None)
    monkeypatch.setattr(_memory._cache, "_limit", None)


def _line(out, name):
    """The text of one ``conv3dt info`` entry, its wrapped lines joined."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{name:<10}"):
            text = [line[10:]]
            for more in lines[i + 1:]:
                if not more.startswith(" " * 10):
                    break
                text.append(more[10:])
            return " ".join(text)
    raise AssertionError(f"no {name!r} line in:\n{out}")


def test_info_threads_and_where_they_come_from(capsys, monkeypatch, fresh_settings):
    cores = _threads._available_cores()
    code, out, _ = run_main(capsys, "info")
    assert code == 0
    assert _line(out, "threads").startswith(
        f"{cores} (default: the {cores} cores available to this process)")
    monkeypatch.setenv("CONV3DT_NUM_THREADS", "3")
    code, out, _ = run_main(capsys, "info")
    assert _line(out, "threads").startswith("3 (CONV3DT_NUM_THREADS=3)")
    monkeypatch.delenv("CONV3DT_NUM_THREADS")
    conv3dt.set_num_threads(1)
    code, out, _ = run_main(capsys, "info")
    assert _line(out, "threads").startswith("1 (conv3dt.set_num_threads())")


def test_info_says_whether_omp_num_threads_counts(capsys, monkeypatch, fresh_settings):
    value = str(_threads._available_cores() + 3)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    code, out, _ = run_main(capsys, "info", "--json")
    assert json.loads(out)["omp_num_threads_used"] is True
    code, out, _ = run_main(capsys, "info")
    assert _line(out, "threads").startswith(f"{value} (OMP_NUM_THREADS={value})")
    # CONV3DT_NUM_THREADS comes first: OMP_NUM_THREADS is then said not to count
    monkeypatch.setenv("CONV3DT_NUM_THREADS", "1")
    code, out, _ = run_main(capsys, "info")
    assert _line(out, "threads").startswith("1 (CONV3DT_NUM_THREADS=1)")
    assert (f"OMP_NUM_THREADS={value} is set; conv3dt's kernels do not take their "
            "count from it") in _line(out, "threads")


def test_info_openmp_isa_cache_and_blas(capsys, monkeypatch, fresh_settings):
    from conv3dt._kernels import OPENMP
    from conv3dt.functional import conv3d_transpose

    code, out, _ = run_main(capsys, "info")
    assert _line(out, "OpenMP").startswith("on" if OPENMP else "off")
    assert _line(out, "ISA").startswith(
        f"{conv3dt.get_isa()} kernels (this CPU runs {', '.join(conv3dt.available_isas())};")
    previous = conv3dt.get_isa()
    try:
        conv3dt.set_isa("generic")
        code, out, _ = run_main(capsys, "info")
        assert _line(out, "ISA").startswith("generic kernels")
    finally:
        conv3dt.set_isa(previous)
    # BLAS: listed as NumPy's; the kernels do not call it
    assert "SciPy's BLAS" not in out and "do not call BLAS" in _line(out, "BLAS")
    # cache: the limit and its source, idle memory, how to free it
    cache = _line(out, "cache")
    assert cache.startswith("limit 256 MiB (default;") and "conv3dt.empty_cache()" in cache
    monkeypatch.setenv("CONV3DT_CACHE_MIB", "64")
    try:
        conv3dt.empty_cache()
        y = conv3d_transpose(np.ones((1, 1, 64, 64, 64), np.float32),
                             np.ones((1, 8, 1, 1, 1), np.float32))  # 8 MiB, then idle
        nbytes = y.nbytes
        del y
        idle = conv3dt.cache_info()["idle_bytes"]
        code, out, _ = run_main(capsys, "info")
        cache = _line(out, "cache")
        assert cache.startswith("limit 64 MiB (CONV3DT_CACHE_MIB=64;")
        assert idle >= nbytes and f"idle now {idle / 2**20:.0f} MiB in 1 blocks" in cache
        code, out, _ = run_main(capsys, "info", "--json")
        facts = json.loads(out)["cache"]
        assert facts["idle_bytes"] == idle and facts["limit_bytes"] == 64 * 2**20
        conv3dt.set_cache_limit(2**20)
        code, out, _ = run_main(capsys, "info")
        assert _line(out, "cache").startswith("limit 1 MiB (conv3dt.set_cache_limit();")
    finally:
        conv3dt.empty_cache()


def test_activations_no_longer_claim_scipy_blas():
    with open(os.path.join(ROOT, "conv3dt", "_activations.py")) as f:
        assert "cython_blas" not in f.read()
    with open(os.path.join(ROOT, "conv3dt", "_cli.py")) as f:
        assert "the kernels call SciPy's BLAS" not in f.read()


# ------------------------------------------------------------------------ the benchmark


def _fake_rows(peers=("torch", "paddle", "onnxruntime")):
    rows = []
    for i, name in enumerate(["unet_up_k2s2", "dw_k3s2_g64", "tiny"]):
        row = {"shape": name, "dtype": "float32", "threads": 2,
               "gflop": _bench.flops(name) / 1e9, "conv3dt_fwd_ms": 10.0 + i,
               "conv3dt_fwdbwd_ms": 30.0 + i, "matmul_gflops": 150.0,
               "fma_gflops": 200.0 + 20 * i, "conv3dt_threads": 2,
               "conv3dt_cpu_per_wall": 1.9}
        for j, p in enumerate(peers):
            row[f"{p}_fwd_ms"] = (j + 2) * row["conv3dt_fwd_ms"]
            if p not in _bench.FORWARD_ONLY:
                row[f"{p}_fwdbwd_ms"] = (j + 3) * row["conv3dt_fwdbwd_ms"]
            row[f"{p}_threads"], row[f"{p}_cpu_per_wall"] = 2, 1.8
        rows.append(row)
    return rows


def test_table_fits_the_width_and_names_what_it_leaves_out():
    rows = _fake_rows()
    meta = _bench.metadata(rows, 2, "float32", [], 1, 1)  # the peers' facts need imports
    for width in (60, 80, 100, 200):
        text = _bench.table(rows, meta, width=width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        head = text.splitlines()[1]
        assert head.split()[:3] == ["shape", "fwd", "ms"]
        assert ("Left out to fit" in text) == (width < 100), text
    wide = _bench.table(rows, meta, width=200)
    lines = wide.splitlines()
    # ratios, not the peers' raw times: torch fwd is 2x, paddle f+b 4x, ort fwd 4x
    row = lines[3].split()
    assert row[0] == "unet_up_k2s2" and row[-5:] == ["2.00x", "3.00x", "3.00x", "4.00x",
                                                     "4.00x"]
    assert "ort" in lines[0] and "torch" in lines[0] and "paddle" in lines[0]
    # the share of the BLAS rate only for the dense shape
    gflops = rows[0]["gflop"] / rows[0]["conv3dt_fwd_ms"] * 1e3
    assert f"{gflops / 150:.0%}" in lines[3] and lines[4].split()[3] == "-"
    # ... and of the FMA peak measured in the shape's own rounds
    assert lines[3].split()[4] == f"{gflops / 200:.0%}" and lines[4].split()[4] == "-"
    notes = " ".join(lines)
    assert "geometric mean onnxruntime/conv3dt: forward 4.00x" in notes
    assert "BLAS rate (measured): sgemm 2048^3" in notes
    # the peak: the median of the rows' probes, and the clock it implies
    assert "FMA peak (measured)" in notes and "220.0 GFLOP/s" in notes, notes
    assert meta["fma_peak"]["gflops"] == 220.0
    if meta["fma_peak"]["has_fma"]:
        lanes = meta["fma_peak"]["lanes"]
        assert meta["fma_peak"]["ghz"] == pytest.approx(220.0 / (2 * lanes * 2 * 2))
        assert f"{meta['fma_peak']['ghz']:.2f} GHz" in notes


def test_table_with_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")
    text = _bench.table(_fake_rows())
    assert max(len(line) for line in text.splitlines()) <= 70


def test_fma_peak_terms():
    """The peak's terms for the variant in use: its vector width, the cores, and the
    nominal peak at the reported clock with 2 FMA units (none without FMA or a clock)."""
    cpu = {"flags": ["sse2", "avx", "avx2", "fma", "avx512f"], "mhz": 2500.0,
           "mhz_source": "test", "cores_available": 4}
    previous = conv3dt.get_isa()
    try:
        for name in conv3dt.available_isas():
            conv3dt.set_isa(name)
            lanes = conv3dt._isa.current().lanes(4)
            peak = _bench.fma_peak(cpu, 2, "float32")
            assert peak["isa"] == name and peak["lanes"] == lanes and peak["cores"] == 2
            assert peak["gflops"] is None  # measured by run(), filled in by metadata()
            if name == "generic":
                assert peak["nominal_gflops"] is None and not peak["has_fma"]
            else:
                assert peak["nominal_gflops"] == pytest.approx(2 * lanes * 2 * 2 * 2.5)
                assert _bench.fma_peak(cpu, 8, "float64")["nominal_gflops"] == pytest.approx(
                    4 * lanes // 2 * 2 * 2 * 2.5)
                cpu["mhz"] = None
                assert _bench.fma_peak(cpu, 2, "float32")["nominal_gflops"] is None
                cpu["mhz"] = 2500.0
    finally:
        conv3dt.set_isa(previous)


@pytest.mark.parametrize("double", [False, True])
def test_fma_probe_computes_its_chains(double):
    """Every variant's probe does the flop it reports, on every thread, and its chains
    end where the recurrence acc = acc * m + a says (chain i starts at i)."""
    m, a = 0.999, 0.001
    for variant in _kernels.isa_variants():
        if not variant["supported"]:
            continue
        lanes = variant["vector_bytes"] // (8 if double else 4)
        flop1, total1 = _kernels.fma_probe(variant["index"], double, 1000, 1)
        flop3, total3 = _kernels.fma_probe(variant["index"], double, 1000, 3)
        assert flop3 == 3 * flop1 and total3 == pytest.approx(3 * total1)
        chains = flop1 / (2 * lanes * 1000)
        assert chains == int(chains) and chains >= 8, variant  # enough to hide the latency
        assert _kernels.fma_probe(variant["index"], double, 2000, 1)[0] == 2 * flop1
        mn = m ** 1000
        expected = lanes * sum(i * mn + a * (1 - mn) / (1 - m) for i in range(int(chains)))
        assert total1 == pytest.approx(expected, rel=1e-3 if not double else 1e-9), variant
    with pytest.raises(ValueError, match="n_threads"):
        _kernels.fma_probe(0, double, 10, 0)


def test_fma_probe_is_calibrated_to_its_duration():
    fn, flop = _bench.fma_probe("float32", 1, seconds=0.01)
    assert flop == fn()[0] > 0


def test_plot_draws_both_passes_on_a_log_scale(tmp_path):
    pytest.importorskip("matplotlib")
    rows = _fake_rows()
    fig = _bench.figure(rows)
    fwd, fwdbwd = fig.axes
    assert fwd.get_yscale() == "log" and fwdbwd.get_yscale() == "log"
    assert len(fwd.patches) == 4 * len(rows)        # conv3dt and three peers
    assert len(fwdbwd.patches) == 3 * len(rows)     # ONNX Runtime: forward only
    heights = [p.get_height() for p in fwd.patches[:len(rows)]]
    expected = [r["gflop"] / r["conv3dt_fwd_ms"] * 1e3 for r in rows]
    np.testing.assert_allclose(heights, expected)
    _bench.plot(rows, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_bench_writes_json_with_the_metadata(tmp_path):
    res = cli("bench", "--shapes", "tiny", "--repeat", "1", "--rounds", "1", "--threads", "1",
              "--json", "out.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tiny" in res.stdout and "fwd ms" in res.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    row, meta = data["rows"][0], data["meta"]
    assert row["shape"] == "tiny" and row["conv3dt_fwd_ms"] > 0 and row["matmul_gflops"] > 0
    assert row["gflop"] == pytest.approx(2 * 1 * 4 * 4 * 27 * 64 / 1e9)
    assert meta["versions"]["conv3dt"] == conv3dt.__version__
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["conv3dt_isa"] == conv3dt.get_isa()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            text = f.read()
        if "model name" in text:
            assert meta["cpu"]["model"] and meta["cpu"]["model"] in text
        if "flags" in text:
            assert meta["cpu"]["flags"] and meta["cpu"]["flags"][0] in text
    assert meta["threads"] == 1
    assert meta["threads_per_library"]["conv3dt"]["threads"] == 1
    assert meta["blas"]["gflops"] == pytest.approx(row["matmul_gflops"])
    assert meta["blas"]["gemm"].startswith("sgemm")
    assert {"isa", "lanes", "ghz", "cores", "gflops", "nominal_gflops"} <= set(meta["fma_peak"])
    assert row["fma_gflops"] > 0 and meta["fma_peak"]["gflops"] == row["fma_gflops"]
    assert meta["dtype"] == "float32" and meta["repeat"] == 1 and meta["rounds"] == 1


def test_short_calls_are_timed_in_a_loop(monkeypatch):
    # tiny's forward pass takes microseconds: a round calls it until 20 ms have passed
    row, = _bench.run(["tiny"], repeat=1, rounds=2, threads=1)
    calls = row["timed_calls"]
    assert calls["conv3dt_fwd_ms"] > 2 * 20 and calls["conv3dt_fwdbwd_ms"] > 2 * 10
    assert calls["matmul_ms"] >= 2 and calls["fma_ms"] >= 2
    monkeypatch.setattr(_bench, "_MIN_ROUND_S", 0.0)  # then repeat / rounds, rounded up
    row, = _bench.run(["tiny"], repeat=5, rounds=2, threads=1)
    assert row["timed_calls"]["conv3dt_fwd_ms"] == 2 * 3
    assert row["timed_calls"]["conv3dt_fwdbwd_ms"] == 2 * 2


def test_tiny_bench_with_the_installed_peers(tmp_path):
    import importlib.util

    # find_spec, not import: this process need not load the frameworks
    peers = [p for p in _bench.PEERS
             if all(importlib.util.find_spec(m) for m in _bench.PEER_MODULES[p])]
    if not peers:
        pytest.skip("none of torch, paddle, onnxruntime (+ onnx) is installed")
    res = cli("bench", "--shapes", "tiny", "--repeat", "1", "--rounds", "1", "--threads", "2",
              "--compare", ",".join(_bench.PEERS), "--json", "out.json", cwd=tmp_path,
              env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "\nwarning: " not in res.stderr, res.stderr  # a peer's output differs
    data = json.loads((tmp_path / "out.json").read_text())
    row, meta = data["rows"][0], data["meta"]
    for p in peers:
        assert row[f"{p}_fwd_ms"] > 0
        assert row[f"{p}_max_rel_err"] < 1e-5  # the peer computes the same function
        assert row[f"{p}_threads"] == 2
        assert meta["threads_per_library"][p]["threads"] == 2
        for module in _bench.PEER_MODULES[p]:
            assert meta["versions"][module]
        assert (f"{p}_fwdbwd_ms" in row) == (p not in _bench.FORWARD_ONLY)
        assert f"geometric mean {p}/conv3dt" in " ".join(res.stdout.split())
    for p in set(_bench.PEERS) - set(peers):
        assert f"note: {p} is left out" in res.stderr


@pytest.mark.parametrize("case", [
    dict(x=(2, 4, 3, 4, 5), k=(3, 2, 3), groups=2, stride=(2, 1, 3), padding=(1, 0, 1),
         output_padding=(1, 0, 2), dilation=1),
    dict(x=(1, 3, 4, 4, 4), k=(2, 2, 2), groups=1, stride=1, padding=1, output_padding=0,
         dilation=2),
])
def test_onnx_model_matches_a_float64_reference(case):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case["x"]).astype(np.float32)
    c_in, groups = case["x"][1], case["groups"]
    w = rng.standard_normal((c_in, 3) + case["k"]).astype(np.float32)
    b = rng.standard_normal(3 * groups).astype(np.float32)
    kwargs = {k: case[k] for k in ("stride", "padding", "output_padding", "dilation",
                                   "groups")}
    session = ort.InferenceSession(_bench.onnx_model(x.shape, w, b, kwargs),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    s, lo, hi, d, out = resolve(x.shape[2:], w.shape[2:], case["stride"], case["padding"],
                                case["output_padding"], case["dilation"])
    expected = ref_conv3d_transpose(x, w, b, s, lo, hi, d, groups, out)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
