// The dedup (idempotency) table: first / in_progress / done transitions,
// TTL and claim-timeout expiry, takeover of a SIGKILLed claimer, a full
// probe window, bad headers and bad input. The threaded race (exactly one
// `first` per id) is in stress_test.cpp (label concurrency).
#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <vector>

#include <shmbus/dedup.hpp>
#include "bus/dedup/dedup.hpp"
#include "shm/clock.hpp"
#include "shm/segment.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

/// A unique dedup table name on the test bus, removed on both ends.
class ScopedTableName {
 public:
  ScopedTableName() {
    static std::atomic<int> counter{0};
    name_ = "dd-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
    (void)DedupTable::remove(name_, kTestBus);
  }
  ~ScopedTableName() { (void)DedupTable::remove(name_, kTestBus); }
  ScopedTableName(const ScopedTableName&) = delete;
  ScopedTableName& operator=(const ScopedTableName&) = delete;
  [[nodiscard]] const std::string& str() const { return name_; }

 private:
  std::string name_;
};

DedupOptions small_table(std::uint64_t ttl_ms = 60'000, std::uint64_t claim_ms = 30'000) {
  DedupOptions o;
  o.capacity = 1024;
  o.probe_window = 16;
  o.ttl_ns = ttl_ms * 1'000'000;
  o.claim_timeout_ns = claim_ms * 1'000'000;
  return o;
}

DedupTable make_table(const ScopedTableName& name, const DedupOptions& o) {
  auto t = DedupTable::open_or_create(name.str(), o, kTestBus);
  if (!t) FAIL("open_or_create " << name.str() << ": " << t.error().message());
  return std::move(t.value());
}

/// Sleeps until a TTL or claim timeout of `ms` that started before the call
/// has surely run out: deadlines are whole milliseconds, rounded up, and may
/// be pushed 1 ms further to stay unique (bus/dedup/dedup.cpp, later()).
void wait_ms(std::uint64_t ms) {
  const std::uint64_t until = shm::monotonic_ns() + (ms + 3) * 1'000'000;
  while (shm::monotonic_ns() < until) shm::sleep_ns(1'000'000);
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Checks that the claim on `id`, whose owner is gone or late, is taken over
/// by the next begin (first, then in_progress; the table's only takeover),
/// and that `id` is done once completed.
void check_taken_over(DedupTable& t, std::uint64_t id) {
  CHECK(t.begin(id) == DedupStatus::first);
  CHECK(t.begin(id) == DedupStatus::in_progress);
  CHECK(t.stats().takeovers == 1);
  t.complete(id);
  CHECK(t.begin(id) == DedupStatus::done);
}

// A writable view of a table's header, as a hostile process has.
struct RawHeader {
  shm::Segment seg;
  shm::Mapping map;
  bus::DedupHeader* hdr = nullptr;
  explicit RawHeader(const ScopedTableName& name) {
    auto s = shm::Segment::open(bus::dedup_segment_name(kTestBus, name.str()), shm::Access::read_write);
    REQUIRE(s);
    seg = std::move(s.value());
    auto m = seg.map(0, bus::kDedupHeaderSize, shm::Access::read_write, false);
    REQUIRE(m);
    map = std::move(m.value());
    hdr = reinterpret_cast<bus::DedupHeader*>(map.data());
  }
};

Error open_error(const ScopedTableName& name, const DedupOptions& o, ErrorCode expect) {
  auto r = DedupTable::open_or_create(name.str(), o, kTestBus);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == expect);
  return r.error();
}

}  // namespace

TEST_CASE("a new id is first, in progress while claimed, then done after complete", "[dedup]") {
  ScopedTableName name;
  DedupTable t = make_table(name, small_table());
  CHECK_FALSE(t.seen(42));
  CHECK(t.begin(42) == DedupStatus::first);
  CHECK(t.begin(42) == DedupStatus::in_progress);  // our own claim: not again
  CHECK_FALSE(t.seen(42));                         // claimed is not done
  CHECK(t.begin(43) == DedupStatus::first);        // other ids are independent
  t.complete(42);
  CHECK(t.begin(42) == DedupStatus::done);
  CHECK(t.seen(42));
  CHECK(t.begin(43) == DedupStatus::in_progress);

  // A second handle on the same table (another opener) sees the same state.
  DedupTable other = make_table(name, small_table());
  CHECK(other.begin(42) == DedupStatus::done);
  CHECK(other.begin(43) == DedupStatus::in_progress);

  const DedupStats st = t.stats();
  CHECK(st.capacity == 1024);
  CHECK(st.probe_window == 16);
  CHECK(st.done == 1);
  CHECK(st.claimed == 1);
  CHECK(st.takeovers == 0);
  CHECK(st.full == 0);
}

