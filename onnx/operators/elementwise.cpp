// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Elementwise affine operators with numpy broadcasting: Add, Sub, Sum and
// Mean of values and constants (a residual Add of two branches lifts both
// to a common level first), Mul and Div by constants, Neg, and inference
// BatchNormalization anywhere (a diagonal map). A product or quotient of
// two values is refused: it is not piecewise linear.
#include <algorithm>

#include "../lowering.hpp"

namespace convmat::mlp {
namespace {

/// An input of an elementwise operator: a value or a constant.
struct Operand {
  const Value* value = nullptr;
  const Tensor* constant = nullptr;
};

std::vector<Operand> operands(Lowering& l, const Node& n) {
  std::vector<Operand> out;
  for (std::size_t i = 0; i < n.inputs.size(); ++i) {
    if (!n.has_input(i)) n.fail("input " + std::to_string(i) + " is missing");
    out.push_back(l.is_constant(n, i) ? Operand{nullptr, &l.constant(n, i)} : Operand{&l.value(n, i), nullptr});
  }
  if (out.empty()) n.fail("has no inputs");
  return out;
}

/// The broadcast shape of the operands, without the batch dimension. A
/// constant with more dimensions than the data would move the batch
/// dimension, and one that varies along it would make the samples differ:
/// both are refused.
Shape result_shape(const Node& n, const std::vector<Operand>& ops) {
  std::size_t data_rank = 0;
  for (const auto& op : ops)
    if (op.value) data_rank = std::max(data_rank, op.value->shape.size() + 1);
  Shape full{1};
  for (const auto& op : ops) {
    if (op.constant && op.constant->dims.size() > data_rank)
      n.fail("the constant of shape " + to_string(op.constant->dims) + " has more dimensions than the data (rank " +
             std::to_string(data_rank) + " with the batch): it would move the batch dimension");
    Shape shape{1};
    if (op.value) shape.insert(shape.end(), op.value->shape.begin(), op.value->shape.end());
    full = broadcast_shapes(n, full, op.constant ? op.constant->dims : shape);
  }
  if (full[0] != 1) n.fail("a constant varies along the batch dimension (broadcast shape " + to_string(full) + ")");
  return Shape(full.begin() + 1, full.end());
}

/// Every operand as a map of `level` with one row per element of `shape`.
std::vector<Affine> as_maps(Lowering& l, const Node& n, const std::vector<Operand>& ops, const Shape& shape,
                            int level) {
  std::vector<Affine> maps;
  for (const auto& op : ops) {
    if (!op.value) {
      maps.push_back(Affine{Matrix(numel(shape), 0), broadcast_constant(n, *op.constant, shape)});
      continue;
    }
    Affine a = l.at(*op.value, level);
    if (op.value->shape != shape) a = compose_checked(linear_map(broadcast_matrix(op.value->shape, shape)), a);
    maps.push_back(std::move(a));
  }
  const Index cols = l.stack().width(level);  // lifting may have added slots: one width for all
  for (auto& m : maps) m = widen(std::move(m), cols);
  return maps;
}

/// sum_i coefficient[i] * input i.
void linear_combination(Lowering& l, const Node& n, const std::vector<double>& coefficients) {
  const auto ops = operands(l, n);
  std::vector<const Value*> values;
  for (const auto& op : ops)
    if (op.value) values.push_back(op.value);
  if (values.empty()) n.fail("has no input computed from the network's input");
  const Shape shape = result_shape(n, ops);
  const int level = Lowering::common_level(values);
  const auto maps = as_maps(l, n, ops, shape, level);
  Affine sum{Matrix(numel(shape), maps[0].matrix.cols()), Eigen::VectorXd::Zero(numel(shape))};
  bool nonneg = true;
  for (std::size_t i = 0; i < maps.size(); ++i) {
    const double c = coefficients[std::min(i, coefficients.size() - 1)];
    sum.matrix += c * maps[i].matrix;
    sum.bias += c * maps[i].bias;
    nonneg = nonneg && c >= 0 && (ops[i].value ? ops[i].value->nonneg : (maps[i].bias.array() >= 0).all());
  }
  sum.matrix.prune(0.0);
  l.set(n, 0, Value{shape, level, std::move(sum), nonneg});
}

void lower_add(Lowering& l, const Node& n) { linear_combination(l, n, {1.0}); }
void lower_sub(Lowering& l, const Node& n) { linear_combination(l, n, {1.0, -1.0}); }
void lower_sum(Lowering& l, const Node& n) { linear_combination(l, n, {1.0}); }
void lower_mean(Lowering& l, const Node& n) {
  linear_combination(l, n, {1.0 / static_cast<double>(std::max<std::size_t>(n.inputs.size(), 1))});
}

/// value * constant (Mul) or value / constant (Div), elementwise.
void scale(Lowering& l, const Node& n, bool divide) {
  const auto ops = operands(l, n);
  if (ops.size() != 2) n.fail("has " + std::to_string(ops.size()) + " inputs, not 2");
  const char* verb = divide ? "divides" : "multiplies";
  if (ops[0].value && ops[1].value)
    n.fail(std::string(verb) + " two tensors computed from the input ('" + n.inputs[0] + "', '" + n.inputs[1] +
           "'): a product of two data paths is not piecewise linear, so it has no exact Gemm + Relu form");
  if (divide && ops[1].value)
    n.fail("divides by a tensor computed from the input ('" + n.inputs[1] + "'): 1 / x is not piecewise linear");
  const Operand& data = ops[0].value ? ops[0] : ops[1];
  const Operand& factor = ops[0].value ? ops[1] : ops[0];
  const Shape shape = result_shape(n, ops);
  Eigen::VectorXd c = broadcast_constant(n, *factor.constant, shape);
  if (divide) {
    for (Index i = 0; i < c.size(); ++i)
      if (c(i) == 0) n.fail("divides by zero: element " + std::to_string(i) + " of '" + n.inputs[1] + "' is 0");
    c = c.cwiseInverse();
  }
  const Value& v = *data.value;
  Affine grown = linear_map(v.shape == shape ? selection(numel(shape), numel(shape), [](Index r) { return r; })
                                             : broadcast_matrix(v.shape, shape));
  grown.matrix = c.asDiagonal() * grown.matrix;
  grown.matrix.prune(0.0);
  l.set(n, 0, Lowering::then(v, grown, shape, v.nonneg && (c.array() >= 0).all()));
}

void lower_mul(Lowering& l, const Node& n) { scale(l, n, false); }
void lower_div(Lowering& l, const Node& n) { scale(l, n, true); }

void lower_neg(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const Matrix minus = -selection(v.numel(), v.numel(), [](Index r) { return r; });
  l.set(n, 0, Lowering::then(v, linear_map(minus), v.shape));
}

void lower_batch_normalization(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (n.integer("training_mode", 0) != 0) n.fail_attribute("training_mode", "1 normalizes by the batch's statistics; export in eval mode");
  if (n.has("is_test") && n.integer("is_test", 1) == 0) n.fail_attribute("is_test", "0 is training mode; export in eval mode");
  if (v.shape.empty()) n.fail("input has no channel dimension");
  for (std::size_t i = 1; i < n.outputs.size(); ++i)
    l.unavailable(n, i, "a statistic of training mode, which convmat-onnx does not compute");
  const Index size = v.numel(), channels = v.shape[0];
  BatchNorm<double> bn;
  bn.gamma = as_vector(l.constant(n, 1));
  bn.beta = as_vector(l.constant(n, 2));
  bn.mean = as_vector(l.constant(n, 3));
  bn.var = as_vector(l.constant(n, 4));
  bn.eps = n.real("epsilon", 1e-5);
  Affine map;
  if (n.integer("spatial", 1) == 0 && bn.channels() == size && size != channels) {
    // opset < 9, spatial=0: statistics per element, a BatchNorm of `size` channels of one value
    map = adopt(batch_norm_map(bn, 1));
  } else {
    if (bn.channels() != channels)
      n.fail("scale has " + std::to_string(bn.channels()) + " values, but the input (N, " + to_string(v.shape).substr(1) +
             " has " + std::to_string(channels) + " channels");
    map = adopt(batch_norm_map(bn, size / channels));
  }
  const bool nonneg = v.nonneg && (map.bias.array() >= 0).all() && (bn.scale().array() >= 0).all();
  l.set(n, 0, Lowering::then(v, map, v.shape, nonneg));
}

}  // namespace

const std::vector<OperatorEntry>& elementwise_operators() {
  static const std::vector<OperatorEntry> entries = {
      {"Add", lower_add, "the sum of the maps (a residual Add lifts both branches to one level); a constant shifts the bias"},
      {"Sub", lower_sub, "the difference of the maps, or a shift by a constant"},
      {"Sum", lower_sum, "the sum of the maps of every input"},
      {"Mean", lower_mean, "the mean of the maps of every input"},
      {"Mul", lower_mul, "a diagonal map by a constant (numpy broadcasting); two data inputs are refused"},
      {"Div", lower_div, "a diagonal map by the constant's inverse; division by data is refused"},
      {"Neg", lower_neg, "minus the map"},
      {"BatchNormalization", lower_batch_normalization,
       "batch_norm_map: a diagonal map per channel (per element with spatial=0), inference mode"},
  };
  return entries;
}

}  // namespace convmat::mlp
