// Value types: statuses, message metadata, options, start positions.
#pragma once
#include "bus/common/types.hpp"
#include "bus/ring/stats.hpp"
