// The publishing side of the ring: multi-producer claim / commit / abort on
// slot stamps, with the channel's backpressure policy applied at claim time.
// See docs/protocol.md ("Publish") for the stamp state machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "bus/common/types.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"

namespace shmbus::bus {

/// A claimed slot (the public shmbus::Claim).
using ClaimToken = shmbus::Claim;
/// One message of a batch publish (the public type).
using shmbus::OutMessage;

class PublisherCore {
 public:
  // Pinned in memory: handles hold it by unique_ptr, so moving a handle
  // never moves (or re-releases) the attachment.
  PublisherCore() = default;
  PublisherCore(const PublisherCore&) = delete;
  PublisherCore& operator=(const PublisherCore&) = delete;
  ~PublisherCore();

  static Result<std::unique_ptr<PublisherCore>> create(std::shared_ptr<ChannelState> ch);

  /// Claims the next sequence for a message of up to `max_length` bytes.
  PublishStatus claim(std::size_t max_length, ClaimToken& out, std::uint64_t timeout_ns) noexcept;
  /// Commits a claim with `length` payload bytes: one CAS on the stamp.
  PublishStatus commit(ClaimToken& claim, std::size_t length, const MessageMeta& meta,
                       std::uint32_t attempt = 0) noexcept;
  /// Gives a claim back: readers skip it.
  void abort(ClaimToken& claim) noexcept;
  /// claim + copy + commit, fused: one CAS takes the slot, the metadata and
  /// payload are stored into lines this thread then owns, one CAS commits.
  PublishStatus publish(std::span<const std::byte> payload, const MessageMeta& meta, std::uint64_t timeout_ns) noexcept;
  /// Publishes `msgs` under consecutive sequences with one claim-counter
  /// update, one space check and one wake check. All or nothing for
  /// full/timeout/too_large; see Publisher::publish_batch.
  PublishStatus publish_batch(std::span<const OutMessage> msgs, std::uint64_t timeout_ns) noexcept;
  /// The same for `n` messages that `at(ctx, i)` describes (the C API's
  /// array, read in place).
  using MessageAt = OutMessage (*)(const void* ctx, std::size_t i) noexcept;
  PublishStatus publish_batch(std::size_t n, MessageAt at, const void* ctx, std::uint64_t timeout_ns) noexcept;
  /// Claims claims.size() consecutive sequences at once (one claim-counter
  /// update, one space check), each for up to `max_length` bytes. All or none.
  PublishStatus claim_batch(std::size_t max_length, std::span<ClaimToken> claims, std::uint64_t timeout_ns) noexcept;

  [[nodiscard]] bool valid() const noexcept { return ch_ != nullptr; }
  [[nodiscard]] const std::shared_ptr<ChannelState>& channel() const noexcept { return ch_; }
  [[nodiscard]] std::uint32_t index() const noexcept { return index_; }

