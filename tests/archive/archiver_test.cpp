// The archiver: every message archived once and in order (also across
// kill -9 of the archiver at random points while publishers in other
// processes keep publishing), gating (only the archiver holds block
// publishers), gaps under drop_oldest, a full disk, retention.
#include <shmbus/archive.hpp>
#include <shmbus/shmbus.h>
#include <shmbus/shmbus.hpp>

#include "api/detail.hpp"
#include "bus/archive/segment.hpp"
#include "bus/ring/layout.hpp"
#include "shm/clock.hpp"
#include "test_support.hpp"
#include "tiny_tmpfs.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

#ifndef SHMBUS_ARCHIVE_CRASH_TRIALS
#define SHMBUS_ARCHIVE_CRASH_TRIALS 30
#endif

namespace archive = shmbus::bus::archive;
namespace fs = std::filesystem;
using shmbus::Archiver;
using shmbus::ArchiverOptions;
using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::ErrorCode;
using shmbus::PollStatus;
using shmbus::PublishStatus;
using shmbus::SubscribeOptions;
using shmbus::test::Payload;

namespace {

class TempDir : public shmbus::test::TempDir {
 public:
  TempDir() : shmbus::test::TempDir("shmbus-archiver") {}
};

Archiver open_archiver(const Channel& ch, const ArchiverOptions& opts = {}) {
  auto a = Archiver::open(ch, opts);
  INFO((a.ok() ? std::string() : a.error().message()));
  REQUIRE(a.ok());
  return std::move(a).value();
}

/// Archives until poll_once finds nothing; returns how many.
std::uint64_t drain(Archiver& a) {
  std::uint64_t n = 0;
  for (;;) {
    auto r = a.poll_once();
    INFO((r.ok() ? std::string() : r.error().message()));
    REQUIRE(r.ok());
    if (*r == 0) return n;
    n += *r;
  }
}

/// Every record of the archive in `dir`, in reading order: (sequence, payload).
struct Archived {
  std::uint64_t sequence;
  std::uint64_t timestamp_ns;
  std::vector<std::byte> payload;
};
std::vector<Archived> read_archive(const std::string& dir) {
  auto rd = archive::SegmentReader::open(dir);
  INFO((rd.ok() ? std::string() : rd.error().message()));
  REQUIRE(rd.ok());
  std::vector<Archived> out;
  for (;;) {
    auto r = rd->next();
    INFO((r.ok() ? std::string() : r.error().message()));
    REQUIRE(r.ok());
    if (!r->has_value()) return out;
    out.push_back({(*r)->sequence, (*r)->timestamp_ns, {(*r)->payload.begin(), (*r)->payload.end()}});
  }
}

std::vector<std::byte> numbered(std::uint64_t i, std::size_t size = 8) {
  std::vector<std::byte> p(std::max<std::size_t>(size, 8));
  for (std::size_t k = 0; k < p.size(); ++k) p[k] = static_cast<std::byte>((i * 31 + k) & 0xFF);
  std::memcpy(p.data(), &i, sizeof i);
  return p;
}

void publish_numbered(Channel& ch, std::uint64_t from, std::uint64_t count, std::size_t size = 8) {
  auto pub = ch.publisher();
  REQUIRE(pub.ok());
  for (std::uint64_t i = from; i < from + count; ++i) {
    REQUIRE(pub->publish(numbered(i, size), {}, 5'000'000'000ULL) == PublishStatus::ok);
  }
}

/// Checks that the archive holds exactly the numbered messages [from, to)
/// at their sequences, in order (publish_numbered published i as sequence i).
void check_numbered(const std::string& dir, std::uint64_t from, std::uint64_t to, std::size_t size = 8) {
  const auto recs = read_archive(dir);
  REQUIRE(recs.size() == to - from);
  for (std::uint64_t i = from; i < to; ++i) {
    const Archived& r = recs[i - from];
    REQUIRE(r.sequence == i);
    REQUIRE(r.payload == numbered(i, size));
  }
}

ChannelOptions archive_channel(const TempDir& dir, std::uint32_t capacity = 64,
                               shmbus::Policy policy = shmbus::Policy::block) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = 256;
  o.policy = policy;
  o.archive_dir = dir.sub("arc");
  return o;
}

std::uint64_t archive_bytes(const std::string& dir) {
  std::uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".seg") total += fs::file_size(e.path());
  }
  return total;
}

}  // namespace

