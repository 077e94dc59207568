"""convmat.operator (a scipy LinearOperator on the C++ ConvOperator) equals T
and T^H; SciPy's solvers and eigensolvers take it; the spectra equal
NumPy's SVD of T."""

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

import convmat
from conftest import DTYPES, make_layer, layer_params, relative_error, tolerance


@layer_params()
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_operator_products_are_T_and_its_transpose(factory, size, dtype, rng):
    layer = make_layer(factory, dtype)
    T = convmat.matrix(layer, size).astype(np.float64)
    op = convmat.operator(layer, size)
    assert isinstance(op, sla.LinearOperator) and op.shape == T.shape and op.dtype == layer.weight.detach().numpy().dtype
    x, y = rng.standard_normal(T.shape[1]), rng.standard_normal(T.shape[0])
    X, Y = rng.standard_normal((T.shape[1], 3)), rng.standard_normal((T.shape[0], 4))
    tol = tolerance(dtype)
    assert relative_error(op.matvec(x), T @ x) <= tol
    assert relative_error(op @ X, T @ X) <= tol
    assert relative_error(op.rmatvec(y), T.T @ y) <= tol
    assert relative_error(op.H @ Y, T.T @ Y) <= tol
    assert relative_error(op.T.matmat(Y), T.T @ Y) <= tol
    assert relative_error(op.rmatmat(np.ascontiguousarray(Y)), T.T @ Y) <= tol  # C order too
    assert relative_error(op.matvec(x[:, None]).ravel(), T @ x) <= tol
    assert relative_error(op @ (x + 1j * x), T @ (x + 1j * x)) <= tol  # complex operand, real weights
    assert op.H.H.shape == op.shape and "convmat.ConvOperator" in repr(op)


def test_complex_operator_transpose_and_adjoint(rng):
    w = rng.standard_normal((3, 2, 3, 3)) + 1j * rng.standard_normal((3, 2, 3, 3))
    T = convmat.matrix(w, (5, 4), padding=1)
    op = convmat.operator(w, (5, 4), padding=1)
    y = rng.standard_normal(T.shape[0]) + 1j * rng.standard_normal(T.shape[0])
    assert op.dtype == np.complex128
    assert relative_error(op.rmatvec(y), T.conj().T @ y) <= 1e-13
    assert relative_error(op.T @ y, T.T @ y) <= 1e-13
    assert relative_error(op.H @ y, T.conj().T @ y) <= 1e-13


def test_lsqr_recovers_the_input_of_a_well_posed_layer(rng):
    conv = make_layer(lambda: torch.nn.Conv2d(2, 4, 3, padding=1), torch.float64)
    op = convmat.operator(conv, (12, 12))
    x = rng.standard_normal(op.shape[1])
    result = sla.lsqr(op, op @ x, atol=1e-14, btol=1e-14, iter_lim=2000)
    assert relative_error(result[0], x) <= 1e-8, result[1:4]
    solution, info = sla.cg(op.H @ op, op.H @ (op @ x), tol=1e-12, atol=0, maxiter=2000)
    assert info == 0 and relative_error(solution, x) <= 1e-6


def test_svds_and_eigsh_take_the_operator(rng):
    conv = make_layer(lambda: torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect"), torch.float64)
    sigma = np.linalg.svd(convmat.matrix(conv, (9, 8)), compute_uv=False)
    op = convmat.operator(conv, (9, 8))
    top = np.sort(sla.svds(op, k=3, return_singular_vectors=False, random_state=1))[::-1]
    assert relative_error(top, sigma[:3]) <= 1e-9
    eigen = np.sort(sla.eigsh(op.H @ op, k=2, return_eigenvectors=False))[::-1]
    assert relative_error(eigen, sigma[:2] ** 2) <= 1e-9


@layer_params()
def test_spectra_are_the_svd_of_T(factory, size, seed):
    layer = make_layer(factory, torch.float64)
    sigma = np.linalg.svd(convmat.matrix(layer, size), compute_uv=False)
    values = convmat.singular_values(layer, size)
    assert values.dtype == np.float64 and len(values) == len(sigma)
    assert np.abs(values - sigma).max() <= 1e-10 * sigma[0]
    assert np.array_equal(convmat.singular_values(layer, size, k=2), values[:2])
    norm = convmat.spectral_norm(layer, size, max_iterations=20000)
    assert norm.converged and abs(float(norm) - sigma[0]) <= 1e-6 * sigma[0], norm


def test_singular_values_of_a_circulant_layer_by_fft(seed):
    conv = make_layer(lambda: torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"), torch.float32)
    values = convmat.singular_values(conv, (6, 6))
    sigma = np.linalg.svd(convmat.matrix(conv, (6, 6)).astype(np.float64), compute_uv=False)
    assert values.dtype == np.float32 and np.abs(values - sigma).max() <= 1e-5 * sigma[0]
