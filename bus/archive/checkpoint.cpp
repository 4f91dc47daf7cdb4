// Checkpoints of a channel's durable state. See checkpoint.hpp.
#include "bus/archive/checkpoint.hpp"

#include <algorithm>
#include <cstring>
#include <set>

#include "bus/archive/crc32c.hpp"
#include "bus/common/util.hpp"
#include "bus/group/membership.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/file.hpp"

namespace shmbus::bus::archive {

namespace {

constexpr std::size_t kHeaderSize = sizeof(CheckpointHeader);
constexpr std::size_t kCrcSize = 4;

bool stable_durable_state(std::uint32_t state) noexcept {
  return state == kEntryActive || state == kEntryDetached || state == kEntryResuming || state == kEntryEvicted;
}

// Reads durable subscriber entry e: nullopt unless it holds a durable
// subscriber in a stable state, the same one before and after the read.
std::optional<SubscriberCheckpoint> capture_subscriber(const SubscriberEntry& e) {
  // SYNC(entry): acquire, pairs with the release/seq_cst CASes that publish
  // an entry's name, flags and cursor (attach, activate).
  const std::uint64_t before = shm::load_acquire(e.control);
  if (!stable_durable_state(control_state(before))) return std::nullopt;
  const std::uint32_t flags = shm::load_relaxed(e.flags);  // relaxed: ordered by the acquire above
  if ((flags & kSubDurable) == 0) return std::nullopt;
  SubscriberCheckpoint s;
  s.name = read_name(e.name);
  // SYNC(cursor): acquire, pairs with the reader's release (seq_cst) store.
  s.cursor = shm::load_acquire(e.cursor);
  s.flags = flags;
  s.state = control_state(before);
  // relaxed: statistics.
  s.delivered = shm::load_relaxed(e.delivered);
  s.lost = shm::load_relaxed(e.lost);
  s.lapped_events = shm::load_relaxed(e.lapped_events);
  s.attached_ns = shm::load_relaxed(e.attached_realtime_ns);
  // The entry must still hold the same durable subscriber: an entry removed
  // and reused meanwhile would mix two subscribers' words. Its state may
  // have moved between stable states (attach, detach): the name and the
  // cursor are the subscriber's own either way.
  std::atomic_thread_fence(std::memory_order_acquire);
  const std::uint64_t after = shm::load_acquire(e.control);
  if (!stable_durable_state(control_state(after)) || read_name(e.name) != s.name || s.name.empty()) {
    return std::nullopt;
  }
  if (control_state(after) != control_state(before)) s.state = control_state(after);
  return s;
}

// Reads active group entry g: nullopt unless it is active, with the same
// name, before and after the read.
std::optional<GroupCheckpoint> capture_group(const GroupEntry& g) {
  // SYNC(group): acquire, pairs with the seq_cst CAS to active that
  // publishes the settings (membership's try_create_group).
  if (control_state(shm::load_acquire(g.control)) != kEntryActive) return std::nullopt;
  GroupCheckpoint c;
  c.name = read_name(g.name);
  c.dlq = read_name(g.dlq);
  c.visibility_timeout_ns = g.visibility_timeout_ns;
  c.backoff_base_ns = g.backoff_base_ns;
  c.backoff_cap_ns = g.backoff_cap_ns;
  c.max_deliveries = g.max_deliveries;
  c.jitter_permille = g.jitter_permille;
  c.ordering = g.ordering;
  c.order_window = g.order_window;
  c.created_ns = g.created_realtime_ns;
  // SYNC(floor): acquire, pairs with the seq_cst floor CAS (every lease below
  // it is finished). `next` after it: next >= floor in the snapshot.
  c.floor = shm::load_acquire(g.floor);
  c.next = std::max(c.floor, shm::load_acquire(g.next));
  // relaxed: statistics.
  c.delivered = shm::load_relaxed(g.delivered);
  c.acked = shm::load_relaxed(g.acked);
  c.redelivered = shm::load_relaxed(g.redelivered);
  c.dead_lettered = shm::load_relaxed(g.dead_lettered);
  c.nacked = shm::load_relaxed(g.nacked);
  c.expired = shm::load_relaxed(g.expired);
  c.lost = shm::load_relaxed(g.lost);
  c.dlq_failures = shm::load_relaxed(g.dlq_failures);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (control_state(shm::load_acquire(g.control)) != kEntryActive || read_name(g.name) != c.name || c.name.empty()) {
    return std::nullopt;  // removed (and perhaps re-created) while we read it
  }
  return c;
}

void put_name(char (&dst)[64], const std::string& s) {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, s.data(), std::min(s.size(), sizeof dst - 1));
}

Error damaged(const std::string& path, const std::string& what) {
  return Error(ErrorCode::corrupted, "checkpoint '" + path + "' is damaged: " + what);
}

// A name field read from a checkpoint: NUL-terminated within its 64 bytes.
Result<std::string> get_name(const char (&src)[64], const std::string& path, const std::string& what,
                             bool may_be_empty) {
  const std::size_t n = strnlen(src, sizeof src);
  if (n == sizeof src) return damaged(path, what + " is not NUL-terminated");
  std::string s(src, n);
  if (!may_be_empty) {
    if (auto r = validate_name(what, s); !r) return damaged(path, r.error().message());
  }
  return s;
}

// One subscriber record at `at` (whole, inside the checked file); `names`
// collects the names seen so far.
Result<SubscriberCheckpoint> decode_subscriber(const std::byte* at, const std::string& path,
                                               std::set<std::string>& names) {
  CheckpointSubscriber r;
  std::memcpy(&r, at, sizeof r);
  auto name = get_name(r.name, path, "subscriber", false);
  if (!name) return name.error();
  if (!names.insert(*name).second) return damaged(path, "subscriber '" + *name + "' is listed twice");
  if ((r.flags & kSubDurable) == 0 || !stable_durable_state(r.state)) {
    return damaged(path, "subscriber '" + *name + "' has flags " + num(r.flags) + " and state " + num(r.state) +
                             " (not a durable entry in a stable state)");
  }
  SubscriberCheckpoint s;
  s.name = std::move(*name);
  s.cursor = r.cursor;
  s.flags = r.flags;
  s.state = r.state;
  s.delivered = r.delivered;
  s.lost = r.lost;
  s.lapped_events = r.lapped_events;
  s.attached_ns = r.attached_ns;
  return s;
}

// One group record at `at`, as decode_subscriber.
Result<GroupCheckpoint> decode_group(const std::byte* at, const std::string& path, std::set<std::string>& names) {
  CheckpointGroup r;
  std::memcpy(&r, at, sizeof r);
  auto name = get_name(r.name, path, "group", false);
  if (!name) return name.error();
  auto dlq = get_name(r.dlq, path, "group '" + *name + "' dlq", true);
  if (!dlq) return dlq.error();
  if (!names.insert(*name).second) return damaged(path, "group '" + *name + "' is listed twice");
  GroupOptions o;
  o.visibility_timeout_ns = r.visibility_timeout_ns;
  o.backoff_base_ns = r.backoff_base_ns;
  o.backoff_cap_ns = r.backoff_cap_ns;
  o.max_deliveries = r.max_deliveries;
  o.jitter_permille = r.jitter_permille;
  o.ordering = static_cast<GroupOrdering>(r.ordering);
  o.order_window = r.order_window;
  if (auto ok = check_group_options(o); !ok) {
    return damaged(path, "group '" + *name + "': " + ok.error().message());
  }
  if (r.next < r.floor) {
    return damaged(path, "group '" + *name + "' has next " + num(r.next) + " below its floor " + num(r.floor));
  }
  GroupCheckpoint g;
  g.name = std::move(*name);
  g.dlq = std::move(*dlq);
  g.visibility_timeout_ns = r.visibility_timeout_ns;
  g.backoff_base_ns = r.backoff_base_ns;
  g.backoff_cap_ns = r.backoff_cap_ns;
  g.max_deliveries = r.max_deliveries;
  g.jitter_permille = r.jitter_permille;
  g.ordering = r.ordering;
  g.order_window = r.order_window;
  g.created_ns = r.created_ns;
  g.floor = r.floor;
  g.next = r.next;
  g.delivered = r.delivered;
  g.acked = r.acked;
  g.redelivered = r.redelivered;
  g.dead_lettered = r.dead_lettered;
  g.nacked = r.nacked;
  g.expired = r.expired;
  g.lost = r.lost;
  g.dlq_failures = r.dlq_failures;
  return g;
}

}  // namespace

