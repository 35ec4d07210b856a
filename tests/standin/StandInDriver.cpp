//===- StandInDriver.cpp - A libcuda.so.1 that accepts every call ---------===//
//
// Built as libcuda.so.1 in its own directory. A test puts that directory on
// LD_LIBRARY_PATH and the runtime's dlopen finds it instead of a driver, so
// that CI reaches the launch path (device query, PTX link, module load,
// launch, memory, events) without a GPU. It reports one compute capability
// 9.0 device, keeps "device memory" in host memory (copies and fills work;
// kernels do not run), and records each launch for the tests
// (flashjit_standin_*). The runtime calls it from several threads: its
// state is behind one mutex.
//
//===----------------------------------------------------------------------===//
#include <cuda.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {
constexpr int kComputeMajor = 9, kComputeMinor = 0;
constexpr int kSmCount = 132;
constexpr int kSharedOptin = 232448; // 227 KiB, as an H100/H200
constexpr int kL2Bytes = 50 << 20;
constexpr size_t kTotalMemBytes = size_t(80) << 30;
constexpr int kDriverVersion = 12080;
constexpr const char *kDeviceName = "flashjit stand-in driver (no GPU)";

struct Launch {
  std::string kernel;
  unsigned grid[3], block[3], sharedBytes;
};

/// One cuTensorMapEncodeTiled call: rank, then dims, strides, box.
struct TensorMapCall {
  unsigned rank = 0;
  cuuint64_t dims[5] = {}, strides[4] = {};
  cuuint32_t box[5] = {};
};

struct State {
  std::mutex mutex;
  std::map<uintptr_t, size_t> allocations; ///< host memory posing as device
  std::map<uintptr_t, std::string> functions; ///< handle -> kernel name
  uintptr_t nextHandle = 0x1000;
  long launches = 0;
  Launch last{};
  std::string linked; ///< the last cuLinkComplete's "cubin"
  std::vector<TensorMapCall> tensorMaps; ///< every encoded map, in order
};
State &state() {
  static State s;
  return s;
}
thread_local CUcontext tCurrent = nullptr;
int gPrimaryContext; // its address is the one context

template <typename Handle> Handle newHandle() {
  State &s = state();
  std::lock_guard<std::mutex> guard(s.mutex);
  s.nextHandle += 16;
  return reinterpret_cast<Handle>(s.nextHandle);
}
} // namespace

