// Every path against PyTorch: the golden cases that tools/make_golden.py
// computes with torch.nn.Conv{1,2,3}d, ConvTranspose{1,2,3}d and F.unfold
// (tests/data/, format in tests/data/README.md). PyTorch is the reference.
//
// The data holds multiples of 1/256, so PyTorch's results are exact and a
// correct path agrees to the last bit; the 1e-12 relative tolerance only
// leaves room for a different summation order. Each family checks that it
// read exactly the number of cases it expects, so a missing or truncated
// file fails rather than passing vacuously, and prints how many cases ran.
#include <convmat/dense.hpp>
#include <convmat/direct.hpp>
#include <convmat/sparse.hpp>
#include <convmat/unfold.hpp>

#include <iostream>
#include <string>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

namespace {

constexpr double tolerance = 1e-12;

/// The batch stored C-ordered as (batch, channels, size...): one column per
/// sample, as convmat takes it.
Eigen::MatrixXd batch_matrix(const Eigen::VectorXd& flat, Index numel, Index batch) {
  REQUIRE(flat.size() == numel * batch);
  return Eigen::Map<const Eigen::MatrixXd>(flat.data(), numel, batch);
}

/// Reads a convolution spec; `padding same` / `padding valid` go through
/// set_padding_same() / set_padding_valid(), whose result must be the
/// stored pad_begin / pad_end.
template <int Rank>
convmat::ConvSpec<Rank> read_conv_spec(GoldenFile& f) {
  convmat::ConvSpec<Rank> s;
  s.in_channels = f.integer("in_channels");
  s.out_channels = f.integer("out_channels");
  s.groups = f.integer("groups");
  s.input_size = f.indices<Rank>("input_size");
  s.kernel_size = f.indices<Rank>("kernel_size");
  s.stride = f.indices<Rank>("stride");
  const std::string padding_word = f.word_follows("padding") ? f.word("padding") : "";
  if (padding_word.empty()) s.padding = f.indices<Rank>("padding");
  const auto begin = f.indices<Rank>("pad_begin");
  const auto end = f.indices<Rank>("pad_end");
  s.dilation = f.indices<Rank>("dilation");
  s.padding_mode = convmat::padding_mode_from_string(f.word("padding_mode"));
  if (padding_word == "same")
    s.set_padding_same();
  else if (padding_word == "valid")
    s.set_padding_valid();
  else
    REQUIRE(padding_word.empty());
  INFO(describe(s));
  REQUIRE(s.pad_begin() == begin);
  REQUIRE(s.pad_end() == end);
  REQUIRE(s.output_size() == f.indices<Rank>("output_size"));
  return s;
}

template <int Rank>
convmat::ConvTransposeSpec<Rank> read_transpose_spec(GoldenFile& f) {
  convmat::ConvTransposeSpec<Rank> s;
  s.in_channels = f.integer("in_channels");
  s.out_channels = f.integer("out_channels");
  s.groups = f.integer("groups");
  s.input_size = f.indices<Rank>("input_size");
  s.kernel_size = f.indices<Rank>("kernel_size");
  s.stride = f.indices<Rank>("stride");
  s.padding = f.indices<Rank>("padding");
  s.output_padding = f.indices<Rank>("output_padding");
  s.dilation = f.indices<Rank>("dilation");
  INFO(describe(s));
  REQUIRE(s.output_size() == f.indices<Rank>("output_size"));
  return s;
}

/// Runs every case of conv{Rank}d.txt through convolve, convolve_unfold,
/// conv_matrix * X, conv_matrix_sparse * X, and compares the full matrix
/// (dense and sparse) with PyTorch's where it is stored.
template <int Rank>
void check_conv_family(Index expected_cases) {
  const std::string family = "conv" + std::to_string(Rank) + "d";
  GoldenFile f(family, Rank);
  REQUIRE(f.declared_cases() == expected_cases);
  Index cases = 0, matrices = 0;
  while (f.next_case()) {
    INFO(f.where());
    const auto spec = read_conv_spec<Rank>(f);
    INFO(family << " case " << cases << ": " << describe(spec));
    const Index batch = f.integer("batch");
    const Eigen::MatrixXd x = batch_matrix(f.values("input"), spec.input_numel(), batch);
    const Eigen::VectorXd w = f.values("weight");
    REQUIRE(w.size() == spec.weight_numel());
    const Eigen::MatrixXd y = batch_matrix(f.values("output"), spec.output_numel(), batch);

    CHECK(relative_error(convmat::convolve(spec, w, x), y) <= tolerance);
    CHECK(relative_error(convmat::convolve_unfold(spec, w, x), y) <= tolerance);
    const auto dense = convmat::conv_matrix(spec, w);
    CHECK(relative_error(dense * x, y) <= tolerance);
    const auto sparse = convmat::conv_matrix_sparse(spec, w);
    CHECK(relative_error(Eigen::MatrixXd(sparse * x), y) <= tolerance);
    if (f.at("matrix")) {
      const auto t = f.matrix("matrix");
      CHECK(relative_error(dense, t) <= tolerance);
      CHECK(relative_error(Eigen::MatrixXd(sparse), t) <= tolerance);
      ++matrices;
    }
    f.end_case();
    ++cases;
  }
  REQUIRE(cases == expected_cases);
  std::cout << "golden " << family << ": " << cases
            << " cases through convolve, convolve_unfold, conv_matrix * X, conv_matrix_sparse * X; "
            << matrices << " full matrices (dense and sparse) == PyTorch's T\n";
}

/// Runs every case of conv_transpose{Rank}d.txt through convolve_transpose,
/// conv_transpose_matrix * X, conv_transpose_matrix_sparse * X, and the
/// full matrices where stored.
template <int Rank>
void check_transpose_family(Index expected_cases) {
  const std::string family = "conv_transpose" + std::to_string(Rank) + "d";
  GoldenFile f(family, Rank);
  REQUIRE(f.declared_cases() == expected_cases);
  Index cases = 0, matrices = 0;
  while (f.next_case()) {
    INFO(f.where());
    const auto spec = read_transpose_spec<Rank>(f);
    INFO(family << " case " << cases << ": " << describe(spec));
    const Index batch = f.integer("batch");
    const Eigen::MatrixXd x = batch_matrix(f.values("input"), spec.input_numel(), batch);
    const Eigen::VectorXd w = f.values("weight");
    REQUIRE(w.size() == spec.weight_numel());
    const Eigen::MatrixXd y = batch_matrix(f.values("output"), spec.output_numel(), batch);

    CHECK(relative_error(convmat::convolve_transpose(spec, w, x), y) <= tolerance);
    const auto dense = convmat::conv_transpose_matrix(spec, w);
    CHECK(relative_error(dense * x, y) <= tolerance);
    const auto sparse = convmat::conv_transpose_matrix_sparse(spec, w);
    CHECK(relative_error(Eigen::MatrixXd(sparse * x), y) <= tolerance);
    if (f.at("matrix")) {
      const auto t = f.matrix("matrix");
      CHECK(relative_error(dense, t) <= tolerance);
      CHECK(relative_error(Eigen::MatrixXd(sparse), t) <= tolerance);
      ++matrices;
    }
    f.end_case();
    ++cases;
  }
  REQUIRE(cases == expected_cases);
  std::cout << "golden " << family << ": " << cases
            << " cases through convolve_transpose, conv_transpose_matrix * X, conv_transpose_matrix_sparse * X; "
            << matrices << " full matrices (dense and sparse) == PyTorch's T\n";
}

}  // namespace

