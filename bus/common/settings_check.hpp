// Comparing the settings stored in an existing object (a channel, a group, a
// dedup table) with the ones a caller asked for when opening or joining it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "shm/result.hpp"

namespace shmbus::bus {

/// One stored setting and the value a caller asked for.
struct SettingCheck {
  const char* field;   ///< the option's name, as the caller spells it
  std::uint64_t have;  ///< stored in the object
  std::uint64_t want;  ///< asked for
};

/// Shows a setting's value in an error; `num`-like by default.
using SettingFormatter = std::string (*)(std::string_view field, std::uint64_t value);

/// `parameter_mismatch` naming the first setting (in `checks` order) whose
/// stored value differs from the one asked for, e.g. "channel 'orders'
/// exists with capacity 1024; asked for 4096"; success if all match.
/// `subject` names the object ("channel 'orders'"); `show` formats values
/// (decimal when null).
inline Result<void> check_settings(std::string_view subject, std::span<const SettingCheck> checks,
                                   SettingFormatter show = nullptr) {
  for (const SettingCheck& c : checks) {
    if (c.have == c.want) continue;
    const std::string have = show ? show(c.field, c.have) : std::to_string(c.have);
    const std::string want = show ? show(c.field, c.want) : std::to_string(c.want);
    return Error(ErrorCode::parameter_mismatch,
                 std::string(subject) + " exists with " + c.field + " " + have + "; asked for " + want);
  }
  return {};
}

}  // namespace shmbus::bus
