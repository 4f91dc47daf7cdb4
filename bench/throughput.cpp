// Throughput of shmbus between processes, with baselines measured in the same
// run. Every point forks its processes, pins them, releases them together
// from one start flag, and checks what was delivered (per-publisher order on
// lossless channels, counts and checksums everywhere): a point whose check
// fails is an error, not a number.
//
// Scenarios (--only, default all):
//   pubsub   P publisher processes -> one channel -> one subscriber process,
//            64-byte messages; the subscriber reads one message per call
//            (poll, copy-out) or in batches (read_batch, zero-copy, up to
//            256 messages per cursor update); and with batching on both
//            sides: the publisher claims 16 slots (try_claim), writes them and
//            commits them (one clock read per batch), the subscriber uses
//            read_batch, and in a last point also pauses 2 us whenever it
//            finds nothing (so that it does not poll the very slot the
//            publisher is writing: a figure about the cache lines, not one a
//            user gets; marked reader_pauses). Block policy (lossless).
//            Rate = messages / (last message read - start).
//   sizes    pubsub with one publisher and read_batch, over message sizes.
//   fanout   one publisher, N subscriber processes. drop_oldest: the
//            publisher never waits, so ns per publish is the publish cost
//            itself with N readers pulling its cache lines; block: lossless,
//            the publisher waits for the slowest reader. The publisher times
//            chunks of 256 publishes; the median chunk (ns per publish) is
//            robust to preemption.
//   group    one publisher, C consumer processes in one group doing
//            receive + ack one by one, or receive_batch + ack_batch (64).
//            The publisher's keys go round robin over K distinct keys; each
//            point runs once with an unordered group and once with a per_key
//            one (a key's messages one at a time, in order), so the pair is
//            the price of ordering for that many keys.
//   spsc     baseline: a minimal single-producer single-consumer ring in
//            shared memory between two processes (bu::SpscProducer and
//            bu::SpscConsumer: cached indices, two lines per 64-byte message),
//            what these cores move with no protocol at all; the consumer reads
//            one message at a time (copy-out, one tail store per message: the
//            counterpart of poll) or in batches (one tail store per batch: the
//            counterpart of read_batch). Neither side ever pauses.
//   mc       baseline: moodycamel::ConcurrentQueue between P producer threads
//            and one consumer thread of one process (no process boundary),
//            64-byte elements, consumer try_dequeue or try_dequeue_bulk.
//
// CPUs: publishers take CPUs from the first allowed one up, readers from the
// last one down. Where processes outnumber CPUs the point is marked
// "oversubscribed": waits then yield the CPU instead of spinning (a spinner
// sharing a CPU with the process it waits for only burns its time slice),
// and the figure measures the scheduler as much as the bus.
//
//   shmbus_throughput [--only a,b] [--messages N] [--repeat K] [--publishers 1,2]
//                     [--subscribers 1,2,4,8,16] [--consumers 1,2] [--keys 1,16,1024]
//                     [--sizes 8,64,...]
//                     [--quick | --smoke] [--json FILE]
//
// Repetitions run in rounds, every point once per round, and the median is
// reported: a host that moves the virtual CPUs, or other work that comes and
// goes, then hits every point alike.
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
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <concurrentqueue/concurrentqueue.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.hpp"

namespace {

namespace bu = shmbus::benchutil;
using bu::die;
using bu::die_errno;
using bu::Histogram;
using bu::median;
using bu::now_ns;
using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;

constexpr std::uint64_t kStallNs = 30'000'000'000ULL;  // a point that makes no progress this long fails
constexpr std::uint32_t kCapacity = 4096;
constexpr std::size_t kReadBatch = 256;
constexpr std::size_t kGroupBatch = 64;
constexpr std::uint64_t kChunk = 256;  // publishes per timed chunk

struct Config {
  std::vector<std::string> only{"pubsub", "sizes", "fanout", "group", "spsc", "mc"};
  std::uint64_t messages = 4'000'000;  ///< per point (pubsub, spsc, mc)
  std::uint64_t repeat = 3;
  std::vector<std::uint64_t> publishers{1, 2};
  std::vector<std::uint64_t> subscribers{1, 2, 4, 8, 16};
  std::vector<std::uint64_t> consumers{1, 2};
  std::vector<std::uint64_t> keys{1, 16, 1024};  ///< distinct keys of the group scenario
  std::vector<std::uint64_t> sizes{8, 64, 256, 1024, 4096};
  std::string json;
  std::string bus;
  std::vector<int> cpus;
};

bool wanted(const Config& cfg, std::string_view s) {
  return std::find(cfg.only.begin(), cfg.only.end(), s) != cfg.only.end();
}

// --- the message token: publisher id and its sequence in the first 8 bytes ----------

constexpr unsigned kIdShift = 56;
inline std::uint64_t make_token(std::uint64_t id, std::uint64_t seq) noexcept { return (id << kIdShift) | seq; }
inline std::uint64_t token_id(std::uint64_t t) noexcept { return t >> kIdShift; }
inline std::uint64_t token_seq(std::uint64_t t) noexcept { return t & ((std::uint64_t{1} << kIdShift) - 1); }
inline std::uint64_t read_token(const std::byte* p) noexcept {
  std::uint64_t t = 0;
  std::memcpy(&t, p, sizeof t);
  return t;
}

// --- processes ---------------------------------------------------------------------

/// Made before fork; every process of a point shares it.
struct alignas(128) Control {
  alignas(128) std::atomic<std::uint32_t> start;  ///< 1: go
  alignas(128) std::atomic<std::uint64_t> acked;  ///< group: acks so far (all consumers)
  alignas(128) std::atomic<std::uint32_t> abort;  ///< 1: a process failed, everybody stop
};

/// What each child reports at the end.
struct Report {
  std::int32_t ok = 0;
  char error[200] = {};
  std::uint64_t count = 0;      ///< messages read / published / acked
  std::uint64_t lost = 0;       ///< drop_oldest readers: counted as lost
  std::uint64_t checksum = 0;   ///< sum of tokens' sequences read
  std::uint64_t t_end = 0;      ///< CLOCK_MONOTONIC when it finished its work
  std::uint64_t chunk_p50 = 0;  ///< publishers: ns per publish, median chunk (x1000)
  std::uint64_t chunk_p99 = 0;
  std::uint64_t voluntary = 0;  ///< context switches (sleeps) while working
};

struct Role {
  std::function<void(Report&)> work;  ///< attaches, then waits for `start`, then works
  int cpu = -1;
};

/// Whether waits should yield (processes share CPUs).
bool g_crowded = false;

inline void idle() noexcept {
  if (g_crowded) {
    ::sched_yield();
  } else {
    bu::cpu_relax();
  }
}

/// In a child: the pipe to the parent (ready byte, then the report).
int g_report_fd = -1;

/// Tells the parent this process is attached, then waits for the start flag.
void await_start(Control& ctl) {
  const char c = 1;
  if (::write(g_report_fd, &c, 1) != 1) die_errno("ready pipe");
  const std::uint64_t since = now_ns();
  // SYNC(start): acquire, pairs with the parent's release store.
  while (ctl.start.load(std::memory_order_acquire) == 0) {
    idle();
    if (ctl.abort.load(std::memory_order_relaxed) != 0) die("aborted");  // relaxed: a flag
    if (now_ns() - since > kStallNs) die("never started");
  }
}

/// Progress watchdog shared by the workers' loops.
struct Stall {
  std::uint64_t last = now_ns();
  std::uint32_t n = 0;
  void progress() noexcept { n = 0; }
  void check(const Control& ctl, const char* what) {
    if ((++n & 1023) != 0) return;
    const std::uint64_t t = now_ns();
    if (ctl.abort.load(std::memory_order_relaxed) != 0) die("aborted");  // relaxed: a flag
    if (n == 1024) {
      last = t;
      return;
    }
    if (t - last > kStallNs) die(std::string(what) + ": no progress for 30 s");
  }
};

struct Outcome {
  std::vector<Report> reports;
  std::uint64_t t_start = 0;
};

/// Forks one process per role, waits until all are attached, releases them
/// together and collects their reports. Throws if any failed.
Outcome run_processes(Control& ctl, std::vector<Role>& roles) {
  struct Child {
    pid_t pid = -1;
    int fd = -1;
  };
  std::vector<Child> kids;
  auto kill_all = [&] {
    ctl.abort.store(1, std::memory_order_relaxed);  // relaxed: a flag
    for (Child& k : kids) {
      if (k.pid > 0) {
        ::kill(k.pid, SIGKILL);
        ::waitpid(k.pid, nullptr, 0);
      }
      if (k.fd >= 0) ::close(k.fd);
    }
  };
  for (Role& r : roles) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      kill_all();
      die_errno("pipe");
    }
    const pid_t pid = bu::fork_child();
    if (pid < 0) {
      kill_all();
      die_errno("fork");
    }
    if (pid == 0) {
      ::close(p[0]);
      Report rep;
      try {
        g_report_fd = p[1];
        if (r.cpu >= 0) bu::pin_to(r.cpu);
        r.work(rep);  // calls await_start(ctl) once attached
        rep.ok = 1;
      } catch (const std::exception& e) {
        std::snprintf(rep.error, sizeof rep.error, "%s", e.what());
        ctl.abort.store(1, std::memory_order_relaxed);  // relaxed: a flag
      }
      const char tag = 2;
      (void)!::write(p[1], &tag, 1);
      (void)!::write(p[1], &rep, sizeof rep);
      ::_exit(rep.ok == 1 ? 0 : 1);
    }
    ::close(p[1]);
    kids.push_back({pid, p[0]});
  }
  auto read_exact = [](int fd, void* buf, std::size_t n) {
    auto* b = static_cast<char*>(buf);
    while (n > 0) {
      const ssize_t r = ::read(fd, b, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      b += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  };
  Outcome out;
  out.reports.resize(roles.size());
  std::string failure;
  // Ready bytes (1) from everybody; a child that failed early sends 2 + report.
  std::vector<bool> reported(roles.size(), false);
  for (std::size_t i = 0; i < kids.size() && failure.empty(); ++i) {
    char c = 0;
    if (!read_exact(kids[i].fd, &c, 1)) {
      failure = "a process exited before it was ready";
    } else if (c == 2) {
      reported[i] = read_exact(kids[i].fd, &out.reports[i], sizeof(Report));
      failure = reported[i] ? out.reports[i].error : "a process failed before it was ready";
    }
  }
  if (!failure.empty()) {
    kill_all();
    die(failure);
  }
  out.t_start = now_ns();
  // SYNC(start): release, pairs with the acquire in await_start.
  ctl.start.store(1, std::memory_order_release);
  // The first real error wins over the "aborted" of the processes it stopped.
  std::string aborted;
  for (std::size_t i = 0; i < kids.size(); ++i) {
    char c = 0;
    if (!read_exact(kids[i].fd, &c, 1) || c != 2 || !read_exact(kids[i].fd, &out.reports[i], sizeof(Report))) {
      int status = 0;
      ::waitpid(kids[i].pid, &status, 0);
      kids[i].pid = -1;
      if (failure.empty()) {
        failure = "process " + std::to_string(i) + " died without a report (" + bu::exit_description(status) + ")";
      }
      continue;
    }
    if (out.reports[i].ok != 1) {
      const std::string e = out.reports[i].error;
      if (e == "aborted") {
        if (aborted.empty()) aborted = "process " + std::to_string(i) + ": aborted";
      } else if (failure.empty()) {
        failure = "process " + std::to_string(i) + ": " + e;
      }
    }
  }
  for (Child& k : kids) {
    if (k.pid > 0) ::waitpid(k.pid, nullptr, 0);
    k.pid = -1;
    ::close(k.fd);
    k.fd = -1;
  }
  if (failure.empty()) failure = aborted;
  if (!failure.empty()) die(failure);
  return out;
}

/// `n` bytes shared with the children (bu::map_shared: zeroed, pre-faulted),
/// seen as a T, unmapped when it goes out of scope.
template <class T>
class SharedMap {
 public:
  explicit SharedMap(std::size_t n = sizeof(T)) : p_(static_cast<T*>(bu::map_shared(n))), n_(n) {}
  ~SharedMap() { ::munmap(p_, n_); }
  SharedMap(const SharedMap&) = delete;
  SharedMap& operator=(const SharedMap&) = delete;
  [[nodiscard]] T* get() const noexcept { return p_; }

 private:
  T* p_;
  std::size_t n_;
};

/// Messages per second: `messages` moved between t_start and t_end (ns).
double rate(std::uint64_t messages, std::uint64_t t_start, std::uint64_t t_end) {
  return static_cast<double>(messages) / (static_cast<double>(t_end - t_start) / 1e9);
}

/// Where processes run: publishers from the first CPU up, readers from the
/// last one down; crowded when processes outnumber CPUs.
struct Placement {
  std::vector<int> writer_cpus, reader_cpus;
  bool crowded = false;
};
Placement place(const Config& cfg, std::size_t writers, std::size_t readers) {
  Placement p;
  const std::size_t n = cfg.cpus.size();
  p.crowded = writers + readers > n;
  if (n == 0) {
    p.writer_cpus.assign(writers, -1);
    p.reader_cpus.assign(readers, -1);
    return p;
  }
  // Enough CPUs: one each. Too few: writers and readers get separate CPUs
  // in proportion to their numbers (at least one each), so that a crowd of
  // readers never shares the writers' CPUs, nor the writers the readers'.
  std::size_t for_readers = n;
  if (p.crowded && n > 1) {
    for_readers = std::clamp<std::size_t>((n * readers + (writers + readers) / 2) / (writers + readers), 1, n - 1);
  }
  const std::size_t for_writers = p.crowded && n > 1 ? n - for_readers : n;
  for (std::size_t i = 0; i < writers; ++i) p.writer_cpus.push_back(cfg.cpus[i % for_writers]);
  for (std::size_t i = 0; i < readers; ++i) p.reader_cpus.push_back(cfg.cpus[n - 1 - (i % for_readers)]);
  return p;
}

// --- shmbus roles ------------------------------------------------------------------

class ChannelGuard {
 public:
  ChannelGuard(std::string name, std::string bus) : name_(std::move(name)), bus_(std::move(bus)) {}
  ~ChannelGuard() {
    (void)Channel::remove(name_, bus_);
    (void)Channel::remove(name_ + "-dlq", bus_);
  }
  ChannelGuard(const ChannelGuard&) = delete;
  ChannelGuard& operator=(const ChannelGuard&) = delete;
  [[nodiscard]] const std::string& name() const { return name_; }

 private:
  std::string name_, bus_;
};

Channel open_channel(const Config& cfg, const std::string& name) {
  auto ch = Channel::open(name, cfg.bus);
  if (!ch) die("open " + name + ": " + ch.error().message());
  return std::move(ch.value());
}

/// Options of a reader (SubscribeOptions or GroupOptions): from the first
/// message, busy-spinning, or yielding where processes share CPUs.
template <class Options>
Options reader_options() {
  Options o;
  o.start = shmbus::StartAt::earliest();
  o.wait = g_crowded ? shmbus::WaitStrategy::yield : shmbus::WaitStrategy::busy_spin;
  return o;
}

/// How a publisher writes: one publish() per message, or kClaimBatch
/// try_claim()s, then the payloads, then kClaimBatch commit()s with one
/// clock read for the batch (the batching the public API offers a publisher).
/// Or publish_batch: kClaimBatch messages with one claim-counter update,
/// one space check and one clock read.
enum class PubMode { publish, claim_batch, publish_batch };
constexpr std::size_t kClaimBatch = 16;
const char* name_of(PubMode m) {
  switch (m) {
    case PubMode::publish: return "publish";
    case PubMode::claim_batch: return "claim_batch16";
    case PubMode::publish_batch: return "publish_batch16";
  }
  return "?";
}

/// A publisher process: `n` messages of `size` bytes, tokens (id, 0..n-1).
/// Times chunks of kChunk publishes.
Role publisher_role(const Config& cfg, Control& ctl, const std::string& name, std::uint64_t id, std::uint64_t n,
                    std::size_t size, PubMode mode, std::uint64_t keys) {
  return {[&cfg, &ctl, name, id, n, size, mode, keys](Report& rep) {
            Channel ch = open_channel(cfg, name);
            auto pub = ch.publisher();
            if (!pub) die("publisher: " + pub.error().message());
            std::vector<std::byte> buf(size, std::byte{0x5a});
            std::array<shmbus::Claim, kClaimBatch> claims{};
            std::vector<std::byte> bodies(kClaimBatch * size, std::byte{0x5a});
            std::array<shmbus::OutMessage, kClaimBatch> outs{};
            for (std::size_t j = 0; j < kClaimBatch; ++j) {
              outs[j].payload = std::span<const std::byte>(bodies.data() + j * size, size);
            }
            Histogram chunks;
            await_start(ctl);
            const std::uint64_t v0 = bu::voluntary_switches();
            std::uint64_t t = now_ns();
            std::uint64_t chunk_start = 0;
            for (std::uint64_t i = 0; i < n;) {
              if (mode == PubMode::publish) {
                const std::uint64_t tok = make_token(id, i);
                std::memcpy(buf.data(), &tok, sizeof tok);
                shmbus::MessageMeta meta;
                if (keys != 0) meta.key = i % keys;  // round robin over the keys
                const PublishStatus st = pub->publish(buf, meta, kStallNs);
                if (st != PublishStatus::ok) die("publish: " + std::string(shmbus::to_string(st)));
                ++i;
              } else if (mode == PubMode::publish_batch) {
                const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kClaimBatch, n - i));
                for (std::size_t j = 0; j < k; ++j) {
                  const std::uint64_t tok = make_token(id, i + j);
                  std::memcpy(bodies.data() + j * size, &tok, sizeof tok);
                  if (keys != 0) outs[j].meta.key = (i + j) % keys;  // round robin, as publish does
                }
                const PublishStatus st =
                    pub->publish_batch(std::span<const shmbus::OutMessage>(outs.data(), k), kStallNs);
                if (st != PublishStatus::ok) die("publish_batch: " + std::string(shmbus::to_string(st)));
                i += k;
              } else {
                // Only the first claim of a batch may wait for space: a
                // publisher that waits while it holds uncommitted claims can
                // wait on itself (another publisher fills the ring, and the
                // readers stop at our first claim). So later claims take what
                // is free now (timeout 0), and the batch ends early if nothing is.
                const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kClaimBatch, n - i));
                std::size_t k = 0;
                for (; k < want; ++k) {
                  const PublishStatus st = pub->try_claim(size, claims[k], k == 0 ? kStallNs : 0);
                  if (st == PublishStatus::timeout && k > 0) break;
                  if (st != PublishStatus::ok) die("try_claim: " + std::string(shmbus::to_string(st)));
                  const std::uint64_t tok = make_token(id, i + k);
                  std::memcpy(buf.data(), &tok, sizeof tok);
                  std::memcpy(claims[k].payload.data(), buf.data(), size);
                }
                shmbus::MessageMeta meta;
                timespec ts{};
                ::clock_gettime(CLOCK_REALTIME, &ts);
                meta.timestamp_ns =
                    static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
                for (std::size_t j = 0; j < k; ++j) {
                  const PublishStatus st = pub->commit(claims[j], size, meta);
                  if (st != PublishStatus::ok) die("commit: " + std::string(shmbus::to_string(st)));
                }
                i += k;
              }
              if (i - chunk_start >= kChunk) {
                const std::uint64_t t1 = now_ns();
                chunks.record((t1 - t) * 1000 / (i - chunk_start));  // ns per publish, x1000
                t = t1;
                chunk_start = i;
              }
            }
            rep.t_end = now_ns();
            rep.count = n;
            rep.chunk_p50 = chunks.percentile(50);
            rep.chunk_p99 = chunks.percentile(99);
            rep.voluntary = bu::voluntary_switches() - v0;
          },
          -1};
}

/// How a subscriber reads: one copy-out poll per message; zero-copy batches;
/// or batches, pausing kBackoffNs (without touching the ring) whenever it
/// finds nothing, so that the publisher gets ahead and the slot lines move
/// in bulk instead of one message at a time.
enum class ReadMode { poll, read_batch, read_batch_backoff };
constexpr std::uint64_t kBackoffNs = 2000;
const char* name_of(ReadMode m) {
  switch (m) {
    case ReadMode::poll: return "poll";
    case ReadMode::read_batch: return "read_batch";
    case ReadMode::read_batch_backoff: return "read_batch+idle2us";
  }
  return "?";
}

/// A subscriber process reading until it has seen sequence `total - 1`.
/// Lossless (block): every publisher's tokens arrive in order, none missing.
/// drop_oldest: tokens of one publisher only increase; losses are counted
/// and delivered + lost must equal `total`.
Role subscriber_role(const Config& cfg, Control& ctl, const std::string& name, std::uint64_t publishers,
                     std::uint64_t total, std::size_t size, ReadMode mode, bool lossy) {
  return {[&cfg, &ctl, name, publishers, total, size, mode, lossy](Report& rep) {
            Channel ch = open_channel(cfg, name);
            auto sub = ch.subscribe(reader_options<shmbus::SubscribeOptions>());
            if (!sub) die("subscribe: " + sub.error().message());
            std::vector<std::uint64_t> next(publishers, 0);
            std::vector<std::byte> buf(size);
            std::string bad;
            std::uint64_t got = 0, sum = 0;
            // Checks one message that the bus has validated.
            auto check = [&](std::uint64_t len, std::uint64_t tok) {
              const std::uint64_t id = token_id(tok), seq = token_seq(tok);
              if (len != size) {
                bad = "a message of " + std::to_string(len) + " bytes";
              } else if (id >= publishers || (lossy ? seq < next[id] : seq != next[id])) {
                bad = "publisher " + std::to_string(id) + " sequence " + std::to_string(seq) + ", expected " +
                      (lossy ? "at least " : "") + std::to_string(id < publishers ? next[id] : 0);
              } else {
                next[id] = seq + 1;
                sum += seq;
                ++got;
              }
            };
            // read_batch hands each message to `stash` before validating it:
            // only the first n it returns are valid (a lapping writer may have
            // overwritten the one after), so checking waits for that count.
            std::vector<std::pair<std::uint64_t, std::uint64_t>> pending(kReadBatch);
            std::size_t stashed = 0;
            auto stash = [&](const shmbus::Message& m) noexcept {
              pending[stashed++] = {m.payload.size(), m.payload.size() >= 8 ? read_token(m.payload.data()) : 0};
            };
            Stall stall;
            await_start(ctl);
            const std::uint64_t v0 = bu::voluntary_switches();
            while (sub->cursor() < total) {
              PollStatus st = PollStatus::ok;
              std::size_t n = 0;
              if (mode == ReadMode::poll) {
                shmbus::Message m;
                st = sub->poll(m, buf);
                if (st == PollStatus::ok) {
                  check(m.payload.size(), read_token(m.payload.data()));
                  n = 1;
                }
              } else {
                stashed = 0;
                n = sub->read_batch(stash, kReadBatch, &st);
                for (std::size_t i = 0; i < n && bad.empty(); ++i) check(pending[i].first, pending[i].second);
              }
              if (!bad.empty()) die("subscriber: " + bad);
              if (st == PollStatus::lapped && lossy) continue;
              if (st != PollStatus::ok && st != PollStatus::empty) {
                die("subscriber: " + std::string(shmbus::to_string(st)));
              }
              if (n == 0) {
                if (mode == ReadMode::read_batch_backoff && !g_crowded) {
                  bu::pause_ns(kBackoffNs);
                } else {
                  idle();
                }
                stall.check(ctl, "subscriber");
              } else {
                stall.progress();
              }
            }
            rep.t_end = now_ns();
            rep.voluntary = bu::voluntary_switches() - v0;
            const auto c = sub->counters();
            rep.count = got;
            rep.lost = c.lost;
            rep.checksum = sum;
            if (!lossy && got != total) die("subscriber: read " + std::to_string(got) + " of " + std::to_string(total));
            if (lossy && got + c.lost != total) {
              die("subscriber: delivered " + std::to_string(got) + " + lost " + std::to_string(c.lost) +
                  " != " + std::to_string(total));
            }
          },
          -1};
}

