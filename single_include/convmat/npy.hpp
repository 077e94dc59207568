// convmat 0.1.0 — NumPy's .npy files, in one header.
// SPDX-License-Identifier: MIT
//
// GENERATED FILE — DO NOT EDIT. Edit the headers under include/convmat/ and
// regenerate it from the repository's root with:
//   python3 tools/make_single_header.py
// It holds include/convmat/npy.hpp, which stands outside the umbrella
// convmat.hpp (it reads and writes files); it needs only Eigen 3.4+ and C++17.
#pragma once

// ---- convmat/npy.hpp ---------------------------------------------------------
// NumPy's .npy files: PyTorch weights in (numpy.save(path,
// conv.weight.detach().numpy())), matrices out for numpy.load. Float32 and
// float64, little-endian, C order, any rank, header format versions 1.0,
// 2.0 and 3.0.
//
//     #include <convmat/npy.hpp>
//     const auto w = convmat::npy::load("w.npy");            // shape (6, 3, 5, 5), float32
//     const auto T = convmat::conv_matrix(spec, w.vector<float>());
//     convmat::npy::save("T.npy", T);                         // numpy.load gives T back
//
// A file is untrusted input: every way it can be wrong is a
// convmat::npy::error naming the file and what was found there, and
// nothing is allocated for data the file does not actually hold (a header
// that promises 2^60 elements is an error, not an allocation).
//
// Not part of the umbrella <convmat/convmat.hpp>: it reads and writes files
// (<fstream>, <filesystem>), which the header-only core never does, and
// needs nothing of the core. Include it on its own.
//
// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html

#include <Eigen/Core>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

// The data is read and written as it lies in memory: little-endian.
#if defined(__BYTE_ORDER__)
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "convmat/npy.hpp reads and writes little-endian data as is; this machine is big-endian"
#endif
#elif !defined(_MSC_VER)  // every MSVC target is little-endian
#error "convmat/npy.hpp cannot tell this machine's byte order; it reads and writes little-endian data as is"
#endif

namespace convmat::npy {

/// A .npy file that cannot be read (it is missing, is not a .npy file, is
/// truncated, holds another dtype, ...) or written. The message names the
/// file and what was found in it. Not a convmat::spec_error: a bad file
/// is not a layer that cannot exist, and callers usually answer it
/// differently ("check the file" rather than "check the layer").
class error : public std::runtime_error {
 public:
  explicit error(const std::string& message) : std::runtime_error(message) {}
};

/// The element types read and written: NumPy's float32 and float64.
enum class Dtype { float32, float64 };

/// NumPy's name of a dtype: "float32" or "float64".
inline const char* dtype_name(Dtype dtype) { return dtype == Dtype::float32 ? "float32" : "float64"; }
/// Bytes per element: 4 or 8.
inline std::size_t dtype_size(Dtype dtype) { return dtype == Dtype::float32 ? 4 : 8; }
/// The header's `descr` of a dtype: "<f4" or "<f8".
inline const char* dtype_descr(Dtype dtype) { return dtype == Dtype::float32 ? "<f4" : "<f8"; }

/// The Dtype of float or double.
template <class Scalar>
constexpr Dtype dtype_of() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "convmat::npy reads and writes float (float32) and double (float64)");
  return std::is_same_v<Scalar, float> ? Dtype::float32 : Dtype::float64;
}

/// An array's shape, as NumPy's: one extent per dimension, () for a scalar.
using Shape = std::vector<std::int64_t>;

/// A shape as NumPy prints it: "(3, 2, 3, 3)", "(5,)", "()".
inline std::string shape_string(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

/// What a .npy header says: the array's dtype and shape, and where its
/// data begins.
struct Header {
  Dtype dtype = Dtype::float32;
  Shape shape;
  int version = 1;             ///< the format's major version: 1, 2 or 3
  std::size_t data_offset = 0;  ///< bytes before the data: magic, version, length, dict

  /// The number of elements (1 for shape ()); the reader has checked that
  /// numel() * dtype_size(dtype) fits in 64 bits.
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= static_cast<std::uint64_t>(d);
    return n;
  }
  std::uint64_t data_bytes() const { return numel() * dtype_size(dtype); }
};

