// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Constant folding: nodes whose inputs are all constants (exporters'
// shape and padding arithmetic: Shape, Gather, Concat, Slice, Cast, ...)
// evaluated on the way, so the operators after them see constants.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "../lowering.hpp"

namespace convmat::mlp {
namespace {

/// A tensor of `dims` with `type`, its values not yet set; guarded by
/// max_dense_bytes() since `dims` may come from the model's numbers.
Tensor sized(const Node& n, Shape dims, int type) {
  const Index count = numel(dims, n.where() + ": the result");
  const std::string what = n.where() + ": the constant of shape " + to_string(dims);
  detail::check_dense_size(count, 1, sizeof(double), what.c_str(), "the model's shape arithmetic asks for it");
  Tensor t;
  t.dims = std::move(dims);
  t.type = type;
  t.data.resize(static_cast<std::size_t>(count));
  return t;
}

/// The multi-index of flat position i in `dims`.
std::vector<Index> unflatten(Index i, const Shape& dims) {
  std::vector<Index> index(dims.size());
  for (std::size_t d = dims.size(); d-- > 0;) {
    index[d] = dims[d] ? i % dims[d] : 0;
    i = dims[d] ? i / dims[d] : 0;
  }
  return index;
}

Index flatten(const std::vector<Index>& index, const Shape& dims) {
  Index flat = 0;
  for (std::size_t d = 0; d < dims.size(); ++d) flat = flat * dims[d] + index[d];
  return flat;
}

std::int64_t axis_of(const Node& n, std::int64_t axis, std::size_t rank) {
  const auto r = static_cast<std::int64_t>(rank);
  if (axis < -r || axis >= r) n.fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + r : axis;
}

std::optional<std::vector<std::int64_t>> input_or_attribute(Lowering& l, const Node& n, std::size_t input,
                                                           const char* attribute) {
  if (const Tensor* t = l.optional_constant(n, input)) return integers_of(n, *t);
  return n.integers(attribute);
}

void fold_constant(Lowering& l, const Node& n) {
  Tensor t;
  if (const Tensor* value = n.tensor("value")) {
    t = *value;
  } else if (n.has("value_float")) {
    t.data = {n.real("value_float", 0)};
  } else if (const auto floats = n.reals("value_floats")) {
    t.dims = {static_cast<std::int64_t>(floats->size())};
    t.data = *floats;
  } else if (n.has("value_int")) {
    t.type = 7;
    t.data = {static_cast<double>(n.integer("value_int", 0))};
  } else if (const auto ints = n.integers("value_ints")) {
    t.type = 7;
    t.dims = {static_cast<std::int64_t>(ints->size())};
    t.data.assign(ints->begin(), ints->end());
  } else {
    n.fail("this form of Constant (sparse or string) is not supported");
  }
  l.set(n, 0, std::move(t));
}

void fold_constant_of_shape(Lowering& l, const Node& n) {
  const auto dims = integers_of(n, l.constant(n, 0));
  const Tensor* value = n.tensor("value");
  if (value && value->numel() != 1) n.fail_attribute("value", "has " + std::to_string(value->numel()) + " elements, not 1");
  Tensor t = sized(n, dims, value ? value->type : 1);
  std::fill(t.data.begin(), t.data.end(), value ? value->data[0] : 0.0);
  l.set(n, 0, std::move(t));
}

void fold_identity(Lowering& l, const Node& n) { l.set(n, 0, l.constant(n, 0)); }

void fold_cast(Lowering& l, const Node& n) {
  Tensor t = l.constant(n, 0);
  t.type = static_cast<int>(n.integer("to", 1));
  if (t.type == 9)  // BOOL
    for (auto& x : t.data) x = x != 0;
  else if (t.is_integer())
    for (auto& x : t.data) x = std::trunc(x);
  l.set(n, 0, std::move(t));
}

void fold_reshape(Lowering& l, const Node& n) {
  Tensor t = l.constant(n, 0);
  const auto given = input_or_attribute(l, n, 1, "shape");
  if (!given) n.fail("the target shape is missing");
  Shape dims = *given;
  const auto count = static_cast<Index>(t.data.size());
  Index known = 1;
  int unknown = -1;
  for (std::size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] == 0 && n.integer("allowzero", 0) == 0) dims[d] = d < t.dims.size() ? t.dims[d] : 0;
    if (dims[d] == -1) {
      if (unknown >= 0) n.fail("shape " + to_string(*given) + " has more than one -1");
      unknown = static_cast<int>(d);
    } else if (dims[d] < 0) {
      n.fail("shape " + to_string(*given) + " has a negative size");
    } else {
      if (dims[d] != 0 && known > std::numeric_limits<Index>::max() / dims[d])
        n.fail("shape " + to_string(*given) + " does not fit " + std::to_string(count) + " elements");
      known *= dims[d];
    }
  }
  if (unknown >= 0 && known > 0) dims[static_cast<std::size_t>(unknown)] = count / known;
  if (numel(dims) != count) n.fail("shape " + to_string(*given) + " does not fit " + std::to_string(count) + " elements");
  t.dims = dims;
  l.set(n, 0, std::move(t));
}

