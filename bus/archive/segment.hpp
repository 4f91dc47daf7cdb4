// The archive's storage layer: append-only segment files holding one
// channel's messages, a writer that recovers a torn tail, a reader that seeks
// by sequence and by time, and retention by age and total size.
//
// The format is written down in docs/protocol.md ("Archive files"). Every
// multi-byte field is little-endian; the structs below are the byte layout
// and are only used on a little-endian host (static_assert below).
//
// Thread safety: a SegmentWriter or SegmentReader is used by one thread at a
// time. One writer per directory; any number of readers may read while it
// appends (they see whole records only).
#pragma once

#include <shmbus/result.hpp>

#include "bus/common/util.hpp"
#include "shm/file.hpp"

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace shmbus::bus::archive {

static_assert(std::endian::native == std::endian::little, "the archive format is little-endian");

inline constexpr char kFileMagic[8] = {'S', 'H', 'M', 'B', 'A', 'R', 'C', '1'};
inline constexpr std::uint32_t kFormatVersion = 1;
inline constexpr std::size_t kFileHeaderSize = 64;
inline constexpr std::size_t kRecordHeaderSize = 56;
inline constexpr std::size_t kRecordAlign = 8;
/// Largest payload a record can carry: its length field is 32 bits.
inline constexpr std::size_t kMaxPayload = 0xFFFFFFFFu - kRecordHeaderSize - (kRecordAlign - 1);

//  File header (64 bytes, at offset 0 of every segment file)
//   0                   8         12        16                24
//  +-------------------+---------+---------+-----------------+
//  | magic "SHMBARC1"  | version | hdr size| first sequence  |
//  +-------------------+---------+---------+-----------------+
//  24                 32                40                  60     64
//  +-----------------+------------------+-------------------+------+
//  | created real ns | channel hash     | zero              | crc  |
//  +-----------------+------------------+-------------------+------+
//  crc = crc32c(bytes [0, 60)).
struct FileHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t first_sequence;
  std::uint64_t created_ns;
  std::uint64_t channel_hash;
  std::uint8_t reserved[20];
  std::uint32_t crc;
};
static_assert(std::is_standard_layout_v<FileHeader>);
static_assert(sizeof(FileHeader) == kFileHeaderSize);
static_assert(offsetof(FileHeader, magic) == 0);
static_assert(offsetof(FileHeader, version) == 8);
static_assert(offsetof(FileHeader, header_size) == 12);
static_assert(offsetof(FileHeader, first_sequence) == 16);
static_assert(offsetof(FileHeader, created_ns) == 24);
static_assert(offsetof(FileHeader, channel_hash) == 32);
static_assert(offsetof(FileHeader, reserved) == 40);
static_assert(offsetof(FileHeader, crc) == 60);

//  Record (starts 8-byte aligned; padded with zeros to a multiple of 8)
//   0        4        8          16          24     32     40          48     52         56
//  +--------+--------+----------+-----------+------+------+-----------+------+----------+---------
//  | length | crc    | sequence | timestamp | key  | id   | corr. id  | type | pay. len | payload
//  +--------+--------+----------+-----------+------+------+-----------+------+----------+---------
//  length = 56 + payload length (padding excluded); crc = crc32c(record bytes [8, length)).
struct RecordHeader {
  std::uint32_t length;
  std::uint32_t crc;
  std::uint64_t sequence;
  std::uint64_t timestamp_ns;
  std::uint64_t key;
  std::uint64_t id;
  std::uint64_t correlation_id;
  std::uint32_t type;
  std::uint32_t payload_length;
};
static_assert(std::is_standard_layout_v<RecordHeader>);
static_assert(sizeof(RecordHeader) == kRecordHeaderSize);
static_assert(offsetof(RecordHeader, length) == 0);
static_assert(offsetof(RecordHeader, crc) == 4);
static_assert(offsetof(RecordHeader, sequence) == 8);
static_assert(offsetof(RecordHeader, timestamp_ns) == 16);
static_assert(offsetof(RecordHeader, key) == 24);
static_assert(offsetof(RecordHeader, id) == 32);
static_assert(offsetof(RecordHeader, correlation_id) == 40);
static_assert(offsetof(RecordHeader, type) == 48);
static_assert(offsetof(RecordHeader, payload_length) == 52);

/// One archived message. From a reader, `payload` stays valid until the
/// reader's next call.
struct Record {
  std::uint64_t sequence = 0;
  std::uint64_t timestamp_ns = 0;
  std::uint64_t key = 0;
  std::uint64_t id = 0;
  std::uint64_t correlation_id = 0;
  std::uint32_t type = 0;
  std::span<const std::byte> payload;
};

