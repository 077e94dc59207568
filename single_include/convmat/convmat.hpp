// convmat 0.1.0 — the matrix of a convolution layer, in one header.
// SPDX-License-Identifier: MIT
//
// GENERATED FILE — DO NOT EDIT. Edit the headers under include/convmat/ and
// regenerate it from the repository's root with:
//   python3 tools/make_single_header.py
// It holds include/convmat/convmat.hpp with every convmat header inlined
// once, in dependency order; it needs only Eigen 3.4+ and C++17.
#pragma once

// ---- convmat/convmat.hpp -----------------------------------------------------
// The umbrella header: everything convmat offers.

// ---- convmat/config.hpp ------------------------------------------------------
// Version and the two macros through which convmat reports errors.

#define CONVMAT_VERSION_MAJOR 0
#define CONVMAT_VERSION_MINOR 1
#define CONVMAT_VERSION_PATCH 0
#define CONVMAT_VERSION_STRING "0.1.0"

// CONVMAT_THROW(message) reports a spec or argument that cannot describe a
// real layer. `message` is a std::string. By default it throws
// convmat::spec_error; without exceptions (-fno-exceptions) it prints the
// message to stderr and aborts. Define it before including convmat to route
// errors elsewhere; the replacement must not return.
//
// CONVMAT_THROW_MEMORY(message) reports a size the memory guard refuses
// (max_dense_bytes()). By default it throws convmat::memory_limit_error, a
// spec_error; where CONVMAT_THROW is user-defined it calls that instead.
#if !defined(CONVMAT_THROW_MEMORY) && defined(CONVMAT_THROW)
#define CONVMAT_THROW_MEMORY(message) CONVMAT_THROW(message)
#endif
#ifndef CONVMAT_THROW
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CONVMAT_THROW(message) throw ::convmat::spec_error(message)
#else
#include <cstdio>
#include <cstdlib>
#define CONVMAT_THROW(message)                                   \
  do {                                                           \
    std::fprintf(stderr, "%s\n", std::string(message).c_str()); \
    std::abort();                                                \
  } while (false)
#endif
#endif
#ifndef CONVMAT_THROW_MEMORY
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CONVMAT_THROW_MEMORY(message) throw ::convmat::memory_limit_error(message)
#else
#define CONVMAT_THROW_MEMORY(message) CONVMAT_THROW(message)
#endif
#endif

// CONVMAT_ASSERT(condition, message) checks an internal invariant that no
// input can break. It costs nothing unless CONVMAT_ENABLE_ASSERTS is defined.
#ifndef CONVMAT_ASSERT
#ifdef CONVMAT_ENABLE_ASSERTS
#define CONVMAT_ASSERT(condition, message)                                 \
  do {                                                                     \
    if (!(condition)) CONVMAT_THROW(std::string("convmat: internal: ") + (message)); \
  } while (false)
#else
#define CONVMAT_ASSERT(condition, message) static_cast<void>(0)
#endif
#endif

// ---- convmat/dense.hpp -------------------------------------------------------
// The dense matrix T of a layer, vec(conv(x, w)) = T vec(x), built from the
// shape and the weights alone: each row is zeroed and its non-zeros written
// from the geometry's taps. Also its row blocks, the transposed layer's
// matrix, the bias, the affine form and the weight Jacobian.

#include <Eigen/Core>
#include <algorithm>
#include <vector>

// ---- convmat/detail/arguments.hpp --------------------------------------------
// How public functions take Eigen arguments: any dense expression, viewed
// without a copy when it is already contiguous (a Map over a raw buffer, a
// column of a matrix), evaluated once otherwise; and checked for size.

#include <type_traits>

// ---- convmat/detail/checked.hpp ----------------------------------------------
// Size arithmetic that cannot overflow silently: every product of sizes
// that ends up as an allocation or an index goes through these.

#include <limits>

// ---- convmat/error.hpp -------------------------------------------------------
// The one exception type, and the helpers that write every value involved
// into its message.

#include <array>
#include <cstddef>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

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

/// Throws memory_limit_error with "convmat: " and the joined parts: the
/// memory guard's refusal.
template <class... Parts>
[[noreturn]] void fail_memory(const Parts&... parts) {
  CONVMAT_THROW_MEMORY(message("convmat: ", parts...));
  std::abort();  // reached only if a user-defined CONVMAT_THROW returns
}

}  // namespace detail
}  // namespace convmat

// ---- convmat/detail/checked.hpp (continued) ----------------------------------
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

// ---- convmat/detail/arguments.hpp (continued) --------------------------------
namespace convmat::detail {

template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A contiguous read-only view of a vector expression (copied only if needed).
template <class Scalar>
using VectorView = Eigen::Ref<const Vector<Scalar>>;
/// A column-major read-only view of a matrix expression, columns contiguous.
template <class Scalar>
using MatrixView = Eigen::Ref<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Flattened weights of the length the layer needs, or spec_error.
template <class Derived>
VectorView<typename Derived::Scalar> weight_view(const Eigen::MatrixBase<Derived>& weight,
                                                 Index expected, const char* layout) {
  if (weight.size() != expected)
    fail("weight has ", weight.size(), " elements (", weight.rows(), " x ", weight.cols(),
         "), but the layer needs ", expected, " laid out ", layout);
  if (weight.cols() != 1 && weight.rows() != 1)
    fail("weight must be a vector of the flattened weights, not a ", weight.rows(), " x ",
         weight.cols(), " matrix");
  if constexpr (Derived::ColsAtCompileTime == 1)
    return VectorView<typename Derived::Scalar>(weight.derived());
  else
    return VectorView<typename Derived::Scalar>(weight.derived().transpose());
}

/// A batch whose columns are samples of `expected` rows, or spec_error.
template <class Derived>
MatrixView<typename Derived::Scalar> batch_view(const Eigen::MatrixBase<Derived>& batch,
                                                Index expected, const char* what) {
  if (batch.rows() != expected)
    fail(what, " has ", batch.rows(), " rows (", batch.rows(), " x ", batch.cols(),
         "), but the layer needs ", expected, " (one column per sample)");
  return MatrixView<typename Derived::Scalar>(batch.derived());
}

template <class A, class B>
constexpr void require_same_scalar() {
  static_assert(std::is_same_v<typename A::Scalar, typename B::Scalar>,
                "convmat: weights and inputs must have the same Scalar type; cast one with .cast<T>()");
}

}  // namespace convmat::detail

// ---- convmat/detail/geometry.hpp ---------------------------------------------
// The one index machinery. Everything convmat computes — the dense and
// sparse matrices, unfold and fold, the direct and transposed convolutions,
// the operator — answers one question: which input position does output
// position o read through kernel tap k, if any? It is answered here, once,
// per spatial axis (AxisMap), and combined across axes (Geometry).

// ---- convmat/limits.hpp ------------------------------------------------------
// The memory guard: whatever a spec sizes — a dense or sparse matrix, its
// row blocks, the buffers a build holds beside it — is counted in bytes
// before anything is allocated and refused with a memory_limit_error
// beyond max_dense_bytes(), so a typo in a layer's size is an error message
// and not a machine brought down by swapping. (The name is historical: the
// one limit covers every allocation, dense or not.)

#include <atomic>
#include <cstdint>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#include <unistd.h>
#endif

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

// ---- convmat/spec.hpp --------------------------------------------------------
// The shape of a layer: ConvSpec (PyTorch's Conv{1,2,3}d and any higher
// rank) and ConvTransposeSpec (ConvTranspose{1,2,3}d). Plain aggregates
// whose defaults are PyTorch's; every entry point validates them.

#include <optional>
#include <ostream>
#include <string_view>

namespace convmat {

using Index = Eigen::Index;

/// How a convolution reads outside its input, as torch.nn.Conv*d's
/// `padding_mode`: zeros; reflect (edge not repeated: x2 x1 | x0 x1 x2);
/// replicate (edge repeated: x0 x0 | x0 x1); circular (wraps around).
enum class PaddingMode { zeros, reflect, replicate, circular };

/// PyTorch's spelling of a padding mode: "zeros", "reflect", ...
constexpr std::string_view to_string(PaddingMode mode) {
  switch (mode) {
    case PaddingMode::zeros: return "zeros";
    case PaddingMode::reflect: return "reflect";
    case PaddingMode::replicate: return "replicate";
    case PaddingMode::circular: return "circular";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, PaddingMode mode) {
  const auto name = to_string(mode);
  return name == "unknown" ? os << "PaddingMode(" << static_cast<int>(mode) << ')' : os << name;
}

/// The padding mode named by PyTorch's string, or spec_error.
inline PaddingMode padding_mode_from_string(std::string_view name) {
  for (auto mode : {PaddingMode::zeros, PaddingMode::reflect, PaddingMode::replicate,
                    PaddingMode::circular})
    if (to_string(mode) == name) return mode;
  detail::fail("padding_mode must be zeros, reflect, replicate or circular, not '",
               std::string(name), "'");
}

namespace detail {

template <int Rank>
constexpr std::array<Index, Rank> filled(Index value) {
  std::array<Index, Rank> a{};
  for (auto& x : a) x = value;
  return a;
}

template <int Rank>
void require_positive(const std::array<Index, Rank>& values, const char* field) {
  for (Index v : values)
    if (v <= 0) fail(field, " must be positive in every dimension: ", field, '=', values);
}

template <int Rank>
void require_non_negative(const std::array<Index, Rank>& values, const char* field) {
  for (Index v : values)
    if (v < 0) fail(field, " must not be negative: ", field, '=', values);
}

inline void require_channels(Index in_channels, Index out_channels, Index groups) {
  if (in_channels <= 0 || out_channels <= 0 || groups <= 0)
    fail("channels and groups must be positive: in_channels=", in_channels,
         ", out_channels=", out_channels, ", groups=", groups);
  if (in_channels % groups != 0 || out_channels % groups != 0)
    fail("channels must be divisible by groups: in_channels=", in_channels,
         ", out_channels=", out_channels, ", groups=", groups);
}

/// dilation * (kernel - 1) + 1: the extent one kernel window covers.
inline Index window_extent(Index kernel, Index dilation) {
  return checked_add(checked_mul(dilation, kernel - 1, "dilation * (kernel_size - 1)"), 1,
                     "dilation * (kernel_size - 1) + 1");
}

}  // namespace detail

/// The shape of a convolution layer of `Rank` spatial dimensions, with
/// PyTorch's fields and defaults. Input (in_channels, input_size...) maps to
/// output (out_channels, output_size()...); weights are laid out
/// (out_channels, in_channels / groups, kernel_size...).
///
///     convmat::Conv2dSpec spec;
///     spec.in_channels = 3; spec.out_channels = 4;
///     spec.input_size = {7, 9}; spec.kernel_size = {3, 3};
///     spec.padding = {1, 1};
template <int Rank>
struct ConvSpec {
  static_assert(Rank >= 1, "convmat: a convolution has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index in_channels = 1;
  Index out_channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> stride = detail::filled<Rank>(1);
  /// Padding on the low side of each dimension, and on the high side too
  /// unless padding_end is set (PyTorch's symmetric `padding`).
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Padding on the high side, when it differs from the low side.
  std::optional<std::array<Index, Rank>> padding_end;
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  Index groups = 1;
  PaddingMode padding_mode = PaddingMode::zeros;

  /// Padding before and after the input in each dimension.
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  ConvSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }

  /// PyTorch's padding='same': output size equals input size. The total
  /// dilation * (kernel - 1) is split with the extra element on the high
  /// side. PyTorch allows it only for stride 1; so does this.
  ConvSpec& set_padding_same() {
    for (int d = 0; d < Rank; ++d)
      if (stride[d] != 1) detail::fail("padding='same' needs stride 1: stride=", stride);
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    detail::require_positive<Rank>(dilation, "dilation");
    std::array<Index, Rank> begin{}, end{};
    for (int d = 0; d < Rank; ++d) {
      const Index total = detail::window_extent(kernel_size[d], dilation[d]) - 1;
      begin[d] = total / 2;
      end[d] = total - begin[d];
    }
    return set_padding(begin, end);
  }

  /// PyTorch's padding='valid': no padding.
  ConvSpec& set_padding_valid() {
    padding = detail::filled<Rank>(0);
    padding_end.reset();
    return *this;
  }

  /// 'full' convolution (MATLAB's conv2 'full', convmtx2): every position
  /// where the kernel overlaps the input, dilation * (kernel - 1) each side.
  ConvSpec& set_padding_full() {
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    detail::require_positive<Rank>(dilation, "dilation");
    for (int d = 0; d < Rank; ++d)
      padding[d] = detail::window_extent(kernel_size[d], dilation[d]) - 1;
    padding_end.reset();
    return *this;
  }

  /// Throws spec_error unless this describes a layer PyTorch would accept.
  void validate() const { (void)checked_output_size(); }

  /// floor((D + pad_begin + pad_end - dilation * (K - 1) - 1) / stride) + 1.
  std::array<Index, Rank> output_size() const { return checked_output_size(); }

  Index input_spatial() const { return detail::checked_product(checked_input_size(), "input size"); }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index kernel_numel() const { return detail::checked_product(checked_kernel_size(), "kernel size"); }
  Index input_numel() const { return detail::checked_mul(in_channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(out_channels, output_spatial(), "output_numel"); }
  /// out_channels * (in_channels / groups) * prod(kernel_size).
  Index weight_numel() const {
    validate();
    return detail::checked_mul(detail::checked_mul(out_channels, in_channels / groups, "weight_numel"),
                               kernel_numel(), "weight_numel");
  }

 private:
  const std::array<Index, Rank>& checked_input_size() const {
    detail::require_positive<Rank>(input_size, "input_size");
    return input_size;
  }
  const std::array<Index, Rank>& checked_kernel_size() const {
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    return kernel_size;
  }

  std::array<Index, Rank> checked_output_size() const {
    detail::require_channels(in_channels, out_channels, groups);
    checked_input_size();
    checked_kernel_size();
    detail::require_positive<Rank>(stride, "stride");
    detail::require_positive<Rank>(dilation, "dilation");
    const auto begin = pad_begin(), end = pad_end();
    detail::require_non_negative<Rank>(begin, padding_end ? "padding (begin)" : "padding");
    detail::require_non_negative<Rank>(end, "padding_end");
    check_padding_mode(begin, end);
    std::array<Index, Rank> out{};
    bool fits = true;
    for (int d = 0; d < Rank; ++d) {
      const Index padded = detail::checked_add(
          detail::checked_add(input_size[d], begin[d], "padded input size"), end[d], "padded input size");
      const Index extent = detail::window_extent(kernel_size[d], dilation[d]);
      out[d] = detail::floor_div(padded - extent, stride[d]) + 1;
      fits = fits && out[d] >= 1;
    }
    if (!fits) {
      if (padding_end)
        detail::fail("kernel does not fit: input_size=", input_size, ", kernel_size=", kernel_size,
                     ", dilation=", dilation, ", padding=", begin, ", padding_end=", end,
                     ", stride=", stride, " give output ", out);
      detail::fail("kernel does not fit: input_size=", input_size, ", kernel_size=", kernel_size,
                   ", dilation=", dilation, ", padding=", begin, ", stride=", stride,
                   " give output ", out);
    }
    return out;
  }

  void check_padding_mode(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) const {
    for (int d = 0; d < Rank; ++d) {
      const Index most = begin[d] > end[d] ? begin[d] : end[d];
      if (padding_mode == PaddingMode::reflect && most >= input_size[d])
        detail::fail("reflect padding must be smaller than the input in every dimension: padding=",
                     begin, ", padding_end=", end, ", input_size=", input_size);
      if (padding_mode == PaddingMode::circular && most > input_size[d])
        detail::fail("circular padding must not exceed the input in any dimension: padding=",
                     begin, ", padding_end=", end, ", input_size=", input_size);
      if (padding_mode != PaddingMode::zeros && padding_mode != PaddingMode::reflect &&
          padding_mode != PaddingMode::replicate && padding_mode != PaddingMode::circular)
        detail::fail("padding_mode is not a PaddingMode: ", padding_mode);
    }
  }
};

/// The shape of a transposed convolution (PyTorch's ConvTranspose{1,2,3}d):
/// the adjoint of the ConvSpec with the same stride, padding, dilation and
/// groups, taking output_size() back to input_size. Weights are laid out
/// (in_channels, out_channels / groups, kernel_size...). Padding is zeros.
template <int Rank>
struct ConvTransposeSpec {
  static_assert(Rank >= 1, "convmat: a convolution has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index in_channels = 1;
  Index out_channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> stride = detail::filled<Rank>(1);
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Extra size on the high side of the output; smaller than stride or dilation.
  std::array<Index, Rank> output_padding = detail::filled<Rank>(0);
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  Index groups = 1;

  void validate() const { (void)checked_output_size(); }

  /// (D - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1.
  std::array<Index, Rank> output_size() const { return checked_output_size(); }

  Index input_spatial() const {
    validate();
    return detail::checked_product(input_size, "input size");
  }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index kernel_numel() const {
    validate();
    return detail::checked_product(kernel_size, "kernel size");
  }
  Index input_numel() const { return detail::checked_mul(in_channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(out_channels, output_spatial(), "output_numel"); }
  /// in_channels * (out_channels / groups) * prod(kernel_size).
  Index weight_numel() const {
    validate();
    return detail::checked_mul(detail::checked_mul(in_channels, out_channels / groups, "weight_numel"),
                               kernel_numel(), "weight_numel");
  }

 private:
  std::array<Index, Rank> checked_output_size() const {
    detail::require_channels(in_channels, out_channels, groups);
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    detail::require_positive<Rank>(stride, "stride");
    detail::require_positive<Rank>(dilation, "dilation");
    detail::require_non_negative<Rank>(padding, "padding");
    detail::require_non_negative<Rank>(output_padding, "output_padding");
    std::array<Index, Rank> out{};
    bool positive = true;
    for (int d = 0; d < Rank; ++d) {
      if (output_padding[d] >= stride[d] && output_padding[d] >= dilation[d])
        detail::fail("output_padding must be smaller than either stride or dilation: output_padding=",
                     output_padding, ", stride=", stride, ", dilation=", dilation);
      const Index grown = detail::checked_mul(input_size[d] - 1, stride[d], "(input_size - 1) * stride");
      const Index extent = detail::window_extent(kernel_size[d], dilation[d]);
      out[d] = detail::checked_add(detail::checked_add(grown, extent, "output size"), output_padding[d],
                                   "output size") -
               detail::checked_mul(2, padding[d], "2 * padding");
      positive = positive && out[d] >= 1;
    }
    if (!positive)
      detail::fail("padding leaves no output: input_size=", input_size, ", kernel_size=", kernel_size,
                   ", stride=", stride, ", padding=", padding, ", dilation=", dilation,
                   ", output_padding=", output_padding, " give output ", out);
    return out;
  }
};

using Conv1dSpec = ConvSpec<1>;
using Conv2dSpec = ConvSpec<2>;
using Conv3dSpec = ConvSpec<3>;
using ConvTranspose1dSpec = ConvTransposeSpec<1>;
using ConvTranspose2dSpec = ConvTransposeSpec<2>;
using ConvTranspose3dSpec = ConvTransposeSpec<3>;

}  // namespace convmat

// ---- convmat/detail/geometry.hpp (continued) ---------------------------------
namespace convmat::detail {

/// The input coordinate that padded coordinate `p` reads in an axis of
/// `n` elements, or -1 for a padding zero. The spec has already checked
/// that the padding is within what the mode can take (reflect: < n,
/// circular: <= n), so one reflection or wrap suffices.
inline Index padded_source(Index p, Index n, PaddingMode mode) {
  if (0 <= p && p < n) return p;
  switch (mode) {
    case PaddingMode::zeros: return -1;
    case PaddingMode::reflect: return p < 0 ? -p : 2 * (n - 1) - p;
    case PaddingMode::replicate: return p < 0 ? 0 : n - 1;
    case PaddingMode::circular: return positive_mod(p, n);
  }
  return -1;
}

/// Outputs [begin, end) of one axis that read input coordinates first,
/// first + step, ... through one tap: the part of a row with no padding,
/// where copying is a strided (step 1: contiguous) read. Empty: begin == end.
struct AxisRun {
  Index begin = 0, end = 0, first = 0, step = 1;
};

/// One spatial axis of a layer: for output coordinate o and tap k, the
/// input coordinate o * stride + k * dilation - pad_begin reads, after the
/// padding mode, or -1.
class AxisMap {
 public:
  AxisMap() = default;
  AxisMap(Index input, Index output, Index kernel, Index stride, Index dilation, Index pad_begin,
          PaddingMode mode)
      : input_(input), output_(output), kernel_(kernel),
        source_(static_cast<std::size_t>(checked_mul(output, kernel, "output * kernel"))),
        by_tap_(source_.size()), interior_(static_cast<std::size_t>(kernel)) {
    for (Index o = 0; o < output; ++o)
      for (Index k = 0; k < kernel; ++k) {
        const Index p = o * stride + k * dilation - pad_begin;
        const Index s = padded_source(p, input, mode);
        source_[static_cast<std::size_t>(o * kernel + k)] = s;
        by_tap_[static_cast<std::size_t>(k * output + o)] = s;
        AxisRun& run = interior_[static_cast<std::size_t>(k)];
        if (0 <= p && p < input) {  // p grows with o, so these o are one run
          if (run.begin == run.end) run = {o, o, s, stride};
          run.end = o + 1;
        }
      }
  }

  Index input() const { return input_; }
  Index output() const { return output_; }
  Index kernel() const { return kernel_; }

  /// The input coordinate that output o reads through tap k, or -1.
  Index source(Index o, Index k) const { return source_[static_cast<std::size_t>(o * kernel_ + k)]; }
  /// source(o, 0 .. kernel - 1), contiguous.
  const Index* sources(Index o) const { return source_.data() + o * kernel_; }
  /// source(0 .. output - 1, k), contiguous.
  const Index* sources_of_tap(Index k) const { return by_tap_.data() + k * output_; }
  /// The outputs whose tap k reads inside the input (no padding), as one
  /// arithmetic run: there source(o, k) = first + (o - begin) * step.
  const AxisRun& interior(Index k) const { return interior_[static_cast<std::size_t>(k)]; }

  /// How many distinct input coordinates output o reads, in O(kernel) when
  /// its taps read increasing coordinates (no padding mode, or none that
  /// folds back), O(kernel log kernel) otherwise.
  Index distinct_sources(Index o) const {
    const Index* s = sources(o);
    Index inside = 0, last = -1;
    bool increasing = true;
    for (Index k = 0; k < kernel_; ++k)
      if (s[k] >= 0) {
        increasing = increasing && s[k] > last;
        last = s[k];
        ++inside;
      }
    if (increasing) return inside;
    // Reflect, replicate or circular padding came back to coordinates
    // already read: count the distinct ones of a sorted copy.
    std::array<Index, 64> small{};
    std::vector<Index> large;
    Index* seen = small.data();
    if (inside > static_cast<Index>(small.size())) {
      large.resize(static_cast<std::size_t>(inside));
      seen = large.data();
    }
    Index* end = std::copy_if(s, s + kernel_, seen, [](Index v) { return v >= 0; });
    std::sort(seen, end);
    return std::unique(seen, end) - seen;
  }

 private:
  Index input_ = 0, output_ = 0, kernel_ = 0;
  std::vector<Index> source_;  // [o][k]
  std::vector<Index> by_tap_;  // [k][o], the same table transposed
  std::vector<AxisRun> interior_;  // [k]
};

/// One kernel tap that an output position reads: the input's flat spatial
/// offset, and the tap's flat index in the kernel.
struct Tap {
  Index offset;
  Index tap;
};

/// A layer reduced to what every path needs: channels, groups, the spatial
/// extents and one AxisMap per axis. For a convolution it is the layer
/// itself; for a transposed convolution it is the convolution whose adjoint
/// the layer is (input and output swapped), so both share every builder.
template <int Rank>
struct Geometry {
  Index in_channels = 0, out_channels = 0, groups = 1;
  std::array<Index, Rank> input_size{}, output_size{}, kernel_size{};
  std::array<Index, Rank> input_strides{};  ///< C-order strides of the input's spatial axes
  std::array<AxisMap, Rank> axes;
  PaddingMode mode = PaddingMode::zeros;
  Index input_spatial = 0, output_spatial = 0, kernel_numel = 0;

  Index in_per_group() const { return in_channels / groups; }
  Index out_per_group() const { return out_channels / groups; }
  Index input_numel() const { return in_channels * input_spatial; }
  Index output_numel() const { return out_channels * output_spatial; }
  Index weight_numel() const { return out_channels * in_per_group() * kernel_numel; }
  /// The first input channel of the group that output channel `oc` belongs to.
  Index group_first_input(Index oc) const { return oc / out_per_group() * in_per_group(); }

  /// The multi-index of flat output position `out`.
  std::array<Index, Rank> output_coordinates(Index out) const {
    std::array<Index, Rank> o{};
    for (int d = Rank - 1; d >= 0; --d) {
      o[d] = out % output_size[d];
      out /= output_size[d];
    }
    return o;
  }

  /// The taps that flat output position `out` reads, into `taps`, sorted by
  /// input offset (taps that land on the same input stay adjacent, in tap
  /// order). Padding zeros are left out.
  void taps_at(Index out, std::vector<Tap>& taps) const {
    taps.clear();
    const auto o = output_coordinates(out);
    std::array<const Index*, Rank> sources{};
    for (int d = 0; d < Rank; ++d) sources[d] = axes[d].sources(o[d]);
    append_taps<0>(sources, 0, 0, taps);
    if (mode != PaddingMode::zeros)
      std::stable_sort(taps.begin(), taps.end(),
                       [](const Tap& a, const Tap& b) { return a.offset < b.offset; });
  }

  /// How many distinct inputs flat output position `out` reads per channel.
  Index distinct_taps_at(Index out) const {
    const auto o = output_coordinates(out);
    Index n = 1;
    for (int d = 0; d < Rank; ++d) n *= axes[d].distinct_sources(o[d]);
    return n;
  }

  /// Structural non-zeros of one output channel's rows, summed over all
  /// output positions, per input channel: the product over axes of each
  /// axis's distinct-source counts (distinct offsets are distinct tuples).
  Index distinct_taps_total() const {
    Index total = 1;
    for (int d = 0; d < Rank; ++d) {
      Index axis_total = 0;
      for (Index o = 0; o < axes[d].output(); ++o) axis_total += axes[d].distinct_sources(o);
      total = checked_mul(total, axis_total, "non-zero count");
    }
    return total;
  }

  /// distinct_taps_at(p) summed over the positions [p_begin, p_end), without
  /// listing a tap: each axis's counts once, then one product per position.
  Index distinct_taps_between(Index p_begin, Index p_end) const {
    if (p_begin >= p_end) return 0;
    if (p_begin == 0 && p_end == output_spatial) return distinct_taps_total();
    std::array<std::vector<Index>, Rank> counts;
    for (int d = 0; d < Rank; ++d) {
      counts[d].resize(static_cast<std::size_t>(axes[d].output()));
      for (Index o = 0; o < axes[d].output(); ++o) counts[d][static_cast<std::size_t>(o)] = axes[d].distinct_sources(o);
    }
    auto o = output_coordinates(p_begin);
    Index total = 0;
    for (Index p = p_begin; p < p_end; ++p) {
      Index n = 1;
      for (int d = 0; d < Rank; ++d) n *= counts[d][static_cast<std::size_t>(o[d])];  // <= kernel_numel
      total = checked_add(total, n, "non-zero count");
      for (int d = Rank - 1; d >= 0; --d) {  // next position
        if (++o[d] < output_size[d]) break;
        o[d] = 0;
      }
    }
    return total;
  }

  /// The structural non-zeros of rows [row_begin, row_end) of the matrix
  /// (row = out_channel * output_spatial + position), exactly, before
  /// anything is built: what conv_matrix_sparse_rows will store.
  Index nonzeros_between(Index row_begin, Index row_end) const {
    if (row_begin >= row_end) return 0;
    const Index oc_first = row_begin / output_spatial, oc_last = (row_end - 1) / output_spatial;
    const Index head_begin = row_begin % output_spatial, tail_end = (row_end - 1) % output_spatial + 1;
    Index per_input_channel = 0;
    if (oc_first == oc_last) {
      per_input_channel = distinct_taps_between(head_begin, tail_end);
    } else {
      const Index whole = checked_mul(oc_last - oc_first - 1, distinct_taps_total(), "non-zero count");
      per_input_channel = checked_add(checked_add(distinct_taps_between(head_begin, output_spatial),
                                                  distinct_taps_between(0, tail_end), "non-zero count"),
                                      whole, "non-zero count");
    }
    return checked_mul(per_input_channel, in_per_group(), "non-zero count");
  }

 private:
  template <int D>
  void append_taps(const std::array<const Index*, Rank>& sources, Index offset, Index tap,
                   std::vector<Tap>& taps) const {
    const Index kernel = kernel_size[D];
    for (Index k = 0; k < kernel; ++k) {
      const Index s = sources[D][k];
      if (s < 0) continue;
      const Index next_offset = offset + s * input_strides[D];
      const Index next_tap = tap * kernel + k;
      if constexpr (D + 1 == Rank)
        taps.push_back({next_offset, next_tap});
      else
        append_taps<D + 1>(sources, next_offset, next_tap, taps);
    }
  }
};

/// The taps of consecutive output positions [first, first + count), each
/// list computed once by Geometry::taps_at.
template <int Rank>
class TapLists {
 public:
  TapLists() = default;

  /// Recomputes the lists for positions [first, first + count).
  void assign(const Geometry<Rank>& g, Index first, Index count) {
    first_ = first;
    start_.assign(static_cast<std::size_t>(count) + 1, 0);
    taps_.clear();
    for (Index p = 0; p < count; ++p) {
      g.taps_at(first + p, scratch_);
      taps_.insert(taps_.end(), scratch_.begin(), scratch_.end());
      start_[static_cast<std::size_t>(p) + 1] = taps_.size();
    }
  }

  /// The taps of output position p (within the lists' range), as taps_at.
  const Tap* begin(Index p) const { return taps_.data() + start_[static_cast<std::size_t>(p - first_)]; }
  const Tap* end(Index p) const { return taps_.data() + start_[static_cast<std::size_t>(p - first_) + 1]; }

 private:
  Index first_ = 0;
  std::vector<std::size_t> start_;
  std::vector<Tap> taps_, scratch_;
};

/// How many output positions for_each_row_taps lists at a time: 256, or
/// fewer when the kernel is so large that their taps would pass 2^20
/// (16 MiB), down to one position, whose at most kernel_numel taps take 16
/// bytes each — a few times the weights the caller already holds, however
/// many positions the layer has (a replicate padding far wider than the
/// input makes every tap of a huge kernel a real one).
template <int Rank>
Index tap_block_positions(const Geometry<Rank>& g) {
  constexpr Index most_positions = 256, most_taps = Index(1) << 20;
  return std::clamp<Index>(most_taps / std::max<Index>(g.kernel_numel, 1), 1, most_positions);
}

/// Calls f(r, taps_begin, taps_end) once for every row r in [row_begin,
/// row_end) of the layer's matrix (r = out_channel * output_spatial + p)
/// with the taps of its position p, as Geometry::taps_at gives them. The
/// rows are visited a block of `block` positions at a time (0:
/// tap_block_positions), for every output channel in the range, so each
/// position's taps are computed once per block (not once per row) in
/// memory that stays small.
template <int Rank, class F>
void for_each_row_taps(const Geometry<Rank>& g, Index row_begin, Index row_end, F&& f, Index block = 0) {
  if (row_end <= row_begin) return;
  if (block <= 0) block = tap_block_positions(g);
  const Index spatial = g.output_spatial;
  const Index oc_first = row_begin / spatial, oc_last = (row_end - 1) / spatial;
  // Positions [p_begin, p_end) that the rows read: all, once they span two channels.
  const Index p_begin = oc_first == oc_last ? row_begin % spatial : 0;
  const Index p_end = oc_first == oc_last ? (row_end - 1) % spatial + 1 : spatial;
  TapLists<Rank> lists;
  for (Index p0 = p_begin; p0 < p_end; p0 += block) {
    const Index p1 = std::min(p0 + block, p_end);
    lists.assign(g, p0, p1 - p0);
    for (Index oc = oc_first; oc <= oc_last; ++oc) {
      const Index first = std::max(row_begin, oc * spatial + p0), last = std::min(row_end, oc * spatial + p1);
      for (Index r = first; r < last; ++r) f(r, lists.begin(r - oc * spatial), lists.end(r - oc * spatial));
    }
  }
}

/// How many distinct input offsets a list of taps sorted by offset reads
/// (distinct_taps_at): each new offset starts a run.
inline Index distinct_offsets(const Tap* begin, const Tap* end) {
  Index count = 0;
  for (const Tap* t = begin; t != end; ++t) count += t == begin || t->offset != t[-1].offset;
  return count;
}

/// The AxisMaps hold two Index per output coordinate and tap of each axis.
/// Beyond 64 MiB they are held to max_dense_bytes(), so a huge layer is a
/// spec_error before its tables are allocated (even for matrix_size()).
template <int Rank>
void check_index_tables(const std::array<Index, Rank>& output_size, const std::array<Index, Rank>& kernel_size) {
  Index entries = 0;
  for (int d = 0; d < Rank; ++d)
    entries = checked_add(entries, checked_mul(output_size[d], kernel_size[d], "output * kernel"), "index tables");
  const std::size_t per_entry = 2 * sizeof(Index), floor = std::size_t{64} << 20, limit = max_dense_bytes();
  const auto n = static_cast<std::size_t>(entries);
  if (n > floor / per_entry && n > limit / per_entry)
    fail_memory("the index tables would need ", entries, " entries of ", per_entry,
         " bytes (output_size=", output_size, ", kernel_size=", kernel_size,
         "), more than max_dense_bytes() = ", limit, "; raise it with set_max_dense_bytes()");
}

template <int Rank>
Geometry<Rank> make_geometry(Index in_channels, Index out_channels, Index groups,
                             const std::array<Index, Rank>& input_size,
                             const std::array<Index, Rank>& output_size,
                             const std::array<Index, Rank>& kernel_size,
                             const std::array<Index, Rank>& stride,
                             const std::array<Index, Rank>& dilation,
                             const std::array<Index, Rank>& pad_begin, PaddingMode mode) {
  Geometry<Rank> g;
  g.in_channels = in_channels;
  g.out_channels = out_channels;
  g.groups = groups;
  g.input_size = input_size;
  g.output_size = output_size;
  g.kernel_size = kernel_size;
  g.mode = mode;
  // Every size is checked before anything is multiplied unchecked or allocated.
  g.input_spatial = checked_product(input_size, "input size");
  g.output_spatial = checked_product(output_size, "output size");
  g.kernel_numel = checked_product(kernel_size, "kernel size");
  (void)checked_mul(in_channels, g.input_spatial, "input_numel");
  (void)checked_mul(out_channels, g.output_spatial, "output_numel");
  (void)checked_mul(checked_mul(out_channels, g.in_per_group(), "weight_numel"), g.kernel_numel,
                    "weight_numel");
  check_index_tables<Rank>(output_size, kernel_size);
  Index stride_d = 1;
  for (int d = Rank - 1; d >= 0; --d) {
    g.input_strides[d] = stride_d;
    stride_d *= input_size[d];
  }
  for (int d = 0; d < Rank; ++d)
    g.axes[d] = AxisMap(input_size[d], output_size[d], kernel_size[d], stride[d], dilation[d],
                        pad_begin[d], mode);
  return g;
}

/// The geometry of a convolution (validates the spec).
template <int Rank>
Geometry<Rank> geometry(const ConvSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.in_channels, spec.out_channels, spec.groups, spec.input_size,
                             spec.output_size(), spec.kernel_size, spec.stride, spec.dilation,
                             spec.pad_begin(), spec.padding_mode);
}

/// The geometry of the convolution whose adjoint a transposed convolution
/// is: it reads the transposed layer's output and writes its input.
template <int Rank>
Geometry<Rank> geometry(const ConvTransposeSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.out_channels, spec.in_channels, spec.groups, spec.output_size(),
                             spec.input_size, spec.kernel_size, spec.stride, spec.dilation,
                             spec.padding, PaddingMode::zeros);
}

}  // namespace convmat::detail

// ---- convmat/detail/parallel.hpp ---------------------------------------------
// Splitting independent rows over threads. With OpenMP (compile with
// -fopenmp, or link OpenMP::OpenMP_CXX) the work is shared among the
// threads; without it everything runs serially, with the same results.

#ifdef _OPENMP
#include <omp.h>
#endif

namespace convmat::detail {

/// Calls f(begin, end) on disjoint chunks covering [first, last), in
/// parallel when OpenMP is on and there are at least `grain` items per
/// thread. Each call may keep its own scratch space.
template <class F>
void parallel_chunks(Eigen::Index first, Eigen::Index last, Eigen::Index grain, F&& f) {
  const Eigen::Index n = last - first;
  if (n <= 0) return;
#ifdef _OPENMP
  const Eigen::Index threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const Eigen::Index chunks = std::max<Eigen::Index>(1, std::min<Eigen::Index>(threads, n / std::max<Eigen::Index>(grain, 1)));
  if (chunks > 1) {
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks))
    for (Eigen::Index c = 0; c < chunks; ++c) f(first + n * c / chunks, first + n * (c + 1) / chunks);
    return;
  }
#else
  (void)grain;
#endif
  f(first, last);
}

}  // namespace convmat::detail

// ---- convmat/dense.hpp (continued) -------------------------------------------
namespace convmat {
namespace detail {

inline constexpr const char* conv_weight_layout = "(out_channels, in_channels / groups, kernel...)";
inline constexpr const char* transpose_weight_layout = "(in_channels, out_channels / groups, kernel...)";

/// Writes rows [row_begin, row_end) of the geometry's matrix into `out`:
/// entry (r, c) goes to out[(r - row_begin) * row_stride + c * col_stride].
/// With zero_rows (row-major, col_stride 1) each row is zeroed just before
/// it is filled, while it is in cache; otherwise `out` must be zero already.
/// Taps that land on the same input (non-zero padding modes) add up.
template <int Rank, class Scalar>
void fill_dense(const Geometry<Rank>& g, const Scalar* w, Index row_begin, Index row_end, Scalar* out,
                Index row_stride, Index col_stride, bool zero_rows) {
  const Index cig = g.in_per_group(), kn = g.kernel_numel, cols = g.input_numel();
  const Index spatial = g.output_spatial, channel_stride = g.input_spatial * col_stride;
  // The row's work captures plain values: it is the hot loop, kept in registers.
  const auto fill_row = [=, &g](Index r, const Tap* taps_begin, const Tap* taps_end) {
    const Index oc = r / spatial;
    Scalar* row = out + (r - row_begin) * row_stride;
    if (zero_rows) std::fill(row, row + cols, Scalar(0));
    Scalar* channel = row + g.group_first_input(oc) * channel_stride;
    const Scalar* w_row = w + oc * cig * kn;
    for (Index ic = 0; ic < cig; ++ic, channel += channel_stride, w_row += kn)
      for (const Tap* t = taps_begin; t != taps_end; ++t) channel[t->offset * col_stride] += w_row[t->tap];
  };
  parallel_chunks(row_begin, row_end, 64,
                  [&](Index begin, Index end) { for_each_row_taps(g, begin, end, fill_row); });
}

inline void check_row_range(Index row_begin, Index row_end, Index rows) {
  if (row_begin < 0 || row_begin > row_end || row_end > rows)
    fail("row block [", row_begin, ", ", row_end, ") is not within the matrix's ", rows,
         " rows (need 0 <= row_begin <= row_end <= ", rows, ")");
}

template <int Rank, class Scalar>
RowMajorMatrix<Scalar> dense_rows(const Geometry<Rank>& g, const Scalar* w, Index row_begin, Index row_end) {
  check_row_range(row_begin, row_end, g.output_numel());
  check_dense_size(row_end - row_begin, g.input_numel(), sizeof(Scalar), "the dense matrix");
  RowMajorMatrix<Scalar> t(row_end - row_begin, g.input_numel());
  fill_dense(g, w, row_begin, row_end, t.data(), t.cols(), 1, true);
  return t;
}

}  // namespace detail

/// The dense matrix T (output_numel x input_numel, row-major) with
/// vec(conv(x, w)) = T vec(x), for weights flattened as
/// (out_channels, in_channels / groups, kernel...). Throws spec_error for
/// an invalid spec, weights of the wrong length, or a matrix larger than
/// max_dense_bytes().
template <int Rank, class Derived>
detail::RowMajorMatrix<typename Derived::Scalar> conv_matrix(const ConvSpec<Rank>& spec,
                                                             const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::dense_rows(g, w.data(), 0, g.output_numel());
}

/// Rows [row_begin, row_end) of conv_matrix(spec, weight), built on their
/// own: blocks of consecutive ranges stack to exactly the whole matrix.
template <int Rank, class Derived>
detail::RowMajorMatrix<typename Derived::Scalar> conv_matrix_rows(const ConvSpec<Rank>& spec,
                                                                  const Eigen::MatrixBase<Derived>& weight,
                                                                  Index row_begin, Index row_end) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::dense_rows(g, w.data(), row_begin, row_end);
}

/// The dense matrix (output_numel x input_numel, row-major) of a transposed
/// convolution, weights flattened as (in_channels, out_channels / groups,
/// kernel...). With output_padding 0 it is the transpose of the matching
/// convolution's conv_matrix.
template <int Rank, class Derived>
detail::RowMajorMatrix<typename Derived::Scalar> conv_transpose_matrix(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);  // the convolution this layer is the adjoint of
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  detail::check_dense_size(g.input_numel(), g.output_numel(), sizeof(Scalar), "the dense matrix");
  detail::RowMajorMatrix<Scalar> t = detail::RowMajorMatrix<Scalar>::Zero(g.input_numel(), g.output_numel());
  // Entry (r, c) of the convolution's matrix is entry (c, r) here.
  detail::fill_dense(g, w.data(), 0, g.output_numel(), t.data(), 1, t.cols(), false);
  return t;
}

/// The layer's bias as an output-sized vector (bias[oc] at every position
/// of output channel oc), so that the layer is the affine map T x + b.
template <class Spec, class Derived>
detail::Vector<typename Derived::Scalar> bias_vector(const Spec& spec, const Eigen::MatrixBase<Derived>& bias) {
  const Index channels = spec.out_channels, spatial = spec.output_spatial();
  if (bias.size() != channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements (", bias.rows(), " x ", bias.cols(),
                 "), but the layer has out_channels=", channels);
  detail::check_dense_size(spec.output_numel(), 1, sizeof(typename Derived::Scalar), "the bias vector",
                           "raise the limit with set_max_dense_bytes()");
  detail::Vector<typename Derived::Scalar> b(spec.output_numel());
  for (Index oc = 0; oc < channels; ++oc) b.segment(oc * spatial, spatial).setConstant(bias(oc));
  return b;
}

/// The augmented matrix [T b; 0 1] ((output_numel + 1) x (input_numel + 1)):
/// the layer with bias as one linear map on homogeneous coordinates [x; 1].
template <class Spec, class WeightDerived, class BiasDerived>
detail::RowMajorMatrix<typename WeightDerived::Scalar> affine_matrix(const Spec& spec,
                                                                     const Eigen::MatrixBase<WeightDerived>& weight,
                                                                     const Eigen::MatrixBase<BiasDerived>& bias) {
  detail::require_same_scalar<WeightDerived, BiasDerived>();
  using Scalar = typename WeightDerived::Scalar;
  const auto b = bias_vector(spec, bias);
  const Index rows = spec.output_numel(), cols = spec.input_numel();
  (void)detail::weight_view(weight, spec.weight_numel(),  // checked before the allocation
                            std::is_same_v<Spec, ConvSpec<Spec::rank>> ? detail::conv_weight_layout
                                                                      : detail::transpose_weight_layout);
  detail::check_dense_size(detail::checked_add(rows, 1, "the affine matrix's rows"),
                           detail::checked_add(cols, 1, "the affine matrix's columns"), sizeof(Scalar),
                           "the affine matrix");
  detail::RowMajorMatrix<Scalar> a(rows + 1, cols + 1);
  if constexpr (std::is_same_v<Spec, ConvSpec<Spec::rank>>)
    a.topLeftCorner(rows, cols) = conv_matrix(spec, weight);
  else
    a.topLeftCorner(rows, cols) = conv_transpose_matrix(spec, weight);
  a.topRightCorner(rows, 1) = b;
  a.bottomLeftCorner(1, cols).setZero();
  a(rows, cols) = Scalar(1);
  return a;
}

/// The weight Jacobian J(x) (output_numel x weight_numel, row-major) with
/// vec(conv(x, w)) = J(x) vec(w) for every w: the unfold matrix of x,
/// arranged per output channel.
template <int Rank, class Derived>
detail::RowMajorMatrix<typename Derived::Scalar> weight_jacobian(const ConvSpec<Rank>& spec,
                                                                 const Eigen::MatrixBase<Derived>& input) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("weight_jacobian takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(g.output_numel(), g.weight_numel(), sizeof(Scalar), "the weight Jacobian",
                           "use unfold() (the same numbers, one row per weight of a group) or raise the limit "
                           "with set_max_dense_bytes()");
  detail::RowMajorMatrix<Scalar> j = detail::RowMajorMatrix<Scalar>::Zero(g.output_numel(), g.weight_numel());
  const Index cig = g.in_per_group(), kn = g.kernel_numel;
  std::vector<detail::Tap> taps;
  for (Index p = 0; p < g.output_spatial; ++p) {
    g.taps_at(p, taps);
    for (Index oc = 0; oc < g.out_channels; ++oc) {
      const Scalar* x_group = x.data() + g.group_first_input(oc) * g.input_spatial;
      for (Index ic = 0; ic < cig; ++ic) {
        Scalar* row = &j(oc * g.output_spatial + p, (oc * cig + ic) * kn);
        for (const auto& t : taps) row[t.tap] = x_group[ic * g.input_spatial + t.offset];
      }
    }
  }
  return j;
}

}  // namespace convmat

// ---- convmat/direct.hpp ------------------------------------------------------
// The direct convolution and transposed convolution: plain loops over the
// geometry's taps. Straightforward on purpose — it is the reference that
// every other path is tested against (and PyTorch's golden data tests it).

namespace convmat {
namespace detail {

inline constexpr const char* batch_hint =
    "pass fewer samples at a time, or raise the limit with set_max_dense_bytes()";

/// y = T x for one sample: y[oc, p] = sum over the group's input channels
/// and p's taps of w[oc, ic, tap] * x[ic, offset]. `taps_of(p)` gives the
/// taps of position p as a [first, last) pair of Tap pointers, as
/// Geometry::taps_at lists them (found as needed, or from a kept table).
template <int Rank, class Scalar, class TapsOf>
void forward_over(const Geometry<Rank>& g, TapsOf&& taps_of, const Scalar* w, const Scalar* x, Scalar* y) {
  const Index cig = g.in_per_group(), kn = g.kernel_numel;
  for (Index p = 0; p < g.output_spatial; ++p) {
    const auto [first, last] = taps_of(p);
    for (Index oc = 0; oc < g.out_channels; ++oc) {
      const Scalar* x_group = x + g.group_first_input(oc) * g.input_spatial;
      Scalar sum(0);
      for (Index ic = 0; ic < cig; ++ic) {
        const Scalar* w_row = w + (oc * cig + ic) * kn;
        const Scalar* x_channel = x_group + ic * g.input_spatial;
        for (const Tap* t = first; t != last; ++t) sum += w_row[t->tap] * x_channel[t->offset];
      }
      y[oc * g.output_spatial + p] = sum;
    }
  }
}

/// x = T^T y (or T^H y when `conjugate`) for one sample: every product of
/// forward_over() sent back to the input it came from. x is overwritten.
template <int Rank, class Scalar, class TapsOf>
void adjoint_over(const Geometry<Rank>& g, TapsOf&& taps_of, const Scalar* w, const Scalar* y, Scalar* x,
                  bool conjugate) {
  const Index cig = g.in_per_group(), kn = g.kernel_numel;
  std::fill(x, x + g.input_numel(), Scalar(0));
  for (Index p = 0; p < g.output_spatial; ++p) {
    const auto [first, last] = taps_of(p);
    for (Index oc = 0; oc < g.out_channels; ++oc) {
      Scalar* x_group = x + g.group_first_input(oc) * g.input_spatial;
      const Scalar y_value = y[oc * g.output_spatial + p];
      for (Index ic = 0; ic < cig; ++ic) {
        const Scalar* w_row = w + (oc * cig + ic) * kn;
        Scalar* x_channel = x_group + ic * g.input_spatial;
        for (const Tap* t = first; t != last; ++t)
          x_channel[t->offset] += (conjugate ? Eigen::numext::conj(w_row[t->tap]) : w_row[t->tap]) * y_value;
      }
    }
  }
}

/// Finds each position's taps with Geometry::taps_at as it goes.
template <int Rank>
class TapsAsNeeded {
 public:
  explicit TapsAsNeeded(const Geometry<Rank>& g) : g_(g) {}
  std::pair<const Tap*, const Tap*> operator()(Index p) {
    g_.taps_at(p, taps_);
    return {taps_.data(), taps_.data() + taps_.size()};
  }

