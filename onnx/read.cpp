// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Step 1: bytes to a ModelProto (load_model, parse_model) and a ModelProto
// to a Graph (read_graph): tensors decoded to double with their sizes
// checked before anything is allocated, attributes parsed, the one input
// and the one output found. External data is read here, by load_model,
// from files beside the model, as onnx.load does.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "convert.hpp"

namespace convmat::mlp {
namespace {

std::int64_t checked_numel(const Shape& dims, const std::string& what) {
  std::int64_t n = 1;
  for (auto d : dims) {
    if (d < 0) throw conversion_error(what + " has a negative dimension: shape " + to_string(dims));
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d)
      throw conversion_error(what + " has too many elements: shape " + to_string(dims));
    n *= d;
  }
  return n;
}

/// IEEE half precision bits to double.
double from_half(std::uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  return sign * std::ldexp(mantissa + 1024, exponent - 25);
}

/// n * 8 as text (a tensor's values in double), or "more than 2^63".
std::string double_bytes(std::int64_t n) {
  return n > std::numeric_limits<std::int64_t>::max() / 8 ? "more than 2^63" : std::to_string(n * 8);
}

/// memory_limit_error unless `bytes` of `what` (with `readers`, the nodes
/// that read it) fit in max_dense_bytes(): checked before they are read.
void require_bytes(double bytes, const std::string& what, const std::string& readers, const std::string& sizes) {
  const std::size_t limit = max_dense_bytes();
  if (bytes > static_cast<double>(limit))
    detail::fail_memory(what, readers, ": ", sizes, ", more than max_dense_bytes() = ", limit);
}

/// Decodes a TensorProto, checking that its data fits its shape, and its
/// values in double fit the memory guard, before anything is allocated.
Tensor decode(const onnx::TensorProto& t, const std::string& what, const std::string& readers = "",
              std::string* take_raw = nullptr) {
  Tensor out;
  out.dims.assign(t.dims().begin(), t.dims().end());
  out.type = t.data_type();
  const std::int64_t n = checked_numel(out.dims, what);
  require_bytes(static_cast<double>(n) * sizeof(double), what, readers,
                "shape " + to_string(out.dims) + " is " + std::to_string(n) + " values, " + double_bytes(n) +
                    " bytes in double");
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    throw conversion_error(what + " is stored in external data; read the model with load_model(path), which "
                                  "reads the files beside it");
  const std::string& raw = t.raw_data();
  const auto count = static_cast<std::size_t>(n);
  auto from_raw = [&](auto sample, auto convert, bool floating = false) {
    using T = decltype(sample);
    if (raw.size() / sizeof(T) != count || raw.size() % sizeof(T) != 0)
      throw conversion_error(what + " has " + std::to_string(raw.size()) + " bytes of raw data, but its shape " +
                             to_string(out.dims) + " needs " + std::to_string(n) + " x " +
                             std::to_string(sizeof(T)));
    if (floating && take_raw) {  // kept as stored, decoded when read
      out.stored.swap(*take_raw);
      return;
    }
    out.data.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      T v;
      std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
      out.data[i] = convert(v);
    }
  };
  auto from_field = [&](const auto& field, auto convert) {
    if (static_cast<std::size_t>(field.size()) != count)
      throw conversion_error(what + " has " + std::to_string(field.size()) + " values, but its shape " +
                             to_string(out.dims) + " needs " + std::to_string(n));
    out.data.resize(count);
    for (std::size_t i = 0; i < count; ++i) out.data[i] = convert(field.Get(static_cast<int>(i)));
  };
  const auto plain = [](auto v) { return static_cast<double>(v); };
  const auto half = [](auto v) { return from_half(static_cast<std::uint16_t>(v)); };
  const bool has_raw = t.has_raw_data();
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: has_raw ? from_raw(float{}, plain, true) : from_field(t.float_data(), plain); break;
    case onnx::TensorProto::DOUBLE: has_raw ? from_raw(double{}, plain, true) : from_field(t.double_data(), plain); break;
    case onnx::TensorProto::FLOAT16:
      has_raw ? from_raw(std::uint16_t{}, half, true) : from_field(t.int32_data(), half);
      break;
    case onnx::TensorProto::INT64: has_raw ? from_raw(std::int64_t{}, plain) : from_field(t.int64_data(), plain); break;
    case onnx::TensorProto::INT32: has_raw ? from_raw(std::int32_t{}, plain) : from_field(t.int32_data(), plain); break;
    case onnx::TensorProto::INT16: has_raw ? from_raw(std::int16_t{}, plain) : from_field(t.int32_data(), plain); break;
    case onnx::TensorProto::UINT16: has_raw ? from_raw(std::uint16_t{}, plain) : from_field(t.int32_data(), plain); break;
    case onnx::TensorProto::INT8: has_raw ? from_raw(std::int8_t{}, plain) : from_field(t.int32_data(), plain); break;
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::BOOL: has_raw ? from_raw(std::uint8_t{}, plain) : from_field(t.int32_data(), plain); break;
    case onnx::TensorProto::UINT32: has_raw ? from_raw(std::uint32_t{}, plain) : from_field(t.uint64_data(), plain); break;
    case onnx::TensorProto::UINT64: has_raw ? from_raw(std::uint64_t{}, plain) : from_field(t.uint64_data(), plain); break;
    default:
      throw conversion_error(what + " has ONNX data type " + std::to_string(t.data_type()) +
                             "; convmat-onnx reads floating-point, integer and bool tensors");
  }
  return out;
}

