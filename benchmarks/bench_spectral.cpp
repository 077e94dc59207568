// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Issue 15's spectral rows, in double, on the benchmark layers
// (bench::unfold_layer; weights Gaussian / sqrt(fan-in), fixed seed):
//   spectral/lanczos/0            spectral_norm (block Golub-Kahan-Lanczos)
//   spectral/power_iteration/0    1000 steps of v <- T^H T v / |T^H T v|
//   spectral/spectra/<ncv>        Spectra's SymEigsSolver on T^H T, to the
//                                 same tolerance (only when Spectra is found)
//   spectral/bound/<layer>        spectral_norm_bound (Lanczos + FFT)
//   spectral/bound_fft/<layer>    its upper bound alone (the circulant FFT)
// Counters: products (with T, as many with T^H), residual (relative:
// max(|T^H u - s v|, |T v - s u|) / s of the final vectors, measured),
// value; for the bound lower (|T v| of the converged Lanczos vector: the
// Lanczos value), upper and upper / lower. The rows that run Lanczos or
// 1000 power steps run once (products and residuals are deterministic;
// single-threaded rows count CPU time).
#include <benchmark/benchmark.h>
#include <convmat/convmat.hpp>

#include <cmath>
#include <random>

#if __has_include(<Spectra/SymEigsSolver.h>)
#include <Spectra/SymEigsSolver.h>
#define CONVMAT_BENCH_SPECTRA 1
#endif

#include "shapes.hpp"

namespace {

using convmat::Index;
using Vector = Eigen::VectorXd;
using Operator = convmat::ConvOperator<double, 2>;

Vector weights(const convmat::Conv2dSpec& spec) {
  std::mt19937_64 rng(15);
  std::normal_distribution<double> normal;
  const double scale = 1 / std::sqrt(static_cast<double>(spec.weight_numel() / spec.out_channels));
  Vector w(spec.weight_numel());
  for (Index i = 0; i < w.size(); ++i) w(i) = scale * normal(rng);
  return w;
}

/// The relative residual of the pair (v, u = T v / |T v|), v a unit vector:
/// |T^H u - s v| / s with s = |T v| (|T v - s u| is 0 by construction).
double residual_of(const Operator& op, const Vector& v, double& sigma) {
  const Vector tv = op * v;
  sigma = tv.norm();
  const Vector back = op.adjoint() * (tv / sigma);
  return (back - sigma * v).norm() / sigma;
}

void lanczos(benchmark::State& state, int threads) {
  bench::set_threads(threads);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Vector w = weights(spec);
  convmat::SpectralNorm<double> norm;
  for (auto _ : state) {
    norm = convmat::spectral_norm(spec, w);
    benchmark::DoNotOptimize(&norm.value);  // by address: GCC + DoNotOptimize on a double (google/benchmark#903)
  }
  state.counters["products"] = static_cast<double>(norm.iterations);
  state.counters["residual"] = norm.residual;
  state.counters["value"] = norm.value;
  state.counters["converged"] = norm.converged;
}

/// 1000 steps of plain power iteration on T^H T, then one product pair
/// to measure the residual.
void power_iteration(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Operator op = convmat::make_operator(spec, weights(spec));
  Vector start(op.cols());
  convmat::detail::fill_random(start, 2019);
  double sigma = 0, residual = 0;
  for (auto _ : state) {
    Vector v = start.normalized();
    for (int step = 0; step < 1000; ++step) {
      Vector z = op.adjoint() * (op * v);
      v = z / z.norm();
    }
    residual = residual_of(op, v, sigma);
    benchmark::DoNotOptimize(&sigma);  // by address: GCC + DoNotOptimize on a double (google/benchmark#903)
  }
  state.counters["products"] = 1001;
  state.counters["residual"] = residual;
  state.counters["value"] = sigma;
}

#ifdef CONVMAT_BENCH_SPECTRA
/// T^H T as Spectra's matrix operation: one product with T, one with T^H.
struct NormalOp {
  using Scalar = double;
  const Operator& op;
  mutable Vector t;
  Index rows() const { return op.cols(); }
  void perform_op(const double* x, double* y) const {
    op.apply_batch(x, op.cols(), t.data(), op.rows(), 1);
    op.adjoint().apply_batch(t.data(), op.rows(), y, op.cols(), 1);
  }
};

/// Spectra's implicitly restarted Lanczos (SymEigsSolver) for the largest
/// eigenvalue of T^H T, ncv = range(0) basis vectors, tolerance 1e-10 (its
/// test, |A x - l x| <= tol |l|, is the relative residual of the singular
/// pair); the residual is then measured as for the others.
void spectra(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::unfold_layer(0);
  const Operator op = convmat::make_operator(spec, weights(spec));
  NormalOp normal{op, Vector(op.rows())};
  double sigma = 0, residual = 0;
  Index products = 0;
  bool converged = false;
  for (auto _ : state) {
    Spectra::SymEigsSolver<NormalOp> eigs(normal, 1, static_cast<Index>(state.range(0)));
    eigs.init();
    eigs.compute(Spectra::SortRule::LargestAlge, 1000, 1e-10);
    converged = eigs.info() == Spectra::CompInfo::Successful;
    products = eigs.num_operations();
    const Vector v = eigs.eigenvectors().col(0).normalized();
    residual = residual_of(op, v, sigma);
    benchmark::DoNotOptimize(&sigma);  // by address: GCC + DoNotOptimize on a double (google/benchmark#903)
  }
  state.counters["products"] = static_cast<double>(products + 1);  // + the check
  state.counters["residual"] = residual;
  state.counters["value"] = sigma;
  state.counters["converged"] = converged;
}
#endif

void bound(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Vector w = weights(spec);
  convmat::SpectralNormBound<double> b;
  for (auto _ : state) {
    b = convmat::spectral_norm_bound(spec, w);
    benchmark::DoNotOptimize(&b.upper);  // by address: GCC + DoNotOptimize on a double (google/benchmark#903)
  }
  state.counters["lower"] = b.lower;
  state.counters["upper"] = b.upper;
  state.counters["products"] = static_cast<double>(b.iterations);
  state.counters["upper_over_lower"] = b.upper / b.lower;
  state.counters["converged"] = b.converged;
}

void bound_fft(benchmark::State& state) {
  bench::set_threads(1);
  const auto spec = bench::unfold_layer(static_cast<int>(state.range(0)));
  const Vector w = weights(spec);
  const auto model = convmat::detail::circulant_model_of(spec);
  double upper = 0;
  for (auto _ : state) {
    upper = convmat::detail::circulant_upper_bound(model, w.data());
    benchmark::DoNotOptimize(&upper);  // by address: GCC + DoNotOptimize on a double (google/benchmark#903)
  }
  state.counters["upper"] = upper;
}

BENCHMARK_CAPTURE(lanczos, 1, 1)->Name("spectral/lanczos")->Arg(0)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(lanczos, 2, 2)->Name("spectral/lanczos_2threads")->Arg(0)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(power_iteration)->Name("spectral/power_iteration")->Arg(0)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);
#ifdef CONVMAT_BENCH_SPECTRA
BENCHMARK(spectra)->Name("spectral/spectra")->Arg(20)->Arg(40)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);
#endif
BENCHMARK(bound)->Name("spectral/bound")->DenseRange(0, 2)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);
BENCHMARK(bound_fft)->Name("spectral/bound_fft")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

}  // namespace
