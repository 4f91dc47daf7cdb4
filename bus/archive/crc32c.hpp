// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of the
// archive's file headers and records. It is the one the hardware computes
// (SSE4.2 `crc32`), so checking a record costs a fraction of reading it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace shmbus::bus::archive {

/// CRC32C of `data`, continuing from `crc` (0 to start; pass a previous
/// result to checksum a buffer in pieces). Uses SSE4.2 when the CPU has it,
/// else a table. Thread-safe.
[[nodiscard]] std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc = 0) noexcept;

/// The CRC32C of three buffers (each from 0), written to out[0..2]. The
/// three chains run side by side, so for short buffers this costs about what
/// the longest alone does: the crc32 instruction's latency, not its
/// throughput, bounds one chain. Thread-safe.
void crc32c_3(std::span<const std::byte> a, std::span<const std::byte> b, std::span<const std::byte> c,
              std::uint32_t* out) noexcept;

/// The portable table implementation (slicing-by-8). Exposed so tests can
/// check it against the hardware path. Thread-safe.
[[nodiscard]] std::uint32_t crc32c_portable(std::span<const std::byte> data, std::uint32_t crc = 0) noexcept;

/// The SSE4.2 implementation; only call it when crc32c_hardware_available().
/// Thread-safe.
[[nodiscard]] std::uint32_t crc32c_hardware(std::span<const std::byte> data, std::uint32_t crc = 0) noexcept;

/// Whether this CPU (and build target) can run crc32c_hardware(). Thread-safe.
[[nodiscard]] bool crc32c_hardware_available() noexcept;

}  // namespace shmbus::bus::archive
