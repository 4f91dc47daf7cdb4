// The value types of a dedup (idempotency) table: the result of begin, the
// table's options, its stats. Standard library only: the messaging layer
// uses these same types. The table itself is <shmbus/dedup.hpp>.
#pragma once

#include <cstdint>
#include <string_view>

#include <shmbus/trust.hpp>

namespace shmbus {

/// Result of DedupTable::begin.
// clang-format off (it takes an attributed enum with a base for a braced initialiser)
enum class [[nodiscard]] DedupStatus : std::uint8_t{
    first,        ///< this caller owns the id now: do the work, then complete() or abandon()
    in_progress,  ///< a live worker claimed it within its claim timeout (or, rarely,
                  ///< the id is contended right now): do not do the work; retry later
    done,         ///< completed within the TTL: skip the work (and ack)
    full,         ///< the id's probe window has no free or expired entry: nothing recorded
    invalid,      ///< the handle is empty (default-constructed or moved-from)
};
// clang-format on

/// A readable name ("in_progress"). Thread-safe.
std::string_view to_string(DedupStatus s) noexcept;

/// Parameters fixed when a dedup table is created (opening an existing table
/// with other values is a parameter_mismatch naming both).
struct DedupOptions {
  /// Entries: a power of two, 16 .. 2^26 (16 bytes each). Size it for the
  /// number of ids done within one TTL plus those in flight, with headroom:
  /// linear probing degrades as the table fills.
  std::uint32_t capacity = 65536;
  /// Entries an id may occupy, starting at its hash: 1 .. 256, <= capacity.
  /// begin() reports `full` when all of them hold live records.
  std::uint32_t probe_window = 16;
  /// How long a completed id is remembered, from complete(). At least
  /// claim_timeout_ns, at most 2^34 ms (about 198 days). Deadlines are kept
  /// in whole milliseconds: a record (or a claim) lasts its span rounded up
  /// to a millisecond, plus at most 2 ms.
  std::uint64_t ttl_ns = 3'600'000'000'000ULL;  // 1 hour
  /// How long a claim holds against other workers if its owner neither
  /// completes nor abandons it (a hang); a dead owner's claim is taken over
  /// at once. Set it at least to the group's visibility timeout. 1 ms ..
  /// 2^34 ms.
  std::uint64_t claim_timeout_ns = 30'000'000'000ULL;  // 30 s
  std::uint32_t mode = 0600;                           ///< permission bits of the segment
  /// Owners besides this process's uid and root whose existing table is accepted.
  Trust trust;
};

/// A snapshot of a dedup table, for monitoring and tests.
struct DedupStats {
  std::uint32_t capacity = 0;
  std::uint32_t probe_window = 0;
  std::uint64_t ttl_ns = 0;
  std::uint64_t claim_timeout_ns = 0;
  std::uint64_t done = 0;            ///< entries done and not expired (scan)
  std::uint64_t claimed = 0;         ///< entries claimed, deadline not passed (scan)
  std::uint64_t takeovers = 0;       ///< claims taken over (owner dead or past its timeout)
  std::uint64_t full = 0;            ///< begin/complete calls that found no room
  std::uint64_t lost_completes = 0;  ///< complete() calls that could not record `done`
  std::uint64_t gave_up = 0;         ///< begin() calls answered in_progress after a contention bound
  std::uint64_t freed_bindings = 0;  ///< half-made entries of dead (or stuck) processes freed
  std::uint64_t insert_races = 0;    ///< inserts that backed off: the id was being inserted elsewhere
};

}  // namespace shmbus
