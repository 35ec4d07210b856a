//===- DiskCache.cpp - Entries on disk: key, write, verify, lock, list ----===//
#include "flashjit/runtime/DiskCache.h"

#include "Files.h"

#include "flashjit/compiler/KernelFamily.h"

#include <nlohmann/json.hpp>
#include <xxhash.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
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
/// mkdtemp's six random characters ending a temporary directory's name.
constexpr size_t kTempRandomChars = 6;
/// Bounds on what is read back: a meta.json is a few hundred bytes; PTX and
/// cubins of the largest kernels are a few MB.
constexpr uint64_t kMaxMetaBytes = 1 << 20;
constexpr uint64_t kMaxCodeBytes = uint64_t(1) << 30;
/// Longest entry name accepted (kernel names are well under 200 characters).
constexpr size_t kMaxEntryName = 255;

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
          {"cuda_driver_version", key.driverVersion},
          {"assembler", key.assembler}};
}

json fileJson(const std::string &data) {
  return {{"bytes", data.size()}, {"xxh64", checksum(data)}};
}

bool startsWith(const std::string &s, const std::string &prefix) {
  return s.rfind(prefix, 0) == 0;
}
bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Whether `name` has the shape of CacheKey::entryName(): a kernel name
/// (lower-case letters, digits, '_'), "-", and 16 hex digits of the hash.
bool isEntryName(const std::string &name) {
  if (name.size() <= kHashHexDigits + 1 || name.size() > kMaxEntryName ||
      name[name.size() - kHashHexDigits - 1] != '-')
    return false;
  const size_t kernelChars = name.size() - kHashHexDigits - 1;
  return std::all_of(name.begin(), name.begin() + kernelChars,
                     [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                              c == '_';
                     }) &&
         std::all_of(name.end() - kHashHexDigits, name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

/// The entry a temporary directory ".tmp-<entryName>-XXXXXX" was to become,
/// or "" when `name` is not one of ours.
std::string entryOfTemp(const std::string &name) {
  if (!startsWith(name, kTempPrefix) ||
      name.size() < std::strlen(kTempPrefix) + kTempRandomChars + 2 ||
      name[name.size() - kTempRandomChars - 1] != '-')
    return "";
  if (!std::all_of(name.end() - kTempRandomChars, name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0;
      }))
    return "";
  std::string entry = name.substr(
      std::strlen(kTempPrefix),
      name.size() - std::strlen(kTempPrefix) - kTempRandomChars - 1);
  return isEntryName(entry) ? entry : "";
}

/// A directory that is no symlink (what clear removes must be ours, not
/// what a link points to).
bool isPlainDirectory(const fs::path &p) {
  std::error_code ec;
  return fs::symlink_status(p, ec).type() == fs::file_type::directory;
}

/// meta.json of the entry directory `path` named `name`, if it is one this
/// class wrote: of our format, naming this directory and its hash.
std::optional<json> ownMeta(const std::string &path, const std::string &name) {
  files::FileContents text = readFile(path + "/" + kMetaFile, kMaxMetaBytes);
  if (!text)
    return std::nullopt;
  json meta = json::parse(text.data, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object())
    return std::nullopt;
  const json *format = meta.contains("format") ? &meta["format"] : nullptr;
  const json *own = meta.contains("name") ? &meta["name"] : nullptr;
  if (!format || !format->is_number_integer() ||
      format->get<int64_t>() != kMetaFormat || !own || !own->is_string() ||
      own->get<std::string>() != name)
    return std::nullopt;
  const json *key = meta.contains("key") ? &meta["key"] : nullptr;
  if (!key || !key->is_object() || !key->contains("hash") ||
      (*key)["hash"] != name.substr(name.size() - kHashHexDigits))
    return std::nullopt;
  return meta;
}
} // namespace

KernelMeta kernelMetaFor(const CacheKey &key) {
  const LaunchFacts facts = launchFacts(key.spec, key.config);
  return {kernelName(key.spec, key.config, key.arch),
          facts.threadsPerBlock,
          facts.sharedMemBytes,
          facts.blockM,
          key.spec.splitKV,
          key.spec.pagedKV};
}

// ---- the key ----------------------------------------------------------------
std::string CacheKey::text() const {
  return "spec=" + canonicalText(spec) + "\nconfig=" + canonicalText(config) +
         "\narch=" + std::string(toString(arch)) +
         "\nflashjit=" + flashjitVersion + "\nllvm=" + llvmVersion +
         "\ncuda_driver=" + std::to_string(driverVersion) +
         "\nassembler=" + assembler + "\n";
}

std::string CacheKey::hash() const {
  const std::string t = text();
  return hex16(XXH3_64bits(t.data(), t.size()));
}

std::string CacheKey::entryName() const {
  return kernelName(spec, config, arch) + "-" + hash();
}

// ---- the cache --------------------------------------------------------------
DiskCache::DiskCache(std::string directory)
    : dir_(std::move(directory)),
      warnedUnreadable_(std::make_shared<std::atomic<bool>>(false)) {}

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

