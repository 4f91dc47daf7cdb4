// Consumer groups across processes: real fork()ed consumers, real SIGKILL and
// SIGSTOP. What a consumer did is written to a MAP_SHARED anonymous mapping
// made before fork (a ledger), so it survives the consumer's death and the
// parent can prove, message by message, what the group promises: at least
// once, duplicates only where a consumer died (or lost its lease) before its
// ack completed, and poison messages end in the DLQ without holding up the
// others.
//
// Every test synchronises on events — a pipe (test::Event), a ledger word, or
// the group's own floor — never on a sleep that assumes another process got
// somewhere; the only waits on time are for a lease deadline the group is
// configured with. Every loop is bounded, and every child is killed and
// reaped by its guard if a check fails.
//
// Built twice: shmbus_group_process_tests (label multiprocess, a quick tier of
// the random-kill test) and shmbus_group_crash_soak (label slow, opt-in: only
// the random-kill test, with SHMBUS_CRASH_TRIALS trials).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iterator>
#include <memory>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "bus/group/consumer_core.hpp"
#include "shm/clock.hpp"

#include "group_test_util.hpp"
#include "process_test_util.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

#ifdef SHMBUS_CRASH_TRIALS
#define SHMBUS_CRASH_SOAK 1
#else
#define SHMBUS_CRASH_TRIALS 30
#endif

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// Bound on every wait for a peer: far above anything a healthy run needs.
constexpr auto kBound = 10s;
constexpr std::uint64_t kBoundNs = 10'000'000'000ULL;

ChannelOptions block_channel(std::uint32_t capacity) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = 64;
  o.policy = Policy::block;
  return o;
}

/// Polls (bounded) until the group's floor reaches `n`. Between polls
/// `between()` runs (e.g. to replace dead consumers). False at the bound.
bool wait_floor(const Channel& ch, std::string_view group, std::uint64_t n, const std::function<void()>& between = {}) {
  const auto deadline = Clock::now() + kBound;
  while (group_floor(ch, group) < n) {
    if (Clock::now() >= deadline) return false;
    if (between) between();
    ::sched_yield();
  }
  return true;
}

const GroupStats* find_group_stats(const ChannelStats& st, std::string_view name) {
  for (const auto& g : st.groups) {
    if (g.name == name) return &g;
  }
  return nullptr;
}

/// The stats of group "g" of `ch`, from a fresh snapshot; fails the test if
/// the channel has no such group.
[[maybe_unused]] GroupStats group_g_stats(const Channel& ch) {
  const ChannelStats st = ch.stats();
  const GroupStats* gs = find_group_stats(st, "g");
  REQUIRE(gs != nullptr);
  return *gs;
}

/// Publishes the values 0..n-1 (each equal to the sequence it will get on a
/// fresh channel). Used from the parent when the ring holds all n.
[[maybe_unused]] void publish_values(Channel& ch, std::uint64_t n, std::uint64_t poison_at = ~0ULL,
                                     std::uint64_t poison_bit = 0) {
  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t v = 0; v < n; ++v) {
    const std::uint64_t payload = v == poison_at ? (v | poison_bit) : v;
    REQUIRE(pub->publish(bytes_of(payload), {}, kBoundNs) == PublishStatus::ok);
  }
}

/// What a consumer process holds: its own handle on the channel and its
/// consumer of group "g".
struct GroupMember {
  Channel channel;
  Consumer consumer;
  std::byte buffer[64];  ///< where take_one() puts the message

  /// Opens channel `name` on the test bus and joins group "g" with `g`.
  /// Returns 0, or the child's exit code: 10 if the open failed, 11 if the
  /// join did.
  int join(const std::string& name, const GroupOptions& g) {
    auto c = Channel::open(name, kTestBus);
    if (!c) return 10;
    channel = std::move(c.value());
    auto con = channel.join_group("g", g);
    if (!con) return 11;
    consumer = std::move(con.value());
    return 0;
  }

  /// Joins as join() does, then receives one message into `d` (bounded).
  /// Returns 0, or the child's exit code: join()'s, or 12 if none came.
  int take_one(const std::string& name, const GroupOptions& g, Delivery& d) {
    if (const int rc = join(name, g); rc != 0) return rc;
    return consumer.receive_wait(d, buffer, kBoundNs) == PollStatus::ok ? 0 : 12;
  }
};

/// Body of a consumer process that takes one message, reports its sequence
/// on `took` and holds the lease until it is killed. Exits as
/// GroupMember::take_one() says if it cannot.
[[maybe_unused]] int hold_one(const std::string& name, const GroupOptions& g, Event& took) {
  GroupMember member;
  Delivery d;
  if (const int rc = member.take_one(name, g, d); rc != 0) return rc;
  took.signal(d.sequence);
  pause_forever();
}

// ---------------------------------------------------------------------------
// Ledger of the random-kill test.

/// Where a consumer is. The parent can ask one consumer to raise a flag when
/// it reaches a phase (and to hold there until it is killed).
enum Phase : std::uint32_t {
  kJoining = 0,        ///< forked, opening the channel and joining the group
  kReceiving = 1,      ///< about to call receive_wait, or in it
  kWorking = 2,        ///< entry written ("processed"), before ack
  kAcking = 3,         ///< about to call ack, or in it
  kAckedUnmarked = 4,  ///< ack returned ok, entry not marked yet
};

