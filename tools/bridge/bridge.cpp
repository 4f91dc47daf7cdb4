// `shmbus bridge`: Redis Streams in and out of a channel (docs/bridge.md).
//
// to-redis (channel -> stream). Two subscribers on the channel:
//   - the *checkpoint*, a durable subscriber that never reads. Its cursor is
//     moved (seek) only after a batch is confirmed by Redis, so it gates the
//     publishers of a block channel at the first sequence not yet in the
//     stream: nothing the bridge has not forwarded can be overwritten, even
//     while the bridge is dead.
//   - the *reader*, an anonymous subscriber that reads ahead of it in
//     batches. Its cursor moves before the XADDs are sent, so it is never
//     used as a checkpoint.
// Each batch goes to Redis as MULTI, one XADD per message, EXEC, in one
// write: the stream takes all of a batch or none of it. Every entry carries
// the source `sequence` and the channel `epoch`. On start (and after a lost
// connection) the bridge resumes at max(checkpoint cursor, last sequence in
// the stream + 1); the stream's last entry is ignored when it came from
// another incarnation of the channel (other epoch). A kill -9 at any point
// therefore re-sends nothing that Redis confirmed and loses nothing that it
// did not: duplicates arise only if a confirmed EXEC's reply was lost and
// the stream was then trimmed or deleted behind the bridge's back.
//
// from-redis (stream -> channel). XREADGROUP with a consumer name that
// survives restarts. On start (and after a lost connection) the bridge first
// re-reads this consumer's pending entries (ID 0 onward), then new ones (>).
// Each entry is published, and XACKed only once publish returned ok
// (committed). A kill -9 between the publish and the XACK publishes the
// entry again after the restart: at-least-once. Optionally XAUTOCLAIM takes
// over the pending entries of consumers idle for longer than a bound.
#include "bridge.hpp"

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <shmbus/channel.hpp>

namespace shmbus::bridge {

namespace {

// --- process-wide stop request (SIGINT / SIGTERM) ------------------------

volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_stop_signal(int /*signo*/) { g_stop = 1; }

bool stopping() noexcept { return g_stop != 0; }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waits return early and re-check the flag
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGPIPE, &ign, nullptr);  // a closed socket is an error reply, not a death
}

std::uint64_t now_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

/// Sleeps up to `ms`, returning early on a stop request.
void sleep_ms(std::uint64_t ms) {
  const std::uint64_t end = now_ms() + ms;
  while (!stopping()) {
    const std::uint64_t t = now_ms();
    if (t >= end) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<std::uint64_t>(end - t, 20)));
  }
}

// --- messages on stderr --------------------------------------------------

class Log {
 public:
  Log(const char* direction, bool quiet) : direction_(direction), quiet_(quiet) {}

  [[gnu::format(printf, 2, 3)]] void info(const char* fmt, ...) const {
    if (quiet_) return;
    va_list ap;
    va_start(ap, fmt);
    emit("", fmt, ap);
    va_end(ap);
  }
  [[gnu::format(printf, 2, 3)]] void warn(const char* fmt, ...) const {
    va_list ap;
    va_start(ap, fmt);
    emit("warning: ", fmt, ap);
    va_end(ap);
  }
  [[gnu::format(printf, 2, 3)]] void error(const char* fmt, ...) const {
    va_list ap;
    va_start(ap, fmt);
    emit("error: ", fmt, ap);
    va_end(ap);
  }

 private:
  void emit(const char* level, const char* fmt, va_list ap) const {
    char buf[2048];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::fprintf(stderr, "shmbus bridge %s: %s%s\n", direction_, level, buf);
    std::fflush(stderr);
  }
  const char* direction_;
  bool quiet_;
};

using ull = unsigned long long;

// --- numbers ---------------------------------------------------------------

