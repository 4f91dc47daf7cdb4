// Writes the seed corpus of the fuzz targets: real segments made through the
// public API (messages published, subscribers at various cursors, a group
// with leases in every state, an open claim, a lapped ring, a dedup table in
// use), snapshotted byte for byte.
//
// Usage: shmbus_fuzz_make_seeds OUT_DIR
// Writes OUT_DIR/{header,channel,probe,archive}/seed-*. The seeds in the repository
// (fuzz/corpus/) were made with it; rerun it after a layout change. The
// process that made a seed is gone when the seed is used, so every owner in
// it reads as dead, which is what the reclaim paths need.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <shmbus/dedup.hpp>
#include <shmbus/shmbus.hpp>

#include "bus/archive/segment.hpp"
#include "fuzz_support.hpp"

namespace fs = std::filesystem;
using namespace shmbus;
using namespace shmbus::fuzz;

namespace {

fs::path g_out;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "make_seeds: %s\n", what.c_str());
  std::exit(1);
}

template <class T>
T must(Result<T> r, const char* what) {
  if (!r) fail(std::string(what) + ": " + r.error().message());
  return std::move(r.value());
}

void save(const std::string& target, const std::string& name, const std::vector<std::uint8_t>& bytes) {
  fs::create_directories(g_out / target);
  std::ofstream f(g_out / target / ("seed-" + name), std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) fail("cannot write seed " + name);
}

std::vector<std::uint8_t> with_prefix(std::vector<std::uint8_t> prefix, const std::vector<std::uint8_t>& image) {
  prefix.insert(prefix.end(), image.begin(), image.end());
  return prefix;
}

// The channel target's input: geometry, script, then the state regions.
std::vector<std::uint8_t> channel_input(std::size_t gi, const std::vector<std::uint8_t>& script,
                                        const std::vector<std::uint8_t>& image) {
  std::vector<std::uint8_t> in{static_cast<std::uint8_t>(gi)};
  in.insert(in.end(), script.begin(), script.end());
  const bus::Geometry g = bus::compute_geometry(geometries()[gi]).value();
  for (const Region& r : state_regions(g)) {
    in.insert(in.end(), image.begin() + static_cast<std::ptrdiff_t>(r.offset),
              image.begin() + static_cast<std::ptrdiff_t>(r.end));
  }
  return in;
}

std::vector<std::byte> text(const std::string& s) {
  std::vector<std::byte> v(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) v[i] = static_cast<std::byte>(s[i]);
  return v;
}

