// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The convmat command: a PyTorch layer's weights in (.npy), its matrix out
// (.npy dense or .mtx sparse), without writing C++.
//
//     convmat WEIGHTS.npy --input-size 7,9 --stride 2 --padding 1 -o T.npy
//
// Channels and kernel size come from the weights' shape, the rest from
// flags named after PyTorch's arguments. Large matrices are written in row
// blocks (conv_matrix_rows / conv_matrix_sparse_rows), never held twice.
// Without arguments it prints the worked example of a 3x3 input and a 2x2
// kernel. Exit status: 0 done, 1 bad input or failed check, 2 bad usage.
#include <CLI/CLI.hpp>
#include <convmat/convmat.hpp>
#include <convmat/npy.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "byte_size.hpp"
#include "cli_error.hpp"
#include "matrix_market.hpp"
#include "output_file.hpp"

namespace convmat_cli {

using convmat_tools::OutputFile;

using convmat::Index;
using convmat::npy::Dtype;
using convmat::npy::dtype_name;
using convmat::npy::dtype_of;
using convmat::npy::shape_string;
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar>
using Sparse = convmat::SparseMatrix<Scalar, std::int64_t>;

/// Everything the command line says, as typed.
struct Options {
  std::string weights, output, bias, bias_out;
  std::string input_size, kernel_size, stride = "1", padding = "0", padding_end, dilation = "1", output_padding = "0";
  std::string padding_mode = "zeros", max_bytes;
  Index groups = 1;
  std::optional<Index> in_channels, out_channels;
  bool transposed = false, affine = false, info = false, check = false, quiet = false;
  std::uint64_t seed = 20240607;
};

// ---- small text helpers ---------------------------------------------------

std::string join(const std::vector<std::int64_t>& values, const char* separator = ", ") {
  std::string s;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) s += separator;
    s += std::to_string(values[i]);
  }
  return s;
}

template <std::size_t N>
std::vector<std::int64_t> as_vector(const std::array<Index, N>& values) {
  return std::vector<std::int64_t>(values.begin(), values.end());
}

template <std::size_t N>
std::string tuple(const std::array<Index, N>& values) {
  return "(" + join(as_vector(values)) + ")";
}

/// "30368 bytes (29.7 KiB)".
std::string bytes_string(std::uint64_t bytes) {
  if (bytes == std::numeric_limits<std::uint64_t>::max()) return "more than 2^64 bytes";
  std::ostringstream os;
  os << bytes << " bytes";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  int unit = -1;
  while (value >= 1024 && unit < 5) value /= 1024, ++unit;
  if (unit >= 0) os << " (" << std::fixed << std::setprecision(1) << value << ' ' << units[unit] << ')';
  return os.str();
}

/// a * b, or the largest uint64 if that overflows.
std::uint64_t saturating_mul(std::uint64_t a, std::uint64_t b) {
  return a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a ? std::numeric_limits<std::uint64_t>::max()
                                                                     : a * b;
}

/// cli_error unless the file system of `path` has `bytes` free (checked
/// where the free space can be found out).
void require_free_space(const std::string& path, std::uint64_t bytes, const std::string& qualifier,
                        const std::string& detail = "") {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  const auto space = fs::space(p.has_parent_path() ? p.parent_path() : fs::path("."), ec);
  if (!ec && space.available < bytes)
    throw cli_error("'" + path + "' would take " + qualifier + bytes_string(bytes) + detail +
                    ", but its file system has only " + bytes_string(space.available) + " free");
}

/// "1,234,567".
std::string grouped(std::int64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

/// The integers of a flag's value "7,9" (or "7"), or cli_error.
std::vector<Index> parse_list(const std::string& text, const char* flag) {
  std::vector<Index> values;
  std::size_t begin = 0;
  while (true) {
    auto end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(begin, end - begin);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    Index v = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size())
      throw cli_error(std::string(flag) + " takes integers separated by commas, like 2 or 2,1; got '" + text + "'");
    values.push_back(v);
    if (end == text.size()) break;
    begin = end + 1;
  }
  return values;
}

/// --max-bytes: convmat_tools::parse_byte_size, or cli_error.
std::size_t parse_bytes(const std::string& text) {
  if (const auto bytes = convmat_tools::parse_byte_size(text)) return *bytes;
  throw cli_error(std::string("--max-bytes takes ") + convmat_tools::byte_size_forms + "; got '" + text + "'");
}

// ---- the layer ---------------------------------------------------------------

/// A layer as the command understands it: the spec of a convolution or of
/// a transposed convolution, and how to describe it.
template <int Rank>
struct Layer {
  bool transposed = false;
  convmat::ConvSpec<Rank> conv;
  convmat::ConvTransposeSpec<Rank> tconv;
  std::string padding_text;  ///< what --padding said, for the description

  Index in_channels() const { return transposed ? tconv.in_channels : conv.in_channels; }
  Index out_channels() const { return transposed ? tconv.out_channels : conv.out_channels; }
  Index rows() const { return transposed ? tconv.output_numel() : conv.output_numel(); }
  Index cols() const { return transposed ? tconv.input_numel() : conv.input_numel(); }
  std::array<Index, Rank> input_size() const { return transposed ? tconv.input_size : conv.input_size; }
  std::array<Index, Rank> output_size() const { return transposed ? tconv.output_size() : conv.output_size(); }

