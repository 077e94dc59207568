// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// T without the matrix: ConvOperator holds a layer's geometry and its
// weights and multiplies through the library's one product path
// (detail/unfold_product.hpp): T X as a blocked unfold and one GEMM per
// group, T^T Y and T^H Y as the GEMM with the transposed weights and a
// blocked fold, a panel of about 512 columns at a time in a bounded
// per-thread workspace, with OpenMP in threads. A vector is a batch of one;
// a matrix is a batch, one column per sample. So a layer whose dense matrix
// would not fit in memory can still be solved with, at the speed of
// convolve_unfold. It follows Eigen's "matrix-free solvers" recipe, so
// Eigen::ConjugateGradient, Eigen::BiCGSTAB and
// Eigen::LeastSquaresConjugateGradient (from <Eigen/IterativeLinearSolvers>,
// with Eigen::IdentityPreconditioner) take it, or one of its two
// companions, directly:
//
//   - ConvOperator      T, with transpose() and adjoint()  (BiCGSTAB, LSCG)
//   - NormalOperator    T^H T + lambda I, self-adjoint     (ConjugateGradient)
//   - TikhonovOperator  [T; sqrt(lambda) I]                (LSCG with Tikhonov)
//
// A solver keeps a pointer to the operator it was given: keep the operator
// alive while the solver is used.
#pragma once

#include <Eigen/Core>
#include <Eigen/IterativeLinearSolvers>
#include <Eigen/SparseCore>
#include <cmath>
#include <algorithm>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <vector>

#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "detail/unfold_product.hpp"
#include "spec.hpp"

namespace convmat {

template <class Scalar, int Rank>
class ConvOperator;
template <class Scalar, int Rank>
class NormalOperator;
template <class Scalar, int Rank>
class TikhonovOperator;

namespace detail {

/// What Eigen asks of a matrix-free operator — the typedefs, the flags and
/// a checked `operator*` — and apply(), written once for the three
/// operators. Derived provides rows(), cols() and apply_batch(x, x_stride,
/// y, y_stride, batch): Y = A X for `batch` contiguous columns.
template <class Derived, class ScalarType>
class MatrixFreeBase : public Eigen::EigenBase<Derived> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;
  using StorageIndex = int;
  enum { ColsAtCompileTime = Eigen::Dynamic, MaxColsAtCompileTime = Eigen::Dynamic, IsRowMajor = false };

  /// The product with a vector or a matrix (one column per sample), as an
  /// Eigen expression: assign it to a vector or matrix to evaluate it. A
  /// right-hand side whose row count is not cols() is a spec_error.
  /// Weights and right-hand side of different Scalar types are one clear
  /// static_assert, not Eigen's errors about the mixed product.
  template <class Rhs>
  auto operator*(const Eigen::MatrixBase<Rhs>& x) const {
    static_assert(std::is_same_v<typename Rhs::Scalar, Scalar>,
                  "convmat: the operator's weights and the vector or matrix it multiplies must have the same "
                  "Scalar type (float weights with a double vector, or the reverse); cast one with .cast<T>()");
    if constexpr (std::is_same_v<typename Rhs::Scalar, Scalar>) {
      const Derived& self = static_cast<const Derived&>(*this);
      if (x.rows() != self.cols())
        fail("operator product: the right-hand side has ", x.rows(), " rows (", x.rows(), " x ", x.cols(),
             "), but the operator is ", self.rows(), " x ", self.cols());
      return Eigen::Product<Derived, Rhs, Eigen::AliasFreeProduct>(self, x.derived());
    }
  }

