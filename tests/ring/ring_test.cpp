// Behaviour of one channel's ring in a single process: publish and read,
// zero-copy claims, batches, start positions, and each backpressure policy at
// a full ring.
#include <catch2/catch.hpp>

#include <cstring>
#include <iterator>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "api/detail.hpp"
#include "bus/ring/publisher_core.hpp"
#include "bus/ring/slots.hpp"
#include "shm/clock.hpp"
#include "shm/tsc_clock.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

ChannelOptions small(Policy p, std::uint32_t capacity = 8) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = 128;
  o.policy = p;
  return o;
}

std::uint64_t poll_u64(Subscriber& s, PollStatus* status = nullptr) {
  Message m;
  std::byte buf[128];
  const PollStatus st = s.poll(m, buf);
  if (status != nullptr) *status = st;
  return st == PollStatus::ok ? value_of<std::uint64_t>(m.payload) : ~0ULL;
}

}  // namespace

TEST_CASE("a published message reaches a subscriber with its metadata") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block));
  auto sub = ch.subscribe();
  REQUIRE(sub);
  auto pub = ch.publisher();
  REQUIRE(pub);
  MessageMeta meta;
  meta.key = 42;
  meta.correlation_id = 7;
  meta.type = 3;
  REQUIRE(pub->publish(std::string_view("hello"), meta) == PublishStatus::ok);
  Message m;
  std::byte buf[64];
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(m.sequence == 0);
  CHECK(m.key == 42);
  CHECK(m.correlation_id == 7);
  CHECK(m.type == 3);
  CHECK(m.timestamp_ns > 0);
  CHECK(std::string(reinterpret_cast<const char*>(m.payload.data()), m.payload.size()) == "hello");
  CHECK(sub->poll(m, buf) == PollStatus::empty);
  CHECK(sub->counters().delivered == 1);
}

TEST_CASE("the message id travels apart from the key through every write and read path") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 16));
  const SubscribeOptions from_start{"", StartAt::at_sequence(0)};
  auto copied = ch.subscribe(from_start);
  auto zero_copy = ch.subscribe(from_start);
  auto batched = ch.subscribe(from_start);
  auto pub = ch.publisher();
  REQUIRE((copied && zero_copy && batched && pub));
  // Every message has key 42 (one account): only the ids tell them apart.
  const auto meta_of = [](std::uint64_t id) {
    MessageMeta m;
    m.key = 42;
    m.id = id;
    return m;
  };
  constexpr std::uint64_t kIds[] = {0xa000000000000001ULL, 0xa000000000000002ULL, 0xa000000000000003ULL,
                                    0xa000000000000004ULL, 0};
  REQUIRE(pub->publish(std::string_view("one"), meta_of(kIds[0])) == PublishStatus::ok);  // the fused publish
  const std::string two = "two", three = "three";
  const OutMessage batch[] = {{std::as_bytes(std::span(two)), meta_of(kIds[1])},
                              {std::as_bytes(std::span(three)), meta_of(kIds[2])}};
  REQUIRE(pub->publish_batch(batch) == PublishStatus::ok);
  Claim c;
  REQUIRE(pub->try_claim(8, c) == PublishStatus::ok);
  std::memcpy(c.payload.data(), "four", 4);
  REQUIRE(pub->commit(c, 4, meta_of(kIds[3])) == PublishStatus::ok);                 // claim / commit
  REQUIRE(pub->publish(std::string_view("five"), meta_of(0)) == PublishStatus::ok);  // no id

  std::byte buf[128];
  for (std::uint64_t i = 0; i < 5; ++i) {
    INFO("sequence " << i);
    Message m;
    REQUIRE(copied->poll(m, buf) == PollStatus::ok);  // copy-out poll
    CHECK((m.sequence == i && m.key == 42 && m.id == kIds[i]));
    std::uint64_t read_id = ~0ULL;
    REQUIRE(zero_copy->read([&](const Message& z) { read_id = z.id; }) == PollStatus::ok);  // zero-copy
    CHECK(read_id == kIds[i]);
    Message peeked;
    REQUIRE(ch.peek(i, peeked, buf) == PollStatus::ok);  // no cursor
    CHECK((peeked.key == 42 && peeked.id == kIds[i]));
  }
  std::vector<std::uint64_t> ids;
  CHECK(batched->read_batch([&](const Message& m) { ids.push_back(m.id); }, 2) == 2);
  Message msgs[8];
  std::byte arena[8 * 16];
  const std::size_t k = batched->poll_batch(msgs, arena);
  REQUIRE(k == 3);
  for (std::size_t i = 0; i < k; ++i) ids.push_back(msgs[i].id);
  CHECK(ids == std::vector<std::uint64_t>(std::begin(kIds), std::end(kIds)));
}

