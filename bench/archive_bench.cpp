// Throughput of the disk archive's storage layer against the disk itself,
// measured in the same run (DESIGN.md section 7: quote ratios).
//
// Points, per message size and fsync setting, once per round:
//   disk     what `dd bs=1M` does: the same number of bytes written to a new
//            file in the archive's directory in 1 MiB writes; with
//            `--fsync batch`, an fdatasync after every batch's worth of
//            bytes, as the archive does. The baseline.
//   archive  bus::archive::SegmentWriter appending batches of records of
//            that payload size (56-byte record header, CRC32C, 8-byte
//            padding) until as many file bytes are written; rate in file
//            bytes (the ratio to `disk`) and in messages. A batch is what an
//            archiver appends at once: --batch-kb of records (1 MiB, what a
//            busy archiver reads from the ring per append), one write(2).
//   archiver the whole path: a publisher thread publishes the messages on a
//            channel (block policy, 4096 slots or a batch's worth) with an archive directory,
//            16 per publish_batch (the fastest publish path), while
//            shmbus::Archiver (batches of --batch-kb) archives them; rate
//            from the first publish to the last record archived.
//   subscriber  the same publisher and channel with a plain subscriber in
//            the archiver's place, copying each batch out (poll_batch): what
//            the bus itself delivers to one reader, the archiver's other
//            bound. Its figure is the archiver's "vs bus" baseline.
//   replay   bus::archive::SegmentReader reading the archive just written,
//            every record's CRC checked: messages and bytes per second.
//
//   shmbus_archive_bench [--dir D] [--mb N] [--sizes 64,4096] [--fsync never,batch,end]
//                        [--points disk,archive,archiver,subscriber,replay]
//                        (--fsync also takes `end`: one sync at the end, timed)
//                        [--batch-kb K] [--repeat K] [--quick | --smoke] [--json FILE]
//
// replay reads what the archive point wrote, so it needs that point.
//
// D defaults to /var/tmp (a disk, not a tmpfs, on most systems); each point
// writes to a fresh subdirectory that is removed afterwards. Rounds
// interleave the points, and the median of each is reported.
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <shmbus/archive.hpp>
#include <shmbus/shmbus.hpp>

#include "bench_util.hpp"
#include "bus/archive/segment.hpp"

namespace {

namespace bu = shmbus::benchutil;
namespace ar = shmbus::bus::archive;
namespace fs = std::filesystem;

struct Config {
  std::string bus;  // set by bench_main: the archiver point's channel
  std::string dir = "/var/tmp";
  std::uint64_t mb = 256;
  std::vector<std::uint64_t> sizes{64, 4096};
  std::vector<std::string> fsyncs{"never", "batch", "end"};
  std::uint64_t batch_kb = 1024;
  std::uint64_t repeat = 3;
  std::vector<std::string> points{"disk", "archive", "archiver", "subscriber", "replay"};
  std::string json;