 private:
  const Geometry<Rank>& g_;
  std::vector<Tap> taps_;
};

/// y = T x for one sample, the taps found as needed.
template <int Rank, class Scalar>
void forward(const Geometry<Rank>& g, const Scalar* w, const Scalar* x, Scalar* y) {
  forward_over(g, TapsAsNeeded<Rank>(g), w, x, y);
}

/// x = T^T y (T^H y when `conjugate`) for one sample, the taps found as needed.
template <int Rank, class Scalar>
void adjoint(const Geometry<Rank>& g, const Scalar* w, const Scalar* y, Scalar* x, bool conjugate = false) {
  adjoint_over(g, TapsAsNeeded<Rank>(g), w, y, x, conjugate);
}

}  // namespace detail

/// The convolution of every column of `input` (input_numel x batch) with
/// `weight` (flattened (out_channels, in_channels / groups, kernel...)),
/// as torch.nn.functional.conv{1,2,3}d with the spec's padding mode.
/// Returns output_numel x batch.
template <int Rank, class WeightDerived, class InputDerived>
detail::Matrix<typename WeightDerived::Scalar> convolve(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<WeightDerived>& weight,
                                                        const Eigen::MatrixBase<InputDerived>& input) {
  detail::require_same_scalar<WeightDerived, InputDerived>();
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  detail::Matrix<Scalar> y(g.output_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) detail::forward(g, w.data(), x.col(s).data(), y.col(s).data());
  return y;
}

/// The transposed convolution of every column of `input` (input_numel x
/// batch) with `weight` (flattened (in_channels, out_channels / groups,
/// kernel...)), as torch.nn.functional.conv_transpose{1,2,3}d. Returns
/// output_numel x batch.
template <int Rank, class WeightDerived, class InputDerived>
detail::Matrix<typename WeightDerived::Scalar> convolve_transpose(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  detail::require_same_scalar<WeightDerived, InputDerived>();
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(in_channels, out_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.output_numel(), "input");
  detail::check_dense_size(g.input_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  detail::Matrix<Scalar> y(g.input_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) detail::adjoint(g, w.data(), x.col(s).data(), y.col(s).data());
  return y;
}

}  // namespace convmat

// ---- convmat/layers.hpp ------------------------------------------------------
// The other linear layers of a CNN as matrices, each one a convolution in
// disguise and so built on the same index machinery (detail::Geometry):
//
//   - average pooling: a depthwise convolution with weights 1, each output
//     row scaled by its own divisor (PyTorch's count_include_pad, ceil_mode
//     and divisor_override);
//   - padding (zeros, reflect, replicate, circular): a depthwise 1x1
//     identity convolution with that padding;
//   - nearest upsampling by integer factors: a depthwise transposed
//     convolution with kernel = stride = scale and weights 1;
//   - flatten: the identity, since convmat's vectors are already flat.
//
// And the algebra that turns a chain of them into one layer: an AffineMap
// (T x + b), compose() for consecutive affine layers, and inference-mode
// BatchNorm as an affine map or folded into the preceding convolution.

#include <Eigen/SparseCore>
#include <cmath>

// ---- convmat/sparse.hpp ------------------------------------------------------
// The sparse matrix T of a layer in compressed row form, built directly:
// the exact number of non-zeros of every row is known from the geometry
// before anything is allocated, so there is no triplet list and no sort.

namespace convmat {

/// The sparse matrix type convmat returns: compressed rows.
template <class Scalar, class StorageIndex = int>
using SparseMatrix = Eigen::SparseMatrix<Scalar, Eigen::RowMajor, StorageIndex>;

namespace detail {

template <class StorageIndex>
void check_storage_index(Index value, const char* what) {
  if (value > static_cast<Index>(std::numeric_limits<StorageIndex>::max()))
    fail(what, " = ", value, " does not fit the sparse matrix's StorageIndex (max ",
         static_cast<Index>(std::numeric_limits<StorageIndex>::max()),
         "); use a wider one, e.g. conv_matrix_sparse<std::int64_t>(spec, weight)");
}

/// Rows [row_begin, row_end) of a geometry's matrix as a compressed-row
/// build will hold them, planned before anything is allocated: the range
/// and the sizes checked against StorageIndex, the non-zeros counted
/// exactly, per axis.
struct SparseRows {
  Index row_begin = 0, row_end = 0, cols = 0, nonzeros = 0;
  Index rows() const { return row_end - row_begin; }
};

template <class StorageIndex, int Rank>
SparseRows plan_sparse_rows(const Geometry<Rank>& g, Index row_begin, Index row_end) {
  static_assert(std::is_integral_v<StorageIndex> && std::is_signed_v<StorageIndex>,
                "convmat: StorageIndex must be a signed integer type, as Eigen requires");
  check_row_range(row_begin, row_end, g.output_numel());
  check_storage_index<StorageIndex>(g.input_numel(), "the column count");
  check_storage_index<StorageIndex>(row_end - row_begin, "the row count");
  const SparseRows plan{row_begin, row_end, g.input_numel(), g.nonzeros_between(row_begin, row_end)};
  check_storage_index<StorageIndex>(plan.nonzeros, "the non-zero count");
  return plan;
}

/// The bytes the planned rows take: a value and a column index per
/// non-zero, an offset per row and one more. Callers add what they hold
/// beside the matrix, then check().
template <class Scalar, class StorageIndex>
Footprint compressed_rows_footprint(const char* what, const SparseRows& plan) {
  Footprint need(what, plan.rows(), plan.cols);
  need.add(plan.nonzeros, sizeof(Scalar) + sizeof(StorageIndex), "non-zeros (value and column index)")
      .add(plan.rows() + 1, sizeof(StorageIndex), "row offsets");
  return need;
}

/// The planned rows of the geometry's matrix in compressed row form. Every
/// structural non-zero of the layer is stored (a zero weight too); taps
/// that land on the same input are summed into one entry.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> build_sparse_rows(const Geometry<Rank>& g, const Scalar* w, const SparseRows& plan) {
  const Index row_begin = plan.row_begin, row_end = plan.row_end;
  const Index cig = g.in_per_group(), kn = g.kernel_numel;

  SparseMatrix<Scalar, StorageIndex> t(plan.rows(), plan.cols);
  StorageIndex* outer = t.outerIndexPtr();
  // Each row's length (at most input_numel, which fits), then their running sum.
  parallel_chunks(row_begin, row_end, 64, [&](Index begin, Index end) {
    for_each_row_taps(g, begin, end, [&](Index r, const Tap* taps_begin, const Tap* taps_end) {
      outer[r - row_begin + 1] = static_cast<StorageIndex>(cig * distinct_offsets(taps_begin, taps_end));
    });
  });
  Index nonzeros = 0;
  outer[0] = 0;
  for (Index i = 1; i <= plan.rows(); ++i) {
    nonzeros += outer[i];  // <= plan.nonzeros, which fits
    outer[i] = static_cast<StorageIndex>(nonzeros);
  }
  CONVMAT_ASSERT(nonzeros == plan.nonzeros, "sparse rows hold the predicted non-zero count");
  t.resizeNonZeros(nonzeros);
  StorageIndex* inner = t.innerIndexPtr();
  Scalar* values = t.valuePtr();

  // The row's work captures plain values: it is the hot loop, kept in registers.
  const Index spatial = g.output_spatial, input_spatial = g.input_spatial;
  const auto fill_row = [=, &g](Index r, const Tap* taps_begin, const Tap* taps_end) {
    const Index oc = r / spatial;
    Index at = outer[r - row_begin];
    Index column = g.group_first_input(oc) * input_spatial;
    const Scalar* w_row = w + oc * cig * kn;
    for (Index ic = 0; ic < cig; ++ic, column += input_spatial, w_row += kn)
      for (const Tap* tap = taps_begin; tap != taps_end;) {  // one entry per distinct offset
        Scalar sum = w_row[tap->tap];
        const Index offset = tap->offset;
        for (++tap; tap != taps_end && tap->offset == offset; ++tap) sum += w_row[tap->tap];
        inner[at] = static_cast<StorageIndex>(column + offset);
        values[at] = sum;
        ++at;
      }
    CONVMAT_ASSERT(at == outer[r - row_begin + 1], "sparse row filled to its predicted length");
  };
  parallel_chunks(row_begin, row_end, 64,
                  [&](Index begin, Index end) { for_each_row_taps(g, begin, end, fill_row); });
  return t;
}

/// Rows [row_begin, row_end) of the geometry's matrix in compressed row
/// form: planned, held to max_dense_bytes() (`hint` says what to do
/// instead), then built.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> sparse_rows(const Geometry<Rank>& g, const Scalar* w, Index row_begin,
                                               Index row_end, const char* hint = sparse_matrix_hint) {
  const auto plan = plan_sparse_rows<StorageIndex>(g, row_begin, row_end);
  compressed_rows_footprint<Scalar, StorageIndex>("the sparse matrix", plan).check(hint);
  return build_sparse_rows<StorageIndex>(g, w, plan);
}

inline constexpr const char* sparse_row_block_hint =
    "build it in smaller row blocks, use make_operator, or raise the limit with set_max_dense_bytes()";
inline constexpr const char* sparse_transpose_hint =
    "use make_operator (the matrix-free transposed layer), or raise the limit with set_max_dense_bytes()";

/// What conv_transpose_matrix_sparse holds at its peak: the matching
/// convolution's rows (planned as `plan`) and, while Eigen transposes them,
/// the transposed copy and its row positions.
template <class Scalar, class StorageIndex, int Rank>
Footprint transposed_footprint(const char* what, const Geometry<Rank>& g, const SparseRows& plan) {
  Footprint need(what, g.input_numel(), g.output_numel());
  need.add(plan.nonzeros, sizeof(Scalar) + sizeof(StorageIndex), "non-zeros (value and column index)")
      .add(plan.rows() + 1, sizeof(StorageIndex), "row offsets")
      .add(plan.nonzeros, sizeof(Scalar) + sizeof(StorageIndex), "transposed non-zeros")
      .add(g.input_numel() + 1, sizeof(StorageIndex), "transposed row offsets")
      .add(g.input_numel(), sizeof(StorageIndex), "row positions for transposing");
  return need;
}

/// The matching convolution's planned rows (all of them), transposed.
template <class StorageIndex, int Rank, class Scalar>
SparseMatrix<Scalar, StorageIndex> build_transposed(const Geometry<Rank>& g, const Scalar* w, const SparseRows& plan) {
  SparseMatrix<Scalar, StorageIndex> t = build_sparse_rows<StorageIndex>(g, w, plan).transpose();
  return t;
}

}  // namespace detail

/// The sparse matrix T (output_numel x input_numel, compressed rows) with
/// vec(conv(x, w)) = T vec(x). StorageIndex (default int) is Eigen's index
/// type; a matrix whose sizes or non-zeros do not fit it is a spec_error,
/// one whose bytes exceed max_dense_bytes() a memory_limit_error, both
/// thrown before anything is allocated.
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_matrix_sparse(const ConvSpec<Rank>& spec,
                                                                        const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::sparse_rows<StorageIndex>(g, w.data(), 0, g.output_numel());
}

/// Rows [row_begin, row_end) of conv_matrix_sparse(spec, weight) on their own.
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_matrix_sparse_rows(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, Index row_begin, Index row_end) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::sparse_rows<StorageIndex>(g, w.data(), row_begin, row_end, detail::sparse_row_block_hint);
}

/// The sparse matrix of a transposed convolution (compressed rows): the
/// matching convolution's matrix, transposed in O(non-zeros). Both copies
/// exist while it is transposed: the memory guard counts them.
template <class StorageIndex = int, int Rank, class Derived>
SparseMatrix<typename Derived::Scalar, StorageIndex> conv_transpose_matrix_sparse(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  detail::check_storage_index<StorageIndex>(g.output_numel(), "the column count");
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::transposed_footprint<Scalar, StorageIndex>("the sparse matrix", g, plan)
      .check(detail::sparse_transpose_hint);
  return detail::build_transposed<StorageIndex>(g, w.data(), plan);
}

}  // namespace convmat