TEST_CASE("every subscriber sees every message in order (fan-out)") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 64));
  std::vector<Subscriber> subs;
  for (int i = 0; i < 4; ++i) {
    auto s = ch.subscribe();
    REQUIRE(s);
    subs.push_back(std::move(s.value()));
  }
  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t i = 0; i < 50; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  for (auto& s : subs) {
    for (std::uint64_t i = 0; i < 50; ++i) REQUIRE(poll_u64(s) == i);
    PollStatus st;
    poll_u64(s, &st);
    CHECK(st == PollStatus::empty);
  }
}

TEST_CASE("a zero-copy claim is invisible until committed and skipped when aborted") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  Claim c;
  REQUIRE(pub->try_claim(8, c) == PublishStatus::ok);
  std::uint64_t v = 11;
  std::memcpy(c.payload.data(), &v, 8);
  PollStatus st;
  poll_u64(*sub, &st);
  CHECK(st == PollStatus::empty);
  REQUIRE(pub->commit(c, 8) == PublishStatus::ok);
  CHECK(poll_u64(*sub) == 11);

  Claim aborted;
  REQUIRE(pub->try_claim(8, aborted) == PublishStatus::ok);
  pub->abort(aborted);
  REQUIRE(pub->publish(bytes_of(std::uint64_t{12})) == PublishStatus::ok);
  CHECK(poll_u64(*sub) == 12);
  CHECK(pub->commit(aborted, 8) == PublishStatus::invalid);
}

TEST_CASE("a message larger than the slot payload is refused as too_large") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block));
  auto pub = ch.publisher();
  REQUIRE(pub);
  std::vector<std::byte> big(pub->max_payload() + 1);
  CHECK(pub->publish(big) == PublishStatus::too_large);
  std::vector<std::byte> fits(pub->max_payload());
  CHECK(pub->publish(fits) == PublishStatus::ok);
}

TEST_CASE("block: a publish at a full ring times out instead of overwriting") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 4));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  CHECK(pub->publish(bytes_of(std::uint64_t{4}), {}, 1'000'000) == PublishStatus::timeout);
  CHECK(pub->publish(bytes_of(std::uint64_t{4}), {}, 0) == PublishStatus::timeout);
  REQUIRE(poll_u64(*sub) == 0);
  CHECK(pub->publish(bytes_of(std::uint64_t{4})) == PublishStatus::ok);
  for (std::uint64_t i = 1; i <= 4; ++i) CHECK(poll_u64(*sub) == i);
  const ChannelStats st = ch.stats();
  REQUIRE(st.publishers.size() == 1);
  CHECK(st.publishers[0].timeouts == 2);
  CHECK(st.publishers[0].published == 5);
  CHECK(st.subscribers[0].lost == 0);
}

TEST_CASE("reject: a publish that would overwrite unread data fails with full at once") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::reject, 4));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  CHECK(pub->publish(bytes_of(std::uint64_t{4})) == PublishStatus::full);
  CHECK(poll_u64(*sub) == 0);
  CHECK(pub->publish(bytes_of(std::uint64_t{4})) == PublishStatus::ok);
  CHECK(ch.stats().publishers[0].rejected == 1);
}

TEST_CASE("drop_oldest: a lapped subscriber skips to the oldest valid message and counts the loss") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 4));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  PollStatus st;
  poll_u64(*sub, &st);
  CHECK(st == PollStatus::lapped);
  CHECK(sub->counters().lost == 6);
  for (std::uint64_t i = 6; i < 10; ++i) CHECK(poll_u64(*sub) == i);
  CHECK(sub->counters().delivered + sub->counters().lost == 10);
}

TEST_CASE("a subscriber with no readers gating never blocks publishers") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 4));
  auto pub = ch.publisher();
  REQUIRE(pub);
  for (std::uint64_t i = 0; i < 20; ++i) REQUIRE(pub->publish(bytes_of(i), {}, 0) == PublishStatus::ok);
}

