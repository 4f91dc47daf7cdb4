// Restart from the archive: a channel created over an archive directory
// continues its sequence, pre-loads its ring with the archive's newest
// records, and re-creates the checkpoint's durable subscribers and groups.
// The reboot simulation kills every process of the bus with SIGKILL and
// removes the channel's segment before creating it again.
#include "bus/archive/checkpoint.hpp"
#include "bus/archive/segment.hpp"

#include "../group/group_test_util.hpp"
#include "api/detail.hpp"
#include "bus/ring/layout.hpp"
#include "shm/tsc_clock.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <stdlib.h>
#include <string>
#include <vector>

namespace archive = shmbus::bus::archive;
using shmbus::AckStatus;
using shmbus::Channel;
using shmbus::ChannelOptions;
using shmbus::Delivery;
using shmbus::ErrorCode;
using shmbus::Message;
using shmbus::MessageMeta;
using shmbus::Policy;
using shmbus::PollStatus;
using shmbus::PublishStatus;
using shmbus::StartAt;
using shmbus::test::bytes_of;
using shmbus::test::Child;
using shmbus::test::Event;
using shmbus::test::kTestBus;
using ScopedChannelName = shmbus::test::ScopedGroupChannelName;  // takes its DLQ with it
using shmbus::test::TempDir;
using shmbus::test::value_of;

