"""Packaging: licence, metadata, changelog, the sdist's file rules and the installed files.

The built sdist and wheel themselves are checked by .ci/packaging.sh (with
.ci/check_dist.py); these tests check the rules they come from, in seconds.
"""
import importlib.metadata
import importlib.resources
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli", reason="tomllib/tomli reads pyproject.toml")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_licence_is_the_apache_2_text():
    text = _read("LICENSE")
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.split()) > 1500          # the whole text, not a stub
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert project["authors"] == [{"name": "The conv3dt developers"}]


def test_build_requires_a_setuptools_that_reads_this_pyproject():
    # license = "<SPDX>" with license-files needs setuptools 77 (PEP 639).
    requires = _pyproject()["build-system"]["requires"]
    floor = next(r for r in requires if r.startswith("setuptools"))
    m = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", floor)
    assert m and int(m.group(1)) >= 77, floor


def test_changelog_has_unreleased_and_the_current_version():
    import conv3dt

    text = _read("CHANGELOG.md")
    assert "Keep a Changelog" in text
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert headings[0] == "Unreleased", headings
    assert conv3dt.__version__ in headings, (conv3dt.__version__, headings)
    m = re.search(rf"^## \[{re.escape(conv3dt.__version__)}\] - (\d{{4}}-\d\d-\d\d)$", text,
                  re.M)
    assert m, "the current version's heading has no date (## [X.Y.Z] - YYYY-MM-DD)"


def _manifest_selection():
    """The files MANIFEST.in selects, as setuptools' sdist evaluates it."""
    from setuptools.command.egg_info import FileList

    fl = FileList()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        fl.findall()
        for line in _read("MANIFEST.in").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                fl.process_template_line(line)
    finally:
        os.chdir(cwd)
    return {f.replace(os.sep, "/") for f in fl.files}


def _source_tree():
    skip_dirs = {".git", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis",
                 "_build", ".github"}
    out = set()
    for dirpath, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip_dirs and not d.endswith(".egg-info")
                   and not d.startswith(".venv")]
        for f in files:
            out.add(os.path.relpath(os.path.join(dirpath, f), ROOT).replace(os.sep, "/"))
    return out


def test_sdist_rules_take_every_source_and_no_generated_c():
    selected = _manifest_selection()
    tree = _source_tree()
    # Every C/Cython source and header of the package, wherever it lies under conv3dt/,
    # except the C that Cython generates from a .pyx of the same name.
    sources = {f for f in tree if f.startswith("conv3dt/")
               and re.search(r"\.(c|h|pyx|pxd|pxi)$", f)}
    generated = {f for f in sources if f.endswith(".c") and f[:-2] + ".pyx" in tree}
    assert sources - generated <= selected, sorted(sources - generated - selected)
    assert not generated & selected, sorted(generated & selected)
    for f in ("LICENSE", "CHANGELOG.md", "README.md", "tests/conftest.py",
              "tests/reference.py", "tests/data/paddle_conv3d_transpose.npz",
              "docs/conf.py", "docs/index.rst", "docs/_static/phases.svg",
              "docs/_intersphinx/numpy.inv", "examples/train_decoder.py",
              "conv3dt/py.typed", "conv3dt/data/paddle_conv3d_transpose.npz"):
        assert f in selected, f
    for f in tree:
        if (f.startswith(("tests/", "examples/", "docs/", "benchmarks/"))
                and f.endswith((".py", ".rst", ".md", ".npz", ".svg", ".inv"))):
            assert f in selected, f
    assert not {f for f in selected if re.search(r"\.(so|pyd|o)$", f)}


def test_sdist_rules_cover_headers_and_sources_in_subfolders(tmp_path, monkeypatch):
    # Kernel sources may move into subfolders (conv3dt/kernels/*.c, *.h): the rules take
    # them too. A throwaway tree with such files, evaluated with the same MANIFEST.in.
    from setuptools.command.egg_info import FileList

    for rel in ("conv3dt/kernels/avx2.c", "conv3dt/kernels/simd.h", "conv3dt/_kernels.pyx",
                "conv3dt/_kernels.c", "conv3dt/sub/x.pxd", "conv3dt/_kernels_forward.pxi"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("/* */\n")
    monkeypatch.chdir(tmp_path)
    fl = FileList()
    fl.findall()
    for line in _read("MANIFEST.in").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fl.process_template_line(line)
    files = {f.replace(os.sep, "/") for f in fl.files}
    assert {"conv3dt/kernels/avx2.c", "conv3dt/kernels/simd.h", "conv3dt/_kernels.pyx",
            "conv3dt/sub/x.pxd", "conv3dt/_kernels_forward.pxi"} <= files
    assert "conv3dt/_kernels.c" not in files


def test_wheel_rules_leave_sources_out():
    tool = _pyproject()["tool"]["setuptools"]
    assert set(tool["package-data"]["conv3dt"]) == {"data/*.npz", "py.typed"}
    excluded = tool["exclude-package-data"]["*"]
    for pattern in ("*.c", "*.h", "*.pyx", "*.pxd", "*.pxi", "**/*.c", "**/*.h"):
        assert pattern in excluded


def test_installed_package_has_py_typed_and_metadata():
    import conv3dt

    assert importlib.resources.files("conv3dt").joinpath("py.typed").is_file()
    assert importlib.resources.files("conv3dt").joinpath(
        "data", "paddle_conv3d_transpose.npz").is_file()
    meta = importlib.metadata.metadata("conv3dt")
    assert meta["Version"] == conv3dt.__version__
    if meta.get("Metadata-Version", "0") >= "2.4":   # written by setuptools >= 77
        assert meta["License-Expression"] == "Apache-2.0"
        assert "LICENSE" in (meta.get_all("License-File") or [])
    assert meta["Author"] == "The conv3dt developers"


def test_installed_copy_holds_no_sources():
    import conv3dt

    pkg = os.path.dirname(os.path.abspath(conv3dt.__file__))
    if os.path.commonpath([pkg, ROOT]) == ROOT:
        pytest.skip("conv3dt is imported from the source tree (an editable or in-place "
                    "build), not from an installed wheel")
    found = [os.path.relpath(os.path.join(d, f), pkg) for d, _, files in os.walk(pkg)
             for f in files if re.search(r"\.(c|h|pyx|pxd|pxi)$", f)]
    assert not found, found