TEST_CASE("archiver archives every message once and in order and continues where the archive ends",
          "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  Channel ch = shmbus::test::make_channel(name, archive_channel(dir));
  publish_numbered(ch, 0, 50);
  {
    Archiver a = open_archiver(ch);
    CHECK(a.directory() == dir.sub("arc"));
    CHECK(drain(a) == 50);
    CHECK(a.counters().archived == 50);
    CHECK(a.counters().next_sequence == 50);
    CHECK(a.counters().lost == 0);
    // Its entry is durable, named, and marked as the channel's archiver.
    const auto& st = shmbus::detail::state_of(ch);
    bool found = false;
    for (std::uint32_t i = 0; i < st->geo.max_subscribers; ++i) {
      const auto& e = st->subscribers[i];
      if ((e.flags.load() & shmbus::bus::kSubArchiver) == 0) continue;
      found = true;
      CHECK((e.flags.load() & shmbus::bus::kSubDurable) != 0);
      CHECK(e.cursor.load() == 50);
    }
    CHECK(found);
    SECTION("a second archiver of the same channel is refused") {
      auto b = Archiver::open(ch);
      REQUIRE_FALSE(b.ok());
      CHECK(b.error().code() == ErrorCode::busy);
    }
  }
  publish_numbered(ch, 50, 30);
  Archiver a = open_archiver(ch);
  CHECK(drain(a) == 30);
  REQUIRE(a.sync().ok());
  CHECK(a.counters().last_fsync_realtime_ns > 0);
  check_numbered(dir.sub("arc"), 0, 80);
}

TEST_CASE("archiver needs an archive directory and refuses an archive that ends past the channel's head",
          "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  ChannelOptions o;
  o.capacity = 16;
  Channel ch = shmbus::test::make_channel(name, o);
  auto none = Archiver::open(ch);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code() == ErrorCode::invalid_argument);
  CHECK_THAT(none.error().message(), Catch::Contains("archive_dir"));
  // An explicit directory serves a channel created without one.
  {
    ArchiverOptions opts;
    opts.dir = dir.sub("other");
    publish_numbered(ch, 0, 10);
    Archiver a = open_archiver(ch, opts);
    CHECK(drain(a) == 10);
  }
  // The channel re-created: its head is back at 0, the archive ends at 10.
  REQUIRE(Channel::remove(name.str(), shmbus::test::kTestBus).ok());
  Channel again = shmbus::test::make_channel(name, o);
  ArchiverOptions opts;
  opts.dir = dir.sub("other");
  auto a = Archiver::open(again, opts);
  REQUIRE_FALSE(a.ok());
  CHECK(a.error().code() == ErrorCode::invalid_argument);
  CHECK_THAT(a.error().message(), Catch::Contains("re-created"));
}

TEST_CASE("subscriber name of the archiver is reserved for it", "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  Channel ch = shmbus::test::make_channel(name, archive_channel(dir, 16));
  SubscribeOptions so;
  so.name = std::string(shmbus::kArchiverName);
  auto s = ch.subscribe(so);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code() == ErrorCode::invalid_argument);
  CHECK_THAT(s.error().message(), Catch::Contains("reserved for the channel's archiver"));
  // The archiver itself still takes it, and other names stay free.
  Archiver a = open_archiver(ch, {});
  so.name = "shmbus-archiver-2";
  CHECK(ch.subscribe(so).ok());
}

