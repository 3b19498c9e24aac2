"""Weights from other tools, read safely: Paddle pickles, PyTorch files, safetensors, .npz.

One entry point for programs: :func:`load_state` (path -> ``{name: numpy array}``); the
front end's ``conv3dt.load`` / ``conv3dt.save`` and ``dygraph.load_dygraph`` are built on
:func:`read` and :func:`write`.

Formats, chosen by the file's extension (a file whose extension is none of these is
recognised by its first bytes):

==========================  ==============================================================
``.pdparams`` ``.pdopt``     Paddle's ``paddle.save`` / ``fluid.save_dygraph``: a pickle of
                             a dict of NumPy arrays. Read with a restricted unpickler that
                             builds only NumPy arrays, dtypes and scalars, dicts, lists,
                             tuples, sets, numbers and strings; any other class or function
                             a pickle asks for is refused before it is looked up, so a
                             hostile file cannot run code. (A ``.pdparams`` that is a zip
                             archive is read as ``.npz``.)
``.pt`` ``.pth`` ``.bin``    PyTorch's ``torch.save``: read by ``torch.load(path,
                             weights_only=True, map_location='cpu')`` (PyTorch's own safe
                             loader; needs ``pip install torch``). bfloat16 tensors become
                             float32 (exactly: every bfloat16 is a float32).
``.safetensors``             Hugging Face's format, read and written with the
                             ``safetensors`` package (``pip install "conv3dt[weights]"``).
``.npz``                     NumPy archives as ``save_dygraph`` writes them: only numeric
                             arrays, each header checked against its stored size before
                             anything is allocated; pickled entries are refused.
==========================  ==============================================================

Every problem with a file (unknown format, truncation, corruption, a refused class, a
missing optional package) is a :class:`WeightsFileError` (a ``ValueError``) whose message
names the file and the format it was read as.

Writes are atomic: the data goes to a temporary file in the destination's folder, is
flushed to disk, and replaces the destination with ``os.replace``; a write that fails
midway (disk full, a file size limit, an exception) leaves the previous file as it was.

Example::

    >>> import os, tempfile, numpy as np
    >>> from conv3dt import _weights
    >>> path = os.path.join(tempfile.mkdtemp(), "model.pdparams")
    >>> _weights.write({"weight": np.ones((2, 3, 1, 1, 1), "float32")}, path)
    >>> state = _weights.load_state(path)
    >>> state["weight"].shape, state["weight"].dtype
    ((2, 3, 1, 1, 1), dtype('float32'))
"""
from __future__ import annotations

import collections
import io
import numbers
import os
import pickle
import tempfile
import zipfile
import zlib
from typing import (IO, Any, BinaryIO, Callable, Dict, Literal, Optional, Set, Tuple, Union,
                    cast)

import numpy as np
from numpy.typing import NDArray

__all__ = ["WeightsFileError", "load_state", "read", "write", "save", "load", "format_of",
           "atomic_write", "FORMATS"]


class WeightsFileError(ValueError):
    """A weights file that cannot be read (or written) as the format it claims to be.

    A :class:`ValueError`; its message names the file and the format it was read as.
    """


# A file's path: a str or an os.PathLike (pathlib.Path).
PathArg = Union[str, "os.PathLike[str]"]
# The formats' names, as ``format=`` takes them.
FormatName = Literal["paddle", "torch", "safetensors", "npz"]
# A state dict read from a file: names -> arrays.
StateDict = Dict[str, NDArray[Any]]

# extension -> format name (the names used in messages and by ``format=``)
FORMATS: Dict[str, FormatName] = {
    ".pdparams": "paddle", ".pdopt": "paddle", ".pdtensor": "paddle", ".pkl": "paddle",
    ".pt": "torch", ".pth": "torch", ".bin": "torch",
    ".safetensors": "safetensors",
    ".npz": "npz",
}
_LABELS: Dict[str, str] = {"paddle": "Paddle pickle (.pdparams/.pdopt)", "torch": "PyTorch file (.pt/.pth)",
           "safetensors": "safetensors file", "npz": "NumPy .npz archive"}

