// Helpers shared by the fuzz targets: a private bus per process, segment
// files written from fuzz input, the small channel geometries the
// structure-aware targets use, and cleanup of everything a run created.
//
// Every target is a plain `LLVMFuzzerTestOneInput`; the same sources build
// as libFuzzer binaries (clang, -fsanitize=fuzzer,address,undefined) and as
// replay programs in the normal build (replay_main.cpp), so the corpus and
// every regression input run in every build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <shmbus/shmbus.hpp>
#include "bus/ring/channel_state.hpp"

namespace shmbus::fuzz {

/// How long an opener waits for a creator that never finishes: fuzz inputs
/// routinely hold a header whose init_state is not `ready`, and the default
/// 2 s wait would make each such input a slow unit.
inline constexpr std::uint64_t kInitWaitNs = 1'000'000;

/// Name of the channel every target writes (on fuzz_bus()).
inline constexpr const char* kChannel = "c";
/// Name of the dedup table the header target writes (on fuzz_bus()).
inline constexpr const char* kDedupTable = "d";

/// This process's private bus ("fz<pid>"), so parallel fuzzers and tests
/// never touch each other's segments. Thread-safe.
const std::string& fuzz_bus();

/// Path of a channel's segment file under /dev/shm. Thread-safe.
std::string channel_path(const std::string& channel);
/// Path of a dedup table's segment file under /dev/shm. Thread-safe.
std::string dedup_path(const std::string& table);

/// Replaces the file at `path` with exactly `bytes` (mode 0600). Aborts on an
/// I/O error: a harness that cannot write its input tests nothing.
/// Not thread-safe (one input at a time).
void write_file(const std::string& path, std::span<const std::uint8_t> bytes);

/// Reads a whole file; empty if it cannot be read. Thread-safe.
std::vector<std::uint8_t> read_file(const std::string& path);

/// Removes every channel and dedup table of fuzz_bus(): what one input
/// created (DLQ channels included) never leaks into the next.
/// Not thread-safe (one input at a time).
void remove_all_segments();

/// The small geometries of the structure-aware channel target. Small on
/// purpose: a whole segment is a few KiB, so the fuzzer's mutations land on
/// meaningful words. Unblock timeouts are short so that a stuck claim costs
/// microseconds, not seconds. Thread-safe.
std::span<const ChannelOptions> geometries();

/// The regions of a segment that hold state (the producer block, the
/// tables, the leases and the stamps; then the slots), as [offset, end)
/// pairs: the unused padding between the stamps and the page-aligned data
/// area is left out so that no mutation is wasted on it.
struct Region {
  std::uint64_t offset;
  std::uint64_t end;
};
std::vector<Region> state_regions(const bus::Geometry& g);

/// The bytes of a freshly created, empty channel with geometry `index`
/// (created once per process on fuzz_bus(), read back, then removed).
/// Not thread-safe.
const std::vector<std::uint8_t>& fresh_image(std::size_t index);

/// Where targets store a value derived from what they read (payload bytes,
/// rendered text), so the reads are not optimised away. Not thread-safe.
extern volatile std::uint64_t g_sink;

/// A byte cursor over the fuzz input: reads fixed-size values, yielding
/// zeros once the input is exhausted. Not thread-safe.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t u8() noexcept { return pos_ < size_ ? data_[pos_++] : 0; }
  [[nodiscard]] std::size_t left() const noexcept { return size_ - pos_; }
  [[nodiscard]] const std::uint8_t* here() const noexcept { return data_ + pos_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// A name stored in shared memory, if it is a valid shmbus name (1..63 of
/// [A-Za-z0-9_-]); else `fallback`. Thread-safe.
std::string valid_name_or(const char* raw, std::size_t max, const std::string& fallback);

/// The 8 bytes at `offset` of an image of `size` bytes (native order), or 0
/// past its end.
inline std::uint64_t word_at(const std::uint8_t* image, std::size_t size, std::size_t offset) {
  std::uint64_t v = 0;
  if (offset + 8 <= size) std::memcpy(&v, image + offset, 8);
  return v;
}

}  // namespace shmbus::fuzz
