// Checkpoints of a channel's durable state, kept in its archive directory so
// that a channel created again after a reboot continues where it stopped:
// the head, the durable subscribers (name, cursor, flags: the archiver's own
// entry is one of them) and the groups (name, settings, floor).
//
// One file, `<archive dir>/checkpoint`, replaced atomically: written to a
// temporary file in the same directory, fdatasync'ed, renamed over the old
// one, and the directory fsync'ed. A reader therefore finds the previous
// checkpoint or the new one, whole; what it finds is checked (magic,
// version, sizes, counts, CRC32C) and a damaged file is an error naming it.
// The format is in docs/protocol.md ("Checkpoints"). Little-endian, like the
// archive's segment files.
#pragma once

#include <shmbus/result.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "bus/ring/channel_state.hpp"

namespace shmbus::bus::archive {

static_assert(std::endian::native == std::endian::little, "the checkpoint format is little-endian");

inline constexpr char kCheckpointMagic[8] = {'S', 'H', 'M', 'B', 'C', 'K', 'P', '1'};
inline constexpr std::uint32_t kCheckpointVersion = 1;
inline constexpr const char* kCheckpointFile = "checkpoint";
inline constexpr const char* kCheckpointTemp = "checkpoint.tmp";
/// Most entries a checkpoint may list (the channel tables' own limits).
inline constexpr std::uint32_t kCheckpointMaxSubscribers = 4096;
inline constexpr std::uint32_t kCheckpointMaxGroups = 256;

//  Checkpoint file: header, subscriber records, group records, CRC.
//   0                 8         12         16          24               32     40
//  +-----------------+---------+----------+-----------+----------------+------+
//  | magic "SHMBCKP1"| version | hdr size | file size | taken real ns  | head |
//  +-----------------+---------+----------+-----------+----------------+------+
//  40           44          48            52         56         64
//  +------------+-----------+-------------+----------+----------+
//  | subscribers| groups    | sub rec size| grp size | zero     |
//  +------------+-----------+-------------+----------+----------+
//  then `subscribers` x CheckpointSubscriber, `groups` x CheckpointGroup,
//  then crc32c(every byte before it) as a u32: file size = 64 + 128 s + 256 g + 4.
struct CheckpointHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t file_size;
  std::uint64_t taken_ns;
  std::uint64_t head;
  std::uint32_t subscribers;
  std::uint32_t groups;
  std::uint32_t subscriber_size;
  std::uint32_t group_size;
  std::uint8_t reserved[8];
};
static_assert(std::is_standard_layout_v<CheckpointHeader>);
static_assert(sizeof(CheckpointHeader) == 64);
static_assert(offsetof(CheckpointHeader, version) == 8);
static_assert(offsetof(CheckpointHeader, header_size) == 12);
static_assert(offsetof(CheckpointHeader, file_size) == 16);
static_assert(offsetof(CheckpointHeader, taken_ns) == 24);
static_assert(offsetof(CheckpointHeader, head) == 32);
static_assert(offsetof(CheckpointHeader, subscribers) == 40);
static_assert(offsetof(CheckpointHeader, groups) == 44);
static_assert(offsetof(CheckpointHeader, subscriber_size) == 48);
static_assert(offsetof(CheckpointHeader, group_size) == 52);
static_assert(offsetof(CheckpointHeader, reserved) == 56);

//  Subscriber record (128 bytes): one durable subscriber entry.
//   0 name (64, NUL-padded)  64 cursor  72 flags (u32)  76 state (u32: EntryState)
//  80 delivered  88 lost  96 lapped_events  104 attached_realtime_ns  112 zero (16)
struct CheckpointSubscriber {
  char name[64];
  std::uint64_t cursor;
  std::uint32_t flags;
  std::uint32_t state;
  std::uint64_t delivered;
  std::uint64_t lost;
  std::uint64_t lapped_events;
  std::uint64_t attached_ns;
  std::uint8_t reserved[16];
};
static_assert(std::is_standard_layout_v<CheckpointSubscriber>);
static_assert(sizeof(CheckpointSubscriber) == 128);
static_assert(offsetof(CheckpointSubscriber, cursor) == 64);
static_assert(offsetof(CheckpointSubscriber, flags) == 72);
static_assert(offsetof(CheckpointSubscriber, state) == 76);
static_assert(offsetof(CheckpointSubscriber, delivered) == 80);
static_assert(offsetof(CheckpointSubscriber, lost) == 88);
static_assert(offsetof(CheckpointSubscriber, lapped_events) == 96);
static_assert(offsetof(CheckpointSubscriber, attached_ns) == 104);
static_assert(offsetof(CheckpointSubscriber, reserved) == 112);