// ---- convmat/layers.hpp (continued) ------------------------------------------
namespace convmat {

// ---------------------------------------------------------------------------
// Average pooling
// ---------------------------------------------------------------------------

/// The shape of an average pooling layer (PyTorch's AvgPool{1,2,3}d) over
/// `channels` channels. Pooling acts on each channel alone, so the layer
/// maps (channels, input_size...) to (channels, output_size()...).
///
///     convmat::AvgPoolSpec<2> pool;
///     pool.channels = 3; pool.input_size = {8, 8}; pool.kernel_size = {2, 2};
///     auto T = convmat::avg_pool_matrix<float>(pool);   // stride defaults to 2
template <int Rank>
struct AvgPoolSpec {
  static_assert(Rank >= 1, "convmat: pooling has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  /// The step between windows; PyTorch's default is the kernel size.
  std::optional<std::array<Index, Rank>> stride;
  /// Implicit zero padding on the low side (and the high side unless
  /// padding_end is set); PyTorch allows at most half the kernel.
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Padding on the high side, when it differs (ONNX's asymmetric pads).
  std::optional<std::array<Index, Rank>> padding_end;
  /// Round the output size up instead of down; a window that would start
  /// in the high padding is dropped, as in PyTorch.
  bool ceil_mode = false;
  /// Divide by the window's size including padding zeros (true, PyTorch's
  /// default) or by the number of input elements it covers (false).
  bool count_include_pad = true;
  /// Divide every window by this instead.
  std::optional<Index> divisor_override;

  std::array<Index, Rank> strides() const { return stride.value_or(kernel_size); }
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Throws spec_error unless PyTorch would accept this layer.
  void validate() const { (void)output_size(); }

  /// Per dimension: floor or ceil of (D + pad_begin + pad_end - K) / stride,
  /// plus one; with ceil_mode, minus one if the last window would start at
  /// or past D + pad_begin.
  std::array<Index, Rank> output_size() const {
    if (channels <= 0) detail::fail("channels must be positive: channels=", channels);
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    const auto s = strides(), begin = pad_begin(), end = pad_end();
    detail::require_positive<Rank>(s, "stride");
    detail::require_non_negative<Rank>(begin, "padding");
    detail::require_non_negative<Rank>(end, "padding_end");
    if (divisor_override && *divisor_override <= 0)
      detail::fail("divisor_override must be positive: divisor_override=", *divisor_override);
    if constexpr (Rank == 3) {  // F.avg_pool3d also wants the input, unpadded, at least the kernel
      for (int d = 0; d < Rank; ++d)
        if (input_size[d] < kernel_size[d])
          detail::fail("input smaller than kernel size: input_size=", input_size, ", kernel_size=", kernel_size,
                       " (3-D average pooling needs input_size >= kernel_size in every dimension, as "
                       "PyTorch's avg_pool3d)");
    }
    std::array<Index, Rank> out{};
    for (int d = 0; d < Rank; ++d) {
      if (2 * begin[d] > kernel_size[d] || 2 * end[d] > kernel_size[d])
        detail::fail("padding must be at most half the kernel size: padding=", begin,
                     ", padding_end=", end, ", kernel_size=", kernel_size);
      const Index span = detail::checked_add(input_size[d], begin[d] + end[d], "padded input size") -
                         kernel_size[d];
      out[d] = detail::floor_div(span + (ceil_mode ? s[d] - 1 : 0), s[d]) + 1;
      if (ceil_mode && out[d] >= 1 && (out[d] - 1) * s[d] >= input_size[d] + begin[d]) --out[d];
    }
    for (int d = 0; d < Rank; ++d)
      if (out[d] < 1)
        detail::fail("pooling window does not fit: input_size=", input_size, ", kernel_size=", kernel_size,
                     ", stride=", s, ", padding=", begin, ", padding_end=", end, ", ceil_mode=",
                     ceil_mode ? "true" : "false", " give output ", out);
    return out;
  }

  Index input_spatial() const { return detail::checked_product(input_size, "input size"); }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index input_numel() const { return detail::checked_mul(channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(channels, output_spatial(), "output_numel"); }
};

using AvgPool1dSpec = AvgPoolSpec<1>;
using AvgPool2dSpec = AvgPoolSpec<2>;
using AvgPool3dSpec = AvgPoolSpec<3>;

namespace detail {

/// Weights 1 for a depthwise layer: one per channel and kernel tap. A
/// spec sizes them, so callers count them in their footprint first.
template <class Scalar, int Rank>
Vector<Scalar> depthwise_ones(const Geometry<Rank>& g) {
  return Vector<Scalar>::Ones(g.weight_numel());
}

inline constexpr const char* dense_layer_hint =
    "build it as compressed rows (its _sparse function), or raise the limit with set_max_dense_bytes()";
inline constexpr const char* sparse_layer_hint = "raise the limit with set_max_dense_bytes()";

/// A dense rows x cols matrix of Scalar, as a footprint to add to.
template <class Scalar>
Footprint dense_footprint(const char* what, Index rows, Index cols) {
  Footprint need(what, rows, cols);
  need.add(checked_mul(rows, cols, "the dense matrix"), sizeof(Scalar), "entries");
  return need;
}

/// The pooling layer as a depthwise convolution: windows are kernel taps.
template <int Rank>
Geometry<Rank> geometry(const AvgPoolSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.channels, spec.channels, spec.channels, spec.input_size, spec.output_size(),
                             spec.kernel_size, spec.strides(), filled<Rank>(1), spec.pad_begin(),
                             PaddingMode::zeros);
}

/// Every output row's divisor, per spatial position (the same for every
/// channel). Counting taps is the geometry's job: without padding it is the
/// window's input taps; with count_include_pad, the taps of the same
/// windows on the padded input seen as the input (extent D + pad_begin +
/// pad_end, no padding), so a ceil_mode window that runs past the high
/// padding counts only what it covers, as in PyTorch.
template <class Scalar, int Rank>
Vector<Scalar> avg_pool_divisors(const AvgPoolSpec<Rank>& spec, const Geometry<Rank>& g) {
  Vector<Scalar> divisor(g.output_spatial);
  if (spec.divisor_override) return divisor.setConstant(static_cast<Scalar>(*spec.divisor_override));
  if (!spec.count_include_pad) {
    for (Index p = 0; p < g.output_spatial; ++p) divisor(p) = static_cast<Scalar>(g.distinct_taps_at(p));
    return divisor;
  }
  std::array<Index, Rank> padded = spec.input_size;
  const auto begin = spec.pad_begin(), end = spec.pad_end();
  for (int d = 0; d < Rank; ++d) padded[d] += begin[d] + end[d];
  const auto whole = make_geometry<Rank>(1, 1, 1, padded, g.output_size, spec.kernel_size, spec.strides(),
                                         filled<Rank>(1), filled<Rank>(0), PaddingMode::zeros);
  for (Index p = 0; p < g.output_spatial; ++p) divisor(p) = static_cast<Scalar>(whole.distinct_taps_at(p));
  return divisor;
}

}  // namespace detail

/// The dense matrix (output_numel x input_numel, row-major) of average
/// pooling: row (c, o) holds 1 / divisor(o) on every input its window
/// covers in channel c. Scalar is the matrix's scalar type.
template <class Scalar = double, int Rank>
detail::RowMajorMatrix<Scalar> avg_pool_matrix(const AvgPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  detail::dense_footprint<Scalar>("the dense pooling matrix", g.output_numel(), g.input_numel())
      .add(g.weight_numel(), sizeof(Scalar), "window weights")
      .add(g.output_spatial, sizeof(Scalar), "divisors")
      .check(detail::dense_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  detail::RowMajorMatrix<Scalar> t = detail::dense_rows(g, ones.data(), 0, g.output_numel());
  const auto divisor = detail::avg_pool_divisors<Scalar>(spec, g);
  for (Index r = 0; r < t.rows(); ++r) t.row(r) /= divisor(r % g.output_spatial);
  return t;
}

/// avg_pool_matrix as compressed rows.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> avg_pool_matrix_sparse(const AvgPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::compressed_rows_footprint<Scalar, StorageIndex>("the sparse pooling matrix", plan)
      .add(g.weight_numel(), sizeof(Scalar), "window weights")
      .add(g.output_spatial, sizeof(Scalar), "divisors")
      .check(detail::sparse_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  auto t = detail::build_sparse_rows<StorageIndex>(g, ones.data(), plan);
  const auto divisor = detail::avg_pool_divisors<Scalar>(spec, g);
  const StorageIndex* outer = t.outerIndexPtr();
  Scalar* values = t.valuePtr();
  for (Index r = 0; r < t.rows(); ++r)
    for (StorageIndex i = outer[r]; i < outer[r + 1]; ++i) values[i] /= divisor(r % g.output_spatial);
  return t;
}

// ---------------------------------------------------------------------------
// Padding
// ---------------------------------------------------------------------------

/// A padding layer (PyTorch's F.pad / ZeroPad, ReflectionPad, ReplicationPad,
/// CircularPad; ONNX's Pad): every channel grows by pad_begin before and
/// pad_end after its input in each dimension, filled as `mode` says.
template <int Rank>
struct PadSpec {
  static_assert(Rank >= 1, "convmat: padding has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> pad_begin = detail::filled<Rank>(0);
  std::array<Index, Rank> pad_end = detail::filled<Rank>(0);
  PaddingMode mode = PaddingMode::zeros;

  /// The same layer as a depthwise 1x1 convolution with weights 1.
  ConvSpec<Rank> as_conv() const {
    ConvSpec<Rank> conv;
    conv.in_channels = conv.out_channels = conv.groups = channels;
    conv.input_size = input_size;
    conv.kernel_size = detail::filled<Rank>(1);
    conv.set_padding(pad_begin, pad_end);
    conv.padding_mode = mode;
    return conv;
  }

  void validate() const { as_conv().validate(); }
  /// input_size + pad_begin + pad_end.
  std::array<Index, Rank> output_size() const { return as_conv().output_size(); }
  Index input_numel() const { return as_conv().input_numel(); }
  Index output_numel() const { return as_conv().output_numel(); }
};

/// The dense matrix of a padding layer: a 0/1 matrix, except that with
/// reflect, replicate or circular several output positions read one input.
template <class Scalar = double, int Rank>
detail::RowMajorMatrix<Scalar> pad_matrix(const PadSpec<Rank>& spec) {
  const auto g = detail::geometry(spec.as_conv());  // validated before the weights are sized by spec.channels
  detail::dense_footprint<Scalar>("the dense padding matrix", g.output_numel(), g.input_numel())
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::dense_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::dense_rows(g, ones.data(), 0, g.output_numel());
}

/// pad_matrix as compressed rows.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> pad_matrix_sparse(const PadSpec<Rank>& spec) {
  const auto g = detail::geometry(spec.as_conv());
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::compressed_rows_footprint<Scalar, StorageIndex>("the sparse padding matrix", plan)
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::sparse_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::build_sparse_rows<StorageIndex>(g, ones.data(), plan);
}

// ---------------------------------------------------------------------------
// Nearest upsampling
// ---------------------------------------------------------------------------

/// Nearest-neighbour upsampling by integer factors (PyTorch's
/// Upsample(scale_factor=s, mode='nearest'), ONNX's Resize/Upsample with
/// integer scales): output (c, i0 * s0 + r0, ...) = input (c, i0, ...).
template <int Rank>
struct UpsampleSpec {
  static_assert(Rank >= 1, "convmat: upsampling has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> scale = detail::filled<Rank>(1);

  /// The same layer as a depthwise transposed convolution with kernel =
  /// stride = scale and weights 1: each input spreads to its block.
  ConvTransposeSpec<Rank> as_conv_transpose() const {
    ConvTransposeSpec<Rank> t;
    t.in_channels = t.out_channels = t.groups = channels;
    t.input_size = input_size;
    detail::require_positive<Rank>(scale, "scale");
    t.kernel_size = t.stride = scale;
    return t;
  }

  void validate() const { as_conv_transpose().validate(); }
  /// input_size * scale.
  std::array<Index, Rank> output_size() const { return as_conv_transpose().output_size(); }
  Index input_numel() const { return as_conv_transpose().input_numel(); }
  Index output_numel() const { return as_conv_transpose().output_numel(); }
};

/// The dense 0/1 matrix of nearest upsampling.
template <class Scalar = double, int Rank>
detail::RowMajorMatrix<Scalar> upsample_nearest_matrix(const UpsampleSpec<Rank>& spec) {
  const auto t = spec.as_conv_transpose();
  const auto g = detail::geometry(t);  // validated before the weights are sized by the scale
  detail::dense_footprint<Scalar>("the dense upsampling matrix", g.input_numel(), g.output_numel())
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::dense_layer_hint);
  return conv_transpose_matrix(t, detail::depthwise_ones<Scalar>(g));
}

/// upsample_nearest_matrix as compressed rows.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> upsample_nearest_matrix_sparse(const UpsampleSpec<Rank>& spec) {
  const auto g = detail::geometry(spec.as_conv_transpose());
  detail::check_storage_index<StorageIndex>(g.output_numel(), "the column count");
  const auto plan = detail::plan_sparse_rows<StorageIndex>(g, 0, g.output_numel());
  detail::transposed_footprint<Scalar, StorageIndex>("the sparse upsampling matrix", g, plan)
      .add(g.weight_numel(), sizeof(Scalar), "weights")
      .check(detail::sparse_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::build_transposed<StorageIndex>(g, ones.data(), plan);
}

// ---------------------------------------------------------------------------
// Flatten
// ---------------------------------------------------------------------------

/// The matrix of Flatten (and of any Reshape): the identity of size numel,
/// since convmat's vectors are already flattened in C order.
template <class Scalar = double>
detail::RowMajorMatrix<Scalar> flatten_matrix(Index numel) {
  if (numel <= 0) detail::fail("flatten needs a positive element count: numel=", numel);
  detail::check_dense_size(numel, numel, sizeof(Scalar), "the flatten matrix");
  return detail::RowMajorMatrix<Scalar>::Identity(numel, numel);
}

// ---------------------------------------------------------------------------
// Affine maps and their composition
// ---------------------------------------------------------------------------

/// An affine layer x -> matrix * x + bias. MatrixType is a dense or sparse
/// Eigen matrix (output_numel x input_numel); the bias has output_numel
/// entries. A batch X (one column per sample) maps to matrix * X + bias
/// added to every column.
template <class MatrixType>
struct AffineMap {
  using Scalar = typename MatrixType::Scalar;
  MatrixType matrix;
  detail::Vector<Scalar> bias;

  Index input_numel() const { return matrix.cols(); }
  Index output_numel() const { return matrix.rows(); }

  /// matrix * X + bias, for one sample or a batch (columns).
  template <class Derived>
  detail::Matrix<Scalar> operator()(const Eigen::MatrixBase<Derived>& x) const {
    const auto view = detail::batch_view(x, matrix.cols(), "input");
    if (bias.size() != matrix.rows())
      detail::fail("the affine map's bias has ", bias.size(), " entries, but its matrix has ", matrix.rows(), " rows");
    detail::Matrix<Scalar> y = matrix * view;
    y.colwise() += bias;
    return y;
  }
};

/// The affine map of a matrix with zero bias.
template <class MatrixType>
AffineMap<std::decay_t<MatrixType>> linear_map(MatrixType matrix) {
  const Index rows = matrix.rows();
  return {std::move(matrix), detail::Vector<typename std::decay_t<MatrixType>::Scalar>::Zero(rows)};
}

/// The affine map of a matrix and bias (checked to agree in size).
template <class MatrixType, class BiasDerived>
AffineMap<std::decay_t<MatrixType>> affine_map(MatrixType matrix, const Eigen::MatrixBase<BiasDerived>& bias) {
  if (bias.size() != matrix.rows() || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements (", bias.rows(), " x ", bias.cols(), "), but the matrix has ",
                 matrix.rows(), " rows");
  detail::Vector<typename std::decay_t<MatrixType>::Scalar> b = bias.derived().reshaped();
  return {std::move(matrix), std::move(b)};
}

/// The one affine layer equal to `first` followed by `second`:
/// x -> T2 (T1 x + b1) + b2 = (T2 T1) x + (T2 b1 + b2).
template <class MatrixType>
AffineMap<MatrixType> compose(const AffineMap<MatrixType>& second, const AffineMap<MatrixType>& first) {
  if (second.matrix.cols() != first.matrix.rows())
    detail::fail("cannot compose affine layers: the second takes ", second.matrix.cols(),
                 " inputs, but the first gives ", first.matrix.rows(), " outputs");
  if (first.bias.size() != first.matrix.rows() || second.bias.size() != second.matrix.rows())
    detail::fail("cannot compose affine layers whose bias and matrix disagree: biases of ", first.bias.size(),
                 " and ", second.bias.size(), " entries for matrices of ", first.matrix.rows(), " and ",
                 second.matrix.rows(), " rows");
  if constexpr (!std::is_base_of_v<Eigen::SparseMatrixBase<MatrixType>, MatrixType>)
    detail::check_dense_size(second.matrix.rows(), first.matrix.cols(), sizeof(typename MatrixType::Scalar),
                             "the composed matrix");
  AffineMap<MatrixType> result;
  result.matrix = second.matrix * first.matrix;
  result.bias = second.matrix * first.bias + second.bias;
  return result;
}

// ---------------------------------------------------------------------------
// BatchNorm in inference mode
// ---------------------------------------------------------------------------

/// The running statistics and affine parameters of a BatchNorm layer in
/// inference mode: y = gamma * (x - mean) / sqrt(var + eps) + beta, per
/// channel (PyTorch's weight = gamma, bias = beta).
template <class Scalar>
struct BatchNorm {
  detail::Vector<Scalar> gamma, beta, mean, var;
  Scalar eps = Scalar(1e-5);

  Index channels() const { return gamma.size(); }

  /// Per channel, gamma / sqrt(var + eps).
  detail::Vector<Scalar> scale() const {
    validate();
    return (gamma.array() / (var.array() + eps).sqrt()).matrix();
  }
  /// Per channel, beta - mean * scale.
  detail::Vector<Scalar> shift() const { return (beta.array() - mean.array() * scale().array()).matrix(); }

  /// Throws spec_error unless the four vectors agree and var + eps > 0.
  void validate() const {
    const Index c = gamma.size();
    if (c <= 0 || beta.size() != c || mean.size() != c || var.size() != c)
      detail::fail("batch norm parameters must all have one entry per channel: gamma has ", gamma.size(),
                   ", beta ", beta.size(), ", mean ", mean.size(), ", var ", var.size());
    for (Index i = 0; i < c; ++i)
      if (!(var(i) + eps > Scalar(0)))
        detail::fail("batch norm needs var + eps > 0: channel ", i, " has var=", var(i), ", eps=", eps);
  }
};

/// A BatchNorm layer over (channels, spatial...) inputs as an affine map
/// with a diagonal (sparse) matrix.
template <class Scalar, class StorageIndex = int>
AffineMap<SparseMatrix<Scalar, StorageIndex>> batch_norm_map(const BatchNorm<Scalar>& bn, Index spatial) {
  if (spatial <= 0) detail::fail("batch norm needs a positive spatial size: spatial=", spatial);
  const auto scale = bn.scale(), shift = bn.shift();
  const Index n = detail::checked_mul(bn.channels(), spatial, "batch norm numel");
  detail::check_storage_index<StorageIndex>(n, "the batch norm size");
  detail::Footprint("the batch norm matrix", n, n)
      .add(n, sizeof(Scalar) + sizeof(StorageIndex), "non-zeros (value and column index)")
      .add(n + 1, sizeof(StorageIndex), "row offsets")
      .add(n, sizeof(Scalar), "bias entries")
      .check(detail::sparse_layer_hint);
  // The diagonal, written straight into compressed rows: row i holds (i, i).
  AffineMap<SparseMatrix<Scalar, StorageIndex>> map;
  map.matrix.resize(n, n);
  map.matrix.resizeNonZeros(n);
  map.bias.resize(n);
  StorageIndex* outer = map.matrix.outerIndexPtr();
  StorageIndex* inner = map.matrix.innerIndexPtr();
  Scalar* values = map.matrix.valuePtr();
  for (Index i = 0; i < n; ++i) {
    outer[i] = inner[i] = static_cast<StorageIndex>(i);
    values[i] = scale(i / spatial);
    map.bias(i) = shift(i / spatial);
  }
  outer[n] = static_cast<StorageIndex>(n);
  return map;
}

/// A convolution's flattened weights and per-channel bias.
template <class Scalar>
struct ConvParameters {
  detail::Vector<Scalar> weight, bias;
};

/// BatchNorm folded into the convolution before it: the weights and bias of
/// the one convolution equal to conv(x, w) + b followed by `bn`
/// (w'[oc, ...] = w[oc, ...] * scale[oc], b' = (b - mean) * scale + beta).
template <int Rank, class WeightDerived, class BiasDerived>
ConvParameters<typename WeightDerived::Scalar> fold_batch_norm(const ConvSpec<Rank>& spec,
                                                               const Eigen::MatrixBase<WeightDerived>& weight,
                                                               const Eigen::MatrixBase<BiasDerived>& bias,
                                                               const BatchNorm<typename WeightDerived::Scalar>& bn) {
  detail::require_same_scalar<WeightDerived, BiasDerived>();
  const auto w = detail::weight_view(weight, spec.weight_numel(), detail::conv_weight_layout);
  if (bias.size() != spec.out_channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements, but the layer has out_channels=", spec.out_channels);
  if (bn.channels() != spec.out_channels)
    detail::fail("batch norm has ", bn.channels(), " channels, but the convolution has out_channels=",
                 spec.out_channels);
  const auto scale = bn.scale();
  const Index per_channel = spec.weight_numel() / spec.out_channels;
  ConvParameters<typename WeightDerived::Scalar> folded{w, bias.derived().reshaped()};
  for (Index oc = 0; oc < spec.out_channels; ++oc)
    folded.weight.segment(oc * per_channel, per_channel) *= scale(oc);
  folded.bias = ((folded.bias - bn.mean).array() * scale.array() + bn.beta.array()).matrix();
  return folded;
}

/// BatchNorm folded into the transposed convolution before it (weights laid
/// out (in_channels, out_channels / groups, kernel...): the scale of output
/// channel oc multiplies every w[ic, oc mod (out_channels / groups), ...]
/// of oc's group).
template <int Rank, class WeightDerived, class BiasDerived>
ConvParameters<typename WeightDerived::Scalar> fold_batch_norm(const ConvTransposeSpec<Rank>& spec,
                                                               const Eigen::MatrixBase<WeightDerived>& weight,
                                                               const Eigen::MatrixBase<BiasDerived>& bias,
                                                               const BatchNorm<typename WeightDerived::Scalar>& bn) {
  detail::require_same_scalar<WeightDerived, BiasDerived>();
  const auto w = detail::weight_view(weight, spec.weight_numel(), detail::transpose_weight_layout);
  if (bias.size() != spec.out_channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements, but the layer has out_channels=", spec.out_channels);
  if (bn.channels() != spec.out_channels)
    detail::fail("batch norm has ", bn.channels(), " channels, but the transposed convolution has out_channels=",
                 spec.out_channels);
  const auto scale = bn.scale();
  const Index opg = spec.out_channels / spec.groups, ipg = spec.in_channels / spec.groups;
  const Index kn = spec.kernel_numel();
  ConvParameters<typename WeightDerived::Scalar> folded{w, bias.derived().reshaped()};
  for (Index ic = 0; ic < spec.in_channels; ++ic)
    for (Index j = 0; j < opg; ++j)
      folded.weight.segment((ic * opg + j) * kn, kn) *= scale(ic / ipg * opg + j);
  folded.bias = ((folded.bias - bn.mean).array() * scale.array() + bn.beta.array()).matrix();
  return folded;
}

}  // namespace convmat

// ---- convmat/operator.hpp ----------------------------------------------------
// T without the matrix: ConvOperator holds a layer's geometry, its weights
// and the taps of every output position (Geometry::taps_at, computed once;
// up to 64 MiB, else found per product by detail::forward / detail::adjoint)
// and multiplies with the direct convolution (T x) and its adjoint (T^T y,
// T^H y), so a layer whose dense matrix would not fit in memory can still
// be solved with. It follows Eigen's "matrix-free solvers" recipe, so
// Eigen::ConjugateGradient, Eigen::BiCGSTAB and
// Eigen::LeastSquaresConjugateGradient (from <Eigen/IterativeLinearSolvers>,
// with Eigen::IdentityPreconditioner) take it, or one of its two
// companions, directly:
//
//   - ConvOperator      T, with transpose() and adjoint()  (BiCGSTAB, LSCG)
//   - NormalOperator    T^H T + lambda I, self-adjoint     (ConjugateGradient)
//   - TikhonovOperator  [T; sqrt(lambda) I]                (LSCG with Tikhonov)
//
// A solver keeps a pointer to the operator it was given: keep the operator
// alive while the solver is used.

#include <memory>

namespace convmat {

template <class Scalar, int Rank>
class ConvOperator;
template <class Scalar, int Rank>
class NormalOperator;
template <class Scalar, int Rank>
class TikhonovOperator;

namespace detail {

/// What Eigen asks of a matrix-free operator — the typedefs, the flags and
/// a checked `operator*` — written once for the three operators. Derived
/// provides rows(), cols() and apply(x, y): y = A x for one contiguous
/// vector.
template <class Derived, class ScalarType>
class MatrixFreeBase : public Eigen::EigenBase<Derived> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;
  using StorageIndex = int;
  enum { ColsAtCompileTime = Eigen::Dynamic, MaxColsAtCompileTime = Eigen::Dynamic, IsRowMajor = false };

  /// The product with a vector or a matrix (one column per sample), as an
  /// Eigen expression: assign it to a vector or matrix to evaluate it. A
  /// right-hand side whose row count is not cols() is a spec_error.
  template <class Rhs>
  Eigen::Product<Derived, Rhs, Eigen::AliasFreeProduct> operator*(const Eigen::MatrixBase<Rhs>& x) const {
    const Derived& self = static_cast<const Derived&>(*this);
    if (x.rows() != self.cols())
      fail("operator product: the right-hand side has ", x.rows(), " rows (", x.rows(), " x ", x.cols(),
           "), but the operator is ", self.rows(), " x ", self.cols());
    return Eigen::Product<Derived, Rhs, Eigen::AliasFreeProduct>(self, x.derived());
  }
};

/// Whether the memory an Eigen expression with direct access spans
/// overlaps that of another: then writing one changes what the other reads.
template <class A, class B>
bool overlaps(const A& a, const B& b) {
  const auto extent = [](const auto& x) -> Index {
    if (x.size() == 0) return 0;
    return (x.outerSize() - 1) * x.outerStride() + (x.innerSize() - 1) * x.innerStride() + 1;
  };
  const auto* a_begin = reinterpret_cast<const char*>(a.data());
  const auto* b_begin = reinterpret_cast<const char*>(b.data());
  const auto* a_end = reinterpret_cast<const char*>(a.data() + extent(a));
  const auto* b_end = reinterpret_cast<const char*>(b.data() + extent(b));
  return a_begin < b_end && b_begin < a_end;
}

/// Whether every column of an expression of this type is one contiguous
/// array in memory at compile time (a vector, or column-major storage with
/// direct access); innerStride() == 1 is still to be checked at run time.
template <class Xpr>
inline constexpr bool has_contiguous_columns =
    (Eigen::internal::traits<Xpr>::Flags & Eigen::DirectAccessBit) != 0 &&
    (Xpr::ColsAtCompileTime == 1 || (Eigen::internal::traits<Xpr>::Flags & Eigen::RowMajorBit) == 0);

/// The products of a matrix-free operator with a dense vector or matrix,
/// every assignment form Eigen has (=, +=, -=, alpha * ...), through
/// Operator::apply_batch(x, x_stride, y, y_stride, batch). Correct whatever
/// the destination shares with the right-hand side: `x = op * x`,
/// `x.noalias() = op * x` and `X = op * X` read the right-hand side before
/// anything of the destination is written. (Eigen's AliasFreeProduct
/// promises no aliasing, and its default evalTo zeroes the destination
/// first: the documented matrix-free recipe returns zeros for x = op * x.)
template <class Operator>
struct MatrixFreeProduct {
  using Scalar = typename Operator::Scalar;

  /// Calls f(pointer, outer stride) with the right-hand side as contiguous
  /// columns: the expression itself when it is laid out so and shares no
  /// memory with `dst`, else a copy evaluated before dst is touched.
  template <class Dest, class Rhs, class F>
  static void with_columns(const Dest& dst, const Rhs& rhs, F&& f) {
    if constexpr (has_contiguous_columns<Rhs>) {
      bool direct = rhs.innerStride() == 1;
      if constexpr ((Eigen::internal::traits<Dest>::Flags & Eigen::DirectAccessBit) != 0)
        direct = direct && !overlaps(dst, rhs);
      else
        direct = false;  // a destination we cannot see into may alias: copy
      if (direct) return f(rhs.data(), rhs.cols() > 1 ? rhs.outerStride() : rhs.rows());
    }
    const Matrix<Scalar> copy = rhs;
    f(copy.data(), copy.rows());
  }

  /// dst = A * rhs.
  template <class Dest, class Rhs>
  static void eval_to(Dest& dst, const Operator& op, const Rhs& rhs) {
    bool into_dst = false;
    if constexpr (has_contiguous_columns<Dest>) into_dst = dst.innerStride() == 1;
    with_columns(dst, rhs, [&](const Scalar* x, Index x_stride) {
      if (into_dst) {
        if constexpr (has_contiguous_columns<Dest>)
          op.apply_batch(x, x_stride, dst.data(), dst.cols() > 1 ? dst.outerStride() : dst.rows(), rhs.cols());
      } else {
        Matrix<Scalar> y(op.rows(), rhs.cols());
        op.apply_batch(x, x_stride, y.data(), y.rows(), rhs.cols());
        dst = y;
      }
    });
  }

  /// dst += alpha * A * rhs.
  template <class Dest, class Rhs, class Alpha>
  static void scale_and_add(Dest& dst, const Operator& op, const Rhs& rhs, const Alpha& alpha) {
    Matrix<Scalar> y(op.rows(), rhs.cols());
    with_columns(dst, rhs, [&](const Scalar* x, Index x_stride) { op.apply_batch(x, x_stride, y.data(), y.rows(), rhs.cols()); });
    dst += alpha * y;
  }
};

/// y[:, j] = A x[:, j] for `batch` contiguous columns (strides between
/// columns x_stride and y_stride), one apply() per column: the batch
/// product of an operator whose apply() takes one sample.
template <class Operator, class Scalar>
void apply_each_column(const Operator& op, const Scalar* x, Index x_stride, Scalar* y, Index y_stride,
                       Index batch) {
  for (Index j = 0; j < batch; ++j) op.apply(x + j * x_stride, y + j * y_stride);
}

/// The most an operator spends on keeping every position's taps (beyond
/// it, products find them as they go, with detail::forward / adjoint).
inline constexpr std::size_t max_tap_table_bytes = std::size_t{64} << 20;

/// Whether a layer's taps fit in max_tap_table_bytes.
template <int Rank>
bool tap_table_fits(const Geometry<Rank>& g) {
  const auto most = static_cast<std::size_t>(g.output_spatial) * static_cast<std::size_t>(g.kernel_numel);
  return most <= max_tap_table_bytes / sizeof(Tap);
}

/// A layer's geometry, its tap table and its weights, shared by an
/// operator and its transposes. For complex scalars the conjugated weights
/// are kept too.
template <class Scalar, int Rank>
struct OperatorState {
  Geometry<Rank> geometry;
  TapLists<Rank> table;  // every position's taps, or none (see tap_table_fits)
  bool has_table = false;
  Vector<Scalar> weight;
  Vector<Scalar> conjugate_weight;  // empty for real scalars
};

}  // namespace detail

/// The matrix T of a layer, matrix-free: `op * x` is the layer (the direct
/// convolution of detail::forward), `op.transpose() * y` is T^T y and
/// `op.adjoint() * y` is T^H y (detail::adjoint; the same for real
/// scalars). rows() = output_numel, cols() = input_numel. Copies are cheap
/// and share the weights. Made by make_operator(spec, weight).
template <class ScalarType, int Rank>
class ConvOperator : public detail::MatrixFreeBase<ConvOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  /// An operator for the convolution `geometry` with `weight` laid out
  /// (out_channels, in_channels / groups, kernel...): T if `transposed` is
  /// false, T^T (T^H if also `conjugated`) if true. Prefer make_operator.
  ConvOperator(const detail::Geometry<Rank>& geometry, detail::Vector<Scalar> weight, bool transposed)
      : transposed_(transposed) {
    if (weight.size() != geometry.weight_numel())  // apply() reads weight_numel() of them
      detail::fail("ConvOperator: weight has ", weight.size(), " elements, but the geometry needs ",
                   geometry.weight_numel());
    auto state = std::make_shared<detail::OperatorState<Scalar, Rank>>();
    state->geometry = geometry;
    state->has_table = detail::tap_table_fits(geometry);
    if (state->has_table) state->table.assign(geometry, 0, geometry.output_spatial);
    state->weight = std::move(weight);
    if constexpr (Eigen::NumTraits<Scalar>::IsComplex) state->conjugate_weight = state->weight.conjugate();
    state_ = std::move(state);
  }

  /// Rows of the matrix: the size of the vector `op * x` returns.
  Index rows() const { return transposed_ ? state_->geometry.input_numel() : state_->geometry.output_numel(); }
  /// Columns of the matrix: the size of the vector `op * x` takes.
  Index cols() const { return transposed_ ? state_->geometry.output_numel() : state_->geometry.input_numel(); }

  /// T^T as an operator (the transposed layer; no matrix is built).
  ConvOperator transpose() const { return ConvOperator(state_, !transposed_, conjugated_); }
  /// T^H as an operator: the transpose with conjugated weights.
  ConvOperator adjoint() const {
    return ConvOperator(state_, !transposed_, Eigen::NumTraits<Scalar>::IsComplex && !conjugated_);
  }

  /// Y = op X for `batch` samples: column j of X starts at x + j *
  /// x_stride (cols() contiguous entries), of Y at y + j * y_stride (rows()
  /// entries, overwritten; no overlap with X). What `op * X` runs.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    detail::apply_each_column(*this, x, x_stride, y, y_stride, batch);
  }

  /// y = op x for one sample: x has cols() contiguous entries, y rows();
  /// y is overwritten and must not overlap x. The building block of
  /// `operator*`, for callers that manage their own buffers.
  void apply(const Scalar* x, Scalar* y) const {
    const auto& state = *state_;
    const auto& g = state.geometry;
    const Scalar* w = conjugated_ && !transposed_ ? state.conjugate_weight.data() : state.weight.data();
    const auto kept = [&](Index p) { return std::pair(state.table.begin(p), state.table.end(p)); };
    if (!transposed_)
      state.has_table ? detail::forward_over(g, kept, w, x, y) : detail::forward(g, w, x, y);
    else
      state.has_table ? detail::adjoint_over(g, kept, w, x, y, conjugated_)
                      : detail::adjoint(g, w, x, y, conjugated_);
  }

 private:
  ConvOperator(std::shared_ptr<const detail::OperatorState<Scalar, Rank>> state, bool transposed, bool conjugated)
      : state_(std::move(state)), transposed_(transposed), conjugated_(conjugated) {}

  std::shared_ptr<const detail::OperatorState<Scalar, Rank>> state_;
  bool transposed_ = false;   // apply the geometry's adjoint instead of the convolution
  bool conjugated_ = false;   // with conjugated weights
};

/// The layer `spec` with `weight` (flattened (out_channels, in_channels /
/// groups, kernel...)) as a matrix-free operator: `op * x == conv_matrix(spec,
/// weight) * x` without the matrix. The weights are copied into the operator.
template <int Rank, class Derived>
ConvOperator<typename Derived::Scalar, Rank> make_operator(const ConvSpec<Rank>& spec,
                                                           const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  return ConvOperator<typename Derived::Scalar, Rank>(g, w, false);
}

/// The transposed layer `spec` with `weight` (flattened (in_channels,
/// out_channels / groups, kernel...)) as a matrix-free operator:
/// `op * x == conv_transpose_matrix(spec, weight) * x`.
template <int Rank, class Derived>
ConvOperator<typename Derived::Scalar, Rank> make_operator(const ConvTransposeSpec<Rank>& spec,
                                                           const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);  // the convolution this layer is the adjoint of
  const auto w = detail::weight_view(weight, g.weight_numel(), "(in_channels, out_channels / groups, kernel...)");
  return ConvOperator<typename Derived::Scalar, Rank>(g, w, true);
}

/// The normal operator T^H T + lambda I of a ConvOperator T (cols() x
/// cols()): self-adjoint and positive semi-definite, positive definite for
/// lambda > 0 — what Eigen::ConjugateGradient<NormalOperator, Eigen::Lower |
/// Eigen::Upper, Eigen::IdentityPreconditioner> needs. Solving it with the
/// right-hand side T^H b gives the Tikhonov-regularised least-squares
/// solution argmin |T x - b|^2 + lambda |x|^2.
template <class ScalarType, int Rank>
class NormalOperator : public detail::MatrixFreeBase<NormalOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  NormalOperator(ConvOperator<Scalar, Rank> op, RealScalar lambda) : op_(std::move(op)), lambda_(lambda) {
    if (!(lambda >= RealScalar(0)))
      detail::fail("normal_operator: lambda must be non-negative, not ", lambda);
  }

