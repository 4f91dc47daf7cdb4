// The OS layer's plain files and directories (shm/file.hpp): reads and
// writes, exclusive creation, the directory lock, removal and truncation.
#include "shm/file.hpp"

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace shm = shmbus::shm;
using shmbus::ErrorCode;

namespace {

/// A fresh directory for one test's files.
class TempDir : public shmbus::test::TempDir {
 public:
  TempDir() : shmbus::test::TempDir("shmbus-file") {}
};

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 7 + 3);
  return v;
}

}  // namespace

TEST_CASE("file write_all then pread reads the same bytes, short only at the end", "[file]") {
  TempDir dir;
  const std::string path = dir.sub("data");
  const auto bytes = pattern(3 << 20);  // more than one write(2) may take
  {
    auto f = shm::File::create_new(path);
    REQUIRE(f.ok());
    REQUIRE(f->write_all(bytes).ok());
    REQUIRE(f->write_all(std::span(bytes).first(10)).ok());  // appended
    REQUIRE(f->datasync().ok());
    REQUIRE(f->close().ok());
    CHECK(!f->is_open());
  }
  auto size = shm::file_size(path);
  REQUIRE(size.ok());
  CHECK(*size == bytes.size() + 10);
  auto r = shm::File::open_read(path);
  REQUIRE(r.ok());
  CHECK(r->path() == path);
  std::vector<std::byte> got(bytes.size());
  auto n = r->pread(got.data(), got.size(), 0);
  REQUIRE(n.ok());
  CHECK(*n == bytes.size());
  CHECK(got == bytes);
  n = r->pread(got.data(), 100, bytes.size() + 4);
  REQUIRE(n.ok());
  CHECK(*n == 6);
  CHECK(std::equal(got.begin(), got.begin() + 6, bytes.begin() + 4));
}

TEST_CASE("file create_new of an existing path fails and leaves the file", "[file]") {
  TempDir dir;
  const std::string path = dir.sub("data");
  auto first = shm::File::create_new(path);
  REQUIRE(first.ok());
  REQUIRE(first->write_all(pattern(5)).ok());
  auto second = shm::File::create_new(path);
  REQUIRE(!second.ok());
  CHECK(second.error().message().find(path) != std::string::npos);
  auto size = shm::file_size(path);
  REQUIRE(size.ok());
  CHECK(*size == 5);
}

TEST_CASE("file open_read of a missing path is not_found and names it", "[file]") {
  TempDir dir;
  auto f = shm::File::open_read(dir.sub("missing"));
  REQUIRE(!f.ok());
  CHECK(f.error().code() == ErrorCode::not_found);
  CHECK(f.error().message().find(dir.sub("missing")) != std::string::npos);
}

TEST_CASE("file lock_directory twice is busy until the first lock is closed", "[file]") {
  TempDir dir;
  auto first = shm::lock_directory(dir.str());
  REQUIRE(first.ok());
  auto second = shm::lock_directory(dir.str());
  REQUIRE(!second.ok());
  CHECK(second.error().code() == ErrorCode::busy);
  REQUIRE(first->close().ok());
  CHECK(shm::lock_directory(dir.str()).ok());
}

TEST_CASE("file remove_file of a missing path is ok", "[file]") {
  TempDir dir;
  CHECK(shm::remove_file(dir.sub("missing")).ok());
  auto f = shm::File::create_new(dir.sub("data"));
  REQUIRE(f.ok());
  REQUIRE(shm::remove_file(dir.sub("data")).ok());
  CHECK(shm::file_size(dir.sub("data")).error().code() == ErrorCode::not_found);
}

TEST_CASE("file truncate cuts the file and appends continue at the new end", "[file]") {
  TempDir dir;
  const std::string path = dir.sub("data");
  const auto bytes = pattern(100);
  auto f = shm::File::create_new(path);
  REQUIRE(f.ok());
  REQUIRE(f->write_all(bytes).ok());
  REQUIRE(f->truncate(40).ok());
  auto size = f->size();
  REQUIRE(size.ok());
  CHECK(*size == 40);
  REQUIRE(f->write_all(std::span(bytes).first(8)).ok());
  size = f->size();
  REQUIRE(size.ok());
  CHECK(*size == 48);
  std::vector<std::byte> got(48);
  auto n = f->pread(got.data(), got.size(), 0);
  REQUIRE(n.ok());
  CHECK(*n == 48);
  CHECK(std::equal(got.begin(), got.begin() + 40, bytes.begin()));
  CHECK(std::equal(got.begin() + 40, got.end(), bytes.begin()));
}

TEST_CASE("file create_directories makes parents, accepts an existing one, and lists", "[file]") {
  TempDir dir;
  const std::string deep = dir.sub("a/b/c/");
  REQUIRE(shm::create_directories(deep).ok());
  REQUIRE(shm::create_directories(deep).ok());
  CHECK(shm::is_directory(deep));
  REQUIRE(shm::File::create_new(shm::join_path(deep, "x")).ok());
  REQUIRE(shm::File::create_new(shm::join_path(dir.sub("a/b"), "y")).ok());
  auto names = shm::list_directory(dir.sub("a/b"));
  REQUIRE(names.ok());
  std::sort(names->begin(), names->end());
  CHECK(*names == std::vector<std::string>{"c", "y"});
  CHECK(!shm::create_directories(dir.sub("a/b/y/z")).ok());  // y is a file
  CHECK(shm::list_directory(dir.sub("none")).error().code() == ErrorCode::not_found);
}
