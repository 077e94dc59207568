// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Operators that move data without computing: Identity, Dropout, Flatten,
// Reshape, Squeeze, Unsqueeze (the identity on the flat vector), Transpose,
// Slice and Concat (0/1 selections), Pad in every opset and mode (a
// selection plus the constant value as bias), and Shape of a value whose
// shape is fixed. The batch dimension must stay first and whole.
#include <algorithm>
#include <numeric>

#include "../lowering.hpp"

namespace convmat::mlp {
namespace {

/// A 0/1 matrix from a tensor of shape `in` to one of shape `out`: output
/// multi-index o takes input multi-index i = source(o), or nothing (a
/// fill) when source sets a coordinate negative.
Matrix gather(const Shape& in, const Shape& out,
              const std::function<void(const std::vector<Index>& o, std::vector<Index>& i)>& source) {
  const auto in_strides = strides_of(in);
  std::vector<Index> o(out.size(), 0), i(in.size(), 0);
  return selection(numel(out), numel(in), [&](Index flat) {
    for (std::size_t d = out.size(); d-- > 0;) {
      o[d] = flat % out[d];
      flat /= out[d];
    }
    source(o, i);
    Index offset = 0;
    for (std::size_t d = 0; d < in.size(); ++d) {
      if (i[d] < 0 || i[d] >= in[d]) return Index{-1};
      offset += i[d] * in_strides[d];
    }
    return offset;
  });
}

/// An axis of a tensor with the batch first (rank `rank`), negative ones
/// counted from the end, or fail.
std::int64_t normalized_axis(const Node& n, std::int64_t axis, std::size_t rank, const char* what) {
  const auto r = static_cast<std::int64_t>(rank);
  if (axis < -r || axis >= r)
    n.fail(std::string(what) + " " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + r : axis;
}

/// Integers from input `input` (a constant) if given, else from `attribute`.
std::optional<std::vector<std::int64_t>> input_or_attribute(Lowering& l, const Node& n, std::size_t input,
                                                           const char* attribute) {
  if (const Tensor* t = l.optional_constant(n, input))
    return integers_of(n, *t);
  return n.integers(attribute);
}

/// v with a new shape of the same size: the identity on the flat vector.
Value reshaped(const Value& v, Shape shape) {
  Value out = v;
  out.shape = std::move(shape);
  return out;
}

void lower_identity(Lowering& l, const Node& n) { l.set(n, 0, l.value(n, 0)); }

void lower_dropout(Lowering& l, const Node& n) {
  if (const Tensor* training = l.optional_constant(n, 2); training && training->numel() == 1 && training->data[0] != 0)
    n.fail("training_mode is true: dropout is random; export in eval mode");
  l.unavailable(n, 1, "Dropout's mask, which depends on training mode");
  l.set(n, 0, l.value(n, 0));
}

void lower_flatten(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto axis = normalized_axis(n, n.integer("axis", 1), v.shape.size() + 1, "axis");
  if (axis != 1)
    n.fail_attribute("axis", std::to_string(n.integer("axis", 1)) + " would merge the batch dimension with others "
                             "(only axis 1, (N, C, ...) to (N, C * ...), keeps the samples apart)");
  l.set(n, 0, reshaped(v, {v.numel()}));
}

void lower_reshape(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto given = input_or_attribute(l, n, 1, "shape");
  if (!given || given->empty()) n.fail("the target shape is missing or empty");
  const Shape& target = *given;
  const bool allow_zero = n.integer("allowzero", 0) != 0;
  const auto batch = l.graph().static_batch;
  const bool batch_kept = (target[0] == 0 && !allow_zero) || target[0] == -1 || (batch > 0 && target[0] == batch);
  if (!batch_kept) n.fail("shape " + to_string(target) + " does not keep the batch dimension first");
  Shape rest(target.begin() + 1, target.end());
  const Index count = v.numel();
  for (auto d : rest)
    if (d > count) n.fail("shape " + to_string(target) + " has a dimension larger than the " + std::to_string(count) +
                          " values of a sample");
  Index known = 1;
  int unknown = -1;
  for (std::size_t d = 0; d < rest.size(); ++d) {
    if (rest[d] == 0 && !allow_zero) {
      if (d >= v.shape.size())
        n.fail("shape " + to_string(target) + " copies dimension " + std::to_string(d + 1) + ", which the input (N, " +
               to_string(v.shape).substr(1) + " lacks");
      rest[d] = v.shape[d];
    }
    if (rest[d] == -1) {
      if (unknown >= 0 || target[0] == -1) n.fail("shape " + to_string(target) + " has more than one -1");
      unknown = static_cast<int>(d);
    } else if (rest[d] < 0) {
      n.fail("shape " + to_string(target) + " has a negative size");
    } else {
      // Each size is at most count, but their product may overflow.
      if (rest[d] != 0 && known > std::numeric_limits<Index>::max() / rest[d])
        n.fail("shape " + to_string(target) + " does not fit the " + std::to_string(count) + " values of a sample");
      known *= rest[d];
    }
  }
  if (unknown >= 0) {
    if (known <= 0 || count % known != 0) n.fail("shape " + to_string(target) + " does not fit (N, " + to_string(v.shape).substr(1));
    rest[static_cast<std::size_t>(unknown)] = count / known;
    known = count;
  }
  if (known != count)
    n.fail("shape " + to_string(target) + " has " + std::to_string(known) + " elements per sample, but the input (N, " +
           to_string(v.shape).substr(1) + " has " + std::to_string(count));
  l.set(n, 0, reshaped(v, rest));
}

void lower_squeeze(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto rank = v.shape.size() + 1;
  std::vector<char> drop(rank, 0);
  if (const auto axes = input_or_attribute(l, n, 1, "axes"); axes && !axes->empty()) {
    for (auto a : *axes) {
      const auto axis = static_cast<std::size_t>(normalized_axis(n, a, rank, "axis"));
      if (axis == 0) n.fail("squeezing axis 0 would remove the batch dimension");
      if (v.shape[axis - 1] != 1)
        n.fail("axis " + std::to_string(a) + " has size " + std::to_string(v.shape[axis - 1]) + ", not 1");
      drop[axis] = 1;
    }
  } else {  // every dimension of size 1 but the batch
    for (std::size_t d = 1; d < rank; ++d) drop[d] = v.shape[d - 1] == 1;
  }
  Shape shape;
  for (std::size_t d = 1; d < rank; ++d)
    if (!drop[d]) shape.push_back(v.shape[d - 1]);
  l.set(n, 0, reshaped(v, shape));
}

void lower_unsqueeze(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto axes = input_or_attribute(l, n, 1, "axes");
  if (!axes || axes->empty()) n.fail("axes are missing");
  const auto rank = v.shape.size() + 1 + axes->size();
  std::vector<std::int64_t> sorted;
  for (auto a : *axes) sorted.push_back(normalized_axis(n, a, rank, "axis"));
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) n.fail("axes " + to_string(*axes) + " repeat an axis");
  if (sorted.front() == 0) n.fail("unsqueezing axis 0 would move the batch dimension");
  Shape full{1};
  full.insert(full.end(), v.shape.begin(), v.shape.end());
  for (auto a : sorted) full.insert(full.begin() + a, 1);
  l.set(n, 0, reshaped(v, Shape(full.begin() + 1, full.end())));
}

void lower_transpose(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto rank = v.shape.size() + 1;
  std::vector<std::int64_t> reversed(rank);
  std::iota(reversed.rbegin(), reversed.rend(), 0);
  const auto perm = n.integers("perm", reversed);
  std::vector<std::int64_t> check = perm;
  std::sort(check.begin(), check.end());
  std::vector<std::int64_t> expected(rank);
  std::iota(expected.begin(), expected.end(), 0);
  if (check != expected) n.fail_attribute("perm", to_string(perm) + " is not a permutation of the " + std::to_string(rank) + " axes");
  if (perm[0] != 0) n.fail_attribute("perm", to_string(perm) + " moves the batch dimension");
  Shape shape;
  for (std::size_t d = 1; d < rank; ++d) shape.push_back(v.shape[static_cast<std::size_t>(perm[d] - 1)]);
  const Matrix m = gather(v.shape, shape, [&](const std::vector<Index>& o, std::vector<Index>& i) {
    for (std::size_t d = 1; d < rank; ++d) i[static_cast<std::size_t>(perm[d] - 1)] = o[d - 1];
  });
  l.set(n, 0, Lowering::then(v, linear_map(m), shape, v.nonneg));
}

void lower_concat(Lowering& l, const Node& n) {
  std::vector<const Value*> values;
  std::vector<Shape> shapes;  // each input's shape without the batch
  for (std::size_t i = 0; i < n.inputs.size(); ++i) {
    if (!n.has_input(i)) n.fail("input " + std::to_string(i) + " is missing");
    if (!l.is_constant(n, i)) {
      values.push_back(&l.value(n, i));
      shapes.push_back(values.back()->shape);
    } else {
      const Tensor& c = l.constant(n, i);
      if (c.dims.empty() || c.dims[0] != 1)
        n.fail("the constant input " + std::to_string(i) + " has shape " + to_string(c.dims) +
               ": it needs a batch dimension of 1 to be concatenated with data");
      shapes.emplace_back(c.dims.begin() + 1, c.dims.end());
    }
  }
  if (values.empty()) n.fail("has no input computed from the network's input");
  const auto rank = shapes[0].size() + 1;
  if (!n.has("axis")) n.fail_attribute("axis", "is required");
  const auto axis = normalized_axis(n, n.integer("axis", 0), rank, "axis");
  if (axis == 0) n.fail_attribute("axis", "0 would concatenate along the batch dimension");
  const auto a = static_cast<std::size_t>(axis - 1);
  Shape shape = shapes[0];
  shape[a] = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    bool fits = shapes[i].size() == shapes[0].size();
    for (std::size_t d = 0; fits && d < shapes[i].size(); ++d) fits = d == a || shapes[i][d] == shapes[0][d];
    if (!fits) n.fail("input " + std::to_string(i) + " has shape (N, " + to_string(shapes[i]).substr(1) +
                      ", which does not match (N, " + to_string(shapes[0]).substr(1) + " but along axis " +
                      std::to_string(axis));
    shape[a] += shapes[i][a];
  }
  const int level = Lowering::common_level(values);
  std::vector<Affine> parts;
  for (std::size_t i = 0; i < n.inputs.size(); ++i)
    parts.push_back(!l.is_constant(n, i) ? l.at(l.value(n, i), level)
                                            : Affine{Matrix(numel(shapes[i]), 0), as_vector(l.constant(n, i))});
  // The parts one under the other, then each output element picked from its part.
  const Index cols = l.stack().width(level);
  Index rows = 0;
  std::vector<Index> offset;
  for (auto& p : parts) offset.push_back(rows), rows += p.matrix.rows(), p = widen(std::move(p), cols);
  Affine stacked{Matrix(rows, cols), Eigen::VectorXd(rows)};
  std::vector<Eigen::Triplet<double>> entries;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    for (Index r = 0; r < parts[i].matrix.rows(); ++r)
      for (Matrix::InnerIterator it(parts[i].matrix, r); it; ++it)
        entries.emplace_back(static_cast<int>(offset[i] + r), static_cast<int>(it.col()), it.value());
    stacked.bias.segment(offset[i], parts[i].matrix.rows()) = parts[i].bias;
  }
  stacked.matrix.setFromTriplets(entries.begin(), entries.end());
  Index inner = 1;
  for (std::size_t d = a + 1; d < shape.size(); ++d) inner *= shape[d];
  const Matrix pick = selection(numel(shape), rows, [&](Index flat) {
    const Index o = flat / (shape[a] * inner), along = flat / inner % shape[a], in = flat % inner;
    Index part = 0, position = along;
    while (position >= shapes[static_cast<std::size_t>(part)][a]) position -= shapes[static_cast<std::size_t>(part++)][a];
    const Index size = shapes[static_cast<std::size_t>(part)][a];
    return offset[static_cast<std::size_t>(part)] + (o * size + position) * inner + in;
  });
  bool nonneg = true;
  for (std::size_t i = 0; i < n.inputs.size(); ++i)
    nonneg = nonneg && (!l.is_constant(n, i) ? l.value(n, i).nonneg : (parts[i].bias.array() >= 0).all());
  l.set(n, 0, Value{shape, level, compose_checked(linear_map(pick), stacked), nonneg});
}

