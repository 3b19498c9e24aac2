"""Thread count of the CPU kernels.

The kernels run their own OpenMP parallel regions with an explicit thread count, which
comes from, in order: :func:`set_num_threads` (or a ``threadpoolctl`` limit, which sets
it for the duration of the limit), ``CONV3DT_NUM_THREADS``, ``OMP_NUM_THREADS`` (its first
entry; Dask, joblib and many job schedulers set it to 1 in their workers), else the cores
available to the process. Results do not depend on the thread count.

``threadpoolctl`` sees the kernels as a thread pool of its own (``internal_api``
``'conv3dt'``, ``user_api`` ``'openmp'``), so ``threadpool_limits(1)`` limits them too.

A process forked (``multiprocessing``'s 'fork', ``os.fork``) from one whose kernels had
already run on several threads runs its kernels on one thread: GNU OpenMP's thread pool
does not survive a fork, and a child that started a parallel region would wait forever for
the parent's threads. 'spawn' and 'forkserver' children start afresh and use every core.
"""

import contextlib
import os
import threading
from typing import Any, Iterator, Optional, SupportsIndex

__all__ = ["set_num_threads", "get_num_threads", "thread_source"]

ENV_VAR = "CONV3DT_NUM_THREADS"
OMP_ENV_VAR = "OMP_NUM_THREADS"
_lock = threading.Lock()
_num_threads: Optional[int] = None
# A count for the kernels called from one thread only (thread_threads), e.g. a Dask task's.
_local = threading.local()
# Whether this process has run a kernel on several threads (an OpenMP team exists), and
# whether it is a child forked from a process that had.
_team_started = False
_forked_after_team = False


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check(n: Any, name: str) -> int:
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"{name} must be a positive int, got {n!r}")
    count: int = n.__index__()
    if count < 1:
        raise ValueError(f"{name} must be >= 1, got {count}")
    return count


def set_num_threads(n: SupportsIndex) -> None:
    """Use ``n`` threads in the CPU kernels from now on.

    The default is ``$CONV3DT_NUM_THREADS``, else ``$OMP_NUM_THREADS``, else the cores
    available to the process. Results do not depend on the thread count.

    Parameters
    ----------
    n : int
        At least 1.

    Raises
    ------
    TypeError
        ``n`` is not an int.
    ValueError
        ``n`` is less than 1.

    Examples
    --------

    >>> import conv3dt
    >>> conv3dt.set_num_threads(1); conv3dt.get_num_threads()
    1
    """
    global _num_threads
    n = _check(n, "num_threads")
    with _lock:
        _num_threads = n


def _from_env(name: str, value: str) -> int:
    # OMP_NUM_THREADS may list one count per nesting level ("4,2"): the first is ours.
    first = value.split(",")[0].strip() if name == OMP_ENV_VAR else value
    try:
        return _check(int(first), name)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None


def note_parallel(n_threads: int) -> None:
    """Record that a kernel is about to run on ``n_threads`` threads (the backend calls
    this), so that a forked child knows whether its parent had an OpenMP team."""
    global _team_started
    if n_threads > 1:
        _team_started = True


def _after_fork_in_child() -> None:
    global _forked_after_team
    if _team_started:
        _forked_after_team = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def thread_source() -> str:
    """Where the thread count comes from: ``'set_num_threads'``, ``'CONV3DT_NUM_THREADS'``,
    ``'OMP_NUM_THREADS'``, ``'cores'``, ``'thread'`` (a count for the calling thread only,
    as conv3dt.dask sets for its tasks), or ``'fork'`` (one thread in a child forked after
    the kernels ran on several threads)."""
    if _forked_after_team:
        return "fork"
    if getattr(_local, "n", None) is not None:
        return "thread"
    if _num_threads is not None:
        return "set_num_threads"
    for name in (ENV_VAR, OMP_ENV_VAR):
        if os.environ.get(name, "").strip():
            return name
    return "cores"


def get_num_threads() -> int:
    """The number of threads the CPU kernels use.

    Returns
    -------
    int
        See :func:`set_num_threads` for where it comes from; 1 in a process forked after
        the kernels ran on several threads.

    Raises
    ------
    ValueError
        ``CONV3DT_NUM_THREADS`` or ``OMP_NUM_THREADS`` holds no positive integer.
    """
    if _forked_after_team:
        return 1
    n = getattr(_local, "n", None)
    if n is None:
        n = _num_threads
    if n is not None:
        return n
    for name in (ENV_VAR, OMP_ENV_VAR):
        value = os.environ.get(name, "").strip()
        if value:
            return _from_env(name, value)
    return _available_cores()


@contextlib.contextmanager
def thread_threads(n: Optional[int]) -> Iterator[None]:
    """The kernels called from this thread run on ``n`` threads inside the block (None:
    as they are); other threads, and the setting of :func:`set_num_threads`, are not
    touched, so concurrent callers (the tasks of a thread pool) each keep their own."""
    if n is None:
        yield
        return
    n = _check(n, "num_threads")
    previous = getattr(_local, "n", None)
    _local.n = n
    try:
        yield
    finally:
        _local.n = previous


def _register_threadpoolctl() -> None:
    """Make threadpoolctl list and limit the kernels' threads (its documented way for
    third-party pools: a LibController subclass, matched to the kernels' shared library
    by file name and an exported symbol)."""
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    if not hasattr(threadpoolctl, "register"):  # pragma: no cover - threadpoolctl < 3.3
        return

    from . import __version__

    # (threadpoolctl ships no type information: its base class is Any to a type checker.)
    class Conv3dtController(threadpoolctl.LibController):  # type: ignore[misc]
        user_api = "openmp"
        internal_api = "conv3dt"
        filename_prefixes = ("_kernels",)
        check_symbols = ("conv3dt_isa_count",)

        def get_num_threads(self) -> int:
            return get_num_threads()

        def set_num_threads(self, num_threads: int) -> None:
            set_num_threads(num_threads)

        def get_version(self) -> str:
            return __version__

    threadpoolctl.register(Conv3dtController)
