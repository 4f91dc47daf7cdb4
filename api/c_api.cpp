// The C API (include/shmbus/shmbus.h) over the C++ API: opaque handles that
// own C++ handles, int statuses, a per-thread last error, and no exception
// crossing the boundary (setup calls catch everything; hot-path calls wrap
// noexcept C++ calls).
#include <shmbus/shmbus.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <shmbus/archive.hpp>
#include <shmbus/channel.hpp>
#include <shmbus/consumer.hpp>
#include <shmbus/publisher.hpp>
#include <shmbus/subscriber.hpp>

#include "api/detail.hpp"

#ifndef SHMBUS_VERSION_STRING
#error "SHMBUS_VERSION_STRING must be defined by the build (the project version)"
#endif

// The handles: each owns one C++ handle. Subscribers and consumers keep a
// Channel (a shared_ptr to the mapping) for lag and names; the C++ handles
// keep the mapping alive on their own.
struct shmbus_channel {
  shmbus::Channel channel;
};
struct shmbus_publisher {
  shmbus::Publisher publisher;
};
struct shmbus_subscriber {
  shmbus::Subscriber subscriber;
  shmbus::Channel channel;
};
struct shmbus_consumer {
  shmbus::Consumer consumer;
};
struct shmbus_archiver {
  shmbus::Archiver archiver;
};

namespace {

using shmbus::AckStatus;
using shmbus::ErrorCode;
using shmbus::PollStatus;
using shmbus::PublishStatus;

// --- status codes: the C values are the C++ ErrorCode values ----------------
static_assert(SHMBUS_INVALID_ARGUMENT == static_cast<int>(ErrorCode::invalid_argument));
static_assert(SHMBUS_NOT_FOUND == static_cast<int>(ErrorCode::not_found));
static_assert(SHMBUS_ALREADY_EXISTS == static_cast<int>(ErrorCode::already_exists));
static_assert(SHMBUS_PERMISSION_DENIED == static_cast<int>(ErrorCode::permission_denied));
static_assert(SHMBUS_NO_SPACE == static_cast<int>(ErrorCode::no_space));
static_assert(SHMBUS_PARAMETER_MISMATCH == static_cast<int>(ErrorCode::parameter_mismatch));
static_assert(SHMBUS_VERSION_MISMATCH == static_cast<int>(ErrorCode::version_mismatch));
static_assert(SHMBUS_CORRUPTED == static_cast<int>(ErrorCode::corrupted));
static_assert(SHMBUS_TIMEOUT == static_cast<int>(ErrorCode::timeout));
static_assert(SHMBUS_TABLE_FULL == static_cast<int>(ErrorCode::table_full));
static_assert(SHMBUS_BUSY == static_cast<int>(ErrorCode::busy));
static_assert(SHMBUS_SYSTEM == static_cast<int>(ErrorCode::system));

static_assert(SHMBUS_POLICY_BLOCK == static_cast<int>(shmbus::Policy::block));
static_assert(SHMBUS_POLICY_DROP_OLDEST == static_cast<int>(shmbus::Policy::drop_oldest));
static_assert(SHMBUS_POLICY_REJECT == static_cast<int>(shmbus::Policy::reject));
static_assert(SHMBUS_DLQ_MAX_DELIVERIES == static_cast<int>(shmbus::DeadLetterReason::max_deliveries));
static_assert(SHMBUS_DLQ_REJECTED == static_cast<int>(shmbus::DeadLetterReason::rejected));

// The DLQ record is part of the channel layout: the C view must match it.
static_assert(sizeof(shmbus_dlq_record) == sizeof(shmbus::bus::DlqRecord));
static_assert(offsetof(shmbus_dlq_record, original_sequence) == offsetof(shmbus::bus::DlqRecord, original_sequence));
static_assert(offsetof(shmbus_dlq_record, original_timestamp_ns) ==
              offsetof(shmbus::bus::DlqRecord, original_timestamp_ns));
static_assert(offsetof(shmbus_dlq_record, attempts) == offsetof(shmbus::bus::DlqRecord, attempts));
static_assert(offsetof(shmbus_dlq_record, reason) == offsetof(shmbus::bus::DlqRecord, reason));
static_assert(offsetof(shmbus_dlq_record, payload_length) == offsetof(shmbus::bus::DlqRecord, payload_length));
static_assert(offsetof(shmbus_dlq_record, group) == offsetof(shmbus::bus::DlqRecord, group));
static_assert(offsetof(shmbus_dlq_record, source) == offsetof(shmbus::bus::DlqRecord, source));

// The fixed-layout structs of ABI version 2 (other languages restate them;
// version 2 appended the message id to the message and its metadata).
static_assert(SHMBUS_C_ABI_VERSION == 2);
static_assert(sizeof(shmbus_message_meta) == 40);
static_assert(offsetof(shmbus_message_meta, id) == 32);
static_assert(sizeof(shmbus_message) == 56);
static_assert(offsetof(shmbus_message, id) == 48);
static_assert(sizeof(shmbus_out_message) == 56);
static_assert(sizeof(shmbus_delivery) == 88);
static_assert(offsetof(shmbus_delivery, sequence) == 56);

// First-version sizes of the growable structs: a caller's struct_size may
// not be smaller. These never change once released.
constexpr std::size_t kChannelOptionsV1 = 56;
constexpr std::size_t kSubscribeOptionsV1 = 32;
constexpr std::size_t kGroupOptionsV1 = 64;
constexpr std::size_t kArchiverOptionsV1 = sizeof(shmbus_archiver_options);
// Later versions: what this library knows of each struct now.
constexpr std::size_t kGroupOptionsV2 = 72;  // + order_window (ordering took reserved0)
static_assert(sizeof(shmbus_channel_options) == kChannelOptionsV1);
static_assert(sizeof(shmbus_subscribe_options) == kSubscribeOptionsV1);
static_assert(sizeof(shmbus_group_options) == kGroupOptionsV2);
static_assert(offsetof(shmbus_group_options, ordering) == 60);
static_assert(offsetof(shmbus_group_options, order_window) == kGroupOptionsV1);

// --- the per-thread last error ---------------------------------------------
// A fixed buffer, so that recording an error never allocates (and works when
// allocation is what failed). Longer messages are cut at the end.
struct LastError {
  char message[1024] = {};
  int sys_errno = 0;
};
thread_local LastError t_last_error;

int fail(int status, const char* function, std::string_view message, int sys_errno = 0) noexcept {
  LastError& e = t_last_error;
  const int n =
      std::snprintf(e.message, sizeof e.message, "%s: %.*s", function,
                    static_cast<int>(std::min<std::size_t>(message.size(), sizeof e.message)), message.data());
  if (n < 0) e.message[0] = '\0';
  e.sys_errno = sys_errno;
  return status;
}

int fail(const char* function, const shmbus::Error& error) noexcept {
  return fail(static_cast<int>(error.code()), function, error.message(), error.sys_errno());
}

// Runs a setup call, turning any exception into a status with its text.
template <class F>
int guarded(const char* function, F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(SHMBUS_OUT_OF_MEMORY, function, "out of memory");
  } catch (const std::exception& e) {
    return fail(SHMBUS_INTERNAL, function, e.what());
  } catch (...) {
    return fail(SHMBUS_INTERNAL, function, "unknown exception");
  }
}

