// convmat-onnx against PyTorch: every model of tests/data/onnx (made by
// tools/make_onnx_models.py with torch.onnx.export) is converted, the
// written ONNX file is parsed back, checked to hold only Gemm and Relu
// nodes, and evaluated with Eigen's dense products in float32 on the stored
// inputs: it reproduces PyTorch's stored outputs to 1e-5. The Matrix Market
// form does too. Each kind of unsupported node gives an error that names it.
#include <onnx/onnx_pb.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "convert.hpp"
#include "support/catch.hpp"

namespace {

using FloatMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
const std::string data_dir = CONVMAT_ONNX_DATA_DIR;
const std::string work_dir = CONVMAT_ONNX_WORK_DIR;
const char* const models[] = {"lenet", "batchnorm_pool", "cnn1d", "cnn3d", "transposed"};

/// A float32 tensor proto as a matrix: one row per sample (the first
/// dimension), the rest flattened in C order.
FloatMatrix read_tensor(const onnx::TensorProto& t) {
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

FloatMatrix read_tensor_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  onnx::TensorProto t;
  REQUIRE(t.ParseFromIstream(&in));
  return read_tensor(t);
}

/// Evaluates a Gemm/Relu-only model on X (one sample per row) in float32,
/// the way an ONNX runtime would: Y = X W^T + b (transB = 1), max(Y, 0).
FloatMatrix run_fully_connected(const onnx::ModelProto& model, const FloatMatrix& x) {
  const auto& graph = model.graph();
  std::map<std::string, FloatMatrix> values;
  for (const auto& init : graph.initializer()) values[init.name()] = read_tensor(init);
  REQUIRE(graph.input_size() == 1);
  values[graph.input(0).name()] = x;
  for (const auto& node : graph.node()) {
    INFO("node " << node.name() << " (" << node.op_type() << ")");
    REQUIRE((node.op_type() == "Gemm" || node.op_type() == "Relu"));
    const FloatMatrix& in = values.at(node.input(0));
    if (node.op_type() == "Relu") {
      values[node.output(0)] = in.cwiseMax(0.0f);
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

double relative_error(const FloatMatrix& a, const FloatMatrix& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double scale = std::max(1.0, static_cast<double>(b.cwiseAbs().maxCoeff()));
  return static_cast<double>((a - b).cwiseAbs().maxCoeff()) / scale;
}

/// Reads a Matrix Market file of [T b] back.
std::pair<Eigen::MatrixXd, Eigen::VectorXd> read_matrix_market(const std::string& text) {
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

}  // namespace

TEST_CASE("the fully-connected form reproduces PyTorch's outputs on every test model", "[onnx]") {
  for (const char* name : models) {
    INFO("model " << name);
    const auto network = convmat::mlp::from_onnx(convmat::mlp::load_model(data_dir + "/" + name + ".onnx"));
    const std::string written = work_dir + "/" + name + "_fully_connected.onnx";
    convmat::mlp::save_model(convmat::mlp::to_onnx(network), written);
    const auto model = convmat::mlp::load_model(written);

    const FloatMatrix x = read_tensor_file(data_dir + "/" + name + ".input.pb");
    const FloatMatrix expected = read_tensor_file(data_dir + "/" + name + ".output.pb");
    const FloatMatrix y = run_fully_connected(model, x);
    const double error = relative_error(y, expected);
    INFO("float32 Gemm/Relu model: relative error " << error);
    CHECK(error <= 1e-5);
    CHECK(model.graph().input(0).name() == "input");
    CHECK(model.graph().output(0).name() == "output");

    // The double-precision network and its Matrix Market layers agree too.
    const FloatMatrix in_double = network(x.cast<double>().transpose()).transpose().cast<float>();
    CHECK(relative_error(in_double, expected) <= 1e-5);
    Eigen::MatrixXd z = x.cast<double>().transpose();
    for (std::size_t i = 0; i < network.layers.size(); ++i) {
      const auto [t, b] = read_matrix_market(convmat::mlp::matrix_market(network, i));
      z = (t * z).colwise() + b;
      if (network.layers[i].relu) z = z.cwiseMax(0.0);
    }
    CHECK(relative_error(FloatMatrix(z.transpose().cast<float>()), expected) <= 1e-5);
  }
}

TEST_CASE("every ReLU ends one Gemm layer", "[onnx]") {
  const auto network = convmat::mlp::from_onnx(convmat::mlp::load_model(data_dir + "/lenet.onnx"));
  // conv-relu-pool-conv-relu-flatten-fc-relu-fc: three ReLUs, four Gemms.
  REQUIRE(network.layers.size() == 4);
  CHECK(network.layers[0].matrix.rows() == 4 * 12 * 12);
  CHECK(network.layers[0].matrix.cols() == 12 * 12);
  CHECK(network.layers[0].relu);
  CHECK(network.layers[1].matrix.rows() == 6 * 4 * 4);
  CHECK(network.layers[2].matrix.rows() == 16);
  CHECK(!network.layers[3].relu);
  CHECK(network.output_shape == std::vector<std::int64_t>{10});
}

namespace {

/// The lenet model with node `index` changed by `edit`; converting it must
/// fail with a message containing every one of `expected`.
template <class Edit>
void check_error(int index, Edit edit, const std::vector<std::string>& expected) {
  auto model = convmat::mlp::load_model(data_dir + "/lenet.onnx");
  edit(*model.mutable_graph()->mutable_node(index));
  try {
    (void)convmat::mlp::from_onnx(model);
    FAIL("no error for node " << index);
  } catch (const convmat::mlp::conversion_error& e) {
    const std::string message = e.what();
    INFO(message);
    for (const auto& part : expected) CHECK(message.find(part) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("unsupported nodes give an error naming them and their position", "[onnx][errors]") {
  // lenet: 0 Conv, 1 Relu, 2 Constant, 3 Pad, 4 AveragePool, 5 Conv, 6 Relu, 7 Flatten, 8 Gemm, 9 Relu, 10 Gemm
  const auto model = convmat::mlp::load_model(data_dir + "/lenet.onnx");
  REQUIRE(model.graph().node(1).op_type() == "Relu");
  REQUIRE(model.graph().node(4).op_type() == "AveragePool");
  for (const char* op : {"MaxPool", "Sigmoid", "Tanh", "Softmax", "LeakyRelu", "Mul", "Resize", "Shape"}) {
    check_error(1, [&](onnx::NodeProto& n) { n.set_op_type(op); },
                {"node 1 ('" + model.graph().node(1).name() + "', " + op + ")", "operator " + std::string(op) +
                 " is not supported"});
  }
  check_error(4, [](onnx::NodeProto& n) { n.set_op_type("MaxPool"); }, {"node 4", "MaxPool", "not supported"});
  check_error(0, [](onnx::NodeProto& n) { n.set_domain("com.microsoft"); }, {"node 0", "com.microsoft"});
  check_error(0, [](onnx::NodeProto& n) {
    auto* a = n.add_attribute();
    a->set_name("auto_pad");
    a->set_s("SAME_UPPER");
  }, {"node 0", "auto_pad=SAME_UPPER"});
  check_error(3, [](onnx::NodeProto& n) {
    for (auto& a : *n.mutable_attribute())
      if (a.name() == "mode") a.set_s("mirror");
    if (n.attribute_size() == 0) {
      auto* a = n.add_attribute();
      a->set_name("mode");
      a->set_s("mirror");
    }
  }, {"node 3", "Pad", "mode 'mirror'"});
  check_error(5, [](onnx::NodeProto& n) { n.set_input(1, "no_such_weight"); },
              {"node 5", "no_such_weight", "must be a constant"});
  const std::string first_conv = model.graph().node(0).output(0);  // before the first ReLU
  check_error(6, [&](onnx::NodeProto& n) { n.set_input(0, first_conv); },
              {"node 6", "computed before the last ReLU"});
}

TEST_CASE("the command's errors: a file that is not ONNX", "[onnx][errors]") {
  const std::string path = work_dir + "/not_a_model.onnx";
  std::ofstream(path) << "hello";
  CHECK_THROWS_WITH(convmat::mlp::load_model(path), Catch::Matchers::Contains("not an ONNX model"));
  CHECK_THROWS_WITH(convmat::mlp::load_model(work_dir + "/missing.onnx"), Catch::Matchers::Contains("cannot open"));
}
