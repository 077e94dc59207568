// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Step 3: the fully-connected form written out. As an ONNX model of Gemm
// and Relu nodes (weights embedded, or streamed row by row into ONNX's
// external data when they pass protobuf's 2 GiB), or one Matrix Market file
// per layer. Every file is an OutputFile (the convmat command's): written
// under a temporary name and renamed when whole, so an error or a signal
// leaves neither a partial file nor a changed older one.
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/onnx_pb.h>

#include <exception>
#include <filesystem>
#include <functional>
#include <sstream>

#include "convert.hpp"
#include "output_file.hpp"

namespace convmat::mlp {
namespace {

std::size_t weight_bytes(const DenseLayer& layer) {
  return static_cast<std::size_t>(layer.matrix.rows()) * static_cast<std::size_t>(layer.matrix.cols()) * sizeof(float);
}
std::size_t bias_bytes(const DenseLayer& layer) { return static_cast<std::size_t>(layer.bias.size()) * sizeof(float); }

void set_type(onnx::ValueInfoProto& value, const std::string& name, Index features) {
  value.set_name(name);
  auto* type = value.mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("N");
  type->mutable_shape()->add_dim()->set_dim_value(features);
}

/// Layer `index`'s matrix as float32 rows, one row at a time.
template <class Sink>
void for_each_dense_row(const DenseLayer& layer, Sink&& sink) {
  std::vector<float> row(static_cast<std::size_t>(layer.matrix.cols()));
  for (Index r = 0; r < layer.matrix.rows(); ++r) {
    std::fill(row.begin(), row.end(), 0.0f);
    for (Matrix::InnerIterator it(layer.matrix, r); it; ++it) row[static_cast<std::size_t>(it.col())] = static_cast<float>(it.value());
    sink(row);
  }
}

std::string dense_weights(const DenseLayer& layer) {
  std::string bytes;
  bytes.reserve(weight_bytes(layer));
  for_each_dense_row(layer, [&](const std::vector<float>& row) {
    bytes.append(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float));
  });
  return bytes;
}

std::string dense_bias(const DenseLayer& layer) {
  const Eigen::VectorXf bias = layer.bias.cast<float>();
  return std::string(reinterpret_cast<const char*>(bias.data()), bias.size() * sizeof(float));
}

void set_attribute(onnx::NodeProto& node, const char* name, std::int64_t value) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

void set_attribute(onnx::NodeProto& node, const char* name, double value) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(static_cast<float>(value));
}

/// The graph of Gemms and activations; `fill(tensor, layer, is_bias)` sets each initializer's data.
onnx::ModelProto skeleton(const Network& network,
                          const std::function<void(onnx::TensorProto&, std::size_t, bool)>& fill) {
  if (network.layers.empty()) throw conversion_error("the network has no layers");
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("convmat-onnx");
  model.set_producer_version(CONVMAT_VERSION_STRING);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  int version = 13;
  for (const auto& layer : network.layers) version = std::max(version, layer.activation.opset());
  opset->set_version(version);
  auto& graph = *model.mutable_graph();
  graph.set_name("convmat_fully_connected");
  graph.set_doc_string("The fully-connected form of a CNN, made by convmat-onnx: Gemm layers, each followed by "
                       "at most one activation. "
                       "Input and output are the original tensors flattened in C order per sample.");
  set_type(*graph.add_input(), network.input_name, network.layers.front().matrix.cols());
  std::string previous = network.input_name;
  for (std::size_t i = 0; i < network.layers.size(); ++i) {
    const auto& layer = network.layers[i];
    const auto id = std::to_string(i);
    for (bool is_bias : {false, true}) {
      auto* t = graph.add_initializer();
      t->set_name((is_bias ? "bias_" : "weight_") + id);
      t->set_data_type(onnx::TensorProto::FLOAT);
      t->add_dims(layer.matrix.rows());
      if (!is_bias) t->add_dims(layer.matrix.cols());
      fill(*t, i, is_bias);
    }
    const bool last = i + 1 == network.layers.size();
    auto* gemm = graph.add_node();
    gemm->set_op_type("Gemm");
    gemm->set_name("gemm_" + id);
    gemm->add_input(previous);
    gemm->add_input("weight_" + id);
    gemm->add_input("bias_" + id);
    const Activation& a = layer.activation;
    previous = last && a.kind == Activation::Kind::none ? network.output_name : "gemm_" + id;
    gemm->add_output(previous);
    set_attribute(*gemm, "transB", std::int64_t{1});
    if (a.kind != Activation::Kind::none) {
      const std::string name = a.name();
      auto* node = graph.add_node();
      node->set_op_type(std::string(a.onnx_name()));
      node->set_name(name + "_" + id);
      node->add_input(previous);
      previous = last ? network.output_name : name + "_" + id;
      node->add_output(previous);
      if (a.kind == Activation::Kind::elu || a.kind == Activation::Kind::celu || a.kind == Activation::Kind::selu)
        set_attribute(*node, "alpha", a.alpha);
      if (a.kind == Activation::Kind::selu) set_attribute(*node, "gamma", a.gamma);
      if (!a.elementwise()) set_attribute(*node, "axis", std::int64_t{1});
    }
  }
  set_type(*graph.add_output(), network.output_name, network.layers.back().matrix.rows());
  return model;
}

/// conversion_error unless the file system of `path` has `bytes` free
/// (where the free space can be found out).
void require_room(const std::string& path, std::size_t bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  const auto space = fs::space(p.has_parent_path() ? p.parent_path() : fs::path("."), ec);
  if (!ec && space.available < bytes)
    throw conversion_error("'" + path + "' would take " + std::to_string(bytes) + " bytes, but its file system has " +
                           std::to_string(space.available) + " free");
}

