// Every refusal of convmat-onnx, each on a model made for it: the message
// names the node (index, name), the operator, the attribute and why, and
// the sizes where size is the reason.
#include "support.hpp"

using namespace convmat_onnx_test;
namespace mlp = convmat::mlp;

namespace {

/// Checks that `message` contains every one of `parts`.
void check_message(const std::string& message, const std::vector<std::string>& parts) {
  INFO(message);
  for (const auto& part : parts) {
    INFO("expected: " << part);
    CHECK(message.find(part) != std::string::npos);
  }
}

/// x (N, 2, 5, 5) through one node of `op` (more inputs and attributes by `edit`).
template <class Edit>
onnx::ModelProto one_node(const std::string& op, Edit edit, std::vector<std::int64_t> shape = {1, 2, 5, 5}) {
  ModelBuilder b(shape);
  auto& n = b.node(op, {"x"}, {"y"}, "the_node");
  edit(b, n);
  return b.build();
}

}  // namespace

TEST_CASE("operators without an exact form of Gemms and activations are refused, saying why", "[onnx][errors]") {
  for (const char* op : {"Log", "Sqrt", "Gelu", "Sin", "Mish"})
    check_message(refusal(one_node(op, [](auto&, auto&) {})),
                  {"node 0 ('the_node', " + std::string(op) + "): operator " + op +
                   " is not supported: it is not piecewise linear, and not one of the activations"});
  check_message(refusal(one_node("Floor", [](auto&, auto&) {})), {"Floor", "it is not continuous"});
  check_message(refusal(one_node("InstanceNormalization", [](auto& b, auto& n) {
                  n.add_input("s"), n.add_input("b");
                  b.constant("s", {2}).constant("b", {2});
                })),
                {"InstanceNormalization", "divides by statistics of its own input"});
  check_message(refusal(one_node("ArgMax", [](auto&, auto&) {})), {"ArgMax", "its output is an index"});
  check_message(refusal(one_node("LSTM", [](auto&, auto&) {})), {"LSTM", "control flow and recurrence"});
  check_message(refusal(one_node("NoSuchOp", [](auto&, auto&) {})),
                {"node 0 ('the_node', NoSuchOp): operator NoSuchOp is not supported; supported: Abs, Add, "});
  check_message(refusal(one_node("Relu", [](auto&, auto& n) { n.set_domain("com.microsoft"); })),
                {"node 0 ('the_node', Relu): domain 'com.microsoft' is not supported"});
}

TEST_CASE("products and quotients of data are refused", "[onnx][errors]") {
  ModelBuilder b({1, 4});
  b.node("Relu", {"x"}, {"r"});
  b.node("Mul", {"x", "r"}, {"y"}, "square");
  check_message(refusal(b.build()), {"node 1 ('square', Mul): multiplies two tensors computed from the input ('x', 'r')",
                                     "not piecewise linear"});
  ModelBuilder d({1, 4});
  d.constant("one", {1}, {1.0f});
  d.node("Div", {"one", "x"}, {"y"}, "inverse");
  check_message(refusal(d.build()), {"node 0 ('inverse', Div): divides by a tensor computed from the input ('x')"});
  ModelBuilder z({1, 4});
  z.constant("c", {4}, {1, 2, 0, 4});
  z.node("Div", {"x", "c"}, {"y"}, "by_zero");
  check_message(refusal(z.build()), {"node 0 ('by_zero', Div): divides by zero: element 2 of 'c' is 0"});
  ModelBuilder m({1, 4});
  m.node("MatMul", {"x", "x"}, {"y"}, "mm");
  check_message(refusal(m.build()), {"node 0 ('mm', MatMul): B ('x') is computed from the input"});
  ModelBuilder g({1, 4});
  g.node("Gemm", {"x", "x"}, {"y"}, "gemm");
  check_message(refusal(g.build()), {"node 0 ('gemm', Gemm): B ('x') is computed from the input"});
}

