// The other linear layers against PyTorch: average pooling, padding, nearest
// upsampling, BatchNorm folding and the composition of affine layers, each
// applied to the inputs of tests/data/layers_golden.txt (made by
// tools/make_layer_golden.py) and compared with PyTorch's outputs; the
// sparse forms equal the dense ones; errors name their values.
#include <convmat/layers.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/layers_golden.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

namespace {

using Vector = Eigen::VectorXd;

constexpr double tolerance = 1e-12;

/// Checks one linear layer against its golden case: output size, dense
/// T x == PyTorch's output, sparse == dense.
template <class Spec, class DenseFn, class SparseFn>
void check_linear_layer(const GoldenCase& c, const Spec& spec, DenseFn dense, SparseFn sparse) {
  INFO("golden case " << c.name);
  REQUIRE(spec.output_size() == c.sizes<Spec::rank>("output_size"));
  const Eigen::MatrixXd t = dense(spec);
  REQUIRE(t.rows() == spec.output_numel());
  REQUIRE(t.cols() == spec.input_numel());
  const Vector y = t * c.vector("input");
  REQUIRE(relative_error(y, c.vector("output")) <= tolerance);
  const Eigen::MatrixXd s = sparse(spec);
  REQUIRE((s - t).cwiseAbs().maxCoeff() == 0.0);
}

template <int Rank>
void check_avg_pool(const GoldenCase& c) {
  convmat::AvgPoolSpec<Rank> spec;
  spec.channels = c.integer("channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.kernel_size = c.sizes<Rank>("kernel_size");
  spec.stride = c.sizes<Rank>("stride");
  spec.padding = c.sizes<Rank>("padding");
  spec.ceil_mode = c.integer("ceil_mode") != 0;
  spec.count_include_pad = c.integer("count_include_pad") != 0;
  if (c.integer("divisor_override") != 0) spec.divisor_override = c.integer("divisor_override");
  check_linear_layer(
      c, spec, [](const auto& s) { return convmat::avg_pool_matrix<double>(s); },
      [](const auto& s) { return convmat::avg_pool_matrix_sparse<double>(s); });
}

template <int Rank>
void check_pad(const GoldenCase& c) {
  convmat::PadSpec<Rank> spec;
  spec.channels = c.integer("channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.pad_begin = c.sizes<Rank>("pad_begin");
  spec.pad_end = c.sizes<Rank>("pad_end");
  spec.mode = static_cast<convmat::PaddingMode>(c.integer("mode"));
  check_linear_layer(
      c, spec, [](const auto& s) { return convmat::pad_matrix<double>(s); },
      [](const auto& s) { return convmat::pad_matrix_sparse<double>(s); });
}

template <int Rank>
void check_upsample(const GoldenCase& c) {
  convmat::UpsampleSpec<Rank> spec;
  spec.channels = c.integer("channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.scale = c.sizes<Rank>("scale");
  check_linear_layer(
      c, spec, [](const auto& s) { return convmat::upsample_nearest_matrix<double>(s); },
      [](const auto& s) { return convmat::upsample_nearest_matrix_sparse<double>(s); });
}

template <template <int> class Check>
void by_rank(const GoldenCase& c) {
  switch (c.integer("rank")) {
    case 1: Check<1>{}(c); break;
    case 2: Check<2>{}(c); break;
    case 3: Check<3>{}(c); break;
    default: FAIL("golden case " << c.name << " has an unexpected rank");
  }
}

template <int Rank>
struct AvgPoolCheck {
  void operator()(const GoldenCase& c) const { check_avg_pool<Rank>(c); }
};
template <int Rank>
struct PadCheck {
  void operator()(const GoldenCase& c) const { check_pad<Rank>(c); }
};
template <int Rank>
struct UpsampleCheck {
  void operator()(const GoldenCase& c) const { check_upsample<Rank>(c); }
};

convmat::BatchNorm<double> batch_norm_of(const GoldenCase& c) {
  convmat::BatchNorm<double> bn;
  bn.gamma = c.vector("gamma");
  bn.beta = c.vector("beta");
  bn.mean = c.vector("mean");
  bn.var = c.vector("var");
  bn.eps = c.vector("eps")(0);
  return bn;
}

}  // namespace

TEST_CASE("average pooling matches PyTorch (ceil_mode, count_include_pad, divisor_override)", "[layers][golden]") {
  const auto cases = cases_of("avg_pool");
  CHECK(cases.size() >= 12);
  for (const auto* c : cases) by_rank<AvgPoolCheck>(*c);
}

TEST_CASE("padding layers match PyTorch's F.pad in every mode", "[layers][golden]") {
  const auto cases = cases_of("pad");
  CHECK(cases.size() == 12);
  for (const auto* c : cases) by_rank<PadCheck>(*c);
}

TEST_CASE("nearest upsampling matches PyTorch's F.interpolate", "[layers][golden]") {
  for (const auto* c : cases_of("upsample")) by_rank<UpsampleCheck>(*c);
}

TEST_CASE("BatchNorm folded into a convolution matches PyTorch", "[layers][golden]") {
  const auto& c = *cases_of("conv_bn").at(0);
  INFO("golden case " << c.name);
  convmat::Conv2dSpec spec;
  spec.in_channels = c.integer("in_channels");
  spec.out_channels = c.integer("out_channels");
  spec.input_size = c.sizes<2>("input_size");
  spec.kernel_size = c.sizes<2>("kernel_size");
  spec.stride = c.sizes<2>("stride");
  spec.padding = c.sizes<2>("padding");
  spec.groups = c.integer("groups");
  const auto bn = batch_norm_of(c);
  const Vector x = c.vector("input"), expected = c.vector("output");

  const auto folded = convmat::fold_batch_norm(spec, c.vector("weight"), c.vector("bias"), bn);
  const Vector y = convmat::conv_matrix(spec, folded.weight) * x + convmat::bias_vector(spec, folded.bias);
  CHECK(relative_error(y, expected) <= tolerance);

  // The same through the BatchNorm layer's own affine map, composed.
  const auto conv = convmat::affine_map(convmat::conv_matrix_sparse(spec, c.vector("weight")),
                                        convmat::bias_vector(spec, c.vector("bias")));
  const auto both = convmat::compose(convmat::batch_norm_map(bn, spec.output_spatial()), conv);
  CHECK(relative_error(both(x), expected) <= tolerance);
}

TEST_CASE("BatchNorm folded into a transposed convolution matches PyTorch", "[layers][golden]") {
  const auto& c = *cases_of("conv_transpose_bn").at(0);
  INFO("golden case " << c.name);
  convmat::ConvTranspose1dSpec spec;
  spec.in_channels = c.integer("in_channels");
  spec.out_channels = c.integer("out_channels");
  spec.input_size = c.sizes<1>("input_size");
  spec.kernel_size = c.sizes<1>("kernel_size");
  spec.stride = c.sizes<1>("stride");
  spec.padding = c.sizes<1>("padding");
  spec.output_padding = c.sizes<1>("output_padding");
  spec.groups = c.integer("groups");
  const auto folded = convmat::fold_batch_norm(spec, c.vector("weight"), c.vector("bias"), batch_norm_of(c));
  const Vector y =
      convmat::conv_transpose_matrix(spec, folded.weight) * c.vector("input") + convmat::bias_vector(spec, folded.bias);
  CHECK(relative_error(y, c.vector("output")) <= tolerance);
}

TEST_CASE("conv, pooling, conv composed into one affine layer matches PyTorch", "[layers][golden]") {
  const auto& c = *cases_of("compose").at(0);
  convmat::Conv2dSpec conv1;
  conv1.in_channels = 2;
  conv1.out_channels = 3;
  conv1.input_size = c.sizes<2>("input_size");
  conv1.kernel_size = {3, 3};
  conv1.padding = {1, 1};
  conv1.padding_mode = convmat::PaddingMode::reflect;
  convmat::AvgPool2dSpec pool;
  pool.channels = 3;
  pool.input_size = conv1.output_size();
  pool.kernel_size = {2, 2};
  pool.ceil_mode = true;
  convmat::Conv2dSpec conv2;
  conv2.in_channels = 3;
  conv2.out_channels = 2;
  conv2.input_size = pool.output_size();
  conv2.kernel_size = {2, 2};

  using Dense = convmat::AffineMap<Eigen::MatrixXd>;
  const Dense first{convmat::conv_matrix(conv1, c.vector("weight1")), convmat::bias_vector(conv1, c.vector("bias1"))};
  const Dense second = convmat::linear_map(Eigen::MatrixXd(convmat::avg_pool_matrix(pool)));
  const Dense third{convmat::conv_matrix(conv2, c.vector("weight2")), convmat::bias_vector(conv2, c.vector("bias2"))};
  const auto whole = convmat::compose(third, convmat::compose(second, first));
  REQUIRE(whole.input_numel() == conv1.input_numel());
  REQUIRE(whole.output_numel() == conv2.output_numel());
  CHECK(relative_error(whole(c.vector("input")), c.vector("output")) <= tolerance);
  // Associativity, and the map of a batch is the map of each column.
  const auto other = convmat::compose(convmat::compose(third, second), first);
  CHECK(relative_error(other.matrix, whole.matrix) <= tolerance);
  CHECK(relative_error(other.bias, whole.bias) <= tolerance);
  auto rng = generator("compose batch");
  const Eigen::MatrixXd batch = random_matrix<double>(rng, whole.input_numel(), 3);
  const Eigen::MatrixXd y = whole(batch);
  for (Index j = 0; j < 3; ++j) CHECK(relative_error(Vector(y.col(j)), Vector(whole(batch.col(j)))) <= tolerance);
}

TEST_CASE("flatten is the identity", "[layers]") {
  CHECK(convmat::flatten_matrix<float>(5).isIdentity());
  CHECK_THROWS_WITH(convmat::flatten_matrix<float>(0), Catch::Matchers::Contains("numel=0"));
}

TEST_CASE("layer errors name every value involved", "[layers][errors]") {
  convmat::AvgPool2dSpec pool;
  pool.channels = 2;
  pool.input_size = {5, 5};
  pool.kernel_size = {2, 3};
  pool.padding = {1, 2};
  CHECK_THROWS_AS(pool.validate(), convmat::spec_error);
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Contains("padding=(1, 2)") &&
                                         Catch::Matchers::Contains("kernel_size=(2, 3)"));
  pool.padding = {0, 0};
  pool.kernel_size = {6, 2};
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Contains("does not fit") &&
                                         Catch::Matchers::Contains("input_size=(5, 5)"));

  convmat::PadSpec<1> pad;
  pad.channels = 1;
  pad.input_size = {3};
  pad.pad_begin = {3};
  pad.mode = convmat::PaddingMode::reflect;
  CHECK_THROWS_WITH(convmat::pad_matrix(pad), Catch::Matchers::Contains("reflect") &&
                                                  Catch::Matchers::Contains("input_size=(3)"));

  convmat::UpsampleSpec<2> up;
  up.input_size = {2, 2};
  up.scale = {2, 0};
  CHECK_THROWS_WITH(convmat::upsample_nearest_matrix(up), Catch::Matchers::Contains("scale=(2, 0)"));

  const auto a = convmat::linear_map(Eigen::MatrixXd::Identity(3, 4).eval());
  const auto b = convmat::linear_map(Eigen::MatrixXd::Identity(5, 2).eval());
  CHECK_THROWS_WITH(convmat::compose(a, b), Catch::Matchers::Contains("takes 4 inputs") &&
                                                Catch::Matchers::Contains("gives 5 outputs"));

  convmat::BatchNorm<double> bn;
  bn.gamma = bn.beta = bn.mean = Vector::Ones(3);
  bn.var = Vector::Ones(2);
  CHECK_THROWS_WITH(bn.validate(), Catch::Matchers::Contains("var 2"));
  bn.var = -Vector::Ones(3);
  CHECK_THROWS_WITH(bn.validate(), Catch::Matchers::Contains("channel 0 has var=-1"));
}

namespace {

template <int Rank>
void check_pool_acceptance(const GoldenCase& c) {
  INFO("golden case " << c.name);
  convmat::AvgPoolSpec<Rank> spec;
  spec.input_size = c.sizes<Rank>("input_size");
  spec.kernel_size = c.sizes<Rank>("kernel_size");
  spec.stride = c.sizes<Rank>("stride");
  spec.padding = c.sizes<Rank>("padding");
  spec.ceil_mode = c.integer("ceil_mode") != 0;
  INFO("input_size=" << join(spec.input_size) << " kernel_size=" << join(spec.kernel_size) << " stride="
                     << join(*spec.stride) << " padding=" << join(spec.padding) << " ceil_mode=" << spec.ceil_mode);
  if (c.integer("accepted")) {
    REQUIRE_NOTHROW(spec.validate());
    CHECK(spec.output_size() == c.sizes<Rank>("output_size"));
  } else {
    CHECK_THROWS_AS(spec.validate(), convmat::spec_error);
  }
}

template <int Rank>
struct PoolAcceptanceCheck {
  void operator()(const GoldenCase& c) const { check_pool_acceptance<Rank>(c); }
};

}  // namespace

TEST_CASE("AvgPoolSpec accepts exactly the layers PyTorch accepts", "[layers][golden][regression]") {
  // Issue 18: input (4, 4, 3), kernel (1, 1, 4), padding (0, 0, 2) was
  // accepted, though F.avg_pool3d refuses an input smaller than the kernel.
  convmat::AvgPool3dSpec pool;
  pool.input_size = {4, 4, 3};
  pool.kernel_size = {1, 1, 4};
  pool.stride = std::array<Index, 3>{1, 1, 1};
  pool.padding = {0, 0, 2};
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Contains("input smaller than kernel size") &&
                                         Catch::Matchers::Contains("input_size=(4, 4, 3)") &&
                                         Catch::Matchers::Contains("kernel_size=(1, 1, 4)"));
  const auto cases = cases_of("avg_pool_accepts");
  Index accepted = 0;
  for (const auto* c : cases) {
    accepted += c->integer("accepted");
    by_rank<PoolAcceptanceCheck>(*c);
  }
  CHECK(accepted > 20);  // both verdicts are well represented
  CHECK(static_cast<Index>(cases.size()) - accepted > 20);
}

