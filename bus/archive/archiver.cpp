// The archiver's loop (docs/protocol.md 13.11): copy a batch out of the ring
// without publishing the cursor, append it, fsync per policy, then publish.
#include "bus/archive/archiver.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "bus/archive/checkpoint.hpp"
#include "bus/common/util.hpp"
#include "bus/ring/layout.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/slots.hpp"
#include "shm/atomics.hpp"
#include "shm/clock.hpp"

namespace shmbus::bus::archive {

namespace {

constexpr std::uint64_t kWaitSliceNs = 100'000'000;  // run(): how often a stop request is looked at

// FNV-1a of "<bus>/<channel>": stored in each file header so that a file
// found in the wrong directory can be recognised (not checked on read).
std::uint64_t channel_hash(const ChannelState& ch) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  const std::string id = ch.bus + "/" + ch.name;
  for (const char c : id) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

FsyncPolicy policy_of(ArchiveFsync f) {
  switch (f) {
    case ArchiveFsync::never: return FsyncPolicy::never;
    case ArchiveFsync::interval: return FsyncPolicy::interval;
    case ArchiveFsync::batch: return FsyncPolicy::every_batch;
  }
  return FsyncPolicy::interval;
}

void bump(std::atomic<std::uint64_t>& a, std::uint64_t by) noexcept {
  // relaxed: a statistic with a single writer (the archiving thread).
  a.store(a.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

void put(std::atomic<std::uint64_t>& a, std::uint64_t v) noexcept {
  a.store(v, std::memory_order_relaxed);  // relaxed: a statistic
}

}  // namespace

Result<std::unique_ptr<ArchiverEngine>> ArchiverEngine::open(std::shared_ptr<ChannelState> ch, const std::string& dir,
                                                             const ArchiverOptions& opts) {
  if (dir.empty()) {
    return Error(ErrorCode::invalid_argument,
                 "channel '" + ch->name +
                     "' has no archive directory: create it with ChannelOptions::archive_dir (or "
                     "$SHMBUS_ARCHIVE_DIR set), or give the archiver a directory");
  }
  if (opts.batch == 0) return Error(ErrorCode::invalid_argument, "archiver batch must be at least 1");
  std::unique_ptr<ArchiverEngine> e(new ArchiverEngine());
  e->opts_ = opts;
  e->dir_ = dir;
  WriterOptions w;
  w.segment_bytes = opts.segment_bytes;
  w.fsync = policy_of(opts.fsync);
  w.fsync_interval_ns = opts.fsync_interval_ns;
  w.channel_hash = channel_hash(*ch);
  // The directory's lock first: a second archiver of the same archive is
  // turned away before it touches the channel.
  auto writer = SegmentWriter::open(dir, w);
  if (!writer.ok()) return writer.error();
  e->writer_.emplace(std::move(*writer));
  put(e->c_.recovered_bytes, e->writer_->recovered_bytes());
  SubscribeOptions so;
  so.name = std::string(kArchiverName);
  so.start = StartAt::earliest();  // a new archive takes everything the ring still holds
  so.wait = opts.wait;
  auto core = SubscriberCore::create(ch, so);
  if (!core.ok()) return core.error();
  e->core_ = std::move(*core);
  // From here on only the archiver (and groups) hold block publishers
  // (gating_minimum). Until this store the entry gates like any other.
  // seq_cst: with the entry's activation, before any cursor we publish.
  ch->subscribers[e->core_->index()].flags.fetch_or(kSubArchiver, std::memory_order_seq_cst);
  e->ch_ = std::move(ch);
  if (auto p = e->position(); !p.ok()) return p.error();
  // The payload of one message always fits: max_payload bounds it.
  e->last_path_ = e->writer_->current_path();
  e->last_prune_ns_ = shm::monotonic_ns();
  put(e->c_.next_sequence, e->core_->cursor());
  return e;
}

// Exactly once: the cursor goes where the archive ends. A killed archiver
// may have appended a batch without publishing its cursor (it is not
// appended again), or published past records it had not appended only in
// the cases 13.11 lists (they are then re-read, or counted as a gap).
Result<void> ArchiverEngine::position() {
  if (writer_->empty()) return {};  // a new archive starts where the cursor is
  const std::uint64_t end = writer_->next_sequence();
  // acquire: a head at least as new as any record we archived.
  const std::uint64_t head = shm::load_acquire(ch_->producer->head);
  if (end > head) {
    return Error(ErrorCode::invalid_argument,
                 "archive '" + dir_ + "' ends at sequence " + num(end) + " but channel '" + ch_->name + "' has head " +
                     num(head) +
                     ": the channel was re-created without its archive (restore it, or archive into another "
                     "directory)");
  }
  if (core_->cursor() != end) core_->seek(end);
  return {};
}

ArchiverEngine::~ArchiverEngine() {
  // The cursor equals the archive's end between calls (every path of
  // poll_once ends so), so the core's own release publishes nothing unarchived.
  core_.reset();
}

bool ArchiverEngine::committed_at(std::uint64_t seq) const noexcept {
  // acquire: as SubscriberCore::begin_read's load of the same stamp.
  return shm::load_acquire(ch_->slot(seq)->stamp) == make_stamp(seq, kStampCommitted);
}

Error ArchiverEngine::fail(Error e) {
  // Whatever failed, the cursor goes back to where the archive ends: what
  // was read but not appended is read again (under block the ring still
  // holds it: our shared cursor never passed it).
  // (An archive still empty ends where this batch began.)
  const std::uint64_t end = writer_->empty() ? batch_start_ : writer_->next_sequence();
  if (core_->cursor() != end) core_->seek(end);
  put(c_.next_sequence, end);
  if (e.code() == ErrorCode::no_space) bump(c_.no_space, 1);
  {
    const std::lock_guard<std::mutex> lock(error_mutex_);
    last_error_ = e.message();
  }
  return e;
}

void ArchiverEngine::note_synced() noexcept {
  const std::uint64_t t = writer_->synced_realtime_ns();
  put(c_.last_fsync, t);
  // For the probe (ChannelStats::archive): relaxed, a statistic.
  if (t != 0) shm::store_relaxed(ch_->subscribers[core_->index()].archive_synced_ns, t);
}

Result<void> ArchiverEngine::checkpoint() {
  last_checkpoint_ns_ = shm::monotonic_ns();
  auto c = checkpoint_channel(*ch_, dir_);
  if (!c.ok()) return c.error();
  return {};
}

// A checkpoint when one is due. A failed one does not stop archiving: it is
// reported (last_error) and tried again at the next interval.
Result<void> ArchiverEngine::maybe_checkpoint() {
  if (opts_.checkpoint_interval_ns == 0) return {};
  if (shm::monotonic_ns() - last_checkpoint_ns_ < opts_.checkpoint_interval_ns) return {};
  return checkpoint();
}

// The ring no longer holds [expected, to): the archive continues at `to`.
Result<void> ArchiverEngine::gap_to(std::uint64_t to, std::uint64_t expected) {
  if (to <= expected) return {};
  if (auto s = writer_->skip_to(to); !s.ok()) return s;
  bump(c_.lost, to - expected);
  bump(c_.gaps, 1);
  put(c_.gap_from, expected);
  put(c_.gap_to, to);
  return {};
}

Result<std::size_t> ArchiverEngine::poll_once() {
  if (!core_) return Error(ErrorCode::invalid_argument, "archiver of '" + dir_ + "' is closed");
  // A batch that only moved the cursor (over a gap or abandoned claims) is
  // followed by one from the new position, so that 0 means "nothing new".
  for (int round = 0;; ++round) {
    const std::uint64_t from = core_->cursor();
    auto n = archive_batch();
    if (!n.ok() || *n != 0 || core_->cursor() == from || round == 8) return n;
  }
}

// A write failed after some of the batch's records (from `first` on) were
// sealed: those whole on disk stay archived; the cursor is not published, so
// it stays at the first of them.
Error ArchiverEngine::fail_partial(std::uint64_t first, Error e) {
  const std::uint64_t whole = writer_->next_sequence();
  bump(c_.archived, whole > first ? whole - first : 0);
  return fail(std::move(e));
}

Result<std::size_t> ArchiverEngine::archive_batch() {
  Batch b;
  // While the archive is not empty, the cursor equals its end here.
  b.expected = core_->cursor();
  batch_start_ = b.expected;
  b.first = b.expected;
  while (b.count < opts_.batch) {
    // Past the first message of a batch, read only a committed one: the
    // reader's own skips (an abandoned claim, a lap) publish the cursor,
    // and must not publish it past records not yet appended. A committed
    // slot at the cursor stays so under block (we gate it), so begin_read
    // then returns it without a skip.
    if (b.count != 0 && !committed_at(core_->cursor())) break;
    auto more = append_next(b);
    if (!more.ok()) return more.error();
    if (!*more) break;
  }
  if (b.count != 0) {
    if (auto a = writer_->commit(); !a.ok()) return fail_partial(b.first, a.error());
    bump(c_.archived, b.count);
    bump(c_.bytes, b.bytes);
  }
  if (auto e = end_batch(b); !e.ok()) return e.error();
  return b.count;
}

// One message into the batch: read at the cursor, copied from its slot
// straight into the writer's buffer, sealed once the seqlock check says the
// copy is whole. False when the batch ends here (b.last says why).
Result<bool> ArchiverEngine::append_next(Batch& b) {
  Message m;
  b.last = core_->begin_read(m);
  if (b.last != PollStatus::ok) return false;
  if (m.sequence != b.expected) {
    // begin_read went over abandoned claims (no message was lost); only the
    // first read of a batch can (archive_batch), later ones end the batch
    // and end_batch records the skip.
    if (b.count != 0) return false;
    if (!writer_->empty()) {
      if (auto s = writer_->skip_to(m.sequence); !s.ok()) return fail(s.error());
    }
    bump(c_.abandoned, m.sequence - b.expected);
    b.expected = m.sequence;
    b.first = b.expected;
  }
  auto dst = writer_->reserve(m.sequence, m.payload.size());
  if (!dst.ok()) return fail_partial(b.first, dst.error());  // writing out the records sealed before failed
  core_->copy_payload(m, *dst);
  b.last = core_->finish_read(false);  // validated (seqlock); the shared cursor stays
  if (b.last != PollStatus::ok) {
    writer_->drop();
    return false;
  }
  writer_->seal(Record{m.sequence, m.timestamp_ns, m.key, m.id, m.correlation_id, m.type, {}});
  b.bytes += round_up(kRecordHeaderSize + m.payload.size(), kRecordAlign);
  ++b.count;
  ++b.expected;
  return true;
}

// After the batch's append: what the reader skipped past it recorded in the
// archive, then the cursor published.
Result<void> ArchiverEngine::end_batch(const Batch& b) {
  if (const std::uint64_t at = core_->cursor(); at > b.expected) {
    if (b.last == PollStatus::lapped || b.last == PollStatus::corrupted) {
      // Overwritten before we read it (drop_oldest, or we were evicted), or
      // a corrupted slot: the reader counted it in the entry's `lost` and
      // moved on; the archive records the gap.
      if (auto g = gap_to(at, b.expected); !g.ok()) return fail(g.error());
    } else {
      // The reader went over abandoned claims after a batch had begun.
      if (auto s = writer_->skip_to(at); !s.ok()) return fail(s.error());
      bump(c_.abandoned, at - b.expected);
    }
  }
  if (b.last != PollStatus::ok && b.last != PollStatus::empty && b.last != PollStatus::lapped &&
      b.last != PollStatus::corrupted) {
    return fail(Error(ErrorCode::not_found, "channel '" + ch_->name + "' can no longer be read (" +
                                                std::string(to_string(b.last)) + "): the archiver stops"));
  }
  // SYNC(cursor): after the append (and its fdatasync per the policy), so
  // publishers never overwrite what the archive does not hold.
  core_->publish_cursor();
  put(c_.next_sequence, core_->cursor());
  note_synced();
  if (auto p = maybe_prune(false); !p.ok()) {
    const std::lock_guard<std::mutex> lock(error_mutex_);
    last_error_ = p.error().message();  // retention failing does not stop archiving
  }
  return {};
}

Result<void> ArchiverEngine::maybe_prune(bool force) {
  if (opts_.max_age_ns == 0 && opts_.max_bytes == 0) return {};
  const std::uint64_t now = shm::monotonic_ns();
  const bool rolled = writer_->current_path() != last_path_;
  if (!force && !rolled && now - last_prune_ns_ < opts_.retention_check_ns) return {};
  last_prune_ns_ = now;
  last_path_ = writer_->current_path();
  auto r = bus::archive::prune(dir_, opts_.max_age_ns, opts_.max_bytes, shm::realtime_ns());
  if (!r.ok()) return r.error();
  bump(c_.pruned_files, r->files_removed);
  bump(c_.pruned_bytes, r->bytes_removed);
  return {};
}

Result<void> ArchiverEngine::prune() { return maybe_prune(true); }

Result<void> ArchiverEngine::sync() {
  if (!writer_) return Error(ErrorCode::invalid_argument, "archiver of '" + dir_ + "' is closed");
  auto s = writer_->sync();
  note_synced();
  return s;
}

Result<void> ArchiverEngine::run(const std::atomic<bool>& stop) {
  // relaxed: a request flag; nothing is published through it.
  while (!stop.load(std::memory_order_relaxed)) {
    if (auto c = maybe_checkpoint(); !c.ok()) {
      const std::lock_guard<std::mutex> lock(error_mutex_);
      last_error_ = c.error().message();
    }
    auto n = poll_once();
    if (!n.ok()) {
      if (n.error().code() != ErrorCode::no_space || opts_.no_space_retry_ns == 0) return n.error();
      // Full disk: the cursor stays at the archive's end; try again later.
      const std::uint64_t until = shm::monotonic_ns() + opts_.no_space_retry_ns;
      while (!stop.load(std::memory_order_relaxed) && shm::monotonic_ns() < until) {
        shm::sleep_ns(std::min<std::uint64_t>(kWaitSliceNs, opts_.no_space_retry_ns));
      }
      continue;
    }
    if (*n != 0) continue;
    if (auto s = writer_->sync_if_due(); !s.ok()) return fail(s.error());
    note_synced();
    // Retention by age must also act on an archive that no longer grows.
    if (auto p = maybe_prune(false); !p.ok()) {
      const std::lock_guard<std::mutex> lock(error_mutex_);
      last_error_ = p.error().message();
    }
    const std::uint64_t slice =
        opts_.fsync == ArchiveFsync::interval ? std::min(kWaitSliceNs, opts_.fsync_interval_ns) : kWaitSliceNs;
    (void)core_->wait(slice);
  }
  if (auto s = sync(); !s.ok()) return s;
  return checkpoint();
}

ArchiverCounters ArchiverEngine::counters() const noexcept {
  ArchiverCounters c;
  // relaxed: statistics.
  c.archived = c_.archived.load(std::memory_order_relaxed);
  c.bytes = c_.bytes.load(std::memory_order_relaxed);
  c.lost = c_.lost.load(std::memory_order_relaxed);
  c.gaps = c_.gaps.load(std::memory_order_relaxed);
  c.gap_from = c_.gap_from.load(std::memory_order_relaxed);
  c.gap_to = c_.gap_to.load(std::memory_order_relaxed);
  c.abandoned = c_.abandoned.load(std::memory_order_relaxed);
  c.recovered_bytes = c_.recovered_bytes.load(std::memory_order_relaxed);
  c.last_fsync_realtime_ns = c_.last_fsync.load(std::memory_order_relaxed);
  c.next_sequence = c_.next_sequence.load(std::memory_order_relaxed);
  c.pruned_files = c_.pruned_files.load(std::memory_order_relaxed);
  c.pruned_bytes = c_.pruned_bytes.load(std::memory_order_relaxed);
  c.no_space_errors = c_.no_space.load(std::memory_order_relaxed);
  return c;
}

std::string ArchiverEngine::last_error() const {
  const std::lock_guard<std::mutex> lock(error_mutex_);
  return last_error_;
}

}  // namespace shmbus::bus::archive
