// Two translation units include the umbrella and use the same templates;
// linking them into one binary catches a definition in a header that is
// not inline. This one builds T; umbrella_b.cpp checks it.
#include <convmat/convmat.hpp>

#include "umbrella.hpp"

Eigen::MatrixXd matrix_from_a(const convmat::Conv2dSpec& spec, const Eigen::VectorXd& weight) {
  return convmat::conv_matrix(spec, weight);
}

Eigen::MatrixXd sparse_matrix_from_a(const convmat::Conv2dSpec& spec, const Eigen::VectorXd& weight) {
  return Eigen::MatrixXd(convmat::conv_matrix_sparse(spec, weight));
}
