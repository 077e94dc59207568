// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// convmat-onnx: a CNN in ONNX to its fully-connected form. A chain of
// linear layers between two ReLUs (Conv, ConvTranspose, BatchNormalization,
// AveragePool, Pad, Flatten/Reshape, Gemm, MatMul, Add) is one affine map,
// built with convmat's layer matrices and composed; the network becomes
// Gemm, Relu, Gemm, Relu, ..., Gemm. This part is optional: it needs
// protobuf and Debian's libonnx-dev, which the header-only core never does.
#pragma once

#include <convmat/layers.hpp>

#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

namespace onnx {
class ModelProto;
}

namespace convmat::mlp {

/// The sparse matrix type the converter composes in (double precision).
using Matrix = SparseMatrix<double, int>;

/// A model the converter cannot take: an unsupported node (named with its
/// position), an attribute it does not implement, a graph that is not a
/// chain of layers. The message says which and why.
class conversion_error : public std::runtime_error {
 public:
  explicit conversion_error(const std::string& message) : std::runtime_error(message) {}
};

/// One layer of the fully-connected form: y = matrix * x + bias, then a
/// ReLU if `relu`.
struct DenseLayer {
  Matrix matrix;
  Eigen::VectorXd bias;
  bool relu = false;
};

/// A network in fully-connected form. Inputs and outputs are the original
/// tensors without their batch dimension, flattened in C order.
struct Network {
  std::string input_name, output_name;
  std::vector<std::int64_t> input_shape, output_shape;  ///< without the batch dimension
  std::vector<DenseLayer> layers;

  /// The network applied to a batch (one column per sample), in double.
  Eigen::MatrixXd operator()(const Eigen::MatrixXd& x) const;
};

/// The ONNX operators from_onnx() takes.
inline constexpr const char* supported_operators =
    "Conv, ConvTranspose, BatchNormalization, Relu, AveragePool, Pad, Flatten, Reshape, Gemm, MatMul, Add, "
    "Identity, Dropout; and constant subgraphs (Constant, ConstantOfShape, Concat, Reshape, Slice, Transpose, "
    "Cast, Unsqueeze)";

/// The fully-connected form of an ONNX model with one input and one output.
Network from_onnx(const onnx::ModelProto& model);

/// The model in a file, parsed, or conversion_error naming the file.
onnx::ModelProto load_model(const std::string& path);

/// An ONNX model (opset 13) of Gemm and Relu nodes only, float32, computing
/// `network`: input (N, input numel), output (N, output numel).
onnx::ModelProto to_onnx(const Network& network);

/// Serializes `model` to `path`, or conversion_error.
void save_model(const onnx::ModelProto& model, const std::string& path);

/// Layer `index` as a Matrix Market file (coordinate real general): the
/// augmented matrix [T b], rows x (cols + 1), bias in the last column.
std::string matrix_market(const Network& network, std::size_t index);

}  // namespace convmat::mlp
