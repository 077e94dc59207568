// The matrix-free operator: its products equal the dense matrix, its
// transpose and adjoint on random layers of every kind, for one vector and
// for batches, however the product path cuts them into panels and threads;
// its normal and Tikhonov companions are the matrices they claim; and
// Eigen's iterative solvers take all three and reach the dense solution.
#include <convmat/dense.hpp>
#include <convmat/direct.hpp>
#include <convmat/operator.hpp>
#include <convmat/sparse.hpp>

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

namespace {

/// Every way Eigen users assign an operator's product — =, +=, -=, with
/// and without noalias(), scaled, in place, on overlapping blocks, into a
/// row-major or reversed destination, vector and batch — against the dense
/// matrix `m` it stands for. (Issue 18: `x = op * x` once gave zeros.)
template <class Operator, class Dense>
void check_assignment_forms(std::mt19937_64& rng, const Operator& a, const Dense& m, double tolerance) {
  using Scalar = typename Operator::Scalar;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using RowMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Matrix t = m;
  const Index rows = t.rows(), cols = t.cols();
  const Vector x = random_vector<Scalar>(rng, cols), y0 = random_vector<Scalar>(rng, rows);
  const Matrix batch = random_matrix<Scalar>(rng, cols, 3), y0s = random_matrix<Scalar>(rng, rows, 3);
  const Vector tx = t * x;
  const Matrix tb = t * batch;
  const Scalar two(2);

  Vector y;
  y = a * x;
  CHECK(relative_error(y, tx) < tolerance);
  y.setZero(rows);
  y.noalias() = a * x;
  CHECK(relative_error(y, tx) < tolerance);
  y = y0;
  y += a * x;
  CHECK(relative_error(y, y0 + tx) < tolerance);
  y = y0;
  y -= a * x;
  CHECK(relative_error(y, y0 - tx) < tolerance);
  y = y0;
  y.noalias() -= two * (a * x);
  CHECK(relative_error(y, y0 - two * tx) < tolerance);
  y = y0 - a * x;
  CHECK(relative_error(y, y0 - tx) < tolerance);
  Matrix ys;
  ys = a * batch;
  CHECK(relative_error(ys, tb) < tolerance);
  ys = y0s;
  ys.noalias() += a * batch;
  CHECK(relative_error(ys, y0s + tb) < tolerance);
  RowMajor yr;
  yr = a * batch;
  CHECK(relative_error(yr, tb) < tolerance);
  Vector reversed = Vector::Zero(rows);
  reversed.reverse() = a * x;
  CHECK(relative_error(reversed, Vector(tx.reverse())) < tolerance);

  // The destination and the right-hand side share memory: a vector whose
  // head is written from its (overlapping) tail.
  Vector buffer = random_vector<Scalar>(rng, std::max(rows, cols) + 1);
  const Vector tail = buffer.tail(cols);
  buffer.head(rows) = a * buffer.tail(cols);
  CHECK(relative_error(Vector(buffer.head(rows)), Vector(t * tail)) < tolerance);

  if (rows == cols) {  // in place
    Vector v = x;
    v = a * v;
    CHECK(relative_error(v, tx) < tolerance);
    v = x;
    v.noalias() = a * v;
    CHECK(relative_error(v, tx) < tolerance);
    v = x;
    v += a * v;
    CHECK(relative_error(v, Vector(x + tx)) < tolerance);
    v = x;
    v.noalias() -= a * v;
    CHECK(relative_error(v, Vector(x - tx)) < tolerance);
    v = x;
    v = a * (a * v);
    CHECK(relative_error(v, Vector(t * tx)) < tolerance);
    Matrix b = batch;
    b = a * b;
    CHECK(relative_error(b, tb) < tolerance);
    b = batch;
    b.noalias() = a * b;
    CHECK(relative_error(b, tb) < tolerance);
    b = batch;
    b.col(1) = a * b.col(1);
    CHECK(relative_error(Vector(b.col(1)), Vector(tb.col(1))) < tolerance);
    CHECK(b.col(0) == batch.col(0));
  }
}

/// A square convolution (same channels, 'same' padding, stride 1) of rank Rank.
template <int Rank>
convmat::ConvSpec<Rank> random_square_spec(std::mt19937_64& rng) {
  convmat::ConvSpec<Rank> spec;
  spec.groups = uniform(rng, 1, 2);
  spec.in_channels = spec.out_channels = spec.groups * uniform(rng, 1, 2);
  spec.padding_mode = static_cast<convmat::PaddingMode>(uniform(rng, 0, 3));
  for (int d = 0; d < Rank; ++d) {
    spec.input_size[d] = uniform(rng, 3, Rank == 1 ? 9 : 4);
    spec.kernel_size[d] = uniform(rng, 1, 3);
  }
  spec.set_padding_same();
  return spec;
}

/// The transposed layer of a square convolution (zero padding, odd kernel).
template <int Rank>
convmat::ConvTransposeSpec<Rank> random_square_transpose_spec(std::mt19937_64& rng) {
  convmat::ConvTransposeSpec<Rank> spec;
  spec.groups = uniform(rng, 1, 2);
  spec.in_channels = spec.out_channels = spec.groups * uniform(rng, 1, 2);
  for (int d = 0; d < Rank; ++d) {
    spec.input_size[d] = uniform(rng, 3, Rank == 1 ? 9 : 4);
    spec.kernel_size[d] = 2 * uniform(rng, 0, 1) + 1;
    spec.padding[d] = spec.kernel_size[d] / 2;
  }
  return spec;
}

template <class Scalar>
void check_assignment_forms_of_every_operator(const char* name, double tolerance) {
  auto rng = generator(name);
  using Dense = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  for_ranks_of<Scalar>([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 20; ++i) {
      const auto spec = i % 2 ? random_spec<Rank>(rng) : random_square_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<Scalar>(rng, spec.weight_numel());
      const Dense t = convmat::conv_matrix(spec, w);
      const auto op = convmat::make_operator(spec, w);
      check_assignment_forms(rng, op, t, tolerance);
      check_assignment_forms(rng, op.transpose(), Dense(t.transpose()), tolerance);
      check_assignment_forms(rng, op.adjoint(), Dense(t.adjoint()), tolerance);
      const auto lambda = typename Eigen::NumTraits<Scalar>::Real(0.25);
      check_assignment_forms(rng, convmat::normal_operator(op, lambda),
                             Dense(t.adjoint() * t + Scalar(lambda) * Dense::Identity(t.cols(), t.cols())),
                             tolerance);
      Dense stacked(t.rows() + t.cols(), t.cols());
      stacked << t, Scalar(0.5) * Dense::Identity(t.cols(), t.cols());
      const auto tikhonov = convmat::tikhonov_operator(op, lambda);
      check_assignment_forms(rng, tikhonov, stacked, tolerance);
      check_assignment_forms(rng, tikhonov.adjoint(), Dense(stacked.adjoint()), tolerance);
    }
    for (int i = 0; i < 20; ++i) {
      const auto spec = i % 2 ? random_transpose_spec<Rank>(rng) : random_square_transpose_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<Scalar>(rng, spec.weight_numel());
      const Dense t = convmat::conv_transpose_matrix(spec, w);
      const auto op = convmat::make_operator(spec, w);
      check_assignment_forms(rng, op, t, tolerance);
      check_assignment_forms(rng, op.adjoint(), Dense(t.adjoint()), tolerance);
    }
  });
}

}  // namespace

