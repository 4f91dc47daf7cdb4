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

namespace shmbus::probe {

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
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
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
  void arg(std::span<const std::byte> b) {
    arg(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  }
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
  for (std::string_view p : {"OOM", "LOADING", "BUSY ", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN",
                             "NOREPLICAS", "READONLY"}) {
    if (e.substr(0, p.size()) == p) return true;
  }
  return false;
}

/// One blocking connection to a Redis server, re-established on demand.
/// Not thread-safe.
class Redis {
 public:
  Redis(RedisAddress addr, int db, std::uint64_t reply_timeout_ms, std::string client_name)
      : addr_(std::move(addr)),
        db_(db),
        reply_timeout_ms_(reply_timeout_ms),
        client_name_(std::move(client_name)) {}

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
      Reply r = (user != nullptr && *user != '\0') ? command({"AUTH", user, password})
                                                   : command({"AUTH", password});
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
        return "Redis at " + where() + " refused SELECT " + std::to_string(db_) + ": " +
               std::string(text(r.get()));
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
  log.warn("lost the connection to Redis at %s (%s); reconnecting", redis.where().c_str(),
           redis.last_error().c_str());
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
StreamCheckpoint read_stream_checkpoint(Redis& redis, const std::string& key, std::uint64_t epoch,
                                        std::uint64_t head, const Log& log) {
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
    cp.message = "XREVRANGE " + key + " failed: " +
                 (is_error(r.get()) ? std::string(text(r.get())) : "unexpected reply");
    return cp;
  }
  if (r->elements == 0) return cp;  // no stream yet, or empty
  const redisReply* entry = r->element[0];
  if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
      entry->element[1]->type != REDIS_REPLY_ARRAY) {
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
    log.warn("the stream's last entry %s has no sequence/epoch fields (not written by a bridge); "
             "resuming from the bridge's own checkpoint",
             id.c_str());
  } else if (*ep != epoch) {
    log.warn("the stream's last entry %s came from another incarnation of the channel (epoch "
             "%llu, the channel's is %llu); resuming from the bridge's own checkpoint",
             id.c_str(), static_cast<ull>(*ep), static_cast<ull>(epoch));
  } else if (*seq >= head) {
    log.warn("the stream's last entry %s holds sequence %llu, beyond the channel's head %llu; "
             "ignoring it",
             id.c_str(), static_cast<ull>(*seq), static_cast<ull>(head));
  } else {
    cp.next = *seq + 1;
  }
  return cp;
}

/// Appends one XADD for `m` to `out`.
void append_xadd(std::string& out, const ToRedisOptions& o, const std::string& maxlen_text,
                 std::uint64_t epoch, const Message& m) {
  std::size_t nargs = 2 + 1 + 8;  // XADD key * data sequence epoch timestamp_ns (pairs)
  if (o.maxlen != 0) nargs += o.approx ? 3 : 2;
  if (m.key != 0) nargs += 2;
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
SendResult send_batch(Redis& redis, const std::string& resp, std::size_t n,
                      std::vector<Reply>& replies, std::string& why) {
  if (!redis.exchange(resp, n + 2, replies)) return SendResult::io;
  std::string queue_error;
  for (std::size_t i = 0; i <= n; ++i) {  // MULTI's +OK, then +QUEUED per XADD
    if (is_error(replies[i].get()) && queue_error.empty()) queue_error = text(replies[i].get());
  }
  const redisReply* exec = replies[n + 1].get();
  if (is_error(exec) || exec->type != REDIS_REPLY_ARRAY) {
    // EXECABORT: nothing of the batch was applied.
    why = !queue_error.empty() ? queue_error
                               : (is_error(exec) ? std::string(text(exec)) : "EXEC was aborted");
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
    why = "EXEC returned " + std::to_string(exec->elements) + " replies for " + std::to_string(n) +
          " XADDs";
    return SendResult::refused;
  }
  return SendResult::ok;
}

}  // namespace

