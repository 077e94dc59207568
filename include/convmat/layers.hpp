// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The other linear layers of a CNN as matrices, each one a convolution in
// disguise and so built on the same index machinery (detail::Geometry):
//
//   - average pooling: a depthwise convolution with weights 1, each output
//     row scaled by its own divisor (PyTorch's count_include_pad, ceil_mode
//     and divisor_override; ONNX's larger padding on request);
//   - max pooling, which is not linear: its windows, the same depthwise
//     geometry (max_pool_windows), and the direct max_pool;
//   - padding (zeros, reflect, replicate, circular): a depthwise 1x1
//     identity convolution with that padding;
//   - nearest upsampling by integer factors: a depthwise transposed
//     convolution with kernel = stride = scale and weights 1;
//   - flatten: the identity, since convmat's vectors are already flat.
//
// And the algebra that turns a chain of them into one layer: an AffineMap
// (T x + b), compose() for consecutive affine layers, and inference-mode
// BatchNorm as an affine map or folded into the preceding convolution.
#pragma once

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <array>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#include "dense.hpp"
#include "detail/arguments.hpp"
#include "detail/geometry.hpp"
#include "direct.hpp"
#include "sparse.hpp"
#include "spec.hpp"

namespace convmat {

// ---------------------------------------------------------------------------
// Average pooling
// ---------------------------------------------------------------------------

namespace detail {

/// The output size of a pooling layer, per dimension: floor or ceil of
/// (D + pad_begin + pad_end - dilation * (K - 1) - 1) / stride, plus one;
/// with ceil_mode, minus one if the last window would start at or past
/// D + pad_begin (in the high padding), as PyTorch and ONNX. With
/// `pytorch_limits`, PyTorch's rule that padding is at most half the kernel.
/// spec_error naming every value unless each dimension has an output.
template <int Rank>
std::array<Index, Rank> pool_output_size(const std::array<Index, Rank>& input, const std::array<Index, Rank>& kernel,
                                         const std::array<Index, Rank>& stride,
                                         const std::array<Index, Rank>& dilation,
                                         const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end,
                                         bool ceil_mode, bool pytorch_limits) {
  require_positive<Rank>(input, "input_size");
  require_positive<Rank>(kernel, "kernel_size");
  require_positive<Rank>(stride, "stride");
  require_positive<Rank>(dilation, "dilation");
  require_non_negative<Rank>(begin, "padding");
  require_non_negative<Rank>(end, "padding_end");
  std::array<Index, Rank> out{};
  for (int d = 0; d < Rank; ++d) {
    if (pytorch_limits && (begin[d] > kernel[d] / 2 || end[d] > kernel[d] / 2))
      fail("padding must be at most half the kernel size: padding=", begin, ", padding_end=", end,
           ", kernel_size=", kernel, " (as PyTorch; ONNX allows more with pytorch_limits = false)");
    const Index span = checked_add(input[d], checked_add(begin[d], end[d], "padding"), "padded input size") -
                       window_extent(kernel[d], dilation[d]);
    const Index rounded = !ceil_mode ? span : span < 0 ? span + stride[d] - 1
                                                      : checked_add(span, stride[d] - 1, "padded input size");
    out[d] = floor_div(rounded, stride[d]) + 1;
    if (ceil_mode && out[d] >= 1 && (out[d] - 1) * stride[d] >= input[d] + begin[d]) --out[d];
  }
  for (int d = 0; d < Rank; ++d)
    if (out[d] < 1) {
      if (dilation != filled<Rank>(1))
        fail("pooling window does not fit: input_size=", input, ", kernel_size=", kernel, ", stride=", stride,
             ", dilation=", dilation, ", padding=", begin, ", padding_end=", end,
             ", ceil_mode=", ceil_mode ? "true" : "false", " give output ", out);
      fail("pooling window does not fit: input_size=", input, ", kernel_size=", kernel, ", stride=", stride,
           ", padding=", begin, ", padding_end=", end, ", ceil_mode=", ceil_mode ? "true" : "false",
           " give output ", out);
    }
  return out;
}

/// Whether window o of one dimension covers an input element: some tap k
/// in [0, kernel) reads p = o * stride + k * dilation - begin in [0, input).
/// Computed, not searched, so a huge kernel costs nothing.
inline bool window_covers_input(Index o, Index input, Index kernel, Index stride, Index dilation, Index begin) {
  const Index low = begin - o * stride;  // k * dilation >= low
  const Index high = low + (input - 1);  // k * dilation <= high (no overflow: input + begin is checked)
  if (high < 0) return false;
  const Index first = low <= 0 ? 0 : low / dilation + (low % dilation != 0);  // the first tap at or past low
  return first <= kernel - 1 && first <= high / dilation;
}

/// spec_error unless every pooling window covers at least one input element
/// (beyond PyTorch's limits, a window can lie wholly in the padding). Per
/// dimension the windows' first and last input elements are monotone in the
/// output index, so the first and last windows decide.
template <int Rank>
void require_windows_cover_input(const std::array<Index, Rank>& input, const std::array<Index, Rank>& kernel,
                                 const std::array<Index, Rank>& stride, const std::array<Index, Rank>& dilation,
                                 const std::array<Index, Rank>& begin, const std::array<Index, Rank>& output,
                                 const char* why) {
  for (int d = 0; d < Rank; ++d)
    for (Index o : {Index{0}, output[d] - 1})
      if (!window_covers_input(o, input[d], kernel[d], stride[d], dilation[d], begin[d]))
        fail("pooling window ", o, " of dimension ", d, " covers only padding (", why, "): input_size=", input,
             ", kernel_size=", kernel, ", stride=", stride, ", dilation=", dilation, ", padding=", begin,
             " give output ", output);
}

}  // namespace detail

/// The shape of an average pooling layer (PyTorch's AvgPool{1,2,3}d, ONNX's
/// AveragePool) over `channels` channels. Pooling acts on each channel
/// alone, so the layer maps (channels, input_size...) to
/// (channels, output_size()...).
///
///     convmat::AvgPoolSpec<2> pool;
///     pool.channels = 3; pool.input_size = {8, 8}; pool.kernel_size = {2, 2};
///     auto T = convmat::avg_pool_matrix<float>(pool);   // stride defaults to 2
template <int Rank>
struct AvgPoolSpec {
  static_assert(Rank >= 1, "convmat: pooling has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  /// The step between windows; PyTorch's default is the kernel size.
  std::optional<std::array<Index, Rank>> stride;
  /// Implicit zero padding on the low side (and the high side unless
  /// padding_end is set); PyTorch allows at most half the kernel.
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Padding on the high side, when it differs (ONNX's asymmetric pads).
  std::optional<std::array<Index, Rank>> padding_end;
  /// Round the output size up instead of down; a window that would start
  /// in the high padding is dropped, as in PyTorch.
  bool ceil_mode = false;
  /// Divide by the window's size including padding zeros (true, PyTorch's
  /// default) or by the number of input elements it covers (false).
  bool count_include_pad = true;
  /// Divide every window by this instead.
  std::optional<Index> divisor_override;
  /// PyTorch's limits (true): padding at most half the kernel, and in 3-D an
  /// input no smaller than the kernel, as F.avg_pool{1,2,3}d. False: ONNX's
  /// AveragePool, which takes any padding; a window that covers only
  /// padding is then refused unless count_include_pad (it would be 0 / 0).
  bool pytorch_limits = true;

  std::array<Index, Rank> strides() const { return stride.value_or(kernel_size); }
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  AvgPoolSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }
  /// ONNX's auto_pad=SAME_UPPER: output_size = ceil(input_size / stride), the
  /// total padding (ceil(D / s) - 1) * s + K - D split with the extra element
  /// on the high side (see ConvSpec::set_padding_same_upper). Set
  /// input_size, kernel_size and stride first.
  AvgPoolSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }
  /// ONNX's auto_pad=SAME_LOWER: the extra element on the low side.
  AvgPoolSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }
  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  AvgPoolSpec& set_padding_same(SamePadding odd) {
    std::array<Index, Rank> begin{}, end{};
    detail::same_padding<Rank>(input_size, kernel_size, strides(), detail::filled<Rank>(1), odd, begin, end);
    return set_padding(begin, end);
  }

