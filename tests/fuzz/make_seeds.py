#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, one folder per target under
tests/fuzz/corpus/:

  convmat/  layers for fuzz_convmat.cpp (a few valid layers of every rank,
            kind and padding mode, and a few bad ones; the byte layout is
            described at the top of that file)
  npy/      .npy files for fuzz_npy.cpp: what numpy.save writes for every
            header version, dtype and order, and broken files
  onnx/     ONNX models for fuzz_onnx.cpp: the test models and broken ones

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py [TARGET...]   (default: all;
npy needs numpy, onnx needs the onnx package)
"""
import io
import os
import random
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
random.seed(7)


def seed(rank, transposed=False, asym=False, helper=0, also_float=False, channels=(0, 0, 0), mode=0,
         dims=None, batch=1, fault=0, rows=(0, 3), values=96):
    flags = (rank - 1) | (4 if transposed else 0) | (8 if asym else 0) | (helper << 4) | (128 if also_float else 0)
    out = [flags, *channels, mode]
    for d in range(rank):
        # input, kernel, stride, dilation, padding, padding_end, output_padding
        out += dims[d] if dims else [4, 2, 0, 0, 1, 0, 0]
    out += [batch, fault, rows[0] & 255, rows[1] & 255]
    out += [random.randrange(256) for _ in range(values)]
    return bytes(out)


def convmat_seeds():
    """fuzz_convmat: layers encoded as its byte layout says."""
    return {
        "conv1d": seed(1),
        "conv1d_reflect_asym": seed(1, asym=True, mode=1, dims=[[5, 2, 1, 0, 2, 1, 0]]),
        "conv2d_groups_replicate": seed(2, channels=(1, 3, 1), mode=2, dims=[[3, 2, 1, 0, 1, 2, 0], [5, 1, 0, 1, 3, 0, 0]],
                                        batch=2, rows=(5, 9)),
        "conv2d_same_float": seed(2, helper=5, also_float=True, channels=(2, 1, 0), dims=[[5, 2, 0, 1, 0, 0, 0]] * 2),
        "conv3d_circular": seed(3, mode=3, dims=[[3, 1, 0, 0, 1, 1, 0], [2, 2, 1, 0, 2, 0, 0], [4, 0, 0, 2, 0, 0, 0]],
                                values=200),
        "conv3d_full": seed(3, helper=7, dims=[[2, 1, 0, 0, 0, 0, 0]] * 3, values=200),
        "transpose1d": seed(1, transposed=True, dims=[[3, 2, 1, 0, 1, 0, 1]]),
        "transpose2d_groups": seed(2, transposed=True, channels=(1, 1, 1), dims=[[2, 2, 1, 1, 1, 0, 0], [3, 1, 2, 0, 0, 0, 2]],
                                   batch=3),
        "transpose3d_float": seed(3, transposed=True, also_float=True, dims=[[1, 1, 1, 0, 0, 0, 1]] * 3, values=200),
        "bad_stride_zero": seed(2, dims=[[4, 2, 200, 0, 0, 0, 0]] * 2),
        "bad_negative_padding": seed(1, dims=[[4, 2, 0, 0, 220, 0, 0]]),
        "bad_reflect_too_wide": seed(1, mode=1, dims=[[2, 2, 0, 0, 3, 0, 0]]),
        "bad_mode": seed(1, mode=9),
        "huge_input": seed(1, dims=[[255, 2, 0, 0, 0, 0, 0]]),
        "huge_dilation": seed(2, dims=[[4, 2, 0, 250, 0, 0, 0]] * 2),
        "huge_channels": seed(2, channels=(255, 0, 0)),
        "large_dense": seed(2, channels=(3, 3, 0), dims=[[236, 0, 0, 0, 0, 0, 0], [236, 0, 0, 0, 0, 0, 0]]),
        "wrong_weight": seed(2, fault=241),
        "wrong_input": seed(3, fault=250, values=200),
        "rows_out_of_range": seed(1, rows=(-3, 100)),
    }


def npy_bytes(dict_text, data=b"", version=1, pad=True):
    """A .npy file made by hand: magic, version, length, the dict (padded
    to 64 bytes and ended by a newline unless pad is False), the data."""
    header = dict_text.encode("latin-1")
    prefix = 10 if version == 1 else 12
    if pad:
        header += b" " * ((64 - (prefix + len(header) + 1) % 64) % 64) + b"\n"
    length = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header + data


def npy_seeds():
    """fuzz_npy: what numpy writes, and files broken in every way the reader checks."""
    import numpy as np

    def saved(array, version=None):
        f = io.BytesIO()
        np.lib.format.write_array(f, array, version=version, allow_pickle=False)
        return f.getvalue()

    weights = np.arange(54, dtype="<f4").reshape(3, 2, 3, 3) / 8
    good = saved(weights)
    return {
        "conv_weights_f4": good,
        "bias_f8": saved(np.linspace(-1, 1, 5)),
        "scalar_f4": saved(np.float32(2.5).reshape(())),
        "empty_f8": saved(np.zeros((0, 7))),
        "matrix_v2": saved(np.ones((2, 3), dtype="<f8"), version=(2, 0)),
        "matrix_v3": saved(np.ones((3, 2), dtype="<f4"), version=(3, 0)),
        "fortran_2d": saved(np.asfortranarray(np.ones((2, 3), dtype="<f4"))),
        "fortran_1d": saved(np.asfortranarray(np.ones(4, dtype="<f8"))),
        "big_endian": saved(np.ones(3, dtype=">f4")),
        "int64": saved(np.arange(4, dtype="<i8")),
        "float16": saved(np.ones(2, dtype="<f2")),
        "structured_v3": saved(np.zeros(2, dtype=[("\u00e9", "<f4")]), version=(3, 0)),
        "truncated_data": good[:-3],
        "truncated_header": good[:20],
        "trailing_bytes": good + b"\x00" * 5,
        "two_arrays": saved(np.ones(2, dtype="<f8")) + saved(np.zeros(1, dtype="<f4")),
        "version_4": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4, version=4),
        "header_too_long": b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 20) + b"{",
        "duplicate_key": npy_bytes("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}",
                                   b"\0" * 8),
        "promises_2_62": npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (576460752303423488,), }",
                                   b"\0" * 16),
        "shape_overflow": npy_bytes("{'descr': '<f8', 'fortran_order': False, "
                                    "'shape': (4294967296, 4294967296, 4294967296), }"),
        "python2_long": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }", b"\0" * 8),
        "unpadded": npy_bytes("{'descr':'<f4','fortran_order':False,'shape':(1,)}", b"\0" * 4, pad=False),
    }


def onnx_seeds():
    """fuzz_onnx: the test models (tests/data/onnx, exported by PyTorch), the
    convention models (tests/data/onnx/conventions, small models built node
    by node: every operator, attribute form and opset 9 to 17), the hostile ones (tests/data/hostile), and small models that reach every
    operator and constant-folding path the converter has."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    seeds = {}
    for folder in ("onnx", "onnx/conventions", "hostile"):
        directory = os.path.join(here, "..", "data", folder)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".onnx"):
                with open(os.path.join(directory, name), "rb") as f:
                    seeds[f"{folder.replace('/', '_')}_{name[:-5]}"] = f.read()

    def tensor(name, values, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    def model(name, shape, nodes, initializers, output="y"):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, name, [x], [y], initializers)
        seeds[name] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()

    node = helper.make_node
    rng = np.random.default_rng(7)
    model("mlp_matmul_add", [4], [node("MatMul", ["x", "w"], ["h"]), node("Add", ["h", "b"], ["r"]),
                                  node("Relu", ["r"], ["d"]), node("Dropout", ["d"], ["i"]),
                                  node("Identity", ["i"], ["y"])],
          [tensor("w", rng.standard_normal((4, 3))), tensor("b", rng.standard_normal(3))])
    model("pad_reflect_pool", [2, 5, 5], [node("Pad", ["x", "p"], ["q"], mode="reflect"),
                                          node("AveragePool", ["q"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                               pads=[1, 0, 0, 1], count_include_pad=1)],
          [tensor("p", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)])
    model("pad_edge_wrap", [1, 6], [node("Pad", ["x", "p"], ["q"], mode="edge"),
                                    node("Pad", ["q", "p"], ["y"], mode="wrap")],
          [tensor("p", [0, 0, 2, 0, 0, 1], np.int64)])
    model("residual_add", [1, 4, 4], [node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
                                      node("Add", ["a", "x"], ["y"])],
          [tensor("w", rng.standard_normal((1, 1, 3, 3)))])
    model("conv_transpose_bn", [2, 3, 3], [
        node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
        node("BatchNormalization", ["t", "g", "beta", "m", "v"], ["y"], epsilon=1e-3)],
          [tensor("w", rng.standard_normal((2, 3, 3, 3))), tensor("b", rng.standard_normal(3)),
           tensor("g", [1, 2, 3]), tensor("beta", [0, 1, 0]), tensor("m", [0.5, 0, -1]), tensor("v", [1, 2, 0.5])])
    # The exporter's pad arithmetic as constant subgraphs: Constant, ConstantOfShape, Concat,
    # Reshape, Slice, Transpose, Cast, Unsqueeze, all folded before Pad reads them.
    model("folded_pads", [1, 4, 4], [
        node("Constant", [], ["c"], value=tensor("cv", [1, 1], np.int64)),
        node("ConstantOfShape", ["two"], ["z"], value=tensor("zv", [0], np.int64)),
        node("Concat", ["z", "c", "z", "c"], ["cat"], axis=0),  # (0, 0, 1, 1, 0, 0, 1, 1)
        node("Reshape", ["cat", "shape"], ["r"]),                # 2 x 4
        node("Slice", ["r", "starts", "ends", "axes", "steps"], ["s"]),  # rows reversed
        node("Transpose", ["s"], ["tr"], perm=[0, 1]),
        node("Reshape", ["tr", "flat"], ["f"]),
        node("Cast", ["f"], ["pads"], to=TensorProto.INT64),
        node("Unsqueeze", ["c", "axis"], ["cu"]),
        node("Flatten", ["x"], ["fl"]),
        node("Reshape", ["fl", "back"], ["xb"]),
        node("Pad", ["xb", "pads"], ["y"])],
          [tensor("two", [2], np.int64), tensor("shape", [2, 4], np.int64), tensor("starts", [1, 0], np.int64),
           tensor("ends", [-3, 4], np.int64), tensor("axes", [0, 1], np.int64), tensor("steps", [-1, 1], np.int64),
           tensor("flat", [-1], np.int64), tensor("axis", [0], np.int64), tensor("back", [0, 1, 4, 4], np.int64)])
    model("gemm_trans_b", [3], [node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)],
          [tensor("w", rng.standard_normal((2, 3))), tensor("b", [1, -1])])
    return seeds


TARGETS = {"convmat": convmat_seeds, "npy": npy_seeds, "onnx": onnx_seeds}


def main():
    targets = sys.argv[1:] or list(TARGETS)
    for target in targets:
        if target not in TARGETS:
            sys.exit(f"make_seeds: unknown target '{target}'; the targets are {', '.join(TARGETS)}")
        seeds = TARGETS[target]()
        folder = os.path.join(here, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"wrote {len(seeds)} seeds to tests/fuzz/corpus/{target}/")


if __name__ == "__main__":
    main()
