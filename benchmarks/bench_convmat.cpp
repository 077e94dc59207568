// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// convmat's rows and the physical limits they are measured against: the
// time to allocate and zero-fill (or write) the same bytes in fresh memory.
// Names: "<who>/<what>/<argument>"; scripts/bench.sh turns them into ratios.
// Rows named *_b32 take a batch of 32 samples, *_2threads run on 2 threads.
#include <benchmark/benchmark.h>
#include <convmat/convmat.hpp>

#include <memory>
#include <vector>

#include "shapes.hpp"

namespace {

using convmat::Index;
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMatrix = Eigen::MatrixXf;

Eigen::VectorXf weights(const convmat::Conv2dSpec& spec) {
  return Eigen::VectorXf::Random(spec.weight_numel());
}

// ---- dense: target 1 and the plot --------------------------------------

/// The floor: a fresh matrix of the same size, zero-filled.
void zero_fill(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::dense_layer(state.range(0));
  for (auto _ : state) {
    Matrix t(spec.output_numel(), spec.input_numel());
    t.setZero();
    benchmark::DoNotOptimize(t.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * spec.output_numel() * spec.input_numel() * 4);
}

void conv_matrix(benchmark::State& state, int threads) {
  bench::set_threads(threads);
  const auto spec = bench::dense_layer(state.range(0));
  const Eigen::VectorXf w = weights(spec);
  for (auto _ : state) {
    auto t = convmat::conv_matrix(spec, w);
    benchmark::DoNotOptimize(t.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * spec.output_numel() * spec.input_numel() * 4);
}

// ---- sparse: target 2 ----------------------------------------------------

/// The floor: the CSR arrays of the same size, written into fresh memory.
void sparse_write(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::sparse_layer();
  const auto w = weights(spec);
  const Index rows = spec.output_numel(), nonzeros = convmat::conv_matrix_sparse(spec, w).nonZeros();
  for (auto _ : state) {
    std::unique_ptr<float[]> values(new float[static_cast<std::size_t>(nonzeros)]);
    std::unique_ptr<int[]> inner(new int[static_cast<std::size_t>(nonzeros)]);
    std::unique_ptr<int[]> outer(new int[static_cast<std::size_t>(rows + 1)]);
    for (Index i = 0; i <= rows; ++i) outer[i] = static_cast<int>(i);
    for (Index i = 0; i < nonzeros; ++i) {
      values[i] = static_cast<float>(i & 15);
      inner[i] = static_cast<int>(i);
    }
    benchmark::DoNotOptimize(values.get());
    benchmark::DoNotOptimize(inner.get());
    benchmark::DoNotOptimize(outer.get());
    benchmark::ClobberMemory();
  }
  state.counters["nonzeros"] = static_cast<double>(nonzeros);
}

void conv_matrix_sparse(benchmark::State& state, int threads) {
  bench::set_threads(threads);
  const auto spec = bench::sparse_layer();
  const Eigen::VectorXf w = weights(spec);
  for (auto _ : state) {
    auto t = convmat::conv_matrix_sparse(spec, w);
    benchmark::DoNotOptimize(t.valuePtr());
    benchmark::ClobberMemory();
  }
}

/// What a user writes by hand: a triplet list from the same taps, then
/// Eigen's setFromTriplets.
convmat::SparseMatrix<float> from_triplets(const convmat::Conv2dSpec& spec, const Eigen::VectorXf& w) {
  const auto g = convmat::detail::geometry(spec);
  std::vector<Eigen::Triplet<float>> triplets;
  std::vector<convmat::detail::Tap> taps;
  const Index kn = g.kernel_numel, cig = g.in_per_group();
  for (Index oc = 0; oc < g.out_channels; ++oc)
    for (Index p = 0; p < g.output_spatial; ++p) {
      g.taps_at(p, taps);
      for (Index ic = 0; ic < cig; ++ic)
        for (const auto& t : taps)
          triplets.emplace_back(static_cast<int>(oc * g.output_spatial + p),
                                static_cast<int>((g.group_first_input(oc) + ic) * g.input_spatial + t.offset),
                                w[(oc * cig + ic) * kn + t.tap]);
    }
  convmat::SparseMatrix<float> t(g.output_numel(), g.input_numel());
  t.setFromTriplets(triplets.begin(), triplets.end());
  return t;
}

void set_from_triplets(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::sparse_layer();
  const Eigen::VectorXf w = weights(spec);
  for (auto _ : state) {
    auto t = from_triplets(spec, w);
    benchmark::DoNotOptimize(t.valuePtr());
    benchmark::ClobberMemory();
  }
}

// ---- unfold and convolve_unfold: targets 3 and 4 ----------------------------

void unfold(benchmark::State& state, int threads) {
  bench::set_threads(threads);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Eigen::VectorXf x = Eigen::VectorXf::Random(spec.input_numel());
  for (auto _ : state) {
    auto columns = convmat::unfold(spec, x);
    benchmark::DoNotOptimize(columns.data());
    benchmark::ClobberMemory();
  }
}

void convolve_unfold(benchmark::State& state, int threads) {
  bench::set_threads(threads);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Eigen::VectorXf w = weights(spec), x = Eigen::VectorXf::Random(spec.input_numel());
  for (auto _ : state) {
    auto y = convmat::convolve_unfold(spec, w, x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(spec.output_numel()) * static_cast<double>(spec.weight_numel() / spec.out_channels),
      benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// ---- products on a batch: target 5 ----------------------------------------

void sparse_times_batch(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::sparse_layer();
  const Eigen::VectorXf w = weights(spec);
  const auto t = convmat::conv_matrix_sparse(spec, w);
  const ColMatrix x = ColMatrix::Random(spec.input_numel(), bench::batch);
  for (auto _ : state) {
    ColMatrix y = t * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
}

/// The same product with the batch stored row-major (one row per input
/// element): each non-zero then scales one contiguous row of 32 samples.
void sparse_times_batch_rowmajor(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::sparse_layer();
  const Eigen::VectorXf w = weights(spec);
  const auto t = convmat::conv_matrix_sparse(spec, w);
  const Matrix x = Matrix::Random(spec.input_numel(), bench::batch);
  for (auto _ : state) {
    Matrix y = t * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
}

void convolve_batch(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::sparse_layer();
  const Eigen::VectorXf w = weights(spec);
  const ColMatrix x = ColMatrix::Random(spec.input_numel(), bench::batch);
  for (auto _ : state) {
    auto y = convmat::convolve(spec, w, x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
}

// ---- the matrix-free operator: issue 15 ------------------------------------

/// The multiply-adds of the layer on `batch` samples, as GFLOP/s.
benchmark::Counter layer_rate(const convmat::Conv2dSpec& spec, int batch) {
  return benchmark::Counter(2.0 * static_cast<double>(spec.output_numel()) *
                                static_cast<double>(spec.weight_numel() / spec.out_channels) * batch,
                            benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

/// `op * X` (or `op.transpose() * Y`, the transposed layer) with
/// unfold_layer(range(0)) on `batch` samples: one vector for batch 1, a
/// matrix (a column per sample) otherwise; the result is a fresh vector or
/// matrix each time, as libtorch's.
void operator_product(benchmark::State& state, bool transposed, int batch, int threads) {
  bench::set_threads(threads);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Eigen::VectorXf w = weights(spec);
  const auto op = convmat::make_operator(spec, w);
  const Index rows = transposed ? spec.output_numel() : spec.input_numel();
  const ColMatrix x = ColMatrix::Random(rows, batch);
  const Eigen::VectorXf x1 = x.col(0);
  for (auto _ : state) {
    if (batch == 1) {
      Eigen::VectorXf y = transposed ? Eigen::VectorXf(op.transpose() * x1) : Eigen::VectorXf(op * x1);
      benchmark::DoNotOptimize(y.data());
    } else if (transposed) {
      ColMatrix y = op.transpose() * x;
      benchmark::DoNotOptimize(y.data());
    } else {
      ColMatrix y = op * x;
      benchmark::DoNotOptimize(y.data());
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = layer_rate(spec, batch);
}

/// The limit of unfold + GEMM: the GEMM alone, W (out x in * kernel) times
/// the unfold matrix, already built, of one sample, into a kept output.
void gemm_limit(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Eigen::VectorXf w = weights(spec);
  const Eigen::Map<const Matrix> w_matrix(w.data(), spec.out_channels, spec.weight_numel() / spec.out_channels);
  const Matrix columns = convmat::unfold(spec, Eigen::VectorXf::Random(spec.input_numel()));
  Matrix y(spec.out_channels, columns.cols());
  for (auto _ : state) {
    y.noalias() = w_matrix * columns;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = layer_rate(spec, 1);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int size : bench::plot_sizes) b->Arg(size);
}

BENCHMARK(zero_fill)->Name("limit/zero_fill")->Apply(sizes)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(conv_matrix, 1, 1)->Name("convmat/conv_matrix")->Apply(sizes)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(conv_matrix, 2, 2)->Name("convmat/conv_matrix_2threads")->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(sparse_write)->Name("limit/sparse_write")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(conv_matrix_sparse, 1, 1)->Name("convmat/conv_matrix_sparse")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(conv_matrix_sparse, 2, 2)->Name("convmat/conv_matrix_sparse_2threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(set_from_triplets)->Name("eigen/set_from_triplets")->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_CAPTURE(unfold, 1, 1)->Name("convmat/unfold")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(unfold, 2, 2)->Name("convmat/unfold_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(convolve_unfold, 1, 1)->Name("convmat/convolve_unfold")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(convolve_unfold, 2, 2)->Name("convmat/convolve_unfold_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(sparse_times_batch)->Name("convmat/sparse_times_batch")->Unit(benchmark::kMillisecond);
BENCHMARK(sparse_times_batch_rowmajor)->Name("convmat/sparse_times_batch_rowmajor")->Unit(benchmark::kMillisecond);
BENCHMARK(convolve_batch)->Name("convmat/convolve_batch")->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK(gemm_limit)->Name("limit/gemm")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(operator_product, 1, false, 1, 1)->Name("convmat/operator")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(operator_product, 2, false, bench::batch, 1)->Name("convmat/operator_b32")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(operator_product, 3, true, 1, 1)->Name("convmat/operator_transpose")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(operator_product, 4, true, bench::batch, 1)->Name("convmat/operator_transpose_b32")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(operator_product, 5, false, 1, 2)->Name("convmat/operator_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(operator_product, 6, false, bench::batch, 2)->Name("convmat/operator_b32_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(operator_product, 7, true, 1, 2)->Name("convmat/operator_transpose_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(operator_product, 8, true, bench::batch, 2)->Name("convmat/operator_transpose_b32_2threads")->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- peak memory rows --------------------------------------------------------

const bench::RegisterMemoryRow memory[] = {
    {"limit/zero_fill", [] {
       const auto spec = bench::dense_layer();
       Matrix t = Matrix::Zero(spec.output_numel(), spec.input_numel());
       benchmark::DoNotOptimize(t.data());
     }},
    {"convmat/conv_matrix", [] {
       const auto spec = bench::dense_layer();
       auto t = convmat::conv_matrix(spec, weights(spec));
       benchmark::DoNotOptimize(t.data());
     }},
    {"convmat/conv_matrix_sparse", [] {
       const auto spec = bench::sparse_layer();
       auto t = convmat::conv_matrix_sparse(spec, weights(spec));
       benchmark::DoNotOptimize(t.valuePtr());
     }},
    {"eigen/set_from_triplets", [] {
       const auto spec = bench::sparse_layer();
       auto t = from_triplets(spec, weights(spec));
       benchmark::DoNotOptimize(t.valuePtr());
     }},
};

}  // namespace
