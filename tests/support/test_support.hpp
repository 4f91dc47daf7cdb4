// Helpers shared by the tests: unique channel names and temporary
// directories removed by scope guards, forked peers, and small payload
// helpers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <signal.h>
#include <span>
#include <string>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

#include <shmbus/shmbus.hpp>

namespace shmbus::test {

/// A fresh directory under /tmp (named from `prefix`), removed with
/// everything in it when the guard goes out of scope.
class TempDir {
 public:
  explicit TempDir(const char* prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& str() const { return path_; }
  [[nodiscard]] std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// The bus every test uses, so stray segments are easy to spot and clean.
inline constexpr const char* kTestBus = "shmbustest";

/// A unique channel name (pid + counter) whose segment is removed when the
/// guard goes out of scope, whatever the test did.
class ScopedChannelName {
 public:
  explicit ScopedChannelName(const std::string& stem = "t") {
    static std::atomic<int> counter{0};
    name_ = stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
    (void)Channel::remove(name_, kTestBus);
  }
  ~ScopedChannelName() { (void)Channel::remove(name_, kTestBus); }
  ScopedChannelName(const ScopedChannelName&) = delete;
  ScopedChannelName& operator=(const ScopedChannelName&) = delete;
  [[nodiscard]] const std::string& str() const { return name_; }
  operator std::string_view() const { return name_; }  // NOLINT(implicit)

 private:
  std::string name_;
};

/// Creates a channel on the test bus or fails the test with the error text.
Channel make_channel(const ScopedChannelName& name, const ChannelOptions& opts);

/// Forks a child that runs `body` and _exits with its return value (never
/// returns into the test framework). Returns the child's pid.
pid_t fork_child(const std::function<int()>& body);

/// Waits for a child; returns its exit code, or 128+signal if killed.
int wait_child(pid_t pid);

/// A forked peer, SIGKILLed and reaped by the destructor unless the test
/// reaped it already: a failed REQUIRE never leaves a process behind. The
/// child also dies with the test process (PR_SET_PDEATHSIG). One thread at a
/// time.
class Child {
 public:
  /// Bound of wait(): far above anything a healthy run needs.
  static constexpr std::chrono::milliseconds kDefaultBound{10'000};

  explicit Child(const std::function<int()>& body);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool reaped() const { return reaped_; }

  /// Waits (bounded) for the child to end: its exit code, 128+signal if it
  /// was killed, or -2 if it was still running at the bound (it is then
  /// killed, so the test fails instead of hanging).
  int wait(std::chrono::milliseconds bound = kDefaultBound);

  /// Reaps the child if it has ended; never waits. True if it had.
  bool try_wait();

  /// SIGKILL, then reap: returns what wait() returns (128+SIGKILL, or the
  /// exit code if the child had already ended on its own).
  int kill_and_wait();

 private:
  void set_status(int status);
  pid_t pid_ = -1;
  bool reaped_ = false;
  int rc_ = -1;
};

/// The payload of the stress tests: which producer, its per-producer index,
/// and a check word that detects torn or mixed bytes.
struct Payload {
  std::uint32_t producer;
  std::uint32_t pad;
  std::uint64_t index;
  std::uint64_t check;  // index * golden ^ producer
};

inline std::uint64_t check_of(std::uint32_t producer, std::uint64_t index) {
  return index * 0x9e3779b97f4a7c15ULL ^ producer;
}

/// Bytes of a trivially copyable value.
template <class T>
std::span<const std::byte> bytes_of(const T& v) {
  return std::as_bytes(std::span<const T>(&v, 1));
}

/// Publishes the values 0..n-1 (as 8-byte payloads) stamped t0, t0 + step,
/// ... (made-up CLOCK_REALTIME ns, for start-at-time tests). False as soon
/// as one publish is not ok.
inline bool publish_stamped(Publisher& pub, std::uint64_t n, std::uint64_t t0, std::uint64_t step) {
  for (std::uint64_t i = 0; i < n; ++i) {
    MessageMeta m;
    m.timestamp_ns = t0 + i * step;
    if (pub.publish(bytes_of(i), m) != PublishStatus::ok) return false;
  }
  return true;
}

/// Reads a trivially copyable value from the front of a payload.
template <class T>
T value_of(std::span<const std::byte> p) {
  T v{};
  std::memcpy(&v, p.data(), std::min(sizeof v, p.size()));
  return v;
}

/// A tiny pipe-based event: one process signals, another waits (with a
/// bound). Tests use it to synchronise on events, never on sleeps.
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void signal(std::uint64_t value = 1);
  /// Waits up to timeout_ms; returns false on timeout.
  bool wait(std::uint64_t& value, int timeout_ms = 30'000);
  bool wait(int timeout_ms = 30'000) {
    std::uint64_t v = 0;
    return wait(v, timeout_ms);
  }
  /// Shrinks the pipe to one page (512 values): a signaller then blocks once
  /// it is that far ahead of the waiter. Returns false if the kernel refused.
  bool limit_to_one_page();

 private:
  int fds_[2] = {-1, -1};
};

/// A T in an anonymous MAP_SHARED mapping: made before fork, so what a child
/// writes there is seen by the parent, also after the child was killed.
/// T holds only lock-free atomics and plain data. Throws std::system_error
/// if the mapping fails.
template <class T>
class SharedMap {
 public:
  SharedMap() {
    void* m = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
    p_ = new (m) T();
  }
  ~SharedMap() {
    p_->~T();
    (void)::munmap(p_, sizeof(T));
  }
  SharedMap(const SharedMap&) = delete;
  SharedMap& operator=(const SharedMap&) = delete;
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }

 private:
  T* p_ = nullptr;
};

}  // namespace shmbus::test