std::vector<Node> read_nodes(const onnx::GraphProto& g, const Node* parent, const std::string& attribute);

Attribute decode(const onnx::AttributeProto& a, const Node& node) {
  const std::string where = node.where();
  Attribute out;
  using A = onnx::AttributeProto;
  auto type = a.type();
  if (type == A::UNDEFINED) {  // old models: the field that is set says
    if (a.ints_size()) type = A::INTS;
    else if (a.floats_size()) type = A::FLOATS;
    else if (a.strings_size()) type = A::STRINGS;
    else if (a.has_t()) type = A::TENSOR;
    else if (a.has_s()) type = A::STRING;
    else if (a.has_f()) type = A::FLOAT;
    else if (a.has_i()) type = A::INT;
  }
  switch (type) {
    case A::INT: out.kind = Attribute::Kind::integer, out.i = a.i(); break;
    case A::FLOAT: out.kind = Attribute::Kind::real, out.f = a.f(); break;
    case A::STRING: out.kind = Attribute::Kind::text, out.s = a.s(); break;
    case A::INTS: out.kind = Attribute::Kind::integers, out.ints.assign(a.ints().begin(), a.ints().end()); break;
    case A::FLOATS: out.kind = Attribute::Kind::reals, out.floats.assign(a.floats().begin(), a.floats().end()); break;
    case A::STRINGS: out.kind = Attribute::Kind::texts, out.strings.assign(a.strings().begin(), a.strings().end()); break;
    case A::TENSOR:
      out.kind = Attribute::Kind::tensor;
      out.t = decode(a.t(), where + ": attribute '" + a.name() + "'");
      break;
    case A::GRAPH: {
      out.kind = Attribute::Kind::graph;
      auto graph = std::make_shared<Subgraph>();
      const std::string what = where + ": attribute '" + a.name() + "'";
      for (const auto& init : a.g().initializer())
        graph->initializers[init.name()] = decode(init, what + ": initializer '" + init.name() + "'");
      graph->nodes = read_nodes(a.g(), &node, a.name());
      for (const auto& output : a.g().output()) graph->outputs.push_back(output.name());
      out.g = std::move(graph);
      break;
    }
    default: out.kind = Attribute::Kind::other; break;
  }
  return out;
}

/// Which nodes of a graph read each name, indexed once (one pass over the
/// nodes), for messages about a tensor.
class Readers {
 public:
  explicit Readers(const onnx::GraphProto& g) : graph_(g) {
    for (int i = 0; i < g.node_size(); ++i) {
      std::vector<std::string> seen;  // a node reading a name twice counts once
      for (const auto& input : g.node(i).input()) {
        if (input.empty() || std::find(seen.begin(), seen.end(), input) != seen.end()) continue;
        seen.push_back(input);
        auto& entry = nodes_[input];
        if (entry.first.size() < 2) entry.first.push_back(i);
        ++entry.second;
      }
    }
  }

  /// " (read by node 3 ('fc', Gemm))", or "" if no node reads `name`.
  std::string of(const std::string& name) const {
    const auto it = nodes_.find(name);
    if (it == nodes_.end()) return "";
    std::string text;
    for (int i : it->second.first)
      text += std::string(text.empty() ? "" : ", ") + "node " + std::to_string(i) + " ('" + graph_.node(i).name() +
              "', " + graph_.node(i).op_type() + ")";
    if (it->second.second > 2) text += " and " + std::to_string(it->second.second - 2) + " more";
    return " (read by " + text + ")";
  }

 private:
  const onnx::GraphProto& graph_;
  std::unordered_map<std::string, std::pair<std::vector<int>, int>> nodes_;  ///< first two readers, and how many
};

