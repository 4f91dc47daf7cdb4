// Security: who may open what, and what a reader can and cannot write.
//  - Every segment the bus makes (channel, a group's DLQ, a dedup table) is
//    created 0600 unless a mode is given, and a process of another uid opens
//    none of them (a forked child drops to "nobody"; run as root, skipped
//    otherwise). A wider mode is what lets another user in, so the refusal
//    is the mode's doing.
//  - A subscriber or consumer maps the payloads read-only: a write into a
//    message it is reading kills it with SIGSEGV, and what others read is
//    untouched.
//  - Values read from shared memory are not trusted: a lease word naming a
//    consumer index outside the table, a group `next` far ahead, and dead
//    letters whose record lies about its length are handled without an
//    out-of-bounds access (these tests also run under AddressSanitizer).
// (tests/ring/corruption_test.cpp covers hostile headers, slot lengths,
// stamps and cursors; tests/api/channel_test.cpp the plain other-uid open.)
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "bus/dedup/dedup.hpp"
#include "bus/group/consumer_core.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr int kSegv = 128 + SIGSEGV;  // Child::wait's code for a child killed by SIGSEGV

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Puts SIGSEGV back to its default action with the raw system call, so a
/// fault kills the process even under AddressSanitizer, whose handler (set
/// through the libc wrappers it intercepts) would turn it into an exit code.
void default_segv_action() {
  struct {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    unsigned long mask;
  } ksa{SIG_DFL, 0, nullptr, 0};
  (void)::syscall(SYS_rt_sigaction, SIGSEGV, &ksa, nullptr, sizeof ksa.mask);
}

