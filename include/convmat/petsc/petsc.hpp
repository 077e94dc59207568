// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// convmat feeding PETSc: a layer's matrix T distributed over MPI ranks, for
// layers whose matrix no single machine holds. Two forms:
//
//   conv_matrix_aij(comm, spec, w)    T assembled into a parallel MATMPIAIJ.
//                                     Each rank builds exactly the rows that
//                                     PETSc's row distribution gives it with
//                                     conv_matrix_sparse_rows, preallocates the
//                                     exact per-row counts of the diagonal and
//                                     off-diagonal blocks and inserts its own
//                                     sorted rows: no malloc during assembly,
//                                     no entry sent to another rank.
//   conv_matrix_shell(comm, spec, w)  T matrix-free (MATSHELL): each rank
//                                     keeps the weights and the geometry, and
//                                     runs its rows of the convolution (and of
//                                     the transposed one) through the library's
//                                     product path (unfold + GEMM, GEMM +
//                                     fold, as ConvOperator) on the input
//                                     entries those rows read, gathered by a
//                                     VecScatter (the halo exchange).
//
// Both use PETSc's default ownership (ownership(comm, spec)): rank r owns a
// contiguous range of output rows, (channel, position) in convmat's C order,
// and a contiguous range of input entries; vectors from MatCreateVecs match.
//
// Optional: not included by <convmat/convmat.hpp>; needs PETSc (3.18 or
// later, real PetscScalar; tested with double) and MPI. PETSc objects must be
// destroyed before PetscFinalize: keep the Owned<> handles in an inner scope.
#pragma once

#include <petscmat.h>

#if defined(PETSC_USE_COMPLEX)
#error "convmat/petsc/petsc.hpp needs a PETSc built with a real PetscScalar (e.g. Debian's petsc-dev, petsc-real)"
#endif

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../detail/unfold_product.hpp"
#include "../sparse.hpp"

namespace convmat::petsc {

/// A PETSc or MPI call that failed; what() names the call and PETSc's message.
class petsc_error : public std::runtime_error {
 public:
  petsc_error(PetscErrorCode code, const std::string& what) : std::runtime_error(what), code_(code) {}
  /// The PETSc error code.
  PetscErrorCode code() const noexcept { return code_; }

