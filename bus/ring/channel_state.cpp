#include "bus/ring/channel_state.hpp"
#include "bus/common/util.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "bus/archive/restore.hpp"
#include "bus/common/segment_open.hpp"
#include "bus/common/settings_check.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"
#include "shm/liveness.hpp"
#include "shm/tsc_clock.hpp"

namespace shmbus::bus {

namespace {

constexpr std::uint32_t kMaxSlotSize = 16u << 20;
constexpr std::uint32_t kMaxCapacity = 1u << 30;
constexpr std::uint32_t kMaxTableEntries = 4096;
constexpr std::uint64_t kMaxTotalSize = 1ULL << 40;

Error invalid(const std::string& msg) { return Error(ErrorCode::invalid_argument, msg); }

}  // namespace

Result<void> ChannelState::require_writable() const {
  if (!read_only()) return {};
  return Error(ErrorCode::permission_denied, "channel '" + name + "' is open read-only");
}

ChannelOptions options_of(const Geometry& g) {
  ChannelOptions o;
  o.slot_size = g.slot_size;
  o.capacity = g.capacity;
  o.policy = g.policy;
  o.max_subscribers = g.max_subscribers;
  o.max_publishers = g.max_publishers;
  o.max_groups = g.max_groups;
  o.max_consumers = g.max_consumers;
  o.unblock_timeout_ns = g.unblock_timeout_ns;
  o.eviction_timeout_ns = g.eviction_timeout_ns;
  o.timestamps = g.timestamps;
  o.archive_dir = g.archive_dir;
  return o;
}

namespace {

// Writes every creation parameter and derived offset, then publishes the
// header: layout_version and magic, then init_state = ready with release.
void initialise(ChannelHeader* h, const Geometry& g, std::string_view name) {
  const shm::ProcessId me = shm::self_process();
  shm::store_relaxed(h->init_owner, shm::pack_process(me));  // who made it (informational)
  h->abi_fingerprint = abi_fingerprint();
  h->epoch = shm::random_u64();
  h->created_realtime_ns = shm::realtime_ns();
  h->creator_pid = me.pid;
  h->policy = static_cast<std::uint32_t>(g.policy);
  h->slot_size = g.slot_size;
  h->capacity = g.capacity;
  h->max_subscribers = g.max_subscribers;
  h->max_publishers = g.max_publishers;
  h->max_groups = g.max_groups;
  h->max_consumers = g.max_consumers;
  h->group_stride = g.group_stride;
  h->max_payload = g.max_payload;
  h->total_size = g.total_size;
  h->producer_offset = g.producer_offset;
  h->publishers_offset = g.publishers_offset;
  h->subscribers_offset = g.subscribers_offset;
  h->groups_offset = g.groups_offset;
  h->timestamps = static_cast<std::uint32_t>(g.timestamps);
  h->data_offset = g.data_offset;
  h->unblock_timeout_ns = g.unblock_timeout_ns;
  h->eviction_timeout_ns = g.eviction_timeout_ns;
  std::memset(h->name, 0, sizeof h->name);
  std::memcpy(h->name, name.data(), std::min(name.size(), sizeof h->name - 1));
  std::memset(h->archive_dir, 0, sizeof h->archive_dir);
  std::memcpy(h->archive_dir, g.archive_dir.data(), std::min(g.archive_dir.size(), sizeof h->archive_dir - 1));
  shm::store_relaxed(h->layout_version, kLayoutVersion);  // ordered by the release below
  shm::store_relaxed(h->magic, kMagic);                   // ordered by the release below
  // SYNC(init): release, pairs with the acquire of init_state in channel_init_state.
  shm::store_release(h->init_state, static_cast<std::uint32_t>(kInitReady));
}

}  // namespace

Result<std::string> resolve_archive_dir(std::string_view requested, std::string_view bus, std::string_view channel) {
  std::filesystem::path p;
  if (!requested.empty()) {
    p = std::filesystem::path(std::string(requested));
  } else if (const char* env = std::getenv("SHMBUS_ARCHIVE_DIR"); env != nullptr && *env != '\0') {
    p = std::filesystem::path(env) / std::string(bus) / std::string(channel);
  } else {
    return std::string();
  }
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(p, ec);
  if (ec) return invalid("archive_dir '" + p.string() + "' cannot be made absolute: " + ec.message());
  std::string s = abs.lexically_normal().string();
  if (s.size() > 1 && s.back() == '/') s.pop_back();
  if (s.size() > kArchiveDirMax || s.find('\0') != std::string::npos) {
    return invalid("archive_dir '" + s.substr(0, 64) + "...' must be at most " + num(kArchiveDirMax) +
                   " bytes, with no NUL");
  }
  return s;
}

Result<void> validate_name(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > kNameMax) {
    return invalid(std::string(what) + " name '" + std::string(name) + "' must be 1.." + num(kNameMax) + " characters");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return invalid(std::string(what) + " name '" + std::string(name) +
                     "' may hold only letters, digits, '_' and '-'");
    }
  }
  return {};
}