/// An array read from a .npy file: dtype, shape and the raw little-endian
/// data in C order.
struct Array {
  Dtype dtype = Dtype::float32;
  Shape shape;
  std::vector<unsigned char> bytes;  ///< numel() * dtype_size(dtype) bytes

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }

  /// The elements in C order, converted to Scalar (float64 -> float32 rounds).
  template <class Scalar>
  std::vector<Scalar> values() const {
    std::vector<Scalar> out(checked_numel());
    copy_to(out.data());
    return out;
  }

  /// The elements flattened in C order, converted to Scalar: what convmat
  /// takes as a layer's weights, however many dimensions the array has.
  template <class Scalar>
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> vector() const {
    Eigen::Matrix<Scalar, Eigen::Dynamic, 1> out(static_cast<Eigen::Index>(checked_numel()));
    copy_to(out.data());
    return out;
  }

  /// A 2-D array as a row-major matrix (a 1-D one as a single row),
  /// converted to Scalar; error for any other rank.
  template <class Scalar>
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> matrix() const {
    if (shape.size() != 1 && shape.size() != 2)
      throw error("an array of shape " + shape_string(shape) + " is not a matrix: it has " +
                  std::to_string(shape.size()) + " dimensions, not 1 or 2");
    (void)checked_numel();
    const Eigen::Index rows = shape.size() == 2 ? shape[0] : 1, cols = shape.back();
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(rows, cols);
    copy_to(out.data());
    return out;
  }

 private:
  /// numel(), once the bytes are checked to hold exactly that many elements.
  std::size_t checked_numel() const {
    std::size_t n = 1;
    for (auto d : shape) {
      if (d < 0 || (d != 0 && n > std::numeric_limits<std::size_t>::max() / dtype_size(dtype) / static_cast<std::size_t>(d)))
        throw error("an array of shape " + shape_string(shape) + " cannot exist");
      n *= static_cast<std::size_t>(d);
    }
    if (bytes.size() != n * dtype_size(dtype))
      throw error("an array of shape " + shape_string(shape) + " and dtype " + dtype_name(dtype) + " holds " +
                  std::to_string(bytes.size()) + " bytes, not " + std::to_string(n * dtype_size(dtype)));
    return n;
  }

  template <class Scalar>
  void copy_to(Scalar* out) const {
    if (dtype == dtype_of<Scalar>()) {
      if (!bytes.empty()) std::memcpy(out, bytes.data(), bytes.size());
    } else if (dtype == Dtype::float32) {
      convert<float>(out);
    } else {
      convert<double>(out);
    }
  }
  template <class Stored, class Scalar>
  void convert(Scalar* out) const {
    const std::size_t n = bytes.size() / sizeof(Stored);
    for (std::size_t i = 0; i < n; ++i) {
      Stored v;
      std::memcpy(&v, bytes.data() + i * sizeof(Stored), sizeof(Stored));
      out[i] = static_cast<Scalar>(v);
    }
  }
};

/// The longest header dict read: NumPy's own default (max_header_size,
/// 10000 bytes), far more than any shape needs.
inline constexpr std::size_t max_header_bytes = 10000;

namespace detail {

/// `text` fit for an error message: non-printable bytes as \xNN, at most
/// `limit` characters.
inline std::string printable(std::string_view text, std::size_t limit = 160) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return text.size() > limit ? out + "..." : out;
}

