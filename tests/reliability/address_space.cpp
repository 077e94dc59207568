// Under a 4 GiB address-space limit (setrlimit(RLIMIT_AS), what `ulimit -v`
// sets), the layers of issue 16 are refused with memory_limit_error before
// anything is allocated — never std::bad_alloc — and a layer whose tap
// lists once took 256 MiB of scratch builds in 16 MiB.
//
// Under AddressSanitizer the limit is not set (ASan reserves terabytes of
// shadow memory); its allocator then reports any allocation over its own
// maximum, so the refusals are still checked.
#include <convmat/convmat.hpp>

#include <sys/resource.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <new>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#define CONVMAT_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONVMAT_UNDER_ASAN 1
#endif
#endif

namespace {

using convmat::Index;
[[maybe_unused]] constexpr std::size_t gib = std::size_t{1} << 30;  // unused under ASan
int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  failures += !ok;
}

/// The process's peak resident memory so far, in KiB.
long peak_rss_kib() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

/// Runs `build` and checks that it is refused with memory_limit_error.
void expect_refused(const char* what, const std::function<void()>& build) {
  std::string outcome = "built";
  bool refused = false;
  try {
    build();
  } catch (const convmat::memory_limit_error& e) {
    refused = true;
    outcome = e.what();
  } catch (const std::bad_alloc&) {
    outcome = "std::bad_alloc";
  } catch (const std::exception& e) {
    outcome = std::string("another exception: ") + e.what();
  }
  check(refused, std::string(what) + " -> " + outcome);
}

/// Conv2d(64, 64, 3, padding=1) on 4096 x 4096: a 2^30 x 2^30 matrix with
/// 618 billion non-zeros (9.9 TB with 64-bit indices).
convmat::Conv2dSpec issue_layer() {
  convmat::Conv2dSpec s;
  s.in_channels = s.out_channels = 64;
  s.input_size = {4096, 4096};
  s.kernel_size = {3, 3};
  s.padding = {1, 1};
  return s;
}

convmat::ConvTranspose2dSpec issue_transposed_layer() {
  convmat::ConvTranspose2dSpec t;
  t.in_channels = t.out_channels = 64;
  t.input_size = {4096, 4096};
  t.kernel_size = {3, 3};
  t.padding = {1, 1};
  return t;
}

}  // namespace

int main() {
#ifndef CONVMAT_UNDER_ASAN
  const struct rlimit limit {4 * gib, 4 * gib};
  if (::setrlimit(RLIMIT_AS, &limit) != 0) {
    std::perror("setrlimit(RLIMIT_AS, 4 GiB)");
    return 1;
  }
  // The default guard follows the address space: half of it.
  check(convmat::max_dense_bytes() == 2 * gib,
        "max_dense_bytes() = " + std::to_string(convmat::max_dense_bytes()) + " under a 4 GiB address space");
#else
  std::printf("AddressSanitizer: no address-space limit set; its allocator checks the sizes\n");
#endif

  const auto conv = issue_layer();
  const Eigen::VectorXf w = Eigen::VectorXf::Ones(conv.weight_numel());
  expect_refused("conv_matrix_sparse<std::int64_t> of Conv2d(64, 64, 3, padding=1) on 4096 x 4096",
                 [&] { convmat::conv_matrix_sparse<std::int64_t>(conv, w); });
  expect_refused("conv_matrix_sparse_rows<std::int64_t>, its first 2^24 rows",
                 [&] { convmat::conv_matrix_sparse_rows<std::int64_t>(conv, w, 0, Index(1) << 24); });
  expect_refused("conv_matrix of the same layer", [&] { convmat::conv_matrix(conv, w); });
  const auto transposed = issue_transposed_layer();
  expect_refused("conv_transpose_matrix_sparse<std::int64_t> of ConvTranspose2d(64, 64, 3, padding=1) on 4096 x 4096",
                 [&] { convmat::conv_transpose_matrix_sparse<std::int64_t>(transposed, w); });
  // The FFT path of singular_values: every frequency's 512 x 512 matrix.
  convmat::Conv2dSpec circular;
  circular.in_channels = circular.out_channels = 512;
  circular.input_size = {2048, 2048};
  circular.kernel_size = {3, 3};
  circular.padding = {1, 1};
  circular.padding_mode = convmat::PaddingMode::circular;
  const Eigen::VectorXf circular_w = Eigen::VectorXf::Ones(circular.weight_numel());
  expect_refused("singular_values of Conv2d(512, 512, 3, padding=1, circular) on 2048 x 2048",
                 [&] { convmat::singular_values(circular, circular_w); });
  expect_refused("spectral_norm_bound of the same layer", [&] { convmat::spectral_norm_bound(circular, circular_w); });
  convmat::UpsampleSpec<2> up;
  up.channels = 64;
  up.input_size = {4096, 4096};
  up.scale = {2, 2};
  expect_refused("upsample_nearest_matrix_sparse<float, std::int64_t> x2 of 64 x 4096 x 4096",
                 [&] { convmat::upsample_nearest_matrix_sparse<float, std::int64_t>(up); });

  // Replicate padding far wider than a 1 x 1 input: each of the 256 outputs
  // reads all 65536 taps of a 256 x 256 kernel. The tap lists of 256
  // positions at once took 256 MiB; a block of 16 positions takes 16 MiB.
  // (Under ASan, which only looks for bad accesses here, a 128 x 128 kernel
  // in blocks of 64 positions, 16 times less work.)
#ifndef CONVMAT_UNDER_ASAN
  constexpr Index kernel = 256;
#else
  constexpr Index kernel = 128;
#endif
  convmat::Conv2dSpec wide;
  wide.input_size = {1, 1};
  wide.kernel_size = {kernel, kernel};
  wide.padding = {(kernel + 14) / 2, (kernel + 14) / 2};  // output 1 + kernel + 14 - kernel + 1 = 16 per axis
  wide.padding_mode = convmat::PaddingMode::replicate;
  const Eigen::VectorXf ones = Eigen::VectorXf::Ones(wide.weight_numel());
  const long peak_before = peak_rss_kib();
  std::string outcome;
  bool built = false;
  try {
    const auto t = convmat::conv_matrix_sparse(wide, ones);
    built = t.rows() == 256 && t.cols() == 1 && t.nonZeros() == 256 &&
            (t.coeffs().array() == static_cast<float>(kernel * kernel)).all();
    outcome = std::to_string(t.rows()) + " x " + std::to_string(t.cols()) + ", " + std::to_string(t.nonZeros()) +
              " non-zeros, each " + std::to_string(t.coeffs()(0));
  } catch (const std::exception& e) {
    outcome = e.what();
  }
  check(built, "replicate padding " + std::to_string(wide.padding[0]) + " around a 1 x 1 input, kernel " +
                   std::to_string(kernel) + " x " + std::to_string(kernel) + " -> " + outcome);
#ifndef CONVMAT_UNDER_ASAN  // ASan keeps freed memory in quarantine: its peak says nothing
  const long grown_mib = (peak_rss_kib() - peak_before) / 1024;
  check(grown_mib < 64, "its tap lists took " + std::to_string(grown_mib) + " MiB at the peak (less than 64)");
#else
  (void)peak_before;
#endif

  std::printf("%s\n", failures ? "FAILED" : "all refused before allocating, nothing ran out of memory");
  return failures ? 1 : 0;
}
