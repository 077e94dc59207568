// Deblurring: undo a known blur by least squares on the layer's matrix.
//
// A synthetic test image (made here, no downloads) is blurred with a
// Gaussian kernel through convmat::convolve with replicate padding — the
// way a camera's blur meets the edge of the frame — and noise is added.
// The sharp image is then recovered as the Tikhonov-regularised
// least-squares solution argmin |T x - b|^2 + lambda |x|^2, twice:
//   1. Eigen::LeastSquaresConjugateGradient on the matrix-free operator
//      [T; sqrt(lambda) I] (convmat::tikhonov_operator) — no matrix at all;
//   2. the same solver on the sparse matrix [T; sqrt(lambda) I] built from
//      convmat::conv_matrix_sparse.
// It writes sharp.png, blurred.png, recovered.png and the three side by
// side in deblur.png, and prints the PSNR before and after.
//
// Usage: deblur [--size N] [--out DIR] [--lambda L] [--check]
//   --size N    image size N x N (default 128)
//   --out DIR   where the PNGs go (default: the current directory)
//   --lambda L  the Tikhonov weight (default 1e-3)
//   --check     exit with status 1 unless recovery gains at least 2 dB PSNR
//               over the blurred image and the two solutions agree to 1e-3
#include <convmat/convmat.hpp>
#include <convmat/operator.hpp>

#include <Eigen/IterativeLinearSolvers>
#include <Eigen/SparseCore>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace {

using Clock = std::chrono::steady_clock;
using Image = Eigen::VectorXd;  // n x n pixels in [0, 1], row after row (C order, as convmat flattens)

constexpr double required_gain_db = 2.0;  // what --check demands of the recovery

/// A test card: a gradient sky, discs, a ring, bars of several widths and
/// a checkerboard — sharp edges at every scale, so blur shows.
Image test_image(int n) {
  Image img(n * n);
  const double s = n;
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < n; ++c) {
      const double y = r / s, x = c / s;
      double v = 0.15 + 0.25 * x;                                              // gradient
      if (std::hypot(x - 0.28, y - 0.3) < 0.17) v = 0.9;                         // disc
      const double ring = std::hypot(x - 0.72, y - 0.28);
      if (ring > 0.1 && ring < 0.16) v = 0.75;                                   // ring
      if (y > 0.55 && y < 0.9 && x > 0.08 && x < 0.5)                            // bars, widening
        v = std::fmod(std::sqrt((x - 0.08) * 200), 2.0) < 1.0 ? 0.95 : 0.05;
      if (y > 0.58 && y < 0.88 && x > 0.6 && x < 0.9)                            // checkerboard
        v = ((static_cast<int>((x - 0.6) * 20) + static_cast<int>((y - 0.58) * 20)) % 2) ? 0.85 : 0.2;
      img(r * n + c) = v;
    }
  return img;
}

/// A normalised Gaussian kernel of size k x k.
Eigen::VectorXd gaussian_kernel(int k, double sigma) {
  Eigen::VectorXd w(k * k);
  const double centre = (k - 1) / 2.0;
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j)
      w(i * k + j) = std::exp(-((i - centre) * (i - centre) + (j - centre) * (j - centre)) / (2 * sigma * sigma));
  return w / w.sum();
}

Image clamped(const Image& img) { return img.cwiseMax(0.0).cwiseMin(1.0); }

/// Peak signal-to-noise ratio in dB of `img` (clamped to [0, 1], as shown)
/// against the reference.
double psnr(const Image& img, const Image& reference) {
  const double mse = (clamped(img) - reference).squaredNorm() / static_cast<double>(reference.size());
  return 10 * std::log10(1.0 / mse);
}

std::vector<unsigned char> to_bytes(const Image& img) {
  std::vector<unsigned char> bytes(static_cast<std::size_t>(img.size()));
  const Image c = clamped(img);
  for (Eigen::Index i = 0; i < c.size(); ++i) bytes[static_cast<std::size_t>(i)] = static_cast<unsigned char>(std::lround(255 * c(i)));
  return bytes;
}

