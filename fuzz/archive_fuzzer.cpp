// Fuzz target: reading and recovering arbitrary archive segment files.
//
// Input: one mode byte, then the bytes of a segment file. The file is
// written into a private directory under the name of the first sequence its
// header claims (or 0 where the input is too short to hold one), next to a
// valid file of eight records: an older one (mode & 3 == 1), so that the
// input's file is the newest (a torn tail, which recovery cuts back), or a
// newer one (mode & 3 == 2), so that it is an older file (corruption in the
// middle, which a reader must report as an error naming it).
// Then:
//   - a reader opens the directory, reads every record it can, seeks to a
//     sequence and to a time taken from the input, and reads again;
//   - a writer opens it (recovering the newest file), appends one record at
//     its next sequence, and a reader reads the directory again;
//   - the directory is pruned by size.
// Every outcome must be an error with a message or records that pass their
// checksums: never a crash, an out-of-bounds access, or a hang.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include <unistd.h>

#include "bus/archive/segment.hpp"

namespace fs = std::filesystem;
namespace ar = shmbus::bus::archive;

namespace {

constexpr int kMaxRecords = 4096;  ///< bounds each read pass (inputs are small)

/// The private directory of this process, emptied for every input.
const fs::path& work_dir() {
  static const fs::path dir = fs::temp_directory_path() / ("shmbus-fuzz-archive-" + std::to_string(::getpid()));
  return dir;
}

void write_file(const fs::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

/// Reads at most kMaxRecords records; every one must be whole.
void read_all(ar::SegmentReader& r) {
  for (int i = 0; i < kMaxRecords; ++i) {
    auto rec = r.next();
    if (!rec || !rec.value()) return;
    const ar::Record& m = *rec.value();
    volatile std::uint8_t sink = 0;
    if (!m.payload.empty())
      sink = static_cast<std::uint8_t>(m.payload.front()) ^ static_cast<std::uint8_t>(m.payload.back());
    (void)sink;
  }
}

void read_dir(const fs::path& dir, std::uint64_t seek_seq, std::uint64_t seek_ns) {
  auto r = ar::SegmentReader::open(dir.string());
  if (!r) return;
  (void)r->first_sequence();
  (void)r->end_sequence();
  read_all(*r);
  if (r->seek(seek_seq)) read_all(*r);
  if (r->seek_time(seek_ns)) read_all(*r);
}

/// Writes a valid file of eight records from `first` into `dir` (through a
/// private subdirectory, so that the writer sees no other file).
void write_valid(const fs::path& dir, std::uint64_t first) {
  const fs::path tmp = dir / "valid";
  ar::WriterOptions o;
  auto w = ar::SegmentWriter::open(tmp.string(), o);
  if (!w) std::abort();  // a fresh private directory must open
  const std::byte body[24] = {};
  ar::Record recs[8];
  for (std::uint64_t i = 0; i < 8; ++i) {
    recs[i].sequence = first + i;
    recs[i].timestamp_ns = 1000 + i;
    recs[i].payload = std::span<const std::byte>(body, i * 3);
  }
  if (!w->append(recs) || !w->close()) std::abort();
  fs::rename(tmp / ar::segment_file_name(first), dir / ar::segment_file_name(first));
  fs::remove_all(tmp);
}

std::uint64_t read_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t mode = data[0];
  const std::uint8_t* file = data + 1;
  const std::size_t file_size = size - 1;
  const fs::path& dir = work_dir();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) return 0;

  // The first sequence its header claims names the file, as the writer does.
  std::uint64_t first = file_size >= 24 ? read_u64(file + 16) : 0;
  if ((mode & 3) == 1) {
    write_valid(dir, 0);  // the input's file is the newest: a tail to recover
    first = first < 8 ? 8 : first;
  } else if ((mode & 3) == 2) {
    constexpr std::uint64_t kLater = 1ULL << 40;
    write_valid(dir, kLater);  // the input's file is an older one
    first = first >= kLater ? 0 : first;
  }
  write_file(dir / ar::segment_file_name(first), file, file_size);

  const std::uint64_t seek_seq = file_size >= 32 ? read_u64(file + file_size - 16) % 64 : 0;
  const std::uint64_t seek_ns = file_size >= 32 ? read_u64(file + file_size - 8) : 0;
  read_dir(dir, seek_seq, seek_ns);

  ar::WriterOptions o;
  o.segment_bytes = 4096;
  if (auto w = ar::SegmentWriter::open(dir.string(), o)) {
    const std::byte body[5] = {};
    ar::Record rec;
    rec.sequence = w->next_sequence();
    rec.payload = body;
    (void)w->append(std::span<const ar::Record>(&rec, 1));
    (void)w->close();
    read_dir(dir, seek_seq, seek_ns);
  }
  (void)ar::prune(dir.string(), 0, 1, 0);
  fs::remove_all(dir, ec);
  return 0;
}
