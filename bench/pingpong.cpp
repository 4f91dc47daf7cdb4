// Cross-process ping-pong latency: shmbus against the floor and the usual
// alternatives, all measured in the same run.
//
// Two processes (the parent "pinger" A and a forked "ponger" B), pinned to two
// CPUs. Each round trip: A writes the round number into its message, stamps
// CLOCK_MONOTONIC, sends, waits for the echo, stamps again; the difference is
// one sample, recorded into a log-linear histogram (bench/histogram.hpp).
// The echo's round number is checked. Transports (--transports, default all):
//
//   floor         one 64-byte cache line in a MAP_SHARED mapping: A writes
//                 2i+1, B waits for it and writes 2i+2, A waits for that. Two
//                 cache-line transfers per round trip: nothing can beat it.
//   floor_copy    the floor plus the payload: A copies its message into a
//                 shared buffer, B copies it out and into a second shared
//                 buffer, A copies that out. What any copying shared-memory
//                 transport must at least do for the size.
//   spsc_ring     a minimal single-producer single-consumer ring per
//                 direction (bench_util.hpp: cached index of the other side,
//                 slots of length + payload, 64-byte multiples, as in the
//                 throughput baseline), push then pop (copy-out) in a
//                 busy-spin loop: what a minimal copying ring costs, with no
//                 protocol beyond the two indices.
//   shmbus_spin   two shmbus channels, "ping" (A -> B) and "pong" (B -> A);
//                 publish, then poll (copy-out) in a busy-spin loop.
//   shmbus_block  the same with WaitStrategy::block subscribers: poll, then
//                 Subscriber::wait() (spins a while, then sleeps on the
//                 channel's futex).
//   shmbus_archived  shmbus_spin on channels with a disk archive, each
//                 followed by an archiver (fsync never) in a third process
//                 that polls both every 100 us: what an attached archiver
//                 costs the live path.
//   eventfd       two eventfds, blocking read(): a kernel wake-up with no
//                 payload, the yardstick for a sleeping subscriber.
//   pipe          two pipes, blocking read()/write() of the whole message.
//   unix          a socketpair(AF_UNIX, SOCK_STREAM), blocking.
//   posix_mq      two POSIX message queues (mq_send / mq_receive).
//   boost_mq      two Boost.Interprocess message_queues (send / receive).
//   zmq           ZeroMQ PAIR sockets over ipc:// (each process its own context).
//   mc_queue      moodycamel::ConcurrentQueue between two threads of process A
//                 (no process boundary), try_dequeue in a busy-spin loop; the
//                 payload is copied in and out of a buffer pool as shmbus does.
//   mc_blocking   moodycamel::BlockingConcurrentQueue, wait_dequeue.
//
// Method: every transport gets --warmup untimed round trips, then the timed
// rounds run in --blocks interleaved blocks (floor, floor_copy, shmbus, ...,
// floor, ...), each block led by 100 untimed round trips, so that a host that
// moves the virtual CPUs mid-run hits every transport alike. Each sample
// includes one clock_gettime pair; its cost is measured and shown. "paired"
// is the median over blocks of (block p50 / the floor's block p50 with the
// same index): blocks with the same index ran back to back; "p/spsc" is
// the same against spsc_ring's blocks, where it ran. Voluntary
// context switches per round trip (each side's thread) tell which path was
// measured: ~0 means nobody slept, ~1 means one side slept every time.
// --gap-us N pauses (untimed) before each round trip, so blocking waiters
// fall asleep: the sleeping path of shmbus_block against eventfd.
//
// Channels use the `block` policy (the default and lossless one), so the
// numbers include what a reliable request/response pays: the gate check, the
// reader's seq_cst cursor store and its check for sleeping publishers.
//
//   shmbus_pingpong [--rounds N] [--warmup N] [--sizes 8,64,...] [--transports a,b|all]
//                   [--gap-us N] [--policy block|drop_oldest] [--cpus A,B]
//                   [--timestamps tsc|realtime|none]
//                   [--blocks K] [--json FILE]
#include <shmbus/archive.hpp>
#include <shmbus/shmbus.hpp>
#include "shm/tsc_clock.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>
#include <nlohmann/json.hpp>
#include <zmq.h>

#include <fcntl.h>
#include <mqueue.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.hpp"

namespace {

namespace bu = shmbus::benchutil;
namespace bip = boost::interprocess;
using bu::cpu_relax;
using bu::die;
using bu::die_errno;
using bu::Histogram;
using bu::now_ns;
using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::Message;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;

constexpr std::uint64_t kSpinCheckMask = (1u << 22) - 1;  // spins between liveness checks
constexpr std::uint64_t kPeerTimeoutNs = 10'000'000'000ULL;
constexpr std::uint64_t kLeadIn = 100;  // untimed round trips before each timed block
constexpr std::size_t kPoolSlots = 16;  // moodycamel payload buffers per direction

// --- transports --------------------------------------------------------------------

enum class Kind : int {
  floor,
  floor_copy,
  spsc_ring,
  shmbus_spin,
  shmbus_block,
  shmbus_archived,
  eventfd,
  pipe,
  unix_socket,
  posix_mq,
  boost_mq,
  zmq,
  mc_queue,
  mc_blocking,
};
constexpr int kKinds = 14;

struct KindInfo {
  Kind kind;
  const char* name;
  bool thread;  ///< runs between two threads of process A (no process boundary)
};
constexpr std::array<KindInfo, kKinds> kInfo{{
    {Kind::floor, "floor", false},
    {Kind::floor_copy, "floor_copy", false},
    {Kind::spsc_ring, "spsc_ring", false},
    {Kind::shmbus_spin, "shmbus_spin", false},
    {Kind::shmbus_block, "shmbus_block", false},
    {Kind::shmbus_archived, "shmbus_archived", false},
    {Kind::eventfd, "eventfd", false},
    {Kind::pipe, "pipe", false},
    {Kind::unix_socket, "unix", false},
    {Kind::posix_mq, "posix_mq", false},
    {Kind::boost_mq, "boost_mq", false},
    {Kind::zmq, "zmq", false},
    {Kind::mc_queue, "mc_queue", true},
    {Kind::mc_blocking, "mc_blocking", true},
}};
const KindInfo& info(Kind k) { return kInfo[static_cast<std::size_t>(k)]; }

std::optional<Kind> parse_kind(std::string_view s) {
  for (const KindInfo& i : kInfo) {
    if (s == i.name) return i.kind;
  }
  return std::nullopt;
}

struct Config {
  std::uint64_t rounds = 100'000;
  std::uint64_t warmup = 10'000;
  std::uint64_t blocks = 10;  ///< interleaved blocks per transport
  std::vector<std::uint64_t> sizes{64};
  std::vector<Kind> kinds;   ///< floor always first
  std::uint64_t gap_ns = 0;  ///< untimed pause before each round trip
  Policy policy = Policy::block;
  shmbus::TimestampSource timestamps = shmbus::TimestampSource::tsc;  ///< the channels' default
  std::array<int, 2> cpus{-1, -1};                                    ///< -1: the first two CPUs we may run on
  std::string json;
  std::string bus;
};

/// Set by SIGINT / SIGTERM (g_interrupted too) and by SIGCHLD while a run
/// is on (a ponger that died): blocking calls see EINTR, spins check it.
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_signal(int) {
  g_interrupted = 1;
  g_stop = 1;
}
extern "C" void on_child(int) { g_stop = 1; }

/// Gives up a spin that lasts too long (a dead or stuck peer, or a signal).
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

/// A blocking call interrupted by a signal retries unless we are stopping.
void check_eintr(const char* what) {
  if (errno != EINTR || g_stop != 0) die_errno(what);
}

void write_full(int fd, const std::byte* p, std::size_t n, const char* what) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      check_eintr(what);
      continue;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void read_full(int fd, std::byte* p, std::size_t n, const char* what) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      check_eintr(what);
      continue;
    }
    if (r == 0) die(std::string(what) + ": the peer closed");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// The floor's cache line, on its own 128-byte slot (adjacent-line prefetch).
