// The SIGBUS guard: keeps a process alive when a file it has mapped shrinks.
//
// Touching a mapped page past the end of its file raises SIGBUS, which kills
// the process by default. Any process that may open a segment read-write
// can ftruncate it, so without a guard one `truncate -s 0` kills every
// participant of a channel. The guard is a process-wide SIGBUS handler over a
// fixed, lock-free table of registered mappings: a fault inside one of them
// replaces every registered mapping of the same segment (same key) with
// private zero pages (MAP_FIXED anonymous), writes the segment's marker word
// into the replacement if one was asked for, and returns, so the faulting
// access is retried on the new pages. The process keeps running, detached
// from the lost file; the layer above reads the marker and reports the loss.
//
// A SIGBUS that is not a fault on a registered mapping goes to the handler
// that was installed before ours (or the default action). Setting
// SHMBUS_SIGBUS_GUARD=0 in the environment leaves SIGBUS alone (a fault then
// kills the process as before). Registration fails soft: with the table full
// (kMaxGuarded mappings) a mapping is simply not guarded.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmbus::shm::fault_guard {

inline constexpr int kMaxGuarded = 8192;

/// Registers [base, base + length) as a mapping of segment `key`. On loss it
/// is remapped with `writable` protection and, if marker_offset < length, the
/// 64-bit `marker_value` is written at base + marker_offset. Returns the slot
/// to pass to unregister_mapping, or -1 (not guarded). Thread-safe.
int register_mapping(void* base, std::size_t length, std::uint64_t key, bool writable, std::uint64_t marker_offset,
                     std::uint64_t marker_value) noexcept;

/// Forgets a registration (before the range is unmapped). Thread-safe.
void unregister_mapping(int slot) noexcept;

/// True if a registered mapping of segment `key` has been replaced.
/// Thread-safe.
bool lost(std::uint64_t key) noexcept;

/// A fresh process-unique segment key. Thread-safe.
std::uint64_t new_key() noexcept;

/// Whether the handler is installed (false when disabled by the
/// environment). Installs it on first call. Thread-safe.
bool installed() noexcept;

}  // namespace shmbus::shm::fault_guard
