// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The one index machinery. Everything convmat computes — the dense and
// sparse matrices, unfold and fold, the direct and transposed convolutions,
// the operator — answers one question: which input position does output
// position o read through kernel tap k, if any? It is answered here, once,
// per spatial axis (AxisMap), and combined across axes (Geometry).
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "../limits.hpp"
#include "../spec.hpp"
#include "checked.hpp"

namespace convmat::detail {

/// The input coordinate that padded coordinate `p` reads in an axis of
/// `n` elements, or -1 for a padding zero. The spec has already checked
/// that the padding is within what the mode can take (reflect: < n,
/// circular: <= n), so one reflection or wrap suffices.
inline Index padded_source(Index p, Index n, PaddingMode mode) {
  if (0 <= p && p < n) return p;
  switch (mode) {
    case PaddingMode::zeros: return -1;
    case PaddingMode::reflect: return p < 0 ? -p : 2 * (n - 1) - p;
    case PaddingMode::replicate: return p < 0 ? 0 : n - 1;
    case PaddingMode::circular: return positive_mod(p, n);
  }
  return -1;
}

/// Outputs [begin, end) of one axis that read input coordinates first,
/// first + step, ... through one tap: the part of a row with no padding,
/// where copying is a strided (step 1: contiguous) read. Empty: begin == end.
struct AxisRun {
  Index begin = 0, end = 0, first = 0, step = 1;
};

/// One spatial axis of a layer: for output coordinate o and tap k, the
/// input coordinate o * stride + k * dilation - pad_begin reads, after the
/// padding mode, or -1.
class AxisMap {
 public:
  AxisMap() = default;
  AxisMap(Index input, Index output, Index kernel, Index stride, Index dilation, Index pad_begin,
          PaddingMode mode)
      : input_(input), output_(output), kernel_(kernel),
        source_(static_cast<std::size_t>(checked_mul(output, kernel, "output * kernel"))),
        by_tap_(source_.size()), interior_(static_cast<std::size_t>(kernel)) {
    for (Index o = 0; o < output; ++o)
      for (Index k = 0; k < kernel; ++k) {
        const Index p = o * stride + k * dilation - pad_begin;
        const Index s = padded_source(p, input, mode);
        source_[static_cast<std::size_t>(o * kernel + k)] = s;
        by_tap_[static_cast<std::size_t>(k * output + o)] = s;
        AxisRun& run = interior_[static_cast<std::size_t>(k)];
        if (0 <= p && p < input) {  // p grows with o, so these o are one run
          if (run.begin == run.end) run = {o, o, s, stride};
          run.end = o + 1;
        }
      }
  }

  Index input() const { return input_; }
  Index output() const { return output_; }
  Index kernel() const { return kernel_; }

  /// The input coordinate that output o reads through tap k, or -1.
  Index source(Index o, Index k) const { return source_[static_cast<std::size_t>(o * kernel_ + k)]; }
  /// source(o, 0 .. kernel - 1), contiguous.
  const Index* sources(Index o) const { return source_.data() + o * kernel_; }
  /// source(0 .. output - 1, k), contiguous.
  const Index* sources_of_tap(Index k) const { return by_tap_.data() + k * output_; }
  /// The outputs whose tap k reads inside the input (no padding), as one
  /// arithmetic run: there source(o, k) = first + (o - begin) * step.
  const AxisRun& interior(Index k) const { return interior_[static_cast<std::size_t>(k)]; }

  /// How many distinct input coordinates output o reads, in O(kernel) when
  /// its taps read increasing coordinates (no padding mode, or none that
  /// folds back), O(kernel log kernel) otherwise.
  Index distinct_sources(Index o) const {
    const Index* s = sources(o);
    Index inside = 0, last = -1;
    bool increasing = true;
    for (Index k = 0; k < kernel_; ++k)
      if (s[k] >= 0) {
        increasing = increasing && s[k] > last;
        last = s[k];
        ++inside;
      }
    if (increasing) return inside;
    // Reflect, replicate or circular padding came back to coordinates
    // already read: count the distinct ones of a sorted copy.
    std::array<Index, 64> small{};
    std::vector<Index> large;
    Index* seen = small.data();
    if (inside > static_cast<Index>(small.size())) {
      large.resize(static_cast<std::size_t>(inside));
      seen = large.data();
    }
    Index* end = std::copy_if(s, s + kernel_, seen, [](Index v) { return v >= 0; });
    std::sort(seen, end);
    return std::unique(seen, end) - seen;
  }

