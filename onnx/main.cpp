// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// convmat-onnx in.onnx out.onnx            the fully-connected form (Gemm + activation)
// convmat-onnx --sparse in.onnx PREFIX     one Matrix Market file per layer,
//                                          PREFIX.layerK.mtx, sizes shown first
// convmat-onnx --list-operators            what it takes, and how each is lowered
//
// main parses the options and dispatches; reading, lowering and writing
// are the library's three steps (convert.hpp). Exit status: 0 done, 1 the
// model cannot be converted or written, 2 bad usage.
#include <cstring>
#include <iomanip>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "byte_size.hpp"
#include "convert.hpp"
#include "output_file.hpp"

namespace {

namespace mlp = convmat::mlp;

struct Options {
  bool help = false, sparse = false, external_data = false, list_operators = false, relu_only = false;
  std::optional<std::size_t> max_bytes;
  std::string input, output;
};

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void usage(std::ostream& os) {
  os << "usage: convmat-onnx [--sparse] [--external-data] [--relu-only] [--max-bytes SIZE] in.onnx out\n"
        "       convmat-onnx --list-operators\n"
        "  Writes the fully-connected form of a CNN: an ONNX model of Gemm nodes, each followed\n"
        "  by at most one activation (Relu; Sigmoid, Tanh, ... where the model has them; Softmax last)\n"
        "  (input and output flattened per sample; weights past 2 GiB, or all with\n"
        "  --external-data, in the file out + \".data\" beside it: ONNX's external data), or with --sparse\n"
        "  one Matrix Market file per layer, out.layerK.mtx, holding [T b].\n"
        "  --relu-only       refuse curved activations and Softmax: Gemm and Relu nodes only\n"
        "  --max-bytes SIZE  the most memory one weight or one composed map may take, like\n"
        "                    8G, 1.5G or none (default: half of this machine's memory)\n"
        "  Takes: "
     << mlp::supported_operator_names() << "\n";
}

/// --max-bytes: convmat_tools::parse_byte_size, or usage_error.
std::size_t parse_bytes(const std::string& text) {
  if (const auto bytes = convmat_tools::parse_byte_size(text)) return *bytes;
  throw usage_error(std::string("--max-bytes takes ") + convmat_tools::byte_size_forms + "; got '" + text + "'");
}

Options parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--sparse") o.sparse = true;
    else if (arg == "--external-data") o.external_data = true;
    else if (arg == "--list-operators") o.list_operators = true;
    else if (arg == "--relu-only") o.relu_only = true;
    else if (arg == "--max-bytes" && i + 1 < argc) o.max_bytes = parse_bytes(argv[++i]);
    else if (arg == "--help" || arg == "-h") o.help = true;
    else if (arg.rfind("-", 0) == 0) throw usage_error("unknown option '" + arg + "'");
    else paths.push_back(arg);
  }
  if (o.help || o.list_operators) return o;
  if (paths.size() != 2) throw usage_error("give two paths, the model and where to write its fully-connected form");
  if (o.sparse && o.external_data) throw usage_error("--external-data is for the ONNX output, not --sparse");
  o.input = paths[0];
  o.output = paths[1];
  return o;
}

int list_operators() {
  for (const auto& op : mlp::supported_operators()) std::cout << std::left << std::setw(20) << op.name << op.lowering << "\n";
  return 0;
}

/// One line per layer: its Gemm's shape, activation, non-zeros and dense bytes.
void print_layer(const mlp::DenseLayer& layer, std::size_t index) {
  const std::string_view name = layer.activation.onnx_name();
  const std::string activation_text = name.empty() ? "" : " + " + std::string(name);
  const auto dense = static_cast<std::size_t>(layer.matrix.rows()) * static_cast<std::size_t>(layer.matrix.cols() + 1) * sizeof(float);
  std::cout << "  layer " << index << ": Gemm " << layer.matrix.rows() << " x " << layer.matrix.cols()
            << std::left << std::setw(7) << activation_text << std::right << ", " << layer.matrix.nonZeros() << " non-zeros, " << dense
            << " bytes dense";
}

/// --sparse: every layer's Matrix Market text sized first, then written.
void write_sparse(const mlp::Network& network, const std::string& prefix) {
  std::vector<std::string> files;
  std::size_t total = 0;
  for (std::size_t i = 0; i < network.layers.size(); ++i) {
    files.push_back(mlp::matrix_market(network, i));
    total += files.back().size();
  }
  std::cout << "Matrix Market: " << total << " bytes in " << files.size() << " files (dense float32: "
            << network.dense_bytes() << " bytes)\n";
  for (std::size_t i = 0; i < network.layers.size(); ++i) {
    const std::string path = prefix + ".layer" + std::to_string(i) + ".mtx";
    print_layer(network.layers[i], i);
    std::cout << ", " << files[i].size() << " bytes -> " << path << '\n';
    convmat_tools::OutputFile file(path);  // each file whole or not at all, in turn
    file.write(files[i]);
    file.commit();
  }
  std::cout << "wrote " << network.layers.size() << " Matrix Market files, " << total << " bytes\n";
}

void write_dense(const mlp::Network& network, const Options& o) {
  for (std::size_t i = 0; i < network.layers.size(); ++i) {
    print_layer(network.layers[i], i);
    std::cout << '\n';
  }
  mlp::WriteOptions options;
  if (o.external_data) options.external_data = mlp::WriteOptions::ExternalData::always;
  const auto report = mlp::write_onnx(network, o.output, options);
  std::cout << "wrote " << o.output << ": input '" << network.input_name << "' (N, "
            << network.layers.front().matrix.cols() << "), output '" << network.output_name << "' (N, "
            << network.layers.back().matrix.rows() << "), " << report.weight_bytes << " bytes of weights";
  if (!report.external_data.empty()) std::cout << " in " << report.external_data << " (ONNX external data)";
  std::cout << '\n';
}

/// What convert() is doing, for the out-of-memory message.
const char* stage = "";

/// A library message without its "convmat: " prefix.
std::string without_prefix(const char* what) {
  return std::strncmp(what, "convmat: ", 9) == 0 ? what + 9 : what;
}

int convert(const Options& o) {
  if (o.max_bytes) convmat::set_max_dense_bytes(*o.max_bytes);
  stage = "reading the model";
  auto model = mlp::load_model(o.input);
  stage = "converting the model";
  mlp::LowerOptions lower;
  lower.relu_only = o.relu_only;
  const auto network = mlp::from_onnx(std::move(model), lower);
  stage = "writing the model";
  std::cout << o.input << ": " << network.layers.size() << " fully-connected layers, " << network.nonzeros()
            << " non-zeros\n";
  if (o.sparse)
    write_sparse(network, o.output);
  else
    write_dense(network, o);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse(argc, argv);
  } catch (const usage_error& e) {
    std::cerr << "convmat-onnx: " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  }
  if (options.help) {
    usage(std::cout);
    return 0;
  }
  try {
    return options.list_operators ? list_operators() : convert(options);
  } catch (const convmat::memory_limit_error& e) {
    std::cerr << "convmat-onnx: " << without_prefix(e.what()) << " (--max-bytes "
              << (options.max_bytes ? std::to_string(*options.max_bytes) + " bytes" : "not given: half of this machine's memory")
              << "; a larger --max-bytes lets it through if the machine has the memory)\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "convmat-onnx: out of memory " << stage << "; a --max-bytes below this machine's free memory turns "
                 "this into an error naming the node and the sizes\n";
  } catch (const std::exception& e) {
    std::cerr << "convmat-onnx: " << e.what() << '\n';
  }
  return 1;
}
