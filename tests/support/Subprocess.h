//===- Subprocess.h - Run a program and capture its output (tests only) ----===//
//
// Header-only helpers shared by the CLI and ptxas tests: a scratch
// directory, and posix_spawn without a shell, stdout and stderr captured
// separately, the exit status decoded (a crash is 128 + signal, never a
// plain non-zero exit).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TESTS_SUPPORT_SUBPROCESS_H
#define FLASHJIT_TESTS_SUPPORT_SUBPROCESS_H

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char **environ;

namespace flashjit::test_support {

inline std::string readFile(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

/// A scratch directory, removed with everything in it.
class TempDir {
public:
  explicit TempDir(const std::string &prefix = "flashjit-test") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()))
      path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty())
      std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  const std::filesystem::path &path() const { return path_; }

private:
  std::filesystem::path path_;
};

struct ProcessResult {
  bool started = false;  ///< posix_spawn succeeded
  bool signaled = false; ///< killed by a signal (a crash)
  int signal = 0;
  int exitCode = -1;     ///< WEXITSTATUS, or 128 + signal; -1 if not started
  std::string out;       ///< stdout
  std::string err;       ///< stderr (or why the spawn failed)
  std::string all() const { return out + err; }
};

/// Runs args[0] with args (no shell, stdin from /dev/null) and waits for it.
inline ProcessResult runProcess(std::vector<std::string> args) {
  ProcessResult r;
  TempDir tmp("flashjit-process");
  if (tmp.path().empty() || args.empty()) {
    r.err = "no scratch directory or no program";
    return r;
  }
  const std::string outPath = (tmp.path() / "stdout").string();
  const std::string errPath = (tmp.path() / "stderr").string();
  std::vector<char *> argv;
  for (std::string &a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, outPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, errPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = 0;
  const int rc =
      ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    r.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return r;
  }
  r.started = true;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    r.signaled = true;
    r.signal = WTERMSIG(status);
    r.exitCode = 128 + r.signal;
  } else if (WIFEXITED(status)) {
    r.exitCode = WEXITSTATUS(status);
  }
  r.out = readFile(outPath);
  r.err = readFile(errPath);
  return r;
}

} // namespace flashjit::test_support

#endif
