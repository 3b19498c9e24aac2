"""Write the intersphinx inventories the documentation links with (numpy.inv, torch.inv,
paddle.inv, beside this file).

The documentation builds offline (CI has no network), so ``conf.py`` reads these files
instead of fetching each project's ``objects.inv``. Each holds the objects our pages
name, with the address of their page in that project's documentation (the address
scheme each project's own documentation uses). To link to another object, add it below
and run ``python docs/_intersphinx/make_inventories.py``; commit the .inv files.
"""
import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

# project: (name in the inventory header, version, [(object, domain:role, uri)]);
# uris are relative to the base address given in conf.py's intersphinx_mapping.
INVENTORIES = {
    "numpy": ("NumPy", "stable", [
        ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html"),
        ("numpy.float32", "py:attribute",
         "reference/arrays.scalars.html#numpy.float32"),
        ("numpy.float64", "py:attribute",
         "reference/arrays.scalars.html#numpy.float64"),
        ("numpy.asarray", "py:function", "reference/generated/numpy.asarray.html"),
        ("numpy.load", "py:function", "reference/generated/numpy.load.html"),
        ("numpy.save", "py:function", "reference/generated/numpy.save.html"),
    ]),
    "torch": ("PyTorch", "stable", [
        ("torch.nn.ConvTranspose3d", "py:class",
         "generated/torch.nn.ConvTranspose3d.html"),
        ("torch.nn.functional.conv_transpose3d", "py:function",
         "generated/torch.nn.functional.conv_transpose3d.html"),
        ("torch.Tensor", "py:class", "tensors.html#torch.Tensor"),
    ]),
    "paddle": ("PaddlePaddle", "stable", [
        ("paddle.nn.functional.conv3d_transpose", "py:function",
         "api/paddle/nn/functional/conv3d_transpose_en.html"),
        ("paddle.nn.Conv3DTranspose", "py:class",
         "api/paddle/nn/Conv3DTranspose_en.html"),
        ("paddle.static.nn.conv3d_transpose", "py:function",
         "api/paddle/static/nn/conv3d_transpose_en.html"),
    ]),
}


def inventory(project, version, entries):
    """The bytes of a Sphinx inventory (format version 2)."""
    header = ("# Sphinx inventory version 2\n"
              f"# Project: {project}\n"
              f"# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in entries).encode()
    return header + zlib.compress(body, 9)


def main():
    for key, (project, version, entries) in INVENTORIES.items():
        path = os.path.join(HERE, f"{key}.inv")
        with open(path, "wb") as f:
            f.write(inventory(project, version, entries))
        print(f"{path}: {len(entries)} objects")


if __name__ == "__main__":
    main()
