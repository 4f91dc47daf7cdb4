// Named shared-memory segments: files in /dev/shm, opened and mapped with
// plain system calls.
//
// A Segment is an open handle to /dev/shm/<name>; a Mapping is one view of a
// byte range of it. This layer knows nothing about what the bytes mean, but
// it defends the processes that map them against the file itself:
//
// - Create never shows a half-made segment: the file is made unnamed
//   (O_TMPFILE), sized with posix_fallocate (a full /dev/shm fails now with
//   no_space, not with SIGBUS later), filled in by the caller, and only then
//   linked under its name (linkat fails if the name exists). A creator killed
//   at any instruction leaves nothing behind.
// - Open follows no symbolic link, blocks on no FIFO or device (O_NONBLOCK),
//   refuses anything but a regular file, and — for read-write opens — a file
//   owned by a uid the caller does not trust (Trust).
// - Every open handle holds a shared flock on its file until it is closed
//   (or its process dies), so remove_if_unused can tell that somebody still
//   has the segment open, whether or not they registered in any table.
// - A file shrunk under its mappings (ftruncate by another process) would
//   kill every process touching the lost pages with SIGBUS. A process-wide
//   SIGBUS handler (fault_guard.hpp) turns such a fault on a mapping of ours
//   into private zero pages for every mapping of that segment, plus an
//   optional marker word, so the caller sees the loss as a value and not as
//   a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shm/result.hpp"
#include "shm/trust.hpp"

namespace shmbus::shm {

enum class Access : std::uint8_t { read_only, read_write };

/// One mapped view of a segment. Movable, unmaps on destruction.
class Mapping {
 public:
  Mapping();
  Mapping(Mapping&&) noexcept;
  Mapping& operator=(Mapping&&) noexcept;
  ~Mapping();

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] Access access() const noexcept { return access_; }
  [[nodiscard]] bool valid() const noexcept { return data_ != nullptr; }

 private:
  friend class Segment;
  void reset() noexcept;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  Access access_ = Access::read_only;
  int guard_slot_ = -1;  ///< fault_guard registration, -1 if none
};

/// Information about one entry found by Segment::list.
struct SegmentInfo {
  std::string name;    ///< name without the leading '/'
  std::uint64_t size;  ///< bytes
  std::uint32_t mode;  ///< permission bits
  std::uint32_t uid;   ///< owner uid
  /// "" for a regular file; otherwise what it is ("fifo", "symlink",
  /// "directory", "socket", "device"): never a segment, and never opened.
  std::string kind;
};

/// An open named shared-memory object. Movable; closes its fd (and so drops
/// its shared flock) on destruction (the segment itself stays until
/// remove()). Not thread-safe: one caller at a time per handle (mappings it
/// made are independent of it).
class Segment {
 public:
  Segment();
  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  /// Makes an unnamed segment of `size` bytes (all reserved now) that will
  /// be called `name` once link() succeeds; permission bits `mode` (umask is
  /// not applied). Fails with permission_denied, no_space or system. Nothing
  /// is visible under `name` until link().
  static Result<Segment> create_unnamed(const std::string& name, std::size_t size, std::uint32_t mode);

  /// Gives a segment from create_unnamed its name, atomically: fails with
  /// already_exists if the name is taken (the segment stays unnamed).
  Result<void> link();

  /// create_unnamed + link: an exclusive create of an empty segment.
  static Result<Segment> create(const std::string& name, std::size_t size, std::uint32_t mode);

  /// Opens an existing segment. not_found / permission_denied name the
  /// segment; a non-regular file (FIFO, symlink, ...) is refused with
  /// invalid_argument without blocking; a read-write open of a segment owned
  /// by a uid outside `trust` (and not the caller's or root's) is refused with
  /// permission_denied naming the owner, mode and path. Waits up to
  /// lock_wait_ns (then busy) while a remover holds the segment exclusively.
  static Result<Segment> open(const std::string& name, Access access, const Trust& trust = {},
                              std::uint64_t lock_wait_ns = 2'000'000'000ULL);

  /// Removes the name; existing mappings stay valid. not_found if absent.
  /// Works on entries of any file type (a FIFO squatting a name).
  static Result<void> remove(const std::string& name);

  /// Removes the name only if no process has the segment open (no shared
  /// flock held by any handle, in any process). Returns false, removing
  /// nothing, if one does; not_found if absent.
  static Result<bool> remove_if_unused(const std::string& name);

  /// True if some handle (in any process) has the segment open. Thread-safe.
  static Result<bool> in_use(const std::string& name);

  /// Entries in /dev/shm whose names start with prefix, sorted by name;
  /// entries that are not regular files are listed with their kind.
  static Result<std::vector<SegmentInfo>> list(std::string_view prefix);

  /// Current size in bytes (fstat).
  [[nodiscard]] Result<std::size_t> size() const;

  /// Permission bits (fstat), as given at create or changed since.
  [[nodiscard]] Result<std::uint32_t> mode() const;

  /// True once the segment's name no longer refers to this segment (it was
  /// removed, by anyone, in any way: fstat's link count is 0). A system call.
  [[nodiscard]] bool unlinked() const noexcept;

  /// True once a mapping of this segment lost its pages (the file shrank
  /// under it) and was replaced by private zero pages. Async-signal-safe.
  [[nodiscard]] bool lost() const noexcept;

  /// Asks the fault guard, should this segment's pages be lost, to write
  /// `value` as a 64-bit word at segment offset `offset` (8-aligned) into the
  /// private replacement of every mapping made after this call that covers
  /// it. Lets the layer above flag the loss in a word it reads anyway.
  void set_lost_marker(std::size_t offset, std::uint64_t value) noexcept;

  /// Maps [offset, offset + length); offset must be page-aligned. With
  /// `populate` every page is faulted in now (MAP_POPULATE) so the hot path
  /// never takes a page fault.
  [[nodiscard]] Result<Mapping> map(std::size_t offset, std::size_t length, Access access, bool populate) const;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] Access access() const noexcept { return access_; }

 private:
  void close() noexcept;
  int fd_ = -1;
  bool named_ = false;
  std::uint64_t key_ = 0;  ///< process-unique id shared by this segment's mappings
  std::uint64_t marker_offset_ = UINT64_MAX;
  std::uint64_t marker_value_ = 0;
  std::string name_;
  Access access_ = Access::read_only;
};

/// The system page size. Thread-safe.
std::size_t page_size() noexcept;

}  // namespace shmbus::shm
