// convmat's Python module: unfold, fold and the weight Jacobian, and the
// matrix-free operator behind convmat.operator's LinearOperator.
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "bindings.hpp"

namespace convmat::python {
namespace {

/// f(spec, x) with the convolution's spec and the array `x` viewed as a
/// flat vector of its own scalar type: the entry point of the functions
/// that take a sample rather than weights.
template <class F>
py::array with_sample(const LayerShape& shape, const py::array& x, const char* what, F&& f) {
  return visit_conv_spec(shape, what, [&](const auto& spec) {
    return visit_scalar(x.dtype(), [&](auto tag) -> py::array {
      return f(spec, flat_view<typename decltype(tag)::type>(x, "x"));
    });
  });
}

py::array unfold(const LayerShape& shape, const py::array& x) {
  return with_sample(shape, x, "unfold", [](const auto& spec, const auto& v) -> py::array {
    return to_numpy(without_gil([&] { return convmat::unfold(spec, v); }));
  });
}

py::array fold(const LayerShape& shape, const py::array& columns) {
  return visit_conv_spec(shape, "fold", [&](const auto& spec) {
    return visit_scalar(columns.dtype(), [&](auto tag) -> py::array {
      const auto c = row_major_view<typename decltype(tag)::type>(columns, "columns");
      return to_numpy(without_gil([&] { return convmat::fold(spec, c); }));
    });
  });
}

py::array weight_jacobian(const LayerShape& shape, const py::array& x) {
  return with_sample(shape, x, "weight_jacobian", [](const auto& spec, const auto& v) -> py::array {
    return to_numpy(without_gil([&] { return convmat::weight_jacobian(spec, v); }));
  });
}

/// A layer's matrix-free T (a ConvOperator of any rank and scalar) behind
/// one interface.
class Operator {
 public:
  virtual ~Operator() = default;
  virtual Index rows() const = 0;
  virtual Index cols() const = 0;
  virtual py::dtype dtype() const = 0;
  /// T x for x of cols() entries, or T X for X (cols() x batch, Fortran
  /// order: each sample contiguous), the GIL released.
  virtual py::array apply(const py::array& x) const = 0;
  virtual std::unique_ptr<Operator> transpose() const = 0;
  virtual std::unique_ptr<Operator> adjoint() const = 0;
};

template <class S, int Rank>
class LayerOperator final : public Operator {
 public:
  explicit LayerOperator(ConvOperator<S, Rank> op) : op_(std::move(op)) {}

  Index rows() const override { return op_.rows(); }
  Index cols() const override { return op_.cols(); }
  py::dtype dtype() const override { return py::dtype::of<S>(); }

  py::array apply(const py::array& x) const override {
    require_dtype<S>(x, "the operator's operand");
    const bool vector = x.ndim() == 1;
    const Index length = x.ndim() >= 1 ? static_cast<Index>(x.shape(0)) : 0;
    if ((x.ndim() != 1 && x.ndim() != 2) || length != op_.cols())
      throw py::value_error("convmat: the operator takes a vector of " + std::to_string(op_.cols()) +
                            " entries or a matrix of " + std::to_string(op_.cols()) + " rows, not an array of shape " +
                            py::str(x.attr("shape")).cast<std::string>());
    if (!(x.flags() & py::array::f_style))
      throw py::value_error("convmat: the operator's operand must be in Fortran order (numpy.asfortranarray)");
    const Index batch = vector ? 1 : static_cast<Index>(x.shape(1));
    const S* in = static_cast<const S*>(x.data());
    if (vector) return to_numpy(product<detail::Vector<S>>(in, batch));
    return to_numpy(product<detail::Matrix<S>>(in, batch));
  }

  std::unique_ptr<Operator> transpose() const override { return std::make_unique<LayerOperator>(op_.transpose()); }
  std::unique_ptr<Operator> adjoint() const override { return std::make_unique<LayerOperator>(op_.adjoint()); }

 private:
  template <class Result>
  Result product(const S* x, Index batch) const {
    Result y(op_.rows(), batch);
    without_gil([&] { op_.apply_batch(x, op_.cols(), y.data(), op_.rows(), batch); });
    return y;
  }

  ConvOperator<S, Rank> op_;
};

std::unique_ptr<Operator> make_layer_operator(const LayerShape& shape, const py::array& weight) {
  return with_layer(shape, weight, [](const auto& spec, const auto& w) -> std::unique_ptr<Operator> {
    using S = scalar_of<decltype(w)>;
    using Spec = std::decay_t<decltype(spec)>;
    return std::make_unique<LayerOperator<S, Spec::rank>>(without_gil([&] { return make_operator(spec, w); }));
  });
}

}  // namespace

void bind_products(py::module_& m) {
  const auto shape = py::arg("shape");
  m.def("unfold", &unfold, shape, py::arg("x"), "The unfold (im2col) matrix of one sample, F.unfold's layout.");
  m.def("fold", &fold, shape, py::arg("columns"), "The adjoint of unfold: an input_numel vector.");
  m.def("weight_jacobian", &weight_jacobian, shape, py::arg("x"),
        "J(x), output_numel x weight_numel, with vec(conv(x, w)) = J(x) vec(w).");
  py::class_<Operator>(m, "Operator", "A layer's matrix T, matrix-free (convmat::ConvOperator).")
      .def(py::init(&make_layer_operator), shape, py::arg("weight"))
      .def_property_readonly("rows", &Operator::rows)
      .def_property_readonly("cols", &Operator::cols)
      .def_property_readonly("dtype", &Operator::dtype)
      .def("apply", &Operator::apply, py::arg("x"), "T x, or T X for X in Fortran order (one column per sample).")
      .def("transpose", &Operator::transpose, "T^T as an operator.")
      .def("adjoint", &Operator::adjoint, "T^H as an operator (T^T for real weights).");
}

}  // namespace convmat::python