TEST_CASE("Conv and ConvTranspose refusals name the attribute and the sizes", "[onnx][errors]") {
  const auto conv = [](auto edit) {
    return one_node("Conv", [&](ModelBuilder& b, onnx::NodeProto& n) {
      n.add_input("w");
      b.constant("w", {3, 2, 3, 3});
      edit(b, n);
    });
  };
  check_message(refusal(conv([](auto&, auto& n) { attribute(n, "auto_pad", "SAME"); })),
                {"node 0 ('the_node', Conv): attribute 'auto_pad': 'SAME' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER"});
  check_message(refusal(conv([](auto&, auto& n) { attribute(n, "kernel_shape", {2, 2}); })),
                {"attribute 'kernel_shape': (2, 2) disagrees with the weight's shape (3, 2, 3, 3)"});
  check_message(refusal(conv([](auto&, auto& n) { attribute(n, "pads", {1, 1}); })),
                {"attribute 'pads': has 2 values, but the input has 2 spatial dimensions (needs 4)"});
  check_message(refusal(conv([](auto&, auto& n) { attribute(n, "group", std::int64_t{2}); })),
                {"weight has shape (3, 2, 3, 3) and group=2, but the input has 2 channels"});
  check_message(refusal(conv([](auto&, auto& n) { attribute(n, "group", 1.5); })),
                {"attribute 'group': is a float, not an integer"});
  check_message(refusal(conv([](auto&, auto& n) { attribute(n, "dilations", {4, 4}); })),
                {"node 0 ('the_node', Conv): kernel does not fit: input_size=(5, 5), kernel_size=(3, 3), dilation=(4, 4)",
                 "give output (-3, -3)"});
  check_message(refusal(one_node("Conv", [](auto& b, auto& n) {
                  n.add_input("w");
                  b.constant("w", {3, 2, 3});
                })),
                {"weight has shape (3, 2, 3), but the input (N, 2, 5, 5) needs a weight of rank 4"});
  check_message(refusal(one_node("Conv", [](auto&, auto& n) { n.add_input("w_missing"); })),
                {"node 0 ('the_node', Conv): input 1 ('w_missing') must be a constant"});
  check_message(refusal(one_node("Conv", [](auto&, auto& n) { n.add_input("x"); })),
                {"input 1 ('x') must be a constant (an initializer or computed from constants), not computed from the "
                 "network's input"});
  check_message(refusal(one_node("Conv", [](auto& b, auto& n) {
                  n.add_input("w"), n.add_input("b");
                  b.constant("w", {3, 2, 3, 3}).constant("b", {4});
                })),
                {"bias has 4 values, but the layer has 3 output channels"});

  const auto transposed = [](auto edit) {
    return one_node("ConvTranspose", [&](ModelBuilder& b, onnx::NodeProto& n) {
      n.add_input("w");
      b.constant("w", {2, 3, 3, 3});
      attribute(n, "strides", {2, 2});
      edit(b, n);
    });
  };
  check_message(refusal(transposed([](auto&, auto& n) {
                  attribute(n, "output_shape", {12, 12});
                  attribute(n, "auto_pad", "SAME_UPPER");
                })),
                {"attribute 'output_shape': (12, 12) is larger than the layer's unpadded output (11, 11) under "
                 "auto_pad=SAME_UPPER"});
  check_message(refusal(transposed([](auto&, auto& n) { attribute(n, "output_shape", {11, 11, 11}); })),
                {"attribute 'output_shape': (11, 11, 11) does not have 2 spatial sizes"});
  check_message(refusal(transposed([](auto&, auto& n) { attribute(n, "output_padding", {2, 2}); })),
                {"output_padding must be smaller than either stride or dilation: output_padding=(2, 2), stride=(2, 2)"});
  check_message(refusal(one_node("ConvTranspose", [](auto& b, auto& n) {
                  n.add_input("w");
                  b.constant("w", {3, 3, 3, 3});
                })),
                {"weight has shape (3, 3, 3, 3), but the input has 2 channels (a ConvTranspose weight is (in_channels"});
}

TEST_CASE("pooling refusals", "[onnx][errors]") {
  check_message(refusal(one_node("AveragePool", [](auto&, auto& n) {
                  attribute(n, "kernel_shape", {2, 2});
                  attribute(n, "dilations", {2, 1});
                })),
                {"node 0 ('the_node', AveragePool): attribute 'dilations': (2, 1): dilated average pooling is not supported"});
  check_message(refusal(one_node("AveragePool", [](auto&, auto& n) {
                  attribute(n, "kernel_shape", {2, 2});
                  attribute(n, "pads", {3, 0, 0, 0});
                })),
                {"node 0 ('the_node', AveragePool): pooling window 0 of dimension 0 covers only padding (its average "
                 "would be 0 / 0)"});
  check_message(refusal(one_node("MaxPool", [](auto&, auto&) {})),
                {"node 0 ('the_node', MaxPool): attribute 'kernel_shape': is required"});
  check_message(refusal(one_node("MaxPool", [](auto&, auto& n) { attribute(n, "kernel_shape", {2, 2, 2}); })),
                {"attribute 'kernel_shape': has 3 values, but the input has 2 spatial dimensions"});
  ModelBuilder b({1, 2, 4, 4});
  attribute(b.node("MaxPool", {"x"}, {"p", "indices"}, "pool"), "kernel_shape", {2, 2});
  b.node("Add", {"p", "indices"}, {"y"});
  check_message(refusal(b.build()), {"node 1 ('Add1', Add): input 1 ('indices') is MaxPool's Indices output",
                                     "(output 1 of node 0 ('pool', MaxPool))"});
  check_message(refusal(one_node("MaxPool", [](auto&, auto& n) { attribute(n, "kernel_shape", {2}); }, {1, 8})),
                {"input has shape (N, 8); this operator takes (N, channels, spatial...) with 1 to 3 spatial dimensions"});
}

