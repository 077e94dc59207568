// A libFuzzer target for convmat-onnx's loader and converter: the bytes are
// an ONNX file, taken the whole way the command takes it — protobuf parsing
// (what load_model does with a file's bytes), the graph, the layers
// (convmat's layer matrices, composed), the Gemm chain (to_onnx), and that
// model serialized, parsed and converted once more. For every input, either
// the converter refuses it with conversion_error or spec_error (the memory
// guard's memory_limit_error included), or what it gives is consistent:
//   - the layers chain: each takes what the one before gives, each bias has
//     a row's worth of entries, the first takes the input's elements and
//     the last gives the output's;
//   - the Gemm chain converts back to the same layers (shapes, ReLUs), and
//     computes the same outputs up to float32's rounding of the weights;
//   - each layer's Matrix Market text holds the entries its header counts.
// Anything else — another exception (std::out_of_range, std::bad_alloc,
// ...), an out-of-bounds access (ASan), a leak, undefined behaviour (UBSan),
// an allocation over libFuzzer's -malloc_limit_mb — stops the fuzzer with
// the input.
//
// Written against today's convmat::mlp API (from_onnx, to_onnx,
// matrix_market; the bytes parsed as load_model parses a file).
//
// Build and run: ./scripts/fuzz.sh onnx [seconds]   (see README, "Reliability")
#include <google/protobuf/stubs/logging.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

#include "convert.hpp"

namespace mlp = convmat::mlp;

namespace {

[[noreturn]] void failed(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "onnx fuzz: FAILED: %s %s\n", what, detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(condition)                      \
  do {                                             \
    if (!(condition)) failed("check", #condition); \
  } while (false)

/// The network of `model`, or nothing if the converter refuses it cleanly.
std::optional<mlp::Network> convert(const onnx::ModelProto& model) {
  try {
    return mlp::from_onnx(model);
  } catch (const mlp::conversion_error&) {
  } catch (const convmat::spec_error&) {
  } catch (const std::exception& e) {
    failed("an exception other than conversion_error or spec_error:", e.what());
  }
  return std::nullopt;
}

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

/// Each layer takes what the one before gives.
void check_chain(const mlp::Network& net) {
  FUZZ_CHECK(!net.layers.empty());
  FUZZ_CHECK(net.layers.front().matrix.cols() == numel(net.input_shape));
  FUZZ_CHECK(net.layers.back().matrix.rows() == numel(net.output_shape));
  for (std::size_t i = 0; i < net.layers.size(); ++i) {
    FUZZ_CHECK(net.layers[i].bias.size() == net.layers[i].matrix.rows());
    if (i > 0) FUZZ_CHECK(net.layers[i].matrix.cols() == net.layers[i - 1].matrix.rows());
  }
}

/// The network with |T| and |b| applied to |x|: a bound on every output
/// and on how far float32 weights can move it.
Eigen::VectorXd magnitude(const mlp::Network& net, const Eigen::VectorXd& x) {
  Eigen::VectorXd y = x.cwiseAbs();
  for (const auto& layer : net.layers) y = layer.matrix.cwiseAbs() * y + layer.bias.cwiseAbs();
  return y;
}

bool representable_in_float(const mlp::Network& net) {
  constexpr double most = std::numeric_limits<float>::max();
  for (const auto& layer : net.layers) {
    const auto& m = layer.matrix;
    for (Eigen::Index k = 0; k < m.nonZeros(); ++k)
      if (!(std::abs(m.valuePtr()[k]) < most)) return false;
    if (!(layer.bias.cwiseAbs().maxCoeff() < most)) return false;
  }
  return true;
}

/// Layer i's Matrix Market text holds the entries its size line announces.
void check_matrix_market(const mlp::Network& net, std::size_t i) {
  std::istringstream text(mlp::matrix_market(net, i));
  std::string line;
  while (std::getline(text, line) && !line.empty() && line[0] == '%') {
  }
  long long rows = 0, cols = 0, entries = 0;
  std::istringstream(line) >> rows >> cols >> entries;
  FUZZ_CHECK(rows == net.layers[i].matrix.rows() && cols == net.layers[i].matrix.cols() + 1);
  long long lines = 0;
  while (std::getline(text, line)) ++lines;
  FUZZ_CHECK(lines == entries);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  convmat::set_max_dense_bytes(std::size_t{64} << 20);  // far below -malloc_limit_mb
  google::protobuf::SetLogHandler(nullptr);              // parse errors are expected, not news
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  onnx::ModelProto model;
  if (size > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      !model.ParseFromArray(data, static_cast<int>(size)))
    return 0;  // load_model: "is not an ONNX model"
  const auto net = convert(model);
  if (!net) return 0;
  check_chain(*net);

  const Eigen::Index n = net->layers.front().matrix.cols();
  Eigen::VectorXd x(n);
  for (Eigen::Index i = 0; i < n; ++i) x(i) = static_cast<double>((i * 7) % 17 - 8) / 8;
  const Eigen::VectorXd y = (*net)(x);
  FUZZ_CHECK(y.size() == numel(net->output_shape));
  for (std::size_t i = 0; i < net->layers.size(); ++i)
    if (net->layers[i].matrix.nonZeros() <= 10000) check_matrix_market(*net, i);

  // The Gemm chain, serialized and read back, is the same network in float32.
  onnx::ModelProto chain;
  try {
    chain = mlp::to_onnx(*net);
  } catch (const convmat::spec_error&) {
    return 0;  // a layer's dense float matrix is beyond the memory guard
  }
  std::string bytes;
  FUZZ_CHECK(chain.SerializeToString(&bytes));
  onnx::ModelProto parsed;
  FUZZ_CHECK(parsed.ParseFromString(bytes));
  const auto again = convert(parsed);
  FUZZ_CHECK(again.has_value());
  check_chain(*again);
  FUZZ_CHECK(again->layers.size() == net->layers.size());
  for (std::size_t i = 0; i < net->layers.size(); ++i) {
    FUZZ_CHECK(again->layers[i].matrix.rows() == net->layers[i].matrix.rows());
    FUZZ_CHECK(again->layers[i].matrix.cols() == net->layers[i].matrix.cols());
    FUZZ_CHECK(again->layers[i].relu == net->layers[i].relu);
  }
  const Eigen::VectorXd bound = magnitude(*net, x);
  if (representable_in_float(*net) && bound.allFinite()) {
    // Each layer's float rounding moves an output by at most eps times its
    // magnitude, and later layers carry that on: L * eps * bound, doubled.
    const double eps = std::numeric_limits<float>::epsilon(), layers = static_cast<double>(net->layers.size());
    const Eigen::VectorXd difference = ((*again)(x) - y).cwiseAbs();
    for (Eigen::Index i = 0; i < y.size(); ++i)
      FUZZ_CHECK(difference(i) <= 2 * layers * eps * bound(i) + std::numeric_limits<float>::min());
  }
  return 0;
}
