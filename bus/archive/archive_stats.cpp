#include "bus/archive/archive_stats.hpp"

#include "bus/archive/segment.hpp"
#include "shm/file.hpp"

namespace shmbus::bus::archive {

void describe_archive_dir(ArchiveStats& out, std::optional<std::uint64_t> known_end) {
  if (!shm::is_directory(out.dir)) return;  // no archive yet: nothing present, no error
  auto files = list_segment_files(out.dir);
  if (!files.ok()) {
    out.error = files.error().message();
    return;
  }
  if (files->empty()) return;
  out.present = true;
  out.files = files->size();
  for (const SegmentFileInfo& f : *files) out.bytes += f.bytes;
  out.first_sequence = files->front().first_sequence;
  if (known_end) {
    out.end_sequence = *known_end;
    return;
  }
  auto reader = SegmentReader::open(out.dir);
  if (!reader.ok()) {
    out.error = reader.error().message();
    return;
  }
  auto end = reader->end_sequence();
  if (!end.ok()) {
    out.error = end.error().message();
    return;
  }
  out.end_sequence = *end;
}

}  // namespace shmbus::bus::archive
