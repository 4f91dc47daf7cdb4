// The counter timestamp source: its usability decision, and the conversion
// of counter ticks to CLOCK_REALTIME ns (calibration, anchors, inverse,
// monotonicity, agreement between processes, concurrent refreshes).
//
// Tests that compare ticks with the real clock need a counter the kernel
// trusts across CPUs (tsc_usable()); they WARN and skip without one
// (SHMBUS_TSC=1 forces them on such a host). Tests of the conversion
// arithmetic need only a counter.
#include "shm/tsc_clock.hpp"

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

extern char** environ;

namespace {

using namespace shmbus;
using shm::realtime_ns;
using shm::realtime_ns_to_tsc;
using shm::tsc_ticks;
using shm::tsc_to_realtime_ns;

constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint64_t kSec = 1'000'000'000;

bool have_counter() {
  if (!shm::kHasTscCounter) {
    WARN("skipped: this architecture has no counter (tsc_ticks() is realtime_ns())");
    return false;
  }
  return true;
}

bool have_usable_counter() {
  if (!have_counter()) return false;
  if (!shm::tsc_usable()) {
    WARN(
        "skipped: the kernel does not use the counter as its clocksource here "
        "(current_clocksource is not tsc / arch_sys_counter, or SHMBUS_TSC=0); "
        "SHMBUS_TSC=1 forces this test on");
    return false;
  }
  return true;
}

std::uint64_t abs_diff(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : b - a; }

// Runs this test binary in a child process (fork + exec, so the child has no
// cached state of ours) with the hidden test case `test_name` and `env`
// added to the environment. Returns the child's exit status.
int run_self(const char* test_name, const std::vector<std::string>& env) {
  std::vector<std::string> strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "SHMBUS_TSC=", 11) != 0 && std::strncmp(*e, "SHMBUS_TEST_", 12) != 0) {
      strings.emplace_back(*e);
    }
  }
  strings.insert(strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& s : strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  std::string name = test_name;
  std::string warn = "-w";
  std::string no_tests = "NoTests";  // a name that matches nothing fails instead of passing
  char* argv[] = {exe.data(), name.data(), warn.data(), no_tests.data(), nullptr};
  const pid_t pid = shmbus::test::fork_child([&] {
    ::execve("/proc/self/exe", argv, envp.data());
    return 127;
  });
  return shmbus::test::wait_child(pid);
}

}  // namespace

TEST_CASE("tsc_usable_given trusts the counter only where the kernel does, unless SHMBUS_TSC says", "[tsc]") {
  const char* flags = "flags : fpu tsc msr constant_tsc rep_good nopl nonstop_tsc cpuid";
  if (!shm::kHasTscCounter) {
    CHECK_FALSE(shm::detail::tsc_usable_given("1", "tsc", flags));
    return;
  }
#if defined(__x86_64__)
  CHECK(shm::detail::tsc_usable_given(nullptr, "tsc\n", flags));
  CHECK_FALSE(shm::detail::tsc_usable_given(nullptr, "kvm-clock\n", flags));
  CHECK_FALSE(shm::detail::tsc_usable_given(nullptr, "", flags));  // sysfs unreadable
  CHECK_FALSE(shm::detail::tsc_usable_given(nullptr, "tsc", "flags : fpu tsc constant_tsc"));
  CHECK_FALSE(shm::detail::tsc_usable_given(nullptr, "tsc", "flags : fpu tsc nonstop_tsc"));
  // A flag name is a whole word, not a prefix of one.
  CHECK_FALSE(shm::detail::tsc_usable_given(nullptr, "tsc", "flags : constant_tscx nonstop_tsc"));
#else
  CHECK(shm::detail::tsc_usable_given(nullptr, "arch_sys_counter\n", ""));
  CHECK_FALSE(shm::detail::tsc_usable_given(nullptr, "", ""));
#endif
  CHECK_FALSE(shm::detail::tsc_usable_given("0", "tsc\n", flags));
  CHECK_FALSE(shm::detail::tsc_usable_given("0", "arch_sys_counter\n", flags));
  CHECK(shm::detail::tsc_usable_given("1", "kvm-clock\n", ""));
  CHECK(shm::detail::tsc_usable_given("1", "", ""));
  // Another value leaves the decision to the kernel.
  CHECK_FALSE(shm::detail::tsc_usable_given("yes", "kvm-clock\n", flags));
}

TEST_CASE("SHMBUS_TSC=0 makes tsc_usable false in a child process", "[tsc]") {
  CHECK(run_self("tsc child: tsc_usable is false under SHMBUS_TSC=0", {"SHMBUS_TSC=0"}) == 0);
}

