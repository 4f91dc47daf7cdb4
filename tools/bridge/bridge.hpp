// `shmbus bridge`: forwards a channel to a Redis stream (`to-redis`) and a
// Redis stream's consumer group into a channel (`from-redis`), at-least-once
// both ways, so that a bus can grow past one host. See docs/bridge.md.
//
// The bridge depends on the public API only, not on the CLI: the CLI's
// `bridge` subcommands (tools/cli/cmd_bridge.cpp) parse the command line
// and call the run_* entry points below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shmbus::bridge {

/// Exit codes of `shmbus bridge`: 0, 1 and 2 mean what they mean for the
/// rest of the CLI (cmd_bridge.cpp checks that they agree).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;     ///< bad options, a channel error, a key of another type
inline constexpr int kExitNotFound = 2;  ///< the channel, the checkpoint or the consumer group does not exist
inline constexpr int kExitRedis = 3;     ///< Redis unreachable, or it refused a command

/// Where the Redis server listens.
struct RedisAddress {
  std::string host = "127.0.0.1";
  int port = 6379;
};

/// Parses "HOST:PORT", "HOST" (port 6379) or "[IPV6]:PORT". Returns nothing
/// on a malformed address or a port outside 1..65535. Thread-safe.
std::optional<RedisAddress> parse_redis_address(std::string_view text);

/// A durable subscriber name derived from a stream key: characters outside
/// [A-Za-z0-9_-] become '_', prefixed "redis-", cut to 63 characters.
/// Thread-safe.
std::string default_checkpoint_name(std::string_view stream);

/// Settings common to both directions.
struct BridgeCommon {
  std::string channel;
  std::string bus{"default"};
  std::string redis{"127.0.0.1:6379"};
  int db = 0;                         ///< SELECT this database
  std::string stream;                 ///< the stream key
  std::uint32_t batch = 256;          ///< messages per round trip
  std::uint64_t count = 0;            ///< stop after this many messages (0: run on)
  std::uint64_t idle_exit_ms = 0;     ///< stop after this long with nothing to do (0: never)
  double reconnect_timeout_s = 30.0;  ///< give up after this long without Redis
  bool quiet = false;                 ///< only errors on stderr
};

/// `shmbus bridge to-redis`.
struct ToRedisOptions : BridgeCommon {
  std::uint64_t maxlen = 0;      ///< XADD MAXLEN (0: no trimming)
  bool approx = false;           ///< MAXLEN ~ (trim whole nodes: cheaper)
  std::string subscriber;        ///< durable checkpoint name; empty: default_checkpoint_name(stream)
  std::string from{"earliest"};  ///< where a new checkpoint starts: earliest | latest
};

/// `shmbus bridge from-redis`.
struct FromRedisOptions : BridgeCommon {
  std::string group;
  std::string consumer;                    ///< empty: "bridge-<hostname>"
  bool create_group = false;               ///< XGROUP CREATE ... MKSTREAM if missing
  std::string group_start{"0"};            ///< where a created group starts: an ID, or $ (new entries)
  std::uint64_t block_ms = 200;            ///< XREADGROUP BLOCK
  std::uint64_t claim_idle_ms = 0;         ///< XAUTOCLAIM entries idle this long (0: off)
  std::uint64_t publish_timeout_ms = 100;  ///< one publish attempt; retried until it succeeds
};

/// `shmbus bridge remove-checkpoint`: forgets a retired to-redis bridge's
/// durable checkpoint, which otherwise keeps gating a block channel.
struct RemoveCheckpointOptions {
  std::string channel;
  std::string bus{"default"};
  std::string stream;      ///< names the checkpoint as default_checkpoint_name(stream)
  std::string subscriber;  ///< or names it directly
};

/// Removes the checkpoint subscriber. Exit 0, 2 if the channel or the
/// checkpoint does not exist, 1 if a live bridge holds it. Thread-safe.
int run_remove_checkpoint(const RemoveCheckpointOptions& opts);

/// Runs a to-redis bridge until SIGINT/SIGTERM, --count or --idle-exit.
/// Returns the exit code. Installs SIGINT/SIGTERM handlers and ignores
/// SIGPIPE. Not thread-safe: one bridge per process.
int run_to_redis(const ToRedisOptions& opts);

/// Runs a from-redis bridge until SIGINT/SIGTERM, --count or --idle-exit.
/// Returns the exit code. Installs SIGINT/SIGTERM handlers and ignores
/// SIGPIPE. Not thread-safe: one bridge per process.
int run_from_redis(const FromRedisOptions& opts);

}  // namespace shmbus::bridge