int null_argument(const char* function, const char* what) noexcept {
  char text[96];
  std::snprintf(text, sizeof text, "%s is NULL", what);
  return fail(SHMBUS_INVALID_ARGUMENT, function, text);
}

int status_of(PollStatus s) noexcept {
  switch (s) {
    case PollStatus::ok: return SHMBUS_OK;
    case PollStatus::empty: return SHMBUS_EMPTY;
    case PollStatus::lapped: return SHMBUS_LAPPED;
    case PollStatus::buffer_too_small: return SHMBUS_BUFFER_TOO_SMALL;
    case PollStatus::timeout: return SHMBUS_TIMEOUT;
    case PollStatus::corrupted: return SHMBUS_CORRUPTED;
    case PollStatus::invalid: return SHMBUS_INVALID;
    case PollStatus::removed: return SHMBUS_REMOVED;
    case PollStatus::segment_lost: return SHMBUS_SEGMENT_LOST;
  }
  return SHMBUS_INTERNAL;
}

int status_of(PublishStatus s) noexcept {
  switch (s) {
    case PublishStatus::ok: return SHMBUS_OK;
    case PublishStatus::full: return SHMBUS_FULL;
    case PublishStatus::timeout: return SHMBUS_TIMEOUT;
    case PublishStatus::too_large: return SHMBUS_TOO_LARGE;
    case PublishStatus::abandoned: return SHMBUS_ABANDONED;
    case PublishStatus::invalid: return SHMBUS_INVALID;
    case PublishStatus::removed: return SHMBUS_REMOVED;
    case PublishStatus::segment_lost: return SHMBUS_SEGMENT_LOST;
  }
  return SHMBUS_INTERNAL;
}

int status_of(AckStatus s) noexcept {
  switch (s) {
    case AckStatus::ok: return SHMBUS_OK;
    case AckStatus::lease_lost: return SHMBUS_LEASE_LOST;
    case AckStatus::invalid: return SHMBUS_INVALID;
    case AckStatus::dlq_unavailable: return SHMBUS_DLQ_UNAVAILABLE;
  }
  return SHMBUS_INTERNAL;
}

std::string_view bus_or_default(const char* bus) noexcept {
  return bus == nullptr ? shmbus::kDefaultBus : std::string_view(bus);
}

// --- growable structs: defaults, and reading a caller's version -------------

shmbus_channel_options channel_defaults() noexcept {
  const shmbus::ChannelOptions d;
  shmbus_channel_options o{};
  o.struct_size = sizeof o;
  o.slot_size = d.slot_size;
  o.capacity = d.capacity;
  o.policy = static_cast<std::uint32_t>(d.policy);
  o.max_subscribers = d.max_subscribers;
  o.max_publishers = d.max_publishers;
  o.max_groups = d.max_groups;
  o.max_consumers = d.max_consumers;
  o.mode = d.mode;
  o.unblock_timeout_ns = d.unblock_timeout_ns;
  o.eviction_timeout_ns = d.eviction_timeout_ns;
  o.timestamps = static_cast<std::uint32_t>(d.timestamps);
  return o;
}

shmbus_archiver_options archiver_defaults() noexcept {
  const shmbus::ArchiverOptions d;
  shmbus_archiver_options o{};
  o.struct_size = sizeof o;
  o.fsync = SHMBUS_ARCHIVE_FSYNC_INTERVAL;
  o.fsync_interval_ns = d.fsync_interval_ns;
  o.segment_bytes = d.segment_bytes;
  o.batch = d.batch;
  o.wait = SHMBUS_WAIT_BLOCK;
  return o;
}

shmbus_subscribe_options subscribe_defaults() noexcept {
  shmbus_subscribe_options o{};
  o.struct_size = sizeof o;
  o.start = SHMBUS_START_LATEST;
  o.wait = SHMBUS_WAIT_BLOCK;
  return o;
}

shmbus_group_options group_defaults() noexcept {
  const shmbus::GroupOptions d;
  shmbus_group_options o{};
  o.struct_size = sizeof o;
  o.start = SHMBUS_START_EARLIEST;
  o.visibility_timeout_ns = d.visibility_timeout_ns;
  o.backoff_base_ns = d.backoff_base_ns;
  o.backoff_cap_ns = d.backoff_cap_ns;
  o.max_deliveries = d.max_deliveries;
  o.jitter_permille = d.jitter_permille;
  o.wait = SHMBUS_WAIT_BLOCK;
  return o;
}

