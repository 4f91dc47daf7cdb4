#include "bus/group/group_core.hpp"
#include "bus/common/util.hpp"

#include <algorithm>
#include <cstring>

#include "bus/common/settings_check.hpp"
#include "bus/ring/slots.hpp"
#include "bus/ring/subscriber_core.hpp"
#include "bus/ring/tables.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"
#include "shm/liveness.hpp"

namespace shmbus::bus {

namespace {

constexpr std::uint64_t kOwnerCacheNs = 5'000'000;


Error invalid(const std::string& msg) { return Error(ErrorCode::invalid_argument, msg); }

// Makes every lease that consumer `owner` of group `gi` holds due now, so the
// others take it at once. Done before the consumer's entry (and index) is
// freed, so a later consumer at that index is never taken for their owner.
void release_leases_of(const ChannelState& ch, std::uint32_t gi, std::uint32_t owner) noexcept {
  const GroupEntry& g = *ch.group(gi);
  std::atomic<std::uint64_t>* leases = ch.leases(gi);
  const std::uint64_t mask = ch.geo.capacity - 1;
  const std::uint32_t shift = static_cast<std::uint32_t>(__builtin_ctzll(ch.geo.capacity));
  const std::uint64_t nms = now_ms();
  const std::uint64_t f = shm::load_acquire(g.floor);
  const std::uint64_t nx = shm::load_acquire(g.next);
  for (std::uint64_t s = f; s < nx && s - f <= mask; ++s) {
    std::uint64_t w = shm::load_acquire(leases[s & mask]);
    LeaseFields lf = lease_fields(w);
    if ((lf.state == kLeaseLeased || lf.state == kLeaseDeadLettering) && lf.owner == owner &&
        lf.lap == ((s >> shift) & 0xffffu)) {
      lf.state = kLeaseDue;
      lf.deadline_ms = nms;
      (void)shm::cas_acq_rel(leases[s & mask], w, make_lease(lf));
    }
  }
}

// Frees consumer entry k of group gi, which a caller judged dead while it held
// control word `seen`: reserve it (so nobody joins at this index meanwhile),
// make its leases due, then free it. Nothing happens if the entry changed.
bool release_consumer(const ChannelState& ch, std::uint32_t gi, std::uint32_t k, std::uint64_t seen) noexcept {
  ConsumerEntry& e = ch.consumers(gi)[k];
  std::uint64_t c = seen;
  if (!shm::cas_acq_rel(e.control, c, make_control(kEntryClaiming, shm::self_process().pid))) return false;
  if (control_state(seen) == kEntryActive) release_leases_of(ch, gi, k);
  shm::store_release(e.control, make_control(kEntryFree, 0));
  ch.group(gi)->dead_consumer_releases.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return true;
}

// Frees every consumer entry of group gi whose process is gone; how many.
std::uint32_t release_dead_consumers(const ChannelState& ch, std::uint32_t gi) noexcept {
  const ConsumerEntry* cons = ch.consumers(gi);
  std::uint32_t n = 0;
  for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
    const std::uint64_t c = shm::load_acquire(cons[k].control);
    const std::uint32_t st = control_state(c);
    if (st != kEntryActive && st != kEntryClaiming) continue;
    const shm::ProcessId id{control_pid(c), st == kEntryActive ? shm::load_relaxed(cons[k].owner_start) : 0};
    if (shm::process_liveness(id) == shm::Liveness::dead && release_consumer(ch, gi, k, c)) ++n;
  }
  return n;
}

// One group's shared words, as the functions below (used by consumers and
// by dead_letter_due alike) need them.
struct GroupView {
  const ChannelState* ch;
  GroupEntry* g;
  std::atomic<std::uint64_t>* leases;
  std::uint64_t mask;
  std::uint32_t shift;
  [[nodiscard]] std::uint32_t lap(std::uint64_t seq) const noexcept {
    return static_cast<std::uint32_t>((seq >> shift) & 0xffffu);
  }
};

GroupView group_view(const ChannelState& ch, std::uint32_t gi) noexcept {
  return {&ch, ch.group(gi), ch.leases(gi), ch.geo.capacity - 1,
          static_cast<std::uint32_t>(__builtin_ctzll(ch.geo.capacity))};
}

// Moves the group's floor over every finished (or overwritten) sequence.
void advance_floor_of(const GroupView& v) noexcept {
  GroupEntry& g = *v.g;
  std::uint64_t f = shm::load_acquire(g.floor);
  const std::uint64_t nx = shm::load_acquire(g.next);
  const std::uint64_t head = shm::load_acquire(v.ch->producer->head);
  bool moved = false;
  // Whether sequence s is finished for the group.
  const auto finished = [&](std::uint64_t s) {
    const std::uint64_t w = shm::load_acquire(v.leases[s & v.mask]);
    const LeaseFields lf = lease_fields(w);
    return w != 0 && lease_final(lf.state) && lf.lap == v.lap(s);
  };
  while (f < nx) {
    std::uint64_t to = f;
    if (f + v.mask + 1 < head) {
      // Overwritten: sequence f + capacity was claimed, which on a
      // drop_oldest channel reuses f's slot. (On block and reject channels
      // the floor itself holds that claim back, so this never skips a live
      // lease.) Every sequence below head - capacity has had its slot
      // reused: pass them all in one step (one CAS each would make a group
      // that fell far behind, or a corrupted floor, walk billions).
      to = std::min(nx, head - (v.mask + 1));
    } else {
      // The run of finished sequences from f (at most a ring), in one CAS.
      while (to < nx && to - f <= v.mask && finished(to)) ++to;
    }
    if (to == f) break;
    // SYNC(floor): seq_cst, read by gating_minimum (acquire) before a
    // publisher overwrites the slot; then the sleep-flag check.
    if (g.floor.compare_exchange_weak(f, to, std::memory_order_seq_cst, std::memory_order_acquire)) {
      f = to;
      moved = true;
    }
  }
  if (moved) shm::wake_sleepers(v.ch->producer->pub_sleeping, v.ch->producer->pub_futex);
}

// Copies message `seq`, which the caller holds with the dead-lettering lease
// word `held`, to the DLQ through `pub`, then marks it dead-lettered (G9).
// dlq_unavailable (counted in dlq_failures) if the DLQ cannot take it now:
// the lease is left as it is, for the caller to decide.
AckStatus copy_to_dlq(const GroupView& v, PublisherCore& pub, std::uint64_t seq, std::uint64_t held,
                      DeadLetterReason reason, bool* marked = nullptr) noexcept {
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
  std::uint64_t w = held;
  LeaseFields lf = lease_fields(held);
  // The slot no longer holds the message (overwritten, drop_oldest) or is
  // impossible: nothing sound to keep. Ends the lease as lost, counted.
  auto mark_lost = [&]() {
    lf.state = kLeaseLost;
    if (shm::cas_acq_rel(v.leases[seq & v.mask], w, make_lease(lf))) {
      g.lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      advance_floor_of(v);
    }
    return AckStatus::ok;
  };
  if (length > ch.geo.max_payload) {
    std::atomic_thread_fence(std::memory_order_acquire);
    return mark_lost();
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
    return mark_lost();
  }
  MessageMeta meta;
  meta.key = hdr.key;
  meta.correlation_id = hdr.correlation_id;
  meta.type = hdr.type;
  meta.timestamp_ns = rec.original_timestamp_ns;
  if (pub.commit(claim, sizeof rec + length, meta, lf.attempt) != PublishStatus::ok) return fail();
  // Copied: the message is done for the group. If our lease was taken
  // meanwhile (we were slower than its deadline), the DLQ may get it twice:
  // dead-lettering is at-least-once too.
  lf.state = kLeaseDeadLettered;
  lf.deadline_ms = 0;
  if (shm::cas_acq_rel(v.leases[seq & v.mask], w, make_lease(lf))) {
    g.dead_lettered.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    if (marked != nullptr) *marked = true;
    advance_floor_of(v);
  }
  return AckStatus::ok;
}

// Opens (creating if needed) a group's DLQ channel, with the durable
// subscriber that retains its dead letters until they are redriven.
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

Result<void> check_group_options(const GroupOptions& o) {
  if (o.visibility_timeout_ns < kNsPerMs || o.visibility_timeout_ns >= kMaxLeaseMs * kNsPerMs) {
    return invalid("visibility_timeout_ns " + num(o.visibility_timeout_ns) +
                   " must be at least 1 ms and under 3 days");
  }
  if (o.max_deliveries < 1 || o.max_deliveries > kMaxAttempts) {
    return invalid("max_deliveries " + num(o.max_deliveries) + " must be in 1.." + num(kMaxAttempts));
  }
  if (o.backoff_cap_ns >= kMaxLeaseMs * kNsPerMs || o.backoff_base_ns > o.backoff_cap_ns) {
    return invalid("backoff_base_ns " + num(o.backoff_base_ns) + " must not exceed backoff_cap_ns " +
                   num(o.backoff_cap_ns) + ", which must be under 3 days");
  }
  if (o.jitter_permille > 1000) {
    return invalid("jitter_permille " + num(o.jitter_permille) + " must be in 0..1000");
  }
  return {};
}

// The settings stored in a group entry, compared with the options of a joiner.
Result<void> check_same_settings(const GroupEntry& g, const GroupOptions& o, const std::string& dlq,
                                 std::string_view name) {
  const SettingCheck checks[] = {
      {"visibility_timeout_ns", g.visibility_timeout_ns, o.visibility_timeout_ns},
      {"max_deliveries", g.max_deliveries, o.max_deliveries},
      {"backoff_base_ns", g.backoff_base_ns, o.backoff_base_ns},
      {"backoff_cap_ns", g.backoff_cap_ns, o.backoff_cap_ns},
      {"jitter_permille", g.jitter_permille, o.jitter_permille},
  };
  if (auto r = check_settings("group '" + std::string(name) + "'", checks); !r) return r;
  const std::string have_dlq = read_name(g.dlq);
  if (have_dlq != dlq) {
    return Error(ErrorCode::parameter_mismatch, "group '" + std::string(name) + "' exists with dlq '" +
                                                    have_dlq + "'; asked for '" + dlq + "'");
  }
  return {};
}

// Finds or creates group `name`; returns its index.
Result<std::uint32_t> find_or_create_group(ChannelState& ch, std::string_view name,
                                           const GroupOptions& o, const std::string& dlq) {
  const shm::ProcessId me = shm::self_process();
  auto same_name = [&](std::uint32_t j) {
    const GroupEntry& other = *ch.group(j);
    return control_state(other.control.load(std::memory_order_seq_cst)) != kEntryFree &&
           read_name(other.name) == name;
  };
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (attempt > 0) shm::sleep_ns(1000ULL << std::min(attempt, 10));
    const int found = find_group(ch, name);
    if (found >= 0) {
      const GroupEntry& g = *ch.group(static_cast<std::uint32_t>(found));
      if (auto r = check_same_settings(g, o, dlq, name); !r) return r.error();
      return static_cast<std::uint32_t>(found);
    }
    bool retry = false;
    bool full = true;
    for (std::uint32_t i = 0; i < ch.geo.max_groups && !retry; ++i) {
      GroupEntry& g = *ch.group(i);
      std::uint64_t c = shm::load_acquire(g.control);
      if (control_state(c) == kEntryClaiming && shm::process_liveness({control_pid(c), 0}) ==
                                                    shm::Liveness::dead) {
        // A creator died half-way: the entry is free again.
        (void)shm::cas_acq_rel(g.control, c, make_control(kEntryFree, 0));
        c = make_control(kEntryFree, 0);
      }
      if (control_state(c) != kEntryFree) {
        if (control_state(c) == kEntryClaiming) full = false;  // may become free
        continue;
      }
      const std::uint64_t held = make_control(kEntryClaiming, me.pid);
      if (!shm::cas_acq_rel(g.control, c, held)) {
        retry = true;
        break;
      }
      full = false;
      g.visibility_timeout_ns = o.visibility_timeout_ns;
      g.backoff_base_ns = o.backoff_base_ns;
      g.backoff_cap_ns = o.backoff_cap_ns;
      g.max_deliveries = o.max_deliveries;
      g.jitter_permille = o.jitter_permille;
      g.created_realtime_ns = shm::realtime_ns();
      write_name(g.dlq, dlq);
      // relaxed: published by the CAS to active below.
      for (auto* ctr : {&g.delivered, &g.acked, &g.redelivered, &g.dead_lettered, &g.nacked,
                        &g.expired, &g.lost, &g.dlq_failures, &g.dead_consumer_releases}) {
        shm::store_relaxed(*ctr, std::uint64_t{0});
      }
      ConsumerEntry* cons = ch.consumers(i);
      for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
        shm::store_relaxed(cons[k].control, std::uint64_t{0});
      }
      std::uint64_t start_lost = 0;
      const std::uint64_t start = start_position(ch, o.start, &start_lost);
      // Started at a time older than the ring: what may have been published
      // since then and was overwritten is lost to the group, as in a lap.
      shm::store_relaxed(g.lost, start_lost);  // relaxed: published by the CAS to active below
      shm::store_relaxed(g.next, start);
      shm::store_relaxed(g.floor, start);
      // Announce the name (the fence orders it before our look at the
      // others), then settle a race with a concurrent creator.
      write_name(g.name, name);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      const bool back_off = lose_name_race(i, ch.geo.max_groups, same_name, [&](std::uint32_t j) {
        return control_state(shm::load_acquire(ch.group(j)->control)) == kEntryClaiming;
      });
      std::uint64_t mine = held;
      if (back_off) {
        (void)shm::cas_acq_rel(g.control, mine, make_control(kEntryFree, 0));
        retry = true;
        break;
      }
      // seq_cst: the floor gates publishers from now on.
      if (!g.control.compare_exchange_strong(mine, make_control(kEntryActive, 0),
                                             std::memory_order_seq_cst)) {
        retry = true;
        break;
      }
      return i;
    }
    if (!retry && full) break;
  }
  return Error(ErrorCode::table_full, "channel '" + ch.name + "' has all " + num(ch.geo.max_groups) +
                                          " group entries in use (raise max_groups when creating it)");
}

