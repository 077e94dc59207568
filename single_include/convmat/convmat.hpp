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
//
// CONVMAT_THROW_CONVERGENCE(message) reports an iteration (the Lanczos
// singular values) that did not reach its tolerance where the caller asked
// for the values alone. By default it throws convmat::convergence_error;
// where CONVMAT_THROW is user-defined it calls that instead.
#if !defined(CONVMAT_THROW_MEMORY) && defined(CONVMAT_THROW)
#define CONVMAT_THROW_MEMORY(message) CONVMAT_THROW(message)
#endif
#if !defined(CONVMAT_THROW_CONVERGENCE) && defined(CONVMAT_THROW)
#define CONVMAT_THROW_CONVERGENCE(message) CONVMAT_THROW(message)
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
#ifndef CONVMAT_THROW_CONVERGENCE
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CONVMAT_THROW_CONVERGENCE(message) throw ::convmat::convergence_error(message)
#else
#define CONVMAT_THROW_CONVERGENCE(message) CONVMAT_THROW(message)
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
namespace convmat {

/// The Eigen types public functions return: a column vector, a column-major
/// matrix (batches: one column per sample) and the row-major dense T.
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace convmat

namespace convmat::detail {

using convmat::Matrix;
using convmat::RowMajorMatrix;
using convmat::Vector;

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

/// static_assert(detail::same_scalar<A, B>::value) as a public function's
/// first statement: the class is instantiated there and then,
/// so that this message is the first error, before any overload
/// resolution in the function's body fails on the mixed types.
template <class A, class B>
struct same_scalar {
  static_assert(std::is_same_v<typename A::Scalar, typename B::Scalar>,
                "convmat: weights and inputs must have the same Scalar type (float weights with double inputs, "
                "or the reverse); cast one with .cast<T>()");
  static constexpr bool value = std::is_same_v<typename A::Scalar, typename B::Scalar>;
};

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

// ---- convmat/spec.hpp --------------------------------------------------------
// The shape of a layer: ConvSpec (PyTorch's Conv{1,2,3}d and any higher
// rank) and ConvTransposeSpec (ConvTranspose{1,2,3}d). Plain aggregates
// whose defaults are PyTorch's; every entry point validates them.

#include <optional>
#include <ostream>
#include <string_view>
#include <tuple>

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

/// Which side takes the odd element when a total padding is split in two:
/// ONNX's auto_pad=SAME_UPPER (TensorFlow's padding='SAME', PyTorch's
/// padding='same') puts it on the high side (the end), SAME_LOWER on the
/// low side (the beginning).
enum class SamePadding { upper, lower };

namespace detail {

/// Splits `total` padding elements into (begin, end) as `odd` says.
inline std::pair<Index, Index> split_padding(Index total, SamePadding odd) {
  const Index small = total / 2, large = total - small;
  return odd == SamePadding::upper ? std::pair<Index, Index>{small, large} : std::pair<Index, Index>{large, small};
}

/// ONNX's auto_pad SAME_UPPER / SAME_LOWER for any stride: the padding
/// that makes the output ceil(input / stride) long, per dimension. The total
/// is max((ceil(D / s) - 1) * s + dilation * (K - 1) + 1 - D, 0), split as
/// `odd` says. Sets `begin` and `end`.
template <int Rank>
void same_padding(const std::array<Index, Rank>& input, const std::array<Index, Rank>& kernel,
                  const std::array<Index, Rank>& stride, const std::array<Index, Rank>& dilation, SamePadding odd,
                  std::array<Index, Rank>& begin, std::array<Index, Rank>& end) {
  require_positive<Rank>(input, "input_size");
  require_positive<Rank>(kernel, "kernel_size");
  require_positive<Rank>(stride, "stride");
  require_positive<Rank>(dilation, "dilation");
  for (int d = 0; d < Rank; ++d) {
    const Index outputs = (input[d] - 1) / stride[d] + 1;  // ceil(D / s)
    const Index reach = checked_add(checked_mul(outputs - 1, stride[d], "(ceil(input_size / stride) - 1) * stride"),
                                    window_extent(kernel[d], dilation[d]), "the padded extent");
    std::tie(begin[d], end[d]) = split_padding(reach > input[d] ? reach - input[d] : 0, odd);
  }
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

  /// ONNX's auto_pad=SAME_UPPER (TensorFlow's padding='SAME') for any
  /// stride: output_size = ceil(input_size / stride). The total padding
  /// max((ceil(D / s) - 1) * s + dilation * (K - 1) + 1 - D, 0) is split with
  /// the extra element on the high side; with stride 1 this is PyTorch's
  /// 'same'. Set input_size, kernel_size, stride and dilation first.
  ConvSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }

  /// ONNX's auto_pad=SAME_LOWER: as set_padding_same_upper(), with the extra
  /// element on the low side.
  ConvSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }

  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  ConvSpec& set_padding_same(SamePadding odd) {
    std::array<Index, Rank> begin{}, end{};
    detail::same_padding<Rank>(input_size, kernel_size, stride, dilation, odd, begin, end);
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

/// The shape of a transposed convolution (PyTorch's ConvTranspose{1,2,3}d,
/// ONNX's ConvTranspose): the adjoint of the ConvSpec with the same stride,
/// padding, dilation and groups, taking output_size() back to input_size.
/// Weights are laid out (in_channels, out_channels / groups, kernel_size...).
/// Padding is zeros. Padding removes output elements: `padding` from the
/// low side, padding_end (when set, ONNX's asymmetric pads) from the high
/// side; only the low side moves the kernel taps, the high side only
/// shortens the output.
template <int Rank>
struct ConvTransposeSpec {
  static_assert(Rank >= 1, "convmat: a convolution has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index in_channels = 1;
  Index out_channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  std::array<Index, Rank> stride = detail::filled<Rank>(1);
  /// Output elements removed on the low side (and on the high side unless
  /// padding_end is set): PyTorch's symmetric `padding`.
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Output elements removed on the high side, when it differs.
  std::optional<std::array<Index, Rank>> padding_end;
  /// Extra size on the high side of the output; smaller than stride or dilation.
  std::array<Index, Rank> output_padding = detail::filled<Rank>(0);
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  Index groups = 1;

  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  ConvTransposeSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }

  /// The padding that gives an output of `wanted` size (ONNX's
  /// ConvTranspose `output_shape`): per dimension the total
  /// stride * (D - 1) + output_padding + dilation * (K - 1) + 1 - wanted,
  /// split as `odd` says. ONNX puts the odd element at the beginning
  /// (SamePadding::lower) unless auto_pad is SAME_UPPER. spec_error if
  /// `wanted` is larger than the output without padding. Set input_size,
  /// kernel_size, stride, dilation and output_padding first.
  ConvTransposeSpec& set_output_size(const std::array<Index, Rank>& wanted, SamePadding odd = SamePadding::lower) {
    detail::require_positive<Rank>(wanted, "output size");
    padding = detail::filled<Rank>(0);
    padding_end.reset();
    const auto unpadded = checked_output_size();
    std::array<Index, Rank> begin{}, end{};
    for (int d = 0; d < Rank; ++d) {
      if (wanted[d] > unpadded[d])
        detail::fail("the wanted output size ", wanted, " is larger than the transposed convolution gives without ",
                     "padding: input_size=", input_size, ", kernel_size=", kernel_size, ", stride=", stride,
                     ", dilation=", dilation, ", output_padding=", output_padding, " give output ", unpadded);
      std::tie(begin[d], end[d]) = detail::split_padding(unpadded[d] - wanted[d], odd);
    }
    return set_padding(begin, end);
  }

  /// ONNX's ConvTranspose auto_pad=SAME_UPPER: output_size = input_size *
  /// stride, the odd padding element on the high side.
  ConvTransposeSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }
  /// auto_pad=SAME_LOWER: the same output size, the odd element on the low side.
  ConvTransposeSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }
  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  ConvTransposeSpec& set_padding_same(SamePadding odd) {
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(stride, "stride");
    std::array<Index, Rank> wanted{};
    for (int d = 0; d < Rank; ++d) wanted[d] = detail::checked_mul(input_size[d], stride[d], "input_size * stride");
    return set_output_size(wanted, odd);
  }

  void validate() const { (void)checked_output_size(); }

  /// (D - 1) * stride - pad_begin - pad_end + dilation * (K - 1) + output_padding + 1.
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
    const auto begin = pad_begin(), end = pad_end();
    detail::require_non_negative<Rank>(begin, padding_end ? "padding (begin)" : "padding");
    detail::require_non_negative<Rank>(end, "padding_end");
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
               detail::checked_add(begin[d], end[d], "pad_begin + pad_end");
      positive = positive && out[d] >= 1;
    }
    if (!positive) {
      if (padding_end)
        detail::fail("padding leaves no output: input_size=", input_size, ", kernel_size=", kernel_size,
                     ", stride=", stride, ", padding=", begin, ", padding_end=", end, ", dilation=", dilation,
                     ", output_padding=", output_padding, " give output ", out);
      detail::fail("padding leaves no output: input_size=", input_size, ", kernel_size=", kernel_size,
                   ", stride=", stride, ", padding=", padding, ", dilation=", dilation,
                   ", output_padding=", output_padding, " give output ", out);
    }
    return out;
  }
};

// ---------------------------------------------------------------------------
// Printing a spec as PyTorch prints the module
// ---------------------------------------------------------------------------

namespace detail {
/// The padding part of to_string, for convolutions and transposed ones
/// alike: a named padding ("same", "valid", "full"; ONNX's "same_upper" /
/// "same_lower" with the begin/end it set), asymmetric begin and end, or
/// the symmetric numbers when not all zero.
template <class Spec>
void write_padding(std::ostream& os, const Spec& spec, std::string_view padding_name) {
  if (padding_name == "same" || padding_name == "valid" || padding_name == "full") {
    os << ", padding='" << padding_name << "'";
  } else if (padding_name == "same_upper" || padding_name == "same_lower") {
    os << ", padding='" << padding_name << "' ";
    write_value(os, spec.pad_begin());
    os << "/";
    write_value(os, spec.pad_end());
  } else if (spec.padding_end && *spec.padding_end != spec.padding) {
    os << ", padding=";
    write_value(os, spec.padding);
    os << ", padding_end=";
    write_value(os, *spec.padding_end);
  } else if (spec.padding != decltype(spec.padding){}) {
    os << ", padding=";
    write_value(os, spec.padding);
  }
}
}  // namespace detail

/// The layer as PyTorch prints its module, for instance
/// "Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))":
/// padding, dilation, groups and padding_mode only when not the default,
/// asymmetric padding as "padding=(begin), padding_end=(end)". `bias`
/// false appends ", bias=False"; a `padding_name` ("same", "valid", "full",
/// "same_upper", "same_lower") is printed instead of the numbers it set
/// (for ONNX's, followed by "begin/end"). `operator<<` prints to_string(spec).
template <int Rank>
std::string to_string(const ConvSpec<Rank>& spec, bool bias = true, std::string_view padding_name = {}) {
  const auto ones = detail::filled<Rank>(1);
  std::ostringstream os;
  const auto tuple = [&os](const std::array<Index, Rank>& values) -> std::ostream& {
    detail::write_value(os, values);
    return os;
  };
  os << "Conv" << Rank << "d(" << spec.in_channels << ", " << spec.out_channels << ", kernel_size=";
  tuple(spec.kernel_size) << ", stride=";
  tuple(spec.stride);
  detail::write_padding(os, spec, padding_name);
  if (spec.dilation != ones) {
    os << ", dilation=";
    tuple(spec.dilation);
  }
  if (spec.groups != 1) os << ", groups=" << spec.groups;
  if (spec.padding_mode != PaddingMode::zeros) os << ", padding_mode='" << spec.padding_mode << "'";
  os << (bias ? ")" : ", bias=False)");
  return os.str();
}

/// "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1))",
/// as to_string(ConvSpec) (a transposed layer has no padding_mode).
template <int Rank>
std::string to_string(const ConvTransposeSpec<Rank>& spec, bool bias = true, std::string_view padding_name = {}) {
  const auto ones = detail::filled<Rank>(1), zeros = detail::filled<Rank>(0);
  std::ostringstream os;
  const auto tuple = [&os](const std::array<Index, Rank>& values) -> std::ostream& {
    detail::write_value(os, values);
    return os;
  };
  os << "ConvTranspose" << Rank << "d(" << spec.in_channels << ", " << spec.out_channels << ", kernel_size=";
  tuple(spec.kernel_size) << ", stride=";
  tuple(spec.stride);
  detail::write_padding(os, spec, padding_name);
  if (spec.output_padding != zeros) {
    os << ", output_padding=";
    tuple(spec.output_padding);
  }
  if (spec.dilation != ones) {
    os << ", dilation=";
    tuple(spec.dilation);
  }
  if (spec.groups != 1) os << ", groups=" << spec.groups;
  os << (bias ? ")" : ", bias=False)");
  return os.str();
}

template <int Rank>
std::ostream& operator<<(std::ostream& os, const ConvSpec<Rank>& spec) {
  return os << to_string(spec);
}

template <int Rank>
std::ostream& operator<<(std::ostream& os, const ConvTransposeSpec<Rank>& spec) {
  return os << to_string(spec);
}

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

/// How many threads parallel_chunks may use here: OpenMP's maximum, or 1
/// inside a parallel region or without OpenMP.
inline Eigen::Index available_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

