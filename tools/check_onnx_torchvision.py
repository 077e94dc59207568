#!/usr/bin/env python3
"""convmat-onnx on torchvision's architectures, compared with torch.

Each network (random weights, BatchNorm statistics randomized, eval mode) is
exported with torch.onnx.export (opset 13, batch dimension "N"), converted
by convmat-onnx to its fully-connected form, and that form is run here on a
batch of random inputs:

  - the Gemm + Relu ONNX model, read back with onnx.load (its weights in
    ONNX's external data when --external-data or past 2 GiB), evaluated
    with numpy in float32, the way a runtime would;
  - the --sparse form, one Matrix Market file per layer, evaluated with
    scipy in float64.

Both must match the torch model's outputs (computed in float64) to a
relative 1e-5 (float32) and 1e-6 (float64, on the 9 significant digits
Matrix Market keeps of each value).

The inputs are 3 x 16 x 16 by default: the dense Gemm weights then take 340
MB for ResNet-18 (the widest ReLU layers are its stem and the max pooling
tree after it, 4096 to 6400 units), where 3 x 32 x 32 would take 6 GB; its
--sparse form is 530 MB there (--size 3,32,32 runs it). The networks:

  resnet18      torchvision.models.resnet18: max pooling, residual Adds (with
                1x1 downsampling), global average pooling
  vgg11         torchvision.models.VGG with make_layers(cfg 'A') at 1/8 width:
                max pooling after each stage, the classifier's Dropouts
  mobilenet_v2  torchvision.models.mobilenet_v2(width_mult=0.25): depthwise
                convolutions, ReLU6 (Clip), inverted residuals

Prints, per network and form: layers, non-zeros, bytes, seconds, the largest
error. Files go to a temporary directory, removed as each network is done.

    /usr/bin/python3 tools/check_onnx_torchvision.py --convmat-onnx build/test/onnx/convmat-onnx

Needs python3-torch, python3-torchvision, python3-onnx, python3-numpy,
python3-scipy (Debian).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnx.numpy_helper
import scipy.io
import torch
import torchvision


def randomize_batch_norm(model):
    """Non-trivial running statistics, so that folding BatchNorm matters."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)


