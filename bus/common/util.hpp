// Small helpers every subsystem of bus/ uses: milliseconds of the monotonic
// clock, saturating deadlines, alignment and powers of two, numbers in error
// messages.
#pragma once

#include <cstdint>
#include <string>

#include "shm/clock.hpp"

namespace shmbus::bus {

inline constexpr std::uint64_t kNsPerMs = 1'000'000;

/// CLOCK_MONOTONIC in whole milliseconds (lease and dedup deadlines).
inline std::uint64_t now_ms() noexcept { return shm::monotonic_ns() / kNsPerMs; }

/// `ns` in milliseconds, rounded up: a wait of 1 ns is 1 ms, never 0.
inline constexpr std::uint64_t ceil_ms(std::uint64_t ns) noexcept { return ns / kNsPerMs + (ns % kNsPerMs != 0); }

using shm::deadline_after;  ///< saturating `start + timeout` (shm/clock.hpp)

/// `v` rounded up to a multiple of `a` (a > 0).
inline constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) noexcept { return (v + a - 1) / a * a; }

/// Whether `v` is a power of two (0 is not).
inline constexpr bool is_pow2(std::uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

/// A number for an error message.
inline std::string num(std::uint64_t v) { return std::to_string(v); }

}  // namespace shmbus::bus