TEST_CASE("what would merge, move or pad the batch dimension is refused", "[onnx][errors]") {
  check_message(refusal(one_node("Flatten", [](auto&, auto& n) { attribute(n, "axis", std::int64_t{2}); })),
                {"node 0 ('the_node', Flatten): attribute 'axis': 2 would merge the batch dimension with others"});
  check_message(refusal(one_node("Reshape", [](auto& b, auto& n) {
                  n.add_input("s");
                  b.integers("s", {-1, -1, 5});
                })),
                {"shape (-1, -1, 5) has more than one -1"});
  check_message(refusal(one_node("Reshape", [](auto& b, auto& n) {
                  n.add_input("s");
                  b.integers("s", {2, 25});
                })),
                {"node 0 ('the_node', Reshape): shape (2, 25) does not keep the batch dimension first"});
  check_message(refusal(one_node("Reshape", [](auto& b, auto& n) {
                  n.add_input("s");
                  b.integers("s", {0, 7, 7});
                })),
                {"shape (0, 7, 7) has 49 elements per sample, but the input (N, 2, 5, 5) has 50"});
  check_message(refusal(one_node("Transpose", [](auto&, auto& n) { attribute(n, "perm", {1, 0, 2, 3}); })),
                {"attribute 'perm': (1, 0, 2, 3) moves the batch dimension"});
  check_message(refusal(one_node("Transpose", [](auto&, auto& n) { attribute(n, "perm", {0, 1, 1, 2}); })),
                {"attribute 'perm': (0, 1, 1, 2) is not a permutation of the 4 axes"});
  check_message(refusal(one_node("Concat", [](auto&, auto& n) {
                  n.add_input("x");
                  attribute(n, "axis", std::int64_t{0});
                })),
                {"attribute 'axis': 0 would concatenate along the batch dimension"});
  check_message(refusal(one_node("Squeeze", [](auto&, auto& n) { attribute(n, "axes", {0}); }, {1, 2, 5, 5})),
                {"squeezing axis 0 would remove the batch dimension"});
  check_message(refusal(one_node("Squeeze", [](auto& b, auto& n) {
                  n.add_input("axes");
                  b.integers("axes", {2});
                })),
                {"axis 2 has size 5, not 1"});
  check_message(refusal(one_node("Unsqueeze", [](auto& b, auto& n) {
                  n.add_input("axes");
                  b.integers("axes", {0});
                })),
                {"unsqueezing axis 0 would move the batch dimension"});
  check_message(refusal(one_node("Pad", [](auto& b, auto& n) {
                  n.add_input("pads");
                  b.integers("pads", {1, 0, 0, 0, 0, 0, 0, 0});
                })),
                {"node 0 ('the_node', Pad): pads (1, 0, 0, 0, 0, 0, 0, 0) pad the batch dimension"});
  check_message(refusal(one_node("Slice", [](auto& b, auto& n) {
                  n.add_input("s"), n.add_input("e"), n.add_input("a");
                  b.integers("s", {1}).integers("e", {2}).integers("a", {0});
                })),
                {"slices the batch dimension"});
  check_message(refusal(one_node("Gemm", [](auto& b, auto& n) {
                  n.add_input("B");
                  b.constant("B", {4, 3});
                  attribute(n, "transA", std::int64_t{1});
                }, {1, 4})),
                {"attribute 'transA': 1 would transpose the batch into the features"});
  check_message(refusal(one_node("Gemm", [](auto& b, auto& n) {
                  n.add_input("B");
                  b.constant("B", {5, 3});
                }, {1, 4})),
                {"B has shape (5, 3), but A has 4 features"});
  check_message(refusal(one_node("Add", [](auto& b, auto& n) {
                  n.add_input("c");
                  b.constant("c", {3, 2, 5, 5});
                })),
                {"a constant varies along the batch dimension (broadcast shape (3, 2, 5, 5))"});
  check_message(refusal(one_node("Add", [](auto& b, auto& n) {
                  n.add_input("c");
                  b.constant("c", {1, 1, 2, 5, 5});
                })),
                {"the constant of shape (1, 1, 2, 5, 5) has more dimensions than the data", "move the batch dimension"});
  check_message(refusal(one_node("Shape", [](auto&, auto&) {})), {"export with a fixed batch size"});
}