std::string segment_name(std::string_view bus, std::string_view channel) {
  return "shmbus." + std::string(bus) + "." + std::string(channel);
}

std::string read_name(const NameWords& n) {
  char buf[64];
  for (std::size_t i = 0; i < 8; ++i) {
    // relaxed: the caller acquired the entry's control word first.
    const std::uint64_t w = n.w[i].load(std::memory_order_relaxed);
    std::memcpy(buf + 8 * i, &w, 8);
  }
  buf[63] = '\0';
  return std::string(buf, strnlen(buf, sizeof buf));
}

void write_name(NameWords& n, std::string_view s) {
  char buf[64] = {};
  std::memcpy(buf, s.data(), std::min<std::size_t>(s.size(), 63));
  for (std::size_t i = 0; i < 8; ++i) {
    std::uint64_t w;
    std::memcpy(&w, buf + 8 * i, 8);
    // relaxed: published by the release store of the entry's control word.
    n.w[i].store(w, std::memory_order_relaxed);
  }
}

Result<Geometry> compute_geometry(const ChannelOptions& o) {
  if (o.slot_size < 64 || o.slot_size > kMaxSlotSize || o.slot_size % 64 != 0) {
    return invalid("slot_size " + num(o.slot_size) + " must be a multiple of 64 in 64.." + num(kMaxSlotSize));
  }
  if (!is_pow2(o.capacity) || o.capacity < 2 || o.capacity > kMaxCapacity) {
    return invalid("capacity " + num(o.capacity) + " must be a power of two in 2.." + num(kMaxCapacity));
  }
  if (o.policy != Policy::block && o.policy != Policy::drop_oldest && o.policy != Policy::reject) {
    return invalid("policy " + num(static_cast<std::uint32_t>(o.policy)) + " is not a policy");
  }
  if (o.max_subscribers < 1 || o.max_subscribers > kMaxTableEntries) {
    return invalid("max_subscribers " + num(o.max_subscribers) + " must be in 1.." + num(kMaxTableEntries));
  }
  if (o.max_publishers < 1 || o.max_publishers > kMaxTableEntries) {
    return invalid("max_publishers " + num(o.max_publishers) + " must be in 1.." + num(kMaxTableEntries));
  }
  if (o.max_groups > 256) {
    return invalid("max_groups " + num(o.max_groups) + " must be in 0..256");
  }
  if (o.max_consumers < 1 || o.max_consumers > kMaxConsumers) {
    return invalid("max_consumers " + num(o.max_consumers) + " must be in 1.." + num(kMaxConsumers));
  }
  if (o.unblock_timeout_ns < 1000) {
    return invalid("unblock_timeout_ns " + num(o.unblock_timeout_ns) + " must be at least 1000");
  }
  if (o.eviction_timeout_ns != 0 && o.policy != Policy::block) {
    return invalid("eviction_timeout_ns applies to the block policy only (policy " + std::string(to_string(o.policy)) +
                   ")");
  }
  if (o.timestamps != TimestampSource::realtime && o.timestamps != TimestampSource::tsc &&
      o.timestamps != TimestampSource::none) {
    return invalid("timestamps " + num(static_cast<std::uint32_t>(o.timestamps)) +
                   " is not a timestamp source (tsc, realtime, none)");
  }
  if (o.mode > 0777) return invalid("mode " + num(o.mode) + " is not a permission mask (<= 0777)");
  Geometry g;
  g.policy = o.policy;
  g.slot_size = o.slot_size;
  g.capacity = o.capacity;
  g.max_subscribers = o.max_subscribers;
  g.max_publishers = o.max_publishers;
  g.max_groups = o.max_groups;
  g.max_consumers = o.max_consumers;
  g.max_payload = o.slot_size - kSlotHeaderSize;
  g.unblock_timeout_ns = o.unblock_timeout_ns;
  g.eviction_timeout_ns = o.eviction_timeout_ns;
  g.timestamps = o.timestamps;
  if (o.archive_dir.size() > kArchiveDirMax || o.archive_dir.find('\0') != std::string::npos) {
    return invalid("archive_dir '" + o.archive_dir.substr(0, 64) + "...' must be at most " + num(kArchiveDirMax) +
                   " bytes, with no NUL");
  }
  g.archive_dir = o.archive_dir;
  g.producer_offset = kHeaderPage;
  g.publishers_offset = g.producer_offset + sizeof(ProducerBlock);
  g.subscribers_offset = round_up(g.publishers_offset + sizeof(PublisherEntry) * g.max_publishers, kHotSlot);
  g.groups_offset = round_up(g.subscribers_offset + sizeof(SubscriberEntry) * g.max_subscribers, kHotSlot);
  g.group_stride = round_up(sizeof(GroupEntry) + sizeof(ConsumerEntry) * g.max_consumers, kHotSlot) +
                   round_up(8ULL * g.capacity, kHotSlot);
  g.data_offset = round_up(g.groups_offset + g.group_stride * g.max_groups, shm::page_size());
  g.total_size = g.data_offset + static_cast<std::uint64_t>(g.capacity) * g.slot_size;
  if (g.total_size > kMaxTotalSize) {
    return invalid("capacity x slot_size = " + num(g.total_size) + " bytes is too large (limit " + num(kMaxTotalSize) +
                   ")");
  }
  return g;
}

