// convmat's Python module: the spectral norm and its certified bracket
// (singular_values.cpp has the singular values: one unit each keeps the
// module's build in parallel).
#include <cstdint>

#include "bindings.hpp"

namespace convmat::python {
namespace {

py::tuple spectral_norm(const LayerShape& shape, const py::array& weight, double tolerance, Index max_iterations,
                        std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) {
    const auto options = spectral_options(tolerance, max_iterations, seed);
    const auto norm = without_gil([&] { return convmat::spectral_norm(spec, w, options); });
    return py::make_tuple(static_cast<double>(norm.value), norm.converged, norm.iterations,
                          static_cast<double>(norm.residual));
  });
}

py::tuple spectral_norm_bound(const LayerShape& shape, const py::array& weight, double tolerance,
                              Index max_iterations, std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) {
    const auto options = spectral_options(tolerance, max_iterations, seed);
    const auto bound = without_gil([&] { return convmat::spectral_norm_bound(spec, w, options); });
    return py::make_tuple(static_cast<double>(bound.lower), static_cast<double>(bound.upper), bound.converged,
                          bound.iterations);
  });
}

}  // namespace

void bind_spectra(py::module_& m) {
  m.def("spectral_norm", &spectral_norm, py::arg("shape"), py::arg("weight"), py::arg("tolerance"),
        py::arg("max_iterations"), py::arg("seed"),
        "The largest singular value: (value, converged, iterations, residual).");
  m.def("spectral_norm_bound", &spectral_norm_bound, py::arg("shape"), py::arg("weight"), py::arg("tolerance"),
        py::arg("max_iterations"), py::arg("seed"), "lower <= ||T|| <= upper: (lower, upper, converged, iterations).");
}

}  // namespace convmat::python
