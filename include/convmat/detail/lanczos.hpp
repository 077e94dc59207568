// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The largest singular values of a matrix-free operator A (rows x cols) by
// block Golub-Kahan-Lanczos bidiagonalisation with full reorthogonalisation
// and thick restarts (the block form of Baglama and Reichel's augmented
// implicitly restarted Lanczos bidiagonalisation, "irlba"). It keeps
//
//     A P = Q B,    A^H Q = P B^H + N T E^H,
//
// with P (cols x s) and Q (rows x s) orthonormal, B = Q^H A P small, and
// N T (N orthonormal, T upper triangular) what A^H does to Q's last block
// outside P. The basis grows a block of b columns at a time (b products
// with A, then b with A^H, through the operator's apply_batch); the
// singular triplets (sigma, u, v) of B give Ritz triplets (sigma, Q u, P v)
// of A, exact on one side (A P v = sigma Q u) and off on the other by
// |T u_last| (u's entries on the last block) — read off the small matrices,
// no product needed. When the basis is full, the best Ritz vectors are kept
// and the basis grows again from N. With b >= the multiplicity of a value,
// repeated and clustered top values converge together, as fast as isolated
// ones.
#pragma once

#include <Eigen/Core>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "../limits.hpp"
#include "arguments.hpp"

namespace convmat::detail {

/// Gaussian random entries (complex: both parts), deterministic in `seed`.
template <class Derived>
void fill_random(Eigen::MatrixBase<Derived>& m, std::uint64_t seed) {
  using Scalar = typename Derived::Scalar;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  for (Index j = 0; j < m.cols(); ++j)
    for (Index i = 0; i < m.rows(); ++i) {
      if constexpr (Eigen::NumTraits<Scalar>::IsComplex)
        m(i, j) = Scalar(normal(rng), normal(rng));
      else
        m(i, j) = static_cast<Scalar>(normal(rng));
    }
}

/// How a BlockLanczos run goes: the settings, already checked.
struct LanczosSettings {
  Index wanted = 1;            ///< how many of the largest singular values
  double tolerance = 1e-10;    ///< converged when each residual <= tolerance * sigma_1
  Index max_products = 1000;   ///< products with A (each paired with one with A^H)
  Index block = 4;             ///< columns added per step
  Index basis = 40;            ///< the most basis columns before a restart
  std::uint64_t seed = 2019;   ///< of the random starting block
  /// A known lower bound on sigma_1 of the whole operator, for runs on a
  /// deflated part (whose own largest value may be zero): the tolerance
  /// is relative to the larger of it and the run's own largest value.
  double scale = 0;
};

/// What a BlockLanczos run found: the `wanted` largest Ritz values,
/// descending, their residuals max(|A v - sigma u|, |A^H u - sigma v|)
/// (measured by products with the final vectors, not estimated), and the
/// vectors themselves (unit columns u of rows entries, v of cols).
template <class Scalar>
struct LanczosResult {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  Vector<Real> values, residuals;
  Vector<Real> image_norms;  ///< |A v| of each right vector v: a lower bound on sigma_1 for the first
  Matrix<Scalar> left, right;
  bool converged = false;
  Index products = 0;  ///< with A (as many with A^H), the final check included
};

/// The block Lanczos bidiagonalisation of one operator, step by step:
/// expand() grows the basis by a block, ritz() decomposes B, restart()
/// keeps the best Ritz vectors. run() strings them together.
template <class Operator>
class BlockLanczos {
 public:
  using Scalar = typename Operator::Scalar;
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  /// B and its SVD are small: decomposed in at least double precision.
  using Work = std::common_type_t<Real, double>;
  using WorkScalar = std::conditional_t<Eigen::NumTraits<Scalar>::IsComplex, std::complex<Work>, Work>;
  using WorkMatrix = Eigen::Matrix<WorkScalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// The iteration on `a`, or, with locked singular vectors (columns of
  /// `locked_left`, rows x l, and `locked_right`, cols x l), on the part of
  /// `a` orthogonal to them: every basis vector is kept orthogonal to the
  /// locked ones, so what it finds are other singular triplets.
  BlockLanczos(const Operator& a, const LanczosSettings& settings, Matrix<Scalar> locked_left = {},
               Matrix<Scalar> locked_right = {})
      : a_(a), adjoint_(a.adjoint()), settings_(settings), rows_(a.rows()), cols_(a.cols()),
        locked_left_(std::move(locked_left)), locked_right_(std::move(locked_right)) {
    space_ = std::min(rows_, cols_) - locked_right_.cols();
    basis_ = std::min(std::max(settings.basis, settings.wanted + settings.block), space_);
    block_ = std::max<Index>(1, std::min(settings.block, basis_));
    // P and Q (and the locked vectors), allocated at once: guarded first.
    check_dense_size(checked_add(rows_, cols_, "the Lanczos basis"), basis_ + block_ + 2, sizeof(Scalar),
                     "the Lanczos basis (vectors of the operator's rows and of its columns)",
                     "pass a smaller SpectralNormOptions::basis_size, or raise the limit with set_max_dense_bytes()");
    p_.resize(cols_, basis_ + block_);
    q_.resize(rows_, basis_);
    b_ = WorkMatrix::Zero(basis_, basis_);
    // The starting block: random, orthonormal.
    auto start = p_.leftCols(block_);
    fill_random(start, settings.seed);
    next_ = orthonormalise(p_, 0, block_, nullptr, locked_right_);
  }

