// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Singular values of a small dense matrix, right on repeated values.
//
// Householder bidiagonalisation followed by the eigenvalues of the
// Golub-Kahan tridiagonal matrix by symmetric QR, LAPACK's way without
// vectors. Not Eigen's BDCSVD: convolution matrices have highly repeated
// singular values (every symmetry of a layer repeats them), and there Eigen
// 3.4.0's BDCSVD returns wrong values — for the circular 1-channel layer
// input (5, 7), kernel (1, 3), dilation (3, 1), padding (0, 1), weights
// (0.3, -0.7, 0.2), off by 0.11 where the largest is 1.15
// (tests/test_spectral.cpp keeps that case). Not JacobiSVD either: right,
// but 250 times slower at 1024 x 1024.
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <functional>
#include <type_traits>

#include "arguments.hpp"

namespace convmat::detail {

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

/// The largest singular value of `a`: the square root of the largest
/// eigenvalue of its smaller Gram matrix (a^H a or a a^H), by symmetric QR.
template <class Scalar>
typename Eigen::NumTraits<Scalar>::Real largest_svd_value(const Matrix<Scalar>& a) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  if (a.size() == 0) return Real(0);
  const Matrix<Scalar> gram = a.rows() < a.cols() ? Matrix<Scalar>(a * a.adjoint()) : Matrix<Scalar>(a.adjoint() * a);
  if (gram.rows() == 1) return std::sqrt(std::max(Real(0), std::real(gram(0, 0))));
  Eigen::SelfAdjointEigenSolver<Matrix<Scalar>> eigen(gram, Eigen::EigenvaluesOnly);
  if (eigen.info() != Eigen::Success)
    fail("singular_values: the symmetric QR iteration did not converge on a ", gram.rows(), " x ", gram.cols(),
         " Gram matrix");
  return std::sqrt(std::max(Real(0), eigen.eigenvalues()(gram.rows() - 1)));
}

template <class Real>
Vector<Real> sorted_descending(Vector<Real> values) {
  std::sort(values.data(), values.data() + values.size(), std::greater<Real>());
  return values;
}

}  // namespace convmat::detail