TEST_CASE("operator products in every assignment form, in place too", "[operator][regression][property]") {
  check_assignment_forms_of_every_operator<double>("assignment forms (double)", 1e-12);
  check_assignment_forms_of_every_operator<float>("assignment forms (float)", 1e-4);
  check_assignment_forms_of_every_operator<std::complex<double>>("assignment forms (complex)", 1e-12);
  check_assignment_forms_of_every_operator<std::complex<float>>("assignment forms (complex float)", 1e-4);
}

namespace {

/// op * X, op.transpose() * Y, op.adjoint() * Y and conj(T) X against the
/// dense `t`, for batches of several sizes: small layers put several
/// samples side by side in one panel.
template <class Operator, class Dense>
void check_batches(std::mt19937_64& rng, const Operator& op, const Dense& t, double tolerance) {
  using Scalar = typename Operator::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  for (const Index batch : {Index{1}, Index{2}, Index{5}, uniform(rng, 6, 40)}) {
    INFO("batch " << batch);
    const Matrix x = random_matrix<Scalar>(rng, t.cols(), batch);
    const Matrix y = random_matrix<Scalar>(rng, t.rows(), batch);
    const Matrix tx = op * x, tty = op.transpose() * y, thy = op.adjoint() * y;
    const Matrix cx = op.transpose().adjoint() * x;
    CHECK(relative_error(tx, t * x) < tolerance);
    CHECK(relative_error(tty, t.transpose() * y) < tolerance);
    CHECK(relative_error(thy, t.adjoint() * y) < tolerance);
    CHECK(relative_error(cx, t.conjugate() * x) < tolerance);
  }
}

template <class Scalar>
void check_batches_of_every_kind(const char* name, double tolerance) {
  auto rng = generator(name);
  using Dense = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  for_ranks_of<Scalar>([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 40; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<Scalar>(rng, spec.weight_numel());
      check_batches(rng, convmat::make_operator(spec, w), Dense(convmat::conv_matrix(spec, w)), tolerance);
    }
    for (int i = 0; i < 40; ++i) {
      const auto spec = random_transpose_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      const auto w = random_vector<Scalar>(rng, spec.weight_numel());
      check_batches(rng, convmat::make_operator(spec, w), Dense(convmat::conv_transpose_matrix(spec, w)), tolerance);
    }
  });
}

}  // namespace