int run_to_redis(const ToRedisOptions& o) {
  install_signal_handlers();
  const Log log("to-redis", o.quiet);
  RedisAddress addr;
  if (!check_common(o, log, addr)) return kExitError;
  if (o.from != "earliest" && o.from != "latest") {
    log.error("--from must be 'earliest' or 'latest', not '%s'", o.from.c_str());
    return kExitError;
  }
  const std::string checkpoint_name =
      o.subscriber.empty() ? default_checkpoint_name(o.stream) : o.subscriber;

  int code = kExitError;
  auto ch = open_channel(o, log, code);
  if (!ch) return code;
  const std::uint64_t epoch = ch->stats().epoch;

  Redis redis(addr, o.db, 10'000, "shmbus-bridge-to-redis");
  if (std::string err = redis.connect(); !err.empty()) {
    log.error("%s", err.c_str());
    return kBridgeExitRedis;
  }

  // Where to resume: the later of the two checkpoints. Both only ever hold
  // sequences that Redis confirmed.
  std::uint64_t stream_next = 0;
  bool have_stream_cp = false;
  for (;;) {
    StreamCheckpoint cp = read_stream_checkpoint(redis, o.stream, epoch, ch->stats().head, log);
    if (cp.kind == StreamCheckpoint::Kind::io) {
      if (!reconnect(redis, o.reconnect_timeout_s, log)) return stopping() ? kExitOk : kBridgeExitRedis;
      continue;
    }
    if (cp.kind == StreamCheckpoint::Kind::not_a_stream) {
      log.error("%s", cp.message.c_str());
      return kExitError;
    }
    if (cp.kind == StreamCheckpoint::Kind::redis_error) {
      log.error("%s", cp.message.c_str());
      return kBridgeExitRedis;
    }
    if (cp.next) {
      have_stream_cp = true;
      stream_next = *cp.next;
    }
    break;
  }
  // Attached only once Redis and the stream key checked out, so that a
  // bridge that cannot start leaves no new durable cursor behind.
  SubscribeOptions hold_opts;
  hold_opts.name = checkpoint_name;
  hold_opts.start = o.from == "latest" ? StartAt::latest() : StartAt::earliest();
  auto holder = ch->subscribe(hold_opts);
  if (!holder) {
    log.error("cannot attach the checkpoint subscriber '%s' to channel '%s': %s: %s",
              checkpoint_name.c_str(), o.channel.c_str(),
              std::string(to_string(holder.error().code())).c_str(),
              holder.error().message().c_str());
    return kExitError;
  }

  const std::uint64_t own_cp = holder->cursor();
  const std::uint64_t start = std::max(own_cp, stream_next);
  if (start > own_cp) holder->seek(start);
  {
    const std::string stream_cp_text = have_stream_cp ? u64_text(stream_next) : "none";
    log.info("channel '%s' (bus '%s') -> stream '%s' at %s: checkpoint '%s' %s at %llu, stream "
             "checkpoint %s; resuming at sequence %llu",
             o.channel.c_str(), o.bus.c_str(), o.stream.c_str(), redis.where().c_str(),
             checkpoint_name.c_str(), holder->resumed() ? "resumed" : "created",
             static_cast<ull>(own_cp), stream_cp_text.c_str(), static_cast<ull>(start));
  }

  SubscribeOptions read_opts;
  read_opts.start = StartAt::at_sequence(start);
  auto reader = ch->subscribe(read_opts);
  if (!reader) {
    log.error("cannot attach a reader to channel '%s': %s: %s", o.channel.c_str(),
              std::string(to_string(reader.error().code())).c_str(),
              reader.error().message().c_str());
    return kExitError;
  }

  const std::string maxlen_text = u64_text(o.maxlen);
  std::string buf;
  std::vector<std::size_t> offsets;
  std::vector<std::uint64_t> seqs;
  std::vector<Reply> replies;
  std::uint64_t forwarded = 0;
  std::uint64_t batches = 0;
  std::uint64_t lost_seen = reader->counters().lost;
  std::uint64_t lost_total = 0;
  std::uint64_t gaps = 0;
  std::uint64_t retry_since = 0;  // first failed attempt of the current batch (transient errors)
  std::uint64_t backoff = 50;
  std::uint64_t idle_since = now_ms();
  int result = kExitOk;

  while (!stopping()) {
    if (o.count != 0 && forwarded >= o.count) break;
    std::size_t want = o.batch;
    if (o.count != 0) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, o.count - forwarded));

    buf.clear();
    offsets.clear();
    seqs.clear();
    Resp(buf).command({"MULTI"});
    PollStatus last = PollStatus::ok;
    const std::size_t n = reader->read_batch(
        [&](const Message& m) {
          offsets.push_back(buf.size());
          seqs.push_back(m.sequence);
          append_xadd(buf, o, maxlen_text, epoch, m);
        },
        want, &last);
    if (offsets.size() > n) {  // the last message failed validation (lapped): drop it
      buf.resize(offsets[n]);
      offsets.resize(n);
      seqs.resize(n);
    }
    if (const std::uint64_t lost = reader->counters().lost; lost > lost_seen) {
      const std::uint64_t k = lost - lost_seen;
      lost_seen = lost;
      lost_total += k;
      ++gaps;
      log.warn("gap: %llu message(s) lost before sequence %llu (overwritten in the channel "
               "before they were forwarded)",
               static_cast<ull>(k), static_cast<ull>(reader->cursor()));
    }
    if (last == PollStatus::invalid) {
      log.error("the reader was detached from channel '%s' (its entry was taken over)",
                o.channel.c_str());
      result = kExitError;
      break;
    }
    if (n == 0) {
      if (last == PollStatus::empty || last == PollStatus::timeout) {
        if (o.idle_exit_ms != 0 && now_ms() - idle_since >= o.idle_exit_ms) break;
        (void)reader->wait(100'000'000ULL);
      }
      continue;
    }

    Resp(buf).command({"EXEC"});
    std::string why;
    const SendResult sr = send_batch(redis, buf, n, replies, why);
    if (sr == SendResult::ok) {
      holder->seek(seqs.back() + 1);  // SYNC: only now may publishers overwrite these slots
      forwarded += n;
      ++batches;
      retry_since = 0;
      backoff = 50;
      idle_since = now_ms();
      continue;
    }
    if (sr == SendResult::io) {
      bool resynced = false;
      while (!resynced) {
        if (!reconnect(redis, o.reconnect_timeout_s, log)) {
          result = stopping() ? kExitOk : kBridgeExitRedis;
          break;
        }
        // Whether the EXEC got through is unknown: the stream says.
        StreamCheckpoint cp =
            read_stream_checkpoint(redis, o.stream, epoch, ch->stats().head, log);
        if (cp.kind == StreamCheckpoint::Kind::io) continue;
        if (cp.kind != StreamCheckpoint::Kind::ok) {
          log.error("%s", cp.message.c_str());
          result = cp.kind == StreamCheckpoint::Kind::not_a_stream ? kExitError : kBridgeExitRedis;
          break;
        }
        std::uint64_t resume = seqs.front();
        if (cp.next && *cp.next > resume) resume = *cp.next;
        const auto done = static_cast<std::uint64_t>(
            std::lower_bound(seqs.begin(), seqs.end(), resume) - seqs.begin());
        forwarded += done;
        if (resume > holder->cursor()) holder->seek(resume);
        reader->seek(resume);
        log.info("resynchronised with the stream: %llu of the batch were applied; resuming at "
                 "sequence %llu",
                 static_cast<ull>(done), static_cast<ull>(resume));
        resynced = true;
      }
      if (!resynced) break;
      continue;
    }
    if (sr == SendResult::transient) {
      if (retry_since == 0) retry_since = now_ms();
      if (now_ms() - retry_since >= static_cast<std::uint64_t>(o.reconnect_timeout_s * 1000.0)) {
        log.error("Redis at %s kept refusing XADD to '%s' for %.1f s: %s", redis.where().c_str(),
                  o.stream.c_str(), o.reconnect_timeout_s, why.c_str());
        result = kBridgeExitRedis;
        break;
      }
      log.warn("Redis refused the batch at sequence %llu (%s); retrying",
               static_cast<ull>(seqs.front()), why.c_str());
      reader->seek(seqs.front());  // nothing of it was applied
      sleep_ms(backoff);
      backoff = std::min<std::uint64_t>(backoff * 2, 1000);
      continue;
    }
    log.error("Redis at %s refused XADD to '%s' at sequence %llu: %s", redis.where().c_str(),
              o.stream.c_str(), static_cast<ull>(seqs.front()), why.c_str());
    result = sr == SendResult::not_a_stream ? kExitError : kBridgeExitRedis;
    break;
  }

  log.info("stopped: forwarded %llu message(s) in %llu batch(es); checkpoint at sequence %llu; "
           "%llu gap(s), %llu message(s) lost",
           static_cast<ull>(forwarded), static_cast<ull>(batches),
           static_cast<ull>(holder->cursor()), static_cast<ull>(gaps),
           static_cast<ull>(lost_total));
  return result;
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
    if (name == "key") target = &out.meta.key;
    else if (name == "correlation_id") target = &out.meta.correlation_id;
    else if (name == "timestamp_ns") target = &out.meta.timestamp_ns;
    else if (name == "type") target = &type;
    if (target == nullptr) continue;  // other fields (sequence, epoch, ...) are not carried
    auto v = parse_u64(value);
    if (!v || (target == &type && *v > UINT32_MAX)) {
      out.problem = "field '" + std::string(name) + "' is not a valid number: '" +
                    std::string(value.substr(0, 40)) + "'";
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

}  // namespace

