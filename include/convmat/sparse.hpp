// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The sparse matrix T of a layer in compressed row form, built directly:
// the exact number of non-zeros of every row is known from the geometry
// before anything is allocated, so there is no triplet list and no sort.
// Also the affine form [T b; 0 1] in compressed rows.
#pragma once

#include <Eigen/SparseCore>
#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "dense.hpp"
#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "detail/parallel.hpp"
#include "spec.hpp"

namespace convmat {

/// The sparse matrix type convmat returns: compressed rows.
template <class Scalar, class StorageIndex = int>
using SparseMatrix = Eigen::SparseMatrix<Scalar, Eigen::RowMajor, StorageIndex>;

namespace detail {

template <class StorageIndex>
void check_storage_index(Index value, const char* what) {
  if (value > static_cast<Index>(std::numeric_limits<StorageIndex>::max()))
    fail(what, " = ", value, " does not fit the sparse matrix's StorageIndex (max ",
         static_cast<Index>(std::numeric_limits<StorageIndex>::max()),
         "); use a wider one, e.g. conv_matrix_sparse<std::int64_t>(spec, weight)");
}

/// Rows [row_begin, row_end) of a geometry's matrix as a compressed-row
/// build will hold them, planned before anything is allocated: the range
/// and the sizes checked against StorageIndex, the non-zeros counted
/// exactly, per axis.
struct SparseRows {
  Index row_begin = 0, row_end = 0, cols = 0, nonzeros = 0;
  Index rows() const { return row_end - row_begin; }
};

template <class StorageIndex, int Rank>
SparseRows plan_sparse_rows(const Geometry<Rank>& g, Index row_begin, Index row_end) {
  static_assert(std::is_integral_v<StorageIndex> && std::is_signed_v<StorageIndex>,
                "convmat: StorageIndex must be a signed integer type, as Eigen requires");
  check_row_range(row_begin, row_end, g.output_numel());
  check_storage_index<StorageIndex>(g.input_numel(), "the column count");
  check_storage_index<StorageIndex>(row_end - row_begin, "the row count");
  const SparseRows plan{row_begin, row_end, g.input_numel(), g.nonzeros_between(row_begin, row_end)};
  check_storage_index<StorageIndex>(plan.nonzeros, "the non-zero count");
  return plan;
}

/// The bytes the planned rows take: a value and a column index per
/// non-zero, an offset per row and one more. Callers add what they hold
/// beside the matrix, then check().
template <class Scalar, class StorageIndex>
Footprint compressed_rows_footprint(const char* what, const SparseRows& plan) {
  Footprint need(what, plan.rows(), plan.cols);
  need.add(plan.nonzeros, sizeof(Scalar) + sizeof(StorageIndex), "non-zeros (value and column index)")
      .add(plan.rows() + 1, sizeof(StorageIndex), "row offsets");
  return need;
}

/// The planned rows of the geometry's matrix in compressed row form. Every
/// structural non-zero of the layer is stored (a zero weight too); taps
/// that land on the same input are summed into one entry.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> build_sparse_rows(const Geometry<Rank>& g, const Scalar* w, const SparseRows& plan) {
  const Index row_begin = plan.row_begin, row_end = plan.row_end;
  const Index cig = g.in_per_group(), kn = g.kernel_numel;

  SparseMatrix<Scalar, StorageIndex> t(plan.rows(), plan.cols);
  StorageIndex* outer = t.outerIndexPtr();
  // Each row's length (at most input_numel, which fits), then their running sum.
  parallel_chunks(row_begin, row_end, 64, [&](Index begin, Index end) {
    for_each_row_taps(g, begin, end, [&](Index r, const Tap* taps_begin, const Tap* taps_end) {
      outer[r - row_begin + 1] = static_cast<StorageIndex>(cig * distinct_offsets(taps_begin, taps_end));
    });
  });
  Index nonzeros = 0;
  outer[0] = 0;
  for (Index i = 1; i <= plan.rows(); ++i) {
    nonzeros += outer[i];  // <= plan.nonzeros, which fits
    outer[i] = static_cast<StorageIndex>(nonzeros);
  }
  CONVMAT_ASSERT(nonzeros == plan.nonzeros, "sparse rows hold the predicted non-zero count");
  t.resizeNonZeros(nonzeros);
  StorageIndex* inner = t.innerIndexPtr();
  Scalar* values = t.valuePtr();

