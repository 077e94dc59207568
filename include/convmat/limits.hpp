// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The memory guard: a dense matrix larger than max_dense_bytes() is refused
// with a spec_error before anything is allocated, so a typo in a layer's
// size is an error message and not a machine brought down by swapping.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "detail/checked.hpp"
#include "error.hpp"

namespace convmat {

/// Pass to set_max_dense_bytes() to switch the guard off.
inline constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

namespace detail {

/// Physical memory in bytes, or 0 where it cannot be found out.
inline std::size_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
#endif
  return 0;
}

/// The default guard: half of physical memory (8 GiB where unknown).
inline std::size_t default_max_dense_bytes() {
  const std::size_t physical = physical_memory_bytes();
  return physical ? physical / 2 : (std::size_t{8} << 30);
}

inline std::atomic<std::size_t>& max_dense_bytes_setting() {
  static std::atomic<std::size_t> setting{default_max_dense_bytes()};
  return setting;
}

}  // namespace detail

/// The largest dense matrix, in bytes, that convmat will allocate. Default:
/// half of the machine's physical memory.
inline std::size_t max_dense_bytes() { return detail::max_dense_bytes_setting().load(); }

/// Sets the guard for every thread; convmat::no_limit switches it off.
inline void set_max_dense_bytes(std::size_t bytes) { detail::max_dense_bytes_setting().store(bytes); }

namespace detail {

inline constexpr const char* dense_matrix_hint =
    "build it as conv_matrix_sparse, in row blocks (conv_matrix_rows), use make_operator, "
    "or raise the limit with set_max_dense_bytes()";

inline constexpr const char* batch_hint =
    "pass fewer samples at a time, or raise the limit with set_max_dense_bytes()";

/// Throws spec_error if a rows x cols dense matrix of `scalar_size`-byte
/// entries overflows Index, memory_limit_error if it exceeds
/// max_dense_bytes(); `hint` says what to do.
inline void check_dense_size(Index rows, Index cols, std::size_t scalar_size, const char* what,
                             const char* hint = dense_matrix_hint) {
  const Index entries = checked_mul(rows, cols, what);
  const auto limit = max_dense_bytes();
  const auto n = static_cast<std::size_t>(entries);
  if (n > std::numeric_limits<std::size_t>::max() / scalar_size || n * scalar_size > limit)
    fail_memory(what, " would be ", rows, " x ", cols, " = ", entries, " entries of ", scalar_size,
         " bytes, more than max_dense_bytes() = ", limit, "; ", hint);
}

}  // namespace detail
}  // namespace convmat