int run_from_redis(const FromRedisOptions& o) {
  install_signal_handlers();
  const Log log("from-redis", o.quiet);
  RedisAddress addr;
  if (!check_common(o, log, addr)) return kExitError;
  if (o.group.empty()) {
    log.error("--group must name a consumer group");
    return kExitError;
  }
  const std::string consumer = o.consumer.empty() ? default_consumer_name() : o.consumer;

  int code = kExitError;
  auto ch = open_channel(o, log, code);
  if (!ch) return code;
  auto pub = ch->publisher();
  if (!pub) {
    log.error("cannot add a publisher to channel '%s': %s: %s", o.channel.c_str(),
              std::string(to_string(pub.error().code())).c_str(), pub.error().message().c_str());
    return kExitError;
  }

  Redis redis(addr, o.db, o.block_ms + 10'000, "shmbus-bridge-from-redis");
  if (std::string err = redis.connect(); !err.empty()) {
    log.error("%s", err.c_str());
    return kBridgeExitRedis;
  }

  if (o.create_group) {
    for (;;) {
      Reply r = redis.command({"XGROUP", "CREATE", o.stream, o.group, o.group_start, "MKSTREAM"});
      if (!r) {
        if (!reconnect(redis, o.reconnect_timeout_s, log)) return stopping() ? kExitOk : kBridgeExitRedis;
        continue;
      }
      if (error_is(r.get(), "BUSYGROUP")) break;  // it exists: fine
      if (error_is(r.get(), "WRONGTYPE")) {
        log.error("key '%s' holds another type, not a stream", o.stream.c_str());
        return kExitError;
      }
      if (is_error(r.get())) {
        log.error("Redis refused XGROUP CREATE %s %s %s: %s", o.stream.c_str(), o.group.c_str(),
                  o.group_start.c_str(), std::string(text(r.get())).c_str());
        return kExitError;
      }
      log.info("created consumer group '%s' on stream '%s' at %s", o.group.c_str(),
               o.stream.c_str(), o.group_start.c_str());
      break;
    }
  }
  log.info("stream '%s' group '%s' consumer '%s' at %s -> channel '%s' (bus '%s')",
           o.stream.c_str(), o.group.c_str(), consumer.c_str(), redis.where().c_str(),
           o.channel.c_str(), o.bus.c_str());

  const std::uint64_t publish_timeout_ns = o.publish_timeout_ms * 1'000'000ULL;
  std::vector<std::string> to_ack;   // published, not yet acknowledged
  bool pending_phase = true;         // re-reading this consumer's pending entries
  std::string pending_after = "0";
  std::string claim_cursor = "0-0";
  std::uint64_t next_claim = o.claim_idle_ms != 0 ? now_ms() : UINT64_MAX;
  std::uint64_t published = 0;
  std::uint64_t redelivered = 0;  // published from the pending list (maybe a second time)
  std::uint64_t redelivered_logged = 0;
  std::uint64_t claimed = 0;
  std::uint64_t left_pending = 0;
  std::uint64_t trimmed = 0;
  std::unordered_set<std::string> reported;  // entries already warned about
  std::uint64_t idle_since = now_ms();
  std::uint64_t backoff = 50;
  std::uint64_t retry_since = 0;
  bool waiting_logged = false;
  int result = kExitOk;

  // Reports an entry left pending, once per entry; counts it.
  auto leave_pending = [&](std::string_view id, const std::string& msg) {
    if (reported.size() < 100'000 && reported.insert(std::string(id)).second) {
      ++left_pending;
      log.warn("entry %.*s left pending: %s", static_cast<int>(id.size()), id.data(), msg.c_str());
    }
  };
  // Acknowledges what was published. false on a connection failure (the
  // list is kept, and acked again after the reconnect: XACK is idempotent).
  auto ack = [&]() -> bool {
    if (to_ack.empty()) return true;
    std::vector<std::string> args{"XACK", o.stream, o.group};
    args.insert(args.end(), to_ack.begin(), to_ack.end());
    Reply r = redis.command(args);
    if (!r) return false;
    if (is_error(r.get())) {
      log.warn("XACK refused: %s", std::string(text(r.get())).c_str());
      return true;  // entries stay pending: redelivered later (at-least-once)
    }
    to_ack.clear();
    return true;
  };
  auto on_io = [&]() -> bool {
    if (!reconnect(redis, o.reconnect_timeout_s, log)) {
      result = stopping() ? kExitOk : kBridgeExitRedis;
      return false;
    }
    pending_phase = true;  // what we read but did not publish is pending again
    pending_after = "0";
    return true;
  };

  bool stop = false;
  while (!stop && !stopping()) {
    if (!ack()) {
      if (!on_io()) break;
      continue;
    }
    if (o.count != 0 && published >= o.count) break;
    std::uint64_t want = o.batch;
    if (o.count != 0) want = std::min<std::uint64_t>(want, o.count - published);
    const std::string count_text = u64_text(want);

    const bool claiming = now_ms() >= next_claim && !pending_phase;
    Reply r;
    if (claiming) {
      r = redis.command({"XAUTOCLAIM", o.stream, o.group, consumer, u64_text(o.claim_idle_ms),
                         claim_cursor, "COUNT", count_text});
    } else if (pending_phase) {
      r = redis.command({"XREADGROUP", "GROUP", o.group, consumer, "COUNT", count_text, "STREAMS",
                         o.stream, pending_after});
    } else {
      r = redis.command({"XREADGROUP", "GROUP", o.group, consumer, "COUNT", count_text, "BLOCK",
                         u64_text(o.block_ms), "STREAMS", o.stream, ">"});
    }
    if (!r) {
      if (!on_io()) break;
      continue;
    }
    if (error_is(r.get(), "NOGROUP")) {
      log.error("no consumer group '%s' on stream '%s' (create it, or pass --create-group)",
                o.group.c_str(), o.stream.c_str());
      result = kExitNotFound;
      break;
    }
    if (error_is(r.get(), "WRONGTYPE")) {
      log.error("key '%s' holds another type, not a stream", o.stream.c_str());
      result = kExitError;
      break;
    }
    if (is_error(r.get())) {
      const std::string why(text(r.get()));
      if (transient_error(why)) {
        if (retry_since == 0) retry_since = now_ms();
        if (now_ms() - retry_since < static_cast<std::uint64_t>(o.reconnect_timeout_s * 1000.0)) {
          log.warn("Redis refused to read: %s; retrying", why.c_str());
          sleep_ms(backoff);
          backoff = std::min<std::uint64_t>(backoff * 2, 1000);
          continue;
        }
      }
      log.error("Redis at %s refused to read stream '%s': %s", redis.where().c_str(),
                o.stream.c_str(), why.c_str());
      result = kBridgeExitRedis;
      break;
    }
    retry_since = 0;
    backoff = 50;

    // The entries: XREADGROUP -> [[key, [entry...]]] or nil; XAUTOCLAIM ->
    // [next cursor, [entry...], [deleted id...]].
    const redisReply* entries = nullptr;
    if (claiming) {
      if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        log.error("unexpected XAUTOCLAIM reply");
        result = kBridgeExitRedis;
        break;
      }
      claim_cursor = text(r->element[0]);
      entries = r->element[1];
      if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY &&
          r->element[2]->elements > 0) {
        trimmed += r->element[2]->elements;
        log.warn("%zu pending entr(y/ies) of other consumers were deleted from the stream before "
                 "delivery",
                 r->element[2]->elements);
      }
      if (claim_cursor == "0-0") {  // a full pass: next one after claim_idle / 2
        next_claim = now_ms() + std::max<std::uint64_t>(o.claim_idle_ms / 2, 10);
      }
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
      const redisReply* s = r->element[0];
      if (s->type == REDIS_REPLY_ARRAY && s->elements == 2) entries = s->element[1];
    } else if (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_ARRAY) {
      log.error("unexpected XREADGROUP reply (type %d)", r->type);
      result = kBridgeExitRedis;
      break;
    }
    const std::size_t n_entries =
        entries != nullptr && entries->type == REDIS_REPLY_ARRAY ? entries->elements : 0;

    if (n_entries == 0) {
      if (claiming) continue;
      if (pending_phase) {
        pending_phase = false;
        if (redelivered != redelivered_logged) {
          log.info("re-published %llu pending entr(y/ies) read but not acknowledged before",
                   static_cast<ull>(redelivered - redelivered_logged));
          redelivered_logged = redelivered;
        }
        continue;
      }
      if (o.idle_exit_ms != 0 && now_ms() - idle_since >= o.idle_exit_ms) break;
      continue;
    }
    idle_since = now_ms();

    for (std::size_t i = 0; i < n_entries && !stop; ++i) {
      Entry e = parse_entry(entries->element[i]);
      if (pending_phase && !e.id.empty()) pending_after = e.id;
      if (e.deleted) {  // pending for us, but trimmed from the stream: nothing to deliver
        ++trimmed;
        log.warn("pending entry %.*s was deleted from the stream before it was acknowledged",
                 static_cast<int>(e.id.size()), e.id.data());
        to_ack.emplace_back(e.id);
        continue;
      }
      if (!e.problem.empty()) {
        leave_pending(e.id, e.problem);
        continue;
      }
      for (;;) {
        const PublishStatus st = pub->publish(e.data, e.meta, publish_timeout_ns);
        if (st == PublishStatus::ok) {
          ++published;
          if (pending_phase) ++redelivered;
          if (claiming) ++claimed;
          to_ack.emplace_back(e.id);
          waiting_logged = false;
          break;
        }
        if (st == PublishStatus::timeout || st == PublishStatus::full ||
            st == PublishStatus::abandoned) {
          if (stopping()) {  // not acked: redelivered after a restart
            stop = true;
            break;
          }
          if (!waiting_logged) {
            log.info("channel '%s' is full (%s); waiting for its readers",
                     o.channel.c_str(), std::string(to_string(st)).c_str());
            waiting_logged = true;
          }
          if (st == PublishStatus::full) sleep_ms(1);
          continue;
        }
        if (st == PublishStatus::too_large) {
          leave_pending(e.id, std::to_string(e.data.size()) + " payload bytes; channel '" + o.channel +
                              "' takes at most " + std::to_string(pub->max_payload()));
          break;
        }
        log.error("publish to channel '%s' failed: %s", o.channel.c_str(),
                  std::string(to_string(st)).c_str());
        result = kExitError;
        stop = true;
        break;
      }
    }
  }
  if (!to_ack.empty() && redis.connected()) (void)ack();  // best effort; else redelivered

  log.info("stopped: published %llu message(s) (%llu from the pending list, %llu claimed from "
           "other consumers); %llu entr(y/ies) left pending, %llu deleted before delivery",
           static_cast<ull>(published), static_cast<ull>(redelivered), static_cast<ull>(claimed),
           static_cast<ull>(left_pending), static_cast<ull>(trimmed));
  return result;
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
    log.error("cannot remove checkpoint '%s' of channel '%s': %s: %s", name.c_str(),
              o.channel.c_str(), std::string(to_string(r.error().code())).c_str(),
              r.error().message().c_str());
    return r.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  log.info("removed checkpoint '%s' of channel '%s' (bus '%s')", name.c_str(), o.channel.c_str(),
           o.bus.c_str());
  return kExitOk;
}

