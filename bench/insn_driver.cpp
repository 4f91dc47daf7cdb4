// The instruction budget of the hot paths: a single-thread driver for
// callgrind (scripts/insn.sh runs it and prints instructions per operation).
//
// One thread of one process: a block channel (slot 128 bytes, 1024 slots),
// one publisher and one busy-spin subscriber, made through the public API.
// Every measured operation runs in its own function named insn_*: each runs
// `n` operations in a loop and nothing else, so that callgrind, collecting
// only inside insn_* functions (--toggle-collect), gives each one's
// instructions, library calls included; divided by the operations run, less
// insn_loop's share (the same loop with an empty body: counter, the store of
// the sequence number, the branch), that is the cost of one operation.
// Publishes and polls alternate in rounds of kRound messages (publish
// kRound, then poll them all), so the ring never fills and no publish waits.
// Every message polled is checked (length and sequence): an error exits 1.
// The group entries (receive + ack, receive_batch + ack_batch) run the same
// way on a channel of their own, with one consumer in one group (run_group).
//
//   shmbus_insn_driver [--ops N] [--only FUNCTION]
//
// Prints one line per measured function when done (with --only, for that
// one alone, which then runs with only what it needs):
//   op <function> <publish|poll|loop|group> <operations> <api pattern> <label>
// Instruction counts are exact under callgrind (no timing, no other core),
// so one run is enough, on any machine; run natively, it only checks itself.
#include <shmbus/shmbus.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include <unistd.h>

namespace insn {

constexpr std::uint32_t kCapacity = 1024;
constexpr std::uint32_t kSlotSize = 128;
constexpr std::size_t kRound = kCapacity / 2;  ///< messages per publish-then-poll round

/// What every measured function works on.
struct Ctx {
  shmbus::Publisher pub;
  shmbus::Subscriber sub;
  std::array<std::byte, kSlotSize> out{};  ///< the message published (its sequence first)
  std::array<std::byte, kSlotSize> in{};   ///< where polls copy out
  std::uint64_t published = 0;             ///< messages published so far
  std::uint64_t polled = 0;                ///< messages polled so far
  std::uint64_t errors = 0;                ///< failed operations and wrong messages
  std::uint64_t sink = 0;                  ///< insn_loop's output (kept, never read)
};

/// n publishes of `size` bytes, one at a time.
template <std::size_t Size>
[[gnu::always_inline]] inline void publish_n(Ctx& c, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t seq = c.published++;
    std::memcpy(c.out.data(), &seq, sizeof seq);
    if (c.pub.publish(std::span<const std::byte>(c.out.data(), Size)) != shmbus::PublishStatus::ok) ++c.errors;
  }
}

/// n publishes of `size` bytes, in batches of `Batch` (publish_batch).
template <std::size_t Size, std::size_t Batch>
[[gnu::always_inline]] inline void publish_batch_n(Ctx& c, std::size_t n) noexcept {
  static std::array<std::array<std::byte, Size>, Batch> bodies{};
  std::array<shmbus::OutMessage, Batch> batch{};
  for (std::size_t done = 0; done < n;) {
    const std::size_t k = std::min(Batch, n - done);
    for (std::size_t i = 0; i < k; ++i) {
      const std::uint64_t seq = c.published++;
      std::memcpy(bodies[i].data(), &seq, sizeof seq);
      batch[i].payload = std::span<const std::byte>(bodies[i].data(), Size);
    }
    if (c.pub.publish_batch(std::span<const shmbus::OutMessage>(batch.data(), k)) != shmbus::PublishStatus::ok) {
      ++c.errors;
    }
    done += k;
  }
}

/// n copy-out polls, each of which must return the next message, of `size`
/// bytes.
template <std::size_t Size>
[[gnu::always_inline]] inline void poll_n(Ctx& c, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    shmbus::Message m;
    std::uint64_t seq = 0;
    if (c.sub.poll(m, c.in) != shmbus::PollStatus::ok || m.payload.size() != Size) {
      ++c.errors;
      continue;
    }
    std::memcpy(&seq, c.in.data(), sizeof seq);
    if (seq != c.polled++) ++c.errors;
  }
}

// --- the group path: receive + ack by the only consumer of a group ----------------
// On a channel of its own: a group's floor gates the publishers of its
// channel, which would change the publish counts above. Its publishes run
// outside every measured function.

