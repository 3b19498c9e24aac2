"""Every Python code block in the documentation runs as written.

Blocks are ``.. code-block:: python`` in ``docs/*.rst`` and fenced ```` ```python ````
blocks in ``README.md``. The blocks of one document run in order in one namespace (as a
reader runs them, top to bottom), in a temporary working directory. A block that imports
CuPy, PyTorch or PaddlePaddle is skipped where that is not available (a block that imports
CuPy or uses ``CUDAPlace``: where there is no GPU); such blocks stand on their own.

The Sphinx build itself (warnings as errors) is checked too, where Sphinx is installed.
"""
import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

OPTIONAL = {"cupy": "CuPy", "torch": "PyTorch", "paddle": "PaddlePaddle",
            "safetensors": "safetensors"}


def rst_blocks(text):
    """``[(line number, code)]`` of the ``.. code-block:: python`` blocks of an RST text."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)\.\. code-block::\s*(python|python3|py)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        i += 1
        while i < len(lines) and re.match(r"^\s+:\w[\w-]*:", lines[i]):  # directive options
            i += 1
        start = i
        body = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
            i += 1
        blocks.append((start + 1, textwrap.dedent("\n".join(body)).strip("\n") + "\n"))
    return blocks


def markdown_blocks(text):
    """``[(line number, code)]`` of the fenced ```python blocks of a Markdown text."""
    blocks = []
    for m in re.finditer(r"^```(?:python|py|python3)[ \t]*\n(.*?)^```[ \t]*$", text,
                         re.S | re.M):
        blocks.append((text[: m.start()].count("\n") + 2, m.group(1)))
    return blocks


def documents():
    docs = []
    if os.path.isdir(DOCS):
        for name in sorted(os.listdir(DOCS)):
            if name.endswith(".rst"):
                docs.append(os.path.join(DOCS, name))
    readme = os.path.join(ROOT, "README.md")
    if os.path.exists(readme):
        docs.append(readme)
    return docs


def blocks_of(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return markdown_blocks(text) if path.endswith(".md") else rst_blocks(text)


def _available(module):
    try:
        mod = importlib.import_module(module)
    except Exception:
        return False
    if module == "cupy":
        try:
            return mod.cuda.runtime.getDeviceCount() > 0
        except Exception:
            return False
    return True


def _missing_optional(code):
    for module, label in OPTIONAL.items():
        needs = re.search(rf"^\s*(import|from)\s+{module}\b", code, re.M)
        if module == "cupy":  # a CUDAPlace guard needs a GPU just as much
            needs = needs or "CUDAPlace(" in code
        if needs and not _available(module):
            return label + (" with a GPU" if module == "cupy" else "")
    return None


DOCUMENTS = documents()
WITH_CODE = [p for p in DOCUMENTS if blocks_of(p)]


def test_documentation_has_python_blocks():
    names = {os.path.basename(p) for p in DOCUMENTS}
    for page in ("getting_started.rst", "semantics.rst", "porting_paddle.rst",
                 "pytorch.rst", "performance.rst", "gpu.rst", "api.rst", "cli.rst",
                 "paddle2.rst"):
        assert page in names, page
    counted = {os.path.basename(p): len(blocks_of(p)) for p in DOCUMENTS}
    for page in ("getting_started.rst", "semantics.rst", "porting_paddle.rst",
                 "performance.rst"):
        assert counted[page] >= 2, (page, counted[page])


def test_block_extraction():
    rst = (".. code-block:: python\n   :caption: x\n\n   a = 1\n\n   b = a + 1\n"
           "text\n\n.. code-block:: console\n\n   $ ls\n")
    assert rst_blocks(rst) == [(3, "a = 1\n\nb = a + 1\n")]
    md = "x\n```python\nprint(1)\n```\n```bash\nls\n```\n"
    assert markdown_blocks(md) == [(3, "print(1)\n")]


@pytest.mark.parametrize("path", WITH_CODE, ids=lambda p: os.path.relpath(p, ROOT))
def test_code_blocks_run(path, tmp_path, monkeypatch):
    blocks = blocks_of(path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    skipped = []
    for line, code in blocks:
        missing = _missing_optional(code)
        if missing:
            skipped.append(f"line {line} ({missing})")
            continue
        try:
            exec(compile(code, f"{os.path.relpath(path, ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{os.path.relpath(path, ROOT)}, block at line {line} "
                                 f"failed: {type(exc).__name__}: {exc}\n{code}") from exc
    if skipped and len(skipped) == len(blocks):
        pytest.skip("every block needs an optional package: " + ", ".join(skipped))


def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    out = tmp_path / "html"
    res = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                          "html", "-d", str(tmp_path / "doctrees"), DOCS, str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "index.html").exists()
    assert (out / "api.html").exists()
