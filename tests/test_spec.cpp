// ConvSpec and ConvTransposeSpec: PyTorch's output sizes, the 'same',
// 'valid' and 'full' helpers, and one test per kind of bad spec, each
// checking the exception and the values its message names.
#include <convmat/convmat.hpp>

#include "support/catch.hpp"
#include "support/layers_golden.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const convmat::spec_error& e) {
    return e.what();
  }
  return "no spec_error thrown";
}

convmat::Conv2dSpec layer() {
  convmat::Conv2dSpec s;
  s.in_channels = 4;
  s.out_channels = 6;
  s.input_size = {7, 9};
  s.kernel_size = {3, 3};
  return s;
}

}  // namespace

TEST_CASE("output size follows PyTorch's formula", "[spec]") {
  auto s = layer();
  REQUIRE(s.output_size() == std::array<Index, 2>{5, 7});
  s.stride = {2, 3};
  s.padding = {1, 2};
  s.dilation = {2, 1};
  // floor((7 + 2 - 4 - 1) / 2) + 1 = 3, floor((9 + 4 - 2 - 1) / 3) + 1 = 4
  REQUIRE(s.output_size() == std::array<Index, 2>{3, 4});
  REQUIRE(s.input_numel() == 4 * 63);
  REQUIRE(s.output_numel() == 6 * 12);
  REQUIRE(s.weight_numel() == 6 * 4 * 9);
  s.groups = 2;
  REQUIRE(s.weight_numel() == 6 * 2 * 9);
  s.set_padding({0, 0}, {1, 3});
  REQUIRE(s.pad_begin() == std::array<Index, 2>{0, 0});
  REQUIRE(s.pad_end() == std::array<Index, 2>{1, 3});
  // floor((7 + 1 - 4 - 1) / 2) + 1 = 2, floor((9 + 3 - 2 - 1) / 3) + 1 = 4
  REQUIRE(s.output_size() == std::array<Index, 2>{2, 4});
}

TEST_CASE("'same', 'valid' and 'full' padding", "[spec]") {
  auto rng = generator("same padding");
  for (int i = 0; i < 500; ++i) {
    convmat::ConvSpec<3> s;
    for (int d = 0; d < 3; ++d) {
      s.input_size[d] = uniform(rng, 1, 9);
      s.kernel_size[d] = uniform(rng, 1, 5);
      s.dilation[d] = uniform(rng, 1, 3);
    }
    INFO(describe(s));
    s.set_padding_same();
    REQUIRE(s.output_size() == s.input_size);
    for (int d = 0; d < 3; ++d) {  // PyTorch: the odd element goes on the high side
      const Index total = s.dilation[d] * (s.kernel_size[d] - 1);
      REQUIRE(s.pad_begin()[d] == total / 2);
      REQUIRE(s.pad_end()[d] == total - total / 2);
    }
    s.set_padding_full();
    for (int d = 0; d < 3; ++d)
      REQUIRE(s.output_size()[d] == s.input_size[d] + s.dilation[d] * (s.kernel_size[d] - 1));
    s.set_padding_valid();
    REQUIRE(s.pad_end() == std::array<Index, 3>{0, 0, 0});
  }
  auto strided = layer();
  strided.stride = {2, 1};
  REQUIRE(error_of([&] { strided.set_padding_same(); }) ==
          "convmat: padding='same' needs stride 1: stride=(2, 1)");
}

