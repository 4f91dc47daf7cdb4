// Test helper for tests/bridge/bridge_test.sh: makes, fills and reads
// channels with messages whose content can be checked.
//
//   bridge_helper create BUS CHANNEL CAPACITY SLOT_SIZE POLICY
//   bridge_helper remove BUS CHANNEL
//   bridge_helper head BUS CHANNEL
//   bridge_helper publish BUS CHANNEL FIRST COUNT
//       message i (FIRST <= i < FIRST+COUNT): payload "m-<i>", key i+1,
//       message id kIdBase+i, type 7
//   bridge_helper publish-until BUS CHANNEL MAX
//       the same from i = 0 until SIGTERM (or MAX messages); prints how many
//   bridge_helper collect BUS CHANNEL COUNT READY_FILE TIMEOUT_S [PER_MS]
//       subscribes at the earliest message, creates READY_FILE, then reads
//       (at most about PER_MS messages a millisecond, if given)
//       until it has seen keys 1..COUNT, each with payload "e-<key-1>" and
//       message id kIdBase+key-1 (feed_stream.py writes them);
//       prints "distinct D duplicates U missing M bad B" and exits 0 only if
//       nothing is missing and nothing is bad. COUNT may be a file name: the
//       count is then read from that file once it exists.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <shmbus/channel.hpp>

namespace {

using namespace shmbus;

int usage() {
  std::cerr << "usage: bridge_helper create|remove|head|publish|publish-until|collect ... (see the source)\n";
  return 2;
}

std::uint64_t number(const char* s) { return std::strtoull(s, nullptr, 10); }

int fail(const std::string& what, const Error& e) {
  std::cerr << "bridge_helper: " << what << ": " << to_string(e.code()) << ": " << e.message() << '\n';
  return 1;
}

int cmd_create(const char* bus, const char* name, const char* cap, const char* slot, const char* policy) {
  ChannelOptions o;
  o.capacity = static_cast<std::uint32_t>(number(cap));
  o.slot_size = static_cast<std::uint32_t>(number(slot));
  auto p = parse_policy(policy);
  if (!p) {
    std::cerr << "bridge_helper: bad policy '" << policy << "'\n";
    return 2;
  }
  o.policy = *p;
  auto ch = Channel::create(name, o, bus);
  return ch ? 0 : fail("create", ch.error());
}

int cmd_remove(const char* bus, const char* name) {
  auto r = Channel::remove(name, bus);
  return r ? 0 : fail("remove", r.error());
}

int cmd_head(const char* bus, const char* name) {
  auto ch = Channel::open_read_only(name, bus);
  if (!ch) return fail("open", ch.error());
  std::cout << ch->stats().head << '\n';
  return 0;
}

/// Message ids of the test's messages: kIdBase + i, apart from key i + 1,
/// so that a field mixed up in the mapping shows (feed_stream.py and
/// bridge_test.sh use the same base).
constexpr std::uint64_t kIdBase = 1'000'000'000;

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_term(int /*signo*/) { g_stop = 1; }

int cmd_publish_until(const char* bus, const char* name, std::uint64_t max) {
  struct sigaction sa {};
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  auto ch = Channel::open(name, bus);
  if (!ch) return fail("open", ch.error());
  auto pub = ch->publisher();
  if (!pub) return fail("publisher", pub.error());
  std::uint64_t i = 0;
  while (i < max && g_stop == 0) {
    const std::string payload = "m-" + std::to_string(i);
    MessageMeta meta;
    meta.key = i + 1;
    meta.id = kIdBase + i;
    meta.type = 7;
    const PublishStatus st = pub->publish(payload, meta, 100'000'000ULL);
    if (st == PublishStatus::ok) {
      ++i;
    } else if (st != PublishStatus::timeout) {
      std::cerr << "bridge_helper: publish " << i << ": " << to_string(st) << '\n';
      return 1;
    }
  }
  std::cout << i << std::endl;
  return 0;
}

int cmd_publish(const char* bus, const char* name, std::uint64_t first, std::uint64_t count) {
  auto ch = Channel::open(name, bus);
  if (!ch) return fail("open", ch.error());
  auto pub = ch->publisher();
  if (!pub) return fail("publisher", pub.error());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (std::uint64_t i = first; i < first + count; ++i) {
    const std::string payload = "m-" + std::to_string(i);
    MessageMeta meta;
    meta.key = i + 1;
    meta.id = kIdBase + i;
    meta.type = 7;
    for (;;) {
      const PublishStatus st = pub->publish(payload, meta, 100'000'000ULL);
      if (st == PublishStatus::ok) break;
      if (st != PublishStatus::timeout || std::chrono::steady_clock::now() > deadline) {
        std::cerr << "bridge_helper: publish " << i << ": " << to_string(st) << '\n';
        return 1;
      }
    }
  }
  return 0;
}

// The count to collect: a number, or the number in file `arg` once it exists.
std::optional<std::uint64_t> read_count(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos) {
    return number(arg.c_str());
  }
  std::ifstream f(arg);
  std::uint64_t n = 0;
  if (f >> n) return n;
  return std::nullopt;
}

