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