TEST_CASE("other operator refusals: Pad modes, Clip bounds, training mode, missing inputs", "[onnx][errors]") {
  check_message(refusal(one_node("Pad", [](auto& b, auto& n) {
                  n.add_input("pads");
                  b.integers("pads", {0, 0, 1, 1, 0, 0, 1, 1});
                  attribute(n, "mode", "mirror");
                })),
                {"node 0 ('the_node', Pad): attribute 'mode': 'mirror' is not constant, reflect, edge or wrap"});
  check_message(refusal(one_node("Pad", [](auto& b, auto& n) {
                  n.add_input("pads");
                  b.integers("pads", {0, 0, 5, 0, 0, 0, 0, 0});
                  attribute(n, "mode", "reflect");
                })),
                {"reflect pads (0, 0, 5, 0, 0, 0, 0, 0) must be smaller than axis 2 (size 5)"});
  check_message(refusal(one_node("Pad", [](auto& b, auto& n) {
                  n.add_input("pads");
                  b.integers("pads", {0, 0, 1, 1});
                })),
                {"pads has 4 values, but the input (N, 2, 5, 5) needs 8"});
  check_message(refusal(one_node("Pad", [](auto&, auto&) {})), {"pads are missing (input 1 from opset 11"});
  check_message(refusal(one_node("Pad", [](auto& b, auto& n) {
                  n.add_input("pads");
                  b.integers("pads", {0, 0, -3, 0, 0, 0, -3, 0});
                })),
                {"leave nothing of axis 2 (size 5)"});
  check_message(refusal(one_node("Clip", [](auto& b, auto& n) {
                  n.add_input("lo");
                  b.constant("lo", {2}, {0, 1});
                })),
                {"node 0 ('the_node', Clip): the min bound has shape (2), not a scalar"});
  check_message(refusal(one_node("PRelu", [](auto&, auto& n) { n.add_input("x"); })),
                {"slope ('x') is computed from the input; it must be a constant"});
  check_message(refusal(one_node("BatchNormalization", [](auto& b, auto& n) {
                  for (const char* p : {"g", "b", "m", "v"}) n.add_input(p), b.constant(p, {2});
                  attribute(n, "training_mode", std::int64_t{1});
                })),
                {"attribute 'training_mode': 1 normalizes by the batch's statistics; export in eval mode"});
  check_message(refusal(one_node("BatchNormalization", [](auto& b, auto& n) {
                  for (const char* p : {"g", "b", "m", "v"}) n.add_input(p), b.constant(p, {3});
                })),
                {"scale has 3 values, but the input (N, 2, 5, 5) has 2 channels"});
  check_message(refusal(one_node("BatchNormalization", [](auto& b, auto& n) {
                  for (const char* p : {"g", "b", "m"}) n.add_input(p), b.constant(p, {2});
                  n.add_input("v");
                  b.constant("v", {2}, {-1, 1});
                })),
                {"batch norm needs var + eps > 0: channel 0 has var=-1"});
  ModelBuilder dropout({1, 4});
  auto& d = dropout.node("Dropout", {"x", "", "training"}, {"y"});
  (void)d;
  auto* t = dropout.model().mutable_graph()->add_initializer();
  t->set_name("training");
  t->set_data_type(onnx::TensorProto::BOOL);
  t->add_int32_data(1);
  check_message(refusal(dropout.build()), {"training_mode is true: dropout is random; export in eval mode"});
  check_message(refusal(one_node("Relu", [](auto&, auto& n) { n.set_input(0, "nowhere"); })),
                {"node 0 ('the_node', Relu): input 'nowhere' is neither the network's input nor computed from it"});
  ModelBuilder constant({1, 4});
  constant.constant("c", {4});
  constant.node("Relu", {"c"}, {"r"});
  constant.node("Add", {"x", "r"}, {"y"});
  CHECK_NOTHROW(mlp::from_onnx(constant.build()));  // Relu of a constant is folded
  ModelBuilder folded({1, 4});
  folded.constant("c", {4});
  folded.node("Conv", {"c", "c"}, {"y"}, "conv_of_constants");
  check_message(refusal(folded.build()),
                {"node 0 ('conv_of_constants', Conv): input 0 ('c') is a constant, and convmat-onnx evaluates Conv only "
                 "on tensors computed from the network's input"});
}

TEST_CASE("graphs that are not one network of one input and one output are refused", "[onnx][errors]") {
  ModelBuilder two({1, 4});
  two.input("z", {1, 4});
  two.node("Add", {"x", "z"}, {"y"});
  check_message(refusal(two.build()), {"the model has two inputs, 'x' and 'z'; convmat-onnx takes networks with one"});
  ModelBuilder outputs({1, 4});
  outputs.node("Relu", {"x"}, {"y"});
  auto m = outputs.build();
  *m.mutable_graph()->add_output() = m.graph().output(0);
  check_message(refusal(m), {"the model has 2 outputs; convmat-onnx takes networks with one"});
  ModelBuilder dynamic({1, 4});
  auto model = dynamic.build();
  model.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_param("C");
  check_message(refusal(model), {"input 'x' dimension 1 is not a fixed positive size; only the batch dimension may vary"});
  ModelBuilder integer({1, 4});
  auto ints = integer.build();
  ints.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  check_message(refusal(ints), {"input 'x' is not a float tensor"});
  ModelBuilder flat({4}, 13, false);
  check_message(refusal(flat.build("x")), {"input 'x' has 1 dimensions; it must have a batch dimension and at least one more"});
  ModelBuilder nothing({1, 4});
  nothing.constant("c", {1, 4});
  check_message(refusal(nothing.build("c")), {"the model's output 'c' is a constant, not computed from its input"});
  check_message(refusal(nothing.build("missing")), {"the model's output 'missing' is not computed by any node"});
}

