// Segment files: encoding, the torn-tail recovery, the writer's batching and
// rolling, the reader's scan, and retention. See segment.hpp for the
// contracts and docs/protocol.md ("Archive files") for the format.
#include "bus/archive/segment.hpp"

#include "bus/archive/crc32c.hpp"
#include "shm/file.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace shmbus::bus::archive {
namespace {

constexpr std::size_t kReadChunk = 1u << 20;  // the reader's buffer: one pread per MiB
// The writer writes its buffer out when the next record would take it past
// this: small enough to stay in L2 between the encoding and the kernel's copy.
constexpr std::size_t kWriteChunk = 1u << 20;

std::uint64_t padded(std::uint64_t length) noexcept { return round_up(length, kRecordAlign); }

std::uint64_t realtime_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

std::uint64_t monotonic_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// The failure `e` of an OS-layer call (its errno, hence its code) described
// in the archive's words: "<what> '<path>'[ at offset N]: <errno text>".
Error in_context(const Error& e, const std::string& what, const std::string& path, std::uint64_t offset = UINT64_MAX) {
  return shm::file_error(what, path, e.sys_errno(), offset);
}

Error corrupted(const std::string& path, std::uint64_t offset, const std::string& what) {
  return Error(ErrorCode::corrupted, "archive file '" + path + "' at offset " + std::to_string(offset) + ": " + what);
}

std::string join(const std::string& dir, const std::string& name) { return shm::join_path(dir, name); }

struct SegmentFile {
  std::uint64_t first_sequence;
  std::string path;
};

// Segment files of `dir`, oldest first. Names other than 20 digits + ".seg"
// are not the archive's and are ignored.
Result<std::vector<SegmentFile>> list_segments(const std::string& dir) {
  auto names = shm::list_directory(dir);
  if (!names.ok()) return in_context(names.error(), "cannot list archive directory", dir);
  std::vector<SegmentFile> out;
  for (const std::string& name : *names) {
    if (name.size() != 24 || name.compare(20, 4, ".seg") != 0) continue;
    if (!std::all_of(name.begin(), name.begin() + 20, [](char c) { return c >= '0' && c <= '9'; })) continue;
    errno = 0;
    const unsigned long long v = std::strtoull(name.substr(0, 20).c_str(), nullptr, 10);
    if (errno == ERANGE) continue;  // 20 digits can exceed 2^64 - 1
    out.push_back({v, join(dir, name)});
  }
  std::sort(out.begin(), out.end(),
            [](const SegmentFile& a, const SegmentFile& b) { return a.first_sequence < b.first_sequence; });
  return out;
}

FileHeader make_header(std::uint64_t first_sequence, std::uint64_t channel_hash) {
  FileHeader h{};
  std::memcpy(h.magic, kFileMagic, sizeof h.magic);
  h.version = kFormatVersion;
  h.header_size = static_cast<std::uint32_t>(kFileHeaderSize);
  h.first_sequence = first_sequence;
  h.created_ns = realtime_ns();
  h.channel_hash = channel_hash;
  h.crc = crc32c(std::as_bytes(std::span(&h, 1)).first(offsetof(FileHeader, crc)));
  return h;
}

Result<void> check_header(const FileHeader& h, const std::string& path, std::uint64_t expected_first) {
  if (std::memcmp(h.magic, kFileMagic, sizeof h.magic) != 0) return corrupted(path, 0, "bad magic");
  if (h.version != kFormatVersion || h.header_size != kFileHeaderSize) {
    return Error(ErrorCode::version_mismatch, "archive file '" + path + "' has format version " +
                                                  std::to_string(h.version) + ", header size " +
                                                  std::to_string(h.header_size) + "; this build reads version 1");
  }
  if (h.crc != crc32c(std::as_bytes(std::span(&h, 1)).first(offsetof(FileHeader, crc)))) {
    return corrupted(path, offsetof(FileHeader, crc), "file header checksum mismatch");
  }
  if (h.first_sequence != expected_first) {
    return corrupted(path, offsetof(FileHeader, first_sequence),
                     "header says first sequence " + std::to_string(h.first_sequence) + ", the name says " +
                         std::to_string(expected_first));
  }
  return {};
}

}  // namespace

std::string segment_file_name(std::uint64_t first_sequence) {
  char name[32];
  std::snprintf(name, sizeof name, "%020" PRIu64 ".seg", first_sequence);
  return name;
}

// --- reading one file -----------------------------------------------------------------

/// What read_record() found at an offset.
enum class Check { ok, end, incomplete, misaligned, bad_length, bad_crc, bad_sequence };

const char* describe(Check c) {
  switch (c) {
    case Check::ok: return "ok";
    case Check::end: return "end of file";
    case Check::incomplete: return "incomplete record";
    case Check::misaligned: return "misaligned record";
    case Check::bad_length: return "bad record length";
    case Check::bad_crc: return "record checksum mismatch";
    case Check::bad_sequence: return "sequence out of order";
  }
  return "?";
}

