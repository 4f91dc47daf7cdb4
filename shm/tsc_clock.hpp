// A cheap timestamp source for the publish path: the CPU's cycle counter (TSC
// on x86-64, the virtual counter CNTVCT_EL0 on aarch64), converted to
// CLOCK_REALTIME nanoseconds on read.
//
// Why: reading CLOCK_REALTIME through the vDSO costs 20-30 ns on a VM (the
// kvm-clock page and its version loop), a large share of a cross-core round
// trip. Reading the counter costs a few ns. Publishers store raw ticks in the
// message; readers, which are off the critical path, convert them.
//
// Who may use it: only when tsc_usable() says so. That needs a counter that
// runs at one constant rate on every CPU of the host and never stops (the
// kernel trusts it as its clocksource), because a message's ticks are taken on
// one CPU by one process and converted on another CPU by another process.
//
// How the conversion works (tsc_clock.cpp): each process calibrates on first
// use (about 1 ms: a pair (ticks, CLOCK_REALTIME) at both ends, each the pair
// with the smallest tick gap around the clock read out of several), then keeps
// an anchor (ticks a, realtime A) and a rate F in ns per tick:
//
//     ns(t) = A + (t - a) * F                     t >= a (plus a small slew, below)
//     ns(t) = A - (a - t) * F                     t <  a (older messages)
//
// in fixed point (64x64->128-bit multiply, 52-bit fraction: no rounding error
// that matters). A conversion of ticks more than kAnchorRefreshNs past the
// anchor takes a new anchor first, so ticks of recent messages are always
// converted from an anchor less than ~100 ms old; the rate is refined from the
// span between the first anchor and the newest, so it gets better as the
// process ages. A new anchor does not make the mapping jump: its A is the old
// mapping's value at the new a, and the difference from the realtime measured
// there is slewed out over the next kAnchorRefreshNs (as adjtime does), so a
// thread that reads the counter and converts, again and again, gets
// non-decreasing times. Only a difference over kStepNs (the realtime clock was
// stepped, or the first conversion comes long after start with a poor rate)
// is applied at once, as a jump, the way CLOCK_REALTIME itself jumps.
//
// Error bound. For ticks t converted by a process whose newest anchor is a:
//
//     |ns(t) - realtime at t|  <~  rate error * |t - a|  +  anchor jitter
//
// where anchor jitter is the half-gap of the best (ticks, clock) pair plus the
// vDSO read's own granularity (a few ns; tens of ns on a busy VM) and the rate
// error is about 2 x jitter / calibration span:
//   - right after process start the span is the ~1 ms calibration, so the
//     rate error is 2 x (a few ns) / 1 ms, a few ppm at most (measured on a
//     2-vCPU KVM guest: 0.02-0.7 ppm in 8 runs, 4.4 ppm with a build running
//     on both cores). A message 30 s old then converts within ~1-130 us; a
//     jitter of 25 ns would make it 50 ppm, 1.5 ms. Recent messages (t near a)
//     are within tens of ns (measured: p50 1-3 ns, max 10-70 ns).
//   - after 10 minutes of conversions the span is ~600 s and the rate error is
//     ~1e-10: a message 30 s old is within tens of ns when NTP is quiet. While
//     NTP slews CLOCK_REALTIME by s ppm (up to 500), add s x |t - a|: the
//     mapping follows the slew at each anchor, not between anchors.
// Two processes on one host convert the same ticks to the same ns within the
// sum of their errors: within a few microseconds for recent messages.
//
// Not available on other architectures: there tsc_ticks() returns
// realtime_ns() and the conversions are the identity, so code that ignores
// tsc_usable() still gets correct (if not cheaper) timestamps.
//
// Environment: SHMBUS_TSC=0 makes tsc_usable() false (use CLOCK_REALTIME).
// SHMBUS_TSC=1 makes it true wherever the architecture has a counter, even
// when the kernel chose another clocksource: for hosts whose TSC is invariant
// and synchronised although the kernel was told not to use it (many VMs boot
// with clocksource=kvm-clock), at the user's own risk. Read once per process.
#pragma once

#include "shm/clock.hpp"

#include <algorithm>
#include <cstdint>
#include <string_view>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace shmbus::shm {

/// True when this architecture has a counter tsc_ticks() reads.
#if defined(__x86_64__) || defined(__aarch64__)
inline constexpr bool kHasTscCounter = true;
#else
inline constexpr bool kHasTscCounter = false;
#endif

/// The anchor is refreshed when a conversion asks for ticks this far past it.
inline constexpr std::uint64_t kAnchorRefreshNs = 100'000'000;  // 100 ms
/// A mapping this far off CLOCK_REALTIME at a refresh jumps instead of slewing.
inline constexpr std::uint64_t kStepNs = 1'000'000;  // 1 ms

/// The raw counter: TSC (x86-64) or CNTVCT_EL0 (aarch64); realtime_ns() on
/// other architectures. Not serialising: instructions around it may be
/// reordered by a few cycles, which is irrelevant for a timestamp. Thread-safe.
inline std::uint64_t tsc_ticks() noexcept {
#if defined(__x86_64__)
  return __rdtsc();
#elif defined(__aarch64__)
  std::uint64_t v;
  asm volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#else
  return realtime_ns();
#endif
}

/// True when tsc_ticks() may stamp messages that other processes (on other
/// CPUs) convert: the architecture has a counter and the kernel uses it as
/// its clocksource (/sys/devices/system/clocksource/clocksource0/
/// current_clocksource is "tsc" on x86-64, with constant_tsc and nonstop_tsc
/// in /proc/cpuinfo; "arch_sys_counter" on aarch64), unless SHMBUS_TSC says
/// otherwise (header comment). An unreadable sysfs file means false.
/// Computed once per process. Thread-safe.
bool tsc_usable() noexcept;

/// Calibrates now (about 1 ms, once per process) if no conversion did yet,
/// so that the first conversion on a hot path does not pay for it (call it
/// when a channel that uses counter timestamps is opened). Thread-safe.
void tsc_calibrate() noexcept;

/// Counter ticks to CLOCK_REALTIME ns since the epoch, by this process's
/// calibration (header comment for the error bound). Calibrates on the first
/// call (~1 ms); afterwards no lock and no system call (it may read the vDSO
/// clock to refresh the anchor, at most every kAnchorRefreshNs). Saturates at
/// 0 and UINT64_MAX. Works whenever kHasTscCounter, whatever tsc_usable()
/// says. Thread-safe.
std::uint64_t tsc_to_realtime_ns(std::uint64_t ticks) noexcept;

/// A copy of this process's tick-to-realtime mapping, for a reader that
/// converts many stamps: converting with it touches no shared state. Valid
/// (as tsc_to_realtime_ns would convert) for ticks up to `refresh_at`; past
/// that, take a new one with tsc_snapshot. Plain data, so a handle can hold it.
struct TscSnapshot {
  static constexpr unsigned kRateShift = 52;  ///< fraction bits of the rates

  std::uint64_t a = 0;           ///< anchor ticks
  std::uint64_t A = 0;           ///< anchor realtime ns
  std::uint64_t m1 = 0;          ///< ns per tick << kRateShift within the slew span
  std::uint64_t m2 = 0;          ///< ns per tick << kRateShift after it
  std::uint64_t h = 0;           ///< slew span, ticks
  std::uint64_t y_h = 0;         ///< ns covered by the slew span
  std::uint64_t refresh_at = 0;  ///< 0: empty (take one before use)

  /// Ticks to CLOCK_REALTIME ns, as tsc_to_realtime_ns does. Saturates.
  /// The mapping: t >= a, d = t - a: ns = A + (d <= h ? d*m1 : y_h + (d-h)*m2);
  /// t < a: ns = A - (a - t)*m2 (m2 the rate, m1 the rate plus the slew that
  /// removes the last anchor's error over h ticks).
  [[nodiscard]] std::uint64_t to_ns(std::uint64_t t) const noexcept {
    if (t >= a) {
      const std::uint64_t d = t - a;
      const std::uint64_t off = d <= h ? mul(d, m1) : add(y_h, mul(d - h, m2));
      return add(A, off);
    }
    const std::uint64_t back = mul(a - t, m2);
    return A > back ? A - back : 0;
  }

