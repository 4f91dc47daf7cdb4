// Publisher's calls: each checks the handle, then tail-calls its core (the
// handle adds a test and a jump to the hot path, nothing else).
#include <shmbus/publisher.hpp>

#include <utility>

#include "bus/ring/publisher_core.hpp"

namespace shmbus {

Publisher::Publisher() noexcept = default;
Publisher::~Publisher() = default;
Publisher::Publisher(Publisher&&) noexcept = default;
Publisher& Publisher::operator=(Publisher&&) noexcept = default;
Publisher::Publisher(std::unique_ptr<bus::PublisherCore> core) noexcept : core_(std::move(core)) {}

PublishStatus Publisher::publish(std::span<const std::byte> payload, const MessageMeta& meta,
                                 std::uint64_t timeout_ns) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->publish(payload, meta, timeout_ns);
}

PublishStatus Publisher::publish(std::string_view text, const MessageMeta& meta, std::uint64_t timeout_ns) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->publish(std::as_bytes(std::span<const char>(text.data(), text.size())), meta, timeout_ns);
}

PublishStatus Publisher::publish_batch(std::span<const OutMessage> msgs, std::uint64_t timeout_ns) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->publish_batch(msgs, timeout_ns);
}

PublishStatus Publisher::publish_batch(std::size_t n, MessageAt at, const void* ctx,
                                       std::uint64_t timeout_ns) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->publish_batch(n, at, ctx, timeout_ns);
}

PublishStatus Publisher::try_claim_batch(std::size_t max_length, std::span<Claim> claims,
                                         std::uint64_t timeout_ns) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->claim_batch(max_length, claims, timeout_ns);
}

PublishStatus Publisher::try_claim(std::size_t max_length, Claim& claim, std::uint64_t timeout_ns) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->claim(max_length, claim, timeout_ns);
}

PublishStatus Publisher::commit(Claim& claim, std::size_t length, const MessageMeta& meta) noexcept {
  if (!core_) return PublishStatus::invalid;
  return core_->commit(claim, length, meta);
}

void Publisher::abort(Claim& claim) noexcept {
  if (core_) core_->abort(claim);
}

std::size_t Publisher::max_payload() const noexcept { return core_ ? core_->channel()->geo.max_payload : 0; }

}  // namespace shmbus
