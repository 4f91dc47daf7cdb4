// `shmbus watch`, `shmbus check` and `shmbus metrics`: the monitoring
// commands. All read-only (snapshots of read-only mappings).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <httplib.h>

#include "bus/group/consumer_core.hpp"

#include "probe.hpp"

namespace shmbus::probe {

namespace {

// ---- watch --------------------------------------------------------------

struct WatchArgs {
  std::string bus{kDefaultBus};
  std::string channel;
  bool all = false;
  double interval_s = 1.0;
  std::uint64_t count = 0;  // frames; 0 = until interrupted
  bool json = false;
  bool no_clear = false;
};

double rate(std::uint64_t now, std::uint64_t before, double dt) {
  return dt > 0 ? (static_cast<double>(now) - static_cast<double>(before)) / dt : 0.0;
}

std::string fmt_rate(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", r);
  return buf;
}

std::vector<Snapshot> sample(const WatchArgs& a, std::string& error) {
  std::vector<Snapshot> snaps;
  if (a.all) {
    if (!take_all(a.bus, snaps, error)) return {};
  } else {
    snaps.push_back(take_snapshot(a.channel, a.bus));
  }
  return snaps;
}

const Snapshot* find(const std::vector<Snapshot>& v, const std::string& name) {
  for (const auto& s : v)
    if (s.name == name) return &s;
  return nullptr;
}

template <typename T, typename Key>
const T* find_entry(const std::vector<T>& v, const Key& key) {
  for (const auto& e : v)
    if (key(e)) return &e;
  return nullptr;
}

// One frame: per channel its message rate, per subscriber lag and its growth
// per second, per group ack rate and backlog growth, all from two samples.
nlohmann::json frame_json(const std::vector<Snapshot>& prev, const std::vector<Snapshot>& cur) {
  nlohmann::json chans = nlohmann::json::array();
  for (const auto& c : cur) {
    nlohmann::json j{{"name", c.name}, {"ok", c.stats.has_value()}};
    if (!c.stats) {
      j["error"] = {{"code", c.error_code}, {"message", c.error_message}};
      chans.push_back(std::move(j));
      continue;
    }
    const ChannelStats& s = *c.stats;
    const Snapshot* p = find(prev, c.name);
    const bool have = p != nullptr && p->stats.has_value();
    const double dt = have ? static_cast<double>(c.taken_ns - p->taken_ns) / 1e9 : 0.0;
    j["head"] = s.head;
    j["depth"] = s.depth;
    j["publish_rate"] = have ? rate(s.head, p->stats->head, dt) : 0.0;
    nlohmann::json subs = nlohmann::json::array();
    for (const auto& sub : s.subscribers) {
      const SubscriberStats* ps =
          have ? find_entry(p->stats->subscribers,
                            [&](const SubscriberStats& e) { return e.index == sub.index && e.name == sub.name; })
               : nullptr;
      subs.push_back({{"name", sub.name.empty() ? "#" + num(sub.index) : sub.name},
                      {"alive", sub.alive},
                      {"lag", sub.lag},
                      {"lag_growth", ps ? rate(sub.lag, ps->lag, dt) : 0.0},
                      {"delivery_rate", ps ? rate(sub.delivered, ps->delivered, dt) : 0.0}});
    }
    j["subscribers"] = std::move(subs);
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : s.groups) {
      const GroupStats* pg =
          have ? find_entry(p->stats->groups, [&](const GroupStats& e) { return e.name == g.name; }) : nullptr;
      groups.push_back({{"name", g.name},
                        {"unfinished", g.unfinished},
                        {"in_flight", g.in_flight},
                        {"backlog_growth", pg ? rate(g.unfinished, pg->unfinished, dt) : 0.0},
                        {"ack_rate", pg ? rate(g.acked, pg->acked, dt) : 0.0},
                        {"dead_lettered", g.dead_lettered},
                        {"consumers_alive", consumers_alive(g)},
                        {"ordering", std::string(to_string(g.ordering))},
                        {"held_keys", g.held_keys},
                        {"held_messages", g.held_messages},
                        {"held_oldest_age_ns", g.held_oldest_age_ns}});
    }
    j["groups"] = std::move(groups);
    chans.push_back(std::move(j));
  }
  return nlohmann::json{{"schema_version", 1}, {"time", iso_time(realtime_now_ns())}, {"channels", chans}};
}

void print_frame(const nlohmann::json& f, const WatchArgs& a) {
  std::cout << "shmbus watch  bus " << a.bus << "  " << f["time"].get<std::string>() << "  every " << a.interval_s
            << "s\n\n";
  Table ch({"CHANNEL", "HEAD", "DEPTH", "MSG/S"});
  Table subs({"CHANNEL", "SUBSCRIBER", "ALIVE", "LAG", "LAG/S", "DELIVERED/S"});
  Table groups(
      {"CHANNEL", "GROUP", "UNFINISHED", "IN_FLIGHT", "BACKLOG/S", "ACKED/S", "DEAD", "HELD", "HELD_AGE", "CONSUMERS"});
  std::vector<std::string> errors;
  for (const auto& c : f["channels"]) {
    const std::string name = c["name"];
    if (!c["ok"].get<bool>()) {
      ch.add({name, "ERROR", "-", "-"});
      errors.push_back(name + ": " + c["error"]["code"].get<std::string>() + ": " +
                       c["error"]["message"].get<std::string>());
      continue;
    }
    ch.add({name, num(c["head"]), num(c["depth"]), fmt_rate(c["publish_rate"])});
    for (const auto& s : c["subscribers"])
      subs.add({name, s["name"], s["alive"].get<bool>() ? "yes" : "no", num(s["lag"]), fmt_rate(s["lag_growth"]),
                fmt_rate(s["delivery_rate"])});
    for (const auto& g : c["groups"]) {
      // HELD: keys / messages held back behind an unfinished message of
      // their key; only per_key groups hold any ("-" elsewhere).
      const bool per_key = g["ordering"] == "per_key";
      groups.add({name, g["name"], num(g["unfinished"]), num(g["in_flight"]), fmt_rate(g["backlog_growth"]),
                  fmt_rate(g["ack_rate"]), num(g["dead_lettered"]),
                  per_key ? num(g["held_keys"]) + "/" + num(g["held_messages"]) : "-",
                  per_key ? duration(g["held_oldest_age_ns"].get<std::uint64_t>()) : "-", num(g["consumers_alive"])});
    }
  }
  ch.print(std::cout);
  std::cout << '\n';
  subs.print(std::cout);
  std::cout << '\n';
  groups.print(std::cout);
  for (const auto& e : errors) std::cout << "error: " << e << '\n';
}

bool sleep_interruptibly(double seconds) {
  const std::uint64_t until = monotonic_now_ns() + seconds_to_ns(seconds);
  while (!stop_requested()) {
    const std::uint64_t now = monotonic_now_ns();
    if (now >= until) return true;
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<std::uint64_t>(until - now, 50'000'000)));
  }
  return false;
}

