// Single-thread micro-benchmarks of the hot paths, with Google Benchmark.
//
// Everything runs in one thread of one process: these numbers are the cost of
// the code path itself with its cache lines already in this core's cache (no
// cross-core transfer, no waiting), i.e. a lower bound for what the same call
// costs across processes. For cross-process latency against the cache-line
// floor, see shmbus_pingpong (DESIGN.md section 7: quote ratios there).
//
//   BM_Publish/drop_oldest     publish 64 B to a drop_oldest channel with no
//                              reader: never blocks, never gated.
//   BM_Publish/block_consumed  publish 64 B to a block channel with one
//                              subscriber that the loop drains (zero-copy
//                              read_batch, untimed) every half ring: the
//                              gated publish path with its cached minimum.
//   BM_PublishPoll             publish one, then copy-out poll it (block, one
//                              subscriber): one message through the ring.
//   BM_ClaimCommit             zero-copy publish: try_claim, write 64 B, commit
//                              (drop_oldest, no reader).
//   BM_ReceiveAck/one_by_one   publish one, receive it through a group, ack
//                              it: one consumer, one thread (block channel).
//   BM_ReceiveAck/batched      receive + ack only: a batch of half a ring is
//                              published untimed, then received and acked one
//                              by one (timed).
//   BM_PublishFanout/N         publish 64 B to a drop_oldest channel with N
//                              idle subscribers attached: should be flat in N.
//   BM_ClockMonotonic          baseline, same run: one clock_gettime(CLOCK_MONOTONIC)
//                              (publish stamps messages; receive reads the clock).
//   BM_ClockRealtime           shm::realtime_ns(): clock_gettime(CLOCK_REALTIME), what
//                              publish stamps messages with today.
//   BM_TscTicks                shm::tsc_ticks(): the raw counter (rdtsc / cntvct_el0), what
//                              a publisher would store instead.
//   BM_TscToRealtime/recent    shm::tsc_to_realtime_ns() of ticks taken before the loop:
//                              the reader's conversion on its common path (no refresh).
//   BM_TscToRealtime/now       tsc_to_realtime_ns(tsc_ticks()): counter plus conversion,
//                              anchor refreshes included; compare with BM_ClockRealtime.
//   BM_Publish/user_timestamp  BM_Publish/drop_oldest with meta.timestamp_ns set by
//                              the caller: the same path without the clock read.
//   BM_PublishSize/S           publish S bytes (drop_oldest, no reader): the copy's share.
//   BM_Poll/empty              poll a channel with nothing new: what a spinning
//                              subscriber pays per spin.
//   BM_PublishReadBatch/B      publish B messages, then read them with one
//                              zero-copy read_batch (one cursor store per batch);
//                              compare per message with BM_PublishPoll.
//   BM_PublishPollBatch/B      the same with the copy-out poll_batch.
//   BM_ReceiveAck/batch_api    publish 64, receive_batch 64, ack_batch 64; compare
//                              per message with BM_ReceiveAck/one_by_one.
//
// Each reports ns per iteration and items/s; batch benchmarks run B messages
// per iteration and say so in the counter msgs_per_iter (ns per message =
// time / msgs_per_iter). Channels live on the bus "bench-<pid>" with unique names and are
// removed when each benchmark run ends (and at exit, for one that failed).
//
//   shmbus_micro_bench [--benchmark_filter=REGEX] [--benchmark_min_time=S] ...
#include <shmbus/shmbus.hpp>
#include "shm/clock.hpp"
#include "shm/tsc_clock.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>

namespace {

using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;

constexpr std::uint32_t kCapacity = 1024;
constexpr std::uint32_t kSlotSize = 128;  // 64 B payload + the slot header
constexpr std::size_t kPayload = 64;
constexpr std::uint64_t kBatch = kCapacity / 2;

const std::string& bench_bus() {
  static const std::string bus = "bench-" + std::to_string(::getpid());
  return bus;
}

/// Every channel name handed out, so that whatever is left is removed at exit.
class Registry {
 public:
  static Registry& get() {
    static Registry r;
    return r;
  }
  std::string make(const char* stem) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string n = std::string(stem) + "-" + std::to_string(counter_++);
    names_.push_back(n);
    names_.push_back(n + "-dlq");  // a group's DLQ, if one was created
    return n;
  }
  ~Registry() {
    for (const auto& n : names_) (void)Channel::remove(n, bench_bus());
  }

