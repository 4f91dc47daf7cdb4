// Fuzz target: opening and validating arbitrary segment bytes.
//
// Input: one mode byte, then a whole segment image.
//   mode bit 0 = 0: the image is a channel segment. It is opened as a
//     participant (Channel::open) and as an observer (the probe's open), and
//     a segment left half-initialised by a dead creator is taken over
//     (open_or_create) when its size fits one of the fuzz geometries.
//     Whatever opens is then used lightly (stats, a non-blocking poll).
//   mode bit 0 = 1: the image is a dedup table, opened with the parameters
//     its own header claims, then used for a few ids.
// Every outcome must be an error with a message or a working handle: never a
// crash, an out-of-bounds access, or a wait longer than the bounded waits.
#include <cstdint>
#include <cstring>
#include <vector>

#include <shmbus/dedup.hpp>
#include "bus/dedup/dedup.hpp"
#include "bus/ring/channel_state.hpp"
#include "bus/ring/stats.hpp"
#include "shm/liveness.hpp"

#include "fuzz_support.hpp"

namespace shmbus::fuzz {
namespace {

void exercise(Channel& ch) {
  (void)ch.stats();
  (void)ch.options();
  auto sub = ch.subscribe(SubscribeOptions{"", StartAt::earliest(), WaitStrategy::busy_spin});
  if (sub) {
    std::vector<std::byte> buf(ch.max_payload());
    Message m;
    for (int i = 0; i < 4; ++i) {
      if (sub->poll(m, buf) == PollStatus::empty) break;
    }
  }
}

void fuzz_channel(const std::uint8_t* image, std::size_t size) {
  write_file(channel_path(kChannel), {image, size});
  if (auto ch = Channel::open(kChannel, fuzz_bus(), kInitWaitNs)) exercise(ch.value());

  bus::OpenOptions observer;
  observer.open_wait_ns = kInitWaitNs;
  observer.mode = bus::MapMode::observer;
  if (auto st = bus::open_channel(fuzz_bus(), kChannel, observer)) (void)bus::snapshot(*st.value());

  // A creator that died half-way: the takeover path re-initialises the
  // segment when the caller's parameters give exactly its size. Only tried
  // when the recorded initialiser is dead, as an opener would find it at
  // once (a live or missing owner makes open_or_create wait its full 2 s).
  const std::uint64_t state = word_at(image, size, offsetof(bus::ChannelHeader, init_state)) & 0xffffffffULL;
  const std::uint64_t owner = word_at(image, size, offsetof(bus::ChannelHeader, init_owner));
  if (size >= bus::kHeaderPage && state != bus::kInitReady && owner != 0 &&
      shm::packed_liveness(owner) == shm::Liveness::dead) {
    for (const ChannelOptions& o : geometries()) {
      auto g = bus::compute_geometry(o);
      if (!g || g->total_size != size) continue;
      if (auto ch = Channel::open_or_create(kChannel, o, fuzz_bus())) exercise(ch.value());
      break;
    }
  }
}

void fuzz_dedup(const std::uint8_t* image, std::size_t size) {
  write_file(dedup_path(kDedupTable), {image, size});
  const std::uint64_t state = word_at(image, size, offsetof(bus::DedupHeader, init_state));
  const std::uint64_t owner = word_at(image, size, offsetof(bus::DedupHeader, init_owner));
  // The dedup opener waits up to 2 s for a segment smaller than its header,
  // or an initialiser that is alive or unrecorded; those inputs would only
  // measure that wait (the channel mode runs the same wait_for_init with a
  // 1 ms bound).
  if (size < bus::kDedupHeaderSize ||
      (state != bus::kInitReady && (owner == 0 || shm::packed_liveness(owner) != shm::Liveness::dead))) {
    return;
  }
  DedupOptions o;
  o.capacity = static_cast<std::uint32_t>(word_at(image, size, offsetof(bus::DedupHeader, capacity)));
  o.probe_window = static_cast<std::uint32_t>(word_at(image, size, offsetof(bus::DedupHeader, probe_window)));
  o.ttl_ns = word_at(image, size, offsetof(bus::DedupHeader, ttl_ns));
  o.claim_timeout_ns = word_at(image, size, offsetof(bus::DedupHeader, claim_timeout_ns));
  // A takeover re-creates a table of the claimed size: keep that small.
  if (o.capacity > 4096) return;
  auto t = DedupTable::open_or_create(kDedupTable, o, fuzz_bus());
  if (!t) return;
  (void)t->stats();
  // Ids from the tail of the image, so the fuzzer can aim them at entries.
  for (int i = 0; i < 3; ++i) {
    const std::uint64_t id = word_at(image, size, size >= 24 ? size - 8 * (i + 1) : 0) | 1;
    switch (t->begin(id)) {
      case DedupStatus::first:
        if (i == 1) {
          t->abandon(id);
        } else {
          t->complete(id);
        }
        break;
      default: break;
    }
    (void)t->seen(id);
  }
  (void)t->stats();
}

}  // namespace
}  // namespace shmbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shmbus::fuzz;
  if (size < 1) return 0;
  if ((data[0] & 1) == 0) {
    fuzz_channel(data + 1, size - 1);
  } else {
    fuzz_dedup(data + 1, size - 1);
  }
  remove_all_segments();
  return 0;
}
