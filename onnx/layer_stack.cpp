// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The activation layers of the fully-connected form as they are built: rows
// appended to any layer at any time (parallel branches share a layer),
// slots carried from one level to the next on demand and once, and at the
// end the pruning of what nothing reads.
#include <algorithm>

#include "lowering.hpp"

namespace convmat::mlp {
namespace {

/// The columns a row-major matrix reads, sorted.
std::vector<Index> columns_read(const Matrix& m, Index cols) {
  std::vector<char> seen(static_cast<std::size_t>(cols), 0);
  const Index nnz = m.nonZeros();
  const int* inner = m.innerIndexPtr();
  for (Index k = 0; k < nnz; ++k) seen[static_cast<std::size_t>(inner[k])] = 1;
  std::vector<Index> read;
  for (Index c = 0; c < cols; ++c)
    if (seen[static_cast<std::size_t>(c)]) read.push_back(c);
  return read;
}

/// The columns that the given rows of `m` read, sorted.
std::vector<Index> columns_read(const Matrix& m, const std::vector<Index>& rows) {
  std::vector<char> seen(static_cast<std::size_t>(m.cols()), 0);
  for (Index r : rows)
    for (Matrix::InnerIterator it(m, r); it; ++it) seen[static_cast<std::size_t>(it.col())] = 1;
  std::vector<Index> read;
  for (Index c = 0; c < m.cols(); ++c)
    if (seen[static_cast<std::size_t>(c)]) read.push_back(c);
  return read;
}

/// The blocks one under the other, every one widened to `cols` columns;
/// they are consumed (one block that is the whole layer is moved, not copied).
Affine stack_rows(std::vector<Affine>&& blocks, Index cols) {
  if (blocks.size() == 1 && blocks[0].matrix.cols() <= cols) {
    Affine only = widen(std::move(blocks[0]), cols);
    blocks.clear();
    return only;
  }
  Index rows = 0, nnz = 0;
  for (const auto& b : blocks) rows += b.matrix.rows(), nnz += b.matrix.nonZeros();
  Affine out;
  out.matrix.resize(rows, cols);
  out.matrix.reserve(nnz);
  out.bias.resize(rows);
  Index r = 0;
  for (auto& b : blocks) {
    for (Index i = 0; i < b.matrix.rows(); ++i, ++r) {
      out.matrix.startVec(r);
      for (Matrix::InnerIterator it(b.matrix, i); it; ++it) out.matrix.insertBack(r, it.col()) = it.value();
    }
    out.bias.segment(r - b.matrix.rows(), b.matrix.rows()) = b.bias;
    b = Affine{};  // released as soon as it is copied
  }
  out.matrix.finalize();
  blocks.clear();
  return out;
}

/// Whether `indices` is 0, 1, ..., n - 1.
bool is_all(const std::vector<Index>& indices, Index n) {
  if (static_cast<Index>(indices.size()) != n) return false;
  for (Index i = 0; i < n; ++i)
    if (indices[static_cast<std::size_t>(i)] != i) return false;
  return true;
}

/// Keeps the rows `rows` and the columns `cols` (both increasing) of `map`,
/// in one pass; `map` itself when it keeps everything.
Affine restrict(Affine map, const std::vector<Index>& rows, const std::vector<Index>& cols) {
  if (is_all(rows, map.matrix.rows()) && is_all(cols, map.matrix.cols())) return map;
  std::vector<Index> to(static_cast<std::size_t>(map.matrix.cols()), -1);  // old column -> new, or -1
  for (std::size_t j = 0; j < cols.size(); ++j) to[static_cast<std::size_t>(cols[j])] = static_cast<Index>(j);
  Index nnz = 0;
  for (Index r : rows)
    for (Matrix::InnerIterator it(map.matrix, r); it; ++it) nnz += to[static_cast<std::size_t>(it.col())] >= 0;
  Affine out;
  out.matrix.resize(static_cast<Index>(rows.size()), static_cast<Index>(cols.size()));
  out.matrix.reserve(nnz);
  out.bias.resize(static_cast<Index>(rows.size()));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto r = static_cast<Index>(i);
    out.matrix.startVec(r);
    for (Matrix::InnerIterator it(map.matrix, rows[i]); it; ++it)
      if (const Index c = to[static_cast<std::size_t>(it.col())]; c >= 0) out.matrix.insertBack(r, c) = it.value();
    out.bias(r) = map.bias(rows[i]);
  }
  out.matrix.finalize();
  return out;
}

/// Whether `map` picks each of its columns once, in some order, with no
/// bias: then it is a permutation of the level it reads.
bool is_permutation(const Affine& map) {
  if (map.matrix.rows() != map.matrix.cols() || map.matrix.nonZeros() != map.matrix.rows()) return false;
  if ((map.bias.array() != 0.0).any()) return false;
  std::vector<char> used(static_cast<std::size_t>(map.matrix.cols()), 0);
  for (Index r = 0; r < map.matrix.rows(); ++r) {
    Matrix::InnerIterator it(map.matrix, r);
    if (!it || it.value() != 1.0 || used[static_cast<std::size_t>(it.col())]) return false;
    used[static_cast<std::size_t>(it.col())] = 1;
  }
  return true;
}

}  // namespace

