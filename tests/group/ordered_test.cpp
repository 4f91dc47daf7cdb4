// Ordered (per_key) consumer groups in one process: a key's messages go one
// at a time in sequence order, while other keys flow; every way a message
// stays in progress (leased, nacked, expired, its consumer gone, on its way
// to the DLQ) holds back its key only; the window bound; batches; the
// settings at join and in the C API; a drop_oldest lap.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include <signal.h>

#include <shmbus/shmbus.h>

#include "bus/group/consumer_core.hpp"
#include "shm/clock.hpp"

#include "group_test_util.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

GroupOptions ordered(std::uint32_t max_deliveries = 5, std::uint64_t visibility_ms = 5'000, std::uint32_t window = 0) {
  GroupOptions g;
  g.visibility_timeout_ns = visibility_ms * 1'000'000;
  g.max_deliveries = max_deliveries;
  g.backoff_base_ns = 1'000'000;
  g.backoff_cap_ns = 8'000'000;
  g.ordering = GroupOrdering::per_key;
  g.order_window = window;
  return g;
}

Consumer join(Channel& ch, const GroupOptions& g) {
  auto c = ch.join_group("g", g);
  REQUIRE(c);
  return std::move(c.value());
}

Publisher publisher(Channel& ch) {
  auto p = ch.publisher();
  REQUIRE(p);
  return std::move(p.value());
}

/// Publishes one message per key in `keys`, its payload its index.
void publish_keys(Publisher& pub, const std::vector<std::uint64_t>& keys) {
  for (std::uint64_t i = 0; i < keys.size(); ++i) {
    MessageMeta m;
    m.key = keys[i];
    REQUIRE(pub.publish(bytes_of(i), m) == PublishStatus::ok);
  }
}

/// Receives one delivery, which must be there.
Delivery take(Consumer& c) {
  static std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  return d;
}

/// Waits (up to 5 s) for one delivery, which must come.
Delivery take_wait(Consumer& c) {
  static std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive_wait(d, buf, 5'000'000'000ULL) == PollStatus::ok);
  return d;
}

PollStatus poll_once(Consumer& c) {
  std::byte buf[128];
  Delivery d;
  return c.receive(d, buf);
}

}  // namespace

TEST_CASE("per_key: a key's next message waits while its first is leased, and other keys flow") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer a = join(ch, ordered());
  Consumer b = join(ch, ordered());
  Publisher pub = publisher(ch);
  publish_keys(pub, {7, 7, 8, 7});
  const Delivery first = take(a);
  CHECK(first.sequence == 0);
  CHECK(first.message.key == 7);
  // b skips key 7's second message: the key is in progress at a.
  const Delivery other = take(b);
  CHECK(other.sequence == 2);
  CHECK(other.message.key == 8);
  CHECK(poll_once(b) == PollStatus::empty);
  CHECK(poll_once(a) == PollStatus::empty);
  REQUIRE(a.ack(first) == AckStatus::ok);
  const Delivery second = take(b);
  CHECK(second.sequence == 1);
  CHECK(poll_once(a) == PollStatus::empty);  // sequence 3 waits for sequence 1
  REQUIRE(b.ack(second) == AckStatus::ok);
  REQUIRE(b.ack(other) == AckStatus::ok);
  const Delivery third = take(a);
  CHECK(third.sequence == 3);
  REQUIRE(a.ack(third) == AckStatus::ok);
  const ChannelStats st = ch.stats();
  CHECK(st.groups[0].floor == 4);
  CHECK(st.groups[0].next == 4);
  CHECK(st.groups[0].acked == 4);
}

TEST_CASE("per_key: a nack holds back only its key, and the redelivery comes before the key's next message") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer c = join(ch, ordered());
  Publisher pub = publisher(ch);
  publish_keys(pub, {1, 1, 2});
  const Delivery d0 = take(c);
  REQUIRE(c.nack(d0, 30'000'000) == AckStatus::ok);
  // Key 2 flows while key 1 waits for its retry.
  const Delivery d2 = take(c);
  CHECK(d2.sequence == 2);
  REQUIRE(c.ack(d2) == AckStatus::ok);
  // Sequence 1 is free but held back: what comes next is the retry.
  const Delivery again = take_wait(c);
  CHECK(again.sequence == 0);
  CHECK(again.attempt == 2);
  CHECK(poll_once(c) == PollStatus::empty);  // sequence 1 still waits
  REQUIRE(c.ack(again) == AckStatus::ok);
  const Delivery d1 = take(c);
  CHECK(d1.sequence == 1);
  CHECK(d1.attempt == 1);
  REQUIRE(c.ack(d1) == AckStatus::ok);
  CHECK(ch.stats().groups[0].redelivered == 1);
}

