// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Singular values of T. spectral_norm: the largest, by power iteration on
// the matrix-free operator, for any layer. singular_values: all of them —
// exactly and fast through the FFT when T is block-circulant (circular
// padding, stride 1, output size equal to input size: per frequency, the
// singular values of one small C_out x C_in matrix, after Sedghi, Gupta and
// Long, "The Singular Values of Convolutional Layers", ICLR 2019), and
// through an SVD of the dense matrix otherwise.
//
// The SVD (of the dense matrix, and of each frequency's small matrix) is
// Householder bidiagonalisation followed by the eigenvalues of the
// Golub-Kahan tridiagonal matrix by symmetric QR, LAPACK's way without
// vectors. Not Eigen's BDCSVD: convolution matrices have highly repeated
// singular values (every symmetry of the layer repeats them), and there
// Eigen 3.4.0's BDCSVD returns wrong values — for the circular 1-channel
// layer input (5, 7), kernel (1, 3), dilation (3, 1), padding (0, 1),
// weights (0.3, -0.7, 0.2), off by 0.11 where the largest is 1.15
// (tests/test_spectral.cpp keeps that case). Not JacobiSVD either: right,
// but 250 times slower at 1024 x 1024.
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <unsupported/Eigen/FFT>
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <functional>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "dense.hpp"
#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "detail/parallel.hpp"
#include "limits.hpp"
#include "operator.hpp"
#include "spec.hpp"

namespace convmat {

/// How spectral_norm iterates.
struct SpectralNormOptions {
  /// Stop when |T^H T v - mu v| <= tolerance * mu for the unit vector v and
  /// its Rayleigh quotient mu = |T v|^2 (mu is then accurate to about
  /// tolerance^2), or when mu has stalled: it grew by at most tolerance^2 *
  /// mu in one step (close singular values slow the vector down long after
  /// the value has settled). 0 (the default) means sqrt(epsilon) of the
  /// scalar's real type: 1.5e-8 for double, 3.5e-4 for float.
  double tolerance = 0;
  /// The most products with T^H T before giving up (converged = false).
  Index max_iterations = 1000;
  /// Seed of the random start vector; the result is deterministic.
  std::uint64_t seed = 2019;
};

/// What spectral_norm found.
template <class Real>
struct SpectralNorm {
  Real value = 0;          ///< the estimate of the largest singular value (never above it, up to rounding)
  bool converged = false;  ///< whether the tolerance was met within max_iterations
  Index iterations = 0;    ///< products with T^H T performed
};

namespace detail {

template <class Scalar>
void fill_random(Vector<Scalar>& v, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  for (Index i = 0; i < v.size(); ++i) {
    if constexpr (Eigen::NumTraits<Scalar>::IsComplex)
      v(i) = Scalar(normal(rng), normal(rng));
    else
      v(i) = static_cast<Scalar>(normal(rng));
  }
}

/// Power iteration on T^H T for any ConvOperator.
template <class Scalar, int Rank>
SpectralNorm<typename Eigen::NumTraits<Scalar>::Real> power_iteration(const ConvOperator<Scalar, Rank>& op,
                                                                      const SpectralNormOptions& options) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  if (!(options.tolerance >= 0) || options.max_iterations < 1)
    fail("spectral_norm: tolerance must be non-negative and max_iterations positive: tolerance=",
         options.tolerance, ", max_iterations=", options.max_iterations);
  const Real tolerance = options.tolerance > 0 ? static_cast<Real>(options.tolerance)
                                               : std::sqrt(Eigen::NumTraits<Real>::epsilon());
  const auto adjoint = op.adjoint();
  Vector<Scalar> v(op.cols()), u(op.rows()), z(op.cols());
  fill_random(v, options.seed);
  v.normalize();
  SpectralNorm<Real> result;
  Real previous = -1;
  while (result.iterations < options.max_iterations) {
    ++result.iterations;
    op.apply(v.data(), u.data());
    adjoint.apply(u.data(), z.data());
    const Real mu = u.squaredNorm();  // Rayleigh quotient v^H T^H T v
    result.value = std::sqrt(mu);
    const Real z_norm = z.norm();
    if (z_norm == Real(0) ||  // T v = 0: T is zero (a random v is in no smaller null space)
        (z - mu * v).norm() <= tolerance * mu || std::abs(mu - previous) <= tolerance * tolerance * mu) {
      result.converged = true;
      break;
    }
    previous = mu;
    v = z / z_norm;
  }
  return result;
}

/// All singular values of `a`, descending: Householder bidiagonalisation
/// B = U^H a V, then the eigenvalues +-sigma of the Golub-Kahan tridiagonal
/// matrix [0 B; B^T 0] (zero diagonal; d0, e0, d1, e1, ... beside it) by
/// symmetric QR. Each is accurate to about epsilon * sigma_max, repeated
/// or not; O(m n^2) for the bidiagonalisation, O(n^2) after it.
template <class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> svd_values(Matrix<Scalar> a) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  if (a.rows() < a.cols()) a = a.adjoint().eval();  // the same singular values, tall
  const Index n = a.cols();
  if (n == 0) return Vector<Real>();
  const Eigen::internal::UpperBidiagonalization<Matrix<Scalar>> bidiagonalisation(a);
  auto b = bidiagonalisation.bidiagonal();  // real, upper bidiagonal (a copy: 2n numbers)
  // The QR iteration runs in at least double precision: in float it can
  // stall on the zero diagonal of large Golub-Kahan matrices.
  using Work = std::common_type_t<Real, double>;
  const Vector<Work> diagonal = Vector<Work>::Zero(2 * n);
  Vector<Work> beside(2 * n - 1);
  for (Index i = 0; i < n; ++i) {
    beside(2 * i) = static_cast<Work>(b.template diagonal<0>()(i));
    if (i + 1 < n) beside(2 * i + 1) = static_cast<Work>(b.template diagonal<1>()(i));
  }
  Eigen::SelfAdjointEigenSolver<Matrix<Work>> eigen;
  eigen.computeFromTridiagonal(diagonal, beside, Eigen::EigenvaluesOnly);
  if (eigen.info() != Eigen::Success)
    fail("singular_values: the symmetric QR iteration did not converge on a ", a.rows(), " x ", n, " matrix");
  // Ascending +-sigma: the top n, descending.
  return eigen.eigenvalues().tail(n).reverse().cwiseMax(Work(0)).template cast<Real>();
}