/// Buffered reads of one segment file through pread, and record validation.
class detail::FileCursor {
 public:
  /// Reads `file`, which the caller keeps open while the cursor lives.
  explicit FileCursor(const shm::File& file) : file_(&file) {}
  /// Reads `file`, and closes it with the cursor.
  explicit FileCursor(shm::File&& file) : owned_(std::move(file)), file_(&owned_) {}
  FileCursor(const FileCursor&) = delete;
  FileCursor& operator=(const FileCursor&) = delete;
  FileCursor(FileCursor&&) = delete;
  FileCursor& operator=(FileCursor&&) = delete;
  ~FileCursor() = default;

  static Result<std::unique_ptr<FileCursor>> open(const std::string& path) {
    auto f = shm::File::open_read(path);
    if (!f.ok()) return in_context(f.error(), "cannot open archive file", path);
    return std::make_unique<FileCursor>(std::move(*f));
  }

  [[nodiscard]] const std::string& path() const noexcept { return file_->path(); }

  Result<std::uint64_t> size() {
    auto n = file_->size();
    if (!n.ok()) return in_context(n.error(), "cannot stat archive file", path());
    return n;
  }

  /// Forgets buffered bytes (the file may have changed under them).
  void invalidate() noexcept { buf_len_ = 0; }

  /// The header, checked; `size` must be at least kFileHeaderSize.
  Result<void> read_header(std::uint64_t expected_first) {
    auto p = bytes(0, kFileHeaderSize);
    if (!p.ok()) return p.error();
    if (*p == nullptr) return corrupted(path(), 0, "file shorter than its header");
    FileHeader h;
    std::memcpy(&h, *p, sizeof h);
    return check_header(h, path(), expected_first);
  }

  /// Validates the record at `offset` of a file of `size` bytes whose
  /// sequence should be `expected`; fills `out` (payload into the buffer,
  /// valid until the next call) and its padded size. `claimed` gets the
  /// record's own length field when it could be read.
  Result<Check> read_record(std::uint64_t offset, std::uint64_t size, std::uint64_t expected, Record& out,
                            std::uint32_t& padded_size, std::uint64_t& claimed) {
    claimed = 0;
    if (offset % kRecordAlign != 0) return Check::misaligned;
    if (offset == size) return Check::end;
    if (offset + kRecordHeaderSize > size) return Check::incomplete;
    auto hp = bytes(offset, kRecordHeaderSize);
    if (!hp.ok()) return hp.error();
    if (*hp == nullptr) return Check::incomplete;
    RecordHeader h;
    std::memcpy(&h, *hp, sizeof h);
    claimed = h.length;
    if (h.length < kRecordHeaderSize || h.length - kRecordHeaderSize != h.payload_length) return Check::bad_length;
    if (offset + padded(h.length) > size) return Check::incomplete;
    auto rp = bytes(offset, h.length);
    if (!rp.ok()) return rp.error();
    if (*rp == nullptr) return Check::incomplete;
    const std::span<const std::byte> rec(*rp, h.length);
    if (crc32c(rec.subspan(8)) != h.crc) return Check::bad_crc;
    if (h.sequence != expected) return Check::bad_sequence;
    out = Record{h.sequence, h.timestamp_ns, h.key, h.id, h.correlation_id, h.type, rec.subspan(kRecordHeaderSize)};
    padded_size = static_cast<std::uint32_t>(padded(h.length));
    return Check::ok;
  }

 private:
  // A pointer to bytes [offset, offset + len) of the file, or nullptr when
  // the file is shorter. Refills the buffer from `offset` when needed.
  Result<const std::byte*> bytes(std::uint64_t offset, std::size_t len) {
    if (offset >= buf_off_ && offset + len <= buf_off_ + buf_len_) return buf_.data() + (offset - buf_off_);
    const std::size_t want = std::max(len, kReadChunk);
    if (buf_.size() < want) buf_.resize(want);
    auto n = file_->pread(buf_.data(), want, offset);
    if (!n.ok()) {
      buf_len_ = 0;
      return n.error();  // "cannot read '<path>' at offset N": where the read failed
    }
    const std::size_t got = *n;
    buf_off_ = offset;
    buf_len_ = got;
    if (got < len) return static_cast<const std::byte*>(nullptr);
    return static_cast<const std::byte*>(buf_.data());
  }

  shm::File owned_;        // the file when the cursor owns it
  const shm::File* file_;  // the file read: &owned_ or the caller's
  std::vector<std::byte> buf_;
  std::uint64_t buf_off_ = 0;
  std::size_t buf_len_ = 0;
};

using Cursor = detail::FileCursor;

