//===- DiskCache.cpp - Entries on disk: key, write, verify, lock, list ----===//
#include "flashjit/runtime/DiskCache.h"

#include "Files.h"

#include <nlohmann/json.hpp>
#include <xxhash.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace flashjit {

using files::FileLock;
using files::readFile;
using files::uniqueSuffix;
using files::utcTime;
using files::warn;
using files::writeFile;

namespace {
constexpr const char *kPtxFile = "kernel.ptx";
constexpr const char *kCubinFile = "kernel.cubin";
constexpr const char *kMetaFile = "meta.json";
constexpr int kMetaFormat = 1;
/// Prefixes of directories that are not (yet, or any more) entries.
constexpr const char *kTempPrefix = ".tmp-";
constexpr const char *kTrashPrefix = ".trash-";
constexpr const char *kLockSuffix = ".lock";

/// Hex digits of a 64-bit hash in entry names and checksums.
constexpr size_t kHashHexDigits = 16;
std::string hex16(uint64_t v) {
  char buf[kHashHexDigits + 1];
  std::snprintf(buf, sizeof buf, "%0*llx", int(kHashHexDigits),
                static_cast<unsigned long long>(v));
  return buf;
}
std::string checksum(const std::string &data) {
  return hex16(XXH64(data.data(), data.size(), 0));
}

json keyJson(const CacheKey &key) {
  return {{"hash", key.hash()},
          {"spec", canonicalText(key.spec)},
          {"config", canonicalText(key.config)},
          {"arch", std::string(toString(key.arch))},
          {"flashjit_version", key.flashjitVersion},
          {"llvm_version", key.llvmVersion},
          {"cuda_driver_version", key.driverVersion}};
}

json fileJson(const std::string &data) {
  return {{"bytes", data.size()}, {"xxh64", checksum(data)}};
}

bool startsWith(const std::string &s, const char *prefix) {
  return s.rfind(prefix, 0) == 0;
}
bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Whether `name` has the shape of CacheKey::entryName(): a kernel name,
/// "-", and 16 hex digits of the key's hash.
bool isEntryName(const std::string &name) {
  if (name.size() <= kHashHexDigits + 1 ||
      name[name.size() - kHashHexDigits - 1] != '-')
    return false;
  return std::all_of(name.end() - kHashHexDigits, name.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) != 0;
  });
}
} // namespace

// ---- the key ----------------------------------------------------------------
std::string CacheKey::text() const {
  return "spec=" + canonicalText(spec) + "\nconfig=" + canonicalText(config) +
         "\narch=" + std::string(toString(arch)) +
         "\nflashjit=" + flashjitVersion + "\nllvm=" + llvmVersion +
         "\ncuda_driver=" + std::to_string(driverVersion) + "\n";
}

std::string CacheKey::hash() const {
  const std::string t = text();
  return hex16(XXH3_64bits(t.data(), t.size()));
}

std::string CacheKey::entryName() const {
  return kernelName(spec, config, arch) + "-" + hash();
}

// ---- the cache --------------------------------------------------------------
DiskCache::DiskCache(std::string directory) : dir_(std::move(directory)) {}

Expected<std::string> DiskCache::defaultDirectory() {
  auto env = [](const char *name) -> std::string {
    const char *v = std::getenv(name);
    return v ? v : "";
  };
  if (std::string dir = env("FLASHJIT_CACHE_DIR"); !dir.empty())
    return dir;
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty() && xdg[0] == '/')
    return xdg + "/flashjit";
  if (std::string home = env("HOME"); !home.empty())
    return home + "/.cache/flashjit";
  return Status::error("cannot place the kernel cache: none of "
                       "FLASHJIT_CACHE_DIR, XDG_CACHE_HOME or HOME is set");
}

std::string DiskCache::entryPath(const CacheKey &key) const {
  return dir_ + "/" + key.entryName();
}

