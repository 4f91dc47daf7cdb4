// Helpers shared by the consumer-group tests that fork consumers and kill
// them (group_process_test.cpp, ordered_process_test.cpp): waits and spins,
// the group's floor read straight from its entry, and the kill target, the
// handshake by which the parent makes the first consumer that reaches a
// phase report it and hold there until it is killed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>

#include <csignal>

#include <unistd.h>

#include "api/detail.hpp"
#include "bus/group/membership.hpp"

#include <shmbus/shmbus.hpp>

namespace shmbus::test {

inline constexpr int kKilled = 128 + SIGKILL;  ///< Child::wait's code for a SIGKILLed child

/// Milliseconds from now until `deadline`, 0 if it has passed.
[[maybe_unused]] inline int ms_left(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

/// Parks a child until it is killed.
[[noreturn, maybe_unused]] inline void pause_forever() {
  for (;;) ::pause();
}

/// Burns `iterations` loop turns: a random, unsynchronised delay.
inline void spin_for(std::uint64_t iterations) {
  for (std::uint64_t i = 0; i < iterations; ++i) asm volatile("" ::: "memory");
}

/// The group's floor, read straight from its entry (cheap enough to poll;
/// Channel::stats() makes liveness system calls for every table entry).
inline std::uint64_t group_floor(const Channel& ch, std::string_view group) {
  const int gi = bus::find_group(*shmbus::detail::state_of(ch), group);
  if (gi < 0) return 0;
  return shmbus::detail::state_of(ch)->group(static_cast<std::uint32_t>(gi))->floor.load(std::memory_order_acquire);
}

/// A phase the parent wants the first consumer that gets there to report
/// (and maybe hold in, until it is killed). In a MAP_SHARED mapping.
struct KillTarget {
  std::atomic<std::uint32_t> armed;  ///< 1: wanted
  std::atomic<std::uint32_t> phase;
  std::atomic<std::uint32_t> after;    ///< only once the ledgers hold this many records
  std::atomic<std::uint32_t> hold;     ///< 1: stay in the phase until killed
  std::atomic<std::uint32_t> reached;  ///< 1 + ledger index of the consumer that got there
};
inline constexpr std::uint32_t kCancelled = ~0u;  ///< `reached` when the parent gave up waiting

/// Consumer `me` reaches `phase`, with `records` ledger records written so
/// far: if it is the first one there that the parent wants, it says so and,
/// if asked to hold, spins until it is killed (at most `bound`; then it
/// exits 17: the parent failed already).
inline void reach(KillTarget& k, int me, std::uint32_t phase, std::uint32_t records, std::chrono::seconds bound) {
  // relaxed: the fields are published by the release store of `armed`.
  if (k.armed.load(std::memory_order_acquire) == 0 || k.phase.load(std::memory_order_relaxed) != phase ||
      k.reached.load(std::memory_order_relaxed) != 0 || records < k.after.load(std::memory_order_relaxed)) {
    return;
  }
  // The first consumer there is the victim (the parent may cancel first).
  std::uint32_t none = 0;
  const auto mine = static_cast<std::uint32_t>(me) + 1;
  if (!k.reached.compare_exchange_strong(none, mine, std::memory_order_acq_rel)) return;
  if (k.hold.load(std::memory_order_relaxed) == 0) return;
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < deadline) spin_for(1000);
  ::_exit(17);
}

}  // namespace shmbus::test
