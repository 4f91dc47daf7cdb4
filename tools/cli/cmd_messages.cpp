// `shmbus peek`, `tail`, `publish` and `subscribe`: messages from and to the
// shell. peek and tail read by sequence without taking part (no cursor, no
// table entry); publish and subscribe are real participants.
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "probe.hpp"

namespace shmbus::probe {

namespace {

// --idle-exit: up to a year (0: never).
constexpr double kMaxIdleExitSeconds = 365.0 * 86400;

struct ReadArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  std::string from;  // peek: start position
  std::uint64_t count = 10;
  bool follow = false;  // tail -f
  std::string format = "text";
  double idle_exit_s = 0;  // subscribe / tail -f: stop after this long without a message
  std::string name;        // subscribe: durable name
  std::string group;       // subscribe: consume through a group (ack after printing)
};

// Prints messages [from, ...) by peeking, at most `count` (0: no limit);
// follows the head if `follow`. Messages overwritten before they could be
// read are reported on stderr with how many were skipped.
int print_range(const Channel& ch, std::uint64_t from, std::uint64_t count, bool follow, PayloadFormat fmt,
                double idle_exit_s) {
  std::vector<std::byte> buf(ch.max_payload());
  std::uint64_t seq = from, printed = 0;
  std::uint64_t idle_since = monotonic_now_ns();
  std::uint64_t backoff_us = 100;
  while (count == 0 || printed < count) {
    if (stop_requested()) break;
    Message m;
    const PollStatus st = ch.peek(seq, m, buf);
    if (st == PollStatus::ok) {
      print_message(std::cout, m, fmt);
      ++seq;
      ++printed;
      idle_since = monotonic_now_ns();
      backoff_us = 100;
      continue;
    }
    if (st == PollStatus::lapped) {
      const std::uint64_t oldest = ch.oldest();
      const std::uint64_t next = oldest > seq ? oldest : seq + 1;
      std::cerr << "shmbus: skipped " << (next - seq) << " message(s) from #" << seq
                << " (overwritten before they were read)\n";
      seq = next;
      continue;
    }
    if (st == PollStatus::corrupted) {
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
  std::uint64_t from = resolve_start(*ch, *at);
  if (from < ch->oldest()) {
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
  const std::uint64_t head = ch->head();
  std::uint64_t from = head > a.count ? head - a.count : 0;
  if (from < ch->oldest()) from = ch->oldest();
  // tail -f: the last `count` messages, then everything new (no limit).
  return print_range(*ch, from, a.follow ? 0 : a.count, a.follow, *fmt, a.idle_exit_s);
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
  tail->add_option("--idle-exit", t->idle_exit_s,
                   "With -f: stop after this many seconds without a new message (0: never)")
      ->check(seconds_in(0, kMaxIdleExitSeconds));
  tail->callback([t, &action] { action = [t] { return cmd_tail(*t); }; });

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
  subscribe->add_option("--group", s->group, "Consume through this consumer group, acking after printing");
  subscribe->add_option("-n,--count", s->count, "Stop after this many messages (0: until interrupted)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  subscribe->add_option("--idle-exit", s->idle_exit_s, "Stop after this many seconds without a message (0: never)")
      ->check(seconds_in(0, kMaxIdleExitSeconds));
  subscribe->callback([s, &action] { action = [s] { return cmd_subscribe(*s); }; });
}

}  // namespace shmbus::probe
