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


# ---- ONNX's conventions: auto_pad SAME_UPPER / SAME_LOWER, output_shape ----
# The pads follow ONNX's documented equations (written out here, not taken
# from convmat); output sizes are also what onnx.shape_inference infers
# (ConvTranspose with auto_pad SAME_*, Conv with auto_pad); the
# values are PyTorch's on the explicitly padded input.
import math  # noqa: E402

import onnx  # noqa: E402
import onnx.helper  # noqa: E402
import onnx.shape_inference  # noqa: E402

conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
conv_transpose = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def same_pads(size, kernel, stride, dilation, auto_pad):
    """ONNX: output ceil(D / s); total (out - 1) * s + (K - 1) * d + 1 - D, odd element at the end for SAME_UPPER."""
    begin, end = [], []
    for d_, k_, s_, l_ in zip(size, kernel, stride, dilation):
        total = max((math.ceil(d_ / s_) - 1) * s_ + (k_ - 1) * l_ + 1 - d_, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end


def torch_pads(begin, end):
    """F.pad's order: the last dimension first."""
    out = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def onnx_output_size(op, rank, channels, size, weight_shape=None, **attributes):
    """The spatial output size onnx.shape_inference gives the node."""
    inputs = [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, channels, *size])]
    names = ["x"]
    if weight_shape is not None:
        inputs.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, weight_shape))
        names.append("w")
    node = onnx.helper.make_node(op, names, ["y"], **attributes)
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", inputs, [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 13)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0]
    return [d.dim_value for d in inferred.type.tensor_type.shape.dim][2:]


