// `shmbus peek`, `tail`, `replay`, `publish` and `subscribe`: messages from
// and to the shell. peek, tail and replay read by sequence without taking
// part (no cursor, no table entry), from the ring or, for sequences it no
// longer holds, the channel's archive; publish and subscribe are real
// participants.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "api/detail.hpp"
#include "bus/archive/archive_source.hpp"
#include "bus/ring/peek.hpp"
#include "probe.hpp"

namespace shmbus::probe {

namespace {

// --idle-exit: up to a year (0: never).
constexpr double kMaxIdleExitSeconds = 365.0 * 86400;

struct ReadArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  std::string from;   // peek, tail, replay: start position
  std::string to;     // replay: the last sequence or time printed
  bool json = false;  // replay: --json (as --format json)
  std::uint64_t count = 10;
  bool follow = false;  // tail -f
  std::string format = "text";
  double idle_exit_s = 0;          // subscribe / tail -f: stop after this long without a message
  std::string name;                // subscribe: durable name
  std::string group;               // subscribe: consume through a group (ack after printing)
  std::string ordering = "none";   // subscribe --group: the group's ordering (a new group's; checked on join)
  std::uint32_t order_window = 0;  // subscribe --group --ordering per_key: 0 = min(capacity, 4096)
};

// Where printing stops: before sequence `end_seq`, or before the first
// message stamped after `end_time_ns` (0: no time bound).
struct RangeEnd {
  std::uint64_t end_seq = UINT64_MAX;
  std::uint64_t end_time_ns = 0;
};

// Prints messages [from, ...) by peeking (the ring, or the archive for what
// the ring no longer holds), at most `count` (0: no limit); follows the head
// if `follow`. Messages neither holds are reported on stderr with how many
// were skipped, unreadable archive records with the archive's error.
int print_range(const Channel& ch, std::uint64_t from, std::uint64_t count, bool follow, PayloadFormat fmt,
                double idle_exit_s, const RangeEnd& end = {}) {
  const bus::ChannelState& state = *detail::state_of(ch);
  // An archived payload is at most what the ring could hold.
  std::vector<std::byte> buf(ch.max_payload());
  std::uint64_t seq = from, printed = 0;
  std::uint64_t idle_since = monotonic_now_ns();
  std::uint64_t backoff_us = 100;
  bus::ArchivePeek archive;
  // The next sequence readable after `seq`: the archive's next record, but
  // never past what the ring may still hold.
  const auto next_after = [&](std::uint64_t archive_next) {
    const std::uint64_t ring = std::max(ch.oldest(), seq + 1);
    return archive_next > seq ? std::min(archive_next, ring) : ring;
  };
  while ((count == 0 || printed < count) && seq < end.end_seq) {
    if (stop_requested()) break;
    Message m;
    const PollStatus st = bus::peek_message(state, seq, m, buf, &archive);
    if (st == PollStatus::ok) {
      if (end.end_time_ns != 0 && m.timestamp_ns > end.end_time_ns) break;
      print_message(std::cout, m, fmt);
      ++seq;
      ++printed;
      idle_since = monotonic_now_ns();
      backoff_us = 100;
      continue;
    }
    if (st == PollStatus::lapped) {
      const std::uint64_t next = std::min(next_after(archive.next), end.end_seq);
      std::cerr << "shmbus: skipped " << (next - seq) << " message(s) from #" << seq
                << (state.geo.archive_dir.empty() ? " (overwritten before they were read)\n"
                                                  : " (no longer in the ring, and not in the archive)\n");
      seq = next;
      continue;
    }
    if (st == PollStatus::corrupted) {
      if (!archive.error.empty()) {
        const std::uint64_t next = std::min(next_after(archive.next != 0 ? archive.next : UINT64_MAX), end.end_seq);
        std::cerr << "shmbus: #" << seq << ": " << archive.error << "; skipped " << (next - seq)
                  << " message(s) to the next archive file or the ring\n";
        seq = next;
        continue;
      }
      std::cerr << "shmbus: #" << seq << " skipped (claim abandoned or slot corrupted)\n";
      ++seq;
      continue;
    }
    // empty: not committed yet. A follower that waits on a channel that was
    // removed (or whose file shrank) would wait for ever: stop, and say why.
    if (const PollStatus gone = ch.liveness(); gone != PollStatus::ok) {
      std::cout.flush();
      std::cerr << "shmbus: channel '" << ch.name() << "' " << gone_reason(gone) << "; stopping\n";
      return kExitError;
    }
    if (!follow) {
      if (seq >= ch.head()) break;
      // A claim in flight below the head: wait for it (a stalled claim is
      // abandoned by readers after the unblock timeout).
    }
    if (idle_exit_s > 0 && monotonic_now_ns() - idle_since >= seconds_to_ns(idle_exit_s)) break;
    std::cout.flush();
    std::this_thread::sleep_for(std::chrono::microseconds(backoff_us));
    backoff_us = std::min<std::uint64_t>(backoff_us * 2, 20'000);
  }
  std::cout.flush();
  return kExitOk;
}

// The first sequence a start position names, looking into the channel's
// archive for what the ring no longer holds: earliest is the archive's first
// record, a time older than the ring the archive's first record at or after
// it. Says on stderr when messages since that time are no longer kept.
std::uint64_t resolve_start_archived(const Channel& ch, const StartAt& at, const std::string& what,
                                     const std::string& text) {
  const std::uint64_t ring = resolve_start(ch, at);
  const std::string& dir = detail::state_of(ch)->geo.archive_dir;
  if (dir.empty() || (at.kind != StartAt::Kind::earliest && at.kind != StartAt::Kind::timestamp)) return ring;
  if (at.kind == StartAt::Kind::timestamp && ring >= ch.oldest()) return ring;  // the ring holds it all
  bus::archive::ArchiveSource src(dir);
  if (at.kind == StartAt::Kind::earliest) {
    auto first = src.first_sequence();
    return first.ok() && first->has_value() ? std::min(**first, ring) : ring;
  }
  auto s = src.seek_time(at.value);
  auto first = src.first_sequence();
  if (!s.ok() || !first.ok() || !first->has_value()) {
    std::cerr << "shmbus " << what << ": messages since " << text << " are no longer all in the ring and the archive "
              << (!s.ok()       ? "cannot be read: " + s.error().message()
                  : !first.ok() ? "cannot be read: " + first.error().message()
                                : std::string("holds none"))
              << "; starting at the oldest, #" << ch.oldest() << '\n';
    return ch.oldest();
  }
  if (s->has_value()) {
    if (**s == **first && **first > 0) {
      std::cerr << "shmbus " << what << ": the archive's first record, #" << **first << ", is already after " << text
                << ": up to " << **first << " older message(s) are no longer kept\n";
    }
    return std::min(**s, ch.oldest());
  }
  auto end = src.end_sequence();
  if (end.ok() && *end < ch.oldest()) {
    std::cerr << "shmbus " << what << ": messages since " << text << " are no longer all kept: up to "
              << ch.oldest() - *end << " (#" << *end << " to #" << ch.oldest() - 1
              << ") neither in the archive nor the ring; starting at the oldest, #" << ch.oldest() << '\n';
  }
  return ch.oldest();
}

int cmd_peek(const ReadArgs& a) {
  const auto fmt = parse_format(a.format);
  std::string err;
  const auto at = parse_start(a.from, err);
  if (!fmt || !at) {
    std::cerr << "shmbus peek: " << (fmt ? err : "bad --format '" + a.format + "': text, hex or json") << '\n';
    return kExitError;
  }
  int rc = kExitOk;
  auto ch = open_observer(a.channel, a.bus, rc);
  if (!ch) return rc;
  const bool archived = !detail::state_of(*ch)->geo.archive_dir.empty();
  std::uint64_t from = resolve_start_archived(*ch, *at, "peek", a.from);
  // With an archive, print_range reads what the ring lost there (and says
  // what neither holds).
  if (from < ch->oldest() && !archived) {
    if (at->kind == StartAt::Kind::sequence) {
      std::cerr << "shmbus peek: #" << from << " is no longer in the ring; starting at the oldest, #" << ch->oldest()
                << '\n';
    } else if (at->kind == StartAt::Kind::timestamp) {
      // The oldest message held is already newer than the time asked for,
      // and older ones were overwritten: some of them may be from then.
      std::cerr << "shmbus peek: messages since " << a.from << " are no longer all in the ring: up to "
                << ch->oldest() - from << " overwritten (#" << from << " to #" << ch->oldest() - 1
                << "); starting at the oldest, #" << ch->oldest() << '\n';
    }
    from = ch->oldest();
  }
  return print_range(*ch, from, a.count, false, *fmt, 0);
}

int cmd_tail(const ReadArgs& a) {
  const auto fmt = parse_format(a.format);
  if (!fmt) {
    std::cerr << "shmbus tail: bad --format '" << a.format << "': text, hex or json\n";
    return kExitError;
  }
  int rc = kExitOk;
  auto ch = open_observer(a.channel, a.bus, rc);
  if (!ch) return rc;
  install_stop_handlers();
  if (!a.from.empty()) {
    // tail --from: everything from there (the archive for what the ring no
    // longer holds), then, with -f, what comes.
    std::string err;
    const auto at = parse_start(a.from, err);
    if (!at) {
      std::cerr << "shmbus tail: " << err << '\n';
      return kExitError;
    }
    const std::uint64_t from = resolve_start_archived(*ch, *at, "tail", a.from);
    return print_range(*ch, from, 0, a.follow, *fmt, a.idle_exit_s);
  }
  const std::uint64_t head = ch->head();
  std::uint64_t from = head > a.count ? head - a.count : 0;
  if (from < ch->oldest()) from = ch->oldest();
  // tail -f: the last `count` messages, then everything new (no limit).
  return print_range(*ch, from, a.follow ? 0 : a.count, a.follow, *fmt, a.idle_exit_s);
}

// shmbus replay CHANNEL --from TIME|SEQ [--to TIME|SEQ]: the messages from a
// position (read from the archive where the ring no longer holds them) up to
// the last one asked for, or the head when it started.
int cmd_replay(const ReadArgs& a) {
  const auto fmt = parse_format(a.json ? "json" : a.format);
  if (!fmt) {
    std::cerr << "shmbus replay: bad --format '" << a.format << "': text, hex or json\n";
    return kExitError;
  }
  std::string err;
  const auto at = parse_start(a.from, err);
  if (!at) {
    std::cerr << "shmbus replay: --from: " << err << '\n';
    return kExitError;
  }
  RangeEnd end;
  if (!a.to.empty()) {
    const auto to = parse_start(a.to, err);
    if (!to || to->kind == StartAt::Kind::earliest) {
      std::cerr << "shmbus replay: --to: " << (to ? "earliest is no end; give a sequence, a time or latest" : err)
                << '\n';
      return kExitError;
    }
    if (to->kind == StartAt::Kind::sequence) end.end_seq = to->value == UINT64_MAX ? UINT64_MAX : to->value + 1;
    if (to->kind == StartAt::Kind::timestamp) end.end_time_ns = std::max<std::uint64_t>(to->value, 1);
  }
  int rc = kExitOk;
  auto ch = open_observer(a.channel, a.bus, rc);
  if (!ch) return rc;
  install_stop_handlers();
  if (!a.to.empty() && a.to == "latest") end.end_seq = ch->head();
  const std::uint64_t from = resolve_start_archived(*ch, *at, "replay", a.from);
  return print_range(*ch, from, 0, false, *fmt, 0, end);
}

struct PublishArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  std::string file;
  bool whole = false;
  std::uint64_t key = 0;
  std::uint64_t id = 0;  ///< the first message's id; each further one gets the next (0: none)
  std::uint32_t type = 0;
  double timeout_s = 5;
};

int cmd_publish(const PublishArgs& a) {
  int rc = kExitOk;
  auto ch = open_participant(a.channel, a.bus, rc);
  if (!ch) return rc;
  auto pub = ch->publisher();
  if (!pub) {
    std::cerr << "shmbus publish: " << to_string(pub.error().code()) << ": " << pub.error().message() << '\n';
    return kExitError;
  }
  std::ifstream file;
  if (!a.file.empty()) {
    file.open(a.file, std::ios::binary);
    if (!file) {
      std::cerr << "shmbus publish: cannot open '" << a.file << "'\n";
      return kExitError;
    }
  }
  std::istream& in = a.file.empty() ? std::cin : file;
  MessageMeta meta;
  meta.key = a.key;
  meta.type = a.type;
  const std::uint64_t timeout_ns = seconds_to_ns(a.timeout_s);
  std::uint64_t n = 0;
  auto send = [&](std::string_view payload) {
    // Every line is its own event, so each gets its own id: consecutive ones
    // from --id (a consumer that deduplicates on the id must not take the
    // second line for a copy of the first).
    meta.id = a.id == 0 ? 0 : a.id + n;
    const PublishStatus st = pub->publish(payload, meta, timeout_ns);
    if (st != PublishStatus::ok) {
      std::cerr << "shmbus publish: message " << n + 1 << " (" << payload.size() << " bytes): " << to_string(st)
                << (st == PublishStatus::too_large ? " (max payload " + num(ch->max_payload()) + ")" : "") << '\n';
      return false;
    }
    ++n;
    return true;
  };
  bool ok = true;
  if (a.whole) {
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ok = send(all);
  } else {
    std::string line;
    while (ok && std::getline(in, line)) ok = send(line);
  }
  std::cerr << "shmbus publish: " << n << " message(s) published to " << a.channel << '\n';
  return ok ? kExitOk : kExitError;
}

int cmd_subscribe(const ReadArgs& a) {
  const auto fmt = parse_format(a.format);
  std::string err;
  // Where the API starts when nothing is said: a new subscriber at the
  // latest message (SubscribeOptions), a new group at the earliest
  // (GroupOptions).
  const auto at = parse_start(!a.from.empty() ? a.from : a.group.empty() ? "latest" : "earliest", err);
  if (!fmt || !at) {
    std::cerr << "shmbus subscribe: " << (fmt ? err : "bad --format '" + a.format + "': text, hex or json") << '\n';
    return kExitError;
  }
  const auto ordering = parse_ordering(a.ordering);
  if (!ordering) {
    std::cerr << "shmbus subscribe: bad --ordering '" << a.ordering << "': none or per_key\n";
    return kExitError;
  }
  if (a.order_window != 0 && *ordering != GroupOrdering::per_key) {
    // A window means nothing to an unordered group: refuse it rather than
    // drop it silently.
    std::cerr << "shmbus subscribe: --order-window " << a.order_window << " needs --ordering per_key\n";
    return kExitError;
  }
  int rc = kExitOk;
  auto ch = open_participant(a.channel, a.bus, rc);
  if (!ch) return rc;
  install_stop_handlers();
  std::vector<std::byte> buf(ch->max_payload());
  std::uint64_t printed = 0;
  std::uint64_t idle_since = monotonic_now_ns();
  const auto idle_over = [&] {
    return a.idle_exit_s > 0 && monotonic_now_ns() - idle_since >= seconds_to_ns(a.idle_exit_s);
  };
  const std::uint64_t wait_ns = 100'000'000ULL;  // re-check the stop flag this often
  if (!a.group.empty()) {
    GroupOptions go;
    go.start = *at;
    go.ordering = *ordering;
    go.order_window = a.order_window;
    auto con = ch->join_group(a.group, go);
    if (!con) {
      std::cerr << "shmbus subscribe: group '" << a.group << "': " << to_string(con.error().code()) << ": "
                << con.error().message() << '\n';
      return kExitError;
    }
    while (!stop_requested() && (a.count == 0 || printed < a.count) && !idle_over()) {
      Delivery d;
      const PollStatus st = con->receive_wait(d, buf, wait_ns);
      if (st == PollStatus::removed || st == PollStatus::segment_lost) {
        std::cerr << "shmbus subscribe: channel '" << a.channel << "' " << gone_reason(st) << "; stopping\n";
        return kExitError;
      }
      if (st != PollStatus::ok) continue;
      print_message(std::cout, d.message, *fmt);
      std::cout.flush();  // printed before the ack: at-least-once
      if (con->ack(d) != AckStatus::ok)
        std::cerr << "shmbus subscribe: ack of #" << d.sequence << " refused (lease lost)\n";
      ++printed;
      idle_since = monotonic_now_ns();
    }
    return kExitOk;
  }
  SubscribeOptions so;
  so.name = a.name;
  so.start = *at;
  auto sub = ch->subscribe(so);
  if (!sub) {
    std::cerr << "shmbus subscribe: " << to_string(sub.error().code()) << ": " << sub.error().message() << '\n';
    return kExitError;
  }
  while (!stop_requested() && (a.count == 0 || printed < a.count) && !idle_over()) {
    Message m;
    const PollStatus st = sub->poll_wait(m, buf, wait_ns);
    if (st == PollStatus::removed || st == PollStatus::segment_lost) {
      std::cerr << "shmbus subscribe: channel '" << a.channel << "' " << gone_reason(st) << "; stopping\n";
      return kExitError;
    }
    if (st == PollStatus::lapped) {
      std::cerr << "shmbus subscribe: lapped: messages were overwritten before they were read\n";
      continue;
    }
    if (st != PollStatus::ok) continue;
    print_message(std::cout, m, *fmt);
    std::cout.flush();
    ++printed;
    idle_since = monotonic_now_ns();
  }
  return kExitOk;
}

void add_read_options(CLI::App* cmd, ReadArgs& a) {
  cmd->add_option("CHANNEL", a.channel, "Channel name")->required();
  cmd->add_option("--bus", a.bus, "Bus name")->capture_default_str();
  cmd->add_option("--format", a.format, "text, hex or json (one object per line)")->capture_default_str();
}

}  // namespace

