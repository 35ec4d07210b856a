//===- test_ptxas.cpp - Generated PTX assembles with ptxas, without spills -===//
//
// For a grid of head sizes x dtypes x masks x every architecture the
// runtime accepts, compiles the forward kernel with the arch's default tile
// config (the alignment the runtime would pick for contiguous tensors), runs
// `ptxas -arch=<arch> -v` on the PTX and requires: exit 0, the .target line
// of the arch, "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill
// loads", and launch facts that agree with the PTX itself. No GPU needed;
// ptxas is (the README's install puts it there): without it every test
// fails with the reason.
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"

#include "Subprocess.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <tuple>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace flashjit;

namespace {

// ---- finding and running ptxas ----------------------------------------------------

bool isExecutable(const std::string &path) {
  return !path.empty() && ::access(path.c_str(), X_OK) == 0 &&
         !fs::is_directory(path);
}

/// ptxas from $FLASHJIT_PTXAS when set (nothing else then), else the
/// configure-time path, else $PATH; empty and `why` filled in when there is
/// none.
std::string findPtxas(std::string &why) {
  if (const char *forced = std::getenv("FLASHJIT_PTXAS"); forced && *forced) {
    if (isExecutable(forced))
      return forced;
    why = std::string("$FLASHJIT_PTXAS (") + forced + ") is not executable";
    return {};
  }
  std::string configured;
#ifdef FLASHJIT_PTXAS_PATH
  configured = FLASHJIT_PTXAS_PATH;
#endif
  const bool configuredUsable =
      !configured.empty() &&
      configured.find("NOTFOUND") == std::string::npos;
  if (configuredUsable && isExecutable(configured))
    return configured;
  if (const char *path = std::getenv("PATH")) {
    std::istringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      if (dir.empty())
        continue;
      const std::string candidate = (fs::path(dir) / "ptxas").string();
      if (isExecutable(candidate))
        return candidate;
    }
  }
  why = "configured path '" + configured +
        "' is not usable and there is no ptxas on $PATH (install the CUDA "
        "toolkit or set CUDA_HOME and re-run cmake)";
  return {};
}

const std::string &ptxasPath(std::string &why) {
  static std::string whyNot;
  static const std::string path = findPtxas(whyNot);
  why = whyNot;
  return path;
}

// ---- checks -------------------------------------------------------------------------

/// The architecture named by the PTX's .target line ("sm_90a"), or "".
std::string ptxTarget(const std::string &ptx) {
  std::istringstream in(ptx);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string first, arch;
    words >> first;
    if (first != ".target")
      continue;
    words >> arch;
    if (!arch.empty() && arch.back() == ',')
      arch.pop_back();
    return arch;
  }
  return {};
}

/// The thread count of the PTX's `.maxntid N, 1, 1` directive, or 0.
int ptxMaxThreads(const std::string &ptx) {
  static const std::regex maxntid(R"(\.maxntid\s+(\d+),\s*1,\s*1)");
  std::smatch m;
  return std::regex_search(ptx, m, maxntid) ? std::stoi(m[1].str()) : 0;
}

/// What assembling one kernel gave.
struct Assembled {
  std::string failure;   ///< empty when compile and ptxas both succeeded
  int stackFrame = -1;   ///< bytes, summed over every function ptxas reports
  int spillStores = -1;
  int spillLoads = -1;
  /// "N bytes stack frame, M bytes spill stores, K bytes spill loads" lines
  int reports = 0;
  std::string ptxasLog;
  /// Local memory of any kind: a stack frame without spills (an array
  /// indexed at run time) costs as much as a spill.
  bool clean() const {
    return failure.empty() && reports > 0 && stackFrame == 0 &&
           spillStores == 0 && spillLoads == 0;
  }
  std::string localMemory() const {
    return std::to_string(stackFrame) + " bytes stack frame, " +
           std::to_string(spillStores) + " bytes spill stores, " +
           std::to_string(spillLoads) + " bytes spill loads";
  }
};

/// Compiles `spec` with `config` for `arch` and assembles the PTX with
/// `ptxas -arch=<arch> -O<level> -v`, at the level the runtime's JIT uses. `art` receives the artifact when non-null.
Assembled assemble(const std::string &ptxas, const AttentionSpec &spec,
                   const TileConfig &config, Arch arch,
                   Artifact *artOut = nullptr) {
  Assembled a;
  const std::string name = kernelName(spec, config, arch);
  Expected<Artifact> art = compile(spec, config, arch);
  if (!art.isOk()) {
    a.failure = "compile failed: " + art.message();
    return a;
  }
  if (art->ptx.empty()) {
    a.failure = "compile returned no PTX";
    return a;
  }
  if (artOut)
    *artOut = *art;
  flashjit::test_support::TempDir tmp("flashjit-ptxas-test");
  if (tmp.path().empty()) {
    a.failure = "mkdtemp failed";
    return a;
  }
  const fs::path ptxFile = tmp.path() / (name + ".ptx");
  const fs::path cubin = tmp.path() / (name + ".cubin");
  {
    std::ofstream out(ptxFile, std::ios::binary);
    out << art->ptx;
    if (!out.good()) {
      a.failure = "cannot write " + ptxFile.string();
      return a;
    }
  }
  flashjit::test_support::ProcessResult r = flashjit::test_support::runProcess(
      {ptxas, "-arch=" + std::string(toString(arch)),
       "-O" + std::to_string(art->launch.ptxasOptLevel), "-v", ptxFile.string(),
       "-o", cubin.string()});
  const std::string log = r.all();
  a.ptxasLog = log;
  if (r.exitCode != 0) {
    a.failure = "ptxas exited with " + std::to_string(r.exitCode);
    return a;
  }
  if (!fs::exists(cubin) || fs::file_size(cubin) == 0) {
    a.failure = "ptxas wrote no cubin";
    return a;
  }
  static const std::regex local(R"((\d+) bytes stack frame, (\d+) bytes )"
                                R"(spill stores, (\d+) bytes spill loads)");
  a.stackFrame = a.spillStores = a.spillLoads = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), local);
       it != std::sregex_iterator(); ++it) {
    ++a.reports;
    a.stackFrame += std::stoi((*it)[1].str());
    a.spillStores += std::stoi((*it)[2].str());
    a.spillLoads += std::stoi((*it)[3].str());
  }
  return a;
}

int paddedTo16(int d) { return (d + 15) / 16 * 16; }

/// Largest dynamic shared memory per block, by the CUDA programming guide's
/// table (not by the compiler's maxSharedMemoryPerBlock).
int sharedMemoryLimit(Arch arch) {
  switch (arch) {
  case Arch::Sm80:
  case Arch::Sm87:
    return 163 * 1024;
  case Arch::Sm86:
  case Arch::Sm89:
  case Arch::Sm120:
    return 99 * 1024;
  case Arch::Sm90:
  case Arch::Sm90a:
  case Arch::Sm100:
    return 227 * 1024;
  }
  return 0;
}

