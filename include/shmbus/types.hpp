// Value types of the public API: statuses, message metadata, options, start
// positions, the policies a channel is created with. Standard library only:
// the messaging layer (bus/) uses these same types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <shmbus/trust.hpp>

namespace shmbus {

/// The bus used when none is named.
inline constexpr std::string_view kDefaultBus = "default";

/// Backpressure policy of a channel, fixed at creation.
enum class Policy : std::uint32_t {
  block = 1,        ///< publishers wait for the slowest gating reader (bounded)
  drop_oldest = 2,  ///< publishers never wait; lapped readers skip and count
  reject = 3,       ///< a publish that would overwrite unread data fails with `full`
};

/// What publishers of a channel stamp messages with, fixed at creation.
/// Readers convert every stored timestamp to CLOCK_REALTIME ns, so each
/// source yields the same Message field.
enum class TimestampSource : std::uint32_t {
  realtime = 1,  ///< CLOCK_REALTIME read at publish (a vDSO call, ~20-30 ns)
  tsc = 2,       ///< the CPU's invariant counter (~7 ns), converted to realtime on read;
                 ///< publishers of a host without a trusted one fall back to realtime
  none = 3,      ///< 0 unless the publisher sets MessageMeta::timestamp_ns (at_time
                 ///< positions then find nothing to compare)
};

/// Result of a publish, claim or commit. Backpressure is a result, not an error.
// clang-format off (it takes an attributed enum with a base for a braced initialiser)
enum class [[nodiscard]] PublishStatus : std::uint8_t{
    ok,            ///< committed (or claimed, for try_claim)
    full,          ///< reject policy: the ring holds unread data for a gating reader
    timeout,       ///< block policy: the slowest reader did not move before the timeout
    too_large,     ///< the message does not fit the slot's payload
    abandoned,     ///< the claim was taken away (the writer stalled past the unblock timeout)
    invalid,       ///< the handle or claim is not usable (moved-from, already committed)
    removed,       ///< the channel was removed (rm, gc, Channel::remove, or its file
                   ///< unlinked): nothing published now reaches a reader; reopen by name
    segment_lost,  ///< the channel's file shrank under this process: its pages are
                   ///< gone and the handle is dead (the process survives; see guarantees)
};
// clang-format on

/// Result of a poll or read.
// clang-format off (it takes an attributed enum with a base for a braced initialiser)
enum class [[nodiscard]] PollStatus : std::uint8_t{
    ok,                ///< a message was delivered
    empty,             ///< nothing new (yet)
    lapped,            ///< messages were lost (overwritten or evicted); counted; call again
    buffer_too_small,  ///< copy-out poll: the payload is larger than the buffer (message kept)
    timeout,           ///< a waiting poll gave up
    corrupted,         ///< a slot held an impossible value: skipped, counted as lost
    invalid,           ///< the handle is not usable (moved-from)
    removed,           ///< the channel was removed and holds nothing more: reopen it by name
    segment_lost,      ///< the channel's file shrank under this process: the handle is dead
};
// clang-format on

/// Readable names for the status enums ("timeout"). Thread-safe.
std::string_view to_string(PublishStatus s) noexcept;
std::string_view to_string(PollStatus s) noexcept;
std::string_view to_string(Policy p) noexcept;
/// Parses "block" / "drop_oldest" / "reject". Thread-safe.
std::optional<Policy> parse_policy(std::string_view s) noexcept;
std::string_view to_string(TimestampSource t) noexcept;
/// Parses "tsc" / "realtime" / "none". Thread-safe.
std::optional<TimestampSource> parse_timestamps(std::string_view s) noexcept;

/// Per-message metadata set by the publisher. timestamp_ns 0 means "now".
/// The key says what a message is about (per-key ordering in groups; many
/// messages share it); the id says which message it is (unique per event,
/// kept by the DLQ and redrive): deduplicate on the id, never on the key
/// (docs/guarantees.md section 6). `id` comes last so that positional
/// initialisers written before it existed keep their meaning.
struct MessageMeta {
  std::uint64_t key = 0;             ///< user key (partitioning, per-key ordering)
  std::uint64_t correlation_id = 0;  ///< request/response pairing
  std::uint32_t type = 0;            ///< user message type
  std::uint64_t timestamp_ns = 0;    ///< CLOCK_REALTIME ns; 0 = stamped at commit
  std::uint64_t id = 0;              ///< message id (the dedup identity); 0 = none
};

/// A message as a reader sees it. For zero-copy reads `payload` points into
/// the channel's read-only mapping and is valid only until the read is
/// validated; for copy-out polls it points into the caller's buffer.
struct Message {
  std::uint64_t sequence = 0;
  std::uint64_t timestamp_ns = 0;
  std::uint64_t key = 0;
  std::uint64_t id = 0;  ///< the publisher's MessageMeta::id (0 = none)
  std::uint64_t correlation_id = 0;
  std::uint32_t type = 0;
  std::uint32_t attempt = 0;
  std::span<const std::byte> payload;
};

/// How a waiting call waits. Blocking uses a shared futex and costs the
/// publisher a FUTEX_WAKE only while somebody sleeps.
enum class WaitStrategy : std::uint8_t {
  busy_spin,  ///< spin with PAUSE: lowest latency, burns a core
  yield,      ///< spin, then sched_yield
  backoff,    ///< spin, yield, then sleeps growing to 1 ms
  block,      ///< spin briefly, then sleep on the channel's futex
};

/// Parameters fixed when a channel is created.
struct ChannelOptions {
  std::uint32_t slot_size = 256;  ///< bytes per slot, header included; multiple of 64, 64..16 MiB
  std::uint32_t capacity = 1024;  ///< slots; a power of two, 2..2^30
  Policy policy = Policy::block;
  std::uint32_t max_subscribers = 32;  ///< subscriber table entries (1..4096)
  std::uint32_t max_publishers = 32;   ///< publisher table entries (1..4096)
  std::uint32_t max_groups = 4;        ///< consumer groups (0..256); each holds a lease per slot
  std::uint32_t max_consumers = 16;    ///< consumers per group (1..255)
  std::uint32_t mode = 0600;           ///< permission bits of the segment
  /// A claim not committed within this time is marked abandoned by whoever
  /// finds it (readers skip it; the late writer's commit reports `abandoned`).
  std::uint64_t unblock_timeout_ns = 2'000'000'000ULL;
  /// Block policy only: a subscriber that stays a full ring behind for longer
  /// than this is evicted (detached as lapped). 0 disables eviction.
  std::uint64_t eviction_timeout_ns = 0;
  /// What publishers stamp messages with when MessageMeta::timestamp_ns is 0.
  /// Every source reads back as CLOCK_REALTIME ns; `tsc` keeps the clock
  /// call (~20-30 ns through the vDSO) off the publish path. See
  /// docs/guarantees.md for the accuracy of each.
  TimestampSource timestamps = TimestampSource::tsc;
  /// The directory of the channel's disk archive (docs/archive.md): where an
  /// archiver writes every message and where replay older than the ring
  /// reads. Empty: `$SHMBUS_ARCHIVE_DIR/<bus>/<channel>` if that variable is
  /// set when the channel is created, else no archive. A relative path is
  /// made absolute at create; at most 1023 bytes. Stored in the channel, so
  /// every process that opens it finds the same archive.
  std::string archive_dir;
  /// Not a channel parameter: whose existing segment open_or_create (and a
  /// group's DLQ) accepts besides this process's uid and root.
  Trust trust;
};

/// Where a new subscriber starts reading. On a channel with an archive
/// (ChannelOptions::archive_dir), positions older than the ring are read from
/// the archive, then the ring, with no gap and no duplicate.
struct StartAt {
  enum class Kind : std::uint8_t { earliest, latest, sequence, timestamp };
  Kind kind = Kind::latest;
  std::uint64_t value = 0;  ///< the sequence, or CLOCK_REALTIME ns for `timestamp`