  [[nodiscard]] bool runs(const std::string& what) const {
    return std::find(points.begin(), points.end(), what) != points.end();
  }
};

// The points of one (fsync, size) group, in the order they run.
constexpr std::array<const char*, 5> kKinds{"disk", "archive", "archiver", "subscriber", "replay"};
constexpr std::size_t kDisk = 0;
constexpr std::size_t kArchive = 1;
constexpr std::size_t kArchiver = 2;
constexpr std::size_t kSubscriber = 3;
constexpr std::size_t kReplay = 4;

struct Samples {
  std::vector<double> bytes_per_s;
  std::vector<double> msgs_per_s;
};

struct Point {
  std::string what;  // disk, archive, replay
  std::uint64_t size = 0;
  std::string fsync;
  std::uint64_t bytes = 0;
  std::uint64_t messages = 0;
  Samples s;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::uint64_t record_bytes(std::uint64_t payload) { return (ar::kRecordHeaderSize + payload + 7) / 8 * 8; }

// Records per append: as many as fit in --batch-kb, at least one.
std::uint64_t batch_records(const Config& cfg, std::uint64_t payload) {
  return std::max<std::uint64_t>(1, (cfg.batch_kb << 10) / record_bytes(payload));
}

// A fresh, empty directory under cfg.dir; removed by the destructor.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& parent) {
    path = fs::path(parent) / ("shmbus-archive-bench-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

// How a point syncs: never; an fdatasync per batch (the archive's `batch`
// policy; dd's loop then syncs after each batch's worth of bytes); or once
// at the end, inside the timed span (dd conv=fdatasync: the rate at which
// the disk itself takes a stream, once more bytes are written than the
// page cache holds back).
enum class Sync { never, batch, end };

Sync sync_of(const std::string& name) {
  return name == "batch" ? Sync::batch : name == "end" ? Sync::end : Sync::never;
}

// syncfs() of the filesystem that holds `dir`: what `end` waits for.
void sync_filesystem(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) bu::die_errno("open " + dir.string());
  if (::syncfs(fd) != 0) bu::die_errno("syncfs " + dir.string());
  ::close(fd);
}

// dd's loop: 1 MiB writes of `total` bytes; fdatasync every `sync_every`
// bytes (0: never); with `end`, syncfs at the end. Returns bytes per second.
double run_disk(const fs::path& dir, std::uint64_t total, std::uint64_t sync_every, bool end) {
  const fs::path file = dir / "dd.out";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) bu::die_errno("open " + file.string());
  std::vector<std::byte> buf(1 << 20, std::byte{0x5a});
  const std::uint64_t start = bu::now_ns();
  std::uint64_t done = 0;
  std::uint64_t since_sync = 0;
  while (done < total) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - done));
    // With syncs, write exactly one batch's worth between them (the archive
    // syncs at batch ends, not at 1 MiB boundaries).
    const std::size_t chunk =
        sync_every != 0 ? static_cast<std::size_t>(std::min<std::uint64_t>(n, sync_every - since_sync)) : n;
    const ssize_t w = ::write(fd, buf.data(), chunk);
    if (w <= 0) bu::die_errno("write " + file.string());
    done += static_cast<std::uint64_t>(w);
    since_sync += static_cast<std::uint64_t>(w);
    if (sync_every != 0 && since_sync >= sync_every) {
      if (::fdatasync(fd) != 0) bu::die_errno("fdatasync " + file.string());
      since_sync = 0;
    }
  }
  if (end) sync_filesystem(dir);
  const std::uint64_t ns = bu::now_ns() - start;
  ::close(fd);
  fs::remove(file);
  return static_cast<double>(total) * 1e9 / static_cast<double>(ns);
}

// Appends `count` records of `size` payload bytes in batches; returns the
// elapsed ns (the final close is inside; a sync per batch or at the end as
// `sync` says).
std::uint64_t run_archive(const fs::path& dir, std::uint64_t size, std::uint64_t count, std::uint64_t batch,
                          Sync sync) {
  ar::WriterOptions wo;
  wo.fsync = sync == Sync::batch ? ar::FsyncPolicy::every_batch : ar::FsyncPolicy::never;
  wo.segment_bytes = 64ull << 20;
  std::vector<std::byte> payload(size, std::byte{0x33});
  std::vector<ar::Record> recs(batch);
  const std::uint64_t start = bu::now_ns();
  auto w = ar::SegmentWriter::open(dir.string(), wo);
  if (!w) bu::die("archive open: " + w.error().message());
  std::uint64_t seq = 0;
  while (seq < count) {
    const std::uint64_t n = std::min(batch, count - seq);
    for (std::uint64_t i = 0; i < n; ++i) {
      ar::Record& r = recs[i];
      r.sequence = seq + i;
      r.timestamp_ns = seq + i;
      r.key = i;
      r.id = seq + i;
      r.payload = std::span<const std::byte>(payload.data(), payload.size());
    }
    if (auto a = w->append(std::span<const ar::Record>(recs.data(), n)); !a) {
      bu::die("archive append: " + a.error().message());
    }
    seq += n;
  }
  if (auto c = w->close(); !c) bu::die("archive close: " + c.error().message());
  if (sync == Sync::end) sync_filesystem(dir);
  return bu::now_ns() - start;
}