TEST_CASE("start positions: earliest, latest, a sequence, a timestamp") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 16));
  auto pub = ch.publisher();
  REQUIRE(pub);
  REQUIRE(publish_stamped(*pub, 10, 1000, 10));
  auto earliest = ch.subscribe({"", StartAt::earliest()});
  auto latest = ch.subscribe({"", StartAt::latest()});
  auto at_seq = ch.subscribe({"", StartAt::at_sequence(7)});
  auto at_time = ch.subscribe({"", StartAt::at_time(1045)});
  REQUIRE((earliest && latest && at_seq && at_time));
  CHECK(poll_u64(*earliest) == 0);
  PollStatus st;
  poll_u64(*latest, &st);
  CHECK(st == PollStatus::empty);
  CHECK(poll_u64(*at_seq) == 7);
  CHECK(poll_u64(*at_time) == 5);
}

TEST_CASE(
    "a start at a time older than the ring reports lapped with the overwritten count, as a start at "
    "an overwritten sequence does") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 4));
  auto pub = ch.publisher();
  REQUIRE(pub);
  REQUIRE(publish_stamped(*pub, 10, 1000, 10));
  REQUIRE(ch.oldest() == 6);  // 6..9 retained (times 1060..1090); 0..5 overwritten
  // Time 1005: the oldest message held (1060) is newer, and 6 messages before
  // it were overwritten, any of which may be from 1005 on.
  CHECK(ch.sequence_at(1005) == 0);  // below oldest(): a peek there says lapped
  Message m;
  std::byte buf[128];
  CHECK(ch.peek(ch.sequence_at(1005), m, buf) == PollStatus::lapped);
  auto by_time = ch.subscribe({"", StartAt::at_time(1005)});
  auto by_seq = ch.subscribe({"", StartAt::at_sequence(0)});
  REQUIRE((by_time && by_seq));
  for (Subscriber* s : {&by_time.value(), &by_seq.value()}) {
    PollStatus st;
    poll_u64(*s, &st);
    CHECK(st == PollStatus::lapped);
    CHECK(s->counters().lost == 6);
    for (std::uint64_t i = 6; i < 10; ++i) CHECK(poll_u64(*s) == i);
    CHECK(s->counters().delivered + s->counters().lost == 10);
  }
  // The loss shows in the stats at once, before any poll.
  auto late = ch.subscribe({"watcher", StartAt::at_time(0)});
  REQUIRE(late);
  bool found = false;
  for (const auto& e : ch.stats().subscribers) {
    if (e.name != "watcher") continue;
    found = true;
    CHECK(e.lost == 6);
    CHECK(e.lapped_events == 1);
  }
  CHECK(found);
}

TEST_CASE("a start at a time the ring still covers loses nothing, wrapped or not") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 4));
  auto pub = ch.publisher();
  REQUIRE(pub);
  const auto publish_at = [&](std::uint64_t i) {
    MessageMeta m;
    m.timestamp_ns = 1000 + i * 10;
    REQUIRE(pub->publish(bytes_of(i), m) == PublishStatus::ok);
  };
  for (std::uint64_t i = 0; i < 3; ++i) publish_at(i);
  // Not wrapped: a time before every message starts at 0, nothing lost.
  CHECK(ch.sequence_at(0) == 0);
  auto all = ch.subscribe({"", StartAt::at_time(0)});
  REQUIRE(all);
  PollStatus st;
  CHECK(poll_u64(*all, &st) == 0);
  CHECK(st == PollStatus::ok);
  for (std::uint64_t i = 3; i < 10; ++i) publish_at(i);
  // Wrapped, but message 6 (1060) is older than 1065: the ring holds
  // everything since then.
  CHECK(ch.sequence_at(1065) == 7);
  auto inside = ch.subscribe({"", StartAt::at_time(1065)});
  REQUIRE(inside);
  CHECK(poll_u64(*inside, &st) == 7);
  CHECK(st == PollStatus::ok);
  CHECK(inside->counters().lost == 0);
  // After the newest message: the head, nothing lost.
  CHECK(ch.sequence_at(5000) == 10);
}

