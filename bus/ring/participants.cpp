#include "bus/ring/participants.hpp"

#include <algorithm>
#include <climits>
#include <optional>

#include "bus/archive/archive_source.hpp"
#include "bus/common/util.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"

namespace shmbus::bus {

namespace {

shm::ProcessId owner_of(std::uint64_t control, const std::atomic<std::uint64_t>& start) {
  return {control_pid(control), shm::load_relaxed(start)};
}

// Whether the owner recorded in an entry is dead. While an entry is being
// claimed or resumed its start-time word may still be the previous owner's,
// so only the pid is checked then.
bool owner_dead(std::uint64_t control, const std::atomic<std::uint64_t>& start) {
  const std::uint32_t st = control_state(control);
  if (st == kEntryClaiming || st == kEntryResuming) {
    return shm::process_liveness({control_pid(control), 0}) == shm::Liveness::dead;
  }
  return shm::process_liveness(owner_of(control, start)) == shm::Liveness::dead;
}

// Wakes publishers sleeping on a full ring (block policy).
void wake_publishers(ChannelState& ch) noexcept {
  if (ch.read_only()) return;
  // The entry CAS that freed a cursor was acq_rel: the fence makes it part of
  // the seq_cst order the sleep-flag protocol relies on.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // SYNC(sleep-flag): pairs with announce_sleep in PublisherCore::wait_for_space.
  shm::wake_sleepers(ch.producer->pub_sleeping, ch.producer->pub_futex);
}

// Recovers one subscriber entry whose owner is dead: anonymous -> free,
// durable -> detached (keeps cursor). A dead claimer -> free.
bool reclaim_subscriber(ChannelState& ch, SubscriberEntry& e) noexcept {
  std::uint64_t c = shm::load_acquire(e.control);
  const std::uint32_t state = control_state(c);
  const bool durable = (shm::load_relaxed(e.flags) & kSubDurable) != 0;
  if (state == kEntryClaiming || state == kEntryResuming) {
    if (!owner_dead(c, e.owner_start)) return false;
    // A fresh claim that died is freed; a durable resume that died keeps
    // its cursor (detached).
    return shm::cas_acq_rel(e.control, c, make_control(state == kEntryResuming ? kEntryDetached : kEntryFree, 0));
  }
  if (state != kEntryActive && state != kEntryEvicted) return false;
  if (control_pid(c) == 0 || !owner_dead(c, e.owner_start)) return false;
  const std::uint64_t next =
      durable ? make_control(state == kEntryEvicted ? kEntryEvicted : kEntryDetached, 0) : make_control(kEntryFree, 0);
  if (shm::cas_acq_rel(e.control, c, next)) {
    ch.producer->dead_reclaimed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    return true;
  }
  return false;
}

}  // namespace

Result<std::uint32_t> attach_publisher(ChannelState& ch) {
  if (auto w = ch.require_writable(); !w) return w.error();
  const shm::ProcessId me = shm::self_process();
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < ch.geo.max_publishers; ++i) {
      PublisherEntry& e = ch.publishers[i];
      std::uint64_t c = shm::load_acquire(e.control);
      if (control_state(c) == kEntryActive && pass == 1 && owner_dead(c, e.owner_start)) {
        // A dead publisher's entry: take it over (its counters go on).
        if (!shm::cas_acq_rel(e.control, c, make_control(kEntryFree, 0))) continue;
        c = make_control(kEntryFree, 0);
      }
      if (control_state(c) != kEntryFree) continue;
      if (!shm::cas_acq_rel(e.control, c, make_control(kEntryClaiming, me.pid))) continue;
      shm::store_relaxed(e.owner_start, me.start_time);
      // The counters are never reset, so the channel's totals (the sum over
      // every entry) never go back; the base words record where this owner
      // starts. The previous owner is gone: it detached (its last stores are
      // ordered before the CAS that freed the entry, which our CAS above
      // acquired) or it died. relaxed: statistics, published by the release below.
      shm::store_relaxed(e.base_published, shm::load_relaxed(e.published));
      shm::store_relaxed(e.base_rejected, shm::load_relaxed(e.rejected));
      shm::store_relaxed(e.base_timeouts, shm::load_relaxed(e.timeouts));
      shm::store_relaxed(e.base_blocked_ns, shm::load_relaxed(e.blocked_ns));
      shm::store_relaxed(e.base_aborted, shm::load_relaxed(e.aborted));
      shm::store_relaxed(e.base_lost_claims, shm::load_relaxed(e.lost_claims));
      shm::store_release(e.control, make_control(kEntryActive, me.pid));
      return i;
    }
  }
  return Error(ErrorCode::table_full, "channel '" + ch.name + "' has all " + num(ch.geo.max_publishers) +
                                          " publisher entries in use (raise max_publishers when creating it)");
}

