//===- Files.h - Small file helpers shared by the disk cache and tune DB --===//
//
// Private to runtime/lib. Bounded reads of regular files (nothing read from
// disk is trusted, not even its size or type), whole-file writes, an atomic
// replace (write a temporary, rename over), a process-safe lock file, names
// no other thread or process picks, and checked reads of JSON numbers.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_LIB_FILES_H
#define FLASHJIT_RUNTIME_LIB_FILES_H

#include "flashjit/compiler/Diagnostics.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

namespace flashjit::files {

/// "flashjit: warning: <message>" on stderr.
void warn(const std::string &message);

/// Why a read failed. Permission is not corruption: a file another user
/// owns is left alone, never "repaired" by deleting it.
enum class ReadError {
  None,
  Missing,    ///< no such file
  Permission, ///< EACCES / EPERM
  NotRegular, ///< a directory, FIFO, device or socket
  TooLarge,   ///< more than the caller's limit
  Io,         ///< any other failure
};

struct FileContents {
  std::string data;
  ReadError error = ReadError::None;
  std::string message; ///< "<path>: <why>" when error != None
  explicit operator bool() const { return error == ReadError::None; }
};

/// The whole of a regular file of at most `maxBytes` bytes. Never blocks on
/// a FIFO and never reads more than maxBytes + 1 bytes, whatever the file is.
FileContents readFile(const std::string &path, uint64_t maxBytes);

Status writeFile(const std::string &path, const std::string &data);
/// Writes a temporary next to `path` and renames it over `path`: readers
/// see the old or the new contents, never a torn file.
Status replaceFile(const std::string &path, const std::string &data);

/// A name no other thread or process will pick: pid plus a counter.
std::string uniqueSuffix();
/// Whether `s` has the shape uniqueSuffix() gives: digits '-' digits.
bool isUniqueSuffix(const std::string &s);

/// "2026-11-24T07:23:10Z".
std::string utcTime(std::time_t t);

/// An exclusive flock on a lock file, held until destruction. The kernel
/// drops it when the process dies, so a killed writer never blocks the next.
class FileLock {
public:
  enum Mode { Wait, TryOnly };
  explicit FileLock(const std::string &path, Mode mode = Wait);
  ~FileLock();
  FileLock(const FileLock &) = delete;
  FileLock &operator=(const FileLock &) = delete;
  bool held() const { return fd_ >= 0; }
  /// TryOnly: the lock was not taken because another holder has it (as
  /// opposed to the file not being openable).
  bool busy() const { return busy_; }

private:
  int fd_ = -1;
  bool busy_ = false;
};

/// `j` as an integer in [lo, hi]; a float (1e308, 128.5), a value out of
/// range or another type throws nlohmann::json::type_error naming `what`,
/// as a malformed file deserves, instead of converting with undefined
/// behaviour or silent truncation.
int64_t intIn(const nlohmann::json &j, const char *what, int64_t lo,
              int64_t hi);

} // namespace flashjit::files

#endif // FLASHJIT_RUNTIME_LIB_FILES_H
