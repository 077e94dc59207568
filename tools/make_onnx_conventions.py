#!/usr/bin/env python3
"""ONNX conventions for convmat-onnx's tests, one small model per convention.

Each model is built node by node with onnx.helper (attribute and input forms,
opsets 9 to 17), checked with onnx.checker, and its expected output is
computed by the equivalent torch operations (explicit F.pad, crops, pooling
on the padded input, ...), never by convmat. For each case NAME it writes,
under tests/data/onnx/conventions/:

  NAME.onnx         the model: input 'x' (N, ...), output 'y'
  NAME.input.pb     an onnx.TensorProto: a batch of 2 inputs (float32)
  NAME.output.pb    an onnx.TensorProto: torch's outputs for them (float32,
                    computed in float64)

and cases.txt, one line per case: NAME, then what it checks. The C++ test
(onnx/tests/test_models.cpp) converts every model listed there and
compares. The seed is fixed, so running it again writes the same bytes
(scripts/test.sh checks). Run:

    /usr/bin/python3 tools/make_onnx_conventions.py [--out DIR]
"""
import argparse
import math
import os

import numpy as np
import onnx
import onnx.checker
import onnx.helper as h
import onnx.numpy_helper
import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                                  "onnx", "conventions"), help="where to write (default: tests/data)")
OUT = parser.parse_args().out
rng = np.random.default_rng(20261214)
cases = []
os.makedirs(OUT, exist_ok=True)
FLOAT = onnx.TensorProto.FLOAT