namespace {

/// An ONNX pooling case's spec: pads as given, or from auto_pad (checked
/// against the pads the generator computed from ONNX's equations).
template <class Spec>
void set_onnx_pads(const GoldenCase& c, Spec& spec) {
  constexpr int Rank = Spec::rank;
  const auto auto_pad = c.text("auto_pad");
  if (auto_pad == "SAME_UPPER") {
    spec.set_padding_same_upper();
  } else if (auto_pad == "SAME_LOWER") {
    spec.set_padding_same_lower();
  } else {
    spec.set_padding(c.sizes<Rank>("pad_begin"), c.sizes<Rank>("pad_end"));
  }
  CHECK(spec.pad_begin() == c.sizes<Rank>("pad_begin"));
  CHECK(spec.pad_end() == c.sizes<Rank>("pad_end"));
}

template <int Rank>
void check_avg_pool_onnx(const GoldenCase& c) {
  INFO("golden case " << c.name);
  convmat::AvgPoolSpec<Rank> spec;
  spec.channels = c.integer("channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.kernel_size = c.sizes<Rank>("kernel_size");
  spec.stride = c.sizes<Rank>("stride");
  spec.ceil_mode = c.integer("ceil_mode") != 0;
  spec.count_include_pad = c.integer("count_include_pad") != 0;
  spec.pytorch_limits = false;
  set_onnx_pads(c, spec);
  check_linear_layer(
      c, spec, [](const auto& s) { return convmat::avg_pool_matrix<double>(s); },
      [](const auto& s) { return convmat::avg_pool_matrix_sparse<double>(s); });
  spec.pytorch_limits = true;  // what PyTorch accepts, it accepts either way
  bool input_fits = true;  // avg_pool3d's own rule
  for (int d = 0; d < Rank; ++d) input_fits = input_fits && spec.input_size[d] >= spec.kernel_size[d];
  if (c.integer("pytorch_limits") && (Rank < 3 || input_fits))
    CHECK_NOTHROW(spec.validate());
  else if (!c.integer("pytorch_limits"))
    CHECK_THROWS_AS(spec.validate(), convmat::spec_error);
}

template <int Rank>
void check_max_pool_onnx(const GoldenCase& c) {
  INFO("golden case " << c.name);
  convmat::MaxPoolSpec<Rank> spec;
  spec.channels = c.integer("channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.kernel_size = c.sizes<Rank>("kernel_size");
  spec.stride = c.sizes<Rank>("stride");
  spec.dilation = c.sizes<Rank>("dilation");
  spec.ceil_mode = c.integer("ceil_mode") != 0;
  spec.pytorch_limits = c.integer("pytorch_limits") != 0;
  set_onnx_pads(c, spec);
  REQUIRE(spec.output_size() == c.sizes<Rank>("output_size"));
  const Vector y = convmat::max_pool(spec, c.vector("input"));
  CHECK(y == c.vector("output"));  // a maximum is exact
  // The windows: every output is the largest of the inputs its row marks.
  const auto windows = convmat::max_pool_windows(spec);
  REQUIRE(windows.rows() == spec.output_numel());
  REQUIRE(windows.cols() == spec.input_numel());
  const Vector x = c.vector("input");
  for (Index r = 0; r < windows.rows(); ++r) {
    double best = -std::numeric_limits<double>::infinity();
    for (convmat::SparseMatrix<double, int>::InnerIterator it(windows, r); it; ++it) {
      CHECK(it.value() == 1.0);
      best = std::max(best, x(it.col()));
    }
    CHECK(best == y(r));
  }
}

template <int Rank>
struct AvgPoolOnnxCheck {
  void operator()(const GoldenCase& c) const { check_avg_pool_onnx<Rank>(c); }
};
template <int Rank>
struct MaxPoolOnnxCheck {
  void operator()(const GoldenCase& c) const { check_max_pool_onnx<Rank>(c); }
};

}  // namespace

TEST_CASE("average pooling with ONNX's padding (any size, auto_pad) matches PyTorch on the padded input",
          "[layers][golden]") {
  const auto cases = cases_of("avg_pool_onnx");
  CHECK(cases.size() == 30);
  for (const auto* c : cases) by_rank<AvgPoolOnnxCheck>(*c);

  // Beyond PyTorch's limits a window can lie in the padding: 0 / 0 unless padding counts.
  convmat::AvgPool1dSpec pool;
  pool.input_size = {4};
  pool.kernel_size = {2};
  pool.padding = {3};
  pool.count_include_pad = false;
  pool.pytorch_limits = false;
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Equals(
                                         "convmat: pooling window 0 of dimension 0 covers only padding (its average "
                                         "would be 0 / 0): input_size=(4), kernel_size=(2), stride=(2), "
                                         "dilation=(1), padding=(3) give output (5)"));
  pool.count_include_pad = true;
  const auto t = convmat::avg_pool_matrix(pool);
  CHECK(t.row(0).isZero());  // (0 + 0) / 2
  CHECK(t(2, 1) == 0.5);
  pool.pytorch_limits = true;
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Contains("padding must be at most half the kernel size"));
}

