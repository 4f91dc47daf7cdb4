// Small helpers over the slots: the stamp and writer words at the start of
// each slot, the metadata after them, and the stall watch of readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <atomic>
#include <span>

#include "bus/common/types.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/layout.hpp"

#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/liveness.hpp"
#include "shm/tsc_clock.hpp"

namespace shmbus::bus {

/// The most bytes copy_small copies.
inline constexpr std::size_t kSmallCopy = 64;

/// Copies n <= kSmallCopy bytes inline: a few loads and stores, no call (a
/// message's bytes are on the latency path of both sides, and a leaf with no
/// call needs no saved registers).
[[gnu::always_inline]] inline void copy_small(void* dst_v, const void* src_v, std::size_t n) noexcept {
  auto* dst = static_cast<unsigned char*>(dst_v);
  const auto* src = static_cast<const unsigned char*>(src_v);
  if (n <= 16) {
    if (n >= 8) {  // two 8-byte moves, overlapping when n < 16
      std::uint64_t a, b;
      std::memcpy(&a, src, 8);
      std::memcpy(&b, src + n - 8, 8);
      std::memcpy(dst, &a, 8);
      std::memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
      std::uint32_t a, b;
      std::memcpy(&a, src, 4);
      std::memcpy(&b, src + n - 4, 4);
      std::memcpy(dst, &a, 4);
      std::memcpy(dst + n - 4, &b, 4);
    } else if (n != 0) {
      dst[0] = src[0];
      dst[n / 2] = src[n / 2];
      dst[n - 1] = src[n - 1];
    }
  } else {  // 16-byte moves: [0,16) and [n-16,n), then [16,32) and [n-32,n-16) if n > 32
    // (Nested, not two branches for 17..32 and 33..64: GCC hoisted the
    // address the two branches shared into a register, two more
    // instructions on a 64-byte copy; the cmov-computed middle offset this
    // replaced cost three.)
    unsigned char a[16], b[16];
    std::memcpy(a, src, 16);
    std::memcpy(b, src + n - 16, 16);
    std::memcpy(dst, a, 16);
    std::memcpy(dst + n - 16, b, 16);
    if (n > 32) {
      std::memcpy(a, src + 16, 16);
      std::memcpy(b, src + n - 32, 16);
      std::memcpy(dst + 16, a, 16);
      std::memcpy(dst + n - 32, b, 16);
    }
  }
}

/// `v`, unchanged, as a value the optimiser cannot trace to where it came
/// from (an empty asm: no instruction). For a length masked out of a wider
/// word: GCC otherwise keeps the word alive to test its bits, and a 32-bit
/// copy of the length beside the 64-bit one, which cost the copy-out poll
/// a saved register (its push and pop) and three more moves.
template <class T>
[[gnu::always_inline]] inline T opaque(T v) noexcept {
  asm("" : "+r"(v));
  return v;
}

/// Copies n bytes: up to kSmallCopy inline (copy_small), more by memcpy.
inline void copy_bytes(void* dst, const void* src, std::size_t n) noexcept {
  if (n <= kSmallCopy) {
    copy_small(dst, src, n);
  } else {
    std::memcpy(dst, src, n);
  }
}

/// Copies bytes that a lapping writer may be rewriting right now (seqlock
/// read); the caller validates the stamp afterwards and discards a torn copy.
/// ThreadSanitizer cannot know that the race is detected and handled, so in a
/// TSan build the copy is neither instrumented nor routed through the memcpy
/// interceptor (slots.cpp); every other build copies with copy_bytes.
#if defined(__SANITIZE_THREAD__)
void racy_copy(void* dst, const void* src, std::size_t n) noexcept;
/// racy_copy of n <= kSmallCopy bytes: inline, no call (but in TSan builds).
inline void racy_copy_small(void* dst, const void* src, std::size_t n) noexcept { racy_copy(dst, src, n); }
#else
inline void racy_copy(void* dst, const void* src, std::size_t n) noexcept { copy_bytes(dst, src, n); }
/// racy_copy of n <= kSmallCopy bytes: inline, no call (but in TSan builds).
[[gnu::always_inline]] inline void racy_copy_small(void* dst, const void* src, std::size_t n) noexcept {
  copy_small(dst, src, n);
}
#endif

/// Asks for the line at `p` in the exclusive state (PREFETCHW; a hint that
/// older x86 CPUs execute as a no-op), so that stores to it do not wait for
/// the line's transfer one after another.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

/// The slot of sequence `seq` in a data area (its SlotHeader, then payload).
inline const std::byte* slot_at(const std::byte* data, std::uint64_t seq, std::uint64_t mask,
                                std::uint32_t slot_size) noexcept {
  return data + (seq & mask) * static_cast<std::uint64_t>(slot_size);
}
inline std::byte* slot_at(std::byte* data, std::uint64_t seq, std::uint64_t mask, std::uint32_t slot_size) noexcept {
  return data + (seq & mask) * static_cast<std::uint64_t>(slot_size);
}
inline const SlotHeader& slot_header(const std::byte* slot) noexcept {
  return *reinterpret_cast<const SlotHeader*>(slot);
}
inline SlotHeader& slot_header(std::byte* slot) noexcept { return *reinterpret_cast<SlotHeader*>(slot); }

/// A stored SlotMeta::timestamp as CLOCK_REALTIME ns (counter ticks are
/// converted; 0 stays 0).
inline std::uint64_t stored_time_ns(std::uint64_t stored) noexcept {
  // Counter ticks need the process's calibration; realtime ns pass through.
  if (stored_time_is_ticks(stored)) return shm::tsc_to_realtime_ns(stored & ~kTicksFlag);
  return stored;
}

/// Copies a slot's metadata (seqlock read: validate the stamp afterwards).
inline SlotMeta read_meta(const std::byte* slot) noexcept {
  SlotMeta m;
  racy_copy(&m, slot + offsetof(SlotHeader, meta), sizeof m);
  return m;
}

/// Copies a slot's SlotMeta::size word alone (seqlock read: validate the
/// stamp afterwards): what a reader needs before it copies the payload.
inline std::uint32_t read_meta_size(const std::byte* slot) noexcept {
  std::uint32_t size;
  racy_copy(&size, slot + offsetof(SlotHeader, meta) + offsetof(SlotMeta, size), sizeof size);
  return size;
}

/// Converts the stamps a reader hands out, with a copy of the process's
/// calibration held by the reader (no shared state touched per message).
/// Not thread-safe: one per reader.
class StampClock {
 public:
  /// A stored SlotMeta::timestamp as CLOCK_REALTIME ns (as stored_time_ns).
  std::uint64_t ns(std::uint64_t stored) noexcept {
    if (!stored_time_is_ticks(stored)) return stored;
    const std::uint64_t ticks = stored & ~kTicksFlag;
    if (ticks > snap_.refresh_at) [[unlikely]] {
      snap_ = shm::tsc_snapshot(ticks);
      // The anchor with the stamp's flag, so that stored - flagged_anchor_
      // is ticks - a without clearing the flag first (an anchor with bit 63
      // set, a counter 100 years up, gets no recent window).
      flagged_anchor_ = snap_.a | kTicksFlag;
      recent_ = snap_.a < kTicksFlag ? snap_.recent() : shm::TscSnapshot::Recent{};
      // The forward window's rate with a 64-bit fraction: (d * rate) >> 52
      // is the high word of d * (rate << 12), which needs no shift. Exact
      // while the rate is below 1 ns per tick (rate < 2^52), as it is for a
      // counter of 1 GHz or more; a slower one leaves it to recent_.
      const bool fits = recent_.rate < (1ULL << kRateShift);
      forward_span_ = fits ? recent_.span : 0;
      forward_rate_ = fits ? recent_.rate << (64 - kRateShift) : 0;
    }
    return snap_.to_ns(ticks);
  }