namespace {

constexpr std::uint64_t kBaseNs = 1'700'000'000'000'000'000ull;

// The metadata every test gives message `seq` (the archive's records and the
// reference channel's publishes alike).
MessageMeta meta_of(std::uint64_t seq) {
  MessageMeta m;
  m.key = seq * 3;
  m.id = seq * 5 + 1;
  m.correlation_id = seq * 7;
  m.type = static_cast<std::uint32_t>(seq % 11);
  m.timestamp_ns = kBaseNs + seq * 1000;
  return m;
}

// Appends records [from, to) to the archive in `dir`, as an archiver would
// have written them from a channel publishing meta_of(seq) and seq as payload.
void write_archive(const std::string& dir, std::uint64_t from, std::uint64_t to) {
  archive::WriterOptions wo;
  wo.fsync = archive::FsyncPolicy::never;
  wo.segment_bytes = 1024;  // several files
  auto w = archive::SegmentWriter::open(dir, wo);
  REQUIRE(w.ok());
  for (std::uint64_t s = from; s < to; ++s) {
    const MessageMeta m = meta_of(s);
    archive::Record r{s, m.timestamp_ns, m.key, m.id, m.correlation_id, m.type, bytes_of(s)};
    auto a = w->append(std::span<const archive::Record>(&r, 1));
    INFO((a.ok() ? std::string() : a.error().message()));
    REQUIRE(a.ok());
  }
  REQUIRE(w->close().ok());
}

// The test's stand-in for the archiver: follows the channel as durable
// subscriber "archiver" and appends what it reads to the archive, synced.
std::uint64_t archive_channel(Channel& ch, const std::string& dir) {
  shmbus::SubscribeOptions so;
  so.name = "archiver";
  so.start = StartAt::earliest();
  auto sub = ch.subscribe(so);
  REQUIRE(sub.ok());
  archive::WriterOptions wo;
  wo.fsync = archive::FsyncPolicy::every_batch;
  auto w = archive::SegmentWriter::open(dir, wo);
  REQUIRE(w.ok());
  std::uint64_t n = 0;
  std::vector<std::byte> buf(ch.max_payload());
  for (;;) {
    Message m;
    const PollStatus st = sub->poll(m, buf);
    if (st == PollStatus::empty) break;
    REQUIRE(st == PollStatus::ok);
    archive::Record r{m.sequence, m.timestamp_ns, m.key, m.id, m.correlation_id, m.type, m.payload};
    REQUIRE(w->append(std::span<const archive::Record>(&r, 1)).ok());
    ++n;
  }
  REQUIRE(w->sync().ok());
  REQUIRE(w->close().ok());
  return n;
}

// Checks that `m` is message `seq` as meta_of and write_archive made it.
void check_message(const Message& m, std::uint64_t seq) {
  const MessageMeta want = meta_of(seq);
  REQUIRE(m.sequence == seq);
  REQUIRE(m.timestamp_ns == want.timestamp_ns);
  REQUIRE(m.key == want.key);
  REQUIRE(m.id == want.id);
  REQUIRE(m.correlation_id == want.correlation_id);
  REQUIRE(m.type == want.type);
  REQUIRE(m.payload.size() == sizeof(std::uint64_t));
  REQUIRE(value_of<std::uint64_t>(m.payload) == seq);
}

ChannelOptions small_options(Policy policy, const std::string& archive_dir) {
  ChannelOptions o;
  o.capacity = 8;
  o.slot_size = 128;
  o.policy = policy;
  o.max_groups = 2;
  o.timestamps = shmbus::TimestampSource::realtime;
  o.archive_dir = archive_dir;
  return o;
}

std::string describe(const Message& m, PollStatus st) {
  std::ostringstream os;
  os << static_cast<int>(st);
  if (st == PollStatus::ok) {
    os << " seq " << m.sequence << " ts " << m.timestamp_ns << " key " << m.key << " id " << m.id << " corr "
       << m.correlation_id << " type " << m.type << " value " << value_of<std::uint64_t>(m.payload);
  }
  return os.str();
}

// Drains `sub` into `trace`.
void drain(shmbus::Subscriber& sub, const char* who, std::vector<std::string>& trace) {
  std::byte buf[128];
  for (int guard = 0; guard < 1000; ++guard) {
    Message m;
    const PollStatus st = sub.poll(m, buf);
    trace.push_back(std::string(who) + ": " + describe(m, st));
    if (st == PollStatus::empty) return;
  }
  FAIL("subscriber never ran empty");
}

void drain_group(shmbus::Consumer& c, std::vector<std::string>& trace) {
  std::byte buf[128];
  for (int guard = 0; guard < 1000; ++guard) {
    Delivery d;
    const PollStatus st = c.receive(d, buf);
    trace.push_back("group: " + describe(d.message, st) + " attempt " + std::to_string(d.attempt));
    if (st == PollStatus::empty) return;
    if (st == PollStatus::ok) REQUIRE(c.ack(d) == AckStatus::ok);
  }
  FAIL("group never ran empty");
}

// The same operations on a channel: what it reads before and after several
// rounds of publishing through every publish path. On drop_oldest, one round
// laps the readers.
std::vector<std::string> run_script(Channel& ch, std::uint64_t n) {
  std::vector<std::string> trace;
  const Policy policy = ch.options().policy;
  const std::uint64_t cap = ch.options().capacity;
  trace.push_back("head " + std::to_string(ch.head()) + " oldest " + std::to_string(ch.oldest()));
  {
    Message m;
    std::byte buf[128];
    for (std::uint64_t s = ch.oldest(); s < ch.head(); ++s) {
      trace.push_back("peek: " + describe(m, ch.peek(s, m, buf)));
    }
  }
  shmbus::SubscribeOptions early;
  early.start = StartAt::earliest();
  auto se = ch.subscribe(early);
  REQUIRE(se.ok());
  auto sl = ch.subscribe({});
  REQUIRE(sl.ok());
  auto g = ch.join_group("g");
  REQUIRE(g.ok());
  auto pub = ch.publisher();
  REQUIRE(pub.ok());
  drain(*se, "earliest", trace);
  drain(*sl, "latest", trace);
  drain_group(*g, trace);
  std::uint64_t seq = n;
  for (int round = 0; round < 4; ++round) {
    const std::uint64_t count = (policy == Policy::drop_oldest && round == 2) ? 2 * cap + 3 : cap / 2 + 1;
    for (std::uint64_t i = 0; i < count; ++i, ++seq) {
      REQUIRE(pub->publish(bytes_of(seq), meta_of(seq), 0) == PublishStatus::ok);
    }
    if (!(policy == Policy::drop_oldest && round == 2)) {
      // A batch of two and one zero-copy claim.
      const std::uint64_t a = seq, b = seq + 1;
      const shmbus::OutMessage batch[2] = {{bytes_of(a), meta_of(a)}, {bytes_of(b), meta_of(b)}};
      REQUIRE(pub->publish_batch(batch, 0) == PublishStatus::ok);
      seq += 2;
      shmbus::Claim c;
      REQUIRE(pub->try_claim(8, c, 0) == PublishStatus::ok);
      REQUIRE(c.sequence == seq);
      std::memcpy(c.payload.data(), &seq, 8);
      REQUIRE(pub->commit(c, 8, meta_of(seq)) == PublishStatus::ok);
      ++seq;
    }
    trace.push_back("round " + std::to_string(round) + " head " + std::to_string(ch.head()));
    drain(*se, "earliest", trace);
    drain(*sl, "latest", trace);
    drain_group(*g, trace);
  }
  const shmbus::ChannelStats st = ch.stats();
  // Nothing waited out a stalled claim: every slot the publishers met was
  // finished (committed or abandoned) at the sequence they expected.
  REQUIRE(st.abandoned == 0);
  REQUIRE(st.lost_claims == 0);
  REQUIRE(st.timeouts == 0);
  return trace;
}

}  // namespace

