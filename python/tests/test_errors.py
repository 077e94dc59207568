"""Bad inputs: each refused with the right exception and a message naming
the values involved, or (non-contiguous weights) handled; never a crash."""

import numpy as np
import pytest
import torch

import convmat
from convmat import _convmat
from conftest import make_layer


@pytest.fixture
def conv():
    return make_layer(lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.float32)


def test_input_size_of_the_wrong_length(conv):
    with pytest.raises(ValueError, match=r"input_size=\(7,\) must be the spatial size \(2 numbers\)"):
        convmat.matrix(conv, (7,))
    with pytest.raises(ValueError, match=r"input_size=\(1, 2, 3, 7, 9\)"):
        convmat.matrix(conv, (1, 2, 3, 7, 9))


def test_input_size_whose_channels_are_not_the_layers(conv):
    with pytest.raises(ValueError, match=r"input_size=\(5, 7, 9\) has 5 channels, but Conv2d\(3, 4.*in_channels=3"):
        convmat.matrix(conv, (5, 7, 9))
    with pytest.raises(ValueError, match=r"has 2 channels"):
        convmat.matrix(conv.weight, (8, 2, 7, 9))


def test_input_smaller_than_the_kernel_gives_the_librarys_message():
    with pytest.raises(ValueError, match=r"^convmat: kernel does not fit: input_size=\(2, 9\), kernel_size=\(5, 3\)"):
        convmat.matrix(np.ones((1, 1, 5, 3), np.float32), (2, 9))


@pytest.mark.parametrize("layer, name", [
    (torch.nn.Linear(3, 4), "torch.nn.modules.linear.Linear"),
    (torch.nn.MaxPool2d(2), "torch.nn.modules.pooling.MaxPool2d"),
    ("conv.npy", "str"),
    ([[1.0]], "list"),
])
def test_unknown_layer_kinds_raise_type_error_naming_them(layer, name):
    with pytest.raises(TypeError, match=rf"cannot read a {name}"):
        convmat.matrix(layer, (7, 9))


def test_keywords_with_a_torch_layer_are_refused(conv):
    with pytest.raises(TypeError, match=r"padding, stride come from the Conv2d itself"):
        convmat.matrix(conv, (7, 9), stride=1, padding=0)


@pytest.mark.parametrize("weight, dtype", [
    (np.ones((4, 3, 3, 3), np.int64), "int64"),
    (np.ones((4, 3, 3, 3), np.float16), "float16"),
    (np.ones((4, 3, 3, 3), ">f4"), ">f4"),
    (torch.ones(4, 3, 3, 3, dtype=torch.bfloat16), "torch.bfloat16"),
    (torch.ones(4, 3, 3, 3, dtype=torch.int32), "torch.int32"),
])
def test_weights_of_other_dtypes_are_refused_naming_the_dtype(weight, dtype):
    with pytest.raises(TypeError, match=rf"weight has dtype {dtype}; convmat takes float32, float64"):
        convmat.matrix(weight, (7, 9))


def test_non_contiguous_weights_are_made_contiguous(rng):
    w = rng.standard_normal((3, 4, 3, 3))
    expected = convmat.matrix(np.ascontiguousarray(w.transpose(1, 0, 2, 3)), (6, 6))
    assert np.array_equal(convmat.matrix(w.transpose(1, 0, 2, 3), (6, 6)), expected)  # a transposed view
    assert np.array_equal(convmat.matrix(np.asfortranarray(w.transpose(1, 0, 2, 3)), (6, 6)), expected)
    wide = rng.standard_normal((4, 3, 3, 6))
    view = wide[:, :, :, ::2]  # strided
    assert np.array_equal(convmat.matrix(view, (6, 6)), convmat.matrix(view.copy(), (6, 6)))
    tensor = torch.from_numpy(wide).permute(0, 1, 3, 2)[:, :, ::2]  # a non-contiguous tensor
    assert np.array_equal(convmat.matrix(tensor, (6, 6)), convmat.matrix(tensor.contiguous(), (6, 6)))


