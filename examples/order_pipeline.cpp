// An order pipeline on one host, with real processes:
//
//                               +--> group "billing" (2+ workers) --> charges/<id>
//   order service --"orders"----+--> group "email"   (1+ worker)  --> outbox/<id>
//   (OrderPlaced)    channel    +--> archiver (`shmbus archive run`) --> archive/ on disk
//                               +--> durable subscriber "analytics" (later, from earliest:
//                               |    the archive, then the ring)
//                               +--> "orders-dlq": what billing refuses, until redriven
//
// Each role is a separate run of this program, and each opens the channel
// itself, as separate services would. tests/examples/examples_test.sh
// (`order-pipeline`) runs the whole story and is the script to read next to
// this file:
//
//   order_pipeline setup     --bus B --dir D      create "orders" (archive directory D/archive),
//                                                 the two groups (and so "orders-dlq"), two
//                                                 dedup tables
//   shmbus archive run orders --bus B             the archiver: the CLI, in a process of its own
//   order_pipeline billing   --bus B --dir D [--accept-refunds] [--freeze ID:POINT]... [--events FIFO]
//   order_pipeline email     --bus B --dir D [--freeze ID:POINT]... [--events FIFO]
//   order_pipeline service   --bus B --orders N [--from F] --poison ID   publish orders F..N (F: 1)
//   order_pipeline await     --bus B --group G --head H   wait until G finished all H messages
//                            (--acked A: until G has acked A messages)
//   order_pipeline await     --bus B --archiver [--head H]   wait until the archiver is attached
//                            (and has archived all H messages)
//   order_pipeline analytics --bus B --orders N --poison ID
//   order_pipeline verify    --bus B --dir D --orders N --poison ID [--freeze ID:POINT]...
//   order_pipeline cleanup   --bus B
//
// The message. OrderPlaced is text, so that `shmbus peek` and `shmbus dlq
// list` show it as it is: "OrderPlaced id=17 customer=globex amount_cents=8123".
// Two numbers travel with it, for two different jobs:
//   - MessageMeta::id is the order id, unique per order: the identity that the
//     dedup tables and the charge files are keyed by;
//   - MessageMeta::key is the customer's account number, shared by all of a
//     customer's orders: what billing keeps in order.
// Order `--poison` carries a negative amount: a refund entered as an order by
// mistake.
//
// Account events in order. Billing is a per_key group (GroupOptions::ordering):
// of one account, one order at a time, in the order placed, whichever of the
// billing workers takes it, and through kills and redeliveries; different
// accounts in parallel. Each charge is also appended to the account's
// statement (DIR/accounts/<customer>), which verify checks is in order. The
// append needs no lock because no two workers ever hold one account's orders
// at once. Email is an unordered group: e-mails may go out in any order.
//
// At-least-once, and billing each order exactly once anyway. Workers of a
// group receive, do the work, then ack; a worker that dies before its ack
// has the message redelivered to another one. So a worker's side effect must
// tolerate a second delivery, in two layers:
//
//   1. The DedupTable ("billing", "email"): begin(id) says `done` for an order
//      completed within the TTL, so a redelivery after the work skips it.
//   2. The side effect itself is keyed by the order id: a charge is the file
//      charges/<id>, written to a temporary name and link()ed into place,
//      which fails with EEXIST if the order was charged before. The charge
//      and its record are one atomic step, as a payment provider's
//      idempotency key or a database's unique key would be. This is what
//      covers a worker that dies after charging but before complete(): the
//      table then says `first` again (the dead worker's claim is taken over),
//      and the link refuses the second charge. docs/guarantees.md section 6.
//
// `--freeze ID:POINT` makes the worker that gets order ID on its first
// delivery stop at POINT (before-charge: taken, not yet charged; after-charge:
// charged, not yet complete()d; after-complete: complete()d, not yet acked),
// write "frozen PID ID POINT"
// to the --events FIFO, and wait there, so that the test can kill -9 it at
// exactly that point. verify then checks that the redelivery charged nobody
// twice, and that the account's later orders waited for it (before-charge:
// in an unordered group they would be charged first, out of order).
//
// The poison order: billing refuses a negative amount and dead-letters it
// (Consumer::dead_letter). It waits in "orders-dlq" (`shmbus dlq list billing`)
// until the fix, billing restarted with --accept-refunds, is deployed and the
// operator runs `shmbus dlq redrive billing`; the redriven order is a new
// message of "orders", which every group sees again: billing charges it (a
// refund), email's dedup table recognises it as sent.
//
// The archive. The ring holds the newest 512 messages; the channel also has
// an archive directory (ChannelOptions::archive_dir), into which the
// archiver, `shmbus archive run orders` in a process of its own, copies
// every message as it is published. Under `block` the archiver holds the
// service back rather than miss an order, as the groups do.
//
// Analytics is a durable subscriber ("analytics") started after everything
// was published. In the walkthrough that is 800 orders (two waves, 1..200
// and 201..800) and the redriven one, 801 messages, so the ring has wrapped
// and holds only sequences 289..800. Analytics' first run starts at the
// earliest order kept, sequence 0 in the archive, reads 0..288 from there
// and switches to the ring at 289, with the same poll and with no gap or
// duplicate at the switch (it checks that every sequence comes once, in
// order, and says how many came from each). It counts the redriven order
// once. A later run resumes its cursor and reads only what is new.
//
// Every role prints what it did; exit status 0 only if its own checks hold
// (verify: one charge and one e-mail per order, amounts and totals right,
// the frozen orders redelivered without a second charge, the poison order
// dead-lettered once then billed after the redrive; analytics: every order
// seen, every sequence once and in order, totals right; a resumed analytics
// run: nothing lost).
#include <shmbus/shmbus.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using shmbus::AckStatus;
using shmbus::Channel;
using shmbus::DedupStatus;
using shmbus::DedupTable;
using shmbus::Delivery;
using shmbus::PollStatus;
using shmbus::PublishStatus;

constexpr std::string_view kChannel = "orders";
constexpr std::string_view kDlq = "orders-dlq";  // the groups' default: "<channel>-dlq"
constexpr std::uint32_t kOrderPlaced = 1;        // MessageMeta::type
constexpr std::uint64_t kMs = 1'000'000ULL;
constexpr std::uint64_t kSecond = 1'000'000'000ULL;

// --- the bus's shape, shared by every role (an open must match the create) --------