  /// ns() where it is cheap, with no call: realtime ns pass through, and
  /// ticks near the snapshot's anchor (within its slew span after it, or as
  /// far before it) take one subtract, one multiply and one add. False
  /// (`out` untouched) otherwise: call ns().
  [[nodiscard]] bool ns_recent(std::uint64_t stored, std::uint64_t& out) const noexcept {
    if (!stored_time_is_ticks(stored)) {
      out = stored;
      return true;
    }
    // ticks - a; it wraps for ticks before the anchor, past any forward
    // span: those (and a counter slower than 1 GHz) take recent_'s window.
    const std::uint64_t d = stored - flagged_anchor_;
    if (d <= forward_span_) [[likely]] {
      __extension__ const unsigned __int128 v = static_cast<unsigned __int128>(d) * forward_rate_;
      out = snap_.A + static_cast<std::uint64_t>(v >> 64);
      return true;
    }
    return snap_.to_ns_recent_delta(d, recent_, out);
  }

 private:
  static constexpr unsigned kRateShift = shm::TscSnapshot::kRateShift;
  static_assert(kRateShift > 0 && kRateShift < 64);

  shm::TscSnapshot snap_;
  shm::TscSnapshot::Recent recent_;            ///< snap_.recent()
  std::uint64_t flagged_anchor_ = kTicksFlag;  ///< snap_.a | kTicksFlag
  std::uint64_t forward_span_ = 0;             ///< recent_.span; 0 if its rate is 1 ns per tick or more
  std::uint64_t forward_rate_ = 0;             ///< recent_.rate << (64 - kRateShift)
};

/// The message a reader hands out for sequence `seq`: the metadata of `meta`
/// (a copy of the slot's) with its time converted to `timestamp_ns`,
/// `attempt` (the slot's, or a group delivery's) and the payload where it was
/// read (in the slot for a zero-copy read, else in the caller's buffer).
/// Trusts the length in `meta`: check it first.
inline Message message_from(const SlotMeta& meta, std::uint64_t timestamp_ns, std::uint64_t seq, std::uint32_t attempt,
                            const std::byte* payload) noexcept {
  Message m;
  m.sequence = seq;
  m.timestamp_ns = timestamp_ns;
  m.key = meta.key;
  m.id = meta.id;
  m.correlation_id = meta.correlation_id;
  m.type = meta.type;
  m.attempt = attempt;
  m.payload = std::span<const std::byte>(payload, size_length(meta.size));
  return m;
}

/// How long a claim must have been seen stuck before its writer's liveness
/// is checked (a system call), and how often it is re-checked.
inline constexpr std::uint64_t kLivenessAfterNs = 1'000'000;

/// The writer word a publisher stores before taking a slot for `seq`: the
/// low 32 bits of the sequence and the pid. A word left by a writer that lost
/// its claim names another sequence than the stamp, so it is ignored rather
/// than trusted (the claim then falls back to the unblock timeout).
/// `pid` is a 32-bit pid, zero-extended.
inline constexpr std::uint64_t make_writer(std::uint64_t seq, std::uint64_t pid) noexcept { return (seq << 32) | pid; }

/// Whether the process recorded as the writer of `seq` in this slot is known
/// to be dead. Call after acquiring a `writing` stamp for `seq`: the writer
/// word was stored before that stamp's CAS. A pid that was reused reads as
/// alive: the claim then waits out the unblock timeout (the safe side).
/// Makes system calls.
inline bool slot_writer_dead(const SlotHeader& slot, std::uint64_t seq) noexcept {
  const std::uint64_t w = shm::load_relaxed(slot.writer);
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
  /// The abandon CAS goes through ChannelState::cas_stamp (a reader's data
  /// mapping is read-only).
  bool check(ChannelState& ch, std::uint64_t pos, std::uint64_t st, std::uint64_t head) noexcept;
  void reset() noexcept { pos_ = ~0ULL; }

 private:
  std::uint64_t pos_ = ~0ULL;
  std::uint64_t stamp_ = 0;
  std::uint64_t since_ns_ = 0;
  std::uint64_t last_liveness_ns_ = 0;
};

}  // namespace shmbus::bus
