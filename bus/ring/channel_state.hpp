// A mapped, validated channel: the segment, its mappings and typed pointers
// into them. Shared (std::shared_ptr) by every handle of one process that
// uses the channel, so the mappings outlive the last Publisher/Subscriber.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bus/common/types.hpp"
#include "bus/ring/layout.hpp"
#include "shm/result.hpp"
#include "shm/segment.hpp"

namespace shmbus::bus {

namespace archive {
class ArchiveSource;
}

/// The geometry of a channel, derived from its options or read (and checked)
/// from a header. Everything a handle needs to address the segment.
struct Geometry {
  Policy policy = Policy::block;
  std::uint32_t slot_size = 0;
  std::uint32_t capacity = 0;
  std::uint32_t max_subscribers = 0;
  std::uint32_t max_publishers = 0;
  std::uint32_t max_groups = 0;
  std::uint32_t max_consumers = 0;  ///< per group
  std::uint64_t group_stride = 0;   ///< bytes per group block (entry, consumers, leases)
  std::uint32_t max_payload = 0;
  std::uint64_t producer_offset = 0;
  std::uint64_t publishers_offset = 0;
  std::uint64_t subscribers_offset = 0;
  std::uint64_t groups_offset = 0;
  std::uint64_t data_offset = 0;
  std::uint64_t total_size = 0;
  std::uint64_t unblock_timeout_ns = 0;
  std::uint64_t eviction_timeout_ns = 0;
  TimestampSource timestamps = TimestampSource::tsc;
  std::string archive_dir;  ///< absolute, or empty: no archive
};

/// The creation options a geometry came from (mode excluded).
ChannelOptions options_of(const Geometry& g);

/// Checks options and lays the segment out. invalid_argument names the field.
/// opts.archive_dir is taken as given (see resolve_archive_dir).
Result<Geometry> compute_geometry(const ChannelOptions& opts);

/// The archive directory a new channel records: `requested` made absolute, or
/// if empty `$SHMBUS_ARCHIVE_DIR/<bus>/<channel>` when that variable is set,
/// else "" (no archive). invalid_argument if the result exceeds
/// kArchiveDirMax bytes or holds a NUL. Thread-safe (reads the environment).
Result<std::string> resolve_archive_dir(std::string_view requested, std::string_view bus, std::string_view channel);

/// Checks every field of a header against the limits and against the size of
/// the segment; never trusts a value it has not checked. corrupted or
/// version_mismatch errors name the field and its value.
Result<Geometry> validate_header(const ChannelHeader& hdr, std::size_t segment_size, const std::string& channel);

/// Valid bus/channel/subscriber names: 1..63 of [A-Za-z0-9_-].
Result<void> validate_name(std::string_view what, std::string_view name);

/// The shared-memory object name of a channel: "shmbus.<bus>.<channel>".
std::string segment_name(std::string_view bus, std::string_view channel);

/// How a process maps a channel.
enum class MapMode : std::uint8_t {
  participant,  ///< control area read-write, payloads read-only (publishers add a writable view)
  observer,     ///< everything read-only (the probe)
};

struct OpenOptions {
  /// Bounded wait while another process holds the segment exclusively (a
  /// remover, for the instant of its unlink). A create is never seen half
  /// done: it is linked under its name only once initialised.
  std::uint64_t open_wait_ns = 2'000'000'000ULL;
  /// Owners whose segments a participant open accepts besides its own uid and
  /// root (observers read any owner's segment).
  shm::Trust trust;
  /// If set, the segment's parameters must equal these (error names both).
  std::optional<ChannelOptions> expect;
  MapMode mode = MapMode::participant;
};

class ChannelState {
 public:
  std::string bus;
  std::string name;
  Geometry geo;
  shm::Segment segment;
  shm::Mapping control;  // header .. group blocks
  shm::Mapping data_ro;  // slots, read-only
  ChannelHeader* header = nullptr;
  ProducerBlock* producer = nullptr;
  PublisherEntry* publishers = nullptr;
  SubscriberEntry* subscribers = nullptr;

