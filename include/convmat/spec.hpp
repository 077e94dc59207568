// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The shape of a layer: ConvSpec (PyTorch's Conv{1,2,3}d and any higher
// rank) and ConvTransposeSpec (ConvTranspose{1,2,3}d). Plain aggregates
// whose defaults are PyTorch's; every entry point validates them.
#pragma once

#include <Eigen/Core>
#include <array>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "detail/checked.hpp"
#include "error.hpp"

namespace convmat {

using Index = Eigen::Index;

/// How a convolution reads outside its input, as torch.nn.Conv*d's
/// `padding_mode`: zeros; reflect (edge not repeated: x2 x1 | x0 x1 x2);
/// replicate (edge repeated: x0 x0 | x0 x1); circular (wraps around).
enum class PaddingMode { zeros, reflect, replicate, circular };

/// PyTorch's spelling of a padding mode: "zeros", "reflect", ...
constexpr std::string_view to_string(PaddingMode mode) {
  switch (mode) {
    case PaddingMode::zeros: return "zeros";
    case PaddingMode::reflect: return "reflect";
    case PaddingMode::replicate: return "replicate";
    case PaddingMode::circular: return "circular";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, PaddingMode mode) {
  const auto name = to_string(mode);
  return name == "unknown" ? os << "PaddingMode(" << static_cast<int>(mode) << ')' : os << name;
}

/// The padding mode named by PyTorch's string, or spec_error.
inline PaddingMode padding_mode_from_string(std::string_view name) {
  for (auto mode : {PaddingMode::zeros, PaddingMode::reflect, PaddingMode::replicate,
                    PaddingMode::circular})
    if (to_string(mode) == name) return mode;
  detail::fail("padding_mode must be zeros, reflect, replicate or circular, not '",
               std::string(name), "'");
}

namespace detail {

template <int Rank>
constexpr std::array<Index, Rank> filled(Index value) {
  std::array<Index, Rank> a{};
  for (auto& x : a) x = value;
  return a;
}

template <int Rank>
void require_positive(const std::array<Index, Rank>& values, const char* field) {
  for (Index v : values)
    if (v <= 0) fail(field, " must be positive in every dimension: ", field, '=', values);
}

template <int Rank>
void require_non_negative(const std::array<Index, Rank>& values, const char* field) {
  for (Index v : values)
    if (v < 0) fail(field, " must not be negative: ", field, '=', values);
}

inline void require_channels(Index in_channels, Index out_channels, Index groups) {
  if (in_channels <= 0 || out_channels <= 0 || groups <= 0)
    fail("channels and groups must be positive: in_channels=", in_channels,
         ", out_channels=", out_channels, ", groups=", groups);
  if (in_channels % groups != 0 || out_channels % groups != 0)
    fail("channels must be divisible by groups: in_channels=", in_channels,
         ", out_channels=", out_channels, ", groups=", groups);
}

/// dilation * (kernel - 1) + 1: the extent one kernel window covers.
inline Index window_extent(Index kernel, Index dilation) {
  return checked_add(checked_mul(dilation, kernel - 1, "dilation * (kernel_size - 1)"), 1,
                     "dilation * (kernel_size - 1) + 1");
}

}  // namespace detail

/// Which side takes the odd element when a total padding is split in two:
/// ONNX's auto_pad=SAME_UPPER (TensorFlow's padding='SAME', PyTorch's
/// padding='same') puts it on the high side (the end), SAME_LOWER on the
/// low side (the beginning).
enum class SamePadding { upper, lower };

namespace detail {

/// Splits `total` padding elements into (begin, end) as `odd` says.
inline std::pair<Index, Index> split_padding(Index total, SamePadding odd) {
  const Index small = total / 2, large = total - small;
  return odd == SamePadding::upper ? std::pair<Index, Index>{small, large} : std::pair<Index, Index>{large, small};
}

/// ONNX's auto_pad SAME_UPPER / SAME_LOWER for any stride: the padding
/// that makes the output ceil(input / stride) long, per dimension. The total
/// is max((ceil(D / s) - 1) * s + dilation * (K - 1) + 1 - D, 0), split as
/// `odd` says. Sets `begin` and `end`.
template <int Rank>
void same_padding(const std::array<Index, Rank>& input, const std::array<Index, Rank>& kernel,
                  const std::array<Index, Rank>& stride, const std::array<Index, Rank>& dilation, SamePadding odd,
                  std::array<Index, Rank>& begin, std::array<Index, Rank>& end) {
  require_positive<Rank>(input, "input_size");
  require_positive<Rank>(kernel, "kernel_size");
  require_positive<Rank>(stride, "stride");
  require_positive<Rank>(dilation, "dilation");
  for (int d = 0; d < Rank; ++d) {
    const Index outputs = (input[d] - 1) / stride[d] + 1;  // ceil(D / s)
    const Index reach = checked_add(checked_mul(outputs - 1, stride[d], "(ceil(input_size / stride) - 1) * stride"),
                                    window_extent(kernel[d], dilation[d]), "the padded extent");
    std::tie(begin[d], end[d]) = split_padding(reach > input[d] ? reach - input[d] : 0, odd);
  }
}

}  // namespace detail

/// The shape of a convolution layer of `Rank` spatial dimensions, with
/// PyTorch's fields and defaults. Input (in_channels, input_size...) maps to
/// output (out_channels, output_size()...); weights are laid out
/// (out_channels, in_channels / groups, kernel_size...).
///
///     convmat::Conv2dSpec spec;
///     spec.in_channels = 3; spec.out_channels = 4;
///     spec.input_size = {7, 9}; spec.kernel_size = {3, 3};
///     spec.padding = {1, 1};
template <int Rank>
struct ConvSpec {
  static_assert(Rank >= 1, "convmat: a convolution has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index in_channels = 1;
  Index out_channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> stride = detail::filled<Rank>(1);
  /// Padding on the low side of each dimension, and on the high side too
  /// unless padding_end is set (PyTorch's symmetric `padding`).
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Padding on the high side, when it differs from the low side.
  std::optional<std::array<Index, Rank>> padding_end;
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  Index groups = 1;
  PaddingMode padding_mode = PaddingMode::zeros;

  /// Padding before and after the input in each dimension.
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  ConvSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }

  /// PyTorch's padding='same': output size equals input size. The total
  /// dilation * (kernel - 1) is split with the extra element on the high
  /// side. PyTorch allows it only for stride 1; so does this.
  ConvSpec& set_padding_same() {
    for (int d = 0; d < Rank; ++d)
      if (stride[d] != 1) detail::fail("padding='same' needs stride 1: stride=", stride);
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    detail::require_positive<Rank>(dilation, "dilation");
    std::array<Index, Rank> begin{}, end{};
    for (int d = 0; d < Rank; ++d) {
      const Index total = detail::window_extent(kernel_size[d], dilation[d]) - 1;
      begin[d] = total / 2;
      end[d] = total - begin[d];
    }
    return set_padding(begin, end);
  }

  /// ONNX's auto_pad=SAME_UPPER (TensorFlow's padding='SAME') for any
  /// stride: output_size = ceil(input_size / stride). The total padding
  /// max((ceil(D / s) - 1) * s + dilation * (K - 1) + 1 - D, 0) is split with
  /// the extra element on the high side; with stride 1 this is PyTorch's
  /// 'same'. Set input_size, kernel_size, stride and dilation first.
  ConvSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }

  /// ONNX's auto_pad=SAME_LOWER: as set_padding_same_upper(), with the extra
  /// element on the low side.
  ConvSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }

  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  ConvSpec& set_padding_same(SamePadding odd) {
    std::array<Index, Rank> begin{}, end{};
    detail::same_padding<Rank>(input_size, kernel_size, stride, dilation, odd, begin, end);
    return set_padding(begin, end);
  }

