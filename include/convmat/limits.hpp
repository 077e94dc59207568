// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The memory guard: whatever a spec sizes — a dense or sparse matrix, its
// row blocks, the buffers a build holds beside it — is counted in bytes
// before anything is allocated and refused with a memory_limit_error
// beyond max_dense_bytes(), so a typo in a layer's size is an error message
// and not a machine brought down by swapping. (The name is historical: the
// one limit covers every allocation, dense or not.)
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
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

/// The address-space limit of the process (ulimit -v), or 0 if there is none.
inline std::size_t address_space_limit_bytes() {
#if defined(RLIMIT_AS)
  struct rlimit limit {};
  if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
      limit.rlim_cur <= std::numeric_limits<std::size_t>::max())
    return static_cast<std::size_t>(limit.rlim_cur);
#endif
  return 0;
}

/// The default guard: half of physical memory (8 GiB where unknown), or
/// half of the address-space limit where that is smaller.
inline std::size_t default_max_dense_bytes() {
  const std::size_t physical = physical_memory_bytes(), address_space = address_space_limit_bytes();
  std::size_t bytes = physical ? physical / 2 : (std::size_t{8} << 30);
  if (address_space != 0 && address_space / 2 < bytes) bytes = address_space / 2;
  return bytes;
}

inline std::atomic<std::size_t>& max_dense_bytes_setting() {
  static std::atomic<std::size_t> setting{default_max_dense_bytes()};
  return setting;
}

}  // namespace detail

/// The most bytes convmat will allocate for anything a spec sizes: a dense
/// or sparse matrix, a row block, the buffers a build holds beside it.
/// Default: half of the machine's physical memory, or of the process's
/// address-space limit (ulimit -v) where that is smaller.
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

inline constexpr const char* sparse_matrix_hint =
    "build it in row blocks (conv_matrix_sparse_rows), use make_operator, or raise the limit with "
    "set_max_dense_bytes()";

/// What a build will hold at its peak, part by part ("N values of 8
/// bytes"), checked against max_dense_bytes() before anything is allocated.
/// Byte counts saturate at SIZE_MAX, which no limit but no_limit admits.
class Footprint {
 public:
  /// `what` is the result's name ("the sparse matrix"), rows x cols its shape.
  Footprint(const char* what, Index rows, Index cols) : what_(what), rows_(rows), cols_(cols) {}

  /// Adds `count` items of `bytes_each` bytes, named `part` in the message.
  Footprint& add(Index count, std::size_t bytes_each, const char* part) {
    CONVMAT_ASSERT(size_ < parts_.size(), "a footprint has at most as many parts as it has room for");
    CONVMAT_ASSERT(count >= 0, "a footprint's counts are not negative");
    parts_[size_++] = {count, bytes_each, part};
    bytes_ = saturating_add(bytes_, saturating_mul(static_cast<std::size_t>(count), bytes_each));
    return *this;
  }

  std::size_t bytes() const { return bytes_; }

  /// memory_limit_error, listing every part and `hint`, if the parts add up
  /// to more than max_dense_bytes().
  void check(const char* hint) const {
    const std::size_t limit = max_dense_bytes();
    if (bytes_ <= limit) return;
    std::string parts;
    for (std::size_t i = 0; i < size_; ++i)
      parts += message(i ? " + " : "", parts_[i].count, ' ', parts_[i].part, " of ", parts_[i].bytes_each,
                       parts_[i].bytes_each == 1 ? " byte" : " bytes");
    const std::string total = bytes_ == std::numeric_limits<std::size_t>::max()
                                  ? std::string("more than 2^64 bytes")
                                  : message(bytes_, " bytes");
    fail_memory(what_, " (", rows_, " x ", cols_, ") would take ", total, " (", parts,
                "), more than max_dense_bytes() = ", limit, "; ", hint);
  }

 private:
  struct Part {
    Index count = 0;
    std::size_t bytes_each = 0;
    const char* part = "";
  };
  static std::size_t saturating_mul(std::size_t a, std::size_t b) {
    return a != 0 && b > std::numeric_limits<std::size_t>::max() / a ? std::numeric_limits<std::size_t>::max()
                                                                      : a * b;
  }
  static std::size_t saturating_add(std::size_t a, std::size_t b) {
    return b > std::numeric_limits<std::size_t>::max() - a ? std::numeric_limits<std::size_t>::max() : a + b;
  }

  const char* what_;
  Index rows_, cols_;
  std::array<Part, 8> parts_{};
  std::size_t size_ = 0, bytes_ = 0;
};

}  // namespace detail
}  // namespace convmat
