// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Matrix Market coordinate files (what scipy.io.mmread, MATLAB's mmread and
// Eigen's loadMarket read), written row block by row block: the header needs
// only the exact non-zero count, which the geometry gives before anything is
// built. Values are printed with the shortest decimal that reads back as the
// same float or double (std::to_chars), so nothing is lost.
// Format: https://math.nist.gov/MatrixMarket/formats.html#coord
#pragma once

#include <Eigen/SparseCore>
#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>

#include "cli_error.hpp"
#include "output_file.hpp"

namespace convmat_cli {

using convmat_tools::OutputFile;

/// Streams a sparse matrix into a Matrix Market "coordinate real general"
/// file: header(), then entries in any order (here: by rows), then finish(),
/// which checks that exactly the announced number was written and commits.
class MatrixMarketWriter {
 public:
  explicit MatrixMarketWriter(const std::string& path) : file_(path) {}

  /// The banner, the comment lines (each without its leading '%') and the
  /// size line "rows cols nonzeros".
  void header(std::int64_t rows, std::int64_t cols, std::int64_t nonzeros, const std::string& comment) {
    announced_ = nonzeros;
    std::string text = "%%MatrixMarket matrix coordinate real general\n";
    std::size_t begin = 0;
    while (begin < comment.size()) {
      auto end = comment.find('\n', begin);
      if (end == std::string::npos) end = comment.size();
      text += "% " + comment.substr(begin, end - begin) + "\n";
      begin = end + 1;
    }
    text += std::to_string(rows) + " " + std::to_string(cols) + " " + std::to_string(nonzeros) + "\n";
    file_.write(text);
  }

  /// Writes entry (row, col) (0-based here, 1-based in the file).
  template <class Scalar>
  void entry(std::int64_t row, std::int64_t col, Scalar value) {
    append(row + 1);
    buffer_ += ' ';
    append(col + 1);
    buffer_ += ' ';
    append(value);  // the shortest form that reads back as the same value
    buffer_ += '\n';
    ++written_;
    if (buffer_.size() >= (1u << 20)) flush_buffer();
  }

  /// Writes every stored entry of a row-major sparse block whose first row
  /// is row `first_row` of the whole matrix.
  template <class Scalar, class StorageIndex>
  void rows(const Eigen::SparseMatrix<Scalar, Eigen::RowMajor, StorageIndex>& block, std::int64_t first_row) {
    for (Eigen::Index r = 0; r < block.outerSize(); ++r)
      for (typename Eigen::SparseMatrix<Scalar, Eigen::RowMajor, StorageIndex>::InnerIterator it(block, r); it; ++it)
        entry(first_row + r, static_cast<std::int64_t>(it.col()), it.value());
  }

  /// Checks the count against the header and renames the file into place.
  void finish() {
    flush_buffer();
    if (written_ != announced_)
      throw cli_error("internal error: announced " + std::to_string(announced_) + " non-zeros in '" + file_.path() +
                      "' but wrote " + std::to_string(written_));
    file_.commit();
  }

  const std::string& path() const { return file_.path(); }

 private:
  template <class Number>
  void append(Number value) {
    char text[64];
    const auto result = std::to_chars(text, text + sizeof(text), value);
    buffer_.append(text, result.ptr);
  }

  void flush_buffer() {
    file_.write(buffer_.data(), buffer_.size());
    buffer_.clear();
  }

  OutputFile file_;
  std::string buffer_;
  std::int64_t announced_ = 0, written_ = 0;
};

}  // namespace convmat_cli
