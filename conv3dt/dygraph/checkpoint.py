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


def _read_member(archive, info):
    """One ``.npy`` member of a checkpoint, checked before anything is allocated.

    The header must describe a numeric or bool array whose size matches the member's
    stored size, so a corrupt header cannot make the reader allocate terabytes.
    """
    fmt = np.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"entry '{info.filename}' has unsupported .npy version {version}")
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ValueError(f"entry '{info.filename}' has non-numeric dtype {dtype}")
        header_bytes = f.tell()
        data_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header_bytes + data_bytes != info.file_size:
            raise ValueError(
                f"entry '{info.filename}' is corrupt: its header describes {shape} {dtype} "
                f"({data_bytes} bytes) but it holds {info.file_size - header_bytes} bytes")
        array = np.frombuffer(f.read(data_bytes), dtype=dtype, count=int(np.prod(shape)))
        if len(array) * dtype.itemsize != data_bytes:
            raise ValueError(f"entry '{info.filename}' is truncated")
    return array.reshape(shape, order="F" if fortran else "C").copy()


def _load_npz(path):
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        out = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"entry '{info.filename}' is not an .npy array")
                out[info.filename[:-4]] = _read_member(archive, info)
        return out
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            RuntimeError, NotImplementedError) as exc:
        # Pickled or non-numeric entries, truncation, bad headers, unsupported compression:
        # all mean "this is not a checkpoint we can trust". (Pickles are never unpickled:
        # an object dtype is refused from its header.)
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