TEST_CASE("tsc child: tsc_usable is false under SHMBUS_TSC=0", "[.][tsc_child]") {
  const char* v = std::getenv("SHMBUS_TSC");
  REQUIRE(v != nullptr);
  REQUIRE(std::string(v) == "0");
  CHECK_FALSE(shm::tsc_usable());
}

TEST_CASE("converted counter ticks fall between CLOCK_REALTIME read before and after", "[tsc]") {
  if (!have_usable_counter()) return;
  for (int i = 0; i < 100'000; ++i) {
    const std::uint64_t before = realtime_ns();
    const std::uint64_t t = tsc_ticks();
    const std::uint64_t after = realtime_ns();
    const std::uint64_t ns = tsc_to_realtime_ns(t);
    // A correctness bound (a mapping off by a whole anchor span, a wrong
    // rate), not a timing one.
    if (ns + kMs < before || ns > after + kMs) {
      FAIL("iteration " << i << ": ticks " << t << " convert to " << ns << ", outside [" << before << ", " << after
                        << "] by more than 1 ms");
    }
  }
}

TEST_CASE("realtime_ns_to_tsc inverts tsc_to_realtime_ns within a nanosecond's worth of ticks", "[tsc]") {
  if (!have_counter()) return;
  const std::uint64_t now = tsc_ticks();
  (void)tsc_to_realtime_ns(now);  // calibrate and anchor
  const double per_ns = shm::tsc_ticks_per_second() / 1e9;
  const auto slack = static_cast<std::uint64_t>(std::ceil(per_ns)) + 2;
  const auto sec = static_cast<std::uint64_t>(shm::tsc_ticks_per_second());
  const std::uint64_t anchor = shm::detail::tsc_anchor_ticks();
  const std::vector<std::uint64_t> ticks = {
      now,          now + 1,   now + 12'345,   now + sec / 20, now + sec / 5, now + 10 * sec, now - 1,
      now - 99'999, now - sec, now - 10 * sec, anchor,         anchor - 1,    anchor + 1,     now + 3'600 * sec};
  for (const std::uint64_t t : ticks) {
    const std::uint64_t ns = tsc_to_realtime_ns(t);
    const std::uint64_t back = realtime_ns_to_tsc(ns);
    INFO("ticks " << t << " -> ns " << ns << " -> ticks " << back << " (slack " << slack << ")");
    CHECK(abs_diff(back, t) <= slack);
    CHECK(abs_diff(tsc_to_realtime_ns(back), ns) <= 1);
  }
}