TEST_CASE("archiver stops by itself when its channel is removed, and the channel can then continue its archive",
          "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  const ChannelOptions o = archive_channel(dir, 16);
  Channel ch = shmbus::test::make_channel(name, o);
  publish_numbered(ch, 0, 10);
  std::optional<Archiver> a(open_archiver(ch, {}));
  std::atomic<bool> stop{false};
  std::atomic<bool> ended{false};
  shmbus::Result<void> result;
  std::thread runner([&] {
    result = a->run(stop);
    ended = true;
  });
  // The archive holds the 10 first (a visible event), then the channel goes.
  const std::uint64_t deadline = shmbus::shm::monotonic_ns() + 30'000'000'000ULL;
  while (a->counters().next_sequence < 10 && shmbus::shm::monotonic_ns() < deadline) std::this_thread::yield();
  REQUIRE(a->counters().next_sequence == 10);
  REQUIRE(Channel::remove(name.str(), shmbus::test::kTestBus).ok());
  while (!ended && shmbus::shm::monotonic_ns() < deadline) std::this_thread::yield();
  const bool by_itself = ended.load();
  stop = true;  // only if it did not end: the test then fails, but does not hang
  runner.join();
  CHECK(by_itself);
  REQUIRE_FALSE(result.ok());
  CHECK_THAT(result.error().message(), Catch::Contains("can no longer be read"));
  // Its directory lock lasts as long as the handle: a create waits for it.
  CHECK(Channel::create(name.str(), o, shmbus::test::kTestBus).error().code() == ErrorCode::busy);
  a.reset();
  auto again = Channel::create(name.str(), o, shmbus::test::kTestBus);
  REQUIRE(again.ok());
  CHECK(again->head() == 10);
}