std::optional<CacheEntry> DiskCache::load(const CacheKey &key,
                                          std::string *problem) const {
  std::string ignored;
  std::string &why = problem ? *problem : ignored;
  why.clear();
  const std::string path = entryPath(key);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return std::nullopt; // missing: not a problem
  auto fail = [&](std::string reason) {
    why = std::move(reason);
    return std::nullopt;
  };
  auto metaText = readFile(path + "/" + kMetaFile);
  if (!metaText)
    return fail(std::string(kMetaFile) + " is missing or unreadable");
  json meta = json::parse(*metaText, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || !meta.is_object())
    return fail(std::string(kMetaFile) + " is not valid JSON");
  try {
    if (meta.at("format").get<int>() != kMetaFormat)
      return fail("unknown meta.json format " + meta.at("format").dump());
    if (meta.at("key") != keyJson(key))
      return fail("meta.json describes another key");
    CacheEntry entry;
    for (auto [name, data] : {std::pair{kPtxFile, &entry.ptx},
                              std::pair{kCubinFile, &entry.cubin}}) {
      auto contents = readFile(path + "/" + name);
      if (!contents)
        return fail(std::string(name) + " is missing or unreadable");
      const json &expect = meta.at("files").at(name);
      const auto bytes = expect.at("bytes").get<uint64_t>();
      if (contents->size() != bytes)
        return fail(std::string(name) + " has " +
                    std::to_string(contents->size()) +
                    " bytes, meta.json says " + std::to_string(bytes));
      if (checksum(*contents) != expect.at("xxh64").get<std::string>())
        return fail(std::string(name) + " does not match its checksum");
      *data = std::move(*contents);
    }
    const json &kernel = meta.at("kernel");
    entry.meta.kernelName = kernel.at("name").get<std::string>();
    entry.meta.threadsPerBlock = kernel.at("threads_per_block").get<int>();
    entry.meta.sharedMemBytes = kernel.at("shared_mem_bytes").get<int>();
    entry.meta.blockM = kernel.at("block_m").get<int>();
    if (entry.cubin.empty() || entry.meta.kernelName.empty() ||
        entry.meta.threadsPerBlock <= 0 || entry.meta.blockM <= 0)
      return fail("meta.json holds an incomplete kernel description");
    return entry;
  } catch (const json::exception &e) {
    return fail(std::string("meta.json is malformed: ") + e.what());
  }
}

Status DiskCache::store(const CacheKey &key, const CacheEntry &entry) const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec)
    return Status::error("cannot create the cache directory " + dir_ + ": " +
                         ec.message());
  const std::string name = key.entryName();
  std::string tmp = dir_ + "/" + kTempPrefix + name + "-XXXXXX";
  if (!::mkdtemp(tmp.data()))
    return Status::error("cannot create a temporary directory in " + dir_ +
                         ": " + std::strerror(errno));
  const std::time_t now = std::time(nullptr);
  const json meta = {
      {"format", kMetaFormat},
      {"name", name},
      {"key", keyJson(key)},
      {"kernel",
       {{"name", entry.meta.kernelName},
        {"threads_per_block", entry.meta.threadsPerBlock},
        {"shared_mem_bytes", entry.meta.sharedMemBytes},
        {"block_m", entry.meta.blockM}}},
      {"files",
       {{kPtxFile, fileJson(entry.ptx)}, {kCubinFile, fileJson(entry.cubin)}}},
      {"created", static_cast<int64_t>(now)},
      {"created_utc", utcTime(now)}};
  // meta.json last: a crash before it leaves a temp dir, never an entry.
  Status s = writeFile(tmp + "/" + kPtxFile, entry.ptx);
  if (s)
    s = writeFile(tmp + "/" + kCubinFile, entry.cubin);
  if (s)
    s = writeFile(tmp + "/" + kMetaFile, meta.dump(2) + "\n");
  if (!s) {
    fs::remove_all(tmp, ec);
    return s;
  }
  if (::rename(tmp.c_str(), entryPath(key).c_str()) == 0)
    return Status::ok();
  const int err = errno;
  fs::remove_all(tmp, ec);
  // Another process renamed its copy of the same key first: same key, same
  // code, so theirs serves as well as ours.
  if ((err == EEXIST || err == ENOTEMPTY) && load(key))
    return Status::ok();
  return Status::error("cannot move the cache entry into " + entryPath(key) +
                       ": " + std::strerror(err));
}

