// Archive segment files: layout, round trips across rolled files, seeking by
// sequence and time, torn-tail recovery at every cut point, corruption
// reported with file and offset, sequence checks, oversized records and
// retention. Every test works in its own directory under /tmp, removed at
// the end.
#include "bus/archive/segment.hpp"

#include "bus/archive/crc32c.hpp"
#include "test_support.hpp"
#include "tiny_tmpfs.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

namespace archive = shmbus::bus::archive;
namespace fs = std::filesystem;
using shmbus::ErrorCode;

namespace {

constexpr std::uint64_t kBaseNs = 1'700'000'000'000'000'000ull;

/// A fresh directory for one test's archive.
class TempDir : public shmbus::test::TempDir {
 public:
  TempDir() : shmbus::test::TempDir("shmbus-archive") {}
};

std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// The payload of sequence `seq`: its size (below `max_size`) and bytes
/// follow from the sequence, so a reader can check a record without a copy.
std::vector<std::byte> payload_for(std::uint64_t seq, std::uint64_t max_size) {
  std::vector<std::byte> p(mix(seq) % (max_size + 1));
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::byte>((seq * 131 + i) & 0xFF);
  return p;
}

/// Appends sequences [from, from + count) in batches of 1..max_batch records.
void append_range(archive::SegmentWriter& w, std::uint64_t from, std::uint64_t count, std::uint64_t max_size,
                  std::size_t max_batch = 40) {
  std::uint64_t seq = from;
  while (seq < from + count) {
    const std::size_t n = std::min<std::uint64_t>(1 + mix(seq ^ 0x55) % max_batch, from + count - seq);
    std::vector<std::vector<std::byte>> payloads;
    std::vector<archive::Record> batch;
    for (std::size_t i = 0; i < n; ++i) payloads.push_back(payload_for(seq + i, max_size));
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t s = seq + i;
      batch.push_back({s, kBaseNs + s * 10, s * 3, s * 5, s * 7, static_cast<std::uint32_t>(s % 11), payloads[i]});
    }
    auto r = w.append(batch);
    INFO((r.ok() ? std::string() : r.error().message()));
    REQUIRE(r.ok());
    seq += n;
  }
  REQUIRE(w.next_sequence() == from + count);
}

/// Checks every field of `r` against what append_range wrote for its sequence.
void check_record(const archive::Record& r, std::uint64_t seq, std::uint64_t max_size) {
  REQUIRE(r.sequence == seq);
  REQUIRE(r.timestamp_ns == kBaseNs + seq * 10);
  REQUIRE(r.key == seq * 3);
  REQUIRE(r.id == seq * 5);
  REQUIRE(r.correlation_id == seq * 7);
  REQUIRE(r.type == seq % 11);
  const auto want = payload_for(seq, max_size);
  REQUIRE(r.payload.size() == want.size());
  REQUIRE(std::equal(r.payload.begin(), r.payload.end(), want.begin()));
}

/// Reads everything from the reader's position; requires sequences from
/// `from` in order, each once, and returns one past the last.
std::uint64_t read_all(archive::SegmentReader& rd, std::uint64_t from, std::uint64_t max_size) {
  std::uint64_t seq = from;
  for (;;) {
    auto r = rd.next();
    INFO((r.ok() ? std::string() : r.error().message()));
    REQUIRE(r.ok());
    if (!r->has_value()) return seq;
    check_record(**r, seq, max_size);
    ++seq;
  }
}

archive::SegmentWriter open_writer(const std::string& dir, const archive::WriterOptions& opts) {
  auto w = archive::SegmentWriter::open(dir, opts);
  INFO((w.ok() ? std::string() : w.error().message()));
  REQUIRE(w.ok());
  return std::move(w).value();
}

archive::SegmentReader open_reader(const std::string& dir) {
  auto r = archive::SegmentReader::open(dir);
  INFO((r.ok() ? std::string() : r.error().message()));
  REQUIRE(r.ok());
  return std::move(r).value();
}

std::vector<std::string> segment_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

template <class T>
T load(const std::vector<std::byte>& b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

/// Record offsets of a segment file, parsed independently of the library.
std::vector<std::uint64_t> record_offsets(const std::vector<std::byte>& file) {
  std::vector<std::uint64_t> out;
  std::uint64_t off = 64;
  while (off + 56 <= file.size()) {
    const auto len = load<std::uint32_t>(file, off);
    out.push_back(off);
    off += (len + 7u) & ~7u;
  }
  return out;
}

/// Writes records 0..count-1 (payloads of up to 300 bytes) with `opts`
/// into a directory "master" under `dir`, and returns its path.
std::string write_master(const TempDir& dir, const archive::WriterOptions& opts, std::uint64_t count) {
  const std::string master = dir.sub("master");
  auto w = open_writer(master, opts);
  append_range(w, 0, count, 300, 5);
  return master;
}

}  // namespace