std::string u64_text(std::uint64_t v) {
  char tmp[24];
  const auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
  return std::string(tmp, r.ptr);
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc{} || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// --- RESP encoding -----------------------------------------------------------

/// Appends Redis commands in the wire protocol (RESP arrays of bulk strings)
/// to a buffer, so that a whole batch goes out in one write.
class Resp {
 public:
  explicit Resp(std::string& out) : out_(out) {}
  void begin(std::size_t nargs) {
    out_ += '*';
    out_ += u64_text(nargs);
    out_ += "\r\n";
  }
  void arg(std::string_view s) {
    out_ += '$';
    out_ += u64_text(s.size());
    out_ += "\r\n";
    out_.append(s);
    out_ += "\r\n";
  }
  void arg(std::span<const std::byte> b) { arg(std::string_view(reinterpret_cast<const char*>(b.data()), b.size())); }
  void arg(std::uint64_t v) { arg(std::string_view(u64_text(v))); }
  void command(std::initializer_list<std::string_view> args) {
    begin(args.size());
    for (auto a : args) arg(a);
  }

 private:
  std::string& out_;
};

// --- the Redis connection ------------------------------------------------

struct ReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct ContextFree {
  void operator()(redisContext* c) const noexcept { redisFree(c); }
};

std::string_view text(const redisReply* r) {
  if (r == nullptr || r->str == nullptr) return {};
  return std::string_view(r->str, r->len);
}

bool is_error(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_ERROR; }

bool error_is(const redisReply* r, std::string_view prefix) {
  return is_error(r) && text(r).substr(0, prefix.size()) == prefix;
}

/// Errors after which the same command may succeed later (memory freed,
/// dataset loaded, failover done): retried with backoff, not fatal.
bool transient_error(std::string_view e) {
  for (std::string_view p :
       {"OOM", "LOADING", "BUSY ", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "NOREPLICAS", "READONLY"}) {
    if (e.substr(0, p.size()) == p) return true;
  }
  return false;
}

/// One blocking connection to a Redis server, re-established on demand.
/// Not thread-safe.
class Redis {
 public:
  Redis(RedisAddress addr, int db, std::uint64_t reply_timeout_ms, std::string client_name)
      : addr_(std::move(addr)), db_(db), reply_timeout_ms_(reply_timeout_ms), client_name_(std::move(client_name)) {}

  std::string where() const { return addr_.host + ":" + std::to_string(addr_.port); }
  const std::string& last_error() const { return last_error_; }

  /// Connects (AUTH and SELECT as configured, then PING). Returns an empty
  /// string, or why it failed.
  std::string connect() {
    ctx_.reset();
    const timeval connect_tv{2, 0};
    redisContext* c = redisConnectWithTimeout(addr_.host.c_str(), addr_.port, connect_tv);
    if (c == nullptr) return "cannot allocate a Redis connection";
    ctx_.reset(c);
    if (c->err != 0) {
      std::string e = "cannot connect to Redis at " + where() + ": " + c->errstr;
      ctx_.reset();
      return e;
    }
    const timeval reply_tv{static_cast<time_t>(reply_timeout_ms_ / 1000),
                           static_cast<suseconds_t>((reply_timeout_ms_ % 1000) * 1000)};
    redisSetTimeout(c, reply_tv);
    redisEnableKeepAlive(c);

    const char* password = std::getenv("SHMBUS_REDIS_PASSWORD");
    if (password != nullptr && *password != '\0') {
      const char* user = std::getenv("SHMBUS_REDIS_USER");
      Reply r = (user != nullptr && *user != '\0') ? command({"AUTH", user, password}) : command({"AUTH", password});
      if (!r) return "lost Redis at " + where() + " during AUTH: " + last_error_;
      if (is_error(r.get())) {
        ctx_.reset();
        return "Redis at " + where() + " refused AUTH: " + std::string(text(r.get()));
      }
    }
    if (db_ != 0) {
      Reply r = command({"SELECT", std::to_string(db_)});
      if (!r) return "lost Redis at " + where() + " during SELECT: " + last_error_;
      if (is_error(r.get())) {
        ctx_.reset();
        return "Redis at " + where() + " refused SELECT " + std::to_string(db_) + ": " + std::string(text(r.get()));
      }
    }
    // Named, so that CLIENT LIST shows the bridge (a refusal is harmless).
    if (Reply n = command({"CLIENT", "SETNAME", client_name_}); !n) {
      return "lost Redis at " + where() + " during CLIENT SETNAME: " + last_error_;
    }
    Reply r = command({"PING"});
    if (!r) return "lost Redis at " + where() + " during PING: " + last_error_;
    if (is_error(r.get())) {
      ctx_.reset();
      return "Redis at " + where() + " refused PING: " + std::string(text(r.get()));
    }
    return {};
  }

  [[nodiscard]] bool connected() const { return ctx_ != nullptr; }

  /// Sends `resp` (which holds `n` commands) in one write and reads the n
  /// replies. false on a connection failure (last_error() says why; the
  /// connection is then closed).
  bool exchange(const std::string& resp, std::size_t n, std::vector<Reply>& out) {
    out.clear();
    if (!ctx_) {
      last_error_ = "not connected";
      return false;
    }
    if (redisAppendFormattedCommand(ctx_.get(), resp.data(), resp.size()) != REDIS_OK) return fail();
    for (std::size_t i = 0; i < n; ++i) {
      void* r = nullptr;
      if (redisGetReply(ctx_.get(), &r) != REDIS_OK) return fail();
      out.emplace_back(static_cast<redisReply*>(r));
    }
    return true;
  }

  /// One command; a null reply means the connection failed.
  Reply command(std::initializer_list<std::string_view> args) {
    std::string buf;
    Resp(buf).command(args);
    return command_resp(buf);
  }
  Reply command(const std::vector<std::string>& args) {
    std::string buf;
    Resp w(buf);
    w.begin(args.size());
    for (const auto& a : args) w.arg(std::string_view(a));
    return command_resp(buf);
  }

 private:
  Reply command_resp(const std::string& buf) {
    std::vector<Reply> out;
    if (!exchange(buf, 1, out)) return nullptr;
    return std::move(out[0]);
  }
  bool fail() {
    const int err = ctx_->err;
    last_error_ = ctx_->errstr;
    if (err == REDIS_ERR_IO && (last_error_.find("temporarily unavailable") != std::string::npos ||
                                last_error_.find("timed out") != std::string::npos)) {
      last_error_ = "no reply within " + std::to_string(reply_timeout_ms_) + " ms";
    }
    ctx_.reset();
    return false;
  }

  RedisAddress addr_;
  int db_;
  std::uint64_t reply_timeout_ms_;
  std::string client_name_;
  std::unique_ptr<redisContext, ContextFree> ctx_;
  std::string last_error_;
};

/// Reconnects with backoff until it works, the timeout passes or a stop is
/// requested. Returns whether connected.
bool reconnect(Redis& redis, double timeout_s, const Log& log) {
  log.warn("lost the connection to Redis at %s (%s); reconnecting", redis.where().c_str(), redis.last_error().c_str());
  const std::uint64_t deadline = now_ms() + static_cast<std::uint64_t>(timeout_s * 1000.0);
  std::uint64_t backoff = 50;
  std::string err;
  while (!stopping()) {
    err = redis.connect();
    if (err.empty()) {
      log.info("reconnected to Redis at %s", redis.where().c_str());
      return true;
    }
    if (now_ms() >= deadline) {
      log.error("%s (gave up after %.1f s)", err.c_str(), timeout_s);
      return false;
    }
    sleep_ms(backoff);
    backoff = std::min<std::uint64_t>(backoff * 2, 1000);
  }
  return false;
}

/// Opens the channel a bridge works on, with the CLI's error reporting.
std::optional<Channel> open_channel(const BridgeCommon& o, const Log& log, int& exit_code) {
  auto ch = Channel::open(o.channel, o.bus);
  if (ch) return std::move(ch.value());
  if (ch.error().code() == ErrorCode::not_found) {
    log.error("no channel '%s' on bus '%s'", o.channel.c_str(), o.bus.c_str());
    exit_code = kExitNotFound;
  } else {
    log.error("cannot open channel '%s' on bus '%s': %s: %s", o.channel.c_str(), o.bus.c_str(),
              std::string(to_string(ch.error().code())).c_str(), ch.error().message().c_str());
    exit_code = kExitError;
  }
  return std::nullopt;
}

/// Checks the settings both directions share; logs and returns false if bad.
bool check_common(const BridgeCommon& o, const Log& log, RedisAddress& addr) {
  if (o.stream.empty()) {
    log.error("--stream must name a stream key");
    return false;
  }
  auto a = parse_redis_address(o.redis);
  if (!a) {
    log.error("bad --redis '%s': expected HOST:PORT (port 1..65535)", o.redis.c_str());
    return false;
  }
  addr = *a;
  if (o.batch == 0) {
    log.error("--batch must be at least 1");
    return false;
  }
  return true;
}

// === to-redis ===============================================================

/// What the stream says about where the bridge got to.
struct StreamCheckpoint {
  enum class Kind { ok, io, not_a_stream, redis_error } kind = Kind::ok;
  std::optional<std::uint64_t> next;  ///< last forwarded sequence + 1, if usable
  std::string message;
};

/// Reads the stream's last entry (XREVRANGE key + - COUNT 1) and returns
/// its `sequence` + 1 when it came from this channel (same epoch) and is
/// not beyond the channel's head.
StreamCheckpoint read_stream_checkpoint(Redis& redis, const std::string& key, std::uint64_t epoch, std::uint64_t head,
                                        const Log& log) {
  StreamCheckpoint cp;
  Reply r = redis.command({"XREVRANGE", key, "+", "-", "COUNT", "1"});
  if (!r) {
    cp.kind = StreamCheckpoint::Kind::io;
    return cp;
  }
  if (error_is(r.get(), "WRONGTYPE")) {
    cp.kind = StreamCheckpoint::Kind::not_a_stream;
    cp.message = "key '" + key + "' holds another type, not a stream";
    return cp;
  }
  if (is_error(r.get()) || r->type != REDIS_REPLY_ARRAY) {
    cp.kind = StreamCheckpoint::Kind::redis_error;
    cp.message =
        "XREVRANGE " + key + " failed: " + (is_error(r.get()) ? std::string(text(r.get())) : "unexpected reply");
    return cp;
  }
  if (r->elements == 0) return cp;  // no stream yet, or empty
  const redisReply* entry = r->element[0];
  if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 || entry->element[1]->type != REDIS_REPLY_ARRAY) {
    cp.kind = StreamCheckpoint::Kind::redis_error;
    cp.message = "XREVRANGE " + key + " returned a malformed entry";
    return cp;
  }
  const std::string id(text(entry->element[0]));
  const redisReply* fields = entry->element[1];
  std::optional<std::uint64_t> seq;
  std::optional<std::uint64_t> ep;
  for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
    const std::string_view f = text(fields->element[i]);
    if (f == "sequence") seq = parse_u64(text(fields->element[i + 1]));
    if (f == "epoch") ep = parse_u64(text(fields->element[i + 1]));
  }
  if (!seq || !ep) {
    log.warn(
        "the stream's last entry %s has no sequence/epoch fields (not written by a bridge); "
        "resuming from the bridge's own checkpoint",
        id.c_str());
  } else if (*ep != epoch) {
    log.warn(
        "the stream's last entry %s came from another incarnation of the channel (epoch "
        "%llu, the channel's is %llu); resuming from the bridge's own checkpoint",
        id.c_str(), static_cast<ull>(*ep), static_cast<ull>(epoch));
  } else if (*seq >= head) {
    log.warn(
        "the stream's last entry %s holds sequence %llu, beyond the channel's head %llu; "
        "ignoring it",
        id.c_str(), static_cast<ull>(*seq), static_cast<ull>(head));
  } else {
    cp.next = *seq + 1;
  }
  return cp;
}