// The first version's size of each growable struct.
template <class T>
constexpr std::size_t first_version_size() noexcept;
template <>
constexpr std::size_t first_version_size<shmbus_channel_options>() noexcept {
  return kChannelOptionsV1;
}
template <>
constexpr std::size_t first_version_size<shmbus_subscribe_options>() noexcept {
  return kSubscribeOptionsV1;
}
template <>
constexpr std::size_t first_version_size<shmbus_group_options>() noexcept {
  return kGroupOptionsV1;
}
template <>
constexpr std::size_t first_version_size<shmbus_archiver_options>() noexcept {
  return kArchiverOptionsV1;
}

// Fills a caller's struct of `size` bytes (any version from the first) with
// `defaults`: the fields it has get their defaults, a newer caller's tail is
// zeroed (which means "default" for every later field).
template <class T>
int init_sized(const char* function, T* out, std::size_t size, const T& defaults) noexcept {
  if (out == nullptr) return null_argument(function, "opts");
  if (size < first_version_size<T>()) {
    char text[160];
    std::snprintf(text, sizeof text, "size %zu is smaller than this struct's first version (%zu bytes)", size,
                  first_version_size<T>());
    return fail(SHMBUS_INVALID_ARGUMENT, function, text);
  }
  std::memcpy(out, &defaults, std::min(size, sizeof(T)));
  if (size > sizeof(T)) std::memset(reinterpret_cast<unsigned char*>(out) + sizeof(T), 0, size - sizeof(T));
  out->struct_size = static_cast<std::uint32_t>(std::min<std::size_t>(size, UINT32_MAX));
  return SHMBUS_OK;
}

// Reads a caller's options: NULL gives the defaults. struct_size must be at
// least the first version's; an older caller's missing fields keep their
// defaults; bytes beyond what this library knows must be zero (otherwise a
// newer caller asks for something this library cannot do).
template <class T>
int read_sized(const char* function, const T* in, T& out, const T& defaults) noexcept {
  out = defaults;
  if (in == nullptr) return SHMBUS_OK;
  const std::size_t size = in->struct_size;
  if (size < first_version_size<T>()) {
    char text[200];
    std::snprintf(text, sizeof text,
                  "options struct_size is %zu, smaller than the first version (%zu bytes): "
                  "fill the struct with its _init function first",
                  size, first_version_size<T>());
    return fail(SHMBUS_INVALID_ARGUMENT, function, text);
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  for (std::size_t i = sizeof(T); i < size; ++i) {
    if (bytes[i] != 0) {
      char text[200];
      std::snprintf(text, sizeof text,
                    "options byte %zu is set, but this library (version %s) knows only the first "
                    "%zu bytes of the struct",
                    i, SHMBUS_VERSION_STRING, sizeof(T));
      return fail(SHMBUS_INVALID_ARGUMENT, function, text);
    }
  }
  std::memcpy(&out, in, std::min(size, sizeof(T)));
  return SHMBUS_OK;
}

// Copies a result struct into a caller's struct of `size` bytes.
template <class T>
int write_sized(const char* function, const T& value, T* out, std::size_t size) noexcept {
  if (out == nullptr) return null_argument(function, "out");
  if (size == 0) return fail(SHMBUS_INVALID_ARGUMENT, function, "size is 0: pass sizeof *out");
  std::memcpy(out, &value, std::min(size, sizeof(T)));
  if (size > sizeof(T)) {
    std::memset(reinterpret_cast<unsigned char*>(out) + sizeof(T), 0, size - sizeof(T));
  }
  return SHMBUS_OK;
}

int to_start(const char* function, std::uint32_t kind, std::uint64_t value, shmbus::StartAt& out) noexcept {
  switch (kind) {
    case SHMBUS_START_EARLIEST: out = shmbus::StartAt::earliest(); return SHMBUS_OK;
    case SHMBUS_START_LATEST: out = shmbus::StartAt::latest(); return SHMBUS_OK;
    case SHMBUS_START_SEQUENCE: out = shmbus::StartAt::at_sequence(value); return SHMBUS_OK;
    case SHMBUS_START_TIMESTAMP: out = shmbus::StartAt::at_time(value); return SHMBUS_OK;
    default: break;
  }
  char text[128];
  std::snprintf(text, sizeof text, "start is %u; expected 0..3 (earliest, latest, sequence, timestamp)", kind);
  return fail(SHMBUS_INVALID_ARGUMENT, function, text);
}

int to_wait(const char* function, std::uint32_t wait, shmbus::WaitStrategy& out) noexcept {
  if (wait > SHMBUS_WAIT_BLOCK) {
    char text[128];
    std::snprintf(text, sizeof text, "wait is %u; expected 0..3 (busy_spin, yield, backoff, block)", wait);
    return fail(SHMBUS_INVALID_ARGUMENT, function, text);
  }
  out = static_cast<shmbus::WaitStrategy>(wait);
  return SHMBUS_OK;
}

int to_channel_options(const char* function, const shmbus_channel_options* in, shmbus::ChannelOptions& out) noexcept {
  shmbus_channel_options o;
  if (int rc = read_sized(function, in, o, channel_defaults()); rc != SHMBUS_OK) return rc;
  if (o.policy < SHMBUS_POLICY_BLOCK || o.policy > SHMBUS_POLICY_REJECT) {
    char text[128];
    std::snprintf(text, sizeof text, "policy is %u; expected 1 (block), 2 (drop_oldest) or 3 (reject)", o.policy);
    return fail(SHMBUS_INVALID_ARGUMENT, function, text);
  }
  if (o.timestamps > SHMBUS_TIMESTAMPS_NONE) {
    char text[128];
    std::snprintf(text, sizeof text, "timestamps is %u; expected 0 (default), 1 (realtime), 2 (tsc) or 3 (none)",
                  o.timestamps);
    return fail(SHMBUS_INVALID_ARGUMENT, function, text);
  }
  out.timestamps =
      o.timestamps == 0 ? shmbus::ChannelOptions{}.timestamps : static_cast<shmbus::TimestampSource>(o.timestamps);
  out.slot_size = o.slot_size;
  out.capacity = o.capacity;
  out.policy = static_cast<shmbus::Policy>(o.policy);
  out.max_subscribers = o.max_subscribers;
  out.max_publishers = o.max_publishers;
  out.max_groups = o.max_groups;
  out.max_consumers = o.max_consumers;
  out.mode = o.mode;
  out.unblock_timeout_ns = o.unblock_timeout_ns;
  out.eviction_timeout_ns = o.eviction_timeout_ns;
  return SHMBUS_OK;  // ranges are checked (with context) by the C++ layer
}

void fill_message(const shmbus::Message& m, shmbus_message& out) noexcept {
  out.sequence = m.sequence;
  out.timestamp_ns = m.timestamp_ns;
  out.key = m.key;
  out.id = m.id;
  out.correlation_id = m.correlation_id;
  out.type = m.type;
  out.attempt = m.attempt;
  out.payload_size = m.payload.size();
}

void fill_delivery(const shmbus::Delivery& d, shmbus_delivery& out) noexcept {
  fill_message(d.message, out.message);
  out.sequence = d.sequence;
  out.deadline_ns = d.deadline_ns;
  out.lease = d.lease;
  out.group = d.group;
  out.attempt = d.attempt;
}

shmbus::Delivery to_delivery(const shmbus_delivery& in) noexcept {
  shmbus::Delivery d;
  d.message.sequence = in.message.sequence;
  d.message.attempt = in.message.attempt;
  d.sequence = in.sequence;
  d.attempt = in.attempt;
  d.deadline_ns = in.deadline_ns;
  d.lease = in.lease;
  d.group = in.group;
  return d;
}

std::span<std::byte> buffer_span(void* buffer, std::size_t capacity) noexcept {
  return {static_cast<std::byte*>(buffer), buffer == nullptr ? 0 : capacity};
}

// Hot-path argument checks: the common case costs two compares.
int check_buffer(const char* function, const void* out, const void* buffer, std::size_t capacity) noexcept {
  if (out == nullptr) return null_argument(function, "out");
  if (buffer == nullptr && capacity != 0) return null_argument(function, "buffer (with capacity > 0)");
  return SHMBUS_OK;
}

}  // namespace