TEST_CASE("archive segment files have the documented layout", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.channel_hash = 0xABCDEF0123456789ull;
  auto w = open_writer(dir.str(), opts);
  append_range(w, 42, 3, 20);
  REQUIRE(w.close().ok());
  const auto files = segment_files(dir.str());
  REQUIRE(files.size() == 1);
  CHECK(fs::path(files[0]).filename() == "00000000000000000042.seg");
  const auto b = read_file(files[0]);
  CHECK(std::memcmp(b.data(), "SHMBARC1", 8) == 0);
  CHECK(load<std::uint32_t>(b, 8) == 1);
  CHECK(load<std::uint32_t>(b, 12) == 64);
  CHECK(load<std::uint64_t>(b, 16) == 42);
  CHECK(load<std::uint64_t>(b, 24) > kBaseNs / 2);  // a realtime clock reading
  CHECK(load<std::uint64_t>(b, 32) == 0xABCDEF0123456789ull);
  CHECK(load<std::uint32_t>(b, 60) == archive::crc32c(std::span(b).first(60)));
  for (std::size_t i = 40; i < 60; ++i) CHECK(b[i] == std::byte{0});
  const auto offs = record_offsets(b);
  REQUIRE(offs.size() == 3);
  for (std::size_t i = 0; i < offs.size(); ++i) {
    const std::uint64_t o = offs[i];
    const std::uint64_t seq = 42 + i;
    const auto len = load<std::uint32_t>(b, o);
    CHECK(o % 8 == 0);
    CHECK(len == 56 + payload_for(seq, 20).size());
    CHECK(load<std::uint32_t>(b, o + 4) == archive::crc32c(std::span(b).subspan(o + 8, len - 8)));
    CHECK(load<std::uint64_t>(b, o + 8) == seq);
    CHECK(load<std::uint64_t>(b, o + 16) == kBaseNs + seq * 10);
    CHECK(load<std::uint64_t>(b, o + 24) == seq * 3);
    CHECK(load<std::uint64_t>(b, o + 32) == seq * 5);
    CHECK(load<std::uint64_t>(b, o + 40) == seq * 7);
    CHECK(load<std::uint32_t>(b, o + 48) == seq % 11);
    CHECK(load<std::uint32_t>(b, o + 52) == len - 56);
    for (std::uint64_t p = o + len; p < ((o + len + 7) & ~7ull); ++p) CHECK(b[p] == std::byte{0});
  }
  CHECK(b.size() == ((offs.back() + load<std::uint32_t>(b, offs.back()) + 7) & ~7ull));
}

TEST_CASE("archive records round-trip across rolled files and seek by sequence and time", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 256 << 10;
  {
    auto w = open_writer(dir.str(), opts);
    CHECK(w.next_sequence() == 0);
    CHECK(w.empty());
    append_range(w, 1000, 3000, 5000);
  }
  CHECK(segment_files(dir.str()).size() >= 10);
  for (const auto& f : segment_files(dir.str())) CHECK(fs::file_size(f) <= opts.segment_bytes);

  auto rd = open_reader(dir.str());
  CHECK(rd.first_sequence().value() == 1000);
  CHECK(rd.end_sequence().value() == 4000);
  CHECK(read_all(rd, 1000, 5000) == 4000);

  for (std::uint64_t seq : {1000ull, 2500ull, 3999ull}) {
    REQUIRE(rd.seek(seq).ok());
    CHECK(read_all(rd, seq, 5000) == 4000);
  }
  // The first sequence of the third file: a seek that lands on a boundary.
  const auto third = std::stoull(fs::path(segment_files(dir.str())[2]).filename().string().substr(0, 20));
  REQUIRE(rd.seek(third).ok());
  CHECK(read_all(rd, third, 5000) == 4000);

  REQUIRE(rd.seek(4000).ok());
  CHECK_FALSE(rd.next().value().has_value());
  CHECK(rd.seek(4001).error().code() == ErrorCode::invalid_argument);
  CHECK(rd.seek(999).error().code() == ErrorCode::not_found);

  REQUIRE(rd.seek_time(kBaseNs + 2500 * 10).ok());
  CHECK(rd.next().value()->sequence == 2500);
  REQUIRE(rd.seek_time(kBaseNs + 2500 * 10 - 5).ok());
  CHECK(rd.next().value()->sequence == 2500);
  REQUIRE(rd.seek_time(0).ok());
  CHECK(rd.next().value()->sequence == 1000);
  REQUIRE(rd.seek_time(kBaseNs + 4000 * 10).ok());
  CHECK_FALSE(rd.next().value().has_value());

  auto w = open_writer(dir.str(), opts);
  CHECK(w.next_sequence() == 4000);
  CHECK(w.recovered_bytes() == 0);
}

