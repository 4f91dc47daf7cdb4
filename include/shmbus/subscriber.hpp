// Subscriber: an independent cursor over a channel that sees every message
// (fan-out). Each handle is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

#include <shmbus/types.hpp>

namespace shmbus::bus {
class SubscriberCore;
}

namespace shmbus {

class Subscriber {
 public:
  Subscriber() noexcept;  ///< an empty handle: every call returns `invalid` (or nothing)
  ~Subscriber();
  Subscriber(Subscriber&&) noexcept;
  Subscriber& operator=(Subscriber&&) noexcept;

  /// Copy-out poll: copies the next message's payload into `buffer` and
  /// fills `out` (out.payload then points into buffer). Returns `empty` when
  /// nothing is committed yet, `lapped` after counting lost messages (call
  /// again), `buffer_too_small` (out.payload.size() is the size needed).
  /// After any result but `ok` (and `buffer_too_small`'s size), `out` and
  /// `buffer` may hold part of a message that was overwritten while it was
  /// copied: ignore them. Never blocks, never allocates. Not thread-safe:
  /// one caller at a time.
  PollStatus poll(Message& out, std::span<std::byte> buffer) noexcept;

  /// Waits up to timeout_ns (with the handle's WaitStrategy) and polls.
  /// Not thread-safe: one caller at a time.
  PollStatus poll_wait(Message& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept;

  /// Zero-copy read: calls f(const Message&) with the payload in the
  /// channel's read-only mapping, then validates the slot. If the result is
  /// `lapped`, a writer overwrote the message while f ran (drop_oldest
  /// channels, evicted readers): discard what f derived from it.
  /// Not thread-safe: one caller at a time.
  template <class F>
  PollStatus read(F&& f) noexcept(std::is_nothrow_invocable_v<F&, const Message&>) {
    if (!core_) return PollStatus::invalid;
    Message m;
    const PollStatus st = begin_read(m);
    if (st != PollStatus::ok) return st;
    f(static_cast<const Message&>(m));
    return finish_read(true);
  }

  /// Zero-copy batch: calls f for up to `max` consecutive messages and
  /// publishes the cursor once at the end (amortising its cache-line
  /// transfer). Returns how many were delivered; `last` gets the status that
  /// stopped the batch. Not thread-safe: one caller at a time.
  template <class F>
  std::size_t read_batch(F&& f, std::size_t max,
                         PollStatus* last = nullptr) noexcept(std::is_nothrow_invocable_v<F&, const Message&>) {
    if (!core_) {
      if (last != nullptr) *last = PollStatus::invalid;
      return 0;
    }
    std::size_t n = 0;
    PollStatus st = PollStatus::ok;
    while (n < max) {
      Message m;
      st = begin_read(m);
      if (st != PollStatus::ok) break;
      f(static_cast<const Message&>(m));
      st = finish_read(false);
      if (st != PollStatus::ok) break;
      ++n;
    }
    publish_cursor();
    if (last != nullptr) *last = st;
    return n;
  }

  /// Copy-out batch: copies up to out.size() messages, packing payloads into
  /// `arena`; stops early when the arena is full. Returns how many were
  /// copied; one cursor update. Not thread-safe: one caller at a time.
  std::size_t poll_batch(std::span<Message> out, std::span<std::byte> arena, PollStatus* last = nullptr) noexcept;

  /// Waits up to timeout_ns until poll would return something other than
  /// `empty`: ok, or timeout. Spins first; then follows the WaitStrategy.
  /// Not thread-safe: one caller at a time.
  PollStatus wait(std::uint64_t timeout_ns) noexcept;

  /// Moves the cursor so the next message read is `sequence` (replay).
  /// Not thread-safe: one caller at a time.
  void seek(std::uint64_t sequence) noexcept;

  /// Cursor and counters (delivered, lost). Not thread-safe w.r.t. polls.
  [[nodiscard]] SubscriberCounters counters() const noexcept;
  /// The next sequence this subscriber will read. Not thread-safe w.r.t. polls.
  [[nodiscard]] std::uint64_t cursor() const noexcept;
  /// True if this durable subscriber resumed an existing cursor. Thread-safe.
  [[nodiscard]] bool resumed() const noexcept;
  /// Whether this handle is attached. Thread-safe.
  [[nodiscard]] bool valid() const noexcept { return core_ != nullptr; }

 private:
  friend class Channel;
  explicit Subscriber(std::unique_ptr<bus::SubscriberCore> core) noexcept;
  // The steps of a zero-copy read, for the templates above (core_ is set):
  // describe the next message, run the caller's function, then validate it.
  PollStatus begin_read(Message& m) noexcept;
  PollStatus finish_read(bool advance_cursor) noexcept;
  void publish_cursor() noexcept;

  std::unique_ptr<bus::SubscriberCore> core_;
};

}  // namespace shmbus
