// M consumer threads in one group over K producer threads on one block
// channel. Every consumer has its own Consumer handle (join_group) and records
// what it acked; at the end the union must be exactly every published
// message, each acked once, and the group's counters must add up. Built and
// run under ThreadSanitizer as well (label: concurrency).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
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

/// One ack as a consumer saw it.
struct Acked {
  std::uint64_t sequence;
  std::uint32_t producer;
  std::uint64_t index;
};

struct ConsumerResult {
  std::vector<Acked> acked;
  std::uint64_t nacked = 0;
  std::uint64_t bad_payloads = 0;
  std::uint64_t failed_acks = 0;       ///< ack or nack that did not return ok
  std::uint64_t odd_statuses = 0;      ///< receive statuses a block channel never gives
  std::uint64_t attempt_mismatch = 0;  ///< d.attempt != d.message.attempt
  bool timed_out = false;
};

struct Config {
  int producers = 3;
  int consumers = 4;
  std::uint64_t per_producer = 10'000;
  std::uint32_t capacity = 256;
  unsigned nack_permille = 0;  ///< share of deliveries nacked (delay 0) instead of acked
};

struct Outcome {
  std::vector<ConsumerResult> results;
  std::vector<PublishStatus> producer_end;  ///< ok, or the status a producer gave up on
  std::uint64_t published = 0;
  ChannelStats stats;
};

