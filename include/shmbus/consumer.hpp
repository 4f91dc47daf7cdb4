// Consumer: one member of a competing-consumer group. Each message of the
// channel goes to one consumer of the group; it holds a lease until it acks.
// A consumer that crashes or hangs past its lease has the message redelivered
// (at-least-once); after max_deliveries the message goes to the group's DLQ.
// Each handle is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include <shmbus/types.hpp>

namespace shmbus::bus {
class ConsumerCore;
}

namespace shmbus {

class Consumer {
 public:
  Consumer() noexcept;  ///< an empty handle; every call returns `invalid`
  ~Consumer();
  Consumer(Consumer&&) noexcept;
  Consumer& operator=(Consumer&&) noexcept;

  /// Takes the next message for this group (a due redelivery first, else
  /// the next new one), copying its payload into `buffer`; `out` holds the
  /// lease to ack. Returns `empty` if nothing is ready, `buffer_too_small`
  /// (out.message.payload.size() is the size needed; the message stays with
  /// the group), `lapped` if a drop_oldest channel overwrote it (counted).
  /// Never blocks. Not thread-safe: one caller at a time.
  PollStatus receive(Delivery& out, std::span<std::byte> buffer) noexcept;

  /// receive(), waiting up to timeout_ns (spin, then the group's
  /// WaitStrategy). Not thread-safe: one caller at a time.
  PollStatus receive_wait(Delivery& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept;

  /// Copy-out batch: up to out.size() deliveries, payloads packed into
  /// `arena`, with one clock read and one update of the group's counters.
  /// Returns how many; *last (if given) is the status that ended the batch.
  /// Not thread-safe: one caller at a time.
  std::size_t receive_batch(std::span<Delivery> out, std::span<std::byte> arena, PollStatus* last = nullptr) noexcept;

  /// Ends the lease: the message is done. `lease_lost` if the lease had
  /// expired (the message may have gone to another consumer): the ack did
  /// nothing and the work may be done twice. Not thread-safe.
  AckStatus ack(const Delivery& d) noexcept;

  /// Acks several deliveries, with one update of the group's counters and
  /// its floor for all of them; returns how many were acked (each that was
  /// not is as ack() would have answered). Not thread-safe.
  std::size_t ack_batch(std::span<const Delivery> ds) noexcept;

  /// Gives the message back, due again after delay_ns. On its last allowed
  /// attempt (d.attempt == max_deliveries) the message goes to the DLQ now,
  /// within this call; dlq_unavailable if the DLQ cannot take it now (it
  /// stays due for the DLQ and is retried after delay_ns). Not thread-safe.
  AckStatus nack(const Delivery& d, std::uint64_t delay_ns) noexcept;

  /// Gives the message back, due after the group's backoff for its attempt
  /// (exponential from backoff_base_ns, capped, with jitter); on the last
  /// allowed attempt, to the DLQ at once (as nack(d, delay)). Not thread-safe.
  AckStatus nack(const Delivery& d) noexcept;

  /// Extends the lease to visibility_ns from now (a heartbeat for long jobs);
  /// updates d. Not thread-safe.
  AckStatus extend(Delivery& d, std::uint64_t visibility_ns) noexcept;

  /// Sends the message to the DLQ now (a poison message the consumer
  /// recognises). Not thread-safe.
  AckStatus dead_letter(const Delivery& d) noexcept;

  /// The delay nack(d) would use after `attempt` deliveries. Not thread-safe.
  std::uint64_t backoff_ns(std::uint32_t attempt) noexcept;

  /// Whether this handle is attached. Thread-safe.
  [[nodiscard]] bool valid() const noexcept { return core_ != nullptr; }

 private:
  friend class Channel;
  explicit Consumer(std::unique_ptr<bus::ConsumerCore> core) noexcept;
  std::unique_ptr<bus::ConsumerCore> core_;
};

}  // namespace shmbus
