// An outside user of shmbus: a round trip through the C++20 API (channel,
// publisher, subscriber, consumer group), and the C API called from C++.
// Usage: consumer BUS CHANNEL. Exits 0 when every check holds.
#include <cstdio>
#include <cstring>
#include <string>

#include <shmbus/shmbus.h>
#include <shmbus/shmbus.hpp>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BUS CHANNEL\n", argv[0]);
    return 2;
  }
  const std::string bus = argv[1];
  const std::string name = argv[2];
  constexpr int kCount = 10;

  shmbus::ChannelOptions opts;
  opts.capacity = 64;
  auto ch = shmbus::Channel::create(name, opts, bus);
  if (!ch) {
    std::fprintf(stderr, "create: %s\n", ch.error().message().c_str());
    return 1;
  }
  shmbus::SubscribeOptions so;
  so.start = shmbus::StartAt::earliest();
  auto sub = ch->subscribe(so);
  auto group = ch->join_group("workers");
  auto pub = ch->publisher();
  check(sub.ok() && group.ok() && pub.ok(), "subscribe, join_group and publisher succeed");
  if (failures != 0) return 1;

  for (int i = 0; i < kCount; ++i) {
    shmbus::MessageMeta meta;
    meta.key = static_cast<std::uint64_t>(i);
    const std::string text = "item-" + std::to_string(i);
    check(pub->publish(text, meta) == shmbus::PublishStatus::ok, "publish");
  }
  std::byte buf[256];
  for (int i = 0; i < kCount; ++i) {
    shmbus::Message m;
    check(sub->poll(m, buf) == shmbus::PollStatus::ok, "subscriber poll");
    const std::string want = "item-" + std::to_string(i);
    check(m.key == static_cast<std::uint64_t>(i) && m.payload.size() == want.size() &&
              std::memcmp(m.payload.data(), want.data(), want.size()) == 0,
          "subscriber sees every message in order");
    shmbus::Delivery d;
    check(group->receive(d, buf) == shmbus::PollStatus::ok, "group receive");
    check(d.sequence == static_cast<std::uint64_t>(i) && d.attempt == 1, "group delivers in order");
    check(group->ack(d) == shmbus::AckStatus::ok, "ack");
  }
  const shmbus::ChannelStats st = ch->stats();
  check(st.head == kCount && st.groups.size() == 1 && st.groups[0].acked == kCount, "stats count every message");

  // The C API from C++: the header's extern "C" block, the version.
  check(std::strcmp(shmbus_version(), SHMBUS_EXPECTED_VERSION) == 0, "shmbus_version() is the expected one");
  check(std::strcmp(shmbus_strerror(SHMBUS_LEASE_LOST), "lease_lost") == 0, "shmbus_strerror");
  shmbus_channel* c = nullptr;
  check(shmbus_channel_open(bus.c_str(), name.c_str(), SHMBUS_DEFAULT_INIT_WAIT_NS, &c) == SHMBUS_OK,
        "C open of the same channel");
  check(shmbus_channel_max_payload(c) == ch->max_payload(), "C and C++ see the same channel");
  shmbus_channel_close(c);

  (void)shmbus::Channel::remove(name, bus);
  (void)shmbus::Channel::remove(name + "-dlq", bus);
  if (failures != 0) return 1;
  std::printf("C++ consumer ok: %d messages through a subscriber and a group (shmbus %s)\n", kCount, shmbus_version());
  return 0;
}
