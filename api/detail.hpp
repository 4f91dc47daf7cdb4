// The library's own access to what the public handles hide: the C API, the
// probe and the tests reach a channel's state through here. Not installed:
// include/shmbus is the whole public contract.
#pragma once

#include <memory>

#include <shmbus/channel.hpp>

#include "bus/group/consumer_core.hpp"  // DlqRecord: the C API's shmbus_dlq_record mirrors it
#include "bus/ring/channel_state.hpp"

namespace shmbus::detail {

/// Friend of Channel: hands out its internal state.
struct ChannelAccess {
  static const std::shared_ptr<bus::ChannelState>& state(const Channel& c) noexcept { return c.state_; }
};

/// The internal state of channel `c` (null for an empty handle). Thread-safe.
inline const std::shared_ptr<bus::ChannelState>& state_of(const Channel& c) noexcept { return ChannelAccess::state(c); }

}  // namespace shmbus::detail