/// Appends one XADD for `m` to `out`.
void append_xadd(std::string& out, const ToRedisOptions& o, const std::string& maxlen_text, std::uint64_t epoch,
                 const Message& m) {
  std::size_t nargs = 2 + 1 + 8;  // XADD key * data sequence epoch timestamp_ns (pairs)
  if (o.maxlen != 0) nargs += o.approx ? 3 : 2;
  if (m.key != 0) nargs += 2;
  if (m.id != 0) nargs += 2;
  if (m.type != 0) nargs += 2;
  if (m.correlation_id != 0) nargs += 2;
  Resp w(out);
  w.begin(nargs);
  w.arg(std::string_view("XADD"));
  w.arg(std::string_view(o.stream));
  if (o.maxlen != 0) {
    w.arg(std::string_view("MAXLEN"));
    if (o.approx) w.arg(std::string_view("~"));
    w.arg(std::string_view(maxlen_text));
  }
  w.arg(std::string_view("*"));
  w.arg(std::string_view("data"));
  w.arg(m.payload);
  w.arg(std::string_view("sequence"));
  w.arg(m.sequence);
  w.arg(std::string_view("epoch"));
  w.arg(epoch);
  w.arg(std::string_view("timestamp_ns"));
  w.arg(m.timestamp_ns);
  if (m.key != 0) {
    w.arg(std::string_view("key"));
    w.arg(m.key);
  }
  if (m.id != 0) {
    w.arg(std::string_view("id"));
    w.arg(m.id);
  }
  if (m.type != 0) {
    w.arg(std::string_view("type"));
    w.arg(static_cast<std::uint64_t>(m.type));
  }
  if (m.correlation_id != 0) {
    w.arg(std::string_view("correlation_id"));
    w.arg(m.correlation_id);
  }
}

enum class SendResult { ok, io, transient, not_a_stream, refused };

/// Sends one MULTI / n XADD / EXEC batch and reads its replies.
SendResult send_batch(Redis& redis, const std::string& resp, std::size_t n, std::vector<Reply>& replies,
                      std::string& why) {
  if (!redis.exchange(resp, n + 2, replies)) return SendResult::io;
  std::string queue_error;
  for (std::size_t i = 0; i <= n; ++i) {  // MULTI's +OK, then +QUEUED per XADD
    if (is_error(replies[i].get()) && queue_error.empty()) queue_error = text(replies[i].get());
  }
  const redisReply* exec = replies[n + 1].get();
  if (is_error(exec) || exec->type != REDIS_REPLY_ARRAY) {
    // EXECABORT: nothing of the batch was applied.
    why = !queue_error.empty() ? queue_error : (is_error(exec) ? std::string(text(exec)) : "EXEC was aborted");
    return transient_error(why) ? SendResult::transient : SendResult::refused;
  }
  for (std::size_t i = 0; i < exec->elements; ++i) {
    const redisReply* e = exec->element[i];
    if (error_is(e, "WRONGTYPE")) {
      why = "the key holds another type, not a stream";
      return SendResult::not_a_stream;
    }
    if (is_error(e)) {
      why = text(e);
      return SendResult::refused;
    }
  }
  if (exec->elements != n) {
    why = "EXEC returned " + std::to_string(exec->elements) + " replies for " + std::to_string(n) + " XADDs";
    return SendResult::refused;
  }
  return SendResult::ok;
}

/// A to-redis bridge from start to stop. run_to_redis drives it: connect,
/// resume, forward_batch until it returns false, shutdown. Not thread-safe.
class ToRedis {
 public:
  explicit ToRedis(const ToRedisOptions& o) : o_(o), log_("to-redis", o.quiet) {}