TEST_CASE("batch reads deliver consecutive messages with one cursor update") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 64));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  for (std::uint64_t i = 0; i < 40; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  std::vector<std::uint64_t> seen;
  const std::size_t n =
      sub->read_batch([&](const Message& m) { seen.push_back(value_of<std::uint64_t>(m.payload)); }, 25);
  CHECK(n == 25);
  Message msgs[32];
  std::byte arena[32 * 8];
  const std::size_t k = sub->poll_batch(msgs, arena);
  REQUIRE(k == 15);
  for (std::size_t i = 0; i < k; ++i) seen.push_back(value_of<std::uint64_t>(msgs[i].payload));
  REQUIRE(seen.size() == 40);
  for (std::uint64_t i = 0; i < 40; ++i) CHECK(seen[i] == i);
  CHECK(ch.stats().subscribers[0].cursor == 40);
}

TEST_CASE(
    "a batch publish delivers every message in order, with its metadata, under consecutive "
    "sequences") {
  const Policy policy = GENERATE(Policy::block, Policy::drop_oldest, Policy::reject);
  INFO("policy " << to_string(policy));
  ScopedChannelName name;
  Channel ch = make_channel(name, small(policy, 8));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  REQUIRE(pub->publish(bytes_of(std::uint64_t{100})) == PublishStatus::ok);  // sequence 0
  std::uint64_t values[5];
  OutMessage batch[5];
  for (std::uint64_t i = 0; i < 5; ++i) {
    values[i] = 200 + i;
    batch[i].payload = std::as_bytes(std::span<const std::uint64_t>(&values[i], 1));
    batch[i].meta.key = i;
    batch[i].meta.type = 7;
  }
  batch[3].meta.timestamp_ns = 1'700'000'000'000'000'000ULL;  // a time of the caller's
  REQUIRE(pub->publish_batch(batch) == PublishStatus::ok);
  CHECK(poll_u64(*sub) == 100);
  for (std::uint64_t i = 0; i < 5; ++i) {
    Message m;
    std::byte buf[128];
    REQUIRE(sub->poll(m, buf) == PollStatus::ok);
    CHECK(m.sequence == 1 + i);
    CHECK(value_of<std::uint64_t>(m.payload) == 200 + i);
    CHECK(m.key == i);
    CHECK(m.type == 7);
    if (i == 3) {
      CHECK(m.timestamp_ns == 1'700'000'000'000'000'000ULL);
    } else {
      CHECK(m.timestamp_ns > 1'700'000'000'000'000'000ULL);
    }
  }
  CHECK(ch.stats().publishers[0].published == 6);
  CHECK(pub->publish_batch({}) == PublishStatus::ok);  // nothing to do
}

TEST_CASE("a batch publish is all or nothing at a full ring and refuses what can never fit") {
  ScopedChannelName name;
  const Policy policy = GENERATE(Policy::block, Policy::reject);
  INFO("policy " << to_string(policy));
  Channel ch = make_channel(name, small(policy, 4));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  std::uint64_t v = 1;
  const OutMessage one{std::as_bytes(std::span<const std::uint64_t>(&v, 1)), {}};
  const std::vector<OutMessage> three(3, one);
  REQUIRE(pub->publish_batch(std::span<const OutMessage>(three.data(), 2)) == PublishStatus::ok);
  // Room for 2 of the 3: nothing is published.
  const PublishStatus want = policy == Policy::block ? PublishStatus::timeout : PublishStatus::full;
  CHECK(pub->publish_batch(three, 1'000'000) == want);
  CHECK(ch.stats().head == 2);
  REQUIRE(poll_u64(*sub) == 1);
  CHECK(pub->publish_batch(three, 1'000'000) == PublishStatus::ok);  // now 3 fit
  CHECK(ch.stats().head == 5);
  // More messages than slots, or a payload past max_payload: never.
  const std::vector<OutMessage> five(5, one);
  CHECK(pub->publish_batch(five) == PublishStatus::too_large);
  std::vector<std::byte> big(pub->max_payload() + 1);
  const OutMessage too_big[] = {one, {big, {}}};
  CHECK(pub->publish_batch(too_big) == PublishStatus::too_large);
  CHECK(ch.stats().head == 5);
}