  /// y = A x for one sample: x has cols() contiguous entries, y rows(); y
  /// is overwritten and must not overlap x. apply_batch with a batch of
  /// one, for callers that manage their own buffers.
  void apply(const Scalar* x, Scalar* y) const {
    const Derived& self = static_cast<const Derived&>(*this);
    self.apply_batch(x, self.cols(), y, self.rows(), 1);
  }
};

/// Whether the memory an Eigen expression with direct access spans
/// overlaps that of another: then writing one changes what the other reads.
template <class A, class B>
bool overlaps(const A& a, const B& b) {
  const auto extent = [](const auto& x) -> Index {
    if (x.size() == 0) return 0;
    return (x.outerSize() - 1) * x.outerStride() + (x.innerSize() - 1) * x.innerStride() + 1;
  };
  const auto* a_begin = reinterpret_cast<const char*>(a.data());
  const auto* b_begin = reinterpret_cast<const char*>(b.data());
  const auto* a_end = reinterpret_cast<const char*>(a.data() + extent(a));
  const auto* b_end = reinterpret_cast<const char*>(b.data() + extent(b));
  return a_begin < b_end && b_begin < a_end;
}

/// Whether every column of an expression of this type is one contiguous
/// array in memory at compile time (a vector, or column-major storage with
/// direct access); innerStride() == 1 is still to be checked at run time.
template <class Xpr>
inline constexpr bool has_contiguous_columns =
    (Eigen::internal::traits<Xpr>::Flags & Eigen::DirectAccessBit) != 0 &&
    (Xpr::ColsAtCompileTime == 1 || (Eigen::internal::traits<Xpr>::Flags & Eigen::RowMajorBit) == 0);

/// The products of a matrix-free operator with a dense vector or matrix,
/// every assignment form Eigen has (=, +=, -=, alpha * ...), through
/// Operator::apply_batch(x, x_stride, y, y_stride, batch). Correct whatever
/// the destination shares with the right-hand side: `x = op * x`,
/// `x.noalias() = op * x` and `X = op * X` read the right-hand side before
/// anything of the destination is written. (Eigen's AliasFreeProduct
/// promises no aliasing, and its default evalTo zeroes the destination
/// first: the documented matrix-free recipe returns zeros for x = op * x.)
template <class Operator>
struct MatrixFreeProduct {
  using Scalar = typename Operator::Scalar;

  /// Calls f(pointer, outer stride) with the right-hand side as contiguous
  /// columns: the expression itself when it is laid out so and shares no
  /// memory with `dst`, else a copy evaluated before dst is touched.
  template <class Dest, class Rhs, class F>
  static void with_columns(const Dest& dst, const Rhs& rhs, F&& f) {
    if constexpr (has_contiguous_columns<Rhs>) {
      bool direct = rhs.innerStride() == 1;
      if constexpr ((Eigen::internal::traits<Dest>::Flags & Eigen::DirectAccessBit) != 0)
        direct = direct && !overlaps(dst, rhs);
      else
        direct = false;  // a destination we cannot see into may alias: copy
      if (direct) return f(rhs.data(), rhs.cols() > 1 ? rhs.outerStride() : rhs.rows());
    }
    const Matrix<Scalar> copy = rhs;
    f(copy.data(), copy.rows());
  }

  /// dst = A * rhs.
  template <class Dest, class Rhs>
  static void eval_to(Dest& dst, const Operator& op, const Rhs& rhs) {
    bool into_dst = false;
    if constexpr (has_contiguous_columns<Dest>) into_dst = dst.innerStride() == 1;
    with_columns(dst, rhs, [&](const Scalar* x, Index x_stride) {
      if (into_dst) {
        if constexpr (has_contiguous_columns<Dest>)
          op.apply_batch(x, x_stride, dst.data(), dst.cols() > 1 ? dst.outerStride() : dst.rows(), rhs.cols());
      } else {
        Matrix<Scalar> y(op.rows(), rhs.cols());
        op.apply_batch(x, x_stride, y.data(), y.rows(), rhs.cols());
        dst = y;
      }
    });
  }

