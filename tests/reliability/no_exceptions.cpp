// convmat with -fno-exceptions: the whole library compiles, a valid layer
// works, and a bad one prints its message to stderr and aborts (the
// default CONVMAT_THROW without exceptions).
//   convmat_no_exceptions ok    prints the sum of a small layer's matrix
//   convmat_no_exceptions       builds a layer with stride 0: aborts
#include <convmat/convmat.hpp>

#include <cstdio>
#include <cstring>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "this test must be compiled with -fno-exceptions"
#endif

int main(int argc, char** argv) {
  convmat::Conv1dSpec spec;
  spec.input_size = {5};
  spec.kernel_size = {3};
  const bool valid = argc > 1 && std::strcmp(argv[1], "ok") == 0;
  if (!valid) spec.stride = {0};
  const Eigen::VectorXd w = Eigen::VectorXd::Ones(3);
  const auto t = convmat::conv_matrix(spec, w);             // aborts when !valid
  const auto s = convmat::conv_matrix_sparse(spec, w);
  std::printf("dense sum %g, sparse non-zeros %ld\n", t.sum(), static_cast<long>(s.nonZeros()));
  return 0;
}
