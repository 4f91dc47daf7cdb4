// Crash torture, in tiers (see torture.cpp for what one trial does and proves):
//   shmbus_torture_tests   label multiprocess (default): a few trials per policy
//   shmbus_torture_trials  label slow: SHMBUS_TORTURE_TRIALS trials in all (1000)
//   shmbus_torture_soak    labels slow and soak: trials cycling the policies for
//                          SHMBUS_TORTURE_SOAK_SECONDS (600), or for the
//                          seconds in the environment variable SHMBUS_SOAK_SECONDS
// Each tier prints one line of figures (trials, messages, events, losses,
// duplicates and why each was allowed, time).
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "torture.hpp"

using namespace shmbus;
using namespace shmbus::torture;

namespace {

/// Seeds differ per policy and trial, so any failing trial can be rerun
/// alone from the seed in its failure message.
std::uint64_t seed_of(Policy p, std::uint64_t trial) {
  return 0x70a7'7e57'0000'0000ULL ^ (static_cast<std::uint64_t>(p) << 40) ^ (trial * 0x9e3779b97f4a7c15ULL);
}

void report(const char* tier, const Figures& fig) {
  std::printf("torture %s: %s\n", tier, fig.line().c_str());
  std::fflush(stdout);
}

/// What every tier checks over all its trials (each trial checked itself).
void check_totals(const Figures& fig, std::uint64_t trials) {
  CHECK(fig.trials == trials);
  CHECK(fig.subscriber_missed == 0);
  CHECK(fig.subscriber_duplicates == 0);
  CHECK(fig.drop_lost_uncounted == 0);
  CHECK(fig.group_unacked == 0);
  CHECK(fig.group_unexplained_duplicates == 0);
  CHECK(fig.stuck == 0);
  CHECK(fig.ordered_concurrent_same_key == 0);
  CHECK(fig.ordered_order_violations == 0);
  // The moments must mostly land while there was work in hand.
  CHECK(fig.late_events * 4 <= fig.events);
}

}  // namespace

#if defined(SHMBUS_TORTURE_SOAK_SECONDS)

TEST_CASE(
    "crash torture soak: publishers, subscribers and consumers killed and stopped at random, "
    "on every policy, for a bounded time") {
  std::uint64_t seconds = SHMBUS_TORTURE_SOAK_SECONDS;
  if (const char* env = std::getenv("SHMBUS_SOAK_SECONDS")) seconds = std::strtoull(env, nullptr, 10);
  const Policy policies[] = {Policy::block, Policy::drop_oldest, Policy::reject};
  Figures fig;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::uint64_t trial = 0;
  // A distinct seed range from the trial tiers.
  for (; std::chrono::steady_clock::now() < end; ++trial) {
    const Policy p = policies[trial % 3];
    run_trial(p, seed_of(p, trial + (1ULL << 32)), trial, fig);
  }
  report("soak", fig);
  check_totals(fig, trial);
}

#else

#ifndef SHMBUS_TORTURE_TRIALS
#define SHMBUS_TORTURE_TRIALS 36  // the quick tier: 12 per policy
#endif

namespace {

void run_tier(Policy p, const char* tier) {
  const std::uint64_t trials = (SHMBUS_TORTURE_TRIALS + 2) / 3;
  Figures fig;
  for (std::uint64_t trial = 0; trial < trials; ++trial) run_trial(p, seed_of(p, trial), trial, fig);
  report(tier, fig);
  check_totals(fig, trials);
}

}  // namespace

TEST_CASE(
    "crash torture on a block channel: no subscriber misses or repeats a committed message, the "
    "group acks every one, and nobody is left stuck") {
  run_tier(Policy::block, "block");
}

TEST_CASE(
    "crash torture on a drop_oldest channel: every loss is counted, nothing is repeated, and "
    "nobody is left stuck") {
  run_tier(Policy::drop_oldest, "drop_oldest");
}

TEST_CASE(
    "crash torture on a reject channel: no subscriber misses or repeats a committed message, the "
    "group acks every one, and nobody is left stuck") {
  run_tier(Policy::reject, "reject");
}

#endif
