// Whose shared-memory segments a process accepts to take part in.
#pragma once

#include <cstdint>
#include <vector>

namespace shmbus::shm {

/// Whose segments a read-write open accepts besides the caller's own (the
/// effective uid) and root's: a segment owned by any other uid is refused,
/// since another local user could have created the name first, with a
/// hostile header, and then rewrite it at will.
struct Trust {
  std::vector<std::uint32_t> uids;  ///< also accept segments owned by these uids
  std::vector<std::uint32_t> gids;  ///< ... or whose group is one of these gids
};

}  // namespace shmbus::shm