void lower_pad(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto rank = v.shape.size() + 1;
  // pads: input 1 from opset 11, attribute `pads` (opset 2-10) or `paddings` (opset 1) before.
  auto pads = input_or_attribute(l, n, 1, "pads");
  if (!pads) pads = n.integers("paddings");
  if (!pads) n.fail("pads are missing (input 1 from opset 11, the attribute 'pads' before)");
  std::vector<std::int64_t> axes(rank);
  std::iota(axes.begin(), axes.end(), 0);
  if (const Tensor* given = l.optional_constant(n, 3)) {  // opset 18
    axes.clear();
    for (double a : given->data) axes.push_back(normalized_axis(n, integer_value(n, a), rank, "axis"));
  }
  if (pads->size() != 2 * axes.size())
    n.fail("pads has " + std::to_string(pads->size()) + " values, but the input (N, " + to_string(v.shape).substr(1) +
           " needs " + std::to_string(2 * axes.size()) + " (begin and end of each padded axis)");
  std::vector<Index> begin(rank, 0), end(rank, 0);
  for (std::size_t k = 0; k < axes.size(); ++k) {
    begin[static_cast<std::size_t>(axes[k])] = (*pads)[k];
    end[static_cast<std::size_t>(axes[k])] = (*pads)[k + axes.size()];
  }
  if (begin[0] != 0 || end[0] != 0) n.fail("pads " + to_string(*pads) + " pad the batch dimension");
  for (auto p : *pads)
    if (p > (Index{1} << 40) || p < -(Index{1} << 40)) n.fail("pads " + to_string(*pads) + " are too large");

  const std::string mode = n.text("mode", "constant");
  PaddingMode padding_mode = PaddingMode::zeros;
  if (mode == "reflect") padding_mode = PaddingMode::reflect;
  else if (mode == "edge") padding_mode = PaddingMode::replicate;
  else if (mode == "wrap") padding_mode = PaddingMode::circular;
  else if (mode != "constant") n.fail_attribute("mode", "'" + mode + "' is not constant, reflect, edge or wrap");
  double fill = n.real("value", 0.0);  // before opset 11
  if (const Tensor* value = l.optional_constant(n, 2)) {
    if (value->numel() != 1) n.fail("constant_value has shape " + to_string(value->dims) + ", not a scalar");
    fill = value->data[0];
  }

  Shape shape = v.shape;
  for (std::size_t d = 1; d < rank; ++d) {
    const Index size = v.shape[d - 1], b = begin[d], e = end[d];
    shape[d - 1] = size + b + e;
    if (shape[d - 1] <= 0)
      n.fail("pads " + to_string(*pads) + " leave nothing of axis " + std::to_string(d) + " (size " + std::to_string(size) + ")");
    if (padding_mode == PaddingMode::reflect && std::max(b, e) >= size)
      n.fail("reflect pads " + to_string(*pads) + " must be smaller than axis " + std::to_string(d) + " (size " +
             std::to_string(size) + ")");
    if (padding_mode == PaddingMode::circular && std::max(b, e) > size)
      n.fail("wrap pads " + to_string(*pads) + " must not exceed axis " + std::to_string(d) + " (size " + std::to_string(size) + ")");
  }
  // Negative pads crop; positive ones read through the mode, as convmat's padding does.
  const Matrix m = gather(v.shape, shape, [&](const std::vector<Index>& o, std::vector<Index>& i) {
    for (std::size_t d = 0; d < o.size(); ++d) i[d] = detail::padded_source(o[d] - begin[d + 1], v.shape[d], padding_mode);
  });
  Eigen::VectorXd bias = Eigen::VectorXd::Zero(m.rows());
  for (Index r = 0; r < m.rows(); ++r)
    if (!Matrix::InnerIterator(m, r)) bias(r) = fill;
  l.set(n, 0, Lowering::then(v, affine_map(m, bias), shape, v.nonneg && (padding_mode != PaddingMode::zeros || fill >= 0)));
}

