// Checkpoints: the file format round trip, capture from a live channel's
// tables, the atomic write, and damage of every kind read back as a clear
// error naming the file (never a crash).
#include "bus/archive/checkpoint.hpp"

#include "../group/group_test_util.hpp"
#include "api/detail.hpp"
#include "bus/archive/crc32c.hpp"
#include "shm/file.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace archive = shmbus::bus::archive;
using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::ErrorCode;
using ScopedChannelName = shmbus::test::ScopedGroupChannelName;  // takes its DLQ with it
using shmbus::test::TempDir;

namespace {

archive::Checkpoint sample_checkpoint() {
  archive::Checkpoint cp;
  cp.taken_ns = 1'700'000'000'123'456'789ull;
  cp.head = 12345;
  for (int i = 0; i < 3; ++i) {
    archive::SubscriberCheckpoint s;
    s.name = "sub-" + std::to_string(i);
    s.cursor = 1000u + static_cast<std::uint64_t>(i);
    s.flags = shmbus::bus::kSubDurable | (i == 1 ? 0x80000000u : 0u);
    s.state = i == 2 ? shmbus::bus::kEntryEvicted : shmbus::bus::kEntryDetached;
    s.delivered = 7u + static_cast<std::uint64_t>(i);
    s.lost = 3;
    s.lapped_events = 1;
    s.attached_ns = 99;
    cp.subscribers.push_back(s);
  }
  for (int i = 0; i < 2; ++i) {
    archive::GroupCheckpoint g;
    g.name = "group-" + std::to_string(i);
    g.dlq = i == 0 ? "the-dlq" : "";
    g.visibility_timeout_ns = 5'000'000'000ull;
    g.backoff_base_ns = 1'000'000;
    g.backoff_cap_ns = 2'000'000;
    g.max_deliveries = 4;
    g.jitter_permille = 100;
    g.ordering = static_cast<std::uint32_t>(i);
    g.order_window = i == 1 ? 64 : 0;
    g.created_ns = 42;
    g.floor = 900;
    g.next = 950;
    g.delivered = 1;
    g.acked = 2;
    g.redelivered = 3;
    g.dead_lettered = 4;
    g.nacked = 5;
    g.expired = 6;
    g.lost = 7;
    g.dlq_failures = 8;
    cp.groups.push_back(g);
  }
  return cp;
}

void require_equal(const archive::Checkpoint& a, const archive::Checkpoint& b) {
  REQUIRE(a.taken_ns == b.taken_ns);
  REQUIRE(a.head == b.head);
  REQUIRE(a.subscribers.size() == b.subscribers.size());
  for (std::size_t i = 0; i < a.subscribers.size(); ++i) {
    const auto& x = a.subscribers[i];
    const auto& y = b.subscribers[i];
    REQUIRE(x.name == y.name);
    REQUIRE(x.cursor == y.cursor);
    REQUIRE(x.flags == y.flags);
    REQUIRE(x.state == y.state);
    REQUIRE(x.delivered == y.delivered);
    REQUIRE(x.lost == y.lost);
    REQUIRE(x.lapped_events == y.lapped_events);
    REQUIRE(x.attached_ns == y.attached_ns);
  }
  REQUIRE(a.groups.size() == b.groups.size());
  for (std::size_t i = 0; i < a.groups.size(); ++i) {
    const auto& x = a.groups[i];
    const auto& y = b.groups[i];
    REQUIRE(x.name == y.name);
    REQUIRE(x.dlq == y.dlq);
    REQUIRE(x.visibility_timeout_ns == y.visibility_timeout_ns);
    REQUIRE(x.backoff_base_ns == y.backoff_base_ns);
    REQUIRE(x.backoff_cap_ns == y.backoff_cap_ns);
    REQUIRE(x.max_deliveries == y.max_deliveries);
    REQUIRE(x.jitter_permille == y.jitter_permille);
    REQUIRE(x.ordering == y.ordering);
    REQUIRE(x.order_window == y.order_window);
    REQUIRE(x.created_ns == y.created_ns);
    REQUIRE(x.floor == y.floor);
    REQUIRE(x.next == y.next);
    REQUIRE(x.delivered == y.delivered);
    REQUIRE(x.acked == y.acked);
    REQUIRE(x.redelivered == y.redelivered);
    REQUIRE(x.dead_lettered == y.dead_lettered);
    REQUIRE(x.nacked == y.nacked);
    REQUIRE(x.expired == y.expired);
    REQUIRE(x.lost == y.lost);
    REQUIRE(x.dlq_failures == y.dlq_failures);
  }
}

}  // namespace

