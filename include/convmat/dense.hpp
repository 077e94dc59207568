// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The dense matrix T of a layer, vec(conv(x, w)) = T vec(x), built from the
// shape and the weights alone: each row is zeroed and its non-zeros written
// from the geometry's taps. Also its row blocks, the transposed layer's
// matrix, the bias, the affine form and the weight Jacobian.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "detail/parallel.hpp"
#include "limits.hpp"
#include "spec.hpp"

namespace convmat {
namespace detail {

inline constexpr const char* conv_weight_layout = "(out_channels, in_channels / groups, kernel...)";
inline constexpr const char* transpose_weight_layout = "(in_channels, out_channels / groups, kernel...)";

/// How a layer's weights are laid out, for messages.
template <int Rank>
constexpr const char* weight_layout(const ConvSpec<Rank>&) { return conv_weight_layout; }
template <int Rank>
constexpr const char* weight_layout(const ConvTransposeSpec<Rank>&) { return transpose_weight_layout; }

/// Writes rows [row_begin, row_end) of the geometry's matrix into `out`:
/// entry (r, c) goes to out[(r - row_begin) * row_stride + c * col_stride].
/// With zero_rows (row-major, col_stride 1) each row is zeroed just before
/// it is filled, while it is in cache; otherwise `out` must be zero already.
/// Taps that land on the same input (non-zero padding modes) add up.
template <int Rank, class Scalar>
void fill_dense(const Geometry<Rank>& g, const Scalar* w, Index row_begin, Index row_end, Scalar* out,
                Index row_stride, Index col_stride, bool zero_rows) {
  const Index cig = g.in_per_group(), kn = g.kernel_numel, cols = g.input_numel();
  const Index spatial = g.output_spatial, channel_stride = g.input_spatial * col_stride;
  // The row's work captures plain values: it is the hot loop, kept in registers.
  const auto fill_row = [=, &g](Index r, const Tap* taps_begin, const Tap* taps_end) {
    const Index oc = r / spatial;
    Scalar* row = out + (r - row_begin) * row_stride;
    if (zero_rows) std::fill(row, row + cols, Scalar(0));
    Scalar* channel = row + g.group_first_input(oc) * channel_stride;
    const Scalar* w_row = w + oc * cig * kn;
    for (Index ic = 0; ic < cig; ++ic, channel += channel_stride, w_row += kn)
      for (const Tap* t = taps_begin; t != taps_end; ++t) channel[t->offset * col_stride] += w_row[t->tap];
  };
  parallel_chunks(row_begin, row_end, 64,
                  [&](Index begin, Index end) { for_each_row_taps(g, begin, end, fill_row); });
}

inline void check_row_range(Index row_begin, Index row_end, Index rows) {
  if (row_begin < 0 || row_begin > row_end || row_end > rows)
    fail("row block [", row_begin, ", ", row_end, ") is not within the matrix's ", rows,
         " rows (need 0 <= row_begin <= row_end <= ", rows, ")");
}

template <int Rank, class Scalar>
RowMajorMatrix<Scalar> dense_rows(const Geometry<Rank>& g, const Scalar* w, Index row_begin, Index row_end) {
  check_row_range(row_begin, row_end, g.output_numel());
  check_dense_size(row_end - row_begin, g.input_numel(), sizeof(Scalar), "the dense matrix");
  RowMajorMatrix<Scalar> t(row_end - row_begin, g.input_numel());
  fill_dense(g, w, row_begin, row_end, t.data(), t.cols(), 1, true);
  return t;
}

}  // namespace detail

/// The dense matrix T (output_numel x input_numel, row-major) with
/// vec(conv(x, w)) = T vec(x), for weights flattened as
/// (out_channels, in_channels / groups, kernel...). Throws spec_error for
/// an invalid spec, weights of the wrong length, or a matrix larger than
/// max_dense_bytes().
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> conv_matrix(const ConvSpec<Rank>& spec,
                                                             const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::dense_rows(g, w.data(), 0, g.output_numel());
}

/// Rows [row_begin, row_end) of conv_matrix(spec, weight), built on their
/// own: blocks of consecutive ranges stack to exactly the whole matrix.
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> conv_matrix_rows(const ConvSpec<Rank>& spec,
                                                                  const Eigen::MatrixBase<Derived>& weight,
                                                                  Index row_begin, Index row_end) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::dense_rows(g, w.data(), row_begin, row_end);
}