extern "C" {

// --- errors and versions ----------------------------------------------------

const char* shmbus_strerror(int status) {
  switch (status) {
    case SHMBUS_OK: return "ok";
    case SHMBUS_INVALID_ARGUMENT: return "invalid_argument";
    case SHMBUS_NOT_FOUND: return "not_found";
    case SHMBUS_ALREADY_EXISTS: return "already_exists";
    case SHMBUS_PERMISSION_DENIED: return "permission_denied";
    case SHMBUS_NO_SPACE: return "no_space";
    case SHMBUS_PARAMETER_MISMATCH: return "parameter_mismatch";
    case SHMBUS_VERSION_MISMATCH: return "version_mismatch";
    case SHMBUS_CORRUPTED: return "corrupted";
    case SHMBUS_TIMEOUT: return "timeout";
    case SHMBUS_TABLE_FULL: return "table_full";
    case SHMBUS_BUSY: return "busy";
    case SHMBUS_SYSTEM: return "system";
    case SHMBUS_EMPTY: return "empty";
    case SHMBUS_LAPPED: return "lapped";
    case SHMBUS_BUFFER_TOO_SMALL: return "buffer_too_small";
    case SHMBUS_FULL: return "full";
    case SHMBUS_TOO_LARGE: return "too_large";
    case SHMBUS_ABANDONED: return "abandoned";
    case SHMBUS_LEASE_LOST: return "lease_lost";
    case SHMBUS_DLQ_UNAVAILABLE: return "dlq_unavailable";
    case SHMBUS_INVALID: return "invalid";
    case SHMBUS_REMOVED: return "removed";
    case SHMBUS_SEGMENT_LOST: return "segment_lost";
    case SHMBUS_OUT_OF_MEMORY: return "out_of_memory";
    case SHMBUS_INTERNAL: return "internal";
    default: return "unknown";
  }
}

const char* shmbus_last_error(void) { return t_last_error.message; }

int shmbus_last_errno(void) { return t_last_error.sys_errno; }

const char* shmbus_version(void) { return SHMBUS_VERSION_STRING; }

int shmbus_abi_version(void) { return SHMBUS_C_ABI_VERSION; }

// --- option initialisers ------------------------------------------------------

int shmbus_channel_options_init(shmbus_channel_options* opts, size_t size) {
  return init_sized("shmbus_channel_options_init", opts, size, channel_defaults());
}

int shmbus_subscribe_options_init(shmbus_subscribe_options* opts, size_t size) {
  return init_sized("shmbus_subscribe_options_init", opts, size, subscribe_defaults());
}

int shmbus_group_options_init(shmbus_group_options* opts, size_t size) {
  return init_sized("shmbus_group_options_init", opts, size, group_defaults());
}

// --- channels -------------------------------------------------------------------

int shmbus_channel_create(const char* bus, const char* name, const shmbus_channel_options* opts, shmbus_channel** out) {
  static constexpr const char* fn = "shmbus_channel_create";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (name == nullptr) return null_argument(fn, "name");
  return guarded(fn, [&]() -> int {
    shmbus::ChannelOptions o;
    if (int rc = to_channel_options(fn, opts, o); rc != SHMBUS_OK) return rc;
    auto ch = shmbus::Channel::create(name, o, bus_or_default(bus));
    if (!ch) return fail(fn, ch.error());
    *out = new shmbus_channel{std::move(ch.value())};
    return SHMBUS_OK;
  });
}

int shmbus_channel_open(const char* bus, const char* name, uint64_t init_wait_ns, shmbus_channel** out) {
  static constexpr const char* fn = "shmbus_channel_open";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (name == nullptr) return null_argument(fn, "name");
  return guarded(fn, [&]() -> int {
    auto ch = shmbus::Channel::open(name, bus_or_default(bus), init_wait_ns);
    if (!ch) return fail(fn, ch.error());
    *out = new shmbus_channel{std::move(ch.value())};
    return SHMBUS_OK;
  });
}

int shmbus_channel_open_or_create(const char* bus, const char* name, const shmbus_channel_options* opts,
                                  shmbus_channel** out) {
  static constexpr const char* fn = "shmbus_channel_open_or_create";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (name == nullptr) return null_argument(fn, "name");
  return guarded(fn, [&]() -> int {
    shmbus::ChannelOptions o;
    if (int rc = to_channel_options(fn, opts, o); rc != SHMBUS_OK) return rc;
    auto ch = shmbus::Channel::open_or_create(name, o, bus_or_default(bus));
    if (!ch) return fail(fn, ch.error());
    *out = new shmbus_channel{std::move(ch.value())};
    return SHMBUS_OK;
  });
}

void shmbus_channel_close(shmbus_channel* channel) { delete channel; }

int shmbus_channel_remove(const char* bus, const char* name) {
  static constexpr const char* fn = "shmbus_channel_remove";
  if (name == nullptr) return null_argument(fn, "name");
  return guarded(fn, [&]() -> int {
    auto r = shmbus::Channel::remove(name, bus_or_default(bus));
    return r ? SHMBUS_OK : fail(fn, r.error());
  });
}

const char* shmbus_channel_name(const shmbus_channel* channel) {
  return channel == nullptr ? nullptr : channel->channel.name().c_str();
}

uint64_t shmbus_channel_max_payload(const shmbus_channel* channel) {
  return channel == nullptr ? 0 : channel->channel.max_payload();
}

int shmbus_channel_get_options(const shmbus_channel* channel, shmbus_channel_options* out, size_t size) {
  static constexpr const char* fn = "shmbus_channel_get_options";
  if (channel == nullptr) return null_argument(fn, "channel");
  return guarded(fn, [&]() -> int {
    const shmbus::ChannelOptions o = channel->channel.options();
    shmbus_channel_options c = channel_defaults();
    c.struct_size = static_cast<std::uint32_t>(std::min<std::size_t>(size, UINT32_MAX));
    c.slot_size = o.slot_size;
    c.capacity = o.capacity;
    c.policy = static_cast<std::uint32_t>(o.policy);
    c.max_subscribers = o.max_subscribers;
    c.max_publishers = o.max_publishers;
    c.max_groups = o.max_groups;
    c.max_consumers = o.max_consumers;
    c.mode = 0;  // not part of the channel's header
    c.unblock_timeout_ns = o.unblock_timeout_ns;
    c.eviction_timeout_ns = o.eviction_timeout_ns;
    c.timestamps = static_cast<std::uint32_t>(o.timestamps);
    return write_sized(fn, c, out, size);
  });
}

int shmbus_channel_get_stats(const shmbus_channel* channel, shmbus_channel_stats* out, size_t size) {
  static constexpr const char* fn = "shmbus_channel_get_stats";
  if (channel == nullptr) return null_argument(fn, "channel");
  return guarded(fn, [&]() -> int {
    const shmbus::ChannelStats s = channel->channel.stats();
    shmbus_channel_stats c{};
    c.head = s.head;
    c.oldest = s.oldest;
    c.depth = s.depth;
    c.published = s.published;
    c.abandoned = s.abandoned;
    c.evictions = s.evictions;
    c.capacity = s.capacity;
    c.slot_size = s.slot_size;
    c.max_payload = s.max_payload;
    c.policy = static_cast<std::uint32_t>(s.policy);
    c.subscribers = static_cast<std::uint32_t>(s.subscribers.size());
    c.publishers = static_cast<std::uint32_t>(s.publishers.size());
    c.groups = static_cast<std::uint32_t>(s.groups.size());
    return write_sized(fn, c, out, size);
  });
}

// The group stats struct grows only at its end (sized-struct versioning):
// the fields a caller built against an older header knows stay where they were.
static_assert(offsetof(shmbus_group_stats, dlq_due) == 120);
static_assert(offsetof(shmbus_group_stats, ordering) == 128);
static_assert(offsetof(shmbus_group_stats, order_window) == 132);
static_assert(offsetof(shmbus_group_stats, held_keys) == 136);
static_assert(offsetof(shmbus_group_stats, held_messages) == 144);
static_assert(offsetof(shmbus_group_stats, held_oldest_age_ns) == 152);
static_assert(sizeof(shmbus_group_stats) == 160);

int shmbus_channel_get_group_stats(const shmbus_channel* channel, const char* group, shmbus_group_stats* out,
                                   size_t size) {
  static constexpr const char* fn = "shmbus_channel_get_group_stats";
  if (channel == nullptr) return null_argument(fn, "channel");
  if (group == nullptr) return null_argument(fn, "group");
  return guarded(fn, [&]() -> int {
    const shmbus::ChannelStats s = channel->channel.stats();
    for (const shmbus::GroupStats& g : s.groups) {
      if (g.name != group) continue;
      shmbus_group_stats c{};
      c.next = g.next;
      c.floor = g.floor;
      c.pending = g.pending;
      c.unfinished = g.unfinished;
      c.in_flight = g.in_flight;
      c.due = g.due;
      c.oldest_unacked_age_ns = g.oldest_unacked_age_ns;
      c.delivered = g.delivered;
      c.acked = g.acked;
      c.nacked = g.nacked;
      c.redelivered = g.redelivered;
      c.expired = g.expired;
      c.dead_lettered = g.dead_lettered;
      c.lost = g.lost;
      c.consumers = static_cast<std::uint32_t>(g.consumers.size());
      c.max_deliveries = g.max_deliveries;
      c.dlq_due = g.dlq_due;
      c.ordering = static_cast<std::uint32_t>(g.ordering);
      c.order_window = g.order_window;
      c.held_keys = g.held_keys;
      c.held_messages = g.held_messages;
      c.held_oldest_age_ns = g.held_oldest_age_ns;
      return write_sized(fn, c, out, size);
    }
    return fail(SHMBUS_NOT_FOUND, fn,
                "channel '" + channel->channel.name() + "' has no group '" + std::string(group) + "'");
  });
}

int shmbus_channel_remove_subscriber(shmbus_channel* channel, const char* name) {
  static constexpr const char* fn = "shmbus_channel_remove_subscriber";
  if (channel == nullptr) return null_argument(fn, "channel");
  if (name == nullptr) return null_argument(fn, "name");
  return guarded(fn, [&]() -> int {
    auto r = channel->channel.remove_subscriber(name);
    return r ? SHMBUS_OK : fail(fn, r.error());
  });
}

int shmbus_channel_remove_group(shmbus_channel* channel, const char* group) {
  static constexpr const char* fn = "shmbus_channel_remove_group";
  if (channel == nullptr) return null_argument(fn, "channel");
  if (group == nullptr) return null_argument(fn, "group");
  return guarded(fn, [&]() -> int {
    auto r = channel->channel.remove_group(group);
    return r ? SHMBUS_OK : fail(fn, r.error());
  });
}

// --- publishing -------------------------------------------------------------------

int shmbus_publisher_new(shmbus_channel* channel, shmbus_publisher** out) {
  static constexpr const char* fn = "shmbus_publisher_new";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (channel == nullptr) return null_argument(fn, "channel");
  return guarded(fn, [&]() -> int {
    auto p = channel->channel.publisher();
    if (!p) return fail(fn, p.error());
    *out = new shmbus_publisher{std::move(p.value())};
    return SHMBUS_OK;
  });
}

void shmbus_publisher_free(shmbus_publisher* publisher) { delete publisher; }

int shmbus_publish(shmbus_publisher* publisher, const void* data, size_t size, const shmbus_message_meta* meta,
                   uint64_t timeout_ns) {
  static constexpr const char* fn = "shmbus_publish";
  if (publisher == nullptr) return null_argument(fn, "publisher");
  if (data == nullptr && size != 0) return null_argument(fn, "data (with size > 0)");
  shmbus::MessageMeta m;
  if (meta != nullptr) {
    m.key = meta->key;
    m.id = meta->id;
    m.correlation_id = meta->correlation_id;
    m.timestamp_ns = meta->timestamp_ns;
    m.type = meta->type;
  }
  const std::span<const std::byte> payload(static_cast<const std::byte*>(data), data == nullptr ? 0 : size);
  const int rc = status_of(publisher->publisher.publish(payload, m, timeout_ns));
  if (rc == SHMBUS_TOO_LARGE) {
    char text[128];
    std::snprintf(text, sizeof text, "payload of %zu bytes exceeds the channel's max payload of %zu bytes", size,
                  publisher->publisher.max_payload());
    return fail(rc, fn, text);
  }
  return rc;
}

namespace {
shmbus::OutMessage out_message_at(const void* ctx, std::size_t i) noexcept {
  const shmbus_out_message& c = static_cast<const shmbus_out_message*>(ctx)[i];
  shmbus::OutMessage m;
  m.payload = std::span<const std::byte>(static_cast<const std::byte*>(c.data), c.data == nullptr ? 0 : c.size);
  m.meta.key = c.meta.key;
  m.meta.id = c.meta.id;
  m.meta.correlation_id = c.meta.correlation_id;
  m.meta.timestamp_ns = c.meta.timestamp_ns;
  m.meta.type = c.meta.type;
  return m;
}
}  // namespace

int shmbus_publish_batch(shmbus_publisher* publisher, const shmbus_out_message* msgs, size_t count,
                         uint64_t timeout_ns) {
  static constexpr const char* fn = "shmbus_publish_batch";
  if (publisher == nullptr) return null_argument(fn, "publisher");
  if (msgs == nullptr && count != 0) return null_argument(fn, "msgs (with count > 0)");
  for (size_t i = 0; i < count; ++i) {
    if (msgs[i].data == nullptr && msgs[i].size != 0) {
      char text[128];
      std::snprintf(text, sizeof text, "msgs[%zu].data is NULL with size %llu", i,
                    static_cast<unsigned long long>(msgs[i].size));
      return fail(SHMBUS_INVALID_ARGUMENT, fn, text);
    }
  }
  const int rc = status_of(publisher->publisher.publish_batch(count, out_message_at, msgs, timeout_ns));
  if (rc == SHMBUS_TOO_LARGE) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "a batch of %zu messages exceeds the channel's capacity, or one of its payloads its max "
                  "payload of %zu bytes",
                  count, publisher->publisher.max_payload());
    return fail(rc, fn, text);
  }
  return rc;
}

