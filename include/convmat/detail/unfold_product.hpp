// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The one product path. T X is a blocked unfold followed by one matrix
// product (GEMM) per group; T^T Y and T^H Y are the products with the
// transposed weights followed by a blocked fold. convolve_unfold,
// ConvOperator (and through it the solvers, spectral_norm, the normal and
// Tikhonov operators) and the PETSc MATSHELL all multiply here.
//
// A product is cut into panels of about panel_columns columns of the
// unfold matrix: a range of one sample's output positions, or several
// small samples side by side. A panel's unfold block (its rows a chunk of
// at most workspace_bytes) is built in a per-thread workspace and
// multiplied while it is in the cache, so a product allocates per thread
// that block and, for samples side by side, one group's output channels x
// the panel's columns — never the unfold matrix, nothing that grows with
// the batch or the image. With OpenMP the panels (forward) or the samples
// and input channels (adjoint, whose fold must not add into the same input
// from two threads) are shared among threads.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstddef>
#include <vector>

#include "arguments.hpp"
#include "geometry.hpp"
#include "parallel.hpp"

namespace convmat::detail {

/// Where a sample's input channels are read (unfold) or added (fold):
/// spatial offset s of channel c at data[(c - channel_begin) *
/// channel_stride + s - offset_begin]. The whole input is whole_input(g);
/// the PETSc shell's halo holds a window of channels and offsets.
struct InputWindow {
  Index channel_begin = 0, channel_stride = 0, offset_begin = 0;
};

/// The window that is the whole input of a sample.
template <int Rank>
InputWindow whole_input(const Geometry<Rank>& g) {
  return {0, g.input_spatial, 0};
}

/// One segment of a row of the unfold matrix: the columns of one outer
/// position (a multi-index of every output axis but the last) that a block
/// holds, elements [j_begin, j_end) of the last axis.
struct UnfoldSegment {
  Index row = 0;                ///< unfold row: channel * kernel_numel + tap
  Index column = 0;             ///< the block's column of element j_begin
  Index j_begin = 0, j_end = 0;
  bool padding = false;         ///< every element reads a padding zero
  Index base = 0;               ///< element j reads in[base + sources[j]] (window index), or padding if < 0
  const Index* sources = nullptr;
  const AxisRun* interior = nullptr;  ///< elements [begin, end) read in[base + first + (j - begin) * step]
};

/// Walks rows [row_begin, row_end) of the unfold matrix (rows (channel,
/// tap), columns output positions) in order and, in each, the columns of
/// output positions [position_begin, position_end), one UnfoldSegment per
/// outer position they touch, giving input indices in `window`.
template <int Rank, class F>
void for_each_unfold_segment(const Geometry<Rank>& g, const InputWindow& window, Index row_begin, Index row_end,
                             Index position_begin, Index position_end, F&& f) {
  if (position_begin >= position_end) return;
  constexpr int last = Rank - 1;
  const Index segment = g.output_size[last];
  const Index outer_begin = position_begin / segment, outer_end = (position_end - 1) / segment + 1;
  std::array<Index, Rank> first_outer{};  // multi-index of outer_begin (last axis unused)
  for (Index outer = outer_begin, d = last - 1; d >= 0; --d) {
    first_outer[d] = outer % g.output_size[d];
    outer /= g.output_size[d];
  }
  UnfoldSegment s;
  for (Index row = row_begin; row < row_end; ++row) {
    const Index channel = row / g.kernel_numel;
    std::array<Index, Rank> k{};  // tap multi-index
    for (Index tap = row % g.kernel_numel, d = last; d >= 0; --d) {
      k[d] = tap % g.kernel_size[d];
      tap /= g.kernel_size[d];
    }
    s.row = row;
    s.sources = g.axes[last].sources_of_tap(k[last]);
    s.interior = &g.axes[last].interior(k[last]);
    const Index channel_base = (channel - window.channel_begin) * window.channel_stride - window.offset_begin;
    std::array<Index, Rank> o = first_outer;
    for (Index outer = outer_begin; outer < outer_end; ++outer) {
      const Index start = outer * segment;
      s.j_begin = std::max<Index>(position_begin - start, 0);
      s.j_end = std::min<Index>(position_end - start, segment);
      s.column = start + s.j_begin - position_begin;
      Index spatial = 0;
      s.padding = false;
      for (int d = 0; d < last && !s.padding; ++d) {
        const Index source = g.axes[d].source(o[d], k[d]);
        s.padding = source < 0;
        spatial += source * g.input_strides[d];
      }
      s.base = channel_base + spatial;
      f(static_cast<const UnfoldSegment&>(s));
      for (int d = last - 1; d >= 0; --d) {  // next outer position
        if (++o[d] < g.output_size[d]) break;
        o[d] = 0;
      }
    }
  }
}

/// The elements [run_begin, run_end) of a segment that its interior run
/// holds, clipped to [j_begin, j_end).
inline std::pair<Index, Index> clipped_run(const UnfoldSegment& s) {
  const Index begin = std::min(std::max(s.interior->begin, s.j_begin), s.j_end);
  const Index end = std::min(std::max(s.interior->end, begin), s.j_end);
  return {begin, end};
}

/// Rows [row_begin, row_end) and the columns of output positions
/// [position_begin, position_end) of one sample's unfold matrix, the
/// sample read through `window`, into `out`: row-major, `width` elements
/// per row (row row_begin first). Within a segment the interior is one
/// contiguous (or strided) copy; only the borders look at each element's
/// source.
template <int Rank, class Scalar>
void unfold_block_into(const Geometry<Rank>& g, const Scalar* x, const InputWindow& window, Index row_begin,
                       Index row_end, Index position_begin, Index position_end, Scalar* out, Index width) {
  for_each_unfold_segment(g, window, row_begin, row_end, position_begin, position_end, [&](const UnfoldSegment& s) {
    Scalar* to = out + (s.row - row_begin) * width + s.column;  // element j at to[j - j_begin]
    if (s.padding) {
      std::fill(to, to + (s.j_end - s.j_begin), Scalar(0));
      return;
    }
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j)
        to[j - s.j_begin] = s.sources[j] < 0 ? Scalar(0) : x[s.base + s.sources[j]];
    };
    const auto [run_begin, run_end] = clipped_run(s);
    by_source(s.j_begin, run_begin);
    if (run_begin < run_end) {
      const AxisRun& run = *s.interior;
      const Scalar* in = x + s.base + run.first + (run_begin - run.begin) * run.step;
      Scalar* dst = to + (run_begin - s.j_begin);
      if (run.step == 1)
        std::copy(in, in + (run_end - run_begin), dst);
      else
        for (Index j = 0; j < run_end - run_begin; ++j) dst[j] = in[j * run.step];
    }
    by_source(run_end, s.j_end);
  });
}

