// Competing-consumer groups: a shared `next`, a `floor`, and a lease word per
// ring slot. Each message goes to one consumer; ack ends its lease; a lease
// whose deadline passes (or whose consumer died) is redelivered with
// attempt + 1; at max_deliveries the message is copied to the group's DLQ.
// Every lease transition is one CAS on one 64-bit word. See docs/protocol.md
// ("Groups").
//
// This header holds one consumer of a group, ConsumerCore: its lease state
// machine (receive, ack, nack, extend, dead_letter, the floor), in
// consumer_core.cpp. The group and consumer tables are in membership.hpp, the
// DLQ and redrive in dlq.hpp, the shared words of a group in group_view.hpp;
// this header includes them all, for the users of the subsystem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/common/types.hpp"
#include "bus/group/dlq.hpp"
#include "bus/group/group_view.hpp"
#include "bus/group/membership.hpp"
#include "bus/group/ordered_scan.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "bus/ring/publisher_core.hpp"
#include "bus/ring/slots.hpp"

namespace shmbus::bus {

/// One consumer of a group. Not thread-safe: one caller at a time.
class ConsumerCore {
 public:
  ConsumerCore() = default;
  ConsumerCore(const ConsumerCore&) = delete;
  ConsumerCore& operator=(const ConsumerCore&) = delete;
  ~ConsumerCore();

  /// Joins (creating if needed) group `name`, and makes sure its DLQ exists.
  static Result<std::unique_ptr<ConsumerCore>> join(std::shared_ptr<ChannelState> ch, std::string_view name,
                                                    const GroupOptions& opts);

