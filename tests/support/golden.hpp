// Reads the golden data that tools/make_golden.py computes with PyTorch
// (format: tests/data/README.md). A file is a stream of whitespace-separated
// tokens, '#' starts a comment; every read names the key it expects, so a
// file that is missing, truncated or out of step fails loudly, naming the
// file and line.
#pragma once

#include <convmat/spec.hpp>

#include <Eigen/Core>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef CONVMAT_TEST_DATA_DIR
#error "CONVMAT_TEST_DATA_DIR must name the directory of the golden data (tests/data)"
#endif

namespace convmat_test {

using convmat::Index;

/// One family file, e.g. golden_file("conv2d") for tests/data/conv2d.txt:
/// a header (family, rank, cases), then `case N ... end` blocks, then
/// `end_of_data`.
class GoldenFile {
 public:
  /// Opens and tokenizes the file; throws std::runtime_error if it is
  /// missing or its header does not name `family` and `rank`.
  GoldenFile(const std::string& family, int rank)
      : path_(std::string(CONVMAT_TEST_DATA_DIR) + "/" + family + ".txt") {
    std::ifstream in(path_);
    if (!in) throw std::runtime_error("golden data: cannot open " + path_ + " (run tools/make_golden.py)");
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      const auto comment = line.find('#');
      if (comment != std::string::npos) line.erase(comment);
      std::size_t i = 0;
      while (i < line.size()) {
        while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
        const std::size_t start = i;
        while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) ++i;
        if (i > start) tokens_.push_back({line.substr(start, i - start), number});
      }
    }
    if (word("family") != family) fail("the header names another family than " + family);
    if (integer("rank") != rank) fail("the header names another rank than " + std::to_string(rank));
    declared_ = integer("cases");
  }

  /// The number of cases the header announces.
  Index declared_cases() const { return declared_; }

  /// Starts the next case and returns true, or returns false at
  /// `end_of_data` after checking that exactly declared_cases() were read.
  bool next_case() {
    if (peek() == "end_of_data") {
      ++position_;
      if (read_ != declared_)
        fail("end_of_data after " + std::to_string(read_) + " cases, the header announces " +
             std::to_string(declared_));
      if (position_ != tokens_.size()) fail("tokens after end_of_data");
      return false;
    }
    if (integer("case") != read_) fail("cases out of order: expected case " + std::to_string(read_));
    ++read_;
    return true;
  }

  /// Closes the case: the next token must be `end`.
  void end_case() { expect("end"); }

  /// True if the next token is `key` (an optional field such as `matrix`).
  bool at(const std::string& key) const { return position_ < tokens_.size() && tokens_[position_].text == key; }

  /// `key word` -> word.
  std::string word(const std::string& key) {
    expect(key);
    return take();
  }

  /// `key n` -> n.
  Index integer(const std::string& key) {
    expect(key);
    return to_integer(take());
  }

  /// `key n0 n1 ...` -> Rank integers.
  template <int Rank>
  std::array<Index, Rank> indices(const std::string& key) {
    expect(key);
    std::array<Index, Rank> a{};
    for (auto& x : a) x = to_integer(take());
    return a;
  }

  /// True if the token after `key` is a word rather than a number
  /// (`padding same` versus `padding 1 2`).
  bool word_follows(const std::string& key) const {
    return at(key) && position_ + 1 < tokens_.size() &&
           std::isalpha(static_cast<unsigned char>(tokens_[position_ + 1].text[0]));
  }

  /// `key n v1 ... vn` -> the n values.
  Eigen::VectorXd values(const std::string& key) {
    expect(key);
    Eigen::VectorXd v(to_integer(take()));
    for (Index i = 0; i < v.size(); ++i) v(i) = to_double(take());
    return v;
  }

  /// `key rows cols` and rows * cols values, row by row.
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> matrix(const std::string& key) {
    expect(key);
    const Index rows = to_integer(take());
    const Index cols = to_integer(take());
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = to_double(take());
    return m;
  }

  /// "conv2d.txt line 123", for messages.
  std::string where() const {
    const int line = position_ < tokens_.size() ? tokens_[position_].line : tokens_.empty() ? 0 : tokens_.back().line;
    return path_ + " line " + std::to_string(line);
  }

 private:
  struct Token {
    std::string text;
    int line;
  };

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("golden data: " + where() + ": " + what);
  }

  const std::string& peek() const {
    if (position_ >= tokens_.size()) fail("the file ends early (truncated?)");
    return tokens_[position_].text;
  }

  std::string take() {
    std::string t = peek();
    ++position_;
    return t;
  }

  void expect(const std::string& key) {
    if (peek() != key) fail("expected '" + key + "', found '" + peek() + "'");
    ++position_;
  }

  Index to_integer(const std::string& text) const {
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (errno != 0 || end != text.c_str() + text.size() || text.empty())
      fail("'" + text + "' is not an integer");
    return static_cast<Index>(value);
  }

  double to_double(const std::string& text) const {
    errno = 0;
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (errno != 0 || end != text.c_str() + text.size() || text.empty()) fail("'" + text + "' is not a number");
    return value;
  }

  std::string path_;
  std::vector<Token> tokens_;
  std::size_t position_ = 0;
  Index declared_ = 0;
  Index read_ = 0;
};

}  // namespace convmat_test
