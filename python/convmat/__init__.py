"""convmat: the matrix of a convolution layer, in one call.

Given a ``torch.nn.Conv1d/2d/3d`` or ``ConvTranspose1d/2d/3d`` (or its weights
and PyTorch's keywords), convmat builds the matrix ``T`` of the layer, so that
for one sample ``x`` of shape ``(C_in, *input_size)``::

    T @ x.reshape(-1) + b == layer(x).reshape(-1)        # b = convmat.bias(layer, input_size)

Vectors are flattened in C order, channels first (``tensor.reshape(-1)``);
rows of ``T`` are outputs ``(C_out, *output_size)``, columns inputs. Every
number is computed by convmat's C++ library, with the GIL released; results
come back without copies (a dense ``T`` is a NumPy array that owns the
library's buffer, a CSR ``T`` SciPy arrays over the library's three arrays).

    >>> import torch, convmat
    >>> conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
    >>> T = convmat.matrix(conv, (7, 9))                  # (80, 189) NumPy array
    >>> S = convmat.matrix(conv, (7, 9), format="csr")    # the same, scipy.sparse

Functions, each taking ``(layer, input_size, ...)``: matrix, bias, affine,
info, row_blocks, unfold, fold, weight_jacobian, operator, spectral_norm,
spectral_norm_bound, singular_values, and to_linear (the torch.nn.Linear
itself, or a SparseLinear). Errors: a layer the library refuses raises ValueError with
its message; a dense result over the memory guard (``max_dense_bytes()``)
MemoryError; a layer of an unknown kind TypeError.
"""

import contextlib
import dataclasses
import functools
import inspect
import math
from operator import index as _as_index  # (convmat.operator is the LinearOperator)
import threading
import typing

import numpy as np

from . import _convmat
from ._layer import KEYWORDS, Layer, as_array, read_layer
from ._operator import ConvOperator
from . import _modules

__version__ = _convmat.__version__

__all__ = [
    "matrix", "bias", "affine", "info", "row_blocks", "unfold", "fold", "weight_jacobian", "operator",
    "spectral_norm", "spectral_norm_bound", "singular_values", "to_linear", "SparseLinear", "MatrixInfo", "SpectralNorm",
    "SpectralNormBound", "ConvOperator",
    "max_dense_bytes", "set_max_dense_bytes", "dense_bytes_limit",
]

FORMATS = ("dense", "csr", "torch", "torch_csr")

# ---------------------------------------------------------------------------
# The common arguments: (layer, input_size, ..., *, stride=1, padding=0, ...)
# ---------------------------------------------------------------------------

_LAYER_DOC = """layer : torch.nn.Conv1d/2d/3d, torch.nn.ConvTranspose1d/2d/3d, or array
        The layer, every attribute read (stride, padding incl. 'same' and
        'valid', dilation, groups, padding_mode, output_padding, bias); or
        its weights (NumPy or torch), shaped as PyTorch's: (out_channels,
        in_channels / groups, *kernel_size), transposed (in_channels,
        out_channels / groups, *kernel_size). float32, float64, complex64
        or complex128; the result has the weights' dtype.
    input_size : int or tuple of int
        The spatial size of one input (H, W), or its full shape (C, H, W) or
        (N, C, H, W), whose C is checked against the layer."""

_KEYWORDS_DOC = """stride, padding, dilation, groups, padding_mode, transposed, output_padding, bias
        Only with a weight array: PyTorch's arguments, with its defaults.
        padding is an int, 'same', 'valid', or per axis an int or a
        (begin, end) pair for asymmetric padding; padding_mode one of
        'zeros', 'reflect', 'replicate', 'circular'; transposed=True for a
        ConvTranspose's weights; bias the out_channels values, or None."""

_KEYWORD_PARAMETERS = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                       for name, default in KEYWORDS.items()]


