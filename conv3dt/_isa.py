"""The instruction-set variant of the CPU kernels' microkernels.

The build compiles the microkernels once per variant (``conv3dt/kernels``: generic,
AVX2 + FMA, AVX-512), each with its own vector width and register blocks, and the kernels
take the variant to use as an argument. At import the best variant this CPU runs is
chosen, unless ``CONV3DT_ISA`` names another; :func:`set_isa` switches later. A lower
variant can always be forced (to test or benchmark it on a better CPU); one the CPU or the
build lacks is an error. Results are bitwise the same for every thread count within a
variant; variants may differ in the last bits (their vectors split the work differently
and the generic one does not fuse multiply-adds).

>>> import conv3dt
>>> conv3dt.get_isa() in conv3dt.available_isas()
True
"""

import dataclasses
import os
import threading
from typing import Any, List, Literal

from ._kernels import isa_variants

__all__ = ["get_isa", "set_isa", "available_isas", "Isa", "current", "lookup"]

ENV_VAR = "CONV3DT_ISA"

# The variants a build may have (available_isas() lists those of this build and CPU).
IsaName = Literal["avx512", "avx2", "generic"]


@dataclasses.dataclass(frozen=True)
class Isa:
    """The facts of one variant, as its microkernels report them (kernels/isa.h)."""

    index: int          # the variant's number in the registry (passed to the kernels)
    name: str
    supported: bool     # whether this CPU runs it
    vector_bytes: int   # bytes per vector register
    panel_mv: int       # panel product's register block: vectors of tile columns ...
    panel_nr: int       # ... x columns of the packed weight (its panel width)
    wgrad_mv: int       # grad_weight product's block: vectors of input channels ...
    wgrad_nr: int       # ... x rows of the gathered grad_output
    dot_nb: int         # few-channel grad_weight blocks: channels x rows <= dot_nb
    direct_cout: int    # the forward pass's direct path up to this many C_out / groups

    def lanes(self, itemsize: int) -> int:
        """Elements of ``itemsize`` bytes per vector."""
        return self.vector_bytes // itemsize


# The variants of this build, best first (a build for another architecture has only
# the generic one).
_VARIANTS = tuple(Isa(**facts) for facts in isa_variants())
_BY_NAME = {isa.name: isa for isa in _VARIANTS}
_lock = threading.Lock()


def available_isas() -> List[str]:
    """The instruction-set variants this build has and this CPU runs.

    Returns
    -------
    list of str
        Best first, e.g. ``['avx512', 'avx2', 'generic']``.
    """
    return [isa.name for isa in _VARIANTS if isa.supported]


def lookup(name: Any, source: str) -> Isa:
    """The :class:`Isa` of the variant ``name`` (case-insensitive); TypeError or ValueError
    naming ``source`` (the argument or variable it came from) where it is not a str, this
    build has no such variant or this CPU does not run it."""
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a str naming an instruction-set variant, got "
                        f"{type(name).__name__}: {name!r}")
    isa = _BY_NAME.get(name.strip().lower())
    if isa is None:
        raise ValueError(f"{source} must be one of the variants of this build, "
                         f"{', '.join(_BY_NAME)}; got {name!r}")
    key = isa.name
    if not isa.supported:
        raise ValueError(f"{source}={name!r}: this CPU does not run the {key} kernels "
                         f"(it runs {', '.join(available_isas())})")
    return isa


def _initial() -> Isa:
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return lookup(value, ENV_VAR)
    return next(isa for isa in _VARIANTS if isa.supported)


_current = _initial()


def current() -> Isa:
    """The :class:`Isa` record of the variant in use."""
    return _current


def get_isa() -> str:
    """The instruction-set variant the CPU kernels use.

    Returns
    -------
    str
        ``'avx512'``, ``'avx2'`` or ``'generic'``.
    """
    return _current.name


def set_isa(name: IsaName) -> None:
    """Use an instruction-set variant from now on.

    Calls already running finish with the variant they started with.

    Parameters
    ----------
    name : {'generic', 'avx2', 'avx512'}
        One of :func:`available_isas` (case-insensitive).

    Raises
    ------
    TypeError
        ``name`` is not a str.
    ValueError
        This build has no such variant, or this CPU does not run it.

    Examples
    --------

    >>> import conv3dt
    >>> previous = conv3dt.get_isa()
    >>> conv3dt.set_isa("generic"); conv3dt.get_isa()
    'generic'
    >>> conv3dt.set_isa(previous)
    """
    global _current
    isa = lookup(name, "isa")
    with _lock:
        _current = isa
