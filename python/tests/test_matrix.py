"""convmat.matrix, bias and affine against the torch layer itself:
T @ vec(x) + b == vec(layer(x)) for every layer kind, dtype and format, the
formats equal to each other exactly, and the weight-array route equal to
the layer route."""

import numpy as np
import pytest
import scipy.sparse
import torch
import torch.nn.functional as F

import convmat
from conftest import DTYPES, make_layer, layer_params, relative_error, tolerance

FORMATS = ["dense", "csr", "torch", "torch_csr"]


def as_numpy(t):
    """Any format's matrix as a dense NumPy array."""
    if isinstance(t, np.ndarray):
        return t
    if scipy.sparse.issparse(t):
        return t.toarray()
    return (t.to_dense() if t.layout == torch.sparse_csr else t).numpy()


def samples(layer, size, batch=3):
    in_channels = layer.in_channels
    return torch.randn(batch, in_channels, *size, dtype=layer.weight.dtype)


def layer_output(layer, x):
    with torch.no_grad():
        return layer(x)


def keywords_of(layer):
    """The keywords that describe a torch layer beside its weights."""
    transposed = isinstance(layer, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
    return dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                padding_mode=layer.padding_mode, transposed=transposed, output_padding=layer.output_padding,
                bias=None if layer.bias is None else layer.bias.detach())


@layer_params()
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_matrix_is_the_layer(factory, size, dtype, seed):
    layer = make_layer(factory, dtype)
    x = samples(layer, size)
    y = layer_output(layer, x).reshape(len(x), -1).T.numpy()
    T = convmat.matrix(layer, size)
    b = convmat.bias(layer, size)
    assert T.dtype == b.dtype == layer.weight.detach().numpy().dtype
    assert T.shape == (y.shape[0], x[0].numel())
    X = x.reshape(len(x), -1).T.numpy()
    assert relative_error(T @ X + b[:, None], y) <= tolerance(dtype)


@layer_params()
def test_every_format_is_the_same_matrix(factory, size, seed):
    layer = make_layer(factory, torch.float64)
    dense = convmat.matrix(layer, size)
    for format in FORMATS[1:]:
        assert np.array_equal(as_numpy(convmat.matrix(layer, size, format=format)), dense), format
    csr = convmat.matrix(layer, size, format="csr")
    assert csr.nnz == convmat.info(layer, size).nonzeros
    assert csr.has_sorted_indices


@layer_params()
def test_affine_is_the_layer_on_homogeneous_coordinates(factory, size, seed):
    layer = make_layer(factory, torch.float64)
    x = samples(layer, size, batch=1)
    y = layer_output(layer, x).reshape(-1).numpy()
    for format in FORMATS:
        A = as_numpy(convmat.affine(layer, size, format=format))
        yh = A @ np.append(x.reshape(-1).numpy(), 1.0)
        assert relative_error(yh[:-1], y) <= tolerance(torch.float64), format
        assert yh[-1] == 1.0
        T, b = convmat.matrix(layer, size), convmat.bias(layer, size)
        assert np.array_equal(A[:-1, :-1], T) and np.array_equal(A[:-1, -1], b)
    assert isinstance(convmat.bias(layer, size, format="torch"), torch.Tensor)


@layer_params()
def test_weights_and_keywords_give_the_layers_matrix(factory, size, seed):
    layer = make_layer(factory, torch.float32)
    keywords = keywords_of(layer)
    for weight in (layer.weight, layer.weight.detach().numpy()):
        assert np.array_equal(convmat.matrix(weight, size, **keywords), convmat.matrix(layer, size))
        assert np.array_equal(convmat.affine(weight, size, **keywords), convmat.affine(layer, size))


@layer_params()
def test_input_size_may_be_the_full_shape(factory, size, seed):
    layer = make_layer(factory, torch.float64)
    T = convmat.matrix(layer, size)
    assert np.array_equal(convmat.matrix(layer, (layer.in_channels, *size)), T)
    assert np.array_equal(convmat.matrix(layer, torch.Size((5, layer.in_channels, *size))), T)


