"""dygraph.guard / enabled / place handling / to_variable, and their errors."""
import numpy as np
import pytest

import conv3dt.dygraph as dygraph
from conv3dt._place import CPUPlace, CUDAPlace, is_compiled_with_cuda
from conv3dt.autograd import Variable
from conv3dt.dygraph import base


def test_guard_enables_and_restores():
    assert not dygraph.enabled()
    with dygraph.guard():
        assert dygraph.enabled()
        assert base.current_place() is None
    assert not dygraph.enabled()


def test_guard_nesting_restores_each_level():
    cpu = CPUPlace()
    with dygraph.guard(cpu):
        assert base.current_place() == cpu
        with dygraph.guard():  # place=None keeps the enclosing place
            assert base.current_place() == cpu and dygraph.enabled()
        assert base.current_place() == cpu and dygraph.enabled()
    assert base.current_place() is None and not dygraph.enabled()


def test_guard_restores_on_exception():
    with pytest.raises(ZeroDivisionError):
        with dygraph.guard(CPUPlace()):
            with dygraph.guard():
                1 / 0
    assert not dygraph.enabled() and base.current_place() is None


def test_guard_restarts_names_and_restores_outer_counter():
    from conv3dt.dygraph.nn import Conv3DTranspose
    with dygraph.guard():
        a = Conv3DTranspose(1, 1, filter_size=1)
        with dygraph.guard():
            b = Conv3DTranspose(1, 1, filter_size=1)
        c = Conv3DTranspose(1, 1, filter_size=1)
    assert a.full_name() == b.full_name() == "conv3d_transpose_0"
    assert c.full_name() == "conv3d_transpose_1"
    assert a.weight.name == "conv3d_transpose_0.w_0" and c.bias.name == "conv3d_transpose_1.b_0"


def test_guard_rejects_a_non_place():
    with pytest.raises(TypeError, match="CPUPlace"):
        with dygraph.guard("cpu"):
            pass
    assert not dygraph.enabled()


@pytest.mark.skipif(is_compiled_with_cuda(), reason="CuPy is installed")
def test_cuda_place_without_cupy_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CuPy"):
        with dygraph.guard(CUDAPlace(0)):
            pass
    assert not dygraph.enabled()


def test_places():
    assert CPUPlace() == CPUPlace() and CUDAPlace(1) == CUDAPlace(1) != CUDAPlace(0)
    assert repr(CUDAPlace(2)) == "CUDAPlace(2)" and repr(CPUPlace()) == "CPUPlace"
    for bad in (-1, 1.0, True):
        with pytest.raises(TypeError, match="device_id"):
            CUDAPlace(bad)


@pytest.mark.parametrize("value", [np.arange(6.0).reshape(2, 3), [[0.0, 1, 2], [3, 4, 5]],
                                   ((0.0, 1, 2), (3, 4, 5))])
def test_to_variable_accepts_arrays_lists_tuples(value):
    with dygraph.guard(CPUPlace()):
        v = dygraph.to_variable(value)
    assert isinstance(v, Variable) and v.stop_gradient
    np.testing.assert_array_equal(v.numpy(), np.arange(6.0).reshape(2, 3))
    assert base.to_variable is dygraph.to_variable


def test_to_variable_copies_unless_zero_copy():
    a = np.zeros(3)
    copied = dygraph.to_variable(a)
    shared = dygraph.to_variable(a, zero_copy=True)
    a[0] = 7
    assert copied.numpy()[0] == 0 and shared.numpy()[0] == 7


def test_to_variable_dtype_name_and_identity():
    v = dygraph.to_variable([1, 2, 3], name="ints", dtype="float32")
    assert v.dtype == np.float32 and v.name == "ints"
    assert dygraph.to_variable(v) is v


@pytest.mark.parametrize("bad", [3.0, 5, "abc", {"a": 1}, None])
def test_to_variable_type_error_in_paddles_words(bad):
    expected = ("The type of 'value' in fluid.dygraph.to_variable must be np.ndarray, list, "
                f"tuple, or Variable, but received {type(bad)}")
    with pytest.raises(TypeError) as info:
        dygraph.to_variable(bad)
    assert str(info.value) == expected


def test_to_variable_ragged_list_is_a_type_error():
    with pytest.raises(TypeError, match="numeric array"):
        dygraph.to_variable([[1.0, 2.0], [3.0]])


def test_no_grad_is_exported():
    assert dygraph.no_grad is base.no_grad
