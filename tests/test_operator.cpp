// The matrix-free operator: its products equal the dense matrix, its
// transpose and adjoint on random layers of every kind; its normal and
// Tikhonov companions are the matrices they claim; and Eigen's iterative
// solvers take all three and reach the dense solution.
#include <convmat/dense.hpp>
#include <convmat/operator.hpp>

#include <Eigen/Dense>
#include <Eigen/IterativeLinearSolvers>
#include <complex>

#include "support/catch.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

namespace {

/// The matrix an operator stands for, column by column.
template <class Operator>
Eigen::Matrix<typename Operator::Scalar, Eigen::Dynamic, Eigen::Dynamic> materialise(const Operator& op) {
  using Matrix = Eigen::Matrix<typename Operator::Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Matrix m = op * Matrix::Identity(op.cols(), op.cols());
  return m;
}

/// op, op.transpose() and op.adjoint() against the dense `t`, on a single
/// vector and on a batch.
template <class Operator, class Dense>
void check_products(std::mt19937_64& rng, const Operator& op, const Dense& t) {
  using Scalar = typename Operator::Scalar;
  REQUIRE(op.rows() == t.rows());
  REQUIRE(op.cols() == t.cols());
  REQUIRE(op.transpose().rows() == t.cols());
  REQUIRE(op.adjoint().cols() == t.rows());
  const auto x = random_vector<Scalar>(rng, t.cols());
  const auto y = random_vector<Scalar>(rng, t.rows());
  const auto batch = random_matrix<Scalar>(rng, t.cols(), 3);
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> tx = op * x;
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> tty = op.transpose() * y;
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> thy = op.adjoint() * y;
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> tb = op * batch;
  CHECK(relative_error(tx, t * x) < 1e-12);
  CHECK(relative_error(tty, t.transpose() * y) < 1e-12);
  CHECK(relative_error(thy, t.adjoint() * y) < 1e-12);
  CHECK(relative_error(tb, t * batch) < 1e-12);
  // The transposes of the transposes are the operator again.
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> back = op.adjoint().adjoint() * x;
  CHECK(relative_error(back, tx) < 1e-12);
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> conj = op.transpose().adjoint() * x;  // conj(T) x
  CHECK(relative_error(conj, t.conjugate() * x) < 1e-12);
  // Accumulation into an existing vector goes through the same product.
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> sum = y;
  sum.noalias() += op * x;
  CHECK(relative_error(sum, y + t * x) < 1e-12);
}

template <class Scalar>
void check_every_kind(const char* name) {
  auto rng = generator(name);
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 150; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<Scalar>(rng, spec.weight_numel());
      check_products(rng, convmat::make_operator(spec, w), convmat::conv_matrix(spec, w));
    }
    for (int i = 0; i < 150; ++i) {
      const auto spec = random_transpose_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<Scalar>(rng, spec.weight_numel());
      check_products(rng, convmat::make_operator(spec, w), convmat::conv_transpose_matrix(spec, w));
    }
  });
}

/// A square layer (channels and size kept) near the identity: well
/// conditioned, not symmetric.
template <int Rank>
std::pair<convmat::ConvSpec<Rank>, Eigen::VectorXd> near_identity(std::mt19937_64& rng) {
  convmat::ConvSpec<Rank> spec;
  spec.in_channels = spec.out_channels = 2;
  spec.padding_mode = static_cast<convmat::PaddingMode>(uniform(rng, 0, 3));
  for (int d = 0; d < Rank; ++d) {
    spec.input_size[d] = uniform(rng, 3, Rank == 1 ? 12 : 5);
    spec.kernel_size[d] = 3;
  }
  spec.set_padding_same();
  Eigen::VectorXd w = 0.05 * random_vector<double>(rng, spec.weight_numel());
  const Index kn = spec.kernel_numel();
  for (Index c = 0; c < 2; ++c) w((c * 2 + c) * kn + kn / 2) += 1.0;  // centre tap of channel c -> c
  return {spec, w};
}

}  // namespace