/// When the writer asks the kernel to put written records on the disk.
enum class FsyncPolicy {
  never,        ///< only on explicit sync(); a power cut can lose anything not yet written back
  interval,     ///< at the end of an append once fsync_interval_ns has passed since the last
  every_batch,  ///< fdatasync at the end of every append
};

struct WriterOptions {
  std::uint64_t segment_bytes = 64ull << 20;      ///< roll to a new file before one would exceed this
  FsyncPolicy fsync = FsyncPolicy::never;         ///< when written records are made durable
  std::uint64_t fsync_interval_ns = 100'000'000;  ///< for FsyncPolicy::interval
  std::uint64_t channel_hash = 0;                 ///< stored in each file header, not checked
  /// Every this many bytes written, the kernel is asked to start writing
  /// them to the disk, without waiting (File::start_writeback; RocksDB's
  /// bytes_per_sync): the disk works while the writer goes on, dirty pages
  /// stay few (no stall when the kernel's dirty limit is reached), and an
  /// fdatasync or a power cut finds less unwritten. It makes nothing
  /// durable by itself. 0 leaves writeback to the kernel.
  std::uint64_t writeback_bytes = 8ull << 20;
};

/// The name of the segment file whose first record is `first_sequence`:
/// 20 decimal digits and ".seg", so names sort by sequence. Thread-safe.
[[nodiscard]] std::string segment_file_name(std::uint64_t first_sequence);

/// Appends records to a directory of segment files. Not thread-safe: one
/// caller at a time, and one writer per directory.
class SegmentWriter {
 public:
  /// Opens (creating `dir` if missing), takes the directory's writer lock
  /// (`busy` if another writer holds it) and recovers the newest file: at the
  /// first incomplete, misaligned, badly sized, CRC-failing or out-of-order
  /// record it is truncated (a torn tail). Older files are not touched.
  static Result<SegmentWriter> open(const std::string& dir, const WriterOptions& opts);

  SegmentWriter(SegmentWriter&& other) noexcept = default;
  SegmentWriter& operator=(SegmentWriter&& other) noexcept = default;
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;
  /// Closes the file and releases the directory; does not sync (call sync()
  /// first for that).
  ~SegmentWriter() = default;

  /// Appends `records`, whose sequences must be consecutive from
  /// next_sequence() (an empty archive takes any start). On an error, the
  /// records already whole on disk are counted and nothing else: resend from
  /// next_sequence().
  Result<void> append(std::span<const Record> records);

  /// Record by record, for a caller that copies payloads straight from
  /// memory it must validate after the copy (the archiver reading the ring):
  /// reserve() the next record, copy its payload to the returned bytes, then
  /// seal() it (header and CRC over the copy) or drop() it; commit() writes
  /// what is sealed and applies the fsync policy, as the end of append()
  /// does. `sequence` must be next_sequence() plus the records sealed since
  /// the last commit (an empty archive takes any start). When the buffer or
  /// the file is full, reserve() first writes out the records sealed so far;
  /// its error is then as append()'s (whole records counted, the rest to be
  /// resent from next_sequence()). One reservation at a time.
  Result<std::span<std::byte>> reserve(std::uint64_t sequence, std::size_t payload_size) {
    // The common case inline: the record fits the buffer, the write chunk
    // and the current file (fast_limit_ says how far all three allow).
    const auto size = static_cast<std::size_t>(round_up(kRecordHeaderSize + payload_size, kRecordAlign));
    if (reserved_ == kNoReservation && sequence == next_sequence_ + pending_records_ && payload_size <= kMaxPayload &&
        pending_ + size <= fast_limit_) [[likely]] {
      return place(size, payload_size);
    }
    return reserve_slow(sequence, payload_size);
  }

  /// Completes the reserved record with `meta`'s sequence, timestamp, key,
  /// id, correlation id and type; its payload is what was copied into the
  /// reserved bytes (meta.payload is not read). No-op without a reservation.
  void seal(const Record& meta) noexcept;

  /// Takes back the reserved record (nothing of it is written).
  void drop() noexcept { reserved_ = kNoReservation; }

  /// Writes the sealed records and applies the fsync policy.
  Result<void> commit();

  /// Continues the archive at `seq` after a gap: sequences the writer will
  /// never get (the channel no longer held them). Ends the current file
  /// (fdatasync unless the policy is `never`) and starts a new file at `seq`
  /// at once, so next_sequence() is `seq` from now on, also after a reopen,
  /// and readers see the gap as a jump between files. `seq` ==
  /// next_sequence() does nothing; `seq` below it is invalid_argument. An
  /// empty archive simply starts at `seq`. Sealed records are written first
  /// and a reservation is dropped. append() stays strict about
  /// consecutive sequences: a gap is only ever made by this call.
  Result<void> skip_to(std::uint64_t seq);

