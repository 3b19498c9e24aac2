"""A stand-in for CuPy on machines without a GPU: NumPy arrays that the backend
dispatcher takes for GPU arrays, and a 'cupy' module that makes them."""
import types

import numpy as np


class NumpyGpuArray(np.ndarray):
    """A NumPy array that the dispatcher takes for a GPU array."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str,
                "data": (self.__array_interface__["data"][0], False), "version": 3}


def numpy_as_cupy():
    """A stand-in 'cupy' module: NumPy, whose new arrays look like GPU arrays."""
    shim = types.ModuleType("cupy")
    shim.__getattr__ = lambda name: getattr(np, name)
    shim.ndarray = NumpyGpuArray
    shim.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype).view(NumpyGpuArray)
    shim.empty = lambda shape, dtype=float: np.empty(shape, dtype).view(NumpyGpuArray)
    return shim