/// The adjoint of unfold_block_into: adds each element of the block
/// `columns` (as unfold_block_into writes it) into the input it was read
/// from, in `window`.
template <int Rank, class Scalar>
void fold_block_add(const Geometry<Rank>& g, const Scalar* columns, Index width, Index row_begin, Index row_end,
                    Index position_begin, Index position_end, Scalar* x, const InputWindow& window) {
  for_each_unfold_segment(g, window, row_begin, row_end, position_begin, position_end, [&](const UnfoldSegment& s) {
    if (s.padding) return;
    const Scalar* from = columns + (s.row - row_begin) * width + s.column;  // element j at from[j - j_begin]
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j)
        if (s.sources[j] >= 0) x[s.base + s.sources[j]] += from[j - s.j_begin];
    };
    const auto [run_begin, run_end] = clipped_run(s);
    by_source(s.j_begin, run_begin);
    if (run_begin < run_end) {
      const AxisRun& run = *s.interior;
      Scalar* in = x + s.base + run.first + (run_begin - run.begin) * run.step;
      const Scalar* src = from + (run_begin - s.j_begin);
      for (Index j = 0; j < run_end - run_begin; ++j) in[j * run.step] += src[j];
    }
    by_source(run_end, s.j_end);
  });
}

/// The rows of T a product covers: output channels [channel_begin,
/// channel_end) at output positions [position_begin, position_end). A
/// sample's part of the product is laid out channel-major: (channel -
/// channel_begin) * positions() + (position - position_begin).
struct OutputRegion {
  Index channel_begin = 0, channel_end = 0, position_begin = 0, position_end = 0;
  Index channels() const { return channel_end - channel_begin; }
  Index positions() const { return position_end - position_begin; }
};