namespace {

template <int Rank>
void check_conv_same(const GoldenCase& c) {
  INFO("golden case " << c.name);
  convmat::ConvSpec<Rank> spec;
  spec.in_channels = c.integer("in_channels");
  spec.out_channels = c.integer("out_channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.kernel_size = c.sizes<Rank>("kernel_size");
  spec.stride = c.sizes<Rank>("stride");
  spec.dilation = c.sizes<Rank>("dilation");
  if (c.text("auto_pad") == "SAME_UPPER")
    spec.set_padding_same_upper();
  else
    spec.set_padding_same_lower();
  CHECK(spec.pad_begin() == c.sizes<Rank>("pad_begin"));
  CHECK(spec.pad_end() == c.sizes<Rank>("pad_end"));
  REQUIRE(spec.output_size() == c.sizes<Rank>("output_size"));  // onnx.shape_inference's
  for (int d = 0; d < Rank; ++d)  // ceil(D / s)
    CHECK(spec.output_size()[d] == (spec.input_size[d] + spec.stride[d] - 1) / spec.stride[d]);
  const Eigen::VectorXd y = convmat::conv_matrix(spec, c.vector("weight")) * c.vector("input");
  CHECK(relative_error(y, c.vector("output")) <= 1e-12);
}

template <int Rank>
void check_conv_transpose_output_shape(const GoldenCase& c) {
  INFO("golden case " << c.name);
  convmat::ConvTransposeSpec<Rank> spec;
  spec.in_channels = c.integer("in_channels");
  spec.out_channels = c.integer("out_channels");
  spec.input_size = c.sizes<Rank>("input_size");
  spec.kernel_size = c.sizes<Rank>("kernel_size");
  spec.stride = c.sizes<Rank>("stride");
  spec.dilation = c.sizes<Rank>("dilation");
  spec.output_padding = c.sizes<Rank>("output_padding");
  const auto auto_pad = c.text("auto_pad");
  const auto odd = auto_pad == "SAME_UPPER" ? convmat::SamePadding::upper : convmat::SamePadding::lower;
  if (c.integer("given_shape"))
    spec.set_output_size(c.sizes<Rank>("output_size"), odd);
  else
    spec.set_padding_same(odd);
  CHECK(spec.pad_begin() == c.sizes<Rank>("pad_begin"));
  CHECK(spec.pad_end() == c.sizes<Rank>("pad_end"));
  REQUIRE(spec.output_size() == c.sizes<Rank>("output_size"));
  const Eigen::VectorXd weight = c.vector("weight"), x = c.vector("input"), expected = c.vector("output");
  CHECK(relative_error(Eigen::VectorXd(convmat::conv_transpose_matrix(spec, weight) * x), expected) <= 1e-12);
  CHECK(relative_error(Eigen::VectorXd(convmat::conv_transpose_matrix_sparse(spec, weight) * x), expected) <= 1e-12);
  CHECK(relative_error(Eigen::VectorXd(convmat::convolve_transpose(spec, weight, x)), expected) <= 1e-12);
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
struct ConvSameCheck {
  void operator()(const GoldenCase& c) const { check_conv_same<Rank>(c); }
};
template <int Rank>
struct OutputShapeCheck {
  void operator()(const GoldenCase& c) const { check_conv_transpose_output_shape<Rank>(c); }
};

}  // namespace

TEST_CASE("ONNX's auto_pad SAME_UPPER / SAME_LOWER with any stride, against onnx and PyTorch", "[spec][golden]") {
  const auto cases = cases_of("conv_same");
  CHECK(cases.size() == 36);
  for (const auto* c : cases) by_rank<ConvSameCheck>(*c);

  // TensorFlow's 'SAME' with stride 2 on 7: output 4, total padding 2 (3x3) or 1 (2x2, odd: after).
  auto s = layer();
  s.input_size = {7, 7};
  s.kernel_size = {3, 2};
  s.stride = {2, 2};
  s.set_padding_same_upper();
  CHECK(s.pad_begin() == std::array<Index, 2>{1, 0});
  CHECK(s.pad_end() == std::array<Index, 2>{1, 1});
  s.set_padding_same_lower();
  CHECK(s.pad_begin() == std::array<Index, 2>{1, 1});
  CHECK(s.pad_end() == std::array<Index, 2>{1, 0});
  CHECK(s.output_size() == std::array<Index, 2>{4, 4});
  // With stride 1 SAME_UPPER is PyTorch's 'same'.
  s.stride = {1, 1};
  auto torch_same = s;
  torch_same.set_padding_same();
  s.set_padding_same_upper();
  CHECK(s.pad_begin() == torch_same.pad_begin());
  CHECK(s.pad_end() == torch_same.pad_end());
  // A kernel smaller than the stride needs no padding.
  s.kernel_size = {1, 1};
  s.stride = {3, 3};
  s.set_padding_same_upper();
  CHECK(s.pad_end() == std::array<Index, 2>{0, 0});
  s.stride = {0, 1};
  CHECK(error_of([&] { s.set_padding_same_upper(); }) ==
        "convmat: stride must be positive in every dimension: stride=(0, 1)");
}

TEST_CASE("ConvTranspose with ONNX's output_shape and auto_pad, against PyTorch", "[spec][golden][transpose]") {
  const auto cases = cases_of("conv_transpose_output_shape");
  CHECK(cases.size() >= 30);
  for (const auto* c : cases) by_rank<OutputShapeCheck>(*c);

  convmat::ConvTranspose1dSpec t;
  t.input_size = {3};
  t.kernel_size = {3};
  t.stride = {2};
  t.set_output_size({5});  // unpadded 7: total 2, one each side
  CHECK(t.pad_begin() == std::array<Index, 1>{1});
  CHECK(t.pad_end() == std::array<Index, 1>{1});
  t.set_output_size({6});  // total 1: at the beginning unless SAME_UPPER
  CHECK(t.pad_begin() == std::array<Index, 1>{1});
  CHECK(t.pad_end() == std::array<Index, 1>{0});
  t.set_output_size({6}, convmat::SamePadding::upper);
  CHECK(t.pad_begin() == std::array<Index, 1>{0});
  CHECK(t.pad_end() == std::array<Index, 1>{1});
  CHECK(t.output_size() == std::array<Index, 1>{6});
  CHECK(error_of([&] { t.set_output_size({8}); }) ==
        "convmat: the wanted output size (8) is larger than the transposed convolution gives without padding: "
        "input_size=(3), kernel_size=(3), stride=(2), dilation=(1), output_padding=(0) give output (7)");
  t.set_padding({0}, {-1});
  CHECK(error_of([&] { t.validate(); }) == "convmat: padding_end must not be negative: padding_end=(-1)");
  t.set_padding({4}, {4});
  CHECK(error_of([&] { t.validate(); }) ==
        "convmat: padding leaves no output: input_size=(3), kernel_size=(3), stride=(2), padding=(4), "
        "padding_end=(4), dilation=(1), output_padding=(0) give output (-1)");
}

TEST_CASE("transposed output size follows PyTorch's formula", "[spec][transpose]") {
  convmat::ConvTranspose2dSpec t;
  t.in_channels = 4;
  t.out_channels = 6;
  t.groups = 2;
  t.input_size = {5, 7};
  t.kernel_size = {3, 4};
  t.stride = {2, 3};
  t.padding = {1, 2};
  t.output_padding = {1, 2};
  t.dilation = {1, 2};
  // (5 - 1) * 2 - 2 + 1 * 2 + 1 + 1 = 10; (7 - 1) * 3 - 4 + 2 * 3 + 2 + 1 = 23
  REQUIRE(t.output_size() == std::array<Index, 2>{10, 23});
  REQUIRE(t.weight_numel() == 4 * 3 * 12);
}

TEST_CASE("every kind of bad spec is a spec_error naming its values", "[spec][errors]") {
  const Eigen::VectorXd w = Eigen::VectorXd::Ones(6 * 4 * 9);
  auto s = layer();
  SECTION("channels not positive") {
    s.in_channels = 0;
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: channels and groups must be positive: in_channels=0, out_channels=6, groups=1");
  }
  SECTION("groups not positive") {
    s.groups = -1;
    REQUIRE(error_of([&] { s.validate(); }).find("groups=-1") != std::string::npos);
  }
  SECTION("channels not divisible by groups") {
    s.groups = 4;
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: channels must be divisible by groups: in_channels=4, out_channels=6, groups=4");
  }
  SECTION("input size not set") {
    s.input_size = {0, 9};
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: input_size must be positive in every dimension: input_size=(0, 9)");
  }
  SECTION("kernel size negative") {
    s.kernel_size = {3, -1};
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: kernel_size must be positive in every dimension: kernel_size=(3, -1)");
  }
  SECTION("stride zero") {
    s.stride = {1, 0};
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: stride must be positive in every dimension: stride=(1, 0)");
  }
  SECTION("dilation zero") {
    s.dilation = {0, 1};
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: dilation must be positive in every dimension: dilation=(0, 1)");
  }
  SECTION("negative padding") {
    s.padding = {-1, 0};
    REQUIRE(error_of([&] { s.validate(); }) == "convmat: padding must not be negative: padding=(-1, 0)");
  }
  SECTION("negative padding_end") {
    s.set_padding({0, 0}, {0, -2});
    REQUIRE(error_of([&] { s.validate(); }) == "convmat: padding_end must not be negative: padding_end=(0, -2)");
  }
  SECTION("kernel does not fit") {
    s.input_size = {5, 5};
    s.kernel_size = {7, 7};
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: kernel does not fit: input_size=(5, 5), kernel_size=(7, 7), dilation=(1, 1), "
            "padding=(0, 0), stride=(1, 1) give output (-1, -1)");
  }
  SECTION("dilated kernel does not fit") {
    s.dilation = {4, 1};
    REQUIRE(error_of([&] { s.validate(); }).find("kernel does not fit") != std::string::npos);
  }
  SECTION("reflect padding as large as the input") {
    s.padding_mode = convmat::PaddingMode::reflect;
    s.padding = {7, 1};
    REQUIRE(error_of([&] { s.validate(); }) ==
            "convmat: reflect padding must be smaller than the input in every dimension: padding=(7, 1), "
            "padding_end=(7, 1), input_size=(7, 9)");
  }
  SECTION("circular padding larger than the input") {
    s.padding_mode = convmat::PaddingMode::circular;
    s.padding = {1, 10};
    REQUIRE(error_of([&] { s.validate(); }).find("circular padding must not exceed the input") != std::string::npos);
    s.padding = {7, 9};
    REQUIRE_NOTHROW(s.validate());
  }
  SECTION("not a padding mode") {
    s.padding_mode = static_cast<convmat::PaddingMode>(7);
    REQUIRE(error_of([&] { s.validate(); }) == "convmat: padding_mode is not a PaddingMode: PaddingMode(7)");
    REQUIRE(error_of([&] { convmat::padding_mode_from_string("mirror"); }) ==
            "convmat: padding_mode must be zeros, reflect, replicate or circular, not 'mirror'");
  }
  SECTION("weights of the wrong length") {
    REQUIRE(error_of([&] { convmat::conv_matrix(s, Eigen::VectorXd(10)); }) ==
            "convmat: weight has 10 elements (10 x 1), but the layer needs 216 laid out "
            "(out_channels, in_channels / groups, kernel...)");
  }
  SECTION("weights as a matrix") {
    REQUIRE(error_of([&] { convmat::conv_matrix(s, Eigen::MatrixXd(6, 36)); }) ==
            "convmat: weight must be a vector of the flattened weights, not a 6 x 36 matrix");
  }
  SECTION("input of the wrong length") {
    REQUIRE(error_of([&] { convmat::convolve(s, w, Eigen::VectorXd(5)); }) ==
            "convmat: input has 5 rows (5 x 1), but the layer needs 252 (one column per sample)");
  }
  SECTION("sizes whose product overflows Index") {
    convmat::ConvSpec<3> big;
    big.input_size = {Index(1) << 22, Index(1) << 22, Index(1) << 22};
    big.kernel_size = {1, 1, 1};
    REQUIRE(error_of([&] { big.input_numel(); }).find("overflows Index") != std::string::npos);
  }
  SECTION("row block out of range") {
    REQUIRE(error_of([&] { convmat::conv_matrix_rows(s, w, 3, 2); }) ==
            "convmat: row block [3, 2) is not within the matrix's 210 rows (need 0 <= row_begin <= row_end <= 210)");
    REQUIRE_THROWS_AS(convmat::conv_matrix_rows(s, w, 0, 211), convmat::spec_error);
    REQUIRE_THROWS_AS(convmat::conv_matrix_sparse_rows(s, w, -1, 5), convmat::spec_error);
  }
  SECTION("output_padding too large") {
    convmat::ConvTranspose1dSpec t;
    t.input_size = {4};
    t.kernel_size = {3};
    t.stride = {2};
    t.output_padding = {2};
    REQUIRE(error_of([&] { t.validate(); }) ==
            "convmat: output_padding must be smaller than either stride or dilation: output_padding=(2), "
            "stride=(2), dilation=(1)");
  }
  SECTION("transposed padding that leaves no output") {
    convmat::ConvTranspose1dSpec t;
    t.input_size = {1};
    t.kernel_size = {1};
    t.padding = {1};
    REQUIRE(error_of([&] { t.validate(); }).find("padding leaves no output") != std::string::npos);
  }
  SECTION("spec_error is an invalid_argument") {
    s.stride = {0, 0};
    REQUIRE_THROWS_AS(s.validate(), std::invalid_argument);
  }
}

TEST_CASE("the memory guard refuses a dense matrix too large", "[limits][errors]") {
  convmat::Conv2dSpec s;
  s.in_channels = 64;
  s.out_channels = 64;
  s.input_size = {56, 56};
  s.kernel_size = {3, 3};
  s.padding = {1, 1};
  const Eigen::VectorXf w = Eigen::VectorXf::Ones(s.weight_numel());
  // 200704 x 200704 floats: 161 GB.
  const auto message = error_of([&] { convmat::conv_matrix(s, w); });
  REQUIRE(message.find("200704 x 200704") != std::string::npos);
  REQUIRE(message.find("conv_matrix_sparse") != std::string::npos);
  const auto saved = convmat::max_dense_bytes();
  convmat::set_max_dense_bytes(1000);
  convmat::Conv1dSpec small;
  small.input_size = {20};
  small.kernel_size = {3};
  REQUIRE_THROWS_AS(convmat::conv_matrix(small, Eigen::VectorXd::Ones(3)), convmat::spec_error);  // 18 x 20 x 8 bytes
  convmat::set_max_dense_bytes(convmat::no_limit);
  REQUIRE_NOTHROW(convmat::conv_matrix(small, Eigen::VectorXd::Ones(3)));
  convmat::set_max_dense_bytes(saved);
}

TEST_CASE("a spec prints as PyTorch prints the module (operator<<, to_string)", "[spec]") {
  convmat::Conv2dSpec spec;
  spec.in_channels = 2;
  spec.out_channels = 3;
  spec.input_size = {6, 6};
  spec.kernel_size = {3, 3};
  spec.stride = {2, 2};
  spec.padding = {1, 1};
  std::ostringstream os;
  os << spec;
  CHECK(os.str() == "Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))");
  CHECK(convmat::to_string(spec, false) == "Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)");

  spec.in_channels = 4;
  spec.groups = 2;
  spec.dilation = {2, 1};
  spec.padding_mode = convmat::PaddingMode::reflect;
  spec.set_padding({1, 0}, {2, 1});
  CHECK(convmat::to_string(spec) ==
        "Conv2d(4, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 0), padding_end=(2, 1), dilation=(2, 1), "
        "groups=2, padding_mode='reflect')");
  spec.set_padding_same_upper();
  CHECK(convmat::to_string(spec, true, "same_upper") ==
        "Conv2d(4, 3, kernel_size=(3, 3), stride=(2, 2), padding='same_upper' (1, 0)/(2, 1), dilation=(2, 1), "
        "groups=2, padding_mode='reflect')");

  convmat::ConvTranspose2dSpec t;
  t.in_channels = 4;
  t.out_channels = 2;
  t.groups = 2;
  t.input_size = {3, 3};
  t.kernel_size = {3, 3};
  t.stride = {2, 2};
  t.padding = {1, 1};
  t.output_padding = {1, 1};
  std::ostringstream ts;
  ts << t;
  CHECK(ts.str() ==
        "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1), groups=2)");
  convmat::Conv1dSpec one;
  one.input_size = {5};
  one.kernel_size = {3};
  CHECK(convmat::to_string(one) == "Conv1d(1, 1, kernel_size=(3), stride=(1))");
}
