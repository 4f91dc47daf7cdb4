// JSON output of the shmbus probe (`--json`).
//
// SCHEMA (version 1). All counters are unsigned integers; times are in
// nanoseconds; names are strings. Fields are only ever added, never renamed
// or removed, within a schema_version.
//
// `shmbus ls --json`:
//   {
//     "schema_version": 1,
//     "bus": "default",
//     "channels": [
//       {                               // a channel that could be read
//         "name": "orders", "ok": true,
//         "policy": "block" | "drop_oldest" | "reject",
//         "timestamps": "tsc" | "realtime" | "none",
//         "capacity": 1024, "slot_size": 256, "max_payload": 192,
//         "head": 10, "oldest": 0, "depth": 7,
//         "publishers": 1, "subscribers": 1, "groups": 0,   // table entries in use
//         "owners_alive": 0, "owners_total": 1               // entries with an owner pid
//       },
//       {                               // a channel that could not be read
//         "name": "broken", "ok": false,
//         "error": { "code": "version_mismatch", "message": "..." }
//       }
//     ]
//   }
//
// `shmbus stat CHANNEL --json`:
//   {
//     "schema_version": 1,
//     "bus": "...", "name": "...", "policy": "...",
//     "capacity": N, "slot_size": N, "max_payload": N,
//     "head": N,            // next sequence to be claimed
//     "oldest": N,          // oldest sequence possibly still in the ring
//     "depth": N,           // head - slowest gating cursor
//     "creator_pid": N, "epoch": N, "created_realtime_ns": N,
//     "evictions": N, "dead_reclaimed": N,
//     "owners_alive": N, "owners_total": N,
//     "producer": { "published": N, "rejected": N, "timeouts": N,   // channel totals: every
//                   "blocked_ns": N, "aborted": N, "abandoned": N }, // publisher ever attached
//     "publishers": [ { "index": N, "pid": N, "alive": bool, "published": N,  // since it attached
//                       "rejected": N, "timeouts": N, "blocked_ns": N,
//                       "aborted": N, "lost_claims": N } ],
//     "subscribers": [ { "index": N, "name": "lagger" | null (anonymous),
//                        "durable": bool, "state": "active"|"detached"|"evicted"|"claiming",
//                        "pid": N, "alive": bool, "cursor": N, "lag": N,
//                        "delivered": N, "lost": N, "lapped_events": N } ],
//     "groups": [ { "index": N, "name": "...", "next": N, "floor": N,
//                   "pending": N, "unfinished": N, "in_flight": N, "due": N,
//                   "dlq_due": N,   // out of deliveries, not yet in the DLQ
//                   "oldest_unacked_age_ns": N, "visibility_timeout_ns": N,
//                   "max_deliveries": N, "delivered": N, "acked": N,
//                   "redelivered": N, "dead_lettered": N, "nacked": N,
//                   "expired": N, "lost": N, "dlq_failures": N,
//                   "dead_consumer_releases": N,
//                   "ordering": "none"|"per_key", "order_window": N,  // 0 for none
//                   "held_keys": N, "held_messages": N,            // per_key: held back now
//                   "held_oldest_age_ns": N,                       // (0 for none)
//                   "consumers_alive": N, "consumers_total": N,
//                   "dlq": { "name": "...", "exists": bool,
//                            "depth": N | null,        // null if absent/unreadable
//                            "error": "..." },          // only if unreadable
//                   "consumers": [ { "index": N, "pid": N, "alive": bool,
//                                    "delivered": N, "acked": N, "nacked": N } ] } ],
//     "archive": null |   // null: the channel has no archive directory
//                { "dir": "...", "present": bool,   // present: segment files exist
//                  "first_sequence": N, "end_sequence": N, "files": N, "bytes": N,
//                  "archiver": bool, "archiver_alive": bool, "archiver_cursor": N,
//                  "lag": N,       // head - archiver_cursor
//                  "lost": N,      // sequences never archived (gaps)
//                  "last_fsync_realtime_ns": N, "fsync_age_ns": N,   // 0: no fsync yet
//                  "error": "..." }                  // only if the directory is unreadable
//   }
#include "probe.hpp"

#include <shmbus/stats.hpp>
#include <shmbus/types.hpp>