  /// Where to_ns is one multiply from the anchor, without saturation: ticks
  /// up to `span` past it at `rate`, and up to `back` before it at m2.
  struct Recent {
    std::uint64_t span = 0;
    std::uint64_t rate = 0;
    std::uint64_t back = 0;
  };
  /// The Recent window of this mapping. Past the anchor: within the slew
  /// span h at m1, where A + y_h does not saturate (d * m1 >> kRateShift is
  /// at most y_h there, the product growing with d); with no slew span
  /// (h = 0, after a step) up to refresh_at at m2. Before it: as far, where
  /// A - back * m2 stays above 0. Each sum then equals to_ns's, and no
  /// ticks in it are past refresh_at (where a reader takes a new snapshot).
  [[nodiscard]] Recent recent() const noexcept {
    Recent r;
    if (h != 0) {
      r.rate = m1;
      // (h is refresh_at - a as calibrated; the min keeps the window inside
      // what needs no refresh, whatever a mapping holds.)
      r.span = y_h != ~0ULL && A <= ~0ULL - y_h ? std::min(h, refresh_at - a) : 0;
    } else {
      r.rate = m2;
      r.span = refresh_at - a;
      while (r.span != 0 && mul(r.span, m2) > ~0ULL - A) r.span /= 2;
    }
    r.back = h != 0 ? h : refresh_at - a;
    while (r.back != 0 && mul(r.back, m2) > A) r.back /= 2;
    return r;
  }
  /// to_ns(t) for t within `r` (from recent()): a recent message, published
  /// just after the anchor or just before it. False, `ns` untouched, for any
  /// other t.
  [[nodiscard]] bool to_ns_recent(std::uint64_t t, const Recent& r, std::uint64_t& ns) const noexcept {
    return to_ns_recent_delta(t - a, r, ns);
  }
  /// to_ns_recent(a + d, r, ns): for a caller that has t - a already.
  [[nodiscard]] bool to_ns_recent_delta(std::uint64_t d, const Recent& r, std::uint64_t& ns) const noexcept {
    // d = t - a wraps for t < a: above any span.
    if (d <= r.span) [[likely]] {
      __extension__ const unsigned __int128 v = static_cast<unsigned __int128>(d) * r.rate;
      ns = A + static_cast<std::uint64_t>(v >> kRateShift);
      return true;
    }
    const std::uint64_t b = 0 - d;  // a - t; wraps for t > a: above any back
    if (b > r.back) return false;
    __extension__ const unsigned __int128 v = static_cast<unsigned __int128>(b) * m2;
    ns = A - static_cast<std::uint64_t>(v >> kRateShift);
    return true;
  }

 private:
  static std::uint64_t mul(std::uint64_t d, std::uint64_t rate) noexcept {
    __extension__ const unsigned __int128 v = (static_cast<unsigned __int128>(d) * rate) >> kRateShift;
    return v > ~0ULL ? ~0ULL : static_cast<std::uint64_t>(v);
  }
  static std::uint64_t add(std::uint64_t x, std::uint64_t y) noexcept { return x > ~0ULL - y ? ~0ULL : x + y; }
};

/// The current mapping, after refreshing the anchor if `ticks` is past it
/// (as tsc_to_realtime_ns(ticks) would). Calibrates on the first call.
/// Thread-safe.
TscSnapshot tsc_snapshot(std::uint64_t ticks) noexcept;

/// The inverse: the ticks that convert to ns (for "start at this time"
/// searches over stamped messages). Same calibration; never refreshes the
/// anchor. Saturates at 0 and UINT64_MAX. Thread-safe.
std::uint64_t realtime_ns_to_tsc(std::uint64_t ns) noexcept;

/// Counter ticks per second by the current calibration (for reports). Thread-safe.
double tsc_ticks_per_second() noexcept;

namespace detail {
/// The decision tsc_usable() makes, from its inputs: the SHMBUS_TSC value
/// (nullptr when unset), the content of current_clocksource (empty when
/// unreadable) and the "flags" line of /proc/cpuinfo. Thread-safe.
bool tsc_usable_given(const char* env_value, std::string_view current_clocksource, std::string_view cpu_flags) noexcept;

/// The ticks of the current anchor (for tests: shows that anchors refresh). Thread-safe.
std::uint64_t tsc_anchor_ticks() noexcept;
}  // namespace detail

}  // namespace shmbus::shm
