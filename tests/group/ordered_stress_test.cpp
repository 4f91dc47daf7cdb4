// C consumer threads of one per_key group over P producer threads and K
// keys, with random nacks. A ledger of lease intervals, each bounded by a
// global counter taken when a receive returned and before the ack or nack
// that ended it, checks per key: no two intervals overlap (no two consumers
// ever held one key at once), the acks come in sequence order (so every
// redelivery came before the key's later messages), and nothing is lost or
// acked twice. Built and run under ThreadSanitizer as well (label:
// concurrency).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shm/clock.hpp"

#include "group_test_util.hpp"
#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::test;

namespace {

/// One lease as the consumer that held it saw it.
struct Interval {
  std::uint64_t key;
  std::uint64_t sequence;
  std::uint64_t begin;  ///< the global counter after the receive returned it
  std::uint64_t end;    ///< the global counter before the ack or nack that ended it
  bool acked;           ///< ended by an ack (else by a nack)
  bool end_ok;          ///< that ack or nack returned ok
};

struct Config {
  int producers = 3;
  int consumers = 4;
  std::uint64_t keys = 16;
  std::uint64_t per_producer = 3'000;
  std::uint32_t capacity = 256;
  unsigned nack_permille = 100;  ///< share of deliveries nacked (delay 0) instead of acked
};

struct KeyedPayload {
  std::uint32_t producer;
  std::uint32_t pad;
  std::uint64_t index;
  std::uint64_t key;  ///< the key it was published with, to check the metadata
};

void run_ordered_stress(const Config& cfg) {
  ScopedChannelName name("ostress");
  struct DlqGuard {
    std::string name;
    ~DlqGuard() { (void)Channel::remove(name, kTestBus); }
  } dlq{name.str() + "-dlq"};
  GroupOptions g;
  g.visibility_timeout_ns = 600'000'000'000ULL;  // 10 minutes: nothing expires in this test
  g.max_deliveries = 255;                        // nacks never send a message to the DLQ
  g.wait = WaitStrategy::block;                  // more threads than cores: sleep, don't spin
  g.ordering = GroupOrdering::per_key;
  GroupCast cast = make_group_cast(name, cfg.capacity, "ordered", g, cfg.consumers, cfg.producers);
  Channel& ch = cast.channel;
  std::vector<Consumer>& consumers = cast.consumers;
  std::vector<Publisher>& pubs = cast.publishers;

  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  std::atomic<std::uint64_t> clock{0};  // the ledger's global order
  std::atomic<std::uint64_t> acked_total{0};
  std::atomic<bool> give_up{false};
  const std::uint64_t deadline = shm::monotonic_ns() + 120'000'000'000ULL;
  constexpr std::uint64_t kNoProgressNs = 10'000'000'000ULL;
  std::atomic<std::uint64_t> last_ack_ns{shm::monotonic_ns()};
  const auto stuck = [&] {
    const std::uint64_t now = shm::monotonic_ns();
    return now > deadline || now > last_ack_ns.load(std::memory_order_relaxed) + kNoProgressNs;
  };
  std::vector<std::vector<Interval>> ledgers(static_cast<std::size_t>(cfg.consumers));
  std::vector<std::uint64_t> bad(static_cast<std::size_t>(cfg.consumers), 0);
  std::vector<PublishStatus> producer_end(static_cast<std::size_t>(cfg.producers), PublishStatus::ok);

  std::vector<std::thread> threads;
  for (int c = 0; c < cfg.consumers; ++c) {
    threads.emplace_back([&, c] {
      Consumer& con = consumers[static_cast<std::size_t>(c)];
      std::vector<Interval>& ledger = ledgers[static_cast<std::size_t>(c)];
      std::uint64_t& odd = bad[static_cast<std::size_t>(c)];
      std::mt19937 rng(0x5eedu + static_cast<unsigned>(c));
      std::uniform_int_distribution<unsigned> permille(0, 999);
      const bool batches = c % 2 == 1;  // half the consumers take batches
      Delivery ds[4];
      std::byte arena[4 * sizeof(KeyedPayload)];
      while (acked_total.load(std::memory_order_acquire) < total) {
        if (give_up.load(std::memory_order_acquire) || stuck()) {
          ++odd;
          break;
        }
        std::size_t n = 0;
        PollStatus st = PollStatus::ok;
        if (batches) {
          n = con.receive_batch(ds, arena, &st);
          if (n == 0 && st == PollStatus::empty)
            st = con.receive_wait(ds[0], arena, 5'000'000), n = st == PollStatus::ok;
        } else {
          st = con.receive_wait(ds[0], arena, 5'000'000);
          n = st == PollStatus::ok;
        }
        if (n == 0) {
          if (st != PollStatus::timeout && st != PollStatus::empty) ++odd;
          continue;
        }
        const std::uint64_t begin = clock.fetch_add(1, std::memory_order_acq_rel);
        for (std::size_t i = 0; i < n; ++i) {
          const Delivery& d = ds[i];
          const auto p = value_of<KeyedPayload>(d.message.payload);
          if (d.message.payload.size() != sizeof p || p.key != d.message.key || d.attempt != d.message.attempt) ++odd;
          const bool nack = d.attempt < 20 && permille(rng) < cfg.nack_permille;
          Interval iv{d.message.key, d.sequence, begin, 0, !nack, false};
          iv.end = clock.fetch_add(1, std::memory_order_acq_rel);
          if (nack) {
            iv.end_ok = con.nack(d, 0) == AckStatus::ok;
          } else {
            iv.end_ok = con.ack(d) == AckStatus::ok;
            if (iv.end_ok) {
              acked_total.fetch_add(1, std::memory_order_acq_rel);
              last_ack_ns.store(shm::monotonic_ns(), std::memory_order_relaxed);
            }
          }
          ledger.push_back(iv);
        }
      }
    });
  }
  for (int p = 0; p < cfg.producers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937_64 rng(0xbeefu + static_cast<unsigned>(p));
      Publisher& pub = pubs[static_cast<std::size_t>(p)];
      for (std::uint64_t i = 0; i < cfg.per_producer; ++i) {
        KeyedPayload pl{static_cast<std::uint32_t>(p), 0, i, rng() % cfg.keys};
        MessageMeta m;
        m.key = pl.key;
        const PublishStatus st = pub.publish(bytes_of(pl), m, 30'000'000'000ULL);
        if (st != PublishStatus::ok) {
          producer_end[static_cast<std::size_t>(p)] = st;
          give_up.store(true, std::memory_order_release);
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();

  for (int p = 0; p < cfg.producers; ++p) CHECK(producer_end[static_cast<std::size_t>(p)] == PublishStatus::ok);
  for (int c = 0; c < cfg.consumers; ++c) CHECK(bad[static_cast<std::size_t>(c)] == 0);

  // Per key: the intervals in the order they began.
  std::map<std::uint64_t, std::vector<Interval>> by_key;
  std::uint64_t nacks = 0;
  for (const auto& l : ledgers) {
    for (const Interval& iv : l) {
      CHECK(iv.end_ok);
      nacks += !iv.acked;
      by_key[iv.key].push_back(iv);
    }
  }
  std::uint64_t overlaps = 0;
  std::uint64_t order_violations = 0;
  std::vector<std::uint64_t> acked_seqs;
  for (auto& [key, ivs] : by_key) {
    std::sort(ivs.begin(), ivs.end(), [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
    std::uint64_t last_seq = 0;
    bool any = false;
    for (std::size_t i = 0; i < ivs.size(); ++i) {
      if (i + 1 < ivs.size() && ivs[i].end > ivs[i + 1].begin) ++overlaps;
      if (!ivs[i].acked) continue;
      // Disjoint intervals begin in the order they end: this is the order of
      // the key's completions.
      if (any && ivs[i].sequence <= last_seq) ++order_violations;
      last_seq = ivs[i].sequence;
      any = true;
      acked_seqs.push_back(ivs[i].sequence);
    }
  }
  CHECK(overlaps == 0);
  CHECK(order_violations == 0);
  std::sort(acked_seqs.begin(), acked_seqs.end());
  REQUIRE(acked_seqs.size() == total);  // every message acked once: nothing lost, no second ack
  for (std::uint64_t i = 0; i < total; ++i) REQUIRE(acked_seqs[i] == i);
  const ChannelStats st = ch.stats();
  REQUIRE(st.groups.size() == 1);
  CHECK(st.groups[0].acked == total);
  CHECK(st.groups[0].nacked == nacks);
  CHECK(st.groups[0].floor == total);
  CHECK(st.groups[0].in_flight == 0);
  if (cfg.nack_permille != 0) CHECK(nacks > 0);
}

}  // namespace

TEST_CASE("per_key stress: 4 consumers x 3 producers x 16 keys with nacks keep each key in order") {
  run_ordered_stress({});
}

TEST_CASE("per_key stress: one key is processed strictly one message at a time, in order") {
  Config cfg;
  cfg.producers = 2;
  cfg.keys = 1;
  cfg.per_producer = 1'000;
  run_ordered_stress(cfg);
}

TEST_CASE("per_key stress: 1024 keys with a small ring and window") {
  Config cfg;
  cfg.consumers = 3;
  cfg.producers = 2;
  cfg.keys = 1024;
  cfg.capacity = 64;
  cfg.nack_permille = 50;
  run_ordered_stress(cfg);
}