namespace shmbus::probe {

using nlohmann::json;

Owners count_owners(const ChannelStats& s) {
  Owners o;
  auto add = [&](std::uint32_t pid, bool alive) {
    if (pid == 0) return;
    ++o.total;
    if (alive) ++o.alive;
  };
  for (const auto& p : s.publishers) add(p.pid, p.alive);
  for (const auto& sub : s.subscribers) add(sub.pid, sub.alive);
  for (const auto& g : s.groups)
    for (const auto& c : g.consumers) add(c.pid, c.alive);
  return o;
}

ProducerTotals producer_totals(const ChannelStats& s) {
  ProducerTotals t;
  t.published = s.published;
  t.rejected = s.rejected;
  t.timeouts = s.timeouts;
  t.blocked_ns = s.blocked_ns;
  t.aborted = s.aborted;
  t.abandoned = s.abandoned;
  return t;
}

namespace {

void put_summary(json& j, const ChannelStats& s) {
  j["policy"] = std::string(to_string(s.policy));
  j["timestamps"] = std::string(to_string(s.timestamps));
  j["capacity"] = s.capacity;
  j["slot_size"] = s.slot_size;
  j["max_payload"] = s.max_payload;
  j["head"] = s.head;
  j["oldest"] = s.oldest;
  j["depth"] = s.depth;
  const Owners o = count_owners(s);
  j["owners_alive"] = o.alive;
  j["owners_total"] = o.total;
}

}  // namespace

json ls_json(const std::string& bus, const std::vector<Snapshot>& rows) {
  json chans = json::array();
  for (const auto& r : rows) {
    json c;
    c["name"] = r.name;
    if (r.stats) {
      c["ok"] = true;
      put_summary(c, *r.stats);
      c["publishers"] = r.stats->publishers.size();
      c["subscribers"] = r.stats->subscribers.size();
      c["groups"] = r.stats->groups.size();
    } else {
      c["ok"] = false;
      c["error"] = {{"code", r.error_code}, {"message", r.error_message}};
    }
    chans.push_back(std::move(c));
  }
  return json{{"schema_version", 1}, {"bus", bus}, {"channels", std::move(chans)}};
}

json stat_json(const ChannelStats& s, const std::vector<DlqInfo>& dlqs) {
  json j;
  j["schema_version"] = 1;
  j["bus"] = s.bus;
  j["name"] = s.name;
  put_summary(j, s);
  j["creator_pid"] = s.creator_pid;
  j["epoch"] = s.epoch;
  j["created_realtime_ns"] = s.created_realtime_ns;
  j["evictions"] = s.evictions;
  j["dead_reclaimed"] = s.dead_reclaimed;
  const ProducerTotals t = producer_totals(s);
  j["producer"] = {{"published", t.published},   {"rejected", t.rejected}, {"timeouts", t.timeouts},
                   {"blocked_ns", t.blocked_ns}, {"aborted", t.aborted},   {"abandoned", t.abandoned}};
  json pubs = json::array();
  for (const auto& p : s.publishers)
    pubs.push_back({{"index", p.index},
                    {"pid", p.pid},
                    {"alive", p.alive},
                    {"published", p.published},
                    {"rejected", p.rejected},
                    {"timeouts", p.timeouts},
                    {"blocked_ns", p.blocked_ns},
                    {"aborted", p.aborted},
                    {"lost_claims", p.lost_claims}});
  j["publishers"] = std::move(pubs);
  json subs = json::array();
  for (const auto& sub : s.subscribers) {
    json e{{"index", sub.index}, {"durable", sub.durable},
           {"state", sub.state}, {"pid", sub.pid},
           {"alive", sub.alive}, {"cursor", sub.cursor},
           {"lag", sub.lag},     {"delivered", sub.delivered},
           {"lost", sub.lost},   {"lapped_events", sub.lapped_events}};
    e["name"] = sub.name.empty() ? json(nullptr) : json(sub.name);
    subs.push_back(std::move(e));
  }
  j["subscribers"] = std::move(subs);
  json groups = json::array();
  for (std::size_t i = 0; i < s.groups.size(); ++i) {
    const auto& g = s.groups[i];
    json e{{"index", g.index},
           {"name", g.name},
           {"next", g.next},
           {"floor", g.floor},
           {"pending", g.pending},
           {"unfinished", g.unfinished},
           {"in_flight", g.in_flight},
           {"due", g.due},
           {"dlq_due", g.dlq_due},
           {"oldest_unacked_age_ns", g.oldest_unacked_age_ns},
           {"visibility_timeout_ns", g.visibility_timeout_ns},
           {"max_deliveries", g.max_deliveries},
           {"delivered", g.delivered},
           {"acked", g.acked},
           {"redelivered", g.redelivered},
           {"dead_lettered", g.dead_lettered},
           {"nacked", g.nacked},
           {"expired", g.expired},
           {"lost", g.lost},
           {"dlq_failures", g.dlq_failures},
           {"dead_consumer_releases", g.dead_consumer_releases},
           {"ordering", std::string(to_string(g.ordering))},
           {"order_window", g.order_window},
           {"held_keys", g.held_keys},
           {"held_messages", g.held_messages},
           {"held_oldest_age_ns", g.held_oldest_age_ns}};
    std::uint32_t alive = 0;
    json cons = json::array();
    for (const auto& c : g.consumers) {
      if (c.alive) ++alive;
      cons.push_back({{"index", c.index},
                      {"pid", c.pid},
                      {"alive", c.alive},
                      {"delivered", c.delivered},
                      {"acked", c.acked},
                      {"nacked", c.nacked}});
    }
    e["consumers_alive"] = alive;
    e["consumers_total"] = g.consumers.size();
    const DlqInfo d = i < dlqs.size() ? dlqs[i] : DlqInfo{};
    json dj{{"name", g.dlq}, {"exists", d.exists}};
    dj["depth"] = (d.exists && d.error.empty()) ? json(d.depth) : json(nullptr);
    if (!d.error.empty()) dj["error"] = d.error;
    e["dlq"] = std::move(dj);
    e["consumers"] = std::move(cons);
    groups.push_back(std::move(e));
  }
  j["groups"] = std::move(groups);
  if (s.archive) {
    const ArchiveStats& a = *s.archive;
    json aj{{"dir", a.dir},
            {"present", a.present},
            {"first_sequence", a.first_sequence},
            {"end_sequence", a.end_sequence},
            {"files", a.files},
            {"bytes", a.bytes},
            {"archiver", a.archiver},
            {"archiver_alive", a.archiver_alive},
            {"archiver_cursor", a.archiver_cursor},
            {"lag", a.lag},
            {"lost", a.lost},
            {"last_fsync_realtime_ns", a.last_fsync_realtime_ns},
            {"fsync_age_ns", a.fsync_age_ns}};
    if (!a.error.empty()) aj["error"] = a.error;
    j["archive"] = std::move(aj);
  } else {
    j["archive"] = nullptr;
  }
  return j;
}

}  // namespace shmbus::probe