/// Mode bits of a segment in /dev/shm, or -1.
int shm_mode(const std::string& segment) {
  struct stat st {};
  if (::stat(("/dev/shm/" + segment).c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

ChannelOptions small() {
  ChannelOptions o;
  o.capacity = 8;
  o.slot_size = 128;
  o.max_consumers = 2;
  return o;
}

std::vector<std::byte> text(const std::string& s) {
  std::vector<std::byte> v(s.size());
  std::memcpy(v.data(), s.data(), s.size());
  return v;
}

std::string as_text(std::span<const std::byte> p) {
  return std::string(reinterpret_cast<const char*>(p.data()), p.size());
}

struct DlqGuard {
  std::string name;
  ~DlqGuard() { (void)Channel::remove(name, kTestBus); }
};

struct DedupGuard {
  std::string name;
  ~DedupGuard() { (void)DedupTable::remove(name, kTestBus); }
};

}  // namespace

TEST_CASE(
    "a reader's payloads are mapped read-only: writing into a message it reads kills it with "
    "SIGSEGV and others read the message intact") {
  ScopedChannelName name("sec-ro");
  Channel ch = make_channel(name, small());
  DlqGuard dlq{name.str() + "-dlq"};
  auto witness = ch.subscribe({"", StartAt::at_sequence(0)});
  auto pub = ch.publisher();
  REQUIRE((witness && pub));
  const std::string original = "an order nobody may change";
  REQUIRE(pub->publish(text(original)) == PublishStatus::ok);
  {
    auto g = ch.join_group("g", {});
    REQUIRE(g);
  }  // the group exists from sequence 0

  enum class Who { subscriber, subscriber_that_also_publishes, consumer };
  Who who = Who::subscriber;
  SECTION("a subscriber, writing through the message of a zero-copy read") { who = Who::subscriber; }
  SECTION("a subscriber whose process also publishes (and so maps a writable view for that)") {
    who = Who::subscriber_that_also_publishes;
  }
  SECTION("a group consumer, writing into the slot of the message it was delivered") { who = Who::consumer; }

  Event armed;
  Child child([&]() -> int {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 10;
    std::byte* target = nullptr;
    Result<Publisher> own_pub = Error(ErrorCode::invalid_argument, "none");
    if (who == Who::subscriber_that_also_publishes) {
      own_pub = c->publisher();
      if (!own_pub) return 11;
    }
    auto sub = c->subscribe({"", StartAt::at_sequence(0)});
    auto con = c->join_group("g", {});
    if (!sub || !con) return 12;
    if (who == Who::consumer) {
      Delivery d;
      std::byte buf[128];
      if (con->receive(d, buf) != PollStatus::ok) return 13;
      // The slot of the delivered sequence in the channel's data view.
      const auto& state = shmbus::detail::state_of(*c);
      const auto& geo = state->geo;
      target = const_cast<std::byte*>(state->data) + (d.sequence & (geo.capacity - 1)) * geo.slot_size +
               bus::kSlotHeaderSize;
    } else {
      const PollStatus st = sub->read([&](const Message& m) { target = const_cast<std::byte*>(m.payload.data()); });
      if (st != PollStatus::ok || target == nullptr) return 14;
    }
    // The address is the message's first byte (readable), so a fault on the
    // write below can only mean that the mapping is read-only.
    if (*reinterpret_cast<volatile const std::byte*>(target) != std::byte{'a'}) return 16;
    armed.signal();
    default_segv_action();
    *reinterpret_cast<volatile std::byte*>(target) = std::byte{'X'};
    return 15;  // the write went through: the mapping is writable
  });
  REQUIRE(armed.wait());
  CHECK(child.wait() == kSegv);

  Message m;
  std::byte buf[128];
  REQUIRE(witness->poll(m, buf) == PollStatus::ok);
  CHECK(as_text(m.payload) == original);
}

TEST_CASE(
    "segments are 0600 by default and another user opens no channel, DLQ or dedup table of ours, but "
    "a wider mode lets it in, DLQ included") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root, to fork a child that drops to uid " << kNobody);
    return;
  }
  ScopedChannelName name("sec-uid");
  ScopedChannelName shared("sec-uid-wide");
  ScopedChannelName observable("sec-uid-ro");
  DlqGuard dlq{name.str() + "-dlq"};
  DlqGuard shared_dlq{shared.str() + "-dlq"};
  DedupGuard dedup{"sec-dedup-" + std::to_string(::getpid())};
  Channel ch = make_channel(name, small());
  {
    auto g = ch.join_group("g", {});
    REQUIRE(g);
  }  // makes the DLQ channel
  DedupOptions dopts;
  dopts.capacity = 64;
  auto table = DedupTable::open_or_create(dedup.name, dopts, kTestBus);
  REQUIRE(table);
  CHECK(shm_mode(bus::segment_name(kTestBus, name.str())) == 0600);
  CHECK(shm_mode(bus::segment_name(kTestBus, dlq.name)) == 0600);
  CHECK(shm_mode(bus::dedup_segment_name(kTestBus, dedup.name)) == 0600);

  ChannelOptions wide = small();
  wide.mode = 0666;
  Channel open_to_all = make_channel(shared, wide);
  auto pub = open_to_all.publisher();
  REQUIRE(pub);
  REQUIRE(pub->publish(text("hello")) == PublishStatus::ok);
  {
    auto g = open_to_all.join_group("g", {});
    REQUIRE(g);
  }  // its DLQ takes the channel's mode
  ChannelOptions ro = small();
  ro.mode = 0644;
  Channel readable = make_channel(observable, ro);
  CHECK(shm_mode(bus::segment_name(kTestBus, shared.str())) == 0666);
  CHECK(shm_mode(bus::segment_name(kTestBus, observable.str())) == 0644);
  CHECK(shm_mode(bus::segment_name(kTestBus, shared_dlq.name)) == 0666);

  // What the other user got, one code per check (0: as expected).
  Child other([&]() -> int {
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNogroup) != 0 || ::setuid(kNobody) != 0) return 2;
    if (::geteuid() != kNobody) return 3;
    auto a = Channel::open(name.str(), kTestBus);
    if (a || a.error().code() != ErrorCode::permission_denied) return 10;
    if (!contains(a.error().message(), "0600")) return 11;
    auto b = Channel::open_read_only(name.str(), kTestBus);
    if (b || b.error().code() != ErrorCode::permission_denied) return 12;
    auto c = Channel::open(dlq.name, kTestBus);
    if (c || c.error().code() != ErrorCode::permission_denied) return 13;
    auto d = DedupTable::open_or_create(dedup.name, dopts, kTestBus);
    if (d || d.error().code() != ErrorCode::permission_denied) return 14;
    // 0644: it may observe, not take part.
    auto e = Channel::open_read_only(observable.str(), kTestBus);
    if (!e) return 20;
    auto f = Channel::open(observable.str(), kTestBus);
    if (f || f.error().code() != ErrorCode::permission_denied) return 21;
    // 0666: it may take part.
    auto g = Channel::open(shared.str(), kTestBus);
    if (!g) return 30;
    auto sub = g->subscribe({"", StartAt::at_sequence(0)});
    if (!sub) return 31;
    Message m;
    std::byte buf[128];
    if (sub->poll(m, buf) != PollStatus::ok || as_text(m.payload) != "hello") return 32;
    // ...and join the group, whose DLQ it can open as well.
    auto group = g->join_group("g", {});
    if (!group) return 33;
    return 0;
  });
  CHECK(other.wait() == 0);
}