int cmd_watch(const WatchArgs& a) {
  if (!a.all && a.channel.empty()) {
    std::cerr << "shmbus watch: name a CHANNEL or give --all\n";
    return kExitError;
  }
  install_stop_handlers();
  const bool clear = !a.json && !a.no_clear && isatty(STDOUT_FILENO) == 1;
  std::string error;
  std::vector<Snapshot> prev = sample(a, error);
  if (!error.empty()) {
    std::cerr << "shmbus: " << error << '\n';
    return kExitError;
  }
  if (!a.all && !prev.front().stats && prev.front().error_code == "not_found") {
    std::cerr << "shmbus: no channel '" << a.channel << "' on bus '" << a.bus << "'\n";
    return kExitNotFound;
  }
  for (std::uint64_t n = 0; a.count == 0 || n < a.count; ++n) {
    if (!sleep_interruptibly(a.interval_s)) break;
    std::vector<Snapshot> cur = sample(a, error);
    if (!error.empty()) {
      std::cerr << "shmbus: " << error << '\n';
      return kExitError;
    }
    const nlohmann::json f = frame_json(prev, cur);
    if (a.json) {
      std::cout << json_text(f) << std::endl;
    } else {
      if (clear)
        std::cout << "\033[H\033[2J";
      else if (n > 0)
        std::cout << '\n';
      print_frame(f, a);
      std::cout << std::flush;
    }
    prev = std::move(cur);
  }
  return kExitOk;
}