/// Every row of T.
template <int Rank>
OutputRegion whole_output(const Geometry<Rank>& g) {
  return {0, g.out_channels, 0, g.output_spatial};
}

/// Columns of the unfold matrix per panel: wide enough for the GEMM to run
/// at full speed, narrow enough for the block to stay in the cache.
inline constexpr Index panel_columns = 512;
/// A panel is never split below this many columns to give threads work.
inline constexpr Index min_panel_columns = 64;
/// The most one thread's unfold block takes; deeper layers are multiplied
/// in chunks of rows (the products added up).
inline constexpr std::size_t workspace_bytes = std::size_t{2} << 20;

/// How a product over `batch` samples of `positions` columns each is cut
/// into panels: with `splits` > 1, panel i is the split i % splits of
/// sample i / splits' positions; else panel i holds samples [i * samples,
/// (i + 1) * samples), whole. A sample set (sample_sets() of them) is the
/// samples of `splits` consecutive panels: no two sets share a sample.
struct Panels {
  struct Panel {
    Index sample_begin, sample_end, position_begin, position_end;
    Index positions() const { return position_end - position_begin; }
    Index columns() const { return (sample_end - sample_begin) * positions(); }
  };

  Index positions = 0, batch = 0, splits = 1, samples = 1, count = 0, width = 0;

  Panels(Index positions_per_sample, Index batch_size, Index threads)
      : positions(positions_per_sample), batch(batch_size) {
    const auto ceil_div = [](Index a, Index b) { return (a + b - 1) / b; };
    splits = std::max<Index>(1, (positions + panel_columns / 2) / panel_columns);
    const Index most_splits = std::max<Index>(1, positions / min_panel_columns);
    if (batch * splits < threads) splits = std::min(most_splits, ceil_div(threads, batch));
    // Few panels: as many per thread, if the panels stay wide enough.
    while (batch * splits < 4 * threads && (batch * splits) % threads != 0 && splits < most_splits) ++splits;
    if (splits > 1) {
      count = batch * splits;
      width = ceil_div(positions, splits);
      return;
    }
    samples = std::max<Index>(1, panel_columns / std::max<Index>(positions, 1));
    count = std::max(ceil_div(batch, samples), std::min(batch, threads));
    samples = ceil_div(batch, count);
    count = ceil_div(batch, samples);
    width = samples * positions;
  }

  Panel operator()(Index i) const {
    if (splits > 1) {
      const Index k = i % splits;
      return {i / splits, i / splits + 1, positions * k / splits, positions * (k + 1) / splits};
    }
    return {i * samples, std::min(batch, (i + 1) * samples), 0, positions};
  }
  Index sample_sets() const { return count / splits; }
};

/// Rows of the unfold block per chunk for panels `width` columns wide.
template <class Scalar>
Index workspace_depth(Index group_rows, Index width) {
  const Index fits = static_cast<Index>(workspace_bytes / sizeof(Scalar)) / std::max<Index>(width, 1);
  return std::max<Index>(1, std::min(group_rows, fits));
}

/// `size` entries of scratch space kept by the calling thread between
/// calls (one buffer per Slot, grown as needed, never shrunk): a fresh
/// unfold block of 2 MiB per product is a fresh mmap, whose page faults
/// and zeroing cost a quarter of a small layer's product.
template <class Scalar, int Slot>
Scalar* thread_scratch(Index size) {
  thread_local Vector<Scalar> buffer;
  if (buffer.size() < size) {
    buffer.resize(0);  // the old block first: never both at once
    buffer.resize(size);
  }
  return buffer.data();
}

