// Named atomic patterns, so every access in shared memory says what it pairs
// with (Aeron's AERON_GET_ACQUIRE / AERON_SET_RELEASE do the same).
#pragma once

#include <atomic>
#include <cstdint>

namespace shmbus::shm {

template <class T>
inline T load_acquire(const std::atomic<T>& a) noexcept {
  return a.load(std::memory_order_acquire);
}
template <class T>
inline T load_relaxed(const std::atomic<T>& a) noexcept {
  return a.load(std::memory_order_relaxed);
}
template <class T>
inline void store_release(std::atomic<T>& a, T v) noexcept {
  a.store(v, std::memory_order_release);
}
template <class T>
inline void store_relaxed(std::atomic<T>& a, T v) noexcept {
  a.store(v, std::memory_order_relaxed);
}
/// Strong CAS, acq_rel on success, acquire on failure. `expected` is updated.
template <class T>
inline bool cas_acq_rel(std::atomic<T>& a, T& expected, T desired) noexcept {
  return a.compare_exchange_strong(expected, desired, std::memory_order_acq_rel, std::memory_order_acquire);
}
/// Strong CAS, sequentially consistent (used where a Dekker-style check of a
/// waiter count follows, so the CAS and that load cannot be reordered).
template <class T>
inline bool cas_seq_cst(std::atomic<T>& a, T& expected, T desired) noexcept {
  return a.compare_exchange_strong(expected, desired, std::memory_order_seq_cst, std::memory_order_acquire);
}
/// Increment of a counter that has exactly one writer: a plain load + store,
/// no locked instruction. relaxed: readers (the probe) only need a recent value.
inline void single_writer_add(std::atomic<std::uint64_t>& a, std::uint64_t n) noexcept {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace shmbus::shm
