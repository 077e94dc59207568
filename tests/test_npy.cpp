// <convmat/npy.hpp>: round trips through files and streams, header format
// versions 1 to 3, the header bytes numpy.save writes, and every bad file
// an error naming the file and what was found in it.
#include <convmat/npy.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"

namespace fs = std::filesystem;
namespace npy = convmat::npy;

namespace {

/// A fresh directory, removed with its contents at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "convmat-npy-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

/// The bytes of a .npy file written here, independently of npy.hpp: `dict`
/// as given (padded to 64 bytes and ended by '\n' unless `raw_dict`), after
/// the magic, the version and the little-endian length.
std::string npy_bytes(const std::string& dict_text, const std::string& data, int version = 1, bool raw_dict = false) {
  std::string dict = dict_text;
  const std::size_t prefix = version == 1 ? 10 : 12;
  if (!raw_dict) {
    dict.append((64 - (prefix + dict.size() + 1) % 64) % 64, ' ');
    dict += '\n';
  }
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  for (std::size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((dict.size() >> (8 * i)) & 0xff);
  return out + dict + data;
}

std::string dict(const std::string& descr, const std::string& shape, const std::string& order = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

template <class Scalar>
std::string raw(const std::vector<Scalar>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(Scalar));
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// The message of the npy::error that `f` throws ("no error" otherwise).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const npy::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not an npy::error: ") + e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("npy: header() writes what numpy.save writes", "[npy]") {
  // From numpy 1.24: io.BytesIO(), numpy.save(f, numpy.zeros(shape, dtype)).
  const auto numpy = [](const std::string& dict_text) {
    std::string out = std::string("\x93NUMPY\x01\x00v\x00", 10) + dict_text;
    out.append(127 - out.size(), ' ');
    return out + '\n';
  };
  CHECK(npy::header(npy::Dtype::float32, {3, 2, 3, 3}) ==
        numpy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 3, 3), }"));
  CHECK(npy::header(npy::Dtype::float64, {5}) == numpy("{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }"));
  CHECK(npy::header(npy::Dtype::float32, {}) == numpy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }"));
  CHECK(npy::header(npy::Dtype::float64, {0, 7}) ==
        numpy("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 7), }"));
  CHECK(npy::file_bytes(npy::Dtype::float32, {3, 2, 3, 3}) == 128 + 54 * 4);
  CHECK(npy::file_bytes(npy::Dtype::float64, {std::int64_t(1) << 40, std::int64_t(1) << 40}) ==
        std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("npy: save and load round trips, vectors and matrices of either storage order", "[npy]") {
  TempDir dir;
  const Eigen::VectorXf v = Eigen::VectorXf::LinSpaced(7, -3.25f, 4.5f);
  npy::save(dir / "v.npy", v);
  const auto a = npy::load(dir / "v.npy");
  CHECK(a.dtype == npy::Dtype::float32);
  CHECK(a.shape == npy::Shape{7});
  CHECK(a.vector<float>() == v);
  CHECK(a.values<float>() == std::vector<float>(v.data(), v.data() + v.size()));

  Eigen::MatrixXd col_major(3, 4);
  col_major << 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12;
  const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = col_major;
  npy::save(dir / "c.npy", col_major);
  npy::save(dir / "r.npy", row_major);
  CHECK(read_file(dir / "c.npy") == read_file(dir / "r.npy"));  // C order, whatever the storage
  const auto m = npy::load(dir / "c.npy");
  CHECK(m.shape == npy::Shape{3, 4});
  CHECK(m.matrix<double>() == row_major);
  CHECK(m.vector<double>() == Eigen::VectorXd::LinSpaced(12, 1, 12));  // flattened in C order
  // The file is numpy.save's, byte for byte: header, then the values.
  CHECK(read_file(dir / "r.npy") ==
        npy::header(npy::Dtype::float64, {3, 4}) +
            std::string(reinterpret_cast<const char*>(row_major.data()), 12 * sizeof(double)));

  const Eigen::RowVectorXd row = Eigen::RowVectorXd::Constant(2, 0.5);
  npy::save(dir / "row.npy", row);
  CHECK(npy::load(dir / "row.npy").shape == npy::Shape{2});
  npy::save(dir / "empty.npy", Eigen::MatrixXf(0, 3));
  const auto empty = npy::load(dir / "empty.npy");
  CHECK(empty.shape == npy::Shape{0, 3});
  CHECK(empty.bytes.empty());
  CHECK(empty.matrix<float>().rows() == 0);
}

TEST_CASE("npy: header format versions 1.0, 2.0 and 3.0, any rank, and conversions", "[npy]") {
  TempDir dir;
  const std::vector<float> w = {0.5f, -1.25f, 3.0f, 1e-3f, 7.0f, -0.0f};
  for (int version : {1, 2, 3}) {
    INFO("version " << version);
    write_file(dir / "w.npy", npy_bytes(dict("<f4", "(1, 2, 3)"), raw(w), version));
    const auto a = npy::load(dir / "w.npy");
    CHECK(a.shape == npy::Shape{1, 2, 3});
    CHECK(a.values<float>() == w);
    CHECK(a.values<double>() == std::vector<double>(w.begin(), w.end()));  // float32 -> float64 is exact
  }
  // Native byte order ('='), Python 2's long suffix, double quotes, keys in any order, no trailing comma.
  write_file(dir / "odd.npy", npy_bytes("{\"shape\": (2L, 3L), 'fortran_order': False, 'descr': '=f4'}", raw(w)));
  CHECK(npy::load(dir / "odd.npy").values<float>() == w);
  // A 1-D array in Fortran order is the same as in C order.
  write_file(dir / "f1.npy", npy_bytes(dict("<f4", "(6,)", "True"), raw(w)));
  CHECK(npy::load(dir / "f1.npy").values<float>() == w);
  // A scalar: shape (), one element.
  write_file(dir / "scalar.npy", npy_bytes(dict("<f8", "()"), raw(std::vector<double>{2.5})));
  CHECK(npy::load(dir / "scalar.npy").vector<double>() == Eigen::VectorXd::Constant(1, 2.5));
  // float64 read as float rounds to nearest.
  const std::vector<double> d = {0.1, 1.0 / 3.0};
  write_file(dir / "d.npy", npy_bytes(dict("<f8", "(2,)"), raw(d)));
  CHECK(npy::load(dir / "d.npy").values<float>() == std::vector<float>{0.1f, 1.0f / 3.0f});
}

TEST_CASE("npy: read() from a stream leaves what follows, and never allocates what a header only promises", "[npy]") {
  const std::vector<double> first = {1, 2, 3}, second = {4, 5};
  std::istringstream two(npy_bytes(dict("<f8", "(3,)"), raw(first)) + npy_bytes(dict("<f8", "(2,)"), raw(second)));
  CHECK(npy::read(two, "stream").values<double>() == first);
  CHECK(npy::read(two, "stream").values<double>() == second);

  // 2^62 bytes promised, 16 present: an error once the 16 are read, not a 2^62-byte allocation.
  std::istringstream lying(npy_bytes(dict("<f8", "(576460752303423488,)"), raw(std::vector<double>{1, 2})));
  CHECK(error_of([&] { npy::read(lying, "lying.npy"); }) ==
        "'lying.npy' is truncated: its header promises shape (576460752303423488,) of float64, "
        "4611686018427387904 bytes of data, but it holds 16");
}

TEST_CASE("npy: every bad file is an npy::error naming the file and what was found", "[npy][errors]") {
  TempDir dir;
  const std::vector<float> w(6, 0.5f);
  const std::string good = npy_bytes(dict("<f4", "(2, 3)"), raw(w));
  struct Bad {
    std::string name, bytes;
    std::vector<std::string> expected;  // parts of the message, after "'<path>' "
  };
  const std::vector<Bad> table = {
      {"csv", "weights,1,2,3\n", {"is not a .npy file (it does not start with \\x93NUMPY)", "numpy.save(path, array)"}},
      {"empty", "", {"is not a .npy file"}},
      {"version4", npy_bytes(dict("<f4", "(2, 3)"), raw(w), 4), {"is a .npy file of format version 4.0", "1.0, 2.0 and 3.0"}},
      {"version0", std::string("\x93NUMPY\x00\x00", 8) + "xx", {"format version 0.0"}},
      {"cut_length_v1", good.substr(0, 9), {"is truncated: it ends inside its .npy header"}},
      {"cut_length_v2", npy_bytes(dict("<f4", "(2, 3)"), raw(w), 2).substr(0, 11), {"ends inside its .npy header"}},
      {"long_header", std::string("\x93NUMPY\x02\x00\x11\x27\x00\x00", 12) + "{",
       {"is not a valid .npy file: it claims a header of 10001 bytes, more than the 10000 NumPy reads"}},
      {"cut_dict", good.substr(0, 40), {"is truncated: it ends inside its .npy header"}},
      {"not_a_dict", npy_bytes("['descr', '<f4']", ""), {"is not a valid .npy file: its header ['descr', '<f4']",
                                                        "expected '{' at character 0"}},
      {"missing_key", npy_bytes("{'descr': '<f4', 'shape': (6,)}", raw(w)), {"lacks one of 'descr', 'fortran_order', 'shape'"}},
      {"unknown_key", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", raw(w)),
       {"unknown key 'x'"}},
      {"twice", npy_bytes("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (6,)}", raw(w)),
       {"the key 'descr' appears twice"}},
      {"no_comma", npy_bytes("{'descr': '<f4' 'fortran_order': False, 'shape': (6,)}", raw(w)),
       {"expected ',' or '}' at character 16"}},
      {"after_dict", npy_bytes(dict("<f4", "(6,)") + " {}", raw(w)), {"something follows the closing '}'"}},
      {"unterminated", npy_bytes("{'descr: '<f4'}", ""), {"expected ':' at character"}},
      {"open_string", npy_bytes("{'descr", ""), {"a string is not terminated"}},
      {"escape", npy_bytes(dict("\\x3cf4", "(6,)"), raw(w)), {"holds an escape sequence"}},
      {"order", npy_bytes(dict("<f4", "(6,)", "1"), raw(w)), {"fortran_order is neither True nor False"}},
      {"negative", npy_bytes(dict("<f4", "(-6,)"), raw(w)), {"the shape holds something other than non-negative integers"}},
      {"float_shape", npy_bytes(dict("<f4", "(6.0,)"), raw(w)), {"expected ',' or ')' in the shape at character"}},
      {"huge_dimension", npy_bytes(dict("<f4", "(99999999999999999999,)"), raw(w)), {"a dimension overflows 64 bits"}},
      {"huge_shape", npy_bytes(dict("<f8", "(4294967296, 4294967296, 4294967296)"), raw(w)),
       {"has shape (4294967296, 4294967296, 4294967296), whose float64 data would pass 2^64 bytes"}},
      {"int64", npy_bytes(dict("<i8", "(6,)"), std::string(48, '\0')),
       {"has dtype '<i8', which convmat does not read: it takes float32 ('<f4') or float64 ('<f8')"}},
      {"big_endian", npy_bytes(dict(">f4", "(6,)"), raw(w)), {"holds big-endian floats (dtype '>f4')", "astype('<f4')"}},
      {"binary_dtype", npy_bytes(dict("<f\x01\xff", "(6,)"), raw(w)), {"has dtype '<f\\x01\\xff'"}},
      {"fortran", npy_bytes(dict("<f4", "(2, 3)", "True"), raw(w)),
       {"is stored in Fortran order (shape (2, 3))", "numpy.ascontiguousarray(array)"}},
      {"truncated", good.substr(0, good.size() - 1),
       {"is truncated: its header promises shape (2, 3) of float32, 24 bytes of data, but the file has 23"}},
      {"longer", good + "x", {"is longer than its header says: its header promises shape (2, 3)", "the file has 25"}},
  };
  for (const auto& bad : table) {
    INFO("file " << bad.name);
    const std::string path = dir / (bad.name + ".npy");
    write_file(path, bad.bytes);
    const std::string message = error_of([&] { npy::load(path); });
    INFO("message: " << message);
    CHECK(message.find("'" + path + "' ") != std::string::npos);
    for (const auto& part : bad.expected) CHECK(message.find(part) != std::string::npos);
  }
  CHECK(error_of([&] { npy::load(dir / "missing.npy"); }) ==
        "cannot open '" + dir / "missing.npy" + "': No such file or directory");
  CHECK(error_of([&] { npy::load(dir.path.string()); }) == "cannot read '" + dir.path.string() + "': it is a directory");
  CHECK(error_of([&] { npy::save(dir / "no/such/dir/T.npy", Eigen::VectorXf::Ones(2)); }) ==
        "cannot create '" + dir / "no/such/dir/T.npy" + "': No such file or directory");
}

TEST_CASE("npy: an Array whose bytes disagree with its shape is an error, not a read past the end", "[npy][errors]") {
  npy::Array a;
  a.dtype = npy::Dtype::float64;
  a.shape = {2, 3};
  a.bytes.resize(40);
  CHECK(error_of([&] { a.values<double>(); }) == "an array of shape (2, 3) and dtype float64 holds 40 bytes, not 48");
  a.bytes.resize(48);
  CHECK(a.matrix<float>().rows() == 2);
  a.shape = {1, 2, 3};
  CHECK(error_of([&] { a.matrix<double>(); }) == "an array of shape (1, 2, 3) is not a matrix: it has 3 dimensions, not 1 or 2");
  a.shape = {-1, 2};
  CHECK(error_of([&] { a.vector<double>(); }) == "an array of shape (-1, 2) cannot exist");
}
