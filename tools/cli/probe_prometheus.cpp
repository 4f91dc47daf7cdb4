// Prometheus text exposition (format 0.0.4) of channel snapshots, for
// `--prometheus` and `shmbus metrics`. Every family has HELP and TYPE lines;
// counters end in _total, times are in seconds; labels are bus, channel and,
// per entry, subscriber / group / consumer. Anonymous subscribers are
// labelled "#<table index>"; a name no valid entry can hold (a corrupted
// segment's) or one used twice gets "#<table index>" appended, so every
// series is unique. A DLQ channel's retaining cursor (durable
// subscriber "dlq") carries role="dlq_retainer": its lag is the DLQ's
// depth, not a slow reader. Label values are valid UTF-8 whatever the
// segment holds (other bytes become U+FFFD, as in the JSON output), with
// backslash, double quote and newline escaped. Checked by `promtool check
// metrics` in the tests.
//
// Every _total is monotonic for the life of the channel: the producer
// totals are sums over every publisher entry, whose counters are never
// reset (docs/protocol.md, PublisherEntry). Per-entry counters (subscriber,
// group) start at 0 when their entry or group is created anew under the
// same label, which Prometheus handles as a counter reset.
//
// Families:
//   shmbus_channel_up{bus,channel}                 1 if the segment could be read, else 0
//   shmbus_channel_info{bus,channel,policy}        1 (carries the policy)
//   shmbus_channel_capacity_slots, shmbus_channel_slot_size_bytes
//   shmbus_channel_messages_total                  sequences claimed so far (the head)
//   shmbus_channel_oldest_sequence, shmbus_channel_depth
//   shmbus_channel_owners{state=alive|dead}
//   shmbus_channel_abandoned_total, shmbus_channel_evictions_total
//   shmbus_producer_published_total, _rejected_total, _timeouts_total,
//     _blocked_seconds_total, _aborted_total       channel totals (every publisher ever attached)
//   shmbus_subscriber_lag, _cursor, _alive, _delivered_total, _lost_total
//                                                  {subscriber[,role="dlq_retainer"]}
//   shmbus_group_pending, _unfinished, _in_flight, _due, _dlq_due,
//     _oldest_unacked_age_seconds, _consumers{state}, _dlq_depth,
//     _delivered_total, _acked_total, _redelivered_total, _dead_lettered_total,
//     _nacked_total, _expired_total, _lost_total
//   shmbus_archive_first_sequence, _end_sequence, _files, _bytes, _archiver_alive,
//     _lag, _lost_total, _fsync_age_seconds    channels with an archive directory (the
//                                                  last three once an archiver has attached /
//                                                  synced)
//   shmbus_group_held_keys, _held_messages, _held_oldest_age_seconds
//                                                  per_key groups only: keys and messages
//                                                  held back behind an unfinished message
//                                                  of their key, and the oldest one's age
#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "bus/group/consumer_core.hpp"

#include "probe.hpp"

namespace shmbus::probe {

namespace {

/// A label value as the exposition format wants it: valid UTF-8 (names come
/// from shared memory and may hold anything), with \, " and newline escaped.
std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : valid_utf8(v)) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

/// Collects samples per family so each family is written once, in order,
/// with its HELP and TYPE.
class Exposition {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  void add(const std::string& family, const char* type, const char* help, const Labels& labels, double value) {
    auto it = index_.find(family);
    if (it == index_.end()) {
      it = index_.emplace(family, families_.size()).first;
      families_.push_back({family, type, help, {}});
    }
    std::ostringstream line;
    line << family;
    if (!labels.empty()) {
      line << '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i) line << ',';
        line << labels[i].first << "=\"" << escape_label(labels[i].second) << '"';
      }
      line << '}';
    }
    line.precision(17);
    line << ' ' << value << '\n';
    families_[it->second].lines.push_back(line.str());
  }

  [[nodiscard]] std::string text() const {
    std::string out;
    for (const auto& f : families_) {
      out += "# HELP " + f.name + ' ' + f.help + '\n';
      out += "# TYPE " + f.name + ' ' + f.type + '\n';
      for (const auto& l : f.lines) out += l;
    }
    return out;
  }

 private:
  struct Family {
    std::string name;
    const char* type;
    const char* help;
    std::vector<std::string> lines;
  };
  std::vector<Family> families_;
  std::map<std::string, std::size_t> index_;
};

constexpr const char* kGauge = "gauge";
constexpr const char* kCounter = "counter";

double secs(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }
double d(std::uint64_t v) { return static_cast<double>(v); }

/// The label of a table entry: its name, or "#<index>" if it has none. A
/// name that is not one a valid entry can hold (letters, digits, '_', '-':
/// a corrupted segment's) or that an earlier entry of the channel already
/// used gets "#<index>" appended, so every series stays unique ('#' is in
/// no valid name).
std::string entry_label(const std::string& name, std::uint32_t index, std::set<std::string>& used) {
  if (name.empty()) return "#" + num(index);
  const bool plain = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  if (plain && used.insert(name).second) return name;
  return name + "#" + num(index);
}