# Keys paddle.save adds to a state dict beside the arrays (see _unpack_paddle).
NAME_TABLE_KEY = "StructuredToParameterName@@"
BIG_PARAM_KEY = "UnpackBigParamInfor@@"


def _fail(path: PathArg, fmt: str, reason: str) -> WeightsFileError:
    label = _LABELS.get(fmt, fmt)
    return WeightsFileError(f"cannot read {os.fspath(path)!r} as a {label}: {reason}")


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------

def _umask() -> int:
    # os.umask can only be read by setting it, which races with other threads; Linux
    # shows it in /proc.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: PathArg, write_to: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically: ``write_to(f)`` on a temporary file beside ``path``, then
    a rename to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; its folder is created as needed.
    write_to : callable
        Called with the temporary file, open for binary writing.

    Raises
    ------
    OSError, or whatever ``write_to`` raises
        On any failure the temporary file is removed and ``path`` is untouched.

    Notes
    -----
    The data is flushed to disk (``fsync``) before the rename, and the folder after it.
    The new file gets the permissions an ordinary ``open(path, 'wb')`` would give it
    (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_to(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # The rename itself reaches the disk only when the folder does (POSIX); where folders
    # cannot be opened (Windows) there is nothing to do.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Paddle pickles, restricted
# ---------------------------------------------------------------------------------------

def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> NDArray[Any]:
    # ndarray.__reduce__ always passes an empty shape; the data comes with __setstate__,
    # which checks that it has the size the header claims. A hostile shape here would
    # only make numpy allocate a huge empty array, so it is refused.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array reconstruction of {subtype!r}, not numpy.ndarray")
    if int(np.prod(shape, dtype=object)) != 0:
        raise pickle.UnpicklingError(f"array reconstruction with shape {shape!r} (NumPy "
                                     "writes an empty one)")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> NDArray[Any]:
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _scalar(dtype: Any, data: Any = None) -> Any:
    if isinstance(data, str):  # a Python 2 pickle read with encoding='latin1'
        data = data.encode("latin1")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("a NumPy scalar of object dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Pickle protocol 2 writes a bytes object as _codecs.encode(str, 'latin1'); only that
    # form is accepted (other codecs would widen what a file can make us do).
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__} and "
                                     f"encoding {encoding!r}")
    return text.encode("latin1")


class _Constructor:
    """One of the functions above as the unpickler sees it: callable, but a pickle's
    BUILD opcode (which sets attributes of the object on the stack) is refused on it."""
    __slots__ = ("_func",)

    _func: Callable[..., Any]

    def __init__(self, func: Callable[..., Any]) -> None:
        object.__setattr__(self, "_func", func)

    def __call__(self, *args: Any) -> Any:
        return self._func(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"the pickle sets attributes of {self._func.__name__}")


# The only globals a Paddle state dict pickle needs: what NumPy writes for arrays, dtypes
# and scalars (module numpy.core before NumPy 2, numpy._core from NumPy 2 on), and the
# containers. Everything here builds data; nothing runs user-chosen code. (The classes
# are immutable C types, so BUILD cannot change them either.)
_SAFE_GLOBALS: Dict[Tuple[str, str], Any] = {}
for _core in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(_core + ".multiarray", "_reconstruct")] = _Constructor(_reconstruct)
    _SAFE_GLOBALS[(_core + ".multiarray", "scalar")] = _Constructor(_scalar)
    _SAFE_GLOBALS[(_core + ".numeric", "_frombuffer")] = _Constructor(_frombuffer)
_SAFE_GLOBALS.update({
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _Constructor(_latin1_encode),
})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], path: str) -> None:
        super().__init__(file, encoding="latin1")  # as paddle.load: Python 2 pickles too
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # Python 2 pickles
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsFileError(
                f"refusing to load {self._path!r} (Paddle pickle): it asks for the Python "
                f"object {module}.{name}, which a Paddle state dict never contains, and "
                "building it could run arbitrary code. Only NumPy arrays, dicts, lists, "
                "tuples, numbers and strings are accepted.") from None

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsFileError(f"refusing to load {self._path!r} (Paddle pickle): it uses "
                               "persistent ids, which Paddle never writes")


