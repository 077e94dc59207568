// What umbrella_a.cpp offers umbrella_b.cpp.
#pragma once

#include <convmat/convmat.hpp>

Eigen::MatrixXd matrix_from_a(const convmat::Conv2dSpec& spec, const Eigen::VectorXd& weight);
Eigen::MatrixXd sparse_matrix_from_a(const convmat::Conv2dSpec& spec, const Eigen::VectorXd& weight);
