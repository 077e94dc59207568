# Every function of convmat's Python module, a few lines each, on one layer.
import numpy as np
import scipy.sparse.linalg
import torch
import convmat

torch.manual_seed(0)
conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1, padding_mode="reflect")
x = torch.randn(3, 7, 9)
y = conv(x).detach().numpy().reshape(-1)
x = x.numpy().reshape(-1)  # T works on flat vectors, C order: x.reshape(-1)

# What T is and costs, building nothing (print(info) for a summary).
info = convmat.info(conv, (7, 9))
print("T:", info.shape, info.nonzeros, "non-zeros,", info.bytes["dense"], "bytes dense,", info.bytes["csr"], "as CSR")

# T in four formats, and the bias b: the layer is T x + b.
T = convmat.matrix(conv, (7, 9))                       # numpy.ndarray
S = convmat.matrix(conv, (7, 9), format="csr")         # scipy.sparse.csr_matrix, built sparse
T_torch = convmat.matrix(conv, (7, 9), format="torch")          # torch.Tensor over T's memory
S_torch = convmat.matrix(conv, (7, 9), format="torch_csr")      # torch sparse CSR
b = convmat.bias(conv, (7, 9))
print("T x + b == conv(x):", np.allclose(T @ x + b, y, atol=1e-5), np.allclose(S @ x + b, y, atol=1e-5))

# [T b; 0 1] on [x; 1], and T in blocks of rows for a matrix that does not fit.
A = convmat.affine(conv, (7, 9), format="csr")
blocks = [block @ x for block in convmat.row_blocks(conv, (7, 9), rows=32)]
print("affine:", A.shape, "row blocks:", [len(part) for part in blocks])

# Weights and PyTorch's keywords instead of a layer; asymmetric padding as (begin, end) pairs.
w = conv.weight.detach().numpy()
T_w = convmat.matrix(w, (7, 9), stride=2, padding=((1, 1), 1), padding_mode="reflect")
print("same matrix from the weights:", np.array_equal(T_w, T))

# Matrix-free: a scipy LinearOperator (rmatvec is the transposed layer) for lsqr, cg, svds, eigsh.
op = convmat.operator(conv, (7, 9))
x_min = scipy.sparse.linalg.lsqr(op, y - b, atol=1e-10, btol=1e-10)[0]  # least-norm input giving y
print("operator:", op.shape, "lsqr residual small:", np.linalg.norm(op @ x_min + b - y) < 1e-4 * np.linalg.norm(y))

# unfold (F.unfold's layout), fold (its adjoint), and the Jacobian in the weights.
columns = convmat.unfold(conv, (7, 9), x)
J = convmat.weight_jacobian(conv, (7, 9), x)
print("unfold:", columns.shape, "fold:", convmat.fold(conv, (7, 9), columns).shape,
      "J w + b == conv(x):", np.allclose(J @ w.reshape(-1) + b, y, atol=1e-5))

# Singular values, and the largest alone, matrix-free.
sigma = convmat.singular_values(conv, (7, 9), k=3)
norm = convmat.spectral_norm(conv, (7, 9))
print("singular values:", np.round(sigma, 3), "spectral norm:", round(float(norm), 3), norm.converged)

# The memory guard: a dense T over the limit is a MemoryError that says what to do instead.
with convmat.dense_bytes_limit(10_000):
    try:
        convmat.matrix(conv, (7, 9))
    except MemoryError as error:
        print("MemoryError:", "format=\"csr\"" in str(error))