TEST_CASE("deduplicating on the message id keeps two events of one key and drops the retry", "[dedup]") {
  // Two real deposits to account 42 (same key, ids 1 and 2), then the
  // publisher retries the first (same id 1) after a crash it could not tell
  // from a failure. A worker that dedups on the id processes each deposit
  // once; one that deduped on the key would have dropped the second.
  ScopedTableName table_name;
  DedupTable table = make_table(table_name, small_table());
  ScopedChannelName name("dedup-id");
  ChannelOptions o;
  o.capacity = 16;
  o.slot_size = 128;
  Channel ch = make_channel(name, o);
  auto worker = ch.join_group("g", {});
  auto pub = ch.publisher();
  REQUIRE((worker && pub));
  const auto deposit = [&](std::uint64_t id, std::string_view amount) {
    MessageMeta m;
    m.key = 42;
    m.id = id;
    REQUIRE(pub->publish(amount, m) == PublishStatus::ok);
  };
  deposit(1, "10");
  deposit(2, "20");
  deposit(1, "10");  // the retry: a duplicate of event 1

  std::vector<std::string> applied;
  std::uint64_t skipped = 0;
  std::byte buf[128];
  Delivery d;
  while (worker->receive(d, buf) == PollStatus::ok) {
    const DedupStatus st = table.begin(d.message.id);
    switch (st) {
      case DedupStatus::first:
        applied.emplace_back(reinterpret_cast<const char*>(d.message.payload.data()), d.message.payload.size());
        table.complete(d.message.id);
        break;
      case DedupStatus::done: ++skipped; break;
      default: FAIL("unexpected dedup status " << to_string(st));
    }
    REQUIRE(worker->ack(d) == AckStatus::ok);
  }
  CHECK(applied == std::vector<std::string>{"10", "20"});  // both events of key 42
  CHECK(skipped == 1);                                     // the retry of id 1
  CHECK(ch.stats().groups[0].acked == 3);
}

TEST_CASE("abandon releases this process's claim so the next begin is first", "[dedup]") {
  ScopedTableName name;
  DedupTable t = make_table(name, small_table());
  REQUIRE(t.begin(7) == DedupStatus::first);
  t.abandon(7);
  CHECK(t.begin(7) == DedupStatus::first);
  t.complete(7);
  t.abandon(7);  // a done id stays done
  CHECK(t.begin(7) == DedupStatus::done);
  t.abandon(12345);  // an id never seen: nothing happens
  CHECK(t.begin(12345) == DedupStatus::first);
}

TEST_CASE("complete without a claim records the id as done", "[dedup]") {
  ScopedTableName name;
  DedupTable t = make_table(name, small_table());
  t.complete(99);
  CHECK(t.seen(99));
  CHECK(t.begin(99) == DedupStatus::done);
  t.complete(99);  // again: still done, no second entry
  CHECK(t.stats().done == 1);
}

TEST_CASE("a done id is remembered for its TTL, then claimed anew", "[dedup]") {
  ScopedTableName name;
  DedupTable t = make_table(name, small_table(/*ttl_ms=*/40, /*claim_ms=*/20));
  REQUIRE(t.begin(5) == DedupStatus::first);
  t.complete(5);
  CHECK(t.begin(5) == DedupStatus::done);
  CHECK(t.seen(5));
  wait_ms(40);
  CHECK_FALSE(t.seen(5));
  CHECK(t.begin(5) == DedupStatus::first);  // forgotten: duplicates past the TTL are not caught
  CHECK(t.begin(5) == DedupStatus::in_progress);
  CHECK(t.stats().takeovers == 0);  // re-claiming an expired record is not a takeover
}

TEST_CASE("a claim past its claim timeout is taken over by the next begin", "[dedup]") {
  ScopedTableName name;
  DedupTable t = make_table(name, small_table(/*ttl_ms=*/1000, /*claim_ms=*/20));
  REQUIRE(t.begin(8) == DedupStatus::first);
  CHECK(t.begin(8) == DedupStatus::in_progress);
  wait_ms(20);
  // The late worker still completes: the work was done, so the id is done.
  check_taken_over(t, 8);
}

