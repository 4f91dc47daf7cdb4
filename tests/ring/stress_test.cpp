// N producer threads x M subscriber threads on one channel, per policy. Every
// subscriber checks each producer's order and a checksum over what it saw;
// with drop_oldest, delivered + lost = published for every subscriber.
// Built and run under ThreadSanitizer as well (label: concurrency).
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "shm/clock.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

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
  /// Producers publish in batches of this many (publish_batch, or
  /// try_claim_batch with zero_copy); 0: one message at a time.
  std::uint32_t publish_batch = 0;
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
        if (p.producer >= static_cast<std::uint32_t>(cfg.producers) || p.check != check_of(p.producer, p.index)) {
          ++r.bad_payloads;
          return;
        }
        auto idx = p.producer;
        if (seen_any[idx] && p.index <= last[idx]) ++r.order_violations;
        if (cfg.policy != Policy::drop_oldest && seen_any[idx] && p.index != last[idx] + 1) ++r.order_violations;
        if (cfg.policy != Policy::drop_oldest && !seen_any[idx] && p.index != 0) ++r.order_violations;
        seen_any[idx] = true;
        last[idx] = p.index;
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
        if (cfg.publish_batch != 0) {
          // Messages i .. i+k-1 at once; all or none of them on full/timeout.
          const std::uint64_t k = std::min<std::uint64_t>(cfg.publish_batch, cfg.per_producer - i);
          std::vector<Payload> pls(k);
          for (std::uint64_t j = 0; j < k; ++j) {
            pls[j] = Payload{static_cast<std::uint32_t>(p), 0, i + j, check_of(static_cast<std::uint32_t>(p), i + j)};
          }
          if (cfg.zero_copy) {
            std::vector<Claim> claims(k);
            st = pub.try_claim_batch(sizeof(Payload), claims, 100'000'000);
            for (std::uint64_t j = 0; st == PublishStatus::ok && j < k; ++j) {
              std::memcpy(claims[j].payload.data(), &pls[j], sizeof(Payload));
              st = pub.commit(claims[j], sizeof(Payload));
            }
          } else {
            std::vector<OutMessage> out(k);
            for (std::uint64_t j = 0; j < k; ++j) out[j].payload = bytes_of(pls[j]);
            st = pub.publish_batch(out, 100'000'000);
          }
          if (st == PublishStatus::ok) {
            committed.fetch_add(k, std::memory_order_release);
            i += k;
            continue;
          }
        } else if (cfg.zero_copy) {
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

TEST_CASE("block: N producers x M subscribers, every message once, in producer order") { check_lossless({}); }

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

TEST_CASE("block: producers publishing in batches, every message once, in producer order") {
  Config c;
  c.publish_batch = 7;  // not a divisor of the ring: batches wrap around it
  check_lossless(c);
}

TEST_CASE("block: producers claiming in batches, every message once, in producer order") {
  Config c;
  c.publish_batch = 5;
  c.zero_copy = true;
  check_lossless(c);
}

TEST_CASE("reject: producers that retry whole batches on full deliver everything in order") {
  Config c;
  c.policy = Policy::reject;
  c.capacity = 64;
  c.publish_batch = 6;
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

// --- dedup table races -----------------------------------------------------------

namespace {

/// A dedup table on the test bus, removed on both ends.
struct ScopedDedup {
  std::string name;
  DedupTable table;
  explicit ScopedDedup(const DedupOptions& o) {
    static std::atomic<int> counter{0};
    name = "dd-stress-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
    (void)DedupTable::remove(name, kTestBus);
    auto t = DedupTable::open_or_create(name, o, kTestBus);
    if (!t) FAIL("open_or_create " << name << ": " << t.error().message());
    table = std::move(t.value());
  }
  ~ScopedDedup() { (void)DedupTable::remove(name, kTestBus); }
};

}  // namespace

TEST_CASE("dedup: 4 threads begin the same 1000 ids and exactly one gets first for each", "[dedup]") {
  DedupOptions o;
  o.capacity = 65536;
  // The default window, and the widest: a longer check scan widens the
  // window in which two inserters of one id can miss each other.
  o.probe_window = GENERATE(16u, 256u);
  ScopedDedup d(o);
  constexpr int kThreads = 4;
  constexpr std::uint64_t kIds = 1000;
  // Several rounds of 1000 fresh ids, the threads lined up every 10 ids, so
  // that they really meet on the same ids.
  constexpr std::uint64_t kRounds = 20;
  constexpr std::uint64_t kStride = 10;
  std::vector<std::atomic<int>> firsts(kIds * kRounds);
  std::atomic<std::uint64_t> full{0};
  std::atomic<std::uint64_t> arrived{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      DedupTable table = d.table;  // a copy per thread: the same mapping
      std::uint64_t gate = 0;
      for (std::uint64_t n = 0; n < kIds * kRounds; ++n) {
        if (n % kStride == 0) {
          // A spin barrier (yielding: 4 threads may share 2 cores).
          gate += kThreads;
          arrived.fetch_add(1);
          while (arrived.load() < gate) shm::yield_cpu();
        }
        const std::uint64_t id = n * 7919;  // keys need not be dense
        const DedupStatus st = table.begin(id);
        if (st == DedupStatus::first) {
          firsts[n].fetch_add(1);
          // Half the winners complete at once, so the others also race
          // against a claimed -> done transition.
          if ((n + static_cast<std::uint64_t>(t)) % 2 == 0) table.complete(id);
        } else if (st == DedupStatus::full) {
          full.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::uint64_t wrong = 0;
  for (std::uint64_t n = 0; n < kIds * kRounds; ++n) wrong += firsts[n].load() != 1;
  const DedupStats st = d.table.stats();
  INFO("insert races " << st.insert_races << ", gave up " << st.gave_up);
  CHECK(wrong == 0);
  CHECK(full.load() == 0);
  CHECK(st.done + st.claimed == kIds * kRounds);
  CHECK(st.gave_up == 0);
  WARN("dedup race, window " << o.probe_window << ": " << st.insert_races
                             << " inserts backed off for a concurrent insert of the same id");
}

TEST_CASE("dedup: a claim excludes every other claimer while ids are abandoned and re-inserted", "[dedup]") {
  // 8 ids share a 16-entry table whose probe window is the whole table, and
  // every claim is abandoned at once: entries are freed and bound again all
  // the time, in different places, by 4 racing threads.
  DedupOptions o;
  o.capacity = 16;
  o.probe_window = 16;
  ScopedDedup d(o);
  constexpr int kThreads = 4;
  constexpr std::uint64_t kIds = 8;
  std::vector<std::atomic<int>> holders(kIds);
  std::atomic<std::uint64_t> violations{0}, claims{0}, full{0};
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      DedupTable table = d.table;
      std::uint64_t x = 0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(t + 1);
      ready.fetch_add(1);
      while (ready.load() < kThreads) shm::cpu_relax();
      while (!stop.load()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const std::uint64_t id = x % kIds;
        const DedupStatus st = table.begin(id);
        if (st == DedupStatus::full) full.fetch_add(1);
        if (st != DedupStatus::first) continue;
        claims.fetch_add(1);
        if (holders[id].exchange(1) != 0) violations.fetch_add(1);
        for (int i = 0; i < 50; ++i) shm::cpu_relax();
        holders[id].store(0);
        table.abandon(id);
      }
    });
  }
  const std::uint64_t until = shm::monotonic_ns() + 300'000'000ULL;
  while (shm::monotonic_ns() < until) shm::sleep_ns(5'000'000);
  stop.store(true);
  for (auto& th : threads) th.join();
  CHECK(violations.load() == 0);
  CHECK(claims.load() > 100);
  CHECK(full.load() == 0);  // at most 8 ids hold entries: never more than 8 + 4 in use
  const DedupStats st = d.table.stats();
  WARN("dedup exclusion: " << claims.load() << " claims, " << st.insert_races << " insert races, " << st.gave_up
                           << " gave up");
}