  // The row's work captures plain values: it is the hot loop, kept in registers.
  const Index spatial = g.output_spatial, input_spatial = g.input_spatial;
  const auto fill_row = [=, &g](Index r, const Tap* taps_begin, const Tap* taps_end) {
    const Index oc = r / spatial;
    Index at = outer[r - row_begin];
    Index column = g.group_first_input(oc) * input_spatial;
    const Scalar* w_row = w + oc * cig * kn;
    for (Index ic = 0; ic < cig; ++ic, column += input_spatial, w_row += kn)
      for (const Tap* tap = taps_begin; tap != taps_end;) {  // one entry per distinct offset
        Scalar sum = w_row[tap->tap];
        const Index offset = tap->offset;
        for (++tap; tap != taps_end && tap->offset == offset; ++tap) sum += w_row[tap->tap];
        inner[at] = static_cast<StorageIndex>(column + offset);
        values[at] = sum;
        ++at;
      }
    CONVMAT_ASSERT(at == outer[r - row_begin + 1], "sparse row filled to its predicted length");
  };
  parallel_chunks(row_begin, row_end, 64,
                  [&](Index begin, Index end) { for_each_row_taps(g, begin, end, fill_row); });
  return t;
}

/// Rows [row_begin, row_end) of the geometry's matrix in compressed row
/// form: planned, held to max_dense_bytes() (`hint` says what to do
/// instead), then built.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> sparse_rows(const Geometry<Rank>& g, const Scalar* w, Index row_begin,
                                               Index row_end, const char* hint = sparse_matrix_hint) {
  const auto plan = plan_sparse_rows<StorageIndex>(g, row_begin, row_end);
  compressed_rows_footprint<Scalar, StorageIndex>("the sparse matrix", plan).check(hint);
  return build_sparse_rows<StorageIndex>(g, w, plan);
}

inline constexpr const char* sparse_row_block_hint =
    "build it in smaller row blocks, use make_operator, or raise the limit with set_max_dense_bytes()";
inline constexpr const char* sparse_transpose_hint =
    "use make_operator (the matrix-free transposed layer), or raise the limit with set_max_dense_bytes()";

/// What conv_transpose_matrix_sparse holds at its peak: the matching
/// convolution's rows (planned as `plan`) and, while Eigen transposes them,
/// the transposed copy and its row positions.
template <class Scalar, class StorageIndex, int Rank>
Footprint transposed_footprint(const char* what, const Geometry<Rank>& g, const SparseRows& plan) {
  Footprint need(what, g.input_numel(), g.output_numel());
  need.add(plan.nonzeros, sizeof(Scalar) + sizeof(StorageIndex), "non-zeros (value and column index)")
      .add(plan.rows() + 1, sizeof(StorageIndex), "row offsets")
      .add(plan.nonzeros, sizeof(Scalar) + sizeof(StorageIndex), "transposed non-zeros")
      .add(g.input_numel() + 1, sizeof(StorageIndex), "transposed row offsets")
      .add(g.input_numel(), sizeof(StorageIndex), "row positions for transposing");
  return need;
}

/// The matching convolution's planned rows (all of them), transposed.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> build_transposed(const Geometry<Rank>& g, const Scalar* w, const SparseRows& plan) {
  SparseMatrix<Scalar, StorageIndex> t = build_sparse_rows<StorageIndex>(g, w, plan).transpose();
  return t;
}

}  // namespace detail

