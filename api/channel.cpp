#include <shmbus/channel.hpp>

#include <shmbus/archive_types.hpp>

#include <cstring>
#include "bus/ring/channel_state.hpp"

#include "bus/group/consumer_core.hpp"
#include "bus/ring/participants.hpp"
#include "bus/ring/peek.hpp"
#include "bus/ring/publisher_core.hpp"
#include "bus/ring/stats.hpp"
#include "bus/ring/subscriber_core.hpp"
#include "shm/segment.hpp"

namespace shmbus {

Result<Channel> Channel::create(std::string_view name, const ChannelOptions& opts, std::string_view bus) {
  auto s = bus::create_channel(bus, name, opts, opts.trust);
  if (!s) return s.error();
  return Channel(std::move(s.value()));
}

Result<Channel> Channel::open(std::string_view name, std::string_view bus, std::uint64_t open_wait_ns,
                              const Trust& trust) {
  bus::OpenOptions o;
  o.open_wait_ns = open_wait_ns;
  o.trust = trust;
  auto s = bus::open_channel(bus, name, o);
  if (!s) return s.error();
  return Channel(std::move(s.value()));
}

Result<Channel> Channel::open_or_create(std::string_view name, const ChannelOptions& opts, std::string_view bus) {
  auto s = bus::open_or_create_channel(bus, name, opts, opts.trust);
  if (!s) return s.error();
  return Channel(std::move(s.value()));
}

Result<Channel> Channel::open_read_only(std::string_view name, std::string_view bus) {
  bus::OpenOptions o;
  o.mode = bus::MapMode::observer;
  auto s = bus::open_channel(bus, name, o);
  if (!s) return s.error();
  return Channel(std::move(s.value()));
}

Result<void> Channel::remove(std::string_view name, std::string_view bus) { return bus::remove_channel(bus, name); }

Result<bool> Channel::remove_if_unused(std::string_view name, std::string_view bus) {
  return bus::remove_channel_if_unused(bus, name);
}

Result<bool> Channel::in_use(std::string_view name, std::string_view bus) { return bus::channel_in_use(bus, name); }

PollStatus Channel::liveness() const noexcept {
  if (!state_) return PollStatus::invalid;
  const std::uint64_t r = state_->check_removed();
  return r == bus::kChannelLive ? PollStatus::ok : bus::poll_status_of_removed(r);
}

Result<std::vector<ChannelInfo>> Channel::list(std::string_view bus) {
  if (auto r = bus::validate_name("bus", bus); !r) return r.error();
  const std::string prefix = "shmbus." + std::string(bus) + ".";
  auto segs = shm::Segment::list(prefix);
  if (!segs) return segs.error();
  std::vector<ChannelInfo> out;
  for (const auto& s : segs.value()) {
    out.push_back({s.name.substr(prefix.size()), s.size, s.mode, s.uid, s.kind});
  }
  return out;
}

Result<Publisher> Channel::publisher() {
  if (!state_) return Error(ErrorCode::invalid_argument, "publisher() on an empty Channel handle");
  auto core = bus::PublisherCore::create(state_);
  if (!core) return core.error();
  return Publisher(std::move(core.value()));
}

Result<Subscriber> Channel::subscribe(const SubscribeOptions& opts) {
  if (!state_) return Error(ErrorCode::invalid_argument, "subscribe() on an empty Channel handle");
  if (opts.name == kArchiverName) {
    // Its entry gates publishers for every other subscriber and restore
    // treats its cursor as the archive's end: only the Archiver takes it.
    return Error(ErrorCode::invalid_argument, "subscriber name '" + std::string(kArchiverName) + "' on channel '" +
                                                  state_->name + "' is reserved for the channel's archiver");
  }
  auto core = bus::SubscriberCore::create(state_, opts);
  if (!core) return core.error();
  return Subscriber(std::move(core.value()));
}

Result<Consumer> Channel::join_group(std::string_view group, const GroupOptions& opts) {
  if (!state_) return Error(ErrorCode::invalid_argument, "join_group() on an empty Channel handle");
  auto core = bus::ConsumerCore::join(state_, group, opts);
  if (!core) return core.error();
  return Consumer(std::move(core.value()));
}

Result<void> Channel::remove_group(std::string_view group) {
  if (!state_) return Error(ErrorCode::invalid_argument, "remove_group() on an empty Channel handle");
  return bus::remove_group(*state_, group);
}

Result<std::uint64_t> Channel::redrive_dlq(std::string_view dlq, std::uint64_t max) {
  if (!state_) return Error(ErrorCode::invalid_argument, "redrive_dlq() on an empty Channel handle");
  bus::OpenOptions o;
  auto d = bus::open_channel(state_->bus, dlq, o);
  if (!d) return d.error();
  return bus::redrive_dead_letters(state_, d.value(), max);
}

Result<void> Channel::remove_subscriber(std::string_view durable_name) {
  if (!state_) return Error(ErrorCode::invalid_argument, "remove_subscriber() on an empty handle");
  return bus::remove_durable_subscriber(*state_, durable_name);
}

std::uint32_t Channel::reclaim_dead() {
  if (!state_) return 0;
  return bus::reclaim_dead(*state_) + bus::reclaim_dead_consumers(*state_);
}

Result<std::uint64_t> Channel::dead_letter_due() {
  if (!state_) return Error(ErrorCode::invalid_argument, "dead_letter_due() on an empty Channel handle");
  return bus::dead_letter_due(state_);
}

PollStatus Channel::peek(std::uint64_t sequence, Message& out, std::span<std::byte> buffer) const noexcept {
  return state_ ? bus::peek_message(*state_, sequence, out, buffer) : PollStatus::invalid;
}

std::uint64_t Channel::head() const noexcept {
  // acquire: pairs with the claim CAS; a fresh-enough value is all a caller gets.
  return state_ ? state_->producer->head.load(std::memory_order_acquire) : 0;
}

std::uint64_t Channel::oldest() const noexcept { return state_ ? bus::oldest_sequence(*state_) : 0; }

std::uint64_t Channel::sequence_at(std::uint64_t realtime_ns) const noexcept {
  return state_ ? bus::sequence_at_time(*state_, realtime_ns) : 0;
}

std::optional<DeadLetter> decode_dead_letter(const Message& m) noexcept {
  if (m.payload.size() < sizeof(bus::DlqRecord)) return std::nullopt;
  bus::DlqRecord rec;
  std::memcpy(&rec, m.payload.data(), sizeof rec);
  if (rec.payload_length > m.payload.size() - sizeof rec) return std::nullopt;
  if (rec.reason != static_cast<std::uint32_t>(DeadLetterReason::max_deliveries) &&
      rec.reason != static_cast<std::uint32_t>(DeadLetterReason::rejected)) {
    return std::nullopt;
  }
  const auto name = [](const char(&f)[64]) { return std::string(f, strnlen(f, sizeof f)); };
  DeadLetter d;
  d.dlq_sequence = m.sequence;
  d.original_sequence = rec.original_sequence;
  d.original_timestamp_ns = rec.original_timestamp_ns;
  d.attempts = rec.attempts;
  d.reason = static_cast<DeadLetterReason>(rec.reason);
  d.group = name(rec.group);
  d.source = name(rec.source);
  d.key = m.key;
  d.id = m.id;
  d.correlation_id = m.correlation_id;
  d.type = m.type;
  d.payload = m.payload.subspan(sizeof rec, rec.payload_length);
  return d;
}

ChannelStats Channel::stats() const { return state_ ? bus::snapshot(*state_) : ChannelStats{}; }

ChannelOptions Channel::options() const { return state_ ? bus::options_of(state_->geo) : ChannelOptions{}; }

const std::string& Channel::name() const {
  static const std::string empty;
  return state_ ? state_->name : empty;
}

const std::string& Channel::bus() const {
  static const std::string empty;
  return state_ ? state_->bus : empty;
}

std::size_t Channel::max_payload() const { return state_ ? state_->geo.max_payload : 0; }

}  // namespace shmbus