  /// Throws spec_error unless PyTorch would accept this layer (with
  /// pytorch_limits = false: unless ONNX's AveragePool defines it).
  void validate() const { (void)output_size(); }

  /// Per dimension: floor or ceil of (D + pad_begin + pad_end - K) / stride,
  /// plus one; with ceil_mode, minus one if the last window would start at
  /// or past D + pad_begin.
  std::array<Index, Rank> output_size() const {
    if (channels <= 0) detail::fail("channels must be positive: channels=", channels);
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    if (divisor_override && *divisor_override <= 0)
      detail::fail("divisor_override must be positive: divisor_override=", *divisor_override);
    if constexpr (Rank == 3) {  // F.avg_pool3d also wants the input, unpadded, at least the kernel
      for (int d = 0; d < Rank && pytorch_limits; ++d)
        if (input_size[d] < kernel_size[d])
          detail::fail("input smaller than kernel size: input_size=", input_size, ", kernel_size=", kernel_size,
                       " (3-D average pooling needs input_size >= kernel_size in every dimension, as "
                       "PyTorch's avg_pool3d)");
    }
    const auto ones = detail::filled<Rank>(1);
    const auto out = detail::pool_output_size<Rank>(input_size, kernel_size, strides(), ones, pad_begin(), pad_end(),
                                                    ceil_mode, pytorch_limits);
    if (!pytorch_limits && !count_include_pad && !divisor_override)
      detail::require_windows_cover_input<Rank>(input_size, kernel_size, strides(), ones, pad_begin(), out,
                                                "its average would be 0 / 0");
    return out;
  }

