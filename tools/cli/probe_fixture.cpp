// Test fixture for the shmbus CLI: makes channels the CLI can inspect.
//   shmbus_probe_fixture BUS CHANNEL           create CHANNEL (capacity 64): 10 messages
//                                              published; durable subscriber "lagger" read 3;
//                                              group "workers": one message dead-lettered
//                                              (in CHANNEL-dlq), one leased by a consumer
//                                              process that was then killed (SIGKILL)
//   shmbus_probe_fixture BUS CHANNEL --hold    attach a live publisher and an anonymous
//                                              subscriber, print "ready", and hold them
//                                              until stdin closes
//   shmbus_probe_fixture BUS CHANNEL --last-attempt
//                                              create CHANNEL: group "workers" with
//                                              max_deliveries 1, one message leased (its
//                                              last attempt) by a consumer process that
//                                              was then killed; no consumer left
//   shmbus_probe_fixture BUS CHANNEL --remove  remove CHANNEL and CHANNEL-dlq
//   shmbus_probe_fixture BUS CHANNEL --wide N  create CHANNEL with N durable subscribers
//                                              with 63-character names (a large
//                                              Prometheus page: about 1.2 KB each)
// Errors go to stderr with exit code 1.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iostream>
#include <string>

#include <shmbus/channel.hpp>

using namespace shmbus;

namespace {

int fail(const std::string& what) {
  std::cerr << "shmbus_probe_fixture: " << what << '\n';
  return 1;
}

GroupOptions group_options(std::uint32_t max_deliveries = 3) {
  GroupOptions go;
  go.start = StartAt::earliest();
  go.visibility_timeout_ns = 3'600'000'000'000ULL;  // the dead consumer's lease stays in flight
  go.max_deliveries = max_deliveries;
  return go;
}

// A consumer process that takes one lease and is killed before its ack. The
// pipe tells the parent the lease is held, so the kill lands after it.
int leave_dead_consumer(Channel& ch, std::uint32_t max_deliveries = 3) {
  int fds[2];
  if (pipe(fds) != 0) return fail("pipe");
  const pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    close(fds[0]);
    auto c = ch.join_group("workers", group_options(max_deliveries));
    std::array<std::byte, 256> buf{};
    Delivery d;
    char ok = (c && c->receive(d, buf) == PollStatus::ok) ? 'y' : 'n';
    (void)!write(fds[1], &ok, 1);
    for (;;) pause();  // killed by the parent, lease held
  }
  close(fds[1]);
  char ok = 'n';
  const bool got = read(fds[0], &ok, 1) == 1 && ok == 'y';
  close(fds[0]);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return got ? 0 : fail("the consumer process could not take a lease");
}

int create(const std::string& bus, const std::string& name) {
  ChannelOptions opts;
  opts.capacity = 64;
  auto ch = Channel::create(name, opts, bus);
  if (!ch) return fail(ch.error().message());
  SubscribeOptions so;
  so.name = "lagger";
  so.start = StartAt::earliest();
  auto sub = ch->subscribe(so);
  if (!sub) return fail(sub.error().message());
  auto con = ch->join_group("workers", group_options());
  if (!con) return fail(con.error().message());
  auto pub = ch->publisher();
  if (!pub) return fail(pub.error().message());
  for (int i = 0; i < 10; ++i) {
    MessageMeta meta;
    meta.id = 5000 + static_cast<std::uint64_t>(i);  // the tests look for the ids in the output
    if (pub->publish("message " + std::to_string(i), meta) != PublishStatus::ok) return fail("publish failed");
  }
  std::array<std::byte, 256> buf{};
  for (int i = 0; i < 3; ++i) {
    Message m;
    if (sub->poll(m, buf) != PollStatus::ok) return fail("poll failed");
  }
  // Message 0: acked. Message 1: rejected to the DLQ. Message 2: leased by a
  // consumer that dies.
  Delivery d;
  if (con->receive(d, buf) != PollStatus::ok || con->ack(d) != AckStatus::ok) return fail("ack failed");
  if (con->receive(d, buf) != PollStatus::ok || con->dead_letter(d) != AckStatus::ok) return fail("dead_letter failed");
  return leave_dead_consumer(*ch);
}

int create_last_attempt(const std::string& bus, const std::string& name) {
  ChannelOptions opts;
  opts.capacity = 64;
  auto ch = Channel::create(name, opts, bus);
  if (!ch) return fail(ch.error().message());
  {
    auto pub = ch->publisher();
    if (!pub) return fail(pub.error().message());
    if (pub->publish(std::string_view("last chance")) != PublishStatus::ok) return fail("publish failed");
  }
  return leave_dead_consumer(*ch, 1);
}

int hold(const std::string& bus, const std::string& name) {
  auto ch = Channel::open(name, bus);
  if (!ch) return fail(ch.error().message());
  auto pub = ch->publisher();
  if (!pub) return fail(pub.error().message());
  auto sub = ch->subscribe();
  if (!sub) return fail(sub.error().message());
  std::cout << "ready" << std::endl;
  char c;
  while (read(STDIN_FILENO, &c, 1) > 0) {
  }
  return 0;
}

int wide(const std::string& bus, const std::string& name, const std::string& count) {
  std::uint32_t n = 0;
  try {
    n = static_cast<std::uint32_t>(std::stoul(count));
  } catch (const std::exception&) {
    return fail("--wide wants a count of subscribers, got '" + count + "'");
  }
  ChannelOptions opts;
  opts.capacity = 2;
  opts.slot_size = 64;
  opts.max_subscribers = n;
  opts.max_publishers = 1;
  opts.max_groups = 1;
  auto ch = Channel::create(name, opts, bus);
  if (!ch) return fail(ch.error().message());
  for (std::uint32_t i = 0; i < n; ++i) {
    SubscribeOptions so;
    so.name = std::to_string(i);
    so.name.insert(0, 63 - so.name.size(), 's');  // the longest name the table holds
    auto sub = ch->subscribe(so);
    if (!sub) return fail(sub.error().message());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return fail("usage: shmbus_probe_fixture BUS CHANNEL [--hold|--last-attempt|--remove|--wide N]");
  const std::string bus = argv[1];
  const std::string name = argv[2];
  const std::string mode = argc > 3 ? argv[3] : "";
  if (mode == "--remove") {
    (void)Channel::remove(name + "-dlq", bus);
    auto r = Channel::remove(name, bus);
    return r ? 0 : fail(r.error().message());
  }
  if (mode == "--hold") return hold(bus, name);
  if (mode == "--wide" && argc > 4) return wide(bus, name, argv[4]);
  if (mode == "--last-attempt") return create_last_attempt(bus, name);
  if (!mode.empty()) return fail("unknown option " + mode);
  return create(bus, name);
}
