// Subscriber's calls: each checks the handle, then tail-calls its core (the
// handle adds a test and a jump to the hot path, nothing else).
#include <shmbus/subscriber.hpp>

#include <utility>

#include "bus/ring/subscriber_core.hpp"

namespace shmbus {

Subscriber::Subscriber() noexcept = default;
Subscriber::~Subscriber() = default;
Subscriber::Subscriber(Subscriber&&) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&&) noexcept = default;
Subscriber::Subscriber(std::unique_ptr<bus::SubscriberCore> core) noexcept : core_(std::move(core)) {}

PollStatus Subscriber::poll(Message& out, std::span<std::byte> buffer) noexcept {
  if (!core_) return PollStatus::invalid;
  return core_->poll(out, buffer);
}

PollStatus Subscriber::poll_wait(Message& out, std::span<std::byte> buffer, std::uint64_t timeout_ns) noexcept {
  if (!core_) return PollStatus::invalid;
  return core_->poll_wait(out, buffer, timeout_ns);
}

PollStatus Subscriber::begin_read(Message& m) noexcept { return core_->begin_read(m); }

PollStatus Subscriber::finish_read(bool advance_cursor) noexcept { return core_->finish_read(advance_cursor); }

void Subscriber::publish_cursor() noexcept { core_->publish_cursor(); }

std::size_t Subscriber::poll_batch(std::span<Message> out, std::span<std::byte> arena, PollStatus* last) noexcept {
  if (!core_) {
    if (last != nullptr) *last = PollStatus::invalid;
    return 0;
  }
  std::size_t n = 0;
  std::size_t used = 0;
  PollStatus st = PollStatus::ok;
  bool retried = false;
  while (n < out.size()) {
    Message m;
    const std::uint64_t at = core_->cursor();
    st = core_->begin_read(m);
    if (st != PollStatus::ok) break;
    if (m.payload.size() > arena.size() - used) {
      st = n == 0 ? PollStatus::buffer_too_small : PollStatus::ok;
      break;
    }
    std::span<std::byte> dst = arena.subspan(used, m.payload.size());
    core_->copy_payload(m, dst);
    st = core_->finish_read(false);
    if (st == PollStatus::lapped && !retried && core_->archived_after_tear(at)) {
      // Overwritten while it was copied, and held by the archive: copied
      // again from there (once: nothing was lost).
      retried = true;
      continue;
    }
    if (st != PollStatus::ok) break;
    retried = false;
    used += dst.size();
    out[n++] = m;
  }
  core_->publish_cursor();
  if (last != nullptr) *last = st;
  return n;
}

PollStatus Subscriber::wait(std::uint64_t timeout_ns) noexcept {
  if (!core_) return PollStatus::invalid;
  return core_->wait(timeout_ns);
}

void Subscriber::seek(std::uint64_t sequence) noexcept {
  if (core_) core_->seek(sequence);
}

std::string Subscriber::last_error() const { return core_ ? core_->last_error() : std::string(); }

SubscriberCounters Subscriber::counters() const noexcept { return core_ ? core_->counters() : SubscriberCounters{}; }

std::uint64_t Subscriber::cursor() const noexcept { return core_ ? core_->cursor() : 0; }

bool Subscriber::resumed() const noexcept { return core_ && core_->resumed(); }

}  // namespace shmbus
