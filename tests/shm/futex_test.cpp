// Process-shared futex: bounded waits, wake-ups across processes.
#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <shmbus/shm/clock.hpp>
#include <shmbus/shm/futex.hpp>

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

TEST_CASE("a process sleeping on a shared futex is woken by another process") {
  void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  auto* word = new (mem) std::atomic<std::uint32_t>(0);
  auto* waiting = new (static_cast<char*>(mem) + 64) std::atomic<std::uint32_t>(0);
  const pid_t child = fork_child([&] {
    waiting->store(1, std::memory_order_seq_cst);
    while (word->load(std::memory_order_acquire) == 0) {
      (void)futex_wait(word, 0, 10'000'000'000ULL);
    }
    return word->load() == 5 ? 0 : 1;
  });
  while (waiting->load(std::memory_order_seq_cst) == 0) cpu_relax();
  word->store(5, std::memory_order_release);
  futex_wake(word, 1);
  CHECK(wait_child(child) == 0);
  ::munmap(mem, 4096);
}