Expected<CacheEntry>
DiskCache::getOrBuild(const CacheKey &key,
                      const std::function<Expected<CacheEntry>()> &build,
                      bool *hit) const {
  if (hit)
    *hit = false;
  std::string problem;
  if (auto entry = load(key, &problem)) {
    if (hit)
      *hit = true;
    return std::move(*entry);
  }
  // Build under the entry's lock, then look again: another process may
  // have built it while we waited. Without a lock (unwritable directory) we
  // still build; the store below then reports why nothing was kept.
  std::error_code ec;
  fs::create_directories(dir_, ec);
  FileLock lock(dir_ + "/" + key.entryName() + kLockSuffix);
  if (lock.held()) {
    if (auto entry = load(key, &problem)) {
      if (hit)
        *hit = true;
      return std::move(*entry);
    }
  }
  if (!problem.empty()) {
    warn("cache entry " + entryPath(key) + " is corrupt (" + problem +
         "); removing it and rebuilding");
    if (Status s = remove(key); !s)
      warn(s.message());
  }
  Expected<CacheEntry> built = build();
  if (!built)
    return built;
  if (Status s = store(key, *built); !s)
    warn(s.message() + " (the kernel is used without being cached)");
  return built;
}

Status DiskCache::removeDirectory(const std::string &path) const {
  // Rename first so that readers see the entry whole or not at all.
  const std::string trash = dir_ + "/" + kTrashPrefix + uniqueSuffix();
  std::string victim = path;
  if (::rename(path.c_str(), trash.c_str()) == 0)
    victim = trash;
  else if (errno == ENOENT)
    return Status::ok();
  std::error_code ec;
  fs::remove_all(victim, ec);
  if (ec)
    return Status::error("cannot remove " + path + ": " + ec.message());
  return Status::ok();
}

Status DiskCache::remove(const CacheKey &key) const {
  return removeDirectory(entryPath(key));
}

Expected<std::vector<CacheEntryInfo>> DiskCache::list() const {
  std::vector<CacheEntryInfo> out;
  std::error_code ec;
  if (!fs::exists(dir_, ec))
    return out;
  fs::directory_iterator it(dir_, ec), end;
  if (ec)
    return Status::error("cannot read the cache directory " + dir_ + ": " +
                         ec.message());
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code typeEc;
    if (startsWith(name, ".") || !it->is_directory(typeEc))
      continue;
    CacheEntryInfo info;
    info.name = name;
    info.path = it->path().string();
    std::error_code fileEc;
    for (fs::directory_iterator f(it->path(), fileEc); !fileEc && f != end;
         f.increment(fileEc))
      if (f->is_regular_file(fileEc))
        info.bytes += f->file_size(fileEc);
    struct stat st;
    if (::stat(info.path.c_str(), &st) == 0)
      info.createdUnixTime = st.st_mtime;
    if (auto text = readFile(info.path + "/" + kMetaFile)) {
      json meta = json::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (meta.is_object() && meta.contains("created") &&
          meta["created"].is_number_integer())
        info.createdUnixTime = meta["created"].get<int64_t>();
    }
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const auto &a, const auto &b) { return a.name < b.name; });
  return out;
}

Expected<int> DiskCache::clear() const {
  std::error_code ec;
  if (!fs::exists(dir_, ec))
    return 0;
  std::vector<fs::path> paths;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end;
       it.increment(ec))
    paths.push_back(it->path());
  if (ec)
    return Status::error("cannot read the cache directory " + dir_ + ": " +
                         ec.message());
  int removed = 0;
  for (const fs::path &p : paths) {
    const std::string name = p.filename().string();
    // Only an entry's own lock goes (other files' locks, such as
    // tune.json.lock, belong to their writers).
    const bool entryLock =
        endsWith(name, kLockSuffix) &&
        isEntryName(name.substr(0, name.size() - std::strlen(kLockSuffix)));
    if (entryLock || startsWith(name, kTempPrefix) ||
        startsWith(name, kTrashPrefix)) {
      fs::remove_all(p, ec);
    } else if (fs::is_directory(p, ec)) {
      if (Status s = removeDirectory(p.string()); !s)
        return s;
      ++removed;
    }
  }
  return removed;
}

} // namespace flashjit