  PollStatus receive(Delivery& out, std::span<std::byte> buffer) noexcept;
  PollStatus receive_wait(Delivery& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept;
  /// Copy-out batch: up to out.size() deliveries, payloads packed into
  /// `arena`, with one clock read and one group counter update. Returns how
  /// many; *last (if given) is the status that ended the batch.
  std::size_t receive_batch(std::span<Delivery> out, std::span<std::byte> arena, PollStatus* last) noexcept;
  AckStatus ack(const Delivery& d) noexcept;
  /// Acks each delivery; one counter update and one floor advance for all.
  /// Returns how many were acked.
  std::size_t ack_batch(std::span<const Delivery> ds) noexcept;
  /// Makes the delivery due again after delay_ns; on its last allowed
  /// attempt (attempt >= max_deliveries) dead-letters it at once instead
  /// (dlq_unavailable if the DLQ cannot take it now: it stays due and is
  /// retried after delay_ns).
  AckStatus nack(const Delivery& d, std::uint64_t delay_ns) noexcept;
  AckStatus nack_with_backoff(const Delivery& d) noexcept;
  AckStatus extend(Delivery& d, std::uint64_t visibility_ns) noexcept;
  AckStatus dead_letter(const Delivery& d) noexcept;
  /// The nack delay after `attempt` deliveries: base * 2^(attempt-1), capped,
  /// with +-jitter.
  std::uint64_t backoff_ns(std::uint32_t attempt) noexcept;

  [[nodiscard]] std::uint32_t group_index() const noexcept { return gi_; }
  [[nodiscard]] std::uint32_t consumer_index() const noexcept { return ci_; }
  [[nodiscard]] const std::shared_ptr<ChannelState>& channel() const noexcept { return ch_; }

 private:
  /// What a per_key scan found in the slot of a sequence.
  enum class SlotSeen {
    message,      ///< committed for it: the key was read
    abandoned,    ///< its claim was abandoned: no message
    overwritten,  ///< a later sequence's claim reused the slot (drop_oldest)
    pending,      ///< not committed yet
  };
  /// per_key groups (ordered_scan.cpp): one scan from the floor that hands
  /// out up to out.size() messages, each the lowest unfinished message of
  /// its key, payloads packed into `arena`. Sets `st` as receive returns it.
  std::size_t receive_ordered(std::span<Delivery> out, std::span<std::byte> arena, std::uint64_t now,
                              PollStatus& st) noexcept;
  /// The time of one per_key scan.
  struct ScanTime {
    std::uint64_t now;  ///< CLOCK_MONOTONIC ns
    std::uint64_t nms;  ///< now in ms, as lease deadlines are
    bool judge_owners;  ///< whether live leases' owners are judged in this scan
  };
  /// What a per_key scan does after one step at a sequence.
  enum class ScanStep {
    next,   ///< decided: go on to the next sequence
    again,  ///< its lease word changed under the step: decide it again
    stop,   ///< not committed: the scan ends here
    take,   ///< leased to this consumer (the lease word is in `lease`): deliver it
  };
  /// One step of a per_key scan at sequence s (`tries`: steps at s so far).
  ScanStep scan_step(std::uint64_t s, const ScanTime& t, int tries, std::uint64_t& lease) noexcept;
  /// scan_step for a sequence whose slot holds no committed message for it.
  ScanStep scan_no_message(std::uint64_t s, SlotSeen seen, std::uint64_t w, std::uint64_t stamp,
                           const ScanTime& t) noexcept;
  /// scan_step for a message in progress (its lease word `w` is of its lap):
  /// blocks its key, and takes it over if its lease ended or its retry is due.
  ScanStep scan_in_progress(std::uint64_t s, std::uint64_t w, std::uint64_t key, const ScanTime& t,
                            std::uint64_t& lease) noexcept;
  /// Reads sequence s's stamp (into `stamp`) and, if committed, its key
  /// (seqlock read).
  SlotSeen key_at(std::uint64_t s, std::uint64_t& key, std::uint64_t& stamp) const noexcept;
  /// Raises `next` to at least `to` (a CAS-max loop).
  void raise_next(std::uint64_t to) noexcept;
  /// Ends sequence s, overwritten by the ring, as lost (end_overwritten_held).
  void lose_overwritten(std::uint64_t s) noexcept;
  /// Wakes consumers sleeping in receive_wait (a key may be free now).
  [[gnu::noinline]] void wake_ordered() noexcept;
  /// Where take_run stopped.
  enum class RunEnd {
    full,     ///< `out` is full
    general,  ///< at something it leaves to take_new (nothing committed at `next`, a lease word to help past
              ///< or count lost, a lost CAS, a payload over fast_max_ or over what is left of the arena)
    lapped,   ///< the message it took was overwritten while it was read: its lease ended lost (G10)
  };
  /// The common case of receive, for a run of new messages from `next` on:
  /// each committed, with a free lease word and a payload of at most
  /// fast_max_ that fits what is left of `arena`. The steps of take_new and
  /// deliver (one G1 CAS per message, the seqlock copy and check), but
  /// `next` moves past the run once, at its end (docs/protocol.md 8.3,
  /// "Runs"); the deadline and the lease word's fields are computed once
  /// for the run, the copies are inline and the consumer's delivered
  /// counter is added once. Fills out[0, k) with payloads packed into
  /// `arena` (`used` bytes of it) and returns k; the group's delivered
  /// counter is the caller's. Not for per_key groups.
  std::size_t take_run(std::span<Delivery> out, std::span<std::byte> arena, std::uint64_t now, std::size_t& used,
                       RunEnd& end) noexcept;
  /// Whether receive must run the general path first: a scan for due
  /// redeliveries is due.
  [[nodiscard]] bool scan_due(std::uint64_t now) const noexcept { return now - last_scan_ns_ >= scan_every_ns_; }
  bool take_new(Delivery& out, std::span<std::byte> buffer, PollStatus& st, std::uint64_t now) noexcept;
  /// Moves `next` past n if nobody has yet. Inline: it is on the receive path.
  void help_advance_next(std::uint64_t n) noexcept {
    // A copy: a failed CAS must not change the caller's n (it still names
    // the sequence it holds a lease on).
    std::uint64_t expected = n;
    (void)g_->next.compare_exchange_strong(expected, n + 1, std::memory_order_acq_rel);
  }
  bool take_due(Delivery& out, std::span<std::byte> buffer, PollStatus& st, std::uint64_t now) noexcept;
  bool deliver(std::uint64_t seq, std::uint64_t lease, Delivery& out, std::span<std::byte> buffer,
               PollStatus& st) noexcept;
  bool owner_dead(std::uint32_t owner) noexcept;
  AckStatus end_lease_acked(const Delivery& d) noexcept;
  PollStatus receive_at(Delivery& out, std::span<std::byte> buffer, std::uint64_t now) noexcept;
  AckStatus finish(const Delivery& d, std::uint64_t next_word) noexcept;
  AckStatus nack_final(const Delivery& d, std::uint64_t due_ms) noexcept;
  /// Takes d's lease (ours) to dead-lettering, one CAS, with a deadline one
  /// visibility timeout away: a consumer killed before the copy leaves it to
  /// the next one. Sets `held` to the new word; lease_lost if the CAS failed.
  AckStatus begin_dead_letter(const Delivery& d, std::uint64_t& held) noexcept;
  AckStatus send_to_dlq(std::uint64_t seq, std::uint64_t held, DeadLetterReason reason) noexcept;
  void advance_floor() noexcept;
  void release() noexcept;
  [[nodiscard]] std::uint32_t lap(std::uint64_t seq) const noexcept { return lap_of(seq, lap_shift_); }
  /// Whether a new lease for `seq` may replace `word`: never used, or a
  /// finished lease of an earlier lap. Inline: it is on the receive path.
  [[nodiscard]] bool available_for(std::uint64_t seq, std::uint64_t word) const noexcept {
    if (word == 0) return true;  // never used
    const LeaseFields lf = lease_fields(word);
    return lease_final(lf.state) && lf.lap != lap(seq);  // an earlier lap, finished
  }
  /// Whether this consumer holds d's lease as a live one (leased, ours, this
  /// lap): the only lease that ack, nack, extend and dead_letter may end.
  /// Inline: it is on the ack path.
  [[nodiscard]] bool holds(const Delivery& d) const noexcept {
    return ch_ && d.group == gi_ && holds_lease(d.sequence, d.lease);
  }
  /// holds() for the lease word `lease` on sequence `seq`, of this group.
  [[nodiscard]] bool holds_lease(std::uint64_t seq, std::uint64_t lease) const noexcept {
    const LeaseFields lf = lease_fields(lease);
    return lf.state == kLeaseLeased && lf.owner == ci_ && lf.lap == lap(seq);
  }
  /// The word that acks `lease` (G3): acked, no deadline, the rest kept.
  [[nodiscard]] static std::uint64_t acked_word(std::uint64_t lease) noexcept {
    LeaseFields lf = lease_fields(lease);
    lf.state = kLeaseAcked;
    lf.deadline_ms = 0;
    return make_lease(lf);
  }
  /// end_lease_lost for a lease of ours; out of line, so that the delivery
  /// path it leaves keeps its registers.
  [[gnu::noinline, gnu::cold]] void end_lost(std::uint64_t seq, std::uint64_t lease) noexcept;
  [[nodiscard]] GroupView view() const noexcept { return {ch_.get(), g_, leases_, mask_, lap_shift_}; }

  std::shared_ptr<ChannelState> ch_;
  GroupEntry* g_ = nullptr;
  ConsumerEntry* me_ = nullptr;
  ConsumerEntry* consumers_ = nullptr;
  std::atomic<std::uint64_t>* leases_ = nullptr;
  std::uint32_t gi_ = 0;
  std::uint32_t ci_ = 0;
  std::uint64_t control_ = 0;
  std::uint64_t mask_ = 0;
  std::uint32_t lap_shift_ = 0;
  std::uint32_t fast_max_ = 0;  ///< the largest payload take_run copies itself: min(max_payload, kSmallCopy)
  std::uint64_t visibility_ns_ = 0;
  std::uint32_t max_deliveries_ = 0;
  std::uint64_t backoff_base_ns_ = 0;
  std::uint64_t backoff_cap_ns_ = 0;
  std::uint32_t jitter_permille_ = 0;
  WaitStrategy wait_ = WaitStrategy::block;
  std::string dlq_name_;
  std::unique_ptr<PublisherCore> dlq_pub_;  ///< opened on first dead letter
  std::shared_ptr<ChannelState> dlq_ch_;
  std::uint64_t last_scan_ns_ = 0;
  std::uint64_t scan_every_ns_ = 0;
  std::uint64_t rng_ = 0;
  struct OwnerSeen {
    std::uint64_t control = 0;  ///< the consumer entry's control word when judged
    bool dead = false;
  };
  std::vector<OwnerSeen> owner_cache_;  ///< per consumer index, refreshed every 5 ms
  std::uint64_t owner_cache_ns_ = 0;
  StallWatch stall_;                   ///< a dead publisher's claim at `next`
  StampClock clock_;                   ///< converts the stamps it hands out
  bool batching_ = false;              ///< inside receive_batch: count deliveries locally
  std::uint64_t batch_delivered_ = 0;  ///< deliveries of the batch not yet in the group's counter
  std::uint64_t last_stall_check_ns_ = 0;
  bool ordered_ = false;            ///< a per_key group
  std::uint64_t order_window_ = 0;  ///< per_key: sequences past the floor a scan looks at
  BlockedKeys blocked_;             ///< per_key: the keys the current scan holds back
};

}  // namespace shmbus::bus
