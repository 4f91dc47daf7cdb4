// Cross-process ping-pong latency: shmbus against the floor, in the same run.
//
// Two processes (the parent "pinger" A and a forked "ponger" B), pinned to two
// CPUs. Each round trip: A stamps CLOCK_MONOTONIC, sends, waits for the
// answer, stamps again; the difference is one sample. Transports, measured in
// interleaved blocks so that a host that moves the virtual CPUs mid-run hits
// all of them alike (DESIGN.md section 7: quote ratios, never absolute times):
//
//   floor    one 64-byte cache line in a MAP_SHARED mapping made before fork:
//            A writes 2i+1, B waits for it and writes 2i+2, A waits for that.
//            Two cache-line transfers per round trip: nothing can beat it.
//   shmbus   two channels, "ping" (A -> B) and "pong" (B -> A); A publishes
//            round i's payload, B polls it (copy-out), publishes it back, A
//            polls the echo and checks it.
//   eventfd  (--blocking only) two eventfds, blocking read(): what a kernel
//            wake-up costs, the yardstick for a sleeping subscriber.
//
// Waiting: busy-spin by default (poll in a loop with PAUSE; the floor spins
// the same way). --blocking makes both shmbus subscribers use
// WaitStrategy::block and Subscriber::wait(), which spins a while before it
// sleeps on the channel's futex: with back-to-back round trips it rarely
// sleeps, so --gap-us N inserts an untimed pause before each round trip to
// make the ponger fall asleep; the report counts voluntary context switches
// per round trip so that one can see which path was measured.
//
// Policy: `block` by default. It is the default policy and the lossless one,
// so the numbers include everything a reliable request/response pays: the
// publisher's gate check, the reader's cursor store (seq_cst) and its check
// for sleeping publishers. drop_oldest (--policy drop_oldest) skips those and
// validates a seqlock instead; with one message in flight nothing is ever
// lapped, so it would flatter the bus for users who cannot drop messages.
//
// Each sample includes one clock_gettime pair; its cost is measured and shown.
//
//   shmbus_pingpong [--rounds N] [--warmup N] [--size BYTES] [--blocking]
//                   [--gap-us N] [--policy block|drop_oldest] [--cpus A,B]
//                   [--blocks K] [--json FILE]
#include <shmbus/shmbus.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::Message;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;
using shmbus::StartAt;
using shmbus::SubscribeOptions;
using shmbus::WaitStrategy;

constexpr std::uint64_t kSpinCheckMask = (1u << 22) - 1;  // spins between liveness checks
constexpr std::uint64_t kPeerTimeoutNs = 10'000'000'000ULL;
constexpr std::uint32_t kCapacity = 1024;

inline std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

/// Set when both processes must share one CPU: a spinner then yields, or
/// every hand-off would wait for a scheduler tick (the numbers are then
/// meaningless, but the smoke test still finishes).
bool g_one_cpu = false;

