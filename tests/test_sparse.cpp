// The sparse matrix: equal to the dense one, with exactly the predicted
// number of non-zeros, in row blocks, for transposed layers, and refusing
// a StorageIndex too narrow for it; the affine form [T b; 0 1] in compressed rows.
#include <convmat/dense.hpp>
#include <convmat/size.hpp>
#include <convmat/sparse.hpp>

#include <string>

#include "support/catch.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

TEST_CASE("conv_matrix_sparse equals conv_matrix with the predicted non-zeros", "[sparse][property]") {
  auto rng = generator("sparse == dense");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 2000; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto s = convmat::conv_matrix_sparse(spec, w);
      const auto d = convmat::conv_matrix(spec, w);
      REQUIRE(s.isCompressed());
      REQUIRE(Eigen::MatrixXd(s) == Eigen::MatrixXd(d));
      // With random non-zero weights every structural entry of the dense
      // matrix is non-zero, so the count is exact both ways.
      REQUIRE(s.nonZeros() == (d.array() != 0.0).count());
      const auto size = convmat::matrix_size<double>(spec);
      REQUIRE(size.nonzeros == s.nonZeros());
      REQUIRE(convmat::conv_matrix_nonzeros(spec) == s.nonZeros());
      REQUIRE(size.rows == s.rows());
      REQUIRE(size.cols == s.cols());
      REQUIRE(size.dense_bytes == static_cast<std::size_t>(d.size()) * sizeof(double));
      REQUIRE(size.sparse_bytes ==
              static_cast<std::size_t>(s.nonZeros()) * (sizeof(double) + sizeof(int)) +
                  static_cast<std::size_t>(s.rows() + 1) * sizeof(int));
      for (Index r = 0; r < s.outerSize(); ++r)  // columns strictly increasing in every row
        for (int k = s.outerIndexPtr()[r] + 1; k < s.outerIndexPtr()[r + 1]; ++k)
          REQUIRE(s.innerIndexPtr()[k - 1] < s.innerIndexPtr()[k]);
    }
  });
}

TEST_CASE("sparse row blocks stack to the whole matrix, with the predicted non-zeros", "[sparse][blocks][property]") {
  auto rng = generator("sparse row blocks");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 300; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const Eigen::MatrixXd whole = convmat::conv_matrix_sparse<long>(spec, w);
      Index begin = 0;
      while (begin < whole.rows()) {
        const Index end = std::min<Index>(whole.rows(), begin + uniform(rng, 0, 9));
        const auto sparse_block = convmat::conv_matrix_sparse_rows(spec, w, begin, end);
        REQUIRE(convmat::conv_matrix_nonzeros(spec, begin, end) == sparse_block.nonZeros());
        const Eigen::MatrixXd block = sparse_block;
        REQUIRE(block == whole.middleRows(begin, end - begin));
        begin = end;
      }
    }
  });
  const auto spec = random_spec<2>(rng);
  REQUIRE_THROWS_AS(convmat::conv_matrix_nonzeros(spec, 0, spec.output_numel() + 1), convmat::spec_error);
  REQUIRE_THROWS_AS(convmat::conv_matrix_nonzeros(spec, 2, 1), convmat::spec_error);
}

TEST_CASE("the transposed convolution's sparse matrix", "[sparse][transpose][property]") {
  auto rng = generator("sparse transpose");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 500; ++i) {
      const auto spec = random_transpose_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto s = convmat::conv_transpose_matrix_sparse(spec, w);
      REQUIRE(Eigen::MatrixXd(s) == Eigen::MatrixXd(convmat::conv_transpose_matrix(spec, w)));
      REQUIRE(s.nonZeros() == convmat::conv_matrix_nonzeros(spec));
    }
  });
}

TEST_CASE("a StorageIndex too narrow is an error, not a wrap-around", "[sparse][errors]") {
  convmat::Conv2dSpec spec;
  spec.in_channels = 4;
  spec.out_channels = 4;
  spec.input_size = {20, 20};
  spec.kernel_size = {3, 3};
  spec.padding = {1, 1};
  const Eigen::VectorXf w = Eigen::VectorXf::Ones(spec.weight_numel());
  // 1600 columns and 57,600 - some non-zeros: too many for int16_t.
  REQUIRE_THROWS_AS(convmat::conv_matrix_sparse<std::int16_t>(spec, w), convmat::spec_error);
  REQUIRE_NOTHROW(convmat::conv_matrix_sparse<std::int32_t>(spec, w));
}