TEST_CASE("a channel created over an archive at head N works like one that published up to N", "[archive][reboot]") {
  for (const Policy policy : {Policy::block, Policy::drop_oldest, Policy::reject}) {
    for (const std::uint64_t n : {1ull, 3ull, 8ull, 13ull, 40ull}) {
      CAPTURE(static_cast<int>(policy), n);
      TempDir dir("shmbus-reboot");
      write_archive(dir.str(), 0, n);
      ScopedChannelName restored_name("rb");
      auto restored = Channel::create(restored_name.str(), small_options(policy, dir.str()), kTestBus);
      INFO((restored.ok() ? std::string() : restored.error().message()));
      REQUIRE(restored.ok());
      REQUIRE(restored->head() == n);
      // The ring alone is compared: readers of the restored channel would
      // also read what the ring lacks from the archive (which the reference
      // has not got), so the archive goes once it has been restored from.
      std::filesystem::rename(dir.str(), dir.str() + ".restored");
      struct Back {
        std::string from, to;
        ~Back() {
          std::error_code ec;
          std::filesystem::rename(from, to, ec);
        }
      } back{dir.str() + ".restored", dir.str()};

      ScopedChannelName ref_name("ref");
      Channel ref = shmbus::test::make_channel(ref_name, small_options(policy, ""));
      {
        auto pub = ref.publisher();
        REQUIRE(pub.ok());
        for (std::uint64_t s = 0; s < n; ++s) REQUIRE(pub->publish(bytes_of(s), meta_of(s), 0) == PublishStatus::ok);
      }
      const std::vector<std::string> want = run_script(ref, n);
      const std::vector<std::string> got = run_script(*restored, n);
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < want.size(); ++i) {
        CAPTURE(i);
        REQUIRE(got[i] == want[i]);
      }
    }
  }
}

TEST_CASE("slots of the last lap that the archive never held are skipped, and publishers never wait on them",
          "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 10, 13);  // the archive starts at 10: 5..9 were never archived
  ScopedChannelName name("rb");
  auto ch = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  REQUIRE(ch.ok());
  REQUIRE(ch->head() == 13);
  REQUIRE(ch->oldest() == 5);
  shmbus::SubscribeOptions early;
  early.start = StartAt::earliest();
  auto sub = ch->subscribe(early);
  REQUIRE(sub.ok());
  auto g = ch->join_group("g");
  REQUIRE(g.ok());
  std::byte buf[128];
  Message m;
  Delivery d;
  for (std::uint64_t s = 10; s < 13; ++s) {
    REQUIRE(sub->poll(m, buf) == PollStatus::ok);
    check_message(m, s);
    REQUIRE(g->receive(d, buf) == PollStatus::ok);
    check_message(d.message, s);
    REQUIRE(g->ack(d) == AckStatus::ok);
  }
  REQUIRE(sub->poll(m, buf) == PollStatus::empty);
  auto pub = ch->publisher();
  REQUIRE(pub.ok());
  for (std::uint64_t s = 13; s < 13 + 3 * 8; ++s) {
    REQUIRE(pub->publish(bytes_of(s), meta_of(s), 0) == PublishStatus::ok);
    REQUIRE(sub->poll(m, buf) == PollStatus::ok);
    check_message(m, s);
    REQUIRE(g->receive(d, buf) == PollStatus::ok);
    check_message(d.message, s);
    REQUIRE(g->ack(d) == AckStatus::ok);
  }
  const auto st = ch->stats();
  REQUIRE(st.abandoned == 0);  // no claim was waited out and taken away
  REQUIRE(st.lost_claims == 0);
  REQUIRE(st.groups.at(0).lost == 0);
}

