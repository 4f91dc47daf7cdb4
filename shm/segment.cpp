#include "shm/segment.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/clock.hpp"
#include "shm/fault_guard.hpp"

namespace shmbus::shm {

namespace {

constexpr const char* kShmDir = "/dev/shm";
std::string path_of(const std::string& name) { return std::string(kShmDir) + "/" + name; }

std::string mode_string(std::uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

const char* kind_of(mode_t m) {
  if (S_ISREG(m)) return "";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISLNK(m)) return "symlink";
  if (S_ISDIR(m)) return "directory";
  if (S_ISSOCK(m)) return "socket";
  return "device";
}

Result<void> check_name(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return Error(ErrorCode::invalid_argument, "segment name '" + name + "' is empty or has '/'");
  }
  return {};
}

// An errno from opening, creating or removing `name`, as an Error.
Error errno_error(int err, const std::string& what, const std::string& name) {
  ErrorCode code = ErrorCode::system;
  std::string detail = std::strerror(err);
  switch (err) {
    case EEXIST: code = ErrorCode::already_exists; break;
    case ENOENT: code = ErrorCode::not_found; break;
    case EACCES:
    case EPERM: {
      code = ErrorCode::permission_denied;
      struct stat st {};
      if (::lstat(path_of(name).c_str(), &st) == 0) {
        detail += " (" + path_of(name) + ": owner uid " + std::to_string(st.st_uid) + ", mode " +
                  mode_string(st.st_mode) + ")";
      }
      break;
    }
    case ELOOP:
      code = ErrorCode::invalid_argument;
      detail = path_of(name) + " is a symbolic link; shmbus follows none";
      break;
    case ENOSPC:
    case ENOMEM: code = ErrorCode::no_space; break;
    case EINVAL:
    case ENAMETOOLONG: code = ErrorCode::invalid_argument; break;
    default: break;
  }
  return Error(code, what + " shared-memory segment '" + name + "': " + detail, err);
}

bool trusted(const struct stat& st, const Trust& trust) {
  const uid_t me = ::geteuid();
  if (st.st_uid == me || st.st_uid == 0) return true;
  if (std::find(trust.uids.begin(), trust.uids.end(), st.st_uid) != trust.uids.end()) return true;
  return std::find(trust.gids.begin(), trust.gids.end(), st.st_gid) != trust.gids.end();
}

// Takes a shared flock on fd, waiting (bounded) while somebody holds it
// exclusively. false with errno set on failure.
bool lock_shared(int fd, std::uint64_t wait_ns) {
  const std::uint64_t now = monotonic_ns();
  const std::uint64_t deadline = deadline_after(now, wait_ns);
  std::uint64_t pause = 10'000;
  for (;;) {
    if (::flock(fd, LOCK_SH | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK && errno != EINTR) return false;
    if (monotonic_ns() >= deadline) {
      errno = EWOULDBLOCK;
      return false;
    }
    sleep_ns(pause);
    pause = std::min<std::uint64_t>(pause * 2, 10'000'000);
  }
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return ps;
}

// --- Mapping -----------------------------------------------------------------

Mapping::Mapping() = default;

Mapping::Mapping(Mapping&& o) noexcept
    : data_(o.data_), size_(o.size_), access_(o.access_), guard_slot_(o.guard_slot_) {
  o.data_ = nullptr;
  o.size_ = 0;
  o.guard_slot_ = -1;
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    size_ = o.size_;
    access_ = o.access_;
    guard_slot_ = o.guard_slot_;
    o.data_ = nullptr;
    o.size_ = 0;
    o.guard_slot_ = -1;
  }
  return *this;
}

Mapping::~Mapping() { reset(); }

void Mapping::reset() noexcept {
  if (data_ == nullptr) return;
  fault_guard::unregister_mapping(guard_slot_);  // before the range can be reused
  (void)::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  guard_slot_ = -1;
}

// --- Segment -----------------------------------------------------------------

Segment::Segment() = default;

Segment::Segment(Segment&& o) noexcept
    : fd_(o.fd_),
      named_(o.named_),
      key_(o.key_),
      marker_offset_(o.marker_offset_),
      marker_value_(o.marker_value_),
      name_(std::move(o.name_)),
      access_(o.access_) {
  o.fd_ = -1;
}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    named_ = o.named_;
    key_ = o.key_;
    marker_offset_ = o.marker_offset_;
    marker_value_ = o.marker_value_;
    name_ = std::move(o.name_);
    access_ = o.access_;
    o.fd_ = -1;
  }
  return *this;
}

Segment::~Segment() { close(); }

void Segment::close() noexcept {
  if (fd_ >= 0) ::close(fd_);  // drops the shared flock too
  fd_ = -1;
}

