#include "shm/result.hpp"

namespace shmbus {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::already_exists: return "already_exists";
    case ErrorCode::permission_denied: return "permission_denied";
    case ErrorCode::no_space: return "no_space";
    case ErrorCode::parameter_mismatch: return "parameter_mismatch";
    case ErrorCode::version_mismatch: return "version_mismatch";
    case ErrorCode::corrupted: return "corrupted";
    case ErrorCode::timeout: return "timeout";
    case ErrorCode::table_full: return "table_full";
    case ErrorCode::busy: return "busy";
    case ErrorCode::system: return "system";
  }
  return "unknown";
}

}  // namespace shmbus