bool write_png(const std::string& path, const std::vector<unsigned char>& bytes, int width, int height) {
  if (stbi_write_png(path.c_str(), width, height, 1, bytes.data(), width)) return true;
  std::cerr << "deblur: could not write " << path << "\n";
  return false;
}

/// The panels side by side on a white background, `gap` pixels apart.
std::vector<unsigned char> side_by_side(const std::vector<const Image*>& panels, int n, int gap) {
  const int width = static_cast<int>(panels.size()) * (n + gap) - gap;
  std::vector<unsigned char> out(static_cast<std::size_t>(width * n), 255);
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const auto bytes = to_bytes(*panels[p]);
    for (int r = 0; r < n; ++r)
      std::copy_n(bytes.begin() + r * n, n, out.begin() + r * width + static_cast<int>(p) * (n + gap));
  }
  return out;
}

/// Prints what is being done once the run has taken more than a second,
/// so a long run is never silent and a short one stays quiet.
class Progress {
 public:
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void step(const std::string& what) const {
    if (seconds() <= 1.0) return;
    std::fflush(stdout);
    std::fprintf(stderr, "[%6.1f s] %s\n", seconds(), what.c_str());
  }

 private:
  Clock::time_point start_ = Clock::now();
};

/// [T; sqrt(lambda) I] as a sparse matrix.
Eigen::SparseMatrix<double, Eigen::RowMajor> stacked_sparse(const convmat::SparseMatrix<double>& t, double lambda) {
  std::vector<Eigen::Triplet<double>> entries;
  entries.reserve(static_cast<std::size_t>(t.nonZeros() + t.cols()));
  for (Eigen::Index r = 0; r < t.outerSize(); ++r)
    for (convmat::SparseMatrix<double>::InnerIterator it(t, r); it; ++it)
      entries.emplace_back(static_cast<int>(r), static_cast<int>(it.col()), it.value());
  for (Eigen::Index c = 0; c < t.cols(); ++c)
    entries.emplace_back(static_cast<int>(t.rows() + c), static_cast<int>(c), std::sqrt(lambda));
  Eigen::SparseMatrix<double, Eigen::RowMajor> a(t.rows() + t.cols(), t.cols());
  a.setFromTriplets(entries.begin(), entries.end());
  return a;
}