  /// PyTorch's padding='valid': no padding.
  ConvSpec& set_padding_valid() {
    padding = detail::filled<Rank>(0);
    padding_end.reset();
    return *this;
  }

  /// 'full' convolution (MATLAB's conv2 'full', convmtx2): every position
  /// where the kernel overlaps the input, dilation * (kernel - 1) each side.
  ConvSpec& set_padding_full() {
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    detail::require_positive<Rank>(dilation, "dilation");
    for (int d = 0; d < Rank; ++d)
      padding[d] = detail::window_extent(kernel_size[d], dilation[d]) - 1;
    padding_end.reset();
    return *this;
  }

  /// Throws spec_error unless this describes a layer PyTorch would accept.
  void validate() const { (void)checked_output_size(); }

  /// floor((D + pad_begin + pad_end - dilation * (K - 1) - 1) / stride) + 1.
  std::array<Index, Rank> output_size() const { return checked_output_size(); }

  Index input_spatial() const { return detail::checked_product(checked_input_size(), "input size"); }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index kernel_numel() const { return detail::checked_product(checked_kernel_size(), "kernel size"); }
  Index input_numel() const { return detail::checked_mul(in_channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(out_channels, output_spatial(), "output_numel"); }
  /// out_channels * (in_channels / groups) * prod(kernel_size).
  Index weight_numel() const {
    validate();
    return detail::checked_mul(detail::checked_mul(out_channels, in_channels / groups, "weight_numel"),
                               kernel_numel(), "weight_numel");
  }

 private:
  const std::array<Index, Rank>& checked_input_size() const {
    detail::require_positive<Rank>(input_size, "input_size");
    return input_size;
  }
  const std::array<Index, Rank>& checked_kernel_size() const {
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    return kernel_size;
  }

  std::array<Index, Rank> checked_output_size() const {
    detail::require_channels(in_channels, out_channels, groups);
    checked_input_size();
    checked_kernel_size();
    detail::require_positive<Rank>(stride, "stride");
    detail::require_positive<Rank>(dilation, "dilation");
    const auto begin = pad_begin(), end = pad_end();
    detail::require_non_negative<Rank>(begin, padding_end ? "padding (begin)" : "padding");
    detail::require_non_negative<Rank>(end, "padding_end");
    check_padding_mode(begin, end);
    std::array<Index, Rank> out{};
    bool fits = true;
    for (int d = 0; d < Rank; ++d) {
      const Index padded = detail::checked_add(
          detail::checked_add(input_size[d], begin[d], "padded input size"), end[d], "padded input size");
      const Index extent = detail::window_extent(kernel_size[d], dilation[d]);
      out[d] = detail::floor_div(padded - extent, stride[d]) + 1;
      fits = fits && out[d] >= 1;
    }
    if (!fits) {
      if (padding_end)
        detail::fail("kernel does not fit: input_size=", input_size, ", kernel_size=", kernel_size,
                     ", dilation=", dilation, ", padding=", begin, ", padding_end=", end,
                     ", stride=", stride, " give output ", out);
      detail::fail("kernel does not fit: input_size=", input_size, ", kernel_size=", kernel_size,
                   ", dilation=", dilation, ", padding=", begin, ", stride=", stride,
                   " give output ", out);
    }
    return out;
  }

  void check_padding_mode(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) const {
    for (int d = 0; d < Rank; ++d) {
      const Index most = begin[d] > end[d] ? begin[d] : end[d];
      if (padding_mode == PaddingMode::reflect && most >= input_size[d])
        detail::fail("reflect padding must be smaller than the input in every dimension: padding=",
                     begin, ", padding_end=", end, ", input_size=", input_size);
      if (padding_mode == PaddingMode::circular && most > input_size[d])
        detail::fail("circular padding must not exceed the input in any dimension: padding=",
                     begin, ", padding_end=", end, ", input_size=", input_size);
      if (padding_mode != PaddingMode::zeros && padding_mode != PaddingMode::reflect &&
          padding_mode != PaddingMode::replicate && padding_mode != PaddingMode::circular)
        detail::fail("padding_mode is not a PaddingMode: ", padding_mode);
    }
  }
};

/// The shape of a transposed convolution (PyTorch's ConvTranspose{1,2,3}d,
/// ONNX's ConvTranspose): the adjoint of the ConvSpec with the same stride,
/// padding, dilation and groups, taking output_size() back to input_size.
/// Weights are laid out (in_channels, out_channels / groups, kernel_size...).
/// Padding is zeros. Padding removes output elements: `padding` from the
/// low side, padding_end (when set, ONNX's asymmetric pads) from the high
/// side; only the low side moves the kernel taps, the high side only
/// shortens the output.
template <int Rank>
struct ConvTransposeSpec {
  static_assert(Rank >= 1, "convmat: a convolution has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index in_channels = 1;
  Index out_channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> stride = detail::filled<Rank>(1);
  /// Output elements removed on the low side (and on the high side unless
  /// padding_end is set): PyTorch's symmetric `padding`.
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Output elements removed on the high side, when it differs.
  std::optional<std::array<Index, Rank>> padding_end;
  /// Extra size on the high side of the output; smaller than stride or dilation.
  std::array<Index, Rank> output_padding = detail::filled<Rank>(0);
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  Index groups = 1;

  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  ConvTransposeSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }

  /// The padding that gives an output of `wanted` size (ONNX's
  /// ConvTranspose `output_shape`): per dimension the total
  /// stride * (D - 1) + output_padding + dilation * (K - 1) + 1 - wanted,
  /// split as `odd` says. ONNX puts the odd element at the beginning
  /// (SamePadding::lower) unless auto_pad is SAME_UPPER. spec_error if
  /// `wanted` is larger than the output without padding. Set input_size,
  /// kernel_size, stride, dilation and output_padding first.
  ConvTransposeSpec& set_output_size(const std::array<Index, Rank>& wanted, SamePadding odd = SamePadding::lower) {
    detail::require_positive<Rank>(wanted, "output size");
    padding = detail::filled<Rank>(0);
    padding_end.reset();
    const auto unpadded = checked_output_size();
    std::array<Index, Rank> begin{}, end{};
    for (int d = 0; d < Rank; ++d) {
      if (wanted[d] > unpadded[d])
        detail::fail("the wanted output size ", wanted, " is larger than the transposed convolution gives without ",
                     "padding: input_size=", input_size, ", kernel_size=", kernel_size, ", stride=", stride,
                     ", dilation=", dilation, ", output_padding=", output_padding, " give output ", unpadded);
      std::tie(begin[d], end[d]) = detail::split_padding(unpadded[d] - wanted[d], odd);
    }
    return set_padding(begin, end);
  }