  Index input_spatial() const { return detail::checked_product(input_size, "input size"); }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index input_numel() const { return detail::checked_mul(channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(channels, output_spatial(), "output_numel"); }
};

using AvgPool1dSpec = AvgPoolSpec<1>;
using AvgPool2dSpec = AvgPoolSpec<2>;
using AvgPool3dSpec = AvgPoolSpec<3>;

namespace detail {

/// Weights 1 for a depthwise layer: one per channel and kernel tap. A
/// spec sizes them, so callers count them in their footprint first.
template <class Scalar, int Rank>
Vector<Scalar> depthwise_ones(const Geometry<Rank>& g) {
  return Vector<Scalar>::Ones(g.weight_numel());
}

inline constexpr const char* dense_layer_hint =
    "build it as compressed rows (its _sparse function), or raise the limit with set_max_dense_bytes()";
inline constexpr const char* sparse_layer_hint = "raise the limit with set_max_dense_bytes()";

/// A dense rows x cols matrix of Scalar, as a footprint to add to.
template <class Scalar>
Footprint dense_footprint(const char* what, Index rows, Index cols) {
  Footprint need(what, rows, cols);
  need.add(checked_mul(rows, cols, "the dense matrix"), sizeof(Scalar), "entries");
  return need;
}

/// The pooling layer as a depthwise convolution: windows are kernel taps.
template <int Rank>
Geometry<Rank> geometry(const AvgPoolSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.channels, spec.channels, spec.channels, spec.input_size, spec.output_size(),
                             spec.kernel_size, spec.strides(), filled<Rank>(1), spec.pad_begin(),
                             PaddingMode::zeros);
}

/// Every output row's divisor, per spatial position (the same for every
/// channel). Counting taps is the geometry's job: without padding it is the
/// window's input taps; with count_include_pad, the taps of the same
/// windows on the padded input seen as the input (extent D + pad_begin +
/// pad_end, no padding), so a ceil_mode window that runs past the high
/// padding counts only what it covers, as in PyTorch.
template <class Scalar, int Rank>
Vector<Scalar> avg_pool_divisors(const AvgPoolSpec<Rank>& spec, const Geometry<Rank>& g) {
  Vector<Scalar> divisor(g.output_spatial);
  if (spec.divisor_override) return divisor.setConstant(static_cast<Scalar>(*spec.divisor_override));
  if (!spec.count_include_pad) {
    for (Index p = 0; p < g.output_spatial; ++p) divisor(p) = static_cast<Scalar>(g.distinct_taps_at(p));
    return divisor;
  }
  std::array<Index, Rank> padded = spec.input_size;
  const auto begin = spec.pad_begin(), end = spec.pad_end();
  for (int d = 0; d < Rank; ++d) padded[d] += begin[d] + end[d];
  const auto whole = make_geometry<Rank>(1, 1, 1, padded, g.output_size, spec.kernel_size, spec.strides(),
                                         filled<Rank>(1), filled<Rank>(0), PaddingMode::zeros);
  for (Index p = 0; p < g.output_spatial; ++p) divisor(p) = static_cast<Scalar>(whole.distinct_taps_at(p));
  return divisor;
}

}  // namespace detail

