// The group and consumer tables: see membership.hpp.
#include "bus/group/membership.hpp"

#include <algorithm>

#include "bus/common/settings_check.hpp"
#include "bus/common/util.hpp"
#include "bus/group/group_view.hpp"
#include "bus/ring/participants.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/futex.hpp"
#include "shm/liveness.hpp"

namespace shmbus::bus {

namespace {

Error invalid(const std::string& msg) { return Error(ErrorCode::invalid_argument, msg); }

// Frees every consumer entry of group gi whose process is gone; how many.
std::uint32_t release_dead_consumers(const ChannelState& ch, std::uint32_t gi) noexcept {
  const ConsumerEntry* cons = ch.consumers(gi);
  std::uint32_t n = 0;
  for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
    const std::uint64_t c = shm::load_acquire(cons[k].control);
    const std::uint32_t st = control_state(c);
    if (st != kEntryActive && st != kEntryClaiming) continue;
    const shm::ProcessId id{control_pid(c), st == kEntryActive ? shm::load_relaxed(cons[k].owner_start) : 0};
    if (shm::process_liveness(id) == shm::Liveness::dead && release_consumer(ch, gi, k, c)) ++n;
  }
  return n;
}

// The settings stored in a group entry, compared with the options of a joiner.
Result<void> check_same_settings(const GroupEntry& g, const GroupOptions& o, const std::string& dlq,
                                 std::string_view name) {
  const SettingCheck checks[] = {
      {"visibility_timeout_ns", g.visibility_timeout_ns, o.visibility_timeout_ns},
      {"max_deliveries", g.max_deliveries, o.max_deliveries},
      {"backoff_base_ns", g.backoff_base_ns, o.backoff_base_ns},
      {"backoff_cap_ns", g.backoff_cap_ns, o.backoff_cap_ns},
      {"jitter_permille", g.jitter_permille, o.jitter_permille},
      {"ordering", g.ordering, static_cast<std::uint32_t>(o.ordering)},
      {"order_window", g.order_window, o.order_window},
  };
  if (auto r = check_settings("group '" + std::string(name) + "'", checks); !r) return r;
  const std::string have_dlq = read_name(g.dlq);
  if (have_dlq != dlq) {
    return Error(ErrorCode::parameter_mismatch,
                 "group '" + std::string(name) + "' exists with dlq '" + have_dlq + "'; asked for '" + dlq + "'");
  }
  return {};
}

// Writes a new group's settings, counters and start position into entry i,
// which we hold claiming: nobody reads them until the CAS to active
// publishes them.
void init_group_entry(ChannelState& ch, std::uint32_t i, const GroupOptions& o, const std::string& dlq) {
  GroupEntry& g = *ch.group(i);
  g.visibility_timeout_ns = o.visibility_timeout_ns;
  g.backoff_base_ns = o.backoff_base_ns;
  g.backoff_cap_ns = o.backoff_cap_ns;
  g.max_deliveries = o.max_deliveries;
  g.jitter_permille = o.jitter_permille;
  g.ordering = static_cast<std::uint32_t>(o.ordering);
  g.order_window = o.order_window;
  g.created_realtime_ns = shm::realtime_ns();
  write_name(g.dlq, dlq);
  // relaxed: published by the CAS to active.
  for (auto* ctr : {&g.delivered, &g.acked, &g.redelivered, &g.dead_lettered, &g.nacked, &g.expired, &g.lost,
                    &g.dlq_failures, &g.dead_consumer_releases}) {
    shm::store_relaxed(*ctr, std::uint64_t{0});
  }
  ConsumerEntry* cons = ch.consumers(i);
  for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
    shm::store_relaxed(cons[k].control, std::uint64_t{0});
  }
  std::uint64_t start_lost = 0;
  const std::uint64_t start = start_position(ch, o.start, &start_lost);
  // Started at a time older than the ring: what may have been published
  // since then and was overwritten is lost to the group, as in a lap.
  shm::store_relaxed(g.lost, start_lost);  // relaxed: published by the CAS to active
  shm::store_relaxed(g.next, start);
  shm::store_relaxed(g.floor, start);
}

// Tries to create group `name` in entry i, seen free with control word c:
// claim it, fill it in, settle a race with a concurrent creator of the same
// name, activate it. False if any step lost a race (the caller looks again
// from the start: the other creator's group may be found by then).
bool try_create_group(ChannelState& ch, std::uint32_t i, std::uint64_t c, std::string_view name, const GroupOptions& o,
                      const std::string& dlq) {
  GroupEntry& g = *ch.group(i);
  const std::uint64_t held = make_control(kEntryClaiming, shm::self_process().pid);
  if (!shm::cas_acq_rel(g.control, c, held)) return false;
  init_group_entry(ch, i, o, dlq);
  // Announce the name (the fence orders it before our look at the others),
  // then settle a race with a concurrent creator.
  write_name(g.name, name);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const auto same_name = [&](std::uint32_t j) {
    const GroupEntry& other = *ch.group(j);
    return control_state(other.control.load(std::memory_order_seq_cst)) != kEntryFree && read_name(other.name) == name;
  };
  const bool back_off = lose_name_race(i, ch.geo.max_groups, same_name, [&](std::uint32_t j) {
    return control_state(shm::load_acquire(ch.group(j)->control)) == kEntryClaiming;
  });
  std::uint64_t mine = held;
  if (back_off) {
    (void)shm::cas_acq_rel(g.control, mine, make_control(kEntryFree, 0));
    return false;
  }
  // seq_cst: the floor gates publishers from now on.
  return g.control.compare_exchange_strong(mine, make_control(kEntryActive, 0), std::memory_order_seq_cst);
}