def tensor(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t(array):
    """A float32 array as a float64 torch tensor (the oracle computes in float64)."""
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


def case(name, description, opset, input_shape, nodes, oracle, initializers=None, batch=2, static_batch=False,
         x=None):
    """Writes one model; `oracle(x)` is torch's output for the float64 input x."""
    initializers = initializers or {}
    if x is None:
        x = tensor(batch, *input_shape)
    with torch.no_grad():
        y = oracle(t(x)).numpy().astype(np.float32)
    n = batch if static_batch else "N"
    inputs = [h.make_tensor_value_info("x", FLOAT, [n, *input_shape])]
    graph = h.make_graph(nodes, name, inputs, [h.make_tensor_value_info("y", FLOAT, [n, *y.shape[1:]])],
                         initializer=[onnx.numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = h.make_model(graph, producer_name="tools/make_onnx_conventions.py",
                         opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 7 if opset <= 12 else 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name + ".onnx"))
    for kind, array in (("input", x), ("output", y)):
        with open(os.path.join(OUT, f"{name}.{kind}.pb"), "wb") as f:
            f.write(onnx.numpy_helper.from_array(array, name=kind).SerializeToString())
    cases.append((name, description))


def torch_pads(begin, end):
    """F.pad's order: the last dimension first."""
    out = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def same_pads(size, kernel, stride, dilation, mode):
    """ONNX's auto_pad: output ceil(D / s), the odd element at the end for SAME_UPPER."""
    begin, end = [], []
    for d, k, s, l in zip(size, kernel, stride, dilation):
        total = max((math.ceil(d / s) - 1) * s + (k - 1) * l + 1 - d, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin, end


def crop(y, begin, end):
    return y[(slice(None), slice(None)) + tuple(slice(b, y.shape[2 + i] - e) for i, (b, e) in enumerate(zip(begin, end)))]


conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
mx = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}

# ---- Conv: pads, auto_pad with strides, groups, 1-3-D --------------------------
for rank, size, k, s, d, groups, mode, opset in [
        (2, (7, 6), (3, 2), (2, 2), (1, 1), 1, "SAME_UPPER", 11),
        (2, (7, 6), (3, 2), (2, 2), (1, 1), 1, "SAME_LOWER", 13),
        (2, (8, 5), (3, 3), (2, 1), (2, 1), 2, "SAME_UPPER", 9),
        (1, (11,), (4,), (3,), (1,), 1, "SAME_LOWER", 17),
        (3, (5, 4, 6), (3, 2, 3), (2, 2, 2), (1, 1, 1), 1, "SAME_UPPER", 13),
        (2, (6, 6), (3, 3), (2, 2), (1, 1), 1, "VALID", 11),
        (2, (6, 7), (3, 2), (1, 2), (1, 1), 1, "NOTSET", 9)]:
    cin = 2 * groups
    w, b = tensor(3 * groups, cin // groups, *k), tensor(3 * groups)
    if mode == "NOTSET":
        begin, end = [2, 0], [1, 1]  # asymmetric pads
        attributes = dict(pads=begin + end)
    elif mode == "VALID":
        begin, end = [0] * rank, [0] * rank
        attributes = dict(auto_pad="VALID", pads=[1] * 2 * rank) if opset < 10 else dict(auto_pad="VALID")
    else:
        begin, end = same_pads(size, k, s, d, mode)
        attributes = dict(auto_pad=mode)
    node = h.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(s), dilations=list(d), group=groups,
                       kernel_shape=list(k), **attributes)
    case(f"conv{rank}d_{mode.lower()}_opset{opset}",
         f"Conv {rank}-D, {mode if mode != 'NOTSET' else 'asymmetric pads'}, stride {s}, dilation {d}, group {groups}",
         opset, (cin, *size), [node],
         lambda x, w=w, b=b, s=s, d=d, g=groups, p=torch_pads(begin, end), r=rank:
             conv[r](F.pad(x, p), t(w), t(b), stride=s, dilation=d, groups=g),
         {"w": w, "b": b})

# ---- ConvTranspose: pads, auto_pad, output_shape ----------------------------------
for rank, size, k, s, op, mode, shape, opset in [
        (2, (3, 4), (3, 3), (2, 2), (1, 0), "NOTSET", None, 11),          # asymmetric pads
        (2, (3, 4), (3, 3), (2, 2), (0, 0), "SAME_UPPER", None, 13),      # output = input * stride
        (2, (3, 4), (3, 3), (2, 2), (0, 0), "SAME_LOWER", None, 9),
        (2, (3, 3), (3, 3), (2, 2), (0, 0), "NOTSET", (6, 5), 13),        # output_shape, odd pad at the start
        (1, (4,), (3,), (2,), (1,), "SAME_UPPER", (8,), 17),              # output_shape with SAME_UPPER
        (2, (3, 3), (3, 3), (3, 2), (0, 0), "NOTSET", (10, 8), 11),       # larger than computed: bias after
        (3, (2, 3, 2), (2, 3, 2), (2, 1, 2), (1, 0, 0), "NOTSET", None, 13)]:
    cin, cout = 2, 3
    w, b = tensor(cin, cout, *k), tensor(cout)
    full = [(dd - 1) * ss + kk + oo for dd, kk, ss, oo in zip(size, k, s, op)]
    attributes = dict(strides=list(s), kernel_shape=list(k))
    if any(op):
        attributes["output_padding"] = list(op)
    extra = [0] * rank
    if shape is not None:
        attributes["output_shape"] = list(shape)
        if mode != "NOTSET":
            attributes["auto_pad"] = mode
        totals = [f - w_ for f, w_ in zip(full, shape)]
        extra = [max(-tt, 0) for tt in totals]
        totals = [max(tt, 0) for tt in totals]
    elif mode != "NOTSET":
        attributes["auto_pad"] = mode
        totals = [f - dd * ss for f, dd, ss in zip(full, size, s)]
    else:
        begin, end = ([1, 0, 0][:rank], [0, 1, 1][:rank]) if rank > 1 else ([1], [0])
        attributes["pads"] = begin + end
        totals = None
    if totals is not None:  # ONNX: the odd element at the end for SAME_UPPER, else at the beginning
        begin = [tt // 2 if mode == "SAME_UPPER" else tt - tt // 2 for tt in totals]
        end = [tt - bb for tt, bb in zip(totals, begin)]

    def oracle(x, w=w, b=b, s=s, op=op, begin=begin, end=end, extra=extra, r=rank):
        y = crop(conv_t[r](x, t(w), None, stride=s, output_padding=op), begin, end)
        y = F.pad(y, torch_pads([0] * r, extra))
        return y + t(b).reshape(1, -1, *([1] * r))

    label = ("output_shape " + str(shape) + " " if shape else "") + mode
    case(f"conv_transpose{rank}d_{'shape_' if shape else ''}{mode.lower()}_opset{opset}",
         f"ConvTranspose {rank}-D, {label}, stride {s}, output_padding {op}", opset, (cin, *size),
         [h.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attributes)], oracle, {"w": w, "b": b})


# ---- pooling -----------------------------------------------------------------
def pool_size(size, k, s, begin, end, d, ceil):
    """PyTorch's (and ONNX's current) rule, with begin and end padding."""
    out = []
    for dd, kk, ss, b, e, ll in zip(size, k, s, begin, end, d):
        o = (dd + b + e - (kk - 1) * ll - 1 + (ss - 1 if ceil else 0)) // ss + 1
        if ceil and (o - 1) * ss >= dd + b:
            o -= 1
        out.append(o)
    return out


def pooled(x, how, r, k, s, begin, end, d, ceil, include=True):
    out = pool_size(x.shape[2:], k, s, begin, end, d, ceil)
    cut = (slice(None), slice(None)) + tuple(slice(0, o) for o in out)
    if how == "max":
        return mx[r](F.pad(x, torch_pads(begin, end), value=-math.inf), k, s, 0, d, ceil_mode=ceil)[cut]
    total = avg[r](F.pad(x, torch_pads(begin, end)), k, s, 0, ceil_mode=ceil)[cut]
    if include:
        return total
    return total / avg[r](F.pad(torch.ones_like(x), torch_pads(begin, end)), k, s, 0, ceil_mode=ceil)[cut]


for how, rank, size, k, s, d, begin, end, ceil, include, mode, opset in [
        ("avg", 2, (7, 6), (3, 3), (2, 2), (1, 1), [1, 1], [1, 1], False, True, "NOTSET", 9),
        ("avg", 2, (7, 6), (3, 2), (2, 2), (1, 1), [2, 1], [2, 1], True, False, "NOTSET", 11),  # pads > kernel / 2
        ("avg", 2, (7, 5), (3, 2), (2, 2), (1, 1), None, None, False, False, "SAME_UPPER", 13),
        ("avg", 1, (9,), (4,), (3,), (1,), None, None, False, True, "SAME_LOWER", 10),
        ("avg", 3, (4, 5, 3), (2, 3, 2), (2, 2, 1), (1, 1, 1), [0, 2, 1], [1, 2, 1], True, True, "NOTSET", 17),
        ("max", 2, (8, 8), (3, 3), (2, 2), (1, 1), [1, 1], [1, 1], False, True, "NOTSET", 9),  # ResNet's stem pool
        ("max", 2, (7, 6), (2, 3), (2, 2), (2, 1), [1, 2], [0, 2], True, True, "NOTSET", 12),  # dilations, big pads
        ("max", 2, (7, 5), (3, 2), (2, 2), (1, 1), None, None, False, True, "SAME_LOWER", 11),
        ("max", 1, (10,), (3,), (2,), (1,), [1], [0], True, True, "NOTSET", 13),
        ("max", 3, (4, 4, 5), (2, 2, 3), (2, 2, 2), (1, 1, 1), None, None, False, True, "SAME_UPPER", 17)]:
    if begin is None:
        begin, end = same_pads(size, k, s, d, mode)
    attributes = dict(kernel_shape=list(k), strides=list(s))
    if mode == "NOTSET":
        attributes["pads"] = begin + end
    else:
        attributes["auto_pad"] = mode
    if ceil:
        attributes["ceil_mode"] = 1
    if how == "avg":
        attributes["count_include_pad"] = int(include)
    if any(dd != 1 for dd in d):
        attributes["dilations"] = list(d)
    op = "AveragePool" if how == "avg" else "MaxPool"
    label = f"pads {begin}/{end}" if mode == "NOTSET" else mode
    case(f"{how}_pool{rank}d_{mode.lower()}_opset{opset}{'_ceil' if ceil else ''}",
         f"{op} {rank}-D, {label}, stride {s}" + (", ceil_mode" if ceil else "") +
         (f", dilations {d}" if "dilations" in attributes else "") +
         (f", count_include_pad={int(include)}" if how == "avg" else ""),
         opset, (2, *size), [h.make_node(op, ["x"], ["y"], **attributes)],
         lambda x, how=how, r=rank, k=k, s=s, b=begin, e=end, d=d, c=ceil, i=include: pooled(x, how, r, k, s, b, e, d, c, i))

case("global_average_pool_opset9", "GlobalAveragePool 2-D", 9, (3, 4, 5), [h.make_node("GlobalAveragePool", ["x"], ["y"])],
     lambda x: x.mean(dim=(2, 3), keepdim=True))
case("global_max_pool_opset13", "GlobalMaxPool 2-D (a tree over 20 values per channel)", 13, (3, 4, 5),
     [h.make_node("GlobalMaxPool", ["x"], ["y"])], lambda x: x.amax(dim=(2, 3), keepdim=True))
case("global_max_pool1d_opset17", "GlobalMaxPool 1-D", 17, (2, 7), [h.make_node("GlobalMaxPool", ["x"], ["y"])],
     lambda x: x.amax(dim=2, keepdim=True))
# 1-D pooling exported as Unsqueeze + 2-D pooling + Squeeze: axes as attributes (opset 11), as inputs (opset 13).
case("pool1d_as_2d_opset11", "Unsqueeze (axes attribute) + AveragePool 2-D + Squeeze: 1-D pooling", 11, (2, 9),
     [h.make_node("Unsqueeze", ["x"], ["u"], axes=[2]),
      h.make_node("AveragePool", ["u"], ["p"], kernel_shape=[1, 3], strides=[1, 2], pads=[0, 1, 0, 1]),
      h.make_node("Squeeze", ["p"], ["y"], axes=[2])],
     lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False))
case("pool1d_as_2d_opset13", "Unsqueeze (axes input) + MaxPool 2-D + Squeeze: 1-D pooling", 13, (2, 9),
     [h.make_node("Unsqueeze", ["x", "axis"], ["u"]),
      h.make_node("MaxPool", ["u"], ["p"], kernel_shape=[1, 3], strides=[1, 2], pads=[0, 1, 0, 1]),
      h.make_node("Squeeze", ["p", "axis"], ["y"])],
     lambda x: F.max_pool1d(x, 3, 2, 1), {"axis": np.array([2], dtype=np.int64)})

# ---- activations ----------------------------------------------------------------
w = tensor(3, 2, 3, 3)
case("relu_leaky_relu_opset9", "LeakyRelu (alpha 0.1) after a Conv", 9, (2, 5, 5),
     [h.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
      h.make_node("LeakyRelu", ["c"], ["y"], alpha=0.1)],
     lambda x: F.leaky_relu(F.conv2d(x, t(w), padding=1), 0.1), {"w": w})
slope = tensor(3, 1, 1)
case("prelu_per_channel_opset13", "PRelu with a (C, 1, 1) slope", 13, (3, 4, 4),
     [h.make_node("PRelu", ["x", "slope"], ["y"])],
     lambda x: torch.where(x > 0, x, t(slope) * x), {"slope": slope})
for opset, form in [(9, "attributes"), (11, "inputs"), (13, "inputs")]:
    if form == "attributes":
        node, extra = h.make_node("Clip", ["x"], ["y"], min=0.0, max=6.0), {}
    else:
        node, extra = h.make_node("Clip", ["x", "lo", "hi"], ["y"]), {"lo": np.array(0.0, np.float32),
                                                                     "hi": np.array(6.0, np.float32)}
    case(f"clip_relu6_opset{opset}", f"Clip(0, 6), ReLU6, bounds as {form}", opset, (2, 4),
         [node], lambda x: torch.clamp(x, 0, 6), extra,
         x=tensor(2, 2, 4, scale=5.0))
case("clip_max_only_opset13", "Clip with only the max bound (input 1 omitted)", 13, (6,),
     [h.make_node("Clip", ["x", "", "hi"], ["y"])], lambda x: torch.clamp(x, max=0.5),
     {"hi": np.array(0.5, np.float32)})
case("clip_min_only_opset12", "Clip with only the min bound", 12, (6,),
     [h.make_node("Clip", ["x", "lo"], ["y"])], lambda x: torch.clamp(x, min=-0.25),
     {"lo": np.array(-0.25, np.float32)})
case("hard_sigmoid_opset9", "HardSigmoid(alpha 0.3, beta 0.4)", 9, (8,),
     [h.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], lambda x: torch.clamp(0.3 * x + 0.4, 0, 1),
     x=tensor(2, 8, scale=3.0))
case("abs_neg_opset13", "Abs then Neg", 13, (7,),
     [h.make_node("Abs", ["x"], ["a"]), h.make_node("Neg", ["a"], ["y"])], lambda x: -x.abs())
bias = tensor(1, 5)
case("max_min_elementwise_opset13", "Max of two data paths and a constant, then Min with a constant", 13, (5,),
     [h.make_node("Neg", ["x"], ["m"]), h.make_node("Max", ["x", "m", "c"], ["a"]),
      h.make_node("Min", ["a", "d"], ["y"])],
     lambda x: torch.minimum(torch.maximum(torch.maximum(x, -x), t(bias)), torch.tensor(1.0, dtype=torch.float64)),
     {"c": bias, "d": np.array([1.0], np.float32)})

# ---- elementwise affine with constants: input normalization, BatchNormalization -
mean, std = tensor(1, 3, 1, 1), np.abs(tensor(3, 1, 1)) + 0.5
case("normalize_sub_div_opset9", "(x - mean) / std with per-channel constants (1, C, 1, 1) and (C, 1, 1)", 9,
     (3, 4, 4), [h.make_node("Sub", ["x", "mean"], ["s"]), h.make_node("Div", ["s", "std"], ["y"])],
     lambda x: (x - t(mean)) / t(std), {"mean": mean, "std": std})
scale, shift = tensor(3, 1, 1), tensor(4)
case("mul_add_broadcast_opset13", "Mul by (C, 1, 1), Add a (W,) row, Sub from a constant", 13, (3, 2, 4),
     [h.make_node("Mul", ["scale", "x"], ["m"]), h.make_node("Add", ["m", "shift"], ["a"]),
      h.make_node("Sub", ["one", "a"], ["y"])],
     lambda x: 1.0 - (t(scale) * x + t(shift)),
     {"scale": scale, "shift": shift, "one": np.array(1.0, np.float32)})
case("sum_mean_opset13", "Sum and Mean of a value, a branch of it and a constant", 13, (4,),
     [h.make_node("Relu", ["x"], ["r"]), h.make_node("Sum", ["x", "r", "c"], ["s"]),
      h.make_node("Mean", ["s", "x"], ["y"])],
     lambda x: ((x + torch.relu(x) + t(shift)) + x) / 2, {"c": shift})
for opset in (9, 14, 15):
    gamma, beta, mu, var = tensor(3), tensor(3), tensor(3), np.abs(tensor(3)) + 0.5
    case(f"batch_normalization_opset{opset}", "BatchNormalization alone (not after a Conv), epsilon 1e-3", opset,
         (3, 4, 3), [h.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], epsilon=1e-3)],
         lambda x, g=gamma, b=beta, m=mu, v=var: F.batch_norm(x, t(m), t(v), t(g), t(b), False, 0.0, 1e-3),
         {"g": gamma, "b": beta, "m": mu, "v": var})
