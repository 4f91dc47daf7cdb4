// Reading a message by sequence without taking part: no cursor, no table
// entry, no write to shared memory. For the probe's peek/tail and for DLQ
// inspection. Works on read-only (observer) mappings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "bus/common/types.hpp"
#include "bus/ring/channel_state.hpp"

namespace shmbus::bus {

/// What a peek learnt from the channel's archive about a sequence the ring
/// no longer holds.
struct ArchivePeek {
  /// After lapped: the first sequence after the one asked for that the
  /// archive holds (pruned or a gap before it), or 0 when the archive holds
  /// nothing at or after it (no archive, or not archived yet): the ring's
  /// oldest is then the next one readable.
  std::uint64_t next = 0;
  /// After corrupted from the archive: its error, naming the file and the
  /// offset ("" for a corrupted slot of the ring).
  std::string error;
};

/// Copies message `seq` into `buffer` and fills `out` (payload points into
/// buffer). Returns ok; empty when `seq` is not committed yet (at or past
/// the head, or still being written); lapped when the slot already holds a
/// later message (or `seq` is below the oldest retained one) and the
/// channel's archive (if it has one) does not hold it either; skipped
/// (reported as `corrupted`) when the claim was abandoned or the slot's
/// header is impossible, or the archive record is unreadable;
/// buffer_too_small with out.payload.size() set to the size needed.
/// Validates the stamp after copying (seqlock), so a concurrent writer
/// yields lapped (or the archive's copy), never a torn message. `archive`
/// (optional) gets what the archive said. Thread-safe (archive reads are
/// serialised per channel); never writes shared memory.
PollStatus peek_message(const ChannelState& ch, std::uint64_t seq, Message& out, std::span<std::byte> buffer,
                        ArchivePeek* archive = nullptr) noexcept;

}  // namespace shmbus::bus
