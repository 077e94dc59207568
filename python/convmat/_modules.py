"""The layer as a torch module: convmat.to_linear and convmat.SparseLinear.

to_linear answers the question convmat exists for, "is there a function in
PyTorch that turns a convolution into its fully-connected form?": it gives
the torch.nn.Linear itself, its weight T and its bias b, so that
``to_linear(conv, size)(x.flatten(1)) == conv(x).flatten(1)``. For a layer
whose dense T does not fit, SparseLinear holds T as a torch sparse CSR
tensor and is called the same way.
"""


def _torch():
    import torch  # the caller has a torch layer or asked for a torch module
    return torch


def _make_sparse_linear():
    torch = _torch()

    class SparseLinear(torch.nn.Module):
        """y = x @ T^T + b, T a torch sparse CSR tensor: a torch.nn.Linear whose
        weight stays sparse.

        Called as torch.nn.Linear is: an input (..., in_features) gives
        (..., out_features). ``weight`` is a buffer (the CSR matrix, moved by
        ``.to()`` with the module), ``bias`` a Parameter or None.

        Parameters
        ----------
        weight : torch.Tensor
            out_features x in_features, layout torch.sparse_csr.
        bias : torch.Tensor or None
            out_features values of the weight's dtype.
        """

        def __init__(self, weight, bias=None):
            super().__init__()
            if weight.layout != torch.sparse_csr or weight.dim() != 2:
                raise ValueError(f"convmat: SparseLinear takes a 2-D sparse CSR weight, not a {weight.dim()}-D "
                                 f"{weight.layout} tensor")
            self.out_features, self.in_features = (int(n) for n in weight.shape)
            if bias is not None and tuple(bias.shape) != (self.out_features,):
                raise ValueError(f"convmat: the bias has shape {tuple(bias.shape)}, but the weight has "
                                 f"{self.out_features} rows")
            self.register_buffer("weight", weight)
            self.bias = None if bias is None else torch.nn.Parameter(bias)

        def forward(self, x):
            if x.shape[-1] != self.in_features:
                raise ValueError(f"convmat: SparseLinear takes (..., {self.in_features}), not {tuple(x.shape)}")
            leading = x.shape[:-1]
            columns = x.reshape(-1, self.in_features).T  # one sample per column
            y = (self.weight @ columns).T
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*leading, self.out_features)

        def extra_repr(self):
            nnz = int(self.weight.values().numel())
            density = nnz / max(1, self.in_features * self.out_features)
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"bias={self.bias is not None}, nnz={nnz} ({density:.2%})")

    SparseLinear.__module__ = "convmat"
    SparseLinear.__qualname__ = "SparseLinear"
    return SparseLinear


_sparse_linear = None


def sparse_linear_class():
    """convmat.SparseLinear, made (once) when torch is first needed."""
    global _sparse_linear
    if _sparse_linear is None:
        _sparse_linear = _make_sparse_linear()
    return _sparse_linear


def to_linear(layer, sparse, dense_matrix, csr_matrix, bias_vector):
    """The module for a read `layer`: the matrix from `dense_matrix()` or
    `csr_matrix()` (torch tensors over the library's buffers), the bias from
    `bias_vector()` or None for a layer without one."""
    torch = _torch()
    bias = None if layer.bias is None else bias_vector()
    if sparse:
        return sparse_linear_class()(csr_matrix(), bias)
    weight = dense_matrix()
    rows, cols = weight.shape
    linear = torch.nn.Linear(cols, rows, bias=bias is not None, device="meta")  # no init of memory we replace
    linear.weight = torch.nn.Parameter(weight)  # T itself, not a copy
    if bias is not None:
        linear.bias = torch.nn.Parameter(bias)
    return linear