/// How the parent picks the moment of a kill.
enum KillKind : std::uint32_t {
  kAnywhere = 0,       ///< a random consumer once a random number of messages were processed
  kWhileJoining = 1,   ///< a fresh consumer, after a random spin (start, open, join)
  kInReceive = 2,      ///< a random spin after the victim entered receive
  kHeldAfterWork = 3,  ///< held after processing, before ack: must be redelivered
  kAroundAck = 4,      ///< a random spin after the victim is about to ack
  kHeldAfterAck = 5,   ///< held after its ack completed, before the mark: must not be redelivered
};
constexpr int kKillKinds = 6;
const char* const kKillNames[kKillKinds] = {"anywhere",   "joining",    "in receive",
                                            "after work", "around ack", "after ack"};

enum EntryState : std::uint32_t {
  kProcessed = 1,  ///< processed; ack not known to have completed
  kAckOk = 2,      ///< ack returned ok
  kAckLost = 3,    ///< ack returned lease_lost
};

/// One delivery a consumer processed.
struct LedgerEntry {
  std::atomic<std::uint64_t> seq;
  std::atomic<std::uint32_t> attempt;
  std::atomic<std::uint32_t> state;  ///< EntryState
  std::atomic<std::uint32_t> late;   ///< kAckLost only: its lease deadline had passed
};

constexpr std::uint32_t kMaxEntries = 1024;

/// What one consumer process did, in order. Single writer (the consumer).
struct ConsumerLedger {
  std::atomic<std::uint32_t> phase;
  std::atomic<std::uint32_t> count;  ///< entries written; SYNC(ledger): release after the entry
  std::atomic<std::uint32_t> error;  ///< nonzero: the consumer saw something impossible
  LedgerEntry entries[kMaxEntries];
};

constexpr int kMaxLedgers = 12;  ///< consumers per trial, replacements included

