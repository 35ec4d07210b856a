//===- Assembler.cpp - ptxas, nvJitLink through dlopen, or the driver's JIT ===//
#include "Assembler.h"

#include "Module.h"

#include "flashjit/runtime/Device.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <spawn.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace flashjit::driver {

// nvJitLink's C API (nvJitLink.h), declared here so that building needs no
// CUDA toolkit; the library itself is optional at run time.
using NvJitLinkHandle = void *;
struct NvJitLinkApi {
  int (*create)(NvJitLinkHandle *, uint32_t, const char **) = nullptr;
  int (*destroy)(NvJitLinkHandle *) = nullptr;
  int (*addData)(NvJitLinkHandle, int, const void *, size_t, const char *) = nullptr;
  int (*complete)(NvJitLinkHandle) = nullptr;
  int (*cubinSize)(NvJitLinkHandle, size_t *) = nullptr;
  int (*cubin)(NvJitLinkHandle, void *) = nullptr;
  int (*errorLogSize)(NvJitLinkHandle, size_t *) = nullptr;
  int (*errorLog)(NvJitLinkHandle, char *) = nullptr;
  int (*version)(unsigned *, unsigned *) = nullptr;
};

namespace {
using Handle = NvJitLinkHandle;
constexpr int kInputPtx = 2; // NVJITLINK_INPUT_PTX (CUBIN is 1)
using NvJitLink = NvJitLinkApi;

/// Resolves every entry point of `lib`, or says which is missing.
std::string resolve(void *lib, NvJitLink &n) {
  auto sym = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
        dlsym(lib, name));
    return fn != nullptr;
  };
  if (!sym(n.create, "nvJitLinkCreate") || !sym(n.destroy, "nvJitLinkDestroy") ||
      !sym(n.addData, "nvJitLinkAddData") ||
      !sym(n.complete, "nvJitLinkComplete") ||
      !sym(n.cubinSize, "nvJitLinkGetLinkedCubinSize") ||
      !sym(n.cubin, "nvJitLinkGetLinkedCubin") ||
      !sym(n.errorLogSize, "nvJitLinkGetErrorLogSize") ||
      !sym(n.errorLog, "nvJitLinkGetErrorLog") ||
      !sym(n.version, "nvJitLinkVersion"))
    return "lacks an nvJitLink entry point";
  return "";
}

} // namespace

namespace {
// ---- the ptxas binary ---------------------------------------------------------
/// A scratch directory for one ptxas run, removed with its files.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    const char *tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp && *tmp ? tmp : "/tmp") + "/flashjit-ptxas-XXXXXX";
    if (mkdtemp(pattern.data()))
      path = pattern;
  }
  std::string file(const char *name) const { return path + "/" + name; }
  ~ScratchDir() {
    if (path.empty())
      return;
    for (const char *name : {"kernel.ptx", "kernel.cubin", "log.txt"})
      ::unlink(file(name).c_str());
    ::rmdir(path.c_str());
  }
};

