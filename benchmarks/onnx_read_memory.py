#!/usr/bin/env python3
"""Peak memory of convmat-onnx reading a model with large dense weights.

The model of issue 26: Conv2d(3,12,3,p=1), ReLU, Conv2d(12,2,3,p=1), ReLU,
Flatten, Linear(2*s*s, 10), exported by torch at s x s, converted by
convmat-onnx to its fully-connected form fc.onnx (dense Gemm weights), and
fc.onnx converted again: that second read is measured, as the peak resident
memory of the process (ru_maxrss) against the file sizes, with and without a
--max-bytes below the largest weight.

  /usr/bin/python3 benchmarks/onnx_read_memory.py --convmat-onnx build/bench/onnx/convmat-onnx --sizes 32 64
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn


def run_logged(command):
    """Runs `command`; returns (exit status, seconds, peak RSS in bytes, its output lines)."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.time()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        log.seek(0)
        lines = [line.rstrip() for line in log if line.strip()]
        return os.waitstatus_to_exitcode(status), time.time() - start, usage.ru_maxrss * 1024, lines


def size_of(path):
    total = os.path.getsize(path)
    if os.path.exists(path + ".data"):
        total += os.path.getsize(path + ".data")
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convmat-onnx", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="convmat-onnx-memory-")
    os.makedirs(work, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.2f}; scratch {work}")
    for s in args.sizes:
        torch.manual_seed(s)
        model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 2, 3, padding=1), nn.ReLU(),
                              nn.Flatten(), nn.Linear(2 * s * s, 10)).eval()
        cnn = os.path.join(work, f"cnn{s}.onnx")
        torch.onnx.export(model, torch.randn(1, 3, s, s), cnn, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        fc = os.path.join(work, f"fc{s}.onnx")
        status, seconds, peak, lines = run_logged([args.convmat_onnx, cnn, fc])
        if status != 0:
            sys.exit(f"converting {cnn} failed: {lines[-1] if lines else status}")
        file_bytes = size_of(fc)
        largest = 12 * s * s * 3 * s * s * 4  # the first Gemm's float32 weights
        print(f"\ns = {s}: fc.onnx {file_bytes / 1e6:.0f} MB "
              f"({'external data' if os.path.exists(fc + '.data') else 'embedded'}); "
              f"its largest weight {largest / 1e6:.0f} MB in float32")
        for extra in ([], ["--max-bytes", "64M"], ["--sparse"]):
            out = os.path.join(work, f"fc{s}_again")
            command = [args.convmat_onnx, *extra, fc, out if "--sparse" in extra else out + ".onnx"]
            status, seconds, peak, lines = run_logged(command)
            said = lines[-1] if lines else ""
            print(f"  convmat-onnx {' '.join(extra) or '(defaults)':<16} exit {status}, {seconds:6.1f} s, "
                  f"peak {peak / 1e6:7.0f} MB = {peak / file_bytes:4.2f} x the file")
            print(f"    {said[:300]}")
            for suffix in (".onnx", ".onnx.data"):
                if os.path.exists(out + suffix):
                    os.remove(out + suffix)
            for name in os.listdir(work):
                if name.startswith(f"fc{s}_again.layer"):
                    os.remove(os.path.join(work, name))


if __name__ == "__main__":
    main()
