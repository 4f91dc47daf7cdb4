// A channel's archive as a source of messages by sequence: what a subscriber,
// Channel::peek and the probe read when a position is older than the ring
// (docs/protocol.md, "Replay and merge"). One lazily opened SegmentReader,
// positioned by the sequence asked for: sequential reads (the common case)
// cost one record read each, a jump costs one seek.
//
// Not thread-safe: one caller at a time (Channel::peek shares one per channel
// behind a mutex; each subscriber has its own).
#pragma once

#include <shmbus/result.hpp>
#include <shmbus/types.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "bus/archive/segment.hpp"

namespace shmbus::bus {
class ChannelState;
}

namespace shmbus::bus::archive {

/// What ArchiveSource::read found for a sequence.
enum class ArchiveRead : std::uint8_t {
  found,    ///< record() is the record at the sequence asked for
  missing,  ///< the archive does not hold it (pruned, or a gap); next() is the first sequence after it that it holds
  absent,   ///< nothing at or after it yet (the archive ends at or before it, or there is no archive)
  error,    ///< unreadable there (corruption, I/O): error() names the file and offset; next() is the first
            ///< sequence of the next file (reading can resume there), 0 if there is none
};

class ArchiveSource {
 public:
  /// A source over directory `dir`; nothing is opened before the first call.
  explicit ArchiveSource(std::string dir) : dir_(std::move(dir)) {}

  /// Finds the record at sequence `seq`: seeks only when the reader is not
  /// already positioned there. A record past `seq` (a gap between files) is
  /// `missing` with next() = its sequence (a following read of that
  /// sequence returns it without a seek). record()'s payload stays valid
  /// until the next call. Never throws (an allocation failure is an error).
  ArchiveRead read(std::uint64_t seq) noexcept;

  /// The record of the last `found` (or of the record a gap ended at).
  [[nodiscard]] const Record& record() const noexcept { return record_; }
  /// After `missing` or `error`: where the archive continues (see ArchiveRead).
  [[nodiscard]] std::uint64_t next() const noexcept { return next_; }
  /// After `error`: what went wrong, naming the file and the offset.
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] const std::string& dir() const noexcept { return dir_; }

  /// The oldest sequence kept (its record read, and kept for a read that
  /// follows); nullopt when the archive has no whole record or does not
  /// exist (yet).
  Result<std::optional<std::uint64_t>> first_sequence();
  /// One past the last whole record (0 when empty or absent). Scans the
  /// newest file: for setup paths.
  Result<std::uint64_t> end_sequence();
  /// The sequence of the first record with timestamp >= `realtime_ns`
  /// (SegmentReader::seek_time), its record kept for a read that follows;
  /// nullopt when there is none (every record older, an empty archive, or
  /// none at all).
  Result<std::optional<std::uint64_t>> seek_time(std::uint64_t realtime_ns);

 private:
  /// Opens the reader if it is not open: false (and no error) when the
  /// directory does not exist yet.
  Result<bool> open();
  /// The first sequence of the segment file after the one holding `seq`
  /// (from the names in the directory), 0 if there is none.
  [[nodiscard]] std::uint64_t next_file_after(std::uint64_t seq) const noexcept;
  ArchiveRead fail(const Error& e, std::uint64_t seq);
  ArchiveRead read_unchecked(std::uint64_t seq);

  static constexpr std::uint64_t kUnknown = UINT64_MAX;
  std::string dir_;
  std::optional<SegmentReader> reader_;
  Record record_;
  bool have_record_ = false;           ///< record_ is the reader's last record (its payload still valid)
  std::uint64_t position_ = kUnknown;  ///< the sequence the reader's next() reads, when known
  std::uint64_t next_ = 0;
  std::string error_;
};

/// A message from an archived record (attempt 0: the archive keeps what was
/// published, not deliveries).
[[nodiscard]] Message message_of(const Record& r) noexcept;

/// Where a new subscriber of a channel with an archive starts, given what
/// the ring alone answered (`ring_cursor`, and `lost` as start_position set
/// it): StartAt::earliest at the archive's first record when that is older
/// than the ring; StartAt::at_time, when the ring no longer holds every
/// message since the time, at the archive's first record at or after it
/// (`lost` then counts only what neither holds: messages before the
/// archive's first record when that is already past the time, or between
/// the archive's end and the ring's oldest); other positions as the ring
/// said (a sequence older than the ring is read from the archive by the
/// first poll). When the archive cannot be read, the ring's answer stands.
std::uint64_t archive_start_position(const ChannelState& ch, const StartAt& start, std::uint64_t ring_cursor,
                                     std::uint64_t& lost) noexcept;

}  // namespace shmbus::bus::archive
