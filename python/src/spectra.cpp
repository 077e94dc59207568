// convmat's Python module: the spectral norm and the singular values of T.
#include <cstdint>

#include "bindings.hpp"

namespace convmat::python {
namespace {

py::tuple spectral_norm(const LayerShape& shape, const py::array& weight, double tolerance, Index max_iterations,
                        std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) {
    SpectralNormOptions options;
    options.tolerance = tolerance;
    options.max_iterations = max_iterations;
    options.seed = seed;
    const auto norm = without_gil([&] { return convmat::spectral_norm(spec, w, options); });
    return py::make_tuple(static_cast<double>(norm.value), norm.converged, norm.iterations);
  });
}

py::array singular_values(const LayerShape& shape, const py::array& weight) {
  return with_layer(shape, weight, [](const auto& spec, const auto& w) -> py::array {
    return to_numpy(without_gil([&] { return convmat::singular_values(spec, w); }));
  });
}

}  // namespace

void bind_spectra(py::module_& m) {
  m.def("spectral_norm", &spectral_norm, py::arg("shape"), py::arg("weight"), py::arg("tolerance"),
        py::arg("max_iterations"), py::arg("seed"), "The largest singular value: (value, converged, iterations).");
  m.def("singular_values", &singular_values, py::arg("shape"), py::arg("weight"),
        "All singular values of T, descending, in the weights' real dtype.");
}

}  // namespace convmat::python
