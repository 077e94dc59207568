"""convmat.operator's LinearOperator: SciPy's interface on the C++ ConvOperator."""

import numpy as np
import scipy.sparse.linalg

from ._layer import follow_torch_threads


class ConvOperator(scipy.sparse.linalg.LinearOperator):
    """A layer's matrix T, matrix-free: every product runs convmat's C++
    ConvOperator (the direct convolution and its adjoint) with the GIL
    released. ``op @ x`` (matvec, matmat) is the layer without bias,
    ``op.H @ y`` (rmatvec, rmatmat) its adjoint, ``op.T`` its transpose,
    all matrix-free; made by convmat.operator()."""

    def __init__(self, operator, layer):
        super().__init__(dtype=np.dtype(operator.dtype), shape=(operator.rows, operator.cols))
        self._operator = operator
        self._adjoint_operator = operator.adjoint()  # shares the weights and taps
        self._layer = layer

    def __repr__(self):
        rows, cols = self.shape
        return f"<{rows}x{cols} convmat.ConvOperator of {self._layer} with dtype={self.dtype}>"

    def _apply(self, operator, x):
        """operator's product with x, a vector or one sample per column, cast
        to the operator's dtype (for a complex x and real weights, the real
        and imaginary parts one after the other)."""
        follow_torch_threads()
        x = np.asarray(x)
        if np.iscomplexobj(x) and self.dtype.kind != "c":
            return self._apply(operator, x.real) + 1j * self._apply(operator, x.imag)
        return operator.apply(np.asfortranarray(x, dtype=self.dtype))

    def _matvec(self, x):
        return self._apply(self._operator, x)

    def _matmat(self, x):
        return self._apply(self._operator, x)

    def _rmatvec(self, y):
        return self._apply(self._adjoint_operator, y)

    def _rmatmat(self, y):
        return self._apply(self._adjoint_operator, y)

    def _adjoint(self):
        return ConvOperator(self._adjoint_operator, f"the adjoint of {self._layer}")

    def _transpose(self):
        return ConvOperator(self._operator.transpose(), f"the transpose of {self._layer}")