Result<Segment> Segment::create_unnamed(const std::string& name, std::size_t size, std::uint32_t mode) {
  if (auto r = check_name(name); !r) return r.error();
  Segment seg;
  seg.name_ = name;
  seg.access_ = Access::read_write;
  seg.key_ = fault_guard::new_key();
  seg.fd_ = ::open(kShmDir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (seg.fd_ < 0) return errno_error(errno, "cannot create", name);
  // fchmod: the umask narrowed the mode given to open.
  if (::fchmod(seg.fd_, mode & 0777) != 0) return errno_error(errno, "cannot set the mode of", name);
  // posix_fallocate both sizes the file and reserves its pages, so a full
  // /dev/shm fails now (ENOSPC) rather than with SIGBUS on first touch.
  const int rc = ::posix_fallocate(seg.fd_, 0, static_cast<off_t>(size));
  if (rc != 0) {
    const ErrorCode code = (rc == ENOSPC || rc == ENOMEM || rc == EFBIG) ? ErrorCode::no_space : ErrorCode::system;
    return Error(code,
                 "cannot reserve " + std::to_string(size) + " bytes for shared-memory segment '" + name +
                     "' in /dev/shm: " + std::strerror(rc),
                 rc);
  }
  // Shared from the start: once linked, the segment is in use by its creator.
  if (::flock(seg.fd_, LOCK_SH) != 0) return errno_error(errno, "cannot lock", name);
  return seg;
}

Result<void> Segment::link() {
  if (fd_ < 0 || named_) {
    return Error(ErrorCode::invalid_argument, "segment '" + name_ + "' is not an unnamed segment");
  }
  const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
  const std::string path = path_of(name_);
  // Through /proc (needs no privilege); AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
  if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    const int err = errno;
    if (err != ENOENT || ::linkat(fd_, "", AT_FDCWD, path.c_str(), AT_EMPTY_PATH) != 0) {
      return errno_error(err == ENOENT ? errno : err, "cannot name", name_);
    }
  }
  named_ = true;
  return {};
}

Result<Segment> Segment::create(const std::string& name, std::size_t size, std::uint32_t mode) {
  auto seg = create_unnamed(name, size, mode);
  if (!seg) return seg;
  if (auto r = seg->link(); !r) return r.error();
  return seg;
}

Result<Segment> Segment::open(const std::string& name, Access access, const Trust& trust, std::uint64_t lock_wait_ns) {
  if (auto r = check_name(name); !r) return r.error();
  const std::string path = path_of(name);
  const char* what = access == Access::read_write ? "cannot open (read-write)" : "cannot open (read-only)";
  for (int attempt = 0;; ++attempt) {
    Segment seg;
    seg.name_ = name;
    seg.access_ = access;
    seg.named_ = true;
    seg.key_ = fault_guard::new_key();
    // O_NOFOLLOW: no symlink; O_NONBLOCK: a FIFO or device does not block the open.
    const int flags =
        (access == Access::read_write ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
    seg.fd_ = ::open(path.c_str(), flags);
    if (seg.fd_ < 0) return errno_error(errno, what, name);
    struct stat st {};
    if (::fstat(seg.fd_, &st) != 0) return errno_error(errno, "cannot stat", name);
    if (!S_ISREG(st.st_mode)) {
      return Error(ErrorCode::invalid_argument, std::string(what) + " shared-memory segment '" + name + "': " + path +
                                                    " is a " + kind_of(st.st_mode) +
                                                    ", not a regular file; remove it (shmbus rm --force)");
    }
    if (access == Access::read_write && !trusted(st, trust)) {
      return Error(ErrorCode::permission_denied,
                   std::string(what) + " shared-memory segment '" + name + "': " + path + " is owned by uid " +
                       std::to_string(st.st_uid) + " (gid " + std::to_string(st.st_gid) + ", mode " +
                       mode_string(st.st_mode) + "), not by this process's uid " + std::to_string(::geteuid()) +
                       " or root; trust that owner explicitly to use it",
                   EPERM);
    }
    if (::fcntl(seg.fd_, F_SETFL, ::fcntl(seg.fd_, F_GETFL) & ~O_NONBLOCK) != 0) {
      return errno_error(errno, what, name);
    }
    if (!lock_shared(seg.fd_, lock_wait_ns)) {
      const int err = errno;
      if (err == EWOULDBLOCK) {
        return Error(
            ErrorCode::busy,
            std::string(what) + " shared-memory segment '" + name + "': another process holds it locked exclusively",
            err);
      }
      return errno_error(err, "cannot lock", name);
    }
    // A remover may have unlinked the name while we waited for the lock:
    // this fd is then the old segment. Open the name again.
    if (::fstat(seg.fd_, &st) != 0) return errno_error(errno, "cannot stat", name);
    if (st.st_nlink == 0 && attempt < 8) continue;
    if (st.st_nlink == 0) return errno_error(ENOENT, what, name);
    return seg;
  }
}

Result<void> Segment::remove(const std::string& name) {
  if (auto r = check_name(name); !r) return r.error();
  if (::unlink(path_of(name).c_str()) != 0) return errno_error(errno, "cannot remove", name);
  return {};
}

namespace {

// Opens `name` (never following a link, never blocking on a FIFO) and tries
// an exclusive flock. Returns the fd, locked exclusively (nobody else has
// the segment open), or -1 with `in_use` set when somebody holds a lock.
Result<int> open_exclusive(const std::string& name, bool& in_use) {
  const int fd = ::open(path_of(name).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return errno_error(errno, "cannot open", name);
  in_use = false;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err != EWOULDBLOCK) return errno_error(err, "cannot lock", name);
    in_use = true;
    return -1;
  }
  return fd;
}

}  // namespace

