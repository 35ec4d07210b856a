//===- Files.h - Small file helpers shared by the disk cache and tune DB --===//
//
// Private to runtime/lib. Whole-file reads and writes, an atomic replace
// (write a temporary, rename over), a process-safe lock file, and names no
// other thread or process picks.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_LIB_FILES_H
#define FLASHJIT_RUNTIME_LIB_FILES_H

#include "flashjit/compiler/Diagnostics.h"

#include <ctime>
#include <optional>
#include <string>

namespace flashjit::files {

/// "flashjit: warning: <message>" on stderr.
void warn(const std::string &message);

/// The whole file, or nullopt when it cannot be opened or read.
std::optional<std::string> readFile(const std::string &path);
Status writeFile(const std::string &path, const std::string &data);
/// Writes a temporary next to `path` and renames it over `path`: readers
/// see the old or the new contents, never a torn file.
Status replaceFile(const std::string &path, const std::string &data);

/// A name no other thread or process will pick: pid plus a counter.
std::string uniqueSuffix();

/// "2026-11-24T07:23:10Z".
std::string utcTime(std::time_t t);

/// An exclusive flock on a lock file, held until destruction. The kernel
/// drops it when the process dies, so a killed writer never blocks the next.
class FileLock {
public:
  explicit FileLock(const std::string &path);
  ~FileLock();
  FileLock(const FileLock &) = delete;
  FileLock &operator=(const FileLock &) = delete;
  bool held() const { return fd_ >= 0; }

private:
  int fd_ = -1;
};

} // namespace flashjit::files

#endif // FLASHJIT_RUNTIME_LIB_FILES_H
