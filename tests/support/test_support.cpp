#include "test_support.hpp"

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <poll.h>

namespace shmbus::test {

Channel make_channel(const ScopedChannelName& name, const ChannelOptions& opts) {
  auto c = Channel::create(name.str(), opts, kTestBus);
  if (!c) FAIL("create " << name.str() << ": " << c.error().message());
  return std::move(c.value());
}

pid_t fork_child(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid < 0) FAIL("fork failed: " << std::strerror(errno));
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  return pid;
}

int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

Event::Event() {
  if (::pipe(fds_) != 0) FAIL("pipe failed");
}

Event::~Event() {
  if (fds_[0] >= 0) ::close(fds_[0]);
  if (fds_[1] >= 0) ::close(fds_[1]);
}

void Event::signal(std::uint64_t value) {
  ssize_t n;
  do {
    n = ::write(fds_[1], &value, sizeof value);
  } while (n < 0 && errno == EINTR);
}

bool Event::wait(std::uint64_t& value, int timeout_ms) {
  pollfd p{fds_[0], POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc <= 0) return false;
  return ::read(fds_[0], &value, sizeof value) == static_cast<ssize_t>(sizeof value);
}

}  // namespace shmbus::test
