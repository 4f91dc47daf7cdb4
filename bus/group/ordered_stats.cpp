#include "bus/group/ordered_stats.hpp"

#include <algorithm>

#include "bus/group/ordered_scan.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"

namespace shmbus::bus {

namespace {

/// A per_key group's window when none is given, or the stored one is
/// unusable: min(capacity, this). ConsumerCore::join resolves 0 with it too.
constexpr std::uint64_t kFallbackOrderWindow = 4096;

}  // namespace

std::uint32_t effective_order_window(std::uint32_t stored, std::uint64_t capacity) noexcept {
  if (stored != 0 && stored <= capacity) return stored;
  return static_cast<std::uint32_t>(std::min(capacity, kFallbackOrderWindow));
}

HeldBack held_back(const GroupView& v) {
  HeldBack out;
  const ChannelState& ch = *v.ch;
  const std::uint64_t capacity = v.mask + 1;
  const std::uint64_t window = effective_order_window(v.g->order_window, capacity);
  std::uint64_t first = shm::load_acquire(v.g->floor);
  // A floor more than a ring behind the head names overwritten slots
  // (drop_oldest): start at the oldest sequence the ring can still hold.
  const std::uint64_t head = shm::load_acquire(ch.producer->head);
  if (head > first && head - first > capacity) first = head - capacity;
  const std::uint64_t end = first + window;
  // The keys a consumer's scan would hold back at this point of the walk
  // (as ConsumerCore::receive_ordered keeps them), and those already
  // counted as held: exact keys, at most one per sequence of the window.
  BlockedKeys blocking;
  BlockedKeys held;
  blocking.reserve(window);
  held.reserve(window);
  std::uint64_t oldest_stored = 0;
  bool any = false;
  for (std::uint64_t s = first; s < end; ++s) {
    const std::uint64_t want = make_stamp(s, kStampCommitted);
    const std::byte* slot = slot_at(ch.data, s, v.mask, ch.geo.slot_size);
    // SYNC(stamp): acquire, pairs with the publisher's release commit; the
    // metadata read below is then the committed one unless the stamp moves.
    const std::uint64_t stamp = shm::load_acquire(slot_header(slot).stamp);
    if (stamp == make_stamp(s, kStampAbandoned)) continue;  // a claim that never became a message
    if (stamp != want) break;                               // not yet committed, or overwritten: the window ends here
    // acquire: pairs with the lease CASes (acq_rel) of the consumers.
    const std::uint64_t w = shm::load_acquire(v.leases[s & v.mask]);
    const SlotMeta meta = read_meta(slot);
    // SYNC(seqlock-read): as in ConsumerCore::deliver; a changed stamp means
    // the key read may be another message's.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (shm::load_relaxed(slot_header(slot).stamp) != want) break;
    const LeaseFields lf = lease_fields(w);
    const bool handed_out = w != 0 && lf.lap == v.lap(s);
    if (handed_out) {
      if (lease_final(lf.state)) continue;  // acked, dead-lettered or lost: finished
      // Leased, due for a retry or being dead-lettered: its key's later
      // messages wait for it.
      blocking.insert(meta.key);
      continue;
    }
    // Free for its lap: held back if an earlier message of its key is unfinished.
    if (!blocking.contains(meta.key)) continue;  // the key's next message: free to go
    if (!held.contains(meta.key)) {
      held.insert(meta.key);
      ++out.keys;
    }
    ++out.messages;
    const std::uint64_t ns = stored_time_ns(meta.timestamp);
    if (ns != 0 && (!any || ns < oldest_stored)) {
      oldest_stored = ns;
      any = true;
    }
  }
  out.oldest_publish_ns = any ? oldest_stored : 0;
  return out;
}

}  // namespace shmbus::bus
