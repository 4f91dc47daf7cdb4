// One crash-torture trial.
//
// The cast, each a real fork()ed process on one channel (32 slots of 128
// bytes, so several laps and constant backpressure):
//   - 2 publishers, 120 messages each; a killed publisher is replaced by a
//     new one (new publisher id) that publishes what it had left;
//   - 2 anonymous subscribers, attached at sequence 0 before anything is
//     published (never replaced when killed);
//   - 1 durable subscriber "d" (its cursor made at sequence 0 by the parent),
//     resumed by a new process each time one is killed;
//   - 2 consumers of group "g" (unordered) and 2 of group "o" (per_key
//     ordering), both groups made at sequence 0 by the parent, each killed
//     consumer replaced by one of its group.
// Then 1 to 3 events: a random live process of a random role is SIGKILLed,
// or SIGSTOPped and, after a random pause, SIGCONTinued or SIGKILLed. Each
// comes once a random number of messages were committed (the publishers are
// paced in bursts around the events, see TrialLedger::allowance), then after
// a random spin or, half of the time, with the victim held at a precise
// phase (see hold_here): a claim half written, inside a read callback,
// between a read and its ledger mark, between processing and the ack,
// between the ack and its mark.
//
// The ledger is a MAP_SHARED anonymous mapping made before fork, so what a
// process wrote there survives its death:
//   - a publisher writes the payload (publisher id, per-publisher index, a
//     check word, filler derived from them; the key is one of 3 order keys
//     derived from id and index, shared by both publishers) and
//     stores `committed = index + 1` after publish (or commit) returned ok.
//     So every index below `committed` is committed, nothing above it exists,
//     and only a killed publisher's index `committed` (the one in flight) may
//     or may not be;
//   - a subscriber records (sequence, identity = id and index) of each message after checking its
//     bytes. The durable one reads zero-copy and writes the entry inside the
//     read callback, marks it pending, and counts it after read() returned
//     ok: when it is killed in between, the cursor it left in the channel
//     says whether the pending message was consumed (cursor past it) or will
//     be delivered again, so its resumed deliveries are checked exactly;
//   - a consumer writes (sequence, identity, order key, attempt, start tick)
//     before its ack, an end tick right before the ack, and the ack's
//     outcome after it. Ticks come from one shared counter, so the leases of
//     the per_key group are intervals on one line (see check_key_order).
// After the events, the publishers must finish, then every other process
// must finish within a bound (subscribers once their cursor reaches the final
// head, consumers once their group's floor does): one that does not is stuck,
// and the trial fails naming its pid and role.
//
// What the ledger must show, per policy:
//   - block and reject: the durable chain (all its processes together) and
//     each anonymous subscriber that lived got exactly the committed messages,
//     in sequence order, each once; a killed anonymous subscriber got a prefix
//     of them; positions without a message are exactly the claims counted as
//     abandoned. The group processed every committed message, acked each
//     once (floor at the head, nothing lost or dead-lettered), and processed a
//     message twice only where an earlier delivery's ack did not complete: its
//     consumer was killed first, or was stopped past its lease (the late ack
//     returned lease_lost, after the deadline). This for both groups, "g"
//     and "o"; and for "o", per order key: no two leases live at once (a
//     lease counts from the tick after its receive to the tick before its
//     ack, or before the parent's SIGKILL; one that had expired, or that the
//     next lap took over on drop_oldest, no longer counts), and no lease of a
//     sequence after a lease of a later one;
//   - drop_oldest: nobody gets a message twice or out of order; every
//     committed message a subscriber did not get was counted in its `lost`
//     (delivered + lost >= committed), and `lost` never counts more than the
//     positions it skipped (delivered + lost <= head); with no publisher
//     disturbed, delivered + lost == head == committed exactly. The group's
//     `lost` covers every message it never processed, and never a message it
//     acked.
//   - everywhere: every message is intact (bytes, key, one sequence per key,
//     one key per sequence across all readers), and no reader sees a message
//     that was never published.
#include "torture.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "bus/group/consumer_core.hpp"
#include "shm/clock.hpp"

#include "test_support.hpp"

