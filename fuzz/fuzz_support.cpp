#include "fuzz_support.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <unistd.h>

#include <shmbus/dedup.hpp>

#include "api/detail.hpp"

namespace shmbus::fuzz {

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fuzz harness: %s: %s\n", what.c_str(), std::strerror(errno));
  std::abort();
}

ChannelOptions small(Policy policy, std::uint32_t slot_size, std::uint32_t capacity, std::uint32_t subscribers,
                     std::uint32_t publishers, std::uint32_t groups, std::uint32_t consumers) {
  ChannelOptions o;
  o.policy = policy;
  o.slot_size = slot_size;
  o.capacity = capacity;
  o.max_subscribers = subscribers;
  o.max_publishers = publishers;
  o.max_groups = groups;
  o.max_consumers = consumers;
  o.unblock_timeout_ns = 200'000;  // a stuck claim costs 0.2 ms per input, not 2 s
  return o;
}

}  // namespace

volatile std::uint64_t g_sink = 0;

const std::string& fuzz_bus() {
  static const std::string bus = "fz" + std::to_string(::getpid());
  return bus;
}

std::string channel_path(const std::string& channel) { return "/dev/shm/" + bus::segment_name(fuzz_bus(), channel); }

std::string dedup_path(const std::string& table) { return "/dev/shm/shmbus-dedup." + fuzz_bus() + "." + table; }

void write_file(const std::string& path, std::span<const std::uint8_t> bytes) {
  // A new inode each time: a mapping that somehow survived the previous
  // input keeps its old pages instead of seeing these bytes.
  (void)::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) die("cannot create " + path);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("cannot write " + path);
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::vector<std::uint8_t> out;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  std::uint8_t buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

void remove_all_segments() {
  if (auto l = Channel::list(fuzz_bus())) {
    for (const ChannelInfo& c : l.value()) (void)Channel::remove(c.name, fuzz_bus());
  }
  (void)DedupTable::remove(kDedupTable, fuzz_bus());
}

std::span<const ChannelOptions> geometries() {
  static const ChannelOptions kAll[] = {
      small(Policy::block, 64, 4, 2, 2, 1, 2),
      small(Policy::drop_oldest, 128, 8, 2, 2, 1, 2),
      small(Policy::reject, 64, 2, 1, 1, 0, 1),
      [] {
        ChannelOptions o = small(Policy::block, 64, 4, 3, 2, 2, 3);
        o.eviction_timeout_ns = 1000;  // evict at the first full-ring scan that waited 1 us
        return o;
      }(),
  };
  return kAll;
}

std::vector<Region> state_regions(const bus::Geometry& g) {
  return {{g.producer_offset, g.groups_offset + g.group_stride * g.max_groups}, {g.data_offset, g.total_size}};
}

const std::vector<std::uint8_t>& fresh_image(std::size_t index) {
  static std::map<std::size_t, std::vector<std::uint8_t>> cache;
  auto it = cache.find(index);
  if (it != cache.end()) return it->second;
  const std::string name = std::string("fresh") + std::to_string(index);
  (void)Channel::remove(name, fuzz_bus());
  auto c = Channel::create(name, geometries()[index], fuzz_bus());
  if (!c) {
    std::fprintf(stderr, "fuzz harness: cannot create a template channel: %s\n", c.error().message().c_str());
    std::abort();
  }
  std::vector<std::uint8_t> bytes = read_file(channel_path(name));
  (void)Channel::remove(name, fuzz_bus());
  if (bytes.size() != shmbus::detail::state_of(*c)->geo.total_size) die("template channel has the wrong size");
  return cache.emplace(index, std::move(bytes)).first->second;
}

std::string valid_name_or(const char* raw, std::size_t max, const std::string& fallback) {
  const std::string s(raw, strnlen(raw, max));
  return bus::validate_name("name", s) ? s : fallback;
}

}  // namespace shmbus::fuzz