/// Whether `sub` is the cursor that retains a DLQ's letters: the durable
/// subscriber "dlq" of a channel that some group of the exposition names as
/// its DLQ, or of a channel without a group table (every DLQ is created so).
bool is_dlq_retainer(const ChannelStats& s, const SubscriberStats& sub, const std::set<std::string>& dlqs) {
  return sub.durable && sub.name == bus::kDlqRetainer && (s.max_groups == 0 || dlqs.count(s.name) != 0);
}

void channel_metrics(Exposition& x, const Exposition::Labels& ch, const ChannelStats& s,
                     const std::vector<DlqInfo>& dlqs, const std::set<std::string>& dlq_names) {
  x.add("shmbus_channel_up", kGauge, "Whether the channel's segment could be read (1) or not (0).", ch, 1);
  auto info = ch;
  info.emplace_back("policy", std::string(to_string(s.policy)));
  x.add("shmbus_channel_info", kGauge, "Channel parameters carried as labels; always 1.", info, 1);
  x.add("shmbus_channel_capacity_slots", kGauge, "Slots in the channel's ring.", ch, d(s.capacity));
  x.add("shmbus_channel_slot_size_bytes", kGauge, "Bytes per slot, header included.", ch, d(s.slot_size));
  x.add("shmbus_channel_messages_total", kCounter, "Sequences claimed so far (the head).", ch, d(s.head));
  x.add("shmbus_channel_oldest_sequence", kGauge, "Oldest sequence the ring may still hold.", ch, d(s.oldest));
  x.add("shmbus_channel_depth", kGauge, "Messages not yet read by the slowest gating reader.", ch, d(s.depth));
  const Owners o = count_owners(s);
  auto alive = ch;
  alive.emplace_back("state", "alive");
  auto dead = ch;
  dead.emplace_back("state", "dead");
  x.add("shmbus_channel_owners", kGauge, "Table entries owned by a process, by whether it is alive.", alive,
        d(o.alive));
  x.add("shmbus_channel_owners", kGauge, "Table entries owned by a process, by whether it is alive.", dead,
        d(o.total - o.alive));
  x.add("shmbus_channel_abandoned_total", kCounter, "Claims marked abandoned (dead or stalled writers).", ch,
        d(s.abandoned));
  x.add("shmbus_channel_evictions_total", kCounter, "Subscribers evicted for staying a full ring behind.", ch,
        d(s.evictions));

  const ProducerTotals p = producer_totals(s);
  x.add("shmbus_producer_published_total", kCounter, "Messages published on the channel, by every publisher.", ch,
        d(p.published));
  x.add("shmbus_producer_rejected_total", kCounter, "Publishes refused on a full ring (reject policy).", ch,
        d(p.rejected));
  x.add("shmbus_producer_timeouts_total", kCounter, "Blocked publishes that timed out.", ch, d(p.timeouts));
  x.add("shmbus_producer_blocked_seconds_total", kCounter, "Time publishers spent blocked on a full ring.", ch,
        secs(p.blocked_ns));
  x.add("shmbus_producer_aborted_total", kCounter, "Claims given back by their publisher.", ch, d(p.aborted));

  std::set<std::string> used;
  for (const auto& sub : s.subscribers) {
    auto l = ch;
    l.emplace_back("subscriber", entry_label(sub.name, sub.index, used));
    if (is_dlq_retainer(s, sub, dlq_names)) l.emplace_back("role", "dlq_retainer");
    x.add("shmbus_subscriber_lag", kGauge, "Messages between the head and the subscriber's cursor.", l, d(sub.lag));
    x.add("shmbus_subscriber_cursor", kGauge, "Next sequence the subscriber reads.", l, d(sub.cursor));
    x.add("shmbus_subscriber_alive", kGauge, "Whether the subscriber's process is alive.", l, sub.alive ? 1 : 0);
    x.add("shmbus_subscriber_delivered_total", kCounter, "Messages delivered to the subscriber.", l, d(sub.delivered));
    x.add("shmbus_subscriber_lost_total", kCounter, "Messages the subscriber lost (lapped or corrupted).", l,
          d(sub.lost));
  }
  std::set<std::string> used_groups;
  for (std::size_t i = 0; i < s.groups.size(); ++i) {
    const auto& g = s.groups[i];
    auto l = ch;
    l.emplace_back("group", entry_label(g.name, g.index, used_groups));
    x.add("shmbus_group_pending", kGauge, "Messages not yet delivered to any consumer.", l, d(g.pending));
    x.add("shmbus_group_unfinished", kGauge, "Messages not yet acked or dead-lettered (head - floor).", l,
          d(g.unfinished));
    x.add("shmbus_group_in_flight", kGauge, "Leases held now.", l, d(g.in_flight));
    x.add("shmbus_group_due", kGauge, "Nacked messages waiting for their retry time.", l, d(g.due));
    x.add("shmbus_group_dlq_due", kGauge,
          "Messages out of deliveries that nobody is working on, not yet moved to the DLQ.", l, d(g.dlq_due));
    x.add("shmbus_group_oldest_unacked_age_seconds", kGauge, "Age of the oldest unfinished message.", l,
          secs(g.oldest_unacked_age_ns));
    if (g.ordering == GroupOrdering::per_key) {
      // Only ordered groups hold keys back: an unordered group has no such series.
      x.add("shmbus_group_held_keys", kGauge, "Keys whose next message waits behind an unfinished one (per_key).", l,
            d(g.held_keys));
      x.add("shmbus_group_held_messages", kGauge, "Messages held back behind an unfinished one of their key (per_key).",
            l, d(g.held_messages));
      x.add("shmbus_group_held_oldest_age_seconds", kGauge, "Age of the oldest held-back message (per_key).", l,
            secs(g.held_oldest_age_ns));
    }
    const std::uint32_t up = consumers_alive(g);
    auto la = l;
    la.emplace_back("state", "alive");
    auto ld = l;
    ld.emplace_back("state", "dead");
    x.add("shmbus_group_consumers", kGauge, "Consumers of the group, by whether their process is alive.", la, d(up));
    x.add("shmbus_group_consumers", kGauge, "Consumers of the group, by whether their process is alive.", ld,
          d(g.consumers.size() - up));
    if (i < dlqs.size() && dlqs[i].exists && dlqs[i].error.empty()) {
      x.add("shmbus_group_dlq_depth", kGauge, "Dead letters waiting in the group's DLQ channel.", l, d(dlqs[i].depth));
    }
    x.add("shmbus_group_delivered_total", kCounter, "Deliveries made (first and repeated).", l, d(g.delivered));
    x.add("shmbus_group_acked_total", kCounter, "Messages acked.", l, d(g.acked));
    x.add("shmbus_group_redelivered_total", kCounter, "Deliveries after the first.", l, d(g.redelivered));
    x.add("shmbus_group_dead_lettered_total", kCounter, "Messages sent to the DLQ.", l, d(g.dead_lettered));
    x.add("shmbus_group_nacked_total", kCounter, "Nacks.", l, d(g.nacked));
    x.add("shmbus_group_expired_total", kCounter, "Leases that expired without an ack.", l, d(g.expired));
    x.add("shmbus_group_lost_total", kCounter, "Messages overwritten before the group finished them.", l, d(g.lost));
  }
  if (s.archive && s.archive->error.empty()) {
    const ArchiveStats& a = *s.archive;
    x.add("shmbus_archive_first_sequence", kGauge, "Oldest sequence the disk archive holds.", ch, d(a.first_sequence));
    x.add("shmbus_archive_end_sequence", kGauge, "One past the newest archived sequence.", ch, d(a.end_sequence));
    x.add("shmbus_archive_files", kGauge, "Segment files of the disk archive.", ch, d(a.files));
    x.add("shmbus_archive_bytes", kGauge, "Bytes of the disk archive's segment files.", ch, d(a.bytes));
    x.add("shmbus_archive_archiver_alive", kGauge, "Whether the channel's archiver process is alive.", ch,
          a.archiver_alive ? 1 : 0);
    if (a.archiver) {
      x.add("shmbus_archive_lag", kGauge, "Messages published but not yet archived (head - archiver cursor).", ch,
            d(a.lag));
      x.add("shmbus_archive_lost_total", kCounter, "Sequences the archiver could not archive (gaps).", ch, d(a.lost));
      if (a.last_fsync_realtime_ns != 0) {
        x.add("shmbus_archive_fsync_age_seconds", kGauge, "Time since the archiver's last fdatasync.", ch,
              secs(a.fsync_age_ns));
      }
    }
  }
}

}  // namespace

std::string prometheus_text(const std::string& bus, const std::vector<Snapshot>& snaps) {
  Exposition x;
  std::set<std::string> dlq_names;
  for (const auto& snap : snaps)
    if (snap.stats)
      for (const auto& g : snap.stats->groups) dlq_names.insert(g.dlq);
  for (const auto& snap : snaps) {
    const Exposition::Labels ch{{"bus", bus}, {"channel", snap.name}};
    if (!snap.stats) {
      x.add("shmbus_channel_up", kGauge, "Whether the channel's segment could be read (1) or not (0).", ch, 0);
      continue;
    }
    channel_metrics(x, ch, *snap.stats, snap.dlqs, dlq_names);
  }
  return x.text();
}

}  // namespace shmbus::probe
