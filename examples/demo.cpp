// shmbus demo: the three backpressure policies, shown with real processes.
//
// The parent creates one channel per policy (block, drop_oldest, reject) on a
// private bus ("demo-<pid>"), each with a small ring (256 slots) so that
// backpressure actually happens. For each channel it then fork()s
//
//   - two publishers, each appending `count` messages {publisher id, sequence};
//   - a fast subscriber, which polls and spins (yielding the CPU after a
//     while, so that on a 2-core machine it does not starve the processes it
//     waits for);
//   - a slow subscriber, which spins a few microseconds per message (its
//     "work"), sleeps on the channel's futex when idle, and therefore lags.
//
// Every child opens the channel itself with Channel::open (nothing mapped by
// the parent is used in a child) and reports to the parent through a pipe.
// Subscribers check each publisher's order: sequences strictly increase; on
// drop_oldest gaps are allowed but must add up to what the bus counted as
// lost. While the children are still attached, the parent takes a
// Channel::stats() snapshot (head, depth, cursors, lag, per-publisher
// counters) and prints it, then lets them exit.
//
// What each policy does to the publishers here:
//   block        publish waits up to kBlockTimeoutNs for the slowest reader;
//                on `timeout` the publisher retries the same message (counted).
//   drop_oldest  publish never waits; lagging readers are lapped and count
//                their loss.
//   reject       publish fails at once with `full`; the publisher pauses
//                kRejectPauseUs and retries the same message (counted), so
//                every message is eventually delivered.
//
// Exit status 0 only if: no order violation anywhere; on block and reject
// every subscriber got every message (delivered == published, lost == 0); on
// drop_oldest delivered + lost == published for every subscriber, where
// "published" counts every sequence publishers claimed, including the rare
// claim lapped by another publisher before it was written (`abandoned`: the
// message is dropped like any other oldest one, and readers count it lost). The
// channels are removed at the end, on failure, and on SIGINT / SIGTERM.
//
// Part 4, a work queue: "orders" (block, 1024 slots) read through the worker
// group "billing" (visibility 200 ms, max_deliveries 3, nack backoff 5..20
// ms). A forked producer publishes count/5 orders; three forked workers (each
// Channel::open + join_group) receive, spin ~1 us, and ack. One order is
// poisoned: a worker that receives it nacks it (no worker crashes), so it is
// redelivered until its 3 deliveries are used up and the group moves it to
// the DLQ "orders-dlq". Workers stream the ids they acked through a pipe.
// The parent prints the group's Channel::stats() (next, floor, in_flight,
// delivered, acked, redelivered, dead_lettered, consumers) and the DLQ's
// decoded DlqRecord, redrives the DLQ back into "orders" (an operator then
// receives the order again and acks it), and removes both channels.
// Part 4 passes only if: the union of acked ids is every non-poisoned order,
// with no duplicate; the poisoned order was delivered exactly 3 times
// (attempts 1, 2, 3), never acked, and is the DLQ's only record (original
// sequence, attempts 3, reason max_deliveries, group "billing"); the group's
// counters agree (floor == next == head, acked == orders - 1, dead_lettered
// == 1, nothing in flight, three live consumers); the redrive moved exactly
// one message, which the group received as a new one, and a second moved none.
//
//   shmbus_demo               200,000 messages per publisher (a few seconds)
//   shmbus_demo --quick       20,000 messages per publisher (for ctest)
//   shmbus_demo --groups-only part 4 only
#include <shmbus/shmbus.hpp>

#include "pipe_io.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using shmbus_examples::write_all;

using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::ChannelStats;
using shmbus::Message;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;
using shmbus::StartAt;
using shmbus::SubscribeOptions;
using shmbus::WaitStrategy;

constexpr std::uint32_t kCapacity = 256;
constexpr std::uint32_t kSlotSize = 128;
constexpr int kPublishersPerChannel = 2;
constexpr std::uint64_t kBlockTimeoutNs = 2'000'000;  // 2 ms, then retry (counted)
constexpr int kRejectPauseUs = 20;                    // pause before retrying a rejected message
constexpr std::uint64_t kSlowWorkNs = 2'000;          // the slow subscriber's work per message
constexpr int kChildDeadlineS = 60;                   // a child gives up after this long
constexpr std::uint64_t kLiveSampleNs = 20'000'000;   // the mid-run stats snapshot, after start

std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// --- the message ----------------------------------------------------------------

/// What every publisher sends. `check` lets a reader detect a torn or foreign
/// payload (it would be an order violation, not a silent pass).
struct Payload {
  std::uint32_t publisher;
  std::uint32_t check;
  std::uint64_t sequence;  ///< per-publisher sequence, 0 .. count-1
};
static_assert(sizeof(Payload) == 16);

std::uint32_t check_of(std::uint32_t publisher, std::uint64_t sequence) noexcept {
  return static_cast<std::uint32_t>((sequence * 0x9E3779B97F4A7C15ULL) >> 32) ^ (publisher * 0x85EBCA6Bu);
}

// --- what children report -------------------------------------------------------

enum class Role : std::uint32_t { publisher, fast_subscriber, slow_subscriber, worker, order_producer };
enum class ReportKind : std::uint32_t { ready, result };

const char* role_name(Role r) {
  switch (r) {
    case Role::publisher: return "publisher";
    case Role::fast_subscriber: return "fast-sub";
    case Role::slow_subscriber: return "slow-sub";
    case Role::worker: return "worker";
    case Role::order_producer: return "producer";
  }
  return "?";
}

/// One record on the report pipe. Smaller than PIPE_BUF, so each write() is
/// atomic and records from different children never interleave.
struct Report {
  ReportKind kind = ReportKind::ready;
  Role role = Role::publisher;
  std::uint32_t id = 0;  ///< publisher id, or subscriber number
  std::int32_t pid = 0;
  std::uint32_t ok = 0;  ///< 1 if the child finished its work without an error
  // publishers
  std::uint64_t published = 0;
  std::uint64_t rejected = 0;  ///< `full` results (reject), each retried
  std::uint64_t timeouts = 0;  ///< `timeout` results (block), each retried
  std::uint64_t dropped = 0;   ///< drop_oldest: claims lapped before commit (`abandoned`)
  // subscribers
  std::uint64_t delivered = 0;      ///< messages that passed the checks (our count)
  std::uint64_t bus_delivered = 0;  ///< the bus's own counter
  std::uint64_t lost = 0;           ///< the bus's lost counter
  std::uint64_t gaps = 0;           ///< missing per-publisher sequences we saw
  std::uint64_t violations = 0;     ///< out-of-order, duplicate or bad payloads
  std::uint64_t lapped_events = 0;
  std::uint64_t elapsed_ns = 0;
  char error[160] = {};
};
static_assert(sizeof(Report) < PIPE_BUF);

// --- small process plumbing ------------------------------------------------------

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

/// Blocks until the write end of `fd`'s pipe is closed by everybody (EOF):
/// the parent closing its end is a broadcast to all children at once.
void wait_for_eof(int fd) {
  char c;
  for (;;) {
    const ssize_t r = ::read(fd, &c, 1);
    if (r == 0) return;
    if (r < 0 && errno != EINTR) return;
  }
}

/// The pipes of one channel's run. `up`: children -> parent (Report records);
/// `go`: closed by the parent to start the publishers; `release`: closed by
/// the parent after its stats snapshot, to let the children exit.
struct Pipes {
  int up[2] = {-1, -1};
  int go[2] = {-1, -1};
  int release[2] = {-1, -1};
};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// --- scenario -----------------------------------------------------------------

struct Scenario {
  Policy policy;
  std::string channel;  ///< channel name on the demo bus
};

struct Config {
  std::string bus;
  std::uint64_t count = 200'000;  ///< messages per publisher
};

// --- children -------------------------------------------------------------------

[[noreturn]] void child_exit(int up_fd, Report& r, bool ok, const std::string& error = {}) {
  r.kind = ReportKind::result;
  r.ok = ok ? 1 : 0;
  if (!error.empty()) std::snprintf(r.error, sizeof r.error, "%s", error.c_str());
  (void)write_all(up_fd, &r, sizeof r);
  ::_exit(ok ? 0 : 1);
}