Outcome run_group_stress(const Config& cfg) {
  ScopedChannelName name("gstress");
  struct DlqGuard {
    std::string name;
    ~DlqGuard() { (void)Channel::remove(name, kTestBus); }
  } dlq{name.str() + "-dlq"};
  GroupOptions g;
  g.start = StartAt::earliest();
  g.visibility_timeout_ns = 600'000'000'000ULL;  // 10 minutes: nothing expires in this test
  g.max_deliveries = 255;                        // nacks never send a message to the DLQ
  g.wait = WaitStrategy::block;                  // more threads than cores: sleep, don't spin
  GroupCast cast = make_group_cast(name, cfg.capacity, "workers", g, cfg.consumers, cfg.producers);
  Channel& ch = cast.channel;
  std::vector<Consumer>& consumers = cast.consumers;
  std::vector<Publisher>& pubs = cast.publishers;

  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  Outcome out;
  out.results.assign(static_cast<std::size_t>(cfg.consumers), {});
  out.producer_end.assign(static_cast<std::size_t>(cfg.producers), PublishStatus::ok);
  std::atomic<std::uint64_t> committed{0};
  std::atomic<std::uint64_t> acked_total{0};
  std::atomic<bool> give_up{false};  // set once a producer failed: consumers stop waiting
  // Bounds: the whole run, and (so that a stalled group fails fast) the time
  // without a single ack. Both are far above what a healthy run needs, also
  // under ThreadSanitizer.
  const std::uint64_t deadline = shm::monotonic_ns() + 120'000'000'000ULL;
  constexpr std::uint64_t kNoProgressNs = 10'000'000'000ULL;
  std::atomic<std::uint64_t> last_ack_ns{shm::monotonic_ns()};
  auto stuck = [&] {
    const std::uint64_t now = shm::monotonic_ns();
    // (another thread may have stored a time later than our `now`)
    return now > deadline || now > last_ack_ns.load(std::memory_order_relaxed) + kNoProgressNs;
  };

  std::vector<std::thread> threads;
  for (int c = 0; c < cfg.consumers; ++c) {
    threads.emplace_back([&, c] {
      Consumer& con = consumers[static_cast<std::size_t>(c)];
      ConsumerResult& r = out.results[static_cast<std::size_t>(c)];
      r.acked.reserve(total / static_cast<std::uint64_t>(cfg.consumers) * 2);
      std::mt19937 rng(0xc0ffeeu + static_cast<unsigned>(c));
      std::uniform_int_distribution<unsigned> permille(0, 999);
      while (acked_total.load(std::memory_order_acquire) < total) {
        if (give_up.load(std::memory_order_acquire) || stuck()) {
          r.timed_out = true;
          break;
        }
        Delivery d;
        std::byte buf[128];
        const PollStatus st = con.receive_wait(d, buf, 5'000'000);
        if (st == PollStatus::timeout || st == PollStatus::empty) continue;
        if (st != PollStatus::ok) {
          ++r.odd_statuses;
          continue;
        }
        if (d.attempt != d.message.attempt) ++r.attempt_mismatch;
        const auto p = value_of<Payload>(d.message.payload);
        if (d.message.payload.size() != sizeof(Payload) || p.producer >= static_cast<std::uint32_t>(cfg.producers) ||
            p.index >= cfg.per_producer || p.check != check_of(p.producer, p.index)) {
          ++r.bad_payloads;
        }
        // Retry a message at most 20 times, so that it cannot keep bouncing.
        if (cfg.nack_permille != 0 && d.attempt < 20 && permille(rng) < cfg.nack_permille) {
          if (con.nack(d, 0) == AckStatus::ok) {
            ++r.nacked;
          } else {
            ++r.failed_acks;
          }
          continue;
        }
        if (con.ack(d) != AckStatus::ok) {
          ++r.failed_acks;
          continue;
        }
        r.acked.push_back({d.sequence, p.producer, p.index});
        acked_total.fetch_add(1, std::memory_order_acq_rel);
        // relaxed: a progress timestamp for the stall bound only.
        last_ack_ns.store(shm::monotonic_ns(), std::memory_order_relaxed);
      }
    });
  }
  for (int p = 0; p < cfg.producers; ++p) {
    threads.emplace_back([&, p] {
      Publisher& pub = pubs[static_cast<std::size_t>(p)];
      const auto id = static_cast<std::uint32_t>(p);
      for (std::uint64_t i = 0; i < cfg.per_producer;) {
        const Payload pl{id, 0, i, check_of(id, i)};
        const PublishStatus st = pub.publish(bytes_of(pl), {}, 100'000'000);
        if (st == PublishStatus::ok) {
          committed.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after join
          ++i;
        } else if (st == PublishStatus::timeout && !stuck() && !give_up.load(std::memory_order_acquire)) {
          continue;  // backpressure from the group floor: retry the same message
        } else {
          out.producer_end[static_cast<std::size_t>(p)] = st;
          give_up.store(true, std::memory_order_release);
          break;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  out.published = committed.load();
  out.stats = ch.stats();
  return out;
}

/// Checks the union of all acks: every published message exactly once, and
/// the sequences exactly 0..total-1. Returns the number of acks.
std::uint64_t check_every_message_acked_once(const Config& cfg, const Outcome& out) {
  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  std::vector<std::uint8_t> by_payload(total, 0);
  std::vector<std::uint8_t> by_sequence(total, 0);
  std::uint64_t acks = 0, out_of_range = 0, duplicates = 0;
  for (const auto& r : out.results) {
    for (const Acked& a : r.acked) {
      ++acks;
      if (a.sequence >= total || a.producer >= static_cast<std::uint32_t>(cfg.producers) ||
          a.index >= cfg.per_producer) {
        ++out_of_range;
        continue;
      }
      duplicates += by_sequence[a.sequence]++ != 0;
      duplicates += by_payload[a.producer * cfg.per_producer + a.index]++ != 0;
    }
  }
  auto zeros = [](const std::vector<std::uint8_t>& v) {
    return static_cast<std::uint64_t>(std::count(v.begin(), v.end(), 0));
  };
  const std::uint64_t missing_payloads = zeros(by_payload);
  const std::uint64_t missing_sequences = zeros(by_sequence);
  INFO("acks " << acks << ", out of range " << out_of_range << ", duplicates " << duplicates << ", missing payloads "
               << missing_payloads << ", missing sequences " << missing_sequences);
  CHECK(acks == total);
  CHECK(out_of_range == 0);
  CHECK(duplicates == 0);
  CHECK(missing_payloads == 0);
  CHECK(missing_sequences == 0);
  return acks;
}

void check_consumers_clean(const Outcome& out) {
  for (std::size_t i = 0; i < out.results.size(); ++i) {
    const ConsumerResult& r = out.results[i];
    INFO("consumer " << i << " acked " << r.acked.size());
    CHECK_FALSE(r.timed_out);
    CHECK(r.bad_payloads == 0);
    CHECK(r.failed_acks == 0);
    CHECK(r.odd_statuses == 0);
    CHECK(r.attempt_mismatch == 0);
  }
}

/// What a failed run looked like: how producers ended and where the group is.
std::string describe(const Outcome& out) {
  std::string s = "producers ended:";
  for (PublishStatus st : out.producer_end) s += " " + std::string(to_string(st));
  s += "; head " + std::to_string(out.stats.head);
  for (const GroupStats& g : out.stats.groups) {
    s += "; group next " + std::to_string(g.next) + " floor " + std::to_string(g.floor) + " in_flight " +
         std::to_string(g.in_flight) + " due " + std::to_string(g.due) + " delivered " + std::to_string(g.delivered) +
         " acked " + std::to_string(g.acked) + " nacked " + std::to_string(g.nacked) + " redelivered " +
         std::to_string(g.redelivered) + " expired " + std::to_string(g.expired) + " lost " + std::to_string(g.lost);
  }
  return s;
}

const GroupStats& only_group(const ChannelStats& st) {
  REQUIRE(st.groups.size() == 1);
  return st.groups[0];
}

}  // namespace

TEST_CASE(
    "M consumer threads in a group over K producer threads: every message acked exactly once "
    "when nobody crashes, and the counters add up") {
  const Config cfg;
  const Outcome out = run_group_stress(cfg);
  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  INFO(describe(out));
  REQUIRE(out.published == total);
  check_consumers_clean(out);
  check_every_message_acked_once(cfg, out);

  const GroupStats& g = only_group(out.stats);
  CHECK(out.stats.head == total);
  CHECK(g.acked == total);
  CHECK(g.delivered == total);  // the visibility timeout is long: nothing expired
  CHECK(g.redelivered == 0);
  CHECK(g.expired == 0);
  CHECK(g.nacked == 0);
  CHECK(g.dead_lettered == 0);
  CHECK(g.lost == 0);
  CHECK(g.dlq_failures == 0);
  CHECK(g.floor == out.stats.head);
  CHECK(g.next == out.stats.head);
  CHECK(g.in_flight == 0);
  CHECK(g.due == 0);
  CHECK(g.unfinished == 0);
  // Every consumer is still a member; their own counters add up to the group's.
  REQUIRE(g.consumers.size() == static_cast<std::size_t>(cfg.consumers));
  std::uint64_t delivered = 0, acked = 0;
  for (const ConsumerStats& c : g.consumers) {
    delivered += c.delivered;
    acked += c.acked;
  }
  CHECK(delivered == total);
  CHECK(acked == total);
}

TEST_CASE(
    "M consumer threads in a group that nack 5% of deliveries still ack every message exactly "
    "once, and redelivered equals nacked") {
  Config cfg;
  cfg.nack_permille = 50;
  const Outcome out = run_group_stress(cfg);
  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  INFO(describe(out));
  REQUIRE(out.published == total);
  check_consumers_clean(out);
  check_every_message_acked_once(cfg, out);

  std::uint64_t nacked = 0;
  for (const auto& r : out.results) nacked += r.nacked;
  const GroupStats& g = only_group(out.stats);
  INFO("nacked " << nacked << " of " << g.delivered << " deliveries");
  CHECK(nacked > total / 40);  // about 5%: the nack path was exercised
  CHECK(g.nacked == nacked);
  CHECK(g.redelivered == nacked);
  CHECK(g.delivered == total + nacked);
  CHECK(g.acked == total);
  CHECK(g.expired == 0);
  CHECK(g.dead_lettered == 0);
  CHECK(g.lost == 0);
  CHECK(out.stats.head == total);
  CHECK(g.floor == out.stats.head);
  CHECK(g.in_flight == 0);
  CHECK(g.due == 0);
}

TEST_CASE(
    "on a ring of 16 slots, a consumer thread preempted inside receive never takes over the lease "
    "of a later lap") {
  // With 16 slots, a consumer descheduled for a few dozen messages between
  // its loads of `next`, the slot stamp and the lease word comes back to a
  // slot that has moved on by one or more laps. It must notice (the lease
  // word is of another lap, the stamp changed) and retry; taking that word
  // would count a phantom loss (or, if the later message is not below the
  // floor yet, wedge the floor for good and stall every publisher). Several
  // rounds, because the window is a preemption.
  Config cfg;
  cfg.capacity = 16;
  const std::uint64_t total = cfg.per_producer * static_cast<std::uint64_t>(cfg.producers);
  for (int round = 0; round < 6; ++round) {
    const Outcome out = run_group_stress(cfg);
    INFO("round " << round << ": " << describe(out));
    REQUIRE(out.published == total);
    check_consumers_clean(out);
    check_every_message_acked_once(cfg, out);
    const GroupStats& g = only_group(out.stats);
    CHECK(g.lost == 0);
    CHECK(g.acked == total);
    CHECK(g.delivered == total);
    CHECK(g.floor == out.stats.head);
  }
}
