// The channel segment's layout: this is an ABI shared by every process that
// maps the channel, so every struct is standard-layout, fixed-width, holds
// only lock-free atomics and offsets (no pointers), and has its size,
// alignment and field offsets asserted below.
//
//  offset 0                                                     total_size
//  +-------------+---------------+------------------+-------------+-------+
//  | ChannelHdr  | ProducerBlock | PublisherEntry[] | Subscriber  | Group |
//  | (one page)  | (4 x 128 B)   | (128 B each)     | Entry[]     | blocks|
//  +-------------+---------------+------------------+-------------+-------+
//  |<------------------------ control area (read-write) --------------->|
//  +--------------------------------------------------------------------+
//  | slot 0 | slot 1 | ...                          | slot cap-1        |  data area
//  +--------------------------------------------------------------------+  (page-aligned;
//  each slot: SlotHeader (56 B: stamp, writer, metadata) + payload         read-only for
//  (slot_size - 56 B); the stamp shares the slot's first line with the     subscribers)
//  metadata and the first 8 payload bytes.
//
// The commit word (stamp) lives in the slot's first cache line, as in Aeron
// and Chronicle: a reader spins on the line it reads next, and a publisher's
// commit lands on a line it already owns. Readers map the data area
// read-only; the one write they may need (abandoning a dead writer's claim,
// after at least a millisecond of stall) goes through a one-page writable
// mapping made for that CAS and dropped after it (ChannelState::cas_stamp).
// docs/protocol.md weighs the alternatives.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <shmbus/types.hpp>

