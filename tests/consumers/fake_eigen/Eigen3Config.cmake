# A stand-in for an Eigen package of any version, to check which versions
# convmat's package accepts: -DEigen3_DIR=<this folder>
# -DFAKE_EIGEN_VERSION=5.0.0 -DFAKE_EIGEN_INCLUDE_DIR=<a real Eigen's headers>.
if(NOT TARGET Eigen3::Eigen)
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${FAKE_EIGEN_INCLUDE_DIR}")
endif()
