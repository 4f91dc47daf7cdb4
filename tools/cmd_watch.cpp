// `shmbus watch`, `shmbus check` and `shmbus metrics`: the monitoring
// commands. All read-only (snapshots of read-only mappings).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include <shmbus/bus/group_core.hpp>

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
      const SubscriberStats* ps = have ? find_entry(p->stats->subscribers, [&](const SubscriberStats& e) {
        return e.index == sub.index && e.name == sub.name;
      }) : nullptr;
      subs.push_back({{"name", sub.name.empty() ? "#" + num(sub.index) : sub.name},
                      {"alive", sub.alive},
                      {"lag", sub.lag},
                      {"lag_growth", ps ? rate(sub.lag, ps->lag, dt) : 0.0},
                      {"delivery_rate", ps ? rate(sub.delivered, ps->delivered, dt) : 0.0}});
    }
    j["subscribers"] = std::move(subs);
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : s.groups) {
      const GroupStats* pg = have ? find_entry(p->stats->groups, [&](const GroupStats& e) {
        return e.name == g.name;
      }) : nullptr;
      groups.push_back({{"name", g.name},
                        {"unfinished", g.unfinished},
                        {"in_flight", g.in_flight},
                        {"backlog_growth", pg ? rate(g.unfinished, pg->unfinished, dt) : 0.0},
                        {"ack_rate", pg ? rate(g.acked, pg->acked, dt) : 0.0},
                        {"dead_lettered", g.dead_lettered},
                        {"consumers_alive", consumers_alive(g)}});
    }
    j["groups"] = std::move(groups);
    chans.push_back(std::move(j));
  }
  return nlohmann::json{{"schema_version", 1}, {"time", iso_time(realtime_now_ns())}, {"channels", chans}};
}

void print_frame(const nlohmann::json& f, const WatchArgs& a) {
  std::cout << "shmbus watch  bus " << a.bus << "  " << f["time"].get<std::string>() << "  every "
            << a.interval_s << "s\n\n";
  Table ch({"CHANNEL", "HEAD", "DEPTH", "MSG/S"});
  Table subs({"CHANNEL", "SUBSCRIBER", "ALIVE", "LAG", "LAG/S", "DELIVERED/S"});
  Table groups({"CHANNEL", "GROUP", "UNFINISHED", "IN_FLIGHT", "BACKLOG/S", "ACKED/S", "DEAD", "CONSUMERS"});
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
      subs.add({name, s["name"], s["alive"].get<bool>() ? "yes" : "no", num(s["lag"]),
                fmt_rate(s["lag_growth"]), fmt_rate(s["delivery_rate"])});
    for (const auto& g : c["groups"])
      groups.add({name, g["name"], num(g["unfinished"]), num(g["in_flight"]),
                  fmt_rate(g["backlog_growth"]), fmt_rate(g["ack_rate"]), num(g["dead_lettered"]),
                  num(g["consumers_alive"])});
  }
  ch.print(std::cout);
  std::cout << '\n';
  subs.print(std::cout);
  std::cout << '\n';
  groups.print(std::cout);
  for (const auto& e : errors) std::cout << "error: " << e << '\n';
}