  /// dst += alpha * A * rhs.
  template <class Dest, class Rhs, class Alpha>
  static void scale_and_add(Dest& dst, const Operator& op, const Rhs& rhs, const Alpha& alpha) {
    Matrix<Scalar> y(op.rows(), rhs.cols());
    with_columns(dst, rhs, [&](const Scalar* x, Index x_stride) { op.apply_batch(x, x_stride, y.data(), y.rows(), rhs.cols()); });
    // Scaled by hand, not as `alpha * y`: Eigen 3.4 loads a complex<float>
    // constant as one 8-byte word from wherever its expression keeps it,
    // which may be 4-byte aligned (UBSan: misaligned load).
    const Scalar factor(alpha);
    if (factor == Scalar(-1)) {
      dst -= y;
      return;
    }
    if (factor != Scalar(1))
      for (Index i = 0; i < y.size(); ++i) y.data()[i] *= factor;
    dst += y;
  }
};

/// `batch` columns of `rows` entries, column j at data + j * stride.
template <class Scalar>
using ColumnsMap = Eigen::Map<Matrix<Scalar>, 0, Eigen::OuterStride<>>;
template <class Scalar>
using ConstColumnsMap = Eigen::Map<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// A layer's geometry and its weights, shared by an operator and its
/// transposes. For complex scalars the conjugated weights are kept too.
template <class Scalar, int Rank>
struct OperatorState {
  Geometry<Rank> geometry;
  Vector<Scalar> weight;
  Vector<Scalar> conjugate_weight;  // empty for real scalars
};

}  // namespace detail

/// The matrix T of a layer, matrix-free: `op * x` is the layer (unfold and
/// GEMM, detail::unfold_multiply), `op.transpose() * y` is T^T y and
/// `op.adjoint() * y` is T^H y (GEMM and fold, detail::multiply_fold; the
/// same for real scalars). rows() = output_numel, cols() = input_numel.
/// Copies are cheap and share the weights. Made by make_operator(spec,
/// weight).
template <class ScalarType, int Rank>
class ConvOperator : public detail::MatrixFreeBase<ConvOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  /// An operator for the convolution `geometry` with `weight` laid out
  /// (out_channels, in_channels / groups, kernel...): T if `transposed` is
  /// false, T^T (T^H if also `conjugated`) if true. Prefer make_operator.
  ConvOperator(const detail::Geometry<Rank>& geometry, convmat::Vector<Scalar> weight, bool transposed)
      : transposed_(transposed) {
    if (weight.size() != geometry.weight_numel())  // the products read weight_numel() of them
      detail::fail("ConvOperator: weight has ", weight.size(), " elements, but the geometry needs ",
                   geometry.weight_numel());
    auto state = std::make_shared<detail::OperatorState<Scalar, Rank>>();
    state->geometry = geometry;
    state->weight = std::move(weight);
    if constexpr (Eigen::NumTraits<Scalar>::IsComplex) state->conjugate_weight = state->weight.conjugate();
    state_ = std::move(state);
  }

  /// Rows of the matrix: the size of the vector `op * x` returns.
  Index rows() const { return transposed_ ? state_->geometry.input_numel() : state_->geometry.output_numel(); }
  /// Columns of the matrix: the size of the vector `op * x` takes.
  Index cols() const { return transposed_ ? state_->geometry.output_numel() : state_->geometry.input_numel(); }

  /// T^T as an operator (the transposed layer; no matrix is built).
  ConvOperator transpose() const { return ConvOperator(state_, !transposed_, conjugated_); }
  /// T^H as an operator: the transpose with conjugated weights.
  ConvOperator adjoint() const {
    return ConvOperator(state_, !transposed_, Eigen::NumTraits<Scalar>::IsComplex && !conjugated_);
  }

  /// Y = op X for `batch` samples: column j of X starts at x + j *
  /// x_stride (cols() contiguous entries), of Y at y + j * y_stride (rows()
  /// entries, overwritten; no overlap with X). What `op * X` runs, and
  /// apply(x, y) with a batch of one: unfold and GEMM for T (and conj(T)),
  /// GEMM and fold for T^T and T^H, a bounded workspace per thread.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    const auto& state = *state_;
    const auto& g = state.geometry;
    // conj(T) and T^H read the conjugated weights, T and T^T the weights.
    const Scalar* w = conjugated_ ? state.conjugate_weight.data() : state.weight.data();
    if (!transposed_)
      detail::unfold_multiply(g, w, x, x_stride, detail::whole_input(g), y, y_stride, batch, detail::whole_output(g));
    else
      detail::multiply_fold(g, w, x, x_stride, y, y_stride, detail::whole_input(g), batch, detail::whole_output(g),
                            true);
  }

 private:
  ConvOperator(std::shared_ptr<const detail::OperatorState<Scalar, Rank>> state, bool transposed, bool conjugated)
      : state_(std::move(state)), transposed_(transposed), conjugated_(conjugated) {}

  std::shared_ptr<const detail::OperatorState<Scalar, Rank>> state_;
  bool transposed_ = false;   // apply the geometry's adjoint instead of the convolution
  bool conjugated_ = false;   // with conjugated weights
};