constexpr std::size_t kGroupBatch = 64;  ///< deliveries per receive_batch and ack_batch

/// What the group functions work on.
struct GroupCtx {
  shmbus::Publisher pub;  ///< publishes to the group's channel (never measured)
  shmbus::Consumer con;   ///< the group's only consumer
  std::uint64_t published = 0;
  std::uint64_t acked = 0;
  std::array<std::byte, kSlotSize> out{};
  std::array<shmbus::Delivery, kGroupBatch> ds{};
  std::array<std::byte, kGroupBatch * kSlotSize> arena{};
};
inline GroupCtx* g_group = nullptr;  ///< set by run() while group entries run

/// n publishes of `size` bytes to the group's channel.
inline void group_publish_n(Ctx& c, std::size_t n, std::size_t size) noexcept {
  GroupCtx& g = *g_group;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t seq = g.published++;
    std::memcpy(g.out.data(), &seq, sizeof seq);
    if (g.pub.publish(std::span<const std::byte>(g.out.data(), size)) != shmbus::PublishStatus::ok) ++c.errors;
  }
}

/// Checks a delivery: `Size` bytes, the next sequence (the only consumer of
/// an unordered group gets them in order).
template <std::size_t Size>
[[gnu::always_inline]] inline void group_check(Ctx& c, GroupCtx& g, const shmbus::Delivery& d) noexcept {
  std::uint64_t seq = 0;
  if (d.message.payload.size() == Size) std::memcpy(&seq, d.message.payload.data(), sizeof seq);
  if (d.message.payload.size() != Size || seq != g.acked) ++c.errors;
  ++g.acked;
}

/// n receive + ack, one message at a time.
template <std::size_t Size>
[[gnu::always_inline]] inline void receive_ack_n(Ctx& c, std::size_t n) noexcept {
  GroupCtx& g = *g_group;
  for (std::size_t i = 0; i < n; ++i) {
    shmbus::Delivery& d = g.ds[0];
    if (g.con.receive(d, g.arena) != shmbus::PollStatus::ok || g.con.ack(d) != shmbus::AckStatus::ok) {
      ++c.errors;
      continue;
    }
    group_check<Size>(c, g, d);
  }
}

/// n messages by receive_batch + ack_batch, kGroupBatch at a time.
template <std::size_t Size>
[[gnu::always_inline]] inline void receive_ack_batch_n(Ctx& c, std::size_t n) noexcept {
  GroupCtx& g = *g_group;
  for (std::size_t done = 0; done < n;) {
    const std::size_t want = std::min(kGroupBatch, n - done);
    const std::size_t k = g.con.receive_batch(std::span<shmbus::Delivery>(g.ds.data(), want), g.arena);
    if (k == 0 || g.con.ack_batch(std::span<const shmbus::Delivery>(g.ds.data(), k)) != k) {
      ++c.errors;
      return;
    }
    for (std::size_t i = 0; i < k; ++i) group_check<Size>(c, g, g.ds[i]);
    done += k;
  }
}

}  // namespace insn

// The measured functions: C names (callgrind's --toggle-collect=insn_* and
// the script's parsing see them as written), never inlined, never cloned
// (GCC's clones get other names; clang does not clone them). The build also
// turns off GCC's identical-code folding for this file, which could
// otherwise merge two of them into one symbol.
#if defined(__clang__)
#define INSN_MEASURED [[gnu::noinline]]
#else
#define INSN_MEASURED [[gnu::noinline, gnu::noclone]]
#endif
extern "C" {
INSN_MEASURED void insn_loop(insn::Ctx& c, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t seq = c.published + i;
    std::memcpy(c.out.data(), &seq, sizeof seq);
    asm volatile("" : : "r"(c.out.data()) : "memory");  // the store happens, as before a publish
  }
  c.sink += n;
}
INSN_MEASURED void insn_publish_64(insn::Ctx& c, std::size_t n) noexcept { insn::publish_n<64>(c, n); }
INSN_MEASURED void insn_publish_8(insn::Ctx& c, std::size_t n) noexcept { insn::publish_n<8>(c, n); }
INSN_MEASURED void insn_publish_batch16_64(insn::Ctx& c, std::size_t n) noexcept {
  insn::publish_batch_n<64, 16>(c, n);
}
INSN_MEASURED void insn_poll_64(insn::Ctx& c, std::size_t n) noexcept { insn::poll_n<64>(c, n); }
INSN_MEASURED void insn_poll_8(insn::Ctx& c, std::size_t n) noexcept { insn::poll_n<8>(c, n); }
}
extern "C" {
INSN_MEASURED void insn_group_receive_ack_64(insn::Ctx& c, std::size_t n) noexcept { insn::receive_ack_n<64>(c, n); }
INSN_MEASURED void insn_group_receive_ack_batch64_64(insn::Ctx& c, std::size_t n) noexcept {
  insn::receive_ack_batch_n<64>(c, n);
}
}

