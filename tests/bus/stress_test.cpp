// N producer threads x M subscriber threads on one channel, per policy. Every
// subscriber checks each producer's order and a checksum over what it saw;
// with drop_oldest, delivered + lost = published for every subscriber.
// Built and run under ThreadSanitizer as well (label: concurrency).
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include <shmbus/shm/clock.hpp>

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

struct Payload {
  std::uint32_t producer;
  std::uint32_t pad;
  std::uint64_t seq;
  std::uint64_t check;  // seq * golden ^ producer: detects torn or mixed bytes
};

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
std::uint64_t check_of(std::uint32_t producer, std::uint64_t seq) { return seq * kGolden ^ producer; }

struct SubResult {
  std::uint64_t delivered = 0;
  std::uint64_t lost = 0;
  std::uint64_t order_violations = 0;
  std::uint64_t bad_payloads = 0;
  std::uint64_t checksum = 0;
  bool timed_out = false;
};

struct Config {
  Policy policy = Policy::block;
  int producers = 4;
  int subscribers = 3;
  std::uint64_t per_producer = 20000;
  std::uint32_t capacity = 256;
  WaitStrategy wait = WaitStrategy::yield;  // more threads than cores: spinning alone starves peers
  bool zero_copy = false;
  bool batch = false;
};

void run_stress(const Config& cfg, std::vector<SubResult>& results, std::uint64_t& expected_sum,
                std::uint64_t& published) {
  ScopedChannelName name("stress");
  ChannelOptions o;
  o.capacity = cfg.capacity;
  o.slot_size = 128;
  o.policy = cfg.policy;
  Channel ch = make_channel(name, o);

  std::vector<Subscriber> subs;
  for (int i = 0; i < cfg.subscribers; ++i) {
    SubscribeOptions so;
    so.start = StartAt::earliest();
    so.wait = cfg.wait;
    auto s = ch.subscribe(so);
    REQUIRE(s);
    subs.push_back(std::move(s.value()));
  }
  std::vector<Publisher> pubs;
  for (int i = 0; i < cfg.producers; ++i) {
    auto p = ch.publisher();
    REQUIRE(p);
    pubs.push_back(std::move(p.value()));
  }

  std::atomic<int> producers_done{0};
  std::atomic<std::uint64_t> committed{0};
  results.assign(static_cast<std::size_t>(cfg.subscribers), {});
  const std::uint64_t deadline = shm::monotonic_ns() + 120'000'000'000ULL;

  std::vector<std::thread> threads;
  for (int s = 0; s < cfg.subscribers; ++s) {
    threads.emplace_back([&, s] {
      Subscriber& sub = subs[static_cast<std::size_t>(s)];
      SubResult& r = results[static_cast<std::size_t>(s)];
      std::vector<std::uint64_t> last(static_cast<std::size_t>(cfg.producers), 0);
      std::vector<bool> seen_any(static_cast<std::size_t>(cfg.producers), false);
      auto take = [&](const Message& m) {
        if (m.payload.size() != sizeof(Payload)) {
          ++r.bad_payloads;
          return;
        }
        const auto p = value_of<Payload>(m.payload);
        if (p.producer >= static_cast<std::uint32_t>(cfg.producers) || p.check != check_of(p.producer, p.seq)) {
          ++r.bad_payloads;
          return;
        }
        auto idx = p.producer;
        if (seen_any[idx] && p.seq <= last[idx]) ++r.order_violations;
        if (cfg.policy != Policy::drop_oldest && seen_any[idx] && p.seq != last[idx] + 1) ++r.order_violations;
        if (cfg.policy != Policy::drop_oldest && !seen_any[idx] && p.seq != 0) ++r.order_violations;
        seen_any[idx] = true;
        last[idx] = p.seq;
        r.checksum += p.check;
        ++r.delivered;
      };
      for (;;) {
        const auto c = sub.counters();
        if (producers_done.load(std::memory_order_acquire) == cfg.producers &&
            c.delivered + c.lost >= committed.load(std::memory_order_acquire)) {
          break;
        }
        if (shm::monotonic_ns() > deadline) {
          r.timed_out = true;
          break;
        }
        PollStatus st = PollStatus::empty;
        if (cfg.batch) {
          Message msgs[16];
          std::byte arena[16 * sizeof(Payload)];
          const std::size_t n = sub.poll_batch(msgs, arena, &st);
          for (std::size_t i = 0; i < n; ++i) take(msgs[i]);
          if (n > 0) continue;
        } else if (cfg.zero_copy && cfg.policy != Policy::drop_oldest) {
          Message copy;
          Payload pl{};
          st = sub.read([&](const Message& m) {
            copy = m;
            std::memcpy(&pl, m.payload.data(), std::min(sizeof pl, m.payload.size()));
          });
          if (st == PollStatus::ok) {
            copy.payload = std::as_bytes(std::span<const Payload>(&pl, 1));
            take(copy);
            continue;
          }
        } else {
          Message m;
          std::byte buf[128];
          st = sub.poll(m, buf);
          if (st == PollStatus::ok) {
            take(m);
            continue;
          }
        }
        if (st == PollStatus::empty) (void)sub.wait(5'000'000);
      }
      r.lost = sub.counters().lost;
    });
  }
  for (int p = 0; p < cfg.producers; ++p) {
    threads.emplace_back([&, p] {
      Publisher& pub = pubs[static_cast<std::size_t>(p)];
      for (std::uint64_t i = 0; i < cfg.per_producer;) {
        Payload pl{static_cast<std::uint32_t>(p), 0, i, check_of(static_cast<std::uint32_t>(p), i)};
        PublishStatus st;
        if (cfg.zero_copy) {
          Claim c;
          st = pub.try_claim(sizeof pl, c, 100'000'000);
          if (st == PublishStatus::ok) {
            std::memcpy(c.payload.data(), &pl, sizeof pl);
            st = pub.commit(c, sizeof pl);
          }
        } else {
          st = pub.publish(bytes_of(pl), {}, 100'000'000);
        }
        if (st == PublishStatus::ok) {
          committed.fetch_add(1, std::memory_order_release);
          ++i;
        } else if (st == PublishStatus::full || st == PublishStatus::timeout) {
          if (shm::monotonic_ns() > deadline) break;
          std::this_thread::yield();  // backpressure: retry the same message
        } else {
          FAIL_CHECK("publish failed: " << to_string(st));
          break;
        }
      }
      producers_done.fetch_add(1, std::memory_order_release);
    });
  }
  for (auto& t : threads) t.join();
  expected_sum = 0;
  for (int p = 0; p < cfg.producers; ++p) {
    for (std::uint64_t i = 0; i < cfg.per_producer; ++i) expected_sum += check_of(static_cast<std::uint32_t>(p), i);
  }
  published = committed.load();
  const ChannelStats st = ch.stats();
  CHECK(st.published == published);
  CHECK(st.abandoned == 0);
}