namespace {

/// Where a scan of a file's records stopped.
struct ScanEnd {
  std::uint64_t offset = kFileHeaderSize;  // just past the last whole record
  std::uint64_t next_sequence = 0;
  std::uint64_t size = 0;  // of the file when scanned
  Check stop = Check::end;
  std::uint64_t claimed = 0;  // the stopping record's length field
  bool has_record = false;
  std::uint64_t last_timestamp_ns = 0;
};

// Walks every whole record from the header on (or from `from_offset`, the
// known start of record `from_sequence`, past a header already checked),
// stopping at the first that does not check out (or at the end).
Result<ScanEnd> scan_file(Cursor& c, std::uint64_t first_sequence, std::uint64_t from_offset = kFileHeaderSize,
                          std::uint64_t from_sequence = UINT64_MAX) {
  ScanEnd s;
  auto size = c.size();
  if (!size.ok()) return size.error();
  s.size = *size;
  s.next_sequence = first_sequence;
  if (s.size < kFileHeaderSize) {
    s.offset = 0;
    s.stop = Check::incomplete;
    return s;
  }
  if (from_offset > kFileHeaderSize && from_offset <= s.size) {
    s.offset = from_offset;
    s.next_sequence = from_sequence;
  } else if (auto h = c.read_header(first_sequence); !h.ok()) {
    return h.error();
  }
  for (;;) {
    Record r;
    std::uint32_t step = 0;
    auto chk = c.read_record(s.offset, s.size, s.next_sequence, r, step, s.claimed);
    if (!chk.ok()) return chk.error();
    if (*chk != Check::ok) {
      s.stop = *chk;
      return s;
    }
    s.has_record = true;
    s.last_timestamp_ns = r.timestamp_ns;
    s.offset += step;
    ++s.next_sequence;
  }
}

}  // namespace

// --- writer -----------------------------------------------------------------------

Result<SegmentWriter> SegmentWriter::open(const std::string& dir, const WriterOptions& opts) {
  if (opts.segment_bytes < kFileHeaderSize + kRecordHeaderSize) {
    return Error(ErrorCode::invalid_argument,
                 "archive segment_bytes " + std::to_string(opts.segment_bytes) + " is smaller than one header");
  }
  if (auto d = shm::create_directories(dir); !d.ok()) {
    return in_context(d.error(), "cannot create archive directory", dir);
  }
  SegmentWriter w(dir, opts);
  // Two writers appending to one file would interleave records: the lock
  // (released by the kernel if the process dies) keeps a second one out.
  auto lock = shm::lock_directory(dir);
  if (!lock.ok()) {
    if (lock.error().code() == ErrorCode::busy) {
      return Error(ErrorCode::busy, "archive directory '" + dir + "' has another writer (it holds its flock)");
    }
    return lock.error();  // "cannot open directory" or "cannot lock directory", with its errno
  }
  w.lock_ = std::move(*lock);
  auto files = list_segments(dir);
  if (!files.ok()) return files.error();
  w.last_sync_ns_ = monotonic_ns();
  if (files->empty()) return w;
  const SegmentFile& newest = files->back();
  if (auto r = w.recover_newest(newest.path, newest.first_sequence); !r.ok()) return r.error();
  return w;
}

// Opens the newest file for appending and cuts it back to its last whole
// record. A file shorter than its header (a crash while it was created) is
// given a fresh header: its name says which sequence it starts at.
Result<void> SegmentWriter::recover_newest(const std::string& path, std::uint64_t first_sequence) {
  auto f = shm::File::open_append(path);
  if (!f.ok()) return in_context(f.error(), "cannot open archive file", path);
  file_ = std::move(*f);
  path_ = path;
  Cursor c(file_);
  auto s = scan_file(c, first_sequence);
  if (!s.ok()) return s.error();
  if (s->offset < s->size) {
    if (auto t = file_.truncate(s->offset); !t.ok()) {
      return in_context(t.error(), "cannot truncate torn tail of", path, s->offset);
    }
    recovered_bytes_ = s->size - s->offset;
  }
  if (s->size < kFileHeaderSize) {
    const FileHeader h = make_header(first_sequence, opts_.channel_hash);
    if (auto w = file_.write_all(std::as_bytes(std::span(&h, 1))); !w.ok()) {
      return in_context(w.error(), "cannot rewrite header of", path, 0);
    }
    s->offset = kFileHeaderSize;
    s->next_sequence = first_sequence;
  }
  // The cut must reach the disk before records are appended after it.
  if (recovered_bytes_ > 0) {
    if (auto d = file_.datasync(); !d.ok()) return in_context(d.error(), "fdatasync of", path);
  }
  file_bytes_ = s->offset;
  writeback_from_ = s->offset;
  next_sequence_ = s->next_sequence;
  empty_ = false;
  update_fast_limit();
  return {};
}

void SegmentWriter::release_lock() noexcept {
  lock_ = shm::File();  // closing the last descriptor drops the flock
}

void SegmentWriter::close_fd() noexcept { file_ = shm::File(); }

