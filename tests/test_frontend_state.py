"""Layer registration, state_dict / set_dict, save_dygraph / load_dygraph and their errors."""
import os

import numpy as np
import pytest

from conv3dt.initializer import Constant
from conv3dt.dygraph import Conv3DTranspose, Layer, load_dygraph, save_dygraph, to_variable
from conv3dt.dygraph import checkpoint


class Net(Layer):
    def __init__(self):
        super().__init__()
        self.up1 = Conv3DTranspose(2, 3, filter_size=2, stride=2)
        self.up2 = Conv3DTranspose(3, 1, filter_size=3, padding=1, bias_attr=False)
        self.scale = self.create_parameter([1], default_initializer=Constant(1.5), is_bias=True)
        self.note = "plain attribute"

    def forward(self, x):
        return self.up2(self.up1(x)) * self.scale


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "up1.weight", "up1.bias", "up2.weight"]
    assert [id(p) for p in net.parameters()] == [id(p) for _, p in net.named_parameters()]
    assert net.sublayers() == [net.up1, net.up2]
    assert net.parameters(include_sublayers=False) == [net.scale]
    assert list(net.state_dict()) == names
    assert net.note == "plain attribute" and "note" not in net.state_dict()
    # re-assigning a registered name to a plain value unregisters it
    net.scale = 3.0
    assert "scale" not in net.state_dict() and net.scale == 3.0
    del net.up2
    assert [n for n, _ in net.named_parameters()] == ["up1.weight", "up1.bias"]
    with pytest.raises(AttributeError, match="up2"):
        net.up2


def test_train_eval_and_clear_gradients(rng):
    net = Net()
    net.eval()
    assert not net.training and not net.up1.training
    net.train()
    assert net.training and net.up2.training
    y = net(to_variable(rng.standard_normal((1, 2, 2, 2, 2)).astype("float32")))
    y.sum().backward()
    assert all(np.abs(p.gradient()).sum() > 0 for p in net.parameters())
    net.clear_gradients()
    assert all(not p.gradient().any() for p in net.parameters())


def test_forward_not_implemented():
    with pytest.raises(NotImplementedError, match="forward"):
        Layer()(1)


def test_add_parameter_and_sublayer_type_errors():
    layer = Layer()
    with pytest.raises(TypeError, match="Parameter"):
        layer.add_parameter("w", np.ones(2))
    with pytest.raises(TypeError, match="Layer"):
        layer.add_sublayer("s", object())


def test_set_dict_copies_values():
    a, b = Net(), Net()
    b.set_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and pa is not pb
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    # values are copied, not shared
    a.up1.weight.set_value(np.zeros(a.up1.weight.shape, np.float32))
    assert b.up1.weight.numpy().any()
    # plain arrays work too, and extra keys are ignored (as in Paddle)
    arrays = {k: v.numpy() + 1 for k, v in a.state_dict().items()}
    arrays["unrelated"] = np.ones(3)
    b.set_dict(arrays)
    np.testing.assert_array_equal(b.scale.numpy(), a.scale.numpy() + 1)
    assert b.load_dict == b.set_dict


def test_set_dict_missing_key_shape_and_dtype_errors_change_nothing():
    net = Net()
    before = {k: v.numpy() for k, v in net.state_dict().items()}
    good = {k: v.copy() + 1 for k, v in before.items()}

    missing = dict(good)
    del missing["up2.weight"]
    with pytest.raises(ValueError, match="'up2.weight' is missing"):
        net.set_dict(missing)

    bad_shape = dict(good, **{"up1.bias": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"'up1.bias' has shape \(3,\), the state dict has \(4,\)"):
        net.set_dict(bad_shape)

    bad_dtype = dict(good, **{"up1.weight": good["up1.weight"].astype(np.float64)})
    with pytest.raises(ValueError, match="'up1.weight' has dtype float32, the state dict has float64"):
        net.set_dict(bad_dtype)

    for k, v in net.state_dict().items():  # the failed loads changed nothing
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_set_dict_before_lazy_parameters_exist():
    layer = Conv3DTranspose("lazy", num_filters=2, filter_size=2)
    with pytest.raises(ValueError, match="first call"):
        layer.set_dict({})


def test_save_load_round_trip(tmp_path, rng):
    net = Net()
    x = to_variable(rng.standard_normal((1, 2, 2, 2, 2)).astype("float32"))
    expected = net(x).numpy()
    path = str(tmp_path / "ckpt" / "net")
    save_dygraph(net.state_dict(), path)
    assert os.path.exists(path + ".pdparams.npz")
    params, opt = load_dygraph(path)
    assert opt is None and set(params) == set(net.state_dict())
    other = Net()
    assert not np.array_equal(other(x).numpy(), expected)
    other.set_dict(params)
    np.testing.assert_array_equal(other(x).numpy(), expected)
    # the suffixed name works as well
    params2, _ = load_dygraph(path + ".pdparams")
    assert set(params2) == set(params)


def test_optimizer_dict_goes_to_pdopt(tmp_path):
    path = str(tmp_path / "opt")
    save_dygraph({"w.moment1": np.ones(3)}, path)
    params, opt = load_dygraph(path)
    assert params is None and list(opt) == ["w.moment1"]


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        save_dygraph({}, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="file name is empty"):
        save_dygraph({"a": np.ones(1)}, str(tmp_path) + os.sep)
    with pytest.raises(TypeError, match="non-numeric"):
        save_dygraph({"a": np.array(["s"])}, str(tmp_path / "x"))
    with pytest.raises(TypeError, match="keys must be str"):
        save_dygraph({1: np.ones(1)}, str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []  # no stray temporary files


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pdparams.npz"):
        load_dygraph(str(tmp_path / "nope"))


def test_load_truncated_file_names_path(tmp_path):
    path = str(tmp_path / "net")
    save_dygraph(Net().state_dict(), path)
    data = open(path + ".pdparams.npz", "rb").read()
    with open(path + ".pdparams.npz", "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="net.pdparams.npz"):
        load_dygraph(path)


def test_load_garbage_file(tmp_path):
    with open(tmp_path / "g.pdparams.npz", "wb") as f:
        f.write(b"this is not a zip archive at all")
    with pytest.raises(ValueError, match="g.pdparams.npz"):
        load_dygraph(str(tmp_path / "g"))


def test_load_refuses_pickled_object_arrays(tmp_path):
    path = tmp_path / "evil.pdparams.npz"
    np.savez(path, weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="evil.pdparams.npz"):
        load_dygraph(str(tmp_path / "evil"))


def test_load_refuses_non_numeric_arrays(tmp_path):
    path = tmp_path / "s.pdparams.npz"
    np.savez(path, weight=np.array(["abc"]))
    with pytest.raises(ValueError, match="non-numeric"):
        load_dygraph(str(tmp_path / "s"))


def test_load_refuses_plain_npy(tmp_path):
    path = tmp_path / "p.pdparams.npz"
    with open(path, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(ValueError, match="p.pdparams.npz"):
        load_dygraph(str(tmp_path / "p"))


def test_missing_super_init_is_a_clear_error():
    class Broken(Layer):
        def __init__(self):
            self.w = 1

    with pytest.raises(RuntimeError, match="super"):
        Broken()