// The counts are tools/make_golden.py's CONV_CASES, TRANSPOSE_CASES and
// UNFOLD_CASES; change both together.
TEST_CASE("golden: Conv1d against PyTorch", "[golden][conv]") { check_conv_family<1>(120); }
TEST_CASE("golden: Conv2d against PyTorch", "[golden][conv]") { check_conv_family<2>(120); }
TEST_CASE("golden: Conv3d against PyTorch", "[golden][conv]") { check_conv_family<3>(100); }

TEST_CASE("golden: ConvTranspose1d against PyTorch", "[golden][transpose]") { check_transpose_family<1>(45); }
TEST_CASE("golden: ConvTranspose2d against PyTorch", "[golden][transpose]") { check_transpose_family<2>(45); }
TEST_CASE("golden: ConvTranspose3d against PyTorch", "[golden][transpose]") { check_transpose_family<3>(40); }

TEST_CASE("golden: unfold against F.unfold", "[golden][unfold]") {
  constexpr Index expected_cases = 60;
  GoldenFile f("unfold2d", 2);
  REQUIRE(f.declared_cases() == expected_cases);
  Index cases = 0, samples = 0;
  while (f.next_case()) {
    INFO(f.where());
    convmat::Conv2dSpec spec;
    spec.in_channels = f.integer("in_channels");
    spec.input_size = f.indices<2>("input_size");
    spec.kernel_size = f.indices<2>("kernel_size");
    spec.stride = f.indices<2>("stride");
    spec.padding = f.indices<2>("padding");
    spec.dilation = f.indices<2>("dilation");
    INFO("unfold2d case " << cases << ": " << describe(spec));
    REQUIRE(spec.output_size() == f.indices<2>("output_size"));
    const Index batch = f.integer("batch");
    const Eigen::MatrixXd x = batch_matrix(f.values("input"), spec.input_numel(), batch);
    const Index rows = spec.in_channels * spec.kernel_numel(), cols = spec.output_spatial();
    const Eigen::VectorXd u = f.values("unfold");  // (batch, rows, cols), C order
    REQUIRE(u.size() == batch * rows * cols);
    for (Index s = 0; s < batch; ++s) {
      const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> expected(
          u.data() + s * rows * cols, rows, cols);
      CHECK(relative_error(convmat::unfold(spec, x.col(s)), expected) <= tolerance);
      ++samples;
    }
    f.end_case();
    ++cases;
  }
  REQUIRE(cases == expected_cases);
  std::cout << "golden unfold2d: " << cases << " cases (" << samples << " samples) through unfold == F.unfold\n";
}