TEST_CASE("archive writer recovers a torn tail at every cut point and appending continues", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 8 << 10;
  const std::string master = write_master(dir, opts, 120);
  const auto files = segment_files(master);
  REQUIRE(files.size() >= 3);
  const std::string newest_name = fs::path(files.back()).filename().string();
  const std::uint64_t newest_first = std::stoull(newest_name.substr(0, 20));
  const auto bytes = read_file(files.back());
  const auto offs = record_offsets(bytes);
  REQUIRE(offs.size() >= 2);

  std::vector<std::uint64_t> cuts;
  for (std::uint64_t c = offs[offs.size() - 2]; c < bytes.size(); ++c) cuts.push_back(c);
  std::mt19937_64 rng(99);
  for (int i = 0; i < 60; ++i) cuts.push_back(rng() % bytes.size());

  for (const std::uint64_t cut : cuts) {
    INFO("cut at " << cut << " of " << bytes.size());
    const std::string work = dir.sub("cut");
    fs::remove_all(work);
    fs::copy(master, work);
    fs::resize_file(work + "/" + newest_name, cut);
    // Whole records before the cut, by the independent parse.
    std::uint64_t whole = 0;
    std::uint64_t whole_end = 64;
    for (const std::uint64_t o : offs) {
      const std::uint64_t end = o + ((load<std::uint32_t>(bytes, o) + 7u) & ~7u);
      if (end > cut) break;
      ++whole;
      whole_end = end;
    }
    {
      auto rd = open_reader(work);  // before recovery, the torn tail reads as the end
      CHECK(read_all(rd, 0, 300) == newest_first + whole);
    }
    auto w = open_writer(work, opts);
    CHECK(w.next_sequence() == newest_first + whole);
    CHECK(w.recovered_bytes() == (cut < 64 ? cut : cut - whole_end));
    append_range(w, newest_first + whole, 3, 300);
    auto rd = open_reader(work);
    CHECK(read_all(rd, 0, 300) == newest_first + whole + 3);
  }
}

TEST_CASE("archive corruption in the middle is an error naming the file and offset", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 8 << 10;
  {
    auto w = open_writer(dir.str(), opts);
    append_range(w, 0, 200, 300, 5);
  }
  const auto files = segment_files(dir.str());
  REQUIRE(files.size() >= 3);

  SECTION("in an older file; the writer's recovery leaves it alone") {
    auto b = read_file(files[1]);
    const auto offs = record_offsets(b);
    const std::uint64_t bad = offs[offs.size() / 2];
    b[bad + 60] ^= std::byte{0x01};  // a payload or header byte covered by the checksum
    write_file(files[1], b);
    auto rd = open_reader(dir.str());
    std::optional<shmbus::Error> err;
    for (int i = 0; i < 1000 && !err; ++i) {
      auto r = rd.next();
      if (!r.ok())
        err = r.error();
      else
        REQUIRE(r->has_value());
    }
    REQUIRE(err.has_value());
    CHECK(err->code() == ErrorCode::corrupted);
    CHECK_THAT(err->message(), Catch::Contains(files[1]) && Catch::Contains("offset " + std::to_string(bad)));

    auto w = open_writer(dir.str(), opts);
    CHECK(w.recovered_bytes() == 0);
    CHECK(w.next_sequence() == 200);
    CHECK(read_file(files[1]) == b);
  }
  SECTION("in the newest file with whole records after it") {
    auto b = read_file(files.back());
    const auto offs = record_offsets(b);
    REQUIRE(offs.size() >= 3);
    b[offs[0] + 20] ^= std::byte{0x80};
    write_file(files.back(), b);
    auto rd = open_reader(dir.str());
    REQUIRE(rd.seek(std::stoull(fs::path(files.back()).filename().string().substr(0, 20)) - 1).ok());
    REQUIRE(rd.next().ok());
    auto r = rd.next();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == ErrorCode::corrupted);
    CHECK_THAT(r.error().message(), Catch::Contains(files.back()) && Catch::Contains("offset 64"));
  }
}