uint64_t shmbus_publisher_max_payload(const shmbus_publisher* publisher) {
  return publisher == nullptr ? 0 : publisher->publisher.max_payload();
}

// --- subscribers -------------------------------------------------------------------

int shmbus_subscriber_new(shmbus_channel* channel, const shmbus_subscribe_options* opts, shmbus_subscriber** out) {
  static constexpr const char* fn = "shmbus_subscriber_new";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (channel == nullptr) return null_argument(fn, "channel");
  return guarded(fn, [&]() -> int {
    shmbus_subscribe_options o;
    if (int rc = read_sized(fn, opts, o, subscribe_defaults()); rc != SHMBUS_OK) return rc;
    shmbus::SubscribeOptions so;
    if (o.name != nullptr) so.name = o.name;
    if (int rc = to_start(fn, o.start, o.start_value, so.start); rc != SHMBUS_OK) return rc;
    if (int rc = to_wait(fn, o.wait, so.wait); rc != SHMBUS_OK) return rc;
    auto s = channel->channel.subscribe(so);
    if (!s) return fail(fn, s.error());
    *out = new shmbus_subscriber{std::move(s.value()), channel->channel};
    return SHMBUS_OK;
  });
}

void shmbus_subscriber_free(shmbus_subscriber* subscriber) { delete subscriber; }

