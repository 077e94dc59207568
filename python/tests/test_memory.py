"""No copies, no surprises: results are NumPy / SciPy / torch objects over
the library's own buffers (checked by their base chain and by measured peak
memory in a fresh process), which stay alive as long as any view of them;
the GIL is released while the library works."""

import gc
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

import convmat

# Builds one result in a fresh process and prints how much the peak
# resident memory grew, beside the result's own bytes.
PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    format, then = sys.argv[1], sys.argv[2]
    if format.startswith("torch"):
        import torch
    import convmat

    def status(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

    def nbytes(t):
        if format == "dense":
            return t.nbytes
        if format == "csr":
            return t.data.nbytes + t.indices.nbytes + t.indptr.nbytes
        if format == "torch":
            return t.element_size() * t.numel()
        return sum(a.element_size() * a.numel() for a in (t.values(), t.col_indices(), t.crow_indices()))

    if format in ("dense", "torch"):  # 8192 x 4096 float32: 128 MiB
        w, size = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32), (32, 32)
    else:  # 65536 x 65536, 9.2 million non-zeros: 74 MiB
        w, size = np.random.default_rng(0).standard_normal((16, 16, 3, 3)).astype(np.float32), (64, 64)
    convmat.matrix(w, (8, 8), padding=1, format=format)  # libraries and threads loaded, before the baseline
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = status("VmRSS")
    t = convmat.matrix(w, size, padding=1, format=format)
    if then == "copy":  # the control: a second copy must show as 2x
        copy = t.copy() if format in ("dense", "csr") else t.clone()
    print(json.dumps({"peak": status("VmHWM") - before, "bytes": nbytes(t)}))
""")


def peak_growth(format, then="keep"):
    """(peak resident growth, result bytes) of building one `format` result."""
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, format, then], capture_output=True, text=True,
                         env=os.environ, check=True)
    measured = json.loads(run.stdout)
    return measured["peak"], measured["bytes"]


@pytest.mark.parametrize("format", ["dense", "csr", "torch", "torch_csr"])
def test_the_result_is_not_duplicated(format):
    peak, size = peak_growth(format)
    assert 0.95 * size <= peak <= 1.05 * size, f"peak {peak / 2**20:.1f} MiB for a result of {size / 2**20:.1f} MiB"


def test_the_peak_measurement_sees_a_copy():
    peak, size = peak_growth("dense", then="copy")
    assert peak >= 1.9 * size, f"peak {peak / 2**20:.1f} MiB for two copies of {size / 2**20:.1f} MiB"


def owner(array):
    """The end of an array's base chain: the object that owns its memory,
    the array itself if it owns it (a copy)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array if array.base is None else array.base


def is_the_librarys(array):
    return type(owner(array)).__name__ == "PyCapsule"


def test_results_are_arrays_over_the_librarys_buffers(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    T = convmat.matrix(w, (7, 9), padding=1)
    assert is_the_librarys(T) and T.flags.c_contiguous and T.flags.writeable
    assert not is_the_librarys(T.copy())
    S = convmat.matrix(w, (7, 9), padding=1, format="csr")
    # SciPy kept the library's three arrays (views at most): no copy, no change of index type.
    assert all(is_the_librarys(a) for a in (S.data, S.indices, S.indptr))
    assert owner(S.data) is owner(S.indices) is owner(S.indptr)  # one capsule keeps the three
    assert S.indices.dtype == S.indptr.dtype == np.int32
    t = convmat.matrix(w, (7, 9), padding=1, format="torch_csr")
    assert t.col_indices().dtype == t.crow_indices().dtype == torch.int32
    for function in (convmat.bias, convmat.affine, convmat.singular_values):
        assert is_the_librarys(function(w, (7, 9))), function.__name__
    for result in (convmat.unfold(w, (7, 9), np.ones(189)), convmat.weight_jacobian(w, (7, 9), np.ones(189)),
                   convmat.fold(w, (7, 9), np.ones((27, 35))), convmat.operator(w, (7, 9)) @ np.ones(189)):
        assert is_the_librarys(result)


def test_views_keep_the_librarys_buffer_alive(rng):
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    T = convmat.matrix(w, (32, 32), padding=1)  # 128 MiB: freed memory goes back to the system
    row, expected = T[4000], T[4000].copy()
    S = convmat.matrix(w, (32, 32), padding=1, format="csr")
    data, expected_data = S.data, S.data.copy()
    tensor = convmat.matrix(w, (32, 32), padding=1, format="torch")[4000]
    del T, S
    gc.collect()
    assert np.array_equal(row, expected) and np.array_equal(data, expected_data)
    assert np.array_equal(tensor.numpy(), expected)


def ticks_in_the_middle_of(call):
    """How often another Python thread ran in the middle half of call()."""
    stamps, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            stamps.append(time.perf_counter())

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.01)
    start = time.perf_counter()
    call()
    end = time.perf_counter()
    stop.set()
    ticker.join()
    quarter = (end - start) / 4
    assert end - start >= 0.05, "the call must be long against the interpreter's 5 ms switch interval"
    return sum(start + quarter < s < end - quarter for s in stamps)


def _seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_the_gil_is_released_while_the_library_works(rng):
    # A call that holds the GIL leaves the other thread no moment to run:
    # CPython's regular expressions hold it while they backtrack.
    assert ticks_in_the_middle_of(lambda: re.fullmatch(r"(a|aa)*c", "a" * 31)) == 0
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    op = convmat.operator(w, (64, 64), padding=1)
    x = np.ones((op.shape[1], 4), np.float32, order="F")
    op @ x  # the first product also starts the threads: time the ones after it
    # Enough samples for a long product, however fast it gets (the faster of
    # two runs, so that one slow run on a loaded machine does not stop it short).
    while min(_seconds(lambda: op @ x), _seconds(lambda: op @ x)) < 0.1:
        x = np.asfortranarray(np.hstack([x, x]))
    assert ticks_in_the_middle_of(lambda: op @ x) > 0
    size = 128  # a CSR build long enough on this machine (about 0.05 s at 128 x 128 on a slow one)
    while size < 256 and _seconds(lambda: convmat.matrix(w, (size, size), padding=1, format="csr")) < 0.1:
        size = min(256, size * 3 // 2)
    assert ticks_in_the_middle_of(lambda: convmat.matrix(w, (size, size), padding=1, format="csr")) > 0
