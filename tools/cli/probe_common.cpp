// Helpers shared by the shmbus CLI's commands: tables, number and time
// formatting, message printing, start positions, opening channels,
// snapshots and stop signals.
#include <sys/stat.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <ostream>

#include <nlohmann/json.hpp>
#include "bus/ring/channel_state.hpp"

#include "probe.hpp"

namespace shmbus::probe {

Trust& cli_trust() {
  static Trust trust;
  return trust;
}

const char* gone_reason(PollStatus st) noexcept {
  return st == PollStatus::segment_lost ? "lost its pages: its file was truncated by another process"
                                        : "was removed (shmbus rm, gc, or its file was deleted)";
}

namespace {
std::atomic<bool> g_stop{false};
void on_stop_signal(int) { g_stop.store(true, std::memory_order_relaxed); }
}  // namespace

bool stop_requested() noexcept { return g_stop.load(std::memory_order_relaxed); }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void Table::print(std::ostream& os) const {
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

std::string num(std::uint64_t v) { return std::to_string(v); }

std::string duration(std::uint64_t ns) {
  char buf[64];
  if (ns < 1'000ULL)
    std::snprintf(buf, sizeof buf, "%lluns", static_cast<unsigned long long>(ns));
  else if (ns < 1'000'000ULL)
    std::snprintf(buf, sizeof buf, "%.1fus", static_cast<double>(ns) / 1e3);
  else if (ns < 1'000'000'000ULL)
    std::snprintf(buf, sizeof buf, "%.1fms", static_cast<double>(ns) / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ns) / 1e9);
  return buf;
}

std::string iso_time(std::uint64_t realtime_ns) {
  const auto secs = static_cast<std::time_t>(realtime_ns / 1'000'000'000ULL);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03lluZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned long long>((realtime_ns / 1'000'000ULL) % 1000));
  return buf;
}

namespace {
std::uint64_t clock_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

std::uint64_t realtime_now_ns() { return clock_ns(CLOCK_REALTIME); }
std::uint64_t monotonic_now_ns() { return clock_ns(CLOCK_MONOTONIC); }

std::optional<PayloadFormat> parse_format(const std::string& s) {
  if (s == "text") return PayloadFormat::text;
  if (s == "hex") return PayloadFormat::hex;
  if (s == "json") return PayloadFormat::json;
  return std::nullopt;
}

std::string escape_text(std::span<const std::byte> p) {
  std::string out;
  out.reserve(p.size());
  for (std::byte b : p) {
    const auto c = static_cast<unsigned char>(b);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

namespace {

bool printable_ascii(std::span<const std::byte> p) {
  for (std::byte b : p) {
    const auto c = static_cast<unsigned char>(b);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c >= 0x7f) return false;
  }
  return true;
}

std::string base64(std::span<const std::byte> p) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < p.size(); i += 3) {
    const unsigned v =
        (static_cast<unsigned>(p[i]) << 16) | (static_cast<unsigned>(p[i + 1]) << 8) | static_cast<unsigned>(p[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < p.size()) {
    unsigned v = static_cast<unsigned>(p[i]) << 16;
    if (i + 1 < p.size()) v |= static_cast<unsigned>(p[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < p.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

void hex_dump(std::ostream& os, std::span<const std::byte> p) {
  char buf[32];
  for (std::size_t off = 0; off < p.size(); off += 16) {
    std::snprintf(buf, sizeof buf, "  %08zx ", off);
    os << buf;
    std::string ascii;
    for (std::size_t i = 0; i < 16; ++i) {
      if (off + i < p.size()) {
        const auto c = static_cast<unsigned char>(p[off + i]);
        std::snprintf(buf, sizeof buf, " %02x", c);
        os << buf;
        ascii += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '.';
      } else {
        os << "   ";
      }
    }
    os << "  |" << ascii << "|\n";
  }
}

}  // namespace

void print_message(std::ostream& os, const Message& m, PayloadFormat f) {
  if (f == PayloadFormat::json) {
    nlohmann::json j{{"sequence", m.sequence},
                     {"timestamp_ns", m.timestamp_ns},
                     {"time", iso_time(m.timestamp_ns)},
                     {"key", m.key},
                     {"id", m.id},
                     {"correlation_id", m.correlation_id},
                     {"type", m.type},
                     {"attempt", m.attempt},
                     {"length", m.payload.size()}};
    if (printable_ascii(m.payload)) {
      j["payload"] = std::string(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    } else {
      j["payload_base64"] = base64(m.payload);
    }
    os << json_text(j) << '\n';
    return;
  }
  os << "#" << m.sequence << ' ' << iso_time(m.timestamp_ns) << " key=" << m.key << " type=" << m.type;
  if (m.id != 0) os << " id=" << m.id;  // 0 is "no id": left out, as corr
  if (m.correlation_id != 0) os << " corr=" << m.correlation_id;
  if (m.attempt > 1) os << " attempt=" << m.attempt;
  os << " len=" << m.payload.size();
  if (f == PayloadFormat::text) {
    os << "  " << escape_text(m.payload) << '\n';
  } else {
    os << '\n';
    hex_dump(os, m.payload);
  }
}

namespace {

bool parse_u64(std::string_view s, std::uint64_t& v) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

}  // namespace

namespace {

// A range bound in plain decimals: "86400", "0.01", "0.000001".
std::string bound_text(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", v);
  std::string t = buf;
  while (t.back() == '0') t.pop_back();
  if (t.back() == '.') t.pop_back();
  return t;
}

}  // namespace

CLI::Validator integer_in(std::uint64_t min, std::uint64_t max) {
  const std::string range = num(min) + ".." + num(max);
  return CLI::Validator(
      [min, max, range](std::string& s) -> std::string {
        std::uint64_t v = 0;
        if (!parse_u64(s, v) || v < min || v > max) return s + " is not an integer in " + range;
        return {};
      },
      "in " + range);
}

CLI::Validator seconds_in(double min, double max) {
  const std::string range = bound_text(min) + ".." + bound_text(max);
  return CLI::Validator(
      [min, max, range](std::string& s) -> std::string {
        double v = 0;
        // from_chars: decimal or exponent form only (no hex, no leading '+');
        // "nan" and "inf" parse and then fail the range test, as NaN fails
        // every comparison.
        const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || r.ec != std::errc{} || r.ptr != s.data() + s.size() || !(v >= min && v <= max)) {
          return s + " is not a number of seconds in " + range;
        }
        return {};
      },
      "seconds in " + range);
}

std::uint64_t seconds_to_ns(double seconds) noexcept {
  if (!(seconds > 0)) return 0;
  if (seconds >= 18'446'744'073.0) return UINT64_MAX;      // 2^64 ns
  return static_cast<std::uint64_t>(seconds * 1e9 + 0.5);  // below 2^64 here: defined
}

std::optional<StartAt> parse_start(const std::string& s, std::string& error) {
  if (s == "earliest") return StartAt::earliest();
  if (s == "latest") return StartAt::latest();
  std::uint64_t v = 0;
  if (parse_u64(s, v)) return StartAt::at_sequence(v);
  if (s.size() >= 3 && s[0] == '-') {
    const char unit = s.back();
    const std::uint64_t mult = unit == 's'   ? 1'000'000'000ULL
                               : unit == 'm' ? 60'000'000'000ULL
                               : unit == 'h' ? 3'600'000'000'000ULL
                               : unit == 'd' ? 86'400'000'000'000ULL
                                             : 0;
    if (mult != 0 && parse_u64(std::string_view(s).substr(1, s.size() - 2), v) && v < UINT64_MAX / mult) {
      const std::uint64_t now = realtime_now_ns();
      return StartAt::at_time(now > v * mult ? now - v * mult : 0);
    }
  }
  if (s.size() >= 2 && s[0] == '@') {
    char* end = nullptr;
    const double secs = std::strtod(s.c_str() + 1, &end);
    if (end != nullptr && *end == '\0' && secs >= 0 && secs < 1e10) {
      return StartAt::at_time(static_cast<std::uint64_t>(secs * 1e9));
    }
  }
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest != nullptr && (*rest == '\0' || (rest[0] == 'Z' && rest[1] == '\0'))) {
    const std::time_t t = timegm(&tm);
    if (t >= 0) return StartAt::at_time(static_cast<std::uint64_t>(t) * 1'000'000'000ULL);
  }
  error = "bad start position '" + s +
          "': expected earliest, latest, a sequence number, -30s/-5m/-2h/-1d, "
          "@UNIX_SECONDS or YYYY-MM-DDTHH:MM:SS (UTC)";
  return std::nullopt;
}

std::uint64_t resolve_start(const Channel& ch, const StartAt& at) {
  switch (at.kind) {
    case StartAt::Kind::earliest: return ch.oldest();
    case StartAt::Kind::latest: return ch.head();
    case StartAt::Kind::sequence: return at.value;
    case StartAt::Kind::timestamp: return ch.sequence_at(at.value);
  }
  return ch.head();
}

std::optional<std::string> not_a_segment(const std::string& name, const std::string& bus) {
  const std::string path = "/dev/shm/" + bus::segment_name(bus, name);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) return std::nullopt;
  const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                     : S_ISLNK(st.st_mode)  ? "a symbolic link"
                     : S_ISDIR(st.st_mode)  ? "a directory"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                                            : "not a regular file";
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return "'" + path + "' is " + kind + " (owner uid " + num(st.st_uid) + ", mode " + mode +
         "), not a shared-memory segment";
}

namespace {

std::optional<Channel> report_open(Result<Channel> ch, const std::string& name, const std::string& bus,
                                   int& exit_code) {
  if (ch) return std::move(ch.value());
  if (ch.error().code() == ErrorCode::not_found) {
    std::cerr << "shmbus: no channel '" << name << "' on bus '" << bus << "'\n";
    exit_code = kExitNotFound;
  } else {
    std::cerr << "shmbus: cannot open channel '" << name << "' on bus '" << bus << "': " << to_string(ch.error().code())
              << ": " << ch.error().message() << '\n';
    exit_code = kExitError;
  }
  return std::nullopt;
}

// A name that is not a segment is refused before any open (see not_a_segment).
bool refuse_non_segment(const std::string& name, const std::string& bus, int& exit_code) {
  const auto why = not_a_segment(name, bus);
  if (!why) return false;
  std::cerr << "shmbus: cannot open channel '" << name << "' on bus '" << bus << "': " << *why
            << "; shmbus rm removes it\n";
  exit_code = kExitError;
  return true;
}

}  // namespace

std::optional<Channel> open_observer(const std::string& name, const std::string& bus, int& exit_code) {
  if (refuse_non_segment(name, bus, exit_code)) return std::nullopt;
  return report_open(Channel::open_read_only(name, bus), name, bus, exit_code);
}

std::optional<Channel> open_participant(const std::string& name, const std::string& bus, int& exit_code) {
  if (refuse_non_segment(name, bus, exit_code)) return std::nullopt;
  return report_open(Channel::open(name, bus, 200'000'000ULL, cli_trust()), name, bus, exit_code);
}

Snapshot take_snapshot(const std::string& name, const std::string& bus) {
  Snapshot snap;
  snap.name = name;
  snap.taken_ns = monotonic_now_ns();
  if (auto why = not_a_segment(name, bus)) {
    snap.error_code = std::string(to_string(ErrorCode::invalid_argument));
    snap.error_message = *why + "; shmbus rm removes it";
    return snap;
  }
  auto ch = Channel::open_read_only(name, bus);
  if (!ch) {
    snap.error_code = std::string(to_string(ch.error().code()));
    snap.error_message = ch.error().message();
    return snap;
  }
  snap.stats = ch->stats();
  for (const auto& g : snap.stats->groups) {
    DlqInfo d;
    if (!g.dlq.empty()) {
      if (auto why = not_a_segment(g.dlq, bus)) {
        d.exists = true;
        d.error = std::string(to_string(ErrorCode::invalid_argument)) + ": " + *why;
      } else if (auto q = Channel::open_read_only(g.dlq, bus)) {
        d.exists = true;
        d.depth = q->stats().depth;
      } else if (q.error().code() != ErrorCode::not_found) {
        d.exists = true;
        d.error = std::string(to_string(q.error().code())) + ": " + q.error().message();
      }
    }
    snap.dlqs.push_back(std::move(d));
  }
  return snap;
}

bool take_all(const std::string& bus, std::vector<Snapshot>& out, std::string& error) {
  auto names = Channel::list(bus);
  if (!names) {
    error = "cannot list bus '" + bus + "': " + names.error().message();
    return false;
  }
  out.clear();
  for (const auto& info : names.value()) out.push_back(take_snapshot(info.name, bus));
  return true;
}

std::uint32_t consumers_alive(const GroupStats& g) {
  std::uint32_t n = 0;
  for (const auto& c : g.consumers) n += c.alive ? 1U : 0U;
  return n;
}

}  // namespace shmbus::probe
