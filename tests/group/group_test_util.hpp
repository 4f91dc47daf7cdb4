// Helpers shared by the consumer-group tests (group_test.cpp and
// ordered_test.cpp in one process, the process tests across processes): a
// small channel, channel names that take their dead-letter channel with them,
// and a reader of a DLQ.
#pragma once

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/group/consumer_core.hpp"

#include "test_support.hpp"

namespace shmbus::test {

/// A small channel for group tests: `capacity` slots of 128 bytes.
inline ChannelOptions small(Policy p = Policy::block, std::uint32_t capacity = 16) {
  ChannelOptions o;
  o.capacity = capacity;
  o.slot_size = 128;
  o.policy = p;
  return o;
}

/// A unique test channel name (see ScopedChannelName) whose dead-letter
/// channel, "<name>-dlq", is removed with it.
class ScopedGroupChannelName : public ScopedChannelName {
 public:
  using ScopedChannelName::ScopedChannelName;
  ~ScopedGroupChannelName() { (void)Channel::remove(dlq(), kTestBus); }
  ScopedGroupChannelName(const ScopedGroupChannelName&) = delete;
  ScopedGroupChannelName& operator=(const ScopedGroupChannelName&) = delete;

  /// The name of the channel's DLQ (the default of GroupOptions::dlq).
  [[nodiscard]] std::string dlq() const { return str() + "-dlq"; }
};

/// The cast of a stress test: a block channel of `capacity` 128-byte slots,
/// `consumers` members of group `group` joined with `g`, and `producers`
/// publishers. Fails the test if any of them cannot be made.
struct GroupCast {
  Channel channel;
  std::vector<Consumer> consumers;
  std::vector<Publisher> publishers;
};

inline GroupCast make_group_cast(const ScopedChannelName& name, std::uint32_t capacity, const std::string& group,
                                 const GroupOptions& g, int consumers, int producers) {
  GroupCast cast;
  cast.channel = make_channel(name, small(Policy::block, capacity));
  for (int i = 0; i < consumers; ++i) {
    auto c = cast.channel.join_group(group, g);
    REQUIRE(c);
    cast.consumers.push_back(std::move(c.value()));
  }
  for (int i = 0; i < producers; ++i) {
    auto p = cast.channel.publisher();
    REQUIRE(p);
    cast.publishers.push_back(std::move(p.value()));
  }
  return cast;
}

/// Reads a dead-letter channel from its earliest message, as an operator
/// inspecting the DLQ does. One thread at a time.
class DlqReader {
 public:
  /// Opens the DLQ `dlq` on the test bus and subscribes to it; fails the
  /// test if either fails.
  explicit DlqReader(const std::string& dlq) {
    auto ch = Channel::open(dlq, kTestBus);
    REQUIRE(ch);
    channel_ = std::move(ch.value());
    auto sub = channel_.subscribe({"", StartAt::earliest()});
    REQUIRE(sub);
    subscriber_ = std::move(sub.value());
  }

  /// Polls the next dead letter, which must be there and carry an original
  /// payload of `payload_size` bytes after its record; returns the record.
  bus::DlqRecord next(std::size_t payload_size) {
    REQUIRE(poll() == PollStatus::ok);
    bus::DlqRecord rec;
    REQUIRE(message_.payload.size() == sizeof rec + payload_size);
    std::memcpy(&rec, message_.payload.data(), sizeof rec);
    return rec;
  }

  /// Polls the next dead letter, whatever it holds (e.g. to see there is none).
  PollStatus poll() { return subscriber_.poll(message_, buffer_); }

  /// The dead letter polled last.
  [[nodiscard]] const Message& message() const { return message_; }

  /// The original payload of the dead letter polled last: what follows its record.
  [[nodiscard]] std::span<const std::byte> payload() const { return message_.payload.subspan(sizeof(bus::DlqRecord)); }

 private:
  Channel channel_;
  Subscriber subscriber_;
  Message message_;
  std::byte buffer_[512];
};

/// Checks a dead letter (`rec`, read from message `m`): message `sequence`
/// of channel `source`, sent to the DLQ by group `group` after `attempts`
/// deliveries (max_deliveries reached), and marked with that attempt.
inline void check_max_deliveries_letter(const bus::DlqRecord& rec, const Message& m, std::uint64_t sequence,
                                        std::uint32_t attempts, std::string_view group, std::string_view source) {
  CHECK(rec.original_sequence == sequence);
  CHECK(rec.attempts == attempts);
  CHECK(rec.reason == static_cast<std::uint32_t>(DeadLetterReason::max_deliveries));
  CHECK(std::string(rec.group) == group);
  CHECK(std::string(rec.source) == source);
  CHECK(m.attempt == attempts);
}

}  // namespace shmbus::test
