// A log-linear latency histogram in the manner of HdrHistogram: exact below
// 2^kSubBits, then every power of two [2^k, 2^(k+1)) is split into 2^kSubBits
// equal buckets, so a recorded value is known to within 2^-kSubBits of
// itself (0.78 % with 7 bits) across the whole 64-bit range, in a fixed
// array (58 * 128 counters, 59 KiB) with no allocation while recording.
//
//   index(v) = v                                          for v < 2^P
//            = (k - P + 1) * 2^P + (v >> (k - P)) - 2^P   for 2^k <= v < 2^(k+1), k >= P
//
// Percentiles use the nearest-rank rule (the smallest recorded value with at
// least p % of the samples at or below it) and report the highest value the
// chosen bucket can hold, clamped to the recorded [min, max]: never below the
// true sample, at most one bucket width (<= 2^-P relative) above it. min, max,
// count and the sum (mean) are exact.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

namespace shmbus::benchutil {

class Histogram {
 public:
  static constexpr unsigned kSubBits = 7;
  static constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;
  static constexpr std::size_t kBuckets = (65 - kSubBits) * kSub;

  /// Bucket of a value. Thread-safe (pure).
  static constexpr std::size_t index_of(std::uint64_t v) noexcept {
    if (v < kSub) return static_cast<std::size_t>(v);
    const unsigned k = static_cast<unsigned>(std::bit_width(v)) - 1;  // 2^k <= v < 2^(k+1)
    const unsigned shift = k - kSubBits;
    return static_cast<std::size_t>((k - kSubBits + 1) * kSub + (v >> shift) - kSub);
  }
  /// Smallest value of bucket i. Thread-safe (pure).
  static constexpr std::uint64_t lowest_of(std::size_t i) noexcept {
    if (i < kSub) return i;
    const std::uint64_t k = i / kSub + kSubBits - 1;
    const std::uint64_t sub = i % kSub;
    return (kSub + sub) << (k - kSubBits);
  }
  /// Largest value of bucket i. Thread-safe (pure).
  static constexpr std::uint64_t highest_of(std::size_t i) noexcept {
    if (i < kSub) return i;
    const std::uint64_t k = i / kSub + kSubBits - 1;
    return lowest_of(i) + ((std::uint64_t{1} << (k - kSubBits)) - 1);
  }

  Histogram() : counts_(kBuckets, 0) {}

  /// Records one value. No allocation. Not thread-safe: one writer.
  void record(std::uint64_t v) noexcept {
    ++counts_[index_of(v)];
    ++count_;
    sum_ += static_cast<double>(v);
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
  }

  /// Adds another histogram's samples. Not thread-safe.
  void merge(const Histogram& o) noexcept {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
  }

  /// Forgets every sample. Not thread-safe.
  void reset() noexcept {
    std::fill(counts_.begin(), counts_.end(), 0);
    count_ = 0;
    sum_ = 0;
    min_ = UINT64_MAX;
    max_ = 0;
  }

  /// The value at percentile p (0..100), nearest rank; 0 when empty.
  /// Thread-safe for concurrent readers.
  [[nodiscard]] std::uint64_t percentile(double p) const noexcept {
    if (count_ == 0) return 0;
    if (p <= 0) return min_;
    if (p >= 100) return max_;
    // rank = ceil(p/100 * n), at least 1; computed in integers where p is
    // exact so that 50 % of 10 samples is rank 5, not 5.000000001 -> 6.
    const double exact = p / 100.0 * static_cast<double>(count_);
    auto rank = static_cast<std::uint64_t>(std::ceil(exact - 1e-12 * exact));
    rank = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(highest_of(i), min_, max_);
    }
    return max_;
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t min() const noexcept { return count_ == 0 ? 0 : min_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
  [[nodiscard]] double mean() const noexcept { return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_); }
  /// Raw bucket counts (for tests and export). Thread-safe for readers.
  [[nodiscard]] const std::vector<std::uint64_t>& buckets() const noexcept { return counts_; }

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  double sum_ = 0;
  std::uint64_t min_ = UINT64_MAX;
  std::uint64_t max_ = 0;
};

/// The percentiles every report shows, then max.
inline constexpr std::array<double, 5> kReportPercentiles{50.0, 90.0, 99.0, 99.9, 99.99};
inline constexpr std::array<const char*, 6> kReportNames{"p50", "p90", "p99", "p99.9", "p99.99", "max"};

/// Points for a percentile plot (HdrHistogram's "percentile distribution"):
/// 0, 50, 75, 87.5, ... halving the distance to 100 each step, up to the
/// resolution the sample count supports, then 100.
inline std::vector<double> plot_percentiles(std::uint64_t count) {
  std::vector<double> ps{0.0};
  double tail = 50.0;
  const double finest = count > 0 ? 100.0 / static_cast<double>(count) : 100.0;
  while (tail >= finest) {
    ps.push_back(100.0 - tail);
    tail /= 2;
  }
  ps.push_back(100.0);
  return ps;
}

}  // namespace shmbus::benchutil
