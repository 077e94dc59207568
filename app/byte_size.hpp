// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The --max-bytes value of the two commands, convmat and convmat-onnx: one
// parser, so both take the same sizes.
#pragma once

#include <cctype>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <convmat/limits.hpp>

namespace convmat_tools {

/// "8G", "1.5G", "512MiB", "64kb", "1000000" (bytes; K, M, G, T, P are
/// powers of 1024, with or without B or iB, any case), "none" or
/// "unlimited" (convmat::no_limit). std::nullopt for anything else,
/// including a size beyond std::size_t.
inline std::optional<std::size_t> parse_byte_size(std::string_view text) {
  if (text == "none" || text == "unlimited") return convmat::no_limit;
  std::size_t i = 0;
  std::uint64_t whole = 0;
  const auto digit = [&](std::size_t at) { return at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])); };
  if (!digit(0)) return std::nullopt;
  for (; digit(i); ++i) {
    const unsigned d = static_cast<unsigned>(text[i] - '0');
    if (whole > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return std::nullopt;
    whole = whole * 10 + d;
  }
  // A fraction: at most 18 digits are kept (exact to well below a byte).
  std::uint64_t fraction = 0, scale = 1;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!digit(i)) return std::nullopt;
    for (; digit(i); ++i)
      if (scale < 1000000000000000000ull) fraction = fraction * 10 + static_cast<unsigned>(text[i] - '0'), scale *= 10;
  }
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  for (int u = 0; u < 5; ++u) {
    const std::string unit(1, "KMGTP"[u]);
    if (suffix == unit || suffix == unit + "B" || suffix == unit + "IB") shift = 10 * (u + 1);
  }
  if (shift < 0 || whole > (std::numeric_limits<std::uint64_t>::max() >> shift)) return std::nullopt;
  // whole << shift, plus fraction / scale of 2^shift, rounded down: a
  // fraction of a byte is no byte.
  const auto extra = static_cast<std::uint64_t>(static_cast<long double>(fraction) / static_cast<long double>(scale) *
                                                static_cast<long double>(std::uint64_t{1} << shift));
  const std::uint64_t bytes = whole << shift;
  if (bytes > std::numeric_limits<std::uint64_t>::max() - extra) return std::nullopt;
  if (bytes + extra > std::numeric_limits<std::size_t>::max()) return std::nullopt;
  return static_cast<std::size_t>(bytes + extra);
}

/// What --max-bytes takes, for its error message.
inline constexpr const char* byte_size_forms = "a size like 8G, 1.5G, 512M, 1000000 or 'none'";

}  // namespace convmat_tools