def test_the_binding_never_reads_past_the_weights():
    # The package derives the shape from the weights; called directly with a
    # shape that needs more weights than it is given, the library refuses.
    shape = _convmat.LayerShape(transposed=False, in_channels=3, out_channels=4, groups=1, input_size=[7, 9],
                                kernel_size=[3, 3], stride=[1, 1], dilation=[1, 1], padding="explicit",
                                padding_begin=[0, 0], padding_end=[0, 0], output_padding=[0, 0], padding_mode="zeros")
    for build in (_convmat.dense, _convmat.csr, _convmat.Operator,
                  lambda shape, weight: _convmat.singular_values(shape, weight, 0, 0.0, 0, 2019),
                  lambda shape, weight: _convmat.spectral_norm_bound(shape, weight, 0.0, 0, 2019)):
        with pytest.raises(ValueError, match=r"weight has 10 elements .* but the layer needs 108"):
            build(shape, np.ones(10, np.float32))
    with pytest.raises(ValueError, match=r"must be C-contiguous"):
        _convmat.dense(shape, np.ones((108, 2), np.float32)[:, 0])
    with pytest.raises(TypeError, match=r"not int64"):
        _convmat.dense(shape, np.ones(108, np.int64))
    with pytest.raises(ValueError, match=r"stride has 1 entries, but the layer has 2 spatial dimensions"):
        _convmat.dense(_convmat.LayerShape(**{**_fields(shape), "stride": [1]}), np.ones(108, np.float32))


def _fields(shape):
    names = ["transposed", "in_channels", "out_channels", "groups", "input_size", "kernel_size", "stride",
             "dilation", "padding", "padding_begin", "padding_end", "output_padding", "padding_mode"]
    return {name: getattr(shape, name) for name in names}


@pytest.mark.parametrize("keywords, message", [
    (dict(padding="full"), r"padding must be an int, 'same', 'valid'"),
    (dict(padding=(1, 2, 3)), r"padding=\(1, 2, 3\) has 3 entries, but the layer has 2 spatial dimensions"),
    (dict(padding=((1, 2, 3), 1)), r"padding entry \(1, 2, 3\) must be an int or a \(begin, end\) pair"),
    (dict(padding=-1), r"padding must not be negative"),
    (dict(padding="same", stride=2), r"padding='same' needs stride 1"),
    (dict(stride=(1, 0)), r"stride must be positive in every dimension: stride=\(1, 0\)"),
    (dict(groups=3), r"channels must be divisible by groups: in_channels=9, out_channels=4, groups=3"),
    (dict(padding_mode="mirror"), r"padding_mode must be zeros, reflect, replicate or circular, not 'mirror'"),
    (dict(padding=7, padding_mode="reflect"), r"reflect padding must be smaller than the input"),
    (dict(transposed=True, padding_mode="reflect"), r"pads with zeros only"),
    (dict(transposed=True, padding="same"), r"symmetric padding"),
    (dict(transposed=True, output_padding=2), r"output_padding must be smaller than either stride or dilation"),
    (dict(bias=np.ones(3, np.float32)), r"bias has 3 elements .* out_channels=4"),
    (dict(stride=1.5), r"stride must be an integer, not 1.5"),
])
def test_bad_keywords_raise_value_error_with_the_values(keywords, message):
    with pytest.raises((ValueError, TypeError), match=message):
        convmat.affine(np.ones((4, 3, 3, 3), np.float32), (7, 9), **keywords)