def _takes_layer(function):
    """function(layer: Layer, ...) as the public (layer, input_size, ..., *,
    stride=1, padding=0, ...): reads the layer once, for every function, and
    fills the common parameters into the docstring (%(layer)s, %(keywords)s)."""
    own = list(inspect.signature(function).parameters.values())[1:]
    positional = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("layer", "input_size")]
    signature = inspect.Signature(positional + own + _KEYWORD_PARAMETERS)

    @functools.wraps(function)
    def public(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        keywords = {name: arguments.pop(name) for name in KEYWORDS if name in arguments}
        layer = read_layer(arguments.pop("layer"), arguments.pop("input_size"), keywords)
        return function(layer, **arguments)

    public.__signature__ = signature
    public.__doc__ = function.__doc__ % {"layer": _LAYER_DOC, "keywords": _KEYWORDS_DOC}
    return public


def _require_dense_entries(layer, what, extra=0):
    """MemoryError, the memory guard's case, for a dense result of more
    entries than a 64-bit size counts (the library calls that an Index
    overflow, a ValueError, though no limit could admit it)."""
    sizes = _convmat.sizes(layer.shape, layer.dtype)
    rows, cols = sizes["rows"] + extra, sizes["cols"] + extra
    if rows * cols >= 2**63:
        raise MemoryError(f"convmat: {what} would be {rows} x {cols} = {rows * cols} entries, more than a "
                          f"64-bit size counts, and more than any memory holds: build it with format=\"csr\", "
                          f"in pieces with row_blocks(...), or use operator(...)")


def _check_format(format, allowed=FORMATS):
    if format not in allowed:
        raise ValueError(f"convmat: format must be one of {', '.join(map(repr, allowed))}, not {format!r}")


def _torch_module():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is installed where the tests run
        raise ImportError("convmat: the torch formats need PyTorch (Debian: python3-torch)") from error
    return torch


def _dense_as(array, format):
    """A dense result (a NumPy array owning the library's buffer) in `format`."""
    return _torch_module().from_numpy(array) if format == "torch" else array


def _csr_as(arrays, format):
    """A CSR result, (data, indices, indptr, shape) over the library's
    buffers, as SciPy's or torch's CSR matrix over the same arrays."""
    data, indices, indptr, shape = arrays
    if format == "torch_csr":
        torch = _torch_module()
        # The library's arrays are valid CSR by construction (sorted, in range: its
        # tests check them); torch.sparse_csr_tensor would read them all again to
        # check (0.7 s for 115 million non-zeros), its unchecked form does not.
        csr_tensor = getattr(torch, "_sparse_csr_tensor_unsafe", torch.sparse_csr_tensor)
        return csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(data), size=shape)
    import scipy.sparse

    return scipy.sparse.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def _is_dense(format):
    return format in ("dense", "torch")


# ---------------------------------------------------------------------------
# The matrix and its relatives
# ---------------------------------------------------------------------------


@_takes_layer
def matrix(layer: Layer, format="dense"):
    """The matrix T of the layer: ``T @ x.reshape(-1) + b == layer(x).reshape(-1)``.

    For one sample x of shape (C_in, *input_size) and b = convmat.bias(layer,
    input_size); rows are the outputs (C_out, *output_size) and columns the
    inputs, both flattened in C order. A batch X (one sample per column,
    ``x.reshape(N, -1).T``) maps to ``T @ X``.

    Parameters
    ----------
    %(layer)s
    format : {"dense", "csr", "torch", "torch_csr"}
        "dense": a C-order NumPy array (it owns the library's buffer: no
        copy is ever made). "csr": a scipy.sparse.csr_matrix, built
        directly in compressed rows (no dense step), over the library's
        arrays; int32 indices unless the matrix needs int64. "torch": a
        dense torch.Tensor sharing the NumPy array's memory. "torch_csr":
        a torch sparse CSR tensor over the same arrays as "csr".
    %(keywords)s

    Returns
    -------
    numpy.ndarray, scipy.sparse.csr_matrix or torch.Tensor
        output_numel x input_numel, the weights' dtype.

    Raises
    ------
    ValueError
        The library refuses the layer (its message names every value).
    MemoryError
        A dense T larger than max_dense_bytes(): use format="csr",
        row_blocks or operator.
    TypeError
        An unknown layer kind, or weights of an unsupported dtype.

    Examples
    --------
    >>> conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
    >>> T = convmat.matrix(conv, (7, 9))
    >>> T.shape
    (80, 189)
    """
    _check_format(format)
    if _is_dense(format):
        _require_dense_entries(layer, "the dense matrix")
        return _dense_as(_convmat.dense(layer.shape, layer.weight), format)
    return _csr_as(_convmat.csr(layer.shape, layer.weight), format)


