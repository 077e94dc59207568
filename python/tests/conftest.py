"""Shared pieces of convmat's Python tests: the layers every test runs on,
and a random generator whose seed is printed (pytest shows it on failure)."""

import os
import zlib

import numpy as np
import pytest
import torch

nn = torch.nn

#: (id, layer factory, spatial input size): every layer kind, every padding
#: mode, strides, dilation, groups, 'same' / 'valid', transposed layers with
#: output_padding, 1-D to 3-D.
LAYERS = [
    ("conv1d_replicate_stride", lambda: nn.Conv1d(2, 4, 5, stride=3, padding=2, padding_mode="replicate"), (17,)),
    ("conv1d_same_even", lambda: nn.Conv1d(2, 2, 4, padding="same"), (9,)),
    ("conv1d_valid_nobias", lambda: nn.Conv1d(4, 2, 2, padding="valid", bias=False), (8,)),
    ("conv1d_circular_groups", lambda: nn.Conv1d(3, 6, 3, padding=2, groups=3, padding_mode="circular"), (7,)),
    ("conv2d_stride", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (7, 9)),
    ("conv2d_reflect_dilation_groups",
     lambda: nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, padding=1, padding_mode="reflect"), (6, 5)),
    ("conv2d_same_circular", lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="circular"), (5, 6)),
    ("conv2d_replicate_nobias",
     lambda: nn.Conv2d(2, 2, 3, stride=(1, 2), padding=(2, 1), padding_mode="replicate", bias=False), (6, 7)),
    ("conv2d_reflect_same_dilated", lambda: nn.Conv2d(2, 2, 3, dilation=2, padding="same", padding_mode="reflect"),
     (6, 6)),
    ("conv3d_stride", lambda: nn.Conv3d(2, 3, (3, 2, 3), stride=(1, 2, 1), padding=1), (4, 5, 4)),
    ("conv3d_circular_groups",
     lambda: nn.Conv3d(2, 4, 2, groups=2, padding=1, dilation=(1, 2, 1), padding_mode="circular"), (3, 4, 3)),
    ("conv3d_same_reflect", lambda: nn.Conv3d(1, 2, 3, padding="same", padding_mode="reflect"), (4, 4, 4)),
    ("transpose1d_output_padding", lambda: nn.ConvTranspose1d(2, 4, 3, stride=2, padding=1, output_padding=1), (5,)),
    ("transpose1d_groups_dilation",
     lambda: nn.ConvTranspose1d(4, 2, 4, stride=3, groups=2, dilation=2, output_padding=1), (4,)),
    ("transpose2d_groups",
     lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2), (4, 5)),
    ("transpose2d_dilation_nobias",
     lambda: nn.ConvTranspose2d(3, 2, (2, 3), stride=(1, 2), dilation=(2, 1), bias=False), (3, 3)),
    ("transpose3d_output_padding",
     lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, padding=1, output_padding=1), (3, 2, 3)),
    ("transpose3d_groups", lambda: nn.ConvTranspose3d(2, 4, 3, stride=(2, 1, 1), padding=(1, 0, 1), groups=2),
     (2, 3, 2)),
]

DTYPES = [torch.float32, torch.float64]


def tolerance(dtype):
    """The relative error a product in `dtype` stays within."""
    return {torch.float32: 2e-5, torch.float64: 1e-13, torch.complex64: 2e-5, torch.complex128: 1e-13}[dtype]


@pytest.fixture
def seed(request):
    """A seed per test (CONVMAT_SEED=... replays one), printed, and set in torch."""
    value = int(os.environ.get("CONVMAT_SEED", zlib.crc32(request.node.nodeid.encode())))
    print(f"seed {value} (replay: CONVMAT_SEED={value} pytest {request.node.nodeid})")
    torch.manual_seed(value)
    return value


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


def make_layer(factory, dtype):
    """The layer, in `dtype`, its weights and bias random."""
    with torch.no_grad():
        layer = factory().to(dtype)
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


def layer_params():
    return pytest.mark.parametrize("factory, size", [(f, s) for _, f, s in LAYERS], ids=[i for i, _, _ in LAYERS])


def relative_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float64).tiny))