/// Whether the convolution `g` is block-circulant: circular padding,
/// stride 1 and output size equal to input size in every axis. Then output
/// o reads input (o + s_k) mod N through tap k, with s_k what output 0 reads.
template <int Rank>
bool block_circulant(const Geometry<Rank>& g, const ConvSpec<Rank>& spec) {
  if (g.mode != PaddingMode::circular) return false;
  for (int d = 0; d < Rank; ++d)
    if (spec.stride[d] != 1 || g.output_size[d] != g.input_size[d]) return false;
  return true;
}

/// The multi-dimensional DFT of `data` (C-order, extents `sizes`) in
/// place, one axis after the other, with Eigen's FFT.
template <int Rank, class Real>
void fft_in_place(std::complex<Real>* data, const std::array<Index, Rank>& sizes, Eigen::FFT<Real>& fft,
                  std::vector<std::complex<Real>>& in, std::vector<std::complex<Real>>& out) {
  Index stride = 1, total = 1;
  for (Index s : sizes) total *= s;
  for (int d = Rank - 1; d >= 0; --d) {
    const Index n = sizes[d];
    if (n > 1) {
      in.resize(static_cast<std::size_t>(n));
      out.resize(static_cast<std::size_t>(n));
      // Lines along axis d start at every index whose coordinate d is 0.
      for (Index outer = 0; outer < total; outer += n * stride)
        for (Index inner = 0; inner < stride; ++inner) {
          std::complex<Real>* line = data + outer + inner;
          for (Index i = 0; i < n; ++i) in[static_cast<std::size_t>(i)] = line[i * stride];
          fft.fwd(out.data(), in.data(), n);
          for (Index i = 0; i < n; ++i) line[i * stride] = out[static_cast<std::size_t>(i)];
        }
    }
    stride *= n;
  }
}

