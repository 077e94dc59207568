// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Singular values of T, for layers of any size:
//
//   - spectral_norm: the largest, by block Golub-Kahan-Lanczos on the
//     matrix-free operator (detail/lanczos.hpp), with the residual reached;
//   - singular_values(spec, w, k): the k largest, the same way — or exactly
//     by the FFT when T is block-circulant;
//   - singular_values(spec, w): all of them, exactly by the FFT when T is
//     block-circulant, else by an SVD of the dense matrix (detail/svd.hpp);
//   - spectral_norm_bound: a certified bracket lower <= ||T||_2 <= upper for
//     every padding mode and stride, the upper bound by the FFT of the
//     circulant layer T is a piece of (detail/circulant.hpp).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "dense.hpp"
#include "detail/arguments.hpp"
#include "detail/circulant.hpp"
#include "detail/geometry.hpp"
#include "detail/lanczos.hpp"
#include "detail/svd.hpp"
#include "limits.hpp"
#include "operator.hpp"
#include "spec.hpp"

namespace convmat {

/// How the Lanczos iteration of spectral_norm, singular_values(spec, w, k),
/// largest_singular_values and spectral_norm_bound runs. Every field's
/// default (0) picks a value that suits the call.
struct SpectralNormOptions {
  /// Converged when every wanted singular triplet (sigma, u, v) has
  /// |T^H u - sigma v| <= tolerance * sigma_1 and |T v - sigma u| as small,
  /// both measured with the final vectors: each value is then within
  /// tolerance * sigma_1 of a singular value of T. 0: 1e-10 in double,
  /// 1e-5 in float (about where float products stop being exact enough).
  double tolerance = 0;
  /// The most products with T (each paired with one with T^H) before
  /// giving up (converged = false). 0: 1000 + 100 k for k values.
  Index max_iterations = 0;
  /// Vectors added per Lanczos step. Any block finds every copy of a
  /// repeated value: once the wanted values have converged, a fresh start
  /// orthogonal to them looks for copies that were missed. 0: 1, which took
  /// the fewest products on every layer measured (k = 6 of a 16384-column
  /// layer: 330-460 products with 1, 390-620 with 2, 700-1200 with 4).
  Index block_size = 0;
  /// The most basis vectors kept before a restart. 0: max(40, 3 k + 2 b).
  Index basis_size = 0;
  /// Seed of the random starting block; the result is deterministic.
  std::uint64_t seed = 2019;
};

/// What spectral_norm found.
template <class Real>
struct SpectralNorm {
  Real value = 0;          ///< the largest Ritz value: never above ||T||, up to rounding
  bool converged = false;  ///< whether `residual` met the tolerance within max_iterations
  Index iterations = 0;    ///< products with T performed (as many with T^H)
  Real residual = 0;       ///< max(|T^H u - value v|, |T v - value u|) / value, measured
};

/// The k largest singular values of an operator, with what the iteration reached.
template <class Real>
struct SingularValues {
  /// Descending: the k asked for, or fewer when max_iterations stopped the
  /// iteration before its basis held k vectors (converged is then false).
  convmat::Vector<Real> values;
  convmat::Vector<Real> residuals;  ///< of each value's triplet, measured (absolute)
  bool converged = false;          ///< all k found, every residual <= tolerance * values(0)
  Index iterations = 0;            ///< products with T performed (as many with T^H)
};

/// A certified bracket of the spectral norm: lower <= ||T||_2 <= upper.
template <class Real>
struct SpectralNormBound {
  Real lower = 0;  ///< |T v| for a unit vector v (the Lanczos estimate's): always <= ||T||
  Real upper = 0;  ///< by the FFT of the circulant layer T is part of: always >= ||T||
  bool converged = false;  ///< whether the Lanczos estimate behind `lower` converged
  Index iterations = 0;    ///< products with T it took
};

namespace detail {

/// The Lanczos settings for k values of a layer of scalar type Scalar.
template <class Scalar>
LanczosSettings lanczos_settings(const SpectralNormOptions& options, Index k, const char* caller) {
  if (!(options.tolerance >= 0) || !std::isfinite(options.tolerance) || options.max_iterations < 0 ||
      options.block_size < 0 || options.basis_size < 0)
    fail(caller, ": tolerance must be finite and non-negative, and max_iterations, block_size and basis_size "
                 "not negative: tolerance=", options.tolerance, ", max_iterations=", options.max_iterations,
         ", block_size=", options.block_size, ", basis_size=", options.basis_size);
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  LanczosSettings s;
  s.wanted = k;
  s.tolerance = options.tolerance > 0 ? options.tolerance : std::is_same_v<Real, float> ? 1e-5 : 1e-10;
  s.max_products = options.max_iterations > 0 ? options.max_iterations : 1000 + 100 * k;
  s.block = options.block_size > 0 ? options.block_size : 1;
  s.basis = options.basis_size > 0 ? options.basis_size : std::max<Index>(40, 3 * k + 2 * s.block);
  s.seed = options.seed;
  return s;
}

template <class Scalar>
SpectralNorm<typename Eigen::NumTraits<Scalar>::Real> spectral_norm_of(const LanczosResult<Scalar>& r) {
  SpectralNorm<typename Eigen::NumTraits<Scalar>::Real> n;
  n.value = r.values(0);
  n.converged = r.converged;
  n.iterations = r.products;
  n.residual = n.value > 0 ? r.residuals(0) / n.value : r.residuals(0);
  return n;
}

/// The circulant model of a layer (detail/circulant.hpp).
template <int Rank>
CirculantModel<Rank> circulant_model_of(const ConvSpec<Rank>& spec) {
  return circulant_model<Rank>(conv_axes(spec), spec.in_channels, spec.out_channels, spec.groups);
}
template <int Rank>
CirculantModel<Rank> circulant_model_of(const ConvTransposeSpec<Rank>& spec) {
  return circulant_model<Rank>(conv_axes(spec), spec.out_channels, spec.in_channels, spec.groups);
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

template <class Spec>
void check_wanted(const Spec& spec, Index k) {
  const Index most = std::min(spec.output_numel(), spec.input_numel());
  if (k < 1 || k > most)
    fail("singular_values: k must be between 1 and min(output_numel, input_numel) = ", most, ", not ", k);
}

template <class Real>
convmat::Vector<Real> converged_values(const SingularValues<Real>& r, const SpectralNormOptions& options,
                                      const char* what) {
  if (!r.converged) {
    const Real worst = r.residuals.size() ? r.residuals.maxCoeff() : Real(0);
    fail_convergence("singular_values: the ", r.values.size(), " largest singular values of ", what,
                     " did not converge in ", r.iterations, " products: the largest residual is ",
                     r.values.size() && r.values(0) > 0 ? worst / r.values(0) : worst,
                     " of sigma_1, the tolerance ",
                     options.tolerance > 0 ? options.tolerance : std::is_same_v<Real, float> ? 1e-5 : 1e-10,
                     "; raise SpectralNormOptions::max_iterations or the tolerance, or call "
                     "largest_singular_values for the estimates as they are");
  }
  return r.values;
}

/// The certified upper bound of ||T|| from the circulant model: ||P|| times
/// the largest frequency norm, computed in double, raised by a margin
/// that covers the rounding of the FFT and the eigenvalue solver.
template <int Rank, class Scalar>
double circulant_upper_bound(const CirculantModel<Rank>& model, const Scalar* w) {
  const double norm = circulant_norm(model, w);
  double log_grid = 0;
  for (Index n : model.grid) log_grid += std::log2(static_cast<double>(n) + 1);
  const double terms = static_cast<double>(model.columns_per_group() + model.out_per_group() +
                                           static_cast<Index>(model.tap_shift.size())) + log_grid;
  const double margin = 64 * std::numeric_limits<double>::epsilon() * terms;
  return model.padding_norm * norm * (1 + margin);
}

}  // namespace detail

/// The k largest singular values of any matrix-free operator `op` (a
/// ConvOperator, or anything with rows(), cols(), adjoint() and
/// apply_batch(x, x_stride, y, y_stride, batch)) by block Golub-Kahan-
/// Lanczos bidiagonalisation with full reorthogonalisation and thick
/// restarts, with the residuals reached. Never throws for convergence:
/// see `converged`.
template <class Operator>
SingularValues<typename Eigen::NumTraits<typename Operator::Scalar>::Real> largest_singular_values(
    const Operator& op, Index k, const SpectralNormOptions& options = {}) {
  using Scalar = typename Operator::Scalar;
  const Index most = std::min(op.rows(), op.cols());
  if (k < 1 || k > most)
    detail::fail("largest_singular_values: k must be between 1 and min(rows, cols) = ", most, ", not ", k);
  const auto r = detail::block_lanczos(op, detail::lanczos_settings<Scalar>(options, k, "largest_singular_values"));
  return {r.values, r.residuals, r.converged, r.products};
}

/// The largest singular value of the layer's matrix T (its spectral norm,
/// the layer's Lipschitz constant in the 2-norm), by block Lanczos on the
/// matrix-free operator: any spec, any size. Clustered and repeated top
/// values converge as isolated ones do; `residual` says what was reached.
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, const SpectralNormOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  return detail::spectral_norm_of(
      detail::block_lanczos(make_operator(spec, weight), detail::lanczos_settings<Scalar>(options, 1, "spectral_norm")));
}

/// The largest singular value of a transposed layer's matrix (the same as
/// that of the convolution it is the adjoint of).
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight,
    const SpectralNormOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  return detail::spectral_norm_of(
      detail::block_lanczos(make_operator(spec, weight), detail::lanczos_settings<Scalar>(options, 1, "spectral_norm")));
}

