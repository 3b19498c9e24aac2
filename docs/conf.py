"""Sphinx configuration of conv3dt's documentation.

Build (warnings are errors)::

    pip install -e ".[docs]"          # or: python setup.py build_ext --inplace
    python -m sphinx -W -b html docs docs/_build/html

The API reference is generated from the docstrings, so conv3dt must be importable with
its compiled kernels: the checkout this folder belongs to when its kernels are built in
place (``pip install -e .``), else the installed package (``pip install .``).
"""
import glob
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if glob.glob(os.path.join(ROOT, "conv3dt", "_kernels*.so")) + glob.glob(
        os.path.join(ROOT, "conv3dt", "_kernels*.pyd")):
    sys.path.insert(0, ROOT)
else:  # an unbuilt checkout would shadow the installed package
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]

try:
    import conv3dt  # noqa: E402
except ImportError as exc:  # the Cython kernels are not built in this checkout
    raise RuntimeError(
        "the documentation imports conv3dt for its API reference, which needs the compiled "
        "kernels: run `pip install .`, `pip install -e .` or `python setup.py build_ext "
        "--inplace` first "
        f"({exc})"
    ) from exc

project = "conv3dt"
author = "the conv3dt authors"
copyright = "the conv3dt authors"
release = conv3dt.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path = []
html_static_path = ["_static"]
html_theme = "alabaster"
html_title = f"conv3dt {release}"
html_theme_options = {
    "description": "Fast, exact 3D transposed convolution with PaddlePaddle's semantics",
    "fixed_sidebar": True,
}

# conv3dt.dask's reference builds without its optional packages installed.
autodoc_mock_imports = ["dask", "distributed", "zarr"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"
autosummary_generate = False
default_role = "code"
nitpicky = False
highlight_language = "python"
