"""Checkpoint files: load_dygraph reads only numeric arrays and rejects damaged files clearly,
checking each entry's header against its stored size before allocating anything."""
import io
import zipfile

import numpy as np
import pytest

from conv3dt.dygraph import Conv3DTranspose, load_dygraph, save_dygraph


def _npy_header(descr, shape):
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return b.getvalue()


def _write(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.mark.parametrize("members, match", [
    ({"weight": b"raw bytes"}, "not an .npy array"),
    ({"weight.npy": _npy_header("<f4", (10**12,)) + b"\0" * 16}, "corrupt"),
    ({"weight.npy": _npy_header("<f4", (4,)) + b"\0" * 8}, "corrupt"),
    ({"weight.npy": _npy_header("|O", (1,)) + b"\0" * 8}, "non-numeric|pickle|object"),
    ({"weight.npy": _npy_header("<c8", (1,)) + b"\0" * 8}, "non-numeric"),
    ({"weight.npy": b"\x93NUMPY\x09\x00garbage"}, "version|cannot read"),
    ({"weight.npy": b"not numpy at all"}, "cannot read"),
])
def test_damaged_or_foreign_entries_are_value_errors(tmp_path, members, match):
    path = tmp_path / "m.pdparams.npz"
    _write(path, members)
    with pytest.raises(ValueError, match=match) as info:
        load_dygraph(str(tmp_path / "m"))
    assert "m.pdparams.npz" in str(info.value)


def test_every_truncation_of_a_checkpoint_is_a_value_error(tmp_path):
    conv = Conv3DTranspose(2, 3, filter_size=2)
    save_dygraph(conv.state_dict(), str(tmp_path / "full"))
    data = (tmp_path / "full.pdparams.npz").read_bytes()
    for cut in sorted(set(range(0, len(data), max(1, len(data) // 40))) | {len(data) - 1}):
        (tmp_path / "cut.pdparams.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.pdparams.npz"):
            load_dygraph(str(tmp_path / "cut"))


def test_flipped_bytes_never_give_anything_but_arrays_or_value_errors(tmp_path):
    conv = Conv3DTranspose(2, 3, filter_size=2)
    save_dygraph(conv.state_dict(), str(tmp_path / "full"))
    data = bytearray((tmp_path / "full.pdparams.npz").read_bytes())
    rng = np.random.default_rng(0)
    for _ in range(200):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), 3):
            damaged[pos] ^= int(rng.integers(1, 256))
        (tmp_path / "bad.pdparams.npz").write_bytes(bytes(damaged))
        try:
            params, _ = load_dygraph(str(tmp_path / "bad"))
        except ValueError:
            continue
        assert all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf"
                   for v in params.values())


def test_round_trip_keeps_dtype_layout_and_zero_d_arrays(tmp_path):
    state = {"w": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
             "step": np.array(7, dtype=np.int64), "empty": np.zeros((0, 3)),
             "flag": np.array([True, False])}
    save_dygraph(state, str(tmp_path / "opt"))
    _, opt = load_dygraph(str(tmp_path / "opt"))
    assert set(opt) == set(state)
    for k, v in state.items():
        assert opt[k].dtype == v.dtype and opt[k].shape == v.shape
        np.testing.assert_array_equal(opt[k], v)
