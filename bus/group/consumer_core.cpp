// One consumer of a group: its lease state machine. See consumer_core.hpp.
#include "bus/group/consumer_core.hpp"

#include <algorithm>

#include "bus/common/util.hpp"
#include "bus/common/wait.hpp"
#include "bus/group/ordered_stats.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"
#include "shm/liveness.hpp"

namespace shmbus::bus {

namespace {

constexpr std::uint64_t kOwnerCacheNs = 5'000'000;

}  // namespace

Result<std::unique_ptr<ConsumerCore>> ConsumerCore::join(std::shared_ptr<ChannelState> ch, std::string_view name,
                                                         const GroupOptions& opts) {
  if (auto w = ch->require_writable(); !w) return w.error();
  if (auto r = validate_name("group", name); !r) return r.error();
  if (auto r = check_group_options(opts); !r) return r.error();
  if (ch->geo.max_groups == 0) {
    return Error(ErrorCode::invalid_argument, "channel '" + ch->name + "' was created with max_groups 0");
  }
  // The window a per_key group looks through, resolved against this ring:
  // the group entry stores (and joiners compare) the resolved value.
  GroupOptions o = opts;
  if (o.ordering == GroupOrdering::none) {
    o.order_window = 0;
  } else if (o.order_window == 0) {
    o.order_window = effective_order_window(0, ch->geo.capacity);
  } else if (o.order_window > ch->geo.capacity) {
    return Error(ErrorCode::invalid_argument, "order_window " + num(o.order_window) + " exceeds the capacity " +
                                                  num(ch->geo.capacity) + " of channel '" + ch->name + "'");
  }
  const std::string dlq = dlq_channel_name(ch->name, o);
  if (auto r = validate_name("dlq channel", dlq); !r) return r.error();
  if (dlq == ch->name) {
    return Error(ErrorCode::invalid_argument, "group '" + std::string(name) + "' cannot use its own channel as DLQ");
  }

  // The DLQ exists before any message can need it, with a durable cursor
  // that retains dead letters until they are redriven.
  auto dlq_ch = open_dlq(*ch, dlq);
  if (!dlq_ch) {
    return Error(dlq_ch.error().code(), "DLQ of group '" + std::string(name) + "': " + dlq_ch.error().message());
  }

  auto gi = find_or_create_group(*ch, name, o, dlq);
  if (!gi) return gi.error();
  std::uint64_t control = 0;
  auto ci = join_consumer(*ch, gi.value(), control);
  if (!ci) return ci.error();

  auto owned = std::make_unique<ConsumerCore>();
  ConsumerCore& c = *owned;
  c.g_ = ch->group(gi.value());
  c.consumers_ = ch->consumers(gi.value());
  c.me_ = &c.consumers_[ci.value()];
  c.leases_ = ch->leases(gi.value());
  c.gi_ = gi.value();
  c.ci_ = ci.value();
  c.control_ = control;
  c.mask_ = ch->geo.capacity - 1;
  c.lap_shift_ = lap_shift_of(ch->geo.capacity);
  c.fast_max_ = std::min<std::uint32_t>(ch->geo.max_payload, static_cast<std::uint32_t>(kSmallCopy));
  c.visibility_ns_ = c.g_->visibility_timeout_ns;
  c.max_deliveries_ = c.g_->max_deliveries;
  c.backoff_base_ns_ = c.g_->backoff_base_ns;
  c.backoff_cap_ns_ = c.g_->backoff_cap_ns;
  c.jitter_permille_ = c.g_->jitter_permille;
  c.wait_ = o.wait;
  c.dlq_name_ = dlq;
  c.dlq_ch_ = std::move(dlq_ch.value());
  // Redeliveries are looked for at least 4 times per visibility timeout.
  c.scan_every_ns_ = std::clamp<std::uint64_t>(c.visibility_ns_ / 4, 100'000, 10'000'000);
  c.rng_ = shm::random_u64() | 1;
  c.owner_cache_.assign(ch->geo.max_consumers, OwnerSeen{});
  if (o.ordering == GroupOrdering::per_key) {
    // A scan blocks at most one key per sequence it looks at.
    c.ordered_ = true;
    c.order_window_ = o.order_window;  // checked above, and equal to the entry's (check_same_settings)
    c.blocked_.reserve(c.order_window_);
  }
  c.ch_ = std::move(ch);
  return owned;
}

ConsumerCore::~ConsumerCore() { release(); }

void ConsumerCore::release() noexcept {
  if (!ch_) return;
  if (control_pid(control_) == shm::self_process().pid) {
    // Leaving: what we still hold becomes due at once for the others.
    release_leases_of(*ch_, gi_, ci_);
    std::uint64_t c = control_;
    (void)shm::cas_acq_rel(me_->control, c, make_control(kEntryFree, 0));
    if (ordered_) wake_ordered();  // their keys are free for the sleepers
  }
  dlq_pub_.reset();
  ch_.reset();
}

std::uint64_t ConsumerCore::backoff_ns(std::uint32_t attempt) noexcept {
  const std::uint32_t shift = std::min<std::uint32_t>(attempt > 0 ? attempt - 1 : 0, 40);
  std::uint64_t d = backoff_base_ns_;
  for (std::uint32_t i = 0; i < shift && d < backoff_cap_ns_; ++i) d *= 2;
  d = std::min(d, backoff_cap_ns_);
  if (jitter_permille_ != 0 && d != 0) {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    const std::uint64_t span = d / 1000 * jitter_permille_;  // +-span
    if (span != 0) d = d - span + rng_ % (2 * span + 1);
  }
  return std::min(d, backoff_cap_ns_ + backoff_cap_ns_ / 1000 * jitter_permille_);
}

void ConsumerCore::advance_floor() noexcept { advance_floor_of(view()); }

void ConsumerCore::end_lost(std::uint64_t seq, std::uint64_t lease) noexcept { end_lease_lost(view(), seq, lease); }

bool ConsumerCore::owner_dead(std::uint32_t owner) noexcept {
  if (owner == kLeaseNoOwner) return false;  // a mover outside the group: its deadline decides
  if (owner >= owner_cache_.size()) return true;
  const std::uint64_t now = shm::monotonic_ns();
  if (now - owner_cache_ns_ > kOwnerCacheNs) {
    std::fill(owner_cache_.begin(), owner_cache_.end(), OwnerSeen{});
    owner_cache_ns_ = now;
  }
  const ConsumerEntry& e = consumers_[owner];
  const std::uint64_t c = shm::load_acquire(e.control);
  // The lease's owner left, or its index is being reused: it is not there.
  if (control_state(c) != kEntryActive) return true;
  OwnerSeen& seen = owner_cache_[owner];
  if (seen.control != c) {  // unknown, or another consumer at that index since
    seen.control = c;
    seen.dead = shm::process_liveness({control_pid(c), shm::load_relaxed(e.owner_start)}) == shm::Liveness::dead;
    if (seen.dead) (void)release_consumer(*ch_, gi_, owner, c);
  }
  return seen.dead;
}

bool ConsumerCore::deliver(std::uint64_t seq, std::uint64_t lease, Delivery& out, std::span<std::byte> buffer,
                           PollStatus& st) noexcept {
  const ChannelState& ch = *ch_;
  const std::uint64_t want = make_stamp(seq, kStampCommitted);
  const std::byte* slot = slot_at(ch.data, seq, mask_, ch.geo.slot_size);
  const SlotMeta hdr = read_meta(slot);
  const std::uint32_t length = size_length(hdr.size);
  const LeaseFields lf = lease_fields(lease);
  auto give_up = [&](PollStatus why) {
    // The message is gone (overwritten) or impossible: the group loses it.
    end_lost(seq, lease);
    st = why;
    return true;
  };
  bool intact = length <= ch.geo.max_payload;
  if (intact && length > buffer.size()) {
    // Cannot hand it over: give the lease back (this delivery did not count).
    std::uint64_t w = lease;
    LeaseFields back = lf;
    back.state = kLeaseDue;
    back.attempt = lf.attempt > 0 ? lf.attempt - 1 : 0;
    back.deadline_ms = now_ms();
    (void)shm::cas_acq_rel(leases_[seq & mask_], w, make_lease(back));
    last_scan_ns_ = 0;  // due now: a retry with a larger buffer finds it at once
    out.message.payload = std::span<const std::byte>(slot + kSlotHeaderSize, length);
    st = PollStatus::buffer_too_small;
    return true;
  }
  if (intact) racy_copy(buffer.data(), slot + kSlotHeaderSize, length);
  // SYNC(seqlock-read): as in SubscriberCore::finish_read.
  std::atomic_thread_fence(std::memory_order_acquire);
  if (shm::load_relaxed(slot_header(slot).stamp) != want) return give_up(PollStatus::lapped);
  if (!intact) return give_up(PollStatus::corrupted);
  out.sequence = seq;
  out.attempt = lf.attempt;
  out.lease = lease;
  out.group = gi_;
  out.deadline_ns = 0;
  out.message = message_from(hdr, clock_.ns(hdr.timestamp), seq, lf.attempt, buffer.data());
  if (batching_) {
    ++batch_delivered_;  // added to the group's counter once, at the batch's end
  } else {
    g_->delivered.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  shm::single_writer_add(me_->delivered, 1);
  st = PollStatus::ok;
  return true;
}

std::size_t ConsumerCore::take_run(std::span<Delivery> out, std::span<std::byte> arena, std::uint64_t now,
                                   std::size_t& used, RunEnd& end) noexcept {
  const ChannelState& ch = *ch_;
  // Every lease of the run is (leased, attempt 1, us, lap, the same
  // deadline): all but the lap computed once.
  const std::uint64_t lease_base = make_lease({kLeaseLeased, 1, ci_, 0, now / kNsPerMs + ceil_ms(visibility_ns_)});
  const std::uint64_t deadline_ns = now + visibility_ns_;
  std::size_t k = 0;
  end = RunEnd::general;
  const std::uint64_t first = shm::load_acquire(g_->next);
  std::uint64_t n = first;
  while (k < out.size()) {
    const std::byte* slot = slot_at(ch.data, n, mask_, ch.geo.slot_size);
    const std::atomic<std::uint64_t>& stamp_word = slot_header(slot).stamp;
    const std::uint64_t stamp = shm::load_acquire(stamp_word);
    std::atomic<std::uint64_t>& lw = leases_[n & mask_];
    std::uint64_t w = shm::load_acquire(lw);
    // The two words are n's only if `next` is still at most n after both
    // loads (as take_new's re-read, for a run: `next` stays at `first`
    // while the run takes first, first + 1, ..., unless others help it
    // over them): nobody can have leased n + capacity, whose lease needs
    // `next` past it. Anything but a committed message with a free lease
    // word (taken by someone, or an unfinished lease of an earlier lap) is
    // take_new's.
    if (stamp != make_stamp(n, kStampCommitted) || !available_for(n, w) || shm::load_acquire(g_->next) > n) break;
    // The size word alone before the take (the rest after it), validated
    // with the rest by the stamp check below: a payload that take_run does
    // not copy itself is left to take_new and deliver before it is taken.
    const std::uint32_t length = size_length(read_meta_size(slot));
    if (length > fast_max_ || length > arena.size() - used) break;
    const std::uint64_t lease = lease_base | make_lease({0, 0, 0, lap(n), 0});
    // G1: taking the word is the delivery. `next` moves past the run once,
    // at its end; meanwhile a consumer that finds one of its words at
    // `next` helps `next` on, as after any G1.
    if (!shm::cas_acq_rel(lw, w, lease)) break;
    Delivery& d = out[k];
    std::byte* dst = arena.data() + used;
    racy_copy_small(dst, slot + kSlotHeaderSize, length);
    // The metadata field by field into `d`, as SubscriberCore::poll does.
    const std::byte* m = slot + offsetof(SlotHeader, meta);
    racy_copy_small(&d.message.key, m + offsetof(SlotMeta, key), sizeof d.message.key);
    racy_copy_small(&d.message.id, m + offsetof(SlotMeta, id), sizeof d.message.id);
    racy_copy_small(&d.message.correlation_id, m + offsetof(SlotMeta, correlation_id), sizeof d.message.correlation_id);
    racy_copy_small(&d.message.type, m + offsetof(SlotMeta, type), sizeof d.message.type);
    std::uint64_t stored_time;
    racy_copy_small(&stored_time, m + offsetof(SlotMeta, timestamp), sizeof stored_time);
    // SYNC(seqlock-read): as in deliver.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (shm::load_relaxed(stamp_word) != stamp) [[unlikely]] {
      end_lost(n++, lease);  // G10 (and `next` moves past it with the run)
      end = RunEnd::lapped;
      break;
    }
    d.sequence = n;
    d.attempt = 1;
    d.lease = lease;
    d.group = gi_;
    d.deadline_ns = deadline_ns;
    d.message.sequence = n;
    d.message.attempt = 1;
    d.message.payload = std::span<const std::byte>(dst, length);
    if (!clock_.ns_recent(stored_time, d.message.timestamp_ns)) [[unlikely]]
      d.message.timestamp_ns = clock_.ns(stored_time);
    used += length;
    ++k;
    ++n;
  }
  if (n != first) {
    // `next` past the run: one CAS from `first` unless others helped it on
    // meanwhile (then at most the CAS-max loop's few rounds).
    std::uint64_t expected = first;
    if (!g_->next.compare_exchange_strong(expected, n, std::memory_order_acq_rel) && expected < n) raise_next(n);
  }
  if (k == out.size()) end = RunEnd::full;
  if (k != 0) shm::single_writer_add(me_->delivered, k);
  return k;
}

bool ConsumerCore::take_new(Delivery& out, std::span<std::byte> buffer, PollStatus& st, std::uint64_t now) noexcept {
  const ChannelState& ch = *ch_;
  for (int guard = 0; guard < 1024; ++guard) {
    std::uint64_t n = shm::load_acquire(g_->next);
    const std::uint64_t stamp = shm::load_acquire(ch.slot(n)->stamp);
    std::atomic<std::uint64_t>& lw = leases_[n & mask_];
    std::uint64_t w = shm::load_acquire(lw);
    // Both words must have been read while n was still `next`: a consumer
    // descheduled here for a whole lap would otherwise pair a stale stamp
    // for n with the lease word of n + capacity. `next` only grows, and
    // slot n is not reused while next == n (the floor is at most next), so
    // an unchanged next proves both words belong to n.
    if (shm::load_acquire(g_->next) != n) continue;
    const LeaseFields lf = lease_fields(w);
    const bool taken = w != 0 && lf.lap == lap(n) && !available_for(n, w);
    if (taken) {
      // Someone took n (or finished it) but has not moved `next` yet: help.
      help_advance_next(n);
      continue;
    }
    if (stamp == make_stamp(n, kStampCommitted)) {
      const bool overwrote_previous = !available_for(n, w);
      const std::uint64_t lease = make_lease({kLeaseLeased, 1, ci_, lap(n), now / kNsPerMs + ceil_ms(visibility_ns_)});
      // The lease word is the authority: taking it is the delivery. A
      // consumer killed right after still holds a lease that expires.
      if (!shm::cas_acq_rel(lw, w, lease)) continue;
      if (overwrote_previous) {
        // The previous lap's message was still in flight but was overwritten
        // (drop_oldest lapped this group): it is lost to the group.
        g_->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      }
      help_advance_next(n);
      if (deliver(n, lease, out, buffer, st) && st == PollStatus::ok) {
        out.deadline_ns = now + visibility_ns_;
      }
      return true;
    }
    if (stamp_state(stamp) != kStampEmpty && stamp_seq(stamp) == n && stamp_state(stamp) == kStampAbandoned) {
      // A claim that never became a message: finish it for the group.
      if (!shm::cas_acq_rel(lw, w, make_lease({kLeaseAcked, 0, 0, lap(n), 0}))) continue;
      help_advance_next(n);
      advance_floor();
      continue;
    }
    if (stamp_state(stamp) != kStampEmpty && stamp_seq(stamp) > n) {
      // Lapped (drop_oldest): skip to the oldest message still in the ring.
      const std::uint64_t head = shm::load_acquire(ch.producer->head);
      const std::uint64_t oldest = head > mask_ + 1 ? head - (mask_ + 1) : 0;
      const std::uint64_t to = std::max(n + 1, oldest);
      std::uint64_t expected = n;  // a copy: a failed CAS must not change n
      if (g_->next.compare_exchange_strong(expected, to, std::memory_order_acq_rel)) count_lost(view(), to - n);
      continue;
    }
    // Nothing committed at `next` yet. A publisher that died (or stalled)
    // holding that claim must not stop the group: check, at most once per
    // scan interval, and finish an abandoned claim at once.
    if (now - last_stall_check_ns_ >= scan_every_ns_) {
      last_stall_check_ns_ = now;
      if (stall_.check(*ch_, n, stamp, shm::load_acquire(ch.producer->head))) {
        continue;
      }
    }
    return false;
  }
  return false;
}

bool ConsumerCore::take_due(Delivery& out, std::span<std::byte> buffer, PollStatus& st, std::uint64_t now) noexcept {
  if (now - last_scan_ns_ < scan_every_ns_) return false;
  last_scan_ns_ = now;
  // A consumer killed between its ack and its floor advance leaves the floor
  // behind: every scan moves it over what is finished.
  advance_floor();
  const std::uint64_t nms = now / kNsPerMs;
  const ScanRange range = scan_range(view());
  for (std::uint64_t s = range.first; s < range.end; ++s) {
    std::atomic<std::uint64_t>& lw = leases_[s & mask_];
    std::uint64_t w = shm::load_acquire(lw);
    const LeaseFields lf = lease_fields(w);
    if (w == 0 || lf.lap != lap(s)) continue;
    bool ready = false;
    switch (lf.state) {
      case kLeaseLeased:
      case kLeaseDeadLettering:
        ready = lease_time_reached(lf.deadline_ms, nms);
        if (!ready && owner_dead(lf.owner)) {
          // Judging the owner may have released its leases (to `due`), and
          // another consumer may already have taken this one: take it only
          // if it is still the dead owner's lease, or now due.
          const std::uint64_t again = shm::load_acquire(lw);
          const LeaseFields af = lease_fields(again);
          if (again == w) {
            ready = true;
          } else if (af.lap == lap(s) && af.state == kLeaseDue && lease_time_reached(af.deadline_ms, nms)) {
            w = again;
            ready = true;
          }
        }
        break;
      case kLeaseDue: ready = lease_time_reached(lf.deadline_ms, nms); break;
      default: break;
    }
    if (!ready) continue;
    const LeaseFields cur = lease_fields(w);
    if (cur.lap != lap(s) || lease_final(cur.state) || cur.state == kLeaseFree) continue;
    if (cur.attempt >= max_deliveries_ || cur.state == kLeaseDeadLettering) {
      // Out of deliveries: to the DLQ, under a lease of our own.
      const std::uint64_t held =
          make_lease({kLeaseDeadLettering, cur.attempt, ci_, lap(s), nms + ceil_ms(visibility_ns_)});
      if (!shm::cas_acq_rel(lw, w, held)) continue;
      if (cur.state == kLeaseLeased) g_->expired.fetch_add(1, std::memory_order_relaxed);
      (void)send_to_dlq(s, held, DeadLetterReason::max_deliveries);
      continue;
    }
    const std::uint64_t lease = make_lease({kLeaseLeased, cur.attempt + 1, ci_, lap(s), nms + ceil_ms(visibility_ns_)});
    if (!shm::cas_acq_rel(lw, w, lease)) continue;
    // relaxed: statistics.
    g_->redelivered.fetch_add(1, std::memory_order_relaxed);
    if (cur.state == kLeaseLeased) g_->expired.fetch_add(1, std::memory_order_relaxed);
    if (deliver(s, lease, out, buffer, st) && st == PollStatus::ok) {
      out.deadline_ns = now + visibility_ns_;
    }
    return true;
  }
  return false;
}

PollStatus ConsumerCore::receive(Delivery& out, std::span<std::byte> buffer) noexcept {
  if (!ch_) return PollStatus::invalid;
  const std::uint64_t now = shm::monotonic_ns();  // one clock read per receive
  if (ordered_) [[unlikely]] {
    PollStatus st;
    (void)receive_ordered(std::span<Delivery>(&out, 1), buffer, now, st);
    return st;
  }
  if (!scan_due(now)) {
    std::size_t used = 0;
    RunEnd end;
    if (take_run(std::span<Delivery>(&out, 1), buffer, now, used, end) == 1) {
      g_->delivered.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      return PollStatus::ok;
    }
    if (end == RunEnd::lapped) return PollStatus::lapped;
  }
  return receive_at(out, buffer, now);
}

std::size_t ConsumerCore::receive_batch(std::span<Delivery> out, std::span<std::byte> arena,
                                        PollStatus* last) noexcept {
  std::size_t n = 0;
  std::size_t used = 0;
  PollStatus st = ch_ ? PollStatus::ok : PollStatus::invalid;
  if (ch_) {
    // One clock read and one update of the group's delivered counter for
    // the batch (deliver counts into batch_delivered_ meanwhile).
    const std::uint64_t now = shm::monotonic_ns();
    batching_ = true;
    if (ordered_) [[unlikely]] {
      n = receive_ordered(out, arena, now, st);  // one scan for the whole batch
    } else {
      while (n < out.size() && used <= arena.size()) {
        // Runs of new messages (take_run); whatever a run stops at, and a
        // scan for due redeliveries when one is due, the general path's.
        if (!scan_due(now)) {
          RunEnd end;
          const std::size_t k = take_run(out.subspan(n), arena, now, used, end);
          n += k;
          batch_delivered_ += k;
          if (end == RunEnd::full) break;
          if (end == RunEnd::lapped) {
            st = PollStatus::lapped;
            break;
          }
        }
        st = receive_at(out[n], arena.subspan(used), now);
        if (st != PollStatus::ok) break;
        used += out[n].message.payload.size();
        ++n;
      }
    }
    batching_ = false;
    if (batch_delivered_ != 0) {
      g_->delivered.fetch_add(batch_delivered_, std::memory_order_relaxed);  // relaxed: a statistic
      batch_delivered_ = 0;
    }
  }
  if (last != nullptr) *last = st;
  return n;
}

PollStatus ConsumerCore::receive_at(Delivery& out, std::span<std::byte> buffer, std::uint64_t now) noexcept {
  PollStatus st = PollStatus::empty;
  // Due redeliveries first (they are older), at most every scan interval.
  if (take_due(out, buffer, st, now)) return st;
  if (take_new(out, buffer, st, now)) return st;
  // relaxed: a flag that carries no data (see SubscriberCore::begin_read).
  if (const std::uint64_t r = ch_->removed_fast(); r != kChannelLive) return poll_status_of_removed(r);
  return PollStatus::empty;
}

PollStatus ConsumerCore::receive_wait(Delivery& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept {
  if (!ch_) return PollStatus::invalid;
  const auto poll = [&] { return receive(out, buffer); };
  // Once per slice: a delivery, then whether the channel is gone. receive
  // sees the removal flag; the fstat behind check_removed runs at most
  // every few ms.
  std::uint64_t last_gone_check = shm::monotonic_ns();
  const auto look = [&](std::uint64_t now) {
    if (const PollStatus st = receive(out, buffer); st != PollStatus::empty) return st;
    if (now - last_gone_check < kRemovedCheckEveryNs) return PollStatus::empty;
    last_gone_check = now;
    const std::uint64_t r = ch_->check_removed();
    return r != kChannelLive ? poll_status_of_removed(r) : PollStatus::empty;
  };
  // Sleeps end at the next redelivery scan. A futex sleep ends on a commit,
  // or a lease made due at once (a nack, a reclaimed consumer), or its
  // timeout: each a good moment to look for redeliveries at once.
  const WaitPlan plan{timeout_ns, wait_, scan_every_ns_, &ch_->producer->sub_sleeping, &ch_->producer->sub_futex};
  return wait_until(plan, poll, look, [this] { last_scan_ns_ = 0; });
}

AckStatus ConsumerCore::finish(const Delivery& d, std::uint64_t next_word) noexcept {
  std::uint64_t expected = d.lease;
  // acq_rel: the ack is ordered after the consumer's processing; the floor
  // advance that follows reads it with acquire.
  if (!shm::cas_acq_rel(leases_[d.sequence & mask_], expected, next_word)) return AckStatus::lease_lost;
  return AckStatus::ok;
}

AckStatus ConsumerCore::end_lease_acked(const Delivery& d) noexcept {
  if (!holds(d)) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  lf.state = kLeaseAcked;
  lf.deadline_ms = 0;
  return finish(d, make_lease(lf));
}

AckStatus ConsumerCore::ack(const Delivery& d) noexcept {
  const AckStatus st = end_lease_acked(d);
  if (st != AckStatus::ok) return st;
  g_->acked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->acked, 1);
  advance_floor();
  if (ordered_) [[unlikely]] {
    wake_ordered();  // its key is free: wake a consumer sleeping for it
  }
  return AckStatus::ok;
}

std::size_t ConsumerCore::ack_batch(std::span<const Delivery> ds) noexcept {
  if (!ch_) return 0;
  std::uint64_t acked = 0;
  for (const Delivery& d : ds) {
    // As end_lease_acked (G3), with the handle checked once for the batch.
    if (d.group != gi_ || !holds_lease(d.sequence, d.lease)) continue;
    std::uint64_t expected = d.lease;
    acked += shm::cas_acq_rel(leases_[d.sequence & mask_], expected, acked_word(d.lease));
  }
  if (acked == 0) return 0;
  // One counter update and one floor advance (a CAS over the whole run of
  // finished sequences) for the batch.
  g_->acked.fetch_add(acked, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->acked, acked);
  advance_floor();
  if (ordered_) [[unlikely]] {
    wake_ordered();  // their keys are free: wake consumers sleeping for them
  }
  return acked;
}

AckStatus ConsumerCore::nack(const Delivery& d, std::uint64_t delay_ns) noexcept {
  if (!holds(d)) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  const std::uint64_t due_ms = now_ms() + ceil_ms(std::min<std::uint64_t>(delay_ns, (kMaxLeaseMs - 1) * kNsPerMs));
  if (lf.attempt >= max_deliveries_) return nack_final(d, due_ms);
  lf.state = kLeaseDue;
  lf.deadline_ms = due_ms;
  const AckStatus st = finish(d, make_lease(lf));
  if (st != AckStatus::ok) return st;
  g_->nacked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->nacked, 1);
  if (delay_ns == 0) {
    last_scan_ns_ = 0;             // due now: look at once
    if (ordered_) wake_ordered();  // per_key: a sleeper may take the retry now
  }
  return AckStatus::ok;
}

AckStatus ConsumerCore::nack_final(const Delivery& d, std::uint64_t due_ms) noexcept {
  // The last allowed attempt failed: no retry can follow, so the message
  // goes to the DLQ now, within this call (G4f: leased -> dead-lettering,
  // one CAS, then the copy and G9), not one backoff later on somebody's
  // receive. A consumer killed after the CAS leaves a dead-lettering lease
  // whose deadline (or dead owner) lets anybody finish it.
  std::uint64_t held = 0;
  const AckStatus st = begin_dead_letter(d, held);
  if (st != AckStatus::ok) return st;
  g_->nacked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->nacked, 1);
  const AckStatus sent = send_to_dlq(d.sequence, held, DeadLetterReason::max_deliveries);
  if (ordered_) wake_ordered();  // dead-lettered: its key flows again
  if (sent != AckStatus::dlq_unavailable) return sent;
  // The DLQ cannot take it now: it stays due for the DLQ (G4r: one CAS back
  // to due, attempt kept), retried after the nack's delay by any receive or
  // dead_letter_due, and counted as due for the DLQ meanwhile.
  LeaseFields lf = lease_fields(held);
  lf.state = kLeaseDue;
  lf.deadline_ms = due_ms;
  std::uint64_t w = held;
  (void)shm::cas_acq_rel(leases_[d.sequence & mask_], w, make_lease(lf));
  return AckStatus::dlq_unavailable;
}

