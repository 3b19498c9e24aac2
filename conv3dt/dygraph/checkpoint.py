"""``save_dygraph`` / ``load_dygraph``: state dicts to and from ``.npz`` files.

File names: ``save_dygraph(state, "ckpt/model")`` writes ``ckpt/model.pdparams.npz`` for a
layer's state dict (values are Parameters) and ``ckpt/model.pdopt.npz`` for an optimizer's
(anything else), mirroring Paddle's ``.pdparams``/``.pdopt``. ``load_dygraph("ckpt/model")``
returns ``(params, opt)`` like Paddle, each a dict of NumPy arrays or None when its file is
absent. A path already ending in ``.pdparams``, ``.pdopt`` or ``.npz`` is accepted by both.

Loading is safe on untrusted files: ``allow_pickle=False``, only numeric or bool arrays are
accepted, and a truncated or corrupt file is a ValueError naming the path.

``load_dygraph`` also reads the weights of other tools (see ``conv3dt._weights``):
Paddle's own pickled ``model.pdparams`` / ``model.pdopt`` (from ``fluid.save_dygraph`` or
``paddle.save``; read with a restricted unpickler that never runs code), and, given by
their full name, PyTorch ``.pt``/``.pth`` and ``.safetensors`` files (returned as the
parameters, with ``opt`` None).

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
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _weights
from ..autograd import Parameter, Variable

__all__ = ["save_dygraph", "load_dygraph"]

PARAMS_SUFFIX = ".pdparams.npz"
OPT_SUFFIX = ".pdopt.npz"

# A file path: a str or an os.PathLike of one.
PathLike = Union[str, "os.PathLike[str]"]


def _base_path(path: PathLike) -> str:
    path = os.fspath(path)
    for suffix in (PARAMS_SUFFIX, OPT_SUFFIX, ".pdparams", ".pdopt", ".npz"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def save_dygraph(state_dict: Mapping[str, Union[Variable, ArrayLike]],
                 model_path: PathLike) -> None:
    """Write a state dict to ``model_path`` + ``.pdparams.npz`` (or ``.pdopt.npz``).

    Parameters
    ----------
    state_dict : mapping of str to Variable, Parameter or array
        A layer's :meth:`~conv3dt.dygraph.Layer.state_dict` (all Parameters: written to
        ``.pdparams.npz``) or an optimizer's (``.pdopt.npz``).
    model_path : str or path-like
        ``dirname/filename``; a suffix ``.pdparams``, ``.pdopt`` or ``.npz`` is taken off.

    Raises
    ------
    ValueError
        The file name is empty or ``state_dict`` is.
    TypeError
        A key is not a str or a value is not numeric.

    Notes
    -----
    The file is written to a temporary name beside it, flushed and renamed, so an
    interrupted or failed save never leaves a truncated checkpoint behind, and an
    earlier checkpoint of that name stays intact.
    """
    base = _base_path(model_path)
    if os.path.basename(base) == "":
        raise ValueError("save_dygraph: model_path must be dirname/filename, "
                         f"but the file name is empty in {model_path!r}")
    if not state_dict:
        raise ValueError("save_dygraph: state_dict is empty, nothing to save")
    is_params = all(isinstance(v, Parameter) for v in state_dict.values())
    arrays: Dict[str, Any] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save_dygraph: keys must be str, but received {key!r}")
        array: Any = value.numpy() if isinstance(value, Variable) else value
        if hasattr(array, "__cuda_array_interface__"):
            array = array.get()
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"save_dygraph: '{key}' has non-numeric dtype {array.dtype}")
        arrays[key] = array
    path = base + (PARAMS_SUFFIX if is_params else OPT_SUFFIX)
    _weights.atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_npz(path: str) -> Dict[str, NDArray[Any]]:
    arrays: Dict[str, NDArray[Any]] = _weights.read_npz(path, "load_dygraph")
    return arrays


def _first_existing(explicit: Optional[str], candidates: List[str]) -> Optional[str]:
    if explicit is not None and os.path.exists(explicit):
        return explicit
    return next((c for c in candidates if os.path.exists(c)), None)


def load_dygraph(model_path: PathLike) -> Tuple[Optional[Dict[str, NDArray[Any]]],
                                               Optional[Dict[str, NDArray[Any]]]]:
    """Read the parameters and optimizer state saved under ``model_path``.

    Parameters
    ----------
    model_path : str or path-like
        The path given to :func:`save_dygraph` (files ``+ .pdparams.npz`` /
        ``.pdopt.npz``), of Paddle's pickles (``+ .pdparams`` / ``.pdopt``), or a full
        ``.pt``/``.pth``/``.safetensors`` file name.

    Returns
    -------
    params : dict of str to numpy.ndarray or None
        None when its file does not exist.
    opt : dict of str to numpy.ndarray or None
        None when its file does not exist (always for PyTorch and safetensors files).

    Raises
    ------
    FileNotFoundError
        Neither file exists.
    ValueError
        A file is truncated, corrupt or holds something other than numeric arrays.
    """
    path = os.fspath(model_path)
    ext = os.path.splitext(path)[1].lower()
    if _weights.FORMATS.get(ext) in ("torch", "safetensors"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"load_dygraph: {path!r} does not exist")
        return _weights.load_state(path), None
    base = _base_path(path)
    explicit_params = path if path.endswith((".pdparams", PARAMS_SUFFIX)) else None
    explicit_opt = path if path.endswith((".pdopt", OPT_SUFFIX)) else None
    params_path = _first_existing(explicit_params, [base + PARAMS_SUFFIX, base + ".pdparams"])
    opt_path = _first_existing(explicit_opt, [base + OPT_SUFFIX, base + ".pdopt"])
    if params_path is None and opt_path is None:
        raise FileNotFoundError(f"load_dygraph: none of {base + PARAMS_SUFFIX!r}, "
                                f"{base + '.pdparams'!r}, {base + OPT_SUFFIX!r}, "
                                f"{base + '.pdopt'!r} exists")

    def read(p: str) -> Dict[str, NDArray[Any]]:
        return _load_npz(p) if p.endswith(".npz") else _weights.load_state(p, "paddle")

    return (None if params_path is None else read(params_path),
            None if opt_path is None else read(opt_path))
