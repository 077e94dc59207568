// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Step 2 of convmat-onnx, the machinery the operator functions share (an
// internal header: operators/*.cpp and lowering.cpp include it).
//
// The fully-connected form is a stack of levels: level 0 is the network's
// input, level L + 1 the output of ReLU layer L, relu(M_L s_L + b_L). Every
// tensor computed from the input is a Value: an affine map of one level's
// state. A linear operator composes onto that map (Lowering::then); a
// piecewise-linear one appends rows to a ReLU layer (LayerStack::relu) and
// gives a map of the next level. Values meeting in one operator (a residual
// Add, a Concat, the partial maxima of MaxPool) are lifted to a common
// level first: what they read is carried through the ReLU layers between
// (LayerStack::lift). Every state after level 0 is a ReLU's output, so it
// is never negative and crosses a ReLU unchanged; the input, and a value
// carried as itself, cross as relu(v) - relu(-v), or as v alone when v is
// known never negative.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "convert.hpp"

namespace convmat::mlp {

using Affine = AffineMap<Matrix>;
using convmat::Index;

/// The product of a shape, or conversion_error naming `what` if it is
/// negative or overflows.
Index numel(const Shape& shape, const std::string& what = "tensor");

/// A constant's value (held in double) as an int64, for shapes, axes,
/// indices, starts, ends and steps: values beyond int64 saturate (an int64
/// initializer of 2^63 - 1, exporters' "to the end", is 2^63 in double);
/// conversion_error naming the node if it is NaN or not an integer.
std::int64_t integer_value(const Node& n, double value);
/// Every value of `t` as integer_value.
std::vector<std::int64_t> integers_of(const Node& n, const Tensor& t);

/// memory_limit_error unless a sparse matrix of `nonzeros` entries and
/// `rows` rows (double values, int indices) fits in max_dense_bytes();
/// `what` names it in the message.
void require_memory(Index nonzeros, Index rows, const std::string& what);

/// require_memory for the matrix of a layer spec (ConvSpec,
/// ConvTransposeSpec, AvgPoolSpec, MaxPoolSpec), counted before it is built.
template <class Spec>
void require_memory(const Spec& spec, const std::string& what) {
  const auto g = detail::geometry(spec);
  require_memory(g.nonzeros_between(0, g.output_numel()), spec.output_numel(), what);
}

/// An affine map built by convmat's layer functions, taken over (not
/// copied) as the converter's Affine.
inline Affine adopt(AffineMap<Matrix::Sparse>&& map) { return Affine{Matrix(std::move(map.matrix)), std::move(map.bias)}; }

/// The identity map of n values.
Affine identity(Index n);

/// `map` with its matrix widened to `cols` columns (zeros on the right).
Affine widen(Affine map, Index cols);

/// A 0/1 matrix of rows x cols: row r has a 1 at column source(r), or is
/// empty where source(r) < 0.
Matrix selection(Index rows, Index cols, const std::function<Index(Index)>& source);

/// Row-major (C order) strides of a shape.
std::vector<Index> strides_of(const Shape& shape);

/// A tensor computed from the network's input: `map` of the state at
/// `level` (the earliest level it is known at), shape without the batch.
struct Value {
  Value() = default;
  Value(Shape shape_, int level_, Affine map_, bool nonneg_ = false)
      : shape(std::move(shape_)), level(level_), map(std::move(map_)), nonneg(nonneg_) {}

  Shape shape;
  int level = 0;
  Affine map;
  /// Known never to be negative (a ReLU's output, a maximum of such, ...),
  /// so it crosses a ReLU layer as itself.
  bool nonneg = false;
  /// Its maps at later levels, as lifted: a cache, so a value carried to a
  /// level once is carried once.
  mutable std::map<int, Affine> later;

  Index numel() const { return map.matrix.rows(); }
};

/// Thrown by LayerStack when a value would have to cross a layer whose
/// activation is not a ReLU, or share one with another activation; the
/// Lowering names the node.
class placement_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The activation layers being built, level by level.
class LayerStack {
 public:
  explicit LayerStack(Index inputs);

