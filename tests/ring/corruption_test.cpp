// A corrupted or hostile segment yields an error or a counted skip, never an
// out-of-bounds access or a crash (run under AddressSanitizer too). Also the
// initialisation hand-shake: bounded waits and take-over of a dead creator.
#include <catch2/catch.hpp>

#include <regex>

#include <fcntl.h>
#include <sys/mman.h>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "shm/liveness.hpp"
#include "shm/segment.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::bus;
using namespace shmbus::test;

namespace {

ChannelOptions small() {
  ChannelOptions o;
  o.capacity = 8;
  o.slot_size = 128;
  return o;
}

// A writable view of a channel's segment, as a hostile process has (or a
// creator that has not finished its initialisation).
struct RawView {
  shm::Segment seg;
  shm::Mapping map;
  ChannelHeader* hdr = nullptr;

  /// Maps the whole segment of the existing channel `name`.
  explicit RawView(const ScopedChannelName& name) {
    auto s = shm::Segment::open(segment_name(kTestBus, name.str()), shm::Access::read_write);
    REQUIRE(s);
    seg = std::move(s.value());
    map_first(seg.size().value());
  }

  /// Creates the segment of channel `name`, sized for small(), and maps its
  /// header page only: what a creator has before its initialisation ends.
  static RawView unfinished(const ScopedChannelName& name) { return RawView(name, small()); }

 private:
  RawView(const ScopedChannelName& name, const ChannelOptions& o) {
    auto g = compute_geometry(o);
    REQUIRE(g);
    auto s = shm::Segment::create(segment_name(kTestBus, name.str()), g->total_size, 0600);
    REQUIRE(s);
    seg = std::move(s.value());
    map_first(kHeaderPage);
  }

  /// Maps the first `bytes` of the segment, writable, and points hdr there.
  void map_first(std::size_t bytes) {
    auto m = seg.map(0, bytes, shm::Access::read_write, false);
    REQUIRE(m);
    map = std::move(m.value());
    hdr = reinterpret_cast<ChannelHeader*>(map.data());
  }
};

/// A channel in use: its handle, a subscriber and a publisher.
struct LiveChannel {
  Channel ch;
  Subscriber sub;
  Publisher pub;
};

/// Creates channel `name` (small()) with a subscriber and a publisher; fails
/// the test if any of them fails.
LiveChannel make_live_channel(const ScopedChannelName& name) {
  Channel ch = make_channel(name, small());
  auto sub = ch.subscribe();
  auto pub = ch.publisher();
  REQUIRE((sub && pub));
  return {std::move(ch), std::move(sub.value()), std::move(pub.value())};
}

std::string open_error(const ScopedChannelName& name, ErrorCode expect) {
  auto r = Channel::open(name.str(), kTestBus, 50'000'000);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == expect);
  return r.error().message();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a header with bad magic is refused as corrupted") {
  ScopedChannelName name;
  make_channel(name, small());
  RawView v(name);
  v.hdr->magic.store(0x1234);
  CHECK(contains(open_error(name, ErrorCode::corrupted), "magic"));
}

TEST_CASE("a segment of another layout version is refused with both versions named") {
  ScopedChannelName name;
  make_channel(name, small());
  RawView v(name);
  v.hdr->layout_version.store(kLayoutVersion + 1);
  const std::string msg = open_error(name, ErrorCode::version_mismatch);
  CHECK(contains(msg, "layout version " + std::to_string(kLayoutVersion + 1)));
  CHECK(contains(msg, "reads version " + std::to_string(kLayoutVersion)));
}

TEST_CASE("out-of-range header fields are refused with the field named") {
  ScopedChannelName name;
  make_channel(name, small());
  RawView v(name);
  SECTION("capacity not a power of two") {
    v.hdr->capacity = 7;
    CHECK(contains(open_error(name, ErrorCode::corrupted), "capacity 7"));
  }
  SECTION("capacity larger than the segment") {
    v.hdr->capacity = 1u << 20;
    // A field that follows from the capacity is named, with the value the
    // header holds and the one the capacity implies (or the segment's size).
    const std::string msg = open_error(name, ErrorCode::corrupted);
    INFO(msg);
    CHECK(contains(msg, "channel '" + name.str() + "' is corrupted: "));
    CHECK(std::regex_search(msg, std::regex("(capacity|group_stride|total_size|groups_offset|"
                                            "data_offset) = [0-9]+ (\\(expected [0-9]+\\)|exceeds the "
                                            "segment's size [0-9]+)")));
  }
  SECTION("an offset pointing elsewhere") {
    v.hdr->data_offset = 12;
    CHECK(contains(open_error(name, ErrorCode::corrupted), "data_offset"));
  }
  SECTION("a slot size that is not a multiple of 64") {
    v.hdr->slot_size = 100;
    CHECK(contains(open_error(name, ErrorCode::corrupted), "slot_size"));
  }
  SECTION("an unknown policy") {
    v.hdr->policy = 77;
    CHECK(contains(open_error(name, ErrorCode::corrupted), "policy"));
  }
  SECTION("an ABI fingerprint of another build") {
    v.hdr->abi_fingerprint ^= 1;
    CHECK(contains(open_error(name, ErrorCode::version_mismatch), "fingerprint"));
  }
}