  template <class Scalar>
  convmat::MatrixSize size() const {
    return transposed ? convmat::matrix_size<Scalar, int>(tconv) : convmat::matrix_size<Scalar, int>(conv);
  }

  /// As PyTorch prints the module: "Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))"
  /// (convmat::to_string, which `operator<<` of a spec prints too).
  std::string describe(bool bias) const {
    return transposed ? convmat::to_string(tconv, bias, padding_text) : convmat::to_string(conv, bias, padding_text);
  }
};

template <int Rank>
std::array<Index, Rank> per_axis(const std::string& text, const char* flag, const convmat::npy::Array& weights) {
  const auto values = parse_list(text, flag);
  std::array<Index, Rank> out{};
  if (values.size() == 1) {
    out.fill(values[0]);
  } else if (values.size() == static_cast<std::size_t>(Rank)) {
    std::copy(values.begin(), values.end(), out.begin());
  } else {
    throw cli_error(std::string(flag) + " " + text + " has " + std::to_string(values.size()) +
                    " values, but the weights' shape " + shape_string(weights.shape) + " makes a " +
                    std::to_string(Rank) + "-D layer: give 1 or " + std::to_string(Rank) + " values");
  }
  return out;
}

/// Sets the padding --padding and --padding-end describe on a spec with
/// set_padding(begin, end) and set_padding_same(SamePadding) (ConvSpec,
/// ConvTransposeSpec); --padding's PyTorch names are handled by the caller.
template <int Rank, class Spec>
void set_padding(Spec& spec, const Options& o, const convmat::npy::Array& weights) {
  if (o.padding == "same_upper" || o.padding == "same_lower") {
    if (!o.padding_end.empty())
      throw cli_error("--padding-end " + o.padding_end + " goes with numbers in --padding, not --padding " + o.padding);
    spec.set_padding_same(o.padding == "same_upper" ? convmat::SamePadding::upper : convmat::SamePadding::lower);
  } else if (!o.padding_end.empty()) {
    spec.set_padding(per_axis<Rank>(o.padding, "--padding", weights),
                     per_axis<Rank>(o.padding_end, "--padding-end", weights));
  } else {
    spec.padding = per_axis<Rank>(o.padding, "--padding", weights);
  }
}

/// The layer that the flags and the weights' shape describe together, or
/// cli_error / convmat::spec_error naming what disagrees.
template <int Rank>
Layer<Rank> make_layer(const Options& o, const convmat::npy::Array& weights) {
  Layer<Rank> layer;
  layer.transposed = o.transposed;
  layer.padding_text = o.padding;
  const auto& shape = weights.shape;
  std::array<Index, Rank> kernel{};
  std::copy(shape.begin() + 2, shape.end(), kernel.begin());
  if (!o.kernel_size.empty() && per_axis<Rank>(o.kernel_size, "--kernel-size", weights) != kernel)
    throw cli_error("--kernel-size " + o.kernel_size + " disagrees with the weights' shape " + shape_string(shape) +
                    ", whose kernel is " + tuple(kernel));
  if (o.groups <= 0) throw cli_error("--groups must be positive; got " + std::to_string(o.groups));
  // Conv: (out, in / groups, k...); ConvTranspose: (in, out / groups, k...).
  const Index in = o.transposed ? shape[0] : shape[1] * o.groups;
  const Index out = o.transposed ? shape[1] * o.groups : shape[0];
  const char* layout = o.transposed ? "(in_channels, out_channels / groups, kernel...)"
                                    : "(out_channels, in_channels / groups, kernel...)";
  if (shape[0] % o.groups != 0)
    throw cli_error("--groups " + std::to_string(o.groups) + " does not divide the weights' first dimension " +
                    std::to_string(shape[0]) + " (shape " + shape_string(shape) + ", laid out " + layout + ")");
  if (o.in_channels && *o.in_channels != in)
    throw cli_error("--in-channels " + std::to_string(*o.in_channels) + " disagrees with the weights' shape " +
                    shape_string(shape) + " (laid out " + layout + "), which with --groups " +
                    std::to_string(o.groups) + " gives in_channels=" + std::to_string(in));
  if (o.out_channels && *o.out_channels != out)
    throw cli_error("--out-channels " + std::to_string(*o.out_channels) + " disagrees with the weights' shape " +
                    shape_string(shape) + " (laid out " + layout + "), which with --groups " +
                    std::to_string(o.groups) + " gives out_channels=" + std::to_string(out));
  const auto input_size = per_axis<Rank>(o.input_size, "--input-size", weights);
  const auto stride = per_axis<Rank>(o.stride, "--stride", weights);
  const auto dilation = per_axis<Rank>(o.dilation, "--dilation", weights);

  if (o.transposed) {
    auto& s = layer.tconv;
    s.in_channels = in;
    s.out_channels = out;
    s.groups = o.groups;
    s.input_size = input_size;
    s.kernel_size = kernel;
    s.stride = stride;
    s.dilation = dilation;
    if (o.padding == "same" || o.padding == "valid" || o.padding == "full")
      throw cli_error("--padding " + o.padding +
                      " is for convolutions; a transposed convolution takes numbers "
                      "(as torch.nn.ConvTranspose" +
                      std::to_string(Rank) + "d) or same_upper / same_lower (ONNX's auto_pad)");
    s.output_padding = per_axis<Rank>(o.output_padding, "--output-padding", weights);
    set_padding<Rank>(s, o, weights);
    if (o.padding_mode != "zeros")
      throw cli_error("--padding-mode " + o.padding_mode +
                      ": a transposed convolution pads with zeros only "
                      "(as torch.nn.ConvTranspose" +
                      std::to_string(Rank) + "d)");
    s.validate();
  } else {
    auto& s = layer.conv;
    s.in_channels = in;
    s.out_channels = out;
    s.groups = o.groups;
    s.input_size = input_size;
    s.kernel_size = kernel;
    s.stride = stride;
    s.dilation = dilation;
    s.padding_mode = convmat::padding_mode_from_string(o.padding_mode);
    if (per_axis<Rank>(o.output_padding, "--output-padding", weights) != convmat::detail::filled<Rank>(0))
      throw cli_error("--output-padding " + o.output_padding + " is for transposed convolutions; add --transposed");
    if ((o.padding == "same" || o.padding == "valid" || o.padding == "full") && !o.padding_end.empty())
      throw cli_error("--padding-end " + o.padding_end + " goes with numbers in --padding, not --padding " + o.padding);
    if (o.padding == "same")
      s.set_padding_same();
    else if (o.padding == "valid")
      s.set_padding_valid();
    else if (o.padding == "full")
      s.set_padding_full();
    else
      set_padding<Rank>(s, o, weights);
    s.validate();
  }
  return layer;
}