// ---- check --------------------------------------------------------------

struct Threshold {
  std::optional<double> warn;
  std::optional<double> crit;
};

// A threshold bound: a finite number >= 0 (no nan, inf or negative limit,
// which would make a check always or never fire).
constexpr double kMaxThreshold = 1e15;

std::optional<double> parse_limit(std::string_view s) {
  double v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc{} || r.ptr != s.data() + s.size() || !(v >= 0 && v <= kMaxThreshold)) {
    return std::nullopt;
  }
  return v;
}

/// "C" (critical above C) or "W,C" (warning above W, critical above C),
/// each in 0..kMaxThreshold, W <= C.
std::optional<Threshold> parse_threshold(const std::string& s) {
  Threshold t;
  const auto comma = s.find(',');
  if (comma == std::string::npos) {
    t.crit = parse_limit(s);
    if (!t.crit) return std::nullopt;
  } else {
    t.warn = parse_limit(std::string_view(s).substr(0, comma));
    t.crit = parse_limit(std::string_view(s).substr(comma + 1));
    if (!t.warn || !t.crit || *t.crit < *t.warn) return std::nullopt;
  }
  return t;
}

struct CheckArgs {
  std::string bus{kDefaultBus};
  std::vector<std::string> channels;
  std::string max_lag, max_dlq, max_oldest_unacked, max_held_age, max_archive_lag, max_fsync_age;
  bool dead_owners = false;
  bool archiver_down = false;
};

constexpr int kOk = 0, kWarning = 1, kCritical = 2;

struct Checker {
  int worst = kOk;
  std::vector<std::string> lines;

  void report(int severity, const std::string& what) {
    worst = std::max(worst, severity);
    lines.push_back(std::string(severity == kCritical ? "CRITICAL " : "WARNING ") + what);
  }
  void limit(const std::optional<Threshold>& t, double value, const std::string& what, const char* unit) {
    if (!t) return;
    std::ostringstream os;
    os << what << ' ' << value << unit;
    if (t->crit && value > *t->crit) {
      os << " > " << *t->crit << unit;
      report(kCritical, os.str());
    } else if (t->warn && value > *t->warn) {
      os << " > " << *t->warn << unit;
      report(kWarning, os.str());
    }
  }
};

// One threshold option into `out` (left empty when the option is not
// given); false with a message when its value is bad.
bool parse_threshold_option(const std::string& opt, const std::string& v, std::optional<Threshold>& out) {
  if (v.empty()) return true;
  out = parse_threshold(v);
  if (!out) {
    std::cerr << "shmbus check: " << opt << " '" << v
              << "': expected LIMIT or WARN,CRIT, numbers in 0..1e+15 with WARN <= CRIT\n";
  }
  return out.has_value();
}

/// The limits `check` judges a group by (each empty when its option is not given).
struct GroupLimits {
  std::optional<Threshold> lag, unacked, dlq, held_age;
};