namespace {

enum class Role { publish, poll, loop, group };
const char* name_of(Role r) {
  switch (r) {
    case Role::publish: return "publish";
    case Role::poll: return "poll";
    case Role::loop: return "loop";
    case Role::group: return "group";
  }
  return "?";
}

struct Op {
  const char* function;  ///< the symbol, as callgrind reports it
  const char* api;       ///< the public call it measures, as a callgrind --toggle-collect pattern
  const char* label;     ///< as the script prints it
  Role role;
  std::size_t size;  ///< payload bytes
  void (*run)(insn::Ctx&, std::size_t) noexcept;
};

// Every measured operation. A batched publish (publish_batch, a batch of
// claims) is one more entry: a Role::publish function named insn_* that
// moves `n` messages of `size` bytes; the driver drains it with the poll
// entry of the same size, and the script reports it like the others.
constexpr const char* kPublishApi = "shmbus::Publisher::publish(std::span<std::byte?const*";
constexpr const char* kBatchApi = "shmbus::Publisher::publish_batch(std::span<shmbus::OutMessage?const*";
constexpr const char* kPollApi = "shmbus::Subscriber::poll(*";
// receive and ack (both take a Delivery first; nothing else of the kind runs
// in a group entry), and receive_batch and ack_batch.
constexpr const char* kGroupApi = "shmbus::Consumer::*(shmbus::Delivery*";
constexpr const char* kGroupBatchApi = "shmbus::Consumer::*_batch(*";
constexpr std::array kOps{
    Op{"insn_loop", "-", "loop overhead", Role::loop, 0, insn_loop},
    Op{"insn_publish_64", kPublishApi, "publish 64B", Role::publish, 64, insn_publish_64},
    Op{"insn_publish_8", kPublishApi, "publish 8B", Role::publish, 8, insn_publish_8},
    Op{"insn_publish_batch16_64", kBatchApi, "publish_batch16 64B", Role::publish, 64, insn_publish_batch16_64},
    Op{"insn_poll_64", kPollApi, "poll 64B", Role::poll, 64, insn_poll_64},
    Op{"insn_poll_8", kPollApi, "poll 8B", Role::poll, 8, insn_poll_8},
    // The group path (Role::group): a consumer's receive + ack per message,
    // on a channel of its own (run_group). "In the call" counts both calls.
    Op{"insn_group_receive_ack_64", kGroupApi, "receive+ack 64B", Role::group, 64, insn_group_receive_ack_64},
    Op{"insn_group_receive_ack_batch64_64", kGroupBatchApi, "batch64 recv+ack 64B", Role::group, 64,
       insn_group_receive_ack_batch64_64},
};

/// The channel, removed on every exit path.
class ChannelGuard {
 public:
  ChannelGuard() : bus_("insn-" + std::to_string(::getpid())) {}
  ~ChannelGuard() { (void)shmbus::Channel::remove("insn", bus_); }
  ChannelGuard(const ChannelGuard&) = delete;
  ChannelGuard& operator=(const ChannelGuard&) = delete;
  [[nodiscard]] const std::string& bus() const { return bus_; }

 private:
  std::string bus_;
};

/// Publishes and reads one lap of the ring with the claim API and
/// poll_batch (each message checked, as the measured functions do).
bool warm_up(insn::Ctx& c) {
  std::array<shmbus::Message, 64> got{};
  std::array<std::byte, 64 * insn::kSlotSize> arena{};
  for (std::uint32_t i = 0; i < insn::kCapacity; ++i) {
    shmbus::Claim claim;
    if (c.pub.try_claim(8, claim, 0) != shmbus::PublishStatus::ok) return false;
    const std::uint64_t seq = c.published++;
    std::memcpy(claim.payload.data(), &seq, sizeof seq);
    if (c.pub.commit(claim, sizeof seq, {}) != shmbus::PublishStatus::ok) return false;
  }
  while (c.polled < c.published) {
    const std::size_t n = c.sub.poll_batch(got, arena);
    if (n == 0) return false;
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t seq = 0;
      std::memcpy(&seq, got[i].payload.data(), sizeof seq);
      if (seq != c.polled++) return false;
    }
  }
  return true;
}

