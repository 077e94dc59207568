"""convmat.to_linear and convmat.SparseLinear: the layer as a torch module.

to_linear(layer, size)(x.flatten(1)) == layer(x).flatten(1) for every layer
kind (1-3-D, transposed, groups, dilation, 'same', every padding_mode), both
dtypes, dense and sparse; the Linear's weight is convmat.matrix itself (no
copy), its bias convmat.bias; the weight-array route gives the same module."""

import numpy as np
import pytest
import torch

import convmat
from conftest import DTYPES, make_layer, layer_params, relative_error, tolerance


def flat_output(layer, x):
    with torch.no_grad():
        return layer(x).flatten(1)


@layer_params()
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_to_linear_is_the_layer(factory, size, dtype, sparse, seed):
    layer = make_layer(factory, dtype)
    x = torch.randn(4, layer.in_channels, *size, dtype=dtype)
    fc = convmat.to_linear(layer, size, sparse=sparse)
    assert isinstance(fc, convmat.SparseLinear if sparse else torch.nn.Linear)
    assert (fc.in_features, fc.out_features) == (x[0].numel(), flat_output(layer, x[:1]).shape[1])
    assert fc.weight.dtype == dtype and (fc.bias is None) == (layer.bias is None)
    with torch.no_grad():
        y = fc(x.flatten(1))
    assert relative_error(y.numpy(), flat_output(layer, x).numpy()) <= tolerance(dtype)
    # (..., in_features) as torch.nn.Linear: one sample, and extra leading axes.
    with torch.no_grad():
        assert relative_error(fc(x.flatten(1)[0]).numpy(), y[0].numpy()) <= tolerance(dtype)
        assert relative_error(fc(x.flatten(1).reshape(2, 2, -1)).reshape(4, -1).numpy(), y.numpy()) <= tolerance(dtype)


def test_the_weight_is_the_matrix_and_the_bias_the_bias(seed):
    conv = make_layer(lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.float64)
    fc = convmat.to_linear(conv, (7, 9))
    np.testing.assert_array_equal(fc.weight.detach().numpy(), convmat.matrix(conv, (7, 9)))
    np.testing.assert_array_equal(fc.bias.detach().numpy(), convmat.bias(conv, (7, 9)))
    assert fc.weight.requires_grad and isinstance(fc.weight, torch.nn.Parameter)
    sparse = convmat.to_linear(conv, (7, 9), sparse=True)
    assert sparse.weight.layout == torch.sparse_csr
    np.testing.assert_array_equal(sparse.weight.to_dense().numpy(), convmat.matrix(conv, (7, 9)))
    assert set(sparse.state_dict()) == {"weight", "bias"}
    assert "nnz=" in repr(sparse) and "in_features=189, out_features=80" in repr(sparse)
    # The weight-array route: the same module.
    again = convmat.to_linear(conv.weight.detach(), (7, 9), stride=2, padding=1, bias=conv.bias.detach())
    assert torch.equal(again.weight, fc.weight) and torch.equal(again.bias, fc.bias)


def test_a_gradient_flows_through_both_forms(seed):
    conv = make_layer(lambda: torch.nn.Conv1d(2, 3, 3, padding=1), torch.float64)
    x = torch.randn(2, 2 * 6, dtype=torch.float64, requires_grad=True)
    for sparse in (False, True):
        fc = convmat.to_linear(conv, 6, sparse=sparse)
        fc(x).sum().backward()
        assert fc.bias.grad is not None and torch.equal(fc.bias.grad, torch.full((18,), 2.0, dtype=torch.float64))
    assert x.grad is not None


def test_refusals_name_what_is_wrong():
    conv = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(TypeError, match="sparse must be True or False"):
        convmat.to_linear(conv, (7, 9), sparse="yes")
    with pytest.raises(ValueError, match="kernel does not fit"):
        convmat.to_linear(conv, (2, 2))
    with pytest.raises(MemoryError, match="max_dense_bytes"):
        with convmat.dense_bytes_limit(1000):
            convmat.to_linear(conv, (7, 9))
    with convmat.dense_bytes_limit(1000):  # a sparse T is under the guard's limit too, but small here
        assert convmat.to_linear(torch.nn.Conv1d(1, 1, 3), 5, sparse=True).out_features == 3
    with pytest.raises(ValueError, match="takes a 2-D sparse CSR weight"):
        convmat.SparseLinear(torch.zeros(2, 3))
    fc = convmat.to_linear(conv, (7, 9), sparse=True)
    with pytest.raises(ValueError, match=r"SparseLinear takes \(\.\.\., 189\), not \(2, 5\)"):
        fc(torch.zeros(2, 5))