Checkpoint capture_checkpoint(const ChannelState& ch) {
  Checkpoint cp;
  cp.taken_ns = shm::realtime_ns();
  // acquire: the newest head this thread can see; informational (a restore
  // continues from the archive's end).
  cp.head = shm::load_acquire(ch.producer->head);
  for (std::uint32_t i = 0; i < ch.geo.max_subscribers; ++i) {
    if (auto s = capture_subscriber(ch.subscribers[i])) cp.subscribers.push_back(std::move(*s));
  }
  for (std::uint32_t i = 0; i < ch.geo.max_groups; ++i) {
    if (auto g = capture_group(*ch.group(i))) cp.groups.push_back(std::move(*g));
  }
  return cp;
}

Result<std::vector<std::byte>> encode_checkpoint(const Checkpoint& cp) {
  if (cp.subscribers.size() > kCheckpointMaxSubscribers || cp.groups.size() > kCheckpointMaxGroups) {
    return Error(ErrorCode::invalid_argument, "a checkpoint holds at most " + num(kCheckpointMaxSubscribers) +
                                                  " subscribers and " + num(kCheckpointMaxGroups) + " groups (got " +
                                                  num(cp.subscribers.size()) + " and " + num(cp.groups.size()) + ")");
  }
  const std::size_t size = kHeaderSize + cp.subscribers.size() * sizeof(CheckpointSubscriber) +
                           cp.groups.size() * sizeof(CheckpointGroup) + kCrcSize;
  std::vector<std::byte> out(size);
  CheckpointHeader h{};
  std::memcpy(h.magic, kCheckpointMagic, sizeof h.magic);
  h.version = kCheckpointVersion;
  h.header_size = kHeaderSize;
  h.file_size = size;
  h.taken_ns = cp.taken_ns;
  h.head = cp.head;
  h.subscribers = static_cast<std::uint32_t>(cp.subscribers.size());
  h.groups = static_cast<std::uint32_t>(cp.groups.size());
  h.subscriber_size = sizeof(CheckpointSubscriber);
  h.group_size = sizeof(CheckpointGroup);
  std::memcpy(out.data(), &h, sizeof h);
  std::size_t at = kHeaderSize;
  for (const SubscriberCheckpoint& s : cp.subscribers) {
    if (s.name.empty() || s.name.size() > kNameMax) {
      return Error(ErrorCode::invalid_argument,
                   "subscriber name '" + s.name + "' must be 1.." + num(kNameMax) + " bytes");
    }
    CheckpointSubscriber r{};
    put_name(r.name, s.name);
    r.cursor = s.cursor;
    r.flags = s.flags;
    r.state = s.state;
    r.delivered = s.delivered;
    r.lost = s.lost;
    r.lapped_events = s.lapped_events;
    r.attached_ns = s.attached_ns;
    std::memcpy(out.data() + at, &r, sizeof r);
    at += sizeof r;
  }
  for (const GroupCheckpoint& g : cp.groups) {
    if (g.name.empty() || g.name.size() > kNameMax || g.dlq.size() > kNameMax) {
      return Error(ErrorCode::invalid_argument,
                   "group name '" + g.name + "' and dlq '" + g.dlq + "' must be at most " + num(kNameMax) + " bytes");
    }
    CheckpointGroup r{};
    put_name(r.name, g.name);
    put_name(r.dlq, g.dlq);
    r.visibility_timeout_ns = g.visibility_timeout_ns;
    r.backoff_base_ns = g.backoff_base_ns;
    r.backoff_cap_ns = g.backoff_cap_ns;
    r.max_deliveries = g.max_deliveries;
    r.jitter_permille = g.jitter_permille;
    r.ordering = g.ordering;
    r.order_window = g.order_window;
    r.created_ns = g.created_ns;
    r.floor = g.floor;
    r.next = g.next;
    r.delivered = g.delivered;
    r.acked = g.acked;
    r.redelivered = g.redelivered;
    r.dead_lettered = g.dead_lettered;
    r.nacked = g.nacked;
    r.expired = g.expired;
    r.lost = g.lost;
    r.dlq_failures = g.dlq_failures;
    std::memcpy(out.data() + at, &r, sizeof r);
    at += sizeof r;
  }
  const std::uint32_t crc = crc32c(std::span<const std::byte>(out.data(), at));
  std::memcpy(out.data() + at, &crc, sizeof crc);
  return out;
}

