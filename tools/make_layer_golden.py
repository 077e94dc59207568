#!/usr/bin/env python3
"""Golden data for tests/test_layers.cpp, computed by PyTorch in float64.

Writes tests/data/layers_golden.txt: one block per case, a line
`case NAME` then `key value...` lines (sizes, flags, flattened tensors in
C order) and a blank line. Run from the repository root:

    /usr/bin/python3 tools/make_layer_golden.py
"""
import os
import random

import torch
import torch.nn.functional as F

torch.manual_seed(20261125)
torch.set_default_dtype(torch.float64)

cases = []


def case(name, **fields):
    cases.append((name, fields))


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


# ---- average pooling ------------------------------------------------------
pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
pool_cases = [
    # rank, channels, input, kernel, stride, padding, ceil, include_pad, divisor
    (1, 2, [9], [3], [2], [1], False, True, 0),
    (1, 3, [10], [4], [3], [2], True, False, 0),
    (1, 1, [7], [2], [2], [0], True, True, 0),
    (1, 2, [8], [3], [1], [1], False, True, 0),  # avg_pool1d has no divisor_override
    (3, 1, [4, 4, 3], [2, 2, 2], [1, 2, 1], [1, 0, 1], False, False, 3),
    (2, 2, [5, 6], [3, 2], [2, 2], [1, 1], True, True, 0),
    (2, 2, [5, 6], [3, 2], [2, 2], [1, 1], True, False, 0),
    (2, 3, [7, 7], [3, 3], [2, 3], [1, 0], False, False, 0),
    (2, 1, [6, 5], [2, 2], [2, 2], [0, 0], False, True, 0),
    (2, 2, [8, 9], [4, 3], [3, 2], [2, 1], True, True, 0),
    (2, 1, [5, 5], [3, 3], [1, 1], [1, 1], False, True, 4),
    (3, 2, [4, 5, 6], [2, 3, 2], [2, 2, 2], [1, 1, 0], True, False, 0),
    (3, 1, [5, 4, 4], [3, 2, 2], [2, 1, 2], [1, 0, 1], False, True, 0),
    (3, 2, [3, 5, 4], [2, 2, 3], [1, 2, 2], [0, 1, 1], True, True, 0),
]
for i, (rank, c, size, k, s, p, ceil, inc, div) in enumerate(pool_cases):
    x = torch.randn(1, c, *size)
    y = pool[rank](x, k, s, p, ceil_mode=ceil, count_include_pad=inc,
                   **({"divisor_override": div} if div else {}))
    case(f"avg_pool{rank}d_{i}", kind=["avg_pool"], rank=[rank], channels=[c], input_size=size,
         kernel_size=k, stride=s, padding=p, ceil_mode=[int(ceil)], count_include_pad=[int(inc)],
         divisor_override=[div], output_size=list(y.shape[2:]), input=flat(x), output=flat(y))

# ---- padding ----------------------------------------------------------------
pad_cases = [
    # rank, channels, input, begin, end
    (1, 2, [6], [2], [3]),
    (2, 2, [4, 5], [1, 3], [2, 0]),
    (3, 1, [3, 4, 4], [1, 0, 2], [2, 1, 1]),
]
for mode in ["constant", "reflect", "replicate", "circular"]:
    for i, (rank, c, size, begin, end) in enumerate(pad_cases):
        x = torch.randn(1, c, *size)
        torch_pad = []
        for d in reversed(range(rank)):  # F.pad lists the last dimension first
            torch_pad += [begin[d], end[d]]
        y = F.pad(x, torch_pad, mode=mode)
        name = "zeros" if mode == "constant" else mode
        case(f"pad{rank}d_{name}", kind=["pad"], rank=[rank], channels=[c], input_size=size,
             pad_begin=begin, pad_end=end, mode=[["zeros", "reflect", "replicate", "circular"].index(name)],
             output_size=list(y.shape[2:]), input=flat(x), output=flat(y))

# ---- nearest upsampling -----------------------------------------------------
for rank, c, size, scale in [(1, 2, [5], [3]), (2, 2, [3, 4], [2, 3]), (3, 1, [2, 3, 2], [2, 1, 3])]:
    x = torch.randn(1, c, *size)
    y = F.interpolate(x, scale_factor=[float(v) for v in scale], mode="nearest")
    case(f"upsample{rank}d", kind=["upsample"], rank=[rank], channels=[c], input_size=size, scale=scale,
         output_size=list(y.shape[2:]), input=flat(x), output=flat(y))