/// Reads the external data of `t` from the directory `base`: its size is
/// checked against the file and the memory guard before it is read.
void load_external(onnx::TensorProto& t, const std::string& base, const std::string& model_path,
                   const std::string& readers) {
  std::string location;
  std::int64_t offset = 0, length = -1;
  for (const auto& entry : t.external_data()) {
    try {
      if (entry.key() == "location") location = entry.value();
      else if (entry.key() == "offset") offset = std::stoll(entry.value());
      else if (entry.key() == "length") length = std::stoll(entry.value());
    } catch (const std::exception&) {
      throw conversion_error("tensor '" + t.name() + "' of '" + model_path + "': external data " + entry.key() +
                             " '" + entry.value() + "' is not a number");
    }
  }
  if (location.empty() || location[0] == '/' || location.find("..") != std::string::npos)
    throw conversion_error("tensor '" + t.name() + "' of '" + model_path + "': external data location '" +
                           location + "' must be a file beside the model");
  const std::string path = base + location;
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw conversion_error("tensor '" + t.name() + "' of '" + model_path + "': cannot open its external data '" + path + "'");
  const std::int64_t size = static_cast<std::int64_t>(in.tellg());
  if (length < 0) length = size - offset;
  if (offset < 0 || length < 0 || offset > size || length > size - offset)
    throw conversion_error("tensor '" + t.name() + "': external data '" + path + "' has " + std::to_string(size) +
                           " bytes, not " + std::to_string(length) + " from offset " + std::to_string(offset));
  require_bytes(static_cast<double>(length), "tensor '" + t.name() + "' of '" + model_path + "'", readers,
                std::to_string(length) + " bytes of external data");
  std::string bytes(static_cast<std::size_t>(length), '\0');
  in.seekg(offset);
  if (!in.read(bytes.data(), length)) throw conversion_error("cannot read the external data '" + path + "'");
  t.set_raw_data(std::move(bytes));
  t.clear_external_data();
  t.clear_data_location();
}

/// The nodes of `g` with their attributes parsed. `parent` is null for the
/// model's graph; the nodes of a branch (its `attribute`) take the index of
/// the node holding it and a name that says where they are:
/// "If_0/then_branch/Squeeze_1".
std::vector<Node> read_nodes(const onnx::GraphProto& g, const Node* parent, const std::string& attribute) {
  std::vector<Node> nodes;
  nodes.reserve(static_cast<std::size_t>(g.node_size()));
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& proto = g.node(i);
    Node node;
    node.index = parent ? parent->index : i;
    node.name = parent ? parent->name + "/" + attribute + "/" + proto.name() : proto.name();
    node.op = proto.op_type();
    node.domain = proto.domain();
    node.inputs.assign(proto.input().begin(), proto.input().end());
    node.outputs.assign(proto.output().begin(), proto.output().end());
    for (const auto& a : proto.attribute()) node.attributes[a.name()] = decode(a, node);
    nodes.push_back(std::move(node));
  }
  return nodes;
}

}  // namespace

std::string to_string(const Shape& shape) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ')';
  return os.str();
}

