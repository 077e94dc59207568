// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// What a layer's matrix will cost, known before anything is built.
#pragma once

#include <cstddef>
#include <limits>

#include "dense.hpp"  // detail::check_row_range
#include "detail/geometry.hpp"
#include "spec.hpp"

namespace convmat {

/// The shape and storage of a layer's matrix.
struct MatrixSize {
  Index rows = 0, cols = 0;
  Index nonzeros = 0;             ///< structural non-zeros of the sparse form
  std::size_t dense_bytes = 0;    ///< rows * cols * sizeof(Scalar); SIZE_MAX if it overflows
  std::size_t sparse_bytes = 0;   ///< values, column indices and row offsets of the CSR form
};

/// The exact number of entries conv_matrix_sparse stores for this layer
/// (the same for its transposed layer), computed per axis in
/// O(sum of output * kernel sizes).
template <class Spec>
Index conv_matrix_nonzeros(const Spec& spec) {
  const auto g = detail::geometry(spec);
  return g.nonzeros_between(0, g.output_numel());
}

/// The exact number of entries conv_matrix_sparse_rows(spec, weight,
/// row_begin, row_end) stores: what a row block will cost, before it is
/// built (to size its StorageIndex, or to split a matrix into blocks).
template <class Spec>
Index conv_matrix_nonzeros(const Spec& spec, Index row_begin, Index row_end) {
  const auto g = detail::geometry(spec);
  detail::check_row_range(row_begin, row_end, g.output_numel());
  return g.nonzeros_between(row_begin, row_end);
}

/// Rows, columns, non-zeros and the bytes of the dense and sparse forms of
/// the layer's matrix with the given Scalar and sparse StorageIndex.
template <class Scalar = float, class StorageIndex = int, class Spec>
MatrixSize matrix_size(const Spec& spec) {
  constexpr auto max = std::numeric_limits<std::size_t>::max();
  const auto mul = [](std::size_t a, std::size_t b) { return a != 0 && b > max / a ? max : a * b; };
  const auto add = [](std::size_t a, std::size_t b) { return b > max - a ? max : a + b; };
  MatrixSize s;
  s.rows = spec.output_numel();
  s.cols = spec.input_numel();
  s.nonzeros = conv_matrix_nonzeros(spec);
  const auto rows = static_cast<std::size_t>(s.rows), cols = static_cast<std::size_t>(s.cols),
             nnz = static_cast<std::size_t>(s.nonzeros);
  s.dense_bytes = mul(mul(rows, cols), sizeof(Scalar));
  s.sparse_bytes = add(mul(nnz, sizeof(Scalar) + sizeof(StorageIndex)), mul(rows + 1, sizeof(StorageIndex)));
  return s;
}

}  // namespace convmat