//  Group record (256 bytes): one group entry's settings, position and counters.
//    0 name (64)  64 dlq (64)  128 visibility_timeout_ns  136 backoff_base_ns
//  144 backoff_cap_ns  152 max_deliveries (u32)  156 jitter_permille (u32)
//  160 ordering (u32)  164 order_window (u32)  168 created_realtime_ns
//  176 floor  184 next  192 delivered  200 acked  208 redelivered
//  216 dead_lettered  224 nacked  232 expired  240 lost  248 dlq_failures
struct CheckpointGroup {
  char name[64];
  char dlq[64];
  std::uint64_t visibility_timeout_ns;
  std::uint64_t backoff_base_ns;
  std::uint64_t backoff_cap_ns;
  std::uint32_t max_deliveries;
  std::uint32_t jitter_permille;
  std::uint32_t ordering;
  std::uint32_t order_window;
  std::uint64_t created_ns;
  std::uint64_t floor;
  std::uint64_t next;
  std::uint64_t delivered;
  std::uint64_t acked;
  std::uint64_t redelivered;
  std::uint64_t dead_lettered;
  std::uint64_t nacked;
  std::uint64_t expired;
  std::uint64_t lost;
  std::uint64_t dlq_failures;
};
static_assert(std::is_standard_layout_v<CheckpointGroup>);
static_assert(sizeof(CheckpointGroup) == 256);
static_assert(offsetof(CheckpointGroup, dlq) == 64);
static_assert(offsetof(CheckpointGroup, visibility_timeout_ns) == 128);
static_assert(offsetof(CheckpointGroup, backoff_base_ns) == 136);
static_assert(offsetof(CheckpointGroup, backoff_cap_ns) == 144);
static_assert(offsetof(CheckpointGroup, max_deliveries) == 152);
static_assert(offsetof(CheckpointGroup, jitter_permille) == 156);
static_assert(offsetof(CheckpointGroup, ordering) == 160);
static_assert(offsetof(CheckpointGroup, order_window) == 164);
static_assert(offsetof(CheckpointGroup, created_ns) == 168);
static_assert(offsetof(CheckpointGroup, floor) == 176);
static_assert(offsetof(CheckpointGroup, next) == 184);
static_assert(offsetof(CheckpointGroup, delivered) == 192);
static_assert(offsetof(CheckpointGroup, lost) == 240);
static_assert(offsetof(CheckpointGroup, dlq_failures) == 248);

/// One durable subscriber as checkpointed.
struct SubscriberCheckpoint {
  std::string name;
  std::uint64_t cursor = 0;  ///< the next sequence it reads
  std::uint32_t flags = 0;   ///< SubscriberEntry::flags as they were (kSubDurable, the archiver's bit, ...)
  std::uint32_t state = 0;   ///< EntryState when taken: active, detached, resuming or evicted
  std::uint64_t delivered = 0;
  std::uint64_t lost = 0;
  std::uint64_t lapped_events = 0;
  std::uint64_t attached_ns = 0;  ///< CLOCK_REALTIME of its last attach
};

/// One group as checkpointed: every setting of its GroupEntry, its floor and
/// next, and its counters.
struct GroupCheckpoint {
  std::string name;
  std::string dlq;  ///< "" = none
  std::uint64_t visibility_timeout_ns = 0;
  std::uint64_t backoff_base_ns = 0;
  std::uint64_t backoff_cap_ns = 0;
  std::uint32_t max_deliveries = 0;
  std::uint32_t jitter_permille = 0;
  std::uint32_t ordering = 0;  ///< GroupOrdering
  std::uint32_t order_window = 0;
  std::uint64_t created_ns = 0;
  std::uint64_t floor = 0;  ///< every sequence below it was acked, dead-lettered or lost
  std::uint64_t next = 0;   ///< [floor, next) was handed out and possibly in flight
  std::uint64_t delivered = 0;
  std::uint64_t acked = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t nacked = 0;
  std::uint64_t expired = 0;
  std::uint64_t lost = 0;
  std::uint64_t dlq_failures = 0;
};

/// A channel's durable state at one moment.
struct Checkpoint {
  std::uint64_t taken_ns = 0;  ///< CLOCK_REALTIME when captured
  std::uint64_t head = 0;      ///< the channel's head then
  std::vector<SubscriberCheckpoint> subscribers;
  std::vector<GroupCheckpoint> groups;
};

/// Reads the head, every durable subscriber entry in a stable state (active,
/// detached, resuming, evicted) and every active group from the channel's
/// tables, each entry re-checked after it was read so that an entry reused
/// meanwhile is not mixed with its successor. Lock-free; never writes the
/// channel. Thread-safe.
Checkpoint capture_checkpoint(const ChannelState& ch);

/// The bytes of `cp` in the checkpoint format. invalid_argument if it lists
/// more entries than a channel can hold or a name longer than kNameMax.
/// Thread-safe.
Result<std::vector<std::byte>> encode_checkpoint(const Checkpoint& cp);

/// Parses checkpoint bytes read from `path` (named in errors): corrupted,
/// naming the file and what is wrong, unless every check passes. Never
/// reads outside `bytes`. Thread-safe.
Result<Checkpoint> decode_checkpoint(std::span<const std::byte> bytes, const std::string& path);

/// Writes `<dir>/checkpoint` atomically (temporary file in `dir`, write,
/// fdatasync, rename, directory fsync), creating `dir` if missing. Not
/// thread-safe against another writer of the same directory: one writer per
/// archive (the archiver).
Result<void> write_checkpoint(const std::string& dir, const Checkpoint& cp);

/// Reads `<dir>/checkpoint`: nullopt if there is none, corrupted (naming the
/// file) if it is damaged. Thread-safe.
Result<std::optional<Checkpoint>> read_checkpoint(const std::string& dir);

/// capture_checkpoint + write_checkpoint into `dir`: what the archiver calls
/// every checkpoint interval and when it stops. Returns what it wrote. Not
/// thread-safe against another writer of the same directory.
Result<Checkpoint> checkpoint_channel(const ChannelState& ch, const std::string& dir);

}  // namespace shmbus::bus::archive
