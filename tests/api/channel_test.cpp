// Creating, opening and removing channels; every bad input gets an error
// that says what is wrong.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "bus/ring/channel_state.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("create is exclusive, and open finds the channel with its parameters") {
  ScopedChannelName name;
  ChannelOptions o;
  o.capacity = 64;
  o.slot_size = 512;
  o.policy = Policy::reject;
  Channel a = make_channel(name, o);
  auto again = Channel::create(name.str(), o, kTestBus);
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == ErrorCode::already_exists);
  CHECK(contains(again.error().message(), name.str()));
  auto b = Channel::open(name.str(), kTestBus);
  REQUIRE(b);
  CHECK(b->options().capacity == 64);
  CHECK(b->options().slot_size == 512);
  CHECK(b->options().policy == Policy::reject);
  CHECK(b->max_payload() == 512 - 56);
}

TEST_CASE("opening with other parameters names both values") {
  ScopedChannelName name;
  ChannelOptions o;
  o.slot_size = 256;
  make_channel(name, o);
  ChannelOptions want = o;
  want.slot_size = 512;
  auto r = Channel::open_or_create(name.str(), want, kTestBus);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::parameter_mismatch);
  CHECK(contains(r.error().message(), "slot_size 256; asked for 512"));
  want = o;
  want.policy = Policy::drop_oldest;
  r = Channel::open_or_create(name.str(), want, kTestBus);
  REQUIRE_FALSE(r);
  CHECK(contains(r.error().message(), "policy block; asked for drop_oldest"));
  auto same = Channel::open_or_create(name.str(), o, kTestBus);
  CHECK(same);
}

TEST_CASE("open_or_create creates when absent") {
  ScopedChannelName name;
  auto r = Channel::open_or_create(name.str(), {}, kTestBus);
  REQUIRE(r);
  CHECK(Channel::open(name.str(), kTestBus));
}

TEST_CASE("a missing channel is not_found, named") {
  auto r = Channel::open("does-not-exist", kTestBus);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::not_found);
  CHECK(contains(r.error().message(), "does-not-exist"));
}

TEST_CASE("bad parameters are refused with the field named") {
  ScopedChannelName name;
  auto with = [&](auto mutate) {
    ChannelOptions o;
    mutate(o);
    return Channel::create(name.str(), o, kTestBus);
  };
  auto r = with([](ChannelOptions& o) { o.capacity = 1000; });
  CHECK(r.error().code() == ErrorCode::invalid_argument);
  CHECK(contains(r.error().message(), "capacity 1000"));
  r = with([](ChannelOptions& o) { o.slot_size = 100; });
  CHECK(contains(r.error().message(), "slot_size 100"));
  r = with([](ChannelOptions& o) { o.max_subscribers = 0; });
  CHECK(contains(r.error().message(), "max_subscribers"));
  r = with([](ChannelOptions& o) { o.policy = static_cast<Policy>(9); });
  CHECK(contains(r.error().message(), "policy"));
  r = with([](ChannelOptions& o) { o.mode = 01777; });
  CHECK(r.error().code() == ErrorCode::invalid_argument);
}

TEST_CASE("bad names are refused") {
  CHECK(Channel::create("a.b", {}, kTestBus).error().code() == ErrorCode::invalid_argument);
  CHECK(Channel::create("", {}, kTestBus).error().code() == ErrorCode::invalid_argument);
  CHECK(Channel::create(std::string(64, 'x'), {}, kTestBus).error().code() == ErrorCode::invalid_argument);
  CHECK(Channel::create("ok", {}, "bad/bus").error().code() == ErrorCode::invalid_argument);
}

TEST_CASE("a channel too large for /dev/shm fails at create with no_space") {
  ScopedChannelName name;
  ChannelOptions o;
  o.slot_size = 16u << 20;
  o.capacity = 1u << 20;  // 16 TiB: over the size limit
  auto r = Channel::create(name.str(), o, kTestBus);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::invalid_argument);
  o.capacity = 1u << 14;  // 256 GiB: within limits, but no /dev/shm holds it
  r = Channel::create(name.str(), o, kTestBus);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::no_space);
  CHECK(Channel::open(name.str(), kTestBus).error().code() == ErrorCode::not_found);
}