template <class Scalar>
using BlockMap = Eigen::Map<RowMajorMatrix<Scalar>, 0, Eigen::OuterStride<>>;
template <class Scalar>
using ConstBlockMap = Eigen::Map<const RowMajorMatrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Y = T X on the rows `region` of T, for `batch` samples: sample s reads
/// x + s * x_stride through `window` and writes y + s * y_stride (laid out
/// as OutputRegion says; overwritten). `w` holds the weights (out_channels,
/// in_channels / groups, kernel...); conjugated ones give conj(T) X. The
/// work is cut for `threads` threads (0: available_threads()); any number
/// gives the same result, up to rounding.
template <int Rank, class Scalar>
void unfold_multiply(const Geometry<Rank>& g, const Scalar* w, const Scalar* x, Index x_stride,
                     const InputWindow& window, Scalar* y, Index y_stride, Index batch, const OutputRegion& region,
                     Index threads = 0) {
  if (batch <= 0 || region.channels() <= 0 || region.positions() <= 0) return;
  const Index cog = g.out_per_group(), group_rows = g.in_per_group() * g.kernel_numel;
  const Index positions = region.positions();
  const Index first_group = region.channel_begin / cog, last_group = (region.channel_end - 1) / cog;
  const Panels panels(positions, batch, threads > 0 ? threads : available_threads());
  const Index depth = workspace_depth<Scalar>(group_rows, panels.width);
  const Index out_rows = panels.samples > 1 ? std::min(cog, region.channels()) : 0;
  parallel_chunks(0, panels.count, 1, [&](Index first, Index last) {
    Scalar* const columns = thread_scratch<Scalar, 0>(depth * panels.width);  // uninitialised, aligned
    Scalar* const out = thread_scratch<Scalar, 1>(out_rows * panels.width);
    for (Index i = first; i < last; ++i) {
      const auto panel = panels(i);
      const Index n = panel.columns(), piece = panel.positions();
      const Index from = region.position_begin + panel.position_begin, to = from + piece;
      const bool side_by_side = panel.sample_end - panel.sample_begin > 1;
      for (Index group = first_group; group <= last_group; ++group) {
        const Index oc_begin = std::max(region.channel_begin, group * cog);
        const Index oc_end = std::min(region.channel_end, (group + 1) * cog);
        Scalar* y_block = y + panel.sample_begin * y_stride + (oc_begin - region.channel_begin) * positions +
                          panel.position_begin;
        BlockMap<Scalar> product = side_by_side
                                       ? BlockMap<Scalar>(out, oc_end - oc_begin, n, Eigen::OuterStride<>(n))
                                       : BlockMap<Scalar>(y_block, oc_end - oc_begin, n, Eigen::OuterStride<>(positions));
        for (Index r0 = 0; r0 < group_rows; r0 += depth) {
          const Index r1 = std::min(r0 + depth, group_rows), row0 = group * group_rows;
          for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
            unfold_block_into(g, x + s * x_stride, window, row0 + r0, row0 + r1, from, to,
                              columns + (s - panel.sample_begin) * piece, n);
          const ConstBlockMap<Scalar> u(columns, r1 - r0, n, Eigen::OuterStride<>(n));
          const ConstBlockMap<Scalar> w_block(w + oc_begin * group_rows + r0, oc_end - oc_begin, r1 - r0,
                                              Eigen::OuterStride<>(group_rows));
          if (r0 == 0)
            product.noalias() = w_block * u;
          else
            product.noalias() += w_block * u;
        }
        if (side_by_side)  // each sample's columns to its own output
          for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
            for (Index oc = 0; oc < oc_end - oc_begin; ++oc) {
              const Scalar* source = out + oc * n + (s - panel.sample_begin) * piece;
              std::copy(source, source + piece, y_block + (s - panel.sample_begin) * y_stride + oc * positions);
            }
      }
    }
  });
}

