#include "shm/fault_guard.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sys/mman.h>

namespace shmbus::shm::fault_guard {

namespace {

// Entry states. A slot moves free -> claiming -> live by its registrar,
// live -> replacing -> replaced by the handler, and live|replaced -> free by
// unregister_mapping, which waits out a replacement in progress so that the
// handler never maps over a range that has been unmapped (and maybe reused).
enum : std::uint32_t { kFree = 0, kClaiming = 1, kLive = 2, kReplacing = 3, kReplaced = 4 };

struct Entry {
  std::atomic<std::uint32_t> state{kFree};
  std::atomic<std::uint32_t> writable{0};
  std::atomic<std::uintptr_t> base{0};
  std::atomic<std::size_t> length{0};
  std::atomic<std::uint64_t> key{0};
  std::atomic<std::uint64_t> marker_offset{UINT64_MAX};
  std::atomic<std::uint64_t> marker_value{0};
};
static_assert(std::atomic<std::uintptr_t>::is_always_lock_free);

Entry g_table[kMaxGuarded];
std::atomic<int> g_high{0};  // every slot ever used is below this
std::atomic<std::uint64_t> g_next_key{1};
struct sigaction g_previous {};
std::once_flag g_install_once;
bool g_installed = false;

void pause_briefly() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Replaces one mapping by private zero pages (async-signal-safe: mmap,
// mprotect and plain stores only).
void replace(Entry& e) noexcept {
  // relaxed: the acquire CAS that moved the entry to kReplacing orders these.
  auto* base = reinterpret_cast<void*>(e.base.load(std::memory_order_relaxed));
  const std::size_t len = e.length.load(std::memory_order_relaxed);
  const std::uint64_t off = e.marker_offset.load(std::memory_order_relaxed);
  void* p = ::mmap(base, len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;  // nothing better to do: the access faults again
  if (off < len && off % 8 == 0) {
    // A plain store into private memory nobody else maps; the faulting
    // thread re-reads it after the handler returns.
    *reinterpret_cast<volatile std::uint64_t*>(static_cast<std::byte*>(base) + off) =
        e.marker_value.load(std::memory_order_relaxed);
  }
  if (e.writable.load(std::memory_order_relaxed) == 0) (void)::mprotect(base, len, PROT_READ);
}

void replace_all(std::uint64_t key) noexcept {
  const int high = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < high; ++i) {
    Entry& e = g_table[i];
    // relaxed: a hint; the CAS below re-validates the entry.
    if (e.key.load(std::memory_order_relaxed) != key) continue;
    std::uint32_t s = kLive;
    // SYNC(guard): acquire, pairs with the registrar's release of kLive.
    if (e.state.compare_exchange_strong(s, kReplacing, std::memory_order_acquire, std::memory_order_acquire)) {
      if (e.key.load(std::memory_order_relaxed) == key) {
        replace(e);
        e.state.store(kReplaced, std::memory_order_release);
      } else {
        e.state.store(kLive, std::memory_order_release);  // reused for another segment
      }
      continue;
    }
    // Another thread is replacing it: wait, so that our retried access
    // lands on the new pages.
    while (e.state.load(std::memory_order_acquire) == kReplacing) pause_briefly();
  }
}

void chain(int sig, siginfo_t* info, void* uctx) noexcept {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, uctx);
    return;
  }
  if (g_previous.sa_handler == SIG_IGN && info->si_code <= 0) return;  // a sent SIGBUS, ignored
  if (g_previous.sa_handler == SIG_DFL || g_previous.sa_handler == SIG_IGN) {
    // Back to the default action: a fault re-executes and kills the process
    // as it would have without us; a sent signal is raised again.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    (void)::sigaction(SIGBUS, &dfl, nullptr);
    if (info->si_code <= 0) (void)::raise(SIGBUS);
    return;
  }
  g_previous.sa_handler(sig);
}

void on_sigbus(int sig, siginfo_t* info, void* uctx) {
  const int saved_errno = errno;
  if (info != nullptr && info->si_code > 0) {  // a fault, not a sent signal
    const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    const int high = g_high.load(std::memory_order_acquire);
    for (int i = 0; i < high; ++i) {
      Entry& e = g_table[i];
      const std::uint32_t s = e.state.load(std::memory_order_acquire);
      if (s != kLive && s != kReplacing && s != kReplaced) continue;
      // relaxed: ordered by the acquire of state above.
      const std::uintptr_t base = e.base.load(std::memory_order_relaxed);
      const std::size_t len = e.length.load(std::memory_order_relaxed);
      if (addr >= base && addr - base < len) {
        replace_all(e.key.load(std::memory_order_relaxed));
        errno = saved_errno;
        return;
      }
    }
  }
  chain(sig, info, uctx);
  errno = saved_errno;
}

void install() noexcept {
  const char* env = std::getenv("SHMBUS_SIGBUS_GUARD");
  if (env != nullptr && std::strcmp(env, "0") == 0) return;
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, &g_previous) == 0) g_installed = true;
}

}  // namespace

bool installed() noexcept {
  std::call_once(g_install_once, install);
  return g_installed;
}

std::uint64_t new_key() noexcept {
  return g_next_key.fetch_add(1, std::memory_order_relaxed);  // relaxed: a unique number
}

int register_mapping(void* base, std::size_t length, std::uint64_t key, bool writable, std::uint64_t marker_offset,
                     std::uint64_t marker_value) noexcept {
  if (!installed()) return -1;
  for (int i = 0; i < kMaxGuarded; ++i) {
    Entry& e = g_table[i];
    std::uint32_t s = kFree;
    if (!e.state.compare_exchange_strong(s, kClaiming, std::memory_order_acquire, std::memory_order_relaxed)) {
      continue;
    }
    // relaxed: published by the release store of kLive below.
    e.base.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_relaxed);
    e.length.store(length, std::memory_order_relaxed);
    e.key.store(key, std::memory_order_relaxed);
    e.writable.store(writable ? 1 : 0, std::memory_order_relaxed);
    e.marker_offset.store(marker_offset, std::memory_order_relaxed);
    e.marker_value.store(marker_value, std::memory_order_relaxed);
    int high = g_high.load(std::memory_order_relaxed);
    while (high < i + 1 &&
           !g_high.compare_exchange_weak(high, i + 1, std::memory_order_release, std::memory_order_relaxed)) {
    }
    // SYNC(guard): release, pairs with the handler's acquire of state.
    e.state.store(kLive, std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_mapping(int slot) noexcept {
  if (slot < 0 || slot >= kMaxGuarded) return;
  Entry& e = g_table[slot];
  for (;;) {
    std::uint32_t s = e.state.load(std::memory_order_acquire);
    if (s == kReplacing) {
      pause_briefly();
      continue;
    }
    if (e.state.compare_exchange_weak(s, kFree, std::memory_order_acq_rel, std::memory_order_acquire)) {
      return;
    }
  }
}

bool lost(std::uint64_t key) noexcept {
  const int high = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < high; ++i) {
    const Entry& e = g_table[i];
    if (e.state.load(std::memory_order_acquire) == kReplaced && e.key.load(std::memory_order_relaxed) == key) {
      return true;
    }
  }
  return false;
}

}  // namespace shmbus::shm::fault_guard