// Creates a channel with timestamp source `ts` over an archive of records
// 0..19 and checks the times its readers see: the archive's for the
// pre-loaded records, the wall clock's for a new one. With `want_ticks`, the
// new message must hold counter ticks in its slot (and the pre-loaded ones
// realtime ns). Runs in a forked child too, so it reports by number: 0 if
// every check passed, else the number of the first that failed.
int check_preload_times(const std::string& dir, shmbus::TimestampSource ts, bool want_ticks) {
  int step = 0;
  const auto check = [&step](bool ok) {
    ++step;
    return ok;
  };
  const auto same = [](const Message& m, std::uint64_t seq) {
    const MessageMeta w = meta_of(seq);
    return m.sequence == seq && m.timestamp_ns == w.timestamp_ns && m.key == w.key && m.id == w.id &&
           value_of<std::uint64_t>(m.payload) == seq;
  };
  ScopedChannelName name("rbts");
  ChannelOptions o = small_options(Policy::block, dir);
  o.timestamps = ts;
  auto ch = Channel::create(name.str(), o, kTestBus);
  if (!check(ch.ok())) return step;
  // Peek, a subscriber's poll and a search by time see the archive's times.
  std::byte buf[128];
  Message m;
  if (!check(ch->peek(15, m, buf) == PollStatus::ok && same(m, 15))) return step;
  if (!check(ch->sequence_at(meta_of(14).timestamp_ns + 1) == 15)) return step;
  shmbus::SubscribeOptions so;
  so.start = StartAt::at_time(meta_of(13).timestamp_ns);
  auto sub = ch->subscribe(so);
  if (!check(sub.ok())) return step;
  for (std::uint64_t s = 13; s < 20; ++s) {
    if (!check(sub->poll(m, buf) == PollStatus::ok && same(m, s))) return step;
  }
  // A new message is stamped by the channel's own clock (counter ticks on
  // a tsc channel where the counter is usable), converted to realtime.
  auto pub = ch->publisher();
  if (!check(pub.ok())) return step;
  const auto before = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  if (!check(pub->publish(bytes_of(std::uint64_t{20})) == PublishStatus::ok)) return step;
  if (!check(sub->poll(m, buf) == PollStatus::ok && m.sequence == 20)) return step;
  // Within a second of the wall clock: a counter stamp misread as realtime
  // ns (or the archive's times as ticks) would be decades off.
  const std::uint64_t diff = m.timestamp_ns > before ? m.timestamp_ns - before : before - m.timestamp_ns;
  if (!check(diff < 1'000'000'000ull)) return step;
  if (!check(ch->peek(19, m, buf) == PollStatus::ok && same(m, 19))) return step;
  const auto& state = *shmbus::detail::state_of(*ch);
  const bool ticks20 = shmbus::bus::stored_time_is_ticks(state.slot(20)->meta.timestamp);
  const bool ticks19 = shmbus::bus::stored_time_is_ticks(state.slot(19)->meta.timestamp);
  if (!check(!ticks19 && ticks20 == want_ticks)) return step;
  return 0;
}

TEST_CASE("the pre-loaded ring keeps the archive's realtime stamps on counter- and realtime-stamped channels",
          "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  {
    const std::string d = dir.sub("realtime");
    write_archive(d, 0, 20);
    REQUIRE(check_preload_times(d, shmbus::TimestampSource::realtime, false) == 0);
  }
  // A counter-stamped channel, with the counter forced on (SHMBUS_TSC=1, read
  // once per process: hence a fresh child), so that one ring holds the
  // archive's realtime ns and the new message's ticks side by side.
  const std::string d = dir.sub("tsc");
  write_archive(d, 0, 20);
  Child child([&] {
    ::setenv("SHMBUS_TSC", "1", 1);
    if (!shmbus::shm::tsc_usable()) return 100;  // no counter on this CPU
    return check_preload_times(d, shmbus::TimestampSource::tsc, true);
  });
  const int rc = child.wait();
  if (rc == 100) {
    WARN("no usable counter: the tsc channel was checked with realtime stamps only");
    REQUIRE(check_preload_times(d, shmbus::TimestampSource::tsc, false) == 0);
  } else {
    REQUIRE(rc == 0);
  }
}

TEST_CASE("durable subscribers come back detached with their names, flags and clamped cursors", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 10, 40);  // capacity 8: the ring holds 32..39
  archive::Checkpoint cp;
  cp.head = 40;
  const auto sub = [](const char* name, std::uint64_t cursor, std::uint32_t flags, std::uint32_t state) {
    archive::SubscriberCheckpoint s;
    s.name = name;
    s.cursor = cursor;
    s.flags = flags;
    s.state = state;
    s.delivered = 11;
    s.lost = 2;
    s.lapped_events = 1;
    return s;
  };
  constexpr std::uint32_t kOtherBit = 0x40000000u;  // a flag bit restore does not know: kept as is
  cp.subscribers.push_back(sub("in-ring", 34, shmbus::bus::kSubDurable | kOtherBit, shmbus::bus::kEntryActive));
  cp.subscribers.push_back(sub("in-archive", 20, shmbus::bus::kSubDurable, shmbus::bus::kEntryDetached));
  cp.subscribers.push_back(sub("pruned", 4, shmbus::bus::kSubDurable, shmbus::bus::kEntryDetached));
  cp.subscribers.push_back(sub("ahead", 100, shmbus::bus::kSubDurable, shmbus::bus::kEntryResuming));
  cp.subscribers.push_back(sub("evicted", 12, shmbus::bus::kSubDurable, shmbus::bus::kEntryEvicted));
  REQUIRE(archive::write_checkpoint(dir.str(), cp).ok());

  ScopedChannelName name("rb");
  auto ch = Channel::create(name.str(), small_options(Policy::drop_oldest, dir.str()), kTestBus);
  INFO((ch.ok() ? std::string() : ch.error().message()));
  REQUIRE(ch.ok());
  const auto st = ch->stats();
  REQUIRE(st.subscribers.size() == 5);
  const auto find = [&](const std::string& n) {
    for (const auto& s : st.subscribers) {
      if (s.name == n) return s;
    }
    FAIL("no subscriber " << n);
    return shmbus::SubscriberStats{};
  };
  REQUIRE(find("in-ring").cursor == 34);
  REQUIRE(find("in-ring").state == "detached");
  REQUIRE(find("in-ring").delivered == 11);
  REQUIRE(find("in-ring").lost == 2);
  REQUIRE(find("in-archive").cursor == 20);  // kept: the archive holds it
  REQUIRE(find("pruned").cursor == 10);      // the archive's first record, the gap counted
  REQUIRE(find("pruned").lost == 2 + 6);
  REQUIRE(find("pruned").lapped_events == 2);
  REQUIRE(find("ahead").cursor == 40);  // clamped to head
  REQUIRE(find("ahead").state == "detached");
  REQUIRE(find("evicted").state == "evicted");
  for (const auto& s : st.subscribers) REQUIRE(s.durable);
  const auto& state = *shmbus::detail::state_of(*ch);
  REQUIRE(state.subscribers[0].flags.load() == (shmbus::bus::kSubDurable | kOtherBit));

  // Resuming by name reads on from the checkpointed cursor.
  shmbus::SubscribeOptions so;
  so.name = "in-ring";
  auto r = ch->subscribe(so);
  REQUIRE(r.ok());
  std::byte buf[128];
  Message m;
  for (std::uint64_t s = 34; s < 40; ++s) {
    REQUIRE(r->poll(m, buf) == PollStatus::ok);
    check_message(m, s);
  }
  REQUIRE(r->poll(m, buf) == PollStatus::empty);
}