  /// The highest level (the number of ReLU layers so far).
  int top() const { return static_cast<int>(widths_.size()) - 1; }
  /// The slots of `level`: input values (level 0) or ReLU outputs.
  Index width(int level) const { return widths_.at(static_cast<std::size_t>(level)); }

  /// The activation of layer `level` (level < top()).
  const Activation& activation(int level) const { return layers_.at(static_cast<std::size_t>(level)).activation; }
  /// Whether the slots of `level` may be negative: the input's, or the
  /// outputs of a layer whose activation may be (Tanh, Elu, ...).
  bool may_be_negative(int level) const { return level == 0 || !activation(level - 1).never_negative(); }

  /// Appends the rows a(pre) to layer `level` (pre is a map of level
  /// `level`) and returns the map of level + 1 that selects them. At the
  /// top, this opens a layer of `a`; a layer below with another activation
  /// is a placement_error.
  Affine activate(int level, Affine pre, const Activation& a);
  Affine relu(int level, Affine pre) { return activate(level, std::move(pre), Activation::relu()); }

  /// `map`, a map of `level`, as a map of level + 1. It reads some slots
  /// of `level`: carried through layer `level` (once for all values that
  /// read them: one row each, two where the slots may be negative), or
  /// `map` itself is carried (one row per value if `nonneg`, else relu(v)
  /// and relu(-v)), whichever adds fewer rows. Only a ReLU layer carries:
  /// across any other, placement_error.
  Affine lift(const Affine& map, int level, bool nonneg);

  /// The finished layers computing `output` (a map of `level`), the last
  /// followed by `final_activation` (none, Softmax or LogSoftmax): slots that nothing
  /// reads are dropped, rows that are constant are folded into the next
  /// layer's bias, and when `output` selects a layer's slots exactly (and
  /// `final_activation` is none), no Gemm follows that layer.
  std::vector<DenseLayer> finish(Affine output, int level, const Activation& final_activation = {});

 private:
  /// Rows appended to a layer, in blocks (matrix columns: the width of its
  /// level when appended).
  struct Layer {
    std::vector<Affine> blocks;
    Activation activation = Activation::relu();
  };
  std::vector<Index> widths_;   ///< widths_[L]: slots of level L
  std::vector<Layer> layers_;   ///< layers_[L]: level L -> level L + 1
  /// carried_[L][slot of L] = its slot in L + 1 (level 0: relu(x), then relu(-x)).
  std::vector<std::unordered_map<Index, Index>> carried_;

  /// Appends `rows` to layer `level` (of activation `a`); returns the
  /// first new slot of level + 1.
  Index append(int level, Affine rows, const Activation& a);
};

/// Step 2's state: the constants and values by name, the layer stack, and
/// the node being lowered. Operator functions read their inputs and set
/// their outputs through it.
class Lowering {
 public:
  explicit Lowering(Graph graph, LowerOptions options = {});

  /// Lowers every node the output depends on (the others, dead branches,
  /// are skipped), releasing each constant and value after the last node
  /// that reads it, then finishes the network at the graph's output.
  Network run();

  /// Lowers the nodes of `branch` in place (If with a constant condition):
  /// they read the names around them; their outputs join them.
  void lower_branch(const Subgraph& branch);
  /// Output `output` of `node` is the value or constant called `name`.
  void alias(const Node& node, std::size_t output, const std::string& name);

  const Graph& graph() const { return graph_; }
  LayerStack& stack() { return stack_; }

  bool is_constant(const std::string& name) const { return constants_.count(name) != 0; }
  bool is_value(const std::string& name) const { return values_.count(name) != 0; }
  /// Whether input i of `node` is given and computed from the network's input.
  bool is_value(const Node& node, std::size_t i) const { return node.has_input(i) && is_value(node.inputs[i]); }
  /// Whether input i of `node` is given and a constant.
  bool is_constant(const Node& node, std::size_t i) const { return node.has_input(i) && is_constant(node.inputs[i]); }