gamma, beta, mu, var = tensor(6), tensor(6), tensor(6), np.abs(tensor(6)) + 0.5
case("batch_normalization_1d_opset13", "Flatten then BatchNormalization on (N, C)", 13, (2, 3),
     [h.make_node("Flatten", ["x"], ["f"]), h.make_node("BatchNormalization", ["f", "g", "b", "m", "v"], ["y"])],
     lambda x: F.batch_norm(x.reshape(x.shape[0], -1), t(mu), t(var), t(gamma), t(beta), False, 0.0, 1e-5),
     {"g": gamma, "b": beta, "m": mu, "v": var})

# ---- Pad in every opset and mode -------------------------------------------------
for opset, mode, value, pads in [
        (9, "constant", 0.5, [0, 0, 1, 2, 0, 0, 2, 0]),    # attributes pads and value (Pad-2)
        (9, "reflect", None, [0, 0, 2, 1, 0, 0, 1, 2]),
        (11, "edge", None, [0, 0, 1, 0, 0, 0, 3, 2]),       # inputs
        (13, "constant", -1.5, [0, 1, 1, 0, 0, 2, 0, 1]),   # channels padded too
        (13, "constant", None, [0, 0, -1, 1, 0, 0, 1, -2])]:  # negative pads crop
    if opset < 11:
        node, extra = h.make_node("Pad", ["x"], ["y"], mode=mode, pads=pads, **({"value": value} if value else {})), {}
    else:
        inputs = ["x", "pads"] + (["value"] if value is not None else [])
        node = h.make_node("Pad", inputs, ["y"], mode=mode)
        extra = {"pads": np.array(pads, np.int64)}
        if value is not None:
            extra["value"] = np.array(value, np.float32)

    def oracle(x, mode=mode, value=value, pads=pads):
        torch_order = []
        for dim in reversed(range(1, 4)):  # F.pad: the last dimension first; batch never padded
            torch_order += [pads[dim], pads[dim + 4]]
        if mode == "constant":
            return F.pad(x, torch_order, value=value or 0.0)
        return F.pad(x, torch_order[:4], mode="replicate" if mode == "edge" else mode)  # spatial only

    case(f"pad_{mode}_opset{opset}{'_crop' if min(pads) < 0 else ''}",
         f"Pad mode {mode}, pads {pads}" + (f", value {value}" if value is not None else "") +
         (" as attributes" if opset < 11 else " as inputs"), opset, (2, 4, 5), [node], oracle, extra)

