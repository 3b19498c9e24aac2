"""Memory of the CPU backend's large arrays: blocks kept for reuse once their arrays are gone.

NumPy takes an array of more than 32 MiB straight from the operating system (glibc maps
such a block afresh for each allocation and unmaps it when it is freed), and the system
clears every page of it on first touch: about 8 ms for a 67 MB output, up to half the
pass on some shapes (benchmarks/RESULTS.md). conv3dt instead keeps the blocks of its large
outputs and workspace once no array uses them ("idle"), up to a limit, and hands them to
the next arrays of about their size, whose pages are then already in place.

An array from :func:`empty` is a view of a block through a small lease object, the
array's ``base``, that exposes the block by ``__array_interface__``. Every view of the
array keeps the lease alive; when the last one goes, the lease's finalizer gives the block
back. So a block is reused only once no array can reach it.

The limit on idle memory is ``$CONV3DT_CACHE_MIB`` MiB (default 256), or
:func:`set_cache_limit`; :func:`empty_cache` frees the idle blocks now.
"""

import math
import os
import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, SupportsIndex, TypedDict

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["empty", "empty_cache", "set_cache_limit", "get_cache_limit", "cache_info"]

ENV_VAR = "CONV3DT_CACHE_MIB"
_DEFAULT_LIMIT = 256 * 2**20
# Smaller arrays come from NumPy: malloc reuses their memory itself.
_MIN_BYTES = 4 * 2**20
# Blocks are whole multiples of a huge page, so that sizes that differ a little share them.
_GRAIN = 2 * 2**20
# Arrays start on a cache line.
_ALIGN = 64


class CacheInfo(TypedDict):
    """What :func:`cache_info` reports, in bytes (``idle_blocks``: a count)."""

    leased_bytes: int
    idle_bytes: int
    idle_blocks: int
    limit_bytes: int


class _Lease:
    """The base of an array from :func:`empty`: its block, and where in it the array lies."""

    __slots__ = ("__array_interface__", "block", "__weakref__")
    __array_interface__: Dict[str, Any]
    block: NDArray[np.uint8]


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # idle blocks, the least recently given back first
        self._idle: List[NDArray[np.uint8]] = []
        self._leased = 0       # bytes of the blocks that arrays use
        # Blocks given back but not yet in _idle. Finalizers run wherever the last view of
        # an array goes, possibly inside a section that holds the lock (a garbage
        # collection started by an allocation there): they append here and never wait.
        self._returned: List[NDArray[np.uint8]] = []
        self._limit: Optional[int] = None  # None: from the environment

    def limit(self) -> int:
        if self._limit is not None:
            return self._limit
        value = os.environ.get(ENV_VAR, "").strip()
        if not value:
            return _DEFAULT_LIMIT
        try:
            mib = float(value)
        except ValueError:
            mib = -1.0
        if not (mib >= 0 and math.isfinite(mib)):
            raise ValueError(f"{ENV_VAR} must be a number of MiB >= 0, got {value!r}")
        return int(mib * 2**20)

    def _idle_bytes(self) -> int:
        return sum(b.nbytes for b in self._idle)

    def _collect(self, limit: int) -> None:
        """Move the returned blocks to the idle ones, then free the oldest idle blocks
        beyond ``limit`` bytes. Holds the lock."""
        while self._returned:
            block = self._returned.pop(0)
            self._leased -= block.nbytes
            self._idle.append(block)
        while self._idle and self._idle_bytes() > limit:
            self._idle.pop(0)

    def _give_back(self, block: NDArray[np.uint8]) -> None:
        self._returned.append(block)
        if self._lock.acquire(blocking=False):
            try:
                try:
                    limit = self.limit()
                except ValueError:  # the variable was spoiled since: the next call says so
                    limit = _DEFAULT_LIMIT
                self._collect(limit)
            finally:
                self._lock.release()

    def empty(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        limit = self.limit()
        if nbytes < _MIN_BYTES or limit == 0:
            return np.empty(shape, dtype)
        need = nbytes + _ALIGN
        block = None
        with self._lock:
            self._collect(limit)
            # The smallest idle block that holds the array, wasting at most an eighth.
            best = None
            for i, b in enumerate(self._idle):
                if need <= b.nbytes <= need + max(_GRAIN, need // 8) and (
                        best is None or b.nbytes < self._idle[best].nbytes):
                    best = i
            if best is not None:
                block = self._idle.pop(best)
                self._leased += block.nbytes
        if block is None:
            block = np.empty(-(-need // _GRAIN) * _GRAIN, np.uint8)
            with self._lock:
                self._leased += block.nbytes
        address = block.__array_interface__["data"][0]
        lease = _Lease()
        lease.block = block
        lease.__array_interface__ = {
            "version": 3, "shape": shape, "typestr": dtype.str,
            "data": (address + (-address) % _ALIGN, False),
        }
        weakref.finalize(lease, self._give_back, block).atexit = False
        return np.asarray(lease)

    def clear(self) -> None:
        with self._lock:
            self._collect(0)

    def set_limit(self, nbytes: int) -> None:
        with self._lock:
            self._limit = nbytes
            self._collect(nbytes)

    def info(self) -> CacheInfo:
        limit = self.limit()
        with self._lock:
            self._collect(limit)
            return {"leased_bytes": self._leased, "idle_bytes": self._idle_bytes(),
                    "idle_blocks": len(self._idle), "limit_bytes": limit}


_cache = _Cache()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at the fork; the child has only the
    # thread that forked.
    _cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def empty(shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
    """An uninitialised C-contiguous NumPy array, from the cache when it is large."""
    return _cache.empty(shape, dtype)


def empty_cache() -> None:
    """Free the memory that conv3dt keeps for reuse (arrays in use keep theirs).

    Notes
    -----
    conv3dt keeps the memory of its large CPU outputs (4 MiB and more) once no array uses
    it, up to :func:`get_cache_limit` bytes, and reuses it for later outputs: fresh memory
    from the system costs the time to clear its pages on first touch.

    Examples
    --------

    >>> import conv3dt
    >>> conv3dt.empty_cache()
    >>> conv3dt.cache_info()["idle_bytes"]
    0
    """
    _cache.clear()


def set_cache_limit(nbytes: SupportsIndex) -> None:
    """Keep at most ``nbytes`` bytes of idle memory for reuse.

    Idle memory beyond the new limit is freed now.

    Parameters
    ----------
    nbytes : int
        0 keeps none. The default is ``$CONV3DT_CACHE_MIB`` MiB, else 256 MiB.

    Raises
    ------
    TypeError
        ``nbytes`` is not an int.
    ValueError
        ``nbytes`` is negative.
    """
    if isinstance(nbytes, bool) or not hasattr(nbytes, "__index__"):
        raise TypeError(f"nbytes must be an int >= 0, got {nbytes!r}")
    nbytes = nbytes.__index__()
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    _cache.set_limit(nbytes)


def get_cache_limit() -> int:
    """The most idle memory conv3dt keeps for reuse.

    Returns
    -------
    int
        In bytes (see :func:`set_cache_limit`).

    Raises
    ------
    ValueError
        ``CONV3DT_CACHE_MIB`` holds no number >= 0 (and no limit was set).
    """
    return _cache.limit()


def cache_info() -> CacheInfo:
    """The state of the memory cache.

    Returns
    -------
    dict
        ``leased_bytes`` (memory of cached blocks that arrays use), ``idle_bytes`` and
        ``idle_blocks`` (kept for reuse), and ``limit_bytes`` (:func:`get_cache_limit`).
    """
    return _cache.info()