/// Calls f(begin, end) on disjoint chunks covering [first, last), in
/// parallel when OpenMP is on and there are at least `grain` items per
/// thread. Each call may keep its own scratch space.
template <class F>
void parallel_chunks(Eigen::Index first, Eigen::Index last, Eigen::Index grain, F&& f) {
  const Eigen::Index n = last - first;
  if (n <= 0) return;
#ifdef _OPENMP
  const Eigen::Index threads = available_threads();
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

/// How a layer's weights are laid out, for messages.
template <int Rank>
constexpr const char* weight_layout(const ConvSpec<Rank>&) { return conv_weight_layout; }
template <int Rank>
constexpr const char* weight_layout(const ConvTransposeSpec<Rank>&) { return transpose_weight_layout; }

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
convmat::RowMajorMatrix<typename Derived::Scalar> conv_matrix(const ConvSpec<Rank>& spec,
                                                             const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  return detail::dense_rows(g, w.data(), 0, g.output_numel());
}

/// Rows [row_begin, row_end) of conv_matrix(spec, weight), built on their
/// own: blocks of consecutive ranges stack to exactly the whole matrix.
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> conv_matrix_rows(const ConvSpec<Rank>& spec,
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
convmat::RowMajorMatrix<typename Derived::Scalar> conv_transpose_matrix(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);  // the convolution this layer is the adjoint of
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  detail::check_dense_size(g.input_numel(), g.output_numel(), sizeof(Scalar), "the dense matrix");
  convmat::RowMajorMatrix<Scalar> t = convmat::RowMajorMatrix<Scalar>::Zero(g.input_numel(), g.output_numel());
  // Entry (r, c) of the convolution's matrix is entry (c, r) here.
  detail::fill_dense(g, w.data(), 0, g.output_numel(), t.data(), 1, t.cols(), false);
  return t;
}

/// The layer's bias as an output-sized vector (bias[oc] at every position
/// of output channel oc), so that the layer is the affine map T x + b.
template <class Spec, class Derived>
convmat::Vector<typename Derived::Scalar> bias_vector(const Spec& spec, const Eigen::MatrixBase<Derived>& bias) {
  const Index channels = spec.out_channels, spatial = spec.output_spatial();
  if (bias.size() != channels || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements (", bias.rows(), " x ", bias.cols(),
                 "), but the layer has out_channels=", channels);
  detail::check_dense_size(spec.output_numel(), 1, sizeof(typename Derived::Scalar), "the bias vector",
                           "raise the limit with set_max_dense_bytes()");
  convmat::Vector<typename Derived::Scalar> b(spec.output_numel());
  for (Index oc = 0; oc < channels; ++oc) b.segment(oc * spatial, spatial).setConstant(bias(oc));
  return b;
}

/// The augmented matrix [T b; 0 1] ((output_numel + 1) x (input_numel + 1)):
/// the layer with bias as one linear map on homogeneous coordinates [x; 1].
template <class Spec, class WeightDerived, class BiasDerived>
convmat::RowMajorMatrix<typename WeightDerived::Scalar> affine_matrix(const Spec& spec,
                                                                     const Eigen::MatrixBase<WeightDerived>& weight,
                                                                     const Eigen::MatrixBase<BiasDerived>& bias) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto b = bias_vector(spec, bias);
  const Index rows = spec.output_numel(), cols = spec.input_numel();
  (void)detail::weight_view(weight, spec.weight_numel(), detail::weight_layout(spec));  // before the allocation
  detail::check_dense_size(detail::checked_add(rows, 1, "the affine matrix's rows"),
                           detail::checked_add(cols, 1, "the affine matrix's columns"), sizeof(Scalar),
                           "the affine matrix");
  convmat::RowMajorMatrix<Scalar> a(rows + 1, cols + 1);
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
convmat::RowMajorMatrix<typename Derived::Scalar> weight_jacobian(const ConvSpec<Rank>& spec,
                                                                 const Eigen::MatrixBase<Derived>& input) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("weight_jacobian takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(g.output_numel(), g.weight_numel(), sizeof(Scalar), "the weight Jacobian",
                           "use unfold() (the same numbers, one row per weight of a group) or raise the limit "
                           "with set_max_dense_bytes()");
  convmat::RowMajorMatrix<Scalar> j = convmat::RowMajorMatrix<Scalar>::Zero(g.output_numel(), g.weight_numel());
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
convmat::Matrix<typename WeightDerived::Scalar> convolve(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<WeightDerived>& weight,
                                                        const Eigen::MatrixBase<InputDerived>& input) {
  static_assert(detail::same_scalar<WeightDerived, InputDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.output_numel(), x.cols());
  for (Index s = 0; s < x.cols(); ++s) detail::forward(g, w.data(), x.col(s).data(), y.col(s).data());
  return y;
}

/// The transposed convolution of every column of `input` (input_numel x
/// batch) with `weight` (flattened (in_channels, out_channels / groups,
/// kernel...)), as torch.nn.functional.conv_transpose{1,2,3}d. Returns
/// output_numel x batch.
template <int Rank, class WeightDerived, class InputDerived>
convmat::Matrix<typename WeightDerived::Scalar> convolve_transpose(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  static_assert(detail::same_scalar<WeightDerived, InputDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(in_channels, out_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.output_numel(), "input");
  detail::check_dense_size(g.input_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.input_numel(), x.cols());
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
//     and divisor_override; ONNX's larger padding on request);
//   - max pooling, which is not linear: its windows, the same depthwise
//     geometry (max_pool_windows), and the direct max_pool;
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
// Also the affine form [T b; 0 1] in compressed rows.

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

/// affine_matrix in compressed rows: [T b; 0 1] ((output_numel + 1) x
/// (input_numel + 1)), the layer with bias as one linear map on [x; 1].
/// Every row of T keeps its entries and gains its bias as its last entry
/// (stored even where the bias is zero, as T stores zero weights); the
/// last row holds the single 1.
template <class StorageIndex = int, class Spec, class WeightDerived, class BiasDerived>
SparseMatrix<typename WeightDerived::Scalar, StorageIndex> affine_matrix_sparse(
    const Spec& spec, const Eigen::MatrixBase<WeightDerived>& weight, const Eigen::MatrixBase<BiasDerived>& bias) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto b = bias_vector(spec, bias);
  SparseMatrix<Scalar, StorageIndex> t;
  if constexpr (std::is_same_v<Spec, ConvSpec<Spec::rank>>)
    t = conv_matrix_sparse<StorageIndex>(spec, weight);
  else
    t = conv_transpose_matrix_sparse<StorageIndex>(spec, weight);
  const Index rows = t.rows(), cols = t.cols();
  const Index nonzeros = detail::checked_add(t.nonZeros(), rows + 1, "the affine matrix's non-zero count");
  detail::check_storage_index<StorageIndex>(nonzeros, "the affine matrix's non-zero count");
  detail::check_storage_index<StorageIndex>(cols + 1, "the affine matrix's column count");
  detail::check_storage_index<StorageIndex>(rows + 1, "the affine matrix's row count");

  SparseMatrix<Scalar, StorageIndex> a(rows + 1, cols + 1);
  a.resizeNonZeros(nonzeros);
  const StorageIndex* t_outer = t.outerIndexPtr();
  StorageIndex* outer = a.outerIndexPtr();
  StorageIndex* inner = a.innerIndexPtr();
  Scalar* values = a.valuePtr();
  Index at = 0;
  for (Index r = 0; r < rows; ++r) {
    outer[r] = static_cast<StorageIndex>(at);
    const Index begin = t_outer[r], length = t_outer[r + 1] - begin;
    std::copy_n(t.innerIndexPtr() + begin, length, inner + at);
    std::copy_n(t.valuePtr() + begin, length, values + at);
    at += length;
    inner[at] = static_cast<StorageIndex>(cols);
    values[at++] = b(r);
  }
  outer[rows] = static_cast<StorageIndex>(at);
  inner[at] = static_cast<StorageIndex>(cols);
  values[at++] = Scalar(1);
  outer[rows + 1] = static_cast<StorageIndex>(at);
  CONVMAT_ASSERT(at == nonzeros, "affine matrix filled to its predicted non-zero count");
  return a;
}

}  // namespace convmat

// ---- convmat/layers.hpp (continued) ------------------------------------------
namespace convmat {

// ---------------------------------------------------------------------------
// Average pooling
// ---------------------------------------------------------------------------

namespace detail {

/// The output size of a pooling layer, per dimension: floor or ceil of
/// (D + pad_begin + pad_end - dilation * (K - 1) - 1) / stride, plus one;
/// with ceil_mode, minus one if the last window would start at or past
/// D + pad_begin (in the high padding), as PyTorch and ONNX. With
/// `pytorch_limits`, PyTorch's rule that padding is at most half the kernel.
/// spec_error naming every value unless each dimension has an output.
template <int Rank>
std::array<Index, Rank> pool_output_size(const std::array<Index, Rank>& input, const std::array<Index, Rank>& kernel,
                                         const std::array<Index, Rank>& stride,
                                         const std::array<Index, Rank>& dilation,
                                         const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end,
                                         bool ceil_mode, bool pytorch_limits) {
  require_positive<Rank>(input, "input_size");
  require_positive<Rank>(kernel, "kernel_size");
  require_positive<Rank>(stride, "stride");
  require_positive<Rank>(dilation, "dilation");
  require_non_negative<Rank>(begin, "padding");
  require_non_negative<Rank>(end, "padding_end");
  std::array<Index, Rank> out{};
  for (int d = 0; d < Rank; ++d) {
    if (pytorch_limits && (begin[d] > kernel[d] / 2 || end[d] > kernel[d] / 2))
      fail("padding must be at most half the kernel size: padding=", begin, ", padding_end=", end,
           ", kernel_size=", kernel, " (as PyTorch; ONNX allows more with pytorch_limits = false)");
    const Index span = checked_add(input[d], checked_add(begin[d], end[d], "padding"), "padded input size") -
                       window_extent(kernel[d], dilation[d]);
    const Index rounded = !ceil_mode ? span : span < 0 ? span + stride[d] - 1
                                                      : checked_add(span, stride[d] - 1, "padded input size");
    out[d] = floor_div(rounded, stride[d]) + 1;
    if (ceil_mode && out[d] >= 1 && (out[d] - 1) * stride[d] >= input[d] + begin[d]) --out[d];
  }
  for (int d = 0; d < Rank; ++d)
    if (out[d] < 1) {
      if (dilation != filled<Rank>(1))
        fail("pooling window does not fit: input_size=", input, ", kernel_size=", kernel, ", stride=", stride,
             ", dilation=", dilation, ", padding=", begin, ", padding_end=", end,
             ", ceil_mode=", ceil_mode ? "true" : "false", " give output ", out);
      fail("pooling window does not fit: input_size=", input, ", kernel_size=", kernel, ", stride=", stride,
           ", padding=", begin, ", padding_end=", end, ", ceil_mode=", ceil_mode ? "true" : "false",
           " give output ", out);
    }
  return out;
}

/// Whether window o of one dimension covers an input element: some tap k
/// in [0, kernel) reads p = o * stride + k * dilation - begin in [0, input).
/// Computed, not searched, so a huge kernel costs nothing.
inline bool window_covers_input(Index o, Index input, Index kernel, Index stride, Index dilation, Index begin) {
  const Index low = begin - o * stride;  // k * dilation >= low
  const Index high = low + (input - 1);  // k * dilation <= high (no overflow: input + begin is checked)
  if (high < 0) return false;
  const Index first = low <= 0 ? 0 : low / dilation + (low % dilation != 0);  // the first tap at or past low
  return first <= kernel - 1 && first <= high / dilation;
}

/// spec_error unless every pooling window covers at least one input element
/// (beyond PyTorch's limits, a window can lie wholly in the padding). Per
/// dimension the windows' first and last input elements are monotone in the
/// output index, so the first and last windows decide.
template <int Rank>
void require_windows_cover_input(const std::array<Index, Rank>& input, const std::array<Index, Rank>& kernel,
                                 const std::array<Index, Rank>& stride, const std::array<Index, Rank>& dilation,
                                 const std::array<Index, Rank>& begin, const std::array<Index, Rank>& output,
                                 const char* why) {
  for (int d = 0; d < Rank; ++d)
    for (Index o : {Index{0}, output[d] - 1})
      if (!window_covers_input(o, input[d], kernel[d], stride[d], dilation[d], begin[d]))
        fail("pooling window ", o, " of dimension ", d, " covers only padding (", why, "): input_size=", input,
             ", kernel_size=", kernel, ", stride=", stride, ", dilation=", dilation, ", padding=", begin,
             " give output ", output);
}

}  // namespace detail

/// The shape of an average pooling layer (PyTorch's AvgPool{1,2,3}d, ONNX's
/// AveragePool) over `channels` channels. Pooling acts on each channel
/// alone, so the layer maps (channels, input_size...) to
/// (channels, output_size()...).
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
  /// PyTorch's limits (true): padding at most half the kernel, and in 3-D an
  /// input no smaller than the kernel, as F.avg_pool{1,2,3}d. False: ONNX's
  /// AveragePool, which takes any padding; a window that covers only
  /// padding is then refused unless count_include_pad (it would be 0 / 0).
  bool pytorch_limits = true;

  std::array<Index, Rank> strides() const { return stride.value_or(kernel_size); }
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  AvgPoolSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }
  /// ONNX's auto_pad=SAME_UPPER: output_size = ceil(input_size / stride), the
  /// total padding (ceil(D / s) - 1) * s + K - D split with the extra element
  /// on the high side (see ConvSpec::set_padding_same_upper). Set
  /// input_size, kernel_size and stride first.
  AvgPoolSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }
  /// ONNX's auto_pad=SAME_LOWER: the extra element on the low side.
  AvgPoolSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }
  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  AvgPoolSpec& set_padding_same(SamePadding odd) {
    std::array<Index, Rank> begin{}, end{};
    detail::same_padding<Rank>(input_size, kernel_size, strides(), detail::filled<Rank>(1), odd, begin, end);
    return set_padding(begin, end);
  }

  /// Throws spec_error unless PyTorch would accept this layer (with
  /// pytorch_limits = false: unless ONNX's AveragePool defines it).
  void validate() const { (void)output_size(); }

  /// Per dimension: floor or ceil of (D + pad_begin + pad_end - K) / stride,
  /// plus one; with ceil_mode, minus one if the last window would start at
  /// or past D + pad_begin.
  std::array<Index, Rank> output_size() const {
    if (channels <= 0) detail::fail("channels must be positive: channels=", channels);
    detail::require_positive<Rank>(input_size, "input_size");
    detail::require_positive<Rank>(kernel_size, "kernel_size");
    if (divisor_override && *divisor_override <= 0)
      detail::fail("divisor_override must be positive: divisor_override=", *divisor_override);
    if constexpr (Rank == 3) {  // F.avg_pool3d also wants the input, unpadded, at least the kernel
      for (int d = 0; d < Rank && pytorch_limits; ++d)
        if (input_size[d] < kernel_size[d])
          detail::fail("input smaller than kernel size: input_size=", input_size, ", kernel_size=", kernel_size,
                       " (3-D average pooling needs input_size >= kernel_size in every dimension, as "
                       "PyTorch's avg_pool3d)");
    }
    const auto ones = detail::filled<Rank>(1);
    const auto out = detail::pool_output_size<Rank>(input_size, kernel_size, strides(), ones, pad_begin(), pad_end(),
                                                    ceil_mode, pytorch_limits);
    if (!pytorch_limits && !count_include_pad && !divisor_override)
      detail::require_windows_cover_input<Rank>(input_size, kernel_size, strides(), ones, pad_begin(), out,
                                                "its average would be 0 / 0");
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
convmat::RowMajorMatrix<Scalar> avg_pool_matrix(const AvgPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  detail::dense_footprint<Scalar>("the dense pooling matrix", g.output_numel(), g.input_numel())
      .add(g.weight_numel(), sizeof(Scalar), "window weights")
      .add(g.output_spatial, sizeof(Scalar), "divisors")
      .check(detail::dense_layer_hint);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  convmat::RowMajorMatrix<Scalar> t = detail::dense_rows(g, ones.data(), 0, g.output_numel());
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
// Max pooling
// ---------------------------------------------------------------------------

/// The shape of a max pooling layer (PyTorch's MaxPool{1,2,3}d, ONNX's
/// MaxPool) over `channels` channels: (channels, input_size...) to
/// (channels, output_size()...). Max pooling is not linear, so there is no
/// matrix; max_pool_windows() gives which inputs each output takes the
/// largest of (padding never wins: it is -infinity), and max_pool() is the
/// direct reference.
template <int Rank>
struct MaxPoolSpec {
  static_assert(Rank >= 1, "convmat: pooling has at least one spatial dimension");
  static constexpr int rank = Rank;

  Index channels = 1;
  std::array<Index, Rank> input_size = detail::filled<Rank>(0);   ///< must be set
  std::array<Index, Rank> kernel_size = detail::filled<Rank>(0);  ///< must be set
  /// The step between windows; PyTorch's default is the kernel size (ONNX's is 1).
  std::optional<std::array<Index, Rank>> stride;
  /// Padding on the low side (and the high side unless padding_end is set).
  std::array<Index, Rank> padding = detail::filled<Rank>(0);
  /// Padding on the high side, when it differs (ONNX's asymmetric pads).
  std::optional<std::array<Index, Rank>> padding_end;
  std::array<Index, Rank> dilation = detail::filled<Rank>(1);
  /// Round the output size up; a window that would start in the high
  /// padding is dropped, as in PyTorch.
  bool ceil_mode = false;
  /// PyTorch's limit (true): padding at most half the kernel. False: ONNX's
  /// MaxPool, any padding. Either way a window must cover an input element.
  bool pytorch_limits = true;

  std::array<Index, Rank> strides() const { return stride.value_or(kernel_size); }
  std::array<Index, Rank> pad_begin() const { return padding; }
  std::array<Index, Rank> pad_end() const { return padding_end.value_or(padding); }

  /// Sets asymmetric padding: `begin` on the low side, `end` on the high side.
  MaxPoolSpec& set_padding(const std::array<Index, Rank>& begin, const std::array<Index, Rank>& end) {
    padding = begin;
    padding_end = end;
    return *this;
  }
  /// ONNX's auto_pad=SAME_UPPER: output_size = ceil(input_size / stride), the
  /// extra padding element on the high side (see ConvSpec::set_padding_same_upper).
  MaxPoolSpec& set_padding_same_upper() { return set_padding_same(SamePadding::upper); }
  /// ONNX's auto_pad=SAME_LOWER: the extra element on the low side.
  MaxPoolSpec& set_padding_same_lower() { return set_padding_same(SamePadding::lower); }
  /// set_padding_same_upper() or set_padding_same_lower(), as `odd` says.
  MaxPoolSpec& set_padding_same(SamePadding odd) {
    std::array<Index, Rank> begin{}, end{};
    detail::same_padding<Rank>(input_size, kernel_size, strides(), dilation, odd, begin, end);
    return set_padding(begin, end);
  }

  /// Throws spec_error unless PyTorch (with pytorch_limits = false: ONNX)
  /// would accept this layer and every window covers an input element.
  void validate() const { (void)output_size(); }

  /// Per dimension: floor or ceil of
  /// (D + pad_begin + pad_end - dilation * (K - 1) - 1) / stride, plus one;
  /// with ceil_mode, minus one if the last window would start at or past
  /// D + pad_begin.
  std::array<Index, Rank> output_size() const {
    if (channels <= 0) detail::fail("channels must be positive: channels=", channels);
    const auto out = detail::pool_output_size<Rank>(input_size, kernel_size, strides(), dilation, pad_begin(),
                                                    pad_end(), ceil_mode, pytorch_limits);
    detail::require_windows_cover_input<Rank>(input_size, kernel_size, strides(), dilation, pad_begin(), out,
                                              "its maximum would be -infinity");
    return out;
  }

  Index input_spatial() const { return detail::checked_product(input_size, "input size"); }
  Index output_spatial() const { return detail::checked_product(output_size(), "output size"); }
  Index input_numel() const { return detail::checked_mul(channels, input_spatial(), "input_numel"); }
  Index output_numel() const { return detail::checked_mul(channels, output_spatial(), "output_numel"); }
};

using MaxPool1dSpec = MaxPoolSpec<1>;
using MaxPool2dSpec = MaxPoolSpec<2>;
using MaxPool3dSpec = MaxPoolSpec<3>;

namespace detail {

/// Max pooling's windows as the kernel taps of a depthwise convolution.
template <int Rank>
Geometry<Rank> geometry(const MaxPoolSpec<Rank>& spec) {
  return make_geometry<Rank>(spec.channels, spec.channels, spec.channels, spec.input_size, spec.output_size(),
                             spec.kernel_size, spec.strides(), spec.dilation, spec.pad_begin(), PaddingMode::zeros);
}

}  // namespace detail

/// The windows of max pooling as a 0/1 matrix (output_numel x input_numel,
/// compressed rows): row (c, o) has a 1 on every input of channel c that
/// window o covers, padding left out. Max pooling takes the largest of the
/// inputs each row marks.
template <class Scalar = double, class StorageIndex = int, int Rank>
SparseMatrix<Scalar, StorageIndex> max_pool_windows(const MaxPoolSpec<Rank>& spec) {
  const auto g = detail::geometry(spec);
  const auto ones = detail::depthwise_ones<Scalar>(g);
  return detail::sparse_rows<StorageIndex>(g, ones.data(), 0, g.output_numel());
}

/// Max pooling of every column of `input` (input_numel x batch), as
/// F.max_pool{1,2,3}d: output_numel x batch. A NaN in a window is its
/// maximum, as in PyTorch.
template <int Rank, class Derived>
convmat::Matrix<typename Derived::Scalar> max_pool(const MaxPoolSpec<Rank>& spec,
                                                   const Eigen::MatrixBase<Derived>& input) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.output_numel(), x.cols());
  std::vector<detail::Tap> taps;
  for (Index p = 0; p < g.output_spatial; ++p) {
    g.taps_at(p, taps);  // never empty: validated
    for (Index c = 0; c < spec.channels; ++c)
      for (Index s = 0; s < x.cols(); ++s) {
        const Scalar* column = x.col(s).data() + c * g.input_spatial;
        Scalar best = column[taps.front().offset];
        for (const auto& t : taps)
          if (column[t.offset] > best || std::isnan(column[t.offset])) best = column[t.offset];
        y(c * g.output_spatial + p, s) = best;
      }
  }
  return y;
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
convmat::RowMajorMatrix<Scalar> pad_matrix(const PadSpec<Rank>& spec) {
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
convmat::RowMajorMatrix<Scalar> upsample_nearest_matrix(const UpsampleSpec<Rank>& spec) {
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
convmat::RowMajorMatrix<Scalar> flatten_matrix(Index numel) {
  if (numel <= 0) detail::fail("flatten needs a positive element count: numel=", numel);
  detail::check_dense_size(numel, numel, sizeof(Scalar), "the flatten matrix");
  return convmat::RowMajorMatrix<Scalar>::Identity(numel, numel);
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
  convmat::Vector<Scalar> bias;

  Index input_numel() const { return matrix.cols(); }
  Index output_numel() const { return matrix.rows(); }

  /// matrix * X + bias, for one sample or a batch (columns).
  template <class Derived>
  convmat::Matrix<Scalar> operator()(const Eigen::MatrixBase<Derived>& x) const {
    const auto view = detail::batch_view(x, matrix.cols(), "input");
    if (bias.size() != matrix.rows())
      detail::fail("the affine map's bias has ", bias.size(), " entries, but its matrix has ", matrix.rows(), " rows");
    convmat::Matrix<Scalar> y = matrix * view;
    y.colwise() += bias;
    return y;
  }
};

/// The affine map of a matrix with zero bias.
template <class MatrixType>
AffineMap<std::decay_t<MatrixType>> linear_map(MatrixType matrix) {
  const Index rows = matrix.rows();
  return {std::move(matrix), convmat::Vector<typename std::decay_t<MatrixType>::Scalar>::Zero(rows)};
}

/// The affine map of a matrix and bias (checked to agree in size).
template <class MatrixType, class BiasDerived>
AffineMap<std::decay_t<MatrixType>> affine_map(MatrixType matrix, const Eigen::MatrixBase<BiasDerived>& bias) {
  if (bias.size() != matrix.rows() || (bias.rows() != 1 && bias.cols() != 1))
    detail::fail("bias has ", bias.size(), " elements (", bias.rows(), " x ", bias.cols(), "), but the matrix has ",
                 matrix.rows(), " rows");
  convmat::Vector<typename std::decay_t<MatrixType>::Scalar> b = bias.derived().reshaped();
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
  convmat::Vector<Scalar> gamma, beta, mean, var;
  Scalar eps = Scalar(1e-5);

  Index channels() const { return gamma.size(); }

  /// Per channel, gamma / sqrt(var + eps).
  convmat::Vector<Scalar> scale() const {
    validate();
    return (gamma.array() / (var.array() + eps).sqrt()).matrix();
  }
  /// Per channel, beta - mean * scale.
  convmat::Vector<Scalar> shift() const { return (beta.array() - mean.array() * scale().array()).matrix(); }

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
  convmat::Vector<Scalar> weight, bias;
};

/// BatchNorm folded into the convolution before it: the weights and bias of
/// the one convolution equal to conv(x, w) + b followed by `bn`
/// (w'[oc, ...] = w[oc, ...] * scale[oc], b' = (b - mean) * scale + beta).
template <int Rank, class WeightDerived, class BiasDerived>
ConvParameters<typename WeightDerived::Scalar> fold_batch_norm(const ConvSpec<Rank>& spec,
                                                               const Eigen::MatrixBase<WeightDerived>& weight,
                                                               const Eigen::MatrixBase<BiasDerived>& bias,
                                                               const BatchNorm<typename WeightDerived::Scalar>& bn) {
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
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
  static_assert(detail::same_scalar<WeightDerived, BiasDerived>::value);
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
// T without the matrix: ConvOperator holds a layer's geometry and its
// weights and multiplies through the library's one product path
// (detail/unfold_product.hpp): T X as a blocked unfold and one GEMM per
// group, T^T Y and T^H Y as the GEMM with the transposed weights and a
// blocked fold, a panel of about 512 columns at a time in a bounded
// per-thread workspace, with OpenMP in threads. A vector is a batch of one;
// a matrix is a batch, one column per sample. So a layer whose dense matrix
// would not fit in memory can still be solved with, at the speed of
// convolve_unfold. It follows Eigen's "matrix-free solvers" recipe, so
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

#include <Eigen/IterativeLinearSolvers>
#include <memory>

// ---- convmat/detail/unfold_product.hpp ---------------------------------------
// The one product path. T X is a blocked unfold followed by one matrix
// product (GEMM) per group; T^T Y and T^H Y are the products with the
// transposed weights followed by a blocked fold. convolve_unfold,
// ConvOperator (and through it the solvers, spectral_norm, the normal and
// Tikhonov operators) and the PETSc MATSHELL all multiply here.
//
// A product is cut into panels of about panel_columns columns of the
// unfold matrix: a range of one sample's output positions, or several
// small samples side by side. A panel's unfold block (its rows a chunk of
// at most workspace_bytes) is built in a per-thread workspace and
// multiplied while it is in the cache, so a product allocates per thread
// that block and, for samples side by side, one group's output channels x
// the panel's columns — never the unfold matrix, nothing that grows with
// the batch or the image. With OpenMP the panels (forward) or the samples
// and input channels (adjoint, whose fold must not add into the same input
// from two threads) are shared among threads.

namespace convmat::detail {

/// Where a sample's input channels are read (unfold) or added (fold):
/// spatial offset s of channel c at data[(c - channel_begin) *
/// channel_stride + s - offset_begin]. The whole input is whole_input(g);
/// the PETSc shell's halo holds a window of channels and offsets.
struct InputWindow {
  Index channel_begin = 0, channel_stride = 0, offset_begin = 0;
};

/// The window that is the whole input of a sample.
template <int Rank>
InputWindow whole_input(const Geometry<Rank>& g) {
  return {0, g.input_spatial, 0};
}

/// One segment of a row of the unfold matrix: the columns of one outer
/// position (a multi-index of every output axis but the last) that a block
/// holds, elements [j_begin, j_end) of the last axis.
struct UnfoldSegment {
  Index row = 0;                ///< unfold row: channel * kernel_numel + tap
  Index column = 0;             ///< the block's column of element j_begin
  Index j_begin = 0, j_end = 0;
  bool padding = false;         ///< every element reads a padding zero
  Index base = 0;               ///< element j reads in[base + sources[j]] (window index), or padding if < 0
  const Index* sources = nullptr;
  const AxisRun* interior = nullptr;  ///< elements [begin, end) read in[base + first + (j - begin) * step]
};

/// Walks rows [row_begin, row_end) of the unfold matrix (rows (channel,
/// tap), columns output positions) in order and, in each, the columns of
/// output positions [position_begin, position_end), one UnfoldSegment per
/// outer position they touch, giving input indices in `window`.
template <int Rank, class F>
void for_each_unfold_segment(const Geometry<Rank>& g, const InputWindow& window, Index row_begin, Index row_end,
                             Index position_begin, Index position_end, F&& f) {
  if (position_begin >= position_end) return;
  constexpr int last = Rank - 1;
  const Index segment = g.output_size[last];
  const Index outer_begin = position_begin / segment, outer_end = (position_end - 1) / segment + 1;
  std::array<Index, Rank> first_outer{};  // multi-index of outer_begin (last axis unused)
  for (Index outer = outer_begin, d = last - 1; d >= 0; --d) {
    first_outer[d] = outer % g.output_size[d];
    outer /= g.output_size[d];
  }
  UnfoldSegment s;
  for (Index row = row_begin; row < row_end; ++row) {
    const Index channel = row / g.kernel_numel;
    std::array<Index, Rank> k{};  // tap multi-index
    for (Index tap = row % g.kernel_numel, d = last; d >= 0; --d) {
      k[d] = tap % g.kernel_size[d];
      tap /= g.kernel_size[d];
    }
    s.row = row;
    s.sources = g.axes[last].sources_of_tap(k[last]);
    s.interior = &g.axes[last].interior(k[last]);
    const Index channel_base = (channel - window.channel_begin) * window.channel_stride - window.offset_begin;
    std::array<Index, Rank> o = first_outer;
    for (Index outer = outer_begin; outer < outer_end; ++outer) {
      const Index start = outer * segment;
      s.j_begin = std::max<Index>(position_begin - start, 0);
      s.j_end = std::min<Index>(position_end - start, segment);
      s.column = start + s.j_begin - position_begin;
      Index spatial = 0;
      s.padding = false;
      for (int d = 0; d < last && !s.padding; ++d) {
        const Index source = g.axes[d].source(o[d], k[d]);
        s.padding = source < 0;
        spatial += source * g.input_strides[d];
      }
      s.base = channel_base + spatial;
      f(static_cast<const UnfoldSegment&>(s));
      for (int d = last - 1; d >= 0; --d) {  // next outer position
        if (++o[d] < g.output_size[d]) break;
        o[d] = 0;
      }
    }
  }
}

/// The elements [run_begin, run_end) of a segment that its interior run
/// holds, clipped to [j_begin, j_end).
inline std::pair<Index, Index> clipped_run(const UnfoldSegment& s) {
  const Index begin = std::min(std::max(s.interior->begin, s.j_begin), s.j_end);
  const Index end = std::min(std::max(s.interior->end, begin), s.j_end);
  return {begin, end};
}

/// Rows [row_begin, row_end) and the columns of output positions
/// [position_begin, position_end) of one sample's unfold matrix, the
/// sample read through `window`, into `out`: row-major, `width` elements
/// per row (row row_begin first). Within a segment the interior is one
/// contiguous (or strided) copy; only the borders look at each element's
/// source.
template <int Rank, class Scalar>
void unfold_block_into(const Geometry<Rank>& g, const Scalar* x, const InputWindow& window, Index row_begin,
                       Index row_end, Index position_begin, Index position_end, Scalar* out, Index width) {
  for_each_unfold_segment(g, window, row_begin, row_end, position_begin, position_end, [&](const UnfoldSegment& s) {
    Scalar* to = out + (s.row - row_begin) * width + s.column;  // element j at to[j - j_begin]
    if (s.padding) {
      std::fill(to, to + (s.j_end - s.j_begin), Scalar(0));
      return;
    }
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j)
        to[j - s.j_begin] = s.sources[j] < 0 ? Scalar(0) : x[s.base + s.sources[j]];
    };
    const auto [run_begin, run_end] = clipped_run(s);
    by_source(s.j_begin, run_begin);
    if (run_begin < run_end) {
      const AxisRun& run = *s.interior;
      const Scalar* in = x + s.base + run.first + (run_begin - run.begin) * run.step;
      Scalar* dst = to + (run_begin - s.j_begin);
      if (run.step == 1)
        std::copy(in, in + (run_end - run_begin), dst);
      else
        for (Index j = 0; j < run_end - run_begin; ++j) dst[j] = in[j * run.step];
    }
    by_source(run_end, s.j_end);
  });
}

/// The adjoint of unfold_block_into: adds each element of the block
/// `columns` (as unfold_block_into writes it) into the input it was read
/// from, in `window`.
template <int Rank, class Scalar>
void fold_block_add(const Geometry<Rank>& g, const Scalar* columns, Index width, Index row_begin, Index row_end,
                    Index position_begin, Index position_end, Scalar* x, const InputWindow& window) {
  for_each_unfold_segment(g, window, row_begin, row_end, position_begin, position_end, [&](const UnfoldSegment& s) {
    if (s.padding) return;
    const Scalar* from = columns + (s.row - row_begin) * width + s.column;  // element j at from[j - j_begin]
    const auto by_source = [&](Index j_begin, Index j_end) {
      for (Index j = j_begin; j < j_end; ++j)
        if (s.sources[j] >= 0) x[s.base + s.sources[j]] += from[j - s.j_begin];
    };
    const auto [run_begin, run_end] = clipped_run(s);
    by_source(s.j_begin, run_begin);
    if (run_begin < run_end) {
      const AxisRun& run = *s.interior;
      Scalar* in = x + s.base + run.first + (run_begin - run.begin) * run.step;
      const Scalar* src = from + (run_begin - s.j_begin);
      for (Index j = 0; j < run_end - run_begin; ++j) in[j * run.step] += src[j];
    }
    by_source(run_end, s.j_end);
  });
}

/// The rows of T a product covers: output channels [channel_begin,
/// channel_end) at output positions [position_begin, position_end). A
/// sample's part of the product is laid out channel-major: (channel -
/// channel_begin) * positions() + (position - position_begin).
struct OutputRegion {
  Index channel_begin = 0, channel_end = 0, position_begin = 0, position_end = 0;
  Index channels() const { return channel_end - channel_begin; }
  Index positions() const { return position_end - position_begin; }
};

/// Every row of T.
template <int Rank>
OutputRegion whole_output(const Geometry<Rank>& g) {
  return {0, g.out_channels, 0, g.output_spatial};
}

/// Columns of the unfold matrix per panel: wide enough for the GEMM to run
/// at full speed, narrow enough for the block to stay in the cache.
inline constexpr Index panel_columns = 512;
/// A panel is never split below this many columns to give threads work.
inline constexpr Index min_panel_columns = 64;
/// The most one thread's unfold block takes; deeper layers are multiplied
/// in chunks of rows (the products added up).
inline constexpr std::size_t workspace_bytes = std::size_t{2} << 20;

/// How a product over `batch` samples of `positions` columns each is cut
/// into panels: with `splits` > 1, panel i is the split i % splits of
/// sample i / splits' positions; else panel i holds samples [i * samples,
/// (i + 1) * samples), whole. A sample set (sample_sets() of them) is the
/// samples of `splits` consecutive panels: no two sets share a sample.
struct Panels {
  struct Panel {
    Index sample_begin, sample_end, position_begin, position_end;
    Index positions() const { return position_end - position_begin; }
    Index columns() const { return (sample_end - sample_begin) * positions(); }
  };

  Index positions = 0, batch = 0, splits = 1, samples = 1, count = 0, width = 0;

  Panels(Index positions_per_sample, Index batch_size, Index threads)
      : positions(positions_per_sample), batch(batch_size) {
    const auto ceil_div = [](Index a, Index b) { return (a + b - 1) / b; };
    splits = std::max<Index>(1, (positions + panel_columns / 2) / panel_columns);
    const Index most_splits = std::max<Index>(1, positions / min_panel_columns);
    if (batch * splits < threads) splits = std::min(most_splits, ceil_div(threads, batch));
    // Few panels: as many per thread, if the panels stay wide enough.
    while (batch * splits < 4 * threads && (batch * splits) % threads != 0 && splits < most_splits) ++splits;
    if (splits > 1) {
      count = batch * splits;
      width = ceil_div(positions, splits);
      return;
    }
    samples = std::max<Index>(1, panel_columns / std::max<Index>(positions, 1));
    count = std::max(ceil_div(batch, samples), std::min(batch, threads));
    samples = ceil_div(batch, count);
    count = ceil_div(batch, samples);
    width = samples * positions;
  }

  Panel operator()(Index i) const {
    if (splits > 1) {
      const Index k = i % splits;
      return {i / splits, i / splits + 1, positions * k / splits, positions * (k + 1) / splits};
    }
    return {i * samples, std::min(batch, (i + 1) * samples), 0, positions};
  }
  Index sample_sets() const { return count / splits; }
};

/// Rows of the unfold block per chunk for panels `width` columns wide.
template <class Scalar>
Index workspace_depth(Index group_rows, Index width) {
  const Index fits = static_cast<Index>(workspace_bytes / sizeof(Scalar)) / std::max<Index>(width, 1);
  return std::max<Index>(1, std::min(group_rows, fits));
}

/// `size` entries of scratch space kept by the calling thread between
/// calls (one buffer per Slot, grown as needed, never shrunk): a fresh
/// unfold block of 2 MiB per product is a fresh mmap, whose page faults
/// and zeroing cost a quarter of a small layer's product.
template <class Scalar, int Slot>
Scalar* thread_scratch(Index size) {
  thread_local Vector<Scalar> buffer;
  if (buffer.size() < size) {
    buffer.resize(0);  // the old block first: never both at once
    buffer.resize(size);
  }
  return buffer.data();
}

template <class Scalar>
using BlockMap = Eigen::Map<RowMajorMatrix<Scalar>, 0, Eigen::OuterStride<>>;
template <class Scalar>
using ConstBlockMap = Eigen::Map<const RowMajorMatrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Y = T X on the rows `region` of T, for `batch` samples: sample s reads
/// x + s * x_stride through `window` and writes y + s * y_stride (laid out
/// as OutputRegion says; overwritten). `w` holds the weights (out_channels,
/// in_channels / groups, kernel...); conjugated ones give conj(T) X. The
/// work is cut for `threads` threads (0: available_threads()); any number
/// gives the same result, up to rounding.
template <int Rank, class Scalar>
void unfold_multiply(const Geometry<Rank>& g, const Scalar* w, const Scalar* x, Index x_stride,
                     const InputWindow& window, Scalar* y, Index y_stride, Index batch, const OutputRegion& region,
                     Index threads = 0) {
  if (batch <= 0 || region.channels() <= 0 || region.positions() <= 0) return;
  const Index cog = g.out_per_group(), group_rows = g.in_per_group() * g.kernel_numel;
  const Index positions = region.positions();
  const Index first_group = region.channel_begin / cog, last_group = (region.channel_end - 1) / cog;
  const Panels panels(positions, batch, threads > 0 ? threads : available_threads());
  const Index depth = workspace_depth<Scalar>(group_rows, panels.width);
  const Index out_rows = panels.samples > 1 ? std::min(cog, region.channels()) : 0;
  parallel_chunks(0, panels.count, 1, [&](Index first, Index last) {
    Scalar* const columns = thread_scratch<Scalar, 0>(depth * panels.width);  // uninitialised, aligned
    Scalar* const out = thread_scratch<Scalar, 1>(out_rows * panels.width);
    for (Index i = first; i < last; ++i) {
      const auto panel = panels(i);
      const Index n = panel.columns(), piece = panel.positions();
      const Index from = region.position_begin + panel.position_begin, to = from + piece;
      const bool side_by_side = panel.sample_end - panel.sample_begin > 1;
      for (Index group = first_group; group <= last_group; ++group) {
        const Index oc_begin = std::max(region.channel_begin, group * cog);
        const Index oc_end = std::min(region.channel_end, (group + 1) * cog);
        Scalar* y_block = y + panel.sample_begin * y_stride + (oc_begin - region.channel_begin) * positions +
                          panel.position_begin;
        BlockMap<Scalar> product = side_by_side
                                       ? BlockMap<Scalar>(out, oc_end - oc_begin, n, Eigen::OuterStride<>(n))
                                       : BlockMap<Scalar>(y_block, oc_end - oc_begin, n, Eigen::OuterStride<>(positions));
        for (Index r0 = 0; r0 < group_rows; r0 += depth) {
          const Index r1 = std::min(r0 + depth, group_rows), row0 = group * group_rows;
          for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
            unfold_block_into(g, x + s * x_stride, window, row0 + r0, row0 + r1, from, to,
                              columns + (s - panel.sample_begin) * piece, n);
          const ConstBlockMap<Scalar> u(columns, r1 - r0, n, Eigen::OuterStride<>(n));
          const ConstBlockMap<Scalar> w_block(w + oc_begin * group_rows + r0, oc_end - oc_begin, r1 - r0,
                                              Eigen::OuterStride<>(group_rows));
          if (r0 == 0)
            product.noalias() = w_block * u;
          else
            product.noalias() += w_block * u;
        }
        if (side_by_side)  // each sample's columns to its own output
          for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
            for (Index oc = 0; oc < oc_end - oc_begin; ++oc) {
              const Scalar* source = out + oc * n + (s - panel.sample_begin) * piece;
              std::copy(source, source + piece, y_block + (s - panel.sample_begin) * y_stride + oc * positions);
            }
      }
    }
  });
}

/// X (+)= T^T Y on the rows `region` of T, for `batch` samples: sample s
/// reads y + s * y_stride (laid out as OutputRegion says) and adds into x +
/// s * x_stride through `window`, into the input channels of the groups
/// the region's channels belong to; with `overwrite` those channels are
/// set instead (nothing else of x is touched). With conjugated weights
/// `w` it is T^H Y. The fold of one sample into one input channel runs on
/// one thread: threads share the sample sets and, when there are fewer
/// sets than threads, the input channels. `threads` as unfold_multiply.
template <int Rank, class Scalar>
void multiply_fold(const Geometry<Rank>& g, const Scalar* w, const Scalar* y, Index y_stride, Scalar* x,
                   Index x_stride, const InputWindow& window, Index batch, const OutputRegion& region,
                   bool overwrite, Index threads = 0) {
  if (batch <= 0 || region.channels() <= 0 || region.positions() <= 0) return;
  const Index cig = g.in_per_group(), cog = g.out_per_group(), kn = g.kernel_numel, group_rows = cig * kn;
  const Index positions = region.positions();
  const Index first_group = region.channel_begin / cog, last_group = (region.channel_end - 1) / cog;
  const Index channel_begin = first_group * cig, channels = (last_group + 1 - first_group) * cig;
  if (threads <= 0) threads = available_threads();
  const Panels panels(positions, batch, threads);
  const Index sets = panels.sample_sets();
  const Index parts = sets >= threads ? 1 : std::min(channels, (threads + sets - 1) / sets);
  const Index depth = workspace_depth<Scalar>(group_rows, panels.width);
  const Index gathered_rows = panels.samples > 1 ? std::min(cog, region.channels()) : 0;
  parallel_chunks(0, sets * parts, 1, [&](Index first, Index last) {
    Scalar* const columns = thread_scratch<Scalar, 0>(depth * panels.width);
    Scalar* const gathered = thread_scratch<Scalar, 1>(gathered_rows * panels.width);
    for (Index unit = first; unit < last; ++unit) {
      const Index set = unit / parts, part = unit % parts;
      const Index c_begin = channel_begin + channels * part / parts;
      const Index c_end = channel_begin + channels * (part + 1) / parts;
      if (c_begin == c_end) continue;
      if (overwrite) {
        const auto first_panel = panels(set * panels.splits);
        for (Index s = first_panel.sample_begin; s < first_panel.sample_end; ++s) {
          Scalar* channel = x + s * x_stride + (c_begin - window.channel_begin) * window.channel_stride;
          std::fill(channel, channel + (c_end - c_begin) * window.channel_stride, Scalar(0));
        }
      }
      for (Index i = set * panels.splits; i < (set + 1) * panels.splits; ++i) {
        const auto panel = panels(i);
        const Index n = panel.columns(), piece = panel.positions();
        const Index from = region.position_begin + panel.position_begin, to = from + piece;
        const bool side_by_side = panel.sample_end - panel.sample_begin > 1;
        for (Index group = std::max(first_group, c_begin / cig); group <= (c_end - 1) / cig; ++group) {
          const Index oc_begin = std::max(region.channel_begin, group * cog);
          const Index oc_end = std::min(region.channel_end, (group + 1) * cog);
          if (oc_begin >= oc_end) continue;
          const Scalar* y_block = y + panel.sample_begin * y_stride +
                                  (oc_begin - region.channel_begin) * positions + panel.position_begin;
          if (side_by_side)  // the samples' columns side by side
            for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
              for (Index oc = 0; oc < oc_end - oc_begin; ++oc) {
                const Scalar* source = y_block + (s - panel.sample_begin) * y_stride + oc * positions;
                std::copy(source, source + piece, gathered + oc * n + (s - panel.sample_begin) * piece);
              }
          const ConstBlockMap<Scalar> y_group = side_by_side
              ? ConstBlockMap<Scalar>(gathered, oc_end - oc_begin, n, Eigen::OuterStride<>(n))
              : ConstBlockMap<Scalar>(y_block, oc_end - oc_begin, n, Eigen::OuterStride<>(positions));
          const Index r_begin = (std::max(c_begin, group * cig) - group * cig) * kn;
          const Index r_end = (std::min(c_end, (group + 1) * cig) - group * cig) * kn;
          for (Index r0 = r_begin; r0 < r_end; r0 += depth) {
            const Index r1 = std::min(r0 + depth, r_end), row0 = group * group_rows;
            BlockMap<Scalar> c(columns, r1 - r0, n, Eigen::OuterStride<>(n));
            const ConstBlockMap<Scalar> w_block(w + oc_begin * group_rows + r0, oc_end - oc_begin, r1 - r0,
                                                Eigen::OuterStride<>(group_rows));
            c.noalias() = w_block.transpose() * y_group;
            for (Index s = panel.sample_begin; s < panel.sample_end; ++s)
              fold_block_add(g, columns + (s - panel.sample_begin) * piece, n, row0 + r0, row0 + r1, from,
                             to, x + s * x_stride, window);
          }
        }
      }
    }
  });
}

}  // namespace convmat::detail

// ---- convmat/operator.hpp (continued) ----------------------------------------
namespace convmat {

template <class Scalar, int Rank>
class ConvOperator;
template <class Scalar, int Rank>
class NormalOperator;
template <class Scalar, int Rank>
class TikhonovOperator;

namespace detail {

/// What Eigen asks of a matrix-free operator — the typedefs, the flags and
/// a checked `operator*` — and apply(), written once for the three
/// operators. Derived provides rows(), cols() and apply_batch(x, x_stride,
/// y, y_stride, batch): Y = A X for `batch` contiguous columns.
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
  /// Weights and right-hand side of different Scalar types are one clear
  /// static_assert, not Eigen's errors about the mixed product.
  template <class Rhs>
  auto operator*(const Eigen::MatrixBase<Rhs>& x) const {
    static_assert(std::is_same_v<typename Rhs::Scalar, Scalar>,
                  "convmat: the operator's weights and the vector or matrix it multiplies must have the same "
                  "Scalar type (float weights with a double vector, or the reverse); cast one with .cast<T>()");
    if constexpr (std::is_same_v<typename Rhs::Scalar, Scalar>) {
      const Derived& self = static_cast<const Derived&>(*this);
      if (x.rows() != self.cols())
        fail("operator product: the right-hand side has ", x.rows(), " rows (", x.rows(), " x ", x.cols(),
             "), but the operator is ", self.rows(), " x ", self.cols());
      return Eigen::Product<Derived, Rhs, Eigen::AliasFreeProduct>(self, x.derived());
    }
  }

  /// y = A x for one sample: x has cols() contiguous entries, y rows(); y
  /// is overwritten and must not overlap x. apply_batch with a batch of
  /// one, for callers that manage their own buffers.
  void apply(const Scalar* x, Scalar* y) const {
    const Derived& self = static_cast<const Derived&>(*this);
    self.apply_batch(x, self.cols(), y, self.rows(), 1);
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
    // Scaled by hand, not as `alpha * y`: Eigen 3.4 loads a complex<float>
    // constant as one 8-byte word from wherever its expression keeps it,
    // which may be 4-byte aligned (UBSan: misaligned load).
    const Scalar factor(alpha);
    if (factor == Scalar(-1)) {
      dst -= y;
      return;
    }
    if (factor != Scalar(1))
      for (Index i = 0; i < y.size(); ++i) y.data()[i] *= factor;
    dst += y;
  }
};

/// `batch` columns of `rows` entries, column j at data + j * stride.
template <class Scalar>
using ColumnsMap = Eigen::Map<Matrix<Scalar>, 0, Eigen::OuterStride<>>;
template <class Scalar>
using ConstColumnsMap = Eigen::Map<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// A layer's geometry and its weights, shared by an operator and its
/// transposes. For complex scalars the conjugated weights are kept too.
template <class Scalar, int Rank>
struct OperatorState {
  Geometry<Rank> geometry;
  Vector<Scalar> weight;
  Vector<Scalar> conjugate_weight;  // empty for real scalars
};

}  // namespace detail

/// The matrix T of a layer, matrix-free: `op * x` is the layer (unfold and
/// GEMM, detail::unfold_multiply), `op.transpose() * y` is T^T y and
/// `op.adjoint() * y` is T^H y (GEMM and fold, detail::multiply_fold; the
/// same for real scalars). rows() = output_numel, cols() = input_numel.
/// Copies are cheap and share the weights. Made by make_operator(spec,
/// weight).
template <class ScalarType, int Rank>
class ConvOperator : public detail::MatrixFreeBase<ConvOperator<ScalarType, Rank>, ScalarType> {
 public:
  using Scalar = ScalarType;
  using RealScalar = typename Eigen::NumTraits<Scalar>::Real;

  /// An operator for the convolution `geometry` with `weight` laid out
  /// (out_channels, in_channels / groups, kernel...): T if `transposed` is
  /// false, T^T (T^H if also `conjugated`) if true. Prefer make_operator.
  ConvOperator(const detail::Geometry<Rank>& geometry, convmat::Vector<Scalar> weight, bool transposed)
      : transposed_(transposed) {
    if (weight.size() != geometry.weight_numel())  // the products read weight_numel() of them
      detail::fail("ConvOperator: weight has ", weight.size(), " elements, but the geometry needs ",
                   geometry.weight_numel());
    auto state = std::make_shared<detail::OperatorState<Scalar, Rank>>();
    state->geometry = geometry;
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
  /// entries, overwritten; no overlap with X). What `op * X` runs, and
  /// apply(x, y) with a batch of one: unfold and GEMM for T (and conj(T)),
  /// GEMM and fold for T^T and T^H, a bounded workspace per thread.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    const auto& state = *state_;
    const auto& g = state.geometry;
    // conj(T) and T^H read the conjugated weights, T and T^T the weights.
    const Scalar* w = conjugated_ ? state.conjugate_weight.data() : state.weight.data();
    if (!transposed_)
      detail::unfold_multiply(g, w, x, x_stride, detail::whole_input(g), y, y_stride, batch, detail::whole_output(g));
    else
      detail::multiply_fold(g, w, x, x_stride, y, y_stride, detail::whole_input(g), batch, detail::whole_output(g),
                            true);
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

  /// Y = (T^H T + lambda I) X for `batch` columns (see
  /// ConvOperator::apply_batch): T X for the whole batch, then T^H of it.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    convmat::Matrix<Scalar> t(op_.rows(), batch);  // T X
    op_.apply_batch(x, x_stride, t.data(), t.rows(), batch);
    op_.adjoint().apply_batch(t.data(), t.rows(), y, y_stride, batch);
    if (lambda_ != RealScalar(0))
      detail::ColumnsMap<Scalar>(y, cols(), batch, Eigen::OuterStride<>(y_stride)) +=
          lambda_ * detail::ConstColumnsMap<Scalar>(x, cols(), batch, Eigen::OuterStride<>(x_stride));
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
  convmat::Vector<Scalar> rhs(const Eigen::MatrixBase<Derived>& b) const {
    if (!stacked_) detail::fail("TikhonovOperator::rhs: call it on the stacked operator [T; sqrt(lambda) I]");
    if (b.size() != op_.rows() || (b.rows() != 1 && b.cols() != 1))
      detail::fail("TikhonovOperator::rhs: b has ", b.rows(), " x ", b.cols(), " entries, but T has ",
                   op_.rows(), " rows");
    convmat::Vector<Scalar> stacked = convmat::Vector<Scalar>::Zero(rows());
    stacked.head(op_.rows()) = b.reshaped();
    return stacked;
  }

  /// Y = A X for `batch` columns (see ConvOperator::apply_batch): T's
  /// (or T^T's, T^H's) product on the whole batch, then the identity part.
  void apply_batch(const Scalar* x, Index x_stride, Scalar* y, Index y_stride, Index batch) const {
    using Map = detail::ColumnsMap<Scalar>;
    using ConstMap = detail::ConstColumnsMap<Scalar>;
    op_.apply_batch(x, x_stride, y, y_stride, batch);  // the first op_.rows() entries of each column
    if (stacked_)  // [T X; s X]
      Map(y + op_.rows(), op_.cols(), batch, Eigen::OuterStride<>(y_stride)) =
          scale_ * ConstMap(x, op_.cols(), batch, Eigen::OuterStride<>(x_stride));
    else  // T' X_top + s X_bottom
      Map(y, op_.rows(), batch, Eigen::OuterStride<>(y_stride)) +=
          scale_ * ConstMap(x + op_.cols(), op_.rows(), batch, Eigen::OuterStride<>(x_stride));
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

// ---------------------------------------------------------------------------
// Eigen's solvers on the operators, spelled once
// ---------------------------------------------------------------------------

/// Eigen::LeastSquaresConjugateGradient on a matrix-free operator:
/// `convmat::LeastSquaresSolver<decltype(op)> lscg(op);` for min |T x - b|
/// (a ConvOperator) or the Tikhonov problem (a TikhonovOperator).
template <class Operator>
using LeastSquaresSolver = Eigen::LeastSquaresConjugateGradient<Operator, Eigen::IdentityPreconditioner>;
/// Eigen::ConjugateGradient on a self-adjoint operator (a NormalOperator).
template <class Operator>
using ConjugateGradientSolver =
    Eigen::ConjugateGradient<Operator, Eigen::Lower | Eigen::Upper, Eigen::IdentityPreconditioner>;
/// Eigen::BiCGSTAB on a square operator: T x = b.
template <class Operator>
using BiCGSTABSolver = Eigen::BiCGSTAB<Operator, Eigen::IdentityPreconditioner>;

}  // namespace convmat

// Eigen's side of the recipe: the operators are "sparse" for Eigen's
// expression machinery, and their product with a dense vector or matrix is
// evaluated through apply_batch() (detail::MatrixFreeProduct).
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

/// The exact number of entries conv_matrix_sparse_rows(spec, weight,
/// row_begin, row_end) stores: what a row block will cost, before it is
/// built (to size its StorageIndex, or to split a matrix into blocks).
template <class Spec>
Index conv_matrix_nonzeros(const Spec& spec, Index row_begin, Index row_end) {
  const auto g = detail::geometry(spec);
  detail::check_row_range(row_begin, row_end, g.output_numel());
  return g.nonzeros_between(row_begin, row_end);
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
// Singular values of T, for layers of any size:
//
//   - spectral_norm: the largest, by block Golub-Kahan-Lanczos on the
//     matrix-free operator (detail/lanczos.hpp), with the residual reached;
//   - singular_values(spec, w, k): the k largest, the same way — or exactly
//     by the FFT when T is block-circulant;
//   - singular_values(spec, w): all of them, exactly by the FFT when T is
//     block-circulant, else by an SVD of the dense matrix (detail/svd.hpp);
//   - spectral_norm_bound: a certified bracket lower <= ||T||_2 <= upper for
//     every padding mode and stride, the upper bound by the FFT of the
//     circulant layer T is a piece of (detail/circulant.hpp).

// ---- convmat/detail/circulant.hpp --------------------------------------------
// A layer seen through the FFT. Every convolution layer is a piece of a
// block-circulant one:
//
//     T = R C E P,
//
// where P pads the input as the padding mode says (zeros: an isometric
// embedding), E embeds the padded signal into a periodic grid, C is a
// circular convolution on that grid, and R keeps the outputs the layer has.
// A stride s becomes s^d interleaved "phase" channels (the polyphase
// split: padded position m is phase m mod s at grid position m div s), so C
// has stride 1 and the FFT block-diagonalises it: per frequency f, one
// small matrix M_f (C_out / groups x C_in / groups * s^d per group), and
// the singular values of C are those of all the M_f together (Sedghi,
// Gupta and Long, "The Singular Values of Convolutional Layers", ICLR 2019).
// E and R have norm at most 1, so ||T|| <= ||P|| * max_f ||M_f||, and ||P||
// is a product over axes of per-axis norms. Circular padding whose strides
// divide the input needs no P: the input is already periodic; when the
// output then covers the whole grid, R is the identity and C's values are
// exactly T's.

#include <unsupported/Eigen/FFT>
#include <complex>

// ---- convmat/detail/svd.hpp --------------------------------------------------
// Singular values of a small dense matrix, right on repeated values.
//
// Householder bidiagonalisation followed by the eigenvalues of the
// Golub-Kahan tridiagonal matrix by symmetric QR, LAPACK's way without
// vectors. Not Eigen's BDCSVD: convolution matrices have highly repeated
// singular values (every symmetry of a layer repeats them), and there Eigen
// 3.4.0's BDCSVD returns wrong values — for the circular 1-channel layer
// input (5, 7), kernel (1, 3), dilation (3, 1), padding (0, 1), weights
// (0.3, -0.7, 0.2), off by 0.11 where the largest is 1.15
// (tests/test_spectral.cpp keeps that case). Not JacobiSVD either: right,
// but 250 times slower at 1024 x 1024.

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <functional>

namespace convmat::detail {

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

/// The largest singular value of `a`: the square root of the largest
/// eigenvalue of its smaller Gram matrix (a^H a or a a^H), by symmetric QR.
template <class Scalar>
typename Eigen::NumTraits<Scalar>::Real largest_svd_value(const Matrix<Scalar>& a) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  if (a.size() == 0) return Real(0);
  const Matrix<Scalar> gram = a.rows() < a.cols() ? Matrix<Scalar>(a * a.adjoint()) : Matrix<Scalar>(a.adjoint() * a);
  if (gram.rows() == 1) return std::sqrt(std::max(Real(0), std::real(gram(0, 0))));
  Eigen::SelfAdjointEigenSolver<Matrix<Scalar>> eigen(gram, Eigen::EigenvaluesOnly);
  if (eigen.info() != Eigen::Success)
    fail("singular_values: the symmetric QR iteration did not converge on a ", gram.rows(), " x ", gram.cols(),
         " Gram matrix");
  return std::sqrt(std::max(Real(0), eigen.eigenvalues()(gram.rows() - 1)));
}

template <class Real>
Vector<Real> sorted_descending(Vector<Real> values) {
  std::sort(values.data(), values.data() + values.size(), std::greater<Real>());
  return values;
}

}  // namespace convmat::detail

// ---- convmat/detail/circulant.hpp (continued) --------------------------------
namespace convmat::detail {

/// One spatial axis of a convolution, as the circulant model needs it.
struct ConvAxis {
  Index input = 0, output = 0, kernel = 0, stride = 1, dilation = 1, pad_begin = 0, pad_end = 0;
  PaddingMode mode = PaddingMode::zeros;
};

/// The axes of a convolution.
template <int Rank>
std::array<ConvAxis, Rank> conv_axes(const ConvSpec<Rank>& spec) {
  const auto out = spec.output_size(), begin = spec.pad_begin(), end = spec.pad_end();
  std::array<ConvAxis, Rank> axes;
  for (int d = 0; d < Rank; ++d)
    axes[d] = {spec.input_size[d], out[d], spec.kernel_size[d], spec.stride[d], spec.dilation[d], begin[d], end[d],
               spec.padding_mode};
  return axes;
}

/// The axes of the convolution a transposed layer is the adjoint of: it
/// reads the transposed layer's output, with zero padding.
template <int Rank>
std::array<ConvAxis, Rank> conv_axes(const ConvTransposeSpec<Rank>& spec) {
  const auto out = spec.output_size();
  std::array<ConvAxis, Rank> axes;
  for (int d = 0; d < Rank; ++d) {
    // The padded extent the convolution reads: beyond it, zeros.
    const Index reach = (spec.input_size[d] - 1) * spec.stride[d] + spec.dilation[d] * (spec.kernel_size[d] - 1) + 1;
    const Index end = std::max<Index>(0, reach - spec.padding[d] - out[d]);
    axes[d] = {out[d], spec.input_size[d], spec.kernel_size[d], spec.stride[d], spec.dilation[d], spec.padding[d],
               end, PaddingMode::zeros};
  }
  return axes;
}

/// The smallest n' >= n whose prime factors are 2, 3 and 5: a size the FFT
/// handles fast. Any grid at least as large as the padded signal works.
inline Index fft_size(Index n) {
  for (Index m = std::max<Index>(n, 1);; ++m) {
    Index r = m;
    for (Index p : {2, 3, 5})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

/// One axis of the circulant model: outputs o < output read, through tap
/// k, phase phase[k] at grid position (o + shift[k]) mod grid; `norm` is
/// that of the axis's padding operator P_d; `whole` says R is the identity
/// on this axis (output == grid, nothing padded: the model is the layer).
struct CirculantAxis {
  Index grid = 1, phases = 1, output = 1;
  std::vector<Index> shift, phase;  // per tap
  double norm = 1;
  bool whole = false;
};

/// The circulant model of one axis (see the file comment).
inline CirculantAxis circulant_axis(const ConvAxis& a) {
  CirculantAxis c;
  c.phases = a.stride;
  c.output = a.output;
  c.shift.resize(static_cast<std::size_t>(a.kernel));
  c.phase.resize(static_cast<std::size_t>(a.kernel));
  if (a.mode == PaddingMode::circular && a.input % a.stride == 0 && a.output <= a.input / a.stride) {
    // Already periodic: input (o s + k d - pad_begin) mod D, phase and
    // position read off the polyphase split of the input itself (every
    // output its own grid row: output <= D / s).
    c.grid = a.input / a.stride;
    for (Index k = 0; k < a.kernel; ++k) {
      const Index q = k * a.dilation - a.pad_begin;
      c.shift[static_cast<std::size_t>(k)] = positive_mod(floor_div(q, a.stride), c.grid);
      c.phase[static_cast<std::size_t>(k)] = positive_mod(q, a.stride);
    }
    c.whole = a.output == c.grid;
    return c;
  }
  // The padded signal, long enough for every read and (zeros) every input.
  const Index reach = (a.output - 1) * a.stride + a.dilation * (a.kernel - 1) + 1;
  const Index padded = a.mode == PaddingMode::zeros ? std::max(a.pad_begin + a.input, reach)
                                                     : a.pad_begin + a.input + a.pad_end;
  c.grid = fft_size((padded + a.stride - 1) / a.stride);
  for (Index k = 0; k < a.kernel; ++k) {
    c.shift[static_cast<std::size_t>(k)] = k * a.dilation / a.stride;
    c.phase[static_cast<std::size_t>(k)] = k * a.dilation % a.stride;
  }
  if (a.mode != PaddingMode::zeros) {
    // P_d has one 1 per row (the input each padded position reads), so
    // P_d^T P_d is diagonal: its norm is the root of the most reads of one input.
    std::vector<Index> reads(static_cast<std::size_t>(a.input), 0);
    for (Index m = 0; m < a.pad_begin + a.input + a.pad_end; ++m)
      ++reads[static_cast<std::size_t>(padded_source(m - a.pad_begin, a.input, a.mode))];
    c.norm = std::sqrt(static_cast<double>(*std::max_element(reads.begin(), reads.end())));
  }
  return c;
}

/// A layer as a block-circulant convolution on a grid (see the file
/// comment): per kernel tap (flat, C order) its flat grid shift and flat
/// phase; the channels; ||P||; and whether the circulant is the layer.
template <int Rank>
struct CirculantModel {
  std::array<CirculantAxis, Rank> axes;
  std::array<Index, Rank> grid{};
  Index grid_numel = 1, phase_numel = 1;
  Index out_channels = 1, in_channels = 1, groups = 1;
  std::vector<Index> tap_shift, tap_phase;
  double padding_norm = 1;
  bool exact = false;

  Index out_per_group() const { return out_channels / groups; }
  /// The columns of one frequency's matrix: a group's input channels times the phases.
  Index columns_per_group() const { return in_channels / groups * phase_numel; }
};

template <int Rank>
CirculantModel<Rank> circulant_model(const std::array<ConvAxis, Rank>& axes, Index in_channels, Index out_channels,
                                     Index groups) {
  CirculantModel<Rank> m;
  m.in_channels = in_channels;
  m.out_channels = out_channels;
  m.groups = groups;
  m.exact = true;
  Index kernel_numel = 1;
  for (int d = 0; d < Rank; ++d) {
    m.axes[d] = circulant_axis(axes[d]);
    m.grid[d] = m.axes[d].grid;
    m.grid_numel = checked_mul(m.grid_numel, m.grid[d], "FFT grid size");
    m.phase_numel = checked_mul(m.phase_numel, m.axes[d].phases, "phase count");
    kernel_numel = checked_mul(kernel_numel, axes[d].kernel, "kernel size");
    m.padding_norm *= m.axes[d].norm;
    m.exact = m.exact && m.axes[d].whole;
  }
  m.tap_shift.assign(static_cast<std::size_t>(kernel_numel), 0);
  m.tap_phase.assign(static_cast<std::size_t>(kernel_numel), 0);
  for (Index tap = 0; tap < kernel_numel; ++tap) {
    Index rest = tap, shift = 0, phase = 0, grid_stride = 1, phase_stride = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      const auto k = static_cast<std::size_t>(rest % axes[d].kernel);
      rest /= axes[d].kernel;
      shift += m.axes[d].shift[k] * grid_stride;
      phase += m.axes[d].phase[k] * phase_stride;
      grid_stride *= m.grid[d];
      phase_stride *= m.axes[d].phases;
    }
    m.tap_shift[static_cast<std::size_t>(tap)] = shift;
    m.tap_phase[static_cast<std::size_t>(tap)] = phase;
  }
  return m;
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

inline constexpr const char* spectra_hint =
    "use the Lanczos estimates instead (singular_values(spec, weight, k), spectral_norm), or raise the limit with "
    "set_max_dense_bytes()";

/// The bytes FrequencyMatrices holds for a model (SIZE_MAX if it overflows).
template <int Rank, class Scalar>
std::size_t spectra_bytes(const CirculantModel<Rank>& m) {
  using Complex = std::complex<std::common_type_t<typename Eigen::NumTraits<Scalar>::Real, double>>;
  const double bytes = static_cast<double>(m.out_channels) * static_cast<double>(m.in_channels / m.groups) *
                       static_cast<double>(m.phase_numel) * static_cast<double>(m.grid_numel) * sizeof(Complex);
  return bytes >= static_cast<double>(std::numeric_limits<std::size_t>::max()) ? std::numeric_limits<std::size_t>::max()
                                                                                 : static_cast<std::size_t>(bytes);
}

/// Whether circulant_singular_values of the model stays within max_dense_bytes().
template <class Scalar, int Rank>
bool circulant_values_fit(const CirculantModel<Rank>& m) {
  return spectra_bytes<Rank, Scalar>(m) <= max_dense_bytes();
}

/// The circulant model's frequency matrices, all at once: for every
/// frequency f (flat over the grid) and group, M_f[a, (c, phase)] = the
/// DFT at f of output channel a's kernel for input channel c, placed on the
/// grid at the taps' shifts of that phase. Computed in double (at least):
/// a float layer's weights are exact in it.
template <int Rank, class Scalar>
class FrequencyMatrices {
 public:
  using Real = std::common_type_t<typename Eigen::NumTraits<Scalar>::Real, double>;
  using Complex = std::complex<Real>;
  using Block = Eigen::Matrix<Complex, Eigen::Dynamic, Eigen::Dynamic>;

  FrequencyMatrices(const CirculantModel<Rank>& model, const Scalar* w) : m_(model) {
    const Index cig = m_.in_channels / m_.groups, kn = static_cast<Index>(m_.tap_shift.size());
    const Index lines = checked_mul(checked_mul(m_.out_channels, cig, "spectra"), m_.phase_numel, "spectra");
    check_dense_size(lines, m_.grid_numel, sizeof(Complex), "the FFT spectra for the layer's singular values",
                     spectra_hint);
    spectra_.assign(static_cast<std::size_t>(lines * m_.grid_numel), Complex(0));
    // One line per (output channel, input channel, phase): its taps on the grid, transformed.
    parallel_chunks(0, m_.out_channels * cig, 16, [&](Index begin, Index end) {
      Eigen::FFT<Real> fft;
      std::vector<Complex> in, out;
      for (Index pair = begin; pair < end; ++pair) {
        Complex* first = spectra_.data() + pair * m_.phase_numel * m_.grid_numel;
        for (Index tap = 0; tap < kn; ++tap) {
          const auto t = static_cast<std::size_t>(tap);
          first[m_.tap_phase[t] * m_.grid_numel + m_.tap_shift[t]] += Complex(w[pair * kn + tap]);
        }
        for (Index phase = 0; phase < m_.phase_numel; ++phase)
          fft_in_place<Rank>(first + phase * m_.grid_numel, m_.grid, fft, in, out);
      }
    });
  }

  /// Calls f(group, frequency, M) for every group and every frequency in
  /// [first, last), M = M_f of the group: (C_out / groups) x (C_in / groups
  /// * phases). The matrices are gathered a run of frequencies at a time,
  /// so each spectrum is read in contiguous pieces.
  template <class F>
  void for_each(Index first, Index last, F&& f) const {
    constexpr Index run = 32;
    const Index cog = m_.out_per_group(), cig = m_.in_channels / m_.groups, p = m_.phase_numel;
    std::vector<Block> blocks(static_cast<std::size_t>(run), Block(cog, cig * p));
    for (Index group = 0; group < m_.groups; ++group)
      for (Index begin = first; begin < last; begin += run) {
        const Index count = std::min(run, last - begin);
        for (Index a = 0; a < cog; ++a)
          for (Index c = 0; c < cig; ++c)
            for (Index phase = 0; phase < p; ++phase) {
              const Complex* line =
                  spectra_.data() + ((((group * cog + a) * cig + c) * p + phase) * m_.grid_numel + begin);
              for (Index i = 0; i < count; ++i) blocks[static_cast<std::size_t>(i)](a, c * p + phase) = line[i];
            }
        for (Index i = 0; i < count; ++i) f(group, begin + i, blocks[static_cast<std::size_t>(i)]);
      }
  }

  /// The flat index of frequency -f (each coordinate negated modulo its axis).
  Index negated(Index f) const {
    Index result = 0, stride = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      const Index n = m_.grid[d], fd = f % n;
      f /= n;
      result += ((n - fd) % n) * stride;
      stride *= n;
    }
    return result;
  }

  const CirculantModel<Rank>& model() const { return m_; }

 private:
  const CirculantModel<Rank>& m_;
  std::vector<Complex> spectra_;
};

/// All singular values of the circulant model's C (unsorted): those of
/// every group's M_f at every frequency. T's own when model.exact.
template <int Rank, class Scalar>
Vector<typename Eigen::NumTraits<Scalar>::Real> circulant_singular_values(const CirculantModel<Rank>& model,
                                                                           const Scalar* w) {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  const Index per_frequency = std::min(model.out_per_group(), model.columns_per_group());
  const Index count = checked_mul(checked_mul(model.grid_numel, model.groups, "singular value count"),
                                  per_frequency, "singular value count");
  check_dense_size(count, 1, sizeof(Real), "the singular values", spectra_hint);
  const FrequencyMatrices<Rank, Scalar> spectra(model, w);
  Vector<Real> values(count);
  parallel_chunks(0, model.grid_numel, 64, [&](Index begin, Index end) {
    spectra.for_each(begin, end, [&](Index group, Index f, const auto& m) {
      values.segment((group * model.grid_numel + f) * per_frequency, per_frequency) =
          svd_values(m).template cast<Real>();
    });
  });
  return values;
}

/// max over groups and frequencies of the largest singular value of M_f:
/// the norm of the model's C. With real weights M_{-f} is conj(M_f), so
/// only one of each pair is decomposed.
template <int Rank, class Scalar>
double circulant_norm(const CirculantModel<Rank>& model, const Scalar* w) {
  const FrequencyMatrices<Rank, Scalar> spectra(model, w);
  std::vector<double> best(static_cast<std::size_t>(model.grid_numel), 0.0);  // per frequency
  parallel_chunks(0, model.grid_numel, 64, [&](Index begin, Index end) {
    spectra.for_each(begin, end, [&](Index, Index f, const auto& m) {
      if (!Eigen::NumTraits<Scalar>::IsComplex && spectra.negated(f) < f) return;  // its conjugate's twin
      auto& at = best[static_cast<std::size_t>(f)];
      at = std::max(at, static_cast<double>(largest_svd_value(m)));
    });
  });
  return *std::max_element(best.begin(), best.end());
}

}  // namespace convmat::detail

// ---- convmat/detail/lanczos.hpp ----------------------------------------------
// The largest singular values of a matrix-free operator A (rows x cols) by
// block Golub-Kahan-Lanczos bidiagonalisation with full reorthogonalisation
// and thick restarts (the block form of Baglama and Reichel's augmented
// implicitly restarted Lanczos bidiagonalisation, "irlba"). It keeps
//
//     A P = Q B,    A^H Q = P B^H + N T E^H,
//
// with P (cols x s) and Q (rows x s) orthonormal, B = Q^H A P small, and
// N T (N orthonormal, T upper triangular) what A^H does to Q's last block
// outside P. The basis grows a block of b columns at a time (b products
// with A, then b with A^H, through the operator's apply_batch); the
// singular triplets (sigma, u, v) of B give Ritz triplets (sigma, Q u, P v)
// of A, exact on one side (A P v = sigma Q u) and off on the other by
// |T u_last| (u's entries on the last block) — read off the small matrices,
// no product needed. When the basis is full, the best Ritz vectors are kept
// and the basis grows again from N. With b >= the multiplicity of a value,
// repeated and clustered top values converge together, as fast as isolated
// ones.

#include <random>

namespace convmat::detail {

/// Gaussian random entries (complex: both parts), deterministic in `seed`.
template <class Derived>
void fill_random(Eigen::MatrixBase<Derived>& m, std::uint64_t seed) {
  using Scalar = typename Derived::Scalar;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  for (Index j = 0; j < m.cols(); ++j)
    for (Index i = 0; i < m.rows(); ++i) {
      if constexpr (Eigen::NumTraits<Scalar>::IsComplex)
        m(i, j) = Scalar(normal(rng), normal(rng));
      else
        m(i, j) = static_cast<Scalar>(normal(rng));
    }
}

/// How a BlockLanczos run goes: the settings, already checked.
struct LanczosSettings {
  Index wanted = 1;            ///< how many of the largest singular values
  double tolerance = 1e-10;    ///< converged when each residual <= tolerance * sigma_1
  Index max_products = 1000;   ///< products with A (each paired with one with A^H)
  Index block = 4;             ///< columns added per step
  Index basis = 40;            ///< the most basis columns before a restart
  std::uint64_t seed = 2019;   ///< of the random starting block
  /// A known lower bound on sigma_1 of the whole operator, for runs on a
  /// deflated part (whose own largest value may be zero): the tolerance
  /// is relative to the larger of it and the run's own largest value.
  double scale = 0;
};

/// What a BlockLanczos run found: the `wanted` largest Ritz values,
/// descending, their residuals max(|A v - sigma u|, |A^H u - sigma v|)
/// (measured by products with the final vectors, not estimated), and the
/// vectors themselves (unit columns u of rows entries, v of cols).
template <class Scalar>
struct LanczosResult {
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  Vector<Real> values, residuals;
  Vector<Real> image_norms;  ///< |A v| of each right vector v: a lower bound on sigma_1 for the first
  Matrix<Scalar> left, right;
  bool converged = false;
  Index products = 0;  ///< with A (as many with A^H), the final check included
};

/// The block Lanczos bidiagonalisation of one operator, step by step:
/// expand() grows the basis by a block, ritz() decomposes B, restart()
/// keeps the best Ritz vectors. run() strings them together.
template <class Operator>
class BlockLanczos {
 public:
  using Scalar = typename Operator::Scalar;
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  /// B and its SVD are small: decomposed in at least double precision.
  using Work = std::common_type_t<Real, double>;
  using WorkScalar = std::conditional_t<Eigen::NumTraits<Scalar>::IsComplex, std::complex<Work>, Work>;
  using WorkMatrix = Eigen::Matrix<WorkScalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// The iteration on `a`, or, with locked singular vectors (columns of
  /// `locked_left`, rows x l, and `locked_right`, cols x l), on the part of
  /// `a` orthogonal to them: every basis vector is kept orthogonal to the
  /// locked ones, so what it finds are other singular triplets.
  BlockLanczos(const Operator& a, const LanczosSettings& settings, Matrix<Scalar> locked_left = {},
               Matrix<Scalar> locked_right = {})
      : a_(a), adjoint_(a.adjoint()), settings_(settings), rows_(a.rows()), cols_(a.cols()),
        locked_left_(std::move(locked_left)), locked_right_(std::move(locked_right)) {
    space_ = std::min(rows_, cols_) - locked_right_.cols();
    basis_ = std::min(std::max(settings.basis, settings.wanted + settings.block), space_);
    block_ = std::max<Index>(1, std::min(settings.block, basis_));
    // P and Q (and the locked vectors), allocated at once: guarded first.
    check_dense_size(checked_add(rows_, cols_, "the Lanczos basis"), basis_ + block_ + 2, sizeof(Scalar),
                     "the Lanczos basis (vectors of the operator's rows and of its columns)",
                     "pass a smaller SpectralNormOptions::basis_size, or raise the limit with set_max_dense_bytes()");
    p_.resize(cols_, basis_ + block_);
    q_.resize(rows_, basis_);
    b_ = WorkMatrix::Zero(basis_, basis_);
    // The starting block: random, orthonormal.
    auto start = p_.leftCols(block_);
    fill_random(start, settings.seed);
    next_ = orthonormalise(p_, 0, block_, nullptr, locked_right_);
  }

  /// Runs until the wanted values have converged, max_products is spent or
  /// the space is exhausted (then B's values are exact).
  LanczosResult<Scalar> run() {
    const Index wanted = std::min(settings_.wanted, space_);
    for (;;) {
      if (s_ + next_ > basis_) restart(kept(wanted));
      if (next_ == 0) break;  // A^H Q lies in P: the Ritz values are exact
      expand();
      ritz();
      if (estimated_converged(wanted) || products_ >= settings_.max_products) break;
    }
    return finish(wanted);
  }

 private:
  /// Orthonormalises columns [first, first + count) of `m` against the
  /// `locked` columns, its columns before `first` and each other
  /// (classical Gram-Schmidt, twice), in place. The coefficients on m's
  /// columns go to coefficients(0 .. first + count, column) when given. A
  /// column left (near) zero — the space it would add is already spanned —
  /// is replaced by a random direction with coefficient 0, or dropped when
  /// the space is full. Returns how many columns stand (they stay first).
  template <class Basis>
  Index orthonormalise(Basis& m, Index first, Index count, WorkMatrix* coefficients, const Matrix<Scalar>& locked,
                       Index coefficient_column = 0) {
    const Index dimension = m.rows() - locked.cols();
    const auto project_out_locked = [&](auto& v) {
      if (locked.cols() > 0) v -= locked * (locked.adjoint() * v).eval();
    };
    Index kept = 0;
    std::uint64_t replacements = 0;
    for (Index c = 0; c < count; ++c) {
      const Index at = first + kept;
      if (at != first + c) m.col(at) = m.col(first + c);
      auto v = m.col(at);
      const Real before = v.norm();
      Vector<Scalar> h = Vector<Scalar>::Zero(at);
      // Classical Gram-Schmidt with a second pass only when the first
      // cancelled more than 1 - 1/sqrt(2) of the vector (Daniel, Gragg,
      // Kaufman and Stewart's criterion: otherwise one pass already leaves
      // it orthogonal to working precision, "twice is enough"). Each pass
      // reads the basis twice, so this is most of what a step costs.
      Real after = before;
      for (int pass = 0; pass < 2; ++pass) {
        const Real entering = after;
        project_out_locked(v);
        if (at > 0) {
          const Vector<Scalar> g = m.leftCols(at).adjoint() * v;
          v.noalias() -= m.leftCols(at) * g;
          h += g;
        }
        after = v.norm();
        if (after >= Real(0.7071) * entering) break;
      }
      // Below this, what remains is rounding of what was already spanned.
      const Real floor = Real(64) * Eigen::NumTraits<Real>::epsilon() * std::max(before, scale_);
      if (coefficients) {
        auto column = coefficients->col(coefficient_column + c);
        column.head(at) = h.template cast<WorkScalar>();
      }
      if (after > floor) {
        v /= after;
        if (coefficients) (*coefficients)(at, coefficient_column + c) = WorkScalar(after);
        ++kept;
        continue;
      }
      if (at >= dimension) continue;  // the space is full: drop the column
      // Breakdown: carry on in a random direction the basis does not span.
      // Near the end of the space little of a random vector is left (one
      // free dimension of n leaves about 1/sqrt(n) of it), so the test is
      // relative: what is left must stand above sqrt(epsilon) of the
      // vector, where three Gram-Schmidt passes make it orthogonal to
      // rounding. (An absolute test lost the last column of a full space
      // one time in twenty, and with it the exactness of B.)
      const Real enough = std::sqrt(Eigen::NumTraits<Real>::epsilon());
      for (int attempt = 0; attempt < 8; ++attempt) {
        fill_random(v, settings_.seed + 7919 * (++replacements) + static_cast<std::uint64_t>(at));
        const Real fresh = v.norm();
        for (int pass = 0; pass < 3; ++pass) {
          project_out_locked(v);
          if (at > 0) v -= m.leftCols(at) * (m.leftCols(at).adjoint() * v).eval();
        }
        const Real norm = v.norm();
        if (norm > enough * fresh) {
          v /= norm;
          ++kept;
          break;
        }
      }
    }
    return kept;
  }

  /// Grows P and Q by the pending block N: Q's new block from A N, B's new
  /// columns from the projections, and the next N T from A^H of Q's block.
  void expand() {
    const Index width = next_;
    // Q's block: A N, orthonormalised against Q; the projections are B's columns.
    a_.apply_batch(p_.col(s_).data(), cols_, q_.col(s_).data(), rows_, width);
    products_ += width;
    for (Index c = 0; c < width; ++c) scale_ = std::max(scale_, q_.col(s_ + c).norm());
    b_.middleCols(s_, width).setZero();
    const Index q_kept = orthonormalise(q_, s_, width, &b_, locked_left_, s_);
    // The space of Q is full only when rows < width + s; keep P and Q square.
    const Index added = std::min(width, q_kept);
    last_ = added;
    s_ += added;
    // N T: A^H of Q's new block, orthonormalised against P (N included, now part of it).
    // (Straight into P's free columns: a fresh buffer per step cost more
    // in page faults than the copy.)
    adjoint_.apply_batch(q_.col(s_ - added).data(), rows_, p_.col(s_).data(), cols_, added);
    WorkMatrix coupling = WorkMatrix::Zero(s_ + added, added);
    next_ = orthonormalise(p_, s_, added, &coupling, locked_right_);
    t_ = coupling.bottomRows(added).topRows(next_);  // N's rows: T
  }

  /// The SVD of B: Ritz values (descending), and the estimated residual of
  /// each, |T u_last|.
  void ritz() {
    svd_.compute(b_.topLeftCorner(s_, s_), Eigen::ComputeThinU | Eigen::ComputeThinV);
    estimates_.resize(s_);
    for (Index i = 0; i < s_; ++i)
      estimates_(i) = next_ == 0 ? Work(0)
                                 : (t_ * svd_.matrixU().col(i).tail(last_)).norm();
  }

  /// tolerance * sigma_1: below it, a residual is converged.
  Work threshold() const {
    return Work(settings_.tolerance) * std::max(Work(svd_.singularValues()(0)), Work(settings_.scale));
  }

  /// Every wanted residual estimate is below the threshold, and the last
  /// wanted value stands apart from the next Ritz value: by more than its
  /// residual (then its error is below the residual, Kato-Temple), or the
  /// next one has converged too. A Ritz vector that still mixes two close
  /// singular vectors has a small residual but lies between their values;
  /// this waits until the pair is resolved.
  bool estimated_converged(Index wanted) const {
    const Work limit = threshold();
    for (Index i = 0; i < std::min(wanted, s_); ++i)
      if (!(estimates_(i) <= limit)) return false;
    if (s_ < wanted) return false;
    if (s_ == wanted || wanted == 0) return true;
    const auto& theta = svd_.singularValues();
    return theta(wanted - 1) - theta(wanted) >= estimates_(wanted - 1) || estimates_(wanted) <= limit;
  }

  /// How many Ritz vectors a restart keeps: the wanted ones and a block
  /// more, or half the basis, leaving room for at least one block.
  Index kept(Index wanted) const {
    const Index most = basis_ - block_;
    return std::max<Index>(0, std::min({s_, most, std::max(wanted + block_, basis_ / 2)}));
  }

  /// Keeps the `keep` best Ritz vectors as the new basis (B becomes their
  /// values on the diagonal) and N as the next block.
  void restart(Index keep) {
    const Matrix<Scalar> u = svd_.matrixU().leftCols(keep).template cast<Scalar>();
    const Matrix<Scalar> v = svd_.matrixV().leftCols(keep).template cast<Scalar>();
    rotate_in_place(q_, u);
    rotate_in_place(p_, v);
    for (Index c = 0; c < next_; ++c) p_.col(keep + c) = p_.col(s_ + c);  // N: keep + c < s_ + c
    b_.setZero();
    for (Index i = 0; i < keep; ++i) b_(i, i) = WorkScalar(svd_.singularValues()(i));
    s_ = keep;
  }

  /// m's first r.cols() columns become m.leftCols(r.rows()) * r, in row
  /// blocks through a small buffer: no basis-sized temporaries, whose fresh
  /// pages (faulted in and zeroed at every restart) cost more than the product.
  void rotate_in_place(Matrix<Scalar>& m, const Matrix<Scalar>& r) {
    constexpr Index rows_per_block = 256;
    rotated_.resize(std::min(rows_per_block, m.rows()), r.cols());
    for (Index i = 0; i < m.rows(); i += rows_per_block) {
      const Index h = std::min(rows_per_block, m.rows() - i);
      auto out = rotated_.topRows(h);
      out.noalias() = m.block(i, 0, h, r.rows()) * r;
      m.block(i, 0, h, r.cols()) = out;
    }
  }

  /// The wanted Ritz triplets, their residuals measured with two batch
  /// products, and whether they meet the tolerance.
  LanczosResult<Scalar> finish(Index wanted) {
    LanczosResult<Scalar> r;
    const Index k = std::min(wanted, s_);
    r.values = svd_.singularValues().head(k).template cast<Real>();
    r.left = q_.leftCols(s_) * svd_.matrixU().leftCols(k).template cast<Scalar>();
    r.right = p_.leftCols(s_) * svd_.matrixV().leftCols(k).template cast<Scalar>();
    Matrix<Scalar> av(rows_, k), ahu(cols_, k);
    a_.apply_batch(r.right.data(), cols_, av.data(), rows_, k);
    adjoint_.apply_batch(r.left.data(), rows_, ahu.data(), cols_, k);
    r.products = products_ + k;
    r.residuals.resize(k);
    r.image_norms = av.colwise().norm().transpose();
    bool converged = estimated_converged(wanted) || next_ == 0;
    const auto limit = static_cast<Real>(threshold());
    for (Index i = 0; i < k; ++i) {
      const Real one = (av.col(i) - r.values(i) * r.left.col(i)).norm();
      const Real other = (ahu.col(i) - r.values(i) * r.right.col(i)).norm();
      r.residuals(i) = std::max(one, other);
      converged = converged && r.residuals(i) <= limit;
    }
    r.converged = converged;  // of the k found; lanczos_tall asks for all wanted
    return r;
  }

  const Operator& a_;
  decltype(std::declval<const Operator&>().adjoint()) adjoint_;
  LanczosSettings settings_;
  Index rows_, cols_, space_ = 0, basis_ = 0, block_ = 0;
  Matrix<Scalar> locked_left_, locked_right_;  // found before: every basis vector is orthogonal to them
  Matrix<Scalar> p_, q_;            // P and the pending block N after it; Q
  Matrix<Scalar> rotated_;          // restart()'s row block
  WorkMatrix b_, t_;                // B = Q^H A P; T of the last block
  Eigen::JacobiSVD<WorkMatrix> svd_;
  Vector<Work> estimates_;
  Index s_ = 0, next_ = 0, last_ = 0, products_ = 0;
  Real scale_ = 0;                  // the largest |A p| seen: the scale of "zero"
};

/// Appends the triplets of `more` to `r` and keeps the `wanted` largest.
template <class Scalar>
void merge_largest(LanczosResult<Scalar>& r, const LanczosResult<Scalar>& more, Index wanted) {
  const Index n = r.values.size() + more.values.size();
  std::vector<Index> order(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  const auto value = [&](Index i) { return i < r.values.size() ? r.values(i) : more.values(i - r.values.size()); };
  std::stable_sort(order.begin(), order.end(), [&](Index i, Index j) { return value(i) > value(j); });
  const Index k = std::min(wanted, n);
  LanczosResult<Scalar> merged;
  merged.values.resize(k);
  merged.residuals.resize(k);
  merged.image_norms.resize(k);
  merged.left.resize(r.left.rows(), k);
  merged.right.resize(r.right.rows(), k);
  for (Index c = 0; c < k; ++c) {
    const Index i = order[static_cast<std::size_t>(c)];
    const bool first = i < r.values.size();
    const Index j = first ? i : i - r.values.size();
    const auto& from = first ? r : more;
    merged.values(c) = from.values(j);
    merged.residuals(c) = from.residuals(j);
    merged.image_norms(c) = from.image_norms(j);
    merged.left.col(c) = from.left.col(j);
    merged.right.col(c) = from.right.col(j);
  }
  merged.converged = r.converged && more.converged;
  merged.products = r.products + more.products;
  r = std::move(merged);
}

/// The wanted largest singular triplets of a tall operator (rows >= cols).
/// A block of b vectors finds at most b copies of a repeated value, and
/// convolutions repeat values far more often (a 1x1 kernel: once per
/// position). So once the run has converged, the part of the operator
/// orthogonal to what it found is searched from a new random block: any
/// of its values above the k-th found belongs among the k largest, is
/// merged in, and the search repeats — until the largest value left is
/// not above the k-th.
template <class Operator>
LanczosResult<typename Operator::Scalar> lanczos_tall(const Operator& a, const LanczosSettings& settings) {
  using Scalar = typename Operator::Scalar;
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  const Index wanted = std::min(settings.wanted, a.cols());
  // The search rounds work orthogonally to the triplets found, whose
  // residuals leak into theirs: the runs aim 8 times below the tolerance
  // (no lower than rounding allows), so that what they lock is exact
  // enough for the next round to reach the tolerance itself.
  LanczosSettings tight = settings;
  if (wanted > 1)
    tight.tolerance = std::max(settings.tolerance / 8, 32.0 * double(std::numeric_limits<Real>::epsilon()));
  // Whether a run's measured residuals meet the caller's tolerance.
  const auto meets = [&](const LanczosResult<Scalar>& x, Real scale) {
    return x.converged ||
           (x.residuals.size() > 0 && x.residuals.maxCoeff() <= static_cast<Real>(settings.tolerance) * scale);
  };
  auto r = BlockLanczos<Operator>(a, tight).run();
  bool good = r.values.size() > 0 && meets(r, r.values(0));
  // A run ends short of `wanted` values only when its Krylov space is
  // exhausted (T^H T has fewer distinct values than wanted: a layer whose
  // values are all equal has a one-vector space); the rounds fill it up.
  // For the largest value alone the search is a probe of a quarter of the
  // products the run took (at least 20): a Ritz vector that mixes sigma_1
  // with a close sigma_2 can meet the tolerance at sigma_2, and leaves
  // sigma_1 strongly in the complement, where the probe finds it; proving
  // that nothing is missing would cost as much as the run again.
  const bool probe = wanted == 1;
  for (std::uint64_t round = 1; good; ++round) {
    const bool short_of_wanted = r.values.size() < wanted;
    if (r.right.cols() >= a.cols() || r.products >= settings.max_products) {  // nothing left / no budget
      good = probe || (!short_of_wanted && r.right.cols() >= a.cols());
      break;
    }
    LanczosSettings search = tight;
    search.wanted = std::min(settings.block, a.cols() - r.right.cols());
    search.max_products = settings.max_products - r.products;
    if (probe) search.max_products = std::min(search.max_products, std::max<Index>(20, r.products / 4));
    search.seed = settings.seed + 104729 * round;
    search.scale = static_cast<double>(r.values(0));
    const auto rest = BlockLanczos<Operator>(a, search, r.left, r.right).run();
    const bool rest_good = rest.values.size() > 0 && meets(rest, r.values(0));
    const Real floor = short_of_wanted ? -std::numeric_limits<Real>::infinity()
                                       : r.values(wanted - 1) + static_cast<Real>(settings.tolerance / 2) * r.values(0);
    if (rest.values.size() == 0 || rest.values(0) <= floor) {  // nothing missing
      r.products += rest.products;
      // A search that stopped short of its tolerance (not for want of
      // products) still settles it when its top value, plus the residual
      // that bounds its error, stays below the floor.
      good = probe || rest_good || (rest.values.size() > 0 && rest.products < search.max_products &&
                           rest.values(0) + rest.residuals(0) <= floor);
      break;
    }
    if (!rest_good) {
      r.products += rest.products;
      good = false;
      break;
    }
    merge_largest(r, rest, wanted);
  }
  r.converged = good && r.values.size() == wanted && meets(r, r.values(0));
  return r;
}

/// The `settings.wanted` largest singular triplets of `a` (see
/// BlockLanczos and lanczos_tall). A wide operator is run as its adjoint,
/// which is tall, so that the basis P can fill its whole space (then B's
/// values are exact); the triplets are swapped back.
template <class Operator>
LanczosResult<typename Operator::Scalar> block_lanczos(const Operator& a, const LanczosSettings& settings) {
  if (a.rows() >= a.cols()) return lanczos_tall(a, settings);
  const auto adjoint = a.adjoint();
  auto r = lanczos_tall(adjoint, settings);
  std::swap(r.left, r.right);
  return r;
}

}  // namespace convmat::detail

// ---- convmat/spectral.hpp (continued) ----------------------------------------
namespace convmat {

/// How the Lanczos iteration of spectral_norm, singular_values(spec, w, k),
/// largest_singular_values and spectral_norm_bound runs. Every field's
/// default (0) picks a value that suits the call.
struct SpectralNormOptions {
  /// Converged when every wanted singular triplet (sigma, u, v) has
  /// |T^H u - sigma v| <= tolerance * sigma_1 and |T v - sigma u| as small,
  /// both measured with the final vectors: each value is then within
  /// tolerance * sigma_1 of a singular value of T. 0: 1e-10 in double,
  /// 1e-5 in float (about where float products stop being exact enough).
  double tolerance = 0;
  /// The most products with T (each paired with one with T^H) before
  /// giving up (converged = false). 0: 1000 + 100 k for k values.
  Index max_iterations = 0;
  /// Vectors added per Lanczos step. Any block finds every copy of a
  /// repeated value: once the wanted values have converged, a fresh start
  /// orthogonal to them looks for copies that were missed. 0: 1, which took
  /// the fewest products on every layer measured (k = 6 of a 16384-column
  /// layer: 330-460 products with 1, 390-620 with 2, 700-1200 with 4).
  Index block_size = 0;
  /// The most basis vectors kept before a restart. 0: max(40, 3 k + 2 b).
  Index basis_size = 0;
  /// Seed of the random starting block; the result is deterministic.
  std::uint64_t seed = 2019;
};

/// What spectral_norm found.
template <class Real>
struct SpectralNorm {
  Real value = 0;          ///< the largest Ritz value: never above ||T||, up to rounding
  bool converged = false;  ///< whether `residual` met the tolerance within max_iterations
  Index iterations = 0;    ///< products with T performed (as many with T^H)
  Real residual = 0;       ///< max(|T^H u - value v|, |T v - value u|) / value, measured
};

/// The k largest singular values of an operator, with what the iteration reached.
template <class Real>
struct SingularValues {
  /// Descending: the k asked for, or fewer when max_iterations stopped the
  /// iteration before its basis held k vectors (converged is then false).
  convmat::Vector<Real> values;
  convmat::Vector<Real> residuals;  ///< of each value's triplet, measured (absolute)
  bool converged = false;          ///< all k found, every residual <= tolerance * values(0)
  Index iterations = 0;            ///< products with T performed (as many with T^H)
};

/// A certified bracket of the spectral norm: lower <= ||T||_2 <= upper.
template <class Real>
struct SpectralNormBound {
  Real lower = 0;  ///< |T v| for a unit vector v (the Lanczos estimate's): always <= ||T||
  Real upper = 0;  ///< by the FFT of the circulant layer T is part of: always >= ||T||
  bool converged = false;  ///< whether the Lanczos estimate behind `lower` converged
  Index iterations = 0;    ///< products with T it took
};

namespace detail {

/// The Lanczos settings for k values of a layer of scalar type Scalar.
template <class Scalar>
LanczosSettings lanczos_settings(const SpectralNormOptions& options, Index k, const char* caller) {
  if (!(options.tolerance >= 0) || !std::isfinite(options.tolerance) || options.max_iterations < 0 ||
      options.block_size < 0 || options.basis_size < 0)
    fail(caller, ": tolerance must be finite and non-negative, and max_iterations, block_size and basis_size "
                 "not negative: tolerance=", options.tolerance, ", max_iterations=", options.max_iterations,
         ", block_size=", options.block_size, ", basis_size=", options.basis_size);
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  LanczosSettings s;
  s.wanted = k;
  s.tolerance = options.tolerance > 0 ? options.tolerance : std::is_same_v<Real, float> ? 1e-5 : 1e-10;
  s.max_products = options.max_iterations > 0 ? options.max_iterations : 1000 + 100 * k;
  s.block = options.block_size > 0 ? options.block_size : 1;
  s.basis = options.basis_size > 0 ? options.basis_size : std::max<Index>(40, 3 * k + 2 * s.block);
  s.seed = options.seed;
  return s;
}

template <class Scalar>
SpectralNorm<typename Eigen::NumTraits<Scalar>::Real> spectral_norm_of(const LanczosResult<Scalar>& r) {
  SpectralNorm<typename Eigen::NumTraits<Scalar>::Real> n;
  n.value = r.values(0);
  n.converged = r.converged;
  n.iterations = r.products;
  n.residual = n.value > 0 ? r.residuals(0) / n.value : r.residuals(0);
  return n;
}

/// The circulant model of a layer (detail/circulant.hpp).
template <int Rank>
CirculantModel<Rank> circulant_model_of(const ConvSpec<Rank>& spec) {
  return circulant_model<Rank>(conv_axes(spec), spec.in_channels, spec.out_channels, spec.groups);
}
template <int Rank>
CirculantModel<Rank> circulant_model_of(const ConvTransposeSpec<Rank>& spec) {
  return circulant_model<Rank>(conv_axes(spec), spec.out_channels, spec.in_channels, spec.groups);
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

template <class Spec>
void check_wanted(const Spec& spec, Index k) {
  const Index most = std::min(spec.output_numel(), spec.input_numel());
  if (k < 1 || k > most)
    fail("singular_values: k must be between 1 and min(output_numel, input_numel) = ", most, ", not ", k);
}

template <class Real>
convmat::Vector<Real> converged_values(const SingularValues<Real>& r, const SpectralNormOptions& options,
                                      const char* what) {
  if (!r.converged) {
    const Real worst = r.residuals.size() ? r.residuals.maxCoeff() : Real(0);
    fail_convergence("singular_values: the ", r.values.size(), " largest singular values of ", what,
                     " did not converge in ", r.iterations, " products: the largest residual is ",
                     r.values.size() && r.values(0) > 0 ? worst / r.values(0) : worst,
                     " of sigma_1, the tolerance ",
                     options.tolerance > 0 ? options.tolerance : std::is_same_v<Real, float> ? 1e-5 : 1e-10,
                     "; raise SpectralNormOptions::max_iterations or the tolerance, or call "
                     "largest_singular_values for the estimates as they are");
  }
  return r.values;
}

/// The certified upper bound of ||T|| from the circulant model: ||P|| times
/// the largest frequency norm, computed in double, raised by a margin
/// that covers the rounding of the FFT and the eigenvalue solver.
template <int Rank, class Scalar>
double circulant_upper_bound(const CirculantModel<Rank>& model, const Scalar* w) {
  const double norm = circulant_norm(model, w);
  double log_grid = 0;
  for (Index n : model.grid) log_grid += std::log2(static_cast<double>(n) + 1);
  const double terms = static_cast<double>(model.columns_per_group() + model.out_per_group() +
                                           static_cast<Index>(model.tap_shift.size())) + log_grid;
  const double margin = 64 * std::numeric_limits<double>::epsilon() * terms;
  return model.padding_norm * norm * (1 + margin);
}

}  // namespace detail

/// The k largest singular values of any matrix-free operator `op` (a
/// ConvOperator, or anything with rows(), cols(), adjoint() and
/// apply_batch(x, x_stride, y, y_stride, batch)) by block Golub-Kahan-
/// Lanczos bidiagonalisation with full reorthogonalisation and thick
/// restarts, with the residuals reached. Never throws for convergence:
/// see `converged`.
template <class Operator>
SingularValues<typename Eigen::NumTraits<typename Operator::Scalar>::Real> largest_singular_values(
    const Operator& op, Index k, const SpectralNormOptions& options = {}) {
  using Scalar = typename Operator::Scalar;
  const Index most = std::min(op.rows(), op.cols());
  if (k < 1 || k > most)
    detail::fail("largest_singular_values: k must be between 1 and min(rows, cols) = ", most, ", not ", k);
  const auto r = detail::block_lanczos(op, detail::lanczos_settings<Scalar>(options, k, "largest_singular_values"));
  return {r.values, r.residuals, r.converged, r.products};
}

/// The largest singular value of the layer's matrix T (its spectral norm,
/// the layer's Lipschitz constant in the 2-norm), by block Lanczos on the
/// matrix-free operator: any spec, any size. Clustered and repeated top
/// values converge as isolated ones do; `residual` says what was reached.
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, const SpectralNormOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  return detail::spectral_norm_of(
      detail::block_lanczos(make_operator(spec, weight), detail::lanczos_settings<Scalar>(options, 1, "spectral_norm")));
}

/// The largest singular value of a transposed layer's matrix (the same as
/// that of the convolution it is the adjoint of).
template <int Rank, class Derived>
SpectralNorm<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight,
    const SpectralNormOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  return detail::spectral_norm_of(
      detail::block_lanczos(make_operator(spec, weight), detail::lanczos_settings<Scalar>(options, 1, "spectral_norm")));
}

/// Whether the layer's matrix is block-circulant, so singular_values takes
/// the exact FFT path: circular padding and, in every dimension, a stride
/// that divides the input with output_size == input_size / stride (with
/// stride 1: the size kept), any kernel, dilation, padding split,
/// channels and groups.
template <int Rank>
bool is_block_circulant(const ConvSpec<Rank>& spec) {
  spec.validate();
  return spec.padding_mode == PaddingMode::circular && detail::circulant_model_of(spec).exact;
}

/// All singular values of the layer's matrix T, descending: min(output_numel,
/// input_numel) of them, as a vector of the weights' real type. When
/// is_block_circulant(spec), exactly through the FFT in O(C_out C_in N log N
/// + N groups (C/groups)^3) for N spatial positions; otherwise by an SVD of
/// the dense matrix (O(m n^2)). Both are held to max_dense_bytes()
/// (memory_limit_error beyond it).
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::conv_weight_layout);
  if (is_block_circulant(spec))
    return detail::sorted_descending(detail::circulant_singular_values(detail::circulant_model_of(spec), w.data()));
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

/// All singular values of a transposed layer's matrix, descending: those of
/// the convolution it is the adjoint of, by an SVD of the dense matrix.
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), detail::transpose_weight_layout);
  return detail::sorted_descending(detail::dense_singular_values(g, w.data()));
}

/// The k largest singular values of the layer's matrix T, descending, for
/// a layer of any size: exactly by the FFT when is_block_circulant(spec)
/// (and its spectra fit in max_dense_bytes()), else by
/// largest_singular_values on the matrix-free operator. Throws
/// convergence_error if those did not converge within
/// options.max_iterations (largest_singular_values returns them as they are).
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, Index k,
    const SpectralNormOptions& options = {}) {
  detail::check_wanted(spec, k);
  const auto w = detail::weight_view(weight, spec.weight_numel(), detail::conv_weight_layout);
  if (is_block_circulant(spec)) {
    const auto model = detail::circulant_model_of(spec);
    if (detail::circulant_values_fit<typename Derived::Scalar>(model))  // else the iteration: it needs the operator only
      return detail::sorted_descending(detail::circulant_singular_values(model, w.data())).head(k).eval();
  }
  return detail::converged_values(largest_singular_values(make_operator(spec, w), k, options), options, "the layer");
}

/// The k largest singular values of a transposed layer's matrix, by
/// largest_singular_values on its operator (convergence_error if they did
/// not converge).
template <int Rank, class Derived>
convmat::Vector<typename Eigen::NumTraits<typename Derived::Scalar>::Real> singular_values(
    const ConvTransposeSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight, Index k,
    const SpectralNormOptions& options = {}) {
  detail::check_wanted(spec, k);
  return detail::converged_values(largest_singular_values(make_operator(spec, weight), k, options), options,
                                  "the transposed layer");
}

/// A certified bracket lower <= ||T||_2 <= upper for every padding mode,
/// stride, dilation and group count, and for transposed layers: `upper`
/// is ||P|| times the norm of the circulant convolution T is a restriction
/// of (exact by the FFT; P the padding operator, of norm 1 for zeros and
/// for circular padding whose strides divide the input), raised by a
/// rounding margin; `lower` is |T v| for the unit vector v of the Lanczos
/// estimate. Everything runs in double (a float layer's weights are exact
/// in it), so the bracket holds for the weights as given.
template <class Spec, class Derived>
SpectralNormBound<typename Eigen::NumTraits<typename Derived::Scalar>::Real> spectral_norm_bound(
    const Spec& spec, const Eigen::MatrixBase<Derived>& weight, const SpectralNormOptions& options = {}) {
  using Real = typename Eigen::NumTraits<typename Derived::Scalar>::Real;
  using Work = std::conditional_t<Eigen::NumTraits<typename Derived::Scalar>::IsComplex, std::complex<double>, double>;
  const convmat::Vector<Work> w = detail::weight_view(weight, spec.weight_numel(), detail::weight_layout(spec)).template cast<Work>();
  const auto settings = detail::lanczos_settings<Work>(options, 1, "spectral_norm_bound");
  // The upper bound first: the FFT (milliseconds to a second), then the
  // Lanczos estimate (the products) for the lower one.
  const double upper = detail::circulant_upper_bound(detail::circulant_model_of(spec), w.data());
  const auto lanczos = detail::block_lanczos(make_operator(spec, w), settings);
  SpectralNormBound<Real> bound;
  const double lower = lanczos.image_norms(0) / lanczos.right.col(0).norm();
  // Lowered past the rounding of the product |T v| (relative 1e-12 covers
  // any layer whose entries per row are fewer than 10^3), then rounded
  // down and up to the weights' type, so the bracket still holds. (Rounded
  // down from the lowered value: a float rounded to nearest would undo the
  // margin, and a norm that is itself a float, as circular layers' often
  // are, came out 3e-16 above the exact one.)
  const double lowered = lower * (1 - 1e-12);
  bound.lower = static_cast<Real>(lowered);
  if (bound.lower > lowered) bound.lower = std::nextafter(bound.lower, Real(0));
  CONVMAT_ASSERT(upper >= lower, "the certified upper bound is at least the Lanczos lower bound");
  bound.upper = static_cast<Real>(upper);
  if (bound.upper < upper) bound.upper = std::nextafter(bound.upper, std::numeric_limits<Real>::infinity());
  bound.converged = lanczos.converged;
  bound.iterations = lanczos.products;
  return bound;
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
    unfold_block_into(g, x, whole_input(g), begin, end, 0, g.output_spatial, columns + begin * g.output_spatial,
                      g.output_spatial);
  });
}

