// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The direct convolution and transposed convolution: plain loops over the
// geometry's taps. Straightforward on purpose — it is the reference that
// every other path is tested against (and PyTorch's golden data tests it).
#pragma once

#include <Eigen/Core>
#include <utility>
#include <vector>

#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "limits.hpp"
#include "spec.hpp"

namespace convmat {
namespace detail {

/// y = T x for one sample: y[oc, p] = sum over the group's input channels
/// and p's taps of w[oc, ic, tap] * x[ic, offset]. `taps_of(p)` gives the
/// taps of position p as a [first, last) pair of Tap pointers, as
/// Geometry::taps_at lists them (found as needed, or from a kept table).
template <int Rank, class Scalar, class TapsOf>
void forward_over(const Geometry<Rank>& g, TapsOf&& taps_of, const Scalar* w, const Scalar* x, Scalar* y) {
  const Index cig = g.in_per_group(), kn = g.kernel_numel;
  for (Index p = 0; p < g.output_spatial; ++p) {
    const auto [first, last] = taps_of(p);
    for (Index oc = 0; oc < g.out_channels; ++oc) {
      const Scalar* x_group = x + g.group_first_input(oc) * g.input_spatial;
      Scalar sum(0);
      for (Index ic = 0; ic < cig; ++ic) {
        const Scalar* w_row = w + (oc * cig + ic) * kn;
        const Scalar* x_channel = x_group + ic * g.input_spatial;
        for (const Tap* t = first; t != last; ++t) sum += w_row[t->tap] * x_channel[t->offset];
      }
      y[oc * g.output_spatial + p] = sum;
    }
  }
}

/// x = T^T y (or T^H y when `conjugate`) for one sample: every product of
/// forward_over() sent back to the input it came from. x is overwritten.
template <int Rank, class Scalar, class TapsOf>
void adjoint_over(const Geometry<Rank>& g, TapsOf&& taps_of, const Scalar* w, const Scalar* y, Scalar* x,
                  bool conjugate) {
  const Index cig = g.in_per_group(), kn = g.kernel_numel;
  std::fill(x, x + g.input_numel(), Scalar(0));
  for (Index p = 0; p < g.output_spatial; ++p) {
    const auto [first, last] = taps_of(p);
    for (Index oc = 0; oc < g.out_channels; ++oc) {
      Scalar* x_group = x + g.group_first_input(oc) * g.input_spatial;
      const Scalar y_value = y[oc * g.output_spatial + p];
      for (Index ic = 0; ic < cig; ++ic) {
        const Scalar* w_row = w + (oc * cig + ic) * kn;
        Scalar* x_channel = x_group + ic * g.input_spatial;
        for (const Tap* t = first; t != last; ++t)
          x_channel[t->offset] += (conjugate ? Eigen::numext::conj(w_row[t->tap]) : w_row[t->tap]) * y_value;
      }
    }
  }
}

/// Finds each position's taps with Geometry::taps_at as it goes.
template <int Rank>
class TapsAsNeeded {
 public:
  explicit TapsAsNeeded(const Geometry<Rank>& g) : g_(g) {}
  std::pair<const Tap*, const Tap*> operator()(Index p) {
    g_.taps_at(p, taps_);
    return {taps_.data(), taps_.data() + taps_.size()};
  }

 private:
  const Geometry<Rank>& g_;
  std::vector<Tap> taps_;
};

/// y = T x for one sample, the taps found as needed.
template <int Rank, class Scalar>
void forward(const Geometry<Rank>& g, const Scalar* w, const Scalar* x, Scalar* y) {
  forward_over(g, TapsAsNeeded<Rank>(g), w, x, y);
}

/// x = T^T y (T^H y when `conjugate`) for one sample, the taps found as needed.
template <int Rank, class Scalar>
void adjoint(const Geometry<Rank>& g, const Scalar* w, const Scalar* y, Scalar* x, bool conjugate = false) {
  adjoint_over(g, TapsAsNeeded<Rank>(g), w, y, x, conjugate);
}

}  // namespace detail

/// The convolution of every column of `input` (input_numel x batch) with
/// `weight` (flattened (out_channels, in_channels / groups, kernel...)),
/// as torch.nn.functional.conv{1,2,3}d with the spec's padding mode.
/// Returns output_numel x batch.
template <int Rank, class WeightDerived, class InputDerived>
convmat::Matrix<typename WeightDerived::Scalar> convolve(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<WeightDerived>& weight,
                                                        const Eigen::MatrixBase<InputDerived>& input) {
  static_assert(detail::same_scalar<WeightDerived, InputDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.output_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) detail::forward(g, w.data(), x.col(s).data(), y.col(s).data());
  return y;
}

/// The transposed convolution of every column of `input` (input_numel x
/// batch) with `weight` (flattened (in_channels, out_channels / groups,
/// kernel...)), as torch.nn.functional.conv_transpose{1,2,3}d. Returns
/// output_numel x batch.
template <int Rank, class WeightDerived, class InputDerived>
convmat::Matrix<typename WeightDerived::Scalar> convolve_transpose(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  static_assert(detail::same_scalar<WeightDerived, InputDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(in_channels, out_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.output_numel(), "input");
  detail::check_dense_size(g.input_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.input_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) detail::adjoint(g, w.data(), x.col(s).data(), y.col(s).data());
  return y;
}

}  // namespace convmat
