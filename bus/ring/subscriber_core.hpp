// The reading side of the ring: one cursor per subscriber, advanced only by
// its owner; readers trust only slot stamps (never `head`) to decide that a
// message exists, and re-validate the stamp after reading wherever a writer
// may lap them (seqlock). See docs/protocol.md ("Read").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "bus/common/types.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"
#include "bus/ring/slots.hpp"

namespace shmbus::bus {

namespace archive {
class ArchiveSource;
}

/// Counters of one subscriber (the public type).
using shmbus::SubscriberCounters;

class SubscriberCore {
 public:
  // Pinned in memory: handles hold it by unique_ptr, so moving a handle
  // never moves (or re-releases) the attachment.
  SubscriberCore() = default;
  SubscriberCore(const SubscriberCore&) = delete;
  SubscriberCore& operator=(const SubscriberCore&) = delete;
  ~SubscriberCore();

  static Result<std::unique_ptr<SubscriberCore>> create(std::shared_ptr<ChannelState> ch, const SubscribeOptions& opts);

  /// Zero-copy: describes the next message in `out` (payload points into the
  /// read-only mapping) without consuming it. Follow with finish_read().
  PollStatus begin_read(Message& out) noexcept;
  /// Validates the message returned by begin_read (seqlock) and consumes it:
  /// ok, or lapped if a writer overwrote it meanwhile (discard what you read).
  PollStatus finish_read(bool advance_cursor = true) noexcept;
  /// Copy-out poll: copies the payload into `buffer`.
  PollStatus poll(Message& out, std::span<std::byte> buffer) noexcept;
  /// Copies m's payload (from begin_read) into dst (dst.size() ==
  /// m.payload.size()) and points m.payload at it; seqlock-safe.
  void copy_payload(Message& m, std::span<std::byte> dst) noexcept;
  /// Publishes the local cursor to shared memory (after batches).
  void publish_cursor() noexcept;
  /// Waits until a message (or a loss to report) is ready, up to timeout_ns.
  PollStatus wait(std::uint64_t timeout_ns) noexcept;
  /// Waits (up to timeout_ns in all) and polls until a poll returns
  /// something other than `empty`.
  PollStatus poll_wait(Message& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept;
  /// Whether begin_read would return something other than `empty`.
  [[nodiscard]] bool ready() noexcept;

  [[nodiscard]] SubscriberCounters counters() const noexcept;
  [[nodiscard]] std::uint64_t cursor() const noexcept { return cursor_; }
  [[nodiscard]] bool resumed() const noexcept { return resumed_; }
  [[nodiscard]] bool valid() const noexcept { return ch_ != nullptr; }
  [[nodiscard]] const std::shared_ptr<ChannelState>& channel() const noexcept { return ch_; }
  [[nodiscard]] std::uint32_t index() const noexcept { return index_; }
  /// Moves the cursor: the next read returns `seq` (losses are not counted).
  /// On a channel with an archive, a `seq` the ring no longer holds is read
  /// from the archive.
  void seek(std::uint64_t seq) noexcept;
  /// What the last archive read that failed said (the file and the offset),
  /// "" if none did. Not thread-safe w.r.t. polls.
  [[nodiscard]] const std::string& last_error() const noexcept { return last_error_; }
  /// After finish_read returned `lapped` for the message at `at`: whether
  /// the archive holds it (the cursor stays at `at`, the next read serves it
  /// from there), so that a copy-out read can simply read it again.
  [[nodiscard]] bool archived_after_tear(std::uint64_t at) const noexcept { return archive_mode_ && cursor_ == at; }

 private:
  PollStatus poll_general(Message& out, std::span<std::byte> buffer) noexcept;
  PollStatus poll_finish(Message& out, std::uint64_t stored_time) noexcept;
  /// Whether poll may take its fused path: it does while fast_control_
  /// equals the entry's control word, which kNoFastPath (state bits that no
  /// entry has) never does.
  void set_fast(bool fast) noexcept { fast_control_ = fast ? control_ : kNoFastPath; }
  static constexpr std::uint64_t kNoFastPath = ~0ULL;
  void store_cursor() noexcept;  ///< publish_cursor's body, inlined into poll
  PollStatus on_idle(std::uint64_t stamp) noexcept;
  PollStatus on_lapped() noexcept;
  PollStatus on_torn(Message& out, std::span<std::byte> buffer) noexcept;
  PollStatus skip_overwritten() noexcept;
  // The ring at the cursor, begin_read's loop (the cursor's slot decides).
  PollStatus read_ring(Message& out) noexcept;
  PollStatus begin_read_cold(Message& out) noexcept;
  PollStatus finish_mismatch(bool publish) noexcept;
  // Replay from the archive (docs/protocol.md, "Replay and merge").
  PollStatus on_overwritten(Message& out) noexcept;
  PollStatus read_archived(Message& out) noexcept;
  PollStatus serve_archived(Message& out) noexcept;
  void skip_to(std::uint64_t next) noexcept;
  void leave_archive() noexcept;
  PollStatus on_evicted() noexcept;
  void check_stall(std::uint64_t stamp) noexcept;
  [[nodiscard]] const std::atomic<std::uint64_t>& stamp_at(std::uint64_t seq) const noexcept {
    return slot_header(slot_at(data_, seq, mask_, slot_size_)).stamp;
  }
  void release() noexcept;

  std::shared_ptr<ChannelState> ch_;
  ProducerBlock* prod_ = nullptr;
  SubscriberEntry* entry_ = nullptr;
  const std::byte* data_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t unblock_ns_ = 0;
  std::uint32_t slot_size_ = 0;
  std::uint32_t max_payload_ = 0;
  std::uint32_t fast_max_ = 0;  ///< the largest payload poll copies itself: min(max_payload_, kSmallCopy)
  std::uint32_t index_ = 0;
  std::uint64_t control_ = 0;                 ///< the entry's control word while this handle owns it
  std::uint64_t fast_control_ = kNoFastPath;  ///< control_ while poll may take its fused path (set_fast)
  std::uint64_t cursor_ = 0;                  ///< next sequence to read (owned; mirrored to entry_->cursor)
  std::uint64_t pending_stamp_ = 0;           ///< stamp seen by begin_read, re-checked by finish_read
  bool pending_ = false;
  bool wake_publishers_ = false;  ///< block policy: publishers may sleep on our cursor
  bool resumed_ = false;
  bool report_start_loss_ = false;  ///< started at a time older than the ring: the first read says lapped
  WaitStrategy wait_ = WaitStrategy::block;
  std::uint32_t empty_polls_ = 0;
  StallWatch stall_;
  StampClock clock_;
  // Cold: read only on the empty, lapped, evicted and waiting paths. Kept
  // after the hot members so that they keep their places (the ping-pong
  // latency moved by 20% when these two sat among them).
  const std::atomic<std::uint64_t>* removed_ = nullptr;  ///< the header's RemovedState
  std::uint64_t last_removed_check_ns_ = 0;
  // Replay from the channel's archive: read only once the ring no longer
  // holds the cursor, so cold as well.
  std::unique_ptr<archive::ArchiveSource> archive_;  ///< opened at the first read older than the ring
  bool has_archive_ = false;                         ///< the channel has an archive directory
  bool archive_mode_ = false;  ///< the cursor is read from the archive (set_fast(false) meanwhile)
  std::string last_error_;     ///< the last archive error (see last_error())
};

}  // namespace shmbus::bus