int cmd_collect(const char* bus, const char* name, const std::string& count_arg, const char* ready,
                std::uint64_t timeout_s, std::uint64_t per_ms) {
  auto ch = Channel::open(name, bus);
  if (!ch) return fail("open", ch.error());
  SubscribeOptions so;
  so.start = StartAt::earliest();
  auto sub = ch->subscribe(so);
  if (!sub) return fail("subscribe", sub.error());
  { std::ofstream(ready) << "ready\n"; }

  std::optional<std::uint64_t> total = read_count(count_arg);
  std::vector<std::uint32_t> seen(1, 0);  // by key; grows
  std::uint64_t distinct = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t bad = 0;
  std::vector<std::byte> buf(1 << 20);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::uint64_t polls = 0;
  while (!(total && distinct >= *total) && std::chrono::steady_clock::now() < deadline) {
    Message m;
    const PollStatus st = sub->poll_wait(m, buf, 100'000'000ULL);
    if (!total && (st != PollStatus::ok || (++polls & 1023) == 0)) total = read_count(count_arg);
    if (st == PollStatus::timeout || st == PollStatus::empty) continue;
    if (st != PollStatus::ok) {
      std::cerr << "bridge_helper: poll: " << to_string(st) << '\n';
      ++bad;
      continue;
    }
    const std::string payload(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    if (m.key == 0 || m.key > (1ULL << 24) || payload != "e-" + std::to_string(m.key - 1) ||
        m.id != kIdBase + m.key - 1) {
      std::cerr << "bridge_helper: unexpected message seq " << m.sequence << " key " << m.key << " id " << m.id
                << " payload '" << payload.substr(0, 40) << "'\n";
      ++bad;
      continue;
    }
    // Load shaping only: a slow reader keeps the ring full, so the bridge
    // publishing into it holds a batch in hand most of the time.
    if (per_ms != 0 && (distinct + duplicates) % per_ms == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (seen.size() <= m.key) seen.resize(m.key * 2, 0);
    if (seen[m.key]++ == 0)
      ++distinct;
    else
      ++duplicates;
  }
  if (!total) {
    std::cerr << "bridge_helper: the count never arrived in " << count_arg << '\n';
    return 1;
  }
  const std::uint64_t count = *total;
  if (seen.size() <= count) seen.resize(count + 1, 0);
  std::uint64_t missing = 0;
  std::uint64_t extra = 0;  // keys beyond the count
  for (std::uint64_t k = 1; k <= count; ++k) missing += seen[k] == 0 ? 1 : 0;
  for (std::uint64_t k = count + 1; k < seen.size(); ++k) extra += seen[k];
  bad += extra;
  std::cout << "distinct " << distinct << " duplicates " << duplicates << " missing " << missing << " bad " << bad
            << '\n';
  if (missing != 0) {
    std::cerr << "bridge_helper: first missing keys:";
    int shown = 0;
    for (std::uint64_t k = 1; k <= count && shown < 10; ++k) {
      if (seen[k] == 0) {
        std::cerr << ' ' << k;
        ++shown;
      }
    }
    std::cerr << '\n';
  }
  return missing == 0 && bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  const std::string cmd = argv[1];
  if (cmd == "create" && argc == 7) return cmd_create(argv[2], argv[3], argv[4], argv[5], argv[6]);
  if (cmd == "remove" && argc == 4) return cmd_remove(argv[2], argv[3]);
  if (cmd == "head" && argc == 4) return cmd_head(argv[2], argv[3]);
  if (cmd == "publish" && argc == 6) return cmd_publish(argv[2], argv[3], number(argv[4]), number(argv[5]));
  if (cmd == "publish-until" && argc == 5) return cmd_publish_until(argv[2], argv[3], number(argv[4]));
  if (cmd == "collect" && (argc == 7 || argc == 8))
    return cmd_collect(argv[2], argv[3], argv[4], argv[5], number(argv[6]), argc == 8 ? number(argv[7]) : 0);
  return usage();
}
