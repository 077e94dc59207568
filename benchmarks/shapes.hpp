// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The layers the benchmarks time, shared by the convmat and the libtorch
// rows so both always measure the same shapes, and the peak-memory rows
// that scripts/bench.sh runs one per process.
#pragma once

#include <convmat/spec.hpp>

#include <functional>
#include <map>
#include <string>

namespace bench {

/// A square 2-d layer with stride 1 and padding kernel / 2 ("same").
inline convmat::Conv2dSpec layer(convmat::Index in, convmat::Index out, convmat::Index size,
                                 convmat::Index kernel) {
  convmat::Conv2dSpec spec;
  spec.in_channels = in;
  spec.out_channels = out;
  spec.input_size = {size, size};
  spec.kernel_size = {kernel, kernel};
  spec.padding = {kernel / 2, kernel / 2};
  return spec;
}

/// Target 1: 8 -> 16 channels, 32x32, 3x3, padding 1 (a 16384 x 8192 matrix).
inline convmat::Conv2dSpec dense_layer(convmat::Index size = 32) { return layer(8, 16, size, 3); }
/// Target 2: 64 -> 64 channels, 56x56, 3x3, padding 1 (~115 M non-zeros).
inline convmat::Conv2dSpec sparse_layer() { return layer(64, 64, 56, 3); }
/// Targets 3 and 4: the unfold / convolve_unfold layers, by index 0..2.
inline convmat::Conv2dSpec unfold_layer(int which) {
  switch (which) {
    case 0: return layer(64, 64, 56, 3);
    case 1: return layer(16, 32, 128, 3);
    default: return layer(3, 64, 224, 7);
  }
}
/// The sizes of the build-time plot: dense_layer(size) for each.
inline constexpr int plot_sizes[] = {8, 12, 16, 20, 24, 28, 32};
/// Batch of the T * X and convolve rows.
inline constexpr int batch = 32;

/// Peak-memory rows: name -> one run of the operation. Each translation
/// unit registers its own; `convmat_bench --memory NAME` runs one.
inline std::map<std::string, std::function<void()>>& memory_rows() {
  static std::map<std::string, std::function<void()>> rows;
  return rows;
}
struct RegisterMemoryRow {
  RegisterMemoryRow(const std::string& name, std::function<void()> run) {
    memory_rows()[name] = std::move(run);
  }
};

/// Sets the number of threads for OpenMP (and so convmat) and Eigen.
void set_threads(int threads);

}  // namespace bench
