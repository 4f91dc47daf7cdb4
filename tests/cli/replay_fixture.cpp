// Makes a channel for the replay CLI test: capacity 16 (drop_oldest) with an
// archive, 100 messages "msg-<i>" stamped kT0 + i seconds, and an archive
// holding all of them, written as an archiver would (same sequences, times
// and payloads). The channel is left in place for the probe to read.
// Usage: replay_fixture BUS CHANNEL ARCHIVE_DIR | replay_fixture BUS CHANNEL --remove
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include <shmbus/shmbus.hpp>

#include "bus/archive/segment.hpp"

namespace {

constexpr std::uint64_t kT0 = 1'700'000'000ULL * 1'000'000'000ULL;
constexpr std::uint64_t kCount = 100;

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: replay_fixture BUS CHANNEL ARCHIVE_DIR|--remove\n";
    return 2;
  }
  const std::string bus = argv[1], name = argv[2], dir = argv[3];
  if (dir == "--remove") return shmbus::Channel::remove(name, bus) ? 0 : 1;
  shmbus::ChannelOptions o;
  o.capacity = 16;
  o.slot_size = 128;
  o.policy = shmbus::Policy::drop_oldest;
  o.archive_dir = dir;
  auto ch = shmbus::Channel::create(name, o, bus);
  if (!ch) {
    std::cerr << "replay_fixture: " << ch.error().message() << '\n';
    return 1;
  }
  auto pub = ch->publisher();
  if (!pub) {
    std::cerr << "replay_fixture: " << pub.error().message() << '\n';
    return 1;
  }
  std::vector<std::string> payloads;
  for (std::uint64_t i = 0; i < kCount; ++i) payloads.push_back("msg-" + std::to_string(i));
  std::vector<shmbus::bus::archive::Record> recs;
  for (std::uint64_t i = 0; i < kCount; ++i) {
    shmbus::MessageMeta m;
    m.timestamp_ns = kT0 + i * 1'000'000'000ULL;
    m.key = i;
    if (pub->publish(payloads[i], m) != shmbus::PublishStatus::ok) return 1;
    recs.push_back({i, m.timestamp_ns, i, 0, 0, 0, std::as_bytes(std::span(payloads[i]))});
  }
  shmbus::bus::archive::WriterOptions wo;
  wo.segment_bytes = 1024;
  auto w = shmbus::bus::archive::SegmentWriter::open(dir, wo);
  if (!w) {
    std::cerr << "replay_fixture: " << w.error().message() << '\n';
    return 1;
  }
  if (auto a = w->append(recs); !a) {
    std::cerr << "replay_fixture: " << a.error().message() << '\n';
    return 1;
  }
  return 0;
}
