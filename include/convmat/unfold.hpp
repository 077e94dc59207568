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
#include "limits.hpp"
#include "spec.hpp"

namespace convmat {
namespace detail {

inline constexpr const char* unfold_hint =
    "use convolve() or the sparse matrix instead, or raise the limit with set_max_dense_bytes()";

/// Walks rows [row_begin, row_end) of the unfold matrix (rows (channel,
/// tap), columns output positions) in order; in each row, the columns of
/// outer positions [outer_begin, outer_end) — an outer position is one
/// multi-index of every output axis but the last — one segment of O_last
/// columns each. For each segment it calls f(row, column, base, sources,
/// interior): the segment holds columns [column, column + O_last), counted
/// from outer_begin's first column; element j reads input[base +
/// sources[j]] (sources[j] < 0: padding zero); base < 0 means the whole
/// segment reads padding zeros. `interior` is the last axis's AxisRun for
/// the row's tap: elements [begin, end) read input[base + first + (j -
/// begin) * step], with no padding in between.
template <int Rank, class F>
void for_each_unfold_segment(const Geometry<Rank>& g, Index row_begin, Index row_end, Index outer_begin,
                             Index outer_end, F&& f) {
  constexpr int last = Rank - 1;
  const Index segment = g.output_size[last];
  std::array<Index, Rank> first_outer{};  // multi-index of outer_begin (last axis unused)
  for (Index outer = outer_begin, d = last - 1; d >= 0; --d) {
    first_outer[d] = outer % g.output_size[d];
    outer /= g.output_size[d];
  }
  for (Index row = row_begin; row < row_end; ++row) {
    const Index channel = row / g.kernel_numel;
    std::array<Index, Rank> k{};  // tap multi-index
    for (Index tap = row % g.kernel_numel, d = last; d >= 0; --d) {
      k[d] = tap % g.kernel_size[d];
      tap /= g.kernel_size[d];
    }
    const Index* sources = g.axes[last].sources_of_tap(k[last]);
    const AxisRun& interior = g.axes[last].interior(k[last]);
    std::array<Index, Rank> o = first_outer;
    for (Index outer = outer_begin; outer < outer_end; ++outer) {
      Index base = channel * g.input_spatial;
      for (int d = 0; d < last && base >= 0; ++d) {
        const Index s = g.axes[d].source(o[d], k[d]);
        base = s < 0 ? -1 : base + s * g.input_strides[d];
      }
      f(row, (outer - outer_begin) * segment, base, sources, interior);
      for (int d = last - 1; d >= 0; --d) {  // next outer position
        if (++o[d] < g.output_size[d]) break;
        o[d] = 0;
      }
    }
  }
}

/// The number of outer positions of the unfold matrix (output_spatial / O_last).
template <int Rank>
Index unfold_outer_count(const Geometry<Rank>& g) {
  return g.output_spatial / g.output_size[Rank - 1];
}

/// Rows [row_begin, row_end) and outer positions [outer_begin, outer_end)
/// of the unfold matrix of one sample into `out`, row-major with `width`
/// elements per row (row row_begin first). Within a segment the interior
/// is one contiguous (or strided) copy; only the borders look at the
/// per-element sources.
template <int Rank, class Scalar>
void unfold_block_into(const Geometry<Rank>& g, const Scalar* x, Index row_begin, Index row_end,
                       Index outer_begin, Index outer_end, Scalar* out, Index width) {
  const Index segment = g.output_size[Rank - 1];
  const auto copy_segment = [&](Index row, Index column, Index base, const Index* sources,
                                const AxisRun& interior) {
    Scalar* to = out + (row - row_begin) * width + column;
    if (base < 0) {
      std::fill(to, to + segment, Scalar(0));
      return;
    }
    const Scalar* in = x + base;
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j) to[j] = sources[j] < 0 ? Scalar(0) : in[sources[j]];
    };
    by_source(0, interior.begin);
    const Scalar* run = in + interior.first;
    if (interior.step == 1)
      std::copy(run, run + (interior.end - interior.begin), to + interior.begin);
    else
      for (Index j = interior.begin; j < interior.end; ++j) to[j] = run[(j - interior.begin) * interior.step];
    by_source(std::max(interior.begin, interior.end), segment);
  };
  for_each_unfold_segment(g, row_begin, row_end, outer_begin, outer_end, copy_segment);
}

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
    unfold_block_into(g, x, begin, end, 0, unfold_outer_count(g), columns + begin * g.output_spatial,
                      g.output_spatial);
  });
}

/// How many outer positions convolve_unfold unfolds and multiplies at a
/// time: about 512 columns, so the block of the unfold matrix stays in
/// the cache between being written and being read by the product, and the
/// products are still wide enough to run at full speed.
template <int Rank>
Index convolve_block_outer(const Geometry<Rank>& g) {
  const Index segment = g.output_size[Rank - 1];
  return std::max<Index>(1, (512 + segment / 2) / segment);
}

