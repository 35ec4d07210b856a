//===- DiskCache.h - Compiled kernels on disk, shared between processes ---===//
//
// No CUDA here: the disk cache deals in {PTX, cubin bytes, metadata}, so it
// is tested without a GPU. One directory per entry, named
// <kernelName>-<16 hex hash>, holding kernel.ptx, kernel.cubin and
// meta.json. Entries are written to a temporary directory and renamed into
// place, verified (sizes, xxh64 checksums, key, launch facts) on every
// load, and written under a per-entry file lock so that concurrent processes
// compile a key once and all succeed. Only what this class wrote (an entry
// name and a meta.json of its format) is ever listed or removed: the
// directory may hold anything else.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_DISKCACHE_H
#define FLASHJIT_RUNTIME_DISKCACHE_H

#include "flashjit/compiler/AttentionSpec.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
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
  /// What turned the PTX into the cubin ("nvJitLink 13.0", "driver JIT"):
  /// two compilers can give different code for the same PTX.
  std::string assembler;

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
  /// The decode helper entries its module holds (Decode.h: split-KV's
  /// combine, the paged cache's append). They follow from the key's spec
  /// and are never read from disk.
  bool combineEntry = false, appendEntry = false;
  bool operator==(const KernelMeta &o) const {
    return kernelName == o.kernelName && threadsPerBlock == o.threadsPerBlock &&
           sharedMemBytes == o.sharedMemBytes && blockM == o.blockM &&
           combineEntry == o.combineEntry && appendEntry == o.appendEntry;
  }
  bool operator!=(const KernelMeta &o) const { return !(*this == o); }
};

/// The launch facts a key implies (its kernel's name, and the threads,
/// dynamic shared memory and block_m of its family's launchFacts): what a
/// loaded entry must say, so that a hand-edited meta.json is a corrupt
/// entry, never a launch with the wrong geometry.
KernelMeta kernelMetaFor(const CacheKey &key);

/// The contents of one cache entry.
struct CacheEntry {
  std::string ptx;
  std::string cubin;
  KernelMeta meta;
};

/// What DiskCache::lookup found.
struct CacheLookup {
  std::optional<CacheEntry> entry; ///< a valid entry
  /// Why a present entry is not used; empty when it is valid or missing.
  std::string problem;
  /// The entry could not be read (permissions, I/O): not corruption, so it
  /// is neither removed nor rebuilt in place.
  bool unreadable = false;
};

/// What DiskCache::clear did.
struct ClearResult {
  int removed = 0; ///< entries removed
  int inUse = 0;   ///< entries (or their temporaries) another process holds
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

  /// The entry for `key` and, when it is present but not used, why: a
  /// missing, oversized or non-regular file, a size, checksum, key or
  /// launch-fact mismatch, an unparseable or foreign meta.json (corrupt); or
  /// a file this process may not read (unreadable).
  CacheLookup lookup(const CacheKey &key) const;

  /// The entry for `key` if it is present and valid; otherwise nullopt,
  /// with the reason in `*problem` when the entry is present.
  std::optional<CacheEntry> load(const CacheKey &key,
                                 std::string *problem = nullptr) const;

  /// Writes the entry through a temporary directory and rename(), under the
  /// entry's lock. Losing the rename to an identical entry from another
  /// process is success. An entry whose launch facts differ from
  /// kernelMetaFor(key) is refused (it could never be loaded).
  Status store(const CacheKey &key, const CacheEntry &entry) const;

  /// The entry for `key`: loaded if valid, else built with `build` under the
  /// entry's file lock and stored. A corrupt entry is reported on stderr,
  /// removed and rebuilt. An unreadable one (another user's) is left alone:
  /// one warning, then the built kernel is used without the disk cache.
  /// Failing to store (read-only or full disk) warns and still returns the
  /// built entry. `*hit` tells whether it came from disk.
  Expected<CacheEntry>
  getOrBuild(const CacheKey &key,
             const std::function<Expected<CacheEntry>()> &build,
             bool *hit = nullptr) const;

  /// Removes the entry for `key`, if any.
  Status remove(const CacheKey &key) const;

  /// This cache's entries, sorted by name (a missing directory is an empty
  /// cache). Anything else in the directory is not an entry.
  Expected<std::vector<CacheEntryInfo>> list() const;

  /// Removes every entry, with its lock file, and the temporaries of
  /// writers that died; leaves alone whatever another process is writing
  /// (its lock is held) and everything this class did not create.
  Expected<ClearResult> clear() const;

private:
  Status storeLocked(const CacheKey &key, const CacheEntry &entry) const;
  Status removeDirectory(const std::string &path) const;
  std::string lockPath(const std::string &entryName) const;
  std::string dir_;
  /// One warning per cache for entries this process cannot read.
  std::shared_ptr<std::atomic<bool>> warnedUnreadable_;
};

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_DISKCACHE_H
