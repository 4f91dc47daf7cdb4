#include "bus/ring/stats.hpp"

#include <algorithm>

#include "bus/archive/archive_stats.hpp"
#include "bus/common/util.hpp"
#include "bus/group/consumer_core.hpp"
#include "bus/group/ordered_stats.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/liveness.hpp"

namespace shmbus::bus {

namespace {
const char* state_name(std::uint32_t s) {
  switch (s) {
    case kEntryClaiming: return "claiming";
    case kEntryActive: return "active";
    case kEntryDetached: return "detached";
    case kEntryEvicted: return "evicted";
    case kEntryResuming: return "resuming";
    default: return "free";
  }
}
bool alive(std::uint64_t control, const std::atomic<std::uint64_t>& start) {
  if (control_pid(control) == 0) return false;
  return shm::process_liveness({control_pid(control), shm::load_relaxed(start)}) != shm::Liveness::dead;
}

// The channel's settings and the producer block's counters.
ChannelStats channel_fields(const ChannelState& ch) {
  ChannelStats s;
  s.bus = ch.bus;
  s.name = ch.name;
  s.policy = ch.geo.policy;
  s.timestamps = ch.geo.timestamps;
  s.capacity = ch.geo.capacity;
  s.slot_size = ch.geo.slot_size;
  s.max_payload = ch.geo.max_payload;
  s.max_groups = ch.geo.max_groups;
  s.abandoned = shm::load_relaxed(ch.producer->abandoned);
  s.evictions = shm::load_relaxed(ch.producer->evictions);
  s.dead_reclaimed = shm::load_relaxed(ch.producer->dead_reclaimed);
  s.creator_pid = ch.header->creator_pid;
  s.epoch = ch.header->epoch;
  s.created_realtime_ns = ch.header->created_realtime_ns;
  return s;
}

// counter - base: what an entry's current owner did (saturating: the entry
// may change owners while we read).
std::uint64_t since(const std::atomic<std::uint64_t>& ctr, const std::atomic<std::uint64_t>& base) {
  const std::uint64_t b = shm::load_relaxed(base);
  const std::uint64_t v = shm::load_relaxed(ctr);
  return v > b ? v - b : 0;
}

// Producer totals over every entry, free ones included: an entry's counters
// are never reset (participants.cpp, attach_publisher), so each term and the sum
// only grow. Per active publisher: what its current owner did.
void add_publishers(const ChannelState& ch, ChannelStats& s) {
  for (std::uint32_t i = 0; i < ch.geo.max_publishers; ++i) {
    const PublisherEntry& e = ch.publishers[i];
    const std::uint64_t c = shm::load_acquire(e.control);
    s.published += shm::load_relaxed(e.published);
    s.rejected += shm::load_relaxed(e.rejected);
    s.timeouts += shm::load_relaxed(e.timeouts);
    s.blocked_ns += shm::load_relaxed(e.blocked_ns);
    s.aborted += shm::load_relaxed(e.aborted);
    s.lost_claims += shm::load_relaxed(e.lost_claims);
    if (control_state(c) != kEntryActive) continue;
    PublisherStats p;
    p.index = i;
    p.pid = control_pid(c);
    p.alive = alive(c, e.owner_start);
    p.published = since(e.published, e.base_published);
    p.rejected = since(e.rejected, e.base_rejected);
    p.timeouts = since(e.timeouts, e.base_timeouts);
    p.blocked_ns = since(e.blocked_ns, e.base_blocked_ns);
    p.aborted = since(e.aborted, e.base_aborted);
    p.lost_claims = since(e.lost_claims, e.base_lost_claims);
    s.publishers.push_back(p);
  }
}

// Every subscriber entry in use (lags are derived later, from the head).
// Returns the smallest gating cursor, UINT64_MAX if none gates.
std::uint64_t add_subscribers(const ChannelState& ch, ChannelStats& s) {
  std::uint64_t gate = UINT64_MAX;
  std::uint64_t archiver_gate = UINT64_MAX;
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    const SubscriberEntry& e = ch.subscribers[i];
    const std::uint64_t c = shm::load_acquire(e.control);
    if (control_state(c) == kEntryFree) continue;
    SubscriberStats sub;
    sub.index = i;
    sub.durable = (shm::load_relaxed(e.flags) & kSubDurable) != 0;
    sub.name = sub.durable ? read_name(e.name) : std::string();
    sub.state = state_name(control_state(c));
    sub.pid = control_pid(c);
    sub.alive = alive(c, e.owner_start);
    sub.cursor = shm::load_acquire(e.cursor);
    sub.delivered = shm::load_relaxed(e.delivered);
    sub.lost = shm::load_relaxed(e.lost);
    sub.lapped_events = shm::load_relaxed(e.lapped_events);
    if (entry_gates(c)) {
      gate = std::min(gate, sub.cursor);
      if ((shm::load_relaxed(e.flags) & kSubArchiver) != 0) archiver_gate = std::min(archiver_gate, sub.cursor);
    }
    s.subscribers.push_back(std::move(sub));
  }
  // As gating_minimum: while an archiver gates, no other subscriber does.
  return archiver_gate != UINT64_MAX ? archiver_gate : gate;
}

// A group entry's own words: names, positions, settings, counters.
GroupStats group_fields(const GroupEntry& g, std::uint32_t index) {
  GroupStats gs;
  gs.index = index;
  gs.name = read_name(g.name);
  gs.dlq = read_name(g.dlq);
  gs.floor = shm::load_acquire(g.floor);
  gs.next = shm::load_acquire(g.next);
  gs.visibility_timeout_ns = g.visibility_timeout_ns;
  gs.max_deliveries = g.max_deliveries;
  gs.delivered = shm::load_relaxed(g.delivered);
  gs.acked = shm::load_relaxed(g.acked);
  gs.redelivered = shm::load_relaxed(g.redelivered);
  gs.dead_lettered = shm::load_relaxed(g.dead_lettered);
  gs.nacked = shm::load_relaxed(g.nacked);
  gs.expired = shm::load_relaxed(g.expired);
  gs.lost = shm::load_relaxed(g.lost);
  gs.dlq_failures = shm::load_relaxed(g.dlq_failures);
  gs.dead_consumer_releases = shm::load_relaxed(g.dead_consumer_releases);
  gs.ordering =
      g.ordering == static_cast<std::uint32_t>(GroupOrdering::per_key) ? GroupOrdering::per_key : GroupOrdering::none;
  gs.order_window = g.order_window;
  return gs;
}

// Counts group `index`'s leases between its floor and next (at most one
// ring): in flight, due for a retry, or due for the DLQ.
void count_leases(const ChannelState& ch, std::uint32_t index, GroupStats& gs) {
  const std::uint64_t mask = ch.geo.capacity - 1;
  const std::uint32_t lap_shift = lap_shift_of(ch.geo.capacity);
  const std::atomic<std::uint64_t>* leases = ch.leases(index);
  const ConsumerEntry* cons = ch.consumers(index);
  // Whether a lease's owner is gone (judged from the consumer table, as a
  // consumer's receive does; once per owner per snapshot).
  std::vector<std::int8_t> gone(ch.geo.max_consumers, -1);
  const auto owner_gone = [&](std::uint32_t k) {
    if (k >= ch.geo.max_consumers) return true;
    if (gone[k] < 0) {
      const std::uint64_t c = shm::load_acquire(cons[k].control);
      gone[k] = control_state(c) != kEntryActive || !alive(c, cons[k].owner_start) ? 1 : 0;
    }
    return gone[k] == 1;
  };
  const std::uint64_t lease_now = now_ms();  // the lease clock
  const std::uint64_t from = gs.next - gs.floor > mask + 1 ? gs.next - (mask + 1) : gs.floor;
  for (std::uint64_t q = from; q < gs.next; ++q) {
    const std::uint64_t w = shm::load_relaxed(leases[q & mask]);
    const LeaseFields lf = lease_fields(w);
    const std::uint32_t lap = lap_of(q, lap_shift);
    if (lf.lap != lap) continue;
    if (due_for_dlq(w, lap, gs.max_deliveries, lease_now, owner_gone)) {
      ++gs.dlq_due;
      continue;
    }
    gs.in_flight += lf.state == kLeaseLeased || lf.state == kLeaseDeadLettering;
    gs.due += lf.state == kLeaseDue;
  }
}

// Every active consumer of group `index`.
void add_consumers(const ChannelState& ch, std::uint32_t index, GroupStats& gs) {
  const ConsumerEntry* cons = ch.consumers(index);
  for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
    const std::uint64_t c = shm::load_acquire(cons[k].control);
    if (control_state(c) != kEntryActive) continue;
    ConsumerStats cs;
    cs.index = k;
    cs.pid = control_pid(c);
    cs.alive = alive(c, cons[k].owner_start);
    cs.delivered = shm::load_relaxed(cons[k].delivered);
    cs.acked = shm::load_relaxed(cons[k].acked);
    cs.nacked = shm::load_relaxed(cons[k].nacked);
    gs.consumers.push_back(cs);
  }
}