/// Checks the launch facts of `art` against what the PTX says and against
/// first principles, not against the functions that filled them in.
void expectLaunchFactsHold(const Artifact &art, const std::string &ptx,
                           const AttentionSpec &spec, const TileConfig &config,
                           Arch arch) {
  // The kernel's name: .entry of the PTX, and readable facts.
  EXPECT_NE(ptx.find(".entry " + art.kernelName + "("), std::string::npos)
      << "no .entry " << art.kernelName << " in the PTX";
  if (spec.direction == Direction::Backward) {
    EXPECT_EQ(art.kernelName, kernelName(spec, config, arch));
    EXPECT_EQ(ptxTarget(ptx), std::string(toString(arch)));
    // The main entry's threads (the other two take kBackwardAuxThreads).
    EXPECT_EQ(ptxMaxThreads(ptx.substr(ptx.find(".entry " + art.kernelName +
                                                "("))),
              art.launch.threadsPerBlock);
    EXPECT_EQ(art.launch.threadsPerBlock, config.warps * kWarpSize);
    if (config.family == Family::Sm90) {
      // 128-byte rows of 64-column boxes: K and V of block_n keys, Q and dO
      // of 64 queries per stage, dS of 64 queries x block_n keys; LSE' and
      // D of each stage's queries; dQ's float32 rows (8 past a multiple of
      // 32 floats, at least a warpgroup's columns: a whole second box when
      // two split them), one buffer per warpgroup when both take every
      // column; with TMA (16-byte rows) a barrier for K and V and one per
      // stage. Past d = 128 the warpgroups split whole boxes of columns:
      // Q, K and dO padded to an even count (V not), dQ's rows both
      // warpgroups' columns.
      const int boxesQK = (spec.headDimQK + 63) / 64;
      const int boxesV = (spec.headDimV + 63) / 64;
      const bool two = config.warps == 8;
      const bool halves = two && std::max(spec.headDimQK, spec.headDimV) > 128;
      const int storedQK = halves ? (boxesQK + 1) / 2 * 2 : boxesQK;
      const int storedV = halves ? (boxesV + 1) / 2 * 2 : boxesV;
      const bool split = halves || (two && boxesQK == 2);
      const int buffers = two && !split && !spec.deterministic ? 2 : 1;
      const int cols = halves  ? storedQK * 64
                       : split ? 128
                               : (spec.headDimQK + 7) / 8 * 8;
      const int rowFloats = (std::max(cols - 8, 0) + 31) / 32 * 32 + 8;
      int bytes = (storedQK + boxesV) * config.blockN * 128 +
                  config.stages * (storedQK + storedV) * 64 * 128 +
                  config.blockN * 128 + 2 * config.stages * 64 * 4 +
                  buffers * 64 * rowFloats * 4;
      const bool tma =
          spec.globalAlignElems * elementBytes(spec.dtype) >= 16;
      if (tma)
        bytes += 8 * (1 + config.stages);
      EXPECT_EQ(art.launch.sharedMemBytes, bytes);
      EXPECT_NE(ptx.find("wgmma.mma_async.sync.aligned.m64n"),
                std::string::npos);
      EXPECT_EQ(ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos);
      EXPECT_EQ(ptx.find("cp.async.bulk.tensor") != std::string::npos, tma);
      // dQ goes by bulk reductions, in either mode: no float atomics.
      EXPECT_NE(ptx.find("cp.reduce.async.bulk.global.shared::cta."
                         "bulk_group.add.f32"),
                std::string::npos);
      EXPECT_EQ(ptx.find("atom.global.add.f32"), std::string::npos);
      EXPECT_EQ(ptx.find("red.global.add.f32"), std::string::npos);
      return;
    } else {
      EXPECT_EQ(art.launch.sharedMemBytes,
                backwardLayoutSm80(spec, config).sharedMemBytes);
    }
    EXPECT_LE(art.launch.sharedMemBytes, sharedMemoryLimit(arch));
    // The module's other two entries (Backward.h).
    for (const std::string &entry : {backwardPreprocessEntry(art.kernelName),
                                     backwardConvertEntry(art.kernelName)})
      EXPECT_NE(ptx.find(".entry " + entry + "("), std::string::npos)
          << "no .entry " << entry << " in the PTX";
    // The mma.sync kernel multiplies on tensor cores, reading its operands
    // with ldmatrix (.trans for P^T, dS^T, dO^T, Q^T and K^T); the scalar
    // kernel has neither.
    if (config.family == Family::Sm80) {
      EXPECT_EQ(ptx.find("mma.sync.aligned.m16n8k16") != std::string::npos,
                !config.scalar);
      EXPECT_EQ(ptx.find("ldmatrix.sync.aligned.m8n8.x4.trans") !=
                    std::string::npos,
                !config.scalar);
    }
    // Fast mode adds dQ atomically; deterministic mode has no atomics.
    const bool atomics =
        ptx.find("atom.global.add.f32") != std::string::npos ||
        ptx.find("red.global.add.f32") != std::string::npos;
    EXPECT_EQ(atomics, !spec.deterministic);
    return;
  }
  const std::string head = "fwd_" + std::string(toString(spec.dtype)) +
                           "_hqk" + std::to_string(spec.headDimQK) + "_hv" +
                           std::to_string(spec.headDimV) + "_" +
                           std::string(toString(spec.mask)) + "_g" +
                           std::to_string(spec.gqaGroup) + "_";
  EXPECT_EQ(art.kernelName.rfind(head, 0), 0u) << art.kernelName;
  const std::string tiles = "_bm" + std::to_string(config.blockM) + "_bn" +
                            std::to_string(config.blockN) + "_w" +
                            std::to_string(config.warps) + "_s" +
                            std::to_string(config.stages);
  EXPECT_NE(art.kernelName.find(tiles), std::string::npos) << art.kernelName;
  const std::string archName(toString(arch)); // sm_90a; "_sm90a" in names
  std::string archTag = "_" + archName;
  archTag.erase(archTag.find('_', 1), 1);
  EXPECT_EQ(art.kernelName.substr(art.kernelName.size() - archTag.size()),
            archTag);
  EXPECT_EQ(ptxTarget(ptx), archName);
  // Threads: what the PTX was compiled for is what the launcher launches;
  // the sm80 kernel has the config's warps, its quick form at least as many
  // (warps of 16 rows) and at most 256 threads; sm90 a producer warpgroup
  // beside the consumers' warps.
  EXPECT_EQ(ptxMaxThreads(ptx), art.launch.threadsPerBlock);
  if (config.family == Family::Sm90) {
    EXPECT_EQ(art.launch.threadsPerBlock, (config.warps + 4) * kWarpSize);
  } else if (config.quick) {
    EXPECT_GE(art.launch.threadsPerBlock, config.warps * kWarpSize);
    EXPECT_LE(art.launch.threadsPerBlock, 256);
  } else {
    EXPECT_EQ(art.launch.threadsPerBlock, config.warps * kWarpSize);
  }
  EXPECT_EQ(art.launch.blockM, config.blockM);
  EXPECT_LE(art.launch.sharedMemBytes, sharedMemoryLimit(arch));
  if (config.family == Family::Sm90) {
    // The tensor maps of Q (64-row boxes) and K, V (block_n rows) travel as
    // parameters where rows are 16-byte aligned; else the producer copies
    // by cp.async (no maps). setmaxnreg moves registers to the consumers.
    const bool tma = spec.globalAlignElems == 8;
    EXPECT_EQ(art.launch.tmaQ.rows, tma ? 64 : 0);
    EXPECT_EQ(art.launch.tmaK.rows, tma ? config.blockN : 0);
    EXPECT_EQ(ptx.find(".param .align 64 .b8") != std::string::npos, tma);
    EXPECT_EQ(ptx.find("cp.async.mbarrier.arrive.noinc") != std::string::npos,
              !tma);
    EXPECT_NE(ptx.find("setmaxnreg.inc"), std::string::npos);
    return;
  }
  // sm80 shared memory: a Q tile and `stages` K and V tiles whose rows are
  // the head dims padded to 16, or one 16-byte chunk longer (unswizzled).
  const int eb = elementBytes(spec.dtype);
  const int rows = config.blockM + 2 * config.stages * config.blockN;
  const int swizzled =
      (config.blockM * paddedTo16(spec.headDimQK) +
       config.stages * config.blockN *
           (paddedTo16(spec.headDimQK) + paddedTo16(spec.headDimV))) *
      eb;
  const int padded = swizzled + rows * 16;
  const int bytes = art.launch.sharedMemBytes;
  EXPECT_TRUE(bytes == swizzled || bytes == padded)
      << bytes << " bytes of shared memory; expected " << swizzled
      << " (swizzled rows) or " << padded << " (padded rows)";
}

