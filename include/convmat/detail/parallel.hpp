// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Splitting independent rows over threads. With OpenMP (compile with
// -fopenmp, or link OpenMP::OpenMP_CXX) the work is shared among the
// threads; without it everything runs serially, with the same results.
#pragma once

#include <Eigen/Core>
#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace convmat::detail {

/// How many threads parallel_chunks may use here: OpenMP's maximum, or 1
/// inside a parallel region or without OpenMP.
inline Eigen::Index available_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

/// Calls f(begin, end) on disjoint chunks covering [first, last), in
/// parallel when OpenMP is on and there are at least `grain` items per
/// thread. Each call may keep its own scratch space.
template <class F>
void parallel_chunks(Eigen::Index first, Eigen::Index last, Eigen::Index grain, F&& f) {
  const Eigen::Index n = last - first;
  if (n <= 0) return;
#ifdef _OPENMP
  const Eigen::Index threads = available_threads();
  const Eigen::Index chunks = std::max<Eigen::Index>(1, std::min<Eigen::Index>(threads, n / std::max<Eigen::Index>(grain, 1)));
  if (chunks > 1) {
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks))
    for (Eigen::Index c = 0; c < chunks; ++c) f(first + n * c / chunks, first + n * (c + 1) / chunks);
    return;
  }
#else
  (void)grain;
#endif
  f(first, last);
}

}  // namespace convmat::detail