Result<Checkpoint> decode_checkpoint(std::span<const std::byte> bytes, const std::string& path) {
  if (bytes.size() < kHeaderSize + kCrcSize) {
    return damaged(
        path, "it holds " + num(bytes.size()) + " bytes, fewer than a header (" + num(kHeaderSize + kCrcSize) + ")");
  }
  CheckpointHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, kCheckpointMagic, sizeof h.magic) != 0) return damaged(path, "bad magic (not a checkpoint)");
  if (h.version != kCheckpointVersion) {
    return Error(ErrorCode::version_mismatch, "checkpoint '" + path + "' has format version " + num(h.version) +
                                                  "; this library reads version " + num(kCheckpointVersion));
  }
  if (h.header_size != kHeaderSize || h.subscriber_size != sizeof(CheckpointSubscriber) ||
      h.group_size != sizeof(CheckpointGroup)) {
    return damaged(path, "record sizes " + num(h.header_size) + "/" + num(h.subscriber_size) + "/" + num(h.group_size) +
                             " are not " + num(kHeaderSize) + "/" + num(sizeof(CheckpointSubscriber)) + "/" +
                             num(sizeof(CheckpointGroup)));
  }
  if (h.subscribers > kCheckpointMaxSubscribers || h.groups > kCheckpointMaxGroups) {
    return damaged(path, num(h.subscribers) + " subscribers and " + num(h.groups) + " groups exceed the limits");
  }
  const std::uint64_t want = kHeaderSize + std::uint64_t{h.subscribers} * sizeof(CheckpointSubscriber) +
                             std::uint64_t{h.groups} * sizeof(CheckpointGroup) + kCrcSize;
  if (h.file_size != want || bytes.size() != want) {
    return damaged(path, "it holds " + num(bytes.size()) + " bytes; its header says " + num(h.file_size) +
                             " and its counts imply " + num(want) + " (cut short or extended)");
  }
  const std::size_t body = bytes.size() - kCrcSize;
  std::uint32_t stored = 0;
  std::memcpy(&stored, bytes.data() + body, sizeof stored);
  const std::uint32_t computed = crc32c(bytes.first(body));
  if (stored != computed) {
    return damaged(path, "CRC32C " + num(stored) + " does not match its contents (" + num(computed) + ")");
  }
  Checkpoint cp;
  cp.taken_ns = h.taken_ns;
  cp.head = h.head;
  std::size_t at = kHeaderSize;
  std::set<std::string> names;
  for (std::uint32_t i = 0; i < h.subscribers; ++i) {
    auto s = decode_subscriber(bytes.data() + at, path, names);
    if (!s) return s.error();
    cp.subscribers.push_back(std::move(*s));
    at += sizeof(CheckpointSubscriber);
  }
  names.clear();
  for (std::uint32_t i = 0; i < h.groups; ++i) {
    auto g = decode_group(bytes.data() + at, path, names);
    if (!g) return g.error();
    cp.groups.push_back(std::move(*g));
    at += sizeof(CheckpointGroup);
  }
  return cp;
}

