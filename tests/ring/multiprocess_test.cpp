// Multi-process behaviour of one channel: real segments, real fork()ed peers,
// real SIGKILL. Every test synchronises on events — a pipe (test::Event) or a
// word of shared memory — and never on a sleep that assumes another process
// got somewhere first; the only waits on time are waits for a deadline the
// channel itself is configured with (unblock_timeout_ns). Every loop is
// bounded, and every child is killed and reaped by a guard if a check fails,
// so a failing test never leaves a peer behind.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// Bound on every wait for a peer: far above anything a healthy run needs.
constexpr auto kBound = 10s;
constexpr std::uint64_t kBoundNs = 10'000'000'000ULL;
constexpr int kKilled = 128 + SIGKILL;  // wait_child's code for a SIGKILLed child

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

std::uint64_t ns_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<std::uint64_t>(left.count()) : 0;
}

/// Burns `iterations` loop turns: a random, unsynchronised delay before a kill.
void spin_for(int iterations) {
  for (int i = 0; i < iterations; ++i) asm volatile("" ::: "memory");
}

/// Parks a child until it is killed.
[[noreturn]] void pause_forever() {
  for (;;) ::pause();
}

/// A child's body: opens `channel`, claims 8 bytes (half-writes them if
/// `scribble`), signals the claimed sequence and parks with the claim open,
/// to be killed. Returns only on a setup failure (10, 11, 12).
int claim_and_hang(const std::string& channel, Event& claimed, bool scribble) {
  auto c = Channel::open(channel, kTestBus);
  if (!c) return 10;
  auto pub = c->publisher();
  if (!pub) return 11;
  Claim claim;
  if (pub->try_claim(8, claim) != PublishStatus::ok) return 12;
  if (scribble) std::memset(claim.payload.data(), 0xab, 8);  // half-written, never committed
  claimed.signal(claim.sequence);
  pause_forever();
}

/// Forks a publisher that claims sequence 0 of `channel` (half-writing it
/// if `scribble`) and kills it with SIGKILL while it holds the claim.
/// Returns its pid.
pid_t kill_while_claiming(const std::string& channel, bool scribble) {
  Event claimed;
  Child writer([&] { return claim_and_hang(channel, claimed, scribble); });
  std::uint64_t claimed_seq = ~0ULL;
  REQUIRE(claimed.wait(claimed_seq, ms_left(Clock::now() + kBound)));
  REQUIRE(claimed_seq == 0);
  REQUIRE(writer.kill_and_wait() == kKilled);
  return writer.pid();
}

ChannelOptions block_channel(std::uint32_t capacity, std::uint32_t slot_size = 128) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.policy = Policy::block;
  return o;
}

/// Receives values a child reports through `ev` until `out` holds `count`
/// of them; false if the deadline passes first.
bool collect(Event& ev, std::vector<std::uint64_t>& out, std::size_t count, Clock::time_point deadline) {
  while (out.size() < count) {
    std::uint64_t v = 0;
    if (!ev.wait(v, std::max(ms_left(deadline), 1))) return false;
    out.push_back(v);
  }
  return true;
}

/// Takes every report already in the pipe (a killed child's last words).
void drain(Event& ev, std::vector<std::uint64_t>& out) {
  std::uint64_t v = 0;
  while (ev.wait(v, 0)) out.push_back(v);
}

/// Whether `v` is exactly first, first+1, ..., first+v.size()-1.
bool contiguous_from(const std::vector<std::uint64_t>& v, std::uint64_t first) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != first + i) return false;
  }
  return true;
}

/// Reads u64 payloads (each equal to its sequence) until `last` has been
/// read. Returns the status that stopped it early (timeout at the deadline,
/// or a status a loss-free channel must never give), ok once `last` is in.
PollStatus read_through(Subscriber& sub, std::uint64_t last, std::vector<std::uint64_t>& out,
                        Clock::time_point deadline) {
  for (;;) {
    Message m;
    std::byte buf[64];
    const PollStatus st = sub.poll(m, buf);
    if (st == PollStatus::ok) {
      const auto v = value_of<std::uint64_t>(m.payload);
      if (v != m.sequence) return PollStatus::corrupted;
      out.push_back(v);
      if (v == last) return PollStatus::ok;
      continue;
    }
    if (st != PollStatus::empty) return st;
    if (Clock::now() >= deadline) return PollStatus::timeout;
    const PollStatus w = sub.wait(std::min<std::uint64_t>(ns_left(deadline), 100'000'000));
    if (w != PollStatus::ok && w != PollStatus::timeout) return w;
  }
}

/// Body of a child that publishes the values first..last (each the sequence it
/// expects to get) and exits 0, or 20 + the status of the first failure.
int publish_range(const std::string& name, std::uint64_t first, std::uint64_t last) {
  auto ch = Channel::open(name, kTestBus);
  if (!ch) return 10;
  auto pub = ch->publisher();
  if (!pub) return 11;
  for (std::uint64_t v = first; v <= last; ++v) {
    const PublishStatus st = pub->publish(bytes_of(v), {}, kBoundNs);
    if (st != PublishStatus::ok) return 20 + static_cast<int>(st);
  }
  return 0;
}

/// How a killed durable reader consumes messages.
enum class ReadMode {
  poll,  ///< copy-out poll(): the cursor is published before poll() returns; reports after
  read,  ///< zero-copy read(): reports inside the callback, before the cursor moves
};

