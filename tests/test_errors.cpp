// Every kind of bad input, at every public entry point, is a
// convmat::spec_error whose message names the values involved — thrown
// before anything is allocated. One row per kind in the table below; set
// CONVMAT_PRINT_ERRORS=1 to print the table (kind | message) while it runs.
#include <convmat/convmat.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "support/catch.hpp"

using convmat::Index;

namespace {

constexpr Index index_max = std::numeric_limits<Index>::max();

/// Sets max_dense_bytes() for one scope.
class DenseLimit {
 public:
  explicit DenseLimit(std::size_t bytes) : saved_(convmat::max_dense_bytes()) {
    convmat::set_max_dense_bytes(bytes);
  }
  ~DenseLimit() { convmat::set_max_dense_bytes(saved_); }
  DenseLimit(const DenseLimit&) = delete;
  DenseLimit& operator=(const DenseLimit&) = delete;

 private:
  std::size_t saved_;
};

/// A valid 2-D layer: 4 -> 6 channels, 7 x 9 input, 3 x 3 kernel; output
/// 6 x 5 x 7 = 210, input 252, weights 216.
convmat::Conv2dSpec layer() {
  convmat::Conv2dSpec s;
  s.in_channels = 4;
  s.out_channels = 6;
  s.input_size = {7, 9};
  s.kernel_size = {3, 3};
  return s;
}

/// A valid 1-D transposed layer: 2 -> 3 channels, input 4, kernel 3,
/// stride 2: output 9, weights 2 * 3 * 3 = 18.
convmat::ConvTranspose1dSpec transposed() {
  convmat::ConvTranspose1dSpec t;
  t.in_channels = 2;
  t.out_channels = 3;
  t.input_size = {4};
  t.kernel_size = {3};
  t.stride = {2};
  return t;
}

/// The layer: Conv2d(64, 64, 3, padding=1) on 4096 x 4096, whose
/// matrix is 2^30 x 2^30 with 618 billion non-zeros.
convmat::Conv2dSpec big_layer() {
  convmat::Conv2dSpec s;
  s.in_channels = s.out_channels = 64;
  s.input_size = {4096, 4096};
  s.kernel_size = {3, 3};
  s.padding = {1, 1};
  return s;
}

/// ConvTranspose2d(64, 64, 3, padding=1) on 4096 x 4096: the same matrix, transposed.
convmat::ConvTranspose2dSpec big_transposed_layer() {
  convmat::ConvTranspose2dSpec t;
  t.in_channels = t.out_channels = 64;
  t.input_size = {4096, 4096};
  t.kernel_size = {3, 3};
  t.padding = {1, 1};
  return t;
}

const Eigen::VectorXd& weights() {
  static const Eigen::VectorXd w = Eigen::VectorXd::Ones(216);
  return w;
}

/// One kind of bad input: what is wrong, the call, and the parts its
/// message must contain (a part starting with '=' must be the whole message).
struct BadInput {
  std::string kind;
  std::function<void()> call;
  std::vector<std::string> expected;
};

std::vector<BadInput> bad_inputs() {
  using convmat::PaddingMode;
  const auto& w = weights();
  std::vector<BadInput> table;
  const auto add = [&](std::string kind, std::function<void()> call, std::vector<std::string> expected) {
    table.push_back({std::move(kind), std::move(call), std::move(expected)});
  };

  // ---- the spec ---------------------------------------------------------
  add("in_channels zero", [] { auto s = layer(); s.in_channels = 0; s.validate(); },
      {"=convmat: channels and groups must be positive: in_channels=0, out_channels=6, groups=1"});
  add("out_channels negative", [] { auto s = layer(); s.out_channels = -3; s.output_size(); },
      {"channels and groups must be positive", "out_channels=-3"});
  add("groups zero", [] { auto s = layer(); s.groups = 0; s.weight_numel(); },
      {"channels and groups must be positive", "groups=0"});
  add("channels not divisible by groups", [] { auto s = layer(); s.groups = 3; s.validate(); },
      {"=convmat: channels must be divisible by groups: in_channels=4, out_channels=6, groups=3"});
  add("input_size left unset", [] { convmat::Conv2dSpec s; s.kernel_size = {1, 1}; s.validate(); },
      {"=convmat: input_size must be positive in every dimension: input_size=(0, 0)"});
  add("kernel_size zero", [] { auto s = layer(); s.kernel_size = {3, 0}; s.input_numel(); s.validate(); },
      {"=convmat: kernel_size must be positive in every dimension: kernel_size=(3, 0)"});
  add("stride negative", [] { auto s = layer(); s.stride = {-2, 1}; s.validate(); },
      {"=convmat: stride must be positive in every dimension: stride=(-2, 1)"});
  add("dilation zero", [] { auto s = layer(); s.dilation = {1, 0}; s.validate(); },
      {"=convmat: dilation must be positive in every dimension: dilation=(1, 0)"});
  add("padding negative", [] { auto s = layer(); s.padding = {0, -1}; s.validate(); },
      {"=convmat: padding must not be negative: padding=(0, -1)"});
  add("padding_end negative", [] { auto s = layer(); s.set_padding({1, 1}, {-4, 0}); s.validate(); },
      {"=convmat: padding_end must not be negative: padding_end=(-4, 0)"});
  add("kernel larger than the padded input", [] { auto s = layer(); s.kernel_size = {10, 3}; s.validate(); },
      {"=convmat: kernel does not fit: input_size=(7, 9), kernel_size=(10, 3), dilation=(1, 1), "
       "padding=(0, 0), stride=(1, 1) give output (-2, 7)"});
  add("dilated kernel that does not fit, asymmetric padding",
      [] { auto s = layer(); s.dilation = {4, 1}; s.set_padding({0, 0}, {1, 0}); s.validate(); },
      {"kernel does not fit", "dilation=(4, 1)", "padding=(0, 0), padding_end=(1, 0)", "give output (0, 7)"});
  add("reflect padding as large as the input",
      [] { auto s = layer(); s.padding_mode = PaddingMode::reflect; s.padding = {1, 9}; s.validate(); },
      {"=convmat: reflect padding must be smaller than the input in every dimension: padding=(1, 9), "
       "padding_end=(1, 9), input_size=(7, 9)"});
  add("circular padding larger than the input",
      [] { auto s = layer(); s.padding_mode = PaddingMode::circular; s.set_padding({8, 0}, {0, 0}); s.validate(); },
      {"circular padding must not exceed the input", "padding=(8, 0)", "input_size=(7, 9)"});
  add("padding_mode not a PaddingMode",
      [] { auto s = layer(); s.padding_mode = static_cast<PaddingMode>(-1); s.validate(); },
      {"=convmat: padding_mode is not a PaddingMode: PaddingMode(-1)"});
  add("padding mode name unknown", [] { convmat::padding_mode_from_string("symmetric"); },
      {"=convmat: padding_mode must be zeros, reflect, replicate or circular, not 'symmetric'"});
  add("padding='same' with a stride", [] { auto s = layer(); s.stride = {1, 2}; s.set_padding_same(); },
      {"=convmat: padding='same' needs stride 1: stride=(1, 2)"});
  add("padding='full' with kernel unset", [] { convmat::Conv1dSpec s; s.set_padding_full(); },
      {"=convmat: kernel_size must be positive in every dimension: kernel_size=(0)"});
  add("dilation * (kernel - 1) overflows",
      [] { auto s = layer(); s.dilation = {index_max / 2 + 1, 1}; s.validate(); },
      {"dilation * (kernel_size - 1) overflows Index", std::to_string(index_max / 2 + 1) + " * 2"});
  add("dilation * (kernel - 1) + 1 overflows",
      [] { convmat::Conv1dSpec s; s.input_size = {5}; s.kernel_size = {2}; s.dilation = {index_max};
           s.validate(); },
      {"dilation * (kernel_size - 1) + 1 overflows Index", std::to_string(index_max) + " + 1"});
  add("input + padding overflows",
      [] { convmat::Conv1dSpec s; s.input_size = {index_max - 1}; s.kernel_size = {1}; s.padding = {1};
           s.validate(); },
      {"padded input size overflows Index"});
  add("spatial size product overflows",
      [] { convmat::Conv3dSpec s; s.input_size = {Index(1) << 22, Index(1) << 22, Index(1) << 22};
           s.kernel_size = {1, 1, 1}; s.input_numel(); },
      {"input size overflows Index", "17592186044416 * 4194304"});
  add("channels * spatial size overflows",
      [] { convmat::Conv2dSpec s; s.in_channels = Index(1) << 40; s.input_size = {Index(1) << 12, Index(1) << 12};
           s.kernel_size = {1, 1}; s.input_numel(); },
      {"input_numel overflows Index", "1099511627776 * 16777216"});
  add("weight count overflows",
      [] { convmat::Conv2dSpec s; s.out_channels = Index(1) << 40; s.input_size = {4096, 4096};
           s.kernel_size = {4096, 4096}; s.weight_numel(); },
      {"weight_numel overflows Index", "1099511627776 * 16777216"});
  add("index tables of a huge layer",
      [] { convmat::Conv1dSpec s; s.input_size = {Index(1) << 40}; s.kernel_size = {3}; convmat::matrix_size(s); },
      {"the index tables would need", "output_size=(1099511627774)", "kernel_size=(3)", "max_dense_bytes()"});

  // ---- the transposed spec ---------------------------------------------
  add("output_padding not smaller than stride or dilation",
      [] { auto t = transposed(); t.output_padding = {2}; t.validate(); },
      {"=convmat: output_padding must be smaller than either stride or dilation: output_padding=(2), "
       "stride=(2), dilation=(1)"});
  add("output_padding negative", [] { auto t = transposed(); t.output_padding = {-1}; t.validate(); },
      {"=convmat: output_padding must not be negative: output_padding=(-1)"});
  add("transposed padding that leaves no output", [] { auto t = transposed(); t.padding = {6}; t.validate(); },
      {"=convmat: padding leaves no output: input_size=(4), kernel_size=(3), stride=(2), padding=(6), "
       "dilation=(1), output_padding=(0) give output (-3)"});
  add("transposed (input - 1) * stride overflows",
      [] { auto t = transposed(); t.stride = {index_max / 2}; t.validate(); },
      {"(input_size - 1) * stride overflows Index"});

  // ---- weights, inputs, batches ----------------------------------------
  add("weights of the wrong length", [&] { convmat::conv_matrix(layer(), Eigen::VectorXd::Ones(215)); },
      {"=convmat: weight has 215 elements (215 x 1), but the layer needs 216 laid out "
       "(out_channels, in_channels / groups, kernel...)"});
  add("weights given as a matrix", [&] { convmat::conv_matrix_sparse(layer(), Eigen::MatrixXd::Ones(24, 9)); },
      {"=convmat: weight must be a vector of the flattened weights, not a 24 x 9 matrix"});
  add("transposed weights of the wrong length",
      [] { convmat::conv_transpose_matrix(transposed(), Eigen::VectorXd::Ones(19)); },
      {"weight has 19 elements", "needs 18 laid out (in_channels, out_channels / groups, kernel...)"});
  add("input of the wrong length", [&] { convmat::convolve(layer(), w, Eigen::MatrixXd::Ones(251, 2)); },
      {"=convmat: input has 251 rows (251 x 2), but the layer needs 252 (one column per sample)"});
  add("transposed input of the wrong length",
      [] { convmat::convolve_transpose(transposed(), Eigen::VectorXd::Ones(18), Eigen::VectorXd::Ones(27)); },
      {"input has 27 rows", "the layer needs 8"});
  add("unfold input of the wrong length", [] { convmat::unfold(layer(), Eigen::VectorXd::Ones(63)); },
      {"input has 63 rows (63 x 1), but the layer needs 252"});
  add("unfold given a batch", [] { convmat::unfold(layer(), Eigen::MatrixXd::Ones(252, 2)); },
      {"=convmat: unfold takes one sample: input has 2 columns"});
  add("fold given the wrong shape", [] { convmat::fold(layer(), Eigen::MatrixXd::Ones(35, 36)); },
      {"=convmat: fold needs a 36 x 35 matrix (in_channels * prod(kernel_size) x prod(output_size)), not 35 x 36"});
  add("convolve_unfold input of the wrong length",
      [&] { convmat::convolve_unfold(layer(), w, Eigen::VectorXd::Ones(253)); },
      {"input has 253 rows", "needs 252"});
  add("weight_jacobian given a batch", [] { convmat::weight_jacobian(layer(), Eigen::MatrixXd::Ones(252, 3)); },
      {"=convmat: weight_jacobian takes one sample: input has 3 columns"});
  add("bias of the wrong length", [] { convmat::bias_vector(layer(), Eigen::VectorXd::Ones(5)); },
      {"=convmat: bias has 5 elements (5 x 1), but the layer has out_channels=6"});
  add("affine matrix with weights of the wrong length",
      [] { convmat::affine_matrix(layer(), Eigen::VectorXd::Ones(7), Eigen::VectorXd::Ones(6)); },
      {"weight has 7 elements", "needs 216"});
  add("row block reversed", [&] { convmat::conv_matrix_rows(layer(), w, 5, 4); },
      {"=convmat: row block [5, 4) is not within the matrix's 210 rows (need 0 <= row_begin <= row_end <= 210)"});
  add("row block past the end", [&] { convmat::conv_matrix_sparse_rows(layer(), w, 200, 211); },
      {"row block [200, 211)", "210 rows"});
  add("row block starting before 0", [&] { convmat::conv_matrix_rows(layer(), w, -1, 3); },
      {"row block [-1, 3)"});
  add("StorageIndex too narrow for the non-zeros",
      [] { convmat::Conv2dSpec s; s.in_channels = 4; s.out_channels = 4; s.input_size = {20, 20};
           s.kernel_size = {3, 3}; s.padding = {1, 1};
           convmat::conv_matrix_sparse<std::int16_t>(s, Eigen::VectorXf::Ones(s.weight_numel())); },
      {"the non-zero count = ", "does not fit the sparse matrix's StorageIndex (max 32767)",
       "conv_matrix_sparse<std::int64_t>"});
  add("StorageIndex too narrow for the columns",
      [] { convmat::Conv1dSpec s; s.input_size = {40000}; s.kernel_size = {1};
           convmat::conv_matrix_sparse<std::int16_t>(s, Eigen::VectorXf::Ones(1)); },
      {"the column count = 40000 does not fit the sparse matrix's StorageIndex (max 32767)"});

  add("affine map whose bias does not match its matrix",
      [] { const convmat::AffineMap<Eigen::MatrixXd> map{Eigen::MatrixXd::Ones(3, 2), Eigen::VectorXd::Ones(4)};
           map(Eigen::VectorXd::Ones(2)); },
      {"=convmat: the affine map's bias has 4 entries, but its matrix has 3 rows"});
  add("affine maps composed in the wrong order",
      [] { const auto first = convmat::linear_map(Eigen::MatrixXd(Eigen::MatrixXd::Ones(3, 2)));
           const auto second = convmat::linear_map(Eigen::MatrixXd(Eigen::MatrixXd::Ones(5, 4)));
           convmat::compose(second, first); },
      {"=convmat: cannot compose affine layers: the second takes 4 inputs, but the first gives 3 outputs"});

  add("padding layer with negative channels",
      [] { convmat::PadSpec<1> pad; pad.channels = -2; pad.input_size = {4}; convmat::pad_matrix_sparse(pad); },
      {"=convmat: channels and groups must be positive: in_channels=-2, out_channels=-2, groups=-2"});
  add("upsampling by a zero factor",
      [] { convmat::UpsampleSpec<2> up; up.input_size = {3, 3}; up.scale = {2, 0}; convmat::upsample_nearest_matrix(up); },
      {"=convmat: scale must be positive in every dimension: scale=(2, 0)"});

  // ---- the matrix-free operator and the spectrum -------------------------
  add("operator with weights of the wrong length", [] { convmat::make_operator(layer(), Eigen::VectorXd::Ones(3)); },
      {"weight has 3 elements (3 x 1), but the layer needs 216"});
  add("operator times a vector of the wrong length",
      [&] { const auto op = convmat::make_operator(layer(), w); Eigen::VectorXd y = op * Eigen::VectorXd::Ones(251); },
      {"=convmat: operator product: the right-hand side has 251 rows (251 x 1), but the operator is 210 x 252"});
  add("transposed operator times a vector of the wrong length",
      [&] { const auto op = convmat::make_operator(layer(), w);
            Eigen::VectorXd x = op.transpose() * Eigen::VectorXd::Ones(252); },
      {"the right-hand side has 252 rows", "the operator is 252 x 210"});
  add("normal operator with a negative lambda",
      [&] { convmat::normal_operator(convmat::make_operator(layer(), w), -1.0); },
      {"=convmat: normal_operator: lambda must be non-negative, not -1"});
  add("Tikhonov operator with a NaN lambda",
      [&] { convmat::tikhonov_operator(convmat::make_operator(layer(), w), std::nan("")); },
      {"tikhonov_operator: lambda must be non-negative, not "});
  add("Tikhonov right-hand side of the wrong length",
      [&] { convmat::tikhonov_operator(convmat::make_operator(layer(), w), 0.5).rhs(Eigen::VectorXd::Ones(209)); },
      {"=convmat: TikhonovOperator::rhs: b has 209 x 1 entries, but T has 210 rows"});
  add("spectral_norm with a negative tolerance",
      [&] { convmat::SpectralNormOptions options; options.tolerance = -1; convmat::spectral_norm(layer(), w, options); },
      {"=convmat: spectral_norm: tolerance must be finite and non-negative, and max_iterations, block_size and "
       "basis_size not negative: tolerance=-1, max_iterations=0, block_size=0, basis_size=0"});
  add("singular_values with k beyond the matrix",
      [&] { convmat::singular_values(layer(), w, 211); },
      {"=convmat: singular_values: k must be between 1 and min(output_numel, input_numel) = 210, not 211"});
  add("FFT spectra beyond max_dense_bytes",
      [&] { auto s = layer(); s.padding_mode = convmat::PaddingMode::circular; s.padding = {1, 1};
            DenseLimit limit(1000); convmat::spectral_norm_bound(s, w); },
      {"the FFT spectra for the layer's singular values would be", "more than max_dense_bytes() = 1000"});

  // ---- the memory guard -------------------------------------------------
  add("dense matrix beyond max_dense_bytes", [&] { DenseLimit limit(10000); convmat::conv_matrix(layer(), w); },
      {"=convmat: the dense matrix would be 210 x 252 = 52920 entries of 8 bytes, more than max_dense_bytes() = "
       "10000; build it as conv_matrix_sparse, in row blocks (conv_matrix_rows), use make_operator, or raise "
       "the limit with set_max_dense_bytes()"});
  add("dense row block beyond max_dense_bytes",
      [&] { DenseLimit limit(20000); convmat::conv_matrix_rows(layer(), w, 0, 5); convmat::conv_matrix_rows(layer(), w, 0, 10); },
      {"the dense matrix would be 10 x 252"});
  add("transposed dense matrix beyond max_dense_bytes",
      [] { DenseLimit limit(100); convmat::conv_transpose_matrix(transposed(), Eigen::VectorXd::Ones(18)); },
      {"the dense matrix would be 27 x 8"});
  add("affine matrix beyond max_dense_bytes",
      [] { DenseLimit limit(10000); convmat::affine_matrix(layer(), weights(), Eigen::VectorXd::Ones(6)); },
      {"the affine matrix would be 211 x 253"});
  add("weight Jacobian beyond max_dense_bytes",
      [] { DenseLimit limit(10000); convmat::weight_jacobian(layer(), Eigen::VectorXd::Ones(252)); },
      {"the weight Jacobian would be 210 x 216", "use unfold()"});
  add("unfold matrix beyond max_dense_bytes",
      [] { DenseLimit limit(1000); convmat::unfold(layer(), Eigen::VectorXd::Ones(252)); },
      {"the unfold matrix would be 36 x 35", "use convolve()"});
  add("convolve_unfold output beyond max_dense_bytes",  // its unfold workspace is bounded, not the guard's
      [&] { DenseLimit limit(1000); convmat::convolve_unfold(layer(), w, Eigen::VectorXd::Ones(252)); },
      {"the output would be 210 x 1", "pass fewer samples at a time"});
  add("convolve output beyond max_dense_bytes",
      [&] { DenseLimit limit(1000); convmat::convolve(layer(), w, Eigen::MatrixXd::Ones(252, 2)); },
      {"the output would be 210 x 2", "pass fewer samples at a time"});
  add("fold output beyond max_dense_bytes",
      [] { DenseLimit limit(1000); convmat::fold(layer(), Eigen::MatrixXd::Ones(36, 35)); },
      {"the folded vector would be 252 x 1"});
  add("singular values of a dense matrix beyond max_dense_bytes",
      [&] { DenseLimit limit(10000); convmat::singular_values(layer(), w); },
      {"the dense matrix for singular_values would be 210 x 252"});
  add("sparse matrix beyond max_dense_bytes", [&] { DenseLimit limit(10000); convmat::conv_matrix_sparse(layer(), w); },
      {"=convmat: the sparse matrix (210 x 252) would take 91564 bytes (7560 non-zeros (value and column index) of "
       "12 bytes + 211 row offsets of 4 bytes), more than max_dense_bytes() = 10000; build it in row blocks "
       "(conv_matrix_sparse_rows), use make_operator, or raise the limit with set_max_dense_bytes()"});
  add("sparse row block beyond max_dense_bytes",
      [&] { DenseLimit limit(10000); convmat::conv_matrix_sparse_rows(layer(), w, 0, 20);
            convmat::conv_matrix_sparse_rows(layer(), w, 0, 100); },
      {"the sparse matrix (100 x 252) would take 43604 bytes (3600 non-zeros", "101 row offsets",
       "build it in smaller row blocks"});
  add("sparse matrix of a 64-channel 4096 x 4096 layer, 64-bit indices",
      [] { DenseLimit limit(std::size_t{8} << 30); const auto s = big_layer();
           convmat::conv_matrix_sparse<std::int64_t>(s, Eigen::VectorXf::Ones(s.weight_numel())); },
      {"=convmat: the sparse matrix (1073741824 x 1073741824) would take 7427877699592 bytes (618273980416 "
       "non-zeros (value and column index) of 12 bytes + 1073741825 row offsets of 8 bytes), more than "
       "max_dense_bytes() = 8589934592; build it in row blocks (conv_matrix_sparse_rows), use make_operator, or "
       "raise the limit with set_max_dense_bytes()"});
  add("transposed sparse matrix of a 64-channel 4096 x 4096 layer, counted twice while transposed",
      [] { DenseLimit limit(std::size_t{8} << 30); const auto t = big_transposed_layer();
           convmat::conv_transpose_matrix_sparse<std::int64_t>(t, Eigen::VectorXf::Ones(t.weight_numel())); },
      {"the sparse matrix (1073741824 x 1073741824) would take 14864345333776 bytes (618273980416 non-zeros "
       "(value and column index) of 12 bytes + 1073741825 row offsets of 8 bytes + 618273980416 transposed "
       "non-zeros of 12 bytes + 1073741825 transposed row offsets of 8 bytes + 1073741824 row positions for "
       "transposing of 8 bytes), more than max_dense_bytes() = 8589934592; use make_operator"});
  add("sparse pooling matrix beyond max_dense_bytes",
      [] { DenseLimit limit(1000); convmat::AvgPoolSpec<2> pool; pool.channels = 3; pool.input_size = {8, 8};
           pool.kernel_size = {2, 2}; convmat::avg_pool_matrix_sparse<double>(pool); },
      {"=convmat: the sparse pooling matrix (48 x 192) would take 2724 bytes (192 non-zeros (value and column "
       "index) of 12 bytes + 49 row offsets of 4 bytes + 12 window weights of 8 bytes + 16 divisors of 8 bytes), "
       "more than max_dense_bytes() = 1000; raise the limit with set_max_dense_bytes()"});
  add("pooling window of 2^28 taps on a 1 x 1 input: its weights, before they are made",
      [] { DenseLimit limit(std::size_t{1} << 30); convmat::AvgPoolSpec<2> pool; pool.input_size = {1, 1};
           pool.kernel_size = {16384, 16384}; pool.padding = {8192, 8192}; convmat::avg_pool_matrix<double>(pool); },
      {"=convmat: the dense pooling matrix (1 x 1) would take 2147483664 bytes (1 entries of 8 bytes + 268435456 "
       "window weights of 8 bytes + 1 divisors of 8 bytes), more than max_dense_bytes() = 1073741824; build it "
       "as compressed rows (its _sparse function), or raise the limit with set_max_dense_bytes()"});
  add("sparse padding matrix of 2^40 channels, 64-bit indices",
      [] { convmat::PadSpec<1> pad; pad.channels = Index(1) << 40; pad.input_size = {4}; pad.pad_begin = {1};
           DenseLimit limit(std::size_t{1} << 40); convmat::pad_matrix_sparse<double, std::int64_t>(pad); },
      {"the sparse padding matrix (5497558138880 x 4398046511104) would take", "4398046511104 non-zeros",
       "1099511627776 weights of 8 bytes", "more than max_dense_bytes() = 1099511627776"});
  add("dense upsampling matrix of 2^30 channels: its weights, before they are made",
      [] { convmat::UpsampleSpec<2> up; up.channels = Index(1) << 30; up.input_size = {1, 1}; up.scale = {2, 2};
           convmat::upsample_nearest_matrix<float>(up); },
      {"convmat: the dense upsampling matrix (4294967296 x 1073741824) would take more than 2^64 bytes "
       "(4611686018427387904 entries of 4 bytes + 4294967296 weights of 4 bytes), more than max_dense_bytes() = "});
  add("sparse upsampling matrix beyond max_dense_bytes",
      [] { DenseLimit limit(500); convmat::UpsampleSpec<1> up; up.channels = 2; up.input_size = {5}; up.scale = {3};
           convmat::upsample_nearest_matrix_sparse<float>(up); },
      {"=convmat: the sparse upsampling matrix (30 x 10) would take 792 bytes (30 non-zeros (value and column "
       "index) of 8 bytes + 11 row offsets of 4 bytes + 30 transposed non-zeros of 8 bytes + 31 transposed row "
       "offsets of 4 bytes + 30 row positions for transposing of 4 bytes + 6 weights of 4 bytes), more than "
       "max_dense_bytes() = 500; raise the limit with set_max_dense_bytes()"});
  add("batch norm matrix beyond max_dense_bytes",
      [] { DenseLimit limit(1000); convmat::BatchNorm<double> bn;
           bn.gamma = bn.beta = bn.mean = bn.var = Eigen::VectorXd::Ones(2); convmat::batch_norm_map(bn, 100); },
      {"=convmat: the batch norm matrix (200 x 200) would take 4804 bytes (200 non-zeros (value and column index) "
       "of 12 bytes + 201 row offsets of 4 bytes + 200 bias entries of 8 bytes), more than max_dense_bytes() = "
       "1000; raise the limit with set_max_dense_bytes()"});
  add("dense matrix of a layer whose matrix overflows Index",
      [] { convmat::Conv2dSpec s; s.input_size = {Index(1) << 20, Index(1) << 20}; s.kernel_size = {1, 1};
           DenseLimit limit(convmat::no_limit); convmat::conv_matrix(s, Eigen::VectorXd::Ones(1)); },
      {"the dense matrix overflows Index: 1099511627776 * 1099511627776"});
  return table;
}

}  // namespace