namespace shmbus::bus {

inline constexpr std::size_t kCacheLine = 64;  // fixed: this is an ABI
inline constexpr std::size_t kHotSlot = 128;   // own slot for hot words (adjacent-line prefetch)
inline constexpr std::size_t kHeaderPage = 4096;
inline constexpr std::uint64_t kMagic = 0x5355424d48530a01ULL;  // "\x01\nSHMBUS" little-endian-ish
inline constexpr std::uint32_t kLayoutVersion = 5;              // bump on any change below
inline constexpr std::size_t kNameMax = 63;                     // channel / subscriber names, without NUL
inline constexpr std::size_t kArchiveDirMax = 1023;             // archive directory path, without NUL

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// Backpressure policy of a channel, fixed at creation (the public type).
using shmbus::Policy;

/// ChannelHeader.init_state values. A channel is linked under its name only
/// once it is initialised, so every named channel says kInitReady; the other
/// values remain for the dedup table's header.
enum InitState : std::uint32_t { kInitNone = 0, kInitRunning = 1, kInitReady = 2 };

/// ChannelHeader.removed values: why handles of this process must stop.
enum RemovedState : std::uint64_t {
  kChannelLive = 0,     ///< in use
  kChannelRemoved = 1,  ///< its name was removed (rm, gc, Channel::remove, or unlinked by hand)
  kChannelLost = 2,     ///< its file shrank under this process: written only into this
                        ///< process's private replacement pages (shm fault guard)
};

// A 64-byte name stored as eight 64-bit words: names are rewritten when a
// table entry is reused while other processes scan the table, so each word is
// an atomic (relaxed: the entry's state word, acquired first, orders them).
struct NameWords {
  std::atomic<std::uint64_t> w[8];
};
static_assert(sizeof(NameWords) == 64);

//  ChannelHeader (page 0)
//  0       magic (u64, written last at init, release)
//  8       layout_version (u32)   12 init_state (u32)
//  16      init_owner (u64: packed pid + start time)   24 removed (RemovedState)
//  32      abi_fingerprint        40 epoch          48 created_realtime_ns
//  56      creator_pid (u32)      60 policy (u32)
//  64      slot_size  68 capacity  72 max_subscribers  76 max_publishers
//  80      max_groups 84 max_payload
//  88      total_size 96 producer_offset 104 publishers_offset
//  112     subscribers_offset 120 groups_offset 128 timestamps (u32) 132 pad
//  136     data_offset 144 unblock_timeout_ns 152 eviction_timeout_ns
//  160     name (64 bytes)
//  224     max_consumers (u32)  228 pad  232 group_stride (u64)
//  240..4096 reserved (zero)
struct ChannelHeader {
  std::atomic<std::uint64_t> magic;
  std::atomic<std::uint32_t> layout_version;
  std::atomic<std::uint32_t> init_state;
  std::atomic<std::uint64_t> init_owner;  // shm::pack_process of the initialiser
  std::atomic<std::uint64_t> removed;     // RemovedState: set (release) before the name goes
  std::uint64_t abi_fingerprint;
  std::uint64_t epoch;
  std::uint64_t created_realtime_ns;
  std::uint32_t creator_pid;
  std::uint32_t policy;
  std::uint32_t slot_size;
  std::uint32_t capacity;
  std::uint32_t max_subscribers;
  std::uint32_t max_publishers;
  std::uint32_t max_groups;
  std::uint32_t max_payload;
  std::uint64_t total_size;
  std::uint64_t producer_offset;
  std::uint64_t publishers_offset;
  std::uint64_t subscribers_offset;
  std::uint64_t groups_offset;
  std::uint32_t timestamps;  // TimestampSource publishers stamp with
  std::uint32_t pad_ts;
  std::uint64_t data_offset;
  std::uint64_t unblock_timeout_ns;
  std::uint64_t eviction_timeout_ns;
  char name[64];
  std::uint32_t max_consumers;
  std::uint32_t pad0;
  std::uint64_t group_stride;
  char archive_dir[kArchiveDirMax + 1];  // absolute path of the disk archive; "" = none
  std::uint8_t reserved[kHeaderPage - 240 - (kArchiveDirMax + 1)];
};
static_assert(std::is_standard_layout_v<ChannelHeader>);
static_assert(sizeof(ChannelHeader) == kHeaderPage);
static_assert(offsetof(ChannelHeader, magic) == 0);
static_assert(offsetof(ChannelHeader, layout_version) == 8);
static_assert(offsetof(ChannelHeader, init_state) == 12);
static_assert(offsetof(ChannelHeader, init_owner) == 16);
static_assert(offsetof(ChannelHeader, removed) == 24);
static_assert(offsetof(ChannelHeader, abi_fingerprint) == 32);
static_assert(offsetof(ChannelHeader, epoch) == 40);
static_assert(offsetof(ChannelHeader, created_realtime_ns) == 48);
static_assert(offsetof(ChannelHeader, creator_pid) == 56);
static_assert(offsetof(ChannelHeader, policy) == 60);
static_assert(offsetof(ChannelHeader, slot_size) == 64);
static_assert(offsetof(ChannelHeader, capacity) == 68);
static_assert(offsetof(ChannelHeader, max_subscribers) == 72);
static_assert(offsetof(ChannelHeader, max_publishers) == 76);
static_assert(offsetof(ChannelHeader, max_groups) == 80);
static_assert(offsetof(ChannelHeader, max_payload) == 84);
static_assert(offsetof(ChannelHeader, total_size) == 88);
static_assert(offsetof(ChannelHeader, producer_offset) == 96);
static_assert(offsetof(ChannelHeader, publishers_offset) == 104);
static_assert(offsetof(ChannelHeader, subscribers_offset) == 112);
static_assert(offsetof(ChannelHeader, groups_offset) == 120);
static_assert(offsetof(ChannelHeader, timestamps) == 128);
static_assert(offsetof(ChannelHeader, data_offset) == 136);
static_assert(offsetof(ChannelHeader, unblock_timeout_ns) == 144);
static_assert(offsetof(ChannelHeader, eviction_timeout_ns) == 152);
static_assert(offsetof(ChannelHeader, name) == 160);
static_assert(offsetof(ChannelHeader, max_consumers) == 224);
static_assert(offsetof(ChannelHeader, group_stride) == 232);
static_assert(offsetof(ChannelHeader, archive_dir) == 240);

//  ProducerBlock: four 128-byte slots so that the claim counter, the gating
//  cache, each futex pair and the shared counters never share a line.
//  0    head: next sequence to claim (every publisher CASes / adds it)
//  128  gate_cache: last computed min(gating cursors); pub_sleeping flag; pub_futex
//  256  sub_sleeping flag; sub_futex (readers sleeping for a commit)
//  384  abandoned (claims marked abandoned), evictions, dead_reclaimed
struct ProducerBlock {
  alignas(kHotSlot) std::atomic<std::uint64_t> head;
  alignas(kHotSlot) std::atomic<std::uint64_t> gate_cache;
  std::atomic<std::uint32_t> pub_sleeping;
  std::atomic<std::uint32_t> pub_futex;
  alignas(kHotSlot) std::atomic<std::uint32_t> sub_sleeping;
  std::atomic<std::uint32_t> sub_futex;
  alignas(kHotSlot) std::atomic<std::uint64_t> abandoned;
  std::atomic<std::uint64_t> evictions;
  std::atomic<std::uint64_t> dead_reclaimed;
};
static_assert(std::is_standard_layout_v<ProducerBlock>);
static_assert(sizeof(ProducerBlock) == 4 * kHotSlot);
static_assert(alignof(ProducerBlock) == kHotSlot);
static_assert(offsetof(ProducerBlock, head) == 0);
static_assert(offsetof(ProducerBlock, gate_cache) == 128);
static_assert(offsetof(ProducerBlock, pub_sleeping) == 136);
static_assert(offsetof(ProducerBlock, pub_futex) == 140);
static_assert(offsetof(ProducerBlock, sub_sleeping) == 256);
static_assert(offsetof(ProducerBlock, sub_futex) == 260);
static_assert(offsetof(ProducerBlock, abandoned) == 384);
static_assert(offsetof(ProducerBlock, evictions) == 392);
static_assert(offsetof(ProducerBlock, dead_reclaimed) == 400);

/// Table entry states (low 32 bits of an entry's `control` word; the high 32
/// bits hold the owner pid, so one CAS changes state and owner together).
enum EntryState : std::uint32_t {
  kEntryFree = 0,      ///< unused
  kEntryClaiming = 1,  ///< a free entry being filled in by the pid in the high bits
  kEntryActive = 2,    ///< in use by a live owner (pid in the high bits)
  kEntryDetached = 3,  ///< durable subscriber without a process: keeps its cursor (and gates)
  kEntryEvicted = 4,   ///< detached as lapped by a publisher; the owner learns on its next poll
  kEntryResuming = 5,  ///< a durable entry being taken over by the pid in the high bits (cursor intact)
};
inline constexpr std::uint64_t make_control(std::uint32_t state, std::uint32_t pid) noexcept {
  return (static_cast<std::uint64_t>(pid) << 32) | state;
}
inline constexpr std::uint32_t control_state(std::uint64_t c) noexcept { return static_cast<std::uint32_t>(c); }
inline constexpr std::uint32_t control_pid(std::uint64_t c) noexcept { return static_cast<std::uint32_t>(c >> 32); }

//  PublisherEntry (128 B): one per Publisher handle; counters have a single
//  writer (the owning handle), so they are updated without locked operations.
//  The counters are never reset: an entry freed and taken again keeps
//  counting, so the sum over all entries (free ones included) is the
//  channel's monotonic total. The owner records the counters at attach in
//  the base words; counter - base is what the current owner did.
//    0 control  8 owner_start  16 published  24 rejected  32 timeouts
//   40 blocked_ns  48 aborted  56 lost_claims (claims taken away as abandoned)
//   64 base_published  72 base_rejected  80 base_timeouts  88 base_blocked_ns
//   96 base_aborted  104 base_lost_claims  112 reserved (16 B)
struct PublisherEntry {
  std::atomic<std::uint64_t> control;
  std::atomic<std::uint64_t> owner_start;
  std::atomic<std::uint64_t> published;
  std::atomic<std::uint64_t> rejected;
  std::atomic<std::uint64_t> timeouts;
  std::atomic<std::uint64_t> blocked_ns;
  std::atomic<std::uint64_t> aborted;
  std::atomic<std::uint64_t> lost_claims;
  std::atomic<std::uint64_t> base_published;
  std::atomic<std::uint64_t> base_rejected;
  std::atomic<std::uint64_t> base_timeouts;
  std::atomic<std::uint64_t> base_blocked_ns;
  std::atomic<std::uint64_t> base_aborted;
  std::atomic<std::uint64_t> base_lost_claims;
  std::uint8_t reserved[16];
};
static_assert(std::is_standard_layout_v<PublisherEntry>);
static_assert(sizeof(PublisherEntry) == 128);
static_assert(offsetof(PublisherEntry, control) == 0);
static_assert(offsetof(PublisherEntry, owner_start) == 8);
static_assert(offsetof(PublisherEntry, published) == 16);
static_assert(offsetof(PublisherEntry, rejected) == 24);
static_assert(offsetof(PublisherEntry, timeouts) == 32);
static_assert(offsetof(PublisherEntry, blocked_ns) == 40);
static_assert(offsetof(PublisherEntry, aborted) == 48);
static_assert(offsetof(PublisherEntry, lost_claims) == 56);
static_assert(offsetof(PublisherEntry, base_published) == 64);
static_assert(offsetof(PublisherEntry, base_rejected) == 72);
static_assert(offsetof(PublisherEntry, base_timeouts) == 80);
static_assert(offsetof(PublisherEntry, base_blocked_ns) == 88);
static_assert(offsetof(PublisherEntry, base_aborted) == 96);
static_assert(offsetof(PublisherEntry, base_lost_claims) == 104);
static_assert(offsetof(PublisherEntry, reserved) == 112);

/// SubscriberEntry.flags bits.
inline constexpr std::uint32_t kSubDurable = 1u;
/// The channel's archiver (bus/archive/archiver.hpp): while such an entry
/// gates, no other subscriber entry does (docs/protocol.md 13.12).
inline constexpr std::uint32_t kSubArchiver = 2u;

//  SubscriberEntry (256 B): line pair 0 is written rarely (attach, detach,
//  eviction watch); line pair 1 is the owner's hot cursor and counters.
//    0 control  8 owner_start  16 attached_realtime_ns  24 flags  28 pad
//   32 name (64 B)  96 evict_watch_cursor  104 evict_watch_since_ns
//  128 cursor (next sequence to read)  136 delivered  144 lost  152 lapped_events
struct SubscriberEntry {
  std::atomic<std::uint64_t> control;
  std::atomic<std::uint64_t> owner_start;
  std::atomic<std::uint64_t> attached_realtime_ns;
  std::atomic<std::uint32_t> flags;
  std::uint32_t pad0;
  NameWords name;
  std::atomic<std::uint64_t> evict_watch_cursor;
  std::atomic<std::uint64_t> evict_watch_since_ns;
  std::atomic<std::uint64_t> archive_synced_ns;  // the archiver's entry: CLOCK_REALTIME of its last fdatasync
  std::uint8_t pad1[8];
  alignas(kHotSlot) std::atomic<std::uint64_t> cursor;
  std::atomic<std::uint64_t> delivered;
  std::atomic<std::uint64_t> lost;
  std::atomic<std::uint64_t> lapped_events;
  std::uint8_t pad2[96];
};
static_assert(std::is_standard_layout_v<SubscriberEntry>);
static_assert(sizeof(SubscriberEntry) == 256);
static_assert(offsetof(SubscriberEntry, control) == 0);
static_assert(offsetof(SubscriberEntry, owner_start) == 8);
static_assert(offsetof(SubscriberEntry, attached_realtime_ns) == 16);
static_assert(offsetof(SubscriberEntry, flags) == 24);
static_assert(offsetof(SubscriberEntry, name) == 32);
static_assert(offsetof(SubscriberEntry, evict_watch_cursor) == 96);
static_assert(offsetof(SubscriberEntry, evict_watch_since_ns) == 104);
static_assert(offsetof(SubscriberEntry, archive_synced_ns) == 112);
static_assert(offsetof(SubscriberEntry, cursor) == 128);
static_assert(offsetof(SubscriberEntry, delivered) == 136);
static_assert(offsetof(SubscriberEntry, lost) == 144);
static_assert(offsetof(SubscriberEntry, lapped_events) == 152);

//  Group region (at groups_offset): max_groups blocks of group_stride bytes:
//
//  +------------+---------------------------+-------------------------+
//  | GroupEntry | ConsumerEntry[max_cons.]  | lease word [capacity]   |
//  | (640 B)    | (64 B each, 128-aligned)  | (8 B each, 128-aligned) |
//  +------------+---------------------------+-------------------------+
//
//  GroupEntry: 0..255 identity and settings (written while claiming, then
//  published by the release of `control`); 256 next; 384 floor; 512 counters.
//    0 control  8 visibility_timeout_ns  16 backoff_base_ns  24 backoff_cap_ns
//   32 max_deliveries  36 jitter_permille  40 created_realtime_ns  48 name (64)
//  112 dlq channel name (64)  176 reserved
//  256 next: the next sequence no consumer has taken yet
//  384 floor: every sequence below it is acked, dead-lettered or lost
//  512 delivered 520 acked 528 redelivered 536 dead_lettered 544 nacked
//  552 expired 560 lost 568 dlq_failures 576 dead_consumer_releases
struct GroupEntry {
  std::atomic<std::uint64_t> control;
  std::uint64_t visibility_timeout_ns;
  std::uint64_t backoff_base_ns;
  std::uint64_t backoff_cap_ns;
  std::uint32_t max_deliveries;
  std::uint32_t jitter_permille;
  std::uint64_t created_realtime_ns;
  NameWords name;
  NameWords dlq;
  std::uint32_t ordering;      ///< GroupOrdering
  std::uint32_t order_window;  ///< per_key: sequences past the floor a receive looks at
  std::uint8_t reserved[72];
  alignas(kHotSlot) std::atomic<std::uint64_t> next;
  alignas(kHotSlot) std::atomic<std::uint64_t> floor;
  alignas(kHotSlot) std::atomic<std::uint64_t> delivered;
  std::atomic<std::uint64_t> acked;
  std::atomic<std::uint64_t> redelivered;
  std::atomic<std::uint64_t> dead_lettered;
  std::atomic<std::uint64_t> nacked;
  std::atomic<std::uint64_t> expired;
  std::atomic<std::uint64_t> lost;
  std::atomic<std::uint64_t> dlq_failures;
  std::atomic<std::uint64_t> dead_consumer_releases;
  std::uint8_t pad[56];
};
static_assert(std::is_standard_layout_v<GroupEntry>);
static_assert(sizeof(GroupEntry) == 640);
static_assert(offsetof(GroupEntry, control) == 0);
static_assert(offsetof(GroupEntry, visibility_timeout_ns) == 8);
static_assert(offsetof(GroupEntry, backoff_base_ns) == 16);
static_assert(offsetof(GroupEntry, backoff_cap_ns) == 24);
static_assert(offsetof(GroupEntry, max_deliveries) == 32);
static_assert(offsetof(GroupEntry, jitter_permille) == 36);
static_assert(offsetof(GroupEntry, created_realtime_ns) == 40);
static_assert(offsetof(GroupEntry, name) == 48);
static_assert(offsetof(GroupEntry, dlq) == 112);
static_assert(offsetof(GroupEntry, ordering) == 176);
static_assert(offsetof(GroupEntry, order_window) == 180);
static_assert(offsetof(GroupEntry, next) == 256);
static_assert(offsetof(GroupEntry, floor) == 384);
static_assert(offsetof(GroupEntry, delivered) == 512);
static_assert(offsetof(GroupEntry, acked) == 520);
static_assert(offsetof(GroupEntry, redelivered) == 528);
static_assert(offsetof(GroupEntry, dead_lettered) == 536);
static_assert(offsetof(GroupEntry, nacked) == 544);
static_assert(offsetof(GroupEntry, expired) == 552);
static_assert(offsetof(GroupEntry, lost) == 560);
static_assert(offsetof(GroupEntry, dlq_failures) == 568);
static_assert(offsetof(GroupEntry, dead_consumer_releases) == 576);

//  ConsumerEntry (64 B): one per member of a group.
//  0 control (state | pid)  8 owner_start  16 delivered  24 acked  32 nacked
//  40 joined_realtime_ns  48 reserved
struct ConsumerEntry {
  std::atomic<std::uint64_t> control;
  std::atomic<std::uint64_t> owner_start;
  std::atomic<std::uint64_t> delivered;
  std::atomic<std::uint64_t> acked;
  std::atomic<std::uint64_t> nacked;
  std::atomic<std::uint64_t> joined_realtime_ns;
  std::uint8_t reserved[16];
};
static_assert(std::is_standard_layout_v<ConsumerEntry>);
static_assert(sizeof(ConsumerEntry) == 64);
static_assert(offsetof(ConsumerEntry, control) == 0);
static_assert(offsetof(ConsumerEntry, owner_start) == 8);
static_assert(offsetof(ConsumerEntry, delivered) == 16);
static_assert(offsetof(ConsumerEntry, acked) == 24);
static_assert(offsetof(ConsumerEntry, nacked) == 32);
static_assert(offsetof(ConsumerEntry, joined_realtime_ns) == 40);

//  Lease word (one per ring slot per group, parallel to the ring):
//    bits  0..2   state (LeaseState)
//    bits  3..10  attempt (deliveries so far, 0..255)
//    bits 11..18  owner: consumer index (leased, dead-lettering)
//    bits 19..34  lap: (sequence >> log2(capacity)) & 0xffff, the lap it is for
//    bits 35..63  deadline (leased, dead-lettering) or due time (due): CLOCK_MONOTONIC
//                 milliseconds modulo 2^29, compared with wrapping arithmetic
//                 (so every lease and delay must be shorter than 2^28 ms, 3.1 days)
//  Every transition of a lease is one CAS of this word. The all-zero word
//  means "never used since the channel was created".
enum LeaseState : std::uint64_t {
  kLeaseFree = 0,           ///< never delivered (only as the initial all-zero word)
  kLeaseLeased = 1,         ///< delivered to `owner` until `deadline`
  kLeaseDue = 2,            ///< nacked (or given back): deliverable again at `deadline`
  kLeaseAcked = 3,          ///< done
  kLeaseDeadLettered = 4,   ///< copied to the DLQ: done
  kLeaseLost = 5,           ///< overwritten before the group finished it (drop_oldest): done
  kLeaseDeadLettering = 6,  ///< `owner` is copying it to the DLQ until `deadline`
};
struct LeaseFields {
  std::uint64_t state = 0;
  std::uint32_t attempt = 0;
  std::uint32_t owner = 0;
  std::uint32_t lap = 0;
  std::uint64_t deadline_ms = 0;  ///< modulo 2^29
};
inline constexpr std::uint64_t kLeaseClockMask = (1ULL << 29) - 1;
inline constexpr std::uint64_t kMaxLeaseMs = 1ULL << 28;
inline constexpr std::uint32_t kMaxAttempts = 255;
inline constexpr std::uint32_t kMaxConsumers = 255;
inline constexpr std::uint64_t make_lease(const LeaseFields& f) noexcept {
  return (f.state & 7u) | (static_cast<std::uint64_t>(f.attempt & 0xffu) << 3) |
         (static_cast<std::uint64_t>(f.owner & 0xffu) << 11) | (static_cast<std::uint64_t>(f.lap & 0xffffu) << 19) |
         ((f.deadline_ms & kLeaseClockMask) << 35);
}
inline constexpr LeaseFields lease_fields(std::uint64_t w) noexcept {
  return {w & 7u, static_cast<std::uint32_t>((w >> 3) & 0xffu), static_cast<std::uint32_t>((w >> 11) & 0xffu),
          static_cast<std::uint32_t>((w >> 19) & 0xffffu), w >> 35};
}
/// Whether the lease clock `now_ms` has reached `deadline_ms` (both modulo 2^29).
inline constexpr bool lease_time_reached(std::uint64_t deadline_ms, std::uint64_t now_ms) noexcept {
  return ((now_ms - deadline_ms) & kLeaseClockMask) < kMaxLeaseMs;
}
inline constexpr bool lease_final(std::uint64_t state) noexcept {
  return state == kLeaseAcked || state == kLeaseDeadLettered || state == kLeaseLost;
}

/// What publishers of a channel stamp messages with, fixed at creation (the
/// public type). Readers convert every stored timestamp to CLOCK_REALTIME ns
/// (see stored_time_is_ticks).
using shmbus::TimestampSource;

//  Stamp word (SlotHeader::stamp):
//    bits 63..2  sequence the slot holds (or is being written for)
//    bits  1..0  state: 0 empty (never written), 1 writing, 2 committed, 3 abandoned
enum StampState : std::uint64_t { kStampEmpty = 0, kStampWriting = 1, kStampCommitted = 2, kStampAbandoned = 3 };
inline constexpr std::uint64_t make_stamp(std::uint64_t seq, std::uint64_t state) noexcept {
  return (seq << 2) | state;
}
inline constexpr std::uint64_t stamp_seq(std::uint64_t s) noexcept { return s >> 2; }
inline constexpr std::uint64_t stamp_state(std::uint64_t s) noexcept { return s & 3u; }
inline constexpr std::uint64_t kMaxSequence = (1ULL << 62) - 1;

//  SlotMeta (40 B): the plain metadata of a message, written by the one
//  publisher that holds the slot's stamp in `writing`, read after an acquire
//  of `committed` and re-validated by the stamp (seqlock).
//  0 key  8 id (the message id, 0 = none)  16 correlation_id  24 type
//  28 size: payload length (bits 0..23) | attempt (bits 24..31)
//  32 timestamp (see stored_time_is_ticks)
//  key, id, correlation_id and type lie as in shmbus::Message (key .. type,
//  then attempt where size is), so a copy-out reader moves the four as one
//  28-byte run: two overlapping 16-byte loads and stores (subscriber_core.cpp).
struct SlotMeta {
  std::uint64_t key;
  std::uint64_t id;
  std::uint64_t correlation_id;
  std::uint32_t type;
  std::uint32_t size;
  std::uint64_t timestamp;
};
static_assert(std::is_standard_layout_v<SlotMeta>);
static_assert(sizeof(SlotMeta) == 40);
static_assert(offsetof(SlotMeta, key) == 0);
static_assert(offsetof(SlotMeta, id) == 8);
static_assert(offsetof(SlotMeta, correlation_id) == 16);
static_assert(offsetof(SlotMeta, type) == 24);
static_assert(offsetof(SlotMeta, size) == 28);
static_assert(offsetof(SlotMeta, timestamp) == 32);

/// SlotMeta::size: the payload length (slots are at most 16 MiB, so it fits
/// 24 bits) and the delivery attempt a DLQ copy carries (0..255).
inline constexpr std::uint32_t kSizeLengthMask = (1u << 24) - 1;
inline constexpr std::uint32_t pack_size(std::uint32_t length, std::uint32_t attempt) noexcept {
  return (length & kSizeLengthMask) | ((attempt & 0xffu) << 24);
}
inline constexpr std::uint32_t size_length(std::uint32_t size) noexcept { return size & kSizeLengthMask; }
inline constexpr std::uint32_t size_attempt(std::uint32_t size) noexcept { return size >> 24; }

/// SlotMeta::timestamp with bit 63 set holds counter ticks (TimestampSource
/// tsc) in bits 0..62; clear, CLOCK_REALTIME ns (realtime, or a time the
/// publisher gave). Realtime ns stay below 2^63 until the year 2262.
inline constexpr std::uint64_t kTicksFlag = 1ULL << 63;
inline constexpr bool stored_time_is_ticks(std::uint64_t t) noexcept { return (t & kTicksFlag) != 0; }

//  SlotHeader (56 B, at the start of each slot in the data area, so in the
//  slot's first cache line with the first 8 payload bytes: an 8-byte message
//  is one line):
//  0 stamp   8 writer (low 32 bits of the sequence being written, pid of its
//  writer: lets a reader abandon a dead writer's claim at once instead of
//  waiting out the unblock timeout; see slots.hpp make_writer)
//  16 meta (SlotMeta)   56 payload
struct SlotHeader {
  std::atomic<std::uint64_t> stamp;
  std::atomic<std::uint64_t> writer;
  SlotMeta meta;
};
static_assert(std::is_standard_layout_v<SlotHeader>);
static_assert(sizeof(SlotHeader) == 56);
static_assert(sizeof(SlotHeader) + 8 <= kCacheLine);
static_assert(offsetof(SlotHeader, stamp) == 0);
static_assert(offsetof(SlotHeader, writer) == 8);
static_assert(offsetof(SlotHeader, meta) == 16);

inline constexpr std::uint32_t kSlotHeaderSize = sizeof(SlotHeader);

/// A fingerprint of the layout: sizes and key offsets of every shared struct.
/// Two builds that disagree on any of them refuse each other's segments.
inline constexpr std::uint64_t abi_fingerprint() noexcept {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a over the layout numbers
  const std::uint64_t parts[] = {kLayoutVersion,
                                 sizeof(ChannelHeader),
                                 sizeof(ProducerBlock),
                                 sizeof(PublisherEntry),
                                 sizeof(SubscriberEntry),
                                 sizeof(SlotHeader),
                                 sizeof(SlotMeta),
                                 sizeof(GroupEntry),
                                 sizeof(ConsumerEntry),
                                 offsetof(GroupEntry, floor),
                                 offsetof(ChannelHeader, name),
                                 offsetof(ProducerBlock, sub_futex),
                                 offsetof(SubscriberEntry, cursor),
                                 offsetof(SlotHeader, meta),
                                 offsetof(SlotMeta, id),
                                 offsetof(SlotMeta, size),
                                 offsetof(SlotMeta, timestamp),
                                 offsetof(ChannelHeader, timestamps),
                                 offsetof(ChannelHeader, archive_dir),
                                 kCacheLine,
                                 kHotSlot};
  for (std::uint64_t p : parts) {
    for (int i = 0; i < 8; ++i) {
      h ^= (p >> (8 * i)) & 0xffu;
      h *= 1099511628211ULL;
    }
  }
  return h;
}

}  // namespace shmbus::bus
