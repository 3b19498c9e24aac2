"""Gradient checks for your own layers with ``conv3dt.gradcheck``: a test file.

Run it with pytest (``pytest examples/gradient_check.py``) or as a script
(``python examples/gradient_check.py``). Each test builds a small float64 model,
differentiates it with conv3dt's autograd and compares the result with central finite
differences; ``gradcheck`` returns True or raises ``GradcheckError`` (an AssertionError)
naming the input, the index and both values of the worst mismatch.

Guidelines that keep such tests fast and meaningful:

- float64 everywhere (float32 is refused: rounding would swamp the differences);
- tiny shapes: every element of an input of up to ``max_elementwise`` elements is probed
  (two forward passes each); larger inputs are probed along random directions;
- set ``stop_gradient = False`` on data you want d/d(input) for; parameters always count;
- avoid kinks (relu exactly at 0) or use smooth activations (tanh, sigmoid, softplus).
"""
import numpy as np

import conv3dt.dygraph as dygraph
import conv3dt.layers as L
from conv3dt.autograd import Function
from conv3dt.gradcheck import GradcheckError, gradcheck


class Decoder(dygraph.Layer):
    """Two transposed convolutions: the model under test."""

    def __init__(self):
        super().__init__()
        self.up1 = dygraph.Conv3DTranspose(2, 4, filter_size=3, stride=2, padding=1,
                                           output_padding=1, act="tanh", dtype="float64")
        self.up2 = dygraph.Conv3DTranspose(4, 2, filter_size=(1, 2, 2), stride=(1, 2, 2),
                                           groups=2, act="softplus", dtype="float64")

    def forward(self, z):
        return self.up2(self.up1(z))


def test_decoder_gradients():
    """d(output)/d(input and every parameter) of a small decoder."""
    rng = np.random.default_rng(0)
    with dygraph.guard():
        model = Decoder()
        z = dygraph.to_variable(rng.standard_normal((1, 2, 2, 2, 2)))
        z.stop_gradient = False
        inputs = [z] + model.parameters()
        assert gradcheck(lambda z, *params: model(z), inputs)


def test_loss_gradients():
    """The gradient of a scalar loss built from conv3dt.layers, with a SAME padding."""
    rng = np.random.default_rng(1)
    with dygraph.guard():
        conv = dygraph.Conv3DTranspose(2, 2, filter_size=3, stride=2, padding="SAME",
                                       dtype="float64")
        x = dygraph.to_variable(rng.standard_normal((2, 2, 3, 2, 3)))
        target = dygraph.to_variable(rng.standard_normal(conv(x).shape))

        def loss(weight, bias):
            return L.mse_loss(L.sigmoid(conv(x)), target)

        assert gradcheck(loss, [conv.weight, conv.bias])


class WrongSquare(Function):
    """x ** 2 with a deliberately wrong backward (x instead of 2x)."""

    def forward(self, x):
        self.save(x)
        return x * x

    def backward(self, grad, needs):
        (x,) = self.saved
        return (grad * x,)


def test_gradcheck_catches_a_wrong_backward():
    """A broken backward is reported, with the worst mismatch."""
    with dygraph.guard():
        x = dygraph.to_variable(np.array([0.5, -1.0, 2.0]))
        x.stop_gradient = False
        try:
            gradcheck(WrongSquare.apply, [x])
        except GradcheckError as exc:
            index, analytic, numeric = exc.worst[1:]
            assert abs(numeric - 2 * analytic) < 1e-6     # numeric 2x, analytic x
        else:
            raise AssertionError("gradcheck missed a wrong gradient")


if __name__ == "__main__":
    import time

    for test in (test_decoder_gradients, test_loss_gradients,
                 test_gradcheck_catches_a_wrong_backward):
        t0 = time.perf_counter()
        test()
        print(f"{test.__name__}: passed ({time.perf_counter() - t0:.2f} s)")
    print("all gradient checks passed")