# ---- BatchNorm folded into a convolution -----------------------------------
def batch_norm_params(channels):
    return dict(gamma=torch.randn(channels), beta=torch.randn(channels),
                mean=torch.randn(channels), var=torch.rand(channels) + 0.5)


conv = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), groups=2)
bn = torch.nn.BatchNorm2d(6, eps=1e-3)
params = batch_norm_params(6)
with torch.no_grad():
    bn.weight.copy_(params["gamma"]); bn.bias.copy_(params["beta"])
    bn.running_mean.copy_(params["mean"]); bn.running_var.copy_(params["var"])
bn.eval()
x = torch.randn(1, 4, 7, 5)
y = bn(conv(x))
case("conv_batch_norm", kind=["conv_bn"], rank=[2], in_channels=[4], out_channels=[6], input_size=[7, 5],
     kernel_size=[3, 2], stride=[2, 1], padding=[1, 1], groups=[2], weight=flat(conv.weight),
     bias=flat(conv.bias), **{k: flat(v) for k, v in params.items()}, eps=[1e-3],
     input=flat(x), output=flat(y))

tconv = torch.nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
bn = torch.nn.BatchNorm1d(6)
params = batch_norm_params(6)
with torch.no_grad():
    bn.weight.copy_(params["gamma"]); bn.bias.copy_(params["beta"])
    bn.running_mean.copy_(params["mean"]); bn.running_var.copy_(params["var"])
bn.eval()
x = torch.randn(1, 4, 6)
y = bn(tconv(x))
case("conv_transpose_batch_norm", kind=["conv_transpose_bn"], rank=[1], in_channels=[4], out_channels=[6],
     input_size=[6], kernel_size=[3], stride=[2], padding=[1], output_padding=[1], groups=[2],
     weight=flat(tconv.weight), bias=flat(tconv.bias), **{k: flat(v) for k, v in params.items()},
     eps=[1e-5], input=flat(x), output=flat(y))

# ---- composition: conv, average pooling, conv as one affine layer ----------
conv1 = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
conv2 = torch.nn.Conv2d(3, 2, 2, stride=1)
x = torch.randn(1, 2, 6, 6)
y = conv2(F.avg_pool2d(conv1(x), 2, 2, 0, ceil_mode=True))
case("compose_conv_pool_conv", kind=["compose"], input_size=[6, 6], weight1=flat(conv1.weight),
     bias1=flat(conv1.bias), weight2=flat(conv2.weight), bias2=flat(conv2.bias), input=flat(x), output=flat(y))

# ---- which pooling layers PyTorch accepts ---------------------------------
# Random AvgPool{1,2,3}d shapes near the edges of what fits (padding up to
# more than half the kernel, kernels larger than the input), with PyTorch's
# verdict and, when it accepts, its output size: AvgPoolSpec::validate()
# must agree on every one.
chooser = random.Random(18)
for i in range(240):
    rank = 1 + i % 3
    size = [chooser.randint(1, 6) for _ in range(rank)]
    k = [chooser.randint(1, 5) for _ in range(rank)]
    s = [chooser.randint(1, 3) for _ in range(rank)]
    p = [chooser.randint(0, 3) for _ in range(rank)]
    ceil = chooser.random() < 0.5
    try:
        y = pool[rank](torch.zeros(1, 1, *size), k, s, p, ceil_mode=ceil)
        accepted, out = 1, list(y.shape[2:])
    except RuntimeError:
        accepted, out = 0, []
    case(f"avg_pool_accepts_{i}", kind=["avg_pool_accepts"], rank=[rank], input_size=size, kernel_size=k,
         stride=s, padding=p, ceil_mode=[int(ceil)], accepted=[accepted], output_size=out)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "layers_golden.txt")
with open(path, "w") as f:
    f.write("# Generated by tools/make_layer_golden.py (PyTorch %s, float64) - do not edit.\n" % torch.__version__)
    for name, fields in cases:
        f.write(f"case {name}\n")
        for key, values in fields.items():
            f.write(key + " " + " ".join(repr(v) if isinstance(v, float) else str(v) for v in values) + "\n")
        f.write("\n")
print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")
