// Deblurring as a distributed least-squares problem: a sharp image x is
// blurred by a known 5 x 5 kernel ('full' convolution, so every pixel that
// touches the image is observed) plus a little noise, giving b; KSP's LSQR
// finds argmin ||T x - b|| across MPI ranks, with T assembled (MATMPIAIJ)
// and matrix-free (MATSHELL). Checked against the normal equations solved
// directly on one machine (Eigen's SimplicialLLT of T^T T).
//
//   mpirun -np 2 ./petsc_deblur
#include <petscksp.h>

#include <convmat/convmat.hpp>
#include <convmat/petsc/petsc.hpp>

#include <Eigen/SparseCholesky>
#include <cmath>
#include <cstdio>

#include "support.hpp"

namespace {

constexpr double solver_tolerance = 1e-12;  // KSP's relative tolerance
constexpr double tolerance = 1e-8;          // relative agreement asserted

/// 0.2 identity + 0.8 Gaussian (sigma 1) on 5 x 5, summing to 1: a blur
/// that loses no frequency entirely, so the problem is well posed.
Eigen::VectorXd blur_kernel() {
  Eigen::VectorXd k(25);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) k[i * 5 + j] = std::exp(-0.5 * ((i - 2) * (i - 2) + (j - 2) * (j - 2)));
  k *= 0.8 / k.sum();
  k[12] += 0.2;
  return k;
}

/// A sharp image: a bright square and a disc on a dark background.
double sharp(PetscInt pixel, PetscInt side) {
  const double i = static_cast<double>(pixel / side), j = static_cast<double>(pixel % side);
  const bool square = i >= 8 && i < 20 && j >= 6 && j < 18;
  const bool disc = (i - 26) * (i - 26) + (j - 26) * (j - 26) < 64;
  return square ? 1.0 : disc ? 0.6 : 0.1;
}

/// LSQR on t (no preconditioner): the solution, iterations and reason.
Eigen::VectorXd lsqr(Mat t, Vec b, PetscInt* iterations, KSPConvergedReason* reason) {
  KSP ksp = nullptr;
  PC pc = nullptr;
  convmat::petsc::Owned<Vec> x;
  CONVMAT_PETSC_CALL(MatCreateVecs(t, x.out(), nullptr));
  CONVMAT_PETSC_CALL(KSPCreate(PETSC_COMM_WORLD, &ksp));
  try {
    CONVMAT_PETSC_CALL(KSPSetOperators(ksp, t, t));
    CONVMAT_PETSC_CALL(KSPSetType(ksp, KSPLSQR));
    CONVMAT_PETSC_CALL(KSPGetPC(ksp, &pc));
    CONVMAT_PETSC_CALL(PCSetType(pc, PCNONE));
    CONVMAT_PETSC_CALL(KSPSetTolerances(ksp, solver_tolerance, 1e-30, PETSC_DEFAULT, 5000));
    CONVMAT_PETSC_CALL(KSPSetFromOptions(ksp));
    CONVMAT_PETSC_CALL(KSPSolve(ksp, b, x));
    CONVMAT_PETSC_CALL(KSPGetIterationNumber(ksp, iterations));
    CONVMAT_PETSC_CALL(KSPGetConvergedReason(ksp, reason));
  } catch (...) {
    KSPDestroy(&ksp);
    throw;
  }
  KSPDestroy(&ksp);
  return example::gather(x);
}

}  // namespace

int main(int argc, char** argv) {
  if (PetscInitialize(&argc, &argv, nullptr, nullptr) != 0) return 1;
  bool ok = true;
  try {
    constexpr PetscInt side = 40;
    convmat::Conv2dSpec spec;  // 'full' padding: output 44 x 44
    spec.input_size = {side, side};
    spec.kernel_size = {5, 5};
    spec.padding = {4, 4};
    const Eigen::VectorXd k = blur_kernel();

    // Observed b = T x_sharp + noise, made on one machine and scattered by
    // each rank filling its own part (T applied in PETSc, noise by index).
    Eigen::VectorXd x_sharp(spec.input_numel());
    for (PetscInt i = 0; i < spec.input_numel(); ++i) x_sharp[i] = sharp(i, side);
    const Eigen::VectorXd b_all =
        convmat::convolve(spec, k, x_sharp) + 1e-3 * example::pattern_vector(spec.output_numel(), 0.5);

    Eigen::VectorXd assembled, matrix_free;
    PetscInt iterations[2] = {0, 0};
    KSPConvergedReason reasons[2] = {KSP_CONVERGED_ITERATING, KSP_CONVERGED_ITERATING};
    {
      const auto aij = convmat::petsc::conv_matrix_aij(PETSC_COMM_WORLD, spec, k);
      const auto shell = convmat::petsc::conv_matrix_shell(PETSC_COMM_WORLD, spec, k);
      convmat::petsc::Owned<Vec> b;
      CONVMAT_PETSC_CALL(MatCreateVecs(aij, nullptr, b.out()));
      PetscInt begin = 0, end = 0;
      CONVMAT_PETSC_CALL(VecGetOwnershipRange(b, &begin, &end));
      for (PetscInt i = begin; i < end; ++i) CONVMAT_PETSC_CALL(VecSetValue(b, i, b_all[i], INSERT_VALUES));
      CONVMAT_PETSC_CALL(VecAssemblyBegin(b));
      CONVMAT_PETSC_CALL(VecAssemblyEnd(b));
      assembled = lsqr(aij, b, &iterations[0], &reasons[0]);
      matrix_free = lsqr(shell, b, &iterations[1], &reasons[1]);
    }

    if (example::rank() == 0) {
      const convmat::SparseMatrix<double> t = convmat::conv_matrix_sparse(spec, k);
      const Eigen::SparseMatrix<double> normal = t.transpose() * t;
      const Eigen::SimplicialLLT<Eigen::SparseMatrix<double>> cholesky(normal);
      const Eigen::VectorXd direct = cholesky.solve(t.transpose() * b_all);
      const double e_assembled = (assembled - direct).norm() / direct.norm();
      const double e_matrix_free = (matrix_free - direct).norm() / direct.norm();
      std::printf("deblurring a %d x %d image, T is %d x %d (KSPLSQR, rtol %.0e, no preconditioner)\n",
                  static_cast<int>(side), static_cast<int>(side), static_cast<int>(t.rows()),
                  static_cast<int>(t.cols()), solver_tolerance);
      std::printf("  direct solve on one machine: ||x - x_sharp|| / ||x_sharp|| = %.1e\n",
                  (direct - x_sharp).norm() / x_sharp.norm());
      const char* names[2] = {"MATMPIAIJ", "MATSHELL "};
      const double errors[2] = {e_assembled, e_matrix_free};
      for (int i = 0; i < 2; ++i) {
        const bool good = reasons[i] > 0 && errors[i] <= tolerance;
        std::printf("  LSQR on %s converged and equals the direct solve within %.0e: %s\n", names[i], tolerance,
                    good ? "yes" : "NO");
        std::fprintf(stderr, "  %s: %d iterations, reason %d, relative difference %.2e\n", names[i],
                     static_cast<int>(iterations[i]), static_cast<int>(reasons[i]), errors[i]);
        ok = ok && good;
      }
    }
    MPI_Bcast(&ok, 1, MPI_C_BOOL, 0, PETSC_COMM_WORLD);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", example::rank(), e.what());
    ok = false;
  }
  PetscFinalize();
  return ok ? 0 : 1;
}
