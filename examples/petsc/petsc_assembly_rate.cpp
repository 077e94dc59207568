// Measures, per rank, how fast conv_matrix_aij builds and assembles a
// layer's rows (non-zeros per second), and how long one product takes in
// each form. Square layers: C -> C channels, N^dims voxels, K^dims kernel,
// 'same' zero padding. The figures of docs/scaling.md come from it.
//
//   mpirun -np 2 ./petsc_assembly_rate -dims 3 -channels 4 -size 32 -kernel 3
//   mpirun -np 2 ./petsc_assembly_rate -smoke        (a tiny run for ctest)
#include <convmat/convmat.hpp>
#include <convmat/petsc/petsc.hpp>

#include <cstdio>

#include "support.hpp"

namespace {

struct Timing {
  double build = 0, assembly = 0, aij_mult = 0, shell_setup = 0, shell_mult = 0;
  PetscInt nonzeros = 0, rows = 0;
};

template <int Rank>
Timing measure(PetscInt channels, PetscInt size, PetscInt kernel) {
  convmat::ConvSpec<Rank> spec;
  spec.in_channels = spec.out_channels = channels;
  spec.input_size.fill(size);
  spec.kernel_size.fill(kernel);
  spec.padding.fill(kernel / 2);
  const Eigen::VectorXd w = example::pattern_vector(spec.weight_numel(), 0.3);

  const auto s = convmat::matrix_size<double, PetscInt>(spec);
  PetscPrintf(PETSC_COMM_WORLD, "layer: %dD, %d -> %d channels, %d^%d voxels, kernel %d^%d: T is %lld x %lld, %lld non-zeros, %.3g GB as CSR (double, int)\n",
              Rank, static_cast<int>(channels), static_cast<int>(channels), static_cast<int>(size), Rank,
              static_cast<int>(kernel), Rank, static_cast<long long>(s.rows), static_cast<long long>(s.cols),
              static_cast<long long>(s.nonzeros), static_cast<double>(s.sparse_bytes) / 1e9);

  Timing t;
  convmat::petsc::AssemblyReport report;
  MPI_Barrier(PETSC_COMM_WORLD);
  const auto aij = convmat::petsc::conv_matrix_aij(PETSC_COMM_WORLD, spec, w, &report);
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
    PetscInt dims = 3, channels = 4, size = 32, kernel = 3;
    PetscBool smoke = PETSC_FALSE;
    CONVMAT_PETSC_CALL(PetscOptionsGetBool(nullptr, nullptr, "-smoke", &smoke, nullptr));
    if (smoke) channels = 2, size = 8;
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-dims", &dims, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-channels", &channels, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-size", &size, nullptr));
    CONVMAT_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, "-kernel", &kernel, nullptr));
    const Timing t = dims == 2 ? measure<2>(channels, size, kernel) : measure<3>(channels, size, kernel);
    PetscSynchronizedPrintf(
        PETSC_COMM_WORLD,
        "rank %d: %d rows, %d non-zeros; build %.3f s + assembly %.3f s = %.3g non-zeros/s; "
        "MatMult %.4f s assembled, %.4f s matrix-free (setup %.4f s)\n",
        example::rank(), static_cast<int>(t.rows), static_cast<int>(t.nonzeros), t.build, t.assembly,
        static_cast<double>(t.nonzeros) / (t.build + t.assembly), t.aij_mult, t.shell_mult, t.shell_setup);
    PetscSynchronizedFlush(PETSC_COMM_WORLD, PETSC_STDOUT);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", example::rank(), e.what());
    status = 1;
  }
  PetscFinalize();
  return status;
}