// Creates the file whose first record will be `first_sequence` and writes
// its header. A file that could not get its header is removed again.
Result<void> SegmentWriter::start_file(std::uint64_t first_sequence) {
  const std::string path = join(dir_, segment_file_name(first_sequence));
  auto f = shm::File::create_new(path);
  if (!f.ok()) return in_context(f.error(), "cannot create archive file", path);
  const FileHeader h = make_header(first_sequence, opts_.channel_hash);
  if (auto w = f->write_all(std::as_bytes(std::span(&h, 1))); !w.ok()) {
    *f = shm::File();
    (void)shm::remove_file(path);  // best effort: the header's error is the one to report
    return in_context(w.error(), "cannot write header of", path, 0);
  }
  close_fd();
  file_ = std::move(*f);
  path_ = path;
  file_bytes_ = kFileHeaderSize;
  writeback_from_ = 0;
  next_sequence_ = first_sequence;
  empty_ = false;
  update_fast_limit();
  // A file's name must survive a power cut as surely as the records in it.
  if (opts_.fsync != FsyncPolicy::never) return shm::sync_directory(dir_);
  return {};
}

// Writes the sealed records to the current file. On a failure the file is
// cut back to its last whole record, so a retry after the disk has room
// again appends where the archive really ends; the sealed records are
// dropped (the caller resends from next_sequence()).
Result<void> SegmentWriter::flush_buffer() {
  if (pending_ == 0) return {};
  checksum_unsummed();
  const std::size_t bytes = std::exchange(pending_, 0);
  const std::uint64_t records = std::exchange(pending_records_, 0);
  auto w = file_.write_all(std::span<const std::byte>(buffer_.data(), bytes));
  if (!w.ok()) {
    auto cut = file_.truncate(file_bytes_);
    Error e = in_context(w.error(), "cannot append to archive file", path_, file_bytes_);
    if (!cut.ok()) {
      return Error(
          e.code(),
          e.message() + "; cutting back the partial write also failed: " + std::strerror(cut.error().sys_errno()),
          e.sys_errno());
    }
    return e;
  }
  file_bytes_ += bytes;
  next_sequence_ += records;
  dirty_ = true;
  update_fast_limit();
  if (opts_.writeback_bytes != 0 && file_bytes_ - writeback_from_ >= opts_.writeback_bytes) {
    // Advisory (see WriterOptions::writeback_bytes): a failure here is an
    // I/O error the next fdatasync reports, or a filesystem without it.
    (void)file_.start_writeback(writeback_from_, file_bytes_ - writeback_from_);
    writeback_from_ = file_bytes_;
  }
  return {};
}

Result<void> SegmentWriter::datasync_current() {
  if (!file_.is_open()) return {};
  if (auto d = file_.datasync(); !d.ok()) return in_context(d.error(), "fdatasync of", path_);
  last_sync_ns_ = monotonic_ns();
  synced_realtime_ns_ = realtime_ns();
  dirty_ = false;
  return {};
}

Result<void> SegmentWriter::append(std::span<const Record> records) {
  if (closed_) return Error(ErrorCode::invalid_argument, "archive writer for '" + dir_ + "' is closed");
  if (records.empty()) return {};
  // Checked before anything is written: a bad batch leaves the archive as it was.
  std::uint64_t want = empty_ ? records[0].sequence : next_sequence_ + pending_records_;
  for (const Record& r : records) {
    if (r.sequence != want) {
      return Error(ErrorCode::invalid_argument, "archive '" + dir_ + "' expects sequence " + std::to_string(want) +
                                                    ", got " + std::to_string(r.sequence));
    }
    if (r.payload.size() > kMaxPayload) {
      return Error(ErrorCode::invalid_argument, "archive record payload of " + std::to_string(r.payload.size()) +
                                                    " bytes exceeds the format's limit");
    }
    ++want;
  }
  for (const Record& r : records) {
    auto dst = reserve(r.sequence, r.payload.size());
    if (!dst.ok()) return dst.error();
    if (!r.payload.empty()) std::memcpy(dst->data(), r.payload.data(), r.payload.size());
    seal(r);
  }
  return commit();
}

Result<std::span<std::byte>> SegmentWriter::reserve_slow(std::uint64_t sequence, std::size_t payload_size) {
  if (closed_) return Error(ErrorCode::invalid_argument, "archive writer for '" + dir_ + "' is closed");
  if (reserved_ != kNoReservation) {
    return Error(ErrorCode::invalid_argument, "archive '" + dir_ + "' has a reserved record not yet sealed or dropped");
  }
  if (!empty_ && sequence != next_sequence_ + pending_records_) {
    return Error(ErrorCode::invalid_argument, "archive '" + dir_ + "' expects sequence " +
                                                  std::to_string(next_sequence_ + pending_records_) + ", got " +
                                                  std::to_string(sequence));
  }
  if (payload_size > kMaxPayload) {
    return Error(ErrorCode::invalid_argument,
                 "archive record payload of " + std::to_string(payload_size) + " bytes exceeds the format's limit");
  }
  if (!file_.is_open()) {
    if (auto s = start_file(sequence); !s.ok()) return s.error();
  }
  const std::size_t size = padded(kRecordHeaderSize + payload_size);
  const std::uint64_t used = file_bytes_ + pending_;
  const bool full = used > kFileHeaderSize && used + size > opts_.segment_bytes;
  if (full || (pending_ != 0 && pending_ + size > kWriteChunk)) {
    if (auto f = flush_buffer(); !f.ok()) return f.error();
  }
  if (full) {
    if (opts_.fsync != FsyncPolicy::never) {
      if (auto d = datasync_current(); !d.ok()) return d.error();
    }
    if (auto s = start_file(sequence); !s.ok()) return s.error();
  }
  if (buffer_.size() < pending_ + size) {
    buffer_.resize(std::max(pending_ + size, kWriteChunk));
    update_fast_limit();
  }
  return place(size, payload_size);
}

