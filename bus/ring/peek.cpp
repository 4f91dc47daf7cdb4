#include "bus/ring/peek.hpp"

#include <atomic>
#include <cstring>

#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"

namespace shmbus::bus {

PollStatus peek_message(const ChannelState& ch, std::uint64_t seq, Message& out, std::span<std::byte> buffer) noexcept {
  const std::uint64_t mask = ch.geo.capacity - 1;
  const std::byte* slot = slot_at(ch.data, seq, mask, ch.geo.slot_size);
  const auto& stamp = slot_header(slot).stamp;
  const std::uint64_t want = make_stamp(seq, kStampCommitted);
  // SYNC(stamp): acquire, pairs with the commit CAS: the bytes are visible
  // once the stamp matches.
  const std::uint64_t st = shm::load_acquire(stamp);
  if (st != want) {
    if (stamp_state(st) == kStampEmpty) return PollStatus::empty;
    if (stamp_seq(st) > seq) return PollStatus::lapped;
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
    return validated() ? PollStatus::corrupted : PollStatus::lapped;
  }
  if (length > buffer.size()) {
    if (!validated()) return PollStatus::lapped;
    out.payload = std::span<const std::byte>(buffer.data(), length);
    return PollStatus::buffer_too_small;
  }
  racy_copy(buffer.data(), slot + kSlotHeaderSize, length);
  if (!validated()) return PollStatus::lapped;
  out = message_from(meta, stored_time_ns(meta.timestamp), seq, size_attempt(meta.size), buffer.data());
  return PollStatus::ok;
}

}  // namespace shmbus::bus