  /// Checks the options, opens the channel and connects to Redis. Returns
  /// the exit code when the bridge cannot start.
  std::optional<int> connect();
  /// Finds where to start (the later of the checkpoint subscriber's cursor
  /// and the stream's last entry) and attaches the checkpoint and the reader
  /// there. Returns the exit code when the bridge cannot start.
  std::optional<int> resume();
  /// Reads one batch and forwards it, or waits for messages. false once the
  /// bridge stops (shutdown() then returns why).
  bool forward_batch();
  /// Logs the totals. Returns the exit code.
  int shutdown() const;

 private:
  std::optional<int> read_stream_next(std::optional<std::uint64_t>& next);
  std::size_t read_batch(PollStatus& last);
  void report_gap();
  void confirmed(std::size_t n);
  bool resync();
  bool retry_refused(const std::string& why);
  bool stop_with(int code) {
    result_ = code;
    return false;
  }

  const ToRedisOptions& o_;
  const Log log_;
  std::string checkpoint_name_;
  std::optional<Channel> ch_;
  std::uint64_t epoch_ = 0;
  std::optional<Redis> redis_;
  Subscriber holder_;  ///< the checkpoint: moved only once Redis confirmed a batch
  Subscriber reader_;  ///< reads ahead of the checkpoint
  std::string maxlen_text_;
  std::string buf_;                   ///< the batch: MULTI, one XADD per message, EXEC
  std::vector<std::size_t> offsets_;  ///< where each message's XADD starts in buf_
  std::vector<std::uint64_t> seqs_;   ///< the batch's sequences
  std::vector<Reply> replies_;
  std::uint64_t forwarded_ = 0;
  std::uint64_t batches_ = 0;
  std::uint64_t lost_seen_ = 0;
  std::uint64_t lost_total_ = 0;
  std::uint64_t gaps_ = 0;
  std::uint64_t retry_since_ = 0;  ///< first failed attempt of the current batch (transient errors)
  std::uint64_t backoff_ = 50;
  std::uint64_t idle_since_ = 0;
  int result_ = kExitOk;
};

std::optional<int> ToRedis::connect() {
  RedisAddress addr;
  if (!check_common(o_, log_, addr)) return kExitError;
  if (o_.from != "earliest" && o_.from != "latest") {
    log_.error("--from must be 'earliest' or 'latest', not '%s'", o_.from.c_str());
    return kExitError;
  }
  checkpoint_name_ = o_.subscriber.empty() ? default_checkpoint_name(o_.stream) : o_.subscriber;

  int code = kExitError;
  ch_ = open_channel(o_, log_, code);
  if (!ch_) return code;
  epoch_ = ch_->stats().epoch;

  redis_.emplace(addr, o_.db, 10'000, "shmbus-bridge-to-redis");
  if (std::string err = redis_->connect(); !err.empty()) {
    log_.error("%s", err.c_str());
    return kExitRedis;
  }
  return std::nullopt;
}

/// The stream's checkpoint (last forwarded sequence + 1, if usable) into
/// `next`, reconnecting as needed. Returns the exit code when the bridge
/// cannot go on.
std::optional<int> ToRedis::read_stream_next(std::optional<std::uint64_t>& next) {
  for (;;) {
    StreamCheckpoint cp = read_stream_checkpoint(*redis_, o_.stream, epoch_, ch_->stats().head, log_);
    if (cp.kind == StreamCheckpoint::Kind::io) {
      if (!reconnect(*redis_, o_.reconnect_timeout_s, log_)) return stopping() ? kExitOk : kExitRedis;
      continue;
    }
    if (cp.kind == StreamCheckpoint::Kind::not_a_stream) {
      log_.error("%s", cp.message.c_str());
      return kExitError;
    }
    if (cp.kind == StreamCheckpoint::Kind::redis_error) {
      log_.error("%s", cp.message.c_str());
      return kExitRedis;
    }
    next = cp.next;
    return std::nullopt;
  }
}

std::optional<int> ToRedis::resume() {
  // Where to resume: the later of the two checkpoints. Both only ever hold
  // sequences that Redis confirmed.
  std::optional<std::uint64_t> stream_next;
  if (auto code = read_stream_next(stream_next)) return code;
  // Attached only once Redis and the stream key checked out, so that a
  // bridge that cannot start leaves no new durable cursor behind.
  SubscribeOptions hold_opts;
  hold_opts.name = checkpoint_name_;
  hold_opts.start = o_.from == "latest" ? StartAt::latest() : StartAt::earliest();
  auto holder = ch_->subscribe(hold_opts);
  if (!holder) {
    log_.error("cannot attach the checkpoint subscriber '%s' to channel '%s': %s: %s", checkpoint_name_.c_str(),
               o_.channel.c_str(), std::string(to_string(holder.error().code())).c_str(),
               holder.error().message().c_str());
    return kExitError;
  }
  holder_ = std::move(holder.value());

  const std::uint64_t own_cp = holder_.cursor();
  const std::uint64_t start = std::max(own_cp, stream_next.value_or(0));
  if (start > own_cp) holder_.seek(start);
  const std::string stream_cp_text = stream_next ? u64_text(*stream_next) : "none";
  log_.info(
      "channel '%s' (bus '%s') -> stream '%s' at %s: checkpoint '%s' %s at %llu, stream "
      "checkpoint %s; resuming at sequence %llu",
      o_.channel.c_str(), o_.bus.c_str(), o_.stream.c_str(), redis_->where().c_str(), checkpoint_name_.c_str(),
      holder_.resumed() ? "resumed" : "created", static_cast<ull>(own_cp), stream_cp_text.c_str(),
      static_cast<ull>(start));

  SubscribeOptions read_opts;
  read_opts.start = StartAt::at_sequence(start);
  auto reader = ch_->subscribe(read_opts);
  if (!reader) {
    log_.error("cannot attach a reader to channel '%s': %s: %s", o_.channel.c_str(),
               std::string(to_string(reader.error().code())).c_str(), reader.error().message().c_str());
    return kExitError;
  }
  reader_ = std::move(reader.value());
  maxlen_text_ = u64_text(o_.maxlen);
  lost_seen_ = reader_.counters().lost;
  idle_since_ = now_ms();
  return std::nullopt;
}

/// Reads up to a batch into buf_ (MULTI, then one XADD per message) and
/// returns how many; `last` is the reader's last poll status.
std::size_t ToRedis::read_batch(PollStatus& last) {
  std::size_t want = o_.batch;
  if (o_.count != 0) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, o_.count - forwarded_));

  buf_.clear();
  offsets_.clear();
  seqs_.clear();
  Resp(buf_).command({"MULTI"});
  last = PollStatus::ok;
  const std::size_t n = reader_.read_batch(
      [&](const Message& m) {
        offsets_.push_back(buf_.size());
        seqs_.push_back(m.sequence);
        append_xadd(buf_, o_, maxlen_text_, epoch_, m);
      },
      want, &last);
  if (offsets_.size() > n) {  // the last message failed validation (lapped): drop it
    buf_.resize(offsets_[n]);
    offsets_.resize(n);
    seqs_.resize(n);
  }
  return n;
}

