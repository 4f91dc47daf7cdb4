// What the probe shows of a channel's archive: its segment files and the
// archiver's entry (ChannelStats::archive). Reads only: never opens the
// archive for writing, never moves a cursor.
#pragma once

#include <shmbus/stats.hpp>

#include <cstdint>
#include <optional>

namespace shmbus::bus::archive {

/// Fills the directory part of `out` (present, files, bytes, first and end
/// sequence) from out.dir. `known_end`: the archive's end when the caller
/// knows it (a live archiver's cursor: what it has archived and
/// acknowledged); otherwise the newest file is read to its last whole
/// record. A directory that cannot be read sets out.error and nothing else.
/// Thread-safe.
void describe_archive_dir(ArchiveStats& out, std::optional<std::uint64_t> known_end);

}  // namespace shmbus::bus::archive