// A group's lag, oldest unacked message, oldest held-back message (per_key
// groups) and dead letters against the limits.
void check_group(Checker& ck, const Snapshot& snap, std::size_t i, const GroupLimits& lim) {
  const ChannelStats& s = *snap.stats;
  const auto& g = s.groups[i];
  const auto& [lag, unacked, dlq, held_age] = lim;
  ck.limit(lag, static_cast<double>(g.unfinished), s.name + ": group " + g.name + " lag", "");
  ck.limit(unacked, static_cast<double>(g.oldest_unacked_age_ns) / 1e9,
           s.name + ": group " + g.name + " oldest unacked", "s");
  if (g.ordering == GroupOrdering::per_key) {
    // A key stuck behind an unfinished message (a poison message retried,
    // a hung consumer) while the other keys flow: lag alone may not show it.
    ck.limit(held_age, static_cast<double>(g.held_oldest_age_ns) / 1e9,
             s.name + ": group " + g.name + " oldest held-back message (" + num(g.held_keys) + " key(s), " +
                 num(g.held_messages) + " message(s) held)",
             "s");
  }
  // Dead letters: those in the DLQ plus those due for it (out of
  // deliveries, not yet moved: with no consumer alive they wait there).
  const bool have_dlq = i < snap.dlqs.size() && snap.dlqs[i].exists;
  if (have_dlq && !snap.dlqs[i].error.empty()) {
    ck.report(kCritical, s.name + ": group " + g.name + " DLQ " + g.dlq + " unreadable: " + snap.dlqs[i].error);
  } else if (have_dlq || g.dlq_due != 0) {
    const std::uint64_t depth = have_dlq ? snap.dlqs[i].depth : 0;
    const std::string parts = g.dlq_due == 0 ? "" : " " + num(depth) + " + due " + num(g.dlq_due) + " =";
    ck.limit(dlq, static_cast<double>(depth + g.dlq_due),
             s.name + ": group " + g.name + " DLQ " + g.dlq + " depth" + parts, "");
  }
}

// --dead-owners: a warning per table entry whose owning process is gone.
void check_dead_owners(Checker& ck, const ChannelStats& s) {
  for (const auto& p : s.publishers)
    if (p.pid != 0 && !p.alive)
      ck.report(kWarning, s.name + ": publisher #" + num(p.index) + " owner pid " + num(p.pid) + " is dead");
  for (const auto& sub : s.subscribers)
    if (sub.pid != 0 && !sub.alive)
      ck.report(kWarning, s.name + ": subscriber " + (sub.name.empty() ? "#" + num(sub.index) : sub.name) +
                              " owner pid " + num(sub.pid) + " is dead");
  for (const auto& g : s.groups)
    for (const auto& c : g.consumers)
      if (c.pid != 0 && !c.alive)
        ck.report(kWarning, s.name + ": group " + g.name + " consumer #" + num(c.index) + " owner pid " + num(c.pid) +
                                " is dead");
}

/// The limits `check` judges a channel's archive by.
struct ArchiveLimits {
  std::optional<Threshold> lag, fsync_age;
  bool archiver_down = false;
};

// A channel's archive: readable, an archiver alive (--archiver-down), its
// lag and the age of its last fdatasync against the limits.
void check_archive(Checker& ck, const ChannelStats& s, const ArchiveLimits& lim) {
  if (!s.archive) return;
  const ArchiveStats& a = *s.archive;
  const std::string what = s.name + ": archive " + a.dir;
  if (!a.error.empty()) {
    ck.report(kCritical, what + " unreadable: " + a.error);
    return;
  }
  if (lim.archiver_down && !a.archiver_alive) {
    ck.report(kCritical, what + (a.archiver ? " archiver is not running" : " has no archiver"));
  }
  if (!a.archiver) return;
  ck.limit(lim.lag, static_cast<double>(a.lag), what + " lag", "");
  if (a.last_fsync_realtime_ns != 0) {
    ck.limit(lim.fsync_age, static_cast<double>(a.fsync_age_ns) / 1e9, what + " last fsync", "s ago");
  }
}