  /// Writes the sealed records, then fdatasync of the current file and
  /// fsync of the directory.
  Result<void> sync();

  /// Under FsyncPolicy::interval: fdatasync when records were written since
  /// the last one and the interval has passed (append() checks only when it
  /// writes, so an idle caller calls this to bound what a power cut loses).
  /// Does nothing under the other policies.
  Result<void> sync_if_due();

  /// CLOCK_REALTIME ns of the last successful fdatasync of a segment file by
  /// this writer (0: none since open).
  [[nodiscard]] std::uint64_t synced_realtime_ns() const noexcept { return synced_realtime_ns_; }

  /// Writes the sealed records (no sync), closes the current file and
  /// releases the directory. Later calls other than the destructor fail.
  Result<void> close();

  /// One past the last whole record (0 for an empty archive).
  [[nodiscard]] std::uint64_t next_sequence() const noexcept { return next_sequence_; }

  /// Whether the archive has no segment file yet (then the first append may
  /// start at any sequence).
  [[nodiscard]] bool empty() const noexcept { return empty_; }

  /// How many bytes open() cut off the newest file's torn tail.
  [[nodiscard]] std::uint64_t recovered_bytes() const noexcept { return recovered_bytes_; }

  /// The file being appended to ("" before the first record).
  [[nodiscard]] const std::string& current_path() const noexcept { return path_; }

 private:
  SegmentWriter(std::string dir, const WriterOptions& opts) : dir_(std::move(dir)), opts_(opts) {}
  Result<void> recover_newest(const std::string& path, std::uint64_t first_sequence);
  Result<void> start_file(std::uint64_t first_sequence);
  Result<void> flush_buffer();
  Result<std::span<std::byte>> reserve_slow(std::uint64_t sequence, std::size_t payload_size);
  std::span<std::byte> place(std::size_t size, std::size_t payload_size) noexcept;
  void checksum_unsummed() noexcept;
  [[nodiscard]] std::span<const std::byte> checksummed_bytes(std::size_t at) const noexcept;
  void store_crc(std::size_t at, std::uint32_t crc) noexcept;
  void update_fast_limit() noexcept;
  Result<void> after_batch();
  Result<void> datasync_current();
  void close_fd() noexcept;
  void release_lock() noexcept;

  std::string dir_;
  WriterOptions opts_;
  // The directory, flock()ed: one writer per directory. Declared before
  // file_, so that the destructor closes the file before the lock drops.
  shm::File lock_;
  shm::File file_;  // the file being appended to; closed before the first record
  std::string path_;
  std::uint64_t file_bytes_ = 0;      // whole records on disk in the current file, header included
  std::uint64_t writeback_from_ = 0;  // offset in the current file from which no writeback was started
  std::uint64_t next_sequence_ = 0;
  bool empty_ = true;
  bool closed_ = false;
  std::uint64_t recovered_bytes_ = 0;
  std::uint64_t last_sync_ns_ = 0;        // monotonic
  std::uint64_t synced_realtime_ns_ = 0;  // of the last fdatasync, for monitoring
  bool dirty_ = false;                    // records written since the last fdatasync
  static constexpr std::size_t kNoReservation = ~std::size_t{0};
  std::vector<std::byte> buffer_;          // encoded records not yet written; size() is its capacity
  std::size_t pending_ = 0;                // bytes of sealed records at the front of buffer_
  std::uint64_t pending_records_ = 0;      // how many
  std::size_t reserved_ = kNoReservation;  // offset in buffer_ of the reserved record
  std::size_t reserved_payload_ = 0;       // its payload size
  // reserve() takes its inline path while pending_ stays within this: the
  // buffer's size, the write chunk and the current file's room (0 while no
  // file is open or the writer is closed).
  std::size_t fast_limit_ = 0;
  std::array<std::size_t, 3> unsummed_{};  // offsets of sealed short records whose CRC is not yet computed
  std::size_t unsummed_count_ = 0;
};

namespace detail {
class FileCursor;  // buffered reads and checks of one file (segment.cpp)
}  // namespace detail

/// How many records apart the reader's per-file sparse index entries are.
inline constexpr std::uint64_t kIndexStride = 4096;

