// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The benchmark driver. `convmat_bench [google benchmark flags]` times every
// row; `convmat_bench --memory NAME` runs the operation NAME once and prints
// its peak resident memory above the process's resident size before it
// ("NAME <bytes>"); scripts/bench.sh runs one process per memory row.
// `convmat_bench --memory-list` lists those rows.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <Eigen/Core>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "shapes.hpp"

void bench::set_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
}

namespace {

long resident_bytes() {
  long pages = 0, resident = 0;
  std::ifstream("/proc/self/statm") >> pages >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

long peak_resident_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss * 1024L;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--memory-list") == 0) {
    for (const auto& row : bench::memory_rows()) std::cout << row.first << '\n';
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--memory") == 0) {
    const auto row = bench::memory_rows().find(argv[2]);
    if (row == bench::memory_rows().end()) {
      std::cerr << "convmat_bench: no memory row '" << argv[2] << "' (see --memory-list)\n";
      return 2;
    }
    bench::set_threads(1);
    const long before = resident_bytes();
    row->second();
    std::cout << row->first << ' ' << peak_resident_bytes() - before << '\n';
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