enum class AckMode { single, batch };
const char* name_of(AckMode m) { return m == AckMode::single ? "receive+ack" : "receive_batch+ack_batch"; }

/// A consumer process of group "g": receives and acks until the group as a
/// whole has acked `total`. A per_key group is checked as it goes: one
/// publisher's messages of one key (key = token % keys) reach each consumer
/// in token order.
Role consumer_role(const Config& cfg, Control& ctl, const std::string& name, std::uint64_t total, std::size_t size,
                   AckMode mode, shmbus::GroupOrdering ordering, std::uint64_t keys) {
  return {[&cfg, &ctl, name, total, size, mode, ordering, keys](Report& rep) {
            Channel ch = open_channel(cfg, name);
            auto opts = reader_options<shmbus::GroupOptions>();
            opts.ordering = ordering;
            auto consumer = ch.join_group("g", opts);
            if (!consumer) die("join_group: " + consumer.error().message());
            std::vector<shmbus::Delivery> ds(kGroupBatch);
            std::vector<std::byte> arena(kGroupBatch * size);
            std::uint64_t got = 0, sum = 0, unreported = 0;
            // per_key: the last token seen of each key (keys <= 2^20 in this program).
            std::vector<std::uint64_t> last_of_key(ordering == shmbus::GroupOrdering::per_key ? keys : 0, ~0ULL);
            Stall stall;
            await_start(ctl);
            const std::uint64_t v0 = bu::voluntary_switches();
            for (;;) {
              std::size_t n = 0;
              PollStatus st = PollStatus::ok;
              if (mode == AckMode::single) {
                st = consumer->receive(ds[0], arena);
                if (st == PollStatus::ok) {
                  const shmbus::AckStatus a = consumer->ack(ds[0]);
                  if (a != shmbus::AckStatus::ok) die("ack: " + std::string(shmbus::to_string(a)));
                  n = 1;
                }
              } else {
                n = consumer->receive_batch(ds, arena, &st);
                if (n > 0 && consumer->ack_batch(std::span<const shmbus::Delivery>(ds.data(), n)) != n) {
                  die("ack_batch: not every delivery was acked");
                }
              }
              if (st != PollStatus::ok && st != PollStatus::empty)
                die("receive: " + std::string(shmbus::to_string(st)));
              for (std::size_t i = 0; i < n; ++i) {
                if (ds[i].message.payload.size() != size) die("a message of the wrong size");
                const std::uint64_t t = token_seq(read_token(ds[i].message.payload.data()));
                sum += t;
                if (!last_of_key.empty()) {
                  std::uint64_t& last = last_of_key[ds[i].message.key];
                  if (last != ~0ULL && t <= last) die("per_key: a key's messages out of order");
                  last = t;
                }
              }
              got += n;
              unreported += n;
              if (n == 0 || unreported >= kGroupBatch) {
                // relaxed: a tally; the group's own protocol orders the acks.
                ctl.acked.fetch_add(unreported, std::memory_order_relaxed);
                unreported = 0;
              }
              if (n == 0) {
                if (ctl.acked.load(std::memory_order_relaxed) >= total) break;  // relaxed: a tally
                idle();
                stall.check(ctl, "consumer");
              } else {
                stall.progress();
              }
            }
            rep.t_end = now_ns();
            rep.voluntary = bu::voluntary_switches() - v0;
            rep.count = got;
            rep.checksum = sum;
          },
          -1};
}

