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
author = "The conv3dt developers"
copyright = "The conv3dt developers"
release = conv3dt.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]

# NumPy-style docstrings ("Parameters", "Returns" sections); Google style is off so that
# prose such as "Precision:" stays prose.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# Links into NumPy's, PyTorch's and PaddlePaddle's documentation. The inventories are read
# from files shipped in _intersphinx/ (written by _intersphinx/make_inventories.py), never
# fetched: the build works offline, warnings as errors.
intersphinx_mapping = {
    "numpy": ("https://numpy.org/doc/stable/", "_intersphinx/numpy.inv"),
    "torch": ("https://docs.pytorch.org/docs/stable/", "_intersphinx/torch.inv"),
    "paddle": ("https://www.paddlepaddle.org.cn/documentation/docs/en/",
               "_intersphinx/paddle.inv"),
}
intersphinx_timeout = 1

root_doc = "index"
exclude_patterns = ["_build"]
templates_path = []
html_static_path = ["_static"]
html_theme = "furo"
html_title = f"conv3dt {release}"
# Code blocks wrap their long lines and tables fit the text column, so nothing is cut
# off at the right edge (checked in headless Chromium by check_layout.py).
html_css_files = ["conv3dt.css"]

# conv3dt.dask's reference builds without its optional packages installed.
autodoc_mock_imports = ["dask", "distributed", "zarr"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"
autosummary_generate = False
default_role = "code"
nitpicky = False
highlight_language = "python"
