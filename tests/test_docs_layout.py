"""The built documentation as a reader sees it, in headless Chromium at 1280 px: no code
block or table cut off (docs/check_layout.py), the figures and the links into NumPy's,
PyTorch's and Paddle's documentation in place.

Skips where Sphinx, the furo theme or Chromium is missing (Debian: apt-get install
chromium). CI installs Chromium, and keeps the screenshots of its own run.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _chromium():
    exe = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
         if p), None)
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return exe


def _check_layout():
    spec = importlib.util.spec_from_file_location("check_layout",
                                                  os.path.join(DOCS, "check_layout.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    _chromium()
    out = tmp_path_factory.mktemp("docs") / "html"
    res = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                          "html", "-d", str(out.parent / "doctrees"), DOCS, str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_checker_finds_cut_off_code_and_tables(tmp_path):
    # The check itself: a page with a long unwrapped code line and a table wider than
    # the text column is reported, line and boxes alike.
    _chromium()
    (tmp_path / "page.html").write_text(
        "<html><body><article style='width:400px'>"
        "<pre style='overflow:auto'>short line\n" + "x = 1  " * 60 + "\nshort</pre>"
        "<div style='overflow-x:auto'><table><tr><td style='white-space:nowrap'>"
        + "cell " * 80 + "</td></tr></table></div>"
        "<pre style='white-space:pre-wrap'>" + "wrapped " * 60 + "</pre>"
        "</article></body></html>")
    results = _check_layout().check(str(tmp_path), out=open(os.devnull, "w"))
    r = results["page.html"]
    assert r["cut_lines"] == 1 and r["lines"] == 4, r
    assert [o["what"].split(":")[0] for o in r["overflow"]] == ["pre", "table"], r


def test_no_code_block_or_table_is_cut_off_at_1280px(html, tmp_path):
    shots = os.environ.get("CONV3DT_DOCS_SCREENSHOTS")
    log = tmp_path / "layout.txt"
    with open(log, "w") as f:
        results = _check_layout().check(str(html), 1280, shots, out=f)
    assert {"index.html", "semantics.html", "performance.html", "api.html"} <= set(results)
    assert sum(r["lines"] for r in results.values()) > 300     # every code block measured
    cut = {page: r for page, r in results.items() if r["overflow"] or r["cut_lines"]}
    assert not cut, log.read_text()


def test_figures_and_intersphinx_links(html):
    index = (html / "index.html").read_text()
    semantics = (html / "semantics.html").read_text()
    pytorch = (html / "pytorch.html").read_text()
    assert "phases.svg" in index and (html / "_images" / "phases.svg").exists()
    assert "output_size.svg" in semantics
    assert 'href="https://numpy.org/doc/stable/reference/generated/numpy.ndarray.html' in index
    assert ('href="https://www.paddlepaddle.org.cn/documentation/docs/en/api/paddle/nn/'
            'functional/conv3d_transpose_en.html') in semantics
    assert ('href="https://docs.pytorch.org/docs/stable/generated/'
            'torch.nn.ConvTranspose3d.html') in pytorch
    assert "furo" in index                                    # the theme in use
