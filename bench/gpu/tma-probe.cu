// tma-probe: one TMA load (cp.async.bulk.tensor.4d, bf16) of a tiled map per
// process, to learn which maps the hardware refuses (an illegal instruction
// stops the context). run-device.sh tma-probe builds it with nvcc and runs
// its list of maps. Usage: tma-probe d0 d1 d2 d3 s0 s1 s2 box0 box1 c0 c1
// [swizzle: 1 (128B, default) or 0]; strides in bytes.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstdint>

__global__ void load(const __grid_constant__ CUtensorMap map, int c0, int c1, int *ok) {
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ __align__(8) uint64_t bar;
  if (threadIdx.x == 0) {
    unsigned b = (unsigned)__cvta_generic_to_shared(&bar);
    unsigned d = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("mbarrier.init.shared.b64 [%0], 1;" ::"r"(b));
    asm volatile("fence.proxy.async.shared::cta;");
    asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(b), "r"(8192));
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];"
                 ::"r"(d), "l"(&map), "r"(c0), "r"(c1), "r"(0), "r"(0), "r"(b) : "memory");
    asm volatile("{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared.b64 p, [%0], 0;\n @!p bra W;\n}" ::"r"(b));
    *ok = 1;
  }
}

int main(int argc, char **argv) {
  if (argc < 12) { std::fprintf(stderr, "usage\n"); return 2; }
  cuuint64_t dims[4], strides[3];
  for (int i = 0; i < 4; ++i) dims[i] = strtoull(argv[1 + i], 0, 10);
  for (int i = 0; i < 3; ++i) strides[i] = strtoull(argv[5 + i], 0, 10);
  cuuint32_t box[4] = {(cuuint32_t)atoi(argv[8]), (cuuint32_t)atoi(argv[9]), 1, 1};
  int c0 = atoi(argv[10]), c1 = atoi(argv[11]);
  bool swz = argc < 13 || atoi(argv[12]);
  void *buf; cudaMalloc(&buf, 64 << 20); cudaMemset(buf, 0, 64 << 20);
  int *ok; cudaMalloc(&ok, 4); cudaMemset(ok, 0, 4);
  CUtensorMap map;
  cuuint32_t es[4] = {1, 1, 1, 1};
  CUresult r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, buf, dims, strides, box, es,
      CU_TENSOR_MAP_INTERLEAVE_NONE, swz ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
      CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) { std::printf("encode refused (%d)\n", (int)r); return 0; }
  cudaFuncSetAttribute(load, cudaFuncAttributeMaxDynamicSharedMemorySize, 16384);
  load<<<1, 32, 16384>>>(map, c0, c1, ok);
  cudaError_t e = cudaDeviceSynchronize();
  int h = 0; cudaMemcpy(&h, ok, 4, cudaMemcpyDeviceToHost);
  std::printf("%s ok=%d\n", e == cudaSuccess ? "ran" : cudaGetErrorString(e), h);
  return 0;
}