// A per_key group's held-back keys and messages, and the age at `now_rt` of
// the oldest held-back one. Only per_key groups pay for this walk.
void add_held_back(const ChannelState& ch, std::uint32_t index, std::uint64_t now_rt, GroupStats& gs) {
  if (gs.ordering != GroupOrdering::per_key) return;
  const HeldBack h = held_back(group_view(ch, index));
  gs.held_keys = h.keys;
  gs.held_messages = h.messages;
  gs.held_oldest_age_ns = h.oldest_publish_ns != 0 && h.oldest_publish_ns < now_rt ? now_rt - h.oldest_publish_ns : 0;
}

// Every active group (lags are derived later, from the head). Returns the
// smaller of `gate` and the groups' floors.
std::uint64_t add_groups(const ChannelState& ch, ChannelStats& s, std::uint64_t gate, std::uint64_t now_rt) {
  for (std::uint32_t i = 0; i < ch.geo.max_groups; ++i) {
    const GroupEntry& g = *ch.group(i);
    if (control_state(shm::load_acquire(g.control)) != kEntryActive) continue;
    GroupStats gs = group_fields(g, i);
    count_leases(ch, i, gs);
    add_held_back(ch, i, now_rt, gs);
    add_consumers(ch, i, gs);
    gate = std::min(gate, gs.floor);
    s.groups.push_back(std::move(gs));
  }
  return gate;
}