  /// The oldest message kept: the archive's first record on a channel whose
  /// archive holds older ones than the ring, else the ring's oldest.
  static StartAt earliest() noexcept { return {Kind::earliest, 0}; }
  static StartAt latest() noexcept { return {Kind::latest, 0}; }
  /// Sequence `s`. Older than the ring: read from the archive; older than
  /// what is kept (or no archive): the first poll returns `lapped`, the
  /// sequences up to the oldest kept counted as lost.
  static StartAt at_sequence(std::uint64_t s) noexcept { return {Kind::sequence, s}; }
  /// The first message published at or after the time. If the ring no
  /// longer holds every message since then (its oldest is newer and older
  /// ones were overwritten), a subscriber on a channel with an archive
  /// starts at the archive's first record at or after the time (found by
  /// its time index); what neither holds (the ring without an archive)
  /// makes the first poll return `lapped`, `lost` counting every sequence
  /// that may be from then (an upper bound: their times are gone); a group
  /// (which reads the ring only) counts them in its `lost`.
  static StartAt at_time(std::uint64_t realtime_ns) noexcept { return {Kind::timestamp, realtime_ns}; }
};

/// Options of Channel::subscribe.
struct SubscribeOptions {
  /// Empty: anonymous (freed when the process is gone). Otherwise durable:
  /// the cursor survives the process and a later subscribe with the same
  /// name resumes where it left off (`start` is then ignored).
  std::string name;
  StartAt start = StartAt::latest();
  WaitStrategy wait = WaitStrategy::block;
};

/// Result of ack, nack and extend.
// clang-format off (it takes an attributed enum with a base for a braced initialiser)
enum class [[nodiscard]] AckStatus : std::uint8_t{
    ok,               ///< done
    lease_lost,       ///< the lease expired (the message may be redelivered or already
                      ///< acked by another consumer), or was already ended: nothing changed
    invalid,          ///< not a delivery of this consumer (or an empty handle)
    dlq_unavailable,  ///< the DLQ could not take the message now (full, or not
                      ///< creatable); it stays with the group and is retried
};
// clang-format on
std::string_view to_string(AckStatus s) noexcept;

/// Settings of a consumer group, fixed when the group is first created
/// (joining an existing group with other settings is a parameter_mismatch).
/// How a consumer group hands out messages, fixed when the group is created.
enum class GroupOrdering : std::uint32_t {
  none = 0,     ///< competing consumers: any message to any consumer, in parallel
  per_key = 1,  ///< a key's messages one at a time, in sequence order: a message is
                ///< handed out only once every earlier message of its key is acked
                ///< or dead-lettered (guarantees.md, "Ordering")
};
std::string_view to_string(GroupOrdering o) noexcept;
/// Parses "none" / "per_key". Thread-safe.
std::optional<GroupOrdering> parse_ordering(std::string_view s) noexcept;

struct GroupOptions {
  StartAt start = StartAt::earliest();                      ///< where a new group starts
  std::uint64_t visibility_timeout_ns = 30'000'000'000ULL;  ///< lease length
  std::uint32_t max_deliveries = 5;                         ///< attempts before the DLQ (1..255)
  std::uint64_t backoff_base_ns = 100'000'000ULL;           ///< nack delay after the 1st attempt
  std::uint64_t backoff_cap_ns = 30'000'000'000ULL;         ///< the delay never exceeds this
  std::uint32_t jitter_permille = 200;                      ///< +-20% random spread on each delay
  /// DLQ channel on the same bus; empty: "<channel>-dlq". Created on first use
  /// with room for the source's largest message plus the DLQ record header.
  std::string dlq;
  WaitStrategy wait = WaitStrategy::block;  ///< for receive_wait
  /// none: any message to any consumer. per_key: the messages of one key go
  /// one at a time, in sequence order (see GroupOrdering): a nack, an
  /// expired lease or a consumer's death holds back only that key, and the
  /// redelivery comes before the key's later messages; a message that
  /// reaches the DLQ frees its key (docs/protocol.md, section 8.11).
  GroupOrdering ordering = GroupOrdering::none;
  /// per_key only: how many sequences past the group's floor a receive looks
  /// at for a key that is free (1..capacity; 0 = min(capacity, 4096)). A
  /// message further on waits until the floor moves, so a key held back
  /// near the floor (a slow or retried message) narrows what the group sees
  /// to this window; each receive reads up to this many lease words. Joining
  /// with a window above the capacity is invalid_argument; 0 is resolved at
  /// join and the resolved value is the group's setting.
  std::uint32_t order_window = 0;
};

/// Why a message went to the DLQ.
enum class DeadLetterReason : std::uint32_t {
  max_deliveries = 1,  ///< delivered max_deliveries times without an ack
  rejected = 2,        ///< a consumer called dead_letter() on it
};
std::string_view to_string(DeadLetterReason r) noexcept;

/// A message delivered to one consumer of a group, with its lease.
struct Delivery {
  Message message;  ///< payload in the caller's buffer
  std::uint64_t sequence = 0;
  std::uint32_t attempt = 0;      ///< 1 on first delivery
  std::uint64_t deadline_ns = 0;  ///< CLOCK_MONOTONIC: lease ends (redelivery) after this
  std::uint64_t lease = 0;        ///< the lease word this delivery holds (opaque)
  std::uint32_t group = 0;        ///< group index (opaque)
};

/// A claimed slot (zero-copy publish): write up to payload.size() bytes into
/// `payload`, then commit or abort it.
struct Claim {
  std::uint64_t sequence = 0;
  std::span<std::byte> payload;  ///< the slot's whole payload area (max_payload bytes)
  bool active = false;
};

/// One message of a batch publish: its payload and metadata.
struct OutMessage {
  std::span<const std::byte> payload;
  MessageMeta meta;
};

/// Counters of one subscriber, as its owner sees them.
struct SubscriberCounters {
  std::uint64_t cursor = 0;
  std::uint64_t delivered = 0;
  std::uint64_t lost = 0;
  std::uint64_t lapped_events = 0;
};

}  // namespace shmbus
