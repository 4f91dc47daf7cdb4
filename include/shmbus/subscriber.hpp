// Subscriber: an independent cursor over a channel that sees every message
// (fan-out). Each handle is used by one thread at a time.
//
// On a channel with an archive (ChannelOptions::archive_dir), a cursor the
// ring no longer holds is read from the archive, and reading switches back to
// the ring as soon as it holds the cursor: every call below works the same in
// both, with no gap and no duplicate at the switch (docs/protocol.md, "Replay
// and merge"). Only what neither holds is lost, and counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
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
  /// copied: ignore them. Never blocks, never allocates while reading the
  /// ring (reading the archive makes system calls, and allocates once to
  /// open it). On a channel with an archive: `lapped` counts only what
  /// neither the ring nor the archive holds (a message overwritten while it
  /// was copied, which the archive holds, is copied again from there and
  /// returned `ok`); `corrupted` for an unreadable archive record, the
  /// sequences skipped past it counted as lost and the reason in
  /// last_error(). Not thread-safe: one caller at a time.
  PollStatus poll(Message& out, std::span<std::byte> buffer) noexcept;

  /// Waits up to timeout_ns (with the handle's WaitStrategy) and polls.
  /// Not thread-safe: one caller at a time.
  PollStatus poll_wait(Message& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept;

  /// Zero-copy read: calls f(const Message&) with the payload in the
  /// channel's read-only mapping (or, for a message read from the archive,
  /// in the archive reader's buffer, valid until the next call), then
  /// validates the slot. If the result is `lapped`, a writer overwrote the
  /// message while f ran (drop_oldest channels, evicted readers): discard
  /// what f derived from it (with an archive, the next read returns it
  /// again). Not thread-safe: one caller at a time.
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
  /// `arena`; stops early when the arena is full. A message overwritten
  /// while it was copied, which the channel's archive holds, is copied again
  /// from there, as by poll. Returns how many were
  /// copied; one cursor update. Not thread-safe: one caller at a time.
  std::size_t poll_batch(std::span<Message> out, std::span<std::byte> arena, PollStatus* last = nullptr) noexcept;

  /// Waits up to timeout_ns until poll would return something other than
  /// `empty`: ok, or timeout. Spins first; then follows the WaitStrategy.
  /// Not thread-safe: one caller at a time.
  PollStatus wait(std::uint64_t timeout_ns) noexcept;

  /// Moves the cursor so the next message read is `sequence` (replay). A
  /// sequence the ring no longer holds is read from the channel's archive if
  /// it has one (then the ring once it holds the cursor); without one, or
  /// older than the archive's first record, the next read returns `lapped`
  /// with the loss counted. Not thread-safe: one caller at a time.
  void seek(std::uint64_t sequence) noexcept;

  /// Why the last read of the archive failed (a `corrupted` result): the
  /// error naming the file and the offset; "" if none has. Not thread-safe
  /// w.r.t. polls.
  [[nodiscard]] std::string last_error() const;

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
