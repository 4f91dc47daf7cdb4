// A tiny tmpfs for full-disk tests: mounted in a user and mount namespace of
// the calling process's own, so no privilege is needed. Call it in a forked
// child: the namespaces are the child's for the rest of its life.
#pragma once

#include <string>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

namespace shmbus::test {

inline bool write_text_file(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

/// Mounts a tmpfs of `bytes` on `dir` in new user and mount namespaces.
/// False where the kernel or the sandbox does not allow it (the caller then
/// reports the check as not exercised).
inline bool mount_tiny_tmpfs(const std::string& dir, std::size_t bytes) {
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
  if (!write_text_file("/proc/self/setgroups", "deny")) return false;
  if (!write_text_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1")) return false;
  if (!write_text_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) return false;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  const std::string opts = "size=" + std::to_string(bytes);
  return ::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) == 0;
}

}  // namespace shmbus::test
