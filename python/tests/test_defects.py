"""Regression tests for the defects a Python user's pass found (issue 27):
each failed before its fix."""

import threading

import numpy as np
import pytest
import torch

import convmat


def test_dense_bytes_limit_across_threads_restores_the_guard():
    # A enters None, B enters 10**9, A exits, B exits: the guard is back to
    # what it was before either (it was left off before the fix).
    before = convmat.max_dense_bytes()
    a_entered, b_entered, a_exited = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with convmat.dense_bytes_limit(None):
            a_entered.set()
            b_entered.wait(10)
        seen["after_a"] = convmat.max_dense_bytes()
        a_exited.set()

    def b():
        a_entered.wait(10)
        with convmat.dense_bytes_limit(10**9):
            b_entered.set()
            a_exited.wait(10)
            seen["inside_b"] = convmat.max_dense_bytes()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen == {"after_a": 10**9, "inside_b": 10**9}
    assert convmat.max_dense_bytes() == before


def test_nested_dense_bytes_limit_in_one_thread():
    before = convmat.max_dense_bytes()
    with convmat.dense_bytes_limit(10**6):
        with convmat.dense_bytes_limit(None):
            assert convmat.max_dense_bytes() is None
        assert convmat.max_dense_bytes() == 10**6
    assert convmat.max_dense_bytes() == before


def test_info_gives_the_exact_dense_bytes_past_two_to_the_64():
    info = convmat.info(torch.nn.Conv2d(3, 4, 3).double(), (40000, 40000))
    rows, cols = info.shape
    assert rows == 4 * 39998 * 39998 and cols == 3 * 40000 * 40000
    assert info.bytes["dense"] == rows * cols * 8 > 2**64
    assert info.bytes["torch"] == info.bytes["dense"]


def test_output_padding_needs_transposed():
    w = np.ones((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match=r"output_padding=1 is for a transposed convolution: pass transposed=True"):
        convmat.matrix(w, (5,), output_padding=1)
    assert convmat.matrix(w, (5,), output_padding=1, transposed=True, stride=2).shape == (1 * 12, 2 * 5)


@pytest.mark.parametrize("integer", [np.int64, np.int32, np.uint8, torch.tensor])
def test_numpy_and_torch_integers_where_ints_are_asked(integer):
    conv = torch.nn.Conv2d(2, 3, 3)
    blocks = list(convmat.row_blocks(conv, (7, 9), rows=integer(32)))
    assert sum(block.shape[0] for block in blocks) == 3 * 5 * 7 and blocks[0].shape[0] == 32
    assert convmat.singular_values(conv, (7, 9), k=integer(3)).shape == (3,)
    convmat.spectral_norm(conv, (7, 9), max_iterations=integer(50), seed=integer(7))
    previous = convmat.set_max_dense_bytes(integer(100))
    try:
        assert convmat.max_dense_bytes() == 100
    finally:
        convmat.set_max_dense_bytes(previous)


@pytest.mark.parametrize("keywords, message", [
    ({"max_iterations": 0}, r"max_iterations must be an int >= 1, not 0"),
    ({"tolerance": 0.0}, r"tolerance must be a positive finite float or None, not 0.0"),
    ({"tolerance": -1e-3}, r"tolerance must be a positive finite float or None"),
    ({"max_iterations": 2.5}, r"max_iterations must be an int >= 1, not 2.5"),
    ({"seed": True}, r"seed must be an int >= 0, not True"),
])
def test_zero_iterations_or_tolerance_are_refused_not_read_as_the_default(keywords, message):
    with pytest.raises(ValueError, match=message):
        convmat.spectral_norm(torch.nn.Conv2d(2, 3, 3), (7, 9), **keywords)


def test_a_worker_thread_follows_torchs_thread_count():
    # OpenMP's count is per thread: a fresh thread starts at the runtime's
    # default, not at torch's, unless convmat asks torch first.
    import ctypes
    try:
        gomp = ctypes.CDLL("libgomp.so.1")
    except OSError:
        pytest.skip("no libgomp to ask")
    conv = torch.nn.Conv2d(2, 3, 3)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    seen = {}

    def work(name, call):
        call()
        seen[name] = gomp.omp_get_max_threads()

    try:
        op = convmat.operator(conv, (7, 9))
        calls = {"matrix": lambda: convmat.matrix(conv, (7, 9)), "operator": lambda: op @ np.ones(2 * 7 * 9)}
        for name, call in calls.items():
            thread = threading.Thread(target=work, args=(name, call))
            thread.start()
            thread.join(20)
    finally:
        torch.set_num_threads(previous)
    assert seen == {"matrix": 1, "operator": 1}


@pytest.mark.parametrize("keywords, message", [
    ({"input_size": (2**63, 9)}, r"input_size=9223372036854775808 does not fit the library's 64-bit sizes"),
    ({"input_size": (7, 9), "stride": 2**64}, r"stride=18446744073709551616 does not fit"),
    ({"input_size": (7, 9), "padding": (2**70, 1)}, r"padding=1180591620717411303424 does not fit"),
])
def test_integers_beyond_int64_are_a_value_error_in_convmats_words(keywords, message):
    with pytest.raises(ValueError, match=message):
        convmat.matrix(np.ones((2, 1, 3, 3), np.float32), **keywords)


def test_a_meta_device_layer_is_a_type_error_in_convmats_words():
    conv = torch.nn.Conv2d(2, 3, 3, device="meta")
    with pytest.raises(TypeError, match=r"weight is on the meta device and holds no values"):
        convmat.matrix(conv, (7, 9))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("function", ["spectral_norm", "spectral_norm_bound", "singular_values"])
def test_spectra_of_non_finite_weights_say_so(function, bad):
    w = np.ones((3, 2, 3, 3))
    w[1, 0, 2, 1] = bad
    with pytest.raises(ValueError, match=rf"{function}: the weights of .* are not finite \(1 of 54 values are NaN or Inf\)"):
        getattr(convmat, function)(w, (7, 9))


@pytest.mark.parametrize("function", ["matrix", "affine"])
def test_a_dense_result_past_int64_entries_is_a_memory_error(function):
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError, match=r"1099511627\d+ x 1099511627\d+ = \d+ entries, more than a 64-bit size"):
        getattr(convmat, function)(w, (2**20, 2**20))


def test_iterations_count_the_final_residual_product_as_documented():
    result = convmat.spectral_norm(torch.nn.Conv2d(2, 3, 3), (7, 9), max_iterations=1)
    assert result.iterations == 2 and not result.converged
    assert "max_iterations=1 reports 2" in convmat.spectral_norm.__doc__
