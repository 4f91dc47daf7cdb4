// `shmbus`: the command-line probe and tool of a shmbus bus (DESIGN.md §6;
// docs/probe.md shows every command with real output).
//
// This file holds main and the two basic inspecting commands, `ls` and
// `stat`; the others register themselves from their own files (probe.hpp).
// Exit codes: 0 ok; 1 an error (some channel could not be read, bad input,
// a bad option value); 2 the named channel does not exist. `check` exits
// 0/1/2 for ok/warning/critical and 3 for bad options.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <shmbus/channel.hpp>

#include "probe.hpp"

namespace shmbus::probe {

namespace {

struct InspectArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  bool json = false;
  bool prometheus = false;
};

void print_ls_table(const std::vector<Snapshot>& rows) {
  Table t({"CHANNEL", "POLICY", "CAPACITY", "SLOT", "HEAD", "DEPTH", "PUBS", "SUBS", "GROUPS", "OWNERS_ALIVE"});
  std::vector<std::string> errors;
  for (const auto& r : rows) {
    if (!r.stats) {
      t.add({r.name, "ERROR", "-", "-", "-", "-", "-", "-", "-", "-"});
      errors.push_back(r.name + ": " + r.error_code + ": " + r.error_message);
      continue;
    }
    const auto& s = *r.stats;
    const Owners o = count_owners(s);
    t.add({r.name, std::string(to_string(s.policy)), num(s.capacity), num(s.slot_size), num(s.head), num(s.depth),
           num(s.publishers.size()), num(s.subscribers.size()), num(s.groups.size()),
           num(o.alive) + "/" + num(o.total)});
  }
  t.print(std::cout);
  for (const auto& e : errors) std::cout << "error: " << e << '\n';
}

int cmd_ls(const InspectArgs& a) {
  std::vector<Snapshot> rows;
  std::string error;
  if (!take_all(a.bus, rows, error)) {
    std::cerr << "shmbus: " << error << '\n';
    return kExitError;
  }
  if (a.json) {
    std::cout << json_text(ls_json(a.bus, rows), 2) << '\n';
  } else if (a.prometheus) {
    std::cout << prometheus_text(a.bus, rows);
  } else {
    print_ls_table(rows);
  }
  bool failed = false;
  for (const auto& r : rows) failed = failed || !r.stats;
  if (failed) std::cerr << "shmbus: some channels could not be read\n";
  return failed ? kExitError : kExitOk;
}

// The archive's range, size, the archiver's lag and its last fdatasync.
void print_archive_line(const ArchiveStats& a) {
  std::cout << "  archive " << a.dir << ": ";
  if (!a.error.empty()) {
    std::cout << "unreadable: " << a.error << "\n";
  } else if (!a.present) {
    std::cout << "nothing archived yet";
  } else {
    std::cout << "sequences " << a.first_sequence << ".." << a.end_sequence << " (" << a.files << " file"
              << (a.files == 1 ? "" : "s") << ", " << a.bytes << " bytes)";
  }
  if (!a.error.empty()) return;
  if (!a.archiver) {
    std::cout << ", no archiver\n";
    return;
  }
  std::cout << ", archiver " << (a.archiver_alive ? "alive" : "not running") << ", lag " << a.lag << ", lost " << a.lost
            << ", last fsync "
            << (a.last_fsync_realtime_ns == 0 ? std::string("never") : duration(a.fsync_age_ns) + " ago") << "\n";
}

void print_stat_table(const ChannelStats& s, const std::vector<DlqInfo>& dlqs) {
  const Owners o = count_owners(s);
  std::cout << "channel " << s.name << " (bus " << s.bus << ")\n"
            << "  policy " << to_string(s.policy) << ", capacity " << s.capacity << ", slot " << s.slot_size
            << " (max payload " << s.max_payload << "), timestamps " << to_string(s.timestamps) << "\n"
            << "  head " << s.head << ", oldest " << s.oldest << ", depth " << s.depth << ", owners alive " << o.alive
            << "/" << o.total << "\n";
  if (s.archive) print_archive_line(*s.archive);
  const ProducerTotals p = producer_totals(s);
  std::cout << "\nproducers: published " << p.published << ", rejected " << p.rejected << ", timeouts " << p.timeouts
            << ", blocked " << duration(p.blocked_ns) << ", aborted " << p.aborted << ", abandoned " << p.abandoned
            << "\n";
  if (!s.publishers.empty()) {
    Table t({"PUB", "PID", "ALIVE", "PUBLISHED", "REJECTED", "TIMEOUTS", "BLOCKED"});
    for (const auto& e : s.publishers)
      t.add({num(e.index), num(e.pid), e.alive ? "yes" : "no", num(e.published), num(e.rejected), num(e.timeouts),
             duration(e.blocked_ns)});
    t.print(std::cout);
  }
  std::cout << "\nsubscribers: " << s.subscribers.size() << "\n";
  if (!s.subscribers.empty()) {
    Table t({"NAME", "STATE", "PID", "ALIVE", "CURSOR", "LAG", "DELIVERED", "LOST"});
    for (const auto& e : s.subscribers)
      t.add({e.name.empty() ? "-" : e.name, e.state, num(e.pid), e.alive ? "yes" : "no", num(e.cursor), num(e.lag),
             num(e.delivered), num(e.lost)});
    t.print(std::cout);
  }
  std::cout << "\ngroups: " << s.groups.size() << "\n";
  if (s.groups.empty()) return;
  Table t({"GROUP", "ORDER", "NEXT", "FLOOR", "PENDING", "IN_FLIGHT", "DUE", "DLQ_DUE", "DELIVERED", "ACKED",
           "REDELIVERED", "DEAD", "OLDEST_UNACKED", "HELD_KEYS", "HELD_MSGS", "HELD_AGE", "CONSUMERS", "DLQ",
           "DLQ_DEPTH"});
  for (std::size_t i = 0; i < s.groups.size(); ++i) {
    const auto& g = s.groups[i];
    const DlqInfo d = i < dlqs.size() ? dlqs[i] : DlqInfo{};
    const std::string dlq_depth = !d.exists ? "-" : (d.error.empty() ? num(d.depth) : "error");
    // Held-back keys exist only in per_key groups: "-" elsewhere.
    const bool per_key = g.ordering == GroupOrdering::per_key;
    t.add({g.name, std::string(to_string(g.ordering)), num(g.next), num(g.floor), num(g.pending), num(g.in_flight),
           num(g.due), num(g.dlq_due), num(g.delivered), num(g.acked), num(g.redelivered), num(g.dead_lettered),
           duration(g.oldest_unacked_age_ns), per_key ? num(g.held_keys) : "-", per_key ? num(g.held_messages) : "-",
           per_key ? duration(g.held_oldest_age_ns) : "-", num(consumers_alive(g)) + "/" + num(g.consumers.size()),
           g.dlq.empty() ? "-" : g.dlq, dlq_depth});
  }
  t.print(std::cout);
  for (std::size_t i = 0; i < dlqs.size() && i < s.groups.size(); ++i)
    if (!dlqs[i].error.empty()) std::cout << "error: DLQ " << s.groups[i].dlq << ": " << dlqs[i].error << '\n';
}

int cmd_stat(const InspectArgs& a) {
  Snapshot snap = take_snapshot(a.channel, a.bus);
  if (!snap.stats) {
    if (snap.error_code == "not_found") {
      std::cerr << "shmbus: no channel '" << a.channel << "' on bus '" << a.bus << "'\n";
      return kExitNotFound;
    }
    std::cerr << "shmbus: cannot read channel '" << a.channel << "' on bus '" << a.bus << "': " << snap.error_code
              << ": " << snap.error_message << '\n';
    return kExitError;
  }
  if (a.json) {
    std::cout << json_text(stat_json(*snap.stats, snap.dlqs), 2) << '\n';
  } else if (a.prometheus) {
    std::cout << prometheus_text(a.bus, {snap});
  } else {
    print_stat_table(*snap.stats, snap.dlqs);
  }
  return kExitOk;
}

void add_format_flags(CLI::App* cmd, InspectArgs& a) {
  auto* j = cmd->add_flag("--json", a.json, "Print JSON (schema: docs/probe.md)");
  cmd->add_flag("--prometheus", a.prometheus, "Print Prometheus text exposition format")->excludes(j);
}

}  // namespace