void detach_publisher(ChannelState& ch, std::uint32_t index) noexcept {
  PublisherEntry& e = ch.publishers[index];
  std::uint64_t c = shm::load_acquire(e.control);
  if (control_state(c) == kEntryActive && control_pid(c) == shm::self_process().pid) {
    (void)shm::cas_acq_rel(e.control, c, make_control(kEntryFree, 0));
  }
}

bool entry_gates(std::uint64_t control) noexcept {
  switch (control_state(control)) {
    case kEntryActive:
    case kEntryDetached:
    case kEntryResuming: return true;  // a durable cursor being taken over stays valid
    default: return false;
  }
}

namespace {

// Whether the gating entry with control word `c` is the channel's archiver.
// The flag is read after the acquire of `control` that showed the entry
// gating: a new owner clears it before the release that activates the entry.
bool is_archiver(const SubscriberEntry& e) noexcept {
  return (shm::load_relaxed(e.flags) & kSubArchiver) != 0;  // relaxed: ordered by the control acquire
}

// Whether an archiver entry gates now: then it alone stands for the
// subscribers (docs/protocol.md 13.12): whatever another subscriber has not
// read yet is in the archive before the archiver's cursor passes it.
bool archiver_gates(const ChannelState& ch) noexcept {
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    const SubscriberEntry& e = ch.subscribers[i];
    if (entry_gates(shm::load_acquire(e.control)) && is_archiver(e)) return true;
  }
  return false;
}

}  // namespace

std::uint64_t gating_minimum(const ChannelState& ch, std::uint64_t head) noexcept {
  std::uint64_t min = head;
  std::uint64_t min_archiver = head;
  bool archiver = false;
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    const SubscriberEntry& e = ch.subscribers[i];
    const std::uint64_t c = shm::load_acquire(e.control);
    if (!entry_gates(c)) continue;
    // SYNC(cursor): acquire, pairs with the release (or seq_cst) cursor store in
    // SubscriberCore::publish_cursor: the reader finished with every slot
    // below the cursor before this publisher may overwrite it.
    const std::uint64_t cur = shm::load_acquire(e.cursor);
    min = std::min(min, cur);
    if (is_archiver(e)) {
      archiver = true;
      min_archiver = std::min(min_archiver, cur);
    }
  }
  // With an archiver gating, the other subscribers do not: what they have
  // not read is in the archive (the archiver publishes its cursor only
  // after the append), and they read it from there.
  if (archiver) min = min_archiver;
  for (std::uint32_t i = 0; i < ch.geo.max_groups; ++i) {
    const GroupEntry& g = *ch.group(i);
    if (control_state(shm::load_acquire(g.control)) != kEntryActive) continue;
    // SYNC(floor): acquire, pairs with the seq_cst floor CAS in
    // ConsumerCore::advance_floor: every lease below it is finished.
    min = std::min(min, shm::load_acquire(g.floor));
  }
  return min;
}

