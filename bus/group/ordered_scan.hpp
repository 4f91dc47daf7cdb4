// The per_key mode of a consumer group: the scratch set of keys a scan holds
// back. The scan itself is ConsumerCore::receive_ordered, in
// ordered_scan.cpp; docs/protocol.md ("Ordered groups (per_key)") gives the
// rule and its proof.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace shmbus::bus {

/// A set of exact 64-bit message keys (no hashing into lanes: two keys never
/// share a slot of the set, so one held-back key never holds back another).
/// Open addressing with linear probing, sized at reserve() to at least twice
/// the most keys a scan can add, so it is never more than half full. Each
/// entry carries the generation that wrote it: clear() starts a new
/// generation instead of touching the table. Not thread-safe: one per
/// consumer.
class BlockedKeys {
 public:
  /// Allocates room for up to `max_keys` keys per generation. Not on the
  /// receive path: called once, at join.
  void reserve(std::size_t max_keys);

  /// Forgets every key, in O(1) (a new generation).
  void clear() noexcept {
    if (++gen_ == 0) {  // wrapped: entries of generation 0 would look current
      for (Entry& e : table_) e.gen = 0;
      gen_ = 1;
    }
  }

  /// Whether `key` was added since the last clear().
  [[nodiscard]] bool contains(std::uint64_t key) const noexcept {
    for (std::uint64_t i = home(key);; i = (i + 1) & mask_) {
      const Entry& e = table_[i];
      if (e.gen != gen_) return false;
      if (e.key == key) return true;
    }
  }

  /// Adds `key` (no effect if it is there). At most max_keys distinct keys
  /// per generation (reserve()).
  void insert(std::uint64_t key) noexcept {
    for (std::uint64_t i = home(key);; i = (i + 1) & mask_) {
      Entry& e = table_[i];
      if (e.gen != gen_) {
        e = {key, gen_};
        return;
      }
      if (e.key == key) return;
    }
  }

 private:
  struct Entry {
    std::uint64_t key = 0;
    std::uint32_t gen = 0;
  };
  [[nodiscard]] std::uint64_t home(std::uint64_t key) const noexcept {
    // Fibonacci hashing: keys that differ only in their low bits (counters,
    // account numbers) still spread over the table.
    return (key * 0x9E3779B97F4A7C15ULL) >> shift_;
  }

  std::vector<Entry> table_;
  std::uint64_t mask_ = 0;
  std::uint32_t shift_ = 63;
  std::uint32_t gen_ = 1;
};

}  // namespace shmbus::bus