def networks(size):
    """(name, model, input shape without the batch)."""
    resnet = torchvision.models.resnet18(num_classes=10)
    vgg = torchvision.models.VGG(torchvision.models.vgg.make_layers([8, "M", 16, "M", 32, 32, "M", 64, 64, "M"]),
                                 num_classes=10, init_weights=True)
    # VGG's head is sized for 224 x 224 inputs (512 x 7 x 7 features): the
    # same head, Linear-ReLU-Dropout twice then Linear, sized for these.
    features = 64 * (size[1] // 16) * (size[2] // 16)
    vgg.avgpool = torch.nn.Identity()
    vgg.classifier = torch.nn.Sequential(torch.nn.Linear(features, 128), torch.nn.ReLU(True), torch.nn.Dropout(),
                                         torch.nn.Linear(128, 128), torch.nn.ReLU(True), torch.nn.Dropout(),
                                         torch.nn.Linear(128, 10))
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    return [("resnet18", resnet, size), ("vgg11", vgg, size), ("mobilenet_v2", mobilenet, size)]


def run(command):
    started = time.time()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit("FAILED: " + " ".join(command) + "\n" + done.stdout)
    return done.stdout, time.time() - started


def gemm_relu(path, x):
    """The Gemm/Relu model at `path` on x (N, features) in float32, checking it holds nothing else."""
    model = onnx.load(path)  # reads external data beside it
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    values[model.graph.input[0].name] = x.astype(np.float32)
    for node in model.graph.node:
        if node.op_type == "Relu":
            values[node.output[0]] = np.maximum(values[node.input[0]], 0)
            continue
        assert node.op_type == "Gemm", node.op_type
        assert [(a.name, a.i) for a in node.attribute] == [("transB", 1)]
        a, w, b = (values[name] for name in node.input)
        values[node.output[0]] = a @ w.T + b
    return values[model.graph.output[0].name]


def matrix_market(prefix, layers, x):
    """The Matrix Market layers [T b] on x (N, features) in float64."""
    y = x.astype(np.float64).T
    for i, relu in enumerate(layers):
        a = scipy.io.mmread(f"{prefix}.layer{i}.mtx").tocsr()
        y = a[:, :-1] @ y + a[:, -1].toarray()
        if relu:
            y = np.maximum(y, 0)
    return y.T


def check(tool, directory, name, model, shape, batch, external):
    randomize_batch_norm(model)
    model.eval()
    x = torch.randn(batch, *shape)
    with torch.no_grad():  # the reference in float64: both forms' own rounding shows
        expected = model.double()(x.double()).numpy()
    model.float()
    path = os.path.join(directory, name + ".onnx")
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["output"], opset_version=13,
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    flat = x.reshape(batch, -1).numpy()
    scale = max(1.0, np.abs(expected).max())
    results = []

    out = os.path.join(directory, name + "_fc.onnx")
    log, seconds = run([tool, *(["--external-data"] if external else []), path, out])
    layers = [bool(m.group(1)) for m in re.finditer(r"^  layer \d+: Gemm \d+ x \d+( \+ Relu)?", log, re.M)]
    nonzeros = int(re.search(r"layers, (\d+) non-zeros", log).group(1))
    weight_bytes = int(re.search(r"(\d+) bytes of weights", log).group(1))
    error = np.abs(gemm_relu(out, flat) - expected).max() / scale
    results.append(("Gemm+Relu ONNX, float32" + (", external data" if external else ""), len(layers), nonzeros,
                    weight_bytes, seconds, error, 1e-5))
    for f in os.listdir(directory):
        if f.startswith(name + "_fc.onnx"):
            os.remove(os.path.join(directory, f))

    prefix = os.path.join(directory, name + "_fc")
    log, seconds = run([tool, "--sparse", path, prefix])
    text_bytes = int(re.search(r"Matrix Market: (\d+) bytes", log).group(1))
    error = np.abs(matrix_market(prefix, layers, flat) - expected).max() / scale
    results.append(("--sparse Matrix Market, float64", len(layers), nonzeros, text_bytes, seconds, error, 1e-6))
    for f in os.listdir(directory):
        os.remove(os.path.join(directory, f))

    print(f"{name}: input (N, {', '.join(map(str, shape))}), {sum(p.numel() for p in model.parameters())} parameters; "
          f"exported: {', '.join(ops)}")
    ok = True
    for form, count, nnz, size, seconds, error, tolerance in results:
        good = error <= tolerance
        ok = ok and good
        print(f"  {'ok  ' if good else 'FAIL'} {form:<41} {count:>3} layers, {nnz:>10,} non-zeros, "
              f"{size:>13,} bytes, {seconds:6.1f} s, largest error {error:.1e} (relative; allowed {tolerance:.0e})")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convmat-onnx", default=None, help="the converter (default: build/test/onnx/convmat-onnx)")
    parser.add_argument("--size", default="3,16,16", help="input shape without the batch (default 3,16,16)")
    parser.add_argument("--batch", type=int, default=8, help="random inputs per network")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--only", default=None, help="one network by name")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    tool = args.convmat_onnx or os.path.join(here, "..", "build", "test", "onnx", "convmat-onnx")
    if not os.path.exists(tool):
        raise SystemExit(f"{tool}: no such file; build convmat-onnx or pass --convmat-onnx")
    torch.manual_seed(args.seed)
    size = tuple(int(v) for v in args.size.split(","))
    print(f"convmat-onnx {tool} on torchvision {torchvision.__version__} (torch {torch.__version__}, "
          f"onnx {onnx.__version__}); {args.batch} random inputs per network, seed {args.seed}")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for i, (name, model, shape) in enumerate(networks(size)):
            if args.only and name != args.only:
                continue
            results.append(check(tool, directory, name, model, shape, args.batch, external=i == 0))
    print(f"{sum(results)} of {len(results)} networks agree with torch")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