/// The header's dict, a Python literal such as
/// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 3, 3), }
/// parsed strictly: exactly the three keys NumPy writes, once each.
class DictParser {
 public:
  DictParser(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  struct Dict {
    std::string descr;
    bool fortran_order = false;
    Shape shape;
  };

  Dict parse() {
    Dict d;
    bool has_descr = false, has_order = false, has_shape = false;
    expect('{');
    skip_space();
    while (peek() != '}') {
      const std::string key = string_literal();
      expect(':');
      skip_space();
      if (key == "descr" && !has_descr) {
        d.descr = string_literal();
        has_descr = true;
      } else if (key == "fortran_order" && !has_order) {
        d.fortran_order = boolean();
        has_order = true;
      } else if (key == "shape" && !has_shape) {
        d.shape = tuple();
        has_shape = true;
      } else if (key == "descr" || key == "fortran_order" || key == "shape") {
        bad("the key '" + key + "' appears twice");
      } else {
        bad("unknown key '" + printable(key) + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++at_;
        skip_space();
      } else if (peek() != '}') {
        bad("expected ',' or '}' at character " + std::to_string(at_));
      }
    }
    ++at_;
    skip_space();
    if (at_ != text_.size()) bad("something follows the closing '}' at character " + std::to_string(at_));
    if (!has_descr || !has_order || !has_shape) bad("it lacks one of 'descr', 'fortran_order', 'shape'");
    return d;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    throw error("'" + name_ + "' is not a valid .npy file: its header " + printable(text_) + " cannot be read (" +
                why + ")");
  }
  char peek() const { return at_ < text_.size() ? text_[at_] : '\0'; }
  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\t' || text_[at_] == '\n')) ++at_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) bad(std::string("expected '") + c + "' at character " + std::to_string(at_));
    ++at_;
  }
  std::string string_literal() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') bad("expected a string at character " + std::to_string(at_));
    const auto end = text_.find(quote, at_ + 1);
    if (end == std::string_view::npos) bad("a string is not terminated");
    std::string s(text_.substr(at_ + 1, end - at_ - 1));
    if (s.find('\\') != std::string::npos) bad("a string holds an escape sequence, which NumPy never writes");
    at_ = end + 1;
    return s;
  }
  bool boolean() {
    if (text_.substr(at_, 4) == "True") return at_ += 4, true;
    if (text_.substr(at_, 5) == "False") return at_ += 5, false;
    bad("fortran_order is neither True nor False");
  }
  Shape tuple() {
    expect('(');
    Shape values;
    skip_space();
    while (peek() != ')') {
      std::int64_t v = 0;
      bool digits = false;
      while (peek() >= '0' && peek() <= '9') {
        const int digit = peek() - '0';
        if (v > (std::numeric_limits<std::int64_t>::max() - digit) / 10) bad("a dimension overflows 64 bits");
        v = v * 10 + digit;
        digits = true;
        ++at_;
      }
      if (peek() == 'L') ++at_;  // Python 2's long
      if (!digits) bad("the shape holds something other than non-negative integers");
      values.push_back(v);
      skip_space();
      if (peek() == ',') {
        ++at_;
        skip_space();
      } else if (peek() != ')') {
        bad("expected ',' or ')' in the shape at character " + std::to_string(at_));
      }
    }
    ++at_;
    return values;
  }

  std::string_view text_;
  const std::string& name_;
  std::size_t at_ = 0;
};

inline std::uint32_t little_endian(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

[[noreturn]] inline void truncated_header(const std::string& name) {
  throw error("'" + name + "' is truncated: it ends inside its .npy header");
}

}  // namespace detail