  /// Runs until the wanted values have converged, max_products is spent or
  /// the space is exhausted (then B's values are exact).
  LanczosResult<Scalar> run() {
    const Index wanted = std::min(settings_.wanted, space_);
    for (;;) {
      if (s_ + next_ > basis_) restart(kept(wanted));
      if (next_ == 0) break;  // A^H Q lies in P: the Ritz values are exact
      expand();
      ritz();
      if (estimated_converged(wanted) || products_ >= settings_.max_products) break;
    }
    return finish(wanted);
  }

 private:
  /// Orthonormalises columns [first, first + count) of `m` against the
  /// `locked` columns, its columns before `first` and each other
  /// (classical Gram-Schmidt, twice), in place. The coefficients on m's
  /// columns go to coefficients(0 .. first + count, column) when given. A
  /// column left (near) zero — the space it would add is already spanned —
  /// is replaced by a random direction with coefficient 0, or dropped when
  /// the space is full. Returns how many columns stand (they stay first).
  template <class Basis>
  Index orthonormalise(Basis& m, Index first, Index count, WorkMatrix* coefficients, const Matrix<Scalar>& locked,
                       Index coefficient_column = 0) {
    const Index dimension = m.rows() - locked.cols();
    const auto project_out_locked = [&](auto& v) {
      if (locked.cols() > 0) v -= locked * (locked.adjoint() * v).eval();
    };
    Index kept = 0;
    std::uint64_t replacements = 0;
    for (Index c = 0; c < count; ++c) {
      const Index at = first + kept;
      if (at != first + c) m.col(at) = m.col(first + c);
      auto v = m.col(at);
      const Real before = v.norm();
      Vector<Scalar> h = Vector<Scalar>::Zero(at);
      // Classical Gram-Schmidt with a second pass only when the first
      // cancelled more than 1 - 1/sqrt(2) of the vector (Daniel, Gragg,
      // Kaufman and Stewart's criterion: otherwise one pass already leaves
      // it orthogonal to working precision, "twice is enough"). Each pass
      // reads the basis twice, so this is most of what a step costs.
      Real after = before;
      for (int pass = 0; pass < 2; ++pass) {
        const Real entering = after;
        project_out_locked(v);
        if (at > 0) {
          const Vector<Scalar> g = m.leftCols(at).adjoint() * v;
          v.noalias() -= m.leftCols(at) * g;
          h += g;
        }
        after = v.norm();
        if (after >= Real(0.7071) * entering) break;
      }
      // Below this, what remains is rounding of what was already spanned.
      const Real floor = Real(64) * Eigen::NumTraits<Real>::epsilon() * std::max(before, scale_);
      if (coefficients) {
        auto column = coefficients->col(coefficient_column + c);
        column.head(at) = h.template cast<WorkScalar>();
      }
      if (after > floor) {
        v /= after;
        if (coefficients) (*coefficients)(at, coefficient_column + c) = WorkScalar(after);
        ++kept;
        continue;
      }
      if (at >= dimension) continue;  // the space is full: drop the column
      // Breakdown: carry on in a random direction the basis does not span.
      // Near the end of the space little of a random vector is left (one
      // free dimension of n leaves about 1/sqrt(n) of it), so the test is
      // relative: what is left must stand above sqrt(epsilon) of the
      // vector, where three Gram-Schmidt passes make it orthogonal to
      // rounding. (An absolute test lost the last column of a full space
      // one time in twenty, and with it the exactness of B.)
      const Real enough = std::sqrt(Eigen::NumTraits<Real>::epsilon());
      for (int attempt = 0; attempt < 8; ++attempt) {
        fill_random(v, settings_.seed + 7919 * (++replacements) + static_cast<std::uint64_t>(at));
        const Real fresh = v.norm();
        for (int pass = 0; pass < 3; ++pass) {
          project_out_locked(v);
          if (at > 0) v -= m.leftCols(at) * (m.leftCols(at).adjoint() * v).eval();
        }
        const Real norm = v.norm();
        if (norm > enough * fresh) {
          v /= norm;
          ++kept;
          break;
        }
      }
    }
    return kept;
  }

