// Replay and merge (docs/protocol.md, "Replay and merge"): subscribers,
// seek and peek reading what the ring no longer holds from the channel's
// archive, then the ring, with no gap and no duplicate while a forked
// publisher keeps publishing; positions older than the archive lapped with
// the exact loss; a corrupted archive record reported with its file.
//
// The archiver is not used here: archives are written by a small helper in
// the test (a subscriber + SegmentWriter on a thread that keeps up with a
// paced publisher), or by a SegmentWriter directly with the messages the ring
// got.
#include "bus/archive/archive_source.hpp"
#include "bus/archive/segment.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace archive = shmbus::bus::archive;
namespace fs = std::filesystem;
using namespace shmbus;
using shmbus::test::bytes_of;
using shmbus::test::value_of;

namespace {

constexpr std::uint64_t kT0 = 1'700'000'000'000'000'000ull;
constexpr std::uint64_t kStep = 1000;  // ns between the made-up timestamps of consecutive messages

ChannelOptions archive_options(const std::string& dir, std::uint32_t capacity) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = 128;
  o.policy = Policy::drop_oldest;
  o.archive_dir = dir;
  return o;
}

// Message i: its payload is i (8 bytes), its time kT0 + i * kStep, its key i * 3.
PublishStatus publish_nth(Publisher& pub, std::uint64_t i) {
  MessageMeta m;
  m.timestamp_ns = kT0 + i * kStep;
  m.key = i * 3;
  return pub.publish(bytes_of(i), m);
}

// Archives sequences [from, to) exactly as publish_nth published them.
void write_archive(const std::string& dir, std::uint64_t from, std::uint64_t to, std::uint64_t segment_bytes = 1024) {
  archive::WriterOptions wo;
  wo.segment_bytes = segment_bytes;
  auto w = archive::SegmentWriter::open(dir, wo);
  INFO((w.ok() ? std::string() : w.error().message()));
  REQUIRE(w.ok());
  std::vector<std::uint64_t> values;
  for (std::uint64_t i = from; i < to; ++i) values.push_back(i);
  std::vector<archive::Record> recs;
  for (std::uint64_t i = from; i < to; ++i) {
    recs.push_back({i, kT0 + i * kStep, i * 3, 0, 0, 0, bytes_of(values[i - from])});
  }
  auto a = w->append(recs);
  INFO((a.ok() ? std::string() : a.error().message()));
  REQUIRE(a.ok());
}

// A channel of capacity 64 that got messages 0..299 (the ring holds
// 236..299) and an archive holding 100..299 in files of 15 records.
struct OldChannel {
  test::TempDir dir{"shmbus-replay"};
  test::ScopedChannelName name{"replay"};
  Channel ch;
  OldChannel() {
    ch = test::make_channel(name, archive_options(dir.sub("archive"), 64));
    auto pub = ch.publisher();
    REQUIRE(pub);
    for (std::uint64_t i = 0; i < 300; ++i) REQUIRE(publish_nth(*pub, i) == PublishStatus::ok);
    write_archive(dir.sub("archive"), 100, 300);
    REQUIRE(ch.oldest() == 236);
  }
  [[nodiscard]] std::string archive_dir() const { return dir.sub("archive"); }
};

// Reads with poll until `count` messages were delivered; every result must
// be ok and every message the next sequence, payload and time matching.
void read_in_order(Subscriber& sub, std::uint64_t first, std::uint64_t count) {
  std::vector<std::byte> buf(256);
  for (std::uint64_t want = first; want < first + count; ++want) {
    Message m;
    const PollStatus st = sub.poll_wait(m, buf, 10'000'000'000ULL);
    INFO("sequence " << want << ": " << to_string(st) << " " << sub.last_error());
    REQUIRE(st == PollStatus::ok);
    REQUIRE(m.sequence == want);
    REQUIRE(value_of<std::uint64_t>(m.payload) == want);
    REQUIRE(m.timestamp_ns == kT0 + want * kStep);
    REQUIRE(m.key == want * 3);
  }
}

}  // namespace