Result<Geometry> validate_header(const ChannelHeader& h, std::size_t segment_size, const std::string& channel) {
  auto bad = [&](const std::string& field, std::uint64_t v, const std::string& why) {
    return Error(ErrorCode::corrupted, "channel '" + channel + "' is corrupted: " + field + " = " + num(v) + " " + why);
  };
  const std::uint64_t magic = shm::load_relaxed(h.magic);
  if (magic != kMagic) return bad("magic", magic, "(not a shmbus channel)");
  const std::uint32_t version = shm::load_relaxed(h.layout_version);
  if (version != kLayoutVersion) {
    return Error(ErrorCode::version_mismatch, "channel '" + channel + "' has layout version " + num(version) +
                                                  "; this library reads version " + num(kLayoutVersion));
  }
  if (h.abi_fingerprint != abi_fingerprint()) {
    return Error(ErrorCode::version_mismatch, "channel '" + channel +
                                                  "' was made by a build with another ABI fingerprint (" +
                                                  num(h.abi_fingerprint) + " vs " + num(abi_fingerprint()) + ")");
  }
  ChannelOptions o;
  o.slot_size = h.slot_size;
  o.capacity = h.capacity;
  o.policy = static_cast<Policy>(h.policy);
  o.max_subscribers = h.max_subscribers;
  o.max_publishers = h.max_publishers;
  o.max_groups = h.max_groups;
  o.max_consumers = h.max_consumers;
  o.unblock_timeout_ns = h.unblock_timeout_ns;
  o.eviction_timeout_ns = h.eviction_timeout_ns;
  o.timestamps = static_cast<TimestampSource>(h.timestamps);
  // The archive directory: a NUL-terminated path within its field (a
  // hostile header gets no further than this check).
  const std::size_t dir_len = strnlen(h.archive_dir, sizeof h.archive_dir);
  if (dir_len == sizeof h.archive_dir) {
    return Error(ErrorCode::corrupted, "channel '" + channel + "' is corrupted: archive_dir is not NUL-terminated");
  }
  o.archive_dir.assign(h.archive_dir, dir_len);
  auto g = compute_geometry(o);
  if (!g) return Error(ErrorCode::corrupted, "channel '" + channel + "' is corrupted: " + g.error().message());
  const Geometry& e = g.value();
  struct Field {
    const char* name;
    std::uint64_t got, want;
  };
  const Field fields[] = {
      {"group_stride", h.group_stride, e.group_stride},
      {"max_payload", h.max_payload, e.max_payload},
      {"total_size", h.total_size, e.total_size},
      {"producer_offset", h.producer_offset, e.producer_offset},
      {"publishers_offset", h.publishers_offset, e.publishers_offset},
      {"subscribers_offset", h.subscribers_offset, e.subscribers_offset},
      {"groups_offset", h.groups_offset, e.groups_offset},
      {"data_offset", h.data_offset, e.data_offset},
  };
  for (const Field& f : fields) {
    if (f.got != f.want) return bad(f.name, f.got, "(expected " + num(f.want) + ")");
  }
  if (e.total_size > segment_size) {
    return bad("total_size", e.total_size, "exceeds the segment's size " + num(segment_size));
  }
  return g;
}

