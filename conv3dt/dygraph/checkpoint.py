"""``save_dygraph`` / ``load_dygraph``: state dicts to and from ``.npz`` files.

File names: ``save_dygraph(state, "ckpt/model")`` writes ``ckpt/model.pdparams.npz`` for a
layer's state dict (values are Parameters) and ``ckpt/model.pdopt.npz`` for an optimizer's
(anything else), mirroring Paddle's ``.pdparams``/``.pdopt``. ``load_dygraph("ckpt/model")``
returns ``(params, opt)`` like Paddle, each a dict of NumPy arrays or None when its file is
absent. A path already ending in ``.pdparams``, ``.pdopt`` or ``.npz`` is accepted by both.

Loading is safe on untrusted files: ``allow_pickle=False``, only numeric or bool arrays are
accepted, and a truncated or corrupt file is a ValueError naming the path.

Example::

    >>> import os, tempfile, numpy as np
    >>> from conv3dt.dygraph import Conv3DTranspose, save_dygraph, load_dygraph
    >>> conv = Conv3DTranspose(2, 3, filter_size=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_dygraph(conv.state_dict(), path)
    >>> params, opt = load_dygraph(path)
    >>> sorted(params), opt
    (['bias', 'weight'], None)
    >>> conv.set_dict(params)
"""
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ..autograd import Parameter, Variable

__all__ = ["save_dygraph", "load_dygraph"]

PARAMS_SUFFIX = ".pdparams.npz"
OPT_SUFFIX = ".pdopt.npz"


def _base_path(path):
    path = os.fspath(path)
    for suffix in (PARAMS_SUFFIX, OPT_SUFFIX, ".pdparams", ".pdopt", ".npz"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def save_dygraph(state_dict, model_path):
    """Write ``state_dict`` (name -> Variable/Parameter/array) to ``model_path`` + suffix.

    The file is written to a temporary name and renamed, so an interrupted save never
    leaves a truncated checkpoint behind.
    """
    base = _base_path(model_path)
    if os.path.basename(base) == "":
        raise ValueError("save_dygraph: model_path must be dirname/filename, "
                         f"but the file name is empty in {model_path!r}")
    if not state_dict:
        raise ValueError("save_dygraph: state_dict is empty, nothing to save")
    is_params = all(isinstance(v, Parameter) for v in state_dict.values())
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save_dygraph: keys must be str, but received {key!r}")
        array = value.numpy() if isinstance(value, Variable) else value
        if hasattr(array, "__cuda_array_interface__"):
            array = array.get()
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"save_dygraph: '{key}' has non-numeric dtype {array.dtype}")
        arrays[key] = array
    path = base + (PARAMS_SUFFIX if is_params else OPT_SUFFIX)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _load_npz(path):
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("not an .npz archive")
        with z:
            out = {}
            for key in z.files:
                array = z[key]
                if array.dtype.kind not in "biuf":
                    raise ValueError(f"entry '{key}' has non-numeric dtype {array.dtype}")
                out[key] = array
            return out
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        # np.load raises ValueError for pickled object arrays, BadZipFile / EOFError / OSError
        # for truncation: all mean "this is not a checkpoint we can trust".
        raise ValueError(f"load_dygraph: cannot read {path!r}: {exc}") from exc


def load_dygraph(model_path):
    """``(params, opt)`` dicts of NumPy arrays read from ``model_path`` + ``.pdparams.npz`` /
    ``.pdopt.npz``; either is None when its file does not exist, FileNotFoundError when
    neither does."""
    base = _base_path(model_path)
    params_path, opt_path = base + PARAMS_SUFFIX, base + OPT_SUFFIX
    if not os.path.exists(params_path) and not os.path.exists(opt_path):
        raise FileNotFoundError(f"load_dygraph: neither {params_path!r} nor {opt_path!r} exists")
    params = _load_npz(params_path) if os.path.exists(params_path) else None
    opt = _load_npz(opt_path) if os.path.exists(opt_path) else None
    return params, opt
