// `shmbus create`, `rm`, `gc` and `dlq list|show|redrive`: commands that
// change a bus (except dlq list/show, which only peek). Each says what it
// did; --dry-run shows what gc would do without doing it.
#include <iostream>
#include <memory>

#include "probe.hpp"

namespace shmbus::probe {

namespace {

struct CreateArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  ChannelOptions opts;
  std::string policy = "block";
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
  try {
    std::size_t used = 0;
    const unsigned long mode = std::stoul(a.mode, &used, 8);
    if (used != a.mode.size() || mode > 0777) throw std::invalid_argument("mode");
    a.opts.mode = static_cast<std::uint32_t>(mode);
  } catch (const std::exception&) {
    std::cerr << "shmbus create: bad --mode '" << a.mode << "': octal permission bits such as 0600\n";
    return kExitError;
  }
  a.opts.unblock_timeout_ns = static_cast<std::uint64_t>(a.unblock_timeout_s * 1e9);
  a.opts.eviction_timeout_ns = static_cast<std::uint64_t>(a.eviction_timeout_s * 1e9);
  auto ch = Channel::create(a.channel, a.opts, a.bus);
  if (!ch) {
    std::cerr << "shmbus create: channel '" << a.channel << "' on bus '" << a.bus
              << "': " << to_string(ch.error().code()) << ": " << ch.error().message() << '\n';
    return kExitError;
  }
  const auto o = ch->options();
  std::cout << "created channel " << a.channel << " on bus " << a.bus << ": policy " << to_string(o.policy)
            << ", capacity " << o.capacity << ", slot " << o.slot_size << " (max payload "
            << ch->max_payload() << "), mode " << a.mode << '\n';
  return kExitOk;
}

struct RmArgs {
  std::string bus{kDefaultBus};
  std::vector<std::string> channels;
  bool force = false;
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
    std::cerr << "shmbus rm: " << what << " of channel '" << a.channels.front()
              << "': " << to_string(r.error().code()) << ": " << r.error().message() << '\n';
    return r.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  std::cout << "removed " << what << " from channel " << a.channels.front() << '\n';
  return kExitOk;
}

int cmd_rm(const RmArgs& a) {
  if (!a.subscriber.empty() || !a.group.empty()) return rm_member(a);
  int worst = kExitOk;
  for (const auto& name : a.channels) {
    Snapshot snap = take_snapshot(name, a.bus);
    if (!snap.stats && snap.error_code == "not_found") {
      std::cerr << "shmbus rm: no channel '" << name << "' on bus '" << a.bus << "'\n";
      worst = std::max(worst, kExitNotFound);
      continue;
    }
    if (snap.stats && !a.force) {
      const Owners o = count_owners(*snap.stats);
      if (o.alive != 0) {
        std::cerr << "shmbus rm: channel '" << name << "' has " << o.alive
                  << " entries owned by live processes; --force removes it anyway (they keep their mapping)\n";
        worst = std::max(worst, kExitError);
        continue;
      }
    }
    auto r = Channel::remove(name, a.bus);
    if (!r) {
      std::cerr << "shmbus rm: channel '" << name << "': " << r.error().message() << '\n';
      worst = std::max(worst, kExitError);
      continue;
    }
    std::cout << "removed channel " << name << " from bus " << a.bus << '\n';
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
  auto ch = Channel::open(name, a.bus, 200'000'000ULL);
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
  const char* would = a.dry_run ? "would " : "";
  int rc = kExitOk;
  std::uint32_t reclaimed = 0, removed = 0;
  std::uint64_t moved_dead_letters = 0;
  bool acted = false;
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
      std::cout << snap.name << ": " << would << "remove (no live user, no durable subscriber or group)\n";
      if (!a.dry_run) {
        if (auto r = Channel::remove(snap.name, a.bus); !r) {
          std::cerr << "shmbus gc: " << snap.name << ": " << r.error().message() << '\n';
          rc = kExitError;
          continue;
        }
        ++removed;
      }
      continue;
    }
    if (dead == 0) continue;
    if (a.dry_run) {
      std::cout << snap.name << ": would reclaim " << dead << " entr" << (dead == 1 ? "y" : "ies")
                << " of dead processes\n";
      continue;
    }
    auto ch = Channel::open(snap.name, a.bus, 200'000'000ULL);
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
  if (!a.dry_run) {
    std::cout << "gc: reclaimed " << reclaimed << " entr" << (reclaimed == 1 ? "y" : "ies") << ", removed "
              << removed << " channel(s), moved " << moved_dead_letters << " dead letter(s) to DLQs\n";
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
      items.push_back({{"dlq_sequence", d.dlq_sequence}, {"source", d.source},
                       {"original_sequence", d.original_sequence},
                       {"original_timestamp_ns", d.original_timestamp_ns}, {"group", d.group},
                       {"attempts", d.attempts}, {"reason", std::string(to_string(d.reason))},
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
    std::cout << nlohmann::json{{"schema_version", 1}, {"group", a.group}, {"channel", ref->channel},
                                {"dlq", ref->dlq}, {"dead_letters", items}}
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
  std::cout << "dead letter #" << d->dlq_sequence << " in " << ref->dlq << "\n  source " << d->source
            << " #" << d->original_sequence << ", published " << iso_time(d->original_timestamp_ns)
            << "\n  group " << d->group << ", attempts " << d->attempts << ", reason " << to_string(d->reason)
            << "\n";
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

}  // namespace

void add_admin_commands(CLI::App& app, Action& action) {
  auto c = std::make_shared<CreateArgs>();
  auto* create = app.add_subcommand("create", "Create a channel");
  create->add_option("CHANNEL", c->channel, "Channel name")->required();
  create->add_option("--bus", c->bus, "Bus name")->capture_default_str();
  create->add_option("--capacity", c->opts.capacity, "Slots (a power of two)")->capture_default_str();
  create->add_option("--slot-size", c->opts.slot_size, "Bytes per slot, 48-byte header included (multiple of 64)")
      ->capture_default_str();
  create->add_option("--policy", c->policy, "block, drop_oldest or reject")->capture_default_str();
  create->add_option("--max-subscribers", c->opts.max_subscribers, "Subscriber table entries")->capture_default_str();
  create->add_option("--max-publishers", c->opts.max_publishers, "Publisher table entries")->capture_default_str();
  create->add_option("--max-groups", c->opts.max_groups, "Consumer groups")->capture_default_str();
  create->add_option("--max-consumers", c->opts.max_consumers, "Consumers per group")->capture_default_str();
  create->add_option("--mode", c->mode, "Permission bits (octal)")->capture_default_str();
  create->add_option("--unblock-timeout", c->unblock_timeout_s, "Seconds before a stalled claim is abandoned")
      ->capture_default_str();
  create->add_option("--eviction-timeout", c->eviction_timeout_s,
                     "block policy: evict a subscriber a full ring behind for this long (0: never)")
      ->capture_default_str();
  create->callback([c, &action] { action = [c] { return cmd_create(*c); }; });

  auto r = std::make_shared<RmArgs>();
  auto* rm = app.add_subcommand("rm", "Remove channels (refuses while live processes use them, unless --force)");
  rm->add_option("CHANNEL", r->channels, "Channel names")->required();
  rm->add_option("--bus", r->bus, "Bus name")->capture_default_str();
  rm->add_flag("--force", r->force, "Remove even if live processes use it (they keep their mapping)");
  rm->add_option("--subscriber", r->subscriber,
                 "Instead: forget this durable subscriber's cursor (refused while its process lives)");
  rm->add_option("--group", r->group, "Instead: remove this consumer group (refused while a member lives)");
  rm->callback([r, &action] { action = [r] { return cmd_rm(*r); }; });

  auto g = std::make_shared<GcArgs>();
  auto* gc = app.add_subcommand(
      "gc", "Reclaim table entries and leases of dead processes; remove channels nobody uses");
  gc->add_option("--bus", g->bus, "Bus name")->capture_default_str();
  gc->add_flag("--dry-run", g->dry_run, "Only say what would be done");
  gc->add_flag("--keep-unused", g->keep_unused, "Do not remove unused channels");
  gc->add_option("--min-age", g->min_age_s, "Only remove unused channels created at least this many seconds ago")
      ->capture_default_str();
  gc->callback([g, &action] { action = [g] { return cmd_gc(*g); }; });

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
  show->add_option("DLQ_SEQ", d->sequence, "Its sequence in the DLQ (see dlq list)")->required();
  show->add_option("--format", d->format, "text, hex or json")->capture_default_str();
  show->callback([d, &action] { action = [d] { return cmd_dlq_show(*d); }; });
  auto* redrive = dlq->add_subcommand(
      "redrive", "Republish the waiting dead letters to the group's channel (at-least-once), oldest first");
  add_dlq_target(redrive, *d);
  redrive->add_option("--max", d->max, "At most this many");
  redrive->callback([d, &action] { action = [d] { return cmd_dlq_redrive(*d); }; });
}

}  // namespace shmbus::probe