TEST_CASE("the claim of a SIGKILLed process is taken over at once", "[dedup]") {
  ScopedTableName name;
  const DedupOptions o = small_table(/*ttl_ms=*/120'000, /*claim_ms=*/60'000);
  DedupTable t = make_table(name, o);
  Event claimed;
  const pid_t child = fork_child([&]() -> int {
    // The child opens its own handle: claims carry the opener's pid.
    auto mine = DedupTable::open_or_create(name.str(), o, kTestBus);
    if (!mine) return 2;
    if (mine->begin(1001) != DedupStatus::first) return 3;
    claimed.signal();
    for (;;) ::pause();
  });
  REQUIRE(claimed.wait());
  CHECK(t.begin(1001) == DedupStatus::in_progress);  // its owner is alive
  ::kill(child, SIGKILL);
  REQUIRE(wait_child(child) == 128 + SIGKILL);
  check_taken_over(t, 1001);  // long before the 60 s claim timeout
}

TEST_CASE("a full probe window reports full and records nothing until an entry frees up", "[dedup]") {
  ScopedTableName name;
  DedupOptions o = small_table();
  o.capacity = 16;
  o.probe_window = 16;  // every id may use every entry: exactly 16 live records fit
  DedupTable t = make_table(name, o);
  for (std::uint64_t id = 1; id <= 16; ++id) REQUIRE(t.begin(id) == DedupStatus::first);
  CHECK(t.begin(17) == DedupStatus::full);
  CHECK(t.begin(17) == DedupStatus::full);  // nothing was recorded
  t.complete(18);                           // no room for a done record either
  CHECK_FALSE(t.seen(18));
  for (std::uint64_t id = 1; id <= 16; ++id) CHECK(t.begin(id) == DedupStatus::in_progress);
  DedupStats st = t.stats();
  CHECK(st.claimed == 16);
  CHECK(st.full == 3);
  CHECK(st.lost_completes == 1);

  t.abandon(3);  // frees one entry
  CHECK(t.begin(17) == DedupStatus::first);
  CHECK(t.begin(3) == DedupStatus::full);
  t.complete(5);  // done records hold their entry too
  CHECK(t.begin(19) == DedupStatus::full);
  CHECK(t.begin(5) == DedupStatus::done);
}

TEST_CASE("expired records make room in a full window", "[dedup]") {
  ScopedTableName name;
  DedupOptions o = small_table(/*ttl_ms=*/30, /*claim_ms=*/30);
  o.capacity = 16;
  o.probe_window = 16;
  DedupTable t = make_table(name, o);
  for (std::uint64_t id = 1; id <= 8; ++id) {
    REQUIRE(t.begin(id) == DedupStatus::first);
    t.complete(id);
  }
  for (std::uint64_t id = 9; id <= 16; ++id) REQUIRE(t.begin(id) == DedupStatus::first);
  CHECK(t.begin(100) == DedupStatus::full);
  wait_ms(30);  // every done record and every claim has expired
  for (std::uint64_t id = 100; id < 116; ++id) CHECK(t.begin(id) == DedupStatus::first);
  CHECK(t.begin(200) == DedupStatus::full);
  CHECK(t.stats().claimed == 16);
}

TEST_CASE("a dedup table header with a bad field is refused", "[dedup]") {
  ScopedTableName name;
  const DedupOptions o = small_table();
  { DedupTable t = make_table(name, o); }
  RawHeader raw(name);
  bus::DedupHeader& h = *raw.hdr;

  SECTION("magic") {
    h.magic.store(0x1234);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "magic"));
  }
  SECTION("layout version") {
    h.layout_version.store(bus::kDedupLayoutVersion + 1);
    CHECK(contains(open_error(name, o, ErrorCode::version_mismatch).message(), "layout version 2"));
  }
  SECTION("ABI fingerprint") {
    h.abi_fingerprint.store(h.abi_fingerprint.load() ^ 1);
    CHECK(contains(open_error(name, o, ErrorCode::version_mismatch).message(), "ABI"));
  }
  SECTION("capacity not a power of two") {
    h.capacity.store(1000);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "capacity 1000"));
  }
  SECTION("capacity larger than the segment") {
    h.capacity.store(1u << 20);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "total_size"));
  }
  SECTION("probe window larger than the capacity") {
    h.probe_window.store(4096);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "probe_window 4096"));
  }
  SECTION("ttl beyond the clock's range") {
    h.ttl_ns.store(UINT64_MAX);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "ttl_ns"));
  }
  SECTION("ttl shorter than the claim timeout") {
    h.ttl_ns.store(1'000'000);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "ttl_ns"));
  }
  SECTION("entries offset") {
    h.entries_offset.store(8192);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "entries_offset"));
  }
  SECTION("total size") {
    h.total_size.store(h.total_size.load() + 4096);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "total_size"));
  }
  SECTION("init_state says unfinished, its creator gone") {
    // A table is named only once initialised: this is corruption, refused by
    // name and never re-initialised (which would drop every record).
    const pid_t dead = fork_child([] { return 0; });
    REQUIRE(wait_child(dead) == 0);
    h.init_state.store(bus::kInitRunning);
    h.init_owner.store(static_cast<std::uint64_t>(dead) << 32);
    CHECK(contains(open_error(name, o, ErrorCode::corrupted).message(), "init_state = 1"));
    CHECK(h.init_state.load() == bus::kInitRunning);
  }
}