struct alignas(128) FloorLine {
  std::atomic<std::uint64_t> ball;
  std::uint8_t pad[120];
};
static_assert(sizeof(FloorLine) == 128);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

/// Spins until the line holds `value` (the peer's turn is over); dies with
/// `stalled` if the peer stops. Always inlined: it is the measured wait itself.
[[gnu::always_inline]] inline void await_ball(const FloorLine* line, std::uint64_t value, const char* stalled) {
  SpinGuard guard;
  // SYNC(ball) / SYNC(copy-flag): acquire, pairs with the peer's release store of `value`.
  while (line->ball.load(std::memory_order_acquire) != value) {
    cpu_relax();
    if (guard.expired()) die(stalled);
  }
}

/// Everything made before fork that both processes share.
struct Shared {
  FloorLine* line = nullptr;       ///< floor
  FloorLine* copy_line = nullptr;  ///< floor_copy's flag
  std::byte* copy_ping = nullptr;  ///< floor_copy's buffers (size bytes each)
  std::byte* copy_pong = nullptr;
  bu::SpscHeader* spsc_ping = nullptr;  ///< spsc_ring's rings (A -> B, B -> A)
  bu::SpscHeader* spsc_pong = nullptr;
  bu::SpscGeometry spsc_geo{1, 0};
  int efd_ping = -1, efd_pong = -1;
  int pipe_ping[2] = {-1, -1}, pipe_pong[2] = {-1, -1};
  int sock[2] = {-1, -1};
  mqd_t mq_ping = -1, mq_pong = -1;
  std::string mq_ping_name, mq_pong_name;
  std::string bmq_ping_name, bmq_pong_name;
  std::string zmq_endpoint;
  std::string archive_dir;                        ///< shmbus_archived's archives (removed afterwards)
  pid_t archiver = -1;                            ///< shmbus_archived's archiver process
  int ctl_go[2] = {-1, -1};                       ///< A -> B: a thread block is over, continue
  int ctl_ready[2] = {-1, -1};                    ///< B -> A: continuing
  std::array<std::string, kKinds> unavailable{};  ///< why a transport cannot run at this size
};

/// The pinger's and ponger's message buffers.
struct Buffers {
  std::vector<std::byte> out, in;
  explicit Buffers(std::size_t size) : out(size), in(size) {}
  void prepare(std::uint64_t round) noexcept { std::memcpy(out.data(), &round, sizeof round); }
  void check(std::uint64_t round, std::size_t got, const char* what) const {
    std::uint64_t echoed = 0;
    if (got != in.size()) {
      die(std::string(what) + ": echo of " + std::to_string(got) + " bytes, expected " + std::to_string(in.size()));
    }
    std::memcpy(&echoed, in.data(), sizeof echoed);
    if (echoed != round) {
      die(std::string(what) + ": echo of round " + std::to_string(echoed) + ", expected " + std::to_string(round));
    }
  }
};

// floor -------------------------------------------------------------------------------

struct FloorT {
  static constexpr bool kChecks = false;
  FloorLine* line;
  std::uint64_t next = 0;  ///< both sides count the same sequence of values

  std::size_t exchange(Buffers&) {
    const std::uint64_t serve = ++next;  // odd: A's serve
    const std::uint64_t want = ++next;   // even: B's return
    // SYNC(ball): release / acquire pair with the ponger; the value is all we share.
    line->ball.store(serve, std::memory_order_release);
    await_ball(line, want, "floor: the peer stopped answering");
    return 0;  // nothing to check: the value was the message
  }
  void echo(std::vector<std::byte>&) {
    const std::uint64_t serve = ++next;
    const std::uint64_t back = ++next;
    await_ball(line, serve, "floor (ponger): the peer stopped serving");
    line->ball.store(back, std::memory_order_release);
  }
};

struct FloorCopyT {
  static constexpr bool kChecks = true;
  FloorLine* line;
  std::byte* ping;
  std::byte* pong;
  std::uint64_t next = 0;

  std::size_t exchange(Buffers& b) {
    const std::uint64_t serve = ++next;
    const std::uint64_t want = ++next;
    std::memcpy(ping, b.out.data(), b.out.size());
    // SYNC(copy-flag): release publishes the buffer; pairs with the ponger's acquire.
    line->ball.store(serve, std::memory_order_release);
    await_ball(line, want, "floor_copy: the peer stopped answering");
    std::memcpy(b.in.data(), pong, b.in.size());
    return b.in.size();
  }
  void echo(std::vector<std::byte>& buf) {
    const std::uint64_t serve = ++next;
    const std::uint64_t back = ++next;
    await_ball(line, serve, "floor_copy (ponger): the peer stopped serving");
    std::memcpy(buf.data(), ping, buf.size());
    std::memcpy(pong, buf.data(), buf.size());
    line->ball.store(back, std::memory_order_release);
  }
};

// shmbus ------------------------------------------------------------------------------

struct ShmbusT {
  static constexpr bool kChecks = true;
  Channel in_ch, out_ch;
  shmbus::Subscriber in;
  shmbus::Publisher out;
  bool blocking = false;
  const char* name = "shmbus";

  /// Opens both channels in this process (real multi-process use) and attaches.
  void open(const std::string& bus, const std::string& in_name, const std::string& out_name, bool block,
            const char* label = nullptr) {
    blocking = block;
    name = label != nullptr ? label : block ? "shmbus_block" : "shmbus_spin";
    auto ic = Channel::open(in_name, bus);
    if (!ic) die("open " + in_name + ": " + ic.error().message());
    auto oc = Channel::open(out_name, bus);
    if (!oc) die("open " + out_name + ": " + oc.error().message());
    in_ch = std::move(ic.value());
    out_ch = std::move(oc.value());
    shmbus::SubscribeOptions so;
    so.start = shmbus::StartAt::earliest();
    so.wait = block ? shmbus::WaitStrategy::block : shmbus::WaitStrategy::busy_spin;
    auto sub = in_ch.subscribe(so);
    if (!sub) die("subscribe " + in_name + ": " + sub.error().message());
    in = std::move(sub.value());
    auto pub = out_ch.publisher();
    if (!pub) die("publisher " + out_name + ": " + pub.error().message());
    out = std::move(pub.value());
  }

  std::size_t receive(std::span<std::byte> buf) {
    Message m;
    SpinGuard guard;
    for (;;) {
      const PollStatus st = in.poll(m, buf);
      if (st == PollStatus::ok) return m.payload.size();
      if (st != PollStatus::empty) die(std::string(name) + ": poll: " + std::string(shmbus::to_string(st)));
      if (blocking) {
        const PollStatus w = in.wait(1'000'000'000ULL);
        if (w != PollStatus::ok && w != PollStatus::timeout) {
          die(std::string(name) + ": wait: " + std::string(shmbus::to_string(w)));
        }
        if (g_stop != 0) die("interrupted");
      } else {
        cpu_relax();
      }
      if (guard.expired()) die(std::string(name) + ": the peer stopped answering");
    }
  }
  void send(std::span<const std::byte> p) {
    const PublishStatus st = out.publish(p);
    if (st != PublishStatus::ok) die(std::string(name) + ": publish: " + std::string(shmbus::to_string(st)));
  }
  std::size_t exchange(Buffers& b) {
    send(b.out);
    return receive(b.in);
  }
  void echo(std::vector<std::byte>& buf) {
    const std::size_t n = receive(buf);
    send(std::span<const std::byte>(buf.data(), n));
  }
};

// kernel transports -------------------------------------------------------------------

/// exchange() of a transport of whole messages, T::send(p, n) and
/// T::receive(p, capacity) -> bytes received: the pinger's message out, the
/// echo in. Always inlined: it is the measured round trip itself.
template <class T>
[[gnu::always_inline]] inline std::size_t send_then_receive(T& t, Buffers& b) {
  t.send(b.out.data(), b.out.size());
  return t.receive(b.in.data(), b.in.size());
}

/// echo() of such a transport: a message in, the same bytes back.
template <class T>
[[gnu::always_inline]] inline void receive_then_send(T& t, std::vector<std::byte>& buf) {
  const std::size_t n = t.receive(buf.data(), buf.size());
  t.send(buf.data(), n);
}

/// spsc_ring: one bench_util ring per direction, between the two processes.
struct SpscT {
  static constexpr bool kChecks = true;
  bu::SpscProducer tx;
  bu::SpscConsumer rx;
  const char* what = "spsc_ring";

