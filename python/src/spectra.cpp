// convmat's Python module: the spectral norm, its certified bracket and the
// singular values of T.
#include <cstdint>

#include "bindings.hpp"

namespace convmat::python {
namespace {

SpectralNormOptions options_of(double tolerance, Index max_iterations, std::uint64_t seed) {
  SpectralNormOptions options;
  options.tolerance = tolerance;
  options.max_iterations = max_iterations;
  options.seed = seed;
  return options;
}

py::tuple spectral_norm(const LayerShape& shape, const py::array& weight, double tolerance, Index max_iterations,
                        std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) {
    const auto options = options_of(tolerance, max_iterations, seed);
    const auto norm = without_gil([&] { return convmat::spectral_norm(spec, w, options); });
    return py::make_tuple(static_cast<double>(norm.value), norm.converged, norm.iterations,
                          static_cast<double>(norm.residual));
  });
}

py::tuple spectral_norm_bound(const LayerShape& shape, const py::array& weight, double tolerance,
                              Index max_iterations, std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) {
    const auto options = options_of(tolerance, max_iterations, seed);
    const auto bound = without_gil([&] { return convmat::spectral_norm_bound(spec, w, options); });
    return py::make_tuple(static_cast<double>(bound.lower), static_cast<double>(bound.upper), bound.converged,
                          bound.iterations);
  });
}

/// All singular values (k = 0), or the k largest (by the FFT when T is
/// block-circulant, else by Lanczos on the operator).
py::array singular_values(const LayerShape& shape, const py::array& weight, Index k, double tolerance,
                          Index max_iterations, std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) -> py::array {
    if (k == 0) return to_numpy(without_gil([&] { return convmat::singular_values(spec, w); }));
    const auto options = options_of(tolerance, max_iterations, seed);
    return to_numpy(without_gil([&] { return convmat::singular_values(spec, w, k, options); }));
  });
}

}  // namespace

void bind_spectra(py::module_& m) {
  m.def("spectral_norm", &spectral_norm, py::arg("shape"), py::arg("weight"), py::arg("tolerance"),
        py::arg("max_iterations"), py::arg("seed"),
        "The largest singular value: (value, converged, iterations, residual).");
  m.def("spectral_norm_bound", &spectral_norm_bound, py::arg("shape"), py::arg("weight"), py::arg("tolerance"),
        py::arg("max_iterations"), py::arg("seed"), "lower <= ||T|| <= upper: (lower, upper, converged, iterations).");
  m.def("singular_values", &singular_values, py::arg("shape"), py::arg("weight"), py::arg("k"),
        py::arg("tolerance"), py::arg("max_iterations"), py::arg("seed"),
        "All singular values of T (k = 0) or the k largest, descending, in the weights' real dtype.");
}

}  // namespace convmat::python