int shmbus_subscriber_poll(shmbus_subscriber* subscriber, shmbus_message* out, void* buffer, size_t capacity) {
  static constexpr const char* fn = "shmbus_subscriber_poll";
  if (subscriber == nullptr) return null_argument(fn, "subscriber");
  if (int rc = check_buffer(fn, out, buffer, capacity); rc != SHMBUS_OK) return rc;
  shmbus::Message m;
  const int rc = status_of(subscriber->subscriber.poll(m, buffer_span(buffer, capacity)));
  if (rc == SHMBUS_OK || rc == SHMBUS_BUFFER_TOO_SMALL) fill_message(m, *out);
  return rc;
}

int shmbus_subscriber_poll_wait(shmbus_subscriber* subscriber, shmbus_message* out, void* buffer, size_t capacity,
                                uint64_t timeout_ns) {
  static constexpr const char* fn = "shmbus_subscriber_poll_wait";
  if (subscriber == nullptr) return null_argument(fn, "subscriber");
  if (int rc = check_buffer(fn, out, buffer, capacity); rc != SHMBUS_OK) return rc;
  shmbus::Message m;
  const int rc = status_of(subscriber->subscriber.poll_wait(m, buffer_span(buffer, capacity), timeout_ns));
  if (rc == SHMBUS_OK || rc == SHMBUS_BUFFER_TOO_SMALL) fill_message(m, *out);
  return rc;
}