TEST_CASE("a batch claim takes consecutive slots at once, or none") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::reject, 4));
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  Claim claims[3];
  REQUIRE(pub->try_claim_batch(8, claims) == PublishStatus::ok);
  for (std::uint64_t i = 0; i < 3; ++i) {
    REQUIRE(claims[i].active);
    CHECK(claims[i].sequence == i);
    std::memcpy(claims[i].payload.data(), &i, 8);
  }
  // Committed out of order: readers still see 0, 1, 2 in sequence order,
  // and nothing past an uncommitted claim.
  REQUIRE(pub->commit(claims[2], 8) == PublishStatus::ok);
  REQUIRE(pub->commit(claims[0], 8) == PublishStatus::ok);
  CHECK(poll_u64(*sub) == 0);
  PollStatus st = PollStatus::ok;
  (void)poll_u64(*sub, &st);
  CHECK(st == PollStatus::empty);
  pub->abort(claims[1]);
  CHECK(poll_u64(*sub) == 2);
  // 3 of 4 slots free: a batch of 4 does not fit and claims nothing.
  Claim four[4];
  REQUIRE(pub->publish(bytes_of(std::uint64_t{3})) == PublishStatus::ok);
  CHECK(pub->try_claim_batch(8, four) == PublishStatus::full);
  for (const Claim& c : four) CHECK_FALSE(c.active);
  Claim five[5];
  CHECK(pub->try_claim_batch(8, five) == PublishStatus::too_large);
  CHECK(pub->try_claim_batch(pub->max_payload() + 1, std::span<Claim>(four, 1)) == PublishStatus::too_large);
}

TEST_CASE("every timestamp source reads back as realtime nanoseconds") {
  const TimestampSource source = GENERATE(TimestampSource::tsc, TimestampSource::realtime, TimestampSource::none);
  INFO("timestamps " << to_string(source));
  ScopedChannelName name;
  ChannelOptions o = small(Policy::block);
  o.timestamps = source;
  Channel ch = make_channel(name, o);
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  const std::uint64_t before = shm::realtime_ns();
  REQUIRE(pub->publish(bytes_of(std::uint64_t{1})) == PublishStatus::ok);
  MessageMeta given;
  given.timestamp_ns = 1'700'000'000'123'456'789ULL;
  REQUIRE(pub->publish(bytes_of(std::uint64_t{2}), given) == PublishStatus::ok);
  const std::uint64_t after = shm::realtime_ns();
  Message m;
  std::byte buf[128];
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  if (source == TimestampSource::none) {
    CHECK(m.timestamp_ns == 0);
  } else {
    // A counter converted on read is within the calibration's error of the
    // clock (microseconds); a millisecond either side leaves room for that.
    CHECK(m.timestamp_ns + 1'000'000 >= before);
    CHECK(m.timestamp_ns <= after + 1'000'000);
  }
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(m.timestamp_ns == given.timestamp_ns);  // a caller's time is kept as given
  // The source is a channel setting: asking for another one is a mismatch.
  ChannelOptions other = o;
  other.timestamps = source == TimestampSource::realtime ? TimestampSource::none : TimestampSource::realtime;
  auto again = Channel::open_or_create(name.str(), other, kTestBus);
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == ErrorCode::parameter_mismatch);
  CHECK(again.error().message().find("timestamps") != std::string::npos);
}

TEST_CASE("a durable subscriber resumes where it left off") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 16));
  auto pub = ch.publisher();
  REQUIRE(pub);
  {
    auto sub = ch.subscribe({"audit", StartAt::earliest()});
    REQUIRE(sub);
    CHECK_FALSE(sub->resumed());
    for (std::uint64_t i = 0; i < 5; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
    CHECK(poll_u64(*sub) == 0);
    CHECK(poll_u64(*sub) == 1);
  }
  // Detached but still gating: the ring keeps what it has not read.
  for (std::uint64_t i = 5; i < 8; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  auto again = ch.subscribe({"audit", StartAt::latest()});
  REQUIRE(again);
  CHECK(again->resumed());
  for (std::uint64_t i = 2; i < 8; ++i) CHECK(poll_u64(*again) == i);
  auto dup = ch.subscribe({"audit", StartAt::latest()});
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code() == ErrorCode::busy);
}

