// Channel: one named shared-memory ring on a bus. Create it once, open it
// from any process, then make publishers and subscribers from it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <shmbus/consumer.hpp>
#include <shmbus/publisher.hpp>
#include <shmbus/result.hpp>
#include <shmbus/stats.hpp>
#include <shmbus/subscriber.hpp>
#include <shmbus/types.hpp>

namespace shmbus::bus {
class ChannelState;
}

namespace shmbus::detail {
struct ChannelAccess;  // the library's own access to a channel's state (api/detail.hpp)
}

namespace shmbus {

/// Summary of a channel as listed by Channel::list.
struct ChannelInfo {
  std::string name;
  std::uint64_t size_bytes = 0;
  std::uint32_t mode = 0;
  std::uint32_t uid = 0;  ///< owner
  /// "" for a regular file; otherwise what squats the name ("fifo",
  /// "symlink", "directory", "socket", "device"): never opened, removable.
  std::string kind;
};

/// A message read from a DLQ channel, decoded: where it came from, why it
/// was dead-lettered, and the original payload.
struct DeadLetter {
  std::uint64_t dlq_sequence = 0;           ///< its sequence in the DLQ channel
  std::uint64_t original_sequence = 0;      ///< its sequence in the source channel
  std::uint64_t original_timestamp_ns = 0;  ///< CLOCK_REALTIME of the original publish
  std::uint32_t attempts = 0;               ///< deliveries made before it was dead-lettered
  DeadLetterReason reason = DeadLetterReason::max_deliveries;
  std::string group;   ///< the group that dead-lettered it
  std::string source;  ///< the source channel
  std::uint64_t key = 0;
  std::uint64_t id = 0;  ///< the original message id (redrive republishes it)
  std::uint64_t correlation_id = 0;
  std::uint32_t type = 0;
  std::span<const std::byte> payload;  ///< points into the message's payload
};

/// Decodes a message read from a DLQ channel; nothing if it is not a dead
/// letter (too short, impossible lengths or reason). Thread-safe.
std::optional<DeadLetter> decode_dead_letter(const Message& m) noexcept;

class Channel {
 public:
  Channel() = default;

  /// Creates a channel exclusively (fails with already_exists), reserving its
  /// whole size in /dev/shm now (no_space if it does not fit). The segment is
  /// created with opts.mode (0600 by default). Thread-safe.
  static Result<Channel> create(std::string_view name, const ChannelOptions& opts = {},
                                std::string_view bus = kDefaultBus);

