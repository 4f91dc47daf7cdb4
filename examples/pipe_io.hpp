// Whole reads and writes on a pipe or file descriptor, retried on EINTR and
// short transfers: how the examples' forked processes hand reports back.
#pragma once

#include <cerrno>
#include <cstddef>

#include <unistd.h>

namespace shmbus_examples {

/// Writes all `n` bytes of `p` to `fd`; false on an error or a closed pipe.
inline bool write_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    b += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// Reads exactly `n` bytes from `fd` into `p`; false on an error or an end
/// of file before `n` bytes.
inline bool read_all(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    b += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace shmbus_examples