/// The dense matrix (output_numel x input_numel, row-major) of average
/// pooling: row (c, o) holds 1 / divisor(o) on every input its window
/// covers in channel c. Scalar is the matrix's scalar type.
template <class Scalar = double, int Rank>
convmat::RowMajorMatrix<Scalar> avg_pool_matrix(const AvgPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  detail::dense_footprint<Scalar>("the dense pooling matrix", g.output_numel(), g.input_numel())
      .add(g.weight_numel(), sizeof(Scalar), "window weights")
      .add(g.output_spatial, sizeof(Scalar), "divisors")
      .check(detail::dense_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  convmat::RowMajorMatrix<Scalar> t = detail::dense_rows(g, ones.data(), 0, g.output_numel());
  const auto divisor = detail::avg_pool_divisors<Scalar>(spec, g);
  for (Index r = 0; r < t.rows(); ++r) t.row(r) /= divisor(r % g.output_spatial);
  return t;
}

/// avg_pool_matrix as compressed rows.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> avg_pool_matrix_sparse(const AvgPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::compressed_rows_footprint<Scalar, StorageIndex>("the sparse pooling matrix", plan)
      .add(g.weight_numel(), sizeof(Scalar), "window weights")
      .add(g.output_spatial, sizeof(Scalar), "divisors")
      .check(detail::sparse_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  auto t = detail::build_sparse_rows<StorageIndex>(g, ones.data(), plan);
  const auto divisor = detail::avg_pool_divisors<Scalar>(spec, g);
  const StorageIndex* outer = t.outerIndexPtr();
  Scalar* values = t.valuePtr();
  for (Index r = 0; r < t.rows(); ++r)
    for (StorageIndex i = outer[r]; i < outer[r + 1]; ++i) values[i] /= divisor(r % g.output_spatial);
  return t;
}

// ---------------------------------------------------------------------------
// Max pooling
// ---------------------------------------------------------------------------

/// The shape of a max pooling layer (PyTorch's MaxPool{1,2,3}d, ONNX's
/// MaxPool) over `channels` channels: (channels, input_size...) to
/// (channels, output_size()...). Max pooling is not linear, so there is no
/// matrix; max_pool_windows() gives which inputs each output takes the
/// largest of (padding never wins: it is -infinity), and max_pool() is the
/// direct reference.
template <int Rank>
struct MaxPoolSpec {
  static_assert(Rank >= 1, "convmat: pooling has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  /// The step between windows; PyTorch's default is the kernel size (ONNX's is 1).
  std::optional<std::array<Index, Rank>> stride;
  /// Padding on the low side (and the high side unless padding_end is set).
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Padding on the high side, when it differs (ONNX's asymmetric pads).
  std::optional<std::array<Index, Rank>> padding_end;
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  /// Round the output size up; a window that would start in the high
  /// padding is dropped, as in PyTorch.
  bool ceil_mode = false;
  /// PyTorch's limit (true): padding at most half the kernel. False: ONNX's
  /// MaxPool, any padding. Either way a window must cover an input element.
  bool pytorch_limits = true;

  std::array<Index, Rank> strides() const { return stride.value_or(kernel_size); }
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  MaxPoolSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }
  /// ONNX's auto_pad=SAME_UPPER: output_size = ceil(input_size / stride), the
  /// extra padding element on the high side (see ConvSpec::set_padding_same_upper).
  MaxPoolSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }
  /// ONNX's auto_pad=SAME_LOWER: the extra element on the low side.
  MaxPoolSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }
  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  MaxPoolSpec& set_padding_same(SamePadding odd) {
    std::array<Index, Rank> begin{}, end{};
    detail::same_padding<Rank>(input_size, kernel_size, strides(), dilation, odd, begin, end);
    return set_padding(begin, end);
  }

  /// Throws spec_error unless PyTorch (with pytorch_limits = false: ONNX)
  /// would accept this layer and every window covers an input element.
  void validate() const { (void)output_size(); }

  /// Per dimension: floor or ceil of
  /// (D + pad_begin + pad_end - dilation * (K - 1) - 1) / stride, plus one;
  /// with ceil_mode, minus one if the last window would start at or past
  /// D + pad_begin.
  std::array<Index, Rank> output_size() const {
    if (channels <= 0) detail::fail("channels must be positive: channels=", channels);
    const auto out = detail::pool_output_size<Rank>(input_size, kernel_size, strides(), dilation, pad_begin(),
                                                    pad_end(), ceil_mode, pytorch_limits);
    detail::require_windows_cover_input<Rank>(input_size, kernel_size, strides(), dilation, pad_begin(), out,
                                              "its maximum would be -infinity");
    return out;
  }

  Index input_spatial() const { return detail::checked_product(input_size, "input size"); }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index input_numel() const { return detail::checked_mul(channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(channels, output_spatial(), "output_numel"); }
};

using MaxPool1dSpec = MaxPoolSpec<1>;
using MaxPool2dSpec = MaxPoolSpec<2>;
using MaxPool3dSpec = MaxPoolSpec<3>;

namespace detail {

/// Max pooling's windows as the kernel taps of a depthwise convolution.
template <int Rank>
Geometry<Rank> geometry(const MaxPoolSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.channels, spec.channels, spec.channels, spec.input_size, spec.output_size(),
                             spec.kernel_size, spec.strides(), spec.dilation, spec.pad_begin(), PaddingMode::zeros);
}

}  // namespace detail