AckStatus ConsumerCore::nack_with_backoff(const Delivery& d) noexcept {
  return nack(d, backoff_ns(lease_fields(d.lease).attempt));
}

AckStatus ConsumerCore::extend(Delivery& d, std::uint64_t visibility_ns) noexcept {
  if (!holds(d)) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  const std::uint64_t now = shm::monotonic_ns();
  const std::uint64_t vis = std::min<std::uint64_t>(visibility_ns, (kMaxLeaseMs - 1) * kNsPerMs);
  lf.deadline_ms = now / kNsPerMs + ceil_ms(vis);
  const std::uint64_t word = make_lease(lf);
  const AckStatus st = finish(d, word);
  if (st != AckStatus::ok) return st;
  d.lease = word;
  d.deadline_ns = now + vis;
  return AckStatus::ok;
}

AckStatus ConsumerCore::dead_letter(const Delivery& d) noexcept {
  if (!holds(d)) return AckStatus::invalid;
  std::uint64_t held = 0;
  const AckStatus st = begin_dead_letter(d, held);
  if (st != AckStatus::ok) return st;
  const AckStatus sent = send_to_dlq(d.sequence, held, DeadLetterReason::rejected);
  if (ordered_) wake_ordered();  // dead-lettered: its key flows again
  return sent;
}

AckStatus ConsumerCore::begin_dead_letter(const Delivery& d, std::uint64_t& held) noexcept {
  LeaseFields lf = lease_fields(d.lease);
  lf.state = kLeaseDeadLettering;
  lf.deadline_ms = now_ms() + ceil_ms(visibility_ns_);
  held = make_lease(lf);
  return finish(d, held);
}

AckStatus ConsumerCore::send_to_dlq(std::uint64_t seq, std::uint64_t held, DeadLetterReason reason) noexcept {
  if (!dlq_pub_) {
    auto p = PublisherCore::create(dlq_ch_);
    if (!p) {
      // The lease stays as it is: dead-lettering until its deadline (then
      // the scan tries again), or due again after a final nack.
      g_->dlq_failures.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      return AckStatus::dlq_unavailable;
    }
    dlq_pub_ = std::move(p.value());
  }
  return copy_to_dlq(view(), *dlq_pub_, seq, held, reason);
}

}  // namespace shmbus::bus