for i in range(36):
    rank = 1 + i % 3
    auto_pad = ["SAME_UPPER", "SAME_LOWER"][(i // 3) % 2]
    size = [chooser.randint(1, 9) for _ in range(rank)]
    k = [chooser.randint(1, 4) for _ in range(rank)]
    s = [chooser.randint(1, 3) for _ in range(rank)]
    dil = [chooser.randint(1, 2) for _ in range(rank)]
    cin, cout = chooser.randint(1, 3), chooser.randint(1, 3)
    begin, end = same_pads(size, k, s, dil, auto_pad)
    x = torch.randn(1, cin, *size)
    w = torch.randn(cout, cin, *k)
    y = conv[rank](F.pad(x, torch_pads(begin, end)), w, stride=s, dilation=dil)
    onnx_size = onnx_output_size("Conv", rank, cin, size, [cout, cin, *k], auto_pad=auto_pad, strides=s,
                                 dilations=dil)
    assert onnx_size == list(y.shape[2:]), (onnx_size, y.shape)
    case(f"conv_same_{i}", kind=["conv_same"], rank=[rank], auto_pad=[auto_pad], in_channels=[cin],
         out_channels=[cout], input_size=size, kernel_size=k, stride=s, dilation=dil, pad_begin=begin,
         pad_end=end, output_size=onnx_size, weight=flat(w), input=flat(x), output=flat(y))

# ConvTranspose with output_shape (ONNX: total = s (D - 1) + output_padding +
# (K - 1) d + 1 - output_shape, the odd element at the beginning unless
# auto_pad is SAME_UPPER) or auto_pad SAME_* (output_shape = D * s). PyTorch
# computes the unpadded output; the padding removes its first pad_begin
# elements and keeps output_shape.
for i in range(36):
    rank = 1 + i % 3
    auto_pad = ["NOTSET", "SAME_UPPER", "SAME_LOWER"][(i // 3) % 3]
    size = [chooser.randint(1, 5) for _ in range(rank)]
    k = [chooser.randint(1, 4) for _ in range(rank)]
    s = [chooser.randint(1, 3) for _ in range(rank)]
    dil = [chooser.randint(1, 2) for _ in range(rank)]
    op = [chooser.randint(0, max(s_, l_) - 1) for s_, l_ in zip(s, dil)]
    full = [(d_ - 1) * s_ + (k_ - 1) * l_ + 1 + o_ for d_, k_, s_, l_, o_ in zip(size, k, s, dil, op)]
    given_shape = i % 2 == 0 or auto_pad == "NOTSET"  # SAME_* without output_shape: D * s
    wanted = [chooser.randint(1, f) for f in full] if given_shape else [d_ * s_ for d_, s_ in zip(size, s)]
    if any(w_ > f for w_, f in zip(wanted, full)):
        continue  # D * s beyond what the layer reaches: ONNX gives negative pads
    begin, end = [], []
    for f, w_ in zip(full, wanted):
        total = f - w_
        begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
        end.append(total - begin[-1])
    cin, cout = chooser.randint(1, 3), chooser.randint(1, 3)
    x = torch.randn(1, cin, *size)
    w = torch.randn(cin, cout, *k)
    y = conv_transpose[rank](x, w, stride=s, output_padding=op, dilation=dil)
    y = y[(slice(None), slice(None)) + tuple(slice(b, b + w_) for b, w_ in zip(begin, wanted))]
    attributes = dict(strides=s, dilations=dil, output_padding=op)
    if given_shape:
        attributes["output_shape"] = wanted
    if auto_pad != "NOTSET":
        attributes["auto_pad"] = auto_pad
    assert wanted == list(y.shape[2:]), (wanted, y.shape)
    if not given_shape and not any(op):
        # onnx 1.12's shape inference keeps only the first dimension of an
        # output_shape, and adds output_padding to D * s under SAME_*, where
        # the operator's text, its reference implementation and ONNX
        # Runtime give D * s: it is checked only where neither matters.
        inferred = onnx_output_size("ConvTranspose", rank, cin, size, [cin, cout, *k], **attributes)
        assert inferred == wanted, (inferred, wanted, attributes, size, k)
    case(f"conv_transpose_output_shape_{i}", kind=["conv_transpose_output_shape"], rank=[rank],
         auto_pad=[auto_pad], given_shape=[int(given_shape)], in_channels=[cin], out_channels=[cout],
         input_size=size, kernel_size=k, stride=s, dilation=dil, output_padding=op, pad_begin=begin, pad_end=end,
         output_size=wanted, weight=flat(w), input=flat(x), output=flat(y))


# ---- ONNX pooling: any padding, auto_pad; max pooling ----------------------
def pooled(x, rank, k, s, begin, end, dilation, ceil, out, how):
    """Pooling on the explicitly padded input by PyTorch, cut to `out` windows
    (PyTorch drops a ceil_mode window that starts in the high padding; on the
    padded input it cannot know which those are)."""
    padded = F.pad(x, torch_pads(begin, end), value=-math.inf if how == "max" else 0.0)
    if how == "max":
        y = [F.max_pool1d, F.max_pool2d, F.max_pool3d][rank - 1](padded, k, s, 0, dilation, ceil_mode=ceil)
    else:
        y = pool[rank](padded, k, s, 0, ceil_mode=ceil)
    return y[(slice(None), slice(None)) + tuple(slice(0, o) for o in out)]


def pool_output(size, k, s, begin, end, dilation, ceil):
    """PyTorch's rule, with begin and end padding."""
    out = []
    for d_, k_, s_, b, e, l_ in zip(size, k, s, begin, end, dilation):
        span = d_ + b + e - (k_ - 1) * l_ - 1
        o = (span + (s_ - 1 if ceil else 0)) // s_ + 1
        if ceil and (o - 1) * s_ >= d_ + b:
            o -= 1
        out.append(o)
    return out


def covers_input(size, k, s, begin, dilation, out):
    return all(any(0 <= o * s_ + j * l_ - b < d_ for j in range(k_))
               for d_, k_, s_, b, l_, o_ in zip(size, k, s, begin, dilation, out) for o in (0, o_ - 1))


made = 0
while made < 60:
    i = made
    rank = 1 + i % 3
    how = "max" if i % 2 else "avg"
    auto_pad = ["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER"][(i // 2) % 4]
    size = [chooser.randint(1, 7) for _ in range(rank)]
    k = [chooser.randint(1, 4) for _ in range(rank)]
    s = [chooser.randint(1, 3) for _ in range(rank)]
    dil = [chooser.randint(1, 2) for _ in range(rank)] if how == "max" else [1] * rank
    ceil = auto_pad == "NOTSET" and chooser.random() < 0.5
    include = how == "avg" and chooser.random() < 0.5
    if auto_pad == "NOTSET":
        begin = [chooser.randint(0, k_ + 1) for k_ in k]
        end = [chooser.randint(0, k_ + 1) for k_ in k]
    else:
        begin, end = same_pads(size, k, s, dil, auto_pad)
    out = pool_output(size, k, s, begin, end, dil, ceil)
    if min(out) < 1 or not covers_input(size, k, s, begin, dil, out):
        continue
    limits = all(2 * b <= k_ and 2 * e <= k_ for b, e, k_ in zip(begin, end, k))
    c = chooser.randint(1, 2)
    x = torch.randn(1, c, *size)
    if how == "max":
        y = pooled(x, rank, k, s, begin, end, dil, ceil, out, "max")
        if limits and begin == end:  # what PyTorch's own max pooling takes: the same
            direct = [F.max_pool1d, F.max_pool2d, F.max_pool3d][rank - 1](x, k, s, begin, dil, ceil_mode=ceil)
            assert torch.equal(direct, y)
    elif include:
        y = pooled(x, rank, k, s, begin, end, dil, ceil, out, "avg")
    else:  # the mean of the inputs a window covers: sum over count, both on the zero-padded input
        y = pooled(x, rank, k, s, begin, end, dil, ceil, out, "avg") / \
            pooled(torch.ones_like(x), rank, k, s, begin, end, dil, ceil, out, "avg")
    case(f"{how}_pool_onnx_{i}", kind=[f"{how}_pool_onnx"], rank=[rank], auto_pad=[auto_pad], channels=[c],
         input_size=size, kernel_size=k, stride=s, dilation=dil, pad_begin=begin, pad_end=end,
         ceil_mode=[int(ceil)], count_include_pad=[int(include)], pytorch_limits=[int(limits)],
         output_size=out, input=flat(x), output=flat(y))
    made += 1

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "layers_golden.txt")
with open(path, "w") as f:
    f.write("# Generated by tools/make_layer_golden.py (PyTorch %s, float64) - do not edit.\n" % torch.__version__)
    for name, fields in cases:
        f.write(f"case {name}\n")
        for key, values in fields.items():
            f.write(key + " " + " ".join(repr(v) if isinstance(v, float) else str(v) for v in values) + "\n")
        f.write("\n")
print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")
