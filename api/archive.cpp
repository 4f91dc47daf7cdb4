// Archiver's calls: the handle owns the engine (bus/archive/archiver.hpp)
// and, after start(), the thread that runs it.
#include <shmbus/archive.hpp>
#include <shmbus/channel.hpp>

#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "api/detail.hpp"
#include "bus/archive/archiver.hpp"

namespace shmbus {

struct Archiver::Impl {
  std::unique_ptr<bus::archive::ArchiverEngine> engine;
  std::thread thread;
  std::atomic<bool> stop_requested{false};
  std::mutex result_mutex;
  std::optional<Result<void>> thread_result;  // run()'s result, once the thread ended
};

namespace {

Error no_archiver() { return Error(ErrorCode::invalid_argument, "empty Archiver handle"); }

}  // namespace

Archiver::Archiver() noexcept = default;
Archiver::Archiver(Archiver&&) noexcept = default;
Archiver& Archiver::operator=(Archiver&& other) noexcept {
  if (this != &other) {
    if (impl_) {
      (void)stop();
      if (impl_->engine) (void)impl_->engine->sync();
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Archiver::~Archiver() {
  if (!impl_) return;
  (void)stop();
  // Best effort: a destructor cannot report; call sync() or stop() first to see errors.
  (void)impl_->engine->sync();
}

Result<Archiver> Archiver::open(const Channel& channel, const ArchiverOptions& opts) {
  const auto& state = detail::state_of(channel);
  if (!state) return Error(ErrorCode::invalid_argument, "Archiver::open on an empty Channel handle");
  const std::string dir = opts.dir.empty() ? state->geo.archive_dir : opts.dir;
  auto engine = bus::archive::ArchiverEngine::open(state, dir, opts);
  if (!engine.ok()) return engine.error();
  Archiver a;
  a.impl_ = std::make_unique<Impl>();
  a.impl_->engine = std::move(*engine);
  return a;
}

Result<std::size_t> Archiver::poll_once() {
  if (!impl_) return no_archiver();
  if (impl_->thread.joinable()) return Error(ErrorCode::invalid_argument, "the archiver runs on its thread");
  return impl_->engine->poll_once();
}

Result<void> Archiver::run(const std::atomic<bool>& stop) {
  if (!impl_) return no_archiver();
  if (impl_->thread.joinable()) return Error(ErrorCode::invalid_argument, "the archiver runs on its thread");
  return impl_->engine->run(stop);
}

Result<void> Archiver::start() {
  if (!impl_) return no_archiver();
  if (impl_->thread.joinable()) return Error(ErrorCode::invalid_argument, "the archiver's thread already runs");
  impl_->stop_requested.store(false, std::memory_order_relaxed);  // relaxed: before the thread exists
  {
    const std::lock_guard<std::mutex> lock(impl_->result_mutex);
    impl_->thread_result.reset();
  }
  Impl* impl = impl_.get();
  impl_->thread = std::thread([impl] {
    Result<void> r = impl->engine->run(impl->stop_requested);
    const std::lock_guard<std::mutex> lock(impl->result_mutex);
    impl->thread_result = std::move(r);
  });
  return {};
}

Result<void> Archiver::stop() {
  if (!impl_) return no_archiver();
  if (!impl_->thread.joinable()) return {};
  impl_->stop_requested.store(true, std::memory_order_relaxed);  // relaxed: a request flag
  impl_->thread.join();
  const std::lock_guard<std::mutex> lock(impl_->result_mutex);
  Result<void> r = impl_->thread_result.value_or(Result<void>{});
  impl_->thread_result.reset();
  return r;
}

Result<void> Archiver::sync() {
  if (!impl_) return no_archiver();
  if (impl_->thread.joinable()) return Error(ErrorCode::invalid_argument, "the archiver runs on its thread");
  return impl_->engine->sync();
}

Result<void> Archiver::prune() {
  if (!impl_) return no_archiver();
  if (impl_->thread.joinable()) return Error(ErrorCode::invalid_argument, "the archiver runs on its thread");
  return impl_->engine->prune();
}

Result<void> Archiver::checkpoint() {
  if (!impl_) return no_archiver();
  if (impl_->thread.joinable()) return Error(ErrorCode::invalid_argument, "the archiver runs on its thread");
  return impl_->engine->checkpoint();
}

ArchiverCounters Archiver::counters() const noexcept { return impl_ ? impl_->engine->counters() : ArchiverCounters{}; }

std::string Archiver::last_error() const { return impl_ ? impl_->engine->last_error() : std::string(); }

const std::string& Archiver::directory() const noexcept {
  static const std::string kNone;
  return impl_ ? impl_->engine->directory() : kNone;
}

}  // namespace shmbus