void lower_slice(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const auto rank = v.shape.size() + 1;
  const auto starts = input_or_attribute(l, n, 1, "starts"), ends = input_or_attribute(l, n, 2, "ends");
  if (!starts || !ends || starts->size() != ends->size()) n.fail("starts and ends are missing or differ in length");
  std::vector<std::int64_t> axes(starts->size()), steps(starts->size(), 1);
  std::iota(axes.begin(), axes.end(), 0);
  if (auto given = input_or_attribute(l, n, 3, "axes")) axes = *given;
  if (const Tensor* given = l.optional_constant(n, 4)) steps = integers_of(n, *given);
  if (axes.size() != starts->size() || steps.size() != starts->size()) n.fail("axes or steps differ in length from starts");
  std::vector<Index> first(rank, 0), step(rank, 1);
  Shape shape = v.shape;
  for (std::size_t k = 0; k < axes.size(); ++k) {
    const auto axis = static_cast<std::size_t>(normalized_axis(n, axes[k], rank, "axis"));
    if (steps[k] == 0) n.fail("step 0 on axis " + std::to_string(axes[k]));
    if (axis == 0) {
      if ((*starts)[k] != 0 || (*ends)[k] < std::numeric_limits<std::int32_t>::max() || steps[k] != 1)
        n.fail("slices the batch dimension");
      continue;
    }
    const double size = static_cast<double>(v.shape[axis - 1]);
    double s = static_cast<double>((*starts)[k]), e = static_cast<double>((*ends)[k]);
    if (s < 0) s += size;
    if (e < 0) e += size;
    if (steps[k] > 0) {
      s = std::clamp(s, 0.0, size);
      e = std::clamp(e, 0.0, size);
    } else {
      s = std::clamp(s, 0.0, size - 1);
      e = std::clamp(e, -1.0, size - 1);
    }
    const double count = steps[k] > 0 ? std::ceil((e - s) / static_cast<double>(steps[k]))
                                      : std::ceil((s - e) / -static_cast<double>(steps[k]));
    shape[axis - 1] = std::max<Index>(0, static_cast<Index>(count));
    if (shape[axis - 1] == 0) n.fail("leaves nothing of axis " + std::to_string(axes[k]));
    first[axis] = static_cast<Index>(s);
    step[axis] = steps[k];
  }
  const Matrix m = gather(v.shape, shape, [&](const std::vector<Index>& o, std::vector<Index>& i) {
    for (std::size_t d = 0; d < o.size(); ++d) i[d] = first[d + 1] + o[d] * step[d + 1];
  });
  l.set(n, 0, Lowering::then(v, linear_map(m), shape, v.nonneg));
}

