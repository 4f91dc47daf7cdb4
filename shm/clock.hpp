// Clocks used by shmbus. Monotonic time drives timeouts, leases and waits;
// real time stamps messages (so "start at a timestamp" means wall-clock time).
#pragma once

#include <cstdint>
#include <ctime>

namespace shmbus::shm {

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call). Thread-safe.
inline std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

/// `start + timeout`, saturating at the largest value (a timeout of "forever"
/// must not wrap into the past).
inline constexpr std::uint64_t deadline_after(std::uint64_t start, std::uint64_t timeout) noexcept {
  return timeout > UINT64_MAX - start ? UINT64_MAX : start + timeout;
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (vDSO). Thread-safe.
inline std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

/// 64 random bits from the kernel (getrandom), for channel epochs. Thread-safe.
std::uint64_t random_u64() noexcept;

/// Relax the core for a spin iteration (PAUSE on x86). Thread-safe.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// Give up the rest of this time slice (sched_yield). Thread-safe.
void yield_cpu() noexcept;

/// Sleep for ns nanoseconds (nanosleep, restarted on EINTR). Thread-safe.
void sleep_ns(std::uint64_t ns) noexcept;

}  // namespace shmbus::shm