  /// Grows P and Q by the pending block N: Q's new block from A N, B's new
  /// columns from the projections, and the next N T from A^H of Q's block.
  void expand() {
    const Index width = next_;
    // Q's block: A N, orthonormalised against Q; the projections are B's columns.
    a_.apply_batch(p_.col(s_).data(), cols_, q_.col(s_).data(), rows_, width);
    products_ += width;
    for (Index c = 0; c < width; ++c) scale_ = std::max(scale_, q_.col(s_ + c).norm());
    b_.middleCols(s_, width).setZero();
    const Index q_kept = orthonormalise(q_, s_, width, &b_, locked_left_, s_);
    // The space of Q is full only when rows < width + s; keep P and Q square.
    const Index added = std::min(width, q_kept);
    last_ = added;
    s_ += added;
    // N T: A^H of Q's new block, orthonormalised against P (N included, now part of it).
    // (Straight into P's free columns: a fresh buffer per step cost more
    // in page faults than the copy.)
    adjoint_.apply_batch(q_.col(s_ - added).data(), rows_, p_.col(s_).data(), cols_, added);
    WorkMatrix coupling = WorkMatrix::Zero(s_ + added, added);
    next_ = orthonormalise(p_, s_, added, &coupling, locked_right_);
    t_ = coupling.bottomRows(added).topRows(next_);  // N's rows: T
  }

  /// The SVD of B: Ritz values (descending), and the estimated residual of
  /// each, |T u_last|.
  void ritz() {
    svd_.compute(b_.topLeftCorner(s_, s_), Eigen::ComputeThinU | Eigen::ComputeThinV);
    estimates_.resize(s_);
    for (Index i = 0; i < s_; ++i)
      estimates_(i) = next_ == 0 ? Work(0)
                                 : (t_ * svd_.matrixU().col(i).tail(last_)).norm();
  }

  /// tolerance * sigma_1: below it, a residual is converged.
  Work threshold() const {
    return Work(settings_.tolerance) * std::max(Work(svd_.singularValues()(0)), Work(settings_.scale));
  }

  /// Every wanted residual estimate is below the threshold, and the last
  /// wanted value stands apart from the next Ritz value: by more than its
  /// residual (then its error is below the residual, Kato-Temple), or the
  /// next one has converged too. A Ritz vector that still mixes two close
  /// singular vectors has a small residual but lies between their values;
  /// this waits until the pair is resolved.
  bool estimated_converged(Index wanted) const {
    const Work limit = threshold();
    for (Index i = 0; i < std::min(wanted, s_); ++i)
      if (!(estimates_(i) <= limit)) return false;
    if (s_ < wanted) return false;
    if (s_ == wanted || wanted == 0) return true;
    const auto& theta = svd_.singularValues();
    return theta(wanted - 1) - theta(wanted) >= estimates_(wanted - 1) || estimates_(wanted) <= limit;
  }

  /// How many Ritz vectors a restart keeps: the wanted ones and a block
  /// more, or half the basis, leaving room for at least one block.
  Index kept(Index wanted) const {
    const Index most = basis_ - block_;
    return std::max<Index>(0, std::min({s_, most, std::max(wanted + block_, basis_ / 2)}));
  }

  /// Keeps the `keep` best Ritz vectors as the new basis (B becomes their
  /// values on the diagonal) and N as the next block.
  void restart(Index keep) {
    const Matrix<Scalar> u = svd_.matrixU().leftCols(keep).template cast<Scalar>();
    const Matrix<Scalar> v = svd_.matrixV().leftCols(keep).template cast<Scalar>();
    rotate_in_place(q_, u);
    rotate_in_place(p_, v);
    for (Index c = 0; c < next_; ++c) p_.col(keep + c) = p_.col(s_ + c);  // N: keep + c < s_ + c
    b_.setZero();
    for (Index i = 0; i < keep; ++i) b_(i, i) = WorkScalar(svd_.singularValues()(i));
    s_ = keep;
  }

