// The other linear layers of a CNN, and a chain of them as one affine map:
// Conv2d -> BatchNorm2d (folded into the convolution) -> AvgPool2d(2).
#include <convmat/convmat.hpp>

#include <iostream>

int main() {
  convmat::Conv2dSpec conv;  // Conv2d(1, 2, kernel_size=3, padding=1) on 4 x 4
  conv.out_channels = 2;
  conv.input_size = {4, 4};
  conv.kernel_size = {3, 3};
  conv.padding = {1, 1};
  const Eigen::VectorXd w = Eigen::VectorXd::LinSpaced(conv.weight_numel(), -1, 1);
  const Eigen::Vector2d b(0.5, -0.5);

  convmat::BatchNorm<double> bn;  // BatchNorm2d(2) in eval mode: weight, bias, running_mean, running_var
  bn.gamma = Eigen::Vector2d(2, 1);
  bn.beta = Eigen::Vector2d(0, 1);
  bn.mean = Eigen::Vector2d(0.25, 0);
  bn.var = Eigen::Vector2d(4, 1);
  bn.eps = 0;
  const convmat::ConvParameters<double> folded = convmat::fold_batch_norm(conv, w, b, bn);  // one Conv2d

  convmat::AvgPoolSpec<2> pool;  // AvgPool2d(2): stride defaults to the kernel
  pool.channels = 2;
  pool.input_size = conv.output_size();
  pool.kernel_size = {2, 2};

  using Map = convmat::AffineMap<convmat::RowMajorMatrix<double>>;
  const Map first =
      convmat::affine_map(convmat::conv_matrix(conv, folded.weight), convmat::bias_vector(conv, folded.bias));
  const Map second = convmat::linear_map(convmat::avg_pool_matrix(pool));
  const Map net = convmat::compose(second, first);  // x -> T2 (T1 x + b1) + b2, one matrix and one bias

  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(conv.input_numel(), 0, 1);
  const Eigen::VectorXd y = convmat::convolve(conv, w, x) + convmat::bias_vector(conv, b);  // conv, then
  const Eigen::VectorXd normalised = convmat::batch_norm_map(bn, 16)(y);                      // BatchNorm, then
  const Eigen::VectorXd pooled = convmat::avg_pool_matrix(pool) * normalised;                 // the pooling
  std::cout << "net: " << net.output_numel() << " x " << net.input_numel() << ", net(x) = " << net(x).transpose()
            << "\nlayer by layer: " << pooled.transpose() << "\n";
}
