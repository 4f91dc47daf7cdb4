// The held-back walk of a per_key group (bus/group/ordered_stats): which
// messages wait behind an unfinished message of their key, how many keys,
// the oldest one's age, and that the walk stays inside the order window.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "api/detail.hpp"
#include "bus/group/ordered_stats.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"

#include "group_test_util.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

constexpr std::uint64_t kSecondNs = 1'000'000'000ULL;

ChannelOptions small_channel() {
  ChannelOptions o;
  o.capacity = 16;
  o.slot_size = 128;
  o.policy = Policy::block;
  return o;
}

GroupOptions ordered(std::uint32_t window = 0) {
  GroupOptions g;
  g.ordering = GroupOrdering::per_key;
  g.order_window = window;
  g.visibility_timeout_ns = 3600 * kSecondNs;  // never expires during a test
  g.max_deliveries = 5;
  return g;
}

/// Publishes one message per key of `keys`, message i stamped `t0 - (keys.size() - i)` seconds,
/// so that the first is the oldest.
void publish_keys(Publisher& pub, const std::vector<std::uint64_t>& keys, std::uint64_t t0) {
  for (std::size_t i = 0; i < keys.size(); ++i) {
    MessageMeta m;
    m.key = keys[i];
    m.timestamp_ns = t0 - (keys.size() - i) * kSecondNs;
    REQUIRE(pub.publish(bytes_of(static_cast<std::uint64_t>(i)), m) == PublishStatus::ok);
  }
}

/// The only group of `ch`'s stats.
GroupStats only_group(const Channel& ch) {
  const ChannelStats s = ch.stats();
  REQUIRE(s.groups.size() == 1);
  return s.groups[0];
}

/// The walk itself, on group 0 of `ch`.
bus::HeldBack walk(const Channel& ch) { return bus::held_back(bus::group_view(*detail::state_of(ch), 0)); }

}  // namespace

TEST_CASE("a leased key's later messages are held back, other keys are not, and the ack releases them") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small_channel());
  auto c = ch.join_group("g", ordered());
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  const std::uint64_t t0 = shm::realtime_ns();
  // Sequences 0..4: keys 7, 7, 3, 7, 5; sequence 1 (key 7) is stamped 4 s before t0.
  publish_keys(*pub, {7, 7, 3, 7, 5}, t0);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c->receive(d, buf) == PollStatus::ok);
  REQUIRE(d.sequence == 0);
  REQUIRE(d.message.key == 7);

  const GroupStats g = only_group(ch);
  CHECK(g.ordering == GroupOrdering::per_key);
  CHECK(g.order_window == 16);  // min(capacity, 4096)
  CHECK(g.held_keys == 1);      // key 7 only: 3 and 5 are free to go
  CHECK(g.held_messages == 2);  // sequences 1 and 3
  // The oldest held-back message is sequence 1, published 4 s before t0.
  CHECK(g.held_oldest_age_ns >= 4 * kSecondNs);
  CHECK(g.held_oldest_age_ns < 3600 * kSecondNs);
  const bus::HeldBack h = walk(ch);
  CHECK(h.keys == 1);
  CHECK(h.messages == 2);
  CHECK(h.oldest_publish_ns == t0 - 4 * kSecondNs);

  REQUIRE(c->ack(d) == AckStatus::ok);
  const GroupStats after = only_group(ch);
  CHECK(after.held_keys == 0);
  CHECK(after.held_messages == 0);
  CHECK(after.held_oldest_age_ns == 0);
}

TEST_CASE("while a key is held back a second consumer gets the other keys, and the count agrees") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small_channel());
  auto a = ch.join_group("g", ordered());
  auto b = ch.join_group("g", ordered());
  auto pub = ch.publisher();
  REQUIRE((a && b && pub));
  publish_keys(*pub, {7, 7, 3, 7, 5}, shm::realtime_ns());
  std::byte buf[128];
  Delivery da;
  Delivery db;
  REQUIRE(a->receive(da, buf) == PollStatus::ok);
  REQUIRE(da.sequence == 0);
  // The receive skips exactly what the walk counts as held back (1 and 3).
  REQUIRE(b->receive(db, buf) == PollStatus::ok);
  CHECK(db.sequence == 2);
  CHECK(db.message.key == 3);
  GroupStats g = only_group(ch);
  CHECK(g.in_flight == 2);
  CHECK(g.held_keys == 1);
  CHECK(g.held_messages == 2);
  // Key 7's first message finished: its second goes next, the third waits behind it.
  REQUIRE(a->ack(da) == AckStatus::ok);
  REQUIRE(a->receive(da, buf) == PollStatus::ok);
  CHECK(da.sequence == 1);
  g = only_group(ch);
  CHECK(g.held_keys == 1);
  CHECK(g.held_messages == 1);
  REQUIRE(a->ack(da) == AckStatus::ok);
  REQUIRE(b->ack(db) == AckStatus::ok);
  g = only_group(ch);
  CHECK(g.held_keys == 0);
  CHECK(g.held_messages == 0);
}

