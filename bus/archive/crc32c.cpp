// CRC32C: a hardware path through SSE4.2, picked once at run time, and a
// slicing-by-8 table path for other CPUs. Both take and return the plain
// (not inverted) CRC value; the pre/post inversion happens inside.
#include "bus/archive/crc32c.hpp"

#include <array>
#include <bit>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define SHMBUS_CRC32C_X86 1
#else
#define SHMBUS_CRC32C_X86 0
#endif

namespace shmbus::bus::archive {
namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

// table[0] is the classic byte table; table[k][b] is the CRC of byte b
// followed by k zero bytes, which lets the loop fold 8 bytes per step.
constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][b] = c;
  }
  for (std::uint32_t b = 0; b < 256; ++b) {
    for (std::size_t k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = make_tables();

std::uint64_t load_le64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

}  // namespace

std::uint32_t crc32c_portable(std::span<const std::byte> data, std::uint32_t crc) noexcept {
  std::uint32_t c = ~crc;
  const std::byte* p = data.data();
  std::size_t n = data.size();
  while (n >= 8) {
    const std::uint64_t w = load_le64(p) ^ c;
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ std::to_integer<std::uint32_t>(*p++)) & 0xFFu];
  return ~c;
}

#if SHMBUS_CRC32C_X86
__attribute__((target("sse4.2"))) std::uint32_t crc32c_hardware(std::span<const std::byte> data,
                                                                std::uint32_t crc) noexcept {
  std::uint64_t c = ~crc;
  const std::byte* p = data.data();
  std::size_t n = data.size();
  // Unaligned 8-byte loads are cheap on every CPU with SSE4.2; no head loop.
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, sizeof w);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n-- > 0) c32 = _mm_crc32_u8(c32, std::to_integer<std::uint8_t>(*p++));
  return ~c32;
}

bool crc32c_hardware_available() noexcept { return __builtin_cpu_supports("sse4.2") != 0; }
#else
std::uint32_t crc32c_hardware(std::span<const std::byte> data, std::uint32_t crc) noexcept {
  return crc32c_portable(data, crc);
}

bool crc32c_hardware_available() noexcept { return false; }
#endif

std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc) noexcept {
  // Decided once: the CPU does not change under a running process.
  static const bool hw = crc32c_hardware_available();
  return hw ? crc32c_hardware(data, crc) : crc32c_portable(data, crc);
}

}  // namespace shmbus::bus::archive
