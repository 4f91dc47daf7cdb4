// Opening and creating a named segment of any kind (a channel, a dedup
// table), one way for all of them:
//
// - create: made unnamed, sized, its header written by the kind, and only
//   then linked under its name, so a named segment is always whole (a
//   creator killed at any point leaves nothing behind, or a complete one);
// - open: opened by name; a segment smaller than a header, a header the kind
//   refuses, or one whose init_state is not ready is `corrupted`: refused,
//   never re-initialised (nothing made by create can look like that);
// - create_or_open: create, else open the one that is there, and start over
//   if it was removed in between.
//
// Each kind passes in what differs (SegmentSteps): its header type, how to
// read, validate and initialise it, and the words of its errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "shm/result.hpp"
#include "shm/segment.hpp"
#include "shm/trust.hpp"

namespace shmbus::bus {

/// No lost marker (SegmentKind::lost_offset).
inline constexpr std::size_t kNoLostMarker = SIZE_MAX;

/// What the shared steps need to know of one kind of segment, besides its
/// header type: sizes, the ready value, and the words of its errors.
struct SegmentKind {
  const char* noun;              ///< "channel": errors say "channel '<name>' ..."
  std::size_t header_size;       ///< bytes of the header, mapped at offset 0
  std::uint64_t init_ready;      ///< init_state of an initialised header
  const char* header_noun;       ///< "a channel header": "... smaller than <header_noun> (<size>)"
  const char* too_small_advice;  ///< the end of that error: what to do with the segment
  const char* not_ready_advice;  ///< the end of the init_state error
  /// The word the fault guard writes into the header, should the segment's
  /// pages be lost (Segment::set_lost_marker); kNoLostMarker: none.
  std::size_t lost_offset = kNoLostMarker;
  std::uint64_t lost_value = 0;
};

/// "channel 'orders'": how errors name one segment of `kind`.
std::string subject_of(const SegmentKind& kind, std::string_view name);

/// `corrupted` naming the size unless a segment of `size` bytes holds a
/// whole header of `kind`.
Result<void> check_header_fits(const SegmentKind& kind, std::string_view name, std::size_t size);

/// `corrupted` naming init_state unless it is `kind.init_ready`. A segment is
/// named only once initialised, so there is nothing to wait for: any other
/// value was written by something else, and the segment is not
/// re-initialised over.
Result<void> check_initialised(const SegmentKind& kind, std::string_view name, std::uint64_t init_state);

/// A segment opened by name, with its header mapped read-only.
struct HeaderView {
  shm::Segment segment;
  shm::Mapping header;   ///< the first kind.header_size bytes
  std::size_t size = 0;  ///< the segment's size when opened
};

/// Opens segment `seg_name` (Segment::open's errors as they are, not_found
/// included), sets the kind's lost marker, and maps its header read-only once
/// check_header_fits passes.
Result<HeaderView> open_header(const SegmentKind& kind, std::string_view name, const std::string& seg_name,
                               shm::Access access, const shm::Trust& trust, std::uint64_t lock_wait_ns);

/// The kind-specific steps for header type H and the geometry G it
/// describes (G has a `total_size`, the segment's size).
template <class H, class G>
struct SegmentSteps {
  SegmentKind kind;
  /// init_state, read with acquire: the kind's SYNC(init) pairing with the
  /// release that ends `initialise`.
  std::uint64_t (*init_state)(const H& header) noexcept;
  /// Checks every header field of a segment of `segment_size` bytes named
  /// `name`; the geometry it describes.
  Result<G> (*validate)(const H& header, std::size_t segment_size, const std::string& name);
  /// Writes the header of a new segment; its last store is init_state =
  /// ready, with release.
  void (*initialise)(H* header, const G& geometry, std::string_view name);
};

/// An existing segment, its header checked.
template <class G>
struct OpenedSegment {
  shm::Segment segment;
  G geo;  ///< as validated from the header
};

/// Opens an existing segment of this kind: open_header, then init_state
/// (acquire), the kind's validation, check_initialised, in that order (a
/// foreign or damaged header is named by its first bad field).
template <class H, class G>
Result<OpenedSegment<G>> open_segment(const SegmentSteps<H, G>& steps, std::string_view name,
                                      const std::string& seg_name, shm::Access access, const shm::Trust& trust,
                                      std::uint64_t lock_wait_ns) {
  auto view = open_header(steps.kind, name, seg_name, access, trust, lock_wait_ns);
  if (!view) return view.error();
  const H& h = *reinterpret_cast<const H*>(view->header.data());
  const std::uint64_t init = steps.init_state(h);
  auto g = steps.validate(h, view->size, std::string(name));
  if (!g) return g.error();
  if (auto r = check_initialised(steps.kind, name, init); !r) return r.error();
  return OpenedSegment<G>{std::move(view->segment), std::move(g.value())};
}

/// Makes segment `seg_name` of `geo.total_size` bytes with permission bits
/// `mode`, has the kind initialise its header, then runs `prepare(segment)`
/// (a Result<void>: the kind's contents beyond the header, e.g. a channel
/// continuing its archive), and only then links it under its name:
/// already_exists (the new segment dropped) if the name is taken. An error of
/// `prepare` drops the segment unnamed: nobody ever sees a half-made one.
template <class H, class G, class Prepare>
Result<shm::Segment> create_segment(const SegmentSteps<H, G>& steps, std::string_view name, const std::string& seg_name,
                                    const G& geo, std::uint32_t mode, Prepare&& prepare) {
  auto seg = shm::Segment::create_unnamed(seg_name, geo.total_size, mode);
  if (!seg) return seg.error();
  if (steps.kind.lost_offset != kNoLostMarker) seg->set_lost_marker(steps.kind.lost_offset, steps.kind.lost_value);
  {
    auto hdr_map = seg->map(0, steps.kind.header_size, shm::Access::read_write, true);
    if (!hdr_map) return hdr_map.error();
    steps.initialise(reinterpret_cast<H*>(hdr_map->data()), geo, name);
  }
  if (Result<void> r = prepare(seg.value()); !r) return r.error();
  if (auto r = seg->link(); !r) return r.error();
  return seg;
}

/// create_segment with nothing to prepare beyond the header.
template <class H, class G>
Result<shm::Segment> create_segment(const SegmentSteps<H, G>& steps, std::string_view name, const std::string& seg_name,
                                    const G& geo, std::uint32_t mode) {
  return create_segment(steps, name, seg_name, geo, mode, [](shm::Segment&) { return Result<void>{}; });
}

/// How many times create_or_open starts over when a segment vanishes
/// between the create that found its name taken and the open.
inline constexpr int kCreateOrOpenAttempts = 8;

/// `busy`: "<subject> keeps appearing and disappearing; giving up".
Error keeps_vanishing(const SegmentKind& kind, std::string_view name);

/// Creates a segment or opens the one already there: `create()` and `open()`
/// both return the same Result<T>. Create's already_exists leads to open;
/// open's not_found (removed in between) to another try; any other outcome
/// of either is the answer.
template <class Create, class Open>
auto create_or_open(const SegmentKind& kind, std::string_view name, Create&& create, Open&& open)
    -> decltype(create()) {
  for (int attempt = 0; attempt < kCreateOrOpenAttempts; ++attempt) {
    auto c = create();
    if (c || c.error().code() != ErrorCode::already_exists) return c;
    auto o = open();
    if (o || o.error().code() != ErrorCode::not_found) return o;
    // Removed between our create and open: try again.
  }
  return keeps_vanishing(kind, name);
}

}  // namespace shmbus::bus