  void send(const std::byte* p, std::size_t n) {
    SpinGuard guard;
    while (!tx.has_space()) {  // never, with one message in flight; checked as any ring must
      cpu_relax();
      if (guard.expired()) die(std::string(what) + ": the ring stays full");
    }
    tx.push(p, n);
  }
  std::size_t receive(std::byte* p, std::size_t n) {
    SpinGuard guard;
    std::size_t len = 0;
    while (!rx.pop(p, n, len)) {
      cpu_relax();
      if (guard.expired()) die(std::string(what) + ": the peer stopped answering");
    }
    return len;
  }
  std::size_t exchange(Buffers& b) { return send_then_receive(*this, b); }
  void echo(std::vector<std::byte>& buf) { receive_then_send(*this, buf); }
};

struct EventfdT {
  static constexpr bool kChecks = false;
  int tx = -1, rx = -1;
  void signal() {
    const std::uint64_t one = 1;
    while (::write(tx, &one, sizeof one) != sizeof one) check_eintr("eventfd write");
  }
  void await() {
    std::uint64_t v = 0;
    while (::read(rx, &v, sizeof v) != sizeof v) check_eintr("eventfd read");
  }
  std::size_t exchange(Buffers&) {
    signal();
    await();
    return 0;  // a wake-up, no payload
  }
  void echo(std::vector<std::byte>&) {
    await();
    signal();
  }
};

/// pipe and unix socket: whole messages over a byte stream.
struct StreamT {
  static constexpr bool kChecks = true;
  int tx = -1, rx = -1;
  const char* what = "stream";
  std::size_t exchange(Buffers& b) {
    write_full(tx, b.out.data(), b.out.size(), what);
    read_full(rx, b.in.data(), b.in.size(), what);
    return b.in.size();
  }
  void echo(std::vector<std::byte>& buf) {
    read_full(rx, buf.data(), buf.size(), what);
    write_full(tx, buf.data(), buf.size(), what);
  }
};

struct PosixMqT {
  static constexpr bool kChecks = true;
  mqd_t tx = -1, rx = -1;
  void send(const std::byte* p, std::size_t n) {
    while (::mq_send(tx, reinterpret_cast<const char*>(p), n, 0) != 0) check_eintr("mq_send");
  }
  std::size_t receive(std::byte* p, std::size_t n) {
    for (;;) {
      const ssize_t r = ::mq_receive(rx, reinterpret_cast<char*>(p), n, nullptr);
      if (r >= 0) return static_cast<std::size_t>(r);
      check_eintr("mq_receive");
    }
  }
  std::size_t exchange(Buffers& b) { return send_then_receive(*this, b); }
  void echo(std::vector<std::byte>& buf) { receive_then_send(*this, buf); }
};

struct BoostMqT {
  static constexpr bool kChecks = true;
  std::unique_ptr<bip::message_queue> tx, rx;
  void open(const std::string& tx_name, const std::string& rx_name) {
    try {
      tx = std::make_unique<bip::message_queue>(bip::open_only, tx_name.c_str());
      rx = std::make_unique<bip::message_queue>(bip::open_only, rx_name.c_str());
    } catch (const std::exception& e) {
      die(std::string("boost message_queue open: ") + e.what());
    }
  }
  std::size_t receive(std::byte* p, std::size_t n) {
    bip::message_queue::size_type got = 0;
    unsigned prio = 0;
    SpinGuard guard;
    for (;;) {
      // Timed, so that a dead peer or a signal cannot hang us forever.
      const auto deadline = boost::posix_time::microsec_clock::universal_time() + boost::posix_time::seconds(1);
      if (rx->timed_receive(p, n, got, prio, deadline)) return got;
      if (g_stop != 0) die("boost_mq: interrupted");
      guard.spins = kSpinCheckMask;  // every timeout counts towards the peer timeout
      if (guard.expired()) die("boost_mq: the peer stopped answering");
    }
  }
  void send(const std::byte* p, std::size_t n) { tx->send(p, n, 0); }
  std::size_t exchange(Buffers& b) { return send_then_receive(*this, b); }
  void echo(std::vector<std::byte>& buf) { receive_then_send(*this, buf); }
};

struct ZmqT {
  static constexpr bool kChecks = true;
  void* ctx = nullptr;
  void* sock = nullptr;
  ZmqT() = default;
  ZmqT(const ZmqT&) = delete;
  ZmqT& operator=(const ZmqT&) = delete;
  ~ZmqT() {
    if (sock != nullptr) ::zmq_close(sock);
    if (ctx != nullptr) ::zmq_ctx_term(ctx);
  }
  void open(const std::string& endpoint, bool bind) {
    ctx = ::zmq_ctx_new();
    if (ctx == nullptr) die(std::string("zmq_ctx_new: ") + ::zmq_strerror(::zmq_errno()));
    sock = ::zmq_socket(ctx, ZMQ_PAIR);
    if (sock == nullptr) die(std::string("zmq_socket: ") + ::zmq_strerror(::zmq_errno()));
    const int linger = 0;
    ::zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    const int timeout_ms = 1000;  // a dead peer or a signal cannot hang us forever
    ::zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    const int rc = bind ? ::zmq_bind(sock, endpoint.c_str()) : ::zmq_connect(sock, endpoint.c_str());
    if (rc != 0)
      die("zmq " + std::string(bind ? "bind " : "connect ") + endpoint + ": " + ::zmq_strerror(::zmq_errno()));
  }
  void send(const std::byte* p, std::size_t n) {
    while (::zmq_send(sock, p, n, 0) < 0) {
      if (::zmq_errno() != EINTR || g_stop != 0) die(std::string("zmq_send: ") + ::zmq_strerror(::zmq_errno()));
    }
  }
  std::size_t receive(std::byte* p, std::size_t n) {
    SpinGuard guard;
    for (;;) {
      const int r = ::zmq_recv(sock, p, n, 0);
      if (r >= 0) return static_cast<std::size_t>(r);
      const int e = ::zmq_errno();
      if ((e != EINTR && e != EAGAIN) || g_stop != 0) die(std::string("zmq_recv: ") + ::zmq_strerror(e));
      if (e == EAGAIN) {
        guard.spins = kSpinCheckMask;
        if (guard.expired()) die("zmq: the peer stopped answering");
      }
    }
  }
  std::size_t exchange(Buffers& b) { return send_then_receive(*this, b); }
  void echo(std::vector<std::byte>& buf) { receive_then_send(*this, buf); }
};

// moodycamel, between two threads of process A -------------------------------------

struct Token {
  std::uint64_t slot = 0;
  std::uint64_t length = 0;
};

/// Both directions of one moodycamel queue kind, with the payload pools.
template <class Q>
struct McPair {
  Q ping{64}, pong{64};
  std::vector<std::byte> ping_pool, pong_pool;
  std::size_t size;
  explicit McPair(std::size_t sz) : ping_pool(sz * kPoolSlots), pong_pool(sz * kPoolSlots), size(sz) {}