Result<bool> Segment::remove_if_unused(const std::string& name) {
  if (auto r = check_name(name); !r) return r.error();
  bool used = false;
  auto fd = open_exclusive(name, used);
  if (!fd) return fd.error();
  if (used) return false;
  // Nobody has it open, and nobody can take a shared lock until we close:
  // an opener that got the fd meanwhile finds the link count 0 and retries.
  struct stat by_fd {
  }, by_path{};
  const bool same = ::fstat(fd.value(), &by_fd) == 0 && ::lstat(path_of(name).c_str(), &by_path) == 0 &&
                    by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev;
  Result<bool> out = false;
  if (same) {
    if (::unlink(path_of(name).c_str()) == 0) {
      out = true;
    } else {
      out = errno_error(errno, "cannot remove", name);
    }
  }
  ::close(fd.value());
  return out;
}

Result<bool> Segment::in_use(const std::string& name) {
  if (auto r = check_name(name); !r) return r.error();
  bool used = false;
  auto fd = open_exclusive(name, used);
  if (!fd) return fd.error();
  if (!used) ::close(fd.value());  // drops the lock
  return used;
}

Result<std::vector<SegmentInfo>> Segment::list(std::string_view prefix) {
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) {
    const int err = errno;
    return Error(ErrorCode::system, std::string("cannot list ") + kShmDir + ": " + std::strerror(err), err);
  }
  std::vector<SegmentInfo> out;
  while (const dirent* ent = ::readdir(dir)) {
    const std::string_view n(ent->d_name);
    if (n == "." || n == ".." || n.substr(0, prefix.size()) != prefix) continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    out.push_back({std::string(n), static_cast<std::uint64_t>(st.st_size),
                   static_cast<std::uint32_t>(st.st_mode & 07777), static_cast<std::uint32_t>(st.st_uid),
                   kind_of(st.st_mode)});
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

namespace {

// fstat of an open segment; errors name it.
Result<struct stat> stat_segment(int fd, const std::string& name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return Error(ErrorCode::system, "cannot stat shared-memory segment '" + name + "': " + std::strerror(err), err);
  }
  return st;
}

}  // namespace

Result<std::size_t> Segment::size() const {
  auto st = stat_segment(fd_, name_);
  if (!st) return st.error();
  return static_cast<std::size_t>(st.value().st_size);
}

Result<std::uint32_t> Segment::mode() const {
  auto st = stat_segment(fd_, name_);
  if (!st) return st.error();
  return static_cast<std::uint32_t>(st.value().st_mode & 07777);
}

bool Segment::unlinked() const noexcept {
  struct stat st {};
  return named_ && fd_ >= 0 && ::fstat(fd_, &st) == 0 && st.st_nlink == 0;
}

bool Segment::lost() const noexcept { return fault_guard::lost(key_); }

void Segment::set_lost_marker(std::size_t offset, std::uint64_t value) noexcept {
  marker_offset_ = offset;
  marker_value_ = value;
}

Result<Mapping> Segment::map(std::size_t offset, std::size_t length, Access access, bool populate) const {
  if (offset % page_size() != 0 || length == 0) {
    return Error(ErrorCode::invalid_argument, "cannot map segment '" + name_ + "': offset " + std::to_string(offset) +
                                                  " is not page-aligned or length is 0");
  }
  if (access == Access::read_write && access_ != Access::read_write) {
    return Error(ErrorCode::permission_denied,
                 "cannot map segment '" + name_ + "' read-write: it was opened read-only");
  }
  if (fd_ < 0) return Error(ErrorCode::invalid_argument, "segment '" + name_ + "' is not open");
  const int prot = access == Access::read_write ? PROT_READ | PROT_WRITE : PROT_READ;
  const int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, length, prot, flags, fd_, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return errno_error(errno, "cannot map", name_);
  Mapping m;
  m.data_ = static_cast<std::byte*>(p);
  m.size_ = length;
  m.access_ = access;
  const std::uint64_t marker =
      marker_offset_ != UINT64_MAX && marker_offset_ >= offset && marker_offset_ - offset < length
          ? marker_offset_ - offset
          : UINT64_MAX;
  m.guard_slot_ = fault_guard::register_mapping(p, length, key_, access == Access::read_write, marker, marker_value_);
  return m;
}

}  // namespace shmbus::shm