TEST_CASE("every kind of bad input is a spec_error naming its values", "[errors]") {
  const auto table = bad_inputs();
  REQUIRE(table.size() >= 30);
  const bool print = std::getenv("CONVMAT_PRINT_ERRORS") != nullptr;
  for (const auto& bad : table) {
    INFO("bad input: " << bad.kind);
    std::string message = "no exception";
    bool memory = false;
    try {
      bad.call();
    } catch (const convmat::memory_limit_error& e) {
      message = e.what();
      memory = true;
    } catch (const convmat::spec_error& e) {
      message = e.what();
    } catch (const std::exception& e) {
      message = std::string("not a spec_error: ") + e.what();
    }
    if (print) std::cout << "| " << bad.kind << " | `" << message << "` |\n";
    INFO("message: " << message);
    // The memory guard's refusals, and only they, are memory_limit_error.
    CHECK(memory == (message.find("more than max_dense_bytes()") != std::string::npos));
    for (const auto& part : bad.expected) {
      if (!part.empty() && part[0] == '=')
        CHECK(message == part.substr(1));
      else
        CHECK(message.find(part) != std::string::npos);
    }
  }
}

TEST_CASE("the memory guard is restored and can be switched off", "[errors][limits]") {
  const auto saved = convmat::max_dense_bytes();
  {
    DenseLimit limit(0);
    REQUIRE(convmat::max_dense_bytes() == 0);
    REQUIRE_THROWS_AS(convmat::conv_matrix(layer(), weights()), convmat::spec_error);
    convmat::set_max_dense_bytes(convmat::no_limit);
    REQUIRE(convmat::conv_matrix(layer(), weights()).rows() == 210);
  }
  REQUIRE(convmat::max_dense_bytes() == saved);
  REQUIRE(saved > 0);
}
