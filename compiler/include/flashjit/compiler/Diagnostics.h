//===- Diagnostics.h - Error values shared by compiler and runtime ----------===//
//
// A small Status / Expected<T> pair: errors are values carrying one message
// meant for the user ("head_dim must be in [1, 256], got 300"). No
// exceptions cross the library boundary.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_COMPILER_DIAGNOSTICS_H
#define FLASHJIT_COMPILER_DIAGNOSTICS_H

#include <string>
#include <utility>
#include <variant>

namespace flashjit {

/// Success, or an error with a message.
class [[nodiscard]] Status {
public:
  static Status ok() { return Status(); }
  static Status error(std::string message) {
    Status s;
    s.failed_ = true;
    s.message_ = std::move(message);
    return s;
  }
  bool isOk() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string &message() const { return message_; }

private:
  bool failed_ = false;
  std::string message_;
};

/// A value, or the Status that explains why there is none.
template <typename T> class [[nodiscard]] Expected {
public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Status error) : v_(std::move(error)) {}
  bool isOk() const { return v_.index() == 0; }
  explicit operator bool() const { return isOk(); }
  T &operator*() { return std::get<0>(v_); }
  const T &operator*() const { return std::get<0>(v_); }
  T *operator->() { return &std::get<0>(v_); }
  const T *operator->() const { return &std::get<0>(v_); }
  /// The error (only when !isOk()).
  const Status &status() const { return std::get<1>(v_); }
  const std::string &message() const { return std::get<1>(v_).message(); }

private:
  std::variant<T, Status> v_;
};

} // namespace flashjit

#endif // FLASHJIT_COMPILER_DIAGNOSTICS_H