/// Whether the layer's matrix is block-circulant, so singular_values takes
/// the exact FFT path: circular padding and, in every dimension, a stride
/// that divides the input with output_size == input_size / stride (with
/// stride 1: the size kept), any kernel, dilation, padding split,
/// channels and groups.
template <int Rank>
bool is_block_circulant(const ConvSpec<Rank>& spec) {
  spec.validate();
  return spec.padding_mode == PaddingMode::circular && detail::circulant_model_of(spec).exact;
}

/// All singular values of the layer's matrix T, descending: min(output_numel,
/// input_numel) of them, as a vector of the weights' real type. When
/// is_block_circulant(spec), exactly through the FFT in O(C_out C_in N log N
/// + N groups (C/groups)^3) for N spatial positions; otherwise by an SVD of
/// the dense matrix (O(m n^2)). Both are held to max_dense_bytes()
/// (memory_limit_error beyond it).
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  if (is_block_circulant(spec))
    return detail::sorted_descending(detail::circulant_singular_values(detail::circulant_model_of(spec), w.data()));
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

/// All singular values of a transposed layer's matrix, descending: those of
/// the convolution it is the adjoint of, by an SVD of the dense matrix.
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

/// The k largest singular values of the layer's matrix T, descending, for
/// a layer of any size: exactly by the FFT when is_block_circulant(spec)
/// (and its spectra fit in max_dense_bytes()), else by
/// largest_singular_values on the matrix-free operator. Throws
/// convergence_error if those did not converge within
/// options.max_iterations (largest_singular_values returns them as they are).
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, Index k,
    const SpectralNormOptions& options = {}) {
  detail::check_wanted(spec, k);
  const auto w = detail::weight_view(weight, spec.weight_numel(), detail::conv_weight_layout);
  if (is_block_circulant(spec)) {
    const auto model = detail::circulant_model_of(spec);
    if (detail::circulant_values_fit<typename Derived::Scalar>(model))  // else the iteration: it needs the operator only
      return detail::sorted_descending(detail::circulant_singular_values(model, w.data())).head(k).eval();
  }
  return detail::converged_values(largest_singular_values(make_operator(spec, w), k, options), options, "the layer");
}

