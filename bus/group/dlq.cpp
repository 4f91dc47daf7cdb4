// The dead-letter queue of a group: see dlq.hpp.
#include "bus/group/dlq.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "bus/common/util.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "bus/ring/subscriber_core.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/liveness.hpp"

namespace shmbus::bus {

std::string dlq_channel_name(std::string_view channel, const GroupOptions& opts) {
  return opts.dlq.empty() ? std::string(channel) + "-dlq" : opts.dlq;
}

// A DLQ is created with its source channel's permission bits, so every
// process that may join the group may open its DLQ too.
ChannelOptions dlq_channel_options(const ChannelState& source_ch) {
  const Geometry& source = source_ch.geo;
  ChannelOptions o;
  if (auto mode = source_ch.segment.mode()) o.mode = mode.value() & 0666;
  const std::uint64_t need = kSlotHeaderSize + sizeof(DlqRecord) + source.max_payload;
  o.slot_size = static_cast<std::uint32_t>((need + 63) / 64 * 64);
  o.capacity = std::max<std::uint32_t>(64, std::min<std::uint32_t>(source.capacity, 4096));
  o.policy = Policy::block;
  o.max_subscribers = 8;
  o.max_publishers = 32;
  o.max_groups = 0;
  return o;
}

Result<std::shared_ptr<ChannelState>> open_dlq(const ChannelState& ch, const std::string& dlq) {
  auto dlq_ch = open_or_create_channel(ch.bus, dlq, dlq_channel_options(ch));
  if (!dlq_ch) return dlq_ch.error();
  SubscribeOptions so;
  so.name = std::string(kDlqRetainer);
  so.start = StartAt::earliest();
  auto retainer = SubscriberCore::create(dlq_ch.value(), so);
  if (!retainer && retainer.error().code() != ErrorCode::busy) return retainer.error();
  return dlq_ch;  // the retainer is detached: it keeps its cursor and holds the dead letters
}

AckStatus copy_to_dlq(const GroupView& v, PublisherCore& pub, std::uint64_t seq, std::uint64_t held,
                      DeadLetterReason reason, bool* marked) noexcept {
  const ChannelState& ch = *v.ch;
  GroupEntry& g = *v.g;
  auto fail = [&] {
    g.dlq_failures.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    return AckStatus::dlq_unavailable;
  };
  const std::byte* slot = slot_at(ch.data, seq, v.mask, ch.geo.slot_size);
  const SlotMeta hdr = read_meta(slot);
  const std::uint32_t length = size_length(hdr.size);
  const std::uint64_t want = make_stamp(seq, kStampCommitted);
  LeaseFields lf = lease_fields(held);
  // The slot no longer holds the message (overwritten, drop_oldest) or is
  // impossible: nothing sound to keep. Ends the lease as lost, counted.
  if (length > ch.geo.max_payload) {
    std::atomic_thread_fence(std::memory_order_acquire);
    end_lease_lost(v, seq, held);
    return AckStatus::ok;
  }
  ClaimToken claim;
  if (pub.claim(sizeof(DlqRecord) + length, claim, 0) != PublishStatus::ok) return fail();
  DlqRecord rec{};
  rec.original_sequence = seq;
  rec.original_timestamp_ns = stored_time_ns(hdr.timestamp);
  rec.attempts = lf.attempt;
  rec.reason = static_cast<std::uint32_t>(reason);
  rec.payload_length = length;
  const std::string group = read_name(g.name);
  std::memcpy(rec.group, group.data(), std::min(group.size(), sizeof rec.group - 1));
  std::memcpy(rec.source, ch.name.data(), std::min(ch.name.size(), sizeof rec.source - 1));
  std::memcpy(claim.payload.data(), &rec, sizeof rec);
  racy_copy(claim.payload.data() + sizeof rec, slot + kSlotHeaderSize, length);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (shm::load_relaxed(slot_header(slot).stamp) != want) {
    // Overwritten while we copied (drop_oldest): nothing sound to keep.
    pub.abort(claim);
    end_lease_lost(v, seq, held);
    return AckStatus::ok;
  }
  MessageMeta meta;
  meta.key = hdr.key;
  meta.id = hdr.id;
  meta.correlation_id = hdr.correlation_id;
  meta.type = hdr.type;
  meta.timestamp_ns = rec.original_timestamp_ns;
  if (pub.commit(claim, sizeof rec + length, meta, lf.attempt) != PublishStatus::ok) return fail();
  // Copied: the message is done for the group. If our lease was taken
  // meanwhile (we were slower than its deadline), the DLQ may get it twice:
  // dead-lettering is at-least-once too.
  lf.state = kLeaseDeadLettered;
  lf.deadline_ms = 0;
  std::uint64_t w = held;
  if (shm::cas_acq_rel(v.leases[seq & v.mask], w, make_lease(lf))) {
    g.dead_lettered.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    if (marked != nullptr) *marked = true;
    advance_floor_of(v);
  }
  return AckStatus::ok;
}

namespace {

// A DLQ publisher for group `g` of `ch` (opening the DLQ channel into
// `dlq_ch`, which must outlive it), with the error in the mover's words.
Result<std::unique_ptr<PublisherCore>> open_dlq_publisher(const ChannelState& ch, const GroupEntry& g,
                                                          std::shared_ptr<ChannelState>& dlq_ch) {
  const std::string dlq = read_name(g.dlq);
  const auto fail = [&](const Error& e) {
    return Error(e.code(),
                 "DLQ '" + dlq + "' of group '" + read_name(g.name) + "' on channel '" + ch.name + "': " + e.message());
  };
  auto d = open_dlq(ch, dlq);
  if (!d) return fail(d.error());
  dlq_ch = std::move(d.value());
  auto p = PublisherCore::create(dlq_ch);
  if (!p) return fail(p.error());
  return std::move(p.value());
}

// Moves what is due for the DLQ in group gi of `ch`; how many reached it.
Result<std::uint64_t> dead_letter_due_in(const ChannelState& ch, std::uint32_t gi) {
  const GroupView v = group_view(ch, gi);
  const GroupEntry& g = *v.g;
  const std::uint32_t max_deliveries = g.max_deliveries;
  const std::uint64_t visibility_ns = g.visibility_timeout_ns;
  const ConsumerEntry* cons = ch.consumers(gi);
  // A lease's owner is gone when its entry is no longer active (it left,
  // or the index is being reused) or its process is dead.
  const auto owner_gone = [&](std::uint32_t k) {
    if (k >= ch.geo.max_consumers) return true;
    const std::uint64_t c = shm::load_acquire(cons[k].control);
    if (control_state(c) != kEntryActive) return true;
    return shm::process_liveness({control_pid(c), shm::load_relaxed(cons[k].owner_start)}) == shm::Liveness::dead;
  };
  std::shared_ptr<ChannelState> dlq_ch;
  std::unique_ptr<PublisherCore> pub;
  std::uint64_t moved = 0;
  const ScanRange range = scan_range(v);
  for (std::uint64_t s = range.first; s < range.end; ++s) {
    std::atomic<std::uint64_t>& lw = v.leases[s & v.mask];
    std::uint64_t w = shm::load_acquire(lw);
    const std::uint64_t nms = now_ms();
    if (!due_for_dlq(w, v.lap(s), max_deliveries, nms, owner_gone)) continue;
    if (!pub) {
      auto p = open_dlq_publisher(ch, g, dlq_ch);
      if (!p) return p.error();
      pub = std::move(p.value());
    }
    const LeaseFields lf = lease_fields(w);
    // G8x: taken for the DLQ by a mover that is no consumer: owner
    // kLeaseNoOwner, so only the deadline ends this lease if we die.
    const std::uint64_t held =
        make_lease({kLeaseDeadLettering, lf.attempt, kLeaseNoOwner, lf.lap, nms + ceil_ms(visibility_ns)});
    if (!shm::cas_acq_rel(lw, w, held)) continue;                                        // somebody else moved it
    if (lf.state == kLeaseLeased) v.g->expired.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    bool marked = false;
    const AckStatus st = copy_to_dlq(v, *pub, s, held, DeadLetterReason::max_deliveries, &marked);
    if (st == AckStatus::dlq_unavailable) {
      // Not now: due for the DLQ again at once, for the next mover.
      LeaseFields back = lease_fields(held);
      back.state = kLeaseDue;
      back.deadline_ms = nms;
      std::uint64_t h = held;
      (void)shm::cas_acq_rel(lw, h, make_lease(back));
      continue;
    }
    moved += marked ? 1 : 0;
  }
  return moved;
}

}  // namespace

Result<std::uint64_t> dead_letter_due(const std::shared_ptr<ChannelState>& chp) {
  ChannelState& ch = *chp;
  if (auto w = ch.require_writable(); !w) return w.error();
  std::uint64_t moved = 0;
  for (std::uint32_t gi = 0; gi < ch.geo.max_groups; ++gi) {
    if (control_state(shm::load_acquire(ch.group(gi)->control)) != kEntryActive) continue;
    auto n = dead_letter_due_in(ch, gi);
    if (!n) return n.error();
    moved += n.value();
  }
  return moved;
}

Result<std::uint64_t> redrive_dead_letters(const std::shared_ptr<ChannelState>& source,
                                           const std::shared_ptr<ChannelState>& dlq, std::uint64_t max) {
  SubscribeOptions so;
  so.name = std::string(kDlqRetainer);
  so.start = StartAt::earliest();
  auto sub = SubscriberCore::create(dlq, so);
  if (!sub) return sub.error();
  auto pub = PublisherCore::create(source);
  if (!pub) return pub.error();
  SubscriberCore& reader = *sub.value();
  std::vector<std::byte> buf(dlq->geo.max_payload);
  std::uint64_t n = 0;
  int idle_waits = 0;
  while (n < max) {
    Message m;
    const PollStatus st = reader.begin_read(m);
    if (st == PollStatus::empty) {
      // A dead letter claimed but not committed (its writer may have died
      // mid-copy) would hold the rest back: give the stall watch a moment.
      if (idle_waits++ < 3 && shm::load_acquire(dlq->producer->head) > reader.cursor()) {
        (void)reader.wait(10'000'000);
        continue;
      }
      break;
    }
    if (st == PollStatus::lapped || st == PollStatus::corrupted) continue;  // counted by the reader
    if (st != PollStatus::ok) break;
    reader.copy_payload(m, std::span<std::byte>(buf.data(), m.payload.size()));
    // Validate the copy and move the local cursor, but publish the cursor
    // only after the message is back on the source: a crash in between
    // redrives it again (at-least-once), never loses it.
    if (reader.finish_read(false) != PollStatus::ok) continue;
    if (m.payload.size() < sizeof(DlqRecord)) continue;  // not a dead letter: skip it
    DlqRecord rec;
    std::memcpy(&rec, m.payload.data(), sizeof rec);
    const std::size_t len = std::min<std::size_t>(rec.payload_length, m.payload.size() - sizeof rec);
    MessageMeta meta;
    meta.key = m.key;
    meta.id = m.id;  // the same event: a consumer that dedups on the id sees it as such
    meta.correlation_id = m.correlation_id;
    meta.type = m.type;
    const PublishStatus ps =
        pub.value()->publish(std::span<const std::byte>(m.payload.data() + sizeof rec, len), meta, 1'000'000'000ULL);
    if (ps != PublishStatus::ok) {
      reader.seek(m.sequence);  // not redriven: keep it in the DLQ
      return Error(ErrorCode::busy, "redrive to channel '" + source->name + "' stopped after " + num(n) +
                                        " messages: publish returned " + std::string(to_string(ps)));
    }
    reader.publish_cursor();
    ++n;
  }
  return n;
}

}  // namespace shmbus::bus
