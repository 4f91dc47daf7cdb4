// The publisher and subscriber tables: attaching, detaching, reclaiming the
// entries of dead owners, evicting stuck subscribers, and the gating minimum
// that bounds block/reject publishers. Every transition of an entry is one
// CAS on its control word (state + owner pid), so a process killed at any
// instruction leaves an entry that the next scan recovers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "shm/clock.hpp"
#include "shm/liveness.hpp"

namespace shmbus::bus {

/// Resolves two processes creating an entry of the same name at once
/// (durable subscribers, groups). Call after claiming entry `mine` and
/// announcing its name with seq_cst; `same(j)` tells (seq_cst) whether entry
/// j holds that name now, `claiming(j)` whether it is still being claimed.
/// At least one of two racers sees the other (Dekker). Seeing a lower index:
/// back off. Seeing a higher one: wait until it backs off (it saw us) or
/// wins (it did not), and back off if it wins. Exactly one survives. Returns
/// true if the caller must back off (free its entry and look again).
template <class Same, class Claiming>
bool lose_name_race(std::uint32_t mine, std::uint32_t count, Same same, Claiming claiming) {
  // Orders our announcement before every load below, whatever their order.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (std::uint32_t j = 0; j < count; ++j) {
    if (j == mine || !same(j)) continue;
    if (j < mine) return true;
    const std::uint64_t until = shm::monotonic_ns() + 1'000'000'000ULL;
    while (same(j)) {
      if (!claiming(j) || shm::monotonic_ns() > until) return true;  // it won (or is stuck)
      shm::yield_cpu();
    }
  }
  return false;
}

/// Claims a free publisher entry for this process. table_full when none.
Result<std::uint32_t> attach_publisher(ChannelState& ch);
/// Releases a publisher entry owned by this process (its counters stay
/// readable until the entry is reused).
void detach_publisher(ChannelState& ch, std::uint32_t index) noexcept;

struct SubscriberAttach {
  std::uint32_t index = 0;
  std::uint64_t control = 0;  ///< the control word this handle owns (ACTIVE | pid)
  std::uint64_t cursor = 0;   ///< where reading starts
  bool resumed = false;       ///< a durable subscriber resumed an existing cursor
  /// A new subscriber started at a time older than the ring: messages that
  /// may have been published since then were overwritten. Already counted
  /// in the entry's `lost` (and one lapped event); the first poll reports it.
  std::uint64_t start_lost = 0;
};

/// Attaches a subscriber (anonymous if name is empty, else durable) starting
/// at `start`. busy if a live process already holds the durable name.
Result<SubscriberAttach> attach_subscriber(ChannelState& ch, std::string_view name, const StartAt& start);

/// Detaches: an anonymous entry is freed, a durable one keeps its cursor.
void detach_subscriber(ChannelState& ch, std::uint32_t index, std::uint64_t control) noexcept;

/// Removes a durable subscriber's entry (its cursor is forgotten). not_found
/// if absent, busy if a live process holds it.
Result<void> remove_durable_subscriber(ChannelState& ch, std::string_view name);

/// Whether an entry in this state holds back block/reject publishers.
bool entry_gates(std::uint64_t control) noexcept;

/// The smallest cursor of the gating subscribers, or `head` if none gates.
/// Thread-safe, lock-free; loads each cursor with acquire.
std::uint64_t gating_minimum(const ChannelState& ch, std::uint64_t head) noexcept;

/// Publisher-side housekeeping for a full ring: frees entries of dead
/// anonymous subscribers, detaches dead durable ones, and evicts subscribers
/// a full ring behind for longer than the eviction timeout. Makes system
/// calls (liveness); callers rate-limit it. Returns true if anything changed.
bool reclaim_and_evict(ChannelState& ch, std::uint64_t head, std::uint64_t now_ns) noexcept;

/// Frees the publisher and subscriber entries of processes
/// that are gone. Returns how many entries changed. Thread-safe.
std::uint32_t reclaim_dead(ChannelState& ch) noexcept;

/// Where the messages published at or after a time start.
struct TimePosition {
  /// The first retained sequence whose timestamp is >= t, or head if none.
  std::uint64_t sequence = 0;
  /// How many sequences before `sequence` the ring no longer holds although
  /// they may have been published at or after t: every overwritten one
  /// (sequence 0 up to the oldest retained), when the oldest retained
  /// message is already at or after t and the ring has wrapped; else 0. The
  /// overwritten messages' times are gone, so this is an upper bound of the
  /// loss (exact when t is at or before the channel's creation).
  std::uint64_t overwritten = 0;
};

/// Finds the first sequence in [oldest, head) whose timestamp is >= t
/// (binary search over validated slot reads) and whether messages since t
/// were overwritten (see TimePosition).
TimePosition locate_time(const ChannelState& ch, std::uint64_t t_realtime_ns) noexcept;

/// The first sequence that may hold a message published at or after t:
/// locate_time's sequence, or, when messages since t were overwritten, the
/// first of those (0): below the oldest retained sequence, so that a peek
/// or a seek there reports `lapped` with the count, as for any overwritten
/// sequence.
std::uint64_t sequence_at_time(const ChannelState& ch, std::uint64_t t_realtime_ns) noexcept;

/// The oldest sequence that may still be readable: head - capacity, or 0.
std::uint64_t oldest_sequence(const ChannelState& ch) noexcept;

/// Where a new subscriber's cursor or a new group's floor starts: the oldest
/// readable sequence, the head, a given sequence (clamped to kMaxSequence),
/// or the first retained message at or after a time. For a time, `*lost`
/// (if given) gets locate_time's `overwritten` (else 0): the caller counts
/// it as lost and reports it, as a reader lapped there would.
std::uint64_t start_position(const ChannelState& ch, const StartAt& start, std::uint64_t* lost = nullptr) noexcept;

}  // namespace shmbus::bus
