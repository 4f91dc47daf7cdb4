// What every benchmark program shares: the clock, CPU pinning, spinning,
// context-switch counts, the clock's own cost, the JSON shape of a latency
// histogram, forked children and shared mappings, the minimal SPSC ring that
// serves as a baseline, and main() itself.
// Header-only; benchmark programs only (it does not use the library).
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "histogram.hpp"

namespace shmbus::benchutil {

/// A fatal benchmark error: thrown so that owners unwind (and remove what
/// they created); forked children catch it and _exit().
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void die(const std::string& what) { throw Fatal(what); }
[[noreturn]] inline void die_errno(const std::string& what) { throw Fatal(what + ": " + std::strerror(errno)); }

/// CLOCK_MONOTONIC in ns (vDSO: no system call). Thread-safe.
inline std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
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

/// The median of v (the mean of the middle two for an even count); 0 when
/// empty. Thread-safe.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

/// Maps `n` bytes of anonymous memory shared with the processes forked after
/// this, zeroed (which also pre-faults it here). Dies on failure; the caller
/// unmaps it. Thread-safe.
inline void* map_shared(std::size_t n) {
  void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) die_errno("mmap");
  std::memset(m, 0, n);
  return m;
}

/// fork() for a benchmark's helper process: stdio is flushed first (nothing
/// buffered is written twice), and the child is killed when its parent dies
/// and takes SIGINT's default action. Returns what fork() returns (-1 with
/// errno set on failure). Not thread-safe: call it from the main thread.
inline pid_t fork_child() {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::signal(SIGINT, SIG_DFL);
  }
  return pid;
}

/// How a waited-for process ended, from waitpid's status: "signal 9" or
/// "exit 1". Thread-safe.
inline std::string exit_description(int status) {
  return WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                             : "exit " + std::to_string(WEXITSTATUS(status));
}

/// Writes j to the file at `path` (indented by one, with a final newline);
/// dies if it cannot be opened. Thread-safe.
inline void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) die_errno("cannot write " + path);
  const std::string text = j.dump(1);
  std::fwrite(text.data(), 1, text.size(), f);
  std::fputc('\n', f);
  std::fclose(f);
}

/// The minimal single-producer single-consumer ring that the benchmarks
/// measure shmbus against: what two cores move with no protocol at all.
/// In a MAP_SHARED mapping: the header (head and tail, each on its own
/// 128-byte line, as adjacent-line prefetch pairs lines), then `capacity`
/// slots of `stride` bytes, a multiple of 64: the length (8 bytes), then the
/// payload. Each side keeps its own index and a cached copy of the other
/// side's (as rigtorp's SPSCQueue does), so it reads the other side's line
/// only when the cached copy says the ring is full (producer) or empty
/// (consumer). Single-threaded on each side; the two sides may be in two
/// processes.
struct alignas(128) SpscHeader {
  alignas(128) std::atomic<std::uint64_t> head;  ///< next slot to write (the producer's)
  alignas(128) std::atomic<std::uint64_t> tail;  ///< next slot to read (the consumer's)
};
static_assert(sizeof(SpscHeader) == 256);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

/// The ring's geometry. `capacity` is a power of two.
struct SpscGeometry {
  std::uint64_t capacity = 0;
  std::size_t stride = 0;  ///< bytes per slot: 8 + the largest payload, rounded up to 64

  SpscGeometry(std::uint64_t cap, std::size_t max_payload)
      : capacity(cap), stride((sizeof(std::uint64_t) + max_payload + 63) / 64 * 64) {}
  /// Bytes of the mapping: the header and the slots.
  [[nodiscard]] std::size_t bytes() const noexcept { return sizeof(SpscHeader) + capacity * stride; }
  [[nodiscard]] std::byte* slot(SpscHeader* h, std::uint64_t i) const noexcept {
    return reinterpret_cast<std::byte*>(h) + sizeof(SpscHeader) + (i & (capacity - 1)) * stride;
  }
};