inline void cpu_relax() noexcept {
  if (g_one_cpu) {
    ::sched_yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

struct Config {
  std::uint64_t rounds = 100'000;
  std::uint64_t warmup = 10'000;
  std::uint64_t blocks = 10;  ///< interleaved blocks per transport
  std::size_t size = 64;      ///< payload bytes
  bool blocking = false;
  std::uint64_t gap_ns = 0;   ///< untimed pause before each round trip
  Policy policy = Policy::block;
  std::array<int, 2> cpus{-1, -1};  ///< -1: the first two CPUs we may run on
  std::string json;
  std::string bus;
};

// The floor's cache line, on its own 128-byte slot (adjacent-line prefetch).
struct alignas(128) FloorLine {
  std::atomic<std::uint64_t> ball;
  std::uint8_t pad[120];
};
static_assert(sizeof(FloorLine) == 128);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

/// A fatal error. Thrown (not exit()ed) so that the parent unwinds through
/// its channel guard; the ponger catches it and _exit()s.
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void die(const std::string& what) { throw Fatal(what); }

/// Gives up a spin that lasts too long (a dead or stuck peer, or SIGINT).
/// Checked every kSpinCheckMask+1 spins, in every transport alike.
struct SpinGuard {
  std::uint64_t spins = 0;
  std::uint64_t since = 0;
  bool expired() noexcept {
    if ((++spins & kSpinCheckMask) != 0) return false;
    const std::uint64_t t = now_ns();
    if (since == 0) since = t;
    return g_stop != 0 || t - since > kPeerTimeoutNs;
  }
};

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

std::uint64_t voluntary_switches() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::uint64_t>(ru.ru_nvcsw);
}

void pause_ns(std::uint64_t ns) {
  if (ns == 0) return;
  const std::uint64_t until = now_ns() + ns;
  while (now_ns() < until) cpu_relax();
}

// --- one side of a shmbus channel pair ------------------------------------------

struct BusEnd {
  Channel in_ch;
  Channel out_ch;
  shmbus::Subscriber in;
  shmbus::Publisher out;
  std::vector<std::byte> buf;
  bool blocking = false;

  /// Opens both channels in this process (real multi-process use) and attaches.
  static BusEnd open(const Config& cfg, const char* in_name, const char* out_name) {
    BusEnd e;
    auto in_ch = Channel::open(in_name, cfg.bus);
    if (!in_ch) die("open " + std::string(in_name) + ": " + in_ch.error().message());
    auto out_ch = Channel::open(out_name, cfg.bus);
    if (!out_ch) die("open " + std::string(out_name) + ": " + out_ch.error().message());
    e.in_ch = std::move(in_ch.value());
    e.out_ch = std::move(out_ch.value());
    SubscribeOptions so;
    so.start = StartAt::earliest();
    so.wait = cfg.blocking ? WaitStrategy::block : WaitStrategy::busy_spin;
    auto sub = e.in_ch.subscribe(so);
    if (!sub) die("subscribe: " + sub.error().message());
    e.in = std::move(sub.value());
    auto pub = e.out_ch.publisher();
    if (!pub) die("publisher: " + pub.error().message());
    e.out = std::move(pub.value());
    e.buf.assign(std::max<std::size_t>(cfg.size, 8) + 64, std::byte{0});
    e.blocking = cfg.blocking;
    return e;
  }

  /// Waits for the next message; returns its payload (in buf).
  std::span<const std::byte> receive() {
    Message m;
    SpinGuard guard;
    for (;;) {
      const PollStatus st = in.poll(m, buf);
      if (st == PollStatus::ok) return m.payload;
      if (st != PollStatus::empty) die("poll: " + std::string(shmbus::to_string(st)));
      if (blocking) {
        const PollStatus w = in.wait(1'000'000'000ULL);
        if (w != PollStatus::ok && w != PollStatus::timeout) {
          die("wait: " + std::string(shmbus::to_string(w)));
        }
        if (g_stop) die("interrupted");
      } else {
        cpu_relax();
      }
      if (guard.expired()) die("the peer stopped answering");
    }
  }

  void send(std::span<const std::byte> payload) {
    const PublishStatus st = out.publish(payload);
    if (st != PublishStatus::ok) die("publish: " + std::string(shmbus::to_string(st)));
  }
};

// --- transports: A's timed side and B's echo side --------------------------------

enum class Transport : int { floor = 0, shmbus = 1, eventfd = 2 };
constexpr int kTransports = 3;
const char* name_of(Transport t) {
  switch (t) {
    case Transport::floor: return "floor";
    case Transport::shmbus: return "shmbus";
    case Transport::eventfd: return "eventfd";
  }
  return "?";
}

struct Shared {
  FloorLine* line = nullptr;  ///< MAP_SHARED before fork
  std::uint64_t floor_next = 0;
  int efd_ping = -1;  ///< eventfds made before fork
  int efd_pong = -1;
};

struct Pinger {
  const Config& cfg;
  Shared& sh;
  BusEnd bus;
  std::vector<std::byte> msg;
  std::uint64_t round = 0;

  std::uint64_t floor_once() {
    const std::uint64_t serve = ++sh.floor_next;  // odd: A's serve
    const std::uint64_t want = ++sh.floor_next;   // even: B's return
    SpinGuard guard;
    const std::uint64_t t0 = now_ns();
    // SYNC(ball): release / acquire pair with the ponger; the value is all we share.
    sh.line->ball.store(serve, std::memory_order_release);
    while (sh.line->ball.load(std::memory_order_acquire) != want) {
      cpu_relax();
      if (guard.expired()) die("floor: the peer stopped answering");
    }
    return now_ns() - t0;
  }

  std::uint64_t shmbus_once() {
    ++round;
    std::memcpy(msg.data(), &round, sizeof round);
    const std::uint64_t t0 = now_ns();
    bus.send(msg);
    const auto echo = bus.receive();
    const std::uint64_t t1 = now_ns();
    std::uint64_t got = 0;
    if (echo.size() != msg.size()) die("shmbus: echo of the wrong size");
    std::memcpy(&got, echo.data(), sizeof got);
    if (got != round) die("shmbus: echo of round " + std::to_string(got) + ", expected " +
                          std::to_string(round));
    return t1 - t0;
  }

  std::uint64_t eventfd_once() {
    std::uint64_t one = 1;
    std::uint64_t v = 0;
    const std::uint64_t t0 = now_ns();
    if (::write(sh.efd_ping, &one, sizeof one) != sizeof one) die("eventfd write");
    while (::read(sh.efd_pong, &v, sizeof v) != sizeof v) {
      if (errno != EINTR || g_stop) die("eventfd read");
    }
    return now_ns() - t0;
  }

  std::uint64_t once(Transport t) {
    pause_ns(cfg.gap_ns);
    switch (t) {
      case Transport::floor: return floor_once();
      case Transport::shmbus: return shmbus_once();
      case Transport::eventfd: return eventfd_once();
    }
    return 0;
  }
};

struct Ponger {
  Shared& sh;
  BusEnd bus;

  void floor_once() {
    const std::uint64_t serve = ++sh.floor_next;
    const std::uint64_t back = ++sh.floor_next;
    SpinGuard guard;
    while (sh.line->ball.load(std::memory_order_acquire) != serve) {
      cpu_relax();
      if (guard.expired()) die("floor (ponger): the peer stopped serving");
    }
    sh.line->ball.store(back, std::memory_order_release);
  }

  void shmbus_once() {
    const auto m = bus.receive();
    bus.send(m);  // echo (m points into our copy-out buffer)
  }

  void eventfd_once() {
    std::uint64_t v = 0;
    while (::read(sh.efd_ping, &v, sizeof v) != sizeof v) {
      if (errno != EINTR || g_stop) die("eventfd read (ponger)");
    }
    const std::uint64_t one = 1;
    if (::write(sh.efd_pong, &one, sizeof one) != sizeof one) die("eventfd write (ponger)");
  }

  void once(Transport t) {
    switch (t) {
      case Transport::floor: floor_once(); break;
      case Transport::shmbus: shmbus_once(); break;
      case Transport::eventfd: eventfd_once(); break;
    }
  }
};

/// The deterministic schedule both processes follow: warm-up of each
/// transport, then `blocks` rounds of (floor, shmbus[, eventfd]) blocks.
struct Step {
  Transport t;
  std::uint64_t n;
  bool timed;
};

std::vector<Transport> transports(const Config& cfg) {
  std::vector<Transport> ts{Transport::floor, Transport::shmbus};
  if (cfg.blocking) ts.push_back(Transport::eventfd);
  return ts;
}

std::vector<Step> schedule(const Config& cfg) {
  std::vector<Step> s;
  for (Transport t : transports(cfg)) s.push_back({t, cfg.warmup, false});
  for (std::uint64_t b = 0; b < cfg.blocks; ++b) {
    const std::uint64_t n = cfg.rounds / cfg.blocks + (b < cfg.rounds % cfg.blocks ? 1 : 0);
    for (Transport t : transports(cfg)) s.push_back({t, n, true});
  }
  return s;
}

// --- statistics ------------------------------------------------------------------

struct Percentiles {
  static constexpr std::array<double, 5> kAt{50.0, 90.0, 99.0, 99.9, 99.99};
  static constexpr std::array<const char*, 6> kNames{"p50", "p90", "p99", "p99.9", "p99.99", "max"};
  std::array<double, 6> v{};  ///< ns: the five percentiles, then max
  double mean = 0;
};

Percentiles percentiles(std::vector<std::uint64_t> s) {
  Percentiles p;
  if (s.empty()) return p;
  std::sort(s.begin(), s.end());
  for (std::size_t i = 0; i < Percentiles::kAt.size(); ++i) {
    // nearest-rank: the smallest sample with at least p% of samples <= it
    const double rank = Percentiles::kAt[i] / 100.0 * static_cast<double>(s.size());
    std::size_t idx = static_cast<std::size_t>(rank);
    if (static_cast<double>(idx) < rank) ++idx;
    idx = std::clamp<std::size_t>(idx, 1, s.size()) - 1;
    p.v[i] = static_cast<double>(s[idx]);
  }
  p.v[5] = static_cast<double>(s.back());
  double sum = 0;
  for (std::uint64_t x : s) sum += static_cast<double>(x);
  p.mean = sum / static_cast<double>(s.size());
  return p;
}

struct ClockCost {
  double p50 = 0;
  double min = 0;
};

ClockCost clock_cost() {
  std::vector<std::uint64_t> d(200'000);
  for (auto& x : d) {
    const std::uint64_t a = now_ns();
    x = now_ns() - a;
  }
  std::sort(d.begin(), d.end());
  return {static_cast<double>(d[d.size() / 2]), static_cast<double>(d.front())};
}

// --- processes -------------------------------------------------------------------

/// What the ponger reports back at the end.
struct PongReport {
  std::uint64_t switches[kTransports] = {};
  std::int32_t cpu = -1;
  std::int32_t ok = 0;
};

/// The forked ponger. Never returns (and never unwinds) into the parent's
/// frames, so the parent's channel guard cannot run in it.
[[noreturn]] void run_ponger(const Config& cfg, Shared& sh, int report_fd, bool pin) {
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  try {
    PongReport rep;
    if (pin && pin_to(cfg.cpus[1])) rep.cpu = cfg.cpus[1];
    Ponger b{sh, BusEnd::open(cfg, "ping", "pong")};
    char c = 1;
    // Attached: tell the pinger, which only then sends its first ping.
    if (::write(report_fd, &c, 1) != 1) ::_exit(1);
    for (const Step& st : schedule(cfg)) {
      const std::uint64_t before = voluntary_switches();
      for (std::uint64_t i = 0; i < st.n; ++i) b.once(st.t);
      if (st.timed) rep.switches[static_cast<int>(st.t)] += voluntary_switches() - before;
    }
    rep.ok = 1;
    if (::write(report_fd, &rep, sizeof rep) != static_cast<ssize_t>(sizeof rep)) ::_exit(1);
    ::_exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus_pingpong (ponger): %s\n", e.what());
  } catch (...) {
  }
  ::_exit(1);
}

bool read_full(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, b, n);
    if (r < 0 && errno == EINTR) {
      if (g_stop) return false;
      continue;
    }
    if (r <= 0) return false;
    b += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

class ChannelGuard {
 public:
  explicit ChannelGuard(std::string bus) : bus_(std::move(bus)) {}
  ~ChannelGuard() {
    for (const char* n : {"ping", "pong"}) (void)Channel::remove(n, bus_);
  }
  ChannelGuard(const ChannelGuard&) = delete;
  ChannelGuard& operator=(const ChannelGuard&) = delete;

 private:
  std::string bus_;
};

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [options]\n"
               "  --rounds N      timed round trips per transport (default 100000)\n"
               "  --warmup N      untimed round trips per transport first (default 10000)\n"
               "  --size BYTES    payload size, >= 8 (default 64)\n"
               "  --blocking      subscribers wait with WaitStrategy::block (adds an eventfd baseline)\n"
               "  --gap-us N      untimed pause before each round trip (lets a blocking waiter sleep)\n"
               "  --policy P      block (default) or drop_oldest\n"
               "  --cpus A,B      CPUs for the pinger and the ponger (default: the first two allowed)\n"
               "  --blocks K      interleaved blocks per transport (default 10)\n"
               "  --json FILE     also write the numbers as JSON\n",
               argv0);
}

std::optional<Config> parse(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has = i + 1 < argc;
    auto num = [&](std::uint64_t& out) {
      char* end = nullptr;
      out = std::strtoull(argv[++i], &end, 10);
      return end != nullptr && *end == '\0';
    };
    std::uint64_t v = 0;
    if (a == "--rounds" && has && num(v) && v > 0) {
      cfg.rounds = v;
    } else if (a == "--warmup" && has && num(v)) {
      cfg.warmup = v;
    } else if (a == "--size" && has && num(v) && v >= 8 && v <= (1u << 20)) {
      cfg.size = v;
    } else if (a == "--gap-us" && has && num(v)) {
      cfg.gap_ns = v * 1000;
    } else if (a == "--blocks" && has && num(v) && v > 0) {
      cfg.blocks = v;
    } else if (a == "--blocking") {
      cfg.blocking = true;
    } else if (a == "--policy" && has) {
      const auto p = shmbus::parse_policy(argv[++i]);
      if (!p || *p == Policy::reject) return std::nullopt;
      cfg.policy = *p;
    } else if (a == "--cpus" && has) {
      if (std::sscanf(argv[++i], "%d,%d", &cfg.cpus[0], &cfg.cpus[1]) != 2) return std::nullopt;
    } else if (a == "--json" && has) {
      cfg.json = argv[++i];
    } else {
      return std::nullopt;
    }
  }
  cfg.blocks = std::min(cfg.blocks, cfg.rounds);
  return cfg;
}