TEST_CASE("a subscriber at a sequence older than the ring reads it from the archive, then the ring") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::at_sequence(120);
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  read_in_order(*sub, 120, 180);
  REQUIRE(sub->counters().lost == 0);
  REQUIRE(sub->counters().delivered == 180);
  Message m;
  std::vector<std::byte> buf(256);
  REQUIRE(sub->poll(m, buf) == PollStatus::empty);
  // The ring again: a new message is read from it (the archive lacks it).
  auto pub = c.ch.publisher();
  REQUIRE(pub);
  REQUIRE(publish_nth(*pub, 300) == PublishStatus::ok);
  read_in_order(*sub, 300, 1);
}

TEST_CASE("earliest on an archive channel starts at the archive's first record") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::earliest();
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  REQUIRE(sub->cursor() == 100);
  read_in_order(*sub, 100, 200);
  REQUIRE(sub->counters().lost == 0);
}

TEST_CASE("at_time older than the ring starts at the archive's first record at or after the time") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::at_time(kT0 + 150 * kStep - kStep / 2);
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  REQUIRE(sub->cursor() == 150);
  read_in_order(*sub, 150, 150);
  REQUIRE(sub->counters().lost == 0);
  REQUIRE(sub->counters().lapped_events == 0);
}

TEST_CASE("at_time older than the archive reports lapped with what the archive no longer holds") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::at_time(kT0 + 50 * kStep);
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  Message m;
  std::vector<std::byte> buf(256);
  // The archive's first record (#100) is already after the time: all 100
  // before it may be from then (their times are gone): an upper bound.
  REQUIRE(sub->poll(m, buf) == PollStatus::lapped);
  REQUIRE(sub->counters().lost == 100);
  read_in_order(*sub, 100, 200);
}

TEST_CASE("a sequence older than the archive's first record is lapped with the exact loss") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::at_sequence(40);
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  Message m;
  std::vector<std::byte> buf(256);
  REQUIRE(sub->poll(m, buf) == PollStatus::lapped);
  REQUIRE(sub->counters().lost == 60);
  REQUIRE(sub->counters().lapped_events == 1);
  read_in_order(*sub, 100, 200);
  REQUIRE(sub->counters().lost == 60);
}

TEST_CASE("seek to an old sequence reads the archive, and back to the ring") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::latest();
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  sub->seek(230);
  read_in_order(*sub, 230, 70);
  sub->seek(101);
  read_in_order(*sub, 101, 20);
  sub->seek(5);
  Message m;
  std::vector<std::byte> buf(256);
  REQUIRE(sub->poll(m, buf) == PollStatus::lapped);
  REQUIRE(sub->counters().lost == 95);
  read_in_order(*sub, 100, 200);
}

TEST_CASE("zero-copy reads and batches work from the archive") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::at_sequence(110);
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  std::uint64_t want = 110;
  bool in_order = true;
  const auto check = [&](const Message& m) {
    in_order = in_order && m.sequence == want && value_of<std::uint64_t>(m.payload) == want;
    ++want;
  };
  REQUIRE(sub->read(check) == PollStatus::ok);
  PollStatus last = PollStatus::ok;
  REQUIRE(sub->read_batch(check, 50, &last) == 50);
  REQUIRE(last == PollStatus::ok);
  REQUIRE(in_order);
  REQUIRE(want == 161);
  std::vector<Message> out(200);
  std::vector<std::byte> arena(200 * 8);
  const std::size_t n = sub->poll_batch(out, arena, &last);
  REQUIRE(n == 139);  // 161..299: from the archive, then the ring
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(out[i].sequence == 161 + i);
    REQUIRE(value_of<std::uint64_t>(out[i].payload) == 161 + i);
  }
  REQUIRE(last == PollStatus::empty);
  REQUIRE(sub->counters().lost == 0);
}