/// The usage text: on stdout with status 0 for --help, on stderr with status 2 for a bad argument.
int usage(const char* program, bool asked = false) {
  (asked ? std::cout : std::cerr) << "usage: " << program << " [--size N] [--out DIR] [--lambda L] [--check]\n"
            << "  --size N    image size N x N, 16 <= N <= 2048 (default 128)\n"
            << "  --out DIR   directory for the PNGs (default .)\n"
            << "  --lambda L  Tikhonov weight, >= 0 (default 1e-3)\n"
            << "  --check     fail unless the recovery gains " << required_gain_db
            << " dB PSNR and both solutions agree\n"
            << "  -h, --help  this text\n";
  return asked ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 128;
  std::string out = ".";
  bool check = false;
  double lambda = 1e-3;  // Tikhonov weight: trades noise amplification against sharpness
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      return usage(argv[0], true);
    } else if (arg == "--size" && i + 1 < argc) {
      n = std::atoi(argv[++i]);
      if (n < 16 || n > 2048) return usage(argv[0]);
    } else if (arg == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (arg == "--lambda" && i + 1 < argc) {
      lambda = std::atof(argv[++i]);
      if (!(lambda >= 0)) return usage(argv[0]);
    } else if (arg == "--check") {
      check = true;
    } else {
      return usage(argv[0]);
    }
  }
  const Progress progress;

  // The blur: a 9 x 9 Gaussian (sigma 2 pixels), 'same' size, replicate padding.
  convmat::Conv2dSpec spec;
  spec.input_size = {n, n};
  spec.kernel_size = {9, 9};
  spec.padding_mode = convmat::PaddingMode::replicate;
  spec.set_padding_same();
  const Eigen::VectorXd kernel = gaussian_kernel(9, 2.0);

  const Image sharp = test_image(n);
  Image blurred = convmat::convolve(spec, kernel, sharp);
  std::mt19937_64 rng(42);
  std::normal_distribution<double> noise(0.0, 0.005);
  for (Eigen::Index i = 0; i < blurred.size(); ++i) blurred(i) += noise(rng);

  const int max_iterations = 300;

  // 1. Matrix-free: LSCG on [T; sqrt(lambda) I].
  progress.step("solving with the matrix-free operator");
  const auto t0 = Clock::now();
  const auto op = convmat::make_operator(spec, kernel);
  const auto stacked = convmat::tikhonov_operator(op, lambda);
  Eigen::LeastSquaresConjugateGradient<convmat::TikhonovOperator<double, 2>, Eigen::IdentityPreconditioner> lscg;
  lscg.setTolerance(1e-6);
  lscg.setMaxIterations(max_iterations);
  lscg.compute(stacked);
  const Image recovered = lscg.solve(stacked.rhs(blurred));
  const double operator_seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  // 2. The same through the sparse matrix.
  progress.step("solving with the sparse matrix");
  const auto t1 = Clock::now();
  const auto sparse = stacked_sparse(convmat::conv_matrix_sparse(spec, kernel), lambda);
  Eigen::LeastSquaresConjugateGradient<Eigen::SparseMatrix<double, Eigen::RowMajor>, Eigen::IdentityPreconditioner>
      sparse_lscg;
  sparse_lscg.setTolerance(1e-6);
  sparse_lscg.setMaxIterations(max_iterations);
  sparse_lscg.compute(sparse);
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(sparse.rows());
  rhs.head(blurred.size()) = blurred;
  const Image recovered_sparse = sparse_lscg.solve(rhs);
  const double sparse_seconds = std::chrono::duration<double>(Clock::now() - t1).count();

  progress.step("writing the images");
  const std::vector<unsigned char> panel = side_by_side({&sharp, &blurred, &recovered}, n, std::max(4, n / 32));
  const bool written = write_png(out + "/sharp.png", to_bytes(sharp), n, n) &&
                       write_png(out + "/blurred.png", to_bytes(blurred), n, n) &&
                       write_png(out + "/recovered.png", to_bytes(recovered), n, n) &&
                       write_png(out + "/deblur.png", panel, static_cast<int>(panel.size()) / n, n);

  const double before = psnr(blurred, sharp), after = psnr(recovered, sharp);
  const double after_sparse = psnr(recovered_sparse, sharp);
  const double difference = (recovered - recovered_sparse).cwiseAbs().maxCoeff();
  std::printf("image %d x %d, 9 x 9 Gaussian blur (sigma 2), replicate padding, noise sigma 0.005\n", n, n);
  std::printf("PSNR blurred:                %6.2f dB\n", before);
  std::printf("PSNR recovered (operator):   %6.2f dB  (LSCG, lambda %g, %ld iterations, %.2f s)\n", after, lambda,
              static_cast<long>(lscg.iterations()), operator_seconds);
  std::printf("PSNR recovered (sparse):     %6.2f dB  (LSCG, %ld iterations, %.2f s)\n", after_sparse,
              static_cast<long>(sparse_lscg.iterations()), sparse_seconds);
  std::printf("largest difference operator vs sparse: %.2e\n", difference);
  std::printf("gain: %+.2f dB; images in %s/{sharp,blurred,recovered,deblur}.png\n", after - before, out.c_str());
  std::fflush(stdout);
  if (!written) return 1;
  if (check) {
    const bool ok = after - before >= required_gain_db && difference < 1e-3;
    std::printf("check (gain >= %.1f dB, solutions agree to 1e-3): %s\n", required_gain_db, ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
  }
  return 0;
}
