#include "bus/ring/slots.hpp"

namespace shmbus::bus {

bool StallWatch::check(ChannelState& ch, std::uint64_t pos, std::uint64_t st, std::uint64_t head) noexcept {
  const std::uint64_t unblock_ns = ch.geo.unblock_timeout_ns;
  if (head <= pos) {  // nothing claimed here yet: not a stall
    pos_ = ~0ULL;
    return false;
  }
  const std::uint64_t now = shm::monotonic_ns();
  if (pos_ != pos || stamp_ != st) {
    pos_ = pos;
    stamp_ = st;
    since_ns_ = now;
    return false;
  }
  const std::uint64_t stalled = now - since_ns_;
  std::uint64_t target = make_stamp(pos, kStampAbandoned);
  bool give_up = stalled >= unblock_ns;
  if (!give_up && stamp_state(st) == kStampWriting && stalled >= kLivenessAfterNs &&
      now - last_liveness_ns_ >= kLivenessAfterNs) {
    // A claim held in `writing` names its writer: if that process is dead
    // there is no need to wait out the unblock timeout. An older lap's dead
    // writer is abandoned under its own sequence, so the live writer of our
    // position (waiting for that slot) can go on.
    last_liveness_ns_ = now;
    if (slot_writer_dead(*ch.slot(pos), stamp_seq(st))) {
      give_up = true;
      target = make_stamp(stamp_seq(st), kStampAbandoned);
    }
  }
  if (!give_up) return false;
  pos_ = ~0ULL;
  // Take the claim away: the late writer's commit CAS will fail.
  if (!ch.cas_stamp(pos, st, target)) return false;
  ch.producer->abandoned.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return true;
}

#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize("thread"), optimize("no-tree-loop-distribute-patterns"))) void racy_copy(
    void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const volatile unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
}
#endif

}  // namespace shmbus::bus