TEST_CASE("peek of a sequence older than the ring reads the archive") {
  OldChannel c;
  std::vector<std::byte> buf(256);
  for (std::uint64_t s = 100; s < 300; ++s) {
    Message m;
    REQUIRE(c.ch.peek(s, m, buf) == PollStatus::ok);
    REQUIRE(m.sequence == s);
    REQUIRE(value_of<std::uint64_t>(m.payload) == s);
    REQUIRE(m.timestamp_ns == kT0 + s * kStep);
  }
  Message m;
  REQUIRE(c.ch.peek(150, m, buf) == PollStatus::ok);  // a jump back
  REQUIRE(value_of<std::uint64_t>(m.payload) == 150);
  REQUIRE(c.ch.peek(99, m, buf) == PollStatus::lapped);  // older than the archive
  std::vector<std::byte> tiny(4);
  REQUIRE(c.ch.peek(120, m, tiny) == PollStatus::buffer_too_small);
  REQUIRE(m.payload.size() == 8);
}

TEST_CASE("without the archive's directory an old position is lapped with the ring's loss") {
  test::TempDir dir("shmbus-replay");
  test::ScopedChannelName name("replay");
  Channel ch = test::make_channel(name, archive_options(dir.sub("none"), 64));
  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t i = 0; i < 200; ++i) REQUIRE(publish_nth(*pub, i) == PublishStatus::ok);
  SubscribeOptions so;
  so.start = StartAt::earliest();
  auto sub = ch.subscribe(so);
  REQUIRE(sub);
  REQUIRE(sub->cursor() == 136);
  sub->seek(10);
  Message m;
  std::vector<std::byte> buf(256);
  REQUIRE(sub->poll(m, buf) == PollStatus::lapped);
  REQUIRE(sub->counters().lost == 126);
  read_in_order(*sub, 136, 64);
  REQUIRE(ch.peek(10, m, buf) == PollStatus::lapped);
}

TEST_CASE("a corrupted archive record is reported with its file, the loss to the next file counted") {
  OldChannel c;
  // Files of 15 records of 64 bytes after a 64-byte header: #150 is the
  // sixth record of the file that starts at #145; the next starts at #160.
  const std::string file = c.archive_dir() + "/" + archive::segment_file_name(145);
  REQUIRE(fs::exists(file));
  REQUIRE(fs::exists(c.archive_dir() + "/" + archive::segment_file_name(160)));
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekp(64 + 5 * 64 + 56);  // the first payload byte of #150
    const char bad = 0x5A;
    f.write(&bad, 1);
  }
  SubscribeOptions so;
  so.start = StartAt::at_sequence(140);
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  read_in_order(*sub, 140, 10);
  Message m;
  std::vector<std::byte> buf(256);
  REQUIRE(sub->poll(m, buf) == PollStatus::corrupted);
  INFO(sub->last_error());
  REQUIRE(sub->last_error().find(file) != std::string::npos);
  REQUIRE(sub->counters().lost == 10);
  read_in_order(*sub, 160, 140);
  REQUIRE(c.ch.peek(150, m, buf) == PollStatus::corrupted);
}

