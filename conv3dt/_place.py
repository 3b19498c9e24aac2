"""Places: where arrays live, named as PaddlePaddle names them.

``CPUPlace()`` means NumPy arrays in host memory; ``CUDAPlace(i)`` means CuPy arrays on
GPU ``i``. A ``dygraph.guard(place)`` makes one of them current; new parameters and
``to_variable`` results are then moved there with :func:`to_place`.

Example::

    >>> import numpy as np
    >>> from conv3dt._place import CPUPlace, to_place
    >>> float(to_place(np.ones(3), CPUPlace()).sum())
    3.0
"""
import numpy as np


class CPUPlace:
    """Host memory (NumPy arrays)."""

    def __eq__(self, other):
        return isinstance(other, CPUPlace)

    def __hash__(self):
        return hash("CPUPlace")

    def __repr__(self):
        return "CPUPlace"


class CUDAPlace:
    """GPU number ``device_id`` (CuPy arrays). Creating one never needs CuPy; using it does."""

    def __init__(self, device_id=0):
        # bool is an int subclass, but CUDAPlace(True) is surely a mistake.
        if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)) or device_id < 0:
            raise TypeError(f"CUDAPlace(device_id): device_id must be a non-negative int, "
                            f"but received {device_id!r}")
        self.device_id = int(device_id)

    def __eq__(self, other):
        return isinstance(other, CUDAPlace) and other.device_id == self.device_id

    def __hash__(self):
        return hash(("CUDAPlace", self.device_id))

    def __repr__(self):
        return f"CUDAPlace({self.device_id})"


def _check_place(place):
    if place is not None and not isinstance(place, (CPUPlace, CUDAPlace)):
        raise TypeError("place should be conv3dt.CPUPlace() or conv3dt.CUDAPlace(i), "
                        f"but received {type(place).__name__}")
    return place


def _import_cupy():
    from ._backend import cupy_module

    return cupy_module("CUDAPlace (use conv3dt.CPUPlace() on machines without CuPy)")


def is_compiled_with_cuda():
    """True when CuPy can be imported (Paddle's ``fluid.is_compiled_with_cuda``)."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def place_of(array):
    """The place an array lives in."""
    if hasattr(array, "__cuda_array_interface__"):
        return CUDAPlace(array.device.id)
    return CPUPlace()


def to_place(array, place):
    """``array`` moved (copied only if needed) to ``place``; ``place=None`` leaves it where it is."""
    if place is None:
        return array
    on_gpu = hasattr(array, "__cuda_array_interface__")
    if isinstance(place, CPUPlace):
        return array.get() if on_gpu else array
    cupy = _import_cupy()
    if on_gpu and array.device.id == place.device_id:
        return array
    with cupy.cuda.Device(place.device_id):
        return cupy.asarray(array)
