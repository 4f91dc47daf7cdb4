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
  woken,       ///< woken by futex_wake (or spuriously): re-check the condition
  changed,     ///< the word no longer held `expected` when the wait began
  timed_out,   ///< the timeout expired
  interrupted  ///< a signal interrupted the wait
};

/// Sleeps while *word == expected, at most timeout_ns (CLOCK_MONOTONIC,
/// FUTEX_WAIT_BITSET). Thread-safe; any number of waiters.
FutexWait futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected, std::uint64_t timeout_ns) noexcept;

/// Wakes up to `count` waiters on word; returns how many were woken.
/// Thread-safe.
int futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;

}  // namespace shmbus::shm

namespace shmbus::shm {

// A sleeping flag beside a futex word, so that a waker pays for FUTEX_WAKE
// only while somebody may sleep. A flag rather than a count: a sleeper killed
// in its sleep cannot leave a count that never returns to zero; a stale flag
// costs the next waker one wake-up and is cleared by it.
//
// Sleeper:  v = announce_sleep(flag, word); if (!condition()) futex_wait(&word, v, t);
// Waker:    make condition true (seq_cst or release + the flag load below);
//           wake_sleepers(flag, word);
// SYNC(sleep-flag): the sleeper's seq_cst flag store + fence before it
// re-checks the condition pairs with the waker's seq_cst flag load after it
// made the condition true: either the sleeper sees the condition, or the
// waker sees the flag (Dekker). The word increment (release) pairs with the
// sleeper's acquire load of the word.

/// Raises the sleeping flag and returns the word value to sleep on.
/// Thread-safe; call before the last re-check of the condition.
///
/// The word is read *before* the flag is raised: a waker that lowers the
/// flag after we raised it increments the word after lowering it, hence after
/// our read, so our futex_wait returns at once instead of missing the wake-up
/// that a later waker (seeing the flag down) skips.
inline std::uint32_t announce_sleep(std::atomic<std::uint32_t>& flag, std::atomic<std::uint32_t>& word) noexcept {
  const std::uint32_t seen = word.load(std::memory_order_acquire);
  flag.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return seen;
}

/// Wakes every sleeper if the flag is raised (and lowers it). Costs one
/// seq_cst load when nobody sleeps. Thread-safe.
inline void wake_sleepers(std::atomic<std::uint32_t>& flag, std::atomic<std::uint32_t>& word) noexcept {
  if (flag.load(std::memory_order_seq_cst) != 0 && flag.exchange(0, std::memory_order_seq_cst) != 0) {
    word.fetch_add(1, std::memory_order_release);
    futex_wake(&word, 0x7fffffff);
  }
}

}  // namespace shmbus::shm
