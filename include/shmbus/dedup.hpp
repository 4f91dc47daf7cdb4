// DedupTable: an idempotency table in shared memory, so that the consumers
// of an at-least-once group can skip work that was already done. Keyed by a
// 64-bit id (Message::id, set by the publisher, unique per event), each id is either
// claimed by one worker (until a claim timeout, or until that worker's
// process dies) or done (until a TTL runs out).
//
//   switch (table.begin(d.message.id)) {
//     case DedupStatus::first:        // ours: do the work
//       if (process(d)) { table.complete(d.message.id); (void)consumer.ack(d); }
//       else { table.abandon(d.message.id); (void)consumer.nack(d); }
//       break;
//     case DedupStatus::done:         // already done: just ack
//       (void)consumer.ack(d);
//       break;
//     case DedupStatus::in_progress:  // a live worker has it: look again later
//       (void)consumer.nack(d);
//       break;
//     case DedupStatus::full:         // no room to record it: decide (see below)
//     case DedupStatus::invalid: ...
//   }
//
// What this buys, honestly: the table lives in shared memory, so it is lost
// on reboot (and when removed), and complete() runs after the side effect,
// so a crash between the two makes the work happen again. Effectively-once
// processing needs the side effect itself to be idempotent, or committed
// atomically with its own dedup record in the same store (a database
// transaction keyed by the id); this table then only saves the repeated work
// in the common case. docs/guarantees.md gives the pattern.
//
// Dedup on the message id, not on the key: the key names what a message is
// about (an account), so two real events of one account share it, and a
// table keyed by it would skip the second as a duplicate.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <shmbus/dedup_types.hpp>
#include <shmbus/result.hpp>
#include <shmbus/types.hpp>

namespace shmbus::bus {
class DedupCore;
}

namespace shmbus {

class DedupTable {
 public:
  DedupTable() = default;  ///< an empty handle: begin() returns `invalid`

  /// Opens dedup table `name` on `bus`, creating it if it does not exist
  /// (segment "shmbus-dedup.<bus>.<name>", mode opts.mode, its whole size
  /// reserved in /dev/shm now: no_space if it does not fit). An existing
  /// table must have the same capacity, probe_window, ttl_ns and
  /// claim_timeout_ns (parameter_mismatch names both values); a table of
  /// another layout version or with a bad header is refused. Thread-safe.
  static Result<DedupTable> open_or_create(std::string_view name, const DedupOptions& opts = {},
                                           std::string_view bus = kDefaultBus);

  /// Removes the table's name: processes that have it open keep using the
  /// old table; the next open_or_create makes a new, empty one. Thread-safe.
  static Result<void> remove(std::string_view name, std::string_view bus = kDefaultBus);

  /// Claims `id` for this caller unless it is done or claimed by a live
  /// worker. `first`: do the work, then complete(id) (or abandon(id) if it
  /// failed). `done`: it was completed within the TTL. `in_progress`: a live
  /// process claimed it and its claim timeout has not passed (another thread
  /// of this process counts as live), or, rarely, other workers are claiming
  /// the same id at this instant; do not do the work. `full`: every entry of
  /// the id's probe window holds a live record; nothing was recorded. A
  /// claim whose process died, or whose claim timeout passed, is taken over
  /// (`first`). No system call and no allocation, except a liveness check
  /// (kill + /proc read) when it finds a foreign claim not yet expired, or a
  /// window with no reusable entry. Thread-safe, lock-free but for a bounded
  /// wait (at most 100 ms) while another process is half-way through
  /// inserting an id of the same window.
  DedupStatus begin(std::uint64_t id) noexcept;

  /// Marks `id` done; the TTL starts now. Call it after the work has taken
  /// effect. It records `done` whoever holds the claim (the work is done
  /// either way), and records it anew if the claim's entry was reused after
  /// its timeout. If the id's window has no room the record is lost
  /// (counted in stats().lost_completes). Thread-safe.
  void complete(std::uint64_t id) noexcept;

  /// Releases this process's claim on `id` after a failure, so that the next
  /// begin(id) anywhere returns `first`. Does nothing if the claim was taken
  /// over or the id is done. Call it only for an id whose begin() returned
  /// `first` to this caller: claims are owned per process, not per thread.
  /// Thread-safe.
  void abandon(std::uint64_t id) noexcept;

  /// Whether `id` is done and its TTL has not run out (a claim in progress
  /// is not "seen"). A snapshot: it can change at once. Thread-safe.
  [[nodiscard]] bool seen(std::uint64_t id) const noexcept;

  /// Counters and an O(capacity) scan of the entries. Thread-safe.
  [[nodiscard]] DedupStats stats() const noexcept;

  /// The options the table was opened with (equal to the table's). Thread-safe.
  [[nodiscard]] DedupOptions options() const;
  /// Whether this handle is attached. Thread-safe.
  [[nodiscard]] bool valid() const noexcept { return core_ != nullptr; }

 private:
  explicit DedupTable(std::shared_ptr<bus::DedupCore> core) : core_(std::move(core)) {}
  // Shared: copies of a handle (one per thread, say) use one mapping.
  std::shared_ptr<bus::DedupCore> core_;
};

}  // namespace shmbus
