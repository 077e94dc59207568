// CONVMAT_THROW and CONVMAT_ASSERT redefined by the user before including
// convmat: errors arrive as the user's own exception type, and every
// internal check goes through the user's macro. A program of its own: the
// macros change inline functions, which must not meet the default ones in
// one binary.
#include <cstdio>
#include <stdexcept>
#include <string>

namespace app {
struct layer_error : std::runtime_error {
  explicit layer_error(const std::string& message) : std::runtime_error("app: " + message) {}
};
inline long internal_checks = 0;
}  // namespace app

#define CONVMAT_THROW(message) throw ::app::layer_error(message)
#define CONVMAT_ASSERT(condition, message) \
  do {                                     \
    ++::app::internal_checks;              \
    if (!(condition)) CONVMAT_THROW(std::string("internal: ") + (message)); \
  } while (false)
#include <convmat/convmat.hpp>

namespace {
int failures = 0;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}
}  // namespace

int main() {
  convmat::Conv2dSpec spec;
  spec.input_size = {4, 4};
  spec.kernel_size = {5, 5};  // does not fit
  std::string message;
  try {
    spec.validate();
  } catch (const app::layer_error& e) {
    message = e.what();
  }
  check(message.rfind("app: convmat: kernel does not fit: input_size=(4, 4), kernel_size=(5, 5)", 0) == 0,
        "a bad spec throws the user's exception with convmat's message");

  spec.kernel_size = {3, 3};
  const Eigen::VectorXf w = Eigen::VectorXf::Ones(9);
  check(convmat::conv_matrix_sparse(spec, w).nonZeros() == 36, "a valid layer still works");
  check(app::internal_checks > 0, "CONVMAT_ASSERT goes through the user's macro");
  bool threw = false;
  try {
    convmat::conv_matrix(spec, Eigen::VectorXf::Ones(8));
  } catch (const app::layer_error&) {
    threw = true;
  }
  check(threw, "wrong weights throw the user's exception");
  threw = false;
  const auto saved = convmat::max_dense_bytes();
  convmat::set_max_dense_bytes(100);
  try {
    convmat::conv_matrix(spec, w);  // 4 x 16 floats: 256 bytes
  } catch (const app::layer_error& e) {
    threw = std::string(e.what()).find("more than max_dense_bytes() = 100") != std::string::npos;
  }
  convmat::set_max_dense_bytes(saved);
  check(threw, "the memory guard throws the user's exception too");
  std::printf("%s (%ld internal checks)\n", failures ? "custom CONVMAT_THROW: FAILED" : "custom CONVMAT_THROW: ok",
              app::internal_checks);
  return failures ? 1 : 0;
}
