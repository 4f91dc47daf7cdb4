// What a slow subscriber does to a fast publisher, under each backpressure
// policy. For each policy the parent creates a small channel (64 slots by
// default) on a private bus, then fork()s two processes that each open the
// channel themselves:
//
//   - a slow subscriber, attached before anything is published, that sleeps
//     a few microseconds per message (its "work");
//   - a fast publisher, started once the subscriber is attached, that offers
//     `messages` numbered messages as fast as it can, then an end marker.
//
// What the publisher does with each result is the point of the example:
//
//   block        publish waits (spin, then futex) while the ring is full; on
//                `timeout` (1 s without the subscriber moving) it retries.
//                Nothing is lost; the publisher runs at the subscriber's pace.
//   drop_oldest  publish never waits; the subscriber is lapped and skips to
//                the oldest message still in the ring, counting what it lost.
//   reject       publish returns `full` at once while the ring is full; this
//                publisher decides to shed the message (load shedding) and
//                counts it. Other choices: retry later, buffer, slow down.
//
// Both children report through a pipe; the parent prints the counters side
// by side. Exit status 0 only if every policy's invariant holds, with the
// subscriber's own order check clean (numbers strictly increasing):
//
//   block        delivered == published == offered, lost == 0
//   drop_oldest  delivered + lost == published == offered
//   reject       delivered == published, published + shed == offered, lost == 0
//
//   backpressure [--messages N] [--capacity C] [--work-us U] [--policy P]
//                (defaults: 5000 messages, 64 slots, 20 us; every policy)
#include <shmbus/shmbus.hpp>

#include "pipe_io.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <climits>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using shmbus_examples::read_all;
using shmbus_examples::write_all;

using shmbus::Channel;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;

constexpr std::uint64_t kEndMarker = UINT64_MAX;
constexpr std::uint64_t kBlockTimeoutNs = 1'000'000'000ULL;  // a block publish gives up after 1 s
constexpr unsigned kChildDeadlineS = 60;                     // a stuck child is killed (SIGALRM)

struct Config {
  std::uint64_t messages = 5000;
  std::uint32_t capacity = 64;
  std::uint64_t work_us = 20;
  std::vector<Policy> policies{Policy::block, Policy::drop_oldest, Policy::reject};
  std::string bus;
};

/// The message: a number and a check word, so that a torn or foreign payload
/// would be caught by the subscriber's order check.
struct Payload {
  std::uint64_t number;
  std::uint64_t check;
};
static_assert(sizeof(Payload) == 16);  // fits a 128-byte slot (56 bytes of header)

std::uint64_t check_of(std::uint64_t n) noexcept { return n * 0x9E3779B97F4A7C15ULL ^ 0x5bd1e995ULL; }

std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

/// What a child sends to the parent (one write, smaller than PIPE_BUF).
struct Report {
  std::uint32_t ok = 0;  ///< 1 if the child did its part without an error
  // publisher
  std::uint64_t published = 0;       ///< publish() returned ok
  std::uint64_t full = 0;            ///< reject: `full` results (each message shed)
  std::uint64_t timeouts = 0;        ///< block: `timeout` results (each retried)
  std::uint64_t blocked_ns = 0;      ///< the bus's count of time spent waiting for room
  std::uint64_t max_publish_ns = 0;  ///< the slowest single publish() call
  // subscriber
  std::uint64_t delivered = 0;  ///< messages read (end marker excluded)
  std::uint64_t lost = 0;       ///< the bus's count of messages this reader lost (lapped)
  std::uint64_t lapped_events = 0;
  std::uint64_t violations = 0;  ///< a number not above the previous one, or a bad check word
  // both
  std::uint64_t elapsed_ns = 0;
  char error[160] = {};
};
static_assert(sizeof(Report) < PIPE_BUF);

[[noreturn]] void report_and_exit(int fd, Report& r, const std::string& error = {}) {
  r.ok = error.empty() ? 1 : 0;
  if (!error.empty()) std::snprintf(r.error, sizeof r.error, "%s", error.c_str());
  (void)write_all(fd, &r, sizeof r);
  ::_exit(error.empty() ? 0 : 1);  // no destructors of what the parent mapped before fork
}

