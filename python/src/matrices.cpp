// convmat's Python module: the matrix T in its forms (dense, CSR, row
// blocks), the bias, the affine form, and the sizes of each before building.
#include <pybind11/stl.h>

#include <cstdint>

#include "bindings.hpp"

namespace convmat::python {
namespace {

// The library's builders, under one name per form for both kinds of layer.
template <int Rank, class W>
auto dense_matrix(const ConvSpec<Rank>& spec, const W& w) {
  return conv_matrix(spec, w);
}
template <int Rank, class W>
auto dense_matrix(const ConvTransposeSpec<Rank>& spec, const W& w) {
  return conv_transpose_matrix(spec, w);
}
template <class StorageIndex, int Rank, class W>
auto sparse_matrix(const ConvSpec<Rank>& spec, const W& w) {
  return conv_matrix_sparse<StorageIndex>(spec, w);
}
template <class StorageIndex, int Rank, class W>
auto sparse_matrix(const ConvTransposeSpec<Rank>& spec, const W& w) {
  return conv_transpose_matrix_sparse<StorageIndex>(spec, w);
}

/// build(Tag<StorageIndex>) with 32-bit indices when the sizes allow (see
/// int32_indices), else 64-bit, the GIL released, as CSR arrays.
template <class Build>
py::tuple csr_arrays(Index rows, Index cols, Index nonzeros, const Build& build) {
  if (int32_indices(rows, cols, nonzeros))
    return to_csr_arrays(without_gil([&] { return build(Tag<std::int32_t>{}); }));
  return to_csr_arrays(without_gil([&] { return build(Tag<std::int64_t>{}); }));
}

py::array dense(const LayerShape& shape, const py::array& weight) {
  return with_layer(shape, weight, [](const auto& spec, const auto& w) -> py::array {
    return to_numpy(without_gil([&] { return dense_matrix(spec, w); }));
  });
}

py::tuple csr(const LayerShape& shape, const py::array& weight) {
  return with_layer(shape, weight, [](const auto& spec, const auto& w) {
    const auto build = [&](auto index) { return sparse_matrix<typename decltype(index)::type>(spec, w); };
    return csr_arrays(spec.output_numel(), spec.input_numel(), conv_matrix_nonzeros(spec), build);
  });
}

py::array dense_rows(const LayerShape& shape, const py::array& weight, Index begin, Index end) {
  return visit_conv_spec(shape, "row_blocks", [&](const auto& spec) {
    return visit_scalar(weight.dtype(), [&](auto tag) -> py::array {
      const auto w = flat_view<typename decltype(tag)::type>(weight, "weight");
      return to_numpy(without_gil([&] { return conv_matrix_rows(spec, w, begin, end); }));
    });
  });
}

py::tuple csr_rows(const LayerShape& shape, const py::array& weight, Index begin, Index end) {
  return visit_conv_spec(shape, "row_blocks", [&](const auto& spec) {
    return visit_scalar(weight.dtype(), [&](auto tag) {
      const auto w = flat_view<typename decltype(tag)::type>(weight, "weight");
      const auto build = [&](auto index) {
        return conv_matrix_sparse_rows<typename decltype(index)::type>(spec, w, begin, end);
      };
      return csr_arrays(end - begin, spec.input_numel(), conv_matrix_nonzeros(spec, begin, end), build);
    });
  });
}

py::array bias(const LayerShape& shape, const py::array& bias) {
  return visit_spec(shape, [&](const auto& spec) {
    return visit_scalar(bias.dtype(), [&](auto tag) -> py::array {
      const auto b = flat_view<typename decltype(tag)::type>(bias, "bias");
      return to_numpy(without_gil([&] { return bias_vector(spec, b); }));
    });
  });
}

py::array affine_dense(const LayerShape& shape, const py::array& weight, const py::array& bias) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) -> py::array {
    const auto b = flat_view<scalar_of<decltype(w)>>(bias, "bias");
    return to_numpy(without_gil([&] { return affine_matrix(spec, w, b); }));
  });
}

py::tuple affine_csr(const LayerShape& shape, const py::array& weight, const py::array& bias) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) {
    const auto b = flat_view<scalar_of<decltype(w)>>(bias, "bias");
    const auto build = [&](auto index) { return affine_matrix_sparse<typename decltype(index)::type>(spec, w, b); };
    const Index rows = spec.output_numel() + 1, cols = spec.input_numel() + 1;
    return csr_arrays(rows, cols, conv_matrix_nonzeros(spec) + rows, build);
  });
}

/// Shapes, the exact non-zero count and the bytes of each form, built from
/// the sizes alone: what info() reports.
py::dict sizes(const LayerShape& shape, const py::dtype& dtype) {
  return visit_spec(shape, [&](const auto& spec) {
    return visit_scalar(dtype, [&](auto tag) {
      using S = typename decltype(tag)::type;
      const Index nonzeros = conv_matrix_nonzeros(spec);
      const bool narrow = int32_indices(spec.output_numel(), spec.input_numel(), nonzeros);
      const MatrixSize size = narrow ? matrix_size<S, std::int32_t>(spec) : matrix_size<S, std::int64_t>(spec);
      const auto with_channels = [](Index channels, const auto& spatial) {
        std::vector<Index> full{channels};
        full.insert(full.end(), spatial.begin(), spatial.end());
        return py::tuple(py::cast(full));
      };
      py::dict d;
      d["rows"] = size.rows;
      d["cols"] = size.cols;
      d["nonzeros"] = size.nonzeros;
      d["dense_bytes"] = size.dense_bytes;
      d["csr_bytes"] = size.sparse_bytes;
      d["index_dtype"] = narrow ? "int32" : "int64";
      d["input_shape"] = with_channels(spec.in_channels, spec.input_size);
      d["output_shape"] = with_channels(spec.out_channels, spec.output_size());
      return d;
    });
  });
}

}  // namespace

void bind_matrices(py::module_& m) {
  const auto shape = py::arg("shape"), weight = py::arg("weight"), bias_ = py::arg("bias");
  m.def("dense", &dense, shape, weight, "T, dense and row-major (C order): output_numel x input_numel.");
  m.def("csr", &csr, shape, weight, "T in compressed rows: (data, indices, indptr, (rows, cols)).");
  m.def("dense_rows", &dense_rows, shape, weight, py::arg("begin"), py::arg("end"), "Rows [begin, end) of T, dense.");
  m.def("csr_rows", &csr_rows, shape, weight, py::arg("begin"), py::arg("end"),
        "Rows [begin, end) of T in compressed rows, as csr().");
  m.def("bias", &bias, shape, bias_, "The per-channel bias as an output_numel vector b: the layer is T x + b.");
  m.def("affine_dense", &affine_dense, shape, weight, bias_, "[T b; 0 1], dense and row-major.");
  m.def("affine_csr", &affine_csr, shape, weight, bias_, "[T b; 0 1] in compressed rows, as csr().");
  m.def("sizes", &sizes, shape, py::arg("dtype"),
        "Shapes, exact non-zeros and bytes of each form for weights of `dtype`, without building.");
}

}  // namespace convmat::python