void lower_shape(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (l.graph().static_batch <= 0)
    n.fail("the shape of '" + n.inputs[0] + "' includes the batch size, which the model leaves free; export with a "
           "fixed batch size, or use Flatten");
  Shape full{l.graph().static_batch};
  full.insert(full.end(), v.shape.begin(), v.shape.end());
  const auto rank = static_cast<std::int64_t>(full.size());
  auto clamp = [rank](std::int64_t a) { return std::clamp<std::int64_t>(a < 0 ? a + rank : a, 0, rank); };
  const auto begin = clamp(n.integer("start", 0)), end = clamp(n.integer("end", rank));
  Tensor t;
  t.type = 7;  // INT64
  for (auto d = begin; d < end; ++d) t.data.push_back(static_cast<double>(full[static_cast<std::size_t>(d)]));
  t.dims = {static_cast<std::int64_t>(t.data.size())};
  l.set(n, 0, std::move(t));
}

/// If with a constant condition (the exporter's shape checks: Shape ->
/// Gather -> Equal -> If): the branch it takes, lowered in place.
void lower_if(Lowering& l, const Node& n) {
  if (!l.is_constant(n, 0))
    n.fail("its condition ('" + (n.inputs.empty() ? std::string() : n.inputs[0]) +
           "') is computed from the network's input: data-dependent control flow, which no fixed network of Gemm "
           "and Relu computes");
  const Tensor& condition = l.constant(n, 0);
  if (condition.numel() != 1) n.fail("its condition has shape " + to_string(condition.dims) + ", not one value");
  const char* taken = condition.data[0] != 0 ? "then_branch" : "else_branch";
  const Subgraph& branch = n.graph(taken);
  if (branch.outputs.size() != n.outputs.size())
    n.fail_attribute(taken, "has " + std::to_string(branch.outputs.size()) + " outputs, but the node has " +
                                std::to_string(n.outputs.size()));
  l.lower_branch(branch);
  for (std::size_t k = 0; k < n.outputs.size(); ++k) l.alias(n, k, branch.outputs[k]);
}

}  // namespace

