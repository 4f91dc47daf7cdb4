// CRC32C: a hardware path through SSE4.2, picked once at run time, and a
// slicing-by-8 table path for other CPUs. Both take and return the plain
// (not inverted) CRC value; the pre/post inversion happens inside.
#include "bus/archive/crc32c.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#include <wmmintrin.h>
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
namespace {

// Three lanes of kLane bytes each are checksummed side by side: the crc32
// instruction's latency is three times its throughput, so one chain alone
// leaves two thirds of the unit idle (a 4 KiB record's checksum took about
// 1 us that way).
constexpr std::size_t kLane = 256;

// x^n mod P in the reflected representation (bit 31 is x^0).
constexpr std::uint32_t xpow_mod(std::uint64_t n) {
  std::uint32_t p = 0x80000000u;
  while (n-- > 0) p = (p & 1u) != 0 ? (p >> 1) ^ kPoly : p >> 1;
  return p;
}

// Multiplying a lane's CRC state by x^(8 * kLane) moves it past the next
// lane's bytes. A carry-less multiply by x^(8 * kLane - 33) and one crc32
// reduction (which multiplies by x^32; the reflected product carries one
// more x) do it.
constexpr std::uint32_t kLaneShift = xpow_mod(8 * kLane - 33);

__attribute__((target("sse4.2,pclmul"))) std::uint32_t shift_lane(std::uint32_t state) noexcept {
  const __m128i product = _mm_clmulepi64_si128(_mm_cvtsi32_si128(static_cast<int>(state)),
                                               _mm_cvtsi32_si128(static_cast<int>(kLaneShift)), 0x00);
  return static_cast<std::uint32_t>(_mm_crc32_u64(0, static_cast<std::uint64_t>(_mm_cvtsi128_si64(product))));
}

bool has_pclmul() noexcept {
  static const bool yes = __builtin_cpu_supports("pclmul") != 0;
  return yes;
}

}  // namespace

__attribute__((target("sse4.2,pclmul"))) std::uint32_t crc32c_hardware(std::span<const std::byte> data,
                                                                       std::uint32_t crc) noexcept {
  std::uint64_t c = ~crc;
  const std::byte* p = data.data();
  std::size_t n = data.size();
  if (n >= 3 * kLane && has_pclmul()) {
    // The state after lanes A, B, C is shift(shift(A) ^ B) ^ C, where A
    // starts from the running state and B and C from zero (CRC is linear).
    while (n >= 3 * kLane) {
      std::uint64_t a = c;
      std::uint64_t b = 0;
      std::uint64_t d = 0;
      for (std::size_t i = 0; i < kLane; i += 8) {
        std::uint64_t wa;
        std::uint64_t wb;
        std::uint64_t wd;
        std::memcpy(&wa, p + i, 8);
        std::memcpy(&wb, p + kLane + i, 8);
        std::memcpy(&wd, p + 2 * kLane + i, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        d = _mm_crc32_u64(d, wd);
      }
      c = shift_lane(shift_lane(static_cast<std::uint32_t>(a)) ^ static_cast<std::uint32_t>(b)) ^
          static_cast<std::uint32_t>(d);
      p += 3 * kLane;
      n -= 3 * kLane;
    }
  }
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

namespace {

// Continues a raw state over the bytes left (records of one size leave
// none, most leave a few); long rests take the lanes of crc32c_hardware.
__attribute__((target("sse4.2"), always_inline)) inline std::uint32_t finish_chain(
    std::uint64_t state, std::span<const std::byte> rest) noexcept {
  if (rest.size() >= 3 * kLane) return crc32c_hardware(rest, ~static_cast<std::uint32_t>(state));
  const std::byte* p = rest.data();
  std::size_t n = rest.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, sizeof w);
    state = _mm_crc32_u64(state, w);
  }
  auto s32 = static_cast<std::uint32_t>(state);
  for (; n > 0; --n) s32 = _mm_crc32_u8(s32, std::to_integer<std::uint8_t>(*p++));
  return ~s32;
}

__attribute__((target("sse4.2"))) void crc32c_hardware_3(std::span<const std::byte> a, std::span<const std::byte> b,
                                                         std::span<const std::byte> c, std::uint32_t* out) noexcept {
  // The raw states (inverted CRCs), advanced together over the common
  // whole words; each then finishes alone.
  std::uint64_t sa = 0xFFFFFFFFu;
  std::uint64_t sb = 0xFFFFFFFFu;
  std::uint64_t sc = 0xFFFFFFFFu;
  const std::size_t common = std::min({a.size(), b.size(), c.size()}) & ~std::size_t{7};
  for (std::size_t i = 0; i < common; i += 8) {
    std::uint64_t wa;
    std::uint64_t wb;
    std::uint64_t wc;
    std::memcpy(&wa, a.data() + i, 8);
    std::memcpy(&wb, b.data() + i, 8);
    std::memcpy(&wc, c.data() + i, 8);
    sa = _mm_crc32_u64(sa, wa);
    sb = _mm_crc32_u64(sb, wb);
    sc = _mm_crc32_u64(sc, wc);
  }
  out[0] = finish_chain(sa, a.subspan(common));
  out[1] = finish_chain(sb, b.subspan(common));
  out[2] = finish_chain(sc, c.subspan(common));
}

}  // namespace
#else
std::uint32_t crc32c_hardware(std::span<const std::byte> data, std::uint32_t crc) noexcept {
  return crc32c_portable(data, crc);
}

bool crc32c_hardware_available() noexcept { return false; }
#endif

namespace {
// Decided once: the CPU does not change under a running process.
const bool kHardware = crc32c_hardware_available();
}  // namespace

std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc) noexcept {
  return kHardware ? crc32c_hardware(data, crc) : crc32c_portable(data, crc);
}

void crc32c_3(std::span<const std::byte> a, std::span<const std::byte> b, std::span<const std::byte> c,
              std::uint32_t* out) noexcept {
#if SHMBUS_CRC32C_X86
  if (kHardware) {
    crc32c_hardware_3(a, b, c, out);
    return;
  }
#endif
  out[0] = crc32c_portable(a);
  out[1] = crc32c_portable(b);
  out[2] = crc32c_portable(c);
}

}  // namespace shmbus::bus::archive