struct TrialLedger {
  std::atomic<std::uint32_t> stop;  ///< set by the parent: consumers exit 0
  KillTarget target;
  ConsumerLedger consumers[kMaxLedgers];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

std::uint32_t ledger_entries(const TrialLedger& t) {
  std::uint32_t n = 0;
  for (const ConsumerLedger& c : t.consumers) n += c.count.load(std::memory_order_acquire);
  return n;
}

/// A consumer enters phase `p`: publishes it and, if it is the parent's
/// target, raises the flag (and holds, bounded, until it is killed).
void enter(TrialLedger& t, int me, Phase p) {
  t.consumers[me].phase.store(p, std::memory_order_release);
  reach(t.target, me, p, ledger_entries(t), kBound);
}

/// Body of a consumer process of the random-kill test: receives, "processes"
/// (writes the entry, spins), acks, marks the entry; random spins around
/// the ack. Exits 0 when told to stop.
int ledger_consumer(const std::string& name, const GroupOptions& g, TrialLedger& t, int me, std::uint64_t seed) {
  ConsumerLedger& led = t.consumers[me];
  GroupMember member;
  if (const int rc = member.join(name, g); rc != 0) return rc;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint64_t> work(0, 300'000);  // "processing"
  std::uniform_int_distribution<std::uint64_t> pause(0, 2'000);   // around the ack
  const auto deadline = Clock::now() + 2 * kBound;
  for (;;) {
    if (t.stop.load(std::memory_order_acquire) != 0) return 0;
    if (Clock::now() >= deadline) return 12;
    enter(t, me, kReceiving);
    Delivery d;
    std::byte buf[64];
    const PollStatus st = member.consumer.receive_wait(d, buf, 5'000'000);
    if (st == PollStatus::timeout || st == PollStatus::empty) continue;
    if (st != PollStatus::ok) {
      led.error.store(100 + static_cast<std::uint32_t>(st), std::memory_order_release);
      return 13;
    }
    if (value_of<std::uint64_t>(d.message.payload) != d.sequence) {
      led.error.store(2, std::memory_order_release);
      return 14;
    }
    const std::uint32_t i = led.count.load(std::memory_order_relaxed);
    if (i >= kMaxEntries) return 15;
    LedgerEntry& e = led.entries[i];
    // relaxed: published by the release store of `count` below.
    e.seq.store(d.sequence, std::memory_order_relaxed);
    e.attempt.store(d.attempt, std::memory_order_relaxed);
    e.state.store(kProcessed, std::memory_order_relaxed);
    // SYNC(ledger): release, pairs with the parent's acquire of `count`: the
    // entry is in the ledger before the ack can happen.
    led.count.store(i + 1, std::memory_order_release);
    enter(t, me, kWorking);
    spin_for(work(rng));
    enter(t, me, kAcking);
    spin_for(pause(rng));
    const AckStatus a = member.consumer.ack(d);
    if (a == AckStatus::ok) {
      enter(t, me, kAckedUnmarked);
      e.state.store(kAckOk, std::memory_order_release);
    } else if (a == AckStatus::lease_lost) {
      // Legitimate only once the lease deadline passed (ms granularity).
      e.late.store(shm::monotonic_ns() + 2'000'000 >= d.deadline_ns ? 1 : 0, std::memory_order_relaxed);
      e.state.store(kAckLost, std::memory_order_release);
    } else {
      led.error.store(200 + static_cast<std::uint32_t>(a), std::memory_order_release);
      return 16;
    }
    spin_for(pause(rng));
  }
}

/// Figures over all trials of the random-kill test.
struct CrashFigures {
  std::uint64_t trials = 0;
  std::uint64_t messages = 0;
  std::uint64_t kills = 0;
  std::uint64_t kills_by_kind[kKillKinds] = {};
  std::uint64_t kills_after_work_done = 0;     ///< the work was finished before the moment came
  std::uint64_t deliveries = 0;                ///< ledger entries
  std::uint64_t duplicates = 0;                ///< messages processed more than once
  std::uint64_t extra_processings = 0;         ///< entries beyond the first, per message
  std::uint64_t lost = 0;                      ///< messages nobody processed (must be 0)
  std::uint64_t acked_by_killed_unmarked = 0;  ///< killed after its ack, before the ledger mark
  std::uint64_t lease_lost = 0;                ///< acks refused as lease_lost
  std::uint64_t early_lease_lost = 0;          ///< ... before the lease deadline (must be 0)
  std::uint64_t uncounted_acks = 0;            ///< acks the group counter missed (killed mid-ack)
  std::uint64_t group_redelivered = 0;
  std::uint64_t group_expired = 0;
  std::uint64_t group_dead_releases = 0;
};

/// One trial: see the TEST_CASE below. Adds to `fig`.
void crash_trial(std::mt19937_64& rng, std::uint64_t trial, CrashFigures& fig) {
  constexpr std::uint32_t kN = 200;
  ScopedGroupChannelName name("gp-crash");
  Channel ch = make_channel(name, block_channel(64));  // < kN: the publisher waits on the floor
  GroupOptions g;
  g.start = StartAt::earliest();
  g.visibility_timeout_ns = 150'000'000;  // 150 ms
  g.max_deliveries = 255;                 // crashes never send a message to the DLQ here
  g.wait = WaitStrategy::block;
  {
    auto c = ch.join_group("g", g);
    REQUIRE(c);
  }  // the group exists from sequence 0

  SharedMap<TrialLedger> t;
  std::vector<std::unique_ptr<Child>> consumers;
  std::vector<bool> killed;
  auto spawn = [&] {
    const int idx = static_cast<int>(consumers.size());
    REQUIRE(idx < kMaxLedgers);
    const std::uint64_t seed = rng();
    consumers.push_back(
        std::make_unique<Child>([&, idx, seed] { return ledger_consumer(name.str(), g, *t, idx, seed); }));
    killed.push_back(false);
    return idx;
  };
  const int initial = std::uniform_int_distribution<int>(2, 3)(rng);
  for (int i = 0; i < initial; ++i) spawn();
  Child publisher([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    auto pub = c->publisher();
    if (!pub) return 11;
    for (std::uint64_t v = 0; v < kN; ++v) {
      const PublishStatus st = pub->publish(bytes_of(v), {}, kBoundNs);
      if (st != PublishStatus::ok) return 20 + static_cast<int>(st);
    }
    return 0;
  });

  // The kills (1 or 2), each of a random kind, once a random number of
  // messages were processed; a replacement joins after each.
  struct Kill {
    int victim;
    KillKind kind;
    bool hit;
  };
  std::vector<Kill> kills;
  const int n_kills = std::uniform_int_distribution<int>(1, 2)(rng);
  std::uint32_t after = 0;
  std::string what;
  for (int k = 0; k < n_kills; ++k) {
    after = std::uniform_int_distribution<std::uint32_t>(after, kN * 3 / 4)(rng);
    const auto kind = static_cast<KillKind>(std::uniform_int_distribution<int>(0, kKillKinds - 1)(rng));
    std::vector<int> live;
    for (int i = 0; i < static_cast<int>(consumers.size()); ++i) {
      if (!killed[static_cast<std::size_t>(i)]) live.push_back(i);
    }
    int victim = live[std::uniform_int_distribution<std::size_t>(0, live.size() - 1)(rng)];
    bool hit = true;
    std::uint64_t spin = 0;
    const auto deadline = Clock::now() + kBound;
    auto work_done = [&] { return group_floor(ch, "g") >= kN || Clock::now() >= deadline; };
    switch (kind) {
      case kAnywhere:
        while (!(hit = ledger_entries(*t) >= after) && !work_done()) ::sched_yield();
        spin = std::uniform_int_distribution<std::uint64_t>(0, 200'000)(rng);
        break;
      case kWhileJoining:
        victim = spawn();
        spin = std::uniform_int_distribution<std::uint64_t>(0, 2'000'000)(rng);
        break;
      default: {
        const Phase phase = kind == kInReceive       ? kReceiving
                            : kind == kHeldAfterWork ? kWorking
                            : kind == kAroundAck     ? kAcking
                                                     : kAckedUnmarked;
        const bool hold = kind == kHeldAfterWork || kind == kHeldAfterAck;
        KillTarget& tg = t->target;
        tg.phase.store(phase, std::memory_order_relaxed);
        tg.after.store(after, std::memory_order_relaxed);
        tg.hold.store(hold ? 1 : 0, std::memory_order_relaxed);
        tg.reached.store(0, std::memory_order_relaxed);
        tg.armed.store(1, std::memory_order_release);  // the first live consumer there is the victim
        while (tg.reached.load(std::memory_order_acquire) == 0 && !work_done()) ::sched_yield();
        // Settle who got there, against a consumer arriving as we give up:
        // the consumer's CAS 0 -> index+1 or ours 0 -> kCancelled.
        std::uint32_t r = 0;
        hit = !tg.reached.compare_exchange_strong(r, kCancelled, std::memory_order_acq_rel);
        tg.armed.store(0, std::memory_order_release);
        if (hit) victim = static_cast<int>(r) - 1;
        spin = hold ? 0 : std::uniform_int_distribution<std::uint64_t>(0, 20'000)(rng);
        break;
      }
    }
    spin_for(spin);  // moves the kill point at random; nothing waits on it
    const int rc = consumers[static_cast<std::size_t>(victim)]->kill_and_wait();
    INFO("trial " << trial << ": kill " << k << " (" << kKillNames[kind] << ") of consumer " << victim);
    REQUIRE(rc == kKilled);
    killed[static_cast<std::size_t>(victim)] = true;
    kills.push_back({victim, kind, hit});
    ++fig.kills;
    ++fig.kills_by_kind[kind];
    if (!hit) ++fig.kills_after_work_done;
    what += " consumer " + std::to_string(victim) + " " + kKillNames[kind] + (hit ? "" : " (late)") + " after " +
            std::to_string(after) + " entries;";
    spawn();
  }
  INFO("trial " << trial << ", " << initial << " consumers, kills:" << what);

  // The work must finish: the dead consumers' leases go back to the group.
  const bool done = wait_floor(ch, "g", kN);
  t->stop.store(1, std::memory_order_release);
  CHECK(publisher.wait() == 0);
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    if (killed[i]) continue;
    INFO("consumer " << i << " error word " << t->consumers[i].error.load() << ", phase "
                     << t->consumers[i].phase.load());
    CHECK(consumers[i]->wait() == 0);
  }
  const ChannelStats st = ch.stats();
  const GroupStats* gs = find_group_stats(st, "g");
  REQUIRE(gs != nullptr);
  INFO("group: next " << gs->next << " floor " << gs->floor << " delivered " << gs->delivered << " acked " << gs->acked
                      << " redelivered " << gs->redelivered << " expired " << gs->expired << " dead-consumer releases "
                      << gs->dead_consumer_releases << " lost " << gs->lost);
  REQUIRE(done);
  CHECK(st.head == kN);
  CHECK(gs->floor == kN);
  // The floor at N with nothing lost or dead-lettered means every lease word
  // ended `acked`. The `acked` counter is a statistic bumped after the ack's
  // CAS, so a consumer killed between the two leaves it one short.
  CHECK(gs->acked + gs->dead_lettered <= kN);
  CHECK(gs->acked + gs->dead_lettered + kills.size() >= kN);
  CHECK(gs->dead_lettered == 0);
  CHECK(gs->lost == 0);
  CHECK(gs->in_flight == 0);
  CHECK(gs->due == 0);

  // The ledger, message by message.
  struct PerSeq {
    std::uint32_t entries = 0, ack_ok = 0, killed_unconfirmed = 0, ack_lost = 0;
    std::vector<std::uint32_t> attempts;
  };
  std::vector<PerSeq> seqs(kN);
  std::uint64_t out_of_range = 0, unconfirmed_by_survivor = 0, unconfirmed_not_last = 0, early_lease_lost = 0;
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    const ConsumerLedger& led = t->consumers[i];
    const std::uint32_t n = led.count.load(std::memory_order_acquire);
    for (std::uint32_t j = 0; j < n; ++j) {
      const LedgerEntry& e = led.entries[j];
      const std::uint64_t s = e.seq.load(std::memory_order_relaxed);
      if (s >= kN) {
        ++out_of_range;
        continue;
      }
      PerSeq& p = seqs[s];
      ++p.entries;
      p.attempts.push_back(e.attempt.load(std::memory_order_relaxed));
      switch (e.state.load(std::memory_order_acquire)) {
        case kAckOk: ++p.ack_ok; break;
        case kAckLost:
          ++p.ack_lost;
          if (e.late.load(std::memory_order_relaxed) == 0) ++early_lease_lost;
          break;
        default:  // processed, ack not known to have completed
          if (!killed[i]) ++unconfirmed_by_survivor;
          if (j + 1 != n) ++unconfirmed_not_last;  // a consumer handles one message at a time
          ++p.killed_unconfirmed;
          break;
      }
    }
  }
  std::uint64_t lost = 0, acked_twice = 0, unexplained = 0, repeated_attempts = 0, unacked = 0;
  std::uint64_t duplicates = 0, extra = 0, deliveries = 0, unmarked = 0, late_lost = 0;
  for (std::uint64_t s = 0; s < kN; ++s) {
    PerSeq& p = seqs[s];
    deliveries += p.entries;
    late_lost += p.ack_lost;
    if (p.entries == 0) ++lost;
    if (p.ack_ok > 1) ++acked_twice;
    // The message was acked once: by an entry marked ok, or by a killed
    // consumer whose ack completed before its mark.
    if (p.ack_ok == 0) {
      if (p.killed_unconfirmed == 0) ++unacked;
      ++unmarked;
    }
    if (p.entries > 1) {
      ++duplicates;
      extra += p.entries - 1;
      // A second processing is explained only by a delivery whose ack did
      // not complete: its consumer was killed first, or its lease expired.
      if (p.killed_unconfirmed + p.ack_lost == 0) ++unexplained;
    }
    std::sort(p.attempts.begin(), p.attempts.end());
    if (std::adjacent_find(p.attempts.begin(), p.attempts.end()) != p.attempts.end()) ++repeated_attempts;
  }
  INFO("ledger: " << deliveries << " entries, " << duplicates << " duplicated messages, " << lost << " lost, "
                  << unmarked << " acked by a consumer killed before its mark");
  CHECK(out_of_range == 0);
  CHECK(lost == 0);                     // every message processed at least once
  CHECK(unacked == 0);                  // ... and acked
  CHECK(acked_twice == 0);              // an ack succeeds once per message
  CHECK(unexplained == 0);              // duplicates only where an ack did not complete
  CHECK(repeated_attempts == 0);        // each delivery (attempt) goes to one consumer
  CHECK(unconfirmed_by_survivor == 0);  // survivors finish what they start
  CHECK(unconfirmed_not_last == 0);
  CHECK(early_lease_lost == 0);  // a live consumer keeps its lease until its deadline
  CHECK(gs->delivered >= deliveries);

  // The held kills say exactly what must have happened to the victim's
  // last message: processed but not acked -> delivered again and acked by
  // someone else; acked but not marked -> never delivered again.
  for (const Kill& k : kills) {
    if (!k.hit || (k.kind != kHeldAfterWork && k.kind != kHeldAfterAck)) continue;
    const ConsumerLedger& led = t->consumers[k.victim];
    const std::uint32_t n = led.count.load(std::memory_order_acquire);
    INFO("held kill (" << kKillNames[k.kind] << ") of consumer " << k.victim);
    REQUIRE(n > 0);
    const LedgerEntry& e = led.entries[n - 1];
    CHECK(e.state.load() == kProcessed);
    const PerSeq& p = seqs[e.seq.load()];
    const std::uint32_t attempt = e.attempt.load();
    const bool delivered_again = !p.attempts.empty() && p.attempts.back() > attempt;  // sorted
    INFO("sequence " << e.seq.load() << ", victim's attempt " << attempt);
    if (k.kind == kHeldAfterWork) {
      CHECK(delivered_again);  // (and acked by then: see `unacked` above)
    } else {
      CHECK_FALSE(delivered_again);
    }
  }

  fig.trials += 1;
  fig.messages += kN;
  fig.deliveries += deliveries;
  fig.duplicates += duplicates;
  fig.extra_processings += extra;
  fig.lost += lost;
  fig.acked_by_killed_unmarked += unmarked;
  fig.lease_lost += late_lost;
  fig.early_lease_lost += early_lease_lost;
  fig.uncounted_acks += kN - std::min<std::uint64_t>(kN, gs->acked + gs->dead_lettered);
  fig.group_redelivered += gs->redelivered;
  fig.group_expired += gs->expired;
  fig.group_dead_releases += gs->dead_consumer_releases;
}

#ifdef SHMBUS_CRASH_SOAK
#define CRASH_TEST_NAME                                                                           \
  "consumers killed at random points lose no message: every published message is acked at least " \
  "once (soak)"
#else
#define CRASH_TEST_NAME                                                                           \
  "consumers killed at random points lose no message: every published message is acked at least " \
  "once"
#endif

}  // namespace

TEST_CASE(CRASH_TEST_NAME) {
  // Each trial: a publisher process publishes 0..N-1 into a 64-slot block
  // ring (so it also waits on the group floor); 2-3 consumer processes take
  // them, each writing a ledger entry before its ack and marking it after;
  // the parent SIGKILLs 1-2 consumers, each once a random number of
  // messages were processed, at a moment of a random kind (anywhere; while
  // it joins; in its receive; held after processing, before its ack; around
  // its ack; held after its ack, before its mark) plus a random spin, and a
  // replacement joins. The trial ends when the group floor reaches N.
  const std::uint64_t trials = SHMBUS_CRASH_TRIALS;
  std::mt19937_64 rng(0x9c0ff1ce);
  CrashFigures fig;
  const auto start = Clock::now();
  for (std::uint64_t trial = 0; trial < trials; ++trial) crash_trial(rng, trial, fig);
  const auto secs = std::chrono::duration<double>(Clock::now() - start).count();

  std::ostringstream line;
  line << "group crash trials: " << fig.trials << " trials, " << fig.messages << " messages, " << fig.kills
       << " kills (";
  for (int k = 0; k < kKillKinds; ++k) {
    line << (k == 0 ? "" : ", ") << kKillNames[k] << " " << fig.kills_by_kind[k];
  }
  line << "; " << fig.kills_after_work_done << " after the work was done); " << fig.deliveries << " deliveries; "
       << fig.duplicates << " messages processed more than once (" << fig.extra_processings << " extra processings); "
       << fig.lost << " lost; " << fig.acked_by_killed_unmarked
       << " acks completed by a consumer killed before its ledger mark; " << fig.lease_lost
       << " acks refused as lease_lost (" << fig.early_lease_lost << " before the lease deadline); "
       << "group counters: " << fig.group_redelivered << " redelivered, " << fig.group_expired << " expired, "
       << fig.group_dead_releases << " dead-consumer releases, " << fig.uncounted_acks
       << " acks not counted (killed between the ack CAS and the counter); " << std::fixed << std::setprecision(1)
       << secs << " s";
  std::printf("%s\n", line.str().c_str());
  std::fflush(stdout);
  CHECK(fig.trials == trials);
  CHECK(fig.lost == 0);
  // The random points must mostly land while there was work in hand.
  CHECK(fig.kills_after_work_done * 4 <= fig.kills);
}

#ifndef SHMBUS_CRASH_SOAK

TEST_CASE("a poison message reaches the DLQ after exactly max_deliveries and never stops the others") {
  // Every consumer process that receives the poison payload kills itself
  // (SIGKILL, lease in hand); the parent replaces each dead consumer. The
  // long visibility timeout means only dead-consumer detection redelivers.
  constexpr std::uint64_t kN = 40;
  constexpr std::uint64_t kPoisonAt = 7;
  constexpr std::uint64_t kPoisonBit = 1ULL << 63;
  constexpr std::uint32_t kMaxDeliveries = 3;
  ScopedGroupChannelName name("gp-poison");
  Channel ch = make_channel(name, block_channel(64));
  GroupOptions g;
  g.visibility_timeout_ns = 60'000'000'000ULL;
  g.max_deliveries = kMaxDeliveries;
  {
    auto c = ch.join_group("g", g);
    REQUIRE(c);
  }
  publish_values(ch, kN, kPoisonAt, kPoisonBit);

  struct Shared {
    std::atomic<std::uint32_t> stop;
    std::atomic<std::uint32_t> poison_deliveries;
    std::atomic<std::uint32_t> poison_attempts[16];
    std::atomic<std::uint32_t> acks[kN];
    std::atomic<std::uint32_t> errors;
  };
  SharedMap<Shared> sh;
  auto body = [&]() -> int {
    GroupMember member;
    if (const int rc = member.join(name.str(), g); rc != 0) return rc;
    const auto deadline = Clock::now() + kBound;
    while (sh->stop.load(std::memory_order_acquire) == 0) {
      if (Clock::now() >= deadline) return 12;
      Delivery d;
      std::byte buf[64];
      const PollStatus st = member.consumer.receive_wait(d, buf, 20'000'000);
      if (st == PollStatus::timeout || st == PollStatus::empty) continue;
      if (st != PollStatus::ok) return 13;
      const auto v = value_of<std::uint64_t>(d.message.payload);
      if ((v & kPoisonBit) != 0) {
        const std::uint32_t k = sh->poison_deliveries.fetch_add(1, std::memory_order_acq_rel);
        if (k < 16) sh->poison_attempts[k].store(d.attempt, std::memory_order_release);
        ::kill(::getpid(), SIGKILL);  // "crashes" on it, every time
        pause_forever();
      }
      if (v != d.sequence || v >= kN) return 14;
      if (member.consumer.ack(d) == AckStatus::ok) {
        sh->acks[v].fetch_add(1, std::memory_order_acq_rel);
      } else {
        sh->errors.fetch_add(1, std::memory_order_relaxed);
      }
    }
    return 0;
  };

  std::vector<std::unique_ptr<Child>> consumers;
  for (int i = 0; i < 2; ++i) consumers.push_back(std::make_unique<Child>(body));
  int crashes = 0, other_exits = 0;
  // Replace every consumer that died (at most a few dozen: bounded).
  auto replace_dead = [&] {
    for (auto& c : consumers) {
      if (c->reaped() || !c->try_wait()) continue;
      const int rc = c->wait();
      (rc == kKilled ? crashes : other_exits) += 1;
      if (consumers.size() < 32) consumers.push_back(std::make_unique<Child>(body));
      break;  // the vector changed
    }
  };
  const bool done = wait_floor(ch, "g", kN, replace_dead);
  sh->stop.store(1, std::memory_order_release);
  for (auto& c : consumers) {
    if (c->reaped()) continue;
    const int rc = c->wait();
    if (rc != 0) (rc == kKilled ? crashes : other_exits) += 1;
  }
  const GroupStats gs = group_g_stats(ch);
  INFO("floor " << gs.floor << ", acked " << gs.acked << ", dead-lettered " << gs.dead_lettered << ", redelivered "
                << gs.redelivered << ", crashes " << crashes);
  REQUIRE(done);
  CHECK(other_exits == 0);
  CHECK(sh->errors.load() == 0);
  CHECK(crashes == static_cast<int>(kMaxDeliveries));
  REQUIRE(sh->poison_deliveries.load() == kMaxDeliveries);
  for (std::uint32_t k = 0; k < kMaxDeliveries; ++k) CHECK(sh->poison_attempts[k].load() == k + 1);
  // Every other message acked exactly once; the poison never.
  for (std::uint64_t s = 0; s < kN; ++s) {
    INFO("sequence " << s);
    CHECK(sh->acks[s].load() == (s == kPoisonAt ? 0u : 1u));
  }
  CHECK(gs.floor == kN);
  CHECK(gs.acked == kN - 1);
  CHECK(gs.dead_lettered == 1);
  CHECK(gs.redelivered == kMaxDeliveries - 1);
  CHECK(gs.lost == 0);
  CHECK(gs.expired == 0);  // the dead owners were detected, not waited out
  CHECK(gs.dead_consumer_releases == kMaxDeliveries);

  // The DLQ holds the poison message, once, with its record.
  DlqReader reader(name.dlq());
  const bus::DlqRecord rec = reader.next(sizeof(std::uint64_t));
  check_max_deliveries_letter(rec, reader.message(), kPoisonAt, kMaxDeliveries, "g", name.str());
  CHECK(value_of<std::uint64_t>(reader.payload()) == (kPoisonAt | kPoisonBit));
  CHECK(reader.poll() == PollStatus::empty);  // dead-lettered once
}

namespace {

/// Whether process `pid` is stopped (state T in /proc/<pid>/stat).
bool is_stopped(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T';
}

/// A consumer process takes message `skip` (after `skip` messages went
/// through a 4-slot ring) and is SIGKILLed with the lease in hand. The group
/// allows one consumer, so the replacement's join frees the dead one's entry
/// and reuses its index; it must make the dead one's leases due first, or the
/// replacement would take itself for their (live) owner and wait out the
/// minute-long lease. Returns the replacement's receive status.
PollStatus take_over_dead_entry(std::uint64_t skip, Delivery& d) {
  ScopedGroupChannelName name("gp-reuse");
  ChannelOptions o = block_channel(4);
  o.max_consumers = 1;
  Channel ch = make_channel(name, o);
  GroupOptions g;
  g.visibility_timeout_ns = 60'000'000'000ULL;
  auto pub = ch.publisher();
  REQUIRE(pub);
  std::byte buf[64];
  {
    auto c = ch.join_group("g", g);
    REQUIRE(c);
    for (std::uint64_t v = 0; v < skip; ++v) {
      REQUIRE(pub->publish(bytes_of(v), {}, kBoundNs) == PublishStatus::ok);
      Delivery x;
      REQUIRE(c->receive(x, buf) == PollStatus::ok);
      REQUIRE(x.sequence == v);
      REQUIRE(c->ack(x) == AckStatus::ok);
    }
  }  // leaves: the only consumer entry is free again
  REQUIRE(pub->publish(bytes_of(skip), {}, kBoundNs) == PublishStatus::ok);
  Event took;
  Child holder([&] { return hold_one(name.str(), g, took); });
  std::uint64_t seq = ~0ULL;
  REQUIRE(took.wait(seq, ms_left(Clock::now() + kBound)));
  REQUIRE(seq == skip);
  REQUIRE(holder.kill_and_wait() == kKilled);
  auto replacement = ch.join_group("g", g);  // the table is full: frees the dead entry
  REQUIRE(replacement);
  return replacement->receive_wait(d, buf, 3'000'000'000ULL);
}

}  // namespace

TEST_CASE("a replacement that reuses a dead consumer's entry gets its leases at once") {
  Delivery d;
  REQUIRE(take_over_dead_entry(5, d) == PollStatus::ok);
  CHECK(d.sequence == 5);
  CHECK(d.attempt == 2);
}

// Past lap 255: the lease word's lap tag must be compared with the same
// width everywhere (an 8-bit ConsumerCore::lap() against the 16-bit tag of
// release_leases_of() once left the dead consumer's leases held here).
TEST_CASE(
    "a replacement that reuses a dead consumer's entry gets its leases at once, also after 256 "
    "laps of the ring") {
  Delivery d;
  REQUIRE(take_over_dead_entry(300 * 4 + 1, d) == PollStatus::ok);
  CHECK(d.sequence == 300 * 4 + 1);
  CHECK(d.attempt == 2);
}

TEST_CASE("a consumer that hangs without dying has its lease expire and the message redelivered") {
  constexpr std::uint64_t kVisibilityNs = 200'000'000;  // 200 ms
  ScopedGroupChannelName name("gp-hang");
  Channel ch = make_channel(name, block_channel(16));
  GroupOptions g;
  g.visibility_timeout_ns = kVisibilityNs;
  g.max_deliveries = 5;
  {
    auto c = ch.join_group("g", g);
    REQUIRE(c);
  }
  publish_values(ch, 1);

  Event got, go, result;
  Child hung([&]() -> int {
    GroupMember member;
    Delivery d;
    if (const int rc = member.take_one(name.str(), g, d); rc != 0) return rc;
    got.signal(d.sequence);
    got.signal(d.attempt);
    got.signal(d.deadline_ns);
    // Stopped here by the parent; once continued, it tries its late ack.
    if (!go.wait(static_cast<int>(2 * kBound / 1ms))) return 13;
    result.signal(static_cast<std::uint64_t>(member.consumer.ack(d)));
    pause_forever();
  });
  std::uint64_t seq = ~0ULL, attempt = 0, deadline_ns = 0;
  REQUIRE(got.wait(seq, ms_left(Clock::now() + kBound)));
  REQUIRE(got.wait(attempt, ms_left(Clock::now() + kBound)));
  REQUIRE(got.wait(deadline_ns, ms_left(Clock::now() + kBound)));
  CHECK(seq == 0);
  CHECK(attempt == 1);
  REQUIRE(::kill(hung.pid(), SIGSTOP) == 0);
  const auto bound = Clock::now() + kBound;
  while (!is_stopped(hung.pid())) {
    REQUIRE(Clock::now() < bound);
    ::sched_yield();
  }

  // Another consumer gets the message once the hung one's lease expires:
  // not before its deadline (the lease clock counts whole milliseconds),
  // with attempt 2. The hung process is alive, so only the deadline frees it.
  auto other = ch.join_group("g", g);
  REQUIRE(other);
  Delivery d;
  std::byte buf[64];
  REQUIRE(other->receive_wait(d, buf, kBoundNs) == PollStatus::ok);
  const std::uint64_t got_at = shm::monotonic_ns();
  CHECK(d.sequence == seq);
  CHECK(d.attempt == 2);
  CHECK(got_at + 1'000'000 >= deadline_ns);
  {
    const GroupStats gs = group_g_stats(ch);
    CHECK(gs.expired == 1);
    CHECK(gs.redelivered == 1);
    CHECK(gs.dead_consumer_releases == 0);
    bool hung_alive = false;
    for (const auto& c : gs.consumers) {
      hung_alive |= c.pid == static_cast<std::uint32_t>(hung.pid()) && c.alive;
    }
    CHECK(hung_alive);
  }
  REQUIRE(other->ack(d) == AckStatus::ok);

  // Woken up, the hung consumer is refused its late ack; then it is killed.
  REQUIRE(::kill(hung.pid(), SIGCONT) == 0);
  go.signal();
  std::uint64_t late = 99;
  REQUIRE(result.wait(late, ms_left(Clock::now() + kBound)));
  CHECK(static_cast<AckStatus>(late) == AckStatus::lease_lost);
  CHECK(hung.kill_and_wait() == kKilled);
  const GroupStats gs = group_g_stats(ch);
  CHECK(gs.acked == 1);
  CHECK(gs.floor == 1);
  CHECK(gs.in_flight == 0);
}

TEST_CASE("when all consumers are dead, a new consumer joins and finishes the work") {
  // Two consumer processes each take a message and are SIGKILLed with the
  // lease in hand; nobody else is a member. The visibility timeout is a
  // minute, so a new consumer can only finish in time through dead-consumer
  // detection.
  constexpr std::uint64_t kN = 20;
  ScopedGroupChannelName name("gp-alldead");
  Channel ch = make_channel(name, block_channel(32));
  GroupOptions g;
  g.visibility_timeout_ns = 60'000'000'000ULL;
  g.max_deliveries = 5;
  {
    auto c = ch.join_group("g", g);
    REQUIRE(c);
  }
  publish_values(ch, kN);

  Event took;
  auto holder = [&] { return hold_one(name.str(), g, took); };
  Child a(holder), b(holder);
  std::uint64_t s1 = ~0ULL, s2 = ~0ULL;
  REQUIRE(took.wait(s1, ms_left(Clock::now() + kBound)));
  REQUIRE(took.wait(s2, ms_left(Clock::now() + kBound)));
  CHECK(s1 != s2);
  REQUIRE(a.kill_and_wait() == kKilled);
  REQUIRE(b.kill_and_wait() == kKilled);
  {
    const GroupStats gs = group_g_stats(ch);
    CHECK(gs.in_flight == 2);
    CHECK(gs.floor == 0);
    CHECK(gs.acked == 0);
    for (const auto& c : gs.consumers) CHECK_FALSE(c.alive);
  }

  struct Shared {
    std::atomic<std::uint32_t> acks[kN];
    std::atomic<std::uint32_t> attempts[kN];
  };
  SharedMap<Shared> sh;
  const auto start = Clock::now();
  Child finisher([&]() -> int {
    GroupMember member;
    if (const int rc = member.join(name.str(), g); rc != 0) return rc;
    const auto deadline = Clock::now() + kBound;
    for (std::uint64_t done = 0; done < kN;) {
      if (Clock::now() >= deadline) return 12;
      Delivery d;
      std::byte buf[64];
      const PollStatus st = member.consumer.receive_wait(d, buf, 20'000'000);
      if (st == PollStatus::timeout || st == PollStatus::empty) continue;
      if (st != PollStatus::ok || d.sequence >= kN) return 13;
      if (member.consumer.ack(d) != AckStatus::ok) return 14;
      sh->acks[d.sequence].fetch_add(1, std::memory_order_acq_rel);
      sh->attempts[d.sequence].store(d.attempt, std::memory_order_release);
      ++done;
    }
    return 0;
  });
  REQUIRE(finisher.wait() == 0);
  const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  INFO("the new consumer finished in " << took_ms << " ms");
  CHECK(took_ms < 60'000);
  for (std::uint64_t s = 0; s < kN; ++s) {
    INFO("sequence " << s);
    CHECK(sh->acks[s].load() == 1);
    CHECK(sh->attempts[s].load() == (s == s1 || s == s2 ? 2u : 1u));
  }
  const GroupStats gs = group_g_stats(ch);
  CHECK(gs.floor == kN);
  CHECK(gs.acked == kN);
  CHECK(gs.redelivered == 2);
  CHECK(gs.expired == 0);  // detected dead, not waited out
  CHECK(gs.dead_consumer_releases == 2);
  CHECK(gs.in_flight == 0);
}

TEST_CASE(
    "a consumer killed on its last attempt, with no consumer left, leaves a message due for the DLQ "
    "that dead_letter_due moves") {
  // Before: the message waited in its lease for a receive that never came
  // (no consumer is left), and nothing counted it as a dead letter.
  constexpr std::uint64_t kVisibilityNs = 100'000'000;  // 100 ms
  ScopedGroupChannelName name("gp-last");
  Channel ch = make_channel(name, block_channel(16));
  GroupOptions g;
  g.visibility_timeout_ns = kVisibilityNs;
  g.max_deliveries = 1;
  publish_values(ch, 1);
  Event took;
  Child holder([&] { return hold_one(name.str(), g, took); });
  std::uint64_t seq = ~0ULL;
  REQUIRE(took.wait(seq, ms_left(Clock::now() + kBound)));
  REQUIRE(seq == 0);
  const auto taken = Clock::now();
  REQUIRE(holder.kill_and_wait() == kKilled);
  // Nobody receives from now on. Wait out the lease deadline too (bounded),
  // so both ways of judging the lease (its dead owner, its deadline) agree.
  GroupStats gs = group_g_stats(ch);
  while ((gs.dlq_due == 0 || Clock::now() - taken < std::chrono::nanoseconds(kVisibilityNs)) &&
         Clock::now() - taken < kBound) {
    ::sched_yield();
    gs = group_g_stats(ch);
  }
  CHECK(gs.dlq_due == 1);
  CHECK(gs.in_flight == 0);
  CHECK(gs.dead_lettered == 0);
  REQUIRE(gs.consumers.size() == 1);
  CHECK_FALSE(gs.consumers[0].alive);
  auto moved = ch.dead_letter_due();
  REQUIRE(moved);
  CHECK(moved.value() == 1);
  gs = group_g_stats(ch);
  CHECK(gs.dlq_due == 0);
  CHECK(gs.dead_lettered == 1);
  CHECK(gs.floor == 1);
  DlqReader reader(name.dlq());
  const bus::DlqRecord rec = reader.next(sizeof(std::uint64_t));
  check_max_deliveries_letter(rec, reader.message(), 0, 1, "g", name.str());
  CHECK(reader.poll() == PollStatus::empty);
}

#endif  // !SHMBUS_CRASH_SOAK
