// The public value types (<shmbus/types.hpp>: statuses, message metadata,
// options) under the names the messaging layer uses. The types are defined in
// include/shmbus, with nothing but the standard library, so that installed
// users need no bus/ header.
#pragma once

#include <shmbus/types.hpp>

#include "bus/ring/layout.hpp"
#include "shm/trust.hpp"

namespace shmbus::bus {

using shmbus::Policy;
using shmbus::TimestampSource;

}  // namespace shmbus::bus
