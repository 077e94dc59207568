// Reproducible randomness for property tests: one seed per run, printed,
// and settable with the environment variable CONVMAT_SEED to replay a run.
#pragma once

#include <convmat/spec.hpp>

#include <Eigen/Core>
#include <complex>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <limits>
#include <algorithm>

namespace convmat_test {

using convmat::Index;

/// The run's seed: $CONVMAT_SEED if set, else fresh; printed once.
inline std::uint64_t seed() {
  static const std::uint64_t value = [] {
    std::uint64_t s = 0;
    if (const char* env = std::getenv("CONVMAT_SEED"); env && *env) {
      s = std::strtoull(env, nullptr, 10);
    } else {
      std::random_device device;
      s = (static_cast<std::uint64_t>(device()) << 32) ^ device();
    }
    std::cerr << "convmat tests: random seed " << s << " (replay with CONVMAT_SEED=" << s << ")\n";
    return s;
  }();
  return value;
}

/// A generator for one test: the run's seed mixed with the test's name, so
/// tests do not depend on the order they run in.
inline std::mt19937_64 generator(const std::string& test_name) {
  std::seed_seq sequence{static_cast<std::uint32_t>(seed()), static_cast<std::uint32_t>(seed() >> 32),
                         static_cast<std::uint32_t>(std::hash<std::string>{}(test_name))};
  return std::mt19937_64(sequence);
}

inline Index uniform(std::mt19937_64& rng, Index lo, Index hi) {  // [lo, hi]
  return std::uniform_int_distribution<Index>(lo, hi)(rng);
}

template <class Scalar>
Scalar random_scalar(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  if constexpr (Eigen::NumTraits<Scalar>::IsComplex)
    return Scalar(u(rng), u(rng));
  else
    return static_cast<Scalar>(u(rng));
}

template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_matrix(std::mt19937_64& rng, Index rows, Index cols) {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m(i) = random_scalar<Scalar>(rng);
  return m;
}

template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, 1> random_vector(std::mt19937_64& rng, Index size) {
  return random_matrix<Scalar>(rng, size, 1);
}

/// A random valid convolution spec of rank Rank: groups, asymmetric
/// padding, stride, dilation and every padding mode, small enough that its
/// dense matrix is cheap.
template <int Rank>
convmat::ConvSpec<Rank> random_spec(std::mt19937_64& rng) {
  const Index max_size = Rank == 1 ? 12 : Rank == 2 ? 7 : 5;
  for (;;) {
    convmat::ConvSpec<Rank> s;
    s.groups = uniform(rng, 1, 3);
    s.in_channels = s.groups * uniform(rng, 1, 3);
    s.out_channels = s.groups * uniform(rng, 1, 3);
    s.padding_mode = static_cast<convmat::PaddingMode>(uniform(rng, 0, 3));
    const bool asymmetric = uniform(rng, 0, 2) == 0;
    std::array<Index, Rank> end{};
    for (int d = 0; d < Rank; ++d) {
      s.input_size[d] = uniform(rng, 1, max_size);
      s.kernel_size[d] = uniform(rng, 1, 4);
      s.stride[d] = uniform(rng, 1, 3);
      s.dilation[d] = uniform(rng, 1, 3);
      s.padding[d] = uniform(rng, 0, 3);
      end[d] = uniform(rng, 0, 3);
    }
    if (asymmetric) s.padding_end = end;
    try {
      s.validate();
      return s;
    } catch (const convmat::spec_error&) {
      // rejected: draw again
    }
  }
}

/// A random valid transposed-convolution spec of rank Rank.
template <int Rank>
convmat::ConvTransposeSpec<Rank> random_transpose_spec(std::mt19937_64& rng) {
  const Index max_size = Rank == 1 ? 10 : Rank == 2 ? 6 : 4;
  for (;;) {
    convmat::ConvTransposeSpec<Rank> s;
    s.groups = uniform(rng, 1, 3);
    s.in_channels = s.groups * uniform(rng, 1, 3);
    s.out_channels = s.groups * uniform(rng, 1, 3);
    for (int d = 0; d < Rank; ++d) {
      s.input_size[d] = uniform(rng, 1, max_size);
      s.kernel_size[d] = uniform(rng, 1, 4);
      s.stride[d] = uniform(rng, 1, 3);
      s.dilation[d] = uniform(rng, 1, 3);
      s.padding[d] = uniform(rng, 0, 3);
      s.output_padding[d] = uniform(rng, 0, 2);
    }
    try {
      s.validate();
      return s;
    } catch (const convmat::spec_error&) {
    }
  }
}

/// A random layer whose output is long (over a thousand positions), so
/// that the product path cuts a sample into several panels, which start
/// and end inside rows of the last axis: every axis but the last is long
/// (in 1-d, the only one), in every padding mode, with groups.
template <int Rank>
convmat::ConvSpec<Rank> random_long_spec(std::mt19937_64& rng) {
  for (;;) {
    convmat::ConvSpec<Rank> s;
    s.groups = uniform(rng, 1, 2);
    s.in_channels = s.groups * uniform(rng, 1, 2);
    s.out_channels = s.groups * uniform(rng, 1, 2);
    s.padding_mode = static_cast<convmat::PaddingMode>(uniform(rng, 0, 3));
    for (int d = 0; d < Rank; ++d) {
      const bool short_axis = Rank > 1 && d == Rank - 1;
      s.input_size[d] = short_axis ? uniform(rng, 1, 6) : uniform(rng, Rank == 3 ? 70 : 2200, Rank == 3 ? 90 : 4000);
      s.kernel_size[d] = uniform(rng, 1, 3);
      s.stride[d] = uniform(rng, 1, 2);
      s.dilation[d] = uniform(rng, 1, 2);
      s.padding[d] = uniform(rng, 0, 2);
    }
    try {
      s.validate();
      return s;
    } catch (const convmat::spec_error&) {
      // rejected: draw again
    }
  }
}

template <std::size_t N>
std::string join(const std::array<Index, N>& a) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < N; ++i) os << (i ? ", " : "") << a[i];
  os << ')';
  return os.str();
}