@_takes_layer
def bias(layer: Layer, format="dense"):
    """The bias as an output-sized vector b, so that the layer is ``T x + b``.

    b holds the layer's bias[c] at every position of output channel c
    (C order, as the rows of T); zeros for a layer without bias.

    Parameters
    ----------
    %(layer)s
    format : {"dense", "torch"}
        A NumPy array, or a torch.Tensor sharing its memory.
    %(keywords)s

    Returns
    -------
    numpy.ndarray or torch.Tensor
        output_numel values, the weights' dtype.
    """
    _check_format(format, ("dense", "torch"))
    return _dense_as(_convmat.bias(layer.shape, layer.bias_or_zeros()), format)


@_takes_layer
def affine(layer: Layer, format="dense"):
    """The affine form ``A = [[T, b], [0, 1]]``: the layer with its bias as one
    linear map on ``[x.reshape(-1), 1]``.

    ``A @ np.append(x.reshape(-1), 1) == np.append(layer(x).reshape(-1), 1)``.

    Parameters
    ----------
    %(layer)s
    format : {"dense", "csr", "torch", "torch_csr"}
        As for matrix(); "csr" stores every row's bias entry, even a zero one.
    %(keywords)s

    Returns
    -------
    numpy.ndarray, scipy.sparse.csr_matrix or torch.Tensor
        (output_numel + 1) x (input_numel + 1).
    """
    _check_format(format)
    if _is_dense(format):
        _require_dense_entries(layer, "the dense affine matrix", extra=1)
        return _dense_as(_convmat.affine_dense(layer.shape, layer.weight, layer.bias_or_zeros()), format)
    return _csr_as(_convmat.affine_csr(layer.shape, layer.weight, layer.bias_or_zeros()), format)


@_takes_layer
def to_linear(layer: Layer, *, sparse=False):
    """The layer as its fully-connected form: a ``torch.nn.Linear`` with weight T
    and bias b, so ``to_linear(conv, size)(x.flatten(1)) == conv(x).flatten(1)``.

    For a batch x of shape (N, C_in, *input_size). The weight is T itself
    (the library's buffer, no copy), in the layer's dtype; a layer without
    bias gives a Linear without bias.

    Parameters
    ----------
    %(layer)s
    sparse : bool
        True: a ``convmat.SparseLinear``, T as a torch sparse CSR tensor
        (built in compressed rows, never dense), called the same way, for a
        layer whose dense T does not fit.
    %(keywords)s

    Returns
    -------
    torch.nn.Linear or convmat.SparseLinear
        in_features = C_in * prod(input_size), out_features = the output's numel.

    Raises
    ------
    ValueError, MemoryError, TypeError
        As matrix(): a dense T over max_dense_bytes() is a MemoryError
        (use sparse=True).

    Examples
    --------
    >>> conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
    >>> fc = convmat.to_linear(conv, (7, 9))
    >>> fc
    Linear(in_features=189, out_features=80, bias=True)
    >>> x = torch.randn(5, 3, 7, 9)
    >>> torch.allclose(fc(x.flatten(1)), conv(x).flatten(1), atol=1e-6)
    True
    """
    if not isinstance(sparse, bool):
        raise TypeError(f"convmat: sparse must be True or False, not {sparse!r}")

    def dense_matrix():
        _require_dense_entries(layer, "the dense matrix")
        return _dense_as(_convmat.dense(layer.shape, layer.weight), "torch")

    return _modules.to_linear(layer, sparse, dense_matrix,
                              lambda: _csr_as(_convmat.csr(layer.shape, layer.weight), "torch_csr"),
                              lambda: _dense_as(_convmat.bias(layer.shape, layer.bias_or_zeros()), "torch"))


