// The dense matrix: T x equals the direct convolution on random specs of
// every kind, row blocks stack to T, the transposed layer's matrix is the
// transpose, the bias and affine forms, the weight Jacobian.
#include <convmat/dense.hpp>
#include <convmat/direct.hpp>

#include "support/catch.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

namespace {

constexpr int specs_per_rank = 2000;

template <class Scalar>
double tolerance() {
  return std::is_same_v<typename Eigen::NumTraits<Scalar>::Real, float> ? 1e-5 : 1e-12;
}

template <class Scalar, int Rank>
void check_dense_equals_direct(std::mt19937_64& rng, int count) {
  for (int i = 0; i < count; ++i) {
    const auto spec = random_spec<Rank>(rng);
    INFO("case " << i << ": " << describe(spec));
    const auto w = random_vector<Scalar>(rng, spec.weight_numel());
    const auto x = random_matrix<Scalar>(rng, spec.input_numel(), uniform(rng, 1, 3));
    const auto t = convmat::conv_matrix(spec, w);
    REQUIRE(t.rows() == spec.output_numel());
    REQUIRE(t.cols() == spec.input_numel());
    const auto y = convmat::convolve(spec, w, x);
    const auto ty = (t * x).eval();
    REQUIRE(relative_error(ty, y) <= tolerance<Scalar>());
  }
}

}  // namespace

TEST_CASE("conv_matrix times x equals the direct convolution", "[dense][property]") {
  auto rng = generator("dense == direct");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    check_dense_equals_direct<double, Rank>(rng, specs_per_rank);
    check_dense_equals_direct<float, Rank>(rng, specs_per_rank / 10);
    check_dense_equals_direct<std::complex<double>, Rank>(rng, specs_per_rank / 10);
  });
}

TEST_CASE("the worked examples of the original question", "[dense][example]") {
  SECTION("a 3x3 input and a 2x2 kernel give a 4x9 matrix") {
    convmat::Conv2dSpec spec;
    spec.input_size = {3, 3};
    spec.kernel_size = {2, 2};
    Eigen::Vector4d w(1, 2, 3, 4);
    const auto t = convmat::conv_matrix(spec, w);
    Eigen::Matrix<double, 4, 9, Eigen::RowMajor> expected;
    expected << 1, 2, 0, 3, 4, 0, 0, 0, 0,  //
        0, 1, 2, 0, 3, 4, 0, 0, 0,          //
        0, 0, 0, 1, 2, 0, 3, 4, 0,          //
        0, 0, 0, 0, 1, 2, 0, 3, 4;
    REQUIRE(t == expected);
  }
  SECTION("weights 4x3x3x3 on a 3x7x9 input give a 140x189 matrix") {
    convmat::Conv2dSpec spec;
    spec.in_channels = 3;
    spec.out_channels = 4;
    spec.input_size = {7, 9};
    spec.kernel_size = {3, 3};
    auto rng = generator("worked example 2");
    const auto w = random_vector<double>(rng, 4 * 3 * 3 * 3);
    const auto t = convmat::conv_matrix(spec, w);
    REQUIRE(t.rows() == 140);
    REQUIRE(t.cols() == 189);
    const auto x = random_vector<double>(rng, 189);
    REQUIRE(relative_error((t * x).eval(), convmat::convolve(spec, w, x)) <= 1e-12);
  }
}

TEST_CASE("padding modes add up the taps that land on the same input", "[dense]") {
  // 1-D input (a, b, c), kernel (1, 10, 100), padding 2 each side.
  convmat::Conv1dSpec spec;
  spec.input_size = {3};
  spec.kernel_size = {3};
  spec.padding = {2};
  const Eigen::Vector3d w(1, 10, 100);
  SECTION("replicate: a a | a b c | c c") {
    spec.padding_mode = convmat::PaddingMode::replicate;
    const auto t = convmat::conv_matrix(spec, w);
    Eigen::Matrix<double, 5, 3, Eigen::RowMajor> expected;
    expected << 111, 0, 0,  // a a a
        11, 100, 0,         // a a b
        1, 10, 100,         // a b c
        0, 1, 110,          // b c c
        0, 0, 111;          // c c c
    REQUIRE(t == expected);
  }
  SECTION("reflect: c b | a b c | b a") {
    spec.padding_mode = convmat::PaddingMode::reflect;
    const auto t = convmat::conv_matrix(spec, w);
    Eigen::Matrix<double, 5, 3, Eigen::RowMajor> expected;
    expected << 100, 10, 1,  // c b a
        10, 101, 0,          // b a b
        1, 10, 100,          // a b c
        0, 101, 10,          // b c b
        100, 10, 1;          // c b a
    REQUIRE(t == expected);
  }
  SECTION("circular: b c | a b c | a b") {
    spec.padding_mode = convmat::PaddingMode::circular;
    const auto t = convmat::conv_matrix(spec, w);
    Eigen::Matrix<double, 5, 3, Eigen::RowMajor> expected;
    expected << 100, 1, 10,  // b c a
        10, 100, 1,          // c a b
        1, 10, 100,          // a b c
        100, 1, 10,          // b c a
        10, 100, 1;          // c a b
    REQUIRE(t == expected);
  }
}

