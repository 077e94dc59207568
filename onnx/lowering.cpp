// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Step 2: the lowering loop (each node to its operator function, found in
// one table), the values' bookkeeping, and the helpers the operator
// functions share: broadcasting, selections, window attributes, the size
// guard on composed maps.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <set>

#include "lowering.hpp"

namespace convmat::mlp {

// ---- small helpers ---------------------------------------------------------

Index numel(const Shape& shape, const std::string& what) {
  Index n = 1;
  for (auto d : shape) {
    if (d < 0) throw conversion_error(what + " has a negative dimension: shape " + to_string(shape));
    if (d != 0 && n > std::numeric_limits<Index>::max() / d)
      throw conversion_error(what + " has too many elements: shape " + to_string(shape));
    n *= d;
  }
  return n;
}

std::int64_t integer_value(const Node& n, double value) {
  if (std::isnan(value) || value != std::trunc(value))
    n.fail("takes integers from a constant, but one of its values is " + std::to_string(value));
  // 2^63 is the first double past int64's range: casting it is undefined.
  if (value >= 9223372036854775808.0) return std::numeric_limits<std::int64_t>::max();
  if (value < -9223372036854775808.0) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(value);
}

std::vector<std::int64_t> integers_of(const Node& n, const Tensor& t) {
  std::vector<std::int64_t> values;
  values.reserve(t.data.size());
  for (double v : t.data) values.push_back(integer_value(n, v));
  return values;
}

namespace {

/// A count computed in double, for a message: its integer value, or "more
/// than 2^63" past int64's range (where the cast would be undefined).
std::string count_text(double count) {
  return count < 9223372036854775808.0 ? std::to_string(static_cast<long long>(count)) : "more than 2^63";
}

}  // namespace

void require_memory(Index nonzeros, Index rows, const std::string& what) {
  const double bytes = static_cast<double>(nonzeros) * (sizeof(double) + sizeof(int)) +
                       static_cast<double>(rows + 1) * sizeof(int);
  const std::size_t limit = max_dense_bytes();
  if (bytes > static_cast<double>(limit) || nonzeros > INT_MAX || rows >= INT_MAX)
    detail::fail_memory(what, " would have ", nonzeros, " non-zeros in ", rows, " rows (", count_text(bytes),
                        " bytes in memory), more than max_dense_bytes() = ", limit,
                        nonzeros > INT_MAX || rows >= INT_MAX ? " or its int index" : "");
}

Affine identity(Index n) { return linear_map(selection(n, n, [](Index r) { return r; })); }

Affine widen(Affine map, Index cols) {
  if (map.matrix.cols() < cols) map.matrix.conservativeResize(map.matrix.rows(), cols);
  return map;
}

Matrix selection(Index rows, Index cols, const std::function<Index(Index)>& source) {
  require_memory(rows, rows, "a selection of " + std::to_string(rows) + " x " + std::to_string(cols));
  detail::check_storage_index<int>(std::max(rows, cols), "a selection's size");
  Matrix m(rows, cols);
  m.reserve(Eigen::VectorXi::Constant(rows, 1));
  for (Index r = 0; r < rows; ++r) {
    const Index c = source(r);
    if (c >= 0) m.insert(r, c) = 1.0;
  }
  m.makeCompressed();
  return m;
}

std::vector<Index> strides_of(const Shape& shape) {
  std::vector<Index> strides(shape.size(), 1);
  for (std::size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

Eigen::VectorXd as_vector(const Tensor& t) {
  return Eigen::Map<const Eigen::VectorXd>(t.data.data(), static_cast<Index>(t.data.size()));
}

Affine compose_checked(const Affine& second, const Affine& first) {
  // Row r of the product has at most min(cols, sum of the lengths of the
  // rows of `first` that row r of `second` reads) non-zeros.
  const Matrix& a = second.matrix;
  const Matrix& b = first.matrix;
  if (a.cols() != b.rows()) return compose(second, first);  // compose names the mismatch
  std::vector<Index> length(static_cast<std::size_t>(b.rows()));
  for (Index r = 0; r < b.rows(); ++r) length[static_cast<std::size_t>(r)] = b.outerIndexPtr()[r + 1] - b.outerIndexPtr()[r];
  double bound = 0;
  for (Index r = 0; r < a.rows(); ++r) {
    double row = 0;
    for (Matrix::InnerIterator it(a, r); it; ++it) row += static_cast<double>(length[static_cast<std::size_t>(it.col())]);
    bound += std::min(row, static_cast<double>(b.cols()));
  }
  const double bytes = bound * static_cast<double>(sizeof(double) + sizeof(int));
  const std::size_t limit = max_dense_bytes();
  if (bound > static_cast<double>(INT_MAX) || bytes > static_cast<double>(limit))
    detail::fail_memory("the composed map (", a.rows(), " x ", b.cols(), ") could have up to ",
                        count_text(bound), " non-zeros (", count_text(bytes),
                        " bytes in memory), more than max_dense_bytes() = ", limit, bound > INT_MAX ? " and its int index" : "",
                        "; a smaller input, or --max-bytes, may let it through");
  return compose(second, first);
}

int spatial_rank(const Node& node, const Value& v) {
  const int rank = static_cast<int>(v.shape.size()) - 1;
  if (rank < 1 || rank > 3)
    node.fail("input has shape (N, " + to_string(v.shape).substr(1) +
              "; this operator takes (N, channels, spatial...) with 1 to 3 spatial dimensions");
  return rank;
}

Shape broadcast_shapes(const Node& node, const Shape& a, const Shape& b) {
  Shape out(std::max(a.size(), b.size()), 1);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    const auto db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    if (da != db && da != 1 && db != 1)
      node.fail("shapes " + to_string(a) + " and " + to_string(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Eigen::VectorXd broadcast_constant(const Node& node, const Tensor& c, const Shape& shape) {
  Shape full{1};
  full.insert(full.end(), shape.begin(), shape.end());
  const std::string target = "(N, " + to_string(shape).substr(1);
  if (c.dims.size() > full.size())
    node.fail("the constant of shape " + to_string(c.dims) + " has more dimensions than the data " + target);
  Shape cd(full.size() - c.dims.size(), 1);
  cd.insert(cd.end(), c.dims.begin(), c.dims.end());
  if (cd[0] != 1)
    node.fail("the constant of shape " + to_string(c.dims) + " varies along the batch dimension of " + target);
  for (std::size_t d = 1; d < full.size(); ++d)
    if (cd[d] != 1 && cd[d] != full[d])
      node.fail("the constant of shape " + to_string(c.dims) + " does not broadcast to the data " + target);
  const auto strides = strides_of(cd);
  const Index n = numel(shape);
  Eigen::VectorXd out(n);
  std::vector<Index> index(full.size(), 0);
  for (Index i = 0; i < n; ++i) {
    Index rest = i, source = 0;
    for (std::size_t d = full.size(); d-- > 1;) {
      const Index coordinate = rest % full[d];
      rest /= full[d];
      if (cd[d] != 1) source += coordinate * strides[d];
    }
    out(i) = c.data[static_cast<std::size_t>(source)];
  }
  return out;
}

Matrix broadcast_matrix(const Shape& from, const Shape& to) {
  Shape fd(to.size() - from.size(), 1);
  fd.insert(fd.end(), from.begin(), from.end());
  const auto strides = strides_of(fd);
  return selection(numel(to), numel(from), [&](Index i) {
    Index rest = i, source = 0;
    for (std::size_t d = to.size(); d-- > 0;) {
      const Index coordinate = rest % to[d];
      rest /= to[d];
      if (fd[d] != 1) source += coordinate * strides[d];
    }
    return source;
  });
}

Window read_window(const Node& node, int rank, const std::vector<Index>& kernel, Index default_stride) {
  const auto r = static_cast<std::size_t>(rank);
  const auto count = [&](const char* name, const std::vector<Index>& values, std::size_t expected) {
    if (values.size() != expected)
      node.fail_attribute(name, "has " + std::to_string(values.size()) + " values, but the input has " +
                                    std::to_string(rank) + " spatial dimensions (needs " + std::to_string(expected) +
                                    ")");
  };
  Window w;
  w.kernel = node.integers("kernel_shape", kernel);
  if (w.kernel.empty()) node.fail_attribute("kernel_shape", "is required");
  count("kernel_shape", w.kernel, r);
  w.strides = node.integers("strides", std::vector<Index>(r, default_stride));
  count("strides", w.strides, r);
  w.dilations = node.integers("dilations", std::vector<Index>(r, 1));
  count("dilations", w.dilations, r);
  const auto pads = node.integers("pads", std::vector<Index>(2 * r, 0));
  count("pads", pads, 2 * r);
  w.pad_begin.assign(pads.begin(), pads.begin() + rank);
  w.pad_end.assign(pads.begin() + rank, pads.end());
  w.auto_pad = node.text("auto_pad", "NOTSET");
  if (w.auto_pad.empty()) w.auto_pad = "NOTSET";
  if (w.auto_pad != "NOTSET" && w.auto_pad != "VALID" && !w.same())
    node.fail_attribute("auto_pad", "'" + w.auto_pad + "' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER");
  if (w.auto_pad == "VALID") std::fill(w.pad_begin.begin(), w.pad_begin.end(), 0), std::fill(w.pad_end.begin(), w.pad_end.end(), 0);
  return w;
}

// ---- the lowering ------------------------------------------------------------

Lowering::Lowering(Graph graph, LowerOptions options)
    : graph_(std::move(graph)), options_(options), stack_(numel(graph_.input_shape, "the input")) {}

const Tensor& Lowering::constant(const Node& node, std::size_t i) const {
  const Tensor& t = stored_constant(node, i);
  if (!t.is_decoded()) constants_.at(node.inputs[i]).decode();
  return t;
}

const Tensor& Lowering::stored_constant(const Node& node, std::size_t i) const {
  if (!node.has_input(i)) node.fail("input " + std::to_string(i) + " is missing");
  const auto it = constants_.find(node.inputs[i]);
  if (it == constants_.end())
    node.fail("input " + std::to_string(i) + " ('" + node.inputs[i] +
              "') must be a constant (an initializer or computed from constants)" +
              (is_value(node.inputs[i]) ? ", not computed from the network's input" : ""));
  return it->second;
}

const Tensor* Lowering::optional_constant(const Node& node, std::size_t i) const {
  return node.has_input(i) ? &constant(node, i) : nullptr;
}

const Value& Lowering::value(const Node& node, std::size_t i) const {
  if (!node.has_input(i)) node.fail("input " + std::to_string(i) + " is missing");
  const auto it = values_.find(node.inputs[i]);
  if (it != values_.end()) return it->second;
  if (const auto why = unavailable_.find(node.inputs[i]); why != unavailable_.end())
    node.fail("input " + std::to_string(i) + " ('" + node.inputs[i] + "') is " + why->second);
  if (is_constant(node.inputs[i]))
    node.fail("input " + std::to_string(i) + " ('" + node.inputs[i] + "') is a constant, and convmat-onnx evaluates " +
              node.op + " only on tensors computed from the network's input");
  node.fail("input '" + node.inputs[i] + "' is neither the network's input nor computed from it by an earlier node");
}

void Lowering::set(const Node& node, std::size_t output, Value value) {
  if (output >= node.outputs.size()) node.fail("has no output " + std::to_string(output));
  if (node.outputs[output].empty()) return;
  if (numel(value.shape) != value.map.matrix.rows())
    throw std::logic_error("convmat-onnx: " + node.where() + " gives a map of " +
                           std::to_string(value.map.matrix.rows()) + " rows for shape " + to_string(value.shape));
  constants_.erase(node.outputs[output]);
  values_[node.outputs[output]] = std::move(value);
}

void Lowering::unavailable(const Node& node, std::size_t output, const std::string& why) {
  if (output < node.outputs.size() && !node.outputs[output].empty())
    unavailable_[node.outputs[output]] = why + " (output " + std::to_string(output) + " of " + node.where() + ")";
}

void Lowering::set(const Node& node, std::size_t output, Tensor constant) {
  if (output >= node.outputs.size()) node.fail("has no output " + std::to_string(output));
  if (node.outputs[output].empty()) return;
  values_.erase(node.outputs[output]);
  constants_[node.outputs[output]] = std::move(constant);
}

Affine Lowering::at(const Value& v, int level) {
  if (level < v.level) throw std::logic_error("convmat-onnx: a value cannot move to an earlier level");
  int from = v.level;
  const Affine* map = &v.map;
  const auto cached = v.later.upper_bound(level);
  if (cached != v.later.begin()) {
    const auto below = std::prev(cached);
    from = below->first;
    map = &below->second;
  }
  Affine lifted = *map;
  for (int l = from; l < level; ++l) {
    lifted = stack_.lift(widen(std::move(lifted), stack_.width(l)), l, v.nonneg);
    v.later[l + 1] = lifted;
  }
  return widen(std::move(lifted), stack_.width(level));
}

Affine Lowering::take(const Node& node, std::size_t i) {
  const Value& v = value(node, i);
  const auto readers = readers_.find(node.inputs[i]);
  if (&node != current_ || readers == readers_.end() || readers->second != 1) return at(v, v.level);
  Value& owned = values_.at(node.inputs[i]);  // erased once `node` is done
  owned.later.clear();
  return widen(std::move(owned.map), stack_.width(owned.level));
}

Value Lowering::then(const Value& v, Affine layer, Shape shape, bool nonneg) {
  if (layer.matrix.cols() == v.map.matrix.rows() && is_identity(v.map))  // no copy of a large weight
    return Value{std::move(shape), v.level, std::move(layer), nonneg};
  return Value{std::move(shape), v.level, compose_checked(layer, v.map), nonneg};
}

Value Lowering::relu(Affine pre, int level, Shape shape) {
  return Value{std::move(shape), level + 1, stack_.relu(level, widen(std::move(pre), stack_.width(level))), true};
}

Value Lowering::activate(const Node& node, const Value& v, const Activation& a) {
  if (options_.relu_only)
    node.fail("operator " + node.op + " is refused by --relu-only (relu_only): the fully-connected form would "
              "have a " + node.op + " layer");
  int level = v.level;  // the first layer from v's level that has `a`, or a new one
  while (level < stack_.top() && stack_.activation(level) != a) ++level;
  Affine pre = at(v, level);  // carried through the ReLU layers between: placement_error across others
  return Value{v.shape, level + 1, stack_.activate(level, std::move(pre), a), a.never_negative()};
}

void Lowering::finish_with(const Node& node, const Activation& a) {
  if (options_.relu_only)
    node.fail("operator " + node.op + " is refused by --relu-only (relu_only): the last Gemm would be followed by it");
  const auto readers = readers_.find(node.outputs.empty() ? std::string() : node.outputs[0]);
  if (node.outputs.empty() || node.outputs[0] != graph_.output_name || readers == readers_.end() || readers->second != 1)
    node.fail(node.op + " is taken only as the network's last node, whose output is the model's: it acts on the "
              "last Gemm's output as a whole, so nothing can follow it");
  const Value& v = value(node, 0);
  Value out{v.shape, v.level, take(node, 0), a.never_negative()};
  set(node, 0, std::move(out));
  final_activation_ = a;
}

int Lowering::common_level(const std::vector<const Value*>& values) {
  int level = 0;
  for (const auto* v : values) level = std::max(level, v->level);
  return level;
}

void Lowering::lower(const Node& node) {
  if (!node.domain.empty() && node.domain != "ai.onnx")
    node.fail("domain '" + node.domain + "' is not supported (only ONNX's default domain); supported: " +
              supported_operator_names());
  bool all_constant = true;
  for (std::size_t i = 0; i < node.inputs.size(); ++i)
    if (node.has_input(i) && !is_constant(node.inputs[i])) all_constant = false;
  if (all_constant)
    if (const auto* folder = find_folder(node.op)) return folder->lower(*this, node);
  if (const auto* entry = find_operator(node.op)) return entry->lower(*this, node);
  if (const char* why = refusal_reason(node.op)) node.fail("operator " + node.op + " is not supported: " + why);
  node.fail("operator " + node.op + " is not supported; supported: " + supported_operator_names());
}

namespace {

/// A library message without its "convmat: " prefix, for a node's message.
std::string without_prefix(const char* what) {
  return std::strncmp(what, "convmat: ", 9) == 0 ? what + 9 : what;
}

}  // namespace

Network Lowering::run() {
  constants_ = std::move(graph_.initializers);
  const Index inputs = stack_.width(0);
  if (inputs >= INT_MAX)
    throw conversion_error("the input " + to_string(graph_.input_shape) + " has " + std::to_string(inputs) +
                           " values per sample, more than convmat-onnx's int indices hold");
  try {
    values_[graph_.input_name] = Value{graph_.input_shape, 0, identity(inputs), false};
  } catch (const memory_limit_error& e) {
    throw memory_limit_error("the input " + to_string(graph_.input_shape) + ": " + without_prefix(e.what()));
  }
  // The nodes the output depends on, found backwards; a branch nothing
  // reads (an unused Sigmoid) is never lowered. Each name's readers are
  // counted, so it is released after the last.
  std::set<std::string> needed{graph_.output_name};
  std::vector<char> live(graph_.nodes.size(), 0);
  for (std::size_t i = graph_.nodes.size(); i-- > 0;) {
    const Node& node = graph_.nodes[i];
    for (const auto& output : node.outputs)
      if (!output.empty() && needed.count(output)) live[i] = 1;
    if (!live[i]) continue;
    for (const auto& name : names_read(node)) needed.insert(name);
  }
  readers_ = {{graph_.output_name, 1}};
  for (std::size_t i = 0; i < graph_.nodes.size(); ++i)
    if (live[i])
      for (const auto& name : names_read(graph_.nodes[i])) ++readers_[name];
  for (auto it = constants_.begin(); it != constants_.end();)  // initializers nothing reads
    it = readers_.count(it->first) ? std::next(it) : constants_.erase(it);

  for (std::size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (!live[i]) continue;
    const Node& node = graph_.nodes[i];
    current_ = &node;
    try {
      lower(node);
    } catch (const memory_limit_error& e) {
      throw memory_limit_error(node.where() + ": " + without_prefix(e.what()));
    } catch (const spec_error& e) {
      throw conversion_error(node.where() + ": " + without_prefix(e.what()));
    } catch (const placement_error& e) {
      node.fail(e.what());
    }
    for (const auto& name : names_read(node))
      if (--readers_[name] == 0) constants_.erase(name), values_.erase(name);
  }
  current_ = nullptr;
  const auto it = values_.find(graph_.output_name);
  if (it == values_.end())
    throw conversion_error("the model's output '" + graph_.output_name + "' is " +
                           (is_constant(graph_.output_name) ? "a constant, not computed from its input"
                                                            : "not computed by any node"));
  Value out = std::move(it->second);  // the output's map at its own level, taken rather than copied
  values_.clear();
  constants_.clear();
  Network network;
  network.input_name = graph_.input_name;
  network.output_name = graph_.output_name;
  network.input_shape = graph_.input_shape;
  network.output_shape = out.shape;
  network.layers = stack_.finish(widen(std::move(out.map), stack_.width(out.level)), out.level, final_activation_);
  return network;
}

void Lowering::lower_branch(const Subgraph& branch) {
  for (const auto& [name, tensor] : branch.initializers) {
    values_.erase(name);
    constants_[name] = tensor;
  }
  for (const auto& node : branch.nodes) lower(node);
}

void Lowering::alias(const Node& node, std::size_t output, const std::string& name) {
  if (const auto v = values_.find(name); v != values_.end()) return set(node, output, Value(v->second));
  if (const auto c = constants_.find(name); c != constants_.end()) return set(node, output, Tensor(c->second));
  node.fail("'" + name + "' is not computed by the branch it takes");
}

// ---- the tables --------------------------------------------------------------

const std::vector<OperatorEntry>& operator_table() {
  static const std::vector<OperatorEntry> table = [] {
    std::vector<OperatorEntry> all;
    for (const auto* group : {&convolution_operators(), &pooling_operators(), &activation_operators(),
                              &elementwise_operators(), &shape_operators()})
      all.insert(all.end(), group->begin(), group->end());
    std::sort(all.begin(), all.end(),
              [](const OperatorEntry& a, const OperatorEntry& b) { return std::strcmp(a.name, b.name) < 0; });
    for (std::size_t i = 1; i < all.size(); ++i)
      if (std::strcmp(all[i - 1].name, all[i].name) == 0)
        throw std::logic_error(std::string("convmat-onnx: operator ") + all[i].name + " is in the table twice");
    return all;
  }();
  return table;
}

namespace {

const OperatorEntry* find_in(const std::vector<OperatorEntry>& table, const std::string& op) {
  for (const auto& entry : table)
    if (op == entry.name) return &entry;
  return nullptr;
}

}  // namespace

const OperatorEntry* find_operator(const std::string& op) { return find_in(operator_table(), op); }
const OperatorEntry* find_folder(const std::string& op) { return find_in(constant_folders(), op); }

const char* refusal_reason(const std::string& op) {
  static const std::map<std::string, const char*> reasons = [] {
    std::map<std::string, const char*> r;
    const char* curved =
        "it is not piecewise linear, and not one of the activations a layer of the fully-connected form may end "
        "with (--list-operators), so no network of Gemm layers and activations computes it exactly";
    for (const char* name : {"Log", "Sqrt", "Pow", "Gelu", "Mish", "Sin", "Cos", "Tan", "Reciprocal", "Hardmax",
                             "ThresholdedRelu", "Shrink", "LpPool", "LpNormalization", "ReduceLogSumExp", "ReduceL2",
                             "ReduceSumSquare", "ReduceProd", "Einsum"})
      r[name] = curved;
    const char* jumps = "it is not continuous, so no network of Gemm layers and activations computes it exactly";
    for (const char* name : {"Floor", "Ceil", "Round", "Sign", "IsNaN", "IsInf", "QuantizeLinear", "DequantizeLinear"})
      r[name] = jumps;
    const char* decisions =
        "it compares or selects by values computed from the network's input: data-dependent control flow, which "
        "is not continuous, so no network of Gemm and Relu computes it exactly (on constants, such as an "
        "exporter's shape checks, it is evaluated)";
    for (const char* name : {"Less", "Greater", "Equal", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor",
                             "Where"})
      r[name] = decisions;
    const char* statistics =
        "it divides by statistics of its own input, which is not piecewise linear (BatchNormalization in "
        "inference mode, with fixed statistics, is supported)";
    for (const char* name : {"InstanceNormalization", "LayerNormalization", "GroupNormalization",
                             "MeanVarianceNormalization", "LRN"})
      r[name] = statistics;
    const char* indices = "its output is an index or depends on the data's order, not a value of a Gemm and Relu";
    for (const char* name : {"ArgMax", "ArgMin", "TopK", "NonZero", "Unique", "NonMaxSuppression"}) r[name] = indices;
    const char* control = "control flow and recurrence are outside a fixed network of Gemm and Relu";
    for (const char* name : {"Loop", "Scan", "LSTM", "GRU", "RNN"}) r[name] = control;
    return r;
  }();
  const auto it = reasons.find(op);
  return it == reasons.end() ? nullptr : it->second;
}

const std::vector<OperatorInfo>& supported_operators() {
  static const std::vector<OperatorInfo> info = [] {
    std::vector<OperatorInfo> out;
    for (const auto& entry : operator_table()) out.push_back({entry.name, entry.lowering});
    return out;
  }();
  return info;
}

std::string supported_operator_names() {
  std::string names;
  for (const auto& entry : operator_table()) names += (names.empty() ? "" : ", ") + std::string(entry.name);
  return names;
}

Network lower(Graph graph, const LowerOptions& options) { return Lowering(std::move(graph), options).run(); }

Network from_onnx(const onnx::ModelProto& model, const LowerOptions& options) {
  return lower(read_graph(model), options);
}

Network from_onnx(onnx::ModelProto&& model, const LowerOptions& options) {
  return lower(read_graph(std::move(model)), options);
}

}  // namespace convmat::mlp