std::span<std::byte> SegmentWriter::place(std::size_t size, std::size_t payload_size) noexcept {
  reserved_ = pending_;
  reserved_payload_ = payload_size;
  std::byte* record = buffer_.data() + pending_;
  // The padding (under 8 bytes, at the end of the record's last aligned
  // word) is zero: the bytes on disk carry nothing the buffer held before.
  // Storing the whole word first is cheaper than a memset; the payload copy
  // and the header then overwrite its front if they reach it.
  constexpr std::uint64_t kZero = 0;
  std::memcpy(record + size - sizeof kZero, &kZero, sizeof kZero);
  return std::span<std::byte>(record + kRecordHeaderSize, payload_size);
}

void SegmentWriter::update_fast_limit() noexcept {
  if (closed_ || !file_.is_open() || file_bytes_ >= opts_.segment_bytes) {
    fast_limit_ = 0;
    return;
  }
  fast_limit_ = static_cast<std::size_t>(
      std::min<std::uint64_t>({buffer_.size(), kWriteChunk, opts_.segment_bytes - file_bytes_}));
}

void SegmentWriter::seal(const Record& meta) noexcept {
  if (reserved_ == kNoReservation) return;
  std::byte* const at = buffer_.data() + reserved_;
  const auto length = static_cast<std::uint32_t>(kRecordHeaderSize + reserved_payload_);
  // The header goes straight into the buffer in 8-byte stores. (A
  // RecordHeader built on the stack and copied made the compiler reload it
  // in 16-byte pieces across narrower stores: a store-forwarding stall per
  // piece, a quarter of the writer's time at 64-byte payloads.) The CRC
  // later reads these words whole as well.
  const auto put = [at](std::size_t offset, std::uint64_t v) { std::memcpy(at + offset, &v, sizeof v); };
  const auto pair = [](std::uint32_t low_addr, std::uint32_t high_addr) {
    // Two 32-bit fields that sit side by side, as one native 64-bit word.
    if constexpr (std::endian::native == std::endian::little) {
      return std::uint64_t{low_addr} | std::uint64_t{high_addr} << 32;
    } else {
      return std::uint64_t{low_addr} << 32 | std::uint64_t{high_addr};
    }
  };
  static_assert(offsetof(RecordHeader, crc) == offsetof(RecordHeader, length) + 4);
  static_assert(offsetof(RecordHeader, payload_length) == offsetof(RecordHeader, type) + 4);
  put(offsetof(RecordHeader, length), pair(length, 0));  // crc: filled in below or with the next records
  put(offsetof(RecordHeader, sequence), next_sequence_ + pending_records_);
  put(offsetof(RecordHeader, timestamp_ns), meta.timestamp_ns);
  put(offsetof(RecordHeader, key), meta.key);
  put(offsetof(RecordHeader, id), meta.id);
  put(offsetof(RecordHeader, correlation_id), meta.correlation_id);
  put(offsetof(RecordHeader, type), pair(meta.type, static_cast<std::uint32_t>(reserved_payload_)));
  // The CRC covers the header's bytes after `crc` and the payload, which
  // follow each other in the buffer. A short record waits for two more, so
  // that three checksum chains run side by side (crc32c_3) while the bytes
  // are still in L1; a long one goes alone (its single checksum already
  // runs in lanes).
  constexpr std::size_t kAlone = 512;
  if (length - 8 >= kAlone) {
    store_crc(reserved_, crc32c(std::span<const std::byte>(at + 8, length - 8)));
  } else {
    unsummed_[unsummed_count_++] = reserved_;
    if (unsummed_count_ == unsummed_.size()) checksum_unsummed();
  }
  pending_ += padded(length);
  ++pending_records_;
  reserved_ = kNoReservation;
}

std::span<const std::byte> SegmentWriter::checksummed_bytes(std::size_t at) const noexcept {
  std::uint32_t length;
  std::memcpy(&length, buffer_.data() + at, sizeof length);
  return {buffer_.data() + at + 8, length - 8};
}

void SegmentWriter::store_crc(std::size_t at, std::uint32_t crc) noexcept {
  std::memcpy(buffer_.data() + at + offsetof(RecordHeader, crc), &crc, sizeof crc);
}

void SegmentWriter::checksum_unsummed() noexcept {
  if (unsummed_count_ == unsummed_.size()) {
    std::uint32_t crc[3];
    crc32c_3(checksummed_bytes(unsummed_[0]), checksummed_bytes(unsummed_[1]), checksummed_bytes(unsummed_[2]), crc);
    for (std::size_t k = 0; k < unsummed_.size(); ++k) store_crc(unsummed_[k], crc[k]);
  } else {
    for (std::size_t k = 0; k < unsummed_count_; ++k) store_crc(unsummed_[k], crc32c(checksummed_bytes(unsummed_[k])));
  }
  unsummed_count_ = 0;
}