  Index rows() const { return op_.cols(); }
  Index cols() const { return op_.cols(); }
  /// The operator is self-adjoint: its adjoint is itself.
  const NormalOperator& adjoint() const { return *this; }
  /// The regularisation weight lambda.
  RealScalar lambda() const { return lambda_; }
  /// The ConvOperator T it is the normal operator of.
  const ConvOperator<Scalar, Rank>& conv() const { return op_; }

  /// Y = (T^H T + lambda I) X for `batch` columns (see ConvOperator::apply_batch).
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    detail::apply_each_column(*this, x, x_stride, y, y_stride, batch);
  }

  /// y = (T^H T + lambda I) x for one contiguous vector (no overlap).
  void apply(const Scalar* x, Scalar* y) const {
    detail::Vector<Scalar> t(op_.rows());
    op_.apply(x, t.data());
    op_.adjoint().apply(t.data(), y);
    if (lambda_ != RealScalar(0))
      Eigen::Map<detail::Vector<Scalar>>(y, cols()) += lambda_ * Eigen::Map<const detail::Vector<Scalar>>(x, cols());
  }

 private:
  ConvOperator<Scalar, Rank> op_;
  RealScalar lambda_;
};

/// T^H T + lambda I for Eigen::ConjugateGradient (see NormalOperator).
template <class Scalar, int Rank>
NormalOperator<Scalar, Rank> normal_operator(const ConvOperator<Scalar, Rank>& op,
                                             typename Eigen::NumTraits<Scalar>::Real lambda = 0) {
  return NormalOperator<Scalar, Rank>(op, lambda);
}