/// The windows of max pooling as a 0/1 matrix (output_numel x input_numel,
/// compressed rows): row (c, o) has a 1 on every input of channel c that
/// window o covers, padding left out. Max pooling takes the largest of the
/// inputs each row marks.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> max_pool_windows(const MaxPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::sparse_rows<StorageIndex>(g, ones.data(), 0, g.output_numel());
}

/// Max pooling of every column of `input` (input_numel x batch), as
/// F.max_pool{1,2,3}d: output_numel x batch. A NaN in a window is its
/// maximum, as in PyTorch.
template <int Rank, class Derived>
convmat::Matrix<typename Derived::Scalar> max_pool(const MaxPoolSpec<Rank>& spec,
                                                   const Eigen::MatrixBase<Derived>& input) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.output_numel(), x.cols());
  std::vector<detail::Tap> taps;
  for (Index p = 0; p < g.output_spatial; ++p) {
    g.taps_at(p, taps);  // never empty: validated
    for (Index c = 0; c < spec.channels; ++c)
      for (Index s = 0; s < x.cols(); ++s) {
        const Scalar* column = x.col(s).data() + c * g.input_spatial;
        Scalar best = column[taps.front().offset];
        for (const auto& t : taps)
          if (column[t.offset] > best || std::isnan(column[t.offset])) best = column[t.offset];
        y(c * g.output_spatial + p, s) = best;
      }
  }
  return y;
}

// ---------------------------------------------------------------------------
// Padding
// ---------------------------------------------------------------------------

/// A padding layer (PyTorch's F.pad / ZeroPad, ReflectionPad, ReplicationPad,
/// CircularPad; ONNX's Pad): every channel grows by pad_begin before and
/// pad_end after its input in each dimension, filled as `mode` says.
template <int Rank>
struct PadSpec {
  static_assert(Rank >= 1, "convmat: padding has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> pad_begin = detail::filled<Rank>(0);
  std::array<Index, Rank> pad_end = detail::filled<Rank>(0);
  PaddingMode mode = PaddingMode::zeros;

  /// The same layer as a depthwise 1x1 convolution with weights 1.
  ConvSpec<Rank> as_conv() const {
    ConvSpec<Rank> conv;
    conv.in_channels = conv.out_channels = conv.groups = channels;
    conv.input_size = input_size;
    conv.kernel_size = detail::filled<Rank>(1);
    conv.set_padding(pad_begin, pad_end);
    conv.padding_mode = mode;
    return conv;
  }

  void validate() const { as_conv().validate(); }
  /// input_size + pad_begin + pad_end.
  std::array<Index, Rank> output_size() const { return as_conv().output_size(); }
  Index input_numel() const { return as_conv().input_numel(); }
  Index output_numel() const { return as_conv().output_numel(); }
};

/// The dense matrix of a padding layer: a 0/1 matrix, except that with
/// reflect, replicate or circular several output positions read one input.
template <class Scalar = double, int Rank>
convmat::RowMajorMatrix<Scalar> pad_matrix(const PadSpec<Rank>& spec) {
  const auto g = detail::geometry(spec.as_conv());  // validated before the weights are sized by spec.channels
  detail::dense_footprint<Scalar>("the dense padding matrix", g.output_numel(), g.input_numel())
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::dense_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::dense_rows(g, ones.data(), 0, g.output_numel());
}

/// pad_matrix as compressed rows.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> pad_matrix_sparse(const PadSpec<Rank>& spec) {
  const auto g = detail::geometry(spec.as_conv());
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::compressed_rows_footprint<Scalar, StorageIndex>("the sparse padding matrix", plan)
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::sparse_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::build_sparse_rows<StorageIndex>(g, ones.data(), plan);
}