const std::vector<OperatorEntry>& shape_operators() {
  static const std::vector<OperatorEntry> entries = {
      {"Identity", lower_identity, "nothing"},
      {"Dropout", lower_dropout, "nothing (inference); its mask is refused"},
      {"Flatten", lower_flatten, "nothing: convmat's vectors are flat (axis 1)"},
      {"Reshape", lower_reshape, "nothing, the batch dimension first (0, -1 or the fixed batch size)"},
      {"Squeeze", lower_squeeze, "nothing; axes as attribute (opset < 13) or input"},
      {"Unsqueeze", lower_unsqueeze, "nothing; axes as attribute (opset < 13) or input"},
      {"Transpose", lower_transpose, "a permutation of the non-batch axes"},
      {"Concat", lower_concat, "the inputs' maps, lifted to one level, interleaved along the axis"},
      {"Pad", lower_pad,
       "a selection (constant, reflect, edge, wrap; negative pads crop) with the constant value as bias; pads and "
       "value as attributes (opset < 11) or inputs, axes (opset 18)"},
      {"Slice", lower_slice, "a selection with starts, ends, axes and steps (attributes before opset 10)"},
      {"Shape", lower_shape, "a constant, when the batch size is fixed"},
      {"If", lower_if, "the branch its condition takes, when the condition is a constant (an exporter's shape check)"},
  };
  return entries;
}

}  // namespace convmat::mlp