std::string DiskCache::lockPath(const std::string &entryName) const {
  return dir_ + "/" + entryName + kLockSuffix;
}

CacheLookup DiskCache::lookup(const CacheKey &key) const {
  CacheLookup result;
  const std::string path = entryPath(key);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == EACCES) {
      result.problem = path + ": " + std::strerror(errno);
      result.unreadable = true;
    }
    return result; // missing: not a problem
  }
  auto fail = [&](std::string reason) {
    result.problem = std::move(reason);
    return result;
  };
  // Without its family this process cannot tell a good entry from a bad
  // one: it must not call it corrupt (and remove it).
  if (auto family = familyOf(key.config.family); !family) {
    result.unreadable = true;
    return fail(family.message());
  }
  // A file we may not read is another user's, not a damaged one.
  auto readFailure = [&](const files::FileContents &c, const char *name) {
    result.unreadable = c.error == files::ReadError::Permission ||
                        c.error == files::ReadError::Io;
    if (c.error == files::ReadError::Missing)
      return fail(std::string(name) + " is missing");
    return fail(std::string(name) + " cannot be read (" + c.message + ")");
  };
  files::FileContents metaText = readFile(path + "/" + kMetaFile, kMaxMetaBytes);
  if (!metaText)
    return readFailure(metaText, kMetaFile);
  json meta = json::parse(metaText.data, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || !meta.is_object())
    return fail(std::string(kMetaFile) + " is not valid JSON");
  try {
    if (files::intIn(meta.at("format"), "format", 0, INT32_MAX) != kMetaFormat)
      return fail("unknown meta.json format " + meta.at("format").dump());
    if (meta.at("key") != keyJson(key))
      return fail("meta.json describes another key");
    CacheEntry entry;
    for (auto [name, data] : {std::pair{kPtxFile, &entry.ptx},
                              std::pair{kCubinFile, &entry.cubin}}) {
      const json &expect = meta.at("files").at(name);
      const auto bytes = static_cast<uint64_t>(
          files::intIn(expect.at("bytes"), "bytes", 0, kMaxCodeBytes));
      files::FileContents contents = readFile(path + "/" + name, bytes);
      if (contents.error == files::ReadError::TooLarge)
        return fail(std::string(name) + " has more than the " +
                    std::to_string(bytes) + " bytes meta.json says");
      if (!contents)
        return readFailure(contents, name);
      if (contents.data.size() != bytes)
        return fail(std::string(name) + " has " +
                    std::to_string(contents.data.size()) +
                    " bytes, meta.json says " + std::to_string(bytes));
      if (checksum(contents.data) != expect.at("xxh64").get<std::string>())
        return fail(std::string(name) + " does not match its checksum");
      *data = std::move(contents.data);
    }
    const json &kernel = meta.at("kernel");
    entry.meta.kernelName = kernel.at("name").get<std::string>();
    entry.meta.threadsPerBlock = static_cast<int>(files::intIn(
        kernel.at("threads_per_block"), "threads_per_block", 1, INT32_MAX));
    entry.meta.sharedMemBytes = static_cast<int>(files::intIn(
        kernel.at("shared_mem_bytes"), "shared_mem_bytes", 0, INT32_MAX));
    entry.meta.blockM = static_cast<int>(
        files::intIn(kernel.at("block_m"), "block_m", 1, INT32_MAX));
    if (entry.cubin.empty())
      return fail("meta.json holds an incomplete kernel description");
    // Launch facts follow from the key; meta.json only repeats them.
    const KernelMeta expected = kernelMetaFor(key);
    entry.meta.combineEntry = expected.combineEntry;
    entry.meta.appendEntry = expected.appendEntry;
    if (entry.meta != expected)
      return fail("meta.json's launch facts (" + entry.meta.kernelName + ", " +
                  std::to_string(entry.meta.threadsPerBlock) + " threads, " +
                  std::to_string(entry.meta.sharedMemBytes) +
                  " bytes of shared memory, block_m " +
                  std::to_string(entry.meta.blockM) +
                  ") differ from the key's (" + expected.kernelName + ", " +
                  std::to_string(expected.threadsPerBlock) + ", " +
                  std::to_string(expected.sharedMemBytes) + ", " +
                  std::to_string(expected.blockM) + ")");
    result.entry = std::move(entry);
    return result;
  } catch (const json::exception &e) {
    return fail(std::string("meta.json is malformed: ") + e.what());
  }
}

std::optional<CacheEntry> DiskCache::load(const CacheKey &key,
                                          std::string *problem) const {
  CacheLookup found = lookup(key);
  if (problem)
    *problem = std::move(found.problem);
  return std::move(found.entry);
}

Status DiskCache::store(const CacheKey &key, const CacheEntry &entry) const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  files::FileLock lock(lockPath(key.entryName()));
  return storeLocked(key, entry);
}

