// A layer's matrix T across MPI ranks, in both PETSc forms: assembled
// (MATMPIAIJ, each rank building only its own rows) and matrix-free
// (MATSHELL, halo exchanged by a VecScatter). Checks T x and T^T y of both
// against convmat on one machine, for a 2-D layer with stride and a 3-D
// layer with groups, dilation and reflect padding.
//
//   mpirun -np 2 ./petsc_assemble
#include <convmat/convmat.hpp>
#include <convmat/petsc/petsc.hpp>

#include <cstdio>

#include "support.hpp"

namespace {

constexpr double tolerance = 1e-13;  // relative, max norm: only the summation order differs

template <int Rank>
bool check(const char* name, const convmat::ConvSpec<Rank>& spec) {
  using convmat::petsc::Owned;
  const Eigen::VectorXd w = example::pattern_vector(spec.weight_numel(), 0.3);

  convmat::petsc::AssemblyReport report;
  const auto aij = convmat::petsc::conv_matrix_aij(PETSC_COMM_WORLD, spec, w, &report);
  const auto shell = convmat::petsc::conv_matrix_shell(PETSC_COMM_WORLD, spec, w);

  Owned<Vec> x, y, t;
  CONVMAT_PETSC_CALL(MatCreateVecs(aij, x.out(), y.out()));
  CONVMAT_PETSC_CALL(VecDuplicate(x, t.out()));
  example::fill(x, 1.1);
  CONVMAT_PETSC_CALL(MatMult(aij, x, y));
  const Eigen::VectorXd aij_x = example::gather(y);
  CONVMAT_PETSC_CALL(MatMult(shell, x, y));
  const Eigen::VectorXd shell_x = example::gather(y);
  example::fill(y, 2.3);
  CONVMAT_PETSC_CALL(MatMultTranspose(aij, y, t));
  const Eigen::VectorXd aij_t = example::gather(t);
  CONVMAT_PETSC_CALL(MatMultTranspose(shell, y, t));
  const Eigen::VectorXd shell_t = example::gather(t);

  PetscInt nonzeros = 0;
  double mallocs = 0;
  MPI_Reduce(&report.nonzeros, &nonzeros, 1, MPIU_INT, MPI_SUM, 0, PETSC_COMM_WORLD);
  MPI_Reduce(&report.mallocs, &mallocs, 1, MPI_DOUBLE, MPI_SUM, 0, PETSC_COMM_WORLD);
  PetscPrintf(PETSC_COMM_WORLD, "%s: T is %d x %d\n", name, static_cast<int>(report.ownership.rows),
              static_cast<int>(report.ownership.cols));
  PetscSynchronizedPrintf(PETSC_COMM_WORLD, "  rank %d: rows [%d, %d), %d non-zeros, %d in its own columns\n",
                          example::rank(), static_cast<int>(report.ownership.row_begin),
                          static_cast<int>(report.ownership.row_end), static_cast<int>(report.nonzeros),
                          static_cast<int>(report.diagonal_nonzeros));
  PetscSynchronizedFlush(PETSC_COMM_WORLD, PETSC_STDOUT);

  bool ok = true;
  if (example::rank() == 0) {
    const Eigen::VectorXd xs = example::pattern_vector(spec.input_numel(), 1.1);
    const Eigen::VectorXd ys = example::pattern_vector(spec.output_numel(), 2.3);
    const Eigen::VectorXd tx = convmat::convolve(spec, w, xs);
    const Eigen::VectorXd tty = convmat::conv_matrix_sparse(spec, w).transpose() * ys;
    const bool same_count = nonzeros == convmat::conv_matrix_nonzeros(spec);
    const double e[4] = {example::relative_difference(aij_x, tx), example::relative_difference(shell_x, tx),
                         example::relative_difference(aij_t, tty), example::relative_difference(shell_t, tty)};
    std::printf("  non-zeros: %d, as conv_matrix_nonzeros: %s; mallocs during assembly: %g\n",
                static_cast<int>(nonzeros), same_count ? "yes" : "NO", mallocs);
    const char* what[4] = {"MATMPIAIJ T x  ", "MATSHELL  T x  ", "MATMPIAIJ T^T y", "MATSHELL  T^T y"};
    for (int i = 0; i < 4; ++i) {
      std::printf("  %s equals convmat's within %.0e: %s\n", what[i], tolerance, e[i] <= tolerance ? "yes" : "NO");
      ok = ok && e[i] <= tolerance;
      std::fprintf(stderr, "  %s: relative difference %.2e\n", what[i], e[i]);
    }
    ok = ok && same_count && mallocs == 0;
  }
  MPI_Bcast(&ok, 1, MPI_C_BOOL, 0, PETSC_COMM_WORLD);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (PetscInitialize(&argc, &argv, nullptr, nullptr) != 0) return 1;
  bool ok = false;
  try {
    convmat::Conv2dSpec image;  // Conv2d(3, 5, kernel_size=3, stride=2, padding=1) on 11 x 9
    image.in_channels = 3;
    image.out_channels = 5;
    image.input_size = {11, 9};
    image.kernel_size = {3, 3};
    image.stride = {2, 2};
    image.padding = {1, 1};

    convmat::Conv3dSpec volume;  // Conv3d(4, 6, (3, 2, 3), groups=2, dilation=(1, 2, 1), padding=1, 'reflect')
    volume.in_channels = 4;
    volume.out_channels = 6;
    volume.groups = 2;
    volume.input_size = {5, 6, 7};
    volume.kernel_size = {3, 2, 3};
    volume.dilation = {1, 2, 1};
    volume.padding = {1, 1, 1};
    volume.padding_mode = convmat::PaddingMode::reflect;

    const bool first = check("2-D layer, stride 2", image);
    const bool second = check("3-D layer, groups 2, reflect padding", volume);
    ok = first && second;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", example::rank(), e.what());
    PetscFinalize();
    return 1;
  }
  PetscFinalize();
  return ok ? 0 : 1;
}
