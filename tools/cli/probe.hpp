// The shmbus CLI: shared declarations of its pieces.
//
// The inspecting commands (ls, stat, watch, check, metrics, peek, tail, dlq
// list/show) never take part: they open channels with
// Channel::open_read_only and take Channel::stats() snapshots or peek at
// messages, so no cursor moves and no table entry or lease is taken. Only
// the commands that say so (publish, subscribe, dlq redrive, create, rm, gc)
// change anything.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <shmbus/channel.hpp>

namespace shmbus::probe {

/// What main runs once the command line parsed: the chosen subcommand's
/// callback sets it. Commands defined in other files register themselves
/// with a function `void add_X_command(CLI::App&, Action&)`.
using Action = std::function<int()>;

/// Exit codes of the CLI. `check` uses its own: 0 ok, 1 warning, 2 critical.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;         ///< an error (some channel could not be read, bad input)
inline constexpr int kExitNotFound = 2;      ///< the named channel (or group) does not exist
inline constexpr int kExitCheckUnknown = 3;  ///< `check` could not run (bad options): UNKNOWN

// ---- command registration (one function per file) ---------------------------
void add_inspect_commands(CLI::App& app, Action& action);  // ls, stat (probe_main.cpp)
void add_watch_commands(CLI::App& app, Action& action);    // watch, check, metrics
void add_message_commands(CLI::App& app, Action& action);  // peek, tail, publish, subscribe
void add_admin_commands(CLI::App& app, Action& action);    // create, rm, gc, dlq
void add_bridge_command(CLI::App& app, Action& action);    // bridge (cmd_bridge.cpp)
void add_archive_command(CLI::App& app, Action& action);   // archive (cmd_archive.cpp)

/// The owners the command line trusts (--trust-uid, --trust-gid): passed to
/// every participant open (Channel::open), on top of the caller's uid and root.
Trust& cli_trust();

/// Why a follower stops on `removed` / `segment_lost`: "was removed" or
/// "lost its pages: its file was truncated by another process".
const char* gone_reason(PollStatus st) noexcept;

/// Set by SIGINT/SIGTERM once install_stop_handlers() ran; long-running
/// commands (watch, tail -f, subscribe, metrics) poll it and exit cleanly.
bool stop_requested() noexcept;
/// Installs SIGINT/SIGTERM handlers (without SA_RESTART, so a blocking
/// accept() or read() returns EINTR).
void install_stop_handlers();

// ---- numeric options ---------------------------------------------------------

/// CLI11 validators for numeric options. Each accepts only a plain decimal
/// number in [min, max] and refuses anything else (a sign, nan, inf, 1e30,
/// 0x10, a value past the range) with a message giving the range; CLI11 puts
/// the option's name in front ("--timeout: -1 is not a number of seconds in
/// 0..86400"). They run on the text before CLI11 converts it, so a value the
/// conversion would wrap (-1 as an unsigned) never gets through. Thread-safe.
CLI::Validator integer_in(std::uint64_t min, std::uint64_t max);
CLI::Validator seconds_in(double min, double max);
/// Seconds (checked by seconds_in) as nanoseconds, rounded; 0 below 0 and
/// UINT64_MAX past it, never undefined. Thread-safe.
std::uint64_t seconds_to_ns(double seconds) noexcept;

// ---- snapshots -------------------------------------------------------------

/// What the probe shows about a group's DLQ channel.
struct DlqInfo {
  bool exists = false;
  std::uint64_t depth = 0;
  std::string error;  ///< set when the DLQ exists but could not be read
};

/// A channel's stats plus what is known of its groups' DLQs, or why it could
/// not be read.
struct Snapshot {
  std::string name;
  std::optional<ChannelStats> stats;  ///< empty when the open failed
  std::vector<DlqInfo> dlqs;          ///< parallel to stats->groups
  std::string error_code;             ///< to_string(ErrorCode) when the open failed
  std::string error_message;
  std::uint64_t taken_ns = 0;  ///< CLOCK_MONOTONIC when taken
};

/// Opens `name` read-only and snapshots it (with its groups' DLQ depths).
Snapshot take_snapshot(const std::string& name, const std::string& bus);
/// Snapshots every channel of a bus; false (with `error`) if the bus could
/// not be listed.
bool take_all(const std::string& bus, std::vector<Snapshot>& out, std::string& error);

/// Owners counted over publishers, subscribers and group consumers that have
/// an owning process (pid != 0).
struct Owners {
  std::uint32_t alive = 0;
  std::uint32_t total = 0;
};
Owners count_owners(const ChannelStats& s);

/// The channel's producer counters: sums over every publisher entry, free
/// ones included, so they never go back while the channel exists.
struct ProducerTotals {
  std::uint64_t published = 0;
  std::uint64_t rejected = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t blocked_ns = 0;
  std::uint64_t aborted = 0;
  std::uint64_t abandoned = 0;
};
ProducerTotals producer_totals(const ChannelStats& s);

/// Consumers of a group whose process is alive.
std::uint32_t consumers_alive(const GroupStats& g);

// ---- output ----------------------------------------------------------------

/// JSON documents (schema in probe_json.cpp).
nlohmann::json ls_json(const std::string& bus, const std::vector<Snapshot>& rows);
nlohmann::json stat_json(const ChannelStats& s, const std::vector<DlqInfo>& dlqs);

/// Serialises JSON for output. Names read from a corrupted segment may not
/// be valid UTF-8: such bytes are replaced (U+FFFD) instead of failing the
/// whole document.
inline std::string json_text(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// `s` with every byte that is not part of valid UTF-8 replaced by U+FFFD,
/// exactly as json_text replaces them (the same code does it), for outputs
/// other than JSON, such as Prometheus label values.
inline std::string valid_utf8(const std::string& s) {
  return nlohmann::json::parse(json_text(nlohmann::json(s))).get<std::string>();
}

/// Prometheus text exposition (format 0.0.4) of snapshots; see
/// probe_prometheus.cpp for the metric names.
std::string prometheus_text(const std::string& bus, const std::vector<Snapshot>& snaps);

/// A plain text table: left-aligned columns separated by two spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& os) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string num(std::uint64_t v);
/// 950ns, 12.5us, 3.2ms, 4.0s.
std::string duration(std::uint64_t ns);
/// A CLOCK_REALTIME time in ns as ISO 8601 UTC with milliseconds.
std::string iso_time(std::uint64_t realtime_ns);
/// Now, CLOCK_REALTIME / CLOCK_MONOTONIC, in ns.
std::uint64_t realtime_now_ns();
std::uint64_t monotonic_now_ns();

/// How peek, tail, subscribe and dlq show a message.
enum class PayloadFormat { text, hex, json };
/// Parses "text" | "hex" | "json".
std::optional<PayloadFormat> parse_format(const std::string& s);
/// Prints one message (metadata and payload) in the given format.
void print_message(std::ostream& os, const Message& m, PayloadFormat f);
/// Payload as printable text (non-printable bytes as \xNN).
std::string escape_text(std::span<const std::byte> p);

/// Parses a start position: earliest | latest | SEQ | -DURATION (e.g. -30s,
/// -5m, -2h: that long ago) | @UNIX_SECONDS[.frac] | YYYY-MM-DDTHH:MM:SS[Z]
/// (UTC). nullopt with `error` set on bad input.
std::optional<StartAt> parse_start(const std::string& s, std::string& error);
/// The first sequence a start position names on a channel.
std::uint64_t resolve_start(const Channel& ch, const StartAt& at);

/// Why the name of channel `name` on `bus` in /dev/shm is not a channel
/// segment ("'/dev/shm/...' is a FIFO (owner uid 0, mode 0644), not a
/// shared-memory segment"; a symbolic link, a directory...), or
/// nothing when it is a regular file or absent (opening then reports
/// not_found). Looks with lstat, so the probe never opens a FIFO (an open
/// would block) nor follows a link. Thread-safe.
std::optional<std::string> not_a_segment(const std::string& name, const std::string& bus);

/// Opens a channel read-only, or prints why not (to stderr) and sets the
/// exit code: kExitNotFound if it does not exist, else kExitError.
std::optional<Channel> open_observer(const std::string& name, const std::string& bus, int& exit_code);
/// Same, read-write (for commands that change something).
std::optional<Channel> open_participant(const std::string& name, const std::string& bus, int& exit_code);

}  // namespace shmbus::probe
