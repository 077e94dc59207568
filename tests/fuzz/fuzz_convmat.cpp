// A libFuzzer target for convmat: bytes become a layer (rank 1 to 3, a
// convolution or a transposed one, every field including values no layer
// can have), weights, a batch of inputs and a row block. For every input,
// either convmat refuses it with convmat::spec_error, or every path agrees:
// dense T, sparse T (with a narrow StorageIndex too), row blocks, the
// direct convolution, unfold and multiply, fold as the adjoint of unfold,
// the weight Jacobian, the matrix-free operator and its transpose, the
// transposed layer (dense, sparse, direct, operator, and the transpose of
// the matching convolution's matrix). Anything else —
// another exception, an out-of-bounds access (AddressSanitizer), undefined
// behaviour (UBSan), a disagreement — stops the fuzzer with the input that
// caused it.
//
// Weights and inputs are multiples of 1/8 in [-16, 16), so in double every
// product and every sum the layers here make is exact: the double paths
// must agree exactly, whatever order they add in. Float paths are compared
// with the double result within a tolerance scaled by sum |w| |x|.
//
// Build and run: ./scripts/fuzz.sh [seconds]   (see README, "Reliability")
//
// Byte layout (reading past the end gives zeros):
//   0  flags: bits 0-1 rank - 1 (3 -> 1), bit 2 transposed, bit 3 asymmetric
//      padding, bits 4-6 helper (5 same, 6 valid, 7 full), bit 7 float too
//   1  in_channels  2 out_channels  3 groups   (channel code)
//   4  padding mode: b % 5 < 4 picks one; otherwise the invalid value b
//   per dimension: input_size, kernel_size, stride, dilation (size code),
//      padding, padding_end, output_padding (padding code)
//   then batch columns (b % 4), the argument fault (b >= 240 wrong weight
//   length, b >= 248 wrong input rows), the row block (two signed bytes),
//   then the values, one byte each: (int8_t)b / 8.
#include <convmat/convmat.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

namespace {

using convmat::Index;
constexpr Index index_max = std::numeric_limits<Index>::max();
// A layer is run through every path only if it is this small; larger ones
// exercise the validation, the size queries and the memory guard.
constexpr Index max_numel = 1024;

[[noreturn]] void failed(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "convmat fuzz: FAILED: %s %s\n", what, detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(condition)                         \
  do {                                                \
    if (!(condition)) failed("check", #condition);    \
  } while (false)

class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::uint8_t next() { return at_ < size_ ? data_[at_++] : 0; }

  /// A size field: for b < 200, lo + b % n; otherwise zero, a negative
  /// value, a power of two up to 2^53, or a value near the top of Index.
  Index size(Index lo, Index n) {
    const std::uint8_t b = next();
    if (b < 200) return lo + b % n;
    if (b < 216) return 0;
    if (b < 232) return -(b - 215);
    if (b < 248) return Index(1) << (8 + 3 * (b - 232));
    constexpr Index huge[8] = {index_max, index_max - 1, index_max / 2, index_max / 2 + 1,
                               Index(1) << 62, Index(1) << 31, std::numeric_limits<std::int32_t>::max(),
                               Index(1) << 40};
    return huge[b - 248];
  }

  /// A weight or input value: a multiple of 1/8 in [-16, 16).
  double value() { return static_cast<std::int8_t>(next()) / 8.0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_, at_ = 0;
};

template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// Exact equality for double; within tol * (1 + bound) for float.
template <class A, class B>
bool agree(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& exact, const Matrix<double>& bound) {
  if (a.rows() != exact.rows() || a.cols() != exact.cols()) return false;
  using Scalar = typename A::Scalar;
  for (Index j = 0; j < a.cols(); ++j)
    for (Index i = 0; i < a.rows(); ++i) {
      const double x = static_cast<double>(a(i, j)), y = static_cast<double>(exact(i, j));
      if constexpr (std::is_same_v<Scalar, double>) {
        if (x != y) return false;
      } else {
        if (!(std::abs(x - y) <= 1e-4 * (1 + bound(i, j)))) return false;
      }
    }
  return true;
}

struct Plan {
  Index batch = 1;
  int fault = 0;  // 0 none, 1 wrong weight length, 2 wrong input rows
  Index row_a = 0, row_b = 0;
  bool also_float = false;
};

template <class F>
bool throws_spec_error(F&& f) {
  try {
    f();
  } catch (const convmat::spec_error&) {
    return true;
  }
  return false;
}

/// A layer too large to run: the size queries either answer or refuse,
/// and a dense matrix beyond the guard is refused.
template <class Spec>
void check_large(const Spec& spec) {
  // The index tables (output * kernel entries per axis) are built for the
  // size queries: keep them small so the fuzzer stays fast (test_errors
  // covers the guard on the tables themselves).
  const auto output = spec.output_size();
  Index entries = 0;
  for (int d = 0; d < Spec::rank; ++d) {
    Index axis = 0;
    if (__builtin_mul_overflow(output[d], spec.kernel_size[d], &axis) ||
        __builtin_add_overflow(entries, axis, &entries) || entries > (Index(1) << 16))
      return;
  }
  convmat::MatrixSize size;
  try {
    size = convmat::matrix_size<double>(spec);
  } catch (const convmat::spec_error&) {
    return;
  }
  FUZZ_CHECK(size.rows == spec.output_numel() && size.cols == spec.input_numel());
  if (size.dense_bytes > convmat::max_dense_bytes() && spec.weight_numel() <= max_numel) {
    const Eigen::VectorXd w = Eigen::VectorXd::Ones(spec.weight_numel());
    if constexpr (std::is_same_v<Spec, convmat::ConvSpec<Spec::rank>>)
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_matrix(spec, w); }));
    else
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_transpose_matrix(spec, w); }));
  }
}

template <class Scalar, int Rank>
void run_conv(const convmat::ConvSpec<Rank>& spec, const Eigen::VectorXd& w64, const Matrix<double>& x64,
              const Plan& plan) {
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> w = w64.cast<Scalar>();
  const Matrix<Scalar> x = x64.cast<Scalar>();
  // The exact result, and the bound for float's rounding: conv(|w|, |x|).
  const Matrix<double> y = convmat::convolve(spec, w64, x64);
  const Matrix<double> bound = convmat::convolve(spec, w64.cwiseAbs().eval(), x64.cwiseAbs().eval());

  const auto t = convmat::conv_matrix(spec, w);
  FUZZ_CHECK(t.rows() == spec.output_numel() && t.cols() == spec.input_numel());
  FUZZ_CHECK(agree(convmat::convolve(spec, w, x), y, bound));
  FUZZ_CHECK(agree((t * x).eval(), y, bound));
  const auto s = convmat::conv_matrix_sparse(spec, w);
  FUZZ_CHECK(s.nonZeros() == convmat::conv_matrix_nonzeros(spec));
  FUZZ_CHECK(agree((s * x).eval(), y, bound));
  FUZZ_CHECK(agree(Matrix<Scalar>(s), t, Matrix<double>(t.template cast<double>().cwiseAbs())));
  FUZZ_CHECK(agree(convmat::convolve_unfold(spec, w, x), y, bound));
  // The matrix-free operator: T x, and T^T z against the dense transpose.
  const auto op = convmat::make_operator(spec, w);
  FUZZ_CHECK(op.rows() == t.rows() && op.cols() == t.cols());
  const Matrix<Scalar> op_x = op * x;
  FUZZ_CHECK(agree(op_x, y, bound));
  const Matrix<Scalar> z = y.template cast<Scalar>();
  const Matrix<Scalar> op_tz = op.transpose() * z;
  const Matrix<Scalar> dense_tz = t.transpose() * z;
  FUZZ_CHECK(agree(op_tz, dense_tz.template cast<double>(), (t.cwiseAbs().transpose() * z.cwiseAbs()).template cast<double>()));
  // A narrow StorageIndex: the same matrix, or a spec_error exactly when a
  // size or the non-zero count does not fit it.
  constexpr Index int16_max = std::numeric_limits<std::int16_t>::max();
  const bool fits16 = t.rows() <= int16_max && t.cols() <= int16_max && s.nonZeros() <= int16_max;
  try {
    const auto s16 = convmat::conv_matrix_sparse<std::int16_t>(spec, w);
    FUZZ_CHECK(fits16 && Matrix<Scalar>(s16) == Matrix<Scalar>(s));
  } catch (const convmat::spec_error&) {
    FUZZ_CHECK(!fits16);
  }

  // Row blocks: within range they are the rows of T; outside, spec_error.
  const Index rows = t.rows(), a = plan.row_a, b = plan.row_b;
  if (0 <= a && a <= b && b <= rows) {
    FUZZ_CHECK(convmat::conv_matrix_rows(spec, w, a, b) == t.middleRows(a, b - a));
    FUZZ_CHECK(Matrix<Scalar>(convmat::conv_matrix_sparse_rows(spec, w, a, b)) == t.middleRows(a, b - a));
  } else {
    FUZZ_CHECK(throws_spec_error([&] { convmat::conv_matrix_rows(spec, w, a, b); }));
    FUZZ_CHECK(throws_spec_error([&] { convmat::conv_matrix_sparse_rows(spec, w, a, b); }));
  }

  if (x.cols() >= 1 && std::is_same_v<Scalar, double>) {
    // unfold / fold are adjoint: <unfold(x), C> = <x, fold(C)>, exactly.
    const auto columns = convmat::unfold(spec, x.col(0));
    Matrix<Scalar> c(columns.rows(), columns.cols());
    for (Index i = 0; i < c.size(); ++i) c(i) = Scalar((i * 7 % 17) - 8) / 8;
    FUZZ_CHECK(columns.cwiseProduct(c).sum() == x.col(0).dot(convmat::fold(spec, c)));
    // The weight Jacobian times w is the convolution.
    const auto jacobian = convmat::weight_jacobian(spec, x.col(0));
    FUZZ_CHECK(agree((jacobian * w).eval(), y.col(0), bound.col(0)));
  }
}