// ---- progress ------------------------------------------------------------------

/// A progress line on stderr for work that takes more than a second, when
/// stderr is a terminal.
class Progress {
 public:
  Progress(std::string what, Index total, bool enabled)
      : what_(std::move(what)), total_(total), enabled_(enabled && ::isatty(2)) {}
  ~Progress() { done(); }

  void update(Index done_rows) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (now - start_ < std::chrono::seconds(1) || now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    shown_ = true;
    std::fprintf(stderr, "\rconvmat: %s: %3d%% (%lld of %lld)", what_.c_str(),
                 static_cast<int>(100.0 * static_cast<double>(done_rows) / static_cast<double>(total_)),
                 static_cast<long long>(done_rows), static_cast<long long>(total_));
    std::fflush(stderr);
  }
  void done() {
    if (shown_) std::fprintf(stderr, "\rconvmat: %s: done%40s\n", what_.c_str(), "");
    shown_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string what_;
  Index total_;
  bool enabled_, shown_ = false;
  Clock::time_point start_ = Clock::now(), last_ = start_;
};

// ---- building, writing and checking ---------------------------------------------

/// Produces the layer's matrix in blocks. A convolution builds each block
/// of rows on its own (conv_matrix_rows, conv_matrix_sparse_rows). A
/// transposed convolution's T is the transpose of the matrix of the
/// convolution it is the adjoint of (detail::geometry(ConvTransposeSpec)):
/// its sparse form streams that matrix's rows, which are T's columns; its
/// dense form needs T's rows in order, so T is built sparse once and sliced.
template <int Rank, class Scalar>
class RowBlocks {
 public:
  RowBlocks(const Layer<Rank>& layer, const std::vector<Scalar>& weights, bool dense)
      : layer_(layer), w_(weights.data(), static_cast<Index>(weights.size())) {
    if (!layer.transposed) return;
    adjoint_ = convmat::detail::geometry(layer.tconv);
    if (dense) whole_ = convmat::conv_transpose_matrix_sparse<std::int64_t>(layer.tconv, w_);
  }

  /// Rows [begin, end) of T, dense.
  RowMajorMatrix<Scalar> dense(Index begin, Index end) const {
    if (!layer_.transposed) return convmat::conv_matrix_rows(layer_.conv, w_, begin, end);
    return RowMajorMatrix<Scalar>(whole_.middleRows(begin, end - begin).toDense());
  }
  /// Rows [begin, end) of a convolution's T, sparse.
  Sparse<Scalar> sparse(Index begin, Index end) const {
    return convmat::conv_matrix_sparse_rows<std::int64_t>(layer_.conv, w_, begin, end);
  }
  /// Columns [begin, end) of a transposed convolution's T, as the rows of
  /// its transpose (begin - end) x output_numel.
  Sparse<Scalar> sparse_columns(Index begin, Index end) const {
    return convmat::detail::sparse_rows<std::int64_t>(*adjoint_, w_.data(), begin, end);
  }

  /// The direct (transposed) convolution of x: the reference for --check.
  Vector<Scalar> direct(const Vector<Scalar>& x) const {
    return layer_.transposed ? Vector<Scalar>(convmat::convolve_transpose(layer_.tconv, w_, x))
                             : Vector<Scalar>(convmat::convolve(layer_.conv, w_, x));
  }

