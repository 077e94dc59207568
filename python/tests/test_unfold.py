"""unfold and fold against torch.nn.functional.unfold / fold, and the
weight Jacobian against torch.autograd's."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convmat
from conftest import make_layer, relative_error

# Zero-padded 2-D layers, which F.unfold and F.fold take: (kernel, stride, padding, dilation, input size).
UNFOLD_CASES = [
    ((3, 3), (1, 1), (1, 1), (1, 1), (6, 7)),
    ((2, 3), (2, 1), (0, 2), (1, 2), (7, 8)),
    ((3, 2), (3, 2), (1, 0), (2, 1), (9, 5)),
]


@pytest.mark.parametrize("kernel, stride, padding, dilation, size", UNFOLD_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_unfold_and_fold_are_torchs(kernel, stride, padding, dilation, size, dtype, seed):
    options = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation)
    conv = make_layer(lambda: torch.nn.Conv2d(3, 2, kernel, stride=stride, padding=padding, dilation=dilation), dtype)
    x = torch.randn(3, *size, dtype=dtype)
    columns = convmat.unfold(conv, size, x)
    assert np.array_equal(columns, F.unfold(x[None], **options)[0].numpy())
    c = torch.randn(*columns.shape, dtype=dtype)
    folded = convmat.fold(conv, size, c)
    expected = F.fold(c[None], output_size=size, **options)[0].numpy()
    assert folded.shape == (3, *size) and folded.dtype == expected.dtype
    assert relative_error(folded, expected) <= (1e-6 if dtype == torch.float32 else 1e-14)


def test_unfold_and_fold_take_every_padding_mode_and_rank(rng):
    w = rng.standard_normal((4, 2, 3, 2, 2))
    x = rng.standard_normal((2, 4, 3, 5))
    for mode in ("zeros", "reflect", "replicate", "circular"):
        keywords = dict(padding=1, padding_mode=mode)
        columns = convmat.unfold(w, (4, 3, 5), x, **keywords)
        T = convmat.matrix(w, (4, 3, 5), **keywords)
        # The convolution is the weights times the unfold matrix ...
        assert relative_error((w.reshape(4, -1) @ columns).reshape(-1), T @ x.reshape(-1)) <= 1e-14, mode
        # ... and fold is unfold's adjoint: <unfold(x), c> == <x, fold(c)>.
        c = rng.standard_normal(columns.shape)
        folded = convmat.fold(w, (4, 3, 5), c, **keywords)
        assert abs(np.vdot(columns, c) - np.vdot(x, folded)) <= 1e-12 * np.abs(columns).sum(), mode


@pytest.mark.parametrize("factory, size", [
    (lambda: torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect"), (6, 5)),
    (lambda: torch.nn.Conv1d(3, 2, 4, dilation=2, padding="same", padding_mode="circular"), (9,)),
    (lambda: torch.nn.Conv3d(2, 2, 2, padding=1), (3, 2, 3)),
], ids=["conv2d", "conv1d", "conv3d"])
def test_weight_jacobian_is_autograds(factory, size, seed):
    conv = make_layer(factory, torch.float64)
    x = torch.randn(conv.in_channels, *size, dtype=torch.float64)
    J = convmat.weight_jacobian(conv, size, x)
    expected = torch.autograd.functional.jacobian(lambda w: _with_weight(conv, w, x), conv.weight.detach())
    expected = expected.reshape(J.shape[0], -1).numpy()
    assert J.shape == (conv(x[None]).numel(), conv.weight.numel())
    assert relative_error(J, expected) <= 1e-14


def _with_weight(conv, weight, x):
    """conv(x) without bias, with `weight` in place of conv.weight."""
    if conv.padding_mode != "zeros":
        x = F.pad(x[None], conv._reversed_padding_repeated_twice, mode=conv.padding_mode)[0]
        padding = 0
    else:
        padding = conv.padding
    convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.ndim - 2]
    return convolve(x[None], weight, None, conv.stride, padding, conv.dilation, conv.groups)[0].reshape(-1)
