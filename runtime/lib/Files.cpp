//===- Files.cpp - Bounded reads, atomic replace, lock files --------------===//
#include "Files.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace flashjit::files {

void warn(const std::string &message) {
  std::fprintf(stderr, "flashjit: warning: %s\n", message.c_str());
}

namespace {
FileContents failed(const std::string &path, ReadError error,
                    const std::string &why) {
  FileContents c;
  c.error = error;
  c.message = path + ": " + why;
  return c;
}

ReadError errorOf(int err) {
  switch (err) {
  case ENOENT:
  case ENOTDIR:
    return ReadError::Missing;
  case EACCES:
  case EPERM:
    return ReadError::Permission;
  default:
    return ReadError::Io;
  }
}
} // namespace

FileContents readFile(const std::string &path, uint64_t maxBytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
  // writer. It is checked for and refused before any read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return failed(path, errorOf(err), std::strerror(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return failed(path, errorOf(err), std::strerror(err));
  }
  if (!S_ISREG(st.st_mode))
    return failed(path, ReadError::NotRegular, "not a regular file");
  if (static_cast<uint64_t>(st.st_size) > maxBytes)
    return failed(path, ReadError::TooLarge,
                  std::to_string(st.st_size) + " bytes, more than the " +
                      std::to_string(maxBytes) + " allowed");
  FileContents c;
  c.data.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  // The file may grow while we read: stop one byte past the limit.
  while (c.data.size() <= maxBytes) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0)
      return c;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      const int err = errno;
      return failed(path, errorOf(err), std::strerror(err));
    }
    c.data.append(buf, static_cast<size_t>(n));
  }
  return failed(path, ReadError::TooLarge,
                "grew past the " + std::to_string(maxBytes) +
                    " bytes allowed while being read");
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

bool isUniqueSuffix(const std::string &s) {
  const size_t dash = s.find('-');
  auto digits = [](const std::string &part) {
    if (part.empty() || part.size() > 20)
      return false;
    for (char c : part)
      if (!std::isdigit(static_cast<unsigned char>(c)))
        return false;
    return true;
  };
  return dash != std::string::npos && digits(s.substr(0, dash)) &&
         digits(s.substr(dash + 1));
}

std::string utcTime(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

FileLock::FileLock(const std::string &path, Mode mode) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    return;
  const int op = mode == TryOnly ? LOCK_EX | LOCK_NB : LOCK_EX;
  while (::flock(fd_, op) != 0) {
    if (errno == EINTR)
      continue;
    busy_ = errno == EWOULDBLOCK;
    ::close(fd_);
    fd_ = -1;
    return;
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0)
    ::close(fd_);
}

int64_t intIn(const nlohmann::json &j, const char *what, int64_t lo,
              int64_t hi) {
  using json = nlohmann::json;
  auto bad = [&](std::string why) {
    if (why.size() > 40) // a whole object or a long string: its start
      why = why.substr(0, 40) + "...";
    return json::type_error::create(
        302,
        std::string(what) + " must be an integer in [" + std::to_string(lo) +
            ", " + std::to_string(hi) + "], got " + why,
        nullptr);
  };
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (hi < 0 || v > static_cast<uint64_t>(hi) ||
        (lo > 0 && v < static_cast<uint64_t>(lo)))
      throw bad(j.dump());
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < lo || v > hi)
      throw bad(j.dump());
    return v;
  }
  throw bad(j.dump());
}

} // namespace flashjit::files
