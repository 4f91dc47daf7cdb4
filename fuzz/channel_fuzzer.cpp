// Fuzz target: using a channel whose slots and counters hold arbitrary bytes.
//
// Structure-aware: the header is always a valid header of one of the small
// fuzz geometries (the header target fuzzes headers), and the input
// overwrites everything else that holds state: the producer block, the
// publisher and subscriber tables, the groups (entries, consumers, leases),
// the stamps and writer words, and the slots.
//
// Input layout:
//   byte 0      geometry (index into geometries(), modulo their number)
//   bytes 1..8  an operation script: 8 operations, low nibble = operation,
//               high nibble = its parameter
//   the rest    copied over the state regions (state_regions()) of a fresh
//               segment of that geometry; a short input leaves the rest fresh
//
// The operations subscribe (anonymous, durable, at a position or time),
// poll / read / batch, wait with a zero timeout, seek, join a group (with
// the settings its entry claims, so the join succeeds), receive and
// ack / nack / extend / dead-letter, publish and claim with a zero timeout,
// reclaim, remove subscribers and groups, redrive the DLQ, and take stats.
// Every call must return a status or an error; never crash, read or write
// outside the segment, or hang (every wait here is bounded by a zero
// timeout or the geometries' 0.2 ms unblock timeout).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "bus/ring/layout.hpp"

#include "fuzz_support.hpp"

