// Process-shared futex wait/wake on a 32-bit word in shared memory.
//
// These are *shared* futexes (no FUTEX_PRIVATE_FLAG): the word lives in a
// MAP_SHARED mapping and waiters in other processes must be found by its
// physical page. Every wait is bounded: the caller passes a timeout so it can
// re-check liveness and never sleeps forever on a dead peer.
#pragma once

#include <atomic>
#include <cstdint>

namespace shmbus::shm {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

enum class FutexWait : std::uint8_t {
  woken,      ///< woken by futex_wake (or spuriously): re-check the condition
  changed,    ///< the word no longer held `expected` when the wait began
  timed_out,  ///< the timeout expired
  interrupted ///< a signal interrupted the wait
};

/// Sleeps while *word == expected, at most timeout_ns (CLOCK_MONOTONIC,
/// FUTEX_WAIT_BITSET). Thread-safe; any number of waiters.
FutexWait futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     std::uint64_t timeout_ns) noexcept;

/// Wakes up to `count` waiters on word; returns how many were woken.
/// Thread-safe.
int futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;

}  // namespace shmbus::shm
