// The edges of a channel's life, tried as an adversary would: a segment
// shrunk under live users, a create killed at any instruction, a corrupted
// init word, a name squatted by another user or by a FIFO or a symlink, and
// removal under live users. Real segments, real fork()ed peers, real
// SIGKILL; every wait is on an event (test::Event, a child's exit) with a
// bound, never a sleep that assumes a peer got somewhere first.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

constexpr std::uint64_t kBoundNs = 10'000'000'000ULL;

std::string path_of(const ScopedChannelName& n) { return "/dev/shm/" + bus::segment_name(kTestBus, n.str()); }

ChannelOptions small(Policy p = Policy::block) {
  ChannelOptions o;
  o.capacity = 16;
  o.slot_size = 128;
  o.policy = p;
  return o;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::uint64_t text_payload(Publisher& pub, const char* text) {
  return pub.publish(std::string_view(text)) == PublishStatus::ok ? 1 : 0;
}

}  // namespace

// --- 1. a shrunk segment ---------------------------------------------------

TEST_CASE("a segment truncated under its users turns into segment_lost, not SIGBUS") {
  // Both ways the issue was found: cut to the header page, and cut to where
  // the data area starts.
  for (const bool to_data : {false, true}) {
    ScopedChannelName n("shrunk");
    ScopedChannelName dlq("shrunk-dlq");
    Channel ch = make_channel(n, small());
    auto pub = ch.publisher();
    REQUIRE(pub);
    auto sub = ch.subscribe({.name = "", .start = StartAt::earliest()});
    REQUIRE(sub);
    GroupOptions go;
    go.dlq = dlq.str();
    auto consumer = ch.join_group("workers", go);
    REQUIRE(consumer);
    REQUIRE(text_payload(pub.value(), "before") == 1);

    const off_t cut = to_data ? static_cast<off_t>(shmbus::detail::state_of(ch)->geo.data_offset) : 4096;
    // Another process shrinks the file, as `truncate -s` would.
    Child cutter([&] { return ::truncate(path_of(n).c_str(), cut) == 0 ? 0 : 1; });
    REQUIRE(cutter.wait() == 0);

    std::byte buf[128];
    Message m;
    PollStatus st = sub->poll(m, buf);
    // What was committed and is still mapped may be read; once the lost pages
    // are touched, the handle reports the loss, whatever the cut.
    // (An empty poll checks every 64 polls; a changed slot at once.)
    for (int i = 0; i < 64 && st != PollStatus::segment_lost; ++i) st = sub->poll(m, buf);
    CHECK(st == PollStatus::segment_lost);
    Delivery d;
    st = consumer->receive(d, buf);
    for (int i = 0; i < 4 && st != PollStatus::segment_lost; ++i) st = consumer->receive(d, buf);
    CHECK(st == PollStatus::segment_lost);
    CHECK(pub->publish(std::string_view("after")) == PublishStatus::segment_lost);
    CHECK(ch.liveness() == PollStatus::segment_lost);
    (void)ch.stats();  // reads every table: no crash
    auto again = ch.subscribe({});
    REQUIRE_FALSE(again);
    CHECK(contains(again.error().message(), "shrank"));
  }
}

TEST_CASE("a forked subscriber blocked on a channel survives its truncation and reports it") {
  ScopedChannelName n("shrunk-peer");
  Channel ch = make_channel(n, small());
  Event ready;
  Child reader([&] {
    auto c = Channel::open(n, kTestBus);
    if (!c) return 10;
    auto s = c->subscribe({.name = "", .start = StartAt::latest()});
    if (!s) return 11;
    ready.signal();
    std::byte buf[128];
    Message m;
    const PollStatus st = s->poll_wait(m, buf, kBoundNs);
    return st == PollStatus::segment_lost ? 0 : 20 + static_cast<int>(st);
  });
  REQUIRE(ready.wait());
  REQUIRE(::truncate(path_of(n).c_str(), 0) == 0);
  // The reader sleeps on the futex in the header's page... which is gone: it
  // learns on its next slice (fstat is not needed: the first touch faults).
  CHECK(reader.wait() == 0);
}

// --- 2. a kill during create -------------------------------------------------

