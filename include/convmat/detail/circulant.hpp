// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// A layer seen through the FFT. Every convolution layer is a piece of a
// block-circulant one:
//
//     T = R C E P,
//
// where P pads the input as the padding mode says (zeros: an isometric
// embedding), E embeds the padded signal into a periodic grid, C is a
// circular convolution on that grid, and R keeps the outputs the layer has.
// A stride s becomes s^d interleaved "phase" channels (the polyphase
// split: padded position m is phase m mod s at grid position m div s), so C
// has stride 1 and the FFT block-diagonalises it: per frequency f, one
// small matrix M_f (C_out / groups x C_in / groups * s^d per group), and
// the singular values of C are those of all the M_f together (Sedghi,
// Gupta and Long, "The Singular Values of Convolutional Layers", ICLR 2019).
// E and R have norm at most 1, so ||T|| <= ||P|| * max_f ||M_f||, and ||P||
// is a product over axes of per-axis norms. Circular padding whose strides
// divide the input needs no P: the input is already periodic; when the
// output then covers the whole grid, R is the identity and C's values are
// exactly T's.
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/FFT>
#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <limits>
#include <type_traits>
#include <vector>

#include "../limits.hpp"
#include "../spec.hpp"
#include "arguments.hpp"
#include "checked.hpp"
#include "geometry.hpp"
#include "parallel.hpp"
#include "svd.hpp"

