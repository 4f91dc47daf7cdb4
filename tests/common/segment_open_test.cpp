// The shared create/open steps of named segments (bus/common/segment_open):
// the create-or-open loop's outcomes, and a segment too small for a header
// refused by each kind with both sizes named.
#include <catch2/catch.hpp>

#include <string>
#include <unistd.h>

#include "bus/common/segment_open.hpp"
#include "bus/dedup/dedup.hpp"
#include "bus/ring/channel_state.hpp"
#include "shm/segment.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

constexpr bus::SegmentKind kKind{"widget", 4096, 2, "a widget header", "remove it", "remove it"};

Error fail(ErrorCode code) { return Error(code, "test"); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("create_or_open opens a taken name and starts over when it vanished in between") {
  int creates = 0;
  int opens = 0;
  auto r = bus::create_or_open(
      kKind, "w",
      [&]() -> Result<int> {
        ++creates;
        return fail(ErrorCode::already_exists);
      },
      [&]() -> Result<int> {
        ++opens;
        if (opens < 3) return fail(ErrorCode::not_found);
        return 42;
      });
  REQUIRE(r);
  CHECK(r.value() == 42);
  CHECK(creates == 3);
  CHECK(opens == 3);
}

TEST_CASE("create_or_open gives up with busy naming the segment when it keeps vanishing") {
  int opens = 0;
  auto r = bus::create_or_open(
      kKind, "w", []() -> Result<int> { return fail(ErrorCode::already_exists); },
      [&]() -> Result<int> {
        ++opens;
        return fail(ErrorCode::not_found);
      });
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::busy);
  CHECK(r.error().message() == "widget 'w' keeps appearing and disappearing; giving up");
  CHECK(opens == bus::kCreateOrOpenAttempts);
}

TEST_CASE("create_or_open answers with create's success or other error, and open's other error") {
  int opens = 0;
  const auto open = [&]() -> Result<int> {
    ++opens;
    return fail(ErrorCode::corrupted);
  };
  auto made = bus::create_or_open(
      kKind, "w", []() -> Result<int> { return 7; }, open);
  REQUIRE(made);
  CHECK(made.value() == 7);
  auto full = bus::create_or_open(
      kKind, "w", []() -> Result<int> { return fail(ErrorCode::no_space); }, open);
  REQUIRE_FALSE(full);
  CHECK(full.error().code() == ErrorCode::no_space);
  CHECK(opens == 0);
  auto bad = bus::create_or_open(
      kKind, "w", []() -> Result<int> { return fail(ErrorCode::already_exists); }, open);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == ErrorCode::corrupted);
  CHECK(opens == 1);
}

TEST_CASE("a channel segment smaller than a header is refused naming both sizes") {
  ScopedChannelName name;
  REQUIRE(shm::Segment::create(bus::segment_name(kTestBus, name.str()), 100, 0600));
  auto r = bus::open_channel(kTestBus, name.str(), {});
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::corrupted);
  CHECK(contains(r.error().message(), "channel '" + name.str() +
                                          "' is corrupted: its segment is 100 bytes, smaller than a "
                                          "channel header (4096)"));
}

TEST_CASE("a dedup table segment smaller than a header is refused naming both sizes") {
  const std::string name = "tiny-" + std::to_string(::getpid());
  const std::string seg_name = bus::dedup_segment_name(kTestBus, name);
  (void)shm::Segment::remove(seg_name);
  REQUIRE(shm::Segment::create(seg_name, 100, 0600));
  DedupOptions o;
  o.capacity = 16;
  o.probe_window = 4;
  auto r = bus::DedupCore::open_or_create(kTestBus, name, o);
  (void)shm::Segment::remove(seg_name);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::corrupted);
  CHECK(r.error().message() == "dedup table '" + name +
                                   "' is corrupted: its segment is 100 bytes, smaller than its header "
                                   "(4096); remove it");
}
