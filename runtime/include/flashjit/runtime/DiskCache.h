//===- DiskCache.h - Compiled kernels on disk, shared between processes ---===//
//
// No CUDA here: the disk cache deals in {PTX, cubin bytes, metadata}, so it
// is tested without a GPU. One directory per entry, named
// <kernelName>-<16 hex hash>, holding kernel.ptx, kernel.cubin and
// meta.json. Entries are written to a temporary directory and renamed into
// place, verified (sizes, xxh64 checksums, key) on every load, and built
// under a per-entry file lock so that concurrent processes compile a key
// once and all succeed.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_DISKCACHE_H
#define FLASHJIT_RUNTIME_DISKCACHE_H

#include "flashjit/compiler/AttentionSpec.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace flashjit {

/// Everything that decides which code a kernel is. Batch and sequence
/// lengths are run-time arguments and deliberately absent.
struct CacheKey {
  AttentionSpec spec;
  TileConfig config;
  Arch arch = Arch::Sm90a;
  std::string flashjitVersion;
  std::string llvmVersion;
  int driverVersion = 0;

  /// The hashed text: one "field=value" line per input, fixed order.
  std::string text() const;
  /// 16 hex digits of XXH3-64 over text(): THE cache key.
  std::string hash() const;
  /// "<kernelName>-<hash>": the entry's directory name.
  std::string entryName() const;
};

/// What the launcher needs besides the code.
struct KernelMeta {
  std::string kernelName;
  int threadsPerBlock = 0;
  int sharedMemBytes = 0;
  int blockM = 0;
};

/// The contents of one cache entry.
struct CacheEntry {
  std::string ptx;
  std::string cubin;
  KernelMeta meta;
};

/// One entry as `flashjit cache list` shows it.
struct CacheEntryInfo {
  std::string name;
  std::string path;
  uint64_t bytes = 0;
  int64_t createdUnixTime = 0; ///< from meta.json, else the directory's mtime
};

class DiskCache {
public:
  /// A cache rooted at `directory` (created on first store).
  explicit DiskCache(std::string directory);

  /// $FLASHJIT_CACHE_DIR, else $XDG_CACHE_HOME/flashjit, else
  /// $HOME/.cache/flashjit (empty variables count as unset; XDG paths must be
  /// absolute, per the XDG spec).
  static Expected<std::string> defaultDirectory();

  const std::string &directory() const { return dir_; }
  std::string entryPath(const CacheKey &key) const;

  /// The entry for `key` if it is present and valid. A present but invalid
  /// entry (missing file, size or checksum mismatch, unparseable or foreign
  /// meta.json) returns nullopt and explains itself in `*problem`; a missing
  /// entry leaves `*problem` empty.
  std::optional<CacheEntry> load(const CacheKey &key,
                                 std::string *problem = nullptr) const;

  /// Writes the entry through a temporary directory and rename(). Losing
  /// the rename to an identical entry from another process is success.
  Status store(const CacheKey &key, const CacheEntry &entry) const;

  /// The entry for `key`: loaded if valid, else built with `build` under the
  /// entry's file lock and stored. A corrupt entry is reported on stderr,
  /// removed and rebuilt. Failing to store (read-only or full disk) warns
  /// and still returns the built entry. `*hit` tells whether it came from disk.
  Expected<CacheEntry>
  getOrBuild(const CacheKey &key,
             const std::function<Expected<CacheEntry>()> &build,
             bool *hit = nullptr) const;

  /// Removes the entry for `key`, if any.
  Status remove(const CacheKey &key) const;

  /// Entries sorted by name (a missing directory is an empty cache).
  Expected<std::vector<CacheEntryInfo>> list() const;

  /// Removes every entry, lock file and leftover temporary directory;
  /// returns how many entries went.
  Expected<int> clear() const;

private:
  Status removeDirectory(const std::string &path) const;
  std::string dir_;
};

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_DISKCACHE_H