// A channel of geometry gi with traffic: `scenario` picks what state it is
// left in. Returns the segment's bytes (read while every handle is open).
std::vector<std::uint8_t> busy_channel(std::size_t gi, int scenario) {
  remove_all_segments();
  const ChannelOptions& o = geometries()[gi];
  Channel ch = must(Channel::create(kChannel, o, fuzz_bus()), "create");
  Publisher pub = must(ch.publisher(), "publisher");
  Subscriber durable = must(ch.subscribe({"reader", StartAt::earliest(), WaitStrategy::busy_spin}), "durable");
  std::optional<Subscriber> anon;
  if (o.max_subscribers > 1) {
    anon = must(ch.subscribe({"", StartAt::earliest(), WaitStrategy::busy_spin}), "anonymous");
  }
  std::vector<std::byte> buf(ch.max_payload());
  std::optional<Consumer> c1, c2;
  if (o.max_groups > 0) {
    GroupOptions go;
    go.visibility_timeout_ns = 1'000'000;
    go.max_deliveries = 2;
    go.backoff_base_ns = 0;
    go.backoff_cap_ns = 0;
    go.jitter_permille = 0;
    c1 = must(ch.join_group("workers", go), "join");
    c2 = must(ch.join_group("workers", go), "join");
  }
  const std::uint32_t n = scenario == 2 ? 3 * o.capacity : o.capacity;  // scenario 2 laps the ring
  Message m;
  for (std::uint32_t i = 0; i < n; ++i) {
    const PublishStatus st = pub.publish(text("message " + std::to_string(i)), {i, 100 + i, 1, 0}, 0);
    if (st != PublishStatus::ok) {
      // block / reject with a full ring: let the readers and the group move.
      if (anon) (void)anon->poll(m, buf);
      (void)durable.poll(m, buf);
      if (c1) {
        Delivery d;
        if (c1->receive(d, buf) == PollStatus::ok) (void)c1->ack(d);
      }
    }
  }
  // Readers at different places.
  for (int i = 0; i < 2; ++i) (void)durable.poll(m, buf);
  if (c1) {
    Delivery d;
    // Leases in several states: acked, nacked (due), kept (leased),
    // dead-lettered (via the DLQ), and left to expire.
    if (c1->receive(d, buf) == PollStatus::ok) (void)c1->ack(d);
    if (c2->receive(d, buf) == PollStatus::ok) (void)c2->nack(d, 1'000'000'000ULL);
    if (c1->receive(d, buf) == PollStatus::ok && scenario != 1) (void)c1->dead_letter(d);
    if (c2->receive(d, buf) == PollStatus::ok) { /* kept: leased */
    }
  }
  Claim open_claim;
  if (scenario == 1) {
    // A claim left open: a `writing` stamp with this process as its writer.
    (void)pub.try_claim(8, open_claim, 0);
  }
  std::vector<std::uint8_t> bytes = read_file(channel_path(kChannel));
  if (bytes.empty()) fail("cannot read the channel segment");
  return bytes;
}

std::vector<std::uint8_t> dedup_image() {
  remove_all_segments();
  DedupOptions o;
  o.capacity = 16;
  o.probe_window = 4;
  o.ttl_ns = 1'000'000'000ULL;
  o.claim_timeout_ns = 1'000'000'000ULL;
  DedupTable t = must(DedupTable::open_or_create(kDedupTable, o, fuzz_bus()), "dedup");
  for (std::uint64_t id = 1; id <= 6; ++id) {
    if (t.begin(id) == DedupStatus::first && id % 3 != 0) t.complete(id);  // every third left claimed
  }
  std::vector<std::uint8_t> bytes = read_file(dedup_path(kDedupTable));
  if (bytes.empty()) fail("cannot read the dedup segment");
  return bytes;
}

/// An archive segment file of `count` records from `first` (payloads of
/// 0..40 bytes), made by the archive's writer in a private directory.
std::vector<std::uint8_t> archive_file(std::uint64_t first, std::uint64_t count) {
  namespace ar = shmbus::bus::archive;
  const fs::path dir = fs::temp_directory_path() / ("shmbus-seeds-archive-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto w = ar::SegmentWriter::open(dir.string(), ar::WriterOptions{});
  if (!w) fail("archive writer: " + w.error().message());
  std::vector<std::byte> body(40, std::byte{0x5a});
  std::vector<ar::Record> recs(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    recs[i].sequence = first + i;
    recs[i].timestamp_ns = 1'790'000'000'000'000'000ULL + i * 1000;
    recs[i].key = i % 3;
    recs[i].id = 100 + i;
    recs[i].type = 7;
    recs[i].payload = std::span<const std::byte>(body.data(), (i * 7) % body.size());
  }
  if (auto r = w->append(recs); !r) fail("archive append: " + r.error().message());
  if (auto r = w->close(); !r) fail("archive close: " + r.error().message());
  std::vector<std::uint8_t> bytes = read_file((dir / ar::segment_file_name(first)).string());
  fs::remove_all(dir);
  if (bytes.empty()) fail("cannot read the archive file");
  return bytes;
}

/// Seeds of the archive target (archive_fuzzer.cpp: a mode byte, then a file).
void archive_seeds() {
  save("archive", "alone", with_prefix({0}, archive_file(0, 20)));
  save("archive", "newest", with_prefix({1}, archive_file(8, 20)));
  save("archive", "older", with_prefix({2}, archive_file(0, 20)));
  std::vector<std::uint8_t> torn = archive_file(8, 20);
  torn.resize(torn.size() - 13);  // cut inside the last record: a torn tail
  save("archive", "torn", with_prefix({1}, torn));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: shmbus_fuzz_make_seeds OUT_DIR");
  g_out = argv[1];
  // Scripts for the channel target (see channel_fuzzer.cpp for the opcodes).
  const std::vector<std::vector<std::uint8_t>> scripts = {
      {0x00, 0x02, 0x05, 0x06, 0x07, 0x13, 0x08, 0x09},  // read, group, publish, batch, reclaim
      {0x01, 0x03, 0x15, 0x26, 0x0a, 0x17, 0x38, 0x04},  // durable resume, group, drop, redrive
      {0x0b, 0x07, 0x0c, 0x0e, 0x4e, 0x18, 0x28, 0x09},  // both at once, publish, receive, remove
  };
  for (std::size_t gi = 0; gi < geometries().size(); ++gi) {
    for (int scenario = 0; scenario < 3; ++scenario) {
      const std::vector<std::uint8_t> image = busy_channel(gi, scenario);
      const std::string tag = "g" + std::to_string(gi) + "-s" + std::to_string(scenario);
      save("channel", tag, channel_input(gi, scripts[static_cast<std::size_t>(scenario)], image));
      save("probe", tag, image);
      if (scenario == 0) save("header", "channel-" + tag, with_prefix({0}, image));
    }
    save("channel", "g" + std::to_string(gi) + "-fresh", channel_input(gi, scripts[0], fresh_image(gi)));
  }
  save("header", "dedup", with_prefix({1}, dedup_image()));
  archive_seeds();
  remove_all_segments();
  std::printf("make_seeds: wrote %s\n", g_out.c_str());
  return 0;
}