int cmd_check(const CheckArgs& a) {
  GroupLimits lim;
  ArchiveLimits alim;
  alim.archiver_down = a.archiver_down;
  if (!parse_threshold_option("--max-archive-lag", a.max_archive_lag, alim.lag) ||
      !parse_threshold_option("--max-fsync-age", a.max_fsync_age, alim.fsync_age)) {
    return kExitCheckUnknown;
  }
  if (!parse_threshold_option("--max-lag", a.max_lag, lim.lag) ||
      !parse_threshold_option("--max-dlq", a.max_dlq, lim.dlq) ||
      !parse_threshold_option("--max-oldest-unacked", a.max_oldest_unacked, lim.unacked) ||
      !parse_threshold_option("--max-held-age", a.max_held_age, lim.held_age)) {
    return kExitCheckUnknown;  // as monitoring plugins say: the check itself could not run
  }
  std::vector<Snapshot> snaps;
  if (a.channels.empty()) {
    std::string error;
    if (!take_all(a.bus, snaps, error)) {
      std::cout << "CRITICAL " << error << '\n';
      return kCritical;
    }
  } else {
    for (const auto& c : a.channels) snaps.push_back(take_snapshot(c, a.bus));
  }
  // A DLQ's retainer subscriber lags by the letters waiting: those are
  // --max-dlq's to judge (on the source group), not --max-lag's, whenever
  // the source channel is among those checked.
  std::set<std::string> checked_dlqs;
  for (const auto& snap : snaps)
    if (snap.stats)
      for (const auto& g : snap.stats->groups) checked_dlqs.insert(g.dlq);
  const auto is_retainer = [&](const ChannelStats& s, const SubscriberStats& sub) {
    return sub.durable && sub.name == bus::kDlqRetainer && checked_dlqs.count(s.name) != 0;
  };
  Checker ck;
  for (const auto& snap : snaps) {
    if (!snap.stats) {
      ck.report(kCritical, snap.name + ": cannot read: " + snap.error_code + ": " + snap.error_message);
      continue;
    }
    const ChannelStats& s = *snap.stats;
    for (const auto& sub : s.subscribers) {
      if (is_retainer(s, sub)) continue;
      ck.limit(lim.lag, static_cast<double>(sub.lag),
               s.name + ": subscriber " + (sub.name.empty() ? "#" + num(sub.index) : sub.name) + " lag", "");
    }
    for (std::size_t i = 0; i < s.groups.size(); ++i) check_group(ck, snap, i, lim);
    if (a.dead_owners) check_dead_owners(ck, s);
    check_archive(ck, s, alim);
  }
  for (const auto& l : ck.lines) std::cout << l << '\n';
  if (ck.worst == kOk) std::cout << "OK " << snaps.size() << " channel(s) checked on bus " << a.bus << '\n';
  return ck.worst;
}

// ---- metrics ------------------------------------------------------------

struct MetricsArgs {
  std::string bus{kDefaultBus};
  std::string listen = "127.0.0.1:9464";
  long long max_connections = 64;  // connections served at once
  double timeout_s = 5.0;          // read, write and keep-alive idle timeout
};

inline constexpr long long kMaxConnectionsLimit = 1024;
inline constexpr double kMinTimeout = 0.1;
inline constexpr double kMaxTimeout = 300.0;  // also bounds how long a stop waits for open connections

// Serves each connection on a thread of its own, at most `max` at once.
// cpp-httplib 0.11.4's ThreadPool has a fixed number of workers and an
// unbounded queue: an idle socket holds a worker for the keep-alive timeout,
// so N idle sockets delay a scrape by N / workers timeouts, and a flood of
// connections queues without bound (its enqueue cannot refuse: the task owns
// the socket and is the only thing that closes it). Here a connection never
// waits behind another while fewer than `max` are open; past `max` the accept
// thread waits for one to finish, so further connections wait in the
// kernel's listen backlog (and then are refused by the kernel) instead of in
// memory. Threads are started on demand, reused, and joined at shutdown.
// Thread-safe: enqueue is called by the accept thread, workers run the tasks.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(std::size_t max) : max_(max) {}
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;
  ~ConnectionPool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mutex_);
    slot_free_.wait(lock, [&] { return open_ < max_; });
    ++open_;
    tasks_.push_back(std::move(fn));
    // More tasks waiting than idle workers: start one more thread (an idle
    // worker already woken for an earlier task is not free for this one).
    // Once all `max_` are started, a worker that is finishing a task (open_
    // counts it still) picks this one up when it loops.
    if (tasks_.size() > idle_ && threads_.size() < max_)
      threads_.emplace_back([this] { work(); });
    else
      task_ready_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shutdown_ = true;
    }
    task_ready_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;
      task_ready_.wait(lock, [&] { return !tasks_.empty() || shutdown_; });
      --idle_;
      if (tasks_.empty()) return;  // shut down, nothing left to serve
      std::function<void()> fn = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      fn();  // serves the connection, then closes it
      lock.lock();
      --open_;
      slot_free_.notify_one();
    }
  }

  const std::size_t max_;
  std::mutex mutex_;
  std::condition_variable task_ready_;
  std::condition_variable slot_free_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  std::size_t open_ = 0;  // connections queued or being served
  std::size_t idle_ = 0;  // threads waiting for a task
  bool shutdown_ = false;
};

