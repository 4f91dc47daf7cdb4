// Trust: whose shared-memory segments a process accepts to take part in.
// Standard library only: the OS layer (shm/) uses this type too.
#pragma once

#include <cstdint>
#include <vector>

namespace shmbus {

/// Owners, besides this process's uid and root, whose existing segments a
/// participant (anything but a read-only open) accepts: a segment owned by any
/// other uid is refused, since another local user could have created the name
/// first, with a hostile header, and then rewrite it at will. See
/// docs/guarantees.md.
struct Trust {
  std::vector<std::uint32_t> uids;  ///< also accept segments owned by these uids
  std::vector<std::uint32_t> gids;  ///< ... or whose group is one of these gids
};

}  // namespace shmbus