 private:
  const Layer<Rank>& layer_;
  Eigen::Map<const Vector<Scalar>> w_;
  std::optional<convmat::detail::Geometry<Rank>> adjoint_;
  Sparse<Scalar> whole_;
};

/// Accumulates T x block by block while the matrix is written, and
/// compares it with the direct convolution at the end.
template <class Scalar>
struct Check {
  Vector<Scalar> x, y, bound;  // y = T x; bound = |T| |x|, for the error bound

  void add(const RowMajorMatrix<Scalar>& block, Index first_row) {
    y.segment(first_row, block.rows()) = block * x;
    bound.segment(first_row, block.rows()) = block.cwiseAbs() * x.cwiseAbs();
  }
  void add(const Sparse<Scalar>& block, Index first_row) {
    y.segment(first_row, block.rows()) = block * x;
    bound.segment(first_row, block.rows()) = block.cwiseAbs() * x.cwiseAbs();
  }
  /// Compares T x (+ b) with `reference`, the direct convolution of x (+ b),
  /// prints the largest difference and returns whether every output is
  /// within the rounding bound: both sums carry an error of at most
  /// n eps (|T| |x| + |b|) for n terms, so anything larger is a wrong entry.
  bool report(Vector<Scalar> reference, const Vector<Scalar>* bias, Index terms, std::uint64_t seed, bool transposed) {
    if (bias) {
      reference += *bias;
      y += *bias;
      bound += bias->cwiseAbs();
    }
    const double eps = std::numeric_limits<Scalar>::epsilon();
    double largest = 0, ratio = 0, largest_value = 0;
    for (Index i = 0; i < y.size(); ++i) {
      const double difference = std::abs(static_cast<double>(y[i]) - static_cast<double>(reference[i]));
      const double allowed =
          2.0 * static_cast<double>(terms) * eps * static_cast<double>(bound[i]) + std::numeric_limits<Scalar>::min();
      largest = std::max(largest, difference);
      ratio = std::max(ratio, difference / allowed);
      largest_value = std::max(largest_value, std::abs(static_cast<double>(reference[i])));
    }
    const bool ok = ratio <= 1.0;
    std::cout << "check: T x" << (bias ? " + b" : "") << " against the direct "
              << (transposed ? "transposed convolution" : "convolution") << " on a random x (seed " << seed
              << "): largest difference " << std::setprecision(3) << largest << " over " << y.size()
              << " outputs (largest |output| " << largest_value << "), " << (ok ? "within" : "BEYOND")
              << " the rounding bound" << (ok ? "" : "; nothing was written") << "\n";
    return ok;
  }

