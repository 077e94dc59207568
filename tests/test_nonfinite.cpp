// NaN and infinity propagate exactly as each path's arithmetic says: no
// path hides one (skips it, clamps it) and none invents one. The expected
// pattern is found independently, with finite numbers only: which outputs
// a weight (or an input) reaches is where the layer with that one weight
// (or that one input) set to 1 and everything else positive is non-zero.
//
// The arithmetic differs per path, and so do the expectations:
// - direct convolution and the sparse T: only the taps that read a real
//   input are multiplied, so a NaN reaches exactly the outputs it touches;
// - the dense product T * x multiplies the structural zeros of T too, and
//   0 * inf = 0 * NaN = NaN;
// - unfold then multiply multiplies padding zeros by the weights, so a NaN
//   or infinite weight reaches every output of its channel.
#include <convmat/convmat.hpp>

#include <limits>

#include "support/catch.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

namespace {

constexpr int specs_per_rank = 40;
constexpr double nan = std::numeric_limits<double>::quiet_NaN();
constexpr double inf = std::numeric_limits<double>::infinity();

using Mask = Eigen::Array<bool, Eigen::Dynamic, 1>;

Eigen::VectorXd unit(Index size, Index at) {
  Eigen::VectorXd e = Eigen::VectorXd::Zero(size);
  e(at) = 1;
  return e;
}

Eigen::VectorXd positive(std::mt19937_64& rng, Index size) {
  return (random_vector<double>(rng, size).array().abs() + 0.5).matrix();
}

template <class Derived>
Mask non_zero(const Eigen::MatrixBase<Derived>& v) {
  return v.array() != 0.0;
}

template <class Derived>
Mask is_nan(const Eigen::MatrixBase<Derived>& v) {
  return v.array().isNaN();
}

template <class Derived>
Mask is_pos_inf(const Eigen::MatrixBase<Derived>& v) {
  return v.array() == inf;
}

/// The outputs of output channel `channel`, for layers of `spatial` outputs per channel.
Mask channel_mask(Index size, Index spatial, Index channel) {
  Mask m = Mask::Constant(size, false);
  m.segment(channel * spatial, spatial).setConstant(true);
  return m;
}

// One NaN (then +inf) weight; positive finite inputs.
template <int Rank>
void check_nonfinite_weight(std::mt19937_64& rng) {
  for (int i = 0; i < specs_per_rank; ++i) {
    const auto spec = random_spec<Rank>(rng);
    INFO("case " << i << ": " << describe(spec));
    const Index wn = spec.weight_numel(), spatial = spec.output_spatial();
    const Index j = uniform(rng, 0, wn - 1);
    const Index channel = j / (wn / spec.out_channels);
    INFO("weight " << j << " (output channel " << channel << ")");
    const Eigen::VectorXd x = positive(rng, spec.input_numel());
    const Mask reached = non_zero(convmat::convolve(spec, unit(wn, j), x));
    const Mask whole_channel = channel_mask(spec.output_numel(), spatial, channel);

    Eigen::VectorXd w = positive(rng, wn);
    w(j) = nan;
    REQUIRE((is_nan(convmat::convolve(spec, w, x)) == reached).all());
    const auto t = convmat::conv_matrix(spec, w);
    REQUIRE(t.array().isNaN().count() == reached.count());  // one entry per output the weight reaches
    REQUIRE((is_nan(t * x) == reached).all());
    REQUIRE((is_nan(convmat::conv_matrix_sparse(spec, w) * x) == reached).all());
    REQUIRE((is_nan(convmat::convolve_unfold(spec, w, x)) == whole_channel).all());

    w(j) = inf;  // positive weights and inputs: no inf - inf anywhere
    const Eigen::VectorXd direct = convmat::convolve(spec, w, x);
    REQUIRE((is_pos_inf(direct) == reached).all());
    REQUIRE((is_nan(direct) == false).all());
    REQUIRE((is_pos_inf(convmat::conv_matrix(spec, w) * x) == reached).all());
    REQUIRE((is_pos_inf(convmat::conv_matrix_sparse(spec, w) * x) == reached).all());
    const Eigen::VectorXd unfolded = convmat::convolve_unfold(spec, w, x);
    REQUIRE((is_pos_inf(unfolded) == reached).all());
    REQUIRE((is_nan(unfolded) == (whole_channel && !reached)).all());  // inf * padding zero
  }
}

// One NaN (then +inf) input; positive finite weights.
template <int Rank>
void check_nonfinite_input(std::mt19937_64& rng) {
  for (int i = 0; i < specs_per_rank; ++i) {
    const auto spec = random_spec<Rank>(rng);
    INFO("case " << i << ": " << describe(spec));
    const Index n = spec.input_numel();
    const Index at = uniform(rng, 0, n - 1);
    INFO("input " << at);
    const Eigen::VectorXd w = positive(rng, spec.weight_numel());
    const Mask reached = non_zero(convmat::convolve(spec, w, unit(n, at)));
    const auto t = convmat::conv_matrix(spec, w);
    const auto s = convmat::conv_matrix_sparse(spec, w);

    Eigen::VectorXd x = positive(rng, n);
    x(at) = nan;
    REQUIRE((is_nan(convmat::convolve(spec, w, x)) == reached).all());
    REQUIRE((is_nan(s * x) == reached).all());
    REQUIRE(is_nan(t * x).all());  // 0 * NaN in every row
    REQUIRE((is_nan(convmat::convolve_unfold(spec, w, x)) == reached).all());
    const auto columns = convmat::unfold(spec, x);
    const auto ones = Eigen::MatrixXd::Ones(columns.rows(), columns.cols());
    REQUIRE(columns.array().isNaN().count() == (convmat::unfold(spec, unit(n, at)).array() != 0).count());
    const Mask folded_back = non_zero(convmat::fold(spec, convmat::unfold(spec, unit(n, at))));
    REQUIRE((is_nan(convmat::fold(spec, columns)) == folded_back).all());
    REQUIRE((convmat::fold(spec, ones).array().isFinite()).all());

    x(at) = inf;
    REQUIRE((is_pos_inf(convmat::convolve(spec, w, x)) == reached).all());
    REQUIRE((is_pos_inf(s * x) == reached).all());
    const Eigen::VectorXd dense = t * x;
    REQUIRE((is_pos_inf(dense) == reached).all());
    REQUIRE((is_nan(dense) == !reached).all());  // 0 * inf where the input is not read
    REQUIRE((is_pos_inf(convmat::convolve_unfold(spec, w, x)) == reached).all());
  }
}

// The transposed layer: one NaN weight, then one NaN input.
template <int Rank>
void check_nonfinite_transpose(std::mt19937_64& rng) {
  for (int i = 0; i < specs_per_rank; ++i) {
    const auto spec = random_transpose_spec<Rank>(rng);
    INFO("case " << i << ": " << describe(spec));
    const Index wn = spec.weight_numel(), n = spec.input_numel();
    const Index j = uniform(rng, 0, wn - 1), at = uniform(rng, 0, n - 1);
    INFO("weight " << j << ", input " << at);
    const Eigen::VectorXd x = positive(rng, n);
    Eigen::VectorXd w = positive(rng, wn);
    const Mask weight_reaches = non_zero(convmat::convolve_transpose(spec, unit(wn, j), x));
    const Mask input_reaches = non_zero(convmat::convolve_transpose(spec, w, unit(n, at)));

    Eigen::VectorXd xn = x;
    xn(at) = nan;
    REQUIRE((is_nan(convmat::convolve_transpose(spec, w, xn)) == input_reaches).all());
    REQUIRE((is_nan(convmat::conv_transpose_matrix_sparse(spec, w) * xn) == input_reaches).all());
    REQUIRE(is_nan(convmat::conv_transpose_matrix(spec, w) * xn).all());

    w(j) = nan;
    REQUIRE((is_nan(convmat::convolve_transpose(spec, w, x)) == weight_reaches).all());
    REQUIRE((is_nan(convmat::conv_transpose_matrix(spec, w) * x) == weight_reaches).all());
    REQUIRE((is_nan(convmat::conv_transpose_matrix_sparse(spec, w) * x) == weight_reaches).all());
  }
}

}  // namespace

TEST_CASE("a NaN or infinite weight reaches exactly what the arithmetic says", "[nonfinite]") {
  auto rng = generator("nonfinite weight");
  for_ranks([&](auto tag) { check_nonfinite_weight<decltype(tag)::value>(rng); });
}

TEST_CASE("a NaN or infinite input reaches exactly what the arithmetic says", "[nonfinite]") {
  auto rng = generator("nonfinite input");
  for_ranks([&](auto tag) { check_nonfinite_input<decltype(tag)::value>(rng); });
}

TEST_CASE("NaN through the transposed convolution", "[nonfinite][transpose]") {
  auto rng = generator("nonfinite transpose");
  for_ranks([&](auto tag) { check_nonfinite_transpose<decltype(tag)::value>(rng); });
}
