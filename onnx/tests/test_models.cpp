// convmat-onnx against PyTorch. The models of tests/data/onnx (exported by
// torch.onnx.export, tools/make_onnx_models.py) and of
// tests/data/onnx/conventions (built node by node with onnx.helper, every
// convention and opset, tools/make_onnx_conventions.py) are converted; the
// written ONNX file is parsed back, checked to hold only Gemm and Relu
// nodes, and evaluated in float32 on the stored inputs: it reproduces
// torch's outputs to 1e-5. The double-precision network and the Matrix
// Market layers do too. Then the shape of what the lowering builds: one
// Gemm per ReLU layer, values known non-negative carried as themselves,
// parallel branches sharing a layer, MaxPool's tree depth.
#include <algorithm>

#include "support.hpp"

using namespace convmat_onnx_test;
namespace mlp = convmat::mlp;

namespace {

/// Converts `path`, writes and reads back the Gemm/Relu model, runs it on
/// the stored input and compares with the stored output.
void check_model(const std::string& directory, const std::string& name) {
  INFO("model " << directory << "/" << name << ".onnx");
  const auto network = mlp::from_onnx(mlp::load_model(directory + "/" + name + ".onnx"));
  const std::string written = work_dir + "/" + name + "_fully_connected.onnx";
  mlp::save_model(mlp::to_onnx(network), written);
  const auto model = mlp::load_model(written);

  const FloatMatrix x = read_tensor_file(directory + "/" + name + ".input.pb");
  const FloatMatrix expected = read_tensor_file(directory + "/" + name + ".output.pb");
  const FloatMatrix y = run_fully_connected(model, x);
  const double error = relative_error(y, expected);
  INFO("float32 Gemm/Relu model: relative error " << error << ", " << network.layers.size() << " layers");
  CHECK(error <= 1e-5);

  // The double-precision network and its Matrix Market layers agree too.
  const FloatMatrix in_double = network(x.cast<double>().transpose()).transpose().cast<float>();
  CHECK(relative_error(in_double, expected) <= 1e-5);
  Eigen::MatrixXd z = x.cast<double>().transpose();
  for (std::size_t i = 0; i < network.layers.size(); ++i) {
    const auto [t, b] = read_matrix_market(mlp::matrix_market(network, i));
    z = (t * z).colwise() + b;
    network.layers[i].activation.apply(z);
  }
  CHECK(relative_error(FloatMatrix(z.transpose().cast<float>()), expected) <= 1e-5);
  std::remove(written.c_str());
}

/// tests/data/onnx/conventions/cases.txt: NAME and what it checks, per line.
std::vector<std::pair<std::string, std::string>> convention_cases() {
  std::ifstream in(data_dir + "/conventions/cases.txt");
  REQUIRE(in.good());
  std::vector<std::pair<std::string, std::string>> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.find(' ');
    cases.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return cases;
}

}  // namespace

TEST_CASE("the fully-connected form reproduces PyTorch's outputs on the exported models", "[onnx]") {
  for (const char* name : {"lenet", "batchnorm_pool", "cnn1d", "cnn3d", "transposed"}) check_model(data_dir, name);
  // F.pad(x, (1, 1), value=0.5).squeeze(2) with a fixed batch: torch writes
  // the squeeze as Shape -> Gather -> Equal -> If, folded here.
  for (const char* name : {"pad_squeeze_opset11", "pad_squeeze_opset13", "pad_squeeze_opset17"})
    check_model(data_dir, name);
}

TEST_CASE("every ONNX convention, attribute and input forms, opsets 9 to 17, matches torch", "[onnx][conventions]") {
  const auto cases = convention_cases();
  CHECK(cases.size() >= 60);
  std::map<std::string, int> operators;
  for (const auto& [name, description] : cases) {
    INFO(description);
    check_model(data_dir + "/conventions", name);
    const auto model = mlp::load_model(data_dir + "/conventions/" + name + ".onnx");
    for (const auto& node : model.graph().node()) ++operators[node.op_type()];
  }
  // The cases exercise every operator of the table but the ones the exported models cover.
  for (const auto& op : mlp::supported_operators()) {
    INFO("operator " << op.name);
    CHECK(operators.count(std::string(op.name)) == 1);
  }
}

