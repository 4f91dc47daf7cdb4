// The per_key mode of a consumer group: one scan from the floor hands out
// messages whose keys have no earlier message in progress. See
// ordered_scan.hpp and docs/protocol.md ("Ordered groups (per_key)").
#include "bus/group/ordered_scan.hpp"

#include <algorithm>
#include <bit>

#include "bus/common/util.hpp"
#include "bus/group/consumer_core.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/futex.hpp"

namespace shmbus::bus {

namespace {

/// How often a scan re-reads one sequence whose lease word changed under
/// it before it holds the key back (conservative: a key held back by
/// mistake only waits for the next receive).
constexpr int kRetriesPerSequence = 8;

/// Once a scan has delivered, it ends after this many sequences without
/// another delivery: with few keys, the rest of the window is mostly their
/// held-back messages, and walking all of it for each batch made a batch
/// of one key cost a whole window per message (0.07 M msg/s against 1.7 M
/// one by one). A scan that has delivered nothing yet still walks the whole
/// window, so a key behind a long held-back run is found.
constexpr std::uint64_t kScanPastLastDelivery = 64;

}  // namespace

void BlockedKeys::reserve(std::size_t max_keys) {
  const std::size_t size = std::bit_ceil(std::max<std::size_t>(2 * max_keys, 2));
  table_.assign(size, Entry{});
  mask_ = size - 1;
  shift_ = static_cast<std::uint32_t>(64 - std::countr_zero(size));
  gen_ = 1;
}

ConsumerCore::SlotSeen ConsumerCore::key_at(std::uint64_t s, std::uint64_t& key, std::uint64_t& stamp) const noexcept {
  const ChannelState& ch = *ch_;
  const std::byte* slot = slot_at(ch.data, s, mask_, ch.geo.slot_size);
  const std::uint64_t want = make_stamp(s, kStampCommitted);
  stamp = shm::load_acquire(slot_header(slot).stamp);
  if (stamp == want) {
    // SYNC(seqlock-read): as in deliver; the key counts only if the stamp
    // still names s after the copy.
    const SlotMeta m = read_meta(slot);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (shm::load_relaxed(slot_header(slot).stamp) == want) {
      key = m.key;
      return SlotSeen::message;
    }
    return SlotSeen::overwritten;  // a committed stamp changes only for a later claim
  }
  if (stamp_state(stamp) != kStampEmpty && stamp_seq(stamp) > s) return SlotSeen::overwritten;
  if (stamp_state(stamp) == kStampAbandoned && stamp_seq(stamp) == s) return SlotSeen::abandoned;
  return SlotSeen::pending;
}

void ConsumerCore::raise_next(std::uint64_t to) noexcept {
  // per_key: `next` is one past the highest sequence ever leased (or
  // finished by a scan), so floor <= next holds as in unordered groups.
  std::uint64_t n = shm::load_acquire(g_->next);
  while (n < to && !g_->next.compare_exchange_weak(n, to, std::memory_order_acq_rel, std::memory_order_acquire)) {
  }
}

void ConsumerCore::lose_overwritten(std::uint64_t s) noexcept {
  // The floor's walk over what the ring overwrote, for this one sequence:
  // ends s as lost unless it is finished (a word of a later lap is left
  // alone), counted once by the CAS that wins; then `next` and the floor
  // move past it.
  end_overwritten_held(view(), s, s + 1);
  raise_next(s + 1);
  advance_floor();
}

void ConsumerCore::wake_ordered() noexcept {
  // A finished or delayed message may free its key for a consumer sleeping
  // in receive_wait. seq_cst fence: the lease CAS before it against the
  // sleeper's flag store (SYNC(sleep-flag), as a publisher's commit).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  shm::wake_sleepers(ch_->producer->sub_sleeping, ch_->producer->sub_futex);
}

ConsumerCore::ScanStep ConsumerCore::scan_no_message(std::uint64_t s, SlotSeen seen, std::uint64_t w,
                                                     std::uint64_t stamp, const ScanTime& t) noexcept {
  if (seen == SlotSeen::overwritten) {  // drop_oldest lapped the group: s is lost to it
    lose_overwritten(s);
    return ScanStep::next;
  }
  if (seen == SlotSeen::abandoned) {
    // A claim that never became a message: finished for the group.
    const LeaseFields lf = lease_fields(w);
    if (w == 0 || lf.lap != lap(s)) {
      if (!shm::cas_acq_rel(leases_[s & mask_], w, make_lease({kLeaseAcked, 0, 0, lap(s), 0}))) {
        return ScanStep::again;
      }
      raise_next(s + 1);
      advance_floor();
    }
    return ScanStep::next;
  }
  // Not committed: its key is unknown, and any later message may share it,
  // so the scan ends here. A publisher that died (or stalled) holding this
  // claim must not stop the group: check, at most once per scan interval.
  if (t.now - last_stall_check_ns_ >= scan_every_ns_) {
    last_stall_check_ns_ = t.now;
    if (stall_.check(*ch_, s, stamp, shm::load_acquire(ch_->producer->head))) return ScanStep::again;
  }
  return ScanStep::stop;
}

ConsumerCore::ScanStep ConsumerCore::scan_in_progress(std::uint64_t s, std::uint64_t w, std::uint64_t key,
                                                      const ScanTime& t, std::uint64_t& lease) noexcept {
  // The lowest unfinished message of its key (every earlier one was seen
  // finished), so it blocks the key, and when it is ready again it is
  // redelivered before any later one.
  std::atomic<std::uint64_t>& lw = leases_[s & mask_];
  const LeaseFields lf = lease_fields(w);
  bool ready = false;
  switch (lf.state) {
    case kLeaseLeased:
    case kLeaseDeadLettering:
      ready = lease_time_reached(lf.deadline_ms, t.nms);
      if (!ready && t.judge_owners && owner_dead(lf.owner)) {
        // Judging the owner may have released its leases (to due): decide
        // again on what the word is now.
        if (shm::load_acquire(lw) != w) return ScanStep::again;
        ready = true;
      }
      break;
    case kLeaseDue: ready = lease_time_reached(lf.deadline_ms, t.nms); break;
    default: break;
  }
  if (!ready) {
    blocked_.insert(key);
    return ScanStep::next;
  }
  const std::uint64_t deadline_ms = t.nms + ceil_ms(visibility_ns_);
  if (lf.attempt >= max_deliveries_ || lf.state == kLeaseDeadLettering) {
    // Out of deliveries: to the DLQ, under a lease of our own; then look at
    // s again (dead-lettered, it no longer blocks its key).
    const std::uint64_t held = make_lease({kLeaseDeadLettering, lf.attempt, ci_, lap(s), deadline_ms});
    if (!shm::cas_acq_rel(lw, w, held)) return ScanStep::again;
    if (lf.state == kLeaseLeased) g_->expired.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    raise_next(s + 1);  // as for every lease: the floor may pass s only below `next`
    (void)send_to_dlq(s, held, DeadLetterReason::max_deliveries);
    return ScanStep::again;
  }
  lease = make_lease({kLeaseLeased, lf.attempt + 1, ci_, lap(s), deadline_ms});
  if (!shm::cas_acq_rel(lw, w, lease)) return ScanStep::again;
  // relaxed: statistics.
  g_->redelivered.fetch_add(1, std::memory_order_relaxed);
  if (lf.state == kLeaseLeased) g_->expired.fetch_add(1, std::memory_order_relaxed);
  blocked_.insert(key);
  return ScanStep::take;
}

ConsumerCore::ScanStep ConsumerCore::scan_step(std::uint64_t s, const ScanTime& t, int tries,
                                               std::uint64_t& lease) noexcept {
  std::atomic<std::uint64_t>& lw = leases_[s & mask_];
  std::uint64_t w = shm::load_acquire(lw);
  const LeaseFields lf = lease_fields(w);
  const bool this_lap = w != 0 && lf.lap == lap(s);
  if (this_lap && lease_final(lf.state)) {  // acked, dead-lettered, lost: blocks nothing
    // A consumer killed between a lease and its raise of `next` can leave a
    // finished sequence at or above `next`, which the floor would never
    // pass: raise it (a load, and a CAS only in that case).
    raise_next(s + 1);
    return ScanStep::next;
  }
  // The lease word was read before the stamp: if the stamp still names s as
  // committed, the word is of s's lap or an earlier one (a later lap's word
  // is written only after its claim changed the stamp).
  std::uint64_t key = 0;
  std::uint64_t stamp = 0;
  const SlotSeen seen = key_at(s, key, stamp);
  if (seen != SlotSeen::message) return scan_no_message(s, seen, w, stamp, t);
  if (tries > kRetriesPerSequence) {
    blocked_.insert(key);  // contended: hold the key back, decide on the next receive
    return ScanStep::next;
  }
  if (this_lap) return scan_in_progress(s, w, key, t, lease);
  // Free: never leased in this lap.
  if (blocked_.contains(key)) return ScanStep::next;  // held back behind an earlier message of its key
  const bool overwrote_previous = !available_for(s, w);
  lease = make_lease({kLeaseLeased, 1, ci_, lap(s), t.nms + ceil_ms(visibility_ns_)});
  if (!shm::cas_acq_rel(lw, w, lease)) return ScanStep::again;
  // The previous lap's message was still in flight but was overwritten
  // (drop_oldest lapped this group): it is lost to the group.
  if (overwrote_previous) g_->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  blocked_.insert(key);
  return ScanStep::take;
}

std::size_t ConsumerCore::receive_ordered(std::span<Delivery> out, std::span<std::byte> arena, std::uint64_t now,
                                          PollStatus& st) noexcept {
  st = PollStatus::empty;
  // A consumer killed between its ack and its floor advance leaves the floor
  // behind: every scan moves it over what is finished first.
  advance_floor();
  // Owners of live leases are judged at most once per scan interval, as
  // take_due does (each judgement reads the clock and the owner's entry).
  const ScanTime t{now, now / kNsPerMs, now - last_scan_ns_ >= scan_every_ns_};
  if (t.judge_owners) last_scan_ns_ = now;
  const std::uint64_t first = shm::load_acquire(g_->floor);
  const std::uint64_t end = first + order_window_;
  blocked_.clear();
  std::size_t n = 0;
  std::size_t used = 0;
  int tries = 0;
  std::uint64_t last_delivered = 0;
  for (std::uint64_t s = first; s < end && n < out.size() && (n == 0 || s - last_delivered < kScanPastLastDelivery);) {
    std::uint64_t lease = 0;
    const ScanStep step = scan_step(s, t, ++tries, lease);
    if (step == ScanStep::again) continue;
    if (step == ScanStep::stop) break;
    if (step == ScanStep::take) {
      raise_next(s + 1);
      (void)deliver(s, lease, out[n], arena.subspan(std::min(used, arena.size())), st);
      if (st != PollStatus::ok) return n;  // lapped, corrupted, or no room left: ends the batch
      out[n].deadline_ns = now + visibility_ns_;
      used += out[n].message.payload.size();
      ++n;
      last_delivered = s;
    }
    ++s;
    tries = 0;
  }
  if (n != 0) {
    st = PollStatus::ok;
  } else if (const std::uint64_t r = ch_->removed_fast(); r != kChannelLive) {
    // relaxed: a flag that carries no data (see SubscriberCore::begin_read).
    st = poll_status_of_removed(r);
  }
  return n;
}

}  // namespace shmbus::bus