namespace convmat::detail {

/// One spatial axis of a convolution, as the circulant model needs it.
struct ConvAxis {
  Index input = 0, output = 0, kernel = 0, stride = 1, dilation = 1, pad_begin = 0, pad_end = 0;
  PaddingMode mode = PaddingMode::zeros;
};

/// The axes of a convolution.
template <int Rank>
std::array<ConvAxis, Rank> conv_axes(const ConvSpec<Rank>& spec) {
  const auto out = spec.output_size(), begin = spec.pad_begin(), end = spec.pad_end();
  std::array<ConvAxis, Rank> axes;
  for (int d = 0; d < Rank; ++d)
    axes[d] = {spec.input_size[d], out[d], spec.kernel_size[d], spec.stride[d], spec.dilation[d], begin[d], end[d],
               spec.padding_mode};
  return axes;
}

/// The axes of the convolution a transposed layer is the adjoint of: it
/// reads the transposed layer's output, with zero padding.
template <int Rank>
std::array<ConvAxis, Rank> conv_axes(const ConvTransposeSpec<Rank>& spec) {
  const auto out = spec.output_size();
  std::array<ConvAxis, Rank> axes;
  for (int d = 0; d < Rank; ++d) {
    // The padded extent the convolution reads: beyond it, zeros.
    const Index reach = (spec.input_size[d] - 1) * spec.stride[d] + spec.dilation[d] * (spec.kernel_size[d] - 1) + 1;
    const Index end = std::max<Index>(0, reach - spec.padding[d] - out[d]);
    axes[d] = {out[d], spec.input_size[d], spec.kernel_size[d], spec.stride[d], spec.dilation[d], spec.padding[d],
               end, PaddingMode::zeros};
  }
  return axes;
}

/// The smallest n' >= n whose prime factors are 2, 3 and 5: a size the FFT
/// handles fast. Any grid at least as large as the padded signal works.
inline Index fft_size(Index n) {
  for (Index m = std::max<Index>(n, 1);; ++m) {
    Index r = m;
    for (Index p : {2, 3, 5})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

/// One axis of the circulant model: outputs o < output read, through tap
/// k, phase phase[k] at grid position (o + shift[k]) mod grid; `norm` is
/// that of the axis's padding operator P_d; `whole` says R is the identity
/// on this axis (output == grid, nothing padded: the model is the layer).
struct CirculantAxis {
  Index grid = 1, phases = 1, output = 1;
  std::vector<Index> shift, phase;  // per tap
  double norm = 1;
  bool whole = false;
};

/// The circulant model of one axis (see the file comment).
inline CirculantAxis circulant_axis(const ConvAxis& a) {
  CirculantAxis c;
  c.phases = a.stride;
  c.output = a.output;
  c.shift.resize(static_cast<std::size_t>(a.kernel));
  c.phase.resize(static_cast<std::size_t>(a.kernel));
  if (a.mode == PaddingMode::circular && a.input % a.stride == 0 && a.output <= a.input / a.stride) {
    // Already periodic: input (o s + k d - pad_begin) mod D, phase and
    // position read off the polyphase split of the input itself (every
    // output its own grid row: output <= D / s).
    c.grid = a.input / a.stride;
    for (Index k = 0; k < a.kernel; ++k) {
      const Index q = k * a.dilation - a.pad_begin;
      c.shift[static_cast<std::size_t>(k)] = positive_mod(floor_div(q, a.stride), c.grid);
      c.phase[static_cast<std::size_t>(k)] = positive_mod(q, a.stride);
    }
    c.whole = a.output == c.grid;
    return c;
  }
  // The padded signal, long enough for every read and (zeros) every input.
  const Index reach = (a.output - 1) * a.stride + a.dilation * (a.kernel - 1) + 1;
  const Index padded = a.mode == PaddingMode::zeros ? std::max(a.pad_begin + a.input, reach)
                                                     : a.pad_begin + a.input + a.pad_end;
  c.grid = fft_size((padded + a.stride - 1) / a.stride);
  for (Index k = 0; k < a.kernel; ++k) {
    c.shift[static_cast<std::size_t>(k)] = k * a.dilation / a.stride;
    c.phase[static_cast<std::size_t>(k)] = k * a.dilation % a.stride;
  }
  if (a.mode != PaddingMode::zeros) {
    // P_d has one 1 per row (the input each padded position reads), so
    // P_d^T P_d is diagonal: its norm is the root of the most reads of one input.
    std::vector<Index> reads(static_cast<std::size_t>(a.input), 0);
    for (Index m = 0; m < a.pad_begin + a.input + a.pad_end; ++m)
      ++reads[static_cast<std::size_t>(padded_source(m - a.pad_begin, a.input, a.mode))];
    c.norm = std::sqrt(static_cast<double>(*std::max_element(reads.begin(), reads.end())));
  }
  return c;
}

/// A layer as a block-circulant convolution on a grid (see the file
/// comment): per kernel tap (flat, C order) its flat grid shift and flat
/// phase; the channels; ||P||; and whether the circulant is the layer.
template <int Rank>
struct CirculantModel {
  std::array<CirculantAxis, Rank> axes;
  std::array<Index, Rank> grid{};
  Index grid_numel = 1, phase_numel = 1;
  Index out_channels = 1, in_channels = 1, groups = 1;
  std::vector<Index> tap_shift, tap_phase;
  double padding_norm = 1;
  bool exact = false;

  Index out_per_group() const { return out_channels / groups; }
  /// The columns of one frequency's matrix: a group's input channels times the phases.
  Index columns_per_group() const { return in_channels / groups * phase_numel; }
};

template <int Rank>
CirculantModel<Rank> circulant_model(const std::array<ConvAxis, Rank>& axes, Index in_channels, Index out_channels,
                                     Index groups) {
  CirculantModel<Rank> m;
  m.in_channels = in_channels;
  m.out_channels = out_channels;
  m.groups = groups;
  m.exact = true;
  Index kernel_numel = 1;
  for (int d = 0; d < Rank; ++d) {
    m.axes[d] = circulant_axis(axes[d]);
    m.grid[d] = m.axes[d].grid;
    m.grid_numel = checked_mul(m.grid_numel, m.grid[d], "FFT grid size");
    m.phase_numel = checked_mul(m.phase_numel, m.axes[d].phases, "phase count");
    kernel_numel = checked_mul(kernel_numel, axes[d].kernel, "kernel size");
    m.padding_norm *= m.axes[d].norm;
    m.exact = m.exact && m.axes[d].whole;
  }
  m.tap_shift.assign(static_cast<std::size_t>(kernel_numel), 0);
  m.tap_phase.assign(static_cast<std::size_t>(kernel_numel), 0);
  for (Index tap = 0; tap < kernel_numel; ++tap) {
    Index rest = tap, shift = 0, phase = 0, grid_stride = 1, phase_stride = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      const auto k = static_cast<std::size_t>(rest % axes[d].kernel);
      rest /= axes[d].kernel;
      shift += m.axes[d].shift[k] * grid_stride;
      phase += m.axes[d].phase[k] * phase_stride;
      grid_stride *= m.grid[d];
      phase_stride *= m.axes[d].phases;
    }
    m.tap_shift[static_cast<std::size_t>(tap)] = shift;
    m.tap_phase[static_cast<std::size_t>(tap)] = phase;
  }
  return m;
}

/// The multi-dimensional DFT of `data` (C-order, extents `sizes`) in
/// place, one axis after the other, with Eigen's FFT.
template <int Rank, class Real>
void fft_in_place(std::complex<Real>* data, const std::array<Index, Rank>& sizes, Eigen::FFT<Real>& fft,
                  std::vector<std::complex<Real>>& in, std::vector<std::complex<Real>>& out) {
  Index stride = 1, total = 1;
  for (Index s : sizes) total *= s;
  for (int d = Rank - 1; d >= 0; --d) {
    const Index n = sizes[d];
    if (n > 1) {
      in.resize(static_cast<std::size_t>(n));
      out.resize(static_cast<std::size_t>(n));
      // Lines along axis d start at every index whose coordinate d is 0.
      for (Index outer = 0; outer < total; outer += n * stride)
        for (Index inner = 0; inner < stride; ++inner) {
          std::complex<Real>* line = data + outer + inner;
          for (Index i = 0; i < n; ++i) in[static_cast<std::size_t>(i)] = line[i * stride];
          fft.fwd(out.data(), in.data(), n);
          for (Index i = 0; i < n; ++i) line[i * stride] = out[static_cast<std::size_t>(i)];
        }
    }
    stride *= n;
  }
}

inline constexpr const char* spectra_hint =
    "use the Lanczos estimates instead (singular_values(spec, weight, k), spectral_norm), or raise the limit with "
    "set_max_dense_bytes()";

/// The bytes FrequencyMatrices holds for a model (SIZE_MAX if it overflows).
template <int Rank, class Scalar>
std::size_t spectra_bytes(const CirculantModel<Rank>& m) {
  using Complex = std::complex<std::common_type_t<typename Eigen::NumTraits<Scalar>::Real, double>>;
  const double bytes = static_cast<double>(m.out_channels) * static_cast<double>(m.in_channels / m.groups) *
                       static_cast<double>(m.phase_numel) * static_cast<double>(m.grid_numel) * sizeof(Complex);
  return bytes >= static_cast<double>(std::numeric_limits<std::size_t>::max()) ? std::numeric_limits<std::size_t>::max()
                                                                                 : static_cast<std::size_t>(bytes);
}

/// Whether circulant_singular_values of the model stays within max_dense_bytes().
template <class Scalar, int Rank>
bool circulant_values_fit(const CirculantModel<Rank>& m) {
  return spectra_bytes<Rank, Scalar>(m) <= max_dense_bytes();
}

/// The circulant model's frequency matrices, all at once: for every
/// frequency f (flat over the grid) and group, M_f[a, (c, phase)] = the
/// DFT at f of output channel a's kernel for input channel c, placed on the
/// grid at the taps' shifts of that phase. Computed in double (at least):
/// a float layer's weights are exact in it.
template <int Rank, class Scalar>
class FrequencyMatrices {
 public:
  using Real = std::common_type_t<typename Eigen::NumTraits<Scalar>::Real, double>;
  using Complex = std::complex<Real>;
  using Block = Eigen::Matrix<Complex, Eigen::Dynamic, Eigen::Dynamic>;

  FrequencyMatrices(const CirculantModel<Rank>& model, const Scalar* w) : m_(model) {
    const Index cig = m_.in_channels / m_.groups, kn = static_cast<Index>(m_.tap_shift.size());
    const Index lines = checked_mul(checked_mul(m_.out_channels, cig, "spectra"), m_.phase_numel, "spectra");
    check_dense_size(lines, m_.grid_numel, sizeof(Complex), "the FFT spectra for the layer's singular values",
                     spectra_hint);
    spectra_.assign(static_cast<std::size_t>(lines * m_.grid_numel), Complex(0));
    // One line per (output channel, input channel, phase): its taps on the grid, transformed.
    parallel_chunks(0, m_.out_channels * cig, 16, [&](Index begin, Index end) {
      Eigen::FFT<Real> fft;
      std::vector<Complex> in, out;
      for (Index pair = begin; pair < end; ++pair) {
        Complex* first = spectra_.data() + pair * m_.phase_numel * m_.grid_numel;
        for (Index tap = 0; tap < kn; ++tap) {
          const auto t = static_cast<std::size_t>(tap);
          first[m_.tap_phase[t] * m_.grid_numel + m_.tap_shift[t]] += Complex(w[pair * kn + tap]);
        }
        for (Index phase = 0; phase < m_.phase_numel; ++phase)
          fft_in_place<Rank>(first + phase * m_.grid_numel, m_.grid, fft, in, out);
      }
    });
  }

  /// Calls f(group, frequency, M) for every group and every frequency in
  /// [first, last), M = M_f of the group: (C_out / groups) x (C_in / groups
  /// * phases). The matrices are gathered a run of frequencies at a time,
  /// so each spectrum is read in contiguous pieces.
  template <class F>
  void for_each(Index first, Index last, F&& f) const {
    constexpr Index run = 32;
    const Index cog = m_.out_per_group(), cig = m_.in_channels / m_.groups, p = m_.phase_numel;
    std::vector<Block> blocks(static_cast<std::size_t>(run), Block(cog, cig * p));
    for (Index group = 0; group < m_.groups; ++group)
      for (Index begin = first; begin < last; begin += run) {
        const Index count = std::min(run, last - begin);
        for (Index a = 0; a < cog; ++a)
          for (Index c = 0; c < cig; ++c)
            for (Index phase = 0; phase < p; ++phase) {
              const Complex* line =
                  spectra_.data() + ((((group * cog + a) * cig + c) * p + phase) * m_.grid_numel + begin);
              for (Index i = 0; i < count; ++i) blocks[static_cast<std::size_t>(i)](a, c * p + phase) = line[i];
            }
        for (Index i = 0; i < count; ++i) f(group, begin + i, blocks[static_cast<std::size_t>(i)]);
      }
  }

  /// The flat index of frequency -f (each coordinate negated modulo its axis).
  Index negated(Index f) const {
    Index result = 0, stride = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      const Index n = m_.grid[d], fd = f % n;
      f /= n;
      result += ((n - fd) % n) * stride;
      stride *= n;
    }
    return result;
  }

  const CirculantModel<Rank>& model() const { return m_; }

 private:
  const CirculantModel<Rank>& m_;
  std::vector<Complex> spectra_;
};

/// All singular values of the circulant model's C (unsorted): those of
/// every group's M_f at every frequency. T's own when model.exact.
template <int Rank, class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> circulant_singular_values(const CirculantModel<Rank>& model,
                                                                           const Scalar* w) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  const Index per_frequency = std::min(model.out_per_group(), model.columns_per_group());
  const Index count = checked_mul(checked_mul(model.grid_numel, model.groups, "singular value count"),
                                  per_frequency, "singular value count");
  check_dense_size(count, 1, sizeof(Real), "the singular values", spectra_hint);
  const FrequencyMatrices<Rank, Scalar> spectra(model, w);
  Vector<Real> values(count);
  parallel_chunks(0, model.grid_numel, 64, [&](Index begin, Index end) {
    spectra.for_each(begin, end, [&](Index group, Index f, const auto& m) {
      values.segment((group * model.grid_numel + f) * per_frequency, per_frequency) =
          svd_values(m).template cast<Real>();
    });
  });
  return values;
}

/// max over groups and frequencies of the largest singular value of M_f:
/// the norm of the model's C. With real weights M_{-f} is conj(M_f), so
/// only one of each pair is decomposed.
template <int Rank, class Scalar>
double circulant_norm(const CirculantModel<Rank>& model, const Scalar* w) {
  const FrequencyMatrices<Rank, Scalar> spectra(model, w);
  std::vector<double> best(static_cast<std::size_t>(model.grid_numel), 0.0);  // per frequency
  parallel_chunks(0, model.grid_numel, 64, [&](Index begin, Index end) {
    spectra.for_each(begin, end, [&](Index, Index f, const auto& m) {
      if (!Eigen::NumTraits<Scalar>::IsComplex && spectra.negated(f) < f) return;  // its conjugate's twin
      auto& at = best[static_cast<std::size_t>(f)];
      at = std::max(at, static_cast<double>(largest_svd_value(m)));
    });
  });
  return *std::max_element(best.begin(), best.end());
}

}  // namespace convmat::detail