namespace shmbus::fuzz {
namespace {

template <class T>
T field(const std::vector<std::uint8_t>& image, std::uint64_t offset) {
  T v{};
  if (offset + sizeof v <= image.size()) std::memcpy(&v, image.data() + offset, sizeof v);
  return v;
}

std::string name_at(const std::vector<std::uint8_t>& image, std::uint64_t offset, const std::string& fallback) {
  if (offset + 64 > image.size()) return fallback;
  return valid_name_or(reinterpret_cast<const char*>(image.data() + offset), 63, fallback);
}

// The durable name of the first durable subscriber entry, so a subscribe
// resumes (and trusts) a fuzzed cursor.
std::string durable_name(const std::vector<std::uint8_t>& image, const bus::Geometry& g) {
  for (std::uint32_t i = 0; i < g.max_subscribers; ++i) {
    const std::uint64_t e = g.subscribers_offset + i * sizeof(bus::SubscriberEntry);
    if ((field<std::uint32_t>(image, e + offsetof(bus::SubscriberEntry, flags)) & bus::kSubDurable) != 0) {
      return name_at(image, e + offsetof(bus::SubscriberEntry, name), "dur");
    }
  }
  return "dur";
}

// The name and settings group entry `i` claims, so join_group finds it and
// attaches to its fuzzed cursor, floor and leases. Invalid settings fall
// back to valid ones with a 1 ms lease, so that redelivery paths run.
struct GroupPick {
  std::string name;
  GroupOptions opts;
};
GroupPick group_at(const std::vector<std::uint8_t>& image, const bus::Geometry& g, std::uint32_t i) {
  GroupPick p;
  p.opts.visibility_timeout_ns = 1'000'000;
  p.opts.max_deliveries = 2;
  p.opts.backoff_base_ns = 0;
  p.opts.backoff_cap_ns = 0;
  p.opts.jitter_permille = 0;
  p.opts.wait = WaitStrategy::busy_spin;
  p.name = "g";
  if (g.max_groups == 0) return p;
  const std::uint64_t e = g.groups_offset + (i % g.max_groups) * g.group_stride;
  p.name = name_at(image, e + offsetof(bus::GroupEntry, name), "g");
  GroupOptions o = p.opts;
  o.visibility_timeout_ns = field<std::uint64_t>(image, e + offsetof(bus::GroupEntry, visibility_timeout_ns));
  o.backoff_base_ns = field<std::uint64_t>(image, e + offsetof(bus::GroupEntry, backoff_base_ns));
  o.backoff_cap_ns = field<std::uint64_t>(image, e + offsetof(bus::GroupEntry, backoff_cap_ns));
  o.max_deliveries = field<std::uint32_t>(image, e + offsetof(bus::GroupEntry, max_deliveries));
  o.jitter_permille = field<std::uint32_t>(image, e + offsetof(bus::GroupEntry, jitter_permille));
  o.dlq = name_at(image, e + offsetof(bus::GroupEntry, dlq), "");
  const bool sane = o.visibility_timeout_ns >= 1'000'000 && o.visibility_timeout_ns < (1ULL << 28) * 1'000'000 &&
                    o.max_deliveries >= 1 && o.max_deliveries <= bus::kMaxAttempts &&
                    o.backoff_base_ns <= o.backoff_cap_ns && o.backoff_cap_ns < (1ULL << 28) * 1'000'000 &&
                    o.jitter_permille <= 1000 && o.dlq != kChannel;
  if (sane) p.opts = o;
  return p;
}

StartAt start_from(std::uint8_t param, const Channel& ch) {
  const std::uint64_t head = ch.stats().head;
  switch (param & 3) {
    case 0: return StartAt::earliest();
    case 1: return StartAt::latest();
    case 2: return StartAt::at_sequence(head > param ? head - param : param);
    default: return StartAt::at_time(param & 4 ? 0 : UINT64_MAX / (param + 1));
  }
}

struct World {
  Channel ch;
  bus::Geometry geo;
  std::vector<std::uint8_t> image;
  std::optional<Subscriber> sub;
  std::optional<Consumer> consumer;
  std::optional<Publisher> pub;
  std::vector<Delivery> held;  // deliveries kept across operations
  std::string group = "g";
  std::string dlq;
  std::vector<std::byte> buf;
};

void poll_some(World& w, std::uint8_t param) {
  if (!w.sub) return;
  // Sometimes a buffer too small for most payloads: buffer_too_small paths.
  std::vector<std::byte> small(param & 1 ? 8 : w.buf.size());
  Message m;
  for (std::uint32_t i = 0; i < 2 * w.geo.capacity + 2; ++i) {
    const PollStatus st = w.sub->poll(m, small);
    if (st == PollStatus::empty || st == PollStatus::buffer_too_small) break;
  }
}

void read_some(World& w, std::uint8_t param) {
  if (!w.sub) return;
  std::uint64_t sum = 0;
  auto f = [&](const Message& m) {
    for (std::byte b : m.payload) sum += static_cast<std::uint8_t>(b);  // touch every byte
  };
  switch (param & 3) {
    case 0:
      for (std::uint32_t i = 0; i < w.geo.capacity + 2; ++i) {
        if (w.sub->read(f) == PollStatus::empty) break;
      }
      break;
    case 1: (void)w.sub->read_batch(f, w.geo.capacity + 2); break;
    default: {
      std::vector<Message> out(w.geo.capacity);
      std::vector<std::byte> arena(param & 4 ? 16 : w.buf.size() * 2);
      PollStatus last = PollStatus::ok;
      (void)w.sub->poll_batch(out, arena, &last);
      break;
    }
  }
  g_sink = g_sink + sum;  // the payload reads stay in the program
}

void wait_and_seek(World& w, std::uint8_t param) {
  if (!w.sub) return;
  Message m;
  switch (param & 3) {
    case 0: (void)w.sub->wait(0); break;
    case 1: (void)w.sub->poll_wait(m, w.buf, 0); break;
    case 2: w.sub->seek(w.sub->cursor() > param ? w.sub->cursor() - param : param); break;
    default: (void)w.sub->counters(); break;
  }
}

void join(World& w, std::uint8_t param) {
  if (w.geo.max_groups == 0) return;
  GroupPick p = group_at(w.image, w.geo, param);
  auto c = w.ch.join_group(p.name, p.opts);
  if (!c) {
    // A fuzzed entry with other settings, or a full table: a group of our own.
    p = group_at({}, w.geo, 0);
    p.name = "own";
    c = w.ch.join_group(p.name, p.opts);
  }
  if (!c) return;
  w.group = p.name;
  w.dlq = p.opts.dlq.empty() ? std::string(kChannel) + "-dlq" : p.opts.dlq;
  w.held.clear();
  w.consumer = std::move(c.value());
}

void receive_some(World& w, std::uint8_t param) {
  if (!w.consumer) return;
  std::vector<std::byte> small(param & 8 ? 4 : w.buf.size());
  for (std::uint32_t i = 0; i < 2 * w.geo.capacity + 2; ++i) {
    Delivery d;
    const PollStatus st = w.consumer->receive(d, small);
    if (st == PollStatus::empty) break;
    if (st != PollStatus::ok) continue;
    switch ((param + i) & 7) {
      case 0: (void)w.consumer->ack(d); break;
      case 1: (void)w.consumer->nack(d, 0); break;
      case 2: (void)w.consumer->nack(d); break;
      case 3:
        (void)w.consumer->extend(d, 1'000'000);
        w.held.push_back(d);
        break;
      case 4: (void)w.consumer->dead_letter(d); break;
      case 5:
        (void)w.consumer->ack(d);
        (void)w.consumer->ack(d);
        break;                              // a second ack: lease_lost
      default: w.held.push_back(d); break;  // kept: finished (or not) later
    }
  }
  // Finish some kept deliveries, possibly long after their lease moved on.
  if (param & 4) {
    for (const Delivery& d : w.held) (void)w.consumer->ack(d);
    w.held.clear();
  }
  Delivery d;
  (void)w.consumer->receive_wait(d, small, 0);
  (void)w.consumer->backoff_ns(param);
}

void publish_some(World& w, std::uint8_t param) {
  if (!w.pub) {
    auto p = w.ch.publisher();
    if (!p) return;
    w.pub = std::move(p.value());
  }
  std::vector<std::byte> payload(std::min<std::size_t>(param * 3u, w.pub->max_payload() + 1), std::byte{0x5a});
  for (int i = 0; i < 1 + (param & 3); ++i) {
    (void)w.pub->publish(payload, MessageMeta{param, 7, 3, 0}, 0);
  }
  Claim c;
  if (w.pub->try_claim(w.pub->max_payload(), c, 0) == PublishStatus::ok) {
    if (param & 4) {
      w.pub->abort(c);
    } else {
      (void)w.pub->commit(c, param & 8 ? w.pub->max_payload() + 1 : 1);  // too_large aborts
    }
  }
}

void housekeeping(World& w, std::uint8_t param) {
  switch (param & 3) {
    case 0: (void)w.ch.reclaim_dead(); break;
    case 1: (void)w.ch.remove_subscriber(durable_name(w.image, w.geo)); break;
    case 2:
      if (w.geo.max_groups != 0) (void)w.ch.remove_group(group_at(w.image, w.geo, param >> 2).name);
      break;
    default:
      // Redrive publishes with a fixed 1 s timeout: on a full block channel
      // each input would wait that long. drop_oldest never waits.
      if (!w.dlq.empty() && w.geo.policy == Policy::drop_oldest) {
        (void)w.ch.redrive_dlq(w.dlq, 1 + (param >> 2));
      }
      break;
  }
}

void drop_handles(World& w, std::uint8_t param) {
  if (param & 1) w.sub.reset();
  if (param & 2) {
    w.held.clear();
    w.consumer.reset();
  }
  if (param & 4) w.pub.reset();
}

void run(World& w, std::uint8_t op) {
  const std::uint8_t param = op >> 4;
  switch (op & 15) {
    case 0: {
      w.sub.reset();
      auto s = w.ch.subscribe(SubscribeOptions{"", start_from(param, w.ch), WaitStrategy::busy_spin});
      if (s) w.sub = std::move(s.value());
      break;
    }
    case 1: {
      w.sub.reset();
      auto s =
          w.ch.subscribe(SubscribeOptions{durable_name(w.image, w.geo), StartAt::earliest(), WaitStrategy::backoff});
      if (s) w.sub = std::move(s.value());
      break;
    }
    case 2:
    case 12: poll_some(w, param); break;
    case 3:
    case 13: read_some(w, param); break;
    case 4: wait_and_seek(w, param); break;
    case 5: join(w, param); break;
    case 6:
    case 14: receive_some(w, param); break;
    case 7:
    case 15: publish_some(w, param); break;
    case 8: housekeeping(w, param); break;
    case 9: (void)w.ch.stats(); break;
    case 10: drop_handles(w, param); break;
    default: {
      // Take a subscriber and a consumer at once, so their gates interact.
      if (!w.sub) run(w, static_cast<std::uint8_t>(param << 4));
      if (!w.consumer) join(w, param);
      break;
    }
  }
}

}  // namespace
}  // namespace shmbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shmbus;
  using namespace shmbus::fuzz;
  Bytes in(data, size);
  const std::size_t gi = in.u8() % geometries().size();
  std::uint8_t script[8];
  for (std::uint8_t& op : script) op = in.u8();

  {
    World w;
    w.geo = bus::compute_geometry(geometries()[gi]).value();
    w.image = fresh_image(gi);
    for (const Region& r : state_regions(w.geo)) {
      const std::size_t n = std::min<std::size_t>(in.left(), r.end - r.offset);
      std::memcpy(w.image.data() + r.offset, in.here(), n);
      for (std::size_t i = 0; i < n; ++i) (void)in.u8();
    }
    write_file(channel_path(kChannel), w.image);
    auto ch = Channel::open(kChannel, fuzz_bus(), kInitWaitNs);
    if (!ch) {
      // The header is a valid one: refusing it is a harness bug.
      std::fprintf(stderr, "cannot open the fuzz channel: %s\n", ch.error().message().c_str());
      std::abort();
    }
    w.ch = std::move(ch.value());
    w.buf.resize(w.ch.max_payload());
    for (std::uint8_t op : script) run(w, op);
    (void)w.ch.stats();
  }  // every handle is gone before the segments are
  remove_all_segments();
  return 0;
}