TEST_CASE("a lease word naming a consumer index outside the table is treated as a dead owner's lease") {
  ScopedChannelName name("sec-lease");
  DlqGuard dlq{name.str() + "-dlq"};
  Channel ch = make_channel(name, small());  // max_consumers 2
  GroupOptions g;
  g.visibility_timeout_ns = 60'000'000'000ULL;  // only the bad owner index can free it in time
  auto a = ch.join_group("g", g);
  REQUIRE(a);
  auto pub = ch.publisher();
  REQUIRE(pub);
  REQUIRE(pub->publish(text("job")) == PublishStatus::ok);
  Delivery d;
  std::byte buf[128];
  REQUIRE(a->receive(d, buf) == PollStatus::ok);
  REQUIRE(d.attempt == 1);

  // A hostile (or corrupted) segment rewrites the lease: same lap and
  // deadline, but owner 200, past the 2-entry consumer table.
  const int gi = bus::find_group(*shmbus::detail::state_of(ch), "g");
  REQUIRE(gi >= 0);
  std::atomic<std::uint64_t>& word =
      shmbus::detail::state_of(ch)->leases(static_cast<std::uint32_t>(gi))[d.sequence & 7];
  bus::LeaseFields lf = bus::lease_fields(word.load());
  REQUIRE(lf.state == bus::kLeaseLeased);
  lf.owner = 200;
  word.store(bus::make_lease(lf));

  auto b = ch.join_group("g", g);
  REQUIRE(b);
  Delivery again;
  REQUIRE(b->receive_wait(again, buf, 5'000'000'000ULL) == PollStatus::ok);
  CHECK(again.sequence == d.sequence);
  CHECK(again.attempt == 2);
  CHECK(as_text(again.message.payload) == "job");
  CHECK(a->ack(d) == AckStatus::lease_lost);  // the original holder's lease is gone
  CHECK(b->ack(again) == AckStatus::ok);
  const ChannelStats st = ch.stats();
  REQUIRE(st.groups.size() == 1);
  CHECK(st.groups[0].floor == 1);
}

TEST_CASE("a group `next` far beyond the head is not trusted to index the ring") {
  ScopedChannelName name("sec-next");
  DlqGuard dlq{name.str() + "-dlq"};
  Channel ch = make_channel(name, small());
  auto c = ch.join_group("g", {});
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  for (int i = 0; i < 3; ++i) REQUIRE(pub->publish(text("m" + std::to_string(i))) == PublishStatus::ok);
  const int gi = bus::find_group(*shmbus::detail::state_of(ch), "g");
  REQUIRE(gi >= 0);
  shmbus::detail::state_of(ch)->group(static_cast<std::uint32_t>(gi))->next.store(bus::kMaxSequence - 3);
  Delivery d;
  std::byte buf[128];
  for (int i = 0; i < 50; ++i) {
    const PollStatus st = c->receive(d, buf);
    CHECK((st == PollStatus::empty || st == PollStatus::lapped || st == PollStatus::corrupted));
  }
  const ChannelStats st = ch.stats();  // the snapshot copes too
  REQUIRE(st.groups.size() == 1);
  CHECK(st.groups[0].next == bus::kMaxSequence - 3);
}

TEST_CASE("redrive trusts no length from a dead-letter record") {
  ScopedChannelName name("sec-redrive");
  DlqGuard dlq{name.str() + "-dlq"};
  Channel ch = make_channel(name, small());
  {
    auto g = ch.join_group("g", {});
    REQUIRE(g);
  }  // creates the DLQ channel
  auto dlq_ch = Channel::open(dlq.name, kTestBus);
  REQUIRE(dlq_ch);
  auto bad = dlq_ch->publisher();
  REQUIRE(bad);
  // 1: shorter than a record (not a dead letter: skipped). 2: a record that
  // claims 1 GiB of payload but carries 4 bytes. 3: a record that claims 0.
  REQUIRE(bad->publish(text("tiny")) == PublishStatus::ok);
  auto letter = [](std::uint32_t claimed, const std::string& body) {
    bus::DlqRecord rec{};
    rec.payload_length = claimed;
    std::vector<std::byte> v(sizeof rec + body.size());
    std::memcpy(v.data(), &rec, sizeof rec);
    std::memcpy(v.data() + sizeof rec, body.data(), body.size());
    return v;
  };
  REQUIRE(bad->publish(letter(1u << 30, "body")) == PublishStatus::ok);
  REQUIRE(bad->publish(letter(0, "rest")) == PublishStatus::ok);

  auto sub = ch.subscribe({"", StartAt::at_sequence(0)});
  REQUIRE(sub);
  auto n = ch.redrive_dlq(dlq.name);
  REQUIRE(n);
  CHECK(n.value() == 2);
  Message m;
  std::byte buf[256];
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(as_text(m.payload) == "body");  // cut to what the message holds
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  CHECK(m.payload.empty());  // what the record says, when it is less
  CHECK(sub->poll(m, buf) == PollStatus::empty);
}
