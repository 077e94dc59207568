// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// NumPy's .npy format, the part the convmat command needs: reading a
// float32 / float64 little-endian C-order array of any rank (header format
// versions 1, 2 and 3), and writing one, header first and data streamed
// after it. Every way a file can be wrong is a cli_error that names the
// file and what was found.
// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the convmat command reads and writes little-endian .npy data as is; port npy.hpp to this machine first"
#endif

namespace convmat_cli {

/// A problem with the command's arguments or files: printed, exit status 1.
class cli_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The element types the command handles.
enum class Dtype { float32, float64 };

/// NumPy's name of a dtype: "float32" or "float64".
inline const char* dtype_name(Dtype dtype) { return dtype == Dtype::float32 ? "float32" : "float64"; }
/// Bytes per element.
inline std::size_t dtype_size(Dtype dtype) { return dtype == Dtype::float32 ? 4 : 8; }
/// The .npy `descr` of a dtype: "<f4" or "<f8".
inline const char* dtype_descr(Dtype dtype) { return dtype == Dtype::float32 ? "<f4" : "<f8"; }

/// The Dtype of a C++ scalar type.
template <class Scalar>
constexpr Dtype dtype_of() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "the convmat command handles float and double");
  return std::is_same_v<Scalar, float> ? Dtype::float32 : Dtype::float64;
}

/// A shape printed as NumPy does: "(3, 2, 3, 3)", "(5,)", "()".
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

/// An array read from a .npy file: its dtype, shape and raw little-endian data.
struct NpyArray {
  Dtype dtype = Dtype::float32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;  ///< numel() * dtype_size(dtype) bytes, C order

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }

  /// The elements converted to Scalar (a copy; float64 -> float32 rounds).
  template <class Scalar>
  std::vector<Scalar> values() const {
    std::vector<Scalar> out(static_cast<std::size_t>(numel()));
    if (dtype == dtype_of<Scalar>()) {
      if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    } else if (dtype == Dtype::float32) {
      convert<float>(out);
    } else {
      convert<double>(out);
    }
    return out;
  }

 private:
  template <class Stored, class Scalar>
  void convert(std::vector<Scalar>& out) const {
    for (std::size_t i = 0; i < out.size(); ++i) {
      Stored v;
      std::memcpy(&v, bytes.data() + i * sizeof(Stored), sizeof(Stored));
      out[i] = static_cast<Scalar>(v);
    }
  }
};

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

/// The header's Python dict literal, e.g.
/// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 3, 3), }
/// parsed just enough for the three keys NumPy writes.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : text_(text), path_(path) {}

  struct Header {
    std::string descr;
    bool fortran_order = false;
    std::vector<std::int64_t> shape;
    bool has_descr = false, has_order = false, has_shape = false;
  };

  Header parse() {
    Header h;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      expect(':');
      skip_space();
      if (key == "descr") {
        h.descr = string_literal();
        h.has_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = boolean();
        h.has_order = true;
      } else if (key == "shape") {
        h.shape = tuple();
        h.has_shape = true;
      } else {
        bad("unknown key '" + printable(key) + "'");
      }
      skip_space();
      if (peek() == ',') ++at_;
    }
    if (!h.has_descr || !h.has_order || !h.has_shape) bad("it lacks one of 'descr', 'fortran_order', 'shape'");
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    throw cli_error("'" + path_ + "' is not a valid .npy file: its header " + printable(text_) + " cannot be read (" +
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
    if (end == std::string_view::npos) bad("unterminated string");
    std::string s(text_.substr(at_ + 1, end - at_ - 1));
    at_ = end + 1;
    return s;
  }
  bool boolean() {
    if (text_.substr(at_, 4) == "True") return at_ += 4, true;
    if (text_.substr(at_, 5) == "False") return at_ += 5, false;
    bad("fortran_order is neither True nor False");
  }
  std::vector<std::int64_t> tuple() {
    expect('(');
    std::vector<std::int64_t> values;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      std::int64_t v = 0;
      bool digits = false;
      while (peek() >= '0' && peek() <= '9') {
        const int digit = peek() - '0';
        if (v > (std::numeric_limits<std::int64_t>::max() - digit) / 10) bad("a dimension overflows");
        v = v * 10 + digit;
        digits = true;
        ++at_;
      }
      if (peek() == 'L') ++at_;  // Python 2 long
      if (!digits) bad("the shape holds something other than non-negative integers");
      values.push_back(v);
      skip_space();
      if (peek() == ',')
        ++at_;
      else if (peek() != ')')
        bad("expected ',' or ')' in the shape");
    }
    ++at_;
    return values;
  }

  std::string_view text_;
  const std::string& path_;
  std::size_t at_ = 0;
};

inline std::uint32_t little_endian(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

}  // namespace detail