Result<void> SegmentWriter::commit() {
  if (closed_) return Error(ErrorCode::invalid_argument, "archive writer for '" + dir_ + "' is closed");
  if (auto f = flush_buffer(); !f.ok()) return f;
  return after_batch();
}

Result<void> SegmentWriter::after_batch() {
  const std::uint64_t now = opts_.fsync == FsyncPolicy::interval ? monotonic_ns() : 0;
  const bool due = opts_.fsync == FsyncPolicy::every_batch ||
                   (opts_.fsync == FsyncPolicy::interval && now - last_sync_ns_ >= opts_.fsync_interval_ns);
  if (!due) return {};
  return datasync_current();
}

Result<void> SegmentWriter::sync_if_due() {
  if (closed_ || opts_.fsync != FsyncPolicy::interval || !dirty_) return {};
  if (monotonic_ns() - last_sync_ns_ < opts_.fsync_interval_ns) return {};
  return datasync_current();
}

Result<void> SegmentWriter::skip_to(std::uint64_t seq) {
  if (closed_) return Error(ErrorCode::invalid_argument, "archive writer for '" + dir_ + "' is closed");
  reserved_ = kNoReservation;
  if (auto f = flush_buffer(); !f.ok()) return f;
  if (!empty_ && seq <= next_sequence_) {
    if (seq == next_sequence_) return {};
    return Error(ErrorCode::invalid_argument, "archive '" + dir_ + "' is at sequence " +
                                                  std::to_string(next_sequence_) + "; cannot skip back to " +
                                                  std::to_string(seq));
  }
  // The records before the gap must be as durable as the file that follows
  // it: a power cut must not keep the later file and lose the earlier tail.
  if (opts_.fsync != FsyncPolicy::never) {
    if (auto d = datasync_current(); !d.ok()) return d;
  }
  // The new file is created now, not at the next append: the archive then
  // says where it continues even if nothing follows before a crash.
  return start_file(seq);
}

Result<void> SegmentWriter::sync() {
  if (closed_) return Error(ErrorCode::invalid_argument, "archive writer for '" + dir_ + "' is closed");
  if (auto f = flush_buffer(); !f.ok()) return f;
  if (auto d = datasync_current(); !d.ok()) return d;
  last_sync_ns_ = monotonic_ns();
  return shm::sync_directory(dir_);
}

Result<void> SegmentWriter::close() {
  if (closed_) return {};
  closed_ = true;
  fast_limit_ = 0;
  reserved_ = kNoReservation;
  auto flushed = flush_buffer();  // what was sealed is written, as by commit() without a sync
  release_lock();
  if (!file_.is_open()) return flushed;
  if (!flushed.ok()) {
    close_fd();
    return flushed;
  }
  if (auto c = file_.close(); !c.ok()) return in_context(c.error(), "close of", path_);
  return {};
}

// --- reader -----------------------------------------------------------------------

SegmentReader::SegmentReader(std::string dir) : dir_(std::move(dir)) {}
SegmentReader::SegmentReader(SegmentReader&&) noexcept = default;
SegmentReader& SegmentReader::operator=(SegmentReader&&) noexcept = default;
SegmentReader::~SegmentReader() = default;

Result<SegmentReader> SegmentReader::open(const std::string& dir) {
  if (!shm::is_directory(dir)) {
    return Error(ErrorCode::not_found, "archive directory '" + dir + "' does not exist");
  }
  SegmentReader r(dir);
  if (auto f = r.refresh(); !f.ok()) return f.error();
  return r;
}

Result<void> SegmentReader::refresh() {
  auto files = list_segments(dir_);
  if (!files.ok()) return files.error();
  files_.clear();
  for (auto& f : *files) files_.push_back({f.first_sequence, std::move(f.path)});
  // Forget the index of pruned files.
  std::erase_if(index_, [this](const auto& e) {
    return std::none_of(files_.begin(), files_.end(), [&](const File& f) { return f.first_sequence == e.first; });
  });
  return {};
}

Result<void> SegmentReader::open_file(const File& file) {
  auto c = Cursor::open(file.path);
  if (!c.ok()) return c.error();
  cursor_ = std::move(*c);
  file_first_ = file.first_sequence;
  known_size_ = 0;
  header_ok_ = false;
  offset_ = kFileHeaderSize;
  expected_ = file.first_sequence;
  pending_ = 0;
  return {};
}

const SegmentReader::File* SegmentReader::next_file() const noexcept {
  auto it = std::upper_bound(files_.begin(), files_.end(), file_first_,
                             [](std::uint64_t v, const File& f) { return v < f.first_sequence; });
  return it == files_.end() ? nullptr : &*it;
}

void SegmentReader::advance() {
  if ((expected_ - file_first_) % kIndexStride == 0) {
    auto& entries = index_[file_first_];
    if (entries.size() == (expected_ - file_first_) / kIndexStride) entries.push_back(offset_);
  }
  offset_ += pending_;
  ++expected_;
  pending_ = 0;
}