/// The sparse matrix T (output_numel x input_numel, compressed rows) with
/// vec(conv(x, w)) = T vec(x). StorageIndex (default int) is Eigen's index
/// type; a matrix whose sizes or non-zeros do not fit it is a spec_error,
/// one whose bytes exceed max_dense_bytes() a memory_limit_error, both
/// thrown before anything is allocated.
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_matrix_sparse(const ConvSpec<Rank>& spec,
                                                                        const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::sparse_rows<StorageIndex>(g, w.data(), 0, g.output_numel());
}

/// Rows [row_begin, row_end) of conv_matrix_sparse(spec, weight) on their own.
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_matrix_sparse_rows(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, Index row_begin, Index row_end) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::sparse_rows<StorageIndex>(g, w.data(), row_begin, row_end, detail::sparse_row_block_hint);
}

/// The sparse matrix of a transposed convolution (compressed rows): the
/// matching convolution's matrix, transposed in O(non-zeros). Both copies
/// exist while it is transposed: the memory guard counts them.
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_transpose_matrix_sparse(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  detail::check_storage_index<StorageIndex>(g.output_numel(), "the column count");
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::transposed_footprint<Scalar, StorageIndex>("the sparse matrix", g, plan)
      .check(detail::sparse_transpose_hint);
  return detail::build_transposed<StorageIndex>(g, w.data(), plan);
}

/// affine_matrix in compressed rows: [T b; 0 1] ((output_numel + 1) x
/// (input_numel + 1)), the layer with bias as one linear map on [x; 1].
/// Every row of T keeps its entries and gains its bias as its last entry
/// (stored even where the bias is zero, as T stores zero weights); the
/// last row holds the single 1.
template <class StorageIndex = int, class Spec, class WeightDerived, class BiasDerived>
SparseMatrix<typename WeightDerived::Scalar, StorageIndex> affine_matrix_sparse(
    const Spec& spec, const Eigen::MatrixBase<WeightDerived>& weight, const Eigen::MatrixBase<BiasDerived>& bias) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto b = bias_vector(spec, bias);
  SparseMatrix<Scalar, StorageIndex> t;
  if constexpr (std::is_same_v<Spec, ConvSpec<Spec::rank>>)
    t = conv_matrix_sparse<StorageIndex>(spec, weight);
  else
    t = conv_transpose_matrix_sparse<StorageIndex>(spec, weight);
  const Index rows = t.rows(), cols = t.cols();
  const Index nonzeros = detail::checked_add(t.nonZeros(), rows + 1, "the affine matrix's non-zero count");
  detail::check_storage_index<StorageIndex>(nonzeros, "the affine matrix's non-zero count");
  detail::check_storage_index<StorageIndex>(cols + 1, "the affine matrix's column count");
  detail::check_storage_index<StorageIndex>(rows + 1, "the affine matrix's row count");

  SparseMatrix<Scalar, StorageIndex> a(rows + 1, cols + 1);
  a.resizeNonZeros(nonzeros);
  const StorageIndex* t_outer = t.outerIndexPtr();
  StorageIndex* outer = a.outerIndexPtr();
  StorageIndex* inner = a.innerIndexPtr();
  Scalar* values = a.valuePtr();
  Index at = 0;
  for (Index r = 0; r < rows; ++r) {
    outer[r] = static_cast<StorageIndex>(at);
    const Index begin = t_outer[r], length = t_outer[r + 1] - begin;
    std::copy_n(t.innerIndexPtr() + begin, length, inner + at);
    std::copy_n(t.valuePtr() + begin, length, values + at);
    at += length;
    inner[at] = static_cast<StorageIndex>(cols);
    values[at++] = b(r);
  }
  outer[rows] = static_cast<StorageIndex>(at);
  inner[at] = static_cast<StorageIndex>(cols);
  values[at++] = Scalar(1);
  outer[rows + 1] = static_cast<StorageIndex>(at);
  CONVMAT_ASSERT(at == nonzeros, "affine matrix filled to its predicted non-zero count");
  return a;
}

}  // namespace convmat