TEST_CASE("groups come back with their settings and floors, every lease empty, an old floor counted as lost",
          "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  ScopedChannelName name("rb");
  write_archive(dir.str(), 0, 40);  // capacity 8: the ring holds 32..39
  archive::Checkpoint cp;
  cp.head = 40;
  archive::GroupCheckpoint g;
  g.name = "behind";
  g.visibility_timeout_ns = 9'000'000'000ull;
  g.backoff_base_ns = 1'000'000;
  g.backoff_cap_ns = 5'000'000;
  g.max_deliveries = 7;
  g.jitter_permille = 0;
  g.floor = 20;
  g.next = 30;
  g.acked = 20;
  g.delivered = 30;
  g.lost = 1;
  cp.groups.push_back(g);
  g.name = "inflight";
  g.dlq = name.dlq();
  g.floor = 34;
  g.next = 38;
  g.lost = 0;
  cp.groups.push_back(g);
  REQUIRE(archive::write_checkpoint(dir.str(), cp).ok());

  auto ch = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  INFO((ch.ok() ? std::string() : ch.error().message()));
  REQUIRE(ch.ok());
  const auto st = ch->stats();
  REQUIRE(st.groups.size() == 2);
  REQUIRE(st.groups[0].name == "behind");
  REQUIRE(st.groups[0].floor == 32);
  REQUIRE(st.groups[0].next == 32);
  REQUIRE(st.groups[0].lost == 1 + 12);
  REQUIRE(st.groups[0].acked == 20);
  REQUIRE(st.groups[0].visibility_timeout_ns == 9'000'000'000ull);
  REQUIRE(st.groups[0].max_deliveries == 7);
  REQUIRE(st.groups[1].floor == 34);
  REQUIRE(st.groups[1].next == 34);
  REQUIRE(st.groups[1].in_flight == 0);
  REQUIRE(st.groups[1].dlq == name.dlq());

  // Joining with other settings is refused: they are the group's own.
  shmbus::GroupOptions go;
  go.visibility_timeout_ns = 9'000'000'000ull;
  go.backoff_base_ns = 1'000'000;
  go.backoff_cap_ns = 5'000'000;
  go.max_deliveries = 7;
  go.jitter_permille = 0;
  go.dlq = name.dlq();
  shmbus::GroupOptions other = go;
  other.max_deliveries = 6;
  auto bad = ch->join_group("inflight", other);
  REQUIRE(!bad.ok());
  REQUIRE(bad.error().code() == ErrorCode::parameter_mismatch);
  // What was in flight (34..37) comes again, first attempt of this lease
  // table, then the rest.
  auto c = ch->join_group("inflight", go);
  INFO((c.ok() ? std::string() : c.error().message()));
  REQUIRE(c.ok());
  std::byte buf[128];
  Delivery d;
  for (std::uint64_t s = 34; s < 40; ++s) {
    REQUIRE(c->receive(d, buf) == PollStatus::ok);
    check_message(d.message, s);
    REQUIRE(d.attempt == 1);
    REQUIRE(c->ack(d) == AckStatus::ok);
  }
  REQUIRE(c->receive(d, buf) == PollStatus::empty);
  REQUIRE(ch->stats().groups[1].floor == 40);
}

TEST_CASE("a checkpoint whose head is past the archive's end is clamped to the archive", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 0, 12);
  archive::Checkpoint cp;
  cp.head = 50;  // fsync never, then a power cut: the archive lost its tail
  archive::SubscriberCheckpoint s;
  s.name = "reader";
  s.cursor = 45;
  s.flags = shmbus::bus::kSubDurable;
  s.state = shmbus::bus::kEntryDetached;
  cp.subscribers.push_back(s);
  archive::GroupCheckpoint g;
  g.name = "g";
  g.visibility_timeout_ns = 1'000'000'000;
  g.backoff_cap_ns = 1'000'000;
  g.max_deliveries = 5;
  g.floor = 44;
  g.next = 48;
  cp.groups.push_back(g);
  REQUIRE(archive::write_checkpoint(dir.str(), cp).ok());
  ScopedChannelName name("rb");
  auto ch = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  REQUIRE(ch.ok());
  REQUIRE(ch->head() == 12);
  const auto st = ch->stats();
  REQUIRE(st.subscribers.at(0).cursor == 12);
  REQUIRE(st.groups.at(0).floor == 12);
  auto pub = ch->publisher();
  REQUIRE(pub.ok());
  REQUIRE(pub->publish(bytes_of(std::uint64_t{12}), meta_of(12), 0) == PublishStatus::ok);
  shmbus::SubscribeOptions so;
  so.name = "reader";
  auto r = ch->subscribe(so);
  REQUIRE(r.ok());
  std::byte buf[128];
  Message m;
  REQUIRE(r->poll(m, buf) == PollStatus::ok);
  check_message(m, 12);
  // open_or_create of the live channel opens it: nothing is restored again.
  auto same = Channel::open_or_create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  REQUIRE(same.ok());
  REQUIRE(same->head() == 13);
  REQUIRE(same->stats().subscribers.at(0).cursor == 13);
}

