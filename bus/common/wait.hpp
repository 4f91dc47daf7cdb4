// The one wait loop of bus/: a subscriber waiting for a message and a group
// consumer waiting for a delivery both poll, spin, then spend the rest of
// their timeout in the slices their WaitStrategy asks for, looking after
// each slice at what only the caller knows (a stalled claim, a removed
// channel) until the saturating deadline passes.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "bus/common/types.hpp"
#include "bus/common/util.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"

namespace shmbus::bus {

/// Polls (with a PAUSE between them) before the first clock read: a message
/// that comes within them costs no system call and no sleep.
inline constexpr int kSpinBeforeWaiting = 1000;
/// Polls between two looks at the clock under busy_spin.
inline constexpr int kBusySpinPolls = 1024;
/// Polls (each followed by sched_yield) between two looks under yield.
inline constexpr int kYieldPolls = 64;
/// The first sleep under backoff; each doubles, up to kBackoffMaxNs.
inline constexpr std::uint64_t kBackoffFirstNs = 1000;
inline constexpr std::uint64_t kBackoffMaxNs = 1'000'000;
/// While waiting, the fstat behind ChannelState::check_removed runs at most
/// this often (a waiter's `look` keeps the time of the last one).
inline constexpr std::uint64_t kRemovedCheckEveryNs = 5'000'000;

/// How a wait_until waits: for how long, how, and where it sleeps.
struct WaitPlan {
  std::uint64_t timeout_ns = 0;  ///< from the call; "forever" saturates, never wraps
  WaitStrategy strategy = WaitStrategy::block;
  /// The longest single sleep (backoff or futex), so that the caller's look
  /// runs at least this often (a stall check, a redelivery scan).
  std::uint64_t max_sleep_ns = 0;
  std::atomic<std::uint32_t>* sleeping = nullptr;  ///< the flag wakers check (shm::wake_sleepers)
  std::atomic<std::uint32_t>* futex = nullptr;     ///< the word they bump and wake
};

/// Waits until `poll` or `look` returns something other than
/// PollStatus::empty, and returns it; PollStatus::timeout once the deadline
/// (now + plan.timeout_ns, saturating) has passed.
///
/// - `poll()`: the condition, cheap and repeatable: called before the clock
///   is read, kSpinBeforeWaiting times while spinning, in the busy_spin and
///   yield slices, and as the re-check after the sleeping flag is raised
///   under block, so it must read the word a waker changes (SYNC(sleep-flag):
///   announce_sleep's seq_cst fence orders that read after the flag).
/// - `look(now)`: once per slice, after the deadline check: the caller's
///   slower checks (liveness, removal) and, if it wants, its condition again.
/// - `slept()`: after each futex sleep, woken or timed out.
///
/// Not thread-safe: the caller's own state; makes system calls once spinning
/// is over.
template <class Poll, class Look, class Slept>
PollStatus wait_until(const WaitPlan& plan, Poll&& poll, Look&& look, Slept&& slept) noexcept {
  if (const PollStatus st = poll(); st != PollStatus::empty) return st;
  const std::uint64_t deadline = deadline_after(shm::monotonic_ns(), plan.timeout_ns);
  for (int i = 0; i < kSpinBeforeWaiting; ++i) {
    shm::cpu_relax();
    if (const PollStatus st = poll(); st != PollStatus::empty) return st;
  }
  std::uint64_t backoff_ns = kBackoffFirstNs;
  for (;;) {
    const std::uint64_t now = shm::monotonic_ns();
    if (now >= deadline) return PollStatus::timeout;
    if (const PollStatus st = look(now); st != PollStatus::empty) return st;
    const std::uint64_t slice = std::min(deadline - now, plan.max_sleep_ns);
    switch (plan.strategy) {
      case WaitStrategy::busy_spin:
        for (int i = 0; i < kBusySpinPolls; ++i) {
          if (const PollStatus st = poll(); st != PollStatus::empty) return st;
          shm::cpu_relax();
        }
        break;
      case WaitStrategy::yield:
        for (int i = 0; i < kYieldPolls; ++i) {
          if (const PollStatus st = poll(); st != PollStatus::empty) return st;
          shm::yield_cpu();
        }
        break;
      case WaitStrategy::backoff:
        shm::sleep_ns(std::min(backoff_ns, slice));
        backoff_ns = std::min(backoff_ns * 2, kBackoffMaxNs);
        break;
      case WaitStrategy::block: {
        // SYNC(sleep-flag): raise the flag, then re-check the condition;
        // pairs with the waker's seq_cst change + flag check (wake_sleepers).
        const std::uint32_t seen = shm::announce_sleep(*plan.sleeping, *plan.futex);
        if (const PollStatus st = poll(); st != PollStatus::empty) return st;
        (void)shm::futex_wait(plan.futex, seen, slice);
        slept();
        break;
      }
    }
  }
}

}  // namespace shmbus::bus
