// The second translation unit (see umbrella_a.cpp): the same templates, and
// the check that both agree with the direct convolution.
#include <convmat/convmat.hpp>

#include <iostream>

#include "umbrella.hpp"

int main() {
  convmat::Conv2dSpec spec;
  spec.in_channels = 2;
  spec.out_channels = 4;
  spec.groups = 2;
  spec.input_size = {5, 4};
  spec.kernel_size = {3, 2};
  spec.stride = {2, 1};
  spec.padding = {1, 1};
  spec.padding_mode = convmat::PaddingMode::reflect;
  const Eigen::VectorXd weight = Eigen::VectorXd::LinSpaced(spec.weight_numel(), -1.0, 2.0);
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(spec.input_numel(), 0.5, 3.0);

  const Eigen::VectorXd direct = convmat::convolve(spec, weight, x);
  const Eigen::MatrixXd dense_here = convmat::conv_matrix(spec, weight);
  const Eigen::MatrixXd dense_there = matrix_from_a(spec, weight);
  const Eigen::MatrixXd sparse_there = sparse_matrix_from_a(spec, weight);
  const double error = std::max({(dense_here * x - direct).cwiseAbs().maxCoeff(),
                                 (dense_there - dense_here).cwiseAbs().maxCoeff(),
                                 (sparse_there - dense_here).cwiseAbs().maxCoeff()});
  std::cout << "convmat " << CONVMAT_VERSION_STRING << ": two translation units, " << dense_here.rows()
            << " x " << dense_here.cols() << " matrix, largest difference " << error << "\n";
  return error < 1e-12 ? 0 : 1;
}