/// fold: the adjoint of unfold_into; x is overwritten. The rows of one
/// channel add into that channel's inputs only, so with OpenMP whole
/// channels are split over threads.
template <int Rank, class Scalar>
void fold_into(const Geometry<Rank>& g, const Scalar* columns, Scalar* x) {
  const Index segment = g.output_size[Rank - 1], width = g.output_spatial;
  const auto add_segment = [&](Index row, Index column, Index base, const Index* sources,
                               const AxisRun& interior) {
    if (base < 0) return;
    const Scalar* from = columns + row * width + column;
    Scalar* to = x + base;
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j)
        if (sources[j] >= 0) to[sources[j]] += from[j];
    };
    by_source(0, interior.begin);
    Scalar* run = to + interior.first;
    for (Index j = interior.begin; j < interior.end; ++j) run[(j - interior.begin) * interior.step] += from[j];
    by_source(std::max(interior.begin, interior.end), segment);
  };
  const Index kn = g.kernel_numel;
  parallel_chunks(0, g.in_channels, std::max<Index>(1, unfold_grain(g) / kn), [&](Index begin, Index end) {
    std::fill(x + begin * g.input_spatial, x + end * g.input_spatial, Scalar(0));
    for_each_unfold_segment(g, begin * kn, end * kn, 0, unfold_outer_count(g), add_segment);
  });
}

}  // namespace detail

/// The unfold (im2col) matrix of one sample `input` (input_numel values):
/// (in_channels * prod(kernel_size)) x prod(output_size), rows ordered
/// (channel, k0, k1, ...), columns by output position, as
/// torch.nn.functional.unfold — for any rank and, beyond PyTorch, every
/// padding mode (an entry reads what the padded input holds there).
template <int Rank, class Derived>
detail::RowMajorMatrix<typename Derived::Scalar> unfold(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<Derived>& input) {
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("unfold takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial,
                           sizeof(typename Derived::Scalar), "the unfold matrix", detail::unfold_hint);
  detail::RowMajorMatrix<typename Derived::Scalar> columns(
      detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial);
  detail::unfold_into(g, x.data(), columns.data());
  return columns;
}

/// The adjoint of unfold: sums each column's entries back into the input
/// positions they were read from (torch.nn.functional.fold). Returns a
/// vector of input_numel values.
template <int Rank, class Derived>
detail::Vector<typename Derived::Scalar> fold(const ConvSpec<Rank>& spec,
                                              const Eigen::MatrixBase<Derived>& columns) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const Index rows = detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows");
  if (columns.rows() != rows || columns.cols() != g.output_spatial)
    detail::fail("fold needs a ", rows, " x ", g.output_spatial,
                 " matrix (in_channels * prod(kernel_size) x prod(output_size)), not ", columns.rows(),
                 " x ", columns.cols());
  detail::check_dense_size(g.input_numel(), 1, sizeof(Scalar), "the folded vector", detail::unfold_hint);
  const detail::RowMajorMatrix<Scalar> c = columns;  // row-major, as unfold() returns
  detail::Vector<Scalar> x(g.input_numel());
  detail::fold_into(g, c.data(), x.data());
  return x;
}

/// The convolution of every column of `input` through unfold and one
/// matrix product per group: the same result as convolve(), by another
/// road. The unfold matrix is never held whole: it is built and multiplied
/// a block of about 512 columns at a time, while the block is in the
/// cache; with OpenMP the blocks are shared among the threads.
template <int Rank, class WeightDerived, class InputDerived>
detail::Matrix<typename WeightDerived::Scalar> convolve_unfold(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  detail::require_same_scalar<WeightDerived, InputDerived>();
  using Scalar = typename WeightDerived::Scalar;
  using ConstRowMajorMap = Eigen::Map<const detail::RowMajorMatrix<Scalar>>;
  using BlockMap = Eigen::Map<detail::RowMajorMatrix<Scalar>, 0, Eigen::OuterStride<>>;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  const Index rows = detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows");
  const Index group_rows = g.in_per_group() * g.kernel_numel, cog = g.out_per_group();
  const Index segment = g.output_size[Rank - 1], outer_count = detail::unfold_outer_count(g);
  const Index block_outer = std::min(detail::convolve_block_outer(g), outer_count);
  const Index blocks = (outer_count + block_outer - 1) / block_outer;
  detail::check_dense_size(rows, detail::checked_mul(block_outer, segment, "unfold block columns"), sizeof(Scalar),
                           "the unfold buffer", detail::unfold_hint);
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::unfold_hint);
  detail::Matrix<Scalar> y(g.output_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) {
    const Scalar* x_sample = x.col(s).data();
    Scalar* y_sample = y.col(s).data();
    detail::parallel_chunks(0, blocks, 1, [&](Index block_begin, Index block_end) {
      detail::RowMajorMatrix<Scalar> columns(rows, block_outer * segment);
      for (Index block = block_begin; block < block_end; ++block) {
        const Index outer_begin = block * block_outer;
        const Index outer_end = std::min(outer_begin + block_outer, outer_count);
        const Index width = (outer_end - outer_begin) * segment;
        detail::unfold_block_into(g, x_sample, 0, rows, outer_begin, outer_end, columns.data(), width);
        const ConstRowMajorMap block_columns(columns.data(), rows, width);
        for (Index group = 0; group < g.groups; ++group) {
          const ConstRowMajorMap w_group(w.data() + group * cog * group_rows, cog, group_rows);
          BlockMap y_block(y_sample + group * cog * g.output_spatial + outer_begin * segment, cog, width,
                           Eigen::OuterStride<>(g.output_spatial));
          y_block.noalias() = w_group * block_columns.middleRows(group * group_rows, group_rows);
        }
      }
    });
  }
  return y;
}

}  // namespace convmat