  static Token take(Q& q, const char* what) {
    Token t;
    SpinGuard guard;
    if constexpr (std::is_same_v<Q, moodycamel::BlockingConcurrentQueue<Token>>) {
      while (!q.wait_dequeue_timed(t, std::int64_t{1'000'000})) {
        guard.spins = kSpinCheckMask;
        if (guard.expired()) die(std::string(what) + ": the peer stopped answering");
      }
    } else {
      while (!q.try_dequeue(t)) {
        cpu_relax();
        if (guard.expired()) die(std::string(what) + ": the peer stopped answering");
      }
    }
    return t;
  }
};

template <class Q>
struct McPinger {
  static constexpr bool kChecks = true;
  McPair<Q>& p;
  const char* what;
  std::uint64_t slot = 0;
  std::size_t exchange(Buffers& b) {
    const std::uint64_t s = slot++ % kPoolSlots;
    std::memcpy(p.ping_pool.data() + s * p.size, b.out.data(), b.out.size());
    if (!p.ping.enqueue(Token{s, b.out.size()})) die(std::string(what) + ": enqueue");
    const Token t = McPair<Q>::take(p.pong, what);
    std::memcpy(b.in.data(), p.pong_pool.data() + t.slot * p.size, t.length);
    return t.length;
  }
};

template <class Q>
void mc_echo(McPair<Q>& p, std::vector<std::byte>& buf, const char* what) {
  const Token t = McPair<Q>::take(p.ping, what);
  std::memcpy(buf.data(), p.ping_pool.data() + t.slot * p.size, t.length);
  std::memcpy(p.pong_pool.data() + t.slot * p.size, buf.data(), t.length);
  if (!p.pong.enqueue(t)) die(std::string(what) + ": enqueue");
}

// --- the schedule ------------------------------------------------------------------

/// Both processes (and the echo thread) follow the same deterministic list.
struct Step {
  Kind kind;
  std::uint64_t untimed;
  std::uint64_t timed;
};

std::vector<Step> schedule(const Config& cfg, const std::vector<Kind>& kinds) {
  std::vector<Step> s;
  for (Kind k : kinds) s.push_back({k, cfg.warmup, 0});
  for (std::uint64_t b = 0; b < cfg.blocks; ++b) {
    const std::uint64_t n = cfg.rounds / cfg.blocks + (b < cfg.rounds % cfg.blocks ? 1 : 0);
    for (Kind k : kinds) s.push_back({k, kLeadIn, n});
  }
  return s;
}

/// Per-transport tallies of context switches (timed rounds only).
struct Switches {
  std::array<std::uint64_t, kKinds> voluntary{};
  std::array<std::uint64_t, kKinds> involuntary{};

  /// Runs `block` (the timed rounds of transport k) and adds the calling
  /// thread's context switches during it to k's tallies.
  template <class Block>
  void count(int k, Block&& block) {
    const std::uint64_t v0 = bu::voluntary_switches(), i0 = bu::involuntary_switches();
    block();
    voluntary[k] += bu::voluntary_switches() - v0;
    involuntary[k] += bu::involuntary_switches() - i0;
  }
};

/// The ponger's report at the end.
struct PongReport {
  Switches sw;
  std::int32_t cpu = -1;
  std::int32_t ok = 0;
};

/// What the echo thread (moodycamel) is told before each block.
struct ThreadOrder {
  std::int32_t kind = -1;  ///< -1: exit
  std::uint64_t untimed = 0;
  std::uint64_t timed = 0;
};

// --- one size: setup, fork, run, collect ---------------------------------------------

struct SizeResult {
  std::size_t size = 0;
  std::vector<Kind> kinds;
  std::array<Histogram, kKinds> hist;
  /// p50 and p99 of each timed block, in schedule order: blocks of different
  /// transports with the same index ran back to back, so their ratio is
  /// paired (immune to the host moving the CPUs between blocks).
  std::array<std::vector<std::uint64_t>, kKinds> block_p50, block_p99;
  Switches a_sw, b_sw;
  std::array<std::string, kKinds> unavailable{};
  int a_cpu = -1, b_cpu = -1;
  double seconds = 0;
};

std::string channel_name(const char* stem, bool block) { return std::string(stem) + (block ? "-block" : "-spin"); }
/// shmbus_archived's channels.
std::string archived_name(const char* stem) { return std::string(stem) + "-arc"; }

volatile std::sig_atomic_t g_archiver_stop = 0;
extern "C" void on_archiver_term(int) { g_archiver_stop = 1; }

/// shmbus_archived's third process: an archiver for each channel, both
/// polled every 100 us (a reader that backs off when idle, as `shmbus
/// archive run` with a backoff wait does), until SIGTERM. Never returns.
[[noreturn]] void run_archivers(const std::string& bus) {
  ::signal(SIGTERM, on_archiver_term);
  int rc = 0;
  {
    std::vector<shmbus::Archiver> arcs;
    for (const char* n : {"ping", "pong"}) {
      auto ch = Channel::open(archived_name(n), bus);
      if (!ch) ::_exit(1);
      shmbus::ArchiverOptions ao;
      ao.fsync = shmbus::ArchiveFsync::never;
      auto a = shmbus::Archiver::open(ch.value(), ao);
      if (!a) {
        std::fprintf(stderr, "archiver: %s\n", a.error().message().c_str());
        ::_exit(1);
      }
      arcs.push_back(std::move(a.value()));
    }
    while (g_archiver_stop == 0 && rc == 0) {
      std::size_t n = 0;
      for (auto& a : arcs) {
        auto r = a.poll_once();
        if (!r) rc = 1;
        n += r ? r.value() : 0;
      }
      if (n == 0) ::usleep(100);
    }
  }
  ::_exit(rc);
}

/// Removes every named object of one size's run on every exit path.
class Cleanup {
 public:
  explicit Cleanup(const Config& cfg, Shared& sh) : cfg_(cfg), sh_(sh) {}
  ~Cleanup() {
    if (sh_.archiver > 0) {
      ::kill(sh_.archiver, SIGTERM);
      int status = 0;
      ::waitpid(sh_.archiver, &status, 0);
    }
    for (bool block : {false, true}) {
      for (const char* n : {"ping", "pong"}) (void)Channel::remove(channel_name(n, block), cfg_.bus);
    }
    for (const char* n : {"ping", "pong"}) (void)Channel::remove(archived_name(n), cfg_.bus);
    if (!sh_.archive_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(sh_.archive_dir, ec);
    }
    if (!sh_.mq_ping_name.empty()) ::mq_unlink(sh_.mq_ping_name.c_str());
    if (!sh_.mq_pong_name.empty()) ::mq_unlink(sh_.mq_pong_name.c_str());
    if (!sh_.bmq_ping_name.empty()) bip::message_queue::remove(sh_.bmq_ping_name.c_str());
    if (!sh_.bmq_pong_name.empty()) bip::message_queue::remove(sh_.bmq_pong_name.c_str());
    if (!sh_.zmq_endpoint.empty()) ::unlink(sh_.zmq_endpoint.substr(6).c_str());  // "ipc://"
  }
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;