TEST_CASE("operator products on batches equal the dense matrix, its transpose and adjoint",
          "[operator][property][batch]") {
  check_batches_of_every_kind<double>("operator batches (double)", 1e-12);
  check_batches_of_every_kind<std::complex<double>>("operator batches (complex)", 1e-12);
  check_batches_of_every_kind<float>("operator batches (float)", 1e-4);
  check_batches_of_every_kind<std::complex<float>>("operator batches (complex float)", 1e-4);
}

TEST_CASE("the product path gives the same products however many threads it is cut for",
          "[operator][property][threads]") {
  // Without OpenMP the pieces run one after another, with it in threads:
  // either way each cut (panels, sample sets, input-channel parts of the
  // fold) must cover every product exactly once.
  auto rng = generator("product path threads");
  using Matrix = Eigen::MatrixXcd;
  const auto check = [&](const auto& spec, Index batch) {
    const auto g = convmat::detail::geometry(spec);
    const auto w = random_vector<std::complex<double>>(rng, spec.weight_numel());
    const auto t = convmat::conv_matrix_sparse(spec, w);
    const Matrix x = random_matrix<std::complex<double>>(rng, g.input_numel(), batch);
    const Matrix y = random_matrix<std::complex<double>>(rng, g.output_numel(), batch);
    const Matrix x0 = random_matrix<std::complex<double>>(rng, g.input_numel(), batch);
    const Matrix tx = t * x, tty = t.transpose() * y;
    for (const Index threads : {1, 2, 3, 5, 8}) {
      INFO("batch " << batch << ", cut for " << threads << " threads");
      Matrix product = Matrix::Zero(g.output_numel(), batch);
      convmat::detail::unfold_multiply(g, w.data(), x.data(), x.rows(), convmat::detail::whole_input(g),
                                       product.data(), product.rows(), batch, convmat::detail::whole_output(g),
                                       threads);
      CHECK(relative_error(product, tx) < 1e-12);
      Matrix set = x0, added = x0;  // overwritten, added to
      convmat::detail::multiply_fold(g, w.data(), y.data(), y.rows(), set.data(), set.rows(),
                                     convmat::detail::whole_input(g), batch, convmat::detail::whole_output(g), true,
                                     threads);
      CHECK(relative_error(set, tty) < 1e-12);
      convmat::detail::multiply_fold(g, w.data(), y.data(), y.rows(), added.data(), added.rows(),
                                     convmat::detail::whole_input(g), batch, convmat::detail::whole_output(g),
                                     false, threads);
      CHECK(relative_error(added, Matrix(x0 + tty)) < 1e-12);
    }
  };
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 40; ++i) {
      const auto spec = random_spec<Rank>(rng);
      INFO("case " << i << ": " << describe(spec));
      check(spec, uniform(rng, 1, 9));
    }
    for (int i = 0; i < 3; ++i) {
      const auto spec = random_long_spec<Rank>(rng);
      INFO("long case " << i << ": " << describe(spec));
      check(spec, uniform(rng, 1, 3));
    }
  });
}

