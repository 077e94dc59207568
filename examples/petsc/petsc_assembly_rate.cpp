// Measures, per rank, how fast conv_matrix_aij builds and assembles a
// layer's rows (non-zeros per second), and how long one product takes in
// each form. Layers: C_in -> C_out channels, N^dims voxels, K^dims kernel,
// stride S, zero padding K / 2. With -plan it assembles nothing and prints
// what the layer needs per rank instead. docs/scaling.md comes from it.
//
//   mpirun -np 2 ./petsc_assembly_rate -dims 3 -channels 4 -size 32 -kernel 3
//   ./petsc_assembly_rate -dims 3 -channels 32 -size 128 -plan -budget 4
//   ./petsc_assembly_rate -dims 2 -in 3 -out 64 -size 224 -kernel 7 -stride 2 -plan
//   mpirun -np 2 ./petsc_assembly_rate -smoke        (a tiny run for ctest)
#include <convmat/convmat.hpp>
#include <convmat/petsc/petsc.hpp>

#include <cmath>
#include <cstdio>

#include "support.hpp"

namespace {

struct Timing {
  double build = 0, assembly = 0, aij_mult = 0, shell_setup = 0, shell_mult = 0;
  double aij_bytes = 0;  ///< growth of the resident set while assembling
  PetscInt nonzeros = 0, rows = 0, chunks = 0;
};

struct Layer {
  PetscInt in = 4, out = 4, size = 32, kernel = 3, stride = 1;
  PetscInt chunk_mb = 16;  ///< conv_matrix_aij's row-block budget (its default)
};

/// What the layer needs per rank on R ranks: the CSR bytes of its rows
/// (what a MATMPIAIJ stores, within the row offsets) and the ranks needed
/// for a per-rank memory budget and for 32-bit PetscInt local non-zeros.
template <int Rank>
void plan(const convmat::ConvSpec<Rank>& spec, double budget_gb) {
  const auto s = convmat::matrix_size<double, PetscInt>(spec);
  const double bytes = static_cast<double>(s.sparse_bytes);
  const double vectors = 8.0 * static_cast<double>(s.rows + s.cols);
  const double need = std::ceil((bytes + vectors) / (budget_gb * 1e9));
  const double index = std::ceil(static_cast<double>(s.nonzeros) / 2147483647.0);
  PetscPrintf(PETSC_COMM_WORLD, "ranks for %.0f GB per rank: %.0f; for local non-zeros < 2^31: %.0f\n", budget_gb,
              need, index);
  for (const double ranks : {1.0, 16.0, 64.0, 256.0, 1024.0})
    PetscPrintf(PETSC_COMM_WORLD, "  %5.0f ranks: %9.3f GB of matrix + %7.4f GB of x and T x per rank\n", ranks,
                bytes / ranks / 1e9, vectors / ranks / 1e9);
}

template <int Rank>
Timing measure(const Layer& layer, bool plan_only, double budget_gb) {
  convmat::ConvSpec<Rank> spec;
  spec.in_channels = layer.in;
  spec.out_channels = layer.out;
  spec.input_size.fill(layer.size);
  spec.kernel_size.fill(layer.kernel);
  spec.stride.fill(layer.stride);
  spec.padding.fill(layer.kernel / 2);

  const auto s = convmat::matrix_size<double, PetscInt>(spec);
  PetscPrintf(PETSC_COMM_WORLD,
              "layer: %dD, %d -> %d channels, %d^%d voxels, kernel %d^%d, stride %d: T is %lld x %lld, %lld "
              "non-zeros, %.4g GB as CSR (double, int)\n",
              Rank, static_cast<int>(layer.in), static_cast<int>(layer.out), static_cast<int>(layer.size), Rank,
              static_cast<int>(layer.kernel), Rank, static_cast<int>(layer.stride), static_cast<long long>(s.rows),
              static_cast<long long>(s.cols), static_cast<long long>(s.nonzeros),
              static_cast<double>(s.sparse_bytes) / 1e9);
  if (plan_only) {
    plan(spec, budget_gb);
    return {};
  }
  const Eigen::VectorXd w = example::pattern_vector(spec.weight_numel(), 0.3);

  Timing t;
  convmat::petsc::AssemblyReport report;
  MPI_Barrier(PETSC_COMM_WORLD);
  PetscLogDouble before = 0, after = 0;
  CONVMAT_PETSC_CALL(PetscMemoryGetCurrentUsage(&before));
  const auto aij = convmat::petsc::conv_matrix_aij(PETSC_COMM_WORLD, spec, w, &report,
                                                    static_cast<std::size_t>(layer.chunk_mb) << 20);
  CONVMAT_PETSC_CALL(PetscMemoryGetCurrentUsage(&after));
  t.chunks = report.chunks;
  t.aij_bytes = after - before;
  t.build = report.build_seconds;
  t.assembly = report.assembly_seconds;
  t.nonzeros = report.nonzeros;
  t.rows = report.ownership.local_rows();

  convmat::petsc::Owned<Vec> x, y;
  CONVMAT_PETSC_CALL(MatCreateVecs(aij, x.out(), y.out()));
  example::fill(x, 1.1);
  MPI_Barrier(PETSC_COMM_WORLD);
  double clock = MPI_Wtime();
  CONVMAT_PETSC_CALL(MatMult(aij, x, y));
  t.aij_mult = MPI_Wtime() - clock;

  clock = MPI_Wtime();
  const auto shell = convmat::petsc::conv_matrix_shell(PETSC_COMM_WORLD, spec, w);
  t.shell_setup = MPI_Wtime() - clock;
  MPI_Barrier(PETSC_COMM_WORLD);
  clock = MPI_Wtime();
  CONVMAT_PETSC_CALL(MatMult(shell, x, y));
  t.shell_mult = MPI_Wtime() - clock;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (PetscInitialize(&argc, &argv, nullptr, nullptr) != 0) return 1;
  int status = 0;
  try {
    PetscInt dims = 3;
    Layer layer;
    PetscBool smoke = PETSC_FALSE, plan_only = PETSC_FALSE;
    PetscReal budget_gb = 4;
    CONVMAT_PETSC_CALL(PetscOptionsGetBool(nullptr, nullptr, "-smoke", &smoke, nullptr));
    if (smoke) layer.in = layer.out = 2, layer.size = 8;
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-dims", &dims, nullptr));
    PetscInt channels = 0;
    PetscBool set = PETSC_FALSE;
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-channels", &channels, &set));
    if (set) layer.in = layer.out = channels;
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-in", &layer.in, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-out", &layer.out, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-size", &layer.size, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-kernel", &layer.kernel, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-stride", &layer.stride, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-chunk_mb", &layer.chunk_mb, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetBool(nullptr, nullptr, "-plan", &plan_only, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetReal(nullptr, nullptr, "-budget", &budget_gb, nullptr));
    const Timing t = dims == 2 ? measure<2>(layer, plan_only, budget_gb) : measure<3>(layer, plan_only, budget_gb);
    if (plan_only) {
      PetscFinalize();
      return 0;
    }
    PetscSynchronizedPrintf(
        PETSC_COMM_WORLD,
        "rank %d: %d rows, %d non-zeros, %d row blocks; build %.3f s + assembly %.3f s = %.3g non-zeros/s; "
        "resident set +%.3g GB; MatMult %.4f s assembled, %.4f s matrix-free (setup %.4f s)\n",
        example::rank(), static_cast<int>(t.rows), static_cast<int>(t.nonzeros), static_cast<int>(t.chunks), t.build, t.assembly,
        static_cast<double>(t.nonzeros) / (t.build + t.assembly), t.aij_bytes / 1e9, t.aij_mult, t.shell_mult, t.shell_setup);
    PetscSynchronizedFlush(PETSC_COMM_WORLD, PETSC_STDOUT);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", example::rank(), e.what());
    status = 1;
  }
  PetscFinalize();
  return status;
}