  /// m's first r.cols() columns become m.leftCols(r.rows()) * r, in row
  /// blocks through a small buffer: no basis-sized temporaries, whose fresh
  /// pages (faulted in and zeroed at every restart) cost more than the product.
  void rotate_in_place(Matrix<Scalar>& m, const Matrix<Scalar>& r) {
    constexpr Index rows_per_block = 256;
    rotated_.resize(std::min(rows_per_block, m.rows()), r.cols());
    for (Index i = 0; i < m.rows(); i += rows_per_block) {
      const Index h = std::min(rows_per_block, m.rows() - i);
      auto out = rotated_.topRows(h);
      out.noalias() = m.block(i, 0, h, r.rows()) * r;
      m.block(i, 0, h, r.cols()) = out;
    }
  }

  /// The wanted Ritz triplets, their residuals measured with two batch
  /// products, and whether they meet the tolerance.
  LanczosResult<Scalar> finish(Index wanted) {
    LanczosResult<Scalar> r;
    const Index k = std::min(wanted, s_);
    r.values = svd_.singularValues().head(k).template cast<Real>();
    r.left = q_.leftCols(s_) * svd_.matrixU().leftCols(k).template cast<Scalar>();
    r.right = p_.leftCols(s_) * svd_.matrixV().leftCols(k).template cast<Scalar>();
    Matrix<Scalar> av(rows_, k), ahu(cols_, k);
    a_.apply_batch(r.right.data(), cols_, av.data(), rows_, k);
    adjoint_.apply_batch(r.left.data(), rows_, ahu.data(), cols_, k);
    r.products = products_ + k;
    r.residuals.resize(k);
    r.image_norms = av.colwise().norm().transpose();
    bool converged = estimated_converged(wanted) || next_ == 0;
    const auto limit = static_cast<Real>(threshold());
    for (Index i = 0; i < k; ++i) {
      const Real one = (av.col(i) - r.values(i) * r.left.col(i)).norm();
      const Real other = (ahu.col(i) - r.values(i) * r.right.col(i)).norm();
      r.residuals(i) = std::max(one, other);
      converged = converged && r.residuals(i) <= limit;
    }
    r.converged = converged;  // of the k found; lanczos_tall asks for all wanted
    return r;
  }

