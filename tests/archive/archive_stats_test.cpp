// What Channel::stats shows of a channel's disk archive: its files, its
// range and the archiver entry's lag and last sync; nothing for a channel
// without an archive directory.
#include <catch2/catch.hpp>

#include <shmbus/archive.hpp>
#include <shmbus/shmbus.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "api/detail.hpp"
#include "bus/archive/archive_stats.hpp"
#include "bus/archive/segment.hpp"
#include "bus/ring/subscriber_core.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;
namespace ar = shmbus::bus::archive;

namespace {

// Appends records [from, to) to the archive in `dir`.
void archive_range(const std::string& dir, std::uint64_t from, std::uint64_t to, std::uint64_t segment_bytes) {
  ar::WriterOptions wo;
  wo.segment_bytes = segment_bytes;
  auto w = ar::SegmentWriter::open(dir, wo);
  REQUIRE(w);
  const std::byte payload[16] = {};
  std::vector<ar::Record> recs;
  for (std::uint64_t s = from; s < to; ++s) recs.push_back({s, 1000 + s, s, s, 0, 1, payload});
  REQUIRE(w->append(recs));
  REQUIRE(w->close());
}

}  // namespace

TEST_CASE("stats of a channel without an archive directory have no archive", "[archive][stats]") {
  ScopedChannelName name;
  Channel ch = make_channel(name, {});
  CHECK_FALSE(ch.stats().archive.has_value());
}

TEST_CASE("stats show the archive's files and range, and the archiver's lag and last sync", "[archive][stats]") {
  ScopedChannelName name;
  TempDir dir("shmbus-archive-stats");
  ChannelOptions o;
  o.capacity = 64;
  o.archive_dir = dir.sub("archive");
  Channel ch = make_channel(name, o);

  SECTION("nothing archived yet, no archiver") {
    const auto a = ch.stats().archive;
    REQUIRE(a);
    CHECK(a->dir == o.archive_dir);
    CHECK_FALSE(a->present);
    CHECK_FALSE(a->archiver);
    CHECK(a->error.empty());
  }

  SECTION("files and the range come from the directory; lag and sync from the archiver's entry") {
    auto pub = ch.publisher();
    REQUIRE(pub);
    for (int i = 0; i < 40; ++i) REQUIRE(pub->publish(std::string_view("m")) == PublishStatus::ok);
    // Records 0..29 in files of about 10 records each.
    archive_range(o.archive_dir, 0, 30, ar::kFileHeaderSize + 10 * 80);
    auto files = ar::list_segment_files(o.archive_dir);
    REQUIRE(files);
    REQUIRE(files->size() >= 3);

    // An archiver's entry: the durable subscriber of the reserved name, at
    // 30, flagged as the archiver does (without writing any file itself).
    // The name is reserved in Channel::subscribe: the entry is made as the
    // Archiver makes it.
    SubscribeOptions so;
    so.name = std::string(kArchiverName);
    so.start = StartAt::at_sequence(30);
    auto sub = bus::SubscriberCore::create(detail::state_of(ch), so);
    REQUIRE(sub.ok());
    auto& st = *detail::state_of(ch);
    std::uint32_t index = UINT32_MAX;
    for (std::uint32_t i = 0; i < st.geo.max_subscribers; ++i)
      if (bus::read_name(st.subscribers[i].name) == kArchiverName) index = i;
    REQUIRE(index != UINT32_MAX);
    st.subscribers[index].flags.fetch_or(bus::kSubArchiver);
    const std::uint64_t synced = shm::realtime_ns() - 2'000'000'000ULL;
    shm::store_relaxed(st.subscribers[index].archive_synced_ns, synced);

    const auto a = ch.stats().archive;
    REQUIRE(a);
    CHECK(a->error.empty());
    CHECK(a->present);
    CHECK(a->files == files->size());
    std::uint64_t bytes = 0;
    for (const auto& f : *files) bytes += f.bytes;
    CHECK(a->bytes == bytes);
    CHECK(a->first_sequence == 0);
    CHECK(a->end_sequence == 30);  // the live archiver's cursor
    CHECK(a->archiver);
    CHECK(a->archiver_alive);
    CHECK(a->archiver_cursor == 30);
    CHECK(a->lag == 10);
    CHECK(a->last_fsync_realtime_ns == synced);
    CHECK(a->fsync_age_ns >= 2'000'000'000ULL);

    // Without a live archiver the end is read from the newest file.
    sub->reset();  // the core detaches its entry
    const auto b = ch.stats().archive;
    REQUIRE(b);
    CHECK(b->archiver);  // durable: its entry stays, detached
    CHECK_FALSE(b->archiver_alive);
    CHECK(b->end_sequence == 30);
  }
}
