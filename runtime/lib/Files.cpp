//===- Files.cpp - Whole-file IO, atomic replace, lock files ---------------===//
#include "Files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace flashjit::files {

void warn(const std::string &message) {
  std::fprintf(stderr, "flashjit: warning: %s\n", message.c_str());
}

std::optional<std::string> readFile(const std::string &path) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return std::nullopt;
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    data.append(buf, n);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed)
    return std::nullopt;
  return data;
}

Status writeFile(const std::string &path, const std::string &data) {
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    return Status::error("cannot create " + path + ": " + std::strerror(errno));
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  if (std::fclose(f) != 0 || !ok)
    return Status::error("cannot write " + path + ": " + std::strerror(errno));
  return Status::ok();
}

Status replaceFile(const std::string &path, const std::string &data) {
  const std::string tmp = path + ".tmp-" + uniqueSuffix();
  if (Status s = writeFile(tmp, data); !s) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::error("cannot replace " + path + ": " + std::strerror(err));
  }
  return Status::ok();
}

std::string uniqueSuffix() {
  static std::atomic<unsigned> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

std::string utcTime(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

FileLock::FileLock(const std::string &path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  while (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
    if (errno != EINTR) {
      ::close(fd_);
      fd_ = -1;
    }
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0)
    ::close(fd_);
}

} // namespace flashjit::files