  /// Columns [first, first + columns.rows()) of T, given as the rows of T^T.
  void add_columns(const Sparse<Scalar>& columns, Index first) {
    y += columns.transpose() * x.segment(first, columns.rows());
    bound += Sparse<Scalar>(columns.cwiseAbs()).transpose() * x.segment(first, columns.rows()).cwiseAbs();
  }
};

/// What build() writes: nothing (--check alone), the dense or the sparse
/// form, of T or of the affine matrix [T b; 0 1].
struct Plan {
  enum class Form { none, dense, sparse } form = Form::none;
  Index rows = 0, cols = 0;  ///< of what is written (the affine form adds one of each)
  bool affine = false;
};

/// Refuses, before anything is built, a dense matrix over --max-bytes
/// (suggesting .mtx) and a file larger than its file system's free space.
template <class Scalar>
void check_room(const Options& o, const Plan& plan, const convmat::MatrixSize& size) {
  const Dtype dtype = dtype_of<Scalar>();
  if (plan.form == Plan::Form::dense) {
    const std::size_t limit = o.max_bytes.empty() ? convmat::max_dense_bytes() : parse_bytes(o.max_bytes);
    const std::uint64_t bytes = saturating_mul(
        saturating_mul(static_cast<std::uint64_t>(plan.rows), static_cast<std::uint64_t>(plan.cols)), sizeof(Scalar));
    if (bytes > limit)
      throw cli_error("the dense matrix would be " + grouped(plan.rows) + " x " + grouped(plan.cols) + " " +
                      dtype_name(dtype) + " = " + bytes_string(bytes) + ", more than --max-bytes " +
                      (o.max_bytes.empty() ? "(default: half of this machine's memory) " : "") + "= " +
                      bytes_string(limit) + ". It has only " + grouped(size.nonzeros) +
                      " non-zeros: write it sparse with -o " +
                      std::filesystem::path(o.output).replace_extension(".mtx").string() + ", or raise --max-bytes");
    require_free_space(o.output, convmat::npy::file_bytes(dtype, {plan.rows, plan.cols}), "");
  }
  if (plan.form == Plan::Form::sparse)  // every entry takes 10 bytes or more: "r c v.vvvv\n"
    require_free_space(o.output, saturating_mul(static_cast<std::uint64_t>(size.nonzeros), 10), "more than ",
                       " (" + grouped(size.nonzeros) + " non-zeros)");
}

/// The most products one output sums, plus one for the bias.
template <int Rank>
Index terms_per_output(const Layer<Rank>& layer) {
  const auto& t = layer.tconv;
  const auto& c = layer.conv;
  return (layer.transposed ? t.kernel_numel() * (t.in_channels / t.groups)
                           : c.kernel_numel() * (c.in_channels / c.groups)) +
         1;
}

/// Builds T (or [T b; 0 1]) block by block into the output file, checks it
/// against the direct convolution if asked, and renames the files into
/// place only when everything has succeeded. Returns the exit status.
template <int Rank, class Scalar>
int build(const Options& o, const Layer<Rank>& layer, const std::vector<Scalar>& weights,
          const std::optional<Vector<Scalar>>& bias) {
  const auto size = layer.template size<Scalar>();
  const Index rows = size.rows, cols = size.cols;
  const Dtype dtype = dtype_of<Scalar>();
  Plan plan;
  plan.affine = o.affine;
  plan.rows = rows + (o.affine ? 1 : 0);
  plan.cols = cols + (o.affine ? 1 : 0);
  if (!o.output.empty())
    plan.form = o.output.size() >= 4 && o.output.compare(o.output.size() - 4, 4, ".mtx") == 0 ? Plan::Form::sparse
                                                                                              : Plan::Form::dense;

  check_room<Scalar>(o, plan, size);
  convmat::set_max_dense_bytes(convmat::no_limit);  // the blocks are bounded below

  const auto started = std::chrono::steady_clock::now();
  // A transposed layer's sparse form goes column block by column block.
  const bool by_columns = layer.transposed && plan.form != Plan::Form::dense;
  RowBlocks<Rank, Scalar> blocks(layer, weights, plan.form == Plan::Form::dense);
  Vector<Scalar> b = bias ? *bias : Vector<Scalar>();

  Check<Scalar> check;
  if (o.check) {
    std::mt19937_64 random(o.seed);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    check.x.resize(cols);
    for (Index i = 0; i < cols; ++i) check.x[i] = static_cast<Scalar>(uniform(random));
    check.y.setZero(rows);
    check.bound.setZero(rows);
  }

  // Blocks of about 32 MiB dense, or about 4 million sparse entries.
  const Index per_row = std::max<Index>(1, size.nonzeros / std::max<Index>(by_columns ? cols : rows, 1));
  const Index block_rows =
      plan.form == Plan::Form::dense
          ? std::max<Index>(1, (Index{32} << 20) / static_cast<Index>(sizeof(Scalar)) / std::max<Index>(cols, 1))
          : std::max<Index>(1, (Index{4} << 20) / per_row);

  std::optional<OutputFile> npy;
  std::optional<MatrixMarketWriter> mtx;
  if (plan.form == Plan::Form::dense) {
    npy.emplace(o.output);
    npy->write(convmat::npy::header(dtype, {plan.rows, plan.cols}));
  } else if (plan.form == Plan::Form::sparse) {
    mtx.emplace(o.output);
    const Index nonzeros = size.nonzeros + (plan.affine ? rows + 1 : 0);
    std::ostringstream comment;
    comment << "written by convmat " << CONVMAT_VERSION_STRING << ": " << layer.describe(bias.has_value()) << "\ninput "
            << tuple(layer.input_size()) << " x " << layer.in_channels() << " channels -> output "
            << tuple(layer.output_size()) << " x " << layer.out_channels() << " channels; vec(output) = T vec(input)"
            << (plan.affine ? "\naffine form [T b; 0 1]: the last column is the bias, the last row selects the 1" : "")
            << "\nvalues are " << dtype_name(dtype) << ", each the shortest decimal that reads back exactly";
    mtx->header(plan.rows, plan.cols, nonzeros, comment.str());
  }

  Progress progress("building " + (o.output.empty() ? std::string("the matrix") : o.output), by_columns ? cols : rows,
                    !o.quiet);
  const Scalar zero(0), one(1);
  for (Index begin = 0; by_columns && begin < cols; begin += block_rows) {
    const Index end = std::min(cols, begin + block_rows);
    const auto columns = blocks.sparse_columns(begin, end);  // rows of T^T
    if (mtx)
      for (Index c = 0; c < columns.rows(); ++c)
        for (typename Sparse<Scalar>::InnerIterator it(columns, c); it; ++it)
          mtx->entry(static_cast<std::int64_t>(it.col()), begin + c, it.value());
    if (o.check) check.add_columns(columns, begin);
    progress.update(end);
  }
  if (by_columns && mtx && plan.affine)  // the last column, b
    for (Index r = 0; r < rows; ++r) mtx->entry(r, cols, b[r]);
  for (Index begin = 0; !by_columns && begin < rows; begin += block_rows) {
    const Index end = std::min(rows, begin + block_rows);
    if (plan.form == Plan::Form::dense) {
      const auto block = blocks.dense(begin, end);
      if (!plan.affine) {
        npy->write(block.data(), sizeof(Scalar) * static_cast<std::size_t>(block.size()));
      } else {
        for (Index r = 0; r < block.rows(); ++r) {
          npy->write(block.row(r).data(), sizeof(Scalar) * static_cast<std::size_t>(cols));
          npy->write(&b[begin + r], sizeof(Scalar));
        }
      }
      if (o.check) check.add(block, begin);
    } else {
      const auto block = blocks.sparse(begin, end);
      if (mtx) {
        if (!plan.affine) {
          mtx->rows(block, begin);
        } else {
          for (Index r = 0; r < block.rows(); ++r) {
            for (typename Sparse<Scalar>::InnerIterator it(block, r); it; ++it)
              mtx->entry(begin + r, static_cast<std::int64_t>(it.col()), it.value());
            mtx->entry(begin + r, cols, b[begin + r]);
          }
        }
      }
      if (o.check) check.add(block, begin);
    }
    progress.update(end);
  }
  if (plan.affine) {  // the last row [0 ... 0 1]
    if (npy) {
      const std::vector<Scalar> last_row(static_cast<std::size_t>(cols), zero);
      npy->write(last_row.data(), sizeof(Scalar) * last_row.size());
      npy->write(&one, sizeof(Scalar));
    }
    if (mtx) mtx->entry(rows, cols, one);
  }
  progress.done();

  // The bias as an output-sized vector, y = T x + b.
  std::optional<OutputFile> bias_file;
  if (!o.bias_out.empty()) {
    bias_file.emplace(o.bias_out);
    bias_file->write(convmat::npy::header(dtype, {rows}));
    bias_file->write(b.data(), sizeof(Scalar) * static_cast<std::size_t>(b.size()));
  }

  if (o.check &&
      !check.report(blocks.direct(check.x), bias ? &b : nullptr, terms_per_output(layer), o.seed, layer.transposed))
    return 1;

  if (npy) npy->commit();
  if (mtx) mtx->finish();
  if (bias_file) bias_file->commit();
  if (!o.quiet) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (plan.form != Plan::Form::none) {
      std::error_code ec;
      const auto file_bytes = std::filesystem::file_size(o.output, ec);
      std::cout << "wrote " << o.output << ": " << (plan.affine ? "the affine matrix [T b; 0 1], " : "the matrix T, ")
                << plan.rows << " x " << plan.cols << " " << dtype_name(dtype) << ", "
                << (plan.form == Plan::Form::dense
                        ? "dense"
                        : grouped(size.nonzeros + (plan.affine ? rows + 1 : 0)) + " non-zeros")
                << ", " << bytes_string(ec ? 0 : file_bytes) << ", in " << std::fixed << std::setprecision(2) << seconds
                << " s\n";
    }
    if (bias_file) std::cout << "wrote " << o.bias_out << ": the bias b as a vector of " << rows << "\n";
  }
  return 0;
}