/// Reads a .npy header from `in`, positioned at the start of the file, and
/// leaves `in` at the start of the data. `name` (the file's path) is what
/// error messages call the file. Throws error if it is not a .npy file
/// (magic), has an unknown format version, a header longer than
/// max_header_bytes or one that cannot be read, another dtype than
/// float32 / float64, Fortran order, or a shape whose size overflows.
inline Header read_header(std::istream& in, const std::string& name) {
  unsigned char start[12] = {};
  in.read(reinterpret_cast<char*>(start), 8);
  if (in.gcount() < 8 || std::memcmp(start, "\x93NUMPY", 6) != 0)
    throw error("'" + name +
                "' is not a .npy file (it does not start with \\x93NUMPY); save the weights with "
                "numpy.save(path, array)");
  Header h;
  h.version = start[6];
  const int minor = start[7];
  if (h.version < 1 || h.version > 3)
    throw error("'" + name + "' is a .npy file of format version " + std::to_string(h.version) + "." +
                std::to_string(minor) + ", which convmat does not know (it reads 1.0, 2.0 and 3.0)");
  const int length_bytes = h.version == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(start + 8), length_bytes);
  if (in.gcount() < length_bytes) detail::truncated_header(name);
  const std::size_t header_length = detail::little_endian(start + 8, length_bytes);
  if (header_length > max_header_bytes)
    throw error("'" + name + "' is not a valid .npy file: it claims a header of " + std::to_string(header_length) +
                " bytes, more than the " + std::to_string(max_header_bytes) + " NumPy reads");
  h.data_offset = 8 + static_cast<std::size_t>(length_bytes) + header_length;
  std::string text(header_length, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_length));
  if (static_cast<std::size_t>(in.gcount()) != header_length) detail::truncated_header(name);
  // NumPy pads the dict with spaces to an aligned length and ends it with '\n'.
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\0')) text.pop_back();
  const auto dict = detail::DictParser(text, name).parse();

  const std::string& descr = dict.descr;
  if (descr == "<f4" || descr == "=f4") {
    h.dtype = Dtype::float32;
  } else if (descr == "<f8" || descr == "=f8") {
    h.dtype = Dtype::float64;
  } else if (descr == ">f4" || descr == ">f8") {
    throw error("'" + name + "' holds big-endian floats (dtype '" + descr +
                "'); convmat reads little-endian float32 or float64: save array.astype('<f" + descr.substr(2) + "')");
  } else {
    throw error("'" + name + "' has dtype '" + detail::printable(descr) +
                "', which convmat does not read: it takes float32 ('<f4') or float64 ('<f8'); "
                "save array.astype(numpy.float32)");
  }
  h.shape = dict.shape;
  if (dict.fortran_order && h.shape.size() > 1)
    throw error("'" + name + "' is stored in Fortran order (shape " + shape_string(h.shape) +
                "); convmat reads C order: save numpy.ascontiguousarray(array)");
  std::uint64_t bytes = dtype_size(h.dtype);
  for (auto d : h.shape) {
    if (d != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(d))
      throw error("'" + name + "' has shape " + shape_string(h.shape) + ", whose " + dtype_name(h.dtype) +
                  " data would pass 2^64 bytes");
    bytes *= static_cast<std::uint64_t>(d);
  }
  if (bytes > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    throw error("'" + name + "' has shape " + shape_string(h.shape) + ", whose " + dtype_name(h.dtype) +
                " data would pass 2^63 bytes");
  return h;
}

namespace detail {

/// Appends the data that `header` describes from `in` to array.bytes
/// (empty, perhaps with capacity reserved). Memory grows with what
/// actually arrives — as much again as has been read, from 64 KiB up to
/// 64 MiB at a time — so a stream shorter than its header promises is an
/// error after reading what is there, never an allocation of what was
/// promised.
inline void read_data_into(std::istream& in, const Header& header, const std::string& name, Array& array) {
  constexpr std::uint64_t first_step = std::uint64_t{1} << 16, last_step = std::uint64_t{1} << 26;
  array.dtype = header.dtype;
  array.shape = header.shape;
  const std::uint64_t total = header.data_bytes();
  if (total > std::numeric_limits<std::size_t>::max())
    throw error("'" + name + "' has shape " + shape_string(header.shape) + ", too large for this machine");
  while (array.bytes.size() < total) {
    const std::size_t have = array.bytes.size();
    const std::uint64_t step = std::clamp<std::uint64_t>(have, first_step, last_step);
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(total - have, step));
    array.bytes.resize(have + want);
    in.read(reinterpret_cast<char*>(array.bytes.data() + have), static_cast<std::streamsize>(want));
    const auto got = static_cast<std::uint64_t>(in.gcount());
    if (got != want)
      throw error("'" + name + "' is truncated: its header promises shape " + shape_string(header.shape) + " of " +
                  dtype_name(header.dtype) + ", " + std::to_string(total) + " bytes of data, but it holds " +
                  std::to_string(have + got));
  }
}

}  // namespace detail

/// Reads the data that `header` describes from `in`, left at its start by
/// read_header, allocating only as much as actually arrives.
inline Array read_data(std::istream& in, const Header& header, const std::string& name) {
  Array array;
  detail::read_data_into(in, header, name, array);
  return array;
}

/// Reads a whole .npy array from `in`: read_header, then read_data. What
/// follows the data is left unread (NumPy can save several arrays into one
/// file object).
inline Array read(std::istream& in, const std::string& name) { return read_data(in, read_header(in, name), name); }