 private:
  std::mutex mu_;
  std::uint64_t counter_ = 0;
  std::vector<std::string> names_;
};

/// A channel for one benchmark run, removed (with its DLQ) when the run ends.
class BenchChannel {
 public:
  BenchChannel(const char* stem, Policy policy, std::uint32_t max_subscribers = 32,
               std::uint32_t slot_size = kSlotSize) {
    name_ = Registry::get().make(stem);
    ChannelOptions o;
    o.capacity = kCapacity;
    o.slot_size = slot_size;
    o.policy = policy;
    o.max_subscribers = max_subscribers;
    auto ch = Channel::create(name_, o, bench_bus());
    if (!ch) {
      error_ = "create " + name_ + ": " + ch.error().message();
      return;
    }
    ch_ = std::move(ch.value());
  }
  ~BenchChannel() {
    ch_ = Channel();
    (void)Channel::remove(name_, bench_bus());
    (void)Channel::remove(name_ + "-dlq", bench_bus());
  }
  BenchChannel(const BenchChannel&) = delete;
  BenchChannel& operator=(const BenchChannel&) = delete;

  [[nodiscard]] bool ok() const { return error_.empty(); }
  [[nodiscard]] const std::string& error() const { return error_; }
  Channel& operator*() { return ch_; }
  Channel* operator->() { return &ch_; }

 private:
  std::string name_;
  std::string error_;
  Channel ch_;
};

std::array<std::byte, kPayload> payload() {
  std::array<std::byte, kPayload> p{};
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::byte>(i);
  return p;
}

/// Ends the run with an error message (Google Benchmark then reports it).
bool fail(benchmark::State& state, const std::string& what) {
  state.SkipWithError(what.c_str());
  return false;
}

void finish(benchmark::State& state) { state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations())); }

/// The counters of a run that moves `batch` messages per iteration.
void finish_batches(benchmark::State& state, std::size_t batch) {
  state.counters["msgs_per_iter"] = static_cast<double>(batch);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}

/// A subscriber that never sleeps (so a publish never wakes a futex), from `start`.
shmbus::SubscribeOptions spin_subscriber(shmbus::StartAt start) {
  shmbus::SubscribeOptions so;
  so.start = start;
  so.wait = shmbus::WaitStrategy::busy_spin;
  return so;
}

/// A group consumer that never sleeps, from the earliest message.
shmbus::GroupOptions bench_group() {
  shmbus::GroupOptions g;
  g.start = shmbus::StartAt::earliest();
  g.wait = shmbus::WaitStrategy::busy_spin;
  return g;  // default lease (30 s): nothing expires during a run
}

/// The reader a Rig attaches after its publisher.
enum class Reader { none, subscriber, group };

/// What most runs set up: a BenchChannel, its publisher and, as asked, a
/// spin_subscriber from the earliest message or a consumer of group "g" (in
/// that order). ok() is false when a step failed: the run was then failed
/// with the reason.
class Rig {
 public:
  Rig(benchmark::State& state, const char* stem, Policy policy, Reader reader = Reader::none,
      std::uint32_t slot_size = kSlotSize)
      : ch(stem, policy, 32, slot_size), ok_(open(state, reader)) {}

  [[nodiscard]] bool ok() const { return ok_; }

  BenchChannel ch;
  shmbus::Publisher pub;
  shmbus::Subscriber sub;     ///< Reader::subscriber only
  shmbus::Consumer consumer;  ///< Reader::group only

 private:
  bool open(benchmark::State& state, Reader reader) {
    if (!ch.ok()) return fail(state, ch.error());
    auto p = ch->publisher();
    if (reader == Reader::subscriber) {
      auto s = ch->subscribe(spin_subscriber(shmbus::StartAt::earliest()));
      if (!p || !s) return fail(state, "publisher / subscriber");
      sub = std::move(s.value());
    } else if (reader == Reader::group) {
      auto c = ch->join_group("g", bench_group());
      if (!p) return fail(state, p.error().message());
      if (!c) return fail(state, c.error().message());
      consumer = std::move(c.value());
    } else if (!p) {
      return fail(state, p.error().message());
    }
    pub = std::move(p.value());
    return true;
  }