/// The stacked operator A = [T; sqrt(lambda) I] ((rows + cols) x cols) of a
/// ConvOperator T, or its transpose / adjoint [T^T, sqrt(lambda) I]: least
/// squares on it, |A x - [b; 0]|^2 = |T x - b|^2 + lambda |x|^2, is
/// Tikhonov regularisation, so Eigen::LeastSquaresConjugateGradient<
/// TikhonovOperator, Eigen::IdentityPreconditioner> solves the regularised
/// problem from the right-hand side rhs(b) = [b; 0].
template <class ScalarType, int Rank>
class TikhonovOperator : public detail::MatrixFreeBase<TikhonovOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  TikhonovOperator(ConvOperator<Scalar, Rank> op, RealScalar lambda)
      : TikhonovOperator(std::move(op), RealScalar(0), true) {
    if (!(lambda >= RealScalar(0)))
      detail::fail("tikhonov_operator: lambda must be non-negative, not ", lambda);
    scale_ = std::sqrt(lambda);
  }

  Index rows() const { return stacked_ ? op_.rows() + op_.cols() : op_.rows(); }
  Index cols() const { return stacked_ ? op_.cols() : op_.rows() + op_.cols(); }

  /// [T^T, sqrt(lambda) I] (or back).
  TikhonovOperator transpose() const { return TikhonovOperator(op_.transpose(), scale_, !stacked_); }
  /// [T^H, sqrt(lambda) I] (or back).
  TikhonovOperator adjoint() const { return TikhonovOperator(op_.adjoint(), scale_, !stacked_); }

  /// The right-hand side [b; 0] of the stacked problem, for b of T's rows.
  template <class Derived>
  detail::Vector<Scalar> rhs(const Eigen::MatrixBase<Derived>& b) const {
    if (!stacked_) detail::fail("TikhonovOperator::rhs: call it on the stacked operator [T; sqrt(lambda) I]");
    if (b.size() != op_.rows() || (b.rows() != 1 && b.cols() != 1))
      detail::fail("TikhonovOperator::rhs: b has ", b.rows(), " x ", b.cols(), " entries, but T has ",
                   op_.rows(), " rows");
    detail::Vector<Scalar> stacked = detail::Vector<Scalar>::Zero(rows());
    stacked.head(op_.rows()) = b.reshaped();
    return stacked;
  }

  /// Y = A X for `batch` columns (see ConvOperator::apply_batch).
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    detail::apply_each_column(*this, x, x_stride, y, y_stride, batch);
  }

  /// y = A x for one contiguous vector (no overlap).
  void apply(const Scalar* x, Scalar* y) const {
    using Map = Eigen::Map<detail::Vector<Scalar>>;
    using ConstMap = Eigen::Map<const detail::Vector<Scalar>>;
    op_.apply(x, y);
    if (stacked_)  // [T x; s x]
      Map(y + op_.rows(), op_.cols()) = scale_ * ConstMap(x, op_.cols());
    else  // T' x_top + s x_bottom
      Map(y, op_.rows()) += scale_ * ConstMap(x + op_.cols(), op_.rows());
  }

 private:
  TikhonovOperator(ConvOperator<Scalar, Rank> op, RealScalar scale, bool stacked)
      : op_(std::move(op)), scale_(scale), stacked_(stacked) {}

  ConvOperator<Scalar, Rank> op_;  // T when stacked, else T^T or T^H
  RealScalar scale_;               // sqrt(lambda)
  bool stacked_;
};

/// [T; sqrt(lambda) I] for Eigen::LeastSquaresConjugateGradient (see TikhonovOperator).
template <class Scalar, int Rank>
TikhonovOperator<Scalar, Rank> tikhonov_operator(const ConvOperator<Scalar, Rank>& op,
                                                 typename Eigen::NumTraits<Scalar>::Real lambda) {
  return TikhonovOperator<Scalar, Rank>(op, lambda);
}

}  // namespace convmat

// Eigen's side of the recipe: the operators are "sparse" for Eigen's
// expression machinery, and their product with a dense vector or matrix is
// evaluated through apply().
namespace Eigen::internal {

template <class Scalar, int Rank>
struct traits<convmat::ConvOperator<Scalar, Rank>> : traits<Eigen::SparseMatrix<Scalar>> {};
template <class Scalar, int Rank>
struct traits<convmat::NormalOperator<Scalar, Rank>> : traits<Eigen::SparseMatrix<Scalar>> {};
template <class Scalar, int Rank>
struct traits<convmat::TikhonovOperator<Scalar, Rank>> : traits<Eigen::SparseMatrix<Scalar>> {};

#define CONVMAT_MATRIX_FREE_PRODUCT(Operator)                                                              \
  template <class Scalar, int Rank, class Rhs, int ProductType>                                            \
  struct generic_product_impl<Operator<Scalar, Rank>, Rhs, SparseShape, DenseShape, ProductType>           \
      : generic_product_impl_base<Operator<Scalar, Rank>, Rhs,                                             \
                                  generic_product_impl<Operator<Scalar, Rank>, Rhs, SparseShape,           \
                                                       DenseShape, ProductType>> {                         \
    using Impl = convmat::detail::MatrixFreeProduct<Operator<Scalar, Rank>>;                               \
    template <class Dest>                                                                                  \
    static void evalTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs) {                     \
      Impl::eval_to(dst, lhs, rhs);                                                                        \
    }                                                                                                      \
    template <class Dest>                                                                                  \
    static void addTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs) {                      \
      Impl::scale_and_add(dst, lhs, rhs, Scalar(1));                                                       \
    }                                                                                                      \
    template <class Dest>                                                                                  \
    static void subTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs) {                      \
      Impl::scale_and_add(dst, lhs, rhs, Scalar(-1));                                                      \
    }                                                                                                      \
    template <class Dest>                                                                                  \
    static void scaleAndAddTo(Dest& dst, const Operator<Scalar, Rank>& lhs, const Rhs& rhs,                \
                              const typename Product<Operator<Scalar, Rank>, Rhs>::Scalar& alpha) {        \
      Impl::scale_and_add(dst, lhs, rhs, alpha);                                                           \
    }                                                                                                      \
  };

CONVMAT_MATRIX_FREE_PRODUCT(convmat::ConvOperator)
CONVMAT_MATRIX_FREE_PRODUCT(convmat::NormalOperator)
CONVMAT_MATRIX_FREE_PRODUCT(convmat::TikhonovOperator)
#undef CONVMAT_MATRIX_FREE_PRODUCT

}  // namespace Eigen::internal

// ---- convmat/size.hpp --------------------------------------------------------
// What a layer's matrix will cost, known before anything is built.

namespace convmat {

/// The shape and storage of a layer's matrix.
struct MatrixSize {
  Index rows = 0, cols = 0;
  Index nonzeros = 0;             ///< structural non-zeros of the sparse form
  std::size_t dense_bytes = 0;    ///< rows * cols * sizeof(Scalar); SIZE_MAX if it overflows
  std::size_t sparse_bytes = 0;   ///< values, column indices and row offsets of the CSR form
};

/// The exact number of entries conv_matrix_sparse stores for this layer
/// (the same for its transposed layer), computed per axis in
/// O(sum of output * kernel sizes).
template <class Spec>
Index conv_matrix_nonzeros(const Spec& spec) {
  const auto g = detail::geometry(spec);
  return g.nonzeros_between(0, g.output_numel());
}

/// Rows, columns, non-zeros and the bytes of the dense and sparse forms of
/// the layer's matrix with the given Scalar and sparse StorageIndex.
template <class Scalar = float, class StorageIndex = int, class Spec>
MatrixSize matrix_size(const Spec& spec) {
  constexpr auto max = std::numeric_limits<std::size_t>::max();
  const auto mul = [](std::size_t a, std::size_t b) { return a != 0 && b > max / a ? max : a * b; };
  const auto add = [](std::size_t a, std::size_t b) { return b > max - a ? max : a + b; };
  MatrixSize s;
  s.rows = spec.output_numel();
  s.cols = spec.input_numel();
  s.nonzeros = conv_matrix_nonzeros(spec);
  const auto rows = static_cast<std::size_t>(s.rows), cols = static_cast<std::size_t>(s.cols),
             nnz = static_cast<std::size_t>(s.nonzeros);
  s.dense_bytes = mul(mul(rows, cols), sizeof(Scalar));
  s.sparse_bytes = add(mul(nnz, sizeof(Scalar) + sizeof(StorageIndex)), mul(rows + 1, sizeof(StorageIndex)));
  return s;
}

}  // namespace convmat

// ---- convmat/spectral.hpp ----------------------------------------------------
// Singular values of T. spectral_norm: the largest, by power iteration on
// the matrix-free operator, for any layer. singular_values: all of them —
// exactly and fast through the FFT when T is block-circulant (circular
// padding, stride 1, output size equal to input size: per frequency, the
// singular values of one small C_out x C_in matrix, after Sedghi, Gupta and
// Long, "The Singular Values of Convolutional Layers", ICLR 2019), and
// through an SVD of the dense matrix otherwise.
//
// The SVD (of the dense matrix, and of each frequency's small matrix) is
// Householder bidiagonalisation followed by the eigenvalues of the
// Golub-Kahan tridiagonal matrix by symmetric QR, LAPACK's way without
// vectors. Not Eigen's BDCSVD: convolution matrices have highly repeated
// singular values (every symmetry of the layer repeats them), and there
// Eigen 3.4.0's BDCSVD returns wrong values — for the circular 1-channel
// layer input (5, 7), kernel (1, 3), dilation (3, 1), padding (0, 1),
// weights (0.3, -0.7, 0.2), off by 0.11 where the largest is 1.15
// (tests/test_spectral.cpp keeps that case). Not JacobiSVD either: right,
// but 250 times slower at 1024 x 1024.

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <unsupported/Eigen/FFT>
#include <complex>
#include <functional>
#include <random>

namespace convmat {

/// How spectral_norm iterates.
struct SpectralNormOptions {
  /// Stop when |T^H T v - mu v| <= tolerance * mu for the unit vector v and
  /// its Rayleigh quotient mu = |T v|^2 (mu is then accurate to about
  /// tolerance^2), or when mu has stalled: it grew by at most tolerance^2 *
  /// mu in one step (close singular values slow the vector down long after
  /// the value has settled). 0 (the default) means sqrt(epsilon) of the
  /// scalar's real type: 1.5e-8 for double, 3.5e-4 for float.
  double tolerance = 0;
  /// The most products with T^H T before giving up (converged = false).
  Index max_iterations = 1000;
  /// Seed of the random start vector; the result is deterministic.
  std::uint64_t seed = 2019;
};

/// What spectral_norm found.
template <class Real>
struct SpectralNorm {
  Real value = 0;          ///< the estimate of the largest singular value (never above it, up to rounding)
  bool converged = false;  ///< whether the tolerance was met within max_iterations
  Index iterations = 0;    ///< products with T^H T performed
};

namespace detail {

template <class Scalar>
void fill_random(Vector<Scalar>& v, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  for (Index i = 0; i < v.size(); ++i) {
    if constexpr (Eigen::NumTraits<Scalar>::IsComplex)
      v(i) = Scalar(normal(rng), normal(rng));
    else
      v(i) = static_cast<Scalar>(normal(rng));
  }
}

/// Power iteration on T^H T for any ConvOperator.
template <class Scalar, int Rank>
SpectralNorm<typename Eigen::NumTraits<Scalar>::Real> power_iteration(const ConvOperator<Scalar, Rank>& op,
                                                                      const SpectralNormOptions& options) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  if (!(options.tolerance >= 0) || options.max_iterations < 1)
    fail("spectral_norm: tolerance must be non-negative and max_iterations positive: tolerance=",
         options.tolerance, ", max_iterations=", options.max_iterations);
  const Real tolerance = options.tolerance > 0 ? static_cast<Real>(options.tolerance)
                                               : std::sqrt(Eigen::NumTraits<Real>::epsilon());
  const auto adjoint = op.adjoint();
  Vector<Scalar> v(op.cols()), u(op.rows()), z(op.cols());
  fill_random(v, options.seed);
  v.normalize();
  SpectralNorm<Real> result;
  Real previous = -1;
  while (result.iterations < options.max_iterations) {
    ++result.iterations;
    op.apply(v.data(), u.data());
    adjoint.apply(u.data(), z.data());
    const Real mu = u.squaredNorm();  // Rayleigh quotient v^H T^H T v
    result.value = std::sqrt(mu);
    const Real z_norm = z.norm();
    if (z_norm == Real(0) ||  // T v = 0: T is zero (a random v is in no smaller null space)
        (z - mu * v).norm() <= tolerance * mu || std::abs(mu - previous) <= tolerance * tolerance * mu) {
      result.converged = true;
      break;
    }
    previous = mu;
    v = z / z_norm;
  }
  return result;
}

/// All singular values of `a`, descending: Householder bidiagonalisation
/// B = U^H a V, then the eigenvalues +-sigma of the Golub-Kahan tridiagonal
/// matrix [0 B; B^T 0] (zero diagonal; d0, e0, d1, e1, ... beside it) by
/// symmetric QR. Each is accurate to about epsilon * sigma_max, repeated
/// or not; O(m n^2) for the bidiagonalisation, O(n^2) after it.
template <class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> svd_values(Matrix<Scalar> a) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  if (a.rows() < a.cols()) a = a.adjoint().eval();  // the same singular values, tall
  const Index n = a.cols();
  if (n == 0) return Vector<Real>();
  const Eigen::internal::UpperBidiagonalization<Matrix<Scalar>> bidiagonalisation(a);
  auto b = bidiagonalisation.bidiagonal();  // real, upper bidiagonal (a copy: 2n numbers)
  // The QR iteration runs in at least double precision: in float it can
  // stall on the zero diagonal of large Golub-Kahan matrices.
  using Work = std::common_type_t<Real, double>;
  const Vector<Work> diagonal = Vector<Work>::Zero(2 * n);
  Vector<Work> beside(2 * n - 1);
  for (Index i = 0; i < n; ++i) {
    beside(2 * i) = static_cast<Work>(b.template diagonal<0>()(i));
    if (i + 1 < n) beside(2 * i + 1) = static_cast<Work>(b.template diagonal<1>()(i));
  }
  Eigen::SelfAdjointEigenSolver<Matrix<Work>> eigen;
  eigen.computeFromTridiagonal(diagonal, beside, Eigen::EigenvaluesOnly);
  if (eigen.info() != Eigen::Success)
    fail("singular_values: the symmetric QR iteration did not converge on a ", a.rows(), " x ", n, " matrix");
  // Ascending +-sigma: the top n, descending.
  return eigen.eigenvalues().tail(n).reverse().cwiseMax(Work(0)).template cast<Real>();
}

/// Whether the convolution `g` is block-circulant: circular padding,
/// stride 1 and output size equal to input size in every axis. Then output
/// o reads input (o + s_k) mod N through tap k, with s_k what output 0 reads.
template <int Rank>
bool block_circulant(const Geometry<Rank>& g, const ConvSpec<Rank>& spec) {
  if (g.mode != PaddingMode::circular) return false;
  for (int d = 0; d < Rank; ++d)
    if (spec.stride[d] != 1 || g.output_size[d] != g.input_size[d]) return false;
  return true;
}

/// The multi-dimensional DFT of `data` (C-order, extents `sizes`) in
/// place, one axis after the other, with Eigen's FFT.
template <int Rank, class Real>
void fft_in_place(std::complex<Real>* data, const std::array<Index, Rank>& sizes, Eigen::FFT<Real>& fft,
                  std::vector<std::complex<Real>>& in, std::vector<std::complex<Real>>& out) {
  Index stride = 1, total = 1;
  for (Index s : sizes) total *= s;
  for (int d = Rank - 1; d >= 0; --d) {
    const Index n = sizes[d];
    if (n > 1) {
      in.resize(static_cast<std::size_t>(n));
      out.resize(static_cast<std::size_t>(n));
      // Lines along axis d start at every index whose coordinate d is 0.
      for (Index outer = 0; outer < total; outer += n * stride)
        for (Index inner = 0; inner < stride; ++inner) {
          std::complex<Real>* line = data + outer + inner;
          for (Index i = 0; i < n; ++i) in[static_cast<std::size_t>(i)] = line[i * stride];
          fft.fwd(out.data(), in.data(), n);
          for (Index i = 0; i < n; ++i) line[i * stride] = out[static_cast<std::size_t>(i)];
        }
    }
    stride *= n;
  }
}

