// DedupTable's calls: each checks the handle, then calls the table's core.
#include <shmbus/dedup.hpp>

#include <utility>

#include "bus/dedup/dedup.hpp"

namespace shmbus {

Result<DedupTable> DedupTable::open_or_create(std::string_view name, const DedupOptions& opts, std::string_view bus) {
  auto core = bus::DedupCore::open_or_create(bus, name, opts);
  if (!core) return std::move(core).error();
  return DedupTable(std::shared_ptr<bus::DedupCore>(std::move(core.value())));
}

Result<void> DedupTable::remove(std::string_view name, std::string_view bus) {
  return bus::DedupCore::remove(bus, name);
}

DedupStatus DedupTable::begin(std::uint64_t id) noexcept {
  if (!core_) return DedupStatus::invalid;
  return core_->begin(id);
}

void DedupTable::complete(std::uint64_t id) noexcept {
  if (core_) core_->complete(id);
}

void DedupTable::abandon(std::uint64_t id) noexcept {
  if (core_) core_->abandon(id);
}

bool DedupTable::seen(std::uint64_t id) const noexcept { return core_ && core_->seen(id); }

DedupStats DedupTable::stats() const noexcept { return core_ ? core_->stats() : DedupStats{}; }

DedupOptions DedupTable::options() const { return core_ ? core_->options() : DedupOptions{}; }

}  // namespace shmbus