  bool ok_;
};

/// The timed loop of the publish-only runs: pub.publish(args...) once per
/// iteration; fails the run on any status but ok. The loop itself is here:
/// no call per iteration beyond publish's own.
template <class... Args>
void publish_loop(benchmark::State& state, shmbus::Publisher& pub, const Args&... args) {
  for (auto _ : state) {
    const PublishStatus st = pub.publish(args...);
    if (st != PublishStatus::ok) return (void)fail(state, std::string(shmbus::to_string(st)));
  }
}

/// Publishes p `n` times (timeout 0); false once it failed the run. Always
/// inlined: it runs inside timed loops, where a call would be measured too.
[[gnu::always_inline]] inline bool publish_n(benchmark::State& state, shmbus::Publisher& pub,
                                             const std::array<std::byte, kPayload>& p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (pub.publish(p, {}, 0) != PublishStatus::ok) return fail(state, "publish");
  }
  return true;
}

/// One receive into d and buf, then its ack; false once it failed the run.
/// Always inlined: it runs inside timed loops.
[[gnu::always_inline]] inline bool receive_ack(benchmark::State& state, shmbus::Consumer& consumer, shmbus::Delivery& d,
                                               std::span<std::byte> buf) {
  const PollStatus st = consumer.receive(d, buf);
  if (st != PollStatus::ok) return fail(state, "receive: " + std::string(shmbus::to_string(st)));
  const shmbus::AckStatus a = consumer.ack(d);
  if (a != shmbus::AckStatus::ok) return fail(state, "ack: " + std::string(shmbus::to_string(a)));
  return true;
}

// --- publish -------------------------------------------------------------------------

void BM_Publish_DropOldest(benchmark::State& state) {
  Rig r(state, "pub-drop", Policy::drop_oldest);
  if (!r.ok()) return;
  publish_loop(state, r.pub, payload());
  finish(state);
}

void BM_Publish_BlockConsumed(benchmark::State& state) {
  Rig r(state, "pub-block", Policy::block, Reader::subscriber);
  if (!r.ok()) return;
  const auto p = payload();
  std::uint64_t in_ring = 0;
  std::uint64_t sink = 0;
  for (auto _ : state) {
    if (in_ring == kBatch) {
      // The consuming subscriber, untimed: half a ring at a time, so the
      // publisher stays on its cached-gate fast path most of the time.
      state.PauseTiming();
      const std::size_t n =
          r.sub.read_batch([&](const shmbus::Message& m) noexcept { sink += m.payload.size(); }, kBatch);
      state.ResumeTiming();
      if (n != kBatch) return (void)fail(state, "the subscriber read " + std::to_string(n));
      in_ring = 0;
    }
    const PublishStatus st = r.pub.publish(p, {}, 0);
    if (st != PublishStatus::ok) return (void)fail(state, std::string(shmbus::to_string(st)));
    ++in_ring;
  }
  benchmark::DoNotOptimize(sink);
  finish(state);
}

void BM_PublishPoll(benchmark::State& state) {
  Rig r(state, "pubpoll", Policy::block, Reader::subscriber);
  if (!r.ok()) return;
  const auto p = payload();
  std::array<std::byte, kPayload> buf{};
  shmbus::Message m;
  for (auto _ : state) {
    if (r.pub.publish(p, {}, 0) != PublishStatus::ok) return (void)fail(state, "publish");
    if (r.sub.poll(m, buf) != PollStatus::ok) return (void)fail(state, "poll");
    benchmark::DoNotOptimize(m.payload.data());
  }
  finish(state);
}

void BM_ClaimCommit(benchmark::State& state) {
  Rig r(state, "claim", Policy::drop_oldest);
  if (!r.ok()) return;
  const auto p = payload();
  for (auto _ : state) {
    shmbus::Claim claim;
    if (r.pub.try_claim(kPayload, claim) != PublishStatus::ok) return (void)fail(state, "try_claim");
    std::memcpy(claim.payload.data(), p.data(), kPayload);
    if (r.pub.commit(claim, kPayload) != PublishStatus::ok) return (void)fail(state, "commit");
  }
  finish(state);
}

