// The archive's value types: the archiver's settings and counters
// (include/shmbus/archive.hpp has the Archiver itself). Std only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <shmbus/types.hpp>

namespace shmbus {

/// The durable subscriber name an archiver attaches under. A channel has at
/// most one archiver (a second gets `busy`).
inline constexpr std::string_view kArchiverName = "shmbus-archiver";

/// When archived records are made durable (fdatasync). What a power cut can
/// lose under each is in docs/guarantees.md; a crash of the archiver process
/// alone loses nothing under any of them (the page cache keeps what was written).
enum class ArchiveFsync : std::uint8_t {
  never,     ///< the kernel writes back when it likes (typically within 30 s)
  interval,  ///< at most fsync_interval_ns after a record was written
  batch,     ///< before the archiver's cursor moves past the batch
};

/// Settings of an Archiver.
struct ArchiverOptions {
  /// The archive directory. Empty: the channel's archive_dir
  /// (ChannelOptions::archive_dir or $SHMBUS_ARCHIVE_DIR at create). Replay
  /// reads the channel's archive_dir only: another directory here is for a
  /// channel created without one, or for a copy.
  std::string dir;
  ArchiveFsync fsync = ArchiveFsync::interval;
  std::uint64_t fsync_interval_ns = 100'000'000;  ///< for ArchiveFsync::interval
  std::uint64_t segment_bytes = 64ull << 20;      ///< a file rolls before it would exceed this
  std::uint32_t batch = 1024;                     ///< messages read per append, at most
  /// Retention, applied as the archiver goes (every retention_check_ns and at
  /// every new file): whole oldest files go while the archive is larger than
  /// max_bytes or their last record is older than max_age_ns (0 = no limit).
  /// The newest file is never removed.
  std::uint64_t max_age_ns = 0;
  std::uint64_t max_bytes = 0;
  std::uint64_t retention_check_ns = 5'000'000'000ULL;
  /// How run() waits for messages. It waits in slices of at most 100 ms, so
  /// a stop request is seen within that.
  WaitStrategy wait = WaitStrategy::block;
  /// run() on a full disk: waits this long and tries again (the archiver's
  /// cursor stays where the archive ends meanwhile; under `block` publishers
  /// wait, as for a slow subscriber). 0: run() returns the no_space error.
  std::uint64_t no_space_retry_ns = 1'000'000'000ULL;
  /// How often run() writes a checkpoint of the channel's durable
  /// subscribers' cursors and groups' floors to `<dir>/checkpoint` (what a
  /// channel re-created after a reboot restores; docs/guarantees.md 11.1).
  /// It also writes one when it stops. 0: only when it stops.
  std::uint64_t checkpoint_interval_ns = 1'000'000'000ULL;
};

/// What an Archiver did since it was opened (except where noted).
struct ArchiverCounters {
  std::uint64_t archived = 0;  ///< records appended
  std::uint64_t bytes = 0;     ///< record bytes appended (headers and padding included)
  /// Sequences the archive will never hold: overwritten in the ring before
  /// the archiver read them (drop_oldest, or the archiver was evicted), or
  /// corrupted slots. Each run of them is a gap in the archive.
  std::uint64_t lost = 0;
  std::uint64_t gaps = 0;      ///< how many gaps
  std::uint64_t gap_from = 0;  ///< the latest gap: [gap_from, gap_to) is missing
  std::uint64_t gap_to = 0;
  std::uint64_t abandoned = 0;               ///< claims abandoned by their publishers: no message, skipped
  std::uint64_t recovered_bytes = 0;         ///< torn tail cut off the newest file at open
  std::uint64_t last_fsync_realtime_ns = 0;  ///< CLOCK_REALTIME of the last fdatasync (0: none yet)
  std::uint64_t next_sequence = 0;           ///< one past the last archived record (the archiver's cursor)
  std::uint64_t pruned_files = 0;            ///< removed by retention
  std::uint64_t pruned_bytes = 0;
  std::uint64_t no_space_errors = 0;  ///< appends that found the disk full
};

}  // namespace shmbus