Result<void> write_checkpoint(const std::string& dir, const Checkpoint& cp) {
  auto bytes = encode_checkpoint(cp);
  if (!bytes) return bytes.error();
  if (auto r = shm::create_directories(dir); !r) return r.error();
  const std::string tmp = shm::join_path(dir, kCheckpointTemp);
  const std::string path = shm::join_path(dir, kCheckpointFile);
  // A temporary file a writer killed mid-way left behind: never read, replaced.
  if (auto r = shm::remove_file(tmp); !r) return r.error();
  auto f = shm::File::create_new(tmp);
  if (!f) return f.error();
  if (auto r = f->write_all(*bytes); !r) return r.error();
  // The bytes on disk before the name: a power cut after the rename must not
  // leave the name on an empty or partial file.
  if (auto r = f->datasync(); !r) return r.error();
  if (auto r = f->close(); !r) return r.error();
  if (auto r = shm::rename_file(tmp, path); !r) return r.error();
  return shm::sync_directory(dir);
}

Result<std::optional<Checkpoint>> read_checkpoint(const std::string& dir) {
  const std::string path = shm::join_path(dir, kCheckpointFile);
  // The largest legal checkpoint, and a little more so that an extended file
  // is reported as such rather than as too large to read.
  constexpr std::uint64_t kMaxBytes = kHeaderSize + kCheckpointMaxSubscribers * sizeof(CheckpointSubscriber) +
                                      kCheckpointMaxGroups * sizeof(CheckpointGroup) + kCrcSize;
  auto bytes = shm::read_file(path, kMaxBytes);
  if (!bytes) {
    if (bytes.error().code() == ErrorCode::not_found) return std::optional<Checkpoint>{};
    if (bytes.error().code() == ErrorCode::invalid_argument) return damaged(path, bytes.error().message());
    return bytes.error();
  }
  auto cp = decode_checkpoint(*bytes, path);
  if (!cp) return cp.error();
  return std::optional<Checkpoint>(std::move(*cp));
}

Result<Checkpoint> checkpoint_channel(const ChannelState& ch, const std::string& dir) {
  Checkpoint cp = capture_checkpoint(ch);
  if (auto r = write_checkpoint(dir, cp); !r) {
    return Error(r.error().code(), "channel '" + ch.name + "': cannot write its checkpoint: " + r.error().message(),
                 r.error().sys_errno());
  }
  return cp;
}

}  // namespace shmbus::bus::archive