TEST_CASE("operator products on long layers (panels that split rows unevenly) equal the reference",
          "[operator][property][batch]") {
  auto rng = generator("operator long layers");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 8; ++i) {
      const auto spec = random_long_spec<Rank>(rng);
      const auto g = convmat::detail::geometry(spec);
      INFO("case " << i << ": " << describe(spec));
      REQUIRE(convmat::detail::Panels(g.output_spatial, 1, 1).splits > 1);
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto op = convmat::make_operator(spec, w);
      const Index batch = uniform(rng, 1, 3);
      const auto x = random_matrix<double>(rng, spec.input_numel(), batch);
      const auto y = random_matrix<double>(rng, spec.output_numel(), batch);
      const Eigen::MatrixXd tx = op * x, tty = op.transpose() * y;
      CHECK(relative_error(tx, convmat::convolve(spec, w, x)) < 1e-12);
      CHECK(relative_error(tty, Eigen::MatrixXd(convmat::conv_matrix_sparse(spec, w).transpose() * y)) < 1e-12);
    }
  });
}

TEST_CASE("operator products on a layer too big for its dense matrix equal the direct loops", "[operator]") {
  // 16 -> 16 channels in 2 groups on 64 x 64, 3 x 3, reflect padding: T is
  // 65536 x 65536, 32 GiB dense.
  auto rng = generator("operator on a big layer");
  convmat::Conv2dSpec spec;
  spec.in_channels = spec.out_channels = 16;
  spec.groups = 2;
  spec.input_size = {64, 64};
  spec.kernel_size = {3, 3};
  spec.padding = {1, 1};
  spec.padding_mode = convmat::PaddingMode::reflect;
  const auto g = convmat::detail::geometry(spec);
  REQUIRE(static_cast<double>(spec.output_numel()) * static_cast<double>(spec.input_numel()) * 8 >= 32.0 * (1 << 30));
  const auto w = random_vector<double>(rng, spec.weight_numel());
  const auto op = convmat::make_operator(spec, w);
  const auto x = random_matrix<double>(rng, spec.input_numel(), 2);
  const auto y = random_matrix<double>(rng, spec.output_numel(), 2);
  const Eigen::MatrixXd tx = op * x, tty = op.adjoint() * y;
  CHECK(relative_error(tx, convmat::convolve(spec, w, x)) < 1e-12);
  Eigen::MatrixXd expected(spec.input_numel(), 2);
  for (Index s = 0; s < 2; ++s) convmat::detail::adjoint(g, w.data(), y.col(s).data(), expected.col(s).data());
  CHECK(relative_error(tty, expected) < 1e-12);
}

