#include <shmbus/channel.hpp>

#include <shmbus/bus/channel_state.hpp>
#include <shmbus/bus/group_core.hpp>
#include <shmbus/bus/stats.hpp>
#include <shmbus/bus/tables.hpp>
#include <shmbus/shm/segment.hpp>

namespace shmbus {

Result<Channel> Channel::create(std::string_view name, const ChannelOptions& opts,
                                std::string_view bus) {
  auto s = bus::create_channel(bus, name, opts);
  if (!s) return s.error();
  return Channel(std::move(s.value()));
}

Result<Channel> Channel::open(std::string_view name, std::string_view bus,
                              std::uint64_t init_wait_ns) {
  bus::OpenOptions o;
  o.init_wait_ns = init_wait_ns;
  auto s = bus::open_channel(bus, name, o);
  if (!s) return s.error();
  return Channel(std::move(s.value()));
}

Result<Channel> Channel::open_or_create(std::string_view name, const ChannelOptions& opts,
                                        std::string_view bus) {
  auto s = bus::open_or_create_channel(bus, name, opts);
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

Result<void> Channel::remove(std::string_view name, std::string_view bus) {
  return bus::remove_channel(bus, name);
}

Result<std::vector<ChannelInfo>> Channel::list(std::string_view bus) {
  if (auto r = bus::validate_name("bus", bus); !r) return r.error();
  const std::string prefix = "shmbus." + std::string(bus) + ".";
  auto segs = shm::Segment::list(prefix);
  if (!segs) return segs.error();
  std::vector<ChannelInfo> out;
  for (const auto& s : segs.value()) {
    out.push_back({s.name.substr(prefix.size()), s.size, s.mode});
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
  auto core = bus::SubscriberCore::create(state_, opts);
  if (!core) return core.error();
  return Subscriber(std::move(core.value()));
}

Result<Consumer> Channel::join_group(std::string_view group, const GroupOptions& opts) {
  if (!state_) return Error(ErrorCode::invalid_argument, "join_group() on an empty Channel handle");
  auto core = bus::GroupCore::join(state_, group, opts);
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
  return bus::redrive_dead_letters(state_, std::move(d.value()), max);
}

Result<void> Channel::remove_subscriber(std::string_view durable_name) {
  if (!state_) return Error(ErrorCode::invalid_argument, "remove_subscriber() on an empty handle");
  return bus::remove_durable_subscriber(*state_, durable_name);
}

std::uint32_t Channel::reclaim_dead() { return state_ ? bus::reclaim_dead(*state_) : 0; }

ChannelStats Channel::stats() const { return state_ ? bus::snapshot(*state_) : ChannelStats{}; }

ChannelOptions Channel::options() const {
  return state_ ? bus::options_of(state_->geo) : ChannelOptions{};
}

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
