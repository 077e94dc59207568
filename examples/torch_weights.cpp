// A PyTorch layer's weights in C++: saved with NumPy in Python, loaded
// with <convmat/npy.hpp>, and the layer's matrix saved back for numpy.load.
//
//     conv = torch.nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1)
//     numpy.save("conv2d_weights.npy", conv.weight.detach().numpy())   # (3, 2, 3, 3)
//     numpy.save("conv2d_bias.npy", conv.bias.detach().numpy())        # (3,)
//
// Usage: torch_weights [DATA_DIR=examples/data] [OUT=T.npy]
#include <convmat/convmat.hpp>
#include <convmat/npy.hpp>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  const std::string data = argc > 1 ? argv[1] : "examples/data", out = argc > 2 ? argv[2] : "T.npy";
  const auto w = convmat::npy::load(data + "/conv2d_weights.npy");
  const auto b = convmat::npy::load(data + "/conv2d_bias.npy");

  convmat::Conv2dSpec spec;  // channels and kernel from the weights' shape
  spec.out_channels = w.shape[0];
  spec.in_channels = w.shape[1];
  spec.kernel_size = {w.shape[2], w.shape[3]};
  spec.input_size = {6, 6};
  spec.stride = {2, 2};
  spec.padding = {1, 1};
  const auto T = convmat::conv_matrix(spec, w.vector<float>());
  const auto bias = convmat::bias_vector(spec, b.vector<float>());  // y = T x + bias
  convmat::npy::save(out, T);

  std::cout << "weights " << convmat::npy::shape_string(w.shape) << " " << convmat::npy::dtype_name(w.dtype)
            << ", bias " << convmat::npy::shape_string(b.shape) << "\n"
            << "T is " << T.rows() << " x " << T.cols() << " (saved for numpy.load), b has " << bias.size()
            << " values\nrow 0 of T: " << T.row(0).head(8) << " ...\n";
}
