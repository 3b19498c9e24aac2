"""Type aliases of the public API's annotations (read by type checkers; free at run time).

The aliases are ordinary module attributes, so annotations that use them cost nothing when
a function is called. Optional frameworks (PyTorch, Paddle, Dask, CuPy) never appear here:
modules that name their types import them under ``typing.TYPE_CHECKING`` only.
"""
from typing import Any, Literal, Sequence, Type, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ArrayLike", "NDArray", "FloatArray", "IntTriple", "SizeArg", "PaddingArg",
           "PaddingAlgorithm", "DataFormat", "ShapeLike", "DTypeArg"]

# A float32 or float64 NumPy array (the dtype follows the inputs').
FloatArray = NDArray[np.floating[Any]]

# An int per spatial dimension: one for all three, or three.
IntTriple = Union[int, Sequence[int]]
# The same, where None means "not given" (output_size).
SizeArg = Union[int, Sequence[int], None]

# Paddle's padding algorithms and ONNX's two (case-insensitive at run time; the type
# lists the upper- and lower-case spellings).
PaddingAlgorithm = Literal["SAME", "VALID", "SAME_UPPER", "SAME_LOWER",
                           "same", "valid", "same_upper", "same_lower"]
# An int, 3 ints, 6 ints (d_lo, d_hi, h_lo, h_hi, w_lo, w_hi), 5 pairs, or an algorithm.
PaddingArg = Union[int, Sequence[int], Sequence[Sequence[int]], PaddingAlgorithm]

DataFormat = Literal["NCDHW", "NDHWC"]

# A shape: a sequence of ints.
ShapeLike = Sequence[int]

# What np.dtype() accepts for the float dtypes: 'float32', np.float32, np.dtype(...).
DTypeArg = Union[str, "np.dtype[Any]", Type[np.floating[Any]]]