TEST_CASE("products on a rectangle of T's rows through an input window equal those rows",
          "[operator][property][petsc]") {
  // What the PETSc MATSHELL runs on each rank: output channels x positions,
  // the input held as a window of channels and spatial offsets (its halo).
  auto rng = generator("rectangle and window");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 150; ++i) {
      const auto spec = random_spec<Rank>(rng);
      const auto g = convmat::detail::geometry(spec);
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const Eigen::MatrixXd t = convmat::conv_matrix(spec, w);
      convmat::detail::OutputRegion region;
      region.channel_begin = uniform(rng, 0, g.out_channels - 1);
      region.channel_end = uniform(rng, region.channel_begin + 1, g.out_channels);
      region.position_begin = uniform(rng, 0, g.output_spatial - 1);
      region.position_end = uniform(rng, region.position_begin + 1, g.output_spatial);
      INFO("case " << i << ": " << describe(spec) << ", channels [" << region.channel_begin << ", "
                   << region.channel_end << "), positions [" << region.position_begin << ", "
                   << region.position_end << ")");
      // The window: the input channels of the region's groups, offsets from
      // the first to the last the region's positions read.
      const Index c_begin = g.group_first_input(region.channel_begin);
      const Index c_end = g.group_first_input(region.channel_end - 1) + g.in_per_group();
      Index o_begin = g.input_spatial, o_end = 0;
      std::vector<convmat::detail::Tap> taps;
      for (Index p = region.position_begin; p < region.position_end; ++p) {
        g.taps_at(p, taps);
        for (const auto& tap : taps) o_begin = std::min(o_begin, tap.offset), o_end = std::max(o_end, tap.offset + 1);
      }
      o_end = std::max(o_end, o_begin);
      const convmat::detail::InputWindow window{c_begin, o_end - o_begin, o_begin};
      const auto halo_index = [&](Index c, Index offset) { return (c - c_begin) * (o_end - o_begin) + offset - o_begin; };
      // The region's rows of T, in its layout.
      Eigen::MatrixXd rows(region.channels() * region.positions(), t.cols());
      for (Index c = region.channel_begin; c < region.channel_end; ++c)
        for (Index p = region.position_begin; p < region.position_end; ++p)
          rows.row((c - region.channel_begin) * region.positions() + p - region.position_begin) =
              t.row(c * g.output_spatial + p);

      const Eigen::VectorXd x = random_vector<double>(rng, t.cols());
      Eigen::VectorXd halo((c_end - c_begin) * (o_end - o_begin));
      for (Index c = c_begin; c < c_end; ++c)
        for (Index offset = o_begin; offset < o_end; ++offset)
          halo(halo_index(c, offset)) = x(c * g.input_spatial + offset);
      Eigen::VectorXd product(rows.rows());
      convmat::detail::unfold_multiply(g, w.data(), halo.data(), 0, window, product.data(), 0, 1, region);
      CHECK(relative_error(product, rows * x) < 1e-12);

      const Eigen::VectorXd y = random_vector<double>(rng, rows.rows());
      const Eigen::VectorXd start = random_vector<double>(rng, halo.size());
      Eigen::VectorXd added = start;
      convmat::detail::multiply_fold(g, w.data(), y.data(), 0, added.data(), 0, window, 1, region, false);
      const Eigen::VectorXd expected = rows.transpose() * y;
      Eigen::VectorXd outside = expected;  // what falls outside the window: nothing
      Eigen::VectorXd in_window = start;
      for (Index c = c_begin; c < c_end; ++c)
        for (Index offset = o_begin; offset < o_end; ++offset) {
          in_window(halo_index(c, offset)) += expected(c * g.input_spatial + offset);
          outside(c * g.input_spatial + offset) = 0;
        }
      CHECK(relative_error(added, in_window) < 1e-12);
      CHECK(outside.isZero(0.0));
    }
  });
}

TEST_CASE("solver aliases: LeastSquaresSolver, ConjugateGradientSolver, BiCGSTABSolver", "[operator][solver]") {
  convmat::Conv1dSpec spec;  // 'full': tall with full column rank
  spec.input_size = {12};
  spec.kernel_size = {3};
  spec.set_padding_full();
  const Eigen::Vector3d w(1.0, 0.5, -0.25);
  const Eigen::MatrixXd t = convmat::conv_matrix(spec, w);
  const Eigen::VectorXd b = Eigen::VectorXd::LinSpaced(t.rows(), -1, 1);
  const Eigen::VectorXd expected = t.colPivHouseholderQr().solve(b);
  const auto op = convmat::make_operator(spec, w);

  static_assert(std::is_same_v<convmat::LeastSquaresSolver<convmat::ConvOperator<double, 1>>,
                               Eigen::LeastSquaresConjugateGradient<convmat::ConvOperator<double, 1>,
                                                                    Eigen::IdentityPreconditioner>>);
  convmat::LeastSquaresSolver<decltype(op)> lscg;
  lscg.setTolerance(1e-13);
  lscg.compute(op);
  CHECK(relative_error(Eigen::VectorXd(lscg.solve(b)), expected) < 1e-8);

  const auto normal = convmat::normal_operator(op);
  convmat::ConjugateGradientSolver<decltype(normal)> cg;
  cg.setTolerance(1e-13);
  cg.compute(normal);
  CHECK(relative_error(Eigen::VectorXd(cg.solve(Eigen::VectorXd(op.adjoint() * b))), expected) < 1e-8);

  convmat::Conv1dSpec square = spec;  // 'same': square, near the identity
  square.set_padding_same();
  const Eigen::Vector3d near_identity(0.1, 1.0, 0.2);
  const auto sop = convmat::make_operator(square, near_identity);
  convmat::BiCGSTABSolver<decltype(sop)> bicgstab;
  bicgstab.setTolerance(1e-13);
  bicgstab.compute(sop);
  const Eigen::VectorXd rhs = Eigen::VectorXd::LinSpaced(12, 1, 2);
  const Eigen::VectorXd x = bicgstab.solve(rhs);
  CHECK(relative_error(Eigen::VectorXd(convmat::conv_matrix(square, near_identity) * x), rhs) < 1e-10);
}