void fold_unsqueeze(Lowering& l, const Node& n) {
  Tensor t = l.constant(n, 0);
  const auto axes = input_or_attribute(l, n, 1, "axes");
  if (!axes) n.fail("axes are missing");
  std::vector<std::int64_t> sorted;
  for (auto a : *axes) sorted.push_back(axis_of(n, a, t.dims.size() + axes->size()));
  std::sort(sorted.begin(), sorted.end());
  for (auto a : sorted) t.dims.insert(t.dims.begin() + a, 1);
  l.set(n, 0, std::move(t));
}

void fold_squeeze(Lowering& l, const Node& n) {
  Tensor t = l.constant(n, 0);
  const auto axes = input_or_attribute(l, n, 1, "axes");
  std::vector<char> drop(t.dims.size(), 0);
  if (axes && !axes->empty()) {
    for (auto a : *axes) {
      const auto axis = static_cast<std::size_t>(axis_of(n, a, t.dims.size()));
      if (t.dims[axis] != 1) n.fail("axis " + std::to_string(a) + " has size " + std::to_string(t.dims[axis]) + ", not 1");
      drop[axis] = 1;
    }
  } else {
    for (std::size_t d = 0; d < t.dims.size(); ++d) drop[d] = t.dims[d] == 1;
  }
  Shape dims;
  for (std::size_t d = 0; d < t.dims.size(); ++d)
    if (!drop[d]) dims.push_back(t.dims[d]);
  t.dims = dims;
  l.set(n, 0, std::move(t));
}

void fold_concat(Lowering& l, const Node& n) {
  std::vector<const Tensor*> parts;
  for (std::size_t i = 0; i < n.inputs.size(); ++i) parts.push_back(&l.constant(n, i));
  if (parts.empty()) n.fail("has no inputs");
  const Shape& first = parts[0]->dims;
  const auto axis = static_cast<std::size_t>(axis_of(n, n.integer("axis", 0), std::max<std::size_t>(first.size(), 1)));
  Shape dims = first;
  if (dims.empty()) n.fail("cannot concatenate scalars");
  dims[axis] = 0;
  for (const auto* p : parts) {
    if (p->dims.size() != first.size()) n.fail("inputs of shapes " + to_string(first) + " and " + to_string(p->dims) + " differ in rank");
    for (std::size_t d = 0; d < first.size(); ++d)
      if (d != axis && p->dims[d] != first[d]) n.fail("inputs of shapes " + to_string(first) + " and " + to_string(p->dims) + " do not concatenate");
    dims[axis] += p->dims[axis];
  }
  Tensor t;
  t.dims = dims;
  t.type = parts[0]->type;
  const Index outer = std::accumulate(first.begin(), first.begin() + static_cast<std::ptrdiff_t>(axis), Index{1}, std::multiplies<>());
  for (Index o = 0; o < outer; ++o)
    for (const auto* p : parts) {
      const auto chunk = static_cast<std::ptrdiff_t>(outer ? static_cast<Index>(p->data.size()) / outer : 0);
      t.data.insert(t.data.end(), p->data.begin() + o * chunk, p->data.begin() + (o + 1) * chunk);
    }
  l.set(n, 0, std::move(t));
}

