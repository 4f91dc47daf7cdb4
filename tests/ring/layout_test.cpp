// The shared-memory layout is an ABI: restate it here, field by field, so a
// change that moves anything fails loudly (layout.hpp also static_asserts).
#include <catch2/catch.hpp>

#include <initializer_list>
#include <string_view>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"

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
static_assert(sizeof(SlotHeader) == 56 && offsetof(SlotHeader, meta) == 16);
static_assert(offsetof(SlotHeader, meta) + offsetof(SlotMeta, key) == 16);
static_assert(offsetof(SlotHeader, meta) + offsetof(SlotMeta, id) == 24);
static_assert(offsetof(SlotHeader, meta) + offsetof(SlotMeta, correlation_id) == 32);
static_assert(offsetof(SlotHeader, meta) + offsetof(SlotMeta, type) == 40);
static_assert(offsetof(SlotHeader, meta) + offsetof(SlotMeta, size) == 44);
static_assert(offsetof(SlotHeader, meta) + offsetof(SlotMeta, timestamp) == 48);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

TEST_CASE("the hot words of the producer block sit on separate 128-byte slots") {
  auto slot_of = [](std::size_t off) { return off / kHotSlot; };
  CHECK(slot_of(offsetof(ProducerBlock, head)) != slot_of(offsetof(ProducerBlock, gate_cache)));
  CHECK(slot_of(offsetof(ProducerBlock, pub_sleeping)) != slot_of(offsetof(ProducerBlock, sub_sleeping)));
  CHECK(slot_of(offsetof(ProducerBlock, sub_sleeping)) != slot_of(offsetof(ProducerBlock, abandoned)));
  CHECK(offsetof(SubscriberEntry, cursor) % kHotSlot == 0);
}

TEST_CASE("the stamp shares the slot's first line with the metadata and 8 payload bytes") {
  CHECK(offsetof(SlotHeader, stamp) == 0);
  CHECK(offsetof(SlotHeader, writer) == 8);
  CHECK(kSlotHeaderSize + 8 == kCacheLine);  // an 8-byte message is one line
}

TEST_CASE("a slot's size word holds the length and the attempt") {
  const std::uint32_t s = pack_size(16u * 1024 * 1024 - 56, 255);
  CHECK(size_length(s) == 16u * 1024 * 1024 - 56);
  CHECK(size_attempt(s) == 255);
  CHECK(size_length(pack_size(0, 7)) == 0);
  CHECK(size_attempt(pack_size(0, 7)) == 7);
}

TEST_CASE("a stored timestamp says whether it holds counter ticks") {
  CHECK(stored_time_is_ticks(kTicksFlag | 12345));
  CHECK_FALSE(stored_time_is_ticks(1'800'000'000'000'000'000ULL));  // realtime ns, 2027
  CHECK_FALSE(stored_time_is_ticks(0));
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
  CHECK(g->groups_offset >= g->subscribers_offset + 10 * 256);
  CHECK(g->data_offset % 4096 == 0);
  CHECK(g->data_offset >= g->groups_offset + g->group_stride * g->max_groups);
  CHECK(g->total_size == g->data_offset + 1024ULL * 256);
  CHECK(g->max_payload == 256 - 56);
}

namespace {

constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;
constexpr std::uint64_t kFnvOffsetBasis = 14695981039346656037ULL;  // FNV-1a 64
// The basis layout.hpp (and dedup.hpp) start from: FNV-1a's offset basis
// without its last digit. Changing it now would change every fingerprint
// (and make this build refuse the segments of every earlier one).
constexpr std::uint64_t kFingerprintBasis = 1469598103934665603ULL;

/// FNV-1a over the little-endian bytes of each number from `basis`, written
/// here independently of layout.hpp (docs/protocol.md section 3.5).
std::uint64_t fnv1a_of_numbers(std::uint64_t basis, std::initializer_list<std::uint64_t> numbers) {
  std::uint64_t h = basis;
  for (std::uint64_t n : numbers) {
    for (int i = 0; i < 8; ++i) {
      h ^= (n >> (8 * i)) & 0xffu;
      h *= kFnvPrime;
    }
  }
  return h;
}

std::uint64_t fnv1a_of_text(std::string_view text) {
  std::uint64_t h = kFnvOffsetBasis;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

}  // namespace

TEST_CASE("the ABI fingerprint hashes the layout numbers that protocol.md lists, in its order") {
  // The step is FNV-1a's (published test vectors for the standard basis).
  CHECK(fnv1a_of_text("") == 0xcbf29ce484222325ULL);
  CHECK(fnv1a_of_text("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(fnv1a_of_text("foobar") == 0x85944171f73967e8ULL);
  // The numbers, in the documented order, as this layout has them. A change
  // to any of them changes the fingerprint, so builds with the old and the
  // new layout refuse each other's segments: update these numbers together
  // with layout.hpp, docs/protocol.md and (for an incompatible change)
  // kLayoutVersion.
  const std::uint64_t documented = fnv1a_of_numbers(kFingerprintBasis, {
                                                                           5,     // kLayoutVersion
                                                                           4096,  // sizeof(ChannelHeader)
                                                                           512,   // sizeof(ProducerBlock)
                                                                           128,   // sizeof(PublisherEntry)
                                                                           256,   // sizeof(SubscriberEntry)
                                                                           56,    // sizeof(SlotHeader)
                                                                           40,    // sizeof(SlotMeta)
                                                                           640,   // sizeof(GroupEntry)
                                                                           64,    // sizeof(ConsumerEntry)
                                                                           384,   // offsetof(GroupEntry, floor)
                                                                           160,   // offsetof(ChannelHeader, name)
                                                                           260,   // offsetof(ProducerBlock, sub_futex)
                                                                           128,   // offsetof(SubscriberEntry, cursor)
                                                                           16,    // offsetof(SlotHeader, meta)
                                                                           8,     // offsetof(SlotMeta, id)
                                                                           28,    // offsetof(SlotMeta, size)
                                                                           32,    // offsetof(SlotMeta, timestamp)
                                                                           128,   // offsetof(ChannelHeader, timestamps)
                                                                           240,  // offsetof(ChannelHeader, archive_dir)
                                                                           64,   // kCacheLine
                                                                           128,  // kHotSlot
                                                                       });
  CHECK(abi_fingerprint() == documented);
  // The same numbers as this build computes them.
  CHECK(abi_fingerprint() == fnv1a_of_numbers(kFingerprintBasis, {kLayoutVersion,
                                                                  sizeof(ChannelHeader),
                                                                  sizeof(ProducerBlock),
                                                                  sizeof(PublisherEntry),
                                                                  sizeof(SubscriberEntry),
                                                                  sizeof(SlotHeader),
                                                                  sizeof(SlotMeta),
                                                                  sizeof(GroupEntry),
                                                                  sizeof(ConsumerEntry),
                                                                  offsetof(GroupEntry, floor),
                                                                  offsetof(ChannelHeader, name),
                                                                  offsetof(ProducerBlock, sub_futex),
                                                                  offsetof(SubscriberEntry, cursor),
                                                                  offsetof(SlotHeader, meta),
                                                                  offsetof(SlotMeta, id),
                                                                  offsetof(SlotMeta, size),
                                                                  offsetof(SlotMeta, timestamp),
                                                                  offsetof(ChannelHeader, timestamps),
                                                                  offsetof(ChannelHeader, archive_dir),
                                                                  kCacheLine,
                                                                  kHotSlot}));
}