TEST_CASE("block with eviction: a stuck subscriber is detached as lapped and learns on its next poll") {
  ScopedChannelName name;
  ChannelOptions o = small(Policy::block, 4);
  o.eviction_timeout_ns = 20'000'000;  // 20 ms
  Channel ch = make_channel(name, o);
  auto stuck = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((stuck && pub));
  for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  // The publisher waits out the eviction bound (a deadline, not a race).
  REQUIRE(pub->publish(bytes_of(std::uint64_t{4}), {}, 2'000'000'000ULL) == PublishStatus::ok);
  CHECK(ch.stats().evictions == 1);
  PollStatus st;
  poll_u64(*stuck, &st);
  CHECK(st == PollStatus::lapped);
  CHECK(stuck->counters().lost >= 1);
  // Re-attached at the oldest valid message; reads go on.
  const std::uint64_t next = poll_u64(*stuck, &st);
  CHECK(st == PollStatus::ok);
  CHECK(next >= 1);
}

TEST_CASE("a live writer silent past the unblock timeout loses its claim, and its late commit touches nothing") {
  ScopedChannelName name;
  ChannelOptions o = small(Policy::block, 4);
  o.unblock_timeout_ns = 20'000'000;  // 20 ms
  Channel ch = make_channel(name, o);
  auto sub = ch.subscribe();
  auto slow = ch.publisher();
  auto fast = ch.publisher();
  REQUIRE((sub && slow && fast));
  Claim stalled;
  REQUIRE(slow->try_claim(8, stalled) == PublishStatus::ok);
  REQUIRE(stalled.sequence == 0);
  REQUIRE(fast->publish(bytes_of(std::uint64_t{100})) == PublishStatus::ok);
  // The reader waits out the unblock timeout (the writer is alive), then
  // skips the silent claim.
  Message m;
  std::byte buf[128];
  REQUIRE(sub->poll_wait(m, buf, 2'000'000'000ULL) == PollStatus::ok);
  CHECK(value_of<std::uint64_t>(m.payload) == 100);
  CHECK(ch.stats().abandoned == 1);
  // Lap the ring: sequence 4 (value 103) now sits in the stalled claim's
  // slot. Each message carries its value as key, to tell whose header is there.
  for (std::uint64_t i = 101; i < 105; ++i) {
    MessageMeta meta;
    meta.key = i;
    REQUIRE(fast->publish(bytes_of(i), meta) == PublishStatus::ok);
  }
  // The late commit, with another length and other metadata, learns that its
  // claim was taken and writes nothing: not the slot header of the message
  // that holds the slot now. (Payload bytes a zero-copy writer stores after
  // losing its claim would land in the newer message: docs/protocol.md,
  // "Limits".)
  MessageMeta late;
  late.key = 0xdead;
  late.correlation_id = 0xbeef;
  late.type = 77;
  late.timestamp_ns = 1;
  CHECK(slow->commit(stalled, 3, late) == PublishStatus::abandoned);
  CHECK_FALSE(stalled.active);
  for (std::uint64_t i = 101; i < 105; ++i) {
    INFO("value " << i);
    REQUIRE(sub->poll(m, buf) == PollStatus::ok);
    CHECK(m.sequence == i - 99);
    CHECK(value_of<std::uint64_t>(m.payload) == i);
    CHECK(m.payload.size() == 8);
    CHECK(m.key == i);
    CHECK(m.correlation_id == 0);
    CHECK(m.type == 0);
    CHECK(m.timestamp_ns != 1);
  }
  CHECK(sub->poll(m, buf) == PollStatus::empty);
  const ChannelStats st = ch.stats();
  CHECK(st.publishers[0].lost_claims + st.publishers[1].lost_claims == 1);
  CHECK(st.publishers[0].published + st.publishers[1].published == 5);
  REQUIRE(st.subscribers.size() == 1);
  CHECK(st.subscribers[0].lost == 0);
}

TEST_CASE("empty and moved-from handles answer invalid instead of crashing") {
  Publisher p;
  Subscriber s;
  CHECK_FALSE(p.valid());
  CHECK(p.publish(std::string_view("x")) == PublishStatus::invalid);
  Claim c;
  CHECK(p.try_claim(1, c) == PublishStatus::invalid);
  Message m;
  std::byte buf[8];
  CHECK(s.poll(m, buf) == PollStatus::invalid);
  CHECK(s.wait(0) == PollStatus::invalid);
  CHECK(s.read([](const Message&) {}) == PollStatus::invalid);
  PollStatus last = PollStatus::ok;
  CHECK(s.read_batch([](const Message&) {}, 4, &last) == 0);
  CHECK(last == PollStatus::invalid);

  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block));
  auto pub = ch.publisher();
  REQUIRE(pub);
  Publisher moved = std::move(pub.value());
  CHECK(moved.publish(std::string_view("y")) == PublishStatus::ok);
  CHECK(pub->publish(std::string_view("z")) == PublishStatus::invalid);  // NOLINT(bugprone-use-after-move)
  CHECK(ch.stats().publishers.size() == 1);
}

TEST_CASE("a copy-out poll hands out every metadata field and payload length intact") {
  ScopedChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 128));  // max_payload 72: past the 64-byte fast path
  auto sub = ch.subscribe(SubscribeOptions{"", StartAt::at_sequence(0)});
  REQUIRE(sub);
  // Through the core, for the attempt a DLQ copy carries in the size word.
  auto core = bus::PublisherCore::create(detail::state_of(ch));
  REQUIRE(core);
  const std::size_t max = ch.max_payload();
  REQUIRE(max == 72);
  std::vector<std::byte> body(max);
  for (std::size_t i = 0; i < max; ++i) body[i] = static_cast<std::byte>(0xa0 + i);
  for (std::size_t len = 0; len <= max; ++len) {
    INFO("length " << len);
    const std::uint64_t seq = len;
    MessageMeta meta;
    meta.key = 0x1111'0000'0000'0000ULL | seq;
    meta.id = 0x2222'0000'0000'0000ULL | seq;
    meta.correlation_id = 0x3333'0000'0000'0000ULL | seq;
    meta.type = 0xfeed'0000u | static_cast<std::uint32_t>(seq);
    meta.timestamp_ns = 1'700'000'000'000'000'000ULL + seq;  // the publisher's own time: read back as is
    const std::uint32_t attempt = static_cast<std::uint32_t>(len % 256);
    Claim claim;
    REQUIRE(core.value()->claim(len, claim, 0) == PublishStatus::ok);
    std::memcpy(claim.payload.data(), body.data(), len);
    REQUIRE(core.value()->commit(claim, len, meta, attempt) == PublishStatus::ok);
    Message m;
    std::vector<std::byte> buf(len + 8, std::byte{0x55});  // 8 guard bytes after the payload
    REQUIRE(sub->poll(m, std::span<std::byte>(buf.data(), len)) == PollStatus::ok);
    CHECK(m.sequence == seq);
    CHECK(m.key == meta.key);
    CHECK(m.id == meta.id);
    CHECK(m.correlation_id == meta.correlation_id);
    CHECK(m.type == meta.type);
    CHECK(m.attempt == attempt);
    CHECK(m.timestamp_ns == meta.timestamp_ns);
    REQUIRE(m.payload.size() == len);
    CHECK(m.payload.data() == buf.data());
    CHECK(std::memcmp(buf.data(), body.data(), len) == 0);
    for (std::size_t g = len; g < buf.size(); ++g) CHECK(buf[g] == std::byte{0x55});  // nothing past it
  }
  Message m;
  std::byte buf[128];
  CHECK(sub->poll(m, buf) == PollStatus::empty);
}

