// Whose shared-memory segments a process accepts to take part in: the public
// type, under the name the OS layer uses.
#pragma once

#include <shmbus/trust.hpp>

namespace shmbus::shm {

using shmbus::Trust;

}  // namespace shmbus::shm
