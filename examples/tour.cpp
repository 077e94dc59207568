// A tour of the matrix: sizes before building, sparse and row blocks,
// the transposed layer, bias, and the weight Jacobian — one layer,
// Conv1d(2, 2, kernel_size=3, stride=2, padding=1, padding_mode='reflect').
#include <convmat/convmat.hpp>

#include <iostream>

int main() {
  convmat::Conv1dSpec spec;
  spec.in_channels = 2;
  spec.out_channels = 2;
  spec.input_size = {6};
  spec.kernel_size = {3};
  spec.stride = {2};
  spec.padding = {1};
  spec.padding_mode = convmat::PaddingMode::reflect;
  const Eigen::VectorXd w = Eigen::VectorXd::LinSpaced(spec.weight_numel(), 1, 12);  // (2, 2, 3)
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(spec.input_numel(), 1, 12);   // (2, 6)

  // What it will cost, before anything is built.
  const auto size = convmat::matrix_size<double>(spec);
  std::cout << "T is " << size.rows << " x " << size.cols << ", " << size.nonzeros << " non-zeros, dense "
            << size.dense_bytes << " bytes, sparse " << size.sparse_bytes << " bytes\n";

  // Dense, sparse (compressed rows) and any block of rows: the same matrix.
  const auto T = convmat::conv_matrix(spec, w);
  const auto S = convmat::conv_matrix_sparse(spec, w);
  const auto rows = convmat::conv_matrix_rows(spec, w, 2, 4);
  std::cout << "T =\n" << T << "\n";
  std::cout << "sparse == dense: " << (Eigen::MatrixXd(S) == Eigen::MatrixXd(T)) << ", rows 2..3 == T's: "
            << (rows == T.middleRows(2, 2)) << "\n";

  // A layer with bias is the affine map T x + b.
  const Eigen::Vector2d bias(0.5, -0.5);
  const Eigen::VectorXd y = T * x + convmat::bias_vector(spec, bias);
  std::cout << "T x + b = " << y.transpose() << "\n";

  // The weight Jacobian: the same output as a linear map of the weights.
  const auto J = convmat::weight_jacobian(spec, x);
  std::cout << "J(x) w == T x: " << ((J * w).isApprox(T * x)) << "\n";

  // The transposed layer (ConvTranspose1d with the same geometry) is T's transpose.
  convmat::ConvTranspose1dSpec back;
  back.in_channels = 2;
  back.out_channels = 2;
  back.input_size = spec.output_size();
  back.kernel_size = {3};
  back.stride = {2};
  back.padding = {1};
  back.output_padding = {1};  // back to 6 = (3 - 1) * 2 - 2 + 3 + 1
  convmat::Conv1dSpec zeros = spec;
  zeros.padding_mode = convmat::PaddingMode::zeros;  // ConvTranspose pads with zeros
  std::cout << "conv_transpose_matrix == conv_matrix^T: "
            << (convmat::conv_transpose_matrix(back, w) == convmat::conv_matrix(zeros, w).transpose()) << "\n";
}
