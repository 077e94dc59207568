// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// ONNX to fully-connected form. Every tensor computed from the network's
// input is tracked as an affine map of the last ReLU's output (its "base"):
// linear nodes compose onto that map with convmat's layer matrices, a ReLU
// closes the map into one Gemm layer and starts a new base. Constant
// subgraphs (the exporter's pad arithmetic) are evaluated on the way.
#include "convert.hpp"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <sstream>

namespace convmat::mlp {
namespace {

using Affine = AffineMap<Matrix>;
using Shape = std::vector<std::int64_t>;

std::string join(const Shape& shape) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ')';
  return os.str();
}

Index numel(const Shape& shape) {
  Index n = 1;
  for (auto d : shape) n = detail::checked_mul(n, d, "tensor size");
  return n;
}

/// A constant tensor (initializer, Constant node or folded subgraph).
/// Integers are held exactly in double (|v| < 2^53).
struct Tensor {
  Shape dims;
  std::vector<double> data;
};

Tensor tensor_of(const onnx::TensorProto& t) {
  Tensor out;
  out.dims.assign(t.dims().begin(), t.dims().end());
  const auto n = static_cast<std::size_t>(numel(out.dims));
  out.data.resize(n);
  const std::string& raw = t.raw_data();
  auto from_raw = [&](auto sample) {
    using T = decltype(sample);
    if (raw.size() != n * sizeof(T))
      throw conversion_error("tensor '" + t.name() + "' has " + std::to_string(raw.size()) +
                             " raw bytes, but its shape " + join(out.dims) + " needs " +
                             std::to_string(n * sizeof(T)));
    for (std::size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
      out.data[i] = static_cast<double>(v);
    }
  };
  auto from_field = [&](const auto& field) {
    if (static_cast<std::size_t>(field.size()) != n)
      throw conversion_error("tensor '" + t.name() + "' has " + std::to_string(field.size()) +
                             " values, but its shape " + join(out.dims) + " needs " + std::to_string(n));
    for (std::size_t i = 0; i < n; ++i) out.data[i] = static_cast<double>(field.Get(static_cast<int>(i)));
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: raw.empty() ? from_field(t.float_data()) : from_raw(float{}); break;
    case onnx::TensorProto::DOUBLE: raw.empty() ? from_field(t.double_data()) : from_raw(double{}); break;
    case onnx::TensorProto::INT64: raw.empty() ? from_field(t.int64_data()) : from_raw(std::int64_t{}); break;
    case onnx::TensorProto::INT32: raw.empty() ? from_field(t.int32_data()) : from_raw(std::int32_t{}); break;
    default:
      throw conversion_error("tensor '" + t.name() + "' has ONNX data type " + std::to_string(t.data_type()) +
                             "; convmat-onnx reads float, double, int32 and int64");
  }
  return out;
}

/// A tensor computed from the network's input: `map` of its base (the
/// network input or the last ReLU's output), shape without the batch.
struct Variable {
  Shape shape;
  int base = 0;
  Affine map;
  bool fresh = true;  ///< the identity of its base: nothing to emit
};

Affine identity(Index n) {
  Matrix m(n, n);
  m.setIdentity();
  return linear_map(std::move(m));
}

class Converter {
 public:
  explicit Converter(const onnx::ModelProto& model) : graph_(model.graph()) {}

  Network run() {
    for (const auto& init : graph_.initializer()) constants_[init.name()] = tensor_of(init);
    read_input();
    for (int i = 0; i < graph_.node_size(); ++i) {
      node_index_ = i;
      const auto& node = graph_.node(i);
      try {
        visit(node);
      } catch (const spec_error& e) {
        fail(e.what());
      }
    }
    return finish();
  }

 private:
  const onnx::GraphProto& graph_;
  std::map<std::string, Tensor> constants_;
  std::map<std::string, Variable> variables_;
  Network network_;
  int base_ = 0;
  std::int64_t static_batch_ = -1;  // the input's batch size if fixed
  int node_index_ = -1;

  const onnx::NodeProto& node() const { return graph_.node(node_index_); }

  /// conversion_error about the current node, with its position and name.
  [[noreturn]] void fail(const std::string& what) const {
    const auto& n = node();
    throw conversion_error("node " + std::to_string(node_index_) + " ('" + n.name() + "', " + n.op_type() +
                           "): " + what);
  }

