// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// convmat-onnx in.onnx out.onnx            the fully-connected form (Gemm + Relu)
// convmat-onnx --sparse in.onnx PREFIX     one Matrix Market file per layer,
//                                          PREFIX.layerK.mtx, sizes shown first
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "convert.hpp"

namespace {

int usage() {
  std::cerr << "usage: convmat-onnx [--sparse] in.onnx out\n"
               "  Writes the fully-connected form of a CNN: an ONNX model of Gemm and Relu nodes\n"
               "  (input and output flattened per sample), or with --sparse one Matrix Market\n"
               "  file per layer, out.layerK.mtx, holding [T b].\n"
               "  Takes: "
            << convmat::mlp::supported_operators << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool sparse = false;
  const char* paths[2] = {nullptr, nullptr};
  int count = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sparse") == 0) sparse = true;
    else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return usage(), 0;
    else if (count < 2) paths[count++] = argv[i];
    else return usage();
  }
  if (count != 2) return usage();
  try {
    const auto network = convmat::mlp::from_onnx(convmat::mlp::load_model(paths[0]));
    std::size_t nonzeros = 0;
    for (const auto& layer : network.layers) nonzeros += static_cast<std::size_t>(layer.matrix.nonZeros());
    std::cout << paths[0] << ": " << network.layers.size() << " fully-connected layers, " << nonzeros
              << " non-zeros\n";
    std::vector<std::string> files;  // with --sparse: every layer's text, sized before anything is written
    std::size_t total = 0, dense_total = 0;
    for (std::size_t i = 0; sparse && i < network.layers.size(); ++i) {
      files.push_back(convmat::mlp::matrix_market(network, i));
      total += files.back().size();
      const auto& m = network.layers[i].matrix;
      dense_total += static_cast<std::size_t>(m.rows() * (m.cols() + 1)) * sizeof(float);
    }
    if (sparse)
      std::cout << "Matrix Market: " << total << " bytes in " << files.size() << " files (dense float32: "
                << dense_total << " bytes)\n";
    for (std::size_t i = 0; i < network.layers.size(); ++i) {
      const auto& layer = network.layers[i];
      const auto dense_bytes = static_cast<std::size_t>(layer.matrix.rows() * (layer.matrix.cols() + 1)) * sizeof(float);
      std::cout << "  layer " << i << ": Gemm " << layer.matrix.rows() << " x " << layer.matrix.cols()
                << (layer.relu ? " + Relu" : "       ") << ", " << layer.matrix.nonZeros() << " non-zeros, "
                << dense_bytes << " bytes dense";
      if (sparse) {
        const std::string& text = files[i];
        const std::string path = std::string(paths[1]) + ".layer" + std::to_string(i) + ".mtx";
        std::cout << ", " << text.size() << " bytes -> " << path;
        std::ofstream out(path, std::ios::binary);
        if (!(out << text)) throw convmat::mlp::conversion_error("cannot write '" + path + "'");
      } else {
        total += dense_bytes;
      }
      std::cout << '\n';
    }
    if (!sparse) {
      convmat::mlp::save_model(convmat::mlp::to_onnx(network), paths[1]);
      std::cout << "wrote " << paths[1] << ": input '" << network.input_name << "' (N, "
                << network.layers.front().matrix.cols() << "), output '" << network.output_name << "' (N, "
                << network.layers.back().matrix.rows() << "), " << total << " bytes of weights\n";
    } else {
      std::cout << "wrote " << network.layers.size() << " Matrix Market files, " << total << " bytes\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "convmat-onnx: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
