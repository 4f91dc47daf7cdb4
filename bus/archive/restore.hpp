// Continuing a channel from its archive when it is created again (after a
// reboot, or after every process of the bus died and its /dev/shm segment
// was removed): the sequence continues from the archive's end, the ring is
// pre-loaded with the archive's newest records, and the durable subscribers
// and groups of the archive directory's checkpoint are re-created. Runs on
// the new segment before it is linked under its name, so nobody sees a
// channel half restored. docs/protocol.md ("Restart from the archive").
#pragma once

#include <shmbus/result.hpp>

#include <cstdint>
#include <string_view>

#include "bus/ring/channel_state.hpp"
#include "shm/segment.hpp"

namespace shmbus::bus::archive {

/// What a restore did (all zero when there was nothing to continue).
struct RestoreSummary {
  bool restored = false;          ///< an archive or a checkpoint was found and continued
  std::uint64_t head = 0;         ///< the new channel's head: the archive's end
  std::uint64_t ring_oldest = 0;  ///< the oldest pre-loaded sequence (head if none)
  std::uint64_t preloaded = 0;    ///< records copied into the ring
  std::uint32_t subscribers = 0;  ///< durable subscriber entries re-created
  std::uint32_t groups = 0;       ///< group entries re-created
  /// Sequences the restored cursors and floors had to skip (counted in each
  /// entry's `lost`): a group floor older than the pre-loaded ring, a cursor
  /// older than the archive's first record.
  std::uint64_t lost = 0;
  bool checkpoint_clamped = false;  ///< the checkpoint's head was past the archive's end
};

/// Restores into a new channel's segment `seg` (initialised, not yet linked;
/// geometry `geo`, name `channel`) what its archive directory holds:
/// - nothing (a plain create) if geo.archive_dir is empty, absent, or holds
///   neither a segment file nor a checkpoint;
/// - head = the archive's end (SegmentReader::end_sequence, which stops at a
///   torn tail); the newest min(capacity, records) records in their slots at
///   their own sequences, committed, with CLOCK_REALTIME timestamps (which
///   readers of a counter-stamped channel pass through unchanged); every
///   other slot of the last lap marked abandoned at its sequence, so that
///   publishers take it as finished and readers skip it;
/// - the checkpoint's durable subscribers, detached (evicted ones stay
///   evicted), with their names, flags, counters and cursors (at most head;
///   one older than the archive's first record moves to it, the gap counted
///   in `lost`);
/// - the checkpoint's groups with their settings, counters and floors (at
///   most head; one older than the pre-loaded ring moves to its oldest, the
///   gap counted in the group's `lost`), next = floor and every lease empty:
///   what was in flight is delivered again (at-least-once).
/// A damaged checkpoint, an unreadable archive, a record larger than the
/// channel's max_payload or more entries than its tables hold refuse the
/// create: the error names the file (or the limit to raise). Not
/// thread-safe: the segment is the caller's alone until linked.
Result<RestoreSummary> restore_channel(shm::Segment& seg, const Geometry& geo, std::string_view channel);

}  // namespace shmbus::bus::archive