TEST_CASE("a checkpoint encodes and decodes to the same durable state", "[archive][checkpoint]") {
  const archive::Checkpoint cp = sample_checkpoint();
  auto bytes = archive::encode_checkpoint(cp);
  REQUIRE(bytes.ok());
  REQUIRE(bytes->size() == 64 + 3 * 128 + 2 * 256 + 4);
  REQUIRE(std::memcmp(bytes->data(), "SHMBCKP1", 8) == 0);
  auto back = archive::decode_checkpoint(*bytes, "x/checkpoint");
  REQUIRE(back.ok());
  require_equal(cp, *back);

  archive::Checkpoint empty;
  auto eb = archive::encode_checkpoint(empty);
  REQUIRE(eb.ok());
  auto e = archive::decode_checkpoint(*eb, "x/checkpoint");
  REQUIRE(e.ok());
  REQUIRE(e->subscribers.empty());
  REQUIRE(e->groups.empty());
}

TEST_CASE("a checkpoint is written atomically, read back, and absent reads as none", "[archive][checkpoint]") {
  TempDir dir("shmbus-ckpt");
  const std::string sub = dir.sub("a/b");  // created by the write
  auto none = archive::read_checkpoint(sub);
  REQUIRE(none.ok());
  REQUIRE(!none->has_value());

  const archive::Checkpoint cp = sample_checkpoint();
  REQUIRE(archive::write_checkpoint(sub, cp).ok());
  auto names = shmbus::shm::list_directory(sub);
  REQUIRE(names.ok());
  REQUIRE(*names == std::vector<std::string>{"checkpoint"});  // no temporary left behind
  auto back = archive::read_checkpoint(sub);
  REQUIRE(back.ok());
  REQUIRE(back->has_value());
  require_equal(cp, **back);

  // A second write replaces the first whole; a temporary a killed writer
  // left behind does not get in the way.
  archive::Checkpoint cp2 = cp;
  cp2.head = 99999;
  cp2.subscribers.pop_back();
  {
    auto junk = shmbus::shm::File::create_new(sub + "/checkpoint.tmp");
    REQUIRE(junk.ok());
  }
  REQUIRE(archive::write_checkpoint(sub, cp2).ok());
  auto back2 = archive::read_checkpoint(sub);
  REQUIRE(back2.ok());
  require_equal(cp2, **back2);
}

TEST_CASE("random damage to a checkpoint is an error naming the file, never a crash", "[archive][checkpoint]") {
  auto good = archive::encode_checkpoint(sample_checkpoint());
  REQUIRE(good.ok());
  const std::string path = "/some/dir/checkpoint";
  std::mt19937_64 rng(20260417);
  int errors = 0;
  constexpr int kTrials = 3000;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::vector<std::byte> b = *good;
    switch (trial % 5) {
      case 0: {  // flip 1..8 random bytes
        const int n = 1 + static_cast<int>(rng() % 8);
        for (int i = 0; i < n; ++i) b[rng() % b.size()] ^= static_cast<std::byte>(1 + rng() % 255);
        break;
      }
      case 1:  // cut short anywhere
        b.resize(rng() % b.size());
        break;
      case 2:  // garbage appended
        for (std::uint64_t i = 0, n = 1 + rng() % 300; i < n; ++i) b.push_back(static_cast<std::byte>(rng()));
        break;
      case 3:  // all random bytes, of a random length
        b.resize(rng() % 2000);
        for (auto& x : b) x = static_cast<std::byte>(rng());
        break;
      default: {  // a valid CRC over damaged counts or names: the field checks catch it
        const std::size_t at = rng() % (b.size() - 4);
        b[at] ^= static_cast<std::byte>(1 + rng() % 255);
        const std::uint32_t crc = archive::crc32c(std::span<const std::byte>(b.data(), b.size() - 4));
        std::memcpy(b.data() + b.size() - 4, &crc, 4);
        break;
      }
    }
    auto r = archive::decode_checkpoint(b, path);
    if (r.ok()) {
      // Only a re-checksummed change of a field with no constraint (a count,
      // a cursor, a time) may pass, and then it decodes to sane entries.
      REQUIRE(trial % 5 == 4);
      for (const auto& s : r->subscribers) REQUIRE((!s.name.empty() && s.name.size() <= 63));
      for (const auto& g : r->groups) REQUIRE(g.next >= g.floor);
      continue;
    }
    ++errors;
    INFO(r.error().message());
    REQUIRE((r.error().code() == ErrorCode::corrupted || r.error().code() == ErrorCode::version_mismatch));
    REQUIRE(r.error().message().find(path) != std::string::npos);
  }
  REQUIRE(errors >= kTrials * 4 / 5);
}

