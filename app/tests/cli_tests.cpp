// Tests of the convmat command, run as a user runs it: weights written to a
// .npy file, the command run, its .npy / .mtx output read back and compared
// entry for entry with the library; and every bad input checked for its
// message, a non-zero exit, and no output file (nor temporary) left behind.
#include <convmat/convmat.hpp>
#include <convmat/npy.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/random.hpp"

namespace fs = std::filesystem;
using convmat::Index;

namespace {

/// A fresh directory, removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "convmat-cli-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  /// The names of the files in the directory, sorted.
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

struct Result {
  int status = -1;     ///< exit status; -1 if killed by a signal
  std::string output;  ///< stdout and stderr
};

/// Runs the convmat command with `arguments` (already quoted as needed).
Result run(const std::string& arguments) {
  const std::string command = std::string("'") + CONVMAT_CLI + "' " + arguments + " 2>&1";
  Result result;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  INFO("convmat " << arguments << "\n" << result.output);
  return result;
}

std::string quoted(const std::string& path) { return "'" + path + "'"; }

/// The bytes of a .npy file, written here independently of <convmat/npy.hpp> so
/// that every header variant NumPy can produce is covered.
std::string npy_bytes(const std::string& descr, const std::string& shape, const std::string& data,
                      bool fortran = false, int version = 1) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                     ", 'shape': " + shape + ", }";
  const std::size_t prefix = version == 1 ? 10 : 12;
  dict.append((64 - (prefix + dict.size() + 1) % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const std::size_t length = dict.size();
  for (std::size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((length >> (8 * i)) & 0xff);
  return out + dict + data;
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

template <class Scalar>
std::string shape_of(const std::vector<Index>& shape) {
  return convmat::npy::shape_string(std::vector<std::int64_t>(shape.begin(), shape.end()));
}

/// Saves weights of `shape` as a .npy and returns them flattened.
template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, 1> save_weights(const std::string& path, const std::vector<Index>& shape,
                                                      std::mt19937_64& rng, int version = 1) {
  Index n = 1;
  for (Index d : shape) n *= d;
  const auto w = convmat_test::random_vector<Scalar>(rng, n);
  const std::vector<Scalar> values(w.data(), w.data() + n);
  write_file(path, npy_bytes(std::is_same_v<Scalar, float> ? "<f4" : "<f8", shape_of<Scalar>(shape), raw(values),
                             false, version));
  return w;
}

/// A dense matrix read back with <convmat/npy.hpp> (checked against NumPy by
/// tools/check_cli_with_torch.py); a vector reads as one row.
template <class Scalar>
convmat::detail::RowMajorMatrix<Scalar> load_dense(const std::string& path) {
  const auto array = convmat::npy::load(path);
  REQUIRE(array.dtype == convmat::npy::dtype_of<Scalar>());
  REQUIRE((array.shape.size() == 1 || array.shape.size() == 2));
  const auto values = array.values<Scalar>();
  const Index rows = array.shape.size() == 2 ? array.shape[0] : 1;
  return Eigen::Map<const convmat::detail::RowMajorMatrix<Scalar>>(values.data(), rows, array.shape.back());
}

/// A Matrix Market coordinate file read back by a parser written here.
template <class Scalar>
convmat::SparseMatrix<Scalar> load_market(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  REQUIRE(std::getline(in, line));
  REQUIRE(line == "%%MatrixMarket matrix coordinate real general");
  while (std::getline(in, line) && !line.empty() && line[0] == '%') {
  }
  std::istringstream size_line(line);
  Index rows = 0, cols = 0, nonzeros = 0;
  REQUIRE(size_line >> rows >> cols >> nonzeros);
  std::vector<Eigen::Triplet<Scalar>> entries;
  Index r, c;
  std::string value;
  while (in >> r >> c >> value) {
    REQUIRE(1 <= r);
    REQUIRE(r <= rows);
    REQUIRE(1 <= c);
    REQUIRE(c <= cols);
    const Scalar v = std::is_same_v<Scalar, float> ? static_cast<Scalar>(std::strtof(value.c_str(), nullptr))
                                                   : static_cast<Scalar>(std::strtod(value.c_str(), nullptr));
    entries.emplace_back(static_cast<int>(r - 1), static_cast<int>(c - 1), v);
  }
  REQUIRE(static_cast<Index>(entries.size()) == nonzeros);
  convmat::SparseMatrix<Scalar> m(rows, cols);
  m.setFromTriplets(entries.begin(), entries.end());
  return m;
}

template <std::size_t N>
std::string list(const std::array<Index, N>& values) {
  std::string s;
  for (std::size_t i = 0; i < N; ++i) {
    if (i) s += ',';
    s += std::to_string(values[i]);
  }
  return s;
}

template <class Spec>
std::string padding_flags(const Spec& s) {
  return " --padding " + list(s.padding) + (s.padding_end ? " --padding-end " + list(*s.padding_end) : "");
}

template <int Rank>
std::string flags(const convmat::ConvSpec<Rank>& s) {
  return " --input-size " + list(s.input_size) + " --stride " + list(s.stride) + padding_flags(s) +
         " --dilation " + list(s.dilation) + " --groups " + std::to_string(s.groups) + " --padding-mode " +
         std::string(convmat::to_string(s.padding_mode));
}

template <int Rank>
std::string flags(const convmat::ConvTransposeSpec<Rank>& s) {
  return " --transposed --input-size " + list(s.input_size) + " --stride " + list(s.stride) + padding_flags(s) +
         " --output-padding " + list(s.output_padding) + " --dilation " + list(s.dilation) +
         " --groups " + std::to_string(s.groups);
}

template <int Rank>
std::vector<Index> weight_shape(const convmat::ConvSpec<Rank>& s) {
  std::vector<Index> shape{s.out_channels, s.in_channels / s.groups};
  shape.insert(shape.end(), s.kernel_size.begin(), s.kernel_size.end());
  return shape;
}

template <int Rank>
std::vector<Index> weight_shape(const convmat::ConvTransposeSpec<Rank>& s) {
  std::vector<Index> shape{s.in_channels, s.out_channels / s.groups};
  shape.insert(shape.end(), s.kernel_size.begin(), s.kernel_size.end());
  return shape;
}

template <int Rank, class W>
auto dense_reference(const convmat::ConvSpec<Rank>& s, const W& w) { return convmat::conv_matrix(s, w); }
template <int Rank, class W>
auto dense_reference(const convmat::ConvTransposeSpec<Rank>& s, const W& w) {
  return convmat::conv_transpose_matrix(s, w);
}
template <int Rank, class W>
auto sparse_reference(const convmat::ConvSpec<Rank>& s, const W& w) { return convmat::conv_matrix_sparse(s, w); }
template <int Rank, class W>
auto sparse_reference(const convmat::ConvTransposeSpec<Rank>& s, const W& w) {
  return convmat::conv_transpose_matrix_sparse(s, w);
}

/// Runs the command on `spec` (through .npy and .mtx, with bias outputs and
/// --check) and compares every file with the library's matrices, exactly.
template <class Scalar, class Spec>
void round_trip(const Spec& spec, const std::string& name) {
  INFO(name << ": " << convmat_test::describe(spec));
  auto rng = convmat_test::generator("cli round trip " + name);
  TempDir dir;
  const auto w = save_weights<Scalar>(dir / "w.npy", weight_shape(spec), rng);
  const auto channel_bias = convmat_test::random_vector<Scalar>(rng, spec.out_channels);
  write_file(dir / "b.npy", npy_bytes(std::is_same_v<Scalar, float> ? "<f4" : "<f8",
                                      "(" + std::to_string(spec.out_channels) + ",)",
                                      raw(std::vector<Scalar>(channel_bias.data(), channel_bias.data() + spec.out_channels))));
  const std::string args = quoted(dir / "w.npy") + flags(spec);

  const auto dense = run(args + " --check -o " + quoted(dir / "T.npy"));
  REQUIRE(dense.status == 0);
  CHECK(dense.output.find("within the rounding bound") != std::string::npos);
  CHECK(load_dense<Scalar>(dir / "T.npy") == dense_reference(spec, w));

  const auto sparse = run(args + " --check -o " + quoted(dir / "T.mtx"));
  REQUIRE(sparse.status == 0);
  const auto expected_sparse = sparse_reference(spec, w);
  const auto loaded = load_market<Scalar>(dir / "T.mtx");
  CHECK(loaded.nonZeros() == expected_sparse.nonZeros());
  CHECK(loaded.nonZeros() == convmat::conv_matrix_nonzeros(spec));
  CHECK(Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>(loaded) ==
        Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>(expected_sparse));

  const auto biased = run(args + " --check --bias " + quoted(dir / "b.npy") + " --bias-out " + quoted(dir / "bv.npy") +
                          " -o " + quoted(dir / "T2.npy"));
  REQUIRE(biased.status == 0);
  const auto bias = convmat::bias_vector(spec, channel_bias);
  CHECK(load_dense<Scalar>(dir / "bv.npy") == bias.transpose());
  CHECK(load_dense<Scalar>(dir / "T2.npy") == dense_reference(spec, w));

  const auto affine = run(args + " --bias " + quoted(dir / "b.npy") + " --affine -o " + quoted(dir / "A.npy"));
  REQUIRE(affine.status == 0);
  CHECK(load_dense<Scalar>(dir / "A.npy") == convmat::affine_matrix(spec, w, channel_bias));
  const auto affine_sparse = run(args + " --bias " + quoted(dir / "b.npy") + " --affine -o " + quoted(dir / "A.mtx"));
  REQUIRE(affine_sparse.status == 0);
  const auto a = load_market<Scalar>(dir / "A.mtx");
  CHECK(a.nonZeros() == expected_sparse.nonZeros() + spec.output_numel() + 1);
  CHECK(Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>(a) ==
        Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>(convmat::affine_matrix(spec, w, channel_bias)));

  // Only the files asked for: no temporaries left.
  CHECK(dir.files() == std::vector<std::string>{"A.mtx", "A.npy", "T.mtx", "T.npy", "T2.npy", "b.npy", "bv.npy", "w.npy"});
}

}  // namespace

TEST_CASE("convmat command: round trips through .npy and .mtx equal the library's matrices", "[cli]") {
  {
    convmat::Conv2dSpec s;  // the example, multi-channel
    s.in_channels = 2, s.out_channels = 3, s.input_size = {7, 9}, s.kernel_size = {3, 3};
    s.stride = {2, 2}, s.padding = {1, 1};
    round_trip<float>(s, "conv2d strided");
  }
  {
    convmat::Conv2dSpec s;
    s.in_channels = 4, s.out_channels = 2, s.input_size = {5, 6}, s.kernel_size = {3, 2};
    s.stride = {1, 2}, s.padding = {2, 1}, s.dilation = {1, 2}, s.groups = 2;
    s.padding_mode = convmat::PaddingMode::reflect;
    round_trip<double>(s, "conv2d reflect groups dilation");
  }
  {
    convmat::Conv1dSpec s;
    s.in_channels = 3, s.out_channels = 3, s.input_size = {6}, s.kernel_size = {4};
    s.padding = {5}, s.groups = 3, s.padding_mode = convmat::PaddingMode::circular;
    round_trip<float>(s, "conv1d circular depthwise");
  }
  {
    convmat::Conv3dSpec s;
    s.in_channels = 2, s.out_channels = 2, s.input_size = {3, 4, 3}, s.kernel_size = {2, 2, 2};
    s.padding = {1, 0, 1}, s.padding_mode = convmat::PaddingMode::replicate;
    round_trip<double>(s, "conv3d replicate");
  }
  {
    convmat::ConvTranspose2dSpec s;
    s.in_channels = 4, s.out_channels = 2, s.input_size = {3, 4}, s.kernel_size = {3, 3};
    s.stride = {2, 3}, s.padding = {1, 0}, s.output_padding = {1, 2}, s.groups = 2;
    round_trip<float>(s, "conv_transpose2d");
  }
  {
    convmat::ConvTranspose1dSpec s;
    s.in_channels = 2, s.out_channels = 3, s.input_size = {5}, s.kernel_size = {3};
    s.stride = {2}, s.dilation = {2};
    round_trip<double>(s, "conv_transpose1d dilated");
  }
}

TEST_CASE("convmat command: asymmetric padding (--padding-end), round trips", "[cli]") {
  {
    convmat::Conv2dSpec s;
    s.in_channels = 2, s.out_channels = 2, s.input_size = {6, 5}, s.kernel_size = {3, 2};
    s.stride = {2, 1};
    s.set_padding({1, 0}, {2, 1});
    s.padding_mode = convmat::PaddingMode::replicate;
    round_trip<float>(s, "conv2d asymmetric replicate");
  }
  {
    convmat::ConvTranspose1dSpec s;
    s.in_channels = 2, s.out_channels = 2, s.input_size = {4}, s.kernel_size = {3}, s.stride = {2};
    s.set_padding({0}, {1});
    round_trip<double>(s, "conv_transpose1d asymmetric");
  }
}

TEST_CASE("convmat command: ONNX's same_upper / same_lower with a stride", "[cli]") {
  auto rng = convmat_test::generator("cli same_upper");
  TempDir dir;
  for (const char* mode : {"same_upper", "same_lower"}) {
    INFO(mode);
    convmat::Conv2dSpec s;
    s.in_channels = 1, s.out_channels = 2, s.input_size = {7, 5}, s.kernel_size = {3, 2}, s.stride = {2, 2};
    s.set_padding_same(std::string(mode) == "same_upper" ? convmat::SamePadding::upper : convmat::SamePadding::lower);
    const auto w = save_weights<double>(dir / "w.npy", weight_shape(s), rng);
    const std::string args = quoted(dir / "w.npy") + " --input-size 7,5 --stride 2 --padding " + mode;
    REQUIRE(run(args + " -q -o " + quoted(dir / "T.npy")).status == 0);
    CHECK(load_dense<double>(dir / "T.npy") == convmat::conv_matrix(s, w));
    const auto info = run(args + " --info");
    CHECK(info.output.find("stride=(2, 2), padding='" + std::string(mode) + "' " +
                           (std::string(mode) == "same_upper" ? "(1, 0)/(1, 1)" : "(1, 1)/(1, 0)")) !=
          std::string::npos);
    CHECK(info.output.find("output    (2, 4, 3)") != std::string::npos);  // ceil(7 / 2), ceil(5 / 2)

    convmat::ConvTranspose2dSpec t;  // ONNX's ConvTranspose: output = input * stride
    t.in_channels = 2, t.out_channels = 1, t.input_size = {3, 2}, t.kernel_size = {3, 3}, t.stride = {2, 3};
    t.set_padding_same(std::string(mode) == "same_upper" ? convmat::SamePadding::upper : convmat::SamePadding::lower);
    REQUIRE(t.output_size() == std::array<Index, 2>{6, 6});
    const auto wt = save_weights<double>(dir / "wt.npy", weight_shape(t), rng);
    REQUIRE(run(quoted(dir / "wt.npy") + " --transposed --input-size 3,2 --stride 2,3 --padding " + mode + " -q -o " +
                quoted(dir / "T.npy"))
                .status == 0);
    CHECK(load_dense<double>(dir / "T.npy") == convmat::conv_transpose_matrix(t, wt));
  }
}

TEST_CASE("convmat command: padding 'same', header versions 2 and 3, --info", "[cli]") {
  auto rng = convmat_test::generator("cli same and versions");
  TempDir dir;
  convmat::Conv2dSpec s;
  s.in_channels = 1, s.out_channels = 2, s.input_size = {5, 4}, s.kernel_size = {2, 4};
  s.set_padding_same();
  for (int version : {1, 2, 3}) {
    const auto w = save_weights<float>(dir / "w.npy", weight_shape(s), rng, version);
    const auto result = run(quoted(dir / "w.npy") + " --input-size 5,4 --padding same -q -o " + quoted(dir / "T.npy"));
    REQUIRE(result.status == 0);
    CHECK(result.output.empty());
    CHECK(load_dense<float>(dir / "T.npy") == convmat::conv_matrix(s, w));
  }
  const auto info = run(quoted(dir / "w.npy") + " --input-size 5,4 --padding same --info");
  REQUIRE(info.status == 0);
  CHECK(info.output.find("Conv2d(1, 2, kernel_size=(2, 4), stride=(1, 1), padding='same', bias=False)") !=
        std::string::npos);
  CHECK(info.output.find("matrix T  40 x 20") != std::string::npos);
  CHECK(info.output.find("non-zeros " + std::to_string(convmat::conv_matrix_nonzeros(s)) + " ") != std::string::npos);
  CHECK(dir.files() == std::vector<std::string>{"T.npy", "w.npy"});
}

TEST_CASE("convmat command: every bad input names the problem, exits non-zero, writes nothing", "[cli]") {
  TempDir dir;
  const std::vector<float> weights(2 * 1 * 3 * 3, 0.5f);  // Conv2d(1, 2, 3)
  const std::string good = npy_bytes("<f4", "(2, 1, 3, 3)", raw(weights));
  write_file(dir / "w.npy", good);
  write_file(dir / "not.npy", "weights,1,2,3\n4,5,6,7\n");
  write_file(dir / "fortran.npy", npy_bytes("<f4", "(2, 1, 3, 3)", raw(weights), true));
  write_file(dir / "int.npy", npy_bytes("<i8", "(2, 1, 3, 3)", std::string(18 * 8, '\0')));
  write_file(dir / "big.npy", npy_bytes(">f4", "(2, 1, 3, 3)", raw(weights)));
  write_file(dir / "binary.npy", npy_bytes("<f\x01\xff", "(2, 1, 3, 3)", raw(weights)));
  write_file(dir / "truncated.npy", good.substr(0, good.size() - 10));
  write_file(dir / "header.npy", good.substr(0, 30));
  write_file(dir / "flat.npy", npy_bytes("<f4", "(18,)", raw(weights)));
  write_file(dir / "bias5.npy", npy_bytes("<f4", "(5,)", raw(std::vector<float>(5, 1.0f))));
  write_file(dir / "T.npy", "an older file that must survive");
  fs::create_directory(dir / "folder.npy");
  const auto inputs = dir.files();

  const std::string w = quoted(dir / "w.npy"), out = " -o " + quoted(dir / "T.npy");
  struct Case {
    std::string arguments, message;
  };
  const std::vector<Case> cases = {
      {quoted(dir / "missing.npy") + " --input-size 5,5" + out, "cannot open '" + dir / "missing.npy" + "': No such file"},
      {quoted(dir / "folder.npy") + " --input-size 5,5" + out, "it is a directory"},
      {quoted(dir / "not.npy") + " --input-size 5,5" + out, "is not a .npy file"},
      {quoted(dir / "fortran.npy") + " --input-size 5,5" + out, "is stored in Fortran order"},
      {quoted(dir / "int.npy") + " --input-size 5,5" + out, "has dtype '<i8', which convmat does not read"},
      {quoted(dir / "big.npy") + " --input-size 5,5" + out, "holds big-endian floats"},
      {quoted(dir / "binary.npy") + " --input-size 5,5" + out, "has dtype '<f\\x01\\xff'"},
      {quoted(dir / "truncated.npy") + " --input-size 5,5" + out, "is truncated: its header promises shape (2, 1, 3, 3)"},
      {quoted(dir / "header.npy") + " --input-size 5,5" + out, "is truncated: it ends inside its .npy header"},
      {quoted(dir / "flat.npy") + " --input-size 5,5" + out, "at least 3 dimensions"},
      {w + " --input-size 5,5 --kernel-size 5" + out, "--kernel-size 5 disagrees with the weights' shape (2, 1, 3, 3)"},
      {w + " --input-size 5,5 --in-channels 3" + out, "--in-channels 3 disagrees with the weights' shape (2, 1, 3, 3)"},
      {w + " --input-size 5,5 --groups 4" + out, "--groups 4 does not divide the weights' first dimension 2"},
      {w + " --input-size 5,5,5" + out, "--input-size 5,5,5 has 3 values, but the weights' shape (2, 1, 3, 3) makes a 2-D layer"},
      {w + " --input-size 2,5" + out, "kernel does not fit: input_size=(2, 5), kernel_size=(3, 3)"},
      {w + " --input-size 5,5 --padding-mode mirror" + out, "padding_mode must be zeros, reflect, replicate or circular, not 'mirror'"},
      {w + " --input-size 5,5 --padding one" + out, "--padding takes integers separated by commas"},
      {w + " --input-size 5,5 --stride 2 --padding same" + out, "padding='same' needs stride 1"},
      {w + " --input-size 5,5 --padding same --padding-end 1" + out, "--padding-end 1 goes with numbers in --padding, not --padding same"},
      {w + " --input-size 5,5 --padding same_upper --padding-end 1" + out, "--padding-end 1 goes with numbers in --padding"},
      {w + " --input-size 5,5 --padding 1 --padding-end 1,2,3" + out, "--padding-end 1,2,3 has 3 values"},
      {w + " --input-size 5,5 --padding 1 --padding-end -1" + out, "padding_end must not be negative: padding_end=(-1, -1)"},
      {w + " --input-size 5,5 --transposed --padding same" + out, "or same_upper / same_lower (ONNX's auto_pad)"},
      {w + " --input-size 1000,1000 --max-bytes 1M" + out, "more than --max-bytes = 1048576 bytes (1.0 MiB). It has only"},
      {w + " --input-size 1000,1000 --max-bytes 1M" + out, "write it sparse with -o " + dir / "T.mtx"},
      {w + " --input-size 1000,1000 --max-bytes 1.5M" + out, "more than --max-bytes = 1572864 bytes (1.5 MiB)"},
      {w + " --input-size 1000,1000 --max-bytes 0.5m" + out, "more than --max-bytes = 524288 bytes"},
      {w + " --input-size 5,5 --max-bytes 1.G" + out, "--max-bytes takes a size like 8G, 1.5G"},
      {w + " --input-size 5,5 --max-bytes lots" + out, "--max-bytes takes a size like 8G"},
      {w + " --input-size 5,5 -o " + quoted(dir / "T.txt"), "the output must end in .npy (the dense matrix) or .mtx"},
      {w + " --input-size 5,5 -o " + quoted(dir / "no/such/dir/T.npy"), "cannot create '" + dir / "no/such/dir/T.npy" + "'"},
      {w + " --input-size 5,5 --bias " + quoted(dir / "bias5.npy") + " --bias-out " + quoted(dir / "b.npy") + out,
       "the bias '" + dir / "bias5.npy" + "' has shape (5,), but the layer has 2 output channels"},
      {w + " --input-size 5,5 --bias " + quoted(dir / "bias5.npy") + out, "say where the bias goes"},
      {w + " --input-size 5,5 --affine" + out, "--affine needs the layer's bias"},
      {w + " --input-size 5,5 --transposed --padding-mode reflect" + out, "a transposed convolution pads with zeros only"},
      {w + " --input-size 5,5 --output-padding 1" + out, "--output-padding 1 is for transposed convolutions"},
      {w + " --input-size 5,5 --transposed --output-padding 1" + out, "output_padding must be smaller than either stride or dilation"},
      {w + out, "--input-size is required"},
      {w + " --input-size 5,5", "say where the matrix goes"},
      {w + " --input-size 5,5 --no-such-flag" + out, "convmat: error: The following argument was not expected: --no-such-flag"},
  };
  for (const auto& c : cases) {
    INFO("convmat " << c.arguments);
    const auto result = run(c.arguments);
    INFO(result.output);
    CHECK((result.status == 1 || result.status == 2));  // an error, not a crash
    CHECK(result.output.rfind("convmat: error: ", 0) == 0);
    CHECK(result.output.find(c.message) != std::string::npos);
    CHECK(dir.files() == inputs);  // nothing written, no temporary left
    CHECK(read_file(dir / "T.npy") == "an older file that must survive");
  }
  if (::geteuid() != 0) {  // root reads anything
    fs::permissions(dir / "w.npy", fs::perms::none);
    const auto result = run(w + " --input-size 5,5" + out);
    CHECK(result.status == 1);
    CHECK(result.output.find("cannot open '" + dir / "w.npy" + "': Permission denied") != std::string::npos);
    fs::permissions(dir / "w.npy", fs::perms::owner_all);
  }
}

TEST_CASE("convmat command: killed while writing, it leaves no file behind", "[cli]") {
  TempDir dir;
  // Conv2d(16, 16, 3, padding=1) on 128 x 128: 37 million non-zeros, seconds of writing.
  write_file(dir / "w.npy", npy_bytes("<f4", "(16, 16, 3, 3)", raw(std::vector<float>(16 * 16 * 9, 0.25f))));
  const std::string weights = dir / "w.npy", output = dir / "T.mtx";
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl(CONVMAT_CLI, "convmat", weights.c_str(), "--input-size", "128,128", "--padding", "1", "-q", "-o",
            output.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  bool writing = false;  // until its temporary ".T.mtx.convmat-XXXXXX" exists
  for (int i = 0; i < 20000 && !writing; ++i) {
    for (const auto& name : dir.files()) writing = writing || name.rfind(".T.mtx.convmat-", 0) == 0;
    if (!writing) ::usleep(500);
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(writing);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
  CHECK(dir.files() == std::vector<std::string>{"w.npy"});
}