def test_bad_format_and_arguments(conv):
    with pytest.raises(ValueError, match=r"format must be one of 'dense', 'csr', 'torch', 'torch_csr', not 'coo'"):
        convmat.matrix(conv, (7, 9), format="coo")
    with pytest.raises(ValueError, match=r"format must be one of 'dense', 'torch', not 'csr'"):
        convmat.bias(conv, (7, 9), format="csr")
    with pytest.raises(ValueError, match=r"rows must be an int >= 1, not 0"):
        convmat.row_blocks(conv, (7, 9), rows=0)
    with pytest.raises(ValueError, match=r"k must be an int >= 1, not 0"):
        convmat.singular_values(conv, (7, 9), k=0)
    with pytest.raises(ValueError, match=r"max_iterations must be an int >= 1, not -1"):
        convmat.spectral_norm(conv, (7, 9), max_iterations=-1)
    with pytest.raises(RuntimeError, match=r"did not converge in .* raise SpectralNormOptions::max_iterations"):
        convmat.singular_values(conv, (7, 9), k=3, max_iterations=2, tolerance=1e-15)
    with pytest.raises(ValueError, match=r"x has shape \(3, 7, 8\) \(168 values\), .* takes one sample of shape "
                                         r"\(3, 7, 9\) \(189 values\)"):
        convmat.unfold(conv, (7, 9), np.ones((3, 7, 8), np.float32))
    with pytest.raises(ValueError, match=r"fold needs a 27 x 20 matrix"):
        convmat.fold(conv, (7, 9), np.ones((27, 21), np.float32))
    with pytest.raises(TypeError, match=r"missing a required argument: 'input_size'"):
        convmat.matrix(conv)


def test_transposed_layers_where_the_library_has_convolutions_only():
    t = make_layer(lambda: torch.nn.ConvTranspose2d(2, 3, 3), torch.float32)
    for call in (lambda: convmat.row_blocks(t, (4, 4)), lambda: convmat.unfold(t, (4, 4), np.ones(32, np.float32)),
                 lambda: convmat.fold(t, (4, 4), np.ones((18, 36), np.float32)),
                 lambda: convmat.weight_jacobian(t, (4, 4), np.ones(32, np.float32))):
        with pytest.raises(TypeError, match=r"takes a convolution \(Conv1d/2d/3d\)"):
            call()


def test_the_memory_guard_raises_memory_error_suggesting_csr(conv):
    assert convmat.max_dense_bytes() > 2**30  # half the machine's memory by default
    with convmat.dense_bytes_limit(20_000):
        assert convmat.max_dense_bytes() == 20_000
        for build in (lambda: convmat.matrix(conv, (7, 9)), lambda: convmat.matrix(conv, (7, 9), format="torch"),
                      lambda: convmat.affine(conv, (7, 9)), lambda: next(convmat.row_blocks(conv, (7, 9), rows=80,
                                                                                            format="dense"))):
            with pytest.raises(MemoryError, match=r"the (dense|affine) matrix would be \d+ x \d+ .* more than "
                                                  r"max_dense_bytes\(\) = 20000.*format=\"csr\""):
                build()
        assert convmat.matrix(conv, (7, 9), format="csr").nnz == 1560  # 12804 bytes as CSR: within the limit
        assert convmat.operator(conv, (7, 9)).shape == (80, 189)
    with convmat.dense_bytes_limit(10_000):  # the sparse forms are held to it too, by their exact size
        with pytest.raises(MemoryError, match=r"the sparse matrix \(80 x 189\) would take 12804 bytes"):
            convmat.matrix(conv, (7, 9), format="csr")
    assert convmat.max_dense_bytes() > 2**30  # restored
    previous = convmat.set_max_dense_bytes(None)
    try:
        assert convmat.max_dense_bytes() is None
    finally:
        convmat.set_max_dense_bytes(previous)
    with pytest.raises(ValueError, match=r"the limit must be an int >= 0, not -1"):
        convmat.set_max_dense_bytes(-1)


def test_uninitialized_lazy_layers_are_refused():
    with pytest.raises(ValueError, match=r"has not been initialized yet"):
        convmat.matrix(torch.nn.LazyConv2d(4, 3), (7, 9))
