# Type stubs for convmat, the matrix of a convolution layer (see the package's docstrings).
import contextlib
from typing import Any, Iterator, Literal, NamedTuple, Sequence, Union

import numpy as np
import numpy.typing as npt
import scipy.sparse
import scipy.sparse.linalg

__version__: str

# A torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d, or its weights (numpy.ndarray or torch.Tensor).
Layer = Any
InputSize = Union[int, Sequence[int]]
PerAxis = Union[int, Sequence[int]]
Padding = Union[int, Literal["same", "valid"], Sequence[Union[int, Sequence[int]]]]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
DenseFormat = Literal["dense", "torch"]
Format = Literal["dense", "csr", "torch", "torch_csr"]
Matrix = Union[np.ndarray, scipy.sparse.csr_matrix, Any]  # Any: torch.Tensor

FORMATS: tuple[str, ...]
ROW_BLOCK_BYTES: int

def matrix(layer: Layer, input_size: InputSize, format: Format = "dense", *, stride: PerAxis = 1,
           padding: Padding = 0, dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros",
           transposed: bool = False, output_padding: PerAxis = 0, bias: Any = None) -> Matrix: ...
def bias(layer: Layer, input_size: InputSize, format: DenseFormat = "dense", *, stride: PerAxis = 1,
         padding: Padding = 0, dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros",
         transposed: bool = False, output_padding: PerAxis = 0, bias: Any = None) -> Any: ...
def affine(layer: Layer, input_size: InputSize, format: Format = "dense", *, stride: PerAxis = 1,
           padding: Padding = 0, dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros",
           transposed: bool = False, output_padding: PerAxis = 0, bias: Any = None) -> Matrix: ...

class MatrixInfo:
    layer: str
    dtype: np.dtype
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    shape: tuple[int, int]
    nonzeros: int
    density: float
    index_dtype: np.dtype
    bytes: dict[str, int]

def info(layer: Layer, input_size: InputSize, *, stride: PerAxis = 1, padding: Padding = 0, dilation: PerAxis = 1,
         groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
         output_padding: PerAxis = 0, bias: Any = None) -> MatrixInfo: ...
def row_blocks(layer: Layer, input_size: InputSize, rows: int | None = None, format: Format = "csr", *,
               stride: PerAxis = 1, padding: Padding = 0, dilation: PerAxis = 1, groups: int = 1,
               padding_mode: PaddingMode = "zeros", transposed: bool = False, output_padding: PerAxis = 0,
               bias: Any = None) -> Iterator[Matrix]: ...
def unfold(layer: Layer, input_size: InputSize, x: npt.ArrayLike, *, stride: PerAxis = 1, padding: Padding = 0,
           dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
           output_padding: PerAxis = 0, bias: Any = None) -> np.ndarray: ...
def fold(layer: Layer, input_size: InputSize, columns: npt.ArrayLike, *, stride: PerAxis = 1, padding: Padding = 0,
         dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
         output_padding: PerAxis = 0, bias: Any = None) -> np.ndarray: ...
def weight_jacobian(layer: Layer, input_size: InputSize, x: npt.ArrayLike, *, stride: PerAxis = 1,
                    padding: Padding = 0, dilation: PerAxis = 1, groups: int = 1,
                    padding_mode: PaddingMode = "zeros", transposed: bool = False, output_padding: PerAxis = 0,
                    bias: Any = None) -> np.ndarray: ...

class ConvOperator(scipy.sparse.linalg.LinearOperator):
    def __init__(self, operator: Any, layer: str) -> None: ...

def operator(layer: Layer, input_size: InputSize, *, stride: PerAxis = 1, padding: Padding = 0,
             dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
             output_padding: PerAxis = 0, bias: Any = None) -> ConvOperator: ...

class SparseLinear:  # a torch.nn.Module (made when first used: import convmat does not import torch)
    in_features: int
    out_features: int
    weight: Any  # torch.Tensor, layout torch.sparse_csr
    bias: Any  # torch.nn.Parameter or None
    def __init__(self, weight: Any, bias: Any = None) -> None: ...
    def __call__(self, x: Any) -> Any: ...

def to_linear(layer: Layer, input_size: InputSize, *, sparse: bool = False, stride: PerAxis = 1,
              padding: Padding = 0, dilation: PerAxis = 1, groups: int = 1, padding_mode: PaddingMode = "zeros",
              transposed: bool = False, output_padding: PerAxis = 0, bias: Any = None) -> Any: ...

class SpectralNorm(NamedTuple):
    value: float
    converged: bool
    iterations: int
    residual: float
    def __float__(self) -> float: ...

class SpectralNormBound(NamedTuple):
    lower: float
    upper: float
    converged: bool
    iterations: int

def spectral_norm(layer: Layer, input_size: InputSize, *, tolerance: float | None = None,
                  max_iterations: int | None = None, seed: int = 2019, stride: PerAxis = 1, padding: Padding = 0, dilation: PerAxis = 1,
                  groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
                  output_padding: PerAxis = 0, bias: Any = None) -> SpectralNorm: ...
def spectral_norm_bound(layer: Layer, input_size: InputSize, *, tolerance: float | None = None,
                  max_iterations: int | None = None, seed: int = 2019, stride: PerAxis = 1, padding: Padding = 0, dilation: PerAxis = 1,
                  groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
                  output_padding: PerAxis = 0, bias: Any = None) -> SpectralNormBound: ...
def singular_values(layer: Layer, input_size: InputSize, k: int | None = None, *, tolerance: float | None = None,
                  max_iterations: int | None = None, seed: int = 2019, stride: PerAxis = 1, padding: Padding = 0, dilation: PerAxis = 1,
                  groups: int = 1, padding_mode: PaddingMode = "zeros", transposed: bool = False,
                  output_padding: PerAxis = 0, bias: Any = None) -> np.ndarray: ...

def max_dense_bytes() -> int | None: ...
def set_max_dense_bytes(limit: int | None) -> int | None: ...
def dense_bytes_limit(limit: int | None) -> contextlib.AbstractContextManager[None]: ...
