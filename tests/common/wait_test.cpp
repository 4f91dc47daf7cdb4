// The shared wait loop (bus/common/wait.hpp) on its own, with conditions the
// tests control: what ends a wait, the saturating deadline, and a sleeper
// woken through the sleeping flag and the futex word.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <limits>
#include <thread>

#include "bus/common/wait.hpp"

using namespace shmbus;
using shmbus::bus::WaitPlan;

namespace {

// A plan on the test's own flag and futex word.
struct Sleep {
  std::atomic<std::uint32_t> sleeping{0};
  std::atomic<std::uint32_t> futex{0};
  WaitPlan plan(std::uint64_t timeout_ns, WaitStrategy strategy, std::uint64_t max_sleep_ns) {
    return WaitPlan{timeout_ns, strategy, max_sleep_ns, &sleeping, &futex};
  }
};

}  // namespace

TEST_CASE("a wait whose condition already holds returns it after one poll, before any look") {
  Sleep s;
  int polls = 0;
  int looks = 0;
  const PollStatus st = bus::wait_until(
      s.plan(1'000'000'000, WaitStrategy::block, 1'000'000),
      [&] {
        ++polls;
        return PollStatus::ok;
      },
      [&](std::uint64_t) {
        ++looks;
        return PollStatus::empty;
      },
      [] {});
  CHECK(st == PollStatus::ok);
  CHECK(polls == 1);
  CHECK(looks == 0);
}

TEST_CASE("a wait of the largest timeout saturates its deadline instead of wrapping into the past") {
  // now + UINT64_MAX wraps to just before now: a wait computing it so would
  // time out at its first look. The third look ends this one instead.
  Sleep s;
  int looks = 0;
  const PollStatus st = bus::wait_until(
      s.plan(std::numeric_limits<std::uint64_t>::max(), WaitStrategy::backoff, 1000), [] { return PollStatus::empty; },
      [&](std::uint64_t) { return ++looks == 3 ? PollStatus::ok : PollStatus::empty; }, [] {});
  CHECK(st == PollStatus::ok);
  CHECK(looks == 3);
}

TEST_CASE("a wait whose condition never holds spins, then times out") {
  for (const WaitStrategy strategy :
       {WaitStrategy::busy_spin, WaitStrategy::yield, WaitStrategy::backoff, WaitStrategy::block}) {
    CAPTURE(static_cast<int>(strategy));
    Sleep s;
    int polls = 0;
    const PollStatus st = bus::wait_until(
        s.plan(2'000'000, strategy, 100'000),
        [&] {
          ++polls;
          return PollStatus::empty;
        },
        [](std::uint64_t) { return PollStatus::empty; }, [] {});
    CHECK(st == PollStatus::timeout);
    CHECK(polls >= 1 + bus::kSpinBeforeWaiting);  // the first poll and the spin always run
  }
}

TEST_CASE("what a look finds (a removed channel) ends the wait with its status") {
  Sleep s;
  const PollStatus st = bus::wait_until(
      s.plan(std::numeric_limits<std::uint64_t>::max(), WaitStrategy::block, 1'000'000),
      [] { return PollStatus::empty; }, [](std::uint64_t) { return PollStatus::removed; }, [] {});
  CHECK(st == PollStatus::removed);
}

TEST_CASE("a sleeper on the futex is woken by a waker that makes the condition true and calls wake_sleepers") {
  // The waker acts once the sleeper has raised its sleeping flag (an event:
  // the sleeper is past its spin and about to re-check, then sleep). With
  // no timeout and a one-minute slice, only the wake-up (or the re-check
  // seeing the condition) can end the wait.
  Sleep s;
  std::atomic<bool> ready{false};
  std::atomic<int> slept{0};
  std::thread waker([&] {
    while (s.sleeping.load(std::memory_order_seq_cst) == 0) std::this_thread::yield();
    ready.store(true, std::memory_order_seq_cst);
    shm::wake_sleepers(s.sleeping, s.futex);
  });
  const auto poll = [&] { return ready.load(std::memory_order_seq_cst) ? PollStatus::ok : PollStatus::empty; };
  const PollStatus st = bus::wait_until(
      s.plan(std::numeric_limits<std::uint64_t>::max(), WaitStrategy::block, 60'000'000'000ULL), poll,
      [&](std::uint64_t) { return poll(); }, [&] { slept.fetch_add(1, std::memory_order_relaxed); });
  waker.join();
  CHECK(st == PollStatus::ok);
  CHECK(slept.load() <= 1);  // at most the one sleep the waker ended
}
