//===- CacheCommand.cpp - flashjit cache list|clear|info ------------------===//
//
// Works without a GPU: the disk cache is plain files.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "flashjit/runtime/DiskCache.h"
#include "flashjit/runtime/TuneDatabase.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <ctime>

namespace flashjit::cli {

namespace {
std::string formatBytes(uint64_t bytes) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit ? "%.1f %s" : "%.0f %s", value,
                units[unit]);
  return buf;
}

std::string formatTime(int64_t unixTime) {
  const std::time_t t = static_cast<std::time_t>(unixTime);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

/// The cache, or prints why there is none and returns nullopt.
std::optional<DiskCache> openCache() {
  auto dir = DiskCache::defaultDirectory();
  if (!dir) {
    std::fprintf(stderr, "flashjit cache: %s\n", dir.message().c_str());
    return std::nullopt;
  }
  return DiskCache(*dir);
}

/// The cache and its entries, or prints why not and returns nullopt.
struct Listing {
  DiskCache cache;
  std::vector<CacheEntryInfo> entries;
};
std::optional<Listing> openAndList() {
  auto cache = openCache();
  if (!cache)
    return std::nullopt;
  auto entries = cache->list();
  if (!entries) {
    std::fprintf(stderr, "flashjit cache: %s\n", entries.message().c_str());
    return std::nullopt;
  }
  return Listing{std::move(*cache), std::move(*entries)};
}

int list() {
  auto listing = openAndList();
  if (!listing)
    return 1;
  const DiskCache *cache = &listing->cache;
  const auto *entries = &listing->entries;
  if (entries->empty()) {
    std::printf("no entries in %s\n", cache->directory().c_str());
    return 0;
  }
  size_t width = 4;
  for (const auto &e : *entries)
    width = std::max(width, e.name.size());
  std::printf("%-*s  %10s  %s\n", int(width), "NAME", "SIZE", "CREATED");
  for (const auto &e : *entries)
    std::printf("%-*s  %10s  %s\n", int(width), e.name.c_str(),
                formatBytes(e.bytes).c_str(),
                formatTime(e.createdUnixTime).c_str());
  return 0;
}

int clear() {
  auto cache = openCache();
  if (!cache)
    return 1;
  auto removed = cache->clear();
  if (!removed) {
    std::fprintf(stderr, "flashjit cache: %s\n", removed.message().c_str());
    return 1;
  }
  std::printf("removed %d entr%s from %s\n", removed->removed,
              removed->removed == 1 ? "y" : "ies", cache->directory().c_str());
  if (removed->inUse)
    std::printf("left %d entr%s that another process is writing\n",
                removed->inUse, removed->inUse == 1 ? "y" : "ies");
  return 0;
}

int info() {
  auto listing = openAndList();
  if (!listing)
    return 1;
  const DiskCache *cache = &listing->cache;
  const auto *entries = &listing->entries;
  uint64_t total = 0;
  for (const auto &e : *entries)
    total += e.bytes;
  std::printf("directory: %s\nentries:   %zu\nsize:      %s\n",
              cache->directory().c_str(), entries->size(),
              formatBytes(total).c_str());
  const TuneDatabase tuned(TuneDatabase::pathIn(cache->directory()));
  auto tunedEntries = tuned.entries();
  if (tunedEntries)
    std::printf("tuned:     %zu configs in %s\n", tunedEntries->size(),
                tuned.path().c_str());
  else
    std::printf("tuned:     unreadable (%s)\n", tunedEntries.message().c_str());
  return 0;
}
} // namespace

void addCacheCommand(CLI::App &app, int &exitCode) {
  CLI::App *cmd = app.add_subcommand(
      "cache",
      "Inspect or clear the on-disk kernel cache ($FLASHJIT_CACHE_DIR, else "
      "$XDG_CACHE_HOME/flashjit, else ~/.cache/flashjit)");
  cmd->require_subcommand(1);
  cmd->add_subcommand("list",
                      "List cached kernels: name, size and creation time")
      ->callback([&exitCode] { exitCode = list(); });
  cmd->add_subcommand("clear",
                      "Remove every cached kernel (tuned configs in tune.json "
                      "and files flashjit did not create are kept)")
      ->callback([&exitCode] { exitCode = clear(); });
  cmd->add_subcommand("info",
                      "Show the cache directory, entry count and total size, "
                      "and how many tuned configs the tune database holds")
      ->callback([&exitCode] { exitCode = info(); });
}

} // namespace flashjit::cli