bool sleep_interruptibly(double seconds) {
  const std::uint64_t until = monotonic_now_ns() + static_cast<std::uint64_t>(seconds * 1e9);
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
  if (!(a.interval_s >= 0.01)) {
    std::cerr << "shmbus watch: --interval must be at least 0.01 s\n";
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
      if (clear) std::cout << "\033[H\033[2J";
      else if (n > 0) std::cout << '\n';
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

/// "C" (critical above C) or "W,C" (warning above W, critical above C).
std::optional<Threshold> parse_threshold(const std::string& s) {
  Threshold t;
  const auto comma = s.find(',');
  try {
    std::size_t used = 0;
    if (comma == std::string::npos) {
      t.crit = std::stod(s, &used);
      if (used != s.size()) return std::nullopt;
    } else {
      const std::string w = s.substr(0, comma), c = s.substr(comma + 1);
      t.warn = std::stod(w, &used);
      if (used != w.size()) return std::nullopt;
      t.crit = std::stod(c, &used);
      if (used != c.size() || *t.crit < *t.warn) return std::nullopt;
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return t;
}

struct CheckArgs {
  std::string bus{kDefaultBus};
  std::vector<std::string> channels;
  std::string max_lag, max_dlq, max_oldest_unacked;
  bool dead_owners = false;
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

int cmd_check(const CheckArgs& a) {
  std::optional<Threshold> lag, dlq, unacked;
  const auto parse = [](const std::string& opt, const std::string& v, std::optional<Threshold>& out) {
    if (v.empty()) return true;
    out = parse_threshold(v);
    if (!out) std::cerr << "shmbus check: " << opt << " '" << v << "': expected LIMIT or WARN,CRIT\n";
    return out.has_value();
  };
  if (!parse("--max-lag", a.max_lag, lag) || !parse("--max-dlq", a.max_dlq, dlq) ||
      !parse("--max-oldest-unacked", a.max_oldest_unacked, unacked)) {
    return 3;  // UNKNOWN, as monitoring plugins say: the check itself could not run
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
      ck.limit(lag, static_cast<double>(sub.lag),
               s.name + ": subscriber " + (sub.name.empty() ? "#" + num(sub.index) : sub.name) + " lag", "");
    }
    for (std::size_t i = 0; i < s.groups.size(); ++i) {
      const auto& g = s.groups[i];
      ck.limit(lag, static_cast<double>(g.unfinished), s.name + ": group " + g.name + " lag", "");
      ck.limit(unacked, static_cast<double>(g.oldest_unacked_age_ns) / 1e9,
               s.name + ": group " + g.name + " oldest unacked", "s");
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
    if (a.dead_owners) {
      for (const auto& p : s.publishers)
        if (p.pid != 0 && !p.alive) ck.report(kWarning, s.name + ": publisher #" + num(p.index) + " owner pid " + num(p.pid) + " is dead");
      for (const auto& sub : s.subscribers)
        if (sub.pid != 0 && !sub.alive)
          ck.report(kWarning, s.name + ": subscriber " + (sub.name.empty() ? "#" + num(sub.index) : sub.name) +
                                  " owner pid " + num(sub.pid) + " is dead");
      for (const auto& g : s.groups)
        for (const auto& c : g.consumers)
          if (c.pid != 0 && !c.alive)
            ck.report(kWarning, s.name + ": group " + g.name + " consumer #" + num(c.index) + " owner pid " +
                                    num(c.pid) + " is dead");
    }
  }
  for (const auto& l : ck.lines) std::cout << l << '\n';
  if (ck.worst == kOk) std::cout << "OK " << snaps.size() << " channel(s) checked on bus " << a.bus << '\n';
  return ck.worst;
}

// ---- metrics ------------------------------------------------------------

struct MetricsArgs {
  std::string bus{kDefaultBus};
  std::string listen = "127.0.0.1:9464";
};

bool send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

std::string http_response(int status, const char* reason, const char* type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + ' ' + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// Serves one connection: reads the request head (bounded in size and time),
// answers GET /metrics with a fresh exposition of the bus.
void serve(int fd, const std::string& bus) {
  std::string req;
  char buf[1024];
  const std::uint64_t deadline = monotonic_now_ns() + 2'000'000'000ULL;
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
    pollfd p{fd, POLLIN, 0};
    const std::uint64_t now = monotonic_now_ns();
    if (now >= deadline || ::poll(&p, 1, static_cast<int>((deadline - now) / 1'000'000 + 1)) <= 0) return;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, static_cast<std::size_t>(n));
  }
  const auto line_end = req.find("\r\n");
  std::istringstream first(req.substr(0, line_end));
  std::string method, target;
  first >> method >> target;
  if (method != "GET" && method != "HEAD") {
    send_all(fd, http_response(405, "Method Not Allowed", "text/plain", "only GET\n"));
    return;
  }
  if (target != "/metrics" && target.rfind("/metrics?", 0) != 0) {
    send_all(fd, http_response(404, "Not Found", "text/plain", "shmbus serves /metrics\n"));
    return;
  }
  std::vector<Snapshot> snaps;
  std::string error;
  if (!take_all(bus, snaps, error)) {
    send_all(fd, http_response(500, "Internal Server Error", "text/plain", error + "\n"));
    return;
  }
  std::string body = prometheus_text(bus, snaps);
  std::string resp = http_response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
  if (method == "HEAD") resp.resize(resp.size() - body.size());
  send_all(fd, resp);
}

int cmd_metrics(const MetricsArgs& a) {
  const auto colon = a.listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "shmbus metrics: --listen wants HOST:PORT, got '" << a.listen << "'\n";
    return kExitError;
  }
  const std::string host = a.listen.substr(0, colon);
  int port = -1;
  try {
    port = std::stoi(a.listen.substr(colon + 1));
  } catch (const std::exception&) {
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (port < 0 || port > 65535 || inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    std::cerr << "shmbus metrics: --listen '" << a.listen << "': expected an IPv4 address and a port\n";
    return kExitError;
  }
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(s, 16) != 0) {
    std::cerr << "shmbus metrics: cannot listen on " << a.listen << ": " << std::strerror(errno) << '\n';
    if (s >= 0) ::close(s);
    return kExitError;
  }
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  install_stop_handlers();
  std::cout << "shmbus metrics: serving bus " << a.bus << " on http://" << host << ':' << ntohs(addr.sin_port)
            << "/metrics" << std::endl;
  while (!stop_requested()) {
    const int c = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::cerr << "shmbus metrics: accept: " << std::strerror(errno) << '\n';
      break;
    }
    serve(c, a.bus);
    ::close(c);
  }
  ::close(s);
  return kExitOk;
}

}  // namespace

void add_watch_commands(CLI::App& app, Action& action) {
  auto w = std::make_shared<WatchArgs>();
  auto* watch = app.add_subcommand("watch", "Refresh a channel's (or every channel's) rates and lag, like top");
  watch->add_option("CHANNEL", w->channel, "Channel name");
  watch->add_flag("--all", w->all, "Watch every channel of the bus");
  watch->add_option("--bus", w->bus, "Bus name")->capture_default_str();
  watch->add_option("--interval", w->interval_s, "Seconds between samples")->capture_default_str();
  watch->add_option("--count", w->count, "Stop after this many refreshes (0: until interrupted)")->capture_default_str();
  watch->add_flag("--json", w->json, "Print one JSON object per refresh (one per line)");
  watch->add_flag("--no-clear", w->no_clear, "Do not clear the screen between refreshes");
  watch->callback([w, &action] { action = [w] { return cmd_watch(*w); }; });

  auto c = std::make_shared<CheckArgs>();
  auto* check = app.add_subcommand(
      "check", "Check lag, DLQ depth, unacked age and owners; exit 0 ok, 1 warning, 2 critical (3: bad options)");
  check->add_option("--bus", c->bus, "Bus name")->capture_default_str();
  check->add_option("--channel", c->channels, "Check only this channel (repeatable; default: every channel)");
  check->add_option("--max-lag", c->max_lag, "Subscriber lag / group backlog: LIMIT (critical) or WARN,CRIT");
  check->add_option("--max-dlq", c->max_dlq, "Dead letters waiting in a group's DLQ: LIMIT or WARN,CRIT");
  check->add_option("--max-oldest-unacked", c->max_oldest_unacked,
                    "Age in seconds of a group's oldest unfinished message: LIMIT or WARN,CRIT");
  check->add_flag("--dead-owners", c->dead_owners, "Warn about table entries whose process is dead");
  check->callback([c, &action] { action = [c] { return cmd_check(*c); }; });

  auto m = std::make_shared<MetricsArgs>();
  auto* metrics = app.add_subcommand("metrics", "Serve /metrics over HTTP for a Prometheus scrape");
  metrics->add_option("--listen", m->listen, "IPv4 address and port (port 0: any free port)")->capture_default_str();
  metrics->add_option("--bus", m->bus, "Bus name")->capture_default_str();
  metrics->callback([m, &action] { action = [m] { return cmd_metrics(*m); }; });
}

}  // namespace shmbus::probe
