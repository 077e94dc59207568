// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Pooling. Average pooling is linear: convmat's avg_pool_matrix_sparse with
// ONNX's padding (any size, auto_pad), ceil_mode and count_include_pad.
// Max pooling is exact through ReLUs: max(a, b) = b + relu(a - b), a tree
// over each window (convmat's max_pool_windows), one ReLU layer per halving.
#include <algorithm>

#include "../lowering.hpp"

namespace convmat::mlp {

Value maximum(Lowering& lowering, Affine terms, int level, const std::vector<Index>& start, bool nonneg,
              Shape shape) {
  LayerStack& stack = lowering.stack();
  std::vector<Index> first(start.begin(), start.end());
  const auto groups = static_cast<Index>(first.size()) - 1;
  auto largest_group = [&] {
    Index most = 0;
    for (Index g = 0; g < groups; ++g) most = std::max(most, first[static_cast<std::size_t>(g) + 1] - first[static_cast<std::size_t>(g)]);
    return most;
  };
  while (largest_group() > 1) {
    // Terms 2i and 2i + 1 of a group become t[2i + 1] + relu(t[2i] - t[2i + 1]); an odd last term stays.
    std::vector<Eigen::Triplet<double>> difference, keep, add;
    std::vector<Index> next{0};
    Index pairs = 0, kept = 0;
    for (Index g = 0; g < groups; ++g) {
      const Index begin = first[static_cast<std::size_t>(g)], count = first[static_cast<std::size_t>(g) + 1] - begin;
      for (Index i = 0; i + 1 < count; i += 2, ++pairs, ++kept) {
        difference.emplace_back(static_cast<int>(pairs), static_cast<int>(begin + i), 1.0);
        difference.emplace_back(static_cast<int>(pairs), static_cast<int>(begin + i + 1), -1.0);
        keep.emplace_back(static_cast<int>(kept), static_cast<int>(begin + i + 1), 1.0);
        add.emplace_back(static_cast<int>(kept), static_cast<int>(pairs), 1.0);
      }
      if (count % 2 == 1) keep.emplace_back(static_cast<int>(kept++), static_cast<int>(begin + count - 1), 1.0);
      next.push_back(kept);
    }
    const Index rows = terms.matrix.rows();
    Matrix d(pairs, rows), k(kept, rows), a(kept, pairs);
    d.setFromTriplets(difference.begin(), difference.end());
    k.setFromTriplets(keep.begin(), keep.end());
    a.setFromTriplets(add.begin(), add.end());
    const Affine differences{d * terms.matrix, d * terms.bias};
    const Affine carried{k * terms.matrix, k * terms.bias};
    const Affine relus = stack.relu(level, widen(differences, stack.width(level)));
    const Affine lifted = stack.lift(widen(carried, stack.width(level)), level, nonneg);
    const Index width = stack.width(level + 1);
    terms.matrix = widen(lifted, width).matrix + Matrix(a * widen(relus, width).matrix);
    terms.bias = lifted.bias;
    first = std::move(next);
    ++level;
  }
  return Value{std::move(shape), level, std::move(terms), nonneg};
}

namespace {

void lower_average_pool(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  by_rank(n, spatial_rank(n, v), [&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    const Window window = read_window(n, Rank, {});
    for (auto d : window.dilations)
      if (d != 1) n.fail_attribute("dilations", to_string(window.dilations) + ": dilated average pooling is not supported");
    AvgPoolSpec<Rank> spec;
    spec.channels = v.shape[0];
    spec.input_size = to_array<Rank>(v.shape, 1);
    spec.kernel_size = to_array<Rank>(window.kernel);
    spec.stride = to_array<Rank>(window.strides);
    spec.ceil_mode = n.integer("ceil_mode", 0) != 0;
    spec.count_include_pad = n.integer("count_include_pad", 0) != 0;
    spec.pytorch_limits = false;  // ONNX takes any padding
    if (window.same())
      spec.set_padding_same(window.odd());
    else
      spec.set_padding(to_array<Rank>(window.pad_begin), to_array<Rank>(window.pad_end));
    require_memory(spec, "the pooling matrix");
    l.set(n, 0, Lowering::then(v, linear_map(Matrix(avg_pool_matrix_sparse<double>(spec))),
                               to_shape<Rank>(spec.channels, spec.output_size()), v.nonneg));
  });
}

/// (C, 1, ..., 1): what a global pooling of `v` gives.
Shape global_shape(const Value& v) {
  Shape shape(v.shape.size(), 1);
  shape[0] = v.shape[0];
  return shape;
}

void lower_global_average_pool(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (v.shape.size() < 2) n.fail("input has shape (N, " + to_string(v.shape).substr(1) + ", no spatial dimension");
  const Index channels = v.shape[0], spatial = numel(v.shape) / channels;
  Matrix mean(channels, numel(v.shape));
  mean.reserve(Eigen::VectorXi::Constant(channels, static_cast<int>(spatial)));
  for (Index c = 0; c < channels; ++c)
    for (Index p = 0; p < spatial; ++p) mean.insert(c, c * spatial + p) = 1.0 / static_cast<double>(spatial);
  mean.makeCompressed();
  l.set(n, 0, Lowering::then(v, linear_map(std::move(mean)), global_shape(v), v.nonneg));
}

void lower_max_pool(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (n.outputs.size() > 1 && !n.outputs[1].empty()) l.unavailable(n, 1, "MaxPool's Indices output is not a value of the network");
  by_rank(n, spatial_rank(n, v), [&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    const Window window = read_window(n, Rank, {});
    MaxPoolSpec<Rank> spec;
    spec.channels = v.shape[0];
    spec.input_size = to_array<Rank>(v.shape, 1);
    spec.kernel_size = to_array<Rank>(window.kernel);
    spec.stride = to_array<Rank>(window.strides);
    spec.dilation = to_array<Rank>(window.dilations);
    spec.ceil_mode = n.integer("ceil_mode", 0) != 0;
    spec.pytorch_limits = false;
    if (window.same())
      spec.set_padding_same(window.odd());
    else
      spec.set_padding(to_array<Rank>(window.pad_begin), to_array<Rank>(window.pad_end));
    // Every window's inputs as consecutive terms: the rows of the window matrix, entry by entry.
    require_memory(spec, "the pooling windows");
    const auto windows = max_pool_windows<double>(spec);
    const int* inner = windows.innerIndexPtr();
    const Matrix pick = selection(windows.nonZeros(), v.numel(), [inner](Index k) { return Index{inner[k]}; });
    const std::vector<Index> start(windows.outerIndexPtr(), windows.outerIndexPtr() + windows.rows() + 1);
    l.set(n, 0, maximum(l, compose_checked(linear_map(pick), l.at(v, v.level)), v.level, start, v.nonneg,
                        to_shape<Rank>(spec.channels, spec.output_size())));
  });
}

void lower_global_max_pool(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  if (v.shape.size() < 2) n.fail("input has shape (N, " + to_string(v.shape).substr(1) + ", no spatial dimension");
  const Index channels = v.shape[0], spatial = numel(v.shape) / channels;
  std::vector<Index> start(static_cast<std::size_t>(channels) + 1);
  for (Index c = 0; c <= channels; ++c) start[static_cast<std::size_t>(c)] = c * spatial;  // v is (c, spatial) in C order
  l.set(n, 0, maximum(l, l.at(v, v.level), v.level, start, v.nonneg, global_shape(v)));
}

}  // namespace

const std::vector<OperatorEntry>& pooling_operators() {
  static const std::vector<OperatorEntry> entries = {
      {"AveragePool", lower_average_pool,
       "avg_pool_matrix_sparse: any pads (ONNX's rule), auto_pad, ceil_mode, count_include_pad; 1-3-D"},
      {"GlobalAveragePool", lower_global_average_pool, "the mean of each channel, one row per channel"},
      {"MaxPool", lower_max_pool,
       "a tree of max(a, b) = b + relu(a - b) over each window (max_pool_windows: pads, auto_pad, dilations, "
       "ceil_mode), one ReLU layer per halving"},
      {"GlobalMaxPool", lower_global_max_pool, "the MaxPool tree over each whole channel"},
  };
  return entries;
}

}  // namespace convmat::mlp