def _read_paddle(path: PathArg) -> Tuple[Any, Dict[str, str]]:
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):  # a zip: save_dygraph's .npz under a Paddle name
            return _read_npz(path)
        f.seek(0)
        try:
            obj = _RestrictedUnpickler(f, os.fspath(path)).load()
            if f.read(1):
                raise ValueError("data after the end of the pickle")
            _check_arrays(obj, path, "paddle")
            return _unpack_paddle(obj)
        except WeightsFileError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError,
                RecursionError) as exc:
            raise _fail(path, "paddle", f"{type(exc).__name__}: {exc}") from exc


_DATA_LEAVES = (bool, int, float, complex, str, bytes, bytearray, type(None))


def _check_arrays(obj: Any, path: PathArg, fmt: str, data_only: bool = True) -> None:
    """``obj``'s arrays are numeric or bool (object arrays would be pickles); with
    ``data_only``, ``obj`` is also nothing but containers of arrays, NumPy scalars,
    numbers, strings and None: not classes or functions, which a crafted pickle could
    otherwise return. (PyTorch's own safe loader decides what else its files hold.)"""
    seen: Set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject or item.dtype.kind not in "biufc":
                raise _fail(path, fmt, f"it holds an array of non-numeric dtype {item.dtype}")
        elif isinstance(item, np.generic):
            if item.dtype.kind not in "biufc":
                raise _fail(path, fmt, f"it holds a NumPy scalar of dtype {item.dtype}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif data_only and not isinstance(item, _DATA_LEAVES):
            raise _fail(path, fmt, f"it holds a {type(item).__name__} object, not data")


def _unpack_paddle(obj: Any) -> Tuple[Any, Dict[str, str]]:
    """Undo what paddle.save adds: big arrays split into slices (protocols 2 and 3), the
    structured-name -> parameter-name table (returned apart), and (name, array) tuples
    that stand for Tensors inside nested objects."""
    names: Dict[str, str] = {}
    if isinstance(obj, dict):
        obj = dict(obj) if not isinstance(obj, collections.OrderedDict) else obj.copy()
        info = obj.pop(BIG_PARAM_KEY, None)
        if isinstance(info, dict):
            for key, value in info.items():
                parts = [obj.pop(part) for part in value["slices"]]
                obj[key] = np.concatenate(parts).reshape(value["OriginShape"])
        table = obj.pop(NAME_TABLE_KEY, None)
        if isinstance(table, dict):
            names = {k: v for k, v in table.items() if isinstance(v, str)}
    return _untuple(obj, {}), names


def _untuple(obj: Any, memo: Dict[int, Any]) -> Any:
    # paddle.save pickles a Tensor inside a nested object as the tuple (name, ndarray).
    if id(obj) in memo:
        return memo[id(obj)]
    out: Any
    if (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], np.ndarray)):
        out = obj[1]
    elif isinstance(obj, dict):
        out = type(obj)((k, _untuple(v, memo)) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        out = type(obj)(_untuple(v, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = out
    return out


def _write_paddle(obj: Any, f: IO[bytes], protocol: int = 4) -> None:
    pickle.dump(obj, f, protocol=protocol)


# ---------------------------------------------------------------------------------------
# PyTorch, safetensors, npz
# ---------------------------------------------------------------------------------------

def _read_torch(path: PathArg) -> Tuple[Any, Dict[str, str]]:
    try:
        import torch
    except ImportError:
        raise _fail(path, "torch", "reading PyTorch files needs PyTorch, which is not "
                    "installed: pip install torch (or save the weights with safetensors)"
                    ) from None
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types: all mean "not a file we can read"
        raise _fail(path, "torch", f"{type(exc).__name__}: {exc}") from exc

    def convert(item: Any, memo: Dict[int, Any]) -> Any:
        if id(item) in memo:
            return memo[id(item)]
        out: Any
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            try:
                out = np.array(t.numpy(), copy=True)
            except (TypeError, RuntimeError) as exc:
                raise _fail(path, "torch", f"a tensor of dtype {t.dtype} has no NumPy "
                            f"equivalent: {exc}") from None
        elif isinstance(item, dict):
            out = {k: convert(v, memo) for k, v in item.items()}
        elif isinstance(item, list):
            out = [convert(v, memo) for v in item]
        elif isinstance(item, tuple):
            out = tuple(convert(v, memo) for v in item)
        else:
            out = item
        memo[id(item)] = out
        return out

    obj = convert(obj, {})
    _check_arrays(obj, path, "torch", data_only=False)
    return obj, {}


def _import_safetensors(path: PathArg, verb: str) -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise WeightsFileError(
            f"{verb} {os.fspath(path)!r} as a safetensors file needs the safetensors "
            "package, which is not installed: pip install safetensors (or "
            "pip install \"conv3dt[weights]\")") from None
    return safetensors.numpy


def _read_safetensors(path: PathArg) -> Tuple[Any, Dict[str, str]]:
    st = _import_safetensors(path, "reading")
    try:
        with open(path, "rb") as f:
            data = f.read()
        return dict(st.load(data)), {}
    except Exception as exc:  # SafetensorError, or NumPy refusing a dtype (bfloat16)
        raise _fail(path, "safetensors", f"{type(exc).__name__}: {exc}") from exc


def _write_safetensors(state: Dict[str, Any], path: PathArg, f: IO[bytes]) -> None:
    st = _import_safetensors(path, "writing")
    f.write(st.save({k: np.ascontiguousarray(v) for k, v in state.items()}))


def _read_npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> NDArray[Any]:
    """One ``.npy`` member of an archive, checked before anything is allocated.

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


def read_npz(path: PathArg, label: str = "load_dygraph") -> StateDict:
    """``{name: array}`` of an ``.npz`` archive of numeric arrays (nothing is unpickled).

    Parameters
    ----------
    path : str or os.PathLike
        The archive.
    label : str, default 'load_dygraph'
        The caller's name, at the start of error messages.

    Returns
    -------
    dict of str to numpy.ndarray
        One array per ``.npy`` member, named without the extension.

    Raises
    ------
    WeightsFileError
        If the file is not a zip archive of ``.npy`` members of numeric dtypes whose
        headers agree with their stored sizes (pickled entries are refused from their
        headers, never unpickled).
    """
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        out: StateDict = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"entry '{info.filename}' is not an .npy array")
                out[info.filename[:-4]] = _read_npz_member(archive, info)
        return out
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            RuntimeError, NotImplementedError) as exc:
        # Pickled or non-numeric entries, truncation, bad headers, unsupported compression:
        # all mean "this is not a checkpoint we can trust". (Pickles are never unpickled:
        # an object dtype is refused from its header.)
        raise WeightsFileError(f"{label}: cannot read {os.fspath(path)!r} "
                               f"(NumPy .npz archive): {exc}") from exc


def _read_npz(path: PathArg) -> Tuple[Any, Dict[str, str]]:
    return read_npz(path, "load"), {}


def _write_npz(state: Dict[str, Any], f: IO[bytes]) -> None:
    np.savez(f, **state)


# ---------------------------------------------------------------------------------------
# Format detection, read, write
# ---------------------------------------------------------------------------------------

def _sniff(path: str) -> Optional[FormatName]:
    """The format of a file from its first bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"
        return None
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "paddle"  # a pickle: read restricted, so trying it is safe
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 0 < n <= os.path.getsize(path) - 8:
            return "safetensors"
    return None


def format_of(path: PathArg, format: Optional[str] = None) -> FormatName:
    """The format name of a weights file.

    Parameters
    ----------
    path : str or os.PathLike
        The file (it need exist only for telling the format by its content).
    format : {'paddle', 'torch', 'safetensors', 'npz'}, optional
        The format, when known: returned as it is, after a check.

    Returns
    -------
    str
        ``format`` if given, else the format of ``path``'s extension (see
        :data:`FORMATS`), else, for an existing file, the format its first bytes show.

    Raises
    ------
    ValueError
        If ``format`` is none of the names.
    WeightsFileError
        If neither the extension nor the content tells the format.
    """
    path = os.fspath(path)
    if format is not None:
        if format not in _LABELS:
            raise ValueError(f"format must be one of {sorted(_LABELS)}, "
                             f"but received {format!r}")
        return cast(FormatName, format)  # one of _LABELS' keys, checked above
    ext = os.path.splitext(path)[1].lower()
    if ext in FORMATS:
        return FORMATS[ext]
    found = _sniff(path) if os.path.isfile(path) else None
    if found is None:
        raise WeightsFileError(
            f"cannot tell the format of {path!r}: its extension {ext or '(none)'!r} is none "
            f"of {', '.join(sorted(FORMATS))}, and its content is none of "
            f"{', '.join(_LABELS.values())}")
    return found


_READERS: Dict[str, Callable[[PathArg], Tuple[Any, Dict[str, str]]]] = {"paddle": _read_paddle, "torch": _read_torch,
            "safetensors": _read_safetensors, "npz": _read_npz}


def read(path: PathArg, format: Optional[str] = None) -> Tuple[Any, Dict[str, str]]:
    """The object stored in a weights file, and Paddle's table of parameter names.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    format : {'paddle', 'torch', 'safetensors', 'npz'}, optional
        Default: told by :func:`format_of`.

    Returns
    -------
    obj : object
        What the file stores: a dict of :class:`numpy.ndarray` for a state dict, nested
        dicts and lists as stored.
    names : dict of str to str
        For Paddle files, ``{structured name: parameter name}``, the table that
        ``paddle.save`` keeps beside a state dict; empty otherwise.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        If ``path`` is missing or a folder.
    WeightsFileError
        If the file cannot be read as its format (see the module's docstring).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory, not a weights file")
    return _READERS[format_of(path, format)](path)


def _flatten(obj: Any, prefix: str, out: StateDict, seen: Set[int]) -> None:
    if isinstance(obj, (dict, list, tuple)):
        # A container met twice (shared, or containing itself) would repeat its entries
        # under several names, exponentially many for a crafted file.
        if id(obj) in seen:
            raise ValueError(f"the container at {prefix or '(top)'!r} appears twice")
        seen.add(id(obj))
        items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out, seen)
    elif isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, (numbers.Number, np.generic)) and not isinstance(obj, (bool, np.bool_)):
        out[prefix] = np.asarray(obj)
    # None, str, bytes, bools: metadata (a training step's name, a flag), not weights


def load_state(path: PathArg, format: Optional[str] = None) -> StateDict:
    """``{name: numpy array}`` from a weights file of any supported format.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pdparams``/``.pdopt`` (Paddle), ``.pt``/``.pth``/``.bin`` (PyTorch),
        ``.safetensors`` or ``.npz`` file; another extension is told by its content.
    format : {'paddle', 'torch', 'safetensors', 'npz'}, optional
        The format, instead of the one the extension or the content tells.

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays by name. Nested dicts and lists (a checkpoint ``{'model': {...},
        'epoch': 3}``) are flattened with dotted names (``'model.weight'``,
        ``'epoch'``); numbers become 0-d arrays; strings, None and bools are dropped.
        Paddle's name table is not part of the result.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        If ``path`` is missing or a folder.
    WeightsFileError
        If the file cannot be read as its format, or holds no dict.

    Notes
    -----
    ``conv3dt run --weights FILE`` calls this for a file and reads ``'weight'`` and
    ``'bias'`` (or a single ``'<prefix>.weight'``) from the result.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from conv3dt import _weights
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> np.savez(path, weight=np.ones((2, 3, 1, 1, 1), "float32"))
    >>> sorted(_weights.load_state(path))
    ['weight']
    """
    obj, _ = read(path, format)
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{os.fspath(path)!r} holds a {type(obj).__name__}, not a "
                               "state dict (a dict of named arrays)")
    out: StateDict = {}
    try:
        _flatten(obj, "", out, set())
    except (ValueError, RecursionError) as exc:
        raise WeightsFileError(f"cannot read {os.fspath(path)!r} as a state dict: "
                               f"{exc}") from None
    return out


def _to_numpy(value: Any, where: str) -> NDArray[Any]:
    from .autograd import Variable
    if isinstance(value, Variable):
        value = value._data
    if hasattr(value, "__cuda_array_interface__"):
        value = value.get()
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            raise TypeError(f"save: {where} has non-numeric dtype {value.dtype}")
        return value
    raise TypeError(f"save: {where} is a {type(value).__name__}, not an array")


def to_saveable(obj: Any, where: str = "the object") -> Any:
    """``obj`` with every Tensor/Variable (and CuPy array) as a NumPy array.

    Parameters
    ----------
    obj : object
        A Tensor, an array, or dicts, lists and tuples of them, numbers, strings and None.
    where : str, default 'the object'
        How error messages name ``obj``.

    Returns
    -------
    object
        ``obj`` with the same containers (an ``OrderedDict`` stays one), the arrays
        as :class:`numpy.ndarray`.

    Raises
    ------
    TypeError
        For anything else (naming where it is), or an array of a non-numeric dtype.
    """
    from .autograd import Variable
    if isinstance(obj, (Variable, np.ndarray)) or hasattr(obj, "__cuda_array_interface__"):
        return _to_numpy(obj, where)
    if isinstance(obj, dict):
        out: Dict[Any, Any] = (type(obj)() if isinstance(obj, collections.OrderedDict)
                               else {})
        for key, value in obj.items():
            out[key] = to_saveable(value, f"entry {key!r}")
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_saveable(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if obj is None or isinstance(obj, (str, bytes, bool, numbers.Number, np.generic)):
        return obj
    raise TypeError(f"save: {where} is a {type(obj).__name__}; only Tensors, NumPy arrays, "
                    "dicts, lists, tuples, numbers and strings can be saved")


def write(obj: Any, path: PathArg, format: Optional[str] = None, protocol: int = 4) -> None:
    """Write ``obj`` to a weights file atomically (see :func:`atomic_write`).

    Parameters
    ----------
    obj : object
        A state dict, or nested dicts and lists of Tensors, arrays and numbers.
    path : str or os.PathLike
        The file; its extension chooses the format: safetensors for ``.safetensors``,
        an archive for ``.npz``, else a Paddle pickle (as ``paddle.save`` does).
    format : {'paddle', 'safetensors', 'npz'}, optional
        The format, instead of the extension's.
    protocol : int, default 4
        The pickle protocol of a Paddle file, 2 to 4.

    Raises
    ------
    TypeError
        For objects that cannot be saved, or a safetensors/npz file of anything but a
        flat dict of str to arrays.
    ValueError
        For a PyTorch format, an empty file name or a bad ``protocol``.
    IsADirectoryError
        If ``path`` is a folder.
    WeightsFileError
        If safetensors is asked for and not installed.
    """
    from .autograd import Variable
    path = os.fspath(path)
    if os.path.basename(path) == "":
        raise ValueError(f"save: path must be dirname/filename, but the file name is empty "
                         f"in {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path!r} is a directory")
    ext = os.path.splitext(path)[1].lower()
    fmt = format or FORMATS.get(ext, "paddle")
    if fmt == "torch":
        raise ValueError("save: conv3dt does not write PyTorch files; use .safetensors, "
                         "which PyTorch reads with safetensors.torch.load_file")
    data = to_saveable(obj)
    if fmt in ("safetensors", "npz"):
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise TypeError(f"save: a {_LABELS[fmt]} holds a flat dict of str -> array")
        for key, value in data.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"save: entry {key!r} is a {type(value).__name__}; a "
                                f"{_LABELS[fmt]} holds arrays only")
        if fmt == "safetensors":
            _import_safetensors(path, "writing")  # fail before creating anything
            atomic_write(path, lambda f: _write_safetensors(data, path, f))
        else:
            atomic_write(path, lambda f: _write_npz(data, f))
        return
    if isinstance(protocol, bool) or not isinstance(protocol, int) or not 2 <= protocol <= 4:
        raise ValueError(f"save: protocol must be 2, 3 or 4, but received {protocol!r}")
    if isinstance(data, dict) and isinstance(obj, dict):
        # As paddle.save: a state dict of Tensors carries their parameter names.
        table = {k: v.name for k, v in obj.items() if isinstance(v, Variable)}
        if table:
            data = type(data)(data)
            data[NAME_TABLE_KEY] = table
    buffer = io.BytesIO()
    _write_paddle(data, buffer, protocol)  # pickle fully first: a failure writes nothing
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


# ---------------------------------------------------------------------------------------
# paddle.save / paddle.load
# ---------------------------------------------------------------------------------------

def save(obj: Any, path: PathArg, protocol: int = 4, **configs: Any) -> None:
    """Save ``obj`` to ``path``, as ``paddle.save``.

    Parameters
    ----------
    obj : object
        A state dict (``layer.state_dict()``, ``optimizer.state_dict()``) or nested
        dicts/lists of Tensors, arrays and numbers.
    path : str or os.PathLike
        The file: Paddle's format (a pickle of NumPy arrays, ``.pdparams`` by
        convention, which ``paddle.load`` reads), or safetensors for a path ending in
        ``.safetensors``, or an ``.npz`` archive for ``.npz``. Folders are created as
        needed.
    protocol : int, default 4
        The pickle protocol, 2 to 4.
    **configs
        ``use_binary_format`` is accepted for Paddle's signature and ignored.

    Raises
    ------
    TypeError
        For an unknown keyword or objects that cannot be saved.
    ValueError
        For a ``.pt``/``.pth`` path or a bad ``protocol``.

    Notes
    -----
    Written atomically: a save that fails midway leaves an earlier file at ``path`` as
    it was.

    Examples
    --------
    >>> import os, tempfile, conv3dt as paddle
    >>> conv = paddle.nn.Conv3DTranspose(2, 3, 2)
    >>> path = os.path.join(tempfile.mkdtemp(), "conv.pdparams")
    >>> paddle.save(conv.state_dict(), path)
    >>> state = paddle.load(path)
    >>> sorted(state), type(state["weight"]).__name__
    (['bias', 'weight'], 'Variable')
    >>> _ = conv.set_state_dict(state)
    """
    unknown = set(configs) - {"use_binary_format"}
    if unknown:
        raise TypeError(f"save() got unexpected keyword argument(s) {sorted(unknown)}")
    write(obj, path, protocol=protocol)


def load(path: PathArg, **configs: Any) -> Any:
    """Load what :func:`save` (or ``paddle.save``, ``torch.save``, safetensors,
    ``save_dygraph``) wrote to ``path``, as ``paddle.load``.

    Parameters
    ----------
    path : str or os.PathLike
        The file (see :mod:`conv3dt._weights` for the formats).
    **configs
        ``return_numpy=True``: arrays as :class:`numpy.ndarray` instead of Tensors.
        ``keep_name_table=True``: keep Paddle's ``'StructuredToParameterName@@'`` entry.
        ``model_filename`` and ``params_filename`` are accepted and ignored.

    Returns
    -------
    object
        What was saved, the arrays as Tensors (``stop_gradient=True``; named after the
        parameters when the file has Paddle's name table) or NumPy arrays.

    Raises
    ------
    TypeError
        For an unknown keyword.
    FileNotFoundError
        If ``path`` is missing.
    WeightsFileError
        If the file cannot be read. Pickles are read with the restricted unpickler
        described in this module: a file that asks for anything but arrays and
        containers is refused, never executed.
    """
    from .autograd import Variable
    unknown = set(configs) - {"return_numpy", "keep_name_table", "model_filename",
                              "params_filename"}
    if unknown:
        raise TypeError(f"load() got unexpected keyword argument(s) {sorted(unknown)}")
    return_numpy = bool(configs.get("return_numpy", False))
    obj, names = read(path)

    memo: Dict[int, Any] = {}  # shared objects are converted once (a crafted DAG stays linear)

    def wrap(item: Any, name: Optional[str] = None) -> Any:
        if id(item) in memo:
            return memo[id(item)]
        out: Any
        if isinstance(item, np.ndarray):
            out = item if return_numpy else Variable(item, name=name, stop_gradient=True)
        elif isinstance(item, dict):
            out = type(item)((k, wrap(v, names.get(k) if item is obj else None))
                             for k, v in item.items())
        elif isinstance(item, list):
            out = [wrap(v) for v in item]
        elif isinstance(item, tuple):
            out = tuple(wrap(v) for v in item)
        else:
            return item
        memo[id(item)] = out
        return out

    try:
        out = wrap(obj)
    except RecursionError:
        raise WeightsFileError(f"cannot read {os.fspath(path)!r}: nested too deeply") from None
    if configs.get("keep_name_table") and isinstance(out, dict) and names:
        out[NAME_TABLE_KEY] = dict(names)
    return out