TEST_CASE("tensors whose data does not match their shape or type are refused", "[onnx][errors]") {
  ModelBuilder b({1, 2, 5, 5});
  b.node("Conv", {"x", "w"}, {"y"});
  auto model = b.build();
  auto* w = model.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  for (int d : {3, 2, 3, 3}) w->add_dims(d);
  w->set_raw_data(std::string(10, '\0'));
  check_message(refusal(model), {"initializer 'w' has 10 bytes of raw data, but its shape (3, 2, 3, 3) needs 54 x 4"});
  w->clear_raw_data();
  w->add_float_data(1.0f);
  check_message(refusal(model), {"initializer 'w' has 1 values, but its shape (3, 2, 3, 3) needs 54"});
  w->set_data_type(onnx::TensorProto::STRING);
  check_message(refusal(model), {"initializer 'w' has ONNX data type 8"});
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->set_dims(0, -3);
  check_message(refusal(model), {"initializer 'w' has a negative dimension: shape (-3, 2, 3, 3)"});
  w->set_dims(0, 3);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  check_message(refusal(model), {"initializer 'w' is stored in external data; read the model with load_model(path)"});
}

TEST_CASE("a composed map beyond max_dense_bytes() is a memory_limit_error naming the node and the sizes",
          "[onnx][errors]") {
  ModelBuilder b({1, 1, 40, 40});
  b.constant("w", {1, 1, 3, 3});
  b.node("Conv", {"x", "w"}, {"c"}, "small_conv");
  attribute(b.node("Flatten", {"c"}, {"f"}), "axis", std::int64_t{1});
  b.constant("B", {1444, 1444});
  b.node("MatMul", {"f", "B"}, {"y"}, "dense_matmul");
  const auto model = b.build();
  const auto previous = convmat::max_dense_bytes();
  // B (16.7 MB in double) and its matrix (25.0 MB) fit, the composed map does not.
  convmat::set_max_dense_bytes(26 << 20);
  std::string message;
  try {
    (void)mlp::from_onnx(model);
  } catch (const convmat::memory_limit_error& e) {
    message = e.what();
  }
  check_message(message, {"node 2 ('dense_matmul', MatMul): the composed map (1444 x 1600) could have up to",
                          "more than max_dense_bytes() = 27262976"});
  // With 1 MiB, B itself is refused as it is read, naming who reads it.
  convmat::set_max_dense_bytes(1 << 20);
  message.clear();
  try {
    (void)mlp::from_onnx(model);
  } catch (const convmat::memory_limit_error& e) {
    message = e.what();
  }
  convmat::set_max_dense_bytes(previous);
  check_message(message, {"initializer 'B' (read by node 2 ('dense_matmul', MatMul)): shape (1444, 1444) is 2085136 "
                          "values, 16681088 bytes in double, more than max_dense_bytes() = 1048576"});

  // 1.2e18 rows of 12 bytes pass int64: the message's byte count was cast
  // from double to long long, which is undefined there (fuzz_onnx:
  // tests/fuzz/corpus/onnx/regression_pad_bytes_past_int64).
  std::string past_int64;
  try {
    (void)mlp::from_onnx(one_node("Pad", [](auto& pad, auto& n) {
      n.add_input("pads");
      pad.integers("pads", {0, 1 << 20, 1 << 20, 1 << 20, 0, 0, 0, 0});
    }));
  } catch (const convmat::memory_limit_error& e) {
    past_int64 = e.what();
  }
  check_message(past_int64, {"node 0 ('the_node', Pad): a selection of 1152934698793566258 x 50 would have",
                             "(more than 2^63 bytes in memory)"});

  // A folded constant of 2^60 values: its byte count was 2^60 * 8 in
  // Index, which overflows (fuzz_onnx:
  // tests/fuzz/corpus/onnx/regression_constant_bytes_past_int64).
  ModelBuilder huge({1, 4});
  huge.integers("s", {std::int64_t{1} << 60});
  huge.node("ConstantOfShape", {"s"}, {"c"}, "huge_constant");
  huge.node("Add", {"x", "c"}, {"y"});
  std::string constant;
  try {
    (void)mlp::from_onnx(huge.build());
  } catch (const convmat::memory_limit_error& e) {
    constant = e.what();
  }
  check_message(constant, {"node 0 ('huge_constant', ConstantOfShape): the constant of shape (1152921504606846976) would be",
                           "entries of 8 bytes, more than max_dense_bytes()"});
}