void fold_transpose(Lowering& l, const Node& n) {
  const Tensor& in = l.constant(n, 0);
  const auto rank = in.dims.size();
  std::vector<std::int64_t> perm(rank);
  std::iota(perm.rbegin(), perm.rend(), 0);
  perm = n.integers("perm", perm);
  std::vector<std::int64_t> sorted = perm, expected(rank);
  std::sort(sorted.begin(), sorted.end());
  std::iota(expected.begin(), expected.end(), 0);
  if (sorted != expected) n.fail_attribute("perm", to_string(perm) + " is not a permutation of " + std::to_string(rank) + " axes");
  Shape dims;
  for (auto p : perm) dims.push_back(in.dims[static_cast<std::size_t>(p)]);
  Tensor t = sized(n, dims, in.type);
  for (Index i = 0; i < static_cast<Index>(t.data.size()); ++i) {
    const auto o = unflatten(i, dims);
    std::vector<Index> source(rank);
    for (std::size_t d = 0; d < rank; ++d) source[static_cast<std::size_t>(perm[d])] = o[d];
    t.data[static_cast<std::size_t>(i)] = in.data[static_cast<std::size_t>(flatten(source, in.dims))];
  }
  l.set(n, 0, std::move(t));
}

void fold_slice(Lowering& l, const Node& n) {
  const Tensor& in = l.constant(n, 0);
  const auto starts = input_or_attribute(l, n, 1, "starts"), ends = input_or_attribute(l, n, 2, "ends");
  if (!starts || !ends || starts->size() != ends->size()) n.fail("starts and ends are missing or differ in length");
  std::vector<std::int64_t> axes(starts->size()), steps(starts->size(), 1);
  std::iota(axes.begin(), axes.end(), 0);
  if (auto given = input_or_attribute(l, n, 3, "axes")) axes = *given;
  if (const Tensor* given = l.optional_constant(n, 4)) steps = integers_of(n, *given);
  if (axes.size() != starts->size() || steps.size() != starts->size()) n.fail("axes or steps differ in length from starts");
  std::vector<Index> first(in.dims.size(), 0), step(in.dims.size(), 1);
  Shape dims = in.dims;
  for (std::size_t k = 0; k < axes.size(); ++k) {
    const auto a = static_cast<std::size_t>(axis_of(n, axes[k], in.dims.size()));
    if (steps[k] == 0) n.fail("step 0 on axis " + std::to_string(axes[k]));
    const double size = static_cast<double>(in.dims[a]);
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
    dims[a] = std::max<std::int64_t>(0, static_cast<std::int64_t>(count));
    first[a] = static_cast<Index>(s);
    step[a] = steps[k];
  }
  Tensor t = sized(n, dims, in.type);
  for (Index i = 0; i < static_cast<Index>(t.data.size()); ++i) {
    auto index = unflatten(i, dims);
    for (std::size_t d = 0; d < index.size(); ++d) index[d] = first[d] + index[d] * step[d];
    t.data[static_cast<std::size_t>(i)] = in.data[static_cast<std::size_t>(flatten(index, in.dims))];
  }
  l.set(n, 0, std::move(t));
}

void fold_gather(Lowering& l, const Node& n) {
  const Tensor& in = l.constant(n, 0);
  const Tensor& indices = l.constant(n, 1);
  if (in.dims.empty()) n.fail("gathers from a scalar");
  const auto axis = static_cast<std::size_t>(axis_of(n, n.integer("axis", 0), in.dims.size()));
  Shape dims(in.dims.begin(), in.dims.begin() + static_cast<std::ptrdiff_t>(axis));
  dims.insert(dims.end(), indices.dims.begin(), indices.dims.end());
  dims.insert(dims.end(), in.dims.begin() + static_cast<std::ptrdiff_t>(axis) + 1, in.dims.end());
  Tensor t = sized(n, dims, in.type);
  const Index size = in.dims[axis], count = static_cast<Index>(indices.data.size());
  Index inner = 1;
  for (std::size_t d = axis + 1; d < in.dims.size(); ++d) inner *= in.dims[d];
  const Index outer = numel(in.dims) / std::max<Index>(size * inner, 1);
  for (Index o = 0; o < outer; ++o)
    for (Index j = 0; j < count; ++j) {
      auto k = integer_value(n, indices.data[static_cast<std::size_t>(j)]);
      if (k < 0) k += size;
      if (k < 0 || k >= size) n.fail("index " + std::to_string(k) + " is out of range for axis size " + std::to_string(size));
      for (Index i = 0; i < inner; ++i)
        t.data[static_cast<std::size_t>((o * count + j) * inner + i)] = in.data[static_cast<std::size_t>((o * size + k) * inner + i)];
    }
  l.set(n, 0, std::move(t));
}