TEST_CASE("max pooling matches PyTorch (dilation, ceil_mode, ONNX's padding and auto_pad)", "[layers][golden]") {
  const auto cases = cases_of("max_pool_onnx");
  CHECK(cases.size() == 30);
  Index within_pytorch = 0;
  for (const auto* c : cases) {
    within_pytorch += c->integer("pytorch_limits");
    by_rank<MaxPoolOnnxCheck>(*c);
  }
  CHECK(within_pytorch >= 5);

  convmat::MaxPool2dSpec pool;
  pool.channels = 1;
  pool.input_size = {3, 3};
  pool.kernel_size = {2, 2};
  CHECK(pool.output_size() == std::array<Index, 2>{1, 1});  // stride defaults to the kernel
  pool.stride = std::array<Index, 2>{1, 1};
  const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(9, 1, 9);
  CHECK(convmat::max_pool(pool, x) == Eigen::Vector4d(5, 6, 8, 9));
  Eigen::VectorXd with_nan = x;
  with_nan(0) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(convmat::max_pool(pool, with_nan)(0)));  // as PyTorch
  pool.dilation = {4, 1};  // window 0 reads rows -1 and 3 of 3
  pool.padding = {1, 0};
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Contains("covers only padding (its maximum would be -infinity)"));
  pool.dilation = {1, 1};
  pool.padding = {2, 0};
  CHECK_THROWS_WITH(pool.validate(), Catch::Matchers::Contains("padding must be at most half the kernel size"));
  CHECK_THROWS_WITH(convmat::max_pool(pool, Eigen::VectorXd::Zero(8)),
                    Catch::Matchers::Contains("padding=(2, 0)"));
}