TEST_CASE("row blocks stack to exactly the whole matrix", "[dense][blocks][property]") {
  auto rng = generator("dense row blocks");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 300; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto t = convmat::conv_matrix(spec, w);
      Index begin = 0;
      while (begin < t.rows()) {
        const Index end = std::min<Index>(t.rows(), begin + uniform(rng, 0, 7));
        const auto block = convmat::conv_matrix_rows(spec, w, begin, end);
        REQUIRE(block.rows() == end - begin);
        REQUIRE(block == t.middleRows(begin, end - begin));
        begin = end;
      }
    }
  });
}

TEST_CASE("the transposed convolution's matrix", "[dense][transpose][property]") {
  auto rng = generator("dense transpose");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 1000; ++i) {
      const auto spec = random_transpose_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto x = random_matrix<double>(rng, spec.input_numel(), 2);
      const auto t = convmat::conv_transpose_matrix(spec, w);
      REQUIRE(t.rows() == spec.output_numel());
      REQUIRE(t.cols() == spec.input_numel());
      REQUIRE(relative_error((t * x).eval(), convmat::convolve_transpose(spec, w, x)) <= 1e-12);

      // With output_padding 0 it is exactly the transpose of the convolution
      // with the same geometry, mapping the transposed output back.
      convmat::ConvSpec<Rank> conv;
      conv.in_channels = spec.out_channels;
      conv.out_channels = spec.in_channels;
      conv.groups = spec.groups;
      conv.input_size = spec.output_size();
      conv.kernel_size = spec.kernel_size;
      conv.stride = spec.stride;
      conv.padding = spec.padding;
      conv.dilation = spec.dilation;
      if (conv.output_size() == spec.input_size) REQUIRE(t == convmat::conv_matrix(conv, w).transpose());
    }
  });
}

TEST_CASE("bias and the affine form", "[dense][bias]") {
  auto rng = generator("bias");
  for (int i = 0; i < 200; ++i) {
    const auto spec = random_spec<2>(rng);
    INFO(describe(spec));
    const auto w = random_vector<double>(rng, spec.weight_numel());
    const auto bias = random_vector<double>(rng, spec.out_channels);
    const auto x = random_vector<double>(rng, spec.input_numel());
    const auto b = convmat::bias_vector(spec, bias);
    for (Index oc = 0; oc < spec.out_channels; ++oc)
      REQUIRE((b.segment(oc * spec.output_spatial(), spec.output_spatial()).array() == bias(oc)).all());
    const auto a = convmat::affine_matrix(spec, w, bias);
    Eigen::VectorXd xh(x.size() + 1);
    xh << x, 1.0;
    const Eigen::VectorXd yh = a * xh;
    const Eigen::VectorXd y = convmat::convolve(spec, w, x) + b;
    REQUIRE(relative_error(yh.head(y.size()), y) <= 1e-12);
    REQUIRE(yh(y.size()) == 1.0);
  }
  REQUIRE_THROWS_AS(convmat::bias_vector(random_spec<1>(rng), Eigen::VectorXd(100)), convmat::spec_error);
}

TEST_CASE("the weight Jacobian times vec(w) is the convolution", "[dense][jacobian][property]") {
  auto rng = generator("jacobian");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 500; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto x = random_vector<double>(rng, spec.input_numel());
      const auto j = convmat::weight_jacobian(spec, x);
      REQUIRE(j.cols() == spec.weight_numel());
      REQUIRE(relative_error((j * w).eval(), convmat::convolve(spec, w, x)) <= 1e-12);
    }
  });
}

TEST_CASE("public functions return the public aliases convmat::RowMajorMatrix, Matrix, Vector", "[dense]") {
  convmat::Conv2dSpec spec;
  spec.input_size = {3, 3};
  spec.kernel_size = {2, 2};
  const Eigen::Vector4f w(1, 2, 3, 4);
  const Eigen::VectorXf x = Eigen::VectorXf::LinSpaced(9, 1, 9);
  static_assert(std::is_same_v<decltype(convmat::conv_matrix(spec, w)), convmat::RowMajorMatrix<float>>);
  static_assert(std::is_same_v<convmat::RowMajorMatrix<double>,
                               Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>);
  static_assert(std::is_same_v<decltype(convmat::convolve(spec, w, x)), convmat::Matrix<float>>);
  static_assert(std::is_same_v<convmat::Vector<float>, Eigen::VectorXf>);
  const convmat::RowMajorMatrix<float> t = convmat::conv_matrix(spec, w);
  const convmat::Matrix<float> y = convmat::convolve(spec, w, x);
  CHECK((t * x - y).cwiseAbs().maxCoeff() == 0.0f);
}