Status DiskCache::storeLocked(const CacheKey &key,
                              const CacheEntry &entry) const {
  if (entry.meta != kernelMetaFor(key))
    return Status::error("internal error: the kernel built for " +
                         key.entryName() +
                         " does not have the launch facts its key implies");
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
  // Someone else's entry: use our own build, touch nothing on disk.
  auto buildWithoutDisk = [&](const CacheLookup &found) {
    if (!warnedUnreadable_->exchange(true))
      warn("cache entry " + entryPath(key) + " is not readable by this user (" +
           found.problem +
           "); it is left alone and kernels it cannot share are kept in "
           "memory only");
    return build();
  };
  CacheLookup found = lookup(key);
  if (found.entry) {
    if (hit)
      *hit = true;
    return std::move(*found.entry);
  }
  if (found.unreadable)
    return buildWithoutDisk(found);
  // Build under the entry's lock, then look again: another process may
  // have built it while we waited. Without a lock (unwritable directory) we
  // still build; the store below then reports why nothing was kept.
  std::error_code ec;
  fs::create_directories(dir_, ec);
  files::FileLock lock(lockPath(key.entryName()));
  if (lock.held()) {
    found = lookup(key);
    if (found.entry) {
      if (hit)
        *hit = true;
      return std::move(*found.entry);
    }
    if (found.unreadable)
      return buildWithoutDisk(found);
  }
  if (!found.problem.empty()) {
    warn("cache entry " + entryPath(key) + " is corrupt (" + found.problem +
         "); removing it and rebuilding");
    if (Status s = remove(key); !s)
      warn(s.message());
  }
  Expected<CacheEntry> built = build();
  if (!built)
    return built;
  if (Status s = storeLocked(key, *built); !s)
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

namespace {
/// Names in the cache directory (a missing directory has none).
Expected<std::vector<std::string>> namesIn(const std::string &dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::exists(dir, ec))
    return names;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec))
    names.push_back(it->path().filename().string());
  if (ec)
    return Status::error("cannot read the cache directory " + dir + ": " +
                         ec.message());
  std::sort(names.begin(), names.end());
  return names;
}
} // namespace

Expected<std::vector<CacheEntryInfo>> DiskCache::list() const {
  auto names = namesIn(dir_);
  if (!names)
    return names.status();
  std::vector<CacheEntryInfo> out;
  for (const std::string &name : *names) {
    const std::string path = dir_ + "/" + name;
    if (!isEntryName(name) || !isPlainDirectory(path))
      continue;
    std::optional<json> meta = ownMeta(path, name);
    if (!meta)
      continue;
    CacheEntryInfo info;
    info.name = name;
    info.path = path;
    std::error_code ec;
    for (fs::directory_iterator f(path, ec), end; !ec && f != end;
         f.increment(ec)) {
      std::error_code fileEc;
      if (fs::symlink_status(f->path(), fileEc).type() ==
          fs::file_type::regular) {
        const uintmax_t size = fs::file_size(f->path(), fileEc);
        if (!fileEc)
          info.bytes += size;
      }
    }
    struct stat st;
    if (::stat(path.c_str(), &st) == 0)
      info.createdUnixTime = st.st_mtime;
    if (meta->contains("created") && (*meta)["created"].is_number_integer())
      info.createdUnixTime = (*meta)["created"].get<int64_t>();
    out.push_back(std::move(info));
  }
  return out;
}

Expected<ClearResult> DiskCache::clear() const {
  auto names = namesIn(dir_);
  if (!names)
    return names.status();
  ClearResult result;
  std::error_code ec;
  for (const std::string &name : *names) {
    const std::string path = dir_ + "/" + name;
    if (isEntryName(name) && isPlainDirectory(path)) {
      if (!ownMeta(path, name))
        continue; // not ours (or unreadable): left alone
      // A writer holding the entry's lock is replacing it: leave it be.
      files::FileLock lock(lockPath(name), files::FileLock::TryOnly);
      if (lock.busy()) {
        ++result.inUse;
        continue;
      }
      if (Status s = removeDirectory(path); !s)
        return s;
      ::unlink(lockPath(name).c_str());
      ++result.removed;
    } else if (std::string entry = entryOfTemp(name);
               !entry.empty() && isPlainDirectory(path)) {
      // A temporary whose writer still holds the lock is being written.
      files::FileLock lock(lockPath(entry), files::FileLock::TryOnly);
      if (lock.busy()) {
        ++result.inUse;
        continue;
      }
      fs::remove_all(path, ec);
      if (!fs::exists(dir_ + "/" + entry, ec)) // the lock just taken, too
        ::unlink(lockPath(entry).c_str());
    } else if (startsWith(name, kTrashPrefix) &&
               files::isUniqueSuffix(name.substr(std::strlen(kTrashPrefix))) &&
               isPlainDirectory(path)) {
      fs::remove_all(path, ec); // a remover that died halfway
    } else if (endsWith(name, kLockSuffix) &&
               isEntryName(name.substr(0, name.size() -
                                              std::strlen(kLockSuffix)))) {
      // The lock of an entry that is gone; unless someone holds it.
      files::FileLock lock(path, files::FileLock::TryOnly);
      if (!lock.busy() && !fs::exists(path.substr(0, path.size() -
                                                   std::strlen(kLockSuffix)),
                                      ec))
        ::unlink(path.c_str());
    }
  }
  return result;
}

} // namespace flashjit