TEST_CASE("with an archiver attached only the archiver holds block publishers, not a subscriber that stops reading",
          "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  constexpr std::uint32_t kCap = 16;
  Channel ch = shmbus::test::make_channel(name, archive_channel(dir, kCap));
  auto stuck = ch.subscribe();  // attaches, then never reads
  REQUIRE(stuck.ok());
  auto pub = ch.publisher();
  REQUIRE(pub.ok());

  SECTION("without an archiver the stuck subscriber holds publishers (the old rule)") {
    PublishStatus last = PublishStatus::ok;
    for (std::uint32_t i = 0; i <= kCap && last == PublishStatus::ok; ++i) {
      last = pub->publish(numbered(i), {}, 20'000'000);
    }
    CHECK(last == PublishStatus::timeout);
  }
  SECTION("a running archiver lets publishers pass the stuck subscriber; a stopped one holds them") {
    Archiver a = open_archiver(ch);
    REQUIRE(a.start().ok());
    for (std::uint64_t i = 0; i < 10 * kCap; ++i) {
      INFO("message " << i);
      REQUIRE(pub->publish(numbered(i), {}, 10'000'000'000ULL) == PublishStatus::ok);
    }
    REQUIRE(a.stop().ok());
    // The ring overwrote what the stuck subscriber had not read: it reads
    // it from the archive, from its first message on, and loses nothing.
    shmbus::Message m;
    std::array<std::byte, 256> buf{};
    REQUIRE(stuck->poll(m, buf) == PollStatus::ok);
    CHECK(m.sequence == 0);
    CHECK(m.payload.size() == numbered(0).size());
    CHECK(std::equal(m.payload.begin(), m.payload.end(), numbered(0).begin()));
    CHECK(stuck->counters().lost == 0);
    // The archiver, stopped (still attached), holds publishers at what it archived.
    const std::uint64_t archived = a.counters().next_sequence;
    PublishStatus last = PublishStatus::ok;
    std::uint64_t published = 10 * kCap;
    while (last == PublishStatus::ok && published <= archived + kCap) {
      last = pub->publish(numbered(published), {}, 20'000'000);
      if (last == PublishStatus::ok) ++published;
    }
    CHECK(last == PublishStatus::timeout);
    CHECK(published == archived + kCap);
    // Archiving again frees the publishers.
    CHECK(drain(a) == published - archived);
    CHECK(pub->publish(numbered(published), {}, 1'000'000'000) == PublishStatus::ok);
    CHECK(drain(a) == 1);
    check_numbered(dir.sub("arc"), 0, published + 1);
  }
}

TEST_CASE("archiver on drop_oldest counts what the ring lost before it read it as a gap", "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  constexpr std::uint32_t kCap = 16;
  Channel ch = shmbus::test::make_channel(name, archive_channel(dir, kCap, shmbus::Policy::drop_oldest));
  Archiver a = open_archiver(ch);
  publish_numbered(ch, 0, 10);
  CHECK(drain(a) == 10);
  publish_numbered(ch, 10, 100);  // the ring keeps the newest 16: 94..109
  CHECK(drain(a) == kCap);
  const auto c = a.counters();
  CHECK(c.gaps == 1);
  CHECK(c.lost == 84);
  CHECK(c.gap_from == 10);
  CHECK(c.gap_to == 94);
  const auto recs = read_archive(dir.sub("arc"));
  REQUIRE(recs.size() == 10 + kCap);
  for (std::uint64_t i = 0; i < recs.size(); ++i) {
    const std::uint64_t want = i < 10 ? i : 94 + (i - 10);
    REQUIRE(recs[i].sequence == want);
    REQUIRE(recs[i].payload == numbered(want));
  }
  // A reader asked for a sequence in the gap lands after it.
  auto rd = archive::SegmentReader::open(dir.sub("arc"));
  REQUIRE(rd.ok());
  REQUIRE(rd->seek(50).ok());
  CHECK(rd->next().value()->sequence == 94);
}

TEST_CASE("archiver retention removes only the oldest files over the size or age limit", "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  Channel ch = shmbus::test::make_channel(name, archive_channel(dir, 256));
  ArchiverOptions opts;
  opts.segment_bytes = 8 << 10;
  opts.retention_check_ns = UINT64_MAX;  // at each new file only
  const std::string arc = dir.sub("arc");

  SECTION("by size: the archive stays within max_bytes plus the file being written") {
    opts.max_bytes = 32 << 10;
    Archiver a = open_archiver(ch, opts);
    for (std::uint64_t i = 0; i < 2000; i += 100) {
      publish_numbered(ch, i, 100, 200);
      drain(a);
    }
    CHECK(a.counters().pruned_files > 0);
    CHECK(archive_bytes(arc) <= opts.max_bytes + opts.segment_bytes);
    auto rd = archive::SegmentReader::open(arc);
    REQUIRE(rd.ok());
    const std::uint64_t first = rd->first_sequence().value();
    CHECK(first > 0);
    check_numbered(arc, first, 2000, 200);  // what is kept has no hole
  }
  SECTION("by age: files whose every record is older go, the rest stay") {
    const std::uint64_t now =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    auto pub = ch.publisher();
    REQUIRE(pub.ok());
    Archiver a = open_archiver(ch, opts);
    for (std::uint64_t i = 0; i < 1000; ++i) {
      shmbus::MessageMeta m;
      m.timestamp_ns = i < 500 ? now - 7'200'000'000'000ULL : now;  // two hours old, then now
      REQUIRE(pub->publish(numbered(i, 200), m, 5'000'000'000ULL) == PublishStatus::ok);
      if (i % 100 == 99) drain(a);
    }
    // A limit nothing is older than removes nothing.
    {
      Archiver b = std::move(a);
      ArchiverOptions keep = opts;
      keep.max_age_ns = 24 * 3'600'000'000'000ULL;
      b = Archiver();
      Archiver c = open_archiver(ch, keep);
      REQUIRE(c.prune().ok());
      CHECK(c.counters().pruned_files == 0);
      CHECK(archive::SegmentReader::open(arc)->first_sequence().value() == 0);
    }
    ArchiverOptions hour = opts;
    hour.max_age_ns = 3'600'000'000'000ULL;
    Archiver d = open_archiver(ch, hour);
    REQUIRE(d.prune().ok());
    CHECK(d.counters().pruned_files > 0);
    const std::uint64_t first = archive::SegmentReader::open(arc)->first_sequence().value();
    // Every file before the one holding sequence 500 went; that one stayed.
    const std::uint64_t per_file = ((8 << 10) - 64) / (56 + 200);
    CHECK(first <= 500);
    CHECK(first + per_file >= 500);
    check_numbered(arc, first, 1000, 200);
  }
}

namespace {

// The child's side of the full-disk test: 0, the number of the failed
// check, or 77 where no tmpfs could be mounted.
int archive_onto_a_full_disk(const std::string& dir, const std::string& channel) {
  if (!shmbus::test::mount_tiny_tmpfs(dir, 384 << 10)) return 77;
  const std::string filler = dir + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    const std::vector<char> block(128 << 10, 'x');
    f.write(block.data(), static_cast<std::streamsize>(block.size()));
    if (!f.good()) return 1;
  }
  ChannelOptions o;
  o.capacity = 64;
  o.slot_size = 1024;
  o.archive_dir = dir + "/arc";
  (void)Channel::remove(channel, shmbus::test::kTestBus);
  auto ch = Channel::create(channel, o, shmbus::test::kTestBus);
  if (!ch.ok()) return 2;
  ArchiverOptions opts;
  opts.segment_bytes = 32 << 10;
  opts.fsync = shmbus::ArchiveFsync::batch;
  opts.batch = 8;
  auto a = Archiver::open(*ch, opts);
  if (!a.ok()) return 3;
  auto pub = ch->publisher();
  if (!pub.ok()) return 4;
  const std::size_t size = 900;
  std::uint64_t published = 0;
  std::optional<shmbus::Error> err;
  while (!err && published < 100'000) {
    if (pub->publish(numbered(published, size), {}, 0) == PublishStatus::ok) {
      ++published;
      continue;
    }
    auto r = a->poll_once();  // the ring is full: archive
    if (!r.ok()) err = r.error();
  }
  if (!err) return 5;
  if (err->code() != ErrorCode::no_space || err->message().find(dir + "/arc/") == std::string::npos) return 6;
  if (a->counters().no_space_errors == 0 || a->last_error().empty()) return 7;
  // The archiver's cursor stays where the archive ends; publishers then wait
  // (here: time out), as for a slow subscriber.
  const std::uint64_t end = a->counters().next_sequence;
  if (end >= published) return 8;
  while (pub->publish(numbered(published, size), {}, 10'000'000) == PublishStatus::ok) ++published;
  if (published != end + o.capacity) return 9;
  if (a->poll_once().ok()) return 10;  // still full
  if (a->counters().next_sequence != end) return 11;
  fs::remove(filler);  // space returns
  for (int i = 0; i < 1000 && a->counters().next_sequence < published; ++i) {
    if (!a->poll_once().ok()) return 12;
  }
  if (a->counters().next_sequence != published) return 13;
  // Nothing twice, nothing out of order, nothing missing.
  auto rd = archive::SegmentReader::open(dir + "/arc");
  if (!rd.ok()) return 14;
  for (std::uint64_t seq = 0;; ++seq) {
    auto r = rd->next();
    if (!r.ok()) return 15;
    if (!r->has_value()) return seq == published ? 0 : 16;
    const std::vector<std::byte> got((*r)->payload.begin(), (*r)->payload.end());
    if ((*r)->sequence != seq || got != numbered(seq, size)) return 17;
  }
}

}  // namespace

TEST_CASE("archiver on a full disk stops its cursor with a clear error and resumes exactly once after space returns",
          "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  shmbus::test::Child child([&] { return archive_onto_a_full_disk(dir.str(), name.str()); });
  const int rc = child.wait(std::chrono::milliseconds(60'000));
  if (rc == 77) {
    WARN("no unprivileged user namespace with tmpfs here: the full-disk path was not exercised");
    return;
  }
  INFO("the child's failed check number (0 = all passed)");
  CHECK(rc == 0);
}

namespace {

constexpr std::uint32_t kCrashProducers = 2;

// What the crash test's processes share: the stop request, and how many
// messages each publisher has committed (its ledger).
struct CrashShared {
  std::atomic<std::uint32_t> stop{0};
  std::atomic<std::uint64_t> committed[kCrashProducers]{};
};

// A publisher process: Payloads in order until asked to stop, each one
// counted once its publish returned ok.
int crash_publisher(const std::string& channel, std::uint32_t producer, CrashShared& shared) {
  auto ch = Channel::open(channel, shmbus::test::kTestBus);
  if (!ch.ok()) return 1;
  auto pub = ch->publisher();
  if (!pub.ok()) return 2;
  for (std::uint64_t i = 0; shared.stop.load() == 0; ++i) {
    const Payload p{producer, 0, i, shmbus::test::check_of(producer, i)};
    // Blocked while the archiver is dead: long enough for the next one.
    if (pub->publish(shmbus::test::bytes_of(p), {}, 60'000'000'000ULL) != PublishStatus::ok) return 3;
    shared.committed[producer].store(i + 1);
  }
  return 0;
}

// An archiver process: archives until killed.
int crash_archiver(const std::string& channel, std::uint32_t trial) {
  auto ch = Channel::open(channel, shmbus::test::kTestBus);
  if (!ch.ok()) return 1;
  ArchiverOptions opts;
  opts.segment_bytes = 16 << 10;  // many files: kills land in rolls too
  opts.fsync = static_cast<shmbus::ArchiveFsync>(trial % 3);
  opts.fsync_interval_ns = 1'000'000;
  opts.batch = 1 + trial % 64;
  opts.wait = shmbus::WaitStrategy::backoff;
  auto a = Archiver::open(*ch, opts);
  if (!a.ok()) return 2;
  std::atomic<bool> stop{false};
  return a->run(stop).ok() ? 0 : 3;
}

// The archiver's durable cursor (0 before it first attached), read from
// its entry, which the test never writes.
std::uint64_t archiver_cursor(const Channel& ch) {
  const auto& st = shmbus::detail::state_of(ch);
  for (std::uint32_t i = 0; i < st->geo.max_subscribers; ++i) {
    const auto& e = st->subscribers[i];
    if (shmbus::bus::control_state(e.control.load()) == shmbus::bus::kEntryFree) continue;
    if ((e.flags.load() & shmbus::bus::kSubArchiver) != 0) return e.cursor.load();
  }
  return 0;
}

}  // namespace

TEST_CASE("archiver killed at random points archives every committed message exactly once and in order",
          "[archive][archiver][crash]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  ChannelOptions o = archive_channel(dir, 64);
  Channel ch = shmbus::test::make_channel(name, o);
  const std::uint32_t trials = SHMBUS_ARCHIVE_CRASH_TRIALS;
  const std::uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  shmbus::test::SharedMap<CrashShared> shared;

  // The archiver's entry exists before anything is published (a durable
  // cursor, detached: it gates), so the archive misses nothing.
  { Archiver first = open_archiver(ch); }
  std::vector<std::unique_ptr<shmbus::test::Child>> pubs;
  for (std::uint32_t p = 0; p < kCrashProducers; ++p) {
    pubs.push_back(std::make_unique<shmbus::test::Child>([&, p] { return crash_publisher(name.str(), p, *shared); }));
  }
  std::uint32_t kills = 0;
  for (std::uint32_t t = 0; t < trials; ++t) {
    const std::uint64_t before = archiver_cursor(ch);
    shmbus::test::Child arc([&, t] { return crash_archiver(name.str(), t); });
    // Event: the archiver has made progress; then a random point to kill it at.
    const auto bound = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (archiver_cursor(ch) == before && std::chrono::steady_clock::now() < bound && !arc.try_wait()) {
      std::this_thread::yield();
    }
    REQUIRE_FALSE(arc.reaped());  // it runs until killed
    REQUIRE(archiver_cursor(ch) != before);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    CHECK(arc.kill_and_wait() == 128 + SIGKILL);
    ++kills;
  }
  // Publishers stop; a last archiver takes the rest.
  shared->stop.store(1);
  shmbus::test::Child last([&] { return crash_archiver(name.str(), 0); });
  for (auto& p : pubs) REQUIRE(p->wait(std::chrono::milliseconds(120'000)) == 0);
  std::uint64_t total = 0;
  for (std::uint32_t p = 0; p < kCrashProducers; ++p) total += shared->committed[p].load();
  const auto bound = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (archiver_cursor(ch) < total && std::chrono::steady_clock::now() < bound) std::this_thread::yield();
  REQUIRE(archiver_cursor(ch) == total);
  last.kill_and_wait();

  // The ledger: every committed message once, each producer's in order, and
  // the archive's sequences 0..total-1 without a gap.
  const auto recs = read_archive(o.archive_dir);
  REQUIRE(recs.size() == total);
  std::vector<std::uint64_t> next(kCrashProducers, 0);
  for (std::uint64_t i = 0; i < recs.size(); ++i) {
    REQUIRE(recs[i].sequence == i);
    REQUIRE(recs[i].payload.size() == sizeof(Payload));
    Payload p;
    std::memcpy(&p, recs[i].payload.data(), sizeof p);
    REQUIRE(p.producer < kCrashProducers);
    REQUIRE(p.check == shmbus::test::check_of(p.producer, p.index));
    REQUIRE(p.index == next[p.producer]);
    ++next[p.producer];
  }
  for (std::uint32_t p = 0; p < kCrashProducers; ++p) CHECK(next[p] == shared->committed[p].load());
  CHECK(kills == trials);
}

TEST_CASE("archiver through the C API archives, reports its counters and refuses bad options", "[archive][archiver]") {
  TempDir dir;
  shmbus::test::ScopedChannelName name("arc");
  Channel made = shmbus::test::make_channel(name, archive_channel(dir));
  publish_numbered(made, 0, 20);
  shmbus_channel* ch = nullptr;
  REQUIRE(shmbus_channel_open(shmbus::test::kTestBus, name.str().c_str(), 0, &ch) == SHMBUS_OK);
  shmbus_archiver_options opts;
  REQUIRE(shmbus_archiver_options_init(&opts, sizeof opts) == SHMBUS_OK);
  CHECK(opts.fsync == SHMBUS_ARCHIVE_FSYNC_INTERVAL);
  CHECK(opts.batch == 1024);
  shmbus_archiver* a = nullptr;
  opts.fsync = 7;
  CHECK(shmbus_archiver_open(ch, &opts, &a) == SHMBUS_INVALID_ARGUMENT);
  CHECK(a == nullptr);
  opts.fsync = SHMBUS_ARCHIVE_FSYNC_BATCH;
  REQUIRE(shmbus_archiver_open(ch, &opts, &a) == SHMBUS_OK);
  std::uint64_t n = 0;
  REQUIRE(shmbus_archiver_poll_once(a, &n) == SHMBUS_OK);
  CHECK(n == 20);
  REQUIRE(shmbus_archiver_start(a) == SHMBUS_OK);
  publish_numbered(made, 20, 10);
  shmbus_archiver_counters c{};
  for (int i = 0; i < 10'000 && c.next_sequence < 30; ++i) {
    REQUIRE(shmbus_archiver_get_counters(a, &c, sizeof c) == SHMBUS_OK);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE(shmbus_archiver_stop(a) == SHMBUS_OK);
  REQUIRE(shmbus_archiver_get_counters(a, &c, sizeof c) == SHMBUS_OK);
  CHECK(c.archived == 30);
  CHECK(c.next_sequence == 30);
  CHECK(c.last_fsync_realtime_ns > 0);
  CHECK(shmbus_archiver_sync(a) == SHMBUS_OK);
  shmbus_archiver_close(a);
  shmbus_channel_close(ch);
  check_numbered(dir.sub("arc"), 0, 30);
}
