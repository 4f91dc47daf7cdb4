#include "bus/archive/archive_source.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <exception>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/participants.hpp"
#include "shm/file.hpp"

namespace shmbus::bus::archive {

Result<bool> ArchiveSource::open() {
  if (reader_) return true;
  // An archive channel whose archiver has not run yet has no directory:
  // that is an empty archive, not an error.
  if (!shm::is_directory(dir_)) return false;
  auto r = SegmentReader::open(dir_);
  if (!r.ok()) return r.error();
  reader_.emplace(std::move(*r));
  position_ = kUnknown;
  have_record_ = false;
  return true;
}

std::uint64_t ArchiveSource::next_file_after(std::uint64_t seq) const noexcept {
  try {
    auto names = shm::list_directory(dir_);
    if (!names.ok()) return 0;
    std::uint64_t best = 0;
    for (const std::string& name : *names) {
      // Segment file names: 20 decimal digits of the first sequence, ".seg".
      if (name.size() != 24 || name.compare(20, 4, ".seg") != 0) continue;
      if (!std::all_of(name.begin(), name.begin() + 20, [](char c) { return c >= '0' && c <= '9'; })) continue;
      errno = 0;
      const unsigned long long v = std::strtoull(name.substr(0, 20).c_str(), nullptr, 10);
      if (errno == ERANGE) continue;
      if (v > seq && (best == 0 || v < best)) best = v;
    }
    return best;
  } catch (const std::exception&) {
    return 0;
  }
}

ArchiveRead ArchiveSource::fail(const Error& e, std::uint64_t seq) {
  error_ = e.message();
  // Whatever follows a bad record in its file cannot be found (its length
  // may be the damaged field): reading resumes at the next file.
  next_ = next_file_after(seq);
  position_ = kUnknown;
  have_record_ = false;
  return ArchiveRead::error;
}

ArchiveRead ArchiveSource::read(std::uint64_t seq) noexcept {
  try {
    return read_unchecked(seq);
  } catch (const std::exception& e) {
    error_ = "archive '" + dir_ + "': " + e.what();
    next_ = 0;
    position_ = kUnknown;
    have_record_ = false;
    return ArchiveRead::error;
  }
}

ArchiveRead ArchiveSource::read_unchecked(std::uint64_t seq) {
  // The record read last, asked for again (a gap's end, a re-read after a
  // failed validation, peek's next call): no reader call, so its payload is
  // still valid.
  if (have_record_ && record_.sequence == seq) return ArchiveRead::found;
  auto opened = open();
  if (!opened.ok()) return fail(opened.error(), seq);
  if (!*opened) return ArchiveRead::absent;
  have_record_ = false;
  if (position_ != seq) {
    if (auto s = reader_->seek(seq); !s.ok()) {
      position_ = kUnknown;
      if (s.error().code() == ErrorCode::invalid_argument) return ArchiveRead::absent;  // past the end
      if (s.error().code() != ErrorCode::not_found) return fail(s.error(), seq);
      // Older than the oldest file kept (pruned), or in a gap between files.
      auto first = reader_->first_sequence();
      if (!first.ok()) return fail(first.error(), seq);
      next_ = *first > seq ? *first : next_file_after(seq);
      return next_ > seq ? ArchiveRead::missing : ArchiveRead::absent;
    }
    position_ = seq;
  }
  auto r = reader_->next();
  if (r.ok() && !r->has_value()) {
    // At the newest file's tail the reader drops its buffered bytes before
    // answering "end" (a writer may have rewritten them after a recovery):
    // read once more from the file itself before saying `seq` is not there,
    // which a subscriber would count as lost.
    r = reader_->next();
  }
  if (!r.ok()) return fail(r.error(), seq);
  if (!r->has_value()) return ArchiveRead::absent;  // still positioned at seq: a later read retries
  record_ = **r;
  have_record_ = true;
  position_ = record_.sequence + 1;
  if (record_.sequence == seq) return ArchiveRead::found;
  if (record_.sequence > seq) {
    next_ = record_.sequence;  // a gap: the reader moved on to the next record
    return ArchiveRead::missing;
  }
  return fail(
      Error(ErrorCode::corrupted, "archive '" + dir_ + "' returned sequence " + std::to_string(record_.sequence) +
                                      " where " + std::to_string(seq) + " was expected"),
      seq);
}

Result<std::optional<std::uint64_t>> ArchiveSource::first_sequence() {
  auto opened = open();
  if (!opened.ok()) return opened.error();
  if (!*opened) return std::optional<std::uint64_t>{};
  auto first = reader_->first_sequence();
  if (!first.ok()) return first.error();
  // Whether a whole record is there: read it (cheap, at the start of the
  // oldest file; and kept, for a read of it that follows).
  if (have_record_ && record_.sequence == *first) return std::optional<std::uint64_t>{*first};
  position_ = kUnknown;
  have_record_ = false;
  if (auto s = reader_->seek(*first); !s.ok()) {
    if (s.error().code() == ErrorCode::invalid_argument || s.error().code() == ErrorCode::not_found) {
      return std::optional<std::uint64_t>{};  // empty, or pruned meanwhile
    }
    return s.error();
  }
  auto r = reader_->next();
  if (!r.ok()) return r.error();
  if (!r->has_value()) return std::optional<std::uint64_t>{};  // a file with no whole record yet
  record_ = **r;
  have_record_ = true;
  position_ = record_.sequence + 1;
  return std::optional<std::uint64_t>{record_.sequence};
}

Result<std::uint64_t> ArchiveSource::end_sequence() {
  auto opened = open();
  if (!opened.ok()) return opened.error();
  if (!*opened) return std::uint64_t{0};
  return reader_->end_sequence();
}

Result<std::optional<std::uint64_t>> ArchiveSource::seek_time(std::uint64_t realtime_ns) {
  auto opened = open();
  if (!opened.ok()) return opened.error();
  if (!*opened) return std::optional<std::uint64_t>{};
  position_ = kUnknown;
  have_record_ = false;
  if (auto s = reader_->seek_time(realtime_ns); !s.ok()) return s.error();
  auto r = reader_->next();
  if (!r.ok()) return r.error();
  if (!r->has_value()) return std::optional<std::uint64_t>{};
  record_ = **r;
  have_record_ = true;
  position_ = record_.sequence + 1;
  return std::optional<std::uint64_t>{record_.sequence};
}

Message message_of(const Record& r) noexcept {
  Message m;
  m.sequence = r.sequence;
  m.timestamp_ns = r.timestamp_ns;
  m.key = r.key;
  m.id = r.id;
  m.correlation_id = r.correlation_id;
  m.type = r.type;
  m.attempt = 0;
  m.payload = r.payload;
  return m;
}

std::uint64_t archive_start_position(const ChannelState& ch, const StartAt& start, std::uint64_t ring_cursor,
                                     std::uint64_t& lost) noexcept {
  if (ch.geo.archive_dir.empty()) return ring_cursor;
  try {
    ArchiveSource src(ch.geo.archive_dir);
    switch (start.kind) {
      case StartAt::Kind::earliest: {
        auto first = src.first_sequence();
        if (!first.ok() || !first->has_value()) return ring_cursor;
        return std::min(**first, ring_cursor);
      }
      case StartAt::Kind::timestamp: {
        // The ring holds every message since the time: it answers.
        if (lost == 0) return ring_cursor;
        auto at = src.seek_time(start.value);
        if (!at.ok()) return ring_cursor;
        auto first = src.first_sequence();
        if (!first.ok() || !first->has_value()) return ring_cursor;  // nothing archived
        if (at->has_value()) {
          const std::uint64_t s = **at;
          // The archive's first record is already at or after the time:
          // what was before it (pruned, or never archived) may be from then
          // (an upper bound, as for the ring).
          lost = s == **first ? s : 0;
          return std::min(s, ring_cursor);
        }
        // Every archived record is older than the time: only what lies
        // between the archive's end and the ring's oldest is unaccounted.
        auto end = src.end_sequence();
        if (!end.ok()) return ring_cursor;
        lost = *end < ring_cursor ? ring_cursor - *end : 0;
        return ring_cursor;
      }
      case StartAt::Kind::latest:
      case StartAt::Kind::sequence: return ring_cursor;
    }
  } catch (const std::exception&) {
    // An allocation failure: the ring's answer stands (its loss counted).
  }
  return ring_cursor;
}

}  // namespace shmbus::bus::archive
