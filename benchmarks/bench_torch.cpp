// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// libtorch on the same shapes (single-threaded unless a row says 2
// threads): the identity trick for the matrix (conv2d on an identity
// batch, then transpose), F.unfold (im2col), conv2d and conv_transpose2d.
// Built only when find_package(Torch) succeeds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "shapes.hpp"

namespace {

using convmat::Index;

std::vector<int64_t> shape(Index a, Index b, const std::array<Index, 2>& size) {
  return {a, b, size[0], size[1]};
}

at::Tensor weights(const convmat::Conv2dSpec& spec) {
  return at::randn(shape(spec.out_channels, spec.in_channels, spec.kernel_size));
}

/// The matrix T (output_numel x input_numel, row-major) through PyTorch:
/// the layer applied to every column of the identity is T^T, transposed.
at::Tensor identity_trick(const convmat::Conv2dSpec& spec, const at::Tensor& w) {
  const Index n = spec.input_numel();
  const at::Tensor eye = at::eye(n).reshape(shape(n, spec.in_channels, spec.input_size));
  const at::Tensor y = at::conv2d(eye, w, {}, 1, {spec.padding[0], spec.padding[1]});
  return y.reshape({n, spec.output_numel()}).t().contiguous();
}

void torch_identity_trick(benchmark::State& state) {
  at::set_num_threads(1);
  const auto spec = bench::dense_layer(state.range(0));
  const at::Tensor w = weights(spec);
  for (auto _ : state) {
    at::Tensor t = identity_trick(spec, w);
    benchmark::DoNotOptimize(t.data_ptr());
    benchmark::ClobberMemory();
  }
}

void torch_unfold(benchmark::State& state) {
  at::set_num_threads(1);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const at::Tensor x = at::randn(shape(1, spec.in_channels, spec.input_size));
  for (auto _ : state) {
    at::Tensor columns = at::im2col(x, {spec.kernel_size[0], spec.kernel_size[1]}, {1, 1},
                                    {spec.padding[0], spec.padding[1]}, {1, 1});
    benchmark::DoNotOptimize(columns.data_ptr());
    benchmark::ClobberMemory();
  }
}

void torch_conv2d(benchmark::State& state) {
  at::set_num_threads(1);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const at::Tensor w = weights(spec), x = at::randn(shape(1, spec.in_channels, spec.input_size));
  for (auto _ : state) {
    at::Tensor y = at::conv2d(x, w, {}, 1, {spec.padding[0], spec.padding[1]});
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(spec.output_numel()) * static_cast<double>(spec.weight_numel() / spec.out_channels),
      benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void torch_conv2d_batch(benchmark::State& state) {
  at::set_num_threads(1);
  const auto spec = bench::sparse_layer();
  const at::Tensor w = weights(spec), x = at::randn(shape(bench::batch, spec.in_channels, spec.input_size));
  for (auto _ : state) {
    at::Tensor y = at::conv2d(x, w, {}, 1, {spec.padding[0], spec.padding[1]});
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::ClobberMemory();
  }
}

/// conv2d (or conv_transpose2d, the transposed layer: the same weights,
/// input of the layer's output shape) with unfold_layer(range(0)) on
/// `batch` samples, on `threads` threads.
void torch_layer(benchmark::State& state, bool transposed, int batch, int threads) {
  at::set_num_threads(threads);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const at::Tensor w = weights(spec);
  const at::Tensor x = transposed ? at::randn(shape(batch, spec.out_channels, spec.output_size()))
                                  : at::randn(shape(batch, spec.in_channels, spec.input_size));
  for (auto _ : state) {
    at::Tensor y = transposed ? at::conv_transpose2d(x, w, {}, 1, {spec.padding[0], spec.padding[1]})
                              : at::conv2d(x, w, {}, 1, {spec.padding[0], spec.padding[1]});
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(spec.output_numel()) * static_cast<double>(spec.weight_numel() / spec.out_channels) *
          batch,
      benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int size : bench::plot_sizes) b->Arg(size);
}

BENCHMARK(torch_identity_trick)->Name("torch/identity_trick")->Apply(sizes)->Unit(benchmark::kMillisecond);
BENCHMARK(torch_unfold)->Name("torch/unfold")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK(torch_conv2d)->Name("torch/conv2d")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK(torch_conv2d_batch)->Name("torch/conv2d_batch")->Unit(benchmark::kMillisecond);

BENCHMARK_CAPTURE(torch_layer, 1, false, bench::batch, 1)->Name("torch/conv2d_b32")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(torch_layer, 2, true, 1, 1)->Name("torch/conv_transpose2d")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(torch_layer, 3, true, bench::batch, 1)->Name("torch/conv_transpose2d_b32")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(torch_layer, 4, false, 1, 2)->Name("torch/conv2d_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(torch_layer, 5, false, bench::batch, 2)->Name("torch/conv2d_b32_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(torch_layer, 6, true, 1, 2)->Name("torch/conv_transpose2d_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(torch_layer, 7, true, bench::batch, 2)->Name("torch/conv_transpose2d_b32_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();

const bench::RegisterMemoryRow memory[] = {
    {"torch/identity_trick", [] {
       at::set_num_threads(1);
       const auto spec = bench::dense_layer();
       at::Tensor t = identity_trick(spec, weights(spec));
       benchmark::DoNotOptimize(t.data_ptr());
     }},
};

}  // namespace