 private:
  /// Reserves `n` consecutive sequences from `seq` (space for all of them).
  bool reserve(std::uint64_t& seq, std::uint64_t n, std::uint64_t timeout_ns, PublishStatus& why) noexcept;
  /// Waits until sequence `last` (of a claim starting at `head`) fits the ring.
  bool wait_for_space(std::uint64_t head, std::uint64_t last, std::uint64_t deadline) noexcept;
  /// The timestamp a message gets when its publisher gave none.
  std::uint64_t stamp_time() const noexcept;
  /// What a message's slot stores as its time: the publisher's, else now.
  std::uint64_t time_to_store(const MessageMeta& meta) const noexcept;
  /// Prefetches for write the payload lines past the slot's first.
  void prefetch_payload(std::uint64_t seq, std::size_t n) const noexcept;
  /// The pieces of publish (publisher_core.cpp): the leaf for the usual
  /// case, and the cold paths it leaves by.
  /// The head publish read (and whose slot's lines it asked for), with
  /// that slot: what publish_fast claims unless head has moved since.
  struct Claim {
    std::uint64_t seq;
    std::byte* at;
  };
  PublishStatus publish_fast(std::span<const std::byte> payload, const MessageMeta& meta, std::uint64_t t, Claim c,
                             std::uint64_t timeout_ns) noexcept;
  PublishStatus publish_timed(std::span<const std::byte> payload, const MessageMeta& meta,
                              std::uint64_t timeout_ns) noexcept;
  /// Reads head and prefetches for write its slot's first two lines.
  Claim ask_for_slot() const noexcept;
  PublishStatus publish_general(std::span<const std::byte> payload, const MessageMeta& meta,
                                std::uint64_t timeout_ns) noexcept;
  PublishStatus publish_moved(std::uint64_t seq, std::span<const std::byte> payload, const MessageMeta& meta,
                              std::uint64_t t) noexcept;
  PublishStatus publish_contended(std::span<const std::byte> payload, const MessageMeta& meta, std::uint64_t t,
                                  std::uint64_t timeout_ns) noexcept;
  PublishStatus publish_claimed(std::uint64_t seq, std::span<const std::byte> payload, const MessageMeta& meta,
                                std::uint64_t t) noexcept;
  PublishStatus after_commit() noexcept;
  PublishStatus lost_claim() noexcept;
  /// Stores a message's metadata (`n` payload bytes) into the slot at `at`.
  void store_meta(std::byte* at, std::size_t n, const MessageMeta& meta, std::uint64_t stored_time,
                  std::uint32_t attempt) noexcept;
  /// Takes the slot of a reserved `seq`, stores the message and commits it.
  PublishStatus write_message(std::uint64_t seq, std::span<const std::byte> payload, const MessageMeta& meta,
                              std::uint64_t stored_time, std::uint32_t attempt) noexcept;
  /// kChannelLive, or why this channel is gone (removed_fast; with `slow`,
  /// also the fstat check, at most every few ms).
  std::uint64_t gone(bool slow) noexcept;
  std::uint64_t refresh_gate(std::uint64_t head, bool housekeeping) noexcept;
  void set_gate(std::uint64_t gate) noexcept {
    gate_ = gate;
    limit_ = gate > kMaxSequence - capacity_ ? kMaxSequence : gate + capacity_;
  }
  PublishStatus take_slot(std::uint64_t seq) noexcept;
  void wake_subscribers() noexcept;
  template <class At>
  PublishStatus publish_batch_of(std::size_t n, At at, std::uint64_t timeout_ns) noexcept;
  void release() noexcept;

  std::shared_ptr<ChannelState> ch_;
  ProducerBlock* prod_ = nullptr;
  const std::atomic<std::uint64_t>* removed_ = nullptr;  ///< the header's RemovedState
  PublisherEntry* entry_ = nullptr;
  std::byte* data_ = nullptr;  ///< the writable view of the slots
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t unblock_ns_ = 0;
  std::uint32_t slot_size_ = 0;
  std::uint32_t max_payload_ = 0;
  std::uint32_t fast_max_ = 0;  ///< the largest payload publish_fast takes: min(max_payload_, kSmallCopy)
  std::uint32_t index_ = 0;
  Policy policy_ = Policy::block;
  TimestampSource timestamps_ = TimestampSource::realtime;  ///< tsc only where usable
  std::uint64_t gate_ = 0;                                  ///< local copy of the gating minimum
  /// One past the newest sequence a claim may take: gate_ + capacity_, at
  /// most kMaxSequence (a stamp's 62 bits), so one compare checks both.
  std::uint64_t limit_ = 0;
  std::uint64_t last_housekeeping_ns_ = 0;
  std::uint64_t last_removed_check_ns_ = 0;
  /// This process's pid, for the slot writer word (64 bits wide, so that
  /// make_writer can take it straight from memory).
  std::uint64_t self_pid_ = 0;
};

}  // namespace shmbus::bus
