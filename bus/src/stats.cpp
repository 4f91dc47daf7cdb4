#include <shmbus/bus/stats.hpp>

#include <algorithm>

#include <shmbus/bus/tables.hpp>
#include <shmbus/shm/atomics.hpp>
#include <shmbus/shm/liveness.hpp>

namespace shmbus::bus {

namespace {
const char* state_name(std::uint32_t s) {
  switch (s) {
    case kEntryClaiming: return "claiming";
    case kEntryActive: return "active";
    case kEntryDetached: return "detached";
    case kEntryEvicted: return "evicted";
    default: return "free";
  }
}
bool alive(std::uint64_t control, const std::atomic<std::uint64_t>& start) {
  if (control_pid(control) == 0) return false;
  return shm::process_liveness({control_pid(control), shm::load_relaxed(start)}) !=
         shm::Liveness::dead;
}
}  // namespace

ChannelStats snapshot(const ChannelState& ch) {
  // relaxed everywhere below: a snapshot of statistics, not a synchronisation.
  ChannelStats s;
  s.bus = ch.bus;
  s.name = ch.name;
  s.policy = ch.geo.policy;
  s.capacity = ch.geo.capacity;
  s.slot_size = ch.geo.slot_size;
  s.max_payload = ch.geo.max_payload;
  s.head = shm::load_acquire(ch.producer->head);
  s.oldest = s.head > ch.geo.capacity ? s.head - ch.geo.capacity : 0;
  s.abandoned = shm::load_relaxed(ch.producer->abandoned);
  s.evictions = shm::load_relaxed(ch.producer->evictions);
  s.dead_reclaimed = shm::load_relaxed(ch.producer->dead_reclaimed);
  s.creator_pid = ch.header->creator_pid;
  s.epoch = ch.header->epoch;
  s.created_realtime_ns = ch.header->created_realtime_ns;
  for (std::uint32_t i = 0; i < ch.geo.max_publishers; ++i) {
    const PublisherEntry& e = ch.publishers[i];
    const std::uint64_t c = shm::load_acquire(e.control);
    if (control_state(c) != kEntryActive) continue;
    PublisherStats p;
    p.index = i;
    p.pid = control_pid(c);
    p.alive = alive(c, e.owner_start);
    p.published = shm::load_relaxed(e.published);
    p.rejected = shm::load_relaxed(e.rejected);
    p.timeouts = shm::load_relaxed(e.timeouts);
    p.blocked_ns = shm::load_relaxed(e.blocked_ns);
    p.aborted = shm::load_relaxed(e.aborted);
    p.lost_claims = shm::load_relaxed(e.lost_claims);
    s.published += p.published;
    s.publishers.push_back(p);
  }
  std::uint64_t gate = s.head;
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    const SubscriberEntry& e = ch.subscribers[i];
    const std::uint64_t c = shm::load_acquire(e.control);
    if (control_state(c) == kEntryFree) continue;
    SubscriberStats sub;
    sub.index = i;
    sub.durable = (shm::load_relaxed(e.flags) & kSubDurable) != 0;
    sub.name = sub.durable ? read_name(e.name) : std::string();
    sub.state = state_name(control_state(c));
    sub.pid = control_pid(c);
    sub.alive = alive(c, e.owner_start);
    sub.cursor = shm::load_acquire(e.cursor);
    sub.lag = s.head > sub.cursor ? s.head - sub.cursor : 0;
    sub.delivered = shm::load_relaxed(e.delivered);
    sub.lost = shm::load_relaxed(e.lost);
    sub.lapped_events = shm::load_relaxed(e.lapped_events);
    if (entry_gates(c, shm::load_relaxed(e.flags))) gate = std::min(gate, sub.cursor);
    s.subscribers.push_back(std::move(sub));
  }
  s.depth = s.head - gate;
  return s;
}

}  // namespace shmbus::bus
