//===- TuneDatabase.h - Tuned tile configs kept across processes ----------===//
//
// Plain C++ (no cuda.h, no MLIR). One JSON file (tune.json in the cache
// directory) maps a tune key -- the spec without its tile config, a shape
// bucket, the GPU's name, the flashjit version and the driver version -- to
// the fastest config autotune found, its time and the runner-up. Keys of
// another GPU or version simply never match; adding a key leaves every other
// entry alone. Writes are atomic (lock, re-read, upsert, rename over); a
// corrupt or unreadable file gives one warning and reads as empty.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_TUNEDATABASE_H
#define FLASHJIT_RUNTIME_TUNEDATABASE_H

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/kernels/AttentionParams.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace flashjit {

/// Problems whose sizes round to the same bucket share a tuned config: each
/// extent rounds up to a power of two (sequence lengths at least 64).
struct ShapeBucket {
  int64_t seqlenQ = 0;
  int64_t seqlenK = 0;
  int64_t batchHeads = 0; ///< batch x heads_q
  /// Decode-like: seqlen_q x the GQA group <= kDecodeMaxTileRows, which the
  /// runtime plans from the decode table and tunes over it (a bucket of
  /// seqlen_q may hold both kinds when the group is not a power of two).
  bool decode = false;
  bool operator==(const ShapeBucket &o) const {
    return seqlenQ == o.seqlenQ && seqlenK == o.seqlenK &&
           batchHeads == o.batchHeads && decode == o.decode;
  }
};
ShapeBucket shapeBucket(const AttentionParams &params);
/// "sq4096_sk4096_bh64", "sq1_sk32768_bh256_decode".
std::string toString(const ShapeBucket &bucket);

struct TuneKey {
  AttentionSpec spec;
  ShapeBucket bucket;
  std::string gpu;             ///< the device name, "NVIDIA H100 80GB HBM3"
  std::string flashjitVersion;
  int driverVersion = 0;
  /// The key's text in the file: every field, fixed order.
  std::string text() const;
};

/// A tile config as JSON ({"block_m": .., "block_n": .., "warps": ..,
/// "stages": .., "pack_gqa": ..}), as the database and `flashjit autotune
/// --json` write it.
nlohmann::json toJson(const TileConfig &config);

struct TuneEntry {
  TileConfig config;
  /// Decode: the split-KV count the winner ran with (1..kMaxSplits), which
  /// the runtime then launches where the caller leaves the choice to it;
  /// 0: the runtime's heuristic.
  int splits = 0;
  double ms = 0;
  /// The second fastest config, when there was one, and its split count.
  std::optional<TileConfig> runnerUp;
  int runnerUpSplits = 0;
  double runnerUpMs = 0;
  /// What the per-arch default took on the same problem.
  std::optional<TileConfig> defaultConfig;
  double defaultMs = 0;
  int candidates = 0;     ///< configs measured
  std::string tunedAtUtc; ///< "2026-12-02T10:00:00Z"
};

class TuneDatabase {
public:
  /// The database file in a cache directory.
  static std::string pathIn(const std::string &cacheDirectory);

  explicit TuneDatabase(std::string path);
  const std::string &path() const { return path_; }

  /// The entry for `key`, or nullopt. Reads the file at the first lookup
  /// (and again after store()).
  std::optional<TuneEntry> lookup(const TuneKey &key) const;
  /// Inserts or replaces the entry for `key`, keeping every other entry
  /// as it is on disk (a file that is not JSON is moved aside to
  /// <path>.corrupt-<UTC time>-<pid>-<n> first, so that each such file is
  /// kept; an unreadable or other-format file is an error).
  Status store(const TuneKey &key, const TuneEntry &entry);
  /// Every entry, by key text (for listings).
  Expected<std::map<std::string, TuneEntry>> entries() const;

private:
  using Map = std::map<std::string, TuneEntry>;
  /// Parses the file: a missing file is empty; an unreadable or corrupt
  /// one, or one of another format, an error. Malformed entries are
  /// skipped and counted.
  Expected<Map> read(int &malformed) const;

  std::string path_;
  mutable std::mutex mutex_;
  mutable std::optional<Map> loaded_; ///< nullopt: not read yet
  mutable bool warned_ = false;
};

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_TUNEDATABASE_H
