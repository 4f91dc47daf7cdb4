// The benchmark histogram's arithmetic against exact answers: bucket
// boundaries, the relative error bound, nearest-rank percentiles against a
// sorted copy of the samples, merge and reset.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "histogram.hpp"

using shmbus::benchutil::Histogram;

namespace {

/// Nearest rank on the sorted samples: the smallest value with at least p %
/// of the samples at or below it.
std::uint64_t exact_percentile(std::vector<std::uint64_t> v, double p) {
  std::sort(v.begin(), v.end());
  if (p <= 0) return v.front();
  std::size_t rank = 0;
  while (static_cast<double>(rank) < p / 100.0 * static_cast<double>(v.size()) - 1e-9) ++rank;
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

}  // namespace

TEST_CASE("values below 2^kSubBits have a bucket of their own") {
  for (std::uint64_t v = 0; v < Histogram::kSub; ++v) {
    REQUIRE(Histogram::index_of(v) == v);
    REQUIRE(Histogram::lowest_of(v) == v);
    REQUIRE(Histogram::highest_of(v) == v);
  }
}

TEST_CASE("buckets tile the whole 64-bit range without gaps or overlaps") {
  REQUIRE(Histogram::lowest_of(0) == 0);
  for (std::size_t i = 1; i < Histogram::kBuckets; ++i) {
    INFO("bucket " << i);
    REQUIRE(Histogram::lowest_of(i) == Histogram::highest_of(i - 1) + 1);
    REQUIRE(Histogram::index_of(Histogram::lowest_of(i)) == i);
    REQUIRE(Histogram::index_of(Histogram::highest_of(i)) == i);
  }
  REQUIRE(Histogram::highest_of(Histogram::kBuckets - 1) == UINT64_MAX);
  REQUIRE(Histogram::index_of(UINT64_MAX) == Histogram::kBuckets - 1);
}

TEST_CASE("a bucket is at most 2^-kSubBits of its values wide") {
  for (std::size_t i = Histogram::kSub; i < Histogram::kBuckets; ++i) {
    const double width = static_cast<double>(Histogram::highest_of(i) - Histogram::lowest_of(i) + 1);
    REQUIRE(width / static_cast<double>(Histogram::lowest_of(i)) <= 1.0 / Histogram::kSub + 1e-12);
  }
}

TEST_CASE("percentiles match the exact nearest rank within one bucket, never below it") {
  std::mt19937_64 rng(42);
  // A latency-like shape: a narrow body and a long tail.
  std::lognormal_distribution<double> body(6.0, 0.3);
  std::exponential_distribution<double> tail(1.0 / 50'000.0);
  std::vector<std::uint64_t> samples;
  Histogram h;
  for (int i = 0; i < 200'000; ++i) {
    const double x = (i % 100 == 0) ? tail(rng) : body(rng);
    const auto v = static_cast<std::uint64_t>(x);
    samples.push_back(v);
    h.record(v);
  }
  REQUIRE(h.count() == samples.size());
  REQUIRE(h.min() == *std::min_element(samples.begin(), samples.end()));
  REQUIRE(h.max() == *std::max_element(samples.begin(), samples.end()));
  for (double p : {0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0}) {
    const std::uint64_t want = exact_percentile(samples, p);
    const std::uint64_t got = h.percentile(p);
    INFO("p" << p << ": exact " << want << ", histogram " << got);
    REQUIRE(got >= want);
    REQUIRE(Histogram::index_of(got) == Histogram::index_of(want));
  }
  double sum = 0;
  for (std::uint64_t v : samples) sum += static_cast<double>(v);
  REQUIRE(h.mean() == Approx(sum / static_cast<double>(samples.size())));
}

TEST_CASE("nearest rank on a small exact set") {
  Histogram h;
  for (std::uint64_t v = 1; v <= 10; ++v) h.record(v * 10);  // 10, 20, ..., 100: exact buckets
  REQUIRE(h.percentile(50) == 50);                           // rank 5
  REQUIRE(h.percentile(90) == 90);                           // rank 9
  REQUIRE(h.percentile(91) == 100);                          // rank 10
  REQUIRE(h.percentile(10) == 10);                           // rank 1
  REQUIRE(h.percentile(10.5) == 20);                         // rank 2
  REQUIRE(h.percentile(0) == 10);
  REQUIRE(h.percentile(100) == 100);
}

TEST_CASE("merge adds samples; reset forgets them") {
  Histogram a, b;
  for (std::uint64_t v = 0; v < 1000; ++v) a.record(v);
  for (std::uint64_t v = 1000; v < 3000; ++v) b.record(v);
  a.merge(b);
  REQUIRE(a.count() == 3000);
  REQUIRE(a.min() == 0);
  REQUIRE(a.max() == 2999);
  REQUIRE(Histogram::index_of(a.percentile(50)) == Histogram::index_of(1499));
  a.reset();
  REQUIRE(a.count() == 0);
  REQUIRE(a.percentile(50) == 0);
  REQUIRE(a.max() == 0);
}