TEST_CASE("a nacked message waiting for its retry holds back its key's later messages") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small_channel());
  auto c = ch.join_group("g", ordered());
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  const std::uint64_t t0 = shm::realtime_ns();
  publish_keys(*pub, {7, 3, 7, 7}, t0);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c->receive(d, buf) == PollStatus::ok);
  REQUIRE(d.sequence == 0);
  REQUIRE(c->nack(d, 3600 * kSecondNs) == AckStatus::ok);  // due in an hour

  const GroupStats g = only_group(ch);
  CHECK(g.due == 1);
  CHECK(g.held_keys == 1);
  CHECK(g.held_messages == 2);  // sequences 2 and 3
  CHECK(walk(ch).oldest_publish_ns == t0 - 2 * kSecondNs);
}

TEST_CASE("a message being dead-lettered holds back its key, and a dead-lettered one does not") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small_channel());
  auto c = ch.join_group("g", ordered());
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  publish_keys(*pub, {9, 9}, shm::realtime_ns());
  std::byte buf[128];
  Delivery d;
  REQUIRE(c->receive(d, buf) == PollStatus::ok);
  REQUIRE(d.sequence == 0);
  // Drive sequence 0's lease word by hand through the DLQ mover's states:
  // the walk reads nothing but lease words and slots.
  const auto& st = detail::state_of(ch);
  std::atomic<std::uint64_t>& word = st->leases(0)[0];
  bus::LeaseFields lf = bus::lease_fields(shm::load_acquire(word));
  lf.state = bus::kLeaseDeadLettering;
  shm::store_release(word, bus::make_lease(lf));
  CHECK(walk(ch).messages == 1);
  CHECK(walk(ch).keys == 1);
  lf.state = bus::kLeaseDeadLettered;
  shm::store_release(word, bus::make_lease(lf));
  CHECK(walk(ch).messages == 0);
  CHECK(walk(ch).keys == 0);
}

TEST_CASE("held-back messages are counted only inside the order window") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small_channel());
  auto c = ch.join_group("g", ordered(2));
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  publish_keys(*pub, {7, 7, 7, 7, 7}, shm::realtime_ns());
  std::byte buf[128];
  Delivery d;
  REQUIRE(c->receive(d, buf) == PollStatus::ok);
  REQUIRE(d.sequence == 0);
  const GroupStats g = only_group(ch);
  CHECK(g.order_window == 2);
  CHECK(g.held_keys == 1);
  CHECK(g.held_messages == 1);  // sequence 1; 2..4 lie past floor + window
}

TEST_CASE("an unordered group reports no held-back keys") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small_channel());
  GroupOptions o = ordered();
  o.ordering = GroupOrdering::none;
  auto c = ch.join_group("g", o);
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  publish_keys(*pub, {7, 7, 7}, shm::realtime_ns());
  std::byte buf[128];
  Delivery d;
  REQUIRE(c->receive(d, buf) == PollStatus::ok);
  const GroupStats g = only_group(ch);
  CHECK(g.ordering == GroupOrdering::none);
  CHECK(g.in_flight == 1);
  CHECK(g.held_keys == 0);
  CHECK(g.held_messages == 0);
  CHECK(g.held_oldest_age_ns == 0);
}

TEST_CASE("the effective order window falls back to min(capacity, 4096) for a value no join writes") {
  CHECK(bus::effective_order_window(8, 16) == 8);
  CHECK(bus::effective_order_window(16, 16) == 16);
  CHECK(bus::effective_order_window(0, 16) == 16);
  CHECK(bus::effective_order_window(17, 16) == 16);
  CHECK(bus::effective_order_window(0, 1u << 20) == 4096);
  CHECK(bus::effective_order_window(UINT32_MAX, 1u << 20) == 4096);
}