/// Body of a child that attaches the durable subscriber `durable` (creating it
/// at the earliest message, or resuming it) and reads until `last`,
/// reporting every value through `reports` (see ReadMode for when).
int durable_reader(const std::string& name, const std::string& durable, ReadMode mode, std::uint64_t last,
                   Event& reports) {
  auto ch = Channel::open(name, kTestBus);
  if (!ch) return 10;
  auto sub = ch->subscribe({durable, StartAt::earliest()});
  if (!sub) return 11;
  const auto deadline = Clock::now() + kBound;
  for (;;) {
    PollStatus st;
    std::uint64_t v = 0;
    if (mode == ReadMode::poll) {
      Message m;
      std::byte buf[64];
      st = sub->poll(m, buf);
      if (st == PollStatus::ok) {
        v = value_of<std::uint64_t>(m.payload);
        reports.signal(v);
      }
    } else {
      st = sub->read([&](const Message& m) {
        v = value_of<std::uint64_t>(m.payload);
        reports.signal(v);
      });
    }
    if (st == PollStatus::ok) {
      if (v == last) return 0;
      continue;
    }
    if (st != PollStatus::empty) return 12;
    if (Clock::now() >= deadline) return 13;
    (void)sub->wait(100'000'000);
  }
}

}  // namespace

TEST_CASE("a publisher killed with SIGKILL between claim and commit does not stall readers") {
  ScopedChannelName name("mp-claim");
  ChannelOptions o = block_channel(8);
  o.unblock_timeout_ns = 600'000'000'000ULL;  // 10 minutes: only liveness can free the slot in time
  Channel ch = make_channel(name, o);
  auto sub = ch.subscribe({"", StartAt::earliest()});
  REQUIRE(sub);

  const pid_t writer = kill_while_claiming(name.str(), true);

  {
    const ChannelStats st = ch.stats();
    REQUIRE(st.head == 1);
    REQUIRE(st.publishers.size() == 1);
    CHECK(st.publishers[0].pid == static_cast<std::uint32_t>(writer));
    CHECK_FALSE(st.publishers[0].alive);
    CHECK(st.abandoned == 0);
  }

  // Another peer publishes three rings' worth behind the dead claim: it can
  // only get past the first ring once the reader has given up on sequence 0.
  const std::uint64_t last = 3 * o.capacity;
  Child publisher([&] { return publish_range(name.str(), 1, last); });

  const auto start = Clock::now();
  std::vector<std::uint64_t> got;
  const PollStatus st = read_through(*sub, last, got, start + kBound);
  const auto elapsed = Clock::now() - start;
  CHECK(st == PollStatus::ok);
  REQUIRE(publisher.wait() == 0);
  CHECK(got.size() == last);
  CHECK(contiguous_from(got, 1));
  // The slot's writer word names the dead process, so the reader takes the
  // claim away at once instead of waiting out the (10-minute) unblock timeout.
  CHECK(elapsed < std::chrono::nanoseconds(o.unblock_timeout_ns));
  const ChannelStats after = ch.stats();
  CHECK(after.abandoned == 1);
  CHECK(after.head == last + 1);
  REQUIRE(after.subscribers.size() == 1);
  CHECK(after.subscribers[0].cursor == last + 1);
  CHECK(after.subscribers[0].lost == 0);
}

/// The mappings of this process of the file with inode `ino` that start at
/// or after file offset `from`, as "perms offset" strings (/proc/self/maps).
std::vector<std::string> mappings_of(ino_t ino, std::uint64_t from) {
  std::vector<std::string> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev;
    unsigned long long inode = 0;
    if (!(in >> range >> perms >> offset >> dev >> inode)) continue;
    if (inode != ino || std::stoull(offset, nullptr, 16) < from) continue;
    out.push_back(perms + " " + offset);
  }
  return out;
}

TEST_CASE(
    "a pure subscriber takes a dead writer's claim away through a page mapped for that CAS "
    "alone: its view of the payloads stays read-only") {
  ScopedChannelName name("mp-roabandon");
  ChannelOptions o = block_channel(8);
  o.unblock_timeout_ns = 600'000'000'000ULL;  // only the dead-writer check frees the slot in time
  // This process never publishes, so it has no writable view of the slots.
  Channel ch = make_channel(name, o);
  auto sub = ch.subscribe({"", StartAt::earliest()});
  REQUIRE(sub);
  struct stat st {};
  REQUIRE(::stat(("/dev/shm/" + bus::segment_name(kTestBus, name.str())).c_str(), &st) == 0);
  const std::uint64_t data_offset = shmbus::detail::state_of(ch)->geo.data_offset;
  const std::vector<std::string> before = mappings_of(st.st_ino, data_offset);
  REQUIRE(before.size() == 1);
  CHECK(before[0].rfind("r--s", 0) == 0);

  (void)kill_while_claiming(name.str(), true);
  Child publisher([&] { return publish_range(name.str(), 1, 1); });
  REQUIRE(publisher.wait() == 0);

  // Sequence 1 is only readable past sequence 0, which this reader must
  // abandon itself: nobody else will (the publisher is done, one lap short).
  Message m;
  std::byte buf[64];
  REQUIRE(sub->poll_wait(m, buf, kBoundNs) == PollStatus::ok);
  CHECK(m.sequence == 1);
  CHECK(ch.stats().abandoned == 1);
  // The page mapped read-write for that CAS is gone again; the reader's view
  // of the slots is what it was.
  CHECK(mappings_of(st.st_ino, data_offset) == before);
}