TEST_CASE("the remaining refusals, one model each", "[onnx][errors]") {
  struct Case {
    onnx::ModelProto model;
    std::string message;
  };
  const auto with = [](const std::string& op, auto edit, std::vector<std::int64_t> shape = {1, 2, 5, 5}) {
    return one_node(op, edit, std::move(shape));
  };
  std::vector<Case> cases = {
      {with("MatMul", [](auto& b, auto& n) { n.add_input("B"), b.constant("B", {2, 5, 3}); }),
       "B has shape (2, 5, 3); convmat-onnx takes a matrix or a vector"},
      {with("MatMul", [](auto& b, auto& n) { n.add_input("B"), b.constant("B", {4, 3}); }),
       "A has shape (N, 2, 5, 5), but B has shape (4, 3): the last dimension of A must be 4"},
      {with("Gemm", [](auto& b, auto& n) { n.add_input("B"), b.constant("B", {4}); }, {1, 4}),
       "B has shape (4), not a matrix"},
      {with("Gemm", [](auto& b, auto& n) { n.add_input("B"), b.constant("B", {4, 3}); }),
       "A has shape (N, 2, 5, 5), not (N, features); Flatten it first"},
      {with("Concat", [](auto& b, auto& n) { n.add_input("c"), b.constant("c", {1, 3, 4, 5}); attribute(n, "axis", std::int64_t{2}); }),
       "input 1 has shape (N, 3, 4, 5), which does not match (N, 2, 5, 5) but along axis 2"},
      {with("Concat", [](auto& b, auto& n) { n.add_input("c"), b.constant("c", {2, 2, 5, 5}); attribute(n, "axis", std::int64_t{1}); }),
       "the constant input 1 has shape (2, 2, 5, 5): it needs a batch dimension of 1"},
      {with("Concat", [](auto&, auto& n) { n.add_input("x"); }), "attribute 'axis': is required"},
      {with("Concat", [](auto&, auto& n) { n.add_input("x"), attribute(n, "axis", std::int64_t{4}); }),
       "axis 4 is out of range for rank 4"},
      {with("Unsqueeze", [](auto& b, auto& n) { n.add_input("axes"), b.integers("axes", {2, -4}); }),
       "axes (2, -4) repeat an axis"},
      {with("Unsqueeze", [](auto&, auto&) {}), "axes are missing"},
      {with("Reshape", [](auto&, auto&) {}), "the target shape is missing or empty"},
      {with("Reshape", [](auto& b, auto& n) { n.add_input("s"), b.integers("s", {0, 7, -1}); }),
       "shape (0, 7, -1) does not fit (N, 2, 5, 5)"},
      {with("Reshape", [](auto& b, auto& n) { n.add_input("s"), b.integers("s", {0, 0, 0, 0, 0}); }),
       "shape (0, 0, 0, 0, 0) copies dimension 4, which the input (N, 2, 5, 5) lacks"},
      {with("Slice", [](auto& b, auto& n) {
         n.add_input("s"), n.add_input("e"), n.add_input("a"), n.add_input("st");
         b.integers("s", {0}).integers("e", {2}).integers("a", {2}).integers("st", {0});
       }),
       "step 0 on axis 2"},
      {with("Slice", [](auto& b, auto& n) {
         n.add_input("s"), n.add_input("e"), n.add_input("a");
         b.integers("s", {4}).integers("e", {2}).integers("a", {3});
       }),
       "leaves nothing of axis 3"},
      {with("Max", [](auto& b, auto& n) { n.add_input("c"), b.constant("c", {3, 1, 1, 1}); }),
       "a constant varies along the batch dimension"},
      {with("Add", [](auto& b, auto& n) { n.add_input("c"), b.constant("c", {3}); }),
       "shapes (1, 2, 5, 5) and (3) do not broadcast"},
      {with("Clip", [](auto&, auto& n) { attribute(n, "min", std::nan("")); }, {1, 4}),
       "the min bound is not a number"},
      {with("ConvTranspose", [](auto& b, auto& n) {
         n.add_input("w"), b.constant("w", {2, 3, 3, 3});
         attribute(n, "output_padding", {1});
       }),
       "attribute 'output_padding': has 1 values, but the input has 2 spatial dimensions"},
      {with("GlobalMaxPool", [](auto&, auto&) {}, {1, 4}), "input has shape (N, 4), no spatial dimension"},
      {with("GlobalAveragePool", [](auto&, auto&) {}, {1, 4}), "input has shape (N, 4), no spatial dimension"},
  };
  for (const auto& c : cases) check_message(refusal(c.model), {"node 0 ('the_node', ", c.message});

  ModelBuilder sparse({1, 4});
  sparse.node("Relu", {"x"}, {"y"});
  auto model = sparse.build();
  auto* s = model.mutable_graph()->add_sparse_initializer();
  s->mutable_values()->set_name("s");
  check_message(refusal(model), {"the model has sparse initializers ('s', ...); convmat-onnx reads dense ones"});
}