TEST_CASE("a damaged checkpoint file reads as corrupted with its path", "[archive][checkpoint]") {
  TempDir dir("shmbus-ckpt");
  REQUIRE(archive::write_checkpoint(dir.str(), sample_checkpoint()).ok());
  const std::string path = dir.sub("checkpoint");
  auto bytes = shmbus::shm::read_file(path, 1 << 20);
  REQUIRE(bytes.ok());
  (*bytes)[100] ^= std::byte{0x40};
  {
    REQUIRE(shmbus::shm::remove_file(path).ok());
    auto f = shmbus::shm::File::create_new(path);
    REQUIRE(f.ok());
    REQUIRE(f->write_all(*bytes).ok());
  }
  auto r = archive::read_checkpoint(dir.str());
  REQUIRE(!r.ok());
  REQUIRE(r.error().code() == ErrorCode::corrupted);
  REQUIRE(r.error().message().find(path) != std::string::npos);
  REQUIRE(r.error().message().find("CRC32C") != std::string::npos);
}

TEST_CASE("capture_checkpoint takes durable subscribers and groups, not anonymous readers", "[archive][checkpoint]") {
  ScopedChannelName name("ckpt");
  ChannelOptions o;
  o.capacity = 64;
  o.slot_size = 128;
  o.max_groups = 2;
  Channel ch = shmbus::test::make_channel(name, o);
  auto pub = ch.publisher();
  REQUIRE(pub.ok());
  for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(pub->publish(shmbus::test::bytes_of(i)) == shmbus::PublishStatus::ok);
  shmbus::SubscribeOptions so;
  so.name = "durable-a";
  so.start = shmbus::StartAt::earliest();
  auto a = ch.subscribe(so);
  REQUIRE(a.ok());
  std::byte buf[64];
  shmbus::Message m;
  for (int i = 0; i < 4; ++i) REQUIRE(a->poll(m, buf) == shmbus::PollStatus::ok);
  so.name = "durable-b";
  {
    auto b = ch.subscribe(so);  // detached again at the end of the scope
    REQUIRE(b.ok());
    REQUIRE(b->poll(m, buf) == shmbus::PollStatus::ok);
  }
  auto anon = ch.subscribe({});
  REQUIRE(anon.ok());
  shmbus::GroupOptions go;
  go.visibility_timeout_ns = 7'000'000'000ull;
  go.max_deliveries = 3;
  go.dlq = name.dlq();
  auto c = ch.join_group("workers", go);
  REQUIRE(c.ok());
  shmbus::Delivery d;
  REQUIRE(c->receive(d, buf) == shmbus::PollStatus::ok);
  REQUIRE(c->ack(d) == shmbus::AckStatus::ok);
  REQUIRE(c->receive(d, buf) == shmbus::PollStatus::ok);  // in flight

  const archive::Checkpoint cp = archive::capture_checkpoint(*shmbus::detail::state_of(ch));
  REQUIRE(cp.head == 10);
  REQUIRE(cp.subscribers.size() == 2);
  REQUIRE(cp.subscribers[0].name == "durable-a");
  REQUIRE(cp.subscribers[0].cursor == 4);
  REQUIRE(cp.subscribers[0].state == shmbus::bus::kEntryActive);
  REQUIRE(cp.subscribers[0].delivered == 4);
  REQUIRE(cp.subscribers[1].name == "durable-b");
  REQUIRE(cp.subscribers[1].cursor == 1);
  REQUIRE(cp.subscribers[1].state == shmbus::bus::kEntryDetached);
  for (const auto& s : cp.subscribers) REQUIRE((s.flags & shmbus::bus::kSubDurable) != 0);
  REQUIRE(cp.groups.size() == 1);
  const auto& g = cp.groups[0];
  REQUIRE(g.name == "workers");
  REQUIRE(g.dlq == name.dlq());
  REQUIRE(g.visibility_timeout_ns == 7'000'000'000ull);
  REQUIRE(g.max_deliveries == 3);
  REQUIRE(g.backoff_base_ns == go.backoff_base_ns);
  REQUIRE(g.jitter_permille == go.jitter_permille);
  REQUIRE(g.floor == 1);
  REQUIRE(g.next == 2);
  REQUIRE(g.acked == 1);
  REQUIRE(g.delivered == 2);

  TempDir dir("shmbus-ckpt");
  auto written = archive::checkpoint_channel(*shmbus::detail::state_of(ch), dir.str());
  REQUIRE(written.ok());
  auto back = archive::read_checkpoint(dir.str());
  REQUIRE(back.ok());
  REQUIRE(back->has_value());
  REQUIRE((*back)->subscribers.size() == 2);
  REQUIRE((*back)->groups.size() == 1);
}