TEST_CASE("a damaged checkpoint refuses the create with an error naming the file", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 0, 5);
  archive::Checkpoint cp;
  cp.head = 5;
  REQUIRE(archive::write_checkpoint(dir.str(), cp).ok());
  const std::string path = dir.sub("checkpoint");
  std::filesystem::resize_file(path, 30);
  ScopedChannelName name("rb");
  auto ch = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  REQUIRE(!ch.ok());
  INFO(ch.error().message());
  REQUIRE(ch.error().code() == ErrorCode::corrupted);
  REQUIRE(ch.error().message().find(path) != std::string::npos);
  REQUIRE(ch.error().message().find(name.str()) != std::string::npos);
  // Nothing was linked: the channel does not exist.
  auto o = Channel::open(name.str(), kTestBus);
  REQUIRE(!o.ok());
  REQUIRE(o.error().code() == ErrorCode::not_found);
  // Without the checkpoint, the create continues the archive alone.
  std::filesystem::remove(path);
  auto again = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  REQUIRE(again.ok());
  REQUIRE(again->head() == 5);
}

TEST_CASE("a create waits for an archiver still writing the archive: busy until it stops", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 0, 5);
  ScopedChannelName name("rb");
  {
    // An archiver of the channel's previous incarnation, still appending.
    auto w = archive::SegmentWriter::open(dir.str(), {});
    REQUIRE(w.ok());
    auto ch = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
    REQUIRE(!ch.ok());
    INFO(ch.error().message());
    CHECK(ch.error().code() == ErrorCode::busy);
    CHECK(ch.error().message().find("archiver still holds") != std::string::npos);
    CHECK(ch.error().message().find(dir.str()) != std::string::npos);
    CHECK(Channel::open(name.str(), kTestBus).error().code() == ErrorCode::not_found);  // nothing linked
  }
  auto again = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  REQUIRE(again.ok());
  CHECK(again->head() == 5);
}

TEST_CASE("an absent or empty archive directory gives a plain create", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  for (const std::string& d : {dir.sub("absent"), dir.str()}) {
    ScopedChannelName name("rb");
    auto ch = Channel::create(name.str(), small_options(Policy::block, d), kTestBus);
    REQUIRE(ch.ok());
    REQUIRE(ch->head() == 0);
    REQUIRE(ch->stats().subscribers.empty());
    auto pub = ch->publisher();
    REQUIRE(pub.ok());
    REQUIRE(pub->publish(bytes_of(std::uint64_t{0}), meta_of(0), 0) == PublishStatus::ok);
    Message m;
    std::byte buf[128];
    REQUIRE(ch->peek(0, m, buf) == PollStatus::ok);
  }
}

