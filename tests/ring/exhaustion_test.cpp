// Exhaustion: a /dev/shm that is really full (a tiny tmpfs mounted over it in
// a private mount namespace, in a forked child: needs root, skipped
// otherwise), full tables, and messages too large for their slot. Each gives
// a clear error, and nothing half-made is left behind.
// (tests/shm/segment_test.cpp and tests/api/channel_test.cpp cover a
// segment larger than any /dev/shm, which fails the same way.)
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include "bus/dedup/dedup.hpp"
#include "bus/ring/channel_state.hpp"
#include "shm/segment.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// The names in /dev/shm, sorted.
std::vector<std::string> shm_files() {
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return "[" + s + "]";
}

constexpr int kSkip = 77;  // the child could not make its tiny /dev/shm

/// Runs in a child whose /dev/shm is a fresh 512 KiB tmpfs. Returns 0 when
/// every expectation held; otherwise `say`s what did not and returns its step.
int exhaust_tiny_dev_shm(const std::function<void(const std::string&)>& say) {
  auto expect_no_space = [&](const Error& e, const std::string& what, const std::string& named) {
    if (e.code() != ErrorCode::no_space) {
      say(what + ": expected no_space, got " + std::string(to_string(e.code())) + ": " + e.message());
      return false;
    }
    if (!contains(e.message(), named) || !contains(e.message(), "reserve")) {
      say(what + ": the message does not say what did not fit: " + e.message());
      return false;
    }
    return true;
  };
  auto expect_files = [&](const std::vector<std::string>& want, const std::string& after) {
    const auto have = shm_files();
    if (have != want) {
      say("after " + after + ", /dev/shm holds " + joined(have) + ", expected " + joined(want));
      return false;
    }
    return true;
  };
  if (!expect_files({}, "mounting")) return 1;

  // 1. A channel larger than the whole tmpfs.
  ChannelOptions big;
  big.capacity = 4096;
  big.slot_size = 256;  // 1 MiB of slots
  auto r = Channel::create("big", big, kTestBus);
  if (r) {
    say("a 1 MiB channel was created in a 512 KiB /dev/shm");
    return 2;
  }
  if (!expect_no_space(r.error(), "create 'big'", "big")) return 2;
  if (!expect_files({}, "the failed create")) return 2;
  auto oc = Channel::open_or_create("big", big, kTestBus);
  if (oc || !expect_no_space(oc.error(), "open_or_create 'big'", "big")) return 3;
  if (!expect_files({}, "the failed open_or_create")) return 3;

  // 2. A channel that fits (about 270 KiB), then one that no longer does:
  // the first stays whole and usable.
  ChannelOptions fits;
  fits.capacity = 64;
  fits.slot_size = 4096;
  fits.max_groups = 1;
  auto ch = Channel::create("fits", fits, kTestBus);
  if (!ch) {
    say("create 'fits': " + ch.error().message());
    return 4;
  }
  const std::string fits_seg = bus::segment_name(kTestBus, "fits");
  auto second = Channel::create("second", fits, kTestBus);
  if (second || !expect_no_space(second.error(), "create 'second'", "second")) return 5;
  if (!expect_files({fits_seg}, "the failed create of 'second'")) return 5;
  {
    auto sub = ch->subscribe({"", StartAt::at_sequence(0)});
    auto pub = ch->publisher();
    if (!sub || !pub) return 6;
    const std::uint64_t v = 42;
    if (pub->publish(bytes_of(v)) != PublishStatus::ok) return 6;
    Message m;
    std::byte buf[64];
    if (sub->poll(m, buf) != PollStatus::ok || value_of<std::uint64_t>(m.payload) != v) {
      say("the channel that fitted does not work");
      return 6;
    }
  }

  // 3. A group whose DLQ channel (about 280 KiB) does not fit: the join
  // fails naming the DLQ, and neither the DLQ nor the group is left.
  auto con = ch->join_group("g", {});
  if (con) {
    say("a group joined although its DLQ cannot fit");
    return 7;
  }
  if (!expect_no_space(con.error(), "join_group 'g'", "fits-dlq")) return 7;
  if (!contains(con.error().message(), "DLQ of group 'g'")) {
    say("join_group: the message does not name the DLQ: " + con.error().message());
    return 7;
  }
  if (!expect_files({fits_seg}, "the failed join")) return 7;
  if (!ch->stats().groups.empty()) {
    say("a group entry was left by the failed join");
    return 7;
  }

  // 4. A dedup table, and a bare segment, that do not fit.
  DedupOptions dopts;
  dopts.capacity = 1u << 16;  // 1 MiB of entries
  auto table = DedupTable::open_or_create("dd", dopts, kTestBus);
  if (table || !expect_no_space(table.error(), "dedup table 'dd'", "dd")) return 8;
  if (!expect_files({fits_seg}, "the failed dedup table")) return 8;
  auto seg = shm::Segment::create("shmbus.shmbustest.raw", 1u << 20, 0600);
  if (seg || !expect_no_space(seg.error(), "segment 'raw'", "shmbus.shmbustest.raw")) return 9;
  if (!expect_files({fits_seg}, "the failed segment")) return 9;

  // 5. Room again once the channel is removed and unmapped.
  ch = Error(ErrorCode::busy, "dropped");
  if (!Channel::remove("fits", kTestBus)) return 10;
  auto again = Channel::create("second", fits, kTestBus);
  if (!again) {
    say("create 'second' after removing 'fits': " + again.error().message());
    return 10;
  }
  return 0;
}

struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() {
    if (::pipe(fds) != 0) FAIL("pipe: " << std::strerror(errno));
  }
  ~Pipe() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  std::string drain() {
    if (fds[1] >= 0) ::close(fds[1]);
    fds[1] = -1;
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }
};

}  // namespace