  const Operator& a_;
  decltype(std::declval<const Operator&>().adjoint()) adjoint_;
  LanczosSettings settings_;
  Index rows_, cols_, space_ = 0, basis_ = 0, block_ = 0;
  Matrix<Scalar> locked_left_, locked_right_;  // found before: every basis vector is orthogonal to them
  Matrix<Scalar> p_, q_;            // P and the pending block N after it; Q
  Matrix<Scalar> rotated_;          // restart()'s row block
  WorkMatrix b_, t_;                // B = Q^H A P; T of the last block
  Eigen::JacobiSVD<WorkMatrix> svd_;
  Vector<Work> estimates_;
  Index s_ = 0, next_ = 0, last_ = 0, products_ = 0;
  Real scale_ = 0;                  // the largest |A p| seen: the scale of "zero"
};

/// Appends the triplets of `more` to `r` and keeps the `wanted` largest.
template <class Scalar>
void merge_largest(LanczosResult<Scalar>& r, const LanczosResult<Scalar>& more, Index wanted) {
  const Index n = r.values.size() + more.values.size();
  std::vector<Index> order(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  const auto value = [&](Index i) { return i < r.values.size() ? r.values(i) : more.values(i - r.values.size()); };
  std::stable_sort(order.begin(), order.end(), [&](Index i, Index j) { return value(i) > value(j); });
  const Index k = std::min(wanted, n);
  LanczosResult<Scalar> merged;
  merged.values.resize(k);
  merged.residuals.resize(k);
  merged.image_norms.resize(k);
  merged.left.resize(r.left.rows(), k);
  merged.right.resize(r.right.rows(), k);
  for (Index c = 0; c < k; ++c) {
    const Index i = order[static_cast<std::size_t>(c)];
    const bool first = i < r.values.size();
    const Index j = first ? i : i - r.values.size();
    const auto& from = first ? r : more;
    merged.values(c) = from.values(j);
    merged.residuals(c) = from.residuals(j);
    merged.image_norms(c) = from.image_norms(j);
    merged.left.col(c) = from.left.col(j);
    merged.right.col(c) = from.right.col(j);
  }
  merged.converged = r.converged && more.converged;
  merged.products = r.products + more.products;
  r = std::move(merged);
}

/// The wanted largest singular triplets of a tall operator (rows >= cols).
/// A block of b vectors finds at most b copies of a repeated value, and
/// convolutions repeat values far more often (a 1x1 kernel: once per
/// position). So once the run has converged, the part of the operator
/// orthogonal to what it found is searched from a new random block: any
/// of its values above the k-th found belongs among the k largest, is
/// merged in, and the search repeats — until the largest value left is
/// not above the k-th.
template <class Operator>
LanczosResult<typename Operator::Scalar> lanczos_tall(const Operator& a, const LanczosSettings& settings) {
  using Scalar = typename Operator::Scalar;
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  const Index wanted = std::min(settings.wanted, a.cols());
  // The search rounds work orthogonally to the triplets found, whose
  // residuals leak into theirs: the runs aim 8 times below the tolerance
  // (no lower than rounding allows), so that what they lock is exact
  // enough for the next round to reach the tolerance itself.
  LanczosSettings tight = settings;
  if (wanted > 1)
    tight.tolerance = std::max(settings.tolerance / 8, 32.0 * double(std::numeric_limits<Real>::epsilon()));
  // Whether a run's measured residuals meet the caller's tolerance.
  const auto meets = [&](const LanczosResult<Scalar>& x, Real scale) {
    return x.converged ||
           (x.residuals.size() > 0 && x.residuals.maxCoeff() <= static_cast<Real>(settings.tolerance) * scale);
  };
  auto r = BlockLanczos<Operator>(a, tight).run();
  bool good = r.values.size() > 0 && meets(r, r.values(0));
  // A run ends short of `wanted` values only when its Krylov space is
  // exhausted (T^H T has fewer distinct values than wanted: a layer whose
  // values are all equal has a one-vector space); the rounds fill it up.
  // For the largest value alone the search is a probe of a quarter of the
  // products the run took (at least 20): a Ritz vector that mixes sigma_1
  // with a close sigma_2 can meet the tolerance at sigma_2, and leaves
  // sigma_1 strongly in the complement, where the probe finds it; proving
  // that nothing is missing would cost as much as the run again.
  const bool probe = wanted == 1;
  for (std::uint64_t round = 1; good; ++round) {
    const bool short_of_wanted = r.values.size() < wanted;
    if (r.right.cols() >= a.cols() || r.products >= settings.max_products) {  // nothing left / no budget
      good = probe || (!short_of_wanted && r.right.cols() >= a.cols());
      break;
    }
    LanczosSettings search = tight;
    search.wanted = std::min(settings.block, a.cols() - r.right.cols());
    search.max_products = settings.max_products - r.products;
    if (probe) search.max_products = std::min(search.max_products, std::max<Index>(20, r.products / 4));
    search.seed = settings.seed + 104729 * round;
    search.scale = static_cast<double>(r.values(0));
    const auto rest = BlockLanczos<Operator>(a, search, r.left, r.right).run();
    const bool rest_good = rest.values.size() > 0 && meets(rest, r.values(0));
    const Real floor = short_of_wanted ? -std::numeric_limits<Real>::infinity()
                                       : r.values(wanted - 1) + static_cast<Real>(settings.tolerance / 2) * r.values(0);
    if (rest.values.size() == 0 || rest.values(0) <= floor) {  // nothing missing
      r.products += rest.products;
      // A search that stopped short of its tolerance (not for want of
      // products) still settles it when its top value, plus the residual
      // that bounds its error, stays below the floor.
      good = probe || rest_good || (rest.values.size() > 0 && rest.products < search.max_products &&
                           rest.values(0) + rest.residuals(0) <= floor);
      break;
    }
    if (!rest_good) {
      r.products += rest.products;
      good = false;
      break;
    }
    merge_largest(r, rest, wanted);
  }
  r.converged = good && r.values.size() == wanted && meets(r, r.values(0));
  return r;
}

/// The `settings.wanted` largest singular triplets of `a` (see
/// BlockLanczos and lanczos_tall). A wide operator is run as its adjoint,
/// which is tall, so that the basis P can fill its whole space (then B's
/// values are exact); the triplets are swapped back.
template <class Operator>
LanczosResult<typename Operator::Scalar> block_lanczos(const Operator& a, const LanczosSettings& settings) {
  if (a.rows() >= a.cols()) return lanczos_tall(a, settings);
  const auto adjoint = a.adjoint();
  auto r = lanczos_tall(adjoint, settings);
  std::swap(r.left, r.right);
  return r;
}

}  // namespace convmat::detail