  void read_input() {
    for (const auto& input : graph_.input()) {
      if (constants_.count(input.name())) continue;
      if (!network_.input_name.empty())
        throw conversion_error("the model has two inputs, '" + network_.input_name + "' and '" + input.name() +
                               "'; convmat-onnx takes networks with one");
      network_.input_name = input.name();
      const auto& shape = input.type().tensor_type().shape();
      if (input.type().tensor_type().elem_type() != onnx::TensorProto::FLOAT)
        throw conversion_error("input '" + input.name() + "' is not a float tensor");
      if (shape.dim_size() < 2)
        throw conversion_error("input '" + input.name() + "' must have a batch dimension and at least one more");
      if (shape.dim(0).has_dim_value()) static_batch_ = shape.dim(0).dim_value();
      Shape dims;
      for (int d = 1; d < shape.dim_size(); ++d) {
        if (!shape.dim(d).has_dim_value() || shape.dim(d).dim_value() <= 0)
          throw conversion_error("input '" + input.name() + "' dimension " + std::to_string(d) +
                                 " is not a fixed positive size; only the batch dimension may vary");
        dims.push_back(shape.dim(d).dim_value());
      }
      network_.input_shape = dims;
      variables_[input.name()] = Variable{dims, 0, identity(numel(dims)), true};
    }
    if (network_.input_name.empty()) throw conversion_error("the model has no input");
  }

  Network finish() {
    if (graph_.output_size() != 1)
      throw conversion_error("the model has " + std::to_string(graph_.output_size()) +
                             " outputs; convmat-onnx takes networks with one");
    const std::string& name = graph_.output(0).name();
    const auto it = variables_.find(name);
    if (it == variables_.end())
      throw conversion_error("the model's output '" + name + "' is not computed from its input");
    const Variable& out = it->second;
    if (out.base != base_)
      throw conversion_error("the model's output '" + name + "' skips the last ReLU; not a chain of layers");
    if (!out.fresh || network_.layers.empty()) network_.layers.push_back({out.map.matrix, out.map.bias, false});
    network_.output_name = name;
    network_.output_shape = out.shape;
    return std::move(network_);
  }

  // ---- attributes and inputs -----------------------------------------------

