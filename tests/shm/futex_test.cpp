// Process-shared futex: bounded waits, wake-ups across processes.
#include <catch2/catch.hpp>

#include <sched.h>
#include <sys/mman.h>

#include "shm/clock.hpp"
#include "shm/futex.hpp"

#include "test_support.hpp"

using namespace shmbus::shm;
using namespace shmbus::test;

TEST_CASE("a futex wait on a changed word returns at once") {
  std::atomic<std::uint32_t> w{1};
  CHECK(futex_wait(&w, 0, 1'000'000'000ULL) == FutexWait::changed);
}

TEST_CASE("a futex wait times out at its deadline") {
  std::atomic<std::uint32_t> w{0};
  const auto t0 = monotonic_ns();
  CHECK(futex_wait(&w, 0, 20'000'000ULL) == FutexWait::timed_out);
  CHECK(monotonic_ns() - t0 >= 20'000'000ULL);
}

TEST_CASE("a process asleep on a shared futex for 60 s is woken by another process's futex_wake") {
  // The child sleeps once, on a word nobody changes, with a 60 s timeout:
  // only a FUTEX_WAKE ends that sleep early, so the child reports `woken`
  // only if the wake-up arrived. A lost wake-up keeps it asleep past the
  // 20 s bound below (and past the test's ctest TIMEOUT): the test fails
  // instead of passing slowly.
  void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  auto* word = new (mem) std::atomic<std::uint32_t>(0);
  Child sleeper([&] {
    FutexWait r = FutexWait::interrupted;
    while (r == FutexWait::interrupted) r = futex_wait(word, 0, 60'000'000'000ULL);
    return r == FutexWait::woken ? 0 : 10 + static_cast<int>(r);
  });
  // A wake-up before the child sleeps wakes nobody (futex_wake returns 0):
  // wake until the child has gone, and count whom we woke.
  int woken = 0;
  const std::uint64_t bound = monotonic_ns() + 20'000'000'000ULL;
  while (!sleeper.try_wait() && monotonic_ns() < bound) {
    woken += futex_wake(word, 1);
    ::sched_yield();
  }
  INFO("futex_wake woke " << woken << " sleeper(s)");
  REQUIRE(sleeper.reaped());   // else it still sleeps: the wake-up was lost
  CHECK(sleeper.wait() == 0);  // 10 + FutexWait: 11 changed, 12 timed_out
  CHECK(woken == 1);
  ::munmap(mem, 4096);
}
