// The fast paths' building blocks: AxisMap::interior (the run of outputs
// whose tap reads inside the input, copied as one block by unfold) and
// convolve_unfold's panels, on layers long enough to span many
// blocks, in every padding mode.
#include <convmat/direct.hpp>
#include <convmat/unfold.hpp>

#include "support/catch.hpp"
#include "support/random.hpp"

using namespace convmat_test;
using convmat::Index;

TEST_CASE("AxisMap::interior is exactly the unpadded run of each tap", "[unfold][geometry][property]") {
  auto rng = generator("axis interior");
  for (int i = 0; i < 3000; ++i) {
    const Index input = uniform(rng, 1, 20), kernel = uniform(rng, 1, 5), stride = uniform(rng, 1, 4);
    const Index dilation = uniform(rng, 1, 3), pad = uniform(rng, 0, std::min<Index>(input - 1, 4));
    const auto mode = static_cast<convmat::PaddingMode>(uniform(rng, 0, 3));
    const Index extent = input + 2 * pad - dilation * (kernel - 1);
    if (extent < 1) continue;
    const Index output = (extent - 1) / stride + 1;
    const convmat::detail::AxisMap axis(input, output, kernel, stride, dilation, pad, mode);
    INFO("case " << i << ": input=" << input << " kernel=" << kernel << " stride=" << stride << " dilation="
                 << dilation << " pad=" << pad << " mode=" << mode);
    for (Index k = 0; k < kernel; ++k) {
      const auto& run = axis.interior(k);
      REQUIRE(run.begin <= run.end);
      if (run.begin < run.end) REQUIRE(run.step == stride);
      for (Index o = 0; o < output; ++o) {
        const Index p = o * stride + k * dilation - pad;
        const bool inside = 0 <= p && p < input;
        REQUIRE(inside == (run.begin <= o && o < run.end));
        if (inside) REQUIRE(axis.source(o, k) == run.first + (o - run.begin) * run.step);
      }
    }
  }
}

TEST_CASE("convolve_unfold over many column blocks equals the direct convolution", "[unfold][property]") {
  auto rng = generator("unfold blocks");
  const auto check = [&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 25; ++i) {
      const auto spec = random_long_spec<Rank>(rng);
      const auto g = convmat::detail::geometry(spec);
      INFO("case " << i << ": " << describe(spec));
      REQUIRE(convmat::detail::Panels(g.output_spatial, 1, 1).splits > 1);  // several panels per sample
      const auto w = random_vector<double>(rng, spec.weight_numel());
      const auto x = random_matrix<double>(rng, spec.input_numel(), 2);
      REQUIRE(relative_error(convmat::convolve_unfold(spec, w, x), convmat::convolve(spec, w, x)) <= 1e-12);
      // and unfold / fold on the same layer stay adjoint
      const auto columns = random_matrix<double>(rng, spec.in_channels * g.kernel_numel, g.output_spatial);
      const double lhs = convmat::unfold(spec, x.col(0)).cwiseProduct(columns).sum();
      const double rhs = x.col(0).dot(convmat::fold(spec, columns));
      REQUIRE(std::abs(lhs - rhs) <= 1e-9 * std::max(1.0, std::abs(lhs)));
    }
  };
  check(RankTag<2>{});
  check(RankTag<3>{});
}

TEST_CASE("for_each_row_taps visits every row once with its taps", "[dense][sparse][geometry][property]") {
  auto rng = generator("row taps");
  for_ranks([&](auto tag) {
    constexpr int Rank = decltype(tag)::value;
    for (int i = 0; i < 300; ++i) {
      const auto spec = random_spec<Rank>(rng);
      const auto g = convmat::detail::geometry(spec);
      const Index rows = g.output_numel(), begin = uniform(rng, 0, rows), end = uniform(rng, begin, rows);
      const Index block = uniform(rng, 1, 5);
      INFO("case " << i << ": " << describe(spec) << ", rows [" << begin << ", " << end << "), block " << block);
      std::vector<int> visits(static_cast<std::size_t>(rows), 0);
      std::vector<convmat::detail::Tap> expected;
      bool same_taps = true;
      convmat::detail::for_each_row_taps(
          g, begin, end,
          [&](Index r, const convmat::detail::Tap* taps_begin, const convmat::detail::Tap* taps_end) {
            ++visits[static_cast<std::size_t>(r)];
            g.taps_at(r % g.output_spatial, expected);
            same_taps = same_taps && taps_end - taps_begin == static_cast<std::ptrdiff_t>(expected.size()) &&
                        std::equal(expected.begin(), expected.end(), taps_begin, [](const auto& a, const auto& b) {
                          return a.offset == b.offset && a.tap == b.tap;
                        });
          },
          block);
      REQUIRE(same_taps);
      for (Index r = 0; r < rows; ++r) REQUIRE(visits[static_cast<std::size_t>(r)] == (begin <= r && r < end ? 1 : 0));
    }
  });
}
