// Session 10 probe: does the driver JIT take a fast-compile option, and what
// does each JIT option cost in time and registers? Prints one line per run.
#include <cuda.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include <functional>

static void ck(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS) { const char *s; cuGetErrorString(r, &s); printf("  %s: %s\n", what, s); }
}

int main(int argc, char **argv) {
  ck(cuInit(0), "init"); CUdevice dev; cuDeviceGet(&dev, 0); CUcontext ctx; cuDevicePrimaryCtxRetain(&ctx, dev); cuCtxSetCurrent(ctx);
  {
    // The process's first JIT loads the driver's compiler library.
    const char *tiny = ".version 8.0\n.target sm_90a\n.address_size 64\n.visible .entry t() { ret; }\n";
    for (int r = 0; r < 2; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      CUlinkState st; ck(cuLinkCreate(0, nullptr, nullptr, &st), "linkCreate");
      ck(cuLinkAddData(st, CU_JIT_INPUT_PTX, (void *)tiny, strlen(tiny) + 1, "t", 0, nullptr, nullptr), "addData");
      void *cubin; size_t n; ck(cuLinkComplete(st, &cubin, &n), "complete"); cuLinkDestroy(st);
      printf("tiny kernel JIT #%d: %.1f ms\n", r, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  for (int a = 1; a < argc; ++a) {
    std::ifstream f(argv[a]); std::stringstream ss; ss << f.rdbuf(); std::string ptx = ss.str();
    std::string name = ptx.substr(ptx.find(".entry ") + 7); name = name.substr(0, name.find('('));
    struct Opt { const char *label; std::vector<CUjit_option> o; std::vector<long> v; };
    std::vector<Opt> opts = {
      {"default", {}, {}},
      {"FAST_COMPILE=1", {CU_JIT_FAST_COMPILE}, {1}},
      {"OPT=3", {CU_JIT_OPTIMIZATION_LEVEL}, {3}},
      {"OPT=2", {CU_JIT_OPTIMIZATION_LEVEL}, {2}},
      {"OPT=1", {CU_JIT_OPTIMIZATION_LEVEL}, {1}},
    };
    for (auto &op : opts) {
      double best = 1e9; int regs = -1; size_t bytes = 0; unsigned long long sum = 0;
      for (int r = 0; r < 3; ++r) {
        std::vector<void *> vals; for (long v : op.v) vals.push_back((void *)v);
        auto t0 = std::chrono::steady_clock::now();
        CUlinkState st; ck(cuLinkCreate(op.o.size(), op.o.data(), vals.data(), &st), "linkCreate");
        ck(cuLinkAddData(st, CU_JIT_INPUT_PTX, (void *)ptx.c_str(), ptx.size() + 1, "k", 0, nullptr, nullptr), "addData");
        void *cubin; size_t n; CUresult rc = cuLinkComplete(st, &cubin, &n); ck(rc, "complete");
        auto t1 = std::chrono::steady_clock::now();
        best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (rc == CUDA_SUCCESS) {
          bytes = n; sum = 0; for (size_t i = 0; i < n; ++i) sum = sum * 1099511628211ull + ((unsigned char *)cubin)[i];
          CUmodule m; ck(cuModuleLoadData(&m, cubin), "load"); CUfunction fn; ck(cuModuleGetFunction(&fn, m, name.c_str()), "getfn");
          cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn); cuModuleUnload(m);
        }
        cuLinkDestroy(st);
      }
      printf("%-16s %-16s %8.1f ms  regs %3d  cubin %7zu bytes  fnv %016llx\n", argv[a], op.label, best, regs, bytes, sum);
      fflush(stdout);
    }
  }
}
