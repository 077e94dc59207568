// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Step 1 of convmat-onnx: an ONNX model read into plain C++ values. The
// Graph holds the network's one input and output, its constant tensors
// (decoded to double) and its nodes with their attributes parsed, so the
// lowering (step 2, lower()) never touches protobuf and every refusal can
// name the node, the operator and the attribute.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace onnx {
class ModelProto;
}

namespace convmat::mlp {

/// A model the converter cannot take: an operator without an exact
/// Gemm + Relu form, an attribute it does not implement, a graph that is
/// not a network of one input and one output. The message says which node
/// (its index, name and operator), which attribute, why, and the sizes
/// when size is the reason.
class conversion_error : public std::runtime_error {
 public:
  explicit conversion_error(const std::string& message) : std::runtime_error(message) {}
};

/// Tensor dimensions, ONNX's int64.
using Shape = std::vector<std::int64_t>;

/// "(2, 3, 4)".
std::string to_string(const Shape& shape);

/// A constant tensor (an initializer, a Constant node, a folded subgraph),
/// its values in double: integers up to 2^53 are exact.
struct Tensor {
  Shape dims;
  std::vector<double> data;
  /// ONNX's element type (onnx::TensorProto::DataType): integer division
  /// and Cast depend on it.
  int type = 1;  // FLOAT
  /// A floating-point initializer's bytes as the file stores them (raw,
  /// little-endian, of `type`), before they are decoded into `data`: a
  /// weight is kept so until the node that reads it builds its matrix from
  /// them (value()), and is never held in double. Empty once decoded.
  std::string stored;

  /// The product of dims (1 for a scalar).
  std::int64_t numel() const;
  bool is_integer() const;
  bool is_decoded() const { return stored.empty(); }
  /// Value i, from `data` or, not yet decoded, from `stored`.
  double value(std::size_t i) const;
  /// Moves `stored` into `data` (nothing if decoded).
  void decode();
};

struct Subgraph;

/// One attribute of a node, as ONNX stores it.
struct Attribute {
  enum class Kind { integer, real, text, integers, reals, texts, tensor, graph, other };
  Kind kind = Kind::other;
  std::int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<std::int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  Tensor t;
  std::shared_ptr<const Subgraph> g;  ///< kind graph: If's branches
};

/// "an integer", "a list of integers", ...: for messages.
const char* describe(Attribute::Kind kind);

/// One node of the graph, with typed access to its attributes. Every
/// accessor that finds something it cannot use throws conversion_error
/// naming the node and the attribute.
struct Node {
  int index = -1;  ///< position in the graph
  std::string name, op, domain;
  std::vector<std::string> inputs, outputs;  ///< "" for an omitted optional input
  std::map<std::string, Attribute> attributes;

  /// "node 3 ('conv1', Conv)".
  std::string where() const;
  /// conversion_error "node 3 ('conv1', Conv): <why>".
  [[noreturn]] void fail(const std::string& why) const;
  /// conversion_error "node 3 ('conv1', Conv): attribute 'auto_pad': <why>".
  [[noreturn]] void fail_attribute(const std::string& attribute, const std::string& why) const;

  bool has(const std::string& attribute) const { return attributes.count(attribute) != 0; }
  std::int64_t integer(const std::string& attribute, std::int64_t fallback) const;
  double real(const std::string& attribute, double fallback) const;
  std::string text(const std::string& attribute, const std::string& fallback) const;
  std::optional<std::vector<std::int64_t>> integers(const std::string& attribute) const;
  std::vector<std::int64_t> integers(const std::string& attribute, std::vector<std::int64_t> fallback) const;
  std::optional<std::vector<double>> reals(const std::string& attribute) const;
  const Tensor* tensor(const std::string& attribute) const;
  /// A graph attribute (If's then_branch, else_branch), or fail if absent.
  const Subgraph& graph(const std::string& attribute) const;

  /// Whether input i is given (present and not "").
  bool has_input(std::size_t i) const { return i < inputs.size() && !inputs[i].empty(); }
};

/// A graph held by an attribute (an If's branch): its nodes, which may read
/// the names of the graph around it, its constants and its outputs.
struct Subgraph {
  std::vector<Node> nodes;
  std::map<std::string, Tensor> initializers;
  std::vector<std::string> outputs;
};

/// The names `node` reads: its inputs and, inside its graph attributes,
/// every name their nodes read from outside them.
std::vector<std::string> names_read(const Node& node);

/// A model read for lowering: one data input (a batch dimension first,
/// fixed sizes after it), one output, the constants and the nodes in
/// their (topological) order.
struct Graph {
  std::int64_t opset = 0;  ///< of the default domain ("" or "ai.onnx")
  std::string input_name, output_name;
  Shape input_shape;              ///< without the batch dimension
  std::int64_t static_batch = -1;  ///< the batch size if the model fixes it
  std::map<std::string, Tensor> initializers;
  std::vector<Node> nodes;
};

/// Reads `model` (step 1), or conversion_error: no graph input or more than
/// one, an input that is not float or has no fixed size, a tensor whose
/// data does not match its shape or type, a tensor left in external data
/// (load the model with load_model(path), which reads it). A tensor whose
/// values in double would exceed max_dense_bytes() is a
/// convmat::memory_limit_error naming it, the nodes reading it and its
/// shape, before anything is allocated for it.
Graph read_graph(const onnx::ModelProto& model);
/// The same, releasing each initializer's protobuf storage as soon as it is
/// decoded, so a model's weights are not held twice: `model` is left with
/// empty initializers.
/// Its floating-point initializers stored as raw bytes are not decoded:
/// their bytes move into Tensor::stored.
Graph read_graph(onnx::ModelProto&& model);

/// The opset version a model imports for the default domain (0 if none).
std::int64_t default_opset(const onnx::ModelProto& model);

}  // namespace convmat::mlp