void run(Config cfg) {
  // Pinning: two distinct CPUs this process may run on.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ::sched_getaffinity(0, sizeof allowed, &allowed);
  if (cfg.cpus[0] < 0 || cfg.cpus[1] < 0) {
    int k = 0;
    for (int c = 0; c < CPU_SETSIZE && k < 2; ++c) {
      if (CPU_ISSET(c, &allowed)) cfg.cpus[k++] = c;
    }
  }
  const bool can_pin = cfg.cpus[0] != cfg.cpus[1] && cfg.cpus[0] >= 0 && cfg.cpus[1] >= 0 &&
                       cfg.cpus[0] < CPU_SETSIZE && cfg.cpus[1] < CPU_SETSIZE &&
                       CPU_ISSET(cfg.cpus[0], &allowed) && CPU_ISSET(cfg.cpus[1], &allowed);
  if (!can_pin) {
    g_one_cpu = CPU_COUNT(&allowed) < 2;
    std::fprintf(stderr, "shmbus_pingpong: warning: CPUs %d,%d not both available; not pinning%s "
                         "(numbers will be noisy)\n", cfg.cpus[0], cfg.cpus[1],
                 g_one_cpu ? ", one CPU: spinners yield" : "");
  }

  // Channels: ping (A -> B) and pong (B -> A), created before fork; each
  // process then opens them itself.
  ChannelGuard guard(cfg.bus);
  ChannelOptions o;
  o.capacity = kCapacity;
  o.slot_size = static_cast<std::uint32_t>((48 + cfg.size + 63) / 64 * 64);
  o.policy = cfg.policy;
  for (const char* n : {"ping", "pong"}) {
    auto ch = Channel::create(n, o, cfg.bus);
    if (!ch) die(std::string("create ") + n + ": " + ch.error().message());
  }

  Shared sh;
  void* mem = ::mmap(nullptr, sizeof(FloorLine), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
  if (mem == MAP_FAILED) die(std::string("mmap: ") + std::strerror(errno));
  sh.line = new (mem) FloorLine{};  // touched here: pre-faulted for both processes
  sh.line->ball.store(0, std::memory_order_relaxed);  // relaxed: before fork
  if (cfg.blocking) {
    sh.efd_ping = ::eventfd(0, EFD_CLOEXEC);
    sh.efd_pong = ::eventfd(0, EFD_CLOEXEC);
    if (sh.efd_ping < 0 || sh.efd_pong < 0) die(std::string("eventfd: ") + std::strerror(errno));
  }
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) die("pipe");

  std::fflush(stdout);
  const pid_t child = ::fork();
  if (child < 0) die(std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    ::close(report[0]);
    run_ponger(cfg, sh, report[1], can_pin);
  }
  ::close(report[1]);
  auto fail = [&](const std::string& what) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    die(what);
  };

  int a_cpu = -1;
  if (can_pin && pin_to(cfg.cpus[0])) a_cpu = cfg.cpus[0];
  const ClockCost clk = clock_cost();
  Pinger a{cfg, sh, BusEnd::open(cfg, "pong", "ping"), std::vector<std::byte>(cfg.size), 0};
  char c = 0;
  if (!read_full(report[0], &c, 1)) fail("the ponger did not start");

  std::array<std::vector<std::uint64_t>, kTransports> samples;
  for (Transport t : transports(cfg)) {
    auto& v = samples[static_cast<int>(t)];
    v.assign(cfg.rounds, 0);  // touch the pages now, not while timing
    v.clear();                // keeps the capacity
  }
  std::array<std::uint64_t, kTransports> a_switches{};
  const std::uint64_t run_start = now_ns();
  for (const Step& st : schedule(cfg)) {
    auto& out = samples[static_cast<int>(st.t)];
    const std::uint64_t before = voluntary_switches();
    for (std::uint64_t i = 0; i < st.n; ++i) {
      const std::uint64_t d = a.once(st.t);
      if (st.timed) out.push_back(d);
    }
    if (st.timed) a_switches[static_cast<int>(st.t)] += voluntary_switches() - before;
    if (g_stop) fail("interrupted");
  }
  const double run_s = static_cast<double>(now_ns() - run_start) / 1e9;
  PongReport rep;
  if (!read_full(report[0], &rep, sizeof rep) || rep.ok != 1) fail("the ponger failed");
  int status = 0;
  ::waitpid(child, &status, 0);

  // --- report ---------------------------------------------------------------------
  std::array<Percentiles, kTransports> pct;
  for (Transport t : transports(cfg)) pct[static_cast<int>(t)] = percentiles(samples[static_cast<int>(t)]);
  const Percentiles& fl = pct[0];
  const Percentiles& sb = pct[1];
  const Percentiles& ev = pct[2];

  std::printf("shmbus ping-pong: %llu round trips per transport (+%llu warm-up, %llu interleaved "
              "blocks), %zu-byte payload, policy %s, %s%s, CPUs %d/%d, %.1f s\n",
              static_cast<unsigned long long>(cfg.rounds), static_cast<unsigned long long>(cfg.warmup),
              static_cast<unsigned long long>(cfg.blocks), cfg.size,
              std::string(shmbus::to_string(cfg.policy)).c_str(),
              cfg.blocking ? "blocking subscribers (WaitStrategy::block)" : "busy-spin subscribers",
              cfg.gap_ns != 0 ? (", gap " + std::to_string(cfg.gap_ns / 1000) + " us").c_str() : "",
              a_cpu, rep.cpu, run_s);
  std::printf("clock_gettime pair: p50 %.0f ns, min %.0f ns (inside every sample below)\n", clk.p50,
              clk.min);
  std::printf("\n%-8s %10s %10s %8s", "ns", "floor", "shmbus", "ratio");
  if (cfg.blocking) std::printf(" %10s %13s", "eventfd", "shmbus/evfd");
  std::printf("\n");
  for (std::size_t i = 0; i < Percentiles::kNames.size(); ++i) {
    std::printf("%-8s %10.0f %10.0f %7.2fx", Percentiles::kNames[i], fl.v[i], sb.v[i],
                fl.v[i] > 0 ? sb.v[i] / fl.v[i] : 0.0);
    if (cfg.blocking) std::printf(" %10.0f %12.2fx", ev.v[i], ev.v[i] > 0 ? sb.v[i] / ev.v[i] : 0.0);
    std::printf("\n");
  }
  std::printf("%-8s %10.0f %10.0f %7.2fx", "mean", fl.mean, sb.mean, fl.mean > 0 ? sb.mean / fl.mean : 0.0);
  if (cfg.blocking) std::printf(" %10.0f %12.2fx", ev.mean, ev.mean > 0 ? sb.mean / ev.mean : 0.0);
  std::printf("\n");
  const double rounds = static_cast<double>(cfg.rounds);
  std::printf("\nvoluntary context switches per round trip (pinger / ponger):");
  for (Transport t : transports(cfg)) {
    const int k = static_cast<int>(t);
    std::printf("  %s %.3f / %.3f", name_of(t), static_cast<double>(a_switches[k]) / rounds,
                static_cast<double>(rep.switches[k]) / rounds);
  }
  std::printf("\n");

  if (!cfg.json.empty()) {
    FILE* f = std::fopen(cfg.json.c_str(), "w");
    if (f == nullptr) die("cannot write " + cfg.json + ": " + std::strerror(errno));
    std::fprintf(f, "{\n  \"config\": {\"rounds\": %llu, \"warmup\": %llu, \"blocks\": %llu, "
                    "\"size\": %zu, \"policy\": \"%s\", \"blocking\": %s, \"gap_us\": %llu, "
                    "\"cpus\": [%d, %d]},\n",
                 static_cast<unsigned long long>(cfg.rounds), static_cast<unsigned long long>(cfg.warmup),
                 static_cast<unsigned long long>(cfg.blocks), cfg.size,
                 std::string(shmbus::to_string(cfg.policy)).c_str(), cfg.blocking ? "true" : "false",
                 static_cast<unsigned long long>(cfg.gap_ns / 1000), a_cpu, rep.cpu);
    std::fprintf(f, "  \"clock_pair_ns\": {\"p50\": %.0f, \"min\": %.0f},\n", clk.p50, clk.min);
    auto obj = [&](const char* key, const Percentiles& p, int k) {
      std::fprintf(f, "  \"%s\": {", key);
      for (std::size_t i = 0; i < Percentiles::kNames.size(); ++i) {
        std::fprintf(f, "\"%s\": %.0f, ", Percentiles::kNames[i], p.v[i]);
      }
      std::fprintf(f, "\"mean\": %.1f, \"switches_per_round\": [%.4f, %.4f]},\n", p.mean,
                   static_cast<double>(a_switches[k]) / rounds,
                   static_cast<double>(rep.switches[k]) / rounds);
    };
    obj("floor", fl, 0);
    obj("shmbus", sb, 1);
    if (cfg.blocking) obj("eventfd", ev, 2);
    std::fprintf(f, "  \"ratio_shmbus_floor\": {");
    for (std::size_t i = 0; i < Percentiles::kNames.size(); ++i) {
      std::fprintf(f, "\"%s\": %.3f%s", Percentiles::kNames[i], fl.v[i] > 0 ? sb.v[i] / fl.v[i] : 0.0,
                   i + 1 < Percentiles::kNames.size() ? ", " : "");
    }
    std::fprintf(f, "}\n}\n");
    std::fclose(f);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed = parse(argc, argv);
  if (!parsed) {
    usage(argv[0]);
    return 2;
  }
  Config cfg = *parsed;
  cfg.bus = "pingpong-" + std::to_string(::getpid());

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  try {
    run(cfg);  // removes its channels on every exit path
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus_pingpong: %s\n", e.what());
    return 1;
  }
  return 0;
}