// --- points --------------------------------------------------------------------------

struct Point {
  nlohmann::ordered_json desc;         ///< scenario, transport, counts, mode...
  std::vector<double> rates;           ///< msg/s per repetition
  std::vector<double> ns_per_publish;  ///< publisher's median chunk, per repetition
  std::vector<double> ns_per_publish_p99;
  std::uint64_t lost = 0;
  double sleeps_per_msg = 0;
};

nlohmann::ordered_json point_json(const Point& p) {
  nlohmann::ordered_json j = p.desc;
  j["msgs_per_s"] = median(p.rates);
  j["msgs_per_s_runs"] = p.rates;
  if (!p.ns_per_publish.empty()) {
    j["ns_per_publish"] = median(p.ns_per_publish);
    j["ns_per_publish_runs"] = p.ns_per_publish;
    j["ns_per_publish_p99"] = median(p.ns_per_publish_p99);
  }
  j["lost"] = p.lost;
  j["sleeps_per_msg"] = p.sleeps_per_msg;
  return j;
}

void print_point(const Point& p) {
  std::printf("  %-8s %-12s", p.desc.value("scenario", "").c_str(), p.desc.value("transport", "").c_str());
  for (const char* k : {"publishers", "subscribers", "consumers"}) {
    if (p.desc.contains(k)) std::printf(" %s=%-2d", k, p.desc[k].get<int>());
  }
  std::printf(" size=%-5d %-24s %-11s %8.2f M msg/s", p.desc.value("size", 0), p.desc.value("mode", "").c_str(),
              p.desc.value("policy", "").c_str(), median(p.rates) / 1e6);
  if (!p.ns_per_publish.empty()) {
    std::printf("  publish %6.1f ns (p99 chunk %6.1f)", median(p.ns_per_publish), median(p.ns_per_publish_p99));
  }
  if (p.lost > 0) std::printf("  lost %llu", static_cast<unsigned long long>(p.lost));
  if (p.desc.contains("ordering")) {
    std::printf("  %s keys=%llu", p.desc["ordering"].get<std::string>().c_str(),
                static_cast<unsigned long long>(p.desc.value("keys", std::uint64_t{0})));
  }
  if (p.desc.value("oversubscribed", false)) std::printf("  [oversubscribed]");
  std::printf("\n");
  std::fflush(stdout);
}

/// One shmbus point: P publishers, then readers made by `make_readers`.
struct ShmbusSpec {
  std::string scenario;
  std::uint64_t publishers = 1;
  std::uint64_t readers = 1;
  bool group = false;
  std::size_t size = 64;
  ReadMode read = ReadMode::read_batch;
  PubMode write = PubMode::publish;
  AckMode ack = AckMode::single;
  shmbus::GroupOrdering ordering = shmbus::GroupOrdering::none;
  std::uint64_t keys = 0;  ///< publishers' keys: round robin over 0..keys-1 (0: key 0)
  Policy policy = Policy::block;
  std::uint64_t messages = 0;
};

