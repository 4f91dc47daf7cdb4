#include <shmbus/shm/segment.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

namespace bip = boost::interprocess;

namespace shmbus::shm {

namespace {

constexpr const char* kShmDir = "/dev/shm";

std::string mode_string(std::uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

// Permission bits of /dev/shm/<name>, or -1 if it cannot be stat'ed.
long stat_mode(const std::string& name) {
  struct stat st {};
  const std::string path = std::string(kShmDir) + "/" + name;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<long>(st.st_mode & 07777);
}

Error from_exception(const bip::interprocess_exception& e, const std::string& what,
                     const std::string& name) {
  const int err = e.get_native_error();
  ErrorCode code = ErrorCode::system;
  std::string detail = std::strerror(err);
  switch (err) {
    case EEXIST: code = ErrorCode::already_exists; break;
    case ENOENT: code = ErrorCode::not_found; break;
    case EACCES:
    case EPERM: {
      code = ErrorCode::permission_denied;
      const long m = stat_mode(name);
      if (m >= 0) detail += " (segment mode " + mode_string(static_cast<std::uint32_t>(m)) + ")";
      break;
    }
    case ENOSPC:
    case ENOMEM: code = ErrorCode::no_space; break;
    case EINVAL:
    case ENAMETOOLONG: code = ErrorCode::invalid_argument; break;
    default: break;
  }
  return Error(code, what + " shared-memory segment '" + name + "': " + detail, err);
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return ps;
}

// --- Mapping -----------------------------------------------------------------

struct Mapping::Impl {
  bip::mapped_region region;
};

Mapping::Mapping() = default;
Mapping::Mapping(Mapping&&) noexcept = default;
Mapping& Mapping::operator=(Mapping&&) noexcept = default;
Mapping::~Mapping() = default;

// --- Segment -----------------------------------------------------------------

struct Segment::Impl {
  bip::shared_memory_object shm;
};

Segment::Segment() = default;
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

Result<Segment> Segment::create(const std::string& name, std::size_t size, std::uint32_t mode) {
  if (name.empty() || name.find('/') != std::string::npos) {
    return Error(ErrorCode::invalid_argument, "segment name '" + name + "' is empty or has '/'");
  }
  Segment seg;
  seg.name_ = name;
  seg.access_ = Access::read_write;
  seg.impl_ = std::make_unique<Impl>();
  try {
    bip::permissions perm(mode & 0777);  // Boost applies it with fchmod: umask does not narrow it
    seg.impl_->shm = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write, perm);
  } catch (const bip::interprocess_exception& e) {
    return from_exception(e, "cannot create", name);
  }
  // From here on a failure must not leave a half-made segment behind.
  auto fail = [&](ErrorCode code, const std::string& msg, int err) -> Result<Segment> {
    bip::shared_memory_object::remove(name.c_str());
    return Error(code, msg, err);
  };
  const int fd = seg.impl_->shm.get_mapping_handle().handle;
  // posix_fallocate both sizes the object and reserves its pages, so a full
  // /dev/shm fails now (ENOSPC) rather than with SIGBUS on first touch.
  const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (rc != 0) {
    const ErrorCode code = (rc == ENOSPC || rc == ENOMEM || rc == EFBIG) ? ErrorCode::no_space
                                                                         : ErrorCode::system;
    return fail(code,
                "cannot reserve " + std::to_string(size) + " bytes for shared-memory segment '" +
                    name + "' in /dev/shm: " + std::strerror(rc),
                rc);
  }
  return seg;
}

Result<Segment> Segment::open(const std::string& name, Access access) {
  if (name.empty() || name.find('/') != std::string::npos) {
    return Error(ErrorCode::invalid_argument, "segment name '" + name + "' is empty or has '/'");
  }
  Segment seg;
  seg.name_ = name;
  seg.access_ = access;
  seg.impl_ = std::make_unique<Impl>();
  try {
    seg.impl_->shm = bip::shared_memory_object(
        bip::open_only, name.c_str(), access == Access::read_write ? bip::read_write : bip::read_only);
  } catch (const bip::interprocess_exception& e) {
    return from_exception(e, access == Access::read_write ? "cannot open (read-write)"
                                                          : "cannot open (read-only)",
                          name);
  }
  return seg;
}

Result<void> Segment::remove(const std::string& name) {
  const std::string path = "/" + name;
  if (::shm_unlink(path.c_str()) != 0) {
    const int err = errno;
    const ErrorCode code = err == ENOENT                   ? ErrorCode::not_found
                           : (err == EACCES || err == EPERM) ? ErrorCode::permission_denied
                                                             : ErrorCode::system;
    return Error(code, "cannot remove shared-memory segment '" + name + "': " + std::strerror(err),
                 err);
  }
  return {};
}

Result<std::vector<SegmentInfo>> Segment::list(std::string_view prefix) {
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) {
    const int err = errno;
    return Error(ErrorCode::system, std::string("cannot list ") + kShmDir + ": " + std::strerror(err),
                 err);
  }
  std::vector<SegmentInfo> out;
  while (const dirent* ent = ::readdir(dir)) {
    const std::string_view n(ent->d_name);
    if (n == "." || n == ".." || n.substr(0, prefix.size()) != prefix) continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode)) continue;
    out.push_back({std::string(n), static_cast<std::uint64_t>(st.st_size),
                   static_cast<std::uint32_t>(st.st_mode & 07777), static_cast<std::uint32_t>(st.st_uid)});
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
    return Error(ErrorCode::system, "cannot stat shared-memory segment '" + name + "': " +
                                        std::strerror(err), err);
  }
  return st;
}

}  // namespace

Result<std::size_t> Segment::size() const {
  auto st = stat_segment(impl_->shm.get_mapping_handle().handle, name_);
  if (!st) return st.error();
  return static_cast<std::size_t>(st.value().st_size);
}

Result<std::uint32_t> Segment::mode() const {
  auto st = stat_segment(impl_->shm.get_mapping_handle().handle, name_);
  if (!st) return st.error();
  return static_cast<std::uint32_t>(st.value().st_mode & 07777);
}

Result<Mapping> Segment::map(std::size_t offset, std::size_t length, Access access,
                             bool populate) const {
  if (offset % page_size() != 0 || length == 0) {
    return Error(ErrorCode::invalid_argument,
                 "cannot map segment '" + name_ + "': offset " + std::to_string(offset) +
                     " is not page-aligned or length is 0");
  }
  if (access == Access::read_write && access_ != Access::read_write) {
    return Error(ErrorCode::permission_denied,
                 "cannot map segment '" + name_ + "' read-write: it was opened read-only");
  }
  Mapping m;
  m.impl_ = std::make_unique<Mapping::Impl>();
  try {
    const int flags = populate ? MAP_POPULATE : bip::default_map_options;
    m.impl_->region = bip::mapped_region(impl_->shm,
                                         access == Access::read_write ? bip::read_write : bip::read_only,
                                         static_cast<bip::offset_t>(offset), length, nullptr, flags);
  } catch (const bip::interprocess_exception& e) {
    return from_exception(e, "cannot map", name_);
  }
  m.data_ = static_cast<std::byte*>(m.impl_->region.get_address());
  m.size_ = m.impl_->region.get_size();
  m.access_ = access;
  return m;
}

}  // namespace shmbus::shm
