#!/usr/bin/env python3
"""The README's table of hostile inputs, measured: each tool is run on each
hostile input in a fresh directory (holding only the input and an older
output file that must survive), and the table records the first line the
tool prints on stderr, its exit status, and what it left behind.

  /usr/bin/python3 tools/hostile_inputs.py --convmat BIN --convmat-onnx BIN            # print the table
  /usr/bin/python3 tools/hostile_inputs.py ... --check README.md    # exit 1 if the README's differs
  /usr/bin/python3 tools/hostile_inputs.py ... --write README.md    # rewrite the README's table
  /usr/bin/python3 tools/hostile_inputs.py --make-models            # tests/data/hostile/*.onnx (needs onnx)

The .npy inputs are written here byte by byte; the ONNX models are checked
in under tests/data/hostile/ (--make-models writes them with the onnx
package, so running the table needs only the standard library). Numbers
that depend on the machine (its memory, free disk space) print as "…".
ctest runs --check (hostile_inputs_table), also under the sanitizers.
"""
import argparse
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "data", "hostile")
BEGIN, END = "<!-- hostile-inputs:begin -->", "<!-- hostile-inputs:end -->"
SURVIVOR = "an older file that must survive"


# ---- the .npy inputs ------------------------------------------------------------

def npy(dict_text, data=b"", version=1, length=None):
    """A .npy file: magic, version, little-endian dict length, the dict
    (padded to 64 bytes and ended by a newline), the data."""
    header = dict_text.encode("latin-1")
    prefix = 10 if version == 1 else 12
    header += b" " * ((64 - (prefix + len(header) + 1) % 64) % 64) + b"\n"
    size = len(header) if length is None else length
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<H" if version == 1 else "<I", size) + header + data


def weights_dict(shape, descr="<f4", order="False"):
    return f"{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}"


GOOD_WEIGHTS = npy(weights_dict("(2, 1, 3, 3)"), struct.pack("<18f", *([0.5] * 18)))
GOOD_BIAS = npy(weights_dict("(2,)"), struct.pack("<2f", 1, 2))


# ---- the cases ----------------------------------------------------------------------

class Case:
    """One hostile input: the files to write, the tool's arguments (file
    names relative to the case's directory), and whether to SIGTERM it
    while it writes."""

    def __init__(self, tool, kind, files, arguments, terminate=False):
        self.tool, self.kind, self.files, self.arguments, self.terminate = tool, kind, files, arguments, terminate


def model(name):
    with open(os.path.join(MODELS, name + ".onnx"), "rb") as f:
        return f.read()


