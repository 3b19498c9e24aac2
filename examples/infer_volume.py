"""Upsample a 3D volume with a trained Conv3DTranspose layer: load weights, run, save.

    python examples/infer_volume.py                          # a demo volume and layer
    python examples/infer_volume.py --input vol.npy --weights up.pdparams.npz --output up.npy

``--weights`` is a file written by ``conv3dt.dygraph.save_dygraph(layer.state_dict(),
path)``. Without it, the script first builds an example upsampler (4 -> 2 channels,
kernel 4, stride 2, padding 1: twice the size in every dimension) and saves its weights,
so that the loading path below is the one you would use with your own trained layer.
Without ``--input`` it makes a volume of ``--size`` voxels per side with a few blobs.

The same inference without Python:
``conv3dt run --input vol.npy --weights up.pdparams.npz --stride 2 --padding 1 --output up.npy``
"""
import argparse
import os
import tempfile
import time

import numpy as np

import conv3dt
import conv3dt.dygraph as dygraph

# The example upsampler: 4 -> 2 channels, kernel 4, stride 2, padding 1.
EXAMPLE = dict(num_channels=4, num_filters=2, filter_size=4)


def demo_volume(size, channels, seed=0):
    """A [1, channels, size, size, size] float32 volume: Gaussian blobs, one per channel."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    volume = np.empty((1, channels, size, size, size), np.float32)
    for c in range(channels):
        center = rng.uniform(-0.5, 0.5, size=(3, 1, 1, 1))
        volume[0, c] = np.exp(-np.sum((grid - center) ** 2, axis=0) / 0.1)
    return volume


def save_example_weights(path, stride, padding):
    """Build the example upsampler and save its parameters, as training code would."""
    with dygraph.guard():
        layer = dygraph.Conv3DTranspose(**EXAMPLE, stride=stride, padding=padding)
        dygraph.save_dygraph(layer.state_dict(), path)
    return path + ".pdparams.npz"


def load_layer(weights_path, stride, padding):
    """A Conv3DTranspose whose shape is read from the saved weight, with those weights."""
    params, _ = dygraph.load_dygraph(weights_path)
    if params is None or "weight" not in params:
        raise SystemExit(f"{weights_path}: no 'weight' entry; expected a save_dygraph file")
    c_in, c_out, *kernel = params["weight"].shape
    layer = dygraph.Conv3DTranspose(
        c_in, c_out, filter_size=kernel, stride=stride, padding=padding,
        bias_attr=None if "bias" in params else False,
        dtype=params["weight"].dtype.name)
    layer.set_dict(params)
    layer.eval()
    return layer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", help="volume saved with numpy.save, [N, C, D, H, W]")
    parser.add_argument("--weights", help="a save_dygraph file (default: make one)")
    parser.add_argument("--output", default="upsampled.npy", help="where to save the result")
    parser.add_argument("--stride", type=int, default=2, help="the layer's stride (2)")
    parser.add_argument("--padding", type=int, default=1, help="the layer's padding (1)")
    parser.add_argument("--size", type=int, default=48, help="side of the demo volume")
    parser.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.threads:
        conv3dt.set_num_threads(args.threads)

    weights = args.weights
    if weights is None:
        weights = save_example_weights(os.path.join(tempfile.mkdtemp(), "upsampler"),
                                       args.stride, args.padding)
        print(f"saved example weights to {os.path.basename(weights)}")

    with dygraph.guard():
        layer = load_layer(weights, args.stride, args.padding)
        volume = (np.load(args.input) if args.input
                  else demo_volume(args.size, layer.weight.shape[0]))
        volume = volume.astype(layer.weight.dtype, copy=False)
        with dygraph.no_grad():  # inference: keep nothing for a backward pass
            t0 = time.perf_counter()
            out = layer(dygraph.to_variable(volume)).numpy()
            elapsed = time.perf_counter() - t0

    np.save(args.output, out)
    print(f"{list(volume.shape)} -> {list(out.shape)} in {elapsed * 1e3:.1f} ms "
          f"({conv3dt.get_num_threads()} threads); saved {args.output}")
    return out


if __name__ == "__main__":
    main()