 private:
  PetscErrorCode code_;
};

namespace detail {

/// Throws petsc_error unless `code` is 0.
inline void check(PetscErrorCode code, const char* call) {
  if (code == 0) return;
  const char* text = nullptr;
  PetscErrorMessage(code, &text, nullptr);
  throw petsc_error(code, std::string("convmat: ") + call + " failed with PETSc error " +
                              std::to_string(code) + (text ? std::string(" (") + text + ")" : std::string()));
}

inline PetscErrorCode destroy(Mat* object) { return MatDestroy(object); }
inline PetscErrorCode destroy(Vec* object) { return VecDestroy(object); }
inline PetscErrorCode destroy(IS* object) { return ISDestroy(object); }
inline PetscErrorCode destroy(VecScatter* object) { return VecScatterDestroy(object); }

}  // namespace detail

/// Calls a PETSc function and throws convmat::petsc::petsc_error if it fails.
#define CONVMAT_PETSC_CALL(...) ::convmat::petsc::detail::check((__VA_ARGS__), #__VA_ARGS__)

/// Sole ownership of a PETSc object (Mat, Vec, IS, VecScatter): destroyed
/// with the handle. Converts to the raw handle, so it passes straight to
/// PETSc calls.
template <class Handle>
class Owned {
 public:
  Owned() = default;
  /// Takes ownership of `handle`.
  explicit Owned(Handle handle) : handle_(handle) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Owned(Owned&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~Owned() { reset(); }

  /// The raw handle, still owned.
  Handle get() const noexcept { return handle_; }
  operator Handle() const noexcept { return handle_; }  // NOLINT: implicit by design
  /// For PETSc's create functions: destroys what is held, returns where to write.
  Handle* out() noexcept {
    reset();
    return &handle_;
  }
  /// Gives up ownership.
  Handle release() noexcept { return std::exchange(handle_, nullptr); }
  /// Destroys the object now.
  void reset() noexcept {
    if (handle_) (void)detail::destroy(&handle_);
    handle_ = nullptr;
  }

 private:
  Handle handle_ = nullptr;
};

/// Which rows of T and which input entries one rank owns: PETSc's default
/// split (PetscSplitOwnership), the one MatSetSizes(PETSC_DECIDE) would give.
struct Ownership {
  PetscInt rows = 0, cols = 0;            ///< global: output_numel x input_numel
  PetscInt row_begin = 0, row_end = 0;    ///< this rank's output rows
  PetscInt col_begin = 0, col_end = 0;    ///< this rank's input entries (the diagonal block)
  PetscInt local_rows() const { return row_end - row_begin; }
  PetscInt local_cols() const { return col_end - col_begin; }
};

namespace detail {

inline PetscInt to_petsc_int(Index value, const char* what) {
  if (value > static_cast<Index>(std::numeric_limits<PetscInt>::max()))
    convmat::detail::fail(what, " = ", value, " does not fit PetscInt (max ",
                          static_cast<Index>(std::numeric_limits<PetscInt>::max()),
                          "); use a PETSc configured with --with-64-bit-indices");
  return static_cast<PetscInt>(value);
}

/// The contiguous range [begin, end) of `global` items PETSc gives this rank.
inline std::pair<PetscInt, PetscInt> split(MPI_Comm comm, PetscInt global) {
  PetscInt local = PETSC_DECIDE;
  CONVMAT_PETSC_CALL(PetscSplitOwnership(comm, &local, &global));
  PetscInt end = 0;
  if (MPI_Scan(&local, &end, 1, MPIU_INT, MPI_SUM, comm) != MPI_SUCCESS)
    throw petsc_error(PETSC_ERR_MPI, "convmat: MPI_Scan of the local sizes failed");
  return {end - local, end};
}

template <int Rank>
Ownership ownership(MPI_Comm comm, const convmat::detail::Geometry<Rank>& g) {
  Ownership own;
  own.rows = to_petsc_int(g.output_numel(), "output_numel");
  own.cols = to_petsc_int(g.input_numel(), "input_numel");
  std::tie(own.row_begin, own.row_end) = split(comm, own.rows);
  std::tie(own.col_begin, own.col_end) = split(comm, own.cols);
  return own;
}

/// The weights as PetscScalar, checked for length.
template <class Derived>
convmat::Vector<PetscScalar> petsc_weights(const Eigen::MatrixBase<Derived>& weight, Index expected) {
  const auto w = convmat::detail::weight_view(weight, expected, convmat::detail::conv_weight_layout);
  return w.template cast<PetscScalar>();
}

}  // namespace detail

/// This rank's rows of T and input entries under PETSc's default split.
/// Collective on `comm`.
template <int Rank>
Ownership ownership(MPI_Comm comm, const ConvSpec<Rank>& spec) {
  return detail::ownership(comm, convmat::detail::geometry(spec));
}

/// What conv_matrix_aij did on this rank.
struct AssemblyReport {
  Ownership ownership;
  PetscInt nonzeros = 0;             ///< entries of this rank's rows
  PetscInt diagonal_nonzeros = 0;    ///< of which in this rank's own columns
  PetscInt chunks = 0;               ///< row blocks built (1: built once; more: built twice)
  double mallocs = 0;                ///< PETSc's MatGetInfo count during assembly (always 0)
  double build_seconds = 0;          ///< building the row blocks (convmat)
  double assembly_seconds = 0;       ///< preallocation, MatSetValues and MatAssembly (PETSc)
};

/// T assembled into a parallel MATMPIAIJ on `comm` (collective).
///
/// Each rank builds only its rows (ownership(comm, spec)) with
/// conv_matrix_sparse_rows, in row blocks of at most about `chunk_bytes` of
/// compressed rows; preallocates the exact per-row counts of the diagonal and
/// off-diagonal blocks (MatMPIAIJSetPreallocation with d_nnz / o_nnz); and
/// inserts each sorted row with one MatSetValues. When the rank's rows take
/// more than one block, the blocks are built twice (once to count, once to
/// insert), so the extra memory stays bounded by `chunk_bytes`. Any malloc
/// during insertion or entry for another rank is a PETSc error
/// (MAT_NEW_NONZERO_ALLOCATION_ERR, MAT_NO_OFF_PROC_ENTRIES).
template <int Rank, class Derived>
Owned<Mat> conv_matrix_aij(MPI_Comm comm, const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight,
                           AssemblyReport* report = nullptr, std::size_t chunk_bytes = std::size_t(16) << 20) {
  const auto g = convmat::detail::geometry(spec);
  const auto w = detail::petsc_weights(weight, g.weight_numel());
  const Ownership own = detail::ownership(comm, g);
  const PetscInt local_rows = own.local_rows();

  // Rows per block from the largest possible row: in_per_group * kernel taps.
  const std::size_t row_bytes = static_cast<std::size_t>(g.in_per_group() * g.kernel_numel) *
                                (sizeof(PetscScalar) + sizeof(PetscInt));
  const PetscInt block_rows = static_cast<PetscInt>(
      std::clamp<std::size_t>(chunk_bytes / row_bytes, 1, static_cast<std::size_t>(std::max<PetscInt>(local_rows, 1))));
  const PetscInt chunks = local_rows == 0 ? 0 : (local_rows + block_rows - 1) / block_rows;
  const auto block = [&](PetscInt chunk) {
    const Index begin = own.row_begin + chunk * block_rows;
    const Index end = std::min<Index>(begin + block_rows, own.row_end);
    return conv_matrix_sparse_rows<PetscInt>(spec, w, begin, end);
  };

  AssemblyReport r;
  r.ownership = own;
  r.chunks = chunks;
  double clock = MPI_Wtime();

  // Pass 1: the exact row counts of the diagonal (own columns) and
  // off-diagonal blocks; the columns of a row are sorted.
  std::vector<PetscInt> d_nnz(static_cast<std::size_t>(local_rows)), o_nnz(d_nnz.size());
  SparseMatrix<PetscScalar, PetscInt> kept;  // the only block, when there is one
  Index local_nonzeros = 0, diagonal_nonzeros = 0;
  for (PetscInt c = 0; c < chunks; ++c) {
    SparseMatrix<PetscScalar, PetscInt> t = block(c);
    for (Index i = 0; i < t.rows(); ++i) {
      const PetscInt* first = t.innerIndexPtr() + t.outerIndexPtr()[i];
      const PetscInt* last = t.innerIndexPtr() + t.outerIndexPtr()[i + 1];
      const auto d = std::lower_bound(first, last, own.col_end) - std::lower_bound(first, last, own.col_begin);
      const auto at = static_cast<std::size_t>(c * block_rows + i);
      d_nnz[at] = static_cast<PetscInt>(d);
      o_nnz[at] = static_cast<PetscInt>((last - first) - d);
      local_nonzeros += last - first;
      diagonal_nonzeros += d;
    }
    if (chunks == 1) kept = std::move(t);
  }
  // Checked on every rank alike, so no rank is left waiting in a collective.
  long long most_nonzeros = local_nonzeros;
  if (MPI_Allreduce(MPI_IN_PLACE, &most_nonzeros, 1, MPI_LONG_LONG, MPI_MAX, comm) != MPI_SUCCESS)
    throw petsc_error(PETSC_ERR_MPI, "convmat: MPI_Allreduce of the ranks' non-zero counts failed");
  (void)detail::to_petsc_int(static_cast<Index>(most_nonzeros), "the largest non-zero count of a rank");
  r.nonzeros = static_cast<PetscInt>(local_nonzeros);
  r.diagonal_nonzeros = static_cast<PetscInt>(diagonal_nonzeros);
  r.build_seconds += MPI_Wtime() - clock;

  Owned<Mat> a;
  CONVMAT_PETSC_CALL(MatCreate(comm, a.out()));
  CONVMAT_PETSC_CALL(MatSetSizes(a, own.local_rows(), own.local_cols(), own.rows, own.cols));
  CONVMAT_PETSC_CALL(MatSetType(a, MATMPIAIJ));
  CONVMAT_PETSC_CALL(MatMPIAIJSetPreallocation(a, 0, d_nnz.data(), 0, o_nnz.data()));
  CONVMAT_PETSC_CALL(MatSetOption(a, MAT_NEW_NONZERO_ALLOCATION_ERR, PETSC_TRUE));
  CONVMAT_PETSC_CALL(MatSetOption(a, MAT_NO_OFF_PROC_ENTRIES, PETSC_TRUE));
  CONVMAT_PETSC_CALL(MatSetOption(a, MAT_SORTED_FULL, PETSC_TRUE));
  {
    PetscInt begin = 0, end = 0;
    CONVMAT_PETSC_CALL(MatGetOwnershipRange(a, &begin, &end));
    if (begin != own.row_begin || end != own.row_end)
      throw petsc_error(PETSC_ERR_PLIB, "convmat: PETSc gave this rank rows [" + std::to_string(begin) + ", " +
                                            std::to_string(end) + "), convmat built [" +
                                            std::to_string(own.row_begin) + ", " + std::to_string(own.row_end) + ")");
  }

  // Pass 2: insert each row whole.
  const auto insert = [&](const SparseMatrix<PetscScalar, PetscInt>& t, PetscInt first_row) {
    const double start = MPI_Wtime();
    for (Index i = 0; i < t.rows(); ++i) {
      const PetscInt row = first_row + static_cast<PetscInt>(i);
      const PetscInt begin = t.outerIndexPtr()[i], n = t.outerIndexPtr()[i + 1] - begin;
      CONVMAT_PETSC_CALL(
          MatSetValues(a, 1, &row, n, t.innerIndexPtr() + begin, t.valuePtr() + begin, INSERT_VALUES));
    }
    r.assembly_seconds += MPI_Wtime() - start;
  };
  if (chunks == 1) {
    insert(kept, own.row_begin);
    kept = SparseMatrix<PetscScalar, PetscInt>();
  } else {
    for (PetscInt c = 0; c < chunks; ++c) {
      const double start = MPI_Wtime();
      const auto t = block(c);
      r.build_seconds += MPI_Wtime() - start;
      insert(t, own.row_begin + c * block_rows);
    }
  }
  clock = MPI_Wtime();
  CONVMAT_PETSC_CALL(MatAssemblyBegin(a, MAT_FINAL_ASSEMBLY));
  CONVMAT_PETSC_CALL(MatAssemblyEnd(a, MAT_FINAL_ASSEMBLY));
  r.assembly_seconds += MPI_Wtime() - clock;

  MatInfo info;
  CONVMAT_PETSC_CALL(MatGetInfo(a, MAT_LOCAL, &info));
  r.mallocs = info.mallocs;
  if (info.mallocs != 0)
    throw petsc_error(PETSC_ERR_PLIB, "convmat: the preallocated assembly made " + std::to_string(info.mallocs) +
                                          " mallocs; it should make none");
  if (report) *report = r;
  return a;
}

namespace detail {

/// What a rank of the matrix-free T keeps: the geometry, the weights, its
/// rows as at most three rectangles of output channels x positions (a
/// partial first channel, whole channels, a partial last channel), and the
/// halo — the window of input entries those rows read: the input channels
/// of their groups, each from the first to the last spatial offset read.
/// Both products run the library's product path on the halo
/// (convmat::detail::unfold_multiply, multiply_fold), as ConvOperator does.
template <int Rank>
struct Shell {
  convmat::detail::Geometry<Rank> g;
  convmat::Vector<PetscScalar> w;
  Ownership own;
  std::vector<convmat::detail::OutputRegion> rectangles;  ///< this rank's rows, in order
  convmat::detail::InputWindow window;                    ///< where the halo holds each input entry
  Owned<Vec> halo;                                        ///< sequential: the gathered input window
  Owned<VecScatter> gather;  ///< global input -> halo (reverse: halo added into input)