/// The group entries' channel, removed on every exit path.
class GroupChannelGuard {
 public:
  explicit GroupChannelGuard(std::string bus) : bus_(std::move(bus)) {}
  ~GroupChannelGuard() {
    // The group's DLQ ("insn-group-dlq") is created at join.
    (void)shmbus::Channel::remove("insn-group", bus_);
    (void)shmbus::Channel::remove("insn-group-dlq", bus_);
  }
  GroupChannelGuard(const GroupChannelGuard&) = delete;
  GroupChannelGuard& operator=(const GroupChannelGuard&) = delete;

 private:
  std::string bus_;
};

/// Runs the group entries (Role::group) that `only` selects (all, if it is
/// empty), on a channel of their own with one consumer in one group:
/// rounds of kRound publishes (not measured), then the entry's kRound
/// receives and acks. A warm-up lap first, as in warm_up, through the other
/// group entry's calls (so that the count of the entry's own calls, with
/// --only, does not include it): every lease word then holds an acked lease
/// of the previous lap.
int run_group(insn::Ctx& c, std::uint64_t ops, std::string_view only, const std::string& bus,
              std::span<std::uint64_t> done) {
  bool any = false;
  bool batch_measured = false;
  for (const Op& op : kOps) {
    if (op.role != Role::group || (!only.empty() && only != op.function)) continue;
    any = true;
    batch_measured = batch_measured || op.run == insn_group_receive_ack_batch64_64;
  }
  if (!any) return 0;
  GroupChannelGuard guard(bus);
  shmbus::ChannelOptions o;
  o.capacity = insn::kCapacity;
  o.slot_size = insn::kSlotSize;
  o.policy = shmbus::Policy::block;
  o.max_groups = 1;
  o.max_consumers = 1;
  auto ch = shmbus::Channel::create("insn-group", o, bus);
  if (!ch) {
    std::fprintf(stderr, "shmbus_insn_driver: create insn-group: %s\n", ch.error().message().c_str());
    return 1;
  }
  shmbus::GroupOptions go;
  go.wait = shmbus::WaitStrategy::busy_spin;
  auto con = ch->join_group("g", go);
  auto pub = ch->publisher();
  if (!con || !pub) {
    std::fprintf(stderr, "shmbus_insn_driver: join_group: %s\n", (!con ? con.error() : pub.error()).message().c_str());
    return 1;
  }
  insn::GroupCtx g;
  g.con = std::move(con.value());
  g.pub = std::move(pub.value());
  insn::g_group = &g;
  for (std::size_t i = 0; i < insn::kCapacity / insn::kRound; ++i) {
    insn::group_publish_n(c, insn::kRound, 64);
    if (batch_measured) {
      insn::receive_ack_n<64>(c, insn::kRound);
    } else {
      insn::receive_ack_batch_n<64>(c, insn::kRound);
    }
  }
  const std::uint64_t rounds = (ops + insn::kRound - 1) / insn::kRound;
  for (std::size_t p = 0; p < kOps.size(); ++p) {
    if (kOps[p].role != Role::group || (!only.empty() && only != kOps[p].function)) continue;
    for (std::uint64_t r = 0; r < rounds; ++r) {
      insn::group_publish_n(c, insn::kRound, kOps[p].size);
      kOps[p].run(c, insn::kRound);
      kOps[0].run(c, insn::kRound);  // the loop overhead, as often as the others run
      done[p] += insn::kRound;
      done[0] += insn::kRound;
    }
  }
  insn::g_group = nullptr;
  if (c.errors != 0 || g.acked != g.published) {
    std::fprintf(stderr,
                 "shmbus_insn_driver: group: %llu failed operations or wrong messages (published %llu, "
                 "acked %llu)\n",
                 static_cast<unsigned long long>(c.errors), static_cast<unsigned long long>(g.published),
                 static_cast<unsigned long long>(g.acked));
    return 1;
  }
  return 0;
}

