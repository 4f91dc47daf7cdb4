// What a per_key group holds back: the keys whose next message waits because
// an earlier message of the same key is unfinished, for the stats and the
// probe. Read-only: observers map the channel read-only, and a probe must
// never change what the consumers see.
#pragma once

#include <cstdint>

#include "bus/group/group_view.hpp"

namespace shmbus::bus {

/// The held-back state of a per_key group's window at one moment.
///
/// A message is held back when it is committed, not yet handed out (its
/// lease word is free for its lap), and an earlier message of its key is
/// unfinished: leased, due for a retry, being dead-lettered, or itself held
/// back. A message that is free and has no unfinished predecessor is simply
/// waiting for a receive and is not counted.
struct HeldBack {
  std::uint64_t keys = 0;      ///< distinct keys with at least one held-back message
  std::uint64_t messages = 0;  ///< held-back messages
  /// Publish time (CLOCK_REALTIME ns, stamp-clock ticks converted) of the
  /// oldest held-back message; 0 when none is held back or it carries no time.
  std::uint64_t oldest_publish_ns = 0;
};

/// The sequences a per_key receive looks at past the floor: the group's
/// order_window, or min(capacity, 4096) where the stored value is not one a
/// join can have written (0, or more than the ring: the segment is
/// untrusted). With `stored` 0, the default a join resolves. Thread-safe.
std::uint32_t effective_order_window(std::uint32_t stored, std::uint64_t capacity) noexcept;

/// Walks the group's window, [floor, min(floor + order_window, first
/// uncommitted sequence)), at most one ring, and counts what it holds back.
/// Reads lease words and slot keys with the seqlock discipline of a
/// consumer's delivery, and stops at the first sequence whose slot does not
/// hold it committed (not yet written, or overwritten under drop_oldest).
/// Bounded work: at most one window of sequences. Allocates two scratch
/// key sets sized by the window (BlockedKeys, as a consumer's scan uses). A racing consumer can make the result a mix
/// of two moments: it is a statistic, as the other stats are. Thread-safe; never writes to the channel.
HeldBack held_back(const GroupView& v);

}  // namespace shmbus::bus