TEST_CASE("per_key: an expired lease is redelivered with attempt + 1 before the key's next message") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer c = join(ch, ordered(5, 20));
  Publisher pub = publisher(ch);
  publish_keys(pub, {3, 3});
  const Delivery first = take(c);
  // Wait out the lease (its deadline): the redelivery, not sequence 1, comes.
  const Delivery again = take_wait(c);
  CHECK(again.sequence == 0);
  CHECK(again.attempt == 2);
  CHECK(c.ack(first) == AckStatus::lease_lost);
  REQUIRE(c.ack(again) == AckStatus::ok);
  const Delivery next = take(c);
  CHECK(next.sequence == 1);
  REQUIRE(c.ack(next) == AckStatus::ok);
  CHECK(ch.stats().groups[0].expired == 1);
}

TEST_CASE("per_key: a consumer that leaves with a message gives it back first in its key") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer b = join(ch, ordered());
  Publisher pub = publisher(ch);
  publish_keys(pub, {5, 5, 6});
  {
    Consumer a = join(ch, ordered());
    const Delivery held = take(a);
    CHECK(held.sequence == 0);
    CHECK(take(b).sequence == 2);
    CHECK(poll_once(b) == PollStatus::empty);
  }  // a leaves without acking: its lease is due at once
  const Delivery back = take_wait(b);
  CHECK(back.sequence == 0);
  CHECK(back.attempt == 2);
  CHECK(poll_once(b) == PollStatus::empty);
  REQUIRE(b.ack(back) == AckStatus::ok);
  CHECK(take(b).sequence == 1);
}

TEST_CASE("per_key: a poison message blocks its key until it is dead-lettered, then the key flows") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Publisher pub = publisher(ch);
  SECTION("by nacks") {
    Consumer c = join(ch, ordered(2));
    publish_keys(pub, {9, 9});
    const Delivery d1 = take(c);
    REQUIRE(c.nack(d1, 0) == AckStatus::ok);
    const Delivery d2 = take_wait(c);
    CHECK(d2.sequence == 0);
    CHECK(d2.attempt == 2);
    CHECK(poll_once(c) == PollStatus::empty);
    REQUIRE(c.nack(d2, 0) == AckStatus::ok);  // the last attempt: to the DLQ now
    const Delivery next = take(c);
    CHECK(next.sequence == 1);
    CHECK(next.attempt == 1);
  }
  SECTION("by an expired last lease, moved to the DLQ by the scan") {
    Consumer c = join(ch, ordered(1, 20));
    publish_keys(pub, {9, 9});
    CHECK(take(c).sequence == 0);
    // Its lease expires on its last attempt: the scan moves it to the DLQ,
    // and sequence 1 is the next delivery.
    const Delivery next = take_wait(c);
    CHECK(next.sequence == 1);
    CHECK(ch.stats().groups[0].expired == 1);
  }
  const ChannelStats st = ch.stats();
  CHECK(st.groups[0].dead_lettered == 1);
  DlqReader dlq(name.dlq());
  const bus::DlqRecord rec = dlq.next(sizeof(std::uint64_t));
  CHECK(rec.original_sequence == 0);
  CHECK(dlq.message().key == 9);
}

