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
from typing import Any, Optional, Union

import numpy as np


class CPUPlace:
    """Host memory (NumPy arrays)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CPUPlace)

    def __hash__(self) -> int:
        return hash("CPUPlace")

    def __repr__(self) -> str:
        return "CPUPlace"


class CUDAPlace:
    """GPU number ``device_id`` (CuPy arrays). Creating one never needs CuPy; using it does."""

    def __init__(self, device_id: int = 0) -> None:
        # bool is an int subclass, but CUDAPlace(True) is surely a mistake.
        if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)) or device_id < 0:
            raise TypeError(f"CUDAPlace(device_id): device_id must be a non-negative int, "
                            f"but received {device_id!r}")
        self.device_id = int(device_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CUDAPlace) and other.device_id == self.device_id

    def __hash__(self) -> int:
        return hash(("CUDAPlace", self.device_id))

    def __repr__(self) -> str:
        return f"CUDAPlace({self.device_id})"


# Where an array lives.
Place = Union[CPUPlace, CUDAPlace]


def _check_place(place: Any) -> Optional[Place]:
    if place is not None and not isinstance(place, (CPUPlace, CUDAPlace)):
        raise TypeError("place should be conv3dt.CPUPlace() or conv3dt.CUDAPlace(i), "
                        f"but received {type(place).__name__}")
    return place


def _import_cupy() -> Any:
    from ._backend import cupy_module

    return cupy_module("CUDAPlace (use conv3dt.CPUPlace() on machines without CuPy)")


def is_compiled_with_cuda() -> bool:
    """True when CuPy can be imported (Paddle's ``fluid.is_compiled_with_cuda``)."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def place_of(array: Any) -> Place:
    """The place an array lives in."""
    if hasattr(array, "__cuda_array_interface__"):
        return CUDAPlace(array.device.id)
    return CPUPlace()


def to_place(array: Any, place: Optional[Place]) -> Any:
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