Result<std::uint64_t> SegmentReader::first_sequence() {
  if (auto f = refresh(); !f.ok()) return f.error();
  return files_.empty() ? 0 : files_.front().first_sequence;
}

Result<std::uint64_t> SegmentReader::end_sequence() {
  if (auto f = refresh(); !f.ok()) return f.error();
  if (files_.empty()) return std::uint64_t{0};
  const File& newest = files_.back();
  auto c = Cursor::open(newest.path);
  if (!c.ok()) return c.error();
  // Records before the last known end were whole and are never rewritten
  // (recovery cuts only after them), so the scan resumes there.
  const bool resume = tail_first_ == newest.first_sequence;
  auto s = scan_file(**c, newest.first_sequence, resume ? tail_offset_ : kFileHeaderSize, tail_sequence_);
  if (!s.ok()) return s.error();
  if (s->offset >= kFileHeaderSize) {
    tail_first_ = newest.first_sequence;
    tail_offset_ = s->offset;
    tail_sequence_ = s->next_sequence;
  }
  return s->next_sequence;
}

Result<std::optional<Record>> SegmentReader::peek() {
  bool reread = false;
  for (;;) {
    if (!cursor_) {
      if (auto f = refresh(); !f.ok()) return f.error();
      if (files_.empty()) return std::optional<Record>{};
      if (auto o = open_file(files_.front()); !o.ok()) return o.error();
    }
    Check chk = Check::incomplete;
    Record rec;
    std::uint32_t step = 0;
    std::uint64_t claimed = 0;
    // Records wholly within the size last seen need no fstat (one per record
    // was most of a replay's time); only a read that stops short asks the
    // file again, and reads again if it has grown.
    for (bool stat_again = true;;) {
      if (!header_ok_ && known_size_ >= kFileHeaderSize) {
        if (auto h = cursor_->read_header(file_first_); !h.ok()) return h.error();
        header_ok_ = true;
      }
      if (header_ok_) {
        auto r = cursor_->read_record(offset_, known_size_, expected_, rec, step, claimed);
        if (!r.ok()) return r.error();
        chk = *r;
      }
      if (chk == Check::ok || !stat_again) break;
      stat_again = false;
      auto size = cursor_->size();
      if (!size.ok()) return size.error();
      if (*size == known_size_) break;
      known_size_ = *size;
    }
    if (chk == Check::ok) {
      pending_ = step;
      return std::optional<Record>{rec};
    }
    auto moved = handle_stop(static_cast<int>(chk), known_size_, claimed, reread);
    if (!moved.ok()) return moved.error();
    if (!*moved) return std::optional<Record>{};
  }
}

// The open file has no whole record at offset_. In the newest file that is
// the end (a writer may be appending, or a torn tail awaits recovery) unless
// whole bytes follow the bad record: that is corruption in the middle. An
// older file must end exactly at a record boundary and be followed by the
// file starting at the next sequence. Returns true when the caller should
// read again, false at the end.
Result<bool> SegmentReader::handle_stop(int check, std::uint64_t size, std::uint64_t claimed, bool& reread) {
  const auto chk = static_cast<Check>(check);
  if (auto f = refresh(); !f.ok()) return f.error();
  const File* next = next_file();
  if (next == nullptr) {
    const bool tail =
        chk == Check::end || chk == Check::incomplete || chk == Check::bad_length || offset_ + padded(claimed) >= size;
    if (!tail) return corrupted(cursor_->path(), offset_, describe(chk));
    cursor_->invalidate();  // a writer will overwrite or extend these bytes
    return false;
  }
  if (chk == Check::end) {
    // A later start is a gap the writer recorded (skip_to): the caller sees
    // the jump in the next record's sequence. An earlier one cannot be.
    if (next->first_sequence < expected_) {
      return corrupted(next->path, 0,
                       "file starts at sequence " + std::to_string(next->first_sequence) + " but the previous file " +
                           cursor_->path() + " already holds it (it ends before " + std::to_string(expected_) + ")");
    }
    if (auto o = open_file(*next); !o.ok()) return o.error();
    return true;
  }
  // The file may have stopped being the newest only now: read it once more.
  if (!reread) {
    reread = true;
    cursor_->invalidate();
    return true;
  }
  return corrupted(cursor_->path(), offset_, describe(chk));
}

Result<std::optional<Record>> SegmentReader::next() {
  auto r = peek();
  if (r.ok() && r->has_value()) advance();
  return r;
}

