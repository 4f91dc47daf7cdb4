// Crash torture: one trial runs publishers, subscribers (anonymous and
// durable) and the consumers of a group as real processes on one channel,
// SIGKILLs or SIGSTOPs a random one of them at random moments, and then
// proves from a ledger, message by message, what the channel promises on its
// policy. torture.cpp describes a trial and the ledger; torture_test.cpp runs
// trials in tiers (quick by default, 1000 trials under `slow`, a time-bounded
// soak under `soak`).
#pragma once

#include <cstdint>
#include <string>

#include <shmbus/shmbus.hpp>

namespace shmbus::torture {

/// Roles of the processes of a trial.
enum class Role : std::uint32_t { publisher = 0, anonymous = 1, durable = 2, consumer = 3 };
inline constexpr int kRoles = 4;

/// What happens to a victim.
enum class Action : std::uint32_t {
  kill = 0,         ///< SIGKILL at a random moment
  stop_resume = 1,  ///< SIGSTOP, a random pause, SIGCONT
  stop_kill = 2,    ///< SIGSTOP, a random pause, SIGKILL
};
inline constexpr int kActions = 3;

/// Figures summed over trials. Every field counts something the trials did or
/// saw; the checks that must hold are made per trial (run_trial), these are
/// for the report.
struct Figures {
  std::uint64_t trials = 0;
  std::uint64_t trials_by_policy[4] = {};  ///< indexed by Policy (1 block, 2 drop_oldest, 3 reject)
  std::uint64_t messages = 0;              ///< committed messages (publish or commit returned ok, or seen)
  std::uint64_t positions = 0;             ///< sequences claimed (head at the end)
  std::uint64_t abandoned_claims = 0;      ///< claims taken away from dead or stopped writers
  std::uint64_t events = 0;
  std::uint64_t by_role[kRoles] = {};
  std::uint64_t by_action[kActions] = {};
  std::uint64_t held_events = 0;             ///< moments at a held phase (e.g. a claim half written)
  std::uint64_t claims_killed_in_write = 0;  ///< publishers killed with a claim half written
  std::uint64_t late_events = 0;             ///< the victim had already finished its work when the moment came
  std::uint64_t in_flight_at_kill = 0;       ///< a killed publisher's message whose publish had not returned
  std::uint64_t in_flight_committed = 0;     ///< ... of which the readers show it was committed
  std::uint64_t publish_timeouts = 0;        ///< block: a publish that waited out its (short) timeout, retried
  std::uint64_t publish_full = 0;            ///< reject: `full`, retried
  std::uint64_t publish_abandoned = 0;       ///< a claim taken away (`abandoned`), retried
  std::uint64_t subscriber_deliveries = 0;
  std::uint64_t subscriber_missed = 0;      ///< block/reject: a committed message a subscriber never got (must be 0)
  std::uint64_t subscriber_duplicates = 0;  ///< a message delivered twice to one subscriber (must be 0)
  std::uint64_t durable_resumes = 0;
  std::uint64_t durable_pending_consumed =
      0;                                  ///< a killed durable reader's message consumed (cursor moved) before its mark
  std::uint64_t drop_lost_counted = 0;    ///< drop_oldest: losses the subscribers counted
  std::uint64_t drop_lost_uncounted = 0;  ///< drop_oldest: committed, not delivered, not counted (must be 0)
  std::uint64_t group_processings = 0;    ///< ledger entries of consumers
  std::uint64_t group_lost = 0;           ///< the group's `lost` counter (drop_oldest only; 0 elsewhere)
  std::uint64_t group_duplicates = 0;     ///< messages processed by the group more than once
  std::uint64_t dup_consumer_killed = 0;  ///< ... a consumer died before its ack completed
  std::uint64_t dup_lease_expired = 0;    ///< ... a stopped consumer's lease expired; its late ack said lease_lost
  std::uint64_t group_unexplained_duplicates = 0;  ///< (must be 0)
  std::uint64_t lease_lost_overwritten = 0;        ///< drop_oldest: ack refused because the next lap took the slot
  std::uint64_t group_unacked = 0;                 ///< block/reject: a committed message never acked (must be 0)
  std::uint64_t group_redelivered = 0;
  std::uint64_t group_expired = 0;
  std::uint64_t group_dead_releases = 0;
  /// The per_key group "o" (its figures are also in the group_* ones above).
  std::uint64_t ordered_processings = 0;
  std::uint64_t ordered_concurrent_same_key = 0;  ///< two live leases of one key (must be 0)
  std::uint64_t ordered_after_expiry = 0;         ///< overlaps where the earlier lease had expired (allowed)
  std::uint64_t ordered_order_violations = 0;     ///< a key's sequence leased after a later one (must be 0)
  std::uint64_t stuck = 0;                        ///< processes that did not finish within their bound (must be 0)
  double seconds = 0;

  /// One line for the report.
  [[nodiscard]] std::string line() const;
};

/// Runs one trial on a fresh channel of `policy`, with all randomness drawn
/// from `seed`, records every violation as a Catch2 failure (with the seed,
/// the events and the victims' pids and roles), and adds its figures to
/// `fig`. Must be called from a Catch2 test case in the parent process.
void run_trial(Policy policy, std::uint64_t seed, std::uint64_t trial, Figures& fig);

}  // namespace shmbus::torture