/// The channel's options; `archive_dir` is where every order is also kept on
/// disk (stored in the channel: the roles that open it find it there).
shmbus::ChannelOptions channel_options(const std::string& archive_dir) {
  shmbus::ChannelOptions o;
  o.policy = shmbus::Policy::block;  // orders are never dropped: a full ring makes the service wait
  o.capacity = 512;                  // the newest 512 orders in memory; older ones in the archive only
  o.slot_size = 128;                 // 72 bytes of payload (56-byte slot header)
  o.max_groups = 2;                  // billing, email
  o.max_consumers = 8;
  o.archive_dir = archive_dir;
  return o;
}

/// The options of group `role`: billing keeps each account's orders in order.
shmbus::GroupOptions group_options(std::string_view role) {
  shmbus::GroupOptions g;
  if (role == "billing") g.ordering = shmbus::GroupOrdering::per_key;
  g.start = shmbus::StartAt::earliest();
  g.visibility_timeout_ns = 5 * kSecond;  // a hung worker's order goes to another after 5 s
  g.max_deliveries = 3;                   // then the DLQ
  g.backoff_base_ns = 10 * kMs;
  g.backoff_cap_ns = 200 * kMs;
  return g;
}

shmbus::DedupOptions dedup_options() {
  shmbus::DedupOptions d;
  d.capacity = 4096;
  d.ttl_ns = 3600 * kSecond;          // a duplicate within an hour is recognised
  d.claim_timeout_ns = 10 * kSecond;  // above the visibility timeout (guarantees.md 6, point 5)
  return d;
}

// --- orders: generated, so every role knows what to expect -------------------------

constexpr const char* kCustomers[] = {"acme", "globex", "initech", "umbrella", "hooli"};

struct Order {
  std::uint64_t id = 0;
  std::string customer;
  std::int64_t amount_cents = 0;
};

/// A customer's account number (1..5): the key billing orders by.
std::uint64_t account_of(std::string_view customer) {
  for (std::size_t i = 0; i < std::size(kCustomers); ++i) {
    if (customer == kCustomers[i]) return i + 1;
  }
  return 0;
}

Order order_of(std::uint64_t id, std::uint64_t poison) {
  Order o;
  o.id = id;
  o.customer = kCustomers[(id * 7) % std::size(kCustomers)];
  o.amount_cents = 500 + static_cast<std::int64_t>((id * 7919) % 20000);
  if (id == poison) o.amount_cents = -o.amount_cents;
  return o;
}

std::string encode(const Order& o) {
  return "OrderPlaced id=" + std::to_string(o.id) + " customer=" + o.customer +
         " amount_cents=" + std::to_string(o.amount_cents);
}

std::optional<Order> decode(std::span<const std::byte> payload) {
  const std::string text(reinterpret_cast<const char*>(payload.data()), payload.size());
  unsigned long long id = 0;
  long long amount = 0;
  char customer[32] = {};
  int used = 0;
  if (std::sscanf(text.c_str(), "OrderPlaced id=%llu customer=%31s amount_cents=%lld%n", &id, customer, &amount,
                  &used) != 3 ||
      static_cast<std::size_t>(used) != text.size()) {
    return std::nullopt;
  }
  return Order{id, customer, amount};
}

std::string cents(std::int64_t c) {
  char b[32];
  std::snprintf(b, sizeof b, "%s%lld.%02lld", c < 0 ? "-" : "", std::llabs(c) / 100LL, std::llabs(c) % 100LL);
  return b;
}

// --- command line --------------------------------------------------------------------

struct Freeze {
  std::uint64_t id = 0;
  std::string point;  ///< before-charge | after-charge | after-complete
};

struct Args {
  std::string role;
  std::string bus = "default";
  std::string dir;
  std::string group;
  std::string events;  ///< FIFO for "frozen" notices
  std::uint64_t orders = 0;
  std::uint64_t from = 1;  ///< service: the first order id to publish
  std::uint64_t poison = 0;
  std::uint64_t head = 0;
  std::uint64_t acked = 0;  ///< await: wait for this many acks instead
  double timeout_s = 60;
  bool accept_refunds = false;
  bool archiver = false;  ///< await: wait for the archiver instead of a group
  std::vector<Freeze> freezes;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "order_pipeline: %s\n"
               "usage: order_pipeline setup|service|billing|email|await|analytics|verify|cleanup [options]\n"
               "  --bus B  --dir D  --orders N  --from F  --poison ID  --group G  --head H  --acked A  --timeout S\n"
               "  --archiver  --accept-refunds  --freeze ID:before-charge|after-charge|after-complete  --events FIFO\n"
               "(the header of examples/order_pipeline.cpp says which role takes which)\n",
               why.c_str());
  std::exit(2);
}

std::uint64_t to_u64(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (errno != 0 || v.empty() || *end != '\0' || v[0] == '-') usage("bad number for " + flag + ": '" + v + "'");
  return x;
}

Args parse(int argc, char** argv) {
  if (argc < 2) usage("no role given");
  Args a;
  a.role = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--accept-refunds" || f == "--archiver") {
      (f == "--archiver" ? a.archiver : a.accept_refunds) = true;
      continue;
    }
    if (i + 1 >= argc) usage(f + " needs a value");
    const std::string v = argv[++i];
    if (f == "--bus")
      a.bus = v;
    else if (f == "--dir")
      a.dir = v;
    else if (f == "--group")
      a.group = v;
    else if (f == "--events")
      a.events = v;
    else if (f == "--orders")
      a.orders = to_u64(f, v);
    else if (f == "--from")
      a.from = to_u64(f, v);
    else if (f == "--poison")
      a.poison = to_u64(f, v);
    else if (f == "--head")
      a.head = to_u64(f, v);
    else if (f == "--acked")
      a.acked = to_u64(f, v);
    else if (f == "--timeout")
      a.timeout_s = static_cast<double>(to_u64(f, v));
    else if (f == "--freeze") {
      const auto colon = v.find(':');
      if (colon == std::string::npos) usage("--freeze takes ID:POINT, got '" + v + "'");
      Freeze z{to_u64(f, v.substr(0, colon)), v.substr(colon + 1)};
      if (z.point != "before-charge" && z.point != "after-charge" && z.point != "after-complete") {
        usage("--freeze point must be before-charge, after-charge or after-complete, got '" + z.point + "'");
      }
      a.freezes.push_back(z);
    } else {
      usage("unknown option " + f);
    }
  }
  return a;
}