/// All singular values of a block-circulant convolution, unsorted: for
/// every group and frequency f, those of the (C_out / groups) x (C_in /
/// groups) matrix M_f[a, b] = DFT of the (a, b) kernel, wrapped onto the
/// input grid at the shifts the geometry gives output 0, at f.
template <int Rank, class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> circulant_singular_values(const Geometry<Rank>& g, const Scalar* w) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  using Complex = std::complex<Real>;
  // The small matrices are decomposed in at least double precision: cheap
  // at their size, and it keeps float layers off Eigen's complex<float>
  // SSE paths, which load a complex<float> as a double (UBSan: misaligned).
  using Work = std::common_type_t<Real, double>;
  using WorkMatrix = Eigen::Matrix<std::complex<Work>, Eigen::Dynamic, Eigen::Dynamic>;
  const Index n = g.input_spatial, cog = g.out_per_group(), cig = g.in_per_group(), kn = g.kernel_numel;
  const Index pairs = g.out_channels * cig;
  const Index per_frequency = std::min(cog, cig);
  const Index count = checked_mul(checked_mul(n, g.groups, "singular value count"), per_frequency,
                                  "singular value count");

  // The spectrum of every (output channel, input channel of its group) pair.
  std::vector<Tap> taps;
  g.taps_at(0, taps);  // (offset of output 0's input, tap): the shifts
  std::vector<Complex> spectra(static_cast<std::size_t>(checked_mul(pairs, n, "spectra size")));
  parallel_chunks(0, pairs, 16, [&](Index begin, Index end) {
    Eigen::FFT<Real> fft;
    std::vector<Complex> in, out;
    for (Index pair = begin; pair < end; ++pair) {
      Complex* h = spectra.data() + pair * n;
      const Scalar* w_pair = w + pair * kn;
      for (const Tap& t : taps) h[t.offset] += Complex(w_pair[t.tap]);
      fft_in_place<Rank>(h, g.input_size, fft, in, out);
    }
  });

  // Per group and frequency, the singular values of the small matrix.
  Vector<Real> values(count);
  const Index blocks = g.groups * n;  // block b: group b / n, frequency b % n
  parallel_chunks(0, blocks, 64, [&](Index begin, Index end) {
    WorkMatrix m(cog, cig);
    for (Index b = begin; b < end; ++b) {
      const Index group = b / n, f = b % n;
      for (Index a = 0; a < cog; ++a)
        for (Index c = 0; c < cig; ++c)
          m(a, c) = std::complex<Work>(spectra[static_cast<std::size_t>(((group * cog + a) * cig + c) * n + f)]);
      values.segment(b * per_frequency, per_frequency) = svd_values(m).template cast<Real>();
    }
  });
  return values;
}

/// All singular values of the geometry's matrix, descending, by svd_values
/// of the dense matrix (built column-major). Respects max_dense_bytes().
template <int Rank, class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> dense_singular_values(const Geometry<Rank>& g, const Scalar* w) {
  const Index rows = g.output_numel(), cols = g.input_numel();
  check_dense_size(rows, cols, sizeof(Scalar), "the dense matrix for singular_values");
  Matrix<Scalar> t = Matrix<Scalar>::Zero(rows, cols);
  fill_dense(g, w, 0, rows, t.data(), 1, rows, false);
  return svd_values(std::move(t));
}

template <class Real>
Vector<Real> sorted_descending(Vector<Real> values) {
  std::sort(values.data(), values.data() + values.size(), std::greater<Real>());
  return values;
}

}  // namespace detail

/// Whether singular_values(spec, weight) takes the exact FFT path: circular
/// padding, stride 1 and output_size() == input_size in every dimension
/// (any kernel, dilation, padding split, channels and groups).
template <int Rank>
bool is_block_circulant(const ConvSpec<Rank>& spec) {
  return detail::block_circulant(detail::geometry(spec), spec);
}

/// The largest singular value of the layer's matrix T (its spectral norm,
/// the layer's Lipschitz constant in the 2-norm) by power iteration on
/// T^H T with the matrix-free operator: any spec, any size.
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, const SpectralNormOptions& options = {}) {
  return detail::power_iteration(make_operator(spec, weight), options);
}

/// The largest singular value of a transposed layer's matrix (the same as
/// that of the convolution it is the adjoint of).
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight,
    const SpectralNormOptions& options = {}) {
  return detail::power_iteration(make_operator(spec, weight), options);
}

/// All singular values of the layer's matrix T, descending: min(output_numel,
/// input_numel) of them, as a vector of the weights' real type. When
/// is_block_circulant(spec), exactly through the FFT in O(C_out C_in N log N
/// + N groups (C/groups)^3) for N spatial positions; otherwise by an SVD of
/// the dense matrix (O(m n^2)), which max_dense_bytes() guards
/// (spec_error if too large).
template <int Rank, class Derived>
detail::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  if (detail::block_circulant(g, spec))
    return detail::sorted_descending(detail::circulant_singular_values(g, w.data()));
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

/// All singular values of a transposed layer's matrix, descending: those of
/// the convolution it is the adjoint of, by an SVD of the dense matrix.
template <int Rank, class Derived>
detail::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

}  // namespace convmat
