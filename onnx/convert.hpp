// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// convmat-onnx: a CNN in ONNX to its fully-connected form, an ONNX model of
// Gemm layers each followed by at most one activation (or one Matrix Market
// file per layer). Every tensor computed from the input is an affine map of
// the outputs of the activation layers before it; linear operators compose
// onto those maps with convmat's layer matrices, piecewise-linear ones
// (Relu, MaxPool, Clip, PRelu, ...) add ReLU units, curved elementwise ones
// (Sigmoid, Tanh, Elu, ...) add a layer of their own, and values that must
// cross a ReLU layer unchanged are carried through it. The job has three steps, each callable
// and testable alone:
//
//     bytes --parse_model / load_model--> onnx::ModelProto
//           --read_graph--> Graph         (step 1: read; graph.hpp)
//           --lower-->      Network       (step 2: one function per operator)
//           --to_onnx / write_onnx / matrix_market--> the output (step 3)
//
// Every step throws conversion_error (the model cannot be taken; the
// message names the node, the operator, the attribute and why) or
// convmat::memory_limit_error (what it would build exceeds
// convmat::max_dense_bytes(); the message names the node and the sizes),
// and std::bad_alloc when memory runs out all the same. This part is
// optional: it needs protobuf and Debian's libonnx-dev, which the
// header-only core never does.
#pragma once

#include <convmat/layers.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "graph.hpp"

namespace convmat::mlp {

/// The sparse matrix type the converter composes in (double precision,
/// compressed rows): convmat::SparseMatrix<double, int> that moves. Eigen
/// 3.4's sparse matrices have no move constructor, so every std::move of
/// one (into a Value, a layer, a vector that grows) was a copy of what may
/// be a network's largest weight; this one swaps instead.
class Matrix : public convmat::SparseMatrix<double, int> {
 public:
  using Sparse = convmat::SparseMatrix<double, int>;

  Matrix() = default;
  Matrix(Index rows, Index cols) : Sparse(rows, cols) {}
  Matrix(const Matrix&) = default;
  Matrix(Matrix&& other) noexcept { Sparse::swap(other); }
  Matrix(Sparse&& other) noexcept { Sparse::swap(other); }  // NOLINT: what convmat's functions return
  template <class Other>
  Matrix(const Eigen::SparseMatrixBase<Other>& other) : Sparse(other) {}  // NOLINT: expressions, as Eigen's own

  Matrix& operator=(const Matrix&) = default;
  Matrix& operator=(Matrix&& other) noexcept {
    Sparse::swap(other);
    return *this;
  }
  Matrix& operator=(Sparse&& other) noexcept {
    Sparse::swap(other);
    return *this;
  }
  template <class Other>
  Matrix& operator=(const Eigen::SparseMatrixBase<Other>& other) {
    Sparse::operator=(other);
    return *this;
  }
};

/// What follows a layer's Gemm: nothing, an elementwise function (ONNX's
/// operator of that name, with its attributes), or Softmax / LogSoftmax
/// over the layer's whole output (the last layer only).
struct Activation {
  enum class Kind { none, relu, sigmoid, tanh, softplus, softsign, elu, selu, celu, hard_swish, exp, erf, softmax, log_softmax };
  Kind kind = Kind::none;
  double alpha = 0;  ///< Elu, Celu: alpha; Selu: alpha
  double gamma = 0;  ///< Selu: gamma

  static Activation relu() { return {Kind::relu}; }

  /// ONNX's operator ("Relu", "HardSwish", ...), "" for none.
  std::string_view onnx_name() const;
  /// The same in lower case ("relu", "hardswish"): formulas, node names.
  std::string name() const;
  /// The smallest ONNX opset that has the operator (13 at least, what
  /// convmat-onnx writes): HardSwish needs 14.
  int opset() const;
  /// `argument` under the activation, for people: "relu(T x + b)",
  /// "elu(T x + b; alpha = 0.5)", "T x + b" for none.
  std::string formula(const std::string& argument) const;
  /// Whether its outputs are never negative (Relu, Sigmoid, Softplus, Exp,
  /// Softmax): they then cross a later ReLU layer as themselves.
  bool never_negative() const;
  /// Whether it acts on each value alone (all but Softmax and LogSoftmax).
  bool elementwise() const;
  /// The elementwise function at v, in double (as ONNX defines it).
  double operator()(double v) const;
  /// Applies it to every column (one sample per column) in place.
  void apply(Eigen::MatrixXd& columns) const;