/// One repetition of a shmbus point, added to pt.
void run_shmbus(const Config& cfg, const ShmbusSpec& s, std::uint64_t& serial, Point& pt) {
  const Placement pl = place(cfg, s.publishers, s.readers);
  pt.desc = {{"scenario", s.scenario},
             {"transport", "shmbus"},
             {"publishers", s.publishers},
             {"size", s.size},
             {"policy", std::string(shmbus::to_string(s.policy))},
             {"messages", s.messages},
             {"oversubscribed", pl.crowded}};
  if (s.group) {
    pt.desc["consumers"] = s.readers;
    pt.desc["mode"] = s.write == PubMode::publish ? std::string(name_of(s.ack))
                                                  : std::string(name_of(s.write)) + "+" + name_of(s.ack);
    pt.desc["ordering"] = std::string(shmbus::to_string(s.ordering));
    pt.desc["keys"] = s.keys;
  } else {
    pt.desc["subscribers"] = s.readers;
    pt.desc["mode"] = s.write == PubMode::publish ? std::string(name_of(s.read))
                                                  : std::string(name_of(s.write)) + "+" + name_of(s.read);
  }
  pt.desc["publish_api"] = name_of(s.write);
  // A reader that pauses when it finds nothing lets the publisher run ahead:
  // a figure about the cache lines, not one a user gets (the report keeps it
  // out of the headline table).
  pt.desc["reader_pauses"] = s.read == ReadMode::read_batch_backoff;
  g_crowded = pl.crowded;
  {
    ChannelGuard guard("tp-" + std::to_string(serial++), cfg.bus);
    ChannelOptions o;
    o.capacity = kCapacity;
    o.slot_size = static_cast<std::uint32_t>((64 + s.size + 63) / 64 * 64);
    while (o.capacity > 256 && static_cast<std::uint64_t>(o.capacity) * o.slot_size > (64u << 20)) o.capacity /= 2;
    o.policy = s.policy;
    o.max_subscribers = static_cast<std::uint32_t>(std::max<std::uint64_t>(32, s.readers));
    o.max_publishers = static_cast<std::uint32_t>(std::max<std::uint64_t>(32, s.publishers));
    o.max_groups = s.group ? 1 : 0;
    o.max_consumers = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(s.readers, 1, 255));
    {
      auto ch = Channel::create(guard.name(), o, cfg.bus);
      if (!ch) die("create " + guard.name() + ": " + ch.error().message());
    }
    const SharedMap<Control> ctl_map;
    Control* ctl = ctl_map.get();
    std::vector<Role> roles;
    const std::uint64_t total = s.messages;
    // Every process attaches before the common start, so the readers (and
    // the group) exist before the first message is published.
    std::vector<std::uint64_t> per_pub(s.publishers, total / s.publishers);
    for (std::uint64_t i = 0; i < total % s.publishers; ++i) ++per_pub[i];
    roles.reserve(s.publishers + s.readers);
    for (std::uint64_t i = 0; i < s.readers; ++i) {
      Role role = s.group ? consumer_role(cfg, *ctl, guard.name(), total, s.size, s.ack, s.ordering, s.keys)
                          : subscriber_role(cfg, *ctl, guard.name(), s.publishers, total, s.size, s.read,
                                            s.policy == Policy::drop_oldest);
      role.cpu = pl.reader_cpus[i];
      roles.push_back(std::move(role));
    }
    for (std::uint64_t i = 0; i < s.publishers; ++i) {
      Role role = publisher_role(cfg, *ctl, guard.name(), i, per_pub[i], s.size, s.write, s.keys);
      role.cpu = pl.writer_cpus[i];
      roles.push_back(std::move(role));
    }
    const Outcome out = run_processes(*ctl, roles);
    std::uint64_t t_end = 0, read = 0, lost = 0, sum = 0, vol = 0;
    std::vector<double> pub_p50, pub_p99;
    for (std::uint64_t i = 0; i < s.readers; ++i) {
      const Report& rp = out.reports[i];
      t_end = std::max(t_end, rp.t_end);
      read += rp.count;
      lost += rp.lost;
      sum += rp.checksum;
      vol += rp.voluntary;
    }
    for (std::uint64_t i = 0; i < s.publishers; ++i) {
      const Report& rp = out.reports[s.readers + i];
      pub_p50.push_back(static_cast<double>(rp.chunk_p50) / 1000.0);
      pub_p99.push_back(static_cast<double>(rp.chunk_p99) / 1000.0);
      vol += rp.voluntary;
    }
    // Checks beyond each reader's own: a group delivers each message once.
    if (s.group) {
      std::uint64_t want = 0;
      for (std::uint64_t i = 0; i < s.publishers; ++i) want += per_pub[i] * (per_pub[i] - 1) / 2;
      if (read != total || sum != want) {
        die("group: acked " + std::to_string(read) + " messages (checksum " + std::to_string(sum) + "), expected " +
            std::to_string(total) + " (checksum " + std::to_string(want) + ")");
      }
    }
    pt.rates.push_back(rate(total, out.t_start, t_end));
    pt.ns_per_publish.push_back(median(pub_p50));
    pt.ns_per_publish_p99.push_back(median(pub_p99));
    pt.lost += lost;
    pt.sleeps_per_msg += static_cast<double>(vol) / static_cast<double>(total) / static_cast<double>(cfg.repeat);
  }
  g_crowded = false;
}

// --- baselines ------------------------------------------------------------------------

/// How the SPSC ring's consumer reads: everything there is, then one tail
/// store per batch; or one message per call, copied out, one tail store per
/// message (the ring's counterpart of shmbus's copy-out poll). The producer
/// writes one message at a time either way.
enum class SpscMode { batch, one_at_a_time };
const char* name_of(SpscMode m) { return m == SpscMode::batch ? "batch" : "one_at_a_time"; }

/// One repetition of the SPSC ring baseline (bu::SpscProducer and
/// bu::SpscConsumer), added to pt. Neither side ever pauses: an empty or
/// full ring is spun on (or yielded where the processes share a CPU).
void run_spsc(const Config& cfg, std::size_t size, SpscMode mode, Point& pt) {
  const Placement pl = place(cfg, 1, 1);
  pt.desc = {{"scenario", "pubsub"},
             {"transport", "spsc_ring"},
             {"publishers", 1},
             {"subscribers", 1},
             {"size", size},
             {"mode", name_of(mode)},
             {"policy", "block"},
             {"messages", cfg.messages},
             {"oversubscribed", pl.crowded}};
  g_crowded = pl.crowded;
  const bu::SpscGeometry geo(kCapacity, size);
  {
    const SharedMap<Control> ctl_map;
    const SharedMap<bu::SpscHeader> hdr_map(geo.bytes());
    Control* ctl = ctl_map.get();
    bu::SpscHeader* hdr = hdr_map.get();
    const std::uint64_t total = cfg.messages;
    std::vector<Role> roles;
    roles.push_back({[&](Report& rep) {
                       bu::SpscConsumer c{hdr, geo};
                       std::vector<std::byte> buf(size);
                       std::uint64_t sum = 0, got = 0;
                       auto check = [&](std::uint64_t len, std::uint64_t tok) {
                         if (len != size) die("spsc: a message of the wrong size");
                         if (token_seq(tok) != got) die("spsc: out of order");
                         sum += token_seq(tok);
                         ++got;
                       };
                       Stall stall;
                       await_start(*ctl);
                       while (got < total) {
                         if (mode == SpscMode::one_at_a_time) {
                           std::size_t len = 0;
                           if (c.pop(buf.data(), buf.size(), len)) {
                             check(len, read_token(buf.data()));
                             stall.progress();
                             continue;
                           }
                         } else if (const std::uint64_t n = c.available(); n > 0) {
                           for (std::uint64_t i = 0; i < n; ++i) {
                             const std::byte* s = c.peek(i);
                             std::uint64_t len = 0;
                             std::memcpy(&len, s, sizeof len);
                             check(len, read_token(s + sizeof len));
                           }
                           c.release(n);
                           stall.progress();
                           continue;
                         }
                         idle();
                         stall.check(*ctl, "spsc consumer");
                       }
                       rep.t_end = now_ns();
                       rep.count = got;
                       rep.checksum = sum;
                     },
                     pl.reader_cpus[0]});
    roles.push_back({[&](Report& rep) {
                       bu::SpscProducer p{hdr, geo};
                       std::vector<std::byte> buf(size, std::byte{0x5a});
                       Stall stall;
                       await_start(*ctl);
                       for (std::uint64_t i = 0; i < total; ++i) {
                         while (!p.has_space()) {
                           idle();
                           stall.check(*ctl, "spsc producer");
                         }
                         const std::uint64_t tok = make_token(0, i);
                         std::memcpy(buf.data(), &tok, sizeof tok);
                         p.push(buf.data(), size);
                       }
                       rep.t_end = now_ns();
                       rep.count = total;
                     },
                     pl.writer_cpus[0]});
    const Outcome out = run_processes(*ctl, roles);
    if (out.reports[0].checksum != total * (total - 1) / 2) die("spsc: checksum mismatch");
    pt.rates.push_back(rate(total, out.t_start, out.reports[0].t_end));
  }
  g_crowded = false;
}