// === helpers and the command line ===========================================

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
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    name += ok ? c : '_';
    if (name.size() == 63) break;
  }
  return name;
}

namespace {

void add_common_options(CLI::App* cmd, BridgeCommon& o) {
  cmd->add_option("CHANNEL", o.channel, "Channel name")->required();
  cmd->add_option("--stream", o.stream, "Redis stream key")->required();
  cmd->add_option("--redis", o.redis, "Redis server, HOST:PORT (password from "
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
  cmd->add_option("--idle-exit", o.idle_exit_ms,
                  "Stop after this many milliseconds with nothing to forward (0: never)")
      ->capture_default_str()
      ->check(integer_in(0, 365ULL * 86'400'000));
  cmd->add_option("--reconnect-timeout", o.reconnect_timeout_s,
                  "Seconds to keep retrying a lost or refusing Redis before exiting with 3")
      ->capture_default_str()
      ->check(seconds_in(0, 86400));
  cmd->add_flag("--quiet", o.quiet, "Print only warnings and errors");
}

}  // namespace

void add_bridge_command(CLI::App& app, Action& action) {
  auto* bridge = app.add_subcommand(
      "bridge", "Forward a channel to a Redis stream, or a stream's consumer group into a channel "
                "(at-least-once; exit codes: 0 ok, 1 error, 2 channel or group not found, "
                "3 Redis unreachable or refusing)");
  bridge->require_subcommand(1);

  auto to = std::make_shared<ToRedisOptions>();
  auto* t = bridge->add_subcommand(
      "to-redis", "Forward CHANNEL to a Redis stream (XADD) until SIGINT/SIGTERM");
  add_common_options(t, *to);
  t->add_option("--maxlen", to->maxlen, "Trim the stream to about this many entries (0: never)")
      ->capture_default_str()
      ->check(integer_in(0, UINT64_MAX));
  t->add_flag("--approx", to->approx, "Trim with MAXLEN ~ (whole nodes: cheaper, inexact)");
  t->add_option("--subscriber", to->subscriber,
                "Durable checkpoint subscriber name (default: redis-<stream key>)");
  t->add_option("--from", to->from, "Where a new checkpoint starts: earliest or latest")
      ->capture_default_str()
      ->check(CLI::IsMember({"earliest", "latest"}));
  t->callback([&action, to] { action = [to] { return run_to_redis(*to); }; });

  auto from = std::make_shared<FromRedisOptions>();
  auto* f = bridge->add_subcommand(
      "from-redis", "Publish a Redis stream's consumer group into CHANNEL (XREADGROUP, XACK "
                    "after commit) until SIGINT/SIGTERM");
  add_common_options(f, *from);
  f->add_option("--group", from->group, "Consumer group")->required();
  f->add_option("--consumer", from->consumer,
                "Consumer name; keep it across restarts (default: bridge-<hostname>)");
  f->add_flag("--create-group", from->create_group,
              "Create the group (and the stream) if missing");
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
  f->callback([&action, from] { action = [from] { return run_from_redis(*from); }; });

  auto rm = std::make_shared<RemoveCheckpointOptions>();
  auto* r = bridge->add_subcommand(
      "remove-checkpoint", "Forget a retired to-redis bridge's checkpoint subscriber (it gates "
                           "a block channel while it exists)");
  r->add_option("CHANNEL", rm->channel, "Channel name")->required();
  r->add_option("--bus", rm->bus, "Bus name")->capture_default_str();
  r->add_option("--stream", rm->stream, "The bridge's stream key (checkpoint redis-<key>)");
  r->add_option("--subscriber", rm->subscriber, "The checkpoint's name, if it was set");
  r->callback([&action, rm] { action = [rm] { return run_remove_checkpoint(*rm); }; });
}

}  // namespace shmbus::probe