void send_ready(int up_fd, Report& r) {
  r.kind = ReportKind::ready;
  (void)write_all(up_fd, &r, sizeof r);
}

int run_publisher(const Config& cfg, const Scenario& sc, std::uint32_t id, Pipes& p) {
  Report r;
  r.role = Role::publisher;
  r.id = id;
  r.pid = ::getpid();
  // Real multi-process use: this process maps the channel itself.
  auto ch = Channel::open(sc.channel, cfg.bus);
  if (!ch) child_exit(p.up[1], r, false, "open: " + ch.error().message());
  auto pub = ch->publisher();
  if (!pub) child_exit(p.up[1], r, false, "publisher: " + pub.error().message());
  send_ready(p.up[1], r);
  wait_for_eof(p.go[0]);

  const std::uint64_t start = now_ns();
  const std::uint64_t deadline = start + kChildDeadlineS * 1'000'000'000ULL;
  shmbus::MessageMeta meta;
  meta.key = id;
  for (std::uint64_t seq = 0; seq < cfg.count; ++seq) {
    const Payload msg{id, check_of(id, seq), seq};
    const auto bytes = std::as_bytes(std::span<const Payload>(&msg, 1));
    for (;;) {
      const PublishStatus st = pub->publish(bytes, meta, kBlockTimeoutNs);
      if (st == PublishStatus::ok) {
        ++r.published;
        break;
      }
      if (st == PublishStatus::full) {  // reject: shed, pause, retry the same message
        ++r.rejected;
        std::this_thread::sleep_for(std::chrono::microseconds(kRejectPauseUs));
      } else if (st == PublishStatus::timeout) {  // block: the slowest reader did not move
        ++r.timeouts;
      } else if (st == PublishStatus::abandoned && sc.policy == Policy::drop_oldest) {
        // drop_oldest: another publisher lapped this claim before we wrote it
        // (we were descheduled for a whole ring). The message is dropped like
        // any oldest message; its sequence is counted lost by the readers.
        ++r.dropped;
        break;
      } else {
        child_exit(p.up[1], r, false, "publish #" + std::to_string(seq) + ": " + std::string(shmbus::to_string(st)));
      }
      if (now_ns() > deadline) {
        child_exit(p.up[1], r, false, "gave up at message #" + std::to_string(seq));
      }
    }
  }
  r.elapsed_ns = now_ns() - start;
  r.kind = ReportKind::result;
  r.ok = 1;
  (void)write_all(p.up[1], &r, sizeof r);
  // Stay attached until the parent has taken its stats snapshot.
  wait_for_eof(p.release[0]);
  return 0;
}

/// Per-publisher order checker: strictly increasing sequences; gaps counted.
struct OrderCheck {
  std::array<std::int64_t, kPublishersPerChannel> last;
  std::uint64_t delivered = 0;
  std::uint64_t gaps = 0;
  std::uint64_t violations = 0;

  OrderCheck() { last.fill(-1); }

  void on_message(std::span<const std::byte> payload) {
    Payload m{};
    if (payload.size() != sizeof m) {
      ++violations;
      return;
    }
    std::memcpy(&m, payload.data(), sizeof m);
    if (m.publisher >= kPublishersPerChannel || m.check != check_of(m.publisher, m.sequence)) {
      ++violations;
      return;
    }
    const auto seq = static_cast<std::int64_t>(m.sequence);
    std::int64_t& prev = last[m.publisher];
    if (seq <= prev) {
      ++violations;  // a duplicate or a step back
      return;
    }
    gaps += static_cast<std::uint64_t>(seq - prev - 1);
    prev = seq;
    ++delivered;
  }

  /// Messages after the last one seen from each publisher are gaps too.
  void finish(std::uint64_t count) {
    for (std::int64_t l : last) gaps += count - static_cast<std::uint64_t>(l + 1);
  }
};

void spin_for(std::uint64_t ns) {
  const std::uint64_t until = now_ns() + ns;
  while (now_ns() < until) cpu_relax();
}

int run_subscriber(const Config& cfg, const Scenario& sc, Role role, std::uint32_t id, Pipes& p) {
  Report r;
  r.role = role;
  r.id = id;
  r.pid = ::getpid();
  auto ch = Channel::open(sc.channel, cfg.bus);
  if (!ch) child_exit(p.up[1], r, false, "open: " + ch.error().message());
  SubscribeOptions so;
  so.start = StartAt::earliest();  // attached before any publish: sees sequence 0
  // The fast reader polls and spins; WaitStrategy::yield gives the CPU away
  // between spins, which matters when 4 busy processes share 2 cores. The
  // slow reader sleeps on the channel's futex when it has caught up.
  so.wait = role == Role::fast_subscriber ? WaitStrategy::yield : WaitStrategy::block;
  auto sub = ch->subscribe(so);
  if (!sub) child_exit(p.up[1], r, false, "subscribe: " + sub.error().message());
  send_ready(p.up[1], r);
  wait_for_eof(p.go[0]);

  // Every channel carries exactly kPublishersPerChannel * count sequences:
  // publishers retry timeouts and rejects, drop_oldest never refuses, and a
  // drop_oldest claim lapped before its commit still used up its sequence.
  const std::uint64_t total = cfg.count * kPublishersPerChannel;
  const std::uint64_t start = now_ns();
  const std::uint64_t deadline = start + kChildDeadlineS * 1'000'000'000ULL;
  OrderCheck order;
  Message m;
  std::array<std::byte, kSlotSize> buf{};
  std::uint32_t empty_polls = 0;
  while (sub->cursor() < total) {
    const PollStatus st = sub->poll(m, buf);
    switch (st) {
      case PollStatus::ok:
        order.on_message(m.payload);
        if (role == Role::slow_subscriber) spin_for(kSlowWorkNs);
        empty_polls = 0;
        break;
      case PollStatus::lapped:  // drop_oldest: lost messages were counted; go on
        break;
      case PollStatus::empty:
        if (++empty_polls < 64) {
          cpu_relax();
        } else {
          (void)sub->wait(10'000'000);  // 10 ms at most: re-check the deadline
          if (now_ns() > deadline) {
            child_exit(p.up[1], r, false,
                       "timed out at cursor " + std::to_string(sub->cursor()) + " of " + std::to_string(total));
          }
        }
        break;
      default: child_exit(p.up[1], r, false, "poll: " + std::string(shmbus::to_string(st)));
    }
  }
  r.elapsed_ns = now_ns() - start;
  order.finish(cfg.count);
  const auto c = sub->counters();
  r.delivered = order.delivered;
  r.bus_delivered = c.delivered;
  r.lost = c.lost;
  r.lapped_events = c.lapped_events;
  r.gaps = order.gaps;
  r.violations = order.violations;
  r.kind = ReportKind::result;
  r.ok = 1;
  (void)write_all(p.up[1], &r, sizeof r);
  wait_for_eof(p.release[0]);
  return 0;
}

// --- parent -------------------------------------------------------------------------

struct Child {
  pid_t pid = -1;
  Role role = Role::publisher;
  std::uint32_t id = 0;
  bool reaped = false;
};

struct RunResult {
  Scenario scenario;
  std::uint64_t count = 0;  ///< messages per publisher
  std::vector<Child> children;
  std::vector<Report> reports;  ///< results, in the order received
  ChannelStats stats;           ///< at the end, every child still attached
  bool have_stats = false;
  ChannelStats live;  ///< taken while the publishers were running
  bool have_live = false;
  std::uint64_t live_at_ns = 0;
  std::uint64_t elapsed_ns = 0;
  std::string error;
};