TEST_CASE("larger ticks never convert to a smaller time, before and after the anchor", "[tsc]") {
  if (!have_counter()) return;
  // Wait for a refreshed anchor (converting the counter refreshes it every
  // kAnchorRefreshNs), so that the mapping has a slew span to cross.
  (void)tsc_to_realtime_ns(tsc_ticks());
  const std::uint64_t calibrated = shm::detail::tsc_anchor_ticks();
  while (shm::detail::tsc_anchor_ticks() == calibrated) (void)tsc_to_realtime_ns(tsc_ticks());
  const auto sec = static_cast<std::uint64_t>(shm::tsc_ticks_per_second());
  // Sweeps one mapping: a refresh during the sweep changes the mapping (it is
  // continuous at its new anchor, not at arbitrary future ticks), so a sweep
  // that saw one is done again.
  const auto sweep = [](std::int64_t from, std::int64_t to, std::uint64_t step) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      const std::uint64_t anchor = shm::detail::tsc_anchor_ticks();
      const std::uint64_t begin = anchor + static_cast<std::uint64_t>(from);
      const std::uint64_t stop = anchor + static_cast<std::uint64_t>(to);
      std::uint64_t prev = tsc_to_realtime_ns(begin);
      bool same_mapping = true;
      for (std::uint64_t t = begin + step; t < stop && same_mapping; t += step) {
        const std::uint64_t ns = tsc_to_realtime_ns(t);
        same_mapping = shm::detail::tsc_anchor_ticks() == anchor;
        if (!same_mapping) break;
        if (ns < prev) {  // (no INFO per iteration: it formats its message eagerly)
          FAIL("ticks " << t << " convert to " << ns << " < " << prev << " for ticks " << t - step << " (step " << step
                        << ", anchor " << anchor << ")");
        }
        prev = ns;
      }
      if (same_mapping) return;
    }
    FAIL("the anchor kept moving during every sweep from " << from << " to " << to);
  };
  const auto s = static_cast<std::int64_t>(sec);
  const std::int64_t slew_end = s / 10;  // kAnchorRefreshNs of ticks
  // Tick by tick across the anchor and across the end of the slew span;
  // coarser steps over seconds on both sides (negative deltas included).
  // (Each sweep is short, ~50k conversions, so that a refresh, every
  // kAnchorRefreshNs, rarely lands inside one even under ThreadSanitizer.)
  sweep(-25'000, 25'000, 1);
  sweep(slew_end - 25'000, slew_end + 25'000, 1);
  sweep(-2 * s, 2 * s, sec / 10'000 + 7);
  sweep(-20 * s, 20 * s, sec / 1'000 + 1);
}

TEST_CASE("reading the counter and converting never goes back across anchor refreshes", "[tsc]") {
  if (!have_usable_counter()) return;
  (void)tsc_to_realtime_ns(tsc_ticks());  // calibrate and anchor
  const std::uint64_t first_anchor = shm::detail::tsc_anchor_ticks();
  const std::uint64_t end = realtime_ns() + 4 * shm::kAnchorRefreshNs;
  std::uint64_t prev = 0;
  std::uint64_t anchors = 0;
  std::uint64_t last_anchor = first_anchor;
  while (realtime_ns() < end) {
    const std::uint64_t ns = tsc_to_realtime_ns(tsc_ticks());
    REQUIRE(ns >= prev);
    prev = ns;
    const std::uint64_t a = shm::detail::tsc_anchor_ticks();
    if (a != last_anchor) {
      ++anchors;
      last_anchor = a;
    }
  }
  CHECK(anchors >= 2);  // the loop crossed refreshes
}

TEST_CASE("ticks 10 s away convert to 10 s away", "[tsc]") {
  if (!have_counter()) return;
  shm::tsc_calibrate();
  CHECK(shm::tsc_ticks_per_second() > 1e6);  // any counter this code runs on is faster
  const std::uint64_t t = tsc_ticks();
  const std::uint64_t ns = tsc_to_realtime_ns(t);
  const auto ten = static_cast<std::uint64_t>(10.0 * shm::tsc_ticks_per_second());
  const std::uint64_t future = tsc_to_realtime_ns(t + ten);
  const std::uint64_t past = tsc_to_realtime_ns(t - ten);
  INFO("now " << ns << " +10 s " << future << " -10 s " << past);
  CHECK(abs_diff(future - ns, 10 * kSec) <= kMs);
  CHECK(abs_diff(ns - past, 10 * kSec) <= kMs);
}

TEST_CASE("a child process converts the parent's ticks to the parent's time", "[tsc]") {
  if (!have_usable_counter()) return;
  const std::uint64_t t = tsc_ticks();
  const std::uint64_t ns = tsc_to_realtime_ns(t);
  // The child is a fresh exec: it calibrates on its own, as another process would.
  CHECK(run_self("tsc child: converts the parent's ticks to the parent's time",
                 {"SHMBUS_TEST_TICKS=" + std::to_string(t), "SHMBUS_TEST_NS=" + std::to_string(ns),
                  std::string("SHMBUS_TSC=") + (shm::tsc_usable() ? "1" : "0")}) == 0);
}

TEST_CASE("tsc child: converts the parent's ticks to the parent's time", "[.][tsc_child]") {
  const char* t = std::getenv("SHMBUS_TEST_TICKS");
  const char* n = std::getenv("SHMBUS_TEST_NS");
  REQUIRE(t != nullptr);
  REQUIRE(n != nullptr);
  const std::uint64_t ticks = std::strtoull(t, nullptr, 10);
  const std::uint64_t parent_ns = std::strtoull(n, nullptr, 10);
  const std::uint64_t ns = tsc_to_realtime_ns(ticks);
  INFO("parent " << parent_ns << " child " << ns);
  CHECK(abs_diff(ns, parent_ns) <= kMs);
}

TEST_CASE("threads converting while the anchor refreshes all get the same mapping", "[tsc]") {
  if (!have_counter()) return;
  // A fixed tick value converts to the same time (within the slews of the
  // refreshes, microseconds) in every thread, before, during and after
  // refreshes: a torn read of an anchor record would be off by the distance
  // between two anchors (>= kAnchorRefreshNs).
  const std::uint64_t t0 = tsc_ticks();
  const std::uint64_t ns0 = tsc_to_realtime_ns(t0);
  const std::uint64_t first_anchor = shm::detail::tsc_anchor_ticks();
  const std::uint64_t end = realtime_ns() + 3 * shm::kAnchorRefreshNs + 50 * kMs;
  constexpr int kThreads = 4;
  std::atomic<int> bad{0};
  std::atomic<std::uint64_t> conversions{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      std::uint64_t n = 0;
      while (realtime_ns() < end) {
        (void)tsc_to_realtime_ns(tsc_ticks());  // past the refresh point: refreshes
        if (abs_diff(tsc_to_realtime_ns(t0), ns0) > kMs) bad.fetch_add(1, std::memory_order_relaxed);
        n += 2;
      }
      conversions.fetch_add(n, std::memory_order_relaxed);
    });
  }
  for (auto& th : threads) th.join();
  INFO(conversions.load() << " conversions");
  CHECK(bad.load() == 0);
  CHECK(shm::detail::tsc_anchor_ticks() != first_anchor);  // refreshed during the run
}

