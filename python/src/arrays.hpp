// convmat's Python module: NumPy arrays in and out without copies. Inputs
// are viewed in place (Eigen::Map over the array's buffer); results move
// onto the heap and become arrays whose base is a capsule that frees them,
// so NumPy owns the library's own buffer (pybind11's pattern for "an array
// that owns C++ memory").
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <convmat/convmat.hpp>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>

namespace convmat::python {

namespace py = pybind11;

inline std::string dtype_name(const py::dtype& dtype) {
  return py::str(static_cast<const py::handle&>(dtype)).cast<std::string>();
}

/// Throws TypeError unless `a` holds S.
template <class S>
void require_dtype(const py::array& a, const char* what) {
  if (!a.dtype().equal(py::dtype::of<S>()))
    throw py::type_error(std::string("convmat: ") + what + " has dtype " + dtype_name(a.dtype()) + ", expected " +
                         dtype_name(py::dtype::of<S>()));
}

/// The elements of a C-contiguous array of S, in C order, as a flat vector
/// over its buffer (no copy); TypeError or ValueError for anything else.
template <class S>
Eigen::Map<const detail::Vector<S>> flat_view(const py::array& a, const char* what) {
  require_dtype<S>(a, what);
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string("convmat: ") + what + " must be C-contiguous (numpy.ascontiguousarray)");
  return {static_cast<const S*>(a.data()), static_cast<Index>(a.size())};
}

/// A 2-D C-contiguous array of S as a row-major matrix over its buffer.
template <class S>
Eigen::Map<const detail::RowMajorMatrix<S>> row_major_view(const py::array& a, const char* what) {
  if (a.ndim() != 2) throw py::value_error(std::string("convmat: ") + what + " must be a 2-D array");
  const auto flat = flat_view<S>(a, what);
  return {flat.data(), static_cast<Index>(a.shape(0)), static_cast<Index>(a.shape(1))};
}

/// A capsule that deletes `object` when the last array using it goes.
template <class Object>
py::capsule owner_of(std::unique_ptr<Object> object) {
  py::capsule capsule(object.get(), [](void* p) { delete static_cast<Object*>(p); });
  object.release();  // the capsule owns it now
  return capsule;
}

/// A row-major matrix as a C-order NumPy array over the same buffer.
template <class S>
py::array_t<S> to_numpy(detail::RowMajorMatrix<S>&& m) {
  auto heap = std::make_unique<detail::RowMajorMatrix<S>>(std::move(m));
  const Index rows = heap->rows(), cols = heap->cols(), size = sizeof(S);
  S* data = heap->data();
  return py::array_t<S>({rows, cols}, {cols * size, size}, data, owner_of(std::move(heap)));
}

/// A column-major matrix as a Fortran-order NumPy array over the same buffer.
template <class S>
py::array_t<S> to_numpy(detail::Matrix<S>&& m) {
  auto heap = std::make_unique<detail::Matrix<S>>(std::move(m));
  const Index rows = heap->rows(), cols = heap->cols(), size = sizeof(S);
  S* data = heap->data();
  return py::array_t<S>({rows, cols}, {size, rows * size}, data, owner_of(std::move(heap)));
}

/// A vector as a 1-D NumPy array over the same buffer.
template <class S>
py::array_t<S> to_numpy(detail::Vector<S>&& v) {
  auto heap = std::make_unique<detail::Vector<S>>(std::move(v));
  const Index size = heap->size();
  S* data = heap->data();
  return py::array_t<S>({size}, {Index(sizeof(S))}, data, owner_of(std::move(heap)));
}

/// A compressed-row matrix as (data, indices, indptr, shape): the three
/// arrays scipy.sparse.csr_matrix takes, over the matrix's own buffers
/// (one capsule keeps them alive).
template <class S, class StorageIndex>
py::tuple to_csr_arrays(SparseMatrix<S, StorageIndex>&& t) {
  t.makeCompressed();
  auto heap = std::make_unique<SparseMatrix<S, StorageIndex>>();
  heap->swap(t);  // Eigen 3.4's SparseMatrix has no move constructor
  const Index rows = heap->rows(), cols = heap->cols(), nonzeros = heap->nonZeros();
  S* values = heap->valuePtr();
  StorageIndex* inner = heap->innerIndexPtr();
  StorageIndex* outer = heap->outerIndexPtr();
  const py::capsule owner = owner_of(std::move(heap));
  return py::make_tuple(py::array_t<S>({nonzeros}, {Index(sizeof(S))}, values, owner),
                        py::array_t<StorageIndex>({nonzeros}, {Index(sizeof(StorageIndex))}, inner, owner),
                        py::array_t<StorageIndex>({rows + 1}, {Index(sizeof(StorageIndex))}, outer, owner),
                        py::make_tuple(rows, cols));
}

/// Whether a CSR matrix of these sizes takes 32-bit indices. SciPy keeps
/// int32 index arrays as they are and narrows int64 ones whose contents
/// fit int32 (a copy), so this is exactly the rule by which SciPy picks
/// the index type, and a matrix built by it is never copied.
inline bool int32_indices(Index rows, Index cols, Index nonzeros) {
  constexpr Index most = std::numeric_limits<std::int32_t>::max();
  return rows <= most && cols <= most && nonzeros <= most;
}

/// f() with the GIL released: for library work that touches no Python object.
template <class F>
auto without_gil(F&& f) {
  py::gil_scoped_release release;
  return f();
}

}  // namespace convmat::python