// The age at `now_rt` of the first unfinished message of a group, taken or
// not yet taken by any consumer (a group with no consumers ages too), if the
// ring still holds it committed; 0 otherwise.
std::uint64_t oldest_unacked_age(const ChannelState& ch, std::uint64_t floor, std::uint64_t head,
                                 std::uint64_t now_rt) {
  if (floor >= head) return 0;
  const std::uint64_t want = make_stamp(floor, kStampCommitted);
  const SlotHeader* hdr = ch.slot(floor);
  if (shm::load_acquire(hdr->stamp) != want) return 0;
  const std::uint64_t ts =
      stored_time_ns(std::atomic_ref<const std::uint64_t>(hdr->meta.timestamp).load(std::memory_order_relaxed));
  return ts != 0 && ts < now_rt ? now_rt - ts : 0;
}

// Reads the head, then derives every lag and depth from it.
void add_head_and_lags(const ChannelState& ch, ChannelStats& s, std::uint64_t gate, std::uint64_t now_rt) {
  // acquire: pairs with the claim CAS; read last (see snapshot).
  s.head = shm::load_acquire(ch.producer->head);
  s.oldest = s.head > ch.geo.capacity ? s.head - ch.geo.capacity : 0;
  const auto behind = [&](std::uint64_t pos) { return s.head > pos ? s.head - pos : 0; };
  for (auto& sub : s.subscribers) sub.lag = behind(sub.cursor);
  for (auto& gs : s.groups) {
    // per_key: `next` is one past the highest sequence ever leased, and the
    // messages held back below it were not delivered either.
    gs.pending = behind(gs.next) + gs.held_messages;
    gs.unfinished = behind(gs.floor);
    gs.oldest_unacked_age_ns = oldest_unacked_age(ch, gs.floor, s.head, now_rt);
  }
  s.depth = gate == UINT64_MAX ? 0 : behind(gate);
}

// The archive, for a channel that has one: its files, and the archiver's
// entry (the durable subscriber flagged kSubArchiver) with its lag and last sync.
void add_archive(const ChannelState& ch, ChannelStats& s) {
  if (ch.geo.archive_dir.empty()) return;
  ArchiveStats a;
  a.dir = ch.geo.archive_dir;
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    const SubscriberEntry& e = ch.subscribers[i];
    const std::uint64_t c = shm::load_acquire(e.control);
    if (control_state(c) == kEntryFree || (shm::load_relaxed(e.flags) & kSubArchiver) == 0) continue;
    a.archiver = true;
    a.archiver_alive = control_state(c) == kEntryActive && alive(c, e.owner_start);
    // The cursor as the subscriber snapshot read it, before the head (see
    // snapshot): read again now it could be past s.head. An entry that
    // appeared since is read now and held to the head.
    const auto snap = std::find_if(s.subscribers.begin(), s.subscribers.end(),
                                   [i](const SubscriberStats& sub) { return sub.index == i; });
    a.archiver_cursor = snap != s.subscribers.end() ? snap->cursor : std::min(shm::load_acquire(e.cursor), s.head);
    a.lag = s.head > a.archiver_cursor ? s.head - a.archiver_cursor : 0;
    a.lost = shm::load_relaxed(e.lost);
    a.last_fsync_realtime_ns = shm::load_relaxed(e.archive_synced_ns);
    const std::uint64_t now = shm::realtime_ns();
    if (a.last_fsync_realtime_ns != 0 && now > a.last_fsync_realtime_ns)
      a.fsync_age_ns = now - a.last_fsync_realtime_ns;
    break;
  }
  // A live archiver's cursor is where the archive ends (up to the batch it
  // is writing); otherwise the newest file is read to its end.
  archive::describe_archive_dir(a, a.archiver_alive ? std::optional<std::uint64_t>(a.archiver_cursor) : std::nullopt);
  s.archive = std::move(a);
}

}  // namespace

ChannelStats snapshot(const ChannelState& ch) {
  // relaxed everywhere in the steps: a snapshot of statistics, not a synchronisation.
  ChannelStats s = channel_fields(ch);
  add_publishers(ch, s);
  // Cursors and floors are read before the head (and lags derived after),
  // so no cursor in the snapshot is ahead of its head.
  std::uint64_t gate = add_subscribers(ch, s);
  const std::uint64_t now_rt = shm::realtime_ns();
  gate = add_groups(ch, s, gate, now_rt);
  add_head_and_lags(ch, s, gate, now_rt);
  add_archive(ch, s);
  return s;
}

}  // namespace shmbus::bus
