// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// unfold (im2col) and fold (col2im) with torch.nn.functional.unfold's
// layout, for any rank and every padding mode, and the convolution as
// unfold followed by one matrix product per group.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>

#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "detail/parallel.hpp"
#include "detail/unfold_product.hpp"
#include "limits.hpp"
#include "spec.hpp"

namespace convmat {
namespace detail {

inline constexpr const char* unfold_hint =
    "use convolve() or the sparse matrix instead, or raise the limit with set_max_dense_bytes()";

/// The number of unfold rows one thread should at least take: enough for
/// the split to pay for itself (about 32 Ki elements).
template <int Rank>
Index unfold_grain(const Geometry<Rank>& g) {
  return std::max<Index>(1, (Index{1} << 15) / std::max<Index>(g.output_spatial, 1));
}

/// The unfold matrix of one sample into `columns` (row-major, rows x cols
/// as unfold()), rows split over threads when OpenMP is on.
template <int Rank, class Scalar>
void unfold_into(const Geometry<Rank>& g, const Scalar* x, Scalar* columns) {
  parallel_chunks(0, g.in_channels * g.kernel_numel, unfold_grain(g), [&](Index begin, Index end) {
    unfold_block_into(g, x, whole_input(g), begin, end, 0, g.output_spatial, columns + begin * g.output_spatial,
                      g.output_spatial);
  });
}

/// fold: the adjoint of unfold_into; x is overwritten. The rows of one
/// channel add into that channel's inputs only, so with OpenMP whole
/// channels are split over threads.
template <int Rank, class Scalar>
void fold_into(const Geometry<Rank>& g, const Scalar* columns, Scalar* x) {
  const Index kn = g.kernel_numel;
  parallel_chunks(0, g.in_channels, std::max<Index>(1, unfold_grain(g) / kn), [&](Index begin, Index end) {
    std::fill(x + begin * g.input_spatial, x + end * g.input_spatial, Scalar(0));
    fold_block_add(g, columns + begin * kn * g.output_spatial, g.output_spatial, begin * kn, end * kn, 0,
                   g.output_spatial, x, whole_input(g));
  });
}

}  // namespace detail

/// The unfold (im2col) matrix of one sample `input` (input_numel values):
/// (in_channels * prod(kernel_size)) x prod(output_size), rows ordered
/// (channel, k0, k1, ...), columns by output position, as
/// torch.nn.functional.unfold — for any rank and, beyond PyTorch, every
/// padding mode (an entry reads what the padded input holds there).
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> unfold(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<Derived>& input) {
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("unfold takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial,
                           sizeof(typename Derived::Scalar), "the unfold matrix", detail::unfold_hint);
  convmat::RowMajorMatrix<typename Derived::Scalar> columns(
      detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial);
  detail::unfold_into(g, x.data(), columns.data());
  return columns;
}

/// The adjoint of unfold: sums each column's entries back into the input
/// positions they were read from (torch.nn.functional.fold). Returns a
/// vector of input_numel values.
template <int Rank, class Derived>
convmat::Vector<typename Derived::Scalar> fold(const ConvSpec<Rank>& spec,
                                              const Eigen::MatrixBase<Derived>& columns) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const Index rows = detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows");
  if (columns.rows() != rows || columns.cols() != g.output_spatial)
    detail::fail("fold needs a ", rows, " x ", g.output_spatial,
                 " matrix (in_channels * prod(kernel_size) x prod(output_size)), not ", columns.rows(),
                 " x ", columns.cols());
  detail::check_dense_size(g.input_numel(), 1, sizeof(Scalar), "the folded vector", detail::unfold_hint);
  const convmat::RowMajorMatrix<Scalar> c = columns;  // row-major, as unfold() returns
  convmat::Vector<Scalar> x(g.input_numel());
  detail::fold_into(g, c.data(), x.data());
  return x;
}

/// The convolution of every column of `input` through unfold and one
/// matrix product per group: the same result as convolve(), by another
/// road — the one ConvOperator's products take (detail::unfold_multiply).
/// The unfold matrix is never held whole: it is built and multiplied a
/// panel of about 512 columns at a time, while the panel is in the cache;
/// with OpenMP the panels are shared among the threads.
template <int Rank, class WeightDerived, class InputDerived>
convmat::Matrix<typename WeightDerived::Scalar> convolve_unfold(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  static_assert(detail::same_scalar<WeightDerived, InputDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.output_numel(), x.cols());
  detail::unfold_multiply(g, w.data(), x.data(), x.outerStride(), detail::whole_input(g), y.data(), y.rows(),
                          x.cols(), detail::whole_output(g));
  return y;
}

}  // namespace convmat