  /// Group block i (i < geo.max_groups): its entry, consumers and leases.
  [[nodiscard]] GroupEntry* group(std::uint32_t i) const noexcept {
    return reinterpret_cast<GroupEntry*>(control.data() + geo.groups_offset + i * geo.group_stride);
  }
  [[nodiscard]] ConsumerEntry* consumers(std::uint32_t i) const noexcept {
    return reinterpret_cast<ConsumerEntry*>(reinterpret_cast<std::byte*>(group(i)) + sizeof(GroupEntry));
  }
  [[nodiscard]] std::atomic<std::uint64_t>* leases(std::uint32_t i) const noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<std::byte*>(group(i)) + geo.group_stride -
                                                         8ULL * geo.capacity);
  }
  const std::byte* data = nullptr;

  /// The writable view of the slots, mapped on first use by a publisher.
  /// Thread-safe.
  Result<std::byte*> writable_data();

  /// The header of the slot holding sequence `seq`, in the read-only view.
  [[nodiscard]] const SlotHeader* slot(std::uint64_t seq) const noexcept {
    return reinterpret_cast<const SlotHeader*>(data +
                                               (seq & (geo.capacity - 1)) * static_cast<std::uint64_t>(geo.slot_size));
  }

  /// A reader's one write to the data area: CAS the stamp of the slot holding
  /// `seq` from `expected` to `desired` (acq_rel), to abandon a stalled claim.
  /// Uses the writable view if this process has one (it publishes), else maps
  /// the one page holding the stamp read-write for the CAS and unmaps it, so
  /// that a pure reader's data mapping stays read-only. False if the CAS
  /// failed or no writable page could be mapped (an observer). Makes system
  /// calls: for recovery paths only. Thread-safe.
  bool cas_stamp(std::uint64_t seq, std::uint64_t expected, std::uint64_t desired) noexcept;

  [[nodiscard]] bool read_only() const noexcept { return mode_ == MapMode::observer; }
  /// permission_denied ("channel '<name>' is open read-only") for an observer
  /// mapping: the check every call that writes the control area makes first.
  [[nodiscard]] Result<void> require_writable() const;

  /// The header's RemovedState as last written (kChannelLive while usable).
  /// One relaxed load of a read-mostly line: for hot paths. Thread-safe.
  [[nodiscard]] std::uint64_t removed_fast() const noexcept {
    // relaxed: a flag that carries no data; a late observation only delays
    // the report by one call.
    return header->removed.load(std::memory_order_relaxed);
  }

  /// The slow check: the header's word, then whether the segment's name is
  /// gone (fstat; e.g. unlinked by hand), which it then records in the header
  /// (participants) or locally (observers). A system call: call it when
  /// idle, not per message. Thread-safe.
  std::uint64_t check_removed() noexcept;

  /// check_removed as a setup-path error: not_found ("was removed") or
  /// corrupted ("its segment shrank"). For making new handles.
  Result<void> require_live();

  /// Owners trusted when this channel was opened (its DLQs are opened alike).
  shm::Trust trust;

  /// Channel::peek's reader of the archive (bus/ring/peek.cpp), opened at
  /// the first peek older than the ring and kept for the next (sequential
  /// peeks then cost no seek); used under archive_peek_mu.
  mutable std::mutex archive_peek_mu;
  mutable std::shared_ptr<archive::ArchiveSource> archive_peek;

 private:
  friend Result<std::shared_ptr<ChannelState>> attach(shm::Segment, const std::string&, const std::string&,
                                                      const Geometry&, MapMode);
  MapMode mode_ = MapMode::participant;
  std::atomic<std::uint64_t> local_removed_{kChannelLive};
  std::mutex rw_mu_;
  shm::Mapping data_rw_;
  std::atomic<std::byte*> rw_base_{nullptr};  ///< data_rw_'s base once mapped
};

/// What a handle reports once removed_fast()/check_removed() is not
/// kChannelLive (any other value read from a corrupted header: removed).
inline PollStatus poll_status_of_removed(std::uint64_t removed) noexcept {
  return removed == kChannelLost ? PollStatus::segment_lost : PollStatus::removed;
}
inline PublishStatus publish_status_of_removed(std::uint64_t removed) noexcept {
  return removed == kChannelLost ? PublishStatus::segment_lost : PublishStatus::removed;
}

/// Creates a channel exclusively: made and initialised unnamed, then linked
/// under its name (already_exists if taken), so nobody ever sees it half made.
Result<std::shared_ptr<ChannelState>> create_channel(std::string_view bus, std::string_view name,
                                                     const ChannelOptions& opts, const shm::Trust& trust = {});

/// Opens an existing channel, waiting (bounded) for its initialisation.
Result<std::shared_ptr<ChannelState>> open_channel(std::string_view bus, std::string_view name,
                                                   const OpenOptions& opts);

/// Opens the channel if it exists (checking its parameters), else creates it.
Result<std::shared_ptr<ChannelState>> open_or_create_channel(std::string_view bus, std::string_view name,
                                                             const ChannelOptions& opts, const shm::Trust& trust = {});

/// Marks the channel removed in its header (live handles report `removed`
/// from then on), then removes its name. Also removes a name that is not a
/// channel (a FIFO, a file of another version).
Result<void> remove_channel(std::string_view bus, std::string_view name);

/// Removes the channel only if no process has it open (by any handle, with
/// or without a table entry): false if one does.
Result<bool> remove_channel_if_unused(std::string_view bus, std::string_view name);

/// Whether some process has the channel open. Thread-safe.
Result<bool> channel_in_use(std::string_view bus, std::string_view name);

/// Reads a NameWords field into a string (stops at the first NUL).
std::string read_name(const NameWords& n);
/// Writes a name (<= 63 chars) into a NameWords field, NUL padded.
void write_name(NameWords& n, std::string_view s);

}  // namespace shmbus::bus