/// Reads `want` records of `kind` from the report pipe, with a deadline; stops
/// early if a child died without reporting, or on SIGINT / SIGTERM.
bool collect(int fd, std::size_t want, ReportKind kind, std::vector<Child>& children, std::vector<Report>& out,
             int timeout_s, std::string& error, const std::function<void()>& on_tick = {}) {
  const std::uint64_t deadline = now_ns() + static_cast<std::uint64_t>(timeout_s) * 1'000'000'000ULL;
  std::size_t got = 0;
  Report r;
  std::size_t have = 0;  // bytes of `r` read so far
  while (got < want) {
    if (g_stop) {
      error = "interrupted";
      return false;
    }
    if (now_ns() > deadline) {
      error = "timed out waiting for the children";
      return false;
    }
    if (on_tick) on_tick();
    pollfd pfd{fd, POLLIN, 0};
    const int n = ::poll(&pfd, 1, 5);
    if (n < 0 && errno != EINTR) {
      error = std::string("poll: ") + std::strerror(errno);
      return false;
    }
    if (n > 0) {
      const ssize_t rd = ::read(fd, reinterpret_cast<char*>(&r) + have, sizeof r - have);
      if (rd == 0) {
        error = "every child closed the report pipe early";
        return false;
      }
      if (rd > 0) {
        have += static_cast<std::size_t>(rd);
        if (have == sizeof r) {
          have = 0;
          if (r.kind == kind) {
            out.push_back(r);
            ++got;
          }
          if (r.kind == ReportKind::result && r.ok == 0) {
            error = std::string(role_name(r.role)) + " " + std::to_string(r.id) + " (pid " + std::to_string(r.pid) +
                    ") failed: " + r.error;
            return false;
          }
        }
      }
    }
    // A child that died without a report would otherwise make us wait for the deadline.
    for (Child& c : children) {
      if (c.reaped) continue;
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.reaped = true;
        const bool reported = std::any_of(
            out.begin(), out.end(), [&](const Report& x) { return x.pid == c.pid && x.kind == ReportKind::result; });
        if (!reported && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
          error = std::string(role_name(c.role)) + " " + std::to_string(c.id) + " (pid " + std::to_string(c.pid) +
                  ") died: " +
                  (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                       : "exit " + std::to_string(WEXITSTATUS(status)));
          return false;
        }
      }
    }
  }
  return true;
}

void reap(std::vector<Child>& children, bool kill_them) {
  for (Child& c : children) {
    if (c.reaped || c.pid <= 0) continue;
    if (kill_them) ::kill(c.pid, SIGKILL);
    int status = 0;
    while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
    }
    c.reaped = true;
  }
}

/// Forks one child that runs `body` and never returns into main (so the
/// parent's channel guard does not run in it).
template <class F>
pid_t fork_child(Pipes& p, F&& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a parent killed with -9
  // The child keeps only its own ends, so the parent's close is an EOF here.
  close_fd(p.up[0]);
  close_fd(p.go[1]);
  close_fd(p.release[1]);
  int rc = 1;
  try {
    rc = body();
  } catch (...) {
    rc = 1;
  }
  ::_exit(rc);
}

RunResult run_channel(const Config& cfg, const Scenario& sc) {
  RunResult res;
  res.scenario = sc;
  res.count = cfg.count;
  Pipes p;
  if (::pipe2(p.up, O_CLOEXEC) != 0 || ::pipe2(p.go, O_CLOEXEC) != 0 || ::pipe2(p.release, O_CLOEXEC) != 0) {
    res.error = std::string("pipe: ") + std::strerror(errno);
    return res;
  }
  // Subscribers first, so that they are attached (and gate) before any publish.
  const std::array<Role, 2> sub_roles{Role::fast_subscriber, Role::slow_subscriber};
  for (std::uint32_t i = 0; i < sub_roles.size(); ++i) {
    const Role role = sub_roles[i];
    const pid_t pid = fork_child(p, [&] { return run_subscriber(cfg, sc, role, i, p); });
    res.children.push_back({pid, role, i, pid < 0});
  }
  for (std::uint32_t i = 0; i < kPublishersPerChannel; ++i) {
    const pid_t pid = fork_child(p, [&] { return run_publisher(cfg, sc, i, p); });
    res.children.push_back({pid, Role::publisher, i, pid < 0});
  }
  close_fd(p.up[1]);
  close_fd(p.go[0]);
  close_fd(p.release[0]);
  const bool forked = std::none_of(res.children.begin(), res.children.end(), [](const Child& c) { return c.pid < 0; });
  std::vector<Report> ready;
  bool ok = forked;
  if (!forked) res.error = std::string("fork: ") + std::strerror(errno);
  if (ok) ok = collect(p.up[0], res.children.size(), ReportKind::ready, res.children, ready, 30, res.error);
  const std::uint64_t start = now_ns();
  close_fd(p.go[1]);  // start
  if (ok) {
    // One snapshot mid-run shows the slow reader's lag while it builds up.
    auto observer = Channel::open_read_only(sc.channel, cfg.bus);
    auto sample = [&] {
      if (res.have_live || !observer || now_ns() - start < kLiveSampleNs) return;
      res.live = observer->stats();
      res.live_at_ns = now_ns() - start;
      res.have_live = true;
    };
    ok = collect(p.up[0], res.children.size(), ReportKind::result, res.children, res.reports, kChildDeadlineS + 10,
                 res.error, sample);
  }
  res.elapsed_ns = now_ns() - start;
  if (ok) {
    // Every child is still attached: the snapshot shows all of them.
    auto ch = Channel::open(sc.channel, cfg.bus);
    if (ch) {
      res.stats = ch->stats();
      res.have_stats = true;
    } else {
      res.error = "stats: " + ch.error().message();
    }
  }
  close_fd(p.release[1]);  // let the children exit
  reap(res.children, !ok);
  close_fd(p.up[0]);
  return res;
}

// --- report -----------------------------------------------------------------------

const Child* child_of(const RunResult& r, std::uint32_t pid) {
  for (const Child& c : r.children) {
    if (c.pid == static_cast<pid_t>(pid)) return &c;
  }
  return nullptr;
}

std::string who(const RunResult& r, std::uint32_t pid) {
  const Child* c = child_of(r, pid);
  if (c == nullptr) return "?";
  return std::string(role_name(c->role)) + (c->role == Role::publisher ? std::to_string(c->id) : "");
}

/// Prints the per-child summary lines and returns whether the run passed.
bool judge(const RunResult& r) {
  const Policy policy = r.scenario.policy;
  const std::string pol(shmbus::to_string(policy));
  bool pass = r.error.empty();
  std::uint64_t published = 0;  // committed messages
  std::uint64_t claimed = 0;    // sequences taken: committed + dropped at publish (drop_oldest)
  for (const Report& x : r.reports) {
    if (x.role == Role::publisher) {
      published += x.published;
      claimed += x.published + x.dropped;
    }
  }
  // Publishers first, then subscribers, in a stable order.
  std::vector<Report> sorted = r.reports;
  std::sort(sorted.begin(), sorted.end(),
            [](const Report& a, const Report& b) { return a.role != b.role ? a.role < b.role : a.id < b.id; });
  for (const Report& x : sorted) {
    const double secs = static_cast<double>(x.elapsed_ns) / 1e9;
    if (x.role == Role::publisher) {
      const char* note = "";
      if (policy == Policy::reject) note = "  [each rejected message retried after a pause]";
      if (policy == Policy::block) note = "  [each timed-out message retried]";
      if (policy == Policy::drop_oldest && x.dropped != 0) note = "  [dropped: claim lapped before commit]";
      std::printf(
          "  %-12s %-11s publisher%u  published=%-8llu rejected=%-6llu timeouts=%-6llu "
          "dropped=%-4llu (%.2f s)%s\n",
          r.scenario.channel.c_str(), pol.c_str(), x.id, static_cast<unsigned long long>(x.published),
          static_cast<unsigned long long>(x.rejected), static_cast<unsigned long long>(x.timeouts),
          static_cast<unsigned long long>(x.dropped), secs, note);
      continue;
    }
    bool ok = x.violations == 0 && x.delivered == x.bus_delivered;
    for (const Report& y : r.reports) {
      if (y.role == Role::publisher && y.published + y.dropped != r.count) ok = false;
    }
    if (policy == Policy::drop_oldest) {
      // Lossy by design: every sequence is either delivered or counted lost,
      // and the gaps each reader saw are exactly what the bus counted.
      ok = ok && x.delivered + x.lost == claimed && x.gaps == x.lost;
    } else {
      ok = ok && x.delivered == published && claimed == published && x.lost == 0 && x.gaps == 0;
    }
    pass = pass && ok;
    std::printf(
        "  %-12s %-11s %-10s delivered=%-8llu lost=%-8llu order_violations=%llu "
        "gaps=%llu lapped=%llu (%.2f s)  %s\n",
        r.scenario.channel.c_str(), pol.c_str(), role_name(x.role), static_cast<unsigned long long>(x.delivered),
        static_cast<unsigned long long>(x.lost), static_cast<unsigned long long>(x.violations),
        static_cast<unsigned long long>(x.gaps), static_cast<unsigned long long>(x.lapped_events), secs,
        ok ? "OK" : "FAIL");
  }
  if (!r.error.empty()) std::printf("  %-12s FAIL: %s\n", r.scenario.channel.c_str(), r.error.c_str());
  return pass;
}

