//===- FuzzTargets.cpp - CLI values, meta.json, tune.json, cache names ----===//
#include "FuzzTargets.h"

#include "Problem.h"
#include "SpecOptions.h"

#include "flashjit/compiler/Pipeline.h"
#include "flashjit/runtime/DiskCache.h"
#include "flashjit/runtime/TuneDatabase.h"

#include "Subprocess.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;

namespace flashjit::fuzz {
namespace {
std::string textOf(const uint8_t *data, size_t size) {
  return std::string(reinterpret_cast<const char *>(data), size);
}

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

void writeFile(const fs::path &path, const std::string &data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

/// A scratch directory for the life of the process (libFuzzer never
/// returns from its loop, so this is left to the temp dir's cleaner there).
const fs::path &scratch() {
  static test_support::TempDir dir("flashjit-fuzz");
  return dir.path();
}

/// A directory emptied for each input.
fs::path freshDir(const char *name) {
  const fs::path dir = scratch() / name;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  return dir;
}

// ---- CLI option values --------------------------------------------------------
/// Lines of the input set the options a user types: the four list
/// options, the strings, then whitespace-separated integers and reals.
Finding fuzzCliOptions(const uint8_t *data, size_t size) {
  const std::vector<std::string> in = lines(textOf(data, size));
  auto line = [&](size_t i) { return i < in.size() ? in[i] : std::string(); };

  // A list accepted by parseIntList holds values in range and reads back
  // the same when joined again.
  auto list = cli::parseIntList("--seqlens-q", {line(0)}, 0, 2147483647);
  if (list) {
    std::string joined;
    for (int64_t v : *list) {
      if (v < 0 || v > 2147483647)
        return "parseIntList accepted " + std::to_string(v) + " out of range";
      joined += (joined.empty() ? "" : ",") + std::to_string(v);
    }
    auto again = cli::parseIntList("--seqlens-q", {joined}, 0, 2147483647);
    if (!again || *again != *list)
      return "parseIntList does not read back '" + joined + "'";
  }

  cli::ProblemOptions o;
  auto listOption = [&](size_t i) {
    return line(i).empty() ? std::vector<std::string>{}
                           : std::vector<std::string>{line(i)};
  };
  o.seqlensQ = listOption(0);
  o.seqlensK = listOption(1);
  o.keyLengths = listOption(2);
  o.biasShape = listOption(3);
  for (auto [i, field] : {std::pair{size_t(4), &o.spec.dtype},
                          std::pair{size_t(5), &o.spec.mask},
                          std::pair{size_t(6), &o.spec.bias},
                          std::pair{size_t(7), &o.layout}})
    if (!line(i).empty())
      *field = line(i);
  // Integers as CLI11 would store them: a value that does not fit the
  // field's type is a parse error there, so it leaves the default here.
  std::vector<int64_t> ints;
  {
    const std::string numbers = line(8);
    const char *p = numbers.data(), *end = p + numbers.size();
    while (p < end) {
      while (p < end && *p == ' ')
        ++p;
      int64_t v = 0;
      auto [next, ec] = std::from_chars(p, end, v);
      if (next == p)
        break;
      if (ec == std::errc())
        ints.push_back(v);
      p = next;
    }
  }
  auto setInt = [&](size_t i, int &field) {
    if (i < ints.size() && ints[i] >= INT32_MIN && ints[i] <= INT32_MAX)
      field = int(ints[i]);
  };
  auto setOptInt = [&](size_t i, std::optional<int> &field) {
    if (i < ints.size() && ints[i] >= INT32_MIN && ints[i] <= INT32_MAX)
      field = int(ints[i]);
  };
  auto setInt64 = [&](size_t i, int64_t &field) {
    if (i < ints.size())
      field = ints[i];
  };
  setInt(0, o.spec.headDim);
  setOptInt(1, o.spec.headDimV);
  setInt(2, o.spec.headsQ);
  setOptInt(3, o.spec.headsKV);
  setInt64(4, o.batch);
  setInt64(5, o.seqlen);
  setInt64(6, o.windowLeft);
  setInt64(7, o.windowRight);
  setInt(8, o.spec.align);
  setOptInt(9, o.spec.blockM);
  setOptInt(10, o.spec.warps);
  // CLI11's range checks on these (run would refuse others before us).
  o.batch = std::clamp<int64_t>(o.batch, 1, 65535);
  o.seqlen = std::clamp<int64_t>(o.seqlen, 1, 2147483647);
  o.windowLeft = std::clamp<int64_t>(o.windowLeft, -1, 2147483647);
  o.windowRight = std::clamp<int64_t>(o.windowRight, -1, 2147483647);
  {
    const std::string reals = line(9);
    char *end = nullptr;
    const double softcap = std::strtod(reals.c_str(), &end);
    if (end != reals.c_str())
      o.spec.softcap = softcap;
    const char *rest = end;
    const double scale = std::strtod(rest, &end);
    if (end != rest)
      o.scale = scale;
  }

  AttentionSpec spec;
  Arch arch;
  if (!o.spec.resolve(spec, arch))
    return "";
  if (Status s = validate(spec); !s)
    return "SpecOptions::resolve accepted an invalid spec: " + s.message();
  ForwardProblem p;
  if (!cli::describeProblem(o, spec, p))
    return "";
  if (Status s = validateParams(p); !s)
    return "describeProblem accepted an invalid problem: " + s.message();
  if (Status s = validate(specFor(p)); !s)
    return "an accepted problem gives an invalid spec: " + s.message();
  (void)cli::checkTileOptions(o, p);
  const cli::ProblemBytes bytes = cli::problemBytes(p, spec.writeLse);
  if (bytes.host < bytes.device)
    return "host copies counted smaller than the device tensors";
  (void)cli::problemText(p, o.layout, spec.writeLse);
  return "";
}

// ---- meta.json ----------------------------------------------------------------
struct MetaFixture {
  DiskCache cache;
  CacheKey key;
  CacheEntry entry;
  std::string metaPath;
  MetaFixture() : cache((scratch() / "meta-cache").string()) {
    key.spec.headDimQK = key.spec.headDimV = 80;
    key.flashjitVersion = "fuzz";
    key.llvmVersion = "22";
    key.driverVersion = 12080;
    entry = {"// ptx\n", std::string(256, 'c'), kernelMetaFor(key)};
    (void)cache.store(key, entry);
    metaPath = cache.entryPath(key) + "/meta.json";
  }
};

Finding fuzzMetaJson(const uint8_t *data, size_t size) {
  static MetaFixture f;
  writeFile(f.metaPath, textOf(data, size));
  CacheLookup found = f.cache.lookup(f.key);
  if (found.entry) {
    if (found.entry->meta != kernelMetaFor(f.key))
      return "a meta.json whose launch facts differ from the key's loaded";
    if (found.entry->cubin != f.entry.cubin || found.entry->ptx != f.entry.ptx)
      return "an entry loaded with other code than its files hold";
  } else if (found.problem.empty()) {
    return "an existing entry was neither loaded nor explained";
  }
  auto listed = f.cache.list();
  if (!listed)
    return "list failed: " + listed.message();
  return "";
}

// ---- tune.json ----------------------------------------------------------------
TuneKey fuzzTuneKey() {
  TuneKey key;
  key.spec.headDimQK = key.spec.headDimV = 64;
  AttentionParams p;
  p.batch = 2;
  p.headsQ = p.headsKV = 8;
  p.seqlenQ = p.seqlenK = 1024;
  key.bucket = shapeBucket(p);
  key.gpu = "NVIDIA H200";
  key.flashjitVersion = "fuzz";
  key.driverVersion = 12080;
  return key;
}

Finding fuzzTuneJson(const uint8_t *data, size_t size) {
  const fs::path dir = freshDir("tune");
  const std::string path = (dir / "tune.json").string();
  const std::string text = textOf(data, size);
  writeFile(path, text);
  const TuneKey key = fuzzTuneKey();
  {
    TuneDatabase db(path);
    (void)db.lookup(key); // may warn; must not crash
  }
  auto before = TuneDatabase(path).entries();
  TuneEntry entry;
  entry.config = {64, 64, 4, 2, false};
  entry.ms = 1.5;
  TuneDatabase db(path);
  const Status stored = db.store(key, entry);
  if (!stored) {
    std::ifstream in(path, std::ios::binary);
    std::string now((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
    if (now != text)
      return "a failed store changed tune.json: " + stored.message();
    return "";
  }
  auto found = TuneDatabase(path).lookup(key);
  if (!found || found->config != entry.config)
    return "a stored entry does not read back";
  // Every entry readable before the store is still there.
  auto after = TuneDatabase(path).entries();
  if (!after)
    return "the file written by store does not read: " + after.message();
  if (before)
    for (const auto &[k, e] : *before)
      if (k != key.text() && (!after->count(k) || after->at(k).config != e.config))
        return "store lost or changed the entry " + k;
  return "";
}

// ---- names --------------------------------------------------------------------
/// The first line names something in the cache directory (a directory, or
/// a file when it starts with "f:"), the rest is its meta.json; the names
/// of dtypes, masks, biases, archs and stages parse the first line too.
Finding fuzzNames(const uint8_t *data, size_t size) {
  const std::string text = textOf(data, size);
  const size_t nl = text.find('\n');
  std::string name = text.substr(0, nl);
  const std::string meta = nl == std::string::npos ? "" : text.substr(nl + 1);

  // Spellings: whatever parses prints back as a spelling that parses to
  // the same value.
  if (auto d = parseDType(name); d && parseDType(toString(*d)) != d)
    return "dtype '" + name + "' does not round-trip";
  if (auto m = parseMaskMode(name); m && parseMaskMode(toString(*m)) != m)
    return "mask '" + name + "' does not round-trip";
  if (auto b = parseBiasMode(name); b && parseBiasMode(toString(*b)) != b)
    return "bias '" + name + "' does not round-trip";
  if (auto a = parseArch(name); a && parseArch(toString(*a)) != a)
    return "arch '" + name + "' does not round-trip";
  if (auto s = parseStage(name); s && parseStage(toString(*s)) != s)
    return "stage '" + name + "' does not round-trip";

  const bool asFile = name.rfind("f:", 0) == 0;
  if (asFile)
    name.erase(0, 2);
  if (name.empty() || name == "." || name == ".." || name.size() > 200 ||
      name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    return "";
  const fs::path dir = freshDir("names");
  DiskCache cache(dir.string());
  CacheKey key;
  key.flashjitVersion = "fuzz";
  const std::string ours = key.entryName();
  if (name == ours || name == ours + ".lock")
    return "";
  if (!cache.store(key, {"ptx", "cubin", kernelMetaFor(key)}))
    return "cannot store the reference entry";
  const fs::path thing = dir / name;
  std::error_code ec;
  if (asFile) {
    writeFile(thing, meta);
  } else {
    fs::create_directories(thing, ec);
    writeFile(thing / "meta.json", meta);
  }
  if (!fs::exists(thing, ec))
    return ""; // a name this file system refuses
  auto listed = cache.list();
  if (!listed)
    return "list failed: " + listed.message();
  bool listedOurs = false, listedThing = false;
  for (const CacheEntryInfo &e : *listed) {
    listedOurs |= e.name == ours;
    listedThing |= e.name == name;
  }
  if (!listedOurs)
    return "the stored entry is not listed";
  if (listedThing) {
    // Listed means: an entry directory whose meta.json names it.
    nlohmann::json j = nlohmann::json::parse(meta, nullptr, false);
    if (asFile || !j.is_object() || !j.contains("name") || j["name"] != name)
      return "'" + name + "' is listed but is not an entry flashjit wrote";
  }
  auto cleared = cache.clear();
  if (!cleared)
    return "clear failed: " + cleared.message();
  if (fs::exists(dir / ours, ec))
    return "clear left the stored entry";
  const bool ourPattern = name.rfind(".tmp-", 0) == 0 ||
                          name.rfind(".trash-", 0) == 0 ||
                          (name.size() > 5 &&
                           name.compare(name.size() - 5, 5, ".lock") == 0);
  if (!fs::exists(thing, ec) && !listedThing && !ourPattern)
    return "clear removed '" + name + "', which flashjit did not write";
  return "";
}
} // namespace

const std::vector<Target> &targets() {
  static const std::vector<Target> all = {
      {"cli-options", fuzzCliOptions},
      {"meta-json", fuzzMetaJson},
      {"tune-json", fuzzTuneJson},
      {"cache-names", fuzzNames},
      {"tile-attributes", fuzzTileAttributes},
  };
  return all;
}

const Target *findTarget(const std::string &name) {
  for (const Target &t : targets())
    if (name == t.name)
      return &t;
  return nullptr;
}

} // namespace flashjit::fuzz