void check_lossless(const Config& cfg) {
  std::vector<SubResult> results;
  std::uint64_t sum = 0, published = 0;
  run_stress(cfg, results, sum, published);
  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  REQUIRE(published == total);
  for (const auto& r : results) {
    CHECK_FALSE(r.timed_out);
    CHECK(r.delivered == total);
    CHECK(r.lost == 0);
    CHECK(r.order_violations == 0);
    CHECK(r.bad_payloads == 0);
    CHECK(r.checksum == sum);
  }
}

}  // namespace

TEST_CASE("block: N producers x M subscribers, every message once, in producer order") {
  check_lossless({});
}

TEST_CASE("block with futex-sleeping subscribers loses no wake-up") {
  Config c;
  c.wait = WaitStrategy::block;
  c.producers = 2;
  c.per_producer = 10000;
  check_lossless(c);
}

TEST_CASE("block: zero-copy claims and reads from several producers") {
  Config c;
  c.zero_copy = true;
  check_lossless(c);
}

TEST_CASE("block: batched copy-out reads") {
  Config c;
  c.batch = true;
  check_lossless(c);
}

TEST_CASE("reject: producers that retry on full deliver everything in order") {
  Config c;
  c.policy = Policy::reject;
  c.capacity = 64;
  check_lossless(c);
}

TEST_CASE("drop_oldest: delivered + lost = published for every subscriber, order kept") {
  Config c;
  c.policy = Policy::drop_oldest;
  c.capacity = 64;
  std::vector<SubResult> results;
  std::uint64_t sum = 0, published = 0;
  run_stress(c, results, sum, published);
  REQUIRE(published == c.per_producer * static_cast<std::uint64_t>(c.producers));
  for (const auto& r : results) {
    CHECK_FALSE(r.timed_out);
    CHECK(r.delivered + r.lost == published);
    CHECK(r.order_violations == 0);
    CHECK(r.bad_payloads == 0);
  }
}