TEST_CASE(
    "a publisher that laps a claim whose writer was killed takes the slot back, with no reader "
    "to do it") {
  // No subscriber and no group: the next publisher on the dead claim's slot
  // is the only one who can notice. The unblock timeout is 10 minutes, so
  // within the 10 s bound only its dead-writer check (the slot's writer word
  // names a dead process) can free the slot.
  const Policy policy = GENERATE(Policy::block, Policy::drop_oldest);
  INFO("policy " << to_string(policy));
  ScopedChannelName name("mp-lapclaim");
  ChannelOptions o = block_channel(4);
  o.policy = policy;
  o.unblock_timeout_ns = 600'000'000'000ULL;
  Channel ch = make_channel(name, o);

  (void)kill_while_claiming(name.str(), false);

  // Sequences 1..4: sequence 4 needs slot 0, which the dead claim holds.
  Child publisher([&] { return publish_range(name.str(), 1, o.capacity); });
  REQUIRE(publisher.wait() == 0);  // -2: still waiting for the dead writer at the bound
  const ChannelStats st = ch.stats();
  CHECK(st.head == o.capacity + 1);
  CHECK(st.abandoned == 1);
  // A reader from the oldest message finds 1..4, sequence 4 intact in slot 0.
  auto sub = ch.subscribe({"", StartAt::earliest()});
  REQUIRE(sub);
  std::vector<std::uint64_t> got;
  CHECK(read_through(*sub, o.capacity, got, Clock::now() + kBound) == PollStatus::ok);
  CHECK(contiguous_from(got, 1));
  CHECK(got.size() == o.capacity);
}

TEST_CASE("a durable subscriber killed mid-stream resumes at the cursor it published") {
  // N messages are in the ring before the reader starts (capacity N: nothing
  // is ever overwritten). The child reports every value it reads through a
  // pipe, free-running; the parent SIGKILLs it once K reports arrived, so the
  // kill lands wherever the child happens to be (in poll, in the report's
  // write, between the two). A pipe holds 16 pages by default (64 KiB = 8192
  // reports with 4 KiB pages), so the child is at most K + that + 1 messages
  // in when it dies; N is chosen above that: the kill is always mid-stream.
  //
  // What the durable cursor promises depends on when the reader looks at a
  // message relative to the cursor update, so both read paths are checked:
  //  - poll(): the cursor is published before poll() returns, and the child
  //    reports after. The resumer starts at r+1 (r = last report), or at r+2
  //    when the kill fell between poll() returning r+1 and its report: r+1
  //    was then consumed — the cursor says so — but its report died with the
  //    child. Nothing is ever delivered twice.
  //  - read(): the child reports inside the callback, before the cursor
  //    moves. The resumer starts at r+1, or at r when the kill fell between
  //    the report and the cursor update: that one message is delivered twice
  //    (at-least-once), and reports + resumed reads cover 0..N-1 exactly.
  constexpr std::size_t kK = 1000;
  const std::uint64_t pipe_reports = 16 * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) / 8;
  const std::uint64_t kN = std::bit_ceil(kK + pipe_reports + 2);  // 16384 with 4 KiB pages
  ReadMode mode = ReadMode::poll;
  SECTION("reading with copy-out poll") { mode = ReadMode::poll; }
  SECTION("reading with zero-copy read") { mode = ReadMode::read; }

  ScopedChannelName name("mp-durable");
  Channel ch = make_channel(name, block_channel(static_cast<std::uint32_t>(kN), 64));
  auto pub = ch.publisher();
  REQUIRE(pub);
  std::uint64_t published = 0;
  while (published < kN && pub->publish(bytes_of(published), {}, 0) == PublishStatus::ok) ++published;
  REQUIRE(published == kN);

  Event reports;
  Child reader([&] { return durable_reader(name.str(), "d1", mode, kN - 1, reports); });
  std::vector<std::uint64_t> reported;
  REQUIRE(collect(reports, reported, kK, Clock::now() + kBound));
  REQUIRE(reader.kill_and_wait() == kKilled);
  drain(reports, reported);
  REQUIRE(contiguous_from(reported, 0));
  const std::uint64_t r = reported.back();
  REQUIRE(r + 2 < kN);  // killed mid-stream (see the pipe bound above)

  // The dead owner's entry still holds the cursor it published.
  std::uint64_t dead_cursor = ~0ULL;
  for (const auto& s : ch.stats().subscribers) {
    if (s.name == "d1") {
      CHECK(s.durable);
      CHECK(s.pid == static_cast<std::uint32_t>(reader.pid()));
      CHECK_FALSE(s.alive);
      dead_cursor = s.cursor;
    }
  }
  INFO("last report " << r << ", cursor left by the killed reader " << dead_cursor);
  if (mode == ReadMode::poll) {
    CHECK((dead_cursor == r + 1 || dead_cursor == r + 2));
  } else {
    CHECK((dead_cursor == r || dead_cursor == r + 1));
  }

  auto resumer = ch.subscribe({"d1", StartAt::latest()});  // start is ignored on resume
  REQUIRE(resumer);
  CHECK(resumer->resumed());
  CHECK(resumer->cursor() == dead_cursor);
  std::vector<std::uint64_t> rest;
  REQUIRE(read_through(*resumer, kN - 1, rest, Clock::now() + kBound) == PollStatus::ok);
  REQUIRE(!rest.empty());
  CHECK(rest.front() == dead_cursor);
  CHECK(contiguous_from(rest, rest.front()));
  CHECK(resumer->counters().lost == 0);

  // Account for every message exactly: the only message missing from the
  // reports and the resumed reads, or the only one in both, is the one at
  // the kill point described above.
  std::vector<int> seen(kN, 0);
  for (auto v : reported) ++seen[v];
  for (auto v : rest) ++seen[v];
  std::vector<std::uint64_t> missing, twice;
  for (std::uint64_t i = 0; i < kN; ++i) {
    if (seen[i] == 0) missing.push_back(i);
    if (seen[i] > 1) twice.push_back(i);
  }
  CHECK(missing.size() + twice.size() <= 1);
  if (mode == ReadMode::poll) {
    CHECK(twice.empty());
    CHECK(missing == (dead_cursor == r + 2 ? std::vector<std::uint64_t>{r + 1} : std::vector<std::uint64_t>{}));
  } else {
    CHECK(missing.empty());
    CHECK(twice == (dead_cursor == r ? std::vector<std::uint64_t>{r} : std::vector<std::uint64_t>{}));
  }
  CHECK(ch.stats().dead_reclaimed == 1);
}