TEST_CASE("opening a dedup table with other parameters names both values", "[dedup]") {
  ScopedTableName name;
  const DedupOptions o = small_table();
  DedupTable t = make_table(name, o);
  DedupOptions other = o;
  other.capacity = 2048;
  CHECK(contains(open_error(name, other, ErrorCode::parameter_mismatch).message(), "capacity 1024; asked for 2048"));
  other = o;
  other.ttl_ns = o.ttl_ns * 2;
  CHECK(contains(open_error(name, other, ErrorCode::parameter_mismatch).message(), "ttl_ns"));
  other = o;
  other.probe_window = 8;
  CHECK(contains(open_error(name, other, ErrorCode::parameter_mismatch).message(), "probe_window"));
}

TEST_CASE("dedup table bad input: names, options, empty handles, removal", "[dedup]") {
  ScopedTableName name;
  // small_table() with one thing `spoil`ed is refused, with `part` named.
  auto bad = [&](auto spoil, const std::string& part) {
    DedupOptions o = small_table();
    spoil(o);
    auto r = DedupTable::open_or_create(name.str(), o, kTestBus);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == ErrorCode::invalid_argument);
    CHECK(contains(r.error().message(), part));
  };
  bad([](DedupOptions& o) { o.capacity = 1000; }, "capacity");
  bad([](DedupOptions& o) { o.capacity = 8; }, "capacity");
  bad([](DedupOptions& o) { o.probe_window = 0; }, "probe_window");
  bad([](DedupOptions& o) { o.probe_window = 2048; }, "probe_window");
  bad([](DedupOptions& o) { o.claim_timeout_ns = 1000; }, "claim_timeout_ns");
  bad([](DedupOptions& o) { o = small_table(/*ttl_ms=*/10, /*claim_ms=*/20); }, "ttl_ns");
  bad([](DedupOptions& o) { o.mode = 01777; }, "mode");

  auto dotted = DedupTable::open_or_create("a.b", small_table(), kTestBus);
  REQUIRE_FALSE(dotted);
  CHECK(dotted.error().code() == ErrorCode::invalid_argument);
  auto empty_bus = DedupTable::open_or_create(name.str(), small_table(), "");
  REQUIRE_FALSE(empty_bus);

  DedupTable none;
  CHECK_FALSE(none.valid());
  CHECK(none.begin(1) == DedupStatus::invalid);
  none.complete(1);
  none.abandon(1);
  CHECK_FALSE(none.seen(1));

  auto gone = DedupTable::remove(name.str(), kTestBus);
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code() == ErrorCode::not_found);

  // Removal: handles keep the old table; the next open makes a new one.
  DedupTable t = make_table(name, small_table());
  t.complete(1);
  REQUIRE(DedupTable::remove(name.str(), kTestBus));
  CHECK(t.begin(1) == DedupStatus::done);
  DedupTable fresh = make_table(name, small_table());
  CHECK(fresh.begin(1) == DedupStatus::first);
  CHECK(to_string(DedupStatus::in_progress) == "in_progress");
}

TEST_CASE("a dedup table is not a channel of its bus", "[dedup]") {
  ScopedTableName name;
  DedupTable t = make_table(name, small_table());
  auto chans = Channel::list(kTestBus);
  REQUIRE(chans);
  for (const ChannelInfo& c : chans.value()) CHECK(c.name.find(name.str()) == std::string::npos);
  CHECK(bus::dedup_segment_name(kTestBus, name.str()) == "shmbus-dedup." + std::string(kTestBus) + "." + name.str());
}

TEST_CASE("the dedup state word packs state, pid and time without overlap", "[dedup]") {
  using namespace shmbus::bus;
  const std::uint64_t w = make_dedup_word(kDedupClaimed, kDedupMaxPid, kDedupMaxTime);
  CHECK(dedup_state(w) == kDedupClaimed);
  CHECK(dedup_pid(w) == kDedupMaxPid);
  CHECK(dedup_time(w) == kDedupMaxTime);
  const std::uint64_t v = make_dedup_word(kDedupDone, 12345, 987654321);
  CHECK(dedup_state(v) == kDedupDone);
  CHECK(dedup_pid(v) == 12345);
  CHECK(dedup_time(v) == 987654321);
  CHECK(make_dedup_word(kDedupFree, 0, 0) == 0);
}