TEST_CASE("a StorageIndex too narrow for the non-zeros is refused before anything is built", "[sparse][errors][regression]") {
  // Issue 18: Conv2d(1, 256, 11, padding=5) on 600 x 600 has 11,050,214,400
  // non-zeros; conv_matrix_sparse<int> once threw only after counting every
  // row (8-14 s, 355 MiB), naming a partial sum.
  convmat::Conv2dSpec spec;
  spec.out_channels = 256;
  spec.input_size = {600, 600};
  spec.kernel_size = {11, 11};
  spec.padding = {5, 5};
  const Eigen::VectorXf w = Eigen::VectorXf::Ones(spec.weight_numel());
  REQUIRE(convmat::conv_matrix_nonzeros(spec) == 11050214400);
  CHECK_THROWS_WITH(convmat::conv_matrix_sparse<int>(spec, w),
                    Catch::Matchers::Contains("the non-zero count = 11050214400 does not fit"));
  // A block of rows: channel 3's last 1000 positions, then channels 4 to 53
  // whole (2.2e9 non-zeros); the count is that of those rows.
  auto one = spec;
  one.out_channels = 1;
  const Index head = convmat::conv_matrix_sparse_rows<long>(one, Eigen::VectorXf::Ones(121), 359000, 360000).nonZeros();
  const Index expected = head + 50 * (convmat::conv_matrix_nonzeros(spec) / 256);
  CHECK_THROWS_WITH(convmat::conv_matrix_sparse_rows<int>(spec, w, 4 * 360000 - 1000, 54 * 360000),
                    Catch::Matchers::Contains("the non-zero count = " + std::to_string(expected) + " does not fit"));
}

TEST_CASE("the predicted non-zeros of any row block are exact", "[sparse][blocks][property]") {
  auto rng = generator("row block non-zeros");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 300; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto whole = convmat::conv_matrix_sparse<long>(spec, w);
      const Index begin = uniform(rng, 0, whole.rows()), end = uniform(rng, begin, whole.rows());
      const auto g = convmat::detail::geometry(spec);
      CHECK(g.nonzeros_between(begin, end) == whole.outerIndexPtr()[end] - whole.outerIndexPtr()[begin]);
    }
  });
}

TEST_CASE("affine_matrix_sparse equals affine_matrix, bias entries stored", "[sparse][bias][property]") {
  auto rng = generator("sparse affine");
  const auto check = [](const auto& spec, const Eigen::VectorXd& w, const Eigen::VectorXd& bias) {
    const auto s = convmat::affine_matrix_sparse(spec, w, bias);
    REQUIRE(s.isCompressed());
    REQUIRE(Eigen::MatrixXd(s) == Eigen::MatrixXd(convmat::affine_matrix(spec, w, bias)));
    REQUIRE(s.nonZeros() == convmat::conv_matrix_nonzeros(spec) + s.rows());  // a bias per row, and the 1
  };
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 200; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<double>(rng, spec.weight_numel());
      check(spec, w, random_vector<double>(rng, spec.out_channels));
      check(spec, w, Eigen::VectorXd::Zero(spec.out_channels));
      const auto t = random_transpose_spec<Rank>(rng);
      INFO("transposed: " << describe(t));
      check(t, random_vector<double>(rng, t.weight_numel()), random_vector<double>(rng, t.out_channels));
    }
  });
  const auto spec = random_spec<2>(rng);
  REQUIRE_THROWS_AS(convmat::affine_matrix_sparse(spec, Eigen::VectorXd(spec.weight_numel() + 1),
                                                  Eigen::VectorXd(spec.out_channels)),
                    convmat::spec_error);
  REQUIRE_THROWS_AS(convmat::affine_matrix_sparse(spec, Eigen::VectorXd(spec.weight_numel()),
                                                  Eigen::VectorXd(spec.out_channels + 1)),
                    convmat::spec_error);
}

TEST_CASE("the non-zeros of a huge kernel are counted in kernel time, not kernel squared", "[sparse][regression]") {
  // Found by fuzzing: each output's distinct inputs were found by a linear
  // search per tap, O(kernel^2) — a million-tap kernel took hours. Under
  // ctest's timeout, these fail by never finishing.
  convmat::Conv1dSpec wide;  // one output reading a million inputs
  wide.input_size = {1000000};
  wide.kernel_size = {1000000};
  CHECK(convmat::conv_matrix_nonzeros(wide) == 1000000);

  convmat::Conv1dSpec folded;  // reflect padding: every output reads all 1000 inputs, most twice
  folded.input_size = {1000};
  folded.kernel_size = {1999};
  folded.padding = {999};
  folded.padding_mode = convmat::PaddingMode::reflect;
  CHECK(convmat::conv_matrix_nonzeros(folded) == 1000 * 1000);
  const auto t = convmat::conv_matrix_sparse(folded, Eigen::VectorXf::Ones(1999));
  CHECK(t.nonZeros() == 1000 * 1000);
  CHECK(t.coeffs().sum() == 1000.0f * 1999.0f);  // every tap lands on some input
}