def __getattr__(name):
    """convmat.SparseLinear: a torch.nn.Module, so made when first asked for
    (import convmat does not import torch)."""
    if name == "SparseLinear":
        return _modules.sparse_linear_class()
    raise AttributeError(f"module 'convmat' has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class MatrixInfo:
    """What a layer's matrix is and costs, known before anything is built.

    Attributes
    ----------
    layer : str
        The layer, as in error messages.
    dtype : numpy.dtype
        The weights' dtype, and so T's.
    input_shape, output_shape : tuple of int
        One sample in, one sample out: (C_in, *input_size), (C_out, *output_size).
    shape : tuple of int
        T's (rows, cols) = (output_numel, input_numel).
    nonzeros : int
        The exact number of entries format="csr" stores.
    density : float
        nonzeros / (rows * cols).
    index_dtype : numpy.dtype
        The CSR index type: int32 unless the matrix needs int64.
    bytes : dict
        Bytes of T in each format: "dense" and "torch" rows * cols * itemsize;
        "csr" and "torch_csr" values, column indices and row offsets.
    """

    layer: str
    dtype: np.dtype
    input_shape: tuple
    output_shape: tuple
    shape: tuple
    nonzeros: int
    density: float
    index_dtype: np.dtype
    bytes: dict

    def __str__(self):
        rows, cols = self.shape
        return "\n".join([
            f"layer     {self.layer}",
            f"input     {self.input_shape}: {math.prod(self.input_shape)} values",
            f"output    {self.output_shape}: {math.prod(self.output_shape)} values",
            f"matrix T  {rows} x {cols} {self.dtype}: T @ x.reshape(-1) + b == layer(x).reshape(-1)",
            f"non-zeros {self.nonzeros} ({100 * self.density:.3g}% of the entries)",
            f"dense     {_human_bytes(self.bytes['dense'])} (format='dense' or 'torch')",
            f"csr       {_human_bytes(self.bytes['csr'])} (format='csr' or 'torch_csr', {self.index_dtype} indices)",
        ])


def _human_bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n} bytes ({n / size:.1f} {unit})"
    return f"{n} bytes"


@_takes_layer
def info(layer: Layer):
    """Shapes, the exact non-zero count and the bytes of each format, without
    building anything.

    Parameters
    ----------
    %(layer)s
    %(keywords)s

    Returns
    -------
    MatrixInfo
        print() it for a summary.
    """
    s = _convmat.sizes(layer.shape, layer.dtype)
    rows, cols = s["rows"], s["cols"]
    dense_bytes = rows * cols * np.dtype(layer.dtype).itemsize  # exact: Python's ints do not saturate
    return MatrixInfo(
        layer=layer.name, dtype=layer.dtype, input_shape=s["input_shape"], output_shape=s["output_shape"],
        shape=(rows, cols), nonzeros=s["nonzeros"], density=s["nonzeros"] / (rows * cols),
        index_dtype=np.dtype(s["index_dtype"]),
        bytes={"dense": dense_bytes, "torch": dense_bytes, "csr": s["csr_bytes"],
               "torch_csr": s["csr_bytes"]},
    )


#: row_blocks' default block size, in bytes of the block's format.
ROW_BLOCK_BYTES = 64 * 2**20


