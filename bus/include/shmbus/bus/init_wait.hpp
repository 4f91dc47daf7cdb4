// The opener's side of the segment initialisation hand-shake, shared by
// channels and dedup tables: wait (bounded) until the header's init_state
// says ready, or its recorded initialiser is dead.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <shmbus/bus/layout.hpp>
#include <shmbus/shm/atomics.hpp>
#include <shmbus/shm/clock.hpp>
#include <shmbus/shm/liveness.hpp>
#include <shmbus/shm/segment.hpp>

namespace shmbus::bus {

enum class InitWait { ready, abandoned, timed_out, never_sized };

struct InitProbe {
  InitWait outcome;
  std::uint64_t owner = 0;  ///< shm::pack_process of the initialiser (0: none recorded)
};

/// Maps the first `header_size` bytes of `seg` into `hdr_map` once the
/// segment is that large, then waits until Header::init_state is kInitReady
/// or Header::init_owner names a dead process, at most wait_ns.
template <class Header>
InitProbe wait_for_init(const shm::Segment& seg, std::size_t header_size, std::uint64_t wait_ns,
                        shm::Mapping& hdr_map) {
  const std::uint64_t deadline = shm::monotonic_ns() + wait_ns;
  std::uint64_t sleep = 1000;
  for (;;) {
    const bool expired = shm::monotonic_ns() >= deadline;
    auto sz = seg.size();
    if (sz && sz.value() >= header_size && !hdr_map.valid()) {
      auto m = seg.map(0, header_size, seg.access(), false);
      if (m) hdr_map = std::move(m.value());
    }
    if (hdr_map.valid()) {
      const auto* h = reinterpret_cast<const Header*>(hdr_map.data());
      // SYNC(init): acquire, pairs with the initialiser's release of init_state.
      if (shm::load_acquire(h->init_state) == kInitReady) return {InitWait::ready};
      const std::uint64_t owner = shm::load_acquire(h->init_owner);
      if (owner != 0 && shm::packed_liveness(owner) == shm::Liveness::dead) {
        return {InitWait::abandoned, owner};
      }
      if (expired) return {owner == 0 ? InitWait::abandoned : InitWait::timed_out, owner};
    } else if (expired) {
      return {InitWait::never_sized};
    }
    shm::sleep_ns(sleep);
    sleep = std::min<std::uint64_t>(sleep * 2, 1'000'000);
  }
}

}  // namespace shmbus::bus
