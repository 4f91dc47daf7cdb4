// Stats: a point-in-time snapshot of a channel's counters, cursors and
// owners (Channel::stats), for monitoring, the probe and tests. Standard
// library only: the messaging layer fills these same types.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <shmbus/types.hpp>

namespace shmbus {

/// One attached publisher: its counters since it attached (the entry's
/// counters minus their values when this owner took it).
struct PublisherStats {
  std::uint32_t index = 0;
  std::uint32_t pid = 0;
  bool alive = false;
  std::uint64_t published = 0;
  std::uint64_t rejected = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t blocked_ns = 0;
  std::uint64_t aborted = 0;
  std::uint64_t lost_claims = 0;  ///< claims taken away as abandoned
};

struct SubscriberStats {
  std::uint32_t index = 0;
  std::string name;  ///< empty for anonymous subscribers
  bool durable = false;
  std::string state;  ///< "active", "detached", "evicted", "claiming"
  std::uint32_t pid = 0;
  bool alive = false;
  std::uint64_t cursor = 0;
  std::uint64_t lag = 0;  ///< head - cursor (0 if ahead)
  std::uint64_t delivered = 0;
  std::uint64_t lost = 0;
  std::uint64_t lapped_events = 0;
};

struct ConsumerStats {
  std::uint32_t index = 0;
  std::uint32_t pid = 0;
  bool alive = false;
  std::uint64_t delivered = 0;
  std::uint64_t acked = 0;
  std::uint64_t nacked = 0;
};

struct GroupStats {
  std::uint32_t index = 0;
  std::string name;
  std::string dlq;               ///< DLQ channel name (same bus)
  std::uint64_t next = 0;        ///< next sequence not yet taken by any consumer
  std::uint64_t floor = 0;       ///< every sequence below is finished
  std::uint64_t pending = 0;     ///< head - next (+ held_messages, per_key): committed or claimed, not yet delivered
  std::uint64_t unfinished = 0;  ///< head - floor: not yet acked / dead-lettered
  std::uint64_t in_flight = 0;   ///< leases held now (leased or being dead-lettered), dlq_due excluded
  std::uint64_t due = 0;         ///< nacked, waiting for their retry time (dlq_due excluded)
  /// Out of deliveries and nobody working on them: the last lease expired,
  /// its consumer died, a dead-lettering stalled, or a final nack the DLQ
  /// could not take. Never delivered again; the next receive of any
  /// consumer, or Channel::dead_letter_due (shmbus gc), moves them to the DLQ.
  std::uint64_t dlq_due = 0;
  std::uint64_t oldest_unacked_age_ns = 0;  ///< now - publish time of the message at floor
  std::uint64_t visibility_timeout_ns = 0;
  std::uint32_t max_deliveries = 0;
  std::uint64_t delivered = 0;
  std::uint64_t acked = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t nacked = 0;
  std::uint64_t expired = 0;
  std::uint64_t lost = 0;
  std::uint64_t dlq_failures = 0;
  std::uint64_t dead_consumer_releases = 0;
  GroupOrdering ordering = GroupOrdering::none;  ///< how the group hands out messages
  std::uint32_t order_window = 0;                ///< per_key: sequences past the floor a receive looks at
  // per_key groups only (0 otherwise), over the order window at the moment
  // of the snapshot. A message is held back when it is committed, not yet
  // handed out, and an earlier message of its key is unfinished (leased,
  // due for a retry, being dead-lettered, or itself held back).
  std::uint64_t held_keys = 0;           ///< distinct keys with a held-back message
  std::uint64_t held_messages = 0;       ///< held-back messages
  std::uint64_t held_oldest_age_ns = 0;  ///< now - publish time of the oldest held-back message
  std::vector<ConsumerStats> consumers;
};

/// A channel's disk archive as the probe sees it (ChannelStats::archive):
/// the directory's segment files and the archiver's entry.
struct ArchiveStats {
  std::string dir;                           ///< the channel's archive_dir
  bool present = false;                      ///< the directory holds at least one segment file
  std::uint64_t first_sequence = 0;          ///< the oldest archived sequence
  std::uint64_t end_sequence = 0;            ///< one past the newest archived record
  std::uint64_t files = 0;                   ///< segment files
  std::uint64_t bytes = 0;                   ///< their total size
  bool archiver = false;                     ///< the channel has an archiver entry (attached or detached)
  bool archiver_alive = false;               ///< ... whose process is alive
  std::uint64_t archiver_cursor = 0;         ///< where the archiver reads next
  std::uint64_t lag = 0;                     ///< head - archiver_cursor: published, not yet archived
  std::uint64_t lost = 0;                    ///< sequences the archiver could not archive (gaps)
  std::uint64_t last_fsync_realtime_ns = 0;  ///< the archiver's last fdatasync (0: none yet)
  std::uint64_t fsync_age_ns = 0;            ///< now - last_fsync_realtime_ns at the snapshot (0: none yet)
  std::string error;                         ///< why the directory could not be read ("" if it could)
};

struct ChannelStats {
  std::string bus;
  std::string name;
  Policy policy = Policy::block;
  TimestampSource timestamps = TimestampSource::tsc;  ///< what publishers stamp with
  std::uint32_t capacity = 0;
  std::uint32_t slot_size = 0;
  std::uint32_t max_payload = 0;
  std::uint32_t max_groups = 0;  ///< group table entries (0 on a DLQ channel)
  std::uint64_t head = 0;        ///< next sequence to be claimed
  std::uint64_t oldest = 0;      ///< oldest sequence possibly still in the ring
  std::uint64_t depth = 0;       ///< head - slowest gating cursor (unread by someone)
  // Producer totals: sums over every publisher entry, free ones included.
  // An entry's counters are never reset, so these never go back while the
  // channel exists, also when publishers exit or die.
  std::uint64_t published = 0;
  std::uint64_t rejected = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t blocked_ns = 0;
  std::uint64_t aborted = 0;
  std::uint64_t lost_claims = 0;
  std::uint64_t abandoned = 0;  ///< claims marked abandoned by others
  std::uint64_t evictions = 0;
  std::uint64_t dead_reclaimed = 0;  ///< subscriber entries recovered from dead owners
  std::uint32_t creator_pid = 0;
  std::uint64_t epoch = 0;
  std::uint64_t created_realtime_ns = 0;
  std::vector<PublisherStats> publishers;
  std::vector<SubscriberStats> subscribers;
  std::vector<GroupStats> groups;
  /// Set when the channel has an archive directory (ChannelOptions::archive_dir).
  std::optional<ArchiveStats> archive;
};

}  // namespace shmbus