Result<std::byte*> ChannelState::writable_data() {
  std::lock_guard<std::mutex> lock(rw_mu_);
  if (!data_rw_.valid()) {
    if (mode_ == MapMode::observer) {
      return Error(ErrorCode::permission_denied, "channel '" + name + "' was opened read-only; it cannot publish");
    }
    auto m = segment.map(geo.data_offset, geo.total_size - geo.data_offset, shm::Access::read_write, true);
    if (!m) return m.error();
    data_rw_ = std::move(m.value());
    // release: pairs with the acquire in cas_stamp, which then uses the view.
    rw_base_.store(data_rw_.data(), std::memory_order_release);
  }
  return data_rw_.data();
}

bool ChannelState::cas_stamp(std::uint64_t seq, std::uint64_t expected, std::uint64_t desired) noexcept {
  const std::uint64_t offset = (seq & (geo.capacity - 1)) * static_cast<std::uint64_t>(geo.slot_size);
  // acquire: pairs with the release in writable_data (the mapping is complete).
  if (std::byte* rw = rw_base_.load(std::memory_order_acquire)) {
    auto& stamp = reinterpret_cast<SlotHeader*>(rw + offset)->stamp;
    return shm::cas_acq_rel(stamp, expected, desired);
  }
  if (mode_ == MapMode::observer) return false;
  // A pure reader keeps its data mapping read-only: map the stamp's page
  // read-write for this one CAS (a recovery step, after at least a
  // millisecond of stall), then drop it. The page is shared with every view
  // of the file, so the CAS is seen through them all.
  try {
    const std::uint64_t page = shm::page_size();
    const std::uint64_t at = geo.data_offset + offset;
    auto m = segment.map(at / page * page, page, shm::Access::read_write, false);
    if (!m) return false;
    auto& stamp = reinterpret_cast<SlotHeader*>(m->data() + at % page)->stamp;
    return shm::cas_acq_rel(stamp, expected, desired);
  } catch (...) {  // an allocation failure while reporting a failed map
    return false;
  }
}