namespace shmbus::torture {

using namespace shmbus::test;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::uint32_t kCapacity = 32;
constexpr std::uint32_t kSlotSize = 128;  // max payload 72
constexpr std::uint32_t kPerPublisher = 120;
constexpr int kInitialPublishers = 2;
constexpr int kAnonymousReaders = 2;
constexpr int kInitialConsumers = 2;  // of each group
constexpr int kMaxEvents = 3;
/// Claims stuck this long are taken away. Must exceed every pause of a
/// publisher that is resumed afterwards (kMaxPublisherStopMs), or its late
/// bytes could land in a newer message (protocol.md, section 11.2).
constexpr std::uint64_t kUnblockNs = 500'000'000;
constexpr std::uint64_t kVisibilityNs = 150'000'000;  // consumers stopped longer lose their lease
constexpr int kMaxPublisherStopMs = 100;
constexpr int kMaxStopMs = 300;
constexpr std::uint64_t kStepNs = 50'000'000;  // publish timeout, then retry
constexpr std::uint64_t kWaitNs = 5'000'000;   // reader and consumer wait slices
/// Bounds: every wait of the harness and of every child ends by one of them.
constexpr auto kWorkBound = 30s;   // reaching an event's moment; publishing, after the last event
constexpr auto kExitBound = 10s;   // each further phase after the publishers ended
constexpr auto kChildBound = 60s;  // a child gives up on its own (reported as stuck)
constexpr int kKilled = 128 + SIGKILL;

constexpr int kMaxPublishers = kInitialPublishers + kMaxEvents;
constexpr int kMaxReaders = kAnonymousReaders + 1 + kMaxEvents;
constexpr int kMaxConsumers = 2 * kInitialConsumers + kMaxEvents;  // per group, then the replacements
constexpr std::uint32_t kMaxSeen = 1024;

const char* const kRoleNames[kRoles] = {"publisher", "anonymous subscriber", "durable subscriber", "consumer"};
const char* const kActionNames[kActions] = {"SIGKILL", "SIGSTOP+SIGCONT", "SIGSTOP+SIGKILL"};

/// What a child writes to its `error` word before it exits with a failure.
enum ChildError : std::uint32_t {
  kNoError = 0,
  kOpenFailed = 1,
  kAttachFailed = 2,
  kBadPayload = 3,  ///< bytes, length, check word or key do not match
  kBadOrder = 4,    ///< a sequence not above the previous one
  kBadStatus = 5,   ///< a status this policy must never give (error_value says which)
  kOverflow = 6,    ///< the ledger is full
  kGaveUp = 7,      ///< the child's own bound expired
};
const char* const kErrorNames[] = {"none",         "open failed", "attach failed", "bad payload",
                                   "out of order", "bad status",  "ledger full",   "gave up"};

// --- payload ---------------------------------------------------------------

struct PayloadHead {
  std::uint32_t publisher;
  std::uint32_t length;
  std::uint64_t index;
  std::uint64_t check;
};
constexpr std::size_t kHeadSize = sizeof(PayloadHead);

/// A message's identity in the ledger: its publisher and per-publisher index
/// (from the payload head). Not its MessageMeta::key: see order_key_of.
std::uint64_t key_of(std::uint32_t publisher, std::uint64_t index) {
  return static_cast<std::uint64_t>(publisher) << 32 | index;
}
std::uint32_t key_publisher(std::uint64_t key) { return static_cast<std::uint32_t>(key >> 32); }
std::uint32_t key_index(std::uint64_t key) { return static_cast<std::uint32_t>(key); }

/// The MessageMeta::key a message is published with: one of a few keys,
/// shared by both publishers' messages, so that the per_key group "o" has
/// keys whose messages interleave (a unique key per message would make its
/// ordering trivial).
constexpr std::uint64_t kOrderKeys = 3;
std::uint64_t order_key_of(std::uint32_t publisher, std::uint64_t index) {
  return 100 + (index * 0x9e3779b97f4a7c15ULL + publisher) % kOrderKeys;
}

std::byte filler(std::uint64_t check, std::size_t i) {
  return static_cast<std::byte>((check >> ((i % 8) * 8)) ^ (i * 131));
}

void fill_payload(std::byte* out, std::size_t len, std::uint32_t publisher, std::uint64_t index) {
  const PayloadHead h{publisher, static_cast<std::uint32_t>(len), index, check_of(publisher, index)};
  std::memcpy(out, &h, kHeadSize);
  for (std::size_t i = kHeadSize; i < len; ++i) out[i] = filler(h.check, i);
}

/// Whether a message is intact: its bytes are what fill_payload wrote for
/// the publisher and index its head names, with their key and type.
bool intact(const Message& m) {
  if (m.payload.size() < kHeadSize) return false;
  PayloadHead h;
  std::memcpy(&h, m.payload.data(), kHeadSize);
  if (h.length != m.payload.size() || h.check != check_of(h.publisher, h.index)) return false;
  if (m.key != order_key_of(h.publisher, h.index) || m.type != h.publisher) return false;
  for (std::size_t i = kHeadSize; i < m.payload.size(); ++i) {
    if (m.payload[i] != filler(h.check, i)) return false;
  }
  return true;
}

/// The identity (key_of) of a message; meaningful once intact().
std::uint64_t identity_of(const Message& m) {
  PayloadHead h;
  std::memcpy(&h, m.payload.data(), kHeadSize);
  return key_of(h.publisher, h.index);
}

// --- the ledger --------------------------------------------------------------

struct PublisherLedger {
  std::atomic<std::uint32_t> id;      ///< publisher id (set by the parent)
  std::atomic<std::uint32_t> target;  ///< messages to publish (set by the parent)
  /// SYNC(ledger): release after publish returned ok, pairs with the parent's acquire.
  std::atomic<std::uint32_t> committed;
  std::atomic<std::uint32_t> error;
  std::atomic<std::uint64_t> error_value;
  std::atomic<std::uint64_t> timeouts;
  std::atomic<std::uint64_t> full;
  std::atomic<std::uint64_t> abandoned;
  std::atomic<std::uint32_t> hold;  ///< see hold_here()
};

struct SeenEntry {
  std::atomic<std::uint64_t> seq;
  std::atomic<std::uint64_t> key;
};

struct ReaderLedger {
  std::atomic<std::uint32_t> attached;  ///< 1 once subscribed
  /// Entries [0, count) are delivered. SYNC(ledger): release after the entry.
  std::atomic<std::uint32_t> count;
  /// 1 + the index of an entry written inside a read callback whose read()
  /// has not returned yet (0: none). Meaningful only while it equals count + 1.
  std::atomic<std::uint32_t> pending;
  std::atomic<std::uint32_t> error;
  std::atomic<std::uint64_t> error_value;
  std::atomic<std::uint64_t> start_cursor;
  std::atomic<std::uint32_t> finished;  ///< 1: the end figures below are written
  std::atomic<std::uint64_t> end_cursor;
  std::atomic<std::uint64_t> end_lost;
  std::atomic<std::uint64_t> lapped;
  std::atomic<std::uint32_t> hold;  ///< see hold_here()
  SeenEntry entries[kMaxSeen];
};

enum ConsumerEntryState : std::uint32_t {
  kProcessed = 1,  ///< written before the ack
  kAckOk = 2,
  kAckLost = 3,
};

struct ConsumerEntry {
  std::atomic<std::uint64_t> seq;
  std::atomic<std::uint64_t> key;        ///< the identity (key_of)
  std::atomic<std::uint64_t> order_key;  ///< MessageMeta::key
  /// The lease as an interval on the ledger clock (TrialLedger::tick): the
  /// start taken right after receive returned (the lease began before it),
  /// the end right before the ack (the lease ends after it; 0: not reached).
  std::atomic<std::uint64_t> start_tick;
  std::atomic<std::uint64_t> end_tick;
  std::atomic<std::uint64_t> start_ns;  ///< CLOCK_MONOTONIC right after receive returned
  std::atomic<std::uint64_t> deadline_ns;
  /// The channel's head right after receive returned: on drop_oldest, a
  /// lease of a sequence a lap below it may have been taken over by the lap.
  std::atomic<std::uint64_t> head_at_start;
  std::atomic<std::uint32_t> attempt;
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> late;         ///< kAckLost: the lease deadline had passed
  std::atomic<std::uint32_t> overwritten;  ///< kAckLost: the ring had moved a lap past it
};

struct ConsumerLedger {
  std::atomic<std::uint32_t> ordered;  ///< 1: a consumer of the per_key group "o" (set before the fork)
  /// The parent's tick right before it SIGKILLed this consumer (0: never):
  /// a lease the consumer held can only be released after it.
  std::atomic<std::uint64_t> killed_tick;
  std::atomic<std::uint32_t> attached;
  std::atomic<std::uint32_t> count;  ///< SYNC(ledger): release after the entry
  std::atomic<std::uint32_t> error;
  std::atomic<std::uint64_t> error_value;
  std::atomic<std::uint64_t> lapped;
  std::atomic<std::uint32_t> hold;  ///< see hold_here()
  ConsumerEntry entries[kMaxSeen];
};

struct TrialLedger {
  /// The one clock of the consumers' lease intervals. acq_rel: a tick taken
  /// after an event that happens-after another tick is the larger one.
  std::atomic<std::uint64_t> tick;
  std::atomic<std::uint64_t> final_head;  ///< 1 + the head once every publisher ended; 0 before
  std::atomic<std::uint32_t> stop_consumers;
  /// Publishers together commit no more than this many messages until the
  /// parent raises it: it paces them in bursts around each event, so the
  /// events land while there is work in hand, whatever the policy (a
  /// drop_oldest publisher never waits for readers and would otherwise be
  /// done long before the later events).
  std::atomic<std::uint32_t> allowance;
  PublisherLedger publishers[kMaxPublishers];
  ReaderLedger readers[kMaxReaders];
  ConsumerLedger consumers[kMaxConsumers];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// The ledger in an anonymous MAP_SHARED mapping made before fork.
using SharedLedger = SharedMap<TrialLedger>;

template <class L>
int fail(L& led, ChildError e, std::uint64_t value, int rc) {
  led.error_value.store(value, std::memory_order_relaxed);
  led.error.store(e, std::memory_order_release);
  return rc;
}

void spin_for(std::uint64_t iterations) {
  for (std::uint64_t i = 0; i < iterations; ++i) asm volatile("" ::: "memory");
}

void sleep_ms(int ms) {
  const timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1'000'000L};
  ::nanosleep(&ts, nullptr);
}

/// A pause between two looks at a condition another process changes: only
/// bounds how often the parent looks, never what it assumes.
void nap() {
  const timespec ts{0, 200'000};
  ::nanosleep(&ts, nullptr);
}

// --- held moments -----------------------------------------------------------
//
// Half of the events do not pick a random moment but a precise one: the
// parent arms a hold word with a phase, the victim raises it (one CAS, so
// the parent can cancel instead) when it reaches that phase and stays there
// until it is killed, or until the parent lowers the word to let it go on
// after a SIGSTOP/SIGCONT. So the windows that matter most are hit every
// time, not by luck: a publisher with a claim half written, a subscriber
// inside its read callback or between its read and its ledger mark, a
// consumer between its processing and its ack or between its ack and its
// ledger mark.

enum HoldPhase : std::uint32_t {
  kHoldNone = 0,
  kHoldWriting = 1,     ///< publisher: claim taken, payload half written, not committed
  kHoldInRead = 2,      ///< reader: inside the zero-copy read callback (cursor not moved)
  kHoldBeforeMark = 3,  ///< reader: read returned ok, entry not counted; consumer: ack ok, not marked
  kHoldBeforeAck = 4,   ///< consumer: entry written ("processed"), ack not called
};
constexpr std::uint32_t kHeldBit = 1u << 31;
const char* const kHoldNames[] = {"", "with a claim half written", "inside its read callback",
                                  "between its read (or ack) and its ledger mark", "between processing and its ack"};

/// A child at phase `phase`: if the parent armed it, take the hold and stay
/// (bounded) until the parent lowers it; the parent usually kills us here.
void hold_here(std::atomic<std::uint32_t>& hold, std::uint32_t phase) {
  std::uint32_t want = phase;
  if (hold.load(std::memory_order_acquire) != phase ||
      !hold.compare_exchange_strong(want, phase | kHeldBit, std::memory_order_acq_rel)) {
    return;
  }
  const auto deadline = Clock::now() + kChildBound;
  while (hold.load(std::memory_order_acquire) == (phase | kHeldBit) && Clock::now() < deadline) spin_for(1000);
}

// --- the children ------------------------------------------------------------

int publisher_main(const std::string& name, Policy policy, TrialLedger& t, int slot, std::uint64_t seed) {
  PublisherLedger& led = t.publishers[slot];
  auto ch = Channel::open(name, kTestBus);
  if (!ch) return fail(led, kOpenFailed, static_cast<std::uint64_t>(ch.error().code()), 10);
  auto pub = ch->publisher();
  if (!pub) return fail(led, kAttachFailed, static_cast<std::uint64_t>(pub.error().code()), 11);
  std::mt19937_64 rng(seed);
  const std::uint32_t id = led.id.load(std::memory_order_relaxed);
  const std::uint32_t target = led.target.load(std::memory_order_relaxed);
  const std::size_t max_payload = pub->max_payload();
  std::array<std::byte, kSlotSize> buf{};
  const auto deadline = Clock::now() + kChildBound;
  auto committed_by_all = [&] {
    std::uint32_t n = 0;
    for (const auto& p : t.publishers) n += p.committed.load(std::memory_order_acquire);
    return n;
  };
  for (std::uint32_t idx = 0; idx < target;) {
    if (Clock::now() >= deadline) return fail(led, kGaveUp, idx, 12);
    if (committed_by_all() >= t.allowance.load(std::memory_order_acquire)) {
      const timespec ts{0, 50'000};  // the parent raises it; bounded by the deadline
      ::nanosleep(&ts, nullptr);
      continue;
    }
    const std::size_t len = std::uniform_int_distribution<std::size_t>(kHeadSize, max_payload)(rng);
    fill_payload(buf.data(), len, id, idx);
    MessageMeta meta;
    meta.key = order_key_of(id, idx);
    meta.type = id;
    PublishStatus st;
    const bool held = led.hold.load(std::memory_order_acquire) == kHoldWriting;
    if (held || rng() % 4 == 0) {  // zero-copy: claim, write in place, commit
      Claim claim;
      st = pub->try_claim(len, claim, kStepNs);
      if (st == PublishStatus::ok) {
        std::memcpy(claim.payload.data(), buf.data(), len / 2);
        hold_here(led.hold, kHoldWriting);
        std::memcpy(claim.payload.data() + len / 2, buf.data() + len / 2, len - len / 2);
        st = pub->commit(claim, len, meta);
      }
    } else {
      st = pub->publish(std::span<const std::byte>(buf.data(), len), meta, kStepNs);
    }
    switch (st) {
      case PublishStatus::ok:
        led.committed.store(idx + 1, std::memory_order_release);
        ++idx;
        break;
      case PublishStatus::timeout:  // block: a stopped or dead reader holds the ring; retry
        if (policy != Policy::block) return fail(led, kBadStatus, static_cast<std::uint64_t>(st), 13);
        led.timeouts.fetch_add(1, std::memory_order_relaxed);
        break;
      case PublishStatus::full:  // reject: load shedding; retry after a short pause
        if (policy != Policy::reject) return fail(led, kBadStatus, static_cast<std::uint64_t>(st), 13);
        led.full.fetch_add(1, std::memory_order_relaxed);
        {
          const timespec ts{0, 100'000};
          ::nanosleep(&ts, nullptr);
        }
        break;
      case PublishStatus::abandoned:  // the claim was taken away: not committed; retry
        led.abandoned.fetch_add(1, std::memory_order_relaxed);
        break;
      default: return fail(led, kBadStatus, static_cast<std::uint64_t>(st), 13);
    }
  }
  return 0;
}

int reader_main(const std::string& name, Policy policy, TrialLedger& t, int slot, bool durable, bool zero_copy) {
  ReaderLedger& led = t.readers[slot];
  auto ch = Channel::open(name, kTestBus);
  if (!ch) return fail(led, kOpenFailed, static_cast<std::uint64_t>(ch.error().code()), 10);
  SubscribeOptions so;
  so.name = durable ? "d" : "";
  so.start = StartAt::at_sequence(0);  // ignored when "d" resumes
  so.wait = WaitStrategy::block;
  auto sub = ch->subscribe(so);
  if (!sub) return fail(led, kAttachFailed, static_cast<std::uint64_t>(sub.error().code()), 11);
  led.start_cursor.store(sub->cursor(), std::memory_order_relaxed);
  led.attached.store(1, std::memory_order_release);
  const auto deadline = Clock::now() + kChildBound;
  bool have_last = false;
  std::uint64_t last = 0;
  ChildError bad = kNoError;
  std::uint64_t bad_value = 0;
  // Checks one message and writes its entry at `n` (not yet counted).
  auto record = [&](const Message& m, std::uint32_t n) {
    const bool ok = intact(m);
    if (!ok) {
      bad = kBadPayload;
      bad_value = m.sequence;
    } else if (have_last && m.sequence <= last) {
      bad = kBadOrder;
      bad_value = m.sequence;
    }
    // relaxed: published by the release of `pending` or `count`.
    led.entries[n].seq.store(m.sequence, std::memory_order_relaxed);
    led.entries[n].key.store(ok ? identity_of(m) : m.key, std::memory_order_relaxed);
  };
  for (;;) {
    if (Clock::now() >= deadline) return fail(led, kGaveUp, sub->cursor(), 12);
    const std::uint32_t n = led.count.load(std::memory_order_relaxed);
    if (n >= kMaxSeen) return fail(led, kOverflow, n, 13);
    PollStatus st;
    Message m;
    std::array<std::byte, kSlotSize> buf{};
    if (zero_copy) {
      st = sub->read([&](const Message& msg) {
        m = msg;
        record(msg, n);
        // SYNC(ledger): release, pairs with the parent's acquire: the entry
        // is in the ledger before the cursor can move past it.
        led.pending.store(n + 1, std::memory_order_release);
        hold_here(led.hold, kHoldInRead);
      });
    } else {
      st = sub->poll(m, buf);
      if (st == PollStatus::ok) record(m, n);
    }
    if (st == PollStatus::ok) {
      if (bad != kNoError) return fail(led, bad, bad_value, 14);
      have_last = true;
      last = m.sequence;
      hold_here(led.hold, kHoldBeforeMark);
      led.count.store(n + 1, std::memory_order_release);
      continue;
    }
    bad = kNoError;  // a torn read reported as lapped is discarded, whatever it held
    if (zero_copy) led.pending.store(0, std::memory_order_release);
    if (st == PollStatus::lapped) {
      if (policy != Policy::drop_oldest) return fail(led, kBadStatus, static_cast<std::uint64_t>(st), 15);
      led.lapped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (st != PollStatus::empty) return fail(led, kBadStatus, static_cast<std::uint64_t>(st), 15);
    const std::uint64_t fh = t.final_head.load(std::memory_order_acquire);
    if (fh != 0 && sub->cursor() >= fh - 1) {
      const SubscriberCounters c = sub->counters();
      led.end_cursor.store(c.cursor, std::memory_order_relaxed);
      led.end_lost.store(c.lost, std::memory_order_relaxed);
      led.finished.store(1, std::memory_order_release);
      return 0;
    }
    const PollStatus w = sub->wait(kWaitNs);
    if (w != PollStatus::ok && w != PollStatus::timeout) {
      return fail(led, kBadStatus, static_cast<std::uint64_t>(w), 16);
    }
  }
}

/// The two groups: "g" (unordered) and "o" (per_key), the same otherwise.
GroupOptions group_options(bool ordered) {
  GroupOptions g;
  g.start = StartAt::earliest();
  g.visibility_timeout_ns = kVisibilityNs;
  g.max_deliveries = 255;  // crashes and stops never send a message to the DLQ here
  g.wait = WaitStrategy::block;
  g.ordering = ordered ? GroupOrdering::per_key : GroupOrdering::none;
  return g;
}
const char* group_name(bool ordered) { return ordered ? "o" : "g"; }

std::uint64_t take_tick(TrialLedger& t) { return t.tick.fetch_add(1, std::memory_order_acq_rel) + 1; }

int consumer_main(const std::string& name, Policy policy, TrialLedger& t, int slot, std::uint64_t seed) {
  ConsumerLedger& led = t.consumers[slot];
  const bool ordered = led.ordered.load(std::memory_order_relaxed) != 0;  // written before the fork
  auto ch = Channel::open(name, kTestBus);
  if (!ch) return fail(led, kOpenFailed, static_cast<std::uint64_t>(ch.error().code()), 10);
  auto c = ch->join_group(group_name(ordered), group_options(ordered));
  if (!c) return fail(led, kAttachFailed, static_cast<std::uint64_t>(c.error().code()), 11);
  led.attached.store(1, std::memory_order_release);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint64_t> work(0, 20'000);  // "processing"
  const auto deadline = Clock::now() + kChildBound;
  for (;;) {
    if (t.stop_consumers.load(std::memory_order_acquire) != 0) return 0;
    if (Clock::now() >= deadline) return fail(led, kGaveUp, led.count.load(), 12);
    Delivery d;
    std::array<std::byte, kSlotSize> buf{};
    const PollStatus st = c->receive_wait(d, buf, kWaitNs);
    if (st == PollStatus::timeout || st == PollStatus::empty) continue;
    if (st == PollStatus::lapped && policy == Policy::drop_oldest) {
      led.lapped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (st != PollStatus::ok) return fail(led, kBadStatus, static_cast<std::uint64_t>(st), 13);
    const std::uint64_t start_tick = take_tick(t);
    const std::uint64_t start_ns = shm::monotonic_ns();
    const std::uint64_t head_at_start = shmbus::detail::state_of(*ch)->producer->head.load(std::memory_order_acquire);
    if (!intact(d.message) || d.message.sequence != d.sequence) return fail(led, kBadPayload, d.sequence, 14);
    const std::uint32_t n = led.count.load(std::memory_order_relaxed);
    if (n >= kMaxSeen) return fail(led, kOverflow, n, 15);
    ConsumerEntry& e = led.entries[n];
    // relaxed: published by the release store of `count`.
    e.seq.store(d.sequence, std::memory_order_relaxed);
    e.key.store(identity_of(d.message), std::memory_order_relaxed);
    e.order_key.store(d.message.key, std::memory_order_relaxed);
    e.start_tick.store(start_tick, std::memory_order_relaxed);
    e.end_tick.store(0, std::memory_order_relaxed);
    e.start_ns.store(start_ns, std::memory_order_relaxed);
    e.deadline_ns.store(d.deadline_ns, std::memory_order_relaxed);
    e.head_at_start.store(head_at_start, std::memory_order_relaxed);
    e.attempt.store(d.attempt, std::memory_order_relaxed);
    e.state.store(kProcessed, std::memory_order_relaxed);
    // SYNC(ledger): release, pairs with the parent's acquire of `count`: the
    // entry is in the ledger before the ack can happen.
    led.count.store(n + 1, std::memory_order_release);
    hold_here(led.hold, kHoldBeforeAck);
    spin_for(work(rng));
    // relaxed: read by the parent only after this process ended.
    e.end_tick.store(take_tick(t), std::memory_order_relaxed);
    const AckStatus a = c->ack(d);
    if (a == AckStatus::ok) {
      hold_here(led.hold, kHoldBeforeMark);
      e.state.store(kAckOk, std::memory_order_release);
    } else if (a == AckStatus::lease_lost) {
      // Legitimate once the deadline passed (the lease clock counts whole
      // ms), or on drop_oldest once the ring moved a lap past the message
      // (the next lap's message took the slot's lease word).
      e.late.store(shm::monotonic_ns() + 2'000'000 >= d.deadline_ns ? 1 : 0, std::memory_order_relaxed);
      const std::uint64_t head = shmbus::detail::state_of(*ch)->producer->head.load(std::memory_order_acquire);
      e.overwritten.store(head >= d.sequence + kCapacity ? 1 : 0, std::memory_order_relaxed);
      e.state.store(kAckLost, std::memory_order_release);
    } else {
      return fail(led, kBadStatus, 100 + static_cast<std::uint64_t>(a), 16);
    }
  }
}

// --- the parent ----------------------------------------------------------------

/// One process of the trial.
struct Proc {
  Role role;
  int slot;  ///< its ledger
  std::unique_ptr<Child> child;
  bool killed = false;
  bool zero_copy = false;  ///< readers: read() rather than poll()
  /// Durable subscribers killed: the cursor the process left in its entry.
  std::uint64_t cursor_at_death = 0;
  std::uint32_t held_phase = 0;  ///< killed while held in this phase (kHoldNone: a random moment)
  bool ordered = false;          ///< consumers: of the per_key group "o" (else of "g")
};

struct Removers {
  std::string channel, dlq;
  ~Removers() {
    (void)Channel::remove(channel, kTestBus);
    (void)Channel::remove(dlq, kTestBus);
  }
};

std::uint64_t group_floor(const Channel& ch, const char* group) {
  const int gi = bus::find_group(*shmbus::detail::state_of(ch), group);
  if (gi < 0) return 0;
  return shmbus::detail::state_of(ch)->group(static_cast<std::uint32_t>(gi))->floor.load(std::memory_order_acquire);
}

const SubscriberStats* find_durable(const ChannelStats& st) {
  for (const auto& s : st.subscribers) {
    if (s.durable && s.name == "d") return &s;
  }
  return nullptr;
}

/// What one reader process delivered, as the ledger shows it.
struct ReaderView {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seen;  ///< (sequence, key) in order
  bool has_pending = false;  ///< an entry written in a read callback whose read() did not return
  std::pair<std::uint64_t, std::uint64_t> pending{};
};

ReaderView view_of(const ReaderLedger& led) {
  ReaderView v;
  const std::uint32_t n = led.count.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < n; ++i) {
    v.seen.emplace_back(led.entries[i].seq.load(std::memory_order_relaxed),
                        led.entries[i].key.load(std::memory_order_relaxed));
  }
  const std::uint32_t p = led.pending.load(std::memory_order_acquire);
  if (p == n + 1 && n < kMaxSeen) {
    v.has_pending = true;
    v.pending = {led.entries[n].seq.load(std::memory_order_relaxed),
                 led.entries[n].key.load(std::memory_order_relaxed)};
  }
  return v;
}

std::string key_str(std::uint64_t key) {
  return "publisher " + std::to_string(key_publisher(key)) + " #" + std::to_string(key_index(key));
}

class Trial {
 public:
  Trial(Policy policy, std::uint64_t seed, Figures& fig) : policy_(policy), fig_(fig), rng_(seed) {}

  /// Runs the trial; returns the problems found (empty: it passed).
  std::vector<std::string> run();
  [[nodiscard]] const std::vector<std::string>& events() const { return events_; }

 private:
  /// target: a publisher's messages; ordered: a consumer's group ("o", else "g").
  Proc& spawn(Role role, std::uint32_t target = 0, bool ordered = false);
  std::uint32_t committed_total() const;
  bool publishing_over();
  std::vector<Proc*> live(Role role);
  void event(int k, std::uint32_t after);
  /// Lets the publishers go on until `n` messages are committed (never lowers it).
  void raise_allowance(std::uint32_t n) {
    if (n > t_->allowance.load(std::memory_order_relaxed)) t_->allowance.store(n, std::memory_order_release);
  }
  bool finish(Proc& p, std::chrono::milliseconds bound, const char* phase);
  std::atomic<std::uint32_t>& hold_of(const Proc& p);
  std::string describe(const Proc& p) const;
  void check(const ChannelStats& st);
  void check_group(const ChannelStats& st, const std::set<std::uint64_t>* reference_seqs, bool ordered);
  /// The per_key group "o": per order key, no two leases at once and no
  /// step back in sequence.
  void check_key_order();
  void problem(const std::string& what) { problems_.push_back(what); }

  Policy policy_;
  Figures& fig_;
  std::mt19937_64 rng_;
  std::string name_;
  Channel ch_;
  SharedLedger t_;
  std::vector<std::unique_ptr<Proc>> procs_;
  int next_slot_[kRoles] = {};  ///< next free ledger per role (subscribers share one)
  std::vector<std::string> events_;
  std::vector<std::string> problems_;
  bool publishers_disturbed_ = false;  ///< a publisher was killed or stopped
  std::uint64_t head_ = 0;
};

std::string Trial::describe(const Proc& p) const {
  std::ostringstream o;
  o << kRoleNames[static_cast<int>(p.role)] << " #" << p.slot;
  if (p.role == Role::consumer) o << " of '" << group_name(p.ordered) << "'";
  o << " (pid " << p.child->pid() << ")";
  return o.str();
}

Proc& Trial::spawn(Role role, std::uint32_t target, bool ordered) {
  // Anonymous and durable subscribers share the reader ledgers.
  const int r = static_cast<int>(role == Role::durable ? Role::anonymous : role);
  const int slot = next_slot_[r]++;
  const int limit = role == Role::publisher ? kMaxPublishers : role == Role::consumer ? kMaxConsumers : kMaxReaders;
  REQUIRE(slot < limit);
  auto p = std::make_unique<Proc>();
  p->role = role;
  p->slot = slot;
  const std::uint64_t seed = rng_();
  const std::string name = name_;
  const Policy policy = policy_;
  TrialLedger& t = *t_;
  switch (role) {
    case Role::publisher:
      // Publisher ids are slot + 1; the words are set before the fork.
      t.publishers[slot].id.store(static_cast<std::uint32_t>(slot) + 1, std::memory_order_relaxed);
      t.publishers[slot].target.store(target, std::memory_order_relaxed);
      p->child = std::make_unique<Child>(
          [&t, name, policy, slot, seed] { return publisher_main(name, policy, t, slot, seed); });
      break;
    case Role::anonymous:
    case Role::durable: {
      const bool durable = role == Role::durable;
      // The durable reader always reads zero-copy: see the pending entry above.
      p->zero_copy = durable || rng_() % 2 == 0;
      const bool zc = p->zero_copy;
      p->child = std::make_unique<Child>(
          [&t, name, policy, slot, durable, zc] { return reader_main(name, policy, t, slot, durable, zc); });
      break;
    }
    case Role::consumer:
      p->ordered = ordered;
      t.consumers[slot].ordered.store(ordered ? 1 : 0, std::memory_order_relaxed);  // before the fork
      p->child = std::make_unique<Child>(
          [&t, name, policy, slot, seed] { return consumer_main(name, policy, t, slot, seed); });
      break;
  }
  procs_.push_back(std::move(p));
  return *procs_.back();
}

std::atomic<std::uint32_t>& Trial::hold_of(const Proc& p) {
  switch (p.role) {
    case Role::publisher: return t_->publishers[p.slot].hold;
    case Role::consumer: return t_->consumers[p.slot].hold;
    default: return t_->readers[p.slot].hold;
  }
}

std::uint32_t Trial::committed_total() const {
  std::uint32_t n = 0;
  for (const auto& p : t_->publishers) n += p.committed.load(std::memory_order_acquire);
  return n;
}

bool Trial::publishing_over() {
  for (auto& p : procs_) {
    if (p->role == Role::publisher && !p->killed && !p->child->try_wait()) return false;
  }
  return true;
}

std::vector<Proc*> Trial::live(Role role) {
  std::vector<Proc*> out;
  for (auto& p : procs_) {
    if (p->role == role && !p->killed && !p->child->try_wait()) out.push_back(p.get());
  }
  return out;
}

void Trial::event(int k, std::uint32_t after) {
  // The moment: once `after` messages were committed (the publishers may go
  // a burst beyond), then a random spin or a held phase.
  raise_allowance(after + std::uniform_int_distribution<std::uint32_t>(1, 2 * kCapacity)(rng_));
  const auto bound = Clock::now() + kWorkBound;
  bool late = false;
  while (committed_total() < after) {
    if (publishing_over() || Clock::now() >= bound) {
      late = true;
      break;
    }
    nap();
  }
  // The victim: a random live process of a random role that has one.
  // (One look per role: a process that ends meanwhile is handled as late.)
  std::vector<std::vector<Proc*>> by_role;
  for (int r = 0; r < kRoles; ++r) {
    std::vector<Proc*> l = live(static_cast<Role>(r));
    if (!l.empty()) by_role.push_back(std::move(l));
  }
  if (by_role.empty()) return;
  const std::vector<Proc*>& candidates =
      by_role[std::uniform_int_distribution<std::size_t>(0, by_role.size() - 1)(rng_)];
  Proc& v = *candidates[std::uniform_int_distribution<std::size_t>(0, candidates.size() - 1)(rng_)];
  const Role role = v.role;
  const auto action = static_cast<Action>(std::uniform_int_distribution<int>(0, kActions - 1)(rng_));
  const int max_stop = role == Role::publisher && action == Action::stop_resume ? kMaxPublisherStopMs : kMaxStopMs;
  const int stop_ms = std::uniform_int_distribution<int>(1, max_stop)(rng_);

  // Half of the moments are held phases (see hold_here), half random spins.
  std::uint32_t phase = kHoldNone;
  if (rng_() % 2 == 0) {
    switch (role) {
      case Role::publisher: phase = kHoldWriting; break;
      case Role::anonymous:
      case Role::durable: phase = v.zero_copy && rng_() % 2 == 0 ? kHoldInRead : kHoldBeforeMark; break;
      case Role::consumer: phase = rng_() % 2 == 0 ? kHoldBeforeAck : kHoldBeforeMark; break;
    }
  }
  std::atomic<std::uint32_t>& hold = hold_of(v);
  if (phase != kHoldNone) {
    // More work, so that the victim gets to the phase.
    raise_allowance(committed_total() + 2 * kCapacity);
    hold.store(phase, std::memory_order_release);
    // Bounded: the victim may have no work left (then it never gets there).
    const auto held_bound = Clock::now() + kExitBound;
    Clock::time_point over_since{};
    while (hold.load(std::memory_order_acquire) != (phase | kHeldBit)) {
      const bool over = publishing_over();
      if (over && over_since == Clock::time_point{}) over_since = Clock::now();
      if (Clock::now() >= held_bound || v.child->try_wait() || (over && Clock::now() - over_since > 300ms)) {
        std::uint32_t armed = phase;
        if (hold.compare_exchange_strong(armed, kHoldNone, std::memory_order_acq_rel)) {
          late = true;
          phase = kHoldNone;  // cancelled: a plain moment now
        }
        break;
      }
      nap();
    }
  } else {
    spin_for(std::uniform_int_distribution<std::uint64_t>(0, 200'000)(rng_));
  }

  std::ostringstream what;
  what << "event " << k << ": " << kActionNames[static_cast<int>(action)] << " of " << describe(v) << " after "
       << committed_total() << " commits (aimed at " << after << ")";
  if (phase != kHoldNone) what << ", held " << kHoldNames[phase];
  if (action != Action::kill) what << ", stopped " << stop_ms << " ms";
  ++fig_.events;
  ++fig_.by_role[static_cast<int>(role)];
  ++fig_.by_action[static_cast<int>(action)];
  if (phase != kHoldNone) ++fig_.held_events;
  if (role == Role::publisher) publishers_disturbed_ = true;

  // Publishing goes on during the action (a burst of up to four laps).
  raise_allowance(committed_total() + std::uniform_int_distribution<std::uint32_t>(kCapacity, 4 * kCapacity)(rng_));
  if (action != Action::kill) {
    (void)::kill(v.child->pid(), SIGSTOP);
    sleep_ms(stop_ms);  // the pause is what is tested; nothing waits on it
  }
  if (action == Action::stop_resume) {
    hold.store(kHoldNone, std::memory_order_release);  // let it go on once continued
    (void)::kill(v.child->pid(), SIGCONT);
    if (late) ++fig_.late_events;
    events_.push_back(what.str());
    return;
  }
  // A consumer's open lease can only be released after this tick: by its own
  // ack (which takes an end tick first) or by its death being noticed. (A
  // tick after waitpid would not do: the death may be noticed before it.)
  if (role == Role::consumer) t_->consumers[v.slot].killed_tick.store(take_tick(*t_), std::memory_order_release);
  const int rc = v.child->kill_and_wait();
  if (rc != kKilled) {
    // It ended before the signal: fine if it ended well (its work was done).
    what << " -> it had already exited with " << rc;
    if (rc != 0) problem(describe(v) + " exited with " + std::to_string(rc) + " before its kill");
    ++fig_.late_events;
    events_.push_back(what.str());
    return;
  }
  v.held_phase = phase;
  if (late) ++fig_.late_events;
  v.killed = true;
  switch (role) {
    case Role::publisher: {
      const PublisherLedger& led = t_->publishers[v.slot];
      const std::uint32_t done = led.committed.load(std::memory_order_acquire);
      const std::uint32_t target = led.target.load(std::memory_order_relaxed);
      what << " (" << done << " of " << target << " reported committed)";
      if (done < target) {
        // What it had left, under a new id (its in-flight message is not
        // published again: it may or may not have been committed).
        Proc& r = spawn(Role::publisher, target - done);
        what << ", replaced by " << describe(r);
      }
      break;
    }
    case Role::durable: {
      const ChannelStats st = ch_.stats();
      if (const SubscriberStats* d = find_durable(st)) {
        v.cursor_at_death = d->cursor;
      } else {
        problem("durable subscriber entry 'd' missing after the kill of " + describe(v));
      }
      what << " (it left the cursor at " << v.cursor_at_death << ")";
      Proc& r = spawn(Role::durable);
      what << ", resumed by " << describe(r);
      ++fig_.durable_resumes;
      break;
    }
    case Role::consumer: {
      Proc& r = spawn(Role::consumer, 0, v.ordered);
      what << ", replaced by " << describe(r);
      break;
    }
    case Role::anonymous: break;  // its entry is reclaimed by the publishers
  }
  events_.push_back(what.str());
}

bool Trial::finish(Proc& p, std::chrono::milliseconds bound, const char* phase) {
  const int rc = p.child->wait(bound);
  if (rc == 0) return true;
  std::ostringstream o;
  std::uint32_t err = 0;
  std::uint64_t val = 0;
  switch (p.role) {
    case Role::publisher:
      err = t_->publishers[p.slot].error.load();
      val = t_->publishers[p.slot].error_value.load();
      o << ", committed " << t_->publishers[p.slot].committed.load() << " of " << t_->publishers[p.slot].target.load();
      break;
    case Role::anonymous:
    case Role::durable:
      err = t_->readers[p.slot].error.load();
      val = t_->readers[p.slot].error_value.load();
      o << ", " << t_->readers[p.slot].count.load() << " messages read";
      break;
    case Role::consumer:
      err = t_->consumers[p.slot].error.load();
      val = t_->consumers[p.slot].error_value.load();
      o << ", " << t_->consumers[p.slot].count.load() << " messages processed";
      break;
  }
  std::ostringstream msg;
  if (rc == -2) {
    ++fig_.stuck;
    msg << describe(p) << " was stuck: still running " << bound.count() << " ms into " << phase << o.str()
        << "; killed";
  } else {
    msg << describe(p) << " failed in " << phase << " with exit code " << rc << " (error "
        << (err < std::size(kErrorNames) ? kErrorNames[err] : "?") << ", value " << val << ")" << o.str();
  }
  problem(msg.str());
  return false;
}

std::vector<std::string> Trial::run() {
  ScopedChannelName guard("torture");
  name_ = guard.str();
  Removers removers{name_, name_ + "-dlq"};
  ChannelOptions o;
  o.capacity = kCapacity;
  o.slot_size = kSlotSize;
  o.policy = policy_;
  o.max_subscribers = 8;
  o.max_publishers = 8;
  o.max_groups = 2;
  o.max_consumers = 8;
  o.unblock_timeout_ns = kUnblockNs;
  ch_ = make_channel(guard, o);
  {
    auto c = ch_.join_group("g", group_options(false));  // the groups exist from sequence 0
    REQUIRE(c);
    auto c2 = ch_.join_group("o", group_options(true));
    REQUIRE(c2);
    auto d = ch_.subscribe({"d", StartAt::at_sequence(0), WaitStrategy::block});
    REQUIRE(d);  // "d" exists (detached) from sequence 0
  }

  for (int i = 0; i < kAnonymousReaders; ++i) spawn(Role::anonymous);
  spawn(Role::durable);
  for (int i = 0; i < kInitialConsumers; ++i) {
    spawn(Role::consumer, 0, false);
    spawn(Role::consumer, 0, true);
  }
  // The anonymous subscribers attach at 0 before anything is published.
  const auto attach_bound = Clock::now() + kExitBound;
  for (int i = 0; i < kAnonymousReaders; ++i) {
    Proc& p = *procs_[static_cast<std::size_t>(i)];
    while (t_->readers[p.slot].attached.load(std::memory_order_acquire) == 0) {
      if (Clock::now() >= attach_bound || p.child->try_wait()) {
        (void)finish(p, 1ms, "attaching");
        return problems_;
      }
      nap();
    }
  }
  t_->allowance.store(0, std::memory_order_release);  // event() opens it
  for (int i = 0; i < kInitialPublishers; ++i) spawn(Role::publisher, kPerPublisher);

  const int n_events = std::uniform_int_distribution<int>(1, kMaxEvents)(rng_);
  std::vector<std::uint32_t> moments;
  for (int k = 0; k < n_events; ++k) {
    moments.push_back(
        std::uniform_int_distribution<std::uint32_t>(0, kPerPublisher * kInitialPublishers * 9 / 10)(rng_));
  }
  std::sort(moments.begin(), moments.end());
  for (int k = 0; k < n_events; ++k) event(k, moments[static_cast<std::size_t>(k)]);
  t_->allowance.store(UINT32_MAX, std::memory_order_release);

  // Every publisher must finish; then every reader must reach the final head
  // and exit, and the group's floor must reach it; then the consumers exit.
  const auto work_deadline = Clock::now() + kWorkBound;
  for (auto& p : procs_) {
    if (p->role != Role::publisher || p->killed) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(work_deadline - Clock::now());
    (void)finish(*p, std::max(left, 1ms), "publishing");
  }
  head_ = ch_.stats().head;
  t_->final_head.store(head_ + 1, std::memory_order_release);
  const auto read_deadline = Clock::now() + kExitBound;
  for (auto& p : procs_) {
    if ((p->role != Role::anonymous && p->role != Role::durable) || p->killed) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(read_deadline - Clock::now());
    (void)finish(*p, std::max(left, 1ms), "reading to the final head");
  }
  const auto floor_deadline = Clock::now() + kExitBound;
  for (const bool ordered : {false, true}) {
    const char* g = group_name(ordered);
    while (group_floor(ch_, g) < head_ && Clock::now() < floor_deadline) nap();
    if (group_floor(ch_, g) < head_) {
      std::ostringstream m;
      m << "group '" << g << "': the floor is stuck at " << group_floor(ch_, g) << " below the head " << head_
        << " after " << std::chrono::duration_cast<std::chrono::milliseconds>(kExitBound).count() << " ms; consumers:";
      for (auto& p : procs_) {
        if (p->role == Role::consumer && p->ordered == ordered && !p->killed) m << " " << describe(*p);
      }
      problem(m.str());
    }
  }
  t_->stop_consumers.store(1, std::memory_order_release);
  const auto stop_deadline = Clock::now() + kExitBound;
  for (auto& p : procs_) {
    if (p->role != Role::consumer || p->killed) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(stop_deadline - Clock::now());
    (void)finish(*p, std::max(left, 1ms), "stopping");
  }
  if (problems_.empty()) check(ch_.stats());

  ++fig_.trials;
  ++fig_.trials_by_policy[static_cast<int>(policy_) & 3];
  fig_.positions += head_;
  return problems_;
}

void Trial::check(const ChannelStats& st) {
  // Publishers: which messages exist.
  const int n_pubs = next_slot_[static_cast<int>(Role::publisher)];
  std::vector<std::uint32_t> committed(static_cast<std::size_t>(n_pubs));
  std::vector<bool> ambiguous(static_cast<std::size_t>(n_pubs), false);  // a killed one's in-flight index
  std::uint64_t definite = 0;
  for (auto& p : procs_) {
    if (p->role != Role::publisher) continue;
    const PublisherLedger& led = t_->publishers[p->slot];
    const auto s = static_cast<std::size_t>(p->slot);
    committed[s] = led.committed.load(std::memory_order_acquire);
    ambiguous[s] = p->killed && committed[s] < led.target.load();
    definite += committed[s];
    fig_.publish_timeouts += led.timeouts.load();
    fig_.publish_full += led.full.load();
    fig_.publish_abandoned += led.abandoned.load();
    if (ambiguous[s]) ++fig_.in_flight_at_kill;
  }
  auto valid = [&](std::uint64_t key) {
    const std::uint32_t id = key_publisher(key);
    if (id == 0 || id > static_cast<std::uint32_t>(n_pubs)) return false;
    const std::uint32_t idx = key_index(key);
    const std::size_t s = id - 1;
    return idx < committed[s] || (ambiguous[s] && idx == committed[s]);
  };
  auto is_definite = [&](std::uint64_t key) {
    const std::uint32_t id = key_publisher(key);
    return id >= 1 && id <= static_cast<std::uint32_t>(n_pubs) && key_index(key) < committed[id - 1];
  };

  // One key per sequence and one sequence per key, across every reader.
  std::map<std::uint64_t, std::uint64_t> key_at, seq_of;
  std::set<std::uint64_t> seen_anywhere;
  auto note = [&](std::uint64_t seq, std::uint64_t key, const std::string& who) {
    if (!valid(key)) {
      problem(who + " got " + key_str(key) + " at sequence " + std::to_string(seq) + ", never published");
      return;
    }
    auto [a, fresh_a] = key_at.emplace(seq, key);
    if (!fresh_a && a->second != key) {
      problem(who + " got " + key_str(key) + " at sequence " + std::to_string(seq) + " where others got " +
              key_str(a->second));
    }
    auto [b, fresh_b] = seq_of.emplace(key, seq);
    if (!fresh_b && b->second != seq) {
      problem(who + " got " + key_str(key) + " at sequence " + std::to_string(seq) + ", also seen at " +
              std::to_string(b->second) + " (published twice)");
    }
    seen_anywhere.insert(key);
  };
  // Order: strictly increasing sequences (so no message twice).
  auto check_order = [&](const std::vector<std::pair<std::uint64_t, std::uint64_t>>& v, const std::string& who) {
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (v[i].first <= v[i - 1].first) {
        ++fig_.subscriber_duplicates;
        problem(who + " got sequence " + std::to_string(v[i].first) + " after " + std::to_string(v[i - 1].first));
      }
    }
  };

  // The durable chain: every process of "d", in order, each killed one's
  // pending entry settled by the cursor it left.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> chain;
  std::uint64_t unknown_pending = 0;  // drop_oldest: consumed or lapped, cannot tell
  const Proc* last_durable = nullptr;
  for (auto& p : procs_) {
    if (p->role != Role::durable) continue;
    const ReaderView v = view_of(t_->readers[p->slot]);
    for (const auto& e : v.seen) note(e.first, e.second, describe(*p));
    chain.insert(chain.end(), v.seen.begin(), v.seen.end());
    if (p->killed && v.has_pending && p->cursor_at_death > v.pending.first) {
      if (policy_ == Policy::drop_oldest) {
        ++unknown_pending;  // its read() may have returned ok or lapped
      } else {
        ++fig_.durable_pending_consumed;
        note(v.pending.first, v.pending.second, describe(*p) + " (consumed before its mark)");
        chain.push_back(v.pending);
      }
    }
    last_durable = p.get();
  }
  check_order(chain, "the durable subscriber 'd'");
  // A durable reader killed while held: inside its read callback the cursor
  // has not moved (the message comes again); after read() returned it has
  // moved exactly past the message (consumed, not delivered again).
  for (auto& p : procs_) {
    if (p->role != Role::durable || !p->killed || p->held_phase == kHoldNone) continue;
    const ReaderView v = view_of(t_->readers[p->slot]);
    if (!v.has_pending) {
      problem(describe(*p) + " was held " + kHoldNames[p->held_phase] + " without a pending entry");
      continue;
    }
    const std::uint64_t want = v.pending.first + (p->held_phase == kHoldInRead ? 0 : 1);
    if (p->cursor_at_death != want) {
      problem(describe(*p) + " was killed " + kHoldNames[p->held_phase] + " at sequence " +
              std::to_string(v.pending.first) + " and left its cursor at " + std::to_string(p->cursor_at_death));
    }
  }
  // A publisher killed with a claim half written: that message never
  // reaches anyone, and its claim is taken away.
  std::uint64_t killed_in_write = 0;
  for (auto& p : procs_) {
    if (p->role != Role::publisher || !p->killed || p->held_phase != kHoldWriting) continue;
    ++killed_in_write;
    ++fig_.claims_killed_in_write;
    const std::uint32_t id = static_cast<std::uint32_t>(p->slot) + 1;
    const std::uint64_t key = key_of(id, committed[static_cast<std::size_t>(p->slot)]);
    if (seen_anywhere.count(key) != 0)
      problem(describe(*p) + " was killed before committing " + key_str(key) + ", which a reader got");
    for (const auto& q : procs_) {
      if (q->role != Role::consumer) continue;
      const ConsumerLedger& led = t_->consumers[q->slot];
      for (std::uint32_t j = 0; j < led.count.load(std::memory_order_acquire); ++j) {
        if (led.entries[j].key.load() == key) {
          problem(describe(*p) + " was killed before committing " + key_str(key) + ", which " + describe(*q) + " got");
        }
      }
    }
  }
  if (st.abandoned < killed_in_write) {
    problem(std::to_string(killed_in_write) + " publishers were killed with a claim half written, but " +
            std::to_string(st.abandoned) + " claims were abandoned");
  }
  if (last_durable == nullptr || last_durable->killed) problem("the last durable subscriber was killed");
  const SubscriberStats* d = find_durable(st);
  if (d == nullptr) {
    problem("durable subscriber entry 'd' missing at the end");
    return;
  }
  if (d->cursor != head_) {
    problem("durable subscriber 'd' ended at cursor " + std::to_string(d->cursor) + ", head " + std::to_string(head_));
  }

  struct Anon {
    const Proc* proc;
    ReaderView view;
  };
  std::vector<Anon> anons;
  for (auto& p : procs_) {
    if (p->role != Role::anonymous) continue;
    anons.push_back({p.get(), view_of(t_->readers[p->slot])});
    for (const auto& e : anons.back().view.seen) note(e.first, e.second, describe(*p));
    check_order(anons.back().view.seen, describe(*p));
  }
  std::uint64_t deliveries = chain.size();
  for (const auto& a : anons) deliveries += a.view.seen.size();
  fig_.subscriber_deliveries += deliveries;

  if (policy_ != Policy::drop_oldest) {
    // The durable chain is the reference: exactly the committed messages.
    std::set<std::uint64_t> ref_keys;
    std::set<std::uint64_t> ref_seqs;
    for (const auto& e : chain) {
      ref_keys.insert(e.second);
      ref_seqs.insert(e.first);
    }
    for (int s = 0; s < n_pubs; ++s) {
      const auto su = static_cast<std::size_t>(s);
      for (std::uint32_t i = 0; i < committed[su]; ++i) {
        if (ref_keys.count(key_of(static_cast<std::uint32_t>(s) + 1, i)) == 0) {
          ++fig_.subscriber_missed;
          problem("the durable subscriber 'd' never got " + key_str(key_of(static_cast<std::uint32_t>(s) + 1, i)));
        }
      }
      if (ambiguous[su] && ref_keys.count(key_of(static_cast<std::uint32_t>(s) + 1, committed[su])) != 0) {
        ++fig_.in_flight_committed;
      }
    }
    fig_.messages += ref_keys.size();
    if (head_ - chain.size() != st.abandoned) {
      problem(std::to_string(head_ - chain.size()) + " of " + std::to_string(head_) +
              " sequences carried no message for 'd', but " + std::to_string(st.abandoned) + " claims were abandoned");
    }
    if (d->lost != 0) problem("durable subscriber 'd' counted " + std::to_string(d->lost) + " lost");
    for (const auto& a : anons) {
      const auto& v = a.view.seen;
      const std::string who = describe(*a.proc);
      const std::size_t common = std::min(v.size(), chain.size());
      std::size_t same = 0;
      while (same < common && v[same] == chain[same]) ++same;
      if (same < common) {
        problem(who + " got sequence " + std::to_string(v[same].first) + " (" + key_str(v[same].second) +
                ") where 'd' got sequence " + std::to_string(chain[same].first) + " (" + key_str(chain[same].second) +
                ")");
      }
      if (a.proc->killed) continue;  // a prefix is all it could get
      if (v.size() != chain.size()) {
        fig_.subscriber_missed += chain.size() > v.size() ? chain.size() - v.size() : 0;
        problem(who + " got " + std::to_string(v.size()) + " messages, 'd' got " + std::to_string(chain.size()));
      }
      const ReaderLedger& led = t_->readers[a.proc->slot];
      if (led.end_lost.load() != 0 || led.end_cursor.load() != head_) {
        problem(who + " ended at cursor " + std::to_string(led.end_cursor.load()) + " with " +
                std::to_string(led.end_lost.load()) + " counted lost");
      }
    }
    check_group(st, &ref_seqs, false);
    check_group(st, &ref_seqs, true);
  } else {
    std::uint64_t committed_seen = definite;
    for (int s = 0; s < n_pubs; ++s) {
      const auto su = static_cast<std::size_t>(s);
      if (ambiguous[su] && seen_anywhere.count(key_of(static_cast<std::uint32_t>(s) + 1, committed[su])) != 0) {
        ++fig_.in_flight_committed;
        ++committed_seen;
      }
    }
    fig_.messages += committed_seen;
    // delivered + lost covers every committed message and never more than
    // the positions; exactly the positions when no claim was abandoned.
    auto account = [&](const std::string& who, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& v,
                       std::uint64_t lost, std::uint64_t unknown) {
      std::uint64_t got_definite = 0;
      for (const auto& e : v) got_definite += is_definite(e.second) ? 1 : 0;
      const std::uint64_t missed = definite - got_definite;
      fig_.drop_lost_counted += lost;
      if (missed > lost + unknown) {
        fig_.drop_lost_uncounted += missed - lost - unknown;
        problem(who + " missed " + std::to_string(missed) + " committed messages but counted " + std::to_string(lost) +
                " lost");
      }
      if (v.size() + lost > head_) {
        problem(who + " got " + std::to_string(v.size()) + " and counted " + std::to_string(lost) +
                " lost: more than the " + std::to_string(head_) + " positions");
      }
      if (!publishers_disturbed_ && st.abandoned == 0 && unknown == 0 &&
          (v.size() + lost != head_ || head_ != definite)) {
        problem(who + " got " + std::to_string(v.size()) + " and counted " + std::to_string(lost) + " lost of " +
                std::to_string(head_) + " positions, " + std::to_string(definite) + " committed");
      }
    };
    account("the durable subscriber 'd'", chain, d->lost, unknown_pending);
    for (const auto& a : anons) {
      if (a.proc->killed) continue;
      const ReaderLedger& led = t_->readers[a.proc->slot];
      if (led.end_cursor.load() != head_) {
        problem(describe(*a.proc) + " ended at cursor " + std::to_string(led.end_cursor.load()) + ", head " +
                std::to_string(head_));
      }
      account(describe(*a.proc), a.view.seen, led.end_lost.load(), 0);
    }
    check_group(st, nullptr, false);
    check_group(st, nullptr, true);
  }
  fig_.abandoned_claims += st.abandoned;
}

void Trial::check_group(const ChannelStats& st, const std::set<std::uint64_t>* reference_seqs, bool ordered) {
  const std::string gname = group_name(ordered);
  const GroupStats* g = nullptr;
  for (const auto& x : st.groups) {
    if (x.name == gname) g = &x;
  }
  // Every problem names its group.
  auto problem = [&](const std::string& what) { Trial::problem("group '" + gname + "': " + what); };
  if (g == nullptr) {
    problem("missing at the end");
    return;
  }
  fig_.group_redelivered += g->redelivered;
  fig_.group_expired += g->expired;
  fig_.group_dead_releases += g->dead_consumer_releases;
  fig_.group_lost += g->lost;
  if (g->floor != head_) problem("group floor " + std::to_string(g->floor) + ", head " + std::to_string(head_));
  if (g->dead_lettered != 0) problem("group dead-lettered " + std::to_string(g->dead_lettered));
  if (g->in_flight != 0 || g->due != 0) {
    problem("group ended with " + std::to_string(g->in_flight) + " leases in flight, " + std::to_string(g->due) +
            " due");
  }

  struct PerSeq {
    std::uint64_t key = 0;
    std::uint32_t entries = 0, ack_ok = 0, killed_unconfirmed = 0, ack_lost = 0;
    std::vector<std::uint32_t> attempts;
  };
  std::map<std::uint64_t, PerSeq> seqs;
  for (auto& p : procs_) {
    if (p->role != Role::consumer || p->ordered != ordered) continue;
    const ConsumerLedger& led = t_->consumers[p->slot];
    const std::uint32_t n = led.count.load(std::memory_order_acquire);
    fig_.group_processings += n;
    if (ordered) fig_.ordered_processings += n;
    for (std::uint32_t j = 0; j < n; ++j) {
      const ConsumerEntry& e = led.entries[j];
      const std::uint64_t s = e.seq.load(std::memory_order_relaxed);
      PerSeq& ps = seqs[s];
      ps.key = e.key.load(std::memory_order_relaxed);
      ++ps.entries;
      ps.attempts.push_back(e.attempt.load(std::memory_order_relaxed));
      switch (e.state.load(std::memory_order_acquire)) {
        case kAckOk: ++ps.ack_ok; break;
        case kAckLost:
          ++ps.ack_lost;
          if (e.late.load(std::memory_order_relaxed) == 0) {
            if (policy_ == Policy::drop_oldest && e.overwritten.load(std::memory_order_relaxed) != 0) {
              ++fig_.lease_lost_overwritten;  // the next lap's message took the lease word
            } else {
              problem(describe(*p) + "'s ack of sequence " + std::to_string(s) + " was refused before its deadline");
            }
          }
          break;
        default:
          if (!p->killed) problem(describe(*p) + " never finished its ack of sequence " + std::to_string(s));
          if (j + 1 != n) problem(describe(*p) + " left sequence " + std::to_string(s) + " unacked and went on");
          ++ps.killed_unconfirmed;
          break;
      }
    }
  }
  std::uint64_t acked_seqs = 0;
  std::set<std::uint64_t> processed_keys;
  for (auto& [s, ps] : seqs) {
    processed_keys.insert(ps.key);
    if (reference_seqs != nullptr && reference_seqs->count(s) == 0) {
      problem("the group processed sequence " + std::to_string(s) + ", which no subscriber got");
    }
    if (ps.ack_ok > 1) problem("sequence " + std::to_string(s) + " was acked " + std::to_string(ps.ack_ok) + " times");
    acked_seqs += ps.ack_ok != 0 ? 1 : 0;
    std::sort(ps.attempts.begin(), ps.attempts.end());
    if (std::adjacent_find(ps.attempts.begin(), ps.attempts.end()) != ps.attempts.end()) {
      problem("sequence " + std::to_string(s) + " was delivered twice with one attempt number");
    }
    if (ps.entries > 1) {
      ++fig_.group_duplicates;
      // A second processing is explained only by a delivery whose ack did
      // not complete: its consumer was killed first, or its lease expired.
      if (ps.killed_unconfirmed != 0) ++fig_.dup_consumer_killed;
      if (ps.ack_lost != 0) ++fig_.dup_lease_expired;
      if (ps.killed_unconfirmed + ps.ack_lost == 0) {
        ++fig_.group_unexplained_duplicates;
        problem("sequence " + std::to_string(s) + " was processed " + std::to_string(ps.entries) +
                " times, every time acked");
      }
    }
  }
  // A consumer killed while held says exactly what must happen to its last
  // message: processed but not acked -> delivered again (block, reject);
  // acked but not marked -> never delivered again.
  for (auto& p : procs_) {
    if (p->role != Role::consumer || p->ordered != ordered || !p->killed || p->held_phase == kHoldNone) continue;
    const ConsumerLedger& led = t_->consumers[p->slot];
    const std::uint32_t n = led.count.load(std::memory_order_acquire);
    if (n == 0) {
      problem(describe(*p) + " was held " + kHoldNames[p->held_phase] + " with nothing processed");
      continue;
    }
    const ConsumerEntry& e = led.entries[n - 1];
    const PerSeq& ps = seqs[e.seq.load()];
    const bool again = !ps.attempts.empty() && ps.attempts.back() > e.attempt.load();  // sorted
    if (p->held_phase == kHoldBeforeAck && reference_seqs != nullptr && !again) {
      problem(describe(*p) + " was killed before acking sequence " + std::to_string(e.seq.load()) +
              ", which was never delivered again");
    }
    if (p->held_phase == kHoldBeforeMark && again) {
      problem(describe(*p) + " was killed after acking sequence " + std::to_string(e.seq.load()) +
              ", which was delivered again");
    }
  }
  if (reference_seqs != nullptr) {
    // block, reject: every committed message acked (floor at the head, nothing lost).
    if (g->lost != 0) problem("group counted " + std::to_string(g->lost) + " lost");
    for (std::uint64_t s : *reference_seqs) {
      auto it = seqs.find(s);
      if (it == seqs.end() || (it->second.ack_ok == 0 && it->second.killed_unconfirmed == 0)) {
        ++fig_.group_unacked;
        problem("the group never acked sequence " + std::to_string(s));
      }
    }
  } else {
    // drop_oldest: every committed message the group never processed is
    // counted lost, and no position it acked is.
    std::uint64_t definite_missed = 0;
    for (auto& p : procs_) {
      if (p->role != Role::publisher) continue;
      const std::uint32_t c = t_->publishers[p->slot].committed.load();
      for (std::uint32_t i = 0; i < c; ++i) {
        definite_missed += processed_keys.count(key_of(static_cast<std::uint32_t>(p->slot) + 1, i)) == 0 ? 1 : 0;
      }
    }
    if (definite_missed > g->lost) {
      problem("the group never processed " + std::to_string(definite_missed) + " committed messages but counted " +
              std::to_string(g->lost) + " lost");
    }
    if (g->lost + acked_seqs > head_) {
      problem("the group counted " + std::to_string(g->lost) + " lost and acked " + std::to_string(acked_seqs) +
              " sequences of " + std::to_string(head_));
    }
  }
  if (ordered) check_key_order();
}

void Trial::check_key_order() {
  struct Lease {
    std::uint64_t order_key, seq, start, end, start_ns, deadline_ns, head_at_start;
    bool overwritten;  ///< drop_oldest: refused because the next lap took the lease word
    const Proc* proc;
  };
  std::vector<Lease> leases;
  for (auto& p : procs_) {
    if (p->role != Role::consumer || !p->ordered) continue;
    const ConsumerLedger& led = t_->consumers[p->slot];
    const std::uint32_t n = led.count.load(std::memory_order_acquire);
    const std::uint64_t killed_tick = led.killed_tick.load(std::memory_order_acquire);
    for (std::uint32_t j = 0; j < n; ++j) {
      const ConsumerEntry& e = led.entries[j];
      Lease l{e.order_key.load(std::memory_order_relaxed),
              e.seq.load(std::memory_order_relaxed),
              e.start_tick.load(std::memory_order_relaxed),
              e.end_tick.load(std::memory_order_relaxed),
              e.start_ns.load(std::memory_order_relaxed),
              e.deadline_ns.load(std::memory_order_relaxed),
              e.head_at_start.load(std::memory_order_relaxed),
              e.state.load(std::memory_order_acquire) == kAckLost && e.overwritten.load(std::memory_order_relaxed) != 0,
              p.get()};
      // Killed before its end tick: the lease ended after the parent's tick
      // before the kill (check_group reports an open lease of a survivor).
      if (l.end == 0) l.end = p->killed && killed_tick != 0 ? killed_tick : UINT64_MAX;
      leases.push_back(l);
    }
  }
  std::sort(leases.begin(), leases.end(), [](const Lease& a, const Lease& b) {
    return a.order_key != b.order_key ? a.order_key < b.order_key : a.start < b.start;
  });
  std::uint64_t concurrent = 0, order = 0;
  for (std::size_t b = 0; b < leases.size();) {
    std::size_t e = b;
    while (e < leases.size() && leases[e].order_key == leases[b].order_key) ++e;
    for (std::size_t j = b; j < e; ++j) {
      const Lease& c = leases[j];
      // On drop_oldest a lease of a message the ring then overwrote ends
      // with it (lost to the group, counted; its ack is refused): the key's
      // later messages flow at once, and a consumer that copied the message
      // just before the overwrite records its lease after theirs. Not an
      // order violation: that lease was taken first, and never completes.
      const bool lapped_before = j > b && policy_ == Policy::drop_oldest &&
                                 (c.overwritten || leases[j - 1].head_at_start >= c.seq + kCapacity);
      if (lapped_before && c.seq < leases[j - 1].seq) ++fig_.ordered_after_expiry;
      if (j > b && c.seq < leases[j - 1].seq && !lapped_before && ++order <= 3) {
        problem("group 'o': key " + std::to_string(c.order_key) + ": sequence " + std::to_string(c.seq) +
                " leased at tick " + std::to_string(c.start) + " by " + describe(*c.proc) + " after sequence " +
                std::to_string(leases[j - 1].seq));
      }
      for (std::size_t i = b; i < j; ++i) {
        const Lease& a = leases[i];
        if (a.end <= c.start) continue;
        // An expired lease (the lease clock counts whole ms) or, on
        // drop_oldest, one the next lap took over (its message is lost to
        // the group, and counted so), is no longer held.
        const bool lapped = policy_ == Policy::drop_oldest && (a.overwritten || c.head_at_start >= a.seq + kCapacity);
        if (c.start_ns + 1'000'000 >= a.deadline_ns || lapped) {
          ++fig_.ordered_after_expiry;
          continue;
        }
        if (++concurrent <= 3) {
          problem("group 'o': key " + std::to_string(c.order_key) + ": " + describe(*c.proc) + " leased sequence " +
                  std::to_string(c.seq) + " at tick " + std::to_string(c.start) + " while " + describe(*a.proc) +
                  " held sequence " + std::to_string(a.seq) + " (ticks " + std::to_string(a.start) + ".." +
                  std::to_string(a.end) + ")");
        }
      }
    }
    b = e;
  }
  fig_.ordered_concurrent_same_key += concurrent;
  fig_.ordered_order_violations += order;
}

}  // namespace

std::string Figures::line() const {
  std::ostringstream o;
  o << trials << " trials (block " << trials_by_policy[1] << ", drop_oldest " << trials_by_policy[2] << ", reject "
    << trials_by_policy[3] << "), " << messages << " messages committed in " << positions << " sequences, "
    << abandoned_claims << " claims abandoned; " << events << " events (";
  for (int a = 0; a < kActions; ++a) o << (a ? ", " : "") << kActionNames[a] << " " << by_action[a];
  o << "; victims:";
  for (int r = 0; r < kRoles; ++r) o << (r ? "," : "") << " " << kRoleNames[r] << " " << by_role[r];
  o << "; " << held_events << " at a held phase, " << late_events << " late); " << claims_killed_in_write
    << " publishers killed with a claim half written; " << in_flight_at_kill << " publishes in flight at a kill ("
    << in_flight_committed << " of them committed); publishers retried " << publish_timeouts << " timeouts, "
    << publish_full << " full, " << publish_abandoned << " abandoned; subscribers: " << subscriber_deliveries
    << " deliveries, " << subscriber_missed << " missed, " << subscriber_duplicates << " duplicated, "
    << durable_resumes << " durable resumes (" << durable_pending_consumed
    << " with the last message consumed before its mark), drop_oldest lost " << drop_lost_counted << " counted, "
    << drop_lost_uncounted << " uncounted; group: " << group_processings << " processings, " << group_duplicates
    << " messages processed twice or more (" << dup_consumer_killed << " after a consumer was killed before its ack, "
    << dup_lease_expired << " after a stopped consumer's lease expired, " << group_unexplained_duplicates
    << " unexplained), " << lease_lost_overwritten << " acks refused because the next lap took the slot (drop_oldest), "
    << group_unacked << " never acked, " << group_lost << " counted lost (drop_oldest), " << group_redelivered
    << " redelivered, " << group_expired << " expired, " << group_dead_releases << " dead-consumer releases; "
    << "of them the per_key group: " << ordered_processings << " processings, " << ordered_concurrent_same_key
    << " concurrent same-key leases (" << ordered_after_expiry << " more after a lease expired or was overwritten), "
    << ordered_order_violations << " order violations; " << stuck << " stuck processes; " << std::fixed
    << std::setprecision(1) << seconds << " s";
  return o.str();
}

void run_trial(Policy policy, std::uint64_t seed, std::uint64_t trial, Figures& fig) {
  const auto start = Clock::now();
  Trial t(policy, seed, fig);
  const std::vector<std::string> problems = t.run();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  fig.seconds += secs;
  if (std::getenv("SHMBUS_TORTURE_VERBOSE") != nullptr) {  // one line per trial, for diagnosis
    std::printf("trial %llu on %s (seed %llu): %.3f s\n", static_cast<unsigned long long>(trial),
                std::string(to_string(policy)).c_str(), static_cast<unsigned long long>(seed), secs);
    for (const auto& e : t.events()) std::printf("  %s\n", e.c_str());
  }
  if (problems.empty()) return;
  std::ostringstream o;
  o << "trial " << trial << " on " << to_string(policy) << " (seed " << seed << "):";
  for (const auto& e : t.events()) o << "\n  " << e;
  for (const auto& p : problems) o << "\n  PROBLEM: " << p;
  FAIL_CHECK(o.str());
}

}  // namespace shmbus::torture