  friend bool operator==(const Activation& a, const Activation& b) {
    return a.kind == b.kind && a.alpha == b.alpha && a.gamma == b.gamma;
  }
  friend bool operator!=(const Activation& a, const Activation& b) { return !(a == b); }
};

/// One layer of the fully-connected form: y = activation(matrix * x + bias).
struct DenseLayer {
  Matrix matrix;
  Eigen::VectorXd bias;
  Activation activation;
};

/// A network in fully-connected form. Inputs and outputs are the original
/// tensors without their batch dimension, flattened in C order.
struct Network {
  std::string input_name, output_name;
  std::vector<std::int64_t> input_shape, output_shape;  ///< without the batch dimension
  std::vector<DenseLayer> layers;

  /// The network applied to a batch (one column per sample), in double.
  Eigen::MatrixXd operator()(const Eigen::MatrixXd& x) const;
  /// Structural non-zeros over every layer's matrix.
  std::size_t nonzeros() const;
  /// Bytes of the weights written dense in float32 (matrices and biases).
  std::size_t dense_bytes() const;
};

/// An operator that lower() takes, and how it becomes Gemm + Relu.
struct OperatorInfo {
  std::string_view name;
  std::string_view lowering;
};

/// The operators lower() takes, by name: the converter's own table.
const std::vector<OperatorInfo>& supported_operators();

/// Their names, comma-separated, for messages and --help.
std::string supported_operator_names();

// ---- step 0: bytes ---------------------------------------------------------

/// The model in `data` (ONNX protobuf bytes), or conversion_error. Tensors
/// it keeps in external data stay there (read_graph refuses them): use
/// load_model for those.
onnx::ModelProto parse_model(const void* data, std::size_t size);

/// The model in the file `path`, with any external data read from the files
/// beside it (ONNX's convention for models over 2 GiB), or conversion_error
/// naming the file (a directory is named as one). The file is parsed as a
/// stream, never held whole beside the message; external data larger than
/// max_dense_bytes() is a memory_limit_error naming the tensor and the nodes
/// reading it, before it is read.
onnx::ModelProto load_model(const std::string& path);

// ---- step 2: lower ---------------------------------------------------------

/// How lower() may build the network.
struct LowerOptions {
  /// Refuse curved activations (Sigmoid, Tanh, ...) and a final Softmax,
  /// so every layer is Gemm, or Gemm + Relu: for tools that read nothing
  /// else (convmat-onnx --relu-only).
  bool relu_only = false;
};

/// The fully-connected form of a graph read by read_graph (step 2). Each
/// constant and each intermediate map is released after the last node that
/// reads it: pass the graph as an rvalue to let its weights go too.
Network lower(Graph graph, const LowerOptions& options = {});

/// read_graph then lower: the fully-connected form of an ONNX model with
/// one input and one output.
Network from_onnx(const onnx::ModelProto& model, const LowerOptions& options = {});
/// The same, releasing the model's weights as they are read (the model is
/// left with empty initializers): what the convmat-onnx command does.
Network from_onnx(onnx::ModelProto&& model, const LowerOptions& options = {});

// ---- step 3: write ---------------------------------------------------------

/// An ONNX model (opset 13, 14 with HardSwish) of Gemm nodes, each followed
/// by its layer's activation node, float32, computing
/// `network`: input (N, input numel), output (N, output numel), every
/// weight embedded. conversion_error if the weights exceed what one
/// protobuf message holds (use write_onnx, which moves them to external
/// data); memory_limit_error if they exceed max_dense_bytes().
onnx::ModelProto to_onnx(const Network& network);

/// Serializes `model` to `path`, or conversion_error.
void save_model(const onnx::ModelProto& model, const std::string& path);

/// Where write_onnx puts the weights.
struct WriteOptions {
  enum class ExternalData { automatic, always, never };
  /// automatic: in `path` + ".data" (ONNX's external data, which onnx.load
  /// and ONNX Runtime read back) when they exceed `embed_limit`.
  ExternalData external_data = ExternalData::automatic;
  /// The most weight bytes embedded in the .onnx file itself: protobuf's
  /// 2 GiB limit, less room for the graph.
  std::size_t embed_limit = (std::size_t{2} << 30) - (std::size_t{64} << 20);
};

/// What write_onnx wrote.
struct WriteReport {
  std::size_t model_bytes = 0, weight_bytes = 0;
  std::string external_data;  ///< the data file's path, or empty
};

/// Writes the fully-connected form to `path` as to_onnx would, streaming
/// each layer's dense float32 rows (bounded memory) into `path` + ".data"
/// when the options say so, or conversion_error.
WriteReport write_onnx(const Network& network, const std::string& path, const WriteOptions& options = {});

/// Layer `index` as a Matrix Market file (coordinate real general): the
/// augmented matrix [T b], rows x (cols + 1), bias in the last column.
std::string matrix_market(const Network& network, std::size_t index);

}  // namespace convmat::mlp