/// The k largest singular values of a transposed layer's matrix, by
/// largest_singular_values on its operator (convergence_error if they did
/// not converge).
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, Index k,
    const SpectralNormOptions& options = {}) {
  detail::check_wanted(spec, k);
  return detail::converged_values(largest_singular_values(make_operator(spec, weight), k, options), options,
                                  "the transposed layer");
}

/// A certified bracket lower <= ||T||_2 <= upper for every padding mode,
/// stride, dilation and group count, and for transposed layers: `upper`
/// is ||P|| times the norm of the circulant convolution T is a restriction
/// of (exact by the FFT; P the padding operator, of norm 1 for zeros and
/// for circular padding whose strides divide the input), raised by a
/// rounding margin; `lower` is |T v| for the unit vector v of the Lanczos
/// estimate. Everything runs in double (a float layer's weights are exact
/// in it), so the bracket holds for the weights as given.
template <class Spec, class Derived>
SpectralNormBound<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm_bound(
    const Spec& spec, const Eigen::MatrixBase<Derived>& weight, const SpectralNormOptions& options = {}) {
  using Real = typename Eigen::NumTraits<typename Derived::Scalar>::Real;
  using Work = std::conditional_t<Eigen::NumTraits<typename Derived::Scalar>::IsComplex, std::complex<double>, double>;
  const convmat::Vector<Work> w = detail::weight_view(weight, spec.weight_numel(), detail::weight_layout(spec)).template cast<Work>();
  const auto settings = detail::lanczos_settings<Work>(options, 1, "spectral_norm_bound");
  // The upper bound first: the FFT (milliseconds to a second), then the
  // Lanczos estimate (the products) for the lower one.
  const double upper = detail::circulant_upper_bound(detail::circulant_model_of(spec), w.data());
  const auto lanczos = detail::block_lanczos(make_operator(spec, w), settings);
  SpectralNormBound<Real> bound;
  const double lower = lanczos.image_norms(0) / lanczos.right.col(0).norm();
  // Lowered past the rounding of the product |T v| (relative 1e-12 covers
  // any layer whose entries per row are fewer than 10^3), then rounded
  // down and up to the weights' type, so the bracket still holds. (Rounded
  // down from the lowered value: a float rounded to nearest would undo the
  // margin, and a norm that is itself a float, as circular layers' often
  // are, came out 3e-16 above the exact one.)
  const double lowered = lower * (1 - 1e-12);
  bound.lower = static_cast<Real>(lowered);
  if (bound.lower > lowered) bound.lower = std::nextafter(bound.lower, Real(0));
  CONVMAT_ASSERT(upper >= lower, "the certified upper bound is at least the Lanczos lower bound");
  bound.upper = static_cast<Real>(upper);
  if (bound.upper < upper) bound.upper = std::nextafter(bound.upper, std::numeric_limits<Real>::infinity());
  bound.converged = lanczos.converged;
  bound.iterations = lanczos.products;
  return bound;
}

}  // namespace convmat
