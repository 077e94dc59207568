// A libFuzzer target for convmat-onnx's loader and converter: the bytes are
// an ONNX file, taken the whole way the command takes it, one step at a
// time (convert.hpp):
//
//     bytes --parse_model--> ModelProto --read_graph--> Graph --lower--> Network
//           --to_onnx--> Gemm + Relu ModelProto --serialize, parse_model,
//           read_graph, lower--> the same Network in float32
//
// and each layer as Matrix Market text. For every input, either a step
// refuses it cleanly — conversion_error, or spec_error (the memory guard's
// memory_limit_error included) — or what it gives is consistent:
//   - the layers chain: each takes what the one before gives, each bias has
//     a row's worth of entries, the first takes the input's elements and
//     the last gives the output's, every value in the weights is one the
//     converter computed (no uninitialised memory: ASan/MSan-free reads);
//   - the Gemm chain converts back to the same layers (shapes, ReLUs), and
//     computes the same outputs up to float32's rounding of the weights
//     (chains of up to 8 MiB of dense weights: larger ones take seconds);
//     only a chain whose dense weights are beyond the memory guard may be
//     refused on the way back, and only by the guard;
//   - each layer's Matrix Market text has the header's size, the entries
//     the header counts, each in range and equal to the layer's value.
// Anything else — another exception (std::out_of_range, std::bad_alloc,
// ...), an out-of-bounds access (ASan), a leak, undefined behaviour (UBSan),
// one allocation over libFuzzer's -malloc_limit_mb (512 MiB in
// scripts/fuzz.sh; the converter's guard is 64 MiB here) — stops the
// fuzzer with the input.
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

constexpr std::size_t memory_limit = std::size_t{64} << 20;
constexpr std::size_t round_trip_limit = std::size_t{8} << 20;