TEST_CASE("a slot with an impossible length is skipped, counted as lost, never read past its end") {
  ScopedChannelName name;
  auto [ch, sub, pub] = make_live_channel(name);
  REQUIRE(pub.publish(bytes_of(std::uint64_t{1})) == PublishStatus::ok);
  REQUIRE(pub.publish(bytes_of(std::uint64_t{2})) == PublishStatus::ok);
  RawView v(name);
  auto* slot0 = reinterpret_cast<SlotHeader*>(v.map.data() + v.hdr->data_offset);
  slot0->meta.size = kSizeLengthMask;  // a length past max_payload
  Message m;
  std::byte buf[128];
  CHECK(sub.poll(m, buf) == PollStatus::corrupted);
  CHECK(sub.counters().lost == 1);
  REQUIRE(sub.poll(m, buf) == PollStatus::ok);
  CHECK(value_of<std::uint64_t>(m.payload) == 2);
}

TEST_CASE("a hostile stamp far in the future is treated as a lap, bounded") {
  ScopedChannelName name;
  auto [ch, sub, pub] = make_live_channel(name);
  REQUIRE(pub.publish(bytes_of(std::uint64_t{1})) == PublishStatus::ok);
  RawView v(name);
  auto* slot0 = reinterpret_cast<SlotHeader*>(v.map.data() + v.hdr->data_offset);
  slot0->stamp.store(make_stamp(kMaxSequence, kStampCommitted));
  Message m;
  std::byte buf[128];
  CHECK(sub.poll(m, buf) == PollStatus::lapped);
  CHECK(sub.counters().lost == 1);
  CHECK(sub.poll(m, buf) == PollStatus::empty);
}

TEST_CASE("hostile cursors and counters do not break publishing or the snapshot") {
  ScopedChannelName name;
  auto [ch, sub, pub] = make_live_channel(name);
  RawView v(name);
  auto* subs = reinterpret_cast<SubscriberEntry*>(v.map.data() + v.hdr->subscribers_offset);
  subs[0].cursor.store(~0ULL);  // far ahead: gates nothing
  for (std::uint64_t i = 0; i < 20; ++i) REQUIRE(pub.publish(bytes_of(i), {}, 0) == PublishStatus::ok);
  const ChannelStats st = ch.stats();
  CHECK(st.head == 20);
  CHECK(st.subscribers.size() == 1);
}

TEST_CASE("a segment that was never initialised is refused, never taken over") {
  // Only a corrupted or foreign file can look like this: create links a
  // channel under its name only once it is initialised.
  ScopedChannelName name;
  RawView v = RawView::unfinished(name);
  CHECK(contains(open_error(name, ErrorCode::corrupted), "magic = 0"));
  auto taken = Channel::open_or_create(name.str(), small(), kTestBus);
  REQUIRE_FALSE(taken);
  CHECK(taken.error().code() == ErrorCode::corrupted);
  CHECK(v.hdr->magic.load() == 0);  // left as found
}

TEST_CASE("a valid header whose init_state says unfinished is refused naming the field") {
  ScopedChannelName name;
  { auto [ch, sub, pub] = make_live_channel(name); }
  RawView v(name);
  v.hdr->init_state.store(kInitRunning);
  const std::string msg = open_error(name, ErrorCode::corrupted);
  CHECK(contains(msg, "init_state = 1"));
  auto again = Channel::open_or_create(name.str(), small(), kTestBus);
  REQUIRE_FALSE(again);
  CHECK(contains(again.error().message(), "init_state = 1"));
  CHECK(v.hdr->init_state.load() == kInitRunning);  // not re-initialised
}

TEST_CASE("a segment that was never sized is refused with advice") {
  ScopedChannelName name;
  const std::string path = "/" + segment_name(kTestBus, name.str());
  const int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  const std::string msg = open_error(name, ErrorCode::corrupted);
  CHECK(contains(msg, "0 bytes"));
  CHECK(contains(msg, "shmbus rm"));
}