 private:
  const Config& cfg_;
  Shared& sh_;
};

bool uses(const std::vector<Kind>& kinds, Kind k) { return std::find(kinds.begin(), kinds.end(), k) != kinds.end(); }

/// Creates the shared objects of one run (before fork). A transport that
/// cannot run at this size (a POSIX mq larger than the system allows) is
/// recorded as unavailable, with the reason, and left out of the run.
void setup_shared(const Config& cfg, std::size_t size, std::vector<Kind>& kinds, Shared& sh) {
  void* mem = bu::map_shared(2 * sizeof(FloorLine) + 2 * size);  // pre-faulted for both processes
  sh.line = new (mem) FloorLine{};
  sh.copy_line = new (static_cast<std::byte*>(mem) + sizeof(FloorLine)) FloorLine{};
  sh.copy_ping = static_cast<std::byte*>(mem) + 2 * sizeof(FloorLine);
  sh.copy_pong = sh.copy_ping + size;

  if (uses(kinds, Kind::spsc_ring)) {
    // As many slots as the shmbus channels get (up to 1024, at most ~16 MiB):
    // the ring is walked as in real use.
    std::uint64_t cap = 1024;
    while (cap > 16 && cap * bu::SpscGeometry(1, size).stride > (16u << 20)) cap /= 2;
    sh.spsc_geo = bu::SpscGeometry(cap, size);
    sh.spsc_ping = static_cast<bu::SpscHeader*>(bu::map_shared(sh.spsc_geo.bytes()));
    sh.spsc_pong = static_cast<bu::SpscHeader*>(bu::map_shared(sh.spsc_geo.bytes()));
  }
  if (uses(kinds, Kind::shmbus_spin) || uses(kinds, Kind::shmbus_block) || uses(kinds, Kind::shmbus_archived)) {
    ChannelOptions o;
    o.slot_size = static_cast<std::uint32_t>((64 + size + 63) / 64 * 64);
    // A ring of up to 1024 slots, at most ~16 MiB: one message is in flight,
    // but the ring is walked as in real use (new slots, not one hot slot).
    std::uint32_t cap = 1024;
    while (cap > 16 && static_cast<std::uint64_t>(cap) * o.slot_size > (16u << 20)) cap /= 2;
    o.capacity = cap;
    o.policy = cfg.policy;
    o.timestamps = cfg.timestamps;
    for (bool block : {false, true}) {
      for (const char* n : {"ping", "pong"}) {
        auto ch = Channel::create(channel_name(n, block), o, cfg.bus);
        if (!ch) die("create " + channel_name(n, block) + ": " + ch.error().message());
      }
    }
    if (uses(kinds, Kind::shmbus_archived)) {
      char tmpl[] = "/var/tmp/shmbus-pingpong-archive-XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) die_errno("mkdtemp");
      sh.archive_dir = tmpl;
      for (const char* n : {"ping", "pong"}) {
        o.archive_dir = sh.archive_dir + "/" + n;
        auto ch = Channel::create(archived_name(n), o, cfg.bus);
        if (!ch) die("create " + archived_name(n) + ": " + ch.error().message());
      }
      sh.archiver = bu::fork_child();
      if (sh.archiver < 0) die_errno("fork");
      if (sh.archiver == 0) run_archivers(cfg.bus);
    }
  }
  if (uses(kinds, Kind::eventfd)) {
    sh.efd_ping = ::eventfd(0, EFD_CLOEXEC);
    sh.efd_pong = ::eventfd(0, EFD_CLOEXEC);
    if (sh.efd_ping < 0 || sh.efd_pong < 0) die_errno("eventfd");
  }
  if (uses(kinds, Kind::pipe)) {
    if (::pipe2(sh.pipe_ping, O_CLOEXEC) != 0 || ::pipe2(sh.pipe_pong, O_CLOEXEC) != 0) die_errno("pipe");
  }
  if (uses(kinds, Kind::unix_socket)) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sh.sock) != 0) die_errno("socketpair");
  }
  const std::string tag = std::to_string(::getpid());
  if (uses(kinds, Kind::posix_mq)) {
    mq_attr attr{};
    attr.mq_maxmsg = 4;
    attr.mq_msgsize = static_cast<long>(size);
    sh.mq_ping_name = "/shmbus-pp-ping-" + tag;
    sh.mq_pong_name = "/shmbus-pp-pong-" + tag;
    sh.mq_ping = ::mq_open(sh.mq_ping_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
    if (sh.mq_ping != static_cast<mqd_t>(-1)) {
      sh.mq_pong = ::mq_open(sh.mq_pong_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
    }
    if (sh.mq_ping == static_cast<mqd_t>(-1) || sh.mq_pong == static_cast<mqd_t>(-1)) {
      sh.unavailable[static_cast<int>(Kind::posix_mq)] = std::string("mq_open with mq_msgsize ") +
                                                         std::to_string(size) + ": " + std::strerror(errno) +
                                                         " (see /proc/sys/fs/mqueue/msgsize_max)";
      kinds.erase(std::remove(kinds.begin(), kinds.end(), Kind::posix_mq), kinds.end());
    }
  }
  if (uses(kinds, Kind::boost_mq)) {
    sh.bmq_ping_name = "shmbus-pp-bping-" + tag;
    sh.bmq_pong_name = "shmbus-pp-bpong-" + tag;
    try {
      bip::message_queue::remove(sh.bmq_ping_name.c_str());
      bip::message_queue::remove(sh.bmq_pong_name.c_str());
      bip::message_queue q1(bip::create_only, sh.bmq_ping_name.c_str(), 4, size);
      bip::message_queue q2(bip::create_only, sh.bmq_pong_name.c_str(), 4, size);
    } catch (const std::exception& e) {
      die(std::string("boost message_queue create: ") + e.what());
    }
  }
  if (uses(kinds, Kind::zmq)) sh.zmq_endpoint = "ipc:///tmp/shmbus-pp-" + tag + ".ipc";
  if (::pipe2(sh.ctl_go, O_CLOEXEC) != 0 || ::pipe2(sh.ctl_ready, O_CLOEXEC) != 0) die_errno("pipe");
}

// --- the loops ---------------------------------------------------------------------

using McQueue = moodycamel::ConcurrentQueue<Token>;
using McBlocking = moodycamel::BlockingConcurrentQueue<Token>;

/// n round trips of one transport on the pinger's side; each timed one is
/// recorded into h (nullptr: untimed) and its echo checked.
template <class T>
void ping_n(T& t, Buffers& b, std::uint64_t n, Histogram* h, std::uint64_t& round, std::uint64_t gap_ns,
            const char* name) {
  for (std::uint64_t i = 0; i < n; ++i) {
    bu::pause_ns(gap_ns);
    b.prepare(++round);
    const std::uint64_t t0 = now_ns();
    const std::size_t got = t.exchange(b);
    const std::uint64_t t1 = now_ns();
    if (h != nullptr) h->record(t1 - t0);
    if constexpr (T::kChecks) b.check(round, got, name);
  }
}

template <class T>
void echo_n(T& t, std::vector<std::byte>& buf, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) t.echo(buf);
}

/// The pinger's side of every transport of one run.
struct PingerSide {
  FloorT floor;
  FloorCopyT floor_copy;
  SpscT spsc;
  ShmbusT spin, block, archived;
  EventfdT efd;
  StreamT pipe, sock;
  PosixMqT mq;
  BoostMqT bmq;
  ZmqT zmq;
  McPair<McQueue>* mcq = nullptr;
  McPair<McBlocking>* mcb = nullptr;

  void run(Kind k, Buffers& b, std::uint64_t n, Histogram* h, std::uint64_t& round, std::uint64_t gap) {
    const char* name = info(k).name;
    switch (k) {
      case Kind::floor: return ping_n(floor, b, n, h, round, gap, name);
      case Kind::floor_copy: return ping_n(floor_copy, b, n, h, round, gap, name);
      case Kind::spsc_ring: return ping_n(spsc, b, n, h, round, gap, name);
      case Kind::shmbus_spin: return ping_n(spin, b, n, h, round, gap, name);
      case Kind::shmbus_block: return ping_n(block, b, n, h, round, gap, name);
      case Kind::shmbus_archived: return ping_n(archived, b, n, h, round, gap, name);
      case Kind::eventfd: return ping_n(efd, b, n, h, round, gap, name);
      case Kind::pipe: return ping_n(pipe, b, n, h, round, gap, name);
      case Kind::unix_socket: return ping_n(sock, b, n, h, round, gap, name);
      case Kind::posix_mq: return ping_n(mq, b, n, h, round, gap, name);
      case Kind::boost_mq: return ping_n(bmq, b, n, h, round, gap, name);
      case Kind::zmq: return ping_n(zmq, b, n, h, round, gap, name);
      case Kind::mc_queue: {
        McPinger<McQueue> p{*mcq, name};
        return ping_n(p, b, n, h, round, gap, name);
      }
      case Kind::mc_blocking: {
        McPinger<McBlocking> p{*mcb, name};
        return ping_n(p, b, n, h, round, gap, name);
      }
    }
  }
};

