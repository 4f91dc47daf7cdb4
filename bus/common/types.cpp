#include "bus/common/types.hpp"

namespace shmbus {

std::string_view to_string(PublishStatus s) noexcept {
  switch (s) {
    case PublishStatus::ok: return "ok";
    case PublishStatus::full: return "full";
    case PublishStatus::timeout: return "timeout";
    case PublishStatus::too_large: return "too_large";
    case PublishStatus::abandoned: return "abandoned";
    case PublishStatus::invalid: return "invalid";
    case PublishStatus::removed: return "removed";
    case PublishStatus::segment_lost: return "segment_lost";
  }
  return "unknown";
}

std::string_view to_string(PollStatus s) noexcept {
  switch (s) {
    case PollStatus::ok: return "ok";
    case PollStatus::empty: return "empty";
    case PollStatus::lapped: return "lapped";
    case PollStatus::buffer_too_small: return "buffer_too_small";
    case PollStatus::timeout: return "timeout";
    case PollStatus::corrupted: return "corrupted";
    case PollStatus::invalid: return "invalid";
    case PollStatus::removed: return "removed";
    case PollStatus::segment_lost: return "segment_lost";
  }
  return "unknown";
}

std::string_view to_string(AckStatus s) noexcept {
  switch (s) {
    case AckStatus::ok: return "ok";
    case AckStatus::lease_lost: return "lease_lost";
    case AckStatus::invalid: return "invalid";
    case AckStatus::dlq_unavailable: return "dlq_unavailable";
  }
  return "unknown";
}

std::string_view to_string(Policy p) noexcept {
  switch (p) {
    case Policy::block: return "block";
    case Policy::drop_oldest: return "drop_oldest";
    case Policy::reject: return "reject";
  }
  return "unknown";
}

std::optional<Policy> parse_policy(std::string_view s) noexcept {
  if (s == "block") return Policy::block;
  if (s == "drop_oldest" || s == "drop-oldest") return Policy::drop_oldest;
  if (s == "reject") return Policy::reject;
  return std::nullopt;
}

std::string_view to_string(TimestampSource t) noexcept {
  switch (t) {
    case TimestampSource::realtime: return "realtime";
    case TimestampSource::tsc: return "tsc";
    case TimestampSource::none: return "none";
  }
  return "unknown";
}

std::optional<TimestampSource> parse_timestamps(std::string_view s) noexcept {
  if (s == "tsc") return TimestampSource::tsc;
  if (s == "realtime") return TimestampSource::realtime;
  if (s == "none") return TimestampSource::none;
  return std::nullopt;
}

std::string_view to_string(GroupOrdering o) noexcept {
  switch (o) {
    case GroupOrdering::none: return "none";
    case GroupOrdering::per_key: return "per_key";
  }
  return "unknown";
}

std::optional<GroupOrdering> parse_ordering(std::string_view s) noexcept {
  if (s == "none") return GroupOrdering::none;
  if (s == "per_key" || s == "per-key") return GroupOrdering::per_key;
  return std::nullopt;
}

std::string_view to_string(DeadLetterReason r) noexcept {
  switch (r) {
    case DeadLetterReason::max_deliveries: return "max_deliveries";
    case DeadLetterReason::rejected: return "rejected";
  }
  return "unknown";
}

}  // namespace shmbus