void child_setup() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the parent
  ::alarm(kChildDeadlineS);            // never hang a test
}

std::string channel_name(Policy p) { return "bp-" + std::string(shmbus::to_string(p)); }

// --- the slow subscriber ------------------------------------------------------------

[[noreturn]] void run_subscriber(const Config& cfg, Policy policy, int ready_fd, int report_fd) {
  child_setup();
  Report r;
  auto ch = Channel::open(channel_name(policy), cfg.bus);
  if (!ch) report_and_exit(report_fd, r, "open: " + ch.error().message());
  shmbus::SubscribeOptions so;  // anonymous, from the first message, sleeps on the futex when idle
  so.start = shmbus::StartAt::earliest();
  so.wait = shmbus::WaitStrategy::block;
  auto sub = ch->subscribe(so);
  if (!sub) report_and_exit(report_fd, r, "subscribe: " + sub.error().message());
  const char ready = 'r';
  (void)write_all(ready_fd, &ready, 1);  // attached: our cursor gates the publisher from now on
  ::close(ready_fd);

  const std::uint64_t start = now_ns();
  std::uint64_t previous = 0;
  bool any = false;
  std::byte buf[sizeof(Payload)];
  shmbus::Message m;
  for (;;) {
    const PollStatus st = sub->poll_wait(m, buf, 5'000'000'000ULL);
    if (st == PollStatus::lapped) continue;  // drop_oldest: the loss is counted, read on
    if (st != PollStatus::ok) report_and_exit(report_fd, r, "poll: " + std::string(shmbus::to_string(st)));
    Payload p{};
    if (m.payload.size() != sizeof p) {
      ++r.violations;
      continue;
    }
    std::memcpy(&p, m.payload.data(), sizeof p);
    if (p.number == kEndMarker) break;
    if (p.check != check_of(p.number) || (any && p.number <= previous)) ++r.violations;
    previous = p.number;
    any = true;
    ++r.delivered;
    std::this_thread::sleep_for(std::chrono::microseconds(cfg.work_us));  // the slow "work"
  }
  r.elapsed_ns = now_ns() - start;
  const auto c = sub->counters();
  r.lost = c.lost;
  r.lapped_events = c.lapped_events;
  report_and_exit(report_fd, r);
}

// --- the fast publisher -------------------------------------------------------------

[[noreturn]] void run_publisher(const Config& cfg, Policy policy, int report_fd) {
  child_setup();
  Report r;
  auto ch = Channel::open(channel_name(policy), cfg.bus);
  if (!ch) report_and_exit(report_fd, r, "open: " + ch.error().message());
  auto pub = ch->publisher();
  if (!pub) report_and_exit(report_fd, r, "publisher: " + pub.error().message());

  const auto publish = [&](std::uint64_t n) {
    const Payload p{n, check_of(n)};
    const std::uint64_t t0 = now_ns();
    const PublishStatus st = pub->publish(std::as_bytes(std::span<const Payload>(&p, 1)), {.key = n}, kBlockTimeoutNs);
    r.max_publish_ns = std::max(r.max_publish_ns, now_ns() - t0);
    return st;
  };

  const std::uint64_t start = now_ns();
  for (std::uint64_t n = 0; n < cfg.messages; ++n) {
    for (;;) {
      const PublishStatus st = publish(n);
      if (st == PublishStatus::ok) {
        ++r.published;
        break;
      }
      if (st == PublishStatus::timeout) {  // block: the subscriber did not move for 1 s: retry
        ++r.timeouts;
        continue;
      }
      if (st == PublishStatus::full) {  // reject: our decision is to shed this message
        ++r.full;
        break;
      }
      report_and_exit(report_fd, r, "publish #" + std::to_string(n) + ": " + std::string(shmbus::to_string(st)));
    }
  }
  r.elapsed_ns = now_ns() - start;
  // The end marker must arrive whatever the policy: retry until it is in.
  for (;;) {
    const PublishStatus st = publish(kEndMarker);
    if (st == PublishStatus::ok) break;
    if (st == PublishStatus::full) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      continue;
    }
    if (st != PublishStatus::timeout) {
      report_and_exit(report_fd, r, "publish end marker: " + std::string(shmbus::to_string(st)));
    }
  }
  // The bus's own counters for this publisher (they leave with the handle).
  for (const auto& ps : ch->stats().publishers) {
    if (ps.pid == static_cast<std::uint32_t>(::getpid())) r.blocked_ns = ps.blocked_ns;
  }
  report_and_exit(report_fd, r);
}