Result<std::uint32_t> join_consumer(ChannelState& ch, std::uint32_t gi, std::uint64_t& control) {
  const shm::ProcessId me = shm::self_process();
  ConsumerEntry* cons = ch.consumers(gi);
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
      ConsumerEntry& e = cons[k];
      std::uint64_t c = shm::load_acquire(e.control);
      if (control_state(c) != kEntryFree) continue;
      const std::uint64_t held = make_control(kEntryClaiming, me.pid);
      if (!shm::cas_acq_rel(e.control, c, held)) continue;
      shm::store_relaxed(e.owner_start, me.start_time);
      // relaxed: statistics, published by the CAS below.
      shm::store_relaxed(e.delivered, std::uint64_t{0});
      shm::store_relaxed(e.acked, std::uint64_t{0});
      shm::store_relaxed(e.nacked, std::uint64_t{0});
      shm::store_relaxed(e.joined_realtime_ns, shm::realtime_ns());
      std::uint64_t mine = held;
      control = make_control(kEntryActive, me.pid);
      if (shm::cas_acq_rel(e.control, mine, control)) return k;
    }
    if (pass == 0) {
      // Full: free the entries of consumers whose processes are gone. Their
      // leases are redelivered when they expire (or at once, by the scan).
      (void)release_dead_consumers(ch, gi);
    }
  }
  return Error(ErrorCode::table_full, "group has all " + num(ch.geo.max_consumers) +
                                          " consumer entries in use on channel '" + ch.name +
                                          "' (raise max_consumers when creating it)");
}

}  // namespace

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