/// Reads the .npy file at `path`. Throws error naming the file if it is a
/// directory or cannot be opened (with the system's reason), for anything
/// read_header refuses, and if the file is shorter or longer than its
/// header says — checked against the file's size before any data is read.
inline Array load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw error("cannot read '" + path + "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("cannot open '" + path + "': " + std::strerror(errno));
  const Header header = read_header(in, path);
  // A regular file's size is known: compare it with the header's promise
  // before reading (a pipe or a device is read until its data ends).
  const bool regular = fs::is_regular_file(path, ec);
  const std::uint64_t file_bytes = regular ? fs::file_size(path, ec) : 0;
  const bool size_known = regular && !ec;
  const std::uint64_t expected = header.data_offset + header.data_bytes();
  if (size_known && file_bytes != expected)
    throw error("'" + path + "' is " + (file_bytes < expected ? "truncated" : "longer than its header says") +
                ": its header promises shape " + shape_string(header.shape) + " of " + dtype_name(header.dtype) +
                ", " + std::to_string(header.data_bytes()) + " bytes of data, but the file has " +
                std::to_string(file_bytes - std::min<std::uint64_t>(file_bytes, header.data_offset)));
  Array array;
  if (size_known && header.data_bytes() <= std::numeric_limits<std::size_t>::max())
    array.bytes.reserve(static_cast<std::size_t>(header.data_bytes()));  // the file holds them
  detail::read_data_into(in, header, path, array);
  return array;
}

/// The .npy header (format 1.0; 2.0 if the dict would pass 65535 bytes),
/// padded with spaces so that the data starts at a multiple of 64 bytes,
/// as numpy.save writes it, for a C-order array of `dtype` and `shape`.
inline std::string header(Dtype dtype, const Shape& shape) {
  std::string dict = std::string("{'descr': '") + dtype_descr(dtype) +
                     "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
  const bool version_2 = dict.size() + 11 > 65535;
  const std::size_t prefix = version_2 ? 12 : 10;
  const std::size_t total = prefix + dict.size() + 1;
  dict.append((total + 63) / 64 * 64 - total, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version_2 ? 2 : 1);
  out += '\0';
  for (std::size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((dict.size() >> (8 * i)) & 0xff);
  return out + dict;
}

/// The size in bytes of the .npy file of a C-order array (saturating at
/// the largest uint64).
inline std::uint64_t file_bytes(Dtype dtype, const Shape& shape) {
  constexpr auto most = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t n = dtype_size(dtype);
  for (auto d : shape) {
    const auto e = static_cast<std::uint64_t>(d);
    n = e != 0 && n > most / e ? most : n * e;
  }
  const std::uint64_t h = header(dtype, shape).size();
  return n > most - h ? most : n + h;
}

/// Writes `array` (float or double) as a .npy file to `out`: a vector
/// (one compile-time row or column) with shape (n,), anything else with
/// shape (rows, cols), in C order whatever its storage order.
template <class Derived>
void write(std::ostream& out, const Eigen::DenseBase<Derived>& array) {
  using Scalar = typename Derived::Scalar;
  const bool vector = Derived::IsVectorAtCompileTime;
  const Shape shape = vector ? Shape{array.size()} : Shape{array.rows(), array.cols()};
  out << header(dtype_of<Scalar>(), shape);
  if (vector || array.rows() == 1 || array.cols() == 1) {
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> flat = array.derived().reshaped();
    out.write(reinterpret_cast<const char*>(flat.data()), static_cast<std::streamsize>(flat.size() * sizeof(Scalar)));
    return;
  }
  Eigen::Matrix<Scalar, 1, Eigen::Dynamic> row(array.cols());  // one row at a time: no copy of the whole
  for (Eigen::Index r = 0; r < array.rows(); ++r) {
    row = array.row(r);
    out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size() * sizeof(Scalar)));
  }
}

/// Saves `array` to the .npy file at `path` (see write()), or error naming
/// the file and the system's reason.
template <class Derived>
void save(const std::string& path, const Eigen::DenseBase<Derived>& array) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw error("cannot create '" + path + "': " + std::strerror(errno));
  write(out, array);
  out.flush();
  if (!out) throw error("cannot write '" + path + "': " + std::strerror(errno));
}

}  // namespace convmat::npy