TEST_CASE("archive append rejects sequence gaps and writes nothing of such a batch", "[archive]") {
  TempDir dir;
  auto w = open_writer(dir.str(), {});
  append_range(w, 500, 10, 50);  // an empty archive starts anywhere
  const std::vector<std::byte> p(8);
  const archive::Record gap{511, kBaseNs, 0, 0, 0, 0, p};
  CHECK(w.append(std::span(&gap, 1)).error().code() == ErrorCode::invalid_argument);
  const archive::Record inner[] = {{510, kBaseNs, 0, 0, 0, 0, p}, {512, kBaseNs, 0, 0, 0, 0, p}};
  CHECK(w.append(inner).error().code() == ErrorCode::invalid_argument);
  CHECK(w.next_sequence() == 510);
  auto rd = open_reader(dir.str());
  CHECK(rd.end_sequence().value() == 510);
  CHECK(read_all(rd, 500, 50) == 510);
}

TEST_CASE("archive reserve, seal and drop write exactly the sealed records across chunks and rolls", "[archive]") {
  TempDir dir;
  archive::WriterOptions o;
  o.segment_bytes = 96 << 10;  // several rolls inside one commit; records up to 3 KiB
  auto w = open_writer(dir.str(), o);
  std::uint64_t seq = 1000;
  std::uint64_t dropped = 0;
  for (int batch = 0; batch < 20; ++batch) {
    // ~600 records per commit: well past the writer's buffer, so reserve()
    // writes out what is sealed while the batch goes on.
    for (int i = 0; i < 600; ++i) {
      const auto p = payload_for(seq, 3000);
      // Every 7th reservation is dropped once (a failed seqlock check), then
      // reserved again with the same sequence and sealed.
      if ((seq + static_cast<std::uint64_t>(batch)) % 7 == 0) {
        auto junk = w.reserve(seq, p.size() + 5);
        REQUIRE(junk.ok());
        std::fill(junk->begin(), junk->end(), std::byte{0xEE});
        CHECK(w.reserve(seq, 1).error().code() == ErrorCode::invalid_argument);  // one at a time
        w.drop();
        ++dropped;
      }
      auto dst = w.reserve(seq, p.size());
      INFO((dst.ok() ? std::string() : dst.error().message()));
      REQUIRE(dst.ok());
      REQUIRE(dst->size() == p.size());
      std::copy(p.begin(), p.end(), dst->begin());
      w.seal({seq, kBaseNs + seq * 10, seq * 3, seq * 5, seq * 7, static_cast<std::uint32_t>(seq % 11), {}});
      ++seq;
    }
    CHECK(w.reserve(seq + 1, 8).error().code() == ErrorCode::invalid_argument);  // not the next sequence
    REQUIRE(w.commit().ok());
    CHECK(w.next_sequence() == seq);
  }
  CHECK(dropped > 1000);
  // A reservation left open at close is not written; what was sealed is.
  const auto p = payload_for(seq, 3000);
  auto dst = w.reserve(seq, p.size());
  REQUIRE(dst.ok());
  std::copy(p.begin(), p.end(), dst->begin());
  w.seal({seq, kBaseNs + seq * 10, seq * 3, seq * 5, seq * 7, static_cast<std::uint32_t>(seq % 11), {}});
  REQUIRE(w.reserve(seq + 1, 16).ok());
  REQUIRE(w.close().ok());
  CHECK(segment_files(dir.str()).size() > 10);
  auto rd = open_reader(dir.str());
  CHECK(rd.end_sequence().value() == seq + 1);
  CHECK(read_all(rd, 1000, 3000) == seq + 1);
}