Result<std::shared_ptr<ChannelState>> attach(shm::Segment seg, const std::string& bus, const std::string& name,
                                             const Geometry& g, MapMode mode) {
  auto st = std::make_shared<ChannelState>();
  st->bus = bus;
  st->name = name;
  st->geo = g;
  st->mode_ = mode;
  const auto control_access = mode == MapMode::observer ? shm::Access::read_only : shm::Access::read_write;
  // Pre-fault every page now: the hot path must never take a page fault.
  auto ctl = seg.map(0, g.data_offset, control_access, true);
  if (!ctl) return ctl.error();
  auto data = seg.map(g.data_offset, g.total_size - g.data_offset, shm::Access::read_only, true);
  if (!data) return data.error();
  st->control = std::move(ctl.value());
  st->data_ro = std::move(data.value());
  std::byte* base = st->control.data();
  st->header = reinterpret_cast<ChannelHeader*>(base);
  st->producer = reinterpret_cast<ProducerBlock*>(base + g.producer_offset);
  st->publishers = reinterpret_cast<PublisherEntry*>(base + g.publishers_offset);
  st->subscribers = reinterpret_cast<SubscriberEntry*>(base + g.subscribers_offset);
  st->data = st->data_ro.data();
  st->segment = std::move(seg);
  // Readers convert counter stamps: calibrate now (about 1 ms, once per
  // process) rather than inside the first poll that meets one.
  if (g.timestamps == TimestampSource::tsc) shm::tsc_calibrate();
  return st;
}

namespace {

std::uint64_t channel_init_state(const ChannelHeader& h) noexcept {
  // SYNC(init): acquire, pairs with the release of init_state in initialise
  // (and the link that follows it: a named channel is always initialised).
  return shm::load_acquire(h.init_state);
}

// The channel's steps for the shared open and create (bus/common/segment_open.hpp).
constexpr SegmentSteps<ChannelHeader, Geometry> kChannelSteps{
    {"channel", kHeaderPage, kInitReady, "a channel header",
     "it was not made by this version of shmbus: remove it with 'shmbus rm'",
     "a named channel is always initialised, so it is not re-initialised: remove it with 'shmbus rm'",
     offsetof(ChannelHeader, removed), kChannelLost},
    &channel_init_state,
    &validate_header,
    &initialise};

}  // namespace

Result<std::shared_ptr<ChannelState>> create_channel(std::string_view bus, std::string_view name,
                                                     const ChannelOptions& opts, const shm::Trust& trust) {
  if (auto r = validate_name("bus", bus); !r) return r.error();
  if (auto r = validate_name("channel", name); !r) return r.error();
  ChannelOptions resolved = opts;
  auto dir = resolve_archive_dir(opts.archive_dir, bus, name);
  if (!dir) return dir.error();
  resolved.archive_dir = std::move(dir.value());
  auto g = compute_geometry(resolved);
  if (!g) return g.error();
  // Made, sized and initialised without a name; linked only when complete.
  // A creator killed at any point before the link leaves nothing behind; one
  // killed after it leaves a complete channel.
  // A channel with an archive continues it (archive/restore.hpp) before the
  // link, so that nobody sees it half restored. A name already taken skips
  // the archive's reads (open_or_create of a live channel); the link decides.
  const std::string seg_name = segment_name(bus, name);
  auto seg = create_segment(kChannelSteps, name, seg_name, g.value(), opts.mode, [&](shm::Segment& s) -> Result<void> {
    if (!g->archive_dir.empty() && shm::Segment::in_use(seg_name).ok()) {
      return Error(ErrorCode::already_exists, "taken");
    }
    auto r = archive::restore_channel(s, g.value(), name);
    if (!r) return r.error();
    return {};
  });
  if (!seg) {
    if (seg.error().code() == ErrorCode::already_exists) {
      return Error(ErrorCode::already_exists,
                   "channel '" + std::string(name) + "' already exists on bus '" + std::string(bus) + "'");
    }
    return seg.error();
  }
  auto st = attach(std::move(seg.value()), std::string(bus), std::string(name), g.value(), MapMode::participant);
  if (st) st.value()->trust = trust;
  return st;
}