def cases():
    w = {"w.npy": GOOD_WEIGHTS}
    conv = lambda kind, files, *args: Case("convmat", kind, files, list(args))
    onnx = lambda kind, name, *args: Case("convmat-onnx", kind, {"in.onnx": model(name)},
                                          list(args) or ["in.onnx", "out.onnx"])
    with open(os.path.join(ROOT, "tests", "data", "onnx", "lenet.onnx"), "rb") as f:
        lenet = f.read()
    return [
        conv("not a .npy file (CSV text)", {"w.npy": b"weights,1,2,3\n4,5,6,7\n"}, "w.npy", "--input-size", "5,5",
             "-o", "T.npy"),
        conv("an empty file", {"w.npy": b""}, "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("a missing file", {}, "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("a directory as the weights", {"w.npy/": b""}, "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("format version 4.0", {"w.npy": npy(weights_dict("(2, 1, 3, 3)"), b"", version=4)}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("a header length of 4 GiB", {"w.npy": npy(weights_dict("(2, 1, 3, 3)"), version=2, length=2**32 - 1)},
             "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("a header cut short", {"w.npy": GOOD_WEIGHTS[:40]}, "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("binary garbage in the header", {"w.npy": npy("{'descr': '\x01\xfe\x80', 'fortran_order': False}")},
             "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("a key given twice", {"w.npy": npy("{'shape': (2, 1, 3, 3), 'shape': (1,), 'descr': '<f4', "
                                                "'fortran_order': False}")}, "w.npy", "--input-size", "5,5",
             "-o", "T.npy"),
        conv("a 20-digit dimension", {"w.npy": npy(weights_dict("(99999999999999999999, 1, 3, 3)"))}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("a shape of 2^96 elements", {"w.npy": npy(weights_dict("(4294967296, 4294967296, 4294967296)"))},
             "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("a header promising 2^62 bytes, 16 present",
             {"w.npy": npy(weights_dict("(576460752303423488, 1, 1, 1)", "<f8"), b"\0" * 16)}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("data 3 bytes short", {"w.npy": GOOD_WEIGHTS[:-3]}, "w.npy", "--input-size", "5,5", "-o", "T.npy"),
        conv("int64 weights", {"w.npy": npy(weights_dict("(2, 1, 3, 3)", "<i8"), b"\0" * 144)}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("big-endian weights", {"w.npy": npy(weights_dict("(2, 1, 3, 3)", ">f4"), b"\0" * 72)}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("Fortran order", {"w.npy": npy(weights_dict("(2, 1, 3, 3)", order="True"), b"\0" * 72)}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("weights with a zero dimension", {"w.npy": npy(weights_dict("(2, 0, 3, 3)"))}, "w.npy",
             "--input-size", "5,5", "-o", "T.npy"),
        conv("6-D weights (a 4-D layer)", {"w.npy": npy(weights_dict("(1, 1, 1, 1, 1, 1)"), b"\0" * 4)}, "w.npy",
             "--input-size", "5,5,5,5", "-o", "T.npy"),
        conv("a bias of the wrong shape", {**w, "b.npy": npy(weights_dict("(5,)"), b"\0" * 20)}, "w.npy",
             "--input-size", "5,5", "--bias", "b.npy", "--bias-out", "bo.npy", "-o", "T.npy"),
        conv("--input-size 100000,100000, dense", w, "w.npy", "--input-size", "100000,100000", "-o", "T.npy"),
        conv("--input-size 4000000000,4000000000, sparse", w, "w.npy", "--input-size", "4000000000,4000000000",
             "-o", "T.mtx"),
        conv("--input-size -5,5", w, "w.npy", "--input-size", "-5,5", "-o", "T.npy"),
        conv("--stride 0", w, "w.npy", "--input-size", "5,5", "--stride", "0", "-o", "T.npy"),
        conv("--dilation 4611686018427387904", w, "w.npy", "--input-size", "5,5", "--dilation",
             "4611686018427387904", "-o", "T.npy"),
        conv("--groups 0", w, "w.npy", "--input-size", "5,5", "--groups", "0", "-o", "T.npy"),
        conv("--max-bytes 12Q", w, "w.npy", "--input-size", "5,5", "--max-bytes", "12Q", "-o", "T.npy"),
        conv("an output folder that does not exist", w, "w.npy", "--input-size", "5,5", "-o", "no/such/T.npy"),
        Case("convmat", "SIGTERM while writing a 37-million-entry T.mtx",
             {"w.npy": npy(weights_dict("(16, 16, 3, 3)"), struct.pack("<2304f", *([0.25] * 2304)))},
             ["w.npy", "--input-size", "128,128", "--padding", "1", "-q", "-o", "T.mtx"], terminate=True),
        Case("convmat-onnx", "not a protobuf (text)", {"in.onnx": b"this is not an ONNX model\n"},
             ["in.onnx", "out.onnx"]),
        Case("convmat-onnx", "an empty file", {"in.onnx": b""}, ["in.onnx", "out.onnx"]),
        Case("convmat-onnx", "a missing file", {}, ["in.onnx", "out.onnx"]),
        Case("convmat-onnx", "a model cut in half", {"in.onnx": lenet[:len(lenet) // 2]}, ["in.onnx", "out.onnx"]),
        onnx("a graph whose nodes form a cycle", "cycle"),
        onnx("a Conv whose weight initializer is missing", "missing_initializer"),
        onnx("a weight whose raw data is shorter than its shape", "short_weight"),
        onnx("an initializer of shape (-3, 4)", "negative_dims"),
        onnx("an unsupported operator (Sin)", "sin"),
        onnx("a Conv with strides 0", "stride_zero"),
        onnx("an input of 1 x 100000 x 100000", "huge_input"),
        onnx("two inputs", "two_inputs"),
        onnx("an output not computed from the input", "dangling_output"),
        Case("convmat-onnx", "an output folder that does not exist", {"in.onnx": lenet}, ["in.onnx", "no/such/out.onnx"]),
        Case("convmat-onnx", "SIGTERM while writing a 1 GiB out.onnx", {"in.onnx": model("big")},
             ["in.onnx", "out.onnx"], terminate=True),
        Case("convmat-onnx", "--sparse into a folder that does not exist", {"in.onnx": lenet},
             ["--sparse", "in.onnx", "no/such/out"]),
    ]


# ---- running them ---------------------------------------------------------------------

def normalized(text, directory):
    """The message as the table shows it: the case's directory left out,
    machine-dependent sizes as "…", at most 170 characters."""
    text = text.replace(directory + os.sep, "").replace(directory, ".")
    text = re.sub(r"max_dense_bytes\(\) = \d+", "max_dense_bytes() = …", text)
    text = re.sub(r"(default: half of this machine's memory\) = )\d+ bytes \([0-9.]+ [KMGTPE]iB\)", r"\1…", text)
    text = re.sub(r"has only \d+ bytes \([0-9.]+ [KMGTPE]iB\) free", "has only … free", text)
    text = re.sub(r"but its file system has \d+ free", "but its file system has … free", text)
    text = text.replace("|", "\\|")
    return text if len(text) <= 170 else text[:169] + "…"


def run(case, binary):
    with tempfile.TemporaryDirectory(prefix="convmat-hostile-") as directory:
        for name, data in case.files.items():
            path = os.path.join(directory, name)
            if name.endswith("/"):
                os.mkdir(path)
                continue
            with open(path, "wb") as f:
                f.write(data)
        for survivor in ("T.npy", "out.onnx"):
            with open(os.path.join(directory, survivor), "w") as f:
                f.write(SURVIVOR)
        before = sorted(os.listdir(directory))
        process = subprocess.Popen([binary] + case.arguments, cwd=directory, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        writing = False  # once its temporary file (".NAME.convmat-XXXXXX") exists, it is writing
        if case.terminate:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None and not writing:
                writing = any(n.startswith(".") and ".convmat-" in n for n in os.listdir(directory))
                if not writing:
                    time.sleep(0.001)
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        after = sorted(os.listdir(directory))
        intact = all(open(os.path.join(directory, s), "rb").read() == SURVIVOR.encode() for s in ("T.npy", "out.onnx"))
        left = [n for n in after if n not in before]
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        said = normalized(lines[0] if lines else "(nothing)", directory)
        if any("Sanitizer" in line or "runtime error" in line for line in lines):
            said = "SANITIZER REPORT: " + said
        if case.terminate and not writing:
            said = "NOT SIGNALLED WHILE WRITING (no temporary file seen): " + said
        status = process.returncode
        exit_text = f"killed by {signal.Signals(-status).name}" if status < 0 else str(status)
        behind = "nothing" if not left and intact else ", ".join(left + ([] if intact else ["a changed older file"]))
        return f"| `{case.tool}` | {case.kind} | `{said}` | {exit_text} | {behind} |"


def table(binaries):
    rows = ["| tool | hostile input | what it says (first line of stderr) | exit | left behind |",
            "| --- | --- | --- | --- | --- |"]
    rows += [run(case, binaries[case.tool]) for case in cases()]
    return "\n".join(rows)


# ---- the hostile ONNX models -----------------------------------------------------------

def make_models():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    def tensor(name, array):
        return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)

    def conv_model(name, input_shape=(1, 1, 5, 5), nodes=None, initializers=None, inputs=None, outputs=None):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape[1:]])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        nodes = nodes if nodes is not None else [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
        initializers = initializers if initializers is not None else [tensor("w", np.ones((2, 1, 3, 3)))]
        graph = helper.make_graph(nodes, name, inputs or [x], outputs or [y], initializers)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        os.makedirs(MODELS, exist_ok=True)
        save(m, os.path.join(MODELS, name + ".onnx"))

    conv_model("cycle", nodes=[helper.make_node("Relu", ["z"], ["u"], name="a"),
                               helper.make_node("Conv", ["u", "w"], ["z"], name="b"),
                               helper.make_node("Relu", ["z"], ["y"], name="c")])
    conv_model("missing_initializer", initializers=[])
    short = tensor("w", np.ones((2, 1, 3, 3)))
    short.raw_data = short.raw_data[:-8]
    conv_model("short_weight", initializers=[short])
    negative = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-3, 4])
    conv_model("negative_dims", initializers=[negative])
    conv_model("sin", nodes=[helper.make_node("Sin", ["x"], ["y"], name="sin")])
    conv_model("stride_zero", nodes=[helper.make_node("Conv", ["x", "w"], ["y"], strides=[0, 0], name="conv")])
    conv_model("huge_input", input_shape=(1, 1, 100000, 100000))
    # Conv2d(16, 16, 3, padding=1) on 32 x 32: a 16384 x 16384 Gemm, 1 GiB to write.
    conv_model("big", input_shape=(1, 16, 32, 32), initializers=[tensor("w", np.full((16, 16, 3, 3), 0.25))],
               nodes=[helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")])
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 1, 5, 5])
    conv_model("two_inputs", inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 5, 5]), x2])
    conv_model("dangling_output", outputs=[helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, None)])
    print(f"wrote the hostile models to {os.path.relpath(MODELS, ROOT)}/")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--convmat", help="the convmat command")
    parser.add_argument("--convmat-onnx", help="the convmat-onnx command")
    parser.add_argument("--check", metavar="README", help="compare with the README's table; exit 1 if it differs")
    parser.add_argument("--write", metavar="README", help="rewrite the README's table")
    parser.add_argument("--make-models", action="store_true", help="write tests/data/hostile/*.onnx")
    args = parser.parse_args()
    if args.make_models:
        return make_models()
    if not args.convmat or not args.convmat_onnx:
        parser.error("--convmat and --convmat-onnx are needed to run the table")
    text = table({"convmat": os.path.abspath(args.convmat), "convmat-onnx": os.path.abspath(args.convmat_onnx)})
    readme = args.check or args.write
    if not readme:
        print(text)
        return 0
    with open(readme, encoding="utf-8") as f:
        content = f.read()
    if BEGIN not in content or END not in content:
        sys.exit(f"{readme} has no {BEGIN} ... {END} section")
    head, rest = content.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    if args.check:
        if current.strip() == text.strip():
            print(f"{readme}: the table of hostile inputs is what the tools do ({text.count(chr(10)) - 1} inputs)")
            return 0
        print(f"{readme}: the table of hostile inputs differs from what the tools do now:\n")
        for old, new in zip(current.strip().splitlines() + [""] * 99, text.splitlines()):
            if old != new:
                print(f"- {old}\n+ {new}")
        print(f"\nregenerate it: /usr/bin/python3 tools/hostile_inputs.py --convmat ... --convmat-onnx ... --write {readme}")
        return 1
    with open(readme, "w", encoding="utf-8") as f:
        f.write(head + BEGIN + "\n" + text + "\n" + END + tail)
    print(f"rewrote the table of hostile inputs in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