extern "C" {

// ---- for tests (dlsym'd from the loaded library) ----------------------------
long flashjit_standin_launches() {
  std::lock_guard<std::mutex> guard(state().mutex);
  return state().launches;
}
/// The last launch: grid x/y/z, block x/y/z, dynamic shared bytes; returns
/// its kernel's name (valid until the next launch).
const char *flashjit_standin_last_launch(unsigned out[7]) {
  std::lock_guard<std::mutex> guard(state().mutex);
  const Launch &l = state().last;
  for (int i = 0; i < 3; ++i) {
    out[i] = l.grid[i];
    out[3 + i] = l.block[i];
  }
  out[6] = l.sharedBytes;
  return l.kernel.c_str();
}

/// Tensor maps encoded so far.
long flashjit_standin_tensor_maps() {
  std::lock_guard<std::mutex> guard(state().mutex);
  return long(state().tensorMaps.size());
}
/// Map `i` (in the order encoded): out[0..4] its dimensions, out[5..8] its
/// byte strides, out[9..13] its box (unused entries 0); returns its rank,
/// 0 where there is no map `i`.
unsigned flashjit_standin_tensor_map(long i, unsigned long long out[14]) {
  std::lock_guard<std::mutex> guard(state().mutex);
  const auto &maps = state().tensorMaps;
  if (i < 0 || i >= long(maps.size()))
    return 0;
  const TensorMapCall &m = maps[size_t(i)];
  for (int j = 0; j < 5; ++j) {
    out[j] = m.dims[j];
    out[9 + j] = m.box[j];
  }
  for (int j = 0; j < 4; ++j)
    out[5 + j] = m.strides[j];
  return m.rank;
}

// ---- errors, init, version, device -----------------------------------------
CUresult CUDAAPI cuGetErrorName(CUresult error, const char **pStr) {
  switch (error) {
  case CUDA_SUCCESS:
    *pStr = "CUDA_SUCCESS";
    break;
  case CUDA_ERROR_OUT_OF_MEMORY:
    *pStr = "CUDA_ERROR_OUT_OF_MEMORY";
    break;
  case CUDA_ERROR_INVALID_VALUE:
    *pStr = "CUDA_ERROR_INVALID_VALUE";
    break;
  default:
    *pStr = "CUDA_ERROR_STAND_IN";
  }
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuGetErrorString(CUresult error, const char **pStr) {
  *pStr = "reported by the flashjit stand-in driver";
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuDriverGetVersion(int *version) {
  *version = kDriverVersion;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDeviceGetCount(int *count) {
  *count = 1;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDeviceGet(CUdevice *device, int ordinal) {
  if (ordinal != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice) {
  std::strncpy(name, kDeviceName, size_t(len));
  if (len > 0)
    name[len - 1] = '\0';
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib,
                                      CUdevice) {
  switch (attrib) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
    *pi = kComputeMajor;
    break;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
    *pi = kComputeMinor;
    break;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
    *pi = kSmCount;
    break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
    *pi = kSharedOptin;
    break;
  case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE:
    *pi = kL2Bytes;
    break;
  default:
    *pi = 0;
  }
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDeviceTotalMem_v2(size_t *bytes, CUdevice) {
  *bytes = kTotalMemBytes;
  return CUDA_SUCCESS;
}

// ---- contexts -----------------------------------------------------------------
CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice) {
  *pctx = reinterpret_cast<CUcontext>(&gPrimaryContext);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx) {
  tCurrent = ctx;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxGetCurrent(CUcontext *pctx) {
  *pctx = tCurrent;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxGetDevice(CUdevice *device) {
  if (!tCurrent)
    return CUDA_ERROR_INVALID_CONTEXT;
  *device = 0;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuCtxSynchronize() { return CUDA_SUCCESS; }

// ---- modules and the JIT ------------------------------------------------------
CUresult CUDAAPI cuLinkCreate_v2(unsigned int, CUjit_option *, void **,
                                 CUlinkState *stateOut) {
  *stateOut = newHandle<CUlinkState>();
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuLinkAddData_v2(CUlinkState, CUjitInputType, void *data,
                                  size_t size, const char *, unsigned int,
                                  CUjit_option *, void **) {
  // The "cubin" is a tag plus the PTX: distinct per kernel, as the real one.
  std::lock_guard<std::mutex> guard(state().mutex);
  state().linked = "flashjit-stand-in-cubin\n" +
                   std::string(static_cast<const char *>(data),
                               size > 0 ? size - 1 : 0);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuLinkComplete(CUlinkState, void **cubinOut, size_t *sizeOut) {
  // Each link state's result lives until cuLinkDestroy; the runtime copies
  // it at once, so one buffer per thread suffices.
  thread_local std::string result;
  {
    std::lock_guard<std::mutex> guard(state().mutex);
    result = state().linked;
  }
  *cubinOut = result.data();
  *sizeOut = result.size();
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuLinkDestroy(CUlinkState) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuModuleLoadData(CUmodule *module, const void *) {
  *module = newHandle<CUmodule>();
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuModuleLoadDataEx(CUmodule *module, const void *image,
                                    unsigned int, CUjit_option *, void **) {
  return cuModuleLoadData(module, image);
}
CUresult CUDAAPI cuModuleUnload(CUmodule) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuModuleGetFunction(CUfunction *hfunc, CUmodule,
                                     const char *name) {
  *hfunc = newHandle<CUfunction>();
  std::lock_guard<std::mutex> guard(state().mutex);
  state().functions[reinterpret_cast<uintptr_t>(*hfunc)] = name;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) {
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuFuncGetAttribute(int *pi, CUfunction_attribute attrib,
                                    CUfunction) {
  switch (attrib) {
  case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
    *pi = 1024;
    break;
  case CU_FUNC_ATTRIBUTE_NUM_REGS:
    *pi = 64;
    break;
  default:
    *pi = 0;
  }
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int gridDimX,
                                unsigned int gridDimY, unsigned int gridDimZ,
                                unsigned int blockDimX, unsigned int blockDimY,
                                unsigned int blockDimZ,
                                unsigned int sharedMemBytes, CUstream, void **,
                                void **) {
  State &s = state();
  std::lock_guard<std::mutex> guard(s.mutex);
  ++s.launches;
  s.last = {s.functions[reinterpret_cast<uintptr_t>(f)],
            {gridDimX, gridDimY, gridDimZ},
            {blockDimX, blockDimY, blockDimZ},
            sharedMemBytes};
  return CUDA_SUCCESS;
}

// ---- memory -------------------------------------------------------------------
CUresult CUDAAPI cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
  if (bytes == 0 || bytes > kTotalMemBytes)
    return CUDA_ERROR_OUT_OF_MEMORY;
  void *p = std::malloc(bytes);
  if (!p)
    return CUDA_ERROR_OUT_OF_MEMORY;
  std::lock_guard<std::mutex> guard(state().mutex);
  state().allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  *dptr = reinterpret_cast<CUdeviceptr>(p);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemFree_v2(CUdeviceptr dptr) {
  std::lock_guard<std::mutex> guard(state().mutex);
  auto it = state().allocations.find(uintptr_t(dptr));
  if (it == state().allocations.end())
    return CUDA_ERROR_INVALID_VALUE;
  std::free(reinterpret_cast<void *>(dptr));
  state().allocations.erase(it);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src,
                                 size_t bytes) {
  std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes) {
  std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
  std::memset(reinterpret_cast<void *>(dst), value, n);
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemsetD16Async(CUdeviceptr dst, unsigned short value,
                                  size_t n, CUstream) {
  auto *p = reinterpret_cast<unsigned short *>(dst);
  for (size_t i = 0; i < n; ++i)
    p[i] = value;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr dst, unsigned int value,
                                  size_t n, CUstream) {
  auto *p = reinterpret_cast<unsigned int *>(dst);
  for (size_t i = 0; i < n; ++i)
    p[i] = value;
  return CUDA_SUCCESS;
}

// ---- TMA tensor maps ------------------------------------------------------------
// Checked as the driver documents it, so that a map the runtime encodes
// wrongly fails here too; the map itself is never read.
CUresult CUDAAPI cuTensorMapEncodeTiled(
    CUtensorMap *tensorMap, CUtensorMapDataType dataType, cuuint32_t rank,
    void *globalAddress, const cuuint64_t *globalDim,
    const cuuint64_t *globalStrides, const cuuint32_t *boxDim,
    const cuuint32_t *elementStrides, CUtensorMapInterleave,
    CUtensorMapSwizzle swizzle, CUtensorMapL2promotion,
    CUtensorMapFloatOOBfill) {
  const unsigned elementBytes =
      dataType == CU_TENSOR_MAP_DATA_TYPE_FLOAT16 ||
              dataType == CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
          ? 2
          : 4;
  if (!tensorMap || rank < 1 || rank > 5 ||
      reinterpret_cast<uintptr_t>(globalAddress) % 16 != 0)
    return CUDA_ERROR_INVALID_VALUE;
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (globalDim[i] == 0 || globalDim[i] > (cuuint64_t(1) << 32) ||
        boxDim[i] == 0 || boxDim[i] > 256 || elementStrides[i] == 0 ||
        elementStrides[i] > 8)
      return CUDA_ERROR_INVALID_VALUE;
    if (i + 1 < rank &&
        (globalStrides[i] % 16 != 0 || globalStrides[i] >= (cuuint64_t(1) << 40)))
      return CUDA_ERROR_INVALID_VALUE;
  }
  if (swizzle == CU_TENSOR_MAP_SWIZZLE_128B && boxDim[0] * elementBytes > 128)
    return CUDA_ERROR_INVALID_VALUE;
  std::memset(tensorMap, 0, sizeof *tensorMap);
  TensorMapCall call;
  call.rank = rank;
  for (cuuint32_t i = 0; i < rank; ++i) {
    call.dims[i] = globalDim[i];
    call.box[i] = boxDim[i];
    if (i + 1 < rank)
      call.strides[i] = globalStrides[i];
  }
  std::lock_guard<std::mutex> guard(state().mutex);
  state().tensorMaps.push_back(call);
  return CUDA_SUCCESS;
}

// ---- events and streams (everything is done at once) ----------------------------
CUresult CUDAAPI cuEventCreate(CUevent *event, unsigned int) {
  *event = newHandle<CUevent>();
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuEventDestroy_v2(CUevent) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuEventElapsedTime_v2(float *ms, CUevent, CUevent) {
  *ms = 0.001f;
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamCreate(CUstream *stream, unsigned int) {
  *stream = newHandle<CUstream>();
  return CUDA_SUCCESS;
}
CUresult CUDAAPI cuStreamDestroy_v2(CUstream) { return CUDA_SUCCESS; }
CUresult CUDAAPI cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }

} // extern "C"
