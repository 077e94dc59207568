// The largest singular values of a layer's matrix T with SLEPc, across MPI
// ranks, from the assembled MATMPIAIJ and from the matrix-free MATSHELL;
// checked against the singular values of the dense T on one machine
// (Eigen's JacobiSVD of convmat::conv_matrix: Eigen 3.4.0's BDCSVD can be wrong
// on the repeated singular values convolution matrices have, README "Singular values").
//
//   mpirun -np 2 ./petsc_singular_values
#include <slepcsvd.h>

#include <convmat/convmat.hpp>
#include <convmat/petsc/petsc.hpp>

#include <Eigen/SVD>
#include <cstdio>
#include <vector>

#include "support.hpp"

namespace {

constexpr PetscInt wanted = 4;
constexpr double solver_tolerance = 1e-12;  // SLEPc's relative residual
constexpr double tolerance = 1e-9;          // relative agreement asserted

std::vector<double> largest_singular_values(Mat t, bool implicit_transpose) {
  SVD svd = nullptr;
  CONVMAT_PETSC_CALL(SVDCreate(PETSC_COMM_WORLD, &svd));
  try {
    CONVMAT_PETSC_CALL(SVDSetOperators(svd, t, nullptr));
    CONVMAT_PETSC_CALL(SVDSetImplicitTranspose(svd, implicit_transpose ? PETSC_TRUE : PETSC_FALSE));
    CONVMAT_PETSC_CALL(SVDSetWhichSingularTriplets(svd, SVD_LARGEST));
    CONVMAT_PETSC_CALL(SVDSetDimensions(svd, wanted, PETSC_DEFAULT, PETSC_DEFAULT));
    CONVMAT_PETSC_CALL(SVDSetTolerances(svd, solver_tolerance, 1000));
    CONVMAT_PETSC_CALL(SVDSetFromOptions(svd));
    CONVMAT_PETSC_CALL(SVDSolve(svd));
    PetscInt converged = 0;
    CONVMAT_PETSC_CALL(SVDGetConverged(svd, &converged));
    std::vector<double> sigma;
    for (PetscInt i = 0; i < std::min(converged, wanted); ++i) {
      PetscReal value = 0;
      CONVMAT_PETSC_CALL(SVDGetSingularTriplet(svd, i, &value, nullptr, nullptr));
      sigma.push_back(static_cast<double>(value));
    }
    SVDDestroy(&svd);
    return sigma;
  } catch (...) {
    SVDDestroy(&svd);
    throw;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (SlepcInitialize(&argc, &argv, nullptr, nullptr) != 0) return 1;
  bool ok = true;
  try {
    convmat::Conv2dSpec spec;  // Conv2d(3, 4, kernel_size=3, padding=1) on 12 x 12
    spec.in_channels = 3;
    spec.out_channels = 4;
    spec.input_size = {12, 12};
    spec.kernel_size = {3, 3};
    spec.padding = {1, 1};
    const Eigen::VectorXd w = example::pattern_vector(spec.weight_numel(), 0.3);

    std::vector<double> assembled, matrix_free;
    {
      const auto aij = convmat::petsc::conv_matrix_aij(PETSC_COMM_WORLD, spec, w);
      assembled = largest_singular_values(aij, false);
      const auto shell = convmat::petsc::conv_matrix_shell(PETSC_COMM_WORLD, spec, w);
      matrix_free = largest_singular_values(shell, true);
    }

    if (example::rank() == 0) {
      const auto dense = convmat::conv_matrix(spec, w);
      const Eigen::VectorXd reference = Eigen::JacobiSVD<Eigen::MatrixXd>(dense).singularValues();
      std::printf("T is %d x %d; its %d largest singular values (SLEPc tolerance %.0e):\n",
                  static_cast<int>(dense.rows()), static_cast<int>(dense.cols()), static_cast<int>(wanted),
                  solver_tolerance);
      std::printf("  %-22s %-22s %s\n", "JacobiSVD, one machine", "SLEPc, MATMPIAIJ", "SLEPc, MATSHELL");
      ok = assembled.size() == wanted && matrix_free.size() == wanted;
      double worst = 0;
      for (PetscInt i = 0; ok && i < wanted; ++i) {
        const double s = reference[i];
        std::printf("  %-22.10f %-22.10f %.10f\n", s, assembled[i], matrix_free[i]);
        for (const double v : {assembled[i], matrix_free[i]}) worst = std::max(worst, std::abs(v - s) / s);
      }
      ok = ok && worst <= tolerance;
      std::fprintf(stderr, "largest relative difference: %.2e\n", worst);
      std::printf("agree within %.0e (relative): %s\n", tolerance, ok ? "yes" : "NO");
    }
    MPI_Bcast(&ok, 1, MPI_C_BOOL, 0, PETSC_COMM_WORLD);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", example::rank(), e.what());
    ok = false;
  }
  SlepcFinalize();
  return ok ? 0 : 1;
}