bool reclaim_and_evict(ChannelState& ch, std::uint64_t head, std::uint64_t now_ns) noexcept {
  bool changed = false;
  const std::uint64_t cap = ch.geo.capacity;
  // With an archiver gating, only the archiver holds publishers (see
  // gating_minimum): no other subscriber needs to be reclaimed or evicted here.
  const bool archiver = archiver_gates(ch);
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    SubscriberEntry& e = ch.subscribers[i];
    std::uint64_t c = shm::load_acquire(e.control);
    if (!entry_gates(c)) continue;
    if (archiver && !is_archiver(e)) continue;
    const std::uint64_t cur = shm::load_acquire(e.cursor);
    if (cur + cap > head) {
      continue;  // not a full ring behind: not what holds publishers
    }
    if (reclaim_subscriber(ch, e)) {
      changed = true;
      continue;
    }
    if (ch.geo.eviction_timeout_ns == 0) continue;
    const std::uint32_t state = control_state(c);
    if (state != kEntryActive && state != kEntryDetached) continue;
    // relaxed: the watch words are a publisher-side timer; a race between
    // publishers only restarts the timer.
    if (shm::load_relaxed(e.evict_watch_cursor) != cur || shm::load_relaxed(e.evict_watch_since_ns) == 0) {
      shm::store_relaxed(e.evict_watch_cursor, cur);
      shm::store_relaxed(e.evict_watch_since_ns, now_ns);
      continue;
    }
    if (now_ns - shm::load_relaxed(e.evict_watch_since_ns) < ch.geo.eviction_timeout_ns) continue;
    if (shm::cas_acq_rel(e.control, c, make_control(kEntryEvicted, control_pid(c)))) {
      shm::store_relaxed(e.evict_watch_since_ns, std::uint64_t{0});
      ch.producer->evictions.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      changed = true;
    }
  }
  return changed;
}

std::uint32_t reclaim_dead(ChannelState& ch) noexcept {
  if (ch.read_only()) return 0;
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    if (reclaim_subscriber(ch, ch.subscribers[i])) ++n;
  }
  for (std::uint32_t i = 0; i < ch.geo.max_publishers; ++i) {
    PublisherEntry& e = ch.publishers[i];
    std::uint64_t c = shm::load_acquire(e.control);
    const std::uint32_t st = control_state(c);
    if (st != kEntryActive && st != kEntryClaiming) continue;
    const bool dead = st == kEntryClaiming ? shm::process_liveness({control_pid(c), 0}) == shm::Liveness::dead
                                           : owner_dead(c, e.owner_start);
    if (dead && shm::cas_acq_rel(e.control, c, make_control(kEntryFree, 0))) ++n;
  }
  if (n != 0) wake_publishers(ch);
  return n;
}

std::uint64_t oldest_sequence(const ChannelState& ch) noexcept {
  // acquire: pairs with nothing in particular; a fresh-enough head is all we need.
  const std::uint64_t head = shm::load_acquire(ch.producer->head);
  return head > ch.geo.capacity ? head - ch.geo.capacity : 0;
}

std::uint64_t start_position(const ChannelState& ch, const StartAt& start, std::uint64_t* lost) noexcept {
  if (lost != nullptr) *lost = 0;
  switch (start.kind) {
    case StartAt::Kind::earliest: return oldest_sequence(ch);
    case StartAt::Kind::latest: return shm::load_acquire(ch.producer->head);
    case StartAt::Kind::sequence: return std::min(start.value, kMaxSequence);
    case StartAt::Kind::timestamp: {
      const TimePosition p = locate_time(ch, start.value);
      if (lost != nullptr) *lost = p.overwritten;
      return p.sequence;
    }
  }
  return shm::load_acquire(ch.producer->head);
}

namespace {

// Reads slot `seq`'s timestamp if the slot holds it committed (validated by
// re-reading the stamp); false otherwise.
bool slot_timestamp(const ChannelState& ch, std::uint64_t seq, std::uint64_t& ts) noexcept {
  const SlotHeader* hdr = ch.slot(seq);
  const std::uint64_t want = make_stamp(seq, kStampCommitted);
  if (shm::load_acquire(hdr->stamp) != want) return false;
  const std::uint64_t stored =
      std::atomic_ref<const std::uint64_t>(hdr->meta.timestamp).load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (shm::load_relaxed(hdr->stamp) != want) return false;
  ts = stored_time_ns(stored);
  return true;
}

}  // namespace