TEST_CASE(
    "a full /dev/shm fails every create with no_space naming what did not fit, and leaves no "
    "half-made segment behind") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root (CAP_SYS_ADMIN) to mount a tiny tmpfs on /dev/shm in a private mount namespace");
    return;
  }
  Pipe report;
  Child child([&]() -> int {
    auto say = [&](const std::string& s) {
      const std::string line = s + "\n";
      (void)!::write(report.fds[1], line.data(), line.size());
    };
    if (::unshare(CLONE_NEWNS) != 0) {
      say(std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno));
      return kSkip;
    }
    // Private, so the tmpfs never shows outside this child.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      say(std::string("mount --make-rprivate /: ") + std::strerror(errno));
      return kSkip;
    }
    if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=512k,mode=1777") != 0) {
      say(std::string("mount tmpfs on /dev/shm: ") + std::strerror(errno));
      return kSkip;
    }
    return exhaust_tiny_dev_shm(say);
  });
  const int rc = child.wait(std::chrono::seconds(30));
  const std::string said = report.drain();
  if (rc == kSkip) {
    WARN("skipped: " << said);
    return;
  }
  INFO(said);
  CHECK(rc == 0);
}

TEST_CASE(
    "full tables give table_full errors that name the limit and the channel, and free entries "
    "can be taken again") {
  ScopedChannelName name("exh-tables");
  struct DlqGuard {
    std::string name;
    ~DlqGuard() { (void)Channel::remove(name, kTestBus); }
  } dlq{name.str() + "-dlq"};
  ChannelOptions o;
  o.capacity = 8;
  o.slot_size = 128;
  o.max_subscribers = 2;
  o.max_publishers = 1;
  o.max_groups = 1;
  o.max_consumers = 1;
  Channel ch = make_channel(name, o);
  auto expect_full = [&](const Error& e, const std::string& limit) {
    INFO(e.message());
    CHECK(e.code() == ErrorCode::table_full);
    CHECK(contains(e.message(), limit));
    CHECK(contains(e.message(), name.str()));
  };

  auto anon = ch.subscribe();
  auto durable = ch.subscribe({"d1", StartAt::earliest()});
  REQUIRE((anon && durable));
  auto third = ch.subscribe();
  REQUIRE_FALSE(third);
  expect_full(third.error(), "max_subscribers");
  auto another_durable = ch.subscribe({"d2", StartAt::earliest()});
  REQUIRE_FALSE(another_durable);
  expect_full(another_durable.error(), "max_subscribers");

  auto pub = ch.publisher();
  REQUIRE(pub);
  auto pub2 = ch.publisher();
  REQUIRE_FALSE(pub2);
  expect_full(pub2.error(), "max_publishers");

  auto c1 = ch.join_group("g", {});
  REQUIRE(c1);
  auto c2 = ch.join_group("g", {});
  REQUIRE_FALSE(c2);
  expect_full(c2.error(), "max_consumers");
  auto h = ch.join_group("h", {});
  REQUIRE_FALSE(h);
  expect_full(h.error(), "max_groups");

  // Entries given back are taken again. A durable entry stays (detached)
  // until it is removed, so the table is still full after its handle goes.
  durable = Error(ErrorCode::busy, "dropped");
  auto still_full = ch.subscribe({"d2", StartAt::earliest()});
  REQUIRE_FALSE(still_full);
  expect_full(still_full.error(), "max_subscribers");
  REQUIRE(ch.remove_subscriber("d1"));
  CHECK(ch.subscribe({"d2", StartAt::earliest()}));
  pub = Error(ErrorCode::busy, "dropped");
  CHECK(ch.publisher());
  c1 = Error(ErrorCode::busy, "dropped");
  CHECK(ch.join_group("g", {}));
}

TEST_CASE(
    "a message larger than the slot is too_large on every publish path, and a refused commit "
    "leaves nothing for readers") {
  ScopedChannelName name("exh-large");
  ChannelOptions o;
  o.capacity = 8;
  o.slot_size = 128;
  Channel ch = make_channel(name, o);
  auto sub = ch.subscribe({"", StartAt::at_sequence(0)});
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  const std::size_t max = pub->max_payload();
  REQUIRE(max == 128 - 56);

  std::vector<std::byte> big(max + 1, std::byte{1});
  CHECK(pub->publish(big) == PublishStatus::too_large);
  Claim claim;
  CHECK(pub->try_claim(max + 1, claim) == PublishStatus::too_large);
  CHECK(pub->try_claim(SIZE_MAX, claim) == PublishStatus::too_large);
  CHECK(ch.stats().head == 0);  // none of them took a sequence

  // A claim that fits, committed with a length that does not: refused and
  // given back, so readers skip its sequence.
  REQUIRE(pub->try_claim(max, claim) == PublishStatus::ok);
  REQUIRE(claim.sequence == 0);
  CHECK(pub->commit(claim, max + 1) == PublishStatus::too_large);
  CHECK(pub->commit(claim, 8) == PublishStatus::invalid);  // it is gone
  const std::uint64_t v = 7;
  REQUIRE(pub->publish(bytes_of(v)) == PublishStatus::ok);
  Message m;
  std::byte buf[128];
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(m.sequence == 1);
  CHECK(value_of<std::uint64_t>(m.payload) == v);
  CHECK(sub->counters().lost == 0);
  const ChannelStats st = ch.stats();
  REQUIRE(st.publishers.size() == 1);
  CHECK(st.publishers[0].aborted == 1);
  CHECK(st.publishers[0].published == 1);
}
