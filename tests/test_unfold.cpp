// unfold and fold: convolve_unfold equals the direct convolution, fold is
// the adjoint of unfold, and the layout is F.unfold's.
#include <convmat/direct.hpp>
#include <convmat/unfold.hpp>

#include "support/catch.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

TEST_CASE("convolve_unfold equals the direct convolution", "[unfold][property]") {
  auto rng = generator("unfold == direct");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 2000; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto x = random_matrix<double>(rng, spec.input_numel(), uniform(rng, 1, 3));
      REQUIRE(relative_error(convmat::convolve_unfold(spec, w, x), convmat::convolve(spec, w, x)) <= 1e-12);
    }
  });
}

TEST_CASE("fold is the adjoint of unfold", "[unfold][fold][property]") {
  auto rng = generator("fold adjoint");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 2000; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto x = random_vector<double>(rng, spec.input_numel());
      const auto u = convmat::unfold(spec, x);
      REQUIRE(u.rows() == spec.in_channels * spec.kernel_numel());
      REQUIRE(u.cols() == spec.output_spatial());
      const Eigen::MatrixXd c = random_matrix<double>(rng, u.rows(), u.cols());
      const double lhs = (u.array() * c.array()).sum();
      const double rhs = x.dot(convmat::fold(spec, c));
      REQUIRE(std::abs(lhs - rhs) <= 1e-12 * (1.0 + std::abs(lhs)));
    }
  });
}

TEST_CASE("unfold has F.unfold's layout", "[unfold]") {
  // 1 channel, 3x3 input 1..9, 2x2 kernel: column p holds the patch at p,
  // rows ordered (k0, k1).
  convmat::Conv2dSpec spec;
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(9, 1, 9);
  Eigen::Matrix<double, 4, 4, Eigen::RowMajor> expected;
  expected << 1, 2, 4, 5,  //
      2, 3, 5, 6,          //
      4, 5, 7, 8,          //
      5, 6, 8, 9;
  REQUIRE(convmat::unfold(spec, x) == expected);
  // fold sums overlapping patches: each input counted as often as it is read.
  const Eigen::MatrixXd ones = Eigen::MatrixXd::Ones(4, 4);
  Eigen::VectorXd counts(9);
  counts << 1, 2, 1, 2, 4, 2, 1, 2, 1;
  REQUIRE(convmat::fold(spec, ones) == counts);
}

TEST_CASE("unfold and fold reject what does not fit", "[unfold][errors]") {
  convmat::Conv2dSpec spec;
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  REQUIRE_THROWS_AS(convmat::unfold(spec, Eigen::VectorXd(8)), convmat::spec_error);
  REQUIRE_THROWS_AS(convmat::unfold(spec, Eigen::MatrixXd(9, 2)), convmat::spec_error);
  REQUIRE_THROWS_AS(convmat::fold(spec, Eigen::MatrixXd(4, 3)), convmat::spec_error);
}