TEST_CASE("a torn tail of the newest archive file ends the restored sequence and is left for the writer",
          "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 0, 30);
  std::string newest;
  for (const auto& e : std::filesystem::directory_iterator(dir.str())) {
    if (e.path().extension() == ".seg" && e.path().string() > newest) newest = e.path().string();
  }
  REQUIRE(!newest.empty());
  const auto size = std::filesystem::file_size(newest);
  std::filesystem::resize_file(newest, size - 5);  // the last record cut short
  ScopedChannelName name("rb");
  auto ch = Channel::create(name.str(), small_options(Policy::block, dir.str()), kTestBus);
  INFO((ch.ok() ? std::string() : ch.error().message()));
  REQUIRE(ch.ok());
  REQUIRE(ch->head() == 29);
  REQUIRE(std::filesystem::file_size(newest) == size - 5);  // read only
  Message m;
  std::byte buf[128];
  REQUIRE(ch->peek(28, m, buf) == PollStatus::ok);
  check_message(m, 28);
}

// The reboot simulation. Forked publishers publish; a durable subscriber and
// a group consumer (each its own process) read and ack part of it; a
// checkpoint is taken; more is published; the archive is filled; then every
// process is killed with SIGKILL and the channel's segment removed. Created
// again with the same archive directory, the channel continues the sequence,
// the subscriber resumes at its checkpointed cursor, and the group
// redelivers what was in flight at the checkpoint.
TEST_CASE("after a simulated reboot the channel continues from its archive and checkpoint", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  ScopedChannelName name("reboot");
  ChannelOptions o;
  o.capacity = 256;
  o.slot_size = 128;
  o.policy = Policy::block;
  o.max_groups = 2;
  o.archive_dir = dir.str();
  Channel ch = shmbus::test::make_channel(name, o);
  constexpr std::uint64_t kFirst = 150;  // published before the checkpoint (two publishers)
  constexpr std::uint64_t kAfter = 60;   // published after it
  constexpr std::uint64_t kRead = 50;    // what the subscriber reads before the checkpoint
  constexpr std::uint64_t kAcked = 20;   // what the consumer acks of the kTaken it receives
  constexpr std::uint64_t kTaken = 30;

  Event published, sub_done, group_done, more;
  const auto publisher = [&](std::uint32_t who, std::uint64_t count, Event& done) {
    return [&, who, count] {
      auto c = Channel::open(name.str(), kTestBus);
      if (!c) return 1;
      auto pub = c->publisher();
      if (!pub) return 2;
      for (std::uint64_t i = 0; i < count; ++i) {
        const shmbus::test::Payload p{who, 0, i, shmbus::test::check_of(who, i)};
        if (pub->publish(bytes_of(p)) != PublishStatus::ok) return 3;
      }
      done.signal();
      ::pause();  // killed by the reboot
      return 0;
    };
  };
  Child p0(publisher(0, kFirst / 2, published));
  Child p1(publisher(1, kFirst / 2, published));
  REQUIRE(published.wait());
  REQUIRE(published.wait());
  Child reader([&] {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 1;
    shmbus::SubscribeOptions so;
    so.name = "reader";
    so.start = StartAt::earliest();
    auto sub = c->subscribe(so);
    if (!sub) return 2;
    std::byte buf[128];
    for (std::uint64_t i = 0; i < kRead; ++i) {
      Message m;
      if (sub->poll_wait(m, buf, 5'000'000'000ull) != PollStatus::ok || m.sequence != i) return 3;
    }
    sub_done.signal();
    ::pause();
    return 0;
  });
  Child worker([&] {
    auto c = Channel::open(name.str(), kTestBus);
    if (!c) return 1;
    auto g = c->join_group("workers");
    if (!g) return 2;
    std::byte buf[128];
    for (std::uint64_t i = 0; i < kTaken; ++i) {
      Delivery d;
      if (g->receive_wait(d, buf, 5'000'000'000ull) != PollStatus::ok || d.sequence != i) return 3;
      if (i < kAcked && g->ack(d) != AckStatus::ok) return 4;
    }
    group_done.signal();
    ::pause();
    return 0;
  });
  REQUIRE(sub_done.wait());
  REQUIRE(group_done.wait());

  auto taken = archive::checkpoint_channel(*shmbus::detail::state_of(ch), dir.str());
  INFO((taken.ok() ? std::string() : taken.error().message()));
  REQUIRE(taken.ok());
  REQUIRE(taken->head == kFirst);
  REQUIRE(taken->groups.size() == 1);
  REQUIRE(taken->groups[0].floor == kAcked);
  REQUIRE(taken->groups[0].next == kTaken);

  Child p2(publisher(2, kAfter, more));
  REQUIRE(more.wait());
  // The reference: every message, as the channel holds it before the reboot.
  std::vector<std::vector<std::byte>> payloads;
  std::vector<std::uint64_t> times;
  for (std::uint64_t s = 0; s < kFirst + kAfter; ++s) {
    Message m;
    std::byte buf[128];
    REQUIRE(ch.peek(s, m, buf) == PollStatus::ok);
    payloads.emplace_back(m.payload.begin(), m.payload.end());
    times.push_back(m.timestamp_ns);
  }
  REQUIRE(archive_channel(ch, dir.str()) == kFirst + kAfter);

  // The reboot: every process of the bus killed, the segment removed.
  for (Child* c : {&p0, &p1, &p2, &reader, &worker}) REQUIRE(c->kill_and_wait() == 128 + SIGKILL);
  ch = Channel();
  REQUIRE(Channel::remove(name.str(), kTestBus).ok());
  REQUIRE(!Channel::open(name.str(), kTestBus).ok());

  auto again = Channel::create(name.str(), o, kTestBus);
  INFO((again.ok() ? std::string() : again.error().message()));
  REQUIRE(again.ok());
  REQUIRE(again->head() == kFirst + kAfter);
  std::byte buf[128];
  // The durable subscriber resumes at its checkpointed cursor and reads the
  // pre-loaded ring, then a new message at the archive's end.
  shmbus::SubscribeOptions so;
  so.name = "reader";
  auto sub = again->subscribe(so);
  REQUIRE(sub.ok());
  {
    auto pub = again->publisher();
    REQUIRE(pub.ok());
    REQUIRE(pub->publish(bytes_of(std::uint64_t{424242})) == PublishStatus::ok);
  }
  for (std::uint64_t s = kRead; s < kFirst + kAfter; ++s) {
    Message m;
    REQUIRE(sub->poll(m, buf) == PollStatus::ok);
    REQUIRE(m.sequence == s);
    REQUIRE(std::vector<std::byte>(m.payload.begin(), m.payload.end()) == payloads[s]);
    REQUIRE(m.timestamp_ns == times[s]);
  }
  Message m;
  REQUIRE(sub->poll(m, buf) == PollStatus::ok);
  REQUIRE(m.sequence == kFirst + kAfter);
  REQUIRE(value_of<std::uint64_t>(m.payload) == 424242);
  // The group redelivers what was in flight at the checkpoint, then goes on.
  auto g = again->join_group("workers");
  REQUIRE(g.ok());
  for (std::uint64_t s = kAcked; s <= kFirst + kAfter; ++s) {
    Delivery d;
    REQUIRE(g->receive(d, buf) == PollStatus::ok);
    REQUIRE(d.sequence == s);
    if (s < kFirst + kAfter) {
      REQUIRE(std::vector<std::byte>(d.message.payload.begin(), d.message.payload.end()) == payloads[s]);
    }
    REQUIRE(g->ack(d) == AckStatus::ok);
  }
  Delivery d;
  REQUIRE(g->receive(d, buf) == PollStatus::empty);
  const auto st = again->stats();
  REQUIRE(st.groups.at(0).lost == 0);
  REQUIRE(st.groups.at(0).acked == kAcked + (kFirst + kAfter + 1 - kAcked));
}

TEST_CASE("a checkpoint with more entries than the new channel's tables refuses the create", "[archive][reboot]") {
  TempDir dir("shmbus-reboot");
  write_archive(dir.str(), 0, 4);
  archive::Checkpoint cp;
  cp.head = 4;
  for (const char* n : {"a", "b", "c"}) {
    archive::SubscriberCheckpoint s;
    s.name = n;
    s.flags = shmbus::bus::kSubDurable;
    s.state = shmbus::bus::kEntryDetached;
    cp.subscribers.push_back(s);
  }
  REQUIRE(archive::write_checkpoint(dir.str(), cp).ok());
  ScopedChannelName name("rb");
  ChannelOptions o = small_options(Policy::block, dir.str());
  o.max_subscribers = 2;
  auto ch = Channel::create(name.str(), o, kTestBus);
  REQUIRE(!ch.ok());
  INFO(ch.error().message());
  REQUIRE(ch.error().code() == ErrorCode::table_full);
  REQUIRE(ch.error().message().find("max_subscribers 2") != std::string::npos);
  o.max_subscribers = 3;
  auto fits = Channel::create(name.str(), o, kTestBus);
  REQUIRE(fits.ok());
  REQUIRE(fits->stats().subscribers.size() == 3);
}
