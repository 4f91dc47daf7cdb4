// Result<T> and Error: what every setup call (create, open, subscribe) returns.
// Standard library only: every layer of shmbus (shm/ included) uses them.
//
// Setup paths (create, open, subscribe) return Result<T>: either a value or an
// Error carrying a code, a message with the context a user needs, and the
// errno captured at the failing system call. Hot paths never use these; they
// return small [[nodiscard]] status enums instead.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shmbus {

/// What went wrong, coarsely; Error::message() says exactly what.
enum class ErrorCode : std::uint32_t {
  invalid_argument = 1,  ///< a parameter is out of range or malformed
  not_found,             ///< the named channel (or subscriber) does not exist
  already_exists,        ///< exclusive create found an existing segment
  permission_denied,     ///< the OS refused access to the segment
  no_space,              ///< /dev/shm (or memory) cannot hold the segment
  parameter_mismatch,    ///< opened with parameters that differ from the segment's
  version_mismatch,      ///< the segment has another layout version or ABI
  corrupted,             ///< a value read from shared memory is out of range
  timeout,               ///< a bounded wait (e.g. for initialisation) expired
  table_full,            ///< no free subscriber (or group) entry
  busy,                  ///< the named entry is in use by a live process
  system,                ///< another system call failure; see sys_errno()
};

/// A readable name for an ErrorCode ("parameter_mismatch"). Thread-safe.
std::string_view to_string(ErrorCode code) noexcept;

/// An error from a setup path: code, message with context, errno (0 if none).
class Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), message_(std::move(message)), sys_errno_(sys_errno) {}

  [[nodiscard]] ErrorCode code() const noexcept { return code_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  [[nodiscard]] int sys_errno() const noexcept { return sys_errno_; }

 private:
  ErrorCode code_;
  std::string message_;
  int sys_errno_;
};

/// A value or an Error. Check with ok() / operator bool before value().
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(implicit)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(implicit)

  [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }

  [[nodiscard]] const Error& error() const& { return std::get<1>(v_); }
  [[nodiscard]] Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

/// Result of a setup step that yields no value.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), has_error_(true) {}  // NOLINT(implicit)

  [[nodiscard]] bool ok() const noexcept { return !has_error_; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] const Error& error() const& { return err_; }

 private:
  Error err_{ErrorCode::system, {}};
  bool has_error_ = false;
};

}  // namespace shmbus