// The control word of group entry g, after freeing it if a creator died
// half-way through creating a group there.
std::uint64_t settle_dead_creator(GroupEntry& g) noexcept {
  std::uint64_t c = shm::load_acquire(g.control);
  if (control_state(c) == kEntryClaiming && shm::process_liveness({control_pid(c), 0}) == shm::Liveness::dead) {
    (void)shm::cas_acq_rel(g.control, c, make_control(kEntryFree, 0));
    c = make_control(kEntryFree, 0);
  }
  return c;
}

}  // namespace

Result<std::uint32_t> find_or_create_group(ChannelState& ch, std::string_view name, const GroupOptions& o,
                                           const std::string& dlq) {
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (attempt > 0) shm::sleep_ns(1000ULL << std::min(attempt, 10));
    const int found = find_group(ch, name);
    if (found >= 0) {
      const GroupEntry& g = *ch.group(static_cast<std::uint32_t>(found));
      if (auto r = check_same_settings(g, o, dlq, name); !r) return r.error();
      return static_cast<std::uint32_t>(found);
    }
    bool retry = false;
    bool full = true;
    for (std::uint32_t i = 0; i < ch.geo.max_groups && !retry; ++i) {
      const std::uint64_t c = settle_dead_creator(*ch.group(i));
      if (control_state(c) != kEntryFree) {
        if (control_state(c) == kEntryClaiming) full = false;  // may become free
        continue;
      }
      full = false;
      if (try_create_group(ch, i, c, name, o, dlq)) return i;
      retry = true;
    }
    if (!retry && full) break;
  }
  return Error(ErrorCode::table_full, "channel '" + ch.name + "' has all " + num(ch.geo.max_groups) +
                                          " group entries in use (raise max_groups when creating it)");
}

Result<std::uint32_t> join_consumer(ChannelState& ch, std::uint32_t gi, std::uint64_t& control) {
  const shm::ProcessId me = shm::self_process();
  ConsumerEntry* cons = ch.consumers(gi);
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
      ConsumerEntry& e = cons[k];
      std::uint64_t c = shm::load_acquire(e.control);
      if (control_state(c) != kEntryFree) continue;
      const std::uint64_t held = make_control(kEntryClaiming, me.pid);
      if (!shm::cas_acq_rel(e.control, c, held)) continue;
      shm::store_relaxed(e.owner_start, me.start_time);
      // relaxed: statistics, published by the CAS below.
      shm::store_relaxed(e.delivered, std::uint64_t{0});
      shm::store_relaxed(e.acked, std::uint64_t{0});
      shm::store_relaxed(e.nacked, std::uint64_t{0});
      shm::store_relaxed(e.joined_realtime_ns, shm::realtime_ns());
      std::uint64_t mine = held;
      control = make_control(kEntryActive, me.pid);
      if (shm::cas_acq_rel(e.control, mine, control)) return k;
    }
    if (pass == 0) {
      // Full: free the entries of consumers whose processes are gone. Their
      // leases are redelivered when they expire (or at once, by the scan).
      (void)release_dead_consumers(ch, gi);
    }
  }
  return Error(ErrorCode::table_full, "group has all " + num(ch.geo.max_consumers) +
                                          " consumer entries in use on channel '" + ch.name +
                                          "' (raise max_consumers when creating it)");
}

void release_leases_of(const ChannelState& ch, std::uint32_t gi, std::uint32_t owner) noexcept {
  const GroupView v = group_view(ch, gi);
  const std::uint64_t nms = now_ms();
  const std::uint64_t f = shm::load_acquire(v.g->floor);
  const std::uint64_t nx = shm::load_acquire(v.g->next);
  // [floor, next), then on past `next` while the words are the owner's
  // live leases of their lap: a run (ConsumerCore::take_run) that a killed
  // owner was taking leases from `next` on before moving `next` past them.
  for (std::uint64_t s = f; s - f <= v.mask; ++s) {
    std::uint64_t w = shm::load_acquire(v.leases[s & v.mask]);
    LeaseFields lf = lease_fields(w);
    if ((lf.state == kLeaseLeased || lf.state == kLeaseDeadLettering) && lf.owner == owner && lf.lap == v.lap(s)) {
      lf.state = kLeaseDue;
      lf.deadline_ms = nms;
      (void)shm::cas_acq_rel(v.leases[s & v.mask], w, make_lease(lf));
    } else if (s >= nx) {
      break;
    }
  }
}