// Publishes `count` messages of `size` bytes on a new channel whose archive
// is `dir` from a thread, 16 per publish_batch, while this thread reads
// them: an Archiver archiving them, or (archiver false) a plain subscriber
// copying them out. Returns the ns from the start to the last one read
// (for the archiver under `end`, to the archive on the disk).
std::uint64_t run_channel(const Config& cfg, const fs::path& dir, std::uint64_t size, std::uint64_t count,
                          std::uint64_t batch, Sync sync, bool archiver) {
  shmbus::ChannelOptions o;
  // Room for a whole batch (--batch-kb of records) at once: the archiver's
  // batches, and so its fdatasyncs under `batch`, then match the disk point's.
  o.capacity = static_cast<std::uint32_t>(std::bit_ceil(std::max<std::uint64_t>(4096, batch)));
  o.slot_size = static_cast<std::uint32_t>((56 + size + 63) / 64 * 64);
  o.policy = shmbus::Policy::block;
  o.archive_dir = dir.string();
  const std::string name = "archive-bench";
  (void)shmbus::Channel::remove(name, cfg.bus);
  auto ch = shmbus::Channel::create(name, o, cfg.bus);
  if (!ch) bu::die("create: " + ch.error().message());
  const std::uint32_t read_batch = static_cast<std::uint32_t>(std::min<std::uint64_t>(batch, o.capacity));
  std::optional<shmbus::Archiver> arc;
  std::optional<shmbus::Subscriber> sub;
  if (archiver) {
    shmbus::ArchiverOptions ao;
    ao.fsync = sync == Sync::batch ? shmbus::ArchiveFsync::batch : shmbus::ArchiveFsync::never;
    ao.batch = read_batch;
    auto a = shmbus::Archiver::open(ch.value(), ao);
    if (!a) bu::die("archiver: " + a.error().message());
    arc.emplace(std::move(a).value());
  } else {
    auto s = ch->subscribe();
    if (!s) bu::die("subscribe: " + s.error().message());
    sub.emplace(std::move(s).value());
  }
  auto pub = ch->publisher();
  if (!pub) bu::die("publisher: " + pub.error().message());
  std::vector<std::byte> payload(size, std::byte{0x44});
  constexpr std::size_t kPublishBatch = 16;
  std::vector<shmbus::OutMessage> out(kPublishBatch);
  for (auto& m : out) m.payload = std::span<const std::byte>(payload);
  std::vector<shmbus::Message> msgs(read_batch);
  std::vector<std::byte> arena(static_cast<std::size_t>(read_batch) * size + size);
  std::atomic<bool> failed{false};
  std::uint64_t bytes = 0;
  // Publishes and reads `n` messages; returns the ns it took.
  const auto pump = [&](std::uint64_t n) {
    const std::uint64_t start = bu::now_ns();
    std::thread producer([&] {
      for (std::uint64_t i = 0; i < n && !failed;) {
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kPublishBatch, n - i));
        if (pub->publish_batch(std::span<const shmbus::OutMessage>(out.data(), k)) != shmbus::PublishStatus::ok) {
          failed = true;
          return;
        }
        i += k;
      }
    });
    std::uint64_t done = 0;
    while (done < n && !failed) {
      if (arc) {
        auto got = arc->poll_once();
        if (!got) {
          failed = true;
          break;
        }
        done += got.value();
      } else {
        shmbus::PollStatus last = shmbus::PollStatus::ok;
        const std::size_t got = sub->poll_batch(msgs, arena, &last);
        for (std::size_t k = 0; k < got; ++k) bytes += msgs[k].payload.size();
        done += got;
        if (last != shmbus::PollStatus::ok && last != shmbus::PollStatus::empty) {
          failed = true;
          break;
        }
      }
    }
    if (arc && sync == Sync::end && !failed) sync_filesystem(dir);
    const std::uint64_t ns = bu::now_ns() - start;
    failed = failed || done < n;
    producer.join();
    return ns;
  };
  // One ring's worth first, untimed: a fresh channel's pages are faulted
  // in on their first use, which a long-running channel does not pay.
  (void)pump(o.capacity);
  bytes = 0;
  const std::uint64_t ns = failed ? 0 : pump(count);
  if (failed)
    bu::die(std::string(archiver ? "archiver" : "subscriber") + " point failed" +
            (arc ? ": " + arc->last_error() : ""));
  if (!arc && bytes != count * size) bu::die("subscriber point: payload bytes do not add up");
  arc.reset();
  sub.reset();
  *pub = shmbus::Publisher();
  (void)shmbus::Channel::remove(name, cfg.bus);
  return ns;
}