/// Whether `map` is the identity: each row r reads column r alone, with
/// weight 1, and no bias.
bool is_identity(const Affine& map) {
  const Matrix& m = map.matrix;
  if (m.rows() != m.cols() || m.nonZeros() != m.rows() || (map.bias.array() != 0.0).any()) return false;
  for (Index r = 0; r < m.rows(); ++r) {
    Matrix::InnerIterator it(m, r);
    if (!it || it.col() != r || it.value() != 1.0) return false;
  }
  return true;
}

LayerStack::LayerStack(Index inputs) : widths_{inputs} {}

Index LayerStack::append(int level, Affine rows, const Activation& a) {
  if (level < 0 || level > top()) throw std::logic_error("convmat-onnx: no level " + std::to_string(level));
  if (level == top()) {
    widths_.push_back(0);
    layers_.emplace_back();
    layers_.back().activation = a;
    carried_.emplace_back();
  } else if (activation(level) != a) {
    throw placement_error("its " + std::string(a.onnx_name()) + " would share layer " + std::to_string(level) +
                          " with a " + std::string(activation(level).onnx_name()) +
                          " (it reads a value computed before that layer: a parallel branch or a skip "
                          "connection), but each layer of the fully-connected form has one activation");
  }
  const auto next = static_cast<std::size_t>(level) + 1;
  const Index first = widths_[next];
  if (rows.matrix.rows() == 0) return first;
  widths_[next] = first + rows.matrix.rows();
  layers_[static_cast<std::size_t>(level)].blocks.push_back(std::move(rows));
  return first;
}

Affine LayerStack::activate(int level, Affine pre, const Activation& a) {
  const Index rows = pre.matrix.rows();
  const Index first = append(level, std::move(pre), a);
  return linear_map(selection(rows, width(level + 1), [first](Index r) { return first + r; }));
}

Affine LayerStack::lift(const Affine& map, int level, bool nonneg) {
  if (level < top() && activation(level) != Activation::relu())
    throw placement_error("a value computed before layer " + std::to_string(level) + "'s " +
                          std::string(activation(level).onnx_name()) +
                          " is read after it (a skip connection, or branches joining): only a ReLU layer carries "
                          "values unchanged, so no chain of Gemm layers each followed by one activation computes "
                          "this network");
  const auto reads = columns_read(map.matrix, map.matrix.cols());
  if (level == top()) append(level, Affine{Matrix(0, width(level)), Eigen::VectorXd()}, Activation::relu());  // opens level + 1
  auto& carried = carried_[static_cast<std::size_t>(level)];
  std::vector<Index> missing;
  for (Index slot : reads)
    if (!carried.count(slot)) missing.push_back(slot);
  const bool signed_slots = may_be_negative(level);  // the input's, a Tanh's: relu(x) and relu(-x)
  const Index rows_per_slot = signed_slots ? 2 : 1;
  const Index by_slots = static_cast<Index>(missing.size()) * rows_per_slot;
  const Index by_value = map.matrix.rows() * (nonneg ? 1 : 2);

  if (by_value < by_slots) {  // carry the value itself
    if (nonneg) return relu(level, map);
    const Affine negated{-map.matrix, -map.bias};
    const Affine halves = relu(level, stack_rows({map, negated}, map.matrix.cols()));  // relu(v), then relu(-v)
    const Index n = map.matrix.rows();
    const Matrix difference = selection(n, 2 * n, [](Index r) { return r; }) -
                              selection(n, 2 * n, [n](Index r) { return n + r; });
    return Affine{difference * halves.matrix, Eigen::VectorXd::Zero(n)};
  }

  if (!missing.empty()) {  // carry the slots it reads that are not carried yet
    const auto m = static_cast<Index>(missing.size());
    Matrix rows(m * rows_per_slot, width(level));
    std::vector<Eigen::Triplet<double>> entries;
    for (Index j = 0; j < m; ++j) {
      entries.emplace_back(static_cast<int>(j * rows_per_slot), static_cast<int>(missing[static_cast<std::size_t>(j)]), 1.0);
      if (signed_slots)
        entries.emplace_back(static_cast<int>(j * 2 + 1), static_cast<int>(missing[static_cast<std::size_t>(j)]), -1.0);
    }
    rows.setFromTriplets(entries.begin(), entries.end());
    const Index first = append(level, linear_map(std::move(rows)), Activation::relu());
    for (Index j = 0; j < m; ++j) carried[missing[static_cast<std::size_t>(j)]] = first + j * rows_per_slot;
  }
  // The slots of level + 1 that hold what `map` reads: x = relu(x) (- relu(-x) where it may be negative).
  std::vector<Eigen::Triplet<double>> entries;
  for (Index slot : reads) {
    const Index to = carried.at(slot);
    entries.emplace_back(static_cast<int>(slot), static_cast<int>(to), 1.0);
    if (signed_slots) entries.emplace_back(static_cast<int>(slot), static_cast<int>(to + 1), -1.0);
  }
  Matrix carry(map.matrix.cols(), width(level + 1));
  carry.setFromTriplets(entries.begin(), entries.end());
  return Affine{map.matrix * carry, map.bias};
}