/// Reads the records of a directory of segment files in order. Not
/// thread-safe: one caller at a time.
class SegmentReader {
 public:
  /// Opens `dir`, positioned at its first record. Fails if it does not exist.
  static Result<SegmentReader> open(const std::string& dir);

  SegmentReader(SegmentReader&& other) noexcept;
  SegmentReader& operator=(SegmentReader&& other) noexcept;
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;
  ~SegmentReader();

  /// The oldest sequence kept (from the oldest file's name; 0 if empty).
  Result<std::uint64_t> first_sequence();

  /// One past the last whole record on disk now: scans the newest file, from
  /// where the previous call stopped when that file is still the newest.
  Result<std::uint64_t> end_sequence();

  /// Positions at the record with sequence `seq`: the file by a binary
  /// search over the names, then a scan from the nearest record of the
  /// file's sparse index (every kIndexStride-th record's offset, learnt by
  /// earlier reads). `seq` == end_sequence() positions at the end; older
  /// than first_sequence() is not_found; past the end is invalid_argument.
  /// A `seq` inside a gap between two files (SegmentWriter::skip_to)
  /// positions at the first record after the gap (or at the end, if the gap
  /// reaches it): next() then returns a later sequence than asked for.
  Result<void> seek(std::uint64_t seq);

  /// Positions at the first record with timestamp >= `ns`, scanning from the
  /// newest file whose first record is older than `ns` (timestamps need not
  /// be monotonic, so an earlier file's tail could hold a later one; it is
  /// not searched). At the end if there is none.
  Result<void> seek_time(std::uint64_t ns);

  /// The next record, or nullopt at the end (the newest file's incomplete
  /// tail counts as the end). Corruption anywhere else is an error naming
  /// the file and the offset. After a gap between files (a file ends before
  /// the next one starts: SegmentWriter::skip_to) the next record's sequence
  /// jumps: callers see the gap in Record::sequence. Files that overlap are
  /// an error.
  Result<std::optional<Record>> next();

 private:
  struct File {
    std::uint64_t first_sequence;
    std::string path;
  };
  explicit SegmentReader(std::string dir);
  Result<void> refresh();
  Result<void> open_file(const File& file);
  [[nodiscard]] const File* next_file() const noexcept;
  Result<std::optional<Record>> peek();
  Result<bool> handle_stop(int check, std::uint64_t size, std::uint64_t claimed, bool& reread);
  void advance();

  std::string dir_;
  std::vector<File> files_;                     // as last listed, oldest first
  std::unique_ptr<detail::FileCursor> cursor_;  // the open file; null before the first read
  std::uint64_t file_first_ = 0;                // the open file's first sequence
  std::uint64_t known_size_ = 0;                // the open file's size when last asked (fstat)
  bool header_ok_ = false;                      // the open file's header has been checked
  std::uint64_t offset_ = 0;                    // of the next record in the open file
  std::uint64_t expected_ = 0;                  // its sequence
  std::uint32_t pending_ = 0;                   // padded size of the record peek() returned, 0 if none
  // Per file (by first sequence): offsets of its records first + k * kIndexStride
  // for k = 0, 1, ..., as far as reads have gone.
  std::map<std::uint64_t, std::vector<std::uint64_t>> index_;
  // Where end_sequence() last found the newest file's end, to resume there.
  std::uint64_t tail_first_ = UINT64_MAX;
  std::uint64_t tail_offset_ = 0;
  std::uint64_t tail_sequence_ = 0;
};

/// What prune() did.
struct PruneResult {
  std::uint64_t files_removed = 0;
  std::uint64_t bytes_removed = 0;
  std::uint64_t first_sequence = 0;  ///< the oldest sequence kept afterwards
};

/// Deletes whole oldest files, never the newest, while the total size
/// exceeds `max_total_bytes` or the file's last record is older than
/// `max_age_ns` before `now_ns` (0 = no limit). Thread-safe against a writer
/// appending to the newest file; readers holding a deleted file keep reading it.
Result<PruneResult> prune(const std::string& dir, std::uint64_t max_age_ns, std::uint64_t max_total_bytes,
                          std::uint64_t now_ns);

/// One segment file of an archive directory.
struct SegmentFileInfo {
  std::uint64_t first_sequence = 0;  ///< from its name
  std::string path;
  std::uint64_t bytes = 0;  ///< its size when listed
};

/// The segment files of `dir`, oldest first (other names are ignored), with
/// their sizes: what the probe shows without reading a record. A file removed
/// between the listing and its stat is left out. Thread-safe.
Result<std::vector<SegmentFileInfo>> list_segment_files(const std::string& dir);

}  // namespace shmbus::bus::archive
