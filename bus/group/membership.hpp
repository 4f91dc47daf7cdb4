// The group and consumer tables of a channel: finding, creating and removing
// groups, joining and leaving them, and freeing the entries (and leases) of
// consumers whose processes are gone. See docs/protocol.md ("Groups").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bus/common/types.hpp"
#include "bus/ring/channel_state.hpp"

namespace shmbus::bus {

/// Finds a group by name; -1 if absent. Thread-safe.
int find_group(const ChannelState& ch, std::string_view name) noexcept;

/// Removes a group (its leases and cursor are forgotten). busy if a live
/// consumer is a member. Thread-safe.
Result<void> remove_group(ChannelState& ch, std::string_view name);

/// Frees the consumer entries of every group whose owning process is gone,
/// making their leases due for redelivery at once. Returns how many entries
/// were freed. No-op on a read-only channel. Thread-safe; makes liveness
/// system calls.
std::uint32_t reclaim_dead_consumers(ChannelState& ch) noexcept;

/// invalid_argument, with the offending value, unless the options are
/// within their documented ranges.
Result<void> check_group_options(const GroupOptions& o);

/// Finds group `name` (refusing one created with other settings or another
/// DLQ: parameter_mismatch) or creates it with `o` and DLQ channel `dlq`;
/// returns its index. table_full if every entry is in use. Thread-safe.
Result<std::uint32_t> find_or_create_group(ChannelState& ch, std::string_view name, const GroupOptions& o,
                                           const std::string& dlq);

/// Takes a free consumer entry of group `gi` for this process (freeing dead
/// consumers' entries if the table is full); returns its index and sets
/// `control` to the entry's active control word. Thread-safe.
Result<std::uint32_t> join_consumer(ChannelState& ch, std::uint32_t gi, std::uint64_t& control);

/// Makes every lease that consumer `owner` of group `gi` holds due now, so
/// the others take it at once: those in [floor, next), and those of a run
/// it was taking from `next` on (take_run moves `next` past a run at its
/// end). Called before the consumer's entry (and index) is freed, so a
/// later consumer at that index is never taken for their owner.
/// Thread-safe.
void release_leases_of(const ChannelState& ch, std::uint32_t gi, std::uint32_t owner) noexcept;

/// Frees consumer entry `k` of group `gi`, which the caller judged dead while
/// it held control word `seen`: reserves it (so nobody joins at this index
/// meanwhile), makes its leases due, then frees it. False, and nothing done,
/// if the entry changed since. Thread-safe.
bool release_consumer(const ChannelState& ch, std::uint32_t gi, std::uint32_t k, std::uint64_t seen) noexcept;

}  // namespace shmbus::bus
