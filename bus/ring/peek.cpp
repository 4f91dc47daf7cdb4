#include "bus/ring/peek.hpp"

#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>

#include "bus/archive/archive_source.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"

namespace shmbus::bus {

namespace {

// `seq` is no longer in the ring: the archive's copy, if it has one.
PollStatus peek_archived(const ChannelState& ch, std::uint64_t seq, Message& out, std::span<std::byte> buffer,
                         ArchivePeek* info) noexcept {
  if (ch.geo.archive_dir.empty()) return PollStatus::lapped;
  try {
    std::lock_guard<std::mutex> lock(ch.archive_peek_mu);
    if (!ch.archive_peek) ch.archive_peek = std::make_shared<archive::ArchiveSource>(ch.geo.archive_dir);
    archive::ArchiveSource& src = *ch.archive_peek;
    switch (src.read(seq)) {
      case archive::ArchiveRead::found: {
        const archive::Record& r = src.record();
        if (r.payload.size() > buffer.size()) {
          out.payload = std::span<const std::byte>(buffer.data(), r.payload.size());
          return PollStatus::buffer_too_small;
        }
        if (!r.payload.empty()) std::memcpy(buffer.data(), r.payload.data(), r.payload.size());
        out = archive::message_of(r);
        out.payload = std::span<const std::byte>(buffer.data(), r.payload.size());
        return PollStatus::ok;
      }
      case archive::ArchiveRead::missing:
        if (info != nullptr) info->next = src.next();
        return PollStatus::lapped;
      case archive::ArchiveRead::absent: return PollStatus::lapped;
      case archive::ArchiveRead::error:
        if (info != nullptr) {
          info->next = src.next();
          info->error = src.error();
        }
        return PollStatus::corrupted;
    }
  } catch (const std::exception&) {
    // No memory for the reader or the message: as if not archived.
  }
  return PollStatus::lapped;
}

}  // namespace

PollStatus peek_message(const ChannelState& ch, std::uint64_t seq, Message& out, std::span<std::byte> buffer,
                        ArchivePeek* archive) noexcept {
  if (archive != nullptr) {
    archive->next = 0;
    archive->error.clear();
  }
  const std::uint64_t mask = ch.geo.capacity - 1;
  const std::byte* slot = slot_at(ch.data, seq, mask, ch.geo.slot_size);
  const auto& stamp = slot_header(slot).stamp;
  const std::uint64_t want = make_stamp(seq, kStampCommitted);
  // SYNC(stamp): acquire, pairs with the commit CAS: the bytes are visible
  // once the stamp matches.
  const std::uint64_t st = shm::load_acquire(stamp);
  if (st != want) {
    if (stamp_state(st) == kStampEmpty) return PollStatus::empty;
    if (stamp_seq(st) > seq) return peek_archived(ch, seq, out, buffer, archive);
    if (stamp_seq(st) == seq && stamp_state(st) == kStampAbandoned) return PollStatus::corrupted;
    return PollStatus::empty;  // an older lap, or seq still being written
  }
  const SlotMeta meta = read_meta(slot);
  const std::uint32_t length = size_length(meta.size);
  const auto validated = [&] {
    // SYNC(seqlock-read): orders the copies before the stamp re-load.
    std::atomic_thread_fence(std::memory_order_acquire);
    return shm::load_relaxed(stamp) == want;
  };
  if (length > ch.geo.max_payload) {
    return validated() ? PollStatus::corrupted : peek_archived(ch, seq, out, buffer, archive);
  }
  if (length > buffer.size()) {
    if (!validated()) return peek_archived(ch, seq, out, buffer, archive);
    out.payload = std::span<const std::byte>(buffer.data(), length);
    return PollStatus::buffer_too_small;
  }
  racy_copy(buffer.data(), slot + kSlotHeaderSize, length);
  if (!validated()) return peek_archived(ch, seq, out, buffer, archive);
  out = message_from(meta, stored_time_ns(meta.timestamp), seq, size_attempt(meta.size), buffer.data());
  return PollStatus::ok;
}

}  // namespace shmbus::bus
