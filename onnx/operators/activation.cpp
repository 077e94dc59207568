// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The piecewise-linear activations, each a few ReLU units per value in one
// layer: Relu; LeakyRelu and PRelu as relu(v) - a relu(-v); Clip (ReLU6) as
// lo + relu(v - lo) - relu(v - hi); HardSigmoid, a Clip of an affine map;
// Abs as relu(v) + relu(-v); elementwise Max and Min through the MaxPool
// tree. A value known never to be negative skips what it does not need.
// The curved ones (Sigmoid, Tanh, Elu, ...) are kept, each a layer of its
// own; Softmax and LogSoftmax follow the last Gemm.
#include <cfloat>
#include <cmath>
#include <optional>

#include "../lowering.hpp"

namespace convmat::mlp {
namespace {

/// [relu(v); relu(-v)] as a map of the level after v's: 2n rows.
Affine both_signs(Lowering& l, const Value& v) {
  const Affine a = l.at(v, v.level);
  Affine pre{Matrix(2 * v.numel(), a.matrix.cols()), Eigen::VectorXd(2 * v.numel())};
  pre.matrix.reserve(2 * a.matrix.nonZeros());
  for (int sign : {1, -1})
    for (Index r = 0; r < a.matrix.rows(); ++r) {
      const Index row = sign > 0 ? r : v.numel() + r;
      pre.matrix.startVec(row);
      for (Matrix::InnerIterator it(a.matrix, r); it; ++it) pre.matrix.insertBack(row, it.col()) = sign * it.value();
      pre.bias(row) = sign * a.bias(r);
    }
  pre.matrix.finalize();
  return l.stack().relu(v.level, pre);
}

/// [diag(p) diag(q)]: n x 2n, combining relu(v) and relu(-v).
Matrix combine(const Eigen::VectorXd& p, const Eigen::VectorXd& q) {
  const Index n = p.size();
  Matrix m(n, 2 * n);
  std::vector<Eigen::Triplet<double>> entries;
  for (Index i = 0; i < n; ++i) {
    if (p(i) != 0) entries.emplace_back(static_cast<int>(i), static_cast<int>(i), p(i));
    if (q(i) != 0) entries.emplace_back(static_cast<int>(i), static_cast<int>(n + i), q(i));
  }
  m.setFromTriplets(entries.begin(), entries.end());
  return m;
}

/// relu(v) - slope relu(-v), elementwise: LeakyRelu, PRelu.
Value signed_relu(Lowering& l, const Value& v, const Eigen::VectorXd& slope) {
  if (v.nonneg || (slope.array() == 1.0).all()) return v;
  if ((slope.array() == 0.0).all()) return l.relu(l.at(v, v.level), v.level, v.shape);
  const Affine halves = both_signs(l, v);
  const Matrix m = combine(Eigen::VectorXd::Ones(v.numel()), -slope);
  return Value{v.shape, v.level + 1, Affine{m * halves.matrix, Eigen::VectorXd::Zero(v.numel())},
               (slope.array() <= 0.0).all()};
}

void lower_relu(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (v.nonneg) return l.set(n, 0, v);
  const int level = v.level;
  Shape shape = v.shape;
  l.set(n, 0, l.relu(l.take(n, 0), level, std::move(shape)));  // v's map is moved out if n is its last reader
}

void lower_leaky_relu(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  l.set(n, 0, signed_relu(l, v, Eigen::VectorXd::Constant(v.numel(), n.real("alpha", 0.01))));
}

void lower_prelu(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (l.is_value(n, 1)) n.fail("slope ('" + n.inputs[1] + "') is computed from the input; it must be a constant");
  l.set(n, 0, signed_relu(l, v, broadcast_constant(n, l.constant(n, 1), v.shape)));
}

/// v clipped to [lo, hi] (either bound may be absent).
Value clipped(Lowering& l, const Value& v, std::optional<double> lo, std::optional<double> hi) {
  if (lo && v.nonneg && *lo <= 0) lo.reset();  // max(v, lo) = v
  if (!lo && !hi) return v;
  const Index size = v.numel();
  const double low = lo.value_or(0.0), high = hi.value_or(0.0);
  if (lo && hi && low > high)  // min(max(v, lo), hi) = hi everywhere
    return Lowering::then(v, Affine{Matrix(size, size), Eigen::VectorXd::Constant(size, high)}, v.shape, high >= 0);
  const Affine a = l.at(v, v.level);
  const Eigen::VectorXd ones = Eigen::VectorXd::Ones(size);
  if (lo && hi) {  // lo + relu(v - lo) - relu(v - hi)
    Affine pre{Matrix(combine(ones, ones).transpose()) * a.matrix, Eigen::VectorXd(2 * size)};
    pre.bias << a.bias.array() - low, a.bias.array() - high;
    const Affine r = l.stack().relu(v.level, pre);
    return Value{v.shape, v.level + 1, Affine{combine(ones, -ones) * r.matrix, Eigen::VectorXd::Constant(size, low)},
                 low >= 0};
  }
  if (lo) {  // lo + relu(v - lo)
    const Affine r = l.stack().relu(v.level, Affine{a.matrix, (a.bias.array() - low).matrix()});
    return Value{v.shape, v.level + 1, Affine{r.matrix, Eigen::VectorXd::Constant(size, low)}, low >= 0};
  }
  // hi - relu(hi - v)
  const Affine r = l.stack().relu(v.level, Affine{-a.matrix, (high - a.bias.array()).matrix()});
  return Value{v.shape, v.level + 1, Affine{-r.matrix, Eigen::VectorXd::Constant(size, high)}, false};
}

/// A Clip bound: an attribute before opset 11, an optional scalar input after.
std::optional<double> clip_bound(Lowering& l, const Node& n, std::size_t input, const char* attribute) {
  std::optional<double> bound;
  if (n.has(attribute)) bound = n.real(attribute, 0);
  if (const Tensor* t = l.optional_constant(n, input)) {
    if (t->numel() != 1) n.fail("the " + std::string(attribute) + " bound has shape " + to_string(t->dims) + ", not a scalar");
    bound = t->data[0];
  }
  if (bound && std::isnan(*bound)) n.fail("the " + std::string(attribute) + " bound is not a number");
  if (bound && std::abs(*bound) >= 0.99 * FLT_MAX) bound.reset();  // opset 6's defaults: +-FLT_MAX
  return bound;
}

void lower_clip(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  l.set(n, 0, clipped(l, v, clip_bound(l, n, 1, "min"), clip_bound(l, n, 2, "max")));
}

void lower_hard_sigmoid(Lowering& l, const Node& n) {  // max(0, min(1, alpha v + beta))
  const Value& v = l.value(n, 0);
  const double alpha = n.real("alpha", 0.2), beta = n.real("beta", 0.5);
  const Index size = v.numel();
  const Matrix scale = alpha * selection(size, size, [](Index r) { return r; });
  const Value u = Lowering::then(v, Affine{scale, Eigen::VectorXd::Constant(size, beta)}, v.shape, v.nonneg && alpha >= 0 && beta >= 0);
  l.set(n, 0, clipped(l, u, 0.0, 1.0));
}

void lower_abs(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (v.nonneg) return l.set(n, 0, v);
  const Affine halves = both_signs(l, v);
  const Eigen::VectorXd ones = Eigen::VectorXd::Ones(v.numel());
  l.set(n, 0, Value{v.shape, v.level + 1, Affine{combine(ones, ones) * halves.matrix, Eigen::VectorXd::Zero(v.numel())},
                    true});
}

/// Max (sign 1) or Min (sign -1, as -max(-a, -b)) of values and constants,
/// with numpy broadcasting.
void lower_extremum(Lowering& l, const Node& n, double sign) {
  std::vector<const Value*> values;
  Shape full{1};
  for (std::size_t i = 0; i < n.inputs.size(); ++i) {
    if (!n.has_input(i)) continue;
    if (!l.is_constant(n, i)) {
      values.push_back(&l.value(n, i));
      Shape shape{1};
      shape.insert(shape.end(), values.back()->shape.begin(), values.back()->shape.end());
      full = broadcast_shapes(n, full, shape);
    } else {
      full = broadcast_shapes(n, full, l.constant(n, i).dims);
    }
  }
  if (values.empty()) n.fail("has no input computed from the network's input");
  if (full[0] != 1) n.fail("a constant varies along the batch dimension");
  const Shape shape(full.begin() + 1, full.end());
  const Index size = numel(shape);
  const int level = Lowering::common_level(values);
  std::vector<Affine> operands;
  bool all_nonneg = true, any_nonneg = false;
  for (std::size_t i = 0; i < n.inputs.size(); ++i) {
    if (!n.has_input(i)) continue;
    if (!l.is_constant(n, i)) {
      const Value& v = l.value(n, i);
      Affine a = l.at(v, level);
      if (v.shape != shape) a = compose_checked(linear_map(broadcast_matrix(v.shape, shape)), a);
      operands.push_back(Affine{sign * a.matrix, sign * a.bias});
      all_nonneg = all_nonneg && v.nonneg;
      any_nonneg = any_nonneg || v.nonneg;
    } else {
      const Eigen::VectorXd c = sign * broadcast_constant(n, l.constant(n, i), shape);
      operands.push_back(Affine{Matrix(size, l.stack().width(level)), c});
      all_nonneg = all_nonneg && (sign * c.array() >= 0).all();
      any_nonneg = any_nonneg || (sign * c.array() >= 0).all();
    }
  }
  // Group r holds operand j's row r as its term j.
  const auto k = static_cast<Index>(operands.size());
  const Index cols = l.stack().width(level);
  Affine terms{Matrix(k * size, cols), Eigen::VectorXd(k * size)};
  std::vector<Eigen::Triplet<double>> entries;
  for (Index j = 0; j < k; ++j) {
    const Affine& a = operands[static_cast<std::size_t>(j)];
    for (Index r = 0; r < size; ++r) {
      for (Matrix::InnerIterator it(a.matrix, r); it; ++it)
        entries.emplace_back(static_cast<int>(r * k + j), static_cast<int>(it.col()), it.value());
      terms.bias(r * k + j) = a.bias(r);
    }
  }
  terms.matrix.setFromTriplets(entries.begin(), entries.end());
  std::vector<Index> start(static_cast<std::size_t>(size) + 1);
  for (Index r = 0; r <= size; ++r) start[static_cast<std::size_t>(r)] = r * k;
  const bool terms_nonneg = sign > 0 && all_nonneg;
  Value result = maximum(l, std::move(terms), level, start, terms_nonneg, shape);
  if (sign < 0) result.map = Affine{-result.map.matrix, -result.map.bias};
  result.nonneg = sign > 0 ? any_nonneg : all_nonneg;
  l.set(n, 0, std::move(result));
}

void lower_max(Lowering& l, const Node& n) { lower_extremum(l, n, 1.0); }
void lower_min(Lowering& l, const Node& n) { lower_extremum(l, n, -1.0); }

// ---- curved activations: a layer of their own -------------------------------

template <Activation::Kind Kind>
void lower_curved(Lowering& l, const Node& n) {
  Activation a{Kind};
  if (Kind == Activation::Kind::elu || Kind == Activation::Kind::celu) a.alpha = n.real("alpha", 1.0);
  if (Kind == Activation::Kind::selu) {
    a.alpha = n.real("alpha", 1.67326319217681884765625);
    a.gamma = n.real("gamma", 1.05070102214813232421875);
  }
  if (Kind == Activation::Kind::celu && a.alpha == 0) n.fail_attribute("alpha", "is 0 (Celu divides by it)");
  if (!std::isfinite(a.alpha) || !std::isfinite(a.gamma)) n.fail("alpha and gamma must be finite numbers");
  l.set(n, 0, l.activate(n, l.value(n, 0), a));
}

/// Softmax, LogSoftmax: the last node, over every value of a sample. From
/// opset 13 along one axis (the others of size 1), before along the
/// flattened axes from `axis` on (axis 1).
template <Activation::Kind Kind>
void lower_softmax(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto rank = static_cast<std::int64_t>(v.shape.size()) + 1;  // with the batch
  const std::int64_t opset = l.graph().opset;
  std::int64_t axis = n.integer("axis", opset >= 13 ? -1 : 1);
  if (axis < -rank || axis >= rank)
    n.fail_attribute("axis", std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  if (axis < 0) axis += rank;
  const bool whole = opset >= 13 ? axis >= 1 && numel(v.shape) == v.shape[static_cast<std::size_t>(axis - 1)]
                                 : axis == 1;
  if (!whole)
    n.fail_attribute("axis", std::to_string(n.integer("axis", opset >= 13 ? -1 : 1)) + " on the input " +
                                 to_string(v.shape) + " (N first) normalizes " +
                                 (axis == 0 ? "across the batch" : "groups of a sample's values") +
                                 "; convmat-onnx takes it over all of a sample's values, the last Gemm's output (" +
                                 (opset >= 13 ? "Flatten first" : "axis 1") + ")");
  l.finish_with(n, Activation{Kind});
}

}  // namespace

const std::vector<OperatorEntry>& activation_operators() {
  static const std::vector<OperatorEntry> entries = {
      {"Relu", lower_relu, "a ReLU layer (nothing when the input is known never to be negative)"},
      {"LeakyRelu", lower_leaky_relu, "relu(v) - alpha relu(-v)"},
      {"PRelu", lower_prelu, "relu(v) - slope relu(-v), the slope a constant broadcast to the input"},
      {"Clip", lower_clip,
       "lo + relu(v - lo) - relu(v - hi) (ReLU6: relu(v) - relu(v - 6)); bounds as attributes (opset < 11) or inputs"},
      {"HardSigmoid", lower_hard_sigmoid, "the Clip to [0, 1] of alpha v + beta"},
      {"Abs", lower_abs, "relu(v) + relu(-v)"},
      {"Max", lower_max, "the MaxPool tree over the inputs (values and constants, broadcast)"},
      {"Min", lower_min, "-max(-a, -b, ...) by the same tree"},
      {"Sigmoid", lower_curved<Activation::Kind::sigmoid>, "kept: a layer of Sigmoids after its Gemm"},
      {"Tanh", lower_curved<Activation::Kind::tanh>, "kept: a layer of Tanhs after its Gemm"},
      {"Softplus", lower_curved<Activation::Kind::softplus>, "kept: a layer of Softpluses after its Gemm"},
      {"Softsign", lower_curved<Activation::Kind::softsign>, "kept: a layer of Softsigns after its Gemm"},
      {"Elu", lower_curved<Activation::Kind::elu>, "kept: a layer of Elus (its alpha) after its Gemm"},
      {"Selu", lower_curved<Activation::Kind::selu>, "kept: a layer of Selus (its alpha, gamma) after its Gemm"},
      {"Celu", lower_curved<Activation::Kind::celu>, "kept: a layer of Celus (its alpha) after its Gemm"},
      {"HardSwish", lower_curved<Activation::Kind::hard_swish>, "kept: a layer of HardSwishes (opset 14) after its Gemm"},
      {"Exp", lower_curved<Activation::Kind::exp>, "kept: a layer of Exps after its Gemm"},
      {"Erf", lower_curved<Activation::Kind::erf>, "kept: a layer of Erfs after its Gemm"},
      {"Softmax", lower_softmax<Activation::Kind::softmax>,
       "kept after the last Gemm, over all of a sample's values: the network's last node only"},
      {"LogSoftmax", lower_softmax<Activation::Kind::log_softmax>,
       "kept after the last Gemm, over all of a sample's values: the network's last node only"},
  };
  return entries;
}

}  // namespace convmat::mlp
