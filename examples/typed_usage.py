"""conv3dt as a type checker sees it: every result below has a type, none is ``Any``.

CI checks this file with ``mypy --strict examples/typed_usage.py`` and runs it.

1. the functional API on NumPy arrays: forward, then the three gradients;
2. the Paddle 1.x dygraph layer: a loss, ``loss.backward()``, ``layer.weight.gradient()``
   and one SGD step;
3. the Paddle 2.x API (``import conv3dt as paddle``): ``paddle.nn.Conv3DTranspose`` and an
   Adam step.

Run with ``python examples/typed_usage.py``.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

import conv3dt
import conv3dt as paddle
from conv3dt import dygraph


def functional_demo(rng: np.random.Generator) -> float:
    """Forward and backward on plain arrays; returns the largest gradient."""
    x = rng.standard_normal((1, 2, 4, 4, 4)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3, 3)).astype(np.float32)
    b = np.zeros(3, np.float32)
    y: npt.NDArray[np.float32] = conv3dt.conv3d_transpose(x, w, b, stride=2, padding=1)
    assert y.shape == (1, 3, 7, 7, 7) and y.dtype == np.float32
    gx, gw, gb = conv3dt.conv3d_transpose_backward(np.ones_like(y), x, w, stride=2, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    # d sum(y) / d bias = the number of output positions per channel
    assert np.allclose(gb, 7 * 7 * 7)
    return float(np.abs(gw).max())


def dygraph_demo(rng: np.random.Generator) -> float:
    """A Paddle 1.x layer, its loss, the weight's gradient and one SGD step."""
    with dygraph.guard():
        layer = dygraph.Conv3DTranspose(2, 4, filter_size=2, stride=2)
        opt = conv3dt.optimizer.SGD(learning_rate=0.1, parameter_list=layer.parameters())
        x = dygraph.to_variable(rng.standard_normal((1, 2, 3, 3, 3)).astype(np.float32))
        y = layer(x)
        loss = conv3dt.layers.reduce_mean(conv3dt.layers.square(y))
        loss.backward()
        grad = layer.weight.gradient()
        assert grad.shape == (2, 4, 2, 2, 2)
        before = layer.weight.numpy()
        opt.minimize(loss)
        step = layer.weight.numpy() - before
        assert np.allclose(step, -0.1 * grad, atol=1e-6)
        layer.clear_gradients()
        return float(loss)


def paddle2_demo(rng: np.random.Generator) -> float:
    """The Paddle 2.x layer and an Adam step, written as Paddle code is."""
    conv = paddle.nn.Conv3DTranspose(2, 3, kernel_size=3, stride=2, padding=1)
    adam = paddle.optimizer.Adam(learning_rate=1e-2, parameters=conv.parameters())
    x = paddle.to_tensor(rng.standard_normal((2, 2, 4, 4, 4)).astype(np.float32))
    losses: list[float] = []
    for _ in range(3):
        loss = paddle.mean(conv(x) ** 2)
        loss.backward()
        adam.step()
        adam.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    return losses[-1]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"functional: largest grad_weight {functional_demo(rng):.3f}")
    print(f"dygraph: loss {dygraph_demo(rng):.4f}")
    print(f"paddle 2.x: loss after 3 Adam steps {paddle2_demo(rng):.4f}")
    print("typed usage ok")


if __name__ == "__main__":
    main()