TEST_CASE("integers taken from constants: int64's extremes saturate, NaN and fractions are refused", "[onnx][errors]") {
  constexpr auto most = std::numeric_limits<std::int64_t>::max(), least = std::numeric_limits<std::int64_t>::min();
  // Exporters' "to the end" is 2^63 - 1, which is 2^63 in double; a step of
  // -2^63 was negated (fuzz_onnx: tests/fuzz/corpus/onnx/regression_slice_step_int64_min).
  for (const bool folded : {false, true}) {
    ModelBuilder b({1, 2, 5, 5});
    b.integers("s", {most, 0}).integers("e", {least, most}).integers("a", {3, 2}).integers("st", {least, 1});
    if (folded) {
      b.constant("c", {1, 2, 5, 5});
      b.node("Slice", {"c", "s", "e", "a", "st"}, {"cs"}, "the_node");
      b.node("Add", {"x", "cs"}, {"y"});
    } else {
      b.node("Slice", {"x", "s", "e", "a", "st"}, {"y"}, "the_node");
    }
    const auto network = mlp::from_onnx(b.build());
    CHECK(network.output_shape == std::vector<std::int64_t>(folded ? std::vector<std::int64_t>{2, 5, 5}
                                                                   : std::vector<std::int64_t>{2, 5, 1}));
  }
  ModelBuilder nan({1, 2, 5, 5});
  nan.constant("shape", {2}, {0, std::nanf("")});
  nan.node("Reshape", {"x", "shape"}, {"y"}, "the_node");
  check_message(refusal(nan.build()), {"node 0 ('the_node', Reshape): takes integers from a constant, but one of its values is nan"});
  ModelBuilder half({1, 2, 5, 5});
  half.constant("shape", {2}, {0, 49.5f});
  half.node("Reshape", {"x", "shape"}, {"y"}, "the_node");
  check_message(refusal(half.build()), {"takes integers from a constant, but one of its values is 49.5"});
  // Sizes whose product overflows int64, each no larger than a sample.
  ModelBuilder wide({1, 50});
  wide.integers("shape", {0, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, -1});
  wide.node("Reshape", {"x", "shape"}, {"y"}, "the_node");
  check_message(refusal(wide.build()), {"node 0 ('the_node', Reshape): shape (0, 50, 50"});
}

TEST_CASE("comparisons and If on data are data-dependent control flow; on constants they are evaluated",
          "[onnx][errors]") {
  for (const char* op : {"Equal", "Less", "GreaterOrEqual", "Where"})
    check_message(refusal(one_node(op, [](auto& b, auto& n) {
                    n.add_input("c");
                    if (n.op_type() == "Where") n.add_input("c");
                    b.constant("c", {1});
                  })),
                  {"operator " + std::string(op) + " is not supported: it compares or selects by values computed from "
                   "the network's input: data-dependent control flow"});
  // If on a condition computed from the input.
  ModelBuilder b({1, 3});
  b.constant("zero", {1}, {0.0f});
  b.node("Less", {"x", "zero"}, {"c"});
  b.node("If", {"c"}, {"y"}, "branch");
  check_message(refusal(b.build()), {"node 0 ('Less0', Less): operator Less is not supported"});

  // Equal, Not, Where, Less of constants fold: a Where picking the bias.
  ModelBuilder folded({1, 2});
  folded.constant("a", {2}, {1.0f, 2.0f}).constant("b", {2}, {1.0f, 3.0f});
  folded.node("Equal", {"a", "b"}, {"same"});
  folded.node("Not", {"same"}, {"differ"});
  folded.node("Where", {"differ", "a", "b"}, {"pick"});  // (1, 2): a where they differ, else b
  folded.node("Less", {"a", "b"}, {"less"});                // (false, true)
  folded.node("Where", {"less", "pick", "b"}, {"bias"});   // (1, 2)
  folded.node("Add", {"x", "bias"}, {"y"});
  const auto network = mlp::from_onnx(folded.build());
  REQUIRE(network.layers.size() == 1);
  CHECK(network.layers[0].bias == Eigen::Vector2d(1.0, 2.0));
}

TEST_CASE("a node whose output nothing reads is not lowered; a directory is not a model", "[onnx][errors]") {
  ModelBuilder b({1, 4});
  b.node("Sigmoid", {"x"}, {"unused"}, "dead_end");
  b.node("Relu", {"x"}, {"y"});
  const auto network = mlp::from_onnx(b.build());
  CHECK(network.layers.size() == 1);
  CHECK_THROWS_WITH(mlp::load_model(data_dir), Catch::Matchers::Contains("'" + data_dir + "' is a directory"));
}