/// Runs every measured function (`only` empty), or only the one named and
/// what it needs: a publish with its drain, or a poll with its first publish
/// entry of the same size.
int run(std::uint64_t ops, std::string_view only) {
  ChannelGuard guard;
  shmbus::ChannelOptions o;
  o.capacity = insn::kCapacity;
  o.slot_size = insn::kSlotSize;
  o.policy = shmbus::Policy::block;
  auto ch = shmbus::Channel::create("insn", o, guard.bus());
  if (!ch) {
    std::fprintf(stderr, "shmbus_insn_driver: create: %s\n", ch.error().message().c_str());
    return 1;
  }
  insn::Ctx c;
  shmbus::SubscribeOptions so;
  so.start = shmbus::StartAt::earliest();
  so.wait = shmbus::WaitStrategy::busy_spin;
  auto sub = ch->subscribe(so);
  auto pub = ch->publisher();
  if (!sub || !pub) {
    std::fprintf(stderr, "shmbus_insn_driver: attach: %s\n", (!sub ? sub.error() : pub.error()).message().c_str());
    return 1;
  }
  c.sub = std::move(sub.value());
  c.pub = std::move(pub.value());

  // One lap of the ring first, through calls that no count includes
  // (try_claim + commit, poll_batch): every slot then holds a committed
  // message of the previous lap, as in a channel that has run a while, so
  // the first lap's slower take of an empty slot is not counted.
  if (!warm_up(c)) {
    std::fprintf(stderr, "shmbus_insn_driver: the warm-up lap failed\n");
    return 1;
  }

  std::array<std::uint64_t, kOps.size()> done{};
  const std::uint64_t rounds = (ops + insn::kRound - 1) / insn::kRound;
  bool drained_only = false;  // with a poll named: its first publish entry ran
  for (std::size_t p = 0; p < kOps.size(); ++p) {
    if (kOps[p].role != Role::publish) continue;
    std::size_t drain = kOps.size();
    for (std::size_t q = 0; q < kOps.size(); ++q) {
      if (kOps[q].role == Role::poll && kOps[q].size == kOps[p].size) drain = q;
    }
    if (drain == kOps.size()) {
      std::fprintf(stderr, "shmbus_insn_driver: no poll entry of %zu bytes to drain %s\n", kOps[p].size,
                   kOps[p].function);
      return 1;
    }
    if (!only.empty() && only != kOps[p].function) {
      if (only != kOps[drain].function || drained_only) continue;
      drained_only = true;
    }
    for (std::uint64_t r = 0; r < rounds; ++r) {
      kOps[p].run(c, insn::kRound);
      kOps[drain].run(c, insn::kRound);
      kOps[0].run(c, insn::kRound);  // the loop overhead, as often as the others run
      done[p] += insn::kRound;
      done[drain] += insn::kRound;
      done[0] += insn::kRound;
    }
  }
  if (const int r = run_group(c, ops, only, guard.bus(), done); r != 0) return r;
  if (c.errors != 0 || c.polled != c.published) {
    std::fprintf(stderr, "shmbus_insn_driver: %llu failed operations or wrong messages (published %llu, polled %llu)\n",
                 static_cast<unsigned long long>(c.errors), static_cast<unsigned long long>(c.published),
                 static_cast<unsigned long long>(c.polled));
    return 1;
  }
  bool found = only.empty();
  for (std::size_t i = 0; i < kOps.size(); ++i) {
    if (!only.empty() && only != kOps[i].function) continue;
    found = true;
    std::printf("op %s %s %llu %s %s\n", kOps[i].function, name_of(kOps[i].role),
                static_cast<unsigned long long>(done[i]), kOps[i].api, kOps[i].label);
  }
  if (!found) {
    std::fprintf(stderr, "shmbus_insn_driver: no measured function '%.*s'\n", static_cast<int>(only.size()),
                 only.data());
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t ops = 100'000;
  std::string_view only;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    char* end = nullptr;
    if (a == "--ops" && i + 1 < argc && (ops = std::strtoull(argv[++i], &end, 10)) > 0 && *end == '\0') continue;
    if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
      continue;
    }
    std::fprintf(stderr,
                 "usage: %s [--ops N] [--only FUNCTION]   (N > 0 operations per measured function; default "
                 "100000)\n",
                 argv[0]);
    return 2;
  }
  return run(ops, only);
}
