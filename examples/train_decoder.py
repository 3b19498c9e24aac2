"""Train a tiny 3D decoder to fit data: latent codes -> volumes, in a few seconds.

    python examples/train_decoder.py [--steps 120] [--size 16] [--threads N]

Four fixed latent codes ``[8, 2, 2, 2]`` are decoded by three transposed convolutions
(2 -> 4 -> 8 -> 16 voxels per side) into single-channel volumes, trained with Adam to
reproduce four target shapes: spheres and cubes of different sizes. The loss falls by
well over 90%; the script exits with an error if it does not. At the end it saves the
model with ``save_dygraph`` and reloads it to show that the reloaded model reproduces the
predictions.
"""
import argparse
import os
import tempfile
import time

import numpy as np

import conv3dt
import conv3dt.dygraph as dygraph
import conv3dt.initializer
import conv3dt.layers as L
import conv3dt.optimizer as optimizer
from conv3dt.initializer import Normal
from conv3dt.param_attr import ParamAttr


def targets(size):
    """Four [1, size, size, size] volumes: two spheres and two cubes, in [0, 1]."""
    c = np.linspace(-1, 1, size)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    box = np.maximum(np.maximum(abs(x), abs(y)), abs(z))
    shapes = [r < 0.5, r < 0.8, box < 0.4, box < 0.7]
    return np.stack(shapes)[:, None].astype(np.float32)


class Decoder(dygraph.Layer):
    """``levels`` transposed convolutions (kernel 4, stride 2, padding 1), each doubling the
    side of the volume; relu between them, a sigmoid at the end (the targets are in [0, 1]).

    The weights start He-normal for the transposed convolution: every output voxel sums
    ``C_in * (4 / 2)**3`` products, so ``std = sqrt(2 / (C_in * 8))`` keeps the signal's
    scale through the layers (with Paddle's default Xavier init, whose fans count the whole
    kernel, a deeper decoder starts almost constant and fits far more slowly).
    """

    def __init__(self, latent=8, levels=3):
        super().__init__()
        channels = [latent] + [16, 8, 4, 4][: levels - 1] + [1]
        self.ups = []
        for i in range(levels):
            last = i == levels - 1
            init = Normal(0.0, float(np.sqrt(2.0 / (channels[i] * 8))))
            layer = dygraph.Conv3DTranspose(channels[i], channels[i + 1], filter_size=4,
                                            stride=2, padding=1,
                                            param_attr=ParamAttr(initializer=init),
                                            act="sigmoid" if last else "relu")
            self.add_sublayer(f"up{i}", layer)
            self.ups.append(layer)

    def forward(self, z):
        for layer in self.ups:
            z = layer(z)
        return z


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--size", type=int, default=16, choices=(8, 16, 32),
                        help="output side (8: 2 layers, 16: 3, 32: 4)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        conv3dt.set_num_threads(args.threads)
    levels = {8: 2, 16: 3, 32: 4}[args.size]

    conv3dt.initializer.seed(0)  # reproducible initial weights
    rng = np.random.default_rng(0)
    data = targets(args.size)
    codes = rng.standard_normal((len(data), 8, 2, 2, 2)).astype(np.float32)

    with dygraph.guard():
        model = Decoder(levels=levels)
        opt = optimizer.Adam(learning_rate=args.lr, parameter_list=model.parameters())
        z, target = dygraph.to_variable(codes), dygraph.to_variable(data)
        t0 = time.perf_counter()
        for step in range(args.steps + 1):
            loss = L.mse_loss(model(z), target)
            if step == 0:
                first = float(loss.numpy()[0])
            if step % max(1, args.steps // 5) == 0 or step == args.steps:
                print(f"step {step:4d}  loss {float(loss.numpy()[0]):.5f}")
            if step == args.steps:
                break
            loss.backward()
            opt.minimize(loss)
            model.clear_gradients()
        elapsed = time.perf_counter() - t0
        final = float(loss.numpy()[0])
        print(f"{args.steps} steps in {elapsed:.1f} s; loss {first:.4f} -> {final:.4f} "
              f"({100 * (1 - final / first):.1f}% lower)")

        path = os.path.join(tempfile.mkdtemp(), "decoder")
        dygraph.save_dygraph(model.state_dict(), path)
        params, _ = dygraph.load_dygraph(path)
        reloaded = Decoder(levels=levels)
        reloaded.set_dict(params)
        with dygraph.no_grad():
            same = np.array_equal(reloaded(z).numpy(), model(z).numpy())
        print(f"saved and reloaded {len(params)} parameters: predictions "
              + ("identical" if same else "DIFFER"))

    if not same or final > 0.1 * first:
        raise SystemExit("training did not fit the data")
    return first, final


if __name__ == "__main__":
    main()
