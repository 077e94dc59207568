// convmat's Python module: the singular values of T.
#include <cstdint>

#include "bindings.hpp"

namespace convmat::python {
namespace {

/// All singular values (k = 0), or the k largest (by the FFT when T is
/// block-circulant, else by Lanczos on the operator).
py::array singular_values(const LayerShape& shape, const py::array& weight, Index k, double tolerance,
                          Index max_iterations, std::uint64_t seed) {
  return with_layer(shape, weight, [&](const auto& spec, const auto& w) -> py::array {
    if (k == 0) return to_numpy(without_gil([&] { return convmat::singular_values(spec, w); }));
    const auto options = spectral_options(tolerance, max_iterations, seed);
    return to_numpy(without_gil([&] { return convmat::singular_values(spec, w, k, options); }));
  });
}

}  // namespace

void bind_singular_values(py::module_& m) {
  m.def("singular_values", &singular_values, py::arg("shape"), py::arg("weight"), py::arg("k"),
        py::arg("tolerance"), py::arg("max_iterations"), py::arg("seed"),
        "All singular values of T (k = 0) or the k largest, descending, in the weights' real dtype.");
}

}  // namespace convmat::python