int shmbus_subscriber_seek(shmbus_subscriber* subscriber, uint64_t sequence) {
  if (subscriber == nullptr) return null_argument("shmbus_subscriber_seek", "subscriber");
  subscriber->subscriber.seek(sequence);
  return SHMBUS_OK;
}

int shmbus_subscriber_get_counters(const shmbus_subscriber* subscriber, shmbus_subscriber_counters* out, size_t size) {
  static constexpr const char* fn = "shmbus_subscriber_get_counters";
  if (subscriber == nullptr) return null_argument(fn, "subscriber");
  const shmbus::SubscriberCounters k = subscriber->subscriber.counters();
  // relaxed: a statistic; head only grows, and lag is a snapshot either way.
  const std::uint64_t head =
      shmbus::detail::state_of(subscriber->channel)->producer->head.load(std::memory_order_relaxed);
  shmbus_subscriber_counters c{};
  c.cursor = k.cursor;
  c.lag = head > k.cursor ? head - k.cursor : 0;
  c.delivered = k.delivered;
  c.lost = k.lost;
  c.lapped_events = k.lapped_events;
  return write_sized(fn, c, out, size);
}

int shmbus_subscriber_resumed(const shmbus_subscriber* subscriber) {
  return subscriber != nullptr && subscriber->subscriber.resumed() ? 1 : 0;
}

// --- consumer groups ---------------------------------------------------------------

int shmbus_group_join(shmbus_channel* channel, const char* group, const shmbus_group_options* opts,
                      shmbus_consumer** out) {
  static constexpr const char* fn = "shmbus_group_join";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (channel == nullptr) return null_argument(fn, "channel");
  if (group == nullptr) return null_argument(fn, "group");
  return guarded(fn, [&]() -> int {
    shmbus_group_options o;
    if (int rc = read_sized(fn, opts, o, group_defaults()); rc != SHMBUS_OK) return rc;
    shmbus::GroupOptions go;
    if (int rc = to_start(fn, o.start, o.start_value, go.start); rc != SHMBUS_OK) return rc;
    if (int rc = to_wait(fn, o.wait, go.wait); rc != SHMBUS_OK) return rc;
    go.visibility_timeout_ns = o.visibility_timeout_ns;
    go.max_deliveries = o.max_deliveries;
    go.backoff_base_ns = o.backoff_base_ns;
    go.backoff_cap_ns = o.backoff_cap_ns;
    go.jitter_permille = o.jitter_permille;
    // A caller of the first version (64 bytes) has no order_window: read_sized
    // left the default (0) there. check_group_options refuses an unknown ordering.
    go.ordering = static_cast<shmbus::GroupOrdering>(o.ordering);
    go.order_window = o.order_window;
    if (o.reserved1 != 0) return fail(SHMBUS_INVALID_ARGUMENT, fn, "group options reserved1 must be 0");
    if (o.dlq != nullptr) go.dlq = o.dlq;
    auto c = channel->channel.join_group(group, go);
    if (!c) return fail(fn, c.error());
    *out = new shmbus_consumer{std::move(c.value())};
    return SHMBUS_OK;
  });
}

void shmbus_consumer_free(shmbus_consumer* consumer) { delete consumer; }

int shmbus_consumer_receive(shmbus_consumer* consumer, shmbus_delivery* out, void* buffer, size_t capacity) {
  static constexpr const char* fn = "shmbus_consumer_receive";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (int rc = check_buffer(fn, out, buffer, capacity); rc != SHMBUS_OK) return rc;
  shmbus::Delivery d;
  const int rc = status_of(consumer->consumer.receive(d, buffer_span(buffer, capacity)));
  if (rc == SHMBUS_OK || rc == SHMBUS_BUFFER_TOO_SMALL) fill_delivery(d, *out);
  return rc;
}

int shmbus_consumer_receive_wait(shmbus_consumer* consumer, shmbus_delivery* out, void* buffer, size_t capacity,
                                 uint64_t timeout_ns) {
  static constexpr const char* fn = "shmbus_consumer_receive_wait";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (int rc = check_buffer(fn, out, buffer, capacity); rc != SHMBUS_OK) return rc;
  shmbus::Delivery d;
  const int rc = status_of(consumer->consumer.receive_wait(d, buffer_span(buffer, capacity), timeout_ns));
  if (rc == SHMBUS_OK || rc == SHMBUS_BUFFER_TOO_SMALL) fill_delivery(d, *out);
  return rc;
}

int shmbus_consumer_ack(shmbus_consumer* consumer, const shmbus_delivery* delivery) {
  static constexpr const char* fn = "shmbus_consumer_ack";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (delivery == nullptr) return null_argument(fn, "delivery");
  return status_of(consumer->consumer.ack(to_delivery(*delivery)));
}

