// The archiver on a thread of its own, against publisher threads, a reader
// that starts behind the ring (it reads from the archive while the archiver
// is still appending to it, then merges into the ring) and a thread reading
// the archiver's counters and the channel's stats as the probe does. Label
// concurrency: it runs under ThreadSanitizer, which is half its point.
#include <catch2/catch.hpp>

#include <shmbus/archive.hpp>
#include <shmbus/shmbus.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bus/archive/segment.hpp"
#include "shm/clock.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

constexpr int kPublishers = 2;
constexpr std::uint64_t kPerPublisher = 4000;
constexpr std::uint64_t kTotal = kPublishers * kPerPublisher;
constexpr std::uint64_t kDeadlineNs = 60'000'000'000ULL;  // a hang fails, it does not block the suite

// Publisher p's i-th message: p in the high half, i in the low.
std::uint64_t tag(std::uint64_t p, std::uint64_t i) { return p << 32 | i; }

}  // namespace

TEST_CASE("archiver thread, publishers, a reader replaying from the archive and the probe run together",
          "[archive][stress]") {
  TempDir dir("shmbus-arc-stress");
  ScopedChannelName name("arcst");
  ChannelOptions o;
  o.capacity = 64;
  o.policy = Policy::block;
  o.archive_dir = dir.sub("archive");
  Channel ch = make_channel(name, o);
  ArchiverOptions ao;
  ao.fsync = ArchiveFsync::never;
  ao.batch = 16;
  auto arc = Archiver::open(ch, ao);
  REQUIRE(arc.ok());
  REQUIRE(arc->start().ok());

  // Catch2's assertions are not thread-safe: the threads count what is wrong.
  std::atomic<std::uint64_t> publish_failures{0};
  std::atomic<std::uint64_t> counters_past_head{0};
  std::atomic<std::uint64_t> counters_lost{0};
  std::atomic<std::uint64_t> stats_past_head{0};
  std::atomic<bool> stop_probe{false};
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&, p] {
      auto pub = ch.publisher();
      if (!pub) {
        publish_failures += kPerPublisher;
        return;
      }
      for (std::uint64_t i = 0; i < kPerPublisher; ++i) {
        const std::uint64_t v = tag(static_cast<std::uint64_t>(p), i);
        if (pub->publish(std::as_bytes(std::span(&v, 1))) != PublishStatus::ok) ++publish_failures;
      }
    });
  }
  std::thread probe([&] {
    while (!stop_probe.load()) {
      const ArchiverCounters c = arc->counters();
      (void)arc->last_error();
      const ChannelStats st = ch.stats();
      // The archiver's cursor never passes the head; under block it loses nothing.
      if (c.next_sequence > st.head) ++counters_past_head;
      if (c.lost != 0) ++counters_lost;
      // The probe's snapshot is consistent: the archiver's cursor as of the head it shows.
      if (st.archive && st.archive->archiver_cursor > st.head) ++stats_past_head;
      std::this_thread::yield();
    }
  });

  // The reader starts at 0 once the ring has lapped it: the first messages
  // come from the archive, written as the reader goes.
  const std::uint64_t deadline = shm::monotonic_ns() + kDeadlineNs;
  while (ch.head() < 4 * o.capacity && shm::monotonic_ns() < deadline) std::this_thread::yield();
  REQUIRE(ch.head() >= 4 * o.capacity);
  SubscribeOptions so;
  so.start = StartAt::at_sequence(0);
  auto reader = ch.subscribe(so);
  REQUIRE(reader);
  std::uint64_t next = 0;
  std::uint64_t last_of[kPublishers] = {};
  bool first_of[kPublishers] = {true, true};
  std::uint64_t out_of_order = 0;
  std::byte buf[64];
  while (next < kTotal && shm::monotonic_ns() < deadline) {
    Message m;
    const PollStatus st = reader->poll(m, buf);
    if (st == PollStatus::empty) {
      std::this_thread::yield();
      continue;
    }
    INFO(reader->last_error());
    REQUIRE(st == PollStatus::ok);
    REQUIRE(m.sequence == next);  // no gap, no duplicate across the archive-to-ring switch
    REQUIRE(m.payload.size() == sizeof(std::uint64_t));
    std::uint64_t v;
    std::memcpy(&v, m.payload.data(), sizeof v);
    const std::uint64_t p = v >> 32;
    REQUIRE(p < static_cast<std::uint64_t>(kPublishers));
    // Each publisher's messages come in the order it published them.
    if (!first_of[p] && (v & 0xFFFFFFFFu) <= last_of[p]) ++out_of_order;
    first_of[p] = false;
    last_of[p] = v & 0xFFFFFFFFu;
    ++next;
  }
  for (auto& t : publishers) t.join();
  CHECK(next == kTotal);
  CHECK(out_of_order == 0);
  CHECK(publish_failures.load() == 0);
  CHECK(reader->counters().lost == 0);

  while (arc->counters().next_sequence < kTotal && shm::monotonic_ns() < deadline) std::this_thread::yield();
  stop_probe = true;
  probe.join();
  REQUIRE(arc->stop().ok());
  const ArchiverCounters c = arc->counters();
  CHECK(c.archived == kTotal);
  CHECK(c.lost == 0);
  CHECK(c.gaps == 0);
  CHECK(counters_past_head.load() == 0);
  CHECK(counters_lost.load() == 0);
  CHECK(stats_past_head.load() == 0);

  // On disk: 0..kTotal-1, each once, in order.
  auto rd = bus::archive::SegmentReader::open(o.archive_dir);
  REQUIRE(rd.ok());
  std::uint64_t expect = 0;
  for (;;) {
    auto r = rd->next();
    REQUIRE(r.ok());
    if (!r->has_value()) break;
    REQUIRE((*r)->sequence == expect);
    ++expect;
  }
  CHECK(expect == kTotal);
}
