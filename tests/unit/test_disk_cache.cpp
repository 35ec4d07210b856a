//===- test_disk_cache.cpp - The on-disk kernel cache, without a GPU ------===//
#include "flashjit/runtime/DiskCache.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace flashjit;

namespace {
/// A fresh directory under the system temp dir, removed afterwards.
class TempDir {
public:
  TempDir() {
    std::string tmpl =
        (fs::temp_directory_path() / "flashjit-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

CacheKey testKey(int headDim = 80) {
  CacheKey key;
  key.spec.headDimQK = key.spec.headDimV = headDim;
  key.spec.mask = MaskMode::Causal;
  key.arch = Arch::Sm90a;
  key.flashjitVersion = "0.1.0-test";
  key.llvmVersion = "22.1.8";
  key.driverVersion = 12080;
  return key;
}

CacheEntry testEntry(const CacheKey &key, char fill = 'x') {
  CacheEntry e;
  e.ptx = "// ptx for " + key.entryName() + "\n.version 8.0\n";
  e.cubin = std::string(4096, fill);
  e.cubin[0] = '\x7f'; // binary bytes, NUL included
  e.cubin[1] = '\0';
  e.meta = kernelMetaFor(key);
  return e;
}

void expectSameEntry(const CacheEntry &a, const CacheEntry &b) {
  EXPECT_EQ(a.ptx, b.ptx);
  EXPECT_EQ(a.cubin, b.cubin);
  EXPECT_EQ(a.meta.kernelName, b.meta.kernelName);
  EXPECT_EQ(a.meta.threadsPerBlock, b.meta.threadsPerBlock);
  EXPECT_EQ(a.meta.sharedMemBytes, b.meta.sharedMemBytes);
  EXPECT_EQ(a.meta.blockM, b.meta.blockM);
}

void writeBytes(const std::string &path, const std::string &data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

/// Sets meta.json's kernel.<field> of the entry at `entryPath` by hand.
template <typename T>
void editMeta(const std::string &entryPath, const char *field, T value) {
  std::ifstream in(entryPath + "/meta.json");
  nlohmann::json meta = nlohmann::json::parse(in);
  meta["kernel"][field] = value;
  writeBytes(entryPath + "/meta.json", meta.dump(2));
}

/// Runs `body` in a child process that dies after `seconds` (a hang is a
/// failure, not a stuck test run); returns its exit code, 128 + signal if
/// it was killed, and its stderr in `*err`.
int inChild(const std::function<int()> &body, unsigned seconds,
            std::string *err = nullptr, bool asOtherUser = false) {
  int fds[2];
  if (::pipe(fds) != 0)
    return -1;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(fds[1], STDERR_FILENO);
    ::alarm(seconds);
    // Root reads everything: a file "of another user" needs a real one.
    constexpr uid_t kNobody = 65534;
    if (asOtherUser && ::geteuid() == 0 &&
        (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0))
      ::_exit(99);
    ::_exit(body());
  }
  ::close(fds[1]);
  std::string captured;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;)
    if (n > 0)
      captured.append(buf, size_t(n));
    else if (errno != EINTR)
      break;
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (err)
    *err = captured;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// Sets or unsets environment variables for a scope, then restores them.
class ScopedEnv {
public:
  void set(const char *name, const char *value) {
    if (!saved_.count(name)) {
      const char *old = std::getenv(name);
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto &[name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }

private:
  std::map<std::string, std::optional<std::string>> saved_;
};
} // namespace

TEST(DiskCache, StoreThenLoadRoundTrips) {
  TempDir dir;
  DiskCache cache(dir.path() + "/nested/cache"); // created on first store
  const CacheKey key = testKey();
  const CacheEntry entry = testEntry(key);
  EXPECT_FALSE(cache.load(key));
  ASSERT_TRUE(cache.store(key, entry).isOk());

  const std::string path = cache.entryPath(key);
  EXPECT_EQ(fs::path(path).filename().string(), key.entryName());
  for (const char *file : {"kernel.ptx", "kernel.cubin", "meta.json"})
    EXPECT_TRUE(fs::is_regular_file(path + "/" + file)) << file;

  std::string problem = "stale";
  auto loaded = cache.load(key, &problem);
  ASSERT_TRUE(loaded) << problem;
  EXPECT_TRUE(problem.empty());
  expectSameEntry(*loaded, entry);
}

TEST(DiskCache, EntryNameIsReadableNamePlusHash) {
  const CacheKey key = testKey();
  const std::string name = key.entryName();
  const std::string prefix = kernelName(key.spec, key.config, key.arch) + "-";
  ASSERT_EQ(name.rfind(prefix, 0), 0u) << name;
  const std::string hash = name.substr(prefix.size());
  EXPECT_EQ(hash, key.hash());
  ASSERT_EQ(hash.size(), 16u);
  EXPECT_EQ(hash.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(DiskCache, GetOrBuildBuildsOnceThenHits) {
  TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey key = testKey();
  int builds = 0;
  auto build = [&]() -> Expected<CacheEntry> {
    ++builds;
    return testEntry(key);
  };
  bool hit = true;
  auto first = cache.getOrBuild(key, build, &hit);
  ASSERT_TRUE(first) << first.message();
  EXPECT_FALSE(hit);
  auto second = cache.getOrBuild(key, build, &hit);
  ASSERT_TRUE(second) << second.message();
  EXPECT_TRUE(hit);
  EXPECT_EQ(builds, 1);
  expectSameEntry(*first, *second);
}

TEST(DiskCache, BuildFailureIsReturnedAndNothingStored) {
  TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey key = testKey();
  auto result = cache.getOrBuild(
      key, [] { return Expected<CacheEntry>(Status::error("ptx is bad")); });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.message(), "ptx is bad");
  EXPECT_FALSE(fs::exists(cache.entryPath(key)));
}

/// Each way of damaging an entry must be detected on load, reported once on
/// stderr by getOrBuild, and replaced by a rebuilt entry.
struct Damage {
  const char *name;
  void (*apply)(const std::string &entryPath);
  const char *expectInProblem;
};

class CorruptEntry : public ::testing::TestWithParam<Damage> {};

TEST_P(CorruptEntry, IsRejectedWarnedRemovedAndRebuilt) {
  TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey key = testKey();
  ASSERT_TRUE(cache.store(key, testEntry(key, 'a')).isOk());
  GetParam().apply(cache.entryPath(key));

  std::string problem;
  EXPECT_FALSE(cache.load(key, &problem));
  EXPECT_NE(problem.find(GetParam().expectInProblem), std::string::npos)
      << problem;

  int builds = 0;
  bool hit = true;
  testing::internal::CaptureStderr();
  auto rebuilt = cache.getOrBuild(
      key,
      [&]() -> Expected<CacheEntry> {
        ++builds;
        return testEntry(key, 'b');
      },
      &hit);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(rebuilt) << rebuilt.message();
  EXPECT_FALSE(hit);
  EXPECT_EQ(builds, 1);
  EXPECT_EQ(rebuilt->cubin.back(), 'b') << "the corrupt entry was used";
  EXPECT_NE(err.find("warning"), std::string::npos) << err;
  EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  EXPECT_NE(err.find(key.entryName()), std::string::npos) << err;

  auto reloaded = cache.load(key);
  ASSERT_TRUE(reloaded);
  EXPECT_EQ(reloaded->cubin.back(), 'b');
}

INSTANTIATE_TEST_SUITE_P(
    DiskCache, CorruptEntry,
    ::testing::Values(
        Damage{"TruncatedCubin",
               [](const std::string &p) {
                 fs::resize_file(p + "/kernel.cubin", 100);
               },
               "kernel.cubin has 100 bytes"},
        Damage{"FlippedCubinByte",
               [](const std::string &p) {
                 std::fstream f(p + "/kernel.cubin", std::ios::in |
                                                         std::ios::out |
                                                         std::ios::binary);
                 f.seekp(2000);
                 f.put('Z');
               },
               "checksum"},
        Damage{"EmptyPtx",
               [](const std::string &p) { writeBytes(p + "/kernel.ptx", ""); },
               "kernel.ptx has 0 bytes"},
        Damage{"MissingCubin",
               [](const std::string &p) { fs::remove(p + "/kernel.cubin"); },
               "kernel.cubin is missing"},
        Damage{"MissingMeta",
               [](const std::string &p) { fs::remove(p + "/meta.json"); },
               "meta.json is missing"},
        Damage{"UnparseableMeta",
               [](const std::string &p) {
                 writeBytes(p + "/meta.json", "{\"format\": 1, \"key\": ");
               },
               "not valid JSON"},
        Damage{"MetaMissingFields",
               [](const std::string &p) {
                 writeBytes(p + "/meta.json", "{\"format\": 1}");
               },
               "malformed"},
        // A hand edit of the launch facts (defect 2): the key implies them.
        Damage{"EditedThreadsPerBlock",
               [](const std::string &p) { editMeta(p, "threads_per_block", 64); },
               "launch facts"},
        Damage{"EditedSharedMemory",
               [](const std::string &p) { editMeta(p, "shared_mem_bytes", 0); },
               "launch facts"},
        // Numbers that do not convert to int exactly (defect 15).
        Damage{"HugeFloatThreads",
               [](const std::string &p) {
                 editMeta(p, "threads_per_block", 1e308);
               },
               "malformed"},
        Damage{"FractionalBlockM",
               [](const std::string &p) { editMeta(p, "block_m", 128.5); },
               "malformed"},
        Damage{"WideSharedMemory",
               [](const std::string &p) {
                 editMeta(p, "shared_mem_bytes", int64_t(1) << 32);
               },
               "malformed"},
        // Unbounded reads (defect 10): the size meta.json declares bounds
        // the read, and only regular files are read.
        Damage{"CubinGrownPastItsSize",
               [](const std::string &p) {
                 fs::resize_file(p + "/kernel.cubin", uint64_t(1) << 33);
               },
               "more than the 4096 bytes"},
        Damage{"CubinIsADirectory",
               [](const std::string &p) {
                 fs::remove(p + "/kernel.cubin");
                 fs::create_directory(p + "/kernel.cubin");
               },
               "not a regular file"},
        Damage{"MetaOfAnotherKey",
               [](const std::string &p) {
                 DiskCache other(fs::path(p).parent_path().string() + "/other");
                 CacheKey k = testKey(64);
                 (void)other.store(k, testEntry(k));
                 fs::copy_file(other.entryPath(k) + "/meta.json",
                               p + "/meta.json",
                               fs::copy_options::overwrite_existing);
               },
               "another key"}),
    [](const auto &info) { return std::string(info.param.name); });

TEST(DiskCache, StoreLosingTheRenameToAnIdenticalEntrySucceeds) {
  TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey key = testKey();
  ASSERT_TRUE(cache.store(key, testEntry(key)).isOk());
  // A second writer of the same key finds the place taken: that is success,
  // and no temporary directory is left behind.
  EXPECT_TRUE(cache.store(key, testEntry(key)).isOk());
  int others = 0; // the entry's lock file may stay; nothing else
  for (const auto &e : fs::directory_iterator(dir.path()))
    others += e.path().filename() != key.entryName() &&
              e.path().filename() != key.entryName() + ".lock";
  EXPECT_EQ(others, 0);
}

TEST(DiskCache, ConcurrentThreadsOfOneKeyAllSucceedAndBuildOnce) {
  TempDir dir;
  const CacheKey key = testKey();
  std::atomic<int> builds{0};
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      DiskCache cache(dir.path()); // one per thread, as separate processes
      auto r = cache.getOrBuild(key, [&]() -> Expected<CacheEntry> {
        ++builds;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return testEntry(key);
      });
      if (!r || r->cubin != testEntry(key).cubin)
        ++failures;
    });
  for (auto &t : threads)
    t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(builds, 1) << "the file lock should serialise the builders";
}

TEST(DiskCache, ConcurrentProcessesOfOneKeyAllSucceedAndBuildOnce) {
  TempDir dir;
  const CacheKey key = testKey();
  const std::string buildLog = dir.path() + "/builds.log";
  constexpr int kProcesses = 6;
  std::vector<pid_t> children;
  for (int i = 0; i < kProcesses; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      DiskCache cache(dir.path() + "/cache");
      auto r = cache.getOrBuild(key, [&]() -> Expected<CacheEntry> {
        std::ofstream(buildLog, std::ios::app) << "built\n";
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return testEntry(key);
      });
      ::_exit(r && r->cubin == testEntry(key).cubin ? 0 : 1);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::ifstream log(buildLog);
  int lines = 0;
  for (std::string line; std::getline(log, line);)
    ++lines;
  EXPECT_EQ(lines, 1);
  EXPECT_TRUE(DiskCache(dir.path() + "/cache").load(key));
}

TEST(DiskCache, ABuilderKilledWhileHoldingTheLockDoesNotBlockTheNext) {
  TempDir dir;
  const CacheKey key = testKey();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    DiskCache cache(dir.path());
    (void)cache.getOrBuild(key, []() -> Expected<CacheEntry> {
      ::_exit(3); // dies mid-build, lock held
    });
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3);

  // The kernel released the flock with the process; this must not hang.
  DiskCache cache(dir.path());
  auto r = cache.getOrBuild(
      key, [&] { return Expected<CacheEntry>(testEntry(key)); });
  ASSERT_TRUE(r) << r.message();
}

TEST(DiskCache, UnwritableDirectoryStillReturnsTheBuiltEntry) {
  TempDir dir;
  // Read-only for its owner, and not writable by anyone else: as root the
  // child runs as another user, for whom it is just as read-only.
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec |
                                  fs::perms::others_read |
                                  fs::perms::others_exec);
  const CacheKey key = testKey();
  std::string err;
  const int code = inChild(
      [&] {
        DiskCache cache(dir.path() + "/cache");
        auto r = cache.getOrBuild(
            key, [&] { return Expected<CacheEntry>(testEntry(key)); });
        return r ? 0 : 1;
      },
      30, &err, /*asOtherUser=*/true);
  fs::permissions(dir.path(), fs::perms::owner_all);
  EXPECT_EQ(code, 0) << err;
  EXPECT_NE(err.find("without being cached"), std::string::npos) << err;
}

// Defect 10: a FIFO in place of meta.json made load() wait for a writer
// forever, and /dev/zero in place of the cubin read until memory ran out.
TEST(DiskCache, AFifoOrADeviceInAnEntryIsCorruptNotAHang) {
  TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey key = testKey();
  ASSERT_TRUE(cache.store(key, testEntry(key)).isOk());
  const std::string entry = cache.entryPath(key);
  auto problemWithin = [&](unsigned seconds) {
    std::string err;
    const int code = inChild(
        [&] {
          std::string problem;
          const bool loaded = cache.load(key, &problem).has_value();
          std::fprintf(stderr, "%s", problem.c_str());
          return loaded ? 1 : 0;
        },
        seconds, &err);
    EXPECT_EQ(code, 0) << "killed or loaded (exit " << code << "): " << err;
    return err;
  };
  fs::rename(entry + "/kernel.cubin", entry + "/kernel.cubin.real");
  fs::create_symlink("/dev/zero", entry + "/kernel.cubin");
  EXPECT_NE(problemWithin(10).find("not a regular file"), std::string::npos);

  fs::remove(entry + "/meta.json");
  ASSERT_EQ(::mkfifo((entry + "/meta.json").c_str(), 0600), 0);
  EXPECT_NE(problemWithin(10).find("not a regular file"), std::string::npos);
}

// Defect 9: an entry another user wrote and this one cannot read was
// called corrupt, "removed" (which failed) and rebuilt on every run.
TEST(DiskCache, AnUnreadableEntryIsLeftAloneWithOneWarning) {
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read |
                                  fs::perms::group_exec |
                                  fs::perms::others_read |
                                  fs::perms::others_exec);
  DiskCache cache(dir.path());
  const CacheKey key = testKey();
  ASSERT_TRUE(cache.store(key, testEntry(key, 'a')).isOk());
  const std::string entry = cache.entryPath(key);
  const bool root = ::geteuid() == 0;
  if (!root) // otherwise the child becomes another user
    fs::permissions(entry, fs::perms::none);
  std::string err;
  const int code = inChild(
      [&] {
        DiskCache other(dir.path());
        int builds = 0;
        for (int run = 0; run < 3; ++run) {
          auto r = other.getOrBuild(key, [&]() -> Expected<CacheEntry> {
            ++builds;
            return testEntry(key, 'b');
          });
          if (!r || r->cubin.back() != 'b')
            return 1;
        }
        return builds == 3 ? 0 : 2;
      },
      30, &err, /*asOtherUser=*/true);
  fs::permissions(entry, fs::perms::owner_all);
  EXPECT_EQ(code, 0) << err;
  EXPECT_NE(err.find("not readable by this user"), std::string::npos) << err;
  EXPECT_EQ(err.find("corrupt"), std::string::npos) << err;
  EXPECT_EQ(err.find("warning"), err.rfind("warning"))
      << "warned more than once: " << err;
  // Untouched: still the owner's valid entry.
  auto kept = cache.load(key);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->cubin.back(), 'a');
}

// Defect 1: `cache clear` removed every directory in the cache directory
// (.git, Documents ...) and `cache list` showed them as entries.
TEST(DiskCache, ListAndClearTouchOnlyWhatTheCacheWrote) {
  TempDir dir;
  DiskCache cache(dir.path());
  const CacheKey ours = testKey(64), busy = testKey(96), writing = testKey(112);
  ASSERT_TRUE(cache.store(ours, testEntry(ours)).isOk());
  ASSERT_TRUE(cache.store(busy, testEntry(busy)).isOk());
  const std::string d = dir.path();
  // Foreign things, some shaped like ours.
  fs::create_directories(d + "/.git/objects");
  fs::create_directories(d + "/Documents");
  writeBytes(d + "/Documents/thesis.tex", "precious");
  writeBytes(d + "/notes.txt", "mine");
  fs::create_directories(d + "/.tmp-not-ours");
  fs::create_directories(d + "/.trash-of-someone");
  const std::string lookalike = "fwd_fake-0123456789abcdef";
  fs::create_directories(d + "/" + lookalike);
  writeBytes(d + "/" + lookalike + "/meta.json", "{\"format\": 1}");
  const std::string copied = "fwd_copy-fedcba9876543210";
  fs::copy(cache.entryPath(ours), d + "/" + copied); // meta names another dir
  fs::create_directory_symlink(d + "/Documents",
                               d + "/fwd_link-00000000deadbeef");
  // Another process is replacing `busy` and writing `writing`: their locks
  // are held (flock on a descriptor of our own stands in for it).
  auto hold = [&](const CacheKey &k) {
    const int fd =
        ::open((d + "/" + k.entryName() + ".lock").c_str(), O_RDWR | O_CREAT,
               0644);
    EXPECT_EQ(::flock(fd, LOCK_EX), 0);
    return fd;
  };
  const int busyLock = hold(busy), writingLock = hold(writing);
  const std::string tmp = d + "/.tmp-" + writing.entryName() + "-Ab3dE9";
  fs::create_directories(tmp);
  writeBytes(tmp + "/kernel.ptx", "half written");

  auto listed = cache.list();
  ASSERT_TRUE(listed) << listed.message();
  std::vector<std::string> names;
  for (const auto &e : *listed)
    names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{ours.entryName(),
                                             busy.entryName()}));

  auto cleared = cache.clear();
  ASSERT_TRUE(cleared) << cleared.message();
  EXPECT_EQ(cleared->removed, 1);
  EXPECT_EQ(cleared->inUse, 2);
  EXPECT_FALSE(fs::exists(cache.entryPath(ours)));
  EXPECT_TRUE(cache.load(busy)) << "an entry in use was removed";
  EXPECT_TRUE(fs::exists(tmp + "/kernel.ptx")) << "a write in progress went";
  for (const char *kept :
       {"/.git/objects", "/Documents/thesis.tex", "/notes.txt",
        "/.tmp-not-ours", "/.trash-of-someone"})
    EXPECT_TRUE(fs::exists(d + kept)) << kept;
  EXPECT_TRUE(fs::exists(d + "/" + lookalike + "/meta.json"));
  EXPECT_TRUE(fs::exists(d + "/" + copied + "/kernel.cubin"));
  EXPECT_TRUE(fs::is_symlink(d + "/fwd_link-00000000deadbeef"));

  // Once the writers are done, their leftovers are the cache's to clear.
  ::close(busyLock);
  ::close(writingLock);
  cleared = cache.clear();
  ASSERT_TRUE(cleared);
  EXPECT_EQ(cleared->removed, 1);
  EXPECT_EQ(cleared->inUse, 0);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_FALSE(fs::exists(d + "/" + writing.entryName() + ".lock"))
      << "the lock of a writer that left only a temporary stayed";
  EXPECT_TRUE(fs::exists(d + "/Documents/thesis.tex"));
}

