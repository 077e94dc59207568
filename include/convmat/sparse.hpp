// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The sparse matrix T of a layer in compressed row form, built directly:
// the exact number of non-zeros of every row is known from the geometry
// before anything is allocated, so there is no triplet list and no sort.
#pragma once

#include <Eigen/SparseCore>
#include <limits>
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

/// Rows [row_begin, row_end) of the geometry's matrix in compressed row
/// form. Every structural non-zero of the layer is stored (a zero weight
/// too); taps that land on the same input are summed into one entry.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> sparse_rows(const Geometry<Rank>& g, const Scalar* w, Index row_begin,
                                               Index row_end) {
  static_assert(std::is_integral_v<StorageIndex> && std::is_signed_v<StorageIndex>,
                "convmat: StorageIndex must be a signed integer type, as Eigen requires");
  check_row_range(row_begin, row_end, g.output_numel());
  check_storage_index<StorageIndex>(g.input_numel(), "the column count");
  check_storage_index<StorageIndex>(row_end - row_begin, "the row count");
  const Index cig = g.in_per_group(), kn = g.kernel_numel;

  SparseMatrix<Scalar, StorageIndex> t(row_end - row_begin, g.input_numel());
  StorageIndex* outer = t.outerIndexPtr();
  const auto lists = TapLists<Rank>::for_rows(g, row_begin, row_end);  // shared by the threads below
  Index nonzeros = 0;
  outer[0] = 0;
  for (Index r = row_begin; r < row_end; ++r) {
    nonzeros += cig * lists.distinct(r % g.output_spatial);
    check_storage_index<StorageIndex>(nonzeros, "the non-zero count");
    outer[r - row_begin + 1] = static_cast<StorageIndex>(nonzeros);
  }
  t.resizeNonZeros(nonzeros);
  StorageIndex* inner = t.innerIndexPtr();
  Scalar* values = t.valuePtr();

  parallel_chunks(row_begin, row_end, 64, [&](Index begin, Index end) {
    for (Index r = begin; r < end; ++r) {
      const Index oc = r / g.output_spatial, p = r % g.output_spatial;
      const Tap *taps_begin = lists.begin(p), *taps_end = lists.end(p);
      Index at = outer[r - row_begin];
      const Index first_column = g.group_first_input(oc) * g.input_spatial;
      for (Index ic = 0; ic < cig; ++ic) {
        const Scalar* w_row = w + (oc * cig + ic) * kn;
        const Index column = first_column + ic * g.input_spatial;
        for (const Tap* t = taps_begin; t != taps_end;) {  // one entry per distinct offset
          Scalar sum = w_row[t->tap];
          const Index offset = t->offset;
          for (++t; t != taps_end && t->offset == offset; ++t) sum += w_row[t->tap];
          inner[at] = static_cast<StorageIndex>(column + offset);
          values[at] = sum;
          ++at;
        }
      }
      CONVMAT_ASSERT(at == outer[r - row_begin + 1], "sparse row filled to its predicted length");
    }
  });
  return t;
}

}  // namespace detail

/// The sparse matrix T (output_numel x input_numel, compressed rows) with
/// vec(conv(x, w)) = T vec(x). StorageIndex (default int) is Eigen's index
/// type; a matrix whose sizes or non-zeros do not fit it is a spec_error.
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
  return detail::sparse_rows<StorageIndex>(g, w.data(), row_begin, row_end);
}

/// The sparse matrix of a transposed convolution (compressed rows): the
/// matching convolution's matrix, transposed in O(non-zeros).
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_transpose_matrix_sparse(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  detail::check_storage_index<StorageIndex>(g.output_numel(), "the column count");
  SparseMatrix<typename Derived::Scalar, StorageIndex> t =
      detail::sparse_rows<StorageIndex>(g, w.data(), 0, g.output_numel()).transpose();
  return t;
}

}  // namespace convmat
