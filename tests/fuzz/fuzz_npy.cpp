// A libFuzzer target for <convmat/npy.hpp>: the bytes are a .npy file,
// read from a stream (npy::read: header, then data) and from a file on disk
// (npy::load, which also compares the file's size with the header). For
// every input, either both refuse it with npy::error, or what they read is
// consistent:
//   - the data holds exactly numel * dtype_size bytes, and load() read the
//     same array as read() (load() refuses data past the end, read() leaves
//     it unread);
//   - the header numpy.save would write for that dtype and shape reads back
//     as the same header, and the array written with it reads back the same;
//   - the elements convert to float and double, flattened and (1-D, 2-D) as
//     a matrix, without reading out of bounds.
// Anything else — another exception, an out-of-bounds access (ASan), a leak,
// undefined behaviour (UBSan), an allocation of what a header only promises
// (libFuzzer's -malloc_limit_mb) — stops the fuzzer with the input.
//
// Build and run: ./scripts/fuzz.sh npy [seconds]   (see README, "Reliability")
#include <convmat/npy.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace npy = convmat::npy;

namespace {

[[noreturn]] void failed(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "npy fuzz: FAILED: %s %s\n", what, detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(condition)                      \
  do {                                             \
    if (!(condition)) failed("check", #condition); \
  } while (false)

/// The input as a file for npy::load, in the working folder, named by the
/// process (libFuzzer's -jobs run several in one folder), removed after use.
class InputFile {
 public:
  explicit InputFile(const std::string& bytes) : path_("convmat-fuzz-" + std::to_string(::getpid()) + ".npy") {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes;
  }
  ~InputFile() { std::remove(path_.c_str()); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// The array `f` reads, or nothing if it throws npy::error, which must
/// name the file (`name`).
template <class F>
std::optional<npy::Array> read_or_refuse(const std::string& name, F&& f) {
  try {
    return f();
  } catch (const npy::error& e) {
    FUZZ_CHECK(std::string(e.what()).find("'" + name + "'") != std::string::npos);
    return std::nullopt;
  } catch (const std::exception& e) {
    failed("an exception other than npy::error:", e.what());
  }
}

bool same(const npy::Array& a, const npy::Array& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes;
}

/// The conversions a caller uses, on an array the reader accepted.
void convert(const npy::Array& a) {
  const auto f = a.values<float>();
  const auto d = a.vector<double>();
  FUZZ_CHECK(static_cast<std::int64_t>(f.size()) == a.numel() && d.size() == a.numel());
  if (a.shape.size() == 1 || a.shape.size() == 2) {
    const auto m = a.matrix<float>();
    FUZZ_CHECK(m.size() == a.numel());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);

  std::istringstream stream(bytes);
  const auto streamed = read_or_refuse("stream.npy", [&] { return npy::read(stream, "stream.npy"); });
  const bool trailing = streamed && stream.peek() != std::char_traits<char>::eof();
  const auto loaded = [&] {
    const InputFile file(bytes);
    return read_or_refuse(file.path(), [&] { return npy::load(file.path()); });
  }();
  FUZZ_CHECK(loaded.has_value() == (streamed && !trailing));
  if (!streamed) return 0;

  const npy::Array& a = *streamed;
  FUZZ_CHECK(a.bytes.size() == static_cast<std::size_t>(a.numel()) * npy::dtype_size(a.dtype));
  if (loaded) FUZZ_CHECK(same(*loaded, a));
  convert(a);

  // What the writer makes of the same array reads back as the same array.
  std::istringstream rewritten(npy::header(a.dtype, a.shape) +
                               std::string(reinterpret_cast<const char*>(a.bytes.data()), a.bytes.size()));
  const auto again = read_or_refuse("rewritten.npy", [&] { return npy::read(rewritten, "rewritten.npy"); });
  FUZZ_CHECK(again && same(*again, a));
  FUZZ_CHECK(rewritten.peek() == std::char_traits<char>::eof());
  return 0;
}