TEST(DiskCache, ListAndClear) {
  TempDir dir;
  DiskCache cache(dir.path());
  auto empty = cache.list();
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());

  const CacheKey a = testKey(64), b = testKey(128);
  ASSERT_TRUE(
      cache.getOrBuild(a, [&] { return Expected<CacheEntry>(testEntry(a)); }));
  ASSERT_TRUE(cache.store(b, testEntry(b)).isOk());
  // A writer that crashed before its rename (no lock is held).
  fs::create_directory(dir.path() + "/.tmp-" + a.entryName() + "-Zz9Yy8");

  auto entries = cache.list();
  ASSERT_TRUE(entries) << entries.message();
  ASSERT_EQ(entries->size(), 2u);
  const std::string first = std::min(a.entryName(), b.entryName());
  EXPECT_EQ((*entries)[0].name, first);
  for (const auto &e : *entries) {
    EXPECT_GT(e.bytes, 4096u); // cubin + ptx + meta
    EXPECT_GT(e.createdUnixTime, 1600000000);
  }

  auto removed = cache.clear();
  ASSERT_TRUE(removed) << removed.message();
  EXPECT_EQ(removed->removed, 2);
  EXPECT_EQ(removed->inUse, 0);
  EXPECT_TRUE(fs::is_empty(dir.path())) << "locks and temp dirs go too";
  EXPECT_FALSE(cache.load(a));
}

