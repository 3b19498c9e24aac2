"""Backend dispatch: the one place that decides whether arrays live on the CPU or a GPU.

An array on a GPU is recognised by ``__cuda_array_interface__`` (CuPy, and other CUDA
array libraries that CuPy can view without a copy); everything else is a NumPy
array-like. CuPy is imported only when such an array is seen.
"""

import numpy as np

__all__ = ["is_gpu_array", "array_module", "backend_for"]


def is_gpu_array(value):
    return hasattr(value, "__cuda_array_interface__")


def _cupy():
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - exercised only without CuPy
        raise RuntimeError(
            "a GPU array was given but CuPy is not installed: install conv3dt's GPU extra, "
            "e.g. `pip install conv3dt[gpu]` (CUDA 12: cupy-cuda12x; CUDA 13: cupy-cuda13x)"
        ) from exc
    return cupy


def array_module(*arrays):
    """``cupy`` if any of ``arrays`` is on a GPU, else ``numpy``."""
    if any(is_gpu_array(a) for a in arrays if a is not None):
        return _cupy()
    return np


def backend_for(*arrays):
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
