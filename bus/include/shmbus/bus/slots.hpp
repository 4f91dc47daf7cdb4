// Small helpers over the per-slot control words (stamp + writer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <atomic>
#include <span>

#include <shmbus/bus/layout.hpp>
#include <shmbus/bus/types.hpp>

#include <shmbus/shm/atomics.hpp>
#include <shmbus/shm/clock.hpp>
#include <shmbus/shm/liveness.hpp>

namespace shmbus::bus {

/// Copies bytes that a lapping writer may be rewriting right now (seqlock
/// read); the caller validates the stamp afterwards and discards a torn copy.
/// ThreadSanitizer cannot know that the race is detected and handled, so in a
/// TSan build the copy is neither instrumented nor routed through the memcpy
/// interceptor (slots.cpp); every other build uses plain memcpy.
#if defined(__SANITIZE_THREAD__)
void racy_copy(void* dst, const void* src, std::size_t n) noexcept;
#else
inline void racy_copy(void* dst, const void* src, std::size_t n) noexcept {
  if (n != 0) std::memcpy(dst, src, n);
}
#endif

/// The slot header and payload of sequence `seq` in a data area.
inline const std::byte* slot_at(const std::byte* data, std::uint64_t seq, std::uint64_t mask,
                                std::uint32_t slot_size) noexcept {
  return data + (seq & mask) * static_cast<std::uint64_t>(slot_size);
}

/// The message a reader hands out for sequence `seq`: the metadata of `hdr`
/// (a copy of the slot's header), `attempt` (the header's, or a group
/// delivery's) and the payload where it was read (in the slot for a zero-copy
/// read, else in the caller's buffer). Trusts `hdr.length`: check it first.
inline Message message_from(const SlotHeader& hdr, std::uint64_t seq, std::uint32_t attempt,
                            const std::byte* payload) noexcept {
  Message m;
  m.sequence = seq;
  m.timestamp_ns = hdr.timestamp_ns;
  m.key = hdr.key;
  m.correlation_id = hdr.correlation_id;
  m.type = hdr.type;
  m.attempt = attempt;
  m.payload = std::span<const std::byte>(payload, hdr.length);
  return m;
}

/// How long a claim must have been seen stuck before its writer's liveness
/// is checked (a system call), and how often it is re-checked.
inline constexpr std::uint64_t kLivenessAfterNs = 1'000'000;

/// The writer word a publisher stores before taking a slot for `seq`: the
/// low 32 bits of the sequence and the pid. A word left by a writer that lost
/// its claim names another sequence than the stamp, so it is ignored rather
/// than trusted (the claim then falls back to the unblock timeout).
inline constexpr std::uint64_t make_writer(std::uint64_t seq, std::uint32_t pid) noexcept {
  return ((seq & 0xffffffffULL) << 32) | pid;
}

/// Whether the process recorded as the writer of `seq` in this slot is known
/// to be dead. Call after acquiring a `writing` stamp for `seq`: the writer
/// word was stored before that stamp's CAS. A pid that was reused reads as
/// alive: the claim then waits out the unblock timeout (the safe side).
/// Makes system calls.
inline bool slot_writer_dead(const SlotControl& ctl, std::uint64_t seq) noexcept {
  const std::uint64_t w = shm::load_relaxed(ctl.writer);
  if (w == 0 || (w >> 32) != (seq & 0xffffffffULL)) return false;
  return shm::process_liveness({static_cast<std::uint32_t>(w), 0}) == shm::Liveness::dead;
}

/// Watches the position a reader waits on, and takes a stuck claim there
/// away: at once if its recorded writer is dead (checked at most every
/// kLivenessAfterNs), else once it stayed stuck for the unblock timeout.
/// Used by subscribers and group consumers alike. Not thread-safe: one per
/// reader.
class StallWatch {
 public:
  /// `st` is the stamp seen at `pos`, `head` the claim counter. Returns true
  /// if this call marked a claim abandoned (the caller may retry at once).
  bool check(SlotControl& ctl, std::uint64_t pos, std::uint64_t st, std::uint64_t head,
             std::uint64_t unblock_ns, std::atomic<std::uint64_t>& abandoned) noexcept;
  void reset() noexcept { pos_ = ~0ULL; }

 private:
  std::uint64_t pos_ = ~0ULL;
  std::uint64_t stamp_ = 0;
  std::uint64_t since_ns_ = 0;
  std::uint64_t last_liveness_ns_ = 0;
};

}  // namespace shmbus::bus
