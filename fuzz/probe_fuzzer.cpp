// Fuzz target: the probe's decoding of arbitrary segments.
//
// Input: a whole channel segment image, header included. The probe opens it
// read-only and snapshots it (probe::take_snapshot: Channel::open_read_only,
// Channel::stats, and the DLQ channels its groups name), then renders the
// snapshot as `shmbus stat --json`, `shmbus ls --json` and Prometheus text
// do. Nothing may crash or read outside the segment; the rendering must
// succeed for every snapshot the library produced.
//
// Channel::open_read_only waits up to 2 s for a creator that is alive or
// unrecorded; for such headers this target takes the same open with a
// 1 ms wait instead (bus::open_channel as an observer), so that each input
// costs microseconds.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bus/ring/channel_state.hpp"
#include "bus/ring/stats.hpp"
#include "shm/liveness.hpp"

#include "fuzz_support.hpp"
#include "probe.hpp"

namespace shmbus::fuzz {
namespace {

// Renders what the probe prints, through the probe's own serialiser (which
// replaces bytes that are not UTF-8, as a corrupted segment's names may
// hold). Anything thrown is a finding.
void render(const probe::Snapshot& snap) {
  std::string out;
  if (snap.stats) out += probe::json_text(probe::stat_json(*snap.stats, snap.dlqs), 2);
  out += probe::json_text(probe::ls_json(fuzz_bus(), {snap}), 2);
  out += probe::prometheus_text(fuzz_bus(), {snap});
  g_sink = g_sink + out.size();
}

}  // namespace
}  // namespace shmbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shmbus;
  using namespace shmbus::fuzz;
  write_file(channel_path(kChannel), {data, size});
  const std::uint64_t state = word_at(data, size, offsetof(bus::ChannelHeader, init_state)) & 0xffffffffULL;
  const std::uint64_t owner = word_at(data, size, offsetof(bus::ChannelHeader, init_owner));
  const bool answers_at_once =
      size >= bus::kHeaderPage &&
      (state == bus::kInitReady || (owner != 0 && shm::packed_liveness(owner) == shm::Liveness::dead));
  if (answers_at_once) {
    render(probe::take_snapshot(kChannel, fuzz_bus()));
  } else {
    bus::OpenOptions o;
    o.open_wait_ns = kInitWaitNs;
    o.mode = bus::MapMode::observer;
    probe::Snapshot snap;
    snap.name = kChannel;
    if (auto st = bus::open_channel(fuzz_bus(), kChannel, o)) {
      snap.stats = bus::snapshot(*st.value());
      snap.dlqs.resize(snap.stats->groups.size());
    } else {
      snap.error_code = std::string(to_string(st.error().code()));
      snap.error_message = st.error().message();
    }
    render(snap);
  }
  remove_all_segments();
  return 0;
}