// --- groups: receive + ack -------------------------------------------------------------

void BM_ReceiveAck_OneByOne(benchmark::State& state) {
  Rig r(state, "recvack", Policy::block, Reader::group);
  if (!r.ok()) return;
  const auto p = payload();
  std::array<std::byte, kPayload> buf{};
  shmbus::Delivery d;
  for (auto _ : state) {
    if (r.pub.publish(p, {}, 0) != PublishStatus::ok) return (void)fail(state, "publish");
    if (!receive_ack(state, r.consumer, d, buf)) return;
  }
  finish(state);
}

void BM_ReceiveAck_Batched(benchmark::State& state) {
  Rig r(state, "recvack-b", Policy::block, Reader::group);
  if (!r.ok()) return;
  const auto p = payload();
  std::array<std::byte, kPayload> buf{};
  shmbus::Delivery d;
  std::uint64_t left = 0;
  for (auto _ : state) {
    if (left == 0) {
      state.PauseTiming();  // publish a batch, untimed
      if (!publish_n(state, r.pub, p, kBatch)) return;
      left = kBatch;
      state.ResumeTiming();
    }
    if (!receive_ack(state, r.consumer, d, buf)) return;
    --left;
  }
  finish(state);
}

// --- fan-out: publish cost as idle subscribers grow -------------------------------------

void BM_PublishFanout(benchmark::State& state) {
  const auto subscribers = static_cast<std::uint32_t>(state.range(0));
  BenchChannel ch("fanout", Policy::drop_oldest);
  if (!ch.ok()) return (void)fail(state, ch.error());
  std::vector<shmbus::Subscriber> subs;
  for (std::uint32_t i = 0; i < subscribers; ++i) {
    auto s = ch->subscribe(spin_subscriber(shmbus::StartAt::latest()));  // idle, never asleep: no futex wake
    if (!s) return (void)fail(state, s.error().message());
    subs.push_back(std::move(s.value()));
  }
  auto pub = ch->publisher();
  if (!pub) return (void)fail(state, pub.error().message());
  publish_loop(state, *pub, payload());
  state.counters["subscribers"] = subscribers;
  finish(state);
}

void BM_ClockMonotonic(benchmark::State& state) {
  timespec ts{};
  for (auto _ : state) {
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    benchmark::DoNotOptimize(ts);
  }
  finish(state);
}

void BM_ClockRealtime(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(shmbus::shm::realtime_ns());
  finish(state);
}

void BM_TscTicks(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(shmbus::shm::tsc_ticks());
  finish(state);
}

void BM_TscToRealtime_Recent(benchmark::State& state) {
  std::uint64_t t = shmbus::shm::tsc_ticks();
  (void)shmbus::shm::tsc_to_realtime_ns(t);  // calibrate before timing
  for (auto _ : state) {
    benchmark::DoNotOptimize(t);  // not hoisted out of the loop
    benchmark::DoNotOptimize(shmbus::shm::tsc_to_realtime_ns(t));
  }
  finish(state);
}

void BM_TscToRealtime_Now(benchmark::State& state) {
  (void)shmbus::shm::tsc_to_realtime_ns(shmbus::shm::tsc_ticks());  // calibrate before timing
  for (auto _ : state) {
    benchmark::DoNotOptimize(shmbus::shm::tsc_to_realtime_ns(shmbus::shm::tsc_ticks()));
  }
  finish(state);
}

// --- more paths: no clock, sizes, empty polls, batch APIs ------------------------------

void BM_Publish_UserTimestamp(benchmark::State& state) {
  Rig r(state, "pub-ts", Policy::drop_oldest);
  if (!r.ok()) return;
  shmbus::MessageMeta meta;
  meta.timestamp_ns = 1;  // set by the caller: publish reads no clock
  publish_loop(state, r.pub, payload(), meta);
  finish(state);
}

void BM_PublishSize(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto slot = static_cast<std::uint32_t>((64 + size + 63) / 64 * 64);
  Rig r(state, "pub-size", Policy::drop_oldest, Reader::none, slot);
  if (!r.ok()) return;
  const std::vector<std::byte> p(size, std::byte{0x5a});
  publish_loop(state, r.pub, p);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(size));
  finish(state);
}

