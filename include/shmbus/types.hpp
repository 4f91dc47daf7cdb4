// Value types: statuses, message metadata, options, start positions.
#pragma once
#include <shmbus/bus/types.hpp>
#include <shmbus/bus/stats.hpp>