bool release_consumer(const ChannelState& ch, std::uint32_t gi, std::uint32_t k, std::uint64_t seen) noexcept {
  ConsumerEntry& e = ch.consumers(gi)[k];
  std::uint64_t c = seen;
  if (!shm::cas_acq_rel(e.control, c, make_control(kEntryClaiming, shm::self_process().pid))) return false;
  if (control_state(seen) == kEntryActive) release_leases_of(ch, gi, k);
  shm::store_release(e.control, make_control(kEntryFree, 0));
  ch.group(gi)->dead_consumer_releases.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return true;
}

Result<void> check_group_options(const GroupOptions& o) {
  if (o.visibility_timeout_ns < kNsPerMs || o.visibility_timeout_ns >= kMaxLeaseMs * kNsPerMs) {
    return invalid("visibility_timeout_ns " + num(o.visibility_timeout_ns) + " must be at least 1 ms and under 3 days");
  }
  if (o.max_deliveries < 1 || o.max_deliveries > kMaxAttempts) {
    return invalid("max_deliveries " + num(o.max_deliveries) + " must be in 1.." + num(kMaxAttempts));
  }
  if (o.backoff_cap_ns >= kMaxLeaseMs * kNsPerMs || o.backoff_base_ns > o.backoff_cap_ns) {
    return invalid("backoff_base_ns " + num(o.backoff_base_ns) + " must not exceed backoff_cap_ns " +
                   num(o.backoff_cap_ns) + ", which must be under 3 days");
  }
  if (o.jitter_permille > 1000) {
    return invalid("jitter_permille " + num(o.jitter_permille) + " must be in 0..1000");
  }
  if (o.ordering != GroupOrdering::none && o.ordering != GroupOrdering::per_key) {
    return invalid("ordering " + num(static_cast<std::uint32_t>(o.ordering)) + " is not none (0) or per_key (1)");
  }
  return {};
}

int find_group(const ChannelState& ch, std::string_view name) noexcept {
  for (std::uint32_t i = 0; i < ch.geo.max_groups; ++i) {
    const GroupEntry& g = *ch.group(i);
    if (control_state(shm::load_acquire(g.control)) == kEntryActive && read_name(g.name) == name) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

std::uint32_t reclaim_dead_consumers(ChannelState& ch) noexcept {
  if (ch.read_only()) return 0;
  std::uint32_t n = 0;
  for (std::uint32_t gi = 0; gi < ch.geo.max_groups; ++gi) {
    if (control_state(shm::load_acquire(ch.group(gi)->control)) != kEntryActive) continue;
    n += release_dead_consumers(ch, gi);
  }
  if (n != 0) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    shm::wake_sleepers(ch.producer->sub_sleeping, ch.producer->sub_futex);
  }
  return n;
}

Result<void> remove_group(ChannelState& ch, std::string_view name) {
  if (auto w = ch.require_writable(); !w) return w.error();
  const int gi = find_group(ch, name);
  if (gi < 0) return Error(ErrorCode::not_found, "channel '" + ch.name + "' has no group '" + std::string(name) + "'");
  GroupEntry& g = *ch.group(static_cast<std::uint32_t>(gi));
  const ConsumerEntry* cons = ch.consumers(static_cast<std::uint32_t>(gi));
  for (std::uint32_t k = 0; k < ch.geo.max_consumers; ++k) {
    const std::uint64_t c = shm::load_acquire(cons[k].control);
    if (control_state(c) == kEntryFree) continue;
    const shm::ProcessId id{control_pid(c), shm::load_relaxed(cons[k].owner_start)};
    if (shm::process_liveness(id) != shm::Liveness::dead) {
      return Error(ErrorCode::busy,
                   "group '" + std::string(name) + "' has a live consumer (pid " + num(control_pid(c)) + ")");
    }
  }
  std::uint64_t c = shm::load_acquire(g.control);
  if (!shm::cas_acq_rel(g.control, c, make_control(kEntryFree, 0))) {
    return Error(ErrorCode::busy, "group '" + std::string(name) + "' changed while removing it");
  }
  // Clear the leases so a group created later in this entry starts clean.
  std::atomic<std::uint64_t>* leases = ch.leases(static_cast<std::uint32_t>(gi));
  for (std::uint64_t s = 0; s < ch.geo.capacity; ++s) shm::store_relaxed(leases[s], std::uint64_t{0});
  std::atomic_thread_fence(std::memory_order_seq_cst);
  shm::wake_sleepers(ch.producer->pub_sleeping, ch.producer->pub_futex);
  return {};
}

}  // namespace shmbus::bus