void print_stats(const RunResult& r) {
  if (!r.have_stats) return;
  ChannelStats s = r.stats;
  // Table order is attach order; print by role for a stable layout.
  std::sort(s.subscribers.begin(), s.subscribers.end(),
            [&](const auto& a, const auto& b) { return who(r, a.pid) < who(r, b.pid); });
  std::sort(s.publishers.begin(), s.publishers.end(),
            [&](const auto& a, const auto& b) { return who(r, a.pid) < who(r, b.pid); });
  std::printf(
      "\n  channel %s/%s  policy=%s capacity=%u slot=%u  head=%llu depth=%llu "
      "published=%llu  (%.2f s)\n",
      s.bus.c_str(), s.name.c_str(), std::string(shmbus::to_string(s.policy)).c_str(), s.capacity, s.slot_size,
      static_cast<unsigned long long>(s.head), static_cast<unsigned long long>(s.depth),
      static_cast<unsigned long long>(s.published), static_cast<double>(r.elapsed_ns) / 1e9);
  if (r.have_live) {
    std::printf("    mid-run (t=%.0f ms): head=%llu depth=%llu", static_cast<double>(r.live_at_ns) / 1e6,
                static_cast<unsigned long long>(r.live.head), static_cast<unsigned long long>(r.live.depth));
    for (const auto& x : r.live.subscribers) {
      std::printf("  %s lag=%llu", who(r, x.pid).c_str(), static_cast<unsigned long long>(x.lag));
    }
    std::printf("\n");
  }
  std::printf("    %-11s %7s %10s %8s %10s %10s %8s\n", "subscriber", "pid", "cursor", "lag", "delivered", "lost",
              "lapped");
  for (const auto& x : s.subscribers) {
    std::printf("    %-11s %7u %10llu %8llu %10llu %10llu %8llu\n", who(r, x.pid).c_str(), x.pid,
                static_cast<unsigned long long>(x.cursor), static_cast<unsigned long long>(x.lag),
                static_cast<unsigned long long>(x.delivered), static_cast<unsigned long long>(x.lost),
                static_cast<unsigned long long>(x.lapped_events));
  }
  std::printf("    %-11s %7s %10s %10s %10s %12s %11s\n", "publisher", "pid", "published", "rejected", "timeouts",
              "blocked_ms", "lost_claims");
  for (const auto& x : s.publishers) {
    std::printf("    %-11s %7u %10llu %10llu %10llu %12.1f %11llu\n", who(r, x.pid).c_str(), x.pid,
                static_cast<unsigned long long>(x.published), static_cast<unsigned long long>(x.rejected),
                static_cast<unsigned long long>(x.timeouts), static_cast<double>(x.blocked_ns) / 1e6,
                static_cast<unsigned long long>(x.lost_claims));
  }
}

/// Removes the demo's channels whatever happens (normal exit, failure, early return).
class ChannelGuard {
 public:
  explicit ChannelGuard(std::string bus) : bus_(std::move(bus)) {}
  ~ChannelGuard() {
    for (const auto& n : names_) (void)Channel::remove(n, bus_);
  }
  ChannelGuard(const ChannelGuard&) = delete;
  ChannelGuard& operator=(const ChannelGuard&) = delete;
  void add(const std::string& n) { names_.push_back(n); }

 private:
  std::string bus_;
  std::vector<std::string> names_;
};

// --- part 4: a work queue read by a worker group ------------------------------------
//
// "orders" is a block channel read through one consumer group, "billing":
// each order goes to one of kWorkers forked worker processes, which
// "process" it (a short spin) and ack it. One order is poisoned (its payload
// says so): every worker that receives it nacks it with the group's backoff,
// so it is redelivered (to whichever worker asks next) until it has been
// delivered max_deliveries times, and then the group moves it to the DLQ
// ("orders-dlq"). No worker crashes, so no ack may be refused and no order may
// be acked twice. Workers stream the ids they acked to the parent through a
// pipe; the parent checks the union, the group's counters, the DLQ record,
// and then redrives the DLQ.

constexpr const char* kOrdersChannel = "orders";
constexpr const char* kBillingGroup = "billing";
constexpr std::uint32_t kOrdersCapacity = 1024;
constexpr std::uint32_t kOrdersSlotSize = 128;
constexpr std::uint32_t kWorkers = 3;
constexpr std::uint64_t kVisibilityNs = 200'000'000;  // lease length
constexpr std::uint32_t kMaxDeliveries = 3;
constexpr std::uint64_t kBackoffBaseNs = 5'000'000;  // nack delays: ~5, ~10, ~20 ms
constexpr std::uint64_t kBackoffCapNs = 20'000'000;
constexpr std::uint64_t kOrderWorkNs = 1'000;          // a worker's "processing" per order
constexpr std::uint64_t kReceiveSliceNs = 20'000'000;  // a worker re-checks its stop pipe this often when idle
constexpr int kOrdersDeadlineS = 30;                   // the whole part gives up after this long
constexpr std::size_t kIdsPerRecord = 64;
constexpr std::uint64_t kAckRefused = 1ULL << 63;  // in WorkRecord::ids: received, but the ack was refused

/// One order. `poison` marks the message every worker fails on.
struct Order {
  std::uint64_t id;
  std::uint32_t check;
  std::uint32_t poison;
};
static_assert(sizeof(Order) == 16);

std::uint32_t order_check(std::uint64_t id, std::uint32_t poison) noexcept {
  return check_of(7, id) ^ (poison * 0x27d4eb2dU);
}

shmbus::GroupOptions billing_options() {
  shmbus::GroupOptions g;
  g.start = StartAt::earliest();
  g.visibility_timeout_ns = kVisibilityNs;
  g.max_deliveries = kMaxDeliveries;
  g.backoff_base_ns = kBackoffBaseNs;
  g.backoff_cap_ns = kBackoffCapNs;
  g.wait = WaitStrategy::block;
  return g;  // dlq left empty: "<channel>-dlq"
}

enum class WorkKind : std::uint32_t { ready, handled, poison, done };

/// One record on the orders report pipe; smaller than PIPE_BUF, so records of
/// different children never interleave.
struct WorkRecord {
  WorkKind kind = WorkKind::ready;
  Role role = Role::worker;
  std::uint32_t id = 0;  ///< worker number (0 for the producer)
  std::int32_t pid = 0;
  std::uint32_t ok = 1;
  std::uint32_t n = 0;        ///< handled: how many of `ids` are used
  std::uint32_t attempt = 0;  ///< poison: the delivery's attempt number
  std::uint32_t reserved = 0;
  std::uint64_t sequence = 0;  ///< poison: its channel sequence
  std::uint64_t at_ns = 0;     ///< poison: CLOCK_MONOTONIC when it was received
  // done (worker)
  std::uint64_t received = 0;
  std::uint64_t acked = 0;
  std::uint64_t lease_lost = 0;  ///< acks refused: the lease had expired (work done twice)
  std::uint64_t nacked = 0;
  // done (producer)
  std::uint64_t published = 0;
  std::uint64_t timeouts = 0;             ///< publish waited kBlockTimeoutNs on the group floor; retried
  std::uint64_t ids[kIdsPerRecord] = {};  ///< handled: order ids received (| kAckRefused if the ack failed)
  char error[160] = {};
};
static_assert(sizeof(WorkRecord) < PIPE_BUF);