std::int64_t Tensor::numel() const {
  std::int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

double Tensor::value(std::size_t i) const {
  if (stored.empty()) return data[i];
  switch (type) {
    case onnx::TensorProto::DOUBLE: {
      double v;
      std::memcpy(&v, stored.data() + i * sizeof v, sizeof v);
      return v;
    }
    case onnx::TensorProto::FLOAT16: {
      std::uint16_t v;
      std::memcpy(&v, stored.data() + i * sizeof v, sizeof v);
      return from_half(v);
    }
    default: {  // FLOAT: read_graph keeps no other type stored
      float v;
      std::memcpy(&v, stored.data() + i * sizeof v, sizeof v);
      return v;
    }
  }
}

void Tensor::decode() {
  if (stored.empty()) return;
  const auto count = static_cast<std::size_t>(numel());
  data.resize(count);
  for (std::size_t i = 0; i < count; ++i) data[i] = value(i);
  std::string().swap(stored);
}

bool Tensor::is_integer() const {
  return type != onnx::TensorProto::FLOAT && type != onnx::TensorProto::DOUBLE &&
         type != onnx::TensorProto::FLOAT16 && type != onnx::TensorProto::BFLOAT16;
}

const char* describe(Attribute::Kind kind) {
  switch (kind) {
    case Attribute::Kind::integer: return "an integer";
    case Attribute::Kind::real: return "a float";
    case Attribute::Kind::text: return "a string";
    case Attribute::Kind::integers: return "a list of integers";
    case Attribute::Kind::reals: return "a list of floats";
    case Attribute::Kind::texts: return "a list of strings";
    case Attribute::Kind::tensor: return "a tensor";
    case Attribute::Kind::graph: return "a graph";
    case Attribute::Kind::other: break;
  }
  return "a sparse tensor, a type or another kind";
}

std::string Node::where() const { return "node " + std::to_string(index) + " ('" + name + "', " + op + ")"; }

void Node::fail(const std::string& why) const { throw conversion_error(where() + ": " + why); }

void Node::fail_attribute(const std::string& attribute, const std::string& why) const {
  fail("attribute '" + attribute + "': " + why);
}

namespace {

const Attribute* find(const Node& node, const std::string& name, Attribute::Kind kind) {
  const auto it = node.attributes.find(name);
  if (it == node.attributes.end()) return nullptr;
  const bool integer_as_list = kind == Attribute::Kind::integers && it->second.kind == Attribute::Kind::integer;
  if (it->second.kind != kind && !integer_as_list)
    node.fail_attribute(name, std::string("is ") + describe(it->second.kind) + ", not " + describe(kind));
  return &it->second;
}

}  // namespace

std::int64_t Node::integer(const std::string& attribute, std::int64_t fallback) const {
  const auto* a = find(*this, attribute, Attribute::Kind::integer);
  return a ? a->i : fallback;
}

double Node::real(const std::string& attribute, double fallback) const {
  const auto it = attributes.find(attribute);
  if (it != attributes.end() && it->second.kind == Attribute::Kind::integer) return static_cast<double>(it->second.i);
  const auto* a = find(*this, attribute, Attribute::Kind::real);
  return a ? a->f : fallback;
}

std::string Node::text(const std::string& attribute, const std::string& fallback) const {
  const auto* a = find(*this, attribute, Attribute::Kind::text);
  return a ? a->s : fallback;
}

std::optional<std::vector<std::int64_t>> Node::integers(const std::string& attribute) const {
  const auto* a = find(*this, attribute, Attribute::Kind::integers);
  if (!a) return std::nullopt;
  return a->kind == Attribute::Kind::integer ? std::vector<std::int64_t>{a->i} : a->ints;
}

std::vector<std::int64_t> Node::integers(const std::string& attribute, std::vector<std::int64_t> fallback) const {
  auto values = integers(attribute);
  return values ? *values : fallback;
}

std::optional<std::vector<double>> Node::reals(const std::string& attribute) const {
  const auto* a = find(*this, attribute, Attribute::Kind::reals);
  if (!a) return std::nullopt;
  return a->floats;
}

const Tensor* Node::tensor(const std::string& attribute) const {
  const auto* a = find(*this, attribute, Attribute::Kind::tensor);
  return a ? &a->t : nullptr;
}

const Subgraph& Node::graph(const std::string& attribute) const {
  const auto* a = find(*this, attribute, Attribute::Kind::graph);
  if (!a || !a->g) fail_attribute(attribute, "is required");
  return *a->g;
}

std::vector<std::string> names_read(const Node& node) {
  std::vector<std::string> names;
  for (const auto& input : node.inputs)
    if (!input.empty()) names.push_back(input);
  for (const auto& [name, a] : node.attributes) {
    if (a.kind != Attribute::Kind::graph || !a.g) continue;
    std::vector<std::string> inner;  // names the branch defines itself
    for (const auto& [constant, tensor] : a.g->initializers) inner.push_back(constant);
    for (const auto& n : a.g->nodes) {
      for (const auto& read : names_read(n))
        if (std::find(inner.begin(), inner.end(), read) == inner.end()) names.push_back(read);
      inner.insert(inner.end(), n.outputs.begin(), n.outputs.end());
    }
    for (const auto& output : a.g->outputs)
      if (std::find(inner.begin(), inner.end(), output) == inner.end()) names.push_back(output);
  }
  return names;
}

std::int64_t default_opset(const onnx::ModelProto& model) {
  for (const auto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return o.version();
  return 0;
}

onnx::ModelProto parse_model(const void* data, std::size_t size) {
  if (size > static_cast<std::size_t>(INT_MAX))
    throw conversion_error("the model has " + std::to_string(size) + " bytes; protobuf reads at most 2 GiB, so "
                           "larger models keep their weights in external data");
  onnx::ModelProto model;
  if (!model.ParseFromArray(data, static_cast<int>(size)))
    throw conversion_error("these " + std::to_string(size) + " bytes are not an ONNX model");
  return model;
}

onnx::ModelProto load_model(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error))
    throw conversion_error("'" + path + "' is a directory; give the .onnx file of the model");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw conversion_error("cannot open '" + path + "'");
  const auto size = std::filesystem::file_size(path, error);
  if (!error && size > static_cast<std::uintmax_t>(INT_MAX))
    throw conversion_error("'" + path + "' has " + std::to_string(size) + " bytes; protobuf reads at most 2 GiB, so "
                           "larger models keep their weights in external data");
  // Parsed from the stream: the file's bytes are never held beside the
  // message they become.
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&in)) {
    if (in.bad()) throw conversion_error("cannot read '" + path + "'");
    throw conversion_error("'" + path + "' is not an ONNX model");
  }
  const auto slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  auto& graph = *model.mutable_graph();
  const Readers readers(graph);
  for (auto& t : *graph.mutable_initializer())
    if (t.data_location() == onnx::TensorProto::EXTERNAL) load_external(t, base, path, readers.of(t.name()));
  for (int i = 0; i < graph.node_size(); ++i)
    for (auto& a : *graph.mutable_node(i)->mutable_attribute())
      if (a.has_t() && a.t().data_location() == onnx::TensorProto::EXTERNAL) {
        const auto& node = graph.node(i);
        load_external(*a.mutable_t(), base, path,
                      " (attribute '" + a.name() + "' of node " + std::to_string(i) + " ('" + node.name() + "', " +
                          node.op_type() + "))");
      }
  return model;
}

