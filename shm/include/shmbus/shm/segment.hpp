// Named POSIX shared-memory segments (Boost.Interprocess underneath).
//
// A Segment is an open handle to /dev/shm/<name>; a Mapping is one view of a
// byte range of it. Create is exclusive (O_EXCL) and reserves the whole size
// up front with posix_fallocate, so a full /dev/shm fails here with no_space
// instead of raising SIGBUS on first touch later. A failed create removes the
// half-made segment. This layer knows nothing about what the bytes mean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <shmbus/shm/result.hpp>

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
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  Access access_ = Access::read_only;
};

/// Information about one segment found by Segment::list.
struct SegmentInfo {
  std::string name;    ///< name without the leading '/'
  std::uint64_t size;  ///< bytes
  std::uint32_t mode;  ///< permission bits
  std::uint32_t uid;   ///< owner uid
};

/// An open named shared-memory object. Movable; closes its fd on destruction
/// (the segment itself stays until remove()). Not thread-safe: one caller at a
/// time per handle (mappings it made are independent of it).
class Segment {
 public:
  Segment();
  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  /// Creates `name` exclusively with permission bits `mode` (umask is not
  /// applied) and reserves `size` bytes. Fails with already_exists,
  /// permission_denied, no_space (nothing left behind) or system.
  static Result<Segment> create(const std::string& name, std::size_t size, std::uint32_t mode);

  /// Opens an existing segment. not_found / permission_denied name the
  /// segment (and its mode, when it can be read).
  static Result<Segment> open(const std::string& name, Access access);

  /// Removes the name; existing mappings stay valid. not_found if absent.
  static Result<void> remove(const std::string& name);

  /// Segments in /dev/shm whose names start with prefix, sorted by name.
  static Result<std::vector<SegmentInfo>> list(std::string_view prefix);

  /// Current size in bytes (fstat): a creator may not have sized it yet.
  [[nodiscard]] Result<std::size_t> size() const;

  /// Permission bits (fstat), as given at create or changed since.
  [[nodiscard]] Result<std::uint32_t> mode() const;

  /// Maps [offset, offset + length); offset must be page-aligned. With
  /// `populate` every page is faulted in now (MAP_POPULATE) so the hot path
  /// never takes a page fault.
  [[nodiscard]] Result<Mapping> map(std::size_t offset, std::size_t length, Access access,
                                    bool populate) const;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] Access access() const noexcept { return access_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
  Access access_ = Access::read_only;
};

/// The system page size. Thread-safe.
std::size_t page_size() noexcept;

}  // namespace shmbus::shm