[[noreturn]] void work_exit(int up_fd, WorkRecord& r, bool ok, const std::string& error = {}) {
  r.kind = WorkKind::done;
  r.ok = ok ? 1 : 0;
  r.n = 0;
  if (!error.empty()) std::snprintf(r.error, sizeof r.error, "%s", error.c_str());
  (void)write_all(up_fd, &r, sizeof r);
  ::_exit(ok ? 0 : 1);
}

/// True once the parent has closed the write end of `fd`'s pipe.
bool closed_by_parent(int fd) {
  pollfd pfd{fd, POLLIN, 0};
  return ::poll(&pfd, 1, 0) > 0;  // nobody writes to it: readable means EOF
}

int run_order_producer(const Config& cfg, std::uint64_t count, std::uint64_t poison_id, Pipes& p) {
  WorkRecord r;
  r.role = Role::order_producer;
  r.pid = ::getpid();
  auto ch = Channel::open(kOrdersChannel, cfg.bus);
  if (!ch) work_exit(p.up[1], r, false, "open: " + ch.error().message());
  auto pub = ch->publisher();
  if (!pub) work_exit(p.up[1], r, false, "publisher: " + pub.error().message());
  (void)write_all(p.up[1], &r, sizeof r);  // ready
  wait_for_eof(p.go[0]);
  const std::uint64_t deadline = now_ns() + kOrdersDeadlineS * 1'000'000'000ULL;
  for (std::uint64_t id = 0; id < count; ++id) {
    const std::uint32_t poison = id == poison_id ? 1 : 0;
    const Order o{id, order_check(id, poison), poison};
    shmbus::MessageMeta meta;
    meta.key = id;
    for (;;) {
      const PublishStatus st = pub->publish(std::as_bytes(std::span<const Order>(&o, 1)), meta, kBlockTimeoutNs);
      if (st == PublishStatus::ok) {
        ++r.published;
        break;
      }
      if (st != PublishStatus::timeout) {
        work_exit(p.up[1], r, false, "publish #" + std::to_string(id) + ": " + std::string(shmbus::to_string(st)));
      }
      ++r.timeouts;  // the ring is full up to the group's floor: wait again
      if (now_ns() > deadline) work_exit(p.up[1], r, false, "gave up at order #" + std::to_string(id));
    }
  }
  work_exit(p.up[1], r, true);
}

int run_worker(const Config& cfg, std::uint32_t id, Pipes& p) {
  WorkRecord r;
  r.role = Role::worker;
  r.id = id;
  r.pid = ::getpid();
  // Each worker maps the channel and joins the group itself.
  auto ch = Channel::open(kOrdersChannel, cfg.bus);
  if (!ch) work_exit(p.up[1], r, false, "open: " + ch.error().message());
  auto consumer = ch->join_group(kBillingGroup, billing_options());
  if (!consumer) work_exit(p.up[1], r, false, "join_group: " + consumer.error().message());
  (void)write_all(p.up[1], &r, sizeof r);  // ready

  WorkRecord chunk;
  chunk.kind = WorkKind::handled;
  chunk.role = Role::worker;
  chunk.id = id;
  chunk.pid = r.pid;
  auto flush = [&] {
    if (chunk.n == 0) return;
    (void)write_all(p.up[1], &chunk, sizeof chunk);
    chunk.n = 0;
  };
  const std::uint64_t deadline = now_ns() + kOrdersDeadlineS * 1'000'000'000ULL;
  std::vector<std::byte> buf(ch->max_payload());
  for (;;) {
    shmbus::Delivery d;
    const PollStatus st = consumer->receive_wait(d, buf, kReceiveSliceNs);
    if (st == PollStatus::ok) {
      ++r.received;
      Order o{};
      if (d.message.payload.size() != sizeof o) work_exit(p.up[1], r, false, "an order of the wrong size");
      std::memcpy(&o, d.message.payload.data(), sizeof o);
      if (o.check != order_check(o.id, o.poison)) {
        work_exit(p.up[1], r, false, "a torn order at sequence " + std::to_string(d.sequence));
      }
      if (o.poison != 0) {
        // This worker cannot process it: report the delivery, give it back.
        WorkRecord pr = chunk;
        pr.kind = WorkKind::poison;
        pr.n = 0;
        pr.attempt = d.attempt;
        pr.sequence = d.sequence;
        pr.at_ns = now_ns();
        (void)write_all(p.up[1], &pr, sizeof pr);
        const shmbus::AckStatus a = consumer->nack(d);  // due again after the group's backoff
        if (a != shmbus::AckStatus::ok) {
          work_exit(p.up[1], r, false, "nack: " + std::string(shmbus::to_string(a)));
        }
        ++r.nacked;
        continue;
      }
      spin_for(kOrderWorkNs);
      const shmbus::AckStatus a = consumer->ack(d);
      if (a == shmbus::AckStatus::ok) {
        ++r.acked;
        chunk.ids[chunk.n++] = o.id;
      } else if (a == shmbus::AckStatus::lease_lost) {
        // Our lease was taken from us (it expired, or a bug): the order was
        // or will be handled by another worker too. Reported, and judged.
        ++r.lease_lost;
        chunk.ids[chunk.n++] = o.id | kAckRefused;
      } else {
        work_exit(p.up[1], r, false, "ack: " + std::string(shmbus::to_string(a)));
      }
      if (chunk.n == kIdsPerRecord) flush();
    } else if (st == PollStatus::timeout || st == PollStatus::empty) {
      flush();
      if (closed_by_parent(p.release[0])) break;
      if (now_ns() > deadline) work_exit(p.up[1], r, false, "no stop from the parent");
    } else {
      work_exit(p.up[1], r, false, "receive: " + std::string(shmbus::to_string(st)));
    }
  }
  flush();
  work_exit(p.up[1], r, true);
}

struct PoisonDelivery {
  std::uint32_t worker = 0;
  std::uint32_t attempt = 0;
  std::uint64_t sequence = 0;
  std::uint64_t at_ns = 0;  ///< CLOCK_MONOTONIC (one clock for every process)
};

struct OrdersRun {
  std::uint64_t count = 0;
  std::uint64_t poison_id = 0;
  std::vector<Child> children;
  std::vector<std::uint32_t> times_acked;      ///< per order id, over all workers' reports
  std::vector<std::uint32_t> times_delivered;  ///< per order id: received by a worker (acked or not)
  std::vector<PoisonDelivery> poison;
  std::vector<WorkRecord> done;  ///< final records, workers and producer
  ChannelStats stats;            ///< when the group had finished, workers still attached
  bool have_stats = false;
  std::uint64_t start_ns = 0;    ///< CLOCK_MONOTONIC when the producer was started
  std::uint64_t elapsed_ns = 0;  ///< start of publishing .. group finished
  std::string error;
};

const shmbus::GroupStats* group_of(const ChannelStats& s) {
  for (const auto& g : s.groups) {
    if (g.name == kBillingGroup) return &g;
  }
  return nullptr;
}

