// The golden cases of tests/data/layers_golden.txt (made by
// tools/make_layer_golden.py): blocks of `key value...` lines after a
// `case NAME` line.
#pragma once

#include <convmat/spec.hpp>

#include <Eigen/Core>
#include <array>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"

namespace convmat_test {

using convmat::Index;

/// One block of the golden file: `key value...` lines.
struct GoldenCase {
  std::string name;
  std::map<std::string, std::vector<std::string>> fields;

  const std::vector<std::string>& at(const std::string& key) const {
    const auto it = fields.find(key);
    if (it == fields.end()) FAIL("golden case " << name << " has no field " << key);
    return it->second;
  }
  std::string text(const std::string& key) const { return at(key).at(0); }
  Index integer(const std::string& key) const { return std::stoll(at(key).at(0)); }
  Eigen::VectorXd vector(const std::string& key) const {
    const auto& values = at(key);
    Eigen::VectorXd v(static_cast<Index>(values.size()));
    for (std::size_t i = 0; i < values.size(); ++i) v(static_cast<Index>(i)) = std::stod(values[i]);
    return v;
  }
  template <int Rank>
  std::array<Index, Rank> sizes(const std::string& key) const {
    const auto& values = at(key);
    REQUIRE(values.size() == static_cast<std::size_t>(Rank));
    std::array<Index, Rank> a{};
    for (int d = 0; d < Rank; ++d) a[d] = std::stoll(values[static_cast<std::size_t>(d)]);
    return a;
  }
};

inline const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    const std::string path = std::string(CONVMAT_TEST_DATA_DIR) + "/layers_golden.txt";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::vector<GoldenCase> result;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream words(line);
      std::string key, value;
      words >> key;
      if (key == "case") {
        result.emplace_back();
        words >> result.back().name;
        continue;
      }
      auto& values = result.back().fields[key];
      while (words >> value) values.push_back(value);
    }
    return result;
  }();
  return cases;
}

/// The golden cases of one kind; fails if there are none.
inline std::vector<const GoldenCase*> cases_of(const std::string& kind) {
  std::vector<const GoldenCase*> found;
  for (const auto& c : golden_cases())
    if (c.text("kind") == kind) found.push_back(&c);
  REQUIRE(!found.empty());
  return found;
}

}  // namespace convmat_test
