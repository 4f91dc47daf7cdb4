// Publisher: appends messages to a channel. Many publishers (in many
// processes) may append to one channel at once; each handle is used by one
// thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include <shmbus/types.hpp>

namespace shmbus::bus {
class PublisherCore;
}

namespace shmbus {

/// Default bound on how long a publish waits on a `block` channel.
inline constexpr std::uint64_t kDefaultPublishTimeoutNs = 1'000'000'000ULL;

class Publisher {
 public:
  /// Describes message `i` of a batch read in place (publish_batch below).
  using MessageAt = OutMessage (*)(const void* ctx, std::size_t i) noexcept;

  Publisher() noexcept;  ///< an empty handle: every call returns `invalid` (or nothing)
  ~Publisher();
  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;

  /// Copies `payload` into the next slot and commits it. On a `block` channel
  /// waits up to timeout_ns for the slowest reader, then returns `timeout`;
  /// `reject` returns `full` at once; `drop_oldest` never waits.
  /// No allocation; no system call unless a reader sleeps or the ring is full.
  /// Not thread-safe: one caller at a time per handle.
  PublishStatus publish(std::span<const std::byte> payload, const MessageMeta& meta = {},
                        std::uint64_t timeout_ns = kDefaultPublishTimeoutNs) noexcept;

  /// Same, for text. Not thread-safe: one caller at a time per handle.
  PublishStatus publish(std::string_view text, const MessageMeta& meta = {},
                        std::uint64_t timeout_ns = kDefaultPublishTimeoutNs) noexcept;

  /// Publishes `msgs` in order under consecutive sequences, with one update
  /// of the channel's claim counter, one space check and one reader wake-up
  /// for the whole batch (one clock read stamps every message that has no
  /// timestamp). A batch is all or nothing while it waits: on a `block`
  /// channel it waits up to timeout_ns for room for every message, then
  /// returns `timeout` having published none; `reject` returns `full` unless
  /// all fit; `too_large` if a payload exceeds max_payload() or the batch
  /// holds more messages than the ring has slots. Once room is taken every
  /// message is written: `abandoned` (this thread stalled past the unblock
  /// timeout) or `removed`/`segment_lost` then report that some may not have
  /// reached readers. No allocation; no system call unless a reader sleeps
  /// or the ring is full. Not thread-safe: one caller at a time per handle.
  PublishStatus publish_batch(std::span<const OutMessage> msgs,
                              std::uint64_t timeout_ns = kDefaultPublishTimeoutNs) noexcept;

  /// publish_batch for `n` messages that `at(ctx, i)` describes, read in
  /// place (for bindings whose arrays are not OutMessage). Not thread-safe.
  PublishStatus publish_batch(std::size_t n, MessageAt at, const void* ctx,
                              std::uint64_t timeout_ns = kDefaultPublishTimeoutNs) noexcept;

  /// Zero-copy batch: claims claims.size() consecutive slots at once (one
  /// claim-counter update, one space check), each for up to max_length
  /// bytes; commit() or abort() each claim. All or none: on any status but
  /// `ok` no claim is active. Waiting for space happens before anything is
  /// claimed, so a batch never waits while holding a claim. `too_large` if
  /// max_length exceeds max_payload() or there are more claims than slots.
  /// Not thread-safe: one caller at a time per handle.
  PublishStatus try_claim_batch(std::size_t max_length, std::span<Claim> claims,
                                std::uint64_t timeout_ns = kDefaultPublishTimeoutNs) noexcept;

  /// Zero-copy: claims the next slot for a message of up to max_length bytes
  /// (backpressure applies as for publish). Write into claim.payload, then
  /// commit() or abort(). A claim left uncommitted past the channel's unblock
  /// timeout is taken away (commit then returns `abandoned`).
  /// Holding several claims at once is allowed, but on a `block` channel do
  /// not wait for space (a blocking try_claim or publish) while holding an
  /// uncommitted claim: readers stop at that claim, so the space never comes
  /// until the unblock timeout takes the claim away. Claim several slots at
  /// once with try_claim_batch (it waits before claiming any), or claim with
  /// timeout_ns = 0, or commit first.
  /// Not thread-safe: one caller at a time per handle.
  PublishStatus try_claim(std::size_t max_length, Claim& claim,
                          std::uint64_t timeout_ns = kDefaultPublishTimeoutNs) noexcept;

  /// Commits a claim with `length` payload bytes (one CAS). Returns
  /// `abandoned` if the claim was taken away meanwhile.
  /// Not thread-safe: one caller at a time per handle.
  PublishStatus commit(Claim& claim, std::size_t length, const MessageMeta& meta = {}) noexcept;

  /// Gives a claim back; readers skip its sequence. Not thread-safe.
  void abort(Claim& claim) noexcept;

  /// Largest payload a message may carry on this channel. Thread-safe.
  [[nodiscard]] std::size_t max_payload() const noexcept;
  /// Whether this handle is attached. Thread-safe.
  [[nodiscard]] bool valid() const noexcept { return core_ != nullptr; }

 private:
  friend class Channel;
  explicit Publisher(std::unique_ptr<bus::PublisherCore> core) noexcept;
  std::unique_ptr<bus::PublisherCore> core_;
};

}  // namespace shmbus
