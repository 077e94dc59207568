// A layer's singular values and a least-squares solve with it, without
// ever forming its matrix T (here 2048 x 2048).
#include <convmat/convmat.hpp>

#include <Eigen/IterativeLinearSolvers>
#include <cmath>
#include <cstdio>

int main() {
  convmat::Conv2dSpec spec;  // Conv2d(8, 8, 3, padding=1, padding_mode='circular') on 16 x 16
  spec.in_channels = spec.out_channels = 8;
  spec.input_size = {16, 16};
  spec.kernel_size = {3, 3};
  spec.padding = {1, 1};
  spec.padding_mode = convmat::PaddingMode::circular;
  Eigen::VectorXd w(spec.weight_numel());
  for (Eigen::Index i = 0; i < w.size(); ++i) w(i) = 0.1 * std::sin(1.0 + i);

  const Eigen::VectorXd sigma = convmat::singular_values(spec, w);  // all 2048, exactly, by FFT
  const auto norm = convmat::spectral_norm(spec, w);  // the largest, by Lanczos on the operator
  const Eigen::VectorXd top = convmat::singular_values(spec, w, 4);  // the 4 largest
  const auto bound = convmat::spectral_norm_bound(spec, w);          // lower <= ||T|| <= upper, certified
  std::printf("singular values: %ld, largest %.6f, smallest %.6f\n", long(sigma.size()), sigma(0),
              sigma(sigma.size() - 1));
  std::printf("spectral_norm:   %.6f (converged: %s, residual below 1e-10: %s)\n", norm.value,
              norm.converged ? "yes" : "no", norm.residual < 1e-10 ? "yes" : "no");
  std::printf("4 largest:       %.6f %.6f %.6f %.6f\n", top(0), top(1), top(2), top(3));
  std::printf("bound:           %.6f <= ||T|| <= %.6f\n", bound.lower, bound.upper);

  // argmin |T x - b|^2 + 0.01 |x|^2 by LSCG on the stacked operator [T; 0.1 I].
  const auto op = convmat::make_operator(spec, w);
  const convmat::TikhonovOperator<double, 2> stacked = convmat::tikhonov_operator(op, 0.01);
  Eigen::LeastSquaresConjugateGradient<convmat::TikhonovOperator<double, 2>, Eigen::IdentityPreconditioner> lscg;
  lscg.setTolerance(1e-10);
  lscg.compute(stacked);
  const Eigen::VectorXd b = op * Eigen::VectorXd::Ones(op.cols());
  const Eigen::VectorXd x = lscg.solve(stacked.rhs(b));
  const Eigen::VectorXd normal = op.adjoint() * (op * x - b) + 0.01 * x;  // the gradient: zero at the minimum
  std::printf("LSCG: %s, gradient small: %s\n", lscg.info() == Eigen::Success ? "converged" : "not converged",
              normal.norm() < 1e-8 * b.norm() ? "yes" : "no");
}