template <class Scalar, int Rank>
void run_transpose(const convmat::ConvTransposeSpec<Rank>& spec, const Eigen::VectorXd& w64,
                   const Matrix<double>& x64) {
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> w = w64.cast<Scalar>();
  const Matrix<Scalar> x = x64.cast<Scalar>();
  const Matrix<double> y = convmat::convolve_transpose(spec, w64, x64);
  const Matrix<double> bound = convmat::convolve_transpose(spec, w64.cwiseAbs().eval(), x64.cwiseAbs().eval());
  const auto t = convmat::conv_transpose_matrix(spec, w);
  FUZZ_CHECK(t.rows() == spec.output_numel() && t.cols() == spec.input_numel());
  FUZZ_CHECK(agree(convmat::convolve_transpose(spec, w, x), y, bound));
  FUZZ_CHECK(agree((t * x).eval(), y, bound));
  const auto s = convmat::conv_transpose_matrix_sparse(spec, w);
  FUZZ_CHECK(agree((s * x).eval(), y, bound));
  FUZZ_CHECK(s.nonZeros() == convmat::conv_matrix_nonzeros(spec));
  const Matrix<Scalar> op_x = convmat::make_operator(spec, w) * x;
  FUZZ_CHECK(agree(op_x, y, bound));

  bool zero_output_padding = true;
  for (Index p : spec.output_padding) zero_output_padding = zero_output_padding && p == 0;
  if (zero_output_padding) {  // the transpose of the matching convolution's matrix
    convmat::ConvSpec<Rank> conv;
    conv.in_channels = spec.out_channels;
    conv.out_channels = spec.in_channels;
    conv.groups = spec.groups;
    conv.input_size = spec.output_size();
    conv.kernel_size = spec.kernel_size;
    conv.stride = spec.stride;
    conv.padding = spec.padding;
    conv.dilation = spec.dilation;
    FUZZ_CHECK(conv.output_size() == spec.input_size);
    FUZZ_CHECK(convmat::conv_matrix(conv, w).transpose() == t);
  }
}

/// Faulty arguments (weights of the wrong length, or inputs with the
/// wrong number of rows): every entry point given them must refuse them.
template <class Spec>
void check_faults(const Spec& spec, const Eigen::VectorXd& w, const Matrix<double>& x) {
  const bool bad_weight = w.size() != spec.weight_numel();
  if constexpr (std::is_same_v<Spec, convmat::ConvSpec<Spec::rank>>) {
    FUZZ_CHECK(throws_spec_error([&] { convmat::convolve(spec, w, x); }));
    FUZZ_CHECK(throws_spec_error([&] { convmat::convolve_unfold(spec, w, x); }));
    if (bad_weight) {
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_matrix(spec, w); }));
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_matrix_sparse(spec, w); }));
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_matrix_rows(spec, w, 0, 0); }));
    } else {  // the input has the wrong rows, and at least one column
      FUZZ_CHECK(throws_spec_error([&] { convmat::unfold(spec, x.col(0)); }));
      FUZZ_CHECK(throws_spec_error([&] { convmat::weight_jacobian(spec, x.col(0)); }));
    }
  } else {
    FUZZ_CHECK(throws_spec_error([&] { convmat::convolve_transpose(spec, w, x); }));
    if (bad_weight) {
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_transpose_matrix(spec, w); }));
      FUZZ_CHECK(throws_spec_error([&] { convmat::conv_transpose_matrix_sparse(spec, w); }));
    }
  }
}

