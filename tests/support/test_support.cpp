#include "test_support.hpp"

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <poll.h>
#include <sys/prctl.h>
#include <time.h>

namespace shmbus::test {

TempDir::TempDir(const char* prefix) {
  std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) FAIL("mkdtemp " << tmpl << ": " << std::strerror(errno));
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

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

Child::Child(const std::function<int()>& body) {
  const pid_t parent = ::getpid();
  pid_ = fork_child([&]() -> int {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) return 97;
    return body();
  });
}

Child::~Child() {
  if (!reaped_) {
    (void)::kill(pid_, SIGKILL);
    (void)wait_child(pid_);
  }
}

void Child::set_status(int status) {
  rc_ = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  reaped_ = true;
}

bool Child::try_wait() {
  if (reaped_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    set_status(status);
    return true;
  }
  if (r < 0) {
    rc_ = -1;
    reaped_ = true;
    return true;
  }
  return false;
}

int Child::wait(std::chrono::milliseconds bound) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + bound;
  while (!try_wait()) {
    if (Clock::now() >= deadline) {
      (void)::kill(pid_, SIGKILL);
      (void)wait_child(pid_);
      rc_ = -2;
      reaped_ = true;
      break;
    }
    // Only bounds the wait for an exit; nothing is assumed about progress.
    const timespec ms{0, 1'000'000};
    ::nanosleep(&ms, nullptr);
  }
  return rc_;
}

int Child::kill_and_wait() {
  if (!reaped_) (void)::kill(pid_, SIGKILL);
  return wait();
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

bool Event::limit_to_one_page() {
  return ::fcntl(fds_[1], F_SETPIPE_SZ, static_cast<int>(::sysconf(_SC_PAGESIZE))) > 0;
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