TEST_CASE("operator products equal the dense matrix, its transpose and adjoint", "[operator][property]") {
  check_every_kind<double>("operator == dense (double)");
}

TEST_CASE("complex operator: transpose does not conjugate, adjoint does", "[operator][property][complex]") {
  check_every_kind<std::complex<double>>("operator == dense (complex)");
}

TEST_CASE("normal and Tikhonov operators are the matrices they stand for", "[operator][property]") {
  auto rng = generator("normal and Tikhonov operators");
  for (int i = 0; i < 200; ++i) {
    const auto spec = random_spec<2>(rng);
    INFO("case " << i << ": " << describe(spec));
    const auto w = random_vector<std::complex<double>>(rng, spec.weight_numel());
    const Eigen::MatrixXcd t = convmat::conv_matrix(spec, w);
    const auto op = convmat::make_operator(spec, w);
    const double lambda = 0.25;

    const auto normal = convmat::normal_operator(op, lambda);
    const Eigen::MatrixXcd expected_normal =
        t.adjoint() * t + lambda * Eigen::MatrixXcd::Identity(t.cols(), t.cols());
    CHECK(relative_error(materialise(normal), expected_normal) < 1e-12);

    const auto tikhonov = convmat::tikhonov_operator(op, lambda);
    Eigen::MatrixXcd stacked(t.rows() + t.cols(), t.cols());
    stacked << t, 0.5 * Eigen::MatrixXcd::Identity(t.cols(), t.cols());
    CHECK(relative_error(materialise(tikhonov), stacked) < 1e-12);
    CHECK(relative_error(materialise(tikhonov.adjoint()), Eigen::MatrixXcd(stacked.adjoint())) < 1e-12);
    CHECK(relative_error(materialise(tikhonov.transpose()), Eigen::MatrixXcd(stacked.transpose())) < 1e-12);
    const auto b = random_vector<std::complex<double>>(rng, t.rows());
    const Eigen::VectorXcd rhs = tikhonov.rhs(b);
    CHECK(rhs.head(t.rows()) == b);
    CHECK(rhs.tail(t.cols()).isZero(0.0));
  }
}

TEST_CASE("ConjugateGradient solves the normal equations on NormalOperator", "[operator][solver]") {
  auto rng = generator("ConjugateGradient");
  for (int i = 0; i < 20; ++i) {
    const auto spec = random_spec<2>(rng);
    INFO("case " << i << ": " << describe(spec));
    const auto w = random_vector<double>(rng, spec.weight_numel());
    const Eigen::MatrixXd t = convmat::conv_matrix(spec, w);
    const Eigen::VectorXd b = random_vector<double>(rng, t.rows());
    const double lambda = 0.5;
    const auto op = convmat::make_operator(spec, w);
    const auto normal = convmat::normal_operator(op, lambda);

    Eigen::ConjugateGradient<convmat::NormalOperator<double, 2>, Eigen::Lower | Eigen::Upper,
                             Eigen::IdentityPreconditioner>
        cg;
    cg.setTolerance(1e-13);
    cg.setMaxIterations(10 * t.cols());
    cg.compute(normal);
    const Eigen::VectorXd rhs = op.adjoint() * b;
    const Eigen::VectorXd x = cg.solve(rhs);
    REQUIRE(cg.info() == Eigen::Success);

    const Eigen::MatrixXd a = t.transpose() * t + lambda * Eigen::MatrixXd::Identity(t.cols(), t.cols());
    const Eigen::VectorXd expected = a.ldlt().solve(t.transpose() * b);
    CHECK(relative_error(x, expected) < 1e-9);
  }
}