TEST_CASE("a create killed at any instant never leaves a name open_or_create cannot use") {
  std::mt19937 rng(0x5eed);
  ChannelOptions o;
  o.capacity = 65536;
  o.slot_size = 1024;  // 64 MiB: long enough a create for kills to land inside it
  for (int trial = 0; trial < 25; ++trial) {
    ScopedChannelName n("killed-create");
    Child creator([&] { return Channel::create(n, o, kTestBus) ? 0 : 1; });
    const auto delay = std::chrono::microseconds(std::uniform_int_distribution<int>(0, 40'000)(rng));
    const auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until && !creator.try_wait()) {
    }
    (void)creator.kill_and_wait();
    auto c = Channel::open_or_create(n, o, kTestBus);
    INFO("trial " << trial << (c ? "" : ": " + c.error().message()));
    REQUIRE(c);
    CHECK(c->options().capacity == 65536);
  }
}

TEST_CASE("a channel is not visible under its name before it is complete") {
  ScopedChannelName n("unnamed");
  auto seg = shm::Segment::create_unnamed(bus::segment_name(kTestBus, n.str()), 8192, 0600);
  REQUIRE(seg);
  struct stat st {};
  CHECK(::lstat(path_of(n).c_str(), &st) != 0);  // nothing there yet
  CHECK(Channel::open(n, kTestBus).error().code() == ErrorCode::not_found);
  REQUIRE(seg->link());
  CHECK(::lstat(path_of(n).c_str(), &st) == 0);
  // A second link of the same name fails like an exclusive create.
  auto other = shm::Segment::create_unnamed(bus::segment_name(kTestBus, n.str()), 8192, 0600);
  REQUIRE(other);
  CHECK(other->link().error().code() == ErrorCode::already_exists);
}

// --- 3. one corrupted word ------------------------------------------------------

TEST_CASE("a channel whose init word was corrupted is refused by name, never re-initialised") {
  ScopedChannelName n("init-word");
  const ChannelOptions o = small();
  // The creator exits, as `shmbus create` does.
  Child creator([&] {
    auto c = Channel::create(n, o, kTestBus);
    if (!c) return 1;
    auto p = c->publisher();
    if (!p) return 2;
    for (int i = 0; i < 20; ++i) (void)text_payload(p.value(), "m");
    auto billing = c->subscribe({.name = "billing", .start = StartAt::at_sequence(5)});
    return billing ? 0 : 3;
  });
  REQUIRE(creator.wait() == 0);
  {
    const int fd = ::open(path_of(n).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const std::uint32_t zero = 0;
    REQUIRE(::pwrite(fd, &zero, sizeof zero, 12) == 4);  // init_state
    ::close(fd);
  }
  auto c = Channel::open_or_create(n, o, kTestBus);
  REQUIRE_FALSE(c);
  CHECK(c.error().code() == ErrorCode::corrupted);
  CHECK(contains(c.error().message(), "init_state = 0"));
  // Nothing was touched: put the word back and everything is still there.
  {
    const int fd = ::open(path_of(n).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const std::uint32_t ready = bus::kInitReady;
    REQUIRE(::pwrite(fd, &ready, sizeof ready, 12) == 4);
    ::close(fd);
  }
  auto again = Channel::open_or_create(n, o, kTestBus);
  REQUIRE(again);
  CHECK(again->head() == 20);
  auto billing = again->subscribe({.name = "billing"});
  REQUIRE(billing);
  CHECK(billing->cursor() == 5);
}

TEST_CASE("an empty file under a channel's name is refused, not taken over") {
  ScopedChannelName n("empty-file");
  const int fd = ::open(path_of(n).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  auto c = Channel::open_or_create(n, small(), kTestBus);
  REQUIRE_FALSE(c);
  CHECK(c.error().code() == ErrorCode::corrupted);
  CHECK(contains(c.error().message(), "0 bytes"));
  struct stat st {};
  REQUIRE(::stat(path_of(n).c_str(), &st) == 0);
  CHECK(st.st_size == 0);  // left as found
}

// --- 4. a squatted name -------------------------------------------------------

TEST_CASE("a channel created first by another uid is refused, unless that uid is trusted") {
  if (::geteuid() != 0) {
    WARN("needs root to act as another uid; skipped");
    return;
  }
  ScopedChannelName n("squat");
  ChannelOptions o = small();
  o.mode = 0666;
  Child squatter([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 1;
    return Channel::create(n, o, kTestBus) ? 0 : 2;
  });
  REQUIRE(squatter.wait() == 0);
  auto c = Channel::open_or_create(n, o, kTestBus);
  REQUIRE_FALSE(c);
  CHECK(c.error().code() == ErrorCode::permission_denied);
  CHECK(contains(c.error().message(), "uid 65534"));
  CHECK(contains(c.error().message(), "mode 0666"));
  CHECK(contains(c.error().message(), path_of(n)));
  CHECK_FALSE(Channel::open(n, kTestBus));
  // Observing is harmless: the probe may read it.
  CHECK(Channel::open_read_only(n, kTestBus));
  // Trusted explicitly, by uid or by gid.
  ChannelOptions trusting = o;
  trusting.trust.uids = {65534};
  CHECK(Channel::open_or_create(n, trusting, kTestBus));
  Trust by_gid;
  by_gid.gids = {65534};
  CHECK(Channel::open(n, kTestBus, 2'000'000'000ULL, by_gid));
}

TEST_CASE("a symbolic link under a channel's name is never followed") {
  ScopedChannelName target("link-target");
  ScopedChannelName n("link");
  Channel real = make_channel(target, small());
  REQUIRE(::symlink(path_of(target).c_str(), path_of(n).c_str()) == 0);
  auto c = Channel::open(n, kTestBus);
  REQUIRE_FALSE(c);
  CHECK(contains(c.error().message(), "symbolic link"));
  CHECK_FALSE(Channel::open_read_only(n, kTestBus));
  CHECK_FALSE(Channel::open_or_create(n, small(), kTestBus));
  REQUIRE(Channel::remove(n, kTestBus));  // removes the link, not its target
  CHECK(Channel::open(target, kTestBus));
}

// --- 5. a FIFO ------------------------------------------------------------------

TEST_CASE("a FIFO under a channel's name is refused at once, listed, and removable") {
  ScopedChannelName n("fifo");
  REQUIRE(::mkfifo(path_of(n).c_str(), 0600) == 0);
  // In a child with an alarm: a hang fails the test instead of stalling it.
  Child opener([&] {
    ::alarm(10);
    auto rw = Channel::open(n, kTestBus);
    auto ro = Channel::open_read_only(n, kTestBus);
    auto oc = Channel::open_or_create(n, small(), kTestBus);
    if (rw || ro || oc) return 1;
    if (!contains(ro.error().message(), "fifo")) return 2;
    return 0;
  });
  CHECK(opener.wait() == 0);
  auto l = Channel::list(kTestBus);
  REQUIRE(l);
  bool listed = false;
  for (const auto& c : l.value()) listed |= c.name == n.str() && c.kind == "fifo";
  CHECK(listed);
  REQUIRE(Channel::remove(n, kTestBus));
  struct stat st {};
  CHECK(::lstat(path_of(n).c_str(), &st) != 0);
}

// --- 6. removal under live users ---------------------------------------------

TEST_CASE("a channel open in a live process, with no table entry, is never removed as unused") {
  ScopedChannelName n("in-use");
  { make_channel(n, small()); }  // the creator's handle is closed
  Event opened;
  Child holder([&] {
    auto c = Channel::open(n, kTestBus);  // no publisher, no subscriber
    if (!c) return 1;
    opened.signal();
    ::pause();
    return 0;
  });
  REQUIRE(opened.wait());
  CHECK(Channel::in_use(n, kTestBus).value());
  auto r = Channel::remove_if_unused(n, kTestBus);
  REQUIRE(r);
  CHECK_FALSE(r.value());
  REQUIRE(Channel::open_read_only(n, kTestBus));  // still there
  // Killed: the kernel drops its lock with its files.
  (void)holder.kill_and_wait();
  CHECK_FALSE(Channel::in_use(n, kTestBus).value());
  r = Channel::remove_if_unused(n, kTestBus);
  REQUIRE(r);
  CHECK(r.value());
  CHECK(Channel::open_read_only(n, kTestBus).error().code() == ErrorCode::not_found);
}

TEST_CASE("handles of a removed channel report removed and never see its successor") {
  ScopedChannelName n("removed");
  Channel ch = make_channel(n, small());
  auto pub = ch.publisher();
  REQUIRE(pub);
  Event subscribed;
  Child reader([&] {
    auto c = Channel::open(n, kTestBus);
    if (!c) return 10;
    auto s = c->subscribe({.name = "durable", .start = StartAt::earliest()});
    if (!s) return 11;
    subscribed.signal();
    std::byte buf[128];
    Message m;
    PollStatus st = s->poll_wait(m, buf, kBoundNs);
    if (st != PollStatus::ok) return 20 + static_cast<int>(st);  // "one" arrives first
    st = s->poll_wait(m, buf, kBoundNs);                         // then the removal, not a timeout
    return st == PollStatus::removed ? 0 : 30 + static_cast<int>(st);
  });
  REQUIRE(subscribed.wait());
  REQUIRE(text_payload(pub.value(), "one") == 1);
  REQUIRE(Channel::remove(n, kTestBus));
  CHECK(reader.wait() == 0);
  CHECK(pub->publish(std::string_view("two")) == PublishStatus::removed);
  CHECK(ch.liveness() == PollStatus::removed);
  CHECK_FALSE(ch.publisher());
  // A new channel of the same name is another channel.
  Channel fresh = make_channel(n, small());
  auto fresh_pub = fresh.publisher();
  REQUIRE(fresh_pub);
  CHECK(fresh_pub->publish(std::string_view("new")) == PublishStatus::ok);
  CHECK(pub->publish(std::string_view("old")) == PublishStatus::removed);
  CHECK(fresh.head() == 1);
}

TEST_CASE("a channel unlinked by hand is noticed by a waiting subscriber") {
  ScopedChannelName n("unlinked");
  Channel ch = make_channel(n, small());
  Event subscribed;
  Child reader([&] {
    auto c = Channel::open(n, kTestBus);
    if (!c) return 10;
    auto s = c->subscribe({.name = "", .start = StartAt::latest()});
    if (!s) return 11;
    subscribed.signal();
    std::byte buf[128];
    Message m;
    const PollStatus st = s->poll_wait(m, buf, kBoundNs);
    return st == PollStatus::removed ? 0 : 20 + static_cast<int>(st);
  });
  REQUIRE(subscribed.wait());
  REQUIRE(::unlink(path_of(n).c_str()) == 0);  // no header mark: only the link count says so
  CHECK(reader.wait() == 0);
  // The reader recorded it in the header for everyone.
  auto pub = ch.publisher();
  CHECK_FALSE(pub);
}

// --- 13. what a durable subscriber's crash costs (the README's summary) ------

TEST_CASE("a durable subscriber killed while handling a message loses it with poll and gets it again with read") {
  for (const bool zero_copy : {false, true}) {
    ScopedChannelName n("durable-crash");
    Channel ch = make_channel(n, small());
    auto pub = ch.publisher();
    REQUIRE(pub);
    REQUIRE(text_payload(pub.value(), "m0") == 1);
    REQUIRE(text_payload(pub.value(), "m1") == 1);
    Event handling;
    Child reader([&] {
      auto c = Channel::open(n, kTestBus);
      if (!c) return 10;
      auto s = c->subscribe({.name = "billing", .start = StartAt::earliest()});
      if (!s) return 11;
      if (zero_copy) {
        // The cursor moves after f returns: it never does.
        (void)s->read([&](const Message&) {
          handling.signal();
          for (;;) ::pause();
        });
      } else {
        std::byte buf[128];
        Message m;
        if (s->poll(m, buf) != PollStatus::ok) return 12;  // the cursor moved past m0
        handling.signal();
        for (;;) ::pause();
      }
      return 13;
    });
    REQUIRE(handling.wait());
    (void)reader.kill_and_wait();  // dies while handling m0
    auto resumed = ch.subscribe({.name = "billing"});
    REQUIRE(resumed);
    std::byte buf[128];
    Message m;
    REQUIRE(resumed->poll(m, buf) == PollStatus::ok);
    const std::string first(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    // poll: m0 was consumed before it was handled: lost to this subscriber.
    // read(f): m0 is delivered again: a duplicate for the handler.
    CHECK(first == (zero_copy ? "m0" : "m1"));
  }
}