TEST_CASE("per_key: a receive looks at most order_window sequences past the floor") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer c = join(ch, ordered(5, 5'000, 4));
  Publisher pub = publisher(ch);
  publish_keys(pub, {1, 1, 1, 1, 2});
  const Delivery d0 = take(c);
  // Sequence 4 (key 2) is free but beyond the window [0, 4).
  CHECK(poll_once(c) == PollStatus::empty);
  REQUIRE(c.ack(d0) == AckStatus::ok);
  const Delivery d1 = take(c);
  CHECK(d1.sequence == 1);
  const Delivery d4 = take(c);  // now within [1, 5)
  CHECK(d4.sequence == 4);
  CHECK(ch.stats().groups[0].next == 5);
}

TEST_CASE("per_key: a batch receive hands out at most one message per key") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer c = join(ch, ordered());
  Publisher pub = publisher(ch);
  publish_keys(pub, {1, 1, 2, 2, 3, 1});
  Delivery ds[8];
  std::byte arena[8 * 8];
  PollStatus last = PollStatus::invalid;
  REQUIRE(c.receive_batch(ds, arena, &last) == 3);
  CHECK(last == PollStatus::ok);
  CHECK(ds[0].sequence == 0);
  CHECK(ds[1].sequence == 2);
  CHECK(ds[2].sequence == 4);
  CHECK(value_of<std::uint64_t>(ds[1].message.payload) == 2);
  CHECK(ch.stats().groups[0].delivered == 3);
  REQUIRE(c.ack_batch(std::span<const Delivery>(ds, 3)) == 3);
  REQUIRE(c.receive_batch(ds, arena, &last) == 2);
  CHECK(ds[0].sequence == 1);
  CHECK(ds[1].sequence == 3);
  REQUIRE(c.ack_batch(std::span<const Delivery>(ds, 2)) == 2);
  REQUIRE(c.receive_batch(ds, arena, &last) == 1);
  CHECK(ds[0].sequence == 5);
  REQUIRE(c.ack(ds[0]) == AckStatus::ok);
  CHECK(c.receive_batch(ds, arena, &last) == 0);
  CHECK(last == PollStatus::empty);
}

