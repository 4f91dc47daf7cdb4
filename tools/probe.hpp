// The shmbus probe: reads channel segments without taking part (read-only
// opens and stats snapshots only). Shared declarations of the CLI's pieces.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <shmbus/bus/stats.hpp>

namespace shmbus::probe {

/// Exit codes of the probe.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;       ///< some channel could not be read
inline constexpr int kExitNotFound = 2;    ///< the named channel does not exist

/// One row of `shmbus ls`: a channel's summary, or why it could not be read.
struct LsRow {
  std::string name;
  std::optional<ChannelStats> stats;  ///< empty when the open failed
  std::string error_code;             ///< to_string(ErrorCode) when the open failed
  std::string error_message;
};

/// What `shmbus stat` shows about a group's DLQ channel.
struct DlqInfo {
  bool exists = false;
  std::uint64_t depth = 0;
  std::string error;  ///< set when the DLQ exists but could not be read
};

/// Owners counted over publishers, subscribers and group consumers that have
/// an owning process (pid != 0).
struct Owners {
  std::uint32_t alive = 0;
  std::uint32_t total = 0;
};
Owners count_owners(const ChannelStats& s);

/// Producer counters summed over the publisher table.
struct ProducerTotals {
  std::uint64_t published = 0;
  std::uint64_t rejected = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t blocked_ns = 0;
  std::uint64_t aborted = 0;
  std::uint64_t abandoned = 0;
};
ProducerTotals producer_totals(const ChannelStats& s);

nlohmann::json ls_json(const std::string& bus, const std::vector<LsRow>& rows);
nlohmann::json stat_json(const ChannelStats& s, const std::vector<DlqInfo>& dlqs);

}  // namespace shmbus::probe