TimePosition locate_time(const ChannelState& ch, std::uint64_t t) noexcept {
  const std::uint64_t oldest = oldest_sequence(ch);
  std::uint64_t lo = oldest;
  std::uint64_t hi = shm::load_acquire(ch.producer->head);
  // Invariant: every readable sequence < lo has ts < t; answer in [lo, hi].
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    std::uint64_t ts = 0;
    // Unreadable slots (overwritten, abandoned, in flight) are treated as
    // older than t when below the middle of the ring: skip past them.
    if (!slot_timestamp(ch, mid, ts) || ts < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  // lo == oldest > 0: the oldest retained message (read, validated) is
  // already at or after t, and the ring has wrapped, so messages before it
  // were overwritten; their times are gone, so any of them may have been
  // published at or after t. (lo > oldest: a message the ring held before
  // lo was older than t, so nothing since t is missing -- unless a
  // drop_oldest writer overwrote the oldest slots during this search, which
  // the search cannot tell from old messages.)
  return {lo, lo == oldest && oldest > 0 ? oldest : 0};
}

std::uint64_t sequence_at_time(const ChannelState& ch, std::uint64_t t) noexcept {
  const TimePosition p = locate_time(ch, t);
  return p.sequence - p.overwritten;
}

namespace {

// One pass of attach_subscriber over the table: an answer (the attach, or
// an error), or nothing.
using AttachAnswer = std::optional<Result<SubscriberAttach>>;

// Finishes an attach: claiming/resuming -> active, one CAS (a concurrent
// reclaim may have judged us dead meanwhile; then we start over).
std::optional<SubscriberAttach> activate(SubscriberEntry& e, std::uint32_t i, std::uint64_t held, bool resumed,
                                         std::uint64_t cursor, const shm::ProcessId& me) {
  shm::store_relaxed(e.owner_start, me.start_time);
  shm::store_relaxed(e.attached_realtime_ns, shm::realtime_ns());
  const std::uint64_t ctl = make_control(kEntryActive, me.pid);
  // seq_cst: orders the cursor store before it in the gating scans'
  // view, and pairs with the seq_cst scans of same-name entries in
  // lose_durable_name_race.
  if (!e.control.compare_exchange_strong(held, ctl, std::memory_order_seq_cst)) return std::nullopt;
  return SubscriberAttach{i, ctl, cursor, resumed};
}

// Where a resumed entry reads from: its cursor, or, if it was evicted while
// away, the oldest message, the gap it lost counted now. With an archive the
// cursor stands: the first read finds what the ring lost there, and counts
// only what the archive lacks.
std::uint64_t resume_cursor(const ChannelState& ch, SubscriberEntry& e, bool was_evicted) noexcept {
  const std::uint64_t cursor = shm::load_acquire(e.cursor);
  if (!was_evicted || !ch.geo.archive_dir.empty()) return cursor;
  const std::uint64_t oldest = oldest_sequence(ch);
  if (cursor >= oldest) return cursor;
  shm::single_writer_add(e.lost, oldest - cursor);
  shm::single_writer_add(e.lapped_events, 1);
  shm::store_release(e.cursor, oldest);
  return oldest;
}

// Resumes the durable cursor called `name` if there is one and its owner is
// gone. Nothing, with `retry` set, when another process got in the way;
// nothing, `retry` clear, when no entry holds the name.
AttachAnswer resume_durable(ChannelState& ch, std::string_view name, const shm::ProcessId& me, bool& retry) {
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    SubscriberEntry& e = ch.subscribers[i];
    std::uint64_t c = shm::load_acquire(e.control);
    const std::uint32_t st = control_state(c);
    if (st == kEntryFree || (shm::load_relaxed(e.flags) & kSubDurable) == 0) continue;
    if (read_name(e.name) != name) continue;
    if (control_pid(c) != 0 && !owner_dead(c, e.owner_start)) {
      if (st == kEntryClaiming || st == kEntryResuming) {
        retry = true;  // another process is attaching this name right now
        return std::nullopt;
      }
      return Result<SubscriberAttach>(Error(ErrorCode::busy, "durable subscriber '" + std::string(name) +
                                                                 "' on channel '" + ch.name + "' is in use by pid " +
                                                                 num(control_pid(c))));
    }
    const std::uint64_t held = make_control(kEntryResuming, me.pid);
    retry = true;  // unless the entry becomes ours
    if (!shm::cas_acq_rel(e.control, c, held)) return std::nullopt;
    if (auto a = activate(e, i, held, true, resume_cursor(ch, e, st == kEntryEvicted), me)) {
      return Result<SubscriberAttach>(*a);
    }
    return std::nullopt;
  }
  return std::nullopt;
}

// Fills a freshly claimed entry: no flags, the name, counters zeroed, the
// cursor at `start`. Returns the cursor; `start_lost` is what starting there
// lost.
std::uint64_t prepare_new_entry(ChannelState& ch, SubscriberEntry& e, std::string_view name, const StartAt& start,
                                std::uint64_t& start_lost) {
  shm::store_relaxed(e.flags, std::uint32_t{0});
  write_name(e.name, name);
  // relaxed: statistics and watch words, published by activate()'s CAS.
  shm::store_relaxed(e.delivered, std::uint64_t{0});
  shm::store_relaxed(e.lost, std::uint64_t{0});
  shm::store_relaxed(e.lapped_events, std::uint64_t{0});
  shm::store_relaxed(e.evict_watch_since_ns, std::uint64_t{0});
  start_lost = 0;
  std::uint64_t cursor = start_position(ch, start, &start_lost);
  // A channel with an archive reaches further back than its ring: earliest
  // and a time older than the ring start in the archive (a sequence older
  // than the ring needs nothing here: the first read finds it there).
  if (!ch.geo.archive_dir.empty()) cursor = archive::archive_start_position(ch, start, cursor, start_lost);
  if (start_lost != 0) {
    // Started at a time older than the ring: counted now (the entry
    // shows it at once), reported by the first poll.
    shm::store_relaxed(e.lost, start_lost);
    shm::store_relaxed(e.lapped_events, std::uint64_t{1});
  }
  shm::store_release(e.cursor, cursor);
  return cursor;
}

// Announces new entry `i` as durable subscriber `name`, then settles a race
// with a concurrent creator of the same name: true if this entry must back
// off (lose_name_race).
bool lose_durable_name_race(ChannelState& ch, SubscriberEntry& e, std::uint32_t i, std::string_view name) {
  e.flags.store(kSubDurable, std::memory_order_seq_cst);
  const auto same_durable_name = [&](std::uint32_t j) {
    const SubscriberEntry& o = ch.subscribers[j];
    const std::uint64_t oc = o.control.load(std::memory_order_seq_cst);
    return control_state(oc) != kEntryFree && (shm::load_relaxed(o.flags) & kSubDurable) != 0 &&
           read_name(o.name) == name;
  };
  const auto claiming = [&](std::uint32_t j) {
    return control_state(shm::load_acquire(ch.subscribers[j].control)) == kEntryClaiming;
  };
  return lose_name_race(i, ch.geo.max_subscribers, same_durable_name, claiming);
}

// Attaches in a free entry (durable if `name` is not empty). table_full if
// there is none; nothing when another process got in the way (retry).
AttachAnswer attach_new(ChannelState& ch, std::string_view name, const StartAt& start, const shm::ProcessId& me) {
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    SubscriberEntry& e = ch.subscribers[i];
    std::uint64_t c = shm::load_acquire(e.control);
    if (control_state(c) != kEntryFree) continue;
    const std::uint64_t held = make_control(kEntryClaiming, me.pid);
    if (!shm::cas_acq_rel(e.control, c, held)) continue;
    std::uint64_t start_lost = 0;
    const std::uint64_t cursor = prepare_new_entry(ch, e, name, start, start_lost);
    if (!name.empty() && lose_durable_name_race(ch, e, i, name)) {
      shm::store_relaxed(e.flags, std::uint32_t{0});
      std::uint64_t mine = held;
      (void)shm::cas_acq_rel(e.control, mine, make_control(kEntryFree, 0));
      return std::nullopt;
    }
    auto a = activate(e, i, held, false, cursor, me);
    if (!a) return std::nullopt;
    a->start_lost = start_lost;
    return Result<SubscriberAttach>(*a);
  }
  return Result<SubscriberAttach>(
      Error(ErrorCode::table_full, "channel '" + ch.name + "' has all " + num(ch.geo.max_subscribers) +
                                       " subscriber entries in use (raise max_subscribers when creating it)"));
}

}  // namespace

