//===- test_fuzz.cpp - The fuzz targets: regression corpus, then mutations --===//
//
// Every input of tests/fuzz/corpus/<target>/ (the inputs of issue 24's
// defects, and what fuzzing found since), then seeded random mutations of
// them for a bounded time: FLASHJIT_FUZZ_SECONDS per target (default 1),
// FLASHJIT_FUZZ_SEED (default 1). Where clang is available, flashjit-fuzz
// runs the same targets under libFuzzer (tools/scripts/run-tests.sh).
//
//===----------------------------------------------------------------------===//
#include "FuzzTargets.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;
using namespace flashjit::fuzz;

namespace {
std::vector<std::string> corpusOf(const std::string &target) {
  std::vector<std::string> inputs;
#ifdef FLASHJIT_FUZZ_CORPUS
  const fs::path dir = fs::path(FLASHJIT_FUZZ_CORPUS) / target;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto &e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file())
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const fs::path &f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    inputs.push_back(os.str());
  }
#endif
  return inputs;
}

double envOr(const char *name, double fallback) {
  const char *v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

/// Tokens that break parsers of numbers, lists and JSON.
const char *const kInteresting[] = {
    "0",          "-1",         "1",           "2147483647",  "2147483648",
    "4294967296", "4294967424", "-4294967232", "1e308",       "-1e308",
    "1e-320",     "1e39",       "128.5",       "nan",         "inf",
    "9223372036854775807",      "18446744073709551615",       ",",
    ",,",         "",           "null",        "true",        "\"\"",
    "{}",         "[]",         "\n",          "\"quick\": true, ",
    "-",          ".",          "/",           " = ",         "<",
    ">",          "#flashjit.tile<block_m = 16, block_n = 16, warps = 1, "
                  "stages = 1>"};

/// One to four random edits of `input`, some splicing in `other`.
std::string mutate(std::string s, const std::string &other,
                   std::mt19937_64 &rng) {
  auto pick = [&](size_t n) {
    return n ? std::uniform_int_distribution<size_t>(0, n - 1)(rng) : 0;
  };
  const int edits = 1 + int(pick(4));
  for (int i = 0; i < edits; ++i) {
    const size_t at = pick(s.size() + 1);
    switch (pick(7)) {
    case 0: // flip a bit
      if (!s.empty())
        s[pick(s.size())] ^= char(1 << pick(8));
      break;
    case 1: // a random byte
      s.insert(s.begin() + at, char(pick(256)));
      break;
    case 2: // delete a span
      if (!s.empty())
        s.erase(pick(s.size()), 1 + pick(8));
      break;
    case 3: // an interesting token
      s.insert(at, kInteresting[pick(std::size(kInteresting))]);
      break;
    case 4: { // a number replaced by an interesting one
      const size_t digit = s.find_first_of("0123456789", at);
      if (digit == std::string::npos)
        break;
      const size_t end = s.find_first_not_of("0123456789.e-", digit);
      s.replace(digit, (end == std::string::npos ? s.size() : end) - digit,
                kInteresting[pick(std::size(kInteresting))]);
      break;
    }
    case 5: // duplicate a span
      if (!s.empty()) {
        const size_t from = pick(s.size());
        s.insert(at, s.substr(from, 1 + pick(16)));
      }
      break;
    default: // splice another input
      if (!other.empty()) {
        const size_t from = pick(other.size());
        s.insert(at, other.substr(from, 1 + pick(64)));
      }
    }
  }
  if (s.size() > (1 << 16))
    s.resize(1 << 16);
  return s;
}

class Fuzz : public ::testing::TestWithParam<Target> {};
} // namespace

TEST_P(Fuzz, CorpusThenSeededMutations) {
  const Target &t = GetParam();
  const std::vector<std::string> corpus = corpusOf(t.name);
  ASSERT_FALSE(corpus.empty()) << "no corpus in tests/fuzz/corpus/" << t.name;
  // The targets warn on stderr about the broken files they are fed.
  ::testing::internal::CaptureStderr();
  auto runOne = [&](const std::string &input, const char *what) {
    const Finding f =
        t.run(reinterpret_cast<const uint8_t *>(input.data()), input.size());
    if (!f.empty())
      ADD_FAILURE() << t.name << ": " << f << "\n" << what << " input ("
                    << input.size() << " bytes):\n" << input;
    return f.empty();
  };
  for (const std::string &input : corpus)
    runOne(input, "corpus");

  const double seconds = envOr("FLASHJIT_FUZZ_SECONDS", 1);
  const auto seed = static_cast<uint64_t>(envOr("FLASHJIT_FUZZ_SEED", 1));
  std::mt19937_64 rng(seed ^ std::hash<std::string>()(t.name));
  std::vector<std::string> pool = corpus;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start)
        .count();
  };
  long runs = 0, failures = 0;
  while (elapsed() < seconds && failures < 5) {
    const std::string &base = pool[rng() % pool.size()];
    const std::string &other = pool[rng() % pool.size()];
    std::string input = mutate(base, other, rng);
    ++runs;
    if (!runOne(input, "mutated"))
      ++failures;
    else if (pool.size() < 4096 && rng() % 16 == 0)
      pool.push_back(std::move(input)); // mutations of mutations
  }
  ::testing::internal::GetCapturedStderr();
  std::printf("[fuzz] %s: %zu corpus inputs, then %ld mutated inputs in "
              "%.1f s (seed %llu), %ld failing\n",
              t.name, corpus.size(), runs, elapsed(),
              static_cast<unsigned long long>(seed), failures);
}

INSTANTIATE_TEST_SUITE_P(Targets, Fuzz, ::testing::ValuesIn(targets()),
                         [](const auto &info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });
