// Consumer's calls: each checks the handle, then tail-calls its group core
// (the handle adds a test and a jump to the hot path, nothing else).
#include <shmbus/consumer.hpp>

#include <utility>

#include "bus/group/consumer_core.hpp"

namespace shmbus {

Consumer::Consumer() noexcept = default;
Consumer::~Consumer() = default;
Consumer::Consumer(Consumer&&) noexcept = default;
Consumer& Consumer::operator=(Consumer&&) noexcept = default;
Consumer::Consumer(std::unique_ptr<bus::ConsumerCore> core) noexcept : core_(std::move(core)) {}

PollStatus Consumer::receive(Delivery& out, std::span<std::byte> buffer) noexcept {
  if (!core_) return PollStatus::invalid;
  return core_->receive(out, buffer);
}

PollStatus Consumer::receive_wait(Delivery& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept {
  if (!core_) return PollStatus::invalid;
  return core_->receive_wait(out, buffer, timeout_ns);
}

std::size_t Consumer::receive_batch(std::span<Delivery> out, std::span<std::byte> arena, PollStatus* last) noexcept {
  if (!core_) {
    if (last != nullptr) *last = PollStatus::invalid;
    return 0;
  }
  return core_->receive_batch(out, arena, last);
}

AckStatus Consumer::ack(const Delivery& d) noexcept {
  if (!core_) return AckStatus::invalid;
  return core_->ack(d);
}

std::size_t Consumer::ack_batch(std::span<const Delivery> ds) noexcept {
  if (!core_) return 0;
  return core_->ack_batch(ds);
}

AckStatus Consumer::nack(const Delivery& d, std::uint64_t delay_ns) noexcept {
  if (!core_) return AckStatus::invalid;
  return core_->nack(d, delay_ns);
}

AckStatus Consumer::nack(const Delivery& d) noexcept {
  if (!core_) return AckStatus::invalid;
  return core_->nack_with_backoff(d);
}

AckStatus Consumer::extend(Delivery& d, std::uint64_t visibility_ns) noexcept {
  if (!core_) return AckStatus::invalid;
  return core_->extend(d, visibility_ns);
}

AckStatus Consumer::dead_letter(const Delivery& d) noexcept {
  if (!core_) return AckStatus::invalid;
  return core_->dead_letter(d);
}

std::uint64_t Consumer::backoff_ns(std::uint32_t attempt) noexcept { return core_ ? core_->backoff_ns(attempt) : 0; }

}  // namespace shmbus