TEST_CASE("a subscriber replays from the archive and merges into the ring while a forked publisher publishes") {
  constexpr std::uint32_t kCapacity = 64;
  constexpr std::uint64_t kBatch = kCapacity / 2;
  constexpr std::uint64_t kBefore = 40 * kCapacity;  // published before the readers start: the ring wrapped 40 times
  constexpr std::uint64_t kAfter = 40 * kCapacity;   // published while they read
  test::TempDir dir("shmbus-replay");
  test::ScopedChannelName name("replay");
  const std::string adir = dir.sub("archive");
  Channel ch = test::make_channel(name, archive_options(adir, kCapacity));
  const auto start = GENERATE(as<int>{}, 0, 1, 2);  // earliest, a sequence, a time
  CAPTURE(start);

  test::Event archived;     // helper -> publisher: how many are archived
  test::Event before_done;  // publisher -> test: the first kBefore are published
  test::Event go;           // test -> publisher: publish the rest
  test::Child publisher([&] {
    auto c = Channel::open(name, test::kTestBus);
    if (!c) return 2;
    auto pub = c->publisher();
    if (!pub) return 3;
    std::uint64_t done = 0;
    for (std::uint64_t i = 0; i < kBefore + kAfter; ++i) {
      if (i == kBefore) {
        before_done.signal();
        if (!go.wait()) return 4;
      }
      if (publish_nth(*pub, i) != PublishStatus::ok) return 5;
      // Paced by the archive helper: never more than half a ring ahead of
      // it, so the ring never overwrites what it has not archived.
      if ((i + 1) % kBatch == 0) {
        while (done < i + 1) {
          if (!archived.wait(done)) return 6;
        }
      }
    }
    return 0;
  });

  // The archive helper: a subscriber from the start, appending what it reads.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> helper_error{0};
  std::thread helper([&] {
    SubscribeOptions so;
    so.start = StartAt::at_sequence(0);
    so.wait = WaitStrategy::backoff;
    auto sub = ch.subscribe(so);
    archive::WriterOptions wo;
    wo.segment_bytes = 4096;
    auto w = archive::SegmentWriter::open(adir, wo);
    if (!sub || !w) {
      helper_error = 1;
      return;
    }
    std::vector<Message> msgs(64);
    std::vector<std::byte> arena(64 * 8);
    std::vector<archive::Record> recs;
    while (!stop.load()) {
      PollStatus last = PollStatus::ok;
      const std::size_t n = sub->poll_batch(msgs, arena, &last);
      if (last == PollStatus::lapped || last == PollStatus::corrupted) helper_error = 2;
      if (n == 0) {
        (void)sub->wait(20'000'000);
        continue;
      }
      recs.clear();
      for (std::size_t i = 0; i < n; ++i) {
        const Message& m = msgs[i];
        recs.push_back({m.sequence, m.timestamp_ns, m.key, m.id, m.correlation_id, m.type, m.payload});
      }
      if (!w->append(recs).ok()) helper_error = 3;
      archived.signal(w->next_sequence());
    }
  });
  struct Join {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Join() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join{stop, helper};

  REQUIRE(before_done.wait());
  REQUIRE(ch.oldest() > 10 * kCapacity);
  SubscribeOptions so;
  std::uint64_t first = 0;
  if (start == 0) so.start = StartAt::earliest();
  if (start == 1) so.start = StartAt::at_sequence(first = 7);
  if (start == 2) so.start = StartAt::at_time(kT0 + (first = 333) * kStep);
  auto sub = ch.subscribe(so);
  REQUIRE(sub);
  REQUIRE(sub->cursor() == first);
  go.signal();
  read_in_order(*sub, first, kBefore + kAfter - first);
  REQUIRE(publisher.wait() == 0);
  REQUIRE(helper_error.load() == 0);
  REQUIRE(sub->counters().lost == 0);
  REQUIRE(sub->counters().delivered == kBefore + kAfter - first);
  Message m;
  std::vector<std::byte> buf(256);
  REQUIRE(sub->poll(m, buf) == PollStatus::empty);
}

TEST_CASE("a gap between archive files is skipped with exactly the missing sequences counted") {
  test::TempDir dir("shmbus-replay");
  test::ScopedChannelName name("replay");
  const std::string adir = dir.sub("archive");
  Channel ch = test::make_channel(name, archive_options(adir, 64));
  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t i = 0; i < 300; ++i) REQUIRE(publish_nth(*pub, i) == PublishStatus::ok);
  // 100..159, then 200..299 (written apart, its files moved in): 160..199
  // are in neither the archive nor the ring (236..299).
  write_archive(adir, 100, 160);
  write_archive(dir.sub("later"), 200, 300);
  for (const auto& f : fs::directory_iterator(dir.sub("later"))) {
    fs::rename(f.path(), fs::path(adir) / f.path().filename());
  }
  SubscribeOptions so;
  so.start = StartAt::at_sequence(140);
  auto sub = ch.subscribe(so);
  REQUIRE(sub);
  read_in_order(*sub, 140, 20);
  Message m;
  std::vector<std::byte> buf(256);
  // A reader that knows gaps moves to the next record (lapped); one that
  // does not reports the file that starts late (corrupted): the loss is
  // the same, and reading goes on after the gap.
  const PollStatus st = sub->poll(m, buf);
  INFO(to_string(st) << " " << sub->last_error());
  REQUIRE((st == PollStatus::lapped || st == PollStatus::corrupted));
  REQUIRE(sub->counters().lost == 40);
  read_in_order(*sub, 200, 100);
  REQUIRE(sub->counters().lost == 40);
}