int find_group(const ChannelState& ch, std::string_view name) noexcept {
  for (std::uint32_t i = 0; i < ch.geo.max_groups; ++i) {
    const GroupEntry& g = *ch.group(i);
    if (control_state(shm::load_acquire(g.control)) == kEntryActive && read_name(g.name) == name) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

std::uint32_t reclaim_dead_consumers(ChannelState& ch) noexcept {
  if (ch.read_only()) return 0;
  std::uint32_t n = 0;
  for (std::uint32_t gi = 0; gi < ch.geo.max_groups; ++gi) {
    if (control_state(shm::load_acquire(ch.group(gi)->control)) != kEntryActive) continue;
    n += release_dead_consumers(ch, gi);
  }
  if (n != 0) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    shm::wake_sleepers(ch.producer->sub_sleeping, ch.producer->sub_futex);
  }
  return n;
}

Result<std::uint64_t> dead_letter_due(const std::shared_ptr<ChannelState>& chp) {
  ChannelState& ch = *chp;
  if (ch.read_only()) {
    return Error(ErrorCode::permission_denied, "channel '" + ch.name + "' is open read-only");
  }
  std::uint64_t moved = 0;
  for (std::uint32_t gi = 0; gi < ch.geo.max_groups; ++gi) {
    if (control_state(shm::load_acquire(ch.group(gi)->control)) != kEntryActive) continue;
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
      return shm::process_liveness({control_pid(c), shm::load_relaxed(cons[k].owner_start)}) ==
             shm::Liveness::dead;
    };
    std::shared_ptr<ChannelState> dlq_ch;
    std::unique_ptr<PublisherCore> pub;
    std::uint64_t f = shm::load_acquire(g.floor);
    const std::uint64_t nx = shm::load_acquire(g.next);
    if (nx > f && nx - f > v.mask + 1) f = nx - (v.mask + 1);
    for (std::uint64_t s = f; s < nx; ++s) {
      std::atomic<std::uint64_t>& lw = v.leases[s & v.mask];
      std::uint64_t w = shm::load_acquire(lw);
      const std::uint64_t nms = now_ms();
      if (!due_for_dlq(w, v.lap(s), max_deliveries, nms, owner_gone)) continue;
      if (!pub) {
        const std::string dlq = read_name(g.dlq);
        auto d = open_dlq(ch, dlq);
        if (!d) {
          return Error(d.error().code(), "DLQ '" + dlq + "' of group '" + read_name(g.name) +
                                             "' on channel '" + ch.name + "': " + d.error().message());
        }
        dlq_ch = std::move(d.value());
        auto p = PublisherCore::create(dlq_ch);
        if (!p) {
          return Error(p.error().code(), "DLQ '" + dlq + "' of group '" + read_name(g.name) +
                                             "' on channel '" + ch.name + "': " + p.error().message());
        }
        pub = std::move(p.value());
      }
      const LeaseFields lf = lease_fields(w);
      // G8x: taken for the DLQ by a mover that is no consumer: owner
      // kLeaseNoOwner, so only the deadline ends this lease if we die.
      const std::uint64_t held = make_lease(
          {kLeaseDeadLettering, lf.attempt, kLeaseNoOwner, lf.lap, nms + ceil_ms(visibility_ns)});
      if (!shm::cas_acq_rel(lw, w, held)) continue;  // somebody else moved it
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
  }
  return moved;
}

Result<void> remove_group(ChannelState& ch, std::string_view name) {
  if (ch.read_only()) {
    return Error(ErrorCode::permission_denied, "channel '" + ch.name + "' is open read-only");
  }
  const int gi = find_group(ch, name);
  if (gi < 0) return Error(ErrorCode::not_found, "channel '" + ch.name + "' has no group '" + std::string(name) + "'");
  GroupEntry& g = *ch.group(static_cast<std::uint32_t>(gi));
  const ConsumerEntry* cons = ch.consumers(static_cast<std::uint32_t>(gi));
  for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
    const std::uint64_t c = shm::load_acquire(cons[k].control);
    if (control_state(c) == kEntryFree) continue;
    const shm::ProcessId id{control_pid(c), shm::load_relaxed(cons[k].owner_start)};
    if (shm::process_liveness(id) != shm::Liveness::dead) {
      return Error(ErrorCode::busy, "group '" + std::string(name) + "' has a live consumer (pid " +
                                        num(control_pid(c)) + ")");
    }
  }
  std::uint64_t c = shm::load_acquire(g.control);
  if (!shm::cas_acq_rel(g.control, c, make_control(kEntryFree, 0))) {
    return Error(ErrorCode::busy, "group '" + std::string(name) + "' changed while removing it");
  }
  // Clear the leases so a group created later in this entry starts clean.
  std::atomic<std::uint64_t>* leases = ch.leases(static_cast<std::uint32_t>(gi));
  for (std::uint64_t s = 0; s < ch.geo.capacity; ++s) shm::store_relaxed(leases[s], std::uint64_t{0});
  std::atomic_thread_fence(std::memory_order_seq_cst);
  shm::wake_sleepers(ch.producer->pub_sleeping, ch.producer->pub_futex);
  return {};
}

