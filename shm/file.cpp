// Plain files and directories. See file.hpp.
#include "shm/file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace shmbus::shm {

Error file_error(const std::string& what, const std::string& path, int err, std::uint64_t offset) {
  ErrorCode code = ErrorCode::system;
  if (err == ENOSPC || err == EDQUOT) code = ErrorCode::no_space;
  if (err == EACCES || err == EPERM || err == EROFS) code = ErrorCode::permission_denied;
  if (err == ENOENT) code = ErrorCode::not_found;
  std::string msg = what + " '" + path + "'";
  if (offset != UINT64_MAX) msg += " at offset " + std::to_string(offset);
  msg += ": " + std::string(std::strerror(err));
  return Error(code, std::move(msg), err);
}

// --- File ---------------------------------------------------------------------------

File::File(File&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
  }
  return *this;
}

File::~File() { reset(); }

void File::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<File> File::open_flags(const std::string& path, int flags, const char* what) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return file_error(what, path, errno);
  return File(fd, path);
}

Result<File> File::open_read(const std::string& path) { return open_flags(path, O_RDONLY, "cannot open"); }

Result<File> File::open_append(const std::string& path) {
  return open_flags(path, O_RDWR | O_APPEND, "cannot open for appending");
}

Result<File> File::create_new(const std::string& path) {
  return open_flags(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL, "cannot create");
}

Result<std::uint64_t> File::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return file_error("cannot stat", path_, errno);
  return static_cast<std::uint64_t>(st.st_size);
}

Result<std::size_t> File::pread(std::byte* buf, std::size_t n, std::uint64_t offset) const {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd_, buf + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return file_error("cannot read", path_, errno, offset + got);
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

Result<void> File::write_all(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return file_error("cannot write", path_, errno);
    if (n == 0) return file_error("cannot write", path_, EIO);  // no progress and no errno: do not spin
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

Result<void> File::truncate(std::uint64_t n) {
  if (::ftruncate(fd_, static_cast<off_t>(n)) != 0) return file_error("cannot truncate", path_, errno, n);
  return {};
}

bool File::start_writeback(std::uint64_t offset, std::uint64_t n) noexcept {
  return ::sync_file_range(fd_, static_cast<off64_t>(offset), static_cast<off64_t>(n), SYNC_FILE_RANGE_WRITE) == 0;
}

Result<void> File::datasync() {
  if (::fdatasync(fd_) != 0) return file_error("fdatasync of", path_, errno);
  return {};
}

Result<void> File::close() {
  if (fd_ < 0) return {};
  if (::close(std::exchange(fd_, -1)) != 0) return file_error("close of", path_, errno);
  return {};
}

// --- directories --------------------------------------------------------------------

Result<File> lock_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return file_error("cannot open directory", dir, errno);
  File f(fd, dir);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Error(ErrorCode::busy, "directory '" + dir + "' is locked (flock)", errno);
    return file_error("cannot lock directory", dir, errno);
  }
  return f;
}

Result<void> sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return file_error("cannot open directory", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return file_error("fsync of directory", dir, err);
  return {};
}

Result<void> create_directories(const std::string& dir) {
  // Each prefix ending before a '/' (and the whole path), parents first.
  for (std::size_t end = 1; end <= dir.size(); ++end) {
    if (end < dir.size() && dir[end] != '/') continue;
    if (dir[end - 1] == '/') continue;  // "a//b" or a trailing '/': the prefix was done
    const std::string prefix = dir.substr(0, end);
    if (::mkdir(prefix.c_str(), 0777) == 0) continue;
    const int err = errno;
    if (err == EEXIST && is_directory(prefix)) continue;
    return file_error("cannot create directory", prefix, err == EEXIST ? ENOTDIR : err);
  }
  return {};
}

bool is_directory(const std::string& path) noexcept {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Result<std::vector<std::string>> list_directory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return file_error("cannot list directory", dir, errno);
  std::vector<std::string> out;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) break;
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return file_error("cannot list directory", dir, err);
  return out;
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

Result<void> remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return file_error("cannot remove", path, errno);
  return {};
}

Result<void> rename_file(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return file_error("cannot rename", from + "' to '" + to, errno);
  return {};
}

Result<std::vector<std::byte>> read_file(const std::string& path, std::uint64_t max_bytes) {
  auto f = File::open_read(path);
  if (!f) return f.error();
  auto size = f->size();
  if (!size) return size.error();
  if (*size > max_bytes) {
    return Error(ErrorCode::invalid_argument, "file '" + path + "' holds " + std::to_string(*size) +
                                                  " bytes, more than the " + std::to_string(max_bytes) + " expected");
  }
  std::vector<std::byte> out(static_cast<std::size_t>(*size));
  auto got = f->pread(out.data(), out.size(), 0);
  if (!got) return got.error();
  out.resize(*got);  // a file that shrank meanwhile: what was there
  return out;
}

Result<std::uint64_t> file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return file_error("cannot stat", path, errno);
  if (S_ISDIR(st.st_mode)) return file_error("cannot stat", path, EISDIR);
  return static_cast<std::uint64_t>(st.st_size);
}

}  // namespace shmbus::shm
