#!/usr/bin/env python3
"""convmat.matrix against the torch routes to a layer's matrix, from Python.

Two layers (float32), as in the C++ benchmarks:

  dense  Conv2d(8, 16, 3, padding=1) on 32 x 32: T is 16384 x 8192, 512 MiB
  csr    Conv2d(64, 64, 3, padding=1) on 56 x 56: T is 200704 x 200704 with
         113 million non-zeros (862 MiB as CSR, 150 GiB dense)

Methods: convmat.matrix (each format); the identity trick (the convolution
of every basis vector at once, conv(eye.reshape(n, C, H, W)), whose output
is T transposed); torch.autograd.functional.jacobian (vectorized, and the
default loop over outputs); functorch.jacrev; and the identity trick
followed by .to_sparse_csr() (and by .to_sparse().to_sparse_csr(), torch
1.13's fastest way from dense to CSR). Where the whole matrix does not fit
in memory (every torch route on the csr layer) the identity trick runs in
blocks of 256 input columns, and its time is that of a sample of 8 blocks
scaled to all of them: a lower bound on the torch route, which would still
have to stack and transpose the blocks (their rows are T's columns).

Every method runs in a process of its own (this script with --run), so its
peak memory is its own: the growth of the process's peak resident size
(VmHWM, reset just before the build) over its resident size before it, with
the weights, libraries and threads already loaded. Times are the best of
--repeat runs; the methods that take under 5 s run again in --rounds rounds
over all of them, interleaved, so that a busy machine slows every method
alike. Prints a markdown table (docs/python_benchmarks.md).

Usage: PYTHONPATH=<build>/python /usr/bin/python3 benchmarks/bench_python.py [--repeat 3] [--rounds 3] [--quick]
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

LAYERS = {  # in_channels, out_channels, input size
    "dense": (8, 16, (32, 32)),
    "csr": (64, 64, (56, 56)),
}

#: Methods faster than this (seconds) are measured again in every round.
QUICK_SECONDS = 5

# (layer, method, what it builds): the rows of the table, in order.
PLAN = [
    ("dense", "fresh_memory", "dense"),
    ("dense", "convmat", "dense"),
    ("dense", "convmat_torch", "dense"),
    ("dense", "identity", "dense"),
    ("dense", "jacobian_vectorized", "dense"),
    ("dense", "jacobian_loop", "dense"),
    ("dense", "jacrev", "dense"),
    ("dense", "convmat_csr", "csr"),
    ("dense", "identity_to_sparse_csr", "csr"),
    ("dense", "identity_to_sparse_to_sparse_csr", "csr"),
    ("csr", "fresh_memory", "csr"),
    ("csr", "convmat_csr", "csr"),
    ("csr", "convmat_torch_csr", "csr"),
    ("csr", "identity_to_sparse_csr_blocks", "csr"),
]

DESCRIPTIONS = {
    "fresh_memory": "the limit: writing as many bytes of fresh memory (numpy.empty(...).fill(0), 4 KiB pages)",
    "convmat": 'convmat.matrix(conv, size)',
    "convmat_torch": 'convmat.matrix(conv, size, format="torch")',
    "convmat_csr": 'convmat.matrix(conv, size, format="csr")',
    "convmat_torch_csr": 'convmat.matrix(conv, size, format="torch_csr")',
    "identity": "identity trick: conv(eye(n).reshape(n, C, H, W))",
    "jacobian_vectorized": "torch.autograd.functional.jacobian(conv, x, vectorize=True)",
    "jacobian_loop": "torch.autograd.functional.jacobian(conv, x) (a loop over outputs)",
    "jacrev": "functorch.jacrev(conv)(x)",
    "identity_to_sparse_csr": "identity trick, then .to_sparse_csr()",
    "identity_to_sparse_to_sparse_csr": "identity trick, then .to_sparse().to_sparse_csr() (torch's fastest)",
    "identity_to_sparse_csr_blocks": "identity trick in blocks of 256 inputs, each .to_sparse().to_sparse_csr()",
}


# ---------------------------------------------------------------------------
# One method, in its own process
# ---------------------------------------------------------------------------


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS


def result_bytes(t):
    import numpy as np
    import scipy.sparse
    import torch

    if isinstance(t, np.ndarray):
        return t.nbytes
    if scipy.sparse.issparse(t):
        return t.data.nbytes + t.indices.nbytes + t.indptr.nbytes
    if t.layout == torch.sparse_csr:
        return sum(a.element_size() * a.numel() for a in (t.values(), t.col_indices(), t.crow_indices()))
    return t.element_size() * t.numel()


def builders(layer):
    """method -> (build(), fraction of the full work it does)."""
    import torch
    import torch.nn.functional as F

    import convmat

    in_channels, out_channels, size = LAYERS[layer]
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False).requires_grad_(False)
    n = in_channels * math.prod(size)

    def conv_of(x):
        return F.conv2d(x, conv.weight, None, conv.stride, conv.padding)

    def identity():
        with torch.no_grad():
            return conv_of(torch.eye(n).reshape(n, in_channels, *size)).reshape(n, -1).T

    def jacobian(vectorize):
        x = torch.zeros(1, in_channels, *size)
        return lambda: torch.autograd.functional.jacobian(conv_of, x, vectorize=vectorize).reshape(-1, n)

    def jacrev():
        import functorch

        return functorch.jacrev(conv_of)(torch.zeros(1, in_channels, *size)).reshape(-1, n)

    block, sample = 256, 8

    def identity_blocks():  # rows of T^T, `block` at a time; a sample of `sample` blocks
        parts = []
        with torch.no_grad():
            for b in range(sample):
                eye = torch.zeros(block, n)
                eye[torch.arange(block), b * block + torch.arange(block)] = 1
                rows = conv_of(eye.reshape(block, in_channels, *size)).reshape(block, -1)  # rows of T^T
                parts.append(rows.to_sparse().to_sparse_csr())
        return parts

    def fresh_memory():  # the bytes of the result, written once
        import numpy as np

        # In 4 KiB pages, as malloc gives convmat and torch: NumPy's own arrays
        # ask for transparent huge pages, which halve the time when the kernel
        # has them ready and stall for seconds when it must compact memory.
        np.core.multiarray._set_madvise_hugepage(False)
        nonzeros = convmat.info(conv, size).nonzeros
        count = out_channels * math.prod(size) * n if layer == "dense" else 2 * nonzeros + n + 1
        memory = np.empty(count, np.float32)
        memory.fill(0)
        return memory

    return {
        "fresh_memory": (fresh_memory, 1.0),
        "convmat": (lambda: convmat.matrix(conv, size), 1.0),
        "convmat_torch": (lambda: convmat.matrix(conv, size, format="torch"), 1.0),
        "convmat_csr": (lambda: convmat.matrix(conv, size, format="csr"), 1.0),
        "convmat_torch_csr": (lambda: convmat.matrix(conv, size, format="torch_csr"), 1.0),
        "identity": (identity, 1.0),
        "jacobian_vectorized": (jacobian(True), 1.0),
        "jacobian_loop": (jacobian(False), 1.0),
        "jacrev": (jacrev, 1.0),
        "identity_to_sparse_csr": (lambda: identity().to_sparse_csr(), 1.0),
        "identity_to_sparse_to_sparse_csr": (lambda: identity().to_sparse().to_sparse_csr(), 1.0),
        "identity_to_sparse_csr_blocks": (identity_blocks, block * sample / n),
    }


def run_one(layer, method, repeat, threads):
    """Builds once for the peak memory, then `repeat` times for the time."""
    import numpy as np
    import torch

    import torch.nn.functional as F

    import convmat

    if threads:
        torch.set_num_threads(threads)  # torch's and convmat's: one OpenMP runtime
    build, fraction = builders(layer)[method]
    F.conv2d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 3, 3))  # libraries loaded, threads started
    convmat.matrix(np.zeros((1, 1, 3, 3), np.float32), (8, 8), format="csr")
    convmat.matrix(np.zeros((1, 1, 3, 3), np.float32), (8, 8))
    reset_peak()
    before = status("VmRSS")
    start = time.perf_counter()
    result = build()
    seconds = time.perf_counter() - start
    peak = status("VmHWM") - before
    size = sum(map(result_bytes, result)) if isinstance(result, list) else result_bytes(result)
    del result
    for _ in range(repeat - 1):
        start = time.perf_counter()
        result = build()
        seconds = min(seconds, time.perf_counter() - start)
        del result
    return {"seconds": seconds / fraction, "sampled": fraction < 1, "peak": peak, "bytes": size / fraction,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


def measure(layer, method, repeat, threads, timeout):
    command = [sys.executable, __file__, "--run", layer, method, "--repeat", str(repeat), "--threads", str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": "MemoryError" if "MemoryError" in last else last[:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n):
    return f"{n / 2**20:,.0f} MiB"


def table(results):
    lines = ["| layer | method | time | time / convmat's | peak memory | peak / result |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for (layer, method, kind), r in results:
        name = {"dense": "8→16, 32×32 (dense, 512 MiB)", "csr": "64→64, 56×56 (CSR, 862 MiB)"}[layer]
        if "error" in r:
            lines.append(f"| {name} | {DESCRIPTIONS[method]} | {r['error']} | | | |")
            continue
        ours = results_by_key(results)[(layer, "convmat" if kind == "dense" else "convmat_csr")]
        speedup = "—" if method.startswith("convmat") else ratio_text(r["seconds"] / ours["seconds"])
        time_text = seconds_text(r["seconds"]) + (" (sampled)" if r["sampled"] else "")
        peak = f"{mib(r['peak'])}" + (" (per sample)" if r["sampled"] else "")
        ratio = "" if r["sampled"] else f"{r['peak'] / r['bytes']:.2f}×"
        lines.append(f"| {name} | {DESCRIPTIONS[method]} | {time_text} | {speedup} | {peak} | {ratio} |")
    return "\n".join(lines)


def seconds_text(seconds):
    return f"{seconds * 1e3:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s" if seconds < 100 else f"{seconds:,.0f} s"


def ratio_text(ratio):
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2f}×" if ratio < 1 else f"{ratio:.1f}×"


def results_by_key(results):
    return {(layer, method): r for (layer, method, _), r in results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs=2, metavar=("LAYER", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best time counts")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a method may take")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads(N) in every process (default: torch's own choice)")
    parser.add_argument("--rounds", type=int, default=3,
                        help=f"rounds over the methods, interleaved; those under {QUICK_SECONDS} s run in every round")
    parser.add_argument("--quick", action="store_true", help="leave out the loop over outputs (minutes)")
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(*args.run, args.repeat, args.threads)))
        return
    plan = [p for p in PLAN if not (args.quick and p[1] == "jacobian_loop")]
    results = {}
    for number in range(args.rounds):
        for layer, method, kind in plan:
            best = results.get((layer, method, kind))
            if number > 0 and (best is None or "error" in best or best["seconds"] > QUICK_SECONDS):
                continue  # slow methods run one round, with one repetition
            repeat = 1 if method == "jacobian_loop" else args.repeat
            r = measure(layer, method, repeat, args.threads, args.timeout)
            if best is not None and "error" not in r:
                r = {**best, "seconds": min(best["seconds"], r["seconds"])}  # the first round's peak
            results[(layer, method, kind)] = r
            print(f"  round {number + 1} {layer:5} {method:32} {r}", file=sys.stderr)
    results = list(results.items())
    load = os.getloadavg()
    first = next(r for _, r in results if "error" not in r)
    options = "".join(f" {o}" for o, on in ((f"--threads {args.threads}", args.threads), ("--quick", args.quick)) if on)
    print(table(results))
    print()
    print(f"Measured by `PYTHONPATH=<build>/python /usr/bin/python3 benchmarks/bench_python.py{options}` on "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end; torch {first['torch']}, "
          f"{first['threads']} thread(s) for torch and convmat alike (one OpenMP runtime); one process per method "
          f"and round, best of {args.repeat} runs in each, {args.rounds} interleaved rounds for the methods under "
          f"{QUICK_SECONDS} s.")


if __name__ == "__main__":
    main()