TEST_CASE("an anonymous subscriber's slot is reclaimed after its process dies") {
  ScopedChannelName name("mp-reclaim");
  ChannelOptions o = block_channel(8);
  o.max_subscribers = 2;
  Channel ch = make_channel(name, o);

  auto holder = [&](Event& ready) {
    return [&]() -> int {
      auto c = Channel::open(name.str(), kTestBus);
      if (!c) return 10;
      auto sub = c->subscribe();
      if (!sub) return 11;
      ready.signal();
      pause_forever();
    };
  };
  Event ready_a, ready_b;
  Child a(holder(ready_a));
  Child b(holder(ready_b));
  REQUIRE(ready_a.wait(ms_left(Clock::now() + kBound)));
  REQUIRE(ready_b.wait(ms_left(Clock::now() + kBound)));

  auto refused = ch.subscribe();
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == ErrorCode::table_full);
  CHECK(ch.stats().dead_reclaimed == 0);

  REQUIRE(a.kill_and_wait() == kKilled);
  auto sub = ch.subscribe();
  REQUIRE(sub);

  const ChannelStats st = ch.stats();
  CHECK(st.dead_reclaimed == 1);
  REQUIRE(st.subscribers.size() == 2);
  bool mine = false, b_alive = false;
  for (const auto& s : st.subscribers) {
    CHECK(s.pid != static_cast<std::uint32_t>(a.pid()));
    CHECK(s.state == "active");
    CHECK_FALSE(s.durable);
    if (s.pid == static_cast<std::uint32_t>(::getpid())) mine = s.alive;
    if (s.pid == static_cast<std::uint32_t>(b.pid())) b_alive = s.alive;
  }
  CHECK(mine);
  CHECK(b_alive);

  // Still full for a third subscriber while b lives.
  auto third = ch.subscribe();
  REQUIRE_FALSE(third);
  CHECK(third.error().code() == ErrorCode::table_full);
  REQUIRE(b.kill_and_wait() == kKilled);
}

TEST_CASE("a blocked publisher is released when the slow subscriber dies") {
  ScopedChannelName name("mp-blocked");
  constexpr std::uint32_t kCapacity = 4;
  Channel ch = make_channel(name, block_channel(kCapacity));

  Event ready;
  Child slow([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    auto sub = c->subscribe({"", StartAt::at_sequence(0)});
    if (!sub) return 11;
    ready.signal();
    pause_forever();  // never reads
  });
  REQUIRE(ready.wait(ms_left(Clock::now() + kBound)));

  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t i = 0; i < kCapacity; ++i) REQUIRE(pub->publish(bytes_of(i), {}, 0) == PublishStatus::ok);
  // The ring is full for the slow reader.
  REQUIRE(pub->publish(bytes_of(std::uint64_t{kCapacity}), {}, 0) == PublishStatus::timeout);

  // The killer waits until the parent is about to publish and then until the
  // publisher is actually asleep on the full ring (pub_sleeping is raised only
  // after the spin phase, before each futex sleep), then kills the reader.
  Event about_to_publish;
  Child killer([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    if (!about_to_publish.wait(ms_left(Clock::now() + kBound))) return 11;
    const auto& waiters = shmbus::detail::state_of(*c)->producer->pub_sleeping;
    const auto deadline = Clock::now() + kBound;
    while (waiters.load(std::memory_order_acquire) == 0) {
      if (Clock::now() >= deadline) {
        (void)::kill(slow.pid(), SIGKILL);  // let the parent finish; still a failure
        return 12;
      }
      ::sched_yield();
    }
    return ::kill(slow.pid(), SIGKILL) == 0 ? 0 : 13;
  });

  about_to_publish.signal();
  const auto start = Clock::now();
  const PublishStatus st = pub->publish(bytes_of(std::uint64_t{kCapacity}), {}, kBoundNs);
  const auto elapsed = Clock::now() - start;
  CHECK(killer.wait() == 0);
  CHECK(slow.wait() == kKilled);
  CHECK(st == PublishStatus::ok);
  CHECK(elapsed < 5s);  // released by the death, well before the 10 s timeout

  const ChannelStats stats = ch.stats();
  CHECK(stats.dead_reclaimed >= 1);
  CHECK(stats.subscribers.empty());  // the anonymous entry was freed
  REQUIRE(stats.publishers.size() == 1);
  CHECK(stats.publishers[0].timeouts == 1);  // only the probe publish above
  CHECK(stats.publishers[0].blocked_ns > 0);
  CHECK(stats.publishers[0].published == kCapacity + 1);

  // The message published after the release is in the ring, after 1..3.
  auto late = ch.subscribe({"", StartAt::earliest()});
  REQUIRE(late);
  std::vector<std::uint64_t> got;
  REQUIRE(read_through(*late, kCapacity, got, Clock::now() + kBound) == PollStatus::ok);
  CHECK(got == std::vector<std::uint64_t>{1, 2, 3, 4});
}

