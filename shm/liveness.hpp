// Process identity that survives pid reuse: a pid plus the process start time
// (field 22 of /proc/<pid>/stat, in clock ticks since boot). A recycled pid
// has a different start time, so it is never mistaken for the old owner.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace shmbus::shm {

struct ProcessId {
  std::uint32_t pid = 0;         ///< 0 means "nobody"
  std::uint64_t start_time = 0;  ///< start time in clock ticks since boot

  friend bool operator==(const ProcessId&, const ProcessId&) = default;
};

/// This process's identity (cached after the first call; refreshed after fork).
/// Thread-safe.
ProcessId self_process() noexcept;

/// Start time of pid, or 0 if the process does not exist. Thread-safe.
std::uint64_t process_start_time(std::uint32_t pid) noexcept;

enum class Liveness : std::uint8_t { alive, dead, unknown };

/// Whether the process `id` still runs: the pid exists and has the same
/// start time. `unknown` when /proc cannot be read. Thread-safe.
Liveness process_liveness(const ProcessId& id) noexcept;

/// A process identity packed in one 64-bit word: pid in the high half, the
/// low 32 bits of the start time in the low half. Lets shared memory record
/// (or replace) an owner with a single CAS. 0 means nobody.
inline std::uint64_t pack_process(const ProcessId& id) noexcept {
  return (static_cast<std::uint64_t>(id.pid) << 32) | (id.start_time & 0xffffffffULL);
}
inline std::uint32_t packed_pid(std::uint64_t packed) noexcept { return static_cast<std::uint32_t>(packed >> 32); }

/// Liveness of a packed identity (start time compared on its low 32 bits).
/// Thread-safe.
Liveness packed_liveness(std::uint64_t packed) noexcept;

}  // namespace shmbus::shm
