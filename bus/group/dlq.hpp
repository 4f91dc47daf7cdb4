// The dead-letter queue of a group: the DlqRecord that heads every dead
// letter, the DLQ channel's name and options, copying a message there
// (consumers and the dead_letter_due mover alike), and redriving dead
// letters back to their source channel. See docs/protocol.md ("DLQ").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "bus/common/types.hpp"
#include "bus/group/group_view.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "bus/ring/publisher_core.hpp"

namespace shmbus::bus {

//  DlqRecord (160 B) at the start of every DLQ message's payload; the
//  original payload follows. The DLQ slot header keeps the original key,
//  message id, correlation id and type, and its `attempt` holds the attempts
//  made; redrive republishes the key, id, correlation id and type.
//  0 original_sequence  8 original_timestamp_ns  16 attempts  20 reason
//  24 payload_length  28 reserved  32 group (64)  96 source channel (64)
struct DlqRecord {
  std::uint64_t original_sequence;
  std::uint64_t original_timestamp_ns;
  std::uint32_t attempts;
  std::uint32_t reason;
  std::uint32_t payload_length;
  std::uint32_t reserved;
  char group[64];
  char source[64];
};
static_assert(std::is_standard_layout_v<DlqRecord>);
static_assert(sizeof(DlqRecord) == 160);
static_assert(offsetof(DlqRecord, attempts) == 16);
static_assert(offsetof(DlqRecord, group) == 32);
static_assert(offsetof(DlqRecord, source) == 96);

/// The durable subscriber that holds dead letters on a DLQ channel until
/// they are redriven or removed.
inline constexpr std::string_view kDlqRetainer = "dlq";

/// Name of a group's DLQ channel: the option, or "<channel>-dlq".
std::string dlq_channel_name(std::string_view channel, const GroupOptions& opts);

/// Options of a DLQ channel for a source channel: room for the source's
/// largest payload plus a DlqRecord; block policy (retained until redriven).
ChannelOptions dlq_channel_options(const ChannelState& source);

/// The owner index of a lease held by a participant that is not a consumer
/// of the group (dead_letter_due): no consumer entry has it, so only the
/// lease's deadline ends it, never a liveness judgement.
inline constexpr std::uint32_t kLeaseNoOwner = 255;
static_assert(kMaxConsumers <= kLeaseNoOwner, "consumer indexes must stay below kLeaseNoOwner");

/// Whether lease word `w` (for a sequence of lap `lap`) is a message that has
/// used all `max_deliveries` deliveries and that nobody is working on: its
/// last lease expired or its owner is gone (`owner_gone(index)`), a
/// dead-lettering whose deadline passed or whose owner is gone, or a final
/// nack that the DLQ could not take (due, attempt >= max_deliveries). Such a
/// message is "due for the DLQ": it is never delivered again. `now_ms` is
/// the lease clock (CLOCK_MONOTONIC ms). Pure but for owner_gone.
template <class OwnerGone>
bool due_for_dlq(std::uint64_t w, std::uint32_t lap, std::uint32_t max_deliveries, std::uint64_t now_ms,
                 OwnerGone&& owner_gone) {
  if (w == 0) return false;
  const LeaseFields lf = lease_fields(w);
  if (lf.lap != lap) return false;
  switch (lf.state) {
    case kLeaseDue: return lf.attempt >= max_deliveries;
    case kLeaseLeased:
      if (lf.attempt < max_deliveries) return false;
      [[fallthrough]];
    case kLeaseDeadLettering:
      return lease_time_reached(lf.deadline_ms, now_ms) ||
             (lf.owner != kLeaseNoOwner && owner_gone(static_cast<std::uint32_t>(lf.owner)));
    default: return false;
  }
}

/// Dead-letters, in every group of `ch`, the messages due for the DLQ (see
/// due_for_dlq): each is taken with one CAS on its lease word (to
/// dead-lettering, owner kLeaseNoOwner, deadline one visibility timeout
/// away, so a mover killed midway leaves it to the next one), copied to the
/// group's DLQ and marked dead-lettered, exactly as a consumer's receive
/// does. A message the DLQ cannot take now stays due (counted in
/// dlq_failures). Returns how many reached a DLQ. permission_denied on a
/// read-only channel; an error if a DLQ cannot be opened. Thread-safe (any
/// number of movers and consumers at once); makes system calls (liveness,
/// opening the DLQs): not for a hot path.
Result<std::uint64_t> dead_letter_due(const std::shared_ptr<ChannelState>& ch);

/// Opens (creating if needed) a group's DLQ channel `dlq` for source
/// channel `ch`, with the durable subscriber that retains its dead letters
/// until they are redriven. Thread-safe; makes system calls.
Result<std::shared_ptr<ChannelState>> open_dlq(const ChannelState& ch, const std::string& dlq);

/// Copies message `seq` of the group seen through `v`, which the caller
/// holds with the dead-lettering lease word `held`, to the DLQ through
/// `pub`, then marks it dead-lettered (G9; *marked, if given, says whether
/// this call's CAS did). A message no longer (or never soundly) in its slot
/// ends as lost instead. dlq_unavailable (counted in dlq_failures) if the DLQ
/// cannot take it now: the lease is left as it is, for the caller to decide.
/// Thread-safe as far as the group goes; `pub` is the caller's own.
AckStatus copy_to_dlq(const GroupView& v, PublisherCore& pub, std::uint64_t seq, std::uint64_t held,
                      DeadLetterReason reason, bool* marked = nullptr) noexcept;

/// Copies up to `max` dead letters from a DLQ channel back to their source
/// channel (original payload and metadata), advancing the DLQ's retaining
/// cursor. Returns how many were redriven. At-least-once: a crash midway may
/// redrive a message twice.
Result<std::uint64_t> redrive_dead_letters(const std::shared_ptr<ChannelState>& source,
                                           const std::shared_ptr<ChannelState>& dlq, std::uint64_t max);

}  // namespace shmbus::bus
