"""conv3dt: fast, exact 3D transposed convolution with PaddlePaddle's semantics.

>>> import numpy as np, conv3dt
>>> y = conv3dt.functional.conv3d_transpose(np.ones((1, 2, 4, 4, 4)), np.ones((2, 3, 3, 3, 3)))
>>> y.shape
(1, 3, 6, 6, 6)
"""

__version__ = "0.1.0"

from . import functional
from . import _kernels as _kernels  # noqa: F401  (the compiled kernels: a broken build fails)
from ._memory import cache_info, empty_cache, get_cache_limit, set_cache_limit
from . import _threads
from ._isa import available_isas, get_isa, set_isa
from ._threads import get_num_threads, set_num_threads
from .functional import conv3d_transpose, conv3d_transpose_backward

# Paddle-dygraph-style front end
from . import dygraph, initializer, layers, optimizer, regularizer
from ._place import CPUPlace, CUDAPlace, is_compiled_with_cuda
from .autograd import Variable, no_grad
from .dygraph.base import enabled as in_dygraph_mode
from .gradcheck import GradcheckError, gradcheck
from .initializer import seed
from .param_attr import ParamAttr

# Paddle 2.x/3.x front end: `import conv3dt as paddle`
from . import nn
from ._tensor import get_default_dtype, mean, set_default_dtype, sum, to_tensor
from ._weights import load, save
from .autograd import Tensor

__all__ = [
    "__version__",
    "functional",
    "conv3d_transpose",
    "conv3d_transpose_backward",
    "get_num_threads",
    "set_num_threads",
    "get_isa",
    "set_isa",
    "available_isas",
    "empty_cache",
    "set_cache_limit",
    "get_cache_limit",
    "cache_info",
    "dygraph", "initializer", "layers", "optimizer", "regularizer", "CPUPlace", "CUDAPlace",
    "is_compiled_with_cuda", "Variable", "no_grad", "in_dygraph_mode", "gradcheck",
    "GradcheckError", "seed", "ParamAttr",
    "nn", "Tensor", "to_tensor", "mean", "sum", "save", "load", "get_default_dtype",
    "set_default_dtype",
]

_threads._register_threadpoolctl()