TEST_CASE("a reader's recent-ticks conversion equals its full one wherever it answers", "[tsc]") {
  bus::StampClock clock;
  const std::uint64_t now = shm::tsc_ticks() & ~bus::kTicksFlag;
  (void)clock.ns(bus::kTicksFlag | now);  // takes the snapshot now holds
  std::uint64_t answered = 0;
  const auto check = [&](std::uint64_t ticks) {
    const std::uint64_t stored = bus::kTicksFlag | (ticks & ~bus::kTicksFlag);
    std::uint64_t ns = 0;
    if (!clock.ns_recent(stored, ns)) return false;
    bus::StampClock full = clock;  // (a copy: ns() may take a new snapshot)
    if (ns != full.ns(stored)) FAIL("ticks " << ticks << ": recent " << ns << ", full " << full.ns(stored));
    ++answered;
    return true;
  };
  // The ticks just converted, as a message stamped now would carry: answered.
  CHECK(check(now));
  std::mt19937_64 rng(20261202);
  for (int i = 0; i < 200'000; ++i) {
    const std::uint64_t d = rng() >> (i % 64);  // every magnitude, after and before
    (void)check(now + d);
    (void)check(now - d);
  }
  INFO(answered << " answered");
  CHECK(answered > 1);
  // Realtime nanoseconds pass through.
  std::uint64_t ns = 0;
  CHECK(clock.ns_recent(1'700'000'000'000'000'000ULL, ns));
  CHECK(ns == 1'700'000'000'000'000'000ULL);
}