TEST_CASE("archive writer continues after a gap and readers move over it", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 4 << 10;
  {
    auto w = open_writer(dir.str(), opts);
    append_range(w, 0, 100, 100);
    CHECK(w.skip_to(100).ok());  // no gap: nothing happens
    CHECK(w.skip_to(50).error().code() == ErrorCode::invalid_argument);
    REQUIRE(w.skip_to(150).ok());
    CHECK(w.next_sequence() == 150);
    // append stays strict: the gap is only ever made by skip_to
    const std::vector<std::byte> p(8);
    const archive::Record late{160, kBaseNs, 0, 0, 0, 0, p};
    CHECK(w.append(std::span(&late, 1)).error().code() == ErrorCode::invalid_argument);
    append_range(w, 150, 50, 100);
    REQUIRE(w.skip_to(300).ok());  // a gap that reaches the end: the new file holds only its header
  }
  {
    auto w = open_writer(dir.str(), opts);
    CHECK(w.next_sequence() == 300);  // the reopened writer continues after the gap
    CHECK(w.recovered_bytes() == 0);
    auto rd = open_reader(dir.str());
    CHECK(rd.end_sequence().value() == 300);
    REQUIRE(rd.seek(250).ok());
    CHECK_FALSE(rd.next().value().has_value());  // positioned at the end, past the gap
    append_range(w, 300, 10, 100);
  }
  auto rd = open_reader(dir.str());
  std::vector<std::uint64_t> seen;
  for (;;) {
    auto r = rd.next();
    INFO((r.ok() ? std::string() : r.error().message()));
    REQUIRE(r.ok());
    if (!r->has_value()) break;
    check_record(**r, (*r)->sequence, 100);
    seen.push_back((*r)->sequence);
  }
  std::vector<std::uint64_t> want;
  for (std::uint64_t s = 0; s < 100; ++s) want.push_back(s);
  for (std::uint64_t s = 150; s < 200; ++s) want.push_back(s);
  for (std::uint64_t s = 300; s < 310; ++s) want.push_back(s);
  CHECK(seen == want);

  const std::pair<std::uint64_t, std::uint64_t> seeks[] = {{99, 99},   {100, 150}, {120, 150}, {150, 150},
                                                           {199, 199}, {200, 300}, {299, 300}, {305, 305}};
  for (const auto& [target, first] : seeks) {
    INFO("seek to " << target);
    REQUIRE(rd.seek(target).ok());
    auto r = rd.next();
    REQUIRE(r.ok());
    REQUIRE(r->has_value());
    CHECK((*r)->sequence == first);
  }
  REQUIRE(rd.seek(310).ok());
  CHECK_FALSE(rd.next().value().has_value());
  CHECK(rd.seek(311).error().code() == ErrorCode::invalid_argument);
}

TEST_CASE("archive writer skip_to on an empty archive starts it there", "[archive]") {
  TempDir dir;
  {
    auto w = open_writer(dir.str(), {});
    REQUIRE(w.skip_to(42).ok());
    CHECK(w.next_sequence() == 42);
  }
  auto w = open_writer(dir.str(), {});
  CHECK(w.next_sequence() == 42);
  append_range(w, 42, 5, 20);
  auto rd = open_reader(dir.str());
  CHECK(rd.first_sequence().value() == 42);
  CHECK(read_all(rd, 42, 20) == 47);
}

TEST_CASE("archive writer reports its last fdatasync and syncs an idle interval writer when due", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  SECTION("never: no fdatasync until sync()") {
    auto w = open_writer(dir.str(), opts);
    append_range(w, 0, 10, 50);
    REQUIRE(w.sync_if_due().ok());
    CHECK(w.synced_realtime_ns() == 0);
    REQUIRE(w.sync().ok());
    CHECK(w.synced_realtime_ns() > 0);
  }
  SECTION("interval: an append past the interval syncs, and so does sync_if_due") {
    opts.fsync = archive::FsyncPolicy::interval;
    opts.fsync_interval_ns = 0;
    auto w = open_writer(dir.str(), opts);
    append_range(w, 0, 10, 50);
    const std::uint64_t first = w.synced_realtime_ns();
    CHECK(first > 0);
    REQUIRE(w.sync_if_due().ok());  // nothing written since: nothing to do
    CHECK(w.synced_realtime_ns() == first);
  }
}