Result<SubscriberAttach> attach_subscriber(ChannelState& ch, std::string_view name, const StartAt& start) {
  if (auto w = ch.require_writable(); !w) return w.error();
  const bool durable = !name.empty();
  if (durable) {
    if (auto r = validate_name("subscriber", name); !r) return r.error();
  }
  const shm::ProcessId me = shm::self_process();
  (void)reclaim_dead(ch);
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (attempt > 0) shm::sleep_ns(1000ULL << std::min(attempt, 10));  // let a racing attach finish
    if (durable) {
      // Resume an existing durable cursor with this name.
      bool retry = false;
      if (auto r = resume_durable(ch, name, me, retry)) return std::move(*r);
      if (retry) continue;
    }
    // A new entry.
    if (auto r = attach_new(ch, name, start, me)) return std::move(*r);
  }
  return Error(ErrorCode::busy, "could not attach subscriber '" + std::string(name) + "' to channel '" + ch.name +
                                    "': other processes kept attaching the same entries");
}

void detach_subscriber(ChannelState& ch, std::uint32_t index, std::uint64_t control) noexcept {
  if (control_pid(control) != shm::self_process().pid) return;  // not ours (a forked child)
  SubscriberEntry& e = ch.subscribers[index];
  const bool durable = (shm::load_relaxed(e.flags) & kSubDurable) != 0;
  std::uint64_t c = control;
  const std::uint64_t next = durable ? make_control(kEntryDetached, 0) : make_control(kEntryFree, 0);
  if (!shm::cas_acq_rel(e.control, c, next)) {
    // Evicted meanwhile: keep the eviction visible for a durable resume.
    if (control_state(c) == kEntryEvicted && control_pid(c) == control_pid(control)) {
      (void)shm::cas_acq_rel(e.control, c, durable ? make_control(kEntryEvicted, 0) : make_control(kEntryFree, 0));
    }
  }
  wake_publishers(ch);
}

Result<void> remove_durable_subscriber(ChannelState& ch, std::string_view name) {
  if (auto w = ch.require_writable(); !w) return w.error();
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    SubscriberEntry& e = ch.subscribers[i];
    std::uint64_t c = shm::load_acquire(e.control);
    if (control_state(c) == kEntryFree || (shm::load_relaxed(e.flags) & kSubDurable) == 0) continue;
    if (read_name(e.name) != name) continue;
    if (control_pid(c) != 0 && !owner_dead(c, e.owner_start)) {
      return Error(ErrorCode::busy,
                   "durable subscriber '" + std::string(name) + "' is in use by pid " + num(control_pid(c)));
    }
    if (shm::cas_acq_rel(e.control, c, make_control(kEntryFree, 0))) {
      wake_publishers(ch);
      return {};
    }
  }
  return Error(ErrorCode::not_found, "channel '" + ch.name + "' has no durable subscriber '" + std::string(name) + "'");
}

}  // namespace shmbus::bus
