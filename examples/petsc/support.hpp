// Shared by the PETSc examples: deterministic data (so every rank and the
// single-machine reference see the same numbers without communication),
// and gathering a distributed vector on rank 0 to compare with convmat.
#pragma once

#include <petscvec.h>

#include <Eigen/Core>
#include <cmath>

#include <convmat/petsc/petsc.hpp>

namespace example {

/// Entry i of a fixed pseudo-random pattern in [-1, 1].
inline double pattern(PetscInt i, double seed) { return std::sin(0.7 * static_cast<double>(i) + seed); }

/// The first n entries of the pattern, as an Eigen vector.
inline Eigen::VectorXd pattern_vector(Eigen::Index n, double seed) {
  Eigen::VectorXd v(n);
  for (Eigen::Index i = 0; i < n; ++i) v[i] = pattern(static_cast<PetscInt>(i), seed);
  return v;
}

/// Fills this rank's part of the distributed vector v with the pattern.
inline void fill(Vec v, double seed) {
  PetscInt begin = 0, end = 0;
  PetscScalar* local = nullptr;
  CONVMAT_PETSC_CALL(VecGetOwnershipRange(v, &begin, &end));
  CONVMAT_PETSC_CALL(VecGetArrayWrite(v, &local));
  for (PetscInt i = begin; i < end; ++i) local[i - begin] = pattern(i, seed);
  CONVMAT_PETSC_CALL(VecRestoreArrayWrite(v, &local));
}

/// The whole of v on rank 0 (empty on the other ranks). Collective.
inline Eigen::VectorXd gather(Vec v) {
  convmat::petsc::Owned<VecScatter> to_zero;
  convmat::petsc::Owned<Vec> whole;
  CONVMAT_PETSC_CALL(VecScatterCreateToZero(v, to_zero.out(), whole.out()));
  CONVMAT_PETSC_CALL(VecScatterBegin(to_zero, v, whole, INSERT_VALUES, SCATTER_FORWARD));
  CONVMAT_PETSC_CALL(VecScatterEnd(to_zero, v, whole, INSERT_VALUES, SCATTER_FORWARD));
  PetscInt n = 0;
  const PetscScalar* data = nullptr;
  CONVMAT_PETSC_CALL(VecGetLocalSize(whole, &n));
  CONVMAT_PETSC_CALL(VecGetArrayRead(whole, &data));
  Eigen::VectorXd out = Eigen::Map<const Eigen::VectorXd>(data, n);
  CONVMAT_PETSC_CALL(VecRestoreArrayRead(whole, &data));
  return out;
}

/// The relative difference max|a - b| / max|b| (0 when both are empty).
inline double relative_difference(const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
  if (b.size() == 0) return 0;
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

inline int rank() {
  int r = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &r);
  return r;
}

}  // namespace example
