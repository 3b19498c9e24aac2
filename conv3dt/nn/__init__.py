"""Paddle 2.x/3.x's ``paddle.nn`` for this one layer: ``Layer``, ``Conv3DTranspose``,
``functional`` and ``initializer``.

``Layer`` is the same class as ``conv3dt.dygraph.Layer`` (``parameters()``,
``named_parameters()``, ``state_dict()``, ``set_state_dict()``, ``train()``/``eval()``),
so 1.x and 2.x layers nest in one another.

Example (a Paddle 2.x script with only the import changed)::

    >>> import numpy as np
    >>> import conv3dt as paddle
    >>> class Up(paddle.nn.Layer):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = paddle.nn.Conv3DTranspose(2, 4, kernel_size=2, stride=2)
    ...     def forward(self, x):
    ...         return self.conv(x)
    >>> net = Up()
    >>> sorted(net.state_dict())
    ['conv.bias', 'conv.weight']
    >>> net(paddle.to_tensor(np.ones((1, 2, 3, 3, 3), "float32"))).shape
    (1, 4, 6, 6, 6)
"""
from . import functional, initializer
from ..dygraph.layers import Layer
from .conv import Conv3DTranspose

__all__ = ["Layer", "Conv3DTranspose", "functional", "initializer"]