  /// Opens an existing channel. Refuses another layout version or a
  /// corrupted header with an error naming the field; a name that is not a
  /// regular file (FIFO, symlink) with invalid_argument; a segment owned by a
  /// uid other than this process's, root's or one in `trust` with
  /// permission_denied naming the owner, mode and path. Waits up to
  /// open_wait_ns (then busy) while a remover holds the segment. A channel
  /// is visible under its name only once fully created, so there is never a
  /// half-made one to wait for. Thread-safe.
  static Result<Channel> open(std::string_view name, std::string_view bus = kDefaultBus,
                              std::uint64_t open_wait_ns = 2'000'000'000ULL, const Trust& trust = {});

  /// Opens the channel if it exists — its parameters must equal `opts`
  /// (parameter_mismatch names both values; its owner must be trusted as for
  /// open, by opts.trust) — or creates it. Never re-initialises an existing
  /// segment: a corrupted one is an error naming the field. Thread-safe.
  static Result<Channel> open_or_create(std::string_view name, const ChannelOptions& opts = {},
                                        std::string_view bus = kDefaultBus);

  /// Opens a channel read-only, to observe it (the probe): no publisher or
  /// subscriber can be made from it. Any owner's channel may be observed (a
  /// hostile header yields errors, never a crash). Thread-safe.
  static Result<Channel> open_read_only(std::string_view name, std::string_view bus = kDefaultBus);

  /// Removes a channel: marks it removed in its header — every live handle's
  /// publish, poll and receive then return `removed` — and removes its name.
  /// A later create of the same name makes a new, unrelated channel. Also
  /// removes a name that is not a channel (a FIFO). Thread-safe.
  static Result<void> remove(std::string_view name, std::string_view bus = kDefaultBus);

  /// Removes a channel only if no process has it open — by any handle, with
  /// or without a publisher, subscriber or consumer (each open handle holds a
  /// shared lock on the segment until closed or its process dies). Returns
  /// false, removing nothing, if one does. Thread-safe.
  static Result<bool> remove_if_unused(std::string_view name, std::string_view bus = kDefaultBus);

  /// Whether any process (this one included) has the channel open.
  /// Thread-safe.
  static Result<bool> in_use(std::string_view name, std::string_view bus = kDefaultBus);

  /// Channels of a bus, by name. Thread-safe.
  static Result<std::vector<ChannelInfo>> list(std::string_view bus = kDefaultBus);

  /// A new publisher handle (one publisher-table entry). table_full if none
  /// is free. Thread-safe.
  Result<Publisher> publisher();

  /// A new subscriber: anonymous, or durable if opts.name is set (resumes the
  /// cursor of that name). table_full / busy with context; the name
  /// kArchiverName is the archiver's (invalid_argument). Thread-safe.
  Result<Subscriber> subscribe(const SubscribeOptions& opts = {});

  /// Joins consumer group `group` (created with `opts` if it does not exist;
  /// an existing group must have the same settings). Also creates the
  /// group's DLQ channel if needed, with this channel's permission bits.
  /// table_full if no group or consumer entry
  /// is free. Thread-safe.
  Result<Consumer> join_group(std::string_view group, const GroupOptions& opts = {});

  /// Removes a group and its leases. busy while a live consumer is a
  /// member. Thread-safe.
  Result<void> remove_group(std::string_view group);

  /// Republishes up to `max` dead letters from DLQ channel `dlq` (on this
  /// bus) to this channel, oldest first, and advances the DLQ's retaining
  /// cursor. Returns how many. At-least-once. Thread-safe.
  Result<std::uint64_t> redrive_dlq(std::string_view dlq, std::uint64_t max = UINT64_MAX);

  /// Forgets a durable subscriber's cursor. busy if a live process holds it.
  /// Thread-safe.
  Result<void> remove_subscriber(std::string_view durable_name);

  /// Frees the publisher, subscriber and group-consumer entries of processes
  /// that are gone (a dead consumer's leases become due for redelivery at
  /// once; durable subscriber cursors are kept, detached). Returns how many
  /// entries were freed; 0 on a read-only channel. Thread-safe.
  std::uint32_t reclaim_dead();

  /// Moves to their DLQs, in every group of this channel, the messages that
  /// are due for the DLQ (GroupStats::dlq_due): their last allowed delivery's
  /// lease expired or its consumer died, or a final nack found the DLQ full.
  /// Any participant may call it (shmbus gc does), with or without a live
  /// consumer; consumers' receive() does the same for their group. Each
  /// message is taken with one CAS on its lease word, so concurrent movers
  /// and consumers never both dead-letter it (but one killed midway leaves it
  /// to the next after a visibility timeout: at-least-once, as ever). A
  /// message the DLQ cannot take now stays due. Returns how many reached a
  /// DLQ; permission_denied on a read-only channel. Thread-safe; makes system
  /// calls (liveness, opening DLQs): not for a hot loop.
  Result<std::uint64_t> dead_letter_due();

  /// Copies message `sequence` into `buffer` without consuming it: no
  /// cursor, no table entry, nothing written (works on read-only channels).
  /// ok; empty if it is not committed yet; lapped if it was overwritten
  /// (older than the oldest retained message) and the channel's archive, if
  /// it has one, does not hold it either (a sequence the ring overwrote is
  /// read from the archive); corrupted if its claim was abandoned, its slot
  /// is impossible or its archive record unreadable; buffer_too_small with
  /// out.payload.size() = the size needed. Validated like a poll, so a
  /// concurrent writer never yields a torn message. Thread-safe.
  PollStatus peek(std::uint64_t sequence, Message& out, std::span<std::byte> buffer) const noexcept;

  /// The next sequence to be claimed (one past the newest message).
  /// Thread-safe.
  [[nodiscard]] std::uint64_t head() const noexcept;
  /// The oldest sequence the ring may still hold. Thread-safe.
  [[nodiscard]] std::uint64_t oldest() const noexcept;
  /// The first retained sequence published at or after `realtime_ns`
  /// (CLOCK_REALTIME), or head() if none. If the oldest retained message is
  /// already at or after that time and the ring has wrapped, the messages
  /// before it (whose times are gone) may have been published since then:
  /// returns 0, below oldest(), so that peek() there reports `lapped` and
  /// oldest() - 0 is the most that can have been lost, as for an
  /// overwritten sequence. Thread-safe.
  [[nodiscard]] std::uint64_t sequence_at(std::uint64_t realtime_ns) const noexcept;

  /// Whether this channel is gone for this handle: `removed` (its name was
  /// removed, by anyone, in any way), `segment_lost` (its file shrank under
  /// this process), or `ok`. Does a system call (fstat): for idle paths.
  /// Thread-safe.
  [[nodiscard]] PollStatus liveness() const noexcept;

  /// A snapshot of counters, cursors and owners. Thread-safe.
  [[nodiscard]] ChannelStats stats() const;

  /// The options the channel was created with (mode excluded). Thread-safe.
  [[nodiscard]] ChannelOptions options() const;
  [[nodiscard]] const std::string& name() const;
  [[nodiscard]] const std::string& bus() const;
  [[nodiscard]] std::size_t max_payload() const;
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

 private:
  friend struct detail::ChannelAccess;
  explicit Channel(std::shared_ptr<bus::ChannelState> s) : state_(std::move(s)) {}
  std::shared_ptr<bus::ChannelState> state_;
};

}  // namespace shmbus
