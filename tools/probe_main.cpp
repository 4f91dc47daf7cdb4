// `shmbus`: the command-line probe of a shmbus bus (DESIGN.md §6).
//
// It reads segments without taking part: channels are opened with
// Channel::open_read_only and only Channel::stats() snapshots are taken, so no
// cursor moves and no table entry is taken.
//
// Commands (first cut): `ls`, `stat`. Both print a table, or JSON with
// --json (schema documented in probe_json.cpp).
// Exit codes: 0 ok; 1 some channel could not be read (ls) or another error;
// 2 the named channel does not exist (stat).
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <shmbus/channel.hpp>

#include "probe.hpp"

namespace {

using namespace shmbus;
using namespace shmbus::probe;

/// A plain text table: left-aligned columns separated by two spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& os) const {
    std::vector<std::size_t> w;
    for (const auto& r : rows_) {
      if (w.size() < r.size()) w.resize(r.size(), 0);
      for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
    }
    for (const auto& r : rows_) {
      std::string line;
      for (std::size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
      }
      os << line << '\n';
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string num(std::uint64_t v) { return std::to_string(v); }

std::string duration(std::uint64_t ns) {
  char buf[64];
  if (ns < 1'000ULL) std::snprintf(buf, sizeof buf, "%lluns", static_cast<unsigned long long>(ns));
  else if (ns < 1'000'000ULL) std::snprintf(buf, sizeof buf, "%.1fus", static_cast<double>(ns) / 1e3);
  else if (ns < 1'000'000'000ULL) std::snprintf(buf, sizeof buf, "%.1fms", static_cast<double>(ns) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ns) / 1e9);
  return buf;
}

int cmd_ls(const std::string& bus, bool as_json) {
  auto names = Channel::list(bus);
  if (!names) {
    std::cerr << "shmbus: cannot list bus '" << bus << "': " << names.error().message() << '\n';
    return kExitError;
  }
  std::vector<LsRow> rows;
  bool failed = false;
  for (const auto& info : names.value()) {
    LsRow r;
    r.name = info.name;
    auto ch = Channel::open_read_only(info.name, bus);
    if (ch) {
      r.stats = ch->stats();
    } else {
      failed = true;
      r.error_code = std::string(to_string(ch.error().code()));
      r.error_message = ch.error().message();
    }
    rows.push_back(std::move(r));
  }
  if (as_json) {
    std::cout << ls_json(bus, rows).dump(2) << '\n';
  } else {
    Table t({"CHANNEL", "POLICY", "CAPACITY", "SLOT", "HEAD", "DEPTH", "PUBS", "SUBS", "GROUPS",
             "OWNERS_ALIVE"});
    std::vector<std::string> errors;
    for (const auto& r : rows) {
      if (!r.stats) {
        t.add({r.name, "ERROR", "-", "-", "-", "-", "-", "-", "-", "-"});
        errors.push_back(r.name + ": " + r.error_code + ": " + r.error_message);
        continue;
      }
      const auto& s = *r.stats;
      const Owners o = count_owners(s);
      t.add({r.name, std::string(to_string(s.policy)), num(s.capacity), num(s.slot_size),
             num(s.head), num(s.depth), num(s.publishers.size()), num(s.subscribers.size()),
             num(s.groups.size()), num(o.alive) + "/" + num(o.total)});
    }
    t.print(std::cout);
    for (const auto& e : errors) std::cout << "error: " << e << '\n';
  }
  if (failed) std::cerr << "shmbus: some channels could not be read\n";
  return failed ? kExitError : kExitOk;
}

int cmd_stat(const std::string& channel, const std::string& bus, bool as_json) {
  auto ch = Channel::open_read_only(channel, bus);
  if (!ch) {
    if (ch.error().code() == ErrorCode::not_found) {
      std::cerr << "shmbus: no channel '" << channel << "' on bus '" << bus << "'\n";
      return kExitNotFound;
    }
    std::cerr << "shmbus: cannot read channel '" << channel << "' on bus '" << bus
              << "': " << to_string(ch.error().code()) << ": " << ch.error().message() << '\n';
    return kExitError;
  }
  const ChannelStats s = ch->stats();
  std::vector<DlqInfo> dlqs;
  for (const auto& g : s.groups) {
    DlqInfo d;
    if (!g.dlq.empty()) {
      auto q = Channel::open_read_only(g.dlq, bus);
      if (q) {
        d.exists = true;
        d.depth = q->stats().depth;
      } else if (q.error().code() != ErrorCode::not_found) {
        d.exists = true;
        d.error = std::string(to_string(q.error().code())) + ": " + q.error().message();
      }
    }
    dlqs.push_back(std::move(d));
  }
  if (as_json) {
    std::cout << stat_json(s, dlqs).dump(2) << '\n';
    return kExitOk;
  }
  const Owners o = count_owners(s);
  std::cout << "channel " << s.name << " (bus " << s.bus << ")\n"
            << "  policy " << to_string(s.policy) << ", capacity " << s.capacity << ", slot "
            << s.slot_size << " (max payload " << s.max_payload << ")\n"
            << "  head " << s.head << ", oldest " << s.oldest << ", depth " << s.depth
            << ", owners alive " << o.alive << "/" << o.total << "\n";
  const ProducerTotals p = producer_totals(s);
  std::cout << "\nproducers: published " << p.published << ", rejected " << p.rejected
            << ", timeouts " << p.timeouts << ", blocked " << duration(p.blocked_ns)
            << ", aborted " << p.aborted << ", abandoned " << p.abandoned << "\n";
  if (!s.publishers.empty()) {
    Table t({"PUB", "PID", "ALIVE", "PUBLISHED", "REJECTED", "TIMEOUTS", "BLOCKED"});
    for (const auto& e : s.publishers)
      t.add({num(e.index), num(e.pid), e.alive ? "yes" : "no", num(e.published), num(e.rejected),
             num(e.timeouts), duration(e.blocked_ns)});
    t.print(std::cout);
  }
  std::cout << "\nsubscribers: " << s.subscribers.size() << "\n";
  if (!s.subscribers.empty()) {
    Table t({"NAME", "STATE", "PID", "ALIVE", "CURSOR", "LAG", "DELIVERED", "LOST"});
    for (const auto& e : s.subscribers)
      t.add({e.name.empty() ? "-" : e.name, e.state, num(e.pid), e.alive ? "yes" : "no",
             num(e.cursor), num(e.lag), num(e.delivered), num(e.lost)});
    t.print(std::cout);
  }
  std::cout << "\ngroups: " << s.groups.size() << "\n";
  if (!s.groups.empty()) {
    Table t({"GROUP", "NEXT", "FLOOR", "PENDING", "IN_FLIGHT", "DUE", "DELIVERED", "ACKED",
             "REDELIVERED", "DEAD", "OLDEST_UNACKED", "CONSUMERS", "DLQ", "DLQ_DEPTH"});
    for (std::size_t i = 0; i < s.groups.size(); ++i) {
      const auto& g = s.groups[i];
      const auto& d = dlqs[i];
      std::uint32_t alive = 0;
      for (const auto& c : g.consumers) alive += c.alive ? 1U : 0U;
      const std::string dlq_depth = !d.exists ? "-" : (d.error.empty() ? num(d.depth) : "error");
      t.add({g.name, num(g.next), num(g.floor), num(g.pending), num(g.in_flight), num(g.due),
             num(g.delivered), num(g.acked), num(g.redelivered), num(g.dead_lettered),
             duration(g.oldest_unacked_age_ns),
             num(alive) + "/" + num(g.consumers.size()), g.dlq.empty() ? "-" : g.dlq, dlq_depth});
    }
    t.print(std::cout);
    for (std::size_t i = 0; i < dlqs.size(); ++i)
      if (!dlqs[i].error.empty())
        std::cout << "error: DLQ " << s.groups[i].dlq << ": " << dlqs[i].error << '\n';
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shmbus: inspect shmbus channels without taking part", "shmbus"};
  app.require_subcommand(1);

  std::string bus{kDefaultBus};
  bool as_json = false;

  auto* ls = app.add_subcommand("ls", "List the channels of a bus with a summary of each");
  ls->add_option("--bus", bus, "Bus name")->capture_default_str();
  ls->add_flag("--json", as_json, "Print JSON (schema: see docs / probe_json.cpp)");

  std::string channel;
  auto* stat = app.add_subcommand("stat", "Show a channel's cursors, groups and counters");
  stat->add_option("CHANNEL", channel, "Channel name")->required();
  stat->add_option("--bus", bus, "Bus name")->capture_default_str();
  stat->add_flag("--json", as_json, "Print JSON (schema: see docs / probe_json.cpp)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*ls) return cmd_ls(bus, as_json);
    if (*stat) return cmd_stat(channel, bus, as_json);
  } catch (const std::exception& e) {
    std::cerr << "shmbus: " << e.what() << '\n';
    return kExitError;
  }
  return kExitError;
}