struct ListenAddress {
  std::string host;  // numeric, without brackets
  int port = -1;
  bool ipv6 = false;
  bool loopback = false;
};

// Parses HOST:PORT, where HOST is a numeric IPv4 address or a bracketed
// IPv6 address ("[::1]:9464"); false with a message naming the option.
bool parse_listen(const std::string& text, ListenAddress& out, std::string& error) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    error = "--listen wants HOST:PORT (IPv6: [ADDR]:PORT), got '" + text + "'";
    return false;
  }
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  int port = -1;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port < 0 || port > 65535) {
    error = "--listen '" + text + "': the port must be a number in 0..65535 (0: any free port)";
    return false;
  }
  out.ipv6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (out.ipv6) host = host.substr(1, host.size() - 2);
  if (out.ipv6) {
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      error = "--listen '" + text + "': '" + host + "' is not an IPv6 address";
      return false;
    }
    out.loopback =
        IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);  // ::ffff:127.x.y.z
  } else {
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) != 1) {
      error = "--listen '" + text + "': expected an IPv4 address (a.b.c.d:PORT) or an IPv6 one ([ADDR]:PORT)";
      return false;
    }
    out.loopback = (ntohl(a4.s_addr) >> 24) == 127;
  }
  out.host = host;
  out.port = port;
  return true;
}

// Checks the options and parses --listen into `addr`; false with a message
// when one is bad. Warns when the address is not a loopback one.
bool check_metrics_args(const MetricsArgs& a, ListenAddress& addr) {
  if (a.max_connections < 1 || a.max_connections > kMaxConnectionsLimit) {
    std::cerr << "shmbus metrics: --max-connections must be from 1 to " << kMaxConnectionsLimit << ", got "
              << a.max_connections << '\n';
    return false;
  }
  if (!std::isfinite(a.timeout_s) || a.timeout_s < kMinTimeout || a.timeout_s > kMaxTimeout) {
    std::cerr << "shmbus metrics: --timeout must be from " << kMinTimeout << " to " << kMaxTimeout << " seconds, got "
              << a.timeout_s << '\n';
    return false;
  }
  std::string error;
  if (!parse_listen(a.listen, addr, error)) {
    std::cerr << "shmbus metrics: " << error << '\n';
    return false;
  }
  if (!addr.loopback) {
    std::cerr << "shmbus metrics: warning: --listen " << a.listen
              << " is not a loopback address: it exposes the bus to the network (channel, subscriber and "
                 "group names and counters, to anyone who can connect, with no authentication); prefer "
                 "127.0.0.1 or [::1] behind a proxy or a firewall\n";
  }
  return true;
}

