// One group's shared words, and the two moves on them that every part of
// bus/group makes: advancing the floor over finished sequences, and ending
// a lease whose message is gone as lost. Consumers (consumer_core.cpp), the DLQ
// mover (dlq.cpp) and the stats all see a group through these. Inline: the
// floor advance is on the ack path.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "shm/atomics.hpp"
#include "shm/futex.hpp"

namespace shmbus::bus {

/// The lap that a lease word records for sequence `seq`: the low 16 bits of
/// seq / capacity, with `shift` = log2(capacity) (lap_shift_of).
inline constexpr std::uint32_t lap_of(std::uint64_t seq, std::uint32_t shift) noexcept {
  return static_cast<std::uint32_t>((seq >> shift) & 0xffffu);
}

/// log2 of a ring capacity (a power of two).
inline std::uint32_t lap_shift_of(std::uint64_t capacity) noexcept {
  return static_cast<std::uint32_t>(__builtin_ctzll(capacity));
}

/// One group's shared words, as a consumer or a mover outside the group
/// needs them. A view: the channel state outlives it.
struct GroupView {
  const ChannelState* ch;
  GroupEntry* g;
  std::atomic<std::uint64_t>* leases;
  std::uint64_t mask;   ///< capacity - 1
  std::uint32_t shift;  ///< log2(capacity): a sequence's lap is (seq >> shift) & 0xffff
  [[nodiscard]] std::uint32_t lap(std::uint64_t seq) const noexcept { return lap_of(seq, shift); }
};

/// The view of group `gi` of `ch`.
inline GroupView group_view(const ChannelState& ch, std::uint32_t gi) noexcept {
  return {&ch, ch.group(gi), ch.leases(gi), ch.geo.capacity - 1, lap_shift_of(ch.geo.capacity)};
}

/// The sequences [first, end) whose lease words a scan looks at: from the
/// floor to `next`, but at most one ring (the last `capacity` sequences
/// before `next`), since a slot's lease word belongs to its latest lap.
struct ScanRange {
  std::uint64_t first;
  std::uint64_t end;
};

/// The group's scan range now. Thread-safe.
inline ScanRange scan_range(const GroupView& v) noexcept {
  std::uint64_t f = shm::load_acquire(v.g->floor);
  const std::uint64_t nx = shm::load_acquire(v.g->next);
  if (nx > f && nx - f > v.mask + 1) f = nx - (v.mask + 1);
  return {f, nx};
}

/// per_key groups: ends every sequence of [from, to) (all overwritten by
/// the ring) that the group has not finished as lost, one CAS on its lease
/// word each, and counts those CASes won. An unordered group needs no such
/// walk: every sequence below its `next` was handed out, so the consumer
/// that leases the next lap finds the unfinished lease and counts it. A
/// per_key group passes over messages held back behind their key, which no
/// lease word records; without this walk the floor would pass them and the
/// next lap's lease would find an old, finished word: a loss never counted.
/// The floor is below `from`'s next lap while this runs (a per_key scan
/// leases only within a window <= capacity past the floor), so every word
/// of [from, to) belongs to its sequence's lap or an earlier one, and a
/// walk in sequence order decides each sequence once. Thread-safe: a
/// concurrent walk, scan or ack meets the same words, and only the CAS
/// that ends a lease counts it.
/// A per_key scan that meets one overwritten sequence ends it the same way.
inline void end_overwritten_held(const GroupView& v, std::uint64_t from, std::uint64_t to) noexcept {
  std::uint64_t n = 0;
  for (std::uint64_t s = from; s < to; ++s) {
    std::atomic<std::uint64_t>& lw = v.leases[s & v.mask];
    std::uint64_t w = shm::load_acquire(lw);
    for (;;) {
      const LeaseFields lf = lease_fields(w);
      const std::uint32_t ahead = (lf.lap - v.lap(s)) & 0xffffu;
      if (w != 0 && ((ahead == 0 && lease_final(lf.state)) || (ahead != 0 && ahead < 0x8000u))) break;
      // Ours to end: a lease of s (live, due, dead-lettering) or a word of
      // an earlier lap (s never handed out). acq_rel: against the holder's
      // ack CAS on the same word.
      if (shm::cas_acq_rel(lw, w, make_lease({kLeaseLost, lf.attempt, 0, v.lap(s), 0}))) {
        ++n;
        break;
      }
    }
  }
  if (n != 0) v.g->lost.fetch_add(n, std::memory_order_relaxed);  // relaxed: a statistic
}

/// Moves the group's floor over every finished (or overwritten) sequence,
/// and wakes publishers waiting for room if it moved. Thread-safe.
inline void advance_floor_of(const GroupView& v) noexcept {
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
      // per_key: what the floor passes here may include messages held back
      // behind their key, never leased: end and count them first. A gap of
      // more than a ring is no healthy per_key group's (next stays within a
      // window of the floor): a corrupted floor, passed as above.
      if (v.g->ordering == static_cast<std::uint32_t>(GroupOrdering::per_key) && to - f <= v.mask + 1) {
        end_overwritten_held(v, f, to);
      }
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

/// Counts `n` messages as lost to the group (overwritten or impossible
/// before it finished them) and moves the floor over what is finished. The
/// caller has already ended their leases (or passed them, moving `next`).
inline void count_lost(const GroupView& v, std::uint64_t n) noexcept {
  v.g->lost.fetch_add(n, std::memory_order_relaxed);  // relaxed: a statistic
  advance_floor_of(v);
}

/// Ends the lease `held` on sequence `seq` as lost (its slot no longer holds
/// the message, or holds an impossible one): one CAS; counted and the floor
/// moved only if that CAS won, so a lease somebody else changed meanwhile is
/// left to them. Thread-safe.
inline void end_lease_lost(const GroupView& v, std::uint64_t seq, std::uint64_t held) noexcept {
  LeaseFields lf = lease_fields(held);
  lf.state = kLeaseLost;
  std::uint64_t w = held;
  if (shm::cas_acq_rel(v.leases[seq & v.mask], w, make_lease(lf))) count_lost(v, 1);
}

}  // namespace shmbus::bus