  const onnx::AttributeProto* attribute(const std::string& name) const {
    for (const auto& a : node().attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  std::int64_t attr_int(const std::string& name, std::int64_t fallback) const {
    const auto* a = attribute(name);
    return a ? a->i() : fallback;
  }
  double attr_float(const std::string& name, double fallback) const {
    const auto* a = attribute(name);
    return a ? a->f() : fallback;
  }
  std::string attr_string(const std::string& name, const std::string& fallback) const {
    const auto* a = attribute(name);
    return a ? a->s() : fallback;
  }
  Shape attr_ints(const std::string& name, Shape fallback) const {
    const auto* a = attribute(name);
    return a ? Shape(a->ints().begin(), a->ints().end()) : fallback;
  }

  bool has_input(int i) const { return node().input_size() > i && !node().input(i).empty(); }

  bool is_constant(const std::string& name) const { return constants_.count(name) != 0; }

  const Tensor& constant(int i) const {
    if (!has_input(i)) fail("input " + std::to_string(i) + " is missing");
    const auto it = constants_.find(node().input(i));
    if (it == constants_.end())
      fail("input " + std::to_string(i) + " ('" + node().input(i) +
           "') must be a constant (an initializer or computed from constants)");
    return it->second;
  }

  Variable& variable(int i) {
    if (!has_input(i)) fail("input " + std::to_string(i) + " is missing");
    const auto it = variables_.find(node().input(i));
    if (it == variables_.end())
      fail("input '" + node().input(i) + "' is neither the network's input nor computed from it by a supported node");
    return it->second;
  }

  void set_output(Variable v) {
    if (node().output_size() < 1) fail("has no output");
    variables_[node().output(0)] = std::move(v);
  }

  /// v followed by the affine layer `layer` (shape `shape`).
  void emit_affine(const Variable& v, const Affine& layer, Shape shape) {
    Variable out{std::move(shape), v.base, compose(layer, v.map), false};
    set_output(std::move(out));
  }

  template <int Rank>
  static std::array<Index, Rank> to_array(const Shape& s, std::size_t offset = 0) {
    std::array<Index, Rank> a{};
    for (int d = 0; d < Rank; ++d) a[d] = s.at(offset + static_cast<std::size_t>(d));
    return a;
  }
  template <int Rank>
  static Shape to_shape(Index channels, const std::array<Index, Rank>& a) {
    Shape s{channels};
    s.insert(s.end(), a.begin(), a.end());
    return s;
  }

  /// The spatial rank of a (channels, spatial...) variable, 1 to 3.
  int spatial_rank(const Variable& v) const {
    const int rank = static_cast<int>(v.shape.size()) - 1;
    if (rank < 1 || rank > 3)
      fail("input '" + node().input(0) + "' has shape (N, " + join(v.shape).substr(1) +
           "; convmat-onnx takes 1 to 3 spatial dimensions");
    return rank;
  }

  template <class F>
  void by_rank(int rank, F&& f) {
    switch (rank) {
      case 1: f(std::integral_constant<int, 1>{}); break;
      case 2: f(std::integral_constant<int, 2>{}); break;
      case 3: f(std::integral_constant<int, 3>{}); break;
      default: fail("rank " + std::to_string(rank) + " is not supported");
    }
  }

  void require_no_auto_pad() const {
    const auto pad = attr_string("auto_pad", "NOTSET");
    if (pad != "NOTSET" && pad != "VALID") fail("auto_pad=" + pad + " is not supported; export with explicit pads");
  }

  /// ONNX pads (begin..., end...) of `rank` spatial axes.
  std::pair<Shape, Shape> pads(int rank) const {
    const auto p = attr_ints("pads", Shape(static_cast<std::size_t>(2 * rank), 0));
    if (static_cast<int>(p.size()) != 2 * rank)
      fail("pads has " + std::to_string(p.size()) + " values, need " + std::to_string(2 * rank));
    return {Shape(p.begin(), p.begin() + rank), Shape(p.begin() + rank, p.end())};
  }

  static Eigen::VectorXd as_vector(const Tensor& t) {
    return Eigen::Map<const Eigen::VectorXd>(t.data.data(), static_cast<Index>(t.data.size()));
  }

  // ---- the nodes -------------------------------------------------------------

  void visit(const onnx::NodeProto& n) {
    const std::string& op = n.op_type();
    if (!n.domain().empty() && n.domain() != "ai.onnx")
      fail("domain '" + n.domain() + "' is not supported; supported: " + supported_operators);
    bool all_constant = true;
    for (int i = 0; i < n.input_size(); ++i)
      if (!n.input(i).empty() && !is_constant(n.input(i))) all_constant = false;
    if (all_constant && fold_constant(op)) return;

    if (op == "Conv") return conv();
    if (op == "ConvTranspose") return conv_transpose();
    if (op == "BatchNormalization") return batch_norm();
    if (op == "Relu") return relu();
    if (op == "AveragePool") return average_pool();
    if (op == "Pad") return pad();
    if (op == "Flatten" || op == "Reshape") return reshape(op == "Flatten");
    if (op == "Identity" || op == "Dropout") {
      Variable v = variable(0);
      return set_output(std::move(v));
    }
    if (op == "Gemm" || op == "MatMul") return gemm(op == "MatMul");
    if (op == "Add") return add();
    fail("operator " + op + " is not supported; supported: " + std::string(supported_operators));
  }

  void conv() {
    const Variable& v = variable(0);
    const Tensor& w = constant(1);
    require_no_auto_pad();
    const int rank = spatial_rank(v);
    if (static_cast<int>(w.dims.size()) != rank + 2)
      fail("weight has shape " + join(w.dims) + ", but the input " + join(v.shape) + " needs rank " +
           std::to_string(rank + 2));
    by_rank(rank, [&](auto tag) {
      constexpr int Rank = decltype(tag)::value;
      ConvSpec<Rank> spec;
      spec.in_channels = v.shape[0];
      spec.out_channels = w.dims[0];
      spec.groups = attr_int("group", 1);
      spec.input_size = to_array<Rank>(v.shape, 1);
      spec.kernel_size = to_array<Rank>(attr_ints("kernel_shape", Shape(w.dims.begin() + 2, w.dims.end())));
      spec.stride = to_array<Rank>(attr_ints("strides", Shape(Rank, 1)));
      spec.dilation = to_array<Rank>(attr_ints("dilations", Shape(Rank, 1)));
      const auto [begin, end] = pads(Rank);
      spec.set_padding(to_array<Rank>(begin), to_array<Rank>(end));
      const auto weight = as_vector(w);
      Eigen::VectorXd bias = Eigen::VectorXd::Zero(spec.out_channels);
      if (has_input(2)) bias = as_vector(constant(2));
      const Affine layer = affine_map(conv_matrix_sparse(spec, weight), bias_vector(spec, bias));
      emit_affine(v, layer, to_shape<Rank>(spec.out_channels, spec.output_size()));
    });
  }

  void conv_transpose() {
    const Variable& v = variable(0);
    const Tensor& w = constant(1);
    require_no_auto_pad();
    if (attribute("output_shape")) fail("output_shape is not supported; export with pads and output_padding");
    const int rank = spatial_rank(v);
    if (static_cast<int>(w.dims.size()) != rank + 2)
      fail("weight has shape " + join(w.dims) + ", but the input " + join(v.shape) + " needs rank " +
           std::to_string(rank + 2));
    by_rank(rank, [&](auto tag) {
      constexpr int Rank = decltype(tag)::value;
      ConvTransposeSpec<Rank> spec;
      spec.in_channels = v.shape[0];
      spec.groups = attr_int("group", 1);
      spec.out_channels = w.dims[1] * spec.groups;
      spec.input_size = to_array<Rank>(v.shape, 1);
      spec.kernel_size = to_array<Rank>(attr_ints("kernel_shape", Shape(w.dims.begin() + 2, w.dims.end())));
      spec.stride = to_array<Rank>(attr_ints("strides", Shape(Rank, 1)));
      spec.dilation = to_array<Rank>(attr_ints("dilations", Shape(Rank, 1)));
      spec.output_padding = to_array<Rank>(attr_ints("output_padding", Shape(Rank, 0)));
      const auto [begin, end] = pads(Rank);
      if (begin != end) fail("asymmetric pads " + join(begin) + " / " + join(end) + " are not supported");
      spec.padding = to_array<Rank>(begin);
      Eigen::VectorXd bias = Eigen::VectorXd::Zero(spec.out_channels);
      if (has_input(2)) bias = as_vector(constant(2));
      const Affine layer =
          affine_map(conv_transpose_matrix_sparse(spec, as_vector(w)), bias_vector(spec, bias));
      emit_affine(v, layer, to_shape<Rank>(spec.out_channels, spec.output_size()));
    });
  }

  void batch_norm() {
    const Variable& v = variable(0);
    if (attr_int("training_mode", 0) != 0) fail("training_mode=1 is not supported; export in eval mode");
    if (v.shape.empty()) fail("input has no channel dimension");
    BatchNorm<double> bn;
    bn.gamma = as_vector(constant(1));
    bn.beta = as_vector(constant(2));
    bn.mean = as_vector(constant(3));
    bn.var = as_vector(constant(4));
    bn.eps = attr_float("epsilon", 1e-5);
    if (bn.channels() != v.shape[0])
      fail("scale has " + std::to_string(bn.channels()) + " entries, but the input " + join(v.shape) + " has " +
           std::to_string(v.shape[0]) + " channels");
    emit_affine(v, batch_norm_map(bn, numel(v.shape) / v.shape[0]), v.shape);
  }

  void relu() {
    const Variable& v = variable(0);
    if (v.base != base_)
      fail("reads a tensor computed before the last ReLU; convmat-onnx takes chains of layers "
           "(a residual Add must join two paths from the same ReLU)");
    network_.layers.push_back({v.map.matrix, v.map.bias, true});
    ++base_;
    set_output(Variable{v.shape, base_, identity(numel(v.shape)), true});
  }

  void average_pool() {
    const Variable& v = variable(0);
    require_no_auto_pad();
    const int rank = spatial_rank(v);
    by_rank(rank, [&](auto tag) {
      constexpr int Rank = decltype(tag)::value;
      AvgPoolSpec<Rank> spec;
      spec.channels = v.shape[0];
      spec.input_size = to_array<Rank>(v.shape, 1);
      const auto kernel = attr_ints("kernel_shape", {});
      if (static_cast<int>(kernel.size()) != Rank) fail("kernel_shape " + join(kernel) + " does not have rank " +
                                                        std::to_string(Rank));
      spec.kernel_size = to_array<Rank>(kernel);
      spec.stride = to_array<Rank>(attr_ints("strides", Shape(Rank, 1)));
      const auto [begin, end] = pads(Rank);
      spec.padding = to_array<Rank>(begin);
      spec.padding_end = to_array<Rank>(end);
      spec.ceil_mode = attr_int("ceil_mode", 0) != 0;
      spec.count_include_pad = attr_int("count_include_pad", 0) != 0;
      emit_affine(v, linear_map(avg_pool_matrix_sparse<double>(spec)),
                  to_shape<Rank>(spec.channels, spec.output_size()));
    });
  }

  void pad() {
    const Variable& v = variable(0);
    const std::string mode = attr_string("mode", "constant");
    const Tensor& p = constant(1);
    if (has_input(2) && constant(2).data.at(0) != 0.0)
      fail("a non-zero constant_value is not supported");
    const int rank = spatial_rank(v);
    if (static_cast<int>(p.data.size()) != 2 * (rank + 2))
      fail("pads has " + std::to_string(p.data.size()) + " values, but the input (N, " + join(v.shape).substr(1) +
           " needs " + std::to_string(2 * (rank + 2)));
    Shape begin, end;
    for (int d = 0; d < rank + 2; ++d) {
      const auto b = static_cast<std::int64_t>(p.data[static_cast<std::size_t>(d)]);
      const auto e = static_cast<std::int64_t>(p.data[static_cast<std::size_t>(d + rank + 2)]);
      if (d < 2 && (b != 0 || e != 0)) fail("padding the batch or channel dimension is not supported");
      if (b < 0 || e < 0) fail("negative pads (cropping) are not supported");
      if (d >= 2) begin.push_back(b), end.push_back(e);
    }
    PaddingMode padding_mode = PaddingMode::zeros;
    if (mode == "reflect") padding_mode = PaddingMode::reflect;
    else if (mode == "edge") padding_mode = PaddingMode::replicate;
    else if (mode == "wrap") padding_mode = PaddingMode::circular;
    else if (mode != "constant") fail("mode '" + mode + "' is not supported");
    by_rank(rank, [&](auto tag) {
      constexpr int Rank = decltype(tag)::value;
      PadSpec<Rank> spec;
      spec.channels = v.shape[0];
      spec.input_size = to_array<Rank>(v.shape, 1);
      spec.pad_begin = to_array<Rank>(begin);
      spec.pad_end = to_array<Rank>(end);
      spec.mode = padding_mode;
      emit_affine(v, linear_map(pad_matrix_sparse<double>(spec)), to_shape<Rank>(spec.channels, spec.output_size()));
    });
  }

  /// Flatten (axis 1) or Reshape that keeps the batch dimension first: the
  /// identity on the flattened vector, only the shape changes.
  void reshape(bool flatten) {
    Variable v = variable(0);
    const Index n = numel(v.shape);
    if (flatten) {
      if (attr_int("axis", 1) != 1) fail("axis=" + std::to_string(attr_int("axis", 1)) + " is not supported (only 1)");
      v.shape = {n};
      return set_output(std::move(v));
    }
    Shape target(constant(1).data.begin(), constant(1).data.end());
    if (target.empty()) fail("shape is empty");
    const bool batch_kept = target[0] == 0 || target[0] == -1 || (static_batch_ > 0 && target[0] == static_batch_);
    if (!batch_kept) fail("shape " + join(target) + " does not keep the batch dimension first");
    Shape rest(target.begin() + 1, target.end());
    Index known = 1;
    int unknown = -1;
    for (std::size_t d = 0; d < rest.size(); ++d) {
      if (rest[d] == 0) {
        if (d >= v.shape.size()) fail("shape " + join(target) + " copies a dimension the input " + join(v.shape) + " lacks");
        rest[d] = v.shape[d];
      }
      if (rest[d] == -1) {
        if (unknown >= 0 || target[0] == -1) fail("shape " + join(target) + " has more than one -1");
        unknown = static_cast<int>(d);
      } else {
        known *= rest[d];
      }
    }
    if (unknown >= 0) {
      if (known <= 0 || n % known != 0) fail("shape " + join(target) + " does not fit " + join(v.shape));
      rest[static_cast<std::size_t>(unknown)] = n / known;
      known = n;
    }
    if (known != n) fail("shape " + join(target) + " has " + std::to_string(known) + " elements per sample, but " +
                         join(v.shape) + " has " + std::to_string(n));
    v.shape = rest;
    set_output(std::move(v));
  }

  /// Gemm (Y = alpha A B + beta C, B maybe transposed) or MatMul (Y = A B)
  /// with A the variable, one sample per row: the layer matrix is B^T.
  void gemm(bool matmul) {
    const Variable& v = variable(0);
    if (v.shape.size() != 1) fail("input " + join(v.shape) + " is not (N, features); Flatten it first");
    const Tensor& b = constant(1);
    if (!matmul && attr_int("transA", 0) != 0) fail("transA=1 is not supported");
    const bool trans_b = !matmul && attr_int("transB", 0) != 0;
    if (b.dims.size() != 2) fail("B has shape " + join(b.dims) + ", not a matrix");
    const Index k = trans_b ? b.dims[1] : b.dims[0], m = trans_b ? b.dims[0] : b.dims[1];
    if (k != v.shape[0]) fail("B has shape " + join(b.dims) + ", but the input has " + std::to_string(v.shape[0]) + " features");
    const double alpha = matmul ? 1.0 : attr_float("alpha", 1.0), beta = matmul ? 0.0 : attr_float("beta", 1.0);
    // B's data is row-major (dims[0] x dims[1]); the layer matrix is alpha * B^T (m x k).
    using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const RowMajor> bm(b.data.data(), b.dims[0], b.dims[1]);
    const RowMajor t = trans_b ? RowMajor(alpha * bm) : RowMajor(alpha * bm.transpose());
    Eigen::VectorXd bias = Eigen::VectorXd::Zero(m);
    if (!matmul && has_input(2)) bias = beta * broadcast(constant(2), {m});
    emit_affine(v, affine_map(Matrix(t.sparseView()), bias), {m});
  }

  /// A constant broadcast (numpy rules) to a (N, shape...) tensor, flattened.
  Eigen::VectorXd broadcast(const Tensor& c, const Shape& shape) const {
    Shape full{1};
    full.insert(full.end(), shape.begin(), shape.end());
    if (c.dims.size() > full.size())
      fail("constant of shape " + join(c.dims) + " does not broadcast to (N, " + join(shape).substr(1));
    Shape cd(full.size() - c.dims.size(), 1);
    cd.insert(cd.end(), c.dims.begin(), c.dims.end());
    for (std::size_t d = 0; d < full.size(); ++d)
      if (cd[d] != 1 && cd[d] != full[d])
        fail("constant of shape " + join(c.dims) + " does not broadcast to (N, " + join(shape).substr(1));
    const Index n = numel(shape);
    Eigen::VectorXd out(n);
    for (Index i = 0; i < n; ++i) {
      Index rest = i, source = 0, stride = 1;
      for (std::size_t d = full.size(); d-- > 1;) {
        const Index coordinate = rest % full[d];
        rest /= full[d];
        if (cd[d] != 1) source += coordinate * stride;
        stride *= cd[d];
      }
      out(i) = c.data[static_cast<std::size_t>(source)];
    }
    return out;
  }

  void add() {
    const bool first = variables_.count(node().input(0)) != 0;
    const bool second = has_input(1) && variables_.count(node().input(1)) != 0;
    if (first && second) {
      const Variable& a = variable(0);
      const Variable& b = variable(1);
      if (a.base != b.base) fail("adds tensors from different ReLUs; convmat-onnx takes chains of layers");
      if (a.shape != b.shape) fail("adds shapes " + join(a.shape) + " and " + join(b.shape) + "; broadcasting two computed tensors is not supported");
      Affine sum{a.map.matrix + b.map.matrix, a.map.bias + b.map.bias};
      return set_output(Variable{a.shape, a.base, std::move(sum), false});
    }
    const int which = first ? 0 : 1;
    const Variable& v = variable(which);
    const Eigen::VectorXd bias = broadcast(constant(1 - which), v.shape);
    Affine shifted{v.map.matrix, v.map.bias + bias};
    set_output(Variable{v.shape, v.base, std::move(shifted), false});
  }

  // ---- constant folding --------------------------------------------------------

  /// Evaluates a node whose inputs are all constants; false if `op` is not
  /// one the folder knows.
  bool fold_constant(const std::string& op) {
    Tensor out;
    if (op == "Constant") {
      if (const auto* a = attribute("value")) out = tensor_of(a->t());
      else if (const auto* f = attribute("value_float")) out = Tensor{{}, {static_cast<double>(f->f())}};
      else if (const auto* i = attribute("value_int")) out = Tensor{{}, {static_cast<double>(i->i())}};
      else if (const auto* is = attribute("value_ints"))
        out = Tensor{{is->ints_size()}, std::vector<double>(is->ints().begin(), is->ints().end())};
      else fail("this Constant form is not supported");
    } else if (op == "ConstantOfShape") {
      const Tensor& shape = constant(0);
      out.dims.assign(shape.data.begin(), shape.data.end());
      double value = 0;
      if (const auto* a = attribute("value")) value = tensor_of(a->t()).data.at(0);
      out.data.assign(static_cast<std::size_t>(numel(out.dims)), value);
    } else if (op == "Identity" || op == "Cast") {
      out = constant(0);
      const auto to = attr_int("to", onnx::TensorProto::FLOAT);
      if (op == "Cast" && to != onnx::TensorProto::FLOAT && to != onnx::TensorProto::DOUBLE)
        for (auto& x : out.data) x = std::trunc(x);
    } else if (op == "Reshape") {
      out = constant(0);
      const Tensor& s = constant(1);
      Shape dims(s.data.begin(), s.data.end());
      Index known = 1;
      int unknown = -1;
      for (std::size_t d = 0; d < dims.size(); ++d) {
        if (dims[d] == 0) dims[d] = constant(0).dims.at(d);
        if (dims[d] == -1) unknown = static_cast<int>(d);
        else known *= dims[d];
      }
      if (unknown >= 0) dims[static_cast<std::size_t>(unknown)] = static_cast<Index>(out.data.size()) / known;
      if (numel(dims) != static_cast<Index>(out.data.size())) fail("shape " + join(dims) + " does not fit");
      out.dims = dims;
    } else if (op == "Unsqueeze") {
      out = constant(0);
      const Tensor& axes = constant(1);
      Shape dims = out.dims;
      std::vector<std::int64_t> sorted(axes.data.begin(), axes.data.end());
      const auto rank = static_cast<std::int64_t>(dims.size() + sorted.size());
      for (auto& a : sorted) a = a < 0 ? a + rank : a;
      std::sort(sorted.begin(), sorted.end());
      for (auto a : sorted) dims.insert(dims.begin() + a, 1);
      out.dims = dims;
    } else if (op == "Concat") {
      const auto& first = constant(0);
      auto axis = attr_int("axis", 0);
      if (axis < 0) axis += static_cast<std::int64_t>(first.dims.size());
      out.dims = first.dims;
      out.dims.at(static_cast<std::size_t>(axis)) = 0;
      Index outer = 1;
      for (std::int64_t d = 0; d < axis; ++d) outer *= first.dims[static_cast<std::size_t>(d)];
      for (int i = 0; i < node().input_size(); ++i) out.dims[static_cast<std::size_t>(axis)] += constant(i).dims.at(static_cast<std::size_t>(axis));
      for (Index o = 0; o < outer; ++o)
        for (int i = 0; i < node().input_size(); ++i) {
          const Tensor& t = constant(i);
          const Index chunk = static_cast<Index>(t.data.size()) / outer;
          out.data.insert(out.data.end(), t.data.begin() + o * chunk, t.data.begin() + (o + 1) * chunk);
        }
    } else if (op == "Transpose") {
      const Tensor& in = constant(0);
      const auto rank = in.dims.size();
      Shape perm(rank);
      std::iota(perm.rbegin(), perm.rend(), 0);
      perm = attr_ints("perm", perm);
      for (std::size_t d = 0; d < rank; ++d) out.dims.push_back(in.dims.at(static_cast<std::size_t>(perm[d])));
      out.data = gather(in, out.dims, [&](const Shape& index) {
        Shape source(rank);
        for (std::size_t d = 0; d < rank; ++d) source[static_cast<std::size_t>(perm[d])] = index[d];
        return source;
      });
    } else if (op == "Slice") {
      const Tensor& in = constant(0);
      const auto rank = static_cast<std::int64_t>(in.dims.size());
      const Tensor& starts = constant(1);
      const Tensor& ends = constant(2);
      Shape axes(starts.data.size()), steps(starts.data.size(), 1);
      std::iota(axes.begin(), axes.end(), 0);
      if (has_input(3)) axes.assign(constant(3).data.begin(), constant(3).data.end());
      if (has_input(4)) steps.assign(constant(4).data.begin(), constant(4).data.end());
      Shape first(static_cast<std::size_t>(rank), 0), step(static_cast<std::size_t>(rank), 1);
      out.dims = in.dims;
      for (std::size_t i = 0; i < axes.size(); ++i) {
        const auto a = static_cast<std::size_t>(axes[i] < 0 ? axes[i] + rank : axes[i]);
        const double dim = static_cast<double>(in.dims.at(a));
        double s = starts.data.at(i), e = ends.data.at(i);
        const auto st = steps.at(i);
        if (s < 0) s += dim;
        if (e < 0) e += dim;
        if (st > 0) {
          s = std::clamp(s, 0.0, dim);
          e = std::clamp(e, 0.0, dim);
        } else {
          s = std::clamp(s, 0.0, dim - 1);
          e = std::clamp(e, -1.0, dim - 1);
        }
        const double count = st > 0 ? std::ceil((e - s) / static_cast<double>(st)) : std::ceil((s - e) / static_cast<double>(-st));
        out.dims[a] = std::max<std::int64_t>(0, static_cast<std::int64_t>(count));
        first[a] = static_cast<std::int64_t>(s);
        step[a] = st;
      }
      out.data = gather(in, out.dims, [&](const Shape& index) {
        Shape source(index.size());
        for (std::size_t d = 0; d < index.size(); ++d) source[d] = first[d] + index[d] * step[d];
        return source;
      });
    } else {
      return false;
    }
    for (int i = 0; i < node().output_size(); ++i) constants_[node().output(i)] = out;
    return true;
  }

  /// out[index] = in[source(index)] over every multi-index of `dims`.
  static std::vector<double> gather(const Tensor& in, const Shape& dims,
                                    const std::function<Shape(const Shape&)>& source) {
    std::vector<double> out(static_cast<std::size_t>(numel(dims)));
    Shape index(dims.size(), 0);
    for (std::size_t flat = 0; flat < out.size(); ++flat) {
      Index rest = static_cast<Index>(flat);
      for (std::size_t d = dims.size(); d-- > 0;) {
        index[d] = rest % dims[d];
        rest /= dims[d];
      }
      const Shape s = source(index);
      Index offset = 0;
      for (std::size_t d = 0; d < s.size(); ++d) offset = offset * in.dims[d] + s[d];
      out[flat] = in.data.at(static_cast<std::size_t>(offset));
    }
    return out;
  }
};

void add_tensor(onnx::GraphProto& graph, const std::string& name, const Shape& dims, const std::vector<float>& data) {
  auto* t = graph.add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) t->add_dims(d);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float)));
}

