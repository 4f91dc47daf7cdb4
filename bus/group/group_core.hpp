// Competing-consumer groups: a shared `next`, a `floor`, and a lease word per
// ring slot. Each message goes to one consumer; ack ends its lease; a lease
// whose deadline passes (or whose consumer died) is redelivered with
// attempt + 1; at max_deliveries the message is copied to the group's DLQ.
// Every lease transition is one CAS on one 64-bit word. See docs/protocol.md
// ("Groups").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "bus/ring/publisher_core.hpp"
#include "bus/ring/slots.hpp"
#include "bus/common/types.hpp"

namespace shmbus::bus {

//  DlqRecord (160 B) at the start of every DLQ message's payload; the
//  original payload follows. The DLQ slot header keeps the original key,
//  correlation id and type, and its `attempt` holds the attempts made.
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

/// Finds a group by name; -1 if absent. Thread-safe.
int find_group(const ChannelState& ch, std::string_view name) noexcept;

/// Removes a group (its leases and cursor are forgotten). busy if a live
/// consumer is a member. Thread-safe.
Result<void> remove_group(ChannelState& ch, std::string_view name);

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

/// Frees the consumer entries of every group whose owning process is gone,
/// making their leases due for redelivery at once. Returns how many entries
/// were freed. No-op on a read-only channel. Thread-safe; makes liveness
/// system calls.
std::uint32_t reclaim_dead_consumers(ChannelState& ch) noexcept;

/// One consumer of a group. Not thread-safe: one caller at a time.
class GroupCore {
 public:
  GroupCore() = default;
  GroupCore(const GroupCore&) = delete;
  GroupCore& operator=(const GroupCore&) = delete;
  ~GroupCore();

  /// Joins (creating if needed) group `name`, and makes sure its DLQ exists.
  static Result<std::unique_ptr<GroupCore>> join(std::shared_ptr<ChannelState> ch,
                                                 std::string_view name, const GroupOptions& opts);

  PollStatus receive(Delivery& out, std::span<std::byte> buffer) noexcept;
  PollStatus receive_wait(Delivery& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept;
  /// Copy-out batch: up to out.size() deliveries, payloads packed into
  /// `arena`, with one clock read and one group counter update. Returns how
  /// many; *last (if given) is the status that ended the batch.
  std::size_t receive_batch(std::span<Delivery> out, std::span<std::byte> arena, PollStatus* last) noexcept;
  AckStatus ack(const Delivery& d) noexcept;
  /// Acks each delivery; one counter update and one floor advance for all.
  /// Returns how many were acked.
  std::size_t ack_batch(std::span<const Delivery> ds) noexcept;
  /// Makes the delivery due again after delay_ns; on its last allowed
  /// attempt (attempt >= max_deliveries) dead-letters it at once instead
  /// (dlq_unavailable if the DLQ cannot take it now: it stays due and is
  /// retried after delay_ns).
  AckStatus nack(const Delivery& d, std::uint64_t delay_ns) noexcept;
  AckStatus nack_with_backoff(const Delivery& d) noexcept;
  AckStatus extend(Delivery& d, std::uint64_t visibility_ns) noexcept;
  AckStatus dead_letter(const Delivery& d) noexcept;
  /// The nack delay after `attempt` deliveries: base * 2^(attempt-1), capped,
  /// with +-jitter.
  std::uint64_t backoff_ns(std::uint32_t attempt) noexcept;

  [[nodiscard]] std::uint32_t group_index() const noexcept { return gi_; }
  [[nodiscard]] std::uint32_t consumer_index() const noexcept { return ci_; }
  [[nodiscard]] const std::shared_ptr<ChannelState>& channel() const noexcept { return ch_; }

 private:
  bool take_new(Delivery& out, std::span<std::byte> buffer, PollStatus& st, std::uint64_t now) noexcept;
  void help_advance_next(std::uint64_t n) noexcept;
  bool take_due(Delivery& out, std::span<std::byte> buffer, PollStatus& st, std::uint64_t now) noexcept;
  bool deliver(std::uint64_t seq, std::uint64_t lease, Delivery& out, std::span<std::byte> buffer,
               PollStatus& st) noexcept;
  bool owner_dead(std::uint32_t owner) noexcept;
  AckStatus end_lease_acked(const Delivery& d) noexcept;
  PollStatus receive_at(Delivery& out, std::span<std::byte> buffer, std::uint64_t now) noexcept;
  AckStatus finish(const Delivery& d, std::uint64_t next_word) noexcept;
  AckStatus nack_final(const Delivery& d, std::uint64_t due_ms) noexcept;
  AckStatus send_to_dlq(std::uint64_t seq, std::uint64_t held, DeadLetterReason reason) noexcept;
  void advance_floor() noexcept;
  void release() noexcept;
  [[nodiscard]] std::uint32_t lap(std::uint64_t seq) const noexcept {
    return static_cast<std::uint32_t>((seq >> lap_shift_) & 0xffffu);
  }
  [[nodiscard]] bool available_for(std::uint64_t seq, std::uint64_t word) const noexcept;

  std::shared_ptr<ChannelState> ch_;
  GroupEntry* g_ = nullptr;
  ConsumerEntry* me_ = nullptr;
  ConsumerEntry* consumers_ = nullptr;
  std::atomic<std::uint64_t>* leases_ = nullptr;
  std::uint32_t gi_ = 0;
  std::uint32_t ci_ = 0;
  std::uint64_t control_ = 0;
  std::uint64_t mask_ = 0;
  std::uint32_t lap_shift_ = 0;
  std::uint64_t visibility_ns_ = 0;
  std::uint32_t max_deliveries_ = 0;
  std::uint64_t backoff_base_ns_ = 0;
  std::uint64_t backoff_cap_ns_ = 0;
  std::uint32_t jitter_permille_ = 0;
  WaitStrategy wait_ = WaitStrategy::block;
  std::string dlq_name_;
  std::unique_ptr<PublisherCore> dlq_pub_;  ///< opened on first dead letter
  std::shared_ptr<ChannelState> dlq_ch_;
  std::uint64_t last_scan_ns_ = 0;
  std::uint64_t scan_every_ns_ = 0;
  std::uint64_t rng_ = 0;
  struct OwnerSeen {
    std::uint64_t control = 0;  ///< the consumer entry's control word when judged
    bool dead = false;
  };
  std::vector<OwnerSeen> owner_cache_;  ///< per consumer index, refreshed every 5 ms
  std::uint64_t owner_cache_ns_ = 0;
  StallWatch stall_;                    ///< a dead publisher's claim at `next`
  StampClock clock_;                    ///< converts the stamps it hands out
  bool batching_ = false;               ///< inside receive_batch: count deliveries locally
  std::uint64_t batch_delivered_ = 0;   ///< deliveries of the batch not yet in the group's counter
  std::uint64_t last_stall_check_ns_ = 0;
};

/// Copies up to `max` dead letters from a DLQ channel back to their source
/// channel (original payload and metadata), advancing the DLQ's retaining
/// cursor. Returns how many were redriven. At-least-once: a crash midway may
/// redrive a message twice.
Result<std::uint64_t> redrive_dead_letters(const std::shared_ptr<ChannelState>& source,
                                           const std::shared_ptr<ChannelState>& dlq, std::uint64_t max);

}  // namespace shmbus::bus