/// Warp-specialised kernels hand registers from producers to consumers:
/// setmaxnreg.inc waits until released registers cover the increase, and
/// the CTA holds only what it was launched with (ptxas's count, in
/// multiples of 8, times .maxntid), so the warpgroups' counts after the
/// hand-off must fit it, or the consumers never start (a hang, not an
/// error: the sm90 forward's copies hung so with 48 + 2 x 232 in 384 x 168).
void expectRegisterHandOffFits(const std::string &ptx,
                               const std::string &ptxasLog) {
  const std::regex entry(R"(\.entry\s+(\w+))");
  std::vector<std::pair<size_t, std::string>> entries;
  for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), entry);
       it != std::sregex_iterator(); ++it)
    entries.push_back({size_t(it->position()), (*it)[1].str()});
  for (size_t e = 0; e < entries.size(); ++e) {
    const size_t end = e + 1 < entries.size() ? entries[e + 1].first : ptx.size();
    const std::string body = ptx.substr(entries[e].first, end - entries[e].first);
    const std::string &name = entries[e].second;
    std::smatch m;
    if (!std::regex_search(
            body, m, std::regex(R"(setmaxnreg\.dec\.sync\.aligned\.u32\s+(\d+))")))
      continue;
    const int producer = std::stoi(m[1]);
    ASSERT_TRUE(std::regex_search(
        body, m, std::regex(R"(setmaxnreg\.inc\.sync\.aligned\.u32\s+(\d+))")))
        << name << ": setmaxnreg.dec without .inc";
    const int consumer = std::stoi(m[1]);
    ASSERT_TRUE(std::regex_search(body, m, std::regex(R"(\.maxntid\s+(\d+))")))
        << name;
    const int threads = std::stoi(m[1]);
    // ptxas -v: "Compiling entry function 'NAME'", then its "Used N registers".
    const size_t at = ptxasLog.find("function '" + name + "'");
    ASSERT_NE(at, std::string::npos) << name << "\n" << ptxasLog;
    const std::string rest = ptxasLog.substr(at);
    ASSERT_TRUE(std::regex_search(rest, m, std::regex(R"(Used (\d+) registers)")))
        << ptxasLog;
    const int launched = (std::stoi(m[1]) + 7) / 8 * 8 * threads;
    const int warpgroup = 128;
    EXPECT_LE(producer * warpgroup + consumer * (threads - warpgroup), launched)
        << name << ": producer " << producer << " + consumers " << consumer
        << " x " << (threads - warpgroup) / warpgroup
        << " warpgroups, launched with " << launched / threads << " x "
        << threads;
  }
}

/// Compiles `spec` with `config` for `arch`, checks what the artifact says
/// about itself, and assembles it with ptxas: exit 0 and no spills.
void compileAndAssemble(const AttentionSpec &spec, const TileConfig &config,
                        Arch arch) {
  std::string why;
  const std::string &ptxas = ptxasPath(why);
  ASSERT_FALSE(ptxas.empty()) << "ptxas not found: " << why;

  SCOPED_TRACE(kernelName(spec, config, arch));
  Artifact art;
  Assembled a = assemble(ptxas, spec, config, arch, &art);
  ASSERT_TRUE(a.failure.empty()) << a.failure << "\n" << a.ptxasLog;
  expectLaunchFactsHold(art, art.ptx, spec, config, arch);

  if (config.family == Family::Sm90) {
    EXPECT_EQ(a.ptxasLog.find("setmaxnreg' ignored"), std::string::npos)
        << a.ptxasLog;
    // C7513 and its kin: ptxas serialises the wgmmas (waits after each)
    // when it cannot prove their registers untouched while in flight.
    EXPECT_EQ(a.ptxasLog.find("Potential Performance Loss"), std::string::npos)
        << a.ptxasLog;
  }
  expectRegisterHandOffFits(art.ptx, a.ptxasLog);

  EXPECT_GE(a.reports, 1) << "ptxas -v printed no local-memory report:\n"
                          << a.ptxasLog;
  EXPECT_TRUE(a.clean()) << a.localMemory() << ":\n" << a.ptxasLog;
  // All shared memory is dynamic (layout.sharedMemBytes): a static byte
  // would push a 48 KiB kernel past the launch limit without the opt-in.
  EXPECT_EQ(a.ptxasLog.find("bytes smem"), std::string::npos)
      << "static shared memory:\n"
      << a.ptxasLog;
}

// ---- the default-config grid ----------------------------------------------------------

/// Every architecture the runtime accepts (compute capability 8.0, 8.6, 8.7,
/// 8.9, 9.0 as sm_90a, 10.0 and 12.0). The first four have the whole grid in
/// both dtypes; the sm80 family's later targets one dtype a head dim.
constexpr Arch kRuntimeArchs[] = {Arch::Sm80, Arch::Sm86, Arch::Sm89,
                                  Arch::Sm90a, Arch::Sm87, Arch::Sm100,
                                  Arch::Sm120};