template <class Spec>
void run(const Spec& spec, Bytes& bytes, Plan plan) {
  spec.validate();  // may throw spec_error: a layer that cannot be
  const Index in = spec.input_numel(), out = spec.output_numel(), wn = spec.weight_numel();
  if (in > max_numel || out > max_numel || wn > max_numel) return check_large(spec);

  plan.batch = bytes.next() % 4;
  const std::uint8_t fault = bytes.next();
  plan.fault = fault >= 248 ? 2 : fault >= 240 ? 1 : 0;
  plan.row_a = static_cast<std::int8_t>(bytes.next());
  plan.row_b = plan.row_a + static_cast<std::int8_t>(bytes.next());
  const Index off_by = fault % 2 ? 1 : -1;
  const Index w_size = wn + (plan.fault == 1 ? off_by : 0);
  const Index x_rows = in + (plan.fault == 2 ? off_by : 0);
  Eigen::VectorXd w(w_size);
  for (Index i = 0; i < w.size(); ++i) w(i) = bytes.value();
  Matrix<double> x(x_rows, plan.fault == 2 ? std::max<Index>(plan.batch, 1) : plan.batch);
  for (Index i = 0; i < x.size(); ++i) x(i) = bytes.value();

  if (plan.fault != 0) return check_faults(spec, w, x);
  if constexpr (std::is_same_v<Spec, convmat::ConvSpec<Spec::rank>>) {
    run_conv<double>(spec, w, x, plan);
    if (plan.also_float) run_conv<float>(spec, w, x, plan);
  } else {
    run_transpose<double>(spec, w, x);
    if (plan.also_float) run_transpose<float>(spec, w, x);
  }
}

template <int Rank>
void decode_and_run(std::uint8_t flags, Bytes& bytes) {
  const bool transposed = flags & 4, asymmetric = flags & 8;
  const int helper = (flags >> 4) & 7;
  Plan plan;
  plan.also_float = flags & 128;
  const Index in_channels = bytes.size(1, 4), out_channels = bytes.size(1, 4);
  const Index groups = bytes.size(1, 2);
  const std::uint8_t mode = bytes.next();
  std::array<Index, Rank> input{}, kernel{}, stride{}, dilation{}, padding{}, padding_end{}, output_padding{};
  for (int d = 0; d < Rank; ++d) {
    input[d] = bytes.size(1, 6);
    kernel[d] = bytes.size(1, 4);
    stride[d] = bytes.size(1, 3);
    dilation[d] = bytes.size(1, 3);
    padding[d] = bytes.size(0, 4);
    padding_end[d] = bytes.size(0, 4);
    output_padding[d] = bytes.size(0, 3);
  }
  if (transposed) {
    convmat::ConvTransposeSpec<Rank> s;
    s.in_channels = in_channels;
    s.out_channels = out_channels;
    s.groups = groups;
    s.input_size = input;
    s.kernel_size = kernel;
    s.stride = stride;
    s.dilation = dilation;
    s.padding = padding;
    s.output_padding = output_padding;
    run(s, bytes, plan);
  } else {
    convmat::ConvSpec<Rank> s;
    s.in_channels = in_channels;
    s.out_channels = out_channels;
    s.groups = groups;
    s.input_size = input;
    s.kernel_size = kernel;
    s.stride = stride;
    s.dilation = dilation;
    s.padding = padding;
    if (asymmetric) s.padding_end = padding_end;
    s.padding_mode = mode % 5 < 4 ? static_cast<convmat::PaddingMode>(mode % 5)
                                  : static_cast<convmat::PaddingMode>(mode);
    if (helper == 5) s.set_padding_same();
    if (helper == 6) s.set_padding_valid();
    if (helper == 7) s.set_padding_full();
    run(s, bytes, plan);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  convmat::set_max_dense_bytes(std::size_t{64} << 20);  // well below libFuzzer's 2 GB malloc limit
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes bytes(data, size);
  const std::uint8_t flags = bytes.next();
  try {
    switch ((flags & 3) % 3) {
      case 0: decode_and_run<1>(flags, bytes); break;
      case 1: decode_and_run<2>(flags, bytes); break;
      default: decode_and_run<3>(flags, bytes); break;
    }
  } catch (const convmat::spec_error&) {
    // refused with a message: fine
  } catch (const std::exception& e) {
    failed("an exception other than spec_error:", e.what());
  }
  return 0;
}