TEST_CASE("BiCGSTAB solves a square, non-symmetric layer", "[operator][solver]") {
  auto rng = generator("BiCGSTAB");
  for (int i = 0; i < 20; ++i) {
    const auto [spec, w] = near_identity<2>(rng);
    INFO("case " << i << ": " << describe(spec));
    const Eigen::MatrixXd t = convmat::conv_matrix(spec, w);
    REQUIRE(t.rows() == t.cols());
    const Eigen::VectorXd b = random_vector<double>(rng, t.rows());
    const auto op = convmat::make_operator(spec, w);

    Eigen::BiCGSTAB<convmat::ConvOperator<double, 2>, Eigen::IdentityPreconditioner> solver;
    solver.setTolerance(1e-13);
    solver.compute(op);
    const Eigen::VectorXd x = solver.solve(b);
    REQUIRE(solver.info() == Eigen::Success);
    CHECK(relative_error(x, Eigen::VectorXd(t.partialPivLu().solve(b))) < 1e-9);
  }
}

TEST_CASE("LeastSquaresConjugateGradient: plain and Tikhonov least squares", "[operator][solver]") {
  auto rng = generator("LeastSquaresConjugateGradient");
  for (int i = 0; i < 20; ++i) {
    // A 'full' convolution with one input channel is tall with full column
    // rank (its Toeplitz blocks have the kernel's corner on the diagonal).
    convmat::Conv1dSpec spec;
    spec.out_channels = uniform(rng, 1, 3);
    spec.input_size = {uniform(rng, 4, 30)};
    spec.kernel_size = {uniform(rng, 2, 5)};
    spec.set_padding_full();
    INFO("case " << i << ": " << describe(spec));
    Eigen::VectorXd w = random_vector<double>(rng, spec.weight_numel());
    w(0) = 1.0;  // a corner well away from zero
    const Eigen::MatrixXd t = convmat::conv_matrix(spec, w);
    const Eigen::VectorXd b = random_vector<double>(rng, t.rows());
    const auto op = convmat::make_operator(spec, w);

    Eigen::LeastSquaresConjugateGradient<convmat::ConvOperator<double, 1>, Eigen::IdentityPreconditioner> plain;
    plain.setTolerance(1e-14);
    plain.compute(op);
    const Eigen::VectorXd x = plain.solve(b);
    REQUIRE(plain.info() == Eigen::Success);
    CHECK(relative_error(x, Eigen::VectorXd(t.colPivHouseholderQr().solve(b))) < 1e-8);

    const double lambda = 0.3;
    const auto stacked = convmat::tikhonov_operator(op, lambda);
    Eigen::LeastSquaresConjugateGradient<convmat::TikhonovOperator<double, 1>, Eigen::IdentityPreconditioner>
        regularised;
    regularised.setTolerance(1e-14);
    regularised.compute(stacked);
    const Eigen::VectorXd xr = regularised.solve(stacked.rhs(b));
    REQUIRE(regularised.info() == Eigen::Success);
    const Eigen::MatrixXd a = t.transpose() * t + lambda * Eigen::MatrixXd::Identity(t.cols(), t.cols());
    CHECK(relative_error(xr, Eigen::VectorXd(a.ldlt().solve(t.transpose() * b))) < 1e-8);
  }
}

TEST_CASE("operator errors name every value", "[operator][errors]") {
  convmat::Conv2dSpec spec;
  spec.in_channels = 2;
  spec.out_channels = 3;
  spec.input_size = {5, 5};
  spec.kernel_size = {3, 3};
  const Eigen::VectorXd w = Eigen::VectorXd::Ones(spec.weight_numel());
  const auto op = convmat::make_operator(spec, w);
  CHECK_THROWS_WITH(op * Eigen::VectorXd::Ones(7),
                    "convmat: operator product: the right-hand side has 7 rows (7 x 1), but the operator is "
                    "27 x 50");
  CHECK_THROWS_AS(convmat::make_operator(spec, Eigen::VectorXd::Ones(5)), convmat::spec_error);
  CHECK_THROWS_WITH(convmat::normal_operator(op, -1.0), "convmat: normal_operator: lambda must be non-negative, not -1");
  CHECK_THROWS_AS(convmat::tikhonov_operator(op, -2.0), convmat::spec_error);
  CHECK_THROWS_AS(convmat::tikhonov_operator(op, 1.0).rhs(Eigen::VectorXd::Ones(26)), convmat::spec_error);
}