namespace {

Result<void> check_expected(const Geometry& g, const ChannelOptions& want, std::string_view name) {
  const ChannelOptions have = options_of(g);
  const SettingCheck checks[] = {
      {"slot_size", have.slot_size, want.slot_size},
      {"capacity", have.capacity, want.capacity},
      {"policy", static_cast<std::uint64_t>(have.policy), static_cast<std::uint64_t>(want.policy)},
      {"max_subscribers", have.max_subscribers, want.max_subscribers},
      {"max_publishers", have.max_publishers, want.max_publishers},
      {"max_groups", have.max_groups, want.max_groups},
      {"max_consumers", have.max_consumers, want.max_consumers},
      {"unblock_timeout_ns", have.unblock_timeout_ns, want.unblock_timeout_ns},
      {"eviction_timeout_ns", have.eviction_timeout_ns, want.eviction_timeout_ns},
      {"timestamps", static_cast<std::uint64_t>(have.timestamps), static_cast<std::uint64_t>(want.timestamps)},
  };
  // The archive directory, when the caller names one (resolved as a create
  // would resolve it): an existing channel's archive is found through the
  // channel, so an empty request accepts any.
  if (!want.archive_dir.empty()) {
    auto dir = resolve_archive_dir(want.archive_dir, "", name);
    if (!dir) return dir.error();
    if (dir.value() != have.archive_dir) {
      return Error(ErrorCode::parameter_mismatch, "channel '" + std::string(name) + "' has archive_dir '" +
                                                      have.archive_dir + "', not '" + dir.value() + "'");
    }
  }
  // The policy and the timestamp source by name; every other setting as a number.
  const SettingFormatter show = [](std::string_view field, std::uint64_t v) {
    if (field == "policy") return std::string(to_string(static_cast<Policy>(v)));
    if (field == "timestamps") return std::string(to_string(static_cast<TimestampSource>(v)));
    return num(v);
  };
  return check_settings("channel '" + std::string(name) + "'", checks, show);
}

Result<std::shared_ptr<ChannelState>> open_impl(std::string_view bus, std::string_view name, const OpenOptions& opts) {
  if (auto r = validate_name("bus", bus); !r) return r.error();
  if (auto r = validate_name("channel", name); !r) return r.error();
  const auto access = opts.mode == MapMode::observer ? shm::Access::read_only : shm::Access::read_write;
  auto o = open_segment(kChannelSteps, name, segment_name(bus, name), access, opts.trust, opts.open_wait_ns);
  if (!o) {
    if (o.error().code() == ErrorCode::not_found) {
      return Error(ErrorCode::not_found,
                   "channel '" + std::string(name) + "' does not exist on bus '" + std::string(bus) + "'");
    }
    return o.error();
  }
  if (opts.expect) {
    if (auto r = check_expected(o->geo, *opts.expect, name); !r) return r.error();
  }
  auto st = attach(std::move(o->segment), std::string(bus), std::string(name), o->geo, opts.mode);
  if (st) st.value()->trust = opts.trust;
  return st;
}

}  // namespace

Result<std::shared_ptr<ChannelState>> open_channel(std::string_view bus, std::string_view name,
                                                   const OpenOptions& opts) {
  return open_impl(bus, name, opts);
}

Result<std::shared_ptr<ChannelState>> open_or_create_channel(std::string_view bus, std::string_view name,
                                                             const ChannelOptions& opts, const shm::Trust& trust) {
  OpenOptions o;
  o.expect = opts;
  o.trust = trust;
  return create_or_open(
      kChannelSteps.kind, name, [&] { return create_channel(bus, name, opts, trust); },
      [&] { return open_impl(bus, name, o); });
}

