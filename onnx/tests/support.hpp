// convmat-onnx's tests: the written model run the way an ONNX runtime
// would (float32 Gemm and Relu), tensors read from .pb files, and a small
// builder for models made node by node.
#pragma once

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../convert.hpp"
#include "support/catch.hpp"

namespace convmat_onnx_test {

using FloatMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
inline const std::string data_dir = CONVMAT_ONNX_DATA_DIR;
inline const std::string work_dir = CONVMAT_ONNX_WORK_DIR;

/// A float32 tensor proto as a matrix: one row per sample (the first
/// dimension), the rest flattened in C order.
inline FloatMatrix read_tensor(const onnx::TensorProto& t) {
  REQUIRE(t.data_type() == onnx::TensorProto::FLOAT);
  REQUIRE(t.dims_size() >= 1);
  Eigen::Index rows = t.dims(0), cols = 1;
  for (int d = 1; d < t.dims_size(); ++d) cols *= t.dims(d);
  FloatMatrix m(rows, cols);
  if (!t.raw_data().empty()) {
    REQUIRE(t.raw_data().size() == static_cast<std::size_t>(m.size()) * sizeof(float));
    std::memcpy(m.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    REQUIRE(t.float_data_size() == m.size());
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = t.float_data(static_cast<int>(i));
  }
  return m;
}

inline FloatMatrix read_tensor_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  onnx::TensorProto t;
  REQUIRE(t.ParseFromIstream(&in));
  return read_tensor(t);
}

/// Evaluates a Gemm/Relu-only model on X (one sample per row) in float32,
/// the way an ONNX runtime would: Y = X W^T + b (transB = 1), max(Y, 0).
/// Checks that it holds nothing else.
/// A float attribute of `node`, or `fallback`.
inline float float_attribute(const onnx::NodeProto& node, const std::string& name, float fallback) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return a.f();
  return fallback;
}

/// An activation node of the written model on a batch (one sample per
/// row), by ONNX's definitions written out here again, independently of
/// convmat-onnx's own, in float.
inline FloatMatrix activation_node(const onnx::NodeProto& node, const FloatMatrix& in) {
  const std::string& op = node.op_type();
  const float alpha = float_attribute(node, "alpha", op == "Selu" ? 1.67326319217681884765625f : 1.0f);
  const float gamma = float_attribute(node, "gamma", 1.05070102214813232421875f);
  const auto each = [&](auto f) { return FloatMatrix(in.unaryExpr(f)); };
  if (op == "Relu") return in.cwiseMax(0.0f);
  if (op == "Sigmoid") return each([](float v) { return 1 / (1 + std::exp(-v)); });
  if (op == "Tanh") return each([](float v) { return std::tanh(v); });
  if (op == "Softplus") return each([](float v) { return v > 20 ? v : std::log(std::exp(v) + 1); });
  if (op == "Softsign") return each([](float v) { return v / (1 + std::abs(v)); });
  if (op == "Elu") return each([&](float v) { return v < 0 ? alpha * (std::exp(v) - 1) : v; });
  if (op == "Selu") return each([&](float v) { return v > 0 ? gamma * v : gamma * (alpha * std::exp(v) - alpha); });
  if (op == "Celu")
    return each([&](float v) { return std::max(0.0f, v) + std::min(0.0f, alpha * (std::exp(v / alpha) - 1)); });
  if (op == "HardSwish") return each([](float v) { return v * std::max(0.0f, std::min(1.0f, v / 6 + 0.5f)); });
  if (op == "Exp") return each([](float v) { return std::exp(v); });
  if (op == "Erf") return each([](float v) { return std::erf(v); });
  if (op == "Softmax" || op == "LogSoftmax") {
    FloatMatrix out(in.rows(), in.cols());
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      const Eigen::ArrayXf e = (in.row(r).array() - in.row(r).maxCoeff()).exp().transpose();
      if (op == "Softmax") out.row(r) = (e / e.sum()).transpose().matrix();
      else out.row(r) = (in.row(r).array() - in.row(r).maxCoeff() - std::log(e.sum())).matrix();
    }
    return out;
  }
  FAIL("the written model has a " << op << " node, which is neither Gemm nor an activation");
  return in;
}