# ---- moving data: Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Slice ----
w1, w2 = tensor(4, 2, 3, 3), tensor(3, 2, 1, 1)
case("concat_branches_opset11", "Concat along channels of a Conv-Relu branch and a Conv-Relu-MaxPool branch", 11,
     (2, 6, 6),
     [h.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), h.make_node("Relu", ["a"], ["ra"]),
      h.make_node("Conv", ["x", "w2"], ["b"], kernel_shape=[1, 1]), h.make_node("Relu", ["b"], ["rb"]),
      h.make_node("MaxPool", ["rb"], ["pb"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
      h.make_node("Concat", ["ra", "pb", "x"], ["y"], axis=1)],
     lambda x: torch.cat([torch.relu(F.conv2d(x, t(w1), padding=1)),
                          F.max_pool2d(torch.relu(F.conv2d(x, t(w2))), 3, 1, 1), x], dim=1),
     {"w1": w1, "w2": w2})
w = tensor(2, 2, 3, 3)
case("residual_add_opset13", "Residual block: Relu, Conv, Relu, Conv, Add the Relu's output, Relu", 13, (2, 5, 5),
     [h.make_node("Relu", ["x"], ["r"]), h.make_node("Conv", ["r", "w"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
      h.make_node("Relu", ["c1"], ["r1"]), h.make_node("Conv", ["r1", "w"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
      h.make_node("Add", ["c2", "r"], ["s"]), h.make_node("Relu", ["s"], ["y"])],
     lambda x: torch.relu(F.conv2d(torch.relu(F.conv2d(torch.relu(x), t(w), padding=1)), t(w), padding=1) + torch.relu(x)),
     {"w": w})
case("residual_input_opset13", "The network's input added after two ReLU layers (carried as relu(x) - relu(-x))", 13,
     (2, 4, 4),
     [h.make_node("Conv", ["x", "w"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
      h.make_node("Conv", ["r1", "w"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c2"], ["r2"]),
      h.make_node("Sum", ["r2", "x"], ["y"])],
     lambda x: torch.relu(F.conv2d(torch.relu(F.conv2d(x, t(w), padding=1)), t(w), padding=1)) + x, {"w": w})
case("transpose_reshape_opset9", "Transpose (0, 1, 3, 2), Reshape (0, -1), Unsqueeze and Squeeze (attributes)", 9,
     (2, 3, 4),
     [h.make_node("Transpose", ["x"], ["tr"], perm=[0, 1, 3, 2]), h.make_node("Reshape", ["tr", "shape"], ["r"]),
      h.make_node("Unsqueeze", ["r"], ["u"], axes=[1, 3]), h.make_node("Squeeze", ["u"], ["y"], axes=[1])],
     lambda x: x.transpose(2, 3).reshape(x.shape[0], -1).unsqueeze(2), {"shape": np.array([0, -1], np.int64)})
B, C = tensor(4, 6), tensor(4)
case("flatten_gemm_opset9", "Flatten, Gemm with transB, alpha, beta and C", 9, (2, 3),
     [h.make_node("Flatten", ["x"], ["f"]), h.make_node("Gemm", ["f", "B", "C"], ["y"], transB=1, alpha=0.5, beta=2.0)],
     lambda x: 0.5 * x.reshape(x.shape[0], -1) @ t(B).T + 2.0 * t(C), {"B": B, "C": C})
B3 = tensor(4, 3)
case("matmul_last_axis_opset13", "MatMul of (N, C, H, W) by a (W, 3) matrix", 13, (2, 3, 4),
     [h.make_node("MatMul", ["x", "B"], ["y"])], lambda x: x @ t(B3), {"B": B3})
case("slice_opset9", "Slice of the data, starts/ends/axes as attributes", 9, (3, 6),
     [h.make_node("Slice", ["x"], ["y"], starts=[1, -4], ends=[3, 100], axes=[1, 2])], lambda x: x[:, 1:3, 2:])
case("slice_steps_opset13", "Slice with negative steps, as inputs", 13, (3, 6),
     [h.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])], lambda x: x.flip(2)[:, :, 0:5:2],
     {"s": np.array([5], np.int64), "e": np.array([0], np.int64), "a": np.array([2], np.int64),
      "st": np.array([-2], np.int64)})
case("shape_gather_reshape_opset11", "x.view(x.size(0), -1) with a fixed batch: Shape, Gather, Unsqueeze, Concat, Reshape",
     11, (3, 2, 2),
     [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
      h.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]), h.make_node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
      h.make_node("Reshape", ["x", "shape"], ["y"])],
     lambda x: x.reshape(x.shape[0], -1),
     {"zero": np.array(0, np.int64), "minus_one": np.array([-1], np.int64)}, static_batch=True)
case("identity_dropout_opset12", "Identity and Dropout (ratio and training_mode inputs)", 12, (5,),
     [h.make_node("Identity", ["x"], ["i"]), h.make_node("Dropout", ["i", "ratio", "training"], ["y"])],
     lambda x: x, {"ratio": np.array(0.5, np.float32), "training": np.array(False)})
case("dropout_opset9", "Dropout with the ratio attribute", 9, (5,), [h.make_node("Dropout", ["x"], ["y"], ratio=0.3)],
     lambda x: x)

# torch's export of x.squeeze(2) when it has lost the shape: a shape check
# on constants (Shape, Gather, Equal) and an If taking one branch; and a
# Sigmoid nothing reads, which is never lowered.
branch_output = [h.make_tensor_value_info("b", FLOAT, None)]
case("if_shape_check_opset13", "Shape, Gather, Equal and If (a constant condition), an unused Sigmoid", 13, (3, 1, 4),
     [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "two"], ["d"], axis=0),
      h.make_node("Equal", ["d", "one"], ["c"]), h.make_node("Sigmoid", ["x"], ["unused"]),
      h.make_node("If", ["c"], ["y"],
                  then_branch=h.make_graph([h.make_node("Squeeze", ["x", "axes"], ["b"])], "then", [], branch_output,
                                           initializer=[onnx.numpy_helper.from_array(np.array([2], np.int64), "axes")]),
                  else_branch=h.make_graph([h.make_node("Identity", ["x"], ["b"])], "else", [], branch_output))],
     lambda x: x.squeeze(2), {"two": np.array(2, np.int64), "one": np.array(1, np.int64)}, static_batch=True)

# ---- curved activations: each a layer of its own; Softmax after the last Gemm --
for op, opset, attributes, oracle in [
        ("Sigmoid", 13, {}, torch.sigmoid),
        ("Tanh", 13, {}, torch.tanh),
        ("Softplus", 13, {}, F.softplus),
        ("Softsign", 13, {}, F.softsign),
        ("Elu", 13, {"alpha": 0.7}, lambda v: F.elu(v, 0.7)),
        ("Selu", 13, {}, torch.selu),
        ("Celu", 12, {"alpha": 1.5}, lambda v: F.celu(v, 1.5)),
        ("HardSwish", 14, {}, F.hardswish),
        ("Exp", 13, {}, torch.exp),
        ("Erf", 13, {}, torch.erf)]:
    w1, w2 = tensor(3, 2, 3, 3, scale=0.5), tensor(2, 3, 3, 3, scale=0.5)
    case(f"{op.lower()}_between_convs_opset{opset}", f"Conv, {op}{''.join(f' ({k} {v})' for k, v in attributes.items())}, Conv: Gemm, {op}, Gemm", opset,
         (2, 5, 5),
         [h.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]), h.make_node(op, ["c"], ["a"], **attributes),
          h.make_node("Conv", ["a", "w2"], ["y"])],
         lambda x, w1=w1, w2=w2, f=oracle: F.conv2d(f(F.conv2d(x, t(w1), padding=1)), t(w2)), {"w1": w1, "w2": w2})

w1, w2, fc = tensor(4, 1, 3, 3, scale=0.5), tensor(6, 4, 3, 3, scale=0.3), tensor(5, 6 * 2 * 2, scale=0.3)
case("lenet_tanh_softmax_opset13", "LeNet as of 1998: Conv, Tanh, AveragePool, Conv, Sigmoid, Flatten, Gemm, Softmax",
     13, (1, 10, 10),
     [h.make_node("Conv", ["x", "w1"], ["c1"]), h.make_node("Tanh", ["c1"], ["t1"]),
      h.make_node("AveragePool", ["t1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
      h.make_node("Conv", ["p1", "w2"], ["c2"]), h.make_node("Sigmoid", ["c2"], ["s2"]),
      h.make_node("Flatten", ["s2"], ["f"]), h.make_node("Gemm", ["f", "fc"], ["g"], transB=1),
      h.make_node("Softmax", ["g"], ["y"], axis=-1)],
     lambda x: F.softmax(torch.sigmoid(F.conv2d(F.avg_pool2d(torch.tanh(F.conv2d(x, t(w1))), 2), t(w2)))
                         .flatten(1) @ t(fc).T, dim=1),
     {"w1": w1, "w2": w2, "fc": fc})
fc = tensor(4, 2 * 3 * 3)
case("log_softmax_opset11", "Gemm then LogSoftmax over the flattened axes from axis 1 (opset < 13)", 11, (2, 3, 3),
     [h.make_node("Flatten", ["x"], ["f"]), h.make_node("Gemm", ["f", "fc"], ["g"], transB=1),
      h.make_node("LogSoftmax", ["g"], ["y"], axis=1)],
     lambda x: F.log_softmax(x.flatten(1) @ t(fc).T, dim=1), {"fc": fc})
w1, w2 = tensor(2, 2, 3, 3, scale=0.5), tensor(2, 2, 3, 3, scale=0.5)
case("tanh_of_relu_and_linear_opset13", "tanh(relu(conv(x)) + conv(x)): the linear branch carried through the "
     "ReLU layer, then a Tanh layer", 13, (2, 4, 4),
     [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r"]),
      h.make_node("Conv", ["x", "w2"], ["c2"], pads=[1, 1, 1, 1]), h.make_node("Add", ["r", "c2"], ["s"]),
      h.make_node("Tanh", ["s"], ["y"])],
     lambda x: torch.tanh(torch.relu(F.conv2d(x, t(w1), padding=1)) + F.conv2d(x, t(w2), padding=1)),
     {"w1": w1, "w2": w2})
case("tanh_carried_through_relu_opset13", "relu(conv(tanh(x))) + tanh(x): Tanh's outputs, negative too, carried "
     "through the ReLU layer after them", 13, (2, 4, 4),
     [h.make_node("Tanh", ["x"], ["a"]), h.make_node("Conv", ["a", "w1"], ["c"], pads=[1, 1, 1, 1]),
      h.make_node("Relu", ["c"], ["r"]), h.make_node("Add", ["r", "a"], ["y"])],
     lambda x: torch.relu(F.conv2d(torch.tanh(x), t(w1), padding=1)) + torch.tanh(x), {"w1": w1})

with open(os.path.join(OUT, "cases.txt"), "w") as f:
    f.write("# Generated by tools/make_onnx_conventions.py - do not edit. NAME then what it checks.\n")
    for name, description in cases:
        f.write(f"{name} {description}\n")
print(f"wrote {len(cases)} models to {os.path.normpath(OUT)}")
