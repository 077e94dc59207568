// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// How public functions take Eigen arguments: any dense expression, viewed
// without a copy when it is already contiguous (a Map over a raw buffer, a
// column of a matrix), evaluated once otherwise; and checked for size.
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "checked.hpp"

namespace convmat {

/// The Eigen types public functions return: a column vector, a column-major
/// matrix (batches: one column per sample) and the row-major dense T.
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace convmat

namespace convmat::detail {

using convmat::Matrix;
using convmat::RowMajorMatrix;
using convmat::Vector;

/// A contiguous read-only view of a vector expression (copied only if needed).
template <class Scalar>
using VectorView = Eigen::Ref<const Vector<Scalar>>;
/// A column-major read-only view of a matrix expression, columns contiguous.
template <class Scalar>
using MatrixView = Eigen::Ref<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Flattened weights of the length the layer needs, or spec_error.
template <class Derived>
VectorView<typename Derived::Scalar> weight_view(const Eigen::MatrixBase<Derived>& weight,
                                                 Index expected, const char* layout) {
  if (weight.size() != expected)
    fail("weight has ", weight.size(), " elements (", weight.rows(), " x ", weight.cols(),
         "), but the layer needs ", expected, " laid out ", layout);
  if (weight.cols() != 1 && weight.rows() != 1)
    fail("weight must be a vector of the flattened weights, not a ", weight.rows(), " x ",
         weight.cols(), " matrix");
  if constexpr (Derived::ColsAtCompileTime == 1)
    return VectorView<typename Derived::Scalar>(weight.derived());
  else
    return VectorView<typename Derived::Scalar>(weight.derived().transpose());
}

/// A batch whose columns are samples of `expected` rows, or spec_error.
template <class Derived>
MatrixView<typename Derived::Scalar> batch_view(const Eigen::MatrixBase<Derived>& batch,
                                                Index expected, const char* what) {
  if (batch.rows() != expected)
    fail(what, " has ", batch.rows(), " rows (", batch.rows(), " x ", batch.cols(),
         "), but the layer needs ", expected, " (one column per sample)");
  return MatrixView<typename Derived::Scalar>(batch.derived());
}

/// static_assert(detail::same_scalar<A, B>::value) as a public function's
/// first statement: the class is instantiated there and then,
/// so that this message is the first error, before any overload
/// resolution in the function's body fails on the mixed types.
template <class A, class B>
struct same_scalar {
  static_assert(std::is_same_v<typename A::Scalar, typename B::Scalar>,
                "convmat: weights and inputs must have the same Scalar type (float weights with double inputs, "
                "or the reverse); cast one with .cast<T>()");
  static constexpr bool value = std::is_same_v<typename A::Scalar, typename B::Scalar>;
};

}  // namespace convmat::detail
