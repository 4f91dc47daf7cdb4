#include "shm/liveness.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

namespace shmbus::shm {

namespace {

struct StatFields {
  std::uint64_t start_time = 0;  // 0: no such process (or unreadable)
  char state = '?';
};

// Reads /proc/<pid>/stat. Field 2 (comm) is parenthesised and may hold spaces
// or ')': fields are counted from the last ')'. Field 3 is the state letter,
// field 22 the start time in clock ticks since boot.
StatFields read_stat(std::uint32_t pid) noexcept {
  StatFields out;
  if (pid == 0) return out;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return out;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return out;
  out.state = p[2];
  p += 1;
  int field = 2;
  while (*p != '\0' && field < 22) {
    if (*p == ' ') ++field;
    ++p;
  }
  if (field == 22) out.start_time = std::strtoull(p, nullptr, 10);
  return out;
}

std::atomic<std::uint32_t> g_cached_pid{0};
std::atomic<std::uint64_t> g_cached_start{0};

}  // namespace

std::uint64_t process_start_time(std::uint32_t pid) noexcept { return read_stat(pid).start_time; }

ProcessId self_process() noexcept {
  const auto pid = static_cast<std::uint32_t>(::getpid());
  // Cache keyed by pid so a forked child recomputes its own start time.
  // relaxed: both words are only a cache; a race recomputes the same value.
  if (g_cached_pid.load(std::memory_order_relaxed) == pid) {
    const std::uint64_t st = g_cached_start.load(std::memory_order_relaxed);
    if (st != 0) return {pid, st};
  }
  const std::uint64_t st = process_start_time(pid);
  g_cached_start.store(st, std::memory_order_relaxed);
  g_cached_pid.store(pid, std::memory_order_relaxed);
  return {pid, st};
}

Liveness packed_liveness(std::uint64_t packed) noexcept {
  const std::uint32_t pid = packed_pid(packed);
  if (pid == 0) return Liveness::dead;
  const Liveness l = process_liveness({pid, 0});
  if (l != Liveness::alive) return l;
  const std::uint64_t st = process_start_time(pid);
  if (st != 0 && (st & 0xffffffffULL) != (packed & 0xffffffffULL)) return Liveness::dead;  // pid reused
  return Liveness::alive;
}

Liveness process_liveness(const ProcessId& id) noexcept {
  if (id.pid == 0) return Liveness::dead;
  if (::kill(static_cast<pid_t>(id.pid), 0) != 0 && errno == ESRCH) return Liveness::dead;
  // EPERM means it exists but belongs to another user: /proc still tells.
  const StatFields st = read_stat(id.pid);
  if (st.start_time == 0) {
    // Raced with exit, or /proc hidden (hidepid): ask kill() once more.
    if (::kill(static_cast<pid_t>(id.pid), 0) != 0 && errno == ESRCH) return Liveness::dead;
    return Liveness::unknown;
  }
  if (id.start_time != 0 && st.start_time != id.start_time) return Liveness::dead;  // pid reused
  // A zombie has exited but is not reaped yet: its work is over.
  if (st.state == 'Z' || st.state == 'X') return Liveness::dead;
  return Liveness::alive;
}

}  // namespace shmbus::shm