/// The forked ponger. Never returns (and never unwinds) into the parent's
/// frames, so the parent's cleanup cannot run in it.
[[noreturn]] void run_ponger(const Config& cfg, std::size_t size, const std::vector<Kind>& kinds, Shared& sh,
                             int report_fd, bool pin) {
  ::signal(SIGTERM, SIG_DFL);  // bu::fork_child reset SIGINT and set the parent-death signal
  ::signal(SIGCHLD, SIG_DFL);
  try {
    PongReport rep;
    if (pin && bu::pin_to(cfg.cpus[1])) rep.cpu = cfg.cpus[1];
    std::vector<std::byte> buf(size);
    FloorT floor{sh.line};
    FloorCopyT floor_copy{sh.copy_line, sh.copy_ping, sh.copy_pong};
    SpscT spsc{{sh.spsc_pong, sh.spsc_geo}, {sh.spsc_ping, sh.spsc_geo}, "spsc_ring (ponger)"};
    ShmbusT spin, block, archived;
    if (uses(kinds, Kind::shmbus_spin))
      spin.open(cfg.bus, channel_name("ping", false), channel_name("pong", false), false);
    if (uses(kinds, Kind::shmbus_block))
      block.open(cfg.bus, channel_name("ping", true), channel_name("pong", true), true);
    if (uses(kinds, Kind::shmbus_archived))
      archived.open(cfg.bus, archived_name("ping"), archived_name("pong"), false, "shmbus_archived");
    EventfdT efd{sh.efd_pong, sh.efd_ping};
    StreamT pipe{sh.pipe_pong[1], sh.pipe_ping[0], "pipe (ponger)"};
    StreamT sock{sh.sock[1], sh.sock[1], "unix (ponger)"};
    PosixMqT mq{sh.mq_pong, sh.mq_ping};
    BoostMqT bmq;
    if (uses(kinds, Kind::boost_mq)) bmq.open(sh.bmq_pong_name, sh.bmq_ping_name);
    ZmqT zmq;
    if (uses(kinds, Kind::zmq)) zmq.open(sh.zmq_endpoint, true);
    // Attached: tell the pinger, which only then sends its first ping.
    char c = 1;
    if (::write(report_fd, &c, 1) != 1) ::_exit(1);

    auto echo = [&](Kind k, std::uint64_t n) {
      switch (k) {
        case Kind::floor: return echo_n(floor, buf, n);
        case Kind::floor_copy: return echo_n(floor_copy, buf, n);
        case Kind::spsc_ring: return echo_n(spsc, buf, n);
        case Kind::shmbus_spin: return echo_n(spin, buf, n);
        case Kind::shmbus_block: return echo_n(block, buf, n);
        case Kind::shmbus_archived: return echo_n(archived, buf, n);
        case Kind::eventfd: return echo_n(efd, buf, n);
        case Kind::pipe: return echo_n(pipe, buf, n);
        case Kind::unix_socket: return echo_n(sock, buf, n);
        case Kind::posix_mq: return echo_n(mq, buf, n);
        case Kind::boost_mq: return echo_n(bmq, buf, n);
        case Kind::zmq: return echo_n(zmq, buf, n);
        case Kind::mc_queue:
        case Kind::mc_blocking: return;  // threads of the pinger's process
      }
    };
    for (const Step& st : schedule(cfg, kinds)) {
      if (info(st.kind).thread) {
        // Asleep while two threads of A run this block; A wakes us after it.
        read_full(sh.ctl_go[0], reinterpret_cast<std::byte*>(&c), 1, "control pipe");
        write_full(sh.ctl_ready[1], reinterpret_cast<const std::byte*>(&c), 1, "control pipe");
        continue;
      }
      echo(st.kind, st.untimed);
      rep.sw.count(static_cast<int>(st.kind), [&] { echo(st.kind, st.timed); });
    }
    rep.ok = 1;
    write_full(report_fd, reinterpret_cast<const std::byte*>(&rep), sizeof rep, "report pipe");
    ::_exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus_pingpong (ponger): %s\n", e.what());
  } catch (...) {
  }
  ::_exit(1);
}

/// The moodycamel echo side: a thread of the pinger's process pinned to the
/// ponger's CPU, sleeping on a pipe between its blocks.
struct EchoThread {
  int orders[2] = {-1, -1};
  std::thread thread;
  Switches sw;
  std::string error;

