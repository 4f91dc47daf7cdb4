// Small helpers over the per-slot control words (stamp + writer).
#pragma once

#include <cstdint>

#include <shmbus/bus/layout.hpp>
#include <shmbus/shm/atomics.hpp>
#include <shmbus/shm/liveness.hpp>

namespace shmbus::bus {

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
