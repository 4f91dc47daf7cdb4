// The archiver's engine: one channel's durable subscriber (kArchiverName)
// that copies batches out of the ring, appends them to a SegmentWriter and
// only then publishes its cursor, so the shared cursor never passes what is
// in the archive. docs/protocol.md 13.11 describes the loop and its rules;
// include/shmbus/archive.hpp is the public face.
#pragma once

#include <shmbus/archive_types.hpp>
#include <shmbus/result.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bus/archive/segment.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/subscriber_core.hpp"

namespace shmbus::bus::archive {

/// Not thread-safe: one caller at a time, except counters() and
/// last_error(), which any thread may call.
class ArchiverEngine {
 public:
  /// See shmbus::Archiver::open. `dir` is the resolved archive directory.
  static Result<std::unique_ptr<ArchiverEngine>> open(std::shared_ptr<ChannelState> ch, const std::string& dir,
                                                      const ArchiverOptions& opts);

  ArchiverEngine(const ArchiverEngine&) = delete;
  ArchiverEngine& operator=(const ArchiverEngine&) = delete;
  ArchiverEngine(ArchiverEngine&&) = delete;
  ArchiverEngine& operator=(ArchiverEngine&&) = delete;
  /// Detaches (the durable cursor equals the archive's end) without a sync.
  ~ArchiverEngine();

  /// One batch: see shmbus::Archiver::poll_once.
  Result<std::size_t> poll_once();
  /// See shmbus::Archiver::run.
  Result<void> run(const std::atomic<bool>& stop);
  /// fdatasync + directory fsync.
  Result<void> sync();
  /// Retention now.
  Result<void> prune();
  /// A checkpoint of the channel's durable state into the archive directory.
  Result<void> checkpoint();

  [[nodiscard]] ArchiverCounters counters() const noexcept;
  [[nodiscard]] std::string last_error() const;
  [[nodiscard]] const std::string& directory() const noexcept { return dir_; }

 private:
  ArchiverEngine() = default;
  Result<void> position();
  /// One batch being appended (archive_batch and its steps).
  struct Batch {
    std::size_t count = 0;             ///< records sealed
    std::uint64_t bytes = 0;           ///< their padded size
    std::uint64_t expected = 0;        ///< the sequence the next record should have
    std::uint64_t first = 0;           ///< the batch's first record (past a skip)
    PollStatus last = PollStatus::ok;  ///< what the last read returned
  };
  Result<std::size_t> archive_batch();
  Result<bool> append_next(Batch& b);
  Result<void> end_batch(const Batch& b);
  Error fail_partial(std::uint64_t first, Error e);
  bool committed_at(std::uint64_t seq) const noexcept;
  Result<void> gap_to(std::uint64_t to, std::uint64_t expected);
  Error fail(Error e);
  Result<void> maybe_prune(bool force);
  void note_synced() noexcept;
  Result<void> maybe_checkpoint();

  std::shared_ptr<ChannelState> ch_;
  std::unique_ptr<SubscriberCore> core_;
  std::optional<SegmentWriter> writer_;
  ArchiverOptions opts_;
  std::string dir_;
  std::uint64_t batch_start_ = 0;  // the cursor when the current poll_once began
  std::uint64_t last_prune_ns_ = 0;
  std::uint64_t last_checkpoint_ns_ = 0;
  std::string last_path_;  // the writer's file at the last retention check

  // Counters: written by the archiving thread only, read by any (relaxed).
  struct Atomics {
    std::atomic<std::uint64_t> archived{0}, bytes{0}, lost{0}, gaps{0}, gap_from{0}, gap_to{0}, abandoned{0},
        recovered_bytes{0}, last_fsync{0}, next_sequence{0}, pruned_files{0}, pruned_bytes{0}, no_space{0};
  } c_;
  mutable std::mutex error_mutex_;
  std::string last_error_;
};

}  // namespace shmbus::bus::archive