/// The layer `spec` with `weight` (flattened (out_channels, in_channels /
/// groups, kernel...)) as a matrix-free operator: `op * x == conv_matrix(spec,
/// weight) * x` without the matrix. The weights are copied into the operator.
template <int Rank, class Derived>
ConvOperator<typename Derived::Scalar, Rank> make_operator(const ConvSpec<Rank>& spec,
                                                           const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  return ConvOperator<typename Derived::Scalar, Rank>(g, w, false);
}

/// The transposed layer `spec` with `weight` (flattened (in_channels,
/// out_channels / groups, kernel...)) as a matrix-free operator:
/// `op * x == conv_transpose_matrix(spec, weight) * x`.
template <int Rank, class Derived>
ConvOperator<typename Derived::Scalar, Rank> make_operator(const ConvTransposeSpec<Rank>& spec,
                                                           const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);  // the convolution this layer is the adjoint of
  const auto w = detail::weight_view(weight, g.weight_numel(), "(in_channels, out_channels / groups, kernel...)");
  return ConvOperator<typename Derived::Scalar, Rank>(g, w, true);
}

/// The normal operator T^H T + lambda I of a ConvOperator T (cols() x
/// cols()): self-adjoint and positive semi-definite, positive definite for
/// lambda > 0 — what Eigen::ConjugateGradient<NormalOperator, Eigen::Lower |
/// Eigen::Upper, Eigen::IdentityPreconditioner> needs. Solving it with the
/// right-hand side T^H b gives the Tikhonov-regularised least-squares
/// solution argmin |T x - b|^2 + lambda |x|^2.
template <class ScalarType, int Rank>
class NormalOperator : public detail::MatrixFreeBase<NormalOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  NormalOperator(ConvOperator<Scalar, Rank> op, RealScalar lambda) : op_(std::move(op)), lambda_(lambda) {
    if (!(lambda >= RealScalar(0)))
      detail::fail("normal_operator: lambda must be non-negative, not ", lambda);
  }

  Index rows() const { return op_.cols(); }
  Index cols() const { return op_.cols(); }
  /// The operator is self-adjoint: its adjoint is itself.
  const NormalOperator& adjoint() const { return *this; }
  /// The regularisation weight lambda.
  RealScalar lambda() const { return lambda_; }
  /// The ConvOperator T it is the normal operator of.
  const ConvOperator<Scalar, Rank>& conv() const { return op_; }

  /// Y = (T^H T + lambda I) X for `batch` columns (see
  /// ConvOperator::apply_batch): T X for the whole batch, then T^H of it.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    convmat::Matrix<Scalar> t(op_.rows(), batch);  // T X
    op_.apply_batch(x, x_stride, t.data(), t.rows(), batch);
    op_.adjoint().apply_batch(t.data(), t.rows(), y, y_stride, batch);
    if (lambda_ != RealScalar(0))
      detail::ColumnsMap<Scalar>(y, cols(), batch, Eigen::OuterStride<>(y_stride)) +=
          lambda_ * detail::ConstColumnsMap<Scalar>(x, cols(), batch, Eigen::OuterStride<>(x_stride));
  }

 private:
  ConvOperator<Scalar, Rank> op_;
  RealScalar lambda_;
};

/// T^H T + lambda I for Eigen::ConjugateGradient (see NormalOperator).
template <class Scalar, int Rank>
NormalOperator<Scalar, Rank> normal_operator(const ConvOperator<Scalar, Rank>& op,
                                             typename Eigen::NumTraits<Scalar>::Real lambda = 0) {
  return NormalOperator<Scalar, Rank>(op, lambda);
}

/// The stacked operator A = [T; sqrt(lambda) I] ((rows + cols) x cols) of a
/// ConvOperator T, or its transpose / adjoint [T^T, sqrt(lambda) I]: least
/// squares on it, |A x - [b; 0]|^2 = |T x - b|^2 + lambda |x|^2, is
/// Tikhonov regularisation, so Eigen::LeastSquaresConjugateGradient<
/// TikhonovOperator, Eigen::IdentityPreconditioner> solves the regularised
/// problem from the right-hand side rhs(b) = [b; 0].
template <class ScalarType, int Rank>
class TikhonovOperator : public detail::MatrixFreeBase<TikhonovOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  TikhonovOperator(ConvOperator<Scalar, Rank> op, RealScalar lambda)
      : TikhonovOperator(std::move(op), RealScalar(0), true) {
    if (!(lambda >= RealScalar(0)))
      detail::fail("tikhonov_operator: lambda must be non-negative, not ", lambda);
    scale_ = std::sqrt(lambda);
  }

  Index rows() const { return stacked_ ? op_.rows() + op_.cols() : op_.rows(); }
  Index cols() const { return stacked_ ? op_.cols() : op_.rows() + op_.cols(); }

  /// [T^T, sqrt(lambda) I] (or back).
  TikhonovOperator transpose() const { return TikhonovOperator(op_.transpose(), scale_, !stacked_); }
  /// [T^H, sqrt(lambda) I] (or back).
  TikhonovOperator adjoint() const { return TikhonovOperator(op_.adjoint(), scale_, !stacked_); }

  /// The right-hand side [b; 0] of the stacked problem, for b of T's rows.
  template <class Derived>
  convmat::Vector<Scalar> rhs(const Eigen::MatrixBase<Derived>& b) const {
    if (!stacked_) detail::fail("TikhonovOperator::rhs: call it on the stacked operator [T; sqrt(lambda) I]");
    if (b.size() != op_.rows() || (b.rows() != 1 && b.cols() != 1))
      detail::fail("TikhonovOperator::rhs: b has ", b.rows(), " x ", b.cols(), " entries, but T has ",
                   op_.rows(), " rows");
    convmat::Vector<Scalar> stacked = convmat::Vector<Scalar>::Zero(rows());
    stacked.head(op_.rows()) = b.reshaped();
    return stacked;
  }

  /// Y = A X for `batch` columns (see ConvOperator::apply_batch): T's
  /// (or T^T's, T^H's) product on the whole batch, then the identity part.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    using Map = detail::ColumnsMap<Scalar>;
    using ConstMap = detail::ConstColumnsMap<Scalar>;
    op_.apply_batch(x, x_stride, y, y_stride, batch);  // the first op_.rows() entries of each column
    if (stacked_)  // [T X; s X]
      Map(y + op_.rows(), op_.cols(), batch, Eigen::OuterStride<>(y_stride)) =
          scale_ * ConstMap(x, op_.cols(), batch, Eigen::OuterStride<>(x_stride));
    else  // T' X_top + s X_bottom
      Map(y, op_.rows(), batch, Eigen::OuterStride<>(y_stride)) +=
          scale_ * ConstMap(x + op_.cols(), op_.rows(), batch, Eigen::OuterStride<>(x_stride));
  }

 private:
  TikhonovOperator(ConvOperator<Scalar, Rank> op, RealScalar scale, bool stacked)
      : op_(std::move(op)), scale_(scale), stacked_(stacked) {}

  ConvOperator<Scalar, Rank> op_;  // T when stacked, else T^T or T^H
  RealScalar scale_;               // sqrt(lambda)
  bool stacked_;
};