  void start(McPair<McQueue>* mcq, McPair<McBlocking>* mcb, std::size_t size, int cpu) {
    if (::pipe2(orders, O_CLOEXEC) != 0) die_errno("pipe");
    // Signals stay with the main thread (its blocking calls must see EINTR).
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &old);
    thread = std::thread([this, mcq, mcb, size, cpu] {
      try {
        if (cpu >= 0) bu::pin_to(cpu);
        std::vector<std::byte> buf(size);
        for (;;) {
          ThreadOrder o;
          read_full(orders[0], reinterpret_cast<std::byte*>(&o), sizeof o, "echo thread orders");
          if (o.kind < 0) return;
          const Kind k = static_cast<Kind>(o.kind);
          auto echo = [&](std::uint64_t n) {
            for (std::uint64_t i = 0; i < n; ++i) {
              if (k == Kind::mc_queue) {
                mc_echo(*mcq, buf, "mc_queue (echo)");
              } else {
                mc_echo(*mcb, buf, "mc_blocking (echo)");
              }
            }
          };
          echo(o.untimed);
          sw.count(o.kind, [&] { echo(o.timed); });
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  void order(Kind k, std::uint64_t untimed, std::uint64_t timed) {
    const ThreadOrder o{static_cast<std::int32_t>(k), untimed, timed};
    write_full(orders[1], reinterpret_cast<const std::byte*>(&o), sizeof o, "echo thread orders");
  }
  void stop() {
    if (!thread.joinable()) return;
    const ThreadOrder o{};
    (void)::write(orders[1], &o, sizeof o);  // best effort: it may be mid-block and time out
    thread.join();
    ::close(orders[0]);
    ::close(orders[1]);
  }
};

SizeResult run_size(const Config& cfg, std::size_t size, bool can_pin) {
  SizeResult res;
  res.size = size;
  std::vector<Kind> kinds = cfg.kinds;
  Shared sh;
  Cleanup cleanup(cfg, sh);
  setup_shared(cfg, size, kinds, sh);
  res.unavailable = sh.unavailable;
  res.kinds = kinds;

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) die_errno("pipe");
  g_stop = g_interrupted;
  const pid_t child = bu::fork_child();
  if (child < 0) die_errno("fork");
  if (child == 0) {
    ::close(report[0]);
    for (int fd : {sh.pipe_ping[1], sh.pipe_pong[0], sh.sock[0], sh.ctl_go[1], sh.ctl_ready[0]}) {
      if (fd >= 0) ::close(fd);
    }
    run_ponger(cfg, size, kinds, sh, report[1], can_pin);
  }
  // The ponger's ends, closed here so that a dead ponger reads as EOF.
  for (int fd : {report[1], sh.pipe_ping[0], sh.pipe_pong[1], sh.sock[1], sh.ctl_go[0], sh.ctl_ready[1]}) {
    if (fd >= 0) ::close(fd);
  }

  PingerSide a;
  EchoThread echo;
  std::unique_ptr<McPair<McQueue>> mcq;
  std::unique_ptr<McPair<McBlocking>> mcb;
  bool reaped = false;  // the ponger finished and was waited for already
  auto fail = [&](const std::string& what) {
    g_stop = 1;
    if (!reaped) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    }
    echo.stop();
    die(what);
  };
  try {
    if (can_pin && bu::pin_to(cfg.cpus[0])) res.a_cpu = cfg.cpus[0];
    a.floor = FloorT{sh.line};
    a.floor_copy = FloorCopyT{sh.copy_line, sh.copy_ping, sh.copy_pong};
    a.spsc = SpscT{{sh.spsc_ping, sh.spsc_geo}, {sh.spsc_pong, sh.spsc_geo}, "spsc_ring"};
    if (uses(kinds, Kind::shmbus_spin))
      a.spin.open(cfg.bus, channel_name("pong", false), channel_name("ping", false), false);
    if (uses(kinds, Kind::shmbus_block))
      a.block.open(cfg.bus, channel_name("pong", true), channel_name("ping", true), true);
    if (uses(kinds, Kind::shmbus_archived))
      a.archived.open(cfg.bus, archived_name("pong"), archived_name("ping"), false, "shmbus_archived");
    a.efd = EventfdT{sh.efd_ping, sh.efd_pong};
    a.pipe = StreamT{sh.pipe_ping[1], sh.pipe_pong[0], "pipe"};
    a.sock = StreamT{sh.sock[0], sh.sock[0], "unix"};
    a.mq = PosixMqT{sh.mq_ping, sh.mq_pong};
    if (uses(kinds, Kind::boost_mq)) a.bmq.open(sh.bmq_ping_name, sh.bmq_pong_name);
    if (uses(kinds, Kind::zmq)) a.zmq.open(sh.zmq_endpoint, false);
    if (uses(kinds, Kind::mc_queue) || uses(kinds, Kind::mc_blocking)) {
      mcq = std::make_unique<McPair<McQueue>>(size);
      mcb = std::make_unique<McPair<McBlocking>>(size);
      a.mcq = mcq.get();
      a.mcb = mcb.get();
      echo.start(a.mcq, a.mcb, size, can_pin ? cfg.cpus[1] : -1);
    }
    Buffers b(size);
    char c = 0;
    read_full(report[0], reinterpret_cast<std::byte*>(&c), 1, "the ponger did not start");

    std::uint64_t round = 0;
    Histogram block;  // the current timed block
    const std::uint64_t start = now_ns();
    for (const Step& st : schedule(cfg, kinds)) {
      const int k = static_cast<int>(st.kind);
      const bool thread = info(st.kind).thread;
      if (thread) echo.order(st.kind, st.untimed, st.timed);
      a.run(st.kind, b, st.untimed, nullptr, round, cfg.gap_ns);
      block.reset();
      res.a_sw.count(k, [&] { a.run(st.kind, b, st.timed, &block, round, cfg.gap_ns); });
      if (st.timed > 0) {
        res.hist[k].merge(block);
        res.block_p50[k].push_back(block.percentile(50));
        res.block_p99[k].push_back(block.percentile(99));
      }
      if (thread) {
        write_full(sh.ctl_go[1], reinterpret_cast<const std::byte*>(&c), 1, "control pipe");
        read_full(sh.ctl_ready[0], reinterpret_cast<std::byte*>(&c), 1, "control pipe");
      }
      if (g_stop != 0) {
        if (g_interrupted != 0) die("interrupted");
        // SIGCHLD: a ponger that failed is fatal; one that finished its
        // schedule (it may exit right after the last echo) is not.
        int status = 0;
        const pid_t r = ::waitpid(child, &status, WNOHANG);
        if (r == child) {
          reaped = true;
          if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
            die("the ponger exited (" + bu::exit_description(status) + ")");
          }
        }
        g_stop = 0;
      }
    }
    res.seconds = static_cast<double>(now_ns() - start) / 1e9;
    PongReport rep;
    read_full(report[0], reinterpret_cast<std::byte*>(&rep), sizeof rep, "the ponger's report");
    if (rep.ok != 1) die("the ponger failed");
    res.b_sw = rep.sw;
    res.b_cpu = rep.cpu;
  } catch (const std::exception& e) {
    ::close(report[0]);
    fail(e.what());
  }
  ::close(report[0]);
  if (!reaped) ::waitpid(child, nullptr, 0);
  echo.stop();
  if (!echo.error.empty()) die("echo thread: " + echo.error);
  for (Kind k : kinds) {
    if (info(k).thread) {
      res.b_sw.voluntary[static_cast<int>(k)] = echo.sw.voluntary[static_cast<int>(k)];
      res.b_sw.involuntary[static_cast<int>(k)] = echo.sw.involuntary[static_cast<int>(k)];
    }
  }
  for (int fd :
       {sh.efd_ping, sh.efd_pong, sh.pipe_ping[1], sh.pipe_pong[0], sh.sock[0], sh.ctl_go[1], sh.ctl_ready[0]}) {
    if (fd >= 0) ::close(fd);
  }
  if (sh.mq_ping != static_cast<mqd_t>(-1)) ::mq_close(sh.mq_ping);
  if (sh.mq_pong != static_cast<mqd_t>(-1)) ::mq_close(sh.mq_pong);
  ::munmap(sh.line, 2 * sizeof(FloorLine) + 2 * size);
  for (bu::SpscHeader* r : {sh.spsc_ping, sh.spsc_pong}) {
    if (r != nullptr) ::munmap(r, sh.spsc_geo.bytes());
  }
  g_stop = g_interrupted;
  return res;
}

// --- report ------------------------------------------------------------------------

double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/// The median over blocks of (this transport's block percentile / the
/// floor's, or another baseline's, in the block with the same index): a
/// ratio immune to the host moving the CPUs between blocks. 0 when there are
/// no blocks.
double paired_ratio(const std::vector<std::uint64_t>& t, const std::vector<std::uint64_t>& floor) {
  std::vector<double> r;
  for (std::size_t b = 0; b < std::min(t.size(), floor.size()); ++b) {
    if (floor[b] > 0) r.push_back(static_cast<double>(t[b]) / static_cast<double>(floor[b]));
  }
  return bu::median(std::move(r));
}

void print_size(const Config& cfg, const SizeResult& r) {
  const Histogram& fl = r.hist[static_cast<int>(Kind::floor)];
  const bool spsc = uses(r.kinds, Kind::spsc_ring);
  const auto& spsc_p50 = r.block_p50[static_cast<int>(Kind::spsc_ring)];
  const double rounds = static_cast<double>(cfg.rounds);
  std::printf("\n%zu-byte messages: %llu timed round trips per transport, %.1f s, CPUs %d/%d%s\n", r.size,
              static_cast<unsigned long long>(cfg.rounds), r.seconds, r.a_cpu, r.b_cpu,
              cfg.gap_ns != 0 ? (", gap " + std::to_string(cfg.gap_ns / 1000) + " us before each").c_str() : "");
  std::printf("%-13s %9s %9s %9s %9s %9s %9s %9s %8s %8s %8s%s %11s\n", "ns", "p50", "p90", "p99", "p99.9", "p99.99",
              "max", "mean", "p50/flr", "p99/flr", "paired", spsc ? "  p/spsc" : "", "vcsw/rt A/B");
  for (Kind k : r.kinds) {
    const int i = static_cast<int>(k);
    const Histogram& h = r.hist[i];
    std::printf("%-13s", info(k).name);
    for (double p : bu::kReportPercentiles) std::printf(" %9llu", static_cast<unsigned long long>(h.percentile(p)));
    std::printf(" %9llu %9.0f %7.2fx %7.2fx %7.2fx", static_cast<unsigned long long>(h.max()), h.mean(),
                ratio(static_cast<double>(h.percentile(50)), static_cast<double>(fl.percentile(50))),
                ratio(static_cast<double>(h.percentile(99)), static_cast<double>(fl.percentile(99))),
                paired_ratio(r.block_p50[i], r.block_p50[static_cast<int>(Kind::floor)]));
    if (spsc) std::printf(" %7.2fx", paired_ratio(r.block_p50[i], spsc_p50));
    std::printf(" %5.2f/%.2f\n", static_cast<double>(r.a_sw.voluntary[i]) / rounds,
                static_cast<double>(r.b_sw.voluntary[i]) / rounds);
  }
  for (const KindInfo& ki : kInfo) {
    const std::string& why = r.unavailable[static_cast<int>(ki.kind)];
    if (!why.empty()) std::printf("%-13s not run: %s\n", ki.name, why.c_str());
  }
}

nlohmann::ordered_json size_json(const Config& cfg, const SizeResult& r) {
  nlohmann::ordered_json j;
  j["size"] = r.size;
  j["gap_us"] = cfg.gap_ns / 1000;
  j["cpus"] = {r.a_cpu, r.b_cpu};
  j["seconds"] = r.seconds;
  nlohmann::ordered_json ts = nlohmann::ordered_json::object();
  const double rounds = static_cast<double>(cfg.rounds);
  for (Kind k : r.kinds) {
    const int i = static_cast<int>(k);
    nlohmann::ordered_json t = bu::to_json(r.hist[i]);
    t["voluntary_switches_per_rt"] = {static_cast<double>(r.a_sw.voluntary[i]) / rounds,
                                      static_cast<double>(r.b_sw.voluntary[i]) / rounds};
    t["involuntary_switches_per_rt"] = {static_cast<double>(r.a_sw.involuntary[i]) / rounds,
                                        static_cast<double>(r.b_sw.involuntary[i]) / rounds};
    t["threads"] = info(k).thread;
    t["block_p50"] = r.block_p50[i];
    t["block_p99"] = r.block_p99[i];
    ts[info(k).name] = std::move(t);
  }
  j["transports"] = std::move(ts);
  nlohmann::ordered_json un = nlohmann::ordered_json::object();
  for (const KindInfo& ki : kInfo) {
    const std::string& why = r.unavailable[static_cast<int>(ki.kind)];
    if (!why.empty()) un[ki.name] = why;
  }
  j["unavailable"] = std::move(un);
  return j;
}

void usage(const char* argv0) {
  std::string names;
  for (const KindInfo& k : kInfo) names += std::string(names.empty() ? "" : ",") + k.name;
  std::fprintf(stderr,
               "usage: %s [options]\n"
               "  --rounds N        timed round trips per transport and size (default 100000)\n"
               "  --warmup N        untimed round trips per transport first (default 10000)\n"
               "  --sizes A,B,...   payload sizes in bytes, each 8..1048576 (default 64)\n"
               "  --size N          one size\n"
               "  --transports L    comma-separated, or 'all' (default all; floor is always run):\n"
               "                    %s\n"
               "  --gap-us N        untimed pause before each round trip (lets blocking waiters sleep)\n"
               "  --policy P        shmbus channel policy: block (default) or drop_oldest\n"
               "  --timestamps T    shmbus channels' timestamp source: tsc (default), realtime or none\n"
               "  --cpus A,B        CPUs for the pinger and the ponger (default: the first two allowed)\n"
               "  --blocks K        interleaved blocks per transport (default 10)\n"
               "  --json FILE       also write the results as JSON\n",
               argv0, names.c_str());
}

std::optional<Config> parse(int argc, char** argv) {
  Config cfg;
  std::string transports = "all";
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
    } else if (a == "--size" && has && num(v)) {
      cfg.sizes = {v};
    } else if (a == "--sizes" && has) {
      if (!bu::parse_list(argv[++i], cfg.sizes)) return std::nullopt;
    } else if (a == "--transports" && has) {
      transports = argv[++i];
    } else if (a == "--gap-us" && has && num(v)) {
      cfg.gap_ns = v * 1000;
    } else if (a == "--blocks" && has && num(v) && v > 0) {
      cfg.blocks = v;
    } else if (a == "--policy" && has) {
      const auto p = shmbus::parse_policy(argv[++i]);
      if (!p || *p == Policy::reject) return std::nullopt;
      cfg.policy = *p;
    } else if (a == "--timestamps" && has) {
      const auto t = shmbus::parse_timestamps(argv[++i]);
      if (!t) return std::nullopt;
      cfg.timestamps = *t;
    } else if (a == "--cpus" && has) {
      if (std::sscanf(argv[++i], "%d,%d", &cfg.cpus[0], &cfg.cpus[1]) != 2) return std::nullopt;
    } else if (a == "--json" && has) {
      cfg.json = argv[++i];
    } else {
      std::fprintf(stderr, "shmbus_pingpong: bad or incomplete option '%s'\n", argv[i]);
      return std::nullopt;
    }
  }
  for (std::uint64_t s : cfg.sizes) {
    if (s < 8 || s > (1u << 20)) {
      std::fprintf(stderr, "shmbus_pingpong: size %llu out of range 8..1048576\n", static_cast<unsigned long long>(s));
      return std::nullopt;
    }
  }
  cfg.kinds = {Kind::floor};
  if (transports == "all") {
    for (const KindInfo& k : kInfo) {
      if (k.kind != Kind::floor) cfg.kinds.push_back(k.kind);
    }
  } else {
    for (const std::string& n : bu::split_list(transports)) {
      const auto k = parse_kind(n);
      if (!k) {
        std::fprintf(stderr, "shmbus_pingpong: unknown transport '%s'\n", n.c_str());
        return std::nullopt;
      }
      if (!uses(cfg.kinds, *k)) cfg.kinds.push_back(*k);
    }
  }
  cfg.blocks = std::min(cfg.blocks, cfg.rounds);
  return cfg;
}