constexpr int kBothDtypeArchs = 4;

struct GridCase {
  int headDim;
  DType dtype;
  MaskMode mask;
  Arch arch;
  Family family;
  bool quick; ///< the quick form of the default config (TileConfig::quick)
};

std::string gridName(const ::testing::TestParamInfo<GridCase> &info) {
  const GridCase &c = info.param;
  return "d" + std::to_string(c.headDim) + "_" + std::string(toString(c.dtype)) +
         "_" + std::string(toString(c.mask)) + "_" +
         std::string(toString(c.arch)) + "_" + std::string(toString(c.family)) +
         (c.quick ? "_quick" : "");
}

/// Head dims of the throughput table and the edges of the default table.
constexpr int kGridHeadDims[] = {1,  16, 32,  33,  64,  72,  80,
                                 96, 100, 128, 160, 192, 256};
/// Head dims where ptxas spilled before (d=89: three stages; 112-124: the
/// interleaved rescale and zero-filled columns; 132: 8-byte copies).
constexpr int kSpilledBeforeHeadDims[] = {89,  112, 113, 114, 115, 116, 117, 118,
                                          119, 120, 121, 122, 123, 124, 132};

std::vector<GridCase> gridCases() {
  std::vector<GridCase> out;
  // Both dtypes generate the same instructions but for the MMA's type: one
  // of them a head dim is enough for the later targets and the head dims
  // that spilled before.
  for (int d : kGridHeadDims)
    for (DType dtype : {DType::F16, DType::BF16})
      for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
        for (int a = 0; a < int(std::size(kRuntimeArchs)); ++a) {
          const Arch arch = kRuntimeArchs[a];
          if (a >= kBothDtypeArchs &&
              dtype != ((d + a) % 2 ? DType::F16 : DType::BF16))
            continue;
          for (bool quick : {false, true})
            out.push_back({d, dtype, mask, arch, Family::Sm80, quick});
          // The sm90 family: TMA loads a head, or (d not a multiple of 8)
          // the producer warpgroup copies it by cp.async.
          if (arch == Arch::Sm90a)
            out.push_back({d, dtype, mask, arch, Family::Sm90, false});
        }
  int i = 0;
  for (int d : kSpilledBeforeHeadDims)
    for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
      for (Arch arch : kRuntimeArchs) {
        const DType dtype = i++ % 2 ? DType::F16 : DType::BF16;
        for (bool quick : {false, true})
          out.push_back({d, dtype, mask, arch, Family::Sm80, quick});
        if (arch == Arch::Sm90a)
          out.push_back({d, dtype, mask, arch, Family::Sm90, false});
      }
  return out;
}

void PrintTo(const GridCase &c, std::ostream *os) {
  *os << "head_dim=" << c.headDim << " " << toString(c.dtype) << " "
      << toString(c.mask) << " " << toString(c.arch) << " "
      << toString(c.family) << (c.quick ? " quick" : "");
}

class PtxasDefaultConfig : public ::testing::TestWithParam<GridCase> {};

TEST_P(PtxasDefaultConfig, AssemblesWithoutSpills) {
  const GridCase &c = GetParam();
  AttentionSpec spec;
  spec.dtype = c.dtype;
  spec.headDimQK = c.headDim;
  spec.headDimV = c.headDim;
  spec.mask = c.mask;
  spec.gqaGroup = 1;
  spec.writeLse = true;
  // Contiguous [b, s, h, d] tensors: the head stride is d, so this is what
  // the runtime picks (8 for every d that is a multiple of 8).
  spec.globalAlignElems = alignmentElems({c.headDim});
  // The sm90 family copies 4 bytes at a time at least: an odd head dim
  // reaches it in rows padded to 16 bytes (TMA), as the runtime plans it.
  if (c.family == Family::Sm90 && spec.globalAlignElems == 1)
    spec.globalAlignElems = 8;
  TileConfig config = defaultTileConfig(spec, c.arch, c.family);
  config.quick = c.quick;
  compileAndAssemble(spec, config, c.arch);
}

INSTANTIATE_TEST_SUITE_P(Forward, PtxasDefaultConfig,
                         ::testing::ValuesIn(gridCases()), gridName);

// ---- split-KV at the default tiles ------------------------------------------------------------

/// `--splits N` (or a named tile on a decode-like problem) splits the keys
/// of the default tiles: their epilogue writes float32 partials.
struct SplitCase {
  int headDim;
  DType dtype;
  MaskMode mask;
  Arch arch;
  bool lse;
};

class PtxasSplitDefault : public ::testing::TestWithParam<SplitCase> {};

TEST_P(PtxasSplitDefault, AssemblesWithoutSpills) {
  const SplitCase &c = GetParam();
  AttentionSpec spec;
  spec.dtype = c.dtype;
  spec.headDimQK = spec.headDimV = c.headDim;
  spec.mask = c.mask;
  spec.writeLse = c.lse;
  spec.globalAlignElems = alignmentElems({c.headDim});
  spec.splitKV = true;
  compileAndAssemble(spec, defaultTileConfig(spec, c.arch, Family::Sm80),
                     c.arch);
}

std::vector<SplitCase> splitCases() {
  std::vector<SplitCase> out;
  int i = 0;
  for (int d : {1, 33, 64, 80, 89, 96, 100, 104, 112, 120, 128, 132, 160,
                192, 256})
    for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
      for (Arch arch : {Arch::Sm80, Arch::Sm90a}) {
        const DType dtype = i++ % 2 ? DType::F16 : DType::BF16;
        for (bool lse : {false, true})
          out.push_back({d, dtype, mask, arch, lse});
      }
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    Forward, PtxasSplitDefault, ::testing::ValuesIn(splitCases()),
    [](const ::testing::TestParamInfo<SplitCase> &info) {
      const SplitCase &c = info.param;
      return "d" + std::to_string(c.headDim) + "_" +
             std::string(toString(c.dtype)) + "_" +
             std::string(toString(c.mask)) + "_" +
             std::string(toString(c.arch)) + (c.lse ? "_lse" : "");
    });

// ---- the backward's kernels ---------------------------------------------------------------

struct BackwardCase {
  std::string name;
  AttentionSpec spec;
  Arch arch;
};

