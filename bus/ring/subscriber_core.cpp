#include "bus/ring/subscriber_core.hpp"
#include "bus/common/util.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <type_traits>

#include "bus/archive/archive_source.hpp"
#include "bus/common/wait.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"

namespace shmbus::bus {

namespace {

// Empty polls between stall checks (a power of 2). A check reads the
// producer's head, a line the publisher writes at every claim: taking it
// from the publisher every 1024 empty polls (a few microseconds of spinning)
// put that line's transfer on one busy-spin round trip in about twenty, and
// cost the 8-byte ping-pong 0.15x of the floor at p99. Every 65536 (well
// under a millisecond of spinning here) a stalled claim still goes at about
// unblock_timeout_ns, which is milliseconds.
constexpr std::uint32_t kStallCheckEvery = 65536;
constexpr std::uint32_t kRemovedCheckEvery = 64;  // empty polls between removal checks (divides the above)
static_assert(kStallCheckEvery % kRemovedCheckEvery == 0);
constexpr std::uint64_t kMaxSleepSliceNs = 50'000'000;
// pending_stamp_ of a message begin_read served from the archive: a stamp no
// ring read ever validates against (a committed read's stamp is never in
// the abandoned state), so finish_read's comparison sends it to
// finish_mismatch, which tells the two apart.
constexpr std::uint64_t kArchivedStamp = make_stamp(kMaxSequence, kStampAbandoned);

// What poll copies from SlotMeta into Message in one run: key, id,
// correlation_id and type, which lie alike in both (layout.hpp, SlotMeta).
constexpr std::size_t kMetaRun = offsetof(SlotMeta, type) + sizeof(SlotMeta::type) - offsetof(SlotMeta, key);
static_assert(std::is_standard_layout_v<Message> && std::is_trivially_copyable_v<Message>);
static_assert(offsetof(Message, id) - offsetof(Message, key) == offsetof(SlotMeta, id) - offsetof(SlotMeta, key));
static_assert(offsetof(Message, correlation_id) - offsetof(Message, key) ==
              offsetof(SlotMeta, correlation_id) - offsetof(SlotMeta, key));
static_assert(offsetof(Message, type) - offsetof(Message, key) == offsetof(SlotMeta, type) - offsetof(SlotMeta, key));
static_assert(sizeof(Message::type) == sizeof(SlotMeta::type) && kMetaRun == 28);

}  // namespace

SubscriberCore::~SubscriberCore() { release(); }

void SubscriberCore::release() noexcept {
  if (ch_) {
    // A forked child that inherited this handle does not own the entry: it
    // must neither move the cursor nor detach the parent's subscriber.
    if (control_pid(control_) == shm::self_process().pid) {
      publish_cursor();
      detach_subscriber(*ch_, index_, control_);
    }
    set_fast(false);
    ch_.reset();
  }
}

Result<std::unique_ptr<SubscriberCore>> SubscriberCore::create(std::shared_ptr<ChannelState> ch,
                                                               const SubscribeOptions& opts) {
  if (auto r = ch->require_live(); !r) return r.error();
  auto a = attach_subscriber(*ch, opts.name, opts.start);
  if (!a) return a.error();
  auto owned = std::make_unique<SubscriberCore>();
  SubscriberCore& s = *owned;
  s.prod_ = ch->producer;
  s.removed_ = &ch->header->removed;
  s.entry_ = &ch->subscribers[a->index];
  s.data_ = ch->data;
  s.capacity_ = ch->geo.capacity;
  s.mask_ = s.capacity_ - 1;
  s.unblock_ns_ = ch->geo.unblock_timeout_ns;
  s.slot_size_ = ch->geo.slot_size;
  s.max_payload_ = ch->geo.max_payload;
  s.index_ = a->index;
  s.control_ = a->control;
  s.cursor_ = a->cursor;
  s.resumed_ = a->resumed;
  s.report_start_loss_ = a->start_lost != 0;
  s.fast_max_ = std::min<std::uint32_t>(s.max_payload_, kSmallCopy);
  s.set_fast(!s.report_start_loss_);
  s.wake_publishers_ = ch->geo.policy == Policy::block;
  s.wait_ = opts.wait;
  s.has_archive_ = !ch->geo.archive_dir.empty();
  s.ch_ = std::move(ch);
  return owned;
}

[[gnu::always_inline]] inline void SubscriberCore::store_cursor() noexcept {
  if (wake_publishers_) {
    // SYNC(cursor): seq_cst store, then the sleep-flag check (see
    // shm::wake_sleepers); pairs with PublisherCore::wait_for_space.
    entry_->cursor.store(cursor_, std::memory_order_seq_cst);
    shm::wake_sleepers(prod_->pub_sleeping, prod_->pub_futex);
  } else {
    // SYNC(cursor): release, pairs with the acquire in gating_minimum().
    shm::store_release(entry_->cursor, cursor_);
  }
}

void SubscriberCore::publish_cursor() noexcept { store_cursor(); }

void SubscriberCore::seek(std::uint64_t seq) noexcept {
  if (!ch_) return;
  cursor_ = std::min(seq, kMaxSequence);
  pending_ = false;
  report_start_loss_ = false;  // a new position: its own poll reports what it finds
  // The ring first; a position it no longer holds sends the first read to
  // the archive (read_ring -> on_overwritten).
  archive_mode_ = false;
  set_fast(true);
  publish_cursor();
}

PollStatus SubscriberCore::on_lapped() noexcept {
  pending_ = false;
  // A slot that changed under us because the segment's pages were lost (or
  // the channel removed and overwritten) is no lap: report that instead.
  if (const std::uint64_t r = removed_->load(std::memory_order_relaxed); r != kChannelLive) {
    return poll_status_of_removed(r);  // relaxed: a flag
  }
  if (has_archive_) {
    // The message at the cursor was overwritten while it was read (poll's
    // or finish_read's validation failed): what the caller got is torn, so
    // the answer is lapped whatever happens; but it is lost only if the
    // archive does not hold it. Look now, so that the count is right at
    // once; a record found is kept by the source, and the next read serves
    // it without another read of the file.
    Message m;
    const PollStatus st = serve_archived(m);
    pending_ = false;
    return st == PollStatus::ok ? PollStatus::lapped : st;
  }
  return skip_overwritten();
}

// The ring's answer to an overwritten cursor: on to the oldest sequence the
// ring may still hold, the gap counted as lost.
PollStatus SubscriberCore::skip_overwritten() noexcept {
  // acquire: a fresh head to find the oldest sequence still in the ring.
  const std::uint64_t head = shm::load_acquire(prod_->head);
  const std::uint64_t oldest = head > capacity_ ? head - capacity_ : 0;
  const std::uint64_t next = std::max(cursor_ + 1, oldest);
  shm::single_writer_add(entry_->lost, next - cursor_);
  shm::single_writer_add(entry_->lapped_events, 1);
  cursor_ = next;
  publish_cursor();
  return PollStatus::lapped;
}

PollStatus SubscriberCore::on_evicted() noexcept {
  pending_ = false;
  // An entry that changed because the segment's pages were lost is no
  // eviction: report the loss.
  if (const std::uint64_t r = removed_->load(std::memory_order_relaxed); r != kChannelLive) {
    return poll_status_of_removed(r);  // relaxed: a flag
  }
  std::uint64_t cur = shm::load_acquire(entry_->control);
  if (control_state(cur) != kEntryEvicted || control_pid(cur) != control_pid(control_)) {
    return PollStatus::invalid;  // the entry was taken from us (we were thought dead)
  }
  const std::uint64_t oldest = oldest_sequence(*ch_);
  // With an archive the cursor stays: the next read finds what the ring
  // lost in the archive and counts only what that lacks.
  if (cursor_ < oldest && !has_archive_) {
    shm::single_writer_add(entry_->lost, oldest - cursor_);
    cursor_ = oldest;
  }
  shm::single_writer_add(entry_->lapped_events, 1);
  publish_cursor();  // before re-attaching, so we gate from a fresh cursor
  if (!shm::cas_seq_cst(entry_->control, cur, control_)) return PollStatus::invalid;
  return PollStatus::lapped;
}

void SubscriberCore::check_stall(std::uint64_t st) noexcept {
  (void)stall_.check(*ch_, cursor_, st, shm::load_acquire(prod_->head));
}

bool SubscriberCore::ready() noexcept {
  // In archive mode the cursor was overwritten in the ring: the archive
  // holds it, or its loss is to be reported (or poll finds the ring caught
  // up with and says empty once, leaving archive mode).
  if (!ch_ || report_start_loss_ || archive_mode_) return true;
  if (shm::load_relaxed(entry_->control) != control_) return true;
  const std::uint64_t st = stamp_at(cursor_).load(std::memory_order_seq_cst);
  if (stamp_state(st) == kStampEmpty) return false;
  return stamp_seq(st) > cursor_ || (stamp_seq(st) == cursor_ && stamp_state(st) != kStampWriting);
}

PollStatus SubscriberCore::begin_read(Message& out) noexcept {
  if (!ch_) return PollStatus::invalid;
  pending_ = false;
  // relaxed: only compared with our own value. fast_control_ differs from
  // the entry's word while a start loss is to be reported, in archive mode,
  // and when the entry was taken from us: begin_read_cold sorts them out.
  if (shm::load_relaxed(entry_->control) != fast_control_) [[unlikely]]
    return begin_read_cold(out);
  return read_ring(out);
}

[[gnu::always_inline]] inline PollStatus SubscriberCore::read_ring(Message& out) noexcept {
  for (;;) {
    const std::uint64_t want = make_stamp(cursor_, kStampCommitted);
    // SYNC(stamp): acquire, pairs with the seq_cst (release) commit CAS in
    // PublisherCore::commit: the slot's bytes are visible once this matches.
    const std::byte* slot = slot_at(data_, cursor_, mask_, slot_size_);
    const std::uint64_t st = shm::load_acquire(slot_header(slot).stamp);
    if (st == want) {
      const SlotMeta meta = read_meta(slot);
      if (size_length(meta.size) > max_payload_) [[unlikely]] {
        // Torn by a lapping writer, or a corrupted slot: the stamp decides.
        std::atomic_thread_fence(std::memory_order_acquire);
        const std::uint64_t now = shm::load_relaxed(slot_header(slot).stamp);
        if (now != want) return on_overwritten(out);
        shm::single_writer_add(entry_->lost, 1);
        ++cursor_;
        publish_cursor();
        return PollStatus::corrupted;
      }
      out = message_from(meta, clock_.ns(meta.timestamp), cursor_, size_attempt(meta.size), slot + kSlotHeaderSize);
      pending_stamp_ = st;
      pending_ = true;
      return PollStatus::ok;
    }
    if (stamp_state(st) != kStampEmpty) {
      if (stamp_seq(st) == cursor_ && stamp_state(st) == kStampAbandoned) {
        ++cursor_;  // a claim given back or taken from a dead writer: skip it
        publish_cursor();
        continue;
      }
      if (stamp_seq(st) > cursor_) return on_overwritten(out);
    }
    if ((++empty_polls_ & (kRemovedCheckEvery - 1)) == 0) [[unlikely]]
      return on_idle(st);
    return PollStatus::empty;
  }
}

[[gnu::noinline]] PollStatus SubscriberCore::begin_read_cold(Message& out) noexcept {
  if (report_start_loss_) {
    // Started at a time older than the ring (and the archive): what was
    // overwritten since then was counted at attach (entry lost,
    // lapped_events); say so once, as a seek to an overwritten sequence does.
    report_start_loss_ = false;
    set_fast(!archive_mode_);
    return PollStatus::lapped;
  }
  // relaxed: as in begin_read; on_evicted re-reads with acquire.
  if (shm::load_relaxed(entry_->control) != control_) return on_evicted();
  if (archive_mode_) return read_archived(out);
  return read_ring(out);
}

PollStatus SubscriberCore::on_idle(std::uint64_t st) noexcept {
  if ((empty_polls_ & (kStallCheckEvery - 1)) == 0) check_stall(st);
  // Only when there is nothing to read (what was committed before a removal
  // is still delivered), and only every kRemovedCheckEvery empty polls: one
  // more load in a reader's spin loop cost the busy-spin ping-pong 25% at
  // p50. relaxed: a flag with no data.
  if (const std::uint64_t r = removed_->load(std::memory_order_relaxed); r != kChannelLive) {
    return poll_status_of_removed(r);
  }
  return PollStatus::empty;
}

PollStatus SubscriberCore::finish_read(bool publish) noexcept {
  if (!ch_ || !pending_) return PollStatus::invalid;
  pending_ = false;
  // SYNC(seqlock-read): acquire fence orders the reads of the slot before the
  // re-load of the stamp; pairs with the writer's release fence. Every policy
  // validates: a drop_oldest writer, an evicted reader, or a reader that
  // joined a busy channel behind a publisher's cached gate can be lapped.
  std::atomic_thread_fence(std::memory_order_acquire);
  const std::uint64_t now = shm::load_relaxed(stamp_at(cursor_));
  if (now != pending_stamp_) [[unlikely]]
    return finish_mismatch(publish);
  ++cursor_;
  shm::single_writer_add(entry_->delivered, 1);
  if (publish) publish_cursor();
  return PollStatus::ok;
}

// finish_read's other cases: a message served from the archive (nothing to
// validate: the record's checksum was checked when it was read, and no
// writer rewrites it), or a ring message overwritten while it was read.
[[gnu::noinline]] PollStatus SubscriberCore::finish_mismatch(bool publish) noexcept {
  if (pending_stamp_ != kArchivedStamp) return on_lapped();
  ++cursor_;
  shm::single_writer_add(entry_->delivered, 1);
  if (publish) publish_cursor();
  return PollStatus::ok;
}

// --- replay from the archive (docs/protocol.md, "Replay and merge") --------------

// The ring no longer holds the cursor (its slot holds a later sequence).
PollStatus SubscriberCore::on_overwritten(Message& out) noexcept {
  if (!has_archive_) return on_lapped();
  return serve_archived(out);
}

// In archive mode: the ring first. Once its slot for the cursor holds
// anything but a later sequence (committed, being written, abandoned, or
// not reached yet), reading goes back to it and the fast path with it; the
// cursor decides which source serves each sequence, so the switch has no gap
// and no duplicate.
PollStatus SubscriberCore::read_archived(Message& out) noexcept {
  // SYNC(stamp): acquire, as in read_ring (and as there, only a committed
  // stamp lets the slot's bytes be read).
  const std::uint64_t st = shm::load_acquire(stamp_at(cursor_));
  if (stamp_state(st) == kStampEmpty || stamp_seq(st) <= cursor_) {
    leave_archive();
    return read_ring(out);
  }
  return serve_archived(out);
}

void SubscriberCore::leave_archive() noexcept {
  archive_mode_ = false;
  set_fast(!report_start_loss_);
}

// Moves the cursor forward to `next` (the archive's or the ring's next
// sequence), counting what lies between as lost.
void SubscriberCore::skip_to(std::uint64_t next) noexcept {
  // What the ring may still hold is not lost, whatever the archive lacks
  // (an archive pruned past the ring's oldest).
  const std::uint64_t oldest = oldest_sequence(*ch_);
  next = std::max(cursor_ + 1, std::min(next, std::max(oldest, cursor_ + 1)));
  shm::single_writer_add(entry_->lost, next - cursor_);
  shm::single_writer_add(entry_->lapped_events, 1);
  cursor_ = next;
  publish_cursor();
}

// Serves the cursor from the archive. The ring overwrote it, so the archive
// is the only place it can be: found -> ok (archive mode); not kept (pruned,
// or a gap the archiver recorded) -> lapped, on to the archive's next
// record; not archived (no archiver, or one behind on a drop_oldest channel)
// -> lapped, on to the ring's oldest, as without an archive; unreadable ->
// corrupted, on to the next file (or the ring's oldest), the error kept for
// last_error().
PollStatus SubscriberCore::serve_archived(Message& out) noexcept {
  pending_ = false;
  if (const std::uint64_t r = removed_->load(std::memory_order_relaxed); r != kChannelLive) {
    return poll_status_of_removed(r);  // relaxed: a flag
  }
  if (!archive_) {
    try {
      archive_ = std::make_unique<archive::ArchiveSource>(ch_->geo.archive_dir);
    } catch (const std::bad_alloc&) {
      return skip_overwritten();  // no memory to read the archive: the ring's answer, the loss counted
    }
  }
  switch (archive_->read(cursor_)) {
    case archive::ArchiveRead::found:
      archive_mode_ = true;
      set_fast(false);
      out = archive::message_of(archive_->record());
      pending_stamp_ = kArchivedStamp;
      pending_ = true;
      return PollStatus::ok;
    case archive::ArchiveRead::missing:
      archive_mode_ = true;
      set_fast(false);
      skip_to(archive_->next());
      return PollStatus::lapped;
    case archive::ArchiveRead::absent: leave_archive(); return skip_overwritten();
    case archive::ArchiveRead::error: {
      try {
        last_error_ = archive_->error();
      } catch (const std::bad_alloc&) {
        last_error_.clear();  // the status still says corrupted; only the text is lost
      }
      const std::uint64_t next = archive_->next();
      skip_to(next != 0 ? next : kMaxSequence);
      return PollStatus::corrupted;
    }
  }
  return skip_overwritten();
}

// The copy-out poll, fused: one acquire of the stamp at the head of the
// slot's first line (which also holds the metadata and 8 payload bytes),
// the copies, the seqlock re-check, one cursor store. Anything but a
// committed message of the right size, or an empty slot, takes poll_general.
PollStatus SubscriberCore::poll(Message& out, std::span<std::byte> buffer) noexcept {
  // relaxed: only compared with our own value; on_evicted re-reads with
  // acquire. fast_control_ never matches while there is a start loss to
  // report (set_fast).
  if (shm::load_relaxed(entry_->control) != fast_control_) [[unlikely]]
    return poll_general(out, buffer);
  pending_ = false;  // a poll ends any zero-copy read begun before it
  const std::uint64_t cursor = cursor_;
  const std::byte* slot = slot_at(data_, cursor, mask_, slot_size_);
  const std::atomic<std::uint64_t>& stamp = slot_header(slot).stamp;
  // SYNC(stamp): acquire, as in begin_read.
  const std::uint64_t st = shm::load_acquire(stamp);
  const std::uint64_t committed = make_stamp(cursor, kStampCommitted);
  if (st != committed) {
    // Nothing at the cursor yet (never written, an older lap, or being
    // written): an empty poll. Anything else is for the general path.
    // (`writing` as committed - 1: one stamp computed on the hot path.)
    static_assert(kStampWriting == kStampCommitted - 1);
    const bool nothing = stamp_state(st) == kStampEmpty || stamp_seq(st) < cursor || st == committed - 1;
    if (!nothing) return poll_general(out, buffer);
    // The slot's second line while we wait (a hint: no fault, no order): a
    // payload past the first line is read from there once the stamp says
    // committed, and a line already on its way overlaps that transfer with
    // the stamp's. 64 B ping-pong, 16 interleaved runs: p99 1.96x -> 1.88x
    // the floor, p50 1.10x -> 1.03x; 8 B unchanged within the noise.
    __builtin_prefetch(slot + kCacheLine, 0, 3);
    if ((++empty_polls_ & (kRemovedCheckEvery - 1)) == 0) [[unlikely]]
      return on_idle(st);
    return PollStatus::empty;
  }
  // Only the size word is needed before the payload copy; the metadata is
  // read after it, so that nothing is held in registers across the copy.
  // Every read before the fence is validated by the stamp check. A payload
  // larger than copy_small copies is poll_general's (which also tells
  // corrupted and too-small buffers apart).
  const std::uint32_t size = read_meta_size(slot);
  const std::uint32_t length = size_length(size);
  if (length > fast_max_ || length > buffer.size()) [[unlikely]]
    return poll_general(out, buffer);
  // What goes into `out` and the buffer before the validation is the
  // caller's to ignore unless the result is ok. attempt first: the size word
  // is then dead, and the length (opaque: one register, not derived from
  // the size word again) is all the payload copy holds.
  out.attempt = size_attempt(size);
  const std::size_t n = opaque(std::size_t{length});
  racy_copy_small(buffer.data(), slot + kSlotHeaderSize, n);
  // key, id, correlation_id and type lie in SlotMeta as in Message: one
  // copy of kMetaRun bytes (two overlapping 16-byte loads and stores).
  const std::byte* m = slot + offsetof(SlotHeader, meta);
  racy_copy_small(reinterpret_cast<std::byte*>(&out) + offsetof(Message, key), m + offsetof(SlotMeta, key), kMetaRun);
  std::uint64_t stored_time;
  racy_copy_small(&stored_time, m + offsetof(SlotMeta, timestamp), sizeof stored_time);
  // SYNC(seqlock-read): as in finish_read.
  std::atomic_thread_fence(std::memory_order_acquire);
  if (shm::load_relaxed(stamp) != st) [[unlikely]]
    return on_torn(out, buffer);
  out.sequence = cursor;
  out.payload = std::span<const std::byte>(buffer.data(), n);
  cursor_ = cursor + 1;
  shm::single_writer_add(entry_->delivered, 1);
  // The cursor, as store_cursor; its wake-up and a time that needs more than
  // the recent-ticks conversion are poll_finish's, so that this path makes
  // no call.
  if (wake_publishers_) {
    // SYNC(cursor): as in store_cursor (seq_cst store, then the flag check).
    entry_->cursor.store(cursor + 1, std::memory_order_seq_cst);
    if (prod_->pub_sleeping.load(std::memory_order_seq_cst) != 0) [[unlikely]]
      return poll_finish(out, stored_time);
  } else {
    // SYNC(cursor): as in store_cursor.
    shm::store_release(entry_->cursor, cursor + 1);
  }
  if (!clock_.ns_recent(stored_time, out.timestamp_ns)) [[unlikely]]
    return poll_finish(out, stored_time);
  return PollStatus::ok;
}

// The end of a poll that poll's own path could not finish: the message's time
// (a refresh of the clock's snapshot, or older ticks) and the wake-up of
// publishers sleeping on our cursor.
[[gnu::noinline]] PollStatus SubscriberCore::poll_finish(Message& out, std::uint64_t stored_time) noexcept {
  out.timestamp_ns = clock_.ns(stored_time);
  if (wake_publishers_) shm::wake_sleepers(prod_->pub_sleeping, prod_->pub_futex);
  return PollStatus::ok;
}

PollStatus SubscriberCore::poll_general(Message& out, std::span<std::byte> buffer) noexcept {
  // At most twice: a message overwritten while it was copied, which the
  // archive holds, is copied again from there (nothing was lost, so the
  // copy-out poll has nothing to report).
  for (int round = 0;; ++round) {
    const std::uint64_t at = cursor_;
    const PollStatus st = begin_read(out);
    if (st != PollStatus::ok) return st;
    if (out.payload.size() > buffer.size()) {
      pending_ = false;
      return PollStatus::buffer_too_small;  // out.payload.size() says how much is needed
    }
    copy_payload(out, buffer.first(out.payload.size()));
    const PollStatus done = finish_read(true);
    if (done != PollStatus::lapped || round != 0 || !archived_after_tear(at)) return done;
  }
}

// poll's copy was overwritten under it: the ring's answer (on_lapped), or,
// when the archive holds the message, the message from there.
[[gnu::noinline]] PollStatus SubscriberCore::on_torn(Message& out, std::span<std::byte> buffer) noexcept {
  const std::uint64_t at = cursor_;
  const PollStatus st = on_lapped();
  if (st != PollStatus::lapped || !archived_after_tear(at)) return st;
  return poll_general(out, buffer);
}

void SubscriberCore::copy_payload(Message& m, std::span<std::byte> dst) noexcept {
  racy_copy(dst.data(), m.payload.data(), dst.size());
  m.payload = std::span<const std::byte>(dst.data(), dst.size());
}

PollStatus SubscriberCore::wait(std::uint64_t timeout_ns) noexcept {
  if (!ch_) return PollStatus::invalid;
  const auto poll_ready = [this] { return ready() ? PollStatus::ok : PollStatus::empty; };
  // Once per slice: a stalled claim at the cursor, the cursor's stamp, then
  // whether the channel is gone (removed by name, by anyone; or its pages
  // lost): nothing will come. The fstat behind check_removed runs at most
  // every few ms.
  const auto look = [this](std::uint64_t now) {
    check_stall(shm::load_acquire(stamp_at(cursor_)));
    if (ready()) return PollStatus::ok;
    std::uint64_t gone = removed_->load(std::memory_order_relaxed);  // relaxed: a flag
    if (gone == kChannelLive && now - last_removed_check_ns_ >= kRemovedCheckEveryNs) {
      last_removed_check_ns_ = now;
      gone = ch_->check_removed();
    }
    return gone != kChannelLive ? poll_status_of_removed(gone) : PollStatus::empty;
  };
  // Sleeps of at most a quarter of unblock_timeout: the stall check in
  // `look` then unblocks a dead publisher's claim in time.
  const std::uint64_t slice = std::min<std::uint64_t>(kMaxSleepSliceNs, std::max<std::uint64_t>(unblock_ns_ / 4, 1000));
  const WaitPlan plan{timeout_ns, wait_, slice, &prod_->sub_sleeping, &prod_->sub_futex};
  return wait_until(plan, poll_ready, look, [] {});
}

PollStatus SubscriberCore::poll_wait(Message& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept {
  const std::uint64_t start = shm::monotonic_ns();
  const std::uint64_t deadline = deadline_after(start, timeout_ns);
  for (;;) {
    // wait() can report ready for a sequence that poll then skips (an
    // abandoned claim): keep waiting until something is delivered or time is up.
    const std::uint64_t now = shm::monotonic_ns();
    const PollStatus w = wait(deadline > now ? deadline - now : 0);
    if (w != PollStatus::ok) return w;
    const PollStatus p = poll(out, buffer);
    if (p != PollStatus::empty) return p;
    if (shm::monotonic_ns() >= deadline) return PollStatus::timeout;
  }
}

SubscriberCounters SubscriberCore::counters() const noexcept {
  SubscriberCounters c;
  if (!ch_) return c;
  c.cursor = cursor_;
  // relaxed: statistics.
  c.delivered = shm::load_relaxed(entry_->delivered);
  c.lost = shm::load_relaxed(entry_->lost);
  c.lapped_events = shm::load_relaxed(entry_->lapped_events);
  return c;
}

}  // namespace shmbus::bus