/// The producer's side. Not thread-safe: one producer.
struct SpscProducer {
  SpscHeader* hdr = nullptr;
  SpscGeometry geo{1, 0};
  std::uint64_t head = 0;        ///< this side's index (the shared copy is hdr->head)
  std::uint64_t tail_cache = 0;  ///< the consumer's tail as last read

  /// Whether a slot is free, reading the consumer's tail only when the
  /// cached copy says the ring is full.
  [[nodiscard]] bool has_space() noexcept {
    if (head - tail_cache < geo.capacity) return true;
    // SYNC(spsc-tail): acquire, pairs with the consumer's release: the slot
    // it freed is read before we overwrite it.
    tail_cache = hdr->tail.load(std::memory_order_acquire);
    return head - tail_cache < geo.capacity;
  }
  /// Writes a message into the next slot and publishes it (call after
  /// has_space()). n <= the geometry's payload.
  void push(const std::byte* p, std::size_t n) noexcept {
    std::byte* s = geo.slot(hdr, head);
    const std::uint64_t len = n;
    std::memcpy(s, &len, sizeof len);
    std::memcpy(s + sizeof len, p, n);
    // SYNC(spsc-head): release, pairs with the consumer's acquire: the
    // length and payload are visible before the index that covers them.
    hdr->head.store(++head, std::memory_order_release);
  }
};

/// The consumer's side. Not thread-safe: one consumer.
struct SpscConsumer {
  SpscHeader* hdr = nullptr;
  SpscGeometry geo{1, 0};
  std::uint64_t tail = 0;        ///< this side's index (the shared copy is hdr->tail)
  std::uint64_t head_cache = 0;  ///< the producer's head as last read

  /// Messages readable now, reading the producer's head only when the cached
  /// copy says the ring is empty.
  [[nodiscard]] std::uint64_t available() noexcept {
    if (tail == head_cache) {
      // SYNC(spsc-head): acquire, pairs with the producer's release.
      head_cache = hdr->head.load(std::memory_order_acquire);
    }
    return head_cache - tail;
  }
  /// The i-th readable slot (i < available()): its length, then its payload.
  [[nodiscard]] const std::byte* peek(std::uint64_t i = 0) const noexcept { return geo.slot(hdr, tail + i); }
  /// Frees `n` read slots with one store of the tail.
  void release(std::uint64_t n = 1) noexcept {
    tail += n;
    // SYNC(spsc-tail): release, pairs with the producer's acquire.
    hdr->tail.store(tail, std::memory_order_release);
  }
  /// One message copied out into `out` (up to `cap` bytes; its full length
  /// goes to `len`) and freed; false when the ring is empty.
  bool pop(std::byte* out, std::size_t cap, std::size_t& len) noexcept {
    if (available() == 0) return false;
    const std::byte* s = peek();
    std::uint64_t n = 0;
    std::memcpy(&n, s, sizeof n);
    len = static_cast<std::size_t>(n);
    std::memcpy(out, s + sizeof n, std::min(len, cap));
    release();
    return true;
  }
};

/// main() of a benchmark program: parse(argc, argv) gives an optional
/// configuration (nothing: usage(argv[0]) is printed and 2 returned); its
/// `bus` is set to "<bus_stem>-<pid>", then run(config) runs. Returns 0, or 1
/// after printing "<program>: <what>" for anything run threw.
template <class Parse, class Usage, class Run>
int bench_main(int argc, char** argv, const char* program, const char* bus_stem, Parse&& parse, Usage&& usage,
               Run&& run) {
  const auto parsed = parse(argc, argv);
  if (!parsed) {
    usage(argv[0]);
    return 2;
  }
  auto cfg = *parsed;
  cfg.bus = std::string(bus_stem) + "-" + std::to_string(::getpid());
  try {
    run(cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
  return 0;
}

}  // namespace shmbus::benchutil
