#include "shm/futex.hpp"

#include <cerrno>
#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shm/clock.hpp"

namespace shmbus::shm {

namespace {
// The futex syscall operates on the 32-bit word itself; std::atomic<uint32_t>
// is layout-compatible with uint32_t on every platform we build for.
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

std::uint32_t* raw(std::atomic<std::uint32_t>* word) noexcept { return reinterpret_cast<std::uint32_t*>(word); }
}  // namespace

FutexWait futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected, std::uint64_t timeout_ns) noexcept {
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (plain
  // FUTEX_WAIT's relative timeout would restart from zero after EINTR).
  const std::uint64_t deadline = monotonic_ns() + timeout_ns;
  timespec abs{static_cast<time_t>(deadline / 1'000'000'000ULL), static_cast<long>(deadline % 1'000'000'000ULL)};
  // Shared futex: no FUTEX_PRIVATE_FLAG, the word lives in MAP_SHARED memory.
  const long rc = ::syscall(SYS_futex, raw(word), FUTEX_WAIT_BITSET, expected, &abs, nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return FutexWait::woken;
  switch (errno) {
    case EAGAIN: return FutexWait::changed;
    case ETIMEDOUT: return FutexWait::timed_out;
    case EINTR: return FutexWait::interrupted;
    default: return FutexWait::woken;  // treat as spurious: callers re-check
  }
}

int futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
  const long rc = ::syscall(SYS_futex, raw(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

}  // namespace shmbus::shm
