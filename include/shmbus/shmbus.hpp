// shmbus: a lock-free shared-memory message bus for processes on one host.
// Include this one header for the whole API.
#pragma once

#include <shmbus/archive.hpp>
#include <shmbus/archive_types.hpp>
#include <shmbus/channel.hpp>
#include <shmbus/consumer.hpp>
#include <shmbus/dedup.hpp>
#include <shmbus/dedup_types.hpp>
#include <shmbus/publisher.hpp>
#include <shmbus/result.hpp>
#include <shmbus/stats.hpp>
#include <shmbus/subscriber.hpp>
#include <shmbus/trust.hpp>
#include <shmbus/types.hpp>