void need(bool have, const std::string& what, const Args& a) {
  if (!have) usage(a.role + " needs " + what);
}

// --- small helpers -----------------------------------------------------------------------

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop(int) { g_stop = 1; }

void install_stop_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_stop;  // no SA_RESTART: a waiting receive returns and sees the flag
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t w = ::write(fd, s.data(), s.size());
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(w));
  }
  return true;
}

/// Appends one line to DIR/events.log: "ROLE PID EVENT ORDER ATTEMPT". One
/// write() with O_APPEND per line, so lines of concurrent workers never mix.
class EventLog {
 public:
  EventLog(const std::string& dir, std::string role) : role_(std::move(role)) {
    fd_ = ::open((dir + "/events.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) std::fprintf(stderr, "order_pipeline: %s/events.log: %s\n", dir.c_str(), std::strerror(errno));
  }
  ~EventLog() {
    if (fd_ >= 0) ::close(fd_);
  }
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  [[nodiscard]] bool ok() const { return fd_ >= 0; }
  void add(std::string_view event, std::uint64_t order, std::uint32_t attempt) {
    const std::string line = role_ + " " + std::to_string(::getpid()) + " " + std::string(event) + " " +
                             std::to_string(order) + " " + std::to_string(attempt) + "\n";
    (void)write_all(fd_, line);
  }

 private:
  std::string role_;
  int fd_ = -1;
};

enum class Insert { inserted, existed, failed };

/// Creates DIR/NAME with `content` unless it exists: written to a temporary
/// name first, then link()ed into place, which is atomic and fails with
/// EEXIST if another delivery got there first. The side effect and its
/// record are the same step (an idempotency key).
Insert insert_if_absent(const std::string& dir, const std::string& name, const std::string& content) {
  const std::string tmp = dir + "/.tmp." + std::to_string(::getpid()) + "." + name;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Insert::failed;
  const bool written = write_all(fd, content) && ::fsync(fd) == 0;
  ::close(fd);
  Insert r = Insert::failed;
  if (written) {
    if (::link(tmp.c_str(), (dir + "/" + name).c_str()) == 0)
      r = Insert::inserted;
    else if (errno == EEXIST)
      r = Insert::existed;
  }
  ::unlink(tmp.c_str());
  return r;
}

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * kSecond + static_cast<std::uint64_t>(ts.tv_nsec);
}

template <class T>
T need_ok(shmbus::Result<T> r, const std::string& what) {
  if (!r) {
    std::fprintf(stderr, "order_pipeline: %s: %s: %s\n", what.c_str(),
                 std::string(shmbus::to_string(r.error().code())).c_str(), r.error().message().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

// --- setup and cleanup -----------------------------------------------------------------------

int run_setup(const Args& a) {
  need(!a.dir.empty(), "--dir", a);
  for (const char* sub : {"/charges", "/outbox", "/accounts"}) {
    if (::mkdir((a.dir + sub).c_str(), 0755) != 0 && errno != EEXIST) {
      std::fprintf(stderr, "order_pipeline: mkdir %s%s: %s\n", a.dir.c_str(), sub, std::strerror(errno));
      return 1;
    }
  }
  // Every order is also kept in DIR/archive, written by the archiver (`shmbus
  // archive run orders`, a process of its own): a reader that asks for an
  // order the ring no longer holds reads it from there.
  auto ch = need_ok(Channel::create(kChannel, channel_options(a.dir + "/archive"), a.bus), "create channel orders");
  // Creating the groups now, before any order, makes their floors gate the
  // ring from the first message: a worker that starts late misses nothing.
  for (const char* g : {"billing", "email"}) {
    (void)need_ok(ch.join_group(g, group_options(g)), std::string("create group ") + g);
    (void)need_ok(DedupTable::open_or_create(g, dedup_options(), a.bus), std::string("dedup table ") + g);
  }
  const auto o = ch.options();
  std::printf(
      "setup: channel orders on bus %s (block, %u slots of %u bytes, archive %s), groups billing (per_key: each "
      "account in order) and email (unordered), visibility 5 s, max_deliveries 3, DLQ %s; dedup tables billing and "
      "email\n",
      a.bus.c_str(), o.capacity, o.slot_size, o.archive_dir.c_str(), std::string(kDlq).c_str());
  return 0;
}

int run_cleanup(const Args& a) {
  int failed = 0;
  const auto report = [&](const char* what, const shmbus::Result<void>& r) {
    if (!r && r.error().code() != shmbus::ErrorCode::not_found) {
      std::fprintf(stderr, "order_pipeline: remove %s: %s\n", what, r.error().message().c_str());
      ++failed;
    }
  };
  report("orders", Channel::remove(kChannel, a.bus));
  report("orders-dlq", Channel::remove(kDlq, a.bus));
  report("dedup billing", DedupTable::remove("billing", a.bus));
  report("dedup email", DedupTable::remove("email", a.bus));
  std::printf("cleanup: removed orders, orders-dlq and the dedup tables of bus %s\n", a.bus.c_str());
  return failed == 0 ? 0 : 1;
}

// --- the order service ---------------------------------------------------------------------

int run_service(const Args& a) {
  need(a.orders > 0 && a.from >= 1 && a.from <= a.orders, "--orders N (and --from F with 1 <= F <= N)", a);
  auto ch = need_ok(Channel::open(kChannel, a.bus), "open orders");
  auto pub = need_ok(ch.publisher(), "publisher");
  std::int64_t total = 0;
  for (std::uint64_t id = a.from; id <= a.orders; ++id) {
    const Order o = order_of(id, a.poison);
    // A full ring (every group a whole ring behind) makes this wait up to 5 s.
    const PublishStatus st =
        pub.publish(encode(o), {.key = account_of(o.customer), .type = kOrderPlaced, .id = id}, 5 * kSecond);
    if (st != PublishStatus::ok) {
      std::fprintf(stderr, "order service: order %llu not published: %s\n", static_cast<unsigned long long>(id),
                   std::string(shmbus::to_string(st)).c_str());
      return 1;
    }
    total += o.amount_cents;
  }
  const std::uint64_t published = a.orders - a.from + 1;
  std::printf("order service: published %llu OrderPlaced (ids %llu..%llu, total %s)",
              static_cast<unsigned long long>(published), static_cast<unsigned long long>(a.from),
              static_cast<unsigned long long>(a.orders), cents(total).c_str());
  if (a.poison >= a.from && a.poison <= a.orders) {
    std::printf("; order %llu has amount %s", static_cast<unsigned long long>(a.poison),
                cents(order_of(a.poison, a.poison).amount_cents).c_str());
  }
  std::printf("\n");
  return 0;
}

// --- the workers: billing and email ------------------------------------------------------

struct WorkerCounts {
  std::uint64_t received = 0, done = 0, duplicates_absorbed = 0, skipped_done = 0, in_progress = 0;
  std::uint64_t dead_lettered = 0, redelivered = 0, lease_lost = 0;
};

class Worker {
 public:
  explicit Worker(const Args& a) : a_(a), log_(a.dir, a.role) {}

  int run() {
    if (!log_.ok()) return 1;
    install_stop_handler();
    if (!a_.events.empty()) {
      events_fd_ = ::open(a_.events.c_str(), O_WRONLY | O_CLOEXEC);
      if (events_fd_ < 0) {
        std::fprintf(stderr, "%s: open %s: %s\n", a_.role.c_str(), a_.events.c_str(), std::strerror(errno));
        return 1;
      }
    }
    auto ch = need_ok(Channel::open(kChannel, a_.bus), "open orders");
    auto worker = need_ok(ch.join_group(a_.role, group_options(a_.role)), "join group " + a_.role);
    auto table = need_ok(DedupTable::open_or_create(a_.role, dedup_options(), a_.bus), "dedup table " + a_.role);
    std::printf("%s worker %d: joined group %s%s\n", a_.role.c_str(), ::getpid(), a_.role.c_str(),
                a_.accept_refunds ? " (accepts refunds)" : "");
    std::fflush(stdout);

    std::vector<std::byte> buf(ch.max_payload());
    while (!g_stop) {
      Delivery d;
      const PollStatus st = worker.receive_wait(d, buf, 100 * kMs);
      if (st == PollStatus::empty || st == PollStatus::timeout) continue;
      if (st != PollStatus::ok) {
        std::fprintf(stderr, "%s worker %d: receive: %s\n", a_.role.c_str(), ::getpid(),
                     std::string(shmbus::to_string(st)).c_str());
        return 1;
      }
      ++n_.received;
      if (d.attempt > 1) ++n_.redelivered;
      if (!handle(worker, table, d)) return 1;
    }
    std::printf(
        "%s worker %d: stopping: received %llu, done %llu, redelivered %llu, duplicates absorbed %llu "
        "(dedup said done %llu, side effect existed %llu), in progress elsewhere %llu, dead-lettered %llu, "
        "late acks %llu\n",
        a_.role.c_str(), ::getpid(), ull(n_.received), ull(n_.done), ull(n_.redelivered),
        ull(n_.skipped_done + n_.duplicates_absorbed), ull(n_.skipped_done), ull(n_.duplicates_absorbed),
        ull(n_.in_progress), ull(n_.dead_lettered), ull(n_.lease_lost));
    return 0;  // the consumer's destructor gives back any lease it still holds
  }

 private:
  static unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

  /// One delivery: dedup fast path, the side effect keyed by the order id,
  /// complete, ack. False on an error that should stop the worker.
  bool handle(shmbus::Consumer& worker, DedupTable& table, const Delivery& d) {
    const std::uint64_t id = d.message.id;
    const auto order = decode(d.message.payload);
    if (!order || order->id != id || d.message.key != account_of(order->customer)) {
      // Not an order we can read: no retry will help. Straight to the DLQ.
      log_.add("malformed", id, d.attempt);
      return dead_letter(worker, d, id);
    }
    const DedupStatus seen = table.begin(id);
    switch (seen) {
      case DedupStatus::done:  // completed before: a redelivery or a redriven copy
        ++n_.skipped_done;
        log_.add("skip-done", id, d.attempt);
        return ack(worker, d, id);
      case DedupStatus::in_progress:  // a live worker holds it: look again later
        ++n_.in_progress;
        log_.add("in-progress", id, d.attempt);
        (void)worker.nack(d, 50 * kMs);
        return true;
      case DedupStatus::first:
      case DedupStatus::full:  // no fast path: the side effect's own key decides alone
        break;
      case DedupStatus::invalid:
        std::fprintf(stderr, "%s: the dedup table handle is empty\n", a_.role.c_str());
        return false;
    }
    if (a_.role == "billing" && order->amount_cents < 0 && !a_.accept_refunds) {
      // The poison message: this version of billing cannot charge a negative
      // amount, and retrying will not change that. Release the claim (a
      // fixed version must see `first`) and dead-letter it now.
      if (seen == DedupStatus::first) table.abandon(id);
      std::printf("billing worker %d: order %llu has amount %s: not billable, dead-lettered\n", ::getpid(), ull(id),
                  cents(order->amount_cents).c_str());
      log_.add("dead-letter", id, d.attempt);
      return dead_letter(worker, d, id);
    }
    freeze_if_asked(id, "before-charge", d.attempt);
    log_.add("work", id, d.attempt);
    const Insert effect = a_.role == "billing" ? charge(*order, d.attempt) : send_email(*order);
    if (effect == Insert::failed) {
      std::fprintf(stderr, "%s worker %d: order %llu: side effect failed: %s\n", a_.role.c_str(), ::getpid(), ull(id),
                   std::strerror(errno));
      if (seen == DedupStatus::first) table.abandon(id);
      (void)worker.nack(d);  // retried with backoff; the DLQ after max_deliveries
      return true;
    }
    if (effect == Insert::inserted) {
      ++n_.done;
      log_.add(a_.role == "billing" ? "charged" : "emailed", id, d.attempt);
    } else {
      ++n_.duplicates_absorbed;  // done before by a worker that died before complete()
      log_.add(a_.role == "billing" ? "already-charged" : "already-emailed", id, d.attempt);
    }
    freeze_if_asked(id, "after-charge", d.attempt);
    table.complete(id);
    freeze_if_asked(id, "after-complete", d.attempt);
    return ack(worker, d, id);
  }

  /// The charge (its file is the idempotency record), then the line on the
  /// account's statement, unless a delivery before this one wrote it.
  Insert charge(const Order& o, std::uint32_t attempt) {
    const Insert r = insert_if_absent(a_.dir + "/charges", std::to_string(o.id),
                                      std::to_string(o.id) + " " + o.customer + " " + std::to_string(o.amount_cents) +
                                          " " + std::to_string(::getpid()) + " " + std::to_string(attempt) + "\n");
    if (r == Insert::failed) return r;
    return append_to_statement(o) ? r : Insert::failed;
  }

  /// Appends "ID AMOUNT" to DIR/accounts/<customer> if no line of that order
  /// is there yet. Read, then append, with no lock: the group is per_key, so
  /// no other worker holds an order of this account meanwhile.
  bool append_to_statement(const Order& o) {
    const std::string path = a_.dir + "/accounts/" + o.customer;
    {
      std::ifstream in(path);
      std::uint64_t id = 0;
      std::int64_t amount = 0;
      while (in >> id >> amount) {
        if (id == o.id) return true;  // a redelivery after the append
      }
    }
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    const bool ok = write_all(fd, std::to_string(o.id) + " " + std::to_string(o.amount_cents) + "\n");
    ::close(fd);
    return ok;
  }

  Insert send_email(const Order& o) {
    return insert_if_absent(a_.dir + "/outbox", std::to_string(o.id),
                            "To: " + o.customer + "\nSubject: order " + std::to_string(o.id) +
                                " received\n\nAmount: " + cents(o.amount_cents) + "\n");
  }

  bool ack(shmbus::Consumer& worker, const Delivery& d, std::uint64_t id) {
    const AckStatus st = worker.ack(d);
    if (st == AckStatus::lease_lost) {  // our lease ran out: another worker may repeat the work
      ++n_.lease_lost;
      log_.add("lease-lost", id, d.attempt);
      return true;
    }
    if (st != AckStatus::ok) {
      std::fprintf(stderr, "%s: ack of order %llu: %s\n", a_.role.c_str(), ull(id),
                   std::string(shmbus::to_string(st)).c_str());
      return false;
    }
    return true;
  }

  bool dead_letter(shmbus::Consumer& worker, const Delivery& d, std::uint64_t id) {
    const AckStatus st = worker.dead_letter(d);
    if (st == AckStatus::ok) {
      ++n_.dead_lettered;
      return true;
    }
    // dlq_unavailable: the message stays with the group and is dead-lettered
    // again after its lease; lease_lost: another worker has it now.
    std::fprintf(stderr, "%s: dead_letter of order %llu: %s\n", a_.role.c_str(), ull(id),
                 std::string(shmbus::to_string(st)).c_str());
    return st != AckStatus::invalid;
  }

  /// Stops here for good on the first delivery of a --freeze order: tells
  /// the --events FIFO, then waits for the SIGKILL that the test sends.
  void freeze_if_asked(std::uint64_t id, std::string_view point, std::uint32_t attempt) {
    if (attempt != 1) return;
    for (const Freeze& z : a_.freezes) {
      if (z.id != id || z.point != point) continue;
      log_.add("frozen-" + std::string(point), id, attempt);
      std::printf("%s worker %d: frozen %s of order %llu (holding its lease)\n", a_.role.c_str(), ::getpid(),
                  std::string(point).c_str(), ull(id));
      std::fflush(stdout);
      const std::string note =
          "frozen " + std::to_string(::getpid()) + " " + std::to_string(id) + " " + std::string(point) + "\n";
      (void)write_all(events_fd_, note);  // under PIPE_BUF: one atomic write
      for (;;) ::pause();                 // SIGTERM only sets g_stop; SIGKILL ends this
    }
  }

  const Args& a_;
  EventLog log_;
  int events_fd_ = -1;
  WorkerCounts n_;
};

// --- await: wait for a group to finish what was published -----------------------------------

/// await --archiver [--head H]: until the channel's archiver is attached and
/// alive, and (with --head) has archived every one of H messages: what a
/// reader of an order older than the ring needs.
int run_await_archiver(const Args& a) {
  auto ch = need_ok(Channel::open_read_only(kChannel, a.bus), "open orders");
  const std::uint64_t deadline = now_ns() + static_cast<std::uint64_t>(a.timeout_s * 1e9);
  for (;;) {
    const shmbus::ChannelStats s = ch.stats();
    if (!s.archive) {
      std::fprintf(stderr, "await: channel orders has no archive directory\n");
      return 2;
    }
    const shmbus::ArchiveStats& arc = *s.archive;
    if (!arc.error.empty()) {
      std::fprintf(stderr, "await: archive %s: %s\n", arc.dir.c_str(), arc.error.c_str());
      return 1;
    }
    const bool attached = arc.archiver && arc.archiver_alive;
    if (attached && (a.head == 0 || (s.head == a.head && arc.archiver_cursor == a.head))) {
      std::printf("await: archiver attached to orders, archiving into %s", arc.dir.c_str());
      if (a.head > 0) {
        std::printf("; archived up to head %llu (lag %llu, sequences %llu..%llu on disk)",
                    static_cast<unsigned long long>(s.head), static_cast<unsigned long long>(arc.lag),
                    static_cast<unsigned long long>(arc.first_sequence),
                    static_cast<unsigned long long>(arc.end_sequence > 0 ? arc.end_sequence - 1 : 0));
      }
      std::printf("\n");
      return 0;
    }
    if (now_ns() > deadline) {
      std::fprintf(stderr,
                   "await: archiver not %s after %.0f s: entry %s, alive %s, cursor %llu, head %llu (want %llu)\n",
                   attached ? "caught up" : "attached", a.timeout_s, arc.archiver ? "yes" : "no",
                   arc.archiver_alive ? "yes" : "no", static_cast<unsigned long long>(arc.archiver_cursor),
                   static_cast<unsigned long long>(s.head), static_cast<unsigned long long>(a.head));
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll the state, not a guess of timing
  }
}

int run_await(const Args& a) {
  if (a.archiver) return run_await_archiver(a);
  need(!a.group.empty(), "--group G", a);
  need(a.head > 0 || a.acked > 0, "--head H or --acked A", a);
  // A read-only observer: it takes no table entry and moves nothing.
  auto ch = need_ok(Channel::open_read_only(kChannel, a.bus), "open orders");
  const std::uint64_t deadline = now_ns() + static_cast<std::uint64_t>(a.timeout_s * 1e9);
  shmbus::GroupStats last;
  std::uint64_t head = 0;
  for (;;) {
    const shmbus::ChannelStats s = ch.stats();
    head = s.head;
    const auto g =
        std::find_if(s.groups.begin(), s.groups.end(), [&](const shmbus::GroupStats& x) { return x.name == a.group; });
    if (g == s.groups.end()) {
      std::fprintf(stderr, "await: channel orders has no group %s\n", a.group.c_str());
      return 2;
    }
    last = *g;
    if (a.acked > 0 ? g->acked >= a.acked
                    : s.head == a.head && g->floor == s.head && g->in_flight == 0 && g->due == 0) {
      break;
    }
    if (now_ns() > deadline) {
      std::fprintf(stderr,
                   "await: group %s not finished after %.0f s: head %llu (want %llu), acked %llu (want %llu), "
                   "floor %llu, in flight %llu, due %llu\n",
                   a.group.c_str(), a.timeout_s, static_cast<unsigned long long>(s.head),
                   static_cast<unsigned long long>(a.head), static_cast<unsigned long long>(g->acked),
                   static_cast<unsigned long long>(a.acked), static_cast<unsigned long long>(g->floor),
                   static_cast<unsigned long long>(g->in_flight), static_cast<unsigned long long>(g->due));
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // poll the state, not a guess of timing
  }
  std::printf("await: group %s finished %llu messages: acked %llu, redelivered %llu, dead-lettered %llu\n",
              a.group.c_str(), static_cast<unsigned long long>(head), static_cast<unsigned long long>(last.acked),
              static_cast<unsigned long long>(last.redelivered), static_cast<unsigned long long>(last.dead_lettered));
  return 0;
}

// --- analytics: a durable subscriber that replays from the oldest order ---------------------

/// "FIRST..LAST (COUNT)" of a run of sequences, "none" if empty.
std::string sequences(std::uint64_t first, std::uint64_t end) {
  if (end <= first) return "none";
  return std::to_string(first) + ".." + std::to_string(end - 1) + " (" + std::to_string(end - first) + ")";
}

/// What one analytics run read.
struct Replay {
  std::map<std::uint64_t, Order> orders;  ///< by id: a redriven order once
  std::uint64_t messages = 0, duplicates = 0, unreadable = 0;
  std::uint64_t from_archive = 0;     ///< messages older than the ring's oldest when reading began
  std::uint64_t out_of_sequence = 0;  ///< messages whose sequence was not one past the previous one
  std::uint64_t next = 0;             ///< one past the last sequence read
};

/// Reads from the subscriber's cursor up to `target` into r. A message
/// older than `ring_oldest` can only have come from the archive. False
/// (after saying why) on a poll that fails for another reason than `lapped`.
bool read_orders(shmbus::Subscriber& sub, std::size_t max_payload, std::uint64_t target, std::uint64_t ring_oldest,
                 Replay& r) {
  r.next = sub.cursor();
  std::vector<std::byte> buf(max_payload);
  shmbus::Message m;
  while (sub.cursor() < target) {
    const PollStatus st = sub.poll_wait(m, buf, 5 * kSecond);
    if (st == PollStatus::lapped) continue;  // counted in lost, checked by the caller
    if (st != PollStatus::ok) {
      std::fprintf(stderr, "analytics: poll at %llu: %s%s%s\n", static_cast<unsigned long long>(sub.cursor()),
                   std::string(shmbus::to_string(st)).c_str(), sub.last_error().empty() ? "" : ": ",
                   sub.last_error().c_str());
      return false;
    }
    ++r.messages;
    if (m.sequence != r.next) ++r.out_of_sequence;
    r.next = m.sequence + 1;
    if (m.sequence < ring_oldest) ++r.from_archive;
    const auto o = decode(m.payload);
    if (!o || o->id != m.id) {
      ++r.unreadable;
      continue;
    }
    // A redriven or republished order arrives again: count it once.
    if (!r.orders.emplace(o->id, *o).second) ++r.duplicates;
  }
  return true;
}

int run_analytics(const Args& a) {
  need(a.orders > 0, "--orders N", a);
  auto ch = need_ok(Channel::open(kChannel, a.bus), "open orders");
  // Durable: the cursor survives this process, and the next run resumes
  // after the last order it read. `earliest` applies to its first run only:
  // the oldest order kept, which is the archive's first record once the
  // ring has wrapped. Reading starts there, in the archive, and switches to
  // the ring where the ring begins: the same poll for both.
  auto sub = need_ok(ch.subscribe({.name = "analytics", .start = shmbus::StartAt::earliest()}), "subscribe analytics");
  const shmbus::ChannelStats s = ch.stats();
  const std::uint64_t start = sub.cursor();
  const std::uint64_t target = s.head;  // everything published so far
  // What the ring holds now. A message older than that came from the
  // archive; while nobody publishes (as in the walkthrough) the ring's
  // oldest stays put and this splits the replay exactly.
  const std::uint64_t ring_oldest = std::max(s.oldest, start);
  std::printf("analytics: %s at sequence %llu; reading up to %llu (the ring holds %s; older ones %s)\n",
              sub.resumed() ? "resumed" : "started", static_cast<unsigned long long>(start),
              static_cast<unsigned long long>(target), sequences(s.oldest, s.head).c_str(),
              s.archive ? "are in the archive" : "are gone: no archive");
  Replay r;
  if (!read_orders(sub, ch.max_payload(), target, ring_oldest, r)) return 1;
  const auto& [orders, messages, duplicates, unreadable, from_archive, out_of_sequence, next] = r;
  // Every sequence from start to target once, in order: in particular none
  // skipped or repeated where reading switched from the archive to the ring.
  const bool contiguous = out_of_sequence == 0 && messages == target - start;
  if (messages > 0) {
    std::printf("analytics: read sequences %s from the archive, then %s from the ring; %s\n",
                sequences(start, start + from_archive).c_str(), sequences(start + from_archive, next).c_str(),
                contiguous ? "every sequence once, in order" : "FAILED: sequences missing, repeated or out of order");
  }
  if (sub.resumed()) {
    // A later run: only what was published since the last one. The checks
    // against the whole order book apply to a full replay.
    const bool ok = contiguous && unreadable == 0 && sub.counters().lost == 0;
    std::printf("analytics: %llu new messages, %llu distinct orders, lost %llu, unreadable %llu\n",
                static_cast<unsigned long long>(messages), static_cast<unsigned long long>(orders.size()),
                static_cast<unsigned long long>(sub.counters().lost), static_cast<unsigned long long>(unreadable));
    return ok ? 0 : 1;
  }
  std::map<std::string, std::pair<std::uint64_t, std::int64_t>> by_customer;
  std::int64_t total = 0;
  for (const auto& [id, o] : orders) {
    by_customer[o.customer].first += 1;
    by_customer[o.customer].second += o.amount_cents;
    total += o.amount_cents;
  }
  std::printf("analytics: %llu messages, %llu distinct orders, %llu seen twice (redriven), total %s\n",
              static_cast<unsigned long long>(messages), static_cast<unsigned long long>(orders.size()),
              static_cast<unsigned long long>(duplicates), cents(total).c_str());
  for (const auto& [c, v] : by_customer) {
    std::printf("  %-10s %4llu orders  %12s\n", c.c_str(), static_cast<unsigned long long>(v.first),
                cents(v.second).c_str());
  }
  // Checks: every order 1..N seen once at least, with its amount; nothing
  // lost, nothing unreadable, the total right.
  std::int64_t expected_total = 0;
  std::uint64_t wrong = 0;
  for (std::uint64_t id = 1; id <= a.orders; ++id) {
    const Order want = order_of(id, a.poison);
    expected_total += want.amount_cents;
    const auto it = orders.find(id);
    if (it == orders.end() || it->second.amount_cents != want.amount_cents || it->second.customer != want.customer) {
      ++wrong;
    }
  }
  const bool ok = contiguous && wrong == 0 && orders.size() == a.orders && unreadable == 0 &&
                  sub.counters().lost == 0 && total == expected_total;
  std::printf("analytics: %s (missing or wrong %llu, unreadable %llu, lost %llu, expected total %s)\n",
              ok ? "every order seen, totals match" : "FAILED", static_cast<unsigned long long>(wrong),
              static_cast<unsigned long long>(unreadable), static_cast<unsigned long long>(sub.counters().lost),
              cents(expected_total).c_str());
  return ok ? 0 : 1;
}

// --- verify: the ledger, the outbox and the event log ---------------------------------------

struct Event {
  std::string role;
  long pid = 0;
  std::string what;
  std::uint64_t order = 0;
  std::uint32_t attempt = 0;
};

std::vector<Event> read_events(const std::string& dir) {
  std::vector<Event> out;
  std::ifstream in(dir + "/events.log");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    Event e;
    if (ls >> e.role >> e.pid >> e.what >> e.order >> e.attempt) out.push_back(e);
  }
  return out;
}

/// The files of DIR (not starting with '.'), by name, with their content.
std::map<std::string, std::string> read_dir(const std::string& dir) {
  std::map<std::string, std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name);
    std::stringstream ss;
    ss << in.rdbuf();
    out[e->d_name] = ss.str();
  }
  ::closedir(d);
  return out;
}

class Verifier {
 public:
  bool expect(bool cond, const std::string& what) {
    std::printf("  %s  %s\n", cond ? "ok  " : "FAIL", what.c_str());
    failures_ += cond ? 0 : 1;
    return cond;
  }
  [[nodiscard]] int failures() const { return failures_; }

 private:
  int failures_ = 0;
};

/// The lines of DIR/events.log, counted by role, event and order.
class Events {
 public:
  explicit Events(std::vector<Event> events) : events_(std::move(events)) {}
  /// How many `what` events of `role` for order `id`, on attempt min_attempt or later.
  [[nodiscard]] long count(std::string_view role, std::string_view what, std::uint64_t id, int min_attempt = 0) const {
    return std::count_if(events_.begin(), events_.end(), [&](const Event& e) {
      return e.role == role && e.what == what && e.order == id && static_cast<int>(e.attempt) >= min_attempt;
    });
  }
  /// How many `what` events of `role`, for any order.
  [[nodiscard]] long total(std::string_view role, std::string_view what) const {
    return std::count_if(events_.begin(), events_.end(),
                         [&](const Event& e) { return e.role == role && e.what == what; });
  }

 private:
  std::vector<Event> events_;
};

/// The charges: one per order, each right, none made twice.
void verify_ledger(const Args& a, const Events& ev, Verifier& v) {
  std::printf("verify: the ledger (%s/charges)\n", a.dir.c_str());
  const auto charges = read_dir(a.dir + "/charges");
  std::int64_t billed = 0, expected = 0;
  std::uint64_t wrong = 0;
  for (std::uint64_t id = 1; id <= a.orders; ++id) {
    const Order want = order_of(id, a.poison);
    expected += want.amount_cents;
    const auto it = charges.find(std::to_string(id));
    std::istringstream cs(it == charges.end() ? std::string() : it->second);
    std::uint64_t cid = 0;
    std::string customer;
    std::int64_t amount = 0;
    if (!(cs >> cid >> customer >> amount) || cid != id || customer != want.customer || amount != want.amount_cents) {
      ++wrong;
      continue;
    }
    billed += amount;
  }
  v.expect(charges.size() == a.orders, "one charge per order: " + std::to_string(charges.size()) + " charges for " +
                                           std::to_string(a.orders) + " orders");
  v.expect(wrong == 0, "every charge has its order's customer and amount (" + std::to_string(wrong) + " wrong)");
  v.expect(billed == expected, "billed total " + cents(billed) + " == ordered total " + cents(expected));
  std::uint64_t double_charged = 0;
  for (std::uint64_t id = 1; id <= a.orders; ++id) double_charged += ev.count("billing", "charged", id) > 1 ? 1 : 0;
  v.expect(double_charged == 0 && ev.total("billing", "charged") == static_cast<long>(a.orders),
           "no order charged twice (" + std::to_string(ev.total("billing", "charged")) + " charges made)");
}

/// Each account's statement: every order once, in the order placed.
void verify_statements(const Args& a, Verifier& v) {
  std::printf("verify: each account's statement (%s/accounts), in the order placed\n", a.dir.c_str());
  std::uint64_t out_of_order = 0, lines = 0, missing = 0;
  for (const char* customer : kCustomers) {
    std::ifstream in(a.dir + "/accounts/" + customer);
    std::vector<std::uint64_t> ids;
    std::uint64_t id = 0;
    std::int64_t amount = 0;
    while (in >> id >> amount) ids.push_back(id);
    lines += ids.size();
    // The redriven poison order is a new message, published after the
    // orders placed before the redrive: on its account's statement it comes
    // after them. Every other line follows the order ids, which is the order
    // the service placed them in.
    std::uint64_t last = 0;
    for (std::uint64_t x : ids) {
      if (x == a.poison) continue;
      if (x <= last) ++out_of_order;
      last = x;
    }
    for (std::uint64_t want = 1; want <= a.orders; ++want) {
      if (order_of(want, a.poison).customer == customer && std::count(ids.begin(), ids.end(), want) != 1) ++missing;
    }
  }
  v.expect(lines == a.orders && missing == 0, "every order once on its account's statement: " + std::to_string(lines) +
                                                  " lines, " + std::to_string(missing) + " missing or repeated");
  v.expect(out_of_order == 0, "each account's charges in the order placed, through the kills and redeliveries (" +
                                  std::to_string(out_of_order) + " out of order)");
}

/// The e-mails, the redeliveries after the kills, and the poison order.
void verify_deliveries(const Args& a, const Events& ev, Verifier& v) {
  std::printf("verify: the e-mails (%s/outbox)\n", a.dir.c_str());
  const auto outbox = read_dir(a.dir + "/outbox");
  v.expect(outbox.size() == a.orders && ev.total("email", "emailed") == static_cast<long>(a.orders),
           "one e-mail per order: " + std::to_string(outbox.size()) + " in the outbox, " +
               std::to_string(ev.total("email", "emailed")) + " sent");

  std::printf("verify: redeliveries after kill -9\n");
  for (const Freeze& z : a.freezes) {
    const std::string id = std::to_string(z.id);
    v.expect(ev.count("billing", "frozen-" + z.point, z.id) == 1,
             "order " + id + ": a billing worker stopped " + z.point + " on its first delivery");
    if (z.point == "before-charge") {
      // The worker took the order and died before any side effect: the
      // redelivery did the work, once; meanwhile the account's later orders
      // waited (the statement check above).
      v.expect(ev.count("billing", "work", z.id) == 1 && ev.count("billing", "work", z.id, 2) == 1,
               "order " + id + ": redelivered and worked once, on a later attempt");
    } else if (z.point == "after-charge") {
      // The worker charged, then died before complete(): the dedup claim was
      // taken over (`first`), the work ran again, and the ledger's key refused it.
      v.expect(ev.count("billing", "work", z.id) >= 2 && ev.count("billing", "already-charged", z.id, 2) >= 1,
               "order " + id + ": redelivered, worked again, and the ledger refused a second charge (" +
                   std::to_string(ev.count("billing", "work", z.id)) + " attempts, 1 charge)");
    } else {
      // The worker completed, then died before its ack: the redelivery found
      // the id done in the dedup table and only acked.
      v.expect(ev.count("billing", "work", z.id) == 1 && ev.count("billing", "skip-done", z.id, 2) >= 1,
               "order " + id + ": redelivered and skipped by the dedup table (done), worked once");
    }
    v.expect(ev.count("billing", "charged", z.id) == 1, "order " + id + ": charged exactly once");
  }

  std::printf("verify: the poison order %llu\n", static_cast<unsigned long long>(a.poison));
  v.expect(ev.count("billing", "dead-letter", a.poison) == 1,
           "billing dead-lettered it once (amount " + cents(order_of(a.poison, a.poison).amount_cents) + ")");
  v.expect(ev.count("billing", "charged", a.poison) == 1,
           "after the fix and the redrive, billing charged it once (a refund)");
  v.expect(ev.count("email", "emailed", a.poison) == 1 && ev.count("email", "skip-done", a.poison) >= 1,
           "email sent it once and recognised the redriven copy as done");
}

/// The groups' floors and counters, the head, the DLQ.
void verify_bus(const Args& a, Verifier& v) {
  std::printf("verify: the bus\n");
  auto ch = need_ok(Channel::open_read_only(kChannel, a.bus), "open orders");
  const shmbus::ChannelStats s = ch.stats();
  for (const auto& g : s.groups) {
    const bool billing = g.name == "billing";
    v.expect(g.floor == s.head && g.in_flight == 0 && g.dead_lettered == (billing ? 1u : 0u),
             "group " + g.name + ": floor " + std::to_string(g.floor) + " == head " + std::to_string(s.head) +
                 ", nothing in flight, dead-lettered " + std::to_string(g.dead_lettered));
    if (billing) {
      v.expect(g.redelivered >= a.freezes.size(),
               "group billing: " + std::to_string(g.redelivered) + " redelivered (after the kills)");
    }
  }
  v.expect(s.head == a.orders + 1,
           "orders head " + std::to_string(s.head) + ": " + std::to_string(a.orders) + " orders and the redriven one");
  auto dlq = need_ok(Channel::open_read_only(kDlq, a.bus), "open orders-dlq");
  const shmbus::ChannelStats ds = dlq.stats();
  std::uint64_t retained_from = ds.head;
  for (const auto& sub : ds.subscribers) {
    if (sub.durable) retained_from = std::min(retained_from, sub.cursor);
  }
  v.expect(ds.head == 1 && retained_from == ds.head, "orders-dlq: " + std::to_string(ds.head) + " dead letter ever, " +
                                                         std::to_string(ds.head - retained_from) +
                                                         " waiting (redriven)");
}

int run_verify(const Args& a) {
  need(!a.dir.empty() && a.orders > 0 && a.poison != 0, "--dir, --orders and --poison", a);
  Verifier v;
  const Events ev(read_events(a.dir));
  verify_ledger(a, ev, v);
  verify_statements(a, v);
  verify_deliveries(a, ev, v);
  verify_bus(a, v);
  std::printf("verify: %s\n", v.failures() == 0 ? "all checks hold" : "FAILED");
  return v.failures() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line, also into a file
  if (a.role == "setup") return run_setup(a);
  if (a.role == "cleanup") return run_cleanup(a);
  if (a.role == "service") return run_service(a);
  if (a.role == "billing" || a.role == "email") {
    need(!a.dir.empty(), "--dir", a);
    return Worker(a).run();
  }
  if (a.role == "await") return run_await(a);
  if (a.role == "analytics") return run_analytics(a);
  if (a.role == "verify") return run_verify(a);
  usage("unknown role '" + a.role + "'");
}
