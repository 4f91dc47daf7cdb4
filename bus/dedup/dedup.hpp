// Idempotency (dedup) table: a shared-memory map from a 64-bit id (the
// publisher's Message::id, never the key: events share keys) to "claimed by a worker until a deadline" or "done until
// an expiry", so that the consumers of an at-least-once group can skip work that was already done. Lock-free: every
// entry is two 64-bit words and every transition is one CAS on the entry's state word. docs/guarantees.md says what it
// does and does not buy; the protocol is written down at the end of this header.
//
// The segment is "shmbus-dedup.<bus>.<name>". Names cannot hold a '.', so it
// can never be mistaken for a channel ("shmbus.<bus>.<channel>") and is never
// listed as one.
//
//  offset 0                    4096                           total_size
//  +---------------------------+------------------------------+--------+
//  | DedupHeader (one page)    | DedupEntry[capacity] (16 B)  | pad to |
//  |                           |                              | a page |
//  +---------------------------+------------------------------+--------+
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include <shmbus/dedup_types.hpp>

#include "bus/ring/layout.hpp"
#include "shm/result.hpp"
#include "shm/segment.hpp"

// The table's public types (DedupStatus, DedupOptions, DedupStats) are in
// <shmbus/dedup_types.hpp>; bus code names them unqualified.
namespace shmbus::bus {

inline constexpr std::uint64_t kDedupMagic = 0x5055444d48530a01ULL;  // "\x01\nSHMDUP" little-endian
inline constexpr std::uint64_t kDedupLayoutVersion = 1;              // bump on any change below
inline constexpr std::size_t kDedupHeaderSize = 4096;
inline constexpr std::uint32_t kDedupMinCapacity = 16;
inline constexpr std::uint32_t kDedupMaxCapacity = 1u << 26;
inline constexpr std::uint32_t kDedupMaxWindow = 256;

//  DedupHeader (page 0). Every field is an atomic u64 (fixed width, no
//  pointers). Parameters are written once, before init_state = ready
//  (release); the counters are statistics of rare events (relaxed).
//    0 magic (written last, with layout_version, before the ready release)
//    8 layout_version  16 init_state (InitState)  24 init_owner (packed pid)
//   32 abi_fingerprint  40 capacity  48 probe_window  56 ttl_ns
//   64 claim_timeout_ns  72 entries_offset  80 total_size
//   88 created_realtime_ns  96 creator_pid  104..127 reserved
//  128 takeovers 136 full 144 lost_completes 152 gave_up 160 freed_bindings
//  168 insert_races  176..255 reserved   256 name (64 B, eight words)   320..4095 reserved
struct DedupHeader {
  std::atomic<std::uint64_t> magic;
  std::atomic<std::uint64_t> layout_version;
  std::atomic<std::uint64_t> init_state;
  std::atomic<std::uint64_t> init_owner;
  std::atomic<std::uint64_t> abi_fingerprint;
  std::atomic<std::uint64_t> capacity;
  std::atomic<std::uint64_t> probe_window;
  std::atomic<std::uint64_t> ttl_ns;
  std::atomic<std::uint64_t> claim_timeout_ns;
  std::atomic<std::uint64_t> entries_offset;
  std::atomic<std::uint64_t> total_size;
  std::atomic<std::uint64_t> created_realtime_ns;
  std::atomic<std::uint64_t> creator_pid;
  std::atomic<std::uint64_t> reserved0[3];
  alignas(kHotSlot) std::atomic<std::uint64_t> takeovers;
  std::atomic<std::uint64_t> full;
  std::atomic<std::uint64_t> lost_completes;
  std::atomic<std::uint64_t> gave_up;
  std::atomic<std::uint64_t> freed_bindings;
  std::atomic<std::uint64_t> insert_races;
  std::atomic<std::uint64_t> reserved1[10];
  NameWords name;
  std::atomic<std::uint64_t> reserved2[(kDedupHeaderSize - 320) / 8];
};
static_assert(std::is_standard_layout_v<DedupHeader>);
static_assert(sizeof(DedupHeader) == kDedupHeaderSize);
static_assert(alignof(DedupHeader) == kHotSlot);
static_assert(offsetof(DedupHeader, magic) == 0);
static_assert(offsetof(DedupHeader, layout_version) == 8);
static_assert(offsetof(DedupHeader, init_state) == 16);
static_assert(offsetof(DedupHeader, init_owner) == 24);
static_assert(offsetof(DedupHeader, abi_fingerprint) == 32);
static_assert(offsetof(DedupHeader, capacity) == 40);
static_assert(offsetof(DedupHeader, probe_window) == 48);
static_assert(offsetof(DedupHeader, ttl_ns) == 56);
static_assert(offsetof(DedupHeader, claim_timeout_ns) == 64);
static_assert(offsetof(DedupHeader, entries_offset) == 72);
static_assert(offsetof(DedupHeader, total_size) == 80);
static_assert(offsetof(DedupHeader, created_realtime_ns) == 88);
static_assert(offsetof(DedupHeader, creator_pid) == 96);
static_assert(offsetof(DedupHeader, reserved0) == 104);
static_assert(offsetof(DedupHeader, takeovers) == 128);
static_assert(offsetof(DedupHeader, full) == 136);
static_assert(offsetof(DedupHeader, lost_completes) == 144);
static_assert(offsetof(DedupHeader, gave_up) == 152);
static_assert(offsetof(DedupHeader, freed_bindings) == 160);
static_assert(offsetof(DedupHeader, insert_races) == 168);
static_assert(offsetof(DedupHeader, reserved1) == 176);
static_assert(offsetof(DedupHeader, name) == 256);
static_assert(offsetof(DedupHeader, reserved2) == 320);

//  DedupEntry (16 B, four per cache line):
//    0 id     the 64-bit id this entry records; written only by the process
//             holding the entry in `binding` (one CAS)
//    8 state  the state word below; every transition is one CAS on it
struct DedupEntry {
  std::atomic<std::uint64_t> id;
  std::atomic<std::uint64_t> state;
};
static_assert(std::is_standard_layout_v<DedupEntry>);
static_assert(sizeof(DedupEntry) == 16);
static_assert(alignof(DedupEntry) == 8);
static_assert(offsetof(DedupEntry, id) == 0);
static_assert(offsetof(DedupEntry, state) == 8);
static_assert(kDedupHeaderSize % sizeof(DedupEntry) == 0);

//  State word:
//    bits  0..1   state (DedupState)
//    bits  2..23  pid of the claimer / binder / completer (Linux pids < 2^22)
//    bits 24..63  time: CLOCK_MONOTONIC milliseconds (40 bits, 34 years)
//                 claimed: the claim's deadline; done: the record's expiry;
//                 binding / free: only a tag (see "Never the same word twice")
//  The all-zero word is an entry never used since the table was created.
enum DedupState : std::uint64_t {
  kDedupFree = 0,     ///< no record (never used, abandoned, or a binding backed off)
  kDedupBinding = 1,  ///< the pid is writing a new id into the entry (transient)
  kDedupClaimed = 2,  ///< `id` is being processed by pid until the deadline
  kDedupDone = 3,     ///< `id` was completed; remembered until the expiry
};
inline constexpr std::uint32_t kDedupPidBits = 22;
inline constexpr std::uint32_t kDedupTimeBits = 40;
inline constexpr std::uint64_t kDedupMaxPid = (1ULL << kDedupPidBits) - 1;
inline constexpr std::uint64_t kDedupMaxTime = (1ULL << kDedupTimeBits) - 1;
/// Longest TTL or claim timeout, in ms: far below kDedupMaxTime, so that
/// `now + span` never leaves the 40-bit field in a machine's lifetime.
inline constexpr std::uint64_t kDedupMaxSpanMs = 1ULL << 34;

inline constexpr std::uint64_t make_dedup_word(std::uint64_t state, std::uint64_t pid, std::uint64_t time_ms) noexcept {
  return (state & 3u) | ((pid & kDedupMaxPid) << 2) | ((time_ms & kDedupMaxTime) << 24);
}
inline constexpr std::uint64_t dedup_state(std::uint64_t w) noexcept { return w & 3u; }
inline constexpr std::uint32_t dedup_pid(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>((w >> 2) & kDedupMaxPid);
}
inline constexpr std::uint64_t dedup_time(std::uint64_t w) noexcept { return w >> 24; }

/// A fingerprint of the dedup layout. Two builds that disagree refuse each
/// other's tables.
inline constexpr std::uint64_t dedup_abi_fingerprint() noexcept {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a over the layout numbers
  const std::uint64_t parts[] = {
      kDedupLayoutVersion,         sizeof(DedupHeader),         sizeof(DedupEntry), offsetof(DedupHeader, takeovers),
      offsetof(DedupHeader, name), offsetof(DedupEntry, state), kDedupPidBits,      kDedupTimeBits};
  for (std::uint64_t p : parts) {
    for (int i = 0; i < 8; ++i) {
      h ^= (p >> (8 * i)) & 0xffu;
      h *= 1099511628211ULL;
    }
  }
  return h;
}

/// Segment name of a dedup table: "shmbus-dedup.<bus>.<name>".
std::string dedup_segment_name(std::string_view bus, std::string_view name);

/// The engine behind shmbus::DedupTable: one mapping of a dedup table.
/// begin/complete/abandon/seen/stats are thread-safe and may run in any
/// number of threads and processes at once. The handle belongs to the process
/// that opened it: claims carry that pid, so a forked child must open the
/// table itself.
class DedupCore {
 public:
  DedupCore() = default;
  DedupCore(const DedupCore&) = delete;
  DedupCore& operator=(const DedupCore&) = delete;