// ---------------------------------------------------------------------------
// Nearest upsampling
// ---------------------------------------------------------------------------

/// Nearest-neighbour upsampling by integer factors (PyTorch's
/// Upsample(scale_factor=s, mode='nearest'), ONNX's Resize/Upsample with
/// integer scales): output (c, i0 * s0 + r0, ...) = input (c, i0, ...).
template <int Rank>
struct UpsampleSpec {
  static_assert(Rank >= 1, "convmat: upsampling has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> scale = detail::filled<Rank>(1);

  /// The same layer as a depthwise transposed convolution with kernel =
  /// stride = scale and weights 1: each input spreads to its block.
  ConvTransposeSpec<Rank> as_conv_transpose() const {
    ConvTransposeSpec<Rank> t;
    t.in_channels = t.out_channels = t.groups = channels;
    t.input_size = input_size;
    detail::require_positive<Rank>(scale, "scale");
    t.kernel_size = t.stride = scale;
    return t;
  }

  void validate() const { as_conv_transpose().validate(); }
  /// input_size * scale.
  std::array<Index, Rank> output_size() const { return as_conv_transpose().output_size(); }
  Index input_numel() const { return as_conv_transpose().input_numel(); }
  Index output_numel() const { return as_conv_transpose().output_numel(); }
};

/// The dense 0/1 matrix of nearest upsampling.
template <class Scalar = double, int Rank>
convmat::RowMajorMatrix<Scalar> upsample_nearest_matrix(const UpsampleSpec<Rank>& spec) {
  const auto t = spec.as_conv_transpose();
  const auto g = detail::geometry(t);  // validated before the weights are sized by the scale
  detail::dense_footprint<Scalar>("the dense upsampling matrix", g.input_numel(), g.output_numel())
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::dense_layer_hint);
  return conv_transpose_matrix(t, detail::depthwise_ones<Scalar>(g));
}

/// upsample_nearest_matrix as compressed rows.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> upsample_nearest_matrix_sparse(const UpsampleSpec<Rank>& spec) {
  const auto g = detail::geometry(spec.as_conv_transpose());
  detail::check_storage_index<StorageIndex>(g.output_numel(), "the column count");
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::transposed_footprint<Scalar, StorageIndex>("the sparse upsampling matrix", g, plan)
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::sparse_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::build_transposed<StorageIndex>(g, ones.data(), plan);
}

// ---------------------------------------------------------------------------
// Flatten
// ---------------------------------------------------------------------------

/// The matrix of Flatten (and of any Reshape): the identity of size numel,
/// since convmat's vectors are already flattened in C order.
template <class Scalar = double>
convmat::RowMajorMatrix<Scalar> flatten_matrix(Index numel) {
  if (numel <= 0) detail::fail("flatten needs a positive element count: numel=", numel);
  detail::check_dense_size(numel, numel, sizeof(Scalar), "the flatten matrix");
  return convmat::RowMajorMatrix<Scalar>::Identity(numel, numel);
}

// ---------------------------------------------------------------------------
// Affine maps and their composition
// ---------------------------------------------------------------------------

/// An affine layer x -> matrix * x + bias. MatrixType is a dense or sparse
/// Eigen matrix (output_numel x input_numel); the bias has output_numel
/// entries. A batch X (one column per sample) maps to matrix * X + bias
/// added to every column.
template <class MatrixType>
struct AffineMap {
  using Scalar = typename MatrixType::Scalar;
  MatrixType matrix;
  convmat::Vector<Scalar> bias;

  Index input_numel() const { return matrix.cols(); }
  Index output_numel() const { return matrix.rows(); }

  /// matrix * X + bias, for one sample or a batch (columns).
  template <class Derived>
  convmat::Matrix<Scalar> operator()(const Eigen::MatrixBase<Derived>& x) const {
    const auto view = detail::batch_view(x, matrix.cols(), "input");
    if (bias.size() != matrix.rows())
      detail::fail("the affine map's bias has ", bias.size(), " entries, but its matrix has ", matrix.rows(), " rows");
    convmat::Matrix<Scalar> y = matrix * view;
    y.colwise() += bias;
    return y;
  }
};

