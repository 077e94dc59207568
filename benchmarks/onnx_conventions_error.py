#!/usr/bin/env python3
"""The largest relative error of convmat-onnx over the convention models:
each model of tests/data/onnx/conventions is converted by the command, the
written model (Gemm layers and activations) is evaluated here in float32
with NumPy, by ONNX's definitions, and compared with torch's stored output
(relative to the largest expected magnitude, at least 1, as the C++ test).

  /usr/bin/python3 benchmarks/onnx_conventions_error.py --convmat-onnx build/test/onnx/convmat-onnx
"""
import argparse
import math
import os
import subprocess
import tempfile

import numpy as np
import onnx
import onnx.numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVENTIONS = os.path.join(ROOT, "tests", "data", "onnx", "conventions")
erf = np.vectorize(math.erf, otypes=[np.float32])


def activation(node, v):
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    op = node.op_type
    if op == "Relu": return np.maximum(v, 0)
    if op == "Sigmoid": return 1 / (1 + np.exp(-v))
    if op == "Tanh": return np.tanh(v)
    if op == "Softplus": return np.log1p(np.exp(v))
    if op == "Softsign": return v / (1 + np.abs(v))
    if op == "Elu": return np.where(v < 0, a.get("alpha", 1.0) * np.expm1(v), v)
    if op == "Selu":
        alpha, gamma = a.get("alpha", 1.6732632), a.get("gamma", 1.0507010)
        return np.where(v > 0, gamma * v, gamma * alpha * np.expm1(v))
    if op == "Celu":
        alpha = a.get("alpha", 1.0)
        return np.maximum(0, v) + np.minimum(0, alpha * np.expm1(v / alpha))
    if op == "HardSwish": return v * np.clip(v / 6 + 0.5, 0, 1)
    if op == "Exp": return np.exp(v)
    if op == "Erf": return erf(v)
    if op in ("Softmax", "LogSoftmax"):
        z = v - v.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(z).sum(axis=1, keepdims=True))
        return z - log_sum if op == "LogSoftmax" else np.exp(z - log_sum)
    raise SystemExit(f"unexpected node {op}")


def run(model, x):
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    values[model.graph.input[0].name] = x.reshape(x.shape[0], -1)
    for node in model.graph.node:
        v = values[node.input[0]]
        values[node.output[0]] = (v @ values[node.input[1]].T + values[node.input[2]]) if node.op_type == "Gemm" \
            else activation(node, v)
    return values[model.graph.output[0].name].astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convmat-onnx", required=True)
    args = parser.parse_args()
    names = [line.split(" ", 1)[0] for line in open(os.path.join(CONVENTIONS, "cases.txt")) if not line.startswith("#")]
    worst = (0.0, "")
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            out = os.path.join(work, name + ".onnx")
            subprocess.run([args.convmat_onnx, os.path.join(CONVENTIONS, name + ".onnx"), out], check=True,
                           stdout=subprocess.DEVNULL)
            read = lambda kind: onnx.numpy_helper.to_array(
                onnx.load_tensor(os.path.join(CONVENTIONS, f"{name}.{kind}.pb")))
            x, expected = read("input"), read("output")
            y = run(onnx.load(out), x).reshape(expected.shape)
            error = float(np.abs(y - expected).max() / max(1.0, float(np.abs(expected).max())))
            worst = max(worst, (error, name))
    print(f"{len(names)} convention models: largest relative error {worst[0]:.2g} ({worst[1]})")


if __name__ == "__main__":
    main()