std::vector<BackwardCase> backwardCases() {
  std::vector<BackwardCase> out;
  auto add = [&](std::string name, AttentionSpec spec, Arch arch) {
    spec.direction = Direction::Backward;
    spec.writeLse = true;
    out.push_back({std::move(name), spec, arch});
  };
  for (int d : {1, 33, 64, 80, 100, 128, 192, 256})
    for (DType dtype : {DType::F16, DType::BF16})
      for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
        for (Arch arch : {Arch::Sm80, Arch::Sm90a}) {
          AttentionSpec spec;
          spec.dtype = dtype;
          spec.headDimQK = spec.headDimV = d;
          spec.mask = mask;
          spec.globalAlignElems = alignmentElems({d});
          add("d" + std::to_string(d) + "_" + std::string(toString(dtype)) +
                  "_" + std::string(toString(mask)) + "_" +
                  std::string(toString(arch)),
              spec, arch);
        }
  AttentionSpec spec;
  spec.headDimQK = 192, spec.headDimV = 128, spec.mask = MaskMode::Causal;
  spec.gqaGroup = 4;
  add("d192_dv128_gqa4_causal_sm80", spec, Arch::Sm80);
  spec.deterministic = true;
  add("d192_dv128_gqa4_causal_deterministic_sm80", spec, Arch::Sm80);
  add("d192_dv128_gqa4_causal_deterministic_sm90a", spec, Arch::Sm90a);
  AttentionSpec features;
  features.headDimQK = features.headDimV = 64;
  features.mask = MaskMode::Window;
  features.softcap = true;
  features.bias = BiasMode::Alibi;
  features.varlen = true;
  features.keyLengths = true;
  add("d64_window_softcap_alibi_varlen_klen_sm80", features, Arch::Sm80);
  features.bias = BiasMode::Tensor;
  features.dtype = DType::F16;
  add("d64_window_softcap_bias_varlen_klen_fp16_sm86", features, Arch::Sm86);
  features.biasGrad = true;
  add("d64_window_softcap_dbias_varlen_klen_fp16_sm80", features, Arch::Sm80);
  // The mma.sync kernel's table on every shared-memory size, with and
  // without per-score work, at head dims that pad to 32.
  for (Arch arch : {Arch::Sm80, Arch::Sm86, Arch::Sm89, Arch::Sm90a})
    for (int d : {72, 128, 144, 256}) {
      AttentionSpec heavy;
      heavy.headDimQK = heavy.headDimV = d;
      heavy.mask = MaskMode::Causal;
      heavy.softcap = true;
      heavy.bias = BiasMode::Tensor;
      heavy.biasGrad = true;
      heavy.varlen = heavy.keyLengths = true;
      const std::string tail = std::string("_") + std::string(toString(arch));
      add("d" + std::to_string(d) + "_causal_softcap_dbias_varlen_klen" + tail,
          heavy, arch);
      AttentionSpec window;
      window.headDimQK = window.headDimV = d;
      window.mask = MaskMode::Window;
      window.bias = BiasMode::Alibi;
      window.gqaGroup = 2;
      add("d" + std::to_string(d) + "_window_alibi_gqa2" + tail, window, arch);
    }
  return out;
}

class PtxasBackward : public ::testing::TestWithParam<BackwardCase> {};

// Both main kernels at their own default tiles, whichever is the default.
TEST_P(PtxasBackward, ScalarKernelAssemblesWithoutSpills) {
  const BackwardCase &c = GetParam();
  compileAndAssemble(c.spec, defaultBackwardConfigSm80(c.spec, c.arch, true),
                     c.arch);
}

TEST_P(PtxasBackward, MmaKernelAssemblesWithoutSpills) {
  const BackwardCase &c = GetParam();
  compileAndAssemble(c.spec, defaultBackwardConfigSm80(c.spec, c.arch, false),
                     c.arch);
}

INSTANTIATE_TEST_SUITE_P(
    Backward, PtxasBackward, ::testing::ValuesIn(backwardCases()),
    [](const ::testing::TestParamInfo<BackwardCase> &info) {
      return info.param.name;
    });

/// The sm90 backward (wgmma) at its default tiles: every head dim it serves
/// (to 64) on its sub-step boundary and its edges, both masks and the
/// window, both dtypes, and the features that cost registers (GQA with
/// deterministic dQ, varlen with key lengths and narrow alignment,
/// Dv != Dqk); past 128 the split columns (both head dims to 160, one of
/// them to 256 beside the other's 128 or less).
std::vector<BackwardCase> sm90BackwardCases() {
  std::vector<BackwardCase> out;
  int i = 0;
  // Past d = 64 only 16-byte rows (TMA) are served: those take alignment 8
  // (d = 100: heads 104 apart).
  for (int d : {1, 16, 33, 48, 64, 72, 96, 100, 128, 136, 160, 192, 256})
    for (MaskMode mask : {MaskMode::None, MaskMode::Causal, MaskMode::Window})
      for (int feature = 0; feature < 6; ++feature) {
        AttentionSpec s;
        s.direction = Direction::Backward;
        s.writeLse = true;
        s.dtype = i++ % 2 ? DType::F16 : DType::BF16;
        s.headDimQK = s.headDimV = d;
        s.mask = mask;
        s.globalAlignElems = d > 64 ? 8 : alignmentElems({d});
        std::string name = "d" + std::to_string(d) + "_" +
                           std::string(toString(mask));
        // Past d = 96 varlen and windows are refused (registers); a bias or
        // softcap past 96, or 64 with them.
        const bool masked = mask == MaskMode::Window || feature == 2;
        if (d > 96 && masked)
          continue;
        if (feature >= 4 && d > (masked ? 64 : 96))
          continue;
        if (feature == 1) {
          s.gqaGroup = 4, s.deterministic = true;
          name += "_gqa4_deterministic";
        } else if (feature == 2) {
          s.varlen = s.keyLengths = true;
          s.globalAlignElems = d > 64 ? 8 : 2;
          name += "_varlen_klen_a" + std::to_string(s.globalAlignElems);
        } else if (feature == 3) {
          s.headDimV = std::max(1, d / 2);
          name += "_dv" + std::to_string(s.headDimV);
        }
        // Past 160 one head dim is 128 or less (the other's columns).
        if (d > 160 && s.headDimV == d) {
          s.headDimV = 120;
          name += "_dv120";
        }
        if (feature == 4) {
          s.softcap = true, s.bias = BiasMode::Alibi, s.gqaGroup = 4;
          name += "_softcap_alibi_gqa4";
        } else if (feature == 5) {
          s.bias = BiasMode::Tensor, s.deterministic = true;
          name += "_bias_deterministic";
        }
        out.push_back({name + "_" + std::string(toString(s.dtype)), s,
                       Arch::Sm90a});
      }
  // The widest split: V's 256 columns beside Q's 64, and Q's beside V's 32.
  for (auto [dqk, dv] : {std::pair{64, 256}, std::pair{256, 32}}) {
    AttentionSpec s;
    s.direction = Direction::Backward;
    s.writeLse = true;
    s.headDimQK = dqk, s.headDimV = dv;
    s.mask = MaskMode::Causal;
    s.gqaGroup = 4, s.deterministic = true;
    out.push_back({"d" + std::to_string(dqk) + "_dv" + std::to_string(dv) +
                       "_causal_gqa4_deterministic_bf16",
                   s, Arch::Sm90a});
  }
  return out;
}

class PtxasBackwardSm90 : public ::testing::TestWithParam<BackwardCase> {};

