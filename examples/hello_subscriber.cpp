// The smallest shmbus subscriber: opens (or creates) channel "hello", reads
// from the oldest message it still holds and prints each one until "bye".
// Gives up after 10 s without a message.
//
//   hello_subscriber [BUS]         (BUS defaults to "default")
#include <shmbus/shmbus.hpp>

#include <cstdio>
#include <string>
#include <string_view>

int main(int argc, char** argv) {
  const std::string bus = argc > 1 ? argv[1] : "default";
  shmbus::ChannelOptions opts;  // must equal the publisher's (else parameter_mismatch)
  auto ch = shmbus::Channel::open_or_create("hello", opts, bus);
  if (!ch) {
    std::fprintf(stderr, "hello_subscriber: %s\n", ch.error().message().c_str());
    return 1;
  }
  shmbus::SubscribeOptions so;  // anonymous: freed when this process exits (.name: durable)
  so.start = shmbus::StartAt::earliest();
  auto sub = ch->subscribe(so);
  if (!sub) {
    std::fprintf(stderr, "hello_subscriber: %s\n", sub.error().message().c_str());
    return 1;
  }
  std::byte buf[256];
  shmbus::Message m;
  for (int idle = 0; idle < 10;) {
    const shmbus::PollStatus st = sub->poll_wait(m, buf, 1'000'000'000ULL);  // up to 1 s
    if (st == shmbus::PollStatus::timeout) {
      ++idle;
      continue;
    }
    if (st == shmbus::PollStatus::lapped) continue;  // lost messages, counted in counters().lost
    if (st != shmbus::PollStatus::ok) {
      std::fprintf(stderr, "hello_subscriber: poll: %s\n", std::string(shmbus::to_string(st)).c_str());
      return 1;
    }
    const std::string_view text(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    std::printf("#%llu key=%llu: %.*s\n", static_cast<unsigned long long>(m.sequence),
                static_cast<unsigned long long>(m.key), static_cast<int>(text.size()), text.data());
    if (text == "bye") return 0;
    idle = 0;
  }
  std::fprintf(stderr, "hello_subscriber: no \"bye\" within 10 s\n");
  return 1;
}
