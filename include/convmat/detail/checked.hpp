// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Size arithmetic that cannot overflow silently: every product of sizes
// that ends up as an allocation or an index goes through these.
#pragma once

#include <Eigen/Core>
#include <limits>

#include "../error.hpp"

namespace convmat::detail {

using Index = Eigen::Index;

/// a * b for non-negative a and b, or fail naming `what` and both values.
inline Index checked_mul(Index a, Index b, const char* what) {
  if (a != 0 && b > std::numeric_limits<Index>::max() / a)
    fail(what, " overflows Index: ", a, " * ", b, " > ", std::numeric_limits<Index>::max());
  return a * b;
}

/// a + b for non-negative a and b, or fail naming `what`.
inline Index checked_add(Index a, Index b, const char* what) {
  if (b > std::numeric_limits<Index>::max() - a)
    fail(what, " overflows Index: ", a, " + ", b, " > ", std::numeric_limits<Index>::max());
  return a + b;
}

/// The product of a range of sizes, checked.
template <class Range>
Index checked_product(const Range& sizes, const char* what, Index start = 1) {
  Index p = start;
  for (Index s : sizes) p = checked_mul(p, s, what);
  return p;
}

/// Floor division for any signs (C++ `/` truncates towards zero).
constexpr Index floor_div(Index a, Index b) {
  const Index q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/// a mod b in [0, b) for b > 0.
constexpr Index positive_mod(Index a, Index b) {
  const Index r = a % b;
  return r < 0 ? r + b : r;
}

}  // namespace convmat::detail
