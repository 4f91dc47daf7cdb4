#include "bus/common/segment_open.hpp"

#include "bus/common/util.hpp"

namespace shmbus::bus {

std::string subject_of(const SegmentKind& kind, std::string_view name) {
  return std::string(kind.noun) + " '" + std::string(name) + "'";
}

Result<void> check_header_fits(const SegmentKind& kind, std::string_view name, std::size_t size) {
  if (size >= kind.header_size) return {};
  // Never made by create (which names a segment only once it is whole):
  // refuse it rather than guess, and never initialise over it.
  return Error(ErrorCode::corrupted, subject_of(kind, name) + " is corrupted: its segment is " + num(size) +
                                         " bytes, smaller than " + kind.header_noun + " (" + num(kind.header_size) +
                                         "); " + kind.too_small_advice);
}

Result<void> check_initialised(const SegmentKind& kind, std::string_view name, std::uint64_t init_state) {
  if (init_state == kind.init_ready) return {};
  return Error(ErrorCode::corrupted, subject_of(kind, name) + " is corrupted: init_state = " + num(init_state) +
                                         " (expected " + num(kind.init_ready) + "); " + kind.not_ready_advice);
}

Result<HeaderView> open_header(const SegmentKind& kind, std::string_view name, const std::string& seg_name,
                               shm::Access access, const shm::Trust& trust, std::uint64_t lock_wait_ns) {
  auto seg = shm::Segment::open(seg_name, access, trust, lock_wait_ns);
  if (!seg) return seg.error();
  if (kind.lost_offset != kNoLostMarker) seg->set_lost_marker(kind.lost_offset, kind.lost_value);
  auto sz = seg->size();
  if (!sz) return sz.error();
  if (auto r = check_header_fits(kind, name, sz.value()); !r) return r.error();
  auto hdr_map = seg->map(0, kind.header_size, shm::Access::read_only, false);
  if (!hdr_map) return hdr_map.error();
  return HeaderView{std::move(seg.value()), std::move(hdr_map.value()), sz.value()};
}

Error keeps_vanishing(const SegmentKind& kind, std::string_view name) {
  return Error(ErrorCode::busy, subject_of(kind, name) + " keeps appearing and disappearing; giving up");
}

}  // namespace shmbus::bus
