import torch
import convmat

conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
fc = convmat.to_linear(conv, (7, 9))                   # torch.nn.Linear(189, 80): weight T, bias b
sparse = convmat.to_linear(conv, (7, 9), sparse=True)  # convmat.SparseLinear: T as torch sparse CSR
x = torch.randn(5, 3, 7, 9)
with torch.no_grad():
    print(fc, torch.allclose(fc(x.flatten(1)), conv(x).flatten(1), atol=1e-5),
          torch.allclose(sparse(x.flatten(1)), conv(x).flatten(1), atol=1e-5))
