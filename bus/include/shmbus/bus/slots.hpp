// Small helpers over the per-slot control words (stamp + writer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <shmbus/bus/layout.hpp>
#include <shmbus/shm/atomics.hpp>
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

/// How long a claim must have been seen stuck before its writer's liveness
/// is checked (a system call), and how often it is re-checked.
inline constexpr std::uint64_t kLivenessAfterNs = 1'000'000;

/// Whether the process recorded as the slot's writer is known to be dead.
/// Call only after acquiring a `writing` stamp: the writer word was stored
/// before that stamp's CAS. Makes system calls.
inline bool slot_writer_dead(const SlotControl& ctl) noexcept {
  const std::uint64_t w = shm::load_relaxed(ctl.writer);
  return w != 0 && shm::packed_liveness(w) == shm::Liveness::dead;
}

}  // namespace shmbus::bus
