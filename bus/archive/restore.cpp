// Continuing a channel from its archive. See restore.hpp.
#include "bus/archive/restore.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "bus/archive/checkpoint.hpp"
#include "bus/archive/segment.hpp"
#include "bus/common/util.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/file.hpp"

namespace shmbus::bus::archive {

namespace {

// The new segment's tables and slots, mapped read-write for the restore. The
// segment has no name yet, so nobody else maps it: plain (relaxed) stores are
// enough, and the link that names it afterwards (a system call) orders them
// before any opener's first look.
struct Target {
  ChannelState view;  // header, tables and group blocks over `view.control`
  shm::Mapping slots;
  [[nodiscard]] SlotHeader& slot(std::uint64_t seq) const noexcept {
    return slot_header(slot_at(slots.data(), seq, view.geo.capacity - 1, view.geo.slot_size));
  }
};

Result<void> map_target(shm::Segment& seg, const Geometry& geo, std::string_view channel, Target& t) {
  auto control = seg.map(0, geo.data_offset, shm::Access::read_write, false);
  if (!control) return control.error();
  auto slots = seg.map(geo.data_offset, geo.total_size - geo.data_offset, shm::Access::read_write, false);
  if (!slots) return slots.error();
  t.view.name = std::string(channel);
  t.view.geo = geo;
  t.view.control = std::move(control.value());
  t.slots = std::move(slots.value());
  std::byte* base = t.view.control.data();
  t.view.header = reinterpret_cast<ChannelHeader*>(base);
  t.view.producer = reinterpret_cast<ProducerBlock*>(base + geo.producer_offset);
  t.view.publishers = reinterpret_cast<PublisherEntry*>(base + geo.publishers_offset);
  t.view.subscribers = reinterpret_cast<SubscriberEntry*>(base + geo.subscribers_offset);
  t.view.data = t.slots.data();
  return {};
}

// Copies the archive's records [from, end) into their slots, committed.
// Returns the oldest sequence placed (end if none). Sequences the archive
// does not hold (a gap) keep the abandoned stamp the caller wrote.
Result<std::uint64_t> preload(SegmentReader& reader, const Target& t, std::uint64_t from, std::uint64_t end,
                              const std::string& dir) {
  if (from >= end) return end;
  if (auto r = reader.seek(from); !r) return r.error();
  std::uint64_t oldest = end;
  std::uint64_t expected = from;
  while (expected < end) {
    auto rec = reader.next();
    if (!rec) return rec.error();
    if (!rec->has_value()) break;  // the end moved back under us: a torn tail
    const Record& r = **rec;
    if (r.sequence < expected || r.sequence >= end) {
      return Error(ErrorCode::corrupted, "archive '" + dir + "' returned sequence " + num(r.sequence) + " where " +
                                             num(expected) + ".." + num(end - 1) + " was expected");
    }
    if (r.payload.size() > t.view.geo.max_payload) {
      return Error(ErrorCode::invalid_argument,
                   "archive '" + dir + "' record " + num(r.sequence) + " holds " + num(r.payload.size()) +
                       " payload bytes, more than the channel's max_payload " + num(t.view.geo.max_payload) +
                       " (create it with the slot_size of the channel that wrote the archive)");
    }
    SlotHeader& slot = t.slot(r.sequence);
    SlotMeta& m = slot.meta;
    // The archive keeps CLOCK_REALTIME ns; stored without the ticks flag,
    // readers of any channel (a counter-stamped one too) pass them through.
    m.timestamp = r.timestamp_ns & ~kTicksFlag;
    m.key = r.key;
    m.correlation_id = r.correlation_id;
    m.size = pack_size(static_cast<std::uint32_t>(r.payload.size()), 0);
    m.type = r.type;
    m.id = r.id;
    if (!r.payload.empty())
      std::memcpy(reinterpret_cast<std::byte*>(&slot) + kSlotHeaderSize, r.payload.data(), r.payload.size());
    shm::store_relaxed(slot.writer, std::uint64_t{0});  // relaxed: not yet shared (see Target)
    shm::store_relaxed(slot.stamp, make_stamp(r.sequence, kStampCommitted));
    oldest = std::min(oldest, r.sequence);
    expected = r.sequence + 1;
  }
  return oldest;
}

void restore_subscriber(SubscriberEntry& e, const SubscriberCheckpoint& s, std::uint64_t head, std::uint64_t first,
                        RestoreSummary& sum) {
  // The archiver's entry resumes where the archive ends (the head): it has
  // archived everything before it, whatever its checkpointed cursor said,
  // and a cursor left behind would hold publishers until it restarts.
  std::uint64_t cursor = (s.flags & kSubArchiver) != 0 ? head : std::min(s.cursor, head);
  std::uint64_t lost = s.lost;
  std::uint64_t lapped = s.lapped_events;
  if (cursor < first) {
    // Older than anything the archive keeps (pruned, or never archived):
    // gone for good. Counted, as a lapped reader's loss is.
    lost += first - cursor;
    lapped += 1;
    sum.lost += first - cursor;
    cursor = first;
  }
  // relaxed: not yet shared (see Target).
  shm::store_relaxed(e.owner_start, std::uint64_t{0});
  shm::store_relaxed(e.attached_realtime_ns, s.attached_ns);
  shm::store_relaxed(e.flags, s.flags);
  write_name(e.name, s.name);
  shm::store_relaxed(e.evict_watch_cursor, std::uint64_t{0});
  shm::store_relaxed(e.evict_watch_since_ns, std::uint64_t{0});
  shm::store_relaxed(e.cursor, cursor);
  shm::store_relaxed(e.delivered, s.delivered);
  shm::store_relaxed(e.lost, lost);
  shm::store_relaxed(e.lapped_events, lapped);
  // Detached: no owner, the cursor kept, resumed by the next subscribe by
  // name. An evicted entry stays evicted: it does not gate publishers, and
  // its resume counts what it missed, as before the restart.
  const std::uint32_t state = s.state == kEntryEvicted ? kEntryEvicted : kEntryDetached;
  shm::store_relaxed(e.control, make_control(state, 0));
}

void restore_group(const Target& t, std::uint32_t i, const GroupCheckpoint& c, std::uint64_t head,
                   std::uint64_t ring_oldest, RestoreSummary& sum) {
  GroupEntry& g = *t.view.group(i);
  g.visibility_timeout_ns = c.visibility_timeout_ns;
  g.backoff_base_ns = c.backoff_base_ns;
  g.backoff_cap_ns = c.backoff_cap_ns;
  g.max_deliveries = c.max_deliveries;
  g.jitter_permille = c.jitter_permille;
  g.ordering = c.ordering;
  g.order_window = c.order_window;
  g.created_realtime_ns = c.created_ns;
  write_name(g.name, c.name);
  write_name(g.dlq, c.dlq);
  std::uint64_t floor = std::min(c.floor, head);
  std::uint64_t lost = c.lost;
  if (floor < ring_oldest) {
    // Groups read the ring only: what the ring no longer holds is lost to
    // the group, and counted.
    lost += ring_oldest - floor;
    sum.lost += ring_oldest - floor;
    floor = ring_oldest;
  }
  // relaxed: not yet shared (see Target). The consumer table and the lease
  // words stay as the new segment has them, all zero: no member, no lease,
  // so everything from the floor on is delivered again, [floor, next) of the
  // checkpoint included (at-least-once).
  shm::store_relaxed(g.next, floor);
  shm::store_relaxed(g.floor, floor);
  shm::store_relaxed(g.delivered, c.delivered);
  shm::store_relaxed(g.acked, c.acked);
  shm::store_relaxed(g.redelivered, c.redelivered);
  shm::store_relaxed(g.dead_lettered, c.dead_lettered);
  shm::store_relaxed(g.nacked, c.nacked);
  shm::store_relaxed(g.expired, c.expired);
  shm::store_relaxed(g.lost, lost);
  shm::store_relaxed(g.dlq_failures, c.dlq_failures);
  shm::store_relaxed(g.dead_consumer_releases, std::uint64_t{0});
  shm::store_relaxed(g.control, make_control(kEntryActive, 0));
}

// The new ring's last lap from the archive's tail (records [lap_start,
// head)): returns the ring's oldest sequence.
Result<std::uint64_t> restore_ring(const Target& t, SegmentReader& reader, const Geometry& geo, std::uint64_t first,
                                   std::uint64_t head, const std::string& dir) {
  const std::uint64_t lap = std::uint64_t{geo.capacity};
  const std::uint64_t lap_start = head > lap ? head - lap : 0;
  // Every slot of the last lap first as an abandoned claim of its own
  // sequence: publishers of the next lap take it as finished (the previous
  // occupant of slot s + capacity must be s, committed or abandoned), readers
  // skip it. The records the archive holds then replace it.
  for (std::uint64_t s = lap_start; s < head; ++s) {
    shm::store_relaxed(t.slot(s).stamp, make_stamp(s, kStampAbandoned));  // relaxed: not yet shared
  }
  return preload(reader, t, std::max(first, lap_start), head, dir);
}

// The checkpoint's durable subscribers and groups into the new tables, and
// the producer's head and gating cache.
void restore_tables(const Target& t, const Checkpoint& checkpoint, std::uint64_t head, std::uint64_t archive_first,
                    std::uint64_t ring_oldest, RestoreSummary& sum) {
  std::uint64_t gate = head;
  for (std::uint32_t i = 0; i < checkpoint.subscribers.size(); ++i) {
    SubscriberEntry& e = t.view.subscribers[i];
    restore_subscriber(e, checkpoint.subscribers[i], head, archive_first, sum);
    if (entry_gates(shm::load_relaxed(e.control))) gate = std::min(gate, shm::load_relaxed(e.cursor));
    ++sum.subscribers;
  }
  for (std::uint32_t i = 0; i < checkpoint.groups.size(); ++i) {
    restore_group(t, i, checkpoint.groups[i], head, ring_oldest, sum);
    gate = std::min(gate, shm::load_relaxed(t.view.group(i)->floor));
    ++sum.groups;
  }
  // relaxed: not yet shared. The gating cache must not exceed the true
  // minimum (publishers trust it as a lower bound), so it is that minimum.
  shm::store_relaxed(t.view.producer->gate_cache, gate);
  shm::store_relaxed(t.view.producer->head, head);
}

}  // namespace

Result<RestoreSummary> restore_channel(shm::Segment& seg, const Geometry& geo, std::string_view channel) {
  RestoreSummary sum;
  const std::string& dir = geo.archive_dir;
  if (dir.empty() || !shm::is_directory(dir)) return sum;  // nothing to continue: a plain create
  const auto fail = [&](const Error& e) {
    return Error(e.code(),
                 "channel '" + std::string(channel) + "' cannot continue its archive '" + dir + "': " + e.message(),
                 e.sys_errno());
  };
  // An archiver still appending (of the channel's previous incarnation)
  // would move the archive's end under us: its directory lock keeps us out
  // until it has stopped, and ours keeps a new one out until we are done.
  auto lock = shm::lock_directory(dir);
  if (!lock) {
    if (lock.error().code() == ErrorCode::busy) {
      return fail(Error(ErrorCode::busy,
                        "an archiver still holds the directory's lock (it is writing the archive): stop it, "
                        "then create the channel again"));
    }
    return fail(lock.error());
  }
  // A damaged checkpoint refuses the create: continuing without it would
  // silently drop every durable cursor and group (see docs/protocol.md).
  auto cp = read_checkpoint(dir);
  if (!cp) return fail(cp.error());
  auto reader = SegmentReader::open(dir);
  if (!reader) return fail(reader.error());
  auto first = reader->first_sequence();
  if (!first) return fail(first.error());
  auto end = reader->end_sequence();
  if (!end) return fail(end.error());
  if (*end == 0 && !cp->has_value()) return sum;  // an empty archive directory: a plain create
  const Checkpoint checkpoint = cp->has_value() ? std::move(**cp) : Checkpoint{};
  if (checkpoint.subscribers.size() > geo.max_subscribers || checkpoint.groups.size() > geo.max_groups) {
    return fail(Error(ErrorCode::table_full, "its checkpoint lists " + num(checkpoint.subscribers.size()) +
                                                 " durable subscribers and " + num(checkpoint.groups.size()) +
                                                 " groups; the channel has max_subscribers " +
                                                 num(geo.max_subscribers) + " and max_groups " + num(geo.max_groups) +
                                                 " (create it with at least as many)"));
  }
  Target t;
  if (auto r = map_target(seg, geo, channel, t); !r) return fail(r.error());
  const std::uint64_t head = *end;
  auto oldest = restore_ring(t, *reader, geo, *first, head, dir);
  if (!oldest) return fail(oldest.error());
  sum.restored = true;
  sum.head = head;
  sum.ring_oldest = *oldest;
  sum.preloaded = 0;
  for (std::uint64_t s = *oldest; s < head; ++s) {
    if (stamp_state(shm::load_relaxed(t.slot(s).stamp)) == kStampCommitted) ++sum.preloaded;
  }
  sum.checkpoint_clamped = checkpoint.head > head;
  restore_tables(t, checkpoint, head, std::min(*first, head), *oldest, sum);
  return sum;
}

}  // namespace shmbus::bus::archive