namespace {

Error no_channel(std::string_view bus, std::string_view name) {
  return Error(ErrorCode::not_found,
               "channel '" + std::string(name) + "' does not exist on bus '" + std::string(bus) + "'");
}

}  // namespace

Result<void> remove_channel(std::string_view bus, std::string_view name) {
  if (auto r = validate_name("bus", bus); !r) return r.error();
  if (auto r = validate_name("channel", name); !r) return r.error();
  const std::string seg_name = segment_name(bus, name);
  // Tell the handles that still map it, before the name goes. Best effort:
  // a name that is not a channel (a FIFO, another version, a file we may
  // not write) is removed all the same, and handles of a channel whose mark
  // we could not write still notice the unlink (check_removed).
  if (auto seg = shm::Segment::open(seg_name, shm::Access::read_write, {}, 0)) {
    auto sz = seg->size();
    if (sz && sz.value() >= kHeaderPage) {
      if (auto m = seg->map(0, kHeaderPage, shm::Access::read_write, false)) {
        auto* h = reinterpret_cast<ChannelHeader*>(m->data());
        if (shm::load_relaxed(h->magic) == kMagic) {
          // SYNC(removed): release; handles read it relaxed (a flag, no data).
          shm::store_release(h->removed, static_cast<std::uint64_t>(kChannelRemoved));
        }
      }
    }
  }
  auto r = shm::Segment::remove(seg_name);
  if (!r && r.error().code() == ErrorCode::not_found) return no_channel(bus, name);
  return r;
}

namespace {

// Runs a segment-level lock probe (remove_if_unused, in_use) on a
// channel's segment, with the names checked and not_found worded for a
// channel.
Result<bool> probe_segment(std::string_view bus, std::string_view name, Result<bool> (*probe)(const std::string&)) {
  if (auto r = validate_name("bus", bus); !r) return r.error();
  if (auto r = validate_name("channel", name); !r) return r.error();
  auto r = probe(segment_name(bus, name));
  if (!r && r.error().code() == ErrorCode::not_found) return no_channel(bus, name);
  return r;
}

}  // namespace

Result<bool> remove_channel_if_unused(std::string_view bus, std::string_view name) {
  return probe_segment(bus, name, &shm::Segment::remove_if_unused);
}

Result<bool> channel_in_use(std::string_view bus, std::string_view name) {
  return probe_segment(bus, name, &shm::Segment::in_use);
}

Result<void> ChannelState::require_live() {
  const std::uint64_t r = check_removed();
  if (r == kChannelLive) return {};
  if (r == kChannelLost) {
    return Error(ErrorCode::corrupted, "channel '" + name + "' on bus '" + bus +
                                           "': its segment shrank under this process (another "
                                           "process truncated it); its messages are gone");
  }
  return Error(ErrorCode::not_found, "channel '" + name + "' on bus '" + bus + "' was removed; open it again by name");
}

std::uint64_t ChannelState::check_removed() noexcept {
  const std::uint64_t h = removed_fast();
  if (h != kChannelLive) return h;
  const std::uint64_t local = local_removed_.load(std::memory_order_relaxed);  // relaxed: a flag
  if (local != kChannelLive) return local;
  if (segment.lost()) {
    local_removed_.store(kChannelLost, std::memory_order_relaxed);
    return kChannelLost;
  }
  if (!segment.unlinked()) return kChannelLive;
  local_removed_.store(kChannelRemoved, std::memory_order_relaxed);
  if (mode_ == MapMode::participant) {
    std::uint64_t live = kChannelLive;
    // Tell every other handle too. SYNC(removed): release CAS; never
    // overwrites kChannelLost in a private replacement page.
    (void)header->removed.compare_exchange_strong(live, kChannelRemoved, std::memory_order_release,
                                                  std::memory_order_relaxed);
  }
  return kChannelRemoved;
}

}  // namespace shmbus::bus