@_takes_layer
def row_blocks(layer: Layer, rows=None, format="csr"):
    """T in blocks of rows, one at a time: for a matrix that does not fit.

    Block i holds rows [i * rows, min((i + 1) * rows, output_numel)) of T,
    built on its own (never the whole matrix); stacked, they are exactly
    matrix(layer, input_size, format). A generator: each block is built
    when it is asked for.

    Parameters
    ----------
    %(layer)s
    rows : int, optional
        Rows per block; by default as many as take about 64 MiB in `format`.
    format : {"csr", "dense", "torch", "torch_csr"}
        Each block's format, as for matrix().
    %(keywords)s

    Yields
    ------
    scipy.sparse.csr_matrix, numpy.ndarray or torch.Tensor
        rows x input_numel (the last block may be shorter).

    Notes
    -----
    Convolutions only: for a ConvTranspose, use matrix(..., format="csr")
    or operator().

    Examples
    --------
    >>> for block in convmat.row_blocks(conv, (56, 56), rows=4096):
    ...     y_part = block @ x.reshape(-1)
    """
    _check_format(format)
    if layer.transposed:
        raise TypeError("convmat: row_blocks takes a convolution (Conv1d/2d/3d); for a ConvTranspose use "
                        "matrix(..., format='csr') or operator()")
    sizes = _convmat.sizes(layer.shape, layer.dtype)
    total = sizes["rows"]
    if rows is None:
        bytes_per_row = (sizes["dense_bytes"] if _is_dense(format) else sizes["csr_bytes"]) / total
        rows = max(1, int(ROW_BLOCK_BYTES // bytes_per_row))
    else:
        rows = _integer(rows, "rows", 1)
    return _blocks(layer, total, rows, format)


def _blocks(layer, total, rows, format):
    for begin in range(0, total, rows):
        end = min(begin + rows, total)
        if _is_dense(format):
            yield _dense_as(_convmat.dense_rows(layer.shape, layer.weight, begin, end), format)
        else:
            yield _csr_as(_convmat.csr_rows(layer.shape, layer.weight, begin, end), format)


# ---------------------------------------------------------------------------
# unfold, fold, the weight Jacobian
# ---------------------------------------------------------------------------


def _sample(layer, x, what):
    """One input sample x as a flat C-contiguous array, checked against the layer."""
    if layer.transposed:
        raise TypeError(f"convmat: {what} takes a convolution (Conv1d/2d/3d), not a ConvTranspose")
    x = as_array(x, "x")
    shape = _convmat.sizes(layer.shape, x.dtype)["input_shape"]
    if x.size != math.prod(shape):
        raise ValueError(f"convmat: x has shape {x.shape} ({x.size} values), but {layer.name} takes one sample "
                         f"of shape {shape} ({math.prod(shape)} values)")
    return x.reshape(-1)


@_takes_layer
def unfold(layer: Layer, x):
    """The unfold (im2col) matrix of one sample, with torch.nn.functional.unfold's layout.

    Rows are ordered (channel, k0, k1, ...), columns by output position;
    any rank and every padding mode (an entry reads what the padded input
    holds there). ``F.unfold(x[None], kernel_size, dilation, padding,
    stride)[0]`` for a 2-D layer with zero padding.

    Parameters
    ----------
    %(layer)s
    x : array or torch.Tensor
        One sample, (C_in, *input_size) or flat; its dtype is the result's.
    %(keywords)s

    Returns
    -------
    numpy.ndarray
        (C_in * prod(kernel_size)) x prod(output_size).
    """
    return _convmat.unfold(layer.shape, _sample(layer, x, "unfold"))


@_takes_layer
def fold(layer: Layer, columns):
    """The adjoint of unfold: sums each column back into the input positions
    it was read from (torch.nn.functional.fold).

    Parameters
    ----------
    %(layer)s
    columns : array or torch.Tensor
        (C_in * prod(kernel_size)) x prod(output_size), as unfold() returns.
    %(keywords)s

    Returns
    -------
    numpy.ndarray
        One input sample, (C_in, *input_size).
    """
    if layer.transposed:
        raise TypeError("convmat: fold takes a convolution (Conv1d/2d/3d), not a ConvTranspose")
    columns = as_array(columns, "columns")
    shape = _convmat.sizes(layer.shape, columns.dtype)["input_shape"]
    return _convmat.fold(layer.shape, columns).reshape(shape)


@_takes_layer
def weight_jacobian(layer: Layer, x):
    """The Jacobian of the layer's output with respect to its weights, at input x.

    J with ``J @ w.reshape(-1) == conv(x, w).reshape(-1)`` (no bias) for every
    weight w: the unfold matrix of x, arranged per output channel.

    Parameters
    ----------
    %(layer)s
    x : array or torch.Tensor
        One sample, (C_in, *input_size) or flat; its dtype is the result's.
    %(keywords)s

    Returns
    -------
    numpy.ndarray
        output_numel x weight_numel.
    """
    return _convmat.weight_jacobian(layer.shape, _sample(layer, x, "weight_jacobian"))


# ---------------------------------------------------------------------------
# Matrix-free, and the spectrum
# ---------------------------------------------------------------------------


@_takes_layer
def operator(layer: Layer):
    """T without the matrix, as a scipy.sparse.linalg.LinearOperator.

    matvec is the layer (without bias), rmatvec the adjoint T^H (the
    transposed layer), matmat and rmatmat the same on one sample per
    column; ``.T`` and ``.H`` are matrix-free too. Each product runs the
    C++ ConvOperator (blocked unfold and a matrix product), the GIL
    released; memory is that of the weights and the layer's index geometry,
    whatever the layer's size. scipy.sparse.linalg's lsqr, lsmr, cg, gmres,
    svds and eigsh (on ``op.H @ op``) take it.

    The operator holds a copy of the weights as they are when it is made:
    after an optimizer step changes the layer, ``op @ x`` is still the old
    T; make the operator again.

    Parameters
    ----------
    %(layer)s
    %(keywords)s

    Returns
    -------
    ConvOperator
        A LinearOperator of shape (output_numel, input_numel), the weights' dtype.

    Examples
    --------
    >>> op = convmat.operator(conv, (56, 56))
    >>> x = scipy.sparse.linalg.lsqr(op, y)[0]
    """
    return ConvOperator(_convmat.Operator(layer.shape, layer.weight), layer.name)


class SpectralNorm(typing.NamedTuple):
    """spectral_norm's result; float() of it is the value."""

    value: float
    """The largest singular value of T (never above it, up to rounding)."""
    converged: bool
    """Whether the residual met the tolerance within max_iterations."""
    iterations: int
    """Products with T performed (as many with T^H): the iteration's, plus
    the one that measures the final residual."""
    residual: float
    """max(|T v - value u|, |T^H u - value v|) / value, measured with the final vectors."""

    def __float__(self):
        return self.value


class SpectralNormBound(typing.NamedTuple):
    """spectral_norm_bound's result: lower <= ||T||_2 <= upper, certified."""

    lower: float
    """|T v| for a unit vector v: never above the norm."""
    upper: float
    """By the FFT of the circular layer T is part of: never below the norm."""
    converged: bool
    """Whether the Lanczos estimate behind `lower` converged."""
    iterations: int
    """Products with T it took, the final residual's included."""


def _integer(value, name, minimum):
    """value as a Python int (NumPy and torch integers too, by
    operator.index), at least `minimum`; bool is not an integer here."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = _as_index(value)
    except TypeError:
        raise ValueError(f"convmat: {name} must be an int >= {minimum}, not {value!r}") from None
    if number < minimum:
        raise ValueError(f"convmat: {name} must be an int >= {minimum}, not {value!r}")
    return number


def _require_finite(layer, function):
    """The spectra of weights with NaN or Inf have no meaning: say so,
    rather than return a value (or fail deep inside an eigensolver)."""
    bad = np.count_nonzero(~np.isfinite(layer.weight))
    if bad:
        raise ValueError(f"convmat: {function}: the weights of {layer.name} are not finite ({bad} of "
                         f"{layer.weight.size} values are NaN or Inf)")


def _iteration_arguments(tolerance, max_iterations, seed):
    """(tolerance, max_iterations, seed) for the C++ spectra, whose 0 means
    "the default": None is the default here, and an explicit 0 is refused
    rather than read as it."""
    if tolerance is not None:
        try:
            tolerance = float(tolerance)
        except (TypeError, ValueError):
            raise ValueError(f"convmat: tolerance must be a positive float or None, not {tolerance!r}") from None
        if not tolerance > 0.0 or math.isinf(tolerance):
            raise ValueError(f"convmat: tolerance must be a positive finite float or None, not {tolerance!r}")
    max_iterations = None if max_iterations is None else _integer(max_iterations, "max_iterations", 1)
    seed = _integer(seed, "seed", 0)
    return tolerance or 0.0, max_iterations or 0, seed


@_takes_layer
def spectral_norm(layer: Layer, *, tolerance=None, max_iterations=None, seed=2019):
    """The largest singular value of T: the layer's Lipschitz constant in the 2-norm.

    Matrix-free, for any layer size: Golub-Kahan-Lanczos bidiagonalisation
    on the C++ operator, with full reorthogonalisation and thick restarts,
    so that repeated and clustered top values converge as fast as isolated
    ones. Convergence is judged by the residual measured with the final
    singular vectors, never by an estimate.

    Parameters
    ----------
    %(layer)s
    tolerance : float, optional
        Relative residual to reach; by default 1e-10 for float64 weights,
        1e-5 for float32.
    max_iterations : int, optional
        The most products with T the iteration spends before giving up
        (converged=False), at least 1; by default 1100. The residual is
        then measured with one more product per value found, which
        `iterations` counts too: max_iterations=1 reports 2.
    seed : int
        Seed of the random start vector: the result is deterministic.
    %(keywords)s

    Returns
    -------
    SpectralNorm
        (value, converged, iterations, residual); float() of it is the value.
    """
    _require_finite(layer, "spectral_norm")
    value, converged, iterations, residual = _convmat.spectral_norm(
        layer.shape, layer.weight, *_iteration_arguments(tolerance, max_iterations, seed))
    return SpectralNorm(value, converged, iterations, residual)


@_takes_layer
def spectral_norm_bound(layer: Layer, *, tolerance=None, max_iterations=None, seed=2019):
    """A certified bracket lower <= ||T||_2 <= upper, for every padding mode and stride.

    `upper` comes from the FFT: a zero-padded or strided layer is a part of a
    circular convolution on the padded grid, whose norm is exact by the FFT;
    reflect and replicate padding multiply it by the padding operator's norm.
    `lower` is |T v| for the unit vector v of spectral_norm's estimate.
    Milliseconds for the upper bound; the lower one costs spectral_norm.

    Which T: the layer's exact linear map with the weights as given. With
    float32 weights both bounds hold for the exact map of those float32
    values (computed in double and rounded outward), not for the float32
    matrix that matrix() returns, whose own norm can differ by rounding:
    `lower` may then be one float32 ulp above that matrix's norm.

    Parameters
    ----------
    %(layer)s
    tolerance, max_iterations, seed :
        As for spectral_norm (the estimate behind `lower`).
    %(keywords)s

    Returns
    -------
    SpectralNormBound
        (lower, upper, converged, iterations).
    """
    _require_finite(layer, "spectral_norm_bound")
    return SpectralNormBound(*_convmat.spectral_norm_bound(
        layer.shape, layer.weight, *_iteration_arguments(tolerance, max_iterations, seed)))


@_takes_layer
def singular_values(layer: Layer, k=None, *, tolerance=None, max_iterations=None, seed=2019):
    """The singular values of T, descending.

    All of them (k=None): exactly through the FFT when T is block-circulant
    (circular padding with a stride that divides the input, output size
    input / stride), else by an SVD of the dense matrix (within
    max_dense_bytes()). The k largest: by the FFT when block-circulant, else
    matrix-free by Lanczos on the operator, for layers far too big for a
    dense SVD; RuntimeError if they do not converge.

    Parameters
    ----------
    %(layer)s
    k : int, optional
        Only the k largest; all min(rows, cols) of them by default.
    tolerance, max_iterations, seed :
        For the k largest by Lanczos, as for spectral_norm.
    %(keywords)s

    Returns
    -------
    numpy.ndarray
        The weights' real dtype.
    """
    if k is not None:
        k = _integer(k, "k", 1)
    _require_finite(layer, "singular_values")
    return _convmat.singular_values(layer.shape, layer.weight, 0 if k is None else k,
                                    *_iteration_arguments(tolerance, max_iterations, seed))


# ---------------------------------------------------------------------------
# The memory guard
# ---------------------------------------------------------------------------


def max_dense_bytes():
    """The largest dense result, in bytes, convmat builds (None: no limit).

    Default: half of the machine's physical memory. Beyond it, building
    raises MemoryError before anything is allocated. It holds every result
    convmat sizes, dense and compressed (CSR) alike, by its exact bytes: a
    CSR T is smaller, but not exempt; row_blocks and operator are the ways
    past the limit.
    """
    limit = _convmat.max_dense_bytes()
    return None if limit == _convmat.no_limit else limit


def set_max_dense_bytes(limit):
    """Sets the memory guard for every thread: the largest dense result in
    bytes (an int, NumPy integers too), or None for no limit. Returns the
    previous setting."""
    limit = None if limit is None else _integer(limit, "the limit", 0)
    with _guard_lock:
        previous = max_dense_bytes()
        _convmat.set_max_dense_bytes(_convmat.no_limit if limit is None else limit)
    return previous


# dense_bytes_limit's open blocks, process-wide: [(token, limit), ...] in the
# order they were entered, and the setting from before the first of them.
_guard_lock = threading.RLock()
_guard_blocks = []
_guard_before = [None]


@contextlib.contextmanager
def dense_bytes_limit(limit):
    """``with convmat.dense_bytes_limit(2**30): ...`` sets the memory guard
    (bytes, or None for no limit) inside the block.

    The guard is process-wide (as set_max_dense_bytes), and blocks may open
    and close in any order across threads: while any block is open the
    guard is the limit of the one entered last of those still open, and
    when the last one closes, the setting from before the first is back.
    """
    token = object()
    with _guard_lock:
        before = set_max_dense_bytes(limit)
        if not _guard_blocks:
            _guard_before[0] = before
        _guard_blocks.append((token, limit))
    try:
        yield
    finally:
        with _guard_lock:
            _guard_blocks[:] = [block for block in _guard_blocks if block[0] is not token]
            set_max_dense_bytes(_guard_blocks[-1][1] if _guard_blocks else _guard_before[0])