// Timeouts, socket options and the connection pool of the server.
void configure_server(httplib::Server& server, const MetricsArgs& a) {
  const auto timeout =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(a.timeout_s));
  const auto whole_s = static_cast<std::time_t>(timeout.count() / 1'000'000);
  const auto usec = static_cast<std::time_t>(timeout.count() % 1'000'000);
  server.set_read_timeout(whole_s, usec);
  server.set_write_timeout(whole_s, usec);
  // httplib counts the keep-alive wait in whole seconds (at least 1).
  server.set_keep_alive_timeout(std::max<std::time_t>(1, static_cast<std::time_t>(std::ceil(a.timeout_s))));
  server.set_payload_max_length(4096);  // a scrape has no body
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // `shmbus metrics` (another bus, say) share the port silently.
  server.set_socket_options([](socket_t sock) {
    const int one = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  });
  const auto max = static_cast<std::size_t>(a.max_connections);
  server.new_task_queue = [max] { return new ConnectionPool(max); };
}

// GET /metrics (Prometheus text of every channel of `bus`), and refusals of
// other methods and paths.
void add_metrics_routes(httplib::Server& server, const std::string& bus, std::mutex& snapshot_mutex) {
  // Snapshots are taken one at a time (a scrape maps every channel); the
  // response is written after the lock is released, so a client that does
  // not read holds only its own connection, until a write has waited
  // --timeout.
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if (req.method == "GET" || req.method == "HEAD") return httplib::Server::HandlerResponse::Unhandled;
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("only GET\n", "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.Get("/metrics", [bus, mutex = &snapshot_mutex](const httplib::Request&, httplib::Response& res) {
    std::vector<Snapshot> snaps;
    std::string take_error;
    std::string body;
    {
      std::lock_guard<std::mutex> lock(*mutex);
      if (take_all(bus, snaps, take_error)) body = prometheus_text(bus, snaps);
    }
    if (!take_error.empty()) {
      res.status = 500;
      res.set_content(take_error + "\n", "text/plain");
      return;
    }
    res.set_content(std::move(body), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("shmbus serves /metrics\n", "text/plain");
  });
}

// Serves on the bound server until SIGINT or SIGTERM (exit 0) or until an
// accept fails (exit 1).
int serve_until_signal(httplib::Server& server, const MetricsArgs& a, const ListenAddress& addr, int port) {
  // SIGINT and SIGTERM are taken by sigwait on one thread: blocked here
  // before any other thread starts, so every thread inherits the mask.
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up is an error return, not a signal
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::atomic<bool> signalled{false};
  std::atomic<bool> listener_done{false};
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    // SYNC(signalled): release, pairs with the acquire after listen returns.
    signalled.store(true, std::memory_order_release);
    // stop() does nothing until the listener runs: retry until it returned.
    // SYNC(listener_done): acquire, pairs with the release after listen returns.
    while (!listener_done.load(std::memory_order_acquire)) {
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  const std::string shown = addr.ipv6 ? '[' + addr.host + ']' : addr.host;
  std::cout << "shmbus metrics: serving bus " << a.bus << " on http://" << shown << ':' << port << "/metrics"
            << std::endl;
  const bool ok = server.listen_after_bind();  // returns after stop(), or on an accept error
  // SYNC(listener_done): release, pairs with the acquire in the stopper.
  listener_done.store(true, std::memory_order_release);
  pthread_kill(stopper.native_handle(), SIGTERM);  // wakes the stopper if the listener failed on its own
  stopper.join();
  if (!ok && !signalled.load(std::memory_order_acquire)) {
    std::cerr << "shmbus metrics: the listener on " << a.listen << " stopped: accept failed\n";
    return kExitError;
  }
  return kExitOk;
}

int cmd_metrics(const MetricsArgs& a) {
  ListenAddress addr;
  if (!check_metrics_args(a, addr)) return kExitError;
  httplib::Server server;
  configure_server(server, a);
  // Snapshots are taken one at a time: see add_metrics_routes.
  std::mutex snapshot_mutex;
  add_metrics_routes(server, a.bus, snapshot_mutex);

  const int port = addr.port == 0 ? server.bind_to_any_port(addr.host, AI_NUMERICHOST)
                                  : (server.bind_to_port(addr.host, addr.port, AI_NUMERICHOST) ? addr.port : -1);
  if (port < 0) {
    std::cerr << "shmbus metrics: cannot listen on " << a.listen << ": " << std::strerror(errno) << '\n';
    return kExitError;
  }
  return serve_until_signal(server, a, addr, port);
}

}  // namespace

