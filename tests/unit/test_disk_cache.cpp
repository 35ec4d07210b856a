//===- test_disk_cache.cpp - The on-disk kernel cache, without a GPU ------===//
#include "flashjit/runtime/DiskCache.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
  e.meta = {kernelName(key.spec, key.config, key.arch), 256, 65536, 128};
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
  int others = 0;
  for (const auto &e : fs::directory_iterator(dir.path()))
    others += e.path().filename() != key.entryName();
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
  if (::geteuid() == 0)
    GTEST_SKIP() << "root writes anywhere";
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
  DiskCache cache(dir.path() + "/cache");
  const CacheKey key = testKey();
  testing::internal::CaptureStderr();
  auto r = cache.getOrBuild(
      key, [&] { return Expected<CacheEntry>(testEntry(key)); });
  const std::string err = testing::internal::GetCapturedStderr();
  fs::permissions(dir.path(), fs::perms::owner_all);
  ASSERT_TRUE(r) << r.message();
  EXPECT_NE(err.find("without being cached"), std::string::npos) << err;
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
  fs::create_directory(dir.path() + "/.tmp-leftover-123"); // a crashed writer's

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
  EXPECT_EQ(*removed, 2);
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
  EXPECT_EQ(*removed, 0);
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
