// The smallest shmbus publisher: creates (or opens) channel "hello" and
// publishes ten greetings and a "bye". Run hello_subscriber in another
// terminal, before or after this one: it reads from the oldest message.
//
//   hello_publisher [BUS]          (BUS defaults to "default")
#include <shmbus/shmbus.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string bus = argc > 1 ? argv[1] : "default";
  shmbus::ChannelOptions opts;  // 1024 slots of 256 bytes, block policy, mode 0600
  auto ch = shmbus::Channel::open_or_create("hello", opts, bus);
  if (!ch) {
    std::fprintf(stderr, "hello_publisher: %s\n", ch.error().message().c_str());
    return 1;
  }
  auto pub = ch->publisher();
  if (!pub) {
    std::fprintf(stderr, "hello_publisher: %s\n", pub.error().message().c_str());
    return 1;
  }
  for (int i = 1; i <= 11; ++i) {
    const std::string text = i <= 10 ? "hello #" + std::to_string(i) : "bye";
    const shmbus::PublishStatus st = pub->publish(text, {.key = static_cast<std::uint64_t>(i)});
    if (st != shmbus::PublishStatus::ok) {  // timeout (block), full (reject), too_large
      std::fprintf(stderr, "hello_publisher: '%s' not published: %s\n", text.c_str(),
                   std::string(shmbus::to_string(st)).c_str());
      return 1;
    }
    std::printf("published: %s\n", text.c_str());
  }
  return 0;
}