/// fold: the adjoint of unfold_into; x is overwritten. The rows of one
/// channel add into that channel's inputs only, so with OpenMP whole
/// channels are split over threads.
template <int Rank, class Scalar>
void fold_into(const Geometry<Rank>& g, const Scalar* columns, Scalar* x) {
  const Index kn = g.kernel_numel;
  parallel_chunks(0, g.in_channels, std::max<Index>(1, unfold_grain(g) / kn), [&](Index begin, Index end) {
    std::fill(x + begin * g.input_spatial, x + end * g.input_spatial, Scalar(0));
    fold_block_add(g, columns + begin * kn * g.output_spatial, g.output_spatial, begin * kn, end * kn, 0,
                   g.output_spatial, x, whole_input(g));
  });
}

}  // namespace detail

/// The unfold (im2col) matrix of one sample `input` (input_numel values):
/// (in_channels * prod(kernel_size)) x prod(output_size), rows ordered
/// (channel, k0, k1, ...), columns by output position, as
/// torch.nn.functional.unfold — for any rank and, beyond PyTorch, every
/// padding mode (an entry reads what the padded input holds there).
template <int Rank, class Derived>
convmat::RowMajorMatrix<typename Derived::Scalar> unfold(const ConvSpec<Rank>& spec,
                                                        const Eigen::MatrixBase<Derived>& input) {
  const auto g = detail::geometry(spec);
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  if (x.cols() != 1) detail::fail("unfold takes one sample: input has ", x.cols(), " columns");
  detail::check_dense_size(detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial,
                           sizeof(typename Derived::Scalar), "the unfold matrix", detail::unfold_hint);
  convmat::RowMajorMatrix<typename Derived::Scalar> columns(
      detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows"), g.output_spatial);
  detail::unfold_into(g, x.data(), columns.data());
  return columns;
}

/// The adjoint of unfold: sums each column's entries back into the input
/// positions they were read from (torch.nn.functional.fold). Returns a
/// vector of input_numel values.
template <int Rank, class Derived>
convmat::Vector<typename Derived::Scalar> fold(const ConvSpec<Rank>& spec,
                                              const Eigen::MatrixBase<Derived>& columns) {
  using Scalar = typename Derived::Scalar;
  const auto g = detail::geometry(spec);
  const Index rows = detail::checked_mul(g.in_channels, g.kernel_numel, "unfold rows");
  if (columns.rows() != rows || columns.cols() != g.output_spatial)
    detail::fail("fold needs a ", rows, " x ", g.output_spatial,
                 " matrix (in_channels * prod(kernel_size) x prod(output_size)), not ", columns.rows(),
                 " x ", columns.cols());
  detail::check_dense_size(g.input_numel(), 1, sizeof(Scalar), "the folded vector", detail::unfold_hint);
  const convmat::RowMajorMatrix<Scalar> c = columns;  // row-major, as unfold() returns
  convmat::Vector<Scalar> x(g.input_numel());
  detail::fold_into(g, c.data(), x.data());
  return x;
}

/// The convolution of every column of `input` through unfold and one
/// matrix product per group: the same result as convolve(), by another
/// road — the one ConvOperator's products take (detail::unfold_multiply).
/// The unfold matrix is never held whole: it is built and multiplied a
/// panel of about 512 columns at a time, while the panel is in the cache;
/// with OpenMP the panels are shared among the threads.
template <int Rank, class WeightDerived, class InputDerived>
convmat::Matrix<typename WeightDerived::Scalar> convolve_unfold(
    const ConvSpec<Rank>& spec, const Eigen::MatrixBase<WeightDerived>& weight,
    const Eigen::MatrixBase<InputDerived>& input) {
  static_assert(detail::same_scalar<WeightDerived, InputDerived>::value);
  using Scalar = typename WeightDerived::Scalar;
  const auto g = detail::geometry(spec);
  const auto w = detail::weight_view(weight, g.weight_numel(), "(out_channels, in_channels / groups, kernel...)");
  const auto x = detail::batch_view(input, g.input_numel(), "input");
  detail::check_dense_size(g.output_numel(), x.cols(), sizeof(Scalar), "the output", detail::batch_hint);
  convmat::Matrix<Scalar> y(g.output_numel(), x.cols());
  detail::unfold_multiply(g, w.data(), x.data(), x.outerStride(), detail::whole_input(g), y.data(), y.rows(),
                          x.cols(), detail::whole_output(g));
  return y;
}

}  // namespace convmat