Result<std::unique_ptr<GroupCore>> GroupCore::join(std::shared_ptr<ChannelState> ch,
                                                   std::string_view name, const GroupOptions& opts) {
  if (ch->read_only()) {
    return Error(ErrorCode::permission_denied, "channel '" + ch->name + "' is open read-only");
  }
  if (auto r = validate_name("group", name); !r) return r.error();
  if (auto r = check_group_options(opts); !r) return r.error();
  if (ch->geo.max_groups == 0) {
    return invalid("channel '" + ch->name + "' was created with max_groups 0");
  }
  const std::string dlq = dlq_channel_name(ch->name, opts);
  if (auto r = validate_name("dlq channel", dlq); !r) return r.error();
  if (dlq == ch->name) return invalid("group '" + std::string(name) + "' cannot use its own channel as DLQ");

  // The DLQ exists before any message can need it, with a durable cursor
  // that retains dead letters until they are redriven.
  auto dlq_ch = open_dlq(*ch, dlq);
  if (!dlq_ch) {
    return Error(dlq_ch.error().code(), "DLQ of group '" + std::string(name) + "': " + dlq_ch.error().message());
  }

  auto gi = find_or_create_group(*ch, name, opts, dlq);
  if (!gi) return gi.error();
  std::uint64_t control = 0;
  auto ci = join_consumer(*ch, gi.value(), control);
  if (!ci) return ci.error();

  auto owned = std::make_unique<GroupCore>();
  GroupCore& c = *owned;
  c.g_ = ch->group(gi.value());
  c.consumers_ = ch->consumers(gi.value());
  c.me_ = &c.consumers_[ci.value()];
  c.leases_ = ch->leases(gi.value());
  c.gi_ = gi.value();
  c.ci_ = ci.value();
  c.control_ = control;
  c.mask_ = ch->geo.capacity - 1;
  c.lap_shift_ = static_cast<std::uint32_t>(__builtin_ctzll(ch->geo.capacity));
  c.visibility_ns_ = c.g_->visibility_timeout_ns;
  c.max_deliveries_ = c.g_->max_deliveries;
  c.backoff_base_ns_ = c.g_->backoff_base_ns;
  c.backoff_cap_ns_ = c.g_->backoff_cap_ns;
  c.jitter_permille_ = c.g_->jitter_permille;
  c.wait_ = opts.wait;
  c.dlq_name_ = dlq;
  c.dlq_ch_ = std::move(dlq_ch.value());
  // Redeliveries are looked for at least 4 times per visibility timeout.
  c.scan_every_ns_ = std::clamp<std::uint64_t>(c.visibility_ns_ / 4, 100'000, 10'000'000);
  c.rng_ = shm::random_u64() | 1;
  c.owner_cache_.assign(ch->geo.max_consumers, OwnerSeen{});
  c.ch_ = std::move(ch);
  return owned;
}

GroupCore::~GroupCore() { release(); }

void GroupCore::release() noexcept {
  if (!ch_) return;
  if (control_pid(control_) == shm::self_process().pid) {
    // Leaving: what we still hold becomes due at once for the others.
    release_leases_of(*ch_, gi_, ci_);
    std::uint64_t c = control_;
    (void)shm::cas_acq_rel(me_->control, c, make_control(kEntryFree, 0));
  }
  dlq_pub_.reset();
  ch_.reset();
}

bool GroupCore::available_for(std::uint64_t seq, std::uint64_t word) const noexcept {
  if (word == 0) return true;  // never used
  const LeaseFields lf = lease_fields(word);
  return lease_final(lf.state) && lf.lap != lap(seq);  // an earlier lap, finished
}

std::uint64_t GroupCore::backoff_ns(std::uint32_t attempt) noexcept {
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

void GroupCore::advance_floor() noexcept {
  advance_floor_of({ch_.get(), g_, leases_, mask_, lap_shift_});
}

bool GroupCore::owner_dead(std::uint32_t owner) noexcept {
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
    seen.dead = shm::process_liveness({control_pid(c), shm::load_relaxed(e.owner_start)}) ==
                shm::Liveness::dead;
    if (seen.dead) (void)release_consumer(*ch_, gi_, owner, c);
  }
  return seen.dead;
}

bool GroupCore::deliver(std::uint64_t seq, std::uint64_t lease, Delivery& out,
                        std::span<std::byte> buffer, PollStatus& st) noexcept {
  const ChannelState& ch = *ch_;
  const std::uint64_t want = make_stamp(seq, kStampCommitted);
  const std::byte* slot = slot_at(ch.data, seq, mask_, ch.geo.slot_size);
  const SlotMeta hdr = read_meta(slot);
  const std::uint32_t length = size_length(hdr.size);
  const LeaseFields lf = lease_fields(lease);
  auto give_up = [&](std::uint64_t state, PollStatus why) {
    // The message is gone (overwritten) or impossible: the group loses it.
    std::uint64_t w = lease;
    LeaseFields done = lf;
    done.state = state;
    if (shm::cas_acq_rel(leases_[seq & mask_], w, make_lease(done))) {
      g_->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      advance_floor();
    }
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
  if (shm::load_relaxed(slot_header(slot).stamp) != want) return give_up(kLeaseLost, PollStatus::lapped);
  if (!intact) return give_up(kLeaseLost, PollStatus::corrupted);
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

void GroupCore::help_advance_next(std::uint64_t n) noexcept {
  // Moves `next` past n if nobody has yet. A copy: a failed CAS must not
  // change the caller's n (it still names the sequence it holds a lease on).
  std::uint64_t expected = n;
  (void)g_->next.compare_exchange_strong(expected, n + 1, std::memory_order_acq_rel);
}

bool GroupCore::take_new(Delivery& out, std::span<std::byte> buffer, PollStatus& st,
                         std::uint64_t now) noexcept {
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
      const std::uint64_t lease = make_lease(
          {kLeaseLeased, 1, ci_, lap(n), now / kNsPerMs + ceil_ms(visibility_ns_)});
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
    if (stamp_state(stamp) != kStampEmpty && stamp_seq(stamp) == n &&
        stamp_state(stamp) == kStampAbandoned) {
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
      if (g_->next.compare_exchange_strong(expected, to, std::memory_order_acq_rel)) {
        g_->lost.fetch_add(to - n, std::memory_order_relaxed);  // relaxed: a statistic
        advance_floor();
      }
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

bool GroupCore::take_due(Delivery& out, std::span<std::byte> buffer, PollStatus& st,
                         std::uint64_t now) noexcept {
  if (now - last_scan_ns_ < scan_every_ns_) return false;
  last_scan_ns_ = now;
  // A consumer killed between its ack and its floor advance leaves the floor
  // behind: every scan moves it over what is finished.
  advance_floor();
  const std::uint64_t nms = now / kNsPerMs;
  std::uint64_t f = shm::load_acquire(g_->floor);
  const std::uint64_t nx = shm::load_acquire(g_->next);
  if (nx > f && nx - f > mask_ + 1) f = nx - (mask_ + 1);
  for (std::uint64_t s = f; s < nx; ++s) {
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
      const std::uint64_t held = make_lease(
          {kLeaseDeadLettering, cur.attempt, ci_, lap(s), nms + ceil_ms(visibility_ns_)});
      if (!shm::cas_acq_rel(lw, w, held)) continue;
      if (cur.state == kLeaseLeased) g_->expired.fetch_add(1, std::memory_order_relaxed);
      (void)send_to_dlq(s, held, DeadLetterReason::max_deliveries);
      continue;
    }
    const std::uint64_t lease = make_lease(
        {kLeaseLeased, cur.attempt + 1, ci_, lap(s), nms + ceil_ms(visibility_ns_)});
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

PollStatus GroupCore::receive(Delivery& out, std::span<std::byte> buffer) noexcept {
  if (!ch_) return PollStatus::invalid;
  return receive_at(out, buffer, shm::monotonic_ns());  // one clock read per receive
}

std::size_t GroupCore::receive_batch(std::span<Delivery> out, std::span<std::byte> arena,
                                     PollStatus* last) noexcept {
  std::size_t n = 0;
  std::size_t used = 0;
  PollStatus st = ch_ ? PollStatus::ok : PollStatus::invalid;
  if (ch_) {
    // One clock read and one update of the group's delivered counter for
    // the batch (deliver counts into batch_delivered_ meanwhile).
    const std::uint64_t now = shm::monotonic_ns();
    batching_ = true;
    while (n < out.size() && used <= arena.size()) {
      st = receive_at(out[n], arena.subspan(used), now);
      if (st != PollStatus::ok) break;
      used += out[n].message.payload.size();
      ++n;
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

PollStatus GroupCore::receive_at(Delivery& out, std::span<std::byte> buffer, std::uint64_t now) noexcept {
  PollStatus st = PollStatus::empty;
  // Due redeliveries first (they are older), at most every scan interval.
  if (take_due(out, buffer, st, now)) return st;
  if (take_new(out, buffer, st, now)) return st;
  // relaxed: a flag that carries no data (see SubscriberCore::begin_read).
  if (const std::uint64_t r = ch_->removed_fast(); r != kChannelLive) return poll_status_of_removed(r);
  return PollStatus::empty;
}

PollStatus GroupCore::receive_wait(Delivery& out, std::span<std::byte> buffer,
                                   std::uint64_t timeout_ns) noexcept {
  if (!ch_) return PollStatus::invalid;
  const std::uint64_t start = shm::monotonic_ns();
  const std::uint64_t deadline = deadline_after(start, timeout_ns);
  ProducerBlock& prod = *ch_->producer;
  std::uint64_t sleep_ns = 1000;
  std::uint64_t last_gone_check = start;
  for (int round = 0;; ++round) {
    const PollStatus st = receive(out, buffer);
    if (st != PollStatus::empty) return st;
    const std::uint64_t now = shm::monotonic_ns();
    if (now >= deadline) return PollStatus::timeout;
    if (now - last_gone_check >= 5'000'000) {  // the fstat behind check_removed, every 5 ms
      last_gone_check = now;
      if (const std::uint64_t r = ch_->check_removed(); r != kChannelLive) return poll_status_of_removed(r);
    }
    if (round < 1000 || wait_ == WaitStrategy::busy_spin) {
      shm::cpu_relax();
      continue;
    }
    // Sleep until a commit, or the next redelivery scan.
    const std::uint64_t slice = std::min(deadline - now, scan_every_ns_);
    switch (wait_) {
      case WaitStrategy::yield: shm::yield_cpu(); break;
      case WaitStrategy::backoff:
        shm::sleep_ns(std::min(sleep_ns, slice));
        sleep_ns = std::min<std::uint64_t>(sleep_ns * 2, 1'000'000);
        break;
      default: {
        // SYNC(sleep-flag): as in SubscriberCore::wait.
        const std::uint32_t seen = shm::announce_sleep(prod.sub_sleeping, prod.sub_futex);
        const std::uint64_t n = shm::load_acquire(g_->next);
        const std::uint64_t s = ch_->slot(n)->stamp.load(std::memory_order_seq_cst);
        if (stamp_state(s) != kStampEmpty && stamp_seq(s) >= n && stamp_state(s) != kStampWriting) break;
        (void)shm::futex_wait(&prod.sub_futex, seen, slice);
        last_scan_ns_ = 0;  // a timed-out sleep is a good moment to look for redeliveries
        break;
      }
    }
  }
}

AckStatus GroupCore::finish(const Delivery& d, std::uint64_t next_word) noexcept {
  std::uint64_t expected = d.lease;
  // acq_rel: the ack is ordered after the consumer's processing; the floor
  // advance that follows reads it with acquire.
  if (!shm::cas_acq_rel(leases_[d.sequence & mask_], expected, next_word)) return AckStatus::lease_lost;
  return AckStatus::ok;
}

AckStatus GroupCore::end_lease_acked(const Delivery& d) noexcept {
  if (!ch_ || d.group != gi_) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  if (lf.state != kLeaseLeased || lf.owner != ci_ || lf.lap != lap(d.sequence)) return AckStatus::invalid;
  lf.state = kLeaseAcked;
  lf.deadline_ms = 0;
  return finish(d, make_lease(lf));
}

AckStatus GroupCore::ack(const Delivery& d) noexcept {
  const AckStatus st = end_lease_acked(d);
  if (st != AckStatus::ok) return st;
  g_->acked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->acked, 1);
  advance_floor();
  return AckStatus::ok;
}

std::size_t GroupCore::ack_batch(std::span<const Delivery> ds) noexcept {
  std::uint64_t acked = 0;
  for (const Delivery& d : ds) acked += end_lease_acked(d) == AckStatus::ok;
  if (acked == 0) return 0;
  // One counter update and one floor advance (a CAS over the whole run of
  // finished sequences) for the batch.
  g_->acked.fetch_add(acked, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->acked, acked);
  advance_floor();
  return acked;
}

AckStatus GroupCore::nack(const Delivery& d, std::uint64_t delay_ns) noexcept {
  if (!ch_ || d.group != gi_) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  if (lf.state != kLeaseLeased || lf.owner != ci_ || lf.lap != lap(d.sequence)) return AckStatus::invalid;
  const std::uint64_t due_ms =
      now_ms() + ceil_ms(std::min<std::uint64_t>(delay_ns, (kMaxLeaseMs - 1) * kNsPerMs));
  if (lf.attempt >= max_deliveries_) return nack_final(d, due_ms);
  lf.state = kLeaseDue;
  lf.deadline_ms = due_ms;
  const AckStatus st = finish(d, make_lease(lf));
  if (st != AckStatus::ok) return st;
  g_->nacked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->nacked, 1);
  if (delay_ns == 0) last_scan_ns_ = 0;  // due now: look at once
  return AckStatus::ok;
}

AckStatus GroupCore::nack_final(const Delivery& d, std::uint64_t due_ms) noexcept {
  // The last allowed attempt failed: no retry can follow, so the message
  // goes to the DLQ now, within this call (G4f: leased -> dead-lettering,
  // one CAS, then the copy and G9), not one backoff later on somebody's
  // receive. A consumer killed after the CAS leaves a dead-lettering lease
  // whose deadline (or dead owner) lets anybody finish it.
  LeaseFields lf = lease_fields(d.lease);
  lf.state = kLeaseDeadLettering;
  lf.deadline_ms = now_ms() + ceil_ms(visibility_ns_);
  const std::uint64_t held = make_lease(lf);
  const AckStatus st = finish(d, held);
  if (st != AckStatus::ok) return st;
  g_->nacked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  shm::single_writer_add(me_->nacked, 1);
  const AckStatus sent = send_to_dlq(d.sequence, held, DeadLetterReason::max_deliveries);
  if (sent != AckStatus::dlq_unavailable) return sent;
  // The DLQ cannot take it now: it stays due for the DLQ (G4r: one CAS back
  // to due, attempt kept), retried after the nack's delay by any receive or
  // dead_letter_due, and counted as due for the DLQ meanwhile.
  lf.state = kLeaseDue;
  lf.deadline_ms = due_ms;
  std::uint64_t w = held;
  (void)shm::cas_acq_rel(leases_[d.sequence & mask_], w, make_lease(lf));
  return AckStatus::dlq_unavailable;
}

AckStatus GroupCore::nack_with_backoff(const Delivery& d) noexcept {
  return nack(d, backoff_ns(lease_fields(d.lease).attempt));
}

AckStatus GroupCore::extend(Delivery& d, std::uint64_t visibility_ns) noexcept {
  if (!ch_ || d.group != gi_) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  if (lf.state != kLeaseLeased || lf.owner != ci_ || lf.lap != lap(d.sequence)) return AckStatus::invalid;
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

AckStatus GroupCore::dead_letter(const Delivery& d) noexcept {
  if (!ch_ || d.group != gi_) return AckStatus::invalid;
  LeaseFields lf = lease_fields(d.lease);
  if (lf.state != kLeaseLeased || lf.owner != ci_ || lf.lap != lap(d.sequence)) return AckStatus::invalid;
  lf.state = kLeaseDeadLettering;
  lf.deadline_ms = now_ms() + ceil_ms(visibility_ns_);
  const std::uint64_t held = make_lease(lf);
  const AckStatus st = finish(d, held);
  if (st != AckStatus::ok) return st;
  return send_to_dlq(d.sequence, held, DeadLetterReason::rejected);
}

AckStatus GroupCore::send_to_dlq(std::uint64_t seq, std::uint64_t held,
                                 DeadLetterReason reason) noexcept {
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
  return copy_to_dlq({ch_.get(), g_, leases_, mask_, lap_shift_}, *dlq_pub_, seq, held, reason);
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
    meta.correlation_id = m.correlation_id;
    meta.type = m.type;
    const PublishStatus ps =
        pub.value()->publish(std::span<const std::byte>(m.payload.data() + sizeof rec, len), meta,
                             1'000'000'000ULL);
    if (ps != PublishStatus::ok) {
      reader.seek(m.sequence);  // not redriven: keep it in the DLQ
      return Error(ErrorCode::busy, "redrive to channel '" + source->name + "' stopped after " +
                                        num(n) + " messages: publish returned " +
                                        std::string(to_string(ps)));
    }
    reader.publish_cursor();
    ++n;
  }
  return n;
}

}  // namespace shmbus::bus