 private:
  Index input_ = 0, output_ = 0, kernel_ = 0;
  std::vector<Index> source_;  // [o][k]
  std::vector<Index> by_tap_;  // [k][o], the same table transposed
  std::vector<AxisRun> interior_;  // [k]
};

/// One kernel tap that an output position reads: the input's flat spatial
/// offset, and the tap's flat index in the kernel.
struct Tap {
  Index offset;
  Index tap;
};

/// A layer reduced to what every path needs: channels, groups, the spatial
/// extents and one AxisMap per axis. For a convolution it is the layer
/// itself; for a transposed convolution it is the convolution whose adjoint
/// the layer is (input and output swapped), so both share every builder.
template <int Rank>
struct Geometry {
  Index in_channels = 0, out_channels = 0, groups = 1;
  std::array<Index, Rank> input_size{}, output_size{}, kernel_size{};
  std::array<Index, Rank> input_strides{};  ///< C-order strides of the input's spatial axes
  std::array<AxisMap, Rank> axes;
  PaddingMode mode = PaddingMode::zeros;
  Index input_spatial = 0, output_spatial = 0, kernel_numel = 0;

  Index in_per_group() const { return in_channels / groups; }
  Index out_per_group() const { return out_channels / groups; }
  Index input_numel() const { return in_channels * input_spatial; }
  Index output_numel() const { return out_channels * output_spatial; }
  Index weight_numel() const { return out_channels * in_per_group() * kernel_numel; }
  /// The first input channel of the group that output channel `oc` belongs to.
  Index group_first_input(Index oc) const { return oc / out_per_group() * in_per_group(); }

  /// The multi-index of flat output position `out`.
  std::array<Index, Rank> output_coordinates(Index out) const {
    std::array<Index, Rank> o{};
    for (int d = Rank - 1; d >= 0; --d) {
      o[d] = out % output_size[d];
      out /= output_size[d];
    }
    return o;
  }

  /// The taps that flat output position `out` reads, into `taps`, sorted by
  /// input offset (taps that land on the same input stay adjacent, in tap
  /// order). Padding zeros are left out.
  void taps_at(Index out, std::vector<Tap>& taps) const {
    taps.clear();
    const auto o = output_coordinates(out);
    std::array<const Index*, Rank> sources{};
    for (int d = 0; d < Rank; ++d) sources[d] = axes[d].sources(o[d]);
    append_taps<0>(sources, 0, 0, taps);
    if (mode != PaddingMode::zeros)
      std::stable_sort(taps.begin(), taps.end(),
                       [](const Tap& a, const Tap& b) { return a.offset < b.offset; });
  }

  /// How many distinct inputs flat output position `out` reads per channel.
  Index distinct_taps_at(Index out) const {
    const auto o = output_coordinates(out);
    Index n = 1;
    for (int d = 0; d < Rank; ++d) n *= axes[d].distinct_sources(o[d]);
    return n;
  }

  /// Structural non-zeros of one output channel's rows, summed over all
  /// output positions, per input channel: the product over axes of each
  /// axis's distinct-source counts (distinct offsets are distinct tuples).
  Index distinct_taps_total() const {
    Index total = 1;
    for (int d = 0; d < Rank; ++d) {
      Index axis_total = 0;
      for (Index o = 0; o < axes[d].output(); ++o) axis_total += axes[d].distinct_sources(o);
      total = checked_mul(total, axis_total, "non-zero count");
    }
    return total;
  }

  /// distinct_taps_at(p) summed over the positions [p_begin, p_end), without
  /// listing a tap: each axis's counts once, then one product per position.
  Index distinct_taps_between(Index p_begin, Index p_end) const {
    if (p_begin >= p_end) return 0;
    if (p_begin == 0 && p_end == output_spatial) return distinct_taps_total();
    std::array<std::vector<Index>, Rank> counts;
    for (int d = 0; d < Rank; ++d) {
      counts[d].resize(static_cast<std::size_t>(axes[d].output()));
      for (Index o = 0; o < axes[d].output(); ++o) counts[d][static_cast<std::size_t>(o)] = axes[d].distinct_sources(o);
    }
    auto o = output_coordinates(p_begin);
    Index total = 0;
    for (Index p = p_begin; p < p_end; ++p) {
      Index n = 1;
      for (int d = 0; d < Rank; ++d) n *= counts[d][static_cast<std::size_t>(o[d])];  // <= kernel_numel
      total = checked_add(total, n, "non-zero count");
      for (int d = Rank - 1; d >= 0; --d) {  // next position
        if (++o[d] < output_size[d]) break;
        o[d] = 0;
      }
    }
    return total;
  }