  /// Opens table `name` on `bus`, creating it (exclusively, size reserved
  /// up front) if it does not exist. An existing table must have the same
  /// parameters. Refuses another layout version, any header field out of
  /// range, and a header that is not initialised (a table is named only once
  /// whole, so that is damage: never re-initialised). Thread-safe.
  static Result<std::unique_ptr<DedupCore>> open_or_create(std::string_view bus, std::string_view name,
                                                           const DedupOptions& opts);

  /// Removes the table's name; mapped handles keep working. Thread-safe.
  static Result<void> remove(std::string_view bus, std::string_view name);

  /// Thread-safe (see shmbus::DedupTable for the contract of each call).
  DedupStatus begin(std::uint64_t id) noexcept;
  void complete(std::uint64_t id) noexcept;
  void abandon(std::uint64_t id) noexcept;
  [[nodiscard]] bool seen(std::uint64_t id) const noexcept;
  /// Counters and an O(capacity) scan of the entries. Thread-safe.
  [[nodiscard]] DedupStats stats() const noexcept;

  [[nodiscard]] const DedupOptions& options() const noexcept { return opts_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& bus() const noexcept { return bus_; }

 private:
  enum class Insert : std::uint8_t { ok, no_room, contended, retry };
  enum class Wait : std::uint8_t { changed, timed_out };
  struct Found {
    bool found = false;
    std::uint64_t index = 0;
    std::uint64_t word = 0;
  };

  [[nodiscard]] std::uint64_t home(std::uint64_t id) const noexcept;
  [[nodiscard]] DedupEntry& entry(std::uint64_t home, std::uint32_t distance) const noexcept {
    return entries_[(home + distance) & mask_];
  }
  Found find(std::uint64_t id, std::uint64_t home) const noexcept;
  /// An entry an insert may take: at `distance` from home (window_: none),
  /// holding `word` when it was picked.
  struct Pick {
    std::uint32_t distance = 0;
    std::uint64_t word = 0;
  };

  /// Records `id` (not found in its window) in a new entry, in
  /// `final_state`: the four steps of Insert(x) at the end of this header.
  Insert insert(std::uint64_t id, std::uint64_t home, std::uint64_t final_state) noexcept;
  /// Insert step 1: the entry to take, judged at `now_ms`.
  Pick pick_entry(std::uint64_t home, std::uint64_t now_ms) const noexcept;
  /// Insert step 2: `old` -> `binding`, then the id announced. ok, or retry
  /// (the entry changed, or the id CAS lost; then backed off).
  Insert bind(DedupEntry& e, std::uint64_t old, std::uint64_t binding, std::uint64_t id) noexcept;
  /// Insert step 3: ok if no other entry of the window holds `id`; else
  /// backed off, and retry or contended.
  Insert check_window(std::uint64_t id, std::uint64_t home, std::uint32_t pick, DedupEntry& e,
                      std::uint64_t binding) noexcept;
  /// Frees entry `e` if it still holds our `binding` word.
  void back_off(DedupEntry& e, std::uint64_t binding) noexcept;
  Wait wait_binding(DedupEntry& e, std::uint64_t word) noexcept;
  bool binding_stuck(std::uint64_t word, std::uint64_t now_ms) const noexcept;
  bool claimer_dead(std::uint64_t word) const noexcept;

  std::string bus_;
  std::string name_;
  DedupOptions opts_;
  shm::Segment segment_;
  shm::Mapping map_;
  DedupHeader* header_ = nullptr;
  DedupEntry* entries_ = nullptr;
  std::uint64_t mask_ = 0;  // capacity - 1, from the validated header
  std::uint32_t window_ = 0;
  std::uint64_t ttl_ms_ = 0;
  std::uint64_t claim_ms_ = 0;
  std::uint64_t pid_ = 0;  // this process (the opener), fits kDedupPidBits
};

// ---------------------------------------------------------------------------
// The table protocol (bus/dedup/dedup.cpp follows it step by step).
//
// Window. Id x lives in one of the `probe_window` entries starting at
// home(x) = mix(x) & (capacity - 1) (linear probing, wrapping). Distances
// 0..window-1 order the entries of one window.
//
// Never the same word twice. Every transition writes a time field strictly
// greater than the one it replaces (max(wanted, old + 1)), so a state word
// never repeats in an entry: a CAS that expects a word read earlier succeeds
// only if nothing happened to the entry since (no ABA), and a reader that
// reads the word, then the id, then the same word again holds an id that
// belongs to that word (the id changes only in `binding`).
//
// Invariant. For every id at most one entry holds it in `claimed` or `done`
// (expired or not). `first` is returned only by a CAS that creates that
// entry (insert) or moves it to `claimed` (re-claim of an expired record,
// takeover of a dead or timed-out claim), and those CASes on one word have
// one winner.
//
// Insert(x) (x found nowhere in its window):
//   1. pick the first reusable entry p: never used, free, done and expired,
//      claimed and past its deadline; failing that, claimed by a dead
//      process, or a binding whose process is dead or stuck for 10 s;
//      none: `full`.
//   2. CAS p's word to binding(me); CAS p's id from what it held to x
//      (seq_cst: the announcement); seq_cst fence.
//   3. look at every other entry q of the window (Dekker: of two inserters of
//      x at least one sees the other's id): q holds x claimed or done ->
//      back off (p to free) and start again (begin will then see q); q holds
//      x in binding at a smaller distance -> back off; at a larger distance
//      -> wait (bounded) until it backs off (it saw us) or confirms (it did
//      not; then we back off). Waits only go to larger distances: no cycle.
//   4. CAS p from binding(me) to claimed(me, now + claim timeout) (or to
//      done, for complete()).
// Only a dead (or 10 s stuck) binder's entry is freed by others, and its id
// write is a CAS from the id it found, so a late binder cannot overwrite the
// id of the entry's next owner except in an ABA of that id after a 10 s
// stall inside three instructions.

}  // namespace shmbus::bus