// Reads every record back; returns elapsed ns and checks the count.
std::uint64_t run_replay(const fs::path& dir, std::uint64_t count) {
  const std::uint64_t start = bu::now_ns();
  auto r = ar::SegmentReader::open(dir.string());
  if (!r) bu::die("replay open: " + r.error().message());
  std::uint64_t n = 0;
  std::uint64_t sum = 0;
  for (;;) {
    auto rec = r->next();
    if (!rec) bu::die("replay: " + rec.error().message());
    if (!rec.value()) break;
    if (rec.value()->sequence != n) bu::die("replay: sequence " + std::to_string(rec.value()->sequence));
    sum += rec.value()->payload.size();
    ++n;
  }
  const std::uint64_t ns = bu::now_ns() - start;
  if (n != count) bu::die("replay read " + std::to_string(n) + " of " + std::to_string(count));
  if (sum == 0 && count != 0) bu::die("replay: empty payloads");
  return ns;
}

void add_sample(Point& p, std::uint64_t ns) {
  p.s.bytes_per_s.push_back(static_cast<double>(p.bytes) * 1e9 / static_cast<double>(ns));
  p.s.msgs_per_s.push_back(static_cast<double>(p.messages) * 1e9 / static_cast<double>(ns));
}

void run(Config& cfg) {
  // points[g * kKinds.size() + k]: group g (an fsync setting and a size), kind k.
  std::vector<Point> points;
  for (const std::string& f : cfg.fsyncs) {
    for (std::uint64_t size : cfg.sizes) {
      const std::uint64_t per = record_bytes(size);
      const std::uint64_t count = std::max<std::uint64_t>(1, (cfg.mb << 20) / per);
      // Bytes the archive writes: records plus one 64-byte header per file.
      const std::uint64_t bytes = count * per;
      for (const char* what : kKinds) points.push_back({what, size, f, bytes, count, {}});
    }
  }
  for (std::uint64_t round = 0; round < cfg.repeat; ++round) {
    std::printf("round %llu of %llu\n", static_cast<unsigned long long>(round + 1),
                static_cast<unsigned long long>(cfg.repeat));
    std::fflush(stdout);
    for (std::size_t g = 0; g < points.size(); g += kKinds.size()) {
      Point* p = &points[g];
      const Sync sync = sync_of(p[kDisk].fsync);
      const std::uint64_t size = p[kDisk].size;
      ScratchDir scratch(cfg.dir);
      const std::uint64_t batch = batch_records(cfg, size);
      // Each timed write starts with no dirty pages of earlier points
      // waiting for writeback (which throttles whoever writes next).
      if (cfg.runs("disk")) {
        ::sync();
        const double dbps = run_disk(scratch.path, p[kDisk].bytes, sync == Sync::batch ? batch * record_bytes(size) : 0,
                                     sync == Sync::end);
        p[kDisk].s.bytes_per_s.push_back(dbps);
        p[kDisk].s.msgs_per_s.push_back(dbps / static_cast<double>(record_bytes(size)));
      }
      if (cfg.runs("archive")) {
        ::sync();
        add_sample(p[kArchive], run_archive(scratch.path / "archive", size, p[kArchive].messages, batch, sync));
      }
      if (cfg.runs("archiver")) {
        ::sync();
        add_sample(p[kArchiver],
                   run_channel(cfg, scratch.path / "channel", size, p[kArchiver].messages, batch, sync, true));
      }
      if (cfg.runs("subscriber")) {
        add_sample(p[kSubscriber],
                   run_channel(cfg, scratch.path / "plain", size, p[kSubscriber].messages, batch, sync, false));
      }
      // Reading back what was just written reads the page cache, as a
      // consumer replaying recent history does (docs/benchmarks.md says so).
      if (cfg.runs("replay")) add_sample(p[kReplay], run_replay(scratch.path / "archive", p[kReplay].messages));
    }
  }
  std::printf("%-10s %6s %6s %12s %12s %8s %8s\n", "point", "size", "fsync", "MB/s", "msg/s", "vs disk", "vs bus");
  nlohmann::ordered_json out;
  out["program"] = "archive";
  out["host"] = bu::host_info();
  out["config"] = {{"dir", cfg.dir}, {"mb", cfg.mb}, {"batch_kb", cfg.batch_kb}, {"repeat", cfg.repeat}};
  out["points"] = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < points.size(); ++i) {
    const Point& p = points[i];
    if (!cfg.runs(p.what)) continue;
    const std::size_t g = i - i % kKinds.size();
    const double disk_bps = median(points[g + kDisk].s.bytes_per_s);
    const double bus_bps = median(points[g + kSubscriber].s.bytes_per_s);
    const double bps = median(p.s.bytes_per_s);
    const double mps = median(p.s.msgs_per_s);
    const double ratio = disk_bps > 0 ? bps / disk_bps : 0;
    const double bus_ratio = bus_bps > 0 && p.what == "archiver" ? bps / bus_bps : 0;
    std::printf("%-10s %6llu %6s %12.1f %12.0f %7.2fx %7.2fx\n", p.what.c_str(),
                static_cast<unsigned long long>(p.size), p.fsync.c_str(), bps / 1e6, mps, ratio, bus_ratio);
    nlohmann::ordered_json j = {{"point", p.what},   {"size", p.size},         {"fsync", p.fsync},
                                {"bytes", p.bytes},  {"messages", p.messages}, {"mb_per_s", bps / 1e6},
                                {"msgs_per_s", mps}, {"ratio_to_disk", ratio}};
    if (p.what == "archiver") j["ratio_to_subscriber"] = bus_ratio;
    j["mb_per_s_samples"] = p.s.bytes_per_s;
    out["points"].push_back(std::move(j));
  }
  if (!cfg.json.empty()) bu::write_json(cfg.json, out);
}