template <int Rank, class Scalar>
void print_info(const Options& o, const Layer<Rank>& layer, const convmat::npy::Array& weights, bool bias) {
  const auto s = layer.template size<Scalar>();
  const Dtype dtype = dtype_of<Scalar>();
  const double density = static_cast<double>(s.nonzeros) / (static_cast<double>(s.rows) * static_cast<double>(s.cols));
  std::cout << "layer     " << layer.describe(bias) << "\n"
            << "weights   " << o.weights << ": " << dtype_name(dtype) << " " << shape_string(weights.shape) << "\n"
            << "input     (" << layer.in_channels() << ", " << join(as_vector(layer.input_size()))
            << "): " << grouped(s.cols) << " values\n"
            << "output    (" << layer.out_channels() << ", " << join(as_vector(layer.output_size()))
            << "): " << grouped(s.rows) << " values\n"
            << "matrix T  " << grouped(s.rows) << " x " << grouped(s.cols) << ", vec(output) = T vec(input)\n"
            << "non-zeros " << grouped(s.nonzeros) << " (" << std::setprecision(3) << 100.0 * density
            << "% of the entries)\n"
            << "dense     " << bytes_string(s.dense_bytes) << " in memory; as .npy "
            << bytes_string(s.dense_bytes == std::numeric_limits<std::size_t>::max()
                                ? std::numeric_limits<std::uint64_t>::max()
                                : convmat::npy::file_bytes(dtype, {s.rows, s.cols}))
            << "\n"
            << "sparse    " << bytes_string(s.sparse_bytes) << " in memory (compressed rows, 32-bit indices)\n";
  const std::size_t limit = o.max_bytes.empty() ? convmat::max_dense_bytes() : parse_bytes(o.max_bytes);
  if (s.dense_bytes > limit)
    std::cout << "note      the dense form exceeds --max-bytes = " << bytes_string(limit) << ": write .mtx\n";
}

/// Reads the bias file: a vector of out_channels values, converted to Scalar.
template <class Scalar>
Vector<Scalar> read_bias(const std::string& path, Index out_channels) {
  const convmat::npy::Array array = convmat::npy::load(path);
  if (array.shape.size() != 1 || array.shape[0] != out_channels)
    throw cli_error("the bias '" + path + "' has shape " + shape_string(array.shape) + ", but the layer has " +
                    std::to_string(out_channels) + " output channels: it must have shape (" +
                    std::to_string(out_channels) + ",)");
  const auto values = array.values<Scalar>();
  return Eigen::Map<const Vector<Scalar>>(values.data(), static_cast<Index>(values.size()));
}

