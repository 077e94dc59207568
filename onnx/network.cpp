// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The fully-connected form itself: its activations as ONNX defines them,
// and the network evaluated in double (the reference --check and the tests
// compare the written model with).
#include <cctype>
#include <cmath>
#include <sstream>

#include "convert.hpp"

namespace convmat::mlp {

std::string_view Activation::onnx_name() const {
  switch (kind) {
    case Kind::none: return "";
    case Kind::relu: return "Relu";
    case Kind::sigmoid: return "Sigmoid";
    case Kind::tanh: return "Tanh";
    case Kind::softplus: return "Softplus";
    case Kind::softsign: return "Softsign";
    case Kind::elu: return "Elu";
    case Kind::selu: return "Selu";
    case Kind::celu: return "Celu";
    case Kind::hard_swish: return "HardSwish";
    case Kind::exp: return "Exp";
    case Kind::erf: return "Erf";
    case Kind::softmax: return "Softmax";
    case Kind::log_softmax: return "LogSoftmax";
  }
  return "";
}

std::string Activation::name() const {
  std::string lower(onnx_name());
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

int Activation::opset() const { return kind == Kind::hard_swish ? 14 : 13; }

std::string Activation::formula(const std::string& argument) const {
  if (kind == Kind::none) return argument;
  std::ostringstream os;
  os.precision(17);
  os << name() << '(' << argument;
  if (kind == Kind::elu || kind == Kind::celu) os << "; alpha = " << alpha;
  if (kind == Kind::selu) os << "; alpha = " << alpha << ", gamma = " << gamma;
  os << ')';
  return os.str();
}

bool Activation::never_negative() const {
  switch (kind) {
    case Kind::relu: case Kind::sigmoid: case Kind::softplus: case Kind::exp: case Kind::softmax: return true;
    default: return false;
  }
}

bool Activation::elementwise() const { return kind != Kind::softmax && kind != Kind::log_softmax; }

double Activation::operator()(double v) const {
  switch (kind) {
    case Kind::none: return v;
    case Kind::relu: return v > 0 ? v : 0.0;
    case Kind::sigmoid: return 1.0 / (1.0 + std::exp(-v));
    case Kind::tanh: return std::tanh(v);
    case Kind::softplus: return v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));  // log(exp(v) + 1)
    case Kind::softsign: return v / (1.0 + std::abs(v));
    case Kind::elu: return v < 0 ? alpha * std::expm1(v) : v;
    case Kind::selu: return v > 0 ? gamma * v : gamma * alpha * std::expm1(v);
    case Kind::celu: return std::max(0.0, v) + std::min(0.0, alpha * std::expm1(v / alpha));
    case Kind::hard_swish: return v * std::max(0.0, std::min(1.0, v / 6 + 0.5));
    case Kind::exp: return std::exp(v);
    case Kind::erf: return std::erf(v);
    case Kind::softmax: case Kind::log_softmax: break;
  }
  throw std::logic_error("convmat-onnx: " + std::string(onnx_name()) + " is not elementwise");
}

void Activation::apply(Eigen::MatrixXd& columns) const {
  if (kind == Kind::none) return;
  if (elementwise()) {
    columns = columns.unaryExpr([this](double v) { return (*this)(v); });
    return;
  }
  for (Index j = 0; j < columns.cols(); ++j) {  // shifted by the largest value, as every softmax is
    auto column = columns.col(j);
    if (column.size() == 0) continue;
    column.array() -= column.maxCoeff();
    const double log_sum = std::log(column.array().exp().sum());
    if (kind == Kind::log_softmax) column.array() -= log_sum;
    else column = (column.array() - log_sum).exp().matrix();
  }
}

Eigen::MatrixXd Network::operator()(const Eigen::MatrixXd& x) const {
  Eigen::MatrixXd y = x;
  for (const auto& layer : layers) {
    Eigen::MatrixXd next = layer.matrix * y;
    next.colwise() += layer.bias;
    layer.activation.apply(next);
    y = std::move(next);
  }
  return y;
}

std::size_t Network::nonzeros() const {
  std::size_t n = 0;
  for (const auto& layer : layers) n += static_cast<std::size_t>(layer.matrix.nonZeros());
  return n;
}

std::size_t Network::dense_bytes() const {
  std::size_t n = 0;
  for (const auto& layer : layers)
    n += static_cast<std::size_t>(layer.matrix.rows()) * static_cast<std::size_t>(layer.matrix.cols() + 1) * sizeof(float);
  return n;
}

}  // namespace convmat::mlp