/// Runs producer and workers until the group has finished every order (acked
/// or dead-lettered): reads their records, takes the stats snapshot, stops them.
OrdersRun run_orders(const Config& cfg, std::uint64_t count) {
  OrdersRun res;
  res.count = count;
  res.poison_id = count / 3;
  res.times_acked.assign(count, 0);
  res.times_delivered.assign(count, 0);
  Pipes p;
  if (::pipe2(p.up, O_CLOEXEC) != 0 || ::pipe2(p.go, O_CLOEXEC) != 0 || ::pipe2(p.release, O_CLOEXEC) != 0) {
    res.error = std::string("pipe: ") + std::strerror(errno);
    return res;
  }
  for (std::uint32_t i = 0; i < kWorkers; ++i) {
    const pid_t pid = fork_child(p, [&] { return run_worker(cfg, i, p); });
    res.children.push_back({pid, Role::worker, i, pid < 0});
  }
  {
    const pid_t pid = fork_child(p, [&] { return run_order_producer(cfg, count, res.poison_id, p); });
    res.children.push_back({pid, Role::order_producer, 0, pid < 0});
  }
  close_fd(p.up[1]);
  close_fd(p.go[0]);
  close_fd(p.release[0]);
  if (std::any_of(res.children.begin(), res.children.end(), [](const Child& c) { return c.pid < 0; })) {
    res.error = std::string("fork: ") + std::strerror(errno);
  }
  auto observer = Channel::open_read_only(kOrdersChannel, cfg.bus);
  if (!observer && res.error.empty()) res.error = "observer: " + observer.error().message();

  const std::uint64_t deadline = now_ns() + kOrdersDeadlineS * 1'000'000'000ULL;
  std::uint64_t start = 0;
  std::size_t ready = 0;
  bool producer_done = false;
  std::size_t workers_done = 0;
  WorkRecord r;
  std::size_t have = 0;
  std::uint64_t last_sample = 0;
  while (res.error.empty() && (workers_done < kWorkers || !producer_done)) {
    if (g_stop) res.error = "interrupted";
    if (now_ns() > deadline) res.error = "timed out: the group did not finish every order";
    if (!res.error.empty()) break;
    // The group is finished when its floor reaches the end of the stream.
    if (producer_done && !res.have_stats && now_ns() - last_sample > 2'000'000) {
      last_sample = now_ns();
      ChannelStats s = observer->stats();
      const shmbus::GroupStats* g = group_of(s);
      if (g != nullptr && g->floor >= count) {
        res.elapsed_ns = now_ns() - start;
        res.stats = std::move(s);
        res.have_stats = true;
        close_fd(p.release[1]);  // stop the workers (after the snapshot: it shows them attached)
      }
    }
    pollfd pfd{p.up[0], POLLIN, 0};
    const int n = ::poll(&pfd, 1, 2);
    if (n < 0 && errno != EINTR) {
      res.error = std::string("poll: ") + std::strerror(errno);
      break;
    }
    if (n > 0) {
      const ssize_t rd = ::read(p.up[0], reinterpret_cast<char*>(&r) + have, sizeof r - have);
      if (rd == 0) {
        res.error = "every child closed the report pipe early";
        break;
      }
      if (rd > 0) have += static_cast<std::size_t>(rd);
      if (have == sizeof r) {
        have = 0;
        switch (r.kind) {
          case WorkKind::ready:
            if (++ready == res.children.size()) {
              start = now_ns();
              res.start_ns = start;
              close_fd(p.go[1]);  // every worker has joined: publish
            }
            break;
          case WorkKind::handled:
            for (std::uint32_t i = 0; i < r.n && i < kIdsPerRecord; ++i) {
              const std::uint64_t oid = r.ids[i] & ~kAckRefused;
              if (oid >= count) continue;
              ++res.times_delivered[oid];
              if ((r.ids[i] & kAckRefused) == 0) ++res.times_acked[oid];
            }
            break;
          case WorkKind::poison: res.poison.push_back({r.id, r.attempt, r.sequence, r.at_ns}); break;
          case WorkKind::done:
            if (r.ok == 0) {
              res.error = std::string(role_name(r.role)) + " " + std::to_string(r.id) + " (pid " +
                          std::to_string(r.pid) + ") failed: " + r.error;
            }
            res.done.push_back(r);
            if (r.role == Role::order_producer) {
              producer_done = true;
            } else {
              ++workers_done;
            }
            break;
        }
      }
    }
    for (Child& c : res.children) {  // a child that died without its final record
      if (c.reaped || c.pid <= 0) continue;
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
      c.reaped = true;
      const bool reported =
          std::any_of(res.done.begin(), res.done.end(), [&](const WorkRecord& x) { return x.pid == c.pid; });
      // An exit 0 wrote its final record before exiting: it is still in the pipe.
      if (!reported && !(WIFEXITED(status) && WEXITSTATUS(status) == 0) && res.error.empty()) {
        res.error = std::string(role_name(c.role)) + " " + std::to_string(c.id) + " (pid " + std::to_string(c.pid) +
                    ") died without a report: " +
                    (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                         : "exit " + std::to_string(WEXITSTATUS(status)));
      }
    }
  }
  close_fd(p.go[1]);
  close_fd(p.release[1]);
  reap(res.children, !res.error.empty());
  close_fd(p.up[0]);
  return res;
}

std::string worker_of(const OrdersRun& r, std::uint32_t pid) {
  for (const Child& c : r.children) {
    if (c.pid == static_cast<pid_t>(pid)) return std::string(role_name(c.role)) + std::to_string(c.id);
  }
  return "pid " + std::to_string(pid);
}

