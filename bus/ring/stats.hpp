// A point-in-time snapshot of a channel's counters, cursors and owners, for
// the probe and for tests. Reading never changes the channel. The snapshot's
// types are public (<shmbus/stats.hpp>).
#pragma once

#include <shmbus/stats.hpp>

#include "bus/ring/channel_state.hpp"

namespace shmbus::bus {

/// Snapshot of a channel. Thread-safe; makes liveness system calls.
ChannelStats snapshot(const ChannelState& ch);

}  // namespace shmbus::bus