/// Runs `argv` (argv[0] a path, no shell) with stdout and stderr into
/// `logPath`; its exit status, or -1 when it could not run.
int runTool(const std::vector<std::string> &argv, const std::string &logPath) {
  std::vector<char *> args;
  for (const std::string &a : argv)
    args.push_back(const_cast<char *>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, logPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int spawned =
      posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// `ptxas --version`'s release as cuDriverGetVersion counts (13.0 ->
/// 13000), or 0 when `path` is no ptxas that runs.
int ptxasVersion(const std::string &path) {
  if (::access(path.c_str(), X_OK) != 0)
    return 0;
  ScratchDir dir;
  if (dir.path.empty() || runTool({path, "--version"}, dir.file("log.txt")) != 0)
    return 0;
  const std::string log = readFile(dir.file("log.txt"));
  int major = 0, minor = 0;
  const size_t at = log.find("release ");
  if (at == std::string::npos ||
      std::sscanf(log.c_str() + at, "release %d.%d", &major, &minor) != 2)
    return 0;
  return major * 1000 + minor * 10;
}

/// Whole-program assembly by the ptxas binary: the PTX and the cubin go
/// through a scratch directory.
Expected<std::string> assembleWithPtxas(const std::string &ptxas,
                                        const std::string &ptx,
                                        const std::string &name, Arch arch,
                                        int optLevel) {
  ScratchDir dir;
  if (dir.path.empty())
    return Status::error("ptxas for " + name +
                         ": no scratch directory (set TMPDIR)");
  {
    std::ofstream out(dir.file("kernel.ptx"), std::ios::binary);
    out << ptx;
    if (!out)
      return Status::error("ptxas for " + name + ": cannot write " +
                           dir.file("kernel.ptx"));
  }
  const int rc = runTool({ptxas, "-arch=" + std::string(toString(arch)),
                          "-O" + std::to_string(optLevel),
                          dir.file("kernel.ptx"), "-o", dir.file("kernel.cubin")},
                         dir.file("log.txt"));
  if (rc != 0)
    return Status::error(ptxas + " for " + name + " failed (" +
                         (rc < 0 ? std::string("did not run")
                                 : "exit " + std::to_string(rc)) +
                         ")\n" + readFile(dir.file("log.txt")));
  std::string cubin = readFile(dir.file("kernel.cubin"));
  if (cubin.empty())
    return Status::error(ptxas + " for " + name + " wrote no cubin");
  return cubin;
}

/// The first usable ptxas, or why none is (appended to `tried`).
std::optional<Assembler> findPtxas(int driverVersion, std::string &tried) {
  struct Candidate {
    std::string path;
    bool onPath = false; ///< a PATH directory's: its misses go unnamed
  };
  std::vector<Candidate> candidates;
  if (const char *path = std::getenv("FLASHJIT_PTXAS"); path && *path)
    candidates = {{path}};
  else {
    if (const char *home = std::getenv("CUDA_HOME"); home && *home)
      candidates.push_back({std::string(home) + "/bin/ptxas"});
    candidates.push_back({"/usr/local/cuda/bin/ptxas"});
    if (const char *path = std::getenv("PATH")) {
      std::istringstream dirs(path);
      for (std::string dir; std::getline(dirs, dir, ':');)
        if (!dir.empty() && dir != "/usr/local/cuda/bin")
          candidates.push_back({dir + "/ptxas", true});
    }
    // Last, one that a package ships (the flashjit Python package names
    // Triton's, for where no toolkit is installed beside torch).
    if (const char *bundled = std::getenv("FLASHJIT_BUNDLED_PTXAS");
        bundled && *bundled)
      candidates.push_back({bundled});
  }
  bool pathMissed = false;
  auto note = [&](const std::string &text) {
    tried += (tried.empty() ? "" : ", ") + text;
  };
  for (const Candidate &c : candidates) {
    const int version = ptxasVersion(c.path);
    const std::string name = "ptxas " + std::to_string(version / 1000) + "." +
                             std::to_string(version % 1000 / 10);
    if (version == 0 && c.onPath)
      pathMissed = true;
    else if (version == 0)
      note(c.path + " (not found)");
    else if (version > driverVersion)
      note(c.path + " (" + name + ", newer than the driver)");
    else
      return Assembler{name, "", true, c.path, nullptr};
  }
  if (pathMissed)
    note("ptxas on PATH (not found)");
  return std::nullopt;
}

/// The first usable libnvJitLink, or why none is (appended to `tried`).
std::optional<Assembler> findNvJitLink(int driverVersion, std::string &tried) {
  std::vector<std::string> candidates;
  if (const char *path = std::getenv("FLASHJIT_NVJITLINK"); path && *path)
    candidates = {path};
  else {
    candidates = {"libnvJitLink.so.13", "libnvJitLink.so.12"};
    if (const char *home = std::getenv("CUDA_HOME"); home && *home)
      candidates.push_back(std::string(home) + "/lib64/libnvJitLink.so");
    candidates.push_back("/usr/local/cuda/lib64/libnvJitLink.so");
  }
  // A library once opened is never closed: nvJitLink allocates at load time
  // and unloading it would leak that (LeakSanitizer sees it) for nothing.
  for (const std::string &path : candidates) {
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      tried += (tried.empty() ? "" : ", ") + path + " (not found)";
      continue;
    }
    NvJitLink n;
    if (std::string missing = resolve(lib, n); !missing.empty()) {
      tried += (tried.empty() ? "" : ", ") + path + " (" + missing + ")";
      continue;
    }
    unsigned major = 0, minor = 0;
    n.version(&major, &minor);
    const int libraryVersion = int(major) * 1000 + int(minor) * 10;
    const std::string name = "nvJitLink " + std::to_string(major) + "." +
                             std::to_string(minor);
    if (libraryVersion > driverVersion) {
      tried += (tried.empty() ? "" : ", ") + path + " (" + name +
               ", newer than the driver)";
      continue;
    }
    // The library stays loaded for the process.
    return Assembler{name, "", true, "",
                     std::make_shared<const NvJitLinkApi>(n)};
  }
  return std::nullopt;
}

} // namespace

