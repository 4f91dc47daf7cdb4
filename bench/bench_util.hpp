// What every benchmark program shares: the clock, CPU pinning, spinning,
// context-switch counts, the clock's own cost, and the JSON shape of a
// latency histogram. Header-only; benchmark programs only.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include "histogram.hpp"

namespace shmbus::benchutil {

/// A fatal benchmark error: thrown so that owners unwind (and remove what
/// they created); forked children catch it and _exit().
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void die(const std::string& what) { throw Fatal(what); }
[[noreturn]] inline void die_errno(const std::string& what) {
  throw Fatal(what + ": " + std::strerror(errno));
}

/// CLOCK_MONOTONIC in ns (vDSO: no system call). Thread-safe.
inline std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

/// Process-wide: set when the spinners of a run share one CPU; they then
/// yield, or every hand-off would wait for a scheduler tick (such numbers are
/// meaningless, but the run finishes). Set once before any spinning.
inline bool& spin_yields() noexcept {
  static bool yields = false;
  return yields;
}

/// One step of a spin-wait: PAUSE, or sched_yield when spinners share a CPU.
/// Thread-safe.
inline void cpu_relax() noexcept {
  if (spin_yields()) {
    ::sched_yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Pins the calling thread to one CPU; false if not allowed. Thread-safe.
inline bool pin_to(int cpu) noexcept {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

/// The CPUs this process may run on, in order. Thread-safe.
inline std::vector<int> allowed_cpus() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  std::vector<int> out;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &allowed)) out.push_back(c);
  }
  return out;
}

/// Voluntary context switches of the calling thread so far (how often it
/// slept). Thread-safe.
inline std::uint64_t voluntary_switches() noexcept {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return static_cast<std::uint64_t>(ru.ru_nvcsw);
}

/// Involuntary context switches of the calling thread so far (preemptions).
/// Thread-safe.
inline std::uint64_t involuntary_switches() noexcept {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return static_cast<std::uint64_t>(ru.ru_nivcsw);
}

/// Spins (untimed pause) for about ns nanoseconds. Thread-safe.
inline void pause_ns(std::uint64_t ns) noexcept {
  if (ns == 0) return;
  const std::uint64_t until = now_ns() + ns;
  while (now_ns() < until) cpu_relax();
}

/// The cost of one back-to-back pair of now_ns() calls, as every latency
/// sample contains one: `n` pairs into a histogram. Thread-safe.
inline Histogram clock_pair_cost(std::uint64_t n = 200'000) {
  Histogram h;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t a = now_ns();
    h.record(now_ns() - a);
  }
  return h;
}

/// A histogram as JSON: count, mean, min, the report percentiles, max, and
/// the percentile curve for plots ([[percentile, ns], ...]). Thread-safe.
inline nlohmann::ordered_json to_json(const Histogram& h) {
  nlohmann::ordered_json j;
  j["count"] = h.count();
  j["mean"] = h.mean();
  j["min"] = h.min();
  for (std::size_t i = 0; i < kReportPercentiles.size(); ++i) {
    j[kReportNames[i]] = h.percentile(kReportPercentiles[i]);
  }
  j["max"] = h.max();
  nlohmann::ordered_json curve = nlohmann::ordered_json::array();
  for (double p : plot_percentiles(h.count())) curve.push_back({p, h.percentile(p)});
  j["curve"] = std::move(curve);
  return j;
}

/// Parses "1,2,4" into numbers; false on anything else. Thread-safe.
inline bool parse_list(const std::string& s, std::vector<std::uint64_t>& out) {
  out.clear();
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = std::min(s.find(',', pos), s.size());
    const std::string item = s.substr(pos, comma - pos);
    if (item.empty()) return false;
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    if (errno != 0 || end == nullptr || *end != '\0') return false;
    out.push_back(v);
    pos = comma + 1;
  }
  return !out.empty();
}

/// Splits "a,b,c". Thread-safe.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = std::min(s.find(',', pos), s.size());
    out.push_back(s.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

/// A short description of the host for result files. Thread-safe.
inline nlohmann::ordered_json host_info() {
  nlohmann::ordered_json j;
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  j["hostname"] = name;
  j["online_cpus"] = ::sysconf(_SC_NPROCESSORS_ONLN);
  j["allowed_cpus"] = allowed_cpus();
  std::string model;
  if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::strncmp(line, "model name", 10) == 0) {
        const char* colon = std::strchr(line, ':');
        if (colon != nullptr) model = colon + 2;
        while (!model.empty() && (model.back() == '\n' || model.back() == ' ')) model.pop_back();
        break;
      }
    }
    std::fclose(f);
  }
  j["cpu_model"] = model;
  return j;
}

}  // namespace shmbus::benchutil