// --- the parent ------------------------------------------------------------------------

struct Outcome {
  Policy policy;
  Report pub;
  Report sub;
  bool children_ok = false;
  bool invariant = false;
  std::string rule;
};

pid_t fork_child() {
  std::fflush(stdout);
  std::fflush(stderr);
  return ::fork();
}

bool wait_ok(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::optional<Outcome> run_policy(const Config& cfg, Policy policy) {
  shmbus::ChannelOptions opts;
  opts.policy = policy;
  opts.capacity = cfg.capacity;
  opts.slot_size = 128;  // 16 bytes of payload is all we need (a 64-byte slot holds 8)
  auto ch = Channel::create(channel_name(policy), opts, cfg.bus);
  if (!ch) {
    std::fprintf(stderr, "backpressure: create %s: %s\n", channel_name(policy).c_str(), ch.error().message().c_str());
    return std::nullopt;
  }
  Outcome o{policy, {}, {}, false, false, {}};
  int ready[2];
  int sub_rep[2];
  int pub_rep[2];
  if (::pipe(ready) != 0 || ::pipe(sub_rep) != 0 || ::pipe(pub_rep) != 0) {
    std::perror("backpressure: pipe");
    return std::nullopt;
  }
  const pid_t sub_pid = fork_child();
  if (sub_pid == 0) {
    ::close(ready[0]);
    ::close(sub_rep[0]);
    ::close(pub_rep[0]);
    ::close(pub_rep[1]);
    run_subscriber(cfg, policy, ready[1], sub_rep[1]);
  }
  ::close(ready[1]);
  ::close(sub_rep[1]);
  char c = 0;
  const bool attached = read_all(ready[0], &c, 1);  // EOF instead: the subscriber failed
  ::close(ready[0]);
  pid_t pub_pid = -1;
  if (attached) {
    pub_pid = fork_child();
    if (pub_pid == 0) {
      ::close(pub_rep[0]);
      ::close(sub_rep[0]);
      run_publisher(cfg, policy, pub_rep[1]);
    }
  }
  ::close(pub_rep[1]);
  const bool got_sub = read_all(sub_rep[0], &o.sub, sizeof o.sub);
  const bool got_pub = attached && read_all(pub_rep[0], &o.pub, sizeof o.pub);
  ::close(sub_rep[0]);
  ::close(pub_rep[0]);
  const bool sub_exit = wait_ok(sub_pid);
  const bool pub_exit = pub_pid > 0 && wait_ok(pub_pid);
  o.children_ok = got_sub && got_pub && sub_exit && pub_exit && o.sub.ok && o.pub.ok;
  if (!o.children_ok) {
    std::fprintf(stderr, "backpressure %s: subscriber %s%s; publisher %s%s\n",
                 std::string(shmbus::to_string(policy)).c_str(), o.sub.ok ? "ok" : "FAILED: ", o.sub.error,
                 o.pub.ok ? "ok" : "FAILED: ", o.pub.error);
  }
  const Report& p = o.pub;
  const Report& s = o.sub;
  switch (policy) {
    case Policy::block:
      o.rule = "delivered == published == offered";
      o.invariant = s.delivered == p.published && p.published == cfg.messages && s.lost == 0;
      break;
    case Policy::drop_oldest:
      o.rule = "delivered + lost == published";
      o.invariant = s.delivered + s.lost == p.published && p.published == cfg.messages;
      break;
    case Policy::reject:
      o.rule = "delivered == published, + shed == offered";
      o.invariant = s.delivered == p.published && p.published + p.full == cfg.messages && s.lost == 0;
      break;
  }
  o.invariant = o.invariant && s.violations == 0 && o.children_ok;
  (void)Channel::remove(channel_name(policy), cfg.bus);
  return o;
}

std::string ms(std::uint64_t ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f ms", static_cast<double>(ns) / 1e6);
  return b;
}

std::string us(std::uint64_t ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0f us", static_cast<double>(ns) / 1e3);
  return b;
}

void print_table(const Config& cfg, const std::vector<Outcome>& outcomes) {
  std::printf("\n%llu messages offered per policy; ring of %u slots; the subscriber sleeps %llu us per message\n\n",
              static_cast<unsigned long long>(cfg.messages), cfg.capacity,
              static_cast<unsigned long long>(cfg.work_us));
  std::printf("%-26s", "");
  for (const auto& o : outcomes) std::printf("%16s", std::string(shmbus::to_string(o.policy)).c_str());
  std::printf("\n");
  const auto row = [&](const char* name, auto field) {
    std::printf("%-26s", name);
    for (const auto& o : outcomes) std::printf("%16s", field(o).c_str());
    std::printf("\n");
  };
  const auto n = [](std::uint64_t v) { return std::to_string(v); };
  row("publisher: published", [&](const Outcome& o) { return n(o.pub.published); });
  row("publisher: full -> shed", [&](const Outcome& o) { return n(o.pub.full); });
  row("publisher: timeouts", [&](const Outcome& o) { return n(o.pub.timeouts); });
  row("publisher: waited (bus)", [&](const Outcome& o) { return ms(o.pub.blocked_ns); });
  row("publisher: slowest call", [&](const Outcome& o) { return us(o.pub.max_publish_ns); });
  row("publisher: run time", [&](const Outcome& o) { return ms(o.pub.elapsed_ns); });
  row("subscriber: delivered", [&](const Outcome& o) { return n(o.sub.delivered); });
  row("subscriber: lost", [&](const Outcome& o) { return n(o.sub.lost); });
  row("subscriber: lapped", [&](const Outcome& o) { return n(o.sub.lapped_events); });
  row("subscriber: order errors", [&](const Outcome& o) { return n(o.sub.violations); });
  row("subscriber: run time", [&](const Outcome& o) { return ms(o.sub.elapsed_ns); });
  std::printf("\n");
  for (const auto& o : outcomes) {
    std::printf("%-12s %-42s %s\n", std::string(shmbus::to_string(o.policy)).c_str(), o.rule.c_str(),
                o.invariant ? "holds" : "FAILS");
  }
}

bool parse_u64(const char* s, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-') return false;
  out = v;
  return true;
}

int usage() {
  std::fprintf(stderr,
               "usage: backpressure [--messages N] [--capacity C] [--work-us U] [--policy block|drop_oldest|reject]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) return usage();
    const char* v = argv[++i];
    std::uint64_t x = 0;
    if (a == "--messages" && parse_u64(v, x) && x > 0) {
      cfg.messages = x;
    } else if (a == "--capacity" && parse_u64(v, x) && x >= 2 && x <= (1u << 20)) {
      cfg.capacity = static_cast<std::uint32_t>(x);
    } else if (a == "--work-us" && parse_u64(v, x) && x <= 1'000'000) {
      cfg.work_us = x;
    } else if (a == "--policy" && shmbus::parse_policy(v)) {
      cfg.policies = {*shmbus::parse_policy(v)};
    } else {
      std::fprintf(stderr, "backpressure: bad option %s %s\n", argv[i - 1], v);
      return usage();
    }
  }
  cfg.bus = "backpressure-" + std::to_string(::getpid());  // private: runs never meet

  std::vector<Outcome> outcomes;
  bool ok = true;
  for (const Policy p : cfg.policies) {
    std::printf("running %s ...\n", std::string(shmbus::to_string(p)).c_str());
    std::fflush(stdout);
    auto o = run_policy(cfg, p);
    if (!o) return 1;
    ok = ok && o->invariant;
    outcomes.push_back(*o);
  }
  print_table(cfg, outcomes);
  return ok ? 0 : 1;
}