namespace {

/// read_graph: `owned`, if given, is `model` itself, and each initializer's
/// protobuf storage is released once it is decoded.
Graph read(const onnx::ModelProto& model, onnx::ModelProto* owned) {
  const auto& g = model.graph();
  Graph graph;
  graph.opset = default_opset(model);
  if (g.sparse_initializer_size() > 0)
    throw conversion_error("the model has sparse initializers ('" + g.sparse_initializer(0).values().name() +
                           "', ...); convmat-onnx reads dense ones");
  const Readers readers(g);
  for (int i = 0; i < g.initializer_size(); ++i) {
    const auto& init = g.initializer(i);
    auto* mine = owned ? owned->mutable_graph()->mutable_initializer(i) : nullptr;
    graph.initializers[init.name()] = decode(init, "initializer '" + init.name() + "'", readers.of(init.name()),
                                             mine && init.has_raw_data() ? mine->mutable_raw_data() : nullptr);
    if (mine) onnx::TensorProto().Swap(mine);  // frees what is left of its storage
  }

  for (const auto& input : g.input()) {
    if (graph.initializers.count(input.name())) continue;  // IR < 4 lists initializers as inputs
    if (!graph.input_name.empty())
      throw conversion_error("the model has two inputs, '" + graph.input_name + "' and '" + input.name() +
                             "'; convmat-onnx takes networks with one");
    graph.input_name = input.name();
    const auto& type = input.type().tensor_type();
    if (!input.type().has_tensor_type() ||
        (type.elem_type() != onnx::TensorProto::FLOAT && type.elem_type() != onnx::TensorProto::DOUBLE))
      throw conversion_error("input '" + input.name() + "' is not a float tensor");
    const auto& shape = type.shape();
    if (shape.dim_size() < 2)
      throw conversion_error("input '" + input.name() + "' has " + std::to_string(shape.dim_size()) +
                             " dimensions; it must have a batch dimension and at least one more");
    if (shape.dim(0).has_dim_value()) graph.static_batch = shape.dim(0).dim_value();
    for (int d = 1; d < shape.dim_size(); ++d) {
      if (!shape.dim(d).has_dim_value() || shape.dim(d).dim_value() <= 0)
        throw conversion_error("input '" + input.name() + "' dimension " + std::to_string(d) +
                               " is not a fixed positive size; only the batch dimension may vary");
      graph.input_shape.push_back(shape.dim(d).dim_value());
    }
    (void)checked_numel(graph.input_shape, "input '" + input.name() + "'");
  }
  if (graph.input_name.empty()) throw conversion_error("the model has no input");
  if (g.output_size() != 1)
    throw conversion_error("the model has " + std::to_string(g.output_size()) +
                           " outputs; convmat-onnx takes networks with one");
  graph.output_name = g.output(0).name();

  graph.nodes = read_nodes(g, nullptr, "");
  return graph;
}

}  // namespace

Graph read_graph(const onnx::ModelProto& model) { return read(model, nullptr); }

Graph read_graph(onnx::ModelProto&& model) { return read(model, &model); }

}  // namespace convmat::mlp
