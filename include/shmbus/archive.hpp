// Archiver: follows one channel as a durable subscriber and appends every
// message, in order and exactly once, to the channel's disk archive
// (docs/protocol.md section 13). Run it in a process of its own (`shmbus
// archive run CHANNEL`: a disk stall or an archiver crash never touches the
// applications) or on a thread of an application (start()/stop()).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <shmbus/result.hpp>
#include <shmbus/types.hpp>

namespace shmbus {

class Channel;

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

namespace bus::archive {
class ArchiverEngine;
}

/// One channel's archiver. Not thread-safe, except where a function says
/// otherwise: one caller at a time (and none while a start()ed thread runs,
/// except counters(), last_error() and stop()).
class Archiver {
 public:
  Archiver() noexcept;  ///< an empty handle: every call fails with invalid_argument
  /// Stops a start()ed thread, syncs the archive and detaches (the durable
  /// cursor stays where the archive ends).
  ~Archiver();
  Archiver(Archiver&&) noexcept;
  Archiver& operator=(Archiver&&) noexcept;
  Archiver(const Archiver&) = delete;
  Archiver& operator=(const Archiver&) = delete;

  /// Opens the archive directory (creating it; `busy` if another archiver
  /// writes there), cuts a torn tail left by a crash, attaches to `channel`
  /// as the durable subscriber kArchiverName (`busy` if a live process holds
  /// it), marks its entry as the channel's archiver (from then on only the
  /// archiver and groups hold block publishers) and puts its cursor where
  /// the archive ends, so that nothing is archived twice. A new archive
  /// starts at the oldest message the ring holds. invalid_argument if
  /// neither opts.dir nor the channel's archive_dir names a directory, or if
  /// the archive ends past the channel's head (the channel was re-created
  /// without its archive). Thread-safe.
  static Result<Archiver> open(const Channel& channel, const ArchiverOptions& opts = {});

  /// Archives what the ring holds now, up to opts.batch messages: copies
  /// them, appends them (fdatasync per the policy), then moves the
  /// archiver's cursor, so the cursor never passes what is in the archive.
  /// Returns how many were archived (0: nothing new). Messages the ring lost
  /// before they were read become a gap (counted). On an error (no_space on
  /// a full disk, naming the file) the cursor stays where the archive ends;
  /// call again to retry. Never blocks.
  Result<std::size_t> poll_once();

  /// Archives until `stop` is true (checked at least every 100 ms), applies
  /// retention and, under `interval`, syncs an idle archive when due. On a
  /// full disk it retries every no_space_retry_ns (or returns the error if
  /// that is 0). Returns after a final sync, or with the first other error.
  Result<void> run(const std::atomic<bool>& stop);

  /// Runs run() on a thread of its own. invalid_argument if one runs.
  Result<void> start();

  /// Stops the thread start() began and waits for it: run()'s result (ok if
  /// none was running). Thread-safe against the running thread.
  Result<void> stop();

  /// fdatasync of the archive's newest file and fsync of its directory.
  Result<void> sync();

  /// Applies retention now (see ArchiverOptions::max_age_ns, max_bytes).
  Result<void> prune();

  /// What the archiver did. Thread-safe (relaxed reads of counters).
  [[nodiscard]] ArchiverCounters counters() const noexcept;

  /// The error that last stopped or held back the archiver ("" if none).
  /// Thread-safe.
  [[nodiscard]] std::string last_error() const;

  /// The archive directory. Thread-safe.
  [[nodiscard]] const std::string& directory() const noexcept;

  /// Whether this handle holds an archiver. Thread-safe.
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmbus
