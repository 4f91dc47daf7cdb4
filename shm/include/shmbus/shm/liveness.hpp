// Process identity that survives pid reuse: a pid plus the process start time
// (field 22 of /proc/<pid>/stat, in clock ticks since boot). A recycled pid
// has a different start time, so it is never mistaken for the old owner.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace shmbus::shm {

struct ProcessId {
  std::uint32_t pid = 0;          ///< 0 means "nobody"
  std::uint64_t start_time = 0;   ///< start time in clock ticks since boot

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

/// Convenience: true unless the process is known to be dead.
inline bool maybe_alive(const ProcessId& id) noexcept {
  return process_liveness(id) != Liveness::dead;
}

}  // namespace shmbus::shm
