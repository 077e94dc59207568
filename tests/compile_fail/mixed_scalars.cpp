// Must not compile: float weights with a double input. The test
// compile_fail_mixed_scalars requires convmat's static_assert to be the first
// error the compiler reports (before Eigen's or overload resolution's).
#include <convmat/convmat.hpp>

int main() {
  convmat::Conv2dSpec spec;
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  const Eigen::VectorXf w = Eigen::VectorXf::Ones(4);
  const Eigen::VectorXd x = Eigen::VectorXd::Ones(9);
#ifdef CONVMAT_MIX_OPERATOR
  const auto op = convmat::make_operator(spec, w);
  const Eigen::VectorXd y = op * x;
#else
  const auto y = convmat::convolve(spec, w, x);
#endif
  return int(y.size());
}
