//===- ModuleCache.cpp - Per-key once over a map of shared futures --------===//
#include "flashjit/runtime/ModuleCache.h"

namespace flashjit {

Expected<ModuleCache::Kernel> ModuleCache::getOrBuild(const std::string &key,
                                                      const Builder &build) {
  std::promise<Expected<Kernel>> promise;
  Slot slot;
  bool owner = false;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      slot = it->second;
    } else {
      slot = {promise.get_future().share(), ++nextId_};
      map_.emplace(key, slot);
      owner = true;
    }
  }
  if (!owner) {
    ++hits_;
    // Outside the lock: a build takes seconds, other lookups microseconds.
    return slot.result.get();
  }
  ++builds_;
  Expected<Kernel> result = Status::error("kernel build did not finish");
  try {
    result = build();
  } catch (const std::exception &e) {
    // A builder that throws (bad_alloc) must not leave waiters hanging.
    result = Status::error(std::string("kernel build failed: ") + e.what());
  }
  if (!result) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = map_.find(key);
    if (it != map_.end() && it->second.id == slot.id) // not a newer attempt
      map_.erase(it);
  }
  promise.set_value(result);
  return result;
}

void ModuleCache::put(const std::string &key, Kernel kernel) {
  std::promise<Expected<Kernel>> ready;
  ready.set_value(std::move(kernel));
  std::lock_guard<std::mutex> guard(mutex_);
  map_[key] = {ready.get_future().share(), ++nextId_};
}

size_t ModuleCache::size() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return map_.size();
}

void ModuleCache::clear() {
  std::lock_guard<std::mutex> guard(mutex_);
  map_.clear();
}

} // namespace flashjit