  /// Where rectangle r's first row is among this rank's rows.
  Index local_offset(const convmat::detail::OutputRegion& r) const {
    return r.channel_begin * g.output_spatial + r.position_begin - own.row_begin;
  }
};

/// Rows [row_begin, row_end) of T as rectangles of output channels x
/// positions, in row order: a partial first channel, the whole channels,
/// a partial last channel (each only if there is one).
template <int Rank>
std::vector<convmat::detail::OutputRegion> row_rectangles(const convmat::detail::Geometry<Rank>& g, Index row_begin,
                                                          Index row_end) {
  std::vector<convmat::detail::OutputRegion> rectangles;
  if (row_begin >= row_end) return rectangles;
  const Index positions = g.output_spatial;
  Index c_begin = row_begin / positions;
  const Index p_begin = row_begin % positions, c_end = row_end / positions, p_end = row_end % positions;
  if (c_begin == c_end) return {{c_begin, c_begin + 1, p_begin, p_end}};
  if (p_begin > 0) rectangles.push_back({c_begin, c_begin + 1, p_begin, positions}), ++c_begin;
  if (c_begin < c_end) rectangles.push_back({c_begin, c_end, 0, positions});
  if (p_end > 0) rectangles.push_back({c_end, c_end + 1, 0, p_end});
  return rectangles;
}

template <int Rank>
PetscErrorCode shell_mult(Mat a, Vec x, Vec y) {
  PetscFunctionBeginUser;
  Shell<Rank>* s = nullptr;
  PetscCall(MatShellGetContext(a, &s));
  PetscCall(VecScatterBegin(s->gather, x, s->halo, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecScatterEnd(s->gather, x, s->halo, INSERT_VALUES, SCATTER_FORWARD));
  const PetscScalar* h = nullptr;
  PetscScalar* out = nullptr;
  PetscCall(VecGetArrayRead(s->halo, &h));
  PetscCall(VecGetArrayWrite(y, &out));
  PetscCallCXX(for (const auto& r : s->rectangles) convmat::detail::unfold_multiply(
      s->g, s->w.data(), h, 0, s->window, out + s->local_offset(r), 0, 1, r));
  PetscCall(VecRestoreArrayWrite(y, &out));
  PetscCall(VecRestoreArrayRead(s->halo, &h));
  PetscFunctionReturn(0);
}

template <int Rank>
PetscErrorCode shell_mult_transpose(Mat a, Vec y, Vec x) {
  PetscFunctionBeginUser;
  Shell<Rank>* s = nullptr;
  PetscCall(MatShellGetContext(a, &s));
  PetscCall(VecSet(s->halo, 0));
  const PetscScalar* in = nullptr;
  PetscScalar* h = nullptr;
  PetscCall(VecGetArrayRead(y, &in));
  PetscCall(VecGetArray(s->halo, &h));
  PetscCallCXX(for (const auto& r : s->rectangles) convmat::detail::multiply_fold(
      s->g, s->w.data(), in + s->local_offset(r), 0, h, 0, s->window, 1, r, false));
  PetscCall(VecRestoreArray(s->halo, &h));
  PetscCall(VecRestoreArrayRead(y, &in));
  PetscCall(VecSet(x, 0));
  PetscCall(VecScatterBegin(s->gather, s->halo, x, ADD_VALUES, SCATTER_REVERSE));
  PetscCall(VecScatterEnd(s->gather, s->halo, x, ADD_VALUES, SCATTER_REVERSE));
  PetscFunctionReturn(0);
}

template <int Rank>
PetscErrorCode shell_destroy(void* context) {
  PetscFunctionBeginUser;
  delete static_cast<Shell<Rank>*>(context);
  PetscFunctionReturn(0);
}

}  // namespace detail

/// T as a matrix-free MATSHELL on `comm` (collective): MatMult and
/// MatMultTranspose run this rank's rows of the convolution and of its
/// adjoint through the library's product path (blocked unfold + GEMM, GEMM
/// + blocked fold, as ConvOperator) on the input entries those rows read.
/// The shell keeps the weights, the geometry and a halo vector of those
/// entries — for each input channel of the groups of its output channels,
/// the spatial offsets from the first to the last its rows read — gathered
/// from the distributed input by a VecScatter (forward, INSERT_VALUES)
/// and, for the transpose, added back (reverse, ADD_VALUES). Rows and
/// columns are split as ownership(comm, spec) says, so it takes the
/// vectors of conv_matrix_aij. Memory per rank: the halo and a bounded
/// workspace per product, not the non-zeros.
template <int Rank, class Derived>
Owned<Mat> conv_matrix_shell(MPI_Comm comm, const ConvSpec<Rank>& spec, const Eigen::MatrixBase<Derived>& weight) {
  auto s = std::make_unique<detail::Shell<Rank>>();
  s->g = convmat::detail::geometry(spec);
  s->w = detail::petsc_weights(weight, s->g.weight_numel());
  s->own = detail::ownership(comm, s->g);
  const auto& g = s->g;
  const Ownership& own = s->own;
  s->rectangles = detail::row_rectangles(g, own.row_begin, own.row_end);

  // The halo: the input channels of the groups of this rank's output
  // channels, times the spatial offsets from the first to the last that
  // this rank's output positions read.
  Index channel_begin = 0, channel_end = 0, offset_begin = 0, offset_end = 0;
  if (own.local_rows() > 0) {
    channel_begin = g.group_first_input(own.row_begin / g.output_spatial);
    channel_end = g.group_first_input((own.row_end - 1) / g.output_spatial) + g.in_per_group();
    offset_begin = g.input_spatial;
    const Index positions = std::min<Index>(own.local_rows(), g.output_spatial);
    std::vector<convmat::detail::Tap> taps;
    for (Index i = 0; i < positions; ++i) {
      g.taps_at((own.row_begin + i) % g.output_spatial, taps);
      for (const auto& t : taps) {
        offset_begin = std::min(offset_begin, t.offset);
        offset_end = std::max(offset_end, t.offset + 1);
      }
    }
    offset_end = std::max(offset_end, offset_begin);  // no tap reads the input: an empty window
  }
  const Index span = offset_end - offset_begin;
  s->window = {channel_begin, span, offset_begin};
  std::vector<PetscInt> halo_columns;  // ascending global input indices
  halo_columns.reserve(static_cast<std::size_t>((channel_end - channel_begin) * span));
  for (Index c = channel_begin; c < channel_end; ++c)
    for (Index offset = offset_begin; offset < offset_end; ++offset)
      halo_columns.push_back(static_cast<PetscInt>(c * g.input_spatial + offset));

  Owned<Vec> input;
  Owned<IS> from;
  CONVMAT_PETSC_CALL(VecCreateMPI(comm, own.local_cols(), own.cols, input.out()));
  CONVMAT_PETSC_CALL(VecCreateSeq(PETSC_COMM_SELF, static_cast<PetscInt>(halo_columns.size()), s->halo.out()));
  CONVMAT_PETSC_CALL(ISCreateGeneral(PETSC_COMM_SELF, static_cast<PetscInt>(halo_columns.size()),
                                     halo_columns.data(), PETSC_COPY_VALUES, from.out()));
  CONVMAT_PETSC_CALL(VecScatterCreate(input, from, s->halo, nullptr, s->gather.out()));

  Owned<Mat> a;
  CONVMAT_PETSC_CALL(MatCreateShell(comm, own.local_rows(), own.local_cols(), own.rows, own.cols, s.get(), a.out()));
  CONVMAT_PETSC_CALL(MatShellSetContextDestroy(a, &detail::shell_destroy<Rank>));
  s.release();  // owned by the matrix now
  using Operation = void (*)(void);
  CONVMAT_PETSC_CALL(MatShellSetOperation(a, MATOP_MULT, reinterpret_cast<Operation>(&detail::shell_mult<Rank>)));
  CONVMAT_PETSC_CALL(MatShellSetOperation(a, MATOP_MULT_TRANSPOSE,
                                          reinterpret_cast<Operation>(&detail::shell_mult_transpose<Rank>)));
  CONVMAT_PETSC_CALL(MatShellSetOperation(a, MATOP_MULT_HERMITIAN_TRANSPOSE,  // real: the same
                                          reinterpret_cast<Operation>(&detail::shell_mult_transpose<Rank>)));
  return a;
}

}  // namespace convmat::petsc
