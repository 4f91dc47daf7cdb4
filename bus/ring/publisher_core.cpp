#include "bus/ring/publisher_core.hpp"
#include "bus/common/util.hpp"

#include <algorithm>
#include <bit>
#include <climits>
#include <cstddef>
#include <cstring>

#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"
#include "shm/tsc_clock.hpp"

namespace shmbus::bus {

namespace {
constexpr int kSpinBeforeSleep = 256;
constexpr std::uint64_t kSleepSliceNs = 10'000'000;        // re-check liveness at least this often
constexpr std::uint64_t kHousekeepingEveryNs = 5'000'000;  // liveness syscalls at most this often
}  // namespace

PublisherCore::~PublisherCore() { release(); }

void PublisherCore::release() noexcept {
  if (ch_) {
    detach_publisher(*ch_, index_);
    ch_.reset();
  }
}

Result<std::unique_ptr<PublisherCore>> PublisherCore::create(std::shared_ptr<ChannelState> ch) {
  if (auto r = ch->require_live(); !r) return r.error();
  auto data = ch->writable_data();
  if (!data) return data.error();
  auto idx = attach_publisher(*ch);
  if (!idx) return idx.error();
  auto owned = std::make_unique<PublisherCore>();
  PublisherCore& p = *owned;
  p.prod_ = ch->producer;
  p.removed_ = &ch->header->removed;
  p.entry_ = &ch->publishers[idx.value()];
  p.data_ = data.value();
  p.capacity_ = ch->geo.capacity;
  p.mask_ = p.capacity_ - 1;
  p.unblock_ns_ = ch->geo.unblock_timeout_ns;
  p.slot_size_ = ch->geo.slot_size;
  p.max_payload_ = ch->geo.max_payload;
  p.fast_max_ = std::min<std::uint32_t>(p.max_payload_, kSmallCopy);
  p.index_ = idx.value();
  p.self_pid_ = shm::self_process().pid;
  p.policy_ = ch->geo.policy;
  // A host whose counter the kernel does not trust across CPUs stamps with
  // the realtime clock instead: readers tell the two apart per message.
  p.timestamps_ =
      ch->geo.timestamps == TimestampSource::tsc && !shm::tsc_usable() ? TimestampSource::realtime : ch->geo.timestamps;
  // SYNC(gate): acquire, pairs with the release store in refresh_gate.
  p.set_gate(shm::load_acquire(ch->producer->gate_cache));
  p.ch_ = std::move(ch);
  return owned;
}

[[gnu::always_inline]] inline std::uint64_t PublisherCore::stamp_time() const noexcept {
  switch (timestamps_) {
    case TimestampSource::tsc: return kTicksFlag | (shm::tsc_ticks() & ~kTicksFlag);
    case TimestampSource::none: return 0;
    case TimestampSource::realtime: break;
  }
  return shm::realtime_ns();
}

// Asks for the payload's next lines of the slot of `seq` (a larger copy
// streams anyway), so that their transfers overlap what comes before the
// stores: the clock read, the stamp's transfer.
[[gnu::always_inline]] inline void PublisherCore::prefetch_payload(std::uint64_t seq, std::size_t n) const noexcept {
  if (n <= kCacheLine - kSlotHeaderSize) return;
  const std::byte* at = slot_at(data_, seq, mask_, slot_size_);
  prefetch_for_write(at + kCacheLine);
  if (n > 2 * kCacheLine - kSlotHeaderSize) prefetch_for_write(at + 2 * kCacheLine);
}

[[gnu::always_inline]] inline std::uint64_t PublisherCore::time_to_store(const MessageMeta& meta) const noexcept {
  return meta.timestamp_ns != 0 ? meta.timestamp_ns & ~kTicksFlag : stamp_time();
}

std::uint64_t PublisherCore::refresh_gate(std::uint64_t head, bool housekeeping) noexcept {
  if (housekeeping) {
    const std::uint64_t now = shm::monotonic_ns();
    if (now - last_housekeeping_ns_ >= kHousekeepingEveryNs) {
      last_housekeeping_ns_ = now;
      (void)reclaim_and_evict(*ch_, head, now);
    }
  }
  set_gate(gating_minimum(*ch_, head));
  // SYNC(gate): release, pairs with the acquire loads of gate_cache: a
  // publisher that uses this value inherits our acquire of every cursor.
  shm::store_release(prod_->gate_cache, gate_);
  return gate_;
}

[[gnu::always_inline]] inline std::uint64_t PublisherCore::gone(bool slow) noexcept {
  // relaxed: a flag that carries no data.
  const std::uint64_t r = removed_->load(std::memory_order_relaxed);
  if (r != kChannelLive || !slow) return r;
  const std::uint64_t now = shm::monotonic_ns();
  if (now - last_removed_check_ns_ < kHousekeepingEveryNs) return kChannelLive;
  last_removed_check_ns_ = now;
  return ch_->check_removed();
}

bool PublisherCore::wait_for_space(std::uint64_t head, std::uint64_t last, std::uint64_t deadline) noexcept {
  for (int spin = 0;; ++spin) {
    if (last < refresh_gate(head, true) + capacity_) return true;
    const std::uint64_t now = shm::monotonic_ns();
    if (now >= deadline) return false;
    if (gone(spin >= kSpinBeforeSleep) != kChannelLive) return false;  // nobody will read: stop
    if (spin < kSpinBeforeSleep) {
      shm::cpu_relax();
      continue;
    }
    // SYNC(sleep-flag): raise the flag, then re-scan the cursors; pairs with
    // the seq_cst cursor store + flag check in SubscriberCore::publish_cursor,
    // so either the reader sees the flag or we see its new cursor.
    const std::uint32_t seen = shm::announce_sleep(prod_->pub_sleeping, prod_->pub_futex);
    if (last < refresh_gate(head, false) + capacity_) return true;
    (void)shm::futex_wait(&prod_->pub_futex, seen, std::min(deadline - now, kSleepSliceNs));
  }
}

bool PublisherCore::reserve(std::uint64_t& seq, std::uint64_t n, std::uint64_t timeout_ns,
                            PublishStatus& why) noexcept {
  if (policy_ == Policy::drop_oldest) {
    // relaxed: head is only a ticket dispenser; the stamp CAS in take_slot
    // orders everything that matters.
    seq = prod_->head.fetch_add(n, std::memory_order_relaxed);
    if (seq > kMaxSequence - n) {  // only a corrupted head gets here: see below
      why = PublishStatus::invalid;
      return false;
    }
    return true;
  }
  std::uint64_t head = shm::load_relaxed(prod_->head);
  std::uint64_t blocked_since = 0;
  for (;;) {
    // A stamp holds 62 bits of sequence: a head past kMaxSequence (never
    // reached by counting; only a corrupted segment holds one) would make
    // take_slot's stamps lose their top bits and retry forever.
    if (head > kMaxSequence - n) {
      why = PublishStatus::invalid;
      return false;
    }
    const std::uint64_t last = head + n - 1;  // the newest sequence this claim takes
    if (last >= limit_) [[unlikely]] {
      // Cached gate says full: take another publisher's fresher value, then rescan.
      set_gate(std::max(gate_, shm::load_acquire(prod_->gate_cache)));
      // Housekeeping (rate-limited) here too, so a dead subscriber cannot keep
      // a reject channel `full` or a zero-timeout publish failing.
      if (last >= limit_ && last >= refresh_gate(head, true) + capacity_) {
        if (policy_ == Policy::reject) {
          shm::single_writer_add(entry_->rejected, n);
          why = PublishStatus::full;
          return false;
        }
        const std::uint64_t now = shm::monotonic_ns();
        if (blocked_since == 0) blocked_since = now;
        const std::uint64_t deadline = deadline_after(now, timeout_ns);
        const bool space = timeout_ns != 0 && wait_for_space(head, last, deadline);
        shm::single_writer_add(entry_->blocked_ns, shm::monotonic_ns() - blocked_since);
        blocked_since = 0;
        if (const std::uint64_t r = gone(false); !space && r != kChannelLive) {
          why = publish_status_of_removed(r);
          return false;
        }
        if (!space) {
          shm::single_writer_add(entry_->timeouts, 1);
          why = PublishStatus::timeout;
          return false;
        }
        timeout_ns = deadline > shm::monotonic_ns() ? deadline - shm::monotonic_ns() : 0;
        head = shm::load_relaxed(prod_->head);
        continue;
      }
    }
    // relaxed on success: a ticket; on failure we just retry with the new head.
    if (prod_->head.compare_exchange_weak(head, head + n, std::memory_order_relaxed, std::memory_order_relaxed)) {
      seq = head;
      return true;
    }
  }
}

PublishStatus PublisherCore::take_slot(std::uint64_t seq) noexcept {
  SlotHeader& slot = slot_header(slot_at(data_, seq, mask_, slot_size_));
  std::atomic<std::uint64_t>& stamp = slot.stamp;
  // The slot's previous occupant is sequence seq - capacity (none on the
  // first lap). We take the slot only once that claim has finished (committed
  // or abandoned): a writer never overtakes a slower writer of an earlier
  // lap, unless that writer stalled past the unblock timeout.
  const bool first_lap = seq < capacity_;
  const std::uint64_t prev = first_lap ? 0 : seq - capacity_;
  // SYNC(stamp-take): acquire, pairs with the release of the previous
  // occupant's commit/abandon, so its writes are ordered before ours.
  std::uint64_t st = shm::load_acquire(stamp);
  std::uint64_t waiting_since = 0;
  std::uint64_t waiting_for = 0;  // the stamp we are waiting on: a new one restarts the timer
  std::uint64_t last_liveness_ns = 0;
  for (std::uint32_t spins = 0;; ++spins) {
    const std::uint64_t s_seq = stamp_seq(st);
    const std::uint64_t s_state = stamp_state(st);
    if (s_state != kStampEmpty && s_seq >= seq) {
      // A reader (or a publisher) marked our claim abandoned: we stalled.
      shm::single_writer_add(entry_->lost_claims, 1);
      return PublishStatus::abandoned;
    }
    const bool prev_done = first_lap ? (s_state == kStampEmpty ||
                                        (s_seq < seq && (s_state == kStampCommitted || s_state == kStampAbandoned)))
                                     : (s_seq == prev && (s_state == kStampCommitted || s_state == kStampAbandoned));
    if (prev_done) {
      // Record ourselves as the writer of seq. relaxed: published by the
      // release of the stamp CAS below, so a reader that acquires our
      // `writing` stamp finds us. A writer that stalls here and loses its
      // claim may overwrite the word of the one that took the slot, but its
      // word names its own sequence, which readers then ignore.
      shm::store_relaxed(slot.writer, make_writer(seq, self_pid_));
      if (shm::cas_acq_rel(stamp, st, make_stamp(seq, kStampWriting))) {
        // SYNC(seqlock-write): the `writing` stamp must be visible before any
        // byte of the new message, for readers that validate after reading.
        std::atomic_thread_fence(std::memory_order_release);
        return PublishStatus::ok;
      }
      continue;  // st was reloaded by the failed CAS
    }
    // The previous lap's writer has not finished (or not even started).
    const std::uint64_t now = shm::monotonic_ns();
    if (waiting_since == 0 || st != waiting_for) {
      waiting_since = now;
      waiting_for = st;
    }
    bool give_up = now - waiting_since >= unblock_ns_;
    if (!give_up && s_state == kStampWriting && now - waiting_since >= kLivenessAfterNs &&
        now - last_liveness_ns >= kLivenessAfterNs) {
      last_liveness_ns = now;
      give_up = slot_writer_dead(slot, s_seq);  // a dead writer: no need to wait it out
    }
    if (give_up) {
      // Stalled past the unblock timeout: take its claim away (its commit
      // CAS will fail) and carry on.
      if (shm::cas_acq_rel(stamp, st, make_stamp(first_lap ? s_seq : prev, kStampAbandoned))) {
        prod_->abandoned.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        st = shm::load_acquire(stamp);
      }
      continue;
    }
    if (spins < 1024) {
      shm::cpu_relax();
    } else {
      if (const std::uint64_t r = gone(true); r != kChannelLive) {
        // Give the slot back to nobody: the channel is gone for every reader.
        return publish_status_of_removed(r);
      }
      shm::yield_cpu();  // the writer we wait for may need this core
    }
    st = shm::load_acquire(stamp);
  }
}

PublishStatus PublisherCore::claim(std::size_t max_length, ClaimToken& out, std::uint64_t timeout_ns) noexcept {
  return claim_batch(max_length, std::span<ClaimToken>(&out, 1), timeout_ns);
}

PublishStatus PublisherCore::claim_batch(std::size_t max_length, std::span<ClaimToken> claims,
                                         std::uint64_t timeout_ns) noexcept {
  if (!ch_) return PublishStatus::invalid;
  for (ClaimToken& c : claims) c.active = false;
  if (claims.empty()) return PublishStatus::ok;
  if (max_length > max_payload_ || claims.size() > capacity_) return PublishStatus::too_large;
  if (const std::uint64_t r = gone(false); r != kChannelLive) return publish_status_of_removed(r);
  std::uint64_t seq = 0;
  PublishStatus why = PublishStatus::ok;
  if (!reserve(seq, claims.size(), timeout_ns, why)) return why;
  PublishStatus result = PublishStatus::ok;
  for (ClaimToken& c : claims) {
    const PublishStatus taken = take_slot(seq);
    if (taken == PublishStatus::ok) {
      c.sequence = seq;
      c.payload = std::span<std::byte>(slot_at(data_, seq, mask_, slot_size_) + kSlotHeaderSize, max_payload_);
      c.active = true;
    } else if (result == PublishStatus::ok) {
      result = taken;  // abandoned (we stalled), or the channel went away
    }
    ++seq;
  }
  if (result != PublishStatus::ok) {
    for (ClaimToken& c : claims) abort(c);  // all or none
  }
  return result;
}

[[gnu::always_inline]] inline void PublisherCore::wake_subscribers() noexcept {
  // SYNC(sleep-flag): after the seq_cst commit CAS; pairs with
  // announce_sleep in SubscriberCore::wait.
  shm::wake_sleepers(prod_->sub_sleeping, prod_->sub_futex);
}

PublishStatus PublisherCore::commit(ClaimToken& claim, std::size_t length, const MessageMeta& meta,
                                    std::uint32_t attempt) noexcept {
  if (!ch_ || !claim.active) return PublishStatus::invalid;
  if (length > max_payload_) {
    abort(claim);
    return PublishStatus::too_large;
  }
  const std::uint64_t seq = claim.sequence;
  SlotHeader& slot = slot_header(slot_at(data_, seq, mask_, slot_size_));
  std::uint64_t expected = make_stamp(seq, kStampWriting);
  claim.active = false;
  // A claim taken away (we stalled past the unblock timeout, or were thought
  // dead) must not touch the slot again: it may hold a newer message now.
  // acquire: pairs with the CAS that took it.
  if (shm::load_acquire(slot.stamp) != expected) {
    shm::single_writer_add(entry_->lost_claims, 1);
    return PublishStatus::abandoned;
  }
  slot.meta.key = meta.key;
  slot.meta.id = meta.id;
  slot.meta.correlation_id = meta.correlation_id;
  slot.meta.type = meta.type;
  slot.meta.size = pack_size(static_cast<std::uint32_t>(length), attempt);
  slot.meta.timestamp = time_to_store(meta);
  // SYNC(stamp): release (seq_cst), pairs with the acquire stamp loads in
  // SubscriberCore::begin_read: the slot's bytes are visible before the stamp.
  if (!shm::cas_seq_cst(slot.stamp, expected, make_stamp(seq, kStampCommitted))) {
    shm::single_writer_add(entry_->lost_claims, 1);
    return PublishStatus::abandoned;
  }
  shm::single_writer_add(entry_->published, 1);
  wake_subscribers();
  // Removed (or its pages lost) while we wrote: the message is in a channel
  // nobody will read again. Say so rather than `ok`.
  if (const std::uint64_t r = gone(false); r != kChannelLive) return publish_status_of_removed(r);
  return PublishStatus::ok;
}

void PublisherCore::abort(ClaimToken& claim) noexcept {
  if (!ch_ || !claim.active) return;
  claim.active = false;
  std::uint64_t expected = make_stamp(claim.sequence, kStampWriting);
  if (shm::cas_seq_cst(slot_header(slot_at(data_, claim.sequence, mask_, slot_size_)).stamp, expected,
                       make_stamp(claim.sequence, kStampAbandoned))) {
    shm::single_writer_add(entry_->aborted, 1);
    wake_subscribers();  // a reader blocked on this sequence can move on
  }
}

// A message's metadata, into a slot this thread has taken.
[[gnu::always_inline]] inline void PublisherCore::store_meta(std::byte* at, std::size_t n, const MessageMeta& meta,
                                                             std::uint64_t stored_time,
                                                             std::uint32_t attempt) noexcept {
  SlotMeta& m = slot_header(at).meta;
  m.key = meta.key;
  m.id = meta.id;
  m.correlation_id = meta.correlation_id;
  // type and size, adjacent, in one store.
  static_assert(offsetof(SlotMeta, size) == offsetof(SlotMeta, type) + 4 && std::endian::native == std::endian::little);
  const std::uint64_t type_size = meta.type | std::uint64_t{pack_size(static_cast<std::uint32_t>(n), attempt)} << 32;
  std::memcpy(reinterpret_cast<std::byte*>(&m) + offsetof(SlotMeta, type), &type_size, sizeof type_size);
  m.timestamp = stored_time;
}

// The fused publish: everything a reader will read goes into the slot's
// first line (and the payload's further lines) between two CASes of the
// stamp, with no call and no clock read in that window, so the line a
// reader spins on is taken from it once and handed back with the message.
[[gnu::always_inline]] inline PublishStatus PublisherCore::write_message(std::uint64_t seq,
                                                                         std::span<const std::byte> payload,
                                                                         const MessageMeta& meta,
                                                                         std::uint64_t stored_time,
                                                                         std::uint32_t attempt) noexcept {
  std::byte* at = slot_at(data_, seq, mask_, slot_size_);
  SlotHeader& slot = slot_header(at);
  // The usual case: the previous lap's message (or nothing, on the first
  // lap) is committed. Anything else takes the general path.
  std::uint64_t st = shm::load_acquire(slot.stamp);  // SYNC(stamp-take), as in take_slot
  const std::uint64_t done = seq >= capacity_ ? make_stamp(seq - capacity_, kStampCommitted) : kStampEmpty;
  bool taken = false;
  if (st == done) {
    shm::store_relaxed(slot.writer, make_writer(seq, self_pid_));  // as in take_slot
    taken = shm::cas_acq_rel(slot.stamp, st, make_stamp(seq, kStampWriting));
  }
  if (!taken) {
    if (const PublishStatus t = take_slot(seq); t != PublishStatus::ok) return t;
  }
  // SYNC(seqlock-write): as in take_slot (a compiler barrier on x86).
  std::atomic_thread_fence(std::memory_order_release);
  store_meta(at, payload.size(), meta, stored_time, attempt);
  copy_bytes(at + kSlotHeaderSize, payload.data(), payload.size());
  std::uint64_t expected = make_stamp(seq, kStampWriting);
  // SYNC(stamp): release (seq_cst), as in commit.
  if (!shm::cas_seq_cst(slot.stamp, expected, make_stamp(seq, kStampCommitted))) [[unlikely]]
    return lost_claim();
  return PublishStatus::ok;
}

// The lines the message will be written to, asked for before anything else
// (the slot the head names: ours unless another publisher claims it first,
// when the hint is only wasted). A reader spinning on the slot's stamp holds
// its first line, and the second (a payload past the first line) was read a
// lap ago: their transfers now overlap each other, the clock read and the
// claim. Issued after the claim, as before, they came one after the other,
// and were most of what separated a 64-byte round trip from the floor.
[[gnu::always_inline]] inline PublisherCore::Claim PublisherCore::ask_for_slot() const noexcept {
  const std::uint64_t head = shm::load_relaxed(prod_->head);
  std::byte* at = slot_at(data_, head, mask_, slot_size_);
  prefetch_for_write(at);
  // The second line whatever the payload's size: a compare and a branch
  // fewer on every publish, for an unneeded transfer when the payload fits
  // the first line (a prefetch never faults: past the data area's end it is
  // dropped). Its address with the size in it (the line of the last byte)
  // measured 0.6x of the floor slower at 64 B than this constant offset, for
  // the same line; not understood.
  prefetch_for_write(at + kCacheLine);
  return Claim{head, at};
}

// The publish path in four pieces. `publish` picks the message's time and
// enters `publish_fast`, the usual case: a leaf with no call and no
// callee-saved register, whose every rare case (too large, removed, no room
// below the cached gate, a contended claim or slot, a sleeping reader) leaves
// by a tail call to one of the cold functions below, which finish the job.
PublishStatus PublisherCore::publish(std::span<const std::byte> payload, const MessageMeta& meta,
                                     std::uint64_t timeout_ns) noexcept {
  // The slot's lines first (ask_for_slot), then the clock, then the claim.
  // The time is read before the claim here, as a ticket, since this path
  // never waits for space; publish_general, which may wait, reads it after.
  if (meta.timestamp_ns != 0 || timestamps_ != TimestampSource::tsc) [[unlikely]]
    return publish_timed(payload, meta, timeout_ns);
  const Claim c = ask_for_slot();
  return publish_fast(payload, meta, kTicksFlag | (shm::tsc_ticks() & ~kTicksFlag), c, timeout_ns);
}

// publish with a time that is not the counter's: the publisher's own, or the
// channel's CLOCK_REALTIME (counter stamps where the kernel does not trust
// the counter), or none. The slot is asked for before the clock read, whose
// 20-30 ns then overlap the lines' transfers.
[[gnu::noinline]] PublishStatus PublisherCore::publish_timed(std::span<const std::byte> payload,
                                                             const MessageMeta& meta,
                                                             std::uint64_t timeout_ns) noexcept {
  const Claim c = ask_for_slot();
  std::uint64_t t = 0;
  if (meta.timestamp_ns != 0) {
    t = meta.timestamp_ns & ~kTicksFlag;
  } else if (timestamps_ == TimestampSource::realtime) {
    t = shm::realtime_ns();
  } else if (timestamps_ == TimestampSource::tsc) {
    t = kTicksFlag | (shm::tsc_ticks() & ~kTicksFlag);
  }
  return publish_fast(payload, meta, t, c, timeout_ns);
}

[[gnu::always_inline]] inline PublishStatus PublisherCore::publish_fast(std::span<const std::byte> payload,
                                                                        const MessageMeta& meta, std::uint64_t t,
                                                                        Claim c, std::uint64_t timeout_ns) noexcept {
  const std::size_t n = payload.size();
  // A payload this path copies inline (else publish_general copies it, or
  // says too_large); relaxed: a flag that carries no data (as in gone()).
  if (n > fast_max_ || removed_->load(std::memory_order_relaxed) != kChannelLive) [[unlikely]]
    return publish_general(payload, meta, timeout_ns);
  // The claim: room below the cached gate and an uncontended CAS of head
  // from the value publish read (a plain ticket for drop_oldest). relaxed on
  // success: a ticket, as in reserve. The slot is the one publish asked
  // for unless another publisher claimed first.
  const std::uint64_t seq = c.seq;
  std::byte* const at = c.at;
  if (policy_ == Policy::drop_oldest) {
    const std::uint64_t got = prod_->head.fetch_add(1, std::memory_order_relaxed);
    if (got != seq || got > kMaxSequence - 1) [[unlikely]]
      return publish_moved(got, payload, meta, t);
  } else {
    std::uint64_t expected = seq;
    if (seq >= limit_ || !prod_->head.compare_exchange_weak(expected, seq + 1, std::memory_order_relaxed,
                                                            std::memory_order_relaxed)) [[unlikely]]
      return publish_contended(payload, meta, t, timeout_ns);
  }
  SlotHeader& slot = slot_header(at);
  // (The slot's lines were asked for before the clock read: publish.)
  // Take the slot from the previous lap's committed message; anything else
  // (the first lap's empty slots too: seq - capacity_ wraps there, to a
  // stamp no counted sequence reaches) is take_slot's, in publish_claimed.
  std::uint64_t st = shm::load_acquire(slot.stamp);  // SYNC(stamp-take), as in take_slot
  if (st != make_stamp(seq - capacity_, kStampCommitted)) [[unlikely]]
    return publish_claimed(seq, payload, meta, t);
  shm::store_relaxed(slot.writer, make_writer(seq, self_pid_));  // as in take_slot
  std::uint64_t writing = make_stamp(seq, kStampWriting);
  if (!shm::cas_acq_rel(slot.stamp, st, writing)) [[unlikely]]
    return publish_claimed(seq, payload, meta, t);
  // SYNC(seqlock-write): as in take_slot (a compiler barrier on x86).
  std::atomic_thread_fence(std::memory_order_release);
  store_meta(at, n, meta, t, 0);
  copy_small(at + kSlotHeaderSize, payload.data(), n);
  // SYNC(stamp): release (seq_cst), as in commit. committed = writing + 1.
  static_assert(kStampCommitted == kStampWriting + 1);
  if (!shm::cas_seq_cst(slot.stamp, writing, writing + 1)) [[unlikely]]
    return lost_claim();
  // Counters and the wake check after the commit: off the reader's path.
  shm::single_writer_add(entry_->published, 1);
  // SYNC(sleep-flag): as in wake_subscribers (the rest of it is in after_commit).
  if (prod_->sub_sleeping.load(std::memory_order_seq_cst) != 0) [[unlikely]]
    return after_commit();
  // Removed (or its pages lost) while we wrote: say so rather than `ok`.
  if (const std::uint64_t r = removed_->load(std::memory_order_relaxed); r != kChannelLive) [[unlikely]]
    return publish_status_of_removed(r);
  return PublishStatus::ok;
}

// publish_fast's drop_oldest ticket was not the head publish read (another
// publisher took that one): the message goes to the slot of the ticket.
[[gnu::noinline]] PublishStatus PublisherCore::publish_moved(std::uint64_t seq, std::span<const std::byte> payload,
                                                             const MessageMeta& meta, std::uint64_t t) noexcept {
  if (seq > kMaxSequence - 1) return PublishStatus::invalid;  // a corrupted head, as in reserve
  return publish_claimed(seq, payload, meta, t);
}

// publish_fast's claim failed: head moved since publish read it (another
// publisher claimed), or the cached gate says there may be no room. Once
// more from the head as it is now, then the general path (which may wait).
[[gnu::noinline]] PublishStatus PublisherCore::publish_contended(std::span<const std::byte> payload,
                                                                 const MessageMeta& meta, std::uint64_t t,
                                                                 std::uint64_t timeout_ns) noexcept {
  std::uint64_t seq = shm::load_relaxed(prod_->head);
  if (seq < limit_ &&
      prod_->head.compare_exchange_strong(seq, seq + 1, std::memory_order_relaxed, std::memory_order_relaxed)) {
    return publish_claimed(seq, payload, meta, t);
  }
  return publish_general(payload, meta, timeout_ns);
}

// A publish that does not fit publish_fast's usual case: it may wait for
// space (and reads the clock after the wait), or fail.
[[gnu::noinline]] PublishStatus PublisherCore::publish_general(std::span<const std::byte> payload,
                                                               const MessageMeta& meta,
                                                               std::uint64_t timeout_ns) noexcept {
  if (payload.size() > max_payload_) return PublishStatus::too_large;
  if (const std::uint64_t r = gone(false); r != kChannelLive) return publish_status_of_removed(r);
  std::uint64_t seq = 0;
  PublishStatus why = PublishStatus::ok;
  if (!reserve(seq, 1, timeout_ns, why)) return why;
  return publish_claimed(seq, payload, meta, time_to_store(meta));
}

// A reserved `seq` whose slot publish_fast could not take at once.
[[gnu::noinline]] PublishStatus PublisherCore::publish_claimed(std::uint64_t seq, std::span<const std::byte> payload,
                                                               const MessageMeta& meta, std::uint64_t t) noexcept {
  prefetch_payload(seq, payload.size());
  const PublishStatus st = write_message(seq, payload, meta, t, 0);
  if (st != PublishStatus::ok) return st;
  shm::single_writer_add(entry_->published, 1);
  return after_commit();
}

// After a commit: wakes sleeping readers, then says whether the channel went
// away meanwhile.
[[gnu::noinline]] PublishStatus PublisherCore::after_commit() noexcept {
  wake_subscribers();
  if (const std::uint64_t r = gone(false); r != kChannelLive) return publish_status_of_removed(r);
  return PublishStatus::ok;
}

// A commit CAS that failed: the claim was taken away (we stalled).
[[gnu::noinline, gnu::cold]] PublishStatus PublisherCore::lost_claim() noexcept {
  shm::single_writer_add(entry_->lost_claims, 1);
  return PublishStatus::abandoned;
}

template <class At>
PublishStatus PublisherCore::publish_batch_of(std::size_t n, At at, std::uint64_t timeout_ns) noexcept {
  if (!ch_) return PublishStatus::invalid;
  if (n == 0) return PublishStatus::ok;
  if (n > capacity_) return PublishStatus::too_large;
  for (std::size_t i = 0; i < n; ++i) {
    if (at(i).payload.size() > max_payload_) return PublishStatus::too_large;
  }
  if (const std::uint64_t r = gone(false); r != kChannelLive) return publish_status_of_removed(r);
  std::uint64_t seq = 0;
  PublishStatus why = PublishStatus::ok;
  if (!reserve(seq, n, timeout_ns, why)) return why;
  const std::uint64_t now_time = stamp_time();  // one clock read for the batch, after any wait
  PublishStatus result = PublishStatus::ok;
  std::uint64_t published = 0;
  for (std::size_t i = 0; i < n; ++i) {
    // A reference where the caller's array is read in place (the span form):
    // each field is loaded once, instead of copying the message to the stack
    // first; a copy where `at` makes one (the MessageAt form).
    decltype(auto) m = at(i);
    const std::uint64_t t = m.meta.timestamp_ns != 0 ? m.meta.timestamp_ns & ~kTicksFlag : now_time;
    prefetch_payload(seq, m.payload.size());
    const PublishStatus st = write_message(seq++, m.payload, m.meta, t, 0);
    if (st == PublishStatus::ok) {
      ++published;
    } else if (result == PublishStatus::ok) {
      result = st;  // a claim taken away (we stalled), or the channel went away
    }
  }
  // Counters and one wake check for the batch, after the commits.
  shm::single_writer_add(entry_->published, published);
  wake_subscribers();
  if (const std::uint64_t r = gone(false); r != kChannelLive) return publish_status_of_removed(r);
  return result;
}

PublishStatus PublisherCore::publish_batch(std::span<const OutMessage> msgs, std::uint64_t timeout_ns) noexcept {
  return publish_batch_of(
      msgs.size(), [msgs](std::size_t i) noexcept -> const OutMessage& { return msgs[i]; }, timeout_ns);
}

PublishStatus PublisherCore::publish_batch(std::size_t n, MessageAt at, const void* ctx,
                                           std::uint64_t timeout_ns) noexcept {
  return publish_batch_of(
      n, [at, ctx](std::size_t i) noexcept { return at(ctx, i); }, timeout_ns);
}

}  // namespace shmbus::bus