void add_inspect_commands(CLI::App& app, Action& action) {
  auto a = std::make_shared<InspectArgs>();
  auto* ls = app.add_subcommand("ls", "List the channels of a bus with a summary of each");
  ls->add_option("--bus", a->bus, "Bus name")->capture_default_str();
  add_format_flags(ls, *a);
  ls->callback([a, &action] { action = [a] { return cmd_ls(*a); }; });

  auto* stat = app.add_subcommand("stat", "Show a channel's cursors, groups and counters");
  stat->add_option("CHANNEL", a->channel, "Channel name")->required();
  stat->add_option("--bus", a->bus, "Bus name")->capture_default_str();
  add_format_flags(stat, *a);
  stat->callback([a, &action] { action = [a] { return cmd_stat(*a); }; });
}

}  // namespace shmbus::probe

int main(int argc, char** argv) {
  using namespace shmbus::probe;
  CLI::App app{"shmbus: inspect and use shmbus channels (docs/probe.md)", "shmbus"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every command");
  // Before or after the command: `shmbus publish orders --trust-uid 1001`.
  app.fallthrough();
  app.add_option("--trust-uid", cli_trust().uids,
                 "Also use channels owned by this uid (repeatable). Commands that take part "
                 "(publish, subscribe, rm, gc, dlq redrive, create) refuse a channel owned by "
                 "another uid than yours or root's")
      ->check(integer_in(0, 4294967295ULL));
  app.add_option("--trust-gid", cli_trust().gids, "Also use channels whose group is this gid (repeatable)")
      ->check(integer_in(0, 4294967295ULL));

  Action action;
  add_inspect_commands(app, action);
  add_watch_commands(app, action);
  add_message_commands(app, action);
  add_admin_commands(app, action);
  // Commands defined in their own files.
  add_bridge_command(app, action);
  add_archive_command(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Prints the help, or the error naming the option; bad input exits 1
    // (3, UNKNOWN, for check), as docs/probe.md says, not CLI11's own codes.
    if (app.exit(e) == 0) return kExitOk;
    return app.got_subcommand("check") ? kExitCheckUnknown : kExitError;
  }
  if (!action) return kExitError;
  try {
    return action();
  } catch (const std::exception& e) {
    std::cerr << "shmbus: " << e.what() << '\n';
    return kExitError;
  }
}
