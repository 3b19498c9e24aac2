"""PaddlePaddle-dygraph-style front end: module paths mirror ``paddle.fluid.dygraph``.

>>> import numpy as np
>>> import conv3dt as fluid
>>> import conv3dt.dygraph
>>> with fluid.dygraph.guard():
...     data = np.random.random((1, 3, 4, 4, 4)).astype("float32")
...     conv = fluid.dygraph.Conv3DTranspose(3, num_filters=2, filter_size=3)
...     y = conv(fluid.dygraph.to_variable(data))
>>> y.shape
(1, 2, 6, 6, 6)
"""
from . import base, checkpoint, layers, nn
from .base import enabled, guard, no_grad, to_variable
from .checkpoint import load_dygraph, save_dygraph
from .layers import Layer
from .nn import Conv3DTranspose

__all__ = ["guard", "enabled", "no_grad", "to_variable", "Layer", "Conv3DTranspose",
           "save_dygraph", "load_dygraph"]
