// The OS layer's named segments: exclusive create, permissions, reservation,
// mapping read-only, listing and removal.
#include <catch2/catch.hpp>

#include <csetjmp>
#include <csignal>
#include <sys/stat.h>

#include "shm/segment.hpp"

#include "test_support.hpp"

using namespace shmbus;
using namespace shmbus::shm;

namespace {
struct SegName {
  std::string name = "shmbus.shmbustest.seg-" + std::to_string(::getpid());
  SegName() { (void)Segment::remove(name); }
  ~SegName() { (void)Segment::remove(name); }
};

sigjmp_buf g_jump;
void on_segv(int) { siglongjmp(g_jump, 1); }
}  // namespace

TEST_CASE("create is exclusive and reserves the whole size") {
  SegName n;
  auto a = Segment::create(n.name, 1 << 16, 0600);
  REQUIRE(a);
  auto sz = a->size();
  REQUIRE(sz);
  CHECK(sz.value() == (1u << 16));
  auto b = Segment::create(n.name, 1 << 16, 0600);
  REQUIRE_FALSE(b);
  CHECK(b.error().code() == ErrorCode::already_exists);
  CHECK(b.error().message().find(n.name) != std::string::npos);
}

TEST_CASE("a segment is created with mode 0600 unless a mode is given, whatever the umask") {
  SegName n;
  const mode_t old = ::umask(0077);
  auto a = Segment::create(n.name, 4096, 0640);
  ::umask(old);
  REQUIRE(a);
  struct stat st {};
  REQUIRE(::stat(("/dev/shm/" + n.name).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  REQUIRE(Segment::remove(n.name));
  auto b = Segment::create(n.name, 4096, 0600);
  REQUIRE(b);
  REQUIRE(::stat(("/dev/shm/" + n.name).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("opening a missing segment is not_found and names it") {
  auto r = Segment::open("shmbus.shmbustest.nope-" + std::to_string(::getpid()), Access::read_only);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::not_found);
  CHECK(r.error().message().find("nope") != std::string::npos);
}

TEST_CASE("bad segment names are refused") {
  CHECK(Segment::create("", 4096, 0600).error().code() == ErrorCode::invalid_argument);
  CHECK(Segment::create("a/b", 4096, 0600).error().code() == ErrorCode::invalid_argument);
}

TEST_CASE("a read-only mapping faults on write and cannot be upgraded") {
  SegName n;
  auto seg = Segment::create(n.name, 8192, 0600);
  REQUIRE(seg);
  auto rw = seg->map(0, 8192, Access::read_write, true);
  REQUIRE(rw);
  rw->data()[100] = std::byte{7};
  auto ro_seg = Segment::open(n.name, Access::read_only);
  REQUIRE(ro_seg);
  auto ro = ro_seg->map(0, 8192, Access::read_only, true);
  REQUIRE(ro);
  CHECK(ro->data()[100] == std::byte{7});
  auto bad = ro_seg->map(0, 8192, Access::read_write, false);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == ErrorCode::permission_denied);

  struct sigaction sa {
  }, old{};
  sa.sa_handler = on_segv;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGSEGV, &sa, &old);
  volatile bool faulted = false;
  if (sigsetjmp(g_jump, 1) == 0) {
    *reinterpret_cast<volatile std::byte*>(ro->data() + 100) = std::byte{9};
  } else {
    faulted = true;
  }
  ::sigaction(SIGSEGV, &old, nullptr);
  CHECK(faulted);
  CHECK(rw->data()[100] == std::byte{7});
}

TEST_CASE("unaligned map offsets are refused") {
  SegName n;
  auto seg = Segment::create(n.name, 8192, 0600);
  REQUIRE(seg);
  CHECK(seg->map(100, 4096, Access::read_only, false).error().code() == ErrorCode::invalid_argument);
}

TEST_CASE("list finds segments by prefix and remove deletes them") {
  SegName n;
  REQUIRE(Segment::create(n.name, 4096, 0600));
  auto l = Segment::list("shmbus.shmbustest.seg-");
  REQUIRE(l);
  bool found = false;
  for (const auto& s : l.value()) found |= s.name == n.name && s.size == 4096 && s.mode == 0600;
  CHECK(found);
  REQUIRE(Segment::remove(n.name));
  CHECK(Segment::remove(n.name).error().code() == ErrorCode::not_found);
}

TEST_CASE("a full /dev/shm fails at create with no_space and leaves nothing behind") {
  SegName n;
  // Larger than any machine's /dev/shm here: posix_fallocate must refuse it.
  auto r = Segment::create(n.name, std::size_t{1} << 46, 0600);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == ErrorCode::no_space);
  CHECK(r.error().message().find("reserve") != std::string::npos);
  CHECK(Segment::open(n.name, Access::read_only).error().code() == ErrorCode::not_found);
}
