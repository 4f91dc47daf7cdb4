// `shmbus archive run | stat | verify | prune`: the channel's disk archive
// (docs/protocol.md section 13). `run` is the archiver in a process of its
// own; the others read the archive's files (stat also the channel, read-only).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <shmbus/archive.hpp>

#include "bus/archive/segment.hpp"
#include "probe.hpp"

namespace shmbus::probe {
namespace {

namespace fs = std::filesystem;
namespace archive = bus::archive;

struct ArchiveArgs {
  std::string channel;
  std::string bus = std::string(kDefaultBus);
  std::string dir;
  std::string fsync = "interval:100";
  std::uint64_t segment_mb = 64;
  double max_age_s = 0;
  std::uint64_t max_bytes = 0;
  std::uint64_t batch = 1024;
  bool json = false;
};

// "never" | "batch" | "interval:MS" into the options; false if malformed.
bool parse_fsync(const std::string& text, ArchiverOptions& o) {
  if (text == "never") {
    o.fsync = ArchiveFsync::never;
    return true;
  }
  if (text == "batch") {
    o.fsync = ArchiveFsync::batch;
    return true;
  }
  const std::string prefix = "interval:";
  if (text.rfind(prefix, 0) != 0 || text.size() == prefix.size() || text.size() > prefix.size() + 9) return false;
  const std::string ms = text.substr(prefix.size());
  if (!std::all_of(ms.begin(), ms.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  o.fsync = ArchiveFsync::interval;
  o.fsync_interval_ns = std::stoull(ms) * 1'000'000ULL;
  return true;
}

std::string time_text(std::uint64_t realtime_ns) {
  if (realtime_ns == 0) return "-";
  const std::time_t s = static_cast<std::time_t>(realtime_ns / 1'000'000'000ULL);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned>(realtime_ns / 1'000'000ULL % 1000));
  return buf;
}

std::string archiver_error(const char* what, const Error& e) {
  return std::string("shmbus archive ") + what + ": " + std::string(to_string(e.code())) + ": " + e.message();
}

int cmd_archive_run(const ArchiveArgs& a) {
  ArchiverOptions o;
  if (!parse_fsync(a.fsync, o)) {
    std::cerr << "shmbus archive run: --fsync: '" << a.fsync << "' is not never, batch or interval:MS\n";
    return kExitError;
  }
  o.dir = a.dir;
  o.segment_bytes = a.segment_mb << 20;
  o.max_age_ns = seconds_to_ns(a.max_age_s);
  o.max_bytes = a.max_bytes;
  o.batch = static_cast<std::uint32_t>(a.batch);
  int rc = kExitOk;
  auto ch = open_participant(a.channel, a.bus, rc);
  if (!ch) return rc;
  install_stop_handlers();
  auto arc = Archiver::open(*ch, o);
  if (!arc.ok()) {
    std::cerr << archiver_error("run", arc.error()) << '\n';
    return arc.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  const ArchiverCounters start = arc->counters();
  std::cerr << "shmbus archive run: archiving channel '" << a.channel << "' into '" << arc->directory()
            << "' from sequence " << start.next_sequence;
  if (start.recovered_bytes != 0) std::cerr << " (cut a torn tail of " << start.recovered_bytes << " bytes)";
  std::cerr << '\n';
  // The archiver runs on this thread; a watcher turns SIGINT/SIGTERM into
  // its stop flag and reports gaps and errors as they appear.
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    std::uint64_t gaps = 0;
    std::uint64_t no_space = 0;
    while (!done.load(std::memory_order_relaxed)) {  // relaxed: flags
      if (stop_requested()) stop.store(true, std::memory_order_relaxed);
      const ArchiverCounters c = arc->counters();
      if (c.gaps != gaps) {
        gaps = c.gaps;
        std::cerr << "shmbus archive run: gap: sequences [" << c.gap_from << ", " << c.gap_to
                  << ") were overwritten before they were archived (" << c.lost << " lost in all)\n";
      }
      if (c.no_space_errors != no_space) {
        if (no_space == 0) std::cerr << "shmbus archive run: " << arc->last_error() << " (retrying every second)\n";
        no_space = c.no_space_errors;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  auto r = arc->run(stop);
  done.store(true, std::memory_order_relaxed);
  watcher.join();
  const ArchiverCounters c = arc->counters();
  std::cerr << "shmbus archive run: archived " << c.archived << " messages (" << c.bytes << " bytes), up to sequence "
            << c.next_sequence << "; " << c.lost << " lost in " << c.gaps << " gaps\n";
  if (!r.ok()) {
    std::cerr << archiver_error("run", r.error()) << '\n';
    return kExitError;
  }
  return kExitOk;
}

// The directory named by --dir, else the channel's archive_dir.
bool archive_dir_of(const ArchiveArgs& a, std::string& dir, std::optional<Channel>& ch, int& rc) {
  if (!a.channel.empty()) {
    ch = open_observer(a.channel, a.bus, rc);
    if (!ch && a.dir.empty()) return false;
  }
  dir = !a.dir.empty() ? a.dir : ch->options().archive_dir;
  if (dir.empty()) {
    std::cerr << "shmbus archive: channel '" << a.channel << "' has no archive directory (give --dir)\n";
    rc = kExitError;
    return false;
  }
  return true;
}

struct FileInfo {
  std::uint64_t first;
  std::string path;
  std::uint64_t bytes;
};

std::vector<FileInfo> segment_files(const std::string& dir) {
  std::vector<FileInfo> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() != 24 || name.compare(20, 4, ".seg") != 0) continue;
    if (!std::all_of(name.begin(), name.begin() + 20, [](char c) { return c >= '0' && c <= '9'; })) continue;
    out.push_back({std::stoull(name.substr(0, 20)), e.path().string(), static_cast<std::uint64_t>(e.file_size(ec))});
  }
  std::sort(out.begin(), out.end(), [](const FileInfo& x, const FileInfo& y) { return x.first < y.first; });
  return out;
}

int cmd_archive_stat(const ArchiveArgs& a) {
  int rc = kExitOk;
  std::string dir;
  std::optional<Channel> ch;
  if (!archive_dir_of(a, dir, ch, rc)) return rc;
  auto rd = archive::SegmentReader::open(dir);
  if (!rd.ok()) {
    std::cerr << archiver_error("stat", rd.error()) << '\n';
    return rd.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  const auto files = segment_files(dir);
  std::uint64_t bytes = 0;
  for (const auto& f : files) bytes += f.bytes;
  auto first = rd->first_sequence();
  auto end = rd->end_sequence();
  if (!first.ok() || !end.ok()) {
    std::cerr << archiver_error("stat", first.ok() ? end.error() : first.error()) << '\n';
    return kExitError;
  }
  std::uint64_t first_ns = 0;
  std::uint64_t last_ns = 0;
  if (*end > *first) {
    if (rd->seek(*first).ok()) {
      if (auto r = rd->next(); r.ok() && r->has_value()) first_ns = (*r)->timestamp_ns;
    }
    if (rd->seek(*end - 1).ok()) {
      if (auto r = rd->next(); r.ok() && r->has_value()) last_ns = (*r)->timestamp_ns;
    }
  }
  bool have_channel = false;
  std::uint64_t head = 0;
  bool archiver_found = false;
  std::uint64_t archiver_cursor = 0;
  std::string archiver_state;
  if (ch) {
    const ChannelStats s = ch->stats();
    have_channel = true;
    head = s.head;
    for (const auto& sub : s.subscribers) {
      if (sub.name != kArchiverName) continue;
      archiver_found = true;
      archiver_cursor = sub.cursor;
      archiver_state = sub.state + (sub.alive ? "" : " (no live process)");
    }
  }
  if (a.json) {
    nlohmann::json j;
    j["directory"] = dir;
    j["files"] = files.size();
    j["bytes"] = bytes;
    j["first_sequence"] = *first;
    j["end_sequence"] = *end;
    j["first_time_ns"] = first_ns;
    j["last_time_ns"] = last_ns;
    if (have_channel) {
      j["head"] = head;
      j["behind_head"] = head > *end ? head - *end : 0;
      if (archiver_found) {
        j["archiver"] = {{"state", archiver_state},
                         {"cursor", archiver_cursor},
                         {"lag", head > archiver_cursor ? head - archiver_cursor : 0}};
      }
    }
    std::cout << json_text(j) << '\n';
    return kExitOk;
  }
  std::cout << "directory: " << dir << '\n'
            << "files: " << files.size() << '\n'
            << "bytes: " << bytes << '\n'
            << "sequences: " << *first << ".." << (*end > *first ? *end - 1 : *first) << " (end " << *end << ")\n"
            << "first time: " << time_text(first_ns) << '\n'
            << "last time: " << time_text(last_ns) << '\n';
  if (have_channel) {
    std::cout << "channel head: " << head << " (" << (head > *end ? head - *end : 0) << " not yet archived)\n";
    if (archiver_found) {
      std::cout << "archiver: " << archiver_state << ", cursor " << archiver_cursor << ", lag "
                << (head > archiver_cursor ? head - archiver_cursor : 0) << '\n';
    } else {
      std::cout << "archiver: none attached\n";
    }
  }
  return kExitOk;
}

int cmd_archive_verify(const ArchiveArgs& a) {
  auto rd = archive::SegmentReader::open(a.dir);
  if (!rd.ok()) {
    std::cerr << archiver_error("verify", rd.error()) << '\n';
    return rd.error().code() == ErrorCode::not_found ? kExitNotFound : kExitError;
  }
  const auto files = segment_files(a.dir);
  std::uint64_t records = 0;
  std::uint64_t expected = files.empty() ? 0 : files.front().first;
  std::uint64_t newest_used = archive::kFileHeaderSize;  // bytes of the newest file that records account for
  const std::uint64_t newest_first = files.empty() ? 0 : files.back().first;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps;
  for (;;) {
    // The reader checks each record's checksum, length and sequence, and
    // names the file and offset of the first that fails.
    auto r = rd->next();
    if (!r.ok()) {
      std::cerr << "shmbus archive verify: BAD: " << r.error().message() << " (after " << records << " good records)\n";
      return kExitError;
    }
    if (!r->has_value()) break;
    const archive::Record& rec = **r;
    if (rec.sequence < expected) {
      std::cerr << "shmbus archive verify: BAD: sequence " << rec.sequence << " after " << expected - 1 << '\n';
      return kExitError;
    }
    if (rec.sequence > expected) gaps.emplace_back(expected, rec.sequence);
    expected = rec.sequence + 1;
    if (rec.sequence >= newest_first) {
      newest_used +=
          (archive::kRecordHeaderSize + rec.payload.size() + archive::kRecordAlign - 1) & ~(archive::kRecordAlign - 1);
    }
    ++records;
  }
  // The reader takes bytes after the newest file's last whole record for a
  // writer's append in progress; offline they are a torn tail.
  if (!files.empty() && files.back().bytes > newest_used) {
    std::cerr << "shmbus archive verify: BAD: archive file '" << files.back().path << "' at offset " << newest_used
              << ": " << files.back().bytes - newest_used
              << " bytes after the last whole record (a torn tail, or an append in progress; the archiver cuts it "
                 "when it opens)\n";
    return kExitError;
  }
  for (const auto& [from, to] : gaps) {
    std::cout << "gap: sequences " << from << ".." << to - 1 << " (" << to - from << ") are not in the archive\n";
  }
  std::cout << "ok: " << records << " records in " << files.size() << " files, sequences "
            << (files.empty() ? 0 : files.front().first) << ".." << (expected > 0 ? expected - 1 : 0) << ", "
            << gaps.size() << " gaps\n";
  return kExitOk;
}

int cmd_archive_prune(const ArchiveArgs& a) {
  if (a.max_age_s == 0 && a.max_bytes == 0) {
    std::cerr << "shmbus archive prune: give --max-age or --max-bytes\n";
    return kExitError;
  }
  const std::uint64_t now = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  auto r = archive::prune(a.dir, seconds_to_ns(a.max_age_s), a.max_bytes, now);
  if (!r.ok()) {
    std::cerr << archiver_error("prune", r.error()) << '\n';
    return kExitError;
  }
  std::cout << "removed " << r->files_removed << " files (" << r->bytes_removed << " bytes); oldest kept sequence "
            << r->first_sequence << '\n';
  return kExitOk;
}

}  // namespace

void add_archive_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("archive", "The channel's disk archive: run the archiver, stat, verify, prune");
  cmd->require_subcommand(1);

  auto r = std::make_shared<ArchiveArgs>();
  auto* run = cmd->add_subcommand("run", "Archive a channel until SIGINT/SIGTERM (then sync and exit 0)");
  run->add_option("CHANNEL", r->channel, "Channel name")->required();
  run->add_option("--bus", r->bus, "Bus name")->capture_default_str();
  run->add_option("--dir", r->dir, "Archive directory (default: the channel's archive_dir)");
  run->add_option("--fsync", r->fsync, "never | interval:MS | batch")->capture_default_str();
  run->add_option("--segment-mb", r->segment_mb, "Segment file size in MiB")
      ->capture_default_str()
      ->check(integer_in(1, 1ULL << 20));
  run->add_option("--max-age", r->max_age_s, "Retention: remove files older than this many seconds (0: keep)")
      ->check(seconds_in(0, 1e9));
  run->add_option("--max-bytes", r->max_bytes, "Retention: keep the archive within this many bytes (0: no limit)")
      ->check(integer_in(0, UINT64_MAX));
  run->add_option("--batch", r->batch, "Messages per append, at most")
      ->capture_default_str()
      ->check(integer_in(1, 1'000'000));
  run->callback([r, &action] { action = [r] { return cmd_archive_run(*r); }; });

  auto s = std::make_shared<ArchiveArgs>();
  auto* stat = cmd->add_subcommand("stat", "Show an archive's range, times, files and size, and the archiver's lag");
  stat->add_option("CHANNEL", s->channel, "Channel name (its archive_dir, and the archiver's lag)");
  stat->add_option("--bus", s->bus, "Bus name")->capture_default_str();
  stat->add_option("--dir", s->dir, "Archive directory");
  stat->add_flag("--json", s->json, "JSON output");
  stat->callback([s, &action] {
    if (s->channel.empty() && s->dir.empty()) throw CLI::ValidationError("archive stat", "give CHANNEL or --dir");
    action = [s] { return cmd_archive_stat(*s); };
  });

  auto v = std::make_shared<ArchiveArgs>();
  auto* verify = cmd->add_subcommand(
      "verify", "Check every record's checksum and order; name the file and offset of the first bad one (exit 1)");
  verify->add_option("--dir", v->dir, "Archive directory")->required();
  verify->callback([v, &action] { action = [v] { return cmd_archive_verify(*v); }; });

  auto p = std::make_shared<ArchiveArgs>();
  auto* prune = cmd->add_subcommand("prune", "Remove the oldest whole files over an age or size limit");
  prune->add_option("--dir", p->dir, "Archive directory")->required();
  prune->add_option("--max-age", p->max_age_s, "Remove files whose every record is older (seconds)")
      ->check(seconds_in(0, 1e9));
  prune->add_option("--max-bytes", p->max_bytes, "Remove oldest files while the archive is larger")
      ->check(integer_in(0, UINT64_MAX));
  prune->callback([p, &action] { action = [p] { return cmd_archive_prune(*p); }; });
}

}  // namespace shmbus::probe