void add_watch_commands(CLI::App& app, Action& action) {
  auto w = std::make_shared<WatchArgs>();
  auto* watch = app.add_subcommand("watch", "Refresh a channel's (or every channel's) rates and lag, like top");
  watch->add_option("CHANNEL", w->channel, "Channel name");
  watch->add_flag("--all", w->all, "Watch every channel of the bus");
  watch->add_option("--bus", w->bus, "Bus name")->capture_default_str();
  watch->add_option("--interval", w->interval_s, "Seconds between samples")
      ->capture_default_str()
      ->check(seconds_in(0.01, 86400));
  watch->add_option("--count", w->count, "Stop after this many refreshes (0: until interrupted)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  watch->add_flag("--json", w->json, "Print one JSON object per refresh (one per line)");
  watch->add_flag("--no-clear", w->no_clear, "Do not clear the screen between refreshes");
  watch->callback([w, &action] { action = [w] { return cmd_watch(*w); }; });

  auto c = std::make_shared<CheckArgs>();
  auto* check = app.add_subcommand(
      "check",
      "Check lag, DLQ depth, unacked and held-back age and owners; exit 0 ok, 1 warning, 2 critical (3: bad options)");
  check->add_option("--bus", c->bus, "Bus name")->capture_default_str();
  check->add_option("--channel", c->channels, "Check only this channel (repeatable; default: every channel)");
  check->add_option("--max-lag", c->max_lag, "Subscriber lag / group backlog: LIMIT (critical) or WARN,CRIT");
  check->add_option("--max-dlq", c->max_dlq, "Dead letters waiting in a group's DLQ: LIMIT or WARN,CRIT");
  check->add_option("--max-oldest-unacked", c->max_oldest_unacked,
                    "Age in seconds of a group's oldest unfinished message: LIMIT or WARN,CRIT");
  check->add_option("--max-held-age", c->max_held_age,
                    "per_key groups: age in seconds of the oldest message held back behind an unfinished one of "
                    "its key: LIMIT or WARN,CRIT");
  check->add_flag("--dead-owners", c->dead_owners, "Warn about table entries whose process is dead");
  check->add_option("--max-archive-lag", c->max_archive_lag,
                    "Channels with an archive: messages published but not yet archived: LIMIT or WARN,CRIT");
  check->add_option("--max-fsync-age", c->max_fsync_age,
                    "Channels with an archive: seconds since the archiver's last fdatasync: LIMIT or WARN,CRIT");
  check->add_flag("--archiver-down", c->archiver_down,
                  "Critical when a channel with an archive directory has no live archiver");
  check->callback([c, &action] { action = [c] { return cmd_check(*c); }; });

  auto m = std::make_shared<MetricsArgs>();
  auto* metrics = app.add_subcommand("metrics", "Serve /metrics over HTTP for a Prometheus scrape");
  metrics
      ->add_option("--listen", m->listen,
                   "ADDR:PORT, ADDR an IPv4 address or a bracketed IPv6 one ([::1]:9464); port 0: any free "
                   "port; an address other than loopback warns that it exposes the bus")
      ->capture_default_str();
  metrics->add_option("--bus", m->bus, "Bus name")->capture_default_str();
  metrics
      ->add_option("--max-connections", m->max_connections,
                   "Connections served at once, 1 to 1024 (more wait in the listen backlog)")
      ->check(integer_in(1, 1024))
      ->capture_default_str();
  metrics
      ->add_option("--timeout", m->timeout_s,
                   "Seconds, 0.1 to 300: read and write timeout, and how long an idle connection is kept")
      ->check(seconds_in(0.1, 300))
      ->capture_default_str();
  metrics->callback([m, &action] { action = [m] { return cmd_metrics(*m); }; });
}

}  // namespace shmbus::probe
