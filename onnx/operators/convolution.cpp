// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The layers with weights: Conv, ConvTranspose, Gemm, MatMul. Each is one
// affine map, built by convmat (conv_matrix_sparse, conv_transpose_matrix_sparse)
// or from the weight matrix, and composed onto its input.
#include "../lowering.hpp"

namespace convmat::mlp {
namespace {

/// A convolution weight's rank and kernel, checked against the input.
std::vector<Index> kernel_of(const Node& n, const Tensor& w, const Value& v, int rank) {
  if (static_cast<int>(w.dims.size()) != rank + 2)
    n.fail("weight has shape " + to_string(w.dims) + ", but the input (N, " + to_string(v.shape).substr(1) +
           " needs a weight of rank " + std::to_string(rank + 2));
  const std::vector<Index> kernel(w.dims.begin() + 2, w.dims.end());
  if (const auto given = n.integers("kernel_shape"); given && *given != kernel)
    n.fail_attribute("kernel_shape", to_string(*given) + " disagrees with the weight's shape " + to_string(w.dims));
  return kernel;
}

/// The bias input (2) of a convolution, or zeros.
Eigen::VectorXd conv_bias(Lowering& l, const Node& n, Index channels) {
  const Tensor* b = l.optional_constant(n, 2);
  if (!b) return Eigen::VectorXd::Zero(channels);
  if (b->numel() != channels)
    n.fail("bias has " + std::to_string(b->numel()) + " values, but the layer has " + std::to_string(channels) +
           " output channels");
  return as_vector(*b);
}

void lower_conv(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const Tensor& w = l.constant(n, 1);
  const int rank = spatial_rank(n, v);
  const auto kernel = kernel_of(n, w, v, rank);
  by_rank(n, rank, [&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    const Window window = read_window(n, Rank, kernel);
    ConvSpec<Rank> spec;
    spec.in_channels = v.shape[0];
    spec.out_channels = w.dims[0];
    spec.groups = n.integer("group", 1);
    if (spec.groups <= 0 || spec.in_channels % spec.groups != 0 || w.dims[1] != spec.in_channels / spec.groups)
      n.fail("weight has shape " + to_string(w.dims) + " and group=" + std::to_string(spec.groups) +
             ", but the input has " + std::to_string(spec.in_channels) + " channels (weight dimension 1 times group)");
    spec.input_size = to_array<Rank>(v.shape, 1);
    spec.kernel_size = to_array<Rank>(window.kernel);
    spec.stride = to_array<Rank>(window.strides);
    spec.dilation = to_array<Rank>(window.dilations);
    if (window.same())
      spec.set_padding_same(window.odd());
    else
      spec.set_padding(to_array<Rank>(window.pad_begin), to_array<Rank>(window.pad_end));
    require_memory(spec, "the convolution's matrix");
    Affine layer = affine_map(Matrix(conv_matrix_sparse(spec, as_vector(w))),
                              bias_vector(spec, conv_bias(l, n, spec.out_channels)));
    l.set(n, 0, Lowering::then(v, std::move(layer), to_shape<Rank>(spec.out_channels, spec.output_size())));
  });
}

void lower_conv_transpose(Lowering& l, const Node& n) {
  const Value& v = l.value(n, 0);
  const Tensor& w = l.constant(n, 1);
  const int rank = spatial_rank(n, v);
  const auto kernel = kernel_of(n, w, v, rank);
  by_rank(n, rank, [&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    const Window window = read_window(n, Rank, kernel);
    ConvTransposeSpec<Rank> spec;
    spec.in_channels = v.shape[0];
    spec.groups = n.integer("group", 1);
    if (spec.groups <= 0 || w.dims[0] != spec.in_channels)
      n.fail("weight has shape " + to_string(w.dims) + ", but the input has " + std::to_string(spec.in_channels) +
             " channels (a ConvTranspose weight is (in_channels, out_channels / group, kernel...))");
    spec.out_channels = detail::checked_mul(w.dims[1], spec.groups, "out_channels");
    spec.input_size = to_array<Rank>(v.shape, 1);
    spec.kernel_size = to_array<Rank>(window.kernel);
    spec.stride = to_array<Rank>(window.strides);
    spec.dilation = to_array<Rank>(window.dilations);
    const auto output_padding = n.integers("output_padding", std::vector<Index>(Rank, 0));
    if (output_padding.size() != static_cast<std::size_t>(Rank))
      n.fail_attribute("output_padding", "has " + std::to_string(output_padding.size()) + " values, but the input has " +
                                             std::to_string(Rank) + " spatial dimensions");
    spec.output_padding = to_array<Rank>(output_padding);

    // ONNX's output_shape (spatial, or with N and C first) sets the padding;
    // so does auto_pad SAME_* (output input * stride); else pads.
    std::array<Index, Rank> extra{};  // output positions past what the layer computes: bias only
    if (auto shape = n.integers("output_shape")) {
      if (shape->size() == static_cast<std::size_t>(Rank) + 2) shape->erase(shape->begin(), shape->begin() + 2);
      if (shape->size() != static_cast<std::size_t>(Rank))
        n.fail_attribute("output_shape", to_string(*shape) + " does not have " + std::to_string(Rank) + " spatial sizes");
      auto wanted = to_array<Rank>(*shape);
      auto unpadded = spec;
      unpadded.padding = detail::filled<Rank>(0);
      const auto full = unpadded.output_size();
      for (int d = 0; d < Rank; ++d)
        if (wanted[d] > full[d]) {
          // The reference implementation and ONNX Runtime agree for NOTSET:
          // no padding, the extra elements at the end. For SAME_* they differ.
          if (window.same())
            n.fail_attribute("output_shape", to_string(*shape) + " is larger than the layer's unpadded output " +
                                                 to_string(full) + " under auto_pad=" + window.auto_pad +
                                                 ", where ONNX's reference and ONNX Runtime place the extra "
                                                 "elements differently");
          extra[d] = wanted[d] - full[d];
          wanted[d] = full[d];
        }
      spec.set_output_size(wanted, window.odd());
    } else if (window.same()) {
      spec.set_padding_same(window.odd());
    } else {
      spec.set_padding(to_array<Rank>(window.pad_begin), to_array<Rank>(window.pad_end));
    }
    require_memory(spec, "the transposed convolution's matrix");
    Affine layer = affine_map(Matrix(conv_transpose_matrix_sparse(spec, as_vector(w))),
                              bias_vector(spec, conv_bias(l, n, spec.out_channels)));
    auto size = spec.output_size();
    if (extra != detail::filled<Rank>(0)) {  // widen each channel with bias-only positions at the end
      Shape computed = to_shape<Rank>(spec.out_channels, size), grown = computed;
      for (int d = 0; d < Rank; ++d) grown[static_cast<std::size_t>(d) + 1] += extra[d], size[d] += extra[d];
      const auto in_strides = strides_of(computed);
      const Matrix place = selection(numel(grown), numel(computed), [&](Index i) {
        Index rest = i, source = 0;
        for (std::size_t d = grown.size(); d-- > 0;) {
          const Index coordinate = rest % grown[d];
          rest /= grown[d];
          if (coordinate >= computed[d]) return Index{-1};
          source += coordinate * in_strides[d];
        }
        return source;
      });
      const Eigen::VectorXd bias = conv_bias(l, n, spec.out_channels);
      layer = Affine{place * layer.matrix, Eigen::VectorXd(numel(grown))};
      const Index per_channel = numel(grown) / spec.out_channels;
      for (Index c = 0; c < spec.out_channels; ++c) layer.bias.segment(c * per_channel, per_channel).setConstant(bias(c));
    }
    l.set(n, 0, Lowering::then(v, std::move(layer), to_shape<Rank>(spec.out_channels, size)));
  });
}

/// The matrix of y = x B (one sample per row of x) for a constant B of
/// shape rows_b x cols_b = (k, m): alpha B^T, m x k, from B's row-major data
/// (or alpha B when `transposed`: B is then (m, k)). Built as compressed rows directly, its
/// non-zeros counted and guarded first: no dense temporary.
Matrix right_product(const Node& n, const Tensor& b, Index rows_b, Index cols_b, bool transposed, double alpha) {
  const Index m = transposed ? rows_b : cols_b, k = transposed ? cols_b : rows_b;
  const auto at = [&](Index r, Index c) {  // (alpha B^T)(r, c), r < m, c < k
    return alpha * b.value(static_cast<std::size_t>(transposed ? r * cols_b + c : c * cols_b + r));
  };
  Index nonzeros = 0;
  for (std::size_t i = 0, size = static_cast<std::size_t>(rows_b * cols_b); i < size; ++i)
    nonzeros += alpha * b.value(i) != 0.0;
  require_memory(nonzeros, m, "the matrix of B " + to_string(b.dims) + " (" + n.inputs[1] + ")");
  Matrix t(m, k);
  t.reserve(nonzeros);
  for (Index r = 0; r < m; ++r) {
    t.startVec(r);
    for (Index c = 0; c < k; ++c)
      if (const double v = at(r, c); v != 0.0) t.insertBack(r, c) = v;
  }
  t.finalize();
  return t;
}

void lower_gemm(Lowering& l, const Node& n) {
  if (l.is_value(n, 1)) n.fail("B ('" + n.inputs[1] + "') is computed from the input; convmat-onnx takes Gemm with constant weights");
  const Value& v = l.value(n, 0);
  if (v.shape.size() != 1) n.fail("A has shape (N, " + to_string(v.shape).substr(1) + ", not (N, features); Flatten it first");
  if (n.integer("transA", 0) != 0) n.fail_attribute("transA", "1 would transpose the batch into the features");
  const Tensor& b = l.stored_constant(n, 1);  // read once, as stored
  if (b.dims.size() != 2) n.fail("B has shape " + to_string(b.dims) + ", not a matrix");
  const bool trans_b = n.integer("transB", 0) != 0;
  const Index k = trans_b ? b.dims[1] : b.dims[0], m = trans_b ? b.dims[0] : b.dims[1];
  if (k != v.shape[0])
    n.fail("B has shape " + to_string(b.dims) + (trans_b ? " (transB=1)" : "") + ", but A has " +
           std::to_string(v.shape[0]) + " features");
  const double alpha = n.real("alpha", 1.0), beta = n.real("beta", 1.0);
  Eigen::VectorXd bias = Eigen::VectorXd::Zero(m);
  if (const Tensor* c = l.optional_constant(n, 2)) bias = beta * broadcast_constant(n, *c, {m});
  l.set(n, 0, Lowering::then(v, affine_map(right_product(n, b, b.dims[0], b.dims[1], trans_b, alpha), bias), {m}));
}

void lower_matmul(Lowering& l, const Node& n) {
  if (l.is_value(n, 1))
    n.fail("B ('" + n.inputs[1] + "') is computed from the input; convmat-onnx takes MatMul by a constant matrix "
           "on the right (a product of two data paths has no exact Gemm + Relu form)");
  const Value& v = l.value(n, 0);
  const Tensor& b = l.stored_constant(n, 1);  // read once, as stored
  if (b.dims.empty() || b.dims.size() > 2)
    n.fail("B has shape " + to_string(b.dims) + "; convmat-onnx takes a matrix or a vector");
  if (v.shape.empty()) n.fail("A has no feature dimension");
  const Index k = b.dims[0], m = b.dims.size() == 2 ? b.dims[1] : 1;
  if (v.shape.back() != k)
    n.fail("A has shape (N, " + to_string(v.shape).substr(1) + ", but B has shape " + to_string(b.dims) +
           ": the last dimension of A must be " + std::to_string(k));
  // (N, ..., k) x (k, m): the same product for every leading index.
  const Index leading = numel(v.shape) / k;
  Matrix per_row = right_product(n, b, k, m, false, 1.0);
  Matrix whole;
  if (leading == 1) {
    whole = std::move(per_row);
  } else {
    require_memory(leading * per_row.nonZeros(), leading * m, "the product repeated over " + std::to_string(leading) + " rows");
    whole.resize(leading * m, leading * k);
    whole.reserve(leading * per_row.nonZeros());
    for (Index i = 0; i < leading; ++i)
      for (Index r = 0; r < m; ++r) {
        whole.startVec(i * m + r);
        for (Matrix::InnerIterator it(per_row, r); it; ++it) whole.insertBack(i * m + r, i * k + it.col()) = it.value();
      }
    whole.finalize();
  }
  Shape shape(v.shape.begin(), v.shape.end() - 1);
  if (b.dims.size() == 2) shape.push_back(m);
  if (shape.empty()) n.fail("the product of a vector with a vector leaves no dimension beside the batch");
  l.set(n, 0, Lowering::then(v, linear_map(std::move(whole)), shape));
}

}  // namespace

const std::vector<OperatorEntry>& convolution_operators() {
  static const std::vector<OperatorEntry> entries = {
      {"Conv", lower_conv,
       "conv_matrix_sparse (1-3-D, groups, dilation, pads or auto_pad SAME_UPPER/SAME_LOWER/VALID) plus the bias"},
      {"ConvTranspose", lower_conv_transpose,
       "conv_transpose_matrix_sparse with pads, auto_pad or output_shape (ONNX's padding rule), output_padding"},
      {"Gemm", lower_gemm, "alpha * B^T (transB) as the matrix, beta * C as the bias; A is the data (N, features)"},
      {"MatMul", lower_matmul, "B^T applied to the last dimension of the data, B a constant matrix or vector"},
  };
  return entries;
}

}  // namespace convmat::mlp