std::vector<std::uint64_t> parse_list(const char* s) {
  std::vector<std::uint64_t> v;
  std::string t(s);
  std::size_t pos = 0;
  while (pos <= t.size()) {
    const std::size_t comma = t.find(',', pos);
    const std::string part = t.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!part.empty()) v.push_back(std::stoull(part));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return v;
}

std::vector<std::string> parse_words(const char* s) {
  std::vector<std::string> v;
  std::string t(s);
  std::size_t pos = 0;
  for (;;) {
    const std::size_t comma = t.find(',', pos);
    v.push_back(t.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return v;
}

std::optional<Config> parse(int argc, char** argv) {
  Config c;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const bool has = i + 1 < argc;
      if (a == "--dir" && has) {
        c.dir = argv[++i];
      } else if (a == "--mb" && has) {
        c.mb = std::stoull(argv[++i]);
      } else if (a == "--sizes" && has) {
        c.sizes = parse_list(argv[++i]);
      } else if (a == "--fsync" && has) {
        c.fsyncs = parse_words(argv[++i]);
      } else if (a == "--points" && has) {
        c.points = parse_words(argv[++i]);
      } else if (a == "--batch-kb" && has) {
        c.batch_kb = std::stoull(argv[++i]);
      } else if (a == "--repeat" && has) {
        c.repeat = std::stoull(argv[++i]);
      } else if (a == "--json" && has) {
        c.json = argv[++i];
      } else if (a == "--quick") {
        c.mb = 64;
        c.repeat = 3;
      } else if (a == "--smoke") {
        c.mb = 1;
        c.repeat = 1;
      } else {
        return std::nullopt;
      }
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
  for (const std::string& f : c.fsyncs) {
    if (f != "never" && f != "batch" && f != "end") return std::nullopt;
  }
  for (const std::string& p : c.points) {
    if (std::find(kKinds.begin(), kKinds.end(), p) == kKinds.end()) return std::nullopt;
  }
  if (c.runs("replay") && !c.runs("archive")) return std::nullopt;  // it reads what archive wrote
  if (c.sizes.empty() || c.batch_kb == 0 || c.repeat == 0 || c.mb == 0) return std::nullopt;
  return c;
}

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--dir D] [--mb N] [--sizes 64,4096] [--fsync never,batch,end] [--batch-kb K]\n"
               "          [--points disk,archive,archiver,subscriber,replay]\n"
               "          [--repeat K] [--quick | --smoke] [--json FILE]\n",
               argv0);
}

}  // namespace

int main(int argc, char** argv) {
  return shmbus::benchutil::bench_main(argc, argv, "shmbus_archive_bench", "archive", parse, usage, run);
}