TEST_CASE("per_key: the ordering and the window are settings of the group") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Consumer c = join(ch, ordered());
  GroupOptions unordered = ordered();
  unordered.ordering = GroupOrdering::none;
  auto other = ch.join_group("g", unordered);
  REQUIRE_FALSE(other);
  CHECK(other.error().code() == ErrorCode::parameter_mismatch);
  // 0 resolves to min(capacity, 4096) = 16, the value stored.
  auto same = ch.join_group("g", ordered(5, 5'000, 16));
  CHECK(same);
  auto narrower = ch.join_group("g", ordered(5, 5'000, 8));
  REQUIRE_FALSE(narrower);
  CHECK(narrower.error().code() == ErrorCode::parameter_mismatch);
  auto too_wide = ch.join_group("h", ordered(5, 5'000, 17));
  REQUIRE_FALSE(too_wide);
  CHECK(too_wide.error().code() == ErrorCode::invalid_argument);
  CHECK(too_wide.error().message().find("order_window 17") != std::string::npos);
}

TEST_CASE("per_key: the C API sets the ordering and the window, and reads a first-version struct") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  Publisher pub = publisher(ch);
  shmbus_channel* cch = nullptr;
  REQUIRE(shmbus_channel_open(kTestBus, name.str().c_str(), 0, &cch) == SHMBUS_OK);
  shmbus_group_options o;
  REQUIRE(shmbus_group_options_init(&o, sizeof o) == SHMBUS_OK);
  CHECK(o.ordering == SHMBUS_ORDERING_NONE);
  CHECK(o.order_window == 0);
  o.ordering = SHMBUS_ORDERING_PER_KEY;
  o.order_window = 32;  // more than the capacity
  shmbus_consumer* c = nullptr;
  CHECK(shmbus_group_join(cch, "g", &o, &c) == SHMBUS_INVALID_ARGUMENT);
  o.ordering = 7;
  o.order_window = 0;
  CHECK(shmbus_group_join(cch, "g", &o, &c) == SHMBUS_INVALID_ARGUMENT);
  // A caller built against the first version (64 bytes, no order_window).
  o.ordering = SHMBUS_ORDERING_PER_KEY;
  o.struct_size = 64;
  REQUIRE(shmbus_group_join(cch, "g", &o, &c) == SHMBUS_OK);
  publish_keys(pub, {4, 4});
  std::byte buf[128];
  shmbus_delivery d;
  REQUIRE(shmbus_consumer_receive(c, &d, buf, sizeof buf) == SHMBUS_OK);
  CHECK(d.sequence == 0);
  shmbus_delivery held_back;
  CHECK(shmbus_consumer_receive(c, &held_back, buf, sizeof buf) == SHMBUS_EMPTY);
  // Joining the same group unordered is refused.
  o.ordering = SHMBUS_ORDERING_NONE;
  shmbus_consumer* c2 = nullptr;
  CHECK(shmbus_group_join(cch, "g", &o, &c2) == SHMBUS_PARAMETER_MISMATCH);
  REQUIRE(shmbus_consumer_ack(c, &d) == SHMBUS_OK);
  REQUIRE(shmbus_consumer_receive(c, &d, buf, sizeof buf) == SHMBUS_OK);
  CHECK(d.sequence == 1);
  shmbus_consumer_free(c);
  shmbus_channel_close(cch);
}

TEST_CASE("per_key: a drop_oldest lap loses what was overwritten, and the group goes on in order") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest));
  Consumer c = join(ch, ordered());
  Publisher pub = publisher(ch);
  std::vector<std::uint64_t> keys;
  for (std::uint64_t i = 0; i < 20; ++i) keys.push_back(i % 3);
  publish_keys(pub, keys);  // 0..3 are overwritten before anybody reads them
  std::vector<std::uint64_t> got;
  for (;;) {
    std::byte buf[128];
    Delivery d;
    const PollStatus st = c.receive(d, buf);
    if (st == PollStatus::empty) break;
    REQUIRE(st == PollStatus::ok);
    got.push_back(d.sequence);
    REQUIRE(c.ack(d) == AckStatus::ok);
  }
  REQUIRE(got.size() == 16);
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == 4 + i);
  ChannelStats st = ch.stats();
  CHECK(st.groups[0].lost == 4);
  CHECK(st.groups[0].floor == 20);
  // A message leased when the ring laps it no longer holds its key back:
  // the floor passes over what was overwritten.
  MessageMeta m;
  m.key = 1;
  REQUIRE(pub.publish(bytes_of(std::uint64_t{100}), m) == PublishStatus::ok);
  const Delivery held = take(c);
  CHECK(held.sequence == 20);
  for (std::uint64_t i = 0; i < 16; ++i) REQUIRE(pub.publish(bytes_of(i), m) == PublishStatus::ok);
  const Delivery after = take(c);
  CHECK(after.sequence == 21);
  CHECK(after.message.key == 1);
}

TEST_CASE("per_key: a consumer killed with a message in hand has it redelivered before the key's next message") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  // A minute-long lease: only the holder's death can free the message here.
  const GroupOptions g = ordered(5, 60'000);
  Consumer survivor = join(ch, g);
  Publisher pub = publisher(ch);
  publish_keys(pub, {11, 11, 12});
  Child holder([&]() -> int {
    auto mine = Channel::open(name.str(), kTestBus);
    if (!mine) return 1;
    auto c = mine->join_group("g", g);
    if (!c) return 2;
    std::byte buf[128];
    Delivery d;
    if (c->receive(d, buf) != PollStatus::ok || d.sequence != 0) return 3;
    raise(SIGKILL);  // dies holding the lease on sequence 0
    return 4;
  });
  REQUIRE(holder.wait() == 128 + SIGKILL);
  // Key 11's first message comes back (attempt 2) and key 12's flows, in
  // either order: judging the dead holder makes its lease due at the
  // releaser's clock, which a scan that read its clock a little earlier
  // may see as not yet due, and then hands out key 12's message first.
  const Delivery first = take_wait(survivor);
  const Delivery second = first.sequence == 0 ? take(survivor) : take_wait(survivor);
  const Delivery& again = first.sequence == 0 ? first : second;
  const Delivery& other = first.sequence == 0 ? second : first;
  CHECK(again.sequence == 0);
  CHECK(again.attempt == 2);
  CHECK(other.sequence == 2);  // key 11's next message still waits
  CHECK(poll_once(survivor) == PollStatus::empty);
  REQUIRE(survivor.ack(again) == AckStatus::ok);
  CHECK(take(survivor).sequence == 1);
}