std::vector<DenseLayer> LayerStack::finish(Affine output, int level, const Activation& final_activation) {
  const auto depth = static_cast<std::size_t>(level);
  std::vector<Affine> maps;  // maps[L]: level L -> L + 1, then the output
  for (std::size_t l = 0; l < depth; ++l) maps.push_back(stack_rows(std::move(layers_[l].blocks), widths_[l]));
  maps.push_back(widen(std::move(output), widths_[depth]));

  // A row with no entries is the constant a(b): fold it into what reads it.
  for (std::size_t l = 1; l <= depth; ++l) {
    const Affine& below = maps[l - 1];
    const Activation& a = layers_[l - 1].activation;
    Eigen::VectorXd constant = Eigen::VectorXd::Zero(below.matrix.rows());
    std::vector<char> is_constant(static_cast<std::size_t>(below.matrix.rows()), 0);
    bool any = false;
    for (Index r = 0; r < below.matrix.rows(); ++r)
      if (!Matrix::InnerIterator(below.matrix, r)) {
        constant(r) = a(below.bias(r));
        is_constant[static_cast<std::size_t>(r)] = 1;
        any = true;
      }
    if (!any) continue;
    Affine& reader = maps[l];
    reader.bias += reader.matrix * constant;
    reader.matrix.prune([&](Index, Index c, double) { return !is_constant[static_cast<std::size_t>(c)]; });
  }

  // What the output reads, and what that reads, down to the input (all of
  // which stays: it is the network's input).
  std::vector<std::vector<Index>> keep(depth + 1);
  keep[depth] = columns_read(maps[depth].matrix, maps[depth].matrix.cols());
  for (std::size_t l = depth; l-- > 1;) keep[l] = columns_read(maps[l].matrix, keep[l + 1]);
  for (std::size_t l = 1; l <= depth; ++l)
    if (keep[l].empty())  // the output is a constant: one Gemm of zeros
      return {DenseLayer{Matrix(maps[depth].matrix.rows(), widths_[0]), maps[depth].bias, final_activation}};
  keep[0].resize(static_cast<std::size_t>(widths_[0]));
  for (Index i = 0; i < widths_[0]; ++i) keep[0][static_cast<std::size_t>(i)] = i;

  std::vector<DenseLayer> layers;
  for (std::size_t l = 0; l < depth; ++l) {
    Affine kept = restrict(std::move(maps[l]), keep[l + 1], keep[l]);
    maps[l] = Affine{};
    layers.push_back(DenseLayer{std::move(kept.matrix), std::move(kept.bias), layers_[l].activation});
  }
  std::vector<Index> all_rows(static_cast<std::size_t>(maps[depth].matrix.rows()));
  for (std::size_t r = 0; r < all_rows.size(); ++r) all_rows[r] = static_cast<Index>(r);
  Affine out = restrict(std::move(maps[depth]), all_rows, keep[depth]);
  const bool plain = final_activation.kind == Activation::Kind::none;
  if (plain && depth > 0 && is_identity(out)) return layers;  // the output is the last layer
  if (plain && depth > 0 && is_permutation(out)) {  // the output is the last layer's slots, reordered
    auto& top_layer = layers.back();  // (an elementwise activation commutes with the reordering)
    top_layer.matrix = out.matrix * top_layer.matrix;
    top_layer.bias = out.matrix * top_layer.bias;
    return layers;
  }
  layers.push_back(DenseLayer{std::move(out.matrix), std::move(out.bias), final_activation});
  return layers;
}

}  // namespace convmat::mlp
