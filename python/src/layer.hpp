// convmat's Python module: a layer's shape as Python hands it over, and the
// dispatch from it (rank, convolution or transposed, dtype) to the
// library's templates.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <convmat/convmat.hpp>

#include <array>
#include <complex>
#include <cstddef>
#include <string>
#include <vector>

namespace convmat::python {

namespace py = pybind11;

/// A layer's shape, every field as PyTorch names it; the Python package
/// fills it from a torch.nn layer or from a weight array and keywords.
/// `padding` is "same", "valid" or "explicit" (then padding_begin and
/// padding_end hold it); the library resolves "same" and "valid".
struct LayerShape {
  bool transposed = false;
  Index in_channels = 1, out_channels = 1, groups = 1;
  std::vector<Index> input_size, kernel_size, stride, dilation;
  std::string padding = "explicit";
  std::vector<Index> padding_begin, padding_end, output_padding;
  std::string padding_mode = "zeros";

  int rank() const { return static_cast<int>(input_size.size()); }
};

/// The ranks the module is built for.
inline constexpr int max_rank = 3;

/// `values` as the per-axis array of a rank-Rank spec, or ValueError.
template <int Rank>
std::array<Index, Rank> per_axis(const std::vector<Index>& values, const char* field) {
  if (values.size() != static_cast<std::size_t>(Rank))
    throw py::value_error("convmat: " + std::string(field) + " has " + std::to_string(values.size()) +
                          " entries, but the layer has " + std::to_string(Rank) + " spatial dimensions");
  std::array<Index, Rank> a{};
  for (int d = 0; d < Rank; ++d) a[d] = values[static_cast<std::size_t>(d)];
  return a;
}

template <int Rank>
ConvSpec<Rank> conv_spec(const LayerShape& s) {
  ConvSpec<Rank> spec;
  spec.in_channels = s.in_channels;
  spec.out_channels = s.out_channels;
  spec.groups = s.groups;
  spec.input_size = per_axis<Rank>(s.input_size, "input_size");
  spec.kernel_size = per_axis<Rank>(s.kernel_size, "kernel_size");
  spec.stride = per_axis<Rank>(s.stride, "stride");
  spec.dilation = per_axis<Rank>(s.dilation, "dilation");
  spec.padding_mode = padding_mode_from_string(s.padding_mode);
  if (s.padding == "same") {
    spec.set_padding_same();
  } else if (s.padding == "valid") {
    spec.set_padding_valid();
  } else if (s.padding == "explicit") {
    const auto begin = per_axis<Rank>(s.padding_begin, "padding"), end = per_axis<Rank>(s.padding_end, "padding");
    if (begin == end)
      spec.padding = begin;
    else
      spec.set_padding(begin, end);
  } else {
    throw py::value_error("convmat: padding must be 'same', 'valid' or 'explicit', not '" + s.padding + "'");
  }
  return spec;
}

template <int Rank>
ConvTransposeSpec<Rank> transpose_spec(const LayerShape& s) {
  if (s.padding != "explicit" || s.padding_begin != s.padding_end)
    throw py::value_error("convmat: a transposed convolution takes symmetric padding, one number per axis");
  if (s.padding_mode != "zeros")
    throw py::value_error("convmat: a transposed convolution pads with zeros only, not padding_mode='" +
                          s.padding_mode + "'");
  ConvTransposeSpec<Rank> spec;
  spec.in_channels = s.in_channels;
  spec.out_channels = s.out_channels;
  spec.groups = s.groups;
  spec.input_size = per_axis<Rank>(s.input_size, "input_size");
  spec.kernel_size = per_axis<Rank>(s.kernel_size, "kernel_size");
  spec.stride = per_axis<Rank>(s.stride, "stride");
  spec.dilation = per_axis<Rank>(s.dilation, "dilation");
  spec.padding = per_axis<Rank>(s.padding_begin, "padding");
  spec.output_padding = per_axis<Rank>(s.output_padding, "output_padding");
  return spec;
}

[[noreturn]] inline void unsupported_rank(int rank) {
  throw py::value_error("convmat: the Python module builds layers of 1 to " + std::to_string(max_rank) +
                        " spatial dimensions, not " + std::to_string(rank));
}

/// f(spec) with the ConvSpec<Rank> or ConvTransposeSpec<Rank> the shape
/// describes.
template <class F>
decltype(auto) visit_spec(const LayerShape& s, F&& f) {
  switch (s.rank()) {
    case 1: return s.transposed ? f(transpose_spec<1>(s)) : f(conv_spec<1>(s));
    case 2: return s.transposed ? f(transpose_spec<2>(s)) : f(conv_spec<2>(s));
    case 3: return s.transposed ? f(transpose_spec<3>(s)) : f(conv_spec<3>(s));
  }
  unsupported_rank(s.rank());
}

/// f(spec) with the ConvSpec the shape describes; TypeError for a
/// transposed convolution, which `what` does not take (the library has it
/// for convolutions only).
template <class F>
decltype(auto) visit_conv_spec(const LayerShape& s, const char* what, F&& f) {
  if (s.transposed)
    throw py::type_error(std::string("convmat: ") + what +
                         " takes a convolution (Conv1d/2d/3d), not a transposed convolution");
  switch (s.rank()) {
    case 1: return f(conv_spec<1>(s));
    case 2: return f(conv_spec<2>(s));
    case 3: return f(conv_spec<3>(s));
  }
  unsupported_rank(s.rank());
}

template <class T>
struct Tag {  // a type passed as a value, for generic lambdas
  using type = T;
};

/// f(Tag<S>{}) for the scalar type S of `dtype`: float32, float64,
/// complex64 or complex128; TypeError naming any other dtype.
template <class F>
decltype(auto) visit_scalar(const py::dtype& dtype, F&& f) {
  if (dtype.equal(py::dtype::of<float>())) return f(Tag<float>{});
  if (dtype.equal(py::dtype::of<double>())) return f(Tag<double>{});
  if (dtype.equal(py::dtype::of<std::complex<float>>())) return f(Tag<std::complex<float>>{});
  if (dtype.equal(py::dtype::of<std::complex<double>>())) return f(Tag<std::complex<double>>{});
  throw py::type_error("convmat: arrays must be float32, float64, complex64 or complex128, not " +
                       py::str(static_cast<const py::handle&>(dtype)).cast<std::string>());
}

}  // namespace convmat::python