TEST_CASE("curved activations: a layer each, never crossed; Softmax last, over a whole sample", "[onnx][errors]") {
  // A skip connection around a Sigmoid: x would have to cross its layer.
  ModelBuilder skip({1, 2, 5, 5});
  skip.node("Sigmoid", {"x"}, {"s"}, "gate");
  skip.node("Add", {"s", "x"}, {"y"}, "skip");
  check_message(refusal(skip.build()), {"node 1 ('skip', Add): a value computed before layer 0's Sigmoid is read "
                                        "after it (a skip connection, or branches joining): only a ReLU layer"});
  // Branches of a Relu and a Sigmoid on the same input: one layer, two activations.
  ModelBuilder branches({1, 6});
  branches.node("Sigmoid", {"x"}, {"s"}, "sigmoid_branch");
  branches.node("Relu", {"x"}, {"r"}, "relu_branch");
  attribute(branches.node("Concat", {"s", "r"}, {"y"}), "axis", std::int64_t{1});
  check_message(refusal(branches.build()),
                {"node 1 ('relu_branch', Relu): its Relu would share layer 0 with a Sigmoid",
                 "each layer of the fully-connected form has one activation"});
  // Softmax anywhere but last, or over part of a sample.
  ModelBuilder inner({1, 6});
  inner.node("Softmax", {"x"}, {"p"}, "inner_softmax");
  inner.node("Relu", {"p"}, {"y"});
  check_message(refusal(inner.build()), {"node 0 ('inner_softmax', Softmax): Softmax is taken only as the network's "
                                         "last node"});
  check_message(refusal(one_node("Softmax", [](auto&, auto& n) { attribute(n, "axis", std::int64_t{1}); })),
                {"node 0 ('the_node', Softmax): attribute 'axis': 1 on the input (2, 5, 5) (N first) normalizes "
                 "groups of a sample's values"});
  check_message(refusal(one_node("LogSoftmax", [](auto&, auto& n) { attribute(n, "axis", std::int64_t{0}); }, {1, 6})),
                {"attribute 'axis': 0 on the input (6) (N first) normalizes across the batch"});
  check_message(refusal(one_node("Celu", [](auto&, auto& n) { attribute(n, "alpha", 0.0); })),
                {"attribute 'alpha': is 0"});
  // --relu-only: today's Gemm + Relu form or nothing.
  std::string relu_only;
  try {
    mlp::LowerOptions options;
    options.relu_only = true;
    (void)mlp::from_onnx(one_node("Tanh", [](auto&, auto&) {}), options);
  } catch (const mlp::conversion_error& e) {
    relu_only = e.what();
  }
  check_message(relu_only, {"node 0 ('the_node', Tanh): operator Tanh is refused by --relu-only"});

  // What is taken: Sigmoid then Tanh are two layers, no Gemm after the
  // last; two Sigmoid branches share one layer; Softmax gets a Gemm of
  // its own after a ReLU layer.
  ModelBuilder chain({1, 4});
  chain.node("Sigmoid", {"x"}, {"s"});
  chain.node("Tanh", {"s"}, {"y"});
  const auto two = mlp::from_onnx(chain.build());
  REQUIRE(two.layers.size() == 2);
  CHECK(two.layers[0].activation.kind == mlp::Activation::Kind::sigmoid);
  CHECK(two.layers[1].activation.kind == mlp::Activation::Kind::tanh);
  ModelBuilder shared({1, 4});
  shared.constant("w", {3, 4}).constant("v", {2, 4});
  attribute(shared.node("Gemm", {"x", "w"}, {"a"}), "transB", std::int64_t{1});
  shared.node("Sigmoid", {"a"}, {"sa"});
  attribute(shared.node("Gemm", {"x", "v"}, {"b"}), "transB", std::int64_t{1});
  shared.node("Sigmoid", {"b"}, {"sb"});
  attribute(shared.node("Concat", {"sa", "sb"}, {"y"}), "axis", std::int64_t{1});
  const auto one = mlp::from_onnx(shared.build());
  REQUIRE(one.layers.size() == 1);
  CHECK(one.layers[0].matrix.rows() == 5);
  ModelBuilder last({1, 4});
  last.node("Relu", {"x"}, {"r"});
  last.node("Softmax", {"r"}, {"y"});
  const auto softmax = mlp::from_onnx(last.build());
  REQUIRE(softmax.layers.size() == 2);
  CHECK(softmax.layers[1].activation.kind == mlp::Activation::Kind::softmax);
  const Eigen::MatrixXd p = softmax(Eigen::MatrixXd::Random(4, 3));
  CHECK((p.colwise().sum().array() - 1).abs().maxCoeff() < 1e-12);
}