TEST_CASE("the recent-ticks conversion equals to_ns wherever it answers", "[tsc]") {
  using Snap = shm::TscSnapshot;
  constexpr std::uint64_t kOne = 1ULL << Snap::kRateShift;  // 1 ns per tick
  constexpr std::uint64_t kMax = ~0ULL;
  const auto make = [](std::uint64_t a, std::uint64_t A, std::uint64_t m1, std::uint64_t m2, std::uint64_t h,
                       std::uint64_t refresh) {
    Snap s;
    s.a = a;
    s.A = A;
    s.m1 = m1;
    s.m2 = m2;
    s.h = h;
    __extension__ const unsigned __int128 y = static_cast<unsigned __int128>(h) * m1 >> Snap::kRateShift;
    s.y_h = y > kMax ? kMax : static_cast<std::uint64_t>(y);
    s.refresh_at = refresh;
    return s;
  };
  const std::uint64_t a = 1ULL << 40;
  const std::uint64_t now = 1'790'000'000'000'000'000ULL;  // ns since the epoch, in 2026
  struct Case {
    const char* what;
    Snap snap;
    std::uint64_t after;   ///< must answer for ticks up to this far past the anchor
    std::uint64_t before;  ///< and this far before it
  };
  const Case cases[] = {
      {"a slewed mapping (3 ticks per ns)", make(a, now, kOne / 3 + 12345, kOne / 3, 300'000'000, a + 300'000'000),
       300'000'000, 300'000'000},
      {"a step: no slew span", make(a, now, kOne / 3, kOne / 3, 0, a + 300'000'000), 300'000'000, 300'000'000},
      // (the window shrinks by halving: at least half of what would fit)
      {"A near 0: little before it", make(a, 5, kOne, kOne, 1'000'000, a + 1'000'000), 1'000'000, 2},
      {"A near the top: the span shrinks", make(a, kMax - 100, kOne, kOne, 1'000'000, a + 1'000'000), 0, 1'000},
      {"a huge rate: y_h saturates", make(a, now, kMax, kMax, 1ULL << 40, a + (1ULL << 40)), 0, 0},
      {"empty (no snapshot taken yet)", Snap{}, 0, 0},
      {"the identity of a host without a counter", make(0, 0, kOne, kOne, 0, kMax), kMax, 0},
  };
  std::mt19937_64 rng(20261202);
  for (const Case& c : cases) {
    INFO(c.what);
    const Snap::Recent r = c.snap.recent();
    const auto check = [&](std::uint64_t t) {
      std::uint64_t ns = 0;
      if (!c.snap.to_ns_recent(t, r, ns)) return false;
      if (ns != c.snap.to_ns(t)) FAIL("ticks " << t << ": recent " << ns << ", to_ns " << c.snap.to_ns(t));
      return true;
    };
    // Ticks near the anchor and at the window's edges: answered where the
    // case says, and equal to to_ns wherever answered.
    for (std::uint64_t d = 0; d <= 1000; ++d) {
      if (d <= c.after && !check(c.snap.a + d)) FAIL("no answer " << d << " ticks after the anchor");
      if (d <= c.before && !check(c.snap.a - d)) FAIL("no answer " << d << " ticks before the anchor");
      (void)check(c.snap.a + d);
      (void)check(c.snap.a - d);
    }
    CHECK((c.after == 0 || c.after == kMax || check(c.snap.a + c.after)));
    CHECK((c.before == 0 || check(c.snap.a - c.before)));
    for (const std::uint64_t edge : {r.span, r.span + 1, 0 - r.back, 0 - r.back - 1, c.snap.h, c.snap.h + 1}) {
      (void)check(c.snap.a + edge);
    }
    // Random ticks, anywhere and around the window.
    for (int i = 0; i < 100'000; ++i) {
      const std::uint64_t x = rng();
      const std::uint64_t w = r.span / 2 + r.back / 2 + 1;
      (void)check(i % 2 == 0 ? x : c.snap.a - r.back + x % (2 * w + 2));
    }
    // Never past refresh_at: a reader takes a new snapshot there first.
    std::uint64_t ns = 0;
    if (c.snap.refresh_at != kMax) CHECK_FALSE(c.snap.to_ns_recent(c.snap.refresh_at + 1, r, ns));
  }
  // A slew span longer than the refresh window still stops at refresh_at.
  const Snap s = make(a, now, kOne / 3, kOne / 3, 1'000'000, a + 1'000);
  std::uint64_t ns = 0;
  CHECK(s.to_ns_recent(a + 1'000, s.recent(), ns));
  CHECK(ns == s.to_ns(a + 1'000));
  CHECK_FALSE(s.to_ns_recent(a + 1'001, s.recent(), ns));
}
