// Error and Result<T>, shared by every layer of shmbus: the public types
// (<shmbus/result.hpp>), included under the path the OS layer uses.
#pragma once

#include <shmbus/result.hpp>
