#!/usr/bin/env python3
"""Test models for convmat-onnx, exported by torch.onnx.export.

For each model NAME writes, under tests/data/onnx/:
  NAME.onnx         the model (float32, opset 13, batch dimension "N")
  NAME.input.pb     an onnx.TensorProto: a batch of 3 inputs
  NAME.output.pb    an onnx.TensorProto: PyTorch's outputs for them
The pad_squeeze_opsetK models are exported with a fixed batch of 3 at
opsets 11, 13 and 17: torch loses the padded shape and writes the squeeze
as Shape -> Gather -> Equal -> If, shape logic on constants that
convmat-onnx folds.
Run from anywhere:  /usr/bin/python3 tools/make_onnx_models.py
"""
import os

import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(20261125)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "onnx")


def randomize_batch_norm(model):
    """Non-trivial running statistics, so that folding BatchNorm matters."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)


class LeNet(nn.Module):
    """Conv, ReLU, average pooling, conv, flatten, two Linear (Gemm)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class BatchNormPool(nn.Module):
    """Reflect padding (a Pad node), Conv with BatchNorm (folded by the
    exporter), a residual Add, BatchNorm on its own, average pooling with
    ceil_mode and padding, Reshape, MatMul and Add."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(4)
        self.weight = nn.Parameter(torch.randn(4 * 5 * 5, 8) * 0.2)
        self.bias = nn.Parameter(torch.randn(8))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(x + self.conv2(x))
        x = F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        x = x.reshape(-1, 4 * 5 * 5)
        return torch.matmul(x, self.weight) + self.bias


class Cnn1d(nn.Module):
    """Replicate padding (Pad, mode edge), strided Conv1d, pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 5, stride=2, padding=2, padding_mode="replicate")
        self.conv2 = nn.Conv1d(4, 4, 3, dilation=2)
        self.fc = nn.Linear(4 * 3, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.avg_pool1d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class Cnn3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm3d(3)
        self.conv2 = nn.Conv3d(3, 4, 2, stride=(1, 2, 1))
        self.fc = nn.Linear(4 * 2 * 1 * 2, 5)

    def forward(self, x):
        x = F.avg_pool3d(F.relu(self.bn(self.conv1(x))), 2)
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class Transposed(nn.Module):
    """An encoder-decoder: strided Conv, ConvTranspose with output_padding,
    BatchNorm after the transposed convolution."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        x = F.relu(self.down(x))
        x = F.relu(self.bn(self.up(x)))
        return self.head(x)


models = {
    "lenet": (LeNet(), (1, 12, 12)),
    "batchnorm_pool": (BatchNormPool(), (2, 8, 8)),
    "cnn1d": (Cnn1d(), (2, 20)),
    "cnn3d": (Cnn3d(), (1, 6, 6, 6)),
    "transposed": (Transposed(), (1, 8, 8)),
}

class PadSqueeze(nn.Module):
    """F.pad with a value, then squeeze(2): exported as a shape check (If)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 2, 3)

    def forward(self, x):
        return self.conv(F.relu(F.pad(x, (1, 1), value=0.5).squeeze(2)))


def save(name, x, y):
    for kind, tensor in (("input", x), ("output", y)):
        proto = onnx.numpy_helper.from_array(tensor.numpy(), name=kind)
        with open(os.path.join(OUT, f"{name}.{kind}.pb"), "wb") as f:
            f.write(proto.SerializeToString())


os.makedirs(OUT, exist_ok=True)
for name, (model, shape) in models.items():
    randomize_batch_norm(model)
    model.eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        y = model(x)
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["output"], opset_version=13,
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    onnx.checker.check_model(onnx.load(path))
    save(name, x, y)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    print(f"{name}: {os.path.getsize(path)} bytes, {' '.join(ops)}")

# A fixed batch (no dynamic axes), so the exporter's shape check is constant.
torch.manual_seed(20261207)
for opset in (11, 13, 17):
    name, model = f"pad_squeeze_opset{opset}", PadSqueeze().eval()
    x = torch.randn(3, 3, 1, 5)
    with torch.no_grad():
        y = model(x)
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["output"], opset_version=opset)
    onnx.checker.check_model(onnx.load(path))
    save(name, x, y)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "If" in ops and "Equal" in ops, ops
    print(f"{name}: {os.path.getsize(path)} bytes, {' '.join(ops)}")
