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
/// On x86-64 it is one unlocked add to memory: its store is a single aligned
/// 8-byte write, so a reader sees the old or the new value, never a torn one
/// (ThreadSanitizer builds keep the atomic load and store, which it sees).
inline void single_writer_add(std::atomic<std::uint64_t>& a, std::uint64_t n) noexcept {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
  static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && alignof(std::atomic<std::uint64_t>) == 8);
  asm volatile("addq %1, %0" : "+m"(a) : "er"(n));
#else
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
#endif
}

}  // namespace shmbus::shm
