// `shmbus create`, `rm`, `gc` and `dlq list|show|redrive`: commands that
// change a bus (except dlq list/show, which only peek). Each says what it
// did; --dry-run shows what gc would do without doing it.
#include <algorithm>
#include <iostream>
#include <memory>
#include <set>

#include "bus/group/consumer_core.hpp"

#include "probe.hpp"

namespace shmbus::probe {

namespace {

struct CreateArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  ChannelOptions opts;
  std::string policy = "block";
  std::string timestamps = "tsc";
  std::string mode = "0600";
  double unblock_timeout_s = 2.0;
  double eviction_timeout_s = 0;
};

int cmd_create(CreateArgs a) {
  const auto policy = parse_policy(a.policy);
  if (!policy) {
    std::cerr << "shmbus create: bad --policy '" << a.policy << "': block, drop_oldest or reject\n";
    return kExitError;
  }
  a.opts.policy = *policy;
  const auto timestamps = parse_timestamps(a.timestamps);
  if (!timestamps) {
    std::cerr << "shmbus create: bad --timestamps '" << a.timestamps << "': tsc, realtime or none\n";
    return kExitError;
  }
  a.opts.timestamps = *timestamps;
  try {
    std::size_t used = 0;
    const unsigned long mode = std::stoul(a.mode, &used, 8);
    if (used != a.mode.size() || mode > 0777) throw std::invalid_argument("mode");
    a.opts.mode = static_cast<std::uint32_t>(mode);
  } catch (const std::exception&) {
    std::cerr << "shmbus create: bad --mode '" << a.mode << "': octal permission bits in 0..0777, such as 0600\n";
    return kExitError;
  }
  a.opts.unblock_timeout_ns = seconds_to_ns(a.unblock_timeout_s);
  a.opts.eviction_timeout_ns = seconds_to_ns(a.eviction_timeout_s);
  auto ch = Channel::create(a.channel, a.opts, a.bus);
  if (!ch) {
    std::cerr << "shmbus create: channel '" << a.channel << "' on bus '" << a.bus
              << "': " << to_string(ch.error().code()) << ": " << ch.error().message() << '\n';
    return kExitError;
  }
  const auto o = ch->options();
  std::cout << "created channel " << a.channel << " on bus " << a.bus << ": policy " << to_string(o.policy)
            << ", capacity " << o.capacity << ", slot " << o.slot_size << " (max payload " << ch->max_payload()
            << "), timestamps " << to_string(o.timestamps) << ", mode " << a.mode << '\n';
  return kExitOk;
}

struct RmArgs {
  std::string bus{kDefaultBus};
  std::vector<std::string> channels;
  bool force = false;
  bool keep_dlq = false;   // leave the DLQ channels of the channel's groups
  std::string subscriber;  // forget this durable subscriber instead
  std::string group;       // remove this group instead
};

// rm CHANNEL --subscriber NAME | --group NAME: forgets a durable cursor or a
// group (refused while a live process holds it).
int rm_member(const RmArgs& a) {
  if (a.channels.size() != 1 || (!a.subscriber.empty() && !a.group.empty())) {
    std::cerr << "shmbus rm: --subscriber and --group take one CHANNEL and one of them\n";
    return kExitError;
  }
  int rc = kExitOk;
  auto ch = open_participant(a.channels.front(), a.bus, rc);
  if (!ch) return rc;
  const bool sub = !a.subscriber.empty();
  auto r = sub ? ch->remove_subscriber(a.subscriber) : ch->remove_group(a.group);
  const std::string what = sub ? "durable subscriber '" + a.subscriber + "'" : "group '" + a.group + "'";
  if (!r) {
    std::cerr << "shmbus rm: " << what << " of channel '" << a.channels.front() << "': " << to_string(r.error().code())
              << ": " << r.error().message() << '\n';
    return r.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  std::cout << "removed " << what << " from channel " << a.channels.front() << '\n';
  return kExitOk;
}

// The DLQ channels of a channel's groups that exist, each once.
std::vector<std::string> existing_dlqs(const Snapshot& snap) {
  std::vector<std::string> out;
  if (!snap.stats) return out;
  for (std::size_t i = 0; i < snap.stats->groups.size() && i < snap.dlqs.size(); ++i) {
    const std::string& d = snap.stats->groups[i].dlq;
    if (snap.dlqs[i].exists && !d.empty() && d != snap.name && std::find(out.begin(), out.end(), d) == out.end()) {
      out.push_back(d);
    }
  }
  return out;
}

// A channel of the bus, other than `name` and those already removed, with a
// group whose DLQ is `dlq`: "group G of channel C", or empty.
std::string other_dlq_user(const std::vector<Snapshot>& bus_snaps, const std::string& name,
                           const std::set<std::string>& removed, const std::string& dlq) {
  for (const auto& o : bus_snaps) {
    if (!o.stats || o.name == name || removed.count(o.name) != 0) continue;
    for (const auto& g : o.stats->groups)
      if (g.dlq == dlq) return "group " + g.name + " of channel " + o.name;
  }
  return {};
}

// Whether any process has the channel open (an open handle holds a shared
// lock on it, table entry or not). A channel that cannot be checked counts
// as in use: nothing is removed on a guess.
bool in_use_by_any(const std::string& name, const std::string& bus) {
  auto r = Channel::in_use(name, bus);
  return !r ? r.error().code() != ErrorCode::not_found : r.value();
}

enum class GcRemoval { removed, kept, failed };

// gc's removal: only if no process has the channel open (decided and done
// in one step by remove_if_unused); an error is printed.
GcRemoval gc_remove(const std::string& name, const std::string& bus) {
  auto r = Channel::remove_if_unused(name, bus);
  if (!r) {
    std::cerr << "shmbus gc: " << name << ": " << r.error().message() << '\n';
    return GcRemoval::failed;
  }
  return r.value() ? GcRemoval::removed : GcRemoval::kept;
}

// rm of a name that is not a channel (a FIFO, a link...): nobody can be
// attached to it, and it is never opened (an open of a FIFO would block).
int rm_not_a_segment(const std::string& name, const std::string& bus, const std::string& why,
                     std::set<std::string>& removed) {
  if (auto r = Channel::remove(name, bus); !r) {
    std::cerr << "shmbus rm: " << name << ": " << r.error().message() << '\n';
    return kExitError;
  }
  std::cout << "removed " << name << " from bus " << bus << ": " << why << '\n';
  removed.insert(name);
  return kExitOk;
}

// Whether (without --force) rm refuses a channel that live processes use;
// says why.
bool refuse_in_use(const std::string& name, const std::string& bus, const ChannelStats& s) {
  const Owners o = count_owners(s);
  if (o.alive != 0) {
    std::cerr << "shmbus rm: channel '" << name << "' has " << o.alive
              << " entries owned by live processes; --force removes it anyway (their calls then "
                 "return 'removed')\n";
    return true;
  }
  if (in_use_by_any(name, bus)) {
    std::cerr << "shmbus rm: channel '" << name
              << "' is open in a live process (without a table entry yet); --force removes it anyway "
                 "(their calls then return 'removed')\n";
    return true;
  }
  return false;
}

enum class DlqPlan { go, refused, failed };

// The DLQs that go with channel `snap`: those of its groups, unless
// --keep-dlq, or another channel's group uses the same DLQ, or (without
// --force) a live process uses it (then the channel is refused). The bus is
// read once, into `bus_snaps`, when a DLQ is first looked at.
DlqPlan plan_dlqs(const RmArgs& a, const Snapshot& snap, const std::set<std::string>& removed,
                  std::optional<std::vector<Snapshot>>& bus_snaps, std::vector<std::string>& dlqs) {
  for (const auto& dlq : a.keep_dlq ? std::vector<std::string>{} : existing_dlqs(snap)) {
    if (!bus_snaps) {
      bus_snaps.emplace();
      std::string error;
      if (!take_all(a.bus, *bus_snaps, error)) {
        std::cerr << "shmbus rm: " << error << '\n';
        return DlqPlan::failed;
      }
    }
    if (const std::string user = other_dlq_user(*bus_snaps, snap.name, removed, dlq); !user.empty()) {
      std::cout << "kept DLQ channel " << dlq << " of channel " << snap.name << ": it is also the DLQ of " << user
                << '\n';
      continue;
    }
    if (!a.force) {
      const Snapshot d = take_snapshot(dlq, a.bus);
      const std::uint32_t alive = d.stats ? count_owners(*d.stats).alive : 0;
      if (alive != 0 || in_use_by_any(dlq, a.bus)) {
        std::cerr << "shmbus rm: channel '" << snap.name << "': its DLQ channel '" << dlq << "' has " << alive
                  << " entries owned by live processes; --keep-dlq keeps the DLQ, --force removes both\n";
        return DlqPlan::refused;
      }
    }
    dlqs.push_back(dlq);
  }
  return DlqPlan::go;
}

// Removes channel `name`, then the DLQs planned to go with it.
int rm_channel(const std::string& name, const std::string& bus, const std::vector<std::string>& dlqs,
               std::set<std::string>& removed) {
  auto r = Channel::remove(name, bus);
  if (!r) {
    std::cerr << "shmbus rm: channel '" << name << "': " << r.error().message() << '\n';
    return kExitError;
  }
  removed.insert(name);
  std::cout << "removed channel " << name << " from bus " << bus << '\n';
  int worst = kExitOk;
  for (const auto& dlq : dlqs) {
    if (removed.count(dlq) != 0) continue;
    if (auto rd = Channel::remove(dlq, bus); !rd) {
      if (rd.error().code() == ErrorCode::not_found) continue;  // gone meanwhile
      std::cerr << "shmbus rm: DLQ channel '" << dlq << "' of channel '" << name << "': " << rd.error().message()
                << '\n';
      worst = kExitError;
      continue;
    }
    removed.insert(dlq);
    std::cout << "removed DLQ channel " << dlq << " of channel " << name << " (--keep-dlq keeps it)\n";
  }
  return worst;
}

int cmd_rm(const RmArgs& a) {
  if (!a.subscriber.empty() || !a.group.empty()) return rm_member(a);
  int worst = kExitOk;
  std::set<std::string> removed;                   // by this command, DLQs included
  std::optional<std::vector<Snapshot>> bus_snaps;  // read once, if a DLQ is to go
  for (const auto& name : a.channels) {
    if (removed.count(name) != 0) continue;  // went as the DLQ of a channel named before it
    if (auto why = not_a_segment(name, a.bus)) {
      worst = std::max(worst, rm_not_a_segment(name, a.bus, *why, removed));
      continue;
    }
    Snapshot snap = take_snapshot(name, a.bus);
    if (!snap.stats && snap.error_code == "not_found") {
      std::cerr << "shmbus rm: no channel '" << name << "' on bus '" << a.bus << "'\n";
      worst = std::max(worst, kExitNotFound);
      continue;
    }
    if (snap.stats && !a.force && refuse_in_use(name, a.bus, *snap.stats)) {
      worst = std::max(worst, kExitError);
      continue;
    }
    std::vector<std::string> dlqs;
    const DlqPlan plan = plan_dlqs(a, snap, removed, bus_snaps, dlqs);
    if (plan == DlqPlan::failed) return std::max(worst, kExitError);
    if (plan == DlqPlan::refused) {
      worst = std::max(worst, kExitError);
      continue;
    }
    worst = std::max(worst, rm_channel(name, a.bus, dlqs, removed));
  }
  return worst;
}

struct GcArgs {
  std::string bus{kDefaultBus};
  bool dry_run = false;
  bool keep_unused = false;
  double min_age_s = 60;
};

// Entries owned by a process that is gone.
std::uint32_t dead_entries(const ChannelStats& s) {
  const Owners o = count_owners(s);
  return o.total - o.alive;
}

// A channel nobody uses: no entry owned by a live process, no durable
// subscriber and no group (their cursors are state worth keeping), and
// created at least min_age ago (so a channel just made is not taken away
// before its first user attaches).
bool unused(const ChannelStats& s, double min_age_s) {
  if (count_owners(s).alive != 0) return false;
  for (const auto& sub : s.subscribers)
    if (sub.durable) return false;
  if (!s.groups.empty()) return false;
  const std::uint64_t now = realtime_now_ns();
  return s.created_realtime_ns != 0 && now > s.created_realtime_ns &&
         static_cast<double>(now - s.created_realtime_ns) / 1e9 >= min_age_s;
}

// ---- gc: orphaned DLQs ---------------------------------------------------
//
// A DLQ channel is kept alive by its retainer, the durable subscriber
// bus::kDlqRetainer ("dlq") that holds its dead letters, so unused() never
// takes it. Once its source channel is gone nothing can redrive those
// letters, and the DLQ would stay for ever: collect_orphaned_dlqs removes it.

// The source channels whose dead letters `dlq` holds (each record names its
// source), or, when it holds none, the <source> of a "<source>-dlq" name.
// Nothing if a held message is not a dead letter or no source can be told:
// then it is not (only) a DLQ and stays.
std::optional<std::set<std::string>> dlq_sources(const std::string& dlq, const std::string& bus) {
  auto ch = Channel::open_read_only(dlq, bus);
  if (!ch) return std::nullopt;
  std::set<std::string> sources;
  std::vector<std::byte> buf(ch->max_payload());
  const std::uint64_t head = ch->head();
  for (std::uint64_t seq = ch->oldest(); seq < head; ++seq) {
    Message m;
    if (ch->peek(seq, m, buf) != PollStatus::ok) continue;  // overwritten, abandoned or in flight
    const auto letter = decode_dead_letter(m);
    if (!letter) return std::nullopt;
    sources.insert(letter->source);
  }
  constexpr std::string_view kSuffix = "-dlq";
  if (sources.empty() && dlq.size() > kSuffix.size() &&
      std::string_view(dlq).substr(dlq.size() - kSuffix.size()) == kSuffix) {
    sources.insert(dlq.substr(0, dlq.size() - kSuffix.size()));
  }
  if (sources.empty()) return std::nullopt;
  return sources;
}

// Why `snap` is an orphaned DLQ ("source orders is gone"), or empty if it is
// not: it has the retainer and no other durable subscriber, no group and no
// live user; it is at least min_age old; no group of another channel on the
// bus names it as its DLQ; and none of its sources exists any more.
// `gone`: channels removed by this run (or that a dry run would remove).
std::string orphaned_dlq(const Snapshot& snap, const std::vector<Snapshot>& snaps, const std::set<std::string>& gone,
                         const GcArgs& a) {
  if (!snap.stats || gone.count(snap.name) != 0) return {};
  const ChannelStats& s = *snap.stats;
  bool retained = false;
  for (const auto& sub : s.subscribers) {
    if (!sub.durable) continue;
    if (sub.name != bus::kDlqRetainer) return {};
    retained = true;
  }
  if (!retained || !s.groups.empty() || count_owners(s).alive != 0) return {};
  const std::uint64_t now = realtime_now_ns();
  if (s.created_realtime_ns == 0 || now < s.created_realtime_ns ||
      static_cast<double>(now - s.created_realtime_ns) / 1e9 < a.min_age_s) {
    return {};
  }
  for (const auto& o : snaps) {
    if (gone.count(o.name) != 0) continue;
    // An unreadable channel may have a group using it; a name that is not a
    // segment at all (a FIFO, a link) has none.
    if (!o.stats) {
      if (not_a_segment(o.name, a.bus)) continue;
      return {};
    }
    for (const auto& g : o.stats->groups)
      if (g.dlq == snap.name) return {};
  }
  const auto sources = dlq_sources(snap.name, a.bus);
  if (!sources) return {};
  std::string names;
  for (const auto& src : *sources) {
    for (const auto& o : snaps)
      if (o.name == src && gone.count(src) == 0) return {};
    names += (names.empty() ? "" : ", ") + src;
  }
  return "source " + names + (sources->size() == 1 ? " is" : " are") + " gone";
}

// Removes (or, with --dry-run, names) every orphaned DLQ of the bus. Returns
// false if one could not be removed.
bool collect_orphaned_dlqs(const GcArgs& a, const std::vector<Snapshot>& snaps, std::set<std::string>& gone,
                           std::uint32_t& removed, bool& acted) {
  bool ok = true;
  for (const auto& snap : snaps) {
    const std::string why = orphaned_dlq(snap, snaps, gone, a);
    if (why.empty()) continue;
    acted = true;
    std::uint64_t waiting = 0;
    for (const auto& sub : snap.stats->subscribers)
      if (sub.durable) waiting = sub.lag;
    if (a.dry_run ? in_use_by_any(snap.name, a.bus) : false) {
      std::cout << snap.name << ": would keep orphaned DLQ (open in a live process)\n";
      continue;
    }
    std::cout << snap.name << ": " << (a.dry_run ? "would " : "") << "remove orphaned DLQ (" << why << "; " << waiting
              << " dead letter(s) waiting)\n";
    if (a.dry_run) {
      gone.insert(snap.name);
      continue;
    }
    const GcRemoval r = gc_remove(snap.name, a.bus);
    if (r == GcRemoval::failed) ok = false;
    if (r == GcRemoval::kept) std::cout << snap.name << ": kept orphaned DLQ (open in a live process)\n";
    if (r != GcRemoval::removed) continue;
    gone.insert(snap.name);
    ++removed;
  }
  return ok;
}

// Messages due for their group's DLQ (out of deliveries, nobody working on
// them): moved by gc, since with no consumer alive nobody else would.
std::uint64_t dlq_due(const ChannelStats& s) {
  std::uint64_t n = 0;
  for (const auto& g : s.groups) n += g.dlq_due;
  return n;
}

// gc's DLQ pass over one channel: moves what is due for the DLQ and says how
// many. Returns an exit code.
int move_due_dead_letters(const std::string& name, const GcArgs& a, std::uint64_t due, std::uint64_t& moved) {
  if (a.dry_run) {
    std::cout << name << ": would move " << due << " message(s) due for the DLQ to their DLQ\n";
    return kExitOk;
  }
  auto ch = Channel::open(name, a.bus, 200'000'000ULL, cli_trust());
  auto n = ch ? ch->dead_letter_due() : Result<std::uint64_t>(ch.error());
  if (!n) {
    std::cerr << "shmbus gc: " << name << ": moving dead letters: " << n.error().message() << '\n';
    return kExitError;
  }
  moved += n.value();
  std::cout << name << ": moved " << n.value() << " message(s) due for the DLQ to their DLQ";
  if (n.value() < due) std::cout << " (" << due - n.value() << " not moved: taken meanwhile, or the DLQ is full)";
  std::cout << '\n';
  return kExitOk;
}

int cmd_gc(const GcArgs& a) {
  std::vector<Snapshot> snaps;
  std::string error;
  if (!take_all(a.bus, snaps, error)) {
    std::cerr << "shmbus gc: " << error << '\n';
    return kExitError;
  }
  int rc = kExitOk;
  std::uint32_t reclaimed = 0, removed = 0;
  std::uint64_t moved_dead_letters = 0;
  bool acted = false;
  std::set<std::string> gone;  // removed (or, dry, to be removed) by this run
  for (const auto& snap : snaps) {
    if (!snap.stats) {
      std::cerr << "shmbus gc: skipping " << snap.name << ": " << snap.error_code << ": " << snap.error_message << '\n';
      rc = kExitError;
      continue;
    }
    const ChannelStats& s = *snap.stats;
    if (const std::uint64_t due = dlq_due(s); due != 0) {
      acted = true;
      rc = std::max(rc, move_due_dead_letters(snap.name, a, due, moved_dead_letters));
    }
    const std::uint32_t dead = dead_entries(s);
    acted = acted || dead != 0 || (!a.keep_unused && unused(s, a.min_age_s));
    if (!a.keep_unused && unused(s, a.min_age_s)) {
      // No table entry is live, but a process may have the channel open
      // without one (a publisher not made yet, a tail -f): never remove it
      // then. remove_if_unused decides and removes in one step.
      if (a.dry_run) {
        if (in_use_by_any(snap.name, a.bus)) {
          std::cout << snap.name << ": would keep (open in a live process)\n";
          continue;
        }
        std::cout << snap.name << ": would remove (no live user, no durable subscriber or group)\n";
        gone.insert(snap.name);
        continue;
      }
      const GcRemoval r = gc_remove(snap.name, a.bus);
      if (r == GcRemoval::failed) rc = kExitError;
      if (r == GcRemoval::kept) std::cout << snap.name << ": kept (open in a live process)\n";
      if (r != GcRemoval::removed) continue;
      std::cout << snap.name << ": remove (no live user, no durable subscriber or group)\n";
      ++removed;
      gone.insert(snap.name);
      continue;
    }
    if (dead == 0) continue;
    if (a.dry_run) {
      std::cout << snap.name << ": would reclaim " << dead << " entr" << (dead == 1 ? "y" : "ies")
                << " of dead processes\n";
      continue;
    }
    auto ch = Channel::open(snap.name, a.bus, 200'000'000ULL, cli_trust());
    if (!ch) {
      std::cerr << "shmbus gc: " << snap.name << ": " << ch.error().message() << '\n';
      rc = kExitError;
      continue;
    }
    const std::uint32_t n = ch->reclaim_dead();
    reclaimed += n;
    std::cout << snap.name << ": reclaimed " << n << " entr" << (n == 1 ? "y" : "ies")
              << " of dead processes (leases of dead consumers are due again)\n";
  }
  if (!a.keep_unused && !collect_orphaned_dlqs(a, snaps, gone, removed, acted)) rc = kExitError;
  if (!a.dry_run) {
    std::cout << "gc: reclaimed " << reclaimed << " entr" << (reclaimed == 1 ? "y" : "ies") << ", removed " << removed
              << " channel(s), moved " << moved_dead_letters << " dead letter(s) to DLQs\n";
  } else if (!acted) {
    std::cout << "gc: nothing to do\n";
  }
  return rc;
}

// ---- dlq --------------------------------------------------------------

struct DlqArgs {
  std::string bus{kDefaultBus};
  std::string group;
  std::string channel;  // source channel; found by searching when empty
  std::uint64_t sequence = 0;
  std::uint64_t max = UINT64_MAX;
  bool json = false;
  std::string format = "text";
  bool all_groups = false;
};

struct GroupRef {
  std::string channel;
  std::string dlq;
};

// Finds the channel holding `group` (or checks --channel), and its DLQ name.
std::optional<GroupRef> find_group(const DlqArgs& a, int& rc) {
  std::vector<Snapshot> snaps;
  if (!a.channel.empty()) {
    snaps.push_back(take_snapshot(a.channel, a.bus));
    if (!snaps.front().stats) {
      std::cerr << "shmbus dlq: channel '" << a.channel << "': " << snaps.front().error_code << ": "
                << snaps.front().error_message << '\n';
      rc = snaps.front().error_code == "not_found" ? kExitNotFound : kExitError;
      return std::nullopt;
    }
  } else {
    std::string error;
    if (!take_all(a.bus, snaps, error)) {
      std::cerr << "shmbus dlq: " << error << '\n';
      rc = kExitError;
      return std::nullopt;
    }
  }
  std::vector<GroupRef> found;
  for (const auto& s : snaps) {
    if (!s.stats) continue;
    for (const auto& g : s.stats->groups)
      if (g.name == a.group) found.push_back({s.name, g.dlq});
  }
  if (found.empty()) {
    std::cerr << "shmbus dlq: no group '" << a.group << "' on "
              << (a.channel.empty() ? "bus '" + a.bus + "'" : "channel '" + a.channel + "'") << '\n';
    rc = kExitNotFound;
    return std::nullopt;
  }
  if (found.size() > 1) {
    std::cerr << "shmbus dlq: group '" << a.group << "' exists on several channels:";
    for (const auto& f : found) std::cerr << ' ' << f.channel;
    std::cerr << "; name one with --channel\n";
    rc = kExitError;
    return std::nullopt;
  }
  return found.front();
}

// Calls f(letter) for each dead letter waiting in the DLQ (from its
// retainer's cursor to the head) that belongs to the group (or every group
// with all_groups). Returns false if the DLQ could not be read.
template <typename F>
bool for_each_letter(const DlqArgs& a, const GroupRef& ref, int& rc, F&& f) {
  auto dlq = open_observer(ref.dlq, a.bus, rc);
  if (!dlq) return false;
  const ChannelStats s = dlq->stats();
  std::uint64_t from = s.head;
  for (const auto& sub : s.subscribers)
    if (sub.durable) from = std::min(from, sub.cursor);
  from = std::max(from, dlq->oldest());
  std::vector<std::byte> buf(dlq->max_payload());
  for (std::uint64_t seq = from; seq < s.head; ++seq) {
    Message m;
    if (dlq->peek(seq, m, buf) != PollStatus::ok) continue;
    const auto letter = decode_dead_letter(m);
    if (!letter) continue;
    if (!a.all_groups && letter->group != a.group) continue;
    f(*letter, m);
  }
  return true;
}

int cmd_dlq_list(const DlqArgs& a) {
  int rc = kExitOk;
  const auto ref = find_group(a, rc);
  if (!ref) return rc;
  nlohmann::json items = nlohmann::json::array();
  Table t({"DLQ_SEQ", "SOURCE", "ORIGINAL_SEQ", "GROUP", "ATTEMPTS", "REASON", "AGE", "LEN", "PAYLOAD"});
  const std::uint64_t now = realtime_now_ns();
  const bool ok = for_each_letter(a, *ref, rc, [&](const DeadLetter& d, const Message&) {
    const std::uint64_t age = now > d.original_timestamp_ns ? now - d.original_timestamp_ns : 0;
    if (a.json) {
      items.push_back({{"dlq_sequence", d.dlq_sequence},
                       {"source", d.source},
                       {"original_sequence", d.original_sequence},
                       {"original_timestamp_ns", d.original_timestamp_ns},
                       {"group", d.group},
                       {"attempts", d.attempts},
                       {"reason", std::string(to_string(d.reason))},
                       {"key", d.key},
                       {"id", d.id},
                       {"length", d.payload.size()}});
      return;
    }
    std::string preview = escape_text(d.payload.first(std::min<std::size_t>(d.payload.size(), 40)));
    if (d.payload.size() > 40) preview += "...";
    t.add({num(d.dlq_sequence), d.source, num(d.original_sequence), d.group, num(d.attempts),
           std::string(to_string(d.reason)), duration(age), num(d.payload.size()), preview});
  });
  if (!ok) return rc;
  if (a.json) {
    std::cout << nlohmann::json{{"schema_version", 1},
                                {"group", a.group},
                                {"channel", ref->channel},
                                {"dlq", ref->dlq},
                                {"dead_letters", items}}
                     .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
              << '\n';
  } else {
    std::cout << "DLQ " << ref->dlq << " of group " << a.group << " on channel " << ref->channel << '\n';
    t.print(std::cout);
  }
  return kExitOk;
}

int cmd_dlq_show(const DlqArgs& a) {
  const auto fmt = parse_format(a.format);
  if (!fmt) {
    std::cerr << "shmbus dlq show: bad --format '" << a.format << "': text, hex or json\n";
    return kExitError;
  }
  int rc = kExitOk;
  const auto ref = find_group(a, rc);
  if (!ref) return rc;
  auto dlq = open_observer(ref->dlq, a.bus, rc);
  if (!dlq) return rc;
  std::vector<std::byte> buf(dlq->max_payload());
  Message m;
  const PollStatus st = dlq->peek(a.sequence, m, buf);
  if (st != PollStatus::ok) {
    std::cerr << "shmbus dlq show: DLQ " << ref->dlq << " has no readable message #" << a.sequence << " ("
              << to_string(st) << ")\n";
    return kExitNotFound;
  }
  const auto d = decode_dead_letter(m);
  if (!d) {
    std::cerr << "shmbus dlq show: #" << a.sequence << " in " << ref->dlq << " is not a dead letter\n";
    return kExitError;
  }
  std::cout << "dead letter #" << d->dlq_sequence << " in " << ref->dlq << "\n  source " << d->source << " #"
            << d->original_sequence << ", published " << iso_time(d->original_timestamp_ns) << "\n  group " << d->group
            << ", attempts " << d->attempts << ", reason " << to_string(d->reason) << "\n";
  Message original = m;
  original.sequence = d->original_sequence;
  original.timestamp_ns = d->original_timestamp_ns;
  original.attempt = d->attempts;
  original.payload = d->payload;
  print_message(std::cout, original, *fmt);
  return kExitOk;
}

int cmd_dlq_redrive(const DlqArgs& a) {
  int rc = kExitOk;
  const auto ref = find_group(a, rc);
  if (!ref) return rc;
  auto ch = open_participant(ref->channel, a.bus, rc);
  if (!ch) return rc;
  auto n = ch->redrive_dlq(ref->dlq, a.max);
  if (!n) {
    std::cerr << "shmbus dlq redrive: " << to_string(n.error().code()) << ": " << n.error().message() << '\n';
    return kExitError;
  }
  std::cout << "redrove " << n.value() << " dead letter(s) from " << ref->dlq << " to " << ref->channel << '\n';
  return kExitOk;
}

void add_dlq_target(CLI::App* cmd, DlqArgs& a) {
  cmd->add_option("GROUP", a.group, "Consumer group")->required();
  cmd->add_option("--channel", a.channel, "The group's channel (default: search the bus)");
  cmd->add_option("--bus", a.bus, "Bus name")->capture_default_str();
}

// The subcommands after `create`, defined below add_admin_commands.
void add_rm_command(CLI::App& app, Action& action);
void add_gc_command(CLI::App& app, Action& action);
void add_dlq_commands(CLI::App& app, Action& action);

}  // namespace

void add_admin_commands(CLI::App& app, Action& action) {
  auto c = std::make_shared<CreateArgs>();
  auto* create = app.add_subcommand("create", "Create a channel");
  create->add_option("CHANNEL", c->channel, "Channel name")->required();
  create->add_option("--bus", c->bus, "Bus name")->capture_default_str();
  // The ranges are ChannelOptions' (include/shmbus/types.hpp); the library
  // checks the rest (a power of two, a multiple of 64) and names the field.
  create->add_option("--capacity", c->opts.capacity, "Slots (a power of two)")
      ->capture_default_str()
      ->check(integer_in(2, 1U << 30));
  create->add_option("--slot-size", c->opts.slot_size, "Bytes per slot, 56-byte header included (multiple of 64)")
      ->capture_default_str()
      ->check(integer_in(64, 16U << 20));
  create->add_option("--policy", c->policy, "block, drop_oldest or reject")->capture_default_str();
  create
      ->add_option("--timestamps", c->timestamps,
                   "What publishers stamp: tsc (the CPU counter, read back as realtime), realtime or none")
      ->capture_default_str();
  create->add_option("--max-subscribers", c->opts.max_subscribers, "Subscriber table entries")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  create->add_option("--max-publishers", c->opts.max_publishers, "Publisher table entries")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  create->add_option("--max-groups", c->opts.max_groups, "Consumer groups")
      ->capture_default_str()
      ->check(integer_in(0, 256));
  create->add_option("--max-consumers", c->opts.max_consumers, "Consumers per group")
      ->capture_default_str()
      ->check(integer_in(1, bus::kMaxConsumers));
  create->add_option("--mode", c->mode, "Permission bits (octal)")->capture_default_str();
  create->add_option("--unblock-timeout", c->unblock_timeout_s, "Seconds before a stalled claim is abandoned")
      ->capture_default_str()
      ->check(seconds_in(0.000001, 3600));
  create
      ->add_option("--eviction-timeout", c->eviction_timeout_s,
                   "block policy: evict a subscriber a full ring behind for this long (0: never)")
      ->capture_default_str()
      ->check(seconds_in(0, 86400));
  create->callback([c, &action] { action = [c] { return cmd_create(*c); }; });

  add_rm_command(app, action);
  add_gc_command(app, action);
  add_dlq_commands(app, action);
}

namespace {

void add_rm_command(CLI::App& app, Action& action) {
  auto r = std::make_shared<RmArgs>();
  auto* rm = app.add_subcommand("rm", "Remove channels (refuses while live processes use them, unless --force)");
  rm->add_option("CHANNEL", r->channels, "Channel names")->required();
  rm->add_option("--bus", r->bus, "Bus name")->capture_default_str();
  rm->add_flag("--force", r->force, "Remove even if live processes use it (they keep their mapping)");
  rm->add_flag("--keep-dlq", r->keep_dlq,
               "Keep the DLQ channels of the channel's groups (by default they are removed with it, "
               "unless another channel's group uses them)");
  rm->add_option("--subscriber", r->subscriber,
                 "Instead: forget this durable subscriber's cursor (refused while its process lives)");
  rm->add_option("--group", r->group, "Instead: remove this consumer group (refused while a member lives)");
  rm->callback([r, &action] { action = [r] { return cmd_rm(*r); }; });
}

void add_gc_command(CLI::App& app, Action& action) {
  auto g = std::make_shared<GcArgs>();
  auto* gc = app.add_subcommand(
      "gc",
      "Reclaim table entries and leases of dead processes; remove channels nobody uses and DLQs whose "
      "source channel is gone");
  gc->add_option("--bus", g->bus, "Bus name")->capture_default_str();
  gc->add_flag("--dry-run", g->dry_run, "Only say what would be done");
  gc->add_flag("--keep-unused", g->keep_unused, "Do not remove unused channels nor orphaned DLQs");
  gc->add_option("--min-age", g->min_age_s,
                 "Only remove unused channels and orphaned DLQs created at least this many seconds ago")
      ->capture_default_str()
      ->check(seconds_in(0, 10 * 365.0 * 86400));
  gc->callback([g, &action] { action = [g] { return cmd_gc(*g); }; });
}

void add_dlq_commands(CLI::App& app, Action& action) {
  auto d = std::make_shared<DlqArgs>();
  auto* dlq = app.add_subcommand("dlq", "Inspect and redrive a group's dead letters");
  dlq->require_subcommand(1);
  auto* list = dlq->add_subcommand("list", "List the dead letters waiting in a group's DLQ");
  add_dlq_target(list, *d);
  list->add_flag("--json", d->json, "Print JSON");
  list->add_flag("--all-groups", d->all_groups, "Include dead letters of other groups sharing the DLQ");
  list->callback([d, &action] { action = [d] { return cmd_dlq_list(*d); }; });
  auto* show = dlq->add_subcommand("show", "Show one dead letter with its payload");
  add_dlq_target(show, *d);
  show->add_option("DLQ_SEQ", d->sequence, "Its sequence in the DLQ (see dlq list)")
      ->required()
      ->check(integer_in(0, UINT64_MAX));
  show->add_option("--format", d->format, "text, hex or json")->capture_default_str();
  show->callback([d, &action] { action = [d] { return cmd_dlq_show(*d); }; });
  auto* redrive = dlq->add_subcommand(
      "redrive", "Republish the waiting dead letters to the group's channel (at-least-once), oldest first");
  add_dlq_target(redrive, *d);
  redrive->add_option("--max", d->max, "At most this many")->check(integer_in(0, UINT64_MAX));
  redrive->callback([d, &action] { action = [d] { return cmd_dlq_redrive(*d); }; });
}

}  // namespace

}  // namespace shmbus::probe