[[noreturn]] void failed(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "onnx fuzz: FAILED: %s %s\n", what, detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(condition)                      \
  do {                                             \
    if (!(condition)) failed("check", #condition); \
  } while (false)

/// How a step refused: not at all, conversion_error or spec_error, or the
/// memory guard (memory_limit_error).
enum class Refusal { none, conversion, memory };

/// What a step gave, or nothing if it refused cleanly (and how, in
/// `refusal`). Any other exception aborts.
template <class Step>
auto attempt(Step step, Refusal& refusal) -> std::optional<decltype(step())> {
  refusal = Refusal::none;
  try {
    return step();
  } catch (const convmat::memory_limit_error&) {
    refusal = Refusal::memory;
  } catch (const mlp::conversion_error&) {
    refusal = Refusal::conversion;
  } catch (const convmat::spec_error&) {
    refusal = Refusal::conversion;
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
    const auto& m = net.layers[i].matrix;
    FUZZ_CHECK(m.isCompressed());
    FUZZ_CHECK(net.layers[i].bias.size() == m.rows());
    if (i > 0) FUZZ_CHECK(m.cols() == net.layers[i - 1].matrix.rows());
    for (Eigen::Index r = 0; r < m.rows(); ++r)
      for (mlp::Matrix::InnerIterator it(m, r); it; ++it) FUZZ_CHECK(it.col() >= 0 && it.col() < m.cols());
  }
}

/// The network with |T| and |b| applied to |x|: a bound on every output
/// and on how far float32 weights can move it.
Eigen::VectorXd magnitude(const mlp::Network& net, const Eigen::VectorXd& x) {
  Eigen::VectorXd y = x.cwiseAbs();
  for (const auto& layer : net.layers) y = layer.matrix.cwiseAbs() * y + layer.bias.cwiseAbs();
  return y;
}

/// Whether every activation is Relu or none: then magnitude() bounds each
/// layer's rounding (a curved one, Exp say, may magnify it).
bool piecewise_linear(const mlp::Network& net) {
  for (const auto& layer : net.layers)
    if (layer.activation.kind != mlp::Activation::Kind::none && layer.activation.kind != mlp::Activation::Kind::relu)
      return false;
  return true;
}

bool representable_in_float(const mlp::Network& net) {
  constexpr double most = std::numeric_limits<float>::max();
  for (const auto& layer : net.layers) {
    const auto& m = layer.matrix;
    for (Eigen::Index k = 0; k < m.nonZeros(); ++k)
      if (!(std::abs(m.valuePtr()[k]) < most)) return false;
    if (layer.bias.size() && !(layer.bias.cwiseAbs().maxCoeff() < most)) return false;
  }
  return true;
}

/// Layer i's Matrix Market text: the header's size, the entries its size
/// line announces, each in range and (to the 9 digits written) the layer's.
void check_matrix_market(const mlp::Network& net, std::size_t i) {
  const auto& layer = net.layers[i];
  std::istringstream text(mlp::matrix_market(net, i));
  std::string line;
  FUZZ_CHECK(std::getline(text, line) && line == "%%MatrixMarket matrix coordinate real general");
  while (std::getline(text, line) && !line.empty() && line[0] == '%') {
  }
  long long rows = 0, cols = 0, entries = 0;
  std::istringstream(line) >> rows >> cols >> entries;
  FUZZ_CHECK(rows == layer.matrix.rows() && cols == layer.matrix.cols() + 1);
  long long lines = 0;
  while (std::getline(text, line)) {
    ++lines;
    long long r = 0, c = 0;
    double value = 0;
    std::istringstream entry(line);
    entry >> r >> c;
    FUZZ_CHECK(entry && r >= 1 && r <= rows && c >= 1 && c <= cols);
    std::string number;
    entry >> number;
    value = std::strtod(number.c_str(), nullptr);
    const double expected = c == cols ? layer.bias(r - 1) : layer.matrix.coeff(r - 1, c - 1);
    if (std::isnan(expected)) {
      FUZZ_CHECK(std::isnan(value) || number.find("nan") != std::string::npos);
    } else if (std::isinf(expected)) {
      FUZZ_CHECK(value == expected || number.find("inf") != std::string::npos);
    } else {
      FUZZ_CHECK(std::abs(value - expected) <= 1e-8 * std::abs(expected) ||
                 (std::abs(expected) < 1e-300 && std::abs(value) < 1e-290));
    }
  }
  FUZZ_CHECK(lines == entries);
}

/// bytes -> ModelProto -> Graph -> Network, one step at a time.
std::optional<mlp::Network> convert(const void* data, std::size_t size, Refusal& refusal) {
  const auto model = attempt([&] { return mlp::parse_model(data, size); }, refusal);
  if (!model) return std::nullopt;
  const auto graph = attempt([&] { return mlp::read_graph(*model); }, refusal);
  if (!graph) return std::nullopt;
  return attempt([&] { return mlp::lower(*graph); }, refusal);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  convmat::set_max_dense_bytes(memory_limit);  // far below -malloc_limit_mb
  google::protobuf::SetLogHandler(nullptr);    // parse errors are expected, not news
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Refusal refusal;
  const auto net = convert(data, size, refusal);
  if (!net) return 0;
  check_chain(*net);

  const Eigen::Index n = net->layers.front().matrix.cols();
  Eigen::VectorXd x(n);
  for (Eigen::Index i = 0; i < n; ++i) x(i) = static_cast<double>((i * 7) % 17 - 8) / 8;
  const Eigen::VectorXd y = (*net)(Eigen::MatrixXd(x)).col(0);
  FUZZ_CHECK(y.size() == numel(net->output_shape));
  for (std::size_t i = 0; i < net->layers.size(); ++i)
    if (net->layers[i].matrix.nonZeros() <= 10000) check_matrix_market(*net, i);

  // The Gemm chain, serialized and read back, is the same network in float32.
  const auto chain = attempt([&] { return mlp::to_onnx(*net); }, refusal);
  if (!chain) {
    // Only the dense weights' size may stop it here.
    FUZZ_CHECK(refusal == Refusal::memory && net->dense_bytes() > memory_limit);
    return 0;
  }
  // Reading back a chain of tens of MB of dense weights is right but takes
  // seconds under ASan (a GlobalMaxPool tree over 96 x 4 x 5: 45 MB, 10 s);
  // up to 8 MiB the round trip stays at fuzzing speed.
  if (net->dense_bytes() > round_trip_limit) return 0;
  std::string bytes;
  FUZZ_CHECK(chain->SerializeToString(&bytes));
  const auto again = convert(bytes.data(), bytes.size(), refusal);
  if (!again) {
    // Reading the chain back holds each Gemm's weights in double and then
    // sparse (12 bytes an entry): three times the float32 bytes.
    if (refusal == Refusal::memory && net->dense_bytes() * 3 > memory_limit) return 0;
    failed("the Gemm chain is refused:", refusal == Refusal::memory ? "memory guard" : "conversion_error");
  }
  check_chain(*again);
  FUZZ_CHECK(again->layers.size() == net->layers.size());
  for (std::size_t i = 0; i < net->layers.size(); ++i) {
    FUZZ_CHECK(again->layers[i].matrix.rows() == net->layers[i].matrix.rows());
    FUZZ_CHECK(again->layers[i].matrix.cols() == net->layers[i].matrix.cols());
    FUZZ_CHECK(again->layers[i].activation.kind == net->layers[i].activation.kind);  // alpha: float-rounded
  }
  const Eigen::VectorXd bound = magnitude(*net, x);
  if (piecewise_linear(*net) && representable_in_float(*net) && bound.allFinite() && y.allFinite()) {
    // Each layer's float rounding moves an output by at most eps times its
    // magnitude, and later layers carry that on: L * eps * bound, doubled.
    const double eps = std::numeric_limits<float>::epsilon(), layers = static_cast<double>(net->layers.size());
    const Eigen::VectorXd difference = ((*again)(Eigen::MatrixXd(x)).col(0) - y).cwiseAbs();
    for (Eigen::Index i = 0; i < y.size(); ++i)
      FUZZ_CHECK(difference(i) <= 2 * layers * eps * bound(i) + std::numeric_limits<float>::min());
  }
  return 0;
}