TEST_CASE("every ReLU ends one Gemm layer", "[onnx]") {
  const auto network = mlp::from_onnx(mlp::load_model(data_dir + "/lenet.onnx"));
  // conv-relu-pool-conv-relu-flatten-fc-relu-fc: three ReLUs, four Gemms.
  REQUIRE(network.layers.size() == 4);
  CHECK(network.layers[0].matrix.rows() == 4 * 12 * 12);
  CHECK(network.layers[0].matrix.cols() == 12 * 12);
  CHECK(network.layers[0].activation == mlp::Activation::relu());
  CHECK(network.layers[1].matrix.rows() == 6 * 4 * 4);
  CHECK(network.layers[2].matrix.rows() == 16);
  CHECK(network.layers[3].activation.kind == mlp::Activation::Kind::none);
  CHECK(network.output_shape == std::vector<std::int64_t>{10});
}

TEST_CASE("what crosses a ReLU layer: itself when non-negative, relu(v) - relu(-v) otherwise", "[onnx][structure]") {
  // Relu, Conv, Relu, Conv, Add the first Relu's output, Relu: the skip is a
  // ReLU's output, so it crosses the middle layer as one row per value.
  const auto residual = mlp::from_onnx(mlp::load_model(data_dir + "/conventions/residual_add_opset13.onnx"));
  REQUIRE(residual.layers.size() == 3);
  CHECK(residual.layers[0].matrix.rows() == 2 * 5 * 5);              // relu(x)
  CHECK(residual.layers[1].matrix.rows() == 2 * 5 * 5 + 2 * 5 * 5);  // the conv's ReLUs, the skip carried once
  CHECK(residual.layers[2].activation == mlp::Activation::relu());
  // The network's input may be negative: added after two ReLU layers it
  // crosses each as relu(x) and relu(-x).
  const auto input = mlp::from_onnx(mlp::load_model(data_dir + "/conventions/residual_input_opset13.onnx"));
  REQUIRE(input.layers.size() == 3);
  CHECK(input.layers[0].matrix.rows() == 2 * 4 * 4 + 2 * (2 * 4 * 4));
  CHECK(input.layers[1].matrix.rows() == 2 * 4 * 4 + 2 * (2 * 4 * 4));
  CHECK(input.layers[2].activation.kind == mlp::Activation::Kind::none);
}

TEST_CASE("parallel branches share their ReLU layers; MaxPool takes one layer per halving", "[onnx][structure]") {
  // Concat of conv-relu (a) and conv-relu-maxpool 3x3 (b) and x: both ReLUs
  // in layer 0; b's 9-element windows need 4 more layers (9, 5, 3, 2, 1).
  const auto network = mlp::from_onnx(mlp::load_model(data_dir + "/conventions/concat_branches_opset11.onnx"));
  CHECK(network.layers.size() == 1 + 4 + 1);
  // A 2x2 pooling window after a ReLU: two levels; a global pool over 20: five.
  for (const auto& [name, layers] : {std::pair<std::string, std::size_t>{"global_max_pool_opset13", 5 + 1},
                                     {"max_pool2d_notset_opset9", 4 + 1}}) {
    INFO(name);
    CHECK(mlp::from_onnx(mlp::load_model(data_dir + "/conventions/" + name + ".onnx")).layers.size() == layers);
  }
}

TEST_CASE("a network without ReLUs is one Gemm; one that ends in a ReLU has no Gemm after it", "[onnx][structure]") {
  const auto linear = mlp::from_onnx(mlp::load_model(data_dir + "/conventions/normalize_sub_div_opset9.onnx"));
  REQUIRE(linear.layers.size() == 1);
  CHECK(linear.layers[0].activation.kind == mlp::Activation::Kind::none);
  CHECK(linear.layers[0].matrix.nonZeros() == 3 * 4 * 4);  // a diagonal
  ModelBuilder b({1, 6});
  b.node("Relu", {"x"}, {"r"});
  b.node("Relu", {"r"}, {"y"});  // known non-negative: nothing more
  const auto relu = mlp::from_onnx(b.build());
  REQUIRE(relu.layers.size() == 1);
  CHECK(relu.layers[0].activation == mlp::Activation::relu());
  CHECK(relu.layers[0].matrix.rows() == 6);
}
