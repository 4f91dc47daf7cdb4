#include "shm/clock.hpp"

#include <cerrno>
#include <sched.h>
#include <sys/random.h>

namespace shmbus::shm {

std::uint64_t random_u64() noexcept {
  std::uint64_t v = 0;
  auto* p = reinterpret_cast<unsigned char*>(&v);
  std::size_t got = 0;
  while (got < sizeof v) {
    const ssize_t n = ::getrandom(p + got, sizeof v - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // No entropy source: fall back to clock bits; epochs only need to differ.
      return monotonic_ns() ^ (realtime_ns() << 17) ^ 0x9e3779b97f4a7c15ULL;
    }
  }
  return v;
}

void yield_cpu() noexcept { ::sched_yield(); }

void sleep_ns(std::uint64_t ns) noexcept {
  timespec req{static_cast<time_t>(ns / 1'000'000'000ULL), static_cast<long>(ns % 1'000'000'000ULL)};
  timespec rem{};
  while (::nanosleep(&req, &rem) != 0 && errno == EINTR) req = rem;
}

}  // namespace shmbus::shm
