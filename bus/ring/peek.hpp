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

/// Copies message `seq` into `buffer` and fills `out` (payload points into
/// buffer). Returns ok; empty when `seq` is not committed yet (at or past
/// the head, or still being written); lapped when the slot already holds a
/// later message (or `seq` is below the oldest retained one); skipped
/// (reported as `corrupted`) when the claim was abandoned or the slot's
/// header is impossible; buffer_too_small with out.payload.size() set to the
/// size needed. Validates the stamp after copying (seqlock), so a concurrent
/// writer yields lapped, never a torn message. Thread-safe; never writes.
PollStatus peek_message(const ChannelState& ch, std::uint64_t seq, Message& out, std::span<std::byte> buffer) noexcept;

}  // namespace shmbus::bus
