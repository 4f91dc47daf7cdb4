// Consumer groups in one process: every lease transition, backoff bounds,
// the DLQ record, gating by the group floor, and bad input.
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api/detail.hpp"
#include "bus/group/consumer_core.hpp"
#include "bus/ring/channel_state.hpp"
#include "shm/clock.hpp"

#include "group_test_util.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

GroupOptions fast_group(std::uint32_t max_deliveries = 3, std::uint64_t visibility_ms = 50) {
  GroupOptions g;
  g.visibility_timeout_ns = visibility_ms * 1'000'000;
  g.max_deliveries = max_deliveries;
  g.backoff_base_ns = 1'000'000;
  g.backoff_cap_ns = 8'000'000;
  return g;
}

/// A consumer of group "g" and a publisher on one channel.
struct Worker {
  Consumer c;
  Publisher pub;
};

/// Joins group "g" of `ch` with `g` and makes a publisher; fails the test if
/// either fails.
Worker join_with_publisher(Channel& ch, const GroupOptions& g) {
  auto c = ch.join_group("g", g);
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  return {std::move(c.value()), std::move(pub.value())};
}

std::uint64_t u64_of(const Delivery& d) { return value_of<std::uint64_t>(d.message.payload); }

}  // namespace

TEST_CASE("each message of a group goes to one consumer, and ack finishes it") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto a = ch.join_group("workers", fast_group());
  auto b = ch.join_group("workers", fast_group());
  auto pub = ch.publisher();
  REQUIRE((a && b && pub));
  for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  std::set<std::uint64_t> seen;
  std::byte buf[128];
  for (int i = 0; i < 10; ++i) {
    Consumer& c = (i % 2 == 0) ? *a : *b;
    Delivery d;
    REQUIRE(c.receive(d, buf) == PollStatus::ok);
    CHECK(d.attempt == 1);
    CHECK(d.message.attempt == 1);
    CHECK(d.deadline_ns > shm::monotonic_ns());
    CHECK(seen.insert(u64_of(d)).second);
    CHECK(c.ack(d) == AckStatus::ok);
    CHECK(c.ack(d) == AckStatus::lease_lost);  // a second ack changes nothing
  }
  Delivery d;
  CHECK(a->receive(d, buf) == PollStatus::empty);
  const ChannelStats st = ch.stats();
  REQUIRE(st.groups.size() == 1);
  CHECK(st.groups[0].name == "workers");
  CHECK(st.groups[0].delivered == 10);
  CHECK(st.groups[0].acked == 10);
  CHECK(st.groups[0].floor == 10);
  CHECK(st.groups[0].in_flight == 0);
  CHECK(st.groups[0].consumers.size() == 2);
}

TEST_CASE("a batch receive hands out consecutive messages, and a batch ack moves the floor over the run") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto c = ch.join_group("workers", fast_group());
  auto pub = ch.publisher();
  REQUIRE((c && pub));
  for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  Delivery ds[8];
  std::byte arena[8 * 8];
  PollStatus last = PollStatus::invalid;
  REQUIRE(c->receive_batch(ds, arena, &last) == 8);
  CHECK(last == PollStatus::ok);
  for (std::uint64_t i = 0; i < 8; ++i) {
    CHECK(ds[i].sequence == i);
    CHECK(u64_of(ds[i]) == i);
    CHECK(ds[i].attempt == 1);
  }
  CHECK(ch.stats().groups[0].delivered == 8);
  // All but the fourth: the floor stops below it.
  const Delivery first_three[] = {ds[0], ds[1], ds[2]};
  const Delivery after[] = {ds[4], ds[5], ds[6], ds[7], ds[0]};  // ds[0] again: already acked
  CHECK(c->ack_batch(first_three) == 3);
  CHECK(c->ack_batch(after) == 4);
  ChannelStats st = ch.stats();
  CHECK(st.groups[0].acked == 7);
  CHECK(st.groups[0].floor == 3);
  // The fourth finishes the run: one advance to 8.
  CHECK(c->ack(ds[3]) == AckStatus::ok);
  st = ch.stats();
  CHECK(st.groups[0].floor == 8);
  CHECK(st.groups[0].consumers[0].acked == 8);
  // An arena too small for the next message ends the batch and keeps it.
  std::byte tiny[4];
  REQUIRE(c->receive_batch(std::span<Delivery>(ds, 2), tiny, &last) == 0);
  CHECK(last == PollStatus::buffer_too_small);
  REQUIRE(c->receive_batch(std::span<Delivery>(ds, 2), arena, &last) == 2);
  CHECK(ds[0].sequence == 8);
  CHECK(ds[1].sequence == 9);
  CHECK(c->ack_batch(std::span<const Delivery>(ds, 2)) == 2);
  CHECK(ch.stats().groups[0].floor == 10);
  Consumer empty;
  CHECK(empty.receive_batch(ds, arena, &last) == 0);
  CHECK(last == PollStatus::invalid);
  CHECK(empty.ack_batch(std::span<const Delivery>(ds, 2)) == 0);
}