/// Warns of messages overwritten in the channel before the reader got them.
void ToRedis::report_gap() {
  const std::uint64_t lost = reader_.counters().lost;
  if (lost <= lost_seen_) return;
  const std::uint64_t k = lost - lost_seen_;
  lost_seen_ = lost;
  lost_total_ += k;
  ++gaps_;
  log_.warn(
      "gap: %llu message(s) lost before sequence %llu (overwritten in the channel "
      "before they were forwarded)",
      static_cast<ull>(k), static_cast<ull>(reader_.cursor()));
}

bool ToRedis::forward_batch() {
  if (o_.count != 0 && forwarded_ >= o_.count) return false;
  PollStatus last = PollStatus::ok;
  const std::size_t n = read_batch(last);
  report_gap();
  if (last == PollStatus::invalid) {
    log_.error("the reader was detached from channel '%s' (its entry was taken over)", o_.channel.c_str());
    return stop_with(kExitError);
  }
  if (n == 0) {
    if (last == PollStatus::empty || last == PollStatus::timeout) {
      if (o_.idle_exit_ms != 0 && now_ms() - idle_since_ >= o_.idle_exit_ms) return false;
      (void)reader_.wait(100'000'000ULL);
    }
    return true;
  }

  Resp(buf_).command({"EXEC"});
  std::string why;
  const SendResult sr = send_batch(*redis_, buf_, n, replies_, why);
  if (sr == SendResult::ok) {
    confirmed(n);
    return true;
  }
  if (sr == SendResult::io) return resync();
  if (sr == SendResult::transient) return retry_refused(why);
  log_.error("Redis at %s refused XADD to '%s' at sequence %llu: %s", redis_->where().c_str(), o_.stream.c_str(),
             static_cast<ull>(seqs_.front()), why.c_str());
  return stop_with(sr == SendResult::not_a_stream ? kExitError : kExitRedis);
}

/// Redis applied the whole batch of `n`: the checkpoint moves past it.
void ToRedis::confirmed(std::size_t n) {
  holder_.seek(seqs_.back() + 1);  // SYNC: only now may publishers overwrite these slots
  forwarded_ += n;
  ++batches_;
  retry_since_ = 0;
  backoff_ = 50;
  idle_since_ = now_ms();
}

/// The connection failed during a batch: reconnects, and resumes where the
/// stream says (whether the EXEC got through is unknown). false if the
/// bridge stops.
bool ToRedis::resync() {
  for (;;) {
    if (!reconnect(*redis_, o_.reconnect_timeout_s, log_)) {
      return stop_with(stopping() ? kExitOk : kExitRedis);
    }
    StreamCheckpoint cp = read_stream_checkpoint(*redis_, o_.stream, epoch_, ch_->stats().head, log_);
    if (cp.kind == StreamCheckpoint::Kind::io) continue;
    if (cp.kind != StreamCheckpoint::Kind::ok) {
      log_.error("%s", cp.message.c_str());
      return stop_with(cp.kind == StreamCheckpoint::Kind::not_a_stream ? kExitError : kExitRedis);
    }
    std::uint64_t resume = seqs_.front();
    if (cp.next && *cp.next > resume) resume = *cp.next;
    const auto done = static_cast<std::uint64_t>(std::lower_bound(seqs_.begin(), seqs_.end(), resume) - seqs_.begin());
    forwarded_ += done;
    if (resume > holder_.cursor()) holder_.seek(resume);
    reader_.seek(resume);
    log_.info(
        "resynchronised with the stream: %llu of the batch were applied; resuming at "
        "sequence %llu",
        static_cast<ull>(done), static_cast<ull>(resume));
    return true;
  }
}

/// Redis refused the batch with an error that may pass: nothing of it was
/// applied, so it is read again after a backoff, until the reconnect
/// timeout. false if the bridge stops.
bool ToRedis::retry_refused(const std::string& why) {
  if (retry_since_ == 0) retry_since_ = now_ms();
  if (now_ms() - retry_since_ >= static_cast<std::uint64_t>(o_.reconnect_timeout_s * 1000.0)) {
    log_.error("Redis at %s kept refusing XADD to '%s' for %.1f s: %s", redis_->where().c_str(), o_.stream.c_str(),
               o_.reconnect_timeout_s, why.c_str());
    return stop_with(kExitRedis);
  }
  log_.warn("Redis refused the batch at sequence %llu (%s); retrying", static_cast<ull>(seqs_.front()), why.c_str());
  reader_.seek(seqs_.front());  // nothing of it was applied
  sleep_ms(backoff_);
  backoff_ = std::min<std::uint64_t>(backoff_ * 2, 1000);
  return true;
}

int ToRedis::shutdown() const {
  log_.info(
      "stopped: forwarded %llu message(s) in %llu batch(es); checkpoint at sequence %llu; "
      "%llu gap(s), %llu message(s) lost",
      static_cast<ull>(forwarded_), static_cast<ull>(batches_), static_cast<ull>(holder_.cursor()),
      static_cast<ull>(gaps_), static_cast<ull>(lost_total_));
  return result_;
}

}  // namespace

int run_to_redis(const ToRedisOptions& o) {
  install_signal_handlers();
  ToRedis run(o);
  if (auto code = run.connect()) return *code;
  if (auto code = run.resume()) return *code;
  while (!stopping() && run.forward_batch()) {
  }
  return run.shutdown();
}

// === from-redis =============================================================

