// T split over MPI ranks, each building only its own rows straight into
// PETSc: mpiexec -n 2 ./petsc_quickstart (as root: mpiexec --allow-run-as-root -n 2 ...)
#include <convmat/petsc/petsc.hpp>

int main(int argc, char** argv) {
  if (PetscInitialize(&argc, &argv, nullptr, nullptr) != 0) return 1;
  {
    convmat::Conv2dSpec spec;  // Conv2d(8, 16, kernel_size=3, padding=1) on 32 x 32
    spec.in_channels = 8;
    spec.out_channels = 16;
    spec.input_size = {32, 32};
    spec.kernel_size = {3, 3};
    spec.padding = {1, 1};
    const Eigen::VectorXd w = Eigen::VectorXd::Ones(spec.weight_numel());

    convmat::petsc::AssemblyReport r;
    const auto t = convmat::petsc::conv_matrix_aij(PETSC_COMM_WORLD, spec, w, &r);  // a MATMPIAIJ
    const auto shell = convmat::petsc::conv_matrix_shell(PETSC_COMM_WORLD, spec, w);  // matrix-free
    PetscReal norm = 0;
    MatNorm(t, NORM_FROBENIUS, &norm);  // all weights 1: sqrt(non-zeros)
    PetscSynchronizedPrintf(PETSC_COMM_WORLD, "rows [%d, %d): %d non-zeros, %d mallocs\n",
                            int(r.ownership.row_begin), int(r.ownership.row_end), int(r.nonzeros), int(r.mallocs));
    PetscSynchronizedFlush(PETSC_COMM_WORLD, PETSC_STDOUT);
    PetscPrintf(PETSC_COMM_WORLD, "||T||_F^2 = %.0f\n", double(norm * norm));
  }  // PETSc objects go before PetscFinalize
  return PetscFinalize();
}