TEST_CASE("a consumer killed at random points never corrupts the channel for the others") {
  // Each trial: a durable cursor "d" exists from sequence 0; a bystander
  // process reads every message with its own anonymous cursor; a publisher
  // process publishes 0..M-1 (blocking on the slowest reader); a reader
  // process consumes "d" and is SIGKILLed after a random number of reports
  // (zero included: the kill may land while it opens or attaches); the
  // parent then resumes "d" and reads to the end. Every message must be
  // accounted for as in the durable test above, the bystander and the
  // publisher must finish with nothing lost, and no claim may be abandoned.
  constexpr std::uint64_t kM = 2000;
  constexpr int kTrials = 20;
  std::mt19937_64 rng(0x5eed'b05);
  int killed_mid_stream = 0;

  for (int trial = 0; trial < kTrials; ++trial) {
    const ReadMode mode = trial % 2 == 0 ? ReadMode::poll : ReadMode::read;
    // One trial in four kills the reader without waiting for a report, after
    // a random spin: it then dies while it starts, opens or attaches "d".
    const bool early = trial % 4 == 3;
    // Kill points in the first half: the reader runs ahead of its reports
    // through the pipe, so a later point could find it already finished.
    const std::size_t kill_after = early ? 0 : std::uniform_int_distribution<std::size_t>(1, kM / 2)(rng);
    const int spin = std::uniform_int_distribution<int>(0, early ? 200'000 : 2'000)(rng);
    INFO("trial " << trial << (mode == ReadMode::poll ? " (poll)" : " (read)") << ", kill after " << kill_after
                  << " reports + " << spin << " spins");

    ScopedChannelName name("mp-random");
    Channel ch = make_channel(name, block_channel(256, 64));
    {
      auto d = ch.subscribe({"d", StartAt::earliest()});
      REQUIRE(d);
    }  // detached: keeps cursor 0 and gates publishers

    Event bystander_ready;
    Child bystander([&]() -> int {
      auto c = Channel::open(name.str(), kTestBus);
      if (!c) return 10;
      auto sub = c->subscribe({"", StartAt::at_sequence(0)});
      if (!sub) return 11;
      bystander_ready.signal();
      std::vector<std::uint64_t> got;
      got.reserve(kM);
      if (read_through(*sub, kM - 1, got, Clock::now() + kBound) != PollStatus::ok) return 12;
      if (got.size() != kM || !contiguous_from(got, 0)) return 13;
      return sub->counters().lost == 0 ? 0 : 14;
    });
    REQUIRE(bystander_ready.wait(ms_left(Clock::now() + kBound)));

    Event reports;
    // The reader can run at most one pipe page (512 reports) ahead of the
    // parent, so a kill after kill_after <= kM/2 reports lands mid-stream.
    REQUIRE(reports.limit_to_one_page());
    Child reader([&] { return durable_reader(name.str(), "d", mode, kM - 1, reports); });
    Child publisher([&] { return publish_range(name.str(), 0, kM - 1); });

    std::vector<std::uint64_t> reported;
    REQUIRE(collect(reports, reported, kill_after, Clock::now() + kBound));
    spin_for(spin);  // moves the kill point at random; nothing waits on it
    const int reader_rc = reader.kill_and_wait();
    REQUIRE((reader_rc == kKilled || reader_rc == 0));
    drain(reports, reported);
    REQUIRE(contiguous_from(reported, 0));
    const std::uint64_t n = reported.size();

    auto resumer = ch.subscribe({"d", StartAt::latest()});
    REQUIRE(resumer);
    CHECK(resumer->resumed());
    const std::uint64_t c = resumer->cursor();
    INFO("reports " << n << ", resumed at " << c);
    if (mode == ReadMode::poll) {
      CHECK((c == n || c == n + 1));  // n + 1: message n consumed, its report lost
    } else {
      CHECK((c == n || (n > 0 && c == n - 1)));  // n - 1: message n-1 delivered twice
    }
    if (c < kM) {
      ++killed_mid_stream;
      std::vector<std::uint64_t> rest;
      REQUIRE(read_through(*resumer, kM - 1, rest, Clock::now() + kBound) == PollStatus::ok);
      CHECK(rest.front() == c);
      CHECK(contiguous_from(rest, c));
    }
    CHECK(resumer->counters().lost == 0);

    CHECK(publisher.wait() == 0);
    CHECK(bystander.wait() == 0);
    const ChannelStats st = ch.stats();
    CHECK(st.head == kM);
    CHECK(st.abandoned == 0);
    CHECK(st.evictions == 0);
    for (const auto& s : st.subscribers) CHECK(s.lost == 0);
  }
  // The random points must mostly land while the reader still had work.
  CHECK(killed_mid_stream >= kTrials / 2);
}

TEST_CASE("a publisher killed at random points never stalls or corrupts the channel for the others") {
  // Each trial: publisher A (a process) publishes tagged values 0, 1, 2, ...
  // and reports each after publish() returned ok; the parent reads, and after
  // a random number of A's messages (plus a random spin) SIGKILLs A — in its
  // claim, its copy, its commit, its report, or asleep on the full ring.
  // Publisher B then publishes kB more. The reader must get a prefix of A's
  // values with no gap or duplicate that covers every value A reported
  // (plus at most the one whose report died with A), then all of B's; a
  // claim A left behind is skipped once the unblock timeout expires.
  constexpr std::uint64_t kA = 1ULL << 32;
  constexpr std::uint64_t kB = 2ULL << 32;
  constexpr std::uint64_t kBCount = 100;
  constexpr int kTrials = 10;
  std::mt19937_64 rng(0xa11ce);

  for (int trial = 0; trial < kTrials; ++trial) {
    const std::size_t kill_after = std::uniform_int_distribution<std::size_t>(1, 300)(rng);
    const int spin = std::uniform_int_distribution<int>(0, 5'000)(rng);
    INFO("trial " << trial << ", kill A after " << kill_after << " reads + " << spin << " spins");

    ScopedChannelName name("mp-pubkill");
    ChannelOptions o = block_channel(64, 64);
    o.unblock_timeout_ns = 100'000'000;  // 100 ms
    Channel ch = make_channel(name, o);
    auto sub = ch.subscribe({"", StartAt::at_sequence(0)});
    REQUIRE(sub);

    Event published;
    Child a([&]() -> int {
      auto c = Channel::open(name.str(), kTestBus);
      if (!c) return 10;
      auto pub = c->publisher();
      if (!pub) return 11;
      for (std::uint64_t i = 0;; ++i) {
        PublishStatus st;
        // A claim taken from a writer that stalled (descheduled) past the
        // unblock timeout comes back as `abandoned`: publish the value again.
        while ((st = pub->publish(bytes_of(kA | i), {}, kBoundNs)) == PublishStatus::abandoned) {
        }
        if (st != PublishStatus::ok) return 20 + static_cast<int>(st);
        published.signal(i);
      }
    });

    std::vector<std::uint64_t> from_a, from_b;
    std::uint64_t last_seq = 0;
    bool order_ok = true;
    // Reads until `done()`; false at the deadline or on a status a loss-free
    // block channel must never give.
    auto read_until = [&](const std::function<bool()>& done) {
      const auto deadline = Clock::now() + kBound;
      while (!done()) {
        Message m;
        std::byte buf[64];
        const PollStatus st = sub->poll(m, buf);
        if (st == PollStatus::ok) {
          if (!(from_a.empty() && from_b.empty()) && m.sequence <= last_seq) order_ok = false;
          last_seq = m.sequence;
          const auto v = value_of<std::uint64_t>(m.payload);
          if ((v & ~0xffffffffULL) == kA) {
            from_a.push_back(v & 0xffffffffULL);
          } else if ((v & ~0xffffffffULL) == kB) {
            from_b.push_back(v & 0xffffffffULL);
          } else {
            return false;
          }
          continue;
        }
        if (st != PollStatus::empty || Clock::now() >= deadline) return false;
        (void)sub->wait(std::min<std::uint64_t>(ns_left(deadline), 100'000'000));
      }
      return true;
    };

    REQUIRE(read_until([&] { return from_a.size() >= kill_after; }));
    spin_for(spin);  // moves the kill point at random; nothing waits on it
    REQUIRE(a.kill_and_wait() == kKilled);
    std::vector<std::uint64_t> reported;
    drain(published, reported);
    REQUIRE(!reported.empty());
    REQUIRE(contiguous_from(reported, 0));

    Child b([&] {
      auto c = Channel::open(name.str(), kTestBus);
      if (!c) return 10;
      auto pub = c->publisher();
      if (!pub) return 11;
      for (std::uint64_t i = 0; i < kBCount; ++i) {
        const PublishStatus st = pub->publish(bytes_of(kB | i), {}, kBoundNs);
        if (st != PublishStatus::ok) return 20 + static_cast<int>(st);
      }
      return 0;
    });
    CHECK(read_until([&] { return !from_b.empty() && from_b.back() == kBCount - 1; }));
    CHECK(b.wait() == 0);

    INFO("A reported " << reported.size() << ", reader got " << from_a.size() << " of A");
    CHECK(order_ok);
    CHECK(contiguous_from(from_a, 0));
    CHECK((from_a.size() == reported.size() || from_a.size() == reported.size() + 1));
    CHECK(from_b.size() == kBCount);
    CHECK(contiguous_from(from_b, 0));
    CHECK(sub->counters().lost == 0);
    CHECK(ch.stats().abandoned <= 1);
  }
}

TEST_CASE("a waiter killed in its sleep costs at most one wake-up, then nobody is counted") {
  // The sleep flags (ProducerBlock::pub_sleeping / sub_sleeping) are raised
  // before each futex sleep and lowered by the next waker. A sleeper killed
  // in its sleep leaves a raised flag: the next cursor update and the next
  // commit each pay one FUTEX_WAKE and lower it, so the hot path is back to
  // no system call when nobody sleeps.
  ScopedChannelName name("mp-waiters");
  Channel ch = make_channel(name, block_channel(4));
  const auto& producer = *shmbus::detail::state_of(ch)->producer;
  auto sub = ch.subscribe({"", StartAt::at_sequence(0)});
  REQUIRE(sub);

  // A publisher asleep on the full ring.
  Child pub_child([&] { return publish_range(name.str(), 0, 100); });
  // A subscriber asleep on an empty ring (a fresh one, at the far end).
  Child sub_child([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    auto s = c->subscribe({"", StartAt::at_sequence(1'000'000)});
    if (!s) return 11;
    (void)s->wait(kBoundNs);
    return 12;
  });
  const auto deadline = Clock::now() + kBound;
  while (producer.pub_sleeping.load(std::memory_order_acquire) == 0 ||
         producer.sub_sleeping.load(std::memory_order_acquire) == 0) {
    REQUIRE(Clock::now() < deadline);
    ::sched_yield();
  }
  REQUIRE(pub_child.kill_and_wait() == kKilled);
  REQUIRE(sub_child.kill_and_wait() == kKilled);
  REQUIRE(ch.reclaim_dead() >= 1);

  // One cursor update lowers the publishers' flag; one commit lowers the
  // subscribers' flag. Nobody is counted as sleeping any more.
  Message m;
  std::byte buf[64];
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(producer.pub_sleeping.load(std::memory_order_acquire) == 0);
  auto pub = ch.publisher();
  REQUIRE(pub);
  REQUIRE(pub->publish(bytes_of(std::uint64_t{7}), {}, 1'000'000'000ULL) == PublishStatus::ok);
  CHECK(producer.sub_sleeping.load(std::memory_order_acquire) == 0);
}

TEST_CASE("processes racing to create one durable name end with exactly one owner") {
  ScopedChannelName name("mp-durable-race");
  Channel ch = make_channel(name, block_channel(16));
  constexpr int kTrials = 20;
  constexpr int kRacers = 4;
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::string durable = "race" + std::to_string(trial);
    Event go;
    std::vector<Event> results(kRacers);
    std::vector<std::unique_ptr<Child>> racers;
    for (int r = 0; r < kRacers; ++r) {
      racers.push_back(std::make_unique<Child>([&, r]() -> int {
        auto c = Channel::open(name.str(), kTestBus);
        if (!c) return 10;
        if (!go.wait(ms_left(Clock::now() + kBound))) return 11;
        auto s = c->subscribe({durable, StartAt::earliest()});
        // 1: owner, 2: busy; anything else is a failure.
        results[static_cast<std::size_t>(r)].signal(s ? 1 : s.error().code() == ErrorCode::busy ? 2 : 3);
        pause_forever();
      }));
    }
    for (int r = 0; r < kRacers; ++r) go.signal();
    int owners = 0, busy = 0;
    for (int r = 0; r < kRacers; ++r) {
      std::uint64_t v = 0;
      REQUIRE(results[static_cast<std::size_t>(r)].wait(v, ms_left(Clock::now() + kBound)));
      owners += v == 1;
      busy += v == 2;
    }
    CHECK(owners == 1);
    CHECK(busy == kRacers - 1);
    int entries = 0;
    for (const auto& s : ch.stats().subscribers) entries += s.name == durable;
    CHECK(entries == 1);
    racers.clear();  // kill them all; the name stays, detached
    REQUIRE(ch.remove_subscriber(durable));
  }
}

TEST_CASE("a dead subscriber does not keep a reject channel full") {
  ScopedChannelName name("mp-reject-dead");
  ChannelOptions o = block_channel(4);
  o.policy = Policy::reject;
  Channel ch = make_channel(name, o);
  Event subscribed;
  Child reader([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    auto s = c->subscribe({"", StartAt::latest()});
    if (!s) return 11;
    subscribed.signal();
    pause_forever();
  });
  REQUIRE(subscribed.wait(ms_left(Clock::now() + kBound)));
  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  CHECK(pub->publish(bytes_of(std::uint64_t{4})) == PublishStatus::full);
  REQUIRE(reader.kill_and_wait() == kKilled);
  // The next full publish checks the gating reader's liveness and frees it.
  // Housekeeping is rate-limited, so allow a bounded number of tries.
  PublishStatus st = PublishStatus::full;
  const auto deadline = Clock::now() + kBound;
  while (st == PublishStatus::full && Clock::now() < deadline) st = pub->publish(bytes_of(std::uint64_t{4}));
  CHECK(st == PublishStatus::ok);
  CHECK(ch.stats().dead_reclaimed == 1);
}

TEST_CASE("a forked child dropping an inherited subscriber handle leaves the parent's subscriber alone") {
  ScopedChannelName name("mp-fork-handle");
  Channel ch = make_channel(name, block_channel(16));
  auto sub = ch.subscribe({"", StartAt::earliest()});
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  REQUIRE(pub->publish(bytes_of(std::uint64_t{1})) == PublishStatus::ok);
  Child child([&]() -> int {
    // Destroys the inherited copies of both handles (and the channel's mapping).
    sub = Error(ErrorCode::busy, "dropped in child");
    pub = Error(ErrorCode::busy, "dropped in child");
    return 0;
  });
  REQUIRE(child.wait() == 0);
  Message m;
  std::byte buf[64];
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(value_of<std::uint64_t>(m.payload) == 1);
  const ChannelStats st = ch.stats();
  REQUIRE(st.subscribers.size() == 1);
  CHECK(st.subscribers[0].alive);
  CHECK(st.publishers.size() == 1);
}

namespace {

/// The channel's producer totals, checked to never go back between snapshots.
struct ProducerTotalsWatch {
  std::uint64_t published = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t blocked_ns = 0;
  /// Takes a snapshot; its totals must not be below the previous one's.
  ChannelStats next(const Channel& ch, const char* when) {
    const ChannelStats s = ch.stats();
    INFO(when);
    CHECK(s.published >= published);
    CHECK(s.timeouts >= timeouts);
    CHECK(s.blocked_ns >= blocked_ns);
    published = s.published;
    timeouts = s.timeouts;
    blocked_ns = s.blocked_ns;
    return s;
  }
};

}  // namespace

TEST_CASE("channel producer totals never go back when a publisher exits or is killed with SIGKILL") {
  ScopedChannelName name("mp-totals");
  constexpr std::uint32_t kCapacity = 16;
  Channel ch = make_channel(name, block_channel(kCapacity));
  auto sub = ch.subscribe({"", StartAt::earliest()});  // holds the ring: nothing read yet
  REQUIRE(sub);
  auto a = ch.publisher();
  REQUIRE(a);
  ProducerTotalsWatch w;
  for (std::uint64_t i = 0; i < 3; ++i) REQUIRE(a->publish(bytes_of(i), {}, 0) == PublishStatus::ok);
  {
    auto b = ch.publisher();
    REQUIRE(b);
    for (std::uint64_t i = 3; i < kCapacity; ++i) REQUIRE(b->publish(bytes_of(i), {}, 0) == PublishStatus::ok);
    // The ring is full: one timeout each.
    REQUIRE(b->publish(bytes_of(std::uint64_t{99}), {}, 0) == PublishStatus::timeout);
    REQUIRE(a->publish(bytes_of(std::uint64_t{99}), {}, 0) == PublishStatus::timeout);
    const ChannelStats s = w.next(ch, "two publishers attached");
    CHECK(s.published == kCapacity);
    CHECK(s.timeouts == 2);
  }
  {
    const ChannelStats s = w.next(ch, "after the second publisher was destroyed");
    CHECK(s.published == kCapacity);
    CHECK(s.timeouts == 2);
    REQUIRE(s.publishers.size() == 1);
    CHECK(s.publishers[0].published == 3);  // per publisher: what the handle did
    CHECK(s.publishers[0].timeouts == 1);
  }

  // Room for 8, then a publisher in another process fills it, times out once
  // and is killed.
  Message m;
  std::byte buf[64];
  for (int i = 0; i < 8; ++i) REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  Event full;
  Child writer([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    auto p = c->publisher();
    if (!p) return 11;
    for (std::uint64_t i = 0; i < 8; ++i)
      if (p->publish(bytes_of(i), {}, 0) != PublishStatus::ok) return 12;
    if (p->publish(bytes_of(std::uint64_t{99}), {}, 0) != PublishStatus::timeout) return 13;
    full.signal();
    pause_forever();
  });
  REQUIRE(full.wait(ms_left(Clock::now() + kBound)));
  {
    const ChannelStats s = w.next(ch, "the child publisher attached");
    CHECK(s.published == kCapacity + 8);
    CHECK(s.timeouts == 3);
  }
  REQUIRE(writer.kill_and_wait() == kKilled);
  w.next(ch, "the child publisher killed, its entry not yet reclaimed");
  CHECK(ch.reclaim_dead() >= 1);
  {
    const ChannelStats s = w.next(ch, "the dead publisher's entry reclaimed");
    CHECK(s.published == kCapacity + 8);
    CHECK(s.timeouts == 3);
    CHECK(s.publishers.size() == 1);
  }

  // New publishers take the freed entries: they start at 0, the totals go on.
  for (int i = 0; i < 8; ++i) REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  auto c = ch.publisher();
  auto d = ch.publisher();
  REQUIRE((c && d));
  REQUIRE(d->publish(bytes_of(std::uint64_t{1}), {}, 0) == PublishStatus::ok);
  const ChannelStats s = w.next(ch, "two new publishers on the freed entries");
  CHECK(s.published == kCapacity + 9);
  CHECK(s.timeouts == 3);
  REQUIRE(s.publishers.size() == 3);
  std::uint64_t per_publisher_published = 0;
  std::uint64_t per_publisher_timeouts = 0;
  for (const auto& p : s.publishers) {
    per_publisher_published += p.published;
    per_publisher_timeouts += p.timeouts;
  }
  CHECK(per_publisher_published == 3 + 1);  // a's 3 and d's 1: nothing inherited
  CHECK(per_publisher_timeouts == 1);
}