struct Elem {
  std::array<std::byte, 64> bytes;
};

/// moodycamel::ConcurrentQueue: P producer threads, one consumer thread, in
/// one forked process (so that its pinning leaves the parent alone).
/// One repetition of the moodycamel baseline, added to pt.
void run_mc(const Config& cfg, std::uint64_t producers, bool bulk, Point& pt) {
  const Placement pl = place(cfg, producers, 1);
  pt.desc = {{"scenario", "pubsub"},
             {"transport", "mc_queue"},
             {"publishers", producers},
             {"subscribers", 1},
             {"size", 64},
             {"mode", bulk ? "try_dequeue_bulk" : "try_dequeue"},
             {"policy", "unbounded"},
             {"messages", cfg.messages},
             {"oversubscribed", pl.crowded},
             {"threads", true}};
  {
    const SharedMap<Control> ctl_map;
    Control* ctl = ctl_map.get();
    const std::uint64_t total = cfg.messages;
    std::vector<Role> roles;
    roles.push_back({[&](Report& rep) {
                       g_crowded = pl.crowded;
                       moodycamel::ConcurrentQueue<Elem> q(8192);
                       std::vector<std::thread> threads;
                       std::vector<std::uint64_t> per(producers, total / producers);
                       for (std::uint64_t i = 0; i < total % producers; ++i) ++per[i];
                       std::atomic<std::uint32_t> go{0};
                       std::atomic<std::uint32_t> failed{0};
                       for (std::uint64_t p = 0; p < producers; ++p) {
                         threads.emplace_back([&, p] {
                           bu::pin_to(pl.writer_cpus[p]);
                           moodycamel::ProducerToken tok(q);
                           Elem e{};
                           while (go.load(std::memory_order_acquire) == 0) idle();
                           for (std::uint64_t i = 0; i < per[p]; ++i) {
                             const std::uint64_t t = make_token(p, i);
                             std::memcpy(e.bytes.data(), &t, sizeof t);
                             if (!q.enqueue(tok, e)) failed.store(1, std::memory_order_relaxed);  // relaxed: a flag
                           }
                         });
                       }
                       bu::pin_to(pl.reader_cpus[0]);
                       std::vector<std::uint64_t> next(producers, 0);
                       std::vector<Elem> batch(kReadBatch);
                       std::uint64_t got = 0, sum = 0;
                       Stall stall;
                       await_start(*ctl);
                       go.store(1, std::memory_order_release);
                       while (got < total) {
                         const std::size_t n = bulk ? q.try_dequeue_bulk(batch.begin(), kReadBatch)
                                                    : static_cast<std::size_t>(q.try_dequeue(batch[0]));
                         for (std::size_t i = 0; i < n; ++i) {
                           const std::uint64_t t = read_token(batch[i].bytes.data());
                           const std::uint64_t id = token_id(t), seq = token_seq(t);
                           if (id >= producers || seq != next[id]) {
                             for (auto& th : threads) th.detach();
                             die("mc_queue: out of order");
                           }
                           next[id] = seq + 1;
                           sum += seq;
                         }
                         got += n;
                         if (n == 0) {
                           idle();
                           stall.check(*ctl, "mc consumer");
                         } else {
                           stall.progress();
                         }
                       }
                       rep.t_end = now_ns();
                       for (auto& th : threads) th.join();
                       if (failed.load(std::memory_order_relaxed) != 0) die("mc_queue: enqueue failed");
                       rep.count = got;
                       rep.checksum = sum;
                     },
                     -1});
    const Outcome out = run_processes(*ctl, roles);
    pt.rates.push_back(rate(total, out.t_start, out.reports[0].t_end));
  }
}

// --- driver ---------------------------------------------------------------------------

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [options]\n"
               "  --only LIST         scenarios: pubsub,sizes,fanout,group,spsc,mc (default all)\n"
               "  --messages N        messages per point (default 4000000; fan-out and groups use N/4)\n"
               "  --repeat K          repetitions per point; the median is reported (default 3)\n"
               "  --publishers LIST   publisher counts for pubsub and mc (default 1,2)\n"
               "  --subscribers LIST  subscriber counts for fanout (default 1,2,4,8,16)\n"
               "  --consumers LIST    consumer counts for group (default 1,2)\n"
               "  --keys LIST         distinct message keys for group, each point unordered and per_key\n"
               "                      (default 1,16,1024; at most 1048576)\n"
               "  --sizes LIST        message sizes for the sizes scenario (default 8,64,256,1024,4096)\n"
               "  --cpus LIST         CPUs to use (default: all allowed)\n"
               "  --quick             fewer messages, one repetition\n"
               "  --smoke             a tiny run of every scenario (tests)\n"
               "  --json FILE         also write the results as JSON\n",
               argv0);
}

