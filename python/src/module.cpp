// convmat's Python module, convmat._convmat: the library's functions on
// NumPy arrays. Thin by design: it translates arguments into the library's
// specs and views, calls the library with the GIL released, and hands the
// results to NumPy without copying them. The package convmat (python/convmat)
// reads torch layers and wraps the results for users.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <exception>
#include <string>

#include "bindings.hpp"

namespace convmat::python {
namespace {

/// What the memory guard's message adds for Python users.
constexpr const char* python_memory_hint =
    " — in Python: convmat.matrix(..., format=\"csr\") builds T sparse, convmat.row_blocks(...) in pieces, "
    "convmat.operator(...) not at all; convmat.set_max_dense_bytes(...) raises the limit";

/// The library's exceptions, translated once for every function: the
/// memory guard to MemoryError, any other bad spec or argument to
/// ValueError, each with the library's message.
void translate_library_errors() {
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const memory_limit_error& e) {
      PyErr_SetString(PyExc_MemoryError, (std::string(e.what()) + python_memory_hint).c_str());
    } catch (const spec_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

void bind_layer_shape(py::module_& m) {
  py::class_<LayerShape>(m, "LayerShape", "A layer's shape, every field as PyTorch names it.")
      .def(py::init([](bool transposed, Index in_channels, Index out_channels, Index groups,
                       std::vector<Index> input_size, std::vector<Index> kernel_size, std::vector<Index> stride,
                       std::vector<Index> dilation, std::string padding, std::vector<Index> padding_begin,
                       std::vector<Index> padding_end, std::vector<Index> output_padding, std::string padding_mode) {
             return LayerShape{transposed,         in_channels,          out_channels,           groups,
                               std::move(input_size), std::move(kernel_size), std::move(stride),
                               std::move(dilation),   std::move(padding),     std::move(padding_begin),
                               std::move(padding_end), std::move(output_padding), std::move(padding_mode)};
           }),
           py::kw_only(), py::arg("transposed"), py::arg("in_channels"), py::arg("out_channels"), py::arg("groups"),
           py::arg("input_size"), py::arg("kernel_size"), py::arg("stride"), py::arg("dilation"),
           py::arg("padding"), py::arg("padding_begin"), py::arg("padding_end"), py::arg("output_padding"),
           py::arg("padding_mode"))
      .def_readonly("transposed", &LayerShape::transposed)
      .def_readonly("in_channels", &LayerShape::in_channels)
      .def_readonly("out_channels", &LayerShape::out_channels)
      .def_readonly("groups", &LayerShape::groups)
      .def_readonly("input_size", &LayerShape::input_size)
      .def_readonly("kernel_size", &LayerShape::kernel_size)
      .def_readonly("stride", &LayerShape::stride)
      .def_readonly("dilation", &LayerShape::dilation)
      .def_readonly("padding", &LayerShape::padding)
      .def_readonly("padding_begin", &LayerShape::padding_begin)
      .def_readonly("padding_end", &LayerShape::padding_end)
      .def_readonly("output_padding", &LayerShape::output_padding)
      .def_readonly("padding_mode", &LayerShape::padding_mode);
}

void bind_memory_guard(py::module_& m) {
  m.def("max_dense_bytes", &convmat::max_dense_bytes, "The largest dense result, in bytes, convmat will allocate.");
  m.def("set_max_dense_bytes", &convmat::set_max_dense_bytes, py::arg("bytes"),
        "Sets the memory guard for every thread; no_limit switches it off.");
  m.attr("no_limit") = convmat::no_limit;
}

}  // namespace
}  // namespace convmat::python

PYBIND11_MODULE(_convmat, m) {
  using namespace convmat::python;
  m.doc() = "convmat's C++ library on NumPy arrays; use the package convmat, which wraps it.";
  m.attr("__version__") = CONVMAT_VERSION_STRING;
  translate_library_errors();
  bind_layer_shape(m);
  bind_memory_guard(m);
  bind_matrices(m);
  bind_products(m);
  bind_spectra(m);
  bind_singular_values(m);
}