/// A spec as one line, for INFO() in failures.
template <int Rank>
std::string describe(const convmat::ConvSpec<Rank>& s) {
  std::ostringstream os;
  os << "ConvSpec<" << Rank << ">{in=" << s.in_channels << ", out=" << s.out_channels
     << ", input=" << join(s.input_size) << ", kernel=" << join(s.kernel_size) << ", stride=" << join(s.stride)
     << ", pad=" << join(s.pad_begin()) << "/" << join(s.pad_end()) << ", dilation=" << join(s.dilation)
     << ", groups=" << s.groups << ", mode=" << s.padding_mode << "}";
  return os.str();
}

template <int Rank>
std::string describe(const convmat::ConvTransposeSpec<Rank>& s) {
  std::ostringstream os;
  os << "ConvTransposeSpec<" << Rank << ">{in=" << s.in_channels << ", out=" << s.out_channels
     << ", input=" << join(s.input_size) << ", kernel=" << join(s.kernel_size) << ", stride=" << join(s.stride)
     << ", pad=" << join(s.padding) << ", output_padding=" << join(s.output_padding)
     << ", dilation=" << join(s.dilation) << ", groups=" << s.groups << "}";
  return os.str();
}

/// max |a - b| relative to the larger of 1 and max |b|.
template <class A, class B>
double relative_error(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return std::numeric_limits<double>::infinity();
  if (a.size() == 0) return 0.0;
  const double scale = std::max(1.0, static_cast<double>(b.cwiseAbs().maxCoeff()));
  return static_cast<double>((a - b).cwiseAbs().maxCoeff()) / scale;
}

template <int Rank>
using RankTag = std::integral_constant<int, Rank>;

/// Calls f(RankTag<1>{}), f(RankTag<2>{}), f(RankTag<3>{}): in a generic
/// lambda, `constexpr int Rank = decltype(tag)::value;`.
template <class F>
void for_ranks(F&& f) {
  f(RankTag<1>{});
  f(RankTag<2>{});
  f(RankTag<3>{});
}

/// for_ranks for double; rank 2 alone for the other scalar types. For
/// properties whose code does not depend on the rank (the assignment forms
/// of the operators' products, the batch panels), so that float and the
/// complex types cost one rank's compile, not three. (The rank-dependent
/// code, the geometry and the unfold, is written once for every scalar
/// type; the tests that use for_ranks cover it in each rank.)
template <class Scalar, class F>
void for_ranks_of(F&& f) {
  if constexpr (std::is_same_v<Scalar, double>)
    for_ranks(f);
  else
    f(RankTag<2>{});
}

}  // namespace convmat_test