void add_message_commands(CLI::App& app, Action& action) {
  auto p = std::make_shared<ReadArgs>();
  p->from = "earliest";
  auto* peek = app.add_subcommand("peek", "Show messages without consuming them (no cursor, no table entry)");
  add_read_options(peek, *p);
  peek->add_option("--from", p->from,
                   "earliest | latest | SEQ | -30s/-5m/-2h/-1d | @UNIX_SECONDS | YYYY-MM-DDTHH:MM:SS (UTC)")
      ->capture_default_str();
  peek->add_option("-n,--count", p->count, "At most this many messages (0: up to the head)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  peek->callback([p, &action] { action = [p] { return cmd_peek(*p); }; });

  auto t = std::make_shared<ReadArgs>();
  auto* tail = app.add_subcommand("tail", "Show the last messages without consuming them; -f follows");
  add_read_options(tail, *t);
  tail->add_option("-n,--count", t->count, "How many of the last messages")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  tail->add_flag("-f,--follow", t->follow, "Keep printing new messages until interrupted");
  tail->add_option("--from", t->from,
                   "Print everything from here instead of the last --count (older than the ring: from the "
                   "channel's archive): earliest | latest | SEQ | -30s/-5m/-2h/-1d | @UNIX_SECONDS | "
                   "YYYY-MM-DDTHH:MM:SS (UTC)");
  tail->add_option("--idle-exit", t->idle_exit_s,
                   "With -f: stop after this many seconds without a new message (0: never)")
      ->check(seconds_in(0, kMaxIdleExitSeconds));
  tail->callback([t, &action] { action = [t] { return cmd_tail(*t); }; });

  auto r = std::make_shared<ReadArgs>();
  auto* replay = app.add_subcommand(
      "replay", "Print messages from a position on, reading what the ring no longer holds from the channel's archive");
  add_read_options(replay, *r);
  replay
      ->add_option("--from", r->from,
                   "Where to start: earliest (the archive's first record) | SEQ | -30s/-5m/-2h/-1d | @UNIX_SECONDS | "
                   "YYYY-MM-DDTHH:MM:SS (UTC)")
      ->required();
  replay->add_option("--to", r->to,
                     "The last message printed: SEQ (inclusive), a time (messages stamped at or before it) or "
                     "latest; default: the head when replay starts");
  replay->add_flag("--json", r->json, "One JSON object per line (as --format json)");
  replay->callback([r, &action] { action = [r] { return cmd_replay(*r); }; });

  auto pa = std::make_shared<PublishArgs>();
  auto* publish = app.add_subcommand("publish", "Publish each line of stdin (or --file) as a message");
  publish->add_option("CHANNEL", pa->channel, "Channel name")->required();
  publish->add_option("--bus", pa->bus, "Bus name")->capture_default_str();
  publish->add_option("--file", pa->file, "Read from this file instead of stdin");
  publish->add_flag("--whole", pa->whole, "Publish the whole input as one message instead of one per line");
  publish->add_option("--key", pa->key, "Message key")->capture_default_str()->check(integer_in(0, UINT64_MAX));
  publish
      ->add_option("--id", pa->id,
                   "Message id of the first message; each further line gets the next id (0: no id). Consumers "
                   "deduplicate on the id, so publish the same ids again when retrying the same input")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  publish->add_option("--type", pa->type, "Message type")->capture_default_str()->check(integer_in(0, UINT32_MAX));
  publish->add_option("--timeout", pa->timeout_s, "Seconds a publish may block on a full ring (0: do not wait)")
      ->capture_default_str()
      ->check(seconds_in(0, 86400));
  publish->callback([pa, &action] { action = [pa] { return cmd_publish(*pa); }; });

  auto s = std::make_shared<ReadArgs>();
  s->count = 0;
  auto* subscribe = app.add_subcommand(
      "subscribe", "Consume messages and print them: as a subscriber, or as a group consumer (--group, acks each)");
  add_read_options(subscribe, *s);
  subscribe->add_option("--from", s->from,
                        "Where a new subscriber or group starts: earliest | latest | SEQ | -30s/-5m/-2h/-1d | "
                        "@UNIX_SECONDS | YYYY-MM-DDTHH:MM:SS (UTC). Default: latest for a subscriber, earliest "
                        "for a group (as the API). A durable subscriber resumes its cursor and an existing "
                        "group its position, whatever --from says");
  subscribe->add_option("--name", s->name, "Durable subscriber name (resumes its cursor)");
  auto* group_opt =
      subscribe->add_option("--group", s->group, "Consume through this consumer group, acking after printing");
  subscribe
      ->add_option("--ordering", s->ordering,
                   "With --group: none (any message to any consumer) or per_key (a key's messages one at a time, "
                   "in sequence order). Creates the group so, or must match the existing group's")
      ->capture_default_str()
      ->needs(group_opt);
  subscribe
      ->add_option("--order-window", s->order_window,
                   "With --ordering per_key: sequences past the group's floor a receive looks at (0: "
                   "min(capacity, 4096)); must match an existing group's")
      ->capture_default_str()
      ->check(integer_in(0, UINT32_MAX))
      ->needs(group_opt);
  subscribe->add_option("-n,--count", s->count, "Stop after this many messages (0: until interrupted)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  subscribe->add_option("--idle-exit", s->idle_exit_s, "Stop after this many seconds without a message (0: never)")
      ->check(seconds_in(0, kMaxIdleExitSeconds));
  subscribe->callback([s, &action] { action = [s] { return cmd_subscribe(*s); }; });
}

}  // namespace shmbus::probe