TEST(DiskCache, MissingDirectoryIsAnEmptyCache) {
  DiskCache cache("/nonexistent/flashjit-cache-dir");
  auto entries = cache.list();
  ASSERT_TRUE(entries);
  EXPECT_TRUE(entries->empty());
  auto removed = cache.clear();
  ASSERT_TRUE(removed);
  EXPECT_EQ(removed->removed, 0);
}

TEST(DiskCache, DirectoryPrecedence) {
  ScopedEnv env;
  env.set("FLASHJIT_CACHE_DIR", "/tmp/fj-explicit");
  env.set("XDG_CACHE_HOME", "/tmp/xdg");
  env.set("HOME", "/home/someone");
  EXPECT_EQ(*DiskCache::defaultDirectory(), "/tmp/fj-explicit");

  env.set("FLASHJIT_CACHE_DIR", ""); // empty counts as unset
  EXPECT_EQ(*DiskCache::defaultDirectory(), "/tmp/xdg/flashjit");
  env.set("FLASHJIT_CACHE_DIR", nullptr);
  EXPECT_EQ(*DiskCache::defaultDirectory(), "/tmp/xdg/flashjit");

  env.set("XDG_CACHE_HOME", "relative/xdg"); // the XDG spec: ignore relative
  EXPECT_EQ(*DiskCache::defaultDirectory(), "/home/someone/.cache/flashjit");
  env.set("XDG_CACHE_HOME", nullptr);
  EXPECT_EQ(*DiskCache::defaultDirectory(), "/home/someone/.cache/flashjit");

  env.set("HOME", nullptr);
  auto none = DiskCache::defaultDirectory();
  ASSERT_FALSE(none);
  EXPECT_NE(none.message().find("FLASHJIT_CACHE_DIR"), std::string::npos);
}