/// X (+)= T^T Y on the rows `region` of T, for `batch` samples: sample s
/// reads y + s * y_stride (laid out as OutputRegion says) and adds into x +
/// s * x_stride through `window`, into the input channels of the groups
/// the region's channels belong to; with `overwrite` those channels are
/// set instead (nothing else of x is touched). With conjugated weights
/// `w` it is T^H Y. The fold of one sample into one input channel runs on
/// one thread: threads share the sample sets and, when there are fewer
/// sets than threads, the input channels. `threads` as unfold_multiply.
template <int Rank, class Scalar>
void multiply_fold(const Geometry<Rank>& g, const Scalar* w, const Scalar* y, Index y_stride, Scalar* x,
                   Index x_stride, const InputWindow& window, Index batch, const OutputRegion& region,
                   bool overwrite, Index threads = 0) {
  if (batch <= 0 || region.channels() <= 0 || region.positions() <= 0) return;
  const Index cig = g.in_per_group(), cog = g.out_per_group(), kn = g.kernel_numel, group_rows = cig * kn;
  const Index positions = region.positions();
  const Index first_group = region.channel_begin / cog, last_group = (region.channel_end - 1) / cog;
  const Index channel_begin = first_group * cig, channels = (last_group + 1 - first_group) * cig;
  if (threads <= 0) threads = available_threads();
  const Panels panels(positions, batch, threads);
  const Index sets = panels.sample_sets();
  const Index parts = sets >= threads ? 1 : std::min(channels, (threads + sets - 1) / sets);
  const Index depth = workspace_depth<Scalar>(group_rows, panels.width);
  const Index gathered_rows = panels.samples > 1 ? std::min(cog, region.channels()) : 0;
  parallel_chunks(0, sets * parts, 1, [&](Index first, Index last) {
    Scalar* const columns = thread_scratch<Scalar, 0>(depth * panels.width);
    Scalar* const gathered = thread_scratch<Scalar, 1>(gathered_rows * panels.width);
    for (Index unit = first; unit < last; ++unit) {
      const Index set = unit / parts, part = unit % parts;
      const Index c_begin = channel_begin + channels * part / parts;
      const Index c_end = channel_begin + channels * (part + 1) / parts;
      if (c_begin == c_end) continue;
      if (overwrite) {
        const auto first_panel = panels(set * panels.splits);
        for (Index s = first_panel.sample_begin; s < first_panel.sample_end; ++s) {
          Scalar* channel = x + s * x_stride + (c_begin - window.channel_begin) * window.channel_stride;
          std::fill(channel, channel + (c_end - c_begin) * window.channel_stride, Scalar(0));
        }
      }
      for (Index i = set * panels.splits; i < (set + 1) * panels.splits; ++i) {
        const auto panel = panels(i);
        const Index n = panel.columns(), piece = panel.positions();
        const Index from = region.position_begin + panel.position_begin, to = from + piece;
        const bool side_by_side = panel.sample_end - panel.sample_begin > 1;
        for (Index group = std::max(first_group, c_begin / cig); group <= (c_end - 1) / cig; ++group) {
          const Index oc_begin = std::max(region.channel_begin, group * cog);
          const Index oc_end = std::min(region.channel_end, (group + 1) * cog);
          if (oc_begin >= oc_end) continue;
          const Scalar* y_block = y + panel.sample_begin * y_stride +
                                  (oc_begin - region.channel_begin) * positions + panel.position_begin;
          if (side_by_side)  // the samples' columns side by side
            for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
              for (Index oc = 0; oc < oc_end - oc_begin; ++oc) {
                const Scalar* source = y_block + (s - panel.sample_begin) * y_stride + oc * positions;
                std::copy(source, source + piece, gathered + oc * n + (s - panel.sample_begin) * piece);
              }
          const ConstBlockMap<Scalar> y_group = side_by_side
              ? ConstBlockMap<Scalar>(gathered, oc_end - oc_begin, n, Eigen::OuterStride<>(n))
              : ConstBlockMap<Scalar>(y_block, oc_end - oc_begin, n, Eigen::OuterStride<>(positions));
          const Index r_begin = (std::max(c_begin, group * cig) - group * cig) * kn;
          const Index r_end = (std::min(c_end, (group + 1) * cig) - group * cig) * kn;
          for (Index r0 = r_begin; r0 < r_end; r0 += depth) {
            const Index r1 = std::min(r0 + depth, r_end), row0 = group * group_rows;
            BlockMap<Scalar> c(columns, r1 - r0, n, Eigen::OuterStride<>(n));
            const ConstBlockMap<Scalar> w_block(w + oc_begin * group_rows + r0, oc_end - oc_begin, r1 - r0,
                                                Eigen::OuterStride<>(group_rows));
            c.noalias() = w_block.transpose() * y_group;
            for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
              fold_block_add(g, columns + (s - panel.sample_begin) * piece, n, row0 + r0, row0 + r1, from,
                             to, x + s * x_stride, window);
          }
        }
      }
    }
  });
}

}  // namespace convmat::detail
