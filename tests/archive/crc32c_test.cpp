// CRC32C: the published check values, and the hardware and table paths
// agreeing on every length and alignment the archive can hand them.
#include "bus/archive/crc32c.hpp"

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

namespace archive = shmbus::bus::archive;

namespace {

std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

}  // namespace

TEST_CASE("crc32c gives the published check values", "[archive][crc32c]") {
  CHECK(archive::crc32c(bytes_of("123456789")) == 0xE3069283u);
  CHECK(archive::crc32c_portable(bytes_of("123456789")) == 0xE3069283u);
  CHECK(archive::crc32c(bytes_of("")) == 0u);
  CHECK(archive::crc32c_portable(bytes_of("")) == 0u);
  const std::vector<std::byte> zeros(32);
  CHECK(archive::crc32c(zeros) == 0x8A9136AAu);
  CHECK(archive::crc32c_portable(zeros) == 0x8A9136AAu);
  if (archive::crc32c_hardware_available()) {
    CHECK(archive::crc32c_hardware(bytes_of("123456789")) == 0xE3069283u);
    CHECK(archive::crc32c_hardware(zeros) == 0x8A9136AAu);
  } else {
    WARN("no SSE4.2 on this CPU: only the table path was checked");
  }
}

TEST_CASE("crc32c computed in pieces equals crc32c of the whole", "[archive][crc32c]") {
  const auto all = bytes_of("123456789");
  for (std::size_t cut = 0; cut <= all.size(); ++cut) {
    CHECK(archive::crc32c(all.subspan(cut), archive::crc32c(all.first(cut))) == 0xE3069283u);
    CHECK(archive::crc32c_portable(all.subspan(cut), archive::crc32c_portable(all.first(cut))) == 0xE3069283u);
  }
}

TEST_CASE("crc32c hardware and table paths agree on every length and alignment", "[archive][crc32c]") {
  if (!archive::crc32c_hardware_available()) {
    WARN("no SSE4.2 on this CPU: nothing to compare");
    return;
  }
  std::mt19937_64 rng(17);
  std::vector<std::byte> buf(300 + 16);
  for (auto& b : buf) b = static_cast<std::byte>(rng());
  std::size_t compared = 0;
  for (std::size_t start = 0; start < 8; ++start) {
    for (std::size_t len = 0; len <= 300; ++len) {
      const std::span<const std::byte> s(buf.data() + start, len);
      const auto seed = static_cast<std::uint32_t>(rng());
      REQUIRE(archive::crc32c_hardware(s) == archive::crc32c_portable(s));
      REQUIRE(archive::crc32c_hardware(s, seed) == archive::crc32c_portable(s, seed));
      ++compared;
    }
  }
  CHECK(compared == 8 * 301);
  // A single flipped bit changes the checksum.
  const std::uint32_t before = archive::crc32c(buf);
  buf[150] ^= std::byte{0x10};
  CHECK(archive::crc32c(buf) != before);
}

TEST_CASE("crc32c_3 equals three separate checksums for any mix of lengths", "[archive][crc32c]") {
  std::mt19937_64 rng(29);
  std::vector<std::byte> buf(3000);
  for (auto& b : buf) b = static_cast<std::byte>(rng());
  for (int trial = 0; trial < 3000; ++trial) {
    std::span<const std::byte> parts[3];
    for (auto& p : parts) {
      // Mostly short (the records it is for), sometimes past the lanes of
      // the single-buffer path; any offset.
      const std::size_t len = trial % 10 == 0 ? rng() % 2000 : rng() % 200;
      const std::size_t at = rng() % (buf.size() - len + 1);
      p = std::span<const std::byte>(buf.data() + at, len);
    }
    std::uint32_t out[3] = {1, 2, 3};
    archive::crc32c_3(parts[0], parts[1], parts[2], out);
    for (int k = 0; k < 3; ++k) REQUIRE(out[k] == archive::crc32c_portable(parts[k]));
  }
}
