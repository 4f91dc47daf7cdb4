// `shmbus bridge to-redis | from-redis | remove-checkpoint`: the command line
// of the Redis bridge (tools/bridge, docs/bridge.md). This file only parses
// options; the bridge itself knows nothing of the CLI.
#include <memory>

#include <CLI/CLI.hpp>

#include "bridge.hpp"
#include "probe.hpp"

namespace shmbus::probe {

// The bridge's exit codes extend the CLI's (its 3 is "Redis").
static_assert(bridge::kExitOk == kExitOk && bridge::kExitError == kExitError && bridge::kExitNotFound == kExitNotFound);

namespace {

void add_common_options(CLI::App* cmd, bridge::BridgeCommon& o) {
  cmd->add_option("CHANNEL", o.channel, "Channel name")->required();
  cmd->add_option("--stream", o.stream, "Redis stream key")->required();
  cmd->add_option("--redis", o.redis,
                  "Redis server, HOST:PORT (password from "
                  "$SHMBUS_REDIS_PASSWORD, user from $SHMBUS_REDIS_USER)")
      ->capture_default_str();
  cmd->add_option("--db", o.db, "Redis database number (SELECT)")
      ->capture_default_str()
      ->check(integer_in(0, 1'000'000));
  cmd->add_option("--bus", o.bus, "Bus name")->capture_default_str();
  cmd->add_option("--batch", o.batch, "Messages per round trip to Redis")
      ->capture_default_str()
      ->check(integer_in(1, 100'000));
  cmd->add_option("--count", o.count, "Stop after this many messages (0: run until a signal)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  cmd->add_option("--idle-exit", o.idle_exit_ms, "Stop after this many milliseconds with nothing to forward (0: never)")
      ->capture_default_str()
      ->check(integer_in(0, 365ULL * 86'400'000));
  cmd->add_option("--reconnect-timeout", o.reconnect_timeout_s,
                  "Seconds to keep retrying a lost or refusing Redis before exiting with 3")
      ->capture_default_str()
      ->check(seconds_in(0, 86400));
  cmd->add_flag("--quiet", o.quiet, "Print only warnings and errors");
}

void add_to_redis(CLI::App* cmd, Action& action) {
  auto to = std::make_shared<bridge::ToRedisOptions>();
  auto* t = cmd->add_subcommand("to-redis", "Forward CHANNEL to a Redis stream (XADD) until SIGINT/SIGTERM");
  add_common_options(t, *to);
  t->add_option("--maxlen", to->maxlen, "Trim the stream to about this many entries (0: never)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  t->add_flag("--approx", to->approx, "Trim with MAXLEN ~ (whole nodes: cheaper, inexact)");
  t->add_option("--subscriber", to->subscriber, "Durable checkpoint subscriber name (default: redis-<stream key>)");
  t->add_option("--from", to->from, "Where a new checkpoint starts: earliest or latest")
      ->capture_default_str()
      ->check(CLI::IsMember({"earliest", "latest"}));
  t->callback([&action, to] { action = [to] { return bridge::run_to_redis(*to); }; });
}

void add_from_redis(CLI::App* cmd, Action& action) {
  auto from = std::make_shared<bridge::FromRedisOptions>();
  auto* f = cmd->add_subcommand("from-redis",
                                "Publish a Redis stream's consumer group into CHANNEL (XREADGROUP, XACK "
                                "after commit) until SIGINT/SIGTERM");
  add_common_options(f, *from);
  f->add_option("--group", from->group, "Consumer group")->required();
  f->add_option("--consumer", from->consumer, "Consumer name; keep it across restarts (default: bridge-<hostname>)");
  f->add_flag("--create-group", from->create_group, "Create the group (and the stream) if missing");
  f->add_option("--group-start", from->group_start,
                "Where a created group starts: a stream ID, 0 (everything) or $ (new entries)")
      ->capture_default_str();
  f->add_option("--block-ms", from->block_ms, "XREADGROUP BLOCK milliseconds")
      ->capture_default_str()
      ->check(integer_in(1, 60'000));
  f->add_option("--claim-idle", from->claim_idle_ms,
                "XAUTOCLAIM entries other consumers left pending this many ms (0: off)")
      ->capture_default_str()
      ->check(integer_in(0, 365ULL * 86'400'000));
  f->add_option("--publish-timeout", from->publish_timeout_ms,
                "Milliseconds one publish waits on a full channel before it is retried")
      ->capture_default_str()
      ->check(integer_in(1, 60'000));
  f->callback([&action, from] { action = [from] { return bridge::run_from_redis(*from); }; });
}

void add_remove_checkpoint(CLI::App* cmd, Action& action) {
  auto rm = std::make_shared<bridge::RemoveCheckpointOptions>();
  auto* r = cmd->add_subcommand("remove-checkpoint",
                                "Forget a retired to-redis bridge's checkpoint subscriber (it gates "
                                "a block channel while it exists)");
  r->add_option("CHANNEL", rm->channel, "Channel name")->required();
  r->add_option("--bus", rm->bus, "Bus name")->capture_default_str();
  r->add_option("--stream", rm->stream, "The bridge's stream key (checkpoint redis-<key>)");
  r->add_option("--subscriber", rm->subscriber, "The checkpoint's name, if it was set");
  r->callback([&action, rm] { action = [rm] { return bridge::run_remove_checkpoint(*rm); }; });
}

}  // namespace

void add_bridge_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bridge",
                                 "Forward a channel to a Redis stream, or a stream's consumer group into a channel "
                                 "(at-least-once; exit codes: 0 ok, 1 error, 2 channel or group not found, "
                                 "3 Redis unreachable or refusing)");
  cmd->require_subcommand(1);
  add_to_redis(cmd, action);
  add_from_redis(cmd, action);
  add_remove_checkpoint(cmd, action);
}

}  // namespace shmbus::probe