/// The affine map of a matrix with zero bias.
template <class MatrixType>
AffineMap<std::decay_t<MatrixType>> linear_map(MatrixType matrix) {
  const Index rows = matrix.rows();
  return {std::move(matrix), convmat::Vector<typename std::decay_t<MatrixType>::Scalar>::Zero(rows)};
}

/// The affine map of a matrix and bias (checked to agree in size).
template <class MatrixType, class BiasDerived>
AffineMap<std::decay_t<MatrixType>> affine_map(MatrixType matrix, const Eigen::MatrixBase<BiasDerived>& bias) {
  if (bias.size() != matrix.rows() || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements (", bias.rows(), " x ", bias.cols(), "), but the matrix has ",
                 matrix.rows(), " rows");
  convmat::Vector<typename std::decay_t<MatrixType>::Scalar> b = bias.derived().reshaped();
  return {std::move(matrix), std::move(b)};
}

/// The one affine layer equal to `first` followed by `second`:
/// x -> T2 (T1 x + b1) + b2 = (T2 T1) x + (T2 b1 + b2).
template <class MatrixType>
AffineMap<MatrixType> compose(const AffineMap<MatrixType>& second, const AffineMap<MatrixType>& first) {
  if (second.matrix.cols() != first.matrix.rows())
    detail::fail("cannot compose affine layers: the second takes ", second.matrix.cols(),
                 " inputs, but the first gives ", first.matrix.rows(), " outputs");
  if (first.bias.size() != first.matrix.rows() || second.bias.size() != second.matrix.rows())
    detail::fail("cannot compose affine layers whose bias and matrix disagree: biases of ", first.bias.size(),
                 " and ", second.bias.size(), " entries for matrices of ", first.matrix.rows(), " and ",
                 second.matrix.rows(), " rows");
  if constexpr (!std::is_base_of_v<Eigen::SparseMatrixBase<MatrixType>, MatrixType>)
    detail::check_dense_size(second.matrix.rows(), first.matrix.cols(), sizeof(typename MatrixType::Scalar),
                             "the composed matrix");
  AffineMap<MatrixType> result;
  result.matrix = second.matrix * first.matrix;
  result.bias = second.matrix * first.bias + second.bias;
  return result;
}

// ---------------------------------------------------------------------------
// BatchNorm in inference mode
// ---------------------------------------------------------------------------

/// The running statistics and affine parameters of a BatchNorm layer in
/// inference mode: y = gamma * (x - mean) / sqrt(var + eps) + beta, per
/// channel (PyTorch's weight = gamma, bias = beta).
template <class Scalar>
struct BatchNorm {
  convmat::Vector<Scalar> gamma, beta, mean, var;
  Scalar eps = Scalar(1e-5);

  Index channels() const { return gamma.size(); }

  /// Per channel, gamma / sqrt(var + eps).
  convmat::Vector<Scalar> scale() const {
    validate();
    return (gamma.array() / (var.array() + eps).sqrt()).matrix();
  }
  /// Per channel, beta - mean * scale.
  convmat::Vector<Scalar> shift() const { return (beta.array() - mean.array() * scale().array()).matrix(); }

  /// Throws spec_error unless the four vectors agree and var + eps > 0.
  void validate() const {
    const Index c = gamma.size();
    if (c <= 0 || beta.size() != c || mean.size() != c || var.size() != c)
      detail::fail("batch norm parameters must all have one entry per channel: gamma has ", gamma.size(),
                   ", beta ", beta.size(), ", mean ", mean.size(), ", var ", var.size());
    for (Index i = 0; i < c; ++i)
      if (!(var(i) + eps > Scalar(0)))
        detail::fail("batch norm needs var + eps > 0: channel ", i, " has var=", var(i), ", eps=", eps);
  }
};