TEST_CASE("archive files that overlap are reported as corrupted", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 2 << 10;
  {
    auto w = open_writer(dir.str(), opts);
    append_range(w, 0, 60, 100);
  }
  auto files = segment_files(dir.str());
  REQUIRE(files.size() >= 3);
  // The second file renamed (header fixed) to start one sequence early.
  auto b = read_file(files[1]);
  const std::uint64_t first = load<std::uint64_t>(b, 16);
  REQUIRE(first > 0);
  archive::FileHeader h;
  std::memcpy(&h, b.data(), sizeof h);
  h.first_sequence = first - 1;
  h.crc = archive::crc32c(std::as_bytes(std::span(&h, 1)).first(offsetof(archive::FileHeader, crc)));
  std::memcpy(b.data(), &h, sizeof h);
  const std::string moved = dir.str() + "/" + archive::segment_file_name(first - 1);
  write_file(moved, b);
  fs::remove(files[1]);
  auto rd = open_reader(dir.str());
  std::optional<shmbus::Error> err;
  for (int i = 0; i < 100 && !err; ++i) {
    auto r = rd.next();
    if (!r.ok()) err = r.error();
  }
  REQUIRE(err.has_value());
  CHECK(err->code() == ErrorCode::corrupted);
  CHECK_THAT(err->message(), Catch::Contains(moved));
}

