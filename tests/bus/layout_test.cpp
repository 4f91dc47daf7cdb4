// The shared-memory layout is an ABI: restate it here, field by field, so a
// change that moves anything fails loudly (layout.hpp also static_asserts).
#include <catch2/catch.hpp>

#include <shmbus/bus/channel_state.hpp>
#include <shmbus/bus/layout.hpp>

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::bus;

static_assert(sizeof(ChannelHeader) == 4096 && alignof(ChannelHeader) == 8);
static_assert(offsetof(ChannelHeader, magic) == 0 && offsetof(ChannelHeader, name) == 160);
static_assert(sizeof(ProducerBlock) == 512 && offsetof(ProducerBlock, gate_cache) == 128);
static_assert(offsetof(ProducerBlock, sub_sleeping) == 256 && offsetof(ProducerBlock, abandoned) == 384);
static_assert(sizeof(PublisherEntry) == 128 && offsetof(PublisherEntry, published) == 16);
static_assert(sizeof(SubscriberEntry) == 256 && offsetof(SubscriberEntry, cursor) == 128);
static_assert(offsetof(SubscriberEntry, name) == 32 && offsetof(SubscriberEntry, lost) == 144);
static_assert(sizeof(SlotHeader) == 48 && offsetof(SlotHeader, length) == 32);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

TEST_CASE("the hot words of the producer block sit on separate 128-byte slots") {
  auto slot_of = [](std::size_t off) { return off / kHotSlot; };
  CHECK(slot_of(offsetof(ProducerBlock, head)) != slot_of(offsetof(ProducerBlock, gate_cache)));
  CHECK(slot_of(offsetof(ProducerBlock, pub_sleeping)) != slot_of(offsetof(ProducerBlock, sub_sleeping)));
  CHECK(slot_of(offsetof(ProducerBlock, sub_sleeping)) != slot_of(offsetof(ProducerBlock, abandoned)));
  CHECK(offsetof(SubscriberEntry, cursor) % kHotSlot == 0);
}

TEST_CASE("stamps encode a sequence and a state in one word") {
  const std::uint64_t s = make_stamp(123456789, kStampCommitted);
  CHECK(stamp_seq(s) == 123456789);
  CHECK(stamp_state(s) == kStampCommitted);
  CHECK(stamp_seq(make_stamp(kMaxSequence, kStampAbandoned)) == kMaxSequence);
  CHECK(make_stamp(0, kStampEmpty) == 0);  // a fresh (zeroed) slot is empty
}

TEST_CASE("control words hold a state and an owner pid") {
  const std::uint64_t c = make_control(kEntryActive, 4242);
  CHECK(control_state(c) == kEntryActive);
  CHECK(control_pid(c) == 4242);
}

TEST_CASE("the geometry lays regions out in order, aligned, data on a page boundary") {
  ChannelOptions o;
  o.capacity = 1024;
  o.slot_size = 256;
  o.max_subscribers = 10;
  o.max_publishers = 3;
  auto g = compute_geometry(o);
  REQUIRE(g);
  CHECK(g->producer_offset == 4096);
  CHECK(g->publishers_offset == 4096 + 512);
  CHECK(g->subscribers_offset == g->publishers_offset + 3 * 128);
  CHECK(g->subscribers_offset % kHotSlot == 0);
  CHECK(g->stamps_offset >= g->subscribers_offset + 10 * 256);
  CHECK(g->data_offset % 4096 == 0);
  CHECK(g->data_offset >= g->stamps_offset + 1024 * sizeof(SlotControl));
  CHECK(g->total_size == g->data_offset + 1024ULL * 256);
  CHECK(g->max_payload == 256 - 48);
}

TEST_CASE("the ABI fingerprint is stable within a build") {
  CHECK(abi_fingerprint() == abi_fingerprint());
  CHECK(abi_fingerprint() != 0);
}