void run(Config cfg) {
  const nlohmann::ordered_json host = bu::host_info();  // before pinning narrows the allowed CPUs
  const std::vector<int> allowed = bu::allowed_cpus();
  if (cfg.cpus[0] < 0 || cfg.cpus[1] < 0) {
    for (std::size_t k = 0; k < 2; ++k) cfg.cpus[k] = k < allowed.size() ? allowed[k] : -1;
  }
  auto ok = [&](int c) { return std::find(allowed.begin(), allowed.end(), c) != allowed.end(); };
  const bool can_pin = cfg.cpus[0] != cfg.cpus[1] && ok(cfg.cpus[0]) && ok(cfg.cpus[1]);
  if (!can_pin) {
    bu::spin_yields() = allowed.size() < 2;
    std::fprintf(stderr,
                 "shmbus_pingpong: warning: CPUs %d,%d not both available; not pinning%s "
                 "(numbers will be noisy)\n",
                 cfg.cpus[0], cfg.cpus[1], bu::spin_yields() ? ", one CPU: spinners yield" : "");
  }
  if (can_pin) bu::pin_to(cfg.cpus[0]);
  const Histogram clk = bu::clock_pair_cost();
  std::printf(
      "shmbus ping-pong: %llu round trips per transport and size (+%llu warm-up, %llu interleaved "
      "blocks of +%llu lead-in), policy %s, timestamps %s%s, pinger CPU %d, ponger CPU %d\n",
      static_cast<unsigned long long>(cfg.rounds), static_cast<unsigned long long>(cfg.warmup),
      static_cast<unsigned long long>(cfg.blocks), static_cast<unsigned long long>(kLeadIn),
      std::string(shmbus::to_string(cfg.policy)).c_str(), std::string(shmbus::to_string(cfg.timestamps)).c_str(),
      cfg.timestamps == shmbus::TimestampSource::tsc && !shmbus::shm::tsc_usable()
          ? " (counter not trusted here: realtime)"
          : "",
      cfg.cpus[0], cfg.cpus[1]);
  std::printf("clock_gettime pair (inside every sample): p50 %llu ns, p99 %llu ns, min %llu ns\n",
              static_cast<unsigned long long>(clk.percentile(50)), static_cast<unsigned long long>(clk.percentile(99)),
              static_cast<unsigned long long>(clk.min()));

  nlohmann::ordered_json out;
  out["program"] = "pingpong";
  out["host"] = host;
  nlohmann::ordered_json names = nlohmann::ordered_json::array();
  for (Kind k : cfg.kinds) names.push_back(info(k).name);
  out["config"] = {{"rounds", cfg.rounds},
                   {"warmup", cfg.warmup},
                   {"blocks", cfg.blocks},
                   {"lead_in", kLeadIn},
                   {"sizes", cfg.sizes},
                   {"transports", names},
                   {"gap_us", cfg.gap_ns / 1000},
                   {"policy", std::string(shmbus::to_string(cfg.policy))},
                   {"timestamps", std::string(shmbus::to_string(cfg.timestamps))},
                   {"tsc_usable", shmbus::shm::tsc_usable()},
                   {"cpus", {cfg.cpus[0], cfg.cpus[1]}},
                   {"pinned", can_pin}};
  out["clock_pair"] = bu::to_json(clk);
  out["runs"] = nlohmann::ordered_json::array();
  for (std::uint64_t size : cfg.sizes) {
    const SizeResult r = run_size(cfg, size, can_pin);
    print_size(cfg, r);
    std::fflush(stdout);
    out["runs"].push_back(size_json(cfg, r));
  }
  if (!cfg.json.empty()) bu::write_json(cfg.json, out);
}

}  // namespace

int main(int argc, char** argv) {
  return shmbus::benchutil::bench_main(argc, argv, "shmbus_pingpong", "pingpong", parse, usage, [](Config& cfg) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    struct sigaction sc {};
    sc.sa_handler = on_child;  // no SA_RESTART: a blocked call returns EINTR
    ::sigemptyset(&sc.sa_mask);
    ::sigaction(SIGCHLD, &sc, nullptr);
    run(cfg);  // removes what it created on every exit path
  });
}