void set_type(onnx::ValueInfoProto& value, const std::string& name, Index features) {
  value.set_name(name);
  auto* type = value.mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("N");
  type->mutable_shape()->add_dim()->set_dim_value(features);
}

}  // namespace

Eigen::MatrixXd Network::operator()(const Eigen::MatrixXd& x) const {
  Eigen::MatrixXd y = x;
  for (const auto& layer : layers) {
    Eigen::MatrixXd next = layer.matrix * y;
    next.colwise() += layer.bias;
    if (layer.relu) next = next.cwiseMax(0.0);
    y = std::move(next);
  }
  return y;
}

Network from_onnx(const onnx::ModelProto& model) { return Converter(model).run(); }

onnx::ModelProto load_model(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw conversion_error("cannot open '" + path + "'");
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&in)) throw conversion_error("'" + path + "' is not an ONNX model");
  return model;
}

onnx::ModelProto to_onnx(const Network& network) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("convmat-onnx");
  model.set_producer_version(CONVMAT_VERSION_STRING);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  auto& graph = *model.mutable_graph();
  graph.set_name("convmat_fully_connected");
  graph.set_doc_string("The fully-connected form of a CNN, made by convmat-onnx: Gemm and Relu only. "
                       "Input and output are the original tensors flattened in C order per sample.");
  set_type(*graph.add_input(), network.input_name, network.layers.front().matrix.cols());
  std::string previous = network.input_name;
  for (std::size_t i = 0; i < network.layers.size(); ++i) {
    const auto& layer = network.layers[i];
    const auto id = std::to_string(i);
    detail::check_dense_size(layer.matrix.rows(), layer.matrix.cols(), sizeof(float),
                             "a layer's dense matrix");
    const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dense =
        Eigen::MatrixXd(layer.matrix).cast<float>();
    add_tensor(graph, "weight_" + id, {dense.rows(), dense.cols()},
               std::vector<float>(dense.data(), dense.data() + dense.size()));
    const Eigen::VectorXf bias = layer.bias.cast<float>();
    add_tensor(graph, "bias_" + id, {bias.size()}, std::vector<float>(bias.data(), bias.data() + bias.size()));
    const bool last = i + 1 == network.layers.size();
    auto* gemm = graph.add_node();
    gemm->set_op_type("Gemm");
    gemm->set_name("gemm_" + id);
    gemm->add_input(previous);
    gemm->add_input("weight_" + id);
    gemm->add_input("bias_" + id);
    previous = last && !layer.relu ? network.output_name : "gemm_" + id;
    gemm->add_output(previous);
    auto* trans_b = gemm->add_attribute();
    trans_b->set_name("transB");
    trans_b->set_type(onnx::AttributeProto::INT);
    trans_b->set_i(1);
    if (layer.relu) {
      auto* relu = graph.add_node();
      relu->set_op_type("Relu");
      relu->set_name("relu_" + id);
      relu->add_input(previous);
      previous = last ? network.output_name : "relu_" + id;
      relu->add_output(previous);
    }
  }
  set_type(*graph.add_output(), network.output_name, network.layers.back().matrix.rows());
  return model;
}