TEST_P(PtxasBackwardSm90, AssemblesWithoutSpills) {
  const BackwardCase &c = GetParam();
  const TileConfig config = defaultTileConfig(c.spec, c.arch, Family::Sm90);
  ASSERT_TRUE(validate(config, c.spec, c.arch).isOk())
      << validate(config, c.spec, c.arch).message();
  compileAndAssemble(c.spec, config, c.arch);
  // The other tiles (autotune's, the GPU tests'), where registers are
  // shortest: one stage, one warpgroup (to 128: past it two share the
  // columns).
  if (c.spec.headDimQK < 96)
    return;
  TileConfig oneStage = config;
  oneStage.stages = 1;
  TileConfig oneWarpgroup = config;
  oneWarpgroup.warps = 4;
  oneWarpgroup.blockN = 64;
  std::vector<TileConfig> others = {oneStage};
  if (std::max(c.spec.headDimQK, c.spec.headDimV) <= 128)
    others.push_back(oneWarpgroup);
  for (const TileConfig &other : others) {
    ASSERT_TRUE(validate(other, c.spec, c.arch).isOk())
        << validate(other, c.spec, c.arch).message();
    compileAndAssemble(c.spec, other, c.arch);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backward, PtxasBackwardSm90, ::testing::ValuesIn(sm90BackwardCases()),
    [](const ::testing::TestParamInfo<BackwardCase> &info) {
      return info.param.name;
    });

// ---- other specs and configs ------------------------------------------------------------

struct ExtraCase {
  std::string name;
  AttentionSpec spec;
  std::optional<TileConfig> config; ///< default table when empty
  Arch arch;
};

AttentionSpec makeSpec(int dqk, int dv, DType dtype, MaskMode mask, int align,
                       int group = 1, bool lse = true) {
  AttentionSpec s;
  s.headDimQK = dqk;
  s.headDimV = dv;
  s.dtype = dtype;
  s.mask = mask;
  s.globalAlignElems = align;
  s.gqaGroup = group;
  s.writeLse = lse;
  return s;
}

std::vector<ExtraCase> extraCases() {
  std::vector<ExtraCase> out;
  for (Arch arch : {Arch::Sm80, Arch::Sm90a}) {
    const std::string a(toString(arch));
    // The non-default config: one stage, short K/V tiles, 4 warps of 16 rows.
    const TileConfig small{/*blockM=*/64, /*blockN=*/32, /*warps=*/4,
                           /*stages=*/1};
    out.push_back({"small_config_d128_bf16_causal_" + a,
                   makeSpec(128, 128, DType::BF16, MaskMode::Causal, 8), small,
                   arch});
    out.push_back({"small_config_d80_fp16_none_" + a,
                   makeSpec(80, 80, DType::F16, MaskMode::None, 8), small, arch});
    out.push_back({"small_config_d33_bf16_causal_a1_" + a,
                   makeSpec(33, 33, DType::BF16, MaskMode::Causal, 1), small,
                   arch});
    // Head dims that are not multiples of 8 with padded (8-aligned) strides.
    out.push_back({"d100_bf16_none_a8_" + a,
                   makeSpec(100, 100, DType::BF16, MaskMode::None, 8),
                   std::nullopt, arch});
    out.push_back({"d33_fp16_causal_a8_" + a,
                   makeSpec(33, 33, DType::F16, MaskMode::Causal, 8),
                   std::nullopt, arch});
    // Different Q/K and V head dims; GQA without LSE.
    out.push_back({"dqk192_dv128_bf16_causal_" + a,
                   makeSpec(192, 128, DType::BF16, MaskMode::Causal, 8),
                   std::nullopt, arch});
    out.push_back({"d64_bf16_gqa4_nolse_" + a,
                   makeSpec(64, 64, DType::BF16, MaskMode::None, 8, 4, false),
                   std::nullopt, arch});
    // Head dims off the tuned grid, at the alignment the runtime picks for
    // contiguous tensors (alignmentElems({d})): 50 -> 2, 129 -> 1, 216 -> 8.
    for (int d : {50, 129, 216})
      out.push_back({"d" + std::to_string(d) + "_bf16_none_" + a,
                     makeSpec(d, d, DType::BF16, MaskMode::None,
                              alignmentElems({d})),
                     std::nullopt, arch});
  }
  // The sm90 family with packed GQA groups of 8 and 2 at its defaults.
  for (auto [d, group, mask] : {std::tuple{128, 8, MaskMode::Causal},
                                std::tuple{64, 2, MaskMode::None},
                                std::tuple{256, 4, MaskMode::Causal}}) {
    const AttentionSpec spec = makeSpec(d, d, DType::BF16, mask, 8, group);
    TileConfig c = defaultTileConfig(spec, Arch::Sm90a, Family::Sm90);
    c.packGqa = true;
    out.push_back({"sm90_pack_gqa" + std::to_string(group) + "_d" +
                       std::to_string(d) + "_sm_90a",
                   spec, c, Arch::Sm90a});
  }
  return out;
}

void PrintTo(const ExtraCase &c, std::ostream *os) { *os << c.name; }

class PtxasOtherConfig : public ::testing::TestWithParam<ExtraCase> {};

TEST_P(PtxasOtherConfig, AssemblesWithoutSpills) {
  const ExtraCase &c = GetParam();
  const TileConfig config = c.config ? *c.config : defaultTileConfig(c.spec, c.arch);
  compileAndAssemble(c.spec, config, c.arch);
}

INSTANTIATE_TEST_SUITE_P(
    Forward, PtxasOtherConfig, ::testing::ValuesIn(extraCases()),
    [](const ::testing::TestParamInfo<ExtraCase> &info) {
      return info.param.name;
    });

// ---- the other targets of the sm_80 family
// ------------------------------------------------

/// The GPUs that run the sm_80 family from their own PTX target (Device.cpp's
/// table): each target's default config assembles without spills, full and
/// quick, for head dims at both ends and the middle of the range; sm_86,
/// sm_89 and sm_120 with their 99 KiB of shared memory per block.
std::vector<ExtraCase> familyTargetCases() {
  std::vector<ExtraCase> out;
  for (Arch arch :
       {Arch::Sm86, Arch::Sm87, Arch::Sm89, Arch::Sm100, Arch::Sm120}) {
    const std::string a(toString(arch));
    for (int d : {64, 128, 256})
      for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
        out.push_back({"d" + std::to_string(d) + "_bf16_" +
                           std::string(toString(mask)) + "_" + a,
                       makeSpec(d, d, DType::BF16, mask, 8), std::nullopt,
                       arch});
  }
  return out;
}

class PtxasFamilyTarget : public ::testing::TestWithParam<ExtraCase> {};

TEST_P(PtxasFamilyTarget, AssemblesWithoutSpills) {
  const ExtraCase &c = GetParam();
  TileConfig config = defaultTileConfig(c.spec, c.arch);
  compileAndAssemble(c.spec, config, c.arch);
  config.quick = true;
  compileAndAssemble(c.spec, config, c.arch);
}

INSTANTIATE_TEST_SUITE_P(Forward, PtxasFamilyTarget,
                         ::testing::ValuesIn(familyTargetCases()),
                         [](const ::testing::TestParamInfo<ExtraCase> &info) {
                           return info.param.name;
                         });

// ---- the forward features at the default config -------------------------------------------

struct FeatureSpec {
  const char *name;
  void (*apply)(AttentionSpec &);
};

/// Each feature on its own, and all together: window masks, bias tensors,
/// ALiBi, softcap, varlen with key lengths, packed GQA (via the default
/// config of a group of 4) and head_dim_v != head_dim_qk.
constexpr FeatureSpec kFeatures[] = {
    {"window", [](AttentionSpec &s) { s.mask = MaskMode::Window; }},
    {"bias", [](AttentionSpec &s) { s.bias = BiasMode::Tensor; }},
    {"alibi_causal",
     [](AttentionSpec &s) {
       s.bias = BiasMode::Alibi;
       s.mask = MaskMode::Causal;
     }},
    {"softcap", [](AttentionSpec &s) { s.softcap = true; }},
    {"varlen_klen",
     [](AttentionSpec &s) {
       s.varlen = true;
       s.keyLengths = true;
       s.mask = MaskMode::Causal;
     }},
    {"gqa4", [](AttentionSpec &s) { s.gqaGroup = 4; }},
    {"everything",
     [](AttentionSpec &s) {
       s.mask = MaskMode::Window;
       s.bias = BiasMode::Tensor;
       s.softcap = true;
       s.varlen = true;
       s.keyLengths = true;
       s.gqaGroup = 8;
     }},
};

struct FeatureGridCase {
  int headDim;
  int feature; ///< index into kFeatures
  Arch arch;
  DType dtype;
  /// The sm90 family forced with rows 8 bytes aligned (align 4): its
  /// producer warpgroup copies them by cp.async (TMA cannot address them).
  bool copies = false;
};

std::vector<FeatureGridCase> featureGridCases() {
  std::vector<FeatureGridCase> out;
  int i = 0;
  for (int d : {1, 33, 64, 80, 100, 128, 192, 256})
    for (int f = 0; f < int(std::size(kFeatures)); ++f) {
      for (Arch arch : {Arch::Sm80, Arch::Sm90a})
        out.push_back({d, f, arch, i++ % 2 ? DType::F16 : DType::BF16});
      if (d % 4 == 0)
        out.push_back(
            {d, f, Arch::Sm90a, i++ % 2 ? DType::F16 : DType::BF16, true});
    }
  return out;
}

void PrintTo(const FeatureGridCase &c, std::ostream *os) {
  *os << kFeatures[c.feature].name << " head_dim=" << c.headDim << " "
      << toString(c.dtype) << " " << toString(c.arch)
      << (c.copies ? " copies" : "");
}

class PtxasFeature : public ::testing::TestWithParam<FeatureGridCase> {};

TEST_P(PtxasFeature, AssemblesWithoutSpills) {
  const FeatureGridCase &c = GetParam();
  AttentionSpec spec =
      makeSpec(c.headDim, c.headDim, c.dtype, MaskMode::None,
               c.copies ? 4 : alignmentElems({c.headDim}));
  kFeatures[c.feature].apply(spec);
  compileAndAssemble(spec,
                     c.copies ? defaultTileConfig(spec, c.arch, Family::Sm90)
                              : defaultTileConfig(spec, c.arch),
                     c.arch);
}

INSTANTIATE_TEST_SUITE_P(
    Forward, PtxasFeature, ::testing::ValuesIn(featureGridCases()),
    [](const ::testing::TestParamInfo<FeatureGridCase> &info) {
      const FeatureGridCase &c = info.param;
      return std::string(kFeatures[c.feature].name) + "_d" +
             std::to_string(c.headDim) + "_" + std::string(toString(c.dtype)) +
             "_" + std::string(toString(c.arch)) +
             (c.copies ? "_copies" : "");
    });

// ---- decode: paged caches and split-KV at the decode tiles ---------------------------

struct DecodeCase {
  std::string name;
  AttentionSpec spec;
  int64_t tileRows; ///< seqlen_q x GQA group
  Arch arch;
  /// The table has no config (4-byte copies past d = 128): the runtime
  /// plans the default one.
  bool tableless = false;
};

/// The decode table's configs for paged and split specs (the module then
/// holds the combine and append kernels too: ptxas sees all three).
std::vector<DecodeCase> decodeCases() {
  std::vector<DecodeCase> out;
  for (Arch arch : {Arch::Sm80, Arch::Sm90a})
    for (int d : {1, 33, 64, 80, 128, 160, 192, 256})
      for (int variant = 0; variant < 3; ++variant) {
        AttentionSpec s = makeSpec(d, d, variant == 1 ? DType::F16 : DType::BF16,
                                   MaskMode::None, alignmentElems({d}),
                                   variant == 2 ? 1 : 8);
        s.keyLengths = true;
        s.pagedKV = variant != 1;
        s.splitKV = variant != 2;
        if (variant == 2) { // prefill over a cached prefix
          s.mask = MaskMode::Causal;
          s.varlen = true;
        }
        if (variant == 1) { // split with the score features, contiguous
          s.mask = MaskMode::Window;
          s.softcap = true;
          s.bias = BiasMode::Alibi;
        }
        const char *names[] = {"paged_split_gqa8", "split_window_softcap_alibi",
                               "paged_causal_varlen"};
        out.push_back({std::string(names[variant]) + "_d" + std::to_string(d) +
                           "_" + std::string(toString(arch)),
                       s, variant == 2 ? 16 : 8, arch});
      }
  // Dv != Dqk.
  AttentionSpec dv = makeSpec(192, 128, DType::BF16, MaskMode::None, 8, 4);
  dv.keyLengths = dv.pagedKV = dv.splitKV = true;
  out.push_back({"paged_split_dv128_dqk192_sm_80", dv, 4, Arch::Sm80});
  // Decode-like problems without a split or a paged cache take the table
  // too (a few query rows, e.g. the feature matrix's one-row problems):
  // every score feature, the heads' natural alignment and 4-byte copies.
  for (Arch arch : {Arch::Sm80, Arch::Sm90a})
    for (int d : {1, 33, 64, 80, 100, 127, 128, 160, 192, 255, 256})
      for (int variant = 0; variant < 4; ++variant) {
        if (variant == 3 && d % 2 != 0) // 4-byte copies of even heads
          continue;
        const int align = variant == 3 ? 2 : alignmentElems({d});
        AttentionSpec s = makeSpec(d, d, variant == 1 ? DType::F16 : DType::BF16,
                                   variant == 0 ? MaskMode::Window : MaskMode::None,
                                   align, variant == 2 ? 4 : 1);
        if (variant == 1)
          s.bias = BiasMode::Tensor;
        if (variant == 2)
          s.bias = BiasMode::Alibi, s.softcap = true;
        const char *names[] = {"window", "bias_tensor_fp16", "alibi_softcap_gqa4",
                               "align2"};
        out.push_back({std::string("rows_") + names[variant] + "_d" +
                           std::to_string(d) + "_" +
                           std::string(toString(arch)),
                       s, variant == 2 ? 4 : 1, arch, variant == 3 && d > 128});
      }
  // Up to 64 rows (four warps): a short prefill, split.
  for (int d : {100, 256}) {
    AttentionSpec rows = makeSpec(d, d, DType::BF16, MaskMode::Causal,
                                  alignmentElems({d}), 4);
    rows.splitKV = true;
    out.push_back({"split_causal_rows33_d" + std::to_string(d) + "_sm_90a",
                   rows, 33, Arch::Sm90a});
    out.push_back({"split_causal_rows64_d" + std::to_string(d) + "_sm_90a",
                   rows, 64, Arch::Sm90a});
  }
  return out;
}

class PtxasDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(PtxasDecode, AssemblesWithoutSpills) {
  const DecodeCase &c = GetParam();
  auto config = decodeTileConfig(c.spec, c.arch, c.tileRows);
  ASSERT_EQ(config.has_value(), !c.tableless) << c.name;
  compileAndAssemble(c.spec, config ? *config : defaultTileConfig(c.spec, c.arch),
                     c.arch);
}

INSTANTIATE_TEST_SUITE_P(Decode, PtxasDecode,
                         ::testing::ValuesIn(decodeCases()),
                         [](const ::testing::TestParamInfo<DecodeCase> &info) {
                           return info.param.name;
                         });

// ---- sm90 variants: overlap and pingpong -------------------------------------------------

/// Intra-warpgroup overlap builds a tile's P while the previous P V is in
/// flight: both P must keep their own registers, or ptxas serialises every
/// wgmma (C7513). The variants at the defaults' head dims, both masks, and
/// the longest tiles the register estimate admits with overlap
/// (FlashAttention-3's 176 keys at d = 128, 112 at d = 192).
TEST(PtxasSm90Variants, OverlapAndPingpongKeepWgmmaAsync) {
  struct Variant { int d; int warps; int blockN; bool pingpong; };
  for (const Variant &v : {Variant{64, 8, 128, false}, Variant{64, 8, 128, true},
                           Variant{128, 8, 128, true}, Variant{128, 8, 128, false},
                           Variant{128, 8, 176, true}, Variant{128, 8, 176, false},
                           Variant{192, 8, 112, true},
                           Variant{192, 8, 64, true}, Variant{256, 8, 80, false},
                           Variant{256, 4, 80, false}})
    for (MaskMode mask : {MaskMode::None, MaskMode::Causal}) {
      const AttentionSpec spec = makeSpec(v.d, v.d, DType::BF16, mask, 8, 1);
      TileConfig c = defaultTileConfig(spec, Arch::Sm90a, Family::Sm90);
      c.warps = v.warps, c.blockM = 16 * v.warps, c.blockN = v.blockN;
      c.pingpong = v.pingpong, c.overlap = true;
      ASSERT_TRUE(validate(c, spec, Arch::Sm90a)) << v.d << " " << v.blockN;
      compileAndAssemble(spec, c, Arch::Sm90a);
    }
}

// ---- opt-in: every head dim ------------------------------------------------------------

/// "all" or "1" -> 1..256; otherwise a list like "33,50,120-135".
std::vector<int> parseHeadDims(const std::string &text) {
  std::vector<int> dims;
  if (text == "all" || text == "1") {
    for (int d = kMinHeadDim; d <= kMaxHeadDim; ++d)
      dims.push_back(d);
    return dims;
  }
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty())
      continue;
    const size_t dash = item.find('-');
    const int lo = std::atoi(item.substr(0, dash).c_str());
    const int hi =
        dash == std::string::npos ? lo : std::atoi(item.substr(dash + 1).c_str());
    for (int d = std::max(lo, kMinHeadDim); d <= std::min(hi, kMaxHeadDim); ++d)
      dims.push_back(d);
  }
  return dims;
}

