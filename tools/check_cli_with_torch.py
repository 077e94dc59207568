#!/usr/bin/env python3
"""Checks the convmat command against real PyTorch layers, the way a user runs it.

For each layer (torch.nn.Conv1d / Conv2d / Conv3d / ConvTranspose2d, with
stride, padding, dilation, groups, padding modes, float32 and float64):
numpy.save its weight and bias, run `convmat` to write T dense (.npy) and
sparse (.mtx) plus the bias vector b, load them with numpy.load and
scipy.io.mmread, and compare T @ x + b with the layer's output on a batch of
random inputs. Exits 1 if any relative error exceeds the dtype's tolerance.

    /usr/bin/python3 tools/check_cli_with_torch.py [--convmat build/test/app/convmat]

Needs python3-torch, python3-numpy, python3-scipy (Debian).
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import scipy.io
import torch

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


class Padded(torch.nn.Module):
    """A padding-free torch.nn.Conv*d / ConvTranspose*d with explicit padding
    around it: F.pad(x, pad) before a convolution (asymmetric padding, ONNX's
    auto_pad SAME_*), or a crop of `crop` (begin, end) per dimension after a
    transposed one (ONNX's pads on ConvTranspose)."""

    def __init__(self, layer, pad=None, crop=None):
        super().__init__()
        self.layer, self.pad, self.crop = layer, pad, crop
        self.weight, self.bias, self.in_channels = layer.weight, layer.bias, layer.in_channels

    def forward(self, x):
        if self.pad is not None:
            x = torch.nn.functional.pad(x, self.pad)
        y = self.layer(x)
        if self.crop is not None:
            y = y[(slice(None), slice(None)) + tuple(slice(b, y.shape[2 + d] - e) for d, (b, e) in enumerate(self.crop))]
        return y


def cases():
    """(description, layer, input spatial size, extra convmat flags)."""
    nn = torch.nn
    yield ("Conv2d(3, 4, 3, stride=2, padding=1)",
           nn.Conv2d(3, 4, 3, stride=2, padding=1), (7, 9), ["--stride", "2", "--padding", "1"])
    yield ("Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, padding=1, padding_mode='reflect')",
           nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, padding=1, padding_mode="reflect"), (8, 6),
           ["--dilation", "2,1", "--groups", "2", "--padding", "1", "--padding-mode", "reflect"])
    yield ("Conv2d(2, 3, 4, padding='same', padding_mode='circular')",
           nn.Conv2d(2, 3, 4, padding="same", padding_mode="circular"), (6, 5),
           ["--padding", "same", "--padding-mode", "circular"])
    yield ("Conv1d(2, 4, 5, stride=3, padding=2, padding_mode='replicate')",
           nn.Conv1d(2, 4, 5, stride=3, padding=2, padding_mode="replicate"), (17,),
           ["--stride", "3", "--padding", "2", "--padding-mode", "replicate"])
    yield ("Conv3d(2, 3, (3, 2, 3), stride=(1, 2, 1), padding=1)",
           nn.Conv3d(2, 3, (3, 2, 3), stride=(1, 2, 1), padding=1), (4, 5, 6),
           ["--stride", "1,2,1", "--padding", "1"])
    yield ("ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2)",
           nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2), (5, 4),
           ["--transposed", "--stride", "2", "--padding", "1", "--output-padding", "1", "--groups", "2"])
    # F.pad lists the last dimension first: (left, right, top, bottom).
    yield ("F.pad(1, 0, 2, 1) + Conv2d(2, 3, 3, stride=(1, 2)): --padding 2,1 --padding-end 1,0",
           Padded(nn.Conv2d(2, 3, 3, stride=(1, 2)), pad=(1, 0, 2, 1)), (6, 7),
           ["--stride", "1,2", "--padding", "2,1", "--padding-end", "1,0"])
    # ONNX's SAME_UPPER on 7 x 5 with stride 2: output 4 x 3; totals 2 (3 tall) and 1 (2 wide: after).
    yield ("F.pad(0, 1, 1, 1) + Conv2d(2, 2, (3, 2), stride=2): --padding same_upper",
           Padded(nn.Conv2d(2, 2, (3, 2), stride=2), pad=(0, 1, 1, 1)), (7, 5),
           ["--stride", "2", "--padding", "same_upper"])
    yield ("F.pad(1, 0, 1, 1) + Conv2d(2, 2, (3, 2), stride=2): --padding same_lower",
           Padded(nn.Conv2d(2, 2, (3, 2), stride=2), pad=(1, 0, 1, 1)), (7, 5),
           ["--stride", "2", "--padding", "same_lower"])
    # ConvTranspose1d(2, 3, 3, stride=2) on 4: unpadded 9; pads (0, 1) keep 8 = 4 * 2, ONNX's SAME_UPPER.
    yield ("ConvTranspose1d(2, 3, 3, stride=2) cropped (0, 1): --padding 0 --padding-end 1",
           Padded(nn.ConvTranspose1d(2, 3, 3, stride=2), crop=[(0, 1)]), (4,),
           ["--transposed", "--stride", "2", "--padding", "0", "--padding-end", "1"])
    yield ("ConvTranspose1d(2, 3, 3, stride=2) cropped (0, 1): --padding same_upper",
           Padded(nn.ConvTranspose1d(2, 3, 3, stride=2), crop=[(0, 1)]), (4,),
           ["--transposed", "--stride", "2", "--padding", "same_upper"])
    yield ("Conv2d(3, 8, 5, stride=2, padding=2) float64",
           nn.Conv2d(3, 8, 5, stride=2, padding=2).double(), (16, 16), ["--stride", "2", "--padding", "2"])


