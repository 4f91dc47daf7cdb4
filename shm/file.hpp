// Plain files and directories: the OS calls of the archive (open, pread,
// write, ftruncate, fdatasync, flock, directory listing), behind Result<>.
//
// Every error names the path (and the offset where one applies) and carries
// errno's text and value. errno maps to a code: ENOSPC and EDQUOT are
// no_space, EACCES, EPERM and EROFS permission_denied, ENOENT not_found,
// anything else system. None of this is thread-safe on one File; distinct
// Files are independent.
#pragma once

#include "shm/result.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace shmbus::shm {

/// An error from a system call on `path` that failed with `err`, as
/// "<what> '<path>'[ at offset <offset>]: <strerror(err)>", errno mapped to
/// a code as described above. `offset` UINT64_MAX means none.
Error file_error(const std::string& what, const std::string& path, int err, std::uint64_t offset = UINT64_MAX);

/// An open file descriptor and the path it was opened by (for messages).
/// Move-only; the destructor closes it, ignoring errors (close() reports
/// them).
class File {
 public:
  File() = default;
  File(File&& o) noexcept;
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  /// Opens an existing file for reading.
  static Result<File> open_read(const std::string& path);

  /// Opens an existing file for reading and appending (O_RDWR | O_APPEND).
  static Result<File> open_append(const std::string& path);

  /// Creates a file that must not exist yet (O_CREAT | O_EXCL, mode 0644
  /// less the umask), open for reading and appending. EEXIST is an error.
  static Result<File> create_new(const std::string& path);

  /// Whether a descriptor is held.
  [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }

  /// The path the file was opened by.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  /// The file's size now (fstat).
  Result<std::uint64_t> size() const;

  /// Reads up to `n` bytes at `offset` into `buf`, retrying EINTR and short
  /// reads: fewer than `n` only at the end of the file.
  Result<std::size_t> pread(std::byte* buf, std::size_t n, std::uint64_t offset) const;

  /// Writes all of `bytes` at the file's position (its end when appending),
  /// retrying EINTR and short writes. A write that makes no progress is EIO.
  Result<void> write_all(std::span<const std::byte> bytes);

  /// Cuts (or extends with zeros) the file to `n` bytes (ftruncate).
  Result<void> truncate(std::uint64_t n);

  /// fdatasync: the data written so far reaches the disk.
  Result<void> datasync();

  /// Asks the kernel to start writing bytes [offset, offset + n) back to
  /// the disk, without waiting for it (sync_file_range with
  /// SYNC_FILE_RANGE_WRITE): later writes overlap the disk's work, and a
  /// later datasync() has less left. Advisory: it makes nothing durable, and
  /// an error here comes back from the next datasync(); false when the call
  /// failed (unsupported by the filesystem, or an I/O error already known).
  bool start_writeback(std::uint64_t offset, std::uint64_t n) noexcept;

  /// Closes the descriptor and reports the error of close(2). The File is
  /// closed afterwards either way. Closing a closed File does nothing.
  Result<void> close();

 private:
  File(int fd, std::string path) noexcept : fd_(fd), path_(std::move(path)) {}
  static Result<File> open_flags(const std::string& path, int flags, const char* what);
  void reset() noexcept;

  friend Result<File> lock_directory(const std::string& dir);

  int fd_ = -1;
  std::string path_;
};

/// Opens directory `dir` and takes an exclusive flock on it without waiting
/// (LOCK_EX | LOCK_NB). The lock lasts as long as the returned File stays
/// open; the kernel drops it when the process dies. busy if another open
/// file description holds it.
Result<File> lock_directory(const std::string& dir);

/// fsync of directory `dir`, so that names created or removed in it last.
Result<void> sync_directory(const std::string& dir);

/// Creates `dir` and any missing parents (mode 0777 less the umask). A
/// directory that exists already is fine.
Result<void> create_directories(const std::string& dir);

/// Whether `path` names a directory (following symbolic links). false when
/// it cannot be examined.
bool is_directory(const std::string& path) noexcept;

/// The names of the entries of `dir`, without "." and "..", unsorted.
Result<std::vector<std::string>> list_directory(const std::string& dir);

/// `dir` and `name` joined by one '/' (`name` alone when `dir` is empty).
std::string join_path(const std::string& dir, const std::string& name);

/// Removes file `path`. One that does not exist is not an error.
Result<void> remove_file(const std::string& path);

/// Renames `from` to `to` in one step (rename(2)): a `to` that exists is
/// replaced atomically, so a reader sees the old file or the new one, never
/// a mix. Both must be on one file system (e.g. in one directory); call
/// sync_directory afterwards to make the new name last.
Result<void> rename_file(const std::string& from, const std::string& to);

/// Reads the whole of file `path` (at most `max_bytes`: a larger file is
/// invalid_argument naming its size). not_found if it does not exist.
Result<std::vector<std::byte>> read_file(const std::string& path, std::uint64_t max_bytes);

/// The size of file `path` (stat).
Result<std::uint64_t> file_size(const std::string& path);

}  // namespace shmbus::shm