Result<void> SegmentReader::seek(std::uint64_t seq) {
  if (auto f = refresh(); !f.ok()) return f;
  cursor_.reset();
  if (files_.empty()) {
    if (seq == 0) return {};
    return Error(ErrorCode::invalid_argument, "archive '" + dir_ + "' is empty; cannot seek to " + std::to_string(seq));
  }
  if (seq < files_.front().first_sequence) {
    return Error(ErrorCode::not_found, "sequence " + std::to_string(seq) + " is older than the oldest kept (" +
                                           std::to_string(files_.front().first_sequence) + ") in '" + dir_ + "'");
  }
  auto it = std::upper_bound(files_.begin(), files_.end(), seq,
                             [](std::uint64_t v, const File& f) { return v < f.first_sequence; });
  if (auto o = open_file(*std::prev(it)); !o.ok()) return o;
  if (auto ix = index_.find(file_first_); ix != index_.end() && !ix->second.empty()) {
    const std::uint64_t k = std::min<std::uint64_t>((seq - file_first_) / kIndexStride, ix->second.size() - 1);
    offset_ = ix->second[k];
    expected_ = file_first_ + k * kIndexStride;
  }
  for (;;) {
    auto r = peek();
    if (!r.ok()) return r.error();
    if (!r->has_value()) {
      if (expected_ >= seq) return {};  // at the end, or after a gap that reaches it
      return Error(ErrorCode::invalid_argument, "sequence " + std::to_string(seq) + " is past the end (" +
                                                    std::to_string(expected_) + ") of '" + dir_ + "'");
    }
    if ((*r)->sequence >= seq) return {};  // `seq`, or the first record after a gap holding it
    advance();
  }
}

Result<void> SegmentReader::seek_time(std::uint64_t ns) {
  if (auto f = refresh(); !f.ok()) return f;
  cursor_.reset();
  if (files_.empty()) return {};
  std::size_t start = 0;
  for (std::size_t i = files_.size(); i-- > 0 && start == 0;) {
    auto c = Cursor::open(files_[i].path);
    if (!c.ok()) return c.error();
    auto size = (*c)->size();
    if (!size.ok()) return size.error();
    if (*size < kFileHeaderSize) continue;
    if (auto h = (*c)->read_header(files_[i].first_sequence); !h.ok()) return h;
    Record rec;
    std::uint32_t step = 0;
    std::uint64_t claimed = 0;
    auto chk = (*c)->read_record(kFileHeaderSize, *size, files_[i].first_sequence, rec, step, claimed);
    if (!chk.ok()) return chk.error();
    if (*chk == Check::ok && rec.timestamp_ns < ns) start = i;
  }
  if (auto o = open_file(files_[start]); !o.ok()) return o;
  for (;;) {
    auto r = peek();
    if (!r.ok()) return r.error();
    if (!r->has_value() || (*r)->timestamp_ns >= ns) return {};
    advance();
  }
}

// --- retention --------------------------------------------------------------------

namespace {

// Whether every record of `file` is older than `max_age_ns` before `now_ns`.
Result<bool> expired(const SegmentFile& file, std::uint64_t max_age_ns, std::uint64_t now_ns) {
  if (max_age_ns == 0 || now_ns < max_age_ns) return false;
  auto c = Cursor::open(file.path);
  if (!c.ok()) return c.error();
  auto s = scan_file(**c, file.first_sequence);
  if (!s.ok()) return s.error();
  return !s->has_record || s->last_timestamp_ns < now_ns - max_age_ns;
}

}  // namespace

Result<PruneResult> prune(const std::string& dir, std::uint64_t max_age_ns, std::uint64_t max_total_bytes,
                          std::uint64_t now_ns) {
  auto files = list_segments(dir);
  if (!files.ok()) return files.error();
  PruneResult out;
  std::vector<std::uint64_t> sizes;
  std::uint64_t total = 0;
  for (const auto& f : *files) {
    auto sz = shm::file_size(f.path);
    if (!sz.ok()) return in_context(sz.error(), "cannot stat archive file", f.path);
    sizes.push_back(*sz);
    total += *sz;
  }
  // Only a prefix of the oldest files goes, so what is kept has no gap.
  std::size_t i = 0;
  for (; i + 1 < files->size(); ++i) {
    bool drop = max_total_bytes != 0 && total > max_total_bytes;
    if (!drop) {
      auto old = expired((*files)[i], max_age_ns, now_ns);
      if (!old.ok()) return old.error();
      drop = *old;
    }
    if (!drop) break;
    if (auto r = shm::remove_file((*files)[i].path); !r.ok()) {
      return in_context(r.error(), "cannot remove archive file", (*files)[i].path);
    }
    total -= sizes[i];
    out.bytes_removed += sizes[i];
    ++out.files_removed;
  }
  out.first_sequence = files->empty() ? 0 : (*files)[i].first_sequence;
  return out;
}

Result<std::vector<SegmentFileInfo>> list_segment_files(const std::string& dir) {
  auto files = list_segments(dir);
  if (!files.ok()) return files.error();
  std::vector<SegmentFileInfo> out;
  out.reserve(files->size());
  for (SegmentFile& f : *files) {
    auto size = shm::file_size(f.path);
    if (!size.ok()) {
      if (size.error().code() == ErrorCode::not_found) continue;  // pruned meanwhile
      return size.error();
    }
    out.push_back({f.first_sequence, std::move(f.path), *size});
  }
  return out;
}

}  // namespace shmbus::bus::archive