  /// Input i of `node` as a constant (decoded), or conversion_error naming it.
  const Tensor& constant(const Node& node, std::size_t i) const;
  /// The same, not decoded if it is still as the file stores it: for an
  /// operator that reads each value once with Tensor::value() (Gemm's and
  /// MatMul's weights), so a weight is never held in double.
  const Tensor& stored_constant(const Node& node, std::size_t i) const;
  /// Input i as a constant if given ("" or absent: nullptr).
  const Tensor* optional_constant(const Node& node, std::size_t i) const;
  /// Input i as a value computed from the network's input, or conversion_error.
  const Value& value(const Node& node, std::size_t i) const;

  void set(const Node& node, std::size_t output, Value value);
  void set(const Node& node, std::size_t output, Tensor constant);
  /// Marks output `output` of `node` as something the network does not
  /// compute (MaxPool's Indices, Dropout's mask): a node reading it fails
  /// saying `why`.
  void unavailable(const Node& node, std::size_t output, const std::string& why);

  /// v's map at `level` (v.level or later), with as many columns as the
  /// level has slots now.
  Affine at(const Value& v, int level);
  /// Input i's map at its own level, as at(); moved out rather than copied
  /// when `node` is the last node that reads it.
  Affine take(const Node& node, std::size_t i);

  /// The value `layer` o v (a linear or affine operator on v), at v's level.
  /// The composed map's size is checked first (memory_limit_error naming
  /// the sizes); when v's map is the identity, `layer` itself is the map.
  static Value then(const Value& v, Affine layer, Shape shape, bool nonneg = false);

  /// relu(pre), pre a map of `level`: a value of level + 1.
  Value relu(Affine pre, int level, Shape shape);

  /// a(v) for a curved elementwise activation `a`: in the first layer from
  /// v's level on that has activation `a` or is new, v carried up to it
  /// through the ReLU layers between (placement_error across any other).
  /// conversion_error naming `node` with LowerOptions::relu_only.
  Value activate(const Node& node, const Value& v, const Activation& a);

  /// Marks `node`'s output, the graph's, as `a` (Softmax, LogSoftmax) of
  /// its input: the last Gemm is followed by it.
  void finish_with(const Node& node, const Activation& a);

  const LowerOptions& options() const { return options_; }

  /// The latest level of `values`: where an operator combining them works.
  static int common_level(const std::vector<const Value*>& values);

 private:
  Graph graph_;
  LowerOptions options_;
  LayerStack stack_;
  Activation final_activation_;  ///< after the last Gemm (finish_with)
  mutable std::map<std::string, Tensor> constants_;  ///< mutable: decoded when first read
  std::map<std::string, Value> values_;
  std::map<std::string, std::string> unavailable_;  ///< output name -> why
  std::map<std::string, int> readers_;  ///< name -> nodes still to read it
  const Node* current_ = nullptr;       ///< the node of the graph being lowered

  void lower(const Node& node);
};

/// Whether `map` is the identity (square, each row reading its own column
/// with weight 1, no bias).
bool is_identity(const Affine& map);

/// `second` o `first`, refused with memory_limit_error naming the sizes if
/// the product's non-zeros (bounded before it is formed) would exceed
/// max_dense_bytes() or the int index.
Affine compose_checked(const Affine& second, const Affine& first);

/// out[r] = the largest of the terms of group r: `terms` (a map of `level`)
/// holds each group's terms in consecutive rows, group r in rows
/// [start[r], start[r + 1]). Lowered as a tree of max(a, b) = b + relu(a - b),
/// one ReLU layer per halving; `nonneg` if every term is.
Value maximum(Lowering& lowering, Affine terms, int level, const std::vector<Index>& start, bool nonneg,
              Shape shape);

/// An operator function: reads node's inputs from the Lowering, sets its outputs.
using LowerFunction = void (*)(Lowering&, const Node&);

/// One entry of the operator table.
struct OperatorEntry {
  const char* name;
  LowerFunction lower;
  const char* lowering;  ///< how, in a sentence (--list-operators)
};

// Each operators/*.cpp lists its own entries beside its functions.
const std::vector<OperatorEntry>& convolution_operators();
const std::vector<OperatorEntry>& pooling_operators();
const std::vector<OperatorEntry>& activation_operators();
const std::vector<OperatorEntry>& elementwise_operators();
const std::vector<OperatorEntry>& shape_operators();
/// Operators evaluated when every input is a constant (the exporter's
/// shape and padding arithmetic).
const std::vector<OperatorEntry>& constant_folders();

/// The table lower() dispatches on: every group above, by name.
const std::vector<OperatorEntry>& operator_table();
/// The constant folder for `op`, or nullptr.
const OperatorEntry* find_folder(const std::string& op);
/// The operator function for `op`, or nullptr.
const OperatorEntry* find_operator(const std::string& op);

/// Why `op` has no exact form of Gemm layers and activations, if
/// convmat-onnx knows it (Sin: "it is neither piecewise linear nor an
/// activation of its own input"), else nullptr.
const char* refusal_reason(const std::string& op);

// ---- shared by the operator functions -------------------------------------

/// The spatial rank of a (channels, spatial...) value, 1 to 3, or fail.
int spatial_rank(const Node& node, const Value& v);

/// Calls f(std::integral_constant<int, Rank>{}) for rank 1, 2 or 3.
template <class F>
void by_rank(const Node& node, int rank, F&& f) {
  switch (rank) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: node.fail("rank " + std::to_string(rank) + " is not supported (1 to 3 spatial dimensions)");
  }
}

template <int Rank>
std::array<Index, Rank> to_array(const Shape& s, std::size_t offset = 0) {
  std::array<Index, Rank> a{};
  for (int d = 0; d < Rank; ++d) a[d] = s.at(offset + static_cast<std::size_t>(d));
  return a;
}

template <int Rank>
Shape to_shape(Index channels, const std::array<Index, Rank>& a) {
  Shape s{channels};
  s.insert(s.end(), a.begin(), a.end());
  return s;
}

template <std::size_t N>
std::string to_string(const std::array<Index, N>& a) {
  return to_string(Shape(a.begin(), a.end()));
}

/// A constant's values as a vector.
Eigen::VectorXd as_vector(const Tensor& t);

/// Numpy broadcasting of two full shapes (batch first where present), or
/// fail naming both.
Shape broadcast_shapes(const Node& node, const Shape& a, const Shape& b);

/// A constant broadcast to a value of shape `shape` (batch first, numpy
/// rules, the batch dimension of the constant 1), flattened; fail if it
/// does not broadcast without growing the value.
Eigen::VectorXd broadcast_constant(const Node& node, const Tensor& c, const Shape& shape);

/// The 0/1 matrix that broadcasts a tensor of shape `from` to shape `to`
/// (numpy rules, both without the batch dimension).
Matrix broadcast_matrix(const Shape& from, const Shape& to);

/// The spatial attributes every convolution and pooling operator shares:
/// kernel_shape, strides, dilations, pads and auto_pad, read and checked
/// against the spatial rank once.
struct Window {
  std::vector<Index> kernel, strides, dilations, pad_begin, pad_end;
  std::string auto_pad;  ///< NOTSET, VALID, SAME_UPPER or SAME_LOWER

  bool same() const { return auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER"; }
  SamePadding odd() const { return auto_pad == "SAME_UPPER" ? SamePadding::upper : SamePadding::lower; }
};

/// Reads the window attributes of `node` for `rank` spatial dimensions;
/// `kernel` is the default kernel_shape (a weight's), empty if required.
Window read_window(const Node& node, int rank, const std::vector<Index>& kernel, Index default_stride = 1);

}  // namespace convmat::mlp