void save_model(const onnx::ModelProto& model, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  if (!out || !model.SerializeToOstream(&out)) throw conversion_error("cannot write '" + path + "'");
}

std::string matrix_market(const Network& network, std::size_t index) {
  const auto& layer = network.layers.at(index);
  std::ostringstream os;
  os.precision(9);
  os << "%%MatrixMarket matrix coordinate real general\n"
     << "% convmat-onnx layer " << index + 1 << " of " << network.layers.size() << ": y = "
     << (layer.relu ? "relu(T x + b)" : "T x + b") << "; columns 1.." << layer.matrix.cols()
     << " are T, column " << layer.matrix.cols() + 1 << " is b\n";
  const Index bias_nonzeros = (layer.bias.array() != 0.0).count();
  os << layer.matrix.rows() << ' ' << layer.matrix.cols() + 1 << ' ' << layer.matrix.nonZeros() + bias_nonzeros
     << '\n';
  for (Index r = 0; r < layer.matrix.rows(); ++r) {
    for (Matrix::InnerIterator it(layer.matrix, r); it; ++it)
      os << r + 1 << ' ' << it.col() + 1 << ' ' << it.value() << '\n';
    if (layer.bias(r) != 0.0) os << r + 1 << ' ' << layer.matrix.cols() + 1 << ' ' << layer.bias(r) << '\n';
  }
  return os.str();
}

}  // namespace convmat::mlp