void fold_shape(Lowering& l, const Node& n) {
  const Tensor& in = l.constant(n, 0);
  const auto rank = static_cast<std::int64_t>(in.dims.size());
  auto clamp = [rank](std::int64_t a) { return std::clamp<std::int64_t>(a < 0 ? a + rank : a, 0, rank); };
  Tensor t;
  t.type = 7;
  for (auto d = clamp(n.integer("start", 0)); d < clamp(n.integer("end", rank)); ++d)
    t.data.push_back(static_cast<double>(in.dims[static_cast<std::size_t>(d)]));
  t.dims = {static_cast<std::int64_t>(t.data.size())};
  l.set(n, 0, std::move(t));
}

/// The position in `x` of the element at multi-index `o` of the broadcast
/// shape `dims` (numpy rules).
std::size_t broadcast_index(const Tensor& x, const Shape& dims, const std::vector<Index>& o) {
  Index flat = 0;
  const std::size_t skip = dims.size() - x.dims.size();
  for (std::size_t d = 0; d < x.dims.size(); ++d) flat = flat * x.dims[d] + (x.dims[d] == 1 ? 0 : o[skip + d]);
  return static_cast<std::size_t>(flat);
}

/// ONNX's BOOL element type (onnx::TensorProto::BOOL): comparisons give it.
constexpr int bool_type = 9;

/// An elementwise binary operator on constants with numpy broadcasting;
/// the result has the type of the first input, or `type` if given.
template <class F>
void fold_binary(Lowering& l, const Node& n, F f, int type = -1) {
  const Tensor& a = l.constant(n, 0);
  const Tensor& b = l.constant(n, 1);
  const Shape dims = broadcast_shapes(n, a.dims, b.dims);
  Tensor t = sized(n, dims, type < 0 ? a.type : type);
  const auto index_in = [&dims](const Tensor& x, const std::vector<Index>& o) { return broadcast_index(x, dims, o); };
  for (Index i = 0; i < static_cast<Index>(t.data.size()); ++i) {
    const auto o = unflatten(i, dims);
    t.data[static_cast<std::size_t>(i)] = f(a.data[index_in(a, o)], b.data[index_in(b, o)], t.is_integer());
  }
  l.set(n, 0, std::move(t));
}

void fold_add(Lowering& l, const Node& n) { fold_binary(l, n, [](double x, double y, bool) { return x + y; }); }
void fold_sub(Lowering& l, const Node& n) { fold_binary(l, n, [](double x, double y, bool) { return x - y; }); }
void fold_mul(Lowering& l, const Node& n) { fold_binary(l, n, [](double x, double y, bool) { return x * y; }); }
void fold_div(Lowering& l, const Node& n) {
  fold_binary(l, n, [&n](double x, double y, bool integer) {
    if (integer && y == 0) n.fail("divides an integer by zero");
    return integer ? std::trunc(x / y) : x / y;
  });
}

/// A comparison or a logical operator of constants (the exporter's shape
/// checks: Shape -> Gather -> Equal -> If): a BOOL tensor.
template <bool (*F)(double, double)>
void fold_predicate(Lowering& l, const Node& n) {
  fold_binary(l, n, [](double x, double y, bool) { return F(x, y) ? 1.0 : 0.0; }, bool_type);
}