template <int Rank, class Scalar>
int run(const Options& o, const convmat::npy::Array& weights) {
  const auto layer = make_layer<Rank>(o, weights);
  std::optional<Vector<Scalar>> bias;
  if (!o.bias.empty()) {
    const auto channels = read_bias<Scalar>(o.bias, layer.out_channels());
    bias = layer.transposed ? convmat::bias_vector(layer.tconv, channels) : convmat::bias_vector(layer.conv, channels);
  }
  if (o.info) {
    print_info<Rank, Scalar>(o, layer, weights, bias.has_value());
    return 0;
  }
  const auto values = weights.values<Scalar>();
  return build<Rank, Scalar>(o, layer, values, bias);
}

/// Checks the flags that do not need the weights, then reads the weights
/// and runs the layer of their rank and dtype.
int execute(const Options& o) {
  const bool dense = o.output.size() > 4 && o.output.compare(o.output.size() - 4, 4, ".npy") == 0;
  const bool sparse = o.output.size() > 4 && o.output.compare(o.output.size() - 4, 4, ".mtx") == 0;
  if (!o.output.empty() && !dense && !sparse)
    throw cli_error("-o " + o.output +
                    ": the output must end in .npy (the dense matrix) or .mtx (the sparse "
                    "matrix, Matrix Market)");
  if (o.output.empty() && !o.info && !o.check)
    throw cli_error("say where the matrix goes: -o T.npy (dense) or -o T.mtx (sparse); or --info, or --check");
  if (!o.bias_out.empty() && o.bias.empty()) throw cli_error("--bias-out needs the layer's bias: --bias B.npy");
  if (!o.bias_out.empty() && (o.bias_out.size() < 4 || o.bias_out.compare(o.bias_out.size() - 4, 4, ".npy") != 0))
    throw cli_error("--bias-out " + o.bias_out + ": the bias vector is written as .npy; name it *.npy");
  if (o.affine && o.bias.empty()) throw cli_error("--affine needs the layer's bias: --bias B.npy");
  if (!o.bias.empty() && o.bias_out.empty() && !o.affine && !o.info && !o.check)
    throw cli_error("--bias " + o.bias +
                    ": say where the bias goes: --bias-out b.npy writes the output-sized vector b "
                    "(y = T x + b), --affine writes the matrix [T b; 0 1] instead of T");
  if (o.input_size.empty()) throw cli_error("--input-size is required: the spatial size of the input, like 7,9");
  if (!o.max_bytes.empty()) (void)parse_bytes(o.max_bytes);

  const convmat::npy::Array weights = convmat::npy::load(o.weights);
  const auto ndim = weights.shape.size();
  if (ndim < 3)
    throw cli_error("the weights '" + o.weights + "' have shape " + shape_string(weights.shape) +
                    ", but a layer's weights have at least 3 dimensions: " +
                    (o.transposed ? "(in_channels, out_channels / groups, kernel...)"
                                  : "(out_channels, in_channels / groups, kernel...)"));
  for (auto d : weights.shape)
    if (d == 0)
      throw cli_error("the weights '" + o.weights + "' have shape " + shape_string(weights.shape) + ", which is empty");
  const int rank = static_cast<int>(ndim) - 2;
  const bool f32 = weights.dtype == Dtype::float32;
  switch (rank) {
    case 1:
      return f32 ? run<1, float>(o, weights) : run<1, double>(o, weights);
    case 2:
      return f32 ? run<2, float>(o, weights) : run<2, double>(o, weights);
    case 3:
      return f32 ? run<3, float>(o, weights) : run<3, double>(o, weights);
    default:
      throw cli_error("the weights '" + o.weights + "' have shape " + shape_string(weights.shape) + ", a " +
                      std::to_string(rank) +
                      "-D layer; the convmat command handles 1-D, 2-D and 3-D layers "
                      "(Conv1d/2d/3d), the C++ library any rank");
  }
}

// ---- no arguments: the worked example ------------------------------------------------

int worked_example() {
  convmat::Conv2dSpec spec;  // torch.nn.Conv2d(1, 1, kernel_size=2, bias=False)
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  const Eigen::Vector4d w(1, 2, 3, 4);
  const auto t = convmat::conv_matrix(spec, w);
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(9, 1, 9);
  const Eigen::VectorXd by_matrix = t * x, direct = convmat::convolve(spec, w, x);
  const double difference = (by_matrix - direct).cwiseAbs().maxCoeff();
  const auto list = [](const Eigen::VectorXd& v) {
    std::ostringstream os;
    for (Index i = 0; i < v.size(); ++i) os << (i ? ", " : "[") << v[i];
    return os.str() + "]";
  };

  std::cout << "convmat " << CONVMAT_VERSION_STRING
            << ": the matrix T of a convolution layer, vec(conv(x, w)) = T vec(x)\n\n"
            << "The worked example: torch.nn.Conv2d(1, 1, kernel_size=2, bias=False) on a 3x3 input x,\n"
            << "weights w = [[1, 2], [3, 4]]. T has one row per output y and one column per input x:\n\n"
            << "         x00 x01 x02 x10 x11 x12 x20 x21 x22\n";
  for (Index r = 0; r < t.rows(); ++r) {
    std::cout << "   y" << r / 2 << r % 2 << " [";
    for (Index c = 0; c < t.cols(); ++c) std::cout << std::setw(4) << t(r, c);
    std::cout << " ]\n";
  }
  std::cout
      << "\nCheck with x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]:\n"
      << "   T vec(x)           = " << list(by_matrix) << "\n"
      << "   convolve(x, w)     = " << list(direct) << "   (the direct convolution)\n"
      << "   largest difference = " << difference << "\n\n"
      << "Your layer: numpy.save('w.npy', conv.weight.detach().numpy()), then\n"
      << "   convmat w.npy --input-size 7,9 --stride 2 --padding 1 -o T.npy   # dense: numpy.load('T.npy')\n"
      << "   convmat w.npy --input-size 7,9 --stride 2 --padding 1 -o T.mtx   # sparse: scipy.io.mmread('T.mtx')\n"
      << "convmat --help lists every option.\n";
  return difference == 0.0 ? 0 : 1;
}

}  // namespace convmat_cli

