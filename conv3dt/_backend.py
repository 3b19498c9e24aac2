"""Backend dispatch: the one place that decides whether arrays live on the CPU or a GPU.

An array on a GPU is recognised by ``__cuda_array_interface__`` (CuPy, and other CUDA
array libraries that CuPy can view without a copy) or by a DLPack device of CUDA memory;
everything else is a NumPy array-like. CuPy is imported only when such an array is seen.
"""

from types import ModuleType
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["is_gpu_array", "array_module", "backend_for", "dispatch"]

# DLPack device types of memory that CuPy reads (kDLCUDA, kDLCUDAManaged).
_DLPACK_GPU_DEVICES = (2, 13)


def is_gpu_array(value: Any) -> bool:
    if hasattr(value, "__cuda_array_interface__"):
        return True
    if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack_device__"):
        return False
    try:
        return int(value.__dlpack_device__()[0]) in _DLPACK_GPU_DEVICES
    except Exception:  # noqa: BLE001 - not a usable DLPack producer: not a GPU array
        return False


def cupy_module(what: str = "a GPU array") -> Any:
    """CuPy, or a RuntimeError saying that ``what`` (a GPU array, a CUDA tensor, ...)
    needs it and how to install it. The one place that imports CuPy on demand."""
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - exercised only without CuPy
        raise RuntimeError(
            f"{what} was given: conv3dt computes it with CuPy, which is not installed; "
            "install conv3dt's GPU extra, e.g. `pip install \"conv3dt[gpu]\"` (CUDA 12: "
            "cupy-cuda12x; CUDA 13: cupy-cuda13x)"
        ) from exc
    return cupy


def array_module(*arrays: Any) -> Any:
    """``cupy`` if any of ``arrays`` is on a GPU, else ``numpy``."""
    if any(is_gpu_array(a) for a in arrays if a is not None):
        return cupy_module()
    return np


def backend_for(*arrays: Any) -> ModuleType:
    """The backend module (``_cpu`` or ``_cuda``) that computes on ``arrays``."""
    if any(is_gpu_array(a) for a in arrays if a is not None):
        if not all(is_gpu_array(a) for a in arrays if a is not None):
            raise TypeError(
                "all arrays must be on the same device: got a mix of GPU and CPU arrays"
            )
        from . import _cuda

        return _cuda
    from . import _cpu

    return _cpu


_cpu_backend: Optional[ModuleType] = None


def dispatch(*arrays: Any) -> Tuple[Any, Any]:
    """``(backend_for(*arrays), array_module(*arrays))``, at once for NumPy arrays."""
    global _cpu_backend
    for a in arrays:
        if a is not None and type(a) is not np.ndarray:
            return backend_for(*arrays), array_module(*arrays)
    if _cpu_backend is None:
        from . import _cpu

        _cpu_backend = _cpu
    return _cpu_backend, np
