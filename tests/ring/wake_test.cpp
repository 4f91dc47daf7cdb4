// Wake-ups on a channel: a publish wakes a reader asleep on the channel's
// futex, and a reader's progress wakes a publisher asleep on a full ring.
//
// A sleeper also wakes on its own at the end of a short re-check slice
// (50 ms for a reader, 10 ms for a publisher: they re-check liveness), so a
// lost wake-up only makes the channel slower, never stuck. These tests make
// that slowness fail: each round waits until the sleeper has done the
// previous round's step and sleeps again in the kernel, on the channel's
// futex word (read from /proc: an event, not a guess), and only then wakes
// it. A working wake-up takes microseconds; a lost one costs the rest of a
// slice, nearly all of it, so lost wake-ups in every round add up to 20 s,
// twice the bound the test allows itself (the ctest TIMEOUT of 30 s that
// tests/CMakeLists.txt sets is a backstop).
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <thread>

#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "bus/ring/channel_state.hpp"
#include "shm/clock.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

/// What the rounds of one test may take in all. Healthy rounds take well
/// under a second together; lost wake-ups take 20 s.
constexpr std::uint64_t kBoundNs = 10'000'000'000ULL;
/// Longer than any test here: a sleeper's own timeout never ends a round.
constexpr std::uint64_t kLongWaitNs = 60'000'000'000ULL;

enum class Sleep { asleep, running, unknown };

/// Whether thread `tid` of this process sleeps in futex() on `word`, from
/// /proc/self/task/<tid>/syscall ("<nr> <arg0> ..." while blocked in a
/// system call, "running" otherwise).
Sleep sleeping_on(pid_t tid, const void* word) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/syscall", static_cast<int>(tid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Sleep::unknown;
  char buf[256] = {};
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return Sleep::unknown;
  long nr = -1;
  unsigned long long arg0 = 0;
  if (std::sscanf(buf, "%ld 0x%llx", &nr, &arg0) != 2) return Sleep::running;
  return nr == SYS_futex && arg0 == reinterpret_cast<std::uintptr_t>(word) ? Sleep::asleep : Sleep::running;
}

/// Waits until `ready()` holds and thread `tid` sleeps on `word` (asleep),
/// or `stop()` says to give up or the deadline passes (running), or /proc
/// cannot tell (unknown).
template <class Ready, class Stop>
Sleep await_sleep(pid_t tid, const void* word, std::uint64_t deadline, Ready ready, Stop stop) {
  for (;;) {
    if (ready()) {
      const Sleep s = sleeping_on(tid, word);
      if (s != Sleep::running) return s;
    }
    if (stop() || shm::monotonic_ns() >= deadline) return Sleep::running;
    ::sched_yield();
  }
}

pid_t this_thread_id() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

ChannelOptions wake_channel(std::uint32_t capacity) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = 128;
  o.policy = Policy::block;
  // Long enough that a reader's re-check slice is its longest (50 ms) and no
  // claim is ever taken away here.
  o.unblock_timeout_ns = kLongWaitNs;
  return o;
}

}  // namespace