def test_sizes_may_be_ints_tuples_lists_or_arrays(rng):
    conv = make_layer(lambda: torch.nn.Conv1d(2, 3, 3), torch.float64)
    assert np.array_equal(convmat.matrix(conv, 9), convmat.matrix(conv, (9,)))
    w = rng.standard_normal((4, 2, 3, 2))
    T = convmat.matrix(w, (7, 9), stride=(2, 1), padding=((1, 0), (2, 2)))
    assert np.array_equal(convmat.matrix(w, np.array([7, 9]), stride=np.array([2, 1]), padding=[[1, 0], 2]), T)
    assert np.array_equal(convmat.matrix(w, [np.int64(7), 9], stride=[2, np.int32(1)], padding=np.array(
        [[1, 0], [2, 2]])), T)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_asymmetric_padding_is_padding_then_convolution(mode, rng):
    w = rng.standard_normal((3, 2, 3, 2))
    x = rng.standard_normal((2, 6, 5))
    pads = ((1, 2), (0, 1))  # (begin, end) per axis
    T = convmat.matrix(w, (6, 5), padding=pads, padding_mode=mode)
    torch_pads = (pads[1][0], pads[1][1], pads[0][0], pads[0][1])  # F.pad: last axis first
    padded = F.pad(torch.from_numpy(x)[None], torch_pads, mode="constant" if mode == "zeros" else mode)
    y = F.conv2d(padded, torch.from_numpy(w))[0].numpy()
    assert relative_error(T @ x.reshape(-1), y.reshape(-1)) <= tolerance(torch.float64)
    mixed = convmat.matrix(w, (6, 5), padding=((1, 2), 1), padding_mode=mode)  # pairs and ints may mix
    assert np.array_equal(mixed, convmat.matrix(w, (6, 5), padding=((1, 2), (1, 1)), padding_mode=mode))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["complex64", "complex128"])
def test_complex_layers(dtype, seed):
    layer = make_layer(lambda: torch.nn.Conv2d(2, 3, 3, padding=1, stride=(1, 2)), dtype)
    x = samples(layer, (5, 6), batch=1)
    y = layer_output(layer, x).reshape(-1).numpy()
    T = convmat.matrix(layer, (5, 6))
    assert T.dtype == np.dtype({torch.complex64: np.complex64, torch.complex128: np.complex128}[dtype])
    assert relative_error(T @ x.reshape(-1).numpy() + convmat.bias(layer, (5, 6)), y) <= tolerance(dtype)
    assert np.array_equal(convmat.matrix(layer, (5, 6), format="csr").toarray(), T)


def test_info_builds_nothing_and_counts_exactly(seed):
    conv = make_layer(lambda: torch.nn.Conv2d(64, 64, 3, padding=1), torch.float32)
    info = convmat.info(conv, (512, 512))  # T would take 256 TiB dense
    assert info.shape == (64 * 512 * 512, 64 * 512 * 512)
    assert info.input_shape == (64, 512, 512) and info.output_shape == (64, 512, 512)
    assert info.nonzeros == 64 * 64 * 510 * 510 * 9 + 64 * 64 * 4 * 510 * 6 + 64 * 64 * 4 * 4
    assert info.bytes["dense"] == info.shape[0] * info.shape[1] * 4
    assert info.index_dtype == np.int64  # 4.4e10 non-zeros need 64-bit indices
    assert info.bytes["csr"] == info.nonzeros * (4 + 8) + (info.shape[0] + 1) * 8
    small = make_layer(lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.float64)
    s = convmat.info(small, (7, 9))
    assert (s.shape, s.nonzeros, s.index_dtype, s.dtype) == ((80, 189), 1560, np.int32, np.float64)
    assert s.bytes["csr"] == convmat.matrix(small, (7, 9), format="csr").data.nbytes + 1560 * 4 + 81 * 4
    assert "1560" in str(s) and "80 x 189" in str(s)


@pytest.mark.parametrize("format", ["csr", "dense", "torch", "torch_csr"])
def test_row_blocks_stack_to_the_matrix(format, seed):
    conv = make_layer(lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="reflect"), torch.float64)
    blocks = [as_numpy(b) for b in convmat.row_blocks(conv, (7, 9), rows=7, format=format)]
    assert [len(b) for b in blocks] == [7] * 11 + [3]
    assert np.array_equal(np.vstack(blocks), convmat.matrix(conv, (7, 9)))
    default = list(convmat.row_blocks(conv, (7, 9)))  # one block of about 64 MiB: here all rows
    assert len(default) == 1 and np.array_equal(default[0].toarray(), convmat.matrix(conv, (7, 9)))