Assembler chooseAssembler(int driverVersion) {
  Assembler c;
  c.name = "driver JIT";
  const char *forced = std::getenv("FLASHJIT_ASSEMBLER");
  const std::string force = forced ? forced : "";
  if (force == "driver") {
    c.why = "FLASHJIT_ASSEMBLER=driver";
    return c;
  }
  std::string tried;
  if (force != "nvjitlink")
    if (auto p = findPtxas(driverVersion, tried))
      return *p;
  if (force != "ptxas")
    if (auto n = findNvJitLink(driverVersion, tried))
      return *n;
  c.why = "no usable ptxas or libnvJitLink: " + tried;
  return c;
}

const Assembler &assembler(int driverVersion) {
  static const Assembler a = chooseAssembler(driverVersion);
  return a;
}

namespace {

Expected<std::string> assembleWithNvJitLink(const NvJitLink &n,
                                            const std::string &ptx,
                                            const std::string &name, Arch arch,
                                            int optLevel) {
  const std::string archOption = "-arch=" + std::string(toString(arch));
  const std::string optOption = "-Xptxas=-O" + std::to_string(optLevel);
  const char *options[] = {archOption.c_str(), optOption.c_str()};
  Handle h = nullptr;
  if (int r = n.create(&h, 2, options); r != 0)
    return Status::error("nvJitLinkCreate for " + name + " failed (" +
                         std::to_string(r) + ")");
  auto fail = [&](const char *what, int r) {
    std::string message = std::string(what) + " for " + name + " failed (" +
                          std::to_string(r) + ")";
    size_t size = 0;
    if (n.errorLogSize(h, &size) == 0 && size > 1) {
      std::string log(size, '\0');
      if (n.errorLog(h, log.data()) == 0)
        message += "\n" + std::string(log.c_str());
    }
    n.destroy(&h);
    return Status::error(message);
  };
  // The size excludes the terminating NUL: nvJitLink takes the bytes.
  if (int r = n.addData(h, kInputPtx, ptx.data(), ptx.size(), name.c_str());
      r != 0)
    return fail("nvJitLinkAddData", r);
  if (int r = n.complete(h); r != 0)
    return fail("nvJitLinkComplete", r);
  size_t size = 0;
  if (int r = n.cubinSize(h, &size); r != 0)
    return fail("nvJitLinkGetLinkedCubinSize", r);
  std::string cubin(size, '\0');
  if (int r = n.cubin(h, cubin.data()); r != 0)
    return fail("nvJitLinkGetLinkedCubin", r);
  n.destroy(&h);
  return cubin;
}
} // namespace

Expected<std::string> assembleWithToolkit(const Assembler &a,
                                          const std::string &ptx,
                                          const std::string &name, Arch arch,
                                          int optLevel) {
  if (!a.ptxas.empty())
    return assembleWithPtxas(a.ptxas, ptx, name, arch, optLevel);
  if (!a.toolkit || !a.nvJitLink)
    return Status::error("no ptxas or nvJitLink to assemble " + name + ": " +
                         a.why);
  return assembleWithNvJitLink(*a.nvJitLink, ptx, name, arch, optLevel);
}

Expected<std::string> assemble(const Api &cu, int driverVersion,
                               const std::string &ptx, const std::string &name,
                               Arch arch, int optLevel) {
  const Assembler &a = assembler(driverVersion);
  if (a.toolkit)
    return assembleWithToolkit(a, ptx, name, arch, optLevel);
  return linkPtx(cu, ptx, name, optLevel);
}

} // namespace flashjit::driver

std::string flashjit::assemblerDescription(int driverVersion) {
  const driver::Assembler a = driver::chooseAssembler(driverVersion);
  return a.why.empty() ? a.name : a.name + " (" + a.why + ")";
}