TEST_CASE("a publish wakes a reader asleep in poll_wait at once, not at its re-check slice") {
  constexpr std::uint64_t kRounds = 400;  // x 50 ms if every wake-up were lost: 20 s
  ScopedChannelName name("wake-sub");
  Channel ch = make_channel(name, wake_channel(64));
  auto sub = ch.subscribe({"", StartAt::earliest(), WaitStrategy::block});
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  const void* word = &shmbus::detail::state_of(ch)->producer->sub_futex;

  std::atomic<pid_t> tid{0};
  std::atomic<std::uint64_t> read{0};  // messages the reader has read, in order
  std::atomic<bool> stopped{false};    // the reader returned (done, or a bad read)
  std::thread reader([&] {
    tid.store(this_thread_id());
    for (std::uint64_t i = 0; i < kRounds; ++i) {
      Message m;
      std::byte buf[64];
      if (sub->poll_wait(m, buf, kLongWaitNs) != PollStatus::ok || value_of<std::uint64_t>(m.payload) != i) {
        break;
      }
      read.store(i + 1);
    }
    stopped.store(true);
  });
  while (tid.load() == 0) ::sched_yield();

  const std::uint64_t start = shm::monotonic_ns();
  std::uint64_t rounds = 0;
  Sleep last = Sleep::asleep;
  for (; rounds < kRounds; ++rounds) {
    // The reader has read every earlier message and sleeps on the futex
    // again: only the publish's wake-up (or the end of its slice) gets it
    // going.
    last = await_sleep(
        tid.load(), word, start + kBoundNs, [&] { return read.load() == rounds; }, [&] { return stopped.load(); });
    if (last != Sleep::asleep) break;
    if (pub->publish(bytes_of(rounds)) != PublishStatus::ok) break;
  }
  const std::uint64_t elapsed = shm::monotonic_ns() - start;
  // Release the reader whatever happened: it reads the rest at once.
  for (std::uint64_t i = rounds; i < kRounds && !stopped.load(); ++i) {
    if (pub->publish(bytes_of(i), {}, kBoundNs) != PublishStatus::ok) break;
  }
  reader.join();
  INFO(rounds << " of " << kRounds << " wake-ups in " << elapsed / 1'000'000
              << " ms (a lost wake-up costs a 50 ms re-check slice)");
  REQUIRE(last != Sleep::unknown);  // /proc/self/task/<tid>/syscall unreadable
  CHECK(rounds == kRounds);
  CHECK(read.load() == kRounds);
}

TEST_CASE(
    "a reader's progress wakes a publisher asleep on a full ring at once, not at its re-check "
    "slice") {
  constexpr std::uint64_t kRounds = 2000;  // x 10 ms if every wake-up were lost: 20 s
  constexpr std::uint32_t kCapacity = 4;
  constexpr std::uint64_t kTotal = kRounds + kCapacity;
  ScopedChannelName name("wake-pub");
  Channel ch = make_channel(name, wake_channel(kCapacity));
  auto sub = ch.subscribe({"", StartAt::earliest(), WaitStrategy::block});
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  const void* word = &shmbus::detail::state_of(ch)->producer->pub_futex;

  // The publisher fills the ring; from then on each publish finds it full
  // and sleeps until the reader frees a slot.
  std::atomic<pid_t> tid{0};
  std::atomic<std::uint64_t> published{0};
  std::atomic<bool> stopped{false};  // the publisher returned (done, or a failed publish)
  std::thread publisher([&] {
    tid.store(this_thread_id());
    for (std::uint64_t i = 0; i < kTotal; ++i) {
      if (pub->publish(bytes_of(i), {}, kLongWaitNs) != PublishStatus::ok) break;
      published.store(i + 1);
    }
    stopped.store(true);
  });
  while (tid.load() == 0) ::sched_yield();

  const std::uint64_t start = shm::monotonic_ns();
  std::uint64_t rounds = 0;
  std::uint64_t next = 0;  // the value the reader expects
  Sleep last = Sleep::asleep;
  bool in_order = true;
  Message m;
  std::byte buf[64];
  for (; rounds < kRounds; ++rounds) {
    // The publisher has filled the ring again and sleeps on the futex: only
    // the wake-up of our read (or the end of its slice) gets it going.
    last = await_sleep(
        tid.load(), word, start + kBoundNs, [&] { return published.load() == rounds + kCapacity; },
        [&] { return stopped.load(); });
    if (last != Sleep::asleep) break;
    if (sub->poll(m, buf) != PollStatus::ok) break;
    in_order = in_order && value_of<std::uint64_t>(m.payload) == next;
    ++next;
  }
  const std::uint64_t elapsed = shm::monotonic_ns() - start;
  // Release the publisher whatever happened: read until it has returned and
  // the ring is empty.
  for (;;) {
    const bool done = stopped.load();
    const PollStatus st = sub->poll_wait(m, buf, 1'000'000);
    if (st == PollStatus::ok) {
      in_order = in_order && value_of<std::uint64_t>(m.payload) == next;
      ++next;
    } else if (done) {
      break;
    }
  }
  publisher.join();
  INFO(rounds << " of " << kRounds << " wake-ups in " << elapsed / 1'000'000
              << " ms (a lost wake-up costs a 10 ms re-check slice)");
  REQUIRE(last != Sleep::unknown);  // /proc/self/task/<tid>/syscall unreadable
  CHECK(rounds == kRounds);
  CHECK(in_order);
  CHECK(published.load() == kTotal);
  CHECK(next == kTotal);
}