/// Reads a .npy file holding a float32 or float64 little-endian array in C
/// order, of any rank. Throws cli_error naming the file and the problem: it
/// cannot be opened, is not a .npy (magic), has an unknown format version,
/// is in Fortran order, has another dtype, or is shorter or longer than its
/// header says.
inline NpyArray read_npy(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw cli_error("cannot read '" + path + "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw cli_error("cannot open '" + path + "': " + std::strerror(errno));

  unsigned char start[12] = {};
  in.read(reinterpret_cast<char*>(start), 10);
  const auto got = in.gcount();
  if (got < 8 || std::memcmp(start, "\x93NUMPY", 6) != 0)
    throw cli_error(
        "'" + path +
        "' is not a .npy file (it does not start with \\x93NUMPY); save the weights with numpy.save(path, array)");
  const int major = start[6], minor = start[7];
  if (major < 1 || major > 3)
    throw cli_error("'" + path + "' is a .npy file of format version " + std::to_string(major) + "." +
                    std::to_string(minor) + ", which convmat does not know (it reads 1.0, 2.0 and 3.0)");
  std::size_t header_length = 0;
  std::size_t prefix = 10;
  if (major == 1) {
    if (got < 10) throw cli_error("'" + path + "' is truncated: it ends inside its .npy header");
    header_length = detail::little_endian(start + 8, 2);
  } else {
    in.read(reinterpret_cast<char*>(start + 10), 2);
    if (got < 10 || in.gcount() < 2) throw cli_error("'" + path + "' is truncated: it ends inside its .npy header");
    header_length = detail::little_endian(start + 8, 4);
    prefix = 12;
  }
  if (header_length > (std::size_t{1} << 26))
    throw cli_error("'" + path + "' is not a valid .npy file: it claims a header of " + std::to_string(header_length) +
                    " bytes");
  std::string header(header_length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_length));
  if (static_cast<std::size_t>(in.gcount()) != header_length)
    throw cli_error("'" + path + "' is truncated: it ends inside its .npy header");
  while (!header.empty() && (header.back() == '\n' || header.back() == ' ' || header.back() == '\0')) header.pop_back();

  const auto h = detail::HeaderParser(header, path).parse();
  NpyArray array;
  if (h.descr == "<f4" || (h.descr == "=f4")) {
    array.dtype = Dtype::float32;
  } else if (h.descr == "<f8" || h.descr == "=f8") {
    array.dtype = Dtype::float64;
  } else if (h.descr == ">f4" || h.descr == ">f8") {
    throw cli_error("'" + path + "' holds big-endian floats (dtype '" + detail::printable(h.descr) +
                    "'); convmat reads little-endian float32 or float64: save array.astype('<f" + h.descr.substr(2) +
                    "')");
  } else {
    throw cli_error("'" + path + "' has dtype '" + detail::printable(h.descr) +
                    "', which convmat does not read: it takes float32 ('<f4') or float64 ('<f8'); "
                    "save array.astype(numpy.float32)");
  }
  array.shape = h.shape;
  if (h.fortran_order && array.shape.size() > 1)
    throw cli_error("'" + path + "' is stored in Fortran order (shape " + shape_string(array.shape) +
                    "); convmat reads C order: save numpy.ascontiguousarray(array)");

  std::uint64_t numel = 1;
  for (auto d : array.shape) {
    if (d != 0 && numel > std::numeric_limits<std::uint64_t>::max() / 8 / static_cast<std::uint64_t>(d))
      throw cli_error("'" + path + "' has shape " + shape_string(array.shape) + ", too large to hold");
    numel *= static_cast<std::uint64_t>(d);
  }
  const std::uint64_t data_bytes = numel * dtype_size(array.dtype);
  const std::uint64_t file_bytes = fs::file_size(path, ec);
  const std::uint64_t expected = prefix + header_length + data_bytes;
  if (!ec && file_bytes != expected)
    throw cli_error("'" + path + "' is " + (file_bytes < expected ? "truncated" : "longer than its header says") +
                    ": its header promises shape " + shape_string(array.shape) + " of " + dtype_name(array.dtype) +
                    ", " + std::to_string(data_bytes) + " bytes of data, but the file has " +
                    std::to_string(file_bytes - std::min<std::uint64_t>(file_bytes, prefix + header_length)));
  array.bytes.resize(static_cast<std::size_t>(data_bytes));
  in.read(reinterpret_cast<char*>(array.bytes.data()), static_cast<std::streamsize>(data_bytes));
  if (static_cast<std::uint64_t>(in.gcount()) != data_bytes)
    throw cli_error("'" + path + "' is truncated or unreadable: read " + std::to_string(in.gcount()) + " of " +
                    std::to_string(data_bytes) + " bytes of data");
  return array;
}

/// The .npy header (format version 1.0, padded so the data starts at a
/// multiple of 64 bytes) for a C-order array of `dtype` and `shape`.
inline std::string npy_header(Dtype dtype, const std::vector<std::int64_t>& shape) {
  std::string dict = std::string("{'descr': '") + dtype_descr(dtype) +
                     "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
  std::size_t total = 10 + dict.size() + 1;
  const std::size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict += '\n';
  if (dict.size() > 65535) throw cli_error("shape " + shape_string(shape) + " makes a .npy header too long");
  std::string header = "\x93NUMPY";
  header += '\x01';
  header += '\x00';
  header += static_cast<char>(dict.size() & 0xff);
  header += static_cast<char>(dict.size() >> 8);
  return header + dict;
}

/// The size in bytes of the .npy file of a C-order array.
inline std::uint64_t npy_file_bytes(Dtype dtype, const std::vector<std::int64_t>& shape) {
  std::uint64_t n = dtype_size(dtype);
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return npy_header(dtype, shape).size() + n;
}

}  // namespace convmat_cli