  /// The structural non-zeros of rows [row_begin, row_end) of the matrix
  /// (row = out_channel * output_spatial + position), exactly, before
  /// anything is built: what conv_matrix_sparse_rows will store.
  Index nonzeros_between(Index row_begin, Index row_end) const {
    if (row_begin >= row_end) return 0;
    const Index oc_first = row_begin / output_spatial, oc_last = (row_end - 1) / output_spatial;
    const Index head_begin = row_begin % output_spatial, tail_end = (row_end - 1) % output_spatial + 1;
    Index per_input_channel = 0;
    if (oc_first == oc_last) {
      per_input_channel = distinct_taps_between(head_begin, tail_end);
    } else {
      const Index whole = checked_mul(oc_last - oc_first - 1, distinct_taps_total(), "non-zero count");
      per_input_channel = checked_add(checked_add(distinct_taps_between(head_begin, output_spatial),
                                                  distinct_taps_between(0, tail_end), "non-zero count"),
                                      whole, "non-zero count");
    }
    return checked_mul(per_input_channel, in_per_group(), "non-zero count");
  }

 private:
  template <int D>
  void append_taps(const std::array<const Index*, Rank>& sources, Index offset, Index tap,
                   std::vector<Tap>& taps) const {
    const Index kernel = kernel_size[D];
    for (Index k = 0; k < kernel; ++k) {
      const Index s = sources[D][k];
      if (s < 0) continue;
      const Index next_offset = offset + s * input_strides[D];
      const Index next_tap = tap * kernel + k;
      if constexpr (D + 1 == Rank)
        taps.push_back({next_offset, next_tap});
      else
        append_taps<D + 1>(sources, next_offset, next_tap, taps);
    }
  }
};

/// The taps of consecutive output positions [first, first + count), each
/// list computed once by Geometry::taps_at.
template <int Rank>
class TapLists {
 public:
  TapLists() = default;

  /// Recomputes the lists for positions [first, first + count).
  void assign(const Geometry<Rank>& g, Index first, Index count) {
    first_ = first;
    start_.assign(static_cast<std::size_t>(count) + 1, 0);
    taps_.clear();
    for (Index p = 0; p < count; ++p) {
      g.taps_at(first + p, scratch_);
      taps_.insert(taps_.end(), scratch_.begin(), scratch_.end());
      start_[static_cast<std::size_t>(p) + 1] = taps_.size();
    }
  }

  /// The taps of output position p (within the lists' range), as taps_at.
  const Tap* begin(Index p) const { return taps_.data() + start_[static_cast<std::size_t>(p - first_)]; }
  const Tap* end(Index p) const { return taps_.data() + start_[static_cast<std::size_t>(p - first_) + 1]; }

