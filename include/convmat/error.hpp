// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The one exception type, and the helpers that write every value involved
// into its message.
#pragma once

#include <array>
#include <cstddef>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "config.hpp"

namespace convmat {

/// Thrown when a spec or an argument cannot describe a real layer: a size
/// that is not positive, channels that groups do not divide, a kernel that
/// does not fit, weights of the wrong length, a matrix too large to index.
/// The message names the offending field and every value involved.
class spec_error : public std::invalid_argument {
 public:
  explicit spec_error(const std::string& message) : std::invalid_argument(message) {}
};

/// Thrown by the memory guard: what a spec asks to allocate would exceed
/// max_dense_bytes(). A spec_error, so `catch (const spec_error&)` sees it
/// too; its own type lets a caller tell "too large" from "not a layer"
/// (the Python module raises MemoryError for it, ValueError for the rest).
class memory_limit_error : public spec_error {
 public:
  explicit memory_limit_error(const std::string& message) : spec_error(message) {}
};

/// Thrown when an iterative method did not reach the tolerance asked of it
/// within its budget of products, where the caller asked for the result
/// alone (singular_values(spec, weight, k)); the message gives the
/// tolerance, the residual reached and the products spent. Not a
/// spec_error: the layer is fine, the budget was not.
class convergence_error : public std::runtime_error {
 public:
  explicit convergence_error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

template <class T>
void write_value(std::ostream& os, const T& value) {
  os << value;
}

template <class T, std::size_t N>
void write_value(std::ostream& os, const std::array<T, N>& values) {
  os << '(';
  for (std::size_t i = 0; i < N; ++i) os << (i ? ", " : "") << values[i];
  os << ')';
}

/// Joins its arguments into one string, printing std::array as "(a, b, c)".
template <class... Parts>
std::string message(const Parts&... parts) {
  std::ostringstream os;
  (write_value(os, parts), ...);
  return os.str();
}

/// Throws spec_error with "convmat: " and the joined parts.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  CONVMAT_THROW(message("convmat: ", parts...));
  std::abort();  // reached only if a user-defined CONVMAT_THROW returns
}

/// Throws convergence_error with "convmat: " and the joined parts.
template <class... Parts>
[[noreturn]] void fail_convergence(const Parts&... parts) {
  CONVMAT_THROW_CONVERGENCE(message("convmat: ", parts...));
  std::abort();  // reached only if a user-defined CONVMAT_THROW returns
}

/// Throws memory_limit_error with "convmat: " and the joined parts: the
/// memory guard's refusal.
template <class... Parts>
[[noreturn]] void fail_memory(const Parts&... parts) {
  CONVMAT_THROW_MEMORY(message("convmat: ", parts...));
  std::abort();  // reached only if a user-defined CONVMAT_THROW returns
}

}  // namespace detail
}  // namespace convmat