  /// ONNX's ConvTranspose auto_pad=SAME_UPPER: output_size = input_size *
  /// stride, the odd padding element on the high side.
  ConvTransposeSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }
  /// auto_pad=SAME_LOWER: the same output size, the odd element on the low side.
  ConvTransposeSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }
  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  ConvTransposeSpec& set_padding_same(SamePadding odd) {
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(stride, "stride");
    std::array<Index, Rank> wanted{};
    for (int d = 0; d < Rank; ++d) wanted[d] = detail::checked_mul(input_size[d], stride[d], "input_size * stride");
    return set_output_size(wanted, odd);
  }

  void validate() const { (void)checked_output_size(); }

  /// (D - 1) * stride - pad_begin - pad_end + dilation * (K - 1) + output_padding + 1.
  std::array<Index, Rank> output_size() const { return checked_output_size(); }

  Index input_spatial() const {
    validate();
    return detail::checked_product(input_size, "input size");
  }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index kernel_numel() const {
    validate();
    return detail::checked_product(kernel_size, "kernel size");
  }
  Index input_numel() const { return detail::checked_mul(in_channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(out_channels, output_spatial(), "output_numel"); }
  /// in_channels * (out_channels / groups) * prod(kernel_size).
  Index weight_numel() const {
    validate();
    return detail::checked_mul(detail::checked_mul(in_channels, out_channels / groups, "weight_numel"),
                               kernel_numel(), "weight_numel");
  }

 private:
  std::array<Index, Rank> checked_output_size() const {
    detail::require_channels(in_channels, out_channels, groups);
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    detail::require_positive<Rank>(stride, "stride");
    detail::require_positive<Rank>(dilation, "dilation");
    const auto begin = pad_begin(), end = pad_end();
    detail::require_non_negative<Rank>(begin, padding_end ? "padding (begin)" : "padding");
    detail::require_non_negative<Rank>(end, "padding_end");
    detail::require_non_negative<Rank>(output_padding, "output_padding");
    std::array<Index, Rank> out{};
    bool positive = true;
    for (int d = 0; d < Rank; ++d) {
      if (output_padding[d] >= stride[d] && output_padding[d] >= dilation[d])
        detail::fail("output_padding must be smaller than either stride or dilation: output_padding=",
                     output_padding, ", stride=", stride, ", dilation=", dilation);
      const Index grown = detail::checked_mul(input_size[d] - 1, stride[d], "(input_size - 1) * stride");
      const Index extent = detail::window_extent(kernel_size[d], dilation[d]);
      out[d] = detail::checked_add(detail::checked_add(grown, extent, "output size"), output_padding[d],
                                   "output size") -
               detail::checked_add(begin[d], end[d], "pad_begin + pad_end");
      positive = positive && out[d] >= 1;
    }
    if (!positive) {
      if (padding_end)
        detail::fail("padding leaves no output: input_size=", input_size, ", kernel_size=", kernel_size,
                     ", stride=", stride, ", padding=", begin, ", padding_end=", end, ", dilation=", dilation,
                     ", output_padding=", output_padding, " give output ", out);
      detail::fail("padding leaves no output: input_size=", input_size, ", kernel_size=", kernel_size,
                   ", stride=", stride, ", padding=", padding, ", dilation=", dilation,
                   ", output_padding=", output_padding, " give output ", out);
    }
    return out;
  }
};