/// A BatchNorm layer over (channels, spatial...) inputs as an affine map
/// with a diagonal (sparse) matrix.
template <class Scalar, class StorageIndex = int>
AffineMap<SparseMatrix<Scalar, StorageIndex>> batch_norm_map(const BatchNorm<Scalar>& bn, Index spatial) {
  if (spatial <= 0) detail::fail("batch norm needs a positive spatial size: spatial=", spatial);
  const auto scale = bn.scale(), shift = bn.shift();
  const Index n = detail::checked_mul(bn.channels(), spatial, "batch norm numel");
  detail::check_storage_index<StorageIndex>(n, "the batch norm size");
  detail::Footprint("the batch norm matrix", n, n)
      .add(n, sizeof(Scalar) + sizeof(StorageIndex), "non-zeros (value and column index)")
      .add(n + 1, sizeof(StorageIndex), "row offsets")
      .add(n, sizeof(Scalar), "bias entries")
      .check(detail::sparse_layer_hint);
  // The diagonal, written straight into compressed rows: row i holds (i, i).
  AffineMap<SparseMatrix<Scalar, StorageIndex>> map;
  map.matrix.resize(n, n);
  map.matrix.resizeNonZeros(n);
  map.bias.resize(n);
  StorageIndex* outer = map.matrix.outerIndexPtr();
  StorageIndex* inner = map.matrix.innerIndexPtr();
  Scalar* values = map.matrix.valuePtr();
  for (Index i = 0; i < n; ++i) {
    outer[i] = inner[i] = static_cast<StorageIndex>(i);
    values[i] = scale(i / spatial);
    map.bias(i) = shift(i / spatial);
  }
  outer[n] = static_cast<StorageIndex>(n);
  return map;
}

/// A convolution's flattened weights and per-channel bias.
template <class Scalar>
struct ConvParameters {
  convmat::Vector<Scalar> weight, bias;
};

/// BatchNorm folded into the convolution before it: the weights and bias of
/// the one convolution equal to conv(x, w) + b followed by `bn`
/// (w'[oc, ...] = w[oc, ...] * scale[oc], b' = (b - mean) * scale + beta).
template <int Rank, class WeightDerived, class BiasDerived>
ConvParameters<typename WeightDerived::Scalar> fold_batch_norm(const ConvSpec<Rank>& spec,
                                                               const Eigen::MatrixBase<WeightDerived>& weight,
                                                               const Eigen::MatrixBase<BiasDerived>& bias,
                                                               const BatchNorm<typename WeightDerived::Scalar>& bn) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
  const auto w = detail::weight_view(weight, spec.weight_numel(), detail::conv_weight_layout);
  if (bias.size() != spec.out_channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements, but the layer has out_channels=", spec.out_channels);
  if (bn.channels() != spec.out_channels)
    detail::fail("batch norm has ", bn.channels(), " channels, but the convolution has out_channels=",
                 spec.out_channels);
  const auto scale = bn.scale();
  const Index per_channel = spec.weight_numel() / spec.out_channels;
  ConvParameters<typename WeightDerived::Scalar> folded{w, bias.derived().reshaped()};
  for (Index oc = 0; oc < spec.out_channels; ++oc)
    folded.weight.segment(oc * per_channel, per_channel) *= scale(oc);
  folded.bias = ((folded.bias - bn.mean).array() * scale.array() + bn.beta.array()).matrix();
  return folded;
}

/// BatchNorm folded into the transposed convolution before it (weights laid
/// out (in_channels, out_channels / groups, kernel...): the scale of output
/// channel oc multiplies every w[ic, oc mod (out_channels / groups), ...]
/// of oc's group).
template <int Rank, class WeightDerived, class BiasDerived>
ConvParameters<typename WeightDerived::Scalar> fold_batch_norm(const ConvTransposeSpec<Rank>& spec,
                                                               const Eigen::MatrixBase<WeightDerived>& weight,
                                                               const Eigen::MatrixBase<BiasDerived>& bias,
                                                               const BatchNorm<typename WeightDerived::Scalar>& bn) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
  const auto w = detail::weight_view(weight, spec.weight_numel(), detail::transpose_weight_layout);
  if (bias.size() != spec.out_channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements, but the layer has out_channels=", spec.out_channels);
  if (bn.channels() != spec.out_channels)
    detail::fail("batch norm has ", bn.channels(), " channels, but the transposed convolution has out_channels=",
                 spec.out_channels);
  const auto scale = bn.scale();
  const Index opg = spec.out_channels / spec.groups, ipg = spec.in_channels / spec.groups;
  const Index kn = spec.kernel_numel();
  ConvParameters<typename WeightDerived::Scalar> folded{w, bias.derived().reshaped()};
  for (Index ic = 0; ic < spec.in_channels; ++ic)
    for (Index j = 0; j < opg; ++j)
      folded.weight.segment((ic * opg + j) * kn, kn) *= scale(ic / ipg * opg + j);
  folded.bias = ((folded.bias - bn.mean).array() * scale.array() + bn.beta.array()).matrix();
  return folded;
}

}  // namespace convmat