TEST_CASE("archive record bigger than segment_bytes gets a file of its own", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 4096;
  auto w = open_writer(dir.str(), opts);
  std::vector<std::byte> small(100), big(10'000);
  const archive::Record recs[] = {
      {0, 1, 0, 0, 0, 0, small}, {1, 2, 0, 0, 0, 0, small}, {2, 3, 0, 0, 0, 0, big}, {3, 4, 0, 0, 0, 0, small}};
  REQUIRE(w.append(recs).ok());
  const auto files = segment_files(dir.str());
  REQUIRE(files.size() == 3);
  CHECK(fs::path(files[1]).filename() == "00000000000000000002.seg");
  CHECK(fs::file_size(files[1]) == 64 + 56 + 10'000);
  auto rd = open_reader(dir.str());
  for (std::uint64_t s = 0; s < 4; ++s) {
    auto r = rd.next();
    REQUIRE(r.ok());
    REQUIRE(r->has_value());
    CHECK((*r)->sequence == s);
    CHECK((*r)->payload.size() == (s == 2 ? big.size() : small.size()));
  }
}

TEST_CASE("archive prune removes the oldest files by size and by age and keeps the newest", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 8 << 10;
  {
    auto w = open_writer(dir.str(), opts);
    append_range(w, 0, 300, 300, 5);
  }
  auto files = segment_files(dir.str());
  REQUIRE(files.size() >= 6);
  auto first_of = [](const std::string& f) { return std::stoull(fs::path(f).filename().string().substr(0, 20)); };

  // By age: files whose last record is older than 10 * 100 ns before
  // `now`; the one holding sequence 150 is kept.
  const std::uint64_t now = kBaseNs + 150 * 10 + 1000;
  auto aged = archive::prune(dir.str(), 1000, 0, now);
  REQUIRE(aged.ok());
  CHECK(aged->files_removed > 0);
  CHECK(aged->first_sequence <= 150);
  auto rd = open_reader(dir.str());
  CHECK(rd.first_sequence().value() == aged->first_sequence);
  REQUIRE(rd.seek(aged->first_sequence).ok());
  CHECK(read_all(rd, aged->first_sequence, 300) == 300);
  // The file before the kept one ended before sequence 150.
  CHECK(aged->first_sequence > 0);

  // By size: down to half of what is left.
  files = segment_files(dir.str());
  std::uint64_t total = 0;
  for (const auto& f : files) total += fs::file_size(f);
  auto sized = archive::prune(dir.str(), 0, total / 2, now);
  REQUIRE(sized.ok());
  std::uint64_t left = 0;
  for (const auto& f : segment_files(dir.str())) left += fs::file_size(f);
  CHECK(left <= total / 2);
  CHECK(left + sized->bytes_removed == total);
  CHECK(sized->first_sequence == first_of(segment_files(dir.str()).front()));

  // Everything expired or over budget: the newest stays.
  auto all = archive::prune(dir.str(), 1, 1, kBaseNs * 2);
  REQUIRE(all.ok());
  REQUIRE(segment_files(dir.str()).size() == 1);
  CHECK(segment_files(dir.str()).front() == files.back());
  auto w = open_writer(dir.str(), opts);
  CHECK(w.next_sequence() == 300);
}

TEST_CASE("archive writer under each fsync policy keeps every record readable", "[archive]") {
  for (auto policy : {archive::FsyncPolicy::never, archive::FsyncPolicy::interval, archive::FsyncPolicy::every_batch}) {
    TempDir dir;
    archive::WriterOptions opts;
    opts.fsync = policy;
    opts.fsync_interval_ns = 0;
    opts.segment_bytes = 16 << 10;
    auto w = open_writer(dir.str(), opts);
    append_range(w, 7, 100, 400);
    REQUIRE(w.sync().ok());
    REQUIRE(w.close().ok());
    CHECK(w.append({}).error().code() == ErrorCode::invalid_argument);  // closed
    auto rd = open_reader(dir.str());
    CHECK(read_all(rd, 7, 400) == 107);
  }
}

namespace {

// The child's side of the full-disk test; returns 0 or the number of the
// check that failed (77: no tmpfs could be mounted).
int fill_a_tiny_disk(const std::string& dir) {
  if (!shmbus::test::mount_tiny_tmpfs(dir, 256 << 10)) return 77;
  const std::string filler = dir + "/filler";
  write_file(filler, std::vector<std::byte>(64 << 10, std::byte{1}));
  auto w = archive::SegmentWriter::open(dir + "/arc", {});
  if (!w.ok()) return 1;
  const std::vector<std::byte> payload(4000, std::byte{7});
  std::optional<shmbus::Error> err;
  for (std::uint64_t seq = 0; seq < 1000 && !err; seq += 3) {
    const archive::Record batch[] = {
        {seq, 1, 0, 0, 0, 0, payload}, {seq + 1, 1, 0, 0, 0, 0, payload}, {seq + 2, 1, 0, 0, 0, 0, payload}};
    if (auto r = w->append(batch); !r.ok()) err = r.error();
  }
  if (!err) return 2;
  if (err->code() != ErrorCode::no_space || err->message().find(w->current_path()) == std::string::npos) return 3;
  const std::uint64_t whole = w->next_sequence();
  if (whole == 0) return 4;
  // What is on disk is exactly the whole records counted: no half batch.
  if (fs::file_size(w->current_path()) != 64 + whole * (56 + 4000)) return 5;
  fs::remove(filler);  // space returns
  const archive::Record more[] = {{whole, 2, 0, 0, 0, 0, payload}, {whole + 1, 2, 0, 0, 0, 0, payload}};
  if (!w->append(more).ok()) return 6;
  auto rd = archive::SegmentReader::open(dir + "/arc");
  if (!rd.ok()) return 7;
  for (std::uint64_t seq = 0;; ++seq) {
    auto r = rd->next();
    if (!r.ok()) return 8;
    if (!r->has_value()) return seq == whole + 2 ? 0 : 9;
    if ((*r)->sequence != seq || (*r)->payload.size() != payload.size()) return 10;
  }
}

}  // namespace

TEST_CASE("archive writer on a full disk fails with no_space naming the file and resumes after space returns",
          "[archive]") {
  TempDir dir;
  const pid_t pid = shmbus::test::fork_child([&] { return fill_a_tiny_disk(dir.str()); });
  const int rc = shmbus::test::wait_child(pid);
  if (rc == 77) {
    WARN("no unprivileged user namespace with tmpfs here: the full-disk path was not exercised");
    return;
  }
  INFO("the child's failed check number (0 = all passed)");
  CHECK(rc == 0);
}

TEST_CASE("archive seek lands on the right record in a large file whichever way it moves", "[archive]") {
  TempDir dir;
  {
    auto w = open_writer(dir.str(), {});
    append_range(w, 0, 20'000, 16, 500);
  }
  REQUIRE(segment_files(dir.str()).size() == 1);
  auto rd = open_reader(dir.str());
  // The first pass reads the whole file (and learns its index); the seeks
  // after it start from indexed offsets, forwards and backwards.
  CHECK(read_all(rd, 0, 16) == 20'000);
  for (std::uint64_t seq : {19'999ull, 4096ull, 4095ull, 12'288ull, 0ull, 12'289ull, 8191ull, 20'000ull, 16'384ull}) {
    INFO("seek to " << seq);
    REQUIRE(rd.seek(seq).ok());
    auto r = rd.next();
    REQUIRE(r.ok());
    if (seq == 20'000) {
      CHECK_FALSE(r->has_value());
      continue;
    }
    REQUIRE(r->has_value());
    check_record(**r, seq, 16);
    if (seq + 1 < 20'000) check_record(*rd.next().value(), seq + 1, 16);
  }
  CHECK(rd.seek(20'001).error().code() == ErrorCode::invalid_argument);
}

TEST_CASE("archive directory takes one writer at a time", "[archive]") {
  TempDir dir;
  auto first = open_writer(dir.str(), {});
  append_range(first, 0, 5, 10);
  auto second = archive::SegmentWriter::open(dir.str(), {});
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code() == ErrorCode::busy);
  CHECK_THAT(second.error().message(), Catch::Contains(dir.str()));
  REQUIRE(first.close().ok());
  auto third = open_writer(dir.str(), {});
  CHECK(third.next_sequence() == 5);
}

TEST_CASE("archive reader tailing a writer sees each record once across rolls", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 4 << 10;
  auto w = open_writer(dir.str(), opts);
  append_range(w, 0, 10, 200, 3);
  auto rd = open_reader(dir.str());
  std::uint64_t seen = read_all(rd, 0, 200);
  CHECK(seen == 10);
  for (std::uint64_t round = 0; round < 50; ++round) {
    append_range(w, w.next_sequence(), 1 + round % 7, 200, 3);
    // A reader at the end keeps its place and continues when records come.
    seen = read_all(rd, seen, 200);
    REQUIRE(seen == w.next_sequence());
    REQUIRE(rd.end_sequence().value() == w.next_sequence());
  }
  CHECK(segment_files(dir.str()).size() > 5);
}

TEST_CASE("archive writer killed with SIGKILL mid-append loses no whole record and recovers", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 64 << 10;
  std::uint64_t recovered_total = 0;
  for (int trial = 0; trial < 20; ++trial) {
    INFO("trial " << trial);
    shmbus::test::Child child([&] {
      auto w = archive::SegmentWriter::open(dir.str(), opts);
      if (!w.ok()) return 1;
      for (;;) {
        const std::uint64_t from = w->next_sequence();
        std::vector<std::vector<std::byte>> payloads;
        std::vector<archive::Record> batch;
        for (std::uint64_t s = from; s < from + 1 + mix(from) % 20; ++s) payloads.push_back(payload_for(s, 3000));
        for (std::uint64_t i = 0; i < payloads.size(); ++i) {
          const std::uint64_t s = from + i;
          batch.push_back({s, kBaseNs + s * 10, s * 3, s * 5, s * 7, static_cast<std::uint32_t>(s % 11), payloads[i]});
        }
        if (!w->append(batch).ok()) return 2;
      }
    });
    // Let it write some records past what earlier trials left, then kill it.
    auto rd = open_reader(dir.str());
    const std::uint64_t target = rd.end_sequence().value() + 20 + mix(trial) % 200;
    for (int spin = 0; spin < 10'000'000 && rd.end_sequence().value() < target; ++spin) {
      REQUIRE_FALSE(child.try_wait());
    }
    CHECK(child.kill_and_wait() == 128 + SIGKILL);
    auto w = open_writer(dir.str(), opts);
    recovered_total += w.recovered_bytes();
    CHECK(w.next_sequence() >= target);
    auto all = open_reader(dir.str());
    REQUIRE(read_all(all, 0, 3000) == w.next_sequence());
  }
  // Not asserted: whether a kill ever landed inside a write is up to timing.
  INFO("bytes cut in all trials: " << recovered_total);
  SUCCEED();
}

TEST_CASE("archive damaged at random places yields a correct prefix then an error or the end", "[archive]") {
  TempDir dir;
  archive::WriterOptions opts;
  opts.segment_bytes = 8 << 10;
  const std::string master = write_master(dir, opts, 150);
  const auto names = segment_files(master);
  std::mt19937_64 rng(4242);
  int errors = 0;
  for (int trial = 0; trial < 200; ++trial) {
    INFO("trial " << trial);
    const std::string work = dir.sub("damaged");
    fs::remove_all(work);
    fs::copy(master, work);
    const std::string victim = work + "/" + fs::path(names[rng() % names.size()]).filename().string();
    auto b = read_file(victim);
    for (std::uint64_t flips = 1 + rng() % 4; flips > 0; --flips) b[rng() % b.size()] = static_cast<std::byte>(rng());
    if (rng() % 3 == 0) b.resize(rng() % b.size());
    write_file(victim, b);
    // Whatever the damage: every record handed out is intact and in order.
    auto rd = open_reader(work);
    for (std::uint64_t seq = 0;; ++seq) {
      auto r = rd.next();
      if (!r.ok()) {
        ++errors;
        CHECK(r.error().message().find(victim) != std::string::npos);
        break;
      }
      if (!r->has_value()) break;
      check_record(**r, seq, 300);
    }
    // Recovery either succeeds or reports the damaged header; it never crashes.
    auto w = archive::SegmentWriter::open(work, opts);
    if (w.ok()) CHECK(w->next_sequence() <= 150);
  }
  CHECK(errors > 0);
}