// ---------------------------------------------------------------------------
// Printing a spec as PyTorch prints the module
// ---------------------------------------------------------------------------

namespace detail {
/// The padding part of to_string, for convolutions and transposed ones
/// alike: a named padding ("same", "valid", "full"; ONNX's "same_upper" /
/// "same_lower" with the begin/end it set), asymmetric begin and end, or
/// the symmetric numbers when not all zero.
template <class Spec>
void write_padding(std::ostream& os, const Spec& spec, std::string_view padding_name) {
  if (padding_name == "same" || padding_name == "valid" || padding_name == "full") {
    os << ", padding='" << padding_name << "'";
  } else if (padding_name == "same_upper" || padding_name == "same_lower") {
    os << ", padding='" << padding_name << "' ";
    write_value(os, spec.pad_begin());
    os << "/";
    write_value(os, spec.pad_end());
  } else if (spec.padding_end && *spec.padding_end != spec.padding) {
    os << ", padding=";
    write_value(os, spec.padding);
    os << ", padding_end=";
    write_value(os, *spec.padding_end);
  } else if (spec.padding != decltype(spec.padding){}) {
    os << ", padding=";
    write_value(os, spec.padding);
  }
}
}  // namespace detail

/// The layer as PyTorch prints its module, for instance
/// "Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))":
/// padding, dilation, groups and padding_mode only when not the default,
/// asymmetric padding as "padding=(begin), padding_end=(end)". `bias`
/// false appends ", bias=False"; a `padding_name` ("same", "valid", "full",
/// "same_upper", "same_lower") is printed instead of the numbers it set
/// (for ONNX's, followed by "begin/end"). `operator<<` prints to_string(spec).
template <int Rank>
std::string to_string(const ConvSpec<Rank>& spec, bool bias = true, std::string_view padding_name = {}) {
  const auto ones = detail::filled<Rank>(1);
  std::ostringstream os;
  const auto tuple = [&os](const std::array<Index, Rank>& values) -> std::ostream& {
    detail::write_value(os, values);
    return os;
  };
  os << "Conv" << Rank << "d(" << spec.in_channels << ", " << spec.out_channels << ", kernel_size=";
  tuple(spec.kernel_size) << ", stride=";
  tuple(spec.stride);
  detail::write_padding(os, spec, padding_name);
  if (spec.dilation != ones) {
    os << ", dilation=";
    tuple(spec.dilation);
  }
  if (spec.groups != 1) os << ", groups=" << spec.groups;
  if (spec.padding_mode != PaddingMode::zeros) os << ", padding_mode='" << spec.padding_mode << "'";
  os << (bias ? ")" : ", bias=False)");
  return os.str();
}

/// "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1))",
/// as to_string(ConvSpec) (a transposed layer has no padding_mode).
template <int Rank>
std::string to_string(const ConvTransposeSpec<Rank>& spec, bool bias = true, std::string_view padding_name = {}) {
  const auto ones = detail::filled<Rank>(1), zeros = detail::filled<Rank>(0);
  std::ostringstream os;
  const auto tuple = [&os](const std::array<Index, Rank>& values) -> std::ostream& {
    detail::write_value(os, values);
    return os;
  };
  os << "ConvTranspose" << Rank << "d(" << spec.in_channels << ", " << spec.out_channels << ", kernel_size=";
  tuple(spec.kernel_size) << ", stride=";
  tuple(spec.stride);
  detail::write_padding(os, spec, padding_name);
  if (spec.output_padding != zeros) {
    os << ", output_padding=";
    tuple(spec.output_padding);
  }
  if (spec.dilation != ones) {
    os << ", dilation=";
    tuple(spec.dilation);
  }
  if (spec.groups != 1) os << ", groups=" << spec.groups;
  os << (bias ? ")" : ", bias=False)");
  return os.str();
}

template <int Rank>
std::ostream& operator<<(std::ostream& os, const ConvSpec<Rank>& spec) {
  return os << to_string(spec);
}

template <int Rank>
std::ostream& operator<<(std::ostream& os, const ConvTransposeSpec<Rank>& spec) {
  return os << to_string(spec);
}

using Conv1dSpec = ConvSpec<1>;
using Conv2dSpec = ConvSpec<2>;
using Conv3dSpec = ConvSpec<3>;
using ConvTranspose1dSpec = ConvTransposeSpec<1>;
using ConvTranspose2dSpec = ConvTransposeSpec<2>;
using ConvTranspose3dSpec = ConvTransposeSpec<3>;

}  // namespace convmat