TEST_CASE("a batch's leases taken past next are helped over by others, and a leaving consumer makes them due") {
  // receive_batch leases a run of messages from `next` on and moves `next`
  // past the run at its end. Rewinding `next` makes the state a consumer
  // killed before that move leaves.
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto a = ch.join_group("g", fast_group(3, 60'000));  // no lease expires during the test
  auto b = ch.join_group("g", fast_group(3, 60'000));
  auto pub = ch.publisher();
  REQUIRE((a && b && pub));
  for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  Delivery ds[3];
  std::byte arena[3 * 8];
  REQUIRE(a->receive_batch(ds, arena) == 3);
  auto& next = detail::state_of(ch)->group(0)->next;
  CHECK(next.load() == 3);
  next.store(0);
  // b finds a's words at `next`, helps `next` over them, and takes 3.
  Delivery d;
  std::byte buf[8];
  REQUIRE(b->receive(d, buf) == PollStatus::ok);
  CHECK(d.sequence == 3);
  CHECK(next.load() == 4);
  CHECK(b->ack(d) == AckStatus::ok);
  // a leaves while its leases lie past `next` again: its release makes
  // them due, and b gets them back (attempt 2) without waiting for their
  // deadline.
  next.store(0);
  *a = Consumer();
  std::set<std::uint64_t> redelivered;
  const std::uint64_t give_up = shm::monotonic_ns() + 10'000'000'000ULL;
  while (redelivered.size() < 3 && shm::monotonic_ns() < give_up) {
    if (b->receive(d, buf) != PollStatus::ok) continue;
    CHECK(d.attempt == 2);
    redelivered.insert(d.sequence);
    CHECK(b->ack(d) == AckStatus::ok);
  }
  CHECK(redelivered == std::set<std::uint64_t>{0, 1, 2});
  const ChannelStats st = ch.stats();
  CHECK(st.groups[0].floor == 4);
  CHECK(st.groups[0].acked == 4);
}

TEST_CASE("an expired lease is redelivered with attempt + 1 and the old ack is refused") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto [c, pub] = join_with_publisher(ch, fast_group(5, 20));
  REQUIRE(pub.publish(bytes_of(std::uint64_t{7})) == PublishStatus::ok);
  std::byte buf[128];
  Delivery first;
  REQUIRE(c.receive(first, buf) == PollStatus::ok);
  // Wait out the lease (its deadline, not another process).
  Delivery again;
  REQUIRE(c.receive_wait(again, buf, 2'000'000'000ULL) == PollStatus::ok);
  CHECK(again.sequence == first.sequence);
  CHECK(again.attempt == 2);
  CHECK(c.ack(first) == AckStatus::lease_lost);
  CHECK(c.ack(again) == AckStatus::ok);
  const ChannelStats st = ch.stats();
  CHECK(st.groups[0].expired == 1);
  CHECK(st.groups[0].redelivered == 1);
  CHECK(st.groups[0].acked == 1);
}

TEST_CASE("nack makes a message due after its delay, and extend keeps it leased") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  // A 200 ms lease: long enough that message 2 is extended well before it
  // would expire, short enough to wait past its first deadline below.
  auto [c, pub] = join_with_publisher(ch, fast_group(5, 200));
  REQUIRE(pub.publish(bytes_of(std::uint64_t{1})) == PublishStatus::ok);
  REQUIRE(pub.publish(bytes_of(std::uint64_t{2})) == PublishStatus::ok);
  std::byte buf[128];
  Delivery d1, d2;
  REQUIRE(c.receive(d1, buf) == PollStatus::ok);
  const auto t0 = shm::monotonic_ns();
  REQUIRE(c.nack(d1, 20'000'000) == AckStatus::ok);
  CHECK(c.nack(d1, 0) == AckStatus::lease_lost);
  REQUIRE(c.receive(d2, buf) == PollStatus::ok);
  CHECK(u64_of(d2) == 2);
  // Heartbeat: extend message 2 well past its visibility timeout.
  const std::uint64_t first_deadline = d2.deadline_ns;
  REQUIRE(c.extend(d2, 5'000'000'000ULL) == AckStatus::ok);
  Delivery d3;
  REQUIRE(c.receive_wait(d3, buf, 2'000'000'000ULL) == PollStatus::ok);
  CHECK(shm::monotonic_ns() - t0 >= 19'000'000);  // not before the nack delay (ms clock)
  CHECK(u64_of(d3) == 1);
  CHECK(d3.attempt == 2);
  CHECK(c.ack(d3) == AckStatus::ok);
  // Past message 2's first deadline, by more than the ms clock's rounding
  // plus two redelivery scans (every 10 ms here), nothing is redelivered:
  // the extended lease holds. (The last receive comes after that time, so
  // it scans for due leases whatever the scheduler did.)
  Delivery d4;
  PollStatus later = PollStatus::empty;
  while (later == PollStatus::empty && shm::monotonic_ns() < first_deadline + 25'000'000) {
    later = c.receive(d4, buf);
  }
  if (later == PollStatus::empty) later = c.receive(d4, buf);
  CHECK(later == PollStatus::empty);
  CHECK(c.ack(d2) == AckStatus::ok);  // still ours thanks to extend
  const ChannelStats st = ch.stats();
  CHECK(st.groups[0].nacked == 1);
  CHECK(st.groups[0].expired == 0);
  CHECK(st.groups[0].redelivered == 1);  // message 1, after its nack
}

TEST_CASE("backoff grows exponentially from the base, is capped, and stays within the jitter") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  GroupOptions g = fast_group();
  g.backoff_base_ns = 1'000'000;
  g.backoff_cap_ns = 16'000'000;
  g.jitter_permille = 100;
  auto c = ch.join_group("g", g);
  REQUIRE(c);
  for (int trial = 0; trial < 200; ++trial) {
    for (std::uint32_t attempt = 1; attempt <= 8; ++attempt) {
      const double nominal = std::min(1e6 * (1u << (attempt - 1)), 16e6);
      const double d = static_cast<double>(c->backoff_ns(attempt));
      CHECK(d >= nominal * 0.9 - 1);
      CHECK(d <= nominal * 1.1 + 1);
    }
  }
}

TEST_CASE("a message that keeps failing reaches the DLQ after exactly max deliveries, with its record") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto [c, pub] = join_with_publisher(ch, fast_group(3, 10));
  MessageMeta meta;
  meta.key = 99;
  meta.type = 4;
  REQUIRE(pub.publish(std::string_view("poison"), meta) == PublishStatus::ok);
  REQUIRE(pub.publish(std::string_view("fine"), meta) == PublishStatus::ok);
  std::byte buf[128];
  int poison_deliveries = 0;
  bool fine_acked = false;
  const auto deadline = shm::monotonic_ns() + 5'000'000'000ULL;
  while (shm::monotonic_ns() < deadline && !(fine_acked && ch.stats().groups[0].dead_lettered == 1)) {
    Delivery d;
    if (c.receive_wait(d, buf, 50'000'000) != PollStatus::ok) continue;
    const std::string text(reinterpret_cast<const char*>(d.message.payload.data()), d.message.payload.size());
    if (text == "poison") {
      ++poison_deliveries;
      CHECK(d.attempt == static_cast<std::uint32_t>(poison_deliveries));
      REQUIRE(c.nack(d, 0) == AckStatus::ok);  // "crashes" every time
    } else {
      fine_acked = c.ack(d) == AckStatus::ok;  // the others are not held up
    }
  }
  CHECK(fine_acked);
  CHECK(poison_deliveries == 3);
  const ChannelStats st = ch.stats();
  CHECK(st.groups[0].dead_lettered == 1);
  CHECK(st.groups[0].floor == 2);
  // The DLQ record: original sequence, attempts, group, reason, payload.
  DlqReader reader(name.dlq());
  const bus::DlqRecord rec = reader.next(6);
  const Message& m = reader.message();
  check_max_deliveries_letter(rec, m, 0, 3, "g", name.str());
  CHECK(std::string(reinterpret_cast<const char*>(reader.payload().data()), 6) == "poison");
  CHECK(m.key == 99);
  CHECK(m.type == 4);
}

TEST_CASE("dead letters can be redriven back to the source channel") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto [c, pub] = join_with_publisher(ch, fast_group(3, 10));
  REQUIRE(pub.publish(std::string_view("bad")) == PublishStatus::ok);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  REQUIRE(c.dead_letter(d) == AckStatus::ok);
  CHECK(ch.stats().groups[0].dead_lettered == 1);
  auto n = ch.redrive_dlq(name.dlq());
  REQUIRE(n);
  CHECK(n.value() == 1);
  Delivery again;
  REQUIRE(c.receive(again, buf) == PollStatus::ok);
  CHECK(std::string(reinterpret_cast<const char*>(again.message.payload.data()), 3) == "bad");
  CHECK(again.sequence == 1);
  CHECK(again.attempt == 1);
  auto none = ch.redrive_dlq(name.dlq());
  REQUIRE(none);
  CHECK(none.value() == 0);
}

TEST_CASE("a message id reaches consumers and survives the DLQ and redrive") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto [c, pub] = join_with_publisher(ch, fast_group(3, 10));
  MessageMeta meta;
  meta.key = 5;  // the account; the id names this one event of it
  meta.id = 0xfeed000000000077ULL;
  meta.correlation_id = 9;
  REQUIRE(pub.publish(std::string_view("bad"), meta) == PublishStatus::ok);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  CHECK((d.message.key == 5 && d.message.id == meta.id && d.message.correlation_id == 9));
  REQUIRE(c.dead_letter(d) == AckStatus::ok);
  {
    DlqReader reader(name.dlq());
    (void)reader.next(3);
    CHECK((reader.message().key == 5 && reader.message().id == meta.id));  // the DLQ copy's slot keeps it
    const auto letter = decode_dead_letter(reader.message());
    REQUIRE(letter);
    CHECK((letter->key == 5 && letter->id == meta.id && letter->correlation_id == 9));
  }
  auto n = ch.redrive_dlq(name.dlq());
  REQUIRE(n);
  REQUIRE(n.value() == 1);
  Delivery again;
  REQUIRE(c.receive(again, buf) == PollStatus::ok);
  CHECK(again.sequence == 1);  // a new message...
  CHECK((again.message.key == 5 && again.message.id == meta.id && again.message.correlation_id == 9));  // ...same event
  CHECK(c.ack(again) == AckStatus::ok);
}

TEST_CASE("block: the group floor holds publishers until the group acks") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small(Policy::block, 4));
  auto [c, pub] = join_with_publisher(ch, fast_group(5, 10'000));
  for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(pub.publish(bytes_of(i)) == PublishStatus::ok);
  CHECK(pub.publish(bytes_of(std::uint64_t{4}), {}, 0) == PublishStatus::timeout);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  CHECK(pub.publish(bytes_of(std::uint64_t{4}), {}, 0) == PublishStatus::timeout);  // leased, not acked
  REQUIRE(c.ack(d) == AckStatus::ok);
  CHECK(pub.publish(bytes_of(std::uint64_t{4}), {}, 0) == PublishStatus::ok);
}

TEST_CASE("drop_oldest: a group that falls a ring behind counts what it lost") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 4));
  auto [c, pub] = join_with_publisher(ch, fast_group());
  for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(pub.publish(bytes_of(i)) == PublishStatus::ok);
  std::byte buf[128];
  std::vector<std::uint64_t> got;
  for (;;) {
    Delivery d;
    const PollStatus st = c.receive(d, buf);
    if (st == PollStatus::empty) break;
    if (st != PollStatus::ok) continue;
    got.push_back(u64_of(d));
    REQUIRE(c.ack(d) == AckStatus::ok);
  }
  CHECK(got == std::vector<std::uint64_t>{6, 7, 8, 9});
  CHECK(ch.stats().groups[0].lost == 6);
}

TEST_CASE("drop_oldest: a lease still held on a slot that publishers overwrite counts as lost, once") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 4));
  // A 60 s lease: it cannot expire (and be redelivered) during the test.
  auto [c, pub] = join_with_publisher(ch, fast_group(3, 60'000));
  std::byte buf[128];
  REQUIRE(pub.publish(bytes_of(std::uint64_t{0})) == PublishStatus::ok);
  Delivery held;
  REQUIRE(c.receive(held, buf) == PollStatus::ok);
  REQUIRE(held.sequence == 0);
  // Sequence 4 overwrites slot 0 while sequence 0 is still leased.
  for (std::uint64_t i = 1; i <= 4; ++i) REQUIRE(pub.publish(bytes_of(i)) == PublishStatus::ok);
  std::vector<std::uint64_t> got;
  for (;;) {
    Delivery d;
    const PollStatus st = c.receive(d, buf);
    if (st == PollStatus::empty) break;
    REQUIRE(st == PollStatus::ok);
    got.push_back(u64_of(d));
    REQUIRE(c.ack(d) == AckStatus::ok);
  }
  CHECK(got == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(c.ack(held) == AckStatus::lease_lost);  // its message is gone
  const ChannelStats st = ch.stats();
  REQUIRE(st.groups.size() == 1);
  const GroupStats& g = st.groups[0];
  CHECK(g.lost == 1);
  CHECK(g.delivered == 5);
  CHECK(g.acked == 4);
  CHECK(g.floor == 5);
  CHECK(g.in_flight == 0);
}

namespace {

/// The page a consumer must not read yet, and what the SIGSEGV handler of
/// the test below does when it does: it parks the consumer at that load
/// until another thread has moved the group on, then lets the load go on.
struct ParkAtPage {
  std::byte* page = nullptr;
  std::size_t size = 0;
  std::atomic<bool> parked{false};
  std::atomic<bool> release{false};
};
ParkAtPage g_park;
struct sigaction g_previous_segv;

void park_on_fault(int, siginfo_t* info, void*) {
  auto* addr = static_cast<std::byte*>(info->si_addr);
  if (addr < g_park.page || addr >= g_park.page + g_park.size) {
    // Not our page: a real fault. Let the previous handler (or the default
    // action) have it when the instruction runs again.
    ::sigaction(SIGSEGV, &g_previous_segv, nullptr);
    return;
  }
  g_park.parked.store(true);
  while (!g_park.release.load()) ::sched_yield();
  ::mprotect(g_park.page, g_park.size, PROT_READ | PROT_WRITE);
}

}  // namespace

TEST_CASE(
    "a consumer held up between reading next and the lease word for a whole lap takes nothing "
    "of the later lap") {
  // take_new reads `next`, the slot's stamp and the slot's lease word, then
  // reads `next` again: an unchanged `next` proves that the stamp and the
  // lease word belong to the same sequence. Here the consumer is stopped
  // exactly before its lease-word load (the word's page is made unreadable
  // in its mapping, and the fault handler waits) while another consumer
  // and a publisher, through a mapping of their own, move the group on by a
  // whole lap. Without the re-check it would pair the stale stamp of 1023
  // with the lease word of 2047, take that word and count a phantom loss.
  constexpr std::uint32_t kCapacity = 1024;
  constexpr std::uint64_t kAt = kCapacity - 1;  // the sequence the consumer is stopped at
  ScopedGroupChannelName name;
  ChannelOptions o = small(Policy::block, kCapacity);
  o.slot_size = 64;
  o.max_groups = 1;
  Channel ch = make_channel(name, o);
  auto mine = ch.join_group("g", fast_group(3, 60'000));
  REQUIRE(mine);
  auto other_ch = Channel::open(name.str(), kTestBus);  // another mapping of the segment
  REQUIRE(other_ch);
  Worker w = join_with_publisher(*other_ch, fast_group(3, 60'000));
  Consumer& other = w.c;
  Publisher& pub = w.pub;
  std::byte buf[64];
  auto take_and_ack = [&](std::uint64_t from, std::uint64_t to) {  // [from, to)
    bool ok = true;
    std::byte own[64];
    for (std::uint64_t i = from; i < to; ++i) {
      Delivery d;
      ok = ok && other.receive(d, own) == PollStatus::ok && u64_of(d) == i && other.ack(d) == AckStatus::ok;
    }
    return ok;
  };
  for (std::uint64_t i = 0; i < kAt; ++i) REQUIRE(pub.publish(bytes_of(i)) == PublishStatus::ok);
  REQUIRE(take_and_ack(0, kAt));
  REQUIRE(pub.publish(bytes_of(kAt)) == PublishStatus::ok);  // next == kAt, committed, lease word unused

  // The page of kAt's lease word, in the mapping `mine` reads through. It must
  // hold nothing else the consumer reads first (next, floor, the stamps).
  const auto& state = shmbus::detail::state_of(ch);
  const std::size_t page_size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto page_of = [&](const void* p) { return reinterpret_cast<std::uintptr_t>(p) / page_size; };
  const auto* lease_word = &state->leases(0)[kAt & (kCapacity - 1)];
  REQUIRE(page_of(lease_word) != page_of(&state->group(0)->next));
  REQUIRE(page_of(lease_word) != page_of(&state->group(0)->floor));
  REQUIRE(page_of(lease_word) != page_of(&state->slot(kAt)->stamp));
  REQUIRE(page_of(lease_word) != page_of(&state->producer->head));
  g_park.page = reinterpret_cast<std::byte*>(page_of(lease_word) * page_size);
  g_park.size = page_size;
  g_park.parked.store(false);
  g_park.release.store(false);

  struct sigaction park {};
  park.sa_sigaction = park_on_fault;
  park.sa_flags = SA_SIGINFO;
  sigemptyset(&park.sa_mask);
  REQUIRE(::sigaction(SIGSEGV, &park, &g_previous_segv) == 0);
  const bool armed = ::mprotect(g_park.page, page_size, PROT_NONE) == 0;

  // While `mine` is parked: the other consumer takes kAt, then a publisher
  // laps the ring and the other consumer takes and acks all of it, so kAt's
  // slot holds 2047, acked, and `next` is 2048.
  std::atomic<bool> give_up{false};
  bool lapped_ok = false;
  std::thread mover([&] {
    while (!g_park.parked.load()) {
      if (give_up.load()) return;
      ::sched_yield();
    }
    lapped_ok = take_and_ack(kAt, kAt + 1);
    for (std::uint64_t i = kAt + 1; lapped_ok && i < kAt + 1 + kCapacity; ++i) {
      lapped_ok = pub.publish(bytes_of(i), {}, 0) == PublishStatus::ok;
    }
    lapped_ok = lapped_ok && take_and_ack(kAt + 1, kAt + 1 + kCapacity);
    g_park.release.store(true);
  });
  Delivery d;
  const PollStatus st = armed ? mine->receive(d, buf) : PollStatus::invalid;
  // Restore everything before any check can end the test.
  const bool was_parked = g_park.parked.load();
  give_up.store(true);
  mover.join();
  (void)::mprotect(g_park.page, page_size, PROT_READ | PROT_WRITE);
  (void)::sigaction(SIGSEGV, &g_previous_segv, nullptr);

  REQUIRE(armed);
  REQUIRE(was_parked);  // the consumer did stop at kAt's lease word
  REQUIRE(lapped_ok);
  CHECK(st == PollStatus::empty);  // 2048 is not published: nothing to take
  const ChannelStats stats = ch.stats();
  REQUIRE(stats.groups.size() == 1);
  const GroupStats& g = stats.groups[0];
  CHECK(g.lost == 0);
  CHECK(g.delivered == kAt + 1 + kCapacity);
  CHECK(g.acked == kAt + 1 + kCapacity);
  CHECK(g.next == kAt + 1 + kCapacity);
  CHECK(g.floor == kAt + 1 + kCapacity);
  CHECK(g.in_flight == 0);
  // Both consumers go on as before.
  REQUIRE(pub.publish(bytes_of(std::uint64_t{4242})) == PublishStatus::ok);
  REQUIRE(mine->receive(d, buf) == PollStatus::ok);
  CHECK(u64_of(d) == 4242);
  CHECK(mine->ack(d) == AckStatus::ok);
}

TEST_CASE("groups and subscribers see the same channel independently") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto g1 = ch.join_group("one", fast_group());
  auto g2 = ch.join_group("two", fast_group());
  auto sub = ch.subscribe({"", StartAt::earliest()});
  auto pub = ch.publisher();
  REQUIRE((g1 && g2 && sub && pub));
  for (std::uint64_t i = 0; i < 5; ++i) REQUIRE(pub->publish(bytes_of(i)) == PublishStatus::ok);
  std::byte buf[128];
  for (Consumer* c : {&g1.value(), &g2.value()}) {
    for (std::uint64_t i = 0; i < 5; ++i) {
      Delivery d;
      REQUIRE(c->receive(d, buf) == PollStatus::ok);
      CHECK(u64_of(d) == i);
      REQUIRE(c->ack(d) == AckStatus::ok);
    }
  }
  Message m;
  for (std::uint64_t i = 0; i < 5; ++i) {
    REQUIRE(sub->poll(m, buf) == PollStatus::ok);
    CHECK(value_of<std::uint64_t>(m.payload) == i);
  }
}

TEST_CASE("group bad input: foreign leases, other settings, full tables") {
  ScopedGroupChannelName name;
  ChannelOptions o = small();
  o.max_groups = 1;
  o.max_consumers = 1;
  Channel ch = make_channel(name, o);
  auto c = ch.join_group("g", fast_group());
  REQUIRE(c);
  Delivery bogus;
  bogus.group = 0;
  bogus.lease = 12345;
  CHECK(c->ack(bogus) == AckStatus::invalid);
  auto other = ch.join_group("g", fast_group(4));
  REQUIRE_FALSE(other);
  CHECK(other.error().code() == ErrorCode::parameter_mismatch);
  CHECK(other.error().message().find("max_deliveries 3; asked for 4") != std::string::npos);
  auto second = ch.join_group("g", fast_group());
  REQUIRE_FALSE(second);
  CHECK(second.error().code() == ErrorCode::table_full);
  auto another = ch.join_group("h", fast_group());
  REQUIRE_FALSE(another);
  CHECK(another.error().code() == ErrorCode::table_full);
  GroupOptions bad = fast_group();
  bad.max_deliveries = 0;
  CHECK(ch.join_group("g", bad).error().code() == ErrorCode::invalid_argument);
  Consumer empty;
  CHECK(empty.ack(bogus) == AckStatus::invalid);
  std::byte buf[8];
  CHECK(empty.receive(bogus, buf) == PollStatus::invalid);
}

TEST_CASE(
    "a message refused for a small buffer goes to the next receive with a larger one, as the same "
    "attempt") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  // A long visibility timeout: redelivery scans are 10 ms apart, so only the
  // refusal itself can make the message due again at once.
  auto [c, pub] = join_with_publisher(ch, fast_group(3, 10'000));
  const std::string text(40, 'x');
  REQUIRE(pub.publish(std::as_bytes(std::span(text))) == PublishStatus::ok);
  Delivery d;
  std::byte tiny[8];
  REQUIRE(c.receive(d, tiny) == PollStatus::buffer_too_small);
  CHECK(d.message.payload.size() == text.size());  // the size it needs
  std::byte buf[128];
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  CHECK(d.attempt == 1);  // the refused hand-over did not count
  CHECK(std::string(reinterpret_cast<const char*>(d.message.payload.data()), d.message.payload.size()) == text);
  CHECK(c.ack(d) == AckStatus::ok);
  CHECK(c.receive(d, buf) == PollStatus::empty);
}

// ---- the last attempt: dead-lettered at once, or due for the DLQ ----------

namespace {

/// The stats of the channel's only group.
GroupStats only_group(const Channel& ch) {
  const ChannelStats st = ch.stats();
  REQUIRE(st.groups.size() == 1);
  return st.groups[0];
}

}  // namespace

TEST_CASE("the final nack sends the message to the DLQ within the nack call, with no receive after it") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto [c, pub] = join_with_publisher(ch, fast_group(2, 10'000));
  REQUIRE(pub.publish(std::string_view("poison")) == PublishStatus::ok);
  std::byte buf[128];
  Delivery first;
  REQUIRE(c.receive(first, buf) == PollStatus::ok);
  REQUIRE(c.nack(first, 0) == AckStatus::ok);  // attempt 1 of 2: due again
  CHECK(only_group(ch).dead_lettered == 0);
  Delivery last;
  REQUIRE(c.receive_wait(last, buf, 2'000'000'000ULL) == PollStatus::ok);
  REQUIRE(last.attempt == 2);
  // The last attempt fails, asking for an hour's delay: no retry can follow,
  // so the delay must not hold the message back from the DLQ.
  REQUIRE(c.nack(last, 3'600'000'000'000ULL) == AckStatus::ok);
  const GroupStats gs = only_group(ch);
  CHECK(gs.dead_lettered == 1);
  CHECK(gs.floor == 1);
  CHECK(gs.due == 0);
  CHECK(gs.in_flight == 0);
  DlqReader reader(name.dlq());
  const bus::DlqRecord rec = reader.next(6);
  check_max_deliveries_letter(rec, reader.message(), 0, 2, "g", name.str());
}

TEST_CASE("a nack with the group's backoff on the last attempt also dead-letters at once") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  GroupOptions g = fast_group(1, 10'000);
  g.backoff_base_ns = 1'000'000'000;  // a second: far longer than this test looks
  g.backoff_cap_ns = 1'000'000'000;
  auto [c, pub] = join_with_publisher(ch, g);
  REQUIRE(pub.publish(std::string_view("once")) == PublishStatus::ok);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  REQUIRE(d.attempt == 1);
  REQUIRE(c.nack(d) == AckStatus::ok);
  CHECK(only_group(ch).dead_lettered == 1);
  DlqReader reader(name.dlq());
  check_max_deliveries_letter(reader.next(4), reader.message(), 0, 1, "g", name.str());
}

TEST_CASE(
    "a last lease that expired is due for the DLQ in the stats, and dead_letter_due moves it without "
    "any receive") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  // A lease long enough that the in-flight checks below come before its
  // deadline even on a loaded machine (a 20 ms one ran out first there).
  auto [c, pub] = join_with_publisher(ch, fast_group(1, 300));
  REQUIRE(pub.publish(std::string_view("late")) == PublishStatus::ok);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  REQUIRE(d.attempt == 1);
  const GroupStats leased = only_group(ch);
  if (shm::monotonic_ns() < d.deadline_ns) {  // still before the deadline: in flight
    CHECK(leased.dlq_due == 0);
    CHECK(leased.in_flight == 1);
  }
  // The consumer hangs on its last attempt. Wait out the lease deadline
  // (bounded): the stats see it from the lease word alone.
  GroupStats gs = only_group(ch);
  const std::uint64_t bound = shm::monotonic_ns() + 10'000'000'000ULL;
  while (gs.dlq_due == 0 && shm::monotonic_ns() < bound) gs = only_group(ch);
  CHECK(gs.dlq_due == 1);
  CHECK(gs.in_flight == 0);
  CHECK(gs.dead_lettered == 0);
  auto moved = ch.dead_letter_due();
  REQUIRE(moved);
  CHECK(moved.value() == 1);
  gs = only_group(ch);
  CHECK(gs.dlq_due == 0);
  CHECK(gs.dead_lettered == 1);
  CHECK(gs.expired == 1);
  CHECK(gs.floor == 1);
  CHECK(c.ack(d) == AckStatus::lease_lost);  // the hung consumer wakes up too late
  auto again = ch.dead_letter_due();
  REQUIRE(again);
  CHECK(again.value() == 0);
  DlqReader reader(name.dlq());
  check_max_deliveries_letter(reader.next(4), reader.message(), 0, 1, "g", name.str());
  CHECK(reader.poll() == PollStatus::empty);  // moved once
}

TEST_CASE("a final nack that the DLQ cannot take stays due for the DLQ until there is room") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto [c, pub] = join_with_publisher(ch, fast_group(1, 10'000));
  // Fill the DLQ: its retaining cursor holds every slot.
  auto dlq = Channel::open(name.dlq(), kTestBus);
  REQUIRE(dlq);
  {
    auto filler = dlq->publisher();
    REQUIRE(filler);
    while (filler->publish(std::string_view("filler"), {}, 0) == PublishStatus::ok) {
    }
  }
  const std::uint64_t fillers = dlq->head();
  REQUIRE(pub.publish(std::string_view("stuck")) == PublishStatus::ok);
  std::byte buf[128];
  Delivery d;
  REQUIRE(c.receive(d, buf) == PollStatus::ok);
  CHECK(c.nack(d, 0) == AckStatus::dlq_unavailable);
  GroupStats gs = only_group(ch);
  CHECK(gs.dlq_due == 1);
  CHECK(gs.due == 0);
  CHECK(gs.dead_lettered == 0);
  CHECK(gs.dlq_failures >= 1);
  auto none = ch.dead_letter_due();  // still full
  REQUIRE(none);
  CHECK(none.value() == 0);
  CHECK(only_group(ch).dlq_due == 1);
  {
    // An operator drains the fillers through the retaining cursor.
    auto retainer = dlq->subscribe({std::string(bus::kDlqRetainer), StartAt::earliest()});
    REQUIRE(retainer);
    Message m;
    for (std::uint64_t i = 0; i < fillers; ++i) REQUIRE(retainer->poll(m, buf) == PollStatus::ok);
  }
  auto moved = ch.dead_letter_due();
  REQUIRE(moved);
  CHECK(moved.value() == 1);
  gs = only_group(ch);
  CHECK(gs.dlq_due == 0);
  CHECK(gs.dead_lettered == 1);
  CHECK(gs.floor == 1);
}

TEST_CASE("dead_letter_due refuses a read-only channel") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small());
  auto ro = Channel::open_read_only(name.str(), kTestBus);
  REQUIRE(ro);
  auto r = ro->dead_letter_due();
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::permission_denied);
}

TEST_CASE("a group started at a time older than the ring counts the overwritten messages as lost") {
  ScopedGroupChannelName name;
  Channel ch = make_channel(name, small(Policy::drop_oldest, 4));
  auto pub = ch.publisher();
  REQUIRE(pub);
  REQUIRE(publish_stamped(*pub, 10, 1000, 10));
  GroupOptions g = fast_group();
  g.start = StartAt::at_time(1005);  // older than the oldest held message (1060)
  auto c = ch.join_group("g", g);
  REQUIRE(c);
  CHECK(only_group(ch).lost == 6);  // as a group lapped there counts them
  std::byte buf[128];
  for (std::uint64_t i = 6; i < 10; ++i) {
    Delivery d;
    REQUIRE(c->receive(d, buf) == PollStatus::ok);
    CHECK(u64_of(d) == i);
    REQUIRE(c->ack(d) == AckStatus::ok);
  }
  GroupOptions inside = fast_group();
  inside.start = StartAt::at_time(1065);
  auto c2 = ch.join_group("h", inside);
  REQUIRE(c2);
  for (const auto& gs : ch.stats().groups)
    if (gs.name == "h") CHECK(gs.lost == 0);
  Delivery d;
  REQUIRE(c2->receive(d, buf) == PollStatus::ok);
  CHECK(u64_of(d) == 7);
}