def npy_header(array):
    """The header numpy.save writes for this array (format 1.0)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    return buffer.getvalue()


def run(command):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit("FAILED: " + " ".join(command) + "\n" + done.stdout)
    return done.stdout


def check(convmat, directory, description, layer, size, flags, batch, rng):
    weight = layer.weight.detach().numpy()
    bias = layer.bias.detach().numpy()
    w_path, b_path = os.path.join(directory, "w.npy"), os.path.join(directory, "b.npy")
    np.save(w_path, weight)
    np.save(b_path, bias)
    common = [convmat, w_path, "--input-size", ",".join(map(str, size)), *flags, "--bias", b_path, "-q"]
    t_npy, t_mtx, b_vec = (os.path.join(directory, name) for name in ("T.npy", "T.mtx", "b_out.npy"))
    run(common + ["--bias-out", b_vec, "-o", t_npy])
    run(common + ["--bias-out", b_vec, "-o", t_mtx])

    with open(t_npy, "rb") as f:  # the header byte for byte as numpy.save writes it
        header = f.read(len(npy_header(np.load(t_npy, mmap_mode="r"))))
    T = np.load(t_npy)
    assert header == npy_header(T), f"{t_npy}: header {header!r} differs from numpy.save's"
    S = scipy.io.mmread(t_mtx).tocsr()
    b = np.load(b_vec)
    channels = layer.in_channels
    x = torch.from_numpy(rng.standard_normal((batch, channels, *size))).to(layer.weight.dtype)
    with torch.no_grad():
        expected = layer(x).reshape(batch, -1).numpy()
    X = x.reshape(batch, -1).numpy().T  # columns are samples
    dense = (T @ X).T + b
    sparse = (S @ X.astype(np.float64)).T + b
    scale = np.abs(expected).max()
    dense_error = np.abs(dense - expected).max() / scale
    sparse_error = np.abs(sparse - expected).max() / scale
    ok = max(dense_error, sparse_error) <= TOLERANCE[layer.weight.dtype]
    print(f"{'ok  ' if ok else 'FAIL'} {description:<82} T {T.shape[0]:>4} x {T.shape[1]:<4} "
          f"{str(T.dtype):<7} nnz {S.nnz:>6}  rel. error .npy {dense_error:.1e}  .mtx {sparse_error:.1e}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convmat", default=None, help="the convmat command (default: build/test/app/convmat or PATH)")
    parser.add_argument("--batch", type=int, default=8, help="random inputs per layer")
    parser.add_argument("--seed", type=int, default=6, help="seed of the layers and inputs")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    convmat = args.convmat or next(
        (p for p in (os.path.join(here, "..", "build", "test", "app", "convmat"), shutil.which("convmat"))
         if p and os.path.exists(p)), None)
    if args.convmat and not os.path.exists(args.convmat):
        raise SystemExit(f"--convmat {args.convmat}: no such file")
    if convmat is None:
        raise SystemExit("convmat not found: build it (cmake --build build/test --target convmat_cli) "
                         "or pass --convmat PATH")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"convmat command {convmat} against torch {torch.__version__}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}; {args.batch} random inputs per layer, seed {args.seed}")
    with tempfile.TemporaryDirectory() as directory:
        results = [check(convmat, directory, *case, args.batch, rng) for case in cases()]
    print(f"{sum(results)} of {len(results)} layers agree with PyTorch")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