/// protobuf's output stream into an OutputFile. A failed write is kept and
/// rethrown after serializing, rather than thrown through protobuf.
class OutputFileStream : public google::protobuf::io::CopyingOutputStream {
 public:
  explicit OutputFileStream(convmat_tools::OutputFile& file) : file_(file) {}
  bool Write(const void* buffer, int size) override {
    try {
      file_.write(buffer, static_cast<std::size_t>(size));
      return true;
    } catch (...) {
      error_ = std::current_exception();
      return false;
    }
  }
  void rethrow_if_failed() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  convmat_tools::OutputFile& file_;
  std::exception_ptr error_;
};

/// Serializes `model` into `file` (not committed), or conversion_error.
void serialize(const onnx::ModelProto& model, convmat_tools::OutputFile& file) {
  OutputFileStream stream(file);
  bool written = false;
  {
    google::protobuf::io::CopyingOutputStreamAdaptor adaptor(&stream, 1 << 20);
    written = model.SerializeToZeroCopyStream(&adaptor) && adaptor.Flush();
  }
  stream.rethrow_if_failed();
  if (!written) throw conversion_error("cannot write '" + file.path() + "': protobuf could not serialize the model");
}

}  // namespace

onnx::ModelProto to_onnx(const Network& network) {
  const WriteOptions defaults;
  const std::size_t bytes = network.dense_bytes();
  if (bytes > defaults.embed_limit)
    throw conversion_error("the weights take " + std::to_string(bytes) +
                           " bytes dense, more than one protobuf message holds (2 GiB); write_onnx (the "
                           "convmat-onnx command) moves them to external data");
  if (bytes > max_dense_bytes())
    detail::fail_memory("the dense weights would take ", bytes, " bytes, more than max_dense_bytes() = ", max_dense_bytes());
  return skeleton(network, [&](onnx::TensorProto& t, std::size_t i, bool is_bias) {
    const auto& layer = network.layers[i];
    t.set_raw_data(is_bias ? dense_bias(layer) : dense_weights(layer));
  });
}

void save_model(const onnx::ModelProto& model, const std::string& path) {
  convmat_tools::OutputFile file(path);
  serialize(model, file);
  file.commit();
}

WriteReport write_onnx(const Network& network, const std::string& path, const WriteOptions& options) {
  WriteReport report;
  report.weight_bytes = network.dense_bytes();
  const bool external = options.external_data == WriteOptions::ExternalData::always ||
                        (options.external_data == WriteOptions::ExternalData::automatic &&
                         report.weight_bytes > options.embed_limit);
  if (!external) {
    require_room(path, report.weight_bytes);
    const auto model = to_onnx(network);
    save_model(model, path);
    report.model_bytes = model.ByteSizeLong();
    return report;
  }
  // External data: each tensor's bytes at an offset aligned to 4096 (mmap-able).
  report.external_data = path + ".data";
  const std::string location = std::filesystem::path(report.external_data).filename().string();
  require_room(report.external_data, report.weight_bytes + 8192 * network.layers.size());
  // Both files under temporary names until both are whole, then renamed
  // together: a full disk or a signal never leaves a new .data beside an
  // older model.
  convmat_tools::OutputFile data(report.external_data);
  std::size_t offset = 0;
  const std::string zeros(4096, '\0');
  const auto model = skeleton(network, [&](onnx::TensorProto& t, std::size_t i, bool is_bias) {
    const auto& layer = network.layers[i];
    const std::size_t padding = (4096 - offset % 4096) % 4096;
    data.write(zeros.data(), padding);
    offset += padding;
    const std::size_t length = is_bias ? bias_bytes(layer) : weight_bytes(layer);
    if (is_bias) {
      data.write(dense_bias(layer));
    } else {
      for_each_dense_row(layer, [&](const std::vector<float>& row) { data.write(row.data(), row.size() * sizeof(float)); });
    }
    t.set_data_location(onnx::TensorProto::EXTERNAL);
    for (const auto& [key, value] : {std::pair<std::string, std::string>{"location", location},
                                     {"offset", std::to_string(offset)}, {"length", std::to_string(length)}}) {
      auto* entry = t.add_external_data();
      entry->set_key(key);
      entry->set_value(value);
    }
    offset += length;
  });
  convmat_tools::OutputFile file(path);
  serialize(model, file);
  convmat_tools::commit_together(data, file);
  report.model_bytes = model.ByteSizeLong();
  return report;
}

std::string matrix_market(const Network& network, std::size_t index) {
  const auto& layer = network.layers.at(index);
  std::ostringstream os;
  os.precision(9);
  os << "%%MatrixMarket matrix coordinate real general\n"
     << "% convmat-onnx layer " << index << " (layers 0 to " << network.layers.size() - 1 << "): y = "
     << layer.activation.formula("T x + b") << "; columns 1.." << layer.matrix.cols()
     << " are T, column " << layer.matrix.cols() + 1 << " is b\n";
  const Index bias_nonzeros = (layer.bias.array() != 0.0).count();
  os << layer.matrix.rows() << ' ' << layer.matrix.cols() + 1 << ' ' << layer.matrix.nonZeros() + bias_nonzeros
     << '\n';
  for (Index r = 0; r < layer.matrix.rows(); ++r) {
    for (Matrix::InnerIterator it(layer.matrix, r); it; ++it)
      os << r + 1 << ' ' << it.col() + 1 << ' ' << it.value() << '\n';
    if (layer.bias(r) != 0.0) os << r + 1 << ' ' << layer.matrix.cols() + 1 << ' ' << layer.bias(r) << '\n';
  }
  return os.str();
}

}  // namespace convmat::mlp
