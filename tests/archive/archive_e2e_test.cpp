// The archive end to end: a forked publisher, the real archiver on a thread,
// and readers that fall behind the ring and catch up through the archive,
// with no gap and no duplicate; the probe's view of it; and a reboot
// simulation restored from what the archiver checkpointed.
#include <shmbus/archive.hpp>
#include <shmbus/shmbus.hpp>

#include "bus/archive/archive_stats.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace shmbus;
using namespace shmbus::test;

namespace {

constexpr std::uint64_t kMessages = 20'000;

// A forked child that publishes `count` messages whose payload is their own
// sequence, from `first`, then exits 0 (1 on any failure).
pid_t fork_publisher(const std::string& channel, std::uint64_t first, std::uint64_t count) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  int rc = 0;
  {
    auto ch = Channel::open(channel, kTestBus);
    if (!ch) ::_exit(1);
    auto pub = ch->publisher();
    if (!pub) ::_exit(1);
    for (std::uint64_t s = first; s < first + count && rc == 0; ++s) {
      // Blocking publish: waits while the gate (the archiver) holds the ring.
      if (pub->publish(bytes_of(s)) != PublishStatus::ok) rc = 1;
    }
  }
  ::_exit(rc);
}

int wait_exit(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Reads `count` messages and checks each one's payload is its sequence, in
// order from `first`; returns how many were right (stops at the first wrong).
std::uint64_t read_in_order(Subscriber& sub, std::uint64_t first, std::uint64_t count) {
  std::byte buf[64];
  std::uint64_t want = first;
  while (want < first + count) {
    Message m;
    const PollStatus st = sub.poll_wait(m, buf, 5'000'000'000ULL);
    if (st != PollStatus::ok) {
      UNSCOPED_INFO("poll at " << want << ": " << to_string(st) << " " << sub.last_error());
      return want - first;
    }
    std::uint64_t v = 0;
    if (m.sequence != want || m.payload.size() != sizeof v) return want - first;
    std::memcpy(&v, m.payload.data(), sizeof v);
    if (v != want) return want - first;
    ++want;
  }
  return count;
}

ChannelOptions archived_options(const TempDir& dir) {
  ChannelOptions o;
  o.capacity = 64;
  o.slot_size = 128;
  o.policy = Policy::block;
  o.archive_dir = dir.sub("archive");
  return o;
}

}  // namespace

TEST_CASE(
    "a subscriber that stops reading does not hold publishers while the archiver runs, then reads "
    "everything from the archive and the ring",
    "[archive][e2e]") {
  TempDir dir("shmbus-archive-e2e");
  ScopedChannelName name("e2e");
  Channel ch = make_channel(name, archived_options(dir));
  ArchiverOptions ao;
  ao.fsync = ArchiveFsync::never;
  auto arc = Archiver::open(ch, ao);
  REQUIRE(arc.ok());
  // The slow reader attaches first, at 0, and reads nothing until the
  // publisher has finished: a ring of 64 could never hold 20,000.
  auto slow = ch.subscribe({.name = {}, .start = StartAt::earliest()});
  REQUIRE(slow);
  REQUIRE(arc->start().ok());
  const pid_t pub = fork_publisher(name.str(), 0, kMessages);
  // The publisher finishes only if the slow subscriber does not gate it.
  CHECK(wait_exit(pub) == 0);
  CHECK(ch.head() == kMessages);
  CHECK(read_in_order(*slow, 0, kMessages) == kMessages);
  CHECK(slow->counters().lost == 0);
  REQUIRE(arc->stop().ok());
  CHECK(arc->counters().archived == kMessages);
  CHECK(arc->counters().lost == 0);

  // The probe's view: the whole range archived, nothing waiting.
  const auto a = ch.stats().archive;
  REQUIRE(a);
  CHECK(a->present);
  CHECK(a->first_sequence == 0);
  CHECK(a->end_sequence == kMessages);
  CHECK(a->archiver);
  CHECK(a->lag == 0);
  CHECK(a->last_fsync_realtime_ns != 0);  // stop() syncs
}

TEST_CASE(
    "a subscriber started at the earliest message while a publisher publishes merges from the archive "
    "into the live ring with no gap and no duplicate",
    "[archive][e2e]") {
  TempDir dir("shmbus-archive-e2e");
  ScopedChannelName name("e2e");
  Channel ch = make_channel(name, archived_options(dir));
  ArchiverOptions ao;
  ao.fsync = ArchiveFsync::never;
  auto arc = Archiver::open(ch, ao);
  REQUIRE(arc.ok());
  REQUIRE(arc->start().ok());
  // Half before the reader exists (long overwritten in the ring), half while it reads.
  CHECK(wait_exit(fork_publisher(name.str(), 0, kMessages / 2)) == 0);
  auto late = ch.subscribe({.name = {}, .start = StartAt::earliest()});
  REQUIRE(late);
  const pid_t pub = fork_publisher(name.str(), kMessages / 2, kMessages / 2);
  CHECK(read_in_order(*late, 0, kMessages) == kMessages);
  CHECK(wait_exit(pub) == 0);
  CHECK(late->counters().lost == 0);
  CHECK(late->counters().lapped_events == 0);
  // The archiver, which gates block publishers, skipped nothing.
  const ArchiverCounters ac = arc->counters();
  CHECK(ac.archived == kMessages);
  CHECK(ac.lost == 0);
  CHECK(ac.gaps == 0);
  CHECK(ac.abandoned == 0);
  // Peek of an overwritten sequence reads the archive.
  Message m;
  std::byte buf[64];
  REQUIRE(ch.peek(7, m, buf) == PollStatus::ok);
  std::uint64_t v = 0;
  std::memcpy(&v, m.payload.data(), sizeof v);
  CHECK(v == 7);
  REQUIRE(arc->stop().ok());
}

TEST_CASE(
    "after every process is killed and the channel removed, re-creating it from the archive continues the "
    "sequence and resumes the durable subscriber from the archiver's checkpoint",
    "[archive][e2e]") {
  TempDir dir("shmbus-archive-e2e");
  ScopedChannelName name("e2e");
  const ChannelOptions o = archived_options(dir);
  {
    Channel ch = make_channel(name, o);
    ArchiverOptions ao;
    ao.fsync = ArchiveFsync::batch;
    auto arc = Archiver::open(ch, ao);
    REQUIRE(arc.ok());
    REQUIRE(arc->start().ok());
    auto reader = ch.subscribe({.name = "reader", .start = StartAt::earliest()});
    REQUIRE(reader);
    CHECK(wait_exit(fork_publisher(name.str(), 0, 1000)) == 0);
    CHECK(read_in_order(*reader, 0, 300) == 300);
    // stop() writes a last checkpoint with the reader's cursor at 300.
    REQUIRE(arc->stop().ok());
  }
  REQUIRE(Channel::remove(name.str(), kTestBus));
  Channel ch = make_channel(name, o);
  CHECK(ch.head() == 1000);
  auto reader = ch.subscribe({.name = "reader"});
  REQUIRE(reader);
  CHECK(reader->resumed());
  CHECK(reader->cursor() == 300);
  CHECK(read_in_order(*reader, 300, 700) == 700);
  auto pub = ch.publisher();
  REQUIRE(pub);
  REQUIRE(pub->publish(bytes_of(std::uint64_t{1000})) == PublishStatus::ok);
  CHECK(read_in_order(*reader, 1000, 1) == 1);
}