int shmbus_consumer_nack(shmbus_consumer* consumer, const shmbus_delivery* delivery, uint64_t delay_ns) {
  static constexpr const char* fn = "shmbus_consumer_nack";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (delivery == nullptr) return null_argument(fn, "delivery");
  return status_of(consumer->consumer.nack(to_delivery(*delivery), delay_ns));
}

int shmbus_consumer_nack_backoff(shmbus_consumer* consumer, const shmbus_delivery* delivery) {
  static constexpr const char* fn = "shmbus_consumer_nack_backoff";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (delivery == nullptr) return null_argument(fn, "delivery");
  return status_of(consumer->consumer.nack(to_delivery(*delivery)));
}

int shmbus_consumer_extend(shmbus_consumer* consumer, shmbus_delivery* delivery, uint64_t visibility_ns) {
  static constexpr const char* fn = "shmbus_consumer_extend";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (delivery == nullptr) return null_argument(fn, "delivery");
  shmbus::Delivery d = to_delivery(*delivery);
  const int rc = status_of(consumer->consumer.extend(d, visibility_ns));
  if (rc == SHMBUS_OK) {
    delivery->lease = d.lease;
    delivery->deadline_ns = d.deadline_ns;
  }
  return rc;
}

int shmbus_consumer_dead_letter(shmbus_consumer* consumer, const shmbus_delivery* delivery) {
  static constexpr const char* fn = "shmbus_consumer_dead_letter";
  if (consumer == nullptr) return null_argument(fn, "consumer");
  if (delivery == nullptr) return null_argument(fn, "delivery");
  return status_of(consumer->consumer.dead_letter(to_delivery(*delivery)));
}

// --- archiver ----------------------------------------------------------------------

int shmbus_archiver_options_init(shmbus_archiver_options* opts, size_t size) {
  return init_sized("shmbus_archiver_options_init", opts, size, archiver_defaults());
}

int shmbus_archiver_open(shmbus_channel* channel, const shmbus_archiver_options* opts, shmbus_archiver** out) {
  static constexpr const char* fn = "shmbus_archiver_open";
  if (out == nullptr) return null_argument(fn, "out");
  *out = nullptr;
  if (channel == nullptr) return null_argument(fn, "channel");
  return guarded(fn, [&]() -> int {
    shmbus_archiver_options o;
    if (int rc = read_sized(fn, opts, o, archiver_defaults()); rc != SHMBUS_OK) return rc;
    shmbus::ArchiverOptions ao;
    if (o.fsync > SHMBUS_ARCHIVE_FSYNC_BATCH) {
      return fail(SHMBUS_INVALID_ARGUMENT, fn, "fsync is not an enum shmbus_archive_fsync value");
    }
    ao.fsync = static_cast<shmbus::ArchiveFsync>(o.fsync);
    if (o.dir != nullptr) ao.dir = o.dir;
    ao.fsync_interval_ns = o.fsync_interval_ns;
    ao.segment_bytes = o.segment_bytes;
    ao.max_age_ns = o.max_age_ns;
    ao.max_bytes = o.max_bytes;
    ao.batch = o.batch;
    if (int rc = to_wait(fn, o.wait, ao.wait); rc != SHMBUS_OK) return rc;
    auto a = shmbus::Archiver::open(channel->channel, ao);
    if (!a) return fail(fn, a.error());
    *out = new shmbus_archiver{std::move(a.value())};
    return SHMBUS_OK;
  });
}

void shmbus_archiver_close(shmbus_archiver* archiver) { delete archiver; }

int shmbus_archiver_poll_once(shmbus_archiver* archiver, uint64_t* archived) {
  static constexpr const char* fn = "shmbus_archiver_poll_once";
  if (archived != nullptr) *archived = 0;
  if (archiver == nullptr) return null_argument(fn, "archiver");
  return guarded(fn, [&]() -> int {
    auto n = archiver->archiver.poll_once();
    if (!n) return fail(fn, n.error());
    if (archived != nullptr) *archived = *n;
    return SHMBUS_OK;
  });
}

int shmbus_archiver_start(shmbus_archiver* archiver) {
  static constexpr const char* fn = "shmbus_archiver_start";
  if (archiver == nullptr) return null_argument(fn, "archiver");
  return guarded(fn, [&]() -> int {
    auto r = archiver->archiver.start();
    return r ? SHMBUS_OK : fail(fn, r.error());
  });
}

int shmbus_archiver_stop(shmbus_archiver* archiver) {
  static constexpr const char* fn = "shmbus_archiver_stop";
  if (archiver == nullptr) return null_argument(fn, "archiver");
  return guarded(fn, [&]() -> int {
    auto r = archiver->archiver.stop();
    return r ? SHMBUS_OK : fail(fn, r.error());
  });
}

int shmbus_archiver_sync(shmbus_archiver* archiver) {
  static constexpr const char* fn = "shmbus_archiver_sync";
  if (archiver == nullptr) return null_argument(fn, "archiver");
  return guarded(fn, [&]() -> int {
    auto r = archiver->archiver.sync();
    return r ? SHMBUS_OK : fail(fn, r.error());
  });
}

int shmbus_archiver_get_counters(const shmbus_archiver* archiver, shmbus_archiver_counters* out, size_t size) {
  static constexpr const char* fn = "shmbus_archiver_get_counters";
  if (archiver == nullptr) return null_argument(fn, "archiver");
  const shmbus::ArchiverCounters k = archiver->archiver.counters();
  shmbus_archiver_counters c{};
  c.archived = k.archived;
  c.bytes = k.bytes;
  c.lost = k.lost;
  c.gaps = k.gaps;
  c.abandoned = k.abandoned;
  c.recovered_bytes = k.recovered_bytes;
  c.last_fsync_realtime_ns = k.last_fsync_realtime_ns;
  c.next_sequence = k.next_sequence;
  c.no_space_errors = k.no_space_errors;
  return write_sized(fn, c, out, size);
}

}  // extern "C"
