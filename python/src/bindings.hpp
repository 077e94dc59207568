// convmat's Python module: what each translation unit binds, and the one
// entry point every function goes through, from (shape, weights) to the
// library's spec and a view of the weights.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "arrays.hpp"
#include "layer.hpp"

namespace convmat::python {

namespace py = pybind11;

/// f(spec, w) with the spec the shape describes and the weights viewed as
/// a flat vector of their own scalar type (float32, float64, complex64,
/// complex128).
template <class F>
decltype(auto) with_layer(const LayerShape& shape, const py::array& weight, F&& f) {
  return visit_spec(shape, [&](const auto& spec) {
    return visit_scalar(weight.dtype(), [&](auto tag) {
      using S = typename decltype(tag)::type;
      return f(spec, flat_view<S>(weight, "weight"));
    });
  });
}

/// The scalar type of a view made by flat_view.
template <class View>
using scalar_of = typename std::decay_t<View>::Scalar;

void bind_matrices(py::module_& m);  // matrices.cpp: dense, CSR, row blocks, bias, affine, sizes
void bind_products(py::module_& m);  // products.cpp: unfold, fold, weight Jacobian, the operator
void bind_spectra(py::module_& m);   // spectra.cpp: spectral norm, its certified bracket
void bind_singular_values(py::module_& m);  // singular_values.cpp

/// The Lanczos options the Python functions pass on.
inline SpectralNormOptions spectral_options(double tolerance, Index max_iterations, std::uint64_t seed) {
  SpectralNormOptions options;
  options.tolerance = tolerance;
  options.max_iterations = max_iterations;
  options.seed = seed;
  return options;
}

}  // namespace convmat::python