namespace {

/// A stream entry turned into a message.
struct Entry {
  std::string_view id;
  std::span<const std::byte> data;
  MessageMeta meta;
  bool deleted = false;  ///< pending, but no longer in the stream (trimmed)
  std::string problem;   ///< why it cannot be published (malformed); empty if fine
};

Entry parse_entry(const redisReply* e) {
  Entry out;
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) {
    out.problem = "malformed entry reply";
    return out;
  }
  out.id = text(e->element[0]);
  const redisReply* f = e->element[1];
  if (f->type == REDIS_REPLY_NIL) {
    out.deleted = true;
    return out;
  }
  if (f->type != REDIS_REPLY_ARRAY) {
    out.problem = "malformed field list";
    return out;
  }
  bool have_data = false;
  for (std::size_t i = 0; i + 1 < f->elements; i += 2) {
    const std::string_view name = text(f->element[i]);
    const std::string_view value = text(f->element[i + 1]);
    if (name == "data") {
      out.data = std::as_bytes(std::span<const char>(value.data(), value.size()));
      have_data = true;
      continue;
    }
    std::uint64_t* target = nullptr;
    std::uint64_t type = 0;
    if (name == "key")
      target = &out.meta.key;
    else if (name == "id")
      target = &out.meta.id;
    else if (name == "correlation_id")
      target = &out.meta.correlation_id;
    else if (name == "timestamp_ns")
      target = &out.meta.timestamp_ns;
    else if (name == "type")
      target = &type;
    if (target == nullptr) continue;  // other fields (sequence, epoch, ...) are not carried
    auto v = parse_u64(value);
    if (!v || (target == &type && *v > UINT32_MAX)) {
      out.problem =
          "field '" + std::string(name) + "' is not a valid number: '" + std::string(value.substr(0, 40)) + "'";
      return out;
    }
    *target = *v;
    if (target == &type) out.meta.type = static_cast<std::uint32_t>(type);
  }
  if (!have_data) out.problem = "no 'data' field";
  return out;
}

std::string default_consumer_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "bridge";
  return std::string("bridge-") + host;
}

/// A from-redis bridge from start to stop. run_from_redis drives it:
/// connect, resume, forward_batch until it returns false, shutdown. Not
/// thread-safe.
class FromRedis {
 public:
  explicit FromRedis(const FromRedisOptions& o) : o_(o), log_("from-redis", o.quiet) {}

  /// Checks the options, opens the channel, adds the publisher and connects
  /// to Redis. Returns the exit code when the bridge cannot start.
  std::optional<int> connect();
  /// Creates the consumer group if asked to, and starts with this
  /// consumer's pending entries (ID 0 onward). Returns the exit code when the
  /// bridge cannot start.
  std::optional<int> resume();
  /// Acknowledges what was published, reads one batch of entries (pending,
  /// claimed or new) and publishes them. false once the bridge stops
  /// (shutdown() then returns why).
  bool forward_batch();
  /// Acknowledges what it can and logs the totals. Returns the exit code.
  int shutdown();

 private:
  /// What to do with a reply to a read.
  enum class Verdict { use, retry, stop };

  Reply request(bool claiming, std::uint64_t want);
  Verdict check_refusal(const redisReply* r);
  bool find_entries(const redisReply* r, bool claiming, const redisReply*& entries);
  bool on_no_entries(bool claiming);
  bool publish_entries(const redisReply* entries, std::size_t n, bool claiming);
  bool publish(const Entry& e, bool claiming);
  void leave_pending(std::string_view id, const std::string& msg);
  bool ack();
  bool on_io();
  bool stop_with(int code) {
    result_ = code;
    return false;
  }

  const FromRedisOptions& o_;
  const Log log_;
  std::string consumer_;
  std::optional<Channel> ch_;
  Publisher pub_;
  std::optional<Redis> redis_;
  std::uint64_t publish_timeout_ns_ = 0;
  std::vector<std::string> to_ack_;  ///< published, not yet acknowledged
  bool pending_phase_ = true;        ///< re-reading this consumer's pending entries
  std::string pending_after_ = "0";
  std::string claim_cursor_ = "0-0";
  std::uint64_t next_claim_ = UINT64_MAX;
  std::uint64_t published_ = 0;
  std::uint64_t redelivered_ = 0;  ///< published from the pending list (maybe a second time)
  std::uint64_t redelivered_logged_ = 0;
  std::uint64_t claimed_ = 0;
  std::uint64_t left_pending_ = 0;
  std::uint64_t trimmed_ = 0;
  std::unordered_set<std::string> reported_;  ///< entries already warned about
  std::uint64_t idle_since_ = 0;
  std::uint64_t backoff_ = 50;
  std::uint64_t retry_since_ = 0;
  bool waiting_logged_ = false;
  int result_ = kExitOk;
};