void BM_Poll_Empty(benchmark::State& state) {
  BenchChannel ch("poll-empty", Policy::block);
  if (!ch.ok()) return (void)fail(state, ch.error());
  auto sub = ch->subscribe(spin_subscriber(shmbus::StartAt::latest()));
  if (!sub) return (void)fail(state, sub.error().message());
  std::array<std::byte, kPayload> buf{};
  shmbus::Message m;
  for (auto _ : state) {
    if (sub->poll(m, buf) != PollStatus::empty) return (void)fail(state, "poll: not empty");
  }
  finish(state);
}

/// publish `batch` (untimed share included), then one read_batch / poll_batch.
template <bool kCopy>
void publish_then_batch(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  Rig r(state, kCopy ? "pollbatch" : "readbatch", Policy::block, Reader::subscriber);
  if (!r.ok()) return;
  const auto p = payload();
  std::vector<shmbus::Message> out(batch);
  std::vector<std::byte> arena(batch * kPayload);
  std::uint64_t sink = 0;
  for (auto _ : state) {
    if (!publish_n(state, r.pub, p, batch)) return;
    std::size_t n = 0;
    if constexpr (kCopy) {
      n = r.sub.poll_batch(out, arena);
    } else {
      n = r.sub.read_batch([&](const shmbus::Message& m) noexcept { sink += m.payload.size(); }, batch);
    }
    if (n != batch) return (void)fail(state, "the batch read " + std::to_string(n));
  }
  benchmark::DoNotOptimize(sink);
  finish_batches(state, batch);
}
void BM_PublishReadBatch(benchmark::State& state) { publish_then_batch<false>(state); }
void BM_PublishPollBatch(benchmark::State& state) { publish_then_batch<true>(state); }

void BM_ReceiveAck_BatchApi(benchmark::State& state) {
  constexpr std::size_t kB = 64;
  Rig r(state, "recvack-api", Policy::block, Reader::group);
  if (!r.ok()) return;
  const auto p = payload();
  std::vector<shmbus::Delivery> ds(kB);
  std::vector<std::byte> arena(kB * kPayload);
  for (auto _ : state) {
    if (!publish_n(state, r.pub, p, kB)) return;
    PollStatus last = PollStatus::ok;
    const std::size_t n = r.consumer.receive_batch(ds, arena, &last);
    if (n != kB)
      return (void)fail(state, "receive_batch: " + std::to_string(n) + ", " + std::string(shmbus::to_string(last)));
    if (r.consumer.ack_batch(ds) != kB) return (void)fail(state, "ack_batch");
  }
  finish_batches(state, kB);
}

BENCHMARK(BM_ClockMonotonic);
BENCHMARK(BM_ClockRealtime);
BENCHMARK(BM_TscTicks);
BENCHMARK(BM_TscToRealtime_Recent)->Name("BM_TscToRealtime/recent");
BENCHMARK(BM_TscToRealtime_Now)->Name("BM_TscToRealtime/now");
BENCHMARK(BM_Publish_DropOldest)->Name("BM_Publish/drop_oldest");
BENCHMARK(BM_Publish_BlockConsumed)->Name("BM_Publish/block_consumed");
BENCHMARK(BM_PublishPoll);
BENCHMARK(BM_ClaimCommit);
BENCHMARK(BM_ReceiveAck_OneByOne)->Name("BM_ReceiveAck/one_by_one");
BENCHMARK(BM_ReceiveAck_Batched)->Name("BM_ReceiveAck/batched");
BENCHMARK(BM_PublishFanout)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16);
BENCHMARK(BM_Publish_UserTimestamp)->Name("BM_Publish/user_timestamp");
BENCHMARK(BM_PublishSize)->Arg(8)->Arg(64)->Arg(512)->Arg(4096)->Arg(65536);
BENCHMARK(BM_Poll_Empty)->Name("BM_Poll/empty");
BENCHMARK(BM_PublishReadBatch)->Arg(16)->Arg(256);
BENCHMARK(BM_PublishPollBatch)->Arg(16)->Arg(256);
BENCHMARK(BM_ReceiveAck_BatchApi)->Name("BM_ReceiveAck/batch_api");

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  (void)Registry::get();  // constructed before the runs: destroyed (cleans up) after them
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