std::optional<Config> parse(int argc, char** argv) {
  Config cfg;
  bool smoke = false, quick = false;
  std::vector<std::uint64_t> cpus;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has = i + 1 < argc;
    std::vector<std::uint64_t> list;
    if (a == "--only" && has) {
      cfg.only = bu::split_list(argv[++i]);
    } else if (a == "--messages" && has && bu::parse_list(argv[++i], list) && list.size() == 1 && list[0] >= 1000) {
      cfg.messages = list[0];
    } else if (a == "--repeat" && has && bu::parse_list(argv[++i], list) && list.size() == 1 && list[0] >= 1) {
      cfg.repeat = list[0];
    } else if (a == "--publishers" && has && bu::parse_list(argv[++i], list)) {
      cfg.publishers = list;
    } else if (a == "--subscribers" && has && bu::parse_list(argv[++i], list)) {
      cfg.subscribers = list;
    } else if (a == "--consumers" && has && bu::parse_list(argv[++i], list)) {
      cfg.consumers = list;
    } else if (a == "--keys" && has && bu::parse_list(argv[++i], list)) {
      cfg.keys = list;
    } else if (a == "--sizes" && has && bu::parse_list(argv[++i], list)) {
      cfg.sizes = list;
    } else if (a == "--cpus" && has && bu::parse_list(argv[++i], list)) {
      cpus = list;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--smoke") {
      smoke = true;
    } else if (a == "--json" && has) {
      cfg.json = argv[++i];
    } else {
      std::fprintf(stderr, "shmbus_throughput: bad or incomplete option '%s'\n", argv[i]);
      return std::nullopt;
    }
  }
  if (quick) {
    cfg.messages = std::min<std::uint64_t>(cfg.messages, 1'000'000);
    cfg.repeat = 1;
  }
  if (smoke) {
    cfg.messages = 20'000;
    cfg.repeat = 1;
    cfg.subscribers = {1, 3};
    cfg.sizes = {8, 4096};
    cfg.keys = {1, 16};
  }
  for (const std::string& s : cfg.only) {
    if (s != "pubsub" && s != "sizes" && s != "fanout" && s != "group" && s != "spsc" && s != "mc") {
      std::fprintf(stderr, "shmbus_throughput: unknown scenario '%s'\n", s.c_str());
      return std::nullopt;
    }
  }
  for (std::uint64_t k : cfg.keys) {
    if (k < 1 || k > (1u << 20)) {
      std::fprintf(stderr, "shmbus_throughput: --keys: %llu is not in 1..1048576\n",
                   static_cast<unsigned long long>(k));
      return std::nullopt;
    }
  }
  for (auto* l : {&cfg.publishers, &cfg.subscribers, &cfg.consumers}) {
    for (std::uint64_t v : *l) {
      if (v < 1 || v > 255) {
        std::fprintf(stderr, "shmbus_throughput: process counts must be 1..255\n");
        return std::nullopt;
      }
    }
  }
  for (std::uint64_t s : cfg.sizes) {
    if (s < 8 || s > (1u << 20)) {
      std::fprintf(stderr, "shmbus_throughput: sizes must be 8..1048576\n");
      return std::nullopt;
    }
  }
  const std::vector<int> allowed = bu::allowed_cpus();
  if (cpus.empty()) {
    cfg.cpus = allowed;
  } else {
    for (std::uint64_t c : cpus) {
      if (std::find(allowed.begin(), allowed.end(), static_cast<int>(c)) == allowed.end()) {
        std::fprintf(stderr, "shmbus_throughput: CPU %llu is not allowed here\n", static_cast<unsigned long long>(c));
        return std::nullopt;
      }
      cfg.cpus.push_back(static_cast<int>(c));
    }
  }
  return cfg;
}

void run(const Config& cfg) {
  std::printf(
      "shmbus throughput: %llu messages per point, median of %llu rounds (every point once per "
      "round), CPUs",
      static_cast<unsigned long long>(cfg.messages), static_cast<unsigned long long>(cfg.repeat));
  for (int c : cfg.cpus) std::printf(" %d", c);
  std::printf("\n");
  // Every point is a task that runs one repetition. The rounds interleave the
  // points (all once, then all again...), so that a host that moves the
  // virtual CPUs, or other work that comes and goes, hits every point alike.
  std::vector<std::function<void(Point&)>> tasks;
  std::uint64_t serial = 0;
  const std::uint64_t quarter = std::max<std::uint64_t>(cfg.messages / 4, 1000);
  auto shmbus_task = [&](ShmbusSpec s) {
    tasks.push_back([&cfg, &serial, s](Point& pt) { run_shmbus(cfg, s, serial, pt); });
  };
  if (wanted(cfg, "spsc")) {
    for (SpscMode m : {SpscMode::one_at_a_time, SpscMode::batch}) {
      tasks.push_back([&cfg, m](Point& pt) { run_spsc(cfg, 64, m, pt); });
    }
  }
  if (wanted(cfg, "pubsub")) {
    for (std::uint64_t p : cfg.publishers) {
      for (ReadMode m : {ReadMode::poll, ReadMode::read_batch}) {
        shmbus_task({.scenario = "pubsub", .publishers = p, .read = m, .messages = cfg.messages});
      }
      for (ReadMode m : {ReadMode::read_batch, ReadMode::read_batch_backoff}) {  // batching on both sides
        shmbus_task({.scenario = "pubsub",
                     .publishers = p,
                     .read = m,
                     .write = PubMode::claim_batch,
                     .messages = cfg.messages});
      }
      shmbus_task({.scenario = "pubsub",
                   .publishers = p,
                   .read = ReadMode::read_batch,
                   .write = PubMode::publish_batch,
                   .messages = cfg.messages});
    }
  }
  if (wanted(cfg, "mc")) {
    for (std::uint64_t p : cfg.publishers) {
      for (bool bulk : {false, true}) tasks.push_back([&cfg, p, bulk](Point& pt) { run_mc(cfg, p, bulk, pt); });
    }
  }
  if (wanted(cfg, "sizes")) {
    for (std::uint64_t size : cfg.sizes) {
      shmbus_task({.scenario = "sizes", .size = size, .messages = size > 1024 ? quarter : cfg.messages});
    }
  }
  if (wanted(cfg, "fanout")) {
    for (Policy pol : {Policy::drop_oldest, Policy::block}) {
      for (std::uint64_t n : cfg.subscribers) {
        shmbus_task({.scenario = "fanout", .readers = n, .policy = pol, .messages = quarter});
      }
    }
  }
  if (wanted(cfg, "group")) {
    for (std::uint64_t c : cfg.consumers) {
      for (AckMode m : {AckMode::single, AckMode::batch}) {
        for (std::uint64_t k : cfg.keys) {
          // Unordered and per_key side by side on the same stream of keys.
          // The batch APIs are fed by a batching publisher: one publishing
          // one message at a time would bound the figure, not the group.
          for (auto o : {shmbus::GroupOrdering::none, shmbus::GroupOrdering::per_key}) {
            shmbus_task({.scenario = "group",
                         .readers = c,
                         .group = true,
                         .write = m == AckMode::batch ? PubMode::publish_batch : PubMode::publish,
                         .ack = m,
                         .ordering = o,
                         .keys = k,
                         .messages = quarter});
          }
        }
      }
    }
  }
  std::vector<Point> points(tasks.size());
  for (std::uint64_t r = 0; r < cfg.repeat; ++r) {
    if (cfg.repeat > 1)
      std::printf("round %llu of %llu\n", static_cast<unsigned long long>(r + 1),
                  static_cast<unsigned long long>(cfg.repeat));
    std::fflush(stdout);
    for (std::size_t i = 0; i < tasks.size(); ++i) tasks[i](points[i]);
  }
  for (const Point& p : points) print_point(p);
  if (!cfg.json.empty()) {
    nlohmann::ordered_json out;
    out["program"] = "throughput";
    out["host"] = bu::host_info();
    out["config"] = {{"messages", cfg.messages}, {"repeat", cfg.repeat},     {"cpus", cfg.cpus},
                     {"capacity", kCapacity},    {"read_batch", kReadBatch}, {"group_batch", kGroupBatch}};
    out["points"] = nlohmann::ordered_json::array();
    for (const Point& p : points) out["points"].push_back(point_json(p));
    bu::write_json(cfg.json, out);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return shmbus::benchutil::bench_main(argc, argv, "shmbus_throughput", "throughput", parse, usage, run);
}
