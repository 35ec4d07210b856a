//===- TuneDatabase.cpp - tune.json: read, look up, upsert atomically -----===//
#include "flashjit/runtime/TuneDatabase.h"

#include "Files.h"

#include "flashjit/kernels/Decode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

using json = nlohmann::json;

namespace flashjit {

namespace {
constexpr int kFormat = 1;
constexpr const char *kFileName = "tune.json";

/// "20261203T101500Z": a time for file names.
std::string compactUtcTime(std::time_t t) {
  std::string text = files::utcTime(t);
  text.erase(std::remove(text.begin(), text.end(), '-'), text.end());
  text.erase(std::remove(text.begin(), text.end(), ':'), text.end());
  return text;
}

int64_t roundUpToPowerOfTwo(int64_t v, int64_t atLeast) {
  int64_t p = atLeast;
  while (p < v)
    p *= 2;
  return p;
}

/// Largest tune.json read back (a tuned config is about 1 KB of JSON).
constexpr uint64_t kMaxFileBytes = uint64_t(256) << 20;

/// The fields as read; whether they make a usable config for a spec is the
/// runtime's check (validate), which warns about the ones that do not.
TileConfig configFrom(const json &j) {
  auto field = [&](const char *name) {
    return static_cast<int>(
        files::intIn(j.at(name), name, INT32_MIN, INT32_MAX));
  };
  TileConfig c;
  c.blockM = field("block_m");
  c.blockN = field("block_n");
  c.warps = field("warps");
  c.stages = field("stages");
  c.packGqa = j.at("pack_gqa").get<bool>();
  c.quick = j.contains("quick") && j.at("quick").get<bool>();
  // Entries written before families existed are the sm80 family's.
  const std::string family = j.value("family", std::string("sm80"));
  auto parsed = parseFamily(family);
  if (!parsed)
    throw std::invalid_argument("family must be one of " + familyChoices() +
                                ", got '" + family + "'");
  c.family = *parsed;
  c.pingpong = j.value("pingpong", false);
  c.overlap = j.value("overlap", false);
  c.scalar = j.value("scalar", false);
  return c;
}

json entryJson(const TuneKey &key, const TuneEntry &e) {
  json j = {{"spec", canonicalText(key.spec)},
            {"bucket", toString(key.bucket)},
            {"gpu", key.gpu},
            {"flashjit_version", key.flashjitVersion},
            {"cuda_driver_version", key.driverVersion},
            {"config", toJson(e.config)},
            {"ms", e.ms},
            {"candidates", e.candidates},
            {"tuned_at", e.tunedAtUtc}};
  if (e.splits > 0)
    j["splits"] = e.splits;
  if (e.runnerUp) {
    j["runner_up"] = toJson(*e.runnerUp);
    j["runner_up_ms"] = e.runnerUpMs;
    if (e.runnerUpSplits > 0)
      j["runner_up_splits"] = e.runnerUpSplits;
  }
  if (e.defaultConfig) {
    j["default"] = toJson(*e.defaultConfig);
    j["default_ms"] = e.defaultMs;
  }
  return j;
}

TuneEntry entryFrom(const json &j) {
  TuneEntry e;
  e.config = configFrom(j.at("config"));
  e.ms = j.at("ms").get<double>();
  e.candidates =
      j.contains("candidates")
          ? static_cast<int>(files::intIn(j["candidates"], "candidates", 0,
                                          INT32_MAX))
          : 0;
  e.tunedAtUtc = j.value("tuned_at", std::string());
  if (j.contains("splits"))
    e.splits =
        static_cast<int>(files::intIn(j["splits"], "splits", 1, kMaxSplits));
  if (j.contains("runner_up")) {
    e.runnerUp = configFrom(j.at("runner_up"));
    e.runnerUpMs = j.at("runner_up_ms").get<double>();
    if (j.contains("runner_up_splits"))
      e.runnerUpSplits = static_cast<int>(files::intIn(
          j["runner_up_splits"], "runner_up_splits", 1, kMaxSplits));
  }
  if (j.contains("default")) {
    e.defaultConfig = configFrom(j.at("default"));
    e.defaultMs = j.at("default_ms").get<double>();
  }
  return e;
}
} // namespace

json toJson(const TileConfig &c) {
  json j = {{"block_m", c.blockM},
          {"block_n", c.blockN},
          {"warps", c.warps},
          {"stages", c.stages},
          {"pack_gqa", c.packGqa},
          {"quick", c.quick},
          {"family", std::string(toString(c.family))},
          {"pingpong", c.pingpong},
          {"overlap", c.overlap}};
  if (c.scalar) // entries of other kernels predate the field
    j["scalar"] = true;
  return j;
}

ShapeBucket shapeBucket(const AttentionParams &p) {
  // seqlen_q from 1: decode rows (1, 2, 4, ...) take configs of their own,
  // the decode table's neighbourhood, which a 64-row prefill must not get.
  return {roundUpToPowerOfTwo(p.seqlenQ, 1), roundUpToPowerOfTwo(p.seqlenK, 64),
          roundUpToPowerOfTwo(p.batch * p.headsQ, 1),
          isDecodeLike(p)};
}

std::string toString(const ShapeBucket &b) {
  return "sq" + std::to_string(b.seqlenQ) + "_sk" + std::to_string(b.seqlenK) +
         "_bh" + std::to_string(b.batchHeads) + (b.decode ? "_decode" : "");
}

std::string TuneKey::text() const {
  return canonicalText(spec) + ";bucket=" + toString(bucket) + ";gpu=" + gpu +
         ";flashjit=" + flashjitVersion +
         ";driver=" + std::to_string(driverVersion);
}

std::string TuneDatabase::pathIn(const std::string &cacheDirectory) {
  return cacheDirectory + "/" + kFileName;
}

TuneDatabase::TuneDatabase(std::string path) : path_(std::move(path)) {}

namespace {
/// What is wrong with a database file, if anything.
enum class FileProblem { None, Unreadable, Corrupt, OtherFormat };

/// The raw "entries" object of a database file (empty when there is no
/// file), or what is wrong with it in `problem` and the message.
Expected<json> readEntries(const std::string &path, FileProblem &problem) {
  problem = FileProblem::None;
  files::FileContents text = files::readFile(path, kMaxFileBytes);
  if (text.error == files::ReadError::Missing)
    return json::object(); // no file yet: nothing tuned
  if (!text) {
    problem = FileProblem::Unreadable;
    return Status::error("tune database cannot be read (" + text.message +
                         ")");
  }
  json doc = json::parse(text.data, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    problem = FileProblem::Corrupt;
    return Status::error("tune database " + path + " is not valid JSON");
  }
  const json format = doc.contains("format") ? doc["format"] : json();
  if (!format.is_number_integer() || format.get<int64_t>() != kFormat) {
    problem = FileProblem::OtherFormat;
    return Status::error("tune database " + path + " has format " +
                         format.dump() + ", this flashjit reads " +
                         std::to_string(kFormat));
  }
  if (!doc.contains("entries") || !doc["entries"].is_object()) {
    problem = FileProblem::Corrupt;
    return Status::error("tune database " + path + " has no entries object");
  }
  return std::move(doc["entries"]);
}

/// The well-formed entries of a raw "entries" object; the others are
/// counted in `malformed` (and kept on disk, untouched).
std::map<std::string, TuneEntry> parseEntries(const json &entries,
                                              int &malformed) {
  std::map<std::string, TuneEntry> map;
  malformed = 0;
  for (const auto &[key, value] : entries.items()) {
    try {
      map.emplace(key, entryFrom(value));
    } catch (const json::exception &) {
      ++malformed;
    } catch (const std::invalid_argument &) {
      ++malformed;
    }
  }
  return map;
}
} // namespace

Expected<TuneDatabase::Map> TuneDatabase::read(int &malformed) const {
  FileProblem problem;
  auto entries = readEntries(path_, problem);
  if (!entries)
    return entries.status();
  return parseEntries(*entries, malformed);
}

std::optional<TuneEntry> TuneDatabase::lookup(const TuneKey &key) const {
  std::lock_guard<std::mutex> guard(mutex_);
  if (!loaded_) {
    int malformed = 0;
    auto map = read(malformed);
    if (!warned_ && (!map || malformed)) {
      files::warn(map ? "tune database " + path_ + " has " +
                            std::to_string(malformed) +
                            " malformed entries; they are ignored"
                      : map.message() + "; using default tile configs");
      warned_ = true;
    }
    loaded_ = map ? std::move(*map) : Map{};
  }
  auto it = loaded_->find(key.text());
  if (it == loaded_->end())
    return std::nullopt;
  return it->second;
}

Expected<std::map<std::string, TuneEntry>> TuneDatabase::entries() const {
  int malformed = 0;
  return read(malformed);
}

Status TuneDatabase::store(const TuneKey &key, const TuneEntry &entry) {
  for (int splits : {entry.splits, entry.runnerUpSplits})
    if (splits < 0 || splits > kMaxSplits)
      return Status::error("a tuned split count must be in [0, " +
                           std::to_string(kMaxSplits) + "], got " +
                           std::to_string(splits));
  std::lock_guard<std::mutex> guard(mutex_);
  std::error_code ec;
  const auto parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty())
    std::filesystem::create_directories(parent, ec);
  files::FileLock lock(path_ + ".lock");
  if (!lock.held())
    return Status::error("cannot lock " + path_ + ".lock");
  FileProblem problem;
  auto entries = readEntries(path_, problem);
  if (problem == FileProblem::Unreadable || problem == FileProblem::OtherFormat)
    // Never replace what we cannot read or what another version wrote.
    return Status::error(entries.message() + "; not replacing it");
  if (problem == FileProblem::Corrupt) {
    // Keep the broken file for inspection, under a name of its own (an
    // earlier one stays); start a fresh one.
    const std::string aside = path_ + ".corrupt-" +
                              compactUtcTime(std::time(nullptr)) + "-" +
                              files::uniqueSuffix();
    if (std::rename(path_.c_str(), aside.c_str()) != 0)
      return Status::error(entries.message() + "; cannot move it aside to " +
                           aside + ": " + std::strerror(errno));
    files::warn(entries.message() + "; moved aside to " + aside);
    entries = json::object();
  }
  // Every other entry keeps its JSON as it is on disk.
  json all = std::move(*entries);
  all[key.text()] = entryJson(key, entry);
  const json doc = {{"format", kFormat}, {"entries", all}};
  if (Status s = files::replaceFile(path_, doc.dump(2) + "\n"); !s)
    return s;
  int malformed = 0;
  loaded_ = parseEntries(all, malformed);
  return Status::ok();
}

} // namespace flashjit