/// Part 4: the orders work queue. Prints what happened; returns whether every
/// check passed. Removes the orders channel and its DLQ at the end.
bool orders_part(const Config& cfg, ChannelGuard& guard) {
  const std::uint64_t count = std::max<std::uint64_t>(cfg.count / 5, 10);
  const std::string dlq_name = std::string(kOrdersChannel) + "-dlq";
  const shmbus::GroupOptions gopts = billing_options();
  bool pass = true;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) std::printf("  FAIL: %s\n", what.c_str());
    pass = pass && ok;
    return ok;
  };

  std::printf(
      "\nPart 4: work queue '%s' (block, %u slots) read by group '%s': %u worker processes, "
      "%llu orders, one poisoned\n",
      kOrdersChannel, kOrdersCapacity, kBillingGroup, kWorkers, static_cast<unsigned long long>(count));
  std::printf(
      "  group: visibility %llu ms, max_deliveries %u, nack backoff %llu ms doubling to %llu ms; "
      "dlq '%s'\n",
      static_cast<unsigned long long>(kVisibilityNs / 1'000'000), kMaxDeliveries,
      static_cast<unsigned long long>(kBackoffBaseNs / 1'000'000),
      static_cast<unsigned long long>(kBackoffCapNs / 1'000'000), dlq_name.c_str());
  std::printf(
      "  poison: a worker that receives it NACKS it (no worker crashes), so it is redelivered "
      "until its %u deliveries are used up; 0 duplicate deliveries expected\n",
      kMaxDeliveries);

  (void)Channel::remove(kOrdersChannel, cfg.bus);  // leftovers of a crashed run with our pid
  (void)Channel::remove(dlq_name, cfg.bus);
  ChannelOptions o;
  o.capacity = kOrdersCapacity;
  o.slot_size = kOrdersSlotSize;
  o.policy = Policy::block;
  {
    auto ch = Channel::create(kOrdersChannel, o, cfg.bus);
    if (!ch) return check(false, "create " + std::string(kOrdersChannel) + ": " + ch.error().message());
  }
  guard.add(kOrdersChannel);
  guard.add(dlq_name);  // created by the first join_group

  OrdersRun run = run_orders(cfg, count);
  if (!check(run.error.empty(), run.error)) return false;

  // --- the workers' reports: the union of acked ids, duplicates, poison trail.
  std::uint64_t missing = 0;
  std::uint64_t acked_twice = 0;  // impossible by construction (one CAS ends a lease)
  std::uint64_t duplicates = 0;   // deliveries of one order to more than one worker
  std::vector<std::uint64_t> dup_ids;
  for (std::uint64_t id = 0; id < count; ++id) {
    const std::uint32_t a = run.times_acked[id];
    const std::uint32_t t = run.times_delivered[id];
    if (id == run.poison_id) {
      check(a == 0 && t == 0, "the poisoned order was acked");
      continue;
    }
    if (a == 0) ++missing;
    if (a > 1) acked_twice += a - 1;
    if (t > 1) {
      duplicates += t - 1;
      if (dup_ids.size() < 8) dup_ids.push_back(id);
    }
  }
  std::sort(run.done.begin(), run.done.end(),
            [](const WorkRecord& a, const WorkRecord& b) { return a.role != b.role ? a.role < b.role : a.id < b.id; });
  std::uint64_t lease_lost = 0;
  for (const WorkRecord& x : run.done) {
    if (x.role == Role::order_producer) {
      std::printf(
          "  producer   published=%-7llu timeouts=%llu  [each timeout: publish waited %llu ms on "
          "the group floor, e.g. while the poisoned order held it; retried]\n",
          static_cast<unsigned long long>(x.published), static_cast<unsigned long long>(x.timeouts),
          static_cast<unsigned long long>(kBlockTimeoutNs / 1'000'000));
      check(x.published == count, "the producer did not publish every order");
      continue;
    }
    lease_lost += x.lease_lost;
    std::printf("  worker%u    received=%-7llu acked=%-7llu nacked=%llu lease_lost=%llu\n", x.id,
                static_cast<unsigned long long>(x.received), static_cast<unsigned long long>(x.acked),
                static_cast<unsigned long long>(x.nacked), static_cast<unsigned long long>(x.lease_lost));
  }
  std::printf(
      "  acked ids: the union of the %zu workers' reports covers %llu of %llu non-poisoned orders; "
      "missing=%llu acked_twice=%llu  (%.2f s)\n",
      run.done.size() - 1, static_cast<unsigned long long>(count - 1 - missing),
      static_cast<unsigned long long>(count - 1), static_cast<unsigned long long>(missing),
      static_cast<unsigned long long>(acked_twice), static_cast<double>(run.elapsed_ns) / 1e9);
  std::printf(
      "  duplicates (an order delivered to a worker more than once; 0 expected, no worker crashes "
      "and a lease of %llu ms is ~10^5 times the work): %llu; acks refused (lease_lost): %llu",
      static_cast<unsigned long long>(kVisibilityNs / 1'000'000), static_cast<unsigned long long>(duplicates),
      static_cast<unsigned long long>(lease_lost));
  for (std::uint64_t id : dup_ids) std::printf(" #%llu", static_cast<unsigned long long>(id));
  std::printf("\n");
  check(missing == 0, "orders never acked");
  check(acked_twice == 0, "orders acked more than once");
  check(duplicates == 0 && lease_lost == 0,
        "orders delivered more than once although no worker crashed or stalled for a lease");
  std::sort(run.poison.begin(), run.poison.end(),
            [](const PoisonDelivery& a, const PoisonDelivery& b) { return a.attempt < b.attempt; });
  std::printf("  poisoned order #%llu:", static_cast<unsigned long long>(run.poison_id));
  bool trail_ok = run.poison.size() == kMaxDeliveries;
  for (std::size_t i = 0; i < run.poison.size(); ++i) {
    const PoisonDelivery& pd = run.poison[i];
    std::printf(" attempt %u -> worker%u at +%.1f ms (nack);", pd.attempt, pd.worker,
                static_cast<double>(pd.at_ns - run.start_ns) / 1e6);
    trail_ok = trail_ok && pd.attempt == i + 1 && pd.sequence == run.poison_id;
  }
  std::printf(" then dead-lettered\n");
  check(trail_ok, "the poisoned order was not delivered exactly " + std::to_string(kMaxDeliveries) +
                      " times with attempts 1.." + std::to_string(kMaxDeliveries));

  // --- the group's counters, from Channel::stats() while the workers were attached.
  const shmbus::GroupStats* g = run.have_stats ? group_of(run.stats) : nullptr;
  if (!check(g != nullptr, "no stats for group " + std::string(kBillingGroup))) return false;
  std::printf("\n  Channel::stats() of %s/%s, group '%s' (dlq '%s'), taken when the group had finished:\n",
              run.stats.bus.c_str(), run.stats.name.c_str(), g->name.c_str(), g->dlq.c_str());
  std::printf("    %8s %8s %9s %10s %8s %11s %13s %9s\n", "next", "floor", "in_flight", "delivered", "acked",
              "redelivered", "dead_lettered", "consumers");
  std::printf("    %8llu %8llu %9llu %10llu %8llu %11llu %13llu %9zu\n", static_cast<unsigned long long>(g->next),
              static_cast<unsigned long long>(g->floor), static_cast<unsigned long long>(g->in_flight),
              static_cast<unsigned long long>(g->delivered), static_cast<unsigned long long>(g->acked),
              static_cast<unsigned long long>(g->redelivered), static_cast<unsigned long long>(g->dead_lettered),
              g->consumers.size());
  std::printf("    (also: nacked=%llu expired=%llu lost=%llu dlq_failures=%llu dead_consumer_releases=%llu)\n",
              static_cast<unsigned long long>(g->nacked), static_cast<unsigned long long>(g->expired),
              static_cast<unsigned long long>(g->lost), static_cast<unsigned long long>(g->dlq_failures),
              static_cast<unsigned long long>(g->dead_consumer_releases));
  std::printf("    %-9s %7s %6s %10s %8s %7s\n", "consumer", "pid", "alive", "delivered", "acked", "nacked");
  std::vector<shmbus::ConsumerStats> cons = g->consumers;
  std::sort(cons.begin(), cons.end(),
            [&](const auto& a, const auto& b) { return worker_of(run, a.pid) < worker_of(run, b.pid); });
  for (const auto& c : cons) {
    std::printf("    %-9s %7u %6s %10llu %8llu %7llu\n", worker_of(run, c.pid).c_str(), c.pid, c.alive ? "yes" : "no",
                static_cast<unsigned long long>(c.delivered), static_cast<unsigned long long>(c.acked),
                static_cast<unsigned long long>(c.nacked));
  }
  // Each order's first delivery is `delivered - redelivered`; the poison's
  // other deliveries are redeliveries (expired leases of slow workers would
  // add more, equally on both sides).
  check(g->next == count && g->floor == count && run.stats.head == count, "next / floor / head != orders");
  check(g->in_flight == 0, "leases still held");
  check(g->acked == count - 1, "group acked != orders - 1");
  check(g->dead_lettered == 1, "group dead_lettered != 1");
  check(g->delivered - g->redelivered == count, "first deliveries != orders");
  check(g->redelivered >= kMaxDeliveries - 1, "the poisoned order was not redelivered");
  check(g->consumers.size() == kWorkers &&
            std::all_of(g->consumers.begin(), g->consumers.end(), [](const auto& c) { return c.alive; }),
        "not every worker was attached");

  // --- the DLQ: one record, decoded.
  std::printf("\n  DLQ '%s' (read from the earliest message by a new subscriber):\n", dlq_name.c_str());
  {
    auto dlq = Channel::open(dlq_name, cfg.bus);
    if (!check(static_cast<bool>(dlq), "open the DLQ: " + (dlq ? std::string() : dlq.error().message()))) {
      return false;
    }
    SubscribeOptions so;
    so.start = StartAt::earliest();
    auto reader = dlq->subscribe(so);
    if (!check(static_cast<bool>(reader), "subscribe to the DLQ")) return false;
    std::vector<std::byte> buf(dlq->max_payload());
    std::size_t records = 0;
    bool record_ok = false;
    for (;;) {
      Message m;
      const PollStatus st = reader->poll(m, buf);
      if (st == PollStatus::empty) break;
      if (!check(st == PollStatus::ok, "DLQ poll: " + std::string(shmbus::to_string(st)))) break;
      ++records;
      const std::optional<shmbus::DeadLetter> rec = shmbus::decode_dead_letter(m);
      Order ord{};
      if (!check(rec.has_value() && rec->payload.size() == sizeof ord, "a DLQ record of the wrong size")) continue;
      std::memcpy(&ord, rec->payload.data(), sizeof ord);
      const std::string& group = rec->group;
      const std::string& source = rec->source;
      const bool by_max = rec->reason == shmbus::DeadLetterReason::max_deliveries;
      std::printf(
          "    dlq seq %llu: original_sequence=%llu attempts=%u reason=%s group=%s source=%s "
          "order #%llu%s\n",
          static_cast<unsigned long long>(m.sequence), static_cast<unsigned long long>(rec->original_sequence),
          rec->attempts, by_max ? "max_deliveries" : "rejected", group.c_str(), source.c_str(),
          static_cast<unsigned long long>(ord.id), ord.poison != 0 ? " (poisoned)" : "");
      record_ok = rec->original_sequence == run.poison_id && rec->attempts == kMaxDeliveries && by_max &&
                  group == kBillingGroup && source == kOrdersChannel && ord.id == run.poison_id && ord.poison == 1 &&
                  m.attempt == kMaxDeliveries;
    }
    check(records == 1 && record_ok, "the DLQ does not hold exactly the poisoned order's record");
  }

  // --- redrive: the dead letter goes back to "orders" as a new message.
  {
    auto orders = Channel::open(kOrdersChannel, cfg.bus);
    if (!check(static_cast<bool>(orders), "open orders")) return false;
    auto n = orders->redrive_dlq(dlq_name);
    if (!check(static_cast<bool>(n), "redrive_dlq: " + (n ? std::string() : n.error().message()))) return false;
    std::printf("\n  redrive_dlq('%s') -> %llu message(s) back to '%s'\n", dlq_name.c_str(),
                static_cast<unsigned long long>(n.value()), kOrdersChannel);
    check(n.value() == 1, "redrive did not move exactly one message");
    // The bug is "fixed": an operator joins the group and acks the order.
    auto op = orders->join_group(kBillingGroup, gopts);
    if (!check(static_cast<bool>(op), "join_group (operator): " + (op ? std::string() : op.error().message()))) {
      return false;
    }
    std::vector<std::byte> buf(orders->max_payload());
    shmbus::Delivery d;
    const PollStatus st = op->receive_wait(d, buf, 2'000'000'000ULL);
    Order ord{};
    if (st == PollStatus::ok && d.message.payload.size() == sizeof ord) {
      std::memcpy(&ord, d.message.payload.data(), sizeof ord);
    }
    const bool got = st == PollStatus::ok && ord.id == run.poison_id && d.sequence == count && d.attempt == 1;
    const shmbus::AckStatus a = st == PollStatus::ok ? op->ack(d) : shmbus::AckStatus::invalid;
    std::printf("  the group receives it again: %s, sequence %llu, attempt %u, order #%llu; acked: %s\n",
                std::string(shmbus::to_string(st)).c_str(), static_cast<unsigned long long>(d.sequence), d.attempt,
                static_cast<unsigned long long>(ord.id), std::string(shmbus::to_string(a)).c_str());
    check(got && a == shmbus::AckStatus::ok, "the redriven order did not come back to the group as a new message");
    auto again = orders->redrive_dlq(dlq_name);
    check(again && again.value() == 0, "a second redrive found dead letters again");
    const ChannelStats after = orders->stats();
    const shmbus::GroupStats* ga = group_of(after);
    if (ga != nullptr) {
      std::printf(
          "  after redrive: head=%llu floor=%llu acked=%llu dead_lettered=%llu; a second redrive "
          "moved %llu\n",
          static_cast<unsigned long long>(after.head), static_cast<unsigned long long>(ga->floor),
          static_cast<unsigned long long>(ga->acked), static_cast<unsigned long long>(ga->dead_lettered),
          static_cast<unsigned long long>(again ? again.value() : 0));
    }
    check(ga != nullptr && after.head == count + 1 && ga->floor == count + 1 && ga->acked == count,
          "the group did not finish the redriven order");
  }  // the operator leaves the group; the handles are unmapped

  // --- Later milestone: point the `shmbus` CLI probe at this bus here (the
  // orders channel, its group and its DLQ still exist), before the clean-up.

  // --- clean up: the channel and its DLQ channel.
  auto rm1 = Channel::remove(kOrdersChannel, cfg.bus);
  auto rm2 = Channel::remove(dlq_name, cfg.bus);
  check(static_cast<bool>(rm1) && static_cast<bool>(rm2), "removing orders and its DLQ");
  std::printf("  removed '%s' and '%s'\n", kOrdersChannel, dlq_name.c_str());
  std::printf("  %s\n", pass ? "orders: OK" : "orders: FAIL");
  return pass;
}

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--quick] [--count N] [--policy block|drop_oldest|reject | --groups-only]\n"
               "  --quick        20,000 messages per publisher (default 200,000)\n"
               "  --count N      messages per publisher (the orders queue gets N/5, at least 10)\n"
               "  --policy P     run only the channel of policy P (no worker groups)\n"
               "  --groups-only  run only part 4, the orders queue read by a worker group\n",
               argv0);
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::optional<Policy> only;
  bool groups_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      cfg.count = 20'000;
    } else if (a == "--policy" && i + 1 < argc) {
      const auto p = shmbus::parse_policy(argv[++i]);
      if (!p) {
        usage(argv[0]);
        return 2;
      }
      only = *p;
    } else if (a == "--groups-only") {
      groups_only = true;
    } else if (a == "--count" && i + 1 < argc) {
      cfg.count = std::strtoull(argv[++i], nullptr, 10);
      if (cfg.count == 0) {
        usage(argv[0]);
        return 2;
      }
    } else {
      usage(argv[0]);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  cfg.bus = "demo-" + std::to_string(::getpid());

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  std::vector<Scenario> scenarios{
      {Policy::block, "block"}, {Policy::drop_oldest, "drop_oldest"}, {Policy::reject, "reject"}};
  if (only) {
    std::erase_if(scenarios, [&](const Scenario& sc) { return sc.policy != *only; });
  }
  if (groups_only) scenarios.clear();
  ChannelGuard guard(cfg.bus);
  for (const Scenario& sc : scenarios) {
    ChannelOptions o;
    o.capacity = kCapacity;
    o.slot_size = kSlotSize;
    o.policy = sc.policy;
    (void)Channel::remove(sc.channel, cfg.bus);  // a leftover of a crashed run with our pid
    auto ch = Channel::create(sc.channel, o, cfg.bus);
    if (!ch) {
      std::fprintf(stderr, "shmbus_demo: create %s: %s\n", sc.channel.c_str(), ch.error().message().c_str());
      return 1;
    }
    guard.add(sc.channel);
  }

  if (!scenarios.empty()) {
    std::printf(
        "shmbus demo: bus '%s', %zu channels x (%d publishers x %llu messages, "
        "a fast and a slow subscriber), ring %u slots\n",
        cfg.bus.c_str(), scenarios.size(), kPublishersPerChannel, static_cast<unsigned long long>(cfg.count),
        kCapacity);
    std::printf(
        "  block: publishers wait up to %llu ms, then retry (counted as timeouts); "
        "reject: publishers pause %d us and retry (counted as rejected)\n\n",
        static_cast<unsigned long long>(kBlockTimeoutNs / 1'000'000), kRejectPauseUs);
  } else {
    std::printf("shmbus demo: bus '%s'\n", cfg.bus.c_str());
  }

  // One channel at a time: 4 busy processes on 2 cores is contention enough.
  bool pass = true;
  std::vector<RunResult> results;
  for (const Scenario& sc : scenarios) {
    results.push_back(run_channel(cfg, sc));
    pass = judge(results.back()) && pass;
    if (g_stop) break;
  }

  if (!results.empty()) {
    std::printf("\nChannel::stats() snapshots, taken while every child was attached:\n");
    for (const RunResult& r : results) print_stats(r);
  }

  // Part 4: worker groups (competing consumers with ack/nack, a DLQ), run
  // while the channels above still exist.
  if (!only && !g_stop) pass = orders_part(cfg, guard) && pass;

  // --- Later milestone: the `shmbus` CLI probe pointed at this bus (the three
  // policy channels above still exist here; the orders part has its own spot).

  std::printf("\n%s\n", pass ? "demo: PASS" : "demo: FAIL");
  return pass ? 0 : 1;
}
