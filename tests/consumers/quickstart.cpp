#include <convmat/convmat.hpp>
#include <iostream>

int main() {
  convmat::Conv2dSpec spec;                 // torch.nn.Conv2d(1, 1, kernel_size=2)
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  Eigen::Vector4d w(1, 2, 3, 4);            // conv.weight, flattened
  std::cout << convmat::conv_matrix(spec, w) << "\n";   // the 4 x 9 matrix T
}
