import torch
import convmat

conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
T = convmat.matrix(conv, (7, 9))   # NumPy array (80, 189): rows = outputs, columns = inputs
b = convmat.bias(conv, (7, 9))     # (80,): the bias at every output position

x = torch.randn(3, 7, 9)
y = conv(x).detach().numpy()
print(T.shape, T.dtype, abs(T @ x.numpy().reshape(-1) + b - y.reshape(-1)).max() < 1e-5)