TEST_CASE("a message overwritten during a zero-copy read is read again from the archive, nothing lost") {
  OldChannel c;
  SubscribeOptions so;
  so.start = StartAt::at_sequence(299);  // the ring's newest
  auto sub = c.ch.subscribe(so);
  REQUIRE(sub);
  auto pub = c.ch.publisher();
  REQUIRE(pub);
  std::uint64_t seen = 0;
  // While f holds #299 the ring wraps once (drop_oldest): its slot then
  // holds #363, so the read's validation fails.
  const PollStatus st = sub->read([&](const Message& m) {
    seen = m.sequence;
    for (std::uint64_t i = 300; i < 364; ++i) (void)publish_nth(*pub, i);
  });
  REQUIRE(seen == 299);
  REQUIRE(st == PollStatus::lapped);
  REQUIRE(sub->counters().lost == 0);
  REQUIRE(sub->counters().delivered == 0);
  // #299 from the archive, then #300..#363 from the ring.
  read_in_order(*sub, 299, 65);
  REQUIRE(sub->counters().lost == 0);
}

TEST_CASE("copy-out reads repair a message overwritten while it was copied from the archive, never lapped") {
  // The archive holds every message before it is published: each read the
  // ring tears (a drop_oldest publisher a lap ahead of the reader, on
  // another thread) is one the archive repairs, so no copy-out read may
  // return lapped or count a loss.
  constexpr std::uint64_t kCount = 200'000;
  test::TempDir dir("shmbus-replay");
  test::ScopedChannelName name("replay");
  const std::string adir = dir.sub("archive");
  Channel ch = test::make_channel(name, archive_options(adir, 64));
  write_archive(adir, 0, kCount, std::uint64_t{1} << 24);  // after the create: not restored from
  auto sub = ch.subscribe({.name = {}, .start = StartAt::at_sequence(0)});
  REQUIRE(sub);
  auto pub = ch.publisher();
  REQUIRE(pub);
  std::atomic<bool> failed{false};
  std::thread publisher([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      if (publish_nth(*pub, i) != PublishStatus::ok) failed = true;
    }
  });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{publisher};
  std::vector<Message> msgs(8);
  std::vector<std::byte> arena(8 * 8);
  std::uint64_t want = 0;
  PollStatus bad = PollStatus::ok;
  std::uint64_t bad_at = 0;
  while (want < kCount && bad == PollStatus::ok) {
    // poll and poll_batch in turn: both copy out.
    if (want % 2 == 0) {
      Message m;
      const PollStatus st = sub->poll(m, arena);
      if (st == PollStatus::empty) continue;
      if (st != PollStatus::ok || m.sequence != want || value_of<std::uint64_t>(m.payload) != want) {
        bad = st == PollStatus::ok ? PollStatus::corrupted : st;
        bad_at = want;
      }
      ++want;
      continue;
    }
    PollStatus last = PollStatus::ok;
    const std::size_t n = sub->poll_batch(msgs, arena, &last);
    for (std::size_t i = 0; i < n && bad == PollStatus::ok; ++i, ++want) {
      if (msgs[i].sequence != want || value_of<std::uint64_t>(msgs[i].payload) != want) {
        bad = PollStatus::corrupted;
        bad_at = want;
      }
    }
    if (last != PollStatus::ok && last != PollStatus::empty && bad == PollStatus::ok) {
      bad = last;
      bad_at = want;
    }
  }
  publisher.join();
  INFO("at sequence " << bad_at << ": " << to_string(bad) << " " << sub->last_error() << "; cursor " << sub->cursor()
                      << ", lost " << sub->counters().lost);
  REQUIRE(bad == PollStatus::ok);
  REQUIRE_FALSE(failed.load());
  REQUIRE(sub->counters().lost == 0);
  REQUIRE(sub->counters().delivered == kCount);
}
