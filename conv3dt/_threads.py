"""Thread count of the CPU kernels, and keeping BLAS single-threaded inside them.

The kernels run their own OpenMP threads and call BLAS from each of them; a BLAS that
also spawned threads would oversubscribe the cores. :func:`blas_single_threaded` limits
every BLAS library loaded in the process to one thread for the duration of a kernel call
and restores it afterwards, so a user's own NumPy matrix products keep their threads.
"""

import contextlib
import os
import threading

__all__ = ["set_num_threads", "get_num_threads", "blas_single_threaded"]

ENV_VAR = "CONV3DT_NUM_THREADS"
_lock = threading.Lock()
_num_threads = None
_blas = None


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check(n, name):
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"{name} must be a positive int, got {n!r}")
    n = n.__index__()
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def set_num_threads(n):
    """Use ``n`` threads in the CPU kernels (default: ``$CONV3DT_NUM_THREADS``, else the
    cores available to the process). Results do not depend on the thread count.

    >>> import conv3dt
    >>> conv3dt.set_num_threads(1); conv3dt.get_num_threads()
    1
    """
    global _num_threads
    n = _check(n, "num_threads")
    with _lock:
        _num_threads = n


def get_num_threads():
    """The number of threads the CPU kernels use."""
    n = _num_threads
    if n is not None:
        return n
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return _available_cores()
    try:
        return _check(int(value), ENV_VAR)
    except (TypeError, ValueError):
        raise ValueError(f"{ENV_VAR} must be a positive integer, got {value!r}") from None


# Kernel calls in flight (from any Python thread) and the limiter that holds BLAS at one
# thread for them: the first call to enter limits BLAS, the last to leave restores it.
# Without the count, two overlapping calls could each save the other's limit and leave the
# process's BLAS single-threaded for good.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


def _blas_controller():
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas


@contextlib.contextmanager
def blas_single_threaded():
    """Limit all loaded BLAS libraries to one thread inside the block.

    Safe to enter from several Python threads at once: the original limits are restored
    when the last block exits.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            controller = _blas_controller()
            if not all(lib.num_threads == 1 for lib in controller.lib_controllers):
                _blas_limiter = controller.limit(limits=1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                limiter, _blas_limiter = _blas_limiter, None
                limiter.restore_original_limits()
