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

#include <shmbus/archive_types.hpp>
#include <shmbus/result.hpp>
#include <shmbus/types.hpp>

namespace shmbus {

class Channel;

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

  /// Writes a checkpoint of the channel's durable subscribers' cursors and
  /// groups' floors to `<dir>/checkpoint` now (atomically: a temporary file,
  /// fdatasync, rename). run() does it every checkpoint_interval_ns and when
  /// it stops.
  Result<void> checkpoint();

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