std::optional<int> FromRedis::connect() {
  RedisAddress addr;
  if (!check_common(o_, log_, addr)) return kExitError;
  if (o_.group.empty()) {
    log_.error("--group must name a consumer group");
    return kExitError;
  }
  consumer_ = o_.consumer.empty() ? default_consumer_name() : o_.consumer;

  int code = kExitError;
  ch_ = open_channel(o_, log_, code);
  if (!ch_) return code;
  auto pub = ch_->publisher();
  if (!pub) {
    log_.error("cannot add a publisher to channel '%s': %s: %s", o_.channel.c_str(),
               std::string(to_string(pub.error().code())).c_str(), pub.error().message().c_str());
    return kExitError;
  }
  pub_ = std::move(pub.value());

  redis_.emplace(addr, o_.db, o_.block_ms + 10'000, "shmbus-bridge-from-redis");
  if (std::string err = redis_->connect(); !err.empty()) {
    log_.error("%s", err.c_str());
    return kExitRedis;
  }
  return std::nullopt;
}

std::optional<int> FromRedis::resume() {
  while (o_.create_group) {
    Reply r = redis_->command({"XGROUP", "CREATE", o_.stream, o_.group, o_.group_start, "MKSTREAM"});
    if (!r) {
      if (!reconnect(*redis_, o_.reconnect_timeout_s, log_)) return stopping() ? kExitOk : kExitRedis;
      continue;
    }
    if (error_is(r.get(), "BUSYGROUP")) break;  // it exists: fine
    if (error_is(r.get(), "WRONGTYPE")) {
      log_.error("key '%s' holds another type, not a stream", o_.stream.c_str());
      return kExitError;
    }
    if (is_error(r.get())) {
      log_.error("Redis refused XGROUP CREATE %s %s %s: %s", o_.stream.c_str(), o_.group.c_str(),
                 o_.group_start.c_str(), std::string(text(r.get())).c_str());
      return kExitError;
    }
    log_.info("created consumer group '%s' on stream '%s' at %s", o_.group.c_str(), o_.stream.c_str(),
              o_.group_start.c_str());
    break;
  }
  log_.info("stream '%s' group '%s' consumer '%s' at %s -> channel '%s' (bus '%s')", o_.stream.c_str(),
            o_.group.c_str(), consumer_.c_str(), redis_->where().c_str(), o_.channel.c_str(), o_.bus.c_str());

  publish_timeout_ns_ = o_.publish_timeout_ms * 1'000'000ULL;
  next_claim_ = o_.claim_idle_ms != 0 ? now_ms() : UINT64_MAX;
  idle_since_ = now_ms();
  return std::nullopt;
}

bool FromRedis::forward_batch() {
  if (!ack()) return on_io();
  if (o_.count != 0 && published_ >= o_.count) return false;
  std::uint64_t want = o_.batch;
  if (o_.count != 0) want = std::min<std::uint64_t>(want, o_.count - published_);

  const bool claiming = now_ms() >= next_claim_ && !pending_phase_;
  Reply r = request(claiming, want);
  if (!r) return on_io();
  if (const Verdict v = check_refusal(r.get()); v != Verdict::use) return v == Verdict::retry;
  retry_since_ = 0;
  backoff_ = 50;

  const redisReply* entries = nullptr;
  if (!find_entries(r.get(), claiming, entries)) return false;
  const std::size_t n = entries != nullptr && entries->type == REDIS_REPLY_ARRAY ? entries->elements : 0;
  if (n == 0) return on_no_entries(claiming);
  idle_since_ = now_ms();
  return publish_entries(entries, n, claiming);
}

/// Sends the read for this round: XAUTOCLAIM when claiming, else
/// XREADGROUP of this consumer's pending entries, or of new ones (blocking).
/// A null reply means the connection failed.
Reply FromRedis::request(bool claiming, std::uint64_t want) {
  const std::string count_text = u64_text(want);
  if (claiming) {
    return redis_->command(
        {"XAUTOCLAIM", o_.stream, o_.group, consumer_, u64_text(o_.claim_idle_ms), claim_cursor_, "COUNT", count_text});
  }
  if (pending_phase_) {
    return redis_->command(
        {"XREADGROUP", "GROUP", o_.group, consumer_, "COUNT", count_text, "STREAMS", o_.stream, pending_after_});
  }
  return redis_->command({"XREADGROUP", "GROUP", o_.group, consumer_, "COUNT", count_text, "BLOCK",
                          u64_text(o_.block_ms), "STREAMS", o_.stream, ">"});
}

/// Whether Redis refused the read: use the reply, retry the read later (an
/// error that may pass, within the reconnect timeout), or stop.
FromRedis::Verdict FromRedis::check_refusal(const redisReply* r) {
  if (error_is(r, "NOGROUP")) {
    log_.error("no consumer group '%s' on stream '%s' (create it, or pass --create-group)", o_.group.c_str(),
               o_.stream.c_str());
    result_ = kExitNotFound;
    return Verdict::stop;
  }
  if (error_is(r, "WRONGTYPE")) {
    log_.error("key '%s' holds another type, not a stream", o_.stream.c_str());
    result_ = kExitError;
    return Verdict::stop;
  }
  if (!is_error(r)) return Verdict::use;
  const std::string why(text(r));
  if (transient_error(why)) {
    if (retry_since_ == 0) retry_since_ = now_ms();
    if (now_ms() - retry_since_ < static_cast<std::uint64_t>(o_.reconnect_timeout_s * 1000.0)) {
      log_.warn("Redis refused to read: %s; retrying", why.c_str());
      sleep_ms(backoff_);
      backoff_ = std::min<std::uint64_t>(backoff_ * 2, 1000);
      return Verdict::retry;
    }
  }
  log_.error("Redis at %s refused to read stream '%s': %s", redis_->where().c_str(), o_.stream.c_str(), why.c_str());
  result_ = kExitRedis;
  return Verdict::stop;
}

/// Finds the entries in a read's reply: XREADGROUP -> [[key, [entry...]]]
/// or nil; XAUTOCLAIM -> [next cursor, [entry...], [deleted id...]].
/// `entries` stays null when there are none. false (the bridge stops) on a
/// reply of another shape.
bool FromRedis::find_entries(const redisReply* r, bool claiming, const redisReply*& entries) {
  if (claiming) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
      log_.error("unexpected XAUTOCLAIM reply");
      return stop_with(kExitRedis);
    }
    claim_cursor_ = text(r->element[0]);
    entries = r->element[1];
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY && r->element[2]->elements > 0) {
      trimmed_ += r->element[2]->elements;
      log_.warn(
          "%zu pending entr(y/ies) of other consumers were deleted from the stream before "
          "delivery",
          r->element[2]->elements);
    }
    if (claim_cursor_ == "0-0") {  // a full pass: next one after claim_idle / 2
      next_claim_ = now_ms() + std::max<std::uint64_t>(o_.claim_idle_ms / 2, 10);
    }
  } else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
    const redisReply* s = r->element[0];
    if (s->type == REDIS_REPLY_ARRAY && s->elements == 2) entries = s->element[1];
  } else if (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_ARRAY) {
    log_.error("unexpected XREADGROUP reply (type %d)", r->type);
    return stop_with(kExitRedis);
  }
  return true;
}

/// A read returned nothing: the pending entries are done (new ones are read
/// next), a claim pass goes on, or the bridge idles. false if it stops (--idle-exit).
bool FromRedis::on_no_entries(bool claiming) {
  if (claiming) return true;
  if (pending_phase_) {
    pending_phase_ = false;
    if (redelivered_ != redelivered_logged_) {
      log_.info("re-published %llu pending entr(y/ies) read but not acknowledged before",
                static_cast<ull>(redelivered_ - redelivered_logged_));
      redelivered_logged_ = redelivered_;
    }
    return true;
  }
  return o_.idle_exit_ms == 0 || now_ms() - idle_since_ < o_.idle_exit_ms;
}

/// Publishes the `n` entries of a read; false if the bridge stops.
bool FromRedis::publish_entries(const redisReply* entries, std::size_t n, bool claiming) {
  for (std::size_t i = 0; i < n; ++i) {
    Entry e = parse_entry(entries->element[i]);
    if (pending_phase_ && !e.id.empty()) pending_after_ = e.id;
    if (e.deleted) {  // pending for us, but trimmed from the stream: nothing to deliver
      ++trimmed_;
      log_.warn("pending entry %.*s was deleted from the stream before it was acknowledged",
                static_cast<int>(e.id.size()), e.id.data());
      to_ack_.emplace_back(e.id);
      continue;
    }
    if (!e.problem.empty()) {
      leave_pending(e.id, e.problem);
      continue;
    }
    if (!publish(e, claiming)) return false;
  }
  return true;
}

/// Publishes one entry, waiting while the channel is full; it is acked on
/// the next round. false if the bridge stops.
bool FromRedis::publish(const Entry& e, bool claiming) {
  for (;;) {
    const PublishStatus st = pub_.publish(e.data, e.meta, publish_timeout_ns_);
    if (st == PublishStatus::ok) {
      ++published_;
      if (pending_phase_) ++redelivered_;
      if (claiming) ++claimed_;
      to_ack_.emplace_back(e.id);
      waiting_logged_ = false;
      return true;
    }
    if (st == PublishStatus::timeout || st == PublishStatus::full || st == PublishStatus::abandoned) {
      if (stopping()) return false;  // not acked: redelivered after a restart
      if (!waiting_logged_) {
        log_.info("channel '%s' is full (%s); waiting for its readers", o_.channel.c_str(),
                  std::string(to_string(st)).c_str());
        waiting_logged_ = true;
      }
      if (st == PublishStatus::full) sleep_ms(1);
      continue;
    }
    if (st == PublishStatus::too_large) {
      leave_pending(e.id, std::to_string(e.data.size()) + " payload bytes; channel '" + o_.channel +
                              "' takes at most " + std::to_string(pub_.max_payload()));
      return true;
    }
    log_.error("publish to channel '%s' failed: %s", o_.channel.c_str(), std::string(to_string(st)).c_str());
    return stop_with(kExitError);
  }
}

/// Reports an entry left pending, once per entry; counts it.
void FromRedis::leave_pending(std::string_view id, const std::string& msg) {
  if (reported_.size() < 100'000 && reported_.insert(std::string(id)).second) {
    ++left_pending_;
    log_.warn("entry %.*s left pending: %s", static_cast<int>(id.size()), id.data(), msg.c_str());
  }
}

/// Acknowledges what was published. false on a connection failure (the
/// list is kept, and acked again after the reconnect: XACK is idempotent).
bool FromRedis::ack() {
  if (to_ack_.empty()) return true;
  std::vector<std::string> args{"XACK", o_.stream, o_.group};
  args.insert(args.end(), to_ack_.begin(), to_ack_.end());
  Reply r = redis_->command(args);
  if (!r) return false;
  if (is_error(r.get())) {
    log_.warn("XACK refused: %s", std::string(text(r.get())).c_str());
    return true;  // entries stay pending: redelivered later (at-least-once)
  }
  to_ack_.clear();
  return true;
}

/// The connection failed: reconnects, and reads the pending entries again.
/// false if the bridge stops.
bool FromRedis::on_io() {
  if (!reconnect(*redis_, o_.reconnect_timeout_s, log_)) return stop_with(stopping() ? kExitOk : kExitRedis);
  pending_phase_ = true;  // what we read but did not publish is pending again
  pending_after_ = "0";
  return true;
}

int FromRedis::shutdown() {
  if (!to_ack_.empty() && redis_->connected()) (void)ack();  // best effort; else redelivered
  log_.info(
      "stopped: published %llu message(s) (%llu from the pending list, %llu claimed from "
      "other consumers); %llu entr(y/ies) left pending, %llu deleted before delivery",
      static_cast<ull>(published_), static_cast<ull>(redelivered_), static_cast<ull>(claimed_),
      static_cast<ull>(left_pending_), static_cast<ull>(trimmed_));
  return result_;
}

}  // namespace

int run_from_redis(const FromRedisOptions& o) {
  install_signal_handlers();
  FromRedis run(o);
  if (auto code = run.connect()) return *code;
  if (auto code = run.resume()) return *code;
  while (!stopping() && run.forward_batch()) {
  }
  return run.shutdown();
}

// === remove-checkpoint ======================================================

int run_remove_checkpoint(const RemoveCheckpointOptions& o) {
  const Log log("remove-checkpoint", false);
  if (o.stream.empty() == o.subscriber.empty()) {
    log.error("name the checkpoint with either --stream or --subscriber");
    return kExitError;
  }
  const std::string name = o.subscriber.empty() ? default_checkpoint_name(o.stream) : o.subscriber;
  BridgeCommon c;
  c.channel = o.channel;
  c.bus = o.bus;
  int code = kExitError;
  auto ch = open_channel(c, log, code);
  if (!ch) return code;
  auto r = ch->remove_subscriber(name);
  if (!r) {
    log.error("cannot remove checkpoint '%s' of channel '%s': %s: %s", name.c_str(), o.channel.c_str(),
              std::string(to_string(r.error().code())).c_str(), r.error().message().c_str());
    return r.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  log.info("removed checkpoint '%s' of channel '%s' (bus '%s')", name.c_str(), o.channel.c_str(), o.bus.c_str());
  return kExitOk;
}

// === helpers ================================================================

std::optional<RedisAddress> parse_redis_address(std::string_view t) {
  RedisAddress a;
  std::string_view host = t;
  std::string_view port;
  if (!t.empty() && t.front() == '[') {
    const auto close = t.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = t.substr(1, close - 1);
    const std::string_view rest = t.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
      if (port.empty()) return std::nullopt;
    }
  } else if (const auto colon = t.rfind(':'); colon != std::string_view::npos) {
    if (t.find(':') != colon) return std::nullopt;  // a bare IPv6 address needs brackets
    host = t.substr(0, colon);
    port = t.substr(colon + 1);
    if (port.empty()) return std::nullopt;
  }
  if (host.empty()) return std::nullopt;
  a.host = std::string(host);
  if (!port.empty()) {
    auto p = parse_u64(port);
    if (!p || *p == 0 || *p > 65535) return std::nullopt;
    a.port = static_cast<int>(*p);
  }
  return a;
}

std::string default_checkpoint_name(std::string_view stream) {
  std::string name = "redis-";
  for (char c : stream) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    name += ok ? c : '_';
    if (name.size() == 63) break;
  }
  return name;
}

}  // namespace shmbus::bridge
