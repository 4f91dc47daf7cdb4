#include "bus/dedup/dedup.hpp"
#include "bus/common/util.hpp"

#include <algorithm>
#include <cstring>

#include "bus/common/segment_open.hpp"
#include "bus/common/settings_check.hpp"
#include "bus/ring/channel_state.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/liveness.hpp"

namespace shmbus {

std::string_view to_string(DedupStatus s) noexcept {
  switch (s) {
    case DedupStatus::first: return "first";
    case DedupStatus::in_progress: return "in_progress";
    case DedupStatus::done: return "done";
    case DedupStatus::full: return "full";
    case DedupStatus::invalid: return "invalid";
  }
  return "unknown";
}

}  // namespace shmbus

namespace shmbus::bus {

namespace {

/// begin/complete start over at most this often before giving up (contention).
constexpr int kMaxRounds = 1000;
/// How long a caller waits for another process's binding of the same window
/// to settle before it answers in_progress. A binding lasts a few
/// instructions; this only bounds a binder that was descheduled or stopped.
constexpr std::uint64_t kBindWaitNs = 100'000'000ULL;
/// While waiting on a binding, how often its process's liveness is checked.
constexpr std::uint64_t kBindLivenessEveryNs = 1'000'000ULL;
/// A binding older than this is freed even if its process looks alive (its
/// pid may have been reused after it died inside the binding).
constexpr std::uint64_t kBindStuckMs = 10'000;
constexpr std::uint32_t kSpins = 256;
/// How long an open waits while a remover holds the table's segment
/// exclusively (Segment::open's default).
constexpr std::uint64_t kDedupOpenLockWaitNs = 2'000'000'000ULL;

/// The time field of a transition out of `old`: at least `wanted`, and
/// strictly greater than the old one, so an entry never holds the same word
/// twice (no ABA). Saturates only on a corrupted word.
std::uint64_t later(std::uint64_t wanted, std::uint64_t old) noexcept {
  return std::min(kDedupMaxTime, std::max(wanted, dedup_time(old) + 1));
}

/// A deadline `span_ms` from now in whole milliseconds: `now_ms` is rounded
/// down, so one more millisecond makes sure at least the whole span passes.
std::uint64_t deadline(std::uint64_t now, std::uint64_t span_ms) noexcept { return now + span_ms + 1; }

/// splitmix64's finaliser: consecutive ids land far apart.
std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// An (id, word) pair of one entry read consistently: the word is read
/// before and after the id and is the same both times. Because a word never
/// repeats and the id changes only in `binding`, the id belongs to that word
/// (for a `binding` word it may be the old id or the new one). Bounded: a
/// word that changes 64 Ki times between two loads of one line means a
/// hostile segment; the last pair is returned.
struct Snapshot {
  std::uint64_t id;
  std::uint64_t word;
};
Snapshot snapshot(const DedupEntry& e) noexcept {
  Snapshot s{};
  for (int i = 0; i < 65536; ++i) {
    // SYNC(entry-word): acquire, pairs with the release half of every CAS
    // on the word, so the id read next is at least the one bound with it.
    s.word = shm::load_acquire(e.state);
    // acquire: keeps the second load of the word after this one.
    s.id = shm::load_acquire(e.id);
    if (shm::load_acquire(e.state) == s.word) break;
  }
  return s;
}

Error invalid(const std::string& msg) { return Error(ErrorCode::invalid_argument, msg); }

struct DedupGeometry {
  std::uint64_t capacity = 0;
  std::uint64_t window = 0;
  std::uint64_t ttl_ns = 0;
  std::uint64_t claim_timeout_ns = 0;
  std::uint64_t entries_offset = kDedupHeaderSize;
  std::uint64_t total_size = 0;
};

// Checks the options (or the values read back from a header: any u64) and
// derives the segment's geometry.
Result<DedupGeometry> compute_geometry(std::uint64_t capacity, std::uint64_t window, std::uint64_t ttl_ns,
                                       std::uint64_t claim_timeout_ns) {
  if (!is_pow2(capacity) || capacity < kDedupMinCapacity || capacity > kDedupMaxCapacity) {
    return invalid("capacity " + num(capacity) + " must be a power of two in " + num(kDedupMinCapacity) + ".." +
                   num(kDedupMaxCapacity));
  }
  if (window < 1 || window > kDedupMaxWindow || window > capacity) {
    return invalid("probe_window " + num(window) + " must be in 1.." + num(kDedupMaxWindow) +
                   " and at most the capacity " + num(capacity));
  }
  if (claim_timeout_ns < kNsPerMs || ceil_ms(claim_timeout_ns) > kDedupMaxSpanMs) {
    return invalid("claim_timeout_ns " + num(claim_timeout_ns) + " must be in 1 ms.." + num(kDedupMaxSpanMs) + " ms");
  }
  if (ttl_ns < claim_timeout_ns || ceil_ms(ttl_ns) > kDedupMaxSpanMs) {
    return invalid("ttl_ns " + num(ttl_ns) + " must be at least claim_timeout_ns " + num(claim_timeout_ns) +
                   " and at most " + num(kDedupMaxSpanMs) + " ms");
  }
  DedupGeometry g;
  g.capacity = capacity;
  g.window = window;
  g.ttl_ns = ttl_ns;
  g.claim_timeout_ns = claim_timeout_ns;
  g.total_size = round_up(g.entries_offset + capacity * sizeof(DedupEntry), shm::page_size());
  return g;
}

// Writes every parameter, then publishes the header: layout_version and
// magic, then init_state = ready with release.
void initialise(DedupHeader* h, const DedupGeometry& g, std::string_view name) {
  // relaxed: every store below is published by the release of init_state.
  shm::store_relaxed(h->abi_fingerprint, dedup_abi_fingerprint());
  shm::store_relaxed(h->capacity, g.capacity);
  shm::store_relaxed(h->probe_window, g.window);
  shm::store_relaxed(h->ttl_ns, g.ttl_ns);
  shm::store_relaxed(h->claim_timeout_ns, g.claim_timeout_ns);
  shm::store_relaxed(h->entries_offset, g.entries_offset);
  shm::store_relaxed(h->total_size, g.total_size);
  shm::store_relaxed(h->created_realtime_ns, shm::realtime_ns());
  shm::store_relaxed(h->creator_pid, std::uint64_t{shm::self_process().pid});
  write_name(h->name, name);
  shm::store_relaxed(h->layout_version, kDedupLayoutVersion);
  shm::store_relaxed(h->magic, kDedupMagic);
  shm::store_relaxed(h->init_owner, shm::pack_process(shm::self_process()));  // informational
  // SYNC(dedup-init): release, pairs with the acquire in dedup_init_state (the
  // table is linked under its name only after this).
  shm::store_release(h->init_state, std::uint64_t{kInitReady});
}

// Every header field against what this library would write for the same
// parameters; the parameters themselves are range-checked again.
Result<DedupGeometry> validate_header(const DedupHeader& h, std::size_t segment_size, const std::string& table) {
  auto bad = [&](const std::string& field, std::uint64_t v, const std::string& why) {
    return Error(ErrorCode::corrupted,
                 "dedup table '" + table + "' is corrupted: " + field + " = " + num(v) + " " + why);
  };
  // relaxed: the caller acquired init_state = ready, which orders them.
  const std::uint64_t magic = shm::load_relaxed(h.magic);
  if (magic != kDedupMagic) return bad("magic", magic, "(not a shmbus dedup table)");
  const std::uint64_t version = shm::load_relaxed(h.layout_version);
  if (version != kDedupLayoutVersion) {
    return Error(ErrorCode::version_mismatch, "dedup table '" + table + "' has layout version " + num(version) +
                                                  "; this library reads version " + num(kDedupLayoutVersion));
  }
  const std::uint64_t abi = shm::load_relaxed(h.abi_fingerprint);
  if (abi != dedup_abi_fingerprint()) {
    return Error(ErrorCode::version_mismatch, "dedup table '" + table +
                                                  "' was made by a build with another ABI fingerprint (" + num(abi) +
                                                  " vs " + num(dedup_abi_fingerprint()) + ")");
  }
  auto g = compute_geometry(shm::load_relaxed(h.capacity), shm::load_relaxed(h.probe_window),
                            shm::load_relaxed(h.ttl_ns), shm::load_relaxed(h.claim_timeout_ns));
  if (!g) {
    return Error(ErrorCode::corrupted, "dedup table '" + table + "' is corrupted: " + g.error().message());
  }
  const std::uint64_t entries_offset = shm::load_relaxed(h.entries_offset);
  if (entries_offset != g->entries_offset) {
    return bad("entries_offset", entries_offset, "(expected " + num(g->entries_offset) + ")");
  }
  const std::uint64_t total = shm::load_relaxed(h.total_size);
  if (total != g->total_size) return bad("total_size", total, "(expected " + num(g->total_size) + ")");
  if (total > segment_size) {
    return bad("total_size", total, "exceeds the segment's size " + num(segment_size));
  }
  return g;
}

Result<void> check_expected(const DedupGeometry& have, const DedupGeometry& want, std::string_view name) {
  const SettingCheck checks[] = {
      {"capacity", have.capacity, want.capacity},
      {"probe_window", have.window, want.window},
      {"ttl_ns", have.ttl_ns, want.ttl_ns},
      {"claim_timeout_ns", have.claim_timeout_ns, want.claim_timeout_ns},
  };
  return check_settings("dedup table '" + std::string(name) + "'", checks);
}

}  // namespace

std::string dedup_segment_name(std::string_view bus, std::string_view name) {
  return "shmbus-dedup." + std::string(bus) + "." + std::string(name);
}

// --- create / open -------------------------------------------------------------

namespace {

std::uint64_t dedup_init_state(const DedupHeader& h) noexcept {
  // SYNC(dedup-init): acquire, pairs with the release in initialise (the
  // table is linked under its name only after it).
  return shm::load_acquire(h.init_state);
}

// The table's steps for the shared open and create (bus/common/segment_open.hpp).
// A table is named only once initialised, so one that is not is corrupted:
// refused, never re-initialised.
constexpr SegmentSteps<DedupHeader, DedupGeometry> kDedupSteps{
    {"dedup table", kDedupHeaderSize, kInitReady, "its header", "remove it", "it is not re-initialised: remove it"},
    &dedup_init_state,
    &validate_header,
    &initialise};

using Opened = OpenedSegment<DedupGeometry>;

// The table `name` as it is on the bus, created with `want` if it is not
// there: an existing one must have the same parameters.
Result<Opened> create_or_open_table(std::string_view name, const std::string& seg_name, const DedupGeometry& want,
                                    const DedupOptions& opts) {
  return create_or_open(
      kDedupSteps.kind, name,
      [&]() -> Result<Opened> {
        // Made and initialised unnamed, then linked: never seen half made.
        auto seg = create_segment(kDedupSteps, name, seg_name, want, opts.mode);
        if (!seg) return seg.error();
        return Opened{std::move(seg.value()), want};
      },
      [&]() -> Result<Opened> {
        auto o = open_segment(kDedupSteps, name, seg_name, shm::Access::read_write, opts.trust, kDedupOpenLockWaitNs);
        if (!o) return o.error();
        if (auto r = check_expected(o->geo, want, name); !r) return r.error();
        return o;
      });
}

}  // namespace

Result<std::unique_ptr<DedupCore>> DedupCore::open_or_create(std::string_view bus, std::string_view name,
                                                             const DedupOptions& opts) {
  if (auto r = validate_name("bus", bus); !r) return r.error();
  if (auto r = validate_name("dedup table", name); !r) return r.error();
  if (opts.mode > 0777) return invalid("mode " + num(opts.mode) + " is not a permission mask (<= 0777)");
  auto want = compute_geometry(opts.capacity, opts.probe_window, opts.ttl_ns, opts.claim_timeout_ns);
  if (!want) return want.error();
  const shm::ProcessId me = shm::self_process();
  if (me.pid > kDedupMaxPid) {
    return invalid("pid " + num(me.pid) + " does not fit the " + num(kDedupPidBits) +
                   "-bit owner field of a dedup entry");
  }
  auto opened = create_or_open_table(name, dedup_segment_name(bus, name), want.value(), opts);
  if (!opened) return opened.error();
  // Pre-fault every page: the hot path must never take a page fault.
  auto map = opened->segment.map(0, opened->geo.total_size, shm::Access::read_write, true);
  if (!map) return map.error();
  auto core = std::make_unique<DedupCore>();
  core->bus_ = std::string(bus);
  core->name_ = std::string(name);
  core->opts_ = opts;
  core->segment_ = std::move(opened->segment);
  core->map_ = std::move(map.value());
  core->header_ = reinterpret_cast<DedupHeader*>(core->map_.data());
  core->entries_ = reinterpret_cast<DedupEntry*>(core->map_.data() + opened->geo.entries_offset);
  // The engine uses these validated copies, never the header again.
  core->mask_ = opened->geo.capacity - 1;
  core->window_ = static_cast<std::uint32_t>(opened->geo.window);
  core->ttl_ms_ = ceil_ms(opened->geo.ttl_ns);
  core->claim_ms_ = ceil_ms(opened->geo.claim_timeout_ns);
  core->pid_ = me.pid;
  return core;
}

Result<void> DedupCore::remove(std::string_view bus, std::string_view name) {
  if (auto r = validate_name("bus", bus); !r) return r.error();
  if (auto r = validate_name("dedup table", name); !r) return r.error();
  auto r = shm::Segment::remove(dedup_segment_name(bus, name));
  if (!r && r.error().code() == ErrorCode::not_found) {
    return Error(ErrorCode::not_found,
                 "dedup table '" + std::string(name) + "' does not exist on bus '" + std::string(bus) + "'");
  }
  return r;
}

// --- the table -------------------------------------------------------------------

std::uint64_t DedupCore::home(std::uint64_t id) const noexcept { return mix(id) & mask_; }

bool DedupCore::claimer_dead(std::uint64_t word) const noexcept {
  const std::uint32_t pid = dedup_pid(word);
  if (pid == pid_) return false;  // this process: alive
  // The word holds no start time: a reused pid reads as alive, which only
  // delays a takeover to the deadline. Never the other way round.
  return shm::process_liveness({pid, 0}) == shm::Liveness::dead;
}

bool DedupCore::binding_stuck(std::uint64_t word, std::uint64_t now) const noexcept {
  return now >= dedup_time(word) + kBindStuckMs || claimer_dead(word);
}

DedupCore::Found DedupCore::find(std::uint64_t id, std::uint64_t h) const noexcept {
  for (std::uint32_t d = 0; d < window_; ++d) {
    const Snapshot s = snapshot(entry(h, d));
    // A never-used entry ends the search: an insert takes the first
    // reusable entry of the window and entries never become unused again.
    // (Only a shortcut: insert() re-checks the whole window.)
    if (s.word == 0) break;
    if (s.id != id || dedup_state(s.word) == kDedupFree) continue;
    return {true, (h + d) & mask_, s.word};
  }
  return {};
}

DedupCore::Wait DedupCore::wait_binding(DedupEntry& e, std::uint64_t word) noexcept {
  const std::uint64_t start = shm::monotonic_ns();
  std::uint64_t next_check = start;
  for (std::uint32_t i = 0;; ++i) {
    // SYNC(entry-word): acquire, as in snapshot().
    if (shm::load_acquire(e.state) != word) return Wait::changed;
    if (i < kSpins) {
      shm::cpu_relax();
      continue;
    }
    const std::uint64_t t = shm::monotonic_ns();
    if (t >= next_check) {
      next_check = t + kBindLivenessEveryNs;
      if (binding_stuck(word, t / kNsPerMs)) {
        // Its process is gone (or stuck for kBindStuckMs): free the entry.
        // Its confirm CAS can no longer succeed, nor its id CAS (see insert).
        std::uint64_t exp = word;
        if (shm::cas_acq_rel(e.state, exp, make_dedup_word(kDedupFree, 0, later(t / kNsPerMs, word)))) {
          header_->freed_bindings.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        }
        return Wait::changed;
      }
    }
    if (t - start >= kBindWaitNs) return Wait::timed_out;
    shm::yield_cpu();
  }
}

DedupCore::Pick DedupCore::pick_entry(std::uint64_t h, std::uint64_t now) const noexcept {
  // The first reusable entry of the window; failing that, one whose owner is
  // dead (a liveness check each: only when the window is full).
  for (std::uint32_t d = 0; d < window_; ++d) {
    const std::uint64_t w = shm::load_acquire(entry(h, d).state);
    const std::uint64_t st = dedup_state(w);
    if (st == kDedupFree || ((st == kDedupDone || st == kDedupClaimed) && dedup_time(w) <= now)) return {d, w};
  }
  for (std::uint32_t d = 0; d < window_; ++d) {
    const std::uint64_t w = shm::load_acquire(entry(h, d).state);
    const std::uint64_t st = dedup_state(w);
    if ((st == kDedupClaimed && claimer_dead(w)) || (st == kDedupBinding && binding_stuck(w, now))) return {d, w};
  }
  return {window_, 0};
}

void DedupCore::back_off(DedupEntry& e, std::uint64_t binding) noexcept {
  // Fails unless the entry is still ours.
  std::uint64_t mine = binding;
  (void)shm::cas_acq_rel(e.state, mine, make_dedup_word(kDedupFree, 0, later(now_ms(), binding)));
}

DedupCore::Insert DedupCore::bind(DedupEntry& e, std::uint64_t old, std::uint64_t binding, std::uint64_t id) noexcept {
  std::uint64_t exp = old;
  if (!shm::cas_acq_rel(e.state, exp, binding)) return Insert::retry;
  if (dedup_state(old) == kDedupBinding) {
    header_->freed_bindings.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  // A CAS, not a store: if we stalled here long enough to have the entry
  // freed and bound again by someone else, their id stays.
  std::uint64_t prev_id = shm::load_acquire(e.id);
  // SYNC(announce): seq_cst, then the fence: of two inserters of the same
  // id, at least one sees the other's id in check_window (Dekker).
  if (!e.id.compare_exchange_strong(prev_id, id, std::memory_order_seq_cst, std::memory_order_acquire)) {
    back_off(e, binding);
    return Insert::retry;
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return Insert::ok;
}

DedupCore::Insert DedupCore::check_window(std::uint64_t id, std::uint64_t h, std::uint32_t pick, DedupEntry& e,
                                          std::uint64_t binding) noexcept {
  for (std::uint32_t d = 0; d < window_; ++d) {
    if (d == pick) continue;
    DedupEntry& q = entry(h, d);
    for (;;) {
      const Snapshot s = snapshot(q);
      if (s.id != id || dedup_state(s.word) == kDedupFree) break;
      if (dedup_state(s.word) != kDedupBinding || d < pick) {
        // Recorded there (begin will handle it), or an earlier binder wins.
        back_off(e, binding);
        header_->insert_races.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        return Insert::retry;
      }
      // A later entry is being bound to this id: it backs off when it sees
      // us, or confirms if it did not (then we back off above).
      if (wait_binding(q, s.word) == Wait::timed_out) {
        back_off(e, binding);
        return Insert::contended;
      }
    }
  }
  return Insert::ok;
}

DedupCore::Insert DedupCore::insert(std::uint64_t id, std::uint64_t h, std::uint64_t final_state) noexcept {
  std::uint64_t now = now_ms();
  // 1. Pick an entry.
  const Pick p = pick_entry(h, now);
  if (p.distance == window_) return Insert::no_room;
  DedupEntry& e = entry(h, p.distance);
  // 2. Hold the entry in `binding`, then announce the id.
  const std::uint64_t binding = make_dedup_word(kDedupBinding, pid_, later(now, p.word));
  if (const Insert r = bind(e, p.word, binding, id); r != Insert::ok) return r;
  // 3. Nobody else may hold this id in the window.
  if (const Insert r = check_window(id, h, p.distance, e, binding); r != Insert::ok) return r;
  // 4. Confirm.
  now = now_ms();
  const std::uint64_t fin = final_state == kDedupClaimed
                                ? make_dedup_word(kDedupClaimed, pid_, later(deadline(now, claim_ms_), binding))
                                : make_dedup_word(kDedupDone, pid_, later(deadline(now, ttl_ms_), binding));
  std::uint64_t exp = binding;
  // SYNC(entry-word): release, publishes the id to snapshot()'s acquire.
  if (!shm::cas_acq_rel(e.state, exp, fin)) return Insert::retry;  // freed as stuck
  return Insert::ok;
}

DedupStatus DedupCore::begin(std::uint64_t id) noexcept {
  if (entries_ == nullptr) return DedupStatus::invalid;
  const std::uint64_t h = home(id);
  for (int round = 0; round < kMaxRounds; ++round) {
    if (round >= 8) shm::yield_cpu();
    const std::uint64_t now = now_ms();
    const Found f = find(id, h);
    if (!f.found) {
      switch (insert(id, h, kDedupClaimed)) {
        case Insert::ok: return DedupStatus::first;
        case Insert::no_room:
          header_->full.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
          return DedupStatus::full;
        case Insert::contended:
          header_->gave_up.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
          return DedupStatus::in_progress;
        case Insert::retry: continue;
      }
    }
    DedupEntry& e = entries_[f.index];
    std::uint64_t w = f.word;
    switch (dedup_state(w)) {
      case kDedupBinding:
        // Someone is inserting this id right now (or the id is the old one
        // of an entry being bound again): let it settle, then look again.
        if (wait_binding(e, w) == Wait::timed_out) {
          header_->gave_up.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
          return DedupStatus::in_progress;
        }
        continue;
      case kDedupDone: {
        // SYNC(done): the acquire in snapshot() pairs with complete()'s release.
        if (dedup_time(w) > now) return DedupStatus::done;
        // Expired: the record is forgotten; this caller claims the id anew.
        const std::uint64_t mine = make_dedup_word(kDedupClaimed, pid_, later(deadline(now, claim_ms_), w));
        if (shm::cas_acq_rel(e.state, w, mine)) return DedupStatus::first;
        continue;
      }
      case kDedupClaimed: {
        if (dedup_time(w) > now && !claimer_dead(w)) return DedupStatus::in_progress;
        // Past its deadline, or its process is gone: take it over.
        const std::uint64_t mine = make_dedup_word(kDedupClaimed, pid_, later(deadline(now, claim_ms_), w));
        if (shm::cas_acq_rel(e.state, w, mine)) {
          header_->takeovers.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
          return DedupStatus::first;
        }
        continue;
      }
      default: continue;  // free: find() skips those
    }
  }
  header_->gave_up.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return DedupStatus::in_progress;
}

void DedupCore::complete(std::uint64_t id) noexcept {
  if (entries_ == nullptr) return;
  const std::uint64_t h = home(id);
  for (int round = 0; round < kMaxRounds; ++round) {
    if (round >= 8) shm::yield_cpu();
    const std::uint64_t now = now_ms();
    const Found f = find(id, h);
    if (!f.found) {
      // Our claim's entry was reused (it expired, or we never claimed):
      // record `done` in a new entry.
      const Insert r = insert(id, h, kDedupDone);
      if (r == Insert::ok) return;
      if (r == Insert::no_room) {
        header_->full.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        break;
      }
      continue;
    }
    DedupEntry& e = entries_[f.index];
    std::uint64_t w = f.word;
    switch (dedup_state(w)) {
      case kDedupBinding:
        if (wait_binding(e, w) == Wait::timed_out) round = kMaxRounds;  // give up below
        continue;
      case kDedupDone:
        if (dedup_time(w) > now) return;  // already done and remembered
        [[fallthrough]];                  // expired: it was done again, remember it again
      case kDedupClaimed: {
        // Whoever holds the claim, the work is done: a later begin() must
        // say so. SYNC(done): release, pairs with the acquire in begin().
        const std::uint64_t done = make_dedup_word(kDedupDone, pid_, later(deadline(now, ttl_ms_), w));
        if (shm::cas_acq_rel(e.state, w, done)) return;
        continue;
      }
      default: continue;
    }
  }
  header_->lost_completes.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
}

void DedupCore::abandon(std::uint64_t id) noexcept {
  if (entries_ == nullptr) return;
  const std::uint64_t h = home(id);
  for (int round = 0; round < kMaxRounds; ++round) {
    const Found f = find(id, h);
    if (!f.found) return;
    DedupEntry& e = entries_[f.index];
    std::uint64_t w = f.word;
    if (dedup_state(w) == kDedupBinding) {
      if (wait_binding(e, w) == Wait::timed_out) return;
      continue;
    }
    // Only a claim of this process is released; a claim taken over by
    // another worker, or a `done`, stays.
    if (dedup_state(w) != kDedupClaimed || dedup_pid(w) != pid_) return;
    if (shm::cas_acq_rel(e.state, w, make_dedup_word(kDedupFree, 0, later(now_ms(), w)))) return;
  }
}

bool DedupCore::seen(std::uint64_t id) const noexcept {
  if (entries_ == nullptr) return false;
  const Found f = find(id, home(id));
  return f.found && dedup_state(f.word) == kDedupDone && dedup_time(f.word) > now_ms();
}

DedupStats DedupCore::stats() const noexcept {
  DedupStats s;
  if (entries_ == nullptr) return s;
  s.capacity = static_cast<std::uint32_t>(mask_ + 1);
  s.probe_window = window_;
  s.ttl_ns = opts_.ttl_ns;
  s.claim_timeout_ns = opts_.claim_timeout_ns;
  const std::uint64_t now = now_ms();
  for (std::uint64_t i = 0; i <= mask_; ++i) {
    const std::uint64_t w = shm::load_acquire(entries_[i].state);
    if (dedup_time(w) <= now) continue;
    if (dedup_state(w) == kDedupDone) ++s.done;
    if (dedup_state(w) == kDedupClaimed) ++s.claimed;
  }
  // relaxed: statistics.
  s.takeovers = shm::load_relaxed(header_->takeovers);
  s.full = shm::load_relaxed(header_->full);
  s.lost_completes = shm::load_relaxed(header_->lost_completes);
  s.gave_up = shm::load_relaxed(header_->gave_up);
  s.freed_bindings = shm::load_relaxed(header_->freed_bindings);
  s.insert_races = shm::load_relaxed(header_->insert_races);
  return s;
}

}  // namespace shmbus::bus