/// [T; sqrt(lambda) I] for Eigen::LeastSquaresConjugateGradient (see TikhonovOperator).
template <class Scalar, int Rank>
TikhonovOperator<Scalar, Rank> tikhonov_operator(const ConvOperator<Scalar, Rank>& op,
                                                 typename Eigen::NumTraits<Scalar>::Real lambda) {
  return TikhonovOperator<Scalar, Rank>(op, lambda);
}

// ---------------------------------------------------------------------------
// Eigen's solvers on the operators, spelled once
// ---------------------------------------------------------------------------

/// Eigen::LeastSquaresConjugateGradient on a matrix-free operator:
/// `convmat::LeastSquaresSolver<decltype(op)> lscg(op);` for min |T x - b|
/// (a ConvOperator) or the Tikhonov problem (a TikhonovOperator).
template <class Operator>
using LeastSquaresSolver = Eigen::LeastSquaresConjugateGradient<Operator, Eigen::IdentityPreconditioner>;
/// Eigen::ConjugateGradient on a self-adjoint operator (a NormalOperator).
template <class Operator>
using ConjugateGradientSolver =
    Eigen::ConjugateGradient<Operator, Eigen::Lower | Eigen::Upper, Eigen::IdentityPreconditioner>;
/// Eigen::BiCGSTAB on a square operator: T x = b.
template <class Operator>
using BiCGSTABSolver = Eigen::BiCGSTAB<Operator, Eigen::IdentityPreconditioner>;

}  // namespace convmat

// Eigen's side of the recipe: the operators are "sparse" for Eigen's
// expression machinery, and their product with a dense vector or matrix is
// evaluated through apply_batch() (detail::MatrixFreeProduct).
namespace Eigen::internal {

template <class Scalar, int Rank>
struct traits<convmat::ConvOperator<Scalar, Rank>> : traits<Eigen::SparseMatrix<Scalar>> {};
template <class Scalar, int Rank>
struct traits<convmat::NormalOperator<Scalar, Rank>> : traits<Eigen::SparseMatrix<Scalar>> {};
template <class Scalar, int Rank>
struct traits<convmat::TikhonovOperator<Scalar, Rank>> : traits<Eigen::SparseMatrix<Scalar>> {};

#define CONVMAT_MATRIX_FREE_PRODUCT(Operator)                                                              \
  template <class Scalar, int Rank, class Rhs, int ProductType>                                            \
  struct generic_product_impl<Operator<Scalar, Rank>, Rhs, SparseShape, DenseShape, ProductType>           \
      : generic_product_impl_base<Operator<Scalar, Rank>, Rhs,                                             \
                                  generic_product_impl<Operator<Scalar, Rank>, Rhs, SparseShape,           \
                                                       DenseShape, ProductType>> {                         \
    using Impl = convmat::detail::MatrixFreeProduct<Operator<Scalar, Rank>>;                               \
    template <class Dest>                                                                                  \
    static void evalTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs) {                     \
      Impl::eval_to(dst, lhs, rhs);                                                                        \
    }                                                                                                      \
    template <class Dest>                                                                                  \
    static void addTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs) {                      \
      Impl::scale_and_add(dst, lhs, rhs, Scalar(1));                                                       \
    }                                                                                                      \
    template <class Dest>                                                                                  \
    static void subTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs) {                      \
      Impl::scale_and_add(dst, lhs, rhs, Scalar(-1));                                                      \
    }                                                                                                      \
    template <class Dest>                                                                                  \
    static void scaleAndAddTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs,                \
                              const typename Product<Operator<Scalar, Rank>, Rhs>::Scalar& alpha) {        \
      Impl::scale_and_add(dst, lhs, rhs, alpha);                                                           \
    }                                                                                                      \
  };

CONVMAT_MATRIX_FREE_PRODUCT(convmat::ConvOperator)
CONVMAT_MATRIX_FREE_PRODUCT(convmat::NormalOperator)
CONVMAT_MATRIX_FREE_PRODUCT(convmat::TikhonovOperator)
#undef CONVMAT_MATRIX_FREE_PRODUCT

}  // namespace Eigen::internal