bool equal(double x, double y) { return x == y; }
bool less(double x, double y) { return x < y; }
bool greater(double x, double y) { return x > y; }
bool less_or_equal(double x, double y) { return x <= y; }
bool greater_or_equal(double x, double y) { return x >= y; }
bool both(double x, double y) { return x != 0 && y != 0; }
bool either(double x, double y) { return x != 0 || y != 0; }
bool one_of(double x, double y) { return (x != 0) != (y != 0); }

void fold_not(Lowering& l, const Node& n) {
  Tensor t = l.constant(n, 0);
  for (auto& x : t.data) x = x == 0 ? 1.0 : 0.0;
  t.type = bool_type;
  l.set(n, 0, std::move(t));
}

/// Where(condition, x, y) of constants, numpy broadcasting over all three.
void fold_where(Lowering& l, const Node& n) {
  const Tensor& c = l.constant(n, 0);
  const Tensor& x = l.constant(n, 1);
  const Tensor& y = l.constant(n, 2);
  const Shape dims = broadcast_shapes(n, broadcast_shapes(n, c.dims, x.dims), y.dims);
  Tensor t = sized(n, dims, x.type);
  const auto index_in = [&dims](const Tensor& v, const std::vector<Index>& o) { return broadcast_index(v, dims, o); };
  for (Index i = 0; i < static_cast<Index>(t.data.size()); ++i) {
    const auto o = unflatten(i, dims);
    t.data[static_cast<std::size_t>(i)] = c.data[index_in(c, o)] != 0 ? x.data[index_in(x, o)] : y.data[index_in(y, o)];
  }
  l.set(n, 0, std::move(t));
}

template <double (*F)(double)>
void fold_unary(Lowering& l, const Node& n) {
  Tensor t = l.constant(n, 0);
  for (auto& x : t.data) x = F(x);
  l.set(n, 0, std::move(t));
}

double negate(double x) { return -x; }
double relu(double x) { return x > 0 ? x : 0; }
double square_root(double x) { return std::sqrt(x); }
double floor_of(double x) { return std::floor(x); }
double ceil_of(double x) { return std::ceil(x); }
double absolute(double x) { return std::abs(x); }

}  // namespace

const std::vector<OperatorEntry>& constant_folders() {
  static const std::vector<OperatorEntry> entries = {
      {"Constant", fold_constant, "evaluated"},
      {"ConstantOfShape", fold_constant_of_shape, "evaluated"},
      {"Identity", fold_identity, "evaluated"},
      {"Cast", fold_cast, "evaluated"},
      {"Reshape", fold_reshape, "evaluated"},
      {"Unsqueeze", fold_unsqueeze, "evaluated"},
      {"Squeeze", fold_squeeze, "evaluated"},
      {"Concat", fold_concat, "evaluated"},
      {"Transpose", fold_transpose, "evaluated"},
      {"Slice", fold_slice, "evaluated"},
      {"Gather", fold_gather, "evaluated"},
      {"Shape", fold_shape, "evaluated"},
      {"Add", fold_add, "evaluated"},
      {"Sub", fold_sub, "evaluated"},
      {"Mul", fold_mul, "evaluated"},
      {"Div", fold_div, "evaluated"},
      {"Neg", fold_unary<negate>, "evaluated"},
      {"Relu", fold_unary<relu>, "evaluated"},
      {"Sqrt", fold_unary<square_root>, "evaluated"},
      {"Floor", fold_unary<floor_of>, "evaluated"},
      {"Ceil", fold_unary<ceil_of>, "evaluated"},
      {"Abs", fold_unary<absolute>, "evaluated"},
      {"Equal", fold_predicate<equal>, "evaluated"},
      {"Less", fold_predicate<less>, "evaluated"},
      {"Greater", fold_predicate<greater>, "evaluated"},
      {"LessOrEqual", fold_predicate<less_or_equal>, "evaluated"},
      {"GreaterOrEqual", fold_predicate<greater_or_equal>, "evaluated"},
      {"And", fold_predicate<both>, "evaluated"},
      {"Or", fold_predicate<either>, "evaluated"},
      {"Xor", fold_predicate<one_of>, "evaluated"},
      {"Not", fold_not, "evaluated"},
      {"Where", fold_where, "evaluated"},
  };
  return entries;
}

}  // namespace convmat::mlp