int main(int argc, char** argv) {
  using namespace convmat_cli;
  if (argc == 1) return worked_example();

  Options o;
  CLI::App app{
      "convmat: the matrix T of a convolution layer, vec(conv(x, w)) = T vec(x), with PyTorch's semantics.\n"
      "Reads the layer's weights from a .npy file (numpy.save(path, conv.weight.detach().numpy()));\n"
      "channels and kernel size come from their shape, the rest from the flags, named as in\n"
      "torch.nn.Conv2d. Writes T dense (.npy) or sparse (Matrix Market .mtx). Without arguments,\n"
      "shows a worked example.",
      "convmat"};
  app.get_formatter()->column_width(30);
  app.add_option("weights", o.weights,
                 "The weights (.npy, float32 or float64): (out_channels, in_channels / groups, "
                 "kernel...), or (in_channels, out_channels / groups, kernel...) with --transposed")
      ->required();
  app.add_option("-o,--output", o.output, "Where T goes: *.npy dense (output_numel x input_numel), *.mtx sparse");
  app.add_option("--input-size", o.input_size, "Spatial size of the input, like 7,9 (required)");
  app.add_option("--kernel-size", o.kernel_size, "Checked against the weights' shape, like 3 or 3,3 (optional)");
  app.add_option("--stride", o.stride, "Like 2 or 2,1 (default 1)");
  app.add_option("--padding", o.padding,
                 "Numbers like 1 or 1,0; same, valid (as PyTorch), full (every overlap); or same_upper, "
                 "same_lower (ONNX's auto_pad, TensorFlow's 'SAME': output ceil(input / stride), any stride) "
                 "(default 0)");
  app.add_option("--padding-end", o.padding_end,
                 "Padding on the high side, like 2 or 2,1, when it differs: --padding is then the low side "
                 "(ONNX's pads)");
  app.add_option("--dilation", o.dilation, "Like 2 or 2,1 (default 1)");
  app.add_option("--groups", o.groups, "Channel groups (default 1)");
  app.add_option("--padding-mode", o.padding_mode, "zeros, reflect, replicate or circular (default zeros)");
  app.add_option("--in-channels", o.in_channels, "Checked against the weights' shape (optional)");
  app.add_option("--out-channels", o.out_channels, "Checked against the weights' shape (optional)");
  app.add_flag("--transposed", o.transposed, "The layer is a ConvTranspose1d/2d/3d, whose weights are (in_channels, out_channels / groups, kernel...)");
  app.add_option("--output-padding", o.output_padding, "With --transposed, like 1 or 1,0 (default 0)");
  app.add_option("--bias", o.bias,
                 "The layer's bias (.npy of out_channels values); used by --bias-out, --affine, --check");
  app.add_option("--bias-out", o.bias_out, "Also write b, the bias as an output_numel vector (y = T x + b), as .npy");
  app.add_flag("--affine", o.affine, "Write the affine matrix [T b; 0 1] instead of T (needs --bias)");
  app.add_flag("--info", o.info,
               "Print the shapes, the exact non-zero count and the bytes of each form; build nothing");
  app.add_flag("--check", o.check, "Multiply T by a random input and compare with the direct convolution");
  app.add_option("--seed", o.seed, "Seed of --check's random input");
  app.add_option("--max-bytes", o.max_bytes,
                 "Largest dense matrix to write, like 8G or none (default: half the memory)");
  app.add_flag("-q,--quiet", o.quiet, "Print only errors and --check's result");
  app.set_version_flag("--version", CONVMAT_VERSION_STRING);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "convmat: error: " << e.what() << "\nRun 'convmat --help' for the options.\n";
    return 2;
  }

  try {
    return execute(o);
  } catch (const convmat::spec_error& e) {
    std::string message = e.what();
    if (message.rfind("convmat: ", 0) == 0) message.erase(0, 9);
    std::cerr << "convmat: error: " << message << "\n";
  } catch (const cli_error& e) {
    std::cerr << "convmat: error: " << e.what() << "\n";
  } catch (const convmat::npy::error& e) {
    std::cerr << "convmat: error: " << e.what() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "convmat: error: out of memory; try the sparse form (-o T.mtx) or a smaller layer\n";
  } catch (const std::exception& e) {
    std::cerr << "convmat: error: " << e.what() << "\n";
  }
  return 1;
}