TEST_CASE("list and remove") {
  ScopedChannelName name;
  make_channel(name, {});
  auto l = Channel::list(kTestBus);
  REQUIRE(l);
  bool found = false;
  for (const auto& c : l.value()) found |= c.name == name.str() && c.mode == 0600;
  CHECK(found);
  REQUIRE(Channel::remove(name.str(), kTestBus));
  CHECK(Channel::remove(name.str(), kTestBus).error().code() == ErrorCode::not_found);
}

TEST_CASE("a read-only channel can be observed but not published to or subscribed") {
  ScopedChannelName name;
  Channel ch = make_channel(name, {});
  auto ro = Channel::open_read_only(name.str(), kTestBus);
  REQUIRE(ro);
  CHECK(ro->stats().head == 0);
  CHECK(ro->publisher().error().code() == ErrorCode::permission_denied);
  CHECK(ro->subscribe().error().code() == ErrorCode::permission_denied);
}

TEST_CASE("all subscriber entries taken gives a clear table_full error") {
  ScopedChannelName name;
  ChannelOptions o;
  o.max_subscribers = 2;
  o.max_publishers = 1;
  Channel ch = make_channel(name, o);
  auto a = ch.subscribe();
  auto b = ch.subscribe();
  REQUIRE((a && b));
  auto c = ch.subscribe();
  REQUIRE_FALSE(c);
  CHECK(c.error().code() == ErrorCode::table_full);
  CHECK(contains(c.error().message(), "max_subscribers"));
  auto p = ch.publisher();
  REQUIRE(p);
  auto q = ch.publisher();
  CHECK(q.error().code() == ErrorCode::table_full);
  // Dropping a handle frees its entry.
  a = Error(ErrorCode::busy, "dropped");
  CHECK(ch.subscribe());
}

TEST_CASE("permission denied names the segment and its mode") {
  if (::geteuid() != 0) {
    SUCCEED("needs root to drop to another uid; skipped");
    return;
  }
  ScopedChannelName name;
  make_channel(name, {});
  const pid_t child = fork_child([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 3;
    auto r = Channel::open(name.str(), kTestBus);
    if (r) return 1;
    if (r.error().code() != ErrorCode::permission_denied) return 2;
    return contains(r.error().message(), "0600") ? 0 : 4;
  });
  CHECK(wait_child(child) == 0);
}

TEST_CASE("the archive directory is stored in the channel, absolute, and checked on open") {
  ScopedChannelName name;
  ChannelOptions o;
  o.archive_dir = "relative/archive/";
  Channel a = make_channel(name, o);
  const std::string stored = a.options().archive_dir;
  CHECK(stored.front() == '/');
  CHECK(contains(stored, "relative/archive"));
  CHECK(stored.back() != '/');
  auto b = Channel::open(name.str(), kTestBus);
  REQUIRE(b);
  CHECK(b->options().archive_dir == stored);  // every opener finds the same archive
  ChannelOptions want = o;
  want.archive_dir = "/elsewhere";
  auto other = Channel::open_or_create(name.str(), want, kTestBus);
  REQUIRE_FALSE(other);
  CHECK(other.error().code() == ErrorCode::parameter_mismatch);
  CHECK(contains(other.error().message(), "/elsewhere"));
  want.archive_dir.clear();  // no request: any archive is accepted
  CHECK(Channel::open_or_create(name.str(), want, kTestBus));
  want.archive_dir = "relative/archive";  // resolved as the create resolved it
  CHECK(Channel::open_or_create(name.str(), want, kTestBus));
}

TEST_CASE("an archive directory that does not fit the header is refused") {
  ScopedChannelName name;
  ChannelOptions o;
  o.archive_dir = "/" + std::string(2000, 'a');
  auto r = Channel::create(name.str(), o, kTestBus);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::invalid_argument);
  CHECK(contains(r.error().message(), "archive_dir"));
}

TEST_CASE("SHMBUS_ARCHIVE_DIR gives a channel without its own directory one per bus and channel") {
  ScopedChannelName name;
  REQUIRE(::setenv("SHMBUS_ARCHIVE_DIR", "/var/tmp/shmbus-archive-test", 1) == 0);
  auto r = Channel::create(name.str(), {}, kTestBus);
  ::unsetenv("SHMBUS_ARCHIVE_DIR");
  REQUIRE(r);
  CHECK(r->options().archive_dir == "/var/tmp/shmbus-archive-test/" + std::string(kTestBus) + "/" + name.str());
  ScopedChannelName plain;
  auto p = Channel::create(plain.str(), {}, kTestBus);
  REQUIRE(p);
  CHECK(p->options().archive_dir.empty());
}