// Every head dim (bf16 and fp16, none and causal, sm_80 and sm_90a, the
// runtime's alignment, the default config): about 0.6 s a kernel, so only
// when asked for, e.g.
//   FLASHJIT_PTXAS_HEAD_DIMS=all  flashjit-ptxas-tests --gtest_filter='PtxasSweep.*'
//   FLASHJIT_PTXAS_HEAD_DIMS=33,120-135 ...
// One failure lists every kernel that spills or does not assemble.
TEST(PtxasSweep, DefaultConfigOfEveryHeadDim) {
  const char *env = std::getenv("FLASHJIT_PTXAS_HEAD_DIMS");
  if (!env || !*env)
    GTEST_SKIP() << "set FLASHJIT_PTXAS_HEAD_DIMS=all (or a list such as "
                    "33,120-135) to sweep head dims";
  std::string why;
  const std::string &ptxas = ptxasPath(why);
  ASSERT_FALSE(ptxas.empty()) << "ptxas not found: " << why;
  const std::vector<int> dims = parseHeadDims(env);
  ASSERT_FALSE(dims.empty()) << "no head dims in '" << env << "'";
  std::ostringstream bad;
  int kernels = 0, failures = 0;
  for (int d : dims)
    for (DType dtype : {DType::BF16, DType::F16})
      for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
        for (Arch arch : kRuntimeArchs) {
          AttentionSpec spec =
              makeSpec(d, d, dtype, mask, alignmentElems({d}));
          const TileConfig config = defaultTileConfig(spec, arch);
          Assembled a = assemble(ptxas, spec, config, arch);
          ++kernels;
          if (a.clean())
            continue;
          ++failures;
          bad << "  " << kernelName(spec, config, arch) << ": ";
          if (!a.failure.empty())
            bad << a.failure;
          else
            bad << a.localMemory();
          bad << "\n";
        }
  EXPECT_EQ(failures, 0) << failures << " of " << kernels
                         << " kernels spill or fail:\n"
                         << bad.str();
}

TEST(PtxasGrid, CoversTheRequestedMatrix) {
  // sm80: 13 head dims x 2 masks x (2 dtypes x 4 archs + 3 later targets),
  // full and quick, and the sm90 family on sm_90a for all 13 (100 copied by
  // cp.async, 1 and 33 in padded rows); the 15 head dims that spilled before, one dtype,
  // both masks, all 7 archs likewise.
  EXPECT_EQ(gridCases().size(),
            13u * 2 * (2 * 4 + 3) * 2 + 13u * 2 * 2 + 15u * 2 * 7 * 2 + 15u * 2);
}

} // namespace
