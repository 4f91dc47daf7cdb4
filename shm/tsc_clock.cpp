#include "shm/tsc_clock.hpp"

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>

#include <pthread.h>

namespace shmbus::shm {

namespace detail {

namespace {
std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// True when `word` is one of the space-separated words of `flags`.
bool has_word(std::string_view flags, std::string_view word) noexcept {
  while (!flags.empty()) {
    const auto start = flags.find_first_not_of(" \t\n:");
    if (start == std::string_view::npos) return false;
    flags.remove_prefix(start);
    const auto end = flags.find_first_of(" \t\n");
    if (flags.substr(0, end) == word) return true;
    if (end == std::string_view::npos) return false;
    flags.remove_prefix(end);
  }
  return false;
}
}  // namespace

bool tsc_usable_given(const char* env_value, std::string_view current_clocksource,
                      std::string_view cpu_flags) noexcept {
  if (!kHasTscCounter) return false;
  if (env_value != nullptr) {
    const std::string_view v = trim(env_value);
    if (v == "0") return false;
    if (v == "1") return true;
    // Any other value: as if unset (the kernel decides).
  }
  const std::string_view cs = trim(current_clocksource);
#if defined(__x86_64__)
  // The kernel picks "tsc" only when it is synchronised across CPUs (its
  // watchdog demotes it otherwise); constant_tsc + nonstop_tsc say the rate
  // does not follow frequency scaling or stop in deep C-states.
  return cs == "tsc" && has_word(cpu_flags, "constant_tsc") && has_word(cpu_flags, "nonstop_tsc");
#else
  (void)cpu_flags;
  return cs == "arch_sys_counter";
#endif
}

}  // namespace detail

namespace {

bool detect_tsc_usable() noexcept {
  std::string clocksource;
  {
    std::ifstream in("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    if (!in || !std::getline(in, clocksource)) clocksource.clear();
  }
  std::string flags;
#if defined(__x86_64__)
  {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (in && std::getline(in, line)) {
      if (line.rfind("flags", 0) == 0) {  // the first CPU's line: all CPUs share the TSC
        flags = line;
        break;
      }
    }
  }
#endif
  return detail::tsc_usable_given(std::getenv("SHMBUS_TSC"), clocksource, flags);
}

__extension__ typedef unsigned __int128 u128;

constexpr unsigned kShift = TscSnapshot::kRateShift;  // fraction bits of the ns-per-tick rate
constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
constexpr std::uint64_t kCalibrationNs = 1'000'000;  // the first rate's span
constexpr std::uint64_t kStepDetectNs = 10'000;      // realtime - monotonic moved: a step

std::uint64_t saturate(u128 v) noexcept { return v > kMax ? kMax : static_cast<std::uint64_t>(v); }

// (d * rate) >> kShift: ticks to ns.
std::uint64_t mul_rate(std::uint64_t d, std::uint64_t rate) noexcept {
  return saturate((static_cast<u128>(d) * rate) >> kShift);
}

// (y << kShift) / rate: ns to ticks. rate > 0.
std::uint64_t div_rate(std::uint64_t y, std::uint64_t rate) noexcept {
  return saturate((static_cast<u128>(y) << kShift) / rate);
}

std::uint64_t add_sat(std::uint64_t a, std::uint64_t b) noexcept { return a > kMax - b ? kMax : a + b; }
std::uint64_t sub_sat(std::uint64_t a, std::uint64_t b) noexcept { return a > b ? a - b : 0; }

// One calibration point: the ticks at the middle of the tightest
// ticks/clock_gettime/ticks bracket out of `tries` (a bracket the kernel or
// the hypervisor interrupted is wide, and is dropped).
struct Pair {
  std::uint64_t ticks;
  std::uint64_t ns;
  std::uint64_t gap;  // ticks between the two counter reads
};

Pair best_pair(int tries) noexcept {
  Pair best{0, 0, kMax};
  std::uint64_t best_gap = kMax;
  for (int i = 0; i < tries; ++i) {
    const std::uint64_t t0 = tsc_ticks();
    const std::uint64_t ns = realtime_ns();
    const std::uint64_t t1 = tsc_ticks();
    const std::uint64_t gap = t1 - t0;
    if (gap < best_gap) {
      best_gap = gap;
      best = {t0 + gap / 2, ns, gap};
    }
  }
  return best;
}

// CLOCK_REALTIME - CLOCK_MONOTONIC: both are slewed alike by NTP, so this
// changes only when the realtime clock is stepped (settimeofday, NTP step).
// Sets *gap to the ns between the two monotonic reads around the realtime one.
std::int64_t realtime_offset(std::uint64_t* gap) noexcept {
  std::int64_t best = 0;
  std::uint64_t best_gap = kMax;
  for (int i = 0; i < 3; ++i) {
    const std::uint64_t m0 = monotonic_ns();
    const std::uint64_t r = realtime_ns();
    const std::uint64_t m1 = monotonic_ns();
    if (m1 - m0 < best_gap) {
      best_gap = m1 - m0;
      best = static_cast<std::int64_t>(r - (m0 + (m1 - m0) / 2));
    }
  }
  *gap = best_gap;
  return best;
}

// The mapping readers use (header comment):
//   t >= a, d = t - a:  ns = A + (d <= h ? d*m1 : y_h + (d-h)*m2)   (y_h = h*m1)
//   t <  a, d = a - t:  ns = A - d*m2
// m2 is the rate, m1 the rate plus the slew that removes the last anchor's
// error over h ticks. Rates are ns per tick << kShift.
struct Mapping : TscSnapshot {  // the fields and to_ns are TscSnapshot's
  Mapping() noexcept { m1 = m2 = 1ULL << kShift; }
  Mapping(std::uint64_t a_, std::uint64_t A_, std::uint64_t m1_, std::uint64_t m2_, std::uint64_t h_,
          std::uint64_t y_h_, std::uint64_t refresh_at_) noexcept {
    a = a_;
    A = A_;
    m1 = m1_;
    m2 = m2_;
    h = h_;
    y_h = y_h_;
    refresh_at = refresh_at_;
  }

  std::uint64_t to_ticks(std::uint64_t ns) const noexcept {
    if (ns >= A) {
      const std::uint64_t y = ns - A;
      const std::uint64_t d = y <= y_h ? div_rate(y, m1) : add_sat(h, div_rate(y - y_h, m2));
      return add_sat(a, d);
    }
    return sub_sat(a, div_rate(A - ns, m2));
  }
};

constexpr int kFields = 7;

// Two mapping records, each behind its own sequence word, and `current_`
// naming the one to read. The (single) refresher writes only the record that
// is not current, then flips current_, so a reader never waits for a refresher
// that was preempted mid-write; it retries only if two refreshes (>= 2 x
// kAnchorRefreshNs apart in practice) overtake it during its read. Every
// field is an atomic read relaxed and validated by the sequence (Boehm's
// seqlock with fences), so there is no data race for TSan to find.
class TscCalibration {
 public:
  constexpr TscCalibration() noexcept = default;

  // The process's calibration, calibrated on first use. Not a function-local
  // static: a child forked while another thread was inside its guarded
  // initialisation would wait on that guard forever. Here the child's fork
  // handler hands an unfinished calibration back (state kIdle), and the
  // child calibrates again.
  static TscCalibration& instance() noexcept {
    TscCalibration& c = global_;
    // SYNC(tsc state): acquire, pairs with the release of kReady in ensure_calibrated().
    if (c.state_.load(std::memory_order_acquire) != kReady) c.ensure_calibrated();
    return c;
  }

  Mapping read() const noexcept {
    for (;;) {
      const auto& r = records_[current_.load(std::memory_order_acquire)];
      // SYNC(tsc record): acquire, pairs with the release store of the even seq in write().
      const std::uint64_t s1 = r.seq.load(std::memory_order_acquire);
      if (s1 & 1U) continue;  // being rewritten: current_ has moved on
      std::uint64_t f[kFields];
      for (int i = 0; i < kFields; ++i) f[i] = r.f[i].load(std::memory_order_relaxed);  // relaxed: validated by seq
      std::atomic_thread_fence(std::memory_order_acquire);  // field loads before the re-check
      if (r.seq.load(std::memory_order_relaxed) == s1) {    // relaxed: ordered by the fence above
        return Mapping{f[0], f[1], f[2], f[3], f[4], f[5], f[6]};
      }
    }
  }

  // Takes a new anchor if no other thread is doing it; returns whether it did.
  bool try_refresh() noexcept {
    // SYNC(tsc writer): acquire, pairs with the release in the unlock below,
    // so the next refresher sees this one's writer state (first_, rate_...).
    if (refreshing_.exchange(true, std::memory_order_acquire)) return false;
    refresh();
    refreshing_.store(false, std::memory_order_release);
    return true;
  }

 private:
  struct alignas(64) Record {
    std::atomic<std::uint64_t> seq{0};
    std::atomic<std::uint64_t> f[kFields]{};
  };

  enum : std::uint32_t { kIdle = 0, kCalibrating = 1, kReady = 2 };

  void ensure_calibrated() noexcept {
    std::uint32_t s = kIdle;
    // SYNC(tsc state): acquire on success (nothing to see yet; symmetric with the wait below).
    if (state_.compare_exchange_strong(s, kCalibrating, std::memory_order_acquire)) {
      if (!atfork_registered_.exchange(true, std::memory_order_relaxed)) {  // relaxed: only a once-flag
        ::pthread_atfork(nullptr, nullptr, &TscCalibration::after_fork_in_child);
      }
      calibrate();
      // SYNC(tsc state): release, pairs with the acquire in instance() and below.
      state_.store(kReady, std::memory_order_release);
      return;
    }
    // Another thread is calibrating (about 1 ms, once per process): wait for it.
    while (state_.load(std::memory_order_acquire) != kReady) cpu_relax();
  }

  static void after_fork_in_child() noexcept {
    // Only the forking thread exists in the child: a calibration or refresh
    // that another thread had in progress will never finish, so release its
    // claim. Relaxed: the child is single-threaded here.
    TscCalibration& c = global_;
    if (c.state_.load(std::memory_order_relaxed) == kCalibrating) {
      c.state_.store(kIdle, std::memory_order_relaxed);
    }
    c.refreshing_.store(false, std::memory_order_relaxed);
  }

  void write(const Mapping& m) noexcept {
    const std::uint32_t j = 1U - current_.load(std::memory_order_relaxed);  // relaxed: only the writer changes it
    Record& r = records_[j];
    const std::uint64_t odd = r.seq.load(std::memory_order_relaxed) | 1U;  // relaxed: only the writer changes it
    r.seq.store(odd, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // the odd seq before the field stores
    const std::uint64_t f[kFields] = {m.a, m.A, m.m1, m.m2, m.h, m.y_h, m.refresh_at};
    for (int i = 0; i < kFields; ++i) r.f[i].store(f[i], std::memory_order_relaxed);  // relaxed: published by seq
    // SYNC(tsc record): release, pairs with the acquire of seq in read().
    r.seq.store(odd + 1, std::memory_order_release);
    // SYNC(tsc current): release, pairs with the acquire of current_ in read().
    current_.store(j, std::memory_order_release);
  }

  std::uint64_t ticks_for(std::uint64_t ns) const noexcept { return div_rate(ns, rate_); }

  void calibrate() noexcept {
    Pair p0{}, p1{};
    for (int attempt = 0; attempt < 3; ++attempt) {
      p0 = best_pair(16);
      while (realtime_ns() - p0.ns < kCalibrationNs && realtime_ns() >= p0.ns) cpu_relax();
      p1 = best_pair(16);
      if (p1.ns > p0.ns && p1.ticks > p0.ticks) break;  // else the clock stepped: again
    }
    if (p1.ns > p0.ns && p1.ticks > p0.ticks) {
      rate_ = saturate((static_cast<u128>(p1.ns - p0.ns) << kShift) / (p1.ticks - p0.ticks));
    }
    if (rate_ == 0) rate_ = 1ULL << kShift;  // a counter that did not move: 1 ns per tick
    first_ = p0;
    std::uint64_t gap = 0;
    first_offset_ = realtime_offset(&gap);
    Mapping m;
    m.a = p1.ticks;
    m.A = p1.ns;
    m.m1 = m.m2 = rate_;
    m.refresh_at = add_sat(m.a, ticks_for(kAnchorRefreshNs));
    write(m);
  }

  void refresh() noexcept {
    const Mapping old = read();
    const Pair p = best_pair(5);
    std::uint64_t gap = 0;
    const std::int64_t offset = realtime_offset(&gap);
    const std::int64_t moved = offset - first_offset_;
    if (gap > kStepDetectNs / 4 || p.gap > ticks_for(kStepDetectNs / 4)) {
      // Every read was interrupted: the offset cannot tell a step from the
      // interruption, or the pair is too loose to refine the rate. Leave the
      // span and the rate as they are this time.
    } else if (moved > static_cast<std::int64_t>(kStepDetectNs) || -moved > static_cast<std::int64_t>(kStepDetectNs) ||
               p.ns <= first_.ns || p.ticks <= first_.ticks) {
      // The realtime clock was stepped inside the span: it says nothing about
      // the rate. Start a new span here and keep the rate.
      first_ = p;
      first_offset_ = offset;
    } else {
      // The rate over the whole span: its error is ~2 x pair jitter / span.
      const u128 r = (static_cast<u128>(p.ns - first_.ns) << kShift) / (p.ticks - first_.ticks);
      if (r > 0 && r <= kMax) rate_ = static_cast<std::uint64_t>(r);
    }

    Mapping m;
    m.a = p.ticks;
    m.m2 = rate_;
    const std::uint64_t predicted = old.to_ns(p.ticks);
    const std::uint64_t err_abs = predicted > p.ns ? predicted - p.ns : p.ns - predicted;
    if (err_abs > kStepNs || p.ticks < old.a) {
      // Too far to slew (or the counter went back): jump to the measurement.
      m.A = p.ns;
      m.m1 = rate_;
      m.h = 0;
    } else {
      // Continuous at a; remove the error over the next kAnchorRefreshNs.
      // |slew| <= kStepNs / kAnchorRefreshNs = 1% of the rate: m1 stays > 0.
      m.A = predicted;
      m.h = ticks_for(kAnchorRefreshNs);
      const std::uint64_t slew_rate = saturate((static_cast<u128>(err_abs) << kShift) / (m.h ? m.h : 1));
      m.m1 = predicted > p.ns ? sub_sat(rate_, slew_rate) : add_sat(rate_, slew_rate);
      if (m.m1 == 0) m.m1 = 1;
      m.y_h = mul_rate(m.h, m.m1);
    }
    m.refresh_at = add_sat(m.a, ticks_for(kAnchorRefreshNs));
    write(m);
  }

  static TscCalibration global_;

  Record records_[2];
  std::atomic<std::uint32_t> current_{0};
  std::atomic<std::uint32_t> state_{kIdle};
  std::atomic<bool> refreshing_{false};
  std::atomic<bool> atfork_registered_{false};
  // Writer state: touched only by calibrate() (under state_ == kCalibrating)
  // and by the thread that holds refreshing_.
  Pair first_{};                   // start of the span the rate is measured over
  std::int64_t first_offset_ = 0;  // realtime - monotonic at first_
  std::uint64_t rate_ = 0;         // ns per tick << kShift
};

constinit TscCalibration TscCalibration::global_;

}  // namespace

bool tsc_usable() noexcept {
  static const bool usable = detect_tsc_usable();
  return usable;
}

void tsc_calibrate() noexcept {
  if constexpr (kHasTscCounter) (void)TscCalibration::instance();
}

std::uint64_t tsc_to_realtime_ns(std::uint64_t ticks) noexcept {
  if constexpr (!kHasTscCounter) return ticks;  // tsc_ticks() is realtime_ns() there
  auto& cal = TscCalibration::instance();
  Mapping m = cal.read();
  // Refresh only for ticks past the refresh point that are not in the future
  // (a bogus future stamp must not make every conversion re-anchor).
  if (ticks > m.refresh_at && tsc_ticks() > m.refresh_at && cal.try_refresh()) m = cal.read();
  return m.to_ns(ticks);
}

TscSnapshot tsc_snapshot(std::uint64_t ticks) noexcept {
  if constexpr (!kHasTscCounter) {
    // Ticks are realtime ns there: the identity (a rate of 1 << kShift).
    TscSnapshot s;
    s.m1 = s.m2 = 1ULL << kShift;
    s.refresh_at = kMax;
    return s;
  }
  auto& cal = TscCalibration::instance();
  Mapping m = cal.read();
  if (ticks > m.refresh_at && tsc_ticks() > m.refresh_at && cal.try_refresh()) m = cal.read();
  return m;
}

std::uint64_t realtime_ns_to_tsc(std::uint64_t ns) noexcept {
  if constexpr (!kHasTscCounter) return ns;
  return TscCalibration::instance().read().to_ticks(ns);
}

double tsc_ticks_per_second() noexcept {
  if constexpr (!kHasTscCounter) return 1e9;
  const Mapping m = TscCalibration::instance().read();
  return 1e9 * static_cast<double>(1ULL << kShift) / static_cast<double>(m.m2);
}

std::uint64_t detail::tsc_anchor_ticks() noexcept {
  if constexpr (!kHasTscCounter) return 0;
  return TscCalibration::instance().read().a;
}

}  // namespace shmbus::shm
