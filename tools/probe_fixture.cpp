// Test fixture for the probe: makes a channel the probe can inspect, then
// exits (the segment stays in /dev/shm).
//   shmbus_probe_fixture BUS CHANNEL           create: 10 messages published,
//                                              durable subscriber "lagger" read 3
//   shmbus_probe_fixture BUS CHANNEL --remove  remove the channel
// Prints nothing on success; errors go to stderr with exit code 1.
#include <array>
#include <cstddef>
#include <iostream>
#include <string>

#include <shmbus/channel.hpp>

using namespace shmbus;

namespace {
int fail(const std::string& what) {
  std::cerr << "shmbus_probe_fixture: " << what << '\n';
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return fail("usage: shmbus_probe_fixture BUS CHANNEL [--remove]");
  const std::string bus = argv[1];
  const std::string name = argv[2];
  if (argc > 3 && std::string(argv[3]) == "--remove") {
    auto r = Channel::remove(name, bus);
    return r ? 0 : fail(r.error().message());
  }
  ChannelOptions opts;
  opts.capacity = 64;
  auto ch = Channel::create(name, opts, bus);
  if (!ch) return fail(ch.error().message());
  SubscribeOptions so;
  so.name = "lagger";
  so.start = StartAt::earliest();
  auto sub = ch->subscribe(so);
  if (!sub) return fail(sub.error().message());
  auto pub = ch->publisher();
  if (!pub) return fail(pub.error().message());
  for (int i = 0; i < 10; ++i)
    if (pub->publish("message " + std::to_string(i)) != PublishStatus::ok)
      return fail("publish failed");
  std::array<std::byte, 256> buf{};
  for (int i = 0; i < 3; ++i) {
    Message m;
    if (sub->poll(m, buf) != PollStatus::ok) return fail("poll failed");
  }
  return 0;
}