 private:
  Index first_ = 0;
  std::vector<std::size_t> start_;
  std::vector<Tap> taps_, scratch_;
};

/// How many output positions for_each_row_taps lists at a time: 256, or
/// fewer when the kernel is so large that their taps would pass 2^20
/// (16 MiB), down to one position, whose at most kernel_numel taps take 16
/// bytes each — a few times the weights the caller already holds, however
/// many positions the layer has (a replicate padding far wider than the
/// input makes every tap of a huge kernel a real one).
template <int Rank>
Index tap_block_positions(const Geometry<Rank>& g) {
  constexpr Index most_positions = 256, most_taps = Index(1) << 20;
  return std::clamp<Index>(most_taps / std::max<Index>(g.kernel_numel, 1), 1, most_positions);
}

/// Calls f(r, taps_begin, taps_end) once for every row r in [row_begin,
/// row_end) of the layer's matrix (r = out_channel * output_spatial + p)
/// with the taps of its position p, as Geometry::taps_at gives them. The
/// rows are visited a block of `block` positions at a time (0:
/// tap_block_positions), for every output channel in the range, so each
/// position's taps are computed once per block (not once per row) in
/// memory that stays small.
template <int Rank, class F>
void for_each_row_taps(const Geometry<Rank>& g, Index row_begin, Index row_end, F&& f, Index block = 0) {
  if (row_end <= row_begin) return;
  if (block <= 0) block = tap_block_positions(g);
  const Index spatial = g.output_spatial;
  const Index oc_first = row_begin / spatial, oc_last = (row_end - 1) / spatial;
  // Positions [p_begin, p_end) that the rows read: all, once they span two channels.
  const Index p_begin = oc_first == oc_last ? row_begin % spatial : 0;
  const Index p_end = oc_first == oc_last ? (row_end - 1) % spatial + 1 : spatial;
  TapLists<Rank> lists;
  for (Index p0 = p_begin; p0 < p_end; p0 += block) {
    const Index p1 = std::min(p0 + block, p_end);
    lists.assign(g, p0, p1 - p0);
    for (Index oc = oc_first; oc <= oc_last; ++oc) {
      const Index first = std::max(row_begin, oc * spatial + p0), last = std::min(row_end, oc * spatial + p1);
      for (Index r = first; r < last; ++r) f(r, lists.begin(r - oc * spatial), lists.end(r - oc * spatial));
    }
  }
}

/// How many distinct input offsets a list of taps sorted by offset reads
/// (distinct_taps_at): each new offset starts a run.
inline Index distinct_offsets(const Tap* begin, const Tap* end) {
  Index count = 0;
  for (const Tap* t = begin; t != end; ++t) count += t == begin || t->offset != t[-1].offset;
  return count;
}

/// The AxisMaps hold two Index per output coordinate and tap of each axis.
/// Beyond 64 MiB they are held to max_dense_bytes(), so a huge layer is a
/// spec_error before its tables are allocated (even for matrix_size()).
template <int Rank>
void check_index_tables(const std::array<Index, Rank>& output_size, const std::array<Index, Rank>& kernel_size) {
  Index entries = 0;
  for (int d = 0; d < Rank; ++d)
    entries = checked_add(entries, checked_mul(output_size[d], kernel_size[d], "output * kernel"), "index tables");
  const std::size_t per_entry = 2 * sizeof(Index), floor = std::size_t{64} << 20, limit = max_dense_bytes();
  const auto n = static_cast<std::size_t>(entries);
  if (n > floor / per_entry && n > limit / per_entry)
    fail_memory("the index tables would need ", entries, " entries of ", per_entry,
         " bytes (output_size=", output_size, ", kernel_size=", kernel_size,
         "), more than max_dense_bytes() = ", limit, "; raise it with set_max_dense_bytes()");
}

template <int Rank>
Geometry<Rank> make_geometry(Index in_channels, Index out_channels, Index groups,
                             const std::array<Index, Rank>& input_size,
                             const std::array<Index, Rank>& output_size,
                             const std::array<Index, Rank>& kernel_size,
                             const std::array<Index, Rank>& stride,
                             const std::array<Index, Rank>& dilation,
                             const std::array<Index, Rank>& pad_begin, PaddingMode mode) {
  Geometry<Rank> g;
  g.in_channels = in_channels;
  g.out_channels = out_channels;
  g.groups = groups;
  g.input_size = input_size;
  g.output_size = output_size;
  g.kernel_size = kernel_size;
  g.mode = mode;
  // Every size is checked before anything is multiplied unchecked or allocated.
  g.input_spatial = checked_product(input_size, "input size");
  g.output_spatial = checked_product(output_size, "output size");
  g.kernel_numel = checked_product(kernel_size, "kernel size");
  (void)checked_mul(in_channels, g.input_spatial, "input_numel");
  (void)checked_mul(out_channels, g.output_spatial, "output_numel");
  (void)checked_mul(checked_mul(out_channels, g.in_per_group(), "weight_numel"), g.kernel_numel,
                    "weight_numel");
  check_index_tables<Rank>(output_size, kernel_size);
  Index stride_d = 1;
  for (int d = Rank - 1; d >= 0; --d) {
    g.input_strides[d] = stride_d;
    stride_d *= input_size[d];
  }
  for (int d = 0; d < Rank; ++d)
    g.axes[d] = AxisMap(input_size[d], output_size[d], kernel_size[d], stride[d], dilation[d],
                        pad_begin[d], mode);
  return g;
}

/// The geometry of a convolution (validates the spec).
template <int Rank>
Geometry<Rank> geometry(const ConvSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.in_channels, spec.out_channels, spec.groups, spec.input_size,
                             spec.output_size(), spec.kernel_size, spec.stride, spec.dilation,
                             spec.pad_begin(), spec.padding_mode);
}

/// The geometry of the convolution whose adjoint a transposed convolution
/// is: it reads the transposed layer's output and writes its input.
template <int Rank>
Geometry<Rank> geometry(const ConvTransposeSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.out_channels, spec.in_channels, spec.groups, spec.output_size(),
                             spec.input_size, spec.kernel_size, spec.stride, spec.dilation,
                             spec.padding, PaddingMode::zeros);
}

}  // namespace convmat::detail