/// The dense matrix (output_numel x input_numel, row-major) of a transposed
/// convolution, weights flattened as (in_channels, out_channels / groups,
/// kernel...). With output_padding 0 it is the transpose of the matching
/// convolution's conv_matrix.
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> conv_transpose_matrix(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);  // the convolution this layer is the adjoint of
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  detail::check_dense_size(g.input_numel(), g.output_numel(), sizeof(Scalar), "the dense matrix");
  convmat::RowMajorMatrix<Scalar> t = convmat::RowMajorMatrix<Scalar>::Zero(g.input_numel(), g.output_numel());
  // Entry (r, c) of the convolution's matrix is entry (c, r) here.
  detail::fill_dense(g, w.data(), 0, g.output_numel(), t.data(), 1, t.cols(), false);
  return t;
}

/// The layer's bias as an output-sized vector (bias[oc] at every position
/// of output channel oc), so that the layer is the affine map T x + b.
template <class Spec, class Derived>
convmat::Vector<typename Derived::Scalar> bias_vector(const Spec& spec, const Eigen::MatrixBase<Derived>& bias) {
  const Index channels = spec.out_channels, spatial = spec.output_spatial();
  if (bias.size() != channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements (", bias.rows(), " x ", bias.cols(),
                 "), but the layer has out_channels=", channels);
  detail::check_dense_size(spec.output_numel(), 1, sizeof(typename Derived::Scalar), "the bias vector",
                           "raise the limit with set_max_dense_bytes()");
  convmat::Vector<typename Derived::Scalar> b(spec.output_numel());
  for (Index oc = 0; oc < channels; ++oc) b.segment(oc * spatial, spatial).setConstant(bias(oc));
  return b;
}

/// The augmented matrix [T b; 0 1] ((output_numel + 1) x (input_numel + 1)):
/// the layer with bias as one linear map on homogeneous coordinates [x; 1].
template <class Spec, class WeightDerived, class BiasDerived>
convmat::RowMajorMatrix<typename WeightDerived::Scalar> affine_matrix(const Spec& spec,
                                                                     const Eigen::MatrixBase<WeightDerived>& weight,
                                                                     const Eigen::MatrixBase<BiasDerived>& bias) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto b = bias_vector(spec, bias);
  const Index rows = spec.output_numel(), cols = spec.input_numel();
  (void)detail::weight_view(weight, spec.weight_numel(), detail::weight_layout(spec));  // before the allocation
  detail::check_dense_size(detail::checked_add(rows, 1, "the affine matrix's rows"),
                           detail::checked_add(cols, 1, "the affine matrix's columns"), sizeof(Scalar),
                           "the affine matrix");
  convmat::RowMajorMatrix<Scalar> a(rows + 1, cols + 1);
  if constexpr (std::is_same_v<Spec, ConvSpec<Spec::rank>>)
    a.topLeftCorner(rows, cols) = conv_matrix(spec, weight);
  else
    a.topLeftCorner(rows, cols) = conv_transpose_matrix(spec, weight);
  a.topRightCorner(rows, 1) = b;
  a.bottomLeftCorner(1, cols).setZero();
  a(rows, cols) = Scalar(1);
  return a;
}

/// The weight Jacobian J(x) (output_numel x weight_numel, row-major) with
/// vec(conv(x, w)) = J(x) vec(w) for every w: the unfold matrix of x,
/// arranged per output channel.
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> weight_jacobian(const ConvSpec<Rank>& spec,
                                                                 const Eigen::MatrixBase<Derived>& input) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("weight_jacobian takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(g.output_numel(), g.weight_numel(), sizeof(Scalar), "the weight Jacobian",
                           "use unfold() (the same numbers, one row per weight of a group) or raise the limit "
                           "with set_max_dense_bytes()");
  convmat::RowMajorMatrix<Scalar> j = convmat::RowMajorMatrix<Scalar>::Zero(g.output_numel(), g.weight_numel());
  const Index cig = g.in_per_group(), kn = g.kernel_numel;
  std::vector<detail::Tap> taps;
  for (Index p = 0; p < g.output_spatial; ++p) {
    g.taps_at(p, taps);
    for (Index oc = 0; oc < g.out_channels; ++oc) {
      const Scalar* x_group = x.data() + g.group_first_input(oc) * g.input_spatial;
      for (Index ic = 0; ic < cig; ++ic) {
        Scalar* row = &j(oc * g.output_spatial + p, (oc * cig + ic) * kn);
        for (const auto& t : taps) row[t.tap] = x_group[ic * g.input_spatial + t.offset];
      }
    }
  }
  return j;
}

}  // namespace convmat
