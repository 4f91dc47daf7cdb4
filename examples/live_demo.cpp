// shmbus live demo: a running bus for the `shmbus` probe to watch.
//
// Creates channel "live" (block policy, 4096 slots) on the given bus and
// forks:
//   - a publisher: "order N" about 2,000 times a second;
//   - durable subscriber "analytics": keeps up;
//   - durable subscriber "audit": works ~1 ms per message, so it lags and
//     its lag grows until the ring is full (then it paces the publisher);
//   - group "billing" with two workers that receive and ack; order 13 is
//     poisoned: the worker that gets it dead-letters it (DLQ "live-dlq").
// Prints "live demo ready" once every child is running and the poisoned
// order is in the DLQ, then keeps going until stdin closes (or SIGINT /
// SIGTERM); then stops the children and removes both channels.
//
//   shmbus_live_demo [--bus NAME]      (default bus: demo)
// scripts/demo.sh runs it and points `shmbus ls / stat / watch / check /
// dlq list` at it.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <shmbus/shmbus.hpp>

using namespace shmbus;

namespace {

constexpr const char* kChannel = "live";
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

bool stopping() { return g_stop.load(std::memory_order_relaxed) || getppid() == 1; }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "shmbus_live_demo[%d]: %s\n", getpid(), what.c_str());
  _exit(1);
}

void signal_ready(int fd) {
  const char c = 'r';
  if (write(fd, &c, 1) != 1) die("cannot signal the parent");
}

void run_publisher(const std::string& bus, int ready_fd) {
  auto ch = Channel::open(kChannel, bus);
  if (!ch) die(ch.error().message());
  auto pub = ch->publisher();
  if (!pub) die(pub.error().message());
  signal_ready(ready_fd);
  for (std::uint64_t n = 0; !stopping(); ++n) {
    const std::string body = "order " + std::to_string(n);
    MessageMeta meta;
    meta.key = n;
    while (!stopping() && pub->publish(body, meta, 100'000'000ULL) == PublishStatus::timeout) {
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

void run_subscriber(const std::string& bus, const char* name, std::uint64_t work_us, int ready_fd) {
  auto ch = Channel::open(kChannel, bus);
  if (!ch) die(ch.error().message());
  SubscribeOptions so;
  so.name = name;
  so.start = StartAt::earliest();
  auto sub = ch->subscribe(so);
  if (!sub) die(sub.error().message());
  signal_ready(ready_fd);
  std::array<std::byte, 256> buf{};
  while (!stopping()) {
    Message m;
    if (sub->poll_wait(m, buf, 100'000'000ULL) != PollStatus::ok) continue;
    if (work_us != 0) std::this_thread::sleep_for(std::chrono::microseconds(work_us));
  }
}

void run_worker(const std::string& bus, int ready_fd, int poison_fd) {
  auto ch = Channel::open(kChannel, bus);
  if (!ch) die(ch.error().message());
  GroupOptions go;
  go.start = StartAt::earliest();
  go.visibility_timeout_ns = 5'000'000'000ULL;
  auto con = ch->join_group("billing", go);
  if (!con) die(con.error().message());
  signal_ready(ready_fd);
  std::array<std::byte, 256> buf{};
  while (!stopping()) {
    Delivery d;
    if (con->receive_wait(d, buf, 100'000'000ULL) != PollStatus::ok) continue;
    if (d.message.key == 13) {  // poisoned: straight to the DLQ
      if (con->dead_letter(d) == AckStatus::ok) signal_ready(poison_fd);
      continue;
    }
    (void)con->ack(d);
  }
}

template <typename F>
pid_t spawn(F&& body) {
  const pid_t pid = fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    body();
    _exit(0);
  }
  return pid;
}

bool wait_bytes(int fd, int n, int timeout_ms) {
  for (int got = 0; got < n;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char c;
    if (read(fd, &c, 1) != 1) return false;
    ++got;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bus = "demo";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bus") == 0 && i + 1 < argc)
      bus = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--bus NAME]\n", argv[0]);
      return 2;
    }
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  (void)Channel::remove(kChannel, bus);
  (void)Channel::remove(std::string(kChannel) + "-dlq", bus);
  ChannelOptions opts;
  opts.capacity = 4096;
  auto ch = Channel::create(kChannel, opts, bus);
  if (!ch) die(ch.error().message());

  int ready[2], poison[2];
  if (pipe(ready) != 0 || pipe(poison) != 0) die("pipe failed");
  std::vector<pid_t> kids;
  // Readers first, so they start at the first order.
  kids.push_back(spawn([&] { run_subscriber(bus, "analytics", 0, ready[1]); }));
  kids.push_back(spawn([&] { run_subscriber(bus, "audit", 1000, ready[1]); }));
  kids.push_back(spawn([&] { run_worker(bus, ready[1], poison[1]); }));
  kids.push_back(spawn([&] { run_worker(bus, ready[1], poison[1]); }));
  const bool readers = wait_bytes(ready[0], 4, 10'000);
  kids.push_back(spawn([&] { run_publisher(bus, ready[1]); }));
  const bool ok = readers && wait_bytes(ready[0], 1, 10'000) && wait_bytes(poison[0], 1, 10'000);
  if (ok) {
    std::printf(
        "live demo ready: bus %s, channel %s (publisher, subscribers analytics and audit, "
        "group billing with 2 workers, DLQ live-dlq)\n",
        bus.c_str(), kChannel);
    std::fflush(stdout);
    char c;
    while (!g_stop.load() && read(STDIN_FILENO, &c, 1) > 0) {
    }
  } else {
    std::fprintf(stderr, "shmbus_live_demo: the children did not start\n");
  }
  for (pid_t k : kids) kill(k, SIGTERM);
  for (pid_t k : kids) waitpid(k, nullptr, 0);
  (void)Channel::remove(kChannel, bus);
  (void)Channel::remove(std::string(kChannel) + "-dlq", bus);
  return ok ? 0 : 1;
}