inline FloatMatrix run_fully_connected(const onnx::ModelProto& model, const FloatMatrix& x) {
  const auto& graph = model.graph();
  std::map<std::string, FloatMatrix> values;
  for (const auto& init : graph.initializer()) values[init.name()] = read_tensor(init);
  REQUIRE(graph.input_size() == 1);
  values[graph.input(0).name()] = x;
  for (const auto& node : graph.node()) {
    INFO("node " << node.name() << " (" << node.op_type() << ")");
    const FloatMatrix& in = values.at(node.input(0));
    if (node.op_type() != "Gemm") {
      values[node.output(0)] = activation_node(node, in);
      continue;
    }
    REQUIRE(node.attribute_size() == 1);
    REQUIRE(node.attribute(0).name() == "transB");
    REQUIRE(node.attribute(0).i() == 1);
    const FloatMatrix& w = values.at(node.input(1));
    const FloatMatrix& b = values.at(node.input(2));  // (out) read as out x 1
    REQUIRE(w.cols() == in.cols());
    FloatMatrix y = in * w.transpose();
    y.rowwise() += b.transpose().row(0);
    values[node.output(0)] = y;
  }
  REQUIRE(graph.output_size() == 1);
  return values.at(graph.output(0).name());
}

/// The largest difference relative to the largest expected magnitude (at least 1).
inline double relative_error(const FloatMatrix& a, const FloatMatrix& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double scale = std::max(1.0, static_cast<double>(b.cwiseAbs().maxCoeff()));
  return static_cast<double>((a - b).cwiseAbs().maxCoeff()) / scale;
}

/// Reads a Matrix Market file of [T b] back.
inline std::pair<Eigen::MatrixXd, Eigen::VectorXd> read_matrix_market(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  REQUIRE(line == "%%MatrixMarket matrix coordinate real general");
  while (in.peek() == '%') std::getline(in, line);
  Eigen::Index rows = 0, cols = 0, entries = 0;
  in >> rows >> cols >> entries;
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(rows, cols);
  for (Eigen::Index k = 0; k < entries; ++k) {
    Eigen::Index r = 0, c = 0;
    double v = 0;
    REQUIRE(static_cast<bool>(in >> r >> c >> v));
    a(r - 1, c - 1) = v;
  }
  return {a.leftCols(cols - 1), a.col(cols - 1)};
}

/// A model made node by node: input "x" (batch first), output "y" unless
/// said otherwise.
class ModelBuilder {
 public:
  explicit ModelBuilder(std::vector<std::int64_t> input_shape, int opset = 13, bool dynamic_batch = true) {
    auto* o = model_.add_opset_import();
    o->set_domain("");
    o->set_version(opset);
    model_.set_ir_version(8);
    input("x", input_shape, dynamic_batch);
  }

  ModelBuilder& input(const std::string& name, const std::vector<std::int64_t>& shape, bool dynamic_batch = true,
                      int type = onnx::TensorProto::FLOAT) {
    auto* v = model_.mutable_graph()->add_input();
    v->set_name(name);
    auto* tensor = v->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(type);
    for (std::size_t d = 0; d < shape.size(); ++d) {
      auto* dim = tensor->mutable_shape()->add_dim();
      if (d == 0 && dynamic_batch)
        dim->set_dim_param("N");
      else
        dim->set_dim_value(shape[d]);
    }
    return *this;
  }

  /// A float initializer; values default to small distinct numbers.
  ModelBuilder& constant(const std::string& name, const std::vector<std::int64_t>& dims, std::vector<float> values = {}) {
    std::int64_t n = 1;
    for (auto d : dims) n *= d;
    if (values.empty())
      for (std::int64_t i = 0; i < n; ++i) values.push_back(0.25f + 0.125f * static_cast<float>(i % 7) - 0.0625f * static_cast<float>(i % 3));
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
    return *this;
  }

  ModelBuilder& integers(const std::string& name, const std::vector<std::int64_t>& values) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<std::int64_t>(values.size()));
    for (auto v : values) t->add_int64_data(v);
    return *this;
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs, const std::string& name = "") {
    auto* n = model_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(name.empty() ? op + std::to_string(model_.graph().node_size() - 1) : name);
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    return *n;
  }

  onnx::ModelProto build(const std::string& output = "y") const {
    onnx::ModelProto m = model_;
    auto* v = m.mutable_graph()->add_output();
    v->set_name(output);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    return m;
  }

  onnx::ModelProto& model() { return model_; }

 private:
  onnx::ModelProto model_;
};

inline onnx::NodeProto& attribute(onnx::NodeProto& n, const std::string& name, std::int64_t value) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
  return n;
}
inline onnx::NodeProto& attribute(onnx::NodeProto& n, const std::string& name, double value) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(static_cast<float>(value));
  return n;
}
inline onnx::NodeProto& attribute(onnx::NodeProto& n, const std::string& name, const char* value) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(value);
  return n;
}
inline onnx::NodeProto& attribute(onnx::NodeProto& n, const std::string& name, std::initializer_list<std::int64_t> values) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto v : values) a->add_ints(v);
  return n;
}

/// The message of the exception converting `model` throws (of type Error), or a failure.
template <class Error = convmat::mlp::conversion_error>
std::string refusal(const onnx::ModelProto& model) {
  try {
    (void)convmat::mlp::from_onnx(model);
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("the model was converted; a refusal was expected");
  return "";
}

}  // namespace convmat_onnx_test
