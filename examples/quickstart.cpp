// The question that started convmat: what is the matrix T of a
// convolution, so that vec(conv(x, w)) = T vec(x)? A 3x3 input and a 2x2
// kernel give a 4x9 matrix.
#include <convmat/convmat.hpp>

#include <iostream>

int main() {
  convmat::Conv2dSpec spec;         // PyTorch's Conv2d(1, 1, kernel_size=2)
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  Eigen::Vector4d w(1, 2, 3, 4);    // weights (out, in, 2, 2), flattened

  const auto T = convmat::conv_matrix(spec, w);  // 4 x 9
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(9, 1, 9);

  std::cout << "T (" << T.rows() << " x " << T.cols() << "):\n" << T << "\n\n";
  std::cout << "T * vec(x)        = " << (T * x).transpose() << "\n";
  std::cout << "convolve(x, w)    = " << convmat::convolve(spec, w, x).transpose() << "\n";
  const double difference = (T * x - convmat::convolve(spec, w, x)).cwiseAbs().maxCoeff();
  std::cout << "largest difference: " << difference << "\n";
  return difference == 0.0 ? 0 : 1;
}