/// All singular values of a block-circulant convolution, unsorted: for
/// every group and frequency f, those of the (C_out / groups) x (C_in /
/// groups) matrix M_f[a, b] = DFT of the (a, b) kernel, wrapped onto the
/// input grid at the shifts the geometry gives output 0, at f.
template <int Rank, class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> circulant_singular_values(const Geometry<Rank>& g, const Scalar* w) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  using Complex = std::complex<Real>;
  // The small matrices are decomposed in at least double precision: cheap
  // at their size, and it keeps float layers off Eigen's complex<float>
  // SSE paths, which load a complex<float> as a double (UBSan: misaligned).
  using Work = std::common_type_t<Real, double>;
  using WorkMatrix = Eigen::Matrix<std::complex<Work>, Eigen::Dynamic, Eigen::Dynamic>;
  const Index n = g.input_spatial, cog = g.out_per_group(), cig = g.in_per_group(), kn = g.kernel_numel;
  const Index pairs = g.out_channels * cig;
  const Index per_frequency = std::min(cog, cig);
  const Index count = checked_mul(checked_mul(n, g.groups, "singular value count"), per_frequency,
                                  "singular value count");

  // The spectrum of every (output channel, input channel of its group) pair.
  std::vector<Tap> taps;
  g.taps_at(0, taps);  // (offset of output 0's input, tap): the shifts
  std::vector<Complex> spectra(static_cast<std::size_t>(checked_mul(pairs, n, "spectra size")));
  parallel_chunks(0, pairs, 16, [&](Index begin, Index end) {
    Eigen::FFT<Real> fft;
    std::vector<Complex> in, out;
    for (Index pair = begin; pair < end; ++pair) {
      Complex* h = spectra.data() + pair * n;
      const Scalar* w_pair = w + pair * kn;
      for (const Tap& t : taps) h[t.offset] += Complex(w_pair[t.tap]);
      fft_in_place<Rank>(h, g.input_size, fft, in, out);
    }
  });

  // Per group and frequency, the singular values of the small matrix.
  Vector<Real> values(count);
  const Index blocks = g.groups * n;  // block b: group b / n, frequency b % n
  parallel_chunks(0, blocks, 64, [&](Index begin, Index end) {
    WorkMatrix m(cog, cig);
    for (Index b = begin; b < end; ++b) {
      const Index group = b / n, f = b % n;
      for (Index a = 0; a < cog; ++a)
        for (Index c = 0; c < cig; ++c)
          m(a, c) = std::complex<Work>(spectra[static_cast<std::size_t>(((group * cog + a) * cig + c) * n + f)]);
      values.segment(b * per_frequency, per_frequency) = svd_values(m).template cast<Real>();
    }
  });
  return values;
}

/// All singular values of the geometry's matrix, descending, by svd_values
/// of the dense matrix (built column-major). Respects max_dense_bytes().
template <int Rank, class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> dense_singular_values(const Geometry<Rank>& g, const Scalar* w) {
  const Index rows = g.output_numel(), cols = g.input_numel();
  check_dense_size(rows, cols, sizeof(Scalar), "the dense matrix for singular_values");
  Matrix<Scalar> t = Matrix<Scalar>::Zero(rows, cols);
  fill_dense(g, w, 0, rows, t.data(), 1, rows, false);
  return svd_values(std::move(t));
}

template <class Real>
Vector<Real> sorted_descending(Vector<Real> values) {
  std::sort(values.data(), values.data() + values.size(), std::greater<Real>());
  return values;
}

}  // namespace detail

/// Whether singular_values(spec, weight) takes the exact FFT path: circular
/// padding, stride 1 and output_size() == input_size in every dimension
/// (any kernel, dilation, padding split, channels and groups).
template <int Rank>
bool is_block_circulant(const ConvSpec<Rank>& spec) {
  return detail::block_circulant(detail::geometry(spec), spec);
}

/// The largest singular value of the layer's matrix T (its spectral norm,
/// the layer's Lipschitz constant in the 2-norm) by power iteration on
/// T^H T with the matrix-free operator: any spec, any size.
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, const SpectralNormOptions& options = {}) {
  return detail::power_iteration(make_operator(spec, weight), options);
}

/// The largest singular value of a transposed layer's matrix (the same as
/// that of the convolution it is the adjoint of).
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight,
    const SpectralNormOptions& options = {}) {
  return detail::power_iteration(make_operator(spec, weight), options);
}

/// All singular values of the layer's matrix T, descending: min(output_numel,
/// input_numel) of them, as a vector of the weights' real type. When
/// is_block_circulant(spec), exactly through the FFT in O(C_out C_in N log N
/// + N groups (C/groups)^3) for N spatial positions; otherwise by an SVD of
/// the dense matrix (O(m n^2)), which max_dense_bytes() guards
/// (spec_error if too large).
template <int Rank, class Derived>
detail::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  if (detail::block_circulant(g, spec))
    return detail::sorted_descending(detail::circulant_singular_values(g, w.data()));
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

/// All singular values of a transposed layer's matrix, descending: those of
/// the convolution it is the adjoint of, by an SVD of the dense matrix.
template <int Rank, class Derived>
detail::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

}  // namespace convmat

// ---- convmat/unfold.hpp ------------------------------------------------------
// unfold (im2col) and fold (col2im) with torch.nn.functional.unfold's
// layout, for any rank and every padding mode, and the convolution as
// unfold followed by one matrix product per group.

namespace convmat {
namespace detail {

inline constexpr const char* unfold_hint =
    "use convolve() or the sparse matrix instead, or raise the limit with set_max_dense_bytes()";

/// Walks rows [row_begin, row_end) of the unfold matrix (rows (channel,
/// tap), columns output positions) in order; in each row, the columns of
/// outer positions [outer_begin, outer_end) — an outer position is one
/// multi-index of every output axis but the last — one segment of O_last
/// columns each. For each segment it calls f(row, column, base, sources,
/// interior): the segment holds columns [column, column + O_last), counted
/// from outer_begin's first column; element j reads input[base +
/// sources[j]] (sources[j] < 0: padding zero); base < 0 means the whole
/// segment reads padding zeros. `interior` is the last axis's AxisRun for
/// the row's tap: elements [begin, end) read input[base + first + (j -
/// begin) * step], with no padding in between.
template <int Rank, class F>
void for_each_unfold_segment(const Geometry<Rank>& g, Index row_begin, Index row_end, Index outer_begin,
                             Index outer_end, F&& f) {
  constexpr int last = Rank - 1;
  const Index segment = g.output_size[last];
  std::array<Index, Rank> first_outer{};  // multi-index of outer_begin (last axis unused)
  for (Index outer = outer_begin, d = last - 1; d >= 0; --d) {
    first_outer[d] = outer % g.output_size[d];
    outer /= g.output_size[d];
  }
  for (Index row = row_begin; row < row_end; ++row) {
    const Index channel = row / g.kernel_numel;
    std::array<Index, Rank> k{};  // tap multi-index
    for (Index tap = row % g.kernel_numel, d = last; d >= 0; --d) {
      k[d] = tap % g.kernel_size[d];
      tap /= g.kernel_size[d];
    }
    const Index* sources = g.axes[last].sources_of_tap(k[last]);
    const AxisRun& interior = g.axes[last].interior(k[last]);
    std::array<Index, Rank> o = first_outer;
    for (Index outer = outer_begin; outer < outer_end; ++outer) {
      Index base = channel * g.input_spatial;
      for (int d = 0; d < last && base >= 0; ++d) {
        const Index s = g.axes[d].source(o[d], k[d]);
        base = s < 0 ? -1 : base + s * g.input_strides[d];
      }
      f(row, (outer - outer_begin) * segment, base, sources, interior);
      for (int d = last - 1; d >= 0; --d) {  // next outer position
        if (++o[d] < g.output_size[d]) break;
        o[d] = 0;
      }
    }
  }
}

/// The number of outer positions of the unfold matrix (output_spatial / O_last).
template <int Rank>
Index unfold_outer_count(const Geometry<Rank>& g) {
  return g.output_spatial / g.output_size[Rank - 1];
}

/// Rows [row_begin, row_end) and outer positions [outer_begin, outer_end)
/// of the unfold matrix of one sample into `out`, row-major with `width`
/// elements per row (row row_begin first). Within a segment the interior
/// is one contiguous (or strided) copy; only the borders look at the
/// per-element sources.
template <int Rank, class Scalar>
void unfold_block_into(const Geometry<Rank>& g, const Scalar* x, Index row_begin, Index row_end,
                       Index outer_begin, Index outer_end, Scalar* out, Index width) {
  const Index segment = g.output_size[Rank - 1];
  const auto copy_segment = [&](Index row, Index column, Index base, const Index* sources,
                                const AxisRun& interior) {
    Scalar* to = out + (row - row_begin) * width + column;
    if (base < 0) {
      std::fill(to, to + segment, Scalar(0));
      return;
    }
    const Scalar* in = x + base;
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j) to[j] = sources[j] < 0 ? Scalar(0) : in[sources[j]];
    };
    by_source(0, interior.begin);
    const Scalar* run = in + interior.first;
    if (interior.step == 1)
      std::copy(run, run + (interior.end - interior.begin), to + interior.begin);
    else
      for (Index j = interior.begin; j < interior.end; ++j) to[j] = run[(j - interior.begin) * interior.step];
    by_source(std::max(interior.begin, interior.end), segment);
  };
  for_each_unfold_segment(g, row_begin, row_end, outer_begin, outer_end, copy_segment);
}

/// The number of unfold rows one thread should at least take: enough for
/// the split to pay for itself (about 32 Ki elements).
template <int Rank>
Index unfold_grain(const Geometry<Rank>& g) {
  return std::max<Index>(1, (Index{1} << 15) / std::max<Index>(g.output_spatial, 1));
}

/// The unfold matrix of one sample into `columns` (row-major, rows x cols
/// as unfold()), rows split over threads when OpenMP is on.
template <int Rank, class Scalar>
void unfold_into(const Geometry<Rank>& g, const Scalar* x, Scalar* columns) {
  parallel_chunks(0, g.in_channels * g.kernel_numel, unfold_grain(g), [&](Index begin, Index end) {
    unfold_block_into(g, x, begin, end, 0, unfold_outer_count(g), columns + begin * g.output_spatial,
                      g.output_spatial);
  });
}

/// How many outer positions convolve_unfold unfolds and multiplies at a
/// time: about 512 columns, so the block of the unfold matrix stays in
/// the cache between being written and being read by the product, and the
/// products are still wide enough to run at full speed.
template <int Rank>
Index convolve_block_outer(const Geometry<Rank>& g) {
  const Index segment = g.output_size[Rank - 1];
  return std::max<Index>(1, (512 + segment / 2) / segment);
}

/// fold: the adjoint of unfold_into; x is overwritten. The rows of one
/// channel add into that channel's inputs only, so with OpenMP whole
/// channels are split over threads.
template <int Rank, class Scalar>
void fold_into(const Geometry<Rank>& g, const Scalar* columns, Scalar* x) {
  const Index segment = g.output_size[Rank - 1], width = g.output_spatial;
  const auto add_segment = [&](Index row, Index column, Index base, const Index* sources,
                               const AxisRun& interior) {
    if (base < 0) return;
    const Scalar* from = columns + row * width + column;
    Scalar* to = x + base;
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j)
        if (sources[j] >= 0) to[sources[j]] += from[j];
    };
    by_source(0, interior.begin);
    Scalar* run = to + interior.first;
    for (Index j = interior.begin; j < interior.end; ++j) run[(j - interior.begin) * interior.step] += from[j];
    by_source(std::max(interior.begin, interior.end), segment);
  };
  const Index kn = g.kernel_numel;
  parallel_chunks(0, g.in_channels, std::max<Index>(1, unfold_grain(g) / kn), [&](Index begin, Index end) {
    std::fill(x + begin * g.input_spatial, x + end * g.input_spatial, Scalar(0));
    for_each_unfold_segment(g, begin * kn, end * kn, 0, unfold_outer_count(g), add_segment);
  });
}

}  // namespace detail

/// The unfold (im2col) matrix of one sample `input` (input_numel values):
/// (in_channels * prod(kernel_size)) x prod(output_size), rows ordered
/// (channel, k0, k1, ...), columns by output position, as
/// torch.nn.functional.unfold — for any rank and, beyond PyTorch, every
/// padding mode (an entry reads what the padded input holds there).
template <int Rank, class Derived>
detail::RowMajorMatrix<typename Derived::Scalar> unfold(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<Derived>& input) {
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("unfold takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial,
                           sizeof(typename Derived::Scalar), "the unfold matrix", detail::unfold_hint);
  detail::RowMajorMatrix<typename Derived::Scalar> columns(
      detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial);
  detail::unfold_into(g, x.data(), columns.data());
  return columns;
}

/// The adjoint of unfold: sums each column's entries back into the input
/// positions they were read from (torch.nn.functional.fold). Returns a
/// vector of input_numel values.
template <int Rank, class Derived>
detail::Vector<typename Derived::Scalar> fold(const ConvSpec<Rank>& spec,
                                              const Eigen::MatrixBase<Derived>& columns) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const Index rows = detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows");
  if (columns.rows() != rows || columns.cols() != g.output_spatial)
    detail::fail("fold needs a ", rows, " x ", g.output_spatial,
                 " matrix (in_channels * prod(kernel_size) x prod(output_size)), not ", columns.rows(),
                 " x ", columns.cols());
  detail::check_dense_size(g.input_numel(), 1, sizeof(Scalar), "the folded vector", detail::unfold_hint);
  const detail::RowMajorMatrix<Scalar> c = columns;  // row-major, as unfold() returns
  detail::Vector<Scalar> x(g.input_numel());
  detail::fold_into(g, c.data(), x.data());
  return x;
}

/// The convolution of every column of `input` through unfold and one
/// matrix product per group: the same result as convolve(), by another
/// road. The unfold matrix is never held whole: it is built and multiplied
/// a block of about 512 columns at a time, while the block is in the
/// cache; with OpenMP the blocks are shared among the threads.
template <int Rank, class WeightDerived, class InputDerived>
detail::Matrix<typename WeightDerived::Scalar> convolve_unfold(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  detail::require_same_scalar<WeightDerived, InputDerived>();
  using Scalar = typename WeightDerived::Scalar;
  using ConstRowMajorMap = Eigen::Map<const detail::RowMajorMatrix<Scalar>>;
  using BlockMap = Eigen::Map<detail::RowMajorMatrix<Scalar>, 0, Eigen::OuterStride<>>;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  const Index rows = detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows");
  const Index group_rows = g.in_per_group() * g.kernel_numel, cog = g.out_per_group();
  const Index segment = g.output_size[Rank - 1], outer_count = detail::unfold_outer_count(g);
  const Index block_outer = std::min(detail::convolve_block_outer(g), outer_count);
  const Index blocks = (outer_count + block_outer - 1) / block_outer;
  detail::check_dense_size(rows, detail::checked_mul(block_outer, segment, "unfold block columns"), sizeof(Scalar),
                           "the unfold buffer", detail::unfold_hint);
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::unfold_hint);
  detail::Matrix<Scalar> y(g.output_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) {
    const Scalar* x_sample = x.col(s).data();
    Scalar* y_sample = y.col(s).data();
    detail::parallel_chunks(0, blocks, 1, [&](Index block_begin, Index block_end) {
      detail::RowMajorMatrix<Scalar> columns(rows, block_outer * segment);
      for (Index block = block_begin; block < block_end; ++block) {
        const Index outer_begin = block * block_outer;
        const Index outer_end = std::min(outer_begin + block_outer, outer_count);
        const Index width = (outer_end - outer_begin) * segment;
        detail::unfold_block_into(g, x_sample, 0, rows, outer_begin, outer_end, columns.data(), width);
        const ConstRowMajorMap block_columns(columns.data(), rows, width);
        for (Index group = 0; group < g.groups; ++group) {
          const ConstRowMajorMap w_group(w.data() + group * cog * group_rows, cog, group_rows);
          BlockMap y_block(y_sample + group * cog * g.output_spatial + outer_begin * segment, cog, width,
                           Eigen::OuterStride<>(g.output_spatial));
          y_block.noalias() = w_group * block_columns.middleRows(group * group_rows, group_rows);
        }
      }
    });
  }
  return y;
}

}  // namespace convmat
